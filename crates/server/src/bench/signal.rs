//! `bench signal`: the signaling load generator (WebSocket), for Icebreaker's `/ws` protocol
//! (docs/PROTOCOL.md) and for a socket.io server running the WebRTC codelab's room relay
//! (Engine.IO v4 over WebSocket), so that the same generator drives both (`bench/compare-signal`).
//!
//! * **Runtime**: one multi-threaded tokio runtime with `threads` workers (default: the number
//!   of cores), one task per client. Frames that are ready are handled in a batch and what they
//!   cause is written with one flush.
//! * **Setup**: `clients` WebSocket connections (at most `connect_parallel` handshakes at a
//!   time), joined into rooms of `room_size`: client `i` is member `i % K` of room
//!   `<prefix><i / K>`. Icebreaker: `join` with `capacity: K` → `joined`; socket.io: open packet,
//!   `40` connect, `create or join` → `created`/`joined` (`full` is a failure), K = 2 only.
//!   A room in which a member failed to join stays silent.
//! * **Idle**: after every client has joined and `settle` has passed, the server's RSS
//!   (`server_pid`) minus the RSS before the first connection, divided by the clients joined, is
//!   the memory per idle connection.
//! * **Load**: every client sends `signal` (socket.io: `message`) to the next member of its room
//!   (a ring), carrying `{candidate, sdpMid, sdpMLineIndex, c: sender, r: receiver, s: seq,
//!   t: send time}` padded to `size` bytes of JSON. Paced (`Rate`): each client sends
//!   `rate / clients` per second on its own evenly offset schedule (an open loop: a slow server
//!   shows as latency). `Max`: every room keeps `in_flight` messages under way; each delivery
//!   makes the receiver send the next one (a closed loop).
//! * **Checks**: the receiver checks that it is the addressee and that the sender is in its room
//!   (else *misrouted*) and that the sequence numbers of each sender arrive in order without
//!   gaps (*gaps*, *duplicates*). Lost = sent − delivered after the drain. Latency = receive time
//!   − the send time in the payload (one clock: sender and receiver are in this process).
//! * **Acks** (Icebreaker) as the SDK does: at most 500 ms after a message arrives, and also
//!   after 512 unacknowledged messages so the replay buffer (1024 by default) never overflows.
//!   socket.io: the client answers Engine.IO pings.
//! * **End**: after `duration` the clients stop sending, the generator waits until every message
//!   has arrived (at most `drain`), then every client leaves (`leave` / `41`) and closes.
//!   Everything is bounded in time; Ctrl-C stops sending and closes as well.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{FutureExt, SinkExt, StreamExt};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::hist::Histogram;
use crate::sys;

/// Smallest `size` (the fixed part of the payload fits).
pub const MIN_SIZE: usize = 128;
/// Largest `size` (well below the servers' message limits).
pub const MAX_SIZE: usize = 16 * 1024;
/// Largest number of clients (the open-files limit decides before this).
pub const MAX_CLIENTS: usize = 100_000;
/// A paced step must send at least this share of its target to count as not generator-limited.
const RATE_REACHED: f64 = 0.97;
/// The SDK acknowledges at most this long after a message arrives.
const ACK_DELAY: Duration = Duration::from_millis(500);
/// ... and this generator also after this many unacknowledged messages.
const ACK_EVERY: u64 = 512;
/// Frames handled per wake-up before writing (fairness between clients).
const BATCH: usize = 64;
/// Paced: a client more than this far behind its schedule skips messages instead of bursting.
const MAX_BEHIND: Duration = Duration::from_millis(100);
/// Histogram shards (clients record into `idx % SHARDS`).
const SHARDS: usize = 16;
/// Time a client gets for the final leave and close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest connect phase, whatever the number of clients.
const CONNECT_PHASE_LIMIT: Duration = Duration::from_secs(300);

pub(super) type Ws = WebSocketStream<TcpStream>;

/// The wire protocol the clients speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SignalProtocol {
    /// Icebreaker's `/ws` (join, signal, ack, leave).
    Icebreaker,
    /// socket.io v4 (Engine.IO v4 over WebSocket), codelab events `create or join` / `message`.
    Socketio,
}

impl SignalProtocol {
    fn name(self) -> &'static str {
        match self {
            SignalProtocol::Icebreaker => "icebreaker",
            SignalProtocol::Socketio => "socketio",
        }
    }
}

/// How fast the clients send.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SignalLoad {
    /// Messages per second sent by all clients together (open loop).
    Rate(u64),
    /// As fast as the server delivers: `in_flight` messages under way per room (closed loop).
    Max {
        /// Messages under way per room.
        in_flight: usize,
    },
}

/// Settings of a `bench signal` run (the library entry point, see [`run_signal`]).
#[derive(Clone, Debug)]
pub struct SignalBench {
    /// The server's HTTP listener: `http://HOST:PORT` (or `ws://HOST:PORT`, or `HOST:PORT`).
    pub server: String,
    /// The wire protocol.
    pub protocol: SignalProtocol,
    /// Number of WebSocket clients.
    pub clients: usize,
    /// Members per room (socket.io: 2).
    pub room_size: usize,
    /// Room names are this prefix and the room number.
    pub room_prefix: String,
    /// Paced or closed-loop load.
    pub load: SignalLoad,
    /// Length of the load phase; zero: connect, measure idle, close.
    pub duration: Duration,
    /// Bytes of the JSON payload of a message (the `data`).
    pub size: usize,
    /// Worker threads of the runtime.
    pub threads: usize,
    /// WebSocket handshakes + joins under way at a time.
    pub connect_parallel: usize,
    /// Limit for one client's connect + join.
    pub connect_timeout: Duration,
    /// Pause between the last join and the idle RSS sample.
    pub settle: Duration,
    /// Longest wait for messages still under way after the load phase.
    pub drain: Duration,
    /// Print progress lines to stderr.
    pub verbose: bool,
    /// Process ID of a local server whose CPU and memory the report includes.
    pub server_pid: Option<u32>,
    /// More servers (nodes of a cluster): client `i` connects to `[server, also…][i % n]`, so
    /// the members of a room are spread over the nodes.
    pub also: Vec<String>,
}

impl Default for SignalBench {
    fn default() -> Self {
        SignalBench {
            server: "http://127.0.0.1:8080".into(),
            protocol: SignalProtocol::Icebreaker,
            clients: 100,
            room_size: 2,
            room_prefix: "room-".into(),
            load: SignalLoad::Rate(1000),
            duration: Duration::from_secs(10),
            size: 210,
            threads: super::turn::default_threads(),
            connect_parallel: 64,
            connect_timeout: Duration::from_secs(10),
            settle: Duration::from_millis(1000),
            drain: Duration::from_secs(3),
            verbose: false,
            server_pid: None,
            also: Vec::new(),
        }
    }
}

/// Report of a `bench signal` run.
#[derive(Clone, Debug, Serialize)]
pub struct SignalReport {
    /// `icebreaker` or `socketio`.
    pub protocol: &'static str,
    /// The server as given.
    pub server: String,
    /// Clients asked for.
    pub clients: usize,
    /// Members per room.
    pub room_size: usize,
    /// Rooms whose members all joined (the ones that carry load).
    pub rooms_active: usize,
    /// Payload bytes of a message (`data`), nominal.
    pub size: usize,
    /// Bytes of a whole message frame as sent (typical).
    pub frame_bytes: usize,
    /// Generator worker threads.
    pub threads: usize,
    /// `paced`, `max` or `idle` (no load phase).
    pub mode: &'static str,
    /// Paced: target messages/s of all clients together.
    pub target_rate: Option<u64>,
    /// Max: messages under way per room.
    pub in_flight: Option<usize>,
    /// Clients that connected and joined.
    pub connected: usize,
    /// Clients that failed to connect or join.
    pub connect_failed: usize,
    /// The first connect or join failure.
    pub connect_error: Option<String>,
    /// Seconds from the first connection attempt to the last join.
    pub connect_s: f64,
    /// Clients connected and joined per second.
    pub connections_per_s: f64,
    /// Server RSS before the first connection, KiB.
    pub server_rss_baseline_kib: Option<u64>,
    /// Server RSS with every client joined and idle, KiB.
    pub server_rss_idle_kib: Option<u64>,
    /// (idle − baseline) / connected, KiB per connection.
    pub server_rss_per_connection_kib: Option<f64>,
    /// Length of the load phase, seconds.
    pub duration_s: f64,
    /// Messages sent.
    pub sent: u64,
    /// Messages delivered in order to the right client (duplicates not counted).
    pub delivered: u64,
    /// Of those, delivered within the load phase.
    pub delivered_in_window: u64,
    /// Delivered within the load phase per second.
    pub messages_per_s: f64,
    /// Send rate achieved, messages/s.
    pub send_rate: f64,
    /// sent − delivered after the drain.
    pub lost: u64,
    /// Messages that reached a client they were not addressed to, or came from outside the room.
    pub misrouted: u64,
    /// Messages whose sequence number was below the next one expected from that sender.
    pub duplicates: u64,
    /// Sequence numbers skipped (a message after a missing one).
    pub gaps: u64,
    /// `error` messages from the server (Icebreaker) or `connect_error` (socket.io).
    pub server_errors: u64,
    /// The first of those.
    pub first_server_error: Option<String>,
    /// Frames that could not be understood.
    pub bad_frames: u64,
    /// Connections the server closed (or lost) before the end.
    pub disconnected: u64,
    /// Connections still open at the end of the load phase.
    pub connections_held: u64,
    /// Paced messages skipped because a client fell more than 100 ms behind its schedule.
    pub skipped: u64,
    /// Paced: fewer than 97 % of the target rate were sent.
    pub generator_limited: bool,
    /// Delivery latency median, microseconds.
    pub latency_p50_us: f64,
    /// Delivery latency 99th percentile, microseconds.
    pub latency_p99_us: f64,
    /// Largest delivery latency, microseconds.
    pub latency_max_us: f64,
    /// Mean delivery latency, microseconds.
    pub latency_mean_us: f64,
    /// CPU of this process during the load phase, percent of one core.
    pub generator_cpu_pct: f64,
    /// CPU of the server process during the load phase, percent of one core.
    pub server_cpu_pct: Option<f64>,
    /// Server RSS at the end of the load phase, KiB.
    pub server_rss_end_kib: Option<u64>,
    /// Clients that closed cleanly at the end.
    pub closed: u64,
    /// The run was interrupted (Ctrl-C).
    pub interrupted: bool,
}

/// Parse `http://HOST:PORT`, `ws://HOST:PORT` or `HOST:PORT` (a trailing `/` is fine) into the
/// address to connect to and the authority for the requests.
pub fn parse_server(s: &str) -> anyhow::Result<(SocketAddr, String)> {
    use std::net::ToSocketAddrs;
    let s = s.trim();
    let rest = if let Some(r) = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("ws://"))
    {
        r
    } else if s.starts_with("https://") || s.starts_with("wss://") {
        bail!("the generator speaks plain ws:// only: give the server's http:// address");
    } else if s.contains("://") {
        bail!("--server must be http://HOST:PORT");
    } else {
        s
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains('?') {
        bail!("--server must be http://HOST:PORT (no path): {s:?}");
    }
    let (host, port) = crate::client::split_host_port(authority, 80)?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host:?}"))?
        .next()
        .with_context(|| format!("{host:?} did not resolve to any address"))?;
    Ok((addr, authority.to_string()))
}

fn validate(cfg: &SignalBench) -> anyhow::Result<()> {
    if cfg.room_size < 2 {
        bail!("--room-size must be at least 2 (a message goes to another member)");
    }
    if cfg.protocol == SignalProtocol::Socketio && cfg.room_size != 2 {
        bail!("--protocol socketio: the codelab rooms hold 2: use --room-size 2");
    }
    if cfg.clients < cfg.room_size || cfg.clients > MAX_CLIENTS {
        bail!("--clients must be {}..={MAX_CLIENTS}", cfg.room_size.max(2));
    }
    if (cfg.clients / cfg.room_size) * cfg.room_size != cfg.clients {
        bail!(
            "--clients ({}) must be a multiple of --room-size ({})",
            cfg.clients,
            cfg.room_size
        );
    }
    if !(MIN_SIZE..=MAX_SIZE).contains(&cfg.size) {
        bail!("--size must be {MIN_SIZE}..={MAX_SIZE} bytes");
    }
    if cfg.duration > Duration::from_secs(3600) {
        bail!("--duration must be at most 3600 seconds");
    }
    match cfg.load {
        SignalLoad::Rate(r) if r == 0 || r > 10_000_000 => {
            bail!("--rate must be 1..=10000000 messages/s")
        }
        SignalLoad::Max { in_flight } if in_flight == 0 || in_flight > 4096 => {
            bail!("--in-flight must be 1..=4096")
        }
        _ => {}
    }
    let rooms = cfg.clients / cfg.room_size;
    let longest = format!("{}{}", cfg.room_prefix, rooms.saturating_sub(1));
    if longest.len() > 64
        || !cfg
            .room_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        bail!("--room-prefix: room names are 1–64 of A-Z a-z 0-9 _ . -");
    }
    Ok(())
}

/// Run `bench signal`: connect and join, measure idle memory, run the load, drain, close.
/// Builds its own runtime: call it from a thread that is not inside a tokio runtime (for
/// example `spawn_blocking`).
pub fn run_signal(cfg: &SignalBench) -> anyhow::Result<SignalReport> {
    validate(cfg)?;
    let mut targets = vec![parse_server(&cfg.server)?];
    for s in &cfg.also {
        targets.push(parse_server(s)?);
    }
    let threads = cfg.threads.clamp(1, 64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("bench-signal")
        .enable_all()
        .build()
        .context("cannot start the generator runtime")?;
    let result = rt.block_on(run_async(cfg, targets, threads));
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

/// The JSON payload: a fixed head (an ICE candidate padded to size) and the numbers.
struct Template {
    /// `{"candidate":"…","sdpMid":"0","sdpMLineIndex":0`
    head: String,
}

const CANDIDATE: &str = "candidate:842163049 1 udp 1677729535 192.0.2.7 46154 typ srflx raddr \
    10.0.0.5 rport 46154 generation 0 ufrag EsAw network-id 1 network-cost 10";

impl Template {
    fn new(size: usize, clients: usize) -> Template {
        let digits = clients.max(1).to_string().len();
        // Typical tail: ,"c":N,"r":N,"s":12345,"t":12345678901}
        let tail = 5 + digits + 5 + digits + 5 + 5 + 5 + 11 + 1;
        let frame = "{\"candidate\":\"\",\"sdpMid\":\"0\",\"sdpMLineIndex\":0".len();
        let want = size.saturating_sub(tail + frame).max(8);
        let mut cand = String::with_capacity(want);
        while cand.len() < want {
            let room = want - cand.len();
            if room >= CANDIDATE.len() {
                cand.push_str(CANDIDATE);
                if cand.len() < want {
                    cand.push(' ');
                }
            } else {
                cand.push_str(&CANDIDATE[..room]);
            }
        }
        Template {
            head: format!("{{\"candidate\":\"{cand}\",\"sdpMid\":\"0\",\"sdpMLineIndex\":0"),
        }
    }

    fn render(
        &self,
        proto: SignalProtocol,
        to_peer: &str,
        c: usize,
        r: usize,
        s: u64,
        t: u64,
    ) -> String {
        let mut o = String::with_capacity(self.head.len() + 96);
        match proto {
            SignalProtocol::Icebreaker => {
                o.push_str("{\"type\":\"signal\",\"to\":\"");
                o.push_str(to_peer);
                o.push_str("\",\"data\":");
            }
            SignalProtocol::Socketio => o.push_str("42[\"message\","),
        }
        o.push_str(&self.head);
        let _ = write!(o, ",\"c\":{c},\"r\":{r},\"s\":{s},\"t\":{t}}}");
        o.push(match proto {
            SignalProtocol::Icebreaker => '}',
            SignalProtocol::Socketio => ']',
        });
        o
    }
}

/// Counters shared by the clients (flushed once per batch).
#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    delivered: AtomicU64,
    delivered_window: AtomicU64,
    misrouted: AtomicU64,
    duplicates: AtomicU64,
    gaps: AtomicU64,
    server_errors: AtomicU64,
    bad_frames: AtomicU64,
    disconnected: AtomicU64,
    skipped: AtomicU64,
    closed: AtomicU64,
    first_error: Mutex<Option<String>>,
    hists: Vec<Mutex<Histogram>>,
}

/// A client's counters between two flushes.
#[derive(Default)]
struct Local {
    sent: u64,
    delivered: u64,
    delivered_window: u64,
    misrouted: u64,
    duplicates: u64,
    gaps: u64,
    server_errors: u64,
    bad_frames: u64,
    skipped: u64,
    latencies: Vec<u64>,
}

impl Stats {
    fn flush(&self, idx: usize, l: &mut Local) {
        let add = |a: &AtomicU64, v: &mut u64| {
            if *v > 0 {
                a.fetch_add(*v, Ordering::Relaxed);
                *v = 0;
            }
        };
        add(&self.sent, &mut l.sent);
        add(&self.delivered, &mut l.delivered);
        add(&self.delivered_window, &mut l.delivered_window);
        add(&self.misrouted, &mut l.misrouted);
        add(&self.duplicates, &mut l.duplicates);
        add(&self.gaps, &mut l.gaps);
        add(&self.server_errors, &mut l.server_errors);
        add(&self.bad_frames, &mut l.bad_frames);
        add(&self.skipped, &mut l.skipped);
        if !l.latencies.is_empty() {
            if let Some(h) = self.hists.get(idx % self.hists.len().max(1)) {
                let mut h = h.lock();
                for v in l.latencies.drain(..) {
                    h.record(v);
                }
            } else {
                l.latencies.clear();
            }
        }
    }

    fn note_error(&self, e: String) {
        let mut f = self.first_error.lock();
        if f.is_none() {
            *f = Some(e);
        }
    }
}

/// What the clients share.
struct Ctx {
    /// The servers (address, `Host`); client `i` uses `targets[i % len]`.
    targets: Vec<(SocketAddr, String)>,
    proto: SignalProtocol,
    k: usize,
    room_prefix: String,
    load: SignalLoad,
    template: Template,
    connect_timeout: Duration,
    /// Time zero of the `t` stamps.
    epoch: Instant,
    stats: Stats,
}

impl Ctx {
    fn now_ns(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The load phase as the clients see it.
struct Plan {
    start: Instant,
    end: Instant,
    /// Peer id of every client (empty when it did not join).
    peers: Vec<String>,
    /// Rooms whose members all joined.
    active: Vec<bool>,
    /// Paced: messages/s per sending client.
    rate_per_client: f64,
    /// Paced: sending clients (for the offsets).
    senders: usize,
}

#[derive(Clone)]
enum Phase {
    Idle,
    Run(Arc<Plan>),
    /// Stop sending, keep receiving.
    Stop,
    /// Leave and close.
    Close,
}

fn log(verbose: bool, msg: std::fmt::Arguments<'_>) {
    if verbose {
        eprintln!("{msg}");
    }
}

async fn run_async(
    cfg: &SignalBench,
    targets: Vec<(SocketAddr, String)>,
    threads: usize,
) -> anyhow::Result<SignalReport> {
    let n = cfg.clients;
    let k = cfg.room_size;
    let rooms = n / k;
    let ctx = Arc::new(Ctx {
        targets,
        proto: cfg.protocol,
        k,
        room_prefix: cfg.room_prefix.clone(),
        load: cfg.load,
        template: Template::new(cfg.size, n),
        connect_timeout: cfg.connect_timeout,
        epoch: Instant::now(),
        stats: Stats {
            hists: (0..SHARDS).map(|_| Mutex::new(Histogram::new())).collect(),
            ..Stats::default()
        },
    });
    let frame_bytes = ctx
        .template
        .render(
            cfg.protocol,
            "0123abcd",
            n / 2,
            n / 2 + 1,
            12345,
            12_345_678_901,
        )
        .len();
    let pid = cfg.server_pid;
    let rss_baseline = pid.and_then(sys::pid_rss_kib);
    let mut interrupted = false;

    // Connect and join.
    let (phase_tx, phase_rx) = watch::channel(Phase::Idle);
    let (join_tx, mut join_rx) = mpsc::unbounded_channel::<(usize, Result<String, String>)>();
    let sem = Arc::new(Semaphore::new(cfg.connect_parallel.clamp(1, 1024)));
    let t_connect = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for idx in 0..n {
        let ctx = ctx.clone();
        let join_tx = join_tx.clone();
        let phase_rx = phase_rx.clone();
        let sem = sem.clone();
        handles.push(tokio::spawn(client_task(ctx, idx, join_tx, phase_rx, sem)));
    }
    drop(join_tx);
    drop(phase_rx);
    log(
        cfg.verbose,
        format_args!(
            "bench signal: {n} {} clients → {}, rooms of {k}",
            cfg.protocol.name(),
            cfg.server
        ),
    );
    let mut peers: Vec<String> = vec![String::new(); n];
    let mut joined = 0usize;
    let mut failed = 0usize;
    let mut connect_error: Option<String> = None;
    let mut last_join = t_connect;
    let mut reported = 0usize;
    let phase_deadline = t_connect + CONNECT_PHASE_LIMIT;
    let mut next_progress = t_connect + Duration::from_secs(2);
    while reported < n {
        if sys::interrupted() {
            interrupted = true;
            break;
        }
        if Instant::now() >= phase_deadline {
            let missing = n - reported;
            failed += missing;
            connect_error.get_or_insert_with(|| {
                format!("{missing} clients still connecting after {CONNECT_PHASE_LIMIT:?}")
            });
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), join_rx.recv()).await {
            Ok(Some((idx, r))) => {
                reported += 1;
                match r {
                    Ok(p) => {
                        if let Some(slot) = peers.get_mut(idx) {
                            *slot = p;
                        }
                        joined += 1;
                        last_join = Instant::now();
                    }
                    Err(e) => {
                        failed += 1;
                        connect_error.get_or_insert(e);
                    }
                }
            }
            Ok(None) => {
                // Every client task reported or ended (a task that ended without reporting
                // counts as failed).
                failed += n - reported;
                break;
            }
            Err(_) => {}
        }
        if cfg.verbose && Instant::now() >= next_progress {
            next_progress += Duration::from_secs(2);
            eprintln!("  {joined} joined, {failed} failed");
        }
    }
    let connect_s = last_join.duration_since(t_connect).as_secs_f64();
    let connections_per_s = if connect_s > 0.0 {
        joined as f64 / connect_s
    } else {
        0.0
    };
    log(
        cfg.verbose,
        format_args!(
            "{joined} clients joined in {connect_s:.2} s ({connections_per_s:.0}/s), {failed} failed{}",
            connect_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        ),
    );
    let active: Vec<bool> = (0..rooms)
        .map(|r| peers[r * k..(r + 1) * k].iter().all(|p| !p.is_empty()))
        .collect();
    let rooms_active = active.iter().filter(|a| **a).count();

    // Idle memory.
    if !interrupted {
        sleep_interruptible(cfg.settle).await;
    }
    let rss_idle = pid.and_then(sys::pid_rss_kib);
    let rss_per_conn = match (rss_baseline, rss_idle) {
        (Some(b), Some(i)) if joined > 0 => Some((i as f64 - b as f64) / joined as f64),
        _ => None,
    };
    if let (Some(b), Some(i), Some(per)) = (rss_baseline, rss_idle, rss_per_conn) {
        log(
            cfg.verbose,
            format_args!(
                "server RSS {b} KiB before, {i} KiB with {joined} idle clients: {per:.1} KiB per connection"
            ),
        );
    }

    // Load.
    let mut duration_s = 0.0;
    let mut gen_cpu = 0.0;
    let mut server_cpu = None;
    let mut rss_end = None;
    let mut held = joined as u64;
    let run_load = !cfg.duration.is_zero() && rooms_active > 0 && !sys::interrupted();
    if run_load {
        let senders = rooms_active * k;
        let rate_per_client = match cfg.load {
            SignalLoad::Rate(r) => r as f64 / senders as f64,
            SignalLoad::Max { .. } => 0.0,
        };
        let start = Instant::now();
        let plan = Arc::new(Plan {
            start,
            end: start + cfg.duration,
            peers,
            active,
            rate_per_client,
            senders,
        });
        let cpu0 = sys::process_cpu_time();
        let scpu0 = pid.and_then(sys::pid_cpu_time);
        let _ = phase_tx.send(Phase::Run(plan.clone()));
        log(
            cfg.verbose,
            format_args!(
                "load: {} for {:.0} s over {rooms_active} rooms",
                match cfg.load {
                    SignalLoad::Rate(r) => format!("{r} messages/s paced"),
                    SignalLoad::Max { in_flight } =>
                        format!("max rate, {in_flight} in flight per room"),
                },
                cfg.duration.as_secs_f64()
            ),
        );
        while Instant::now() < plan.end {
            if sys::interrupted() {
                interrupted = true;
                break;
            }
            let left = plan.end.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(100))).await;
        }
        let stopped = Instant::now();
        let _ = phase_tx.send(Phase::Stop);
        duration_s = stopped.duration_since(start).as_secs_f64();
        let wall = duration_s.max(1e-9);
        gen_cpu = (sys::process_cpu_time().saturating_sub(cpu0)).as_secs_f64() / wall * 100.0;
        server_cpu = match (scpu0, pid.and_then(sys::pid_cpu_time)) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() / wall * 100.0),
            _ => None,
        };
        rss_end = pid.and_then(sys::pid_rss_kib);
        held = (joined as u64).saturating_sub(ctx.stats.disconnected.load(Ordering::Relaxed));
        // Drain: wait for what is under way.
        let drain_end = Instant::now() + cfg.drain;
        loop {
            // Give the clients' flushes a moment.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let s = &ctx.stats;
            let sent = s.sent.load(Ordering::Relaxed);
            let done = s.delivered.load(Ordering::Relaxed)
                + s.misrouted.load(Ordering::Relaxed)
                + s.duplicates.load(Ordering::Relaxed);
            if done >= sent || Instant::now() >= drain_end || sys::interrupted() {
                break;
            }
        }
    }

    // Close: every client leaves and closes; wait a bounded time.
    let _ = phase_tx.send(Phase::Close);
    let close_deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT + Duration::from_secs(2);
    for h in handles.iter_mut() {
        if tokio::time::timeout_at(close_deadline, &mut *h)
            .await
            .is_err()
        {
            break;
        }
    }
    for h in &handles {
        h.abort();
    }
    interrupted |= sys::interrupted();

    let s = &ctx.stats;
    let mut hist = Histogram::new();
    for h in &s.hists {
        hist.merge(&h.lock());
    }
    let first_server_error = s.first_error.lock().clone();
    let sent = s.sent.load(Ordering::Relaxed);
    let delivered = s.delivered.load(Ordering::Relaxed);
    let delivered_window = s.delivered_window.load(Ordering::Relaxed);
    let us = |ns: u64| ns as f64 / 1000.0;
    let (mode, target_rate, in_flight) = if !run_load {
        ("idle", None, None)
    } else {
        match cfg.load {
            SignalLoad::Rate(r) => ("paced", Some(r), None),
            SignalLoad::Max { in_flight } => ("max", None, Some(in_flight)),
        }
    };
    let send_rate = if duration_s > 0.0 {
        sent as f64 / duration_s
    } else {
        0.0
    };
    let generator_limited = match target_rate {
        Some(r) => send_rate < r as f64 * RATE_REACHED,
        None => false,
    };
    Ok(SignalReport {
        protocol: cfg.protocol.name(),
        server: cfg.server.clone(),
        clients: n,
        room_size: k,
        rooms_active,
        size: cfg.size,
        frame_bytes,
        threads,
        mode,
        target_rate,
        in_flight,
        connected: joined,
        connect_failed: failed,
        connect_error,
        connect_s,
        connections_per_s,
        server_rss_baseline_kib: rss_baseline,
        server_rss_idle_kib: rss_idle,
        server_rss_per_connection_kib: rss_per_conn,
        duration_s,
        sent,
        delivered,
        delivered_in_window: delivered_window,
        messages_per_s: if duration_s > 0.0 {
            delivered_window as f64 / duration_s
        } else {
            0.0
        },
        send_rate,
        lost: sent.saturating_sub(delivered),
        misrouted: s.misrouted.load(Ordering::Relaxed),
        duplicates: s.duplicates.load(Ordering::Relaxed),
        gaps: s.gaps.load(Ordering::Relaxed),
        server_errors: s.server_errors.load(Ordering::Relaxed),
        first_server_error,
        bad_frames: s.bad_frames.load(Ordering::Relaxed),
        disconnected: s.disconnected.load(Ordering::Relaxed),
        connections_held: held,
        skipped: s.skipped.load(Ordering::Relaxed),
        generator_limited,
        latency_p50_us: us(hist.percentile(50.0)),
        latency_p99_us: us(hist.percentile(99.0)),
        latency_max_us: us(hist.max()),
        latency_mean_us: us(hist.mean()),
        generator_cpu_pct: gen_cpu,
        server_cpu_pct: server_cpu,
        server_rss_end_kib: rss_end,
        closed: s.closed.load(Ordering::Relaxed),
        interrupted,
    })
}

async fn sleep_interruptible(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !sys::interrupted() {
        let left = end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(100))).await;
    }
}

pub(super) fn ws_config() -> WebSocketConfig {
    // Small buffers: thousands of idle clients share this process, and tungstenite zero-fills
    // the free part of the read buffer before every read (128 KiB by default).
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

async fn client_task(
    ctx: Arc<Ctx>,
    idx: usize,
    join_tx: mpsc::UnboundedSender<(usize, Result<String, String>)>,
    phase: watch::Receiver<Phase>,
    sem: Arc<Semaphore>,
) {
    let joined = {
        let Ok(_permit) = sem.acquire().await else {
            let _ = join_tx.send((idx, Err("connect limiter closed".into())));
            return;
        };
        match tokio::time::timeout(ctx.connect_timeout, connect_join(&ctx, idx)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no joined answer within {:?}", ctx.connect_timeout)),
        }
    };
    let (ws, peer) = match joined {
        Ok(x) => x,
        Err(e) => {
            let _ = join_tx.send((idx, Err(e)));
            return;
        }
    };
    let _ = join_tx.send((idx, Ok(peer)));
    drop(join_tx);
    let mut c = Client::new(ctx, idx);
    c.run(ws, phase).await;
}

pub(super) async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Binary(_))) => return Err("unexpected binary frame".into()),
            Some(Ok(Message::Close(f))) => {
                return Err(match f {
                    Some(f) => format!("closed by the server: {} {}", f.code, f.reason),
                    None => "closed by the server".into(),
                })
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("websocket: {e}")),
            None => return Err("connection closed".into()),
        }
    }
}

pub(super) async fn send_text(ws: &mut Ws, t: String) -> Result<(), String> {
    ws.send(Message::text(t))
        .await
        .map_err(|e| format!("websocket send: {e}"))
}

/// Connect, handshake, join; returns the socket and the client's peer id (Icebreaker) or
/// socket id (socket.io).
async fn connect_join(ctx: &Ctx, idx: usize) -> Result<(Ws, String), String> {
    let (addr, authority) = &ctx.targets[idx % ctx.targets.len()];
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let path = match ctx.proto {
        SignalProtocol::Icebreaker => "/ws",
        SignalProtocol::Socketio => "/socket.io/?EIO=4&transport=websocket",
    };
    let url = format!("ws://{authority}{path}");
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(ws_config()))
        .await
        .map_err(|e| format!("websocket handshake: {e}"))?;
    let room = format!("{}{}", ctx.room_prefix, idx / ctx.k);
    match ctx.proto {
        SignalProtocol::Icebreaker => {
            send_text(
                &mut ws,
                format!(
                    "{{\"type\":\"join\",\"room\":\"{room}\",\"capacity\":{}}}",
                    ctx.k
                ),
            )
            .await?;
            loop {
                let t = next_text(&mut ws).await?;
                let v: serde_json::Value =
                    serde_json::from_str(&t).map_err(|e| format!("bad answer to join: {e}"))?;
                match v.get("type").and_then(|t| t.as_str()) {
                    Some("joined") => {
                        let peer = v
                            .get("peer")
                            .and_then(|p| p.as_str())
                            .filter(|p| !p.is_empty() && p.len() <= 64)
                            .ok_or("joined without a peer id")?;
                        return Ok((ws, peer.to_string()));
                    }
                    Some("error") => {
                        return Err(format!(
                            "join refused: {}: {}",
                            v.get("code").and_then(|c| c.as_str()).unwrap_or("?"),
                            v.get("message").and_then(|c| c.as_str()).unwrap_or("")
                        ))
                    }
                    _ => continue,
                }
            }
        }
        SignalProtocol::Socketio => {
            let open = next_text(&mut ws).await?;
            if !open.starts_with('0') {
                return Err(format!(
                    "expected the Engine.IO open packet, got {:?}",
                    truncate(&open)
                ));
            }
            send_text(&mut ws, "40".into()).await?;
            let sid = loop {
                let t = next_text(&mut ws).await?;
                if t == "2" {
                    send_text(&mut ws, "3".into()).await?;
                } else if let Some(rest) = t.strip_prefix("40") {
                    let v: serde_json::Value = serde_json::from_str(rest).unwrap_or_default();
                    break v
                        .get("sid")
                        .and_then(|s| s.as_str())
                        .unwrap_or("")
                        .to_string();
                } else if let Some(rest) = t.strip_prefix("44") {
                    return Err(format!("socket.io connect_error: {}", truncate(rest)));
                }
            };
            send_text(&mut ws, format!("42[\"create or join\",\"{room}\"]")).await?;
            loop {
                let t = next_text(&mut ws).await?;
                if t == "2" {
                    send_text(&mut ws, "3".into()).await?;
                    continue;
                }
                let Some(rest) = t.strip_prefix("42") else {
                    continue;
                };
                let Ok(args) = serde_json::from_str::<Vec<&RawValue>>(rest) else {
                    return Err(format!("bad socket.io event {:?}", truncate(&t)));
                };
                let name = args
                    .first()
                    .and_then(|n| serde_json::from_str::<Cow<'_, str>>(n.get()).ok());
                match name.as_deref() {
                    Some("created" | "joined") => return Ok((ws, sid)),
                    Some("full") => return Err(format!("room {room} is full")),
                    Some("error") => return Err(format!("join refused: {}", truncate(rest))),
                    _ => continue,
                }
            }
        }
    }
}

pub(super) fn truncate(s: &str) -> &str {
    let mut end = s.len().min(120);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Icebreaker server → client message (only the fields the generator needs).
#[derive(Deserialize)]
struct IbIn<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
}

/// The numbers in a payload.
#[derive(Deserialize)]
struct Payload {
    c: usize,
    r: usize,
    s: u64,
    t: u64,
}

/// Why a client's loop ended.
enum Exit {
    /// The coordinator asked to close.
    Close,
    /// The server closed or the connection broke.
    Lost,
}

struct Client {
    ctx: Arc<Ctx>,
    idx: usize,
    room: usize,
    pos: usize,
    plan: Option<Arc<Plan>>,
    sending: bool,
    /// Next sequence number to send.
    out_seq: u64,
    /// Next sequence number expected from each room member.
    expected: Vec<u64>,
    /// Icebreaker: highest `seq` received and acknowledged.
    last_seq: u64,
    acked_seq: u64,
    ack_due: Option<Instant>,
    /// Paced: messages of the schedule handled (sent or skipped).
    paced: u64,
    offset: Duration,
    out: Vec<Message>,
    local: Local,
}

impl Client {
    fn new(ctx: Arc<Ctx>, idx: usize) -> Client {
        let k = ctx.k;
        Client {
            idx,
            room: idx / k,
            pos: idx % k,
            plan: None,
            sending: false,
            out_seq: 0,
            expected: vec![0; k],
            last_seq: 0,
            acked_seq: 0,
            ack_due: None,
            paced: 0,
            offset: Duration::ZERO,
            out: Vec::new(),
            local: Local::default(),
            ctx,
        }
    }

    async fn run(&mut self, mut ws: Ws, mut phase: watch::Receiver<Phase>) {
        let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
        let timer = tokio::time::sleep_until(far());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        // The phase may have moved on while this client was joining.
        let initial = phase.borrow_and_update().clone();
        let mut exit = self.on_phase(initial, Instant::now());
        while exit.is_none() {
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
                    let p = if changed.is_ok() {
                        phase.borrow_and_update().clone()
                    } else {
                        Phase::Close
                    };
                    exit = self.on_phase(p, Instant::now());
                }
                _ = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.on_timer(Instant::now());
                }
                m = ws.next() => {
                    let now = Instant::now();
                    let (e, f) = self.on_frame(m, now);
                    exit = e;
                    flush |= f;
                    let mut n = 1;
                    while exit.is_none() && n < BATCH {
                        let Some(m) = ws.next().now_or_never() else { break };
                        let (e, f) = self.on_frame(m, now);
                        exit = e;
                        flush |= f;
                        n += 1;
                    }
                }
            }
            if matches!(exit, Some(Exit::Lost)) {
                break;
            }
            if !self.out.is_empty() || flush {
                if let Err(()) = self.write(&mut ws).await {
                    exit = Some(Exit::Lost);
                }
            }
            self.ctx.stats.flush(self.idx, &mut self.local);
        }
        self.ctx.stats.flush(self.idx, &mut self.local);
        match exit {
            Some(Exit::Lost) => {
                self.ctx.stats.disconnected.fetch_add(1, Ordering::Relaxed);
            }
            _ => self.close(ws).await,
        }
    }

    async fn write(&mut self, ws: &mut Ws) -> Result<(), ()> {
        for m in self.out.drain(..) {
            if ws.feed(m).await.is_err() {
                return Err(());
            }
        }
        ws.flush().await.map_err(|_| ())
    }

    async fn close(&mut self, mut ws: Ws) {
        let bye = match self.ctx.proto {
            SignalProtocol::Icebreaker => "{\"type\":\"leave\"}",
            SignalProtocol::Socketio => "41",
        };
        let done = tokio::time::timeout(CLOSE_TIMEOUT, async {
            ws.send(Message::text(bye)).await.ok()?;
            ws.close(None).await.ok()?;
            // Wait for the server's close (or EOF).
            while let Some(Ok(_)) = ws.next().await {}
            Some(())
        })
        .await;
        if matches!(done, Ok(Some(()))) {
            self.ctx.stats.closed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_phase(&mut self, p: Phase, now: Instant) -> Option<Exit> {
        match p {
            Phase::Idle => None,
            Phase::Run(plan) => {
                if self.plan.is_none() && plan.active.get(self.room).copied().unwrap_or(false) {
                    self.sending = true;
                    self.plan = Some(plan.clone());
                    match self.ctx.load {
                        SignalLoad::Rate(_) => {
                            if plan.rate_per_client > 0.0 && plan.senders > 0 {
                                let frac = (self.idx % plan.senders) as f64 / plan.senders as f64;
                                self.offset = Duration::from_secs_f64(
                                    (frac / plan.rate_per_client).min(3600.0),
                                );
                            }
                        }
                        SignalLoad::Max { in_flight } => {
                            let k = self.ctx.k;
                            let mine = in_flight / k + usize::from(self.pos < in_flight % k);
                            for _ in 0..mine {
                                self.queue_signal(now);
                            }
                        }
                    }
                }
                None
            }
            Phase::Stop => {
                self.sending = false;
                None
            }
            Phase::Close => Some(Exit::Close),
        }
    }

    /// When the timer must fire: the next paced send or the ack.
    fn deadline(&self) -> Option<Instant> {
        let mut d = self.ack_due;
        if self.sending {
            if let (SignalLoad::Rate(_), Some(plan)) = (self.ctx.load, &self.plan) {
                let next = self.paced_time(plan, self.paced).min(plan.end);
                d = Some(d.map_or(next, |a| a.min(next)));
            }
        }
        d
    }

    fn paced_time(&self, plan: &Plan, k: u64) -> Instant {
        let secs = k as f64 / plan.rate_per_client;
        plan.start + self.offset + Duration::from_secs_f64(secs.min(1e6))
    }

    fn on_timer(&mut self, now: Instant) {
        if self.ack_due.is_some_and(|d| d <= now) {
            self.queue_ack();
        }
        let Some(plan) = self.plan.clone() else {
            return;
        };
        if !self.sending {
            return;
        }
        if now >= plan.end {
            self.sending = false;
            return;
        }
        if let SignalLoad::Rate(_) = self.ctx.load {
            let since = now.saturating_duration_since(plan.start + self.offset);
            if now < plan.start + self.offset {
                return;
            }
            let owed = (since.as_secs_f64() * plan.rate_per_client).floor() as u64 + 1;
            let behind = (MAX_BEHIND.as_secs_f64() * plan.rate_per_client).ceil() as u64 + 1;
            if owed > self.paced + behind {
                let skip = owed - behind - self.paced;
                self.local.skipped += skip;
                self.paced += skip;
            }
            while self.paced < owed {
                self.paced += 1;
                self.queue_signal(now);
            }
        }
    }

    fn queue_ack(&mut self) {
        self.ack_due = None;
        if self.ctx.proto == SignalProtocol::Icebreaker && self.last_seq > self.acked_seq {
            self.acked_seq = self.last_seq;
            self.out.push(Message::text(format!(
                "{{\"type\":\"ack\",\"seq\":{}}}",
                self.last_seq
            )));
        }
    }

    fn queue_signal(&mut self, now: Instant) {
        let Some(plan) = &self.plan else { return };
        let k = self.ctx.k;
        let to = self.room * k + (self.pos + 1) % k;
        let Some(to_peer) = plan.peers.get(to) else {
            return;
        };
        let s = self.out_seq;
        self.out_seq += 1;
        let text = self.ctx.template.render(
            self.ctx.proto,
            to_peer,
            self.idx,
            to,
            s,
            self.ctx.now_ns(now),
        );
        self.out.push(Message::text(text));
        self.local.sent += 1;
    }

    /// Handle one frame; returns (exit, needs a flush).
    fn on_frame(
        &mut self,
        m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
        now: Instant,
    ) -> (Option<Exit>, bool) {
        match m {
            Some(Ok(Message::Text(t))) => {
                let flush = self.on_text(t.as_str(), now);
                (None, flush)
            }
            Some(Ok(Message::Binary(_))) => {
                self.local.bad_frames += 1;
                (None, false)
            }
            // tungstenite queues the pong; it goes out with the next flush.
            Some(Ok(Message::Ping(_))) => (None, true),
            Some(Ok(Message::Pong(_) | Message::Frame(_))) => (None, false),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => (Some(Exit::Lost), false),
        }
    }

    /// Handle a text frame; returns whether something must be flushed besides `out`.
    fn on_text(&mut self, t: &str, now: Instant) -> bool {
        match self.ctx.proto {
            SignalProtocol::Icebreaker => {
                let Ok(m) = serde_json::from_str::<IbIn<'_>>(t) else {
                    self.local.bad_frames += 1;
                    return false;
                };
                if let Some(seq) = m.seq {
                    if seq > self.last_seq {
                        self.last_seq = seq;
                        if self.last_seq - self.acked_seq >= ACK_EVERY {
                            self.queue_ack();
                        } else if self.ack_due.is_none() {
                            self.ack_due = Some(now + ACK_DELAY);
                        }
                    }
                }
                match m.ty.as_ref() {
                    "signal" => match m.data {
                        Some(d) => self.on_payload(d.get(), now),
                        None => self.local.bad_frames += 1,
                    },
                    "error" => {
                        self.local.server_errors += 1;
                        if self.local.server_errors == 1 {
                            self.ctx
                                .stats
                                .note_error(m.code.as_deref().unwrap_or("error").to_string());
                        }
                    }
                    _ => {}
                }
                false
            }
            SignalProtocol::Socketio => {
                if t == "2" {
                    self.out.push(Message::text("3"));
                    return false;
                }
                let Some(rest) = t.strip_prefix("42") else {
                    if let Some(rest) = t.strip_prefix("44") {
                        self.local.server_errors += 1;
                        self.ctx
                            .stats
                            .note_error(format!("connect_error {}", truncate(rest)));
                    }
                    return false;
                };
                let Ok(args) = serde_json::from_str::<Vec<&RawValue>>(rest) else {
                    self.local.bad_frames += 1;
                    return false;
                };
                let name = args
                    .first()
                    .and_then(|n| serde_json::from_str::<Cow<'_, str>>(n.get()).ok());
                if name.as_deref() == Some("message") {
                    match args.get(1) {
                        Some(d) => self.on_payload(d.get(), now),
                        None => self.local.bad_frames += 1,
                    }
                }
                false
            }
        }
    }

    fn on_payload(&mut self, json: &str, now: Instant) {
        let Ok(p) = serde_json::from_str::<Payload>(json) else {
            self.local.bad_frames += 1;
            return;
        };
        let k = self.ctx.k;
        if p.r != self.idx || p.c / k != self.room || p.c == self.idx {
            self.local.misrouted += 1;
            return;
        }
        let Some(exp) = self.expected.get_mut(p.c % k) else {
            self.local.misrouted += 1;
            return;
        };
        if p.s < *exp {
            self.local.duplicates += 1;
            return;
        }
        // Numbers from the network: no arithmetic that can overflow.
        self.local.gaps = self.local.gaps.saturating_add(p.s - *exp);
        *exp = p.s.saturating_add(1);
        self.local.delivered += 1;
        let now_ns = self.ctx.now_ns(now);
        self.local.latencies.push(now_ns.saturating_sub(p.t));
        let in_window = self.plan.as_ref().is_some_and(|pl| now <= pl.end);
        if in_window {
            self.local.delivered_window += 1;
        }
        if self.sending && in_window && matches!(self.ctx.load, SignalLoad::Max { .. }) {
            self.queue_signal(now);
        }
    }
}

/// Human-readable report of `bench signal`.
pub fn format_signal(r: &SignalReport) -> String {
    let mut o = String::new();
    let opt = |v: Option<f64>, unit: &str| {
        v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1}{unit}"))
    };
    let _ = writeln!(
        o,
        "bench signal: {} at {}, {} clients in rooms of {}, {}-byte payload ({}-byte frames), {} generator threads",
        r.protocol, r.server, r.clients, r.room_size, r.size, r.frame_bytes, r.threads
    );
    let _ = writeln!(
        o,
        "connected   {} joined, {} failed{} in {:.2} s ({:.0} connections/s)",
        r.connected,
        r.connect_failed,
        r.connect_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
        r.connect_s,
        r.connections_per_s
    );
    if let (Some(b), Some(i)) = (r.server_rss_baseline_kib, r.server_rss_idle_kib) {
        let _ = writeln!(
            o,
            "idle memory server RSS {b} KiB before, {i} KiB with {} idle connections: {} per connection",
            r.connected,
            opt(r.server_rss_per_connection_kib, " KiB")
        );
    }
    if r.mode != "idle" {
        let load = match (r.target_rate, r.in_flight) {
            (Some(t), _) => format!("paced {t} messages/s"),
            (_, Some(f)) => format!("max rate, {f} in flight per room"),
            _ => "?".into(),
        };
        let _ = writeln!(
            o,
            "load        {load} for {:.1} s over {} rooms",
            r.duration_s, r.rooms_active
        );
        let _ = writeln!(
            o,
            "sent        {} ({:.0}/s){}",
            r.sent,
            r.send_rate,
            if r.generator_limited {
                format!(
                    " — below the target: generator-limited ({} skipped)",
                    r.skipped
                )
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            o,
            "delivered   {} ({:.0} messages/s in the load phase)",
            r.delivered, r.messages_per_s
        );
        let _ = writeln!(
            o,
            "lost        {}, misrouted {}, duplicates {}, sequence gaps {}",
            r.lost, r.misrouted, r.duplicates, r.gaps
        );
        let _ = writeln!(
            o,
            "latency     p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
            r.latency_p50_us, r.latency_p99_us, r.latency_max_us
        );
        let _ = writeln!(
            o,
            "connections {} held to the end of the load, {} dropped by the server",
            r.connections_held, r.disconnected
        );
        let _ = writeln!(
            o,
            "cpu         generator {:.0} %, server {}",
            r.generator_cpu_pct,
            opt(r.server_cpu_pct, " %")
        );
        if let Some(rss) = r.server_rss_end_kib {
            let _ = writeln!(o, "server RSS  {rss} KiB at the end of the load");
        }
    }
    if r.server_errors > 0 {
        let _ = writeln!(
            o,
            "server errors {} (first: {}){}",
            r.server_errors,
            r.first_server_error.as_deref().unwrap_or("?"),
            if r.first_server_error.as_deref() == Some("rate_limited") {
                " — raise the server's --signal-rate"
            } else {
                ""
            }
        );
    }
    if r.bad_frames > 0 {
        let _ = writeln!(o, "unreadable frames {}", r.bad_frames);
    }
    let _ = writeln!(o, "closed      {} of {}", r.closed, r.connected);
    if r.interrupted {
        let _ = writeln!(o, "interrupted");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        let (a, auth) = parse_server("http://127.0.0.1:8080").expect("parses");
        assert_eq!(
            (a.to_string().as_str(), auth.as_str()),
            ("127.0.0.1:8080", "127.0.0.1:8080")
        );
        assert!(parse_server("ws://127.0.0.1:9/").is_ok());
        assert!(parse_server("127.0.0.1:9").is_ok());
        assert!(parse_server("https://127.0.0.1:9").is_err());
        assert!(parse_server("http://127.0.0.1:9/ws").is_err());
        assert!(parse_server("ftp://x").is_err());
    }

    #[test]
    fn payload_has_the_size_and_parses() {
        for size in [MIN_SIZE, 210, 1000] {
            let t = Template::new(size, 2000);
            let m = t.render(
                SignalProtocol::Icebreaker,
                "0123abcd",
                1234,
                1235,
                12345,
                12_345_678_901,
            );
            let v: serde_json::Value = serde_json::from_str(&m).expect("json");
            assert_eq!(v["type"], "signal");
            let data = v["data"].to_string();
            assert!(
                data.len().abs_diff(size) <= 4,
                "{size}: {} {data}",
                data.len()
            );
            let p: Payload = serde_json::from_str(&data).expect("payload");
            assert_eq!((p.c, p.r, p.s, p.t), (1234, 1235, 12345, 12_345_678_901));
            let io = t.render(SignalProtocol::Socketio, "", 1, 0, 7, 9);
            let rest = io.strip_prefix("42").expect("event");
            let args: Vec<&RawValue> = serde_json::from_str(rest).expect("array");
            assert_eq!(args[0].get(), "\"message\"");
            let p: Payload = serde_json::from_str(args[1].get()).expect("payload");
            assert_eq!((p.c, p.r, p.s, p.t), (1, 0, 7, 9));
        }
    }

    #[test]
    fn invalid_settings_are_refused() {
        let ok = SignalBench::default();
        assert!(validate(&ok).is_ok());
        let bad = |f: &dyn Fn(&mut SignalBench)| {
            let mut c = SignalBench::default();
            f(&mut c);
            validate(&c).is_err()
        };
        assert!(bad(&|c| c.room_size = 1));
        assert!(bad(&|c| c.clients = 101));
        assert!(bad(&|c| {
            c.protocol = SignalProtocol::Socketio;
            c.room_size = 4;
        }));
        assert!(bad(&|c| c.size = 10));
        assert!(bad(&|c| c.load = SignalLoad::Rate(0)));
        assert!(bad(&|c| c.load = SignalLoad::Max { in_flight: 0 }));
        assert!(bad(&|c| c.room_prefix = "a b".into()));
    }
}
