//! Per-session outbound queue ([`Outbox`]: sequence numbers, replay buffer, acks) and session
//! tokens ([`SessionToken`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use subtle::ConstantTimeEq;

use crate::proto::Encoded;

/// Default number of unacknowledged messages kept per session (`--signal-replay-limit`).
pub const DEFAULT_REPLAY_LIMIT: usize = 1024;
/// Default cap on the bytes kept per session (on top of the message count).
pub const DEFAULT_REPLAY_BYTES: usize = 4 * 1024 * 1024;

/// The replay buffer no longer holds (or never held) the messages after the requested `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The `seq` the caller asked to continue after.
    pub after: u64,
    /// The oldest `seq` still held (or the next `seq` to be assigned when nothing is held).
    pub oldest: u64,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "messages after seq {} are no longer available (oldest kept: {})",
            self.after, self.oldest
        )
    }
}

impl std::error::Error for Gap {}

/// A session's outbound messages: assigns `seq` (1, 2, …), keeps unacknowledged messages for
/// replay, bounded by a message count and a byte total (oldest dropped first).
#[derive(Debug)]
pub struct Outbox {
    /// `seq` of `buf[0]` (== `next_seq` when empty).
    first_seq: u64,
    next_seq: u64,
    buf: VecDeque<Box<str>>,
    bytes: usize,
    limit: usize,
    max_bytes: usize,
    /// A counter shared by every outbox of a hub: the bytes held in all of them.
    meter: Option<Arc<AtomicUsize>>,
}

/// A copy holds the same messages but is not counted by the original's meter.
impl Clone for Outbox {
    fn clone(&self) -> Self {
        Outbox {
            first_seq: self.first_seq,
            next_seq: self.next_seq,
            buf: self.buf.clone(),
            bytes: self.bytes,
            limit: self.limit,
            max_bytes: self.max_bytes,
            meter: None,
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if let Some(m) = &self.meter {
            m.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new(DEFAULT_REPLAY_LIMIT)
    }
}

impl Outbox {
    /// An empty outbox keeping at most `limit` messages (at least 1).
    pub fn new(limit: usize) -> Self {
        Outbox::with_max_bytes(limit, usize::MAX)
    }

    /// An empty outbox keeping at most `limit` messages and `max_bytes` bytes (the newest
    /// message is always kept, whatever its size).
    pub fn with_max_bytes(limit: usize, max_bytes: usize) -> Self {
        Outbox {
            first_seq: 1,
            next_seq: 1,
            buf: VecDeque::new(),
            bytes: 0,
            limit: limit.max(1),
            max_bytes,
            meter: None,
        }
    }

    /// Count this outbox's bytes in `meter` (shared by the outboxes of a hub) from now on.
    pub fn metered(mut self, meter: Arc<AtomicUsize>) -> Self {
        meter.fetch_add(self.bytes, Ordering::Relaxed);
        self.meter = Some(meter);
        self
    }

    fn grew(&mut self, n: usize) {
        self.bytes += n;
        if let Some(m) = &self.meter {
            m.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Queues an already rendered message and returns its `seq`. The caller must have rendered it
    /// with [`Outbox::next_seq`]; prefer [`Outbox::push`] or [`Outbox::push_with`].
    fn push_text(&mut self, text: String) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.grew(text.len());
        self.buf.push_back(text.into_boxed_str());
        while self.buf.len() > self.limit || (self.bytes > self.max_bytes && self.buf.len() > 1) {
            self.drop_front();
        }
        seq
    }

    fn drop_front(&mut self) {
        if let Some(old) = self.buf.pop_front() {
            self.bytes -= old.len();
            if let Some(m) = &self.meter {
                m.fetch_sub(old.len(), Ordering::Relaxed);
            }
            self.first_seq += 1;
        }
    }

    /// Queues `msg` with the next `seq`, which it returns.
    pub fn push(&mut self, msg: &Encoded) -> u64 {
        let text = msg.with_seq(self.next_seq);
        self.push_text(text)
    }

    /// Like [`Outbox::push`], but the buffer may exceed its limits by this one message instead
    /// of dropping the oldest: used for `resumed`, which must not evict the replay it ends.
    /// What came before it still keeps to both limits, so repeated resumes cannot pile up
    /// `resumed` messages past the byte cap.
    pub fn push_over_limit(&mut self, msg: &Encoded) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let text = msg.with_seq(seq);
        let newest = text.len();
        self.grew(newest);
        self.buf.push_back(text.into_boxed_str());
        while self.buf.len() > self.limit.saturating_add(1)
            || (self.bytes - newest > self.max_bytes && self.buf.len() > 1)
        {
            self.drop_front();
        }
        seq
    }

    /// An empty outbox (limits as [`Outbox::with_max_bytes`]) whose next message is
    /// `last_seq + 1`: the local copy of a session whose messages are numbered elsewhere (a
    /// cluster's shared store).
    pub fn starting_after(last_seq: u64, limit: usize, max_bytes: usize) -> Self {
        let mut o = Outbox::with_max_bytes(limit, max_bytes);
        o.first_seq = last_seq.saturating_add(1);
        o.next_seq = o.first_seq;
        o
    }

    /// Appends a message numbered elsewhere, `text` already carrying its `seq`. Taken only when
    /// `seq` is the next one: `Ok(true)`; an older `seq` (a duplicate) is ignored: `Ok(false)`;
    /// a later one is a gap the caller must fill first: `Err(next_seq)`.
    pub fn push_at(&mut self, seq: u64, text: &str) -> Result<bool, u64> {
        use std::cmp::Ordering as O;
        match seq.cmp(&self.next_seq) {
            O::Less => Ok(false),
            O::Greater => Err(self.next_seq),
            O::Equal => {
                self.push_text(text.to_owned());
                Ok(true)
            }
        }
    }

    /// Queues the text `render(seq)` returns for the next `seq`, which it returns.
    pub fn push_with(&mut self, render: impl FnOnce(u64) -> String) -> u64 {
        let text = render(self.next_seq);
        self.push_text(text)
    }

    /// The `seq` the next message will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The last `seq` assigned (0 before the first message).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Oldest `seq` still held (== `next_seq` when nothing is held).
    pub fn oldest_seq(&self) -> u64 {
        self.first_seq
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Acknowledges everything ≤ `seq` (values past the last assigned `seq` are clamped).
    pub fn ack(&mut self, seq: u64) {
        let seq = seq.min(self.last_seq());
        while self.first_seq <= seq && !self.buf.is_empty() {
            self.drop_front();
        }
    }

    /// Whether the messages after `last_seq` are all still held (`last_seq` ≤ last assigned).
    pub fn can_replay_after(&self, last_seq: u64) -> bool {
        last_seq <= self.last_seq() && last_seq.saturating_add(1) >= self.first_seq
    }

    /// Whether a resume from `last_seq` can replay: every message after it is held, and once
    /// everything ≤ `last_seq` is acknowledged, [`Outbox::push_over_limit`] (the `resumed` that
    /// ends the replay) would keep them all.
    pub fn can_resume_after(&self, last_seq: u64) -> bool {
        let Ok(after) = self.replay_after(last_seq) else {
            return false;
        };
        let (n, bytes) = after.fold((0usize, 0usize), |(n, b), (_, m)| (n + 1, b + m.len()));
        n <= self.limit && (n == 0 || bytes <= self.max_bytes)
    }

    /// Every held message with `seq > last_seq`, in order, as `(seq, text)`.
    ///
    /// Fails with [`Gap`] when some of them were dropped (acknowledged or over the limit), or
    /// when `last_seq` is past the last assigned `seq`.
    pub fn replay_after(
        &self,
        last_seq: u64,
    ) -> Result<impl Iterator<Item = (u64, &str)> + '_, Gap> {
        if !self.can_replay_after(last_seq) {
            return Err(Gap {
                after: last_seq,
                oldest: self.first_seq,
            });
        }
        let skip = (last_seq + 1 - self.first_seq) as usize;
        let first = self.first_seq;
        Ok(self
            .buf
            .iter()
            .enumerate()
            .skip(skip)
            .map(move |(i, m)| (first + i as u64, &**m)))
    }
}

/// A session token: 256 random bits as 43 characters of base64url (no padding). Compared in
/// constant time; `Debug` does not print it.
#[derive(Clone)]
pub struct SessionToken(String);

impl SessionToken {
    /// A fresh token from `rng` (use a cryptographically secure RNG, e.g. `rand::rngs::StdRng`
    /// seeded from the OS, or `rand::rng()`).
    pub fn generate<R: RngCore + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        SessionToken(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A token that matches nothing (a session known here only by its digest).
    pub fn from_digest_only() -> Self {
        SessionToken(String::new())
    }

    /// Made by [`SessionToken::from_digest_only`].
    pub fn is_digest_only(&self) -> bool {
        self.0.is_empty()
    }

    /// The 43-character string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `s` has the shape of a token (43 base64url characters). Cheap, not secret.
    pub fn well_formed(s: &str) -> bool {
        s.len() == 43
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    /// Constant-time comparison with a presented string.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }

    /// SHA-256 of the token: the lookup key (see [`token_digest`]).
    pub fn digest(&self) -> [u8; 32] {
        token_digest(&self.0)
    }
}

/// SHA-256 of a presented token string: sessions are found by this digest, so the timing of the
/// map lookup depends only on a hash the attacker cannot steer towards a real token.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl PartialEq for SessionToken {
    fn eq(&self, o: &Self) -> bool {
        self.matches(&o.0)
    }
}

impl Eq for SessionToken {}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(…)")
    }
}
