//! Signaling in a cluster (`--cluster`): the same transports and the same local [`Hub`] (it
//! keeps this node's sessions, their streams and a copy of their replay buffers), but room
//! membership, message numbering and delivery go through [`Cluster`] (Redis). A message for any
//! member is numbered in Redis and published to the node that owns the member's session, which
//! appends it to the local copy ([`Hub::push_sequenced`]) and wakes the stream; a resume on any
//! node claims the session there and replays what the client missed from Redis.
//!
//! Operations that must keep their order per session (stream attached/ended, acks, the SFU's
//! messages) go through one queue ([`Ctl`]) run by one task.
//!
//! [`Hub`]: icebreaker_signal::Hub
//! [`Hub::push_sequenced`]: icebreaker_signal::Hub::push_sequenced

use std::sync::Arc;
use std::time::Instant;

use icebreaker_signal::session::token_digest;
use icebreaker_signal::{
    ClientMessage, ErrorCode, Join, Joined, PeerInfo, Perm, Perms, ProtoError, ServerMessage,
    SessionKey, SessionToken, Topology,
};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::{Attachment, Kind, Open, SessionIo, SignalService};
use crate::cluster::{pairs, Cluster, Event, OpError};
use crate::credentials::now_unix;

/// What this node knows of one of its sessions beyond the hub (for restoring it into Redis).
#[derive(Debug, Clone)]
pub(super) struct ClSession {
    /// The claim epoch this node holds.
    pub epoch: u64,
    pub digest_hex: String,
    /// `PeerInfo` as JSON.
    pub info: String,
    pub capacity: u32,
    pub topology: Topology,
}

/// Ordered operations (see the module docs).
#[derive(Debug)]
pub(super) enum Ctl {
    /// A stream attached (`true`) or ended (`false`).
    Attach {
        peer: String,
        epoch: u64,
        attached: bool,
    },
    Ack {
        peer: String,
        seq: u64,
    },
    /// From the SFU: for one member.
    Push {
        room: String,
        peer: String,
        head: String,
        tail: String,
    },
    /// From the SFU: for the room.
    PushRoom {
        room: String,
        head: String,
        tail: String,
    },
}

pub(crate) fn hex(d: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(d.len() * 2);
    for b in d {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

fn unavailable(e: &OpError) -> ProtoError {
    tracing::warn!("{e}");
    match e {
        OpError::Unavailable(_) => ProtoError::new(
            ErrorCode::ServerFull,
            "the cluster's shared store is unavailable; try again shortly",
        ),
        OpError::Failed(_) => {
            ProtoError::new(ErrorCode::Internal, "the cluster's shared store failed")
        }
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

impl SignalService {
    /// Connects the cluster: starts the task applying its events and the ordered-operation task.
    pub fn set_cluster(self: &Arc<Self>, cluster: Arc<Cluster>) {
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<Ctl>();
        {
            let mut inner = self.inner.lock();
            inner.cluster = Some(cluster.clone());
            inner.ctl = Some(ctl_tx);
        }
        let weak = Arc::downgrade(self);
        cluster.set_restorer(Box::new(move || {
            weak.upgrade().map(|s| s.restore_args()).unwrap_or_default()
        }));
        cluster.spawn(ev_tx, self.shutdown.clone());
        let svc = self.clone();
        tokio::spawn(async move {
            while let Some(ev) = ev_rx.recv().await {
                svc.on_event(ev);
            }
        });
        let c = cluster;
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while ctl_rx.recv_many(&mut batch, 256).await > 0 {
                // Acknowledgements only trim queues: the last one per session is enough, and
                // they need no order among themselves (they run together, after the rest).
                let mut acks: std::collections::HashMap<String, u64> = Default::default();
                for op in batch.drain(..) {
                    let r = match op {
                        Ctl::Ack { peer, seq } => {
                            let e = acks.entry(peer).or_default();
                            *e = (*e).max(seq);
                            continue;
                        }
                        Ctl::Attach {
                            peer,
                            epoch,
                            attached,
                        } => c.attach(&peer, epoch, attached).await.map(drop),
                        Ctl::Push {
                            room,
                            peer,
                            head,
                            tail,
                        } => c.push(&peer, &room, &head, &tail).await.map(drop),
                        Ctl::PushRoom { room, head, tail } => {
                            c.push_room(&room, &head, &tail).await
                        }
                    };
                    if let Err(e) = r {
                        tracing::warn!("cluster: {e}");
                    }
                }
                let c = &c;
                let runs = acks
                    .into_iter()
                    .map(|(peer, seq)| async move { c.ack(&peer, seq).await });
                for r in futures_util::future::join_all(runs).await {
                    if let Err(e) = r {
                        tracing::warn!("cluster: {e}");
                    }
                }
            }
        });
    }

    /// The cluster, when this node is in one.
    pub fn cluster(&self) -> Option<Arc<Cluster>> {
        self.inner.lock().cluster.clone()
    }

    pub(super) fn ctl(&self, op: Ctl) {
        if let Some(tx) = &self.inner.lock().ctl {
            let _ = tx.send(op);
        }
    }

    /// Applies an event from the cluster.
    fn on_event(self: &Arc<Self>, ev: Event) {
        match ev {
            Event::Deliver { peer, seq, text } => {
                let mut inner = self.inner.lock();
                let Some(key) = inner.hub.session_of(&peer) else {
                    return;
                };
                match inner.hub.push_sequenced(key, seq, &text) {
                    Ok(_) => inner.wake(),
                    Err(next) => {
                        drop(inner);
                        self.fill(peer, next.saturating_sub(1));
                    }
                }
            }
            Event::Takeover { peer, epoch } => {
                let mut inner = self.inner.lock();
                let Some(key) = inner.hub.session_of(&peer) else {
                    return;
                };
                let older = inner
                    .io
                    .get(&key)
                    .and_then(|io| io.cluster.as_ref())
                    .is_none_or(|c| c.epoch < epoch);
                if older {
                    inner.hub.forget(key);
                    inner.wake();
                }
            }
            Event::Gone { peer } => {
                let mut inner = self.inner.lock();
                if let Some(key) = inner.hub.session_of(&peer) {
                    inner.hub.forget(key);
                    inner.wake();
                }
            }
            Event::Removed { peer } => self.on_removed(&peer),
            Event::SfuIn { room, peer, data } => {
                let Some(sfu) = self.sfu() else { return };
                if let Ok(data) = RawValue::from_string(data) {
                    sfu.send(crate::sfu::Cmd::Message {
                        room,
                        peer,
                        data,
                        host: None,
                    });
                }
            }
            Event::SfuLeft { room, peer } => {
                if let Some(sfu) = self.sfu() {
                    sfu.send(crate::sfu::Cmd::Remove { room, peer });
                }
            }
            Event::Resync => self.resync(),
        }
    }

    /// Fetches `peer`'s messages after `after` from Redis into its local copy.
    /// One fill per session at a time: a gap that shows while one runs makes it run again.
    fn fill(self: &Arc<Self>, peer: String, after: u64) {
        let Some(c) = self.cluster() else { return };
        {
            let mut inner = self.inner.lock();
            if let Some(again) = inner.filling.get_mut(&peer) {
                *again = true;
                return;
            }
            inner.filling.insert(peer.clone(), false);
        }
        let svc = self.clone();
        tokio::spawn(async move {
            let mut after = after;
            loop {
                match c.fetch(&peer, after).await {
                    Ok(msgs) => svc.push_fetched(&peer, msgs),
                    Err(e) => tracing::warn!("cluster: cannot fill a gap of {peer}: {e}"),
                }
                let mut inner = svc.inner.lock();
                let again = inner.filling.get(&peer).copied().unwrap_or(false);
                let last = inner
                    .hub
                    .session_of(&peer)
                    .and_then(|k| inner.hub.last_seq(k));
                match (again, last) {
                    (true, Some(last)) => {
                        inner.filling.insert(peer.clone(), false);
                        after = last;
                    }
                    _ => {
                        inner.filling.remove(&peer);
                        return;
                    }
                }
            }
        });
    }

    fn push_fetched(&self, peer: &str, msgs: Vec<(u64, String)>) {
        let mut inner = self.inner.lock();
        let Some(key) = inner.hub.session_of(peer) else {
            return;
        };
        for (seq, text) in msgs {
            if inner.hub.push_sequenced(key, seq, &text).is_err() {
                // Older messages were trimmed from Redis (replay limit): the stream sees the gap.
                break;
            }
        }
        inner.wake();
    }

    /// After the subscription came back or this node's sessions were restored: fetch what may
    /// have been missed.
    fn resync(self: &Arc<Self>) {
        let Some(c) = self.cluster() else { return };
        let sessions: Vec<(String, u64)> = {
            let inner = self.inner.lock();
            inner
                .io
                .keys()
                .filter_map(|key| {
                    let (peer, _) = inner.hub.peer_and_room(*key)?;
                    Some((peer.to_owned(), inner.hub.last_seq(*key)?))
                })
                .collect()
        };
        let svc = self.clone();
        tokio::spawn(async move {
            for (peer, last) in sessions {
                match c.fetch(&peer, last).await {
                    Ok(msgs) => svc.push_fetched(&peer, msgs),
                    Err(e) => tracing::warn!("cluster: cannot resync {peer}: {e}"),
                }
            }
        });
    }

    /// The `restore.lua` arguments of every session held here.
    fn restore_args(&self) -> Vec<Vec<String>> {
        let inner = self.inner.lock();
        let grace_ms = inner
            .hub
            .config()
            .grace
            .saturating_sub(crate::signal::CLUSTER_LOCAL_GRACE_EXTRA)
            .as_millis()
            .to_string();
        inner
            .io
            .iter()
            .filter_map(|(key, io)| {
                let cl = io.cluster.as_ref()?;
                let (peer, room) = inner.hub.peer_and_room(*key)?;
                let last = inner.hub.last_seq(*key)?;
                let mut a = vec![
                    peer.to_owned(),
                    room.to_owned(),
                    cl.info.clone(),
                    cl.capacity.to_string(),
                    match cl.topology {
                        Topology::Mesh => "mesh".into(),
                        Topology::Sfu => "sfu".into(),
                    },
                    inner.hub.perms(*key).map_or(7, |p| p.bits()).to_string(),
                    cl.digest_hex.clone(),
                    cl.epoch.to_string(),
                    if inner.hub.current_stream(*key).is_some() {
                        "1".into()
                    } else {
                        "0".into()
                    },
                    grace_ms.clone(),
                    last.to_string(),
                ];
                for (seq, text) in inner.hub.held(*key) {
                    a.push(seq.to_string());
                    a.push(text);
                }
                Some(a)
            })
            .collect()
    }

    /// `join` in a cluster: admitted into the shared room by Redis, then held here.
    pub(super) async fn join_cluster(
        &self,
        c: &Cluster,
        join: Join,
        host: Option<String>,
    ) -> Result<Joined, ProtoError> {
        let id = join.id.clone();
        let (req, grace, full) = {
            let inner = self.inner.lock();
            let req = inner.hub.check_join(now_unix(), &join)?;
            let cfg = inner.hub.config();
            (
                req,
                cfg.grace
                    .saturating_sub(crate::signal::CLUSTER_LOCAL_GRACE_EXTRA),
                inner.hub.stats().sessions >= cfg.max_sessions,
            )
        };
        let fail = |e: ProtoError| e.with_id(id.clone());
        if full {
            return Err(fail(ProtoError::new(
                ErrorCode::ServerFull,
                "the server is at its session limit",
            )));
        }
        let (has_sfu, mesh_max) = {
            let inner = self.inner.lock();
            (inner.hub.config().sfu, inner.hub.config().mesh_max)
        };
        let token = SessionToken::generate(&mut rand::rng());
        let digest = token.digest();
        let digest_hex = hex(&digest);
        for _ in 0..4 {
            let peer = format!("{:08x}", rand::random::<u32>());
            let info = PeerInfo {
                id: peer.clone(),
                name: req.name.clone(),
                meta: join.meta.clone(),
            };
            let info_json = serde_json::to_string(&info).unwrap_or_default();
            let ice = self.ice_json(host.as_deref(), &peer).to_string();
            let joined_mid = format!(
                ",\"session\":{},\"peer\":{},\"room\":{},\"initiator\":",
                json_str(token.as_str()),
                json_str(&peer),
                json_str(&join.room)
            );
            let joined_end = format!(
                ",\"iceServers\":{ice},\"grace\":{},\"topology\":\"",
                grace.as_secs()
            );
            let pj_tail = format!(",\"peer\":{info_json}}}");
            let topo = match req.spec.topology {
                Topology::Mesh => "mesh",
                Topology::Sfu => "sfu",
            };
            let cap = req.spec.capacity.to_string();
            let max_rooms = self.inner.lock().hub.config().max_rooms.to_string();
            let perms = req.perms.bits().to_string();
            let grace_ms = grace.as_millis().to_string();
            let mesh = mesh_max.to_string();
            let args = [
                join.room.as_str(),
                &peer,
                &info_json,
                &cap,
                topo,
                if req.spec.auto { "1" } else { "0" },
                if req.perms.has(Perm::Create) {
                    "1"
                } else {
                    "0"
                },
                &max_rooms,
                if has_sfu { "1" } else { "0" },
                &mesh,
                &perms,
                &digest_hex,
                &grace_ms,
                &joined_mid,
                &joined_end,
                &pj_tail,
            ];
            let r = c.admit(&args).await.map_err(|e| fail(unavailable(&e)))?;
            let status = r.first().map(String::as_str).unwrap_or("");
            let err = |code, msg: &str| Err(fail(ProtoError::new(code, msg.to_owned())));
            match status {
                "ok" => {}
                "dup" => continue,
                "full" => return err(ErrorCode::RoomFull, "the room is at its capacity"),
                "rooms" => return err(ErrorCode::ServerFull, "the cluster is at its room limit"),
                "forbidden" => {
                    return err(
                        ErrorCode::Forbidden,
                        "the token does not grant `create` and the room does not exist",
                    )
                }
                _ => {
                    return err(
                        ErrorCode::Internal,
                        "unexpected answer from the cluster store",
                    )
                }
            }
            let capacity = r
                .get(2)
                .and_then(|s| s.parse().ok())
                .unwrap_or(req.spec.capacity);
            let topology = if r.get(3).is_some_and(|t| t == "sfu") {
                Topology::Sfu
            } else {
                Topology::Mesh
            };
            let joined_text = r.get(5).cloned().unwrap_or_default();
            let settings = self.settings();
            let adopted = self.inner.lock().hub.adopt(
                Instant::now(),
                digest,
                &peer,
                &join.room,
                req.perms,
                0,
            );
            let Some(key) = adopted else {
                let _ = c.leave(&peer, "left").await;
                return err(ErrorCode::ServerFull, "the server is at its session limit");
            };
            let mut inner = self.inner.lock();
            let _ = inner.hub.push_sequenced(key, 1, &joined_text);
            inner.insert_io(
                key,
                SessionIo::new(
                    &settings,
                    host,
                    &join.room,
                    Some(ClSession {
                        epoch: 1,
                        digest_hex,
                        info: info_json,
                        capacity,
                        topology,
                    }),
                ),
            );
            inner.wake();
            return Ok(Joined {
                key,
                session: token,
                peer,
            });
        }
        Err(fail(ProtoError::new(
            ErrorCode::Internal,
            "could not pick a peer id",
        )))
    }

    /// Opens a stream in a cluster: a stream of a session held here attaches locally; anything
    /// else (a resume, a session held by another node or by none since its node died) claims
    /// the session from Redis.
    pub(super) async fn open_cluster(
        self: &Arc<Self>,
        c: &Cluster,
        how: Open<'_>,
        kind: Kind,
        host: Option<String>,
    ) -> Result<Attachment, ProtoError> {
        // (token, last_seq, announce `resumed`) for a claim; None: attach locally.
        let claim = {
            let inner = self.inner.lock();
            let local = |token: &str| inner.hub.lookup_digest(&token_digest(token));
            match &how {
                Open::Joined(_) => None,
                Open::Resume { token, last_seq } => Some((*token, *last_seq, true)),
                Open::Sse { token, last_seq } => match local(token) {
                    Some(key)
                        if *last_seq == 0
                            && inner.io.get(&key).is_some_and(|io| io.last_kind.is_none()) =>
                    {
                        None
                    }
                    Some(_) => Some((*token, *last_seq, true)),
                    // The first stream of a session joined on another node, or a reconnect.
                    None => Some((*token, *last_seq, *last_seq > 0)),
                },
                Open::Poll { token, last_seq } => match local(token) {
                    Some(key)
                        if inner
                            .io
                            .get(&key)
                            .is_some_and(|io| matches!(io.last_kind, None | Some(Kind::Poll))) =>
                    {
                        None
                    }
                    Some(_) => Some((*token, *last_seq, true)),
                    None => Some((*token, *last_seq, false)),
                },
            }
        };
        let Some((token, last_seq, announce)) = claim else {
            return self.attach_local(how, kind);
        };
        if !SessionToken::well_formed(token) {
            return Err(ProtoError::resume_failed());
        }
        let digest = token_digest(token);
        let digest_hex = hex(&digest);
        let Some(peer) = c.peer_of(&digest_hex).await.map_err(|e| unavailable(&e))? else {
            return Err(self.unknown_session(token).await);
        };
        let host = host.or_else(|| {
            let inner = self.inner.lock();
            let key = inner.hub.session_of(&peer)?;
            inner.io.get(&key)?.host.clone()
        });
        let ice = self.ice_json(host.as_deref(), &peer).to_string();
        let resumed_end = format!(",\"iceServers\":{ice}");
        let r = c
            .claim(&digest_hex, &peer, last_seq, announce, &resumed_end)
            .await
            .map_err(|e| unavailable(&e))?;
        match r.first().map(String::as_str) {
            Some("ok") => {}
            Some("gap") => {
                return Err(ProtoError::new(
                    ErrorCode::ResumeFailed,
                    format!(
                        "the messages after seq {last_seq} are no longer available (join again)"
                    ),
                ))
            }
            _ => return Err(self.unknown_session(token).await),
        }
        let room = r.get(1).cloned().unwrap_or_default();
        let perms = Perms::from_bits(r.get(2).and_then(|p| p.parse().ok()).unwrap_or(7));
        let epoch: u64 = r.get(3).and_then(|e| e.parse().ok()).unwrap_or(0);
        let previous = r.get(4).cloned().unwrap_or_default();
        let msgs = pairs(r.get(5..).unwrap_or(&[]));
        let settings = self.settings();
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let mut key = inner.hub.session_of(&peer);
        let mut stale = None;
        if let Some(k) = key {
            if previous != c.node() {
                // A stale copy (this node lost the session to another one and was not told).
                inner.hub.forget(k);
                stale = inner.remove_io(k);
                key = None;
            }
        }
        let key = match key {
            Some(k) => k,
            None => {
                let Some(k) = inner.hub.adopt(now, digest, &peer, &room, perms, last_seq) else {
                    return Err(ProtoError::new(
                        ErrorCode::ServerFull,
                        "the server is at its session limit",
                    ));
                };
                let (info, capacity, topology) = stale
                    .and_then(|io| io.cluster)
                    .map(|c| (c.info, c.capacity, c.topology))
                    .unwrap_or_else(|| {
                        (format!("{{\"id\":{}}}", json_str(&peer)), 2, Topology::Mesh)
                    });
                inner.insert_io(
                    k,
                    SessionIo::new(
                        &settings,
                        host.clone(),
                        &room,
                        Some(ClSession {
                            epoch,
                            digest_hex: digest_hex.clone(),
                            info,
                            capacity,
                            topology,
                        }),
                    ),
                );
                k
            }
        };
        if let Some(cl) = inner.io.get_mut(&key).and_then(|io| io.cluster.as_mut()) {
            cl.epoch = epoch;
        }
        for (seq, text) in msgs {
            if inner.hub.push_sequenced(key, seq, &text).is_err() {
                break;
            }
        }
        let attached = inner.hub.attach(now, key, last_seq);
        inner.wake();
        self.attachment(inner, attached?, kind)
    }

    /// A client message of `peer` in a cluster. `Ok(true)`: it left. Refusals are queued on the
    /// session as sequenced errors (and returned).
    pub(super) async fn handle_cluster(
        &self,
        c: &Cluster,
        key: Option<SessionKey>,
        peer: &str,
        perms: Perms,
        msg: ClientMessage,
    ) -> Result<bool, ProtoError> {
        let id = msg.id().map(str::to_owned);
        let result = match msg {
            m @ (ClientMessage::Ack { .. } | ClientMessage::Ping { .. }) => {
                if let ClientMessage::Ack { seq } = &m {
                    self.ctl(Ctl::Ack {
                        peer: peer.to_owned(),
                        seq: *seq,
                    });
                }
                if let Some(key) = key {
                    let mut inner = self.inner.lock();
                    let _ = inner.hub.handle(Instant::now(), key, m);
                    inner.wake();
                }
                return Ok(false);
            }
            ClientMessage::Join(_) => Err(ProtoError::already_joined()),
            ClientMessage::Resume(_) => Err(ProtoError::resume_not_first()),
            ClientMessage::Signal(sig) => {
                if let Err(e) = perms.require(Perm::Signal) {
                    Err(e)
                } else {
                    let to = sig.to.clone();
                    let enc = ServerMessage::Signal {
                        from: peer.to_owned(),
                        data: sig.data,
                    }
                    .encode();
                    let (head, tail) = enc.seq_parts();
                    match c.send(peer, &to, &head, tail).await {
                        Ok(true) => Ok(false),
                        Ok(false) => Err(ProtoError::new(
                            ErrorCode::UnknownPeer,
                            "no such peer in this room",
                        )),
                        Err(e) => Err(unavailable(&e)),
                    }
                }
            }
            ClientMessage::Broadcast(b) => {
                if let Err(e) = perms.require(Perm::Broadcast) {
                    Err(e)
                } else {
                    let enc = ServerMessage::Broadcast {
                        from: peer.to_owned(),
                        data: b.data,
                    }
                    .encode();
                    let (head, tail) = enc.seq_parts();
                    c.broadcast(peer, &head, tail)
                        .await
                        .map(|_| false)
                        .map_err(|e| unavailable(&e))
                }
            }
            ClientMessage::Leave { .. } => match c.leave(peer, "left").await {
                Ok(()) => {
                    if let Some(key) = key {
                        let mut inner = self.inner.lock();
                        inner.hub.forget(key);
                        inner.wake();
                    }
                    return Ok(true);
                }
                Err(e) => Err(unavailable(&e)),
            },
            ClientMessage::Sip(_) => Err(ProtoError::new(
                ErrorCode::BadMessage,
                "dialing phones (`sip`) is not available in a cluster yet",
            )),
            ClientMessage::Sfu(m) => {
                let has_sfu = self.sfu().is_some();
                match c.sfu_in(peer, m.data.get(), has_sfu).await {
                    Ok(s) if s == "ok" || s == "gone" => Ok(false),
                    Ok(s) if s == "mesh" => Err(ProtoError::new(
                        ErrorCode::BadMessage,
                        "`sfu` messages are for SFU rooms; this room is a mesh",
                    )),
                    Ok(_) => Err(ProtoError::new(
                        ErrorCode::ServerFull,
                        "no node of the cluster has an SFU for this room",
                    )),
                    Err(e) => Err(unavailable(&e)),
                }
            }
        };
        // Queued in order with what the session receives next.
        result
            .map_err(|e| e.with_id(id))
            .inspect_err(|e| self.push_error_cluster(peer, e))
    }

    /// A transport-level refusal for `peer` in a cluster (numbered in Redis).
    pub(super) fn push_error_cluster(&self, peer: &str, err: &ProtoError) {
        let enc = err.to_server_message().encode();
        let (head, tail) = enc.seq_parts();
        self.ctl(Ctl::Push {
            room: String::new(),
            peer: peer.to_owned(),
            head,
            tail: tail.to_owned(),
        });
    }
}
