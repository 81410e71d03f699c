-- resume on this node: A = token digest, peer (as looked up), last_seq, announce (1: queue
-- `resumed`), resumed_end (`,"iceServers":…`), for `resumed`.
-- Answer: {'ok', room, perms, epoch, previous node, seq1, text1, seq2, text2, …} (the messages
-- after last_seq, `resumed` last) or {'gone'} / {'gap'}.
return once(function()
  local peer = A[2]
  if redis.call('GET', P .. 'tok:' .. A[1]) ~= peer then return {'gone'} end
  local h = redis.call('HMGET', pk(peer), 'room', 'node', 'seq', 'perms')
  local room, old, last = h[1], h[2], tonumber(h[3] or '0')
  if not room then return {'gone'} end
  local after = tonumber(A[3])
  if after > last then return {'gap'} end
  if after < last and #redis.call('ZRANGEBYSCORE', qk(peer), after + 1, after + 1) == 0 then
    return {'gap'}
  end
  ack(peer, after)
  local epoch = redis.call('HINCRBY', pk(peer), 'epoch', 1)
  redis.call('HSET', pk(peer), 'node', ME)
  if old and old ~= ME then
    redis.call('SREM', P .. 'np:' .. old, peer)
    redis.call('PUBLISH', chan(old), 't\n' .. peer .. '\n' .. epoch)
  end
  redis.call('SADD', P .. 'np:' .. ME, peer)
  redis.call('ZREM', P .. 'grace', peer)
  if A[4] == '1' then
    local others = {}
    for _, m in ipairs(members(room)) do if m ~= peer then others[#others + 1] = m end end
    local infos = {}
    if #others > 0 then infos = redis.call('HMGET', rk(room) .. ':p', unpack(others)) end
    local topo = redis.call('HGET', rk(room), 'topology') or 'mesh'
    local tail = ',"peer":"' .. peer .. '","room":' .. cjson.encode(room) .. ',"peers":['
      .. table.concat(infos, ',') .. ']' .. A[5] .. ',"topology":"' .. topo .. '"}'
    deliver(peer, '{"type":"resumed","seq":', tail)
  end
  local out = {'ok', room, h[4] or '7', epoch, old or ''}
  local q = redis.call('ZRANGEBYSCORE', qk(peer), after + 1, '+inf', 'WITHSCORES')
  for i = 1, #q, 2 do
    out[#out + 1] = q[i + 1]
    out[#out + 1] = q[i]
  end
  return out
end)
