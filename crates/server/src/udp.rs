//! The UDP data plane: one worker thread per core, no async runtime and no shared lock on the
//! packet path.
//!
//! Each worker owns a `SO_REUSEPORT` listener socket per TURN listen address and a *shard*: an
//! [`icebreaker_turn::Server`] holding the allocations created through its listener sockets,
//! with their relay sockets. The kernel steers every datagram of a client 4-tuple to the same
//! listener socket, so the worker that created an allocation sees all of its client's packets,
//! and it serves the allocation's relay sockets from the same `epoll` instance:
//!
//! - client → peer: `recvmmsg` a batch from the listener socket; each datagram goes through
//!   [`icebreaker_turn::Server::handle_client`] (the ChannelData fast path comes before any
//!   STUN parsing); replies are written straight into a send batch and leave with one
//!   `sendmmsg`; relayed data leaves on its relay socket.
//! - peer → client: every ready relay socket is read with `recvmmsg` into the next free slots
//!   of one batch, `PEER_HEADROOM` bytes into each slot, so that
//!   [`icebreaker_turn::Server::handle_peer`] writes the ChannelData or Data indication header
//!   in place; the whole batch then leaves on the listener socket with one `sendmmsg`.
//!
//! The shard's lock is taken once per `epoll` round, and only the once-a-second timer (expiry,
//! statistics) and shutdown ever contend for it. Counters are kept in the worker and added to
//! the shared metrics once per round. Nothing is allocated per packet.
//!
//! TCP and TLS clients stay on the tokio path in `serve.rs` (their own shard).

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use icebreaker_turn::{ClientOutput, FiveTuple, RelayId, Transport, PEER_HEADROOM};
use parking_lot::Mutex;

use crate::metrics::{Direction, DropReason, Metrics};
use crate::relay::{Binder, RelayPool, RelayTable};
use crate::sys::{Batch, Epoll};

/// Datagrams moved per `recvmmsg`/`sendmmsg`.
const BATCH: usize = crate::sys::MAX_BATCH;
/// Largest datagram accepted from a UDP client (larger ones are dropped as malformed).
pub(crate) const UDP_CLIENT_MTU: usize = 8192;
/// Largest datagram relayed from a peer (larger ones are dropped).
pub(crate) const RELAY_MTU: usize = 4096;
/// Room for a reply (the sans-IO server wants at least 1500 bytes).
const REPLY_SLOT: usize = 2048;
/// `handle_peer` needs 3 spare bytes after the datagram (padding for stream transports).
const PEER_TAILROOM: usize = 3;
/// How long a worker sleeps in `epoll_wait` before it looks at the stop flag.
const WAKE_MS: i32 = 100;
/// Token bit that marks a listener socket (relay sockets use their id).
const LISTENER: u64 = 1 << 40;

/// The TURN state of one worker.
pub(crate) struct UdpState {
    pub turn: icebreaker_turn::Server,
    pub relays: RelayTable<StdUdpSocket>,
}

/// One worker's shard, behind a lock that the packet path takes once per `epoll` round.
pub(crate) struct UdpShard {
    pub state: Mutex<UdpState>,
}

impl UdpShard {
    pub fn new(turn: icebreaker_turn::Server) -> Self {
        UdpShard {
            state: Mutex::new(UdpState {
                turn,
                relays: RelayTable::default(),
            }),
        }
    }
}

/// Everything a worker thread needs.
pub(crate) struct UdpWorker {
    pub shard: Arc<UdpShard>,
    pub pool: Arc<RelayPool>,
    pub listeners: Vec<(SocketAddr, StdUdpSocket)>,
    pub metrics: Arc<Metrics>,
    pub stop: Arc<AtomicBool>,
}

/// Per-round counters, added to the shared metrics at the end of each round.
#[derive(Default)]
struct Counters {
    c2p_packets: u64,
    c2p_bytes: u64,
    p2c_packets: u64,
    p2c_bytes: u64,
    dropped_malformed: u64,
    dropped_other: u64,
}

impl Counters {
    fn flush(&mut self, m: &Metrics) {
        if self.c2p_packets > 0 {
            m.relayed_many(Direction::ClientToPeer, self.c2p_packets, self.c2p_bytes);
        }
        if self.p2c_packets > 0 {
            m.relayed_many(Direction::PeerToClient, self.p2c_packets, self.p2c_bytes);
        }
        if self.dropped_malformed > 0 {
            m.dropped_many(DropReason::Malformed, self.dropped_malformed);
        }
        if self.dropped_other > 0 {
            m.dropped_many(DropReason::Other, self.dropped_other);
        }
        *self = Counters::default();
    }
}

/// Datagrams for clients collected from relay sockets, waiting for one `sendmmsg` per listener.
struct ToClients {
    batch: Batch,
    /// Slots used so far.
    used: usize,
    /// Per listener socket: the slots to send on it.
    lists: Vec<Vec<u16>>,
    /// Payload bytes per slot (for the counters).
    payload: [usize; BATCH],
}

impl ToClients {
    fn flush(&mut self, listeners: &[(SocketAddr, StdUdpSocket)], c: &mut Counters) {
        for (list, (_, sock)) in self.lists.iter_mut().zip(listeners) {
            if list.is_empty() {
                continue;
            }
            let (sent, failed) = self.batch.send_some(sock.as_raw_fd(), list);
            c.p2c_packets += sent as u64;
            c.dropped_other += failed as u64;
            let bytes: u64 = list
                .iter()
                .map(|&i| self.payload.get(usize::from(i)).copied().unwrap_or(0) as u64)
                .sum();
            // Rarely some fail (socket buffer full): count the bytes of the share sent.
            c.p2c_bytes += bytes * sent as u64 / (sent + failed).max(1) as u64;
            list.clear();
        }
        self.used = 0;
    }
}

impl UdpWorker {
    /// Serve until the stop flag is set.
    pub fn run(self) {
        let mut epoll = match Epoll::new(256) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("UDP worker: epoll: {e}");
                return;
            }
        };
        for (i, (addr, sock)) in self.listeners.iter().enumerate() {
            if let Err(e) = epoll.add(sock.as_raw_fd(), LISTENER | i as u64) {
                tracing::error!(%addr, "UDP worker: epoll add: {e}");
                return;
            }
        }
        let mut from_clients = Batch::new(BATCH, UDP_CLIENT_MTU);
        let mut replies = Batch::new(BATCH, REPLY_SLOT);
        let mut to_clients = ToClients {
            batch: Batch::new(BATCH, PEER_HEADROOM + RELAY_MTU + PEER_TAILROOM),
            used: 0,
            lists: self
                .listeners
                .iter()
                .map(|_| Vec::with_capacity(BATCH))
                .collect(),
            payload: [0; BATCH],
        };
        let mut counters = Counters::default();
        while !self.stop.load(Ordering::Relaxed) {
            let ready = match epoll.wait(WAKE_MS) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!("UDP worker: epoll wait: {e}");
                    return;
                }
            };
            if ready == 0 {
                continue;
            }
            let now = crate::serve::now();
            let mut guard = self.shard.state.lock();
            let st = &mut *guard;
            for e in 0..ready {
                let token = epoll.token(e);
                if token & LISTENER != 0 {
                    let li = (token & !LISTENER) as usize;
                    self.client_batch(st, now, li, &mut from_clients, &mut replies, &mut counters);
                } else {
                    let id = RelayId(token as u32);
                    self.peer_batch(st, now, id, &mut to_clients, &mut counters);
                }
            }
            to_clients.flush(&self.listeners, &mut counters);
            // Relay sockets bound during this round start being served.
            for id in st.relays.pending.drain(..) {
                if let Some(sock) = st.relays.relays.get(&id) {
                    if let Err(e) = epoll.add(sock.as_raw_fd(), u64::from(id.0)) {
                        tracing::warn!("UDP worker: cannot watch relay socket: {e}");
                    }
                }
            }
            drop(guard);
            counters.flush(&self.metrics);
        }
    }

    /// Read one batch from listener socket `li` and handle every datagram.
    fn client_batch(
        &self,
        st: &mut UdpState,
        now: icebreaker_turn::Now,
        li: usize,
        rx: &mut Batch,
        replies: &mut Batch,
        c: &mut Counters,
    ) {
        let Some((local, sock)) = self.listeners.get(li) else {
            return;
        };
        let fd = sock.as_raw_fd();
        let got = match rx.recv(fd, BATCH) {
            Ok(n) => n,
            Err(e) => {
                // ICMP errors and the like: the socket stays usable.
                tracing::trace!("udp recv: {e}");
                return;
            }
        };
        let mut n_replies = 0;
        for k in 0..got {
            if rx.truncated(k) {
                c.dropped_malformed += 1;
                continue;
            }
            let Some(from) = rx.addr(k) else { continue };
            let tuple = FiveTuple {
                client: from,
                server: *local,
                transport: Transport::Udp,
            };
            let packet = rx.msg(k);
            crate::serve::count_request(&self.metrics, packet, Transport::Udp);
            let mut binder = Binder {
                table: &mut st.relays,
                pool: &self.pool,
            };
            let out = replies.slot_mut(n_replies);
            match st.turn.handle_client(now, tuple, packet, out, &mut binder) {
                ClientOutput::None => {}
                ClientOutput::Reply(len) => {
                    replies.set_len(n_replies, len);
                    replies.set_addr(n_replies, from);
                    n_replies += 1;
                }
                ClientOutput::Forward { relay, peer, data } => {
                    match st.relays.relays.get(&relay).map(|s| s.send_to(data, peer)) {
                        Some(Ok(_)) => {
                            c.c2p_packets += 1;
                            c.c2p_bytes += data.len() as u64;
                        }
                        Some(Err(e)) => {
                            tracing::trace!(%peer, "relay send failed: {e}");
                            c.dropped_other += 1;
                        }
                        None => c.dropped_other += 1,
                    }
                }
            }
        }
        if n_replies > 0 {
            let (_, failed) = replies.send(fd, n_replies, true);
            c.dropped_other += failed as u64;
        }
    }

    /// Read what is waiting on relay socket `id` into the free slots of `q` and turn each
    /// datagram into a message for its client.
    fn peer_batch(
        &self,
        st: &mut UdpState,
        now: icebreaker_turn::Now,
        id: RelayId,
        q: &mut ToClients,
        c: &mut Counters,
    ) {
        if q.used == BATCH {
            q.flush(&self.listeners, c);
        }
        // A socket released earlier in this round is gone (and no longer watched).
        let Some(sock) = st.relays.relays.get(&id) else {
            return;
        };
        let first = q.used;
        let got = match q.batch.recv_into(
            sock.as_raw_fd(),
            first,
            BATCH - first,
            PEER_HEADROOM,
            PEER_TAILROOM,
        ) {
            Ok(n) => n,
            Err(e) => {
                tracing::trace!("relay recv: {e}");
                return;
            }
        };
        q.used += got;
        for i in first..first + got {
            if q.batch.truncated(i) {
                c.dropped_malformed += 1;
                continue;
            }
            let Some(from) = q.batch.addr(i) else {
                continue;
            };
            let len = q.batch.len(i);
            let Some(o) = st.turn.handle_peer(now, id, from, q.batch.slot_mut(i), len) else {
                continue;
            };
            // Allocations of this shard all belong to UDP clients of its listener sockets.
            let Some(li) = self
                .listeners
                .iter()
                .position(|(addr, _)| *addr == o.client.server)
            else {
                c.dropped_other += 1;
                continue;
            };
            q.batch.set_range(i, o.range.start, o.range.len());
            q.batch.set_addr(i, o.client.client);
            if let (Some(list), Some(p), Ok(slot)) =
                (q.lists.get_mut(li), q.payload.get_mut(i), u16::try_from(i))
            {
                *p = len;
                list.push(slot);
            }
        }
    }
}
