-- Messages of A[1] after seq A[2] (to fill a gap): {seq1, text1, …}; {} when none or gone.
local q = redis.call('ZRANGEBYSCORE', qk(A[1]), tonumber(A[2]) + 1, '+inf', 'WITHSCORES')
local out = {}
for i = 1, #q, 2 do
  out[#out + 1] = q[i + 1]
  out[#out + 1] = q[i]
end
return out
