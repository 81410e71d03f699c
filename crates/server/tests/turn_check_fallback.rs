//! `turn-check` against a server with the secure default (no relaying to loopback peers): without
//! `--peer` it falls back to a relayed echo peer (a second allocation on the same server).

// `common` is shared with other test files; its style is not this file's to change.
#[allow(clippy::field_reassign_with_default)]
mod common;

use std::time::Duration;

use common::*;
use icebreaker::client::turn_check::{self, TurnCheckArgs};

/// Wait (up to 2 s, for TCP/TLS closes to be noticed) until the server holds no allocation.
async fn assert_no_allocations(srv: &icebreaker::serve::Running) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while srv.allocations() != 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(srv.allocations(), 0, "allocations left behind");
}

/// `config(false)` (loopback peers refused), with a relay port range disjoint from the
/// system's ephemeral ports: the server allows its relay range on its relay IP (127.0.0.1), so an
/// echo socket of turn-check whose ephemeral port happened to fall in the relay range would be
/// accepted, and the 403 this file is about would not happen.
fn secure_config() -> icebreaker::config::Config {
    let (lo, hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    let mut c = config(false);
    c.relay_ports = if lo > 11_000 {
        (lo - 10_000, lo - 1)
    } else {
        (hi.saturating_add(1), hi.saturating_add(10_000))
    };
    c
}

fn args(addr: &str, secret: bool, tcp: bool, tls: bool) -> TurnCheckArgs {
    let mut a = if secret {
        TurnCheckArgs::with_secret(addr, SECRET)
    } else {
        TurnCheckArgs::with_user(addr, USER, PASS)
    };
    a.tcp = tcp;
    a.tls = tls;
    a.insecure = tls;
    a.timeout = Duration::from_secs(5);
    a
}

#[tokio::test]
async fn falls_back_to_a_relayed_echo_peer_on_every_transport() {
    let cert = TestCert::new();
    let mut cfg = secure_config();
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
            turn_check::run(args(addr, secret, tcp, tls))
                .await
                .unwrap_or_else(|e| {
                    panic!("turn-check {addr} tcp={tcp} tls={tls} secret={secret}: {e:#}")
                });
            // Both allocations (ours and the echo peer's) are deleted at the end.
            assert_no_allocations(&srv).await;
        }
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn no_relay_fallback_and_explicit_peer_fail_with_403() {
    let srv = server(secure_config()).await;
    let turn = srv.turn[0].to_string();
    for tcp in [false, true] {
        for secret in [false, true] {
            let mut a = args(&turn, secret, tcp, false);
            a.no_relay_fallback = true;
            let e = turn_check::run(a)
                .await
                .expect_err("--no-relay-fallback: a loopback echo peer is refused");
            let msg = format!("{e:#}");
            assert!(
                msg.contains("CreatePermission") && msg.contains("403"),
                "tcp={tcp} secret={secret}: {msg}"
            );
            assert_no_allocations(&srv).await;
        }
    }
    // `--peer` never falls back either.
    let peer = echo_peer(100);
    for tcp in [false, true] {
        let mut a = args(&turn, false, tcp, false);
        a.peer = Some(peer);
        let e = turn_check::run(a)
            .await
            .expect_err("--peer on loopback is refused");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("CreatePermission") && msg.contains("403"),
            "tcp={tcp}: {msg}"
        );
        assert_no_allocations(&srv).await;
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn local_echo_is_still_used_when_the_server_allows_it() {
    // With loopback peers allowed, the local echo socket works and no second allocation is made;
    // the check passes either way, and leaves nothing behind.
    let srv = server(config(true)).await;
    let turn = srv.turn[0].to_string();
    for tcp in [false, true] {
        let mut a = args(&turn, true, tcp, false);
        a.no_relay_fallback = true;
        turn_check::run(a)
            .await
            .unwrap_or_else(|e| panic!("tcp={tcp}: {e:#}"));
        assert_no_allocations(&srv).await;
    }
    srv.shutdown().await;
}
