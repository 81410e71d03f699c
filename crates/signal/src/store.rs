//! Room state behind the [`RoomStore`] trait, with the in-memory [`MemoryRoomStore`].
//!
//! The store owns *membership* (which peers are in which room, the room's capacity and who
//! created it); the [`Hub`](crate::Hub) owns *sessions* (tokens, outboxes, streams, grace
//! timers) and delivery. The trait is synchronous on purpose: the hub is sans-IO and runs under
//! the server's lock, so a store call must not block or await.
//!
//! A clustered store (rooms spanning nodes through Redis) fits behind the same trait as a
//! write-through cache: [`RoomStore::admit`] is the one operation that must be atomic across nodes
//! (create-if-absent + capacity check + add, a Lua script on Redis), so a clustered implementation
//! answers it from its local view and the I/O layer confirms it remotely (or the trait grows a
//! command/answer split then); membership changes made by other nodes arrive by pub/sub and are
//! applied by the I/O layer to the local view; messages for peers on other nodes are forwarded by
//! the I/O layer. Protocol code (the hub) does not change.

use std::collections::HashMap;

use crate::proto::{PeerInfo, Topology};

/// Why [`RoomStore::admit`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The room is at its capacity.
    RoomFull,
    /// Creating the room would exceed `max_rooms`.
    TooManyRooms,
    /// The room does not exist and the caller may not create it.
    CreateForbidden,
    /// The peer id is already a member.
    Duplicate,
    /// A backend failure (for remote stores).
    Backend(String),
}

/// A room's properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// Capacity, set when the room was created.
    pub capacity: u32,
    /// Peer id of the member that created it.
    pub creator: String,
    /// Its topology now.
    pub topology: Topology,
    /// Whether it may switch from mesh to SFU as it grows.
    pub auto: bool,
}

/// The properties a room gets when an admission creates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomSpec {
    /// Capacity.
    pub capacity: u32,
    /// Initial topology.
    pub topology: Topology,
    /// Whether it may switch from mesh to SFU as it grows.
    pub auto: bool,
}

/// What [`RoomStore::admit`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    /// The room was created by this admission (the member is its initiator).
    pub created: bool,
    /// The room's capacity.
    pub capacity: u32,
    /// The room's topology (before this admission's possible switch).
    pub topology: Topology,
    /// Whether the room may switch from mesh to SFU.
    pub auto: bool,
    /// The other members, in join order.
    pub others: Vec<PeerInfo>,
}

/// Room membership. See the module docs for the clustering story.
pub trait RoomStore {
    /// Atomically: create `room` if absent (only when `may_create`, with `spec`, refusing
    /// with [`StoreError::TooManyRooms`] when `max_rooms` rooms exist), refuse with
    /// [`StoreError::RoomFull`] at capacity, and add `member`.
    fn admit(
        &mut self,
        room: &str,
        member: PeerInfo,
        spec: RoomSpec,
        may_create: bool,
        max_rooms: usize,
    ) -> Result<Admission, StoreError>;

    /// Sets the topology of `room` (no-op if absent).
    fn set_topology(&mut self, room: &str, topology: Topology);

    /// Removes `peer` from `room`; the room disappears with its last member. Returns whether the
    /// peer was a member.
    fn remove(&mut self, room: &str, peer: &str) -> bool;

    /// Whether `peer` is a member of `room`.
    fn contains(&self, room: &str, peer: &str) -> bool;

    /// Calls `f` with each member of `room`, in join order (nothing if the room does not exist).
    fn for_each_member(&self, room: &str, f: &mut dyn FnMut(&PeerInfo));

    /// The room's properties, if it exists.
    fn room(&self, room: &str) -> Option<RoomInfo>;

    /// Number of rooms.
    fn room_count(&self) -> usize;

    /// Calls `f` with the name of each room (in no particular order).
    fn for_each_room(&self, f: &mut dyn FnMut(&str));

    /// The members of `room` (allocates; see [`RoomStore::for_each_member`]).
    fn members(&self, room: &str) -> Vec<PeerInfo> {
        let mut out = Vec::new();
        self.for_each_member(room, &mut |m| out.push(m.clone()));
        out
    }
}

#[derive(Debug)]
struct Room {
    capacity: u32,
    creator: String,
    topology: Topology,
    auto: bool,
    /// Join order; capacity-bounded, so linear scans are cheap.
    members: Vec<PeerInfo>,
}

/// The default, in-process [`RoomStore`].
#[derive(Debug, Default)]
pub struct MemoryRoomStore {
    rooms: HashMap<String, Room>,
}

impl MemoryRoomStore {
    /// Empty.
    pub fn new() -> Self {
        MemoryRoomStore::default()
    }
}

impl RoomStore for MemoryRoomStore {
    fn admit(
        &mut self,
        room: &str,
        member: PeerInfo,
        spec: RoomSpec,
        may_create: bool,
        max_rooms: usize,
    ) -> Result<Admission, StoreError> {
        if let Some(r) = self.rooms.get_mut(room) {
            if r.members.iter().any(|m| m.id == member.id) {
                return Err(StoreError::Duplicate);
            }
            if r.members.len() >= r.capacity as usize {
                return Err(StoreError::RoomFull);
            }
            let others = r.members.clone();
            r.members.push(member);
            return Ok(Admission {
                created: false,
                capacity: r.capacity,
                topology: r.topology,
                auto: r.auto,
                others,
            });
        }
        if !may_create {
            return Err(StoreError::CreateForbidden);
        }
        if self.rooms.len() >= max_rooms {
            return Err(StoreError::TooManyRooms);
        }
        if spec.capacity == 0 {
            return Err(StoreError::RoomFull);
        }
        let creator = member.id.clone();
        self.rooms.insert(
            room.to_owned(),
            Room {
                capacity: spec.capacity,
                creator,
                topology: spec.topology,
                auto: spec.auto,
                members: vec![member],
            },
        );
        Ok(Admission {
            created: true,
            capacity: spec.capacity,
            topology: spec.topology,
            auto: spec.auto,
            others: Vec::new(),
        })
    }

    fn set_topology(&mut self, room: &str, topology: Topology) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.topology = topology;
        }
    }

    fn remove(&mut self, room: &str, peer: &str) -> bool {
        let Some(r) = self.rooms.get_mut(room) else {
            return false;
        };
        let before = r.members.len();
        r.members.retain(|m| m.id != peer);
        let removed = r.members.len() != before;
        if r.members.is_empty() {
            self.rooms.remove(room);
        }
        removed
    }

    fn contains(&self, room: &str, peer: &str) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.members.iter().any(|m| m.id == peer))
    }

    fn for_each_member(&self, room: &str, f: &mut dyn FnMut(&PeerInfo)) {
        if let Some(r) = self.rooms.get(room) {
            r.members.iter().for_each(f);
        }
    }

    fn room(&self, room: &str) -> Option<RoomInfo> {
        self.rooms.get(room).map(|r| RoomInfo {
            capacity: r.capacity,
            creator: r.creator.clone(),
            topology: r.topology,
            auto: r.auto,
        })
    }

    fn room_count(&self) -> usize {
        self.rooms.len()
    }

    fn for_each_room(&self, f: &mut dyn FnMut(&str)) {
        self.rooms.keys().for_each(|k| f(k));
    }
}
