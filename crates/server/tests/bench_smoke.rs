//! Smoke test of the load generators against an in-process server: `bench turn` relays at a low
//! paced rate without loss and releases every allocation; `bench stun` gets answers.

mod common;

use std::time::Duration;

use icebreaker::bench::{run_stun, run_turn, Load, StunBench, TurnBench};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_turn_and_stun_smoke() {
    let srv = common::server(common::config(true)).await;
    let cfg = TurnBench {
        server: Some(srv.turn[0]),
        credentials: Some(common::static_creds()),
        clients: 4,
        size: 100,
        load: Load::Rate(400),
        duration: Duration::from_secs(2),
        threads: 2,
        ..TurnBench::default()
    };
    let report = tokio::task::spawn_blocking(move || run_turn(&cfg))
        .await
        .expect("join")
        .expect("bench turn runs");
    let step = report.last().expect("one step");
    assert!(step.sent >= 700, "sent {}", step.sent);
    assert_eq!(step.received, step.sent, "{step:?}");
    assert_eq!(step.peer_received, Some(step.sent));
    assert_eq!(step.relayed, 2 * step.sent);
    assert_eq!(step.loss_pct, 0.0);
    assert_eq!(step.bad, 0);
    assert!(step.rtt_p50_us > 0.0 && step.rtt_p99_us >= step.rtt_p50_us);
    assert_eq!((report.released, report.release_failed), (4, 0));
    assert_eq!(srv.allocations(), 0, "allocations left behind");

    let server = srv.turn[0];
    let stun = tokio::task::spawn_blocking(move || {
        run_stun(&StunBench {
            server,
            duration: Duration::from_secs(1),
            window: 8,
            threads: 1,
            sockets: 2,
            timeout: Duration::from_secs(1),
            server_pid: None,
        })
    })
    .await
    .expect("join")
    .expect("bench stun runs");
    assert!(stun.responses > 100, "{stun:?}");
    assert_eq!((stun.errors, stun.timeouts), (0, 0));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_peer_refused_is_explained() {
    let srv = common::server(common::config(false)).await;
    let cfg = TurnBench {
        server: Some(srv.turn[0]),
        credentials: Some(common::static_creds()),
        clients: 2,
        load: Load::Rate(100),
        duration: Duration::from_secs(1),
        threads: 1,
        ..TurnBench::default()
    };
    let err = tokio::task::spawn_blocking(move || run_turn(&cfg))
        .await
        .expect("join")
        .expect_err("the server refuses a loopback peer");
    let msg = format!("{err:#}");
    assert!(msg.contains("403") && msg.contains("--allow-peer"), "{msg}");
    assert_eq!(srv.allocations(), 0, "allocations left behind");
    srv.shutdown().await;
}
