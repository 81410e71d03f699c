-- A message for one member (an error for its sender, an `sfu` message from the SFU):
-- A = peer, room ('' = any), head, tail.
return once(function()
  local room = redis.call('HGET', pk(A[1]), 'room')
  if not room or (A[2] ~= '' and room ~= A[2]) then return {'gone'} end
  deliver(A[1], A[3], A[4])
  return {'ok'}
end)
