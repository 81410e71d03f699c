//! Icebreaker's TURN server end to end, in process, over real loopback sockets.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use icebreaker::client::turn::{AllocateOptions, Credentials, Transport, TurnClient};
use icebreaker::client::turn_check::{self, TurnCheckArgs};

async fn client(server: SocketAddr, t: Transport, c: Option<Credentials>) -> TurnClient {
    TurnClient::connect(server, options(t, c))
        .await
        .expect("connect")
}

#[tokio::test]
async fn binding_over_udp_tcp_and_tls() {
    let cert = TestCert::new();
    let mut cfg = config(false);
    cfg.turns_listen = vec!["127.0.0.1:0".parse().expect("addr")];
    cfg.tls_cert = Some(cert.cert.clone());
    cfg.tls_key = Some(cert.key.clone());
    let srv = server(cfg).await;
    let turn = srv.turn[0];
    let turns = srv.turns[0];
    for (addr, t) in [
        (turn, Transport::Udp),
        (turn, Transport::Tcp),
        (turns, Transport::Tls),
    ] {
        let mut c = client(addr, t, None).await;
        let b = c.binding_padded(128).await.expect("binding");
        assert_eq!(b.xor_mapped, Some(c.local_addr()), "{t:?}");
        assert!(
            b.software
                .as_deref()
                .unwrap_or("")
                .starts_with("Icebreaker"),
            "{t:?}: SOFTWARE {:?}",
            b.software
        );
    }
    // A small request gets no SOFTWARE over UDP: no amplification.
    let mut c = client(turn, Transport::Udp, None).await;
    let b = c.binding().await.expect("binding");
    assert_eq!(b.xor_mapped, Some(c.local_addr()));
    srv.shutdown().await;
}

#[tokio::test]
async fn turn_check_walks_every_step_on_every_transport() {
    let cert = TestCert::new();
    let mut cfg = config(true);
    cfg.turns_listen = vec!["127.0.0.1:0".parse().expect("addr")];
    cfg.tls_cert = Some(cert.cert.clone());
    cfg.tls_key = Some(cert.key.clone());
    let srv = server(cfg).await;
    let turn = srv.turn[0].to_string();
    let turns = srv.turns[0].to_string();
    for (addr, tcp, tls) in [
        (&turn, false, false),
        (&turn, true, false),
        (&turns, false, true),
    ] {
        for secret in [false, true] {
            let mut args = if secret {
                TurnCheckArgs::with_secret(addr.clone(), SECRET)
            } else {
                TurnCheckArgs::with_user(addr.clone(), USER, PASS)
            };
            args.tcp = tcp;
            args.tls = tls;
            args.insecure = tls;
            turn_check::run(args).await.unwrap_or_else(|e| {
                panic!("turn-check {addr} tcp={tcp} tls={tls} secret={secret}: {e:#}")
            });
        }
    }
    // Every allocation was deleted at the end of each check.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(srv.allocations(), 0);
    srv.shutdown().await;
}

#[tokio::test]
async fn refusals_wrong_password_expired_and_denied_peer() {
    let srv = server(config(false)).await;
    let turn = srv.turn[0];

    // Wrong password: 401.
    let bad = Credentials::LongTerm {
        username: USER.into(),
        password: "nope".into(),
    };
    let mut c = client(turn, Transport::Udp, Some(bad)).await;
    let e = c
        .allocate(&AllocateOptions::default())
        .await
        .expect_err("401");
    assert_eq!(e.code(), Some(401), "{e}");

    // Expired REST username: 401.
    let username = "1000:carol".to_string();
    let mut pw = [0u8; 28];
    let password =
        icebreaker_stun::rest_password(SECRET.as_bytes(), &username, &mut pw).to_string();
    let mut c = client(
        turn,
        Transport::Udp,
        Some(Credentials::LongTerm { username, password }),
    )
    .await;
    let e = c
        .allocate(&AllocateOptions::default())
        .await
        .expect_err("401");
    assert_eq!(e.code(), Some(401), "{e}");

    // Loopback peer without --allow-peer: 403, for CreatePermission and ChannelBind.
    let mut c = client(turn, Transport::Udp, Some(static_creds())).await;
    c.allocate(&AllocateOptions::default())
        .await
        .expect("allocate");
    let peer: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    for p in [
        peer,
        "[::ffff:127.0.0.1]:9".parse().expect("addr"),
        "10.0.0.1:9".parse().expect("addr"),
        "0.0.0.0:9".parse().expect("addr"),
    ] {
        let e = c.create_permission(&[p]).await.expect_err("403");
        assert_eq!(e.code(), Some(403), "{p}: {e}");
    }
    let e = c.channel_bind(0x4001, peer).await.expect_err("403");
    assert_eq!(e.code(), Some(403), "{e}");
    c.refresh(0).await.expect("delete");
    srv.shutdown().await;
}

#[tokio::test]
async fn own_service_ports_refused_even_when_loopback_allowed() {
    let srv = server(config(true)).await;
    let mut c = client(srv.turn[0], Transport::Udp, Some(static_creds())).await;
    c.allocate(&AllocateOptions::default())
        .await
        .expect("allocate");
    for target in [srv.http, srv.turn[0]] {
        let e = c.create_permission(&[target]).await.expect_err("403");
        assert_eq!(e.code(), Some(403), "{target}: {e}");
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn two_clients_relay_to_each_other_without_allow_rule() {
    // The usual case behind strict NATs: each client's peer is the other's relay address on this
    // server. That must work without opening loopback.
    let srv = server(config(false)).await;
    let mut a = client(srv.turn[0], Transport::Udp, Some(static_creds())).await;
    let mut b = client(srv.turn[0], Transport::Tcp, Some(rest_creds())).await;
    let ra = a
        .allocate(&AllocateOptions::default())
        .await
        .expect("a")
        .relayed;
    let rb = b
        .allocate(&AllocateOptions::default())
        .await
        .expect("b")
        .relayed;
    a.channel_bind(0x4000, rb).await.expect("a bind");
    b.create_permission(&[ra]).await.expect("b permission");
    a.send_channel_data(0x4000, b"hello from a")
        .await
        .expect("send");
    assert_eq!(recv_data(&mut b).await, b"hello from a");
    b.send_indication(ra, b"hello from b").await.expect("send");
    assert_eq!(recv_data(&mut a).await, b"hello from b");
    srv.shutdown().await;
}

#[tokio::test]
async fn garbage_is_dropped_while_others_keep_being_served() {
    let srv = server(config(true)).await;
    let turn = srv.turn[0];
    let peer = echo_peer(1000);
    let mut good = client(turn, Transport::Udp, Some(static_creds())).await;
    good.allocate(&AllocateOptions::default())
        .await
        .expect("allocate");
    good.channel_bind(0x4000, peer).await.expect("bind");

    let junk = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut stun_truncated = [0u8; 20];
    stun_truncated[1] = 0x01;
    stun_truncated[3] = 0x40; // claims 64 bytes of attributes
    stun_truncated[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    let packets: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x00],
        vec![0x40, 0x00, 0xff, 0xff, 1, 2, 3], // ChannelData claiming 65535 bytes
        vec![0x40, 0x00],
        stun_truncated.to_vec(),
        vec![0xAB; 1400],
        vec![0x00; 65_000], // oversized
    ];
    for p in &packets {
        for _ in 0..50 {
            let _ = junk.send_to(p, turn);
        }
    }
    // Garbage on TCP closes that connection only.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(turn).await.expect("tcp");
        let _ = s.write_all(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]).await;
    }
    for i in 0..20u8 {
        let msg = [i; 100];
        good.send_channel_data(0x4000, &msg).await.expect("send");
        assert_eq!(recv_data(&mut good).await, msg);
    }
    // Gauges are published by the once-a-second timer: wait for the next publication.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let metrics = loop {
        let (status, metrics) = http_get(srv.http, "/metrics").await;
        assert_eq!(status, 200);
        if metrics.contains("icebreaker_turn_allocations 1")
            || tokio::time::Instant::now() > deadline
        {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        metrics.contains("icebreaker_turn_allocations 1"),
        "{metrics}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn tcp_close_ends_the_allocation_and_metrics_count() {
    let srv = server(config(true)).await;
    {
        let mut c = client(srv.turn[0], Transport::Tcp, Some(static_creds())).await;
        c.allocate(&AllocateOptions::default())
            .await
            .expect("allocate");
        assert_eq!(srv.allocations(), 1);
    }
    // The client is dropped: its connection closes, and the allocation with it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while srv.allocations() != 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(srv.allocations(), 0);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, m) = http_get(srv.http, "/metrics").await;
    assert!(
        m.contains("icebreaker_turn_allocations_created_total 1"),
        "{m}"
    );
    assert!(
        m.contains("icebreaker_turn_auth_failures_total{reason=\"missing\"} 1"),
        "{m}"
    );
    let (status, _) = http_get(srv.http, "/healthz").await;
    assert_eq!(status, 200);
    srv.shutdown().await;
}

#[tokio::test]
async fn ipv6_clients_and_relays_rfc6156() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("NOTICE: no IPv6 loopback here; skipping");
        return;
    }
    let mut cfg = config(false);
    cfg.turn_listen = vec!["[::1]:0".parse().expect("addr")];
    cfg.relay_ip = vec!["127.0.0.1".parse().expect("ip"), "::1".parse().expect("ip")];
    cfg.allow_peer = vec![
        "::1/128".parse().expect("net"),
        "127.0.0.0/8".parse().expect("net"),
    ];
    let srv = server(cfg).await;
    let echo = std::net::UdpSocket::bind("[::1]:0").expect("echo");
    let echo_addr = echo.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        for _ in 0..100 {
            let Ok((n, from)) = echo.recv_from(&mut buf) else {
                return;
            };
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    for t in [Transport::Udp, Transport::Tcp] {
        let mut c = client(srv.turn[0], t, Some(static_creds())).await;
        let b = c.binding().await.expect("binding");
        assert_eq!(b.xor_mapped, Some(c.local_addr()));
        // Dual allocation: IPv4 by default plus IPv6 with ADDITIONAL-ADDRESS-FAMILY.
        let a = c
            .allocate(&AllocateOptions {
                additional_family: Some(icebreaker_stun::Family::V6),
                ..AllocateOptions::default()
            })
            .await
            .expect("allocate");
        assert!(a.relayed.is_ipv4(), "{a:?}");
        assert!(a.additional_relayed.is_some_and(|r| r.is_ipv6()), "{a:?}");
        c.channel_bind(0x4001, echo_addr)
            .await
            .expect("bind v6 peer");
        c.send_channel_data(0x4001, b"over ipv6")
            .await
            .expect("send");
        assert_eq!(recv_data(&mut c).await, b"over ipv6");
        c.refresh(0).await.expect("delete");
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn relay_range_port_without_allocation_is_refused() {
    // The relay-range exception covers live allocations only, not any local socket that happens
    // to sit on a relay-range port of the relay IP.
    let srv = server(config(false)).await;
    let squatter = (20000..29999)
        .find_map(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).ok())
        .expect("a free port in the relay range");
    let target = squatter.local_addr().expect("addr");
    let mut c = client(srv.turn[0], Transport::Udp, Some(static_creds())).await;
    c.allocate(&AllocateOptions::default())
        .await
        .expect("allocate");
    let e = c.create_permission(&[target]).await.expect_err("403");
    assert_eq!(e.code(), Some(403), "{target}: {e}");
    let e = c.channel_bind(0x4002, target).await.expect_err("403");
    assert_eq!(e.code(), Some(403), "{target}: {e}");
    srv.shutdown().await;
}
