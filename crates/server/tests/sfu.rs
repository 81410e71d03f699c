//! The SFU end to end with real WebRTC stacks (str0m participants: ICE, DTLS-SRTP, SCTP) over
//! signaling: every member receives every publisher's audio and video, data-channel messages
//! reach the rest of the room with the sender stamped, the active speaker is announced, rooms
//! are isolated, and the metrics and admin view see it all.

mod common;

use std::time::Duration;

use icebreaker::bench::{SfuBench, SfuReport};

async fn run(cfg: SfuBench) -> SfuReport {
    icebreaker::bench::sfu::run_sfu_async(cfg)
        .await
        .expect("bench sfu runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_receive_every_publisher_and_data_and_speaker() {
    let srv = common::server(common::config(false)).await;
    let report = run(SfuBench {
        http: srv.http,
        rooms: 2,
        publishers: 2,
        subscribers: 2,
        duration: Duration::from_secs(4),
        video_kbps: 300,
        fps: 15,
        data_message: true,
        connect_timeout: Duration::from_secs(10),
        ..SfuBench::default()
    })
    .await;
    assert_eq!(report.connected, 8, "{report:#?}");
    for m in &report.members_detail {
        assert!(m.error.is_none(), "{m:?}");
        // Publishers of the same room, except itself.
        let publishers: Vec<&str> = report
            .members_detail
            .iter()
            .filter(|o| o.room == m.room && o.publisher && o.peer != m.peer)
            .map(|o| o.peer.as_str())
            .collect();
        let got: Vec<&str> = m.received.keys().map(String::as_str).collect();
        let mut want = publishers.clone();
        want.sort_unstable();
        assert_eq!(
            got, want,
            "{} receives exactly its room's publishers: {m:?}",
            m.peer
        );
        for (p, (video, audio)) in &m.received {
            assert!(*video >= 20, "{} got {video} video frames from {p}", m.peer);
            assert!(*audio >= 50, "{} got {audio} audio frames from {p}", m.peer);
        }
        // Every other member of the room said hello over the data channel, stamped.
        let others: Vec<&str> = report
            .members_detail
            .iter()
            .filter(|o| o.room == m.room && o.peer != m.peer)
            .map(|o| o.peer.as_str())
            .collect();
        assert_eq!(m.data.len(), others.len(), "{m:?}");
        for o in others {
            let want = serde_json::json!({"from": o, "data": format!("hello from {o}")});
            assert!(
                m.data.iter().any(
                    |d| serde_json::from_str::<serde_json::Value>(d).ok() == Some(want.clone())
                ),
                "{} did not get {want} in {:?}",
                m.peer,
                m.data
            );
        }
        // A publisher speaks: the room hears about it.
        assert!(
            m.speakers.iter().any(|s| s
                .as_deref()
                .is_some_and(|s| publishers.contains(&s) || s == m.peer)),
            "{m:?}"
        );
    }
    // Everyone left: the SFU is empty again, and its counters moved.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    let sfu = srv.signal().sfu().expect("an SFU");
    loop {
        let snap = sfu.snapshot();
        if snap.totals.participants == 0 && snap.totals.frames_forwarded > 0 {
            assert!(snap.totals.packets_out > 1000, "{snap:?}");
            break;
        }
        if std::time::Instant::now() > until {
            let room = &snap.rooms[0].room;
            let left = sfu.peer_stats(room).await;
            let peers: Vec<_> = report
                .members_detail
                .iter()
                .map(|m| (&m.room, &m.peer))
                .collect();
            panic!("still there: {left:?}\nmembers: {peers:?}\n{snap:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_admin_view_show_a_live_room() {
    let mut cfg = common::config(false);
    cfg.admin_token = Some("admin-token-0123456789abcdef".into());
    let srv = common::server(cfg).await;
    let http = srv.http;
    let bench = tokio::spawn(run(SfuBench {
        http,
        rooms: 1,
        publishers: 2,
        subscribers: 1,
        duration: Duration::from_secs(5),
        video_kbps: 200,
        fps: 15,
        room_prefix: "admin-view-".into(),
        connect_timeout: Duration::from_secs(10),
        ..SfuBench::default()
    }));
    // Wait until the room is up and the snapshot (refreshed each second) shows it.
    let auth = "Bearer admin-token-0123456789abcdef";
    let until = std::time::Instant::now() + Duration::from_secs(15);
    let rooms = loop {
        let r =
            common::signal::http(http, "GET", "/admin/sfu", &[("Authorization", auth)], "").await;
        assert_eq!(r.status, 200, "{r:?}");
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        let rooms = v["rooms"].as_array().cloned().unwrap_or_default();
        if rooms.iter().any(|r| {
            r["participants"] == 3 && r["tracks"] == 4 && r["bitrate_out"].as_u64() > Some(0)
        }) {
            break rooms;
        }
        assert!(std::time::Instant::now() < until, "{v}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(rooms[0]["room"], "admin-view-0");
    let r = common::signal::http(
        http,
        "GET",
        "/admin/sfu?room=admin-view-0",
        &[("Authorization", auth)],
        "",
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    let parts = v["participants"].as_array().cloned().unwrap_or_default();
    assert_eq!(parts.len(), 3, "{v}");
    for p in &parts {
        assert!(p["ice"] == "connected" || p["ice"] == "completed", "{p}");
        assert_eq!(p["protocol"], "udp", "{p}");
    }
    let publishing: usize = parts
        .iter()
        .map(|p| p["publishing"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(publishing, 4, "{v}");
    // Without the token: refused.
    let r = common::signal::http(http, "GET", "/admin/sfu", &[], "").await;
    assert_eq!(r.status, 401, "{r:?}");
    // Metrics: totals and the per-room series.
    let r = common::signal::http(http, "GET", "/metrics", &[("Authorization", auth)], "").await;
    assert!(
        r.body.contains("icebreaker_sfu_participants 3"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("icebreaker_sfu_room_participants{room=\"admin-view-0\"} 3"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("# TYPE icebreaker_sfu_packets_total counter"),
        "{}",
        r.body
    );
    let report = bench.await.expect("join");
    assert_eq!(report.connected, 3, "{report:?}");
}

/// A lossy downlink: subscribers drop 10 % of the RTP packets they receive. The SFU retransmits
/// what they report missing (NACK → RTX), so they still get (nearly) every frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_rtx_recovers_a_lossy_downlink() {
    let srv = common::server(common::config(false)).await;
    let report = run(SfuBench {
        http: srv.http,
        rooms: 1,
        publishers: 1,
        subscribers: 2,
        duration: Duration::from_secs(5),
        video_kbps: 400,
        fps: 15,
        loss: 0.10,
        room_prefix: "lossy-".into(),
        connect_timeout: Duration::from_secs(10),
        ..SfuBench::default()
    })
    .await;
    assert_eq!(report.connected, 3, "{report:#?}");
    let publisher = report
        .members_detail
        .iter()
        .find(|m| m.publisher)
        .map(|m| m.peer.clone())
        .expect("a publisher");
    for m in report.members_detail.iter().filter(|m| !m.publisher) {
        assert!(m.error.is_none(), "{m:?}");
        assert!(m.dropped >= 20, "the loss was simulated: {m:?}");
        let (video, _) = m.received.get(&publisher).copied().unwrap_or_default();
        eprintln!(
            "{}: {video} video frames, {} RTP packets dropped, {} unrepaired gaps",
            m.peer, m.dropped, m.gaps
        );
        assert!(video >= 50, "{} got {video} video frames: {m:?}", m.peer);
        // Without retransmissions every dropped packet would leave a gap; NACK → RTX repairs
        // (nearly) all of them.
        assert!(
            m.gaps * 4 <= m.dropped,
            "{}: {} gaps for {} dropped packets: NACK/RTX did not repair them: {m:?}",
            m.peer,
            m.gaps,
            m.dropped
        );
    }
    let sfu = srv.signal().sfu().expect("an SFU");
    let snap = sfu.snapshot();
    assert!(snap.totals.frames_forwarded > 0, "{snap:?}");
}
