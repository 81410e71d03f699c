//! `bench soak`: a long run with faults against one server, TURN and signaling at once, that
//! fails on any lost allocation, any signaling message lost or delivered twice, a dead server
//! or a growing RSS (see `docs/SECURITY.md`, "Soak with faults", and `bench/soak`).
//!
//! * **TURN** ([`relay`]): `allocations` allocations, each relaying `pkt_rate` ChannelData
//!   packets/s through the echo peer of `bench turn` for the whole run, refreshed before they
//!   expire; faults pause them, re-allocate them or abandon them to the server's expiry.
//! * **Signaling** ([`rooms`]): `clients` WebSocket clients in rooms of `room_size` sending
//!   `msg_rate` application messages/s each (`signal` and `broadcast`), cut off without a close
//!   frame now and then and resuming; every message is checked by sequence at every recipient.
//! * **Server RSS** (`server_pid`): sampled every few seconds. *Flat* when the largest sample of
//!   the last window of the load is at most 1.10 × the largest sample of the first window after
//!   the warm-up + 4 MiB (windows of min(60 s, a third of the load after the warm-up); warm-up
//!   min(120 s, a quarter of the load)). A leak of 1 KiB per fault or per thousand messages shows
//!   as a steady climb well past that over ten minutes; allocator noise and the orphaned
//!   allocations that the server holds until they expire stay within it.
//!
//! Phases: set up the allocations, connect and join the clients, run the load for `duration`,
//! stop sending, drain (every message that is not in doubt must arrive), close the clients,
//! release the allocations.

pub mod relay;
pub mod rooms;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::setup;
use super::signal::parse_server;
use super::turn::{self as bt, Background};
use crate::client::turn::Credentials;
use crate::sys;
use relay::{RelayCounters, RelayPlan, RelaySnapshot, Slot, WorkerResult};
use rooms::{Books, Phase, Rooms, RoomsPlan};

/// Longest run.
pub const MAX_DURATION: Duration = Duration::from_secs(86_400);
/// Events kept for the report (the count goes on).
const MAX_EVENTS: usize = 200;
/// Events printed to stderr as they happen.
const PRINT_EVENTS: u64 = 50;

/// Settings of a `bench soak` run (the library entry point, see [`run_soak`]).
#[derive(Clone, Debug)]
pub struct SoakBench {
    /// TURN server (UDP); needed when `allocations` > 0.
    pub server: Option<SocketAddr>,
    /// Signaling: the HTTP listener (`http://HOST:PORT`); needed when `clients` > 0.
    pub http: Option<String>,
    /// TURN credentials.
    pub credentials: Option<Credentials>,
    /// Allocations held and relaying.
    pub allocations: usize,
    /// Signaling clients (a multiple of `room_size`).
    pub clients: usize,
    /// Members per room.
    pub room_size: usize,
    /// Length of the load phase.
    pub duration: Duration,
    /// ChannelData packets per second per allocation.
    pub pkt_rate: f64,
    /// TURN payload bytes.
    pub size: usize,
    /// Application messages per second per signaling client.
    pub msg_rate: f64,
    /// Padding bytes in each signaling message.
    pub msg_pad: usize,
    /// Faults per allocation and per client per minute (0: none).
    pub disconnect_rate: f64,
    /// Longest time a signaling client stays offline after a fault.
    pub max_offline: Duration,
    /// Allocation LIFETIME requested.
    pub lifetime: u32,
    /// No echo for this long while sending: the allocation is lost.
    pub lost_after: Duration,
    /// Fail above this round-trip loss (percent).
    pub max_loss_pct: f64,
    /// Server process: RSS sampled, death noticed.
    pub server_pid: Option<u32>,
    /// Period of the RSS samples [default: load / 60, 1–5 s].
    pub rss_every: Option<Duration>,
    /// Warm-up before the RSS baseline [default: min(120 s, load / 4)].
    pub warmup: Option<Duration>,
    /// Period of the progress rows [default: load / 10, 5–60 s].
    pub report_every: Option<Duration>,
    /// Longest wait for signaling messages after the load.
    pub drain: Duration,
    /// Seed of every random choice (faults, their kinds, offline times).
    pub seed: u64,
    /// TURN generator threads.
    pub threads: usize,
    /// Signaling runtime worker threads.
    pub signal_threads: usize,
    /// Room name prefix.
    pub room_prefix: String,
    /// Progress on stderr.
    pub verbose: bool,
}

impl Default for SoakBench {
    fn default() -> Self {
        SoakBench {
            server: None,
            http: None,
            credentials: None,
            allocations: 1000,
            clients: 500,
            room_size: 5,
            duration: Duration::from_secs(600),
            pkt_rate: 10.0,
            size: 100,
            msg_rate: 1.0,
            msg_pad: 100,
            disconnect_rate: 1.0,
            max_offline: Duration::from_secs(3),
            lifetime: 120,
            lost_after: Duration::from_secs(5),
            max_loss_pct: 1.0,
            server_pid: None,
            rss_every: None,
            warmup: None,
            report_every: None,
            drain: Duration::from_secs(30),
            seed: 1,
            threads: 2,
            signal_threads: 2,
            room_prefix: "soak-".into(),
            verbose: false,
        }
    }
}

/// Notable events (losses, failures), for stderr and the report.
#[derive(Debug, Default)]
pub struct EventLog {
    verbose: bool,
    start: Option<Instant>,
    kept: Mutex<Vec<String>>,
    total: AtomicU64,
}

impl EventLog {
    fn new(verbose: bool, start: Instant) -> EventLog {
        EventLog {
            verbose,
            start: Some(start),
            ..EventLog::default()
        }
    }

    /// Record an event.
    pub fn note(&self, what: String) {
        let n = self.total.fetch_add(1, Ordering::Relaxed);
        let t = self.start.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let line = format!("[{t:7.1} s] {what}");
        if self.verbose && n < PRINT_EVENTS {
            eprintln!("  {line}");
            if n + 1 == PRINT_EVENTS {
                eprintln!("  (further events only in the report)");
            }
        }
        let mut k = self.kept.lock();
        if k.len() < MAX_EVENTS {
            k.push(line);
        }
    }
}

/// One progress row: what happened in the interval ending at `t_s`.
#[derive(Debug, Clone, Serialize)]
pub struct IntervalRow {
    /// Seconds since the load started.
    pub t_s: f64,
    /// TURN packets sent.
    pub turn_sent: u64,
    /// Echoes received.
    pub turn_echoed: u64,
    /// 1 − echoed / sent in this interval (packets in flight at its edges move it slightly).
    pub turn_loss_pct: f64,
    /// Relayed packets, both directions (echo peer received + echoes).
    pub turn_relayed: u64,
    /// Allocations held at the end of the interval.
    pub allocations: u64,
    /// Re-allocations and abandons.
    pub reallocations: u64,
    /// Pauses.
    pub pauses: u64,
    /// Allocations lost.
    pub lost: u64,
    /// Signaling messages sent.
    pub msgs_sent: u64,
    /// Deliveries.
    pub msgs_delivered: u64,
    /// Connections cut.
    pub disconnects: u64,
    /// Sessions resumed.
    pub resumes: u64,
    /// Clients online at the end of the interval.
    pub online: u64,
    /// Server RSS (last sample), KiB.
    pub rss_kib: Option<u64>,
}

/// The TURN half's results.
#[derive(Debug, Clone, Serialize)]
pub struct TurnSoak {
    /// Allocations.
    pub allocations: usize,
    /// Seconds to set them up.
    pub setup_s: f64,
    /// Counters over the whole run.
    pub totals: RelaySnapshot,
    /// Packets the echo peer received.
    pub peer_received: u64,
    /// Relayed packets, both directions.
    pub relayed: u64,
    /// Relayed packets per second over the load.
    pub relayed_per_s: f64,
    /// Round-trip loss over the run, percent.
    pub loss_pct: f64,
    /// Echo RTT, µs.
    pub rtt_p50_us: f64,
    /// Echo RTT, µs.
    pub rtt_p99_us: f64,
    /// Echo RTT, µs.
    pub rtt_max_us: f64,
    /// Allocations released at the end.
    pub released: usize,
    /// Releases that failed at the end.
    pub release_failed: usize,
}

/// The signaling half's results.
#[derive(Debug, Clone, Serialize)]
pub struct SignalSoak {
    /// Clients.
    pub clients: usize,
    /// Members per room.
    pub room_size: usize,
    /// Clients that joined at the start.
    pub joined: usize,
    /// Clients that could not.
    pub join_failed: usize,
    /// The first join failure.
    pub join_error: Option<String>,
    /// Messages sent.
    pub sent: u64,
    /// Of which `signal`.
    pub signals: u64,
    /// Of which `broadcast`.
    pub broadcasts: u64,
    /// Sends skipped (a client fell a second behind).
    pub skipped: u64,
    /// Deliveries expected, delivered, missing, in doubt.
    pub books: Books,
    /// Delivered twice.
    pub duplicates: u64,
    /// Delivered out of order.
    pub out_of_order: u64,
    /// Delivered to the wrong client or from outside the room.
    pub misrouted: u64,
    /// Server `seq` numbers skipped.
    pub seq_gaps: u64,
    /// Server `seq` numbers repeated.
    pub seq_duplicates: u64,
    /// Faults: FIN.
    pub faults_fin: u64,
    /// Faults: RST.
    pub faults_rst: u64,
    /// Faults: connection kept open and abandoned.
    pub faults_zombie: u64,
    /// Sessions resumed.
    pub resumes: u64,
    /// `resume_failed`.
    pub resume_failed: u64,
    /// Reconnection attempts that failed.
    pub reconnect_failed: u64,
    /// Connections the server closed or lost.
    pub server_closed: u64,
    /// Sequenced `error` messages.
    pub server_errors: u64,
    /// `peer-left` with `reason: "timeout"`.
    pub peer_left_timeout: u64,
    /// Unreadable frames.
    pub bad_frames: u64,
    /// Every message not in doubt arrived before the drain limit.
    pub drained: bool,
    /// Seconds the drain took.
    pub drain_s: f64,
    /// Delivery latency (including time offline), ms.
    pub latency_p50_ms: f64,
    /// Delivery latency, ms.
    pub latency_p99_ms: f64,
    /// Delivery latency, ms.
    pub latency_max_ms: f64,
}

/// The server's memory over the run.
#[derive(Debug, Clone, Serialize)]
pub struct RssReport {
    /// (seconds since the load started, KiB); negative: during setup.
    pub samples: Vec<(f64, u64)>,
    /// Sample period, s.
    pub every_s: f64,
    /// Warm-up, s.
    pub warmup_s: f64,
    /// Window length, s.
    pub window_s: f64,
    /// First sample (before any load), KiB.
    pub first_kib: Option<u64>,
    /// Largest sample of the first window after the warm-up, KiB.
    pub baseline_kib: Option<u64>,
    /// Largest sample of the last window of the load, KiB.
    pub end_kib: Option<u64>,
    /// Largest sample of the load, KiB.
    pub max_kib: Option<u64>,
    /// Last sample of the load, KiB.
    pub last_kib: Option<u64>,
    /// After the clients left and the allocations were released, KiB.
    pub after_release_kib: Option<u64>,
    /// `end` must not exceed this: baseline × 1.10 + 4 MiB.
    pub limit_kib: Option<u64>,
    /// Least-squares slope after the warm-up, KiB per minute.
    pub slope_kib_per_min: Option<f64>,
    /// `end ≤ limit`; None when the load was too short to have both windows.
    pub flat: Option<bool>,
}

/// Report of a `bench soak` run.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Everything held.
    pub pass: bool,
    /// What did not.
    pub failures: Vec<String>,
    /// Interrupted (Ctrl-C / SIGTERM).
    pub interrupted: bool,
    /// The seed.
    pub seed: u64,
    /// Load asked for, s.
    pub duration_s: f64,
    /// Load run, s.
    pub ran_s: f64,
    /// Packets/s per allocation.
    pub pkt_rate: f64,
    /// Messages/s per client.
    pub msg_rate: f64,
    /// Faults per allocation and client per minute.
    pub disconnect_rate: f64,
    /// Allocation LIFETIME requested.
    pub lifetime: u32,
    /// Progress rows.
    pub intervals: Vec<IntervalRow>,
    /// TURN.
    pub turn: Option<TurnSoak>,
    /// Signaling.
    pub signaling: Option<SignalSoak>,
    /// Server memory.
    pub rss: Option<RssReport>,
    /// Server process alive at the end (`server_pid`).
    pub server_alive: Option<bool>,
    /// Events (at most 200 kept).
    pub events: Vec<String>,
    /// Events in all.
    pub events_total: u64,
    /// CPU of this process over the load, percent of one core.
    pub generator_cpu_pct: f64,
    /// CPU of the server over the load, percent of one core.
    pub server_cpu_pct: Option<f64>,
}

fn validate(c: &SoakBench) -> anyhow::Result<()> {
    if c.allocations == 0 && c.clients == 0 {
        bail!("nothing to do: --allocations and --clients are both 0");
    }
    if c.allocations > 10_000 {
        bail!("--allocations must be 0..=10000 (one socket each)");
    }
    if c.allocations > 0 {
        if c.server.is_none() {
            bail!("--server HOST:PORT (TURN) is required with --allocations > 0");
        }
        if c.credentials.is_none() {
            bail!("TURN credentials are required: --user NAME:PASS or --secret S");
        }
        if !(0.1..=1000.0).contains(&c.pkt_rate) {
            bail!("--pkt-rate must be 0.1..=1000 packets/s per allocation");
        }
        if c.pkt_rate * c.allocations as f64 > 200_000.0 {
            bail!("--pkt-rate × --allocations above 200000 packets/s is not a soak");
        }
        if !(relay::HEADER..=1200).contains(&c.size) {
            bail!("--size must be {}..=1200 bytes", relay::HEADER);
        }
        if !(30..=3600).contains(&c.lifetime) {
            bail!("--lifetime must be 30..=3600 seconds");
        }
        if c.lost_after.as_secs_f64() * c.pkt_rate < 3.0 || c.lost_after > Duration::from_secs(600)
        {
            bail!("--lost-after must cover at least 3 packets (× --pkt-rate) and at most 600 s");
        }
    }
    if c.clients > 0 {
        if c.http.is_none() {
            bail!("--http http://HOST:PORT (signaling) is required with --clients > 0");
        }
        if !(2..=50).contains(&c.room_size) {
            bail!("--room-size must be 2..=50");
        }
        if (c.clients / c.room_size) * c.room_size != c.clients || c.clients > 10_000 {
            bail!(
                "--clients must be a multiple of --room-size ({}) up to 10000",
                c.room_size
            );
        }
        if !(0.01..=10.0).contains(&c.msg_rate) {
            bail!("--msg-rate must be 0.01..=10 messages/s per client (the server allows 50 frames/s, pings and acks included)");
        }
        if c.msg_pad > 16_384 {
            bail!("--msg-size must be at most 16384 bytes");
        }
        if c.max_offline > Duration::from_secs(60) {
            bail!("--max-offline must be at most 60 s (and stays below half the server's grace)");
        }
        let longest = format!("{}{}", c.room_prefix, c.clients / c.room_size);
        if longest.len() > 64
            || !c
                .room_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            bail!("--room-prefix: room names are 1–64 of A-Z a-z 0-9 _ . -");
        }
    }
    if c.duration.is_zero() || c.duration > MAX_DURATION {
        bail!("--duration must be 1..=86400 seconds");
    }
    if !(0.0..=60.0).contains(&c.disconnect_rate) {
        bail!("--disconnect-rate must be 0..=60 per client per minute");
    }
    if !(0.0..=100.0).contains(&c.max_loss_pct) {
        bail!("--max-loss-pct must be 0..=100");
    }
    if c.drain > Duration::from_secs(600) {
        bail!("--drain must be at most 600 s");
    }
    Ok(())
}

/// Warm-up, window and sample period for a load of `d`.
pub fn rss_windows(d: Duration, warmup: Option<Duration>) -> (f64, f64) {
    let d = d.as_secs_f64();
    let warm = warmup.map_or_else(|| (d / 4.0).min(120.0), |w| w.as_secs_f64().min(d));
    let window = ((d - warm) / 3.0).clamp(0.0, 60.0);
    (warm, window)
}

/// The RSS verdict from samples `(t, KiB)` of a load of `load_s` seconds (t = 0 at its start).
pub fn rss_verdict(
    samples: &[(f64, u64)],
    load_s: f64,
    warmup_s: f64,
    window_s: f64,
) -> (Option<u64>, Option<u64>, Option<u64>, Option<bool>) {
    let max_in = |a: f64, b: f64| {
        samples
            .iter()
            .filter(|(t, _)| *t >= a && *t <= b)
            .map(|(_, v)| *v)
            .max()
    };
    if window_s <= 0.0 {
        return (None, None, None, None);
    }
    let base = max_in(warmup_s, warmup_s + window_s);
    let end = max_in(load_s - window_s, load_s);
    match (base, end) {
        (Some(b), Some(e)) => {
            let limit = b + b / 10 + 4096;
            (Some(b), Some(e), Some(limit), Some(e <= limit))
        }
        _ => (base, end, None, None),
    }
}

/// Least-squares slope of `(t s, KiB)` in KiB per minute.
pub fn slope_per_min(samples: &[(f64, u64)]) -> Option<f64> {
    if samples.len() < 3 {
        return None;
    }
    let n = samples.len() as f64;
    let mt = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let mv = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let sxx: f64 = samples.iter().map(|s| (s.0 - mt).powi(2)).sum();
    let sxy: f64 = samples.iter().map(|s| (s.0 - mt) * (s.1 as f64 - mv)).sum();
    (sxx > 0.0).then(|| sxy / sxx * 60.0)
}

struct Sampler {
    stop: Arc<AtomicBool>,
    dead: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    handle: Option<JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: Option<u32>, every: Duration) -> anyhow::Result<Sampler> {
        let mut s = Sampler {
            stop: Arc::new(AtomicBool::new(false)),
            dead: Arc::new(AtomicBool::new(false)),
            samples: Arc::new(Mutex::new(Vec::new())),
            handle: None,
        };
        let Some(pid) = pid else { return Ok(s) };
        if sys::pid_rss_kib(pid).is_none() {
            bail!("--server-pid {pid}: no such process (or /proc/{pid}/status unreadable)");
        }
        let (stop, dead, samples) = (s.stop.clone(), s.dead.clone(), s.samples.clone());
        s.handle = Some(
            std::thread::Builder::new()
                .name("soak-rss".into())
                .spawn(move || {
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        let now = Instant::now();
                        if now >= next {
                            next += every;
                            match sys::pid_rss_kib(pid) {
                                Some(v) => samples.lock().push((now, v)),
                                None => {
                                    dead.store(true, Ordering::SeqCst);
                                    return;
                                }
                            }
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                })?,
        );
        Ok(s)
    }

    fn last(&self) -> Option<u64> {
        self.samples.lock().last().map(|s| s.1)
    }

    fn dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.finish();
    }
}

fn log(verbose: bool, msg: std::fmt::Arguments<'_>) {
    if verbose {
        eprintln!("{msg}");
    }
}

fn pct(part: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        part as f64 * 100.0 / of as f64
    }
}

/// The TURN half before the load: echo peer, allocations, plan.
struct TurnSetup {
    bg: Background,
    plan: RelayPlan,
    slots: Vec<Slot>,
    setup_s: f64,
}

fn setup_turn(cfg: &SoakBench) -> anyhow::Result<Option<TurnSetup>> {
    if cfg.allocations == 0 {
        return Ok(None);
    }
    let server = cfg.server.ok_or_else(|| anyhow!("--server is required"))?;
    let creds = cfg
        .credentials
        .clone()
        .ok_or_else(|| anyhow!("credentials are required"))?;
    let local_ip = setup::local_ip_towards(server)
        .with_context(|| format!("no local address towards {server}"))?;
    let mut bg = Background::new();
    let peer = bt::start_echo_peer(&mut bg, local_ip, 1, cfg.size)?;
    let run_id = 0x50AC_0001;
    bg.run.store(run_id, Ordering::SeqCst);
    let t0 = Instant::now();
    let timeout = Duration::from_secs(5);
    let sessions = bt::setup_sessions(
        server,
        local_ip,
        &creds,
        cfg.allocations,
        peer,
        cfg.lifetime,
        timeout,
    )?;
    let setup_s = t0.elapsed().as_secs_f64();
    log(
        cfg.verbose,
        format_args!(
            "{} allocations on {server} in {setup_s:.1} s, echo peer {peer}",
            sessions.len()
        ),
    );
    let slots = sessions
        .into_iter()
        .enumerate()
        .map(|(i, s)| Slot::new(i as u32, s))
        .collect();
    Ok(Some(TurnSetup {
        bg,
        plan: RelayPlan {
            server,
            local_ip,
            creds,
            peer,
            run_id,
            pkt_rate: cfg.pkt_rate,
            size: cfg.size,
            lifetime: cfg.lifetime,
            fault_rate: cfg.disconnect_rate,
            lost_after: cfg.lost_after,
            timeout,
            seed: cfg.seed,
        },
        slots,
        setup_s,
    }))
}

/// Run `bench soak`. Builds its own runtime: call it from a thread that is not inside a tokio
/// runtime.
pub fn run_soak(cfg: &SoakBench) -> anyhow::Result<SoakReport> {
    validate(cfg)?;
    let rss_every = cfg.rss_every.unwrap_or_else(|| {
        Duration::from_secs_f64((cfg.duration.as_secs_f64() / 60.0).clamp(1.0, 5.0))
    });
    let report_every = cfg.report_every.unwrap_or_else(|| {
        Duration::from_secs_f64((cfg.duration.as_secs_f64() / 10.0).clamp(5.0, 60.0))
    });
    let epoch = Instant::now();
    let events = Arc::new(EventLog::new(cfg.verbose, epoch));
    let mut sampler = Sampler::start(cfg.server_pid, rss_every.max(Duration::from_millis(200)))?;
    log(
        cfg.verbose,
        format_args!(
            "bench soak: {} allocations × {} pkt/s, {} signaling clients in rooms of {} × {} msg/s, {} faults per client per minute, {:.0} s, seed {}",
            cfg.allocations,
            cfg.pkt_rate,
            cfg.clients,
            cfg.room_size,
            cfg.msg_rate,
            cfg.disconnect_rate,
            cfg.duration.as_secs_f64(),
            cfg.seed
        ),
    );

    let turn = setup_turn(cfg)?;
    let rooms = match (&cfg.http, cfg.clients) {
        (Some(h), n) if n > 0 => {
            let (addr, authority) = parse_server(h)?;
            Some(Arc::new(Rooms::new(
                RoomsPlan {
                    addr,
                    authority,
                    clients: n,
                    room_size: cfg.room_size,
                    room_prefix: cfg.room_prefix.clone(),
                    msg_rate: cfg.msg_rate,
                    pad: cfg.msg_pad,
                    fault_rate: cfg.disconnect_rate,
                    max_offline: cfg.max_offline,
                    connect_timeout: Duration::from_secs(10),
                    connect_parallel: 64,
                    seed: cfg.seed,
                },
                events.clone(),
            )))
        }
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.signal_threads.clamp(1, 16))
        .thread_name("soak-signal")
        .enable_all()
        .build()
        .context("cannot start the signaling runtime")?;
    let counters = Arc::new(RelayCounters::default());
    let stop_relay = Arc::new(AtomicBool::new(false));
    let mut bg = None;
    let mut relay_threads: Vec<JoinHandle<anyhow::Result<WorkerResult>>> = Vec::new();
    let mut turn_setup_s = 0.0;
    let mut turn_plan = None;
    let peer_rx = turn.as_ref().map(|t| t.bg.peer_rx.clone());
    let start_turn = |t: TurnSetup,
                      relay_threads: &mut Vec<JoinHandle<anyhow::Result<WorkerResult>>>|
     -> anyhow::Result<(Background, RelayPlan, f64)> {
        let threads = cfg.threads.clamp(1, t.slots.len().max(1));
        let mut shares: Vec<Vec<Slot>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, s) in t.slots.into_iter().enumerate() {
            shares[i % threads].push(s);
        }
        let plan = Arc::new(t.plan.clone());
        for (i, share) in shares.into_iter().enumerate() {
            let (plan, ctr, events, stop) = (
                plan.clone(),
                counters.clone(),
                events.clone(),
                stop_relay.clone(),
            );
            relay_threads.push(
                std::thread::Builder::new()
                    .name(format!("soak-turn-{i}"))
                    .spawn(move || relay::worker(&plan, &ctr, &events, &stop, share, i, epoch))?,
            );
        }
        Ok((t.bg, t.plan, t.setup_s))
    };

    let pid = cfg.server_pid;
    let outcome = rt.block_on(async {
        // Connect and join.
        let (phase_tx, phase_rx) = watch::channel(Phase::Idle);
        let mut handles = Vec::new();
        let mut joined = 0usize;
        let mut join_failed = 0usize;
        let mut join_error: Option<String> = None;
        if let Some(r) = &rooms {
            let (join_tx, mut join_rx) = mpsc::unbounded_channel();
            handles = rooms::spawn_clients(r, &phase_rx, &join_tx);
            drop(join_tx);
            let t0 = Instant::now();
            let limit = t0 + Duration::from_secs(120);
            let mut reported = 0;
            while reported < cfg.clients && !sys::interrupted() {
                match tokio::time::timeout(Duration::from_millis(100), join_rx.recv()).await {
                    Ok(Some((_, res))) => {
                        reported += 1;
                        match res {
                            Ok(()) => joined += 1,
                            Err(e) => {
                                join_failed += 1;
                                join_error.get_or_insert(e);
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {}
                }
                if Instant::now() >= limit {
                    break;
                }
            }
            // Clients that never reported (the connect phase limit) failed too.
            join_failed += cfg.clients - reported;
            log(
                cfg.verbose,
                format_args!(
                    "{joined} signaling clients joined in {:.1} s, {join_failed} failed{}",
                    t0.elapsed().as_secs_f64(),
                    join_error
                        .as_deref()
                        .map(|e| format!(" (first: {e})"))
                        .unwrap_or_default()
                ),
            );
            if joined == 0 {
                let _ = phase_tx.send(Phase::Close);
                return Err(anyhow!(
                    "no signaling client could join: {}",
                    join_error.as_deref().unwrap_or("?")
                ));
            }
        }

        // Load.
        if let Some(t) = turn {
            let (b, p, s) = start_turn(t, &mut relay_threads)?;
            bg = Some(b);
            turn_plan = Some(p);
            turn_setup_s = s;
        }
        let _ = phase_tx.send(Phase::Run);
        let start = Instant::now();
        let cpu0 = sys::process_cpu_time();
        let scpu0 = pid.and_then(sys::pid_cpu_time);
        let end = start + cfg.duration;
        let mut next_row = start + report_every;
        let mut rows = Vec::new();
        let mut prev_turn = RelaySnapshot::default();
        let mut prev_peer = 0u64;
        let mut prev_sig = [0u64; 4];
        let mut stop_reason = None;
        log(
            cfg.verbose,
            format_args!(
                "| t s | TURN sent | echoed | loss % | relayed | allocs | re-alloc | paused | lost | msgs sent | delivered | cuts | resumes | online | server RSS KiB |"
            ),
        );
        loop {
            let now = Instant::now();
            let last = now >= end;
            if sys::interrupted() {
                stop_reason = Some("interrupted");
            } else if sampler.dead() {
                stop_reason = Some("the server process is gone");
            }
            if now >= next_row || last || stop_reason.is_some() {
                next_row += report_every;
                let t = counters.snapshot();
                let peer = peer_rx.as_ref().map_or(0, |p| p.load(Ordering::Relaxed));
                let sig = rooms.as_ref().map_or([0; 4], |r| {
                    let c = &r.ctr;
                    [
                        c.sent.load(Ordering::Relaxed),
                        c.delivered.load(Ordering::Relaxed),
                        c.faults_fin.load(Ordering::Relaxed)
                            + c.faults_rst.load(Ordering::Relaxed)
                            + c.faults_zombie.load(Ordering::Relaxed),
                        c.resumes.load(Ordering::Relaxed),
                    ]
                });
                let sent = t.sent - prev_turn.sent;
                let echoed = t.received - prev_turn.received;
                let row = IntervalRow {
                    t_s: now.duration_since(start).as_secs_f64(),
                    turn_sent: sent,
                    turn_echoed: echoed,
                    turn_loss_pct: pct(sent.saturating_sub(echoed), sent),
                    turn_relayed: (peer - prev_peer) + echoed,
                    allocations: t.live,
                    reallocations: (t.reallocations + t.abandons)
                        - (prev_turn.reallocations + prev_turn.abandons),
                    pauses: t.pauses - prev_turn.pauses,
                    lost: t.lost - prev_turn.lost,
                    msgs_sent: sig[0] - prev_sig[0],
                    msgs_delivered: sig[1] - prev_sig[1],
                    disconnects: sig[2] - prev_sig[2],
                    resumes: sig[3] - prev_sig[3],
                    online: rooms
                        .as_ref()
                        .map_or(0, |r| r.ctr.online.load(Ordering::Relaxed)),
                    rss_kib: sampler.last(),
                };
                log(
                    cfg.verbose,
                    format_args!(
                        "| {:.0} | {} | {} | {:.3} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        row.t_s,
                        row.turn_sent,
                        row.turn_echoed,
                        row.turn_loss_pct,
                        row.turn_relayed,
                        row.allocations,
                        row.reallocations,
                        row.pauses,
                        row.lost,
                        row.msgs_sent,
                        row.msgs_delivered,
                        row.disconnects,
                        row.resumes,
                        row.online,
                        row.rss_kib.map_or_else(|| "n/a".into(), |v| v.to_string())
                    ),
                );
                rows.push(row);
                prev_turn = t;
                prev_peer = peer;
                prev_sig = sig;
            }
            if last || stop_reason.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ran = start.elapsed();
        let wall = ran.as_secs_f64().max(1e-9);
        let gen_cpu = sys::process_cpu_time().saturating_sub(cpu0).as_secs_f64() * 100.0 / wall;
        let server_cpu = match (scpu0, pid.and_then(sys::pid_cpu_time)) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() * 100.0 / wall),
            _ => None,
        };

        // Stop and drain.
        stop_relay.store(true, Ordering::SeqCst);
        let _ = phase_tx.send(Phase::Stop);
        let drain_start = Instant::now();
        let mut drained = rooms.is_none();
        if let Some(r) = &rooms {
            log(cfg.verbose, format_args!("draining signaling…"));
            let limit = if stop_reason.is_some() {
                Duration::from_secs(3).min(cfg.drain)
            } else {
                cfg.drain
            };
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let books = r.books();
                let online = r.ctr.online.load(Ordering::Relaxed) as usize;
                if books.missing == 0 && online >= joined {
                    drained = true;
                    break;
                }
                if drain_start.elapsed() >= limit || sys::interrupted() && stop_reason.is_none() {
                    log(
                        cfg.verbose,
                        format_args!(
                            "drain limit reached: {} deliveries missing, {online} of {joined} clients online",
                            books.missing
                        ),
                    );
                    break;
                }
            }
        }
        let drain_s = drain_start.elapsed().as_secs_f64();

        // Close.
        let _ = phase_tx.send(Phase::Close);
        let close_deadline = tokio::time::Instant::now() + Duration::from_secs(6);
        for h in handles.iter_mut() {
            if tokio::time::timeout_at(close_deadline, &mut *h).await.is_err() {
                break;
            }
        }
        for h in &handles {
            h.abort();
        }
        Ok::<_, anyhow::Error>(LoadOutcome {
            rows,
            start,
            ran,
            gen_cpu,
            server_cpu,
            drained,
            drain_s,
            joined,
            join_failed,
            join_error,
            stop_reason,
        })
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    // The TURN threads end a second after the stop; release what they held.
    stop_relay.store(true, Ordering::SeqCst);
    let mut sessions = Vec::new();
    let mut rtt = super::hist::Histogram::new();
    let mut worker_error = None;
    for h in relay_threads {
        match h.join() {
            Ok(Ok(w)) => {
                sessions.extend(w.sessions);
                rtt.merge(&w.rtt);
            }
            Ok(Err(e)) => worker_error = Some(format!("a TURN generator thread failed: {e:#}")),
            Err(_) => worker_error = Some("a TURN generator thread panicked".into()),
        }
    }
    let held = sessions.len();
    let (released, release_failed) = bt::release(&mut sessions);
    if let Some(b) = bg.as_mut() {
        b.shutdown();
    }
    let LoadOutcome {
        rows,
        start,
        ran,
        gen_cpu,
        server_cpu,
        drained,
        drain_s,
        joined,
        join_failed,
        join_error,
        stop_reason,
    } = outcome?;
    // Give the server a moment after the release, then the last sample.
    let after_release = pid.and_then(|p| {
        std::thread::sleep(Duration::from_millis(500));
        sys::pid_rss_kib(p)
    });
    let server_alive = pid.map(|p| !sampler.dead() && sys::pid_rss_kib(p).is_some());
    sampler.finish();

    // TURN results.
    let turn = turn_plan.as_ref().map(|_| {
        let t = counters.snapshot();
        let peer_received = peer_rx.as_ref().map_or(0, |p| p.load(Ordering::Relaxed));
        let relayed = peer_received + t.received;
        TurnSoak {
            allocations: cfg.allocations,
            setup_s: turn_setup_s,
            totals: t,
            peer_received,
            relayed,
            relayed_per_s: relayed as f64 / ran.as_secs_f64().max(1e-9),
            loss_pct: pct(t.sent.saturating_sub(t.received), t.sent),
            rtt_p50_us: rtt.percentile(50.0) as f64 / 1000.0,
            rtt_p99_us: rtt.percentile(99.0) as f64 / 1000.0,
            rtt_max_us: rtt.max() as f64 / 1000.0,
            released,
            release_failed: release_failed + held.saturating_sub(released + release_failed),
        }
    });
    let signaling = rooms.as_ref().map(|r| {
        let c = &r.ctr;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let lat = r.latency();
        SignalSoak {
            clients: cfg.clients,
            room_size: cfg.room_size,
            joined,
            join_failed,
            join_error: join_error.clone(),
            sent: g(&c.sent),
            signals: g(&c.signals),
            broadcasts: g(&c.broadcasts),
            skipped: g(&c.skipped),
            books: r.books(),
            duplicates: g(&c.duplicates),
            out_of_order: g(&c.out_of_order),
            misrouted: g(&c.misrouted),
            seq_gaps: g(&c.seq_gaps),
            seq_duplicates: g(&c.seq_duplicates),
            faults_fin: g(&c.faults_fin),
            faults_rst: g(&c.faults_rst),
            faults_zombie: g(&c.faults_zombie),
            resumes: g(&c.resumes),
            resume_failed: g(&c.resume_failed),
            reconnect_failed: g(&c.reconnect_failed),
            server_closed: g(&c.server_closed),
            server_errors: g(&c.server_errors),
            peer_left_timeout: g(&c.peer_left_timeout),
            bad_frames: g(&c.bad_frames),
            drained,
            drain_s,
            latency_p50_ms: lat.percentile(50.0) as f64 / 1e6,
            latency_p99_ms: lat.percentile(99.0) as f64 / 1e6,
            latency_max_ms: lat.max() as f64 / 1e6,
        }
    });
    // RSS: t = 0 at the start of the load.
    let rss = pid.map(|_| {
        let samples: Vec<(f64, u64)> = sampler
            .samples
            .lock()
            .iter()
            .map(|(t, v)| (signed_secs(*t, start), *v))
            .collect();
        rss_report(samples, cfg.warmup, ran, rss_every, after_release)
    });

    // Verdict.
    let mut failures = Vec::new();
    if let Some(w) = worker_error {
        failures.push(w);
    }
    if let Some(why) = stop_reason {
        failures.push(format!("stopped early: {why}"));
    }
    if server_alive == Some(false) {
        failures.push("the server process died".into());
    }
    if let Some(t) = &turn {
        let x = &t.totals;
        if x.lost > 0 {
            failures.push(format!("{} allocation(s) lost", x.lost));
        }
        if x.alloc_failed > 0 {
            failures.push(format!("{} re-allocation(s) failed", x.alloc_failed));
        }
        if x.release_failed > 0 || t.release_failed > 0 {
            failures.push(format!(
                "{} release(s) failed",
                x.release_failed + t.release_failed as u64
            ));
        }
        if x.bad > 0 {
            failures.push(format!("{} misrouted or foreign ChannelData", x.bad));
        }
        if x.sent == 0 {
            failures.push("no TURN packet sent".into());
        }
        if t.loss_pct > cfg.max_loss_pct {
            failures.push(format!(
                "TURN loss {:.3} % above --max-loss-pct {}",
                t.loss_pct, cfg.max_loss_pct
            ));
        }
    }
    if let Some(s) = &signaling {
        let checks = [
            (s.join_failed as u64, "client(s) could not join"),
            (s.books.missing, "signaling deliveries missing"),
            (s.duplicates, "signaling messages delivered twice"),
            (s.out_of_order, "signaling messages out of order"),
            (s.misrouted, "signaling messages misrouted"),
            (s.seq_gaps, "server seq numbers skipped"),
            (s.seq_duplicates, "server seq numbers repeated"),
            (s.resume_failed, "resume_failed"),
            (s.reconnect_failed, "reconnection attempts failed"),
            (s.server_closed, "connections closed by the server"),
            (s.server_errors, "server error messages"),
            (s.peer_left_timeout, "peers timed out"),
            (s.bad_frames, "unreadable frames"),
        ];
        for (n, what) in checks {
            if n > 0 {
                failures.push(format!("{n} {what}"));
            }
        }
        if !s.drained {
            failures.push("the signaling drain did not complete".into());
        }
        if s.sent == 0 {
            failures.push("no signaling message sent".into());
        }
    }
    if let Some(r) = &rss {
        if r.flat == Some(false) {
            failures.push(format!(
                "server RSS not flat: {} KiB at the end > limit {} KiB (baseline {} KiB)",
                r.end_kib.unwrap_or(0),
                r.limit_kib.unwrap_or(0),
                r.baseline_kib.unwrap_or(0)
            ));
        }
    }
    let interrupted = sys::interrupted();
    let events_kept = events.kept.lock().clone();
    Ok(SoakReport {
        pass: failures.is_empty() && !interrupted,
        failures,
        interrupted,
        seed: cfg.seed,
        duration_s: cfg.duration.as_secs_f64(),
        ran_s: ran.as_secs_f64(),
        pkt_rate: cfg.pkt_rate,
        msg_rate: cfg.msg_rate,
        disconnect_rate: cfg.disconnect_rate,
        lifetime: cfg.lifetime,
        intervals: rows,
        turn,
        signaling,
        rss,
        server_alive,
        events: events_kept,
        events_total: events.total.load(Ordering::Relaxed),
        generator_cpu_pct: gen_cpu,
        server_cpu_pct: server_cpu,
    })
}

/// What the load phase hands back.
struct LoadOutcome {
    rows: Vec<IntervalRow>,
    start: Instant,
    ran: Duration,
    gen_cpu: f64,
    server_cpu: Option<f64>,
    drained: bool,
    drain_s: f64,
    joined: usize,
    join_failed: usize,
    join_error: Option<String>,
    stop_reason: Option<&'static str>,
}

/// `t − zero` in seconds, negative when `t` is earlier.
fn signed_secs(t: Instant, zero: Instant) -> f64 {
    if t >= zero {
        (t - zero).as_secs_f64()
    } else {
        -(zero - t).as_secs_f64()
    }
}

fn rss_report(
    samples: Vec<(f64, u64)>,
    warmup: Option<Duration>,
    ran: Duration,
    every: Duration,
    after_release: Option<u64>,
) -> RssReport {
    let load_s = ran.as_secs_f64();
    let (warmup_s, window_s) = rss_windows(ran, warmup);
    let in_load: Vec<(f64, u64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= 0.0 && *t <= load_s + 0.5)
        .collect();
    let (baseline, end, limit, flat) = rss_verdict(&in_load, load_s, warmup_s, window_s);
    let after_warmup: Vec<(f64, u64)> = in_load
        .iter()
        .copied()
        .filter(|(t, _)| *t >= warmup_s)
        .collect();
    RssReport {
        every_s: every.as_secs_f64(),
        warmup_s,
        window_s,
        first_kib: samples.first().map(|s| s.1),
        baseline_kib: baseline,
        end_kib: end,
        max_kib: in_load.iter().map(|s| s.1).max(),
        last_kib: in_load.last().map(|s| s.1),
        after_release_kib: after_release,
        limit_kib: limit,
        slope_kib_per_min: slope_per_min(&after_warmup),
        flat,
        samples,
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "n/a".into(), |v| v.to_string())
}

/// Human-readable report of `bench soak`.
pub fn format_soak(r: &SoakReport) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "bench soak: {:.0} s of load ({:.0} s asked), {} faults per client per minute, seed {}",
        r.ran_s, r.duration_s, r.disconnect_rate, r.seed
    );
    if let Some(t) = &r.turn {
        let x = &t.totals;
        let _ = writeln!(
            o,
            "TURN        {} allocations × {} pkt/s ({}-s lifetime, set up in {:.1} s): sent {}, echoed {} ({} read by control transactions), relayed {} packets ({:.0}/s), loss {:.4} %, RTT p50 {:.0} µs p99 {:.0} µs max {:.0} µs",
            t.allocations,
            r.pkt_rate,
            r.lifetime,
            t.setup_s,
            x.sent,
            x.received,
            x.control_echoes,
            t.relayed,
            t.relayed_per_s,
            t.loss_pct,
            t.rtt_p50_us,
            t.rtt_p99_us,
            t.rtt_max_us
        );
        let _ = writeln!(
            o,
            "            refreshes {}, faults: {} pauses, {} re-allocations, {} abandoned to expiry; LOST {}, allocate failures {}, release failures {}, misrouted {}, stale echoes {}, send failures {}, skipped {}; released at the end {}",
            x.refreshes,
            x.pauses,
            x.reallocations,
            x.abandons,
            x.lost,
            x.alloc_failed,
            x.release_failed + t.release_failed as u64,
            x.bad,
            x.stale,
            x.send_failed,
            x.skipped,
            t.released
        );
    }
    if let Some(s) = &r.signaling {
        let b = &s.books;
        let _ = writeln!(
            o,
            "signaling   {} clients in rooms of {} × {} msg/s: {} joined, {} failed{}",
            s.clients,
            s.room_size,
            r.msg_rate,
            s.joined,
            s.join_failed,
            s.join_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            o,
            "            sent {} messages ({} signal, {} broadcast) = {} deliveries expected; delivered {}, MISSING {}, duplicates {}, out of order {}, misrouted {}; in doubt {} (of which not delivered {})",
            s.sent,
            s.signals,
            s.broadcasts,
            b.expected,
            b.delivered,
            b.missing,
            s.duplicates,
            s.out_of_order,
            s.misrouted,
            b.in_doubt,
            b.in_doubt_missing
        );
        let _ = writeln!(
            o,
            "            cuts: {} FIN, {} RST, {} abandoned open; resumed {}, resume_failed {}, reconnect failures {}, closed by the server {}; server seq gaps {}, repeats {}; errors {}, peers timed out {}, unreadable frames {}",
            s.faults_fin,
            s.faults_rst,
            s.faults_zombie,
            s.resumes,
            s.resume_failed,
            s.reconnect_failed,
            s.server_closed,
            s.seq_gaps,
            s.seq_duplicates,
            s.server_errors,
            s.peer_left_timeout,
            s.bad_frames
        );
        let _ = writeln!(
            o,
            "            drained in {:.1} s{}; delivery latency p50 {:.2} ms, p99 {:.2} ms, max {:.0} ms (time offline included)",
            s.drain_s,
            if s.drained { "" } else { " — NOT drained" },
            s.latency_p50_ms,
            s.latency_p99_ms,
            s.latency_max_ms
        );
    }
    if let Some(m) = &r.rss {
        let _ = writeln!(
            o,
            "server RSS  first {} KiB, after warm-up ({:.0} s) {} KiB, end {} KiB (limit {}), max {}, last {}, after release {}; slope after warm-up {} KiB/min; {}",
            opt(m.first_kib),
            m.warmup_s,
            opt(m.baseline_kib),
            opt(m.end_kib),
            opt(m.limit_kib),
            opt(m.max_kib),
            opt(m.last_kib),
            opt(m.after_release_kib),
            m.slope_kib_per_min
                .map_or_else(|| "n/a".into(), |v| format!("{v:.1}")),
            match m.flat {
                Some(true) => "flat",
                Some(false) => "NOT FLAT",
                None => "not judged (load too short for both windows)",
            }
        );
    }
    let _ = writeln!(
        o,
        "cpu         generator {:.0} %, server {}",
        r.generator_cpu_pct,
        r.server_cpu_pct
            .map_or_else(|| "n/a".into(), |c| format!("{c:.0} %"))
    );
    if r.events_total > 0 {
        let _ = writeln!(
            o,
            "events      {} (first {} below)",
            r.events_total,
            r.events.len().min(20)
        );
        for e in r.events.iter().take(20) {
            let _ = writeln!(o, "  {e}");
        }
    }
    if r.pass {
        let _ = writeln!(o, "PASS");
    } else {
        let _ = writeln!(
            o,
            "FAIL: {}",
            if r.interrupted && r.failures.is_empty() {
                "interrupted".to_string()
            } else {
                r.failures.join("; ")
            }
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_windows_follow_the_load() {
        assert_eq!(rss_windows(Duration::from_secs(600), None), (120.0, 60.0));
        let (w, win) = rss_windows(Duration::from_secs(45), None);
        assert!((w - 11.25).abs() < 1e-9 && (win - 11.25).abs() < 1e-9);
        assert_eq!(
            rss_windows(Duration::from_secs(100), Some(Duration::from_secs(40))),
            (40.0, 20.0)
        );
    }

    #[test]
    fn rss_verdict_flat_and_growing() {
        // 600-s load, a sample every 5 s.
        let flat: Vec<(f64, u64)> = (0..=120)
            .map(|i| (i as f64 * 5.0, 20_000 + (i % 3) * 300))
            .collect();
        let (b, e, limit, ok) = rss_verdict(&flat, 600.0, 120.0, 60.0);
        assert_eq!((b, e), (Some(20_600), Some(20_600)));
        assert_eq!(limit, Some(20_600 + 2_060 + 4_096));
        assert_eq!(ok, Some(true));
        // 100 KiB a minute on top of 20 MiB: +800 KiB over the load: still within.
        let slow: Vec<(f64, u64)> = (0..=120)
            .map(|i| (i as f64 * 5.0, 20_000 + i * 100 / 12))
            .collect();
        assert_eq!(rss_verdict(&slow, 600.0, 120.0, 60.0).3, Some(true));
        // 2 MiB a minute: not flat.
        let leak: Vec<(f64, u64)> = (0..=120)
            .map(|i| (i as f64 * 5.0, 20_000 + i * 2048 / 12))
            .collect();
        assert_eq!(rss_verdict(&leak, 600.0, 120.0, 60.0).3, Some(false));
        let slope = slope_per_min(&leak).expect("slope");
        assert!((slope - 2048.0).abs() < 20.0, "{slope}");
        // Too short to judge.
        assert_eq!(rss_verdict(&flat, 600.0, 120.0, 0.0).3, None);
        assert_eq!(rss_verdict(&[], 600.0, 120.0, 60.0).3, None);
    }

    #[test]
    fn settings_are_checked() {
        let ok = SoakBench {
            server: Some("127.0.0.1:3478".parse().expect("addr")),
            http: Some("http://127.0.0.1:8080".into()),
            credentials: Some(Credentials::LongTerm {
                username: "a".into(),
                password: "b".into(),
            }),
            ..SoakBench::default()
        };
        assert!(validate(&ok).is_ok());
        let bad = |f: &dyn Fn(&mut SoakBench)| {
            let mut c = ok.clone();
            f(&mut c);
            validate(&c).is_err()
        };
        assert!(bad(&|c| c.clients = 501)); // not a multiple of 5
        assert!(bad(&|c| c.duration = Duration::ZERO));
        assert!(bad(&|c| c.duration = MAX_DURATION + Duration::from_secs(1)));
        assert!(bad(&|c| c.server = None));
        assert!(bad(&|c| c.credentials = None));
        assert!(bad(&|c| c.http = None));
        assert!(bad(&|c| c.msg_rate = 100.0));
        assert!(bad(&|c| c.lost_after = Duration::from_millis(100)));
        assert!(bad(&|c| {
            c.allocations = 0;
            c.clients = 0;
        }));
        // One half alone needs only its own settings.
        assert!(!bad(&|c| {
            c.allocations = 0;
            c.server = None;
            c.credentials = None;
        }));
        assert!(!bad(&|c| {
            c.clients = 0;
            c.http = None;
        }));
    }
}
