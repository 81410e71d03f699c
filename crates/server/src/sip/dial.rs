//! The server's own SIP user agent: a room member asks (`sip` `dial`, the SDK's
//! `call.dial(uri)`), the gateway calls the phone through `sip_upstream` on the member's behalf
//! (a B2BUA), and once the phone answers it joins the room as a member of its own
//! (`signal::phone::PhoneMember`): every browser of the room connects to it like to any peer,
//! the media bridge's group for the call mixes their audio toward the phone and sends the
//! phone's audio to each of them.
//!
//! SIP side, RFC 3261 as a UAC: INVITE with a plain offer (PCMU, PCMA, telephone-event),
//! retransmitted over UDP (T1 = 500 ms doubling to T2 = 4 s, timer B 32 s); provisional
//! responses (`ringing`); a 401/407 answered once with `sip_username`/`sip_password` (RFC
//! 2617/7616 digest, MD5 or SHA-256); non-2xx finals ACKed in their transaction, a 2xx ACKed
//! along the route set (Record-Route reversed, Contact as target) and again on each
//! retransmission; CANCEL before an answer (once something provisional came), BYE after;
//! the phone's BYE, re-INVITE (session refresh: answered with the same media), OPTIONS, INFO
//! and UPDATE answered 200. The call ends when the dialer or anyone in the room hangs up, the
//! phone hangs up, nobody is left in the room, or the phone's member is removed.
//!
//! State goes back to the dialer as `sip` messages: `{"kind":"dial","id","uri","state"}` with
//! state `calling`, `ringing`, `answered` (+ `phone`: its peer id), `failed` (+ `code`,
//! `reason`), `ended` (+ `reason`). See docs/PROTOCOL.md.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use icebreaker_sfu::bridge::{AudioCodec, PlainCodec, PlainMedia};
use icebreaker_sip::sdp::{self, CodecName, Sdp};
use icebreaker_sip::{Message, Method};
use parking_lot::Mutex;
use serde_json::json;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::SipService;
use crate::sfu::{BridgeCmd, SfuService};
use crate::signal::phone::{Heard, PhoneMember, SipInput};
use crate::signal::SignalService;

/// What every Call-ID of the server's own calls contains (the upstream reader looks for it
/// before parsing a message a second time).
pub const CALL_ID_MARK: &[u8] = b"@icebreaker";

/// Calls the server has dialed at most at once.
const MAX_DIALS: usize = 100;
/// ... per room.
const MAX_DIALS_PER_ROOM: usize = 4;
/// RFC 3261 T1 and T2.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// Timer B: no response at all to an INVITE in this time.
const TIMER_B: Duration = Duration::from_secs(32);
/// A phone that rings this long is given up (CANCEL).
const RING_TIMEOUT: Duration = Duration::from_secs(60);
/// SIP messages queued per call.
const CALL_QUEUE: usize = 64;

/// What the dialer configured.
#[derive(Debug, Clone)]
pub struct DialConfig {
    /// From (a SIP URI).
    pub from: String,
    /// Digest credentials.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Our socket toward the upstream, as it sees it.
    pub local: SocketAddr,
    /// `UDP`, `TCP` or `TLS`.
    pub transport: &'static str,
    /// Address of the RTP sockets.
    pub rtp_ip: IpAddr,
}

enum Event {
    Sip(Message),
    Hangup(&'static str),
}

struct Entry {
    tx: mpsc::Sender<Event>,
    id: String,
    room: String,
}

/// See the module docs.
pub struct DialService {
    sip: Weak<SipService>,
    signal: Arc<SignalService>,
    sfu: Arc<SfuService>,
    cfg: DialConfig,
    /// By Call-ID.
    calls: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for DialService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialService")
            .field("calls", &self.calls.lock().len())
            .finish_non_exhaustive()
    }
}

fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(rand::random::<u32>() % 16, 16).unwrap_or('0'))
        .collect()
}

/// `tel:+1555…` → `sip:+1555…@host`; `sip:`/`sips:` as they are; anything else refused.
fn target_uri(uri: &str, upstream_host: &str) -> Result<String, &'static str> {
    let uri = uri.trim();
    if uri.len() > 256 || uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("not a SIP URI");
    }
    if let Some(num) = uri.strip_prefix("tel:") {
        let num = num.split(';').next().unwrap_or("");
        if num.is_empty()
            || !num
                .chars()
                .all(|c| c.is_ascii_digit() || "+-.()*#".contains(c))
        {
            return Err("not a telephone number");
        }
        let digits: String = num.chars().filter(|c| !"-.()".contains(*c)).collect();
        return Ok(format!("sip:{digits}@{upstream_host}"));
    }
    match icebreaker_sip::SipUri::parse(uri) {
        Ok(_) => Ok(uri.to_owned()),
        Err(_) => Err("not a SIP URI (sip:, sips: or tel:)"),
    }
}

fn header_values<'a>(msg: &'a Message, name: &str) -> Vec<&'a str> {
    msg.headers.values(name)
}

impl DialService {
    /// Starts the service: `sip` messages from members arrive through the signal service.
    pub fn start(
        sip: &Arc<SipService>,
        signal: Arc<SignalService>,
        sfu: Arc<SfuService>,
        cfg: DialConfig,
    ) -> Arc<Self> {
        let svc = Arc::new(DialService {
            sip: Arc::downgrade(sip),
            signal: signal.clone(),
            sfu,
            cfg,
            calls: Mutex::new(HashMap::new()),
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        signal.set_sip(tx);
        let weak = Arc::downgrade(&svc);
        tokio::spawn(async move {
            while let Some(input) = rx.recv().await {
                let Some(svc) = weak.upgrade() else { return };
                svc.input(input);
            }
        });
        svc
    }

    /// Calls in progress.
    pub fn calls(&self) -> usize {
        self.calls.lock().len()
    }

    /// A SIP message from the upstream for one of our calls: taken (true) or not ours.
    pub fn intercept(&self, msg: &Message) -> bool {
        let Ok(call_id) = msg.call_id() else {
            return false;
        };
        let tx = match self.calls.lock().get(call_id) {
            Some(e) => e.tx.clone(),
            None => return false,
        };
        // A full queue drops the message, as a lost datagram (the other side retransmits).
        let _ = tx.try_send(Event::Sip(msg.clone()));
        true
    }

    fn push(&self, room: &str, peer: &str, data: serde_json::Value) {
        self.signal.sip_push(room, peer, &data);
    }

    /// A `sip` message from a member.
    fn input(self: &Arc<Self>, m: SipInput) {
        let data: serde_json::Value = serde_json::from_str(m.data.get()).unwrap_or_default();
        let kind = data.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let reference = data.get("ref").cloned().unwrap_or(serde_json::Value::Null);
        match kind {
            "dial" => {
                let fail = |reason: &str| {
                    self.push(
                        &m.room,
                        &m.peer,
                        json!({"kind": "dial", "state": "failed", "ref": reference, "code": 0, "reason": reason}),
                    );
                };
                let Some(uri) = data.get("uri").and_then(|u| u.as_str()) else {
                    return fail("`uri` missing");
                };
                let host = self.cfg_upstream_host();
                let target = match target_uri(uri, &host) {
                    Ok(t) => t,
                    Err(e) => return fail(e),
                };
                {
                    let calls = self.calls.lock();
                    if calls.len() >= MAX_DIALS {
                        return fail("the gateway is at its call limit");
                    }
                    if calls.values().filter(|e| e.room == m.room).count() >= MAX_DIALS_PER_ROOM {
                        return fail("this room is at its call limit");
                    }
                }
                let call_id = format!("ibd-{}@icebreaker", random_hex(20));
                let id = random_hex(12);
                let (tx, rx) = mpsc::channel(CALL_QUEUE);
                self.calls.lock().insert(
                    call_id.clone(),
                    Entry {
                        tx,
                        id: id.clone(),
                        room: m.room.clone(),
                    },
                );
                let call = Call {
                    id,
                    reference,
                    room: m.room,
                    dialer: m.peer,
                    host: m.host,
                    uri: target,
                    call_id,
                    from_tag: random_hex(10),
                    cseq: 1,
                    branch: String::new(),
                    to_tag: None,
                    target: None,
                    routes: Vec::new(),
                    port: 0,
                    session_id: u64::from(rand::random::<u32>()),
                    codec: None,
                };
                let svc = self.clone();
                tokio::spawn(async move { svc.run(call, rx).await });
            }
            "hangup" => {
                let id = data.get("id").and_then(|i| i.as_str()).unwrap_or("");
                let tx = self
                    .calls
                    .lock()
                    .values()
                    .find(|e| e.id == id && e.room == m.room)
                    .map(|e| e.tx.clone());
                match tx {
                    Some(tx) => {
                        let _ = tx.try_send(Event::Hangup("hung up"));
                    }
                    None => self.push(
                        &m.room,
                        &m.peer,
                        json!({"kind": "dial", "id": id, "state": "ended", "reason": "no such call"}),
                    ),
                }
            }
            _ => self.push(
                &m.room,
                &m.peer,
                json!({"kind": "error", "reason": "unknown `sip` kind (dial, hangup)"}),
            ),
        }
    }

    fn cfg_upstream_host(&self) -> String {
        self.sip
            .upgrade()
            .map(|s| s.upstream_host.clone())
            .unwrap_or_default()
    }

    async fn send(&self, msg: &str) {
        if let Some(sip) = self.sip.upgrade() {
            sip.send_upstream(msg.as_bytes().to_vec()).await;
        }
    }

    fn udp(&self) -> bool {
        self.cfg.transport == "UDP"
    }

    fn via(&self, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch};rport",
            self.cfg.transport, self.cfg.local
        )
    }

    fn contact(&self) -> String {
        let t = super::proxy::transport_param(self.cfg.transport)
            .map(|t| format!(";transport={t}"))
            .unwrap_or_default();
        format!("<sip:icebreaker@{}{t}>", self.cfg.local)
    }

    fn offer_sdp(&self, call: &Call) -> String {
        let ip = self.cfg.rtp_ip;
        let fam = if ip.is_ipv4() { "IP4" } else { "IP6" };
        format!(
            "v=0\r\no=- {sid} 1 IN {fam} {ip}\r\ns=Icebreaker\r\nc=IN {fam} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
            sid = call.session_id,
            port = call.port
        )
    }

    fn invite(&self, call: &Call, auth: Option<&str>) -> String {
        let sdp = self.offer_sdp(call);
        let auth = auth.map(|a| format!("{a}\r\n")).unwrap_or_default();
        format!(
            "INVITE {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <{from}>;tag={tag}\r\nTo: <{uri}>\r\nCall-ID: {cid}\r\nCSeq: {cseq} INVITE\r\nContact: {contact}\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\nUser-Agent: Icebreaker/{ver}\r\n{auth}Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            uri = call.uri,
            via = self.via(&call.branch),
            from = self.cfg.from,
            tag = call.from_tag,
            cid = call.call_id,
            cseq = call.cseq,
            contact = self.contact(),
            ver = env!("CARGO_PKG_VERSION"),
            len = sdp.len(),
        )
    }

    /// ACK of a non-2xx final response: same transaction (branch), To of the response.
    fn ack_failure(&self, call: &Call, resp: &Message) -> String {
        self.in_invite_transaction(call, "ACK", resp.headers.get("To").unwrap_or(""))
    }

    /// CANCEL of the pending INVITE (same branch and CSeq number).
    fn cancel(&self, call: &Call) -> String {
        self.in_invite_transaction(call, "CANCEL", &format!("<{}>", call.uri))
    }

    /// A request of the INVITE's transaction (its branch, CSeq number, Request-URI).
    fn in_invite_transaction(&self, call: &Call, method: &str, to: &str) -> String {
        format!(
            "{method} {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <{from}>;tag={tag}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            uri = call.uri,
            via = self.via(&call.branch),
            from = self.cfg.from,
            tag = call.from_tag,
            cid = call.call_id,
            cseq = call.cseq,
        )
    }

    /// An in-dialog request (ACK of a 2xx, BYE) along the route set.
    fn in_dialog(&self, call: &Call, method: &str, cseq: u32, branch: &str) -> String {
        let target = call.target.clone().unwrap_or_else(|| call.uri.clone());
        let routes: String = call
            .routes
            .iter()
            .map(|r| format!("Route: {r}\r\n"))
            .collect();
        let to_tag = call
            .to_tag
            .as_deref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        format!(
            "{method} {target} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n{routes}From: <{from}>;tag={tag}\r\nTo: <{uri}>{to_tag}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            via = self.via(branch),
            from = self.cfg.from,
            tag = call.from_tag,
            uri = call.uri,
            cid = call.call_id,
        )
    }

    /// A response to a request from the phone (`body`: SDP or empty).
    fn reply(&self, req: &Message, code: u16, reason: &str, call: &Call, body: &str) -> String {
        let mut m = req.response(code, Some(reason), call.to_tag.as_deref());
        if !body.is_empty() {
            m.headers.set("Contact", &self.contact());
            m.headers.set("Content-Type", "application/sdp");
            m.body = body.as_bytes().to_vec();
        }
        String::from_utf8_lossy(&m.to_bytes()).into_owned()
    }

    fn state(&self, call: &Call, state: &str, extra: serde_json::Value) {
        let mut v = json!({"kind": "dial", "id": call.id, "uri": call.uri, "state": state, "ref": call.reference});
        if let (Some(obj), Some(more)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in more {
                obj.insert(k.clone(), x.clone());
            }
        }
        self.push(&call.room, &call.dialer, v);
    }

    /// One dialed call, from INVITE to the end.
    async fn run(self: Arc<Self>, mut call: Call, mut rx: mpsc::Receiver<Event>) {
        let group = crate::sfu::next_bridge_id();
        let opened = super::media::bind_rtp(self.cfg.rtp_ip).and_then(|(s, rtcp)| {
            s.set_nonblocking(true)?;
            Ok((UdpSocket::from_std(s)?, rtcp))
        });
        let (socket, _rtcp) = match opened {
            Ok((s, r)) => (Arc::new(s), r),
            Err(e) => {
                tracing::warn!("SIP dial: cannot open an RTP socket: {e}");
                self.state(
                    &call,
                    "failed",
                    json!({"code": 503, "reason": "no RTP port"}),
                );
                self.calls.lock().remove(&call.call_id);
                return;
            }
        };
        call.port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
        let reader = {
            let (socket, sfu) = (socket.clone(), self.sfu.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                while let Ok((n, source)) = socket.recv_from(&mut buf).await {
                    let data = buf.get(..n).unwrap_or_default().to_vec();
                    sfu.try_bridge(BridgeCmd::Plain {
                        leg: group,
                        source,
                        data,
                    });
                }
            })
        };
        let end = self.call_out(&mut call, &mut rx, group, socket).await;
        reader.abort();
        self.sfu.bridge(BridgeCmd::CloseGroup { group }).await;
        self.calls.lock().remove(&call.call_id);
        match end {
            Ok(reason) => self.state(&call, "ended", json!({"reason": reason})),
            Err((code, reason)) => {
                self.state(&call, "failed", json!({"code": code, "reason": reason}))
            }
        }
    }

    /// INVITE until a final response; then the call in the room. `Ok(reason)`: answered, then
    /// ended; `Err((code, reason))`: never answered.
    async fn call_out(
        &self,
        call: &mut Call,
        rx: &mut mpsc::Receiver<Event>,
        group: u64,
        socket: Arc<UdpSocket>,
    ) -> Result<String, (u16, String)> {
        call.branch = format!("z9hG4bK-ibd-{}", random_hex(16));
        let mut invite = self.invite(call, None);
        self.send(&invite).await;
        self.state(call, "calling", json!({}));
        let started = Instant::now();
        let mut interval = T1;
        let mut next = started + T1;
        let mut provisional = false;
        let mut ringing = false;
        let mut auth_tried = false;
        let mut hangup: Option<&'static str> = None;
        let mut cancelled = false;
        let answer = loop {
            let retransmit = self.udp() && !provisional;
            let no_answer_at = if provisional {
                started + RING_TIMEOUT
            } else {
                started + TIMER_B
            };
            tokio::select! {
                ev = rx.recv() => match ev {
                    None => return Err((500, "gateway stopped".into())),
                    Some(Event::Hangup(why)) => {
                        if provisional && !cancelled {
                            self.send(&self.cancel(call)).await;
                            cancelled = true;
                        }
                        hangup = Some(why);
                    }
                    Some(Event::Sip(msg)) => {
                        if msg.is_request() {
                            continue;
                        }
                        let Ok(cseq) = msg.cseq() else { continue };
                        if cseq.method != "INVITE" || cseq.seq != call.cseq {
                            continue;
                        }
                        let code = msg.status().unwrap_or(0);
                        if code < 200 {
                            provisional = true;
                            if let Some(_why) = hangup {
                                if !cancelled {
                                    self.send(&self.cancel(call)).await;
                                    cancelled = true;
                                }
                            }
                            if (180..=183).contains(&code) && !ringing {
                                ringing = true;
                                self.state(call, "ringing", json!({"code": code}));
                            }
                            continue;
                        }
                        if code < 300 {
                            break msg;
                        }
                        self.send(&self.ack_failure(call, &msg)).await;
                        if let Some(why) = hangup {
                            return Err((487, why.to_string()));
                        }
                        let reason = match &msg.start {
                            icebreaker_sip::StartLine::Response { reason, .. } => reason.clone(),
                            _ => String::new(),
                        };
                        if (code == 401 || code == 407) && !auth_tried {
                            if let Some(auth) = self.authorize(call, &msg, code) {
                                auth_tried = true;
                                call.cseq += 1;
                                call.branch = format!("z9hG4bK-ibd-{}", random_hex(16));
                                invite = self.invite(call, Some(&auth));
                                self.send(&invite).await;
                                provisional = false;
                                interval = T1;
                                next = Instant::now() + T1;
                                continue;
                            }
                        }
                        return Err((code, reason));
                    }
                },
                _ = tokio::time::sleep_until(next), if retransmit => {
                    self.send(&invite).await;
                    interval = (interval * 2).min(T2);
                    next = Instant::now() + interval;
                }
                _ = tokio::time::sleep_until(no_answer_at) => {
                    if provisional && !cancelled {
                        self.send(&self.cancel(call)).await;
                    }
                    return Err((408, if provisional { "no answer" } else { "no response from the SIP server" }.into()));
                }
                _ = tokio::time::sleep(Duration::from_secs(5)), if cancelled => {
                    return Err((487, hangup.unwrap_or("cancelled").to_string()));
                }
            }
        };

        // Answered: the dialog.
        call.to_tag = answer.to().ok().and_then(|t| t.tag().map(str::to_owned));
        call.target = answer.contacts().ok().and_then(|c| match c {
            icebreaker_sip::Contacts::List(l) => l.first().map(|c| c.0.uri.to_string()),
            icebreaker_sip::Contacts::Star => None,
        });
        let mut rr: Vec<String> = header_values(&answer, "Record-Route")
            .iter()
            .flat_map(|v| split_list(v))
            .collect();
        rr.reverse();
        call.routes = rr;
        let ack = self.in_dialog(
            call,
            "ACK",
            call.cseq,
            &format!("z9hG4bK-ibd-{}", random_hex(16)),
        );
        self.send(&ack).await;
        if let Some(why) = hangup {
            self.bye(call, rx).await;
            return Ok(why.to_string());
        }
        let plain = match Sdp::parse(&answer.body).ok().and_then(|s| {
            sdp::read_plain_answer_among(&s, &[CodecName::Pcmu, CodecName::Pcma]).ok()
        }) {
            Some(a) => a,
            _ => {
                self.bye(call, rx).await;
                return Err((488, "the phone answered no usable audio".into()));
            }
        };
        call.codec = Some(plain.clone());
        let media = PlainMedia {
            remote: plain.addr,
            codecs: vec![PlainCodec {
                codec: match plain.codec.name {
                    CodecName::Pcma => AudioCodec::Pcma,
                    _ => AudioCodec::Pcmu,
                },
                pt: plain.codec.pt,
            }],
            telephone_events: plain
                .telephone_event
                .iter()
                .map(|e| (e.pt, e.clock))
                .collect(),
        };
        let rx_open = self
            .sfu
            .ask(|reply| BridgeCmd::OpenGroup {
                group,
                plain: media,
                socket,
                reply,
            })
            .await;
        if rx_open.is_err() {
            self.bye(call, rx).await;
            return Err((500, "the media bridge refused the call".into()));
        }
        let name = display_name(&call.uri);
        let member = self
            .signal
            .join_phone(
                &call.room,
                &name,
                &json!({"sip": call.uri, "phone": true, "call": call.id}),
                call.host.clone(),
            )
            .await;
        let mut member = match member {
            Ok(m) => m,
            Err(e) => {
                self.bye(call, rx).await;
                return Err((500, format!("cannot join the room: {}", e.message)));
            }
        };
        self.state(call, "answered", json!({"phone": member.peer()}));
        let why = self.in_call(call, rx, group, &mut member).await;
        if why != "remote" {
            self.bye(call, rx).await;
        }
        member.leave().await;
        Ok(if why == "remote" {
            "the phone hung up".into()
        } else {
            why.into()
        })
    }

    /// The answered call: the room's browsers connect to the phone, the phone may hang up.
    async fn in_call(
        &self,
        call: &mut Call,
        rx: &mut mpsc::Receiver<Event>,
        group: u64,
        member: &mut PhoneMember,
    ) -> &'static str {
        let mut legs: HashMap<String, u64> = HashMap::new();
        if member.others().is_empty() {
            return "nobody left in the room";
        }
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    None => return "gateway stopped",
                    Some(Event::Hangup(why)) => return why,
                    Some(Event::Sip(msg)) => {
                        if !msg.is_request() {
                            // A 2xx to the INVITE again: our ACK was lost.
                            if msg.cseq().is_ok_and(|c| c.method == "INVITE")
                                && msg.status().is_some_and(|s| (200..300).contains(&s))
                            {
                                let ack = self.in_dialog(call, "ACK", call.cseq, &format!("z9hG4bK-ibd-{}", random_hex(16)));
                                self.send(&ack).await;
                            }
                            continue;
                        }
                        match msg.method() {
                            Some(Method::Bye) => {
                                self.send(&self.reply(&msg, 200, "OK", call, "")).await;
                                return "remote";
                            }
                            Some(Method::Ack) => {}
                            Some(Method::Invite) => {
                                // A session refresh or re-INVITE: the same media again.
                                let body = call.codec.as_ref().map(|a| {
                                    let sdp = sdp::plain_answer(&a.codec, a.telephone_event.as_ref(), self.cfg.rtp_ip, call.port, call.session_id, 2);
                                    String::from_utf8_lossy(&sdp.to_bytes()).into_owned()
                                }).unwrap_or_default();
                                self.send(&self.reply(&msg, 200, "OK", call, &body)).await;
                            }
                            _ => {
                                self.send(&self.reply(&msg, 200, "OK", call, "")).await;
                            }
                        }
                    }
                },
                heard = member.next() => {
                    let Ok(heard) = heard else { return "removed from the room" };
                    for h in heard {
                        match h {
                            Heard::Signal { from, data } => {
                                let v: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
                                let Some(sdp) = v.pointer("/sdp/sdp").and_then(|s| s.as_str()) else { continue };
                                if v.pointer("/sdp/type").and_then(|t| t.as_str()) != Some("offer") {
                                    continue;
                                }
                                let leg = *legs.entry(from.clone()).or_insert_with(crate::sfu::next_bridge_id);
                                let answer = self.sfu.ask(|reply| BridgeCmd::GroupAnswer {
                                    group,
                                    leg,
                                    offer: sdp.to_owned(),
                                    host: call.host.clone(),
                                    reply,
                                }).await;
                                match answer {
                                    Ok(answer) => {
                                        member.signal(&from, &json!({"sdp": {"type": "answer", "sdp": answer}})).await;
                                    }
                                    r => tracing::debug!(peer = %from, "SIP dial: offer refused: {r:?}"),
                                }
                            }
                            Heard::Left(peer) => {
                                if let Some(leg) = legs.remove(&peer) {
                                    self.sfu.bridge(BridgeCmd::Close { leg }).await;
                                }
                            }
                            Heard::Joined(_) => {}
                        }
                    }
                    if member.others().is_empty() {
                        return "nobody left in the room";
                    }
                }
            }
        }
    }

    /// BYE, waiting (a little) for its answer; retransmitted over UDP.
    async fn bye(&self, call: &mut Call, rx: &mut mpsc::Receiver<Event>) {
        call.cseq += 1;
        let bye = self.in_dialog(
            call,
            "BYE",
            call.cseq,
            &format!("z9hG4bK-ibd-{}", random_hex(16)),
        );
        self.send(&bye).await;
        let deadline = Instant::now() + Duration::from_secs(4);
        let mut interval = T1;
        let mut next = Instant::now() + T1;
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(Event::Sip(m)) if !m.is_request() => {
                        if m.cseq().is_ok_and(|c| c.method == "BYE") && m.status().unwrap_or(0) >= 200 {
                            return;
                        }
                    }
                    Some(Event::Sip(m)) => {
                        // The phone hung up at the same time.
                        if matches!(m.method(), Some(Method::Bye)) {
                            self.send(&self.reply(&m, 200, "OK", call, "")).await;
                        }
                    }
                    Some(Event::Hangup(_)) => {}
                    None => return,
                },
                _ = tokio::time::sleep_until(next), if self.udp() => {
                    self.send(&bye).await;
                    interval = (interval * 2).min(T2);
                    next = Instant::now() + interval;
                }
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// The Authorization (401) or Proxy-Authorization (407) header for the INVITE again.
    fn authorize(&self, call: &Call, resp: &Message, code: u16) -> Option<String> {
        let (user, pass) = (self.cfg.username.as_ref()?, self.cfg.password.as_ref()?);
        let (hname, aname) = if code == 407 {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let challenges = header_values(resp, hname);
        let challenge = challenges
            .iter()
            .filter_map(|v| icebreaker_sip::digest::Challenge::parse(v).ok())
            .find(|c| !matches!(c.algorithm, icebreaker_sip::digest::Algorithm::Other(_)))?;
        let creds = icebreaker_sip::digest::answer(
            &challenge,
            user,
            pass,
            "INVITE",
            &call.uri,
            &random_hex(16),
            1,
        )
        .ok()?;
        Some(format!("{aname}: {creds}"))
    }
}

/// One dialed call's state.
struct Call {
    id: String,
    reference: serde_json::Value,
    room: String,
    dialer: String,
    host: Option<String>,
    uri: String,
    call_id: String,
    from_tag: String,
    cseq: u32,
    branch: String,
    to_tag: Option<String>,
    target: Option<String>,
    routes: Vec<String>,
    port: u16,
    session_id: u64,
    codec: Option<sdp::PlainAnswer>,
}

/// Splits a header value that is a comma-separated list of name-addrs (commas inside `<>` or
/// quotes kept).
fn split_list(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut cur) = (0i32, false, String::new());
    for c in v.chars() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(cur.trim().to_owned());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// A display name for the phone's member: the URI's user part (`+15551234`), else the URI.
fn display_name(uri: &str) -> String {
    icebreaker_sip::SipUri::parse(uri)
        .ok()
        .and_then(|u| u.user.clone())
        .unwrap_or_else(|| uri.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            target_uri("tel:+1-555-0100", "pbx.example.org"),
            Ok("sip:+15550100@pbx.example.org".to_string())
        );
        assert_eq!(
            target_uri("sip:100@pbx.example.org", "x"),
            Ok("sip:100@pbx.example.org".to_string())
        );
        assert!(target_uri("http://evil", "x").is_err());
        assert!(target_uri("sip:a b@c", "x").is_err());
        assert!(target_uri("tel:abc", "x").is_err());
        assert_eq!(
            split_list("<sip:a@b;lr>, \"x, y\" <sip:c@d>"),
            vec!["<sip:a@b;lr>".to_string(), "\"x, y\" <sip:c@d>".to_string()]
        );
        assert_eq!(display_name("sip:+15550100@pbx"), "+15550100");
    }
}
