//! The admin view's endpoints (`/admin`, `/admin/rooms`, `/admin/history`, removing a member,
//! closing a room): behind the admin token, rooms listed with their members, a removal ends the
//! member's stream with `removed` (its token then answers `removed`, so clients do not join
//! again) and the others see `peer-left` `kicked`; unknown rooms and peers are 404.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::signal::*;
use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "admin-token-0123456789";

async fn admin(addr: std::net::SocketAddr, method: &str, path: &str) -> HttpResponse {
    let auth = format!("Bearer {TOKEN}");
    http(addr, method, path, &[("Authorization", &auth)], "").await
}

/// The room `name` in a `/admin/rooms` answer.
fn room<'a>(rooms: &'a Value, name: &str) -> Option<&'a Value> {
    rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == name)
}

fn member_ids(room: &Value) -> Vec<String> {
    room["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["peer"].as_str().unwrap().to_string())
        .collect()
}

/// Reads until the socket closes; returns what came before.
async fn until_closed(ws: &mut Ws) -> Vec<Value> {
    let mut seen = Vec::new();
    while let Some(v) = next(ws).await {
        seen.push(v);
    }
    seen
}

#[tokio::test]
async fn rooms_removal_and_close_behind_the_token() {
    let mut cfg = config(false);
    cfg.admin_token = Some(TOKEN.into());
    let srv = server(cfg).await;
    let addr = srv.http;

    // The page is public; the data is not.
    let (status, page) = http_get(addr, "/admin").await;
    assert_eq!(status, 200);
    assert!(page.contains("/admin/admin.js"), "{page}");
    assert_eq!(http_get(addr, "/admin/admin.js").await.0, 200);
    assert_eq!(http_get(addr, "/admin/admin.css").await.0, 200);
    for path in ["/admin/rooms", "/admin/history"] {
        assert_eq!(http_get(addr, path).await.0, 401, "{path}");
        let r = http(addr, "GET", path, &[("Authorization", "Bearer wrong")], "").await;
        assert_eq!(r.status, 401, "{path}");
    }
    for path in [
        "/admin/rooms/demo/close",
        "/admin/rooms/demo/peers/abc/remove",
    ] {
        assert_eq!(
            http(addr, "POST", path, &[], "").await.status,
            401,
            "{path}"
        );
    }

    let (mut a, ja) = ws_join(addr, "demo", json!({"name": "Ada"})).await;
    let (mut b, jb) = ws_join(addr, "demo", json!({"name": "Bob"})).await;
    let (pa, pb) = (peer_of(&ja), peer_of(&jb));
    recv_type(&mut a, "peer-joined").await;

    let r = admin(addr, "GET", "/admin/rooms").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rooms = r.json();
    let demo = room(&rooms, "demo").expect("demo listed");
    assert_eq!(member_ids(demo), [pa.clone(), pb.clone()]);
    assert_eq!(demo["topology"], "mesh");
    // This call so far: two joins in; joined ×2 and peer-joined out.
    assert_eq!(demo["signaling"]["in"]["messages"], 2, "{demo}");
    assert_eq!(demo["signaling"]["out"]["messages"], 3, "{demo}");
    assert_eq!(demo["signaling"]["messages"], 5, "{demo}");
    assert_eq!(demo["members"][0]["name"], "Ada");
    assert_eq!(demo["members"][1]["name"], "Bob");
    assert_eq!(demo["members"][0]["transport"], "websocket");
    assert_eq!(demo["members"][0]["attached"], true);

    // Unknown room or peer: 404; malformed: 400.
    let r = admin(addr, "POST", "/admin/rooms/nope/close").await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("unknown_room"))
    );
    let r = admin(addr, "POST", "/admin/rooms/demo/peers/00000000/remove").await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("unknown_peer"))
    );
    let r = admin(addr, "POST", "/admin/rooms/nope/peers/00000000/remove").await;
    assert_eq!(r.status, 404);
    let r = admin(addr, "POST", "/admin/rooms/demo/peers/a%20b/remove").await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("bad_request"))
    );
    let r = admin(addr, "POST", "/admin/rooms/a%0Ab/close").await;
    assert_eq!(r.status, 400);

    // Remove Bob: his stream ends with `removed`, Ada sees him leave (`kicked`).
    let r = admin(
        addr,
        "POST",
        &format!("/admin/rooms/demo/peers/{pb}/remove"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["removed"], json!([pb]));
    let seen = until_closed(&mut b).await;
    let last = seen.last().expect("an error before the close");
    assert_eq!(
        (last["type"].clone(), last["code"].clone()),
        (json!("error"), json!("removed"))
    );
    let left = recv_type(&mut a, "peer-left").await;
    assert_eq!(
        (left["peer"].clone(), left["reason"].clone()),
        (json!(pb), json!("kicked"))
    );

    // His token now answers `removed` (not `resume_failed`): the SDK stops there.
    let mut b2 = ws(addr).await;
    send(
        &mut b2,
        json!({"type": "resume", "session": session_of(&jb), "last_seq": 1}),
    )
    .await;
    let e = recv(&mut b2).await;
    assert_eq!(e["code"], "removed", "{e}");
    let r = http_send(addr, &session_of(&jb), r#"{"type":"ping"}"#).await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (410, json!("removed"))
    );
    let r = http(
        addr,
        "GET",
        &format!(
            "/signal/poll?session={}&last_seq=1&timeout=1",
            session_of(&jb)
        ),
        &[],
        "",
    )
    .await;
    assert_eq!(r.json()["code"], "removed", "{}", r.body);

    let rooms = admin(addr, "GET", "/admin/rooms").await.json();
    assert_eq!(member_ids(room(&rooms, "demo").unwrap()), vec![pa.clone()]);

    // A member on SSE, then close the room: both streams end with `removed`.
    let (session_c, pc) = http_join(addr, "demo").await;
    let mut sse = Sse::open(addr, &format!("session={session_c}&last_seq=0"), &[]).await;
    assert_eq!(sse.recv().await["type"], "joined");
    recv_type(&mut a, "peer-joined").await;
    let r = admin(addr, "POST", "/admin/rooms/demo/close").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut removed: Vec<String> = r.json()["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    removed.sort();
    let mut want = vec![pa.clone(), pc.clone()];
    want.sort();
    assert_eq!(removed, want);
    let seen = until_closed(&mut a).await;
    assert_eq!(seen.last().unwrap()["code"], "removed", "{seen:?}");
    let mut sse_last = None;
    while let Some((_, v)) = sse.next().await {
        sse_last = Some(v);
    }
    assert_eq!(sse_last.unwrap()["code"], "removed");
    let rooms = admin(addr, "GET", "/admin/rooms").await.json();
    assert!(room(&rooms, "demo").is_none(), "{rooms}");
    assert_eq!(
        admin(addr, "POST", "/admin/rooms/demo/close").await.status,
        404
    );

    // Status and history.
    let st = admin(addr, "GET", "/admin/status").await.json();
    assert!(
        st["version"].is_string() && st["uptime_secs"].is_u64(),
        "{st}"
    );
    assert!(st["signal_messages_in"].is_u64(), "{st}");
    assert!(st["signal_messages_out"].as_u64().unwrap() >= 4, "{st}");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let h = admin(addr, "GET", "/admin/history").await.json();
        assert_eq!(h["interval_secs"], 2);
        let samples = h["samples"].as_array().unwrap();
        if let Some(s) = samples.last() {
            for k in [
                "t",
                "turn_in",
                "turn_out",
                "sfu_in",
                "sfu_out",
                "msgs_in",
                "msgs_out",
                "allocations",
                "sessions",
                "rooms",
            ] {
                assert!(s.get(k).is_some(), "{k} in {s}");
            }
            break;
        }
        assert!(Instant::now() < until, "no sample in 10 s: {h}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn loopback_only_without_a_token_and_names_with_a_slash() {
    // No admin_token: loopback clients may (this test is one).
    let srv = server(config(false)).await;
    let addr = srv.http;
    let (_a, ja) = ws_join(addr, "lobby.1", json!({})).await;
    let rooms = http(addr, "GET", "/admin/rooms", &[], "").await;
    assert_eq!(rooms.status, 200);
    assert_eq!(
        member_ids(room(&rooms.json(), "lobby.1").unwrap()),
        [peer_of(&ja)]
    );
    // A name with `/` (socket.io rooms) reaches the handler percent-encoded: unknown here.
    let r = http(
        addr,
        "POST",
        "/admin/rooms/socket.io%2Flobby/close",
        &[],
        "",
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("unknown_room"))
    );
    let r = http(
        addr,
        "POST",
        "/admin/rooms/socket.io%2Flobby/peers/abc/remove",
        &[],
        "",
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("unknown_room"))
    );
    srv.shutdown().await;
}
