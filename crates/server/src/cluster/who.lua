-- The session of a token digest (A[1]): {peer, perms} or {}.
local peer = redis.call('GET', P .. 'tok:' .. A[1])
if not peer then return {} end
local perms = redis.call('HGET', pk(peer), 'perms')
if not perms then return {} end
return {peer, perms}
