//! Rate limits that keep no state per source beyond a fixed-size table.
//!
//! [`RateTable`] is a direct-mapped table of token buckets keyed by a client address prefix
//! (an IPv4 address, an IPv6 /64). Its memory is fixed when it is created: a flood of spoofed
//! sources only overwrites slots (a source whose slot was taken over starts again with a full
//! bucket — bounded by the limits around it, never by memory). Time is passed in.
//!
//! [`Budget`] is one token bucket of bytes that can also be *earned*: the reply budget for
//! unauthenticated sources, refilled by the bytes those sources send and by a small allowance
//! per second (see [`crate::Config::unauth_reply_rate`]).

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The key a client address is limited under: the address for IPv4, its /64 for IPv6 (one
/// subscriber usually holds a whole /64), an IPv4-mapped IPv6 address as its IPv4 address.
pub fn prefix_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => (u128::from(v6) >> 64) << 64 | 1 << 32,
        },
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// Hash of the key (0 = empty).
    tag: u64,
    /// Tokens in thousandths.
    milli: u64,
    /// Last refill, milliseconds since the table's epoch.
    at_ms: u64,
    /// Until when the source is known to receive what is sent to it (milliseconds since the
    /// epoch; 0 = not known).
    valid_until_ms: u64,
}

/// Token buckets per address prefix in a fixed-size table (see the module documentation).
#[derive(Debug)]
pub struct RateTable {
    slots: Box<[Slot]>,
    hasher: foldhash::fast::FixedState,
    epoch: Option<Instant>,
}

/// A rate: `per_sec` tokens a second, at most `burst` saved up. `per_sec == 0` means unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second (0: no limit).
    pub per_sec: u32,
    /// Most tokens held.
    pub burst: u32,
}

impl Rate {
    /// No limit.
    pub const UNLIMITED: Rate = Rate {
        per_sec: 0,
        burst: 0,
    };

    /// Whether this rate limits anything.
    pub fn is_limited(&self) -> bool {
        self.per_sec > 0
    }
}

fn ms_since(epoch: &mut Option<Instant>, now: Instant) -> u64 {
    let e = *epoch.get_or_insert(now);
    now.saturating_duration_since(e).as_millis() as u64
}

impl RateTable {
    /// A table of `slots` buckets (rounded up to a power of two), keyed with `seed`.
    pub fn new(slots: usize, seed: u64) -> Self {
        let n = slots.max(1).next_power_of_two();
        RateTable {
            slots: vec![Slot::default(); n].into_boxed_slice(),
            hasher: foldhash::fast::FixedState::with_seed(seed),
            epoch: None,
        }
    }

    /// Take `cost` tokens from the bucket of `key` at `now` under `rate`; `false` (and nothing
    /// taken) when the bucket holds fewer.
    pub fn take(&mut self, key: u128, now: Instant, rate: Rate, cost: u32) -> bool {
        self.take_earning(key, now, rate, 0, cost) != Take::Refused
    }

    /// The slot of `key`, refilled up to `now` (a fresh one, full, if another key held it).
    fn slot(
        &mut self,
        key: u128,
        now: Instant,
        rate: Rate,
        cost: u32,
    ) -> Option<(&mut Slot, u64, u64)> {
        let now_ms = ms_since(&mut self.epoch, now);
        let tag = self.hasher.hash_one(key) | 1;
        let mask = self.slots.len() - 1;
        let slot = self.slots.get_mut(tag as usize & mask)?;
        let burst = u64::from(rate.burst.max(cost)) * 1000;
        if slot.tag != tag {
            *slot = Slot {
                tag,
                milli: burst,
                at_ms: now_ms,
                valid_until_ms: 0,
            };
        } else {
            let dt = now_ms.saturating_sub(slot.at_ms);
            slot.milli = (slot.milli + dt * u64::from(rate.per_sec)).min(burst);
            slot.at_ms = now_ms;
        }
        Some((slot, now_ms, burst))
    }

    /// [`RateTable::take`] after crediting `earn` tokens (up to the burst). A source marked
    /// with [`RateTable::validate`] takes nothing ([`Take::Validated`]).
    pub fn take_earning(
        &mut self,
        key: u128,
        now: Instant,
        rate: Rate,
        earn: u32,
        cost: u32,
    ) -> Take {
        if !rate.is_limited() {
            return Take::Taken;
        }
        let Some((slot, now_ms, burst)) = self.slot(key, now, rate, cost) else {
            return Take::Taken;
        };
        if slot.valid_until_ms > now_ms {
            return Take::Validated;
        }
        slot.milli = (slot.milli + u64::from(earn) * 1000).min(burst);
        let want = u64::from(cost) * 1000;
        if slot.milli >= want {
            slot.milli -= want;
            Take::Taken
        } else {
            Take::Refused
        }
    }

    /// Mark `key` as a source known to receive what is sent to it, for `secs` seconds (it
    /// returned a nonce that only its address was sent).
    pub fn validate(&mut self, key: u128, now: Instant, rate: Rate, secs: u64) {
        if let Some((slot, now_ms, _)) = self.slot(key, now, rate, 0) {
            slot.valid_until_ms = now_ms + secs * 1000;
        }
    }
}

/// What [`RateTable::take_earning`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// The tokens were taken (or nothing is limited).
    Taken,
    /// Too few tokens: nothing taken.
    Refused,
    /// The source is marked valid: not limited, nothing taken.
    Validated,
}

/// A byte budget refilled by time and by earned credit (see the module documentation).
#[derive(Debug, Default)]
pub struct Budget {
    bytes: u64,
    /// Last refill; `None` until first used (it then starts full).
    at: Option<Instant>,
}

impl Budget {
    /// Add what `rate` gives since the last call, capped at its burst.
    fn refill(&mut self, now: Instant, rate: Rate) {
        let burst = u64::from(rate.burst);
        let Some(last) = self.at else {
            self.bytes = burst;
            self.at = Some(now);
            return;
        };
        let dt = now.saturating_duration_since(last);
        // Whole milliseconds only, so that frequent calls do not lose the fractions.
        let ms = dt.as_millis() as u64;
        if ms > 0 {
            self.bytes = (self.bytes + ms * u64::from(rate.per_sec) / 1000).min(burst);
            self.at = Some(last + Duration::from_millis(ms));
        }
    }

    /// Credit `bytes` (capped at the burst).
    pub fn earn(&mut self, now: Instant, rate: Rate, bytes: u64) {
        self.refill(now, rate);
        self.bytes = (self.bytes + bytes).min(u64::from(rate.burst));
    }

    /// Spend `bytes` if the budget holds them.
    pub fn spend(&mut self, now: Instant, rate: Rate, bytes: u64) -> bool {
        self.refill(now, rate);
        if self.bytes >= bytes {
            self.bytes -= bytes;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_and_are_per_key() {
        let mut t = RateTable::new(64, 1);
        let now = Instant::now();
        let r = Rate {
            per_sec: 10,
            burst: 3,
        };
        let a = prefix_key("192.0.2.1".parse().expect("ip"));
        let b = prefix_key("192.0.2.2".parse().expect("ip"));
        assert!((0..3).all(|_| t.take(a, now, r, 1)));
        assert!(!t.take(a, now, r, 1));
        assert!(t.take(b, now, r, 1), "another source has its own bucket");
        assert!(!t.take(a, now + Duration::from_millis(50), r, 1));
        assert!(t.take(a, now + Duration::from_millis(100), r, 1));
        assert!(t.take(a, now, Rate::UNLIMITED, 1_000_000));
    }

    #[test]
    fn ipv6_is_limited_per_64_and_mapped_as_ipv4() {
        let k = |s: &str| prefix_key(s.parse().expect("ip"));
        assert_eq!(k("2001:db8::1"), k("2001:db8::ffff:2"));
        assert_ne!(k("2001:db8::1"), k("2001:db8:0:1::1"));
        assert_eq!(k("::ffff:192.0.2.1"), k("192.0.2.1"));
        assert_ne!(k("::"), k("0.0.0.0"));
    }

    #[test]
    fn budget_earns_and_refills_up_to_the_burst() {
        let mut b = Budget::default();
        let now = Instant::now();
        let r = Rate {
            per_sec: 1000,
            burst: 100,
        };
        assert!(b.spend(now, r, 100));
        assert!(!b.spend(now, r, 1));
        b.earn(now, r, 30);
        assert!(b.spend(now, r, 30));
        assert!(!b.spend(now, r, 1));
        assert!(b.spend(now + Duration::from_millis(50), r, 50));
        b.earn(now + Duration::from_secs(10), r, 1000);
        assert!(!b.spend(now + Duration::from_secs(10), r, 101));
    }
}
