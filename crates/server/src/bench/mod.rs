//! `icebreaker bench`: load generators for the TURN relay and STUN Binding, the null-relay
//! ceiling, signaling over WebSocket (see `docs/BENCHMARKS.md`, `bench/compare` and
//! `bench/compare-signal`), and the fault soak of both at once (`docs/SECURITY.md`,
//! `bench/soak`).
//!
//! The data paths run on plain OS threads with non-blocking std sockets, `epoll` and
//! `recvmmsg`/`sendmmsg` ([`sys`], the only module with `unsafe`); control transactions are
//! synchronous ([`setup`]). Everything is bounded in time, and every allocation is released at
//! the end (also after Ctrl-C / SIGTERM). The signaling generator ([`signal`]) runs on a small
//! multi-threaded tokio runtime instead (WebSocket over TCP).

pub mod hist;
pub mod setup;
pub mod sfu;
pub mod signal;
pub mod sip;
pub mod soak;
pub mod stun;
pub mod turn;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{ArgGroup, Args, Subcommand};

use crate::client::turn::Credentials;
pub use sfu::{format_sfu, run_sfu, SfuBench, SfuReport};
pub use signal::{
    format_signal, run_signal, SignalBench, SignalLoad, SignalProtocol, SignalReport,
};
pub use sip::{format_sip, run_sip, SipBench, SipReport};
pub use soak::{format_soak, run_soak, SoakBench, SoakReport};
pub use stun::{run_stun, StunBench, StunReport};
pub use turn::{run_turn, Load, StepResult, TurnBench, TurnReport};

/// `icebreaker bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    /// What to measure.
    pub command: BenchCommand,
}

/// The benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// TURN relay load: Allocate + ChannelBind per client, then ChannelData through an echo peer
    Turn(TurnArgs),
    /// STUN Binding requests/s, closed loop
    Stun(StunArgs),
    /// Signaling over WebSocket: N clients in rooms of K relaying messages (Icebreaker or socket.io)
    Signal(SignalArgs),
    /// Soak with faults: TURN allocations relaying and signaling clients in rooms for a long
    /// run, with random disconnects, resumes and re-allocations; fails on any lost allocation,
    /// lost or duplicated message, dead server or growing server RSS
    Soak(SoakArgs),
    /// SFU forwarding: synthetic str0m participants (real ICE, DTLS-SRTP) in SFU rooms, some
    /// publishing audio + video, all receiving; reports forwarded streams and packets per
    /// second per server core
    Sfu(SfuArgs),
    /// SIP gateway media bridge: concurrent calls through /sip (a str0m WebRTC caller per call)
    /// to a far end that answers and echoes RTP (sipp -rtp_echo); reports set-up time, loss,
    /// round trip, bridge packets per second and calls per server core
    Sip(SipArgs),
}

/// `icebreaker bench sip`.
#[derive(Args, Debug)]
pub struct SipArgs {
    /// The server's HTTP listener (/sip and /metrics), http://HOST:PORT
    #[arg(long, value_name = "URL")]
    pub http: String,
    /// Concurrent calls (1..=5000)
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub calls: usize,
    /// Seconds of measurement after every call connected (1..=3600)
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub duration: u64,
    /// The codec each caller offers: pcmu or pcma
    #[arg(long, default_value = "pcmu", value_name = "CODEC")]
    pub codec: String,
    /// New calls per second while setting up
    #[arg(long, default_value_t = 50.0, value_name = "CPS")]
    pub rate: f64,
    /// The request URI of the INVITEs
    #[arg(long, default_value = "sip:echo@example.org", value_name = "URI")]
    pub to: String,
    /// PID of the server on this machine: its CPU time gives the per-core figures
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// PID of the far end (sipp) on this machine, for its CPU time
    #[arg(long, value_name = "PID")]
    pub far_pid: Option<u32>,
    /// Seconds a call may take to be answered and connected, and all calls after the last
    /// INVITE
    #[arg(long, default_value_t = 20, value_name = "SECS")]
    pub connect_timeout: u64,
    /// --http is a Janus server's WebSocket API (janus.plugin.sip), the reference bridge, instead
    /// of Icebreaker's /sip; --to must then name the far end (sip:echo@HOST:PORT)
    #[arg(long)]
    pub janus: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// `icebreaker bench sfu`.
#[derive(Args, Debug)]
pub struct SfuArgs {
    /// The server's HTTP listener, http://HOST:PORT
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// Rooms
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub rooms: usize,
    /// Publishing members per room (audio + video each)
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub publishers: usize,
    /// Receive-only members per room
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub subscribers: usize,
    /// Seconds of measurement after everyone connected (1..=3600)
    #[arg(long, default_value_t = 20, value_name = "SECS")]
    pub duration: u64,
    /// Video bitrate per publisher, kbit/s
    #[arg(long, default_value_t = 500, value_name = "KBPS")]
    pub video_kbps: u32,
    /// Video frames per second
    #[arg(long, default_value_t = 30, value_name = "FPS")]
    pub fps: u32,
    /// PID of the server on this machine: its CPU time gives the per-core figures
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// `icebreaker bench soak`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("creds").args(["user", "secret"])))]
pub struct SoakArgs {
    /// TURN server HOST:PORT (UDP)
    #[arg(long, value_name = "ADDR")]
    pub server: Option<String>,
    /// The server's HTTP listener for signaling, http://HOST:PORT
    #[arg(long, value_name = "URL")]
    pub http: Option<String>,
    /// Static TURN credentials NAME:PASS
    #[arg(long, value_name = "NAME:PASS")]
    pub user: Option<String>,
    /// TURN REST shared secret
    #[arg(
        long,
        value_name = "S",
        env = "ICEBREAKER_BENCH_SECRET",
        hide_env_values = true
    )]
    pub secret: Option<String>,
    /// TURN allocations held and relaying (0: signaling only)
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub allocations: usize,
    /// Signaling clients, a multiple of --room-size (0: TURN only)
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub clients: usize,
    /// Members per signaling room
    #[arg(long, default_value_t = 5, value_name = "K")]
    pub room_size: usize,
    /// Seconds of load (1..=86400)
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub duration: u64,
    /// ChannelData packets per second per allocation
    #[arg(long, default_value_t = 10.0, value_name = "PPS")]
    pub pkt_rate: f64,
    /// TURN payload bytes per packet (28..=1200)
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    pub size: usize,
    /// Application messages per second per signaling client (each followed by a ping)
    #[arg(long, default_value_t = 1.0, value_name = "MSGS")]
    pub msg_rate: f64,
    /// Padding bytes in each signaling message
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    pub msg_size: usize,
    /// Random faults per allocation and per signaling client per minute (Poisson): TURN pause,
    /// re-allocate or abandon; signaling connection cut by FIN, RST or abandoned open, then
    /// resumed. 0: none
    #[arg(long, default_value_t = 1.0, value_name = "PER_MIN")]
    pub disconnect_rate: f64,
    /// Longest time offline after a signaling fault, ms (stays below half the server's grace)
    #[arg(long, default_value_t = 3000, value_name = "MS")]
    pub max_offline_ms: u64,
    /// Allocation LIFETIME requested, seconds (refreshed at half of it, at most every 120 s)
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub lifetime: u32,
    /// An allocation with no echo for this many seconds while sending is lost
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub lost_after: f64,
    /// Fail when the TURN round-trip loss exceeds this (percent)
    #[arg(long, default_value_t = 1.0, value_name = "PCT")]
    pub max_loss_pct: f64,
    /// PID of the server on this machine: its RSS is sampled and judged, its death noticed
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Seconds between RSS samples [default: load / 60, 1..=5]
    #[arg(long, value_name = "SECS")]
    pub rss_every: Option<f64>,
    /// Seconds of warm-up before the RSS baseline [default: min(120, load / 4)]
    #[arg(long, value_name = "SECS")]
    pub warmup: Option<u64>,
    /// Seconds between progress rows [default: load / 10, 5..=60]
    #[arg(long, value_name = "SECS")]
    pub report_every: Option<u64>,
    /// Longest wait for signaling messages under way after the load, seconds
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub drain: u64,
    /// Seed of the fault schedule [default: random, printed]
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// TURN generator threads
    #[arg(long, default_value_t = 2, value_name = "T")]
    pub threads: usize,
    /// Signaling client runtime threads
    #[arg(long, default_value_t = 2, value_name = "T")]
    pub signal_threads: usize,
    /// Room name prefix
    #[arg(long, default_value = "soak-", value_name = "P")]
    pub room_prefix: String,
    /// Print the report as JSON on stdout (progress goes to stderr)
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to FILE
    #[arg(long, value_name = "FILE")]
    pub json_file: Option<std::path::PathBuf>,
}

/// `icebreaker bench signal`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("load").args(["rate", "max"])))]
pub struct SignalArgs {
    /// The server's HTTP listener, http://HOST:PORT
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// Wire protocol: Icebreaker's /ws, or socket.io v4 with the codelab events
    #[arg(long, value_enum, default_value_t = SignalProtocol::Icebreaker)]
    pub protocol: SignalProtocol,
    /// Number of WebSocket clients (a multiple of --room-size)
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub clients: usize,
    /// Members per room (rooms are <prefix>0, <prefix>1, ...); socket.io: 2
    #[arg(long, default_value_t = 2, value_name = "K")]
    pub room_size: usize,
    /// Paced load: messages/s sent by all clients together
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<u64>,
    /// Send as fast as the server delivers, --in-flight messages under way per room
    #[arg(long)]
    pub max: bool,
    /// With --max: messages under way per room
    #[arg(long, default_value_t = 16, value_name = "F")]
    pub in_flight: usize,
    /// Seconds of load; 0: only connect, measure idle memory, close
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub duration: u64,
    /// Bytes of JSON payload per message (like an ICE candidate), 128..=16384
    #[arg(long, default_value_t = 210, value_name = "BYTES")]
    pub size: usize,
    /// Generator threads (tokio workers) [default: number of cores]
    #[arg(long, value_name = "T")]
    pub threads: Option<usize>,
    /// Room name prefix
    #[arg(long, default_value = "room-", value_name = "P")]
    pub room_prefix: String,
    /// WebSocket handshakes + joins under way at a time
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub connect_parallel: usize,
    /// Milliseconds between the last join and the idle memory sample
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub settle_ms: u64,
    /// Longest wait in milliseconds for messages under way after the load
    #[arg(long, default_value_t = 3000, value_name = "MS")]
    pub drain_ms: u64,
    /// PID of the server on this machine: the report includes its CPU during the load and its
    /// RSS (baseline, idle with all clients joined, end)
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Print the report as JSON on stdout (progress goes to stderr)
    #[arg(long)]
    pub json: bool,
    /// Another server (a node of the same cluster), repeatable: the members of each room are
    /// spread over --server and these (client i → server i mod n)
    #[arg(long, value_name = "URL")]
    pub also: Vec<String>,
}

/// `icebreaker bench turn`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("load").args(["rate", "flood"])))]
#[command(group(ArgGroup::new("creds").args(["user", "secret"])))]
pub struct TurnArgs {
    /// TURN server HOST:PORT (UDP)
    #[arg(long, value_name = "ADDR", required_unless_present = "null_relay")]
    pub server: Option<String>,
    /// Static credentials NAME:PASS
    #[arg(long, value_name = "NAME:PASS")]
    pub user: Option<String>,
    /// TURN REST shared secret (credentials are derived from it)
    #[arg(
        long,
        value_name = "S",
        env = "ICEBREAKER_BENCH_SECRET",
        hide_env_values = true
    )]
    pub secret: Option<String>,
    /// Number of clients (one allocation and one UDP socket each)
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub clients: usize,
    /// Payload bytes per packet (ChannelData adds 4), 24..=8192
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    pub size: usize,
    /// Paced load: packets/s sent by all clients together (relayed packets/s are about twice
    /// that: each packet comes back through the relay). With --find-max: the upper bound
    #[arg(long, value_name = "PPS")]
    pub rate: Option<u64>,
    /// Send as fast as possible
    #[arg(long)]
    pub flood: bool,
    /// Seconds of sending (per step with --find-max)
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub duration: u64,
    /// An external UDP echo peer instead of the built-in one (on the local address towards the
    /// server)
    #[arg(long, value_name = "ADDR")]
    pub peer: Option<SocketAddr>,
    /// Generator threads [default: number of cores]
    #[arg(long, value_name = "T")]
    pub threads: Option<usize>,
    /// Echo peer threads (SO_REUSEPORT sockets)
    #[arg(long, default_value_t = 1, value_name = "T")]
    pub peer_threads: usize,
    /// Binary search for the highest paced rate with < 0.1 % loss (starts with a flood step
    /// unless --rate gives the upper bound)
    #[arg(long)]
    pub find_max: bool,
    /// Maximum paced steps of --find-max
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub max_steps: usize,
    /// Measure the null-relay ceiling: the tool runs a bare UDP forwarder (2 threads,
    /// recvmmsg/sendmmsg, no TURN logic) and sends the same traffic through it
    #[arg(long)]
    pub null_relay: bool,
    /// Milliseconds to keep receiving after the last packet
    #[arg(long, default_value_t = 300, value_name = "MS")]
    pub drain_ms: u64,
    /// Print the report as JSON on stdout (progress goes to stderr)
    #[arg(long)]
    pub json: bool,
    /// PID of a server on this machine: each step reports its CPU (/proc/PID/stat) and RSS
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
}

/// `icebreaker bench stun`.
#[derive(Args, Debug)]
pub struct StunArgs {
    /// STUN server HOST:PORT (UDP)
    #[arg(long, value_name = "ADDR")]
    pub server: String,
    /// Seconds of sending
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub duration: u64,
    /// Requests in flight per thread
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub window: usize,
    /// Generator threads [default: number of cores]
    #[arg(long, value_name = "T")]
    pub threads: Option<usize>,
    /// UDP sockets per thread
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub sockets: usize,
    /// Milliseconds after which an unanswered request counts as a timeout
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub timeout_ms: u64,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// PID of a server on this machine: the report includes its CPU and RSS
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
}

/// Run `icebreaker bench ...` from the command line.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Err(e) = crate::sys::install_interrupt_handler() {
        eprintln!(
            "warning: cannot handle Ctrl-C ({e}); an interrupted run leaves allocations behind"
        );
    }
    match args.command {
        BenchCommand::Turn(a) => {
            let cfg = turn_config(&a)?;
            let report = run_turn(&cfg)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", format_turn(&report));
            }
            Ok(if report.interrupted {
                ExitCode::from(130)
            } else {
                ExitCode::SUCCESS
            })
        }
        BenchCommand::Stun(a) => {
            let server = resolve(&a.server)?;
            let cfg = StunBench {
                server,
                duration: secs(a.duration)?,
                window: a.window,
                threads: a.threads.unwrap_or_else(turn::default_threads),
                sockets: a.sockets,
                timeout: Duration::from_millis(a.timeout_ms.max(1)),
                server_pid: a.server_pid,
            };
            let report = run_stun(&cfg)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", format_stun(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Signal(a) => {
            let cfg = signal_config(&a)?;
            let report = run_signal(&cfg)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", format_signal(&report));
            }
            Ok(if report.interrupted {
                ExitCode::from(130)
            } else if report.connected == 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        BenchCommand::Sfu(a) => {
            if !(1..=3600).contains(&a.duration) {
                bail!("--duration must be 1..=3600 seconds");
            }
            if a.rooms == 0 || a.publishers == 0 || a.publishers + a.subscribers < 2 {
                bail!("give at least one room, one publisher and two members per room");
            }
            if a.publishers + a.subscribers > 50 {
                bail!("at most 50 members per room (the default room capacity)");
            }
            let (http, _) = signal::parse_server(&a.server)?;
            let cfg = SfuBench {
                http,
                rooms: a.rooms,
                publishers: a.publishers,
                subscribers: a.subscribers,
                duration: Duration::from_secs(a.duration),
                video_kbps: a.video_kbps.clamp(10, 20_000),
                fps: a.fps.clamp(1, 60),
                server_pid: a.server_pid,
                ..SfuBench::default()
            };
            let report = run_sfu(&cfg)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", format_sfu(&report));
            }
            Ok(if report.connected == report.members {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        BenchCommand::Sip(a) => {
            if !(1..=3600).contains(&a.duration) {
                bail!("--duration must be 1..=3600 seconds");
            }
            if !(1..=5000).contains(&a.calls) {
                bail!("--calls must be 1..=5000");
            }
            if !(a.rate.is_finite() && a.rate > 0.0) {
                bail!("--rate must be a positive number");
            }
            let codec = match a.codec.to_ascii_lowercase().as_str() {
                "pcmu" => sip::G711::Pcmu,
                "pcma" => sip::G711::Pcma,
                other => bail!("--codec must be pcmu or pcma, not {other:?}"),
            };
            let (http, _) = signal::parse_server(&a.http)?;
            let cfg = SipBench {
                http,
                calls: a.calls,
                duration: Duration::from_secs(a.duration),
                codec,
                rate: a.rate,
                target: a.to.clone(),
                server_pid: a.server_pid,
                far_pid: a.far_pid,
                janus: a.janus,
                connect_timeout: Duration::from_secs(a.connect_timeout.clamp(1, 600)),
            };
            let report = run_sip(&cfg)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", format_sip(&report));
            }
            Ok(if report.interrupted {
                ExitCode::from(130)
            } else if report.connected == report.calls {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        BenchCommand::Soak(a) => {
            let cfg = soak_config(&a)?;
            let report = run_soak(&cfg)?;
            if let Some(f) = &a.json_file {
                std::fs::write(f, serde_json::to_string_pretty(&report)?)
                    .with_context(|| format!("cannot write {}", f.display()))?;
            }
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", format_soak(&report));
            }
            Ok(if report.interrupted {
                ExitCode::from(130)
            } else if report.pass {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// Build the library configuration of `bench soak` from the command line.
pub fn soak_config(a: &SoakArgs) -> anyhow::Result<SoakBench> {
    let credentials = match (&a.user, &a.secret) {
        (Some(u), _) => Some(long_term(u)?),
        (None, Some(s)) if !s.is_empty() => Some(Credentials::Rest {
            secret: s.clone(),
            user: "soak".into(),
            ttl: Duration::from_secs(48 * 3600),
        }),
        _ => None,
    };
    let server = match &a.server {
        Some(s) if a.allocations > 0 => Some(resolve(s)?),
        _ => None,
    };
    let finite = |v: f64, what: &str| {
        if v.is_finite() {
            Ok(v)
        } else {
            Err(anyhow::anyhow!("{what} must be a number"))
        }
    };
    let lost_after = finite(a.lost_after, "--lost-after")?;
    let rss_every = a
        .rss_every
        .map(|v| finite(v, "--rss-every"))
        .transpose()?
        .map(|v| Duration::from_secs_f64(v.clamp(0.2, 3600.0)));
    let seed = a.seed.unwrap_or_else(rand::random);
    Ok(SoakBench {
        server,
        http: a.http.clone().filter(|_| a.clients > 0),
        credentials,
        allocations: a.allocations,
        clients: a.clients,
        room_size: a.room_size,
        duration: Duration::from_secs(a.duration),
        pkt_rate: finite(a.pkt_rate, "--pkt-rate")?,
        size: a.size,
        msg_rate: finite(a.msg_rate, "--msg-rate")?,
        msg_pad: a.msg_size,
        disconnect_rate: finite(a.disconnect_rate, "--disconnect-rate")?,
        max_offline: Duration::from_millis(a.max_offline_ms.min(3_600_000)),
        lifetime: a.lifetime,
        lost_after: Duration::from_secs_f64(lost_after.clamp(0.0, 3600.0)),
        max_loss_pct: finite(a.max_loss_pct, "--max-loss-pct")?,
        server_pid: a.server_pid,
        rss_every,
        warmup: a.warmup.map(|w| Duration::from_secs(w.min(86_400))),
        report_every: a
            .report_every
            .map(|r| Duration::from_secs(r.clamp(1, 86_400))),
        drain: Duration::from_secs(a.drain.min(3600)),
        seed,
        threads: a.threads.clamp(1, 64),
        signal_threads: a.signal_threads.clamp(1, 16),
        room_prefix: a.room_prefix.clone(),
        verbose: true,
    })
}

fn long_term(u: &str) -> anyhow::Result<Credentials> {
    let (name, pass) = u
        .split_once(':')
        .filter(|(n, _)| !n.is_empty())
        .context("--user must be NAME:PASS")?;
    Ok(Credentials::LongTerm {
        username: name.to_owned(),
        password: pass.to_owned(),
    })
}

/// Build the library configuration of `bench signal` from the command line.
pub fn signal_config(a: &SignalArgs) -> anyhow::Result<SignalBench> {
    let load = match (a.rate, a.max) {
        (Some(r), false) => SignalLoad::Rate(r),
        (None, true) => SignalLoad::Max {
            in_flight: a.in_flight,
        },
        (None, false) if a.duration == 0 => SignalLoad::Rate(1),
        _ => bail!("give --rate MSGS_PER_SEC or --max (or --duration 0 for idle connections)"),
    };
    if a.duration > 3600 {
        bail!("--duration must be 0..=3600 seconds");
    }
    Ok(SignalBench {
        server: a.server.clone(),
        protocol: a.protocol,
        clients: a.clients,
        room_size: a.room_size,
        room_prefix: a.room_prefix.clone(),
        load,
        duration: Duration::from_secs(a.duration),
        size: a.size,
        threads: a.threads.unwrap_or_else(turn::default_threads).max(1),
        connect_parallel: a.connect_parallel.clamp(1, 1024),
        connect_timeout: Duration::from_secs(10),
        settle: Duration::from_millis(a.settle_ms.min(60_000)),
        drain: Duration::from_millis(a.drain_ms.min(60_000)),
        verbose: true,
        server_pid: a.server_pid,
        also: a.also.clone(),
    })
}

fn secs(s: u64) -> anyhow::Result<Duration> {
    if s == 0 || s > 3600 {
        bail!("--duration must be 1..=3600 seconds");
    }
    Ok(Duration::from_secs(s))
}

fn resolve(s: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let (host, port) = crate::client::split_host_port(s, crate::client::DEFAULT_PORT)?;
    (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host:?}"))?
        .next()
        .with_context(|| format!("{host:?} did not resolve to any address"))
}

/// Build the library configuration from the command line.
pub fn turn_config(a: &TurnArgs) -> anyhow::Result<TurnBench> {
    let credentials = match (&a.user, &a.secret) {
        (Some(u), _) => Some(long_term(u)?),
        (None, Some(s)) if !s.is_empty() => Some(Credentials::Rest {
            secret: s.clone(),
            user: "bench".into(),
            ttl: Duration::from_secs(24 * 3600),
        }),
        _ if a.null_relay => None,
        _ => bail!("credentials are required: --user NAME:PASS or --secret S"),
    };
    let load = match (a.rate, a.flood, a.find_max) {
        (Some(r), _, _) => Load::Rate(r),
        (None, true, _) | (None, false, true) => Load::Flood,
        (None, false, false) => bail!("give --rate PPS or --flood (or --find-max)"),
    };
    let server = match (&a.server, a.null_relay) {
        (_, true) => None,
        (Some(s), false) => Some(resolve(s)?),
        (None, false) => bail!("--server is required (or --null-relay)"),
    };
    Ok(TurnBench {
        server,
        credentials,
        clients: a.clients,
        size: a.size,
        load,
        duration: secs(a.duration)?,
        peer: a.peer,
        threads: a.threads.unwrap_or_else(turn::default_threads).max(1),
        peer_threads: a.peer_threads.clamp(1, 64),
        find_max: a.find_max,
        max_steps: a.max_steps,
        null_relay: a.null_relay,
        drain: Duration::from_millis(a.drain_ms.min(10_000)),
        setup_timeout: Duration::from_secs(5),
        verbose: true,
        server_pid: a.server_pid,
    })
}

fn opt_pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.3} %"))
}

/// Human-readable report of `bench turn`.
pub fn format_turn(r: &TurnReport) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let target = match r.server {
        Some(s) => format!("TURN server {s}"),
        None => "null relay (bare UDP forwarder, no TURN)".to_string(),
    };
    let _ = writeln!(
        o,
        "bench turn: {target}, {} clients, {}-byte payload, {} generator threads, echo peer {}",
        r.clients, r.size, r.threads, r.peer
    );
    let _ = writeln!(
        o,
        "| step | target pkt/s | sent pkt/s | relayed pkt/s | Mbit/s | loss % | to peer % | RTT p50 µs | RTT p99 µs | gen CPU % | server CPU % |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, s) in r.steps.iter().enumerate() {
        let _ = writeln!(
            o,
            "| {} | {} | {:.0}{} | {:.0} | {:.1} | {:.3} | {} | {:.0} | {:.0} | {:.0} | {} |",
            i + 1,
            s.target_pps
                .map_or_else(|| "flood".to_string(), |t| t.to_string()),
            s.send_pps,
            if s.generator_limited {
                " (gen-limited)"
            } else {
                ""
            },
            s.relayed_pps,
            s.mbit_s,
            s.loss_pct,
            opt_pct(s.loss_to_peer_pct),
            s.rtt_p50_us,
            s.rtt_p99_us,
            s.generator_cpu_pct,
            s.server_cpu_pct
                .map_or_else(|| "n/a".to_string(), |c| format!("{c:.0}"))
        );
    }
    if let Some(f) = &r.find_max {
        if f.send_pps > 0 {
            let _ = writeln!(
                o,
                "highest lossless paced rate (< {} % loss): {} pkt/s sent = {:.0} relayed pkt/s, {:.1} Mbit/s",
                turn::LOSSLESS_PCT,
                f.send_pps,
                f.relayed_pps,
                f.mbit_s
            );
        } else {
            let _ = writeln!(o, "no lossless paced rate found");
        }
        if f.generator_limited {
            let _ = writeln!(
                o,
                "note: at least one step failed because the generator could not send at the target rate"
            );
        }
    }
    if r.server.is_some() {
        let _ = writeln!(
            o,
            "allocations released: {}{}",
            r.released,
            if r.release_failed > 0 {
                format!(", {} FAILED to release", r.release_failed)
            } else {
                String::new()
            }
        );
    }
    if r.interrupted {
        let _ = writeln!(o, "interrupted");
    }
    o
}

/// Human-readable report of `bench stun`.
pub fn format_stun(r: &StunReport) -> String {
    format!(
        "bench stun: {} for {:.0} s, {} threads × {} in flight\n\
         responses   {} ({:.0}/s)\n\
         timeouts    {}\n\
         errors      {}\n\
         RTT         p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs\n\
         generator   {:.0} % CPU\n\
         server      {} % CPU\n",
        r.server,
        r.duration_s,
        r.threads,
        r.window,
        r.responses,
        r.responses_per_s,
        r.timeouts,
        r.errors,
        r.rtt_p50_us,
        r.rtt_p99_us,
        r.rtt_max_us,
        r.generator_cpu_pct,
        r.server_cpu_pct
            .map_or_else(|| "n/a".to_string(), |c| format!("{c:.0}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: BenchCommand,
    }

    fn turn(args: &[&str]) -> anyhow::Result<TurnBench> {
        let mut v = vec!["bench", "turn"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v)?.command {
            BenchCommand::Turn(a) => turn_config(&a),
            _ => bail!("not turn"),
        }
    }

    #[test]
    fn turn_arguments() {
        let c = turn(&[
            "--server",
            "127.0.0.1:3478",
            "--user",
            "alice:pw:x",
            "--rate",
            "5000",
            "--clients",
            "7",
            "--size",
            "1000",
            "--duration",
            "3",
            "--threads",
            "3",
        ])
        .expect("parses");
        assert_eq!(c.load, Load::Rate(5000));
        assert_eq!((c.clients, c.size, c.threads), (7, 1000, 3));
        assert_eq!(c.duration, Duration::from_secs(3));
        match c.credentials {
            Some(Credentials::LongTerm { username, password }) => {
                assert_eq!((username.as_str(), password.as_str()), ("alice", "pw:x"));
            }
            other => panic!("credentials {other:?}"),
        }
        let c = turn(&["--server", "127.0.0.1", "--secret", "s", "--find-max"]).expect("parses");
        assert_eq!(c.load, Load::Flood);
        assert!(c.find_max);
        assert!(matches!(c.credentials, Some(Credentials::Rest { .. })));
        let c = turn(&["--null-relay", "--flood"]).expect("parses");
        assert!(c.null_relay && c.server.is_none());
        // Mistakes.
        assert!(turn(&["--server", "127.0.0.1", "--user", "a:b"]).is_err()); // no load
        assert!(turn(&["--server", "127.0.0.1", "--rate", "1"]).is_err()); // no credentials
        assert!(turn(&[
            "--server",
            "127.0.0.1",
            "--user",
            "a:b",
            "--rate",
            "1",
            "--flood"
        ])
        .is_err());
        assert!(turn(&["--user", "a:b", "--rate", "1"]).is_err()); // no server
        assert!(turn(&["--server", "127.0.0.1", "--user", "nopass", "--rate", "1"]).is_err());
        assert!(turn(&["--null-relay", "--rate", "1", "--duration", "0"]).is_err());
    }

    fn soak(args: &[&str]) -> anyhow::Result<SoakBench> {
        let mut v = vec!["bench", "soak"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v)?.command {
            BenchCommand::Soak(a) => soak_config(&a),
            _ => bail!("not soak"),
        }
    }

    #[test]
    fn soak_arguments() {
        let c = soak(&[
            "--server",
            "127.0.0.1:3478",
            "--http",
            "http://127.0.0.1:8080",
            "--user",
            "alice:pw",
            "--duration",
            "45",
            "--allocations",
            "100",
            "--clients",
            "50",
            "--disconnect-rate",
            "2.5",
            "--seed",
            "42",
            "--server-pid",
            "7",
        ])
        .expect("parses");
        assert_eq!((c.allocations, c.clients, c.room_size), (100, 50, 5));
        assert_eq!(c.duration, Duration::from_secs(45));
        assert_eq!(
            (c.disconnect_rate, c.seed, c.server_pid),
            (2.5, 42, Some(7))
        );
        assert!(matches!(c.credentials, Some(Credentials::LongTerm { .. })));
        // Defaults: the soak.
        let d = soak(&["--server", "127.0.0.1", "--secret", "s", "--http", "x:1"]).expect("parses");
        assert_eq!((d.allocations, d.clients), (1000, 500));
        assert_eq!(d.duration, Duration::from_secs(600));
        assert!(matches!(d.credentials, Some(Credentials::Rest { .. })));
        // Signaling only: no TURN server needed.
        let s = soak(&["--http", "x:1", "--allocations", "0"]).expect("parses");
        assert!(s.server.is_none() && s.credentials.is_none());
        // Mistakes.
        assert!(soak(&["--server", "127.0.0.1", "--user", "a:b", "--secret", "s"]).is_err());
        assert!(soak(&["--server", "127.0.0.1", "--user", "nopass"]).is_err());
        assert!(soak(&["--pkt-rate", "NaN"]).is_err());
    }

    fn signal(args: &[&str]) -> anyhow::Result<SignalBench> {
        let mut v = vec!["bench", "signal"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v)?.command {
            BenchCommand::Signal(a) => signal_config(&a),
            _ => bail!("not signal"),
        }
    }

    #[test]
    fn signal_arguments() {
        let c = signal(&[
            "--server",
            "http://127.0.0.1:8080",
            "--clients",
            "200",
            "--room-size",
            "4",
            "--rate",
            "5000",
            "--duration",
            "3",
            "--server-pid",
            "42",
        ])
        .expect("parses");
        assert_eq!(c.load, SignalLoad::Rate(5000));
        assert_eq!((c.clients, c.room_size, c.server_pid), (200, 4, Some(42)));
        assert_eq!(c.protocol, SignalProtocol::Icebreaker);
        let c = signal(&[
            "--server",
            "http://127.0.0.1:8080",
            "--max",
            "--in-flight",
            "8",
            "--protocol",
            "socketio",
        ])
        .expect("parses");
        assert_eq!(c.load, SignalLoad::Max { in_flight: 8 });
        assert_eq!(c.protocol, SignalProtocol::Socketio);
        let c = signal(&["--server", "http://127.0.0.1:1", "--duration", "0"]).expect("idle");
        assert!(c.duration.is_zero());
        // Mistakes.
        assert!(signal(&["--server", "http://127.0.0.1:1"]).is_err()); // no load
        assert!(signal(&["--server", "http://127.0.0.1:1", "--rate", "1", "--max"]).is_err());
        assert!(signal(&["--rate", "1"]).is_err()); // no server
        assert!(signal(&["--server", "x", "--max", "--protocol", "mqtt"]).is_err());
    }
}
