//! Signaling core of Icebreaker, sans-IO: the messages of `docs/PROTOCOL.md`, sessions with
//! sequence numbers and replay, rooms, room tokens and rate limiting. No sockets, no clock: time
//! is passed in (`Instant` for timers, Unix seconds for token expiry). The server crate does the
//! I/O (WebSocket, SSE, long-poll) and holds the [`Hub`] under one lock, never across an `.await`.
//!
//! # API summary
//!
//! **[`proto`]** — messages.
//! - `parse_client(text: &str, max_len: usize) -> Result<ClientMessage, ProtoError>`: every
//!   validation rule of the contract (`too_large`, `bad_message`, `invalid_room`; `ref` = `id`).
//! - `ClientMessage::{Join(Join), Resume(Resume), Signal(Signal), Broadcast(Broadcast),
//!   Ack { seq }, Ping { id }, Leave { id }}`; `data` is `Box<RawValue>` (never re-parsed),
//!   `meta` is compact JSON `Box<RawValue>` ≤ 1 KiB.
//! - `ServerMessage` (`joined`, `peer-joined`, `peer-left`, `signal`, `broadcast`, `resumed`,
//!   `pong`, `error`) → `encode() -> Encoded` once → `Encoded::with_seq(seq) -> String` per
//!   session (`seq` spliced after `type`), `Encoded::without_seq() -> &str`.
//! - `ProtoError { code: ErrorCode, message: String, id: Option<String> }`,
//!   `ProtoError::to_json(seq: Option<u64>) -> String`; `ErrorCode` serialises as `bad_message`,
//!   …; `ErrorCode::http_status()`, `ErrorCode::closes()`.
//!
//! **[`session`]** — `Outbox` (`push(&Encoded) -> u64`, `push_with(|seq| String) -> u64`,
//! `ack(seq)`, `replay_after(last_seq) -> Result<impl Iterator<Item = (u64, &str)>, Gap>`,
//! bounded by count (default 1024) and bytes, oldest dropped) and `SessionToken` (256 random bits,
//! base64url, 43 chars; `generate(&mut rng)`, `matches(&str)` in constant time, `digest()`).
//!
//! **[`token`]** — `verify(token, secret, now_unix) -> Result<Claims, ProtoError>` (HS256 JWT;
//! `unauthorized` on anything wrong with the token itself), `Claims::check_room(room)` /
//! `Claims::require(Perm)` (`forbidden`), `sign(secret, room, sub, exp, perms) -> String`.
//!
//! **[`limits`]** — `RateLimiter::new(rate_per_sec, burst)`, `allow(now: Instant) -> bool`,
//! `abusive()` after 10 refusals in a row.
//!
//! **[`store`]** — `RoomStore` trait (atomic `admit`, `remove`, `contains`, `for_each_member`,
//! `room`, `room_count`) and `MemoryRoomStore`.
//!
//! **[`Hub`]** — rooms and sessions:
//! - `Hub::new(HubConfig) -> Hub`, `Hub::with_store(HubConfig, store, StdRng)`.
//! - `join(now, now_unix, Join, ice_servers: impl FnOnce(&str /*peer id*/) -> Value)
//!   -> Result<Joined { key, session, peer }, ProtoError>`: queues `joined` (seq 1) and
//!   `peer-joined` to the others. The session starts detached; attach a stream next.
//! - `attach(now, key, last_seq) -> Result<Attached { key, stream, from_seq }, ProtoError>`:
//!   attach a stream without `resumed` (first stream after join; long-poll requests).
//! - `resume(now, token: &str, last_seq, ice_servers) -> Result<Attached, ProtoError>`: replay +
//!   `resumed`; send `pending_after(key, last_seq)` on the new stream.
//! - `handle(now, key, ClientMessage) -> Result<Handled { Ok | Left }, ProtoError>`: `signal`,
//!   `broadcast`, `ack`, `ping`, `leave`. Refusals are also queued as sequenced `error`s.
//! - `push_error(key, &ProtoError) -> Option<u64>`: queue a transport-level refusal.
//! - `lookup(token: &str) -> Option<SessionKey>` (HTTP `session=S`).
//! - `detach(now, key, stream) -> bool` (grace starts), `current_stream(key) -> Option<StreamId>`
//!   (a stream that is not current must close), `kick(key) -> bool`.
//! - `poll_timeout() -> Option<Instant>`, `handle_timeout(now)` (grace expiry → `peer-left`
//!   `timeout`).
//! - `drain_dirty() -> impl Iterator<Item = SessionKey>` (wake those streams),
//!   `drain_closed() -> impl Iterator<Item = (SessionKey, CloseReason)>`.
//! - `pending_after(key, after_seq) -> Result<impl Iterator<Item = (u64, &str)>, ProtoError>`
//!   (borrowed from the replay buffer; no copy), `take_unsequenced(key) -> Vec<String>` (`pong`s).
//! - `peer_and_room(key)`, `contains(key)`, `last_seq(key)`, `stats()`.
//!
//! # Calling contract for transports
//!
//! - **WebSocket**: first message `join` → `join` then `attach(now, key, 0)`; first message
//!   `resume` → `resume(now, &session, last_seq, ice)`. Then for each text frame:
//!   `parse_client` (on error with a session: `push_error`; without: send
//!   `err.to_json(None)`), then `handle`. Stream task: on wake, if `current_stream(key) !=
//!   Some(mine)` close; else send `take_unsequenced(key)` then `pending_after(key, sent)`.
//!   On disconnect: `detach(now, key, mine)`.
//! - **SSE**: `POST /signal/join` → `join` (answer `{session, peer}`); `GET /signal/events`:
//!   `lookup(S)`, then `attach(now, key, N)` for a session's first stream (`N = 0`) and
//!   `resume(now, S, N, ice)` for a reconnect (`N > 0` or `Last-Event-ID`). `POST /signal/send`:
//!   `lookup(S)` then `parse_client` + `handle` per message.
//! - **long-poll**: each `GET /signal/poll` → `attach(now, key, N)` while the session is attached
//!   or freshly joined, `resume` once it was detached (its grace running after a poll gap the
//!   transport decides); answer `pending_after(key, N)` or wait for a wake; `detach` when a poll
//!   ends with no successor.
//! - After every call that can queue messages, `drain_dirty()` and wake those sessions;
//!   `drain_closed()` to close streams of ended sessions. Call `handle_timeout(now)` when
//!   `poll_timeout()` passes (or once a second).
//!
//! # Design
//!
//! - **Token lookup**: sessions are indexed by SHA-256 of the token. A lookup hashes the
//!   presented string first, so the map's timing depends only on a digest the client cannot steer
//!   towards a real token's; the stored token is then compared in constant time (`subtle`).
//! - **Room state** is behind [`RoomStore`] (synchronous, see [`store`] for why and for the
//!   clustered design); the hub keeps sessions, streams, outboxes and timers itself.
//! - **Memory** is bounded: `max_sessions`, `max_rooms`, room capacity, per-session replay
//!   (count and bytes), `max_unsequenced`, message size (`max_len`), `meta` ≤ 1 KiB, names/ids
//!   ≤ 64 chars.
//! - **Encoding once**: a `broadcast`/`peer-joined`/`peer-left` is serialised once without
//!   `seq`; each recipient gets a copy with its own `seq` spliced in.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod hub;
pub mod limits;
pub mod proto;
pub mod session;
pub mod store;
pub mod token;

pub use hub::{
    Attached, CloseReason, Handled, Hub, HubConfig, HubStats, JoinRequest, Joined, SessionKey,
    SfuInput, StreamId,
};
pub use limits::RateLimiter;
pub use proto::{
    parse_client, Broadcast, ClientMessage, Encoded, ErrorCode, Join, LeaveReason, PeerInfo,
    ProtoError, Resume, ServerMessage, SfuMessage, Signal, Topology, TopologyRequest,
};
pub use session::{Gap, Outbox, SessionToken};
pub use store::{Admission, MemoryRoomStore, RoomInfo, RoomSpec, RoomStore, StoreError};
pub use token::{Claims, Perm, Perms};
