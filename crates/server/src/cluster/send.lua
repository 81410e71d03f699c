-- signal: A = from, to, head, tail. Delivered only inside the sender's room.
return once(function()
  local from, to = A[1], A[2]
  local room = redis.call('HGET', pk(from), 'room')
  if not room or from == to or redis.call('HGET', pk(to), 'room') ~= room then
    return {'unknown'}
  end
  deliver(to, A[3], A[4])
  return {'ok'}
end)
