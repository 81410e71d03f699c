-- admin listing (read only): A = at most this many rooms (by name). Answer: {truncated (0/1),
-- then per room: 'R', room, capacity, topology, SFU node, created ms, member count, then per
-- member: peer, PeerInfo JSON, owner node, attached (0/1), joined ms}.
local names = redis.call('SMEMBERS', P .. 'rooms')
table.sort(names)
local max = tonumber(A[1])
local out = {'0'}
if #names > max then out[1] = '1' end
for i = 1, math.min(#names, max) do
  local room = names[i]
  local r = rk(room)
  local meta = redis.call('HMGET', r, 'capacity', 'topology', 'sfu', 'at')
  local ms = members(room)
  out[#out + 1] = 'R'
  out[#out + 1] = room
  out[#out + 1] = meta[1] or '0'
  out[#out + 1] = meta[2] or 'mesh'
  out[#out + 1] = meta[3] or ''
  out[#out + 1] = meta[4] or '0'
  out[#out + 1] = tostring(#ms)
  for _, m in ipairs(ms) do
    local h = redis.call('HMGET', pk(m), 'node', 'at')
    local attached = '1'
    if redis.call('ZSCORE', P .. 'grace', m) then attached = '0' end
    out[#out + 1] = m
    out[#out + 1] = redis.call('HGET', r .. ':p', m) or '{}'
    out[#out + 1] = h[1] or ''
    out[#out + 1] = attached
    out[#out + 1] = h[2] or '0'
  end
end
return out
