//! The UDP data plane with several worker threads, each with its own `SO_REUSEPORT` socket and
//! shard of the allocations: what must hold across shards holds whichever worker the kernel
//! hands a client to (quotas, EVEN-PORT reservations, relay-to-relay, expiry, shutdown).

mod common;

use std::net::SocketAddr;

use common::*;
use icebreaker::client::turn::{AllocateOptions, Credentials, Transport, TurnClient};

/// Enough workers that clients on different ports almost surely land on different shards.
const WORKERS: usize = 4;

fn workers_config() -> icebreaker::config::Config {
    let mut c = config(false);
    c.udp_workers = WORKERS;
    c
}

async fn udp_client(server: SocketAddr, c: Credentials) -> TurnClient {
    TurnClient::connect(server, options(Transport::Udp, Some(c)))
        .await
        .expect("connect")
}

#[tokio::test]
async fn per_user_quota_holds_across_workers() {
    let mut cfg = workers_config();
    cfg.max_allocations_per_user = 3;
    let srv = server(cfg).await;
    let mut ok = 0;
    let mut refused = 0;
    let mut clients = Vec::new();
    // 12 client ports spread over 4 listener sockets: a quota counted per shard would let up
    // to 12 through.
    for _ in 0..12 {
        let mut c = udp_client(srv.turn[0], static_creds()).await;
        match c.allocate(&AllocateOptions::default()).await {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code(), Some(486), "{e}");
                refused += 1;
            }
        }
        clients.push(c);
    }
    assert_eq!((ok, refused), (3, 9));
    assert_eq!(srv.allocations(), 3);
    // Freeing one (on whichever shard) makes room for exactly one more.
    for c in clients.iter_mut() {
        if c.refresh(0).await.is_ok() {
            break;
        }
    }
    let mut c = udp_client(srv.turn[0], static_creds()).await;
    c.allocate(&AllocateOptions::default())
        .await
        .expect("room again");
    srv.shutdown().await;
}

#[tokio::test]
async fn reservation_tokens_are_redeemed_from_other_client_ports() {
    // RTP on an even port, RTCP on the next: the second Allocate comes from another client port,
    // which the kernel may steer to another worker. Eight rounds: all on one shard by chance is
    // (1/4)^8.
    let srv = server(workers_config()).await;
    for round in 0..8 {
        let mut rtp = udp_client(srv.turn[0], static_creds()).await;
        let a = rtp
            .allocate(&AllocateOptions {
                even_port: Some(true),
                ..AllocateOptions::default()
            })
            .await
            .expect("EVEN-PORT allocation");
        assert_eq!(a.relayed.port() % 2, 0);
        let token = a.reservation_token.expect("RESERVATION-TOKEN");
        let mut rtcp = udp_client(srv.turn[0], static_creds()).await;
        let b = rtcp
            .allocate(&AllocateOptions {
                reservation_token: Some(token),
                ..AllocateOptions::default()
            })
            .await
            .unwrap_or_else(|e| panic!("round {round}: token refused: {e}"));
        assert_eq!(b.relayed.port(), a.relayed.port() + 1, "the reserved port");
        // The claimed relay socket is served by the redeeming worker.
        rtcp.create_permission(&[a.relayed])
            .await
            .expect("permission");
        rtp.create_permission(&[b.relayed])
            .await
            .expect("permission");
        rtp.send_indication(b.relayed, b"rtp to rtcp")
            .await
            .expect("send");
        assert_eq!(recv_data(&mut rtcp).await, b"rtp to rtcp");
        rtcp.send_indication(a.relayed, b"rtcp to rtp")
            .await
            .expect("send");
        assert_eq!(recv_data(&mut rtp).await, b"rtcp to rtp");
        // Single use.
        let mut third = udp_client(srv.turn[0], static_creds()).await;
        let e = third
            .allocate(&AllocateOptions {
                reservation_token: Some(token),
                ..AllocateOptions::default()
            })
            .await
            .expect_err("token used");
        assert_eq!(e.code(), Some(508));
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn many_clients_relay_to_each_other_across_workers() {
    // Sixteen clients in a ring, each sending to the next one's relay address without any
    // allow rule: the relay-to-relay exception must see allocations of every shard.
    let srv = server(workers_config()).await;
    let mut clients = Vec::new();
    let mut relays = Vec::new();
    for i in 0..16 {
        let creds = if i % 2 == 0 {
            static_creds()
        } else {
            rest_creds()
        };
        let mut c = udp_client(srv.turn[0], creds).await;
        relays.push(
            c.allocate(&AllocateOptions::default())
                .await
                .expect("allocate")
                .relayed,
        );
        clients.push(c);
    }
    let n = clients.len();
    for i in 0..n {
        let next = relays[(i + 1) % n];
        let prev = relays[(i + n - 1) % n];
        clients[i]
            .create_permission(&[prev])
            .await
            .expect("permission");
        clients[i]
            .channel_bind(0x4000, next)
            .await
            .expect("channel to the next relay");
    }
    for i in 0..n {
        let msg = format!("from {i}");
        clients[i]
            .send_channel_data(0x4000, msg.as_bytes())
            .await
            .expect("send");
        let j = (i + 1) % n;
        assert_eq!(recv_data(&mut clients[j]).await, msg.as_bytes());
    }
    assert_eq!(srv.allocations(), n);
    srv.shutdown().await;
}
