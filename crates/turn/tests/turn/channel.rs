//! ChannelBind (RFC 8656 §11-12).

use crate::common::*;
use icebreaker_stun::method;

/// An allocation that outlives the channel timers (3600 s), with its relay id.
fn long_allocation(env: &mut Env, c: &mut Client) -> icebreaker_turn::RelayId {
    env.signed(c, |c| c.allocate_req().lifetime(3600))
        .assert_success();
    env.server.relays_of(&c.tuple).next().expect("relay").0
}

fn forwards(env: &mut Env, c: &Client, number: u16) -> bool {
    matches!(
        env.raw(c.tuple, &channel_data(number, b"ping")),
        Out::Forward { .. }
    )
}

#[test]
fn channel_number_out_of_range_is_400() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    for n in [0x0000, 0x0001, 0x3FFF, 0x8000, 0xBFFF, 0xFFFF] {
        let r = env.channel_bind(&mut c, n, sa(PEER));
        r.assert_error(400);
        assert!(r.integrity_ok(&c.key()));
    }
    // RFC 8656 §12.2: 0x5000..=0x7FFF are reserved and answered 400. The codec's CHANNEL_MAX
    // decides whether the RFC 5766 range (up to 0x7FFF) is accepted for interoperability;
    // ChannelBind must agree with it (see the report).
    for (i, n) in [0x5000u16, 0x7FFF].into_iter().enumerate() {
        let r = env.channel_bind(&mut c, n, sa(&format!("198.51.100.{}:2", 100 + i)));
        if n > icebreaker_stun::CHANNEL_MAX {
            r.assert_error(400);
        } else {
            r.assert_success();
        }
    }
    for n in [0x4000, 0x4FFF] {
        env.channel_bind(&mut c, n, sa(&format!("198.51.100.{}:1", n & 0xFF)))
            .assert_success();
    }
}

#[test]
fn channel_bind_without_number_or_peer_is_400() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    env.signed(&mut c, |c| c.req(method::CHANNEL_BIND).peer(sa(PEER)))
        .assert_error(400);
    env.signed(&mut c, |c| c.req(method::CHANNEL_BIND).channel(0x4000))
        .assert_error(400);
}

#[test]
fn channel_bind_succeeds_and_carries_data_both_ways() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let rid = long_allocation(&mut env, &mut c);
    let r = env.channel_bind(&mut c, 0x4001, sa(PEER));
    r.assert_success();
    assert!(r.integrity_ok(&c.key()));
    assert_eq!(r.method(), method::CHANNEL_BIND);
    match env.raw(c.tuple, &channel_data(0x4001, b"up")) {
        Out::Forward { relay, peer, data } => {
            assert_eq!((relay, peer, data.as_slice()), (rid, sa(PEER), &b"up"[..]));
        }
        o => panic!("{o:?}"),
    }
    let (_, bytes) = env.peer(rid, sa(PEER), b"down").expect("delivered");
    assert_eq!(bytes, channel_data(0x4001, b"down"));
}

#[test]
fn channel_bind_installs_a_permission() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let rid = long_allocation(&mut env, &mut c);
    env.channel_bind(&mut c, 0x4001, sa(PEER)).assert_success();
    // Another port of the same peer IP is permitted (no channel: Data indication).
    let (_, bytes) = env
        .peer(rid, sa("198.51.100.7:5555"), b"x")
        .expect("permitted");
    let m = icebreaker_stun::Message::parse(&bytes).expect("Data indication");
    assert_eq!(m.method(), method::DATA);
    // Send indication to the peer is forwarded without a CreatePermission.
    assert!(matches!(
        env.raw(c.tuple, &send_indication(sa("198.51.100.7:5555"), b"x")),
        Out::Forward { .. }
    ));
}

#[test]
fn rebinding_the_same_number_to_the_same_peer_refreshes() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    long_allocation(&mut env, &mut c);
    env.channel_bind(&mut c, 0x4001, sa(PEER)).assert_success();
    env.tick(500);
    env.channel_bind(&mut c, 0x4001, sa(PEER)).assert_success();
    env.tick(200); // 700 s after the first bind, 200 after the refresh
    assert!(
        forwards(&mut env, &c, 0x4001),
        "refreshed channel still bound"
    );
    assert_eq!(env.server.stats().channels, 1);
}

#[test]
fn channel_without_refresh_stops_after_600_seconds() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    long_allocation(&mut env, &mut c);
    env.channel_bind(&mut c, 0x4001, sa(PEER)).assert_success();
    // Keep the permission alive, so only the channel's own lifetime matters.
    env.tick(250);
    env.create_permission(&mut c, sa(PEER)).assert_success();
    env.tick(250);
    env.create_permission(&mut c, sa(PEER)).assert_success();
    env.tick(99);
    assert!(forwards(&mut env, &c, 0x4001));
    env.tick(1);
    assert!(!forwards(&mut env, &c, 0x4001));
    assert_eq!(env.server.stats().channels, 0);
}

#[test]
fn same_number_to_another_peer_is_400() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    env.channel_bind(&mut c, 0x4001, sa(PEER)).assert_success();
    let r = env.channel_bind(&mut c, 0x4001, sa(PEER2));
    r.assert_error(400);
    assert!(r.integrity_ok(&c.key()));
    // Same IP, other port is another peer too.
    env.channel_bind(&mut c, 0x4001, sa("198.51.100.7:4001"))
        .assert_error(400);
}

#[test]
fn same_peer_to_another_number_is_400() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    env.channel_bind(&mut c, 0x4001, sa(PEER)).assert_success();
    env.channel_bind(&mut c, 0x4002, sa(PEER)).assert_error(400);
    // The IPv4-mapped spelling of the same peer is the same peer.
    env.channel_bind(&mut c, 0x4002, sa("[::ffff:198.51.100.7]:4000"))
        .assert_error(400);
    env.channel_bind(&mut c, 0x4001, sa("[::ffff:198.51.100.7]:4000"))
        .assert_success();
}

#[test]
fn expired_channel_is_quarantined_for_300_seconds_then_free() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    long_allocation(&mut env, &mut c);
    env.channel_bind(&mut c, 0x4001, sa(PEER)).assert_success();
    env.tick(601);
    assert!(!forwards(&mut env, &c, 0x4001), "expired");
    // Quarantine: neither the number nor the peer can be bound differently.
    env.channel_bind(&mut c, 0x4001, sa(PEER2))
        .assert_error(400);
    env.channel_bind(&mut c, 0x4002, sa(PEER)).assert_error(400);
    env.tick(298); // 899 s after the bind
    env.channel_bind(&mut c, 0x4001, sa(PEER2))
        .assert_error(400);
    env.tick(2); // 901 s
    env.channel_bind(&mut c, 0x4001, sa(PEER2)).assert_success();
    env.channel_bind(&mut c, 0x4002, sa(PEER)).assert_success();
    assert!(forwards(&mut env, &c, 0x4001));
}

#[test]
fn expired_channel_may_be_rebound_to_the_same_peer() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    long_allocation(&mut env, &mut c);
    env.channel_bind(&mut c, 0x4001, sa(PEER)).assert_success();
    env.tick(650);
    assert!(!forwards(&mut env, &c, 0x4001));
    env.channel_bind(&mut c, 0x4001, sa(PEER)).assert_success();
    assert!(forwards(&mut env, &c, 0x4001));
}

#[test]
fn channel_bind_to_a_new_peer_counts_against_the_permission_cap() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    let peers = (1..=255u8)
        .map(|n| sa(&format!("198.51.100.{n}:4000")))
        .chain([sa("203.0.113.1:4000")]);
    for p in peers {
        env.create_permission(&mut c, p).assert_success();
    }
    env.create_permission(&mut c, sa("203.0.113.2:4000"))
        .assert_error(508);
    // The binding would install the 257th permission.
    env.channel_bind(&mut c, 0x4000, sa("203.0.113.2:4000"))
        .assert_error(508);
    // A peer that already has a permission can still get a channel.
    env.channel_bind(&mut c, 0x4001, sa("198.51.100.9:4000"))
        .assert_success();
}
