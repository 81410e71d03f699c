//! Limits on unauthenticated sources: no amplification toward spoofed addresses, per-address
//! allocation rates, and all of it in fixed memory.

use crate::common::*;
use icebreaker_stun::method;
use icebreaker_turn::{Rate, Stats, Transport};
use std::time::Duration;

fn refused(env: &Env, label: &str) -> u64 {
    let i = Stats::REFUSALS
        .iter()
        .position(|&l| l == label)
        .expect("known label");
    env.server.stats().refused[i]
}

/// Advance the monotonic clock by `ms` milliseconds (the guard works in milliseconds).
fn advance_ms(env: &Env, ms: u64) -> icebreaker_turn::Now {
    let mut now = env.now;
    now.mono += Duration::from_millis(ms);
    now
}

/// Bytes answered to `packets` unauthenticated requests sent at `pps` from the sources `src(i)`.
fn flood(
    env: &mut Env,
    packets: u32,
    pps: u64,
    src: impl Fn(u32) -> String,
    req: impl Fn(u32) -> Vec<u8>,
) -> (u64, u64) {
    let (mut sent, mut got) = (0u64, 0u64);
    let start = env.now;
    for i in 0..packets {
        env.now = start;
        env.now.mono += Duration::from_micros(u64::from(i) * 1_000_000 / pps);
        let c = Client::alice(&src(i));
        let p = req(i);
        sent += p.len() as u64;
        if let Out::Reply(r) = env.raw(c.tuple, &p) {
            got += r.len() as u64;
        }
    }
    (sent, got)
}

/// The smallest requests (no FINGERPRINT): a 20-byte Binding, a 28-byte Allocate.
fn binding() -> Vec<u8> {
    let mut r = Req::request(method::BINDING);
    r.fingerprint = false;
    r.encode()
}

fn bare_allocate() -> Vec<u8> {
    let mut r = Req::request(method::ALLOCATE).udp();
    r.fingerprint = false;
    r.encode()
}

#[test]
fn a_spoofed_flood_at_one_victim_gets_back_a_small_fixed_amount() {
    let mut env = Env::new();
    // 100,000 requests in 10 s "from" one address, Bindings and Allocates mixed.
    let (sent, got) = flood(
        &mut env,
        100_000,
        10_000,
        |i| format!("198.51.100.7:{}", 1024 + i % 60_000),
        |i| {
            if i % 2 == 0 {
                binding()
            } else {
                bare_allocate()
            }
        },
    );
    // At most half of what it sent, plus the bursts: never more than it sent.
    let cfg = env.server.config();
    let bound = sent / 2
        + u64::from(cfg.unauth_reply_per_source.burst)
        + 10 * u64::from(cfg.unauth_reply_per_source.per_sec)
        + 200;
    assert!(
        got <= bound,
        "victim got {got} bytes of {sent}, bound {bound}"
    );
    assert!(got < sent, "sent {sent}, got back {got}");
    assert!(refused(&env, "unauth_reply_budget") > 40_000);
}

#[test]
fn a_flood_from_many_spoofed_sources_gets_back_less_than_it_sends() {
    for (pps, label) in [(20_000u64, "20k/s"), (5_000, "5k/s")] {
        let mut env = Env::new();
        // Every packet from another address: the per-source budget never bites, the overall one
        // must. Minimal requests: a 20-byte Binding, a 28-byte Allocate (the worst ratios).
        let (sent, got) = flood(
            &mut env,
            200_000,
            pps,
            |i| format!("10.{}.{}.{}:5000", (i >> 16) & 255, (i >> 8) & 255, i & 255),
            |i| {
                if i % 2 == 0 {
                    binding()
                } else {
                    bare_allocate()
                }
            },
        );
        assert!(got < sent, "{label}: sent {sent} bytes, answered {got}");
        assert!(got > 0, "{label}: the budget still answers some");
    }
}

#[test]
fn garbage_and_unanswered_requests_never_reach_the_budget() {
    let mut env = Env::new();
    let (_, got) = flood(
        &mut env,
        10_000,
        10_000,
        |i| format!("198.51.100.9:{}", 1024 + i),
        |i| vec![(i & 0xff) as u8; 1 + (i % 300) as usize],
    );
    assert_eq!(got, 0);
    assert_eq!(refused(&env, "unauth_reply_budget"), 0);
}

#[test]
fn real_clients_are_answered_even_at_a_high_arrival_rate() {
    // 2,000 clients arriving in 2 s, each from its own address: a Binding, the challenge, then
    // an authenticated Allocate (which pays the challenge back). None is refused.
    let mut cfg = config();
    cfg.max_allocations_per_user = 10_000;
    let mut env = Env::with(cfg);
    let start = env.now;
    for i in 0..2_000u32 {
        env.now = start;
        env.now.mono += Duration::from_millis(u64::from(i));
        let mut c = Client::alice(&format!("203.0.{}.{}:4000", i / 250, i % 250));
        let b = env.call(c.tuple, &Req::request(method::BINDING));
        assert!(b.mapped().is_some());
        env.challenge(&mut c);
        env.call(c.tuple, &c.allocate_req()).assert_success();
    }
    assert_eq!(refused(&env, "unauth_reply_budget"), 0);
    assert_eq!(env.server.allocation_count(), 2_000);
}

#[test]
fn stream_transports_are_never_budgeted() {
    // TCP and TLS sources completed a handshake: they are not spoofed.
    let mut env = Env::new();
    let c = Client::new("198.51.100.7:5000", Transport::Tcp, "alice", "alice-pw");
    for _ in 0..1_000 {
        env.call(c.tuple, &Req::request(method::ALLOCATE).udp())
            .assert_error(401);
    }
    assert_eq!(refused(&env, "unauth_reply_budget"), 0);
}

#[test]
fn a_limited_source_is_answered_again_later() {
    let mut cfg = config();
    cfg.unauth_reply_per_source = Rate {
        per_sec: 100,
        burst: 100,
    };
    let mut env = Env::with(cfg);
    let c = Client::alice("198.51.100.7:5000");
    let (mut sent, mut got) = (0u64, 0u64);
    for _ in 0..100 {
        let p = binding();
        sent += p.len() as u64;
        if let Out::Reply(r) = env.raw(c.tuple, &p) {
            got += r.len() as u64;
        }
    }
    assert!(got <= 100 + sent / 2, "sent {sent}, got {got}");
    assert!(env.raw(c.tuple, &binding()).is_none());
    env.now = advance_ms(&env, 1_000);
    assert!(!env.raw(c.tuple, &binding()).is_none());
}

#[test]
fn a_source_that_returned_a_nonce_is_answered_without_limit() {
    // A valid nonce proves the address receives our answers: it cannot be a spoofed victim.
    let mut cfg = config();
    cfg.unauth_reply_per_source = Rate {
        per_sec: 1,
        burst: 200,
    };
    let mut env = Env::with(cfg);
    let mut c = Client::alice("198.51.100.7:5000");
    env.allocate(&mut c);
    for port in 0..500u16 {
        let other = Client::alice(&format!("198.51.100.7:{}", 6000 + port));
        env.call(other.tuple, &Req::request(method::ALLOCATE).udp())
            .assert_error(401);
        env.call(other.tuple, &Req::request(method::BINDING));
    }
    assert_eq!(refused(&env, "unauth_reply_budget"), 0);
    // Another address is still limited.
    let stranger = Client::alice("198.51.100.8:5000");
    let answered = (0..50)
        .filter(|_| !env.raw(stranger.tuple, &bare_allocate()).is_none())
        .count();
    assert!(answered <= 12, "{answered} of 50 answered");
}

#[test]
fn allocations_per_address_are_rate_limited_with_486() {
    let mut cfg = config();
    cfg.allocate_rate = Rate {
        per_sec: 2,
        burst: 3,
    };
    cfg.max_allocations_per_user = 1000;
    let mut env = Env::with(cfg);
    for port in 0..3u16 {
        let mut c = Client::alice(&format!("198.51.100.7:{}", 5000 + port));
        env.allocate(&mut c);
    }
    let mut c = Client::alice("198.51.100.7:6000");
    env.signed(&mut c, |c| c.allocate_req()).assert_error(486);
    assert_eq!(refused(&env, "allocate_rate"), 1);
    // Another address is not affected; the first one gets more as time passes.
    env.allocate(&mut Client::alice("198.51.100.8:5000"));
    env.now = advance_ms(&env, 500);
    env.allocate(&mut c);
    assert_eq!(env.server.allocation_count(), 5);
}

#[test]
fn a_draining_server_sends_new_allocations_to_the_alternate_and_keeps_the_old_ones() {
    let mut cfg = config();
    cfg.alternate_server = Some(sa("192.0.2.99:3478"));
    let mut env = Env::with(cfg.clone());
    let mut old = Client::alice("198.51.100.7:5000");
    env.allocate(&mut old);
    cfg.group.set_draining(true);
    // A new client: challenged as usual, then 300 with ALTERNATE-SERVER, signed, no state.
    let mut c = Client::alice("198.51.100.8:5000");
    let r = env.signed(&mut c, |c| c.allocate_req());
    r.assert_error(300);
    assert!(r.integrity_ok(&c.key()));
    assert_eq!(
        r.msg().alternate_server().ok().flatten(),
        Some(sa("192.0.2.99:3478"))
    );
    assert_eq!(refused(&env, "draining"), 1);
    // The existing allocation refreshes and relays as before.
    env.refresh(&mut old, Some(600)).assert_success();
    env.create_permission(&mut old, sa(PEER)).assert_success();
    assert_eq!(env.server.allocation_count(), 1);
    // Without an alternate: 508.
    let cfg2 = config();
    cfg2.group.set_draining(true);
    let mut env2 = Env::with(cfg2);
    env2.call(c.tuple, &Req::request(method::ALLOCATE).udp())
        .assert_error(508);
}
