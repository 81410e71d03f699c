//! What the shards of one TURN service share.
//!
//! A multi-core server runs one [`crate::Server`] per worker thread (a *shard*), each owning the
//! allocations whose client packets its listener socket receives, so that the packet path takes
//! no lock. A few things must still hold across the shards, and live here:
//! - the allocation quotas (`max_allocations`, `max_allocations_per_user`);
//! - the relay addresses of live allocations (the peer filter lets a client reach another
//!   allocation's relay address, whichever shard holds it);
//! - EVEN-PORT reservations (the Allocate that redeems a RESERVATION-TOKEN usually comes from
//!   another client port, so it may land on another shard);
//! - the counter that makes reservation tokens unique;
//! - the alternate servers refused Allocates are sent to (300 Try Alternate), which a cluster
//!   updates from its node registry ([`Group::set_alternates`]).
//!
//! Every [`crate::Config`] made by [`crate::Config::new`] has its own group; servers built from
//! clones of one `Config` share it. Nothing here is touched per relayed packet except the
//! live-relay lookup (a read lock) for data sent to an address in the relay range.

use std::collections::{HashMap as StdHashMap, HashSet as StdHashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Instant;

use crate::limit::{prefix_key, Budget, Rate, RateTable, Take};
use crate::server::{RelayId, Transport};

type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = StdHashSet<K, foldhash::fast::RandomState>;

/// A port held by EVEN-PORT's R bit until an Allocate redeems its token, or it expires.
#[derive(Clone, Debug)]
pub(crate) struct Reservation {
    pub relay: (RelayId, SocketAddr),
    pub expires: Instant,
    /// Quota key of the user who made it.
    pub user: Box<str>,
}

#[derive(Debug, Default)]
struct Reservations {
    by_token: HashMap<[u8; 8], Reservation>,
    per_user: HashMap<Box<str>, usize>,
}

impl Reservations {
    fn take(&mut self, token: &[u8; 8]) -> Option<Reservation> {
        let r = self.by_token.remove(token)?;
        if let Some(n) = self.per_user.get_mut(&r.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(&r.user);
            }
        }
        Some(r)
    }

    fn fits(&self, user: &str, max: usize, max_user: usize) -> bool {
        self.by_token.len() < max && self.per_user.get(user).copied().unwrap_or(0) < max_user
    }
}

#[derive(Debug, Default)]
struct Counts {
    allocations: usize,
    per_user: HashMap<Box<str>, usize>,
}

/// Slots of the per-source tables (fixed memory: 16 bytes each).
const SOURCE_SLOTS: usize = 16_384;

/// Limits on what unauthenticated and new clients get (fixed memory, see [`crate::limit`]).
#[derive(Debug, Default)]
struct Guard {
    /// Unauthenticated reply bytes per source prefix.
    replies: Option<RateTable>,
    /// Unauthenticated reply bytes over all sources.
    pool: Budget,
    /// New allocations per source prefix.
    allocations: Option<RateTable>,
}

fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x1ceb_ea4e_u64)
}

/// Where a node sends the new allocations it refuses (300 Try Alternate, RFC 8489 §10): another
/// node's TURN listeners, one address per family and transport. A cluster picks them (the least
/// loaded other node) and hands them to [`Group::set_alternates`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Alternates {
    /// The UDP and TCP listener for IPv4 clients.
    pub v4: Option<SocketAddr>,
    /// The UDP and TCP listener for IPv6 clients.
    pub v6: Option<SocketAddr>,
    /// The TLS listener for IPv4 clients (TLS clients are only sent to TLS listeners).
    pub tls_v4: Option<SocketAddr>,
    /// The TLS listener for IPv6 clients.
    pub tls_v6: Option<SocketAddr>,
    /// The name in the TLS listener's certificate, sent as ALTERNATE-DOMAIN to TLS clients
    /// (without it they verify the alternate against the name they used for this node).
    pub tls_name: Option<Arc<str>>,
}

impl Alternates {
    /// The first usable IPv4 and IPv6 address of a node's UDP/TCP listeners (`turn`) and of
    /// its TLS listeners (`turns`). Unspecified addresses and port 0 are skipped; an IPv4
    /// address in IPv6 form (`::ffff:a.b.c.d`) counts as IPv4.
    pub fn from_listeners(turn: &[SocketAddr], turns: &[SocketAddr]) -> Self {
        let (v4, v6) = by_family(turn);
        let (tls_v4, tls_v6) = by_family(turns);
        Alternates {
            v4,
            v6,
            tls_v4,
            tls_v6,
            tls_name: None,
        }
    }

    /// Whether no address a client could be sent to is set.
    pub fn is_empty(&self) -> bool {
        [self.v4, self.v6, self.tls_v4, self.tls_v6]
            .into_iter()
            .flatten()
            .all(|a| !usable(a))
    }

    /// The ALTERNATE-SERVER addresses for a client of `transport` whose address is IPv4 (`v4`)
    /// or not: one of the client's family (RFC 8489 §10: it MUST be there, else `None`), then
    /// one of the other family if known (SHOULD).
    pub fn pick(&self, transport: Transport, v4: bool) -> Option<(SocketAddr, Option<SocketAddr>)> {
        let (a4, a6) = match transport {
            Transport::Tls => (self.tls_v4, self.tls_v6),
            Transport::Udp | Transport::Tcp => (self.v4, self.v6),
        };
        let a4 = a4.map(canonical).filter(|a| usable(*a) && a.is_ipv4());
        let a6 = a6.map(canonical).filter(|a| usable(*a) && a.is_ipv6());
        if v4 {
            Some((a4?, a6))
        } else {
            Some((a6?, a4))
        }
    }
}

/// An IPv4 address in IPv6 form is IPv4 (a client on a dual-stack socket, an address written so).
pub(crate) fn canonical(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

/// Whether a client can be sent to `a`.
fn usable(a: SocketAddr) -> bool {
    !a.ip().is_unspecified() && a.port() != 0
}

fn by_family(addrs: &[SocketAddr]) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let mut it = addrs.iter().copied().map(canonical).filter(|a| usable(*a));
    let v4 = it.clone().find(SocketAddr::is_ipv4);
    let v6 = it.find(SocketAddr::is_ipv6);
    (v4, v6)
}

/// State shared by the shards of one TURN service (see the module documentation).
#[derive(Debug, Default)]
pub struct Group {
    counts: Mutex<Counts>,
    live_relays: RwLock<HashSet<SocketAddr>>,
    reservations: Mutex<Reservations>,
    tokens: AtomicU64,
    guard: Mutex<Guard>,
    draining: AtomicBool,
    /// Read only when an Allocate is refused (draining, full), never per packet.
    alternates: Mutex<Option<Arc<Alternates>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data stays consistent under every early return, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Group {
    /// A group with nothing in it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drain (or stop draining): new allocations are refused (300 Try Alternate to an alternate
    /// server of the client's address family, see [`Group::set_alternates`], 508 without one),
    /// everything that exists keeps running.
    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
    }

    /// Whether the group drains.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Send the Allocates this group refuses (while draining, or when `max_allocations` is
    /// reached) to `alt` with 300 Try Alternate, instead of the static
    /// [`crate::Config::alternate_server`]. An empty `alt` clears it, like
    /// [`Group::clear_alternates`]. Cheap (one short lock), so a cluster may call it every time
    /// its registry changes.
    pub fn set_alternates(&self, alt: Alternates) {
        let new = (!alt.is_empty()).then(|| Arc::new(alt));
        *lock(&self.alternates) = new;
    }

    /// Back to the static [`crate::Config::alternate_server`] (or 508 without one).
    pub fn clear_alternates(&self) {
        *lock(&self.alternates) = None;
    }

    /// The alternates set by [`Group::set_alternates`], if any.
    pub fn alternates(&self) -> Option<Arc<Alternates>> {
        lock(&self.alternates).clone()
    }

    /// Allocations held across all shards.
    pub fn allocations(&self) -> usize {
        lock(&self.counts).allocations
    }

    /// Reservations held across all shards.
    pub fn reservations(&self) -> usize {
        lock(&self.reservations).by_token.len()
    }

    /// Count one more allocation for `user`, unless that would pass a limit: `Err(486)` for the
    /// user's quota, `Err(508)` for the server's.
    pub(crate) fn acquire(&self, user: &str, max_total: usize, max_user: usize) -> Result<(), u16> {
        let mut c = lock(&self.counts);
        let n = c.per_user.get(user).copied().unwrap_or(0);
        if n >= max_user {
            return Err(486);
        }
        if c.allocations >= max_total {
            return Err(508);
        }
        c.allocations += 1;
        *c.per_user.entry(user.into()).or_insert(0) += 1;
        Ok(())
    }

    /// Undo one [`Group::acquire`] for `user`.
    pub(crate) fn release(&self, user: &str) {
        let mut c = lock(&self.counts);
        c.allocations = c.allocations.saturating_sub(1);
        if let Some(n) = c.per_user.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_user.remove(user);
            }
        }
    }

    pub(crate) fn add_live_relay(&self, addr: SocketAddr) {
        self.live_relays
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(addr);
    }

    pub(crate) fn remove_live_relay(&self, addr: SocketAddr) {
        self.live_relays
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&addr);
    }

    /// Whether `addr` is the relay address of a live allocation on any shard.
    pub fn is_live_relay(&self, addr: SocketAddr) -> bool {
        self.live_relays
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&addr)
    }

    /// Whether an unauthenticated UDP reply of `out` bytes to `ip`, answering a request of `inp`
    /// bytes, fits the per-source and the overall reply budgets; takes it from both if so. Half
    /// the request's bytes are credited to both budgets either way, so a flood gets back at most
    /// half of what it sends (beyond the small bursts). A source that proved it receives our
    /// answers (a valid nonce) is not limited.
    pub(crate) fn unauth_reply(
        &self,
        now: Instant,
        ip: IpAddr,
        inp: usize,
        out: usize,
        per_source: Rate,
        overall: Rate,
    ) -> bool {
        let mut g = lock(&self.guard);
        let earn = u32::try_from(inp / 2).unwrap_or(u32::MAX);
        let cost = u32::try_from(out).unwrap_or(u32::MAX);
        if per_source.is_limited() {
            let table = g
                .replies
                .get_or_insert_with(|| RateTable::new(SOURCE_SLOTS, random_seed()));
            match table.take_earning(prefix_key(ip), now, per_source, earn, cost) {
                Take::Validated => return true,
                Take::Taken => {}
                Take::Refused => {
                    if overall.is_limited() {
                        g.pool.earn(now, overall, u64::from(earn));
                    }
                    return false;
                }
            }
        }
        if !overall.is_limited() {
            return true;
        }
        g.pool.earn(now, overall, u64::from(earn));
        g.pool.spend(now, overall, out as u64)
    }

    /// An authenticated request of `inp` bytes from `ip`: its nonce proves the address receives
    /// our answers (unlimited for `valid_secs`), and its bytes pay back the challenge it was
    /// sent into the overall budget.
    pub(crate) fn authenticated_request(
        &self,
        now: Instant,
        ip: IpAddr,
        inp: usize,
        per_source: Rate,
        overall: Rate,
        valid_secs: u64,
    ) {
        let mut g = lock(&self.guard);
        if overall.is_limited() {
            g.pool.earn(now, overall, inp as u64);
        }
        if per_source.is_limited() {
            let table = g
                .replies
                .get_or_insert_with(|| RateTable::new(SOURCE_SLOTS, random_seed()));
            table.validate(prefix_key(ip), now, per_source, valid_secs);
        }
    }

    /// Whether `ip` may create another allocation now under `rate` (per address prefix).
    pub(crate) fn allocation_rate(&self, now: Instant, ip: IpAddr, rate: Rate) -> bool {
        if !rate.is_limited() {
            return true;
        }
        let mut g = lock(&self.guard);
        let table = g
            .allocations
            .get_or_insert_with(|| RateTable::new(SOURCE_SLOTS / 4, random_seed()));
        table.take(prefix_key(ip), now, rate, 1)
    }

    /// A number never handed out before by this group (reservation tokens).
    pub(crate) fn next_token(&self) -> u64 {
        self.tokens.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Hold a reservation, unless `max` are held already in all or `max_user` by its user
    /// (each holds a bound port for 30 s: one user must not take the whole range).
    pub(crate) fn reserve(
        &self,
        token: [u8; 8],
        r: Reservation,
        max: usize,
        max_user: usize,
    ) -> bool {
        let mut m = lock(&self.reservations);
        if !m.fits(&r.user, max, max_user) {
            return false;
        }
        *m.per_user.entry(r.user.clone()).or_insert(0) += 1;
        m.by_token.insert(token, r);
        true
    }

    /// Whether another reservation by `user` fits under the limits of [`Group::reserve`].
    pub(crate) fn can_reserve(&self, user: &str, max: usize, max_user: usize) -> bool {
        lock(&self.reservations).fits(user, max, max_user)
    }

    /// Take the reservation of `token`.
    pub(crate) fn redeem(&self, token: &[u8; 8]) -> Option<Reservation> {
        lock(&self.reservations).take(token)
    }

    /// Remove the reservations that expired by `now` (or all of them), calling `f` on each.
    pub(crate) fn sweep(&self, now: Option<Instant>, mut f: impl FnMut(Reservation)) {
        let gone: Vec<Reservation> = {
            let mut m = lock(&self.reservations);
            let expired: Vec<[u8; 8]> = m
                .by_token
                .iter()
                .filter(|(_, r)| now.is_none_or(|n| r.expires <= n))
                .map(|(t, _)| *t)
                .collect();
            expired.iter().filter_map(|t| m.take(t)).collect()
        };
        // Released outside the lock: the caller closes sockets.
        for r in gone {
            f(r);
        }
    }
}
