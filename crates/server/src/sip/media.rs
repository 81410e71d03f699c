//! The media half of the SIP gateway: the SDP of calls through `/sip` is rewritten so that the
//! browser speaks WebRTC (ICE-lite, DTLS-SRTP) to Icebreaker and the SIP side speaks plain RTP
//! to Icebreaker, and the SFU task's media bridge (`icebreaker_sfu::bridge`, on the SFU's port)
//! carries the audio between them without transcoding.
//!
//! Per call (keyed by Call-ID): one RTP socket toward the SIP side (an even port, RTCP's odd
//! port held beside it) and one bridge leg.
//! - Browser calls: its INVITE's WebRTC offer goes upstream as a plain offer (`sdp::plain_offer`:
//!   Opus, PCMU, PCMA, telephone-event, as the browser offered them); the SIP side's answer
//!   (18x or 2xx) picks the codec, the leg answers the browser's offer with it, and that answer
//!   replaces the body going to the browser. A re-INVITE from the browser is answered by the
//!   same leg.
//! - SIP side calls: its INVITE's plain offer becomes the leg's WebRTC offer to the browser;
//!   the browser's answer picks the codec and a plain answer (`sdp::plain_answer`) goes back.
//! - The call ends (socket and leg gone) on BYE or CANCEL either way, on a final error to the
//!   INVITE, or when the leg ends by itself (the browser vanished: ICE lost).
//!
//! Retransmitted responses carry the SDP already translated (cached per call).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use icebreaker_sfu::bridge::{AudioCodec, Chosen, PlainCodec, PlainMedia};
use icebreaker_sip::sdp::{self, CodecName, Sdp};
use icebreaker_sip::{Message, Method};
use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::proxy::{Dest, FlowId, Out};
use crate::sfu::{BridgeCmd, SfuService};

/// Bridged calls at most (beyond: 503 for new calls).
const MAX_CALLS: usize = 1000;
/// ... per WebSocket (a browser has a call or two; beyond: 486).
const MAX_CALLS_PER_FLOW: usize = 8;
/// A call not answered in this time loses its media (its RTP socket is not held forever when
/// the SIP side never answers).
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

/// The codecs offered to the SIP side, in this order (the browser's own preference: Opus
/// first; G.711 for everything else).
const OFFER_CODECS: [CodecName; 3] = [CodecName::Opus, CodecName::Pcmu, CodecName::Pcma];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Browser,
    Phone,
}

struct Call {
    leg: u64,
    caller: Caller,
    socket: Arc<UdpSocket>,
    /// RTCP's port, held so that nothing else takes it (its packets are not used).
    _rtcp: Option<std::net::UdpSocket>,
    port: u16,
    reader: JoinHandle<()>,
    session_id: u64,
    version: u64,
    /// Browser calls: the browser's latest offer, and the one the leg has answered.
    offer: Option<String>,
    answered_offer: Option<String>,
    /// Browser calls: the codecs offered to the SIP side (its answer must pick one of them).
    offered: Vec<CodecName>,
    /// Phone calls: its codecs and telephone-events.
    phone_codecs: Vec<sdp::Codec>,
    phone_events: Vec<sdp::TelephoneEvent>,
    /// Whether the leg exists with a codec.
    established: bool,
    /// The last SDP body translated and its translation (for retransmissions).
    cache: Option<(Vec<u8>, Vec<u8>)>,
    host: Option<String>,
    /// The browser's WebSocket, and what it takes to hang up for it if that goes away.
    flow: Option<FlowId>,
    dialog: BrowserDialog,
    created: std::time::Instant,
}

/// The dialog as the browser's side sees it (for a BYE on its behalf).
#[derive(Debug, Default, Clone)]
struct BrowserDialog {
    /// The browser's From (with its tag).
    from: String,
    /// The other side (with its tag once answered).
    to: String,
    /// Where in-dialog requests go (the other side's Contact).
    target: Option<String>,
    /// The route set, in the order the browser's requests carry it.
    routes: Vec<String>,
    /// A CSeq above anything the browser sent.
    cseq: u32,
}

/// The URI of a Contact header value.
fn contact_uri(msg: &Message) -> Option<String> {
    match msg.contacts().ok()? {
        icebreaker_sip::Contacts::List(l) => l.first().map(|c| c.0.uri.to_string()),
        icebreaker_sip::Contacts::Star => None,
    }
}

/// The Record-Route entries of a message, one per element, in order.
fn record_routes(msg: &Message) -> Vec<String> {
    msg.record_routes()
        .map(|v| v.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

impl Drop for Call {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// See the module docs.
pub struct MediaBridge {
    sfu: Arc<SfuService>,
    /// Address of the RTP sockets (the SIP socket's address toward the upstream).
    rtp_ip: IpAddr,
    calls: Mutex<HashMap<String, Call>>,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for MediaBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaBridge")
            .field("rtp_ip", &self.rtp_ip)
            .field("calls", &self.calls.lock().len())
            .finish_non_exhaustive()
    }
}

fn codec_of(name: CodecName) -> AudioCodec {
    match name {
        CodecName::Pcmu => AudioCodec::Pcmu,
        CodecName::Pcma => AudioCodec::Pcma,
        CodecName::Opus => AudioCodec::Opus,
    }
}

/// Whether a message carries an SDP body.
fn has_sdp(msg: &Message) -> bool {
    !msg.body.is_empty()
        && msg
            .headers
            .get("Content-Type")
            .is_some_and(|t| t.trim().to_ascii_lowercase().starts_with("application/sdp"))
}

/// Whether an SDP is a WebRTC one (DTLS-SRTP), not plain RTP.
fn is_webrtc(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    text.contains("a=fingerprint:") || text.contains("UDP/TLS/RTP/SAVP")
}

/// An RTP socket on an even port of `ip`, with the odd port above it held for RTCP when free.
pub(super) fn bind_rtp(
    ip: IpAddr,
) -> std::io::Result<(std::net::UdpSocket, Option<std::net::UdpSocket>)> {
    let mut last = None;
    for _ in 0..32 {
        let s = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
        let port = s.local_addr()?.port();
        if port % 2 == 1 || port == u16::MAX {
            last = Some(s);
            continue;
        }
        let rtcp = std::net::UdpSocket::bind(SocketAddr::new(ip, port + 1)).ok();
        if rtcp.is_some() {
            return Ok((s, rtcp));
        }
        last = Some(s);
    }
    // No even pair found: an odd or lone port still works for RTP.
    match last {
        Some(s) => Ok((s, None)),
        None => std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).map(|s| (s, None)),
    }
}

/// A response to `req` (as it came from the client, our Via on top) sent back to `flow`.
fn local_reply(req: &Message, flow: FlowId, code: u16, reason: &str) -> Out {
    let mut m = req.clone();
    let _ = m.pop_via();
    let tag = format!("ib{:x}", rand::random::<u32>());
    Out {
        dest: Dest::Flow(flow),
        msg: m.response(code, Some(reason), Some(&tag)),
    }
}

impl MediaBridge {
    /// The bridge for the SIP gateway; legs live in the SFU task of `sfu`.
    pub async fn new(
        sfu: Arc<SfuService>,
        rtp_ip: IpAddr,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let bridge = Arc::new(MediaBridge {
            sfu: sfu.clone(),
            rtp_ip,
            calls: Mutex::new(HashMap::new()),
            shutdown: shutdown.clone(),
        });
        // Legs that end by themselves end their call.
        let (tx, mut rx) = mpsc::unbounded_channel();
        sfu.bridge(BridgeCmd::Watch { tx }).await;
        let weak = Arc::downgrade(&bridge);
        tokio::spawn(async move {
            while let Some((leg, reason)) = rx.recv().await {
                let Some(b) = weak.upgrade() else { return };
                let mut calls = b.calls.lock();
                let id = calls
                    .iter()
                    .find(|(_, c)| c.leg == leg)
                    .map(|(k, _)| k.clone());
                if let Some(id) = id {
                    tracing::info!(call = %id, reason, "SIP media: leg ended, call media released");
                    calls.remove(&id);
                }
            }
        });
        bridge
    }

    /// Calls with media.
    pub fn calls(&self) -> usize {
        self.calls.lock().len()
    }

    /// A call's leg (tests, admin).
    pub fn leg_of(&self, call_id: &str) -> Option<u64> {
        self.calls.lock().get(call_id).map(|c| c.leg)
    }

    /// Looks at a message the proxy is about to send and rewrites its SDP when the call is
    /// bridged. `origin`: the flow it came from (client messages). `host`: the `Host` the
    /// browser's flow used. A browser offer that cannot be bridged is answered to the browser
    /// (488, or 503 at the call limit): the returned message is then that answer.
    pub async fn process(&self, mut out: Out, origin: Option<FlowId>, host: Option<String>) -> Out {
        let Ok(call_id) = out.msg.call_id().map(str::to_owned) else {
            return out;
        };
        if out.msg.is_request() {
            match out.msg.method() {
                Some(Method::Invite) if has_sdp(&out.msg) => {
                    match (&out.dest, is_webrtc(&out.msg.body)) {
                        (Dest::Upstream(_), true) => {
                            if let Err(reply) =
                                self.browser_offer(&mut out, &call_id, origin, host).await
                            {
                                return match origin {
                                    Some(flow) => local_reply(&out.msg, flow, reply.0, reply.1),
                                    None => out,
                                };
                            }
                            let msg = &out.msg;
                            self.with_call(&call_id, |c| {
                                if c.flow.is_none() {
                                    c.flow = origin;
                                    c.dialog.from =
                                        msg.headers.get("From").unwrap_or("").to_owned();
                                    c.dialog.to = msg.headers.get("To").unwrap_or("").to_owned();
                                }
                                c.dialog.cseq = msg.cseq().map_or(1, |q| q.seq).max(c.dialog.cseq);
                            });
                        }
                        (Dest::Flow(f), false) => {
                            let f = *f;
                            self.phone_offer(&mut out, &call_id, host).await;
                            let msg = &out.msg;
                            self.with_call(&call_id, |c| {
                                if c.flow.is_none() {
                                    c.flow = Some(f);
                                    c.dialog = BrowserDialog {
                                        from: msg.headers.get("To").unwrap_or("").to_owned(),
                                        to: msg.headers.get("From").unwrap_or("").to_owned(),
                                        target: contact_uri(msg),
                                        routes: record_routes(msg),
                                        cseq: 1000,
                                    };
                                }
                            });
                        }
                        _ => {}
                    }
                }
                Some(Method::Bye | Method::Cancel) => self.end(&call_id).await,
                _ => {}
            }
            return out;
        }
        let Ok(cseq) = out.msg.cseq() else { return out };
        if !cseq.method.eq_ignore_ascii_case("INVITE") {
            return out;
        }
        let status = out.msg.status().unwrap_or(0);
        if status >= 300 {
            let established = self
                .calls
                .lock()
                .get(&call_id)
                .is_some_and(|c| c.established);
            if !established {
                self.end(&call_id).await;
            }
            return out;
        }
        if status < 180 || !has_sdp(&out.msg) {
            return out;
        }
        let caller = self.calls.lock().get(&call_id).map(|c| c.caller);
        if (200..300).contains(&status) {
            let msg = &out.msg;
            match (caller, &out.dest) {
                (Some(Caller::Browser), Dest::Flow(_)) => self.with_call(&call_id, |c| {
                    c.dialog.to = msg.headers.get("To").unwrap_or("").to_owned();
                    c.dialog.target = contact_uri(msg);
                    let mut rr = record_routes(msg);
                    rr.reverse();
                    c.dialog.routes = rr;
                }),
                (Some(Caller::Phone), Dest::Upstream(_)) => self.with_call(&call_id, |c| {
                    c.dialog.from = msg.headers.get("To").unwrap_or("").to_owned();
                }),
                _ => {}
            }
        }
        match (caller, &out.dest) {
            (Some(Caller::Browser), Dest::Flow(_)) => self.phone_answered(&mut out, &call_id).await,
            (Some(Caller::Phone), Dest::Upstream(_)) => {
                self.browser_answered(&mut out, &call_id).await
            }
            _ => {}
        }
        out
    }

    /// Releases the media of calls never answered within `ANSWER_TIMEOUT`.
    async fn reap(&self) {
        let stale: Vec<String> = self
            .calls
            .lock()
            .iter()
            .filter(|(_, c)| !c.established && c.created.elapsed() > ANSWER_TIMEOUT)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.end(&id).await;
        }
    }

    fn with_call(&self, call_id: &str, f: impl FnOnce(&mut Call)) {
        if let Some(c) = self.calls.lock().get_mut(call_id) {
            f(c);
        }
    }

    /// The WebSocket `flow` closed: a BYE on the browser's behalf for each of its answered
    /// calls (to go through the proxy as if the browser had sent it, which also ends the
    /// call's media), so the phone does not stay in a call nobody is on. Calls not answered
    /// yet just lose their media (the SIP side's INVITE transaction times out).
    pub async fn flow_closed(&self, flow: FlowId) -> Vec<String> {
        let mut byes = Vec::new();
        let mut dead = Vec::new();
        {
            let mut calls = self.calls.lock();
            for (id, c) in calls.iter_mut().filter(|(_, c)| c.flow == Some(flow)) {
                let d = &mut c.dialog;
                match (&d.target, c.established) {
                    (Some(target), true) => {
                        d.cseq += 1;
                        let routes: String =
                            d.routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
                        byes.push(format!(
                            "BYE {target} SIP/2.0\r\nVia: SIP/2.0/WSS icebreaker.invalid;branch=z9hG4bK{}\r\nMax-Forwards: 70\r\n{routes}From: {}\r\nTo: {}\r\nCall-ID: {id}\r\nCSeq: {} BYE\r\nReason: SIP;cause=200;text=\"the browser went away\"\r\nContent-Length: 0\r\n\r\n",
                            rand::random::<u64>(),
                            d.from,
                            d.to,
                            d.cseq
                        ));
                    }
                    _ => dead.push(id.clone()),
                }
            }
        }
        for id in dead {
            self.end(&id).await;
        }
        byes
    }

    /// Opens a call's RTP socket and its reader.
    fn open(&self, call_id: &str, caller: Caller, host: Option<String>) -> std::io::Result<()> {
        let (sock, rtcp) = bind_rtp(self.rtp_ip)?;
        sock.set_nonblocking(true)?;
        let port = sock.local_addr()?.port();
        let socket = Arc::new(UdpSocket::from_std(sock)?);
        let leg = crate::sfu::next_bridge_id();
        let reader = {
            let (socket, sfu, mut stop) = (socket.clone(), self.sfu.clone(), self.shutdown.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                loop {
                    tokio::select! {
                        r = socket.recv_from(&mut buf) => {
                            let Ok((n, source)) = r else { continue };
                            let data = buf.get(..n).unwrap_or_default().to_vec();
                            sfu.try_bridge(BridgeCmd::Plain { leg, source, data });
                        }
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            })
        };
        let call = Call {
            leg,
            caller,
            socket,
            _rtcp: rtcp,
            port,
            reader,
            session_id: rand::random::<u32>().into(),
            version: 1,
            offer: None,
            answered_offer: None,
            offered: Vec::new(),
            phone_codecs: Vec::new(),
            phone_events: Vec::new(),
            established: false,
            cache: None,
            host,
            flow: None,
            dialog: BrowserDialog::default(),
            created: std::time::Instant::now(),
        };
        self.calls.lock().insert(call_id.to_owned(), call);
        Ok(())
    }

    /// The browser's INVITE: its WebRTC offer becomes a plain offer. `Err`: answer the browser
    /// with this status instead.
    async fn browser_offer(
        &self,
        out: &mut Out,
        call_id: &str,
        origin: Option<FlowId>,
        host: Option<String>,
    ) -> Result<(), (u16, &'static str)> {
        let offer_text = String::from_utf8_lossy(&out.msg.body).into_owned();
        let sdp = Sdp::parse(&out.msg.body).map_err(|_| (488, "Not Acceptable Here"))?;
        let known = self.calls.lock().contains_key(call_id);
        if !known {
            self.reap().await;
            let (total, mine) = {
                let calls = self.calls.lock();
                let mine = calls
                    .values()
                    .filter(|c| origin.is_some() && c.flow == origin)
                    .count();
                (calls.len(), mine)
            };
            if total >= MAX_CALLS {
                return Err((503, "Service Unavailable"));
            }
            if mine >= MAX_CALLS_PER_FLOW {
                return Err((486, "Busy Here (too many calls on this connection)"));
            }
            if let Err(e) = self.open(call_id, Caller::Browser, host) {
                tracing::warn!("SIP media: cannot open an RTP socket: {e}");
                return Err((503, "Service Unavailable"));
            }
        }
        let (port, session_id, version) = {
            let mut calls = self.calls.lock();
            let Some(c) = calls.get_mut(call_id) else {
                return Err((500, "Server Internal Error"));
            };
            if known {
                c.version += 1;
            }
            c.offer = Some(offer_text);
            (c.port, c.session_id, c.version)
        };
        let plain = sdp::plain_offer(
            &sdp,
            &sdp::PlainOfferOptions {
                addr: self.rtp_ip,
                port,
                codecs: &OFFER_CODECS,
                session_id,
                session_version: version,
            },
        );
        match plain {
            Ok(p) => {
                out.msg.body = p.sdp.to_bytes();
                let names = p.codecs.iter().map(|c| c.name).collect();
                self.with_call(call_id, |c| c.offered = names);
                Ok(())
            }
            Err(e) => {
                tracing::debug!(call = %call_id, "SIP media: browser offer not bridgeable: {e:?}");
                if !known {
                    self.end(call_id).await;
                }
                Err((488, "Not Acceptable Here"))
            }
        }
    }

    /// The SIP side answered the browser's offer (18x/2xx with SDP).
    async fn phone_answered(&self, out: &mut Out, call_id: &str) {
        let (leg, offer, answered, established, socket, host, offered) = {
            let calls = self.calls.lock();
            let Some(c) = calls.get(call_id) else { return };
            if let Some((seen, sent)) = &c.cache {
                if *seen == out.msg.body {
                    out.msg.body = sent.clone();
                    return;
                }
            }
            (
                c.leg,
                c.offer.clone(),
                c.answered_offer.clone(),
                c.established,
                c.socket.clone(),
                c.host.clone(),
                c.offered.clone(),
            )
        };
        let Some(offer) = offer else { return };
        let answer = match Sdp::parse(&out.msg.body)
            .map_err(|e| format!("{e:?}"))
            .and_then(|s| sdp::read_plain_answer_among(&s, &offered).map_err(|e| format!("{e:?}")))
        {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(call = %call_id, "SIP media: the SIP side's answer is not usable: {e}");
                return;
            }
        };
        let plain = PlainMedia {
            remote: answer.addr,
            codecs: vec![PlainCodec {
                codec: codec_of(answer.codec.name),
                pt: answer.codec.pt,
            }],
            telephone_events: answer
                .telephone_event
                .iter()
                .map(|e| (e.pt, e.clock))
                .collect(),
        };
        let webrtc = if established && answered.as_deref() == Some(offer.as_str()) {
            // The same offer answered again (183 then 200 with another body): same answer.
            self.sfu
                .bridge(BridgeCmd::SetRemote {
                    leg,
                    remote: answer.addr,
                })
                .await;
            self.calls
                .lock()
                .get(call_id)
                .and_then(|c| c.cache.as_ref().map(|(_, sent)| sent.clone()))
        } else if established {
            let rx = self
                .sfu
                .ask(|reply| BridgeCmd::Renegotiate {
                    leg,
                    offer: offer.clone(),
                    remote: answer.addr,
                    reply,
                })
                .await;
            match rx {
                Ok(sdp) => Some(sdp.into_bytes()),
                r => {
                    tracing::warn!(call = %call_id, "SIP media: re-offer refused: {r:?}");
                    None
                }
            }
        } else {
            let rx = self
                .sfu
                .ask(|reply| BridgeCmd::Answer {
                    leg,
                    offer: offer.clone(),
                    plain,
                    socket,
                    host,
                    reply,
                })
                .await;
            match rx {
                Ok((sdp, chosen)) => {
                    log_chosen(call_id, &chosen);
                    Some(sdp.into_bytes())
                }
                r => {
                    tracing::warn!(call = %call_id, "SIP media: cannot answer the browser: {r:?}");
                    None
                }
            }
        };
        let Some(webrtc) = webrtc else { return };
        let mut calls = self.calls.lock();
        if let Some(c) = calls.get_mut(call_id) {
            c.established = true;
            c.answered_offer = Some(offer);
            c.cache = Some((out.msg.body.clone(), webrtc.clone()));
        }
        out.msg.body = webrtc;
    }

    /// The SIP side's INVITE toward a browser: its plain offer becomes a WebRTC offer.
    async fn phone_offer(&self, out: &mut Out, call_id: &str, host: Option<String>) {
        self.reap().await;
        if self.calls.lock().contains_key(call_id) {
            // A re-INVITE from the SIP side: not translated (the browser refuses it).
            tracing::debug!(call = %call_id, "SIP media: re-INVITE from the SIP side not bridged");
            return;
        }
        let parsed = Sdp::parse(&out.msg.body)
            .map_err(|e| format!("{e:?}"))
            .and_then(|s| {
                let a = sdp::read_plain_answer(&s).map_err(|e| format!("{e:?}"))?;
                let media = s
                    .media
                    .iter()
                    .find(|m| m.kind() == "audio" && m.port() != 0 && m.proto().starts_with("RTP/"))
                    .ok_or("no audio")?;
                let (codecs, events) = sdp::audio_codecs(media).map_err(|e| format!("{e:?}"))?;
                Ok((a.addr, codecs, events))
            });
        let (remote, codecs, events) = match parsed {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(call = %call_id, "SIP media: offer from the SIP side not bridgeable: {e}");
                return;
            }
        };
        if self.calls.lock().len() >= MAX_CALLS {
            return;
        }
        if let Err(e) = self.open(call_id, Caller::Phone, host.clone()) {
            tracing::warn!("SIP media: cannot open an RTP socket: {e}");
            return;
        }
        let Some((leg, socket)) = self
            .calls
            .lock()
            .get(call_id)
            .map(|c| (c.leg, c.socket.clone()))
        else {
            return;
        };
        let plain = PlainMedia {
            remote,
            codecs: codecs
                .iter()
                .map(|c| PlainCodec {
                    codec: codec_of(c.name),
                    pt: c.pt,
                })
                .collect(),
            telephone_events: events.iter().map(|e| (e.pt, e.clock)).collect(),
        };
        let rx = self
            .sfu
            .ask(|reply| BridgeCmd::Offer {
                leg,
                plain,
                socket,
                host,
                reply,
            })
            .await;
        match rx {
            Ok(offer) => {
                if let Some(c) = self.calls.lock().get_mut(call_id) {
                    c.phone_codecs = codecs;
                    c.phone_events = events;
                }
                out.msg.body = offer.into_bytes();
            }
            r => {
                tracing::warn!(call = %call_id, "SIP media: cannot offer to the browser: {r:?}");
                self.end(call_id).await;
            }
        }
    }

    /// The browser answered the SIP side's offer.
    async fn browser_answered(&self, out: &mut Out, call_id: &str) {
        let leg = {
            let calls = self.calls.lock();
            let Some(c) = calls.get(call_id) else { return };
            if let Some((seen, sent)) = &c.cache {
                if *seen == out.msg.body {
                    out.msg.body = sent.clone();
                    return;
                }
            }
            c.leg
        };
        let rx = self
            .sfu
            .ask(|reply| BridgeCmd::AcceptAnswer {
                leg,
                answer: String::from_utf8_lossy(&out.msg.body).into_owned(),
                reply,
            })
            .await;
        let chosen = match rx {
            Ok(c) => c,
            r => {
                tracing::warn!(call = %call_id, "SIP media: the browser's answer refused: {r:?}");
                return;
            }
        };
        log_chosen(call_id, &chosen);
        let mut calls = self.calls.lock();
        let Some(c) = calls.get_mut(call_id) else {
            return;
        };
        let Some(codec) = c.phone_codecs.iter().find(|x| x.pt == chosen.plain_pt) else {
            return;
        };
        let event = chosen
            .telephone_event
            .and_then(|(_, pt)| c.phone_events.iter().find(|e| e.pt == pt));
        let body = sdp::plain_answer(codec, event, self.rtp_ip, c.port, c.session_id, c.version)
            .to_bytes();
        c.established = true;
        c.cache = Some((out.msg.body.clone(), body.clone()));
        out.msg.body = body;
    }

    /// Ends a call's media.
    async fn end(&self, call_id: &str) {
        let call = self.calls.lock().remove(call_id);
        if let Some(c) = call {
            tracing::info!(call = %call_id, leg = c.leg, "SIP media: call ended, media released");
            self.sfu.bridge(BridgeCmd::Close { leg: c.leg }).await;
        }
    }
}

fn log_chosen(call_id: &str, chosen: &Chosen) {
    tracing::info!(
        call = %call_id,
        codec = ?chosen.codec,
        webrtc_pt = chosen.webrtc_pt,
        plain_pt = chosen.plain_pt,
        dtmf = chosen.telephone_event.is_some(),
        "SIP media: bridged"
    );
}
