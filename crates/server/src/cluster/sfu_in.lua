-- An `sfu` message from a member, for the SFU node its room is pinned to (pinned here when
-- the room has no live SFU node and this node has one): A = peer, data, has_sfu.
return once(function()
  local peer = A[1]
  local room = redis.call('HGET', pk(peer), 'room')
  if not room then return {'gone'} end
  local meta = redis.call('HMGET', rk(room), 'topology', 'sfu')
  if meta[1] ~= 'sfu' then return {'mesh'} end
  local node = meta[2]
  if not node or node == '' or redis.call('EXISTS', P .. 'node:' .. node) == 0 then
    if A[3] ~= '1' then return {'nosfu'} end
    if node and node ~= '' then redis.call('SREM', P .. 'sfurooms:' .. node, room) end
    node = ME
    redis.call('HSET', rk(room), 'sfu', ME)
    redis.call('SADD', P .. 'sfurooms:' .. ME, room)
  end
  redis.call('PUBLISH', chan(node), 's\n' .. room .. '\n' .. peer .. '\n' .. A[2])
  return {'ok', node}
end)
