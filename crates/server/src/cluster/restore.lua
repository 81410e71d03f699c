-- After Redis lost this node's state (restarted empty, or this node was declared dead): puts
-- back a local session. A = peer, room, info, capacity, topology, perms, digest, epoch,
-- attached (1/0), grace ms, last seq, then seq1, text1, … (unacknowledged messages).
local peer, room = A[1], A[2]
local r = rk(room)
if redis.call('EXISTS', r) == 0 then
  redis.call('HSET', r, 'capacity', A[4], 'creator', peer, 'topology', A[5], 'auto', '0', 'n', 0)
  redis.call('SADD', P .. 'rooms', room)
end
if redis.call('ZSCORE', r .. ':z', peer) == false then
  redis.call('ZADD', r .. ':z', redis.call('HINCRBY', r, 'n', 1), peer)
  redis.call('HSET', r .. ':p', peer, A[3])
end
local node = redis.call('HGET', pk(peer), 'node')
if node and node ~= ME then return {'moved'} end
if not node then
  redis.call('HSET', pk(peer), 'room', room, 'node', ME, 'perms', A[6], 'seq', A[11],
    'epoch', A[8], 'digest', A[7], 'qb', 0)
  redis.call('SET', P .. 'tok:' .. A[7], peer)
  for i = 12, #A, 2 do
    redis.call('ZADD', qk(peer), tonumber(A[i]), A[i + 1])
    redis.call('HINCRBY', pk(peer), 'qb', #A[i + 1])
  end
  redis.call('PEXPIRE', qk(peer), QTTL)
end
redis.call('SADD', P .. 'np:' .. ME, peer)
if A[9] == '1' then
  redis.call('ZREM', P .. 'grace', peer)
else
  redis.call('ZADD', P .. 'grace', 'NX', now_ms() + tonumber(A[10]), peer)
end
return {'ok'}
