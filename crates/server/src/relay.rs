//! Relay sockets: binding them in the port range for the sans-IO TURN server (its
//! [`RelayProvider`]), the table of each shard, and the reserved sockets (EVEN-PORT's R bit)
//! waiting for the Allocate that redeems their token, which every shard can reach.

use std::collections::HashMap as StdHashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

use icebreaker_stun::Family;
use icebreaker_turn::{RelayBinding, RelayError, RelayId, RelayProvider, RelayRequest};
use parking_lot::Mutex;
use rand::Rng;
use socket2::{Domain, Protocol, Socket, Type};

pub(crate) type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;

/// Where relay sockets are bound.
#[derive(Clone, Debug)]
pub(crate) struct RelaySettings {
    pub v4: Option<IpAddr>,
    pub v6: Option<IpAddr>,
    pub ports: (u16, u16),
}

/// What a shard keeps per relay socket: a plain socket served by a UDP worker's epoll, or a
/// tokio socket with its reader task.
pub(crate) trait RelaySocket: Sized {
    /// Take over a freshly bound (non-blocking) socket; `None` if that fails.
    fn adopt(socket: StdUdpSocket) -> Option<Self>;
}

impl RelaySocket for StdUdpSocket {
    fn adopt(socket: StdUdpSocket) -> Option<Self> {
        Some(socket)
    }
}

/// Shared by every shard: the settings, the relay id counter (ids are unique across shards)
/// and the reserved sockets.
#[derive(Debug)]
pub(crate) struct RelayPool {
    pub settings: RelaySettings,
    next_id: AtomicU32,
    parked: Mutex<HashMap<RelayId, StdUdpSocket>>,
}

impl RelayPool {
    pub fn new(settings: RelaySettings) -> Self {
        RelayPool {
            settings,
            next_id: AtomicU32::new(0),
            parked: Mutex::new(HashMap::default()),
        }
    }

    fn next_id(&self) -> RelayId {
        RelayId(self.next_id.fetch_add(1, Ordering::Relaxed).wrapping_add(1))
    }

    /// Close every reserved socket (shutdown).
    pub fn clear(&self) {
        self.parked.lock().clear();
    }
}

/// The relay sockets of one shard.
pub(crate) struct RelayTable<S> {
    pub relays: HashMap<RelayId, S>,
    /// Sockets added during the current call into the TURN server that the shard still has to
    /// start serving (register with epoll, spawn a reader); taken by the shard after the call.
    pub pending: Vec<RelayId>,
}

impl<S> Default for RelayTable<S> {
    fn default() -> Self {
        RelayTable {
            relays: HashMap::default(),
            pending: Vec::new(),
        }
    }
}

/// The [`RelayProvider`] of one shard for one call into its TURN server.
pub(crate) struct Binder<'a, S> {
    pub table: &'a mut RelayTable<S>,
    pub pool: &'a RelayPool,
}

/// A non-blocking UDP socket bound to `ip:port`; `None` if the port is taken.
fn try_bind(ip: IpAddr, port: u16) -> Option<StdUdpSocket> {
    let v4 = ip.is_ipv4();
    let domain = if v4 { Domain::IPV4 } else { Domain::IPV6 };
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).ok()?;
    if !v4 {
        sock.set_only_v6(true).ok()?;
    }
    sock.set_nonblocking(true).ok()?;
    // No SO_REUSEADDR/SO_REUSEPORT: the kernel refuses a port that is in use, by us or anyone.
    sock.bind(&SocketAddr::new(ip, port).into()).ok()?;
    Some(sock.into())
}

impl<S: RelaySocket> Binder<'_, S> {
    fn register(&mut self, socket: StdUdpSocket) -> Option<RelayId> {
        let s = S::adopt(socket)?;
        let id = self.pool.next_id();
        self.table.relays.insert(id, s);
        self.table.pending.push(id);
        Some(id)
    }
}

impl<S: RelaySocket> RelayProvider for Binder<'_, S> {
    fn bind(&mut self, req: RelayRequest) -> Result<RelayBinding, RelayError> {
        let settings = &self.pool.settings;
        let ip = match req.family {
            Family::V4 => settings.v4,
            Family::V6 => settings.v6,
        }
        .ok_or(RelayError::FamilyNotSupported)?;
        let (lo, hi) = settings.ports;
        let span = u32::from(hi - lo) + 1;
        let start = rand::rng().random_range(0..span);
        let attempts = span.min(4096);
        for i in 0..attempts {
            let mut port = u32::from(lo) + (start + i) % span;
            if req.even_port && port % 2 == 1 {
                port += 1;
                if port > u32::from(hi) {
                    continue;
                }
            }
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            let Some(sock) = try_bind(ip, port) else {
                continue;
            };
            let mut reserved = None;
            if req.reserve_next {
                if port == hi {
                    continue;
                }
                let Some(next) = try_bind(ip, port + 1) else {
                    continue;
                };
                // Parked where every shard can claim it: the Allocate that redeems the token
                // may arrive on another listener socket.
                let rid = self.pool.next_id();
                self.pool.parked.lock().insert(rid, next);
                reserved = Some((rid, SocketAddr::new(ip, port + 1)));
            }
            // DONT-FRAGMENT needs nothing: Linux UDP sockets default to path-MTU discovery,
            // which sets the DF bit on every datagram.
            let Some(id) = self.register(sock) else {
                if let Some((rid, _)) = reserved {
                    self.pool.parked.lock().remove(&rid);
                }
                return Err(RelayError::Exhausted);
            };
            return Ok(RelayBinding {
                id,
                addr: SocketAddr::new(ip, port),
                reserved,
            });
        }
        Err(RelayError::Exhausted)
    }

    fn release(&mut self, id: RelayId) {
        if self.table.relays.remove(&id).is_none() {
            self.pool.parked.lock().remove(&id);
        }
        self.table.pending.retain(|p| *p != id);
    }

    fn claim(&mut self, id: RelayId, _addr: SocketAddr) -> Result<(), RelayError> {
        let sock = self
            .pool
            .parked
            .lock()
            .remove(&id)
            .ok_or(RelayError::Exhausted)?;
        let s = S::adopt(sock).ok_or(RelayError::Exhausted)?;
        self.table.relays.insert(id, s);
        self.table.pending.push(id);
        Ok(())
    }
}
