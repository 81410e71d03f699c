//! The TURN half of `bench soak`: every allocation relays a paced ChannelData stream through the
//! echo peer for the whole run, is refreshed (Refresh + ChannelBind) before anything expires, and
//! now and then suffers a fault.
//!
//! * **Threads**: each generator thread owns a share of the allocations (one connected UDP
//!   socket each, the control session of [`super::super::setup`] on the same socket), waits on
//!   them with epoll, sends one datagram per allocation in turn (the thread owes
//!   `rate × allocations × elapsed` packets and sends what it owes whenever it wakes up, at
//!   least every millisecond) and reads the echoes with `recvmmsg`.
//! * **Control**: refreshes and re-allocations are synchronous transactions on the owning
//!   thread (at most [`MAX_OPS`] per 50 ms housekeeping pass), so nothing else reads the socket
//!   meanwhile; echoes a transaction reads and skips still count as echoed.
//! * **Faults** (Poisson, `fault_rate` per allocation per minute): *pause* (stop sending for
//!   2–20 s, the allocation must still relay afterwards), *re-allocate* (release with Refresh 0,
//!   then Allocate + ChannelBind on a new socket) and *abandon* (close the socket without
//!   releasing, allocate anew: the server must expire the orphan by itself). Before a
//!   re-allocation or an abandon the allocation stops sending for 500 ms, so that its echoes are
//!   home first.
//! * **Lost**: an allocation that gets no echo for `lost_after` while it is sending, or whose
//!   Refresh/ChannelBind fails, is *lost*: reported, then replaced so that the run goes on.
//!
//! Payload: `[ts ns: u64][seq: u64][slot: u32][run: u32][generation: u32][zeros]`; the
//! generation changes with every new allocation of a slot, so an echo can only count for the
//! allocation that sent it.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use icebreaker_stun::{self as codec, ChannelData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::super::hist::Histogram;
use super::super::setup::Session;
use super::super::turn::{self as bt, CHANNEL};
use super::EventLog;
use crate::client::turn::Credentials;
use crate::sys::{Batch, Epoll};

/// Bytes of the payload header (see the module docs).
pub const HEADER: usize = 28;
/// Control transactions (refresh, re-allocation) per thread per housekeeping pass.
pub const MAX_OPS: usize = 8;
const HOUSEKEEPING: Duration = Duration::from_millis(50);
const QUIESCE: Duration = Duration::from_millis(500);
const RECV_BATCH: usize = 32;
/// Echoes that may still arrive after the last packet.
const DRAIN: Duration = Duration::from_secs(1);
/// A thread more than this far behind its schedule skips packets instead of bursting.
const MAX_BEHIND: Duration = Duration::from_millis(100);
/// Refresh no less often than this (permissions last 300 s).
const MAX_MAINTAIN_EVERY: Duration = Duration::from_secs(120);

/// What the generator threads share (read-only).
#[derive(Debug, Clone)]
pub struct RelayPlan {
    /// The TURN server (UDP).
    pub server: SocketAddr,
    /// Local address towards the server.
    pub local_ip: IpAddr,
    /// Credentials.
    pub creds: Credentials,
    /// The echo peer.
    pub peer: SocketAddr,
    /// Run id the echo peer counts.
    pub run_id: u32,
    /// Packets per second per allocation.
    pub pkt_rate: f64,
    /// Payload bytes (ChannelData adds 4).
    pub size: usize,
    /// LIFETIME requested on Allocate and Refresh.
    pub lifetime: u32,
    /// Faults per allocation per minute.
    pub fault_rate: f64,
    /// No echo for this long while sending: the allocation is lost.
    pub lost_after: Duration,
    /// Limit of one control transaction.
    pub timeout: Duration,
    /// Seed of the fault schedule.
    pub seed: u64,
}

impl RelayPlan {
    fn maintain_every(&self, granted: u32) -> Duration {
        let life = self.lifetime.min(granted.max(1));
        Duration::from_secs(u64::from(life) / 2).clamp(Duration::from_secs(5), MAX_MAINTAIN_EVERY)
    }
}

/// Counters the threads add to (flushed every housekeeping pass).
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Packets handed to the kernel.
    pub sent: AtomicU64,
    /// Packets the kernel refused (full buffer).
    pub send_failed: AtomicU64,
    /// Packets skipped because a thread fell behind its schedule.
    pub skipped: AtomicU64,
    /// Echoes received (including those read by control transactions).
    pub received: AtomicU64,
    /// Of those, read and skipped by a control transaction.
    pub control_echoes: AtomicU64,
    /// Echoes of an earlier allocation of the same slot.
    pub stale: AtomicU64,
    /// ChannelData that was not ours, or for another allocation (misrouted).
    pub bad: AtomicU64,
    /// Late STUN responses seen on the data path (harmless).
    pub stray_stun: AtomicU64,
    /// Refresh + ChannelBind done.
    pub refreshes: AtomicU64,
    /// Pause faults.
    pub pauses: AtomicU64,
    /// Re-allocation faults (released, allocated anew).
    pub reallocations: AtomicU64,
    /// Abandon faults (dropped without release, allocated anew).
    pub abandons: AtomicU64,
    /// Allocations lost (no echo while sending, or a failed Refresh/ChannelBind).
    pub lost: AtomicU64,
    /// Allocate (+ ChannelBind) attempts that failed during the run.
    pub alloc_failed: AtomicU64,
    /// Releases (Refresh 0) that failed during the run.
    pub release_failed: AtomicU64,
    /// Allocations held now.
    pub live: AtomicU64,
}

impl RelayCounters {
    fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> RelaySnapshot {
        RelaySnapshot {
            sent: Self::get(&self.sent),
            send_failed: Self::get(&self.send_failed),
            skipped: Self::get(&self.skipped),
            received: Self::get(&self.received),
            control_echoes: Self::get(&self.control_echoes),
            stale: Self::get(&self.stale),
            bad: Self::get(&self.bad),
            stray_stun: Self::get(&self.stray_stun),
            refreshes: Self::get(&self.refreshes),
            pauses: Self::get(&self.pauses),
            reallocations: Self::get(&self.reallocations),
            abandons: Self::get(&self.abandons),
            lost: Self::get(&self.lost),
            alloc_failed: Self::get(&self.alloc_failed),
            release_failed: Self::get(&self.release_failed),
            live: Self::get(&self.live),
        }
    }
}

/// [`RelayCounters`] at one moment.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
#[allow(missing_docs)]
pub struct RelaySnapshot {
    pub sent: u64,
    pub send_failed: u64,
    pub skipped: u64,
    pub received: u64,
    pub control_echoes: u64,
    pub stale: u64,
    pub bad: u64,
    pub stray_stun: u64,
    pub refreshes: u64,
    pub pauses: u64,
    pub reallocations: u64,
    pub abandons: u64,
    pub lost: u64,
    pub alloc_failed: u64,
    pub release_failed: u64,
    pub live: u64,
}

/// A thread's counters between two flushes.
#[derive(Default)]
struct Local {
    sent: u64,
    send_failed: u64,
    skipped: u64,
    received: u64,
    control_echoes: u64,
    stale: u64,
    bad: u64,
    stray_stun: u64,
    refreshes: u64,
    pauses: u64,
    reallocations: u64,
    abandons: u64,
    lost: u64,
    alloc_failed: u64,
    release_failed: u64,
}

impl Local {
    fn flush(&mut self, c: &RelayCounters) {
        let add = |a: &AtomicU64, v: &mut u64| {
            if *v > 0 {
                a.fetch_add(std::mem::take(v), Ordering::Relaxed);
            }
        };
        add(&c.sent, &mut self.sent);
        add(&c.send_failed, &mut self.send_failed);
        add(&c.skipped, &mut self.skipped);
        add(&c.received, &mut self.received);
        add(&c.control_echoes, &mut self.control_echoes);
        add(&c.stale, &mut self.stale);
        add(&c.bad, &mut self.bad);
        add(&c.stray_stun, &mut self.stray_stun);
        add(&c.refreshes, &mut self.refreshes);
        add(&c.pauses, &mut self.pauses);
        add(&c.reallocations, &mut self.reallocations);
        add(&c.abandons, &mut self.abandons);
        add(&c.lost, &mut self.lost);
        add(&c.alloc_failed, &mut self.alloc_failed);
        add(&c.release_failed, &mut self.release_failed);
    }
}

/// What a quiescing allocation does next.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Reallocate,
    Abandon,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Active,
    Paused {
        until: Instant,
    },
    /// Not sending, waiting for the last echoes before `then`.
    Quiesce {
        until: Instant,
        then: Fault,
    },
    /// Without an allocation (a new one failed); try again at `retry`.
    Down {
        retry: Instant,
    },
}

/// One allocation slot: the allocation it holds now and its schedule.
pub struct Slot {
    idx: u32,
    gen: u32,
    sess: Option<Session>,
    state: State,
    seq: u64,
    /// First packet sent after the last echo.
    unanswered_since: Option<Instant>,
    next_maintain: Instant,
    next_fault: Instant,
}

impl Slot {
    /// A slot holding `sess` (set up by [`bt::setup_sessions`]).
    pub fn new(idx: u32, sess: Session) -> Slot {
        let now = Instant::now();
        Slot {
            idx,
            gen: 0,
            sess: Some(sess),
            state: State::Active,
            seq: 0,
            unanswered_since: None,
            next_maintain: now,
            next_fault: now,
        }
    }
}

fn exp_delay(rng: &mut StdRng, per_minute: f64) -> Duration {
    if per_minute <= 0.0 {
        return Duration::from_secs(100 * 365 * 86_400);
    }
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    Duration::from_secs_f64((-u.ln() * 60.0 / per_minute).min(1e9))
}

/// What a thread hands back: the allocations still held (to release) and the RTT histogram.
pub struct WorkerResult {
    /// Allocations to release.
    pub sessions: Vec<Session>,
    /// Echo round-trip times, ns.
    pub rtt: Histogram,
}

/// One generator thread: runs until `stop`, then collects echoes for a second and returns.
pub fn worker(
    plan: &RelayPlan,
    ctr: &RelayCounters,
    events: &EventLog,
    stop: &AtomicBool,
    mut slots: Vec<Slot>,
    thread: usize,
    epoch: Instant,
) -> anyhow::Result<WorkerResult> {
    let n = slots.len();
    let mut rtt = Histogram::new();
    if n == 0 {
        return Ok(WorkerResult {
            sessions: Vec::new(),
            rtt,
        });
    }
    let mut rng =
        StdRng::seed_from_u64(plan.seed ^ (thread as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut ep = Epoll::new(64)?;
    let start = Instant::now();
    for (k, s) in slots.iter_mut().enumerate() {
        if let Some(sess) = &s.sess {
            sess.sock.set_nonblocking(true)?;
            ep.add(sess.sock.as_raw_fd(), k as u64)?;
        }
        // Spread the first refreshes and faults over their periods.
        let every = plan.maintain_every(s.sess.as_ref().map_or(plan.lifetime, |x| x.lifetime));
        s.next_maintain = start + every.mul_f64(rng.random_range(0.3..1.0));
        s.next_fault = start + exp_delay(&mut rng, plan.fault_rate);
    }
    let frame = 4 + plan.size;
    let mut pkt = vec![0u8; frame];
    codec::write_channel_data_header(&mut pkt, CHANNEL, plan.size)
        .map_err(|e| anyhow!("ChannelData header: {e}"))?;
    bt::write_u32(&mut pkt, 4 + 20, plan.run_id);
    let mut rb = Batch::new(RECV_BATCH, (frame + 64).max(2048));
    let mut st = Local::default();
    let rate = plan.pkt_rate * n as f64;
    let max_owed = ((rate * MAX_BEHIND.as_secs_f64()) as u64).max(n as u64);
    let mut done = 0u64;
    let mut cursor = 0usize;
    let mut next_house = start;
    let mut stopped_at: Option<Instant> = None;
    let mut last_live = 0u64;
    loop {
        let now = Instant::now();
        if stopped_at.is_none() && stop.load(Ordering::Relaxed) {
            stopped_at = Some(now);
        }
        if let Some(t) = stopped_at {
            if now >= t + DRAIN {
                break;
            }
        } else {
            let due = ((now - start).as_secs_f64() * rate) as u64;
            let mut owed = due.saturating_sub(done);
            if owed > max_owed {
                st.skipped += owed - max_owed;
                done += owed - max_owed;
                owed = max_owed;
            }
            let ts = u64::try_from((now - epoch).as_nanos()).unwrap_or(u64::MAX);
            for _ in 0..owed {
                done += 1;
                let s = &mut slots[cursor];
                cursor = (cursor + 1) % n;
                if !matches!(s.state, State::Active) {
                    continue;
                }
                let Some(sess) = &s.sess else { continue };
                bt::write_u64(&mut pkt, 4, ts);
                bt::write_u64(&mut pkt, 4 + 8, s.seq);
                bt::write_u32(&mut pkt, 4 + 16, s.idx);
                bt::write_u32(&mut pkt, 4 + 24, s.gen);
                s.seq += 1;
                match sess.sock.send(&pkt) {
                    Ok(_) => {
                        st.sent += 1;
                        s.unanswered_since.get_or_insert(now);
                    }
                    Err(_) => st.send_failed += 1,
                }
            }
        }
        let ready = ep.wait(1)?;
        let now = Instant::now();
        for e in 0..ready {
            if let Some(s) = slots.get_mut(ep.token(e) as usize) {
                drain(&mut rb, s, plan.run_id, epoch, now, &mut st, &mut rtt);
            }
        }
        if now >= next_house {
            next_house = now + HOUSEKEEPING;
            if stopped_at.is_none() {
                housekeeping(
                    plan, events, &mut slots, &mut ep, &mut rb, &mut rng, &mut st, &mut rtt, epoch,
                );
            }
            st.flush(ctr);
            // The gauge is shared by the threads: each adds the change of its own count.
            let live = slots.iter().filter(|s| s.sess.is_some()).count() as u64;
            if live >= last_live {
                ctr.live.fetch_add(live - last_live, Ordering::Relaxed);
            } else {
                ctr.live.fetch_sub(last_live - live, Ordering::Relaxed);
            }
            last_live = live;
        }
    }
    st.flush(ctr);
    let sessions = slots.into_iter().filter_map(|s| s.sess).collect();
    Ok(WorkerResult { sessions, rtt })
}

#[allow(clippy::too_many_arguments)]
fn drain(
    rb: &mut Batch,
    s: &mut Slot,
    run_id: u32,
    epoch: Instant,
    now: Instant,
    st: &mut Local,
    rtt: &mut Histogram,
) {
    let Some(sess) = &s.sess else { return };
    let fd = sess.sock.as_raw_fd();
    for _ in 0..8 {
        let got = match rb.recv(fd, RECV_BATCH) {
            Ok(n) => n,
            // An ICMP error on the connected socket: nothing to count.
            Err(_) => return,
        };
        if got == 0 {
            return;
        }
        let now_ns = u64::try_from((now - epoch).as_nanos()).unwrap_or(u64::MAX);
        for i in 0..got {
            let msg = rb.msg(i);
            if codec::is_stun(msg) {
                st.stray_stun += 1;
                continue;
            }
            let payload = match ChannelData::parse(msg) {
                Ok(cd) if cd.channel == CHANNEL => cd.data,
                _ => {
                    st.bad += 1;
                    continue;
                }
            };
            let (Some(ts), Some(idx), Some(run), Some(gen)) = (
                bt::read_u64(payload, 0),
                bt::read_u32(payload, 16),
                bt::read_u32(payload, 20),
                bt::read_u32(payload, 24),
            ) else {
                st.bad += 1;
                continue;
            };
            if idx != s.idx || run != run_id {
                st.bad += 1;
            } else if gen != s.gen {
                st.stale += 1;
            } else {
                st.received += 1;
                s.unanswered_since = None;
                rtt.record(now_ns.saturating_sub(ts));
            }
        }
        if got < RECV_BATCH {
            return;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn housekeeping(
    plan: &RelayPlan,
    events: &EventLog,
    slots: &mut [Slot],
    ep: &mut Epoll,
    rb: &mut Batch,
    rng: &mut StdRng,
    st: &mut Local,
    rtt: &mut Histogram,
    epoch: Instant,
) {
    let mut ops = 0usize;
    for (k, s) in slots.iter_mut().enumerate() {
        let now = Instant::now();
        match s.state {
            State::Active => {
                if let Some(since) = s.unanswered_since {
                    if now.saturating_duration_since(since) > plan.lost_after {
                        // Whatever arrived meanwhile first (a busy thread may not have read
                        // every ready socket yet).
                        drain(rb, s, plan.run_id, epoch, now, st, rtt);
                        if s.unanswered_since.is_some() && ops < MAX_OPS {
                            ops += 1;
                            let relayed = s.sess.as_ref().map(|x| x.relayed);
                            lose(
                events,
                                s,
                                st,
                                format!(
                                    "allocation {} (slot {}) relayed nothing for {:.1} s while sending",
                                    relayed.map_or_else(|| "?".into(), |r| r.to_string()),
                                    s.idx,
                                    now.saturating_duration_since(since).as_secs_f64()
                                ),
                            );
                            replace(plan, events, s, k, ep, st, false);
                            continue;
                        }
                    }
                }
                if now >= s.next_fault {
                    s.next_fault = now + exp_delay(rng, plan.fault_rate);
                    s.state = match rng.random_range(0..4u8) {
                        0 | 1 => {
                            st.pauses += 1;
                            State::Paused {
                                until: now + Duration::from_secs_f64(rng.random_range(2.0..20.0)),
                            }
                        }
                        2 => State::Quiesce {
                            until: now + QUIESCE,
                            then: Fault::Reallocate,
                        },
                        _ => State::Quiesce {
                            until: now + QUIESCE,
                            then: Fault::Abandon,
                        },
                    };
                    continue;
                }
            }
            State::Paused { until } => {
                if now >= until {
                    s.state = State::Active;
                    s.unanswered_since = None;
                }
            }
            State::Quiesce { until, then } => {
                if now >= until && ops < MAX_OPS {
                    ops += 1;
                    drain(rb, s, plan.run_id, epoch, now, st, rtt);
                    match then {
                        Fault::Reallocate => {
                            st.reallocations += 1;
                            replace(plan, events, s, k, ep, st, true);
                        }
                        Fault::Abandon => {
                            st.abandons += 1;
                            replace(plan, events, s, k, ep, st, false);
                        }
                    }
                }
                continue;
            }
            State::Down { retry } => {
                if now >= retry && ops < MAX_OPS {
                    ops += 1;
                    replace(plan, events, s, k, ep, st, false);
                }
                continue;
            }
        }
        // Active or paused: keep the allocation, its permission and its channel alive.
        if now >= s.next_maintain && ops < MAX_OPS {
            ops += 1;
            maintain(plan, events, s, k, ep, st, rng);
        }
    }
}

/// Refresh + ChannelBind; a failure loses the allocation (it is replaced).
fn maintain(
    plan: &RelayPlan,
    events: &EventLog,
    s: &mut Slot,
    k: usize,
    ep: &mut Epoll,
    st: &mut Local,
    rng: &mut StdRng,
) {
    let Some(sess) = s.sess.as_mut() else { return };
    let r = sess
        .reset_socket()
        .map_err(|e| e.to_string())
        .and_then(|_| sess.refresh(plan.lifetime).map_err(|e| e.to_string()))
        .and_then(|_| {
            sess.channel_bind(CHANNEL, plan.peer)
                .map_err(|e| e.to_string())
        })
        .and_then(|_| sess.sock.set_nonblocking(true).map_err(|e| e.to_string()));
    let echoes = sess.take_data_skipped();
    let relayed = sess.relayed;
    let granted = sess.lifetime;
    count_control_echoes(s, st, echoes);
    match r {
        Ok(()) => {
            st.refreshes += 1;
            let every = plan.maintain_every(granted);
            s.next_maintain = Instant::now() + every.mul_f64(rng.random_range(0.9..1.0));
        }
        Err(e) => {
            lose(
                events,
                s,
                st,
                format!("allocation {relayed} (slot {}): refresh failed: {e}", s.idx),
            );
            replace(plan, events, s, k, ep, st, false);
        }
    }
}

fn count_control_echoes(s: &mut Slot, st: &mut Local, echoes: u64) {
    if echoes > 0 {
        st.received += echoes;
        st.control_echoes += echoes;
        s.unanswered_since = None;
    }
}

fn lose(events: &EventLog, s: &mut Slot, st: &mut Local, why: String) {
    st.lost += 1;
    events.note(format!("LOST: {why}"));
    s.unanswered_since = None;
}

/// Replace the slot's allocation: release it first (`release`) or just close its socket, then
/// Allocate + ChannelBind on a new socket. On failure the slot goes down for a second.
fn replace(
    plan: &RelayPlan,
    events: &EventLog,
    s: &mut Slot,
    k: usize,
    ep: &mut Epoll,
    st: &mut Local,
    release: bool,
) {
    if let Some(mut old) = s.sess.take() {
        if release {
            let r = old
                .reset_socket()
                .map_err(|e| e.to_string())
                .and_then(|_| old.refresh(0).map_err(|e| e.to_string()));
            let echoes = old.take_data_skipped();
            count_control_echoes(s, st, echoes);
            if let Err(e) = r {
                st.release_failed += 1;
                events.note(format!(
                    "release of allocation {} (slot {}) failed: {e}",
                    old.relayed, s.idx
                ));
            }
        }
        // Dropping the session closes its socket (which leaves the epoll set).
    }
    s.unanswered_since = None;
    let r = bt::allocate_fresh(
        plan.server,
        plan.local_ip,
        &plan.creds,
        plan.lifetime,
        plan.timeout,
    )
    .and_then(|mut sess| match sess.channel_bind(CHANNEL, plan.peer) {
        Ok(()) => Ok(sess),
        Err(e) => {
            let _ = sess.refresh(0);
            Err(e)
        }
    })
    .map_err(|e| e.to_string())
    .and_then(|sess| {
        sess.sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        ep.add(sess.sock.as_raw_fd(), k as u64)
            .map_err(|e| e.to_string())?;
        Ok(sess)
    });
    let now = Instant::now();
    match r {
        Ok(sess) => {
            s.gen = s.gen.wrapping_add(1);
            s.next_maintain = now + plan.maintain_every(sess.lifetime).mul_f64(0.95);
            s.sess = Some(sess);
            s.state = State::Active;
        }
        Err(e) => {
            st.alloc_failed += 1;
            events.note(format!("allocating for slot {} failed: {e}", s.idx));
            s.state = State::Down {
                retry: now + Duration::from_secs(1),
            };
        }
    }
}
