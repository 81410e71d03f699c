//! What the admin view (`/admin`) asks of signaling: every room with its members (on this node,
//! or across the cluster from Redis), removing members (`kicked` for the room, `removed` for
//! the client, which must not join again by itself), and message counters for the rates.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use icebreaker_signal::{ProtoError, RoomStore, SessionKey, SessionToken, Topology};
use serde_json::{json, Value};

use super::{Kind, SignalService};
use crate::cluster::OpError;

/// How long the tokens of removed sessions are answered with `removed` (then `resume_failed`).
pub const REMOVED_TTL: Duration = Duration::from_secs(600);
/// Removed sessions remembered at most (the oldest are forgotten first).
const REMOVED_MAX: usize = 10_000;
/// Rooms listed at most by `/admin/rooms`.
pub const MAX_LISTED_ROOMS: usize = 1000;

/// Sessions an operator removed.
#[derive(Debug, Default)]
pub(crate) struct Removed {
    keys: HashMap<SessionKey, Instant>,
    /// Hex SHA-256 of the tokens.
    tokens: HashMap<String, Instant>,
}

impl Removed {
    /// Remembers that session `key` (token digest `digest_hex`) was removed.
    pub(crate) fn insert(&mut self, key: Option<SessionKey>, digest_hex: String) {
        let now = Instant::now();
        self.prune(now);
        if let Some(k) = key {
            self.keys.insert(k, now);
        }
        self.tokens.insert(digest_hex, now);
    }

    fn prune(&mut self, now: Instant) {
        let fresh = |t: &Instant| now.saturating_duration_since(*t) < REMOVED_TTL;
        self.keys.retain(|_, t| fresh(t));
        self.tokens.retain(|_, t| fresh(t));
        for map_len in [self.keys.len(), self.tokens.len()] {
            if map_len >= REMOVED_MAX {
                // Rare (10,000 removals in 10 minutes): start over rather than sort.
                self.keys.clear();
                self.tokens.clear();
                break;
            }
        }
    }

    /// Whether session `key` was removed.
    pub(crate) fn has_key(&self, key: SessionKey) -> bool {
        self.keys.contains_key(&key)
    }

    /// Whether the session of `token` was removed (here).
    pub(crate) fn has_token(&self, token: &str) -> bool {
        SessionToken::well_formed(token)
            && self
                .tokens
                .get(&super::cluster::hex(
                    &icebreaker_signal::session::token_digest(token),
                ))
                .is_some_and(|t| t.elapsed() < REMOVED_TTL)
    }

    /// The refusal for a token no session has: `removed` or `resume_failed`.
    pub(crate) fn refusal(&self, token: &str) -> ProtoError {
        if self.has_token(token) {
            ProtoError::removed()
        } else {
            ProtoError::resume_failed()
        }
    }
}

/// Why an admin removal failed.
#[derive(Debug)]
pub enum AdminError {
    /// No such room.
    UnknownRoom,
    /// No such member in the room.
    UnknownPeer,
    /// The cluster store failed.
    Store(OpError),
}

/// Whether `room` is a room name the admin endpoints accept: 1 to 128 bytes without control
/// characters (the signaling rules are stricter; names of other front ends, such as
/// `socket.io/<room>`, contain `/`).
pub fn valid_room_name(room: &str) -> bool {
    !room.is_empty() && room.len() <= 128 && !room.chars().any(char::is_control)
}

/// Whether `peer` looks like a peer id: 1 to 64 of `A-Z a-z 0-9 - _`.
pub fn valid_peer_id(peer: &str) -> bool {
    !peer.is_empty()
        && peer.len() <= 64
        && peer
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn topology_str(t: Topology) -> &'static str {
    match t {
        Topology::Mesh => "mesh",
        Topology::Sfu => "sfu",
    }
}

fn kind_str(k: Option<Kind>) -> Value {
    match k {
        Some(Kind::WebSocket) => "websocket".into(),
        Some(Kind::Sse) => "sse".into(),
        Some(Kind::Poll) => "poll".into(),
        Some(Kind::SocketIo) => "socket.io".into(),
        Some(Kind::Phone) => "sip".into(),
        None => Value::Null,
    }
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl SignalService {
    /// `(in, out)`: signaling messages client → server and server → client since start
    /// (`icebreaker_signal_messages_total`; keepalives not counted).
    pub fn message_counts(&self) -> (u64, u64) {
        let m = self.gate.metrics();
        (m.signal_messages[0].get(), m.signal_messages[1].get())
    }

    /// The rooms and their members, for `/admin/rooms`: this node's hub, or in a cluster
    /// every room of the cluster (from Redis) with the node that holds each member.
    pub async fn admin_rooms(&self) -> Result<Value, OpError> {
        if let Some(c) = self.cluster() {
            let rooms = c.list_rooms(MAX_LISTED_ROOMS).await?;
            let now_ms = now_unix_ms();
            let inner = self.inner.lock();
            let age = |at: u64| (at > 0).then(|| now_ms.saturating_sub(at) / 1000);
            let list: Vec<Value> = rooms
                .rooms
                .into_iter()
                .map(|r| {
                    let members: Vec<Value> = r
                        .members
                        .into_iter()
                        .map(|m| {
                            let info: Value = serde_json::from_str(&m.info).unwrap_or(Value::Null);
                            // Held here: the transport is known.
                            let transport = if m.node == c.node() {
                                inner
                                    .hub
                                    .session_of(&m.peer)
                                    .and_then(|k| inner.io.get(&k))
                                    .map_or(Value::Null, |io| kind_str(io.last_kind))
                            } else {
                                Value::Null
                            };
                            json!({
                                "peer": m.peer,
                                "name": info.get("name").cloned().unwrap_or(Value::Null),
                                "meta": info.get("meta").cloned().unwrap_or(Value::Null),
                                "node": m.node,
                                "attached": m.attached,
                                "transport": transport,
                                "age_secs": age(m.at),
                            })
                        })
                        .collect();
                    json!({
                        "room": r.room,
                        "topology": r.topology,
                        "capacity": r.capacity,
                        "sfu_node": r.sfu_node,
                        "age_secs": age(r.at),
                        "members": members,
                        "signaling": signaling_of(&inner.meter, &r.room),
                    })
                })
                .collect();
            return Ok(json!({
                "node": c.node(),
                "cluster": true,
                "rooms": list,
                "truncated": rooms.truncated,
            }));
        }
        let inner = self.inner.lock();
        let store = inner.hub.store();
        let mut names = Vec::new();
        store.for_each_room(&mut |r| names.push(r.to_owned()));
        names.sort();
        let truncated = names.len() > MAX_LISTED_ROOMS;
        names.truncate(MAX_LISTED_ROOMS);
        let list: Vec<Value> = names
            .iter()
            .filter_map(|name| {
                let info = store.room(name)?;
                let mut oldest: Option<u64> = None;
                let members: Vec<Value> = store
                    .members(name)
                    .into_iter()
                    .map(|m| {
                        let key = inner.hub.session_of(&m.id);
                        let io = key.and_then(|k| inner.io.get(&k));
                        let age = io.map(|io| io.since.elapsed().as_secs());
                        if let Some(a) = age {
                            oldest = Some(oldest.map_or(a, |o| o.max(a)));
                        }
                        json!({
                            "peer": m.id,
                            "name": m.name,
                            "meta": m.meta,
                            "node": Value::Null,
                            "attached": key.is_some_and(|k| inner.hub.current_stream(k).is_some()),
                            "transport": io.map_or(Value::Null, |io| kind_str(io.last_kind)),
                            "age_secs": age,
                        })
                    })
                    .collect();
                Some(json!({
                    "room": name,
                    "topology": topology_str(info.topology),
                    "capacity": info.capacity,
                    "sfu_node": Value::Null,
                    "age_secs": oldest,
                    "members": members,
                    "signaling": signaling_of(&inner.meter, name),
                }))
            })
            .collect();
        Ok(json!({
            "node": Value::Null,
            "cluster": false,
            "rooms": list,
            "truncated": truncated,
        }))
    }

    /// Removes member `peer` of `room` (every member with `None`): the room gets `peer-left`
    /// `kicked`, the member's stream ends with `removed`, and its token is answered with
    /// `removed` from then on (for [`REMOVED_TTL`]). Returns the peers removed.
    pub async fn admin_remove(
        &self,
        room: &str,
        peer: Option<&str>,
    ) -> Result<Vec<String>, AdminError> {
        if let Some(c) = self.cluster() {
            let r = c
                .remove_members(room, peer.unwrap_or(""))
                .await
                .map_err(AdminError::Store)?;
            return match r.first().map(String::as_str) {
                Some("ok") => Ok(r.into_iter().skip(1).collect()),
                Some("nopeer") => Err(AdminError::UnknownPeer),
                _ => Err(AdminError::UnknownRoom),
            };
        }
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        if inner.hub.store().room(room).is_none() {
            return Err(AdminError::UnknownRoom);
        }
        let targets: Vec<String> = match peer {
            Some(p) if inner.hub.store().contains(room, p) => vec![p.to_owned()],
            Some(_) => return Err(AdminError::UnknownPeer),
            None => inner
                .hub
                .store()
                .members(room)
                .into_iter()
                .map(|m| m.id)
                .collect(),
        };
        let mut done = Vec::new();
        for p in targets {
            let Some(key) = inner.hub.session_of(&p) else {
                continue;
            };
            if let Some(d) = inner.hub.token_digest_of(key) {
                inner.removed.insert(Some(key), super::cluster::hex(&d));
            }
            if inner.hub.kick(key) {
                done.push(p);
            }
        }
        inner.wake();
        Ok(done)
    }

    /// In a cluster: another node (or this one) removed `peer`, held here.
    pub(crate) fn on_removed(&self, peer: &str) {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let Some(key) = inner.hub.session_of(peer) else {
            return;
        };
        let digest = inner
            .io
            .get(&key)
            .and_then(|io| io.cluster.as_ref())
            .map(|c| c.digest_hex.clone())
            .or_else(|| {
                inner
                    .hub
                    .token_digest_of(key)
                    .map(|d| super::cluster::hex(&d))
            });
        if let Some(d) = digest {
            inner.removed.insert(Some(key), d);
        }
        inner.hub.forget(key);
        inner.wake();
    }

    /// The refusal for a token whose session is not here: `removed` when an operator removed
    /// it (here, or in a cluster on any node), else `resume_failed`.
    pub(crate) async fn unknown_session(&self, token: &str) -> ProtoError {
        if self.inner.lock().removed.has_token(token) {
            return ProtoError::removed();
        }
        if let Some(c) = self.cluster() {
            if SessionToken::well_formed(token) {
                let d = super::cluster::hex(&icebreaker_signal::session::token_digest(token));
                if c.is_removed(&d).await.unwrap_or(false) {
                    return ProtoError::removed();
                }
            }
        }
        ProtoError::resume_failed()
    }
}

/// The `signaling` of a room in `/admin/rooms`: its call's messages and bytes on this node so
/// far (both directions, and `in`/`out`), `null` when this node holds none of its members.
fn signaling_of(meter: &super::meter::CallMeter, room: &str) -> Value {
    meter
        .live(room, std::time::Instant::now())
        .map_or(Value::Null, |c| {
            json!({
                "messages": c.total.messages,
                "bytes": c.total.bytes,
                "in": c.inbound,
                "out": c.outbound,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids() {
        assert!(valid_room_name("demo"));
        assert!(valid_room_name("socket.io/lobby"));
        assert!(!valid_room_name(""));
        assert!(!valid_room_name("a\nb"));
        assert!(!valid_room_name(&"x".repeat(129)));
        assert!(valid_peer_id("3fa2b0c1"));
        assert!(!valid_peer_id("3fa2/b0c1"));
        assert!(!valid_peer_id(""));
    }
}
