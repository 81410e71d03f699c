//! Signaling I/O (docs/PROTOCOL.md): WebSocket, Server-Sent Events and long-poll transports
//! around the sans-IO [`icebreaker_signal::Hub`], plus `GET /api/ice-servers`.
//!
//! The hub and the per-session I/O state sit behind one `parking_lot::Mutex` that is never held
//! across an `.await`. Each session has a [`Notify`]: after every hub call the sessions the hub
//! reports dirty are woken (`notify_waiters`), and the stream attached to a session copies what
//! it has not sent yet out of the hub's replay buffer and writes it. Nothing is queued per stream
//! besides that: a slow stream only delays itself.
//!
//! A stream task registers its `Notified` future before looking at the hub, so a wake between
//! the look and the wait is never lost.

pub(crate) mod admin;
pub(crate) mod cluster;
mod http;
mod ice;
pub(crate) mod meter;
pub(crate) mod phone;
mod socketio;
mod ws;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use icebreaker_signal::{
    ErrorCode, Handled, Hub, HubConfig, Join, ProtoError, RateLimiter, SessionKey, StreamId,
};
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::credentials::now_unix;
use crate::http::{json_response, HttpState};

pub use ice::{
    host_of, Fleet, FleetNode, IceConfig, IceServerEntry, IceServersResponse, FLEET_MAX_NODES,
};

/// The WebSocket server pings this often.
pub const WS_PING_INTERVAL: Duration = Duration::from_secs(20);
/// A WebSocket that sent nothing (no frame, no pong) this long is dropped.
pub const WS_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// SSE streams get a comment line this often.
pub const SSE_KEEPALIVE: Duration = Duration::from_secs(15);
/// A write to a client that takes longer than this drops the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages copied out of the hub per flush.
const BATCH: usize = 64;
/// Parse errors in a row after which a connection is closed.
const MAX_BAD_IN_A_ROW: u32 = 10;

/// In a cluster the local copy of a session outlives its grace period by this much (the
/// cluster ends sessions; the local timer only cleans up copies whose end was not heard of).
pub const CLUSTER_LOCAL_GRACE_EXTRA: Duration = Duration::from_secs(60);

/// Settings of the transports (the hub has its own).
#[derive(Clone, Debug)]
pub struct SignalSettings {
    /// Largest client message, bytes.
    pub max_message: usize,
    /// Messages per second per connection.
    pub rate: f64,
    /// Burst.
    pub burst: f64,
    /// Allowed browser origins, lower case; empty = any.
    pub origins: Vec<String>,
    /// Key protecting `/api/ice-servers`.
    pub api_key: Option<String>,
    pub ws_ping_interval: Duration,
    pub ws_idle_timeout: Duration,
    pub sse_keepalive: Duration,
    /// Serve `/socket.io/` (read when the HTTP router is built: a reload does not change it).
    pub socketio: bool,
}

impl SignalSettings {
    pub fn from_config(c: &Config) -> Self {
        let rate = f64::from(c.signal_rate);
        SignalSettings {
            max_message: c.signal_max_message,
            rate,
            burst: rate * 2.0,
            origins: c.signal_origins.clone(),
            api_key: c.api_key.clone(),
            ws_ping_interval: WS_PING_INTERVAL,
            ws_idle_timeout: WS_IDLE_TIMEOUT,
            sse_keepalive: SSE_KEEPALIVE,
            socketio: c.socketio,
        }
    }
}

/// The hub's configuration from ours.
pub fn hub_config(c: &Config) -> HubConfig {
    let cap = u32::try_from(c.signal_room_capacity).unwrap_or(u32::MAX);
    HubConfig {
        max_rooms: c.signal_max_rooms,
        max_sessions: c.signal_max_sessions,
        default_capacity: cap,
        max_capacity: cap,
        grace: Duration::from_secs(u64::from(c.signal_grace))
            + if c.cluster.is_some() {
                CLUSTER_LOCAL_GRACE_EXTRA
            } else {
                Duration::ZERO
            },
        replay_limit: c.signal_replay_limit,
        max_buffered_bytes: c.signal_max_buffered,
        token_secret: c
            .signal_token_secret
            .as_ref()
            .map(|s| s.as_bytes().to_vec()),
        sfu: c.sfu_listen.is_some(),
        mesh_max: c.sfu_mesh_max,
        sip_dial: c.sip_dial && c.sip_upstream.is_some(),
        ..HubConfig::default()
    }
}

/// Whether `origin` (`scheme://host[:port]`, lower case) names the host `host` (a `Host`
/// header, lower case), default ports ignored on both sides.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let default = match scheme {
        "http" | "ws" => ":80",
        "https" | "wss" => ":443",
        _ => return false,
    };
    let strip = |h: &str| h.strip_suffix(default).unwrap_or(h).to_string();
    strip(rest) == strip(host)
}

/// Which transport a stream uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    WebSocket,
    Sse,
    Poll,
    /// `/socket.io/` (one stream for the session's whole life).
    SocketIo,
    /// The phone of a call the server dialed (`phone::PhoneMember`).
    Phone,
}

/// Per-session I/O state.
struct SessionIo {
    notify: Arc<Notify>,
    /// `Host` of the request that opened the session (for `iceServers`).
    host: Option<String>,
    /// Transport of the last stream attached (`None`: none yet, an HTTP join not yet followed
    /// by a stream).
    last_kind: Option<Kind>,
    /// Bumped by [`SignalService::force_close`]: streams opened before close.
    epoch: u64,
    /// Rate limit of `POST /signal/send` for this session.
    limiter: RateLimiter,
    /// In a cluster: what else this node knows of the session.
    cluster: Option<cluster::ClSession>,
    /// Its room (for the call's message counts).
    room: Arc<str>,
    /// When this node got the session (joined here, or resumed from another node).
    since: Instant,
}

struct Inner {
    hub: Hub,
    io: HashMap<SessionKey, SessionIo>,
    /// The SFU, when the server has one: `sfu` messages and departures go there.
    sfu: Option<Arc<crate::sfu::SfuService>>,
    /// The cluster, when this node is in one.
    cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Its ordered operations.
    ctl: Option<tokio::sync::mpsc::UnboundedSender<cluster::Ctl>>,
    /// Sessions whose gap is being filled from Redis; `true`: another gap showed meanwhile
    /// (fill again when done).
    filling: HashMap<String, bool>,
    /// Messages and bytes per call.
    meter: meter::CallMeter,
    metrics: Arc<crate::metrics::Metrics>,
    /// Sessions an operator removed (`/admin`): their streams end with `removed`, and their
    /// tokens are answered with `removed` instead of `resume_failed` for a while.
    removed: admin::Removed,
    /// The SIP gateway: members' `sip` messages go there.
    sip: Option<tokio::sync::mpsc::UnboundedSender<phone::SipInput>>,
}

impl SessionIo {
    fn new(
        settings: &SignalSettings,
        host: Option<String>,
        room: &str,
        cluster: Option<cluster::ClSession>,
    ) -> Self {
        SessionIo {
            notify: Arc::new(Notify::new()),
            host,
            last_kind: None,
            epoch: 0,
            limiter: RateLimiter::new(settings.rate, settings.burst),
            cluster,
            room: Arc::from(room),
            since: Instant::now(),
        }
    }
}

impl Inner {
    /// Keeps the I/O state of a session now held here (its call counts one more member).
    fn insert_io(&mut self, key: SessionKey, io: SessionIo) {
        self.meter.enter(&io.room, Instant::now(), now_unix());
        if let Some(old) = self.io.insert(key, io) {
            self.call_exit(&old.room);
        }
    }

    /// Drops the I/O state of a session no longer held here.
    fn remove_io(&mut self, key: SessionKey) -> Option<SessionIo> {
        let io = self.io.remove(&key)?;
        self.call_exit(&io.room);
        Some(io)
    }

    /// One member fewer in the call of `room`; records the call when it ended.
    fn call_exit(&mut self, room: &str) {
        if let Some(s) = self.meter.exit(room, Instant::now()) {
            self.metrics
                .signal_call_messages
                .observe(s.total.messages as f64);
            self.metrics.signal_call_bytes.observe(s.total.bytes as f64);
        }
    }

    /// In a cluster: tell Redis a stream of `key` attached or ended (grace timer).
    fn cluster_attach(&self, key: SessionKey, attached: bool) {
        let (Some(tx), Some(cl)) = (
            &self.ctl,
            self.io.get(&key).and_then(|io| io.cluster.as_ref()),
        ) else {
            return;
        };
        if let Some((peer, _)) = self.hub.peer_and_room(key) {
            let _ = tx.send(cluster::Ctl::Attach {
                peer: peer.to_owned(),
                epoch: cl.epoch,
                attached,
            });
        }
    }

    /// Counts `n` messages of `bytes` written to the stream of session `key`.
    fn count_out(&mut self, key: SessionKey, n: usize, bytes: usize) {
        let (n, bytes) = (n as u64, bytes as u64);
        self.metrics.signal_messages[1].inc_by(n);
        self.metrics.signal_bytes[1].inc_by(bytes);
        if let Some(io) = self.io.get(&key) {
            self.meter.outbound(&io.room, n, bytes);
        }
    }

    /// Whether `att` is still the stream of its session (not superseded by a resume nor
    /// force-closed).
    fn is_current(&self, att: &Attachment) -> bool {
        self.hub.current_stream(att.key) == Some(att.stream)
            && self
                .io
                .get(&att.key)
                .is_some_and(|io| io.epoch == att.epoch)
    }

    /// Wake the streams of every session the hub touched, forget ended sessions, and hand the
    /// SFU what is for it.
    fn wake(&mut self) {
        if let Some(sfu) = &self.sfu {
            let inputs: Vec<_> = self.hub.drain_sfu().collect();
            for m in inputs {
                let host = self
                    .hub
                    .session_of(&m.peer)
                    .and_then(|k| self.io.get(&k))
                    .and_then(|io| io.host.clone());
                sfu.send(crate::sfu::Cmd::Message {
                    room: m.room,
                    peer: m.peer,
                    data: m.data,
                    host,
                });
            }
            for (room, peer) in self.hub.drain_departed() {
                sfu.send(crate::sfu::Cmd::Remove { room, peer });
            }
        }
        let dials: Vec<_> = self.hub.drain_sip().collect();
        if let Some(sip) = &self.sip {
            for m in dials {
                let host = self
                    .hub
                    .session_of(&m.peer)
                    .and_then(|k| self.io.get(&k))
                    .and_then(|io| io.host.clone());
                let _ = sip.send(phone::SipInput {
                    room: m.room,
                    peer: m.peer,
                    data: m.data,
                    host,
                });
            }
        }
        // Without an SFU the hub has no SFU room: it queues nothing for one.
        for key in self.hub.drain_dirty() {
            if let Some(io) = self.io.get(&key) {
                io.notify.notify_waiters();
            }
        }
        let closed: Vec<_> = self.hub.drain_closed().collect();
        for (key, why) in closed {
            if let Some(io) = self.remove_io(key) {
                io.notify.notify_waiters();
            }
            tracing::debug!(session = key.get(), ?why, "signaling session ended");
        }
    }
}

/// The signaling service: the hub, the transports' shared state, and the ICE configuration.
pub struct SignalService {
    inner: Mutex<Inner>,
    settings: parking_lot::RwLock<Arc<SignalSettings>>,
    ice: parking_lot::RwLock<Arc<IceConfig>>,
    pub(crate) gate: Arc<crate::gate::Gate>,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for SignalService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalService")
            .field("settings", &self.settings().max_message)
            .finish_non_exhaustive()
    }
}

/// One stream attached to a session; detaches (starting the grace period) when dropped.
struct Attachment {
    svc: Arc<SignalService>,
    key: SessionKey,
    stream: StreamId,
    epoch: u64,
    notify: Arc<Notify>,
    /// Continue after this `seq`.
    from_seq: u64,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut inner = self.svc.inner.lock();
        let was_current = inner.hub.detach(Instant::now(), self.key, self.stream);
        if was_current {
            inner.cluster_attach(self.key, false);
        }
        inner.wake();
    }
}

/// What a stream should send next.
struct Batch {
    /// Unsequenced messages (`pong`).
    unsequenced: Vec<String>,
    /// Sequenced messages.
    messages: Vec<(u64, String)>,
    /// More messages are waiting.
    more: bool,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.unsequenced.is_empty() && self.messages.is_empty()
    }
}

/// Why a stream must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Another stream was attached (or the stream was force-closed).
    Superseded,
    /// The session ended (left, timed out, kicked).
    Gone,
    /// An operator removed the session (`/admin`): tell the client `removed`.
    Removed,
    /// The messages the stream still had to send were dropped (replay limit).
    Lost,
}

/// How a stream is opened.
enum Open<'a> {
    /// The first stream of a session just joined over this connection.
    Joined(SessionKey),
    /// WebSocket `resume`.
    Resume { token: &'a str, last_seq: u64 },
    /// SSE: attach if this is the session's first stream and `last_seq` is 0, else resume.
    Sse { token: &'a str, last_seq: u64 },
    /// Long-poll: attach while polls follow each other, resume after another transport.
    Poll { token: &'a str, last_seq: u64 },
}

impl SignalService {
    pub fn new(
        config: &Config,
        ice: IceConfig,
        gate: Arc<crate::gate::Gate>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        Arc::new(SignalService {
            inner: Mutex::new(Inner {
                hub: Hub::new(hub_config(config)),
                io: HashMap::new(),
                sfu: None,
                cluster: None,
                ctl: None,
                filling: HashMap::new(),
                meter: meter::CallMeter::default(),
                metrics: gate.metrics().clone(),
                removed: admin::Removed::default(),
                sip: None,
            }),
            settings: parking_lot::RwLock::new(Arc::new(SignalSettings::from_config(config))),
            ice: parking_lot::RwLock::new(Arc::new(ice)),
            gate,
            shutdown,
        })
    }

    /// Connects the SFU (`sfu` messages and departures go to it).
    pub fn set_sfu(&self, sfu: Arc<crate::sfu::SfuService>) {
        self.inner.lock().sfu = Some(sfu);
    }

    /// The SFU, if any.
    pub fn sfu(&self) -> Option<Arc<crate::sfu::SfuService>> {
        self.inner.lock().sfu.clone()
    }

    /// Queues an `sfu` message from the SFU for member `peer` of `room`.
    pub fn sfu_push(&self, room: &str, peer: &str, data: String) {
        let Ok(raw) = RawValue::from_string(data) else {
            return;
        };
        let mut inner = self.inner.lock();
        if inner.ctl.is_some() {
            let enc = icebreaker_signal::ServerMessage::Sfu { data: raw }.encode();
            let (head, tail) = enc.seq_parts();
            drop(inner);
            self.ctl(cluster::Ctl::Push {
                room: room.to_owned(),
                peer: peer.to_owned(),
                head,
                tail: tail.to_owned(),
            });
            return;
        }
        inner.hub.push_sfu(room, peer, raw);
        inner.wake();
    }

    /// Queues an `sfu` message from the SFU for every member of `room`.
    pub fn sfu_push_room(&self, room: &str, data: String) {
        let Ok(raw) = RawValue::from_string(data) else {
            return;
        };
        let mut inner = self.inner.lock();
        if inner.ctl.is_some() {
            let enc = icebreaker_signal::ServerMessage::Sfu { data: raw }.encode();
            let (head, tail) = enc.seq_parts();
            drop(inner);
            self.ctl(cluster::Ctl::PushRoom {
                room: room.to_owned(),
                head,
                tail: tail.to_owned(),
            });
            return;
        }
        inner.hub.push_sfu_room(room, raw);
        inner.wake();
    }

    /// The transports' settings.
    pub fn settings(&self) -> Arc<SignalSettings> {
        self.settings.read().clone()
    }

    /// Take the reloadable settings of `config`: limits, origins, keys, room tokens, the REST
    /// secret and credential lifetime handed out in `iceServers`. Sessions and rooms stay.
    pub fn reload(&self, config: &Config) {
        *self.settings.write() = Arc::new(SignalSettings::from_config(config));
        self.inner.lock().hub.set_config(hub_config(config));
        let old = self.ice();
        *self.ice.write() = Arc::new(IceConfig {
            turn: old.turn.clone(),
            turns: old.turns.clone(),
            external: old.external,
            relay_ip: old.relay_ip,
            secret: config.turn_secrets.first().cloned(),
            ttl: config.credential_ttl,
            warned: Default::default(),
            fleet: old.fleet.clone(),
        });
    }

    /// The ICE configuration.
    pub fn ice(&self) -> Arc<IceConfig> {
        self.ice.read().clone()
    }

    /// Live sessions, attached sessions, rooms.
    pub fn stats(&self) -> icebreaker_signal::HubStats {
        let inner = self.inner.lock();
        let mut st = inner.hub.stats();
        if let Some(c) = &inner.cluster {
            st.rooms = usize::try_from(c.rooms()).unwrap_or(usize::MAX);
        }
        st
    }

    /// Expire grace periods: runs until shutdown.
    pub fn spawn_ticker(self: &Arc<Self>) -> JoinHandle<()> {
        let svc = self.clone();
        tokio::spawn(async move {
            let mut shutdown = svc.shutdown.clone();
            loop {
                let now = Instant::now();
                let next = {
                    let mut inner = svc.inner.lock();
                    inner.hub.handle_timeout(now);
                    inner.wake();
                    inner.hub.poll_timeout()
                };
                let cap = now + Duration::from_secs(1);
                let at = next.map_or(cap, |d| d.min(cap)).max(now);
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        })
    }

    /// Close the streams of the session of peer `peer` as if the connection had dropped (the
    /// session stays, in its grace period). For tests.
    #[doc(hidden)]
    pub fn force_close(&self, peer: &str) -> bool {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let key = inner
            .io
            .keys()
            .copied()
            .find(|k| inner.hub.peer_and_room(*k).is_some_and(|(p, _)| p == peer));
        match key.and_then(|k| inner.io.get_mut(&k)) {
            Some(io) => {
                io.epoch += 1;
                io.notify.notify_waiters();
                true
            }
            None => false,
        }
    }

    /// The browser Origin check (cross-site WebSocket hijacking): requests without `Origin`
    /// (not browsers) pass; with `signal_origins` set, the Origin must be listed (`*` = any);
    /// without, it must be the page's own origin (its host and port are the request's `Host`).
    pub(crate) fn check_origin(&self, headers: &HeaderMap) -> Result<(), ProtoError> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin
            .to_str()
            .unwrap_or("")
            .trim()
            .trim_end_matches('/')
            .to_ascii_lowercase();
        let settings = self.settings();
        let ok = if settings.origins.is_empty() {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.trim().to_ascii_lowercase());
            host.is_some_and(|h| same_origin(&origin, &h))
        } else {
            settings.origins.iter().any(|o| o == "*" || *o == origin)
        };
        if ok {
            Ok(())
        } else {
            Err(ProtoError::new(
                ErrorCode::Forbidden,
                "this Origin is not allowed to use signaling (see signal_origins)",
            ))
        }
    }

    fn ice_json(&self, host: Option<&str>, peer: &str) -> serde_json::Value {
        self.ice().ice_servers_json(host, peer)
    }

    /// Join: creates the session (detached, grace running). Returns its key, token and peer id.
    async fn join(
        &self,
        join: Join,
        host: Option<String>,
        client: Option<std::net::IpAddr>,
    ) -> Result<icebreaker_signal::Joined, ProtoError> {
        match self.gate.join(client) {
            Ok(()) => {}
            Err(crate::metrics::Refusal::JoinDraining) => return Err(ProtoError::new(
                ErrorCode::Draining,
                "this server is draining and takes no new joins; join again to reach another one",
            )),
            Err(_) => {
                return Err(ProtoError::new(
                    ErrorCode::RateLimited,
                    "too many joins from this address; wait a moment",
                ))
            }
        }
        if let Some(c) = self.cluster() {
            return self.join_cluster(&c, join, host).await;
        }
        let settings = self.settings();
        let room = join.room.clone();
        let mut inner = self.inner.lock();
        let joined = inner.hub.join(Instant::now(), now_unix(), join, |peer| {
            self.ice_json(host.as_deref(), peer)
        })?;
        let io = SessionIo::new(&settings, host, &room, None);
        inner.insert_io(joined.key, io);
        inner.wake();
        Ok(joined)
    }

    /// Attach a stream of kind `kind` as `how` says (`host`: the request's, for `iceServers` in
    /// a `resumed` made on another node of a cluster).
    async fn open(
        self: &Arc<Self>,
        how: Open<'_>,
        kind: Kind,
        host: Option<String>,
    ) -> Result<Attachment, ProtoError> {
        match self.cluster() {
            Some(c) => self.open_cluster(&c, how, kind, host).await,
            None => self.attach_local(how, kind),
        }
    }

    /// [`SignalService::open`] with this node's hub alone.
    fn attach_local(self: &Arc<Self>, how: Open<'_>, kind: Kind) -> Result<Attachment, ProtoError> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let (key, resume, last_seq, token) = match how {
            Open::Joined(key) => (key, false, 0, None),
            Open::Resume { token, last_seq } => {
                let key = inner
                    .hub
                    .lookup(token)
                    .ok_or_else(|| inner.removed.refusal(token))?;
                (key, true, last_seq, Some(token))
            }
            Open::Sse { token, last_seq } => {
                let key = inner
                    .hub
                    .lookup(token)
                    .ok_or_else(|| inner.removed.refusal(token))?;
                let fresh = inner.io.get(&key).is_some_and(|io| io.last_kind.is_none());
                (key, !(fresh && last_seq == 0), last_seq, Some(token))
            }
            Open::Poll { token, last_seq } => {
                let key = inner
                    .hub
                    .lookup(token)
                    .ok_or_else(|| inner.removed.refusal(token))?;
                let cont = inner
                    .io
                    .get(&key)
                    .is_some_and(|io| matches!(io.last_kind, None | Some(Kind::Poll)));
                (key, !cont, last_seq, Some(token))
            }
        };
        let result = match (resume, token) {
            (true, Some(token)) => {
                let host = inner.io.get(&key).and_then(|io| io.host.clone());
                inner.hub.resume(now, token, last_seq, |peer| {
                    self.ice_json(host.as_deref(), peer)
                })
            }
            _ => inner.hub.attach(now, key, last_seq),
        };
        inner.wake();
        let att = self.attachment(inner, result?, kind)?;
        inner.cluster_attach(att.key, true);
        Ok(att)
    }

    /// The [`Attachment`] of a stream of kind `kind` the hub just attached.
    fn attachment(
        self: &Arc<Self>,
        inner: &mut Inner,
        attached: icebreaker_signal::Attached,
        kind: Kind,
    ) -> Result<Attachment, ProtoError> {
        let Some(io) = inner.io.get_mut(&attached.key) else {
            return Err(ProtoError::new(
                ErrorCode::Internal,
                "the session has no I/O state",
            ));
        };
        io.last_kind = Some(kind);
        Ok(Attachment {
            svc: self.clone(),
            key: attached.key,
            stream: attached.stream,
            epoch: io.epoch,
            notify: io.notify.clone(),
            from_seq: attached.from_seq,
        })
    }

    /// What stream `att` should send after `sent`.
    fn collect(&self, att: &Attachment, sent: u64) -> Result<Batch, End> {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        if !inner.hub.contains(att.key) {
            return Err(if inner.removed.has_key(att.key) {
                End::Removed
            } else {
                End::Gone
            });
        }
        if !inner.is_current(att) {
            return Err(End::Superseded);
        }
        let unsequenced = inner.hub.take_unsequenced(att.key);
        let mut messages = Vec::new();
        let mut more = false;
        match inner.hub.pending_after(att.key, sent) {
            Ok(it) => {
                for (seq, text) in it {
                    if messages.len() == BATCH {
                        more = true;
                        break;
                    }
                    messages.push((seq, text.to_owned()));
                }
            }
            Err(_) => return Err(End::Lost),
        }
        if !messages.is_empty() {
            let bytes: usize = messages.iter().map(|(_, t)| t.len()).sum();
            inner.count_out(att.key, messages.len(), bytes);
        }
        Ok(Batch {
            unsequenced,
            messages,
            more,
        })
    }

    /// Handle one client message of an attached session. `Ok(true)`: the session left.
    async fn handle(
        &self,
        key: SessionKey,
        msg: icebreaker_signal::ClientMessage,
    ) -> Result<bool, ProtoError> {
        if let Some(c) = self.cluster() {
            let who = {
                let inner = self.inner.lock();
                inner
                    .hub
                    .peer_and_room(key)
                    .map(|(p, _)| p.to_owned())
                    .zip(inner.hub.perms(key))
            };
            let Some((peer, perms)) = who else {
                return Err(ProtoError::new(
                    ErrorCode::NotJoined,
                    "this session does not exist (join first)",
                ));
            };
            return self.handle_cluster(&c, Some(key), &peer, perms, msg).await;
        }
        let mut inner = self.inner.lock();
        let r = inner.hub.handle(Instant::now(), key, msg);
        inner.wake();
        r.map(|h| h == Handled::Left)
    }

    /// [`SignalService::handle`] for a message read on the stream of `att`: dropped when that
    /// stream has been superseded (a resume attached another one), so that a frame the old
    /// connection still had buffered cannot overtake what the client sent on the new one.
    async fn handle_on(
        &self,
        att: &Attachment,
        msg: icebreaker_signal::ClientMessage,
    ) -> Result<bool, ProtoError> {
        if self.cluster().is_some() {
            if !self.inner.lock().is_current(att) {
                return Ok(false);
            }
            return self.handle(att.key, msg).await;
        }
        let mut inner = self.inner.lock();
        if !inner.is_current(att) {
            return Ok(false);
        }
        let r = inner.hub.handle(Instant::now(), att.key, msg);
        inner.wake();
        r.map(|h| h == Handled::Left)
    }

    /// Counts a client message of `bytes` a transport read for session `key` (`None`: a
    /// session held by another node of the cluster) in the metrics and its call. Call it for
    /// the messages [`counted`] accepts.
    pub(crate) fn count_in(&self, key: Option<SessionKey>, bytes: usize) {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        inner.metrics.signal_messages[0].inc();
        inner.metrics.signal_bytes[0].inc_by(bytes as u64);
        if let Some(io) = key.and_then(|k| inner.io.get(&k)) {
            inner.meter.inbound(&io.room, 1, bytes as u64);
        }
    }

    /// The call of `room` on this node so far.
    pub fn call(&self, room: &str) -> Option<meter::CallSummary> {
        self.inner.lock().meter.live(room, Instant::now())
    }

    /// The calls live on this node and the last ones that ended here.
    pub fn calls(&self) -> (Vec<meter::CallSummary>, Vec<meter::CallSummary>) {
        let inner = self.inner.lock();
        (inner.meter.live_all(Instant::now()), inner.meter.finished())
    }

    /// Queue a transport-level refusal on a session; returns its `seq`.
    fn push_error(&self, key: SessionKey, err: &ProtoError) -> Option<u64> {
        let mut inner = self.inner.lock();
        if inner.cluster.is_some() {
            let peer = inner.hub.peer_and_room(key).map(|(p, _)| p.to_owned());
            drop(inner);
            if let Some(peer) = peer {
                self.push_error_cluster(&peer, err);
            }
            return None;
        }
        let seq = inner.hub.push_error(key, err);
        inner.wake();
        seq
    }
}

/// Whether a client message counts as the call's signaling: keepalives (`ping`, `ack`) and
/// `resume` are the transport's, not the call's.
pub(crate) fn counted(msg: &icebreaker_signal::ClientMessage) -> bool {
    use icebreaker_signal::ClientMessage as M;
    !matches!(msg, M::Ping { .. } | M::Ack { .. } | M::Resume(_))
}

/// The `Host` header's value, if any.
fn request_host(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
}

/// An `error` message as an HTTP answer.
fn error_response(err: &ProtoError, seq: Option<u64>) -> Response {
    let status = StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(status, err.to_json(seq))
}

fn not_enabled() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        r#"{"error":"not_found","message":"signaling is not enabled on this server"}"#.to_string(),
    )
}

/// Wait for a registered `Notified`, or forever without one.
async fn notified(n: Option<std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>>) {
    match n {
        Some(n) => n.await,
        None => std::future::pending().await,
    }
}

/// Resolves when the server shuts down (or its shutdown sender is gone).
async fn shutdown_signal(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The socket.io layer (`/socket.io/`, the codelab's protocol on the hub), when `svc` has it
/// enabled (`socketio`).
pub fn socketio_layer(svc: &Arc<SignalService>) -> Option<socketioxide::layer::SocketIoLayer> {
    svc.settings()
        .socketio
        .then(|| socketio::layer(svc.clone()))
}

/// The signaling routes: `/ws`, `/signal/*`, `/api/ice-servers`.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/ws", get(ws::ws_handler))
        .route("/signal/join", post(http::join))
        .route("/signal/send", post(http::send))
        .route("/signal/events", get(http::events))
        .route("/signal/poll", get(http::poll))
        .route("/api/ice-servers", get(http::ice_servers))
}
