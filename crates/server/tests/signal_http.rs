//! Signaling over HTTP (join/send, SSE, long-poll), transport switching, and /api/ice-servers.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::signal::*;
use serde_json::{json, Value};

#[tokio::test]
async fn http_join_sse_and_send() {
    let srv = common::server(common::config(false)).await;
    let (session, peer) = http_join(srv.http, "h").await;
    assert_eq!(session.len(), 43);
    assert_eq!(peer.len(), 8);
    let mut sse = Sse::open(srv.http, &format!("session={session}&last_seq=0"), &[]).await;
    assert_eq!(sse.status, 200, "{}", sse.head);
    assert!(sse.head.to_ascii_lowercase().contains("text/event-stream"));
    let (id, joined) = sse.next().await.unwrap();
    assert_eq!(id, Some(1));
    assert_eq!(joined["type"], "joined");
    assert_eq!(joined["peer"], peer.as_str());
    assert_eq!(joined["peers"], json!([]));
    // The host of iceServers is the Host header's, without its port.
    let port = srv.turn[0].port();
    assert_eq!(
        joined["iceServers"][0]["urls"][0],
        format!("stun:localhost:{port}")
    );

    let (mut w, jw) = ws_join(srv.http, "h", json!({})).await;
    let (id, pj) = sse.next().await.unwrap();
    assert_eq!((id, pj["type"].as_str()), (Some(2), Some("peer-joined")));
    send(&mut w, json!({"type": "signal", "to": peer, "data": "hi"})).await;
    let (id, s) = sse.next().await.unwrap();
    assert_eq!(id, Some(3));
    assert_eq!(
        s,
        json!({"type": "signal", "seq": 3, "from": peer_of(&jw), "data": "hi"})
    );

    // POST /signal/send: one message, then an array, with Bearer auth.
    let r = http_send(
        srv.http,
        &session,
        &json!({"type": "signal", "to": peer_of(&jw), "data": 1}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json(), json!({"ok": true}));
    assert_eq!(recv_type(&mut w, "signal").await["data"], 1);
    let auth = format!("Bearer {session}");
    let r = http(
        srv.http,
        "POST",
        "/signal/send",
        &[("Authorization", &auth)],
        &json!([{"type": "broadcast", "data": 2}, {"type": "ping", "id": "p"}, {"type": "ack", "seq": 3}]).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(recv_type(&mut w, "broadcast").await["data"], 2);
    let (id, pong) = sse.next().await.unwrap();
    assert_eq!((id, pong), (None, json!({"type": "pong", "id": "p"})));
    // A refused message: 4xx with the error (also on the stream, with its seq).
    let r = http_send(
        srv.http,
        &session,
        r#"{"type":"signal","to":"00000000","data":0,"id":"z"}"#,
    )
    .await;
    assert_eq!(r.status, 409, "{r:?}");
    let e = r.json();
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("unknown_peer"), Some("z"))
    );
    let (id, e2) = sse.next().await.unwrap();
    assert_eq!(id, Some(4));
    assert_eq!(e2["seq"], e["seq"]);
    let r = http_send(srv.http, &session, "nonsense").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "bad_message");
    // Unknown session.
    let r = http_send(srv.http, &"A".repeat(43), r#"{"type":"ping"}"#).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "not_joined");
    // Join refused: 4xx with an error body without seq.
    let r = http(
        srv.http,
        "POST",
        "/signal/join",
        &[],
        r#"{"type":"join","room":"bad room"}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "invalid_room");
    let (id, e3) = sse.next().await.unwrap();
    assert_eq!((id, e3["code"].as_str()), (Some(5), Some("bad_message")));
    // Attaching another stream closes this one.
    let mut sse2 = Sse::open(srv.http, &format!("session={session}&last_seq=5"), &[]).await;
    assert!(sse.next().await.is_none(), "old stream closed");
    let (_, resumed) = sse2.next().await.unwrap();
    assert_eq!(resumed["type"], "resumed");
    // leave over HTTP.
    let r = http_send(srv.http, &session, r#"{"type":"leave"}"#).await;
    assert_eq!(r.status, 200);
    let left = recv_type(&mut w, "peer-left").await;
    assert_eq!(left["reason"], "left");
    assert!(sse2.next().await.is_none());
    srv.shutdown().await;
}

#[tokio::test]
async fn sse_resumes_with_last_event_id_and_poll_times_out() {
    let srv = common::server(common::config(false)).await;
    let (session, peer) = http_join(srv.http, "l").await;
    let mut sse = Sse::open(srv.http, &format!("session={session}&last_seq=0"), &[]).await;
    assert_eq!(sse.recv().await["type"], "joined");
    let (mut w, _) = ws_join(srv.http, "l", json!({})).await;
    assert_eq!(sse.recv().await["type"], "peer-joined");
    drop(sse);
    for i in 0..3 {
        send(&mut w, json!({"type": "signal", "to": peer, "data": i})).await;
    }
    // The pong comes after the server handled the signals.
    send(&mut w, json!({"type": "ping"})).await;
    recv_type(&mut w, "pong").await;
    // EventSource reconnects with Last-Event-ID (the query's last_seq is stale).
    let mut sse = Sse::open(
        srv.http,
        &format!("session={session}&last_seq=0"),
        &[("Last-Event-ID", "2")],
    )
    .await;
    for i in 0..3 {
        let (id, m) = sse.next().await.unwrap();
        assert_eq!(id, Some(3 + i));
        assert_eq!(m["data"], i, "{m}");
    }
    let (id, r) = sse.next().await.unwrap();
    assert_eq!((id, r["type"].as_str()), (Some(6), Some("resumed")));
    drop(sse);
    // Switching to long-poll resumes (resumed, seq 7); then, with nothing pending, a poll
    // answers [] after `timeout`.
    let msgs = poll(srv.http, &session, 6, 1).await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(
        (msgs[0]["type"].as_str(), msgs[0]["seq"].as_u64()),
        (Some("resumed"), Some(7))
    );
    let t = std::time::Instant::now();
    let msgs = poll(srv.http, &session, 7, 1).await;
    assert!(msgs.is_empty(), "{msgs:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    // A bad session / bad numbers.
    let r = http(
        srv.http,
        "GET",
        &format!("/signal/poll?session={}&last_seq=0", "B".repeat(43)),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "resume_failed");
    let r = http(
        srv.http,
        "GET",
        &format!("/signal/poll?session={session}&last_seq=x"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 400);
    srv.shutdown().await;
}

/// What a client does on one transport: the sequence of (seq, type, data) it receives.
type Trace = Vec<(u64, String, Value)>;

fn entry(v: &Value) -> (u64, String, Value) {
    (
        v["seq"].as_u64().unwrap_or(0),
        v["type"].as_str().unwrap_or("").to_string(),
        v.get("data").cloned().unwrap_or(Value::Null),
    )
}

/// Same scenario on every transport: B joins room `room` through `transport`, A joins over WS,
/// sends 3 signals and a broadcast, then leaves. Returns B's trace.
async fn scenario(addr: SocketAddr, room: &str, transport: &str) -> Trace {
    let mut trace = Trace::new();
    let run_a = |b_peer: String| async move {
        let (mut a, _) = ws_join(addr, room, json!({})).await;
        for i in 0..3 {
            send(&mut a, json!({"type": "signal", "to": b_peer, "data": i})).await;
        }
        send(&mut a, json!({"type": "broadcast", "data": "all"})).await;
        send(&mut a, json!({"type": "leave"})).await;
        assert!(closed(&mut a).await);
    };
    match transport {
        "ws" => {
            let (mut b, jb) = ws_join(addr, room, json!({})).await;
            trace.push(entry(&jb));
            run_a(peer_of(&jb)).await;
            loop {
                let v = recv(&mut b).await;
                trace.push(entry(&v));
                if v["type"] == "peer-left" {
                    break;
                }
            }
        }
        "sse" => {
            let (session, peer) = http_join(addr, room).await;
            let mut sse = Sse::open(addr, &format!("session={session}&last_seq=0"), &[]).await;
            trace.push(entry(&sse.recv().await));
            run_a(peer).await;
            loop {
                let v = sse.recv().await;
                trace.push(entry(&v));
                if v["type"] == "peer-left" {
                    break;
                }
            }
        }
        _ => {
            let (session, peer) = http_join(addr, room).await;
            let mut last = 0;
            let first = poll(addr, &session, last, 5).await;
            for v in &first {
                trace.push(entry(v));
                last = seq_of(v);
            }
            run_a(peer).await;
            'outer: loop {
                for v in poll(addr, &session, last, 5).await {
                    trace.push(entry(&v));
                    last = seq_of(&v);
                    if v["type"] == "peer-left" {
                        break 'outer;
                    }
                }
            }
        }
    }
    trace
}

#[tokio::test]
async fn sse_and_long_poll_match_websocket() {
    let srv = common::server(common::config(false)).await;
    let ws = scenario(srv.http, "p1", "ws").await;
    let sse = scenario(srv.http, "p2", "sse").await;
    let lp = scenario(srv.http, "p3", "poll").await;
    let types: Vec<&str> = ws.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        types,
        [
            "joined",
            "peer-joined",
            "signal",
            "signal",
            "signal",
            "broadcast",
            "peer-left"
        ]
    );
    assert_eq!(ws, sse);
    assert_eq!(ws, lp);
    srv.shutdown().await;
}

async fn send_numbers(a: &mut Ws, to: &str, next: &mut u64, k: u64) {
    for i in *next..*next + k {
        send(a, json!({"type": "signal", "to": to, "data": i})).await;
    }
    *next += k;
}

/// B switches WS → SSE → long-poll → WS while A sends numbered signals; every number arrives
/// exactly once, in order, and each switch ends with `resumed`.
#[tokio::test]
async fn resume_switching_transport() {
    let mut cfg = common::config(false);
    cfg.signal_rate = 1_000_000;
    let srv = common::server(cfg).await;
    let addr = srv.http;
    let (mut a, _) = ws_join(addr, "sw", json!({})).await;
    let (mut b, jb) = ws_join(addr, "sw", json!({})).await;
    let token = session_of(&jb);
    let peer = peer_of(&jb);
    recv_type(&mut a, "peer-joined").await;
    let mut next_n = 0u64;
    let mut got: Vec<u64> = Vec::new();
    let mut last = 1u64;
    let mut resumed = 0;
    let take = |v: &Value, got: &mut Vec<u64>, last: &mut u64, resumed: &mut i32| {
        assert_eq!(seq_of(v), *last + 1, "gap/duplicate {v}");
        *last = seq_of(v);
        match v["type"].as_str() {
            Some("signal") => got.push(v["data"].as_u64().unwrap()),
            Some("resumed") => *resumed += 1,
            _ => panic!("unexpected {v}"),
        }
    };
    // Phase 1: WS.
    send_numbers(&mut a, &peer, &mut next_n, 10).await;
    for _ in 0..5 {
        take(&recv(&mut b).await, &mut got, &mut last, &mut resumed);
    }
    drop(b);
    send_numbers(&mut a, &peer, &mut next_n, 10).await;
    // Phase 2: SSE resume.
    let mut sse = Sse::open(addr, &format!("session={token}&last_seq={last}"), &[]).await;
    assert_eq!(sse.status, 200, "{}", sse.head);
    loop {
        let v = sse.recv().await;
        take(&v, &mut got, &mut last, &mut resumed);
        if v["type"] == "resumed" {
            break;
        }
    }
    assert_eq!(resumed, 1);
    send_numbers(&mut a, &peer, &mut next_n, 10).await;
    for _ in 0..4 {
        take(&sse.recv().await, &mut got, &mut last, &mut resumed);
    }
    drop(sse);
    // Phase 3: long-poll resume (resumed appended once, then plain polls).
    let mut saw_resumed = false;
    while got.len() < 30 || !saw_resumed {
        for v in poll(addr, &token, last, 2).await {
            saw_resumed |= v["type"] == "resumed";
            take(&v, &mut got, &mut last, &mut resumed);
        }
    }
    assert_eq!(resumed, 2);
    send_numbers(&mut a, &peer, &mut next_n, 5).await;
    while got.len() < 35 {
        for v in poll(addr, &token, last, 2).await {
            take(&v, &mut got, &mut last, &mut resumed);
        }
    }
    assert_eq!(resumed, 2, "a poll following a poll does not resume");
    // Phase 4: back to WS.
    send_numbers(&mut a, &peer, &mut next_n, 5).await;
    let mut b = ws(addr).await;
    send(
        &mut b,
        json!({"type": "resume", "session": token, "last_seq": last}),
    )
    .await;
    while got.len() < 40 || resumed < 3 {
        take(&recv(&mut b).await, &mut got, &mut last, &mut resumed);
    }
    assert_eq!(got, (0..40).collect::<Vec<_>>());
    srv.shutdown().await;
}

#[tokio::test]
async fn api_ice_servers() {
    let srv = common::server(common::config(false)).await;
    let r = http(
        srv.http,
        "GET",
        "/api/ice-servers?service=turn&username=alice",
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    let user = v["username"].as_str().unwrap();
    assert!(user.ends_with(":alice"), "{v}");
    let mut out = [0u8; 28];
    let pw = icebreaker_stun::rest_password(common::SECRET.as_bytes(), user, &mut out);
    assert_eq!(v["password"], pw);
    assert_eq!(v["ttl"], 86_400);
    let port = srv.turn[0].port();
    assert_eq!(
        v["uris"],
        json!([
            format!("turn:localhost:{port}?transport=udp"),
            format!("turn:localhost:{port}?transport=tcp")
        ])
    );
    assert_eq!(
        v["iceServers"][0]["urls"][0],
        format!("stun:localhost:{port}")
    );
    assert_eq!(v["iceServers"][1]["credential"], pw);
    let r = http(srv.http, "GET", "/api/ice-servers?service=stun", &[], "").await;
    assert_eq!(r.status, 400);
    srv.shutdown().await;

    let mut cfg = common::config(false);
    cfg.api_key = Some("the-api-key-0123456789".into());
    let srv = common::server(cfg).await;
    let r = http(
        srv.http,
        "GET",
        "/api/ice-servers?service=turn&username=u",
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "unauthorized");
    let r = http(
        srv.http,
        "GET",
        "/api/ice-servers?service=turn&username=u&key=wrong",
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
    let r = http(
        srv.http,
        "GET",
        "/api/ice-servers?service=turn&username=u&key=the-api-key-0123456789",
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = http(
        srv.http,
        "GET",
        "/api/ice-servers?service=turn",
        &[("Authorization", "Bearer the-api-key-0123456789")],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.json()["username"].as_str().unwrap().contains(':'));
    srv.shutdown().await;

    // Only static users: STUN only in joined, 503 from the API.
    let mut cfg = common::config(false);
    cfg.turn_secrets.clear();
    let srv = common::server(cfg).await;
    let (_w, j) = ws_join(srv.http, "s", json!({})).await;
    assert_eq!(j["iceServers"].as_array().unwrap().len(), 1, "{j}");
    assert!(j["iceServers"][0].get("username").is_none());
    let r = http(
        srv.http,
        "GET",
        "/api/ice-servers?service=turn&username=u",
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 503);
    srv.shutdown().await;
}
