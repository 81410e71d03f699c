//! Smoke test of the signaling load generator against an in-process server: `bench signal`
//! with 20 WebSocket clients in rooms of 2, paced and then closed-loop, delivers every message
//! in order to the right client and closes every connection.

mod common;

use std::time::Duration;

use icebreaker::bench::{run_signal, SignalBench, SignalLoad, SignalProtocol, SignalReport};

async fn bench(cfg: SignalBench) -> SignalReport {
    tokio::task::spawn_blocking(move || run_signal(&cfg))
        .await
        .expect("join")
        .expect("bench signal runs")
}

fn check(r: &SignalReport) {
    assert_eq!((r.connected, r.connect_failed), (20, 0), "{r:?}");
    assert_eq!(r.rooms_active, 10, "{r:?}");
    assert!(r.delivered > 0, "{r:?}");
    assert_eq!(r.delivered, r.sent, "messages lost: {r:?}");
    assert_eq!(r.lost, 0, "{r:?}");
    assert_eq!((r.misrouted, r.duplicates, r.gaps), (0, 0, 0), "{r:?}");
    assert_eq!(
        (r.server_errors, r.bad_frames, r.disconnected),
        (0, 0, 0),
        "{r:?}"
    );
    assert_eq!(r.connections_held, 20, "{r:?}");
    assert!(
        r.latency_p50_us > 0.0 && r.latency_p99_us >= r.latency_p50_us,
        "{r:?}"
    );
    assert_eq!(r.closed, 20, "every client leaves and closes: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_signal_smoke() {
    let mut cfg = common::config(false);
    // The acks count against the per-connection rate too; the closed-loop step goes faster.
    cfg.signal_rate = 100_000;
    let srv = common::server(cfg).await;
    let base = SignalBench {
        server: format!("http://{}", srv.http),
        protocol: SignalProtocol::Icebreaker,
        clients: 20,
        room_size: 2,
        load: SignalLoad::Rate(400),
        duration: Duration::from_secs(2),
        threads: 2,
        settle: Duration::from_millis(100),
        server_pid: Some(std::process::id()),
        ..SignalBench::default()
    };

    let paced = bench(base.clone()).await;
    check(&paced);
    assert_eq!(paced.mode, "paced");
    // 400/s for 2 s, give or take the schedule's edges.
    assert!((700..=820).contains(&paced.sent), "{paced:?}");
    assert!(!paced.generator_limited, "{paced:?}");
    assert!(paced.server_rss_idle_kib.is_some() && paced.server_cpu_pct.is_some());

    // Closed loop, fresh rooms (the sessions of the first run have left).
    let max = bench(SignalBench {
        room_prefix: "max-".into(),
        load: SignalLoad::Max { in_flight: 4 },
        duration: Duration::from_secs(1),
        ..base.clone()
    })
    .await;
    check(&max);
    assert_eq!(max.mode, "max");
    assert!(max.delivered > 1000, "{max:?}");

    // Nothing listening: a clear failure, not a hang.
    let refused = bench(SignalBench {
        server: "http://127.0.0.1:1".into(),
        clients: 2,
        duration: Duration::ZERO,
        server_pid: None,
        ..base
    })
    .await;
    assert_eq!((refused.connected, refused.connect_failed), (0, 2));
    assert!(refused.connect_error.is_some());
    srv.shutdown().await;
}
