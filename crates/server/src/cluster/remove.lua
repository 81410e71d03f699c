-- admin removal: A = room, peer ('' = every member). Each member leaves with `kicked` (the
-- room hears `peer-left`, the owner node is told `k`, the token is remembered as removed).
-- Answer: {'ok', peer1, peer2, …} or {'noroom'} / {'nopeer'}.
return once(function()
  local room, peer = A[1], A[2]
  if redis.call('EXISTS', rk(room)) == 0 then return {'noroom'} end
  local targets
  if peer == '' then
    targets = members(room)
  else
    if not redis.call('ZSCORE', rk(room) .. ':z', peer) then return {'nopeer'} end
    targets = {peer}
  end
  local out = {'ok'}
  for _, m in ipairs(targets) do
    if leave(m, 'kicked') == 1 then out[#out + 1] = m end
  end
  return out
end)
