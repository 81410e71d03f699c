//! The selective forwarding unit of Icebreaker, sans-IO, on [`str0m`].
//!
//! One [`Sfu`] holds every SFU room of a server: one `str0m::Rtc` per participant (ICE-lite,
//! DTLS-SRTP, RTCP, NACK/RTX, TWCC bandwidth estimation are str0m's), and the forwarding
//! between them: each publisher's audio and video frames go to every other member of its room,
//! one simulcast layer per subscriber (see [`layers`]), keyframe requests go back to the
//! publisher (throttled), data-channel messages go to the room, and the active speaker is
//! detected from the audio-level extension (see [`speaker`]).
//!
//! No sockets, no clock: the I/O layer feeds datagrams with [`Sfu::handle_receive`], signaling
//! `sfu` messages with [`Sfu::handle_message`], departures with [`Sfu::remove`], time with
//! [`Sfu::handle_timeout`] (when [`Sfu::poll_timeout`] passes), and sends what
//! [`Sfu::poll_transmit`] and [`Sfu::poll_event`] give back. The wire contract of the `sfu`
//! messages is `docs/PROTOCOL.md` ("The SFU").
//!
//! Demultiplexing (one UDP port for every participant): a STUN request is routed by the local
//! ICE ufrag in its USERNAME (each participant has its own), and the source address it came
//! from is then remembered for that participant; every other datagram is routed by its source
//! address. Unknown sources are dropped.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bridge;
mod demux;
pub mod g711;
pub mod layers;
pub mod speaker;
pub mod vp8;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::media::{Direction, KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid, Rid};
pub use str0m::net::{Protocol, Transmit};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use crate::demux::{receive_input, Demux, Routes};
use crate::layers::{LayerInfo, Want};
use crate::speaker::{Loudness, SpeakerDetector};

/// Settings.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Keyframe requests to one publisher layer are sent at most this often (500 ms).
    pub keyframe_interval: Duration,
    /// Bandwidth estimate a subscriber starts with, bits/s (1.5 Mbit/s).
    pub initial_bitrate: u64,
    /// Participants on this SFU at most (`server_full` beyond).
    pub max_participants: usize,
    /// Period of the layer choice and speaker detection (250 ms).
    pub tick: Duration,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            keyframe_interval: Duration::from_millis(500),
            initial_bitrate: 1_500_000,
            max_participants: 2_000,
            tick: Duration::from_millis(250),
        }
    }
}

/// What the I/O layer must deliver over signaling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfuEvent {
    /// An `sfu` message (`data`, a JSON object) for one member.
    ToPeer {
        /// Room.
        room: String,
        /// Member.
        peer: String,
        /// JSON object.
        data: String,
    },
    /// An `sfu` message for every member of a room.
    ToRoom {
        /// Room.
        room: String,
        /// JSON object.
        data: String,
    },
}

/// Totals for metrics and the admin view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SfuTotals {
    /// Rooms with at least one participant connected to the SFU.
    pub rooms: usize,
    /// Participants.
    pub participants: usize,
    /// Published tracks.
    #[serde(rename = "tracks_published")]
    pub tracks_in: usize,
    /// Forwarded tracks (one per subscriber per track being sent).
    #[serde(rename = "tracks_forwarded")]
    pub tracks_out: usize,
    /// Datagrams sent since start.
    pub packets_out: u64,
    /// Bytes sent since start.
    pub bytes_out: u64,
    /// Datagrams received and accepted since start.
    pub packets_in: u64,
    /// Bytes received and accepted since start.
    pub bytes_in: u64,
    /// Media frames forwarded (one per subscriber) since start.
    pub frames_forwarded: u64,
    /// Keyframe requests sent to publishers since start.
    pub keyframe_requests: u64,
}

/// One room, for the admin view and metrics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoomStats {
    /// Name.
    pub room: String,
    /// Participants connected to the SFU.
    pub participants: usize,
    /// Published tracks.
    pub tracks: usize,
    /// Bits per second sent to the room's participants (last second).
    pub bitrate_out: u64,
    /// Bits per second received from them.
    pub bitrate_in: u64,
    /// Active speaker.
    pub speaker: Option<String>,
}

/// One participant, for the admin view.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PeerStats {
    /// Room.
    pub room: String,
    /// Peer id.
    pub peer: String,
    /// ICE state (`new`, `checking`, `connected`, `completed`, `disconnected`).
    pub ice: String,
    /// The client's address (last seen), if any.
    pub remote: Option<String>,
    /// Transport (`udp`, `tcp`).
    pub protocol: Option<String>,
    /// Bits per second received from it (last second).
    pub bitrate_in: u64,
    /// Bits per second sent to it (last second).
    pub bitrate_out: u64,
    /// Its bandwidth estimate (TWCC), bits/s.
    pub bandwidth_estimate: Option<u64>,
    /// Tracks it publishes: `kind`, layers seen.
    pub publishing: Vec<TrackStats>,
    /// Tracks it receives: publisher, `kind`, layer, paused.
    pub receiving: Vec<SubscriptionStats>,
}

/// A published track.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrackStats {
    /// `audio` / `video`.
    pub kind: &'static str,
    /// Simulcast layers: `rid` (empty without simulcast), width, height, bits/s.
    pub layers: Vec<(String, u32, u32, u64)>,
}

/// A forwarded track.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SubscriptionStats {
    /// Its publisher.
    pub publisher: String,
    /// `audio` / `video`.
    pub kind: &'static str,
    /// The client's mid for it.
    pub mid: Option<String>,
    /// The layer forwarded now (`rid`), if any.
    pub layer: Option<String>,
    /// The tile size the client reported.
    pub view: Option<(u32, u32)>,
}

/// Why [`Sfu::handle_message`] refused a message (answered to the client as `error` too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfuError {
    /// Not an `sfu` object we understand.
    BadMessage(String),
    /// The SDP was refused.
    Sdp(String),
    /// Too many participants.
    Full,
}

impl std::fmt::Display for SfuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SfuError::BadMessage(m) => write!(f, "bad sfu message: {m}"),
            SfuError::Sdp(m) => write!(f, "SDP refused: {m}"),
            SfuError::Full => f.write_str("the SFU is at its participant limit"),
        }
    }
}

impl std::error::Error for SfuError {}

/// Client → SFU `data`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum ClientData {
    Offer {
        sdp: String,
    },
    Answer {
        sdp: String,
    },
    View {
        mid: String,
        width: u32,
        height: u32,
    },
    Candidate {},
}

#[derive(Serialize)]
struct TrackEntry<'a> {
    mid: String,
    peer: &'a str,
    kind: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct PartId(u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TrackId(u64);

/// A simulcast layer (or the only stream) of a published track.
#[derive(Debug)]
struct Layer {
    rid: Option<Rid>,
    width: u32,
    height: u32,
    window_bytes: u64,
    window_start: Instant,
    bitrate: u64,
    last_seen: Instant,
    last_keyframe_request: Option<Instant>,
    /// A request was throttled: send it when the interval has passed (unless a keyframe came).
    keyframe_wanted: Option<KeyframeRequestKind>,
}

/// Tracks one participant may publish.
const MAX_TRACKS_IN: usize = 8;

/// Data-channel messages kept for a participant whose channel is not open yet.
const BACKLOG_MESSAGES: usize = 64;
/// ... and bytes (a message may be up to 256 KiB).
const BACKLOG_BYTES: usize = 256 * 1024;

/// An offer to a client not answered in this time is withdrawn and made again.
const OFFER_TIMEOUT: Duration = Duration::from_secs(10);

/// A layer is active while its packets keep arriving.
const LAYER_ACTIVE: Duration = Duration::from_millis(1500);

impl Layer {
    fn info(&self, now: Instant) -> LayerInfo {
        LayerInfo {
            width: self.width,
            height: self.height,
            bitrate: self.bitrate,
            active: now.saturating_duration_since(self.last_seen) < LAYER_ACTIVE,
        }
    }
}

/// A published track.
#[derive(Debug)]
struct TrackIn {
    owner: PartId,
    mid: Mid,
    kind: MediaKind,
    /// Lowest quality first (re-sorted as sizes and bitrates become known).
    layers: Vec<Layer>,
    loudness: Loudness,
}

impl TrackIn {
    fn layer_mut(&mut self, rid: Option<Rid>, now: Instant) -> &mut Layer {
        let i = match self.layers.iter().position(|l| l.rid == rid) {
            Some(i) => i,
            None => {
                self.layers.push(Layer {
                    rid,
                    width: 0,
                    height: 0,
                    window_bytes: 0,
                    window_start: now,
                    bitrate: 0,
                    last_seen: now,
                    last_keyframe_request: None,
                    keyframe_wanted: None,
                });
                self.layers.len() - 1
            }
        };
        &mut self.layers[i]
    }

    /// Re-sorts layers lowest first: by size when every size is known, else by bitrate.
    fn sort_layers(&mut self) {
        if self.layers.iter().all(|l| l.width > 0) {
            self.layers.sort_by_key(|l| (l.width, l.height));
        } else if self.layers.iter().all(|l| l.bitrate > 0) {
            self.layers.sort_by_key(|l| l.bitrate);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
    ToStop(Mid),
    NegotiatingStop(Mid),
}

impl OutState {
    fn mid(self) -> Option<Mid> {
        match self {
            OutState::ToOpen => None,
            OutState::Negotiating(m)
            | OutState::Open(m)
            | OutState::ToStop(m)
            | OutState::NegotiatingStop(m) => Some(m),
        }
    }
}

/// One track forwarded to one subscriber.
#[derive(Debug)]
struct TrackOut {
    track: TrackId,
    /// Publisher's peer id and kind (kept for when the track is gone).
    publisher: String,
    kind: MediaKind,
    state: OutState,
    /// Layer being forwarded (`None`: nothing yet / paused).
    current: Option<Option<Rid>>,
    /// Layer to switch to at its next keyframe.
    target: Option<Option<Rid>>,
    view: Option<(u32, u32)>,
    /// Timestamp rewriting across layer switches: out = in + offset (modular, as RTP time is).
    ts_offset: u64,
    last_out: Option<(u64, Instant, u32)>,
}

/// One participant: a member of an SFU room with its connection to the SFU.
struct Part {
    room: String,
    peer: String,
    rtc: Rtc,
    /// The client's DTLS fingerprint line (a new one means a new `RTCPeerConnection`).
    fingerprint: Option<String>,
    /// Its ufrag and proven addresses on the shared port.
    routes: Routes,
    pending: Option<SdpPendingOffer>,
    /// When the pending offer was sent.
    pending_since: Option<Instant>,
    channel: Option<ChannelId>,
    /// Room messages that arrived before its data channel opened (bounded).
    backlog: VecDeque<(bool, Vec<u8>)>,
    tracks_in: Vec<TrackId>,
    tracks_out: Vec<TrackOut>,
    /// Our candidate addresses for it (received datagrams are addressed to them).
    local: Vec<(Protocol, SocketAddr)>,
    last_remote: Option<(Protocol, SocketAddr)>,
    timeout: Instant,
    estimate: Option<u64>,
    ice: IceConnectionState,
    bytes_in: u64,
    bytes_out: u64,
    rate_in: Rate,
    rate_out: Rate,
}

/// Bits per second over the last full second.
#[derive(Debug, Clone, Copy)]
struct Rate {
    start: Instant,
    bytes: u64,
    bps: u64,
}

impl Rate {
    fn new(now: Instant) -> Self {
        Rate {
            start: now,
            bytes: 0,
            bps: 0,
        }
    }

    fn add(&mut self, n: usize) {
        self.bytes += n as u64;
    }

    fn roll(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.start);
        if dt >= Duration::from_secs(1) {
            self.bps = (self.bytes as f64 * 8.0 / dt.as_secs_f64()) as u64;
            self.bytes = 0;
            self.start = now;
        }
    }
}

#[derive(Default)]
struct Room {
    members: Vec<PartId>,
    speaker: SpeakerDetector<PartId>,
}

/// Work that crosses participants, queued while one participant's output is being drained.
/// (Frames are the common case: boxing them would allocate per frame.)
#[allow(clippy::large_enum_variant)]
enum Prop {
    Media(PartId, TrackId, MediaData),
    Keyframe {
        publisher: PartId,
        track: TrackId,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
    },
    Channel(PartId, bool, Vec<u8>),
    TrackOpened(TrackId),
}

/// The SFU. See the crate docs.
pub struct Sfu {
    config: SfuConfig,
    parts: HashMap<PartId, Part>,
    rooms: HashMap<String, Room>,
    tracks: HashMap<TrackId, TrackIn>,
    by_peer: HashMap<(String, String), PartId>,
    demux: Demux<PartId>,
    next: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SfuEvent>,
    props: VecDeque<Prop>,
    dirty: Vec<PartId>,
    next_tick: Option<Instant>,
    totals: SfuTotals,
}

impl std::fmt::Debug for Sfu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sfu")
            .field("participants", &self.parts.len())
            .field("rooms", &self.rooms.len())
            .finish_non_exhaustive()
    }
}

fn kind_str(k: MediaKind) -> &'static str {
    match k {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

fn ice_str(s: IceConnectionState) -> &'static str {
    match s {
        IceConnectionState::New => "new",
        IceConnectionState::Checking => "checking",
        IceConnectionState::Connected => "connected",
        IceConnectionState::Completed => "completed",
        IceConnectionState::Disconnected => "disconnected",
    }
}

fn proto_str(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "udp",
        _ => "tcp",
    }
}

/// The `a=fingerprint:` line of an SDP, if any.
fn fingerprint_of(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=fingerprint:"))
        .map(|f| f.trim().to_ascii_lowercase())
}

/// Marks every media section's candidates complete (`a=end-of-candidates`, RFC 8840): an ICE-lite
/// server has no other candidates to trickle, and clients that wait for the end of remote
/// candidates before checking (aiortc) would otherwise never start.
fn complete_candidates(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 128);
    for line in sdp.split_inclusive('\n') {
        out.push_str(line);
        if line.starts_with("a=ice-pwd:") {
            out.push_str("a=end-of-candidates\r\n");
        }
    }
    out
}

fn error_json(message: &str) -> String {
    serde_json::json!({"kind": "error", "message": message}).to_string()
}

impl Sfu {
    /// An empty SFU.
    pub fn new(config: SfuConfig) -> Self {
        Sfu {
            config,
            parts: HashMap::new(),
            rooms: HashMap::new(),
            tracks: HashMap::new(),
            by_peer: HashMap::new(),
            demux: Demux::new(),
            next: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            props: VecDeque::new(),
            dirty: Vec::new(),
            next_tick: None,
            totals: SfuTotals::default(),
        }
    }

    /// Updates the settings (reload).
    pub fn set_config(&mut self, config: SfuConfig) {
        self.config = config;
    }

    /// An `sfu` message from member `peer` of `room` (`data`: the JSON object). `local` lists
    /// the SFU's own addresses to offer this client as host candidates (used when its
    /// connection is created). Errors are also answered to the client as `{"kind":"error"}`.
    pub fn handle_message(
        &mut self,
        now: Instant,
        room: &str,
        peer: &str,
        data: &str,
        local: &[(Protocol, SocketAddr)],
    ) -> Result<(), SfuError> {
        let r = self.handle_message_inner(now, room, peer, data, local);
        if let Err(e) = &r {
            self.events.push_back(SfuEvent::ToPeer {
                room: room.to_owned(),
                peer: peer.to_owned(),
                data: error_json(&e.to_string()),
            });
        }
        self.run(now);
        r
    }

    fn handle_message_inner(
        &mut self,
        now: Instant,
        room: &str,
        peer: &str,
        data: &str,
        local: &[(Protocol, SocketAddr)],
    ) -> Result<(), SfuError> {
        let msg: ClientData =
            serde_json::from_str(data).map_err(|e| SfuError::BadMessage(e.to_string()))?;
        match msg {
            ClientData::Offer { sdp } => self.handle_offer(now, room, peer, &sdp, local),
            ClientData::Answer { sdp } => {
                let id = self.part_id(room, peer)?;
                self.handle_answer(id, &sdp)
            }
            ClientData::View { mid, width, height } => {
                let id = self.part_id(room, peer)?;
                self.handle_view(now, id, &mid, width, height);
                Ok(())
            }
            ClientData::Candidate {} => Ok(()),
        }
    }

    fn part_id(&self, room: &str, peer: &str) -> Result<PartId, SfuError> {
        self.by_peer
            .get(&(room.to_owned(), peer.to_owned()))
            .copied()
            .ok_or_else(|| SfuError::BadMessage("send an `offer` first".into()))
    }

    fn handle_offer(
        &mut self,
        now: Instant,
        room: &str,
        peer: &str,
        sdp: &str,
        local: &[(Protocol, SocketAddr)],
    ) -> Result<(), SfuError> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::Sdp(e.to_string()))?;
        let fingerprint = fingerprint_of(sdp);
        let key = (room.to_owned(), peer.to_owned());
        // A new RTCPeerConnection (new DTLS fingerprint) or a dead one: start afresh.
        if let Some(&id) = self.by_peer.get(&key) {
            let stale = self
                .parts
                .get(&id)
                .is_some_and(|p| !p.rtc.is_alive() || p.fingerprint != fingerprint);
            if stale {
                self.remove_part(id);
            }
        }
        let (id, fresh) = match self.by_peer.get(&key) {
            Some(&id) => (id, false),
            None => (self.create_part(now, room, peer, local, fingerprint)?, true),
        };
        let Some(part) = self.parts.get_mut(&id) else {
            return Err(SfuError::BadMessage("participant vanished".into()));
        };
        let answer = match part.rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => {
                if fresh {
                    self.remove_part(id);
                }
                return Err(SfuError::Sdp(e.to_string()));
            }
        };
        // Our own pending offer (if any) is rolled back: redo it after this answer.
        roll_back(part);
        let ufrag = part.rtc.direct_api().local_ice_credentials().ufrag;
        self.demux.set_ufrag(id, &mut part.routes, ufrag);
        let ev = sdp_event(part, "answer", &answer.to_sdp_string());
        self.events.push_back(ev);
        self.mark(id);
        Ok(())
    }

    fn create_part(
        &mut self,
        now: Instant,
        room: &str,
        peer: &str,
        local: &[(Protocol, SocketAddr)],
        fingerprint: Option<String>,
    ) -> Result<PartId, SfuError> {
        if self.parts.len() >= self.config.max_participants {
            return Err(SfuError::Full);
        }
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .enable_bwe(Some(Bitrate::bps(self.config.initial_bitrate)))
            .build(now);
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
                Err(e) => tracing::debug!(%addr, "sfu: no candidate: {e}"),
            }
        }
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let id = PartId(self.next);
        self.next += 1;
        let mut routes = Routes::default();
        self.demux.set_ufrag(id, &mut routes, ufrag);
        self.by_peer.insert((room.to_owned(), peer.to_owned()), id);
        let r = self.rooms.entry(room.to_owned()).or_default();
        // Subscribe to what the others already publish.
        let mut tracks_out = Vec::new();
        for p in r.members.iter().filter_map(|m| self.parts.get(m)) {
            for tid in &p.tracks_in {
                if let Some(t) = self.tracks.get(tid) {
                    tracks_out.push(new_out(*tid, p.peer.clone(), t.kind));
                }
            }
        }
        r.members.push(id);
        self.parts.insert(
            id,
            Part {
                room: room.to_owned(),
                peer: peer.to_owned(),
                rtc,
                fingerprint,
                routes,
                pending: None,
                pending_since: None,
                channel: None,
                backlog: VecDeque::new(),
                tracks_in: Vec::new(),
                tracks_out,
                local: local.to_vec(),
                last_remote: None,
                timeout: now,
                estimate: None,
                ice: IceConnectionState::New,
                bytes_in: 0,
                bytes_out: 0,
                rate_in: Rate::new(now),
                rate_out: Rate::new(now),
            },
        );
        if self.next_tick.is_none() {
            self.next_tick = Some(now + self.config.tick);
        }
        // A newcomer learns who speaks now (changes come as they happen).
        let speaker = self
            .rooms
            .get(room)
            .and_then(|r| r.speaker.current())
            .and_then(|s| self.parts.get(&s))
            .map(|p| p.peer.clone());
        if let Some(speaker) = speaker {
            self.events.push_back(SfuEvent::ToPeer {
                room: room.to_owned(),
                peer: peer.to_owned(),
                data: serde_json::json!({"kind": "speaker", "peer": speaker}).to_string(),
            });
        }
        Ok(id)
    }

    fn handle_answer(&mut self, id: PartId, sdp: &str) -> Result<(), SfuError> {
        let Some(part) = self.parts.get_mut(&id) else {
            return Ok(());
        };
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| SfuError::Sdp(e.to_string()))?;
        part.pending_since = None;
        let Some(pending) = part.pending.take() else {
            // An answer to an offer we already withdrew (the client's own offer crossed it).
            return Ok(());
        };
        part.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| SfuError::Sdp(e.to_string()))?;
        for t in &mut part.tracks_out {
            if let OutState::Negotiating(m) = t.state {
                t.state = OutState::Open(m);
            }
        }
        part.tracks_out
            .retain(|t| !matches!(t.state, OutState::NegotiatingStop(_)));
        self.mark(id);
        Ok(())
    }

    fn handle_view(&mut self, now: Instant, id: PartId, mid: &str, width: u32, height: u32) {
        let Some(part) = self.parts.get_mut(&id) else {
            return;
        };
        let mid = Mid::from(mid);
        if let Some(t) = part
            .tracks_out
            .iter_mut()
            .find(|t| t.state.mid() == Some(mid))
        {
            t.view = Some((width.min(16_384), height.min(16_384)));
        }
        self.choose_layers(now, id);
    }

    /// Member `peer` left `room`: its connection stops, its tracks leave everyone else's.
    pub fn remove(&mut self, now: Instant, room: &str, peer: &str) {
        if let Some(id) = self
            .by_peer
            .get(&(room.to_owned(), peer.to_owned()))
            .copied()
        {
            self.remove_part(id);
            self.run(now);
        }
    }

    fn remove_part(&mut self, id: PartId) {
        let Some(mut part) = self.parts.remove(&id) else {
            return;
        };
        part.rtc.disconnect();
        // Flush what the disconnect produced (DTLS close alert, RTCP BYE).
        while let Ok(out) = part.rtc.poll_output() {
            match out {
                Output::Transmit(t) => self.transmits.push_back(t),
                Output::Timeout(_) => break,
                Output::Event(_) => {}
            }
        }
        self.by_peer.remove(&(part.room.clone(), part.peer.clone()));
        self.demux.forget(id, &part.routes);
        for t in &part.tracks_in {
            self.tracks.remove(t);
        }
        let mut speaker_gone = false;
        if let Some(r) = self.rooms.get_mut(&part.room) {
            r.members.retain(|m| *m != id);
            speaker_gone = r.speaker.remove(id);
            if r.members.is_empty() {
                self.rooms.remove(&part.room);
            }
        }
        if speaker_gone {
            self.events.push_back(SfuEvent::ToRoom {
                room: part.room.clone(),
                data: r#"{"kind":"speaker","peer":null}"#.to_owned(),
            });
        }
        // Stop the removed tracks at every subscriber.
        let members: Vec<PartId> = self
            .rooms
            .get(&part.room)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        for m in members {
            let Some(sub) = self.parts.get_mut(&m) else {
                continue;
            };
            if stop_tracks(sub, &part.tracks_in) {
                self.mark(m);
            }
        }
    }

    /// A datagram received on the SFU's socket (`proto` Udp) or a framed TCP connection.
    /// Returns whether a participant took it.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> bool {
        // A new source: only a STUN request naming a participant's ufrag may introduce it.
        let Some((id, known)) = self.demux.route(proto, source, data) else {
            return false;
        };
        let Some(p) = self.parts.get_mut(&id) else {
            return false;
        };
        let Some(input) = receive_input(now, proto, source, destination, &p.local, data) else {
            return false;
        };
        if !p.rtc.accepts(&input) {
            return false;
        }
        if !known {
            self.demux.learn(id, &mut p.routes, proto, source, 16);
        }
        p.bytes_in += data.len() as u64;
        p.rate_in.add(data.len());
        p.last_remote = Some((proto, source));
        self.totals.packets_in += 1;
        self.totals.bytes_in += data.len() as u64;
        if let Err(e) = p.rtc.handle_input(input) {
            tracing::debug!(peer = %p.peer, "sfu: input refused: {e}");
        }
        self.mark(id);
        self.run(now);
        true
    }

    /// When [`Sfu::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let parts = self.parts.values().map(|p| p.timeout).min();
        match (parts, self.next_tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drives timers: str0m's (retransmissions, RTCP, ICE keepalives, BWE) and our tick (layer
    /// choice, bitrates, active speaker).
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<PartId> = self
            .parts
            .iter()
            .filter(|(_, p)| p.timeout <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(p) = self.parts.get_mut(&id) {
                if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(peer = %p.peer, "sfu: timeout: {e}");
                }
                self.mark(id);
            }
        }
        if self.next_tick.is_some_and(|t| t <= now) {
            self.tick(now);
            self.next_tick = if self.parts.is_empty() {
                None
            } else {
                Some(now + self.config.tick)
            };
        }
        self.run(now);
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next signaling message to deliver.
    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.events.pop_front()
    }

    fn mark(&mut self, id: PartId) {
        if !self.dirty.contains(&id) {
            self.dirty.push(id);
        }
    }

    /// Drains every participant with work until nothing is left.
    fn run(&mut self, now: Instant) {
        let mut rounds = 0;
        while !self.dirty.is_empty() || !self.props.is_empty() {
            rounds += 1;
            if rounds > 10_000 {
                tracing::warn!("sfu: run loop did not settle");
                self.dirty.clear();
                self.props.clear();
                break;
            }
            while let Some(id) = self.dirty.pop() {
                self.drain(now, id);
            }
            while let Some(p) = self.props.pop_front() {
                self.propagate(now, p);
            }
        }
    }

    /// Polls one participant's output until its next timeout.
    fn drain(&mut self, now: Instant, id: PartId) {
        self.negotiate(now, id);
        loop {
            let Some(p) = self.parts.get_mut(&id) else {
                return;
            };
            let out = match p.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    tracing::debug!(peer = %p.peer, "sfu: connection failed: {e}");
                    p.rtc.disconnect();
                    p.timeout = now + Duration::from_secs(3600);
                    return;
                }
            };
            match out {
                Output::Timeout(t) => {
                    p.timeout = t;
                    return;
                }
                Output::Transmit(t) => {
                    p.bytes_out += t.contents.len() as u64;
                    p.rate_out.add(t.contents.len());
                    self.totals.packets_out += 1;
                    self.totals.bytes_out += t.contents.len() as u64;
                    self.transmits.push_back(t);
                }
                Output::Event(e) => self.handle_event(now, id, e),
            }
        }
    }

    fn handle_event(&mut self, now: Instant, id: PartId, e: Event) {
        match e {
            Event::IceConnectionStateChange(s) => {
                if let Some(p) = self.parts.get_mut(&id) {
                    p.ice = s;
                }
            }
            Event::MediaAdded(m) if m.direction.is_receiving() => {
                self.add_track_in(id, m.mid, m.kind);
            }
            Event::MediaChanged(m) => {
                if !m.direction.is_receiving() {
                    self.close_track_in(id, m.mid);
                } else {
                    let has = self.parts.get(&id).is_some_and(|p| {
                        p.tracks_in
                            .iter()
                            .any(|t| self.tracks.get(t).is_some_and(|t| t.mid == m.mid))
                    });
                    if !has {
                        let kind = self
                            .parts
                            .get(&id)
                            .and_then(|p| p.rtc.media(m.mid))
                            .map(|md| md.kind());
                        if let Some(kind) = kind {
                            self.add_track_in(id, m.mid, kind);
                        }
                    }
                }
            }
            Event::MediaData(d) => self.media_in(now, id, d),
            Event::KeyframeRequest(req) => {
                let Some(p) = self.parts.get(&id) else { return };
                let Some(out) = p.tracks_out.iter().find(|t| t.state.mid() == Some(req.mid)) else {
                    return;
                };
                let Some(t) = self.tracks.get(&out.track) else {
                    return;
                };
                // Nothing forwarded on it (paused: a hidden tile; or no layer chosen yet):
                // nothing to repair. Chromium asks for a keyframe about 3 s into a pause;
                // passed on, it would cost the publisher a keyframe nobody receives, for no
                // layer of a simulcast track. A layer chosen later starts with a keyframe.
                let Some(rid) = out.current.or(out.target) else {
                    return;
                };
                self.props.push_back(Prop::Keyframe {
                    publisher: t.owner,
                    track: out.track,
                    rid,
                    kind: req.kind,
                });
            }
            Event::ChannelOpen(cid, _label) => {
                if let Some(p) = self.parts.get_mut(&id) {
                    if p.channel.is_none() {
                        p.channel = Some(cid);
                        // What the room said while it was connecting.
                        let backlog = std::mem::take(&mut p.backlog);
                        if let Some(mut ch) = p.rtc.channel(cid) {
                            for (binary, data) in backlog {
                                if let Err(e) = ch.write(binary, &data) {
                                    tracing::debug!(peer = %p.peer, "sfu: channel write: {e}");
                                }
                            }
                        }
                    }
                }
            }
            Event::ChannelClose(cid) => {
                if let Some(p) = self.parts.get_mut(&id) {
                    if p.channel == Some(cid) {
                        p.channel = None;
                    }
                }
            }
            Event::ChannelData(d) => {
                let ours = self.parts.get(&id).is_some_and(|p| p.channel == Some(d.id));
                if ours {
                    self.props.push_back(Prop::Channel(id, d.binary, d.data));
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. })
            | Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) => {
                if let Some(p) = self.parts.get_mut(&id) {
                    p.estimate = Some(estimate.as_u64());
                }
            }
            _ => {}
        }
    }

    fn add_track_in(&mut self, owner: PartId, mid: Mid, kind: MediaKind) {
        // Every published track costs every other member a stream: a participant publishes a
        // few (camera, microphone, screen), never hundreds.
        if self
            .parts
            .get(&owner)
            .is_none_or(|p| p.tracks_in.len() >= MAX_TRACKS_IN)
        {
            tracing::debug!("sfu: track refused (publisher gone or at {MAX_TRACKS_IN} tracks)");
            return;
        }
        let tid = TrackId(self.next);
        self.next += 1;
        self.tracks.insert(
            tid,
            TrackIn {
                owner,
                mid,
                kind,
                layers: Vec::new(),
                loudness: Loudness::default(),
            },
        );
        if let Some(p) = self.parts.get_mut(&owner) {
            p.tracks_in.push(tid);
        }
        self.props.push_back(Prop::TrackOpened(tid));
    }

    fn close_track_in(&mut self, owner: PartId, mid: Mid) {
        let Some(p) = self.parts.get_mut(&owner) else {
            return;
        };
        let tracks = &self.tracks;
        let Some(pos) = p
            .tracks_in
            .iter()
            .position(|t| tracks.get(t).is_some_and(|t| t.mid == mid))
        else {
            return;
        };
        let tid = p.tracks_in.remove(pos);
        self.tracks.remove(&tid);
        let room = p.room.clone();
        let members = self
            .rooms
            .get(&room)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        for m in members {
            if let Some(sub) = self.parts.get_mut(&m) {
                if stop_tracks(sub, &[tid]) {
                    self.mark(m);
                }
            }
        }
    }

    fn media_in(&mut self, now: Instant, id: PartId, d: MediaData) {
        let Some(p) = self.parts.get(&id) else { return };
        let tracks = &self.tracks;
        let Some(tid) = p
            .tracks_in
            .iter()
            .copied()
            .find(|t| tracks.get(t).is_some_and(|t| t.mid == d.mid))
        else {
            return;
        };
        let Some(t) = self.tracks.get_mut(&tid) else {
            return;
        };
        let keyframe = d.is_keyframe();
        let layer = t.layer_mut(d.rid, now);
        layer.last_seen = now;
        layer.window_bytes += d.data.len() as u64;
        if keyframe {
            layer.keyframe_wanted = None;
            if let Some((w, h)) = vp8::keyframe_size(&d.data) {
                if (w, h) != (layer.width, layer.height) {
                    layer.width = w;
                    layer.height = h;
                    t.sort_layers();
                }
            }
        }
        if let Some(level) = d.ext_vals.audio_level {
            t.loudness.add(now, level);
        }
        if !d.contiguous && t.kind == MediaKind::Video {
            // A gap the publisher must repair with a keyframe.
            self.props.push_back(Prop::Keyframe {
                publisher: id,
                track: tid,
                rid: d.rid,
                kind: KeyframeRequestKind::Pli,
            });
        }
        self.props.push_back(Prop::Media(id, tid, d));
    }

    fn propagate(&mut self, now: Instant, p: Prop) {
        match p {
            Prop::Media(from, tid, d) => self.forward(now, from, tid, &d),
            Prop::Keyframe {
                publisher,
                track,
                rid,
                kind,
            } => self.request_keyframe(now, publisher, track, rid, kind),
            Prop::Channel(from, binary, data) => self.channel_out(from, binary, &data),
            Prop::TrackOpened(tid) => {
                let Some(t) = self.tracks.get(&tid) else {
                    return;
                };
                let (owner, kind) = (t.owner, t.kind);
                let Some(owner_part) = self.parts.get(&owner) else {
                    return;
                };
                let publisher = owner_part.peer.clone();
                let members = self
                    .rooms
                    .get(&owner_part.room)
                    .map(|r| r.members.clone())
                    .unwrap_or_default();
                for m in members {
                    if m == owner {
                        continue;
                    }
                    if let Some(sub) = self.parts.get_mut(&m) {
                        sub.tracks_out.push(new_out(tid, publisher.clone(), kind));
                        self.mark(m);
                    }
                }
            }
        }
    }

    fn request_keyframe(
        &mut self,
        now: Instant,
        publisher: PartId,
        track: TrackId,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
    ) {
        let min = self.config.keyframe_interval;
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        if t.kind != MediaKind::Video {
            return;
        }
        let mid = t.mid;
        // Only for a layer that arrives: an unknown `rid` must not become a layer (it would
        // count as active, unsized and costless, and stop the layers from being sorted).
        let Some(layer) = t.layers.iter_mut().find(|l| l.rid == rid) else {
            return;
        };
        if layer
            .last_keyframe_request
            .is_some_and(|at| now.saturating_duration_since(at) < min)
        {
            // Throttled, not forgotten: sent once the interval has passed (see `tick`).
            layer.keyframe_wanted = Some(kind);
            return;
        }
        layer.last_keyframe_request = Some(now);
        layer.keyframe_wanted = None;
        let Some(p) = self.parts.get_mut(&publisher) else {
            return;
        };
        if let Some(mut w) = p.rtc.writer(mid) {
            if w.is_request_keyframe_possible(kind) {
                if let Err(e) = w.request_keyframe(rid, kind) {
                    tracing::debug!("sfu: keyframe request: {e}");
                } else {
                    self.totals.keyframe_requests += 1;
                }
            }
        }
        self.mark(publisher);
    }

    fn forward(&mut self, now: Instant, from: PartId, tid: TrackId, d: &MediaData) {
        let Some(room) = self.parts.get(&from).map(|p| p.room.clone()) else {
            return;
        };
        let Some(members) = self.rooms.get(&room).map(|r| r.members.clone()) else {
            return;
        };
        let keyframe = d.is_keyframe();
        let is_video = self
            .tracks
            .get(&tid)
            .is_some_and(|t| t.kind == MediaKind::Video);
        for m in members {
            if m == from {
                continue;
            }
            let Some(sub) = self.parts.get_mut(&m) else {
                continue;
            };
            let Some(out) = sub.tracks_out.iter_mut().find(|t| t.track == tid) else {
                continue;
            };
            let OutState::Open(mid) = out.state else {
                continue;
            };
            if is_video {
                if out.target == Some(d.rid) && out.current != Some(d.rid) && keyframe {
                    // Switch layers here, on the new layer's keyframe; keep timestamps running.
                    out.current = Some(d.rid);
                    out.ts_offset = match out.last_out {
                        Some((last, at, freq)) if freq == d.time.denom() => {
                            let elapsed = now.saturating_duration_since(at).as_secs_f64();
                            let step = (elapsed * f64::from(freq)).max(1.0) as u64;
                            last.wrapping_add(step).wrapping_sub(d.time.numer())
                        }
                        _ => out.ts_offset,
                    };
                }
                if out.current != Some(d.rid) || out.target.is_none() {
                    continue;
                }
            }
            let Some(writer) = sub.rtc.writer(mid) else {
                continue;
            };
            let Some(pt) = writer.match_params(d.params) else {
                continue;
            };
            let ts = d.time.numer().wrapping_add(out.ts_offset);
            let time = MediaTime::new(ts, d.time.frequency());
            if let Err(e) = writer.write(pt, d.network_time, time, d.data.clone()) {
                tracing::debug!(peer = %sub.peer, "sfu: write: {e}");
                continue;
            }
            out.last_out = Some((ts, now, d.time.denom()));
            self.totals.frames_forwarded += 1;
            self.mark(m);
        }
    }

    fn channel_out(&mut self, from: PartId, binary: bool, data: &[u8]) {
        let Some(p) = self.parts.get(&from) else {
            return;
        };
        let room = p.room.clone();
        let payload: Vec<u8> = if binary {
            let mut v = Vec::with_capacity(8 + data.len());
            v.extend_from_slice(p.peer.as_bytes());
            v.extend_from_slice(data);
            v
        } else {
            let Ok(text) = std::str::from_utf8(data) else {
                return;
            };
            serde_json::json!({"from": p.peer, "data": text})
                .to_string()
                .into_bytes()
        };
        let members = self
            .rooms
            .get(&room)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        for m in members {
            if m == from {
                continue;
            }
            let Some(sub) = self.parts.get_mut(&m) else {
                continue;
            };
            let Some(cid) = sub.channel else {
                // Not open yet: keep a little for when it opens.
                let held: usize = sub.backlog.iter().map(|(_, d)| d.len()).sum();
                if sub.backlog.len() < BACKLOG_MESSAGES && held + payload.len() <= BACKLOG_BYTES {
                    sub.backlog.push_back((binary, payload.clone()));
                }
                continue;
            };
            if let Some(mut ch) = sub.rtc.channel(cid) {
                if let Err(e) = ch.write(binary, &payload) {
                    tracing::debug!(peer = %sub.peer, "sfu: channel write: {e}");
                }
            }
            self.mark(m);
        }
    }

    /// Offers pending track changes to participant `id`, when it can take an offer.
    fn negotiate(&mut self, now: Instant, id: PartId) {
        let Some(p) = self.parts.get_mut(&id) else {
            return;
        };
        if p.pending.is_some() || p.fingerprint.is_none() || !p.rtc.is_alive() {
            return;
        }
        let wants = p
            .tracks_out
            .iter()
            .any(|t| matches!(t.state, OutState::ToOpen | OutState::ToStop(_)));
        if !wants {
            return;
        }
        let mut change = p.rtc.sdp_api();
        for t in &mut p.tracks_out {
            match t.state {
                OutState::ToOpen => {
                    let mid = change.add_media(
                        t.kind,
                        Direction::SendOnly,
                        Some(t.publisher.clone()),
                        None,
                        None,
                    );
                    t.state = OutState::Negotiating(mid);
                }
                OutState::ToStop(mid) => {
                    change.stop_media(mid);
                    t.state = OutState::NegotiatingStop(mid);
                }
                _ => {}
            }
        }
        let Some((offer, pending)) = change.apply() else {
            return;
        };
        p.pending = Some(pending);
        p.pending_since = Some(now);
        let ev = sdp_event(p, "offer", &offer.to_sdp_string());
        self.events.push_back(ev);
    }

    fn tracks_json(p: &Part) -> serde_json::Value {
        let list: Vec<TrackEntry<'_>> = p
            .tracks_out
            .iter()
            .filter_map(|t| match t.state {
                OutState::Negotiating(m) | OutState::Open(m) => Some(TrackEntry {
                    mid: m.to_string(),
                    peer: &t.publisher,
                    kind: kind_str(t.kind),
                }),
                _ => None,
            })
            .collect();
        serde_json::to_value(list).unwrap_or(serde_json::Value::Null)
    }

    /// Periodic work: bitrates, layer choice, the active speaker.
    fn tick(&mut self, now: Instant) {
        let min = self.config.keyframe_interval;
        let mut retry = Vec::new();
        for (tid, t) in &self.tracks {
            for l in &t.layers {
                if let Some(kind) = l.keyframe_wanted {
                    if l.last_keyframe_request
                        .is_none_or(|at| now.saturating_duration_since(at) >= min)
                    {
                        retry.push((t.owner, *tid, l.rid, kind));
                    }
                }
            }
        }
        for (owner, tid, rid, kind) in retry {
            self.request_keyframe(now, owner, tid, rid, kind);
        }
        for t in self.tracks.values_mut() {
            let mut resort = false;
            for l in &mut t.layers {
                let dt = now.saturating_duration_since(l.window_start);
                if dt >= Duration::from_secs(1) {
                    l.bitrate = (l.window_bytes as f64 * 8.0 / dt.as_secs_f64()) as u64;
                    l.window_bytes = 0;
                    l.window_start = now;
                    resort = true;
                }
            }
            if resort {
                t.sort_layers();
            }
        }
        let mut stuck = Vec::new();
        for (id, p) in self.parts.iter_mut() {
            p.rate_in.roll(now);
            p.rate_out.roll(now);
            // An offer the client never answered (lost, or ignored by a client that broke
            // the negotiation rules): withdraw it and offer again.
            if p.pending_since
                .is_some_and(|t| now.saturating_duration_since(t) >= OFFER_TIMEOUT)
            {
                roll_back(p);
                stuck.push(*id);
            }
        }
        for id in stuck {
            self.mark(id);
        }
        let ids: Vec<PartId> = self.parts.keys().copied().collect();
        for id in ids {
            self.choose_layers(now, id);
        }
        // Active speaker per room.
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for name in rooms {
            let levels: Vec<(PartId, f64)> = {
                let Some(r) = self.rooms.get(&name) else {
                    continue;
                };
                r.members
                    .iter()
                    .map(|m| {
                        let loud = self
                            .parts
                            .get(m)
                            .map(|p| {
                                p.tracks_in
                                    .iter()
                                    .filter_map(|t| self.tracks.get(t))
                                    .filter(|t| t.kind == MediaKind::Audio)
                                    .map(|t| t.loudness.value(now))
                                    .fold(0.0, f64::max)
                            })
                            .unwrap_or(0.0);
                        (*m, loud)
                    })
                    .collect()
            };
            let Some(r) = self.rooms.get_mut(&name) else {
                continue;
            };
            if let Some(who) = r.speaker.tick(now, &levels) {
                if let Some(p) = self.parts.get(&who) {
                    self.events.push_back(SfuEvent::ToRoom {
                        room: name.clone(),
                        data: serde_json::json!({"kind": "speaker", "peer": p.peer}).to_string(),
                    });
                }
            }
        }
    }

    /// Chooses the layer of every video track participant `id` receives; asks publishers for
    /// keyframes where a switch waits for one.
    fn choose_layers(&mut self, now: Instant, id: PartId) {
        let Some(p) = self.parts.get(&id) else { return };
        let mut idx = Vec::new();
        let mut wants = Vec::new();
        let mut audio = 0u64;
        for (i, out) in p.tracks_out.iter().enumerate() {
            if !matches!(out.state, OutState::Open(_)) {
                continue;
            }
            let Some(t) = self.tracks.get(&out.track) else {
                continue;
            };
            if t.kind == MediaKind::Audio {
                audio += 64_000;
                continue;
            }
            idx.push(i);
            wants.push(Want {
                layers: t.layers.iter().map(|l| l.info(now)).collect(),
                view: out.view,
            });
        }
        let budget = p
            .estimate
            .map(|e| (e.saturating_mul(9) / 10).saturating_sub(audio));
        let chosen = layers::choose(&wants, budget);
        let mut requests = Vec::new();
        let mut desired_total = 0u64;
        let Some(p) = self.parts.get_mut(&id) else {
            return;
        };
        for ((i, c), want) in idx.into_iter().zip(chosen).zip(&wants) {
            let out = &mut p.tracks_out[i];
            let Some(t) = self.tracks.get(&out.track) else {
                continue;
            };
            let target = c.map(|li| t.layers[li].rid);
            if let Some(li) = layers::wanted(want) {
                desired_total += want.layers[li].bitrate;
            }
            if target.is_none() {
                // Paused (or nothing arriving).
                out.target = None;
                out.current = None;
                continue;
            }
            if out.target != target {
                out.target = target;
            }
            if out.current != out.target {
                requests.push((t.owner, out.track, target.flatten()));
            }
        }
        if desired_total > 0 {
            let min = Bitrate::bps(desired_total.min(self.config.initial_bitrate));
            let desired = Bitrate::bps(desired_total.saturating_add(audio));
            p.rtc.bwe().set_bitrate(min, desired);
        }
        for (publisher, track, rid) in requests {
            self.request_keyframe(now, publisher, track, rid, KeyframeRequestKind::Pli);
        }
    }

    /// Totals for metrics.
    pub fn totals(&self) -> SfuTotals {
        let mut t = self.totals;
        t.rooms = self.rooms.len();
        t.participants = self.parts.len();
        t.tracks_in = self.tracks.len();
        t.tracks_out = self
            .parts
            .values()
            .map(|p| {
                p.tracks_out
                    .iter()
                    .filter(|o| {
                        o.current.is_some()
                            || (o.kind == MediaKind::Audio && matches!(o.state, OutState::Open(_)))
                    })
                    .count()
            })
            .sum();
        t
    }

    /// Per-room figures.
    pub fn room_stats(&self) -> Vec<RoomStats> {
        let mut out: Vec<RoomStats> = self
            .rooms
            .iter()
            .map(|(name, r)| {
                let parts = r.members.iter().filter_map(|m| self.parts.get(m));
                let (mut tin, mut bin, mut bout) = (0, 0, 0);
                for p in parts {
                    tin += p.tracks_in.len();
                    bin += p.rate_in.bps;
                    bout += p.rate_out.bps;
                }
                RoomStats {
                    room: name.clone(),
                    participants: r.members.len(),
                    tracks: tin,
                    bitrate_out: bout,
                    bitrate_in: bin,
                    speaker: r
                        .speaker
                        .current()
                        .and_then(|s| self.parts.get(&s))
                        .map(|p| p.peer.clone()),
                }
            })
            .collect();
        out.sort_by(|a, b| a.room.cmp(&b.room));
        out
    }

    /// Per-participant figures of `room`.
    pub fn peer_stats(&self, room: &str, now: Instant) -> Vec<PeerStats> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        r.members
            .iter()
            .filter_map(|m| self.parts.get(m))
            .map(|p| PeerStats {
                room: p.room.clone(),
                peer: p.peer.clone(),
                ice: ice_str(p.ice).to_owned(),
                remote: p.last_remote.map(|(_, a)| a.to_string()),
                protocol: p.last_remote.map(|(pr, _)| proto_str(pr).to_owned()),
                bitrate_in: p.rate_in.bps,
                bitrate_out: p.rate_out.bps,
                bandwidth_estimate: p.estimate,
                publishing: p
                    .tracks_in
                    .iter()
                    .filter_map(|t| self.tracks.get(t))
                    .map(|t| TrackStats {
                        kind: kind_str(t.kind),
                        layers: t
                            .layers
                            .iter()
                            .filter(|l| l.info(now).active)
                            .map(|l| {
                                (
                                    l.rid.map(|r| r.to_string()).unwrap_or_default(),
                                    l.width,
                                    l.height,
                                    l.bitrate,
                                )
                            })
                            .collect(),
                    })
                    .collect(),
                receiving: p
                    .tracks_out
                    .iter()
                    .map(|o| SubscriptionStats {
                        publisher: o.publisher.clone(),
                        kind: kind_str(o.kind),
                        mid: o.state.mid().map(|m| m.to_string()),
                        layer: o
                            .current
                            .map(|r| r.map(|r| r.to_string()).unwrap_or_default()),
                        view: o.view,
                    })
                    .collect(),
            })
            .collect()
    }
}

/// The `answer` / `offer` message for `part`: the SDP (candidates marked complete) and the
/// tracks it receives.
fn sdp_event(part: &Part, kind: &str, sdp: &str) -> SfuEvent {
    let data = serde_json::json!({
        "kind": kind,
        "sdp": complete_candidates(sdp),
        "tracks": Sfu::tracks_json(part),
    })
    .to_string();
    SfuEvent::ToPeer {
        room: part.room.clone(),
        peer: part.peer.clone(),
        data,
    }
}

/// Forgets our pending offer: what it added is to be offered again, what it stopped to be
/// stopped again.
fn roll_back(part: &mut Part) {
    part.pending = None;
    part.pending_since = None;
    for t in &mut part.tracks_out {
        match t.state {
            OutState::Negotiating(_) => t.state = OutState::ToOpen,
            OutState::NegotiatingStop(m) => t.state = OutState::ToStop(m),
            _ => {}
        }
    }
}

/// Stops forwarding `tracks` to `sub`: never-offered ones are forgotten, offered ones are
/// stopped in the next offer. Returns whether anything changed.
fn stop_tracks(sub: &mut Part, tracks: &[TrackId]) -> bool {
    let before = sub.tracks_out.len();
    sub.tracks_out
        .retain(|t| !(tracks.contains(&t.track) && t.state == OutState::ToOpen));
    let mut changed = sub.tracks_out.len() != before;
    for t in &mut sub.tracks_out {
        if tracks.contains(&t.track) {
            if let OutState::Negotiating(x) | OutState::Open(x) = t.state {
                t.state = OutState::ToStop(x);
                t.current = None;
                t.target = None;
                changed = true;
            }
        }
    }
    changed
}

fn new_out(track: TrackId, publisher: String, kind: MediaKind) -> TrackOut {
    TrackOut {
        track,
        publisher,
        kind,
        state: OutState::ToOpen,
        current: None,
        target: None,
        view: None,
        ts_offset: 0,
        last_out: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keyframe request names a layer that arrives, or is dropped: an unknown `rid` (none
    /// for a simulcast track: what a paused subscription would have asked for) must not add a
    /// phantom layer that counts as active and keeps the layers from being sorted.
    #[test]
    fn keyframe_request_for_an_unknown_layer_adds_no_layer() {
        let now = Instant::now();
        let mut sfu = Sfu::new(SfuConfig::default());
        let mut t = TrackIn {
            owner: PartId(1),
            mid: Mid::from("v"),
            kind: MediaKind::Video,
            layers: Vec::new(),
            loudness: Loudness::default(),
        };
        for (rid, width) in [("h", 320), ("f", 640)] {
            let l = t.layer_mut(Some(Rid::from(rid)), now);
            l.width = width;
            l.height = width * 3 / 4;
        }
        let tid = TrackId(7);
        sfu.tracks.insert(tid, t);

        let pli = KeyframeRequestKind::Pli;
        sfu.request_keyframe(now, PartId(1), tid, None, pli);
        sfu.request_keyframe(now, PartId(1), tid, Some(Rid::from("q")), pli);
        let layers = &sfu.tracks[&tid].layers;
        assert_eq!(layers.len(), 2, "no layer for an unknown rid");
        assert!(layers.iter().all(|l| l.last_keyframe_request.is_none()));

        sfu.request_keyframe(now, PartId(1), tid, Some(Rid::from("h")), pli);
        let layers = &sfu.tracks[&tid].layers;
        assert_eq!(layers.len(), 2);
        assert_eq!(
            layers[0].last_keyframe_request,
            Some(now),
            "a known layer is asked"
        );
    }
}
