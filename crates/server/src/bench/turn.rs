//! `bench turn`: the TURN relay load generator (and the null-relay ceiling).
//!
//! * **Setup**: every client is one connected UDP socket; over it a synchronous control session
//!   ([`super::setup`]) does Allocate + ChannelBind towards the echo peer (up to 16 clients set
//!   up in parallel).
//! * **Data phase**: `threads` OS threads, clients spread round-robin over them. Each thread
//!   waits on its sockets with epoll, sends with `sendmmsg` (up to 32 datagrams per call per
//!   client) and receives with `recvmmsg`. Paced mode: the thread owes `rate_thread × elapsed`
//!   packets and sends what it owes whenever it wakes up (at least every millisecond), spread
//!   evenly over its clients, so batches stay small. Flood: every round sends 8 packets per
//!   client, then drains what arrived.
//! * **Payload**: `[ts ns: u64][seq: u64][client: u32][run: u32][zeros]`; the RTT comes from the
//!   timestamp echoed back, the run id keeps late packets of an earlier step out of the counts.
//! * **Echo peer**: `peer_threads` threads with `SO_REUSEPORT` sockets, `recvmmsg` → `sendmmsg`
//!   back to the sources; it counts what arrives (client → peer direction).
//! * **Null relay** (`null_relay`): instead of a TURN server, the tool runs a bare forwarder (2
//!   threads, one per direction, `recvmmsg`/`sendmmsg` batches of 64) between one client-facing
//!   and one peer-facing socket; clients send plain datagrams (no ChannelData header) and the
//!   forwarder routes the echoes back by the client index in the payload. Same generator, same
//!   peer, same counting: it measures what the kernel allows on this machine for this traffic
//!   pattern with no TURN logic at all.
//!
//! Relayed packets = packets the peer received + packets the clients received back (both
//! directions of each echo). Loss = 1 − echoes received / packets sent.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use icebreaker_stun::{self as codec, ChannelData, CHANNEL_MIN};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use super::hist::Histogram;
use super::setup::{self, Session, SetupError, SOCKET_BUFFER};
use crate::client::turn::Credentials;
use crate::sys::{self, Batch, Epoll};

/// Bytes of the payload header: timestamp, sequence number, client index, run id.
pub const MIN_PAYLOAD: usize = 24;
/// Largest payload accepted (one datagram, no IP fragmentation worries on loopback).
pub const MAX_PAYLOAD: usize = 8192;
/// Loss below which a paced step counts as lossless (percent).
pub const LOSSLESS_PCT: f64 = 0.1;
/// A paced step must reach this share of its target send rate to count.
const RATE_REACHED: f64 = 0.97;
const SEND_BATCH: usize = 32;
const RECV_BATCH: usize = 32;
const FLOOD_BATCH: usize = 16;
pub(super) const CHANNEL: u16 = CHANNEL_MIN;
const ALLOCATION_LIFETIME: u32 = 600;
/// Control sessions are refreshed (Refresh + ChannelBind) before a step when older than this.
const MAINTAIN_EVERY: Duration = Duration::from_secs(120);
const SETUP_PARALLEL: usize = 16;

/// How fast the clients send.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// Total packets per second sent by all clients together.
    Rate(u64),
    /// As fast as the generator can.
    Flood,
}

/// Settings of a `bench turn` run (the library entry point, see [`run_turn`]).
#[derive(Clone, Debug)]
pub struct TurnBench {
    /// The TURN server (ignored with `null_relay`).
    pub server: Option<SocketAddr>,
    /// Credentials for the TURN server.
    pub credentials: Option<Credentials>,
    /// Number of clients (allocations).
    pub clients: usize,
    /// Application payload per packet, bytes (ChannelData adds 4).
    pub size: usize,
    /// Paced rate or flood. With `find_max`, a rate is the upper bound of the search; a flood
    /// step finds the upper bound first.
    pub load: Load,
    /// Duration of the data phase (of each step with `find_max`).
    pub duration: Duration,
    /// An external echo peer instead of the built-in one.
    pub peer: Option<SocketAddr>,
    /// Generator threads.
    pub threads: usize,
    /// Echo peer threads.
    pub peer_threads: usize,
    /// Search the highest paced rate with less than 0.1 % loss.
    pub find_max: bool,
    /// Maximum number of paced steps of the search.
    pub max_steps: usize,
    /// Run a bare forwarder instead of talking to a TURN server.
    pub null_relay: bool,
    /// How long to keep receiving after the last packet was sent.
    pub drain: Duration,
    /// Limit for each control transaction.
    pub setup_timeout: Duration,
    /// Print progress lines to stderr.
    pub verbose: bool,
    /// Process ID of a local server whose CPU and memory each step reports.
    pub server_pid: Option<u32>,
}

impl Default for TurnBench {
    fn default() -> Self {
        TurnBench {
            server: None,
            credentials: None,
            clients: 100,
            size: 100,
            load: Load::Flood,
            duration: Duration::from_secs(10),
            peer: None,
            threads: default_threads(),
            peer_threads: 1,
            find_max: false,
            max_steps: 8,
            null_relay: false,
            drain: Duration::from_millis(300),
            setup_timeout: Duration::from_secs(5),
            verbose: false,
            server_pid: None,
        }
    }
}

/// Number of cores (at least 1).
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The outcome of one data phase.
#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    /// `paced` or `flood`.
    pub mode: &'static str,
    /// Target send rate (paced), packets/s from all clients.
    pub target_pps: Option<u64>,
    /// Length of the send phase, seconds.
    pub duration_s: f64,
    /// Packets handed to the kernel by the clients.
    pub sent: u64,
    /// Packets the kernel refused locally (full socket buffer, ICMP error).
    pub send_failed: u64,
    /// Paced packets the generator fell too far behind to send.
    pub skipped: u64,
    /// Client send rate achieved, packets/s.
    pub send_pps: f64,
    /// Packets that reached the echo peer (None with an external peer).
    pub peer_received: Option<u64>,
    /// Echoes received back by the clients.
    pub received: u64,
    /// Late packets of an earlier step (not counted).
    pub stale: u64,
    /// Packets that were not ours or misrouted to the wrong client.
    pub bad: u64,
    /// Relayed packets, both directions.
    pub relayed: u64,
    /// Relayed packets per second (both directions).
    pub relayed_pps: f64,
    /// Relayed payload, Mbit/s (both directions).
    pub mbit_s: f64,
    /// Round-trip loss, percent.
    pub loss_pct: f64,
    /// Loss on the way to the peer, percent (None with an external peer).
    pub loss_to_peer_pct: Option<f64>,
    /// RTT median, microseconds.
    pub rtt_p50_us: f64,
    /// RTT 99th percentile, microseconds.
    pub rtt_p99_us: f64,
    /// Largest RTT, microseconds.
    pub rtt_max_us: f64,
    /// CPU used by this process (generator, peer, null relay) in percent of one core.
    pub generator_cpu_pct: f64,
    /// Paced: the generator did not reach 97 % of the target rate.
    pub generator_limited: bool,
    /// CPU of the server process (`server_pid`) over the send phase, percent of one core.
    pub server_cpu_pct: Option<f64>,
    /// Resident memory of the server process at the end of the send phase, KiB.
    pub server_rss_kib: Option<u64>,
}

impl StepResult {
    /// Lossless (< 0.1 %) at (at least 97 % of) the target rate.
    pub fn clean(&self) -> bool {
        self.sent > 0 && self.loss_pct < LOSSLESS_PCT && !self.generator_limited
    }
}

/// The outcome of a `--find-max` search.
#[derive(Clone, Debug, Serialize)]
pub struct FindMax {
    /// Send rate achieved by the best lossless paced step (packets/s from all clients), 0 if
    /// none. A step the generator could not drive to its target still counts at what it sent.
    pub send_pps: u64,
    /// Relayed packets/s of that step (both directions).
    pub relayed_pps: f64,
    /// Mbit/s of that step.
    pub mbit_s: f64,
    /// The best lossless step.
    pub best: Option<StepResult>,
    /// The lowest target rate that showed loss.
    pub failed_at_pps: Option<u64>,
    /// Whether a failure was the generator's, not the relay's.
    pub generator_limited: bool,
}

/// Report of a `bench turn` run.
#[derive(Clone, Debug, Serialize)]
pub struct TurnReport {
    /// `turn` or `null-relay`.
    pub target: &'static str,
    /// The server (TURN mode).
    pub server: Option<SocketAddr>,
    /// The echo peer.
    pub peer: SocketAddr,
    /// Number of clients.
    pub clients: usize,
    /// Payload size.
    pub size: usize,
    /// Generator threads.
    pub threads: usize,
    /// Every step in order.
    pub steps: Vec<StepResult>,
    /// The search result (with `find_max`).
    pub find_max: Option<FindMax>,
    /// Allocations released at the end.
    pub released: usize,
    /// Allocations whose release failed.
    pub release_failed: usize,
    /// The run was interrupted (Ctrl-C).
    pub interrupted: bool,
}

impl TurnReport {
    /// The single step of a run without `find_max` (the last step otherwise).
    pub fn last(&self) -> Option<&StepResult> {
        self.steps.last()
    }
}

/// Background threads (echo peer, null relay) and their shared state.
pub(super) struct Background {
    stop: Arc<AtomicBool>,
    /// Run id: the echo peer counts the datagrams carrying it (payload bytes 20..24).
    pub(super) run: Arc<AtomicU32>,
    /// Datagrams of the current run the echo peer received.
    pub(super) peer_rx: Arc<AtomicU64>,
    handles: Vec<JoinHandle<()>>,
}

impl Background {
    pub(super) fn new() -> Background {
        Background {
            stop: Arc::new(AtomicBool::new(false)),
            run: Arc::new(AtomicU32::new(0)),
            peer_rx: Arc::new(AtomicU64::new(0)),
            handles: Vec::new(),
        }
    }

    pub(super) fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How clients frame their packets.
#[derive(Clone, Copy, PartialEq)]
enum Framing {
    ChannelData,
    Raw,
}

impl Framing {
    fn header(self) -> usize {
        match self {
            Framing::ChannelData => 4,
            Framing::Raw => 0,
        }
    }
}

fn log(verbose: bool, msg: std::fmt::Arguments<'_>) {
    if verbose {
        eprintln!("{msg}");
    }
}

/// Run `bench turn`: set up, run one step or the search, release everything.
pub fn run_turn(cfg: &TurnBench) -> anyhow::Result<TurnReport> {
    validate(cfg)?;
    let threads = cfg.threads.clamp(1, cfg.clients);
    let server = if cfg.null_relay {
        None
    } else {
        Some(
            cfg.server
                .ok_or_else(|| anyhow!("--server is required (or --null-relay)"))?,
        )
    };
    let local_ip: IpAddr = match server {
        Some(s) => {
            setup::local_ip_towards(s).with_context(|| format!("no local address towards {s}"))?
        }
        None => cfg
            .peer
            .map(|p| p.ip())
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
    };
    let mut bg = Background::new();
    let peer = match cfg.peer {
        Some(p) => p,
        None => start_echo_peer(&mut bg, local_ip, cfg.peer_threads.max(1), cfg.size)?,
    };
    let own_peer = cfg.peer.is_none();

    // Clients.
    let mut sessions: Vec<Session> = Vec::new();
    let mut raw: Vec<UdpSocket> = Vec::new();
    let framing;
    match server {
        None => {
            framing = Framing::Raw;
            for _ in 0..cfg.clients {
                raw.push(setup::udp_socket(local_ip, None).context("cannot open client socket")?);
            }
            let addrs: Vec<SocketAddr> = raw
                .iter()
                .map(|s| s.local_addr())
                .collect::<Result<_, _>>()?;
            let relay = start_null_relay(&mut bg, local_ip, peer, addrs, cfg.size)?;
            for s in &raw {
                s.connect(relay)?;
            }
            log(
                cfg.verbose,
                format_args!(
                    "null relay on {relay} → echo peer {peer}, {} clients",
                    cfg.clients
                ),
            );
        }
        Some(server) => {
            framing = Framing::ChannelData;
            let creds = cfg.credentials.clone().ok_or_else(|| {
                anyhow!("credentials are required: --user NAME:PASS or --secret S")
            })?;
            let started = Instant::now();
            sessions = setup_sessions(
                server,
                local_ip,
                &creds,
                cfg.clients,
                peer,
                ALLOCATION_LIFETIME,
                cfg.setup_timeout,
            )?;
            log(
                cfg.verbose,
                format_args!(
                    "{} allocations on {server} in {:.2} s, echo peer {peer}",
                    sessions.len(),
                    started.elapsed().as_secs_f64()
                ),
            );
        }
    }

    let outcome = measure(
        cfg,
        &mut sessions,
        &raw,
        framing,
        threads,
        &bg,
        peer,
        own_peer,
    );

    // Release, whatever happened.
    let (released, release_failed) = release(&mut sessions);
    if release_failed > 0 {
        log(
            true,
            format_args!("warning: {release_failed} allocation(s) could not be released"),
        );
    }
    bg.shutdown();
    let (steps, find_max) = outcome?;
    Ok(TurnReport {
        target: if cfg.null_relay { "null-relay" } else { "turn" },
        server,
        peer,
        clients: cfg.clients,
        size: cfg.size,
        threads,
        steps,
        find_max,
        released,
        release_failed,
        interrupted: sys::interrupted(),
    })
}

fn validate(cfg: &TurnBench) -> anyhow::Result<()> {
    if cfg.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if cfg.clients > 10_000 {
        bail!("--clients above 10000 is not supported (one socket and one allocation each)");
    }
    if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&cfg.size) {
        bail!("--size must be {MIN_PAYLOAD}..={MAX_PAYLOAD} bytes (the payload carries a {MIN_PAYLOAD}-byte timestamp/sequence header)");
    }
    if cfg.duration.is_zero() || cfg.duration > Duration::from_secs(3600) {
        bail!("--duration must be 1..=3600 seconds");
    }
    if cfg.load == Load::Rate(0) {
        bail!("--rate must be at least 1 packet/s");
    }
    if cfg.find_max && cfg.max_steps == 0 {
        bail!("--max-steps must be at least 1");
    }
    Ok(())
}

type Measured = (Vec<StepResult>, Option<FindMax>);

#[allow(clippy::too_many_arguments)]
fn measure(
    cfg: &TurnBench,
    sessions: &mut [Session],
    raw: &[UdpSocket],
    framing: Framing,
    threads: usize,
    bg: &Background,
    peer: SocketAddr,
    own_peer: bool,
) -> anyhow::Result<Measured> {
    let mut steps = Vec::new();
    let mut last_maintained = Instant::now();
    let mut step = |load: Load, sessions: &mut [Session]| -> anyhow::Result<StepResult> {
        if !sessions.is_empty() && last_maintained.elapsed() > MAINTAIN_EVERY {
            maintain(sessions, peer)?;
            last_maintained = Instant::now();
        }
        let socks: Vec<&UdpSocket> = if sessions.is_empty() {
            raw.iter().collect()
        } else {
            sessions.iter().map(|s| &s.sock).collect()
        };
        let run_id = bg.run.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
        let r = data_phase(cfg, &socks, framing, threads, load, run_id, bg, own_peer)?;
        log(cfg.verbose, format_args!("  {}", one_line(&r)));
        // Let queues empty before the next step.
        std::thread::sleep(Duration::from_millis(200));
        Ok(r)
    };
    if !cfg.find_max {
        let r = step(cfg.load, sessions)?;
        steps.push(r);
        return Ok((steps, None));
    }
    // Upper bound: the given rate, else what a flood step manages to send.
    let (mut hi, rate_given) = match cfg.load {
        Load::Rate(r) => (r, true),
        Load::Flood => {
            let r = step(Load::Flood, sessions)?;
            let hi = r.send_pps.max(1.0) as u64;
            steps.push(r);
            (hi, false)
        }
    };
    let mut lo = 0u64;
    let mut best: Option<StepResult> = None;
    let mut failed_at = None;
    let mut generator_limited = false;
    let mut first = true;
    for _ in 0..cfg.max_steps {
        if sys::interrupted() {
            break;
        }
        let target = if first && rate_given {
            hi
        } else {
            lo + (hi - lo) / 2
        };
        first = false;
        if target == 0 || (hi - lo) as f64 <= hi as f64 * 0.02 {
            break;
        }
        let r = step(Load::Rate(target), sessions)?;
        let lossless = r.sent > 0 && r.loss_pct < LOSSLESS_PCT;
        if lossless && !matches!(&best, Some(b) if b.relayed_pps >= r.relayed_pps) {
            best = Some(r.clone());
        }
        if r.clean() {
            lo = target;
            if target == hi {
                steps.push(r);
                break;
            }
        } else {
            // Loss, or the generator could not reach the target (then the relay is not proven
            // at that rate, although what was sent may have been relayed without loss).
            generator_limited |= r.generator_limited;
            hi = target;
            if !lossless {
                failed_at = Some(failed_at.map_or(target, |f: u64| f.min(target)));
            }
        }
        steps.push(r);
    }
    let fm = FindMax {
        send_pps: best.as_ref().map_or(0, |b| b.send_pps as u64),
        relayed_pps: best.as_ref().map_or(0.0, |b| b.relayed_pps),
        mbit_s: best.as_ref().map_or(0.0, |b| b.mbit_s),
        best,
        failed_at_pps: failed_at,
        generator_limited,
    };
    Ok((steps, Some(fm)))
}

/// One line summary of a step (progress output).
pub fn one_line(r: &StepResult) -> String {
    let what = match r.target_pps {
        Some(t) => format!("paced {t}/s"),
        None => "flood".to_string(),
    };
    format!(
        "{what}: sent {:.0}/s, relayed {:.0} pkt/s ({:.1} Mbit/s), loss {:.3} %, rtt p50 {:.0} µs p99 {:.0} µs, cpu {:.0} %{}",
        r.send_pps,
        r.relayed_pps,
        r.mbit_s,
        r.loss_pct,
        r.rtt_p50_us,
        r.rtt_p99_us,
        r.generator_cpu_pct,
        if r.generator_limited { " (generator-limited)" } else { "" }
    )
}

pub(super) fn forbidden_hint(peer: SocketAddr) -> String {
    format!(
        "the server refused the echo peer {peer} (403 Forbidden). Servers refuse loopback and \
         private peers by default: start Icebreaker with `--allow-peer 127.0.0.0/8` (coturn: \
         `--allow-loopback-peers`), or give an echo peer the server may reach with --peer"
    )
}

/// Allocate + ChannelBind `clients` sessions (up to 16 in parallel); on any failure every
/// session made so far is released and the error explained.
pub(super) fn setup_sessions(
    server: SocketAddr,
    local_ip: IpAddr,
    creds: &Credentials,
    clients: usize,
    peer: SocketAddr,
    lifetime: u32,
    timeout: Duration,
) -> anyhow::Result<Vec<Session>> {
    let workers = clients.clamp(1, SETUP_PARALLEL);
    let mut results: Vec<Vec<Result<Session, SetupError>>> = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let n = clients / workers + usize::from(w < clients % workers);
                s.spawn(move || {
                    let mut out = Vec::with_capacity(n);
                    for _ in 0..n {
                        if sys::interrupted() {
                            break;
                        }
                        let r = allocate_fresh(server, local_ip, creds, lifetime, timeout);
                        let r = r.and_then(|mut sess| match sess.channel_bind(CHANNEL, peer) {
                            Ok(()) => Ok(sess),
                            Err(e) => {
                                let _ = sess.refresh(0);
                                Err(e)
                            }
                        });
                        let failed = r.is_err();
                        out.push(r);
                        if failed {
                            break;
                        }
                    }
                    out
                })
            })
            .collect();
        for h in handles {
            results.push(h.join().unwrap_or_default());
        }
    });
    let mut sessions = Vec::with_capacity(clients);
    let mut first_err: Option<SetupError> = None;
    for r in results.into_iter().flatten() {
        match r {
            Ok(s) => sessions.push(s),
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
    }
    if sys::interrupted() && first_err.is_none() {
        release(&mut sessions);
        bail!(
            "interrupted during setup; {} allocation(s) released",
            sessions.len()
        );
    }
    if let Some(e) = first_err {
        let n = sessions.len();
        release(&mut sessions);
        let msg = match &e {
            SetupError::Response { code: 403, .. } => forbidden_hint(peer),
            SetupError::Response { code: 437, .. } => format!(
                "{e}: a stale allocation on the same 5-tuple (an aborted earlier run?); wait for \
                 it to expire or restart the server"
            ),
            SetupError::Response { code: 486, .. } => format!(
                "{e}: the server's allocation quota is reached (stale allocations of an aborted \
                 run count too; fewer --clients or a higher per-user limit)"
            ),
            SetupError::Response { code: 401, .. } => {
                format!("{e}: wrong credentials (--user NAME:PASS or --secret)")
            }
            _ => e.to_string(),
        };
        bail!("setup failed after {n} client(s): {msg}");
    }
    Ok(sessions)
}

/// Allocate over a new socket. A 437 on Allocate means the server still holds an allocation
/// for that 5-tuple (a port the system reused from an earlier run whose allocation the server
/// has not forgotten yet): try again from another port, keeping the refused sockets open until
/// then so the system cannot hand out the same port again.
pub(super) fn allocate_fresh(
    server: SocketAddr,
    local_ip: IpAddr,
    creds: &Credentials,
    lifetime: u32,
    timeout: Duration,
) -> Result<Session, SetupError> {
    let mut refused = Vec::new();
    loop {
        let sock = setup::udp_socket(local_ip, Some(server)).map_err(SetupError::Io)?;
        let keep = sock.try_clone().map_err(SetupError::Io)?;
        match Session::allocate(sock, creds, lifetime, timeout) {
            Err(e) if e.code() == Some(437) && refused.len() < 4 => refused.push(keep),
            r => return r,
        }
    }
}

/// Refresh allocations and channel bindings (long searches outlive the permission's 300 s).
fn maintain(sessions: &mut [Session], peer: SocketAddr) -> anyhow::Result<()> {
    for s in sessions.iter_mut() {
        s.reset_socket()?;
        s.refresh(ALLOCATION_LIFETIME)
            .and_then(|_| s.channel_bind(CHANNEL, peer))
            .map_err(|e| anyhow!("refreshing allocation {}: {e}", s.relayed))?;
    }
    Ok(())
}

/// Release every allocation (Refresh with LIFETIME 0), in parallel. Returns (released, failed).
pub(super) fn release(sessions: &mut Vec<Session>) -> (usize, usize) {
    if sessions.is_empty() {
        return (0, 0);
    }
    let chunk = sessions.len().div_ceil(SETUP_PARALLEL);
    let mut ok = 0;
    let mut failed = 0;
    std::thread::scope(|s| {
        let handles: Vec<_> = sessions
            .chunks_mut(chunk)
            .map(|c| {
                s.spawn(move || {
                    let mut ok = 0usize;
                    let mut failed = 0usize;
                    for sess in c {
                        let r = sess
                            .reset_socket()
                            .map_err(SetupError::Io)
                            .and_then(|_| sess.refresh(0));
                        match r {
                            Ok(()) => ok += 1,
                            Err(_) => failed += 1,
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok((o, f)) => {
                    ok += o;
                    failed += f;
                }
                Err(_) => failed += 1,
            }
        }
    });
    sessions.clear();
    (ok, failed)
}

/// Per-thread counters of the data phase.
#[derive(Default)]
struct WorkerStats {
    sent: u64,
    send_failed: u64,
    skipped: u64,
    received: u64,
    stale: u64,
    bad: u64,
    hist: Histogram,
}

#[allow(clippy::too_many_arguments)]
fn data_phase(
    cfg: &TurnBench,
    socks: &[&UdpSocket],
    framing: Framing,
    threads: usize,
    load: Load,
    run_id: u32,
    bg: &Background,
    own_peer: bool,
) -> anyhow::Result<StepResult> {
    for s in socks {
        s.set_nonblocking(true)?;
    }
    let n = socks.len();
    let peer_before = bg.peer_rx.load(Ordering::SeqCst);
    let cpu_before = sys::process_cpu_time();
    let epoch = Instant::now();
    let start = epoch + Duration::from_millis(20);
    let end = start + cfg.duration;
    let drain_end = end + cfg.drain;
    let mut total = WorkerStats::default();
    let mut error: Option<anyhow::Error> = None;
    let server_pid = cfg.server_pid;
    let mut server_cpu = None;
    let mut server_rss = None;
    std::thread::scope(|s| {
        if let Some(pid) = server_pid {
            // Sample the server exactly over the send phase.
            let (cpu, rss) = (&mut server_cpu, &mut server_rss);
            s.spawn(move || {
                sleep_until(start);
                let c0 = sys::pid_cpu_time(pid);
                sleep_until(end);
                let c1 = sys::pid_cpu_time(pid);
                *rss = sys::pid_rss_kib(pid);
                if let (Some(a), Some(b)) = (c0, c1) {
                    *cpu = Some(
                        b.saturating_sub(a).as_secs_f64() * 100.0 / (end - start).as_secs_f64(),
                    );
                }
            });
        }
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<(u32, &UdpSocket)> = (t..n)
                    .step_by(threads)
                    .map(|i| (i as u32, socks[i]))
                    .collect();
                let rate = match load {
                    Load::Rate(r) => Some(r as f64 * mine.len() as f64 / n as f64),
                    Load::Flood => None,
                };
                let size = cfg.size;
                s.spawn(move || {
                    worker(
                        &mine, framing, size, rate, run_id, epoch, start, end, drain_end,
                    )
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(Ok(w)) => {
                    total.sent += w.sent;
                    total.send_failed += w.send_failed;
                    total.skipped += w.skipped;
                    total.received += w.received;
                    total.stale += w.stale;
                    total.bad += w.bad;
                    total.hist.merge(&w.hist);
                }
                Ok(Err(e)) => error = Some(e),
                Err(_) => error = Some(anyhow!("a generator thread panicked")),
            }
        }
    });
    if let Some(e) = error {
        return Err(e);
    }
    // The peer may still be echoing the last packets it got; they were counted on arrival.
    let peer_rx = bg.peer_rx.load(Ordering::SeqCst) - peer_before;
    let cpu = sys::process_cpu_time().saturating_sub(cpu_before);
    let wall = epoch.elapsed();
    let secs = cfg.duration.as_secs_f64();
    let peer_received = own_peer.then_some(peer_rx);
    let relayed = match peer_received {
        Some(p) => p + total.received,
        None => 2 * total.received,
    };
    let pct = |lost: u64, of: u64| {
        if of == 0 {
            0.0
        } else {
            lost as f64 * 100.0 / of as f64
        }
    };
    let send_pps = total.sent as f64 / secs;
    let relayed_pps = relayed as f64 / secs;
    let target_pps = match load {
        Load::Rate(r) => Some(r),
        Load::Flood => None,
    };
    Ok(StepResult {
        mode: if target_pps.is_some() {
            "paced"
        } else {
            "flood"
        },
        target_pps,
        duration_s: secs,
        sent: total.sent,
        send_failed: total.send_failed,
        skipped: total.skipped,
        send_pps,
        peer_received,
        received: total.received,
        stale: total.stale,
        bad: total.bad,
        relayed,
        relayed_pps,
        mbit_s: relayed_pps * cfg.size as f64 * 8.0 / 1e6,
        loss_pct: pct(total.sent.saturating_sub(total.received), total.sent),
        loss_to_peer_pct: peer_received.map(|p| pct(total.sent.saturating_sub(p), total.sent)),
        rtt_p50_us: total.hist.percentile(50.0) as f64 / 1000.0,
        rtt_p99_us: total.hist.percentile(99.0) as f64 / 1000.0,
        rtt_max_us: total.hist.max() as f64 / 1000.0,
        generator_cpu_pct: cpu.as_secs_f64() * 100.0 / wall.as_secs_f64().max(1e-9),
        generator_limited: target_pps.is_some_and(|t| send_pps < t as f64 * RATE_REACHED),
        server_cpu_pct: server_cpu,
        server_rss_kib: server_rss,
    })
}

pub(super) fn write_u64(b: &mut [u8], at: usize, v: u64) {
    if let Some(d) = b.get_mut(at..at + 8) {
        d.copy_from_slice(&v.to_be_bytes());
    }
}

pub(super) fn write_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(d) = b.get_mut(at..at + 4) {
        d.copy_from_slice(&v.to_be_bytes());
    }
}

pub(super) fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

pub(super) fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

struct Client<'a> {
    idx: u32,
    sock: &'a UdpSocket,
    seq: u64,
}

#[allow(clippy::too_many_arguments)]
fn worker(
    mine: &[(u32, &UdpSocket)],
    framing: Framing,
    size: usize,
    rate: Option<f64>,
    run_id: u32,
    epoch: Instant,
    start: Instant,
    end: Instant,
    drain_end: Instant,
) -> anyhow::Result<WorkerStats> {
    let mut st = WorkerStats::default();
    let n = mine.len();
    if n == 0 {
        return Ok(st);
    }
    let hdr = framing.header();
    let frame = hdr + size;
    let mut clients: Vec<Client<'_>> = mine
        .iter()
        .map(|&(idx, sock)| Client { idx, sock, seq: 0 })
        .collect();
    let mut ep = Epoll::new(64)?;
    for (k, c) in clients.iter().enumerate() {
        ep.add(c.sock.as_raw_fd(), k as u64)?;
    }
    let mut sb = Batch::new(SEND_BATCH, frame);
    for i in 0..sb.capacity() {
        let slot = sb.slot_mut(i);
        if framing == Framing::ChannelData {
            codec::write_channel_data_header(slot, CHANNEL, size)
                .map_err(|e| anyhow!("ChannelData header: {e}"))?;
        }
        write_u32(slot, hdr + 20, run_id);
        sb.set_len(i, frame);
    }
    // Room for a padded ChannelData frame or a datagram bigger than ours (counted as bad).
    let mut rb = Batch::new(RECV_BATCH, (frame + 64).max(2048));
    // Paced: the most a thread sends at once after falling behind (5 ms worth).
    let max_owed = rate.map(|r| ((r * 0.005) as u64).max(n as u64 * 2));
    let mut owed_total = 0u64; // packets due so far (sent + failed + skipped)
    let mut cursor = 0usize;
    sleep_until(start);
    loop {
        let now = Instant::now();
        if now >= end || sys::interrupted() {
            break;
        }
        match rate {
            Some(r) => {
                let due = ((now - start).as_secs_f64() * r) as u64;
                let mut owed = due.saturating_sub(owed_total);
                if let Some(m) = max_owed {
                    if owed > m {
                        st.skipped += owed - m;
                        owed_total += owed - m;
                        owed = m;
                    }
                }
                if owed > 0 {
                    owed_total += owed;
                    let per = owed / n as u64;
                    let rem = (owed % n as u64) as usize;
                    let ts = (Instant::now() - epoch).as_nanos() as u64;
                    for j in 0..n {
                        let k = (cursor + j) % n;
                        let count = per + u64::from(j < rem);
                        if count > 0 {
                            send_k(&mut sb, &mut clients[k], hdr, frame, count, ts, &mut st);
                        }
                    }
                    cursor = (cursor + rem) % n;
                }
            }
            None => {
                for c in clients.iter_mut() {
                    let ts = (Instant::now() - epoch).as_nanos() as u64;
                    send_k(&mut sb, c, hdr, frame, FLOOD_BATCH as u64, ts, &mut st);
                }
            }
        }
        let timeout = if rate.is_some() { 1 } else { 0 };
        let ready = ep.wait(timeout)?;
        for e in 0..ready {
            let k = ep.token(e) as usize;
            if let Some(c) = clients.get(k) {
                drain(&mut rb, c, framing, run_id, epoch, &mut st);
            }
        }
    }
    // Collect what is still in flight.
    loop {
        let now = Instant::now();
        if now >= drain_end || sys::interrupted() {
            break;
        }
        let ms = (drain_end - now).as_millis().clamp(1, 10) as i32;
        let ready = ep.wait(ms)?;
        for e in 0..ready {
            let k = ep.token(e) as usize;
            if let Some(c) = clients.get(k) {
                drain(&mut rb, c, framing, run_id, epoch, &mut st);
            }
        }
    }
    Ok(st)
}

fn sleep_until(t: Instant) {
    loop {
        let now = Instant::now();
        if now >= t || sys::interrupted() {
            return;
        }
        std::thread::sleep(t - now);
    }
}

fn send_k(
    sb: &mut Batch,
    c: &mut Client<'_>,
    hdr: usize,
    frame: usize,
    mut count: u64,
    ts: u64,
    st: &mut WorkerStats,
) {
    while count > 0 {
        let m = (count as usize).min(sb.capacity());
        for i in 0..m {
            let slot = sb.slot_mut(i);
            write_u64(slot, hdr, ts);
            write_u64(slot, hdr + 8, c.seq);
            write_u32(slot, hdr + 16, c.idx);
            c.seq += 1;
            sb.set_len(i, frame);
        }
        let (sent, failed) = sb.send(c.sock.as_raw_fd(), m, false);
        st.sent += sent as u64;
        st.send_failed += failed as u64;
        count -= m as u64;
    }
}

fn drain(
    rb: &mut Batch,
    c: &Client<'_>,
    framing: Framing,
    run_id: u32,
    epoch: Instant,
    st: &mut WorkerStats,
) {
    for _ in 0..8 {
        let got = match rb.recv(c.sock.as_raw_fd(), RECV_BATCH) {
            Ok(n) => n,
            // ICMP errors on a connected socket (server gone): nothing to count.
            Err(_) => return,
        };
        if got == 0 {
            return;
        }
        let now = (Instant::now() - epoch).as_nanos() as u64;
        for i in 0..got {
            let msg = rb.msg(i);
            let payload = match framing {
                Framing::Raw => msg,
                Framing::ChannelData => match ChannelData::parse(msg) {
                    Ok(cd) if cd.channel == CHANNEL => cd.data,
                    // STUN (e.g. a late response) or another channel.
                    _ => {
                        st.bad += 1;
                        continue;
                    }
                },
            };
            let (Some(ts), Some(idx), Some(run)) = (
                read_u64(payload, 0),
                read_u32(payload, 16),
                read_u32(payload, 20),
            ) else {
                st.bad += 1;
                continue;
            };
            if run != run_id {
                st.stale += 1;
                continue;
            }
            if idx != c.idx {
                st.bad += 1;
                continue;
            }
            st.received += 1;
            st.hist.record(now.saturating_sub(ts));
        }
        if got < RECV_BATCH {
            return;
        }
    }
}

fn reuseport_socket(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    s.bind(&addr.into())
        .with_context(|| format!("cannot bind UDP {addr}"))?;
    Ok(s.into())
}

/// Start the echo peer; returns its address.
pub(super) fn start_echo_peer(
    bg: &mut Background,
    ip: IpAddr,
    threads: usize,
    size: usize,
) -> anyhow::Result<SocketAddr> {
    let first = reuseport_socket(SocketAddr::new(ip, 0))?;
    let addr = first.local_addr()?;
    let mut socks = vec![first];
    for _ in 1..threads {
        socks.push(reuseport_socket(addr)?);
    }
    for sock in socks {
        let stop = bg.stop.clone();
        let run = bg.run.clone();
        let rx = bg.peer_rx.clone();
        let h = std::thread::Builder::new()
            .name("bench-echo".into())
            .spawn(move || {
                let mut b = Batch::new(sys::MAX_BATCH, (size + 64).max(2048));
                let fd = sock.as_raw_fd();
                while !stop.load(Ordering::Relaxed) {
                    let n = match b.recv_wait(fd, sys::MAX_BATCH) {
                        Ok(n) => n,
                        Err(_) => continue,
                    };
                    if n == 0 {
                        continue;
                    }
                    let current = run.load(Ordering::Relaxed);
                    let mine = (0..n)
                        .filter(|&i| read_u32(b.msg(i), 20) == Some(current))
                        .count();
                    rx.fetch_add(mine as u64, Ordering::Relaxed);
                    b.send(fd, n, true);
                }
            })?;
        bg.handles.push(h);
    }
    Ok(addr)
}

/// Start the bare forwarder; returns its client-facing address.
fn start_null_relay(
    bg: &mut Background,
    ip: IpAddr,
    peer: SocketAddr,
    clients: Vec<SocketAddr>,
    size: usize,
) -> anyhow::Result<SocketAddr> {
    let front = reuseport_socket(SocketAddr::new(ip, 0))?;
    let back = reuseport_socket(SocketAddr::new(ip, 0))?;
    back.connect(peer)?;
    let addr = front.local_addr()?;
    let front = Arc::new(front);
    let back = Arc::new(back);
    let slot = (size + 64).max(2048);
    // Up: client → peer.
    {
        let (front, back, stop) = (front.clone(), back.clone(), bg.stop.clone());
        bg.handles.push(
            std::thread::Builder::new()
                .name("bench-null-up".into())
                .spawn(move || {
                    let mut b = Batch::new(sys::MAX_BATCH, slot);
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(n) = b.recv_wait(front.as_raw_fd(), sys::MAX_BATCH) {
                            if n > 0 {
                                b.send(back.as_raw_fd(), n, false);
                            }
                        }
                    }
                })?,
        );
    }
    // Down: peer → the client named in the payload.
    {
        let stop = bg.stop.clone();
        bg.handles.push(
            std::thread::Builder::new()
                .name("bench-null-down".into())
                .spawn(move || {
                    let mut b = Batch::new(sys::MAX_BATCH, slot);
                    let mut out = Batch::new(sys::MAX_BATCH, slot);
                    while !stop.load(Ordering::Relaxed) {
                        let n = match b.recv_wait(back.as_raw_fd(), sys::MAX_BATCH) {
                            Ok(n) if n > 0 => n,
                            _ => continue,
                        };
                        let mut all = true;
                        for i in 0..n {
                            match read_u32(b.msg(i), 16).and_then(|k| clients.get(k as usize)) {
                                Some(&to) => b.set_addr(i, to),
                                None => all = false,
                            }
                        }
                        if all {
                            b.send(front.as_raw_fd(), n, true);
                            continue;
                        }
                        // Rare: drop datagrams that name no client.
                        let mut m = 0;
                        for i in 0..n {
                            if let Some(&to) =
                                read_u32(b.msg(i), 16).and_then(|k| clients.get(k as usize))
                            {
                                let len = b.msg(i).len();
                                out.slot_mut(m)[..len].copy_from_slice(b.msg(i));
                                out.set_len(m, len);
                                out.set_addr(m, to);
                                m += 1;
                            }
                        }
                        out.send(front.as_raw_fd(), m, true);
                    }
                })?,
        );
    }
    Ok(addr)
}
