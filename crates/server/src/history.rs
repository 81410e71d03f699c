//! The admin view's recent history (`GET /admin/history`): a ring buffer of samples taken every
//! [`SAMPLE_EVERY`] over the last [`KEEP`], so that a page opened now shows the last minutes.
//! Rates are computed from the counters between two samples.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use crate::metrics::{Direction, Metrics};

/// Time between two samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How far back the buffer reaches.
pub const KEEP: Duration = Duration::from_secs(600);

/// One sample: rates over the interval before it, and levels at its time.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Sample {
    /// Unix time, ms.
    pub t: u64,
    /// TURN: bytes/s relayed from clients to peers.
    pub turn_in: f64,
    /// TURN: bytes/s relayed from peers to clients.
    pub turn_out: f64,
    /// SFU: bytes/s received from participants.
    pub sfu_in: f64,
    /// SFU: bytes/s sent to participants.
    pub sfu_out: f64,
    /// Signaling: client messages handled per second.
    pub msgs_in: f64,
    /// Signaling: messages written to clients per second.
    pub msgs_out: f64,
    /// Live TURN allocations.
    pub allocations: u64,
    /// Live signaling sessions on this node.
    pub sessions: u64,
    /// Rooms (in a cluster: of the whole cluster).
    pub rooms: u64,
}

/// Counter readings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub turn_in: u64,
    pub turn_out: u64,
    pub sfu_in: u64,
    pub sfu_out: u64,
    pub msgs_in: u64,
    pub msgs_out: u64,
}

/// The ring buffer.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    samples: VecDeque<Sample>,
    last: Option<(Instant, Counters)>,
}

fn rate(now: u64, before: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    now.saturating_sub(before) as f64 / secs
}

impl History {
    /// Empty.
    pub fn new() -> Arc<Self> {
        Arc::new(History::default())
    }

    /// Adds a sample from counter readings `c` taken at `now` (the first call only sets the
    /// baseline) and levels.
    pub fn record(
        &self,
        now: Instant,
        unix_ms: u64,
        c: Counters,
        allocations: u64,
        sessions: u64,
        rooms: u64,
    ) {
        let mut r = self.inner.lock();
        let Some((then, prev)) = r.last.replace((now, c)) else {
            return;
        };
        let secs = now.saturating_duration_since(then).as_secs_f64();
        let s = Sample {
            t: unix_ms,
            turn_in: rate(c.turn_in, prev.turn_in, secs),
            turn_out: rate(c.turn_out, prev.turn_out, secs),
            sfu_in: rate(c.sfu_in, prev.sfu_in, secs),
            sfu_out: rate(c.sfu_out, prev.sfu_out, secs),
            msgs_in: rate(c.msgs_in, prev.msgs_in, secs),
            msgs_out: rate(c.msgs_out, prev.msgs_out, secs),
            allocations,
            sessions,
            rooms,
        };
        let cap = (KEEP.as_secs() / SAMPLE_EVERY.as_secs()).max(1) as usize;
        while r.samples.len() >= cap {
            r.samples.pop_front();
        }
        r.samples.push_back(s);
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.inner.lock().samples.iter().copied().collect()
    }

    /// Samples every [`SAMPLE_EVERY`] until `shutdown`.
    pub fn spawn_sampler(
        self: &Arc<Self>,
        metrics: Arc<Metrics>,
        signal: Arc<crate::signal::SignalService>,
        control: Arc<crate::control::Control>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                let (msgs_in, msgs_out) = signal.message_counts();
                let (sfu_in, sfu_out) = signal.sfu().map_or((0, 0), |s| {
                    let t = s.snapshot().totals;
                    (t.bytes_in, t.bytes_out)
                });
                let c = Counters {
                    turn_in: metrics.relayed_bytes.get(Direction::ClientToPeer).get(),
                    turn_out: metrics.relayed_bytes.get(Direction::PeerToClient).get(),
                    sfu_in,
                    sfu_out,
                    msgs_in,
                    msgs_out,
                };
                let st = signal.stats();
                let unix_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
                me.record(
                    Instant::now(),
                    unix_ms,
                    c,
                    control.allocations() as u64,
                    st.sessions as u64,
                    st.rooms as u64,
                );
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_ring() {
        let h = History::default();
        let t0 = Instant::now();
        h.record(t0, 0, Counters::default(), 0, 0, 0);
        assert!(h.samples().is_empty(), "the first reading is the baseline");
        let c = Counters {
            turn_in: 2000,
            msgs_in: 10,
            ..Counters::default()
        };
        h.record(t0 + Duration::from_secs(2), 2000, c, 1, 2, 3);
        let s = h.samples();
        assert_eq!(s.len(), 1);
        assert!((s[0].turn_in - 1000.0).abs() < 1e-9);
        assert!((s[0].msgs_in - 5.0).abs() < 1e-9);
        assert_eq!((s[0].allocations, s[0].sessions, s[0].rooms), (1, 2, 3));
        for i in 0..1000u64 {
            h.record(t0 + Duration::from_secs(4 + 2 * i), i, c, 0, 0, 0);
        }
        assert_eq!(h.samples().len(), 300);
    }
}
