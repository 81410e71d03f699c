//! The messages of `docs/PROTOCOL.md`: parsing client → server messages (with every validation
//! rule of the contract) and encoding server → client messages.
//!
//! Parsing makes one pass over the text: the envelope is read with every known field kept as a
//! borrowed [`RawValue`] (unknown fields are skipped), then only the fields the `type` needs are
//! decoded. `data` payloads stay raw JSON (`Box<RawValue>`): they are copied once, never
//! re-parsed or re-serialised.
//!
//! Encoding: a [`ServerMessage`] is serialised once with [`ServerMessage::encode`] into an
//! [`Encoded`] message without `seq`; [`Encoded::with_seq`] splices `"seq":N` in after the `type`
//! (one copy per recipient), so a broadcast to N peers serialises its payload once.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;

/// Longest room name, in bytes (the charset is ASCII).
pub const MAX_ROOM_LEN: usize = 64;
/// Longest `name`, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest `meta`, in bytes of compact JSON.
pub const MAX_META_BYTES: usize = 1024;
/// Longest client `id` (echoed as `ref`), in characters.
pub const MAX_ID_CHARS: usize = 64;
/// Default `--signal-max-message`.
pub const DEFAULT_MAX_MESSAGE: usize = 65536;

/// The stable error codes of the protocol, serialised as their snake_case names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, unknown `type`, missing or mistyped field.
    BadMessage,
    /// Over `--signal-max-message` bytes.
    TooLarge,
    /// Over `--signal-rate`.
    RateLimited,
    /// Room name outside the rules.
    InvalidRoom,
    /// The room is at its capacity.
    RoomFull,
    /// Too many rooms or sessions on the server.
    ServerFull,
    /// Token required and missing, invalid or expired.
    Unauthorized,
    /// The token does not allow this room or action (or the Origin is refused).
    Forbidden,
    /// `signal`/`broadcast`/`ack` before `join`.
    NotJoined,
    /// A second `join` on a session.
    AlreadyJoined,
    /// `signal` to a peer that is not in the sender's room.
    UnknownPeer,
    /// Unknown or expired session token, or the replay no longer holds the messages.
    ResumeFailed,
    /// The server drains (it is about to stop): join another one.
    Draining,
    /// An operator removed the session from its room (`/admin`): do not rejoin on your own.
    Removed,
    /// A bug.
    Internal,
}

impl ErrorCode {
    /// The wire string (`"bad_message"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::UnknownPeer => "unknown_peer",
            ErrorCode::ResumeFailed => "resume_failed",
            ErrorCode::Draining => "draining",
            ErrorCode::Removed => "removed",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether the connection is closed after this error on every transport (`too_large`).
    /// (`bad_message` closes only as the first WebSocket message; `rate_limited` after 10 in a
    /// row: those are the transport's decisions.)
    pub fn closes(self) -> bool {
        matches!(self, ErrorCode::TooLarge)
    }

    /// A suggested HTTP status for `POST /signal/join` and `/signal/send` refusals.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadMessage | ErrorCode::InvalidRoom | ErrorCode::AlreadyJoined => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotJoined | ErrorCode::ResumeFailed => 404,
            ErrorCode::RoomFull | ErrorCode::UnknownPeer => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Removed => 410,
            ErrorCode::ServerFull | ErrorCode::Draining => 503,
            ErrorCode::Internal => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: becomes an `error` message (`code`, `message`, `ref` = `id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError {
    /// The stable code.
    pub code: ErrorCode,
    /// A human sentence.
    pub message: String,
    /// The `id` of the client message it answers, echoed as `ref`.
    pub id: Option<String>,
}

impl ProtoError {
    /// A new error without `ref`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtoError {
            code,
            message: message.into(),
            id: None,
        }
    }

    /// `resume_failed`: the session token is unknown, or its session has ended.
    pub fn resume_failed() -> Self {
        Self::new(
            ErrorCode::ResumeFailed,
            "unknown or expired session (join again)",
        )
    }

    /// `removed`: an operator removed the session (it is gone; a resume with its token is
    /// answered with this, not `resume_failed`, so that clients do not join again by themselves).
    pub fn removed() -> Self {
        Self::new(
            ErrorCode::Removed,
            "an operator removed this session from the room",
        )
    }

    /// `already_joined`: a `join` on a session.
    pub fn already_joined() -> Self {
        Self::new(
            ErrorCode::AlreadyJoined,
            "this session has already joined a room",
        )
    }

    /// `bad_message`: a `resume` that is not the first message of a connection.
    pub fn resume_not_first() -> Self {
        Self::new(
            ErrorCode::BadMessage,
            "`resume` is only valid as the first message of a connection",
        )
    }

    /// Sets the `ref` (the `id` of the message this answers).
    pub fn with_id(mut self, id: Option<String>) -> Self {
        self.id = id;
        self
    }

    /// The `error` message, with `seq` when it belongs to a session's sequence, or without
    /// (an error answering a `join`/`resume` that produced no session, or an HTTP body).
    pub fn to_json(&self, seq: Option<u64>) -> String {
        let enc = self.to_server_message().encode();
        match seq {
            Some(seq) => enc.with_seq(seq),
            None => enc.without_seq().to_owned(),
        }
    }

    /// As a [`ServerMessage::Error`].
    pub fn to_server_message(&self) -> ServerMessage {
        ServerMessage::Error {
            code: self.code,
            message: self.message.clone(),
            r#ref: self.id.clone(),
        }
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ProtoError {}

// ---------------------------------------------------------------------------------------------
// Client → server

/// A parsed, validated client → server message.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// `join`.
    Join(Join),
    /// `resume` (WebSocket).
    Resume(Resume),
    /// `signal`.
    Signal(Signal),
    /// `broadcast`.
    Broadcast(Broadcast),
    /// `ack`: everything ≤ `seq` is acknowledged.
    Ack {
        /// Highest acknowledged `seq`.
        seq: u64,
    },
    /// `ping`: answered with an unsequenced `pong`.
    Ping {
        /// Optional client id.
        id: Option<String>,
    },
    /// `leave`.
    Leave {
        /// Optional client id.
        id: Option<String>,
    },
    /// `sfu`: a message for the SFU (SFU rooms only).
    Sfu(SfuMessage),
    /// `sip`: a message for the SIP gateway (`dial`, `hangup`; same shape as `sfu`).
    Sip(SfuMessage),
}

/// `sfu` (client → server): `data` is a JSON object for the SFU, kept raw.
#[derive(Debug, Clone)]
pub struct SfuMessage {
    /// The object.
    pub data: Box<RawValue>,
    /// Client id.
    pub id: Option<String>,
}

impl PartialEq for SfuMessage {
    fn eq(&self, o: &Self) -> bool {
        self.data.get() == o.data.get() && self.id == o.id
    }
}

/// A room's topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// Every member connects to every other member.
    Mesh,
    /// Every member connects to the server's SFU.
    Sfu,
}

/// The `topology` a `join` asks for when it creates the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopologyRequest {
    /// A mesh that becomes an SFU room past `mesh_max` members.
    #[default]
    Auto,
    /// Always a mesh.
    Mesh,
    /// Always an SFU room.
    Sfu,
}

impl ClientMessage {
    /// The `type` string.
    pub fn type_str(&self) -> &'static str {
        match self {
            ClientMessage::Join(_) => "join",
            ClientMessage::Resume(_) => "resume",
            ClientMessage::Signal(_) => "signal",
            ClientMessage::Broadcast(_) => "broadcast",
            ClientMessage::Ack { .. } => "ack",
            ClientMessage::Ping { .. } => "ping",
            ClientMessage::Leave { .. } => "leave",
            ClientMessage::Sfu(_) => "sfu",
            ClientMessage::Sip(_) => "sip",
        }
    }

    /// The client-chosen `id`, if any (for `ref` in errors).
    pub fn id(&self) -> Option<&str> {
        match self {
            ClientMessage::Join(j) => j.id.as_deref(),
            ClientMessage::Signal(s) => s.id.as_deref(),
            ClientMessage::Broadcast(b) => b.id.as_deref(),
            ClientMessage::Ping { id } | ClientMessage::Leave { id } => id.as_deref(),
            ClientMessage::Sfu(m) | ClientMessage::Sip(m) => m.id.as_deref(),
            ClientMessage::Resume(_) | ClientMessage::Ack { .. } => None,
        }
    }
}

/// `join`.
#[derive(Debug, Clone)]
pub struct Join {
    /// Room name (validated: 1–64 of `A-Z a-z 0-9 _ . -`).
    pub room: String,
    /// Display name (≤ 64 chars).
    pub name: Option<String>,
    /// A JSON object, stored compact (≤ 1 KiB).
    pub meta: Option<Box<RawValue>>,
    /// Requested capacity when the join creates the room (range checked by the hub).
    pub capacity: Option<u32>,
    /// Requested topology when the join creates the room.
    pub topology: Option<TopologyRequest>,
    /// Room token (JWT).
    pub token: Option<String>,
    /// Client id.
    pub id: Option<String>,
}

impl PartialEq for Join {
    fn eq(&self, o: &Self) -> bool {
        self.room == o.room
            && self.name == o.name
            && self.meta.as_ref().map(|m| m.get()) == o.meta.as_ref().map(|m| m.get())
            && self.capacity == o.capacity
            && self.topology == o.topology
            && self.token == o.token
            && self.id == o.id
    }
}

impl Join {
    /// A join of `room` with no other field (handy in tests and tools).
    pub fn room(room: impl Into<String>) -> Self {
        Join {
            room: room.into(),
            name: None,
            meta: None,
            capacity: None,
            topology: None,
            token: None,
            id: None,
        }
    }
}

/// `resume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// Session token.
    pub session: String,
    /// Last `seq` the client saw.
    pub last_seq: u64,
}

/// `signal`.
#[derive(Debug, Clone)]
pub struct Signal {
    /// Target peer id.
    pub to: String,
    /// Opaque payload.
    pub data: Box<RawValue>,
    /// Client id.
    pub id: Option<String>,
}

impl PartialEq for Signal {
    fn eq(&self, o: &Self) -> bool {
        self.to == o.to && self.data.get() == o.data.get() && self.id == o.id
    }
}

/// `broadcast`.
#[derive(Debug, Clone)]
pub struct Broadcast {
    /// Opaque payload.
    pub data: Box<RawValue>,
    /// Client id.
    pub id: Option<String>,
}

impl PartialEq for Broadcast {
    fn eq(&self, o: &Self) -> bool {
        self.data.get() == o.data.get() && self.id == o.id
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    ty: Option<&'a RawValue>,
    #[serde(borrow)]
    room: Option<&'a RawValue>,
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    meta: Option<&'a RawValue>,
    #[serde(borrow)]
    capacity: Option<&'a RawValue>,
    #[serde(borrow)]
    token: Option<&'a RawValue>,
    #[serde(borrow)]
    topology: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    session: Option<&'a RawValue>,
    #[serde(borrow)]
    last_seq: Option<&'a RawValue>,
    #[serde(borrow)]
    to: Option<&'a RawValue>,
    /// `null` is a valid payload: keep it (a plain `Option` would read it as absent).
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    seq: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

fn bad(msg: impl Into<String>) -> ProtoError {
    ProtoError::new(ErrorCode::BadMessage, msg)
}

/// Decodes a required field.
fn req<'de, T: Deserialize<'de>>(
    raw: Option<&'de RawValue>,
    field: &str,
    what: &str,
) -> Result<T, ProtoError> {
    match raw {
        None => Err(bad(format!("missing field `{field}`"))),
        Some(raw) => decode(raw, field, what),
    }
}

/// Decodes an optional field; `null` counts as absent.
fn opt<'de, T: Deserialize<'de>>(
    raw: Option<&'de RawValue>,
    field: &str,
    what: &str,
) -> Result<Option<T>, ProtoError> {
    match raw {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => decode(raw, field, what).map(Some),
    }
}

fn decode<'de, T: Deserialize<'de>>(
    raw: &'de RawValue,
    field: &str,
    what: &str,
) -> Result<T, ProtoError> {
    serde_json::from_str(raw.get()).map_err(|_| bad(format!("field `{field}` must be {what}")))
}

/// Whether `room` follows the rules: 1–64 characters of `A-Z a-z 0-9 _ . -`.
pub fn valid_room(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= MAX_ROOM_LEN
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// Prefix of the rooms the server's socket.io transport joins for its clients: a socket.io room
/// `R` is the hub room `socket.io/R`. Native clients cannot name such a room (`/` is outside
/// [`valid_room`], and [`parse_client`] refuses it), so the two kinds never mix.
pub const SOCKETIO_ROOM_PREFIX: &str = "socket.io/";

/// Whether `room` is a socket.io room: [`SOCKETIO_ROOM_PREFIX`] followed by a [`valid_room`].
/// Only the server makes such names (a client's `join` is checked with [`valid_room`]).
pub fn valid_socketio_room(room: &str) -> bool {
    room.strip_prefix(SOCKETIO_ROOM_PREFIX)
        .is_some_and(valid_room)
}

/// Whether `id` looks like a peer id (8 lowercase hex digits).
pub fn valid_peer_id(id: &str) -> bool {
    id.len() == 8 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parses and validates one client → server message of at most `max_len` bytes.
///
/// Errors: `too_large` (over `max_len`), `bad_message` (not JSON, not an object, unknown `type`,
/// missing or mistyped field, name/id/meta over their limits, meta not an object), `invalid_room`.
/// The error carries `id` as `ref` when the message had a readable one.
pub fn parse_client(text: &str, max_len: usize) -> Result<ClientMessage, ProtoError> {
    if text.len() > max_len {
        return Err(ProtoError::new(
            ErrorCode::TooLarge,
            format!("message is over {max_len} bytes"),
        ));
    }
    if !text.trim_start().starts_with('{') {
        return Err(bad("message is not a JSON object"));
    }
    let env: Envelope<'_> =
        serde_json::from_str(text).map_err(|e| bad(format!("message is not valid JSON: {e}")))?;
    // `id` first, so that later errors can carry it as `ref`.
    let id: Option<String> = opt(env.id, "id", "a string")?;
    if let Some(id) = &id {
        if id.chars().count() > MAX_ID_CHARS {
            return Err(bad(format!("`id` is over {MAX_ID_CHARS} characters")));
        }
    }
    parse_typed(&env, id.clone()).map_err(|e| e.with_id(id))
}

fn parse_typed(env: &Envelope<'_>, id: Option<String>) -> Result<ClientMessage, ProtoError> {
    let ty: String = req(env.ty, "type", "a string")?;
    match ty.as_str() {
        "join" => {
            let room: String = req(env.room, "room", "a string")?;
            if !valid_room(&room) {
                return Err(ProtoError::new(
                    ErrorCode::InvalidRoom,
                    "room names are 1 to 64 characters of A-Z a-z 0-9 _ . -",
                ));
            }
            let name: Option<String> = opt(env.name, "name", "a string")?;
            if let Some(name) = &name {
                if name.chars().count() > MAX_NAME_CHARS {
                    return Err(bad(format!("`name` is over {MAX_NAME_CHARS} characters")));
                }
            }
            let meta = match env.meta {
                None => None,
                Some(raw) if raw.get() == "null" => None,
                Some(raw) => Some(compact_meta(raw)?),
            };
            let capacity: Option<u32> = opt(env.capacity, "capacity", "a positive integer")?;
            let token: Option<String> = opt(env.token, "token", "a string")?;
            let topology: Option<TopologyRequest> = opt(
                env.topology,
                "topology",
                "one of \"auto\", \"mesh\", \"sfu\"",
            )?;
            Ok(ClientMessage::Join(Join {
                room,
                name,
                meta,
                capacity,
                topology,
                token,
                id,
            }))
        }
        "resume" => Ok(ClientMessage::Resume(Resume {
            session: req(env.session, "session", "a string")?,
            last_seq: req(env.last_seq, "last_seq", "a non-negative integer")?,
        })),
        "signal" => {
            let to: String = req(env.to, "to", "a string")?;
            let data = env.data.ok_or_else(|| bad("missing field `data`"))?;
            Ok(ClientMessage::Signal(Signal {
                to,
                data: data.to_owned(),
                id,
            }))
        }
        "broadcast" => {
            let data = env.data.ok_or_else(|| bad("missing field `data`"))?;
            Ok(ClientMessage::Broadcast(Broadcast {
                data: data.to_owned(),
                id,
            }))
        }
        "ack" => Ok(ClientMessage::Ack {
            seq: req(env.seq, "seq", "a non-negative integer")?,
        }),
        "sfu" => {
            let data = env.data.ok_or_else(|| bad("missing field `data`"))?;
            if !data.get().trim_start().starts_with('{') {
                return Err(bad("field `data` must be an object"));
            }
            Ok(ClientMessage::Sfu(SfuMessage {
                data: data.to_owned(),
                id,
            }))
        }
        "sip" => {
            let data = env.data.ok_or_else(|| bad("missing field `data`"))?;
            if !data.get().trim_start().starts_with('{') {
                return Err(bad("field `data` must be an object"));
            }
            Ok(ClientMessage::Sip(SfuMessage {
                data: data.to_owned(),
                id,
            }))
        }
        "ping" => Ok(ClientMessage::Ping { id }),
        "leave" => Ok(ClientMessage::Leave { id }),
        other => {
            let shown: String = other.chars().take(32).collect();
            Err(bad(format!("unknown message type `{shown}`")))
        }
    }
}

fn compact_meta(raw: &RawValue) -> Result<Box<RawValue>, ProtoError> {
    if raw.get().len() > 64 * MAX_META_BYTES {
        return Err(bad(format!("`meta` is over {MAX_META_BYTES} bytes")));
    }
    let value: Value = serde_json::from_str(raw.get()).map_err(|_| bad("`meta` is not JSON"))?;
    if !value.is_object() {
        return Err(bad("field `meta` must be an object"));
    }
    let compact = serde_json::to_string(&value).map_err(|_| bad("`meta` is not JSON"))?;
    if compact.len() > MAX_META_BYTES {
        return Err(bad(format!("`meta` is over {MAX_META_BYTES} bytes")));
    }
    RawValue::from_string(compact).map_err(|_| bad("`meta` is not JSON"))
}

// ---------------------------------------------------------------------------------------------
// Server → client

/// A peer as the others see it: `{id, name?, meta?}`.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    /// Peer id (8 lowercase hex digits).
    pub id: String,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Compact JSON object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<Box<RawValue>>,
}

impl PartialEq for PeerInfo {
    fn eq(&self, o: &Self) -> bool {
        self.id == o.id
            && self.name == o.name
            && self.meta.as_ref().map(|m| m.get()) == o.meta.as_ref().map(|m| m.get())
    }
}

/// Why a peer left (`peer-left` `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// It sent `leave`.
    Left,
    /// Its grace period expired.
    Timeout,
    /// The server removed it.
    Kicked,
}

/// A server → client message, without `seq` (added per session by [`Encoded::with_seq`]).
/// Field order on the wire is `type`, `seq`, then the fields in the order below.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage {
    /// `joined`.
    Joined {
        /// Session token (only ever sent to its owner).
        session: String,
        /// Your peer id.
        peer: String,
        /// Room name.
        room: String,
        /// True for the member that created the room.
        initiator: bool,
        /// Room capacity.
        capacity: u32,
        /// The other members.
        peers: Vec<PeerInfo>,
        /// ICE servers for `RTCPeerConnection` (provided by the I/O layer).
        #[serde(rename = "iceServers")]
        ice_servers: Value,
        /// Grace period, seconds.
        grace: u64,
        /// The room's topology.
        topology: Topology,
    },
    /// `peer-joined`.
    PeerJoined {
        /// The new member.
        peer: PeerInfo,
    },
    /// `peer-left`.
    PeerLeft {
        /// Its id.
        peer: String,
        /// Why.
        reason: LeaveReason,
    },
    /// `signal`.
    Signal {
        /// Sender, stamped by the server.
        from: String,
        /// Opaque payload.
        data: Box<RawValue>,
    },
    /// `broadcast`.
    Broadcast {
        /// Sender, stamped by the server.
        from: String,
        /// Opaque payload.
        data: Box<RawValue>,
    },
    /// `resumed`.
    Resumed {
        /// Your peer id.
        peer: String,
        /// Room name.
        room: String,
        /// The other members now.
        peers: Vec<PeerInfo>,
        /// Fresh ICE servers.
        #[serde(rename = "iceServers")]
        ice_servers: Value,
        /// The room's topology.
        topology: Topology,
    },
    /// `topology`: the room switched.
    Topology {
        /// The new topology.
        topology: Topology,
    },
    /// `sfu`: from the SFU.
    Sfu {
        /// A JSON object.
        data: Box<RawValue>,
    },
    /// `sip`: from the SIP gateway (the state of a `dial`).
    Sip {
        /// A JSON object.
        data: Box<RawValue>,
    },
    /// `pong` (never sequenced).
    Pong {
        /// Echo of the ping's `id`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// `error`.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// Human sentence.
        message: String,
        /// The `id` of the message it answers.
        #[serde(skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
    },
}

impl ServerMessage {
    /// The `type` string.
    pub fn type_str(&self) -> &'static str {
        match self {
            ServerMessage::Joined { .. } => "joined",
            ServerMessage::PeerJoined { .. } => "peer-joined",
            ServerMessage::PeerLeft { .. } => "peer-left",
            ServerMessage::Signal { .. } => "signal",
            ServerMessage::Broadcast { .. } => "broadcast",
            ServerMessage::Resumed { .. } => "resumed",
            ServerMessage::Topology { .. } => "topology",
            ServerMessage::Sfu { .. } => "sfu",
            ServerMessage::Sip { .. } => "sip",
            ServerMessage::Pong { .. } => "pong",
            ServerMessage::Error { .. } => "error",
        }
    }

    /// Serialises the message once, without `seq`.
    pub fn encode(&self) -> Encoded {
        // Serialising these types cannot fail (string keys, no non-finite floats); fall back to
        // an `internal` error rather than panicking if it ever did.
        let text = serde_json::to_string(self).unwrap_or_else(|_| {
            String::from(
                r#"{"type":"error","code":"internal","message":"could not encode a message"}"#,
            )
        });
        let prefix = r#"{"type":""#.len() + self.type_str().len() + 1;
        let split = if text.len() >= prefix && text.is_char_boundary(prefix) {
            prefix
        } else {
            0
        };
        Encoded { text, split }
    }
}

/// A serialised server message without `seq`; [`Encoded::with_seq`] renders it for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    text: String,
    /// Byte offset just after `{"type":"…"`.
    split: usize,
}

impl Encoded {
    /// The message with `"seq":N` right after `type`.
    pub fn with_seq(&self, seq: u64) -> String {
        if self.split == 0 {
            return self.text.clone();
        }
        let (head, tail) = self.text.split_at(self.split);
        let mut out = String::with_capacity(self.text.len() + 28);
        out.push_str(head);
        out.push_str(",\"seq\":");
        out.push_str(&seq.to_string());
        out.push_str(tail);
        out
    }

    /// The message split where `seq` goes: `with_seq(n)` is `head + n + tail` (`head` ends
    /// with `"seq":`). For stores that number messages themselves (a cluster's Lua scripts).
    pub fn seq_parts(&self) -> (String, &str) {
        let (head, tail) = self.text.split_at(self.split);
        (format!("{head},\"seq\":"), tail)
    }

    /// The message as serialised, without `seq` (for `pong` and session-less errors).
    pub fn without_seq(&self) -> &str {
        &self.text
    }

    /// Length without `seq`.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// Never true (a message is at least `{"type":…}`).
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}
