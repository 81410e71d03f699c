-- A message for every member of a room (from the SFU): A = room, head, tail.
return once(function()
  local n = 0
  for _, m in ipairs(members(A[1])) do deliver(m, A[2], A[3]); n = n + 1 end
  return {'ok', n}
end)
