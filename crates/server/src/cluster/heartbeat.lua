-- This node is alive: A = info (JSON), TTL ms, create (1: also when the entry is gone).
-- Answer: {existed (0/1), rooms, info1, info2, …} (every live node's info, this one included);
-- without `create`, a vanished entry is not made again (the node restores its sessions first,
-- see `begin_restore.lua`) and the answer is {0, rooms}.
local key = P .. 'node:' .. ME
local existed = redis.call('EXISTS', key)
if existed == 0 and A[3] ~= '1' then return {0, redis.call('SCARD', P .. 'rooms')} end
redis.call('SET', key, A[1], 'PX', tonumber(A[2]))
redis.call('SADD', P .. 'nodes', ME)
if redis.call('EXISTS', P .. 'gen') == 0 then redis.call('SET', P .. 'gen', ME) end
local out = {existed, redis.call('SCARD', P .. 'rooms')}
for _, node in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  local info = redis.call('GET', P .. 'node:' .. node)
  if info then out[#out + 1] = info end
end
return out
