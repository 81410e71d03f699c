//! Signaling traffic per call: how many messages and bytes went through the server for each
//! room while it had members on this node (a "call" starts with the first member and ends when
//! the last one is gone). Keepalives (`ping`/`pong`, `ack`) are not counted: they are the
//! transport's, not the call's.
//!
//! Counted on the node that holds the sessions: client → server messages when a transport
//! hands one over (`in`), server → client messages when a stream writes them (`out`; a message
//! replayed after a resume is counted again, it was sent again).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

/// Finished calls kept for the admin view.
const FINISHED_KEPT: usize = 32;

/// Messages and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    pub messages: u64,
    pub bytes: u64,
}

impl Count {
    fn add(&mut self, messages: u64, bytes: u64) {
        self.messages += messages;
        self.bytes += bytes;
    }

    /// Both directions together.
    pub fn plus(self, o: Count) -> Count {
        Count {
            messages: self.messages + o.messages,
            bytes: self.bytes + o.bytes,
        }
    }
}

/// One call as the admin view shows it.
#[derive(Clone, Debug, Serialize)]
pub struct CallSummary {
    pub room: String,
    /// Unix seconds.
    pub started: u64,
    /// Seconds.
    pub duration: f64,
    /// Most members on this node at once.
    pub peak_members: u32,
    /// Client → server.
    #[serde(rename = "in")]
    pub inbound: Count,
    /// Server → client.
    #[serde(rename = "out")]
    pub outbound: Count,
    /// Both.
    pub total: Count,
}

struct Call {
    started_unix: u64,
    started: Instant,
    members: u32,
    peak: u32,
    inbound: Count,
    outbound: Count,
}

impl Call {
    fn summary(&self, room: &str, now: Instant) -> CallSummary {
        CallSummary {
            room: room.to_owned(),
            started: self.started_unix,
            duration: now.duration_since(self.started).as_secs_f64(),
            peak_members: self.peak,
            inbound: self.inbound,
            outbound: self.outbound,
            total: self.inbound.plus(self.outbound),
        }
    }
}

/// The calls of this node.
#[derive(Default)]
pub struct CallMeter {
    calls: HashMap<Arc<str>, Call>,
    finished: VecDeque<CallSummary>,
}

impl CallMeter {
    /// A session of `room` is now held here.
    pub fn enter(&mut self, room: &Arc<str>, now: Instant, now_unix: u64) {
        let c = self.calls.entry(room.clone()).or_insert_with(|| Call {
            started_unix: now_unix,
            started: now,
            members: 0,
            peak: 0,
            inbound: Count::default(),
            outbound: Count::default(),
        });
        c.members += 1;
        c.peak = c.peak.max(c.members);
    }

    /// A session of `room` is gone from here; the summary when that ended the call.
    pub fn exit(&mut self, room: &str, now: Instant) -> Option<CallSummary> {
        let c = self.calls.get_mut(room)?;
        c.members = c.members.saturating_sub(1);
        if c.members > 0 {
            return None;
        }
        let (room, call) = self.calls.remove_entry(room)?;
        let s = call.summary(&room, now);
        if self.finished.len() == FINISHED_KEPT {
            self.finished.pop_front();
        }
        self.finished.push_back(s.clone());
        Some(s)
    }

    /// `messages` client → server messages of `bytes` for `room`.
    pub fn inbound(&mut self, room: &str, messages: u64, bytes: u64) {
        if let Some(c) = self.calls.get_mut(room) {
            c.inbound.add(messages, bytes);
        }
    }

    /// `messages` server → client messages of `bytes` for `room`.
    pub fn outbound(&mut self, room: &str, messages: u64, bytes: u64) {
        if let Some(c) = self.calls.get_mut(room) {
            c.outbound.add(messages, bytes);
        }
    }

    /// The call of `room` so far.
    pub fn live(&self, room: &str, now: Instant) -> Option<CallSummary> {
        self.calls.get(room).map(|c| c.summary(room, now))
    }

    /// Every live call.
    pub fn live_all(&self, now: Instant) -> Vec<CallSummary> {
        let mut v: Vec<_> = self.calls.iter().map(|(r, c)| c.summary(r, now)).collect();
        v.sort_by(|a, b| a.room.cmp(&b.room));
        v
    }

    /// The last calls that ended, oldest first.
    pub fn finished(&self) -> Vec<CallSummary> {
        self.finished.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_lasts_from_the_first_member_to_the_last() {
        let mut m = CallMeter::default();
        let t = Instant::now();
        let room: Arc<str> = Arc::from("r");
        m.enter(&room, t, 100);
        m.inbound("r", 1, 40);
        m.enter(&room, t, 101);
        m.outbound("r", 3, 300);
        m.inbound("nobody", 1, 1);
        assert!(m.exit("r", t).is_none());
        m.inbound("r", 1, 10);
        let s = m.exit("r", t).expect("the call ended");
        assert_eq!(s.peak_members, 2);
        assert_eq!(
            s.inbound,
            Count {
                messages: 2,
                bytes: 50
            }
        );
        assert_eq!(
            s.outbound,
            Count {
                messages: 3,
                bytes: 300
            }
        );
        assert_eq!(
            s.total,
            Count {
                messages: 5,
                bytes: 350
            }
        );
        assert!(m.live("r", t).is_none());
        assert_eq!(m.finished().len(), 1);
        // A new call in the same room starts from zero.
        m.enter(&room, t, 200);
        assert_eq!(m.live("r", t).map(|s| s.total.messages), Some(0));
        for i in 0..40 {
            let r: Arc<str> = Arc::from(format!("x{i}"));
            m.enter(&r, t, 0);
            m.exit(&r, t);
        }
        assert_eq!(m.finished().len(), FINISHED_KEPT);
    }
}
