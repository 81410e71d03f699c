//! The SIP gateway's I/O (docs/SIP.md): SIP over WebSocket (RFC 7118) at `/sip` on the HTTP
//! listener, and the socket toward the configured SIP server or trunk (`sip_upstream`), with
//! the edge proxy of [`proxy`] in between.
//!
//! Each WebSocket is a flow: its frames go to the proxy, and what the proxy sends to the flow is
//! queued to its writer task (bounded; a client that does not read loses the connection, never
//! the others). The upstream side is one UDP socket (`sip_listen`), and with `transport=tcp` or
//! TLS (`sips:`, `transport=tls`) one TCP or TLS connection to the upstream (`stream_link`).

pub mod dial;
pub mod media;
pub mod proxy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use icebreaker_signal::RateLimiter;
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::http::HttpState;
use proxy::{Dest, EdgeProxy, FlowId, Out, ProxyConfig};

/// Largest SIP message taken from a client or the upstream.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Messages queued toward a TCP or TLS upstream (beyond: dropped, as a lost datagram would be).
const STREAM_QUEUE: usize = 1024;
/// Connections the upstream may have open to us at once.
const MAX_ACCEPTED: usize = 16;
/// Time to open the connection to a TCP or TLS upstream (TLS handshake included).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages queued per WebSocket before the connection is dropped.
const FLOW_QUEUE: usize = 256;
/// A WebSocket that sent nothing (no frame, no pong) this long is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// The server pings each WebSocket this often.
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// Messages per second per WebSocket (burst twice that).
const RATE: f64 = 50.0;

/// The upstream as configured: `sip:host[:port][;transport=udp|tcp|tls]` or
/// `sips:host[:port][;transport=tcp]` (TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The host as written (no brackets around an IPv6 address): what is resolved, and the name
    /// the TLS certificate must carry (SNI).
    pub host: String,
    pub port: u16,
    /// As in a Via: `UDP`, `TCP` or `TLS`.
    pub transport: &'static str,
}

/// Parses `sip_upstream`. TLS is a `sips:` URI (over TCP, RFC 5630) or `transport=tls`; its
/// default port is 5061, the others' 5060 (RFC 3261 §19.1.2).
pub fn parse_upstream(s: &str) -> Result<Upstream, String> {
    let uri = icebreaker_sip::SipUri::parse(s.trim()).map_err(|e| {
        format!(
            "not a SIP URI ({e:?}); write e.g. sip:pbx.example.org, \
             sip:10.0.0.8:5060;transport=tcp or sips:pbx.example.org"
        )
    })?;
    let sips = uri.scheme == icebreaker_sip::Scheme::Sips;
    let transport = match (
        sips,
        uri.params
            .get("transport")
            .flatten()
            .map(str::to_ascii_lowercase)
            .as_deref(),
    ) {
        (false, None | Some("udp")) => "UDP",
        (false, Some("tcp")) => "TCP",
        (true, None | Some("tcp")) | (_, Some("tls")) => "TLS",
        (true, Some(other)) => {
            return Err(format!(
                "a sips: URI means TLS over TCP, not transport={other}; \
                 write sips:host[:port] for TLS, or sip:host[:port];transport=udp or tcp"
            ))
        }
        (false, Some(other)) => {
            return Err(format!(
                "transport={other} is not supported (udp, tcp or tls; \
                 or a sips: URI for TLS)"
            ))
        }
    };
    let default_port = if transport == "TLS" { 5061 } else { 5060 };
    Ok(Upstream {
        host: uri
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: uri.port.unwrap_or(default_port),
        transport,
    })
}

/// One WebSocket: its queue and the `Host` it used (candidate address for the media bridge).
#[derive(Debug, Clone)]
struct Flow {
    tx: mpsc::Sender<String>,
    host: Option<String>,
}

/// The gateway: the proxy, the flows, the upstream socket.
pub struct SipService {
    proxy: Mutex<EdgeProxy>,
    flows: Mutex<HashMap<FlowId, Flow>>,
    /// The media bridge (`None` without an SFU port: SDP passes untouched).
    media: Option<Arc<media::MediaBridge>>,
    next_flow: AtomicU64,
    udp: Arc<UdpSocket>,
    /// With a TCP or TLS upstream: the queue of the one connection to it.
    stream: Option<mpsc::Sender<Vec<u8>>>,
    upstream: SocketAddr,
    /// The upstream's host as configured (tel: URIs dialed become `sip:<number>@<host>`).
    pub(crate) upstream_host: String,
    /// The server's own UA (`sip_dial`).
    dial: std::sync::OnceLock<Arc<dial::DialService>>,
    /// Datagrams (and connections) dropped because they did not come from the upstream's
    /// address.
    foreign: AtomicU64,
    /// Connections the upstream opened to us, by its address.
    accepted: Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for SipService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipService")
            .field("local", &self.proxy.lock().config().local)
            .finish_non_exhaustive()
    }
}

impl SipService {
    /// Binds the upstream socket and starts its reader; `None` when `sip_upstream` is not set.
    pub async fn start(
        config: &Config,
        ws_host: String,
        sfu: Option<Arc<crate::sfu::SfuService>>,
        signal: Option<Arc<crate::signal::SignalService>>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        let Some(spec) = &config.sip_upstream else {
            return Ok(None);
        };
        let up = parse_upstream(spec).map_err(|e| anyhow::anyhow!("sip_upstream: {e}"))?;
        let tls = if up.transport == "TLS" {
            Some(tls_connector(&up, config.sip_tls_ca.as_deref())?)
        } else {
            None
        };
        // An address of sip_listen's family first (the socket is bound there), else the first.
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((up.host.as_str(), up.port))
            .await
            .with_context(|| format!("sip_upstream: cannot resolve {}", up.host))?
            .collect();
        let upstream = addrs
            .iter()
            .find(|a| a.is_ipv4() == config.sip_listen.is_ipv4())
            .or(addrs.first())
            .copied()
            .with_context(|| format!("sip_upstream: {} has no address", up.host))?;
        let udp = UdpSocket::bind(config.sip_listen)
            .await
            .with_context(|| format!("cannot bind SIP UDP {}", config.sip_listen))?;
        let mut local = udp.local_addr()?;
        let bound = local;
        if local.ip().is_unspecified() {
            // The address the upstream sees: the one this host uses to reach it.
            let probe = std::net::UdpSocket::bind(SocketAddr::new(local.ip(), 0))?;
            probe.connect(upstream)?;
            local.set_ip(probe.local_addr()?.ip());
        }
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
        let proxy = EdgeProxy::new(ProxyConfig {
            upstream,
            upstream_transport: up.transport,
            local,
            ws_host,
            ws_secure: config.tls_cert.is_some(),
            secret,
        });
        tracing::info!(%upstream, %local, transport = up.transport, "SIP gateway: /sip → upstream");
        let (stream, stream_rx) = if up.transport == "UDP" {
            (None, None)
        } else {
            let (tx, rx) = mpsc::channel(STREAM_QUEUE);
            (Some(tx), Some(rx))
        };
        let media = match sfu.clone() {
            Some(sfu) => Some(media::MediaBridge::new(sfu, local.ip(), shutdown.clone()).await),
            None => {
                tracing::warn!("SIP gateway without an SFU port (sfu_listen): no media bridge, SDP passes as it is");
                None
            }
        };
        let svc = Arc::new(SipService {
            proxy: Mutex::new(proxy),
            flows: Mutex::new(HashMap::new()),
            media,
            next_flow: AtomicU64::new(1),
            udp: Arc::new(udp),
            stream,
            upstream,
            upstream_host: up.host.clone(),
            dial: std::sync::OnceLock::new(),
            foreign: AtomicU64::new(0),
            accepted: Mutex::new(HashMap::new()),
            shutdown,
        });
        if config.sip_dial {
            match (sfu, signal) {
                (Some(sfu), Some(signal)) => {
                    let from = config.sip_from.clone().unwrap_or_else(|| {
                        format!(
                            "sip:{}@{}",
                            config.sip_username.as_deref().unwrap_or("icebreaker"),
                            up.host
                        )
                    });
                    let d = dial::DialService::start(
                        &svc,
                        signal,
                        sfu,
                        dial::DialConfig {
                            from,
                            username: config.sip_username.clone(),
                            password: config.sip_password.clone(),
                            local,
                            transport: up.transport,
                            rtp_ip: local.ip(),
                        },
                    );
                    let _ = svc.dial.set(d);
                    tracing::info!("SIP gateway: room members may dial phones (sip_dial)");
                }
                _ => tracing::warn!("sip_dial needs the SFU port (sfu_listen): dialing is off"),
            }
        }
        let reader = svc.clone();
        tokio::spawn(async move { reader.read_upstream().await });
        if up.transport == "TCP" {
            // The upstream may connect to us (our Path and Record-Route say transport=tcp).
            match std::net::TcpListener::bind(bound).and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            }) {
                Ok(l) => {
                    let acc = svc.clone();
                    tokio::spawn(async move { acc.accept_upstream(l).await });
                }
                Err(e) => tracing::warn!(
                    "SIP: cannot listen on TCP {bound} ({e}); the upstream can only answer on our connection"
                ),
            }
        }
        if let Some(rx) = stream_rx {
            let link = svc.clone();
            match tls {
                Some((connector, name)) => tokio::spawn(async move {
                    let connect = move || {
                        let (connector, name) = (connector.clone(), name.clone());
                        async move { connector.connect(name, tcp_connect(upstream).await?).await }
                    };
                    link.stream_link(rx, "TLS", connect).await
                }),
                None => tokio::spawn(async move {
                    link.stream_link(rx, "TCP", move || tcp_connect(upstream))
                        .await
                }),
            };
        }
        Ok(Some(svc))
    }

    /// The upstream socket's address (Via, Path, Record-Route toward the upstream).
    pub fn local_addr(&self) -> SocketAddr {
        self.proxy.lock().config().local
    }

    /// Reads the upstream socket until shutdown.
    async fn read_upstream(self: Arc<Self>) {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let stop = stopped(self.shutdown.clone());
        tokio::pin!(stop);
        loop {
            let (n, src) = tokio::select! {
                r = self.udp.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!("SIP UDP read: {e}");
                        continue;
                    }
                },
                _ = &mut stop => return,
            };
            let Some(data) = buf.get(..n) else { continue };
            // Only the upstream speaks to this socket: SIP from any other address is dropped
            // (no answers to scanners and spoofed floods; requests for our clients come from
            // the PBX or trunk they registered with).
            if src.ip() != self.upstream.ip() {
                self.foreign.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if icebreaker_sip::keep_alive(data).is_some() || self.for_dial(data) {
                continue;
            }
            let outs = self.proxy.lock().from_upstream(src, data);
            self.dispatch(outs, None).await;
        }
    }

    /// Datagrams dropped because they came from elsewhere than the upstream.
    pub fn dropped_foreign(&self) -> u64 {
        self.foreign.load(Ordering::Relaxed)
    }

    /// `/sip` WebSockets open.
    pub fn flows(&self) -> usize {
        self.flows.lock().len()
    }

    /// The upstream's address.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// The server's own UA, when `sip_dial` is on.
    pub fn dial(&self) -> Option<&Arc<dial::DialService>> {
        self.dial.get()
    }

    /// Sends bytes to the upstream (over its TCP connection when it has one).
    pub(crate) async fn send_upstream(&self, bytes: Vec<u8>) {
        match &self.stream {
            Some(tx) => {
                if tx.try_send(bytes).is_err() {
                    tracing::debug!("SIP TCP queue full: message dropped");
                }
            }
            None => {
                if let Err(e) = self.udp.send_to(&bytes, self.upstream).await {
                    tracing::debug!(upstream = %self.upstream, "SIP UDP send: {e}");
                }
            }
        }
    }

    /// A message from the upstream for one of the server's own calls: taken.
    fn for_dial(&self, raw: &[u8]) -> bool {
        let Some(d) = self.dial.get() else {
            return false;
        };
        // Proxied traffic (most of it) is not parsed twice: our calls' Call-IDs carry a marker.
        if !raw
            .windows(dial::CALL_ID_MARK.len())
            .any(|w| w == dial::CALL_ID_MARK)
        {
            return false;
        }
        match icebreaker_sip::Message::parse(raw) {
            Ok(m) => d.intercept(&m),
            Err(_) => false,
        }
    }

    /// The media bridge, when there is one.
    pub fn media(&self) -> Option<&Arc<media::MediaBridge>> {
        self.media.as_ref()
    }

    /// Sends what the proxy produced (`origin`: the flow it came from), SDP translated by the
    /// media bridge on the way.
    async fn dispatch(&self, outs: Vec<Out>, origin: Option<FlowId>) {
        for out in outs {
            let out = match &self.media {
                Some(m) => {
                    let host_flow = match out.dest {
                        Dest::Flow(f) => Some(f),
                        Dest::Upstream(_) => origin,
                    };
                    let host = host_flow
                        .and_then(|f| self.flows.lock().get(&f).and_then(|x| x.host.clone()));
                    m.process(out, origin, host).await
                }
                None => out,
            };
            let bytes = out.msg.to_bytes();
            match out.dest {
                Dest::Upstream(addr)
                    if self.accepted.lock().contains_key(&addr)
                        || (addr.ip() == self.upstream.ip() && self.stream.is_some()) =>
                {
                    // A connection the upstream opened to that address first (responses go
                    // back where their request came from), else our own connection.
                    let tx = self
                        .accepted
                        .lock()
                        .get(&addr)
                        .cloned()
                        .or_else(|| self.stream.clone());
                    if let Some(tx) = tx {
                        if tx.try_send(bytes).is_err() {
                            tracing::debug!("SIP upstream queue full: message dropped");
                        }
                    }
                }
                Dest::Upstream(addr) => {
                    if let Err(e) = self.udp.send_to(&bytes, addr).await {
                        tracing::debug!(%addr, "SIP UDP send: {e}");
                    }
                }
                Dest::Flow(flow) => {
                    let Ok(text) = String::from_utf8(bytes) else {
                        continue;
                    };
                    let tx = self.flows.lock().get(&flow).map(|f| f.tx.clone());
                    if let Some(tx) = tx {
                        if tx.try_send(text).is_err() {
                            // Not reading: its connection goes (the writer sees the sender gone).
                            self.flows.lock().remove(&flow);
                        }
                    }
                }
            }
        }
    }

    /// One WebSocket flow until it closes.
    async fn run_flow(self: Arc<Self>, socket: WebSocket, host: Option<String>) {
        let flow = self.next_flow.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel::<String>(FLOW_QUEUE);
        self.flows.lock().insert(
            flow,
            Flow {
                tx: tx.clone(),
                host,
            },
        );
        let (mut sink, mut stream) = socket.split();
        let mut limiter = RateLimiter::new(RATE, RATE * 2.0);
        let mut last_heard = Instant::now();
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        let stop = stopped(self.shutdown.clone());
        tokio::pin!(stop);
        drop(tx);
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(text) => {
                        if sink.send(WsMessage::text(text)).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
                frame = stream.next() => {
                    let data = match frame {
                        Some(Ok(WsMessage::Text(t))) => t.as_str().as_bytes().to_vec(),
                        Some(Ok(WsMessage::Binary(b))) => b.to_vec(),
                        Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => {
                            last_heard = Instant::now();
                            continue;
                        }
                    };
                    last_heard = Instant::now();
                    if !limiter.allow(Instant::now()) {
                        if limiter.abusive() {
                            break;
                        }
                        continue;
                    }
                    if let Some(k) = icebreaker_sip::keep_alive(&data) {
                        if k == icebreaker_sip::KeepAlive::Ping
                            && sink.send(WsMessage::text("\r\n")).await.is_err()
                        {
                            break;
                        }
                        continue;
                    }
                    let outs = self.proxy.lock().from_client(flow, &data);
                    self.dispatch(outs, Some(flow)).await;
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > IDLE_TIMEOUT
                        || sink.send(WsMessage::Ping(Default::default())).await.is_err()
                    {
                        break;
                    }
                }
                _ = &mut stop => break,
            }
        }
        self.flows.lock().remove(&flow);
        let _ = sink.close().await;
        // Its calls are hung up on its behalf.
        if let Some(media) = &self.media {
            for bye in media.flow_closed(flow).await {
                let outs = self.proxy.lock().from_client(flow, bye.as_bytes());
                self.dispatch(outs, Some(flow)).await;
            }
        }
    }
}

impl SipService {
    /// The connection to a TCP or TLS upstream (`label`), made by `connect`: opened when there
    /// is something to send, opened again after it drops (what was queued meanwhile waits,
    /// bounded); messages read from it are framed by Content-Length (RFC 3261 §18.3) and go to
    /// the proxy as from the upstream; CRLFCRLF keep-alives get their CRLF (RFC 5626 §4.4.1).
    /// Takes every complete message off the front of `buf` (bytes read from a stream from
    /// `src`) to the dial service or the proxy; returns the CRLF pings to answer. `Err`: the
    /// stream cannot be read further.
    async fn take_frames(
        &self,
        buf: &mut Vec<u8>,
        src: SocketAddr,
        limits: &icebreaker_sip::Limits,
    ) -> Result<usize, icebreaker_sip::Error> {
        let mut pings = 0;
        loop {
            match icebreaker_sip::frame(buf, limits)? {
                icebreaker_sip::Framed::Incomplete => return Ok(pings),
                icebreaker_sip::Framed::KeepAlive { kind, consumed } => {
                    if kind == icebreaker_sip::KeepAlive::Ping {
                        pings += 1;
                    }
                    buf.drain(..consumed.min(buf.len()));
                }
                icebreaker_sip::Framed::Message { consumed, .. } => {
                    let outs = {
                        let raw = buf.get(..consumed).unwrap_or_default();
                        if self.for_dial(raw) {
                            Vec::new()
                        } else {
                            self.proxy.lock().from_upstream(src, raw)
                        }
                    };
                    buf.drain(..consumed.min(buf.len()));
                    self.dispatch(outs, None).await;
                }
            }
        }
    }

    /// Connections the upstream opens to us (a TCP upstream reaches a client through its Path
    /// or Record-Route URI, `sip_listen` with `transport=tcp`, when it does not reuse ours):
    /// only from the upstream's address, at most `MAX_ACCEPTED`; what comes on them goes to the
    /// proxy, and what goes to that address and port goes back on them.
    async fn accept_upstream(self: Arc<Self>, listener: tokio::net::TcpListener) {
        let stop = stopped(self.shutdown.clone());
        tokio::pin!(stop);
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut stop => return,
            };
            if peer.ip() != self.upstream.ip() || self.accepted.lock().len() >= MAX_ACCEPTED {
                self.foreign.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let svc = self.clone();
            tokio::spawn(async move { svc.accepted_conn(stream, peer).await });
        }
    }

    async fn accepted_conn(self: Arc<Self>, stream: tokio::net::TcpStream, peer: SocketAddr) {
        use tokio::io::AsyncReadExt;
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
        self.accepted.lock().insert(peer, tx.clone());
        let writer = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if send_all(&mut wr, &m).await.is_err() {
                    return;
                }
            }
        });
        let limits = icebreaker_sip::Limits::default();
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 16 * 1024];
        let stop = stopped(self.shutdown.clone());
        tokio::pin!(stop);
        loop {
            let n = tokio::select! {
                r = rd.read(&mut chunk) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
                _ = &mut stop => break,
            };
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            match self.take_frames(&mut buf, peer, &limits).await {
                Ok(pings) => {
                    for _ in 0..pings {
                        let _ = tx.try_send(b"\r\n".to_vec());
                    }
                }
                Err(e) => {
                    tracing::debug!(%peer, "SIP TCP from the upstream: {e:?}");
                    break;
                }
            }
        }
        self.accepted.lock().remove(&peer);
        writer.abort();
    }

    async fn stream_link<S, C, F>(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Vec<u8>>,
        label: &'static str,
        connect: C,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
        C: Fn() -> F,
        F: std::future::Future<Output = std::io::Result<S>>,
    {
        let stop = stopped(self.shutdown.clone());
        tokio::pin!(stop);
        let limits = icebreaker_sip::Limits::default();
        let mut pending: Option<Vec<u8>> = None;
        'outer: loop {
            let first = match pending.take() {
                Some(m) => m,
                None => tokio::select! {
                    m = rx.recv() => match m { Some(m) => m, None => return },
                    _ = &mut stop => return,
                },
            };
            let conn = tokio::select! {
                c = tokio::time::timeout(CONNECT_TIMEOUT, connect()) => c,
                _ = &mut stop => return,
            };
            let mut conn = match conn {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::warn!(upstream = %self.upstream, "SIP {label}: cannot connect ({e}); message dropped");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(_) => {
                    tracing::warn!(upstream = %self.upstream, "SIP {label}: no connection within {CONNECT_TIMEOUT:?}; message dropped");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if send_all(&mut conn, &first).await.is_err() {
                pending = Some(first);
                continue;
            }
            let mut buf: Vec<u8> = Vec::with_capacity(4096);
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => {
                            if send_all(&mut conn, &m).await.is_err() {
                                pending = Some(m);
                                continue 'outer;
                            }
                        }
                        None => return,
                    },
                    r = conn.read(&mut chunk) => {
                        let n = match r {
                            Ok(0) | Err(_) => continue 'outer,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                        match self.take_frames(&mut buf, self.upstream, &limits).await {
                            Ok(pings) => {
                                for _ in 0..pings {
                                    if send_all(&mut conn, b"\r\n").await.is_err() {
                                        continue 'outer;
                                    }
                                }
                            }
                            Err(e) => {
                                // A stream cannot be resynchronised: drop the connection.
                                tracing::debug!("SIP {label} from the upstream: {e:?}");
                                continue 'outer;
                            }
                        }
                    }
                    _ = &mut stop => return,
                }
            }
        }
    }
}

/// Writes `data` and flushes it: tokio-rustls takes the plaintext even when the socket did not
/// take all of its records, which then wait for a flush (TCP's flush does nothing).
async fn send_all<S: AsyncWrite + Unpin>(conn: &mut S, data: &[u8]) -> std::io::Result<()> {
    conn.write_all(data).await?;
    conn.flush().await
}

/// A TCP connection to `addr`, Nagle off (SIP messages are small and latency matters).
async fn tcp_connect(addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let conn = tokio::net::TcpStream::connect(addr).await?;
    let _ = conn.set_nodelay(true);
    Ok(conn)
}

/// The TLS client toward `up`: the server's certificate verified against `ca` (a PEM file of CA
/// certificates, `sip_tls_ca`) or else the system CA bundle, for the name in `sip_upstream`
/// (also sent as SNI; an IP address is checked against the certificate's IP addresses).
fn tls_connector(
    up: &Upstream,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<(tokio_rustls::TlsConnector, ServerName<'static>)> {
    let (ca, what) = match ca {
        Some(p) => (p.to_path_buf(), "sip_tls_ca"),
        None => (
            crate::tls::system_ca_file().context(
                "sip_upstream is TLS but no system CA bundle was found (set SSL_CERT_FILE, or \
                 sip_tls_ca to the CA that signed the upstream's certificate)",
            )?,
            "the system CA bundle",
        ),
    };
    let roots = crate::tls::root_store(&ca)
        .with_context(|| format!("sip_upstream is TLS: {what} cannot be used"))?;
    let config = crate::tls::client_config(roots)?;
    let name = ServerName::try_from(up.host.clone()).map_err(|_| {
        anyhow::anyhow!(
            "sip_upstream: {:?} is not a name a TLS certificate can carry",
            up.host
        )
    })?;
    Ok((tokio_rustls::TlsConnector::from(config), name))
}

/// Resolves when the server shuts down.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// `GET /sip`: SIP over WebSocket (subprotocol `sip`, RFC 7118).
pub async fn ws_handler(
    State(state): State<HttpState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(svc) = state.sip.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "the SIP gateway is off (set sip_upstream)\n",
        )
            .into_response();
    };
    // The same Origin rule as signaling (a page of another site cannot use this server's
    // gateway unless `signal_origins` lists it).
    if let Some(signal) = &state.signal {
        if let Err(e) = signal.check_origin(&headers) {
            return (StatusCode::FORBIDDEN, format!("{}\n", e.message)).into_response();
        }
    }
    let offers_sip = headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("sip"));
    if !offers_sip {
        return (
            StatusCode::BAD_REQUEST,
            "SIP over WebSocket needs the subprotocol `sip` (RFC 7118)\n",
        )
            .into_response();
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    ws.protocols(["sip"])
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| svc.run_flow(socket, host))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn upstream_transports_and_default_ports() {
        let up = |s: &str| {
            let u = parse_upstream(s).unwrap();
            (u.host, u.port, u.transport)
        };
        assert_eq!(
            up("sip:pbx.example.org"),
            ("pbx.example.org".into(), 5060, "UDP")
        );
        assert_eq!(
            up("sip:10.0.0.8:5070;transport=TCP"),
            ("10.0.0.8".into(), 5070, "TCP")
        );
        assert_eq!(
            up("sips:pbx.example.org"),
            ("pbx.example.org".into(), 5061, "TLS")
        );
        assert_eq!(up("sips:pbx.example.org;transport=tcp").2, "TLS");
        assert_eq!(
            up("sip:pbx.example.org;transport=tls"),
            ("pbx.example.org".into(), 5061, "TLS")
        );
        assert_eq!(
            up("sip:[2001:db8::8]:5062;transport=tls"),
            ("2001:db8::8".into(), 5062, "TLS")
        );
        let e = parse_upstream("sips:pbx.example.org;transport=udp").unwrap_err();
        assert!(e.contains("TLS over TCP"), "{e}");
        let e = parse_upstream("sip:pbx.example.org;transport=sctp").unwrap_err();
        assert!(e.contains("udp, tcp or tls"), "{e}");
        assert!(parse_upstream("pbx.example.org").is_err());
    }
}
