//! The SFU's I/O around the sans-IO [`icebreaker_sfu::Sfu`]: one UDP socket for every
//! participant (`--sfu-listen`, default `0.0.0.0:3479`), passive ICE-TCP on the same port number
//! (RFC 6544, RFC 4571 framing), and the bridge to signaling (`sfu` messages in, `sfu` messages
//! out, departures).
//!
//! One task owns the `Sfu`: it reads datagrams (a batch at a time), commands from signaling and
//! framed TCP packets, drives the timers, and writes what the SFU produces. The SFU is a single
//! task: per-core scaling of the SFU (several tasks, rooms pinned to one) is a later step; see
//! docs/ARCHITECTURE.md.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use icebreaker_sfu::bridge::{
    BridgeConfig, BridgeEvent, BridgeTransmit, Chosen, Gateway, LegStats, PlainMedia,
};
use icebreaker_sfu::Protocol;
use icebreaker_sfu::{PeerStats, RoomStats, Sfu, SfuConfig, SfuEvent, SfuTotals};
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::signal::SignalService;

/// Commands queued for the SFU task at most; beyond, messages are dropped (and logged).
const QUEUE: usize = 16_384;
/// An ICE-TCP connection that sends nothing this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(30);
/// Datagrams read per wake.
const BATCH: usize = 64;
/// RTP packets from the SIP side waiting for the task (~100 ms of 200 calls).
const MEDIA_QUEUE: usize = 2048;

/// A command for the SFU task.
#[derive(Debug)]
pub enum Cmd {
    /// An `sfu` message from a member. `host`: the `Host` its session joined with.
    Message {
        room: String,
        peer: String,
        data: Box<RawValue>,
        host: Option<String>,
    },
    /// A member left an SFU room.
    Remove { room: String, peer: String },
    /// Per-participant figures of a room.
    PeerStats {
        room: String,
        reply: oneshot::Sender<Vec<PeerStats>>,
    },
    /// The SIP gateway's media bridge (`icebreaker_sfu::bridge`): its legs share this task,
    /// this port and its demultiplexing.
    Bridge(BridgeCmd),
}

/// A fresh id for a media-bridge leg or group (one id space for both).
pub fn next_bridge_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A media-bridge command from the SIP gateway (see `crate::sip::media`).
#[derive(Debug)]
pub enum BridgeCmd {
    /// The browser called: answer its WebRTC offer with the SIP side's codec.
    Answer {
        leg: u64,
        offer: String,
        plain: PlainMedia,
        /// The SIP side's RTP socket of this leg (plain RTP goes out of it).
        socket: Arc<UdpSocket>,
        /// The `Host` the browser used (candidate address, as for SFU rooms).
        host: Option<String>,
        reply: oneshot::Sender<Result<(String, Chosen), String>>,
    },
    /// A new offer from the browser on an established leg (re-INVITE).
    Renegotiate {
        leg: u64,
        offer: String,
        remote: SocketAddr,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// The SIP side called: make a WebRTC offer with its codecs.
    Offer {
        leg: u64,
        plain: PlainMedia,
        socket: Arc<UdpSocket>,
        host: Option<String>,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// A dialed call's phone side (after its answer): a group the room's browsers join.
    OpenGroup {
        group: u64,
        plain: PlainMedia,
        socket: Arc<UdpSocket>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A browser's offer to a dialed phone: a leg of its group.
    GroupAnswer {
        group: u64,
        leg: u64,
        offer: String,
        host: Option<String>,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// A dialed call ended.
    CloseGroup { group: u64 },
    /// The browser's answer to an `Offer`.
    AcceptAnswer {
        leg: u64,
        answer: String,
        reply: oneshot::Sender<Result<Chosen, String>>,
    },
    /// A datagram from the SIP side on a leg's RTP socket.
    Plain {
        leg: u64,
        source: SocketAddr,
        data: Vec<u8>,
    },
    /// The SIP side's media address changed (re-INVITE).
    SetRemote { leg: u64, remote: SocketAddr },
    /// The call ended.
    Close { leg: u64 },
    /// Counters of a leg.
    Stats {
        leg: u64,
        reply: oneshot::Sender<Option<LegStats>>,
    },
    /// Where legs that end by themselves are reported.
    Watch {
        tx: mpsc::UnboundedSender<(u64, &'static str)>,
    },
}

/// Figures refreshed by the task once a second.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub totals: SfuTotals,
    pub rooms: Vec<RoomStats>,
    pub bridge: BridgeCounters,
}

/// The SIP gateway's media bridge, as the I/O layer counts it (for metrics and the admin view).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct BridgeCounters {
    /// WebRTC legs (browsers) open.
    pub legs: usize,
    /// Dialed calls (groups) open.
    pub groups: usize,
    /// Datagrams and bytes from the SIP side (plain RTP).
    pub sip_packets_in: u64,
    pub sip_bytes_in: u64,
    /// ... to the SIP side.
    pub sip_packets_out: u64,
    pub sip_bytes_out: u64,
    /// Datagrams and bytes from browsers (SRTP, RTCP, STUN, DTLS).
    pub webrtc_packets_in: u64,
    pub webrtc_bytes_in: u64,
    /// ... to browsers.
    pub webrtc_packets_out: u64,
    pub webrtc_bytes_out: u64,
}

/// The handle the rest of the server holds.
#[derive(Debug)]
pub struct SfuService {
    tx: mpsc::Sender<Cmd>,
    /// RTP from the SIP side of the bridge (`BridgeCmd::Plain` only).
    media: mpsc::Sender<BridgeCmd>,
    /// The UDP address as bound.
    pub udp: SocketAddr,
    /// The ICE-TCP address as bound.
    pub tcp: SocketAddr,
    snapshot: Mutex<Snapshot>,
}

impl SfuService {
    /// Queue a command (dropped with a log line when the SFU is overwhelmed).
    pub fn send(&self, cmd: Cmd) {
        if let Err(e) = self.tx.try_send(cmd) {
            tracing::warn!("sfu: command queue full, dropped: {e}");
        }
    }

    /// The last figures.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().clone()
    }

    /// Per-participant figures of `room`.
    /// Sends a media-bridge command, waiting for room in the queue (the SIP gateway's calls
    /// are few and must not be dropped).
    pub async fn bridge(&self, cmd: BridgeCmd) {
        if self.tx.send(Cmd::Bridge(cmd)).await.is_err() {
            tracing::debug!("sfu: task gone, bridge command dropped");
        }
    }

    /// Sends a media-bridge command that answers (`reply`), and waits for its answer.
    pub async fn ask<T>(
        &self,
        cmd: impl FnOnce(oneshot::Sender<Result<T, String>>) -> BridgeCmd,
    ) -> Result<T, String> {
        let (reply, rx) = oneshot::channel();
        self.bridge(cmd(reply)).await;
        rx.await
            .unwrap_or_else(|_| Err("the media bridge is gone".into()))
    }

    /// Sends a media-bridge command without waiting (media: dropped when the queue is full).
    pub fn try_bridge(&self, cmd: BridgeCmd) {
        // Media has its own short queue: under overload it is dropped (as the network would)
        // instead of delaying control commands and building up seconds of latency.
        let r = match cmd {
            BridgeCmd::Plain { .. } => self.media.try_send(cmd).is_err(),
            cmd => self.tx.try_send(Cmd::Bridge(cmd)).is_err(),
        };
        if r {
            tracing::trace!("sfu: bridge queue full, dropped");
        }
    }

    pub async fn peer_stats(&self, room: &str) -> Vec<PeerStats> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::PeerStats {
            room: room.to_owned(),
            reply,
        });
        rx.await.unwrap_or_default()
    }
}

/// Binds the SFU's UDP socket and TCP listener (same port; when `listen` has port 0, the TCP
/// listener picks it, and another is tried if it is taken for UDP).
pub fn bind(listen: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    let (tcp, udp) = crate::serve::same_port(
        listen,
        |a| {
            std::net::TcpListener::bind(a)
                .with_context(|| format!("cannot bind the SFU's ICE-TCP port {a}"))
        },
        |a| {
            std::net::UdpSocket::bind(a)
                .with_context(|| format!("cannot bind the SFU's UDP port {a}"))
        },
        |t| t.local_addr(),
    )?;
    udp.set_nonblocking(true)?;
    let sock = socket2::Socket::from(udp);
    // Room for bursts of media (keyframes) across many participants.
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    let udp = UdpSocket::from_std(sock.into())?;
    tcp.set_nonblocking(true)?;
    Ok((udp, TcpListener::from_std(tcp)?))
}

/// Where clients reach the SFU: `external` (the first `--external-ip`), else the listen IP when
/// it is specific, else the IP in the client's `Host`, else `fallback` (the relay IP), else
/// 127.0.0.1.
pub fn candidate_ip(
    listen: IpAddr,
    external: Option<IpAddr>,
    fallback: Option<IpAddr>,
    host: Option<&str>,
) -> IpAddr {
    if let Some(ip) = external {
        return ip;
    }
    if !listen.is_unspecified() {
        return listen;
    }
    if let Some(h) = host.and_then(crate::signal::host_of) {
        let bare = h.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            if !ip.is_unspecified() {
                return ip;
            }
        }
        if bare == "localhost" {
            return IpAddr::V4(Ipv4Addr::LOCALHOST);
        }
    }
    fallback
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// Everything the task needs.
pub struct Start {
    pub udp: UdpSocket,
    pub tcp: TcpListener,
    pub external: Option<IpAddr>,
    pub fallback: Option<IpAddr>,
    pub signal: Weak<SignalService>,
    /// Per-address connection rate and open-connection caps, as on the other TCP listeners.
    pub gate: Arc<crate::gate::Gate>,
    pub shutdown: watch::Receiver<bool>,
}

/// Starts the SFU task and the ICE-TCP acceptor.
pub fn spawn(s: Start) -> anyhow::Result<(Arc<SfuService>, Vec<JoinHandle<()>>)> {
    let udp_addr = s.udp.local_addr()?;
    let tcp_addr = s.tcp.local_addr()?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let (media, media_rx) = mpsc::channel(MEDIA_QUEUE);
    let svc = Arc::new(SfuService {
        tx,
        media,
        udp: udp_addr,
        tcp: tcp_addr,
        snapshot: Mutex::new(Snapshot::default()),
    });
    let (tcp_tx, tcp_rx) = mpsc::channel(QUEUE);
    let acceptor = tokio::spawn(accept_tcp(s.tcp, tcp_tx, s.gate, s.shutdown.clone()));
    let task = Task {
        sfu: Sfu::new(SfuConfig::default()),
        udp: s.udp,
        udp_addr,
        tcp_addr,
        external: s.external,
        fallback: s.fallback,
        signal: s.signal,
        svc: Arc::downgrade(&svc),
        tcp_conns: HashMap::new(),
        dropped: 0,
        gateway: Gateway::new(BridgeConfig::default()),
        plain: HashMap::new(),
        watch: None,
        counters: BridgeCounters::default(),
    };
    // The first DTLS certificate of a process seeds the crypto provider's entropy pool (tens of
    // milliseconds): done now rather than on the first call's answer.
    tokio::task::spawn_blocking(|| drop(str0m::Rtc::builder().build(Instant::now())));
    let main = tokio::spawn(task.run(rx, media_rx, tcp_rx, s.shutdown));
    Ok((svc, vec![main, acceptor]))
}

/// What ICE-TCP connections tell the task.
enum TcpEvent {
    Open(SocketAddr, SocketAddr, mpsc::Sender<Vec<u8>>),
    Packet(SocketAddr, SocketAddr, Vec<u8>),
    Closed(SocketAddr),
}

struct Task {
    sfu: Sfu,
    udp: UdpSocket,
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    external: Option<IpAddr>,
    fallback: Option<IpAddr>,
    signal: Weak<SignalService>,
    svc: Weak<SfuService>,
    tcp_conns: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    dropped: u64,
    /// The SIP gateway's media legs, on the same port.
    gateway: Gateway,
    /// Each leg's RTP socket toward the SIP side.
    plain: HashMap<u64, Arc<UdpSocket>>,
    watch: Option<mpsc::UnboundedSender<(u64, &'static str)>>,
    counters: BridgeCounters,
}

impl Task {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Cmd>,
        mut media_rx: mpsc::Receiver<BridgeCmd>,
        mut tcp_rx: mpsc::Receiver<TcpEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut buf = vec![0u8; 2048];
        let mut snapshot_at = Instant::now();
        loop {
            let now = Instant::now();
            let wake = self
                .sfu
                .poll_timeout()
                .into_iter()
                .chain(self.gateway.poll_timeout())
                .min()
                .unwrap_or(now + Duration::from_secs(1))
                .min(now + Duration::from_secs(1))
                .max(now);
            tokio::select! {
                r = self.udp.recv_from(&mut buf) => {
                    if let Ok((n, src)) = r {
                        let now = Instant::now();
                        self.receive(now, Protocol::Udp, src, self.udp_addr, n, &buf);
                        // More that already arrived, without waiting.
                        for _ in 1..BATCH {
                            match self.udp.try_recv_from(&mut buf) {
                                Ok((n, src)) => {
                                    self.receive(now, Protocol::Udp, src, self.udp_addr, n, &buf);
                                }
                                Err(_) => break,
                            }
                        }
                    }
                }
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => return,
                },
                m = media_rx.recv() => if let Some(m) = m {
                    let now = Instant::now();
                    self.bridge(now, m);
                    for _ in 1..BATCH {
                        match media_rx.try_recv() {
                            Ok(m) => self.bridge(now, m),
                            Err(_) => break,
                        }
                    }
                },
                ev = tcp_rx.recv() => if let Some(ev) = ev {
                    self.tcp_event(ev);
                },
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    self.sfu.handle_timeout(now);
                    self.gateway.handle_timeout(now);
                }
                _ = shutdown.wait_for(|s| *s) => return,
            }
            self.flush();
            let now = Instant::now();
            if now.saturating_duration_since(snapshot_at) >= Duration::from_secs(1) {
                snapshot_at = now;
                if let Some(svc) = self.svc.upgrade() {
                    self.counters.legs = self.gateway.len();
                    self.counters.groups = self.gateway.groups();
                    *svc.snapshot.lock() = Snapshot {
                        totals: self.sfu.totals(),
                        rooms: self.sfu.room_stats(),
                        bridge: self.counters,
                    };
                }
            }
        }
    }

    fn command(&mut self, cmd: Cmd) {
        let now = Instant::now();
        match cmd {
            Cmd::Message {
                room,
                peer,
                data,
                host,
            } => {
                let local = self.local(host.as_deref());
                if let Err(e) = self
                    .sfu
                    .handle_message(now, &room, &peer, data.get(), &local)
                {
                    tracing::debug!(%room, %peer, "sfu: {e}");
                }
            }
            Cmd::Remove { room, peer } => self.sfu.remove(now, &room, &peer),
            Cmd::PeerStats { room, reply } => {
                let _ = reply.send(self.sfu.peer_stats(&room, now));
            }
            Cmd::Bridge(b) => self.bridge(now, b),
        }
    }

    /// A datagram for an SFU participant or, failing that, a bridge leg.
    fn receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        src: SocketAddr,
        local: SocketAddr,
        n: usize,
        buf: &[u8],
    ) {
        let Some(data) = buf.get(..n) else { return };
        if !self.sfu.handle_receive(now, proto, src, local, data)
            && self.gateway.handle_receive(now, proto, src, local, data)
        {
            self.counters.webrtc_packets_in += 1;
            self.counters.webrtc_bytes_in += data.len() as u64;
        }
    }

    /// Our candidates for a client that reached the server as `host`.
    fn local(&self, host: Option<&str>) -> [(Protocol, SocketAddr); 2] {
        let ip = candidate_ip(self.udp_addr.ip(), self.external, self.fallback, host);
        [
            (Protocol::Udp, SocketAddr::new(ip, self.udp_addr.port())),
            (Protocol::Tcp, SocketAddr::new(ip, self.tcp_addr.port())),
        ]
    }

    fn bridge(&mut self, now: Instant, cmd: BridgeCmd) {
        match cmd {
            BridgeCmd::Answer {
                leg,
                offer,
                plain,
                socket,
                host,
                reply,
            } => {
                let local = self.local(host.as_deref());
                let r = self.gateway.answer(now, leg, &offer, &plain, &local);
                if r.is_ok() {
                    self.plain.insert(leg, socket);
                }
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
            BridgeCmd::Offer {
                leg,
                plain,
                socket,
                host,
                reply,
            } => {
                let local = self.local(host.as_deref());
                let r = self.gateway.offer(now, leg, plain, &local);
                if r.is_ok() {
                    self.plain.insert(leg, socket);
                }
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
            BridgeCmd::Renegotiate {
                leg,
                offer,
                remote,
                reply,
            } => {
                let r = self.gateway.renegotiate(now, leg, &offer, remote);
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
            BridgeCmd::OpenGroup {
                group,
                plain,
                socket,
                reply,
            } => {
                let r = self.gateway.open_group(now, group, &plain);
                if r.is_ok() {
                    self.plain.insert(group, socket);
                }
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
            BridgeCmd::GroupAnswer {
                group,
                leg,
                offer,
                host,
                reply,
            } => {
                let local = self.local(host.as_deref());
                let r = self.gateway.group_answer(now, group, leg, &offer, &local);
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
            BridgeCmd::CloseGroup { group } => {
                self.gateway.close_group(group);
                self.plain.remove(&group);
            }
            BridgeCmd::AcceptAnswer { leg, answer, reply } => {
                let r = self.gateway.accept_answer(now, leg, &answer);
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
            BridgeCmd::Plain { leg, source, data } => {
                self.counters.sip_packets_in += 1;
                self.counters.sip_bytes_in += data.len() as u64;
                self.gateway.handle_plain(now, leg, source, &data);
            }
            BridgeCmd::SetRemote { leg, remote } => self.gateway.set_remote(leg, remote),
            BridgeCmd::Close { leg } => {
                self.gateway.close(leg);
                self.plain.remove(&leg);
            }
            BridgeCmd::Stats { leg, reply } => {
                let _ = reply.send(self.gateway.stats(leg));
            }
            BridgeCmd::Watch { tx } => self.watch = Some(tx),
        }
    }

    fn tcp_event(&mut self, ev: TcpEvent) {
        match ev {
            TcpEvent::Open(remote, _local, tx) => {
                self.tcp_conns.insert(remote, tx);
            }
            TcpEvent::Packet(remote, local, data) => {
                let now = Instant::now();
                self.receive(now, Protocol::Tcp, remote, local, data.len(), &data);
            }
            TcpEvent::Closed(remote) => {
                self.tcp_conns.remove(&remote);
            }
        }
    }

    /// Sends what the SFU produced and delivers its signaling messages.
    fn flush(&mut self) {
        while let Some(t) = self.gateway.poll_transmit() {
            match t {
                BridgeTransmit::WebRtc(t) => {
                    self.counters.webrtc_packets_out += 1;
                    self.counters.webrtc_bytes_out += t.contents.len() as u64;
                    self.send(t)
                }
                BridgeTransmit::Plain {
                    leg,
                    destination,
                    contents,
                } => {
                    if let Some(sock) = self.plain.get(&leg) {
                        if sock.try_send_to(&contents, destination).is_ok() {
                            self.counters.sip_packets_out += 1;
                            self.counters.sip_bytes_out += contents.len() as u64;
                        }
                    }
                }
            }
        }
        while let Some(ev) = self.gateway.poll_event() {
            match ev {
                BridgeEvent::Connected(leg) => tracing::debug!(leg, "bridge: connected"),
                BridgeEvent::Ended { leg, reason } => {
                    tracing::info!(leg, reason, "bridge: media leg ended");
                    self.plain.remove(&leg);
                    if let Some(w) = &self.watch {
                        let _ = w.send((leg, reason));
                    }
                }
            }
        }
        while let Some(t) = self.sfu.poll_transmit() {
            self.send(t);
        }
        let Some(signal) = self.signal.upgrade() else {
            while self.sfu.poll_event().is_some() {}
            return;
        };
        while let Some(ev) = self.sfu.poll_event() {
            match ev {
                SfuEvent::ToPeer { room, peer, data } => signal.sfu_push(&room, &peer, data),
                SfuEvent::ToRoom { room, data } => signal.sfu_push_room(&room, data),
            }
        }
    }

    fn send(&mut self, t: icebreaker_sfu::Transmit) {
        match t.proto {
            Protocol::Udp => {
                if self.udp.try_send_to(&t.contents, t.destination).is_err() {
                    self.dropped += 1;
                    if self.dropped.is_power_of_two() {
                        tracing::debug!(dropped = self.dropped, "sfu: UDP send buffer full");
                    }
                }
            }
            _ => {
                if let Some(tx) = self.tcp_conns.get(&t.destination) {
                    let _ = tx.try_send(t.contents.to_vec());
                }
            }
        }
    }
}

async fn accept_tcp(
    listener: TcpListener,
    tx: mpsc::Sender<TcpEvent>,
    gate: Arc<crate::gate::Gate>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r.ok(),
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let Some((stream, remote)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // Over the address's connection rate or open-connection cap: closed at once.
        let Some(slot) = gate.admit(remote.ip()) else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            tcp_conn(stream, remote, tx).await;
            drop(slot);
        });
    }
}

/// One ICE-TCP connection: RFC 4571 frames (16-bit length, then the packet) both ways.
async fn tcp_conn(stream: TcpStream, remote: SocketAddr, tx: mpsc::Sender<TcpEvent>) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(1024);
    if tx
        .send(TcpEvent::Open(remote, local, out_tx))
        .await
        .is_err()
    {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(pkt) = out_rx.recv().await {
            let Ok(len) = u16::try_from(pkt.len()) else {
                continue;
            };
            if wr.write_all(&len.to_be_bytes()).await.is_err() || wr.write_all(&pkt).await.is_err()
            {
                return;
            }
        }
    });
    let mut len = [0u8; 2];
    loop {
        let read = async {
            rd.read_exact(&mut len).await?;
            let n = usize::from(u16::from_be_bytes(len));
            let mut pkt = vec![0u8; n];
            rd.read_exact(&mut pkt).await?;
            Ok::<_, std::io::Error>(pkt)
        };
        match tokio::time::timeout(TCP_IDLE, read).await {
            Ok(Ok(pkt)) => {
                if tx.send(TcpEvent::Packet(remote, local, pkt)).await.is_err() {
                    break;
                }
            }
            _ => break,
        }
    }
    writer.abort();
    let _ = tx.send(TcpEvent::Closed(remote)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_ip_order() {
        let any: IpAddr = "0.0.0.0"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let ext: IpAddr = "203.0.113.7".parse().unwrap_or(any);
        let relay: IpAddr = "10.0.0.5".parse().unwrap_or(any);
        assert_eq!(
            candidate_ip(any, Some(ext), Some(relay), Some("127.0.0.1:8080")),
            ext
        );
        let listen: IpAddr = "192.0.2.9".parse().unwrap_or(any);
        assert_eq!(
            candidate_ip(listen, None, Some(relay), Some("127.0.0.1:8080")),
            listen
        );
        assert_eq!(
            candidate_ip(any, None, Some(relay), Some("127.0.0.2:8080")),
            "127.0.0.2".parse::<IpAddr>().unwrap_or(any)
        );
        assert_eq!(
            candidate_ip(any, None, Some(relay), Some("localhost:8080")),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            candidate_ip(any, None, Some(relay), Some("example.org")),
            relay
        );
        assert_eq!(
            candidate_ip(any, None, None, None),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            candidate_ip(any, None, None, Some("[::1]:8080")),
            "::1".parse::<IpAddr>().unwrap_or(any)
        );
    }
}
