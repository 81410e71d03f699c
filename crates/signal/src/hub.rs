//! The hub: rooms (through a [`RoomStore`]) and sessions, sans-IO, time passed in.

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::{
    ClientMessage, Encoded, ErrorCode, Join, LeaveReason, PeerInfo, ProtoError, ServerMessage,
    Topology, TopologyRequest,
};
use crate::session::{
    token_digest, Outbox, SessionToken, DEFAULT_REPLAY_BYTES, DEFAULT_REPLAY_LIMIT,
};
use crate::store::{MemoryRoomStore, RoomSpec, RoomStore, StoreError};
use crate::token::{self, Perm, Perms};
use serde_json::value::RawValue;

/// Hub limits and settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// `--signal-max-rooms`.
    pub max_rooms: usize,
    /// `--signal-max-sessions`.
    pub max_sessions: usize,
    /// Capacity of a room created without `capacity` (50).
    pub default_capacity: u32,
    /// Largest `capacity` a join may ask for (`--signal-room-capacity`); 2 is the smallest.
    pub max_capacity: u32,
    /// `--signal-grace` (30 s).
    pub grace: Duration,
    /// `--signal-replay-limit` (1024 messages per session).
    pub replay_limit: usize,
    /// Byte cap on a session's replay buffer (4 MiB); the oldest messages go first.
    pub replay_max_bytes: usize,
    /// Bytes held in all sessions' replay buffers together (256 MiB): beyond it, `signal` and
    /// `broadcast` are refused with `server_full` (nothing already queued is dropped).
    pub max_buffered_bytes: usize,
    /// Unsequenced messages (`pong`) kept per session until taken (16; oldest dropped).
    pub max_unsequenced: usize,
    /// `--signal-token-secret`: when set, every join needs a valid room token.
    pub token_secret: Option<Vec<u8>>,
    /// The server has an SFU: `auto` rooms switch to it, `sfu` rooms may be created.
    pub sfu: bool,
    /// `--sfu-mesh-max`: an `auto` room becomes an SFU room when a join would make it larger
    /// than this (4).
    pub mesh_max: u32,
    /// `--sip-dial`: members may have the server dial phones (`sip` messages); with
    /// `token_secret` their token must also grant `dial`.
    pub sip_dial: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_rooms: 10_000,
            max_sessions: 50_000,
            default_capacity: 50,
            max_capacity: 50,
            grace: Duration::from_secs(30),
            replay_limit: DEFAULT_REPLAY_LIMIT,
            replay_max_bytes: DEFAULT_REPLAY_BYTES,
            max_buffered_bytes: 256 << 20,
            max_unsequenced: 16,
            token_secret: None,
            sfu: false,
            mesh_max: 4,
            sip_dial: false,
        }
    }
}

/// `sfu` messages waiting for the SFU at most (the server drains them after every call).
const MAX_SFU_QUEUE: usize = 4096;

/// A session's handle inside one hub: small, `Copy`, never reused, not secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(u64);

impl SessionKey {
    /// The raw number (for logs and maps).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Identifies one attached stream of a session; a newer attach supersedes older ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(u64);

/// A `join` checked by [`Hub::check_join`].
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// The room it would create.
    pub spec: RoomSpec,
    /// What its token grants.
    pub perms: Perms,
    /// Its display name (`name`, else the token's `sub`), ≤ 64 characters.
    pub name: Option<String>,
}

/// A successful [`Hub::join`].
#[derive(Debug, Clone)]
pub struct Joined {
    /// The new session.
    pub key: SessionKey,
    /// Its token (for the HTTP join answer; also inside the queued `joined`).
    pub session: SessionToken,
    /// Its peer id.
    pub peer: String,
}

/// A successful [`Hub::resume`] / [`Hub::attach`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    /// The session.
    pub key: SessionKey,
    /// The stream now attached (older ones are superseded).
    pub stream: StreamId,
    /// Send [`Hub::pending_after`]`(key, from_seq)` on the new stream.
    pub from_seq: u64,
}

/// What [`Hub::handle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Accepted; nothing for the transport to do beyond delivering dirty sessions.
    Ok,
    /// The session left (`leave`) and is gone: close its stream.
    Left,
}

/// Why a session ended (see [`Hub::drain_closed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// It sent `leave`.
    Left,
    /// Its grace period expired.
    Timeout,
    /// [`Hub::kick`].
    Kicked,
    /// [`Hub::forget`]: the session lives on elsewhere (another node of a cluster took it
    /// over) or ended there.
    Forgotten,
}

/// An `sfu` message from a member, for the SFU (see [`Hub::drain_sfu`]).
#[derive(Debug, Clone)]
pub struct SfuInput {
    /// The member's room.
    pub room: String,
    /// The member's peer id.
    pub peer: String,
    /// The `data` object, raw.
    pub data: Box<RawValue>,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Live sessions (attached or in grace).
    pub sessions: usize,
    /// Sessions with a stream attached.
    pub attached: usize,
    /// Rooms.
    pub rooms: usize,
    /// Bytes held in all replay buffers.
    pub buffered_bytes: usize,
}

#[derive(Debug)]
struct Session {
    token: SessionToken,
    digest: [u8; 32],
    peer: String,
    room: String,
    perms: Perms,
    outbox: Outbox,
    unsequenced: VecDeque<String>,
    stream: Option<StreamId>,
    /// Grace deadline while detached.
    deadline: Option<Instant>,
    dirty: bool,
}

/// Rooms and sessions. See the crate docs for the calling contract.
#[derive(Debug)]
pub struct Hub<S: RoomStore = MemoryRoomStore> {
    config: HubConfig,
    store: S,
    rng: StdRng,
    sessions: HashMap<SessionKey, Session>,
    by_digest: HashMap<[u8; 32], SessionKey>,
    by_peer: HashMap<String, SessionKey>,
    deadlines: BTreeSet<(Instant, SessionKey)>,
    dirty: Vec<SessionKey>,
    closed: Vec<(SessionKey, CloseReason)>,
    /// `sfu` messages for the SFU, in arrival order.
    sfu_in: Vec<SfuInput>,
    /// Members that left an SFU room: `(room, peer)`.
    departed: Vec<(String, String)>,
    /// `sip` messages for the SIP gateway, in arrival order.
    sip_in: Vec<SfuInput>,
    next_key: u64,
    next_stream: u64,
    /// Sessions with a stream attached (kept as a count: `stats` must not walk every session).
    attached: usize,
    /// Bytes held in every session's outbox (each outbox keeps it up to date).
    buffered: Arc<AtomicUsize>,
}

impl Hub<MemoryRoomStore> {
    /// A hub with the in-memory store and an OS-seeded RNG.
    pub fn new(config: HubConfig) -> Self {
        Hub::with_store(config, MemoryRoomStore::new(), StdRng::from_os_rng())
    }
}

impl<S: RoomStore> Hub<S> {
    /// A hub with `store` and `rng` (seed it from the OS in production; tests may use a fixed
    /// seed for reproducible peer ids and tokens).
    pub fn with_store(config: HubConfig, store: S, rng: StdRng) -> Self {
        Hub {
            config,
            store,
            rng,
            sessions: HashMap::new(),
            by_digest: HashMap::new(),
            by_peer: HashMap::new(),
            deadlines: BTreeSet::new(),
            dirty: Vec::new(),
            closed: Vec::new(),
            sfu_in: Vec::new(),
            departed: Vec::new(),
            sip_in: Vec::new(),
            next_key: 1,
            next_stream: 1,
            attached: 0,
            buffered: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Replace the configuration (reload). Rooms and sessions stay: limits apply to what comes
    /// next (a room above a lowered capacity keeps its members, a new grace period applies to
    /// the next disconnect).
    pub fn set_config(&mut self, config: HubConfig) {
        self.config = config;
    }

    /// The room store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Joins (creating the room if absent). `ice_servers` is called with the new peer id and
    /// returns the `iceServers` value for `joined`. Queues `joined` (seq 1) for the new session
    /// and `peer-joined` for every other member. The session starts *detached* (its grace timer
    /// running): the transport then calls [`Hub::attach`]`(now, key, 0)` for its stream.
    ///
    /// Errors (with `ref` = the join's `id`): `invalid_room`, `bad_message` (capacity outside
    /// 2–`max_capacity`), `unauthorized`/`forbidden` (tokens), `room_full`, `server_full`.
    pub fn join(
        &mut self,
        now: Instant,
        now_unix: u64,
        join: Join,
        ice_servers: impl FnOnce(&str) -> Value,
    ) -> Result<Joined, ProtoError> {
        let id = join.id.clone();
        self.join_inner(now, now_unix, join, ice_servers)
            .map_err(|e| e.with_id(id))
    }

    /// The checks of a `join` that need no room state: room name, capacity, room token
    /// (`now_unix` for its expiry), topology. With the id of the join on errors. Used by
    /// [`Hub::join`], and by a cluster that admits into a shared store.
    pub fn check_join(&self, now_unix: u64, join: &Join) -> Result<JoinRequest, ProtoError> {
        self.check_join_inner(now_unix, join)
            .map_err(|e| e.with_id(join.id.clone()))
    }

    fn check_join_inner(&self, now_unix: u64, join: &Join) -> Result<JoinRequest, ProtoError> {
        // `socket.io/<room>` comes only from the server's socket.io transport: client messages
        // are parsed with `valid_room`, which refuses `/`.
        if !(crate::proto::valid_room(&join.room) || crate::proto::valid_socketio_room(&join.room))
        {
            return Err(ProtoError::new(
                ErrorCode::InvalidRoom,
                "room names are 1 to 64 characters of A-Z a-z 0-9 _ . -",
            ));
        }
        let capacity = match join.capacity {
            None => self
                .config
                .default_capacity
                .clamp(2, self.config.max_capacity.max(2)),
            Some(c) if (2..=self.config.max_capacity).contains(&c) => c,
            Some(_) => {
                return Err(ProtoError::new(
                    ErrorCode::BadMessage,
                    format!(
                        "`capacity` must be between 2 and {}",
                        self.config.max_capacity.max(2)
                    ),
                ))
            }
        };
        let (perms, sub) = match &self.config.token_secret {
            None => (Perms::ALL, None),
            Some(secret) => {
                let Some(tok) = &join.token else {
                    return Err(ProtoError::new(
                        ErrorCode::Unauthorized,
                        "this server requires a room token",
                    ));
                };
                let claims = token::verify(tok, secret, now_unix)?;
                claims.check_room(&join.room)?;
                (claims.perms, claims.sub)
            }
        };
        let request = join.topology.unwrap_or_default();
        if request == TopologyRequest::Sfu && !self.config.sfu {
            return Err(ProtoError::new(
                ErrorCode::BadMessage,
                "this server has no SFU (`topology` \"sfu\" is not available)",
            ));
        }
        let spec = RoomSpec {
            capacity,
            topology: if request == TopologyRequest::Sfu {
                Topology::Sfu
            } else {
                Topology::Mesh
            },
            auto: request == TopologyRequest::Auto,
        };
        let name = join
            .name
            .clone()
            .or_else(|| sub.map(|s| truncate_chars(s, 64)));
        Ok(JoinRequest { spec, perms, name })
    }

    fn join_inner(
        &mut self,
        now: Instant,
        now_unix: u64,
        join: Join,
        ice_servers: impl FnOnce(&str) -> Value,
    ) -> Result<Joined, ProtoError> {
        let JoinRequest { spec, perms, name } = self.check_join_inner(now_unix, &join)?;
        if self.sessions.len() >= self.config.max_sessions {
            return Err(ProtoError::new(
                ErrorCode::ServerFull,
                "the server is at its session limit",
            ));
        }
        let peer = self.fresh_peer_id();
        let member = PeerInfo {
            id: peer.clone(),
            name,
            meta: join.meta,
        };
        let adm = self
            .store
            .admit(
                &join.room,
                member.clone(),
                spec,
                perms.has(Perm::Create),
                self.config.max_rooms,
            )
            .map_err(|e| match e {
                StoreError::RoomFull => {
                    ProtoError::new(ErrorCode::RoomFull, "the room is at its capacity")
                }
                StoreError::TooManyRooms => {
                    ProtoError::new(ErrorCode::ServerFull, "the server is at its room limit")
                }
                StoreError::CreateForbidden => ProtoError::new(
                    ErrorCode::Forbidden,
                    "the token does not grant `create` and the room does not exist",
                ),
                StoreError::Duplicate => ProtoError::new(ErrorCode::Internal, "duplicate peer id"),
                StoreError::Backend(m) => ProtoError::new(ErrorCode::Internal, m),
            })?;

        // An `auto` mesh that grows past `mesh_max` becomes an SFU room for good.
        let size = adm.others.len().saturating_add(1);
        let switched = adm.auto
            && adm.topology == Topology::Mesh
            && self.config.sfu
            && size > self.config.mesh_max as usize;
        let topology = if switched {
            self.store.set_topology(&join.room, Topology::Sfu);
            Topology::Sfu
        } else {
            adm.topology
        };

        let token = SessionToken::generate(&mut self.rng);
        let digest = token.digest();
        let key = SessionKey(self.next_key);
        self.next_key += 1;

        let mut outbox =
            Outbox::with_max_bytes(self.config.replay_limit, self.config.replay_max_bytes)
                .metered(self.buffered.clone());
        let joined = ServerMessage::Joined {
            session: token.as_str().to_owned(),
            peer: peer.clone(),
            room: join.room.clone(),
            initiator: adm.created,
            capacity: adm.capacity,
            peers: adm.others,
            ice_servers: ice_servers(&peer),
            grace: self.config.grace.as_secs(),
            topology,
        };
        outbox.push(&joined.encode());

        let deadline = grace_deadline(now, self.config.grace);
        self.insert_session(
            key,
            Session {
                token: token.clone(),
                digest,
                peer: peer.clone(),
                room: join.room.clone(),
                perms,
                outbox,
                unsequenced: VecDeque::new(),
                stream: None,
                deadline: Some(deadline),
                dirty: false,
            },
        );
        self.mark_dirty(key);

        if switched {
            let enc = ServerMessage::Topology { topology }.encode();
            self.deliver_room(&join.room, Some(key), &enc);
        }
        let enc = ServerMessage::PeerJoined { peer: member }.encode();
        self.deliver_room(&join.room, Some(key), &enc);
        Ok(Joined {
            key,
            session: token,
            peer,
        })
    }

    fn fresh_peer_id(&mut self) -> String {
        loop {
            let id = format!("{:08x}", self.rng.next_u32());
            if !self.by_peer.contains_key(&id) {
                return id;
            }
        }
    }

    fn mark_dirty(&mut self, key: SessionKey) {
        if let Some(s) = self.sessions.get_mut(&key) {
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Pushes `enc` to every member of `room` with a local session, except `except`.
    fn deliver_room(&mut self, room: &str, except: Option<SessionKey>, enc: &Encoded) {
        let mut targets = Vec::new();
        let by_peer = &self.by_peer;
        self.store.for_each_member(room, &mut |m| {
            if let Some(&k) = by_peer.get(&m.id) {
                if Some(k) != except {
                    targets.push(k);
                }
            }
        });
        for k in targets {
            self.deliver(k, enc);
        }
    }

    /// Whether `bytes` more fit under `max_buffered_bytes` (client messages only: the server's
    /// own messages — presence, errors, `resumed` — are small and always queued).
    fn fits_buffers(&self, bytes: usize) -> bool {
        self.buffered.load(Ordering::Relaxed).saturating_add(bytes)
            <= self.config.max_buffered_bytes
    }

    fn buffers_full(&self) -> ProtoError {
        ProtoError::new(
            ErrorCode::ServerFull,
            "the server's signaling buffers are full (clients are not acknowledging); try again shortly",
        )
    }

    fn deliver(&mut self, key: SessionKey, enc: &Encoded) -> Option<u64> {
        let s = self.sessions.get_mut(&key)?;
        let seq = s.outbox.push(enc);
        self.mark_dirty(key);
        Some(seq)
    }

    /// Handles `signal`, `broadcast`, `ack`, `ping`, `leave` from session `key`. A refusal is
    /// returned *and* queued on the session as a sequenced `error` (so the transport must not
    /// send it again; it may use it for an HTTP status). `join` → `already_joined`, `resume` →
    /// `bad_message`. An unknown `key` → `not_joined` (not queued anywhere).
    pub fn handle(
        &mut self,
        now: Instant,
        key: SessionKey,
        msg: ClientMessage,
    ) -> Result<Handled, ProtoError> {
        // Time is part of the signature for per-session policies (e.g. idle tracking).
        let _ = now;
        let Some(s) = self.sessions.get(&key) else {
            return Err(ProtoError::new(
                ErrorCode::NotJoined,
                "this session does not exist (join first)",
            )
            .with_id(msg.id().map(str::to_owned)));
        };
        let id = msg.id().map(str::to_owned);
        let result = match msg {
            ClientMessage::Join(_) => Err(ProtoError::already_joined()),
            ClientMessage::Resume(_) => Err(ProtoError::resume_not_first()),
            ClientMessage::Signal(sig) => {
                if let Err(e) = s.perms.require(Perm::Signal) {
                    Err(e)
                } else {
                    let target = if sig.to != s.peer && self.store.contains(&s.room, &sig.to) {
                        self.by_peer.get(&sig.to).copied()
                    } else {
                        None
                    };
                    match target {
                        None => Err(ProtoError::new(
                            ErrorCode::UnknownPeer,
                            "no such peer in this room",
                        )),
                        Some(t) => {
                            let enc = ServerMessage::Signal {
                                from: s.peer.clone(),
                                data: sig.data,
                            }
                            .encode();
                            if self.fits_buffers(enc.without_seq().len() + SEQ_ROOM) {
                                self.deliver(t, &enc);
                                Ok(Handled::Ok)
                            } else {
                                Err(self.buffers_full())
                            }
                        }
                    }
                }
            }
            ClientMessage::Broadcast(b) => {
                if let Err(e) = s.perms.require(Perm::Broadcast) {
                    Err(e)
                } else {
                    let room = s.room.clone();
                    let enc = ServerMessage::Broadcast {
                        from: s.peer.clone(),
                        data: b.data,
                    }
                    .encode();
                    let mut members = 0usize;
                    self.store.for_each_member(&room, &mut |_| members += 1);
                    let others = members.saturating_sub(1);
                    if self
                        .fits_buffers((enc.without_seq().len() + SEQ_ROOM).saturating_mul(others))
                    {
                        self.deliver_room(&room, Some(key), &enc);
                        Ok(Handled::Ok)
                    } else {
                        Err(self.buffers_full())
                    }
                }
            }
            ClientMessage::Ack { seq } => {
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.outbox.ack(seq);
                }
                Ok(Handled::Ok)
            }
            ClientMessage::Ping { id } => {
                let pong = ServerMessage::Pong { id }.encode();
                let max = self.config.max_unsequenced.max(1);
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.unsequenced.push_back(pong.without_seq().to_owned());
                    while s.unsequenced.len() > max {
                        s.unsequenced.pop_front();
                    }
                }
                self.mark_dirty(key);
                Ok(Handled::Ok)
            }
            ClientMessage::Leave { .. } => {
                self.remove(key, CloseReason::Left);
                Ok(Handled::Left)
            }
            ClientMessage::Sfu(m) => {
                let sfu_room = self
                    .store
                    .room(&s.room)
                    .is_some_and(|r| r.topology == Topology::Sfu);
                if !sfu_room {
                    Err(ProtoError::new(
                        ErrorCode::BadMessage,
                        "`sfu` messages are for SFU rooms; this room is a mesh",
                    ))
                } else if self.sfu_in.len() >= MAX_SFU_QUEUE {
                    Err(ProtoError::new(
                        ErrorCode::ServerFull,
                        "the SFU is busy; try again shortly",
                    ))
                } else {
                    self.sfu_in.push(SfuInput {
                        room: s.room.clone(),
                        peer: s.peer.clone(),
                        data: m.data,
                    });
                    Ok(Handled::Ok)
                }
            }
            ClientMessage::Sip(m) => {
                if !self.config.sip_dial {
                    Err(ProtoError::new(
                        ErrorCode::BadMessage,
                        "this server does not dial phones (`sip_dial` is off)",
                    ))
                } else if self.config.token_secret.is_some() && !s.perms.has(Perm::Dial) {
                    Err(ProtoError::new(
                        ErrorCode::Forbidden,
                        "the token does not grant `dial`",
                    ))
                } else if self
                    .store
                    .room(&s.room)
                    .is_some_and(|r| r.topology == Topology::Sfu)
                {
                    Err(ProtoError::new(
                        ErrorCode::BadMessage,
                        "phones join mesh rooms only (this room uses the SFU)",
                    ))
                } else if self.sip_in.len() >= MAX_SFU_QUEUE {
                    Err(ProtoError::new(
                        ErrorCode::ServerFull,
                        "the SIP gateway is busy; try again shortly",
                    ))
                } else {
                    self.sip_in.push(SfuInput {
                        room: s.room.clone(),
                        peer: s.peer.clone(),
                        data: m.data,
                    });
                    Ok(Handled::Ok)
                }
            }
        };
        result.map_err(|e| {
            let e = e.with_id(id);
            self.push_error(key, &e);
            e
        })
    }

    /// Queues `err` as a sequenced `error` on session `key` (for refusals the transport decides,
    /// e.g. a parse error or `rate_limited` on a joined connection). Returns its `seq`.
    pub fn push_error(&mut self, key: SessionKey, err: &ProtoError) -> Option<u64> {
        let enc = err.to_server_message().encode();
        self.deliver(key, &enc)
    }

    /// Finds a session by its token (HTTP `session=S`). See the crate docs on timing.
    pub fn lookup(&self, token: &str) -> Option<SessionKey> {
        if !SessionToken::well_formed(token) {
            return None;
        }
        let key = *self.by_digest.get(&token_digest(token))?;
        // Constant-time comparison of the token itself, independent of the digest map.
        self.sessions
            .get(&key)
            // A session known only by its digest (adopted) was found by that digest.
            .filter(|s| s.token.is_digest_only() || s.token.matches(token))
            .map(|_| key)
    }

    /// Resumes a session: checks the token and that every message after `last_seq` is still held
    /// and stays held with `resumed` queued after it (`resume_failed` otherwise, with nothing
    /// changed), acknowledges ≤ `last_seq`, queues `resumed` (fresh `peers`,
    /// `iceServers` from the callback), attaches a new stream (superseding any other) and stops
    /// the grace timer. Send [`Hub::pending_after`]`(key, last_seq)` on the new stream: the
    /// replay, then `resumed`.
    pub fn resume(
        &mut self,
        now: Instant,
        token: &str,
        last_seq: u64,
        ice_servers: impl FnOnce(&str) -> Value,
    ) -> Result<Attached, ProtoError> {
        let key = self.lookup(token).ok_or_else(ProtoError::resume_failed)?;
        // Refuse before changing anything: `resumed` must not evict the replay it ends.
        self.check_replay(key, last_seq, true)?;
        let (peer, room) = match self.sessions.get(&key) {
            Some(s) => (s.peer.clone(), s.room.clone()),
            None => return Err(ProtoError::resume_failed()),
        };
        let peers: Vec<PeerInfo> = {
            let mut v = Vec::new();
            self.store.for_each_member(&room, &mut |m| {
                if m.id != peer {
                    v.push(m.clone());
                }
            });
            v
        };
        let topology = self
            .store
            .room(&room)
            .map_or(Topology::Mesh, |r| r.topology);
        let enc = ServerMessage::Resumed {
            peer: peer.clone(),
            room,
            peers,
            ice_servers: ice_servers(&peer),
            topology,
        }
        .encode();
        if let Some(s) = self.sessions.get_mut(&key) {
            s.outbox.ack(last_seq);
            s.outbox.push_over_limit(&enc);
        }
        self.attach(now, key, last_seq)
    }

    /// `resume_failed` unless the messages after `last_seq` are held (and, `resuming`, would
    /// still all be held with `resumed` queued after them).
    fn check_replay(
        &self,
        key: SessionKey,
        last_seq: u64,
        resuming: bool,
    ) -> Result<(), ProtoError> {
        let s = self
            .sessions
            .get(&key)
            .ok_or_else(ProtoError::resume_failed)?;
        let ok = if resuming {
            s.outbox.can_resume_after(last_seq)
        } else {
            s.outbox.can_replay_after(last_seq)
        };
        if ok {
            Ok(())
        } else {
            Err(ProtoError::new(
                ErrorCode::ResumeFailed,
                format!("the messages after seq {last_seq} are no longer available (join again)"),
            ))
        }
    }

    /// Attaches a stream without queuing `resumed` (the first stream after [`Hub::join`], or
    /// each long-poll request of a session that did not lapse). Like resume: checks that the
    /// messages after `last_seq` are held, acknowledges ≤ `last_seq`, supersedes other streams,
    /// stops the grace timer.
    pub fn attach(
        &mut self,
        now: Instant,
        key: SessionKey,
        last_seq: u64,
    ) -> Result<Attached, ProtoError> {
        let _ = now;
        self.check_replay(key, last_seq, false)?;
        let stream = StreamId(self.next_stream);
        self.next_stream += 1;
        let s = self
            .sessions
            .get_mut(&key)
            .ok_or_else(ProtoError::resume_failed)?;
        s.outbox.ack(last_seq);
        if s.stream.replace(stream).is_none() {
            self.attached += 1;
        }
        if let Some(d) = s.deadline.take() {
            self.deadlines.remove(&(d, key));
        }
        // Wake the superseded stream (it sees it is no longer current) and the new one.
        self.mark_dirty(key);
        Ok(Attached {
            key,
            stream,
            from_seq: last_seq,
        })
    }

    /// The stream `stream` of `key` ended: if it is the attached one, the session becomes
    /// detached and its grace timer starts. Returns whether it was the attached stream.
    pub fn detach(&mut self, now: Instant, key: SessionKey, stream: StreamId) -> bool {
        let Some(s) = self.sessions.get_mut(&key) else {
            return false;
        };
        if s.stream != Some(stream) {
            return false;
        }
        s.stream = None;
        self.attached = self.attached.saturating_sub(1);
        let deadline = grace_deadline(now, self.config.grace);
        if let Some(old) = s.deadline.replace(deadline) {
            self.deadlines.remove(&(old, key));
        }
        self.deadlines.insert((deadline, key));
        true
    }

    /// The stream currently attached to `key` (`None`: detached, or the session is gone).
    /// A stream task that is no longer current must close.
    pub fn current_stream(&self, key: SessionKey) -> Option<StreamId> {
        self.sessions.get(&key).and_then(|s| s.stream)
    }

    /// Whether the session exists.
    pub fn contains(&self, key: SessionKey) -> bool {
        self.sessions.contains_key(&key)
    }

    /// The session's peer id and room.
    pub fn peer_and_room(&self, key: SessionKey) -> Option<(&str, &str)> {
        self.sessions
            .get(&key)
            .map(|s| (s.peer.as_str(), s.room.as_str()))
    }

    /// The SHA-256 digest of the session's token.
    pub fn token_digest_of(&self, key: SessionKey) -> Option<[u8; 32]> {
        self.sessions.get(&key).map(|s| s.digest)
    }

    /// Removes a session now; the room gets `peer-left` with `reason: "kicked"`.
    pub fn kick(&mut self, key: SessionKey) -> bool {
        self.remove(key, CloseReason::Kicked)
    }

    /// Adds a session under `key` (indexes, grace deadline).
    fn insert_session(&mut self, key: SessionKey, s: Session) {
        if let Some(d) = s.deadline {
            self.deadlines.insert((d, key));
        }
        self.by_digest.insert(s.digest, key);
        self.by_peer.insert(s.peer.clone(), key);
        self.sessions.insert(key, s);
    }

    /// Takes session `key` out (indexes, deadline, attached count) and wakes its stream, which
    /// sees it gone; the caller says why in `closed`.
    fn take_session(&mut self, key: SessionKey) -> Option<Session> {
        let s = self.sessions.remove(&key)?;
        if s.stream.is_some() {
            self.attached = self.attached.saturating_sub(1);
        }
        self.by_digest.remove(&s.digest);
        self.by_peer.remove(&s.peer);
        if let Some(d) = s.deadline {
            self.deadlines.remove(&(d, key));
        }
        if !s.dirty {
            self.dirty.push(key);
        }
        Some(s)
    }

    fn remove(&mut self, key: SessionKey, why: CloseReason) -> bool {
        let Some(s) = self.take_session(key) else {
            return false;
        };
        let was_sfu = self
            .store
            .room(&s.room)
            .is_some_and(|r| r.topology == Topology::Sfu);
        self.store.remove(&s.room, &s.peer);
        if was_sfu {
            self.departed.push((s.room.clone(), s.peer.clone()));
        }
        self.closed.push((key, why));
        let reason = match why {
            CloseReason::Left => LeaveReason::Left,
            CloseReason::Timeout => LeaveReason::Timeout,
            CloseReason::Kicked | CloseReason::Forgotten => LeaveReason::Kicked,
        };
        let enc = ServerMessage::PeerLeft {
            peer: s.peer,
            reason,
        }
        .encode();
        self.deliver_room(&s.room, None, &enc);
        true
    }

    /// Adds a session whose room membership and message numbering live elsewhere (a cluster's
    /// shared store): the local copy of a session joined or resumed on this node. It starts
    /// detached (grace running) with an empty replay buffer whose next `seq` is
    /// `last_seq + 1`; feed it with [`Hub::push_sequenced`] and attach a stream. The room
    /// store is not touched: such sessions have no local room, and leaving, presence and
    /// delivery to other members are the cluster's business. `None` when `peer` or the token
    /// already has a session here, or at `max_sessions`.
    pub fn adopt(
        &mut self,
        now: Instant,
        token_digest: [u8; 32],
        peer: &str,
        room: &str,
        perms: Perms,
        last_seq: u64,
    ) -> Option<SessionKey> {
        if self.by_peer.contains_key(peer)
            || self.by_digest.contains_key(&token_digest)
            || self.sessions.len() >= self.config.max_sessions
        {
            return None;
        }
        let key = SessionKey(self.next_key);
        self.next_key += 1;
        let outbox = Outbox::starting_after(
            last_seq,
            self.config.replay_limit,
            self.config.replay_max_bytes,
        )
        .metered(self.buffered.clone());
        let deadline = grace_deadline(now, self.config.grace);
        self.insert_session(
            key,
            Session {
                // Only its digest is known here (the token was given to the client elsewhere).
                token: SessionToken::from_digest_only(),
                digest: token_digest,
                peer: peer.to_owned(),
                room: room.to_owned(),
                perms,
                outbox,
                unsequenced: VecDeque::new(),
                stream: None,
                deadline: Some(deadline),
                dirty: false,
            },
        );
        Some(key)
    }

    /// Finds a session by the SHA-256 digest of its token (sessions added by [`Hub::adopt`]).
    pub fn lookup_digest(&self, digest: &[u8; 32]) -> Option<SessionKey> {
        self.by_digest.get(digest).copied()
    }

    /// Appends a message numbered elsewhere (`text` carries its `seq`) to session `key`.
    /// `Ok(true)` taken, `Ok(false)` a duplicate (ignored), `Err(next)` a gap: the messages
    /// from `next` on must come first. Unknown session: `Ok(false)`.
    pub fn push_sequenced(&mut self, key: SessionKey, seq: u64, text: &str) -> Result<bool, u64> {
        let Some(s) = self.sessions.get_mut(&key) else {
            return Ok(false);
        };
        let taken = s.outbox.push_at(seq, text)?;
        if taken {
            self.mark_dirty(key);
        }
        Ok(taken)
    }

    /// Drops the local session `key` without any room effect (no `peer-left`): it was taken
    /// over by another node of a cluster, or it ended there. Its stream sees it gone.
    pub fn forget(&mut self, key: SessionKey) -> bool {
        if self.take_session(key).is_none() {
            return false;
        }
        self.closed.push((key, CloseReason::Forgotten));
        true
    }

    /// Every message held in the session's replay buffer, `(seq, text)`, oldest first.
    pub fn held(&self, key: SessionKey) -> Vec<(u64, String)> {
        let Some(s) = self.sessions.get(&key) else {
            return Vec::new();
        };
        let after = s.outbox.oldest_seq().saturating_sub(1);
        s.outbox
            .replay_after(after)
            .map(|it| it.map(|(q, t)| (q, t.to_owned())).collect())
            .unwrap_or_default()
    }

    /// The session's permissions.
    pub fn perms(&self, key: SessionKey) -> Option<Perms> {
        self.sessions.get(&key).map(|s| s.perms)
    }

    /// The `sfu` messages members sent since the last call, in order, for the SFU.
    pub fn drain_sfu(&mut self) -> std::vec::Drain<'_, SfuInput> {
        self.sfu_in.drain(..)
    }

    /// The room-token secret, when tokens are required (the server signs its own members'
    /// tokens with it: the phone of a dialed call).
    pub fn token_secret(&self) -> Option<&[u8]> {
        self.config.token_secret.as_deref()
    }

    /// The `sip` messages members sent since the last call, in order, for the SIP gateway.
    pub fn drain_sip(&mut self) -> std::vec::Drain<'_, SfuInput> {
        self.sip_in.drain(..)
    }

    /// Queues a `sip` message (`data`: a JSON object) for member `peer` of `room`. Returns
    /// false when there is no such member.
    pub fn push_sip(&mut self, room: &str, peer: &str, data: Box<RawValue>) -> bool {
        let Some(&key) = self.by_peer.get(peer) else {
            return false;
        };
        if self.sessions.get(&key).is_none_or(|s| s.room != room) {
            return false;
        }
        let enc = ServerMessage::Sip { data }.encode();
        self.deliver(key, &enc).is_some()
    }

    /// Members that left SFU rooms since the last call: `(room, peer)`.
    pub fn drain_departed(&mut self) -> std::vec::Drain<'_, (String, String)> {
        self.departed.drain(..)
    }

    /// Queues an `sfu` message (`data`: a JSON object) for member `peer` of `room`. Returns
    /// false when there is no such member (it left meanwhile).
    pub fn push_sfu(&mut self, room: &str, peer: &str, data: Box<RawValue>) -> bool {
        let Some(&key) = self.by_peer.get(peer) else {
            return false;
        };
        if self.sessions.get(&key).is_none_or(|s| s.room != room) {
            return false;
        }
        let enc = ServerMessage::Sfu { data }.encode();
        self.deliver(key, &enc).is_some()
    }

    /// Queues an `sfu` message for every member of `room`.
    pub fn push_sfu_room(&mut self, room: &str, data: Box<RawValue>) {
        let enc = ServerMessage::Sfu { data }.encode();
        self.deliver_room(room, None, &enc);
    }

    /// The session of peer `peer`, if it is live.
    pub fn session_of(&self, peer: &str) -> Option<SessionKey> {
        self.by_peer.get(peer).copied()
    }

    /// The topology of `room`, if it exists.
    pub fn topology(&self, room: &str) -> Option<Topology> {
        self.store.room(room).map(|r| r.topology)
    }

    /// The earliest grace deadline, if any session is detached.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// Removes the sessions whose grace expired at `now` (`peer-left`, `reason: "timeout"`).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(d, key)) = self.deadlines.first() {
            if d > now {
                break;
            }
            self.deadlines.remove(&(d, key));
            if let Some(s) = self.sessions.get_mut(&key) {
                s.deadline = None;
            }
            self.remove(key, CloseReason::Timeout);
        }
    }

    /// Sessions that got new messages (sequenced or not), were superseded or ended since the
    /// last call, each once. Call after every hub call that can produce messages and wake the
    /// stream tasks of those sessions.
    pub fn drain_dirty(&mut self) -> impl Iterator<Item = SessionKey> {
        let dirty = std::mem::take(&mut self.dirty);
        for k in &dirty {
            if let Some(s) = self.sessions.get_mut(k) {
                s.dirty = false;
            }
        }
        dirty.into_iter()
    }

    /// Sessions that ended since the last call, with why.
    pub fn drain_closed(&mut self) -> impl Iterator<Item = (SessionKey, CloseReason)> {
        std::mem::take(&mut self.closed).into_iter()
    }

    /// The session's messages with `seq > after`, in order, borrowed from its replay buffer.
    /// `resume_failed` when the session is gone or the messages were dropped.
    pub fn pending_after(
        &self,
        key: SessionKey,
        after: u64,
    ) -> Result<impl Iterator<Item = (u64, &str)> + '_, ProtoError> {
        let s = self
            .sessions
            .get(&key)
            .ok_or_else(ProtoError::resume_failed)?;
        s.outbox
            .replay_after(after)
            .map_err(|g| ProtoError::new(ErrorCode::ResumeFailed, format!("{g} (join again)")))
    }

    /// Takes the unsequenced messages (`pong`) queued for `key`.
    pub fn take_unsequenced(&mut self, key: SessionKey) -> Vec<String> {
        self.sessions
            .get_mut(&key)
            .map(|s| s.unsequenced.drain(..).collect())
            .unwrap_or_default()
    }

    /// Last `seq` assigned on the session.
    pub fn last_seq(&self, key: SessionKey) -> Option<u64> {
        self.sessions.get(&key).map(|s| s.outbox.last_seq())
    }

    /// Counters.
    pub fn stats(&self) -> HubStats {
        HubStats {
            sessions: self.sessions.len(),
            attached: self.attached,
            buffered_bytes: self.buffered.load(Ordering::Relaxed),
            rooms: self.store.room_count(),
        }
    }
}

/// Room for the `"seq":N,` a message gets when queued.
const SEQ_ROOM: usize = 28;

/// `now + grace`, saturating far in the future instead of panicking on an absurd grace.
fn grace_deadline(now: Instant, grace: Duration) -> Instant {
    now.checked_add(grace)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

fn truncate_chars(s: String, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_owned(),
        None => s,
    }
}
