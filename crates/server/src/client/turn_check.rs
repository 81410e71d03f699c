//! `icebreaker turn-check HOST[:PORT]`: an end-to-end check of a TURN server. Walks
//! Allocate → CreatePermission → Send indications → ChannelBind → ChannelData → Refresh →
//! delete, relaying data to a UDP echo peer, and prints one `[ok]` / `[FAIL]` line per step.
//!
//! The echo peer is `--peer ADDR` if given, else a UDP echo socket of our own on the local IP used
//! towards the server. Secure servers refuse relaying to loopback and private addresses (403 to
//! CreatePermission), so when our own echo socket is refused, the check falls back to a relayed
//! echo: a second allocation on the same server (same transport and credentials) that echoes
//! whatever reaches its relayed address; servers allow relaying between their own relay addresses.
//! `--no-relay-fallback` turns the fallback off.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use icebreaker_stun::Family;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::turn::{
    AllocateOptions, ClientOptions, Credentials, Incoming, TlsOptions, Transport, TurnClient,
    TurnError,
};
use super::{fmt_ms, parse_secs, resolve_server, DEFAULT_PORT, DEFAULT_TLS_PORT};

/// Channel number used for the ChannelBind step.
pub const CHECK_CHANNEL: u16 = 0x4000;

/// Check a TURN server end to end: allocate, permit, relay data to an echo peer, refresh, delete.
#[derive(clap::Args, Debug, Clone)]
#[command(group(
    clap::ArgGroup::new("credentials")
        .required(true)
        .args(["user", "secret"])
))]
pub struct TurnCheckArgs {
    /// TURN server as HOST[:PORT] (default port 3478, 5349 with --tls)
    pub server: String,
    /// Static long-term credentials, NAME:PASS (split at the last ':')
    #[arg(long, value_name = "NAME:PASS")]
    pub user: Option<String>,
    /// Shared secret for TURN REST credentials (coturn's static-auth-secret)
    #[arg(long, value_name = "SECRET")]
    pub secret: Option<String>,
    /// With --secret: the user part of the REST username `<expiry>:<user>`
    #[arg(long, value_name = "USER", default_value = "turn-check")]
    pub rest_user: String,
    /// With --secret: validity of the REST credentials in seconds
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub ttl: u64,
    /// UDP echo server to relay to (default: an echo socket of our own on the local IP used
    /// towards the server)
    #[arg(long, value_name = "ADDR")]
    pub peer: Option<SocketAddr>,
    /// Without --peer: when the server refuses relaying to our own echo socket (403, as secure
    /// servers do for loopback and private addresses), fail instead of using a second allocation
    /// on the same server as the echo peer (relay to relay)
    #[arg(long, conflicts_with = "peer")]
    pub no_relay_fallback: bool,
    /// Talk to the server over TCP
    #[arg(long, conflicts_with = "tls")]
    pub tcp: bool,
    /// Talk to the server over TLS
    #[arg(long)]
    pub tls: bool,
    /// With --tls: accept any server certificate (testing only)
    #[arg(long, requires = "tls", conflicts_with = "ca")]
    pub insecure: bool,
    /// With --tls: trust the CA certificate(s) in this PEM file instead of the system bundle
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub ca: Option<PathBuf>,
    /// Use this realm instead of the one the server announces
    #[arg(long)]
    pub realm: Option<String>,
    /// Number of messages relayed in each data step
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub count: u32,
    /// Time limit for each request, in seconds
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub timeout: Duration,
}

impl TurnCheckArgs {
    /// Arguments for `server` with static credentials and every other option at its default.
    pub fn with_user(server: impl Into<String>, user: &str, password: &str) -> Self {
        TurnCheckArgs {
            server: server.into(),
            user: Some(format!("{user}:{password}")),
            secret: None,
            rest_user: "turn-check".into(),
            ttl: 3600,
            peer: None,
            no_relay_fallback: false,
            tcp: false,
            tls: false,
            insecure: false,
            ca: None,
            realm: None,
            count: 5,
            timeout: Duration::from_secs(10),
        }
    }

    /// Arguments for `server` with REST credentials from `secret`.
    pub fn with_secret(server: impl Into<String>, secret: &str) -> Self {
        TurnCheckArgs {
            user: None,
            secret: Some(secret.into()),
            ..TurnCheckArgs::with_user(server, "", "")
        }
    }

    fn transport(&self) -> Transport {
        if self.tls {
            Transport::Tls
        } else if self.tcp {
            Transport::Tcp
        } else {
            Transport::Udp
        }
    }

    fn credentials(&self) -> anyhow::Result<Credentials> {
        match (&self.user, &self.secret) {
            (Some(user), None) => {
                // Split at the last ':': REST user names (`EXPIRY:USER`) contain one, so a
                // pair handed out by `/api/ice-servers` can be checked as `EXPIRY:USER:PASS`.
                let (username, password) = user
                    .rsplit_once(':')
                    .ok_or_else(|| anyhow!("--user must be NAME:PASS"))?;
                if username.is_empty() {
                    anyhow::bail!("--user: empty user name");
                }
                Ok(Credentials::LongTerm {
                    username: username.to_owned(),
                    password: password.to_owned(),
                })
            }
            (None, Some(secret)) => Ok(Credentials::Rest {
                secret: secret.clone(),
                user: self.rest_user.clone(),
                ttl: Duration::from_secs(self.ttl),
            }),
            _ => anyhow::bail!("give exactly one of --user NAME:PASS and --secret SECRET"),
        }
    }
}

/// A UDP echo socket running in a task; stopped on drop.
struct EchoPeer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoPeer {
    async fn start(ip: std::net::IpAddr) -> std::io::Result<Self> {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let addr = sock.local_addr()?;
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                match sock.recv_from(&mut buf).await {
                    Ok((n, from)) => {
                        if let Some(data) = buf.get(..n) {
                            let _ = sock.send_to(data, from).await;
                        }
                    }
                    // E.g. ICMP errors surfacing on the socket: keep serving, without spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        Ok(EchoPeer { addr, task })
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ok(step: &str, detail: &str, took: Option<Duration>) {
    match took {
        Some(t) => println!("[ok] {step}: {detail} ({})", fmt_ms(t)),
        None => println!("[ok] {step}: {detail}"),
    }
}

fn fail(step: &str, err: impl std::fmt::Display, hint: Option<String>) -> anyhow::Error {
    println!("[FAIL] {step}: {err}");
    if let Some(h) = hint {
        println!("       hint: {h}");
    }
    anyhow!("{step} failed: {err}")
}

fn host_prefix(ip: std::net::IpAddr) -> String {
    if ip.is_ipv4() {
        format!("{ip}/32")
    } else {
        format!("{ip}/128")
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Indication,
    Channel(u16),
}

struct DataStats {
    echoed: u32,
    min: Duration,
    max: Duration,
    total: Duration,
}

/// Relay `count` messages to `peer` and wait for each to come back unchanged.
async fn data_check(
    client: &mut TurnClient,
    peer: SocketAddr,
    mode: Mode,
    count: u32,
) -> Result<DataStats, String> {
    const TRIES: u32 = 3;
    const WAIT: Duration = Duration::from_secs(1);
    let tag: u64 = rand::random();
    let mut stats = DataStats {
        echoed: 0,
        min: Duration::MAX,
        max: Duration::ZERO,
        total: Duration::ZERO,
    };
    let mut payload = Vec::with_capacity(128);
    let mut wrong_framing = 0u32;
    for i in 0..count {
        payload.clear();
        payload.extend_from_slice(format!("icebreaker turn-check {tag:016x} #{i} ").as_bytes());
        // Binary tail of varying length, so ChannelData padding is exercised.
        payload.extend((0..=i % 7).map(|k| 0xA5u8 ^ (k as u8)));
        let mut rtt = None;
        'tries: for _ in 0..TRIES {
            let sent = Instant::now();
            let res = match mode {
                Mode::Indication => client.send_indication(peer, &payload).await,
                Mode::Channel(ch) => client.send_channel_data(ch, &payload).await,
            };
            res.map_err(|e| format!("sending failed: {e}"))?;
            let until = sent + WAIT;
            loop {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let got = client
                    .recv_timeout(left)
                    .await
                    .map_err(|e| format!("receiving failed: {e}"))?;
                let (data, right_framing) = match (got, mode) {
                    (None, _) => break,
                    (Some(Incoming::Data { data, .. }), Mode::Indication) => (data, true),
                    (Some(Incoming::ChannelData { channel, data }), Mode::Channel(ch))
                        if channel == ch =>
                    {
                        (data, true)
                    }
                    (Some(Incoming::Data { data, .. }), _)
                    | (Some(Incoming::ChannelData { data, .. }), _) => (data, false),
                    (Some(Incoming::Stun(_)), _) => continue,
                };
                if data == payload.as_slice() {
                    if right_framing {
                        rtt = Some(sent.elapsed());
                        break 'tries;
                    }
                    wrong_framing += 1;
                }
            }
        }
        if let Some(rtt) = rtt {
            stats.echoed += 1;
            stats.min = stats.min.min(rtt);
            stats.max = stats.max.max(rtt);
            stats.total += rtt;
        }
    }
    if stats.echoed < count {
        let mut msg = format!(
            "{}/{count} echoed (each sent up to {TRIES} times, waiting {} s)",
            stats.echoed,
            WAIT.as_secs()
        );
        if wrong_framing > 0 {
            let expected = match mode {
                Mode::Indication => "Data indication",
                Mode::Channel(_) => "ChannelData on the bound channel",
            };
            msg.push_str(&format!(
                "; {wrong_framing} echo(es) came back, but not as {expected}"
            ));
        }
        return Err(msg);
    }
    Ok(stats)
}

fn stats_line(s: &DataStats, count: u32, via: &str, peer: SocketAddr) -> String {
    let avg = s.total / s.echoed.max(1);
    format!(
        "{}/{count} echoed by {peer} via {via}, rtt min/avg/max {:.2}/{:.2}/{:.2} ms",
        s.echoed,
        s.min.as_secs_f64() * 1e3,
        avg.as_secs_f64() * 1e3,
        s.max.as_secs_f64() * 1e3,
    )
}

/// The echo peer the data steps relay to.
enum Echo {
    /// `--peer ADDR`.
    External(SocketAddr),
    /// Our own UDP echo socket on the local IP used towards the server.
    Local(EchoPeer),
    /// A second allocation on the same server echoing what reaches its relayed address.
    Relayed(RelayEcho),
}

impl Echo {
    fn addr(&self) -> SocketAddr {
        match self {
            Echo::External(a) => *a,
            Echo::Local(e) => e.addr,
            Echo::Relayed(r) => r.relayed,
        }
    }

    fn describe(&self) -> String {
        match self {
            Echo::External(a) => format!("external echo server {a}"),
            Echo::Local(e) => format!("local UDP echo {}", e.addr),
            Echo::Relayed(r) => format!("relayed echo via allocation {}", r.relayed),
        }
    }

    /// Stop the echo peer; for a relayed echo, also delete its allocation (best effort when
    /// `report` is false, else one `[ok]` / `[FAIL]` line).
    async fn close(self, timeout: Duration, report: bool) -> anyhow::Result<()> {
        let Echo::Relayed(r) = self else {
            return Ok(());
        };
        let t = Instant::now();
        let relayed = r.relayed;
        match r.close(timeout).await {
            Ok(()) if report => {
                ok(
                    "Delete peer",
                    &format!("echo allocation {relayed} released (Refresh lifetime 0)"),
                    Some(t.elapsed()),
                );
                Ok(())
            }
            Err(e) if report => Err(fail("Delete peer", e, None)),
            _ => Ok(()),
        }
    }
}

/// The relayed echo peer: a second [`TurnClient`] with its own allocation, echoing every Data
/// indication / ChannelData it receives back to the sender, in a task. [`RelayEcho::close`]
/// stops the task and deletes the allocation; dropping it only aborts the task.
struct RelayEcho {
    relayed: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), TurnError>>>,
}

/// What is needed to open a second connection like the first one.
struct PeerSetup<'a> {
    server: SocketAddr,
    opts: &'a ClientOptions,
    /// Our (the checking client's) relayed address: the only peer the echo allocation permits.
    our_relayed: SocketAddr,
}

impl RelayEcho {
    /// Connect, allocate, permit `setup.our_relayed` and start echoing. Prints one line per step.
    async fn start(setup: &PeerSetup<'_>, credentials_hint: &str) -> anyhow::Result<Self> {
        let step = "Peer allocation";
        let t = Instant::now();
        let mut b = TurnClient::connect(setup.server, setup.opts.clone())
            .await
            .map_err(|e| {
                fail(
                    step,
                    format!("connecting a second client failed: {e}"),
                    None,
                )
            })?;
        let alloc_opts = AllocateOptions {
            family: setup.our_relayed.is_ipv6().then_some(Family::V6),
            ..AllocateOptions::default()
        };
        let alloc = match b.allocate(&alloc_opts).await {
            Ok(a) => a,
            Err(e) => {
                let hint = match e.code() {
                    Some(401) | Some(441) => Some(credentials_hint.to_owned()),
                    Some(486) => Some(
                        "the user has too many allocations on the server (the relayed echo \
                         needs a second one)"
                            .into(),
                    ),
                    _ => None,
                };
                return Err(fail(step, e, hint));
            }
        };
        ok(
            step,
            &format!(
                "{} {} -> {}, relayed {}, lifetime {} s",
                b.transport(),
                b.local_addr(),
                b.server_addr(),
                alloc.relayed,
                alloc.lifetime
            ),
            Some(t.elapsed()),
        );

        let step = "Peer permission";
        let t = Instant::now();
        if let Err(e) = b.create_permission(&[setup.our_relayed]).await {
            let hint = (e.code() == Some(403)).then(|| {
                format!(
                    "the server refuses relaying between its own relay addresses ({} -> {}); \
                     start it with --allow-peer {} or give --peer",
                    alloc.relayed,
                    setup.our_relayed,
                    host_prefix(setup.our_relayed.ip())
                )
            });
            let _ = b.refresh(0).await;
            return Err(fail(step, e, hint));
        }
        ok(
            step,
            &format!(
                "echo allocation {} permits {}",
                alloc.relayed,
                setup.our_relayed.ip()
            ),
            Some(t.elapsed()),
        );

        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(echo_loop(b, stopped));
        Ok(RelayEcho {
            relayed: alloc.relayed,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Stop the echo task and wait (up to `timeout`) for it to delete its allocation.
    async fn close(mut self, timeout: Duration) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(e)) => Err(format!("echo task failed: {e}")),
            Err(_) => {
                task.abort();
                Err(format!(
                    "no answer to the deletion within {:.1} s",
                    timeout.as_secs_f64()
                ))
            }
        }
    }
}

impl Drop for RelayEcho {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Echo every Data indication (with a Send indication to its XOR-PEER-ADDRESS) and every
/// ChannelData (on the same channel) until `stop` fires, then delete the allocation.
async fn echo_loop(mut b: TurnClient, mut stop: oneshot::Receiver<()>) -> Result<(), TurnError> {
    enum Reply {
        Indication(SocketAddr),
        Channel(u16),
    }
    let stream = b.transport().is_stream();
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    let res = loop {
        let reply = tokio::select! {
            _ = &mut stop => break Ok(()),
            got = b.recv() => match got {
                Ok(Incoming::Data { peer, data }) => {
                    buf.clear();
                    buf.extend_from_slice(data);
                    Reply::Indication(peer)
                }
                Ok(Incoming::ChannelData { channel, data }) => {
                    buf.clear();
                    buf.extend_from_slice(data);
                    Reply::Channel(channel)
                }
                Ok(Incoming::Stun(_)) => continue,
                // The connection is gone: nothing more to echo (the server releases the
                // allocation of a closed TCP/TLS connection by itself).
                Err(e) if stream => break Err(e),
                // E.g. ICMP errors surfacing on the UDP socket: keep serving, without spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let sent = match reply {
            Reply::Indication(peer) => b.send_indication(peer, &buf).await,
            Reply::Channel(channel) => b.send_channel_data(channel, &buf).await,
        };
        if let Err(e) = sent {
            if stream {
                break Err(e);
            }
        }
    };
    match res {
        Ok(()) => b.refresh(0).await.map(|_| ()),
        Err(e) => Err(TurnError::Protocol(format!(
            "the echo allocation's connection failed: {e}"
        ))),
    }
}

fn credentials_hint(args: &TurnCheckArgs, realm: Option<&str>) -> String {
    format!(
        "check the credentials{} and the realm{}",
        if args.secret.is_some() {
            " (shared secret)"
        } else {
            " (user name and password)"
        },
        realm
            .map(|r| format!(" (server realm {r:?})"))
            .unwrap_or_default()
    )
}

/// Run the check; prints one line per step and returns an error at the first failure.
pub async fn run(args: TurnCheckArgs) -> anyhow::Result<()> {
    let transport = args.transport();
    let credentials = args.credentials()?;
    let default_port = if args.tls {
        DEFAULT_TLS_PORT
    } else {
        DEFAULT_PORT
    };
    let target = resolve_server(&args.server, default_port).await?;
    let opts = ClientOptions {
        transport,
        credentials: Some(credentials),
        realm: args.realm.clone(),
        tls: TlsOptions {
            server_name: Some(target.host.clone()),
            ca_file: args.ca.clone(),
            insecure: args.insecure,
        },
        timeout: args.timeout,
        ..ClientOptions::default()
    };

    // Connect.
    let t = Instant::now();
    let mut client = TurnClient::connect(target.addr, opts.clone())
        .await
        .map_err(|e| fail("Connect", e, None))?;
    ok(
        "Connect",
        &format!(
            "{transport} {} -> {}",
            client.local_addr(),
            client.server_addr()
        ),
        transport.is_stream().then(|| t.elapsed()),
    );

    // Echo peer.
    let mut echo = match args.peer {
        Some(p) => {
            ok("Peer", &format!("{p} (external echo server)"), None);
            Echo::External(p)
        }
        None => {
            let ip = client.local_addr().ip();
            let echo = EchoPeer::start(ip).await.map_err(|e| {
                fail(
                    "Peer",
                    format!("cannot bind a UDP echo socket on {ip}: {e}"),
                    None,
                )
            })?;
            ok("Peer", &format!("UDP echo socket on {}", echo.addr), None);
            Echo::Local(echo)
        }
    };

    // Allocate.
    let t = Instant::now();
    let alloc_opts = AllocateOptions {
        family: echo.addr().is_ipv6().then_some(Family::V6),
        ..AllocateOptions::default()
    };
    let alloc = match client.allocate(&alloc_opts).await {
        Ok(a) => a,
        Err(e) => {
            let hint = match e.code() {
                Some(401) | Some(441) => Some(credentials_hint(&args, client.realm())),
                Some(440) => Some("the server cannot relay this address family".into()),
                Some(486) => Some("the user has too many allocations on the server".into()),
                _ => None,
            };
            let hint = hint.or_else(|| {
                let note = redirect_note(&client);
                (!note.is_empty()).then(|| note.trim_start_matches(", ").to_owned())
            });
            return Err(fail("Allocate", e, hint));
        }
    };
    let mapped = alloc
        .mapped
        .map(|m| m.to_string())
        .unwrap_or_else(|| "(none)".into());
    let redirected = redirect_note(&client);
    ok(
        "Allocate",
        &format!(
            "relayed {}, mapped {mapped}, lifetime {} s{redirected}",
            alloc.relayed, alloc.lifetime
        ),
        Some(t.elapsed()),
    );

    let setup = PeerSetup {
        // After a redirection the echo allocation goes straight to the alternate.
        server: client.server_addr(),
        opts: &opts,
        our_relayed: alloc.relayed,
    };
    // The relayed echo's deletion is one transaction; allow a little more than its limit.
    let close_wait = args.timeout + Duration::from_secs(1);
    let result = relay_steps(&mut client, &args, &setup, &mut echo, alloc.lifetime).await;
    if result.is_err() {
        // Best effort: do not leave the allocations behind.
        let _ = client.refresh(0).await;
        let _ = echo.close(close_wait, false).await;
        return result;
    }

    // Delete.
    let t = Instant::now();
    if let Err(e) = client.refresh(0).await {
        let err = fail("Delete", e, None);
        let _ = echo.close(close_wait, false).await;
        return Err(err);
    }
    ok(
        "Delete",
        "allocation released (Refresh lifetime 0)",
        Some(t.elapsed()),
    );
    let used = echo.describe();
    echo.close(close_wait, true).await?;
    println!(
        "TURN check passed: {transport} {}, relayed {}, echo peer: {used}",
        client.server_addr(),
        alloc.relayed
    );
    Ok(())
}

/// ", redirected from A to B (300 Try Alternate)" when the allocation moved, else "".
fn redirect_note(client: &TurnClient) -> String {
    let from = client.redirected_from();
    if from.is_empty() {
        return String::new();
    }
    let chain: Vec<String> = from.iter().map(SocketAddr::to_string).collect();
    format!(
        ", redirected from {} to {} (300 Try Alternate)",
        chain.join(" via "),
        client.server_addr()
    )
}

/// Hint for a 403 to CreatePermission for `echo`.
fn permission_hint(args: &TurnCheckArgs, echo: &Echo) -> String {
    let peer = echo.addr();
    let ip = peer.ip();
    let prefix = host_prefix(ip);
    match echo {
        Echo::External(_) => format!(
            "the server refuses relaying to {ip}; start it with --allow-peer {prefix} or give \
             another --peer"
        ),
        Echo::Local(_) => {
            let mut h = format!(
                "the server refuses relaying to {ip}; start it with --allow-peer {prefix} or give \
                 --peer"
            );
            if args.no_relay_fallback {
                h.push_str(
                    " (or drop --no-relay-fallback to use a second allocation on the server as \
                     the echo peer)",
                );
            }
            h
        }
        Echo::Relayed(_) => format!(
            "the server refuses relaying even to its own relay address {peer}; start it with \
             --allow-peer {prefix} or give --peer"
        ),
    }
}

async fn relay_steps(
    client: &mut TurnClient,
    args: &TurnCheckArgs,
    setup: &PeerSetup<'_>,
    echo: &mut Echo,
    lifetime: u32,
) -> anyhow::Result<()> {
    // CreatePermission, falling back to a relayed echo peer when our own is refused.
    let mut t = Instant::now();
    match client.create_permission(&[echo.addr()]).await {
        Ok(()) => {}
        Err(e)
            if e.code() == Some(403)
                && matches!(echo, Echo::Local(_))
                && !args.no_relay_fallback =>
        {
            println!(
                "[info] the server refuses relaying to {} (secure default); using a second \
                 allocation on this server as the echo peer (relay to relay)",
                echo.addr()
            );
            let relayed = RelayEcho::start(setup, &credentials_hint(args, client.realm())).await?;
            // Replacing the local echo stops it.
            *echo = Echo::Relayed(relayed);
            ok("Peer", &echo.describe(), None);
            t = Instant::now();
            client
                .create_permission(&[echo.addr()])
                .await
                .map_err(|e| {
                    let hint = (e.code() == Some(403)).then(|| permission_hint(args, echo));
                    fail("CreatePermission", e, hint)
                })?;
        }
        Err(e) => {
            let hint = (e.code() == Some(403)).then(|| permission_hint(args, echo));
            return Err(fail("CreatePermission", e, hint));
        }
    }
    let peer = echo.addr();
    ok(
        "CreatePermission",
        &format!("peer {}", peer.ip()),
        Some(t.elapsed()),
    );

    let data_hint = match echo {
        Echo::External(_) => format!("is {peer} a UDP echo server reachable from the TURN server?"),
        Echo::Local(_) => {
            format!("the relay did not carry data between us and the echo peer {peer}")
        }
        Echo::Relayed(_) => format!(
            "the relay did not carry data between our allocation {} and the echo allocation \
             {peer}",
            setup.our_relayed
        ),
    };

    // Send indications.
    let stats = data_check(client, peer, Mode::Indication, args.count)
        .await
        .map_err(|e| fail("Send indication", e, Some(data_hint.clone())))?;
    ok(
        "Send indication",
        &stats_line(&stats, args.count, "Data indication", peer),
        None,
    );

    // ChannelBind.
    let t = Instant::now();
    client
        .channel_bind(CHECK_CHANNEL, peer)
        .await
        .map_err(|e| fail("ChannelBind", e, None))?;
    ok(
        "ChannelBind",
        &format!("channel {CHECK_CHANNEL:#06x} -> {peer}"),
        Some(t.elapsed()),
    );

    // ChannelData.
    let stats = data_check(client, peer, Mode::Channel(CHECK_CHANNEL), args.count)
        .await
        .map_err(|e| fail("ChannelData", e, Some(data_hint.clone())))?;
    ok(
        "ChannelData",
        &stats_line(&stats, args.count, "ChannelData", peer),
        None,
    );

    // Refresh.
    let t = Instant::now();
    let granted = client
        .refresh(lifetime.max(1))
        .await
        .map_err(|e| fail("Refresh", e, None))?;
    ok(
        "Refresh",
        &format!("lifetime {granted} s"),
        Some(t.elapsed()),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: TurnCheckArgs,
    }

    #[test]
    fn args_parse() {
        let c = Cli::try_parse_from(["x", "127.0.0.1:3478", "--user", "a:b:c"]).expect("parse");
        match c.args.credentials().expect("creds") {
            Credentials::LongTerm { username, password } => {
                assert_eq!(username, "a:b");
                assert_eq!(password, "c");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["x", "h"]).is_err(),
            "credentials required"
        );
        assert!(
            Cli::try_parse_from(["x", "h", "--user", "a:b", "--secret", "s"]).is_err(),
            "mutually exclusive"
        );
        assert!(Cli::try_parse_from(["x", "h", "--secret", "s", "--tcp", "--tls"]).is_err());
        assert!(Cli::try_parse_from(["x", "h", "--secret", "s", "--insecure"]).is_err());
        let c =
            Cli::try_parse_from(["x", "h", "--secret", "s", "--no-relay-fallback"]).expect("parse");
        assert!(c.args.no_relay_fallback);
        assert!(
            Cli::try_parse_from([
                "x",
                "h",
                "--secret",
                "s",
                "--no-relay-fallback",
                "--peer",
                "192.0.2.1:7"
            ])
            .is_err(),
            "--peer never falls back"
        );
        let c = Cli::try_parse_from(["x", "h", "--secret", "s", "--ttl", "60", "--timeout", "2.5"])
            .expect("parse");
        assert_eq!(c.args.timeout, Duration::from_millis(2500));
        assert!(matches!(
            c.args.credentials().expect("creds"),
            Credentials::Rest { ttl, .. } if ttl == Duration::from_secs(60)
        ));
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            host_prefix("127.0.0.1".parse().expect("ip")),
            "127.0.0.1/32"
        );
        assert_eq!(host_prefix("::1".parse().expect("ip")), "::1/128");
    }
}
