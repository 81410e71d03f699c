-- This node is about to put its sessions back (A = window ms). When Redis lost everything
-- (no `gen` marker), every node gets `window` ms to restore before shared state changes again
-- (scripts answer `wait` meanwhile). Answer: {1} when Redis had been emptied, {0} otherwise.
if redis.call('EXISTS', P .. 'gen') == 0 then
  redis.call('SET', P .. 'gen', ME)
  redis.call('SET', P .. 'restoring', ME, 'PX', tonumber(A[1]), 'NX')
  return {1}
end
return {0}
