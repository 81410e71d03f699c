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
//! - the counter that makes reservation tokens unique.
//!
//! Every [`crate::Config`] made by [`crate::Config::new`] has its own group; servers built from
//! clones of one `Config` share it. Nothing here is touched per relayed packet: allocations,
//! reservations and permission checks only.

use std::collections::{HashMap as StdHashMap, HashSet as StdHashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Instant;

use crate::server::RelayId;

type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = StdHashSet<K, foldhash::fast::RandomState>;

/// A port held by EVEN-PORT's R bit until an Allocate redeems its token, or it expires.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reservation {
    pub relay: (RelayId, SocketAddr),
    pub expires: Instant,
}

#[derive(Debug, Default)]
struct Counts {
    allocations: usize,
    per_user: HashMap<Box<str>, usize>,
}

/// State shared by the shards of one TURN service (see the module documentation).
#[derive(Debug, Default)]
pub struct Group {
    counts: Mutex<Counts>,
    live_relays: RwLock<HashSet<SocketAddr>>,
    reservations: Mutex<HashMap<[u8; 8], Reservation>>,
    tokens: AtomicU64,
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

    /// Allocations held across all shards.
    pub fn allocations(&self) -> usize {
        lock(&self.counts).allocations
    }

    /// Reservations held across all shards.
    pub fn reservations(&self) -> usize {
        lock(&self.reservations).len()
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

    /// A number never handed out before by this group (reservation tokens).
    pub(crate) fn next_token(&self) -> u64 {
        self.tokens.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Hold a reservation, unless `max` are held already.
    pub(crate) fn reserve(&self, token: [u8; 8], r: Reservation, max: usize) -> bool {
        let mut m = lock(&self.reservations);
        if m.len() >= max {
            return false;
        }
        m.insert(token, r);
        true
    }

    /// Whether another reservation fits under `max`.
    pub(crate) fn can_reserve(&self, max: usize) -> bool {
        lock(&self.reservations).len() < max
    }

    /// Take the reservation of `token`.
    pub(crate) fn redeem(&self, token: &[u8; 8]) -> Option<Reservation> {
        lock(&self.reservations).remove(token)
    }

    /// Remove the reservations that expired by `now` (or all of them), calling `f` on each.
    pub(crate) fn sweep(&self, now: Option<Instant>, mut f: impl FnMut(Reservation)) {
        let mut gone = Vec::new();
        lock(&self.reservations).retain(|_, r| {
            let keep = now.is_some_and(|n| r.expires > n);
            if !keep {
                gone.push(*r);
            }
            keep
        });
        // Released outside the lock: the caller closes sockets.
        for r in gone {
            f(r);
        }
    }
}
