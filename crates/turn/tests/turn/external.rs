//! `--external-ip PUBLIC/PRIVATE`: advertised public relay addresses (NAT'd deployments).

use crate::common::*;
use icebreaker_stun::Message;
use icebreaker_turn::ExternalMap;

fn external_env() -> Env {
    let mut cfg = config();
    let mut map = ExternalMap::default();
    map.add(ip("203.0.113.9"), Some(ip("127.0.0.1")));
    cfg.external = map;
    Env::with(cfg)
}

#[test]
fn relayed_address_is_the_public_one() {
    let mut env = external_env();
    let mut c = Client::alice("198.51.100.50:40000");
    let r = env.allocate(&mut c);
    let relayed = r.relayed();
    let local = env.server.relays_of(&c.tuple).next().expect("relay").1;
    assert_eq!(relayed, vec![sa(&format!("203.0.113.9:{}", local.port()))]);
    assert_eq!(r.mapped(), Some(c.tuple.client), "mapped is not translated");
}

#[test]
fn second_allocation_reaches_the_first_via_its_public_address() {
    let mut env = external_env();
    let mut a = Client::alice("198.51.100.50:40000");
    let mut b = Client::bob("198.51.100.60:40000");
    let pub_a = env.allocate(&mut a).relayed()[0];
    let pub_b = env.allocate(&mut b).relayed()[0];
    let (ra, priv_a) = env.server.relays_of(&a.tuple).next().expect("relay a");
    let (rb, priv_b) = env.server.relays_of(&b.tuple).next().expect("relay b");
    assert_eq!(pub_a.ip(), ip("203.0.113.9"));
    assert_eq!(priv_a.ip(), ip("127.0.0.1"));

    // b names a's PUBLIC address; the filter knows it is our relay range: allowed.
    env.create_permission(&mut b, pub_a).assert_success();
    env.channel_bind(&mut b, 0x4444, pub_a).assert_success();
    // a permits b's public address.
    env.create_permission(&mut a, pub_b).assert_success();

    // b -> a: forwarded to a's PRIVATE address (hairpin on the host).
    match env.raw(b.tuple, &channel_data(0x4444, b"to a")) {
        Out::Forward { relay, peer, data } => {
            assert_eq!(relay, rb);
            assert_eq!(peer, priv_a);
            assert_eq!(data, b"to a");
        }
        o => panic!("{o:?}"),
    }
    match env.raw(b.tuple, &send_indication(pub_a, b"send to a")) {
        Out::Forward { relay, peer, .. } => assert_eq!((relay, peer), (rb, priv_a)),
        o => panic!("{o:?}"),
    }
    // It arrives at a's relay from b's private address; matched against a's permission for
    // b's public address and reported with the public address.
    let (to, bytes) = env.peer(ra, priv_b, b"to a").expect("delivered to a");
    assert_eq!(to, a.tuple);
    let m = Message::parse(&bytes).expect("Data indication");
    assert_eq!(
        m.xor_peer_addresses().next().map(|r| r.expect("addr")),
        Some(pub_b)
    );
    assert_eq!(m.data(), Some(&b"to a"[..]));

    // a -> b: arrives at b's relay from a's private address, b has a channel for pub_a.
    let (to, bytes) = env.peer(rb, priv_a, b"to b").expect("delivered to b");
    assert_eq!(to, b.tuple);
    assert_eq!(bytes, channel_data(0x4444, b"to b"));
}

#[test]
fn public_address_outside_the_relay_range_is_not_translated() {
    let mut env = external_env();
    let mut a = Client::alice("198.51.100.50:40000");
    env.allocate(&mut a);
    // 203.0.113.9:22 is not one of our relays: no hairpin to 127.0.0.1:22.
    env.create_permission(&mut a, sa("203.0.113.9:22"))
        .assert_success();
    match env.raw(a.tuple, &send_indication(sa("203.0.113.9:22"), b"x")) {
        Out::Forward { peer, .. } => assert_eq!(peer, sa("203.0.113.9:22")),
        o => panic!("{o:?}"),
    }
}

#[test]
fn external_map_without_private_address_covers_the_family() {
    let mut cfg = config();
    let mut map = ExternalMap::default();
    map.add(ip("203.0.113.9"), None);
    cfg.external = map;
    let mut env = Env::with(cfg);
    let mut a = Client::alice("198.51.100.50:40000");
    let mut b = Client::bob("198.51.100.60:40000");
    let pub_a = env.allocate(&mut a).relayed()[0];
    env.allocate(&mut b);
    let priv_a = env.server.relays_of(&a.tuple).next().expect("relay").1;
    assert_eq!(pub_a, sa(&format!("203.0.113.9:{}", priv_a.port())));
    env.create_permission(&mut b, pub_a).assert_success();
    match env.raw(b.tuple, &send_indication(pub_a, b"x")) {
        Out::Forward { peer, .. } => assert_eq!(peer, priv_a),
        o => panic!("{o:?}"),
    }
}
