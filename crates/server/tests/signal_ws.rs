//! Signaling over WebSocket against the in-process server.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::signal::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn join_presence_and_relay() {
    let srv = common::server(common::config(false)).await;
    let (mut a, ja) = ws_join(srv.http, "demo", json!({"name": "Ada", "meta": {"k": 1}})).await;
    assert_eq!(seq_of(&ja), 1);
    assert_eq!(ja["initiator"], true);
    assert_eq!(ja["capacity"], 50);
    assert_eq!(ja["grace"], 30);
    assert_eq!(ja["room"], "demo");
    assert_eq!(ja["peers"], json!([]));
    assert_eq!(ja["session"].as_str().unwrap().len(), 43);
    // ICE servers: STUN, then TURN with REST credentials for this peer.
    let ice = &ja["iceServers"];
    let port = srv.turn[0].port();
    // The host is the one the client used to reach the HTTP listener.
    assert_eq!(ice[0]["urls"][0], format!("stun:127.0.0.1:{port}"), "{ice}");
    assert_eq!(
        ice[1]["urls"],
        json!([
            format!("turn:127.0.0.1:{port}?transport=udp"),
            format!("turn:127.0.0.1:{port}?transport=tcp")
        ])
    );
    let user = ice[1]["username"].as_str().unwrap();
    assert!(user.ends_with(&format!(":{}", peer_of(&ja))), "{user}");
    let mut out = [0u8; 28];
    let pw = icebreaker_stun::rest_password(common::SECRET.as_bytes(), user, &mut out);
    assert_eq!(ice[1]["credential"], pw);

    let (mut b, jb) = ws_join(srv.http, "demo", json!({"name": "Grace"})).await;
    assert_eq!(jb["initiator"], false);
    assert_eq!(
        jb["peers"],
        json!([{"id": peer_of(&ja), "name": "Ada", "meta": {"k": 1}}])
    );
    let pj = recv(&mut a).await;
    assert_eq!(pj["type"], "peer-joined");
    assert_eq!(pj["seq"], 2);
    assert_eq!(pj["peer"], json!({"id": peer_of(&jb), "name": "Grace"}));
    let (_, m) = common::http_get(srv.http, "/metrics").await;
    assert!(m.contains("icebreaker_signal_sessions 2"), "{m}");
    assert!(m.contains("icebreaker_signal_sessions_attached 2"), "{m}");
    assert!(m.contains("icebreaker_signal_rooms 1"), "{m}");

    // signal A → B, stamped with A's id (a forged `from` is ignored).
    send(
        &mut a,
        json!({"type": "signal", "to": peer_of(&jb), "from": "ffffffff", "data": {"sdp": "offer"}}),
    )
    .await;
    let s = recv(&mut b).await;
    assert_eq!(
        s,
        json!({"type": "signal", "seq": 2, "from": peer_of(&ja), "data": {"sdp": "offer"}})
    );
    // broadcast B → everyone else.
    send(&mut b, json!({"type": "broadcast", "data": [1, 2]})).await;
    let m = recv(&mut a).await;
    assert_eq!(
        m,
        json!({"type": "broadcast", "seq": 3, "from": peer_of(&jb), "data": [1, 2]})
    );
    // ping → unsequenced pong.
    send(&mut a, json!({"type": "ping", "id": "p1"})).await;
    assert_eq!(recv(&mut a).await, json!({"type": "pong", "id": "p1"}));
    // unknown peer → sequenced error with ref.
    send(
        &mut a,
        json!({"type": "signal", "to": "00000000", "data": 1, "id": "x"}),
    )
    .await;
    let e = recv(&mut a).await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "unknown_peer");
    assert_eq!(e["ref"], "x");
    assert_eq!(e["seq"], 4);
    // a second join → already_joined; unknown type → bad_message; socket stays open.
    send(&mut a, json!({"type": "join", "room": "demo"})).await;
    assert_eq!(recv(&mut a).await["code"], "already_joined");
    send(&mut a, json!({"type": "dance"})).await;
    assert_eq!(recv(&mut a).await["code"], "bad_message");
    // leave → the others see peer-left "left"; the leaver's socket closes.
    send(&mut b, json!({"type": "leave"})).await;
    assert!(closed(&mut b).await);
    let left = recv_type(&mut a, "peer-left").await;
    assert_eq!(left["peer"], peer_of(&jb));
    assert_eq!(left["reason"], "left");
    srv.shutdown().await;
}

#[tokio::test]
async fn rooms_are_isolated_and_capacity_holds() {
    let srv = common::server(common::config(false)).await;
    let (mut a, ja) = ws_join(srv.http, "one", json!({"capacity": 2})).await;
    assert_eq!(ja["capacity"], 2);
    let (mut b, jb) = ws_join(srv.http, "two", json!({})).await;
    assert_eq!(jb["peers"], json!([]));
    // A cannot signal B across rooms.
    send(
        &mut a,
        json!({"type": "signal", "to": peer_of(&jb), "data": 1}),
    )
    .await;
    assert_eq!(recv(&mut a).await["code"], "unknown_peer");
    send(&mut b, json!({"type": "broadcast", "data": "two only"})).await;
    let (mut c, _) = ws_join(srv.http, "one", json!({})).await;
    let pj = recv(&mut a).await;
    assert_eq!(pj["type"], "peer-joined", "A got B's broadcast? {pj}");
    // Room "one" is full: the third gets room_full (no seq); its socket may retry.
    let mut d = ws(srv.http).await;
    send(&mut d, json!({"type": "join", "room": "one", "id": "j"})).await;
    let e = recv(&mut d).await;
    assert_eq!(e["code"], "room_full", "{e}");
    assert_eq!(e["ref"], "j");
    assert!(e.get("seq").is_none(), "{e}");
    send(&mut d, json!({"type": "join", "room": "three"})).await;
    assert_eq!(recv(&mut d).await["type"], "joined");
    // capacity outside 2..=50 → bad_message.
    let mut x = ws(srv.http).await;
    send(
        &mut x,
        json!({"type": "join", "room": "big", "capacity": 51}),
    )
    .await;
    assert_eq!(recv(&mut x).await["code"], "bad_message");
    send(&mut c, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut c).await["type"], "pong");
    srv.shutdown().await;
}

#[tokio::test]
async fn first_message_must_be_join_or_resume() {
    let srv = common::server(common::config(false)).await;
    let mut w = ws(srv.http).await;
    send(
        &mut w,
        json!({"type": "signal", "to": "00000000", "data": 1}),
    )
    .await;
    let e = recv(&mut w).await;
    assert_eq!(e["code"], "bad_message");
    assert!(e.get("seq").is_none());
    assert!(closed(&mut w).await);
    let mut w = ws(srv.http).await;
    assert!(send_text(&mut w, "not json").await);
    assert_eq!(recv(&mut w).await["code"], "bad_message");
    assert!(closed(&mut w).await);
    // invalid room name: refused join, socket stays usable.
    let mut w = ws(srv.http).await;
    send(&mut w, json!({"type": "join", "room": "no spaces"})).await;
    assert_eq!(recv(&mut w).await["code"], "invalid_room");
    send(&mut w, json!({"type": "join", "room": "ok"})).await;
    assert_eq!(recv(&mut w).await["type"], "joined");
    // resume with an unknown token.
    let mut w = ws(srv.http).await;
    send(
        &mut w,
        json!({"type": "resume", "session": "A".repeat(43), "last_seq": 0}),
    )
    .await;
    assert_eq!(recv(&mut w).await["code"], "resume_failed");
    srv.shutdown().await;
}

/// The randomized no-loss/no-duplicate test: B's socket is dropped at random points while A
/// sends numbered signals; B resumes with the last seq it saw each time.
#[tokio::test]
async fn resume_without_loss_or_duplicates() {
    let mut cfg = common::config(false);
    cfg.signal_rate = 1_000_000;
    let srv = common::server(cfg).await;
    let (mut a, _) = ws_join(srv.http, "resume", json!({})).await;
    let (mut b, jb) = ws_join(srv.http, "resume", json!({})).await;
    let token = session_of(&jb);
    let b_peer = peer_of(&jb);
    recv_type(&mut a, "peer-joined").await;
    let mut last_seq = 1u64;
    let mut got: Vec<u64> = Vec::new();
    const N: u64 = 400;
    let sender = {
        let b_peer = b_peer.clone();
        tokio::spawn(async move {
            for i in 0..N {
                send(
                    &mut a,
                    json!({"type": "signal", "to": b_peer, "data": {"n": i}}),
                )
                .await;
                if i % 7 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            a
        })
    };
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut drops = 0;
    let mut resumed = 0;
    let mut acked = 0;
    while (got.len() as u64) < N {
        // Read a random number of messages, then drop the socket (sometimes server-side).
        // At least one message, so that the resumed stream is attached before a server-side cut.
        let take = 1 + rnd() % 40;
        let mut i = 0;
        while i < take && (got.len() as u64) < N {
            let v = recv(&mut b).await;
            let seq = seq_of(&v);
            assert_eq!(seq, last_seq + 1, "gap or duplicate: {v}");
            last_seq = seq;
            match v["type"].as_str() {
                Some("signal") => got.push(v["data"]["n"].as_u64().unwrap()),
                Some("resumed") => resumed += 1,
                other => panic!("unexpected {other:?}: {v}"),
            }
            if seq >= acked + 5 {
                send(&mut b, json!({"type": "ack", "seq": seq})).await;
                acked = seq;
            }
            i += 1;
        }
        if (got.len() as u64) >= N {
            break;
        }
        drops += 1;
        if rnd() % 3 == 0 {
            assert!(srv.signal().force_close(&b_peer));
            assert!(closed(&mut b).await);
        } else {
            drop(b);
        }
        if rnd() % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(rnd() % 20)).await;
        }
        b = ws(srv.http).await;
        send(
            &mut b,
            json!({"type": "resume", "session": token, "last_seq": last_seq}),
        )
        .await;
    }
    let mut a = sender.await.unwrap();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    assert!(drops > 3, "{drops}");
    assert!(resumed > 0);
    // A never saw B leave.
    send(&mut a, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut a).await["type"], "pong");
    srv.shutdown().await;
}

#[tokio::test]
async fn grace_expiry_sends_peer_left_timeout() {
    let mut cfg = common::config(false);
    cfg.signal_grace = 1;
    let srv = common::server(cfg).await;
    let (mut a, ja) = ws_join(srv.http, "g", json!({})).await;
    assert_eq!(ja["grace"], 1);
    let (b, jb) = ws_join(srv.http, "g", json!({})).await;
    recv_type(&mut a, "peer-joined").await;
    drop(b);
    let t = std::time::Instant::now();
    let left = recv(&mut a).await;
    assert_eq!(left["type"], "peer-left", "{left}");
    assert_eq!(left["reason"], "timeout");
    assert_eq!(left["peer"], peer_of(&jb));
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );
    // Its token no longer works.
    let mut b = ws(srv.http).await;
    send(
        &mut b,
        json!({"type": "resume", "session": session_of(&jb), "last_seq": 1}),
    )
    .await;
    assert_eq!(recv(&mut b).await["code"], "resume_failed");
    // A resume within the grace period is invisible to the others.
    let (c, jc) = ws_join(srv.http, "g", json!({})).await;
    recv_type(&mut a, "peer-joined").await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = ws(srv.http).await;
    send(
        &mut c,
        json!({"type": "resume", "session": session_of(&jc), "last_seq": 1}),
    )
    .await;
    let r = recv(&mut c).await;
    assert_eq!(r["type"], "resumed", "{r}");
    assert_eq!(r["seq"], 2);
    assert_eq!(r["peers"], json!([{"id": peer_of(&ja)}]));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send(&mut a, json!({"type": "ping"})).await;
    assert_eq!(
        recv(&mut a).await["type"],
        "pong",
        "A saw nothing but its pong"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn too_large_closes_and_others_continue() {
    let mut cfg = common::config(false);
    cfg.signal_max_message = 2048;
    let srv = common::server(cfg).await;
    let (mut a, _) = ws_join(srv.http, "big", json!({})).await;
    let (mut b, _) = ws_join(srv.http, "big", json!({})).await;
    recv_type(&mut a, "peer-joined").await;
    let big = json!({"type": "broadcast", "data": "x".repeat(3000)}).to_string();
    assert!(send_text(&mut b, &big).await);
    let e = recv(&mut b).await;
    assert_eq!(e["code"], "too_large");
    assert!(e["seq"].as_u64().is_some());
    assert!(closed(&mut b).await);
    // Far over the limit: the connection is dropped.
    let (mut c, _) = ws_join(srv.http, "big", json!({})).await;
    let _ = c.send(Message::text("y".repeat(1 << 20))).await;
    assert!(closed(&mut c).await);
    // A is fine.
    send(&mut a, json!({"type": "broadcast", "data": "small"})).await;
    send(&mut a, json!({"type": "ping"})).await;
    assert_eq!(recv_type(&mut a, "pong").await["type"], "pong");
    srv.shutdown().await;
}

#[tokio::test]
async fn rate_limit_and_garbage_cut_off_only_the_offender() {
    let mut cfg = common::config(false);
    cfg.signal_rate = 5;
    let srv = common::server(cfg).await;
    let (mut a, ja) = ws_join(srv.http, "r", json!({})).await;
    let (mut flood, _) = ws_join(srv.http, "r", json!({})).await;
    recv_type(&mut a, "peer-joined").await;
    // Burst is 10 (the join took one token): later messages are refused, 10 refusals in a
    // row close.
    for _ in 0..40 {
        if !send_text(&mut flood, r#"{"type":"ping"}"#).await {
            break;
        }
    }
    let mut pongs = 0;
    let mut limited = 0;
    loop {
        match next(&mut flood).await {
            Some(v) if v["type"] == "pong" => pongs += 1,
            Some(v) if v["code"] == "rate_limited" => limited += 1,
            Some(v) => panic!("unexpected {v}"),
            None => break,
        }
    }
    assert!((9..=12).contains(&pongs), "{pongs}");
    assert_eq!(limited, 10);

    // Garbage after join: bad_message each time, cut off after 10 in a row.
    let (mut bad, _) = ws_join(srv.http, "r", json!({})).await;
    recv_type(&mut a, "peer-joined").await;
    let mut errors = 0;
    for i in 0..12 {
        if !send_text(&mut bad, &format!("garbage {i} {{")).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    while let Some(v) = next(&mut bad).await {
        assert_eq!(v["code"], "bad_message", "{v}");
        errors += 1;
    }
    assert_eq!(errors, 10);
    // Garbage bytes that are not even a WebSocket handshake.
    let mut raw = tokio::net::TcpStream::connect(srv.http).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw.write_all(b"\x16\x03\x01\x00\xff garbage\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(WAIT, raw.read_to_end(&mut sink)).await;
    // A still works, and saw the others come and go only through presence.
    send(&mut a, json!({"type": "ping"})).await;
    assert_eq!(recv_type(&mut a, "pong").await["type"], "pong");
    let _ = ja;
    srv.shutdown().await;
}

#[tokio::test]
async fn room_tokens() {
    use icebreaker_signal::token::sign;
    use icebreaker_signal::Perm;
    let secret = "room-token-secret-0123456789abcdef";
    let mut cfg = common::config(false);
    cfg.signal_token_secret = Some(secret.into());
    let srv = common::server(cfg).await;
    let now = icebreaker::credentials::now_unix();
    let valid = sign(secret.as_bytes(), "t", Some("alice"), now + 60, None);
    let expired = sign(secret.as_bytes(), "t", Some("alice"), now - 60, None);
    let other_room = sign(secret.as_bytes(), "elsewhere", None, now + 60, None);
    let wrong_key = sign(b"another-secret", "t", None, now + 60, None);
    let no_create = sign(
        secret.as_bytes(),
        "*",
        None,
        now + 60,
        Some(&[Perm::Signal]),
    );

    for (tok, code) in [
        (None, "unauthorized"),
        (Some(expired.as_str()), "unauthorized"),
        (Some(wrong_key.as_str()), "unauthorized"),
        (Some("garbage"), "unauthorized"),
        (Some(other_room.as_str()), "forbidden"),
        (Some(no_create.as_str()), "forbidden"),
    ] {
        let mut w = ws(srv.http).await;
        let mut m = json!({"type": "join", "room": "t"});
        if let Some(t) = tok {
            m["token"] = json!(t);
        }
        send(&mut w, m).await;
        let e = recv(&mut w).await;
        assert_eq!(e["code"], code, "{tok:?}: {e}");
    }
    let (_a, ja) = ws_join(srv.http, "t", json!({"token": valid})).await;
    assert_eq!(ja["initiator"], true);
    // `sub` becomes the name shown to others.
    let (_b, jb) = ws_join(srv.http, "t", json!({"token": no_create})).await;
    assert_eq!(jb["peers"][0]["name"], "alice", "{jb}");
    srv.shutdown().await;
}

#[tokio::test]
async fn origin_allow_list() {
    let mut cfg = common::config(false);
    cfg.signal_origins = vec!["https://app.example".into()];
    let srv = common::server(cfg).await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/ws", srv.http)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403);
            let body =
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).to_string();
            assert!(body.contains("forbidden"), "{body}");
        }
        other => panic!("expected 403, got {:?}", other.map(|(_, r)| r.status())),
    }
    let mut req = format!("ws://{}/ws", srv.http)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Origin", "https://APP.example".parse().unwrap());
    let (mut w, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    send(&mut w, json!({"type": "join", "room": "o"})).await;
    assert_eq!(recv(&mut w).await["type"], "joined");
    // No Origin (not a browser): allowed.
    let (_w2, _) = ws_join(srv.http, "o", json!({})).await;
    // HTTP endpoints too.
    let r = http(
        srv.http,
        "POST",
        "/signal/join",
        &[("Origin", "https://evil.example")],
        r#"{"type":"join","room":"o"}"#,
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["code"], "forbidden");
    srv.shutdown().await;
}

#[tokio::test]
async fn by_default_only_the_servers_own_origin_may_connect() {
    // Cross-site WebSocket hijacking: a page on another site cannot open a signaling session
    // in the visitor's browser unless signal_origins lists it.
    let srv = common::server(common::config(false)).await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let connect = |origin: String| {
        let mut req = format!("ws://{}/ws", srv.http)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("Origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(req)
    };
    match connect("https://evil.example".into()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|(_, r)| r.status())),
    }
    let (mut w, _) = connect(format!("http://{}", srv.http)).await.unwrap();
    send(&mut w, json!({"type": "join", "room": "own"})).await;
    assert_eq!(recv(&mut w).await["type"], "joined");
    let r = http(
        srv.http,
        "POST",
        "/signal/join",
        &[("Origin", "http://localhost:1")],
        r#"{"type":"join","room":"own"}"#,
    )
    .await;
    assert_eq!(r.status, 403);
    srv.shutdown().await;
}

/// Messages and bytes per call (`/admin/calls`, `icebreaker_signal_*` metrics): every client →
/// server message but keepalives, every server → client message written; the call ends with
/// its last member.
#[tokio::test]
async fn signaling_is_counted_per_call() {
    let srv = common::server(common::config(false)).await;
    let join_a = json!({"type": "join", "room": "counted"}).to_string();
    let mut a = ws(srv.http).await;
    assert!(send_text(&mut a, &join_a).await);
    let ja = recv(&mut a).await;
    let (mut b, jb) = ws_join(srv.http, "counted", json!({})).await;
    let pj = recv(&mut a).await;
    let offer = json!({"type": "signal", "to": peer_of(&jb), "data": {"sdp": "o"}}).to_string();
    assert!(send_text(&mut a, &offer).await);
    let got = recv(&mut b).await;
    // Keepalives are not the call's.
    send(&mut a, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut a).await["type"], "pong");
    send(&mut b, json!({"type": "ack", "seq": 2})).await;

    let live = http(srv.http, "GET", "/admin/calls", &[], "").await.json();
    let call = &live["live"][0];
    assert_eq!(call["room"], "counted", "{live}");
    assert_eq!(call["peak_members"], 2);
    // In: A's join and signal, B's join (its size as ws_join sends it).
    assert_eq!(call["in"]["messages"], 3, "{live}");
    // Out: joined ×2, peer-joined, signal.
    assert_eq!(call["out"]["messages"], 4, "{live}");
    let out_bytes = [&ja, &jb, &pj, &got]
        .iter()
        .map(|v| v.to_string().len() as u64)
        .sum::<u64>();
    assert_eq!(call["out"]["bytes"].as_u64(), Some(out_bytes), "{live}");
    assert!(
        call["in"]["bytes"].as_u64().unwrap() > (join_a.len() + offer.len()) as u64,
        "{live}"
    );

    send(&mut a, json!({"type": "leave"})).await;
    assert!(closed(&mut a).await);
    let _ = recv_type(&mut b, "peer-left").await;
    send(&mut b, json!({"type": "leave"})).await;
    assert!(closed(&mut b).await);
    let mut finished = serde_json::Value::Null;
    for _ in 0..50 {
        finished = http(srv.http, "GET", "/admin/calls", &[], "").await.json();
        if finished["finished"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = &finished["finished"][0];
    assert_eq!(done["room"], "counted", "{finished}");
    assert!(finished["live"].as_array().unwrap().is_empty());
    // + 2 leaves in; + peer-left out.
    assert_eq!(done["in"]["messages"], 5, "{finished}");
    assert_eq!(done["out"]["messages"], 5, "{finished}");
    assert_eq!(done["total"]["messages"], 10);
    let (_, m) = common::http_get(srv.http, "/metrics").await;
    assert!(
        m.contains("icebreaker_signal_messages_total{direction=\"in\"} 5"),
        "{m}"
    );
    assert!(m.contains("icebreaker_signal_call_messages_count 1"), "{m}");
    assert!(
        m.contains("icebreaker_signal_call_messages_sum 10.0"),
        "{m}"
    );
    srv.shutdown().await;
}
