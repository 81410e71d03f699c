-- leave / kick: A = peer, reason.
return once(function()
  return {'ok', leave(A[1], A[2])}
end)
