//! `icebreaker bench sip`: calls through the SIP gateway's media bridge.
//!
//! Each call is a synthetic browser: a WebSocket to `/sip` (subprotocol `sip`) and an INVITE
//! whose offer is a str0m WebRTC offer (full ICE, DTLS-SRTP, one G.711 codec and
//! telephone-event), toward a far end that answers every INVITE and echoes RTP — sipp with
//! `tests/sip/uas.xml` and `-rtp_echo`, which `bench/sip` starts. Once the call is up the caller
//! sends a 20-ms G.711 frame every 20 ms, each stamped with its sequence number and send time,
//! and counts the frames that come back: loss, and the round trip through the bridge twice
//! (SRTP → bridge → plain RTP → far end → plain RTP → bridge → SRTP). The bridge's own packet
//! counters (`icebreaker_sip_media_packets_total` on `/metrics`) and the server's CPU time
//! (`/proc/PID/stat`) give packets per core-second and calls per core.
//!
//! [`Browser`] is the caller's WebRTC side; the integration tests (`tests/sip.rs`) use it too.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::hist::Histogram;
use crate::sys;

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// The G.711 codec a caller offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum G711 {
    /// μ-law (payload type 0).
    Pcmu,
    /// A-law (payload type 8).
    Pcma,
}

impl G711 {
    /// The byte of digital silence.
    fn silence(self) -> u8 {
        match self {
            G711::Pcmu => 0xff,
            G711::Pcma => 0xd5,
        }
    }
}

/// A WebRTC peer standing in for a browser: str0m (full ICE, DTLS-SRTP) with one send-receive
/// audio m-line, on its own UDP socket.
pub struct Browser {
    /// The WebRTC connection.
    pub rtc: Rtc,
    /// Its socket.
    pub sock: UdpSocket,
    /// The socket's address (the host candidate).
    pub local: SocketAddr,
    /// The audio m-line.
    pub mid: Mid,
    /// Payload type to send (default: the remote's first).
    pub pt: Option<u8>,
}

impl Browser {
    /// On 127.0.0.1, offering what Chromium offers for audio: Opus, PCMU, PCMA and
    /// telephone-event. Returns the offer (SDP) and what accepting its answer needs.
    pub async fn new() -> anyhow::Result<(Browser, String, SdpPendingOffer)> {
        Browser::offering(IpAddr::V4(Ipv4Addr::LOCALHOST), None).await
    }

    /// On `ip`; with `only`, offering that G.711 codec alone (and telephone-event).
    pub async fn offering(
        ip: IpAddr,
        only: Option<G711>,
    ) -> anyhow::Result<(Browser, String, SdpPendingOffer)> {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let local = sock.local_addr()?;
        let mut cfg = Rtc::builder().clear_codecs();
        cfg = match only {
            None => cfg
                .enable_opus(true, false)
                .enable_pcmu(true, false)
                .enable_pcma(true, false),
            Some(G711::Pcmu) => cfg.enable_pcmu(true, false),
            Some(G711::Pcma) => cfg.enable_pcma(true, false),
        };
        let tele = FormatParams {
            telephone_event_max: Some(16),
            ..Default::default()
        };
        cfg.codec_config().add_config(
            126.into(),
            None,
            Codec::Tele,
            Frequency::EIGHT_KHZ,
            None,
            tele,
        );
        let mut rtc = cfg.build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp")?);
        let mut api = rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let Some((offer, pending)) = api.apply() else {
            bail!("str0m made no offer");
        };
        Ok((
            Browser {
                rtc,
                sock,
                local,
                mid,
                pt: None,
            },
            offer.to_sdp_string(),
            pending,
        ))
    }

    /// A datagram received now from `source`.
    fn input(&mut self, data: &[u8], source: SocketAddr) -> anyhow::Result<()> {
        if let Ok(contents) = data.try_into() {
            self.rtc.handle_input(Input::Receive(
                Instant::now(),
                Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: self.local,
                    contents,
                },
            ))?;
        }
        Ok(())
    }

    /// Runs the connection for up to `limit`: once connected, sends `frames` 20-ms frames of
    /// the answered codec; returns whether it connected and the frames heard (a far end that
    /// echoes sends ours back).
    pub async fn talk(&mut self, frames: u32, limit: Duration) -> anyhow::Result<(bool, u32)> {
        let start = Instant::now();
        let mut buf = vec![0u8; 2000];
        let (mut connected, mut heard, mut sent) = (false, 0u32, 0u32);
        let mut next_frame = start;
        while start.elapsed() < limit {
            let timeout = loop {
                match self.rtc.poll_output()? {
                    Output::Timeout(t) => break t,
                    Output::Transmit(t) => {
                        let _ = self.sock.send_to(&t.contents, t.destination).await;
                    }
                    Output::Event(Event::Connected) => connected = true,
                    Output::Event(Event::MediaData(_)) => heard += 1,
                    Output::Event(_) => {}
                }
            };
            let now = Instant::now();
            if connected && sent < frames && now >= next_frame {
                let pt = match self.pt {
                    Some(pt) => pt.into(),
                    None => *self
                        .rtc
                        .media(self.mid)
                        .and_then(|m| m.remote_pts().first())
                        .context("no payload type answered")?,
                };
                let w = self.rtc.writer(self.mid).context("no writer")?;
                let ts = MediaTime::new(u64::from(sent) * 160, Frequency::EIGHT_KHZ);
                w.write(pt, now, ts, vec![0xd5u8; 160])?;
                sent += 1;
                next_frame += Duration::from_millis(20);
                continue;
            }
            if sent >= frames && heard + 5 >= frames {
                break;
            }
            let wake = if connected && sent < frames {
                timeout.min(next_frame)
            } else {
                timeout
            };
            let wait = wake
                .saturating_duration_since(now)
                .clamp(Duration::from_millis(1), Duration::from_millis(50));
            match tokio::time::timeout(wait, self.sock.recv_from(&mut buf)).await {
                Ok(Ok((n, source))) => {
                    let data = buf[..n].to_vec();
                    self.input(&data, source)?;
                }
                _ => self.rtc.handle_input(Input::Timeout(Instant::now()))?,
            }
        }
        Ok((connected, heard))
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct SipBench {
    /// The server's HTTP listener (`/sip`, `/metrics`).
    pub http: SocketAddr,
    /// Concurrent calls.
    pub calls: usize,
    /// Length of the measurement (after every call is connected).
    pub duration: Duration,
    /// The codec each caller offers.
    pub codec: G711,
    /// New calls per second while the calls are set up.
    pub rate: f64,
    /// The request URI of every INVITE.
    pub target: String,
    /// Server PID, for its CPU time.
    pub server_pid: Option<u32>,
    /// The far end's PID (sipp), for its CPU time.
    pub far_pid: Option<u32>,
    /// Time allowed, after the last INVITE, for every call to be set up and connected.
    pub connect_timeout: Duration,
    /// The server at `http` is Janus (its WebSocket API and janus.plugin.sip), the reference
    /// WebRTC ↔ SIP gateway, instead of Icebreaker's `/sip`; `target` must then name the far
    /// end itself (`sip:echo@HOST:PORT`).
    pub janus: bool,
}

impl Default for SipBench {
    fn default() -> Self {
        SipBench {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            calls: 10,
            duration: Duration::from_secs(10),
            codec: G711::Pcmu,
            rate: 50.0,
            target: "sip:echo@example.org".into(),
            server_pid: None,
            far_pid: None,
            connect_timeout: Duration::from_secs(20),
            janus: false,
        }
    }
}

/// Milliseconds at some percentiles.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Millis {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

fn millis(h: &Histogram) -> Option<Millis> {
    let ms = |ns: u64| ns as f64 / 1e6;
    (h.count() > 0).then(|| Millis {
        p50: ms(h.percentile(50.0)),
        p99: ms(h.percentile(99.0)),
        max: ms(h.max()),
    })
}

/// The bridge's datagrams per second, from its own counters (`/metrics`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BridgeRates {
    /// From the browsers (SRTP, RTCP, STUN).
    pub webrtc_in: f64,
    /// To the browsers.
    pub webrtc_out: f64,
    /// From the SIP side (plain RTP).
    pub sip_in: f64,
    /// To the SIP side.
    pub sip_out: f64,
}

impl BridgeRates {
    /// All four.
    pub fn total(&self) -> f64 {
        self.webrtc_in + self.webrtc_out + self.sip_in + self.sip_out
    }
}

/// One call.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallReport {
    /// Its number.
    pub index: usize,
    /// INVITE sent → 200 received, ms.
    pub setup_ms: Option<f64>,
    /// INVITE sent → ICE + DTLS connected, ms.
    pub connect_ms: Option<f64>,
    /// Frames sent during the measurement.
    pub sent: u64,
    /// Of those, frames that came back.
    pub received: u64,
    /// BYE answered 200.
    pub hung_up: bool,
    /// The codec answered.
    pub codec: Option<String>,
    /// Error, if it failed.
    pub error: Option<String>,
    #[serde(skip)]
    rtt: Histogram,
}

/// The result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SipReport {
    /// Calls started.
    pub calls: usize,
    /// Calls answered (200 to the INVITE).
    pub set_up: usize,
    /// Calls whose WebRTC side connected (ICE + DTLS).
    pub connected: usize,
    /// Calls hung up cleanly (BYE answered).
    pub hung_up: usize,
    /// The codec the calls got.
    pub codec: String,
    /// INVITE → 200.
    pub setup_ms: Option<Millis>,
    /// INVITE → media connected.
    pub connect_ms: Option<Millis>,
    /// Measurement seconds.
    pub seconds: f64,
    /// Frames sent by all callers during the measurement.
    pub frames_sent: u64,
    /// Of those, frames that came back through the far end's echo.
    pub frames_received: u64,
    /// Lost frames, percent of those sent.
    pub loss_pct: f64,
    /// The fewest frames a connected call got back.
    pub min_received_per_call: u64,
    /// Round trip of a frame: caller → bridge → far end → bridge → caller.
    pub rtt_ms: Option<Millis>,
    /// The bridge's datagrams per second, from `/metrics`.
    pub bridge: Option<BridgeRates>,
    /// Server CPU time over the measurement, in cores (1.0 = one core busy).
    pub server_cores: Option<f64>,
    /// Connected calls per server core.
    pub calls_per_core: Option<f64>,
    /// Bridge datagrams (both sides, both directions) per server core-second.
    pub packets_per_core_second: Option<f64>,
    /// The far end's CPU (sipp), cores.
    pub far_cores: Option<f64>,
    /// This generator's CPU, cores.
    pub generator_cores: f64,
    /// The whole machine's busy CPU (`/proc/stat`), cores: what the server, the far end and
    /// the generator did not use of it was other processes.
    pub machine_cores: Option<f64>,
    /// RTP media packets through the bridge per second, both sides and both directions, as the
    /// callers see them: 2 × (frames sent + frames back) / s. The same measure for any bridge
    /// (Icebreaker's or Janus's).
    pub media_packets_per_sec: f64,
    /// [`SipReport::media_packets_per_sec`] per server core.
    pub media_packets_per_core_second: Option<f64>,
    /// What bridged the calls: `icebreaker` or `janus`.
    pub server: String,
    /// The run was interrupted (Ctrl-C).
    pub interrupted: bool,
    /// Each call.
    pub calls_detail: Vec<CallReport>,
}

const WARM: u8 = 0;
const MEASURE: u8 = 1;
const DRAIN: u8 = 2;
const STOP: u8 = 3;

struct Ctx {
    cfg: SipBench,
    /// Send times are stamped relative to this.
    base: Instant,
    phase: AtomicU8,
    /// Calls connected, or failed before that.
    settled: AtomicUsize,
}

/// Runs the benchmark (its own tokio runtime).
pub fn run_sip(cfg: &SipBench) -> anyhow::Result<SipReport> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_sip_async(cfg.clone()))
}

/// [`run_sip`] on the caller's runtime.
pub async fn run_sip_async(cfg: SipBench) -> anyhow::Result<SipReport> {
    if cfg.calls == 0 {
        bail!("give at least one call");
    }
    let ctx = Arc::new(Ctx {
        cfg: cfg.clone(),
        base: Instant::now(),
        phase: AtomicU8::new(WARM),
        settled: AtomicUsize::new(0),
    });
    let gap = Duration::from_secs_f64(1.0 / cfg.rate.clamp(0.1, 10_000.0));
    let mut tasks = Vec::with_capacity(cfg.calls);
    let mut interrupted = false;
    let mut next = Instant::now();
    for i in 0..cfg.calls {
        if sys::interrupted() {
            interrupted = true;
            break;
        }
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let mut rep = CallReport {
                index: i,
                ..CallReport::default()
            };
            if let Err(e) = call(&ctx, i, &mut rep).await {
                rep.error = Some(format!("{e:#}"));
            }
            rep
        }));
        next += gap;
        tokio::time::sleep_until(next.into()).await;
    }
    // Every call connected (or failed), then one second of audio before measuring.
    let deadline = Instant::now() + cfg.connect_timeout;
    while ctx.settled.load(Ordering::Relaxed) < tasks.len() && Instant::now() < deadline {
        if sys::interrupted() {
            interrupted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let sample = |http: Option<SocketAddr>| async move {
        (
            Instant::now(),
            cfg.server_pid.and_then(sys::pid_cpu_time),
            cfg.far_pid.and_then(sys::pid_cpu_time),
            sys::process_cpu_time(),
            match http {
                Some(h) => bridge_packets(h).await,
                None => None,
            },
            machine_busy(),
        )
    };
    let metrics_at = if cfg.janus { None } else { Some(cfg.http) };
    let s0 = sample(metrics_at).await;
    ctx.phase.store(MEASURE, Ordering::Relaxed);
    let end = s0.0 + cfg.duration;
    while !interrupted && Instant::now() < end {
        if sys::interrupted() {
            interrupted = true;
        }
        tokio::time::sleep(Duration::from_millis(100).min(end - Instant::now().min(end))).await;
    }
    ctx.phase.store(DRAIN, Ordering::Relaxed);
    let s1 = sample(metrics_at).await;
    // Frames still in flight come back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctx.phase.store(STOP, Ordering::Relaxed);

    let mut calls_detail = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(r) = t.await {
            calls_detail.push(r);
        }
    }
    let secs = s1.0.duration_since(s0.0).as_secs_f64().max(1e-9);
    let cores = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() / secs),
        _ => None,
    };
    let server_cores = cores(s0.1, s1.1);
    let far_cores = cores(s0.2, s1.2);
    let generator_cores = s1.3.saturating_sub(s0.3).as_secs_f64() / secs;
    let machine_cores = match (s0.5, s1.5) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() / secs),
        _ => None,
    };
    let bridge = match (s0.4, s1.4) {
        (Some(a), Some(b)) => {
            let r = |i: usize| b[i].saturating_sub(a[i]) as f64 / secs;
            Some(BridgeRates {
                sip_in: r(0),
                sip_out: r(1),
                webrtc_in: r(2),
                webrtc_out: r(3),
            })
        }
        _ => None,
    };
    let mut setup = Histogram::new();
    let mut connect = Histogram::new();
    let mut rtt = Histogram::new();
    let ns = |ms: f64| (ms * 1e6) as u64;
    for c in &calls_detail {
        if let Some(ms) = c.setup_ms {
            setup.record(ns(ms));
        }
        if let Some(ms) = c.connect_ms {
            connect.record(ns(ms));
        }
        rtt.merge(&c.rtt);
    }
    let connected = calls_detail
        .iter()
        .filter(|c| c.connect_ms.is_some())
        .count();
    let frames_sent: u64 = calls_detail.iter().map(|c| c.sent).sum();
    let frames_received: u64 = calls_detail.iter().map(|c| c.received).sum();
    let mut codecs: Vec<String> = calls_detail
        .iter()
        .filter_map(|c| c.codec.clone())
        .collect();
    codecs.sort();
    codecs.dedup();
    let per_core = |v: f64| server_cores.filter(|c| *c > 0.0).map(|c| v / c);
    let media_pps = 2.0 * (frames_sent + frames_received) as f64 / secs;
    Ok(SipReport {
        calls: calls_detail.len(),
        set_up: calls_detail.iter().filter(|c| c.setup_ms.is_some()).count(),
        connected,
        hung_up: calls_detail.iter().filter(|c| c.hung_up).count(),
        codec: codecs.join(", "),
        setup_ms: millis(&setup),
        connect_ms: millis(&connect),
        seconds: secs,
        frames_sent,
        frames_received,
        loss_pct: if frames_sent == 0 {
            0.0
        } else {
            100.0 * frames_sent.saturating_sub(frames_received) as f64 / frames_sent as f64
        },
        min_received_per_call: calls_detail
            .iter()
            .filter(|c| c.connect_ms.is_some())
            .map(|c| c.received)
            .min()
            .unwrap_or(0),
        rtt_ms: millis(&rtt),
        bridge,
        server_cores,
        calls_per_core: per_core(connected as f64),
        packets_per_core_second: bridge.and_then(|b| per_core(b.total())),
        far_cores,
        generator_cores,
        machine_cores,
        media_packets_per_sec: media_pps,
        media_packets_per_core_second: per_core(media_pps),
        server: if cfg.janus { "janus" } else { "icebreaker" }.into(),
        interrupted,
        calls_detail,
    })
}

/// Busy time of all CPUs of the machine (`/proc/stat`: all but idle and iowait).
fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3)? + f.get(4)?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(total.saturating_sub(idle) * 10))
}

/// `icebreaker_sip_media_packets_total` from `/metrics`: sip in, sip out, webrtc in, webrtc out.
async fn bridge_packets(http: SocketAddr) -> Option<[u64; 4]> {
    let get = async {
        let mut tcp = TcpStream::connect(http).await.ok()?;
        let req = format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.ok()?;
        let mut body = Vec::new();
        tcp.read_to_end(&mut body).await.ok()?;
        Some(String::from_utf8_lossy(&body).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(3), get)
        .await
        .ok()??;
    let mut out = [None; 4];
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("icebreaker_sip_media_packets_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once('}')?;
        let value: u64 = value.trim().parse::<f64>().ok()? as u64;
        let label = |name: &str| {
            labels.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k.trim() == name).then(|| v.trim().trim_matches('"'))
            })
        };
        let i = match (label("side")?, label("direction")?) {
            ("sip", "in") => 0,
            ("sip", "out") => 1,
            ("webrtc", "in") => 2,
            ("webrtc", "out") => 3,
            _ => continue,
        };
        out[i] = Some(value);
    }
    Some([out[0]?, out[1]?, out[2]?, out[3]?])
}

/// The values of header `name` (or its compact form) in a SIP message, each comma-separated
/// value on its own (commas inside `<>` or quotes kept).
fn header_values(msg: &str, name: &str, compact: Option<&str>) -> Vec<String> {
    let head = msg.split("\r\n\r\n").next().unwrap_or(msg);
    let mut out = Vec::new();
    for line in head.split("\r\n").skip(1) {
        let Some((n, v)) = line.split_once(':') else {
            continue;
        };
        let n = n.trim();
        if !(n.eq_ignore_ascii_case(name) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c))) {
            continue;
        }
        let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
        let v = v.trim();
        for (i, ch) in v.char_indices() {
            match ch {
                '"' => quoted = !quoted,
                '<' if !quoted => depth += 1,
                '>' if !quoted => depth -= 1,
                ',' if !quoted && depth == 0 => {
                    out.push(v[start..i].trim().to_owned());
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.push(v[start..].trim().to_owned());
    }
    out
}

/// The status code of a response.
fn status(msg: &str) -> Option<u16> {
    msg.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// The method of a message's CSeq.
fn cseq_method(msg: &str) -> String {
    header_values(msg, "CSeq", None)
        .first()
        .and_then(|v| v.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_owned()
}

/// What a call needs to send in-dialog requests (ACK, BYE) along its route set.
struct Dialog {
    target: String,
    routes: Vec<String>,
    from: String,
    to: String,
    call_id: String,
    via_host: String,
}

impl Dialog {
    fn request(&self, method: &str, cseq: u32, branch: &str) -> String {
        let mut s = format!(
            "{method} {} SIP/2.0\r\nVia: SIP/2.0/WSS {};branch=z9hG4bK{branch}\r\nMax-Forwards: 69\r\n",
            self.target, self.via_host
        );
        for r in &self.routes {
            s.push_str(&format!("Route: {r}\r\n"));
        }
        s.push_str(&format!(
            "To: {}\r\nFrom: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            self.to, self.from, self.call_id
        ));
        s
    }
}

/// The call's WebSocket: `/sip` with subprotocol `sip`, or Janus's API (`janus-protocol`).
async fn connect_ws(http: SocketAddr, janus: bool) -> anyhow::Result<Ws> {
    let tcp = TcpStream::connect(http)
        .await
        .with_context(|| format!("connect {http}"))?;
    let _ = tcp.set_nodelay(true);
    let (path, proto) = if janus {
        ("/", "janus-protocol")
    } else {
        ("/sip", "sip")
    };
    let mut req = format!("ws://{http}{path}").into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", proto.parse()?);
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp)
        .await
        .with_context(|| format!("WebSocket handshake at {path}"))?;
    if resp
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        != Some(proto)
    {
        bail!("{path} did not accept the {proto} subprotocol");
    }
    Ok(ws)
}

/// The next text frame on the WebSocket (a SIP message, or Janus JSON).
async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            None => bail!("the /sip WebSocket closed"),
            Some(m) => {
                if let Message::Text(t) = m.context("/sip WebSocket")? {
                    return Ok(t.to_string());
                }
            }
        }
    }
}

/// One call, from INVITE to BYE.
async fn call(ctx: &Ctx, i: usize, rep: &mut CallReport) -> anyhow::Result<()> {
    let settled = std::sync::atomic::AtomicBool::new(false);
    let r = call_inner(ctx, i, rep, &settled).await;
    settle(ctx, &settled);
    r
}

/// Counts the call as connected or failed, once.
fn settle(ctx: &Ctx, settled: &std::sync::atomic::AtomicBool) {
    if !settled.swap(true, Ordering::Relaxed) {
        ctx.settled.fetch_add(1, Ordering::Relaxed);
    }
}

/// A call's signaling: SIP over Icebreaker's `/sip`, or Janus's API.
enum Leg {
    Sip {
        dialog: Dialog,
        ack: String,
        id: String,
    },
    Janus {
        session: u64,
        handle: u64,
        tx: u64,
    },
}

/// What a message during the call means.
enum Heard {
    Nothing,
    /// The far end hung up.
    HungUp,
}

impl Leg {
    /// Sends the offer and waits for the answer: the leg, the answer's SDP and when the offer
    /// went out.
    async fn invite(
        ctx: &Ctx,
        ws: &mut Ws,
        i: usize,
        offer: &str,
    ) -> anyhow::Result<(Leg, String, Instant)> {
        match ctx.cfg.janus {
            false => Leg::sip_invite(ctx, ws, i, offer).await,
            true => Leg::janus_call(ctx, ws, i, offer).await,
        }
    }

    async fn sip_invite(
        ctx: &Ctx,
        ws: &mut Ws,
        i: usize,
        offer: &str,
    ) -> anyhow::Result<(Leg, String, Instant)> {
        let cfg = &ctx.cfg;
        let id = format!("{}x{i}x{:08x}", std::process::id(), rand::random::<u32>());
        let via_host = format!("b{i}.invalid");
        let from = format!("<sip:caller{i}@example.org>;tag=f{id}");
        let call_id = format!("bench-{id}");
        let invite = format!(
            "INVITE {target} SIP/2.0\r\nVia: SIP/2.0/WSS {via_host};branch=z9hG4bK{id}i\r\nMax-Forwards: 69\r\nTo: <{target}>\r\nFrom: {from}\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller{i}@{via_host};transport=ws;ob>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
            offer.len(),
            target = cfg.target,
        );
        let sent = Instant::now();
        ws.send(Message::text(invite))
            .await
            .context("send INVITE")?;
        let ok = loop {
            let m = next_text(ws).await?;
            match status(&m) {
                Some(100..=199) | None => continue,
                Some(200..=299) => break m,
                Some(code) => bail!("INVITE answered {code}"),
            }
        };
        let (_, body) = ok.split_once("\r\n\r\n").context("200 without a body")?;
        let mut routes = header_values(&ok, "Record-Route", None);
        routes.reverse();
        let contact = header_values(&ok, "Contact", Some("m"))
            .first()
            .and_then(|c| {
                let c = c.trim();
                let c = c.split_once('<').map_or(c, |(_, r)| r);
                c.split('>').next().map(str::to_owned)
            })
            .context("200 without a Contact")?;
        let dialog = Dialog {
            target: contact,
            routes,
            from,
            to: header_values(&ok, "To", Some("t"))
                .first()
                .cloned()
                .context("200 without To")?,
            call_id,
            via_host,
        };
        let ack = dialog.request("ACK", 1, &format!("{id}a"));
        ws.send(Message::text(ack.clone())).await?;
        Ok((Leg::Sip { dialog, ack, id }, body.to_owned(), sent))
    }

    /// Janus: a session, the SIP plugin attached, a guest account (no REGISTER), `call` with
    /// the offer; the answer comes with the `accepted` event.
    async fn janus_call(
        ctx: &Ctx,
        ws: &mut Ws,
        i: usize,
        offer: &str,
    ) -> anyhow::Result<(Leg, String, Instant)> {
        let mut tx = 0u64;
        let session = janus_request(ws, &mut tx, serde_json::json!({"janus": "create"})).await?
            ["data"]["id"]
            .as_u64()
            .context("no Janus session id")?;
        let handle = janus_request(
            ws,
            &mut tx,
            serde_json::json!({"janus": "attach", "session_id": session, "plugin": "janus.plugin.sip"}),
        )
        .await?["data"]["id"]
        .as_u64()
        .context("no Janus handle id")?;
        let mut leg = Leg::Janus {
            session,
            handle,
            tx,
        };
        let host = ctx.cfg.target.rsplit('@').next().unwrap_or("127.0.0.1");
        let host = host.split(':').next().unwrap_or(host);
        leg.janus_message(
            ws,
            serde_json::json!({"request": "register", "type": "guest", "username": format!("sip:caller{i}@{host}")}),
            None,
        )
        .await?;
        janus_event(ws, &["registered"]).await?;
        let sent = Instant::now();
        leg.janus_message(
            ws,
            serde_json::json!({"request": "call", "uri": ctx.cfg.target, "autoaccept_reinvites": false}),
            Some(serde_json::json!({"type": "offer", "sdp": offer})),
        )
        .await?;
        let accepted = janus_event(ws, &["accepted"]).await?;
        let sdp = accepted["jsep"]["sdp"]
            .as_str()
            .context("accepted without an answer")?
            .to_owned();
        Ok((leg, sdp, sent))
    }

    /// A plugin message (the `ack` is awaited).
    async fn janus_message(
        &mut self,
        ws: &mut Ws,
        body: serde_json::Value,
        jsep: Option<serde_json::Value>,
    ) -> anyhow::Result<()> {
        let Leg::Janus {
            session,
            handle,
            tx,
        } = self
        else {
            bail!("not a Janus leg");
        };
        let mut m = serde_json::json!({"janus": "message", "session_id": *session, "handle_id": *handle, "body": body});
        if let Some(j) = jsep {
            m["jsep"] = j;
        }
        janus_request(ws, tx, m).await?;
        Ok(())
    }

    /// A message that came during the call.
    async fn heard(&mut self, ws: &mut Ws, m: &str) -> anyhow::Result<Heard> {
        match self {
            Leg::Sip { ack, .. } => {
                if status(m).is_some_and(|c| (200..300).contains(&c)) && cseq_method(m) == "INVITE"
                {
                    // Our ACK was lost: again.
                    ws.send(Message::text(ack.clone())).await?;
                } else if m.starts_with("BYE ") {
                    let mut ok = String::from("SIP/2.0 200 OK\r\n");
                    for h in ["Via", "From", "To", "Call-ID", "CSeq"] {
                        for v in header_values(m, h, None) {
                            ok.push_str(&format!("{h}: {v}\r\n"));
                        }
                    }
                    ok.push_str("Content-Length: 0\r\n\r\n");
                    ws.send(Message::text(ok)).await?;
                    return Ok(Heard::HungUp);
                }
                Ok(Heard::Nothing)
            }
            Leg::Janus { .. } => {
                let v: serde_json::Value = serde_json::from_str(m).unwrap_or_default();
                let event = &v["plugindata"]["data"]["result"]["event"];
                if v["janus"] == "hangup" || event == "hangup" {
                    return Ok(Heard::HungUp);
                }
                Ok(Heard::Nothing)
            }
        }
    }

    /// Hangs up; Ok once the far end confirmed.
    async fn hang_up(&mut self, ws: &mut Ws) -> anyhow::Result<()> {
        match self {
            Leg::Sip { dialog, id, .. } => {
                ws.send(Message::text(dialog.request("BYE", 2, &format!("{id}b"))))
                    .await?;
                loop {
                    let m = next_text(ws).await?;
                    if status(&m).is_some() && cseq_method(&m) == "BYE" {
                        return match status(&m) {
                            Some(200) => Ok(()),
                            code => bail!("BYE answered {code:?}"),
                        };
                    }
                }
            }
            Leg::Janus { .. } => {
                self.janus_message(ws, serde_json::json!({"request": "hangup"}), None)
                    .await?;
                janus_event(ws, &["hangup"]).await?;
                if let Leg::Janus { session, tx, .. } = self {
                    let _ = janus_request(
                        ws,
                        tx,
                        serde_json::json!({"janus": "destroy", "session_id": *session}),
                    )
                    .await;
                }
                Ok(())
            }
        }
    }
}

/// A Janus request and its direct answer (`success` or `ack`; events that come before it are
/// skipped).
async fn janus_request(
    ws: &mut Ws,
    tx: &mut u64,
    mut m: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    *tx += 1;
    let t = format!("t{tx}");
    m["transaction"] = serde_json::Value::String(t.clone());
    ws.send(Message::text(m.to_string())).await?;
    loop {
        let v: serde_json::Value = serde_json::from_str(&next_text(ws).await?)?;
        if v["transaction"] != t.as_str() || v["janus"] == "event" {
            continue;
        }
        match v["janus"].as_str() {
            Some("success" | "ack") => return Ok(v),
            _ => bail!("Janus: {v}"),
        }
    }
}

/// The next SIP plugin event whose `result.event` is one of `want` (errors end the wait).
async fn janus_event(ws: &mut Ws, want: &[&str]) -> anyhow::Result<serde_json::Value> {
    loop {
        let v: serde_json::Value = serde_json::from_str(&next_text(ws).await?)?;
        let data = &v["plugindata"]["data"];
        if let Some(e) = data["error"].as_str() {
            bail!("Janus SIP plugin: {e} ({})", data["error_code"]);
        }
        let event = data["result"]["event"].as_str().unwrap_or_default();
        if want.contains(&event) {
            return Ok(v);
        }
        if v["janus"] == "hangup" || event == "hangup" {
            bail!("Janus: hung up ({v})");
        }
    }
}

async fn call_inner(
    ctx: &Ctx,
    i: usize,
    rep: &mut CallReport,
    settled: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<()> {
    let cfg = &ctx.cfg;
    let mut ws = connect_ws(cfg.http, cfg.janus).await?;
    let (mut browser, offer, pending) = Browser::offering(cfg.http.ip(), Some(cfg.codec)).await?;
    let (mut leg, body, t0) =
        tokio::time::timeout(cfg.connect_timeout, Leg::invite(ctx, &mut ws, i, &offer))
            .await
            .context("no answer to the call")??;
    rep.setup_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
    let answer = SdpAnswer::from_sdp_string(&body).context("the answer is not SDP")?;
    browser.rtc.sdp_api().accept_answer(pending, answer)?;

    // Media: the answered codec, 20-ms frames stamped [counted, seq, send time].
    let pt = browser
        .rtc
        .writer(browser.mid)
        .and_then(|w| {
            w.payload_params()
                .find(|p| matches!(p.spec().codec, Codec::PCMU | Codec::PCMA))
                .map(|p| (p.pt(), p.spec().codec))
        })
        .context("no G.711 payload type answered")?;
    let frame_codec = if pt.1 == Codec::PCMA {
        G711::Pcma
    } else {
        G711::Pcmu
    };
    rep.codec = Some(format!("{}", pt.1));
    let mut buf = vec![0u8; 2048];
    let mut connected = false;
    let mut seq = 0u64;
    let mut next_frame = Instant::now();
    let connect_by = Instant::now() + cfg.connect_timeout;
    loop {
        let now = Instant::now();
        let phase = ctx.phase.load(Ordering::Relaxed);
        if phase == STOP || sys::interrupted() {
            break;
        }
        if !connected && now >= connect_by {
            bail!("no ICE + DTLS connection with the bridge");
        }
        if connected && phase <= MEASURE && now >= next_frame {
            let counted = phase == MEASURE;
            let mut frame = vec![frame_codec.silence(); 160];
            frame[0] = u8::from(counted);
            frame[1..9].copy_from_slice(&seq.to_be_bytes());
            let stamp = now.duration_since(ctx.base).as_nanos() as u64;
            frame[9..17].copy_from_slice(&stamp.to_be_bytes());
            if let Some(w) = browser.rtc.writer(browser.mid) {
                let ts = MediaTime::new(seq * 160, Frequency::EIGHT_KHZ);
                if w.write(pt.0, now, ts, frame).is_ok() && counted {
                    rep.sent += 1;
                }
            }
            seq += 1;
            next_frame += Duration::from_millis(20);
            if next_frame < now {
                next_frame = now + Duration::from_millis(20);
            }
        }
        let timeout = loop {
            match browser.rtc.poll_output()? {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    let _ = browser.sock.try_send_to(&t.contents, t.destination);
                }
                Output::Event(Event::Connected) if !connected => {
                    connected = true;
                    rep.connect_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
                    next_frame = Instant::now();
                    settle(ctx, settled);
                }
                Output::Event(Event::MediaData(d)) => {
                    if d.data.len() >= 17 && d.data[0] == 1 {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&d.data[9..17]);
                        let sent_at = u64::from_be_bytes(b);
                        let now_ns = Instant::now().duration_since(ctx.base).as_nanos() as u64;
                        rep.received += 1;
                        rep.rtt.record(now_ns.saturating_sub(sent_at));
                    }
                }
                Output::Event(_) => {}
            }
        };
        let mut wake = timeout.min(now + Duration::from_millis(50));
        if connected && phase <= MEASURE {
            wake = wake.min(next_frame);
        }
        let wake = wake.max(now);
        tokio::select! {
            r = browser.sock.recv_from(&mut buf) => {
                let (n, src) = r?;
                let data = &buf[..n];
                if let Ok(contents) = data.try_into() {
                    browser.rtc.handle_input(Input::Receive(Instant::now(), Receive {
                        proto: Protocol::Udp, source: src, destination: browser.local, contents,
                    }))?;
                }
            }
            m = next_text(&mut ws) => {
                if let Heard::HungUp = leg.heard(&mut ws, &m?).await? {
                    bail!("the far end hung up");
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                browser.rtc.handle_input(Input::Timeout(Instant::now()))?;
            }
        }
    }
    if !connected {
        bail!("stopped before the media connected");
    }
    tokio::time::timeout(Duration::from_secs(3), leg.hang_up(&mut ws))
        .await
        .context("hang-up unanswered")??;
    rep.hung_up = true;
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    Ok(())
}

/// The report as text.
pub fn format_sip(r: &SipReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let ms = |m: &Option<Millis>| match m {
        Some(m) => format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            m.p50, m.p99, m.max
        ),
        None => "-".into(),
    };
    let _ = writeln!(
        s,
        "calls             {} started, {} set up, {} connected, {} hung up cleanly ({}, through {})",
        r.calls, r.set_up, r.connected, r.hung_up, r.codec, r.server
    );
    let _ = writeln!(s, "set-up            INVITE → 200: {}", ms(&r.setup_ms));
    let _ = writeln!(
        s,
        "                  INVITE → media connected: {}",
        ms(&r.connect_ms)
    );
    let _ = writeln!(s, "measured          {:.1} s", r.seconds);
    let _ = writeln!(
        s,
        "audio             {} frames sent, {} back ({:.2} % lost); fewest back in one call {}",
        r.frames_sent, r.frames_received, r.loss_pct, r.min_received_per_call
    );
    let _ = writeln!(s, "round trip        {}", ms(&r.rtt_ms));
    match &r.bridge {
        Some(b) => {
            let _ = writeln!(
                s,
                "bridge            webrtc in {:.0}/s out {:.0}/s, sip in {:.0}/s out {:.0}/s: {:.0} datagrams/s",
                b.webrtc_in,
                b.webrtc_out,
                b.sip_in,
                b.sip_out,
                b.total()
            );
        }
        None => {
            let _ = writeln!(
                s,
                "bridge            (no icebreaker_sip_media_packets_total on /metrics)"
            );
        }
    }
    match (r.server_cores, r.calls_per_core) {
        (Some(c), Some(cpc)) => {
            let _ = writeln!(
                s,
                "server CPU        {:.0} ms/s ({:.1} % of a core) → {:.0} calls per core, {} datagrams per core-second",
                c * 1e3,
                c * 100.0,
                cpc,
                r.packets_per_core_second
                    .map_or("-".into(), |p| format!("{p:.0}"))
            );
        }
        _ => {
            let _ = writeln!(s, "server CPU        (give --server-pid to measure)");
        }
    }
    let _ = writeln!(
        s,
        "media             {:.0} RTP packets/s through the bridge (both sides, both ways){}",
        r.media_packets_per_sec,
        r.media_packets_per_core_second
            .map_or(String::new(), |p| format!(": {p:.0} per core-second"))
    );
    let _ = writeln!(
        s,
        "other CPU         far end {}, generator {:.2} cores, whole machine {}",
        r.far_cores.map_or("-".into(), |c| format!("{c:.2} cores")),
        r.generator_cores,
        r.machine_cores
            .map_or("-".into(), |c| format!("{c:.2} cores busy"))
    );
    let failed: Vec<&CallReport> = r
        .calls_detail
        .iter()
        .filter(|c| c.error.is_some())
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(s, "failed calls      {}", failed.len());
        for c in failed.iter().take(5) {
            let _ = writeln!(
                s,
                "  call {}: {}",
                c.index,
                c.error.as_deref().unwrap_or("")
            );
        }
    }
    if r.interrupted {
        let _ = writeln!(s, "interrupted");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_split_lists_but_not_uris() {
        let m = "SIP/2.0 200 OK\r\nRecord-Route: <sip:a@h;lr>, <sip:b@h;transport=ws;lr>\r\nRecord-Route: <sip:c,d@h>\r\nm: <sip:x@y>\r\nCSeq: 1 INVITE\r\n\r\nv=0\r\nRecord-Route: no\r\n";
        assert_eq!(
            header_values(m, "Record-Route", None),
            ["<sip:a@h;lr>", "<sip:b@h;transport=ws;lr>", "<sip:c,d@h>"]
        );
        assert_eq!(header_values(m, "Contact", Some("m")), ["<sip:x@y>"]);
        assert_eq!(status(m), Some(200));
        assert_eq!(cseq_method(m), "INVITE");
        assert_eq!(status("INVITE sip:x SIP/2.0\r\n\r\n"), None);
    }
}
