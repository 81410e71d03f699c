//! `icebreaker bench sfu`: synthetic SFU participants on str0m (real ICE, DTLS-SRTP, RTCP,
//! signaling over WebSocket), so that the SFU is measured doing exactly what it does for
//! browsers.
//!
//! Each room has `publishers` members that publish one video track (VP8 framing, `video_kbps` at
//! `fps`, a keyframe every 2 s and on request) and one audio track (Opus framing, 50 frames/s
//! with the audio-level extension), and `subscribers` members that only receive. Every member
//! receives every other member's tracks, so a room forwards
//! `publishers × (publishers + subscribers − 1)` streams of each kind. The report gives the
//! forwarded streams, the media packets per second the subscribers received, and the server's
//! CPU time (from `/proc/PID/stat` with `--server-pid`), hence packets and streams per core.
//!
//! The same participants serve the integration tests (`tests/sfu.rs`): [`run_sfu`] returns what
//! each member received, from whom.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::{TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// What to run.
#[derive(Debug, Clone)]
pub struct SfuBench {
    /// The server's HTTP listener (signaling).
    pub http: SocketAddr,
    /// Rooms.
    pub rooms: usize,
    /// Publishing members per room.
    pub publishers: usize,
    /// Receive-only members per room.
    pub subscribers: usize,
    /// Length of the measurement (after everyone is connected).
    pub duration: Duration,
    /// Video bitrate per publisher, kbit/s.
    pub video_kbps: u32,
    /// Video frames per second.
    pub fps: u32,
    /// Room name prefix.
    pub room_prefix: String,
    /// Server PID, for its CPU time.
    pub server_pid: Option<u32>,
    /// Each member sends one data-channel message once connected (tests).
    pub data_message: bool,
    /// Receive-only members drop this fraction of the media (RTP) datagrams they receive, as
    /// a lossy downlink would: what NACK/RTX recovers shows in the frames they still get.
    pub loss: f64,
    /// Time allowed for everyone to connect.
    pub connect_timeout: Duration,
    /// More signaling addresses (other nodes of a cluster): member `i` of a room signals
    /// through `[http, also…][i % n]`.
    pub also: Vec<SocketAddr>,
}

impl Default for SfuBench {
    fn default() -> Self {
        SfuBench {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            also: Vec::new(),
            rooms: 1,
            publishers: 2,
            subscribers: 2,
            duration: Duration::from_secs(10),
            video_kbps: 500,
            fps: 30,
            room_prefix: format!("bench-sfu-{}-", std::process::id()),
            server_pid: None,
            data_message: false,
            loss: 0.0,
            connect_timeout: Duration::from_secs(20),
        }
    }
}

/// What one member received.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemberReport {
    /// Room.
    pub room: String,
    /// Its peer id.
    pub peer: String,
    /// Whether it publishes.
    pub publisher: bool,
    /// Per publisher: video frames and audio frames received.
    pub received: BTreeMap<String, (u64, u64)>,
    /// Data-channel messages received (raw text).
    pub data: Vec<String>,
    /// `speaker` announcements seen.
    pub speakers: Vec<Option<String>>,
    /// Error, if it failed.
    pub error: Option<String>,
    /// RTP datagrams dropped on purpose (`loss`).
    pub dropped: u64,
    /// Video frames that came after a gap the stack could not repair (str0m's `contiguous`
    /// false): what NACK/RTX did not recover.
    pub gaps: u64,
}

/// The result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SfuReport {
    /// Members that connected (ICE + DTLS) / that were started.
    pub connected: usize,
    /// Members started.
    pub members: usize,
    /// Streams forwarded (video + audio, one per subscriber per published track).
    pub streams: usize,
    /// Measurement seconds.
    pub seconds: f64,
    /// Media frames per second received by all members.
    pub frames_per_sec: f64,
    /// Datagrams per second received by all members (media and RTCP).
    pub packets_per_sec: f64,
    /// Bits per second received by all members.
    pub bits_per_sec: f64,
    /// Datagrams per second sent by publishers.
    pub sent_packets_per_sec: f64,
    /// Server CPU time over the measurement, in cores (1.0 = one core busy).
    pub server_cores: Option<f64>,
    /// Received packets per second per server core.
    pub packets_per_core: Option<f64>,
    /// Forwarded streams per server core.
    pub streams_per_core: Option<f64>,
    /// Each member.
    pub members_detail: Vec<MemberReport>,
}

#[derive(Default)]
struct Counters {
    frames: AtomicU64,
    packets: AtomicU64,
    bytes: AtomicU64,
    sent_packets: AtomicU64,
    connected: AtomicU64,
}

struct Ctx {
    cfg: SfuBench,
    counters: Counters,
    /// Set when the measurement starts (members count only after it).
    measuring: std::sync::atomic::AtomicBool,
    /// Set when members must leave.
    stop: std::sync::atomic::AtomicBool,
    /// Members leave at this time at the latest.
    until: Instant,
}

/// Runs the benchmark (its own tokio runtime).
pub fn run_sfu(cfg: &SfuBench) -> anyhow::Result<SfuReport> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_sfu_async(cfg.clone()))
}

/// [`run_sfu`] on the caller's runtime.
pub async fn run_sfu_async(cfg: SfuBench) -> anyhow::Result<SfuReport> {
    if cfg.rooms == 0 || cfg.publishers + cfg.subscribers < 2 {
        bail!("a room needs at least two members");
    }
    let start = Instant::now();
    let measure_from = start + cfg.connect_timeout.min(Duration::from_secs(3600));
    let ctx = Arc::new(Ctx {
        until: measure_from + cfg.duration + Duration::from_secs(5),
        measuring: false.into(),
        stop: false.into(),
        counters: Counters::default(),
        cfg: cfg.clone(),
    });
    let mut tasks = Vec::new();
    for r in 0..cfg.rooms {
        for m in 0..cfg.publishers + cfg.subscribers {
            let ctx = ctx.clone();
            let publisher = m < cfg.publishers;
            tasks.push(tokio::spawn(async move {
                let room = format!("{}{r}", ctx.cfg.room_prefix);
                let mut rep = MemberReport {
                    room: room.clone(),
                    publisher,
                    ..MemberReport::default()
                };
                if let Err(e) = member(&ctx, &room, publisher, m, &mut rep).await {
                    rep.error = Some(format!("{e:#}"));
                }
                rep
            }));
            // Spread the joins a little.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Measure once everyone had the chance to connect: CPU sample at measure_from.
    let members = tasks.len();
    let all_connected = async {
        while (ctx.counters.connected.load(Ordering::Relaxed) as usize) < members {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let _ = tokio::time::timeout_at(measure_from.into(), all_connected).await;
    ctx.measuring.store(true, Ordering::Relaxed);
    let cpu0 = cfg.server_pid.and_then(cpu_seconds);
    let t0 = Instant::now();
    let c0 = snapshot(&ctx.counters);
    tokio::time::sleep_until((t0 + cfg.duration).into()).await;
    let c1 = snapshot(&ctx.counters);
    let cpu1 = cfg.server_pid.and_then(cpu_seconds);
    let secs = t0.elapsed().as_secs_f64().max(1e-9);
    ctx.stop.store(true, Ordering::Relaxed);
    let mut members_detail = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            members_detail.push(r);
        }
    }
    let per_room_members = cfg.publishers + cfg.subscribers;
    let streams = cfg.rooms * cfg.publishers * (per_room_members - 1) * 2;
    let server_cores = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some((b - a) / secs),
        _ => None,
    };
    let pps = (c1.1 - c0.1) as f64 / secs;
    Ok(SfuReport {
        connected: ctx.counters.connected.load(Ordering::Relaxed) as usize,
        members,
        streams,
        seconds: secs,
        frames_per_sec: (c1.0 - c0.0) as f64 / secs,
        packets_per_sec: pps,
        bits_per_sec: (c1.2 - c0.2) as f64 * 8.0 / secs,
        sent_packets_per_sec: (c1.3 - c0.3) as f64 / secs,
        server_cores,
        packets_per_core: server_cores.filter(|c| *c > 0.0).map(|c| pps / c),
        streams_per_core: server_cores
            .filter(|c| *c > 0.0)
            .map(|c| streams as f64 / c),
        members_detail,
    })
}

fn snapshot(c: &Counters) -> (u64, u64, u64, u64) {
    (
        c.frames.load(Ordering::Relaxed),
        c.packets.load(Ordering::Relaxed),
        c.bytes.load(Ordering::Relaxed),
        c.sent_packets.load(Ordering::Relaxed),
    )
}

/// utime + stime of a process, seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // SAFETY-free: the clock tick is 100 Hz on every Linux this runs on.
    Some((utime + stime) / 100.0)
}

async fn ws_send(ws: &mut Ws, v: &Value) -> anyhow::Result<()> {
    ws.send(Message::text(v.to_string()))
        .await
        .context("websocket send")
}

/// One member, until the end of the run.
async fn member(
    ctx: &Ctx,
    room: &str,
    publisher: bool,
    index: usize,
    rep: &mut MemberReport,
) -> anyhow::Result<()> {
    let http = match index % (ctx.cfg.also.len() + 1) {
        0 => ctx.cfg.http,
        i => ctx.cfg.also[i - 1],
    };
    let tcp = TcpStream::connect(http)
        .await
        .with_context(|| format!("connect {http}"))?;
    let _ = tcp.set_nodelay(true);
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{http}/ws"), tcp)
        .await
        .context("websocket handshake")?;
    ws_send(
        &mut ws,
        &serde_json::json!({"type": "join", "room": room, "topology": "sfu", "capacity": 50}),
    )
    .await?;
    let udp = UdpSocket::bind(SocketAddr::new(http.ip(), 0)).await?;
    let local = udp.local_addr()?;
    let now = Instant::now();
    let mut rtc = Rtc::builder().build(now);
    rtc.add_local_candidate(Candidate::host(local, "udp")?);
    let mut api = rtc.sdp_api();
    let (mut vmid, mut amid) = (None, None);
    if publisher {
        vmid = Some(api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
        amid = Some(api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
    }
    let cid = api.add_channel("icebreaker".into());
    let Some((offer, pending)) = api.apply() else {
        bail!("no offer");
    };
    let mut pending: Option<SdpPendingOffer> = Some(pending);
    let mut offer = Some(offer);
    let mut tracks: HashMap<Mid, (String, MediaKind)> = HashMap::new();
    let mut channel_open: Option<ChannelId> = None;
    let mut sent_data = false;
    let mut connected = false;
    let mut keyframe = true;
    let (mut frame_no, mut audio_no) = (0u64, 0u64);
    let frame_every = Duration::from_secs_f64(1.0 / f64::from(ctx.cfg.fps.max(1)));
    let audio_every = Duration::from_millis(20);
    let frame_bytes =
        (ctx.cfg.video_kbps as usize * 1000 / 8 / ctx.cfg.fps.max(1) as usize).max(20);
    let mut next_frame = Instant::now();
    let mut next_audio = Instant::now();
    let mut last_key = Instant::now();
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        if now >= ctx.until || ctx.stop.load(Ordering::Relaxed) {
            break;
        }
        // Publish.
        if connected && publisher {
            if now >= next_frame {
                next_frame += frame_every;
                if next_frame < now {
                    next_frame = now + frame_every;
                }
                if now.duration_since(last_key) >= Duration::from_secs(2) {
                    keyframe = true;
                }
                if let Some(mid) = vmid {
                    if let Some(w) = rtc.writer(mid) {
                        let pt = w
                            .payload_params()
                            .find(|p| p.spec().codec == Codec::Vp8)
                            .map(|p| p.pt());
                        if let Some(pt) = pt {
                            let frame = vp8_frame(keyframe, frame_bytes, frame_no);
                            let t = MediaTime::new(frame_no * 3000, Frequency::NINETY_KHZ);
                            if w.write(pt, now, t, frame).is_ok() {
                                frame_no += 1;
                                if keyframe {
                                    keyframe = false;
                                    last_key = now;
                                }
                            }
                        }
                    }
                }
            }
            if now >= next_audio {
                next_audio += audio_every;
                if next_audio < now {
                    next_audio = now + audio_every;
                }
                if let Some(mid) = amid {
                    if let Some(w) = rtc.writer(mid) {
                        let pt = w
                            .payload_params()
                            .find(|p| p.spec().codec == Codec::Opus)
                            .map(|p| p.pt());
                        if let Some(pt) = pt {
                            // Speaking in turns: loud in this member's own second of four.
                            let turn = (audio_no / 50) % 4 == (index % 4) as u64;
                            let level: i8 = if turn { 20 } else { 90 };
                            let t = MediaTime::new(audio_no * 960, Frequency::FORTY_EIGHT_KHZ);
                            let _ = w.audio_level(level, level < 60).write(
                                pt,
                                now,
                                t,
                                vec![0xfcu8; 80],
                            );
                            audio_no += 1;
                        }
                    }
                }
            }
        }
        // Once everyone is connected (a message reaches the members connected to the SFU).
        let everyone = ctx.measuring.load(Ordering::Relaxed);
        if let (Some(id), false, true, true) =
            (channel_open, sent_data, ctx.cfg.data_message, everyone)
        {
            if let Some(mut ch) = rtc.channel(id) {
                if matches!(
                    ch.write(false, format!("hello from {}", rep.peer).as_bytes()),
                    Ok(true)
                ) {
                    sent_data = true;
                }
            }
        }
        // Drain output.
        let timeout = loop {
            match rtc.poll_output()? {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    if ctx.measuring.load(Ordering::Relaxed) {
                        ctx.counters.sent_packets.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = udp.try_send_to(&t.contents, t.destination);
                }
                Output::Event(e) => match e {
                    Event::Connected if !connected => {
                        connected = true;
                        ctx.counters.connected.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::MediaData(d) => {
                        if ctx.measuring.load(Ordering::Relaxed) {
                            ctx.counters.frames.fetch_add(1, Ordering::Relaxed);
                        }
                        if !d.contiguous && d.params.spec().codec == Codec::Vp8 {
                            rep.gaps += 1;
                        }
                        if let Some((peer, kind)) = tracks.get(&d.mid) {
                            let e = rep.received.entry(peer.clone()).or_default();
                            match kind {
                                MediaKind::Video => e.0 += 1,
                                MediaKind::Audio => e.1 += 1,
                            }
                        }
                    }
                    Event::KeyframeRequest(_) => keyframe = true,
                    Event::ChannelOpen(id, _) if id == cid => channel_open = Some(id),
                    Event::ChannelData(d) => {
                        rep.data.push(String::from_utf8_lossy(&d.data).into_owned());
                    }
                    _ => {}
                },
            }
        };
        let wake = [timeout, ctx.until, now + Duration::from_millis(100)]
            .into_iter()
            .chain(
                (connected && publisher)
                    .then_some([next_frame, next_audio])
                    .into_iter()
                    .flatten(),
            )
            .min()
            .unwrap_or(now)
            .max(now);
        tokio::select! {
            r = udp.recv_from(&mut buf) => {
                let (n, src) = r?;
                let now = Instant::now();
                // Simulated downlink loss: RTP only (first byte 128..=191, payload type not RTCP's).
                let rtp = n > 12 && (128..=191).contains(&buf[0]) && !(64..=95).contains(&(buf[1] & 0x7f));
                if !publisher && ctx.cfg.loss > 0.0 && rtp && connected && rand::random::<f64>() < ctx.cfg.loss {
                    rep.dropped += 1;
                    continue;
                }
                if ctx.measuring.load(Ordering::Relaxed) {
                    ctx.counters.packets.fetch_add(1, Ordering::Relaxed);
                    ctx.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                if let Ok(contents) = buf[..n].try_into() {
                    let input = Input::Receive(now, Receive { proto: Protocol::Udp, source: src, destination: local, contents });
                    rtc.handle_input(input)?;
                }
            }
            msg = ws.next() => {
                let Some(msg) = msg else { bail!("signaling closed") };
                let Message::Text(text) = msg.context("websocket")? else { continue };
                let v: Value = serde_json::from_str(&text).context("bad JSON from the server")?;
                match v["type"].as_str() {
                    Some("joined") => {
                        rep.peer = v["peer"].as_str().unwrap_or_default().to_owned();
                        if let Some(o) = offer.take() {
                            ws_send(&mut ws, &serde_json::json!({"type": "sfu", "data": {"kind": "offer", "sdp": o.to_sdp_string()}})).await?;
                        }
                    }
                    Some("sfu") => {
                        let d = &v["data"];
                        if let Some(list) = d["tracks"].as_array() {
                            tracks.clear();
                            for t in list {
                                let (Some(mid), Some(peer)) = (t["mid"].as_str(), t["peer"].as_str()) else { continue };
                                let kind = if t["kind"] == "audio" { MediaKind::Audio } else { MediaKind::Video };
                                tracks.insert(Mid::from(mid), (peer.to_owned(), kind));
                            }
                        }
                        let sdp = d["sdp"].as_str().unwrap_or_default();
                        match d["kind"].as_str() {
                            Some("answer") => {
                                if let Some(p) = pending.take() {
                                    let a = SdpAnswer::from_sdp_string(sdp)?;
                                    rtc.sdp_api().accept_answer(p, a)?;
                                }
                            }
                            // Impolite: our own offer outstanding wins (the SFU offers again).
                            Some("offer") if pending.is_none() => {
                                let o = SdpOffer::from_sdp_string(sdp)?;
                                let a = rtc.sdp_api().accept_offer(o)?;
                                ws_send(&mut ws, &serde_json::json!({"type": "sfu", "data": {"kind": "answer", "sdp": a.to_sdp_string()}})).await?;
                            }
                            Some("speaker") => rep.speakers.push(d["peer"].as_str().map(str::to_owned)),
                            Some("error") => bail!("SFU error: {}", d["message"]),
                            _ => {}
                        }
                    }
                    Some("error") => bail!("signaling error: {text}"),
                    _ => {}
                }
                if let Some(seq) = v["seq"].as_u64() {
                    if seq % 16 == 0 {
                        ws_send(&mut ws, &serde_json::json!({"type": "ack", "seq": seq})).await?;
                    }
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                rtc.handle_input(Input::Timeout(Instant::now()))?;
            }
        }
    }
    let _ = ws_send(&mut ws, &serde_json::json!({"type": "leave"})).await;
    // A clean close: read until the server's close frame, so that nothing unread makes the
    // kernel reset the connection (which can discard the `leave` before the server reads it).
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    if !connected {
        bail!("never connected");
    }
    Ok(())
}

/// A synthetic VP8 frame: a key frame carries a valid key-frame header (640 × 480).
fn vp8_frame(key: bool, len: usize, n: u64) -> Vec<u8> {
    let mut f = vec![(n & 0xff) as u8; len.max(10)];
    if key {
        f[..10].copy_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
    } else {
        f[0] = 0x31;
    }
    f
}

/// The report as text.
pub fn format_sfu(r: &SfuReport) -> String {
    let mut s = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        s,
        "members           {} ({} connected)",
        r.members, r.connected
    );
    let _ = writeln!(s, "streams forwarded {} (video + audio)", r.streams);
    let _ = writeln!(s, "measured          {:.1} s", r.seconds);
    let _ = writeln!(
        s,
        "received          {:.0} packets/s, {:.0} frames/s, {:.1} Mbit/s",
        r.packets_per_sec,
        r.frames_per_sec,
        r.bits_per_sec / 1e6
    );
    let _ = writeln!(
        s,
        "sent by publishers {:.0} packets/s",
        r.sent_packets_per_sec
    );
    match (r.server_cores, r.packets_per_core, r.streams_per_core) {
        (Some(c), Some(p), Some(st)) => {
            let _ = writeln!(
                s,
                "server CPU        {:.2} cores → {:.0} packets/s per core, {:.0} streams per core",
                c, p, st
            );
        }
        _ => {
            let _ = writeln!(s, "server CPU        (give --server-pid to measure)");
        }
    }
    let failed: Vec<&MemberReport> = r
        .members_detail
        .iter()
        .filter(|m| m.error.is_some())
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(s, "failed members    {}", failed.len());
        for m in failed.iter().take(5) {
            let _ = writeln!(
                s,
                "  {} {}: {}",
                m.room,
                m.peer,
                m.error.as_deref().unwrap_or("")
            );
        }
    }
    s
}
