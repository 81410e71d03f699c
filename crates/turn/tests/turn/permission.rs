//! CreatePermission and the peer filter (RFC 8656 §9, §10).

use crate::common::*;
use icebreaker_stun::method;
use icebreaker_turn::PeerFilter;

#[test]
fn create_permission_for_an_allowed_peer() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let (rid, _) = env.allocate_relay(&mut c);
    assert!(env.peer(rid, sa(PEER), b"x").is_none(), "no permission yet");
    let r = env.create_permission(&mut c, sa(PEER));
    r.assert_success();
    assert!(r.integrity_ok(&c.key()));
    assert_eq!(r.method(), method::CREATE_PERMISSION);
    // Permissions are per IP: any port of the peer may send.
    assert!(env.peer(rid, sa(PEER), b"x").is_some());
    assert!(env.peer(rid, sa("198.51.100.7:9"), b"x").is_some());
    assert!(env.peer(rid, sa(PEER2), b"x").is_none());
}

#[test]
fn create_permission_several_peers_in_one_request() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let (rid, _) = env.allocate_relay(&mut c);
    env.signed(&mut c, |c| {
        c.req(method::CREATE_PERMISSION)
            .peer(sa(PEER))
            .peer(sa(PEER2))
    })
    .assert_success();
    assert!(env.peer(rid, sa(PEER), b"x").is_some());
    assert!(env.peer(rid, sa(PEER2), b"x").is_some());
}

#[test]
fn create_permission_with_one_denied_peer_installs_none() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let (rid, _) = env.allocate_relay(&mut c);
    env.signed(&mut c, |c| {
        c.req(method::CREATE_PERMISSION)
            .peer(sa(PEER))
            .peer(sa("10.0.0.1:80"))
    })
    .assert_error(403);
    assert!(env.peer(rid, sa(PEER), b"x").is_none());
}

#[test]
fn create_permission_without_peer_address_is_400() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    let r = env.signed(&mut c, |c| c.req(method::CREATE_PERMISSION));
    r.assert_error(400);
    assert!(r.integrity_ok(&c.key()));
}

#[test]
fn create_permission_with_malformed_peer_address_is_400() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    let r = env.signed(&mut c, |c| {
        c.req(method::CREATE_PERMISSION)
            .attr(icebreaker_stun::attr::XOR_PEER_ADDRESS, &[0, 1, 2])
    });
    r.assert_error(400);
}

#[test]
fn create_permission_without_allocation_is_437() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.create_permission(&mut c, sa(PEER)).assert_error(437);
    env.channel_bind(&mut c, 0x4000, sa(PEER)).assert_error(437);
}

#[test]
fn create_permission_for_denied_peers_is_403() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    for bad in [
        "127.0.0.1:9000",          // loopback, no allow rule
        "10.1.2.3:5000",           // RFC 1918
        "192.168.0.10:5000",       // RFC 1918
        "[::ffff:127.0.0.1]:9000", // IPv4-mapped loopback
        "[::ffff:10.1.2.3]:9000",  // IPv4-mapped private
        "0.0.0.0:5000",            // unspecified
        "169.254.169.254:80",      // link-local (cloud metadata)
        "192.0.2.1:3478",          // the server's own service port
        "192.0.2.1:22",            // the server's own address outside the relay range
        "127.0.0.1:3478",          // own service on loopback
    ] {
        let r = env.create_permission(&mut c, sa(bad));
        r.assert_error(403);
        assert!(r.integrity_ok(&c.key()), "{bad}");
        env.channel_bind(&mut c, 0x4000, sa(bad)).assert_error(403);
    }
    assert_eq!(env.server.stats().peer_denied, 20);
}

#[test]
fn allow_rule_opens_loopback_but_never_the_service_port() {
    let mut cfg = config();
    cfg.filter = filter().allow("127.0.0.0/8".parse().expect("net"));
    let mut env = Env::with(cfg);
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    env.create_permission(&mut c, sa("127.0.0.1:9000"))
        .assert_success();
    env.create_permission(&mut c, sa("[::ffff:127.0.0.1]:9000"))
        .assert_success();
    env.create_permission(&mut c, sa("127.0.0.1:3478"))
        .assert_error(403);
    env.create_permission(&mut c, sa("[::ffff:127.0.0.1]:3478"))
        .assert_error(403);
    env.create_permission(&mut c, sa("10.0.0.1:9000"))
        .assert_error(403);
}

#[test]
fn deny_rule_refuses_public_peer() {
    let mut cfg = config();
    cfg.filter = filter().deny("198.51.100.0/24".parse().expect("net"));
    let mut env = Env::with(cfg);
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    env.create_permission(&mut c, sa(PEER)).assert_error(403);
    // Send indications to a denied peer are dropped as well.
    assert!(env.raw(c.tuple, &send_indication(sa(PEER), b"x")).is_none());
}

#[test]
fn relaying_between_two_allocations_on_our_relay_range_needs_no_allow_rule() {
    // Default filter: loopback is refused, except our own relay range.
    let mut env = Env::new();
    let mut a = Client::alice("203.0.113.50:40000");
    let mut b = Client::bob("203.0.113.60:40000");
    let (ra, addr_a) = env.allocate_relay(&mut a);
    let (rb, addr_b) = env.allocate_relay(&mut b);
    assert!(addr_a.ip().is_loopback() && addr_b.ip().is_loopback());
    env.create_permission(&mut a, addr_b).assert_success();
    env.create_permission(&mut b, addr_a).assert_success();
    env.channel_bind(&mut a, 0x4000, addr_b).assert_success();
    // a -> b via ChannelData.
    match env.raw(a.tuple, &channel_data(0x4000, b"hello b")) {
        Out::Forward { relay, peer, data } => {
            assert_eq!((relay, peer), (ra, addr_b));
            assert_eq!(data, b"hello b");
        }
        o => panic!("{o:?}"),
    }
    // The I/O layer sends it from addr_a to addr_b; it arrives on b's relay.
    let (to, bytes) = env.peer(rb, addr_a, b"hello b").expect("delivered to b");
    assert_eq!(to, b.tuple);
    let m = icebreaker_stun::Message::parse(&bytes).expect("Data indication");
    assert_eq!(
        m.xor_peer_addresses().next().map(|r| r.expect("addr")),
        Some(addr_a)
    );
    assert_eq!(m.data(), Some(&b"hello b"[..]));
    // b -> a via Send indication, delivered to a as ChannelData (a bound a channel to b).
    match env.raw(b.tuple, &send_indication(addr_a, b"hi a")) {
        Out::Forward { relay, peer, .. } => assert_eq!((relay, peer), (rb, addr_a)),
        o => panic!("{o:?}"),
    }
    let (to, bytes) = env.peer(ra, addr_b, b"hi a").expect("delivered to a");
    assert_eq!(to, a.tuple);
    assert_eq!(bytes, channel_data(0x4000, b"hi a"));
    // A loopback port outside the relay range is still refused.
    env.create_permission(&mut a, sa("127.0.0.1:22"))
        .assert_error(403);
}

#[test]
fn data_to_a_relay_address_stops_when_its_allocation_ends() {
    // The channel and permission outlive b's allocation; the relay port behind them is then an
    // ordinary loopback port, which the default filter refuses.
    let mut env = Env::new();
    let mut a = Client::alice("203.0.113.50:40000");
    let mut b = Client::bob("203.0.113.60:40000");
    env.allocate(&mut a);
    let (_, addr_b) = env.allocate_relay(&mut b);
    env.channel_bind(&mut a, 0x4000, addr_b).assert_success();
    assert!(matches!(
        env.raw(a.tuple, &channel_data(0x4000, b"x")),
        Out::Forward { .. }
    ));
    env.refresh(&mut b, Some(0)).assert_success();
    let denied = env.server.stats().peer_denied;
    assert!(env.raw(a.tuple, &channel_data(0x4000, b"x")).is_none());
    assert!(env.raw(a.tuple, &send_indication(addr_b, b"x")).is_none());
    assert_eq!(env.server.stats().peer_denied, denied + 2);
}

#[test]
fn relay_range_is_not_open_without_relay_configuration() {
    let mut cfg = config();
    cfg.filter = PeerFilter::new();
    let mut env = Env::with(cfg);
    let mut a = Client::alice("203.0.113.50:40000");
    let mut b = Client::bob("203.0.113.60:40000");
    env.allocate(&mut a);
    let (_, addr_b) = env.allocate_relay(&mut b);
    env.create_permission(&mut a, addr_b).assert_error(403);
}

#[test]
fn permission_expires_after_300_seconds() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.signed(&mut c, |c| c.allocate_req().lifetime(3600))
        .assert_success();
    let rid = env.server.relays_of(&c.tuple).next().expect("relay").0;
    env.create_permission(&mut c, sa(PEER)).assert_success();
    env.tick(299);
    assert!(env.peer(rid, sa(PEER), b"x").is_some());
    assert!(matches!(
        env.raw(c.tuple, &send_indication(sa(PEER), b"x")),
        Out::Forward { .. }
    ));
    assert_eq!(env.server.stats().permissions, 1);
    env.tick(1);
    let before = env.server.stats().dropped_no_permission;
    assert!(
        env.peer(rid, sa(PEER), b"x").is_none(),
        "data from the peer dropped"
    );
    assert!(env.raw(c.tuple, &send_indication(sa(PEER), b"x")).is_none());
    assert_eq!(env.server.stats().dropped_no_permission, before + 2);
    assert_eq!(env.server.stats().permissions, 0);
    assert_eq!(env.server.allocation_count(), 1);
}

#[test]
fn permission_is_refreshed_by_a_second_create_permission() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.signed(&mut c, |c| c.allocate_req().lifetime(3600))
        .assert_success();
    let rid = env.server.relays_of(&c.tuple).next().expect("relay").0;
    env.create_permission(&mut c, sa(PEER)).assert_success();
    env.tick(200);
    env.create_permission(&mut c, sa("198.51.100.7:1"))
        .assert_success();
    env.tick(250); // 450 s after the first, 250 after the refresh
    assert!(env.peer(rid, sa(PEER), b"x").is_some());
    assert_eq!(env.server.stats().permissions, 1, "same IP: one permission");
    env.tick(50); // 300 s after the refresh
    assert!(env.peer(rid, sa(PEER), b"x").is_none());
}

#[test]
fn denied_peers_in_every_ipv6_spelling_are_403() {
    // A dual-stack allocation, so that the peer filter (not the family check) answers.
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.signed(&mut c, |c| {
        c.allocate_req()
            .additional_family(icebreaker_stun::Family::V6)
    })
    .assert_success();
    for bad in [
        "[::1]:9000",                  // loopback
        "[::]:5000",                   // unspecified
        "[fe80::1]:9000",              // link-local
        "[fc00::1]:9000",              // unique local
        "[ff02::1]:9000",              // multicast
        "[::ffff:169.254.169.254]:80", // IPv4-mapped metadata address
        "[::127.0.0.1]:9000",          // IPv4-compatible loopback
        "[64:ff9b::7f00:1]:9000",      // NAT64 of 127.0.0.1
        "[64:ff9b::a01:203]:9000",     // NAT64 of 10.1.2.3
        "[2002:7f00:1::1]:9000",       // 6to4 of 127.0.0.1
        "[2002:c0a8:1::1]:9000",       // 6to4 of 192.168.0.1
    ] {
        let r = env.create_permission(&mut c, sa(bad));
        assert_eq!(r.code(), Some(403), "{bad}");
        let r = env.channel_bind(&mut c, 0x4001, sa(bad));
        assert_eq!(r.code(), Some(403), "{bad}");
    }
}
