//! Attacks on the listeners of a running server: garbage on TLS framing, slowloris, connection
//! and join floods from one address, and sessions addressed by what an attacker can see.
//! After each, an honest client is still served.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::signal::*;
use common::*;
use icebreaker::client::turn::{AllocateOptions, Transport, TurnClient};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Whether the server closes `s` within `within` (EOF or reset), reading whatever it sends.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let until = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// A TCP connection to `to` from the loopback address `from` (another "client address").
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(format!("{from}:0").parse().unwrap())?;
    s.connect(to).await
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn garbage_on_tls_framing_closes_only_that_connection() {
    let cert = TestCert::new();
    let mut cfg = config(false);
    cfg.tls_cert = Some(cert.cert.clone());
    cfg.tls_key = Some(cert.key.clone());
    cfg.turns_listen = vec!["127.0.0.1:0".parse().unwrap()];
    let srv = server(cfg).await;
    let turns = srv.turns[0];
    let mut garbage = vec![0x16u8, 0x03, 0x01, 0xff, 0xff];
    garbage.extend((0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    for target in [turns, srv.http] {
        // A record header announcing a huge record, then junk; and junk that is not TLS at all.
        for bytes in [&garbage[..], &garbage[5..]] {
            let mut s = TcpStream::connect(target).await.unwrap();
            let _ = s.write_all(bytes).await;
            assert!(
                closed_within(&mut s, Duration::from_secs(12)).await,
                "{target} kept a garbage connection open"
            );
        }
    }
    // A real TLS client is served.
    let mut c = TurnClient::connect(turns, options(Transport::Tls, Some(static_creds())))
        .await
        .unwrap();
    c.allocate(&AllocateOptions::default()).await.unwrap();
    assert_eq!(http_get(srv.http, "/healthz").await.0, 200);
    srv.shutdown().await;
}

#[tokio::test]
async fn slowloris_is_cut_off_and_does_not_block_others() {
    let srv = server(config(false)).await;
    // 100 connections that send half a request line and then nothing.
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(srv.http).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    let t = Instant::now();
    assert_eq!(http_get(srv.http, "/healthz").await.0, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let (mut w, joined) = ws_join(srv.http, "calm", json!({})).await;
    assert_eq!(joined["type"], "joined");
    // The header timeout (10 s) closes every slow connection.
    for s in &mut slow {
        assert!(closed_within(s, Duration::from_secs(15)).await);
    }
    // The honest WebSocket is unaffected.
    send(&mut w, json!({"type": "ping"})).await;
    assert_eq!(recv_type(&mut w, "pong").await["type"], "pong");
    srv.shutdown().await;
}

#[tokio::test]
async fn connections_per_address_are_capped_and_counted() {
    let mut cfg = config(false);
    cfg.max_conns_per_ip = 20;
    let srv = server(cfg).await;
    // 20 idle WebSockets hold the address's share (a slowloris that completed its upgrade).
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(ws(srv.http).await);
    }
    let mut extra = TcpStream::connect(srv.http).await.unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(2)).await);
    // Another address is served; so is the TURN TCP listener's share of it.
    let mut other = connect_from("127.0.0.2", srv.http).await.unwrap();
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    other.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    // Closing one frees a place.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_w, joined) = ws_join(srv.http, "again", json!({})).await;
    assert_eq!(joined["type"], "joined");
    let m = srv.metrics.encode();
    assert!(
        metric(&m, "icebreaker_refusals_total{reason=\"conns_per_ip\"}") >= 1,
        "{m}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_connection_flood_from_one_address_is_refused_beyond_its_rate() {
    let mut cfg = config(false);
    cfg.conn_rate_per_ip = 5; // burst 50
    cfg.max_conns_per_ip = 0;
    let srv = server(cfg).await;
    let mut refused = 0;
    for _ in 0..200 {
        let mut s = TcpStream::connect(srv.turn[0]).await.unwrap();
        if closed_within(&mut s, Duration::from_millis(50)).await {
            refused += 1;
        }
    }
    assert!(refused >= 100, "only {refused} of 200 refused");
    let mut c = TurnClient::connect(srv.turn[0], options(Transport::Udp, Some(static_creds())))
        .await
        .unwrap();
    c.allocate(&AllocateOptions::default()).await.unwrap();
    let m = srv.metrics.encode();
    assert!(
        metric(&m, "icebreaker_refusals_total{reason=\"conn_rate\"}") >= 100,
        "{m}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_join_flood_is_rate_limited_per_address() {
    let mut cfg = config(false);
    cfg.join_rate_per_ip = 5; // burst 50
    let srv = server(cfg).await;
    let mut limited = 0;
    for i in 0..120 {
        let r = http(
            srv.http,
            "POST",
            "/signal/join",
            &[],
            &json!({"type": "join", "room": format!("flood{i}")}).to_string(),
        )
        .await;
        match r.status {
            200 => {}
            429 => {
                assert_eq!(r.json()["code"], "rate_limited");
                limited += 1;
            }
            other => panic!("unexpected {other}: {r:?}"),
        }
    }
    assert!(limited >= 60, "{limited} of 120 limited");
    let m = srv.metrics.encode();
    assert!(metric(&m, "icebreaker_refusals_total{reason=\"join_rate\"}") >= 60);
    srv.shutdown().await;
}

#[tokio::test]
async fn sessions_cannot_be_reached_by_what_others_see() {
    let srv = server(config(false)).await;
    let (a_session, a_peer) = http_join(srv.http, "priv").await;
    let (mut b, b_joined) = ws_join(srv.http, "priv", json!({})).await;
    let b_token = session_of(&b_joined);
    // Everything A receives: B's token is never in it.
    let msgs = poll(srv.http, &a_session, 0, 1).await;
    assert!(!msgs.is_empty());
    for m in &msgs {
        assert!(!m.to_string().contains(&b_token), "{m}");
    }
    // The peer id is public: it is not a session.
    for (method, path) in [
        ("POST", format!("/signal/send?session={a_peer}")),
        ("GET", format!("/signal/events?session={a_peer}&last_seq=0")),
        (
            "GET",
            format!("/signal/poll?session={a_peer}&last_seq=0&timeout=1"),
        ),
    ] {
        let r = http(srv.http, method, &path, &[], r#"{"type":"ping"}"#).await;
        assert_eq!(r.status, 404, "{method} {path}: {r:?}");
        let code = r.json()["code"].clone();
        assert!(code == "resume_failed" || code == "not_joined", "{r:?}");
    }
    // A forged token of the right shape, as query and as bearer.
    let forged = "A".repeat(43);
    let r = http_send(srv.http, &forged, r#"{"type":"ping"}"#).await;
    assert_eq!(r.status, 404);
    let r = http(
        srv.http,
        "POST",
        "/signal/send",
        &[("Authorization", &format!("Bearer {forged}"))],
        r#"{"type":"ping"}"#,
    )
    .await;
    assert_eq!(r.status, 404);
    // Once B has left, its token opens nothing, on any transport.
    send(&mut b, json!({"type": "leave"})).await;
    let _ = closed(&mut b).await;
    let mut w = ws(srv.http).await;
    send(
        &mut w,
        json!({"type": "resume", "session": b_token, "last_seq": 0}),
    )
    .await;
    assert_eq!(recv(&mut w).await["code"], "resume_failed");
    let r = http(
        srv.http,
        "GET",
        &format!("/signal/poll?session={b_token}&last_seq=0&timeout=1"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 404);
    srv.shutdown().await;
}

/// `openssl s_client` against `addr` with extra `args`, sending `input`; (success, output).
fn s_client(addr: SocketAddr, args: &[&str], input: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is installed (scripts/install-deps)");
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn tls_below_1_2_is_refused_and_pages_carry_security_headers() {
    let cert = TestCert::new();
    let mut cfg = config(false);
    cfg.tls_cert = Some(cert.cert.clone());
    cfg.tls_key = Some(cert.key.clone());
    cfg.turns_listen = vec!["127.0.0.1:0".parse().unwrap()];
    let srv = server(cfg).await;
    let (http, turns) = (srv.http, srv.turns[0]);
    let results = tokio::task::spawn_blocking(move || {
        let mut r = Vec::new();
        for addr in [http, turns] {
            // SECLEVEL=0 so that the client really offers the old versions.
            for v in ["-tls1", "-tls1_1"] {
                r.push((
                    addr,
                    v,
                    s_client(addr, &[v, "-cipher", "DEFAULT:@SECLEVEL=0"], ""),
                ));
            }
            for v in ["-tls1_2", "-tls1_3"] {
                r.push((addr, v, s_client(addr, &[v, "-brief"], "")));
            }
        }
        let page = s_client(
            http,
            &["-quiet"],
            "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        );
        (r, page)
    })
    .await
    .unwrap();
    for (addr, v, (ok, out)) in &results.0 {
        let old = *v == "-tls1" || *v == "-tls1_1";
        if old {
            // The server answers the old ClientHello with an alert.
            assert!(!ok && out.contains("alert"), "{addr} {v}: {out}");
        } else {
            assert!(
                out.contains("Protocol version: TLSv1."),
                "{addr} {v}: {out}"
            );
        }
    }
    let page = results.1 .1.to_ascii_lowercase();
    assert!(page.contains("http/1.1 200"), "{page}");
    for h in [
        "strict-transport-security: max-age=",
        "content-security-policy:",
        "x-content-type-options: nosniff",
        "x-frame-options: deny",
        "referrer-policy: no-referrer",
    ] {
        assert!(page.contains(h), "{h} missing: {page}");
    }
    // Plain HTTP on the same port: the same headers but no HSTS.
    let (_, plain) = http_get(srv.http, "/").await;
    let plain = plain.to_ascii_lowercase();
    assert!(plain.contains("content-security-policy:"), "{plain}");
    assert!(!plain.contains("strict-transport-security"), "{plain}");
    srv.shutdown().await;
}

#[tokio::test]
async fn metrics_and_admin_stay_off_the_public_listener() {
    // No token: /metrics open on the HTTP listener, /admin/* for loopback clients only.
    let srv = server(config(false)).await;
    assert_eq!(http_get(srv.http, "/metrics").await.0, 200);
    assert_eq!(http_get(srv.http, "/admin/status").await.0, 200);
    srv.shutdown().await;
    // A token: both need it.
    let mut cfg = config(false);
    cfg.admin_token = Some("s3cret-admin-token".into());
    let srv = server(cfg).await;
    assert_eq!(http_get(srv.http, "/metrics").await.0, 401);
    assert_eq!(http_get(srv.http, "/admin/status").await.0, 401);
    let r = http(
        srv.http,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer s3cret-admin-token")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let r = http(
        srv.http,
        "POST",
        "/admin/drain",
        &[("Authorization", "Bearer wrong")],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        http_get(srv.http, "/readyz").await.0,
        200,
        "a refused drain drains nothing"
    );
    srv.shutdown().await;
    // Their own listener: gone from the public one.
    let mut cfg = config(false);
    cfg.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let srv = server(cfg).await;
    let admin = srv.admin.unwrap();
    assert_eq!(http_get(srv.http, "/metrics").await.0, 404);
    assert_eq!(http_get(srv.http, "/admin/status").await.0, 404);
    assert_eq!(http_get(admin, "/metrics").await.0, 200);
    let r = http(admin, "POST", "/admin/drain", &[], "").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(http_get(srv.http, "/readyz").await.0, 503);
    let (mut w, _) = (ws(srv.http).await, ());
    send(&mut w, json!({"type": "join", "room": "late"})).await;
    assert_eq!(recv(&mut w).await["code"], "draining");
    srv.shutdown().await;
}
