//! `icebreaker serve`: the I/O around the sans-IO TURN server.
//!
//! A relayed packet, socket to socket:
//! - client → peer: a UDP listener task (or a TCP/TLS connection task) reads a datagram/frame,
//!   [`icebreaker_turn::Server::handle_client`] finds the allocation and channel and answers
//!   `Forward { relay, peer, data }`, and the task sends `data` on that relay socket.
//! - peer → client: the relay socket's task reads into a buffer with [`PEER_HEADROOM`] bytes free
//!   in front, [`icebreaker_turn::Server::handle_peer`] writes the ChannelData (or Data indication)
//!   header in place, and the task sends the result to the client on the listener it came from.
//!
//! Neither direction allocates. The TURN state sits behind one mutex that is never held across
//! an `.await`.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use icebreaker_turn::{
    ClientOutput, Credentials, ExternalMap, FiveTuple, Now, PeerFilter, Rate, RelayId,
    RelayProvider, Stats, Transport, PEER_HEADROOM,
};
use parking_lot::Mutex;
use rand::Rng;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{watch, Mutex as AsyncMutex};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::control::{Control, ReloadResult};
use crate::gate::{Gate, GateSettings};
use crate::http::{serve_http, HttpState};
use crate::metrics::{
    AuthFailure as MAuth, Direction, DropReason, Metrics, TransportLabel, ERROR_CODES,
};
use crate::relay::{Binder, HashMap, RelayPool, RelaySettings, RelaySocket, RelayTable};
use crate::udp::{UdpShard, UdpWorker, RELAY_MTU};

/// Largest frame accepted from a TCP/TLS client.
const CLIENT_MTU: usize = 65_535 + 4;
/// Initial receive buffer of a TCP/TLS connection.
const STREAM_BUF_START: usize = 4096;
/// Socket buffer size asked for on listener sockets.
const LISTENER_BUFFER: usize = 4 << 20;
/// A TCP/TLS connection with no allocation is closed after this long without a frame.
const IDLE_NO_ALLOCATION: Duration = Duration::from_secs(60);
/// A TCP/TLS connection with an allocation is closed after this long without a frame.
const IDLE_WITH_ALLOCATION: Duration = Duration::from_secs(3700);
/// TLS handshakes must complete within this.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type StreamWriter = Arc<AsyncMutex<Box<dyn AsyncWrite + Send + Unpin>>>;

/// A relay socket of a TCP/TLS client's allocation, with the task reading it (aborted when the
/// relay is released).
struct TokioRelay {
    socket: Arc<UdpSocket>,
    task: Option<JoinHandle<()>>,
}

impl Drop for TokioRelay {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl RelaySocket for TokioRelay {
    fn adopt(socket: StdUdpSocket) -> Option<Self> {
        // Called from tokio tasks only (the stream shard is driven by them).
        let socket = UdpSocket::from_std(socket).ok()?;
        Some(TokioRelay {
            socket: Arc::new(socket),
            task: None,
        })
    }
}

/// The TCP/TLS shard: allocations of stream clients, served by tokio tasks.
struct State {
    turn: icebreaker_turn::Server,
    relays: RelayTable<TokioRelay>,
    streams: HashMap<FiveTuple, StreamWriter>,
}

/// Shared by every task.
struct Shared {
    /// The TCP/TLS shard.
    state: Mutex<State>,
    /// The UDP shards, one per worker thread (see `udp.rs`).
    udp_shards: Vec<Arc<UdpShard>>,
    pool: Arc<RelayPool>,
    group: Arc<icebreaker_turn::Group>,
    metrics: Arc<Metrics>,
    gate: Arc<Gate>,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// Run `f` on the stream shard's TURN state with a relay binder, then start reader tasks
    /// for any relay sockets it bound.
    fn with_turn<R>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut icebreaker_turn::Server, &mut Binder<'_, TokioRelay>) -> R,
    ) -> R {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let mut binder = Binder {
            table: &mut st.relays,
            pool: &self.pool,
        };
        let r = f(&mut st.turn, &mut binder);
        if !st.relays.pending.is_empty() {
            let pending = std::mem::take(&mut st.relays.pending);
            for id in pending {
                if let Some(relay) = st.relays.relays.get_mut(&id) {
                    let task = tokio::spawn(relay_task(self.clone(), id, relay.socket.clone()));
                    relay.task = Some(task);
                }
            }
        }
        r
    }

    /// Run `f` on every shard with its relay binder (timer, shutdown).
    fn each_shard(
        self: &Arc<Self>,
        mut f: impl FnMut(&mut icebreaker_turn::Server, &mut dyn RelayProvider),
    ) {
        for shard in &self.udp_shards {
            let mut guard = shard.state.lock();
            let st = &mut *guard;
            let mut binder = Binder {
                table: &mut st.relays,
                pool: &self.pool,
            };
            f(&mut st.turn, &mut binder);
        }
        self.with_turn(|turn, binder| f(turn, binder));
    }

    /// Hand a client packet to the stream shard (counting it first); the answer to send back,
    /// or the data to forward with its relay socket.
    fn client_packet<'p>(
        self: &Arc<Self>,
        tuple: FiveTuple,
        packet: &'p [u8],
        out: &mut [u8],
    ) -> Handled<'p> {
        count_request(&self.metrics, packet, tuple.transport);
        let t = now();
        self.with_turn(
            |turn, binder| match turn.handle_client(t, tuple, packet, out, binder) {
                ClientOutput::None => Handled::None,
                ClientOutput::Reply(len) => Handled::Reply(len),
                ClientOutput::Forward { relay, peer, data } => {
                    match binder.table.relays.get(&relay) {
                        Some(r) => Handled::Forward(r.socket.clone(), peer, data),
                        None => Handled::None,
                    }
                }
            },
        )
    }
}

/// A clock read on every packet without a system call: a ticker task stores the monotonic offset
/// and the Unix time every [`CLOCK_TICK`]; lifetimes (seconds to minutes) need no finer grain.
struct CoarseClock {
    base: Instant,
    offset_ms: AtomicU64,
    unix: AtomicU64,
}

/// How often the coarse clock advances.
const CLOCK_TICK: Duration = Duration::from_millis(10);

fn clock() -> &'static CoarseClock {
    static CLOCK: OnceLock<CoarseClock> = OnceLock::new();
    CLOCK.get_or_init(|| CoarseClock {
        base: Instant::now(),
        offset_ms: AtomicU64::new(0),
        unix: AtomicU64::new(unix_now()),
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Advance the coarse clock to the real time.
fn tick_clock() {
    let c = clock();
    let ms = u64::try_from(c.base.elapsed().as_millis()).unwrap_or(u64::MAX);
    c.offset_ms.fetch_max(ms, Ordering::Relaxed);
    c.unix.store(unix_now(), Ordering::Relaxed);
}

pub(crate) fn now() -> Now {
    let c = clock();
    Now {
        mono: c.base + Duration::from_millis(c.offset_ms.load(Ordering::Relaxed)),
        unix: c.unix.load(Ordering::Relaxed),
    }
}

async fn clock_task() {
    let mut tick = tokio::time::interval(CLOCK_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        tick_clock();
    }
}

fn transport_label(t: Transport) -> TransportLabel {
    match t {
        Transport::Udp => TransportLabel::Udp,
        Transport::Tcp => TransportLabel::Tcp,
        Transport::Tls => TransportLabel::Tls,
    }
}

/// Count a STUN request or indication by method before handing it on (cheap header peek).
pub(crate) fn count_request(metrics: &Metrics, packet: &[u8], transport: Transport) {
    if icebreaker_stun::is_stun(packet) {
        let typ = u16::from_be_bytes([packet[0], packet[1]]);
        let m = icebreaker_stun::MessageType::from_raw(typ);
        if !matches!(
            m.class(),
            icebreaker_stun::Class::Success | icebreaker_stun::Class::Error
        ) {
            metrics.stun_request(m.method(), transport_label(transport));
        }
    }
}

/// A running server: its bound addresses and the means to stop it.
pub struct Running {
    /// UDP+TCP TURN/STUN listener addresses.
    pub turn: Vec<SocketAddr>,
    /// TLS listener addresses.
    pub turns: Vec<SocketAddr>,
    /// HTTP listener address.
    pub http: SocketAddr,
    /// The admin listener (`admin_listen`), if any.
    pub admin: Option<SocketAddr>,
    /// Relay addresses (IPv4, IPv6).
    pub relay_ips: Vec<IpAddr>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    signal: Arc<crate::signal::SignalService>,
    /// Drain, reload and the admin token.
    pub control: Arc<Control>,
    reload_rx:
        Option<tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<ReloadResult>>>,
    certs: Option<Arc<crate::tls::CertStore>>,
    /// The configuration in force (replaced by reloads).
    config: Mutex<Config>,
    relay: RelaySettings,
    service: Vec<SocketAddr>,
    /// The SFU's media address (UDP) as bound, if the server has an SFU.
    pub sfu_addr: Option<SocketAddr>,
    /// The SIP gateway's socket toward `sip_upstream` (UDP) as bound, if the gateway is on.
    pub sip_addr: Option<SocketAddr>,
    sip: Option<Arc<crate::sip::SipService>>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Tells the UDP worker threads to end.
    stop_workers: Arc<AtomicBool>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Calls of the SIP gateway with bridged media.
    pub fn sip_media_calls(&self) -> usize {
        self.sip
            .as_ref()
            .and_then(|s| s.media())
            .map_or(0, |m| m.calls())
    }

    /// Stop: close listeners, release every allocation, wait for the tasks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        self.stop_workers.store(true, Ordering::Relaxed);
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await;
        self.shared.each_shard(|turn, binder| turn.clear(binder));
        self.shared.pool.clear();
    }

    /// The signaling service (tests: force-close streams, read counters).
    #[doc(hidden)]
    /// Calls still running: allocations on every shard plus signaling sessions with a
    /// connection attached (what a drain waits for).
    pub fn calls(&self) -> usize {
        self.shared.group.allocations() + self.signal.stats().attached
    }

    /// Apply a newly loaded configuration without dropping anything: the certificate, TURN
    /// credentials, secrets, limits and peer policy, signaling limits and keys, the per-address
    /// limits, the drain timeout and the admin token. Returns the settings that changed; settings
    /// that need a restart are listed as such and keep their old values.
    pub fn reload(&self, mut new: Config) -> ReloadResult {
        let problems = new.check();
        if let Some(p) = problems.iter().find(|p| p.is_error()) {
            return Err(format!(
                "the new configuration has mistakes, nothing changed: {}",
                p.message
            ));
        }
        let mut old = self.config.lock();
        // A secret generated at start (no credentials configured) stays while none are.
        if new.users.is_empty() && new.turn_secrets.is_empty() {
            new.turn_secrets = old.turn_secrets.clone();
        }
        let mut changes = Vec::new();
        macro_rules! restart_only {
            ($($f:ident),*) => {$(
                if new.$f != old.$f {
                    changes.push(format!("{} (needs a restart; unchanged)", stringify!($f)));
                    new.$f = old.$f.clone();
                }
            )*};
        }
        restart_only!(
            turn_listen,
            turns_listen,
            http_listen,
            admin_listen,
            relay_ip,
            relay_ports,
            external_ip,
            udp_workers,
            log,
            log_format,
            sfu_listen,
            cluster,
            node_id,
            cluster_prefix,
            sip_upstream,
            sip_listen,
            sip_dial,
            sip_from,
            sip_username,
            sip_password,
            sip_tls_ca
        );
        if let (Some(store), Some(cert), Some(key)) = (&self.certs, &new.tls_cert, &new.tls_key) {
            store
                .reload(cert, key)
                .map_err(|e| format!("{e:#}; nothing changed"))?;
            changes.push("tls certificate (read again)".into());
        }
        macro_rules! changed {
            ($($f:ident),*) => {$(
                if new.$f != old.$f {
                    changes.push(stringify!($f).to_string());
                }
            )*};
        }
        changed!(
            realm,
            users,
            turn_secrets,
            allow_peer,
            deny_peer,
            max_allocations,
            max_allocations_per_user,
            max_lifetime,
            default_lifetime,
            nonce_lifetime,
            credential_ttl,
            software,
            signal_grace,
            signal_replay_limit,
            signal_max_message,
            signal_rate,
            signal_max_rooms,
            signal_max_sessions,
            signal_room_capacity,
            signal_token_secret,
            signal_origins,
            api_key,
            allocation_rate_per_ip,
            unauth_reply_budget,
            unauth_reply_per_source,
            conn_rate_per_ip,
            max_conns_per_ip,
            join_rate_per_ip,
            alternate_server,
            drain_timeout,
            admin_token,
            sfu_mesh_max
        );
        let tc = turn_config(&new, &self.relay, &self.service, self.sfu_addr);
        self.shared.each_shard(|turn, _| turn.reload(&tc));
        self.signal.reload(&new);
        self.shared.gate.set(GateSettings::from_config(&new));
        self.control
            .set_drain_timeout(Duration::from_secs(u64::from(new.drain_timeout)));
        self.control.set_admin_token(new.admin_token.clone());
        *old = new;
        Ok(changes)
    }

    pub fn signal(&self) -> &Arc<crate::signal::SignalService> {
        &self.signal
    }

    /// Number of live allocations.
    pub fn allocations(&self) -> usize {
        self.shared.group.allocations()
    }

    /// The state the TURN shards share: drain switch, allocation counts, and the alternates
    /// refused Allocates are sent to (`Group::set_alternates`, fed by a cluster).
    pub fn turn_group(&self) -> &Arc<icebreaker_turn::Group> {
        &self.shared.group
    }
}

/// The relay IPs: configured, or the listener's own address, or the address of the default route.
fn relay_ips(config: &Config) -> (Option<IpAddr>, Option<IpAddr>) {
    let mut v4 = config.relay_ip.iter().copied().find(|i| i.is_ipv4());
    let mut v6 = config.relay_ip.iter().copied().find(|i| i.is_ipv6());
    if v4.is_none() && v6.is_none() {
        for l in &config.turn_listen {
            let ip = l.ip();
            if ip.is_unspecified() {
                continue;
            }
            if ip.is_ipv4() && v4.is_none() {
                v4 = Some(ip);
            } else if ip.is_ipv6() && v6.is_none() {
                v6 = Some(ip);
            }
        }
    }
    if v4.is_none() && v6.is_none() {
        v4 = Some(default_route_ip().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
    (v4, v6)
}

/// The local address the kernel would use toward the Internet (a connected UDP socket sends
/// nothing). `None` without a default route.
fn default_route_ip() -> Option<IpAddr> {
    let s = StdUdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// A UDP listener socket; several bind the same address (`SO_REUSEPORT`), one per worker.
fn udp_listener(addr: SocketAddr) -> anyhow::Result<StdUdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(false).ok();
    }
    sock.set_reuse_port(true)?;
    let _ = sock.set_recv_buffer_size(LISTENER_BUFFER);
    let _ = sock.set_send_buffer_size(LISTENER_BUFFER);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())
        .with_context(|| format!("cannot bind UDP {addr}"))?;
    Ok(sock.into())
}

/// Binds `first` on `addr`, then `second` on the port `first` got. When `addr` asks for port 0
/// and the second bind fails (the port the kernel chose for one protocol is taken in the other),
/// both are dropped and tried again with a new port, up to 32 times.
pub(crate) fn same_port<A, B>(
    addr: SocketAddr,
    first: impl Fn(SocketAddr) -> anyhow::Result<A>,
    second: impl Fn(SocketAddr) -> anyhow::Result<B>,
    bound: impl Fn(&A) -> std::io::Result<SocketAddr>,
) -> anyhow::Result<(A, B)> {
    let mut attempt = 0;
    loop {
        let a = first(addr)?;
        let at = bound(&a)?;
        match second(at) {
            Ok(b) => return Ok((a, b)),
            Err(e) if addr.port() == 0 && attempt < 31 => {
                attempt += 1;
                tracing::debug!(
                    "port {} taken for the second protocol ({e:#}); again",
                    at.port()
                );
            }
            Err(e) => return Err(e),
        }
    }
}

fn tcp_listener(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(false).ok();
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())
        .with_context(|| format!("cannot bind TCP {addr}"))?;
    sock.listen(1024)?;
    Ok(TcpListener::from_std(sock.into())?)
}

/// `n` a second with a burst of ten times that; 0 = no limit.
pub(crate) fn rate_times_ten(n: u32) -> Rate {
    if n == 0 {
        return Rate::UNLIMITED;
    }
    Rate {
        per_sec: n,
        burst: n.saturating_mul(10),
    }
}

/// The TURN limits of `config`: allocations per address, unauthenticated reply bytes overall
/// (burst: half a second's worth) and per source (per 10 s).
pub(crate) fn turn_limits(config: &Config) -> (Rate, Rate, Rate) {
    let overall = match config.unauth_reply_budget {
        0 => Rate::UNLIMITED,
        n => Rate {
            per_sec: n,
            burst: (n / 2).max(2048),
        },
    };
    let per_source = match config.unauth_reply_per_source {
        0 => Rate::UNLIMITED,
        n => Rate {
            per_sec: (n / 10).max(1),
            burst: n,
        },
    };
    (
        rate_times_ten(config.allocation_rate_per_ip),
        overall,
        per_source,
    )
}

/// Build the sans-IO server's configuration from ours.
fn turn_config(
    config: &Config,
    relay: &RelaySettings,
    service_addrs: &[SocketAddr],
    media: Option<SocketAddr>,
) -> icebreaker_turn::Config {
    let credentials = Credentials::new(
        &config.realm,
        config.users.iter().map(|(u, p)| (u.as_str(), p.as_str())),
        config.turn_secrets.iter().map(|s| s.as_str()),
    );
    let mut tc = icebreaker_turn::Config::new(credentials);
    rand::rng().fill(&mut tc.nonce_key);
    tc.nonce_lifetime = u64::from(config.nonce_lifetime);
    tc.software = config.software.clone();
    tc.default_lifetime = config.default_lifetime;
    tc.max_lifetime = config.max_lifetime;
    tc.max_allocations = config.max_allocations;
    tc.max_allocations_per_user = config.max_allocations_per_user;
    let (alloc, reply, per_source) = turn_limits(config);
    tc.allocate_rate = alloc;
    tc.unauth_reply_rate = reply;
    tc.unauth_reply_per_source = per_source;
    tc.alternate_server = config.alternate_server;
    tc.relay_ports = relay.ports;
    tc.relay_ips = relay.v4.iter().chain(relay.v6.iter()).copied().collect();
    let mut external = ExternalMap::default();
    for e in &config.external_ip {
        external.add(e.public, e.private);
    }
    let mut filter = PeerFilter::new().relay(&tc.relay_ips, relay.ports.0..=relay.ports.1);
    for a in service_addrs {
        filter = filter.service_port(a.port()).own_ip(a.ip());
    }
    if let Some(m) = media {
        filter = filter.media(m);
        for ip in external.publics() {
            filter = filter.media(SocketAddr::new(ip, m.port()));
        }
    }
    for ip in external.publics() {
        filter = filter.own_ip(ip);
    }
    // Advertised public relay addresses are relay addresses too.
    let publics: Vec<IpAddr> = external.publics().collect();
    if !publics.is_empty() {
        let mut all = tc.relay_ips.clone();
        all.extend(publics);
        filter = filter.relay(&all, relay.ports.0..=relay.ports.1);
    }
    for n in &config.allow_peer {
        filter = filter.allow(*n);
    }
    for n in &config.deny_peer {
        filter = filter.deny(*n);
    }
    tc.filter = filter;
    tc.external = external;
    tc
}

/// Bind everything and start serving. Ports given as 0 are chosen by the system (tests).
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let (stop, shutdown) = watch::channel(false);
    let (v4, v6) = relay_ips(&config);
    let settings = RelaySettings {
        v4,
        v6,
        ports: config.relay_ports,
    };

    // Listeners first, so that the filter knows every service address.
    let workers = match config.udp_workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 64),
        n => n,
    };
    // Per worker, one SO_REUSEPORT socket on each TURN listen address.
    let mut udp_listeners: Vec<Vec<(SocketAddr, StdUdpSocket)>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut tcp = Vec::new();
    let mut turn_addrs = Vec::new();
    for addr in &config.turn_listen {
        // The TCP listener picks the port when 0 is asked for; UDP then binds the same port
        // (tried again with another port if that one is taken for UDP).
        let (t, udps): (_, Vec<StdUdpSocket>) = same_port(
            *addr,
            tcp_listener,
            |bound| (0..workers).map(|_| udp_listener(bound)).collect(),
            |t| t.local_addr(),
        )?;
        let bound = t.local_addr()?;
        for (list, u) in udp_listeners.iter_mut().zip(udps) {
            list.push((bound, u));
        }
        turn_addrs.push(bound);
        tcp.push((t, Transport::Tcp));
    }
    let mut turns_addrs = Vec::new();
    // One certificate for TURNS and for HTTPS/WSS on the HTTP listener.
    let (tls_config, certs) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let (c, store) = crate::tls::load_server_config(cert, key)?;
            (Some(c), Some(store))
        }
        _ if !config.turns_listen.is_empty() => {
            anyhow::bail!("--turns-listen needs --tls-cert and --tls-key")
        }
        _ => (None, None),
    };
    let tls = if config.turns_listen.is_empty() {
        None
    } else {
        tls_config.clone().map(tokio_rustls::TlsAcceptor::from)
    };
    let http_tls = tls_config.clone();
    for addr in &config.turns_listen {
        let t = tcp_listener(*addr)?;
        turns_addrs.push(t.local_addr()?);
        tcp.push((t, Transport::Tls));
    }
    let http_listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("cannot bind HTTP {}", config.http_listen))?;
    let http_addr = http_listener.local_addr()?;
    let admin_listener = match config.admin_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot bind the admin listener {a}"))?,
        ),
        None => None,
    };
    let admin_addr = match &admin_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };

    // The SFU's media port (UDP + ICE-TCP), so that the peer filter lets relays reach it.
    let sfu_sockets = match config.sfu_listen {
        Some(a) => Some(crate::sfu::bind(a)?),
        None => None,
    };
    let sfu_addr = match &sfu_sockets {
        Some((u, _)) => Some(u.local_addr()?),
        None => None,
    };
    let mut service = turn_addrs.clone();
    service.extend(&turns_addrs);
    service.push(http_addr);
    service.extend(admin_addr);
    let mut tc = turn_config(&config, &settings, &service, sfu_addr);
    if let Some(url) = &config.cluster {
        // One nonce key for the cluster: a client sent on by 300 Try Alternate presents the
        // nonce it got from the first node (browsers do not retry an Allocate answered 438).
        let mine: String = tc.nonce_key.iter().map(|b| format!("{b:02x}")).collect();
        let shared =
            crate::cluster::shared_value(url, &config.cluster_prefix, "noncekey", &mine).await?;
        for (i, b) in tc.nonce_key.iter_mut().enumerate() {
            if let Some(v) = shared
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                *b = v;
            }
        }
    }
    if tc.credentials.is_empty() {
        tracing::warn!(
            "no --user and no --turn-secret: STUN Binding only, every Allocate gets 401"
        );
    }
    let pool = Arc::new(RelayPool::new(settings.clone()));
    let group = tc.group.clone();
    let gate = Gate::new(GateSettings::from_config(&config), metrics.clone());
    let (control, reload_rx) = Control::new(
        gate.clone(),
        group.clone(),
        metrics.clone(),
        Duration::from_secs(u64::from(config.drain_timeout)),
        config.admin_token.clone(),
    );
    let udp_shards: Vec<Arc<UdpShard>> = (0..workers)
        .map(|_| Arc::new(UdpShard::new(icebreaker_turn::Server::new(tc.clone()))))
        .collect();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            turn: icebreaker_turn::Server::new(tc),
            relays: RelayTable::default(),
            streams: HashMap::default(),
        }),
        udp_shards: udp_shards.clone(),
        pool: pool.clone(),
        group,
        metrics: metrics.clone(),
        gate: gate.clone(),
        shutdown: shutdown.clone(),
    });

    tick_clock();
    let stop_workers = Arc::new(AtomicBool::new(false));
    let mut worker_threads = Vec::new();
    for (i, (shard, listeners)) in udp_shards.into_iter().zip(udp_listeners).enumerate() {
        let w = UdpWorker {
            shard,
            pool: pool.clone(),
            listeners,
            metrics: metrics.clone(),
            stop: stop_workers.clone(),
        };
        let t = std::thread::Builder::new()
            .name(format!("udp-{i}"))
            .spawn(move || w.run())
            .context("cannot start a UDP worker thread")?;
        worker_threads.push(t);
    }

    let mut tasks = Vec::new();
    for (listener, transport) in tcp {
        tasks.push(tokio::spawn(accept_task(
            shared.clone(),
            listener,
            transport,
            tls.clone(),
        )));
    }
    tasks.push(tokio::spawn(clock_task()));
    tasks.push(tokio::spawn(timer_task(shared.clone())));
    let signal = crate::signal::SignalService::new(
        &config,
        crate::signal::IceConfig {
            turn: turn_addrs.clone(),
            turns: turns_addrs.clone(),
            external: config.external_ip.first().map(|e| e.public),
            relay_ip: v4.or(v6),
            secret: config.turn_secrets.first().cloned(),
            ttl: config.credential_ttl,
            warned: Default::default(),
            fleet: Default::default(),
        },
        gate.clone(),
        shutdown.clone(),
    );
    tasks.push(signal.spawn_ticker());
    let cluster = match &config.cluster {
        Some(url) => {
            let node = config
                .node_id
                .clone()
                .unwrap_or_else(|| format!("node-{:08x}", rand::random::<u32>()));
            let c = crate::cluster::Cluster::connect(crate::cluster::ClusterConfig {
                url: url.clone(),
                node,
                prefix: config.cluster_prefix.clone(),
                replay_limit: config.signal_replay_limit,
                replay_max_bytes: icebreaker_signal::session::DEFAULT_REPLAY_BYTES,
                grace: Duration::from_secs(u64::from(config.signal_grace)),
            })
            .await?;
            tracing::info!(
                node = c.node(),
                "cluster: joined through {}",
                crate::cluster::redact(url)
            );
            Some(c)
        }
        None => None,
    };
    if let Some((udp, tcp)) = sfu_sockets {
        let (sfu, sfu_tasks) = crate::sfu::spawn(crate::sfu::Start {
            udp,
            tcp,
            external: config.external_ip.first().map(|e| e.public),
            fallback: v4.or(v6),
            signal: Arc::downgrade(&signal),
            gate: gate.clone(),
            shutdown: shutdown.clone(),
        })?;
        signal.set_sfu(sfu);
        tasks.extend(sfu_tasks);
    }
    if let Some(c) = &cluster {
        // The registry entry: this node's TURN addresses as clients reach them and its load.
        let public = config.external_ip.first().map(|e| e.public).or(v4).or(v6);
        let advertise = |a: &SocketAddr| match public {
            Some(ip) if a.ip().is_unspecified() => SocketAddr::new(ip, a.port()).to_string(),
            _ => a.to_string(),
        };
        // Loopback listeners last: other nodes send clients to the first address of a family,
        // and browsers refuse a redirect to a loopback address.
        let ordered = |v: &[SocketAddr]| -> Vec<String> {
            let mut v: Vec<&SocketAddr> = v.iter().collect();
            v.sort_by_key(|a| a.ip().is_loopback());
            v.into_iter().map(advertise).collect()
        };
        let turn = ordered(&turn_addrs);
        let turns = ordered(&turns_addrs);
        let (group, gate2, sig) = (shared.group.clone(), gate.clone(), signal.clone());
        let max = config.max_allocations as u64;
        let has_sfu = sfu_addr.is_some();
        let http = http_addr.to_string();
        let started = crate::credentials::now_unix();
        let c2 = c.clone();
        let update = move || {
            c2.set_info(|i| {
                i.turn = turn.clone();
                i.turns = turns.clone();
                i.allocations = group.allocations() as u64;
                i.max_allocations = max;
                i.sessions = sig.stats().sessions as u64;
                i.draining = gate2.is_draining();
                i.sfu = has_sfu;
                i.http = http.clone();
                i.started = started;
            })
        };
        update();
        // From the registry: the least-loaded TURN nodes for `iceServers`, and the least-loaded
        // other node as the ALTERNATE-SERVER a full or draining node sends clients to.
        let (fleet, group, c3) = (signal.ice().fleet.clone(), shared.group.clone(), c.clone());
        let follow = move || {
            let parse = |v: &[String]| -> Vec<SocketAddr> {
                v.iter().filter_map(|a| a.parse().ok()).collect()
            };
            let nodes = c3.turn_nodes(crate::signal::FLEET_MAX_NODES);
            fleet.set(
                nodes
                    .iter()
                    .map(|n| crate::signal::FleetNode {
                        id: n.id.clone(),
                        turn: parse(&n.turn),
                        turns: parse(&n.turns).into_iter().map(|a| (a, None)).collect(),
                    })
                    .collect(),
            );
            let other = c3
                .turn_nodes(usize::MAX)
                .into_iter()
                .find(|n| n.id != c3.node());
            match other {
                Some(n) => group.set_alternates(icebreaker_turn::Alternates::from_listeners(
                    &parse(&n.turn),
                    &parse(&n.turns),
                )),
                None => group.clear_alternates(),
            }
        };
        let mut stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        update();
                        follow();
                    }
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }));
        signal.set_cluster(c.clone());
    }
    let history = crate::history::History::new();
    tasks.push(history.spawn_sampler(
        metrics.clone(),
        signal.clone(),
        control.clone(),
        shutdown.clone(),
    ));
    let sip = crate::sip::SipService::start(
        &config,
        "icebreaker.invalid".to_string(),
        signal.sfu(),
        Some(signal.clone()),
        shutdown.clone(),
    )
    .await?;
    let sip_addr = sip.as_ref().map(|s| s.local_addr());
    let sip_for_running = sip.clone();
    let http_state = HttpState {
        metrics: metrics.clone(),
        gate: gate.clone(),
        signal: Some(signal.clone()),
        sip,
        control: Some(control.clone()),
        admin_here: admin_listener.is_none(),
        history,
    };
    if let Some(listener) = admin_listener {
        let app = crate::http::admin_router(http_state.clone());
        let mut admin_shutdown = shutdown.clone();
        let (gate, tls) = (gate.clone(), http_tls.clone());
        tasks.push(tokio::spawn(async move {
            let stop = async move {
                let _ = admin_shutdown.wait_for(|s| *s).await;
            };
            if let Err(e) = crate::http::serve_router(listener, app, gate, tls, stop).await {
                tracing::error!("{e:#}");
            }
        }));
    }
    let mut http_shutdown = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let stop = async move {
            let _ = http_shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = serve_http(http_listener, http_state, http_tls, stop).await {
            tracing::error!("{e:#}");
        }
    }));

    Ok(Running {
        turn: turn_addrs,
        turns: turns_addrs,
        http: http_addr,
        admin: admin_addr,
        relay_ips: v4.iter().chain(v6.iter()).copied().collect(),
        metrics,
        signal,
        control,
        reload_rx: Some(reload_rx),
        certs,
        config: Mutex::new(config),
        relay: settings,
        service,
        sfu_addr,
        sip_addr,
        sip: sip_for_running,
        shared,
        stop,
        tasks,
        stop_workers,
        workers: worker_threads,
    })
}

/// `icebreaker serve`: start, print what it listens on, run until SIGINT/SIGTERM.
pub async fn run(
    mut config: Config,
    load: Box<dyn Fn() -> Result<Config, String> + Send + Sync>,
) -> anyhow::Result<()> {
    let (lo, hi) = config.relay_ports;
    // On embedded defaults there is no credential at all: make a REST secret for this run, so
    // that TURN works out of the box and the banner can say how to use it.
    let generated = if config.users.is_empty() && config.turn_secrets.is_empty() {
        let mut bytes = [0u8; 18];
        rand::rng().fill(&mut bytes);
        let secret =
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes);
        // In a cluster every node must accept every node's credentials: the first node's
        // generated secret is kept in Redis and taken by the others.
        let secret = match &config.cluster {
            Some(url) => {
                crate::cluster::shared_secret(url, &config.cluster_prefix, &secret).await?
            }
            None => secret,
        };
        config.turn_secrets.push(secret.clone());
        Some(secret)
    } else {
        None
    };
    let users = config.users.len();
    let secrets = config.turn_secrets.len();
    let cluster_mode = config.cluster.is_some();
    let config_mesh_max = config.sfu_mesh_max;
    let socketio = config.socketio;
    let scheme = if config.tls_cert.is_some() && config.tls_key.is_some() {
        "https"
    } else {
        "http"
    };
    let mut running = start(config).await?;
    println!("Icebreaker {} is running", env!("CARGO_PKG_VERSION"));
    for a in &running.turn {
        println!("  STUN/TURN   udp+tcp {a}");
    }
    for a in &running.turns {
        println!("  STUN/TURN   tls     {a}");
    }
    let relays: Vec<String> = running.relay_ips.iter().map(|i| i.to_string()).collect();
    println!("  relay       {} ports {lo}-{hi}", relays.join(", "));
    println!("  credentials {users} static user(s), {secrets} REST secret(s)");
    match running.sfu_addr {
        Some(a) => println!(
            "  SFU         udp+tcp {a}  (rooms above {} members, or created with topology sfu)",
            config_mesh_max
        ),
        None => println!("  SFU         off (rooms stay meshes)"),
    }
    println!(
        "  HTTP        {scheme}://{}/  (metrics: /metrics, health: /healthz)",
        running.http
    );
    let web = match running.http.ip() {
        ip if ip.is_unspecified() => format!("127.0.0.1:{}", running.http.port()),
        _ => running.http.to_string(),
    };
    println!(
        "  demo        http://{web}/  (open it in two tabs: a video call in http://{web}/r/<room>)"
    );
    println!("  ICE tester  http://{web}/tools/ice");
    if socketio {
        println!(
            "  socket.io   http://{web}/socket.io/  (the WebRTC codelab's events, rooms of two)"
        );
    }
    if let Some(secret) = generated {
        let target = running
            .turn
            .first()
            .map(|a| match a.ip() {
                ip if ip.is_unspecified() => format!("127.0.0.1:{}", a.port()),
                _ => a.to_string(),
            })
            .unwrap_or_default();
        println!();
        if cluster_mode {
            println!("  No --user or --turn-secret given: the cluster's TURN REST secret (kept in Redis):");
        } else {
            println!(
                "  No --user or --turn-secret given: TURN REST secret generated for this run:"
            );
        }
        println!("    {secret}");
        println!("  Try:");
        println!("    icebreaker stun {target}");
        println!("    icebreaker turn-check {target} --secret {secret}");
        println!("    icebreaker credentials --secret {secret} --user me");
    }
    tracing::info!(turn = ?running.turn, turns = ?running.turns, http = %running.http, "serving");
    let result = serve_until_stopped(&mut running, &*load).await;
    tracing::info!("shutting down");
    running.shutdown().await;
    result
}

/// Serve until told to stop: SIGINT stops at once; SIGTERM (or `POST /admin/drain`) drains —
/// nothing new is accepted and the process exits when the last call ends or `drain_timeout`
/// passes (a second SIGTERM stops at once); SIGHUP (or `POST /admin/reload`) reloads.
async fn serve_until_stopped(
    running: &mut Running,
    load: &(dyn Fn() -> Result<Config, String> + Send + Sync),
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut reloads = running
        .reload_rx
        .take()
        .context("the serve loop runs once")?;
    let control = running.control.clone();
    let mut check = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("SIGINT: stopping now");
                return Ok(());
            }
            _ = term.recv() => {
                if control.draining().is_some() {
                    tracing::info!("SIGTERM again: stopping now");
                    return Ok(());
                }
                let deadline = control.drain();
                tracing::info!(
                    calls = running.calls(),
                    deadline_secs = deadline.saturating_duration_since(std::time::Instant::now()).as_secs(),
                    "SIGTERM: draining (no new allocations or joins; exiting when the last call ends)"
                );
            }
            _ = hup.recv() => {
                let r = load().and_then(|c| running.reload(c));
                log_reload("SIGHUP", &r);
            }
            Some(answer) = reloads.recv() => {
                let r = load().and_then(|c| running.reload(c));
                log_reload("/admin/reload", &r);
                let _ = answer.send(r);
            }
            _ = check.tick() => {
                if let Some(deadline) = control.draining() {
                    let calls = running.calls();
                    if calls == 0 {
                        tracing::info!("drained: no call left, stopping");
                        return Ok(());
                    }
                    if std::time::Instant::now() >= deadline {
                        tracing::warn!(calls, "drain deadline passed, stopping with calls still running");
                        return Ok(());
                    }
                }
            }
        }
    }
}

fn log_reload(what: &str, r: &ReloadResult) {
    match r {
        Ok(changes) if changes.is_empty() => {
            tracing::info!("{what}: configuration reloaded, nothing changed")
        }
        Ok(changes) => {
            tracing::info!(changed = %changes.join(", "), "{what}: configuration reloaded")
        }
        Err(e) => tracing::error!("{what}: reload failed: {e}"),
    }
}

/// Send `data` to `peer` from relay socket `relay` (client → peer).
fn forward(shared: &Shared, sock: &UdpSocket, peer: SocketAddr, data: &[u8]) {
    match sock.try_send_to(data, peer) {
        Ok(_) => shared.metrics.relayed(Direction::ClientToPeer, data.len()),
        Err(e) => {
            tracing::trace!(%peer, "relay send failed: {e}");
            shared.metrics.dropped(DropReason::Other);
        }
    }
}

/// What to do with a client packet once the TURN state has seen it.
enum Handled<'p> {
    None,
    Reply(usize),
    Forward(Arc<UdpSocket>, SocketAddr, &'p [u8]),
}

thread_local! {
    /// The receive buffer of every relay socket served on this worker thread. A relay task
    /// borrows it only between readiness and send, never across an `.await`, so an idle
    /// allocation holds no buffer at all (memory per allocation stays small).
    static RELAY_BUF: RefCell<Box<[u8]>> =
        RefCell::new(vec![0u8; PEER_HEADROOM + RELAY_MTU + 4].into_boxed_slice());
}

/// What one read from a relay socket led to.
enum RelayStep {
    /// Nothing more queued on the socket.
    Drained,
    /// A datagram was handled (sent, or dropped).
    Handled,
    /// A datagram for a TCP/TLS client, copied into the task's stream buffer (`len` bytes, of
    /// which `payload` were the peer's data), to be written with an `.await`.
    Stream(StreamWriter, usize, usize),
}

/// Read and handle one datagram from relay socket `id`.
fn relay_one(
    shared: &Shared,
    id: RelayId,
    sock: &UdpSocket,
    buf: &mut [u8],
    stream_buf: &mut Vec<u8>,
) -> RelayStep {
    let Some(space) = buf.get_mut(PEER_HEADROOM..PEER_HEADROOM + RELAY_MTU + 1) else {
        return RelayStep::Drained;
    };
    let (n, from) = match sock.try_recv_from(space) {
        Ok(x) => x,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return RelayStep::Drained,
        // ICMP errors and the like: the socket stays usable.
        Err(_) => return RelayStep::Handled,
    };
    if n > RELAY_MTU {
        shared.metrics.dropped(DropReason::Malformed);
        return RelayStep::Handled;
    }
    let t = now();
    let out = {
        let mut st = shared.state.lock();
        let st = &mut *st;
        // This shard only holds allocations of TCP/TLS clients.
        st.turn
            .handle_peer(t, id, from, buf, n)
            .map(|o| (st.streams.get(&o.client).cloned(), o.range))
    };
    let Some((stream, range)) = out else {
        return RelayStep::Handled;
    };
    let Some(bytes) = buf.get(range) else {
        return RelayStep::Handled;
    };
    match stream {
        Some(w) => {
            stream_buf.clear();
            stream_buf.extend_from_slice(bytes);
            RelayStep::Stream(w, bytes.len(), n)
        }
        None => RelayStep::Handled,
    }
}

async fn relay_task(shared: Arc<Shared>, id: RelayId, sock: Arc<UdpSocket>) {
    // Only datagrams for TCP/TLS clients need their bytes across an `.await`; this buffer is
    // made on first use and then reused.
    let mut stream_buf: Vec<u8> = Vec::new();
    loop {
        if sock.readable().await.is_err() {
            return;
        }
        loop {
            let step = RELAY_BUF.with(|cell| match cell.try_borrow_mut() {
                Ok(mut buf) => relay_one(&shared, id, &sock, &mut buf, &mut stream_buf),
                Err(_) => RelayStep::Drained,
            });
            match step {
                RelayStep::Drained => break,
                RelayStep::Handled => {}
                RelayStep::Stream(w, len, payload) => {
                    let mut w = w.lock().await;
                    if let Some(bytes) = stream_buf.get(..len) {
                        if w.write_all(bytes).await.is_ok() {
                            shared.metrics.relayed(Direction::PeerToClient, payload);
                        }
                    }
                }
            }
        }
    }
}

async fn accept_task(
    shared: Arc<Shared>,
    listener: TcpListener,
    transport: Transport,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let local = listener.local_addr().ok();
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(local) = local else { return };
        // Over the address's connection rate or open-connection limit: closed at once.
        let Some(slot) = shared.gate.admit(from.ip()) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let tuple = FiveTuple {
                client: from,
                server: local,
                transport,
            };
            match (transport, tls) {
                (Transport::Tls, Some(acceptor)) => {
                    let hs = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    match hs.await {
                        Ok(Ok(s)) => stream_task(shared, tuple, s).await,
                        Ok(Err(e)) => tracing::debug!(%from, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%from, "TLS handshake timed out"),
                    }
                }
                _ => stream_task(shared, tuple, stream).await,
            }
        });
    }
}

async fn stream_task<S>(shared: Arc<Shared>, tuple: FiveTuple, stream: S)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, wr) = tokio::io::split(stream);
    let writer: StreamWriter = Arc::new(AsyncMutex::new(Box::new(wr)));
    shared.state.lock().streams.insert(tuple, writer.clone());
    let mut shutdown = shared.shutdown.clone();
    // Starts small (an idle connection costs little) and grows once to the largest frame seen.
    let mut buf = vec![0u8; STREAM_BUF_START];
    let mut out = vec![0u8; 2048];
    let mut filled = 0usize;
    let mut last_data = tokio::time::Instant::now();
    let idle_timer = tokio::time::sleep(IDLE_NO_ALLOCATION);
    tokio::pin!(idle_timer);
    'conn: loop {
        // Frame everything buffered.
        loop {
            let avail = buf.get(..filled).unwrap_or_default();
            let len = match icebreaker_stun::stream_frame_len(avail) {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(_) => {
                    shared.metrics.dropped(DropReason::Malformed);
                    break 'conn;
                }
            };
            if len > buf.len() {
                if len > CLIENT_MTU {
                    shared.metrics.dropped(DropReason::Malformed);
                    break 'conn;
                }
                buf.resize(len, 0);
            }
            if filled < len {
                break;
            }
            let packet = &buf[..len];
            match shared.client_packet(tuple, packet, &mut out) {
                Handled::None => {}
                Handled::Reply(n) => {
                    let mut w = writer.lock().await;
                    if w.write_all(&out[..n]).await.is_err() {
                        break 'conn;
                    }
                }
                Handled::Forward(relay, peer, data) => forward(&shared, &relay, peer, data),
            }
            buf.copy_within(len..filled, 0);
            filled -= len;
        }
        let Some(space) = buf.get_mut(filled..) else {
            break;
        };
        tokio::select! {
            r = rd.read(space) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    filled += n;
                    last_data = tokio::time::Instant::now();
                }
            },
            // The idle timer is not touched per read: when it fires, it is pushed to the real
            // deadline (which depends on whether the connection holds an allocation).
            _ = &mut idle_timer => {
                let has_alloc = shared.state.lock().turn.relays_of(&tuple).next().is_some();
                let idle = if has_alloc {
                    IDLE_WITH_ALLOCATION
                } else {
                    IDLE_NO_ALLOCATION
                };
                let deadline = last_data + idle;
                if deadline <= tokio::time::Instant::now() {
                    break;
                }
                idle_timer.as_mut().reset(deadline);
            }
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    shared.with_turn(|turn, binder| turn.client_closed(&tuple, binder));
    shared.state.lock().streams.remove(&tuple);
    let mut w = writer.lock().await;
    let _ = w.shutdown().await;
}

/// Once a second: expire state on every shard and publish the counters summed over them.
async fn timer_task(shared: Arc<Shared>) {
    let mut last = Stats::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let t = now();
        let mut stats = Stats::default();
        shared.each_shard(|turn, binder| {
            turn.handle_timeout(t, binder);
            stats.merge(turn.stats());
        });
        publish(&shared.metrics, &stats, &last);
        last = stats;
    }
}

fn publish(m: &Metrics, s: &Stats, last: &Stats) {
    m.allocations.set(s.allocations as i64);
    m.permissions.set(s.permissions as i64);
    m.channels.set(s.channels as i64);
    m.allocations_created
        .inc_by(s.allocations_created - last.allocations_created);
    for (i, (now, before)) in s.errors.iter().zip(&last.errors).enumerate() {
        let code = Stats::ERROR_CODES.get(i).copied().unwrap_or(0);
        let slot = ERROR_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(ERROR_CODES.len());
        if let Some(c) = m.error_responses.get(slot) {
            c.inc_by(now - before);
        }
    }
    for (i, f) in icebreaker_turn::AuthFailure::ALL.iter().enumerate() {
        let d = s.auth_failures[i] - last.auth_failures[i];
        let r = match f {
            icebreaker_turn::AuthFailure::Missing | icebreaker_turn::AuthFailure::BadRequest => {
                MAuth::Missing
            }
            icebreaker_turn::AuthFailure::BadIntegrity
            | icebreaker_turn::AuthFailure::WrongCredentials => MAuth::BadIntegrity,
            icebreaker_turn::AuthFailure::UnknownUser => MAuth::UnknownUser,
            icebreaker_turn::AuthFailure::StaleNonce => MAuth::StaleNonce,
            icebreaker_turn::AuthFailure::Expired => MAuth::Expired,
            icebreaker_turn::AuthFailure::WrongRealm => MAuth::WrongRealm,
        };
        m.auth_failures[r as usize].inc_by(d);
    }
    m.dropped_packets[DropReason::Malformed as usize]
        .inc_by(s.dropped_malformed - last.dropped_malformed);
    m.dropped_packets[DropReason::NoAllocation as usize]
        .inc_by(s.dropped_no_allocation - last.dropped_no_allocation);
    m.dropped_packets[DropReason::NoPermission as usize]
        .inc_by(s.dropped_no_permission - last.dropped_no_permission);
    m.peer_denied.inc_by(s.peer_denied - last.peer_denied);
    for (i, r) in crate::metrics::Refusal::TURN.iter().enumerate() {
        m.refusals[*r as usize].inc_by(s.refused[i] - last.refused[i]);
    }
}
