//! The cluster engine (`--cluster redis://…`): nodes share rooms, sessions and their missed
//! messages, node heartbeats and a node registry through one Redis server.
//!
//! Every change to shared state is one Lua script (atomic on the Redis server; see the `.lua`
//! files beside this one): a join admits into the room and numbers the new session's `joined`;
//! a message for a peer gets its `seq` from the peer's counter in Redis, is kept in the peer's
//! queue (a sorted set by `seq`, bounded like the local replay buffer, with a TTL) and is
//! published to the node that owns the peer's session. A resume on any node *claims* the
//! session (its epoch goes up, the previous node is told to let go) and replays from the queue,
//! so a session resumes on another node with exactly the messages it missed, also when the
//! node it was on died. Each operation carries an id: a retry after a lost answer (Redis
//! restarted, connection dropped) returns the first answer instead of running twice.
//!
//! Each node sends a heartbeat every [`HEARTBEAT`] (a key with a [`NODE_TTL`] expiry holding
//! its load); every node runs the reaper each second: sessions whose grace period expired
//! leave their rooms, and a node whose heartbeat expired is removed, its sessions start their
//! grace period (its clients resume on other nodes meanwhile) and its SFU rooms are unpinned.
//! When Redis comes back empty (restarted without persistence) or this node was declared dead
//! (a long stall), the node puts its own sessions back ([`Cluster::restore`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use parking_lot::RwLock;
use redis::aio::ConnectionManager;
use redis::{RetryMethod, Script, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

/// How often a node refreshes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A node whose heartbeat is this old is dead.
pub const NODE_TTL: Duration = Duration::from_secs(6);
/// How long an operation is retried while Redis is unreachable (a restart) before it fails.
const RETRY_FOR: Duration = Duration::from_secs(20);
/// Grace expiries handled per reaper run.
const REAP_BATCH: usize = 500;

const PRELUDE: &str = include_str!("prelude.lua");

/// The scripts, each with the prelude in front.
struct Scripts {
    admit: Script,
    send: Script,
    broadcast: Script,
    push: Script,
    push_room: Script,
    sfu_in: Script,
    leave: Script,
    claim: Script,
    attach: Script,
    ack: Script,
    fetch: Script,
    reap: Script,
    heartbeat: Script,
    restore: Script,
    begin_restore: Script,
    who: Script,
    remove: Script,
    rooms: Script,
}

impl Scripts {
    fn new() -> Self {
        let s = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Scripts {
            admit: s(include_str!("admit.lua")),
            send: s(include_str!("send.lua")),
            broadcast: s(include_str!("broadcast.lua")),
            push: s(include_str!("push.lua")),
            push_room: s(include_str!("push_room.lua")),
            sfu_in: s(include_str!("sfu_in.lua")),
            leave: s(include_str!("leave.lua")),
            claim: s(include_str!("claim.lua")),
            attach: s(include_str!("attach.lua")),
            ack: s(include_str!("ack.lua")),
            fetch: s(include_str!("fetch.lua")),
            reap: s(include_str!("reap.lua")),
            heartbeat: s(include_str!("heartbeat.lua")),
            restore: s(include_str!("restore.lua")),
            who: s(include_str!("who.lua")),
            begin_restore: s(include_str!("begin_restore.lua")),
            remove: s(include_str!("remove.lua")),
            rooms: s(include_str!("rooms.lua")),
        }
    }
}

/// Settings of the cluster engine.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// This node's id (unique in the cluster).
    pub node: String,
    /// Key prefix (`ib:`), so that clusters can share a Redis.
    pub prefix: String,
    /// Messages kept per session for replay.
    pub replay_limit: usize,
    /// Bytes kept per session for replay.
    pub replay_max_bytes: usize,
    /// Signaling grace period.
    pub grace: Duration,
}

/// What a node tells the others about itself (the registry entry, refreshed every heartbeat).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// TURN/STUN addresses clients reach it at (UDP and TCP), `IP:PORT`.
    #[serde(default)]
    pub turn: Vec<String>,
    /// TURNS (TLS) addresses.
    #[serde(default)]
    pub turns: Vec<String>,
    /// Live TURN allocations.
    #[serde(default)]
    pub allocations: u64,
    /// Allocation limit (0 = none).
    #[serde(default)]
    pub max_allocations: u64,
    /// Live signaling sessions on it.
    #[serde(default)]
    pub sessions: u64,
    /// It takes no new allocations or joins.
    #[serde(default)]
    pub draining: bool,
    /// It has an SFU.
    #[serde(default)]
    pub sfu: bool,
    /// Its HTTP listener (for the admin view).
    #[serde(default)]
    pub http: String,
    /// Unix seconds it started.
    #[serde(default)]
    pub started: u64,
}

impl NodeInfo {
    /// Load as a fraction of its allocation limit (allocations themselves without a limit).
    pub fn load(&self) -> f64 {
        if self.max_allocations > 0 {
            self.allocations as f64 / self.max_allocations as f64
        } else {
            self.allocations as f64 / 1e9
        }
    }

    /// It can take a new allocation.
    pub fn available(&self) -> bool {
        !self.draining && (self.max_allocations == 0 || self.allocations < self.max_allocations)
    }
}

/// Something another node (or Redis) told this node.
#[derive(Debug, Clone)]
pub enum Event {
    /// A numbered message for a session owned here.
    Deliver {
        peer: String,
        seq: u64,
        text: String,
    },
    /// Another node claimed the session (a resume there) at `epoch`.
    Takeover { peer: String, epoch: u64 },
    /// The session ended (left, timed out), possibly decided by another node.
    Gone { peer: String },
    /// An operator removed the session (`/admin`, on any node): it ended, and its client is
    /// told `removed`.
    Removed { peer: String },
    /// An `sfu` message from a member, for the SFU here.
    SfuIn {
        room: String,
        peer: String,
        data: String,
    },
    /// A member left an SFU room whose SFU is here.
    SfuLeft { room: String, peer: String },
    /// The subscription was re-established or this node's sessions were restored: messages
    /// may have been missed meanwhile, fill the gaps.
    Resync,
}

/// Why an operation failed.
#[derive(Debug)]
pub enum OpError {
    /// Redis did not answer in time (it is down or unreachable).
    Unavailable(String),
    /// Redis answered with an error (a bug, or a Redis without Lua).
    Failed(String),
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Unavailable(m) => write!(f, "the cluster store is unavailable: {m}"),
            OpError::Failed(m) => write!(f, "the cluster store failed: {m}"),
        }
    }
}

/// The cluster engine of one node.
pub struct Cluster {
    cfg: ClusterConfig,
    client: redis::Client,
    conn: ConnectionManager,
    scripts: Scripts,
    next_op: AtomicU64,
    /// Random per process start: operation ids stay unique across restarts of a node id.
    run: u32,
    qttl_ms: u64,
    /// Every live node (this one too), from the last heartbeat.
    registry: RwLock<Vec<NodeInfo>>,
    /// Rooms in the cluster, from the last heartbeat.
    rooms: AtomicU64,
    /// Redis answered the last heartbeat.
    up: AtomicBool,
    /// This node's own registry entry, refreshed by the server before each heartbeat.
    info: RwLock<NodeInfo>,
    /// The arguments of `restore.lua` for each session held here (set by signaling).
    restorer: std::sync::OnceLock<Restorer>,
    /// One restore at a time.
    restoring: tokio::sync::Mutex<()>,
    /// Where events go (set by [`Cluster::spawn`]).
    events: std::sync::OnceLock<mpsc::UnboundedSender<Event>>,
}

/// Lists the `restore.lua` arguments of every session this node holds.
pub type Restorer = Box<dyn Fn() -> Vec<Vec<String>> + Send + Sync>;

/// How long the nodes have to restore their sessions after Redis came back empty.
const RESTORE_WINDOW: Duration = Duration::from_secs(3);

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.cfg.node)
            .finish_non_exhaustive()
    }
}

fn retryable(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.retry_method(),
            RetryMethod::WaitAndRetry | RetryMethod::Reconnect
        )
}

/// A Lua reply as strings (numbers written out; nested arrays flattened; nil as "").
fn strings(v: Value) -> Vec<String> {
    fn one(v: Value, out: &mut Vec<String>) {
        match v {
            Value::BulkString(b) => out.push(String::from_utf8_lossy(&b).into_owned()),
            Value::SimpleString(s) => out.push(s),
            Value::Int(i) => out.push(i.to_string()),
            Value::Double(d) => out.push(d.to_string()),
            Value::Array(a) | Value::Set(a) => a.into_iter().for_each(|x| one(x, out)),
            Value::Okay => out.push("OK".into()),
            _ => out.push(String::new()),
        }
    }
    let mut out = Vec::new();
    one(v, &mut out);
    out
}

impl Cluster {
    /// Connects to Redis (fails at once when it cannot be reached: a node must not start
    /// without the shared state).
    pub async fn connect(cfg: ClusterConfig) -> anyhow::Result<Arc<Cluster>> {
        let client = redis::Client::open(cfg.url.as_str())
            .with_context(|| format!("bad --cluster URL {:?}", redact(&cfg.url)))?;
        let mc = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(3))
            .set_number_of_retries(2)
            .set_max_delay(500);
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            ConnectionManager::new_with_config(client.clone(), mc),
        )
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("cannot reach Redis at {}", redact(&cfg.url)))?;
        let qttl_ms = (cfg.grace + Duration::from_secs(60)).as_millis() as u64;
        let run = rand::random::<u32>();
        let c = Arc::new(Cluster {
            info: RwLock::new(NodeInfo {
                id: cfg.node.clone(),
                ..NodeInfo::default()
            }),
            cfg,
            client,
            conn,
            scripts: Scripts::new(),
            next_op: AtomicU64::new(1),
            run,
            qttl_ms,
            registry: RwLock::new(Vec::new()),
            rooms: AtomicU64::new(0),
            up: AtomicBool::new(true),
            restorer: std::sync::OnceLock::new(),
            restoring: tokio::sync::Mutex::new(()),
            events: std::sync::OnceLock::new(),
        });
        // In the registry before the first client arrives.
        c.heartbeat(true)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("cannot use Redis at {}", redact(&c.cfg.url)))?;
        Ok(c)
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.cfg.node
    }

    /// Redis answered the last heartbeat.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Rooms in the whole cluster (as of the last heartbeat).
    pub fn rooms(&self) -> u64 {
        self.rooms.load(Ordering::Relaxed)
    }

    /// The live nodes (as of the last heartbeat).
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.registry.read().clone()
    }

    /// Sets this node's registry entry (sent with the next heartbeat).
    pub fn set_info(&self, f: impl FnOnce(&mut NodeInfo)) {
        f(&mut self.info.write());
    }

    /// The TURN nodes to hand out, least loaded first, at most `n`, skipping draining and full
    /// ones and those without TURN addresses.
    pub fn turn_nodes(&self, n: usize) -> Vec<NodeInfo> {
        rank_turn_nodes(&self.registry.read(), n)
    }

    /// Sets how signaling lists its sessions for a restore.
    pub fn set_restorer(&self, f: Restorer) {
        let _ = self.restorer.set(f);
    }

    /// Runs `script` with the common arguments and `args`, retrying while Redis is unreachable,
    /// restoring this node's sessions first when Redis lost them, waiting while other nodes
    /// restore theirs.
    async fn run(&self, script: &Script, args: &[&str]) -> Result<Vec<String>, OpError> {
        let op = self.op_id();
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            let r = self.run_once(script, args, &op).await?;
            match r.first().map(String::as_str) {
                Some("lost") if Instant::now() < deadline => {
                    if let Err(e) = self.ensure_restored().await {
                        tracing::warn!("cluster: restore failed: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                Some("wait") if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Some("lost" | "wait") => {
                    return Err(OpError::Unavailable("the cluster is restoring".into()))
                }
                _ => return Ok(r),
            }
        }
    }

    fn op_id(&self) -> String {
        format!(
            "{}:{:08x}:{}",
            self.cfg.node,
            self.run,
            self.next_op.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// One operation (id `op`), retried while Redis is unreachable.
    async fn run_once(
        &self,
        script: &Script,
        args: &[&str],
        op: &str,
    ) -> Result<Vec<String>, OpError> {
        let deadline = Instant::now() + RETRY_FOR;
        let mut delay = Duration::from_millis(50);
        loop {
            let mut inv = script.prepare_invoke();
            inv.arg(&self.cfg.prefix)
                .arg(&self.cfg.node)
                .arg(self.cfg.replay_limit.max(1))
                .arg(self.cfg.replay_max_bytes.max(1))
                .arg(self.qttl_ms)
                .arg(op);
            for a in args {
                inv.arg(*a);
            }
            let mut conn = self.conn.clone();
            match inv.invoke_async::<Value>(&mut conn).await {
                Ok(v) => return Ok(strings(v)),
                Err(e) if retryable(&e) && Instant::now() < deadline => {
                    tracing::debug!("cluster: Redis unavailable ({e}); retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                Err(e) if retryable(&e) => return Err(OpError::Unavailable(e.to_string())),
                Err(e) => return Err(OpError::Failed(e.to_string())),
            }
        }
    }

    /// Puts this node's sessions back into Redis when Redis no longer knows this node (it
    /// restarted empty, or declared this node dead after a stall), then announces the node
    /// again. Concurrent callers wait for the one restore.
    async fn ensure_restored(&self) -> Result<(), OpError> {
        let _one = self.restoring.lock().await;
        let key = format!("{}node:{}", self.cfg.prefix, self.cfg.node);
        let mut conn = self.conn.clone();
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(|e| OpError::Unavailable(e.to_string()))?;
        if exists {
            return Ok(());
        }
        let window = RESTORE_WINDOW.as_millis().to_string();
        let emptied = self
            .run_once(&self.scripts.begin_restore, &[&window], &self.op_id())
            .await?;
        let sessions = self.restorer.get().map(|f| f()).unwrap_or_default();
        tracing::warn!(
            "cluster: Redis {}; putting this node's {} session(s) back",
            if emptied.first().is_some_and(|s| s == "1") {
                "lost its data"
            } else {
                "no longer knew this node"
            },
            sessions.len()
        );
        for args in &sessions {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = self
                .run_once(&self.scripts.restore, &refs, &self.op_id())
                .await?;
            if r.first().is_some_and(|s| s == "moved") {
                // Another node claimed it meanwhile.
                if let (Some(tx), Some(peer)) = (self.events.get(), args.first()) {
                    let _ = tx.send(Event::Gone { peer: peer.clone() });
                }
            }
        }
        self.heartbeat(true).await?;
        if let Some(tx) = self.events.get() {
            let _ = tx.send(Event::Resync);
        }
        Ok(())
    }

    /// `join`: see `admit.lua` for the arguments.
    pub async fn admit(&self, args: &[&str]) -> Result<Vec<String>, OpError> {
        self.run(&self.scripts.admit, args).await
    }

    /// `signal` from `from` to `to`: `Ok(false)` when `to` is not in the sender's room.
    pub async fn send(
        &self,
        from: &str,
        to: &str,
        head: &str,
        tail: &str,
    ) -> Result<bool, OpError> {
        let r = self
            .run(&self.scripts.send, &[from, to, head, tail])
            .await?;
        Ok(r.first().is_some_and(|s| s == "ok"))
    }

    /// `broadcast` from `from` to the rest of its room.
    pub async fn broadcast(&self, from: &str, head: &str, tail: &str) -> Result<(), OpError> {
        self.run(&self.scripts.broadcast, &[from, head, tail])
            .await
            .map(drop)
    }

    /// A message for `peer` (in `room`, or any room with `""`). `Ok(false)`: gone.
    pub async fn push(
        &self,
        peer: &str,
        room: &str,
        head: &str,
        tail: &str,
    ) -> Result<bool, OpError> {
        let r = self
            .run(&self.scripts.push, &[peer, room, head, tail])
            .await?;
        Ok(r.first().is_some_and(|s| s == "ok"))
    }

    /// A message for every member of `room`.
    pub async fn push_room(&self, room: &str, head: &str, tail: &str) -> Result<(), OpError> {
        self.run(&self.scripts.push_room, &[room, head, tail])
            .await
            .map(drop)
    }

    /// An `sfu` message from `peer` for its room's SFU node. The answer's first element:
    /// `ok` (sent), `gone`, `mesh` (not an SFU room), `nosfu` (no SFU node).
    pub async fn sfu_in(&self, peer: &str, data: &str, has_sfu: bool) -> Result<String, OpError> {
        let r = self
            .run(
                &self.scripts.sfu_in,
                &[peer, data, if has_sfu { "1" } else { "0" }],
            )
            .await?;
        Ok(r.into_iter().next().unwrap_or_default())
    }

    /// `peer` leaves its room (`reason`: `left`, `kicked`, `timeout`).
    pub async fn leave(&self, peer: &str, reason: &str) -> Result<(), OpError> {
        self.run(&self.scripts.leave, &[peer, reason])
            .await
            .map(drop)
    }

    /// Admin removal (see `remove.lua`): member `peer` of `room`, or every member with `""`.
    /// `["ok", removed peers…]`, `["noroom"]` or `["nopeer"]`.
    pub async fn remove_members(&self, room: &str, peer: &str) -> Result<Vec<String>, OpError> {
        self.run(&self.scripts.remove, &[room, peer]).await
    }

    /// Whether an operator removed the session of this token digest (hex) lately.
    pub async fn is_removed(&self, digest_hex: &str) -> Result<bool, OpError> {
        let key = format!("{}rm:{digest_hex}", self.cfg.prefix);
        let mut conn = self.conn.clone();
        redis::cmd("EXISTS")
            .arg(&key)
            .query_async::<bool>(&mut conn)
            .await
            .map_err(|e| OpError::Unavailable(e.to_string()))
    }

    /// Every room of the cluster (the first `max` by name) with its members (see `rooms.lua`).
    pub async fn list_rooms(&self, max: usize) -> Result<RoomList, OpError> {
        let max = max.to_string();
        let r = self
            .run_once(&self.scripts.rooms, &[&max], &self.op_id())
            .await?;
        Ok(parse_rooms(&r))
    }

    /// Looks a session up by its token digest (hex): its peer id.
    pub async fn peer_of(&self, digest_hex: &str) -> Result<Option<String>, OpError> {
        let key = format!("{}tok:{digest_hex}", self.cfg.prefix);
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            let mut conn = self.conn.clone();
            match redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<String>>(&mut conn)
                .await
            {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) if retryable(&e) => return Err(OpError::Unavailable(e.to_string())),
                Err(e) => return Err(OpError::Failed(e.to_string())),
            }
        }
    }

    /// The session of a token digest (hex): its peer id and permission bits.
    pub async fn who(&self, digest_hex: &str) -> Result<Option<(String, u8)>, OpError> {
        let r = self.run(&self.scripts.who, &[digest_hex]).await?;
        Ok(match r.as_slice() {
            [peer, perms] => Some((peer.clone(), perms.parse().unwrap_or(0))),
            _ => None,
        })
    }

    /// Claims a session for this node (a resume): see `claim.lua`.
    pub async fn claim(
        &self,
        digest_hex: &str,
        peer: &str,
        last_seq: u64,
        announce: bool,
        resumed_end: &str,
    ) -> Result<Vec<String>, OpError> {
        let last = last_seq.to_string();
        self.run(
            &self.scripts.claim,
            &[
                digest_hex,
                peer,
                &last,
                if announce { "1" } else { "0" },
                resumed_end,
            ],
        )
        .await
    }

    /// A stream of `peer` (at `epoch`) attached (`true`) or ended (`false`: the grace period
    /// starts). `Ok(false)`: the session is no longer this node's.
    pub async fn attach(&self, peer: &str, epoch: u64, attached: bool) -> Result<bool, OpError> {
        let e = epoch.to_string();
        let g = self.cfg.grace.as_millis().to_string();
        let r = self
            .run(
                &self.scripts.attach,
                &[peer, &e, if attached { "1" } else { "0" }, &g],
            )
            .await?;
        Ok(r.first().is_some_and(|s| s == "ok"))
    }

    /// `peer` acknowledged everything up to `seq`.
    pub async fn ack(&self, peer: &str, seq: u64) -> Result<(), OpError> {
        self.run(&self.scripts.ack, &[peer, &seq.to_string()])
            .await
            .map(drop)
    }

    /// `peer`'s messages after `after`: `(seq, text)`.
    pub async fn fetch(&self, peer: &str, after: u64) -> Result<Vec<(u64, String)>, OpError> {
        let r = self
            .run(&self.scripts.fetch, &[peer, &after.to_string()])
            .await?;
        Ok(pairs(&r))
    }

    /// One heartbeat: refreshes this node's entry, reads the registry. `Ok(true)` when this
    /// node's entry had vanished (Redis lost it, or this node was declared dead).
    async fn heartbeat(&self, create: bool) -> Result<bool, OpError> {
        let info = serde_json::to_string(&*self.info.read()).unwrap_or_default();
        let ttl = NODE_TTL.as_millis().to_string();
        let r = self
            .run_once(
                &self.scripts.heartbeat,
                &[&info, &ttl, if create { "1" } else { "0" }],
                &self.op_id(),
            )
            .await?;
        let existed = r.first().is_some_and(|s| s == "1");
        let rooms = r.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        self.rooms.store(rooms, Ordering::Relaxed);
        if !existed && !create {
            return Ok(true);
        }
        let nodes: Vec<NodeInfo> = r
            .iter()
            .skip(2)
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect();
        *self.registry.write() = nodes;
        Ok(false)
    }

    /// Runs the heartbeat, the reaper and the subscription until `shutdown`; events go to
    /// `events`.
    pub fn spawn(
        self: &Arc<Self>,
        events: mpsc::UnboundedSender<Event>,
        shutdown: watch::Receiver<bool>,
    ) {
        let _ = self.events.set(events.clone());
        let me = self.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                match me.heartbeat(false).await {
                    Ok(vanished) => {
                        me.up.store(true, Ordering::Relaxed);
                        if vanished {
                            if let Err(e) = me.ensure_restored().await {
                                tracing::warn!("cluster: restore failed: {e}");
                            }
                        }
                    }
                    Err(e) => {
                        me.up.store(false, Ordering::Relaxed);
                        tracing::warn!("cluster heartbeat: {e}");
                    }
                }
            }
        });
        let me = self.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let g = me.cfg.grace.as_millis().to_string();
                let n = REAP_BATCH.to_string();
                match me.run(&me.scripts.reap, &[&g, &n]).await {
                    Ok(r) => {
                        if r.get(1).is_some_and(|d| d != "0") {
                            tracing::info!("cluster: {} dead node(s) removed; their sessions are in their grace period", r[1]);
                        }
                    }
                    Err(e) => tracing::debug!("cluster reaper: {e}"),
                }
            }
        });
        let me = self.clone();
        let mut stop = shutdown;
        tokio::spawn(async move {
            let channel = format!("{}n:{}", me.cfg.prefix, me.cfg.node);
            let mut delay = Duration::from_millis(100);
            let mut first = true;
            loop {
                let sub = async {
                    let mut ps = me.client.get_async_pubsub().await?;
                    ps.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(ps)
                };
                let ps = tokio::select! {
                    r = tokio::time::timeout(Duration::from_secs(3), sub) => r,
                    _ = stop.wait_for(|s| *s) => return,
                };
                let mut ps = match ps {
                    Ok(Ok(ps)) => ps,
                    other => {
                        if let Ok(Err(e)) = other {
                            tracing::debug!("cluster subscription: {e}");
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(1));
                        continue;
                    }
                };
                delay = Duration::from_millis(100);
                if !first {
                    tracing::info!("cluster: subscription re-established");
                    if let Err(e) = me.ensure_restored().await {
                        tracing::warn!("cluster: restore failed: {e}");
                    }
                    let _ = events.send(Event::Resync);
                }
                first = false;
                let mut stream = ps.on_message();
                loop {
                    let msg = tokio::select! {
                        m = stream.next() => m,
                        _ = stop.wait_for(|s| *s) => return,
                    };
                    let Some(msg) = msg else { break };
                    let payload = msg.get_payload_bytes();
                    match parse_event(payload) {
                        Some(ev) => {
                            if events.send(ev).is_err() {
                                return;
                            }
                        }
                        None => tracing::debug!("cluster: unreadable event dropped"),
                    }
                }
                tracing::warn!("cluster: subscription lost; reconnecting");
            }
        });
    }
}

/// The TURN REST secret of a cluster whose nodes were given none: the first node's `candidate`
/// is stored (`{prefix}secret`), later nodes take it.
pub async fn shared_secret(url: &str, prefix: &str, candidate: &str) -> anyhow::Result<String> {
    shared_value(url, prefix, "secret", candidate).await
}

/// A value every node of the cluster uses (`{prefix}{name}`): the first node's `candidate`
/// is stored, later nodes take it.
pub async fn shared_value(
    url: &str,
    prefix: &str,
    name: &str,
    candidate: &str,
) -> anyhow::Result<String> {
    let client =
        redis::Client::open(url).with_context(|| format!("bad --cluster URL {:?}", redact(url)))?;
    let work = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let key = format!("{prefix}{name}");
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(candidate)
            .arg("NX")
            .query_async(&mut conn)
            .await?;
        redis::cmd("GET")
            .arg(&key)
            .query_async::<Option<String>>(&mut conn)
            .await
    };
    let got = tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("cannot reach Redis at {}", redact(url)))?;
    Ok(got.unwrap_or_else(|| candidate.to_owned()))
}

/// The `n` least-loaded nodes that can take allocations and have TURN addresses.
pub fn rank_turn_nodes(nodes: &[NodeInfo], n: usize) -> Vec<NodeInfo> {
    let mut v: Vec<NodeInfo> = nodes
        .iter()
        .filter(|i| i.available() && !(i.turn.is_empty() && i.turns.is_empty()))
        .cloned()
        .collect();
    v.sort_by(|a, b| a.load().total_cmp(&b.load()).then_with(|| a.id.cmp(&b.id)));
    v.truncate(n);
    v
}

/// The rooms of the cluster, for the admin view.
#[derive(Debug, Default)]
pub struct RoomList {
    pub rooms: Vec<ListedRoom>,
    /// More rooms exist than were listed.
    pub truncated: bool,
}

/// One room of [`RoomList`].
#[derive(Debug)]
pub struct ListedRoom {
    pub room: String,
    pub capacity: u32,
    pub topology: String,
    /// The node its SFU runs on (`None`: a mesh, or not pinned).
    pub sfu_node: Option<String>,
    /// Unix ms it was created (0: unknown).
    pub at: u64,
    pub members: Vec<ListedMember>,
}

/// One member of a [`ListedRoom`].
#[derive(Debug)]
pub struct ListedMember {
    pub peer: String,
    /// `PeerInfo` as JSON.
    pub info: String,
    /// The node that holds its session.
    pub node: String,
    /// A stream is attached (not in its grace period).
    pub attached: bool,
    /// Unix ms it joined (0: unknown).
    pub at: u64,
}

/// Reads `rooms.lua`'s answer (a malformed tail is dropped).
fn parse_rooms(r: &[String]) -> RoomList {
    let mut out = RoomList {
        truncated: r.first().is_some_and(|t| t == "1"),
        rooms: Vec::new(),
    };
    let mut it = r.iter().skip(1);
    while let Some(tag) = it.next() {
        if tag != "R" {
            break;
        }
        let (Some(room), Some(cap), Some(topo), Some(sfu), Some(at), Some(n)) = (
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
        ) else {
            break;
        };
        let n: usize = n.parse().unwrap_or(0);
        let mut members = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let (Some(peer), Some(info), Some(node), Some(att), Some(mat)) =
                (it.next(), it.next(), it.next(), it.next(), it.next())
            else {
                break;
            };
            members.push(ListedMember {
                peer: peer.clone(),
                info: info.clone(),
                node: node.clone(),
                attached: att == "1",
                at: mat.parse().unwrap_or(0),
            });
        }
        out.rooms.push(ListedRoom {
            room: room.clone(),
            capacity: cap.parse().unwrap_or(0),
            topology: topo.clone(),
            sfu_node: (!sfu.is_empty()).then(|| sfu.clone()),
            at: at.parse().unwrap_or(0),
            members,
        });
    }
    out
}

/// `[seq, text, seq, text, …]` → pairs (malformed entries skipped).
pub fn pairs(r: &[String]) -> Vec<(u64, String)> {
    r.chunks_exact(2)
        .filter_map(|c| Some((c[0].parse().ok()?, c[1].clone())))
        .collect()
}

/// Reads a published event: `d\npeer\nseq\ntext`, `t\npeer\nepoch`, `x\npeer`, `k\npeer`,
/// `s\nroom\npeer\ndata`, `r\nroom\npeer`.
fn parse_event(payload: &[u8]) -> Option<Event> {
    let s = std::str::from_utf8(payload).ok()?;
    let (kind, rest) = s.split_once('\n')?;
    match kind {
        "d" => {
            let mut it = rest.splitn(3, '\n');
            let peer = it.next()?.to_owned();
            let seq = it.next()?.parse().ok()?;
            let text = it.next()?.to_owned();
            Some(Event::Deliver { peer, seq, text })
        }
        "t" => {
            let (peer, epoch) = rest.split_once('\n')?;
            Some(Event::Takeover {
                peer: peer.to_owned(),
                epoch: epoch.parse().ok()?,
            })
        }
        "x" => Some(Event::Gone {
            peer: rest.to_owned(),
        }),
        "k" => Some(Event::Removed {
            peer: rest.to_owned(),
        }),
        "s" => {
            let mut it = rest.splitn(3, '\n');
            Some(Event::SfuIn {
                room: it.next()?.to_owned(),
                peer: it.next()?.to_owned(),
                data: it.next()?.to_owned(),
            })
        }
        "r" => {
            let (room, peer) = rest.split_once('\n')?;
            Some(Event::SfuLeft {
                room: room.to_owned(),
                peer: peer.to_owned(),
            })
        }
        _ => None,
    }
}

/// The URL without its password (for messages).
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_and_bad_ones_are_refused() {
        match parse_event(b"d\nab12cd34\n7\n{\"type\":\"signal\",\"seq\":7,\"data\":\"a\nb\"}") {
            Some(Event::Deliver { peer, seq, text }) => {
                assert_eq!((peer.as_str(), seq), ("ab12cd34", 7));
                assert!(text.ends_with("\"a\nb\"}"), "text kept whole: {text}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_event(b"t\np\n3"),
            Some(Event::Takeover { epoch: 3, .. })
        ));
        assert!(matches!(parse_event(b"x\np"), Some(Event::Gone { .. })));
        assert!(matches!(parse_event(b"k\np"), Some(Event::Removed { .. })));
        assert!(parse_event(b"d\np\nnotanumber\ntext").is_none());
        assert!(parse_event(b"q\nwhatever").is_none());
        assert!(parse_event(b"").is_none());
        assert!(parse_event(&[0xff, b'\n']).is_none());
    }

    #[test]
    fn room_lists_parse() {
        let v: Vec<String> = [
            "0",
            "R",
            "a/b",
            "50",
            "mesh",
            "",
            "1000",
            "2",
            "p1",
            "{\"id\":\"p1\"}",
            "n1",
            "1",
            "900",
            "p2",
            "{}",
            "n2",
            "0",
            "0",
            "R",
            "c",
            "4",
            "sfu",
            "n2",
            "0",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let l = parse_rooms(&v);
        assert!(!l.truncated);
        assert_eq!(l.rooms.len(), 2);
        assert_eq!(l.rooms[0].room, "a/b");
        assert_eq!(l.rooms[0].members.len(), 2);
        assert!(l.rooms[0].members[0].attached && !l.rooms[0].members[1].attached);
        assert_eq!(l.rooms[1].sfu_node.as_deref(), Some("n2"));
        assert!(parse_rooms(&["1".into(), "R".into(), "x".into()]).truncated);
    }

    #[test]
    fn least_loaded_available_nodes_first() {
        let node = |id: &str, a: u64, max: u64, draining: bool| NodeInfo {
            id: id.into(),
            turn: vec!["127.0.0.1:3478".into()],
            allocations: a,
            max_allocations: max,
            draining,
            ..NodeInfo::default()
        };
        let v = [
            node("a", 50, 100, false),
            node("b", 10, 100, false),
            node("c", 100, 100, false),
            node("d", 0, 100, true),
        ];
        let ids = |v: Vec<NodeInfo>| v.into_iter().map(|n| n.id).collect::<Vec<_>>();
        assert_eq!(ids(rank_turn_nodes(&v, 3)), ["b", "a"]);
        assert_eq!(ids(rank_turn_nodes(&v, 1)), ["b"]);
        let mut no_turn = node("e", 0, 100, false);
        no_turn.turn.clear();
        assert_eq!(ids(rank_turn_nodes(&[no_turn], 3)), Vec::<String>::new());
    }

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            redact("redis://:secret@10.0.0.5:6379/0"),
            "redis://…@10.0.0.5:6379/0"
        );
        assert_eq!(redact("redis://10.0.0.5"), "redis://10.0.0.5");
    }
}
