//! Prometheus metrics with an explicit registry and bounded label sets.
//!
//! Every labelled child is created once in [`Metrics::new`] and stored in a field, so the hot path
//! only touches an atomic: no hashing, no locking, no allocation. Labels are drawn from small fixed
//! sets (direction, method, transport, reason, error code); nothing is ever labelled with a user
//! name or an address.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// Transport a STUN/TURN request arrived on (`transport` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportLabel {
    Udp,
    Tcp,
    Tls,
}

impl TransportLabel {
    pub const ALL: [TransportLabel; 3] = [Self::Udp, Self::Tcp, Self::Tls];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

/// Why a client was refused or not answered by a limit (`reason` label of
/// `icebreaker_refusals_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A UDP answer to an unauthenticated request not sent: it would pass the reply budget.
    TurnUnauthReplyBudget,
    /// Allocate refused by the per-address allocation rate (486).
    TurnAllocateRate,
    /// Allocate refused by the user's quota (486).
    TurnUserQuota,
    /// Allocate refused by the server's capacity (508).
    TurnCapacity,
    /// Allocate refused while draining (300 / 508).
    TurnDraining,
    /// TCP/TLS connection closed at once: over the address's connection rate.
    ConnRate,
    /// TCP/TLS connection closed at once: the address has too many open.
    ConnsPerIp,
    /// Signaling join refused by the per-address join rate.
    JoinRate,
    /// Signaling join refused while draining.
    JoinDraining,
    /// Signaling message refused by the per-connection message rate.
    SignalRate,
}

impl Refusal {
    pub const ALL: [Refusal; 10] = [
        Self::TurnUnauthReplyBudget,
        Self::TurnAllocateRate,
        Self::TurnUserQuota,
        Self::TurnCapacity,
        Self::TurnDraining,
        Self::ConnRate,
        Self::ConnsPerIp,
        Self::JoinRate,
        Self::JoinDraining,
        Self::SignalRate,
    ];
    /// The TURN refusals in the order of `icebreaker_turn::Stats::REFUSALS`.
    pub const TURN: [Refusal; 5] = [
        Self::TurnUnauthReplyBudget,
        Self::TurnAllocateRate,
        Self::TurnUserQuota,
        Self::TurnCapacity,
        Self::TurnDraining,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TurnUnauthReplyBudget => "turn_unauth_reply_budget",
            Self::TurnAllocateRate => "turn_allocate_rate",
            Self::TurnUserQuota => "turn_user_quota",
            Self::TurnCapacity => "turn_capacity",
            Self::TurnDraining => "turn_draining",
            Self::ConnRate => "conn_rate",
            Self::ConnsPerIp => "conns_per_ip",
            Self::JoinRate => "join_rate",
            Self::JoinDraining => "join_draining",
            Self::SignalRate => "signal_rate",
        }
    }
}

/// Why a request failed authentication (`reason` label of `icebreaker_turn_auth_failures_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No MESSAGE-INTEGRITY / USERNAME (the normal first 401 of every allocation is counted here).
    Missing,
    BadIntegrity,
    UnknownUser,
    StaleNonce,
    /// TURN REST username whose expiry timestamp has passed.
    Expired,
    WrongRealm,
}

impl AuthFailure {
    pub const ALL: [AuthFailure; 6] = [
        Self::Missing,
        Self::BadIntegrity,
        Self::UnknownUser,
        Self::StaleNonce,
        Self::Expired,
        Self::WrongRealm,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::BadIntegrity => "bad_integrity",
            Self::UnknownUser => "unknown_user",
            Self::StaleNonce => "stale_nonce",
            Self::Expired => "expired",
            Self::WrongRealm => "wrong_realm",
        }
    }
}

/// Why a packet was dropped without an answer (`reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    Malformed,
    NoAllocation,
    NoPermission,
    Other,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        Self::Malformed,
        Self::NoAllocation,
        Self::NoPermission,
        Self::Other,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::NoAllocation => "no_allocation",
            Self::NoPermission => "no_permission",
            Self::Other => "other",
        }
    }
}

/// Direction of relayed data (`direction` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    ClientToPeer,
    PeerToClient,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientToPeer => "client_to_peer",
            Self::PeerToClient => "peer_to_client",
        }
    }
}

/// `method` label values, in the index order of [`Metrics::stun_requests`].
pub const METHOD_LABELS: [&str; 7] = [
    "binding",
    "allocate",
    "refresh",
    "create_permission",
    "channel_bind",
    "send",
    "other",
];

/// Index into [`METHOD_LABELS`] for a STUN method number (RFC 8489 / RFC 8656).
pub fn method_index(method: u16) -> usize {
    match method {
        0x001 => 0, // Binding
        0x003 => 1, // Allocate
        0x004 => 2, // Refresh
        0x008 => 3, // CreatePermission
        0x009 => 4, // ChannelBind
        0x006 => 5, // Send (indication)
        _ => 6,
    }
}

/// Error codes that get their own `code` label; everything else is counted as `code="other"`.
pub const ERROR_CODES: [u16; 16] = [
    300, 400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 446, 447, 486, 500, 508,
];

fn error_code_index(code: u16) -> usize {
    ERROR_CODES
        .iter()
        .position(|&c| c == code)
        .unwrap_or(ERROR_CODES.len())
}

/// A pair of counters labelled `direction="client_to_peer"` / `"peer_to_client"`.
#[derive(Clone, Debug, Default)]
pub struct DirectionCounters {
    pub client_to_peer: Counter,
    pub peer_to_client: Counter,
}

impl DirectionCounters {
    pub fn get(&self, d: Direction) -> &Counter {
        match d {
            Direction::ClientToPeer => &self.client_to_peer,
            Direction::PeerToClient => &self.peer_to_client,
        }
    }
}

/// All server metrics. Share it as `Arc<Metrics>`; every public field is a pre-created child
/// (an `Arc` around an atomic) that may also be cloned out and kept by a hot loop.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `icebreaker_cluster_up`: 1 while Redis answers the heartbeats (cluster mode).
    pub cluster_up: Gauge,
    /// `icebreaker_cluster_nodes`: live nodes in the cluster.
    pub cluster_nodes: Gauge,
    /// `icebreaker_turn_allocations`: allocations currently alive.
    pub allocations: Gauge,
    /// `icebreaker_turn_permissions`: permissions currently installed (all allocations).
    pub permissions: Gauge,
    /// `icebreaker_turn_channels`: channel bindings currently alive (all allocations).
    pub channels: Gauge,
    /// `icebreaker_turn_allocations_created_total`.
    pub allocations_created: Counter,
    /// `icebreaker_turn_relayed_packets_total{direction}`.
    pub relayed_packets: DirectionCounters,
    /// `icebreaker_turn_relayed_bytes_total{direction}` (application payload bytes).
    pub relayed_bytes: DirectionCounters,
    /// `icebreaker_turn_auth_failures_total{reason}`, indexed like [`AuthFailure::ALL`].
    pub auth_failures: [Counter; 6],
    /// `icebreaker_stun_requests_total{method,transport}`, indexed
    /// `[method_index(method)][TransportLabel as usize]`.
    pub stun_requests: [[Counter; 3]; 7],
    /// `icebreaker_turn_error_responses_total{code}`, indexed like [`ERROR_CODES`], last = "other".
    pub error_responses: [Counter; 17],
    /// `icebreaker_turn_dropped_packets_total{reason}`, indexed like [`DropReason::ALL`].
    pub dropped_packets: [Counter; 4],
    /// `icebreaker_turn_peer_denied_total`: permissions/sends refused by the peer address policy.
    pub peer_denied: Counter,
    /// `icebreaker_signal_sessions`: signaling sessions alive (attached or in their grace period).
    pub signal_sessions: Gauge,
    /// `icebreaker_signal_sessions_attached`: signaling sessions with a connection attached.
    pub signal_sessions_attached: Gauge,
    /// `icebreaker_signal_rooms`: signaling rooms.
    pub signal_rooms: Gauge,
    /// `icebreaker_signal_buffered_bytes`: bytes of unacknowledged messages held.
    pub signal_buffered_bytes: Gauge,
    /// `icebreaker_signal_messages_total{direction}`: signaling messages, `[in, out]`
    /// (client → server, server → client; keepalives not counted).
    pub signal_messages: [Counter; 2],
    /// `icebreaker_signal_bytes_total{direction}`: their bytes, `[in, out]`.
    pub signal_bytes: [Counter; 2],
    /// `icebreaker_signal_call_messages`: messages per call (both directions), observed when
    /// a call ends on this node.
    pub signal_call_messages: Histogram,
    /// `icebreaker_signal_call_bytes`: bytes per call (both directions).
    pub signal_call_bytes: Histogram,
    /// `icebreaker_refusals_total{reason}`, indexed like [`Refusal::ALL`].
    pub refusals: [Counter; 10],
    /// `icebreaker_draining`: 1 while the server drains.
    pub draining: Gauge,
    /// `icebreaker_sfu_*`.
    pub sfu: SfuMetrics,
    /// `icebreaker_sip_*`.
    pub sip: SipMetrics,
}

/// The SIP gateway's series, refreshed at each scrape.
#[derive(Debug)]
pub struct SipMetrics {
    flows: Gauge,
    bridged: Gauge,
    dialed: Gauge,
    legs: Gauge,
    groups: Gauge,
    /// `[sip in, sip out, webrtc in, webrtc out]`.
    packets: [Counter; 4],
    bytes: [Counter; 4],
    last: parking_lot::Mutex<crate::sfu::BridgeCounters>,
}

impl SipMetrics {
    fn new(registry: &mut Registry) -> Self {
        let g = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let flows = g(
            registry,
            "icebreaker_sip_flows",
            "SIP over WebSocket connections open at /sip",
        );
        let calls = Family::<Labels1, Gauge>::default();
        registry.register(
            "icebreaker_sip_calls",
            "Calls with media through the SIP gateway: kind bridged (/sip clients), dialed (the server's own UA)",
            calls.clone(),
        );
        let bridged = calls.get_or_create(&[("kind", "bridged")]).clone();
        let dialed = calls.get_or_create(&[("kind", "dialed")]).clone();
        let legs = g(
            registry,
            "icebreaker_sip_media_legs",
            "WebRTC connections of browsers to the SIP gateway's media bridge",
        );
        let groups = g(
            registry,
            "icebreaker_sip_media_groups",
            "Dialed calls the media bridge mixes for (one per phone in a room)",
        );
        let fam = |registry: &mut Registry, name: &str, help: &str| {
            let f = Family::<Labels2, Counter>::default();
            registry.register(name, help, f.clone());
            [
                ("sip", "in"),
                ("sip", "out"),
                ("webrtc", "in"),
                ("webrtc", "out"),
            ]
            .map(|(side, dir)| {
                f.get_or_create(&[("side", side), ("direction", dir)])
                    .clone()
            })
        };
        let packets = fam(
            registry,
            "icebreaker_sip_media_packets",
            "Datagrams of the media bridge: side sip (plain RTP) or webrtc (SRTP, RTCP, ICE, DTLS), direction in or out",
        );
        let bytes = fam(
            registry,
            "icebreaker_sip_media_bytes",
            "Bytes of the media bridge, by side and direction",
        );
        SipMetrics {
            flows,
            bridged,
            dialed,
            legs,
            groups,
            packets,
            bytes,
            last: parking_lot::Mutex::new(crate::sfu::BridgeCounters::default()),
        }
    }

    /// Takes the gateway's figures: open flows, calls, and the bridge's counters.
    pub fn update(
        &self,
        flows: usize,
        bridged: usize,
        dialed: usize,
        c: &crate::sfu::BridgeCounters,
    ) {
        self.flows.set(gauge_i64(flows as u64));
        self.bridged.set(gauge_i64(bridged as u64));
        self.dialed.set(gauge_i64(dialed as u64));
        self.legs.set(gauge_i64(c.legs as u64));
        self.groups.set(gauge_i64(c.groups as u64));
        let mut last = self.last.lock();
        let d = |now: u64, before: u64| now.saturating_sub(before);
        let now_p = [
            c.sip_packets_in,
            c.sip_packets_out,
            c.webrtc_packets_in,
            c.webrtc_packets_out,
        ];
        let was_p = [
            last.sip_packets_in,
            last.sip_packets_out,
            last.webrtc_packets_in,
            last.webrtc_packets_out,
        ];
        let now_b = [
            c.sip_bytes_in,
            c.sip_bytes_out,
            c.webrtc_bytes_in,
            c.webrtc_bytes_out,
        ];
        let was_b = [
            last.sip_bytes_in,
            last.sip_bytes_out,
            last.webrtc_bytes_in,
            last.webrtc_bytes_out,
        ];
        for i in 0..4 {
            self.packets[i].inc_by(d(now_p[i], was_p[i]));
            self.bytes[i].inc_by(d(now_b[i], was_b[i]));
        }
        *last = *c;
    }
}

/// Rooms that get per-room SFU series at most (the largest ones), so that label sets stay
/// bounded however many rooms exist.
pub const SFU_METRICS_ROOMS: usize = 100;

type RoomLabel = Vec<(String, String)>;

/// The SFU's series, refreshed from its snapshot at each scrape.
#[derive(Debug)]
pub struct SfuMetrics {
    rooms: Gauge,
    participants: Gauge,
    tracks_published: Gauge,
    tracks_forwarded: Gauge,
    packets: InOut,
    bytes: InOut,
    frames_forwarded: Counter,
    keyframe_requests: Counter,
    room_participants: Family<RoomLabel, Gauge>,
    room_tracks: Family<RoomLabel, Gauge>,
    room_bitrate_out: Family<RoomLabel, Gauge>,
    room_bitrate_in: Family<RoomLabel, Gauge>,
    /// Totals at the previous scrape (counters advance by the difference).
    last: parking_lot::Mutex<icebreaker_sfu::SfuTotals>,
}

/// A counter pair by `direction` (`in`, `out`).
#[derive(Debug)]
struct InOut {
    inbound: Counter,
    outbound: Counter,
}

const SFU_COUNTERS: [&str; 4] = [
    "icebreaker_sfu_packets",
    "icebreaker_sfu_bytes",
    "icebreaker_sfu_frames_forwarded",
    "icebreaker_sfu_keyframe_requests",
];

fn gauge_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl SfuMetrics {
    fn new(registry: &mut Registry) -> Self {
        let g = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let rooms = g(
            registry,
            "icebreaker_sfu_rooms",
            "Rooms with participants on the SFU",
        );
        let participants = g(
            registry,
            "icebreaker_sfu_participants",
            "Participants connected to the SFU",
        );
        let tracks_published = g(
            registry,
            "icebreaker_sfu_tracks_published",
            "Tracks published to the SFU",
        );
        let tracks_forwarded = g(
            registry,
            "icebreaker_sfu_tracks_forwarded",
            "Tracks the SFU forwards (one per subscriber per track)",
        );
        let dir = |registry: &mut Registry, name: &'static str, help: &str| {
            let fam = Family::<Labels1, Counter>::default();
            registry.register(name, help, fam.clone());
            let inbound = fam.get_or_create(&[("direction", "in")]).clone();
            let outbound = fam.get_or_create(&[("direction", "out")]).clone();
            InOut { inbound, outbound }
        };
        let packets = dir(
            registry,
            SFU_COUNTERS[0],
            "Datagrams the SFU received (in) and sent (out)",
        );
        let bytes = dir(
            registry,
            SFU_COUNTERS[1],
            "Bytes the SFU received (in) and sent (out)",
        );
        let frames_forwarded = Counter::default();
        registry.register(
            SFU_COUNTERS[2],
            "Media frames forwarded (one per subscriber)",
            frames_forwarded.clone(),
        );
        let keyframe_requests = Counter::default();
        registry.register(
            SFU_COUNTERS[3],
            "Keyframe requests (PLI/FIR) sent to publishers",
            keyframe_requests.clone(),
        );
        let fam = |registry: &mut Registry, name: &str, help: &str| {
            let f = Family::<RoomLabel, Gauge>::default();
            registry.register(name, help, f.clone());
            f
        };
        let room_participants = fam(
            registry,
            "icebreaker_sfu_room_participants",
            "Participants per SFU room (the largest rooms only)",
        );
        let room_tracks = fam(
            registry,
            "icebreaker_sfu_room_tracks",
            "Published tracks per SFU room (the largest rooms only)",
        );
        let room_bitrate_out = fam(
            registry,
            "icebreaker_sfu_room_bitrate_out",
            "Bits per second the SFU sends to a room's participants (the largest rooms only)",
        );
        let room_bitrate_in = fam(
            registry,
            "icebreaker_sfu_room_bitrate_in",
            "Bits per second the SFU receives from a room's participants (the largest rooms only)",
        );
        SfuMetrics {
            rooms,
            participants,
            tracks_published,
            tracks_forwarded,
            packets,
            bytes,
            frames_forwarded,
            keyframe_requests,
            room_participants,
            room_tracks,
            room_bitrate_out,
            room_bitrate_in,
            last: parking_lot::Mutex::new(icebreaker_sfu::SfuTotals::default()),
        }
    }

    /// Takes the SFU's latest figures.
    pub fn update(&self, snap: &crate::sfu::Snapshot) {
        let t = &snap.totals;
        self.rooms.set(gauge_i64(t.rooms as u64));
        self.participants.set(gauge_i64(t.participants as u64));
        self.tracks_published.set(gauge_i64(t.tracks_in as u64));
        self.tracks_forwarded.set(gauge_i64(t.tracks_out as u64));
        {
            let mut last = self.last.lock();
            let d = |now: u64, before: u64| now.saturating_sub(before);
            self.packets
                .inbound
                .inc_by(d(t.packets_in, last.packets_in));
            self.packets
                .outbound
                .inc_by(d(t.packets_out, last.packets_out));
            self.bytes.inbound.inc_by(d(t.bytes_in, last.bytes_in));
            self.bytes.outbound.inc_by(d(t.bytes_out, last.bytes_out));
            self.frames_forwarded
                .inc_by(d(t.frames_forwarded, last.frames_forwarded));
            self.keyframe_requests
                .inc_by(d(t.keyframe_requests, last.keyframe_requests));
            *last = *t;
        }
        self.room_participants.clear();
        self.room_tracks.clear();
        self.room_bitrate_out.clear();
        self.room_bitrate_in.clear();
        let mut rooms: Vec<&icebreaker_sfu::RoomStats> = snap.rooms.iter().collect();
        rooms.sort_by(|a, b| {
            b.participants
                .cmp(&a.participants)
                .then(a.room.cmp(&b.room))
        });
        for r in rooms.into_iter().take(SFU_METRICS_ROOMS) {
            let l = vec![("room".to_string(), r.room.clone())];
            self.room_participants
                .get_or_create(&l)
                .set(gauge_i64(r.participants as u64));
            self.room_tracks
                .get_or_create(&l)
                .set(gauge_i64(r.tracks as u64));
            self.room_bitrate_out
                .get_or_create(&l)
                .set(gauge_i64(r.bitrate_out));
            self.room_bitrate_in
                .get_or_create(&l)
                .set(gauge_i64(r.bitrate_in));
        }
    }
}

/// Counter families are registered without the `_total` suffix (prometheus-client appends it to
/// the samples); [`Metrics::encode`] adds it back to the HELP/TYPE lines for the 0.0.4 format.
const COUNTER_NAMES: [&str; 7] = [
    "icebreaker_turn_allocations_created",
    "icebreaker_turn_relayed_packets",
    "icebreaker_turn_relayed_bytes",
    "icebreaker_turn_auth_failures",
    "icebreaker_stun_requests",
    "icebreaker_turn_error_responses",
    "icebreaker_turn_dropped_packets",
];
const PEER_DENIED: &str = "icebreaker_turn_peer_denied";
const REFUSALS: &str = "icebreaker_refusals";
/// Signaling counters (their HELP/TYPE lines get `_total` too).
const SIGNAL_COUNTERS: [&str; 2] = ["icebreaker_signal_messages", "icebreaker_signal_bytes"];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();

        let allocations = Gauge::default();
        registry.register(
            "icebreaker_turn_allocations",
            "TURN allocations currently alive",
            allocations.clone(),
        );
        let permissions = Gauge::default();
        registry.register(
            "icebreaker_turn_permissions",
            "TURN permissions currently installed",
            permissions.clone(),
        );
        let channels = Gauge::default();
        registry.register(
            "icebreaker_turn_channels",
            "TURN channel bindings currently alive",
            channels.clone(),
        );
        let allocations_created = Counter::default();
        registry.register(
            COUNTER_NAMES[0],
            "TURN allocations created",
            allocations_created.clone(),
        );

        let direction_family = |registry: &mut Registry, name: &'static str, help: &str| {
            let fam = Family::<Labels1, Counter>::default();
            registry.register(name, help, fam.clone());
            let client_to_peer = fam
                .get_or_create(&[("direction", Direction::ClientToPeer.as_str())])
                .clone();
            let peer_to_client = fam
                .get_or_create(&[("direction", Direction::PeerToClient.as_str())])
                .clone();
            DirectionCounters {
                client_to_peer,
                peer_to_client,
            }
        };
        let relayed_packets = direction_family(
            &mut registry,
            COUNTER_NAMES[1],
            "Packets relayed between TURN clients and peers",
        );
        let relayed_bytes = direction_family(
            &mut registry,
            COUNTER_NAMES[2],
            "Payload bytes relayed between TURN clients and peers",
        );

        let fam = Family::<Labels1, Counter>::default();
        registry.register(
            COUNTER_NAMES[3],
            "Requests that failed authentication, by reason",
            fam.clone(),
        );
        let auth_failures =
            AuthFailure::ALL.map(|r| fam.get_or_create(&[("reason", r.as_str())]).clone());

        let fam = Family::<Labels2, Counter>::default();
        registry.register(
            COUNTER_NAMES[4],
            "STUN/TURN requests and indications received, by method and transport",
            fam.clone(),
        );
        let stun_requests = METHOD_LABELS.map(|m| {
            TransportLabel::ALL.map(|t| {
                fam.get_or_create(&[("method", m), ("transport", t.as_str())])
                    .clone()
            })
        });

        let fam = Family::<Labels1, Counter>::default();
        registry.register(
            COUNTER_NAMES[5],
            "STUN/TURN error responses sent, by error code",
            fam.clone(),
        );
        let code_labels: [&'static str; 17] = [
            "300", "400", "401", "403", "420", "437", "438", "440", "441", "442", "443", "446",
            "447", "486", "500", "508", "other",
        ];
        let error_responses = code_labels.map(|c| fam.get_or_create(&[("code", c)]).clone());

        let fam = Family::<Labels1, Counter>::default();
        registry.register(
            COUNTER_NAMES[6],
            "Packets dropped without an answer, by reason",
            fam.clone(),
        );
        let dropped_packets =
            DropReason::ALL.map(|r| fam.get_or_create(&[("reason", r.as_str())]).clone());

        let peer_denied = Counter::default();
        registry.register(
            PEER_DENIED,
            "Peer addresses refused by the allow/deny policy",
            peer_denied.clone(),
        );

        let signal_sessions = Gauge::default();
        registry.register(
            "icebreaker_signal_sessions",
            "Signaling sessions alive (attached or in their grace period)",
            signal_sessions.clone(),
        );
        let signal_sessions_attached = Gauge::default();
        registry.register(
            "icebreaker_signal_sessions_attached",
            "Signaling sessions with a connection attached",
            signal_sessions_attached.clone(),
        );
        let signal_buffered_bytes = Gauge::default();
        registry.register(
            "icebreaker_signal_buffered_bytes",
            "Bytes of unacknowledged signaling messages held for resume (all sessions)",
            signal_buffered_bytes.clone(),
        );
        let signal_rooms = Gauge::default();
        registry.register(
            "icebreaker_signal_rooms",
            "Signaling rooms",
            signal_rooms.clone(),
        );

        let fam = Family::<Labels1, Counter>::default();
        registry.register(
            SIGNAL_COUNTERS[0],
            "Signaling messages through the server (in: client to server, out: server to client; keepalives not counted)",
            fam.clone(),
        );
        let signal_messages = ["in", "out"].map(|d| fam.get_or_create(&[("direction", d)]).clone());
        let fam = Family::<Labels1, Counter>::default();
        registry.register(
            SIGNAL_COUNTERS[1],
            "Bytes of those signaling messages",
            fam.clone(),
        );
        let signal_bytes = ["in", "out"].map(|d| fam.get_or_create(&[("direction", d)]).clone());
        let signal_call_messages = Histogram::new([
            5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 100.0, 200.0, 500.0, 1000.0, 5000.0,
        ]);
        registry.register(
            "icebreaker_signal_call_messages",
            "Signaling messages per call (both directions), observed when a call ends on this node",
            signal_call_messages.clone(),
        );
        let signal_call_bytes =
            Histogram::new([1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 1e7]);
        registry.register(
            "icebreaker_signal_call_bytes",
            "Signaling bytes per call (both directions), observed when a call ends on this node",
            signal_call_bytes.clone(),
        );

        let fam = Family::<Labels1, Counter>::default();
        registry.register(
            REFUSALS,
            "Clients refused or not answered by a limit, by reason",
            fam.clone(),
        );
        let refusals = Refusal::ALL.map(|r| fam.get_or_create(&[("reason", r.as_str())]).clone());
        let draining = Gauge::default();
        registry.register(
            "icebreaker_draining",
            "1 while the server drains (no new allocations or joins)",
            draining.clone(),
        );

        let sfu = SfuMetrics::new(&mut registry);
        let sip = SipMetrics::new(&mut registry);
        let cluster_up = Gauge::default();
        registry.register(
            "icebreaker_cluster_up",
            "1 while the cluster's Redis answers the heartbeats (0 when it does not, or not in a cluster)",
            cluster_up.clone(),
        );
        let cluster_nodes = Gauge::default();
        registry.register(
            "icebreaker_cluster_nodes",
            "Live nodes in the cluster, this one included (0 when not in a cluster)",
            cluster_nodes.clone(),
        );
        Metrics {
            registry,
            cluster_up,
            cluster_nodes,
            refusals,
            draining,
            sfu,
            sip,
            allocations,
            permissions,
            channels,
            allocations_created,
            relayed_packets,
            relayed_bytes,
            auth_failures,
            stun_requests,
            error_responses,
            dropped_packets,
            peer_denied,
            signal_sessions,
            signal_sessions_attached,
            signal_rooms,
            signal_buffered_bytes,
            signal_messages,
            signal_bytes,
            signal_call_messages,
            signal_call_bytes,
        }
    }

    /// Count one received request/indication of STUN `method` (e.g. `0x003` Allocate).
    #[inline]
    pub fn stun_request(&self, method: u16, transport: TransportLabel) {
        self.stun_requests[method_index(method)][transport as usize].inc();
    }

    /// Count one error response with `code` (codes outside [`ERROR_CODES`] count as "other").
    #[inline]
    pub fn error_response(&self, code: u16) {
        self.error_responses[error_code_index(code)].inc();
    }

    /// Count one authentication failure.
    #[inline]
    pub fn auth_failure(&self, reason: AuthFailure) {
        self.auth_failures[reason as usize].inc();
    }

    /// Count one refusal.
    #[inline]
    pub fn refused(&self, reason: Refusal) {
        self.refusals[reason as usize].inc();
    }

    /// Count one dropped packet.
    #[inline]
    pub fn dropped(&self, reason: DropReason) {
        self.dropped_packets[reason as usize].inc();
    }

    /// Count one relayed packet of `bytes` payload bytes.
    #[inline]
    pub fn relayed(&self, direction: Direction, bytes: usize) {
        self.relayed_packets.get(direction).inc();
        self.relayed_bytes.get(direction).inc_by(bytes as u64);
    }

    /// Count `packets` relayed packets of `bytes` payload bytes in all.
    #[inline]
    pub fn relayed_many(&self, direction: Direction, packets: u64, bytes: u64) {
        self.relayed_packets.get(direction).inc_by(packets);
        self.relayed_bytes.get(direction).inc_by(bytes);
    }

    /// Count `n` dropped packets.
    #[inline]
    pub fn dropped_many(&self, reason: DropReason, n: u64) {
        self.dropped_packets[reason as usize].inc_by(n);
    }

    /// Everything in the Prometheus text exposition format 0.0.4 (serve as
    /// `text/plain; version=0.0.4`).
    pub fn encode(&self) -> String {
        let mut open_metrics = String::new();
        if encode(&mut open_metrics, &self.registry).is_err() {
            // Writing into a String cannot fail; keep the endpoint alive regardless.
            return String::new();
        }
        // prometheus-client writes OpenMetrics: counter HELP/TYPE lines name the family without
        // `_total` and the output ends with `# EOF`. Rewrite both for the 0.0.4 text format.
        let mut out = String::with_capacity(open_metrics.len() + 128);
        for line in open_metrics.lines() {
            if line == "# EOF" {
                continue;
            }
            if let Some(fixed) = counter_meta_line(line) {
                out.push_str(&fixed);
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        out
    }
}

fn counter_meta_line(line: &str) -> Option<String> {
    let rest = line
        .strip_prefix("# HELP ")
        .map(|r| ("# HELP ", r))
        .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)))?;
    let (prefix, rest) = rest;
    let (name, tail) = rest.split_once(' ')?;
    if COUNTER_NAMES.contains(&name)
        || SFU_COUNTERS.contains(&name)
        || name == PEER_DENIED
        || name == REFUSALS
        || SIGNAL_COUNTERS.contains(&name)
    {
        Some(format!("{prefix}{name}_total {tail}"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_contains_every_metric_name() {
        let m = Metrics::new();
        let text = m.encode();
        for name in [
            "icebreaker_turn_allocations",
            "icebreaker_turn_permissions",
            "icebreaker_turn_channels",
            "icebreaker_turn_allocations_created_total",
            "icebreaker_turn_relayed_packets_total",
            "icebreaker_turn_relayed_bytes_total",
            "icebreaker_turn_auth_failures_total",
            "icebreaker_stun_requests_total",
            "icebreaker_turn_error_responses_total",
            "icebreaker_turn_dropped_packets_total",
            "icebreaker_turn_peer_denied_total",
            "icebreaker_signal_messages_total",
            "icebreaker_signal_bytes_total",
            "icebreaker_signal_call_messages_bucket",
            "icebreaker_signal_call_bytes_count",
        ] {
            assert!(
                text.contains(&format!("\n{name}")),
                "{name} missing:\n{text}"
            );
        }
        assert!(text.contains("# TYPE icebreaker_turn_allocations_created_total counter"));
        assert!(text.contains("# TYPE icebreaker_turn_allocations gauge"));
        assert!(text.contains("# TYPE icebreaker_signal_messages_total counter"));
        assert!(text.contains("# TYPE icebreaker_signal_call_messages histogram"));
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn helpers_hit_the_right_children() {
        let m = Metrics::new();
        m.stun_request(0x003, TransportLabel::Tcp);
        m.stun_request(0x003, TransportLabel::Tcp);
        m.stun_request(0x0FF, TransportLabel::Udp);
        m.error_response(401);
        m.error_response(999);
        m.auth_failure(AuthFailure::StaleNonce);
        m.dropped(DropReason::NoPermission);
        m.relayed(Direction::PeerToClient, 100);
        m.allocations.inc();
        m.peer_denied.inc();
        let text = m.encode();
        for sample in [
            "icebreaker_stun_requests_total{method=\"allocate\",transport=\"tcp\"} 2",
            "icebreaker_stun_requests_total{method=\"other\",transport=\"udp\"} 1",
            "icebreaker_stun_requests_total{method=\"binding\",transport=\"tls\"} 0",
            "icebreaker_turn_error_responses_total{code=\"401\"} 1",
            "icebreaker_turn_error_responses_total{code=\"other\"} 1",
            "icebreaker_turn_auth_failures_total{reason=\"stale_nonce\"} 1",
            "icebreaker_turn_dropped_packets_total{reason=\"no_permission\"} 1",
            "icebreaker_turn_relayed_packets_total{direction=\"peer_to_client\"} 1",
            "icebreaker_turn_relayed_bytes_total{direction=\"peer_to_client\"} 100",
            "icebreaker_turn_relayed_bytes_total{direction=\"client_to_peer\"} 0",
            "icebreaker_turn_allocations 1",
            "icebreaker_turn_peer_denied_total 1",
        ] {
            assert!(text.contains(sample), "{sample} missing:\n{text}");
        }
    }

    #[test]
    fn label_tables_line_up() {
        assert_eq!(method_index(0x001), 0);
        assert_eq!(METHOD_LABELS[method_index(0x009)], "channel_bind");
        assert_eq!(METHOD_LABELS[method_index(0x006)], "send");
        for (i, r) in AuthFailure::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for (i, t) in TransportLabel::ALL.iter().enumerate() {
            assert_eq!(*t as usize, i);
        }
        assert_eq!(error_code_index(508), ERROR_CODES.len() - 1);
        assert_eq!(error_code_index(1), ERROR_CODES.len());
    }
}
