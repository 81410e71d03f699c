//! The media bridge of the SIP gateway, sans-IO: each [`Gateway`] leg terminates one browser's
//! WebRTC audio (ICE-lite, DTLS-SRTP, RTCP: str0m in RTP mode, the engine the SFU runs on) and
//! turns it into plain RTP toward a SIP endpoint, and back.
//!
//! No transcoding: the leg is set up with the one codec both sides agreed on (PCMU, PCMA or
//! Opus; the SIP layer reads it from the SDP) and packets pass through with their payload
//! untouched; only the RTP header changes (payload type mapped, header extensions dropped
//! toward the SIP side, sequence numbers and timestamps kept continuous toward the browser when
//! the SIP side changes its SSRC). RFC 4733 telephone-events (DTMF) pass the same way.
//!
//! Two ways to set a leg up, matching the two directions of a call:
//! - the browser calls ([`Gateway::answer`]): its WebRTC offer went to the SIP side as a plain
//!   offer, the SIP side answered with a codec; the leg answers the browser's offer with that
//!   codec only;
//! - the SIP side calls ([`Gateway::offer`] then [`Gateway::accept_answer`]): the leg makes a
//!   WebRTC offer with the codecs the SIP side offered; the browser's answer picks one.
//!
//! Demultiplexing is the SFU's: WebRTC datagrams on the shared media port go to a leg by the
//! ICE ufrag of a STUN request, then by source address ([`Gateway::handle_receive`]); plain RTP
//! arrives on the leg's own socket, so the I/O layer names the leg
//! ([`Gateway::handle_plain`]). Output: [`Gateway::poll_transmit`] (to the browser or to the
//! SIP side) and [`Gateway::poll_event`] (a leg connected or ended).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, Mid};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

/// A codec the bridge passes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioCodec {
    /// G.711 µ-law (8 kHz).
    Pcmu,
    /// G.711 A-law (8 kHz).
    Pcma,
    /// Opus (48 kHz, 2 channels).
    Opus,
}

impl AudioCodec {
    /// RTP clock rate.
    pub fn clock(self) -> u32 {
        match self {
            AudioCodec::Pcmu | AudioCodec::Pcma => 8000,
            AudioCodec::Opus => 48000,
        }
    }

    fn str0m(self) -> Codec {
        match self {
            AudioCodec::Pcmu => Codec::PCMU,
            AudioCodec::Pcma => Codec::PCMA,
            AudioCodec::Opus => Codec::Opus,
        }
    }

    fn from_str0m(c: Codec) -> Option<AudioCodec> {
        match c {
            Codec::PCMU => Some(AudioCodec::Pcmu),
            Codec::PCMA => Some(AudioCodec::Pcma),
            Codec::Opus => Some(AudioCodec::Opus),
            _ => None,
        }
    }
}

/// One codec of the SIP side with its payload type there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainCodec {
    /// Codec.
    pub codec: AudioCodec,
    /// Its payload type on the SIP side.
    pub pt: u8,
}

/// What the SIP side's SDP says about its media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainMedia {
    /// Where to send RTP (its `c=`/`m=`; the source of the RTP it sends wins once seen).
    pub remote: SocketAddr,
    /// Its codecs in its order of preference (an answer: the first is the one used).
    pub codecs: Vec<PlainCodec>,
    /// Its telephone-event payload types with their clock rates.
    pub telephone_events: Vec<(u8, u32)>,
}

/// The codec a leg settled on, with both sides' payload types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Chosen {
    /// Codec.
    pub codec: AudioCodec,
    /// Payload type toward the browser.
    pub webrtc_pt: u8,
    /// Payload type toward the SIP side.
    pub plain_pt: u8,
    /// telephone-event payload types (browser, SIP side), when both have one at the codec's
    /// clock.
    pub telephone_event: Option<(u8, u8)>,
}

/// Why a leg could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeError {
    /// The SDP was refused (by str0m or for lack of audio).
    Sdp(String),
    /// No codec both sides have.
    NoCommonCodec,
    /// No such leg (or not waiting for an answer).
    UnknownLeg,
    /// Too many legs.
    Full,
}

impl std::fmt::Display for BridgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BridgeError::Sdp(m) => write!(f, "SDP refused: {m}"),
            BridgeError::NoCommonCodec => f.write_str("no codec in common (PCMU, PCMA, Opus)"),
            BridgeError::UnknownLeg => f.write_str("no such media leg"),
            BridgeError::Full => f.write_str("the media bridge is at its leg limit"),
        }
    }
}

impl std::error::Error for BridgeError {}

/// A datagram to send.
#[derive(Debug)]
pub enum BridgeTransmit {
    /// To the browser, from the shared media port.
    WebRtc(Transmit),
    /// To the SIP side, from the leg's own RTP socket.
    Plain {
        /// Leg.
        leg: u64,
        /// Where.
        destination: SocketAddr,
        /// An RTP packet.
        contents: Vec<u8>,
    },
}

/// What happened to a leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeEvent {
    /// The browser's ICE and DTLS are up: media flows.
    Connected(u64),
    /// The leg ended by itself (ICE lost, never connected, DTLS failed); it is gone.
    Ended {
        /// Leg.
        leg: u64,
        /// Why.
        reason: &'static str,
    },
}

/// Counters of one leg.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LegStats {
    /// RTP packets from the browser sent on to the SIP side.
    pub to_plain_packets: u64,
    /// RTP packets from the SIP side sent on to the browser.
    pub to_webrtc_packets: u64,
    /// telephone-event packets passed (either way).
    pub telephone_events: u64,
    /// Datagrams from the SIP side dropped (not RTP, unknown payload type).
    pub dropped: u64,
    /// Whether ICE and DTLS are up.
    pub connected: bool,
}

/// Settings.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Legs at most.
    pub max_legs: usize,
    /// A leg whose browser has not connected in this time ends (30 s).
    pub connect_timeout: Duration,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            max_legs: 1000,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

/// Keeps the browser-bound sequence numbers and timestamps continuous when the SIP side's
/// source changes (a new SSRC: re-INVITE, transfer, music on hold).
#[derive(Debug, Default)]
struct Rebase {
    ssrc: Option<u32>,
    last_in_seq: u16,
    last_out_seq: u64,
    ts_offset: u32,
    last_out_ts: u32,
}

impl Rebase {
    /// Extended sequence number and timestamp toward the browser for an incoming packet.
    fn map(&mut self, ssrc: u32, seq: u16, ts: u32, step: u32) -> (u64, u32) {
        if self.ssrc != Some(ssrc) {
            let first = self.ssrc.is_none();
            self.ssrc = Some(ssrc);
            self.last_in_seq = seq;
            if first {
                self.last_out_seq = u64::from(seq);
                self.ts_offset = 0;
            } else {
                self.last_out_seq += 1;
                self.ts_offset = self.last_out_ts.wrapping_add(step).wrapping_sub(ts);
            }
            self.last_out_ts = ts.wrapping_add(self.ts_offset);
            return (self.last_out_seq, self.last_out_ts);
        }
        let delta = i64::from(seq.wrapping_sub(self.last_in_seq) as i16);
        let out = (self.last_out_seq as i64 + delta).max(0) as u64;
        let out_ts = ts.wrapping_add(self.ts_offset);
        if delta > 0 {
            self.last_in_seq = seq;
            self.last_out_seq = out;
            self.last_out_ts = out_ts;
        }
        (out, out_ts)
    }
}

struct Leg {
    rtc: Rtc,
    ufrag: String,
    local: Vec<(Protocol, SocketAddr)>,
    addrs: Vec<(Protocol, SocketAddr)>,
    timeout: Instant,
    created: Instant,
    mid: Option<Mid>,
    chosen: Option<Chosen>,
    /// Offer mode: the SIP side's codecs, until the browser answers.
    offered: Option<(SdpPendingOffer, PlainMedia)>,
    remote: SocketAddr,
    latched: bool,
    rebase: Rebase,
    stats: LegStats,
    /// Since when ICE has been disconnected (consent lost).
    lost: Option<Instant>,
}

/// A leg whose browser stays unreachable this long ends.
const ICE_GRACE: Duration = Duration::from_secs(15);

/// Every bridged call's media. See the module docs.
pub struct Gateway {
    config: BridgeConfig,
    legs: HashMap<u64, Leg>,
    by_ufrag: HashMap<String, u64>,
    by_addr: HashMap<(Protocol, SocketAddr), u64>,
    transmits: VecDeque<BridgeTransmit>,
    events: VecDeque<BridgeEvent>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("legs", &self.legs.len())
            .finish_non_exhaustive()
    }
}

/// Smallest RTP header.
const RTP_HEADER: usize = 12;

/// The parts of a plain RTP packet the bridge needs.
struct PlainRtp<'a> {
    marker: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: &'a [u8],
}

/// Parses an RTP packet (RFC 3550 §5.1): version 2, CSRCs and header extension skipped,
/// padding removed. RTCP (payload types 64–95 with the marker, RFC 5761) is not RTP.
fn parse_rtp(data: &[u8]) -> Option<PlainRtp<'_>> {
    if data.len() < RTP_HEADER || data[0] >> 6 != 2 {
        return None;
    }
    let pt = data[1] & 0x7f;
    if (64..96).contains(&pt) {
        return None;
    }
    let cc = usize::from(data[0] & 0x0f);
    let mut start = RTP_HEADER + 4 * cc;
    if data[0] & 0x10 != 0 {
        let ext = data.get(start..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
    }
    let mut end = data.len();
    if data[0] & 0x20 != 0 {
        let pad = usize::from(*data.last()?);
        end = end.checked_sub(pad)?;
    }
    let payload = data.get(start..end)?;
    Some(PlainRtp {
        marker: data[1] & 0x80 != 0,
        pt,
        seq: u16::from_be_bytes([data[2], data[3]]),
        ts: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
        payload,
    })
}

/// Writes a plain RTP packet (no CSRC, no extension).
fn write_rtp(marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RTP_HEADER + payload.len());
    out.push(0x80);
    out.push(if marker { 0x80 } else { 0 } | (pt & 0x7f));
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The local ufrag of a STUN request's USERNAME (`local:remote`).
fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    let msg = icebreaker_stun::Message::parse(data).ok()?;
    let user = msg.username().ok()??;
    user.split(':').next()
}

fn tele_params() -> FormatParams {
    FormatParams {
        telephone_event_max: Some(16),
        ..Default::default()
    }
}

fn frequency(hz: u32) -> Frequency {
    match hz {
        48000 => Frequency::FORTY_EIGHT_KHZ,
        _ => Frequency::EIGHT_KHZ,
    }
}

/// A leg's `Rtc`: ICE-lite, RTP mode, only `codecs` (and telephone-events at their clocks).
fn new_rtc(now: Instant, codecs: &[AudioCodec], local: &[(Protocol, SocketAddr)]) -> (Rtc, String) {
    let mut cfg = Rtc::builder()
        .set_ice_lite(true)
        .set_rtp_mode(true)
        .clear_codecs();
    for c in codecs {
        cfg = match c {
            AudioCodec::Pcmu => cfg.enable_pcmu(true, false),
            AudioCodec::Pcma => cfg.enable_pcma(true, false),
            AudioCodec::Opus => cfg.enable_opus(true, false),
        };
    }
    let mut clocks: Vec<u32> = codecs.iter().map(|c| c.clock()).collect();
    clocks.dedup();
    for (i, clock) in clocks.into_iter().enumerate() {
        // 126 (8 kHz) and 110 (48 kHz), as browsers number them; str0m takes the offerer's
        // numbers when it answers.
        let pt: u8 = if clock == 8000 { 126 } else { 110 - i as u8 };
        cfg.codec_config().add_config(
            pt.into(),
            None,
            Codec::Tele,
            frequency(clock),
            None,
            tele_params(),
        );
    }
    let mut rtc = cfg.build(now);
    for &(proto, addr) in local {
        let cand = match proto {
            Protocol::Udp => Candidate::host(addr, "udp"),
            _ => Candidate::builder()
                .tcp()
                .host(addr)
                .tcptype(str0m::net::TcpType::Passive)
                .build(),
        };
        match cand {
            Ok(c) => {
                rtc.add_local_candidate(c);
            }
            Err(e) => tracing::debug!(%addr, "bridge: no candidate: {e}"),
        }
    }
    let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
    (rtc, ufrag)
}

/// After negotiation: the browser's payload types for `codec` and its telephone-event.
fn negotiated(rtc: &Rtc, codec: AudioCodec) -> Option<(u8, Option<u8>)> {
    let params = rtc.codec_config().params();
    let main = params
        .iter()
        .find(|p| p.spec().codec == codec.str0m())?
        .pt();
    let tele = params
        .iter()
        .find(|p| p.spec().codec == Codec::Tele && p.spec().clock_rate.get() == codec.clock())
        .map(|p| *p.pt());
    Some((*main, tele))
}

/// Marks the candidates complete (RFC 8840): an ICE-lite end has no others to trickle.
fn complete_candidates(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.split_inclusive('\n') {
        out.push_str(line);
        if line.starts_with("a=ice-pwd:") {
            out.push_str("a=end-of-candidates\r\n");
        }
    }
    out
}

impl Gateway {
    /// No legs.
    pub fn new(config: BridgeConfig) -> Self {
        Gateway {
            config,
            legs: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Legs open.
    pub fn len(&self) -> usize {
        self.legs.len()
    }

    /// No legs open.
    pub fn is_empty(&self) -> bool {
        self.legs.is_empty()
    }

    fn insert(
        &mut self,
        now: Instant,
        id: u64,
        rtc: Rtc,
        ufrag: String,
        local: &[(Protocol, SocketAddr)],
        remote: SocketAddr,
    ) {
        self.close(id);
        self.by_ufrag.insert(ufrag.clone(), id);
        self.legs.insert(
            id,
            Leg {
                rtc,
                ufrag,
                local: local.to_vec(),
                addrs: Vec::new(),
                timeout: now,
                created: now,
                mid: None,
                chosen: None,
                offered: None,
                remote,
                latched: false,
                rebase: Rebase::default(),
                stats: LegStats::default(),
                lost: None,
            },
        );
    }

    /// The browser called: answers its WebRTC `offer` for leg `id` with the SIP side's codec
    /// (`plain.codecs[0]`, the one its answer chose), offering `local` as host candidates.
    /// Returns the WebRTC answer for the browser and the codec mapping.
    pub fn answer(
        &mut self,
        now: Instant,
        id: u64,
        offer: &str,
        plain: &PlainMedia,
        local: &[(Protocol, SocketAddr)],
    ) -> Result<(String, Chosen), BridgeError> {
        if self.legs.len() >= self.config.max_legs && !self.legs.contains_key(&id) {
            return Err(BridgeError::Full);
        }
        let first = *plain.codecs.first().ok_or(BridgeError::NoCommonCodec)?;
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| BridgeError::Sdp(e.to_string()))?;
        let (mut rtc, ufrag) = new_rtc(now, &[first.codec], local);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| BridgeError::Sdp(e.to_string()))?;
        let (webrtc_pt, webrtc_tele) =
            negotiated(&rtc, first.codec).ok_or(BridgeError::NoCommonCodec)?;
        let plain_tele = plain
            .telephone_events
            .iter()
            .find(|(_, clock)| *clock == first.codec.clock())
            .map(|(pt, _)| *pt);
        let chosen = Chosen {
            codec: first.codec,
            webrtc_pt,
            plain_pt: first.pt,
            telephone_event: webrtc_tele.zip(plain_tele),
        };
        let sdp = complete_candidates(&answer.to_sdp_string());
        self.insert(now, id, rtc, ufrag, local, plain.remote);
        if let Some(leg) = self.legs.get_mut(&id) {
            leg.chosen = Some(chosen);
        }
        self.drain(now, id);
        Ok((sdp, chosen))
    }

    /// A new offer from the browser on an established leg (re-INVITE: hold, ICE restart): the
    /// leg answers it, keeping its codec. The SIP side's address may have moved (`remote`).
    pub fn renegotiate(
        &mut self,
        now: Instant,
        id: u64,
        offer: &str,
        remote: SocketAddr,
    ) -> Result<String, BridgeError> {
        let leg = self.legs.get_mut(&id).ok_or(BridgeError::UnknownLeg)?;
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| BridgeError::Sdp(e.to_string()))?;
        let answer = leg
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| BridgeError::Sdp(e.to_string()))?;
        let ufrag = leg.rtc.direct_api().local_ice_credentials().ufrag;
        if ufrag != leg.ufrag {
            self.by_ufrag.remove(&leg.ufrag);
            self.by_ufrag.insert(ufrag.clone(), id);
            leg.ufrag = ufrag;
        }
        if leg.remote != remote && !leg.latched {
            leg.remote = remote;
        }
        let sdp = complete_candidates(&answer.to_sdp_string());
        self.drain(now, id);
        Ok(sdp)
    }

    /// The SIP side called: makes a WebRTC offer for leg `id` with the codecs of its plain
    /// offer (those the bridge passes through), for the browser. [`Gateway::accept_answer`]
    /// takes the browser's answer.
    pub fn offer(
        &mut self,
        now: Instant,
        id: u64,
        plain: PlainMedia,
        local: &[(Protocol, SocketAddr)],
    ) -> Result<String, BridgeError> {
        if self.legs.len() >= self.config.max_legs && !self.legs.contains_key(&id) {
            return Err(BridgeError::Full);
        }
        if plain.codecs.is_empty() {
            return Err(BridgeError::NoCommonCodec);
        }
        let codecs: Vec<AudioCodec> = plain.codecs.iter().map(|c| c.codec).collect();
        let (mut rtc, ufrag) = new_rtc(now, &codecs, local);
        let mut api = rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| BridgeError::Sdp("nothing to offer".into()))?;
        let sdp = complete_candidates(&offer.to_sdp_string());
        let remote = plain.remote;
        self.insert(now, id, rtc, ufrag, local, remote);
        if let Some(leg) = self.legs.get_mut(&id) {
            leg.offered = Some((pending, plain));
            leg.mid = Some(mid);
        }
        self.drain(now, id);
        Ok(sdp)
    }

    /// The browser's answer to [`Gateway::offer`]: its first codec is the one used.
    pub fn accept_answer(
        &mut self,
        now: Instant,
        id: u64,
        answer: &str,
    ) -> Result<Chosen, BridgeError> {
        let leg = self.legs.get_mut(&id).ok_or(BridgeError::UnknownLeg)?;
        let (pending, plain) = leg.offered.take().ok_or(BridgeError::UnknownLeg)?;
        let answer =
            SdpAnswer::from_sdp_string(answer).map_err(|e| BridgeError::Sdp(e.to_string()))?;
        leg.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| BridgeError::Sdp(e.to_string()))?;
        // The codec the browser put first among those offered.
        let mid = leg.mid.ok_or(BridgeError::NoCommonCodec)?;
        let remote_pts: Vec<u8> = leg
            .rtc
            .media(mid)
            .map(|m| m.remote_pts().iter().map(|p| **p).collect())
            .unwrap_or_default();
        let params = leg.rtc.codec_config().params();
        let first = remote_pts
            .iter()
            .find_map(|pt| {
                params
                    .iter()
                    .find(|p| *p.pt() == *pt)
                    .and_then(|p| AudioCodec::from_str0m(p.spec().codec))
            })
            .ok_or(BridgeError::NoCommonCodec)?;
        let plain_codec = plain
            .codecs
            .iter()
            .find(|c| c.codec == first)
            .ok_or(BridgeError::NoCommonCodec)?;
        let (webrtc_pt, webrtc_tele) =
            negotiated(&leg.rtc, first).ok_or(BridgeError::NoCommonCodec)?;
        let webrtc_tele = webrtc_tele.filter(|pt| remote_pts.contains(pt));
        let plain_tele = plain
            .telephone_events
            .iter()
            .find(|(_, clock)| *clock == first.clock())
            .map(|(pt, _)| *pt);
        let chosen = Chosen {
            codec: first,
            webrtc_pt,
            plain_pt: plain_codec.pt,
            telephone_event: webrtc_tele.zip(plain_tele),
        };
        leg.chosen = Some(chosen);
        self.drain(now, id);
        Ok(chosen)
    }

    /// Where the SIP side's RTP goes now (its SDP changed: re-INVITE).
    pub fn set_remote(&mut self, id: u64, remote: SocketAddr) {
        if let Some(leg) = self.legs.get_mut(&id) {
            leg.remote = remote;
            leg.latched = false;
        }
    }

    /// Ends leg `id` (the call ended). No event.
    pub fn close(&mut self, id: u64) {
        if let Some(mut leg) = self.legs.remove(&id) {
            leg.rtc.disconnect();
            self.by_ufrag.remove(&leg.ufrag);
            for a in leg.addrs {
                if self.by_addr.get(&a) == Some(&id) {
                    self.by_addr.remove(&a);
                }
            }
        }
    }

    /// Counters of leg `id`.
    pub fn stats(&self, id: u64) -> Option<LegStats> {
        self.legs.get(&id).map(|l| l.stats)
    }

    /// A datagram on the shared media port (UDP) or an ICE-TCP connection. Returns whether a
    /// leg took it.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> bool {
        let known = self.by_addr.get(&(proto, source)).copied();
        let Some(id) =
            known.or_else(|| stun_local_ufrag(data).and_then(|u| self.by_ufrag.get(u).copied()))
        else {
            return false;
        };
        let Some(leg) = self.legs.get_mut(&id) else {
            return false;
        };
        let destination = leg
            .local
            .iter()
            .find(|(p, _)| *p == proto)
            .map_or(destination, |(_, a)| *a);
        let Ok(contents) = data.try_into() else {
            return false;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        );
        if !leg.rtc.accepts(&input) {
            return false;
        }
        if known.is_none() {
            if leg.addrs.len() >= 8 {
                let old = leg.addrs.remove(0);
                if self.by_addr.get(&old) == Some(&id) {
                    self.by_addr.remove(&old);
                }
            }
            leg.addrs.push((proto, source));
            self.by_addr.insert((proto, source), id);
        }
        if let Err(e) = leg.rtc.handle_input(input) {
            tracing::debug!(leg = id, "bridge: input refused: {e}");
        }
        self.drain(now, id);
        true
    }

    /// A datagram from the SIP side on leg `id`'s RTP socket.
    pub fn handle_plain(&mut self, now: Instant, id: u64, source: SocketAddr, data: &[u8]) {
        let Some(leg) = self.legs.get_mut(&id) else {
            return;
        };
        let (Some(chosen), Some(mid)) = (leg.chosen, leg.mid) else {
            return;
        };
        let Some(rtp) = parse_rtp(data) else {
            leg.stats.dropped += 1;
            return;
        };
        let tele = chosen.telephone_event.filter(|(_, plain)| *plain == rtp.pt);
        let pt = if rtp.pt == chosen.plain_pt {
            chosen.webrtc_pt
        } else if let Some((webrtc, _)) = tele {
            webrtc
        } else {
            leg.stats.dropped += 1;
            return;
        };
        // Symmetric RTP (RFC 4961): answer where it comes from (NAT'd phones).
        if !leg.latched || leg.remote != source {
            leg.remote = source;
            leg.latched = true;
        }
        if !leg.stats.connected {
            return;
        }
        let step = chosen.codec.clock() / 50;
        let (seq, ts) = leg.rebase.map(rtp.ssrc, rtp.seq, rtp.ts, step);
        let mut api = leg.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            leg.stats.dropped += 1;
            return;
        };
        tx.write_rtp(
            RtpWrite::new(pt.into(), SeqNo::from(seq), ts, now, rtp.payload).marker(rtp.marker),
        );
        leg.stats.to_webrtc_packets += 1;
        if tele.is_some() {
            leg.stats.telephone_events += 1;
        }
        self.drain(now, id);
    }

    /// When [`Gateway::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.legs.values().map(|l| l.timeout).min()
    }

    /// Drives str0m's timers; ends legs that never connected.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .legs
            .iter()
            .filter(|(_, l)| l.timeout <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(leg) = self.legs.get_mut(&id) else {
                continue;
            };
            if !leg.stats.connected
                && now.saturating_duration_since(leg.created) > self.config.connect_timeout
            {
                self.end(id, "never connected");
                continue;
            }
            if leg
                .lost
                .is_some_and(|t| now.saturating_duration_since(t) > ICE_GRACE)
            {
                self.end(id, "ICE lost");
                continue;
            }
            if let Err(e) = leg.rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(leg = id, "bridge: timeout: {e}");
            }
            self.drain(now, id);
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<BridgeTransmit> {
        self.transmits.pop_front()
    }

    /// The next leg event.
    pub fn poll_event(&mut self) -> Option<BridgeEvent> {
        self.events.pop_front()
    }

    fn end(&mut self, id: u64, reason: &'static str) {
        self.close(id);
        self.events
            .push_back(BridgeEvent::Ended { leg: id, reason });
    }

    /// Polls leg `id`'s output until its next timeout.
    fn drain(&mut self, now: Instant, id: u64) {
        let connect_timeout = self.config.connect_timeout;
        loop {
            let Some(leg) = self.legs.get_mut(&id) else {
                return;
            };
            let out = match leg.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    tracing::debug!(leg = id, "bridge: connection failed: {e}");
                    self.end(id, "connection failed");
                    return;
                }
            };
            match out {
                Output::Timeout(t) => {
                    // Woken for our own deadlines too.
                    let mut t = t;
                    if !leg.stats.connected {
                        t = t.min(leg.created + connect_timeout + Duration::from_millis(1));
                    }
                    if let Some(lost) = leg.lost {
                        t = t.min(lost + ICE_GRACE + Duration::from_millis(1));
                    }
                    leg.timeout = t;
                    return;
                }
                Output::Transmit(t) => self.transmits.push_back(BridgeTransmit::WebRtc(t)),
                Output::Event(e) => match e {
                    Event::Connected => {
                        leg.stats.connected = true;
                        self.events.push_back(BridgeEvent::Connected(id));
                    }
                    Event::IceConnectionStateChange(s) => {
                        leg.lost = match s {
                            IceConnectionState::Disconnected => leg.lost.or(Some(now)),
                            _ => None,
                        };
                    }
                    Event::MediaAdded(m) if m.kind == MediaKind::Audio && leg.mid.is_none() => {
                        leg.mid = Some(m.mid);
                    }
                    Event::RtpPacket(pkt) => {
                        let Some(chosen) = leg.chosen else { continue };
                        let pt = *pkt.header.payload_type;
                        let tele = chosen.telephone_event.filter(|(w, _)| *w == pt);
                        let plain_pt = if pt == chosen.webrtc_pt {
                            chosen.plain_pt
                        } else if let Some((_, plain)) = tele {
                            plain
                        } else {
                            continue;
                        };
                        let contents = write_rtp(
                            pkt.header.marker,
                            plain_pt,
                            pkt.header.sequence_number,
                            pkt.header.timestamp,
                            *pkt.header.ssrc,
                            &pkt.payload,
                        );
                        leg.stats.to_plain_packets += 1;
                        if tele.is_some() {
                            leg.stats.telephone_events += 1;
                        }
                        self.transmits.push_back(BridgeTransmit::Plain {
                            leg: id,
                            destination: leg.remote,
                            contents,
                        });
                    }
                    _ => {}
                },
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use str0m::media::MediaTime;

    const GW: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 3479);
    const BROWSER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);
    const PHONE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 6000);

    /// A browser: a full (non-lite) str0m peer in frame mode with Opus, PCMU, PCMA and
    /// telephone-events, as Chromium offers them.
    fn browser(now: Instant) -> Rtc {
        let mut cfg = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_pcmu(true, false)
            .enable_pcma(true, false);
        cfg.codec_config().add_config(
            110.into(),
            None,
            Codec::Tele,
            Frequency::FORTY_EIGHT_KHZ,
            None,
            tele_params(),
        );
        cfg.codec_config().add_config(
            126.into(),
            None,
            Codec::Tele,
            Frequency::EIGHT_KHZ,
            None,
            tele_params(),
        );
        let mut rtc = cfg.build(now);
        rtc.add_local_candidate(Candidate::host(BROWSER, "udp").unwrap());
        rtc
    }

    struct Run {
        now: Instant,
        gw: Gateway,
        browser: Rtc,
        /// What the phone got: (payload type, payload).
        phone: Vec<(u8, Vec<u8>)>,
        /// What the browser got: (payload type, payload).
        heard: Vec<(u8, Vec<u8>)>,
        connected: bool,
    }

    impl Run {
        /// Moves datagrams both ways and advances time by `ms`, in 5-ms steps.
        fn pump(&mut self, ms: u64) {
            for _ in 0..ms / 5 {
                self.now += Duration::from_millis(5);
                loop {
                    match self.browser.poll_output().unwrap() {
                        Output::Timeout(_) => break,
                        Output::Transmit(t) => {
                            self.gw.handle_receive(
                                self.now,
                                Protocol::Udp,
                                BROWSER,
                                GW,
                                &t.contents,
                            );
                        }
                        Output::Event(Event::Connected) => self.connected = true,
                        Output::Event(Event::MediaData(d)) => {
                            self.heard.push((*d.pt, d.data.to_vec()))
                        }
                        Output::Event(_) => {}
                    }
                }
                self.browser.handle_input(Input::Timeout(self.now)).unwrap();
                self.gw.handle_timeout(self.now);
                while let Some(t) = self.gw.poll_transmit() {
                    match t {
                        BridgeTransmit::WebRtc(t) => {
                            let input = Input::Receive(
                                self.now,
                                Receive {
                                    proto: Protocol::Udp,
                                    source: GW,
                                    destination: BROWSER,
                                    contents: (&t.contents[..]).try_into().unwrap(),
                                },
                            );
                            self.browser.handle_input(input).unwrap();
                        }
                        BridgeTransmit::Plain {
                            destination,
                            contents,
                            ..
                        } => {
                            assert_eq!(destination, PHONE);
                            let p = parse_rtp(&contents).expect("plain RTP");
                            self.phone.push((p.pt, p.payload.to_vec()));
                        }
                    }
                }
            }
        }
    }

    fn phone_rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        write_rtp(false, pt, seq, ts, ssrc, payload)
    }

    #[test]
    fn browser_calls_a_phone_audio_and_dtmf_both_ways() {
        let now = Instant::now();
        let mut b = browser(now);
        let mut api = b.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let mut gw = Gateway::new(BridgeConfig::default());
        // The phone answered PCMU (0) with telephone-event 101.
        let plain = PlainMedia {
            remote: PHONE,
            codecs: vec![PlainCodec {
                codec: AudioCodec::Pcmu,
                pt: 0,
            }],
            telephone_events: vec![(101, 8000)],
        };
        let (answer, chosen) = gw
            .answer(
                now,
                7,
                &offer.to_sdp_string(),
                &plain,
                &[(Protocol::Udp, GW)],
            )
            .unwrap();
        assert_eq!(
            chosen,
            Chosen {
                codec: AudioCodec::Pcmu,
                webrtc_pt: 0,
                plain_pt: 0,
                telephone_event: Some((126, 101))
            }
        );
        assert!(answer.contains("a=ice-lite"), "{answer}");
        assert!(answer.contains("a=fingerprint:"), "{answer}");
        assert!(answer.contains("a=end-of-candidates"), "{answer}");
        assert!(
            !answer.contains("opus"),
            "only the phone's codec is answered: {answer}"
        );
        b.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        let mut run = Run {
            now,
            gw,
            browser: b,
            phone: vec![],
            heard: vec![],
            connected: false,
        };
        run.pump(2000);
        assert!(run.connected, "browser connected");
        assert!(run.gw.stats(7).unwrap().connected);
        assert_eq!(run.gw.poll_event(), Some(BridgeEvent::Connected(7)));

        // Browser → phone: 20 ms of PCMU, then a DTMF event.
        for i in 0..10u32 {
            let pt = run.browser.media(mid).unwrap().remote_pts()[0];
            let w = run.browser.writer(mid).unwrap();
            assert_eq!(*pt, 0);
            w.write(
                pt,
                run.now,
                MediaTime::from_90khz(0) + MediaTime::new(u64::from(i) * 160, Frequency::EIGHT_KHZ),
                vec![0x55u8; 160],
            )
            .unwrap();
            run.pump(20);
        }
        assert!(
            run.phone.len() >= 10,
            "phone got {} packets",
            run.phone.len()
        );
        assert!(run
            .phone
            .iter()
            .all(|(pt, p)| *pt == 0 && p == &vec![0x55u8; 160]));

        // Phone → browser: PCMU and a telephone-event (digit 5).
        for i in 0..10u16 {
            let pkt = phone_rtp(0, 100 + i, 1000 + u32::from(i) * 160, 0xabcd, &[0x11; 160]);
            let t = run.now;
            run.gw.handle_plain(t, 7, PHONE, &pkt);
            run.pump(20);
        }
        let t = run.now;
        run.gw.handle_plain(
            t,
            7,
            PHONE,
            &phone_rtp(101, 110, 2600, 0xabcd, &[5, 0x0a, 0, 160]),
        );
        run.gw.handle_plain(t, 7, PHONE, b"not rtp");
        run.pump(100);
        let audio = run.heard.iter().filter(|(pt, _)| *pt == 0).count();
        assert!(
            audio >= 8,
            "browser heard {audio} PCMU frames: {:?}",
            run.heard.len()
        );
        assert!(
            run.heard
                .iter()
                .any(|(pt, p)| *pt == 126 && p.first() == Some(&5)),
            "DTMF reached the browser as PT 126"
        );
        let s = run.gw.stats(7).unwrap();
        assert_eq!(s.to_webrtc_packets, 11);
        assert_eq!(s.dropped, 1);
        assert!(s.telephone_events >= 1);

        run.gw.close(7);
        assert!(run.gw.is_empty());
        let t = run.now;
        run.gw
            .handle_plain(t, 7, PHONE, &phone_rtp(0, 200, 0, 1, &[0; 160]));
    }

    #[test]
    fn phone_calls_a_browser() {
        let now = Instant::now();
        let mut gw = Gateway::new(BridgeConfig::default());
        let plain = PlainMedia {
            remote: PHONE,
            codecs: vec![
                PlainCodec {
                    codec: AudioCodec::Pcma,
                    pt: 8,
                },
                PlainCodec {
                    codec: AudioCodec::Pcmu,
                    pt: 0,
                },
            ],
            telephone_events: vec![(101, 8000)],
        };
        let offer = gw.offer(now, 1, plain, &[(Protocol::Udp, GW)]).unwrap();
        assert!(
            offer.contains("PCMA/8000") && offer.contains("PCMU/8000") && !offer.contains("opus"),
            "{offer}"
        );
        let mut b = browser(now);
        let answer = b
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(&offer).unwrap())
            .unwrap();
        let chosen = gw.accept_answer(now, 1, &answer.to_sdp_string()).unwrap();
        // The browser's first choice among those offered.
        assert_eq!(chosen.codec, AudioCodec::Pcmu);
        assert_eq!((chosen.webrtc_pt, chosen.plain_pt), (0, 0));
        assert_eq!(chosen.telephone_event.map(|t| t.1), Some(101));
        assert_eq!(
            gw.accept_answer(now, 1, &answer.to_sdp_string()),
            Err(BridgeError::UnknownLeg)
        );
        let mut run = Run {
            now,
            gw,
            browser: b,
            phone: vec![],
            heard: vec![],
            connected: false,
        };
        run.pump(2000);
        assert!(run.connected);
        for i in 0..5u16 {
            let t = run.now;
            run.gw.handle_plain(
                t,
                1,
                PHONE,
                &phone_rtp(0, i, u32::from(i) * 160, 9, &[0x22; 160]),
            );
            run.pump(20);
        }
        assert!(run.heard.iter().filter(|(pt, _)| *pt == 0).count() >= 4);
    }

    #[test]
    fn refusals_and_never_connected() {
        let now = Instant::now();
        let mut gw = Gateway::new(BridgeConfig {
            max_legs: 1,
            connect_timeout: Duration::from_secs(1),
        });
        let plain = PlainMedia {
            remote: PHONE,
            codecs: vec![],
            telephone_events: vec![],
        };
        assert_eq!(
            gw.offer(now, 1, plain.clone(), &[]),
            Err(BridgeError::NoCommonCodec)
        );
        assert!(matches!(
            gw.answer(
                now,
                1,
                "v=0",
                &PlainMedia {
                    codecs: vec![PlainCodec {
                        codec: AudioCodec::Opus,
                        pt: 96
                    }],
                    ..plain.clone()
                },
                &[]
            ),
            Err(BridgeError::Sdp(_))
        ));
        let one = PlainMedia {
            codecs: vec![PlainCodec {
                codec: AudioCodec::Pcmu,
                pt: 0,
            }],
            ..plain
        };
        gw.offer(now, 1, one.clone(), &[(Protocol::Udp, GW)])
            .unwrap();
        assert_eq!(gw.offer(now, 2, one, &[]), Err(BridgeError::Full));
        // Nobody connects: the leg ends by itself.
        let mut t = now;
        for _ in 0..30 {
            t += Duration::from_millis(100);
            gw.handle_timeout(t);
        }
        assert_eq!(
            gw.poll_event(),
            Some(BridgeEvent::Ended {
                leg: 1,
                reason: "never connected"
            })
        );
        assert!(gw.is_empty());
        // Garbage on the media port is not ours.
        assert!(!gw.handle_receive(t, Protocol::Udp, BROWSER, GW, b"\x00\x01garbage"));
    }

    #[test]
    fn rtp_parsing_and_rebase() {
        assert!(parse_rtp(b"short").is_none());
        let mut p = phone_rtp(0, 1, 2, 3, b"abc");
        assert_eq!(parse_rtp(&p).unwrap().payload, b"abc");
        p[1] = 200; // RTCP SR with the marker bit
        assert!(parse_rtp(&p).is_none());
        // Extension + padding.
        let mut q = vec![
            0xb0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0xbe, 0xde, 0, 1, 1, 2, 3, 4,
        ];
        q.extend_from_slice(b"xy\0\x02");
        assert_eq!(parse_rtp(&q).unwrap().payload, b"xy");
        q[19 + 4] = 200; // padding longer than the packet
        assert!(parse_rtp(&q).is_none());
        let mut r = Rebase::default();
        assert_eq!(r.map(1, 65535, 1000, 160), (65535, 1000));
        assert_eq!(r.map(1, 0, 1160, 160), (65536, 1160));
        assert_eq!(
            r.map(1, 65535, 1000, 160),
            (65535, 1000),
            "a late packet keeps its place"
        );
        // A new source continues where the old one was.
        assert_eq!(r.map(2, 500, 90, 160), (65537, 1320));
        assert_eq!(r.map(2, 501, 250, 160), (65538, 1480));
    }
}
