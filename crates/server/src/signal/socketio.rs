//! `/socket.io/`: the socket.io protocol (v4, engine.io v4, with `socketioxide`) speaking the
//! events of Google's classic WebRTC codelab, on top of the hub (docs/PROTOCOL.md, "socket.io
//! compatibility").
//!
//! A socket that emits `create or join` becomes a hub session in the hub room
//! `socket.io/<room>` (capacity 2, mesh), exactly as if it had joined over `/ws`: the join gate,
//! room tokens, limits, the cluster and the metrics apply. Its events are hub messages:
//!
//! | socket.io (client → server)  | hub                                                     |
//! |------------------------------|---------------------------------------------------------|
//! | `create or join` (room)      | `join` of `socket.io/<room>`, capacity 2, mesh          |
//! | `message` (data[, room])     | `broadcast` with `data` = the argument's JSON            |
//! | disconnect                   | `leave` at once (socket.io has no resume)                |
//!
//! | hub (server → client)        | socket.io                                                |
//! |------------------------------|----------------------------------------------------------|
//! | `joined`, first member       | `log`…, `created` (room, socket id)                      |
//! | `joined`, second member      | `log`…, `joined` (room, socket id), `ready`              |
//! | `peer-joined`                | `join` (room), `ready`                                   |
//! | `broadcast`                  | `message` (data)                                         |
//! | `peer-left`                  | `message` (`"bye"`)                                      |
//! | `error`                      | `log` (the refusal)                                      |
//!
//! Each socket has one task ([`Conn::run`]) that handles its events in order and copies what
//! the hub queued for its session out of the replay buffer, like the WebSocket transport's
//! task; socketioxide's handlers only hand the events over (they run as separate tasks, which
//! would not keep their order).

use std::sync::Arc;
use std::time::{Duration, Instant};

use icebreaker_signal::proto::{valid_room, SOCKETIO_ROOM_PREFIX};
use icebreaker_signal::{
    Broadcast, ClientMessage, ErrorCode, Join, ProtoError, RateLimiter, TopologyRequest,
};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts, Value as SioValue};
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::Socket;
use socketioxide::{SendError, SocketError, SocketIo};
use tokio::sync::{mpsc, Notify};

use super::{notified, Attachment, End, Kind, Open, SignalService, MAX_BAD_IN_A_ROW};

/// Members of a socket.io room (the codelab's rooms hold two).
pub const CAPACITY: u32 = 2;
/// Events waiting for a socket's task; more are refused like a rate-limit excess.
const EVENT_QUEUE: usize = 256;
/// Packets socketioxide buffers per socket before an emit fails (then the task retries).
const SOCKET_BUFFER: usize = 1024;
/// Wait before retrying emits after the socket's buffer was full.
const RETRY: Duration = Duration::from_millis(20);
/// The first element of every `log` the codelab's server emits.
const LOG_HEAD: &str = "Message from server:";

/// The socket.io layer for the HTTP router: `/socket.io/` (polling and WebSocket), namespace
/// `/` only (others are refused by socketioxide with a `connect_error`).
pub(crate) fn layer(svc: Arc<SignalService>) -> SocketIoLayer {
    let settings = svc.settings();
    let limit = super::ws::transport_limit(settings.max_message);
    let (layer, io) = SocketIo::builder()
        .req_path("/socket.io")
        .max_payload(u64::try_from(limit).unwrap_or(u64::MAX))
        .ws_max_message_size(limit)
        .ws_max_frame_size(limit)
        .ws_read_buffer_size(super::ws::WS_READ_BUFFER)
        .max_buffer_size(SOCKET_BUFFER)
        .build_layer();
    let check = svc.clone();
    let middleware = move |s: SocketRef, TryData(auth): TryData<Value>| {
        let r = check.socketio_admit(&s, auth.ok().as_ref());
        async move { r }
    };
    let handler = move |s: SocketRef, TryData(auth): TryData<Value>| {
        connected(&svc, &s, auth.ok().as_ref());
        async {}
    };
    io.ns("/", handler.with(middleware));
    layer
}

/// The room token of a handshake: `auth: {token}` or the query's `token`.
fn handshake_token(s: &SocketRef, auth: Option<&Value>) -> Option<String> {
    if let Some(t) = auth.and_then(|a| a.get("token")).and_then(Value::as_str) {
        return Some(t.to_owned());
    }
    let query = s.req_parts().uri.query()?;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "token").then(|| percent_decode(v))
    })
}

/// `%XX` and `+` decoding of a query value (a JWT needs none, but a client may encode it).
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(x) = hex {
                    out.push(x);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl SignalService {
    /// The checks before a socket.io client is connected (a refusal is its `connect_error`):
    /// the Origin (the same rules as `/ws`), and a room token when the server requires them.
    fn socketio_admit(&self, s: &SocketRef, auth: Option<&Value>) -> Result<(), String> {
        self.check_origin(&s.req_parts().headers)
            .map_err(|e| format!("{}: {}", e.code.as_str(), e.message))?;
        let needs_token = self.inner.lock().hub.config().token_secret.is_some();
        if needs_token && handshake_token(s, auth).is_none() {
            return Err(
                "unauthorized: this server requires a room token (auth: {token} or ?token=)".into(),
            );
        }
        Ok(())
    }
}

/// A socket connected: its handlers hand events to its task (registered before this returns,
/// so that no event can come first).
fn connected(svc: &Arc<SignalService>, s: &SocketRef, auth: Option<&Value>) {
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let gone = Arc::new(Notify::new());
    let overflow = Arc::new(Notify::new());
    {
        let overflow = overflow.clone();
        s.on_fallback(move |RawEvent(raw): RawEvent| {
            if tx.try_send(raw).is_err() {
                overflow.notify_one();
            }
            async {}
        });
    }
    {
        let gone = gone.clone();
        s.on_disconnect(move || {
            gone.notify_one();
            async {}
        });
    }
    let parts = s.req_parts();
    let host = super::request_host(&parts.headers);
    let client = parts
        .extensions
        .get::<crate::http::ConnInfo>()
        .map(|c| c.addr.ip());
    let settings = svc.settings();
    let conn = Conn {
        svc: svc.clone(),
        socket: s.clone(),
        sid: s.id.to_string(),
        host,
        client,
        token: handshake_token(s, auth),
        limiter: RateLimiter::new(settings.rate, settings.burst),
        max_message: settings.max_message,
        bad_in_a_row: 0,
        session: None,
    };
    tokio::spawn(conn.run(rx, gone, overflow));
}

/// An event as received: its packet's JSON text (`["event", args…]`), or `None` when it came
/// with binary attachments (not supported: signaling is JSON).
struct RawEvent(Option<String>);

impl FromMessageParts<LocalAdapter> for RawEvent {
    type Error = std::convert::Infallible;

    fn from_message_parts(
        _: &Arc<Socket<LocalAdapter>>,
        v: &mut SioValue,
        _: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        Ok(RawEvent(match v {
            SioValue::Str(text, None) => Some(text.as_str().to_owned()),
            _ => None,
        }))
    }
}

/// The socket's hub session.
struct Session {
    /// The room as the client named it (without the `socket.io/` prefix).
    room: String,
    att: Attachment,
    /// Last `seq` whose emits all went out.
    sent: u64,
    /// Emits of message `sent + 1` that went out before the socket's buffer filled.
    partial: usize,
    /// Last `seq` acknowledged to the hub.
    acked: u64,
}

struct Conn {
    svc: Arc<SignalService>,
    socket: SocketRef,
    sid: String,
    host: Option<String>,
    client: Option<std::net::IpAddr>,
    token: Option<String>,
    limiter: RateLimiter,
    max_message: usize,
    bad_in_a_row: u32,
    session: Option<Session>,
}

/// What woke a socket's task.
enum Next {
    Stop,
    Flush,
    Overflow,
    Event(Option<String>),
}

/// Why a flush stopped.
enum Flushed {
    /// Everything pending went out.
    Done,
    /// The socket's buffer is full: retry shortly.
    Full,
    /// The socket is closed or the session ended.
    Stop,
}

impl Conn {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Option<String>>,
        gone: Arc<Notify>,
        overflow: Arc<Notify>,
    ) {
        let shutdown = super::shutdown_signal(self.svc.shutdown.clone());
        tokio::pin!(shutdown);
        let mut retry = false;
        loop {
            let notify = self.session.as_ref().map(|s| s.att.notify.clone());
            let mut wait = notify.as_deref().map(|n| Box::pin(n.notified()));
            if let Some(w) = wait.as_mut() {
                w.as_mut().enable();
            }
            if !retry {
                match self.flush() {
                    Flushed::Done => {}
                    Flushed::Full => retry = true,
                    Flushed::Stop => break,
                }
            }
            let next = tokio::select! {
                biased;
                _ = gone.notified() => Next::Stop,
                _ = &mut shutdown => Next::Stop,
                ev = rx.recv() => match ev {
                    Some(raw) => Next::Event(raw),
                    None => Next::Stop,
                },
                _ = overflow.notified() => Next::Overflow,
                _ = notified(wait.as_mut().map(|w| w.as_mut())), if !retry => Next::Flush,
                _ = tokio::time::sleep(RETRY), if retry => {
                    retry = false;
                    Next::Flush
                }
            };
            let keep = match next {
                Next::Stop => false,
                Next::Flush => true,
                Next::Overflow => self.refuse_rate(),
                Next::Event(raw) => self.on_event(raw).await,
            };
            if !keep {
                break;
            }
        }
        self.leave().await;
        self.socket.clone().disconnect().ok();
    }

    /// The session ends with the socket (no grace: a socket.io client cannot resume).
    async fn leave(&mut self) {
        if let Some(s) = self.session.take() {
            let key = s.att.key;
            // The others see `peer-left` now (`message 'bye'`); the attachment goes after.
            let _ = self
                .svc
                .handle(key, ClientMessage::Leave { id: None })
                .await;
            drop(s);
        }
    }

    fn emit(&self, event: &str, args: &[Box<RawValue>]) -> Result<(), SendError> {
        self.socket.emit(event, &Args(args))
    }

    /// A `log` as the codelab's server makes them: `["Message from server:", …]`.
    fn log(&self, parts: &[Box<RawValue>]) {
        let _ = self.emit("log", &[log_line(parts)]);
    }

    fn log_text(&self, text: impl Into<String>) {
        self.log(&[raw(&text.into())]);
    }

    /// Emit what the hub queued for the session.
    fn flush(&mut self) -> Flushed {
        let Some(session) = self.session.as_mut() else {
            return Flushed::Done;
        };
        loop {
            let batch = match self.svc.collect(&session.att, session.sent) {
                Ok(b) => b,
                Err(End::Removed) => {
                    self.log_text("removed from this room by an operator (removed)");
                    return Flushed::Stop;
                }
                Err(End::Gone | End::Superseded | End::Lost) => return Flushed::Stop,
            };
            for (seq, text) in &batch.messages {
                let emits = translate(text, &session.room, &self.sid);
                for (i, (event, args)) in emits.iter().enumerate().skip(session.partial) {
                    match self.socket.emit(event, &Args(args)) {
                        Ok(()) => {}
                        Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                            session.partial = i;
                            ack(&self.svc, session);
                            return Flushed::Full;
                        }
                        Err(SendError::Socket(SocketError::Closed)) => return Flushed::Stop,
                        Err(e) => tracing::debug!("socket.io emit: {e}"),
                    }
                }
                session.sent = *seq;
                session.partial = 0;
            }
            ack(&self.svc, session);
            if !batch.more {
                return Flushed::Done;
            }
        }
    }

    /// Too many events: refused with a `log`; `false` when the socket must go (abuse).
    fn refuse_rate(&mut self) -> bool {
        self.svc.gate.count(crate::metrics::Refusal::SignalRate);
        self.log_text("too many messages; slow down (rate_limited)");
        !self.limiter.abusive()
    }

    /// One event. `false`: the socket must go.
    async fn on_event(&mut self, packet: Option<String>) -> bool {
        if !self.limiter.allow(Instant::now()) {
            return self.refuse_rate();
        }
        let event = match packet.as_deref().map(parse_event) {
            Some(Ok(ev)) => ev,
            Some(Err(why)) => return self.refuse(why),
            None => {
                return self.refuse(
                    "binary attachments are not supported (send JSON); nothing relayed".into(),
                )
            }
        };
        self.bad_in_a_row = 0;
        // The event's size, for the call's signaling counts.
        let len = packet.as_deref().map_or(0, str::len);
        match event.name.as_str() {
            "create or join" => {
                self.create_or_join(event.args.first().map(|a| &**a), len)
                    .await
            }
            "message" => self.message(&event.args, len).await,
            "ipaddr" => {
                let host = self.svc.ice().host(self.host.as_deref());
                let _ = self.emit("ipaddr", &[raw(&host)]);
            }
            // The codelab's server only logs it; the client also sends 'bye' as a `message`.
            "bye" => tracing::debug!(sid = %self.sid, "socket.io: bye"),
            other => {
                let name: String = other.chars().take(64).collect();
                self.log_text(format!("unknown event '{name}' ignored"));
            }
        }
        true
    }

    /// An unreadable event: a `log`; `false` after too many in a row.
    fn refuse(&mut self, why: String) -> bool {
        self.bad_in_a_row += 1;
        self.log_text(why);
        self.bad_in_a_row < MAX_BAD_IN_A_ROW
    }

    async fn create_or_join(&mut self, arg: Option<&RawValue>, len: usize) {
        let Some(room) = arg.and_then(|a| serde_json::from_str::<String>(a.get()).ok()) else {
            self.log_text("'create or join' needs a room name (a string)");
            return;
        };
        self.log_text(format!("Received request to create or join room {room}"));
        if let Some(s) = &self.session {
            self.log_text(format!(
                "Client ID {} is already in room {}; reconnect to change rooms",
                self.sid, s.room
            ));
            return;
        }
        if !valid_room(&room) {
            let e = ProtoError::new(
                ErrorCode::InvalidRoom,
                "room names are 1 to 64 characters of A-Z a-z 0-9 _ . -",
            );
            self.refused(&room, &e);
            return;
        }
        let join = Join {
            room: format!("{SOCKETIO_ROOM_PREFIX}{room}"),
            name: None,
            meta: None,
            capacity: Some(CAPACITY),
            topology: Some(TopologyRequest::Mesh),
            token: self.token.clone(),
            id: None,
        };
        let opened = match self.svc.join(join, self.host.clone(), self.client).await {
            Ok(joined) => {
                self.svc.count_in(Some(joined.key), len);
                self.svc
                    .open(Open::Joined(joined.key), Kind::SocketIo, None)
                    .await
            }
            Err(e) => Err(e),
        };
        match opened {
            Ok(att) => {
                self.session = Some(Session {
                    room,
                    sent: att.from_seq,
                    acked: att.from_seq,
                    partial: 0,
                    att,
                });
            }
            Err(e) => self.refused(&room, &e),
        }
    }

    /// A refused `create or join`: `log`, then `full` (room) when the room or the server has
    /// no place (`room_full`, `server_full`, `draining`, `rate_limited`: the codelab's client
    /// knows only `full`), else `error` (`{code, message}`).
    fn refused(&self, room: &str, e: &ProtoError) {
        let full = matches!(
            e.code,
            ErrorCode::RoomFull
                | ErrorCode::ServerFull
                | ErrorCode::Draining
                | ErrorCode::RateLimited
        );
        if e.code == ErrorCode::RoomFull {
            self.log_text(format!("Room {room} now has {CAPACITY} client(s)"));
        }
        self.log_text(format!(
            "Room {room} refused: {} ({})",
            e.message,
            e.code.as_str()
        ));
        if full {
            let _ = self.emit("full", &[raw(room)]);
        } else {
            let _ = self.emit(
                "error",
                &[raw(&json!({"code": e.code.as_str(), "message": e.message}))],
            );
        }
    }

    /// `message` (data[, room]): relayed to the other member of the sender's room.
    async fn message(&mut self, args: &[Box<RawValue>], len: usize) {
        let Some(session) = &self.session else {
            self.log_text("not in a room: message not relayed (emit 'create or join' first)");
            return;
        };
        let Some(data) = args.first() else {
            self.log_text("'message' needs an argument: nothing relayed");
            return;
        };
        if let Some(room) = args
            .get(1)
            .and_then(|r| serde_json::from_str::<String>(r.get()).ok())
        {
            if room != session.room {
                self.log_text(format!(
                    "message for room {room} not relayed: this socket is in room {}",
                    session.room
                ));
                return;
            }
        }
        if data.get().len() > self.max_message {
            self.log_text(format!(
                "message over {} bytes: not relayed (too_large)",
                self.max_message
            ));
            return;
        }
        self.log(&[raw("Client said: "), data.clone()]);
        let key = session.att.key;
        self.svc.count_in(Some(key), len);
        // A refusal (rate, buffers, permissions) is queued on the session: it comes back as a
        // `log` through the flush.
        let _ = self
            .svc
            .handle(
                key,
                ClientMessage::Broadcast(Broadcast {
                    data: data.clone(),
                    id: None,
                }),
            )
            .await;
    }
}

/// Acknowledge what went out (the hub may drop it: socket.io has no resume). In a cluster the
/// shared queue is trimmed too, through the ordered operations like a client's `ack`.
fn ack(svc: &SignalService, s: &mut Session) {
    if s.sent <= s.acked {
        return;
    }
    s.acked = s.sent;
    let key = s.att.key;
    let mut inner = svc.inner.lock();
    if let (Some(tx), Some((peer, _))) = (&inner.ctl, inner.hub.peer_and_room(key)) {
        let _ = tx.send(super::cluster::Ctl::Ack {
            peer: peer.to_owned(),
            seq: s.sent,
        });
    }
    let _ = inner
        .hub
        .handle(Instant::now(), key, ClientMessage::Ack { seq: s.sent });
}

/// A client event: its name and its arguments, raw.
#[derive(Debug)]
struct Event {
    name: String,
    args: Vec<Box<RawValue>>,
}

/// `["event", args…]` → [`Event`].
fn parse_event(text: &str) -> Result<Event, String> {
    let mut parts: Vec<Box<RawValue>> =
        serde_json::from_str(text).map_err(|_| "unreadable event: not a JSON array".to_owned())?;
    if parts.is_empty() {
        return Err("unreadable event: no name".into());
    }
    let name: String = serde_json::from_str(parts.remove(0).get())
        .map_err(|_| "unreadable event: its name is not a string".to_owned())?;
    Ok(Event { name, args: parts })
}

/// Arguments of an emit: serialized as a tuple, which socketioxide sends as that many
/// arguments (a `Vec` would be one argument, an array).
struct Args<'a>(&'a [Box<RawValue>]);

impl Serialize for Args<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for v in self.0 {
            t.serialize_element(v)?;
        }
        t.end()
    }
}

/// `v` as raw JSON.
fn raw<T: Serialize + ?Sized>(v: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(v).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// The argument of a `log`: `["Message from server:", parts…]`.
fn log_line(parts: &[Box<RawValue>]) -> Box<RawValue> {
    let mut s = format!("[\"{LOG_HEAD}\"");
    for p in parts {
        s.push(',');
        s.push_str(p.get());
    }
    s.push(']');
    RawValue::from_string(s).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// The parts of a hub message the translation needs.
#[derive(Deserialize)]
struct HubMessage {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    initiator: bool,
    #[serde(default)]
    peers: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// What the hub message `text` becomes for the socket `sid` in room `room`: the emits, in
/// order (see the module docs).
fn translate(text: &str, room: &str, sid: &str) -> Vec<(&'static str, Vec<Box<RawValue>>)> {
    let Ok(m) = serde_json::from_str::<HubMessage>(text) else {
        return Vec::new();
    };
    let log = |s: String| ("log", vec![log_line(&[raw(&s)])]);
    match m.ty.as_str() {
        "joined" if m.initiator => vec![
            log(format!("Room {room} now has {} client(s)", m.peers.len())),
            log(format!("Client ID {sid} created room {room}")),
            ("created", vec![raw(room), raw(sid)]),
        ],
        "joined" => vec![
            log(format!("Room {room} now has {} client(s)", m.peers.len())),
            log(format!("Client ID {sid} joined room {room}")),
            ("joined", vec![raw(room), raw(sid)]),
            ("ready", vec![]),
        ],
        "peer-joined" => vec![("join", vec![raw(room)]), ("ready", vec![])],
        "peer-left" => vec![("message", vec![raw("bye")])],
        "broadcast" | "signal" => vec![(
            "message",
            vec![m.data.unwrap_or_else(|| RawValue::NULL.to_owned())],
        )],
        "error" => vec![log(format!(
            "refused: {} ({})",
            m.message.unwrap_or_default(),
            m.code.unwrap_or_default()
        ))],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Emits = Vec<(&'static str, Vec<Box<RawValue>>)>;

    /// The emits as `event(arg, …)` strings, arguments in their JSON.
    fn show(v: &Emits) -> Vec<String> {
        v.iter()
            .map(|(n, args)| {
                let a: Vec<&str> = args.iter().map(|a| a.get()).collect();
                format!("{n}({})", a.join(","))
            })
            .collect()
    }

    #[test]
    fn first_member_gets_created() {
        let out = translate(
            r#"{"type":"joined","seq":1,"session":"secret-token","peer":"0a0b0c0d","room":"socket.io/foo","initiator":true,"capacity":2,"peers":[],"iceServers":[],"grace":30,"topology":"mesh"}"#,
            "foo",
            "SID1",
        );
        assert_eq!(
            show(&out),
            [
                r#"log(["Message from server:","Room foo now has 0 client(s)"])"#,
                r#"log(["Message from server:","Client ID SID1 created room foo"])"#,
                r#"created("foo","SID1")"#,
            ]
        );
        // The session token never reaches the socket.io client.
        assert!(!show(&out).concat().contains("secret-token"));
    }

    #[test]
    fn second_member_gets_joined_then_ready() {
        let out = translate(
            r#"{"type":"joined","seq":1,"session":"x","peer":"0a0b0c0d","room":"socket.io/foo","initiator":false,"capacity":2,"peers":[{"id":"11111111"}],"iceServers":[],"grace":30,"topology":"mesh"}"#,
            "foo",
            "SID2",
        );
        assert_eq!(
            show(&out),
            [
                r#"log(["Message from server:","Room foo now has 1 client(s)"])"#,
                r#"log(["Message from server:","Client ID SID2 joined room foo"])"#,
                r#"joined("foo","SID2")"#,
                "ready()",
            ]
        );
    }

    #[test]
    fn presence_and_relay() {
        let t = |text: &str| show(&translate(text, "foo", "S"));
        assert_eq!(
            t(r#"{"type":"peer-joined","seq":2,"peer":{"id":"22222222"}}"#),
            [r#"join("foo")"#, "ready()"]
        );
        assert_eq!(
            t(r#"{"type":"peer-left","seq":3,"peer":"22222222","reason":"left"}"#),
            [r#"message("bye")"#]
        );
        // The data is relayed as it came, key order and number spelling included.
        let cand = r#"{"type":"candidate","label":0,"id":"0","candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","n":1.50}"#;
        assert_eq!(
            t(&format!(
                r#"{{"type":"broadcast","seq":4,"from":"22222222","data":{cand}}}"#
            )),
            [format!("message({cand})")]
        );
        assert_eq!(
            t(r#"{"type":"broadcast","seq":5,"from":"22222222","data":"got user media"}"#),
            [r#"message("got user media")"#]
        );
    }

    #[test]
    fn errors_become_logs_and_the_rest_is_dropped() {
        let t = |text: &str| show(&translate(text, "foo", "S"));
        assert_eq!(
            t(r#"{"type":"error","seq":6,"code":"rate_limited","message":"slow down"}"#),
            [r#"log(["Message from server:","refused: slow down (rate_limited)"])"#]
        );
        assert!(t(r#"{"type":"topology","seq":7,"topology":"sfu"}"#).is_empty());
        assert!(t("not json").is_empty());
        assert!(t("[]").is_empty());
    }

    #[test]
    fn log_lines_keep_raw_parts() {
        let line = log_line(&[raw("Client said: "), raw(&json!({"b": 1, "a": [true]}))]);
        assert_eq!(
            line.get(),
            r#"["Message from server:","Client said: ",{"a":[true],"b":1}]"#
        );
        // Every line parses as JSON.
        let v: Value = serde_json::from_str(line.get()).expect("JSON");
        assert_eq!(v[0], LOG_HEAD);
    }

    #[test]
    fn events_parse_without_panicking() {
        let ev =
            parse_event(r#"["message",{"type":"offer","sdp":"v=0\r\n"},"foo"]"#).expect("an event");
        assert_eq!(ev.name, "message");
        assert_eq!(ev.args.len(), 2);
        // The argument is kept byte for byte.
        assert_eq!(ev.args[0].get(), r#"{"type":"offer","sdp":"v=0\r\n"}"#);
        let ev = parse_event(r#"["ipaddr"]"#).expect("an event");
        assert!(ev.args.is_empty());
        for bad in ["", "[]", "{}", "[1]", "[null,2]", "[\"a\"", "\"x\""] {
            assert!(parse_event(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_values_decode() {
        assert_eq!(percent_decode("a.b-c_d"), "a.b-c_d");
        assert_eq!(percent_decode("a%2Eb+c"), "a.b c");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%+1"), "% 1");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
    }
}
