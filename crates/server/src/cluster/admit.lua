-- join: A = room, peer, info (PeerInfo JSON), capacity, topology, auto, may_create, max_rooms,
-- has_sfu, mesh_max, perms, token digest, grace ms, joined_mid, joined_end, peer_joined_tail.
return once(function()
  local room, peer, info = A[1], A[2], A[3]
  if redis.call('EXISTS', pk(peer)) == 1 then return {'dup'} end
  local r = rk(room)
  local created = 0
  if redis.call('EXISTS', r) == 0 then
    if A[7] ~= '1' then return {'forbidden'} end
    if redis.call('SCARD', P .. 'rooms') >= tonumber(A[8]) then return {'rooms'} end
    if tonumber(A[4]) < 1 then return {'full'} end
    redis.call('HSET', r, 'capacity', A[4], 'creator', peer, 'topology', A[5], 'auto', A[6], 'n', 0,
      'at', now_ms())
    redis.call('SADD', P .. 'rooms', room)
    created = 1
  end
  local meta = redis.call('HMGET', r, 'capacity', 'topology', 'auto', 'sfu')
  local cap = tonumber(meta[1])
  local others = members(room)
  if #others >= cap then return {'full'} end
  local topo = meta[2]
  local switched = 0
  if meta[3] == '1' and topo == 'mesh' and A[9] == '1' and #others + 1 > tonumber(A[10]) then
    topo = 'sfu'
    redis.call('HSET', r, 'topology', 'sfu')
    switched = 1
  end
  if topo == 'sfu' and A[9] == '1' and (not meta[4] or meta[4] == '') then
    redis.call('HSET', r, 'sfu', ME)
    redis.call('SADD', P .. 'sfurooms:' .. ME, room)
  end
  local infos = {}
  if #others > 0 then infos = redis.call('HMGET', r .. ':p', unpack(others)) end
  local order = redis.call('HINCRBY', r, 'n', 1)
  redis.call('ZADD', r .. ':z', order, peer)
  redis.call('HSET', r .. ':p', peer, info)
  redis.call('HSET', pk(peer), 'room', room, 'node', ME, 'perms', A[11], 'seq', 0, 'epoch', 1,
    'digest', A[12], 'qb', 0, 'at', now_ms())
  redis.call('SET', P .. 'tok:' .. A[12], peer)
  redis.call('SADD', P .. 'np:' .. ME, peer)
  redis.call('ZADD', P .. 'grace', now_ms() + tonumber(A[13]), peer)
  local init = 'false'
  if created == 1 then init = 'true' end
  local tail = A[14] .. init .. ',"capacity":' .. cap .. ',"peers":[' .. table.concat(infos, ',')
    .. ']' .. A[15] .. topo .. '"}'
  deliver(peer, '{"type":"joined","seq":', tail)
  local joined = redis.call('ZRANGEBYSCORE', qk(peer), 1, 1)[1]
  for _, m in ipairs(others) do
    if switched == 1 then deliver(m, '{"type":"topology","seq":', ',"topology":"sfu"}') end
    deliver(m, '{"type":"peer-joined","seq":', A[16])
  end
  return {'ok', created, cap, topo, switched, joined}
end)
