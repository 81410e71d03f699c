//! The signaling hub (rooms and sessions) driven by operation sequences from several clients,
//! with time advancing, checked against a model after every step.
//!
//! The input is read as: 5 configuration bytes (room and session limits, capacities, grace,
//! replay limits, whether room tokens are required), then operations. Client messages are built
//! as JSON text and go through `parse_client` like a transport's; one operation sends raw fuzz
//! bytes instead. Every outcome the model can predict is asserted (join refusals in the hub's
//! order, `unknown_peer` across rooms, `not_joined` for ended sessions, `resume_failed` for wrong
//! tokens and lost replays, grace expiry at exactly the model's deadlines), and after every step:
//! room membership equals the model's (in join order, within capacity), session and room counts
//! within the limits, each replay buffer within its count and byte caps and holding nothing
//! acknowledged, every session that got a message is in `drain_dirty`, every ended session is in
//! `drain_closed` once with its reason. Every message a client reads has the next `seq` (a
//! replayed `seq` has the same text as before), comes from a peer of its own room, and a tagged
//! `signal` reaches only its addressee, once.
#![no_main]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use icebreaker_signal::proto::parse_client;
use icebreaker_signal::token::{self, Perm};
use icebreaker_signal::{
    ClientMessage, CloseReason, ErrorCode, Handled, Hub, HubConfig, MemoryRoomStore, ProtoError,
    RoomStore, SessionKey, StreamId,
};
use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};

const SECRET: &[u8] = b"fuzz-secret";
const ROOMS: [&str; 4] = ["a", "b", "c", "room-d"];
const UNIX0: u64 = 1_767_225_600;
const MAX_CLIENTS: usize = 24;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// A client as the model sees it: what the hub should hold for it, and what it has read.
struct Client {
    key: SessionKey,
    peer: String,
    token: String,
    room: String,
    live: bool,
    can_signal: bool,
    can_broadcast: bool,
    stream: Option<StreamId>,
    old_streams: Vec<StreamId>,
    /// Grace deadline while no stream is attached.
    deadline: Option<Instant>,
    /// Highest `seq` acknowledged (ack, attach, resume), clamped to the last assigned.
    acked: u64,
    /// Highest `seq` read.
    seen: u64,
    /// Every text read, by `seq`.
    texts: BTreeMap<u64, String>,
    /// Tag → `seq` it arrived with.
    tags: HashMap<u64, u64>,
    /// `last_seq` at the last `drain_dirty`.
    last_at_drain: u64,
    /// Woken since the last `drain_dirty` (ping, attach).
    woken: bool,
    pongs: usize,
}

enum Tag {
    Signal { from: String, to: SessionKey },
    Broadcast { from: SessionKey, room: String },
}

struct Model {
    cfg: HubConfig,
    hub: Hub,
    t0: Instant,
    now: Instant,
    clients: Vec<Client>,
    /// Rooms: name → (capacity, members' keys in join order).
    rooms: HashMap<String, (u32, Vec<SessionKey>)>,
    /// Every peer id ever seen → the rooms it was in.
    peer_rooms: HashMap<String, HashSet<String>>,
    tags: HashMap<u64, Tag>,
    next_tag: u64,
    closed: Vec<(SessionKey, CloseReason)>,
}

fn ice(peer: &str) -> Value {
    json!([{"urls": ["turn:192.0.2.7:3478"], "username": format!("1:{peer}")}])
}

/// The harness tag of a `signal`/`broadcast` payload (written unescaped by the harness; data is
/// relayed verbatim, so a raw message's escaped look-alike is not taken for one).
fn tag_of(text: &str, v: &Value) -> Option<u64> {
    text.contains(r#"{"__fz":"#)
        .then(|| v["data"]["__fz"].as_u64())
        .flatten()
}

fn code<T>(r: &Result<T, ProtoError>) -> Option<ErrorCode> {
    r.as_ref().err().map(|e| e.code)
}

impl Model {
    fn unix(&self) -> u64 {
        UNIX0 + self.now.duration_since(self.t0).as_secs()
    }

    fn live_count(&self) -> usize {
        self.clients.iter().filter(|c| c.live).count()
    }

    fn pick(&self, b: u8) -> Option<usize> {
        (!self.clients.is_empty()).then(|| b as usize % self.clients.len())
    }

    fn by_key(&self, key: SessionKey) -> Option<usize> {
        self.clients.iter().position(|c| c.key == key)
    }

    /// A live client whose token is `tok`.
    fn by_token(&self, tok: &str) -> Option<usize> {
        self.clients.iter().position(|c| c.live && c.token == tok)
    }

    fn ended(&mut self, i: usize, why: CloseReason) {
        let c = &mut self.clients[i];
        assert!(c.live);
        c.live = false;
        c.stream = None;
        c.deadline = None;
        c.pongs = 0;
        let key = c.key;
        let room = c.room.clone();
        self.closed.push((key, why));
        if let Some((_, members)) = self.rooms.get_mut(&room) {
            members.retain(|k| *k != key);
            if members.is_empty() {
                self.rooms.remove(&room);
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Operations

    fn join(&mut self, inp: &mut Input<'_>) {
        let b = inp.byte();
        let t = inp.byte();
        let room = ROOMS[(b % 4) as usize];
        let capacity = match (b >> 2) % 8 {
            0..=2 => None,
            n => Some(u32::from(n) - 3), // 0..=4
        };
        let mut fields = vec![format!(r#""type":"join","room":"{room}""#)];
        if let Some(c) = capacity {
            fields.push(format!(r#""capacity":{c}"#));
        }
        if b & 0x20 != 0 {
            fields.push(format!(r#""name":"n{t}","id":"j{t}""#));
        }
        if b & 0x40 != 0 {
            fields.push(format!(
                r#""meta":{{"k": [ {t}, "{}" ] }}"#,
                "m".repeat(t as usize)
            ));
        }
        // Room tokens: what the join carries and what the hub should say about it.
        let exp = self.unix() + 60;
        let perms: Vec<Perm> = [Perm::Create, Perm::Signal, Perm::Broadcast]
            .into_iter()
            .enumerate()
            .filter(|(k, _)| t & (0x10 << k) != 0)
            .map(|(_, p)| p)
            .collect();
        let all = vec![Perm::Create, Perm::Signal, Perm::Broadcast];
        let choice = if self.cfg.token_secret.is_some() {
            t % 8
        } else {
            8
        };
        let (tok, tok_err, granted): (Option<String>, Option<ErrorCode>, Vec<Perm>) = match choice {
            8 => (None, None, all),
            0 => (None, Some(ErrorCode::Unauthorized), vec![]),
            1 => (Some("x.y.z".into()), Some(ErrorCode::Unauthorized), vec![]),
            2 => (
                Some(token::sign(SECRET, room, Some("sub"), exp, None)),
                None,
                all,
            ),
            3 => (
                Some(token::sign(SECRET, "*", None, exp, Some(&perms))),
                None,
                perms,
            ),
            4 => (
                Some(token::sign(SECRET, "elsewhere", None, exp, None)),
                Some(ErrorCode::Forbidden),
                vec![],
            ),
            5 => (
                Some(token::sign(SECRET, room, None, self.unix(), None)),
                Some(ErrorCode::Unauthorized),
                vec![],
            ),
            6 => (
                Some(token::sign(b"wrong", room, None, exp, None)),
                Some(ErrorCode::Unauthorized),
                vec![],
            ),
            _ => (
                Some(token::sign(SECRET, room, None, exp, Some(&perms))),
                None,
                perms,
            ),
        };
        // Without a secret the token is ignored: send one anyway now and then.
        let tok = tok.or_else(|| (t % 8 == 1).then(|| "x.y.z".to_owned()));
        if let Some(tok) = &tok {
            fields.push(format!(r#""token":"{tok}""#));
        }
        let text = format!("{{{}}}", fields.join(","));
        let j = match parse_client(&text, 65536) {
            Ok(ClientMessage::Join(j)) => j,
            other => panic!("harness join refused: {other:?} {text}"),
        };

        // The hub's order of checks.
        let max_cap = self.cfg.max_capacity;
        let cap = match capacity {
            None => Ok(self.cfg.default_capacity.clamp(2, max_cap.max(2))),
            Some(c) if (2..=max_cap).contains(&c) => Ok(c),
            Some(_) => Err(ErrorCode::BadMessage),
        };
        let expect = match (cap, tok_err) {
            (Err(e), _) => Err(e),
            (_, Some(e)) => Err(e),
            (Ok(cap), None) => {
                if self.live_count() >= self.cfg.max_sessions {
                    Err(ErrorCode::ServerFull)
                } else if let Some((rcap, members)) = self.rooms.get(room) {
                    if members.len() >= *rcap as usize {
                        Err(ErrorCode::RoomFull)
                    } else {
                        Ok((false, *rcap))
                    }
                } else if !granted.contains(&Perm::Create) {
                    Err(ErrorCode::Forbidden)
                } else if self.rooms.len() >= self.cfg.max_rooms {
                    Err(ErrorCode::ServerFull)
                } else {
                    Ok((true, cap))
                }
            }
        };
        let unix = self.unix();
        let res = self.hub.join(self.now, unix, j, ice);
        match (&res, expect) {
            (Ok(joined), Ok((created, cap))) => {
                let key = joined.key;
                let peer = joined.peer.clone();
                assert!(self.by_key(key).is_none(), "session key reused");
                let entry = self
                    .rooms
                    .entry(room.to_owned())
                    .or_insert_with(|| (cap, Vec::new()));
                assert_eq!(entry.1.is_empty(), created);
                entry.1.push(key);
                self.peer_rooms
                    .entry(peer.clone())
                    .or_default()
                    .insert(room.to_owned());
                if self.clients.len() >= MAX_CLIENTS {
                    if let Some(dead) = self.clients.iter().position(|c| !c.live) {
                        self.clients.remove(dead);
                    }
                }
                self.clients.push(Client {
                    key,
                    peer,
                    token: joined.session.as_str().to_owned(),
                    room: room.to_owned(),
                    live: true,
                    can_signal: granted.contains(&Perm::Signal),
                    can_broadcast: granted.contains(&Perm::Broadcast),
                    stream: None,
                    old_streams: Vec::new(),
                    deadline: Some(self.now + self.cfg.grace),
                    acked: 0,
                    seen: 0,
                    texts: BTreeMap::new(),
                    tags: HashMap::new(),
                    last_at_drain: 0,
                    woken: false,
                    pongs: 0,
                });
                let i = self.clients.len() - 1;
                // `joined` is seq 1 and says what the model expects.
                let first: Vec<(u64, String)> = self
                    .hub
                    .pending_after(key, 0)
                    .expect("joined held")
                    .map(|(s, t)| (s, t.to_owned()))
                    .collect();
                assert_eq!(first.len(), 1);
                let v: Value = serde_json::from_str(&first[0].1).expect("joined is JSON");
                assert_eq!(v["type"], "joined");
                assert_eq!(v["initiator"], created);
                assert_eq!(v["capacity"], cap);
                let others = v["peers"].as_array().expect("peers").len();
                assert_eq!(others, self.rooms[room].1.len() - 1);
                if b & 0x80 != 0 {
                    // WebSocket: attach right away.
                    self.attach_as(i, 0);
                }
            }
            (Err(e), Err(want)) => {
                assert_eq!(e.code, want, "join: {e}");
                if b & 0x20 != 0 {
                    assert_eq!(e.id.as_deref(), Some(format!("j{t}").as_str()));
                }
            }
            (got, want) => panic!("join: got {:?}, model expected {want:?}", code(got)),
        }
    }

    /// Whether the hub still holds every message of `key` after `last_seq`, and if so how many
    /// and how many bytes.
    fn held_after(&self, key: SessionKey, last_seq: u64) -> Option<(usize, usize)> {
        let it = self.hub.pending_after(key, last_seq).ok()?;
        Some(it.fold((0, 0), |(n, b), (_, t)| (n + 1, b + t.len())))
    }

    fn attach_as(&mut self, i: usize, last_seq: u64) {
        let key = self.clients[i].key;
        let could = self.clients[i].live && self.held_after(key, last_seq).is_some();
        let last = self.hub.last_seq(key);
        let res = self.hub.attach(self.now, key, last_seq);
        assert_eq!(res.is_ok(), could, "attach {last_seq}: {:?}", code(&res));
        if let Ok(att) = res {
            assert_eq!((att.key, att.from_seq), (key, last_seq));
            self.attached(i, att.stream, last_seq, last.unwrap_or(0));
        } else {
            assert_eq!(code(&res), Some(ErrorCode::ResumeFailed));
        }
    }

    fn attached(&mut self, i: usize, stream: StreamId, last_seq: u64, last_before: u64) {
        let c = &mut self.clients[i];
        if let Some(old) = c.stream.replace(stream) {
            assert_ne!(old, stream);
            c.old_streams.push(old);
            if c.old_streams.len() > 3 {
                c.old_streams.remove(0);
            }
        }
        c.deadline = None;
        c.acked = c.acked.max(last_seq.min(last_before));
        // The client continues after `last_seq` (it may rewind, or claim more than it read).
        c.seen = last_seq;
        c.woken = true;
    }

    fn last_seq_choice(&self, i: usize, b: u8) -> u64 {
        let c = &self.clients[i];
        let last = self.hub.last_seq(c.key).unwrap_or(c.seen);
        match b % 8 {
            0..=2 => c.seen,
            3 => c.seen.saturating_sub(1 + u64::from(b >> 3) % 4),
            4 => c.acked,
            5 => last + 1 + u64::from(b >> 3),
            6 => u64::MAX - u64::from(b >> 3),
            _ => u64::from(b >> 3),
        }
    }

    fn attach(&mut self, inp: &mut Input<'_>) {
        let (w, b) = (inp.byte(), inp.byte());
        if let Some(i) = self.pick(w) {
            let ls = self.last_seq_choice(i, b);
            self.attach_as(i, ls);
        }
    }

    fn resume(&mut self, inp: &mut Input<'_>) {
        let (w, sel, b) = (inp.byte(), inp.byte(), inp.byte());
        let Some(i) = self.pick(w) else { return };
        let own = self.clients[i].token.clone();
        let other = self
            .pick(sel.wrapping_mul(7))
            .map(|j| self.clients[j].token.clone());
        let tok = match sel % 6 {
            0..=2 => own,
            3 => other.unwrap_or_default(),
            4 => {
                // Same shape, one character changed.
                let mut t = own.into_bytes();
                let k = (sel as usize >> 3) % t.len().max(1);
                if let Some(ch) = t.get_mut(k) {
                    *ch = if *ch == b'A' { b'B' } else { b'A' };
                }
                String::from_utf8(t).unwrap_or_default()
            }
            _ => ["", "x", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "é"]
                [(sel >> 3) as usize % 4]
                .to_owned(),
        };
        let target = self.by_token(&tok);
        let ls = match target {
            Some(t) => self.last_seq_choice(t, b),
            None => u64::from(b),
        };
        let before = target.and_then(|t| self.held_after(self.clients[t].key, ls));
        let last = target.and_then(|t| self.hub.last_seq(self.clients[t].key));
        let res = self.hub.resume(self.now, &tok, ls, ice);
        let (Some(t), Some((held, bytes))) = (target, before) else {
            assert_eq!(
                code(&res),
                Some(ErrorCode::ResumeFailed),
                "resume of nothing"
            );
            return;
        };
        let key = self.clients[t].key;
        let last = last.unwrap_or(0);
        // `resumed` may exceed the limits by itself only; it cannot keep a replay that is
        // already at them.
        let limit = self.cfg.replay_limit.max(1);
        let fits = held < limit + 1 && bytes <= self.cfg.replay_max_bytes;
        match res {
            Ok(att) => {
                assert!(fits, "resume kept more than the limits allow");
                assert_eq!((att.key, att.from_seq), (key, ls));
                self.attached(t, att.stream, ls, last);
                // The replay, then `resumed` with the next seq.
                let items: Vec<(u64, String)> = self
                    .hub
                    .pending_after(key, ls)
                    .expect("replay held after resume")
                    .map(|(s, x)| (s, x.to_owned()))
                    .collect();
                assert_eq!(items.len(), held + 1);
                let (s, text) = items.last().expect("resumed");
                assert_eq!(*s, last + 1);
                let v: Value = serde_json::from_str(text).expect("resumed is JSON");
                assert_eq!(v["type"], "resumed");
                assert_eq!(v["peer"], self.clients[t].peer.as_str());
                let others = v["peers"].as_array().expect("peers").len();
                assert_eq!(others, self.rooms[&self.clients[t].room].1.len() - 1);
            }
            Err(e) => {
                assert!(!fits, "resume refused though the replay fits: {e}");
                // Refused with nothing changed (checked by `check`: seq, wake-ups, acks).
                assert_eq!(e.code, ErrorCode::ResumeFailed);
            }
        }
    }

    fn detach(&mut self, inp: &mut Input<'_>) {
        let (w, b) = (inp.byte(), inp.byte());
        let Some(i) = self.pick(w) else { return };
        let c = &self.clients[i];
        let stream = match (b % 3, c.stream) {
            (0 | 1, Some(s)) => s,
            _ => match c.old_streams.last() {
                Some(s) => *s,
                None => return,
            },
        };
        let current = c.live && c.stream == Some(stream);
        let got = self.hub.detach(self.now, c.key, stream);
        assert_eq!(got, current, "detach");
        if got {
            let c = &mut self.clients[i];
            c.stream = None;
            c.old_streams.push(stream);
            c.deadline = Some(self.now + self.cfg.grace);
        }
    }

    /// Reads up to n messages after what client i has seen, and its pongs.
    fn read(&mut self, inp: &mut Input<'_>) {
        let (w, n) = (inp.byte(), inp.byte());
        let Some(i) = self.pick(w) else { return };
        let key = self.clients[i].key;
        let pongs = self.hub.take_unsequenced(key);
        assert!(pongs.len() <= self.cfg.max_unsequenced.max(1));
        let want = match self.clients[i].live {
            true => self.clients[i].pongs.min(self.cfg.max_unsequenced.max(1)),
            false => 0,
        };
        assert_eq!(pongs.len(), want);
        self.clients[i].pongs = 0;
        for p in &pongs {
            let v: Value = serde_json::from_str(p).expect("pong is JSON");
            assert_eq!(v["type"], "pong");
            assert!(v.get("seq").is_none());
        }
        let seen = self.clients[i].seen;
        let items: Vec<(u64, String)> = match self.hub.pending_after(key, seen) {
            Ok(it) => it
                .take(n as usize % 8 + 1)
                .map(|(s, t)| (s, t.to_owned()))
                .collect(),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::ResumeFailed);
                // Gone, or the client claimed a seq past the last / rewound past the replay.
                return;
            }
        };
        for (seq, text) in items {
            self.check_message(i, seq, &text);
        }
    }

    fn check_message(&mut self, i: usize, seq: u64, text: &str) {
        let c = &self.clients[i];
        assert_eq!(seq, c.seen + 1, "seq gap or repeat");
        if let Some(prev) = c.texts.get(&seq) {
            assert_eq!(prev, text, "seq {seq} replayed with another text");
        }
        let v: Value = serde_json::from_str(text).expect("server message is JSON");
        assert_eq!(v["seq"], seq);
        let in_my_room = |p: &str| {
            self.peer_rooms
                .get(p)
                .is_some_and(|rooms| rooms.contains(&c.room))
        };
        let ty = v["type"].as_str().expect("type");
        match ty {
            "joined" => {
                assert_eq!(seq, 1);
                assert_eq!(v["peer"], c.peer.as_str());
                assert_eq!(v["room"], c.room.as_str());
                assert_eq!(v["session"], c.token.as_str());
            }
            "resumed" => {
                assert_eq!(v["peer"], c.peer.as_str());
                assert_eq!(v["room"], c.room.as_str());
                for p in v["peers"].as_array().expect("peers") {
                    let id = p["id"].as_str().expect("id");
                    assert!(id != c.peer && in_my_room(id));
                }
            }
            "peer-joined" => {
                let id = v["peer"]["id"].as_str().expect("id");
                assert!(id != c.peer && in_my_room(id), "peer-joined from elsewhere");
            }
            "peer-left" => {
                let id = v["peer"].as_str().expect("id");
                assert!(id != c.peer && in_my_room(id), "peer-left from elsewhere");
            }
            "signal" | "broadcast" => {
                let from = v["from"].as_str().expect("from");
                assert!(in_my_room(from), "{ty} from a peer of another room");
                assert_ne!(from, c.peer, "{ty} echoed to its sender");
                if let Some(tag) = tag_of(text, &v) {
                    match self.tags.get(&tag) {
                        Some(Tag::Signal { from: f, to }) => {
                            assert_eq!(ty, "signal");
                            assert_eq!(*to, c.key, "signal reached the wrong peer");
                            assert_eq!(f, from);
                        }
                        Some(Tag::Broadcast { from: f, room }) => {
                            assert_eq!(ty, "broadcast");
                            assert_eq!(room, &c.room, "broadcast reached another room");
                            assert_ne!(*f, c.key);
                        }
                        None => panic!("unknown tag {tag}"),
                    }
                    if let Some(s) = c.tags.get(&tag) {
                        assert_eq!(*s, seq, "tag {tag} delivered twice");
                    }
                }
            }
            "error" => {
                assert!(v["code"].is_string() && v["message"].is_string());
            }
            other => panic!("unexpected sequenced message type {other}"),
        }
        let tag = tag_of(text, &v);
        let c = &mut self.clients[i];
        if let Some(tag) = tag {
            c.tags.insert(tag, seq);
        }
        c.texts.insert(seq, text.to_owned());
        c.seen = seq;
    }

    /// Sends `msg` from client i and checks the outcome the model predicts.
    fn send(&mut self, i: usize, msg: ClientMessage, tag: Option<u64>) {
        let c = &self.clients[i];
        let key = c.key;
        let last = self.hub.last_seq(key);
        let id = msg.id().map(str::to_owned);
        let expect: Result<Handled, ErrorCode> = if !c.live {
            Err(ErrorCode::NotJoined)
        } else {
            match &msg {
                ClientMessage::Join(_) => Err(ErrorCode::AlreadyJoined),
                ClientMessage::Resume(_) => Err(ErrorCode::BadMessage),
                ClientMessage::Signal(s) => {
                    let to_here = self
                        .clients
                        .iter()
                        .any(|d| d.live && d.peer == s.to && d.room == c.room && d.key != c.key);
                    if !c.can_signal {
                        Err(ErrorCode::Forbidden)
                    } else if to_here {
                        Ok(Handled::Ok)
                    } else {
                        Err(ErrorCode::UnknownPeer)
                    }
                }
                ClientMessage::Broadcast(_) if !c.can_broadcast => Err(ErrorCode::Forbidden),
                ClientMessage::Leave { .. } => Ok(Handled::Left),
                _ => Ok(Handled::Ok),
            }
        };
        if let (Some(tag), Ok(_)) = (tag, &expect) {
            let t = match &msg {
                ClientMessage::Signal(s) => Tag::Signal {
                    from: c.peer.clone(),
                    to: self
                        .clients
                        .iter()
                        .find(|d| d.live && d.peer == s.to)
                        .map(|d| d.key)
                        .expect("target"),
                },
                _ => Tag::Broadcast {
                    from: key,
                    room: c.room.clone(),
                },
            };
            self.tags.insert(tag, t);
        }
        let ack = match &msg {
            ClientMessage::Ack { seq } => Some(*seq),
            _ => None,
        };
        let ping = matches!(msg, ClientMessage::Ping { .. });
        let res = self.hub.handle(self.now, key, msg);
        match (&res, expect) {
            (Ok(got), Ok(want)) => assert_eq!(*got, want),
            (Err(e), Err(want)) => {
                assert_eq!(e.code, want, "{e}");
                assert_eq!(e.id, id, "ref");
                if want == ErrorCode::NotJoined {
                    assert_eq!(self.hub.last_seq(key), None);
                } else {
                    // Queued as the session's next message.
                    assert_eq!(self.hub.last_seq(key), last.map(|l| l + 1));
                }
            }
            (got, want) => panic!("handle: got {:?}, model expected {want:?}", code(got)),
        }
        if res.is_ok() {
            if let Some(seq) = ack {
                let c = &mut self.clients[i];
                c.acked = c.acked.max(seq.min(last.unwrap_or(0)));
            }
            if ping {
                self.clients[i].pongs += 1;
                self.clients[i].woken = true;
            }
            if res == Ok(Handled::Left) {
                self.ended(i, CloseReason::Left);
            }
        }
    }

    fn signal(&mut self, inp: &mut Input<'_>) {
        let (w, sel, pad) = (inp.byte(), inp.byte(), inp.byte());
        let Some(i) = self.pick(w) else { return };
        let to = match sel % 4 {
            0 | 1 => {
                // Somebody (maybe in another room, maybe gone, maybe oneself).
                let j = (sel >> 2) as usize % self.clients.len();
                self.clients[j].peer.clone()
            }
            2 => {
                // A live peer of the same room, if any.
                let c = &self.clients[i];
                let same: Vec<&Client> = self
                    .clients
                    .iter()
                    .filter(|d| d.live && d.room == c.room && d.key != c.key)
                    .collect();
                match same.get((sel >> 2) as usize % same.len().max(1)) {
                    Some(d) => d.peer.clone(),
                    None => "00000000".into(),
                }
            }
            _ => ["00000000", "", "ZZZZZZZZ", "a\"b"][(sel >> 2) as usize % 4].to_owned(),
        };
        self.next_tag += 1;
        let tag = self.next_tag;
        let text = format!(
            r#"{{"type":"signal","to":{},"id":"s{tag}","data":{{"__fz":{tag},"pad":"{}"}}}}"#,
            serde_json::to_string(&to).expect("str"),
            "p".repeat(pad as usize * 4)
        );
        let msg = parse_client(&text, 65536).expect("harness signal");
        self.send(i, msg, Some(tag));
    }

    fn broadcast(&mut self, inp: &mut Input<'_>) {
        let (w, pad) = (inp.byte(), inp.byte());
        let Some(i) = self.pick(w) else { return };
        self.next_tag += 1;
        let tag = self.next_tag;
        let text = format!(
            r#"{{"type":"broadcast","data":{{"__fz":{tag},"pad":"{}"}}}}"#,
            "p".repeat(pad as usize * 4)
        );
        let msg = parse_client(&text, 65536).expect("harness broadcast");
        self.send(i, msg, Some(tag));
    }

    fn simple(&mut self, inp: &mut Input<'_>, op: u8) {
        let (w, b) = (inp.byte(), inp.byte());
        let Some(i) = self.pick(w) else { return };
        let text = match op {
            0 => {
                let seq = self.last_seq_choice(i, b);
                format!(r#"{{"type":"ack","seq":{seq}}}"#)
            }
            1 => format!(r#"{{"type":"ping","id":"p{b}"}}"#),
            2 => r#"{"type":"leave"}"#.to_owned(),
            3 => r#"{"type":"join","room":"a"}"#.to_owned(),
            _ => format!(
                r#"{{"type":"resume","session":"{}","last_seq":{b}}}"#,
                self.clients[i].token
            ),
        };
        let msg = parse_client(&text, 65536).expect("harness message");
        self.send(i, msg, None);
    }

    /// Raw bytes as a message from client i, as a transport would handle them.
    fn raw(&mut self, inp: &mut Input<'_>) {
        let (w, n) = (inp.byte(), inp.byte());
        let bytes = inp.bytes(n as usize).to_vec();
        let Some(i) = self.pick(w) else { return };
        let text = String::from_utf8_lossy(&bytes);
        if text.contains("__fz") {
            return; // would forge a harness tag (an escaped one is not read as a tag)
        }
        match parse_client(&text, 200) {
            Ok(msg) => self.send(i, msg, None),
            Err(e) => {
                let key = self.clients[i].key;
                let last = self.hub.last_seq(key);
                let seq = self.hub.push_error(key, &e);
                assert_eq!(seq, last.map(|l| l + 1));
            }
        }
    }

    fn kick(&mut self, inp: &mut Input<'_>) {
        let w = inp.byte();
        let Some(i) = self.pick(w) else { return };
        let live = self.clients[i].live;
        assert_eq!(self.hub.kick(self.clients[i].key), live);
        if live {
            self.ended(i, CloseReason::Kicked);
        }
    }

    fn lookup(&mut self, inp: &mut Input<'_>) {
        let w = inp.byte();
        let Some(i) = self.pick(w) else { return };
        let c = &self.clients[i];
        let want = c.live.then_some(c.key);
        assert_eq!(self.hub.lookup(&c.token), want);
        assert_eq!(
            self.hub.lookup(&c.token[..c.token.len().saturating_sub(1)]),
            None
        );
    }

    fn advance(&mut self, inp: &mut Input<'_>) {
        let b = inp.byte();
        let step = if b & 0x80 != 0 {
            Duration::from_secs(u64::from(b & 0x7f))
        } else {
            Duration::from_millis(u64::from(b) * 50)
        };
        self.now += step;
    }

    fn timeout(&mut self) {
        let due: Vec<usize> = (0..self.clients.len())
            .filter(|&i| {
                let c = &self.clients[i];
                c.live && c.deadline.is_some_and(|d| d <= self.now)
            })
            .collect();
        self.hub.handle_timeout(self.now);
        for i in due {
            self.ended(i, CloseReason::Timeout);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Invariants after every step

    fn check(&mut self) {
        let stats = self.hub.stats();
        let live = self.live_count();
        assert_eq!(stats.sessions, live);
        assert!(stats.sessions <= self.cfg.max_sessions);
        assert_eq!(stats.rooms, self.rooms.len());
        assert!(stats.rooms <= self.cfg.max_rooms);
        let attached = self
            .clients
            .iter()
            .filter(|c| c.live && c.stream.is_some())
            .count();
        assert_eq!(stats.attached, attached);

        // Membership, in join order, within capacity.
        let max_cap = self.cfg.max_capacity.max(2);
        for (name, (cap, keys)) in &self.rooms {
            let info = self.hub.store().room(name).expect("room exists");
            assert_eq!(info.capacity, *cap);
            assert!((2..=max_cap).contains(cap));
            assert!(keys.len() <= *cap as usize);
            let ids: Vec<String> = self
                .hub
                .store()
                .members(name)
                .into_iter()
                .map(|m| m.id)
                .collect();
            let want: Vec<String> = keys
                .iter()
                .map(|k| {
                    self.clients
                        .iter()
                        .find(|c| c.key == *k)
                        .map(|c| c.peer.clone())
                })
                .map(|p| p.expect("member is a client"))
                .collect();
            assert_eq!(ids, want, "members of {name}");
        }

        // Grace timers.
        let earliest = self
            .clients
            .iter()
            .filter(|c| c.live)
            .filter_map(|c| c.deadline)
            .min();
        assert_eq!(self.hub.poll_timeout(), earliest);

        // Per session.
        let limit = self.cfg.replay_limit.max(1);
        for c in &self.clients {
            assert_eq!(self.hub.contains(c.key), c.live);
            if !c.live {
                assert!(self.hub.pending_after(c.key, 0).is_err());
                continue;
            }
            assert_eq!(self.hub.current_stream(c.key), c.stream);
            assert_eq!(
                self.hub.peer_and_room(c.key),
                Some((c.peer.as_str(), c.room.as_str()))
            );
            let last = self.hub.last_seq(c.key).expect("live");
            assert!(c.acked <= last);
            // The oldest held: the smallest `after` the replay still answers.
            let (mut lo, mut hi) = (0u64, last);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if self.hub.pending_after(c.key, mid).is_ok() {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            assert!(lo >= c.acked, "acknowledged messages still held");
            let held: Vec<(u64, &str)> = self.hub.pending_after(c.key, lo).expect("held").collect();
            assert!(held.len() <= limit + 1, "replay over its count limit");
            let older: usize = held.iter().rev().skip(1).map(|(_, t)| t.len()).sum();
            assert!(
                older <= self.cfg.replay_max_bytes,
                "replay over its byte cap"
            );
            for (k, (s, _)) in held.iter().enumerate() {
                assert_eq!(*s, lo + 1 + k as u64);
            }
            assert_eq!(held.last().map_or(last, |(s, _)| *s), last);
        }

        // Wake-ups and closes.
        let dirty: HashSet<SessionKey> = self.hub.drain_dirty().collect();
        for c in &mut self.clients {
            let last = self.hub.last_seq(c.key);
            if let Some(last) = last {
                if last > c.last_at_drain || c.woken {
                    assert!(
                        dirty.contains(&c.key),
                        "session {:?} with news was not woken: seq {} → {last}, woken {}",
                        c.key,
                        c.last_at_drain,
                        c.woken
                    );
                }
                c.last_at_drain = last;
            }
            c.woken = false;
        }
        let mut closed: Vec<(SessionKey, CloseReason)> = self.hub.drain_closed().collect();
        for (k, _) in &closed {
            assert!(dirty.contains(k), "an ended session was not woken");
        }
        closed.sort_by_key(|(k, _)| *k);
        let mut want = std::mem::take(&mut self.closed);
        want.sort_by_key(|(k, _)| *k);
        assert_eq!(closed, want);
    }
}

/// `SIGNAL_HUB_TRACE=1` prints each operation (for reading a crash).
fn trace() -> bool {
    static T: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *T.get_or_init(|| std::env::var_os("SIGNAL_HUB_TRACE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let (c0, c1, c2, c3, c4) = (inp.byte(), inp.byte(), inp.byte(), inp.byte(), inp.byte());
    let cfg = HubConfig {
        max_rooms: usize::from(c0 % 4),
        max_sessions: usize::from((c0 >> 2) % 9),
        max_capacity: u32::from(c1 % 6),
        default_capacity: u32::from((c1 >> 3) % 6),
        grace: Duration::from_secs(u64::from(c2 % 8) * 5),
        replay_limit: usize::from(c2 >> 3) % 12,
        replay_max_bytes: 64 * (1 + usize::from(c3 % 32)),
        // The global buffer cap is not modelled (tests/hub.rs covers it): never reached here.
        max_buffered_bytes: usize::MAX,
        max_unsequenced: usize::from(c3 >> 5),
        token_secret: (c4 & 1 != 0).then(|| SECRET.to_vec()),
        // Topology switches are not modelled (tests/hub.rs covers them): no SFU, rooms stay
        // meshes, `sfu` messages are refused like any misuse.
        sfu: false,
        mesh_max: 4,
        // `sip` messages go to a queue the gateway drains (not modelled): on or off, they are
        // queued or refused; the queue is drained like the SFU's.
        sip_dial: c4 & 2 != 0,
    };
    let t0 = Instant::now();
    let mut m = Model {
        hub: Hub::with_store(
            cfg.clone(),
            MemoryRoomStore::new(),
            StdRng::seed_from_u64(u64::from(c4)),
        ),
        cfg,
        t0,
        now: t0,
        clients: Vec::new(),
        rooms: HashMap::new(),
        peer_rooms: HashMap::new(),
        tags: HashMap::new(),
        next_tag: 0,
        closed: Vec::new(),
    };
    let mut steps = 0;
    while !inp.0.is_empty() && steps < 2000 {
        steps += 1;
        let op = inp.byte();
        if trace() {
            eprintln!(
                "op {op:#04x} ({}) at +{:?}: {:?}",
                op % 16,
                m.now - t0,
                &inp.0[..inp.0.len().min(3)]
            );
        }
        match op % 16 {
            0 | 1 => m.join(&mut inp),
            2 => m.attach(&mut inp),
            3 => m.resume(&mut inp),
            4 => m.detach(&mut inp),
            5 | 6 => m.read(&mut inp),
            7 => m.signal(&mut inp),
            8 => m.broadcast(&mut inp),
            9 => m.simple(&mut inp, op >> 4),
            10 => m.raw(&mut inp),
            11 => m.kick(&mut inp),
            12 => m.lookup(&mut inp),
            13 => m.advance(&mut inp),
            14 => m.timeout(),
            _ => {
                m.advance(&mut inp);
                m.timeout();
            }
        }
        m.check();
    }
});
