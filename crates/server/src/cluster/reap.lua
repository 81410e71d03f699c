-- Housekeeping, run by every node each second: sessions whose grace expired leave (`timeout`);
-- nodes whose heartbeat expired are removed, their sessions start their grace period and
-- their SFU rooms are unpinned. A = grace ms, at most this many expiries. {left, dead nodes}.
if redis.call('EXISTS', P .. 'restoring') == 1 then return {0, 0} end
local now = now_ms()
local left = 0
for _, peer in ipairs(redis.call('ZRANGEBYSCORE', P .. 'grace', '-inf', now, 'LIMIT', 0, tonumber(A[2]))) do
  left = left + leave(peer, 'timeout')
  redis.call('ZREM', P .. 'grace', peer)
end
local dead = 0
for _, node in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  if redis.call('EXISTS', P .. 'node:' .. node) == 0 then
    dead = dead + 1
    redis.call('SREM', P .. 'nodes', node)
    for _, peer in ipairs(redis.call('SMEMBERS', P .. 'np:' .. node)) do
      if redis.call('HGET', pk(peer), 'node') == node then
        redis.call('ZADD', P .. 'grace', 'NX', now + tonumber(A[1]), peer)
      end
    end
    redis.call('DEL', P .. 'np:' .. node)
    for _, room in ipairs(redis.call('SMEMBERS', P .. 'sfurooms:' .. node)) do
      if redis.call('HGET', rk(room), 'sfu') == node then redis.call('HDEL', rk(room), 'sfu') end
    end
    redis.call('DEL', P .. 'sfurooms:' .. node)
  end
end
return {left, dead}
