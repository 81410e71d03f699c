//! Address families (RFC 6156 / RFC 8656 §7.2, dual allocations).

use crate::common::*;
use icebreaker_stun::{attr, method};
use icebreaker_turn::Family;

/// ADDRESS-ERROR-CODE: (family, code, reason).
fn address_error(r: &Reply) -> Option<(u8, u16, String)> {
    let m = r.msg();
    let a = m.get(attr::ADDRESS_ERROR_CODE)?;
    let v = a.value;
    assert!(v.len() >= 4);
    let code = u16::from(v[2] & 7) * 100 + u16::from(v[3]);
    Some((
        v[0],
        code,
        String::from_utf8(v[4..].to_vec()).expect("utf8"),
    ))
}

#[test]
fn requested_family_ipv6_gives_ipv6_relay() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut c, |c| c.allocate_req().family(Family::V6));
    r.assert_success();
    let relayed = r.relayed();
    assert_eq!(relayed.len(), 1);
    assert_eq!(relayed[0].ip(), ip("::1"));
    assert_eq!(env.relays.requests[0].family, Family::V6);
    assert_eq!(
        r.mapped(),
        Some(c.tuple.client),
        "mapped stays the IPv4 client"
    );
}

#[test]
fn requested_family_ipv4_explicitly() {
    let mut env = Env::new();
    let mut c = Client::alice("[2001:db8::50]:40000");
    let r = env.signed(&mut c, |c| c.allocate_req().family(Family::V4));
    r.assert_success();
    assert!(r.relayed()[0].is_ipv4());
}

#[test]
fn requested_family_ipv6_refused_by_provider_is_440() {
    let mut env = Env::new();
    env.relays.refuse_v6 = true;
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut c, |c| c.allocate_req().family(Family::V6));
    r.assert_error(440);
    assert!(r.integrity_ok(&c.key()));
    assert_eq!(env.server.allocation_count(), 0);
}

#[test]
fn requested_family_unknown_value_is_440() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut c, |c| {
        c.allocate_req()
            .attr(attr::REQUESTED_ADDRESS_FAMILY, &[0x03, 0, 0, 0])
    });
    r.assert_error(440);
}

#[test]
fn additional_family_ipv6_gives_two_relays() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut c, |c| c.allocate_req().additional_family(Family::V6));
    r.assert_success();
    let relayed = r.relayed();
    assert_eq!(relayed.len(), 2);
    assert!(relayed[0].is_ipv4());
    assert!(relayed[1].is_ipv6());
    assert!(address_error(&r).is_none());
    assert_eq!(env.server.relays_of(&c.tuple).count(), 2);
    assert_eq!(env.relays.live.len(), 2);
    // Both families usable: permissions for an IPv4 and an IPv6 peer.
    env.create_permission(&mut c, sa(PEER)).assert_success();
    env.create_permission(&mut c, sa(PEER6)).assert_success();
    // Send goes out of the relay of the peer's family.
    let relays: Vec<_> = env.server.relays_of(&c.tuple).collect();
    let v4 = relays.iter().find(|r| r.1.is_ipv4()).expect("v4").0;
    let v6 = relays.iter().find(|r| r.1.is_ipv6()).expect("v6").0;
    match env.raw(c.tuple, &send_indication(sa(PEER6), b"six")) {
        Out::Forward { relay, peer, data } => {
            assert_eq!((relay, peer, data.as_slice()), (v6, sa(PEER6), &b"six"[..]));
        }
        o => panic!("{o:?}"),
    }
    match env.raw(c.tuple, &send_indication(sa(PEER), b"four")) {
        Out::Forward { relay, .. } => assert_eq!(relay, v4),
        o => panic!("{o:?}"),
    }
    // Deleting releases both.
    env.refresh(&mut c, Some(0)).assert_success();
    assert!(env.relays.live.is_empty());
    assert_eq!(env.relays.released.len(), 2);
}

#[test]
fn additional_family_refused_gives_one_relay_and_address_error_code_440() {
    let mut env = Env::new();
    env.relays.refuse_v6 = true;
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut c, |c| c.allocate_req().additional_family(Family::V6));
    r.assert_success();
    let relayed = r.relayed();
    assert_eq!(relayed.len(), 1);
    assert!(relayed[0].is_ipv4());
    let (family, code, _reason) = address_error(&r).expect("ADDRESS-ERROR-CODE");
    assert_eq!(family, 0x02);
    assert_eq!(code, 440);
    assert!(r.integrity_ok(&c.key()));
    env.create_permission(&mut c, sa(PEER6)).assert_error(443);
}

#[test]
fn requested_and_additional_family_together_is_400() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut c, |c| {
        c.allocate_req()
            .family(Family::V4)
            .additional_family(Family::V6)
    });
    r.assert_error(400);
    assert_eq!(env.server.allocation_count(), 0);
    assert!(env.relays.requests.is_empty());
}

#[test]
fn additional_family_ipv4_is_400() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut c, |c| c.allocate_req().additional_family(Family::V4));
    r.assert_error(400);
}

#[test]
fn additional_family_with_even_port_r_bit_is_400() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut c, |c| {
        c.allocate_req()
            .even_port(true)
            .additional_family(Family::V6)
    });
    r.assert_error(400);
}

#[test]
fn create_permission_ipv6_peer_on_ipv4_allocation_is_443() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    let r = env.create_permission(&mut c, sa(PEER6));
    r.assert_error(443);
    assert!(r.integrity_ok(&c.key()));
    let r = env.channel_bind(&mut c, 0x4000, sa(PEER6));
    r.assert_error(443);
}

#[test]
fn create_permission_ipv4_peer_on_ipv6_allocation_is_443() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.signed(&mut c, |c| c.allocate_req().family(Family::V6))
        .assert_success();
    env.create_permission(&mut c, sa(PEER)).assert_error(443);
    env.create_permission(&mut c, sa(PEER6)).assert_success();
}

#[test]
fn refresh_with_requested_family_not_allocated_is_443() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    let r = env.signed(&mut c, |c| c.req(method::REFRESH).family(Family::V6));
    r.assert_error(443);
    env.signed(&mut c, |c| c.req(method::REFRESH).family(Family::V4))
        .assert_success();
}

#[test]
fn additional_family_with_even_port_without_r_bit_is_allowed() {
    // RFC 8656 §7.2 item 8: only EVEN-PORT with the R bit set conflicts with
    // ADDITIONAL-ADDRESS-FAMILY.
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut c, |c| {
        c.allocate_req()
            .even_port(false)
            .additional_family(Family::V6)
    });
    r.assert_success();
    let relayed = r.relayed();
    assert_eq!(relayed.len(), 2);
    assert_eq!(relayed[0].port() % 2, 0, "the IPv4 relay port is even");
    assert!(r.reservation_token().is_none());
}

#[test]
fn dual_allocation_retransmission_repeats_the_address_error_code() {
    let mut env = Env::new();
    env.relays.refuse_v6 = true;
    let mut c = Client::alice("203.0.113.50:40000");
    env.challenge(&mut c);
    let req = c.allocate_req().additional_family(Family::V6);
    let first = env.call(c.tuple, &req);
    first.assert_success();
    assert!(address_error(&first).is_some());
    let again = env.call(c.tuple, &req);
    again.assert_success();
    assert_eq!(
        again.0, first.0,
        "identical answer, ADDRESS-ERROR-CODE included"
    );
    assert_eq!(
        env.relays.requests.len(),
        2,
        "no new binds for the retransmission"
    );
}
