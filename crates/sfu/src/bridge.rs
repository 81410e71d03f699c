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
//!
//! # Groups
//!
//! A group is one SIP-side call shared by several browsers: the phone a room dialed
//! (`call.dial(uri)`), which every browser of the room connects to as to a participant.
//! [`Gateway::open_group`] sets up the SIP side once the phone has answered (PCMU or PCMA: G.711
//! is the one codec the bridge can mix without a codec library); [`Gateway::group_answer`]
//! answers each browser's WebRTC offer with a leg of the group (audio with the group's codec;
//! video is rejected, a data channel accepted); [`Gateway::close`] removes one leg,
//! [`Gateway::close_group`] ends the group with all its legs.
//!
//! - **Phone → browsers**: each RTP packet of the phone goes to every connected leg, payload
//!   untouched (payload type mapped per leg, each leg's sequence numbers and timestamps kept
//!   continuous on their own), telephone-events too.
//! - **Browsers → phone**: each leg's audio is decoded to linear PCM into its own buffer (at most
//!   200 ms, the oldest dropped; read once it holds 40 ms, to absorb jitter); every 20 ms
//!   ([`Gateway::handle_timeout`]) the group takes 20 ms from each leg that has them, adds them
//!   (saturating), encodes the sum and sends one RTP packet from its own SSRC — silence when no
//!   one talks, so that the phone sees no RTP timeout. With one talker the phone gets that
//!   talker's bytes unchanged. A browser's telephone-event goes to the phone on the group's
//!   SSRC and sequence numbers, with the group's timestamp at the event's start (one event at a
//!   time: another browser's event meanwhile is dropped).
//!
//! Group ids and leg ids are one id space, chosen by the caller: a group's id names its RTP
//! socket in [`BridgeTransmit::Plain`] and [`Gateway::handle_plain`] as a leg's id does, so it
//! must not be a leg's id too (a leg cannot be created with the id of an open group; opening a
//! group replaces a leg of that id).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, Mid};
use str0m::net::{Protocol, Transmit};
use str0m::rtp::{RtpPacket, RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use crate::demux::{receive_input, Demux, Routes};

use crate::g711;

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
    /// No such leg (or not waiting for an answer), or no such group.
    UnknownLeg,
    /// Too many legs.
    Full,
    /// The id is that of an open group (group and leg ids are one id space).
    IdInUse,
}

impl std::fmt::Display for BridgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BridgeError::Sdp(m) => write!(f, "SDP refused: {m}"),
            BridgeError::NoCommonCodec => f.write_str("no codec in common (PCMU, PCMA, Opus)"),
            BridgeError::UnknownLeg => f.write_str("no such media leg"),
            BridgeError::Full => f.write_str("the media bridge is at its leg limit"),
            BridgeError::IdInUse => f.write_str("the id is an open group's"),
        }
    }
}

impl std::error::Error for BridgeError {}

/// A datagram to send.
#[derive(Debug)]
pub enum BridgeTransmit {
    /// To the browser, from the shared media port.
    WebRtc(Transmit),
    /// To the SIP side, from the leg's own RTP socket (a group's: the group's socket).
    Plain {
        /// Leg, or group.
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
    /// The leg ended by itself (ICE lost, never connected, DTLS failed); it is gone. (A leg of
    /// a group: it left the group, which goes on.)
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
    /// RTP packets from the browser sent on to the SIP side (a leg of a group: taken into the
    /// group's mix, or telephone-events sent on).
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

/// Counters of a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GroupStats {
    /// Its legs (browsers).
    pub legs: usize,
    /// Of which connected.
    pub connected: usize,
    /// RTP packets sent to the phone (mixed frames and telephone-events).
    pub to_plain_packets: u64,
    /// RTP packets from the phone passed on to the browsers (counted once, whatever the number
    /// of legs).
    pub from_plain_packets: u64,
    /// 20-ms frames mixed and sent to the phone (silence included).
    pub mixed_frames: u64,
    /// telephone-event packets passed (either way).
    pub telephone_events: u64,
    /// Datagrams from the phone dropped (not RTP, unknown payload type), and browsers'
    /// telephone-events dropped (another event going on).
    pub dropped: u64,
}

/// Settings.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Legs and groups at most.
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

/// Samples of one mixed frame (20 ms at 8 kHz).
const FRAME: usize = 160;
/// The period of the mix.
const FRAME_TIME: Duration = Duration::from_millis(20);
/// A leg's buffer toward the mix holds 200 ms at most ...
const MIX_CAP: usize = 1600;
/// ... and is read once it holds 40 ms.
const MIX_START: usize = 320;
/// Frames the mix catches up with at most after a stall; beyond, it skips (in RTP time too).
const MIX_CATCH_UP: u32 = 5;
/// A browser's telephone-event blocks another one's for this long after its last packet unless
/// it ended.
const DTMF_HOLD: Duration = Duration::from_secs(1);

/// A leg's audio on its way to its group's mix.
#[derive(Debug, Default)]
struct MixIn {
    pcm: VecDeque<i16>,
    /// Being read (it held [`MIX_START`] samples; until it runs short).
    playing: bool,
    /// SSRC and extended sequence number of the last packet taken (older ones are dropped).
    last: Option<(u32, u64)>,
}

impl MixIn {
    fn push(&mut self, codec: AudioCodec, payload: &[u8]) {
        let payload = &payload[payload.len().saturating_sub(MIX_CAP)..];
        let excess = (self.pcm.len() + payload.len()).saturating_sub(MIX_CAP);
        if excess > 0 {
            self.pcm.drain(..excess.min(self.pcm.len()));
        }
        match codec {
            AudioCodec::Pcma => self
                .pcm
                .extend(payload.iter().map(|&b| g711::alaw_decode(b))),
            _ => self
                .pcm
                .extend(payload.iter().map(|&b| g711::ulaw_decode(b))),
        }
    }

    /// Adds the next frame to `acc`, if the leg has one. Returns whether it had.
    fn take(&mut self, acc: &mut [i32; FRAME]) -> bool {
        if !self.playing {
            if self.pcm.len() < MIX_START {
                return false;
            }
            self.playing = true;
        }
        if self.pcm.len() < FRAME {
            // Ran short: buffer again.
            self.playing = false;
            return false;
        }
        for (a, s) in acc.iter_mut().zip(self.pcm.drain(..FRAME)) {
            *a += i32::from(s);
        }
        true
    }
}

/// A browser's telephone-event on its way to the phone.
#[derive(Debug, Clone, Copy)]
struct DtmfOut {
    leg: u64,
    /// Its RTP timestamp from the browser (the event's identity).
    src_ts: u32,
    /// Its RTP timestamp toward the phone.
    out_ts: u32,
    ended: bool,
    last: Instant,
}

/// One SIP-side call shared by several legs. See the module docs.
struct Group {
    codec: AudioCodec,
    plain_pt: u8,
    /// The phone's telephone-event payload type at 8 kHz.
    plain_tele: Option<u8>,
    latch: Latch,
    legs: Vec<u64>,
    ssrc: u32,
    /// Sequence number and timestamp of the next packet to the phone.
    seq: u16,
    ts: u32,
    /// The next packet is the first.
    first: bool,
    next_tick: Instant,
    dtmf: Option<DtmfOut>,
    stats: GroupStats,
}

impl Group {
    fn send(
        &mut self,
        id: u64,
        transmits: &mut VecDeque<BridgeTransmit>,
        pt: u8,
        marker: bool,
        ts: u32,
        payload: &[u8],
    ) {
        let contents = write_rtp(marker, pt, self.seq, ts, self.ssrc, payload);
        self.seq = self.seq.wrapping_add(1);
        self.first = false;
        self.stats.to_plain_packets += 1;
        transmits.push_back(BridgeTransmit::Plain {
            leg: id,
            destination: self.latch.remote,
            contents,
        });
    }

    /// Mixes one frame of the legs' audio and sends it.
    fn mix(&mut self, id: u64, legs: &mut HashMap<u64, Leg>, out: &mut VecDeque<BridgeTransmit>) {
        let mut acc = [0i32; FRAME];
        for l in &self.legs {
            if let Some(leg) = legs.get_mut(l) {
                leg.mix.take(&mut acc);
            }
        }
        let mut payload = [0u8; FRAME];
        let encode = match self.codec {
            AudioCodec::Pcma => g711::alaw_encode,
            _ => g711::ulaw_encode,
        };
        for (p, a) in payload.iter_mut().zip(acc) {
            *p = encode(a.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16);
        }
        let (pt, marker, ts) = (self.plain_pt, self.first, self.ts);
        self.send(id, out, pt, marker, ts, &payload);
        self.ts = self.ts.wrapping_add(FRAME as u32);
        self.stats.mixed_frames += 1;
    }
}

/// A random-enough 64-bit value for a group's SSRC and initial sequence number and timestamp
/// (std's per-process random hash keys).
fn random_u64(salt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(salt);
    h.finish()
}

/// Rejects the video m-sections of a browser's offer (port 0, out of the BUNDLE group), so that
/// the answer rejects them as stopped, `a=inactive`. (A group leg has no video codec: str0m
/// 0.25 alone answers such a section with port 0 too, as no codec matched, but keeps the
/// offered direction and the section merely disabled, not stopped as the browser's
/// transceiver is once its section is rejected.) Returns the offer and its audio mids.
fn reject_video(offer: &str) -> (String, Vec<&str>) {
    let mut video = Vec::new();
    let mut audio = Vec::new();
    let mut kind = "";
    for line in offer.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            kind = m.split(' ').next().unwrap_or("");
        } else if let Some(mid) = line.strip_prefix("a=mid:") {
            match kind {
                "video" => video.push(mid.trim()),
                "audio" => audio.push(mid.trim()),
                _ => {}
            }
        }
    }
    let mut out = String::with_capacity(offer.len());
    for line in offer.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let eol = &line[body.len()..];
        if let Some(rest) = body.strip_prefix("m=video ") {
            out.push_str("m=video 0");
            if let Some((_, after_port)) = rest.split_once(' ') {
                out.push(' ');
                out.push_str(after_port);
            }
            out.push_str(eol);
        } else if let Some(mids) = body.strip_prefix("a=group:BUNDLE") {
            out.push_str("a=group:BUNDLE");
            for mid in mids.split_whitespace().filter(|m| !video.contains(m)) {
                out.push(' ');
                out.push_str(mid);
            }
            out.push_str(eol);
        } else {
            out.push_str(line);
        }
    }
    (out, audio)
}

struct Leg {
    rtc: Rtc,
    /// Its ufrag and proven addresses on the shared port.
    routes: Routes,
    local: Vec<(Protocol, SocketAddr)>,
    timeout: Instant,
    created: Instant,
    mid: Option<Mid>,
    chosen: Option<Chosen>,
    /// Offer mode: the SIP side's codecs, until the browser answers.
    offered: Option<(SdpPendingOffer, PlainMedia)>,
    latch: Latch,
    rebase: Rebase,
    stats: LegStats,
    /// Since when ICE has been disconnected (consent lost).
    lost: Option<Instant>,
    /// The group it belongs to.
    group: Option<u64>,
    /// Its audio toward the group's mix.
    mix: MixIn,
}

/// A leg whose browser stays unreachable this long ends.
const ICE_GRACE: Duration = Duration::from_secs(15);

impl Leg {
    /// Sends one RTP packet of the SIP side to the browser as payload type `pt`, its sequence
    /// number and timestamp continued across the SIP side's sources (`step`: one frame).
    fn send_plain(
        &mut self,
        now: Instant,
        mid: Mid,
        pt: u8,
        rtp: &PlainRtp<'_>,
        step: u32,
        tele: bool,
    ) {
        let (seq, ts) = self.rebase.map(rtp.ssrc, rtp.seq, rtp.ts, step);
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            self.stats.dropped += 1;
            return;
        };
        tx.write_rtp(
            RtpWrite::new(pt.into(), SeqNo::from(seq), ts, now, rtp.payload).marker(rtp.marker),
        );
        self.stats.to_webrtc_packets += 1;
        if tele {
            self.stats.telephone_events += 1;
        }
    }
}

/// Every bridged call's media. See the module docs.
pub struct Gateway {
    config: BridgeConfig,
    legs: HashMap<u64, Leg>,
    groups: HashMap<u64, Group>,
    demux: Demux<u64>,
    transmits: VecDeque<BridgeTransmit>,
    events: VecDeque<BridgeEvent>,
    /// Leg ids, reused.
    scratch: Vec<u64>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("legs", &self.legs.len())
            .field("groups", &self.groups.len())
            .finish_non_exhaustive()
    }
}

/// Consecutive packets from one source that lock the SIP side's RTP onto it.
const LATCH_PACKETS: u8 = 4;

/// Where the SIP side's RTP comes from and goes to (strict symmetric RTP, RFC 4961): a source
/// that is the address its SDP gave locks at once; otherwise (a phone behind NAT sends from
/// another address) the source that sends `LATCH_PACKETS` valid packets in a row is learned and
/// locked. Once locked, RTP from anywhere else is dropped — nobody who guesses the port can
/// inject audio into the call or turn its media toward themselves — until the SDP changes.
#[derive(Debug, Clone, Copy)]
struct Latch {
    /// From the SDP.
    sdp: SocketAddr,
    /// Where RTP goes now.
    remote: SocketAddr,
    candidate: Option<(SocketAddr, u8)>,
    locked: bool,
}

impl Latch {
    fn new(sdp: SocketAddr) -> Self {
        Latch {
            sdp,
            remote: sdp,
            candidate: None,
            locked: false,
        }
    }

    /// Whether RTP from `source` is taken.
    fn accept(&mut self, source: SocketAddr) -> bool {
        if self.locked {
            return source == self.remote;
        }
        if source == self.sdp {
            self.remote = source;
            self.locked = true;
            return true;
        }
        let n = match self.candidate {
            Some((s, n)) if s == source => n.saturating_add(1),
            _ => 1,
        };
        self.candidate = Some((source, n));
        self.remote = source;
        self.locked = n >= LATCH_PACKETS;
        true
    }

    /// The SDP changed (re-INVITE): learn again.
    fn reset(&mut self, sdp: SocketAddr) {
        *self = Latch::new(sdp);
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
            groups: HashMap::new(),
            demux: Demux::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            scratch: Vec::new(),
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

    /// Whether leg `id` may be created (or replaced).
    fn check_leg_id(&self, id: u64) -> Result<(), BridgeError> {
        if self.groups.contains_key(&id) {
            return Err(BridgeError::IdInUse);
        }
        if self.legs.len() + self.groups.len() >= self.config.max_legs
            && !self.legs.contains_key(&id)
        {
            return Err(BridgeError::Full);
        }
        Ok(())
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
        let mut routes = Routes::default();
        self.demux.set_ufrag(id, &mut routes, ufrag);
        self.legs.insert(
            id,
            Leg {
                rtc,
                routes,
                local: local.to_vec(),
                timeout: now,
                created: now,
                mid: None,
                chosen: None,
                offered: None,
                latch: Latch::new(remote),
                rebase: Rebase::default(),
                stats: LegStats::default(),
                lost: None,
                group: None,
                mix: MixIn::default(),
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
        self.check_leg_id(id)?;
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
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| BridgeError::Sdp(e.to_string()))?;
        let sdp = self.reanswer(now, id, offer)?;
        if let Some(leg) = self.legs.get_mut(&id) {
            if remote != leg.latch.sdp {
                leg.latch.reset(remote);
            }
        }
        Ok(sdp)
    }

    /// An existing leg answers a new offer on its connection (its ICE credentials may change).
    fn reanswer(&mut self, now: Instant, id: u64, offer: SdpOffer) -> Result<String, BridgeError> {
        let leg = self.legs.get_mut(&id).ok_or(BridgeError::UnknownLeg)?;
        let answer = leg
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| BridgeError::Sdp(e.to_string()))?;
        let ufrag = leg.rtc.direct_api().local_ice_credentials().ufrag;
        self.demux.set_ufrag(id, &mut leg.routes, ufrag);
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
        self.check_leg_id(id)?;
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

    /// Where the SIP side's RTP goes now (its SDP changed: re-INVITE). `id`: a leg or a group.
    pub fn set_remote(&mut self, id: u64, remote: SocketAddr) {
        if let Some(g) = self.groups.get_mut(&id) {
            g.latch.reset(remote);
        } else if let Some(leg) = self.legs.get_mut(&id) {
            leg.latch.reset(remote);
        }
    }

    /// Ends leg `id` (the call ended; a leg of a group: the browser left, the group goes on).
    /// No event. (Not a group: [`Gateway::close_group`].)
    pub fn close(&mut self, id: u64) {
        if let Some(mut leg) = self.legs.remove(&id) {
            leg.rtc.disconnect();
            self.demux.forget(id, &leg.routes);
            if let Some(g) = leg.group.and_then(|g| self.groups.get_mut(&g)) {
                g.legs.retain(|l| *l != id);
                if g.dtmf.is_some_and(|d| d.leg == id) {
                    g.dtmf = None;
                }
            }
        }
    }

    /// The SIP side of a group (a call the room dialed), once the phone has answered:
    /// `plain.codecs[0]` is the codec it chose (PCMU or PCMA: the group mixes the browsers'
    /// audio toward the phone, G.711 only), `plain.remote` where its RTP goes,
    /// `plain.telephone_events` its telephone-event payload types (the one at 8 kHz is used).
    /// No browser yet: [`Gateway::group_answer`] adds them. The group sends its mix (silence
    /// at first) every 20 ms from now on, as [`BridgeTransmit::Plain`] with `leg: group`.
    ///
    /// `group` shares the id space of legs (see the module docs): a leg with this id is closed,
    /// an open group with this id is replaced (its legs closed). No events.
    pub fn open_group(
        &mut self,
        now: Instant,
        group: u64,
        plain: &PlainMedia,
    ) -> Result<(), BridgeError> {
        let first = *plain.codecs.first().ok_or(BridgeError::NoCommonCodec)?;
        if !matches!(first.codec, AudioCodec::Pcmu | AudioCodec::Pcma) {
            return Err(BridgeError::NoCommonCodec);
        }
        let taken = self.groups.contains_key(&group) || self.legs.contains_key(&group);
        if !taken && self.legs.len() + self.groups.len() >= self.config.max_legs {
            return Err(BridgeError::Full);
        }
        self.close_group(group);
        self.close(group);
        let r = random_u64(group);
        let plain_tele = plain
            .telephone_events
            .iter()
            .find(|(_, clock)| *clock == first.codec.clock())
            .map(|(pt, _)| *pt);
        self.groups.insert(
            group,
            Group {
                codec: first.codec,
                plain_pt: first.pt,
                plain_tele,
                latch: Latch::new(plain.remote),
                legs: Vec::new(),
                ssrc: r as u32,
                seq: (r >> 32) as u16,
                // RFC 3550: random initial values; the low bits of the timestamp stay zero
                // only to keep it easy to read in captures.
                ts: ((r >> 48) as u32) << 8,
                first: true,
                next_tick: now,
                dtmf: None,
                stats: GroupStats::default(),
            },
        );
        Ok(())
    }

    /// A browser's WebRTC `offer` for group `group`: a new leg `leg` of it (or, when `leg` is
    /// already one of its legs, a new offer on that leg: the same connection answers, as
    /// [`Gateway::renegotiate`]), offering `local` as host candidates. The answer accepts the
    /// audio with the group's codec (and telephone-event at 8 kHz), rejects video (port 0, out
    /// of the BUNDLE group: the phone has none) and accepts a data channel.
    ///
    /// A `leg` that is a leg of another group, or alone, is replaced; the id of an open group
    /// is refused ([`BridgeError::IdInUse`]).
    pub fn group_answer(
        &mut self,
        now: Instant,
        group: u64,
        leg: u64,
        offer: &str,
        local: &[(Protocol, SocketAddr)],
    ) -> Result<String, BridgeError> {
        let g = self.groups.get(&group).ok_or(BridgeError::UnknownLeg)?;
        let (codec, plain_pt, plain_tele, remote) =
            (g.codec, g.plain_pt, g.plain_tele, g.latch.sdp);
        let (offer, audio_mids) = reject_video(offer);
        let offer =
            SdpOffer::from_sdp_string(&offer).map_err(|e| BridgeError::Sdp(e.to_string()))?;
        if self.legs.get(&leg).is_some_and(|l| l.group == Some(group)) {
            return self.reanswer(now, leg, offer);
        }
        self.check_leg_id(leg)?;
        let (mut rtc, ufrag) = new_rtc(now, &[codec], local);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| BridgeError::Sdp(e.to_string()))?;
        let (webrtc_pt, webrtc_tele) = negotiated(&rtc, codec).ok_or(BridgeError::NoCommonCodec)?;
        // The first audio section that has the codec.
        let (mid, remote_tele) = audio_mids
            .iter()
            .find_map(|m| {
                let mid = Mid::from(*m);
                let pts = rtc.media(mid)?.remote_pts();
                pts.iter().any(|p| **p == webrtc_pt).then(|| {
                    let tele = webrtc_tele.filter(|t| pts.iter().any(|p| **p == *t));
                    (mid, tele)
                })
            })
            .ok_or(BridgeError::NoCommonCodec)?;
        let chosen = Chosen {
            codec,
            webrtc_pt,
            plain_pt,
            telephone_event: remote_tele.zip(plain_tele),
        };
        let sdp = complete_candidates(&answer.to_sdp_string());
        self.insert(now, leg, rtc, ufrag, local, remote);
        if let Some(l) = self.legs.get_mut(&leg) {
            l.chosen = Some(chosen);
            l.mid = Some(mid);
            l.group = Some(group);
            l.mix.pcm.reserve_exact(MIX_CAP);
        }
        if let Some(g) = self.groups.get_mut(&group) {
            g.legs.push(leg);
        }
        self.drain(now, leg);
        Ok(sdp)
    }

    /// Ends group `group` and all its legs (the dialed call ended). No events.
    pub fn close_group(&mut self, group: u64) {
        if let Some(g) = self.groups.remove(&group) {
            for leg in g.legs {
                self.close(leg);
            }
        }
    }

    /// Counters of group `group`.
    pub fn group_stats(&self, group: u64) -> Option<GroupStats> {
        let g = self.groups.get(&group)?;
        let mut s = g.stats;
        s.legs = g.legs.len();
        s.connected = g
            .legs
            .iter()
            .filter(|l| self.legs.get(l).is_some_and(|l| l.stats.connected))
            .count();
        Some(s)
    }

    /// Groups open.
    pub fn groups(&self) -> usize {
        self.groups.len()
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
        let Some((id, known)) = self.demux.route(proto, source, data) else {
            return false;
        };
        let Some(leg) = self.legs.get_mut(&id) else {
            return false;
        };
        let Some(input) = receive_input(now, proto, source, destination, &leg.local, data) else {
            return false;
        };
        if !leg.rtc.accepts(&input) {
            return false;
        }
        if !known {
            self.demux.learn(id, &mut leg.routes, proto, source, 8);
        }
        if let Err(e) = leg.rtc.handle_input(input) {
            tracing::debug!(leg = id, "bridge: input refused: {e}");
        }
        self.drain(now, id);
        true
    }

    /// A datagram from the SIP side on leg `id`'s RTP socket (or group `id`'s).
    pub fn handle_plain(&mut self, now: Instant, id: u64, source: SocketAddr, data: &[u8]) {
        if self.groups.contains_key(&id) {
            self.group_plain(now, id, source, data);
            return;
        }
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
        // Symmetric RTP (RFC 4961), strict: see `Latch`.
        if !leg.latch.accept(source) {
            leg.stats.dropped += 1;
            return;
        }
        if !leg.stats.connected {
            return;
        }
        leg.send_plain(
            now,
            mid,
            pt,
            &rtp,
            chosen.codec.clock() / 50,
            tele.is_some(),
        );
        self.drain(now, id);
    }

    /// The phone's RTP to group `id`: to every connected leg.
    fn group_plain(&mut self, now: Instant, id: u64, source: SocketAddr, data: &[u8]) {
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        let Some(rtp) = parse_rtp(data) else {
            g.stats.dropped += 1;
            return;
        };
        let tele = rtp.pt != g.plain_pt && g.plain_tele == Some(rtp.pt);
        if rtp.pt != g.plain_pt && !tele {
            g.stats.dropped += 1;
            return;
        }
        if !g.latch.accept(source) {
            g.stats.dropped += 1;
            return;
        }
        g.stats.from_plain_packets += 1;
        if tele {
            g.stats.telephone_events += 1;
        }
        let step = g.codec.clock() / 50;
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        ids.extend_from_slice(&g.legs);
        for &lid in &ids {
            let Some(leg) = self.legs.get_mut(&lid) else {
                continue;
            };
            let (Some(chosen), Some(mid)) = (leg.chosen, leg.mid) else {
                continue;
            };
            if !leg.stats.connected {
                continue;
            }
            let pt = if tele {
                match chosen.telephone_event {
                    Some((webrtc, _)) => webrtc,
                    None => continue,
                }
            } else {
                chosen.webrtc_pt
            };
            leg.send_plain(now, mid, pt, &rtp, step, tele);
        }
        for &lid in &ids {
            self.drain(now, lid);
        }
        self.scratch = ids;
    }

    /// When [`Gateway::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let legs = self.legs.values().map(|l| l.timeout);
        legs.chain(self.groups.values().map(|g| g.next_tick)).min()
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
        // The groups' mixes.
        for (&id, g) in self.groups.iter_mut() {
            let behind = now.saturating_duration_since(g.next_tick);
            let late = (behind.as_millis() / FRAME_TIME.as_millis()) as u32;
            if late > MIX_CATCH_UP {
                // Stalled: skip the frames beyond, in RTP time too.
                let skip = late - MIX_CATCH_UP;
                g.next_tick += FRAME_TIME * skip;
                g.ts = g.ts.wrapping_add(FRAME as u32 * skip);
            }
            while g.next_tick <= now {
                g.mix(id, &mut self.legs, &mut self.transmits);
                g.next_tick += FRAME_TIME;
            }
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
                        if let Some(g) = leg.group.and_then(|g| self.groups.get_mut(&g)) {
                            from_group_leg(now, id, leg, chosen, g, &pkt, &mut self.transmits);
                            continue;
                        }
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
                            destination: leg.latch.remote,
                            contents,
                        });
                    }
                    _ => {}
                },
            }
        }
    }
}

/// A packet from a group's leg: audio into its buffer toward the mix, a telephone-event on to
/// the phone.
fn from_group_leg(
    now: Instant,
    id: u64,
    leg: &mut Leg,
    chosen: Chosen,
    g: &mut Group,
    pkt: &RtpPacket,
    transmits: &mut VecDeque<BridgeTransmit>,
) {
    let Some(gid) = leg.group else { return };
    let pt = *pkt.header.payload_type;
    if pt == chosen.webrtc_pt {
        let (ssrc, seq) = (*pkt.header.ssrc, *pkt.seq_no);
        if leg
            .mix
            .last
            .is_some_and(|(s, last)| s == ssrc && seq <= last)
        {
            return; // late or repeated
        }
        leg.mix.last = Some((ssrc, seq));
        leg.mix.push(chosen.codec, &pkt.payload);
        leg.stats.to_plain_packets += 1;
        return;
    }
    let Some((_, plain_pt)) = chosen.telephone_event.filter(|(w, _)| *w == pt) else {
        return;
    };
    if pkt.payload.len() < 4 {
        return;
    }
    let ts = pkt.header.timestamp;
    let end = pkt.payload[1] & 0x80 != 0;
    let group_ts = g.ts;
    let out_ts = match &mut g.dtmf {
        Some(d) if d.leg == id && d.src_ts == ts => {
            d.last = now;
            d.ended |= end;
            d.out_ts
        }
        Some(d) if !d.ended && now.saturating_duration_since(d.last) < DTMF_HOLD => {
            // Another browser's event is going on.
            g.stats.dropped += 1;
            return;
        }
        slot => {
            *slot = Some(DtmfOut {
                leg: id,
                src_ts: ts,
                out_ts: group_ts,
                ended: end,
                last: now,
            });
            group_ts
        }
    };
    g.send(
        gid,
        transmits,
        plain_pt,
        pkt.header.marker,
        out_ts,
        &pkt.payload,
    );
    g.stats.telephone_events += 1;
    leg.stats.to_plain_packets += 1;
    leg.stats.telephone_events += 1;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use str0m::media::MediaTime;
    use str0m::net::Receive;

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
        let intruder: SocketAddr = "127.0.0.1:6666".parse().unwrap();
        run.gw.handle_plain(
            t,
            7,
            intruder,
            &phone_rtp(0, 111, 2760, 0xbad, &[0x77; 160]),
        );
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
        assert_eq!(
            s.to_webrtc_packets, 11,
            "the intruder's packet is not forwarded"
        );
        assert_eq!(s.dropped, 2, "garbage and the intruder");
        assert!(s.telephone_events >= 1);
        assert!(run.heard.iter().all(|(_, p)| p != &vec![0x77u8; 160]));

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
    fn the_sip_side_source_is_latched_strictly() {
        let other: SocketAddr = "127.0.0.1:6002".parse().unwrap();
        let nat: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        // From the SDP's address: locked at once; anyone else is refused.
        let mut l = Latch::new(PHONE);
        assert!(l.accept(PHONE));
        assert!(!l.accept(other));
        assert_eq!(l.remote, PHONE);
        // Behind NAT: learned after LATCH_PACKETS in a row, then locked.
        let mut l = Latch::new(PHONE);
        assert!(l.accept(nat) && l.accept(other) && l.accept(nat));
        for _ in 0..LATCH_PACKETS {
            assert!(l.accept(nat));
        }
        assert!(l.locked);
        assert_eq!(l.remote, nat);
        assert!(
            !l.accept(other),
            "an injected stream is dropped once locked"
        );
        assert!(!l.accept(PHONE));
        // A new SDP (re-INVITE): learned again.
        l.reset(other);
        assert!(l.accept(other));
        assert_eq!(l.remote, other);
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

    // ---- Groups ----

    const GROUP: u64 = 100;

    /// A browser in a room, as the SDK offers: Opus, PCMU, PCMA, telephone-events, VP8 and
    /// H.264 video, and a data channel.
    fn room_browser(now: Instant, addr: SocketAddr) -> Rtc {
        let mut cfg = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_pcmu(true, false)
            .enable_pcma(true, false)
            .enable_vp8(true)
            .enable_h264(true);
        for (pt, clock) in [
            (110, Frequency::FORTY_EIGHT_KHZ),
            (126, Frequency::EIGHT_KHZ),
        ] {
            cfg.codec_config()
                .add_config(pt.into(), None, Codec::Tele, clock, None, tele_params());
        }
        let mut rtc = cfg.build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        rtc
    }

    struct Peer {
        rtc: Rtc,
        addr: SocketAddr,
        mid: Mid,
        connected: bool,
        channel_open: bool,
        /// Frames written (for their RTP time).
        sent: u64,
        /// What it got: (payload type, payload).
        heard: Vec<(u8, Vec<u8>)>,
    }

    /// An RTP packet the phone got.
    #[derive(Debug, Clone)]
    struct Got {
        marker: bool,
        pt: u8,
        seq: u16,
        ts: u32,
        ssrc: u32,
        payload: Vec<u8>,
    }

    struct GroupRun {
        now: Instant,
        gw: Gateway,
        peers: Vec<Peer>,
        phone: Vec<Got>,
    }

    fn pcmu_phone() -> PlainMedia {
        PlainMedia {
            remote: PHONE,
            codecs: vec![PlainCodec {
                codec: AudioCodec::Pcmu,
                pt: 0,
            }],
            telephone_events: vec![(101, 8000)],
        }
    }

    impl GroupRun {
        fn new(plain: &PlainMedia) -> Self {
            let now = Instant::now();
            let mut gw = Gateway::new(BridgeConfig::default());
            gw.open_group(now, GROUP, plain).unwrap();
            GroupRun {
                now,
                gw,
                peers: vec![],
                phone: vec![],
            }
        }

        /// A browser joins as leg `leg`: its offer (audio, video, data channel), the group's
        /// answer, which it accepts. Returns the answer.
        fn join(&mut self, leg: u64, addr: SocketAddr) -> String {
            let mut rtc = room_browser(self.now, addr);
            let mut api = rtc.sdp_api();
            let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
            api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
            api.add_channel("room".into());
            let (offer, pending) = api.apply().unwrap();
            let offer = offer.to_sdp_string();
            assert!(offer.contains("m=video 9") && offer.contains("VP8/90000"));
            let answer = self
                .gw
                .group_answer(self.now, GROUP, leg, &offer, &[(Protocol::Udp, GW)])
                .unwrap();
            rtc.sdp_api()
                .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
                .unwrap();
            self.peers.push(Peer {
                rtc,
                addr,
                mid,
                connected: false,
                channel_open: false,
                sent: 0,
                heard: vec![],
            });
            answer
        }

        fn pump(&mut self, ms: u64) {
            for _ in 0..ms / 5 {
                self.now += Duration::from_millis(5);
                for p in &mut self.peers {
                    loop {
                        match p.rtc.poll_output().unwrap() {
                            Output::Timeout(_) => break,
                            Output::Transmit(t) => {
                                self.gw.handle_receive(
                                    self.now,
                                    Protocol::Udp,
                                    p.addr,
                                    GW,
                                    &t.contents,
                                );
                            }
                            Output::Event(Event::Connected) => p.connected = true,
                            Output::Event(Event::ChannelOpen(..)) => p.channel_open = true,
                            Output::Event(Event::MediaData(d)) => {
                                p.heard.push((*d.pt, d.data.to_vec()))
                            }
                            Output::Event(_) => {}
                        }
                    }
                    p.rtc.handle_input(Input::Timeout(self.now)).unwrap();
                }
                self.gw.handle_timeout(self.now);
                assert!(
                    self.gw.groups.values().all(|g| g.next_tick > self.now),
                    "the mixes are up to date"
                );
                self.flush();
            }
        }

        fn flush(&mut self) {
            while let Some(t) = self.gw.poll_transmit() {
                match t {
                    BridgeTransmit::WebRtc(t) => {
                        let Some(p) = self.peers.iter_mut().find(|p| p.addr == t.destination)
                        else {
                            continue;
                        };
                        let input = Input::Receive(
                            self.now,
                            Receive {
                                proto: Protocol::Udp,
                                source: GW,
                                destination: p.addr,
                                contents: (&t.contents[..]).try_into().unwrap(),
                            },
                        );
                        p.rtc.handle_input(input).unwrap();
                    }
                    BridgeTransmit::Plain {
                        leg,
                        destination,
                        contents,
                    } => {
                        assert_eq!(leg, GROUP, "the group's socket sends");
                        assert_eq!(destination, PHONE);
                        let p = parse_rtp(&contents).expect("plain RTP");
                        self.phone.push(Got {
                            marker: p.marker,
                            pt: p.pt,
                            seq: p.seq,
                            ts: p.ts,
                            ssrc: p.ssrc,
                            payload: p.payload.to_vec(),
                        });
                    }
                }
            }
        }

        /// `frames` × 20 ms of constant PCMU bytes from browsers (index, byte).
        fn talk(&mut self, who: &[(usize, u8)], frames: u32) {
            for _ in 0..frames {
                for &(i, byte) in who {
                    let p = &mut self.peers[i];
                    let pt = p.rtc.media(p.mid).unwrap().remote_pts()[0];
                    assert_eq!(*pt, 0, "PCMU");
                    let t = MediaTime::new(p.sent * 160, Frequency::EIGHT_KHZ);
                    p.sent += 1;
                    p.rtc
                        .writer(p.mid)
                        .unwrap()
                        .write(pt, self.now, t, vec![byte; 160])
                        .unwrap();
                }
                self.pump(20);
            }
        }

        /// The phone sends `n` packets of `byte` (and runs 20 ms after each).
        fn phone_talks(&mut self, first_seq: u16, n: u16, byte: u8) {
            for i in 0..n {
                let seq = first_seq.wrapping_add(i);
                let pkt = phone_rtp(0, seq, u32::from(seq) * 160, 0x5150, &[byte; 160]);
                let t = self.now;
                self.gw.handle_plain(t, GROUP, PHONE, &pkt);
                self.pump(20);
            }
        }

        /// The payloads of the mixed frames the phone got since `from`.
        fn frames_since(&self, from: usize) -> Vec<&[u8]> {
            self.phone[from..]
                .iter()
                .filter(|g| g.pt == 0)
                .map(|g| &g.payload[..])
                .collect()
        }
    }

    #[test]
    fn a_group_mixes_browsers_for_the_phone_and_shares_the_phone_with_them() {
        let mut run = GroupRun::new(&pcmu_phone());
        let a = run.join(1, BROWSER);
        let b_addr = SocketAddr::new(BROWSER.ip(), 40001);
        let b = run.join(2, b_addr);
        for answer in [&a, &b] {
            assert!(answer.contains("PCMU/8000"), "{answer}");
            assert!(answer.contains("telephone-event/8000"), "{answer}");
            assert!(
                !answer.contains("opus") && !answer.contains("VP8"),
                "{answer}"
            );
            assert!(answer.contains("m=video 0 "), "video rejected: {answer}");
            assert!(
                answer.contains("m=application 9 "),
                "data channel: {answer}"
            );
        }
        run.pump(2000);
        assert!(run.peers.iter().all(|p| p.connected), "both connected");
        assert!(
            run.peers.iter().all(|p| p.channel_open),
            "data channels open"
        );
        let mut events = vec![run.gw.poll_event(), run.gw.poll_event()];
        events.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(
            events,
            vec![
                Some(BridgeEvent::Connected(1)),
                Some(BridgeEvent::Connected(2))
            ]
        );
        let s = run.gw.group_stats(GROUP).unwrap();
        assert_eq!((s.legs, s.connected), (2, 2));

        // Nobody talks: silence every 20 ms from the start.
        let frames = run.frames_since(0);
        assert!(
            (95..=101).contains(&frames.len()),
            "{} frames",
            frames.len()
        );
        assert!(frames.iter().all(|f| *f == [0xff; 160]), "silence");
        assert!(run.phone[0].marker && !run.phone[1].marker);

        // The phone → both browsers.
        run.phone_talks(500, 10, 0x11);
        let t = run.now;
        let dtmf = phone_rtp(101, 510, 510 * 160, 0x5150, &[5, 0x0a, 0, 160]);
        run.gw.handle_plain(t, GROUP, PHONE, &dtmf);
        run.pump(100);
        for p in &run.peers {
            let heard = p
                .heard
                .iter()
                .filter(|(pt, d)| *pt == 0 && d == &vec![0x11u8; 160])
                .count();
            assert!(heard >= 8, "a browser heard {heard} frames of the phone");
            assert!(p.heard.iter().any(|(pt, d)| *pt == 126 && d[0] == 5));
        }
        let s = run.gw.group_stats(GROUP).unwrap();
        assert_eq!(s.from_plain_packets, 11);

        // Only A talks: the phone gets A's bytes exactly (µ-law of +1000).
        let a_byte = g711::ulaw_encode(1000);
        let mark = run.phone.len();
        run.talk(&[(0, a_byte)], 30);
        let frames = run.frames_since(mark);
        let a_frames = frames.iter().filter(|f| **f == [a_byte; 160]).count();
        assert!(a_frames >= 25, "{a_frames} of A's frames");
        assert!(frames
            .iter()
            .all(|f| *f == [a_byte; 160] || *f == [0xff; 160]));

        // A and B: the sum.
        let b_byte = g711::ulaw_encode(2000);
        let sum = g711::ulaw_decode(a_byte) + g711::ulaw_decode(b_byte);
        let mixed = g711::ulaw_encode(sum);
        assert!((i32::from(g711::ulaw_decode(mixed)) - 3000).abs() < 100);
        let mark = run.phone.len();
        run.talk(&[(0, a_byte), (1, b_byte)], 30);
        let frames = run.frames_since(mark);
        let both = frames.iter().filter(|f| **f == [mixed; 160]).count();
        assert!(both >= 20, "{both} mixed frames of {}", frames.len());
        assert!(frames.iter().all(|f| [mixed, a_byte, b_byte, 0xff]
            .iter()
            .any(|b| *f == [*b; 160])));

        // Neither: silence again once the buffers are empty.
        let mark = run.phone.len();
        run.pump(400);
        let frames = run.frames_since(mark);
        assert!(frames[frames.len() - 10..]
            .iter()
            .all(|f| *f == [0xff; 160]));

        // DTMF from A: on the group's SSRC and sequence, one timestamp for the whole event.
        let mark = run.phone.len();
        let group_ts = run.phone[mark - 1].ts.wrapping_add(160);
        {
            let p = &mut run.peers[0];
            let pt = p.rtc.media(p.mid).unwrap().remote_pts()[0];
            let t = MediaTime::new(p.sent * 160, Frequency::EIGHT_KHZ);
            p.rtc
                .writer(p.mid)
                .unwrap()
                .telephone_event(str0m::media::TelephoneEvent {
                    event: 5,
                    end: true,
                    volume: 10,
                    duration: Duration::from_millis(100),
                })
                .write(pt, run.now, t, vec![])
                .unwrap();
        }
        run.pump(300);
        let events: Vec<&Got> = run.phone[mark..].iter().filter(|g| g.pt == 101).collect();
        assert!(events.len() >= 3, "{} event packets", events.len());
        assert!(events.iter().all(|g| g.payload[0] == 5));
        assert!(events[0].marker, "the event's first packet has the marker");
        assert!(
            events.last().unwrap().payload[1] & 0x80 != 0,
            "end bit kept"
        );
        let ts = events[0].ts;
        assert!(events.iter().all(|g| g.ts == ts), "one timestamp per event");
        assert!(
            ts.wrapping_sub(group_ts) < 160 * 3,
            "the group's time at the event's start: {ts} vs {group_ts}"
        );
        let durations: Vec<u16> = events
            .iter()
            .map(|g| u16::from_be_bytes([g.payload[2], g.payload[3]]))
            .collect();
        assert!(durations.windows(2).all(|w| w[0] <= w[1]), "{durations:?}");
        assert_eq!(*durations.last().unwrap(), 800, "100 ms at 8 kHz");

        // One stream toward the phone all along: one SSRC, consecutive sequence numbers,
        // audio timestamps 160 apart.
        let ssrc = run.phone[0].ssrc;
        assert!(run.phone.iter().all(|g| g.ssrc == ssrc));
        assert!(run
            .phone
            .windows(2)
            .all(|w| w[1].seq == w[0].seq.wrapping_add(1)));
        let audio: Vec<&Got> = run.phone.iter().filter(|g| g.pt == 0).collect();
        assert!(audio
            .windows(2)
            .all(|w| w[1].ts == w[0].ts.wrapping_add(160)));
        let s = run.gw.group_stats(GROUP).unwrap();
        assert_eq!(s.to_plain_packets, run.phone.len() as u64);
        assert_eq!(s.mixed_frames, audio.len() as u64);
        assert!(s.telephone_events >= 4);

        // A leaves: B stays.
        run.gw.close(1);
        assert_eq!(run.gw.group_stats(GROUP).unwrap().legs, 1);
        assert!(run.gw.stats(1).is_none() && run.gw.stats(2).is_some());
        let before: Vec<usize> = run.peers.iter().map(|p| p.heard.len()).collect();
        run.phone_talks(511, 5, 0x22);
        assert_eq!(run.peers[0].heard.len(), before[0], "A hears no more");
        assert!(
            run.peers[1].heard.len() >= before[1] + 4,
            "B still hears: {before:?} {} {:?}",
            run.peers[1].heard.len(),
            run.gw.stats(2)
        );
        let mark = run.phone.len();
        run.talk(&[(1, b_byte)], 10);
        assert!(run.frames_since(mark).iter().any(|f| *f == [b_byte; 160]));

        // The call ends: the group and its legs go.
        run.gw.close_group(GROUP);
        assert!(run.gw.is_empty() && run.gw.groups() == 0);
        assert!(run.gw.group_stats(GROUP).is_none() && run.gw.stats(2).is_none());
        let t = run.now;
        run.gw
            .handle_plain(t, GROUP, PHONE, &phone_rtp(0, 700, 0, 0x5150, &[0; 160]));
        let mark = run.phone.len();
        run.pump(100);
        assert_eq!(run.phone.len(), mark, "no more RTP to the phone");
        assert_eq!(run.gw.poll_timeout(), None);
    }

    #[test]
    fn a_group_leg_renegotiates_on_its_connection() {
        let plain = PlainMedia {
            codecs: vec![PlainCodec {
                codec: AudioCodec::Pcma,
                pt: 8,
            }],
            ..pcmu_phone()
        };
        let mut run = GroupRun::new(&plain);
        let answer = run.join(1, BROWSER);
        assert!(
            answer.contains("PCMA/8000") && !answer.contains("PCMU"),
            "{answer}"
        );
        run.pump(1000);
        assert!(run.peers[0].connected);
        // A new offer from the same browser (another video track): the same leg answers.
        let p = &mut run.peers[0];
        let mut api = p.rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let answer = run
            .gw
            .group_answer(
                run.now,
                GROUP,
                1,
                &offer.to_sdp_string(),
                &[(Protocol::Udp, GW)],
            )
            .unwrap();
        assert_eq!(answer.matches("m=video 0 ").count(), 2, "{answer}");
        run.peers[0]
            .rtc
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        assert_eq!(run.gw.len(), 1);
        // A-law through the mix: one talker's bytes unchanged.
        let byte = g711::alaw_encode(-1234);
        let mark = run.phone.len();
        for _ in 0..20 {
            let p = &mut run.peers[0];
            let pt = p.rtc.media(p.mid).unwrap().remote_pts()[0];
            assert_eq!(*pt, 8);
            let t = MediaTime::new(p.sent * 160, Frequency::EIGHT_KHZ);
            p.sent += 1;
            p.rtc
                .writer(p.mid)
                .unwrap()
                .write(pt, run.now, t, vec![byte; 160])
                .unwrap();
            run.pump(20);
        }
        let got: Vec<&Got> = run.phone[mark..].iter().collect();
        assert!(got.iter().all(|g| g.pt == 8));
        assert!(got.iter().filter(|g| g.payload == [byte; 160]).count() >= 15);
        assert!(got
            .iter()
            .all(|g| g.payload == [byte; 160] || g.payload == [g711::ALAW_SILENCE; 160]));
    }

    #[test]
    fn group_refusals_and_garbage() {
        let now = Instant::now();
        let mut gw = Gateway::new(BridgeConfig {
            max_legs: 3,
            connect_timeout: Duration::from_secs(1),
        });
        let opus = PlainMedia {
            codecs: vec![PlainCodec {
                codec: AudioCodec::Opus,
                pt: 96,
            }],
            ..pcmu_phone()
        };
        assert_eq!(
            gw.open_group(now, GROUP, &opus),
            Err(BridgeError::NoCommonCodec)
        );
        let none = PlainMedia {
            codecs: vec![],
            ..pcmu_phone()
        };
        assert_eq!(
            gw.open_group(now, GROUP, &none),
            Err(BridgeError::NoCommonCodec)
        );
        let local = [(Protocol::Udp, GW)];
        assert_eq!(
            gw.group_answer(now, GROUP, 1, "v=0", &local),
            Err(BridgeError::UnknownLeg)
        );
        gw.open_group(now, GROUP, &pcmu_phone()).unwrap();
        assert!(matches!(
            gw.group_answer(now, GROUP, 1, "garbage", &local),
            Err(BridgeError::Sdp(_))
        ));
        // An offer without audio has nothing for the phone.
        let mut b = room_browser(now, BROWSER);
        let mut api = b.sdp_api();
        api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
        api.add_channel("room".into());
        let (offer, _) = api.apply().unwrap();
        assert_eq!(
            gw.group_answer(now, GROUP, 1, &offer.to_sdp_string(), &local),
            Err(BridgeError::NoCommonCodec)
        );
        // Ids: a group's id is not a leg's.
        let mut b = room_browser(now, BROWSER);
        let mut api = b.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, _) = api.apply().unwrap();
        let offer = offer.to_sdp_string();
        assert_eq!(
            gw.group_answer(now, GROUP, GROUP, &offer, &local),
            Err(BridgeError::IdInUse)
        );
        assert_eq!(
            gw.answer(now, GROUP, &offer, &pcmu_phone(), &local)
                .map(|_| ()),
            Err(BridgeError::IdInUse)
        );
        gw.group_answer(now, GROUP, 1, &offer, &local).unwrap();
        gw.group_answer(now, GROUP, 2, &offer, &local).unwrap();
        assert_eq!(
            gw.group_answer(now, GROUP, 3, &offer, &local),
            Err(BridgeError::Full),
            "legs and groups count toward max_legs"
        );
        assert_eq!(gw.group_stats(GROUP).unwrap().legs, 2);

        // Garbage from the phone.
        let mut junk: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x80],
            b"not rtp at all".to_vec(),
            phone_rtp(0, 1, 2, 3, &[]),
            phone_rtp(101, 1, 2, 3, &[1]),
            phone_rtp(99, 1, 2, 3, &[0; 160]),
            vec![0xbf, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![
                0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde, 0xff, 0xff,
            ],
            vec![0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff],
            phone_rtp(0, 1, 2, 3, &[0xaa; 5000]),
        ];
        let mut x: u32 = 12345;
        for len in 0..200 {
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            junk.push(v);
        }
        let mut t = now;
        for j in &junk {
            gw.handle_plain(t, GROUP, PHONE, j);
            gw.handle_plain(t, 1, PHONE, j);
            assert!(!gw.handle_receive(t, Protocol::Udp, BROWSER, GW, j) || j.len() > 20);
            t += Duration::from_millis(1);
        }
        gw.handle_timeout(t);
        assert!(gw.group_stats(GROUP).unwrap().dropped > 0);
        // Nobody connects: the legs end, the group goes on sending silence.
        for _ in 0..30 {
            t += Duration::from_millis(100);
            gw.handle_timeout(t);
        }
        let mut ended = vec![gw.poll_event(), gw.poll_event()];
        ended.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(
            ended,
            vec![
                Some(BridgeEvent::Ended {
                    leg: 1,
                    reason: "never connected"
                }),
                Some(BridgeEvent::Ended {
                    leg: 2,
                    reason: "never connected"
                })
            ]
        );
        let s = gw.group_stats(GROUP).unwrap();
        assert_eq!(s.legs, 0);
        assert!(s.mixed_frames >= 150, "{s:?}");
        // A long stall: the mix skips ahead instead of bursting.
        while gw.poll_transmit().is_some() {}
        t += Duration::from_secs(10);
        gw.handle_timeout(t);
        let mut burst = 0;
        while gw.poll_transmit().is_some() {
            burst += 1;
        }
        assert!(burst <= MIX_CATCH_UP as usize + 1, "{burst} frames at once");
        // Replacing: a group over a leg's id, a group over a group.
        gw.open_group(t, GROUP, &pcmu_phone()).unwrap();
        assert_eq!(gw.groups(), 1);
        gw.close_group(GROUP);
        gw.close_group(GROUP);
        gw.close(GROUP);
        assert!(gw.is_empty() && gw.groups() == 0);
    }

    #[test]
    fn mix_buffers_start_at_40_ms_and_hold_200_ms() {
        let mut m = MixIn::default();
        let mut acc = [0i32; FRAME];
        m.push(AudioCodec::Pcmu, &[0x80; 160]);
        assert!(!m.take(&mut acc), "20 ms is not enough to start");
        m.push(AudioCodec::Pcmu, &[0x80; 160]);
        assert!(m.take(&mut acc) && m.take(&mut acc));
        assert_eq!(acc[0], 2 * 32124);
        assert!(!m.take(&mut acc), "ran short: buffering again");
        m.push(AudioCodec::Pcmu, &[0x80; 100]);
        assert!(!m.take(&mut acc));
        m.push(AudioCodec::Pcma, &[0xd5; 5000]);
        assert_eq!(m.pcm.len(), MIX_CAP, "capped");
        assert!(m.pcm.iter().all(|s| *s == 8), "the oldest dropped");
        m.push(AudioCodec::Pcmu, &[]);
        assert_eq!(m.pcm.len(), MIX_CAP);
    }

    #[test]
    fn video_is_rejected_in_the_offer() {
        let offer = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\na=group:BUNDLE 0 1 2\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:1\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";
        let (out, audio) = reject_video(offer);
        assert_eq!(audio, vec!["0"]);
        assert!(out.contains("a=group:BUNDLE 0 2\r\n"), "{out}");
        assert!(
            out.contains("m=video 0 UDP/TLS/RTP/SAVPF 96 97\r\n"),
            "{out}"
        );
        assert!(out.contains("m=audio 9 ") && out.contains("m=application 9 "));
        assert_eq!(out.len(), offer.len() - 2);
        let (out, audio) = reject_video("m=video 9\nm=video\nm=audio 1\na=mid:\n");
        assert_eq!(out, "m=video 0\nm=video\nm=audio 1\na=mid:\n");
        assert_eq!(audio, vec![""]);
    }
}
