-- broadcast: A = from, head, tail. To every other member of the sender's room.
return once(function()
  local from = A[1]
  local room = redis.call('HGET', pk(from), 'room')
  if not room then return {'gone'} end
  local n = 0
  for _, m in ipairs(members(room)) do
    if m ~= from then deliver(m, A[2], A[3]); n = n + 1 end
  end
  return {'ok', n}
end)
