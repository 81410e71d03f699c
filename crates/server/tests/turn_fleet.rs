//! A TURN fleet: a node that is full or drains answers Allocate with a signed 300 Try
//! Alternate pointing at another node (`Group::set_alternates`, fed by a cluster), and our
//! TURN client follows it over the same transport and relays there.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use icebreaker::client::turn::{
    AllocateOptions, ClientOptions, TlsOptions, Transport, TurnClient, TurnError,
};
use icebreaker::config::Config;
use icebreaker::serve::Running;
use icebreaker_stun::{attr, method, Class, Message, MessageType, MessageWriter};
use icebreaker_turn::Alternates;

/// The other node's listeners, as a cluster would hand them over.
fn alternates_of(node: &Running) -> Alternates {
    Alternates::from_listeners(&node.turn, &node.turns)
}

/// A node that takes one allocation, and has it taken.
async fn full_node(cfg: Config) -> (Running, TurnClient) {
    let mut cfg = cfg;
    cfg.max_allocations = 1;
    let srv = server(cfg).await;
    let mut first = TurnClient::connect(srv.turn[0], options(Transport::Udp, Some(static_creds())))
        .await
        .expect("connect");
    first
        .allocate(&AllocateOptions::default())
        .await
        .expect("the one allocation");
    (srv, first)
}

/// Allocate on `c`, permit a local echo peer and check a datagram comes back through the relay.
async fn relays_through(c: &mut TurnClient) {
    let alloc = c
        .allocate(&AllocateOptions::default())
        .await
        .expect("allocate");
    let peer = echo_peer(4);
    c.create_permission(&[peer]).await.expect("permission");
    c.send_indication(peer, b"through the fleet")
        .await
        .expect("send");
    assert_eq!(recv_data(c).await, b"through the fleet");
    assert!(alloc.relayed.ip().is_loopback());
}

#[tokio::test]
async fn a_full_node_sends_the_client_to_the_alternate_and_it_relays_there() {
    let (a, _first) = full_node(config(true)).await;
    let b = server(config(true)).await;
    a.turn_group().set_alternates(alternates_of(&b));
    for t in [Transport::Udp, Transport::Tcp] {
        let mut c = TurnClient::connect(a.turn[0], options(t, Some(rest_creds())))
            .await
            .expect("connect");
        relays_through(&mut c).await;
        assert_eq!(c.server_addr(), b.turn[0], "{t}: ended up on B");
        assert_eq!(c.redirected_from(), [a.turn[0]], "{t}: redirected by A");
        assert_eq!(c.transport(), t, "same transport");
        c.refresh(0).await.expect("delete on B");
    }
    assert_eq!(a.allocations(), 1, "A took nothing more");
    assert_eq!(b.allocations(), 0);
    // No alternate: the full node's 508 reaches the caller.
    a.turn_group().clear_alternates();
    let mut c = TurnClient::connect(a.turn[0], options(Transport::Udp, Some(rest_creds())))
        .await
        .expect("connect");
    let e = c
        .allocate(&AllocateOptions::default())
        .await
        .expect_err("508");
    assert_eq!(e.code(), Some(508), "{e}");
    assert!(c.redirected_from().is_empty());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_draining_node_sends_new_allocations_to_the_alternate() {
    let a = server(config(true)).await;
    let b = server(config(true)).await;
    let mut old = TurnClient::connect(a.turn[0], options(Transport::Udp, Some(static_creds())))
        .await
        .expect("connect");
    old.allocate(&AllocateOptions::default())
        .await
        .expect("before the drain");
    a.turn_group().set_alternates(alternates_of(&b));
    a.control.drain();
    let mut c = TurnClient::connect(a.turn[0], options(Transport::Udp, Some(static_creds())))
        .await
        .expect("connect");
    relays_through(&mut c).await;
    assert_eq!(c.server_addr(), b.turn[0]);
    assert_eq!(c.redirected_from(), [a.turn[0]]);
    assert_eq!((a.allocations(), b.allocations()), (1, 1));
    // The allocation made before the drain goes on.
    relays_through_existing(&mut old).await;
    a.shutdown().await;
    b.shutdown().await;
}

async fn relays_through_existing(c: &mut TurnClient) {
    let peer = echo_peer(2);
    c.create_permission(&[peer]).await.expect("permission");
    c.send_indication(peer, b"still here").await.expect("send");
    assert_eq!(recv_data(c).await, b"still here");
}

#[tokio::test]
async fn two_full_nodes_pointing_at_each_other_do_not_ping_pong() {
    let (a, _fa) = full_node(config(true)).await;
    let (b, _fb) = full_node(config(true)).await;
    a.turn_group().set_alternates(alternates_of(&b));
    b.turn_group().set_alternates(alternates_of(&a));
    let mut c = TurnClient::connect(a.turn[0], options(Transport::Udp, Some(rest_creds())))
        .await
        .expect("connect");
    // A → B, and B's 300 back to A is not followed (RFC 8489 §10).
    let e = c
        .allocate(&AllocateOptions::default())
        .await
        .expect_err("300");
    assert_eq!(e.code(), Some(300), "{e}");
    assert_eq!(c.server_addr(), b.turn[0]);
    assert_eq!(c.redirected_from(), [a.turn[0]]);
    // With redirections turned off the first 300 is the answer.
    let opts = ClientOptions {
        max_redirects: 0,
        ..options(Transport::Udp, Some(rest_creds()))
    };
    let mut c = TurnClient::connect(a.turn[0], opts).await.expect("connect");
    let e = c
        .allocate(&AllocateOptions::default())
        .await
        .expect_err("300");
    assert_eq!(e.code(), Some(300), "{e}");
    assert_eq!(c.server_addr(), a.turn[0]);
    assert_eq!((a.allocations(), b.allocations()), (1, 1));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_alternate_is_reported_with_both_ends() {
    let (a, _first) = full_node(config(true)).await;
    // A TCP port nobody listens on (bound, then closed).
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    a.turn_group()
        .set_alternates(Alternates::from_listeners(&[dead], &[]));
    let mut c = TurnClient::connect(a.turn[0], options(Transport::Tcp, Some(rest_creds())))
        .await
        .expect("connect");
    let e = c
        .allocate(&AllocateOptions::default())
        .await
        .expect_err("unreachable");
    match &e {
        TurnError::Redirect { from, to, .. } => {
            assert_eq!((*from, *to), (a.turn[0], dead), "{e}");
        }
        other => panic!("expected a redirect failure, got {other}"),
    }
    assert_eq!(c.server_addr(), a.turn[0], "still on A");
    a.shutdown().await;
}

/// A self-signed certificate for `name`, in `dir`; returns (cert, key) paths.
fn cert_for(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("certificate");
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    (cert, key)
}

#[tokio::test]
async fn tls_follows_to_the_alternates_tls_listener_and_verifies_its_alternate_domain() {
    let dir = TestCert::new();
    let (cert_a, key_a) = cert_for(&dir.dir, "turn-a.test");
    let (cert_b, key_b) = cert_for(&dir.dir, "turn-b.test");
    // The client trusts both certificates, and only under their own names.
    let roots = dir.dir.join("roots.pem");
    let both = [
        std::fs::read_to_string(&cert_a).expect("read"),
        std::fs::read_to_string(&cert_b).expect("read"),
    ]
    .concat();
    std::fs::write(&roots, both).expect("write roots");
    let tls_node = |cert: std::path::PathBuf, key: std::path::PathBuf| {
        let mut cfg = config(true);
        cfg.turns_listen = vec!["127.0.0.1:0".parse().expect("addr")];
        cfg.tls_cert = Some(cert);
        cfg.tls_key = Some(key);
        cfg
    };
    let (a, _first) = full_node(tls_node(cert_a, key_a)).await;
    let b = server(tls_node(cert_b, key_b)).await;
    let tls_opts = || ClientOptions {
        tls: TlsOptions {
            server_name: Some("turn-a.test".into()),
            ca_file: Some(roots.clone()),
            insecure: false,
        },
        ..options(Transport::Tls, Some(rest_creds()))
    };
    // B's certificate does not carry A's name: without ALTERNATE-DOMAIN the client verifies B
    // against "turn-a.test" and refuses it.
    a.turn_group().set_alternates(alternates_of(&b));
    let mut c = TurnClient::connect(a.turns[0], tls_opts())
        .await
        .expect("connect to A");
    let e = c
        .allocate(&AllocateOptions::default())
        .await
        .expect_err("wrong name");
    assert!(
        matches!(&e, TurnError::Redirect { to, error, .. }
            if *to == b.turns[0] && matches!(**error, TurnError::Tls(_))),
        "{e}"
    );
    // With B's name in ALTERNATE-DOMAIN it is verified as what it is.
    a.turn_group().set_alternates(Alternates {
        tls_name: Some(Arc::from("turn-b.test")),
        ..alternates_of(&b)
    });
    let mut c = TurnClient::connect(a.turns[0], tls_opts())
        .await
        .expect("connect to A");
    relays_through(&mut c).await;
    assert_eq!(c.server_addr(), b.turns[0], "B's TLS listener");
    assert_eq!(c.redirected_from(), [a.turns[0]]);
    assert_eq!(c.transport(), Transport::Tls);
    a.shutdown().await;
    b.shutdown().await;
}

/// A 300 that is not signed with the client's key (anyone on the path could send one) is not
/// followed: here a fake server challenges, then answers the signed Allocate with an unsigned
/// 300 toward a real node.
#[tokio::test]
async fn an_unsigned_300_is_not_followed() {
    let b = server(config(true)).await;
    let fake = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let fake_addr = fake.local_addr().expect("addr");
    let target = b.turn[0];
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        let mut out = [0u8; 512];
        while let Ok((n, from)) = fake.recv_from(&mut buf).await {
            let Ok(req) = Message::parse(&buf[..n]) else {
                continue;
            };
            let typ = MessageType::new(method::ALLOCATE, Class::Error);
            let Ok(mut w) = MessageWriter::new(&mut out, typ, req.transaction_id()) else {
                continue;
            };
            let _ = if req.has_integrity() {
                w.error_code(300, "Try Alternate")
                    .and_then(|()| w.address(attr::ALTERNATE_SERVER, target))
            } else {
                w.error_code(401, "Unauthorized")
                    .and_then(|()| w.attr(attr::REALM, REALM.as_bytes()))
                    .and_then(|()| w.attr(attr::NONCE, b"0123456789abcdef"))
            };
            let len = w.finish();
            let _ = fake.send_to(&out[..len], from).await;
        }
    });
    let mut c = TurnClient::connect(fake_addr, options(Transport::Udp, Some(static_creds())))
        .await
        .expect("connect");
    let e = c
        .allocate(&AllocateOptions::default())
        .await
        .expect_err("300");
    assert_eq!(e.code(), Some(300), "{e}");
    assert_eq!(c.server_addr(), fake_addr, "not followed");
    assert!(c.redirected_from().is_empty());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(b.allocations(), 0);
    b.shutdown().await;
}

/// The `turn:` URIs `iceServers` hands out over `/api/ice-servers` and in `joined`.
async fn handed_out(srv: &Running) -> (Vec<String>, Vec<String>) {
    use common::signal::*;
    let r = http(
        srv.http,
        "GET",
        "/api/ice-servers?service=turn&username=u",
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    let uris: Vec<String> = serde_json::from_value(v["uris"].clone()).expect("uris");
    let mut w = ws(srv.http).await;
    send(&mut w, serde_json::json!({"type": "join", "room": "fleet"})).await;
    let joined = recv_type(&mut w, "joined").await;
    let turn: Vec<String> =
        serde_json::from_value(joined["iceServers"][1]["urls"].clone()).expect("urls");
    (uris, turn)
}

#[tokio::test]
async fn signaling_hands_out_the_fleets_turn_nodes_and_a_reload_keeps_them() {
    use icebreaker::signal::FleetNode;
    let cfg = config(true);
    let srv = server(cfg.clone()).await;
    let own = format!("turn:localhost:{}?transport=udp", srv.turn[0].port());
    let (uris, turn) = handed_out(&srv).await;
    assert_eq!(uris[0], own);
    let port = format!(":{}?transport=udp", srv.turn[0].port());
    assert!(turn[0].ends_with(&port), "{turn:?}");
    // The cluster's least loaded nodes, first the least loaded.
    let fleet = srv.signal().ice().fleet.clone();
    fleet.set(vec![
        FleetNode {
            id: "b".into(),
            turn: vec!["198.51.100.2:3478".parse().expect("addr")],
            turns: vec![],
        },
        FleetNode {
            id: "a".into(),
            turn: vec!["198.51.100.1:3478".parse().expect("addr")],
            turns: vec![],
        },
    ]);
    let expect = vec![
        "turn:198.51.100.2:3478?transport=udp",
        "turn:198.51.100.2:3478?transport=tcp",
        "turn:198.51.100.1:3478?transport=udp",
        "turn:198.51.100.1:3478?transport=tcp",
    ];
    let (uris, turn) = handed_out(&srv).await;
    assert_eq!(uris, expect);
    assert_eq!(turn, expect);
    // A reload builds a new ICE configuration: the fleet handle carries over.
    let mut newer = cfg.clone();
    newer.credential_ttl = 600;
    // Ports 0 do not pass the check; the listeners need a restart anyway.
    newer.turn_listen = srv.turn.clone();
    newer.http_listen = srv.http;
    newer.sfu_listen = srv.sfu_addr;
    srv.reload(newer).expect("reload");
    assert!(Arc::ptr_eq(&fleet, &srv.signal().ice().fleet));
    assert_eq!(handed_out(&srv).await.0, expect);
    fleet.clear();
    assert_eq!(handed_out(&srv).await.0[0], own);
    srv.shutdown().await;
}

#[tokio::test]
async fn turn_check_passes_through_a_redirection() {
    use icebreaker::client::turn_check::{self, TurnCheckArgs};
    let (a, _first) = full_node(config(true)).await;
    let b = server(config(true)).await;
    a.turn_group().set_alternates(alternates_of(&b));
    for tcp in [false, true] {
        let mut args = TurnCheckArgs::with_secret(a.turn[0].to_string(), SECRET);
        args.tcp = tcp;
        turn_check::run(args)
            .await
            .unwrap_or_else(|e| panic!("turn-check tcp={tcp}: {e:#}"));
    }
    // Everything it made on B was deleted; A still holds its one allocation.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!((a.allocations(), b.allocations()), (1, 0));
    a.shutdown().await;
    b.shutdown().await;
}
