//! A cluster of real `icebreaker` processes on one real `redis-server` (Debian's; the test
//! starts and stops its own on a free loopback port): rooms span nodes, a `kill -9` of a node
//! loses no message (its clients resume on another node and get every message exactly once,
//! its members that do not come back leave after the grace period), and a Redis restart (empty,
//! no persistence) is survived by the nodes without the clients noticing.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::signal::*;
use serde_json::{json, Value};

/// Grace period of the nodes (short, so that the timeout test is quick).
const GRACE: u64 = 4;

fn free_port() -> u16 {
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Kills (SIGKILL) and reaps the process when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Redis {
    port: u16,
    proc: Option<Proc>,
}

impl Redis {
    fn start() -> Redis {
        let port = free_port();
        let mut r = Redis { port, proc: None };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &std::env::temp_dir().to_string_lossy(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/install-deps installs it)");
        self.proc = Some(Proc(child));
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < until, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills Redis (SIGKILL: everything it held is lost).
    fn kill(&mut self) {
        self.proc = None;
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

struct Node {
    http: SocketAddr,
    turn: SocketAddr,
    proc: Proc,
}

impl Node {
    async fn start(redis: &Redis, id: &str) -> Node {
        Node::start_with(redis, id, "off").await
    }

    async fn start_with(redis: &Redis, id: &str, sfu: &str) -> Node {
        Node::start_args(redis, id, sfu, &[]).await
    }

    async fn start_args(redis: &Redis, id: &str, sfu: &str, extra: &[&str]) -> Node {
        let (turn, http) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_icebreaker"))
            .args([
                "serve",
                "--turn-listen",
                &format!("127.0.0.1:{turn}"),
                "--http-listen",
                &format!("127.0.0.1:{http}"),
                "--sfu-listen",
                sfu,
                "--relay-ip",
                "127.0.0.1",
                "--turn-secret",
                "cluster-test-secret-0123456789",
                "--signal-grace",
                &GRACE.to_string(),
                "--cluster",
                &redis.url(),
                "--node-id",
                id,
                "--allow-peer",
                "127.0.0.0/8",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let node = Node {
            http: format!("127.0.0.1:{http}").parse().unwrap(),
            turn: format!("127.0.0.1:{turn}").parse().unwrap(),
            proc: Proc(child),
        };
        let until = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(node.http).await.is_err() {
            assert!(Instant::now() < until, "node {id} did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node
    }

    fn kill9(self) {
        drop(self.proc);
    }
}

async fn join(node: &Node, room: &str) -> (Ws, Value) {
    ws_join(node.http, room, json!({})).await
}

/// Everything until `pred` matches, acknowledging as it goes; returns (messages, the match).
async fn until(ws: &mut Ws, pred: impl Fn(&Value) -> bool) -> (Vec<Value>, Value) {
    let mut seen = Vec::new();
    loop {
        let v = recv(ws).await;
        if v.get("seq").is_some() {
            send(ws, json!({"type": "ack", "seq": v["seq"]})).await;
        }
        if pred(&v) {
            return (seen, v);
        }
        seen.push(v);
    }
}

/// [`until`] for a message that may take longer than [`WAIT`] (pings keep the socket alive).
async fn until_long(ws: &mut Ws, pred: impl Fn(&Value) -> bool) -> (Vec<Value>, Value) {
    use futures_util::StreamExt;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, ws.next())
            .await
            .expect("in time");
        let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = m else {
            continue;
        };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        if pred(&v) {
            return (seen, v);
        }
        seen.push(v);
    }
}

fn is_broadcast(v: &Value, data: &str) -> bool {
    v["type"] == "broadcast" && v["data"] == data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spans_three_nodes() {
    let redis = Redis::start();
    let n = [
        Node::start(&redis, "n1").await,
        Node::start(&redis, "n2").await,
        Node::start(&redis, "n3").await,
    ];
    let (mut a, ja) = join(&n[0], "span").await;
    let (mut b, jb) = join(&n[1], "span").await;
    let (mut c, jc) = join(&n[2], "span").await;
    let (pa, pb, pc) = (peer_of(&ja), peer_of(&jb), peer_of(&jc));
    assert_eq!(ja["initiator"], true);
    assert_eq!(jc["peers"].as_array().unwrap().len(), 2, "{jc}");
    // Presence across nodes.
    assert_eq!(
        recv_type(&mut a, "peer-joined").await["peer"]["id"],
        pb.as_str()
    );
    assert_eq!(
        recv_type(&mut a, "peer-joined").await["peer"]["id"],
        pc.as_str()
    );
    assert_eq!(
        recv_type(&mut b, "peer-joined").await["peer"]["id"],
        pc.as_str()
    );
    // signal n1 → n2, stamped with the sender.
    send(
        &mut a,
        json!({"type": "signal", "to": pb, "data": {"sdp": "offer"}}),
    )
    .await;
    let s = recv_type(&mut b, "signal").await;
    assert_eq!(
        (s["from"].as_str(), &s["data"]["sdp"]),
        (Some(pa.as_str()), &json!("offer"))
    );
    // broadcast n3 → n1 and n2, not n3 itself.
    send(&mut c, json!({"type": "broadcast", "data": "from-c"})).await;
    for ws in [&mut a, &mut b] {
        let m = recv_type(ws, "broadcast").await;
        assert_eq!(
            (m["from"].as_str(), &m["data"]),
            (Some(pc.as_str()), &json!("from-c"))
        );
    }
    // A signal to a member of another room is refused like an unknown peer.
    let (_x, jx) = join(&n[1], "elsewhere").await;
    send(
        &mut a,
        json!({"type": "signal", "to": peer_of(&jx), "data": 1, "id": "q"}),
    )
    .await;
    let e = recv_type(&mut a, "error").await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("unknown_peer"), Some("q"))
    );
    // Leave on n3 → peer-left on n1 and n2.
    send(&mut c, json!({"type": "leave"})).await;
    for ws in [&mut a, &mut b] {
        let l = recv_type(ws, "peer-left").await;
        assert_eq!(
            (l["peer"].as_str(), l["reason"].as_str()),
            (Some(pc.as_str()), Some("left"))
        );
    }
    // HTTP without sticky sessions: joined on n2, events from n1, sent through n3.
    let (session, peer) = http_join(n[1].http, "span").await;
    let mut sse = Sse::open(n[0].http, &format!("session={session}"), &[]).await;
    assert_eq!(sse.recv().await["type"], "joined");
    let r = http_send(
        n[2].http,
        &session,
        &json!({"type": "signal", "to": pa, "data": "via-n3"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let s = recv_type(&mut a, "signal").await;
    assert_eq!(
        (s["from"].as_str(), &s["data"]),
        (Some(peer.as_str()), &json!("via-n3"))
    );
    send(
        &mut b,
        json!({"type": "signal", "to": peer, "data": "to-sse"}),
    )
    .await;
    loop {
        let v = sse.recv().await;
        if v["type"] == "signal" {
            assert_eq!(v["data"], "to-sse");
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_node_loses_nothing() {
    let redis = Redis::start();
    let n1 = Node::start(&redis, "k1").await;
    let n2 = Node::start(&redis, "k2").await;
    let n3 = Node::start(&redis, "k3").await;
    let (mut a, ja) = join(&n1, "k").await;
    let (mut lost, jl) = join(&n1, "k").await;
    let (mut b, _) = join(&n2, "k").await;
    let (pa, pl) = (peer_of(&ja), peer_of(&jl));
    recv_type(&mut a, "peer-joined").await;
    recv_type(&mut a, "peer-joined").await;
    recv_type(&mut lost, "peer-joined").await;
    // Half the messages reach A on n1 ...
    for i in 0..10 {
        send(
            &mut b,
            json!({"type": "broadcast", "data": format!("m{i}")}),
        )
        .await;
    }
    let (_, last) = until(&mut a, |v| is_broadcast(v, "m4")).await;
    let last_seq = seq_of(&last);
    // ... then n1 dies, and B keeps sending while nobody holds A's session.
    n1.kill9();
    for i in 10..20 {
        send(
            &mut b,
            json!({"type": "broadcast", "data": format!("m{i}")}),
        )
        .await;
    }
    drop(a);
    // A resumes on n3 from what it had seen: m5..m19 exactly once, in order, then `resumed`.
    let mut a = ws(n3.http).await;
    send(
        &mut a,
        json!({"type": "resume", "session": session_of(&ja), "last_seq": last_seq}),
    )
    .await;
    // (B's last broadcasts may still be on their way: they come after `resumed` then.)
    let mut seen = Vec::new();
    while !(seen.iter().any(|v| is_broadcast(v, "m19"))
        && seen.iter().any(|v: &Value| v["type"] == "resumed"))
    {
        let (mut more, last) = until(&mut a, |_| true).await;
        seen.append(&mut more);
        seen.push(last);
    }
    let got: Vec<&str> = seen
        .iter()
        .filter(|v| v["type"] == "broadcast")
        .map(|v| v["data"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (5..20).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want, "every missed message once, in order: {seen:?}");
    let seqs: Vec<u64> = seen.iter().map(seq_of).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1) && seqs.first() == Some(&(last_seq + 1)),
        "no gap, no duplicate: {seqs:?}"
    );
    let resumed = seen
        .iter()
        .find(|v| v["type"] == "resumed")
        .expect("resumed")
        .clone();
    assert_eq!(resumed["peer"], pa.as_str());
    // It goes on from n3: B → A, A → B.
    send(&mut b, json!({"type": "broadcast", "data": "after"})).await;
    let (seen, _) = until(&mut a, |v| is_broadcast(v, "after")).await;
    assert!(seen.iter().all(|v| v["type"] != "broadcast"), "{seen:?}");
    send(&mut a, json!({"type": "broadcast", "data": "from-a"})).await;
    let (_, m) = until(&mut b, |v| is_broadcast(v, "from-a")).await;
    assert_eq!(m["from"], pa.as_str());
    // The member of n1 that never came back leaves after n1's heartbeat expired plus the grace
    // period; A (resumed) stays.
    let t0 = Instant::now();
    let (_, left) = until_long(&mut b, |v| v["type"] == "peer-left").await;
    assert_eq!(
        (left["peer"].as_str(), left["reason"].as_str()),
        (Some(pl.as_str()), Some("timeout"))
    );
    assert!(
        t0.elapsed() < Duration::from_secs(GRACE + 10),
        "{:?}",
        t0.elapsed()
    );
    send(&mut b, json!({"type": "broadcast", "data": "still-here"})).await;
    until(&mut a, |v| is_broadcast(v, "still-here")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_is_survived() {
    let mut redis = Redis::start();
    let n1 = Node::start(&redis, "r1").await;
    let n2 = Node::start(&redis, "r2").await;
    let (mut a, ja) = join(&n1, "rr").await;
    let (mut b, jb) = join(&n2, "rr").await;
    let pb = peer_of(&jb);
    recv_type(&mut a, "peer-joined").await;
    send(&mut b, json!({"type": "broadcast", "data": "before"})).await;
    until(&mut a, |v| is_broadcast(v, "before")).await;

    // Redis dies with everything it held; B sends while it is down; it comes back empty.
    redis.kill();
    send(&mut b, json!({"type": "broadcast", "data": "during"})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.spawn();
    // The message sent during the outage arrives once Redis is back, once.
    let (seen, _) = until(&mut a, |v| is_broadcast(v, "during")).await;
    assert!(seen.iter().all(|v| v["type"] != "broadcast"), "{seen:?}");
    // The nodes put their sessions back: both directions work, presence is intact.
    send(
        &mut a,
        json!({"type": "signal", "to": pb, "data": "a-to-b"}),
    )
    .await;
    let s = recv_type(&mut b, "signal").await;
    assert_eq!(s["data"], "a-to-b");
    send(&mut b, json!({"type": "broadcast", "data": "after"})).await;
    until(&mut a, |v| is_broadcast(v, "after")).await;
    // A new member on either node sees both.
    let (_c, jc) = join(&n2, "rr").await;
    let mut ids: Vec<&str> = jc["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = vec![peer_of(&ja), pb.clone()];
    want.sort();
    assert_eq!(ids, want);
    // And A can still resume (its session was restored with its token).
    let last = {
        let (_, v) = until(&mut a, |v| v["type"] == "peer-joined").await;
        seq_of(&v)
    };
    drop(a);
    let mut a = ws(n2.http).await;
    send(
        &mut a,
        json!({"type": "resume", "session": session_of(&ja), "last_seq": last}),
    )
    .await;
    until(&mut a, |v| v["type"] == "resumed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sfu_room_is_pinned_to_one_node_and_reached_from_the_others() {
    let redis = Redis::start();
    let n1 = Node::start_with(&redis, "s1", "127.0.0.1:0").await;
    let n2 = Node::start_with(&redis, "s2", "127.0.0.1:0").await;
    // Members alternate between the two nodes' signaling; the media all goes to the SFU of
    // the node the room is pinned to.
    let bench = tokio::spawn(icebreaker::bench::sfu::run_sfu_async(
        icebreaker::bench::SfuBench {
            http: n1.http,
            also: vec![n2.http],
            rooms: 1,
            publishers: 2,
            subscribers: 2,
            video_kbps: 300,
            fps: 15,
            data_message: true,
            connect_timeout: Duration::from_secs(15),
            duration: Duration::from_secs(5),
            ..icebreaker::bench::SfuBench::default()
        },
    ));
    // While the room is live, one SFU holds it: the other node's has nobody.
    let count = |http: SocketAddr| async move {
        let r = http_get(http, "/admin/sfu").await;
        r["totals"]["participants"].as_u64().unwrap_or(0)
    };
    let until = Instant::now() + Duration::from_secs(15);
    let (mut c1, mut c2) = (0, 0);
    while Instant::now() < until && c1 + c2 < 4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        (c1, c2) = (count(n1.http).await, count(n2.http).await);
    }
    assert!(
        (c1, c2) == (4, 0) || (c1, c2) == (0, 4),
        "participants per node's SFU: {c1}, {c2}"
    );
    let report = bench.await.unwrap().expect("bench sfu runs");
    assert_eq!(report.connected, 4, "{report:#?}");
    let publishers: Vec<&str> = report
        .members_detail
        .iter()
        .filter(|m| m.publisher)
        .map(|m| m.peer.as_str())
        .collect();
    for m in &report.members_detail {
        assert!(m.error.is_none(), "{m:?}");
        let mut want: Vec<&str> = publishers
            .iter()
            .copied()
            .filter(|p| *p != m.peer)
            .collect();
        want.sort_unstable();
        let got: Vec<&str> = m.received.keys().map(String::as_str).collect();
        assert_eq!(
            got, want,
            "{} receives every other publisher: {m:?}",
            m.peer
        );
        for (p, (video, audio)) in &m.received {
            assert!(
                *video >= 10 && *audio >= 20,
                "{} from {p}: {video} video, {audio} audio",
                m.peer
            );
        }
    }
}

async fn http_get(http: SocketAddr, path: &str) -> Value {
    let r = common::signal::http(http, "GET", path, &[], "").await;
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_turn_node_redirects_to_the_least_loaded_one() {
    use icebreaker::client::turn::{AllocateOptions, Credentials, Transport, TurnClient};
    let redis = Redis::start();
    let full = Node::start_args(&redis, "t1", "off", &["--max-allocations", "1"]).await;
    let free = Node::start(&redis, "t2").await;
    let creds = || Credentials::Rest {
        secret: "cluster-test-secret-0123456789".into(),
        user: "alice".into(),
        ttl: Duration::from_secs(3600),
    };
    let opts = |c| icebreaker::client::turn::ClientOptions {
        transport: Transport::Udp,
        credentials: Some(c),
        timeout: Duration::from_secs(5),
        ..Default::default()
    };
    // `joined` hands out both nodes' TURN (once both are in the registry: heartbeats every
    // 2 s), and a credential that works on either.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (_ws, j) = join(&full, "turnroom").await;
        let uris = j["iceServers"].to_string();
        if [&full, &free]
            .iter()
            .all(|n| uris.contains(&format!("turn:{}?transport=udp", n.turn)))
        {
            break;
        }
        assert!(
            Instant::now() < until,
            "both nodes' TURN in iceServers: {uris}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Fill the full node, then a client pointed at it is sent to the other and relays there.
    let mut first = TurnClient::connect(full.turn, opts(creds())).await.unwrap();
    first.allocate(&AllocateOptions::default()).await.unwrap();
    // The full node reports its load with its next registry update; the alternate is there
    // already (the other node is the least loaded one).
    let mut c = TurnClient::connect(full.turn, opts(creds())).await.unwrap();
    let alloc = c.allocate(&AllocateOptions::default()).await.unwrap();
    assert_eq!(c.server_addr(), free.turn, "allocated on the alternate");
    assert_eq!(
        c.redirected_from(),
        [full.turn],
        "300 Try Alternate from the full node"
    );
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c.create_permission(&[peer.local_addr().unwrap()])
        .await
        .unwrap();
    c.send_indication(peer.local_addr().unwrap(), b"via the fleet")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"via the fleet"[..], alloc.relayed));
    // Once the registry knows the node is full, `joined` lists only the other node's TURN.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (_ws, j) = join(&free, "turnroom2").await;
        let uris = j["iceServers"].to_string();
        if !uris.contains(&full.turn.to_string()) {
            assert!(uris.contains(&free.turn.to_string()), "{uris}");
            break;
        }
        assert!(
            Instant::now() < until,
            "the full node is still handed out: {uris}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_subscription_loses_no_message() {
    let redis = Redis::start();
    let fast = ["--signal-rate", "10000"];
    let n1 = Node::start_args(&redis, "p1", "off", &fast).await;
    let n2 = Node::start_args(&redis, "p2", "off", &fast).await;
    let (mut a, _) = join(&n1, "pubsub").await;
    let (mut b, _) = join(&n2, "pubsub").await;
    recv_type(&mut a, "peer-joined").await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // B sends 500 broadcasts as fast as it can; meanwhile every node's subscription is cut
    // again and again (what is published while a node is not subscribed is only in Redis).
    let sender = tokio::spawn(async move {
        for i in 0..500 {
            send(
                &mut b,
                json!({"type": "broadcast", "data": format!("b{i}")}),
            )
            .await;
        }
        b
    });
    // The cuts go on until A has everything (the nodes are still delivering after B's last
    // send was written).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut kills = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && kills < 200 {
                let n: i64 = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("pubsub")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                kills += n;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            kills
        })
    };
    let _b = sender.await.unwrap();
    let (seen, last) = until(&mut a, |v| is_broadcast(v, "b499")).await;
    let got: Vec<&str> = seen
        .iter()
        .chain(std::iter::once(&last))
        .filter(|v| v["type"] == "broadcast")
        .map(|v| v["data"].as_str().unwrap())
        .collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let kills = killer.await.unwrap();
    assert!(kills >= 2, "subscriptions cut {kills} times");
    let want: Vec<String> = (0..500).map(|i| format!("b{i}")).collect();
    assert_eq!(got, want, "all 500 once, in order ({kills} cuts)");
}

/// The admin view in a cluster: `/admin/rooms` on any node lists every room with the node of
/// each member; removing a member held by another node ends its stream there with `removed`
/// (its token answers `removed` on every node), the others see `peer-left` `kicked`; closing
/// a room from the other node removes the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_and_removes_across_nodes() {
    let redis = Redis::start();
    let n1 = Node::start(&redis, "n1").await;
    let n2 = Node::start(&redis, "n2").await;
    let (mut a, ja) = join(&n1, "adm").await;
    let (mut b, jb) = join(&n2, "adm").await;
    let (pa, pb) = (peer_of(&ja), peer_of(&jb));
    until(&mut a, |v| v["type"] == "peer-joined").await;

    let rooms = http_get(n1.http, "/admin/rooms").await;
    assert_eq!(rooms["cluster"], true, "{rooms}");
    let room = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == "adm")
        .unwrap_or_else(|| panic!("adm listed: {rooms}"))
        .clone();
    let nodes: Vec<(String, String)> = room["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["peer"].as_str().unwrap().into(),
                m["node"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        nodes,
        [(pa.clone(), "n1".into()), (pb.clone(), "n2".into())]
    );
    assert_eq!(room["members"][0]["transport"], "websocket", "{room}");
    assert_eq!(room["members"][1]["attached"], true, "{room}");

    // Unknown: 404.
    let r = common::signal::http(n1.http, "POST", "/admin/rooms/nope/close", &[], "").await;
    assert_eq!(r.status, 404);
    let r = common::signal::http(
        n1.http,
        "POST",
        "/admin/rooms/adm/peers/00000000/remove",
        &[],
        "",
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("unknown_peer"))
    );

    // n1 removes b, whose session is on n2.
    let path = format!("/admin/rooms/adm/peers/{pb}/remove");
    let r = common::signal::http(n1.http, "POST", &path, &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut last = None;
    while let Some(v) = next(&mut b).await {
        last = Some(v);
    }
    assert_eq!(last.unwrap()["code"], "removed");
    let (_, left) = until(&mut a, |v| v["type"] == "peer-left").await;
    assert_eq!(
        (left["peer"].clone(), left["reason"].clone()),
        (json!(pb), json!("kicked"))
    );
    // Its token answers `removed` on the node that did not hold it too.
    let mut b2 = ws(n1.http).await;
    send(
        &mut b2,
        json!({"type": "resume", "session": session_of(&jb), "last_seq": 1}),
    )
    .await;
    assert_eq!(recv(&mut b2).await["code"], "removed");

    // n2 closes the room: a (on n1) is removed.
    let r = common::signal::http(n2.http, "POST", "/admin/rooms/adm/close", &[], "").await;
    assert_eq!(
        (r.status, r.json()["removed"].clone()),
        (200, json!([pa])),
        "{}",
        r.body
    );
    let mut last = None;
    while let Some(v) = next(&mut a).await {
        last = Some(v);
    }
    assert_eq!(last.unwrap()["code"], "removed");
    let rooms = http_get(n2.http, "/admin/rooms").await;
    assert_eq!(rooms["rooms"], json!([]), "{rooms}");
}
