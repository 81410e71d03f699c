//! Allocate (RFC 8656 §7.1-7.3).

use crate::common::*;
use icebreaker_stun::{attr, method};
use icebreaker_turn::{Family, Transport};

#[test]
fn allocate_success_carries_relayed_mapped_lifetime_and_valid_integrity() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.allocate(&mut c);
    let relayed = r.relayed();
    assert_eq!(relayed.len(), 1);
    assert_eq!(relayed[0].ip(), ip("127.0.0.1"));
    assert!((RELAY_LO..=RELAY_HI).contains(&relayed[0].port()));
    assert_eq!(r.mapped(), Some(c.tuple.client));
    assert_eq!(r.lifetime(), Some(600));
    assert!(
        r.integrity_ok(&c.key()),
        "MESSAGE-INTEGRITY valid with the user's key"
    );
    assert!(!r.integrity_ok(&[0; 16]));
    assert_eq!(r.msg().software().expect("SOFTWARE"), Some(SOFTWARE));
    assert!(r.reservation_token().is_none());
    // State: one allocation, one relay bound for IPv4 without EVEN-PORT.
    assert_eq!(env.server.allocation_count(), 1);
    assert_eq!(env.server.stats().allocations, 1);
    assert_eq!(env.server.stats().allocations_created, 1);
    assert_eq!(env.relays.requests.len(), 1);
    let req = env.relays.requests[0];
    assert_eq!(req.family, Family::V4);
    assert!(!req.even_port && !req.reserve_next && !req.dont_fragment);
    let relays: Vec<_> = env.server.relays_of(&c.tuple).collect();
    assert_eq!(relays.len(), 1);
    assert_eq!(relays[0].1, relayed[0]);
    assert_eq!(env.relays.addr_of(relays[0].0), Some(relayed[0]));
}

#[test]
fn allocate_over_tcp_gets_udp_relay() {
    let mut env = Env::new();
    let mut c = Client::new("203.0.113.50:40000", Transport::Tcp, "alice", "alice-pw");
    let r = env.allocate(&mut c);
    assert_eq!(r.relayed().len(), 1);
    assert_eq!(r.mapped(), Some(c.tuple.client));
}

#[test]
fn allocate_lifetime_default_requested_short_and_capped() {
    let mut env = Env::new();
    for (i, (asked, granted)) in [
        (None, 600),
        (Some(1200), 1200),
        (Some(30), 600),
        (Some(0), 600),
        (Some(600), 600),
        (Some(3600), 3600),
        (Some(3601), 3600),
        (Some(u32::MAX), 3600),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = Client::alice(&format!("203.0.113.50:{}", 40000 + i));
        let r = env.signed(&mut c, |c| match asked {
            Some(l) => c.allocate_req().lifetime(l),
            None => c.allocate_req(),
        });
        r.assert_success();
        assert_eq!(r.lifetime(), Some(granted), "asked {asked:?}");
    }
}

#[test]
fn allocate_dont_fragment_is_passed_to_the_relay_provider() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.signed(&mut c, |c| c.allocate_req().attr(attr::DONT_FRAGMENT, &[]))
        .assert_success();
    assert!(env.relays.requests[0].dont_fragment);
}

#[test]
fn allocate_retransmission_gets_identical_success_and_no_second_relay() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.challenge(&mut c);
    let req = c.allocate_req().lifetime(1200);
    let first = env.call(c.tuple, &req);
    first.assert_success();
    let second = env.call(c.tuple, &req);
    second.assert_success();
    assert_eq!(first.0, second.0, "byte-identical retransmitted answer");
    assert_eq!(env.relays.requests.len(), 1, "no second relay bound");
    assert_eq!(env.relays.live.len(), 1);
    assert_eq!(env.server.allocation_count(), 1);
    assert_eq!(env.server.stats().allocations_created, 1);
    // Later retransmission: same relayed address, remaining lifetime.
    env.advance(5);
    let third = env.call(c.tuple, &req);
    third.assert_success();
    assert_eq!(third.relayed(), first.relayed());
    assert_eq!(third.lifetime(), Some(1195));
    assert!(third.integrity_ok(&c.key()));
    assert_eq!(env.relays.requests.len(), 1);
}

#[test]
fn allocate_again_on_same_five_tuple_is_437() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    let r = env.call(c.tuple, &c.allocate_req());
    r.assert_error(437);
    assert!(
        r.integrity_ok(&c.key()),
        "error after authentication is signed"
    );
    assert_eq!(env.relays.requests.len(), 1);
    assert_eq!(env.server.allocation_count(), 1);
    assert_eq!(env.server.stats().errors[5], 1, "437 counted");
}

#[test]
fn allocate_same_client_other_server_address_is_a_new_allocation() {
    let mut env = Env::new();
    let mut a = Client::alice("203.0.113.50:40000");
    env.allocate(&mut a);
    let mut b = a.clone();
    b.tuple.server = sa("192.0.2.1:3479");
    env.signed(&mut b, |c| c.allocate_req()).assert_success();
    let mut t = a.clone();
    t.tuple.transport = Transport::Tcp;
    env.signed(&mut t, |c| c.allocate_req()).assert_success();
    assert_eq!(env.server.allocation_count(), 3);
}

#[test]
fn allocate_without_requested_transport_is_400() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut c, |c| c.req(method::ALLOCATE));
    r.assert_error(400);
    assert!(r.integrity_ok(&c.key()));
    assert_eq!(env.server.allocation_count(), 0);
}

#[test]
fn allocate_tcp_transport_is_442() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut c, |c| c.req(method::ALLOCATE).transport(6));
    r.assert_error(442);
    assert!(r.integrity_ok(&c.key()));
    assert_eq!(env.server.allocation_count(), 0);
    assert!(env.relays.requests.is_empty());
}

#[test]
fn allocate_malformed_requested_transport_is_400() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut c, |c| {
        c.req(method::ALLOCATE)
            .attr(attr::REQUESTED_TRANSPORT, &[17])
    });
    r.assert_error(400);
}

#[test]
fn allocate_unknown_comprehension_required_attribute_is_420() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut c, |c| {
        c.allocate_req()
            .attr(0x0031, &[1, 2, 3, 4])
            .attr(0x7F00, &[9])
            .attr(0x0031, &[5])
    });
    r.assert_error(420);
    assert_eq!(r.unknown_attributes(), vec![0x0031, 0x7F00]);
    assert_eq!(env.server.allocation_count(), 0);
    assert!(env.relays.requests.is_empty());
}

#[test]
fn allocate_unknown_comprehension_optional_attribute_is_ignored() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut c, |c| c.allocate_req().attr(0x8031, &[1, 2, 3]));
    r.assert_success();
    assert!(r.unknown_attributes().is_empty());
    assert_eq!(env.server.allocation_count(), 1);
}

#[test]
fn allocate_with_sha256_integrity_is_answered_with_sha256() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.challenge(&mut c);
    let mut buf = vec![0u8; 512];
    let tid = new_tid();
    let typ = icebreaker_stun::MessageType::new(method::ALLOCATE, icebreaker_stun::Class::Request);
    let mut w = icebreaker_stun::MessageWriter::new(&mut buf, typ, &tid).expect("w");
    w.requested_transport(17).expect("rt");
    w.attr(attr::USERNAME, b"alice").expect("u");
    w.attr(attr::REALM, REALM.as_bytes()).expect("r");
    w.attr(attr::NONCE, c.nonce.as_deref().expect("nonce"))
        .expect("n");
    w.message_integrity_sha256(&c.key()).expect("mi");
    let n = w.finish();
    let r = env.raw(c.tuple, &buf[..n]).reply();
    r.assert_success();
    assert!(r.has(attr::MESSAGE_INTEGRITY_SHA256));
    assert!(!r.has(attr::MESSAGE_INTEGRITY));
    assert_eq!(
        r.msg().verify_integrity(&c.key()),
        Ok(icebreaker_stun::IntegrityKind::Sha256)
    );
}

#[test]
fn unknown_method_request_is_400() {
    let mut env = Env::new();
    let c = Client::alice("203.0.113.50:40000");
    let r = env.call(c.tuple, &Req::request(0x0033));
    r.assert_error(400);
    assert_eq!(env.server.stats().requests[5], 1);
}

#[test]
fn duplicate_attributes_the_first_one_counts() {
    // RFC 8489 §14: a repeated attribute is ignored after its first occurrence.
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.60:40000");
    env.challenge(&mut c);
    let r = env.call(
        c.tuple,
        &c.req(method::ALLOCATE)
            .transport(17)
            .transport(6)
            .lifetime(300)
            .lifetime(3600),
    );
    r.assert_success();
    assert_eq!(
        r.lifetime(),
        Some(600),
        "first LIFETIME (300, raised to the default)"
    );
    let mut d = Client::alice("203.0.113.61:40000");
    env.challenge(&mut d);
    env.call(d.tuple, &d.req(method::ALLOCATE).transport(6).transport(17))
        .assert_error(442);
}
