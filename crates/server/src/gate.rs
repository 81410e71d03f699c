//! Who may come in: per-address limits on new connections, open connections and signaling
//! joins, and the drain switch. Shared by the TURN TCP/TLS listeners, the HTTP listener and
//! signaling. Memory is fixed: rates live in [`RateTable`]s (a slot per address prefix, taken
//! over by other prefixes when hashes collide); open connections are counted per prefix only
//! while they are open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use icebreaker_turn::limit::prefix_key;
use icebreaker_turn::{Rate, RateTable};
use parking_lot::Mutex;

use crate::config::Config;
use crate::metrics::{Metrics, Refusal};

/// Slots per rate table (16 bytes each).
const SLOTS: usize = 8192;

/// The limits, as configured (reloadable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateSettings {
    pub conn_rate: Rate,
    pub max_conns_per_ip: usize,
    pub join_rate: Rate,
}

impl GateSettings {
    pub fn from_config(c: &Config) -> Self {
        GateSettings {
            conn_rate: crate::serve::rate_times_ten(c.conn_rate_per_ip),
            max_conns_per_ip: c.max_conns_per_ip,
            join_rate: crate::serve::rate_times_ten(c.join_rate_per_ip),
        }
    }
}

#[derive(Debug)]
struct Conns {
    rates: RateTable,
    open: HashMap<u128, u32>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Gate {
    settings: Mutex<GateSettings>,
    conns: Mutex<Conns>,
    joins: Mutex<RateTable>,
    draining: AtomicBool,
    metrics: Arc<Metrics>,
}

/// An admitted connection: counted against its address until dropped.
#[derive(Debug)]
pub struct ConnSlot {
    gate: Arc<Gate>,
    key: u128,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self.gate.conns.lock();
        if let Some(n) = c.open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.open.remove(&self.key);
            }
        }
    }
}

fn seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x9a7e_u64)
}

impl Gate {
    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn new(settings: GateSettings, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Gate {
            settings: Mutex::new(settings),
            conns: Mutex::new(Conns {
                rates: RateTable::new(SLOTS, seed()),
                open: HashMap::new(),
            }),
            joins: Mutex::new(RateTable::new(SLOTS, seed())),
            draining: AtomicBool::new(false),
            metrics,
        })
    }

    /// Replace the limits (reload). Connections open now stay open.
    pub fn set(&self, settings: GateSettings) {
        *self.settings.lock() = settings;
    }

    pub fn settings(&self) -> GateSettings {
        *self.settings.lock()
    }

    /// Admit a new TCP/TLS connection from `ip`, or refuse it (counted in metrics): over the
    /// address's connection rate or its open-connection limit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnSlot> {
        let s = self.settings();
        let key = prefix_key(ip);
        let mut c = self.conns.lock();
        let open = c.open.get(&key).copied().unwrap_or(0);
        if s.max_conns_per_ip > 0 && open as usize >= s.max_conns_per_ip {
            drop(c);
            self.metrics.refused(Refusal::ConnsPerIp);
            return None;
        }
        if !c.rates.take(key, Instant::now(), s.conn_rate, 1) {
            drop(c);
            self.metrics.refused(Refusal::ConnRate);
            return None;
        }
        *c.open.entry(key).or_insert(0) += 1;
        drop(c);
        Some(ConnSlot {
            gate: self.clone(),
            key,
        })
    }

    /// Whether `ip` may join a signaling room now (counted in metrics when not).
    pub fn join(&self, ip: Option<IpAddr>) -> Result<(), Refusal> {
        if self.is_draining() {
            self.metrics.refused(Refusal::JoinDraining);
            return Err(Refusal::JoinDraining);
        }
        let Some(ip) = ip else { return Ok(()) };
        let rate = self.settings().join_rate;
        if !self
            .joins
            .lock()
            .take(prefix_key(ip), Instant::now(), rate, 1)
        {
            self.metrics.refused(Refusal::JoinRate);
            return Err(Refusal::JoinRate);
        }
        Ok(())
    }

    /// Start draining: `/readyz` answers 503 and joins are refused (TURN is told separately).
    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Count a refusal decided elsewhere (signaling's per-connection message rate).
    pub fn count(&self, r: Refusal) {
        self.metrics.refused(r);
    }

    /// Open connections counted now (all addresses).
    pub fn open_connections(&self) -> usize {
        self.conns.lock().open.values().map(|&n| n as usize).sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn gate(rate: u32, max: usize, joins: u32) -> Arc<Gate> {
        Gate::new(
            GateSettings {
                conn_rate: Rate {
                    per_sec: rate,
                    burst: rate,
                },
                max_conns_per_ip: max,
                join_rate: Rate {
                    per_sec: joins,
                    burst: joins,
                },
            },
            Arc::new(Metrics::new()),
        )
    }

    #[test]
    fn open_connections_are_capped_per_address_and_released_on_drop() {
        let g = gate(1000, 2, 10);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let one = g.admit(a).unwrap();
        let _two = g.admit(a).unwrap();
        assert!(g.admit(a).is_none());
        assert!(g.admit(b).is_some());
        drop(one);
        assert!(g.admit(a).is_some());
        assert!(g.metrics.encode().contains("reason=\"conns_per_ip\"} 1"));
    }

    #[test]
    fn new_connections_and_joins_are_rate_limited() {
        let g = gate(3, 0, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let slots: Vec<_> = (0..3).map(|_| g.admit(a).unwrap()).collect();
        assert!(g.admit(a).is_none());
        assert_eq!(slots.len(), 3);
        assert!(g.join(Some(a)).is_ok());
        assert!(g.join(Some(a)).is_ok());
        assert_eq!(g.join(Some(a)), Err(Refusal::JoinRate));
        g.set_draining(true);
        assert_eq!(
            g.join(Some("192.0.2.9".parse().unwrap())),
            Err(Refusal::JoinDraining)
        );
    }
}
