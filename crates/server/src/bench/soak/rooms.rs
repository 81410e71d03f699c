//! The signaling half of `bench soak`: WebSocket clients in rooms send application messages
//! (`signal` to the next member of the room, `broadcast` to all) for the whole run, drop their
//! connection now and then without a close frame, come back after a short random time and
//! `resume` with their token and the last `seq` they processed, and check that every message
//! arrives exactly once and in order.
//!
//! * **Sequence numbers.** Every application message carries its sender (`c`), the sender's
//!   message number (`s`) and, per recipient, a *pair* number `k`: the count of earlier messages
//!   from this sender to that recipient (`k` is a number in a `signal`, an array indexed by room
//!   position in a `broadcast`). The recipient expects `k` = 0, 1, 2, ... from each sender: a
//!   smaller `k` is a duplicate (seen recently) or out of order, a larger one leaves a gap.
//!   The server's `seq` must go up by exactly one per message the client processes (`joined` is
//!   1), across resumes.
//! * **Client → server is at most once.** The protocol has no acknowledgement for what a client
//!   sends, and a message written just before the connection is cut may or may not have reached
//!   the server. Every application message is therefore followed by a `ping` whose `id` is the
//!   next message number: its `pong` proves that the server handled everything before it. When a
//!   connection is cut, the messages not yet confirmed are *in doubt*: they may be missing, but
//!   every other message must arrive (the gaps and the tail of each sender → recipient stream are
//!   compared with the sender's in-doubt list at the end). With a `pong` in well under a
//!   millisecond on loopback, few messages are ever in doubt; the report counts them.
//! * **Faults** (Poisson, `fault_rate` per client per minute): *fin* (drop the socket: the
//!   kernel sends FIN), *rst* (`SO_LINGER` 0: RST, unread data discarded), *zombie* (stop using
//!   the connection but keep it open, resume on a new one: the server must supersede the old
//!   one). Offline for a random time below `max_offline` (and half the server's grace period).
//! * **Acks** like the SDK: at most 500 ms after a message, and after 512 unacknowledged ones.
//! * **End**: the coordinator stops the senders, waits until every message that is not in doubt
//!   has arrived, then every client leaves and closes.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use super::super::hist::Histogram;
use super::super::signal::{self as bs, Ws};
use super::EventLog;

/// The SDK acknowledges at most this long after a message arrives.
const ACK_DELAY: Duration = Duration::from_millis(500);
/// ... and this client also after this many unacknowledged messages.
const ACK_EVERY: u64 = 512;
/// Frames handled per wake-up before writing.
const BATCH: usize = 64;
/// Duplicates are told from reordering by the last this many `k` of each sender.
const RECENT: usize = 64;
/// Share of application messages sent as `broadcast` (the rest: `signal`).
const BROADCAST_SHARE: f64 = 0.3;
/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Time a client gets for the final leave and close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
const HIST_SHARDS: usize = 16;

/// Settings of the signaling half.
#[derive(Debug, Clone)]
pub struct RoomsPlan {
    /// The server's HTTP listener.
    pub addr: SocketAddr,
    /// `HOST:PORT` for the requests.
    pub authority: String,
    /// Clients (a multiple of `room_size`).
    pub clients: usize,
    /// Members per room.
    pub room_size: usize,
    /// Room name prefix.
    pub room_prefix: String,
    /// Application messages per second per client.
    pub msg_rate: f64,
    /// Padding bytes in each message's data.
    pub pad: usize,
    /// Faults per client per minute.
    pub fault_rate: f64,
    /// Longest time offline after a fault.
    pub max_offline: Duration,
    /// Limit for one connect + join/resume.
    pub connect_timeout: Duration,
    /// Initial handshakes under way at a time.
    pub connect_parallel: usize,
    /// Seed of the clients' random choices.
    pub seed: u64,
}

/// What the coordinator tells the clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Connected, waiting.
    Idle,
    /// Send and fault.
    Run,
    /// No more messages or faults; come back online and keep receiving.
    Stop,
    /// Leave and close.
    Close,
}

/// Counters shared by the clients.
#[derive(Debug, Default)]
#[allow(missing_docs)]
pub struct RoomCounters {
    pub sent: AtomicU64,
    pub signals: AtomicU64,
    pub broadcasts: AtomicU64,
    /// Deliveries expected (a broadcast counts once per recipient).
    pub expected: AtomicU64,
    /// Deliveries received in order (`k` as expected or after a gap).
    pub delivered: AtomicU64,
    pub duplicates: AtomicU64,
    pub out_of_order: AtomicU64,
    pub misrouted: AtomicU64,
    /// Deliveries whose message was written on a connection cut before its `pong`.
    pub in_doubt: AtomicU64,
    pub seq_gaps: AtomicU64,
    pub seq_duplicates: AtomicU64,
    pub faults_fin: AtomicU64,
    pub faults_rst: AtomicU64,
    pub faults_zombie: AtomicU64,
    pub resumes: AtomicU64,
    pub resume_failed: AtomicU64,
    pub rejoins: AtomicU64,
    /// Reconnection attempts that failed (connect, handshake or no answer in time).
    pub reconnect_failed: AtomicU64,
    /// Connections the server closed or lost while the client was using them.
    pub server_closed: AtomicU64,
    /// Sequenced `error` messages.
    pub server_errors: AtomicU64,
    pub peer_left_timeout: AtomicU64,
    pub bad_frames: AtomicU64,
    /// Clients connected and live (joined or resumed) now.
    pub online: AtomicU64,
    /// Sends skipped because a client fell more than a second behind its schedule.
    pub skipped: AtomicU64,
}

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// One client's books: what it sent to each room position, what it received from each.
#[derive(Debug, Clone)]
pub struct Ledger {
    /// Next `k` to each position.
    pub sent_k: Vec<u64>,
    /// `k`s to each position written on a connection that was cut before their `pong`.
    pub in_doubt: Vec<Vec<u64>>,
    /// Next `k` expected from each position.
    pub next_k: Vec<u64>,
    /// Skipped `k` ranges `[from, to)` from each position.
    pub gaps: Vec<Vec<(u64, u64)>>,
    /// The last `k`s received from each position.
    recent: Vec<VecDeque<u64>>,
    /// After a new join (failed resume): take the next `k` from each position as it comes.
    resync: Vec<bool>,
}

impl Ledger {
    /// Empty books for a room of `k`.
    pub fn new(k: usize) -> Ledger {
        Ledger {
            sent_k: vec![0; k],
            in_doubt: vec![Vec::new(); k],
            next_k: vec![0; k],
            gaps: vec![Vec::new(); k],
            recent: vec![VecDeque::new(); k],
            resync: vec![false; k],
        }
    }

    /// Record `k` from position `q`.
    pub fn receive(&mut self, q: usize, k: u64) -> Received {
        let (Some(next), Some(recent), Some(resync)) = (
            self.next_k.get_mut(q),
            self.recent.get_mut(q),
            self.resync.get_mut(q),
        ) else {
            return Received::Duplicate;
        };
        let r = if std::mem::take(resync) || k == *next {
            Received::InOrder
        } else if k > *next {
            if let Some(g) = self.gaps.get_mut(q) {
                g.push((*next, k));
            }
            Received::AfterGap
        } else if recent.contains(&k) {
            return Received::Duplicate;
        } else {
            return Received::OutOfOrder;
        };
        *next = k.saturating_add(1);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(k);
        r
    }
}

/// What [`Ledger::receive`] made of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// The next one.
    InOrder,
    /// Later than the next one (the ones between are missing, or in doubt).
    AfterGap,
    /// Received before.
    Duplicate,
    /// Earlier than one already received, not a recent duplicate.
    OutOfOrder,
}

/// Of the `sent` messages from one sender to one recipient: how many are missing and how many
/// of those were in doubt (allowed to be missing). `gaps` and `next` are the recipient's books,
/// `in_doubt` the sender's.
pub fn pair_missing(gaps: &[(u64, u64)], next: u64, sent: u64, in_doubt: &[u64]) -> (u64, u64) {
    let missing_in = |k: u64| k < sent && (k >= next || gaps.iter().any(|&(a, b)| a <= k && k < b));
    let mut total: u64 = gaps.iter().map(|&(a, b)| b.saturating_sub(a)).sum();
    total += sent.saturating_sub(next);
    let mut doubt: Vec<u64> = in_doubt
        .iter()
        .copied()
        .filter(|&k| missing_in(k))
        .collect();
    doubt.sort_unstable();
    doubt.dedup();
    let doubt = doubt.len() as u64;
    (total.saturating_sub(doubt), doubt)
}

/// The clients' shared state.
pub struct Rooms {
    plan: RoomsPlan,
    /// Peer id of each client now (empty before it joined).
    peer_ids: Vec<Mutex<String>>,
    ledgers: Vec<Mutex<Ledger>>,
    /// Counters.
    pub ctr: RoomCounters,
    hists: Vec<Mutex<Histogram>>,
    epoch: Instant,
    pad: String,
    events: Arc<EventLog>,
}

/// Totals of the final check.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Books {
    /// Deliveries expected (every recipient of every message).
    pub expected: u64,
    /// Delivered in order.
    pub delivered: u64,
    /// Not delivered although not in doubt: lost by the server.
    pub missing: u64,
    /// Deliveries in doubt (their message was written on a connection cut before its `pong`).
    pub in_doubt: u64,
    /// Of those, not delivered.
    pub in_doubt_missing: u64,
}

impl Rooms {
    /// Shared state for `plan`.
    pub fn new(plan: RoomsPlan, events: Arc<EventLog>) -> Rooms {
        let n = plan.clients;
        let k = plan.room_size;
        Rooms {
            peer_ids: (0..n).map(|_| Mutex::new(String::new())).collect(),
            ledgers: (0..n).map(|_| Mutex::new(Ledger::new(k))).collect(),
            ctr: RoomCounters::default(),
            hists: (0..HIST_SHARDS)
                .map(|_| Mutex::new(Histogram::new()))
                .collect(),
            epoch: Instant::now(),
            pad: "x".repeat(plan.pad),
            plan,
            events,
        }
    }

    /// Delivery latency (send → receive, including time offline) of every delivery.
    pub fn latency(&self) -> Histogram {
        let mut h = Histogram::new();
        for s in &self.hists {
            h.merge(&s.lock());
        }
        h
    }

    /// Compare every sender's books with every recipient's.
    pub fn books(&self) -> Books {
        let k = self.plan.room_size;
        let ledgers: Vec<Ledger> = self.ledgers.iter().map(|l| l.lock().clone()).collect();
        let mut b = Books::default();
        for room in 0..self.plan.clients / k {
            for x in 0..k {
                for y in 0..k {
                    if x == y {
                        continue;
                    }
                    let (sx, ry) = (&ledgers[room * k + x], &ledgers[room * k + y]);
                    let sent = sx.sent_k[y];
                    let (missing, doubt_missing) =
                        pair_missing(&ry.gaps[x], ry.next_k[x], sent, &sx.in_doubt[y]);
                    b.expected += sent;
                    b.missing += missing;
                    b.in_doubt += sx.in_doubt[y].len() as u64;
                    b.in_doubt_missing += doubt_missing;
                }
            }
        }
        b.delivered = self.ctr.delivered.load(Ordering::Relaxed);
        b
    }

    fn now_ns(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Connect every client (at most `connect_parallel` at a time), then run it until
/// [`Phase::Close`]. Each reports its initial join on `join_tx`.
pub fn spawn_clients(
    rooms: &Arc<Rooms>,
    phase: &watch::Receiver<Phase>,
    join_tx: &mpsc::UnboundedSender<(usize, Result<(), String>)>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let sem = Arc::new(Semaphore::new(rooms.plan.connect_parallel.clamp(1, 1024)));
    (0..rooms.plan.clients)
        .map(|idx| {
            tokio::spawn(client_task(
                rooms.clone(),
                idx,
                join_tx.clone(),
                phase.clone(),
                sem.clone(),
            ))
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Fin,
    Rst,
    Zombie,
}

enum Outcome {
    Close(Ws),
    Fault(Fault, Ws),
    Lost(String),
}

async fn client_task(
    rooms: Arc<Rooms>,
    idx: usize,
    join_tx: mpsc::UnboundedSender<(usize, Result<(), String>)>,
    mut phase: watch::Receiver<Phase>,
    sem: Arc<Semaphore>,
) {
    let mut c = Client::new(rooms.clone(), idx);
    let first = {
        let Ok(_permit) = sem.acquire().await else {
            let _ = join_tx.send((idx, Err("connect limiter closed".into())));
            return;
        };
        match tokio::time::timeout(rooms.plan.connect_timeout, c.open()).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no joined answer within {:?}",
                rooms.plan.connect_timeout
            )),
        }
    };
    let mut ws = match first {
        Ok(ws) => ws,
        Err(e) => {
            let _ = join_tx.send((idx, Err(e)));
            return;
        }
    };
    let _ = join_tx.send((idx, Ok(())));
    drop(join_tx);
    loop {
        inc(&rooms.ctr.online);
        let outcome = c.run(ws, &mut phase).await;
        rooms.ctr.online.fetch_sub(1, Ordering::Relaxed);
        let zombie = match outcome {
            Outcome::Close(ws) => {
                c.close(ws).await;
                return;
            }
            Outcome::Fault(kind, old) => {
                c.cut();
                let zombie = match kind {
                    Fault::Fin => {
                        inc(&rooms.ctr.faults_fin);
                        drop(old);
                        None
                    }
                    Fault::Rst => {
                        inc(&rooms.ctr.faults_rst);
                        let _ = old.get_ref().set_zero_linger();
                        drop(old);
                        None
                    }
                    Fault::Zombie => {
                        inc(&rooms.ctr.faults_zombie);
                        Some(old)
                    }
                };
                let offline = c.offline_time();
                if !sleep_unless_closed(offline, &mut phase).await {
                    return;
                }
                zombie
            }
            Outcome::Lost(why) => {
                inc(&rooms.ctr.server_closed);
                rooms
                    .events
                    .note(format!("signaling client {idx}: connection lost: {why}"));
                c.cut();
                None
            }
        };
        ws = match c.reconnect(&mut phase).await {
            Some(ws) => ws,
            None => return,
        };
        drop(zombie);
    }
}

/// Sleep for `d`; false when the coordinator asked to close meanwhile.
async fn sleep_unless_closed(d: Duration, phase: &mut watch::Receiver<Phase>) -> bool {
    let end = tokio::time::Instant::now() + d;
    loop {
        if *phase.borrow() == Phase::Close {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(end) => return true,
            r = phase.changed() => if r.is_err() { return false },
        }
    }
}

/// Server → client message (the fields the soak needs).
#[derive(Deserialize)]
struct In<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    session: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    peer: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
    #[serde(default)]
    grace: Option<u64>,
}

/// The numbers in an application message's `data`.
#[derive(Deserialize)]
struct Data {
    c: usize,
    k: KField,
    t: u64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum KField {
    One(u64),
    Many(Vec<u64>),
}

/// What a frame meant while opening a connection.
enum Opened {
    Nothing,
    Live,
    ResumeFailed(String),
    Refused(String),
}

struct Client {
    r: Arc<Rooms>,
    idx: usize,
    room: usize,
    pos: usize,
    k: usize,
    rng: StdRng,
    session: Option<String>,
    last_seq: u64,
    acked: u64,
    ack_due: Option<Instant>,
    /// Next application message number.
    out_seq: u64,
    /// Messages written whose `pong` has not come back: (number, [(position, k)]).
    unconfirmed: VecDeque<(u64, Vec<(usize, u64)>)>,
    sending: bool,
    next_send: Option<Instant>,
    next_fault: Option<Instant>,
    grace: Duration,
    out: Vec<Message>,
}

impl Client {
    fn new(r: Arc<Rooms>, idx: usize) -> Client {
        let k = r.plan.room_size;
        let seed = r.plan.seed ^ (idx as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
        Client {
            idx,
            room: idx / k,
            pos: idx % k,
            k,
            rng: StdRng::seed_from_u64(seed),
            session: None,
            last_seq: 0,
            acked: 0,
            ack_due: None,
            out_seq: 0,
            unconfirmed: VecDeque::new(),
            sending: false,
            next_send: None,
            next_fault: None,
            grace: Duration::from_secs(30),
            out: Vec::new(),
            r,
        }
    }

    /// Connect and join (first time, or after a failed resume) or resume.
    async fn open(&mut self) -> Result<Ws, String> {
        let plan = &self.r.plan;
        let tcp = TcpStream::connect(plan.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", plan.addr))?;
        let _ = tcp.set_nodelay(true);
        let url = format!("ws://{}/ws", plan.authority);
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(url, tcp, Some(bs::ws_config()))
                .await
                .map_err(|e| format!("websocket handshake: {e}"))?;
        let first = match &self.session {
            Some(s) => format!(
                "{{\"type\":\"resume\",\"session\":\"{s}\",\"last_seq\":{}}}",
                self.last_seq
            ),
            None => self.join_text(),
        };
        bs::send_text(&mut ws, first).await?;
        loop {
            let t = bs::next_text(&mut ws).await?;
            match self.on_text(&t, Instant::now()) {
                Opened::Nothing => {}
                Opened::Live => {
                    if !self.out.is_empty() {
                        self.write(&mut ws).await?;
                    }
                    return Ok(ws);
                }
                Opened::ResumeFailed(m) => {
                    // The server no longer knows the session: join again (new peer id).
                    inc(&self.r.ctr.resume_failed);
                    inc(&self.r.ctr.rejoins);
                    self.r
                        .events
                        .note(format!("signaling client {}: resume_failed: {m}", self.idx));
                    self.session = None;
                    self.last_seq = 0;
                    self.acked = 0;
                    self.ack_due = None;
                    self.r.ledgers[self.idx]
                        .lock()
                        .resync
                        .iter_mut()
                        .for_each(|r| *r = true);
                    let j = self.join_text();
                    bs::send_text(&mut ws, j).await?;
                }
                Opened::Refused(m) => return Err(m),
            }
        }
    }

    fn join_text(&self) -> String {
        format!(
            "{{\"type\":\"join\",\"room\":\"{}{}\",\"capacity\":{}}}",
            self.r.plan.room_prefix, self.room, self.k
        )
    }

    /// Reconnect (backing off) until live again; None when asked to close meanwhile.
    async fn reconnect(&mut self, phase: &mut watch::Receiver<Phase>) -> Option<Ws> {
        let mut backoff = Duration::from_millis(100);
        loop {
            if *phase.borrow() == Phase::Close {
                return None;
            }
            match tokio::time::timeout(self.r.plan.connect_timeout, self.open()).await {
                Ok(Ok(ws)) => return Some(ws),
                Ok(Err(e)) => {
                    inc(&self.r.ctr.reconnect_failed);
                    self.r
                        .events
                        .note(format!("signaling client {}: reconnect: {e}", self.idx));
                }
                Err(_) => {
                    inc(&self.r.ctr.reconnect_failed);
                    self.r.events.note(format!(
                        "signaling client {}: reconnect: no answer within {:?}",
                        self.idx, self.r.plan.connect_timeout
                    ));
                }
            }
            if !sleep_unless_closed(backoff, phase).await {
                return None;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn offline_time(&mut self) -> Duration {
        let max = self.r.plan.max_offline.min(self.grace / 2);
        max.mul_f64(self.rng.random_range(0.0..1.0))
    }

    /// The connection was cut: whatever was not confirmed is in doubt.
    fn cut(&mut self) {
        if self.unconfirmed.is_empty() {
            return;
        }
        let mut l = self.r.ledgers[self.idx].lock();
        for (_, ks) in self.unconfirmed.drain(..) {
            for (q, k) in ks {
                if let Some(d) = l.in_doubt.get_mut(q) {
                    d.push(k);
                    inc(&self.r.ctr.in_doubt);
                }
            }
        }
    }

    /// Follow the coordinator; returns whether to close.
    fn apply_phase(&mut self, p: Phase, now: Instant) -> bool {
        match p {
            Phase::Idle => false,
            Phase::Run => {
                if !self.sending {
                    self.sending = true;
                    let every = self.send_every();
                    if self.next_send.is_none() {
                        self.next_send = Some(now + every.mul_f64(self.rng.random_range(0.0..1.0)));
                    }
                    if self.next_fault.is_none() {
                        self.next_fault = Some(now + self.fault_gap());
                    }
                }
                false
            }
            Phase::Stop => {
                self.sending = false;
                self.next_send = None;
                self.next_fault = None;
                false
            }
            Phase::Close => true,
        }
    }

    fn send_every(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.r.plan.msg_rate.max(1e-3))
    }

    fn fault_gap(&mut self) -> Duration {
        let rate = self.r.plan.fault_rate;
        if rate <= 0.0 {
            return Duration::from_secs(100 * 365 * 86_400);
        }
        let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
        Duration::from_secs_f64((-u.ln() * 60.0 / rate).min(1e9))
    }

    fn deadline(&self) -> Option<Instant> {
        [self.ack_due, self.next_send, self.next_fault]
            .into_iter()
            .flatten()
            .min()
    }

    async fn run(&mut self, mut ws: Ws, phase: &mut watch::Receiver<Phase>) -> Outcome {
        let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
        let timer = tokio::time::sleep_until(far());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let p = *phase.borrow_and_update();
        if self.apply_phase(p, Instant::now()) {
            return Outcome::Close(ws);
        }
        loop {
            let deadline = self.deadline();
            if deadline != armed {
                armed = deadline;
                timer
                    .as_mut()
                    .reset(deadline.map_or_else(far, tokio::time::Instant::from_std));
            }
            let mut flush = false;
            tokio::select! {
                biased;
                changed = phase.changed() => {
                    let p = if changed.is_ok() { *phase.borrow_and_update() } else { Phase::Close };
                    if self.apply_phase(p, Instant::now()) {
                        return Outcome::Close(ws);
                    }
                }
                _ = &mut timer, if armed.is_some() => {
                    armed = None;
                    let now = Instant::now();
                    if self.next_fault.is_some_and(|f| f <= now) {
                        self.next_fault = Some(now + self.fault_gap());
                        let kind = match self.rng.random_range(0..3u8) {
                            0 => Fault::Fin,
                            1 => Fault::Rst,
                            _ => Fault::Zombie,
                        };
                        return Outcome::Fault(kind, ws);
                    }
                    if self.ack_due.is_some_and(|d| d <= now) {
                        self.queue_ack();
                    }
                    if let Some(t) = self.next_send.filter(|t| *t <= now) {
                        let every = self.send_every();
                        let mut next = t + every;
                        if now.saturating_duration_since(t) > Duration::from_secs(1) {
                            // Far behind (a starved runtime): skip instead of bursting.
                            let behind = now.saturating_duration_since(t).as_secs_f64();
                            let n = (behind / every.as_secs_f64()) as u64;
                            self.r.ctr.skipped.fetch_add(n, Ordering::Relaxed);
                            next = now + every;
                        }
                        self.next_send = Some(next);
                        self.queue_message(now);
                    }
                }
                m = ws.next() => {
                    let now = Instant::now();
                    let mut m = m;
                    let mut n = 0;
                    loop {
                        match m {
                            Some(Ok(Message::Text(t))) => {
                                let _ = self.on_text(t.as_str(), now);
                            }
                            Some(Ok(Message::Binary(_))) => inc(&self.r.ctr.bad_frames),
                            // tungstenite queues the pong; it goes out with the next flush.
                            Some(Ok(Message::Ping(_))) => flush = true,
                            Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
                            Some(Ok(Message::Close(f))) => {
                                return Outcome::Lost(match f {
                                    Some(f) => format!("closed by the server: {} {}", f.code, f.reason),
                                    None => "closed by the server".into(),
                                });
                            }
                            Some(Err(e)) => return Outcome::Lost(format!("websocket: {e}")),
                            None => return Outcome::Lost("connection closed".into()),
                        }
                        n += 1;
                        if n >= BATCH {
                            break;
                        }
                        match ws.next().now_or_never() {
                            Some(next) => m = next,
                            None => break,
                        }
                    }
                }
            }
            if !self.out.is_empty() || flush {
                if let Err(e) = self.write(&mut ws).await {
                    return Outcome::Lost(e);
                }
            }
        }
    }

    async fn write(&mut self, ws: &mut Ws) -> Result<(), String> {
        for m in self.out.drain(..) {
            ws.feed(m)
                .await
                .map_err(|e| format!("websocket send: {e}"))?;
        }
        ws.flush().await.map_err(|e| format!("websocket send: {e}"))
    }

    async fn close(&mut self, mut ws: Ws) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            ws.send(Message::text("{\"type\":\"leave\"}")).await.ok()?;
            ws.close(None).await.ok()?;
            while let Some(Ok(_)) = ws.next().await {}
            Some(())
        })
        .await;
    }

    fn queue_ack(&mut self) {
        self.ack_due = None;
        if self.last_seq > self.acked {
            self.acked = self.last_seq;
            self.out.push(Message::text(format!(
                "{{\"type\":\"ack\",\"seq\":{}}}",
                self.last_seq
            )));
        }
    }

    /// One application message (`signal` to the next member or `broadcast`) and its `ping`.
    fn queue_message(&mut self, now: Instant) {
        let k = self.k;
        let broadcast = self.rng.random_bool(BROADCAST_SHARE);
        let to = (self.pos + 1) % k;
        let to_peer = if broadcast {
            String::new()
        } else {
            let p = self.r.peer_ids[self.room * k + to].lock().clone();
            if p.is_empty() {
                return;
            }
            p
        };
        let s = self.out_seq;
        self.out_seq += 1;
        let mut ks = Vec::with_capacity(k);
        {
            let mut l = self.r.ledgers[self.idx].lock();
            if broadcast {
                for q in (0..k).filter(|&q| q != self.pos) {
                    ks.push((q, l.sent_k[q]));
                    l.sent_k[q] += 1;
                }
            } else {
                ks.push((to, l.sent_k[to]));
                l.sent_k[to] += 1;
            }
        }
        let mut o = String::with_capacity(self.r.pad.len() + 160);
        if broadcast {
            o.push_str("{\"type\":\"broadcast\",\"data\":{");
        } else {
            let _ = write!(o, "{{\"type\":\"signal\",\"to\":\"{to_peer}\",\"data\":{{");
        }
        let _ = write!(
            o,
            "\"c\":{},\"s\":{s},\"t\":{},\"k\":",
            self.idx,
            self.r.now_ns(now)
        );
        if broadcast {
            o.push('[');
            for q in 0..k {
                if q > 0 {
                    o.push(',');
                }
                let v = ks.iter().find(|(p, _)| *p == q).map_or(0, |(_, v)| *v);
                let _ = write!(o, "{v}");
            }
            o.push(']');
        } else {
            let _ = write!(o, "{}", ks[0].1);
        }
        let _ = write!(o, ",\"p\":\"{}\"}}}}", self.r.pad);
        self.out.push(Message::text(o));
        // Its pong proves that the server handled everything up to this message.
        self.out.push(Message::text(format!(
            "{{\"type\":\"ping\",\"id\":\"{}\"}}",
            s + 1
        )));
        let c = &self.r.ctr;
        inc(&c.sent);
        inc(if broadcast { &c.broadcasts } else { &c.signals });
        c.expected.fetch_add(ks.len() as u64, Ordering::Relaxed);
        self.unconfirmed.push_back((s, ks));
    }

    /// Handle one server message.
    fn on_text(&mut self, t: &str, now: Instant) -> Opened {
        let Ok(m) = serde_json::from_str::<In<'_>>(t) else {
            inc(&self.r.ctr.bad_frames);
            return Opened::Nothing;
        };
        if let Some(seq) = m.seq {
            if seq <= self.last_seq {
                // Processed before: the server sent it twice.
                inc(&self.r.ctr.seq_duplicates);
                self.r.events.note(format!(
                    "signaling client {}: seq {seq} again (last processed {})",
                    self.idx, self.last_seq
                ));
                return Opened::Nothing;
            }
            if seq != self.last_seq + 1 {
                self.r
                    .ctr
                    .seq_gaps
                    .fetch_add(seq - self.last_seq - 1, Ordering::Relaxed);
                self.r.events.note(format!(
                    "signaling client {}: seq {seq} after {}",
                    self.idx, self.last_seq
                ));
            }
            self.last_seq = seq;
            if self.last_seq - self.acked >= ACK_EVERY {
                self.queue_ack();
            } else if self.ack_due.is_none() {
                self.ack_due = Some(now + ACK_DELAY);
            }
        }
        match m.ty.as_ref() {
            "joined" => {
                let peer = m
                    .peer
                    .and_then(|p| serde_json::from_str::<String>(p.get()).ok())
                    .unwrap_or_default();
                match (m.session, peer.is_empty()) {
                    (Some(s), false) => {
                        self.session = Some(s.into_owned());
                        *self.r.peer_ids[self.idx].lock() = peer;
                        if let Some(g) = m.grace {
                            self.grace = Duration::from_secs(g);
                        }
                        Opened::Live
                    }
                    _ => {
                        inc(&self.r.ctr.bad_frames);
                        Opened::Refused("joined without session or peer".into())
                    }
                }
            }
            "resumed" => {
                inc(&self.r.ctr.resumes);
                Opened::Live
            }
            "signal" | "broadcast" => {
                match m.data {
                    Some(d) => self.on_data(d.get(), m.ty == "broadcast", now),
                    None => inc(&self.r.ctr.bad_frames),
                }
                Opened::Nothing
            }
            "pong" => {
                if let Some(n) = m.id.and_then(|i| i.parse::<u64>().ok()) {
                    while self.unconfirmed.front().is_some_and(|(s, _)| *s < n) {
                        self.unconfirmed.pop_front();
                    }
                }
                Opened::Nothing
            }
            "peer-left" => {
                if m.reason.as_deref() == Some("timeout") {
                    inc(&self.r.ctr.peer_left_timeout);
                    self.r.events.note(format!(
                        "signaling client {}: a peer of its room timed out",
                        self.idx
                    ));
                }
                Opened::Nothing
            }
            "error" => {
                let code = m.code.as_deref().unwrap_or("?").to_owned();
                if m.seq.is_none() {
                    // The answer to a join or resume that produced no session.
                    return if code == "resume_failed" {
                        Opened::ResumeFailed(truncated(t))
                    } else {
                        Opened::Refused(format!("refused: {}", truncated(t)))
                    };
                }
                inc(&self.r.ctr.server_errors);
                self.r.events.note(format!(
                    "signaling client {}: server error {code}: {}",
                    self.idx,
                    truncated(t)
                ));
                Opened::Nothing
            }
            _ => Opened::Nothing,
        }
    }

    fn on_data(&mut self, json: &str, broadcast: bool, now: Instant) {
        let Ok(d) = serde_json::from_str::<Data>(json) else {
            inc(&self.r.ctr.bad_frames);
            return;
        };
        let k = self.k;
        if d.c / k != self.room || d.c == self.idx {
            inc(&self.r.ctr.misrouted);
            return;
        }
        let q = d.c % k;
        let kk = match (broadcast, d.k) {
            (false, KField::One(v)) if (q + 1) % k == self.pos => v,
            (true, KField::Many(v)) if v.len() == k => v[self.pos],
            _ => {
                inc(&self.r.ctr.misrouted);
                return;
            }
        };
        let r = self.r.ledgers[self.idx].lock().receive(q, kk);
        let c = &self.r.ctr;
        match r {
            Received::InOrder | Received::AfterGap => {
                inc(&c.delivered);
                if let Some(h) = self.r.hists.get(self.idx % HIST_SHARDS) {
                    h.lock().record(self.r.now_ns(now).saturating_sub(d.t));
                }
            }
            Received::Duplicate => {
                inc(&c.duplicates);
                self.r.events.note(format!(
                    "signaling client {}: duplicate k {kk} from client {}",
                    self.idx, d.c
                ));
            }
            Received::OutOfOrder => {
                inc(&c.out_of_order);
                self.r.events.note(format!(
                    "signaling client {}: k {kk} from client {} out of order",
                    self.idx, d.c
                ));
            }
        }
    }
}

fn truncated(s: &str) -> String {
    bs::truncate(s).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_tells_gaps_duplicates_and_reordering_apart() {
        let mut l = Ledger::new(3);
        assert_eq!(l.receive(1, 0), Received::InOrder);
        assert_eq!(l.receive(1, 1), Received::InOrder);
        assert_eq!(l.receive(1, 1), Received::Duplicate);
        assert_eq!(l.receive(1, 4), Received::AfterGap);
        assert_eq!(l.gaps[1], vec![(2, 4)]);
        assert_eq!(l.receive(1, 3), Received::OutOfOrder);
        assert_eq!(l.receive(1, 5), Received::InOrder);
        assert_eq!(l.next_k, vec![0, 6, 0]);
        // After a new join the next k is taken as it comes.
        l.resync[2] = true;
        assert_eq!(l.receive(2, 7), Received::InOrder);
        assert_eq!(l.receive(2, 8), Received::InOrder);
        assert!(l.gaps[2].is_empty());
        assert_eq!(l.receive(9, 0), Received::Duplicate); // no such position: ignored
    }

    #[test]
    fn missing_messages_are_told_from_those_in_doubt() {
        // Everything arrived.
        assert_eq!(pair_missing(&[], 10, 10, &[]), (0, 0));
        assert_eq!(pair_missing(&[], 10, 10, &[4]), (0, 0));
        // 2 and 3 skipped, 3 in doubt: 2 is missing.
        assert_eq!(pair_missing(&[(2, 4)], 10, 10, &[3]), (1, 1));
        // The tail 8, 9 has not arrived; 9 in doubt (listed twice).
        assert_eq!(pair_missing(&[], 8, 10, &[9, 9]), (1, 1));
        // In doubt but past what was sent (impossible) or delivered: not counted.
        assert_eq!(pair_missing(&[(2, 4)], 10, 10, &[2, 3, 5, 12]), (0, 2));
    }
}
