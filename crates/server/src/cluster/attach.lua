-- A stream attached (A = peer, epoch, attached 1/0, grace ms): stop or start the grace timer,
-- if the session is still this node's at that epoch. {'ok'} or {'moved'}.
local g = guard()
if g then return {g} end
local h = redis.call('HMGET', pk(A[1]), 'node', 'epoch')
if h[1] ~= ME or h[2] ~= A[2] then return {'moved'} end
if A[3] == '1' then
  redis.call('ZREM', P .. 'grace', A[1])
else
  redis.call('ZADD', P .. 'grace', now_ms() + tonumber(A[4]), A[1])
end
return {'ok'}
