-- Shared by every Icebreaker cluster script (prepended to each). Keys are built from the prefix
-- at run time, so the scripts need one Redis server (a primary; not Redis Cluster sharding).
-- ARGV[1] prefix, ARGV[2] this node's id, ARGV[3] replay limit (messages per session),
-- ARGV[4] replay byte cap, ARGV[5] TTL of a session's message queue (ms), ARGV[6] operation id
-- (retries of one operation with the same id return the first answer), then the script's own.
local P = ARGV[1]
local ME = ARGV[2]
local LIMIT = tonumber(ARGV[3])
local MAXB = tonumber(ARGV[4])
local QTTL = tonumber(ARGV[5])
local OPID = ARGV[6]
local A = {}
for i = 7, #ARGV do A[#A + 1] = ARGV[i] end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function pk(peer) return P .. 'peer:' .. peer end
local function qk(peer) return P .. 'q:' .. peer end
local function rk(room) return P .. 'room:' .. room end
local function chan(node) return P .. 'n:' .. node end

-- Drops the oldest messages of `peer`'s queue while it is over the count or byte limit.
local function trim(peer)
  local q = qk(peer)
  local n = redis.call('ZCARD', q)
  local bytes = tonumber(redis.call('HGET', pk(peer), 'qb') or '0')
  while n > 1 and (n > LIMIT or bytes > MAXB) do
    local old = redis.call('ZPOPMIN', q)
    bytes = bytes - #old[1]
    n = n - 1
  end
  redis.call('HSET', pk(peer), 'qb', bytes)
end

-- Numbers `head .. seq .. tail` for `peer`, keeps it for replay, tells the owner node.
local function deliver(peer, head, tail)
  local node = redis.call('HGET', pk(peer), 'node')
  if not node then return false end
  local seq = redis.call('HINCRBY', pk(peer), 'seq', 1)
  local text = head .. seq .. tail
  redis.call('ZADD', qk(peer), seq, text)
  redis.call('HINCRBY', pk(peer), 'qb', #text)
  trim(peer)
  redis.call('PEXPIRE', qk(peer), QTTL)
  redis.call('PUBLISH', chan(node), 'd\n' .. peer .. '\n' .. seq .. '\n' .. text)
  return seq
end

-- Acknowledges (forgets) `peer`'s messages up to `seq`.
local function ack(peer, seq)
  -- Never past the last message numbered (a client cannot acknowledge what it was not sent).
  local last = tonumber(redis.call('HGET', pk(peer), 'seq') or '0')
  if seq == nil or seq > last then seq = last end
  local q = qk(peer)
  local old = redis.call('ZRANGEBYSCORE', q, '-inf', seq)
  if #old == 0 then return end
  local bytes = tonumber(redis.call('HGET', pk(peer), 'qb') or '0')
  for _, m in ipairs(old) do bytes = bytes - #m end
  if bytes < 0 then bytes = 0 end
  redis.call('ZREMRANGEBYSCORE', q, '-inf', seq)
  redis.call('HSET', pk(peer), 'qb', bytes)
end

local function members(room)
  return redis.call('ZRANGE', rk(room) .. ':z', 0, -1)
end

-- Removes `peer` from its room and the cluster; the others get `peer-left` (`reason`), the
-- room's SFU node hears of the departure, the owner node forgets the session (`kicked`: an
-- operator removed it, see remove.lua).
local function leave(peer, reason)
  local h = redis.call('HMGET', pk(peer), 'room', 'node', 'digest')
  local room, node, digest = h[1], h[2], h[3]
  if not room then return 0 end
  local r = rk(room)
  redis.call('ZREM', r .. ':z', peer)
  redis.call('HDEL', r .. ':p', peer)
  redis.call('DEL', pk(peer), qk(peer))
  if digest then redis.call('DEL', P .. 'tok:' .. digest) end
  if node then
    redis.call('SREM', P .. 'np:' .. node, peer)
    -- `k`: removed by an operator (the client is told so); `x`: ended.
    local ev = 'x\n'
    if reason == 'kicked' then ev = 'k\n' end
    redis.call('PUBLISH', chan(node), ev .. peer)
  end
  -- A removed session's token is answered with `removed` (not `resume_failed`) for 10 minutes
  -- (signal/admin.rs REMOVED_TTL).
  if reason == 'kicked' and digest then redis.call('SET', P .. 'rm:' .. digest, '1', 'PX', 600000) end
  redis.call('ZREM', P .. 'grace', peer)
  local meta = redis.call('HMGET', r, 'topology', 'sfu')
  if meta[1] == 'sfu' and meta[2] and meta[2] ~= '' then
    redis.call('PUBLISH', chan(meta[2]), 'r\n' .. room .. '\n' .. peer)
  end
  local rest = members(room)
  if #rest == 0 then
    if meta[2] and meta[2] ~= '' then redis.call('SREM', P .. 'sfurooms:' .. meta[2], room) end
    redis.call('DEL', r, r .. ':z', r .. ':p')
    redis.call('SREM', P .. 'rooms', room)
  else
    local tail = ',"peer":"' .. peer .. '","reason":"' .. reason .. '"}'
    for _, m in ipairs(rest) do deliver(m, '{"type":"peer-left","seq":', tail) end
  end
  return 1
end

-- Whether this node may change shared state now: `lost` when Redis no longer has this node
-- (restarted empty, or this node was declared dead: it must restore its sessions first),
-- `wait` while the nodes restore theirs after Redis came back empty.
local function guard()
  if redis.call('EXISTS', P .. 'node:' .. ME) == 0 then return 'lost' end
  if redis.call('EXISTS', P .. 'restoring') == 1 then return 'wait' end
  return nil
end

-- Runs `body` once per operation id: a retry (after a lost answer) gets the first answer.
local function once(body)
  local g = guard()
  if g then return {g} end
  local dd = P .. 'op:' .. OPID
  local prev = redis.call('GET', dd)
  if prev then return cjson.decode(prev) end
  local r = body()
  redis.call('SET', dd, cjson.encode(r), 'PX', 120000)
  return r
end
