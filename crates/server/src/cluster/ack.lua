-- ack: A = peer, seq.
ack(A[1], tonumber(A[2]))
return {'ok'}
