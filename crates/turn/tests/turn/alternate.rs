//! 300 Try Alternate (RFC 8489 §10, RFC 8656 §7.2): a node that drains or is full sends new
//! allocations to another node of the client's address family and transport, picked by a
//! cluster (`Group::set_alternates`) or configured (`alternate_server`).

use crate::common::*;
use icebreaker_stun::{attr, decode_address, method};
use icebreaker_turn::{Alternates, Stats, Transport};
use std::net::SocketAddr;
use std::sync::Arc;

const ALT4: &str = "192.0.2.50:3478";
const ALT6: &str = "[2001:db8::50]:3478";
const ALT4_TLS: &str = "192.0.2.50:5349";
const ALT6_TLS: &str = "[2001:db8::50]:5349";
const STATIC: &str = "192.0.2.99:3478";

/// Another node with UDP/TCP and TLS listeners on both families.
fn node_b() -> Alternates {
    Alternates {
        tls_name: Some(Arc::from("turn-b.example.org")),
        ..Alternates::from_listeners(&[sa(ALT4), sa(ALT6)], &[sa(ALT4_TLS), sa(ALT6_TLS)])
    }
}

/// Every ALTERNATE-SERVER of an answer, in order (those before MESSAGE-INTEGRITY).
fn alternates(r: &Reply) -> Vec<SocketAddr> {
    r.msg()
        .attributes()
        .take_while(|a| a.typ != attr::MESSAGE_INTEGRITY && a.typ != attr::FINGERPRINT)
        .filter(|a| a.typ == attr::ALTERNATE_SERVER)
        .map(|a| decode_address(a.value).expect("ALTERNATE-SERVER"))
        .collect()
}

fn alternate_domain(r: &Reply) -> Option<String> {
    r.msg()
        .get(attr::ALTERNATE_DOMAIN)
        .map(|a| String::from_utf8(a.value.to_vec()).expect("utf8"))
}

fn refused(env: &Env, label: &str) -> u64 {
    let i = Stats::REFUSALS
        .iter()
        .position(|&l| l == label)
        .expect("known label");
    env.server.stats().refused[i]
}

/// A server holding `max` allocations, all taken.
fn full(max: usize) -> Env {
    let mut cfg = config();
    cfg.max_allocations = max;
    let mut env = Env::with(cfg);
    for i in 0..max {
        env.allocate(&mut Client::alice(&format!("198.51.100.7:{}", 5000 + i)));
    }
    env
}

#[test]
fn a_full_node_sends_new_allocations_to_the_alternate_of_the_clients_family() {
    let mut env = full(1);
    env.server.config().group.set_alternates(node_b());
    // An IPv4 client: the IPv4 alternate first (MUST), the IPv6 one after (SHOULD); signed
    // with the client's key, nothing bound, nothing counted.
    let mut c = Client::bob("203.0.113.60:40000");
    let r = env.signed(&mut c, |c| c.allocate_req());
    r.assert_error(300);
    assert_eq!(alternates(&r), vec![sa(ALT4), sa(ALT6)]);
    assert!(r.integrity_ok(&c.key()), "the 300 is signed");
    assert_eq!(
        alternate_domain(&r),
        None,
        "ALTERNATE-DOMAIN is for TLS only"
    );
    assert_eq!(env.server.allocation_count(), 1);
    assert_eq!(
        env.relays.requests.len(),
        1,
        "no relay bound for the refused one"
    );
    assert_eq!(refused(&env, "capacity"), 1);
    assert_eq!(env.server.stats().errors[0], 1, "300 counted");
    // An IPv6 client: the IPv6 alternate first.
    let mut c6 = Client::bob("[2001:db8::60]:40000");
    let r = env.signed(&mut c6, |c| c.allocate_req());
    r.assert_error(300);
    assert_eq!(alternates(&r), vec![sa(ALT6), sa(ALT4)]);
    // A client on a dual-stack socket (IPv4 in IPv6 form) is an IPv4 client.
    let mut mapped = Client::bob("[::ffff:203.0.113.61]:40000");
    let r = env.signed(&mut mapped, |c| c.allocate_req());
    assert_eq!(alternates(&r), vec![sa(ALT4), sa(ALT6)]);
    // The node still answers everything else, and takes allocations again once there is room.
    let mut first = Client::alice("198.51.100.7:5000");
    env.refresh(&mut first, Some(0)).assert_success();
    env.signed(&mut c, |c| c.allocate_req()).assert_success();
}

#[test]
fn tls_clients_are_sent_to_the_alternates_tls_listener_with_its_name() {
    let mut env = full(1);
    env.server.config().group.set_alternates(node_b());
    let mut tls = Client::new("203.0.113.60:40000", Transport::Tls, "bob", "bob-pw");
    let r = env.signed(&mut tls, |c| c.allocate_req());
    r.assert_error(300);
    assert_eq!(alternates(&r), vec![sa(ALT4_TLS), sa(ALT6_TLS)]);
    assert_eq!(alternate_domain(&r).as_deref(), Some("turn-b.example.org"));
    assert!(r.integrity_ok(&tls.key()));
    // TCP uses the UDP/TCP listener, without a domain.
    let mut tcp = Client::new("203.0.113.61:40000", Transport::Tcp, "bob", "bob-pw");
    let r = env.signed(&mut tcp, |c| c.allocate_req());
    assert_eq!(alternates(&r), vec![sa(ALT4), sa(ALT6)]);
    assert_eq!(alternate_domain(&r), None);
    // An alternate without a TLS listener: TLS clients are not sent to a plain one.
    env.server
        .config()
        .group
        .set_alternates(Alternates::from_listeners(&[sa(ALT4)], &[]));
    env.signed(&mut tls, |c| c.allocate_req()).assert_error(508);
    let r = env.signed(&mut tcp, |c| c.allocate_req());
    assert_eq!(alternates(&r), vec![sa(ALT4)]);
}

#[test]
fn no_alternate_of_the_clients_family_means_508() {
    let mut env = full(1);
    // RFC 8489 §10: the ALTERNATE-SERVER MUST be of the family of the request's source.
    env.server
        .config()
        .group
        .set_alternates(Alternates::from_listeners(&[sa(ALT4)], &[]));
    let mut c6 = Client::bob("[2001:db8::60]:40000");
    let r = env.signed(&mut c6, |c| c.allocate_req());
    r.assert_error(508);
    assert!(alternates(&r).is_empty());
    assert!(r.integrity_ok(&c6.key()));
    let mut c4 = Client::bob("203.0.113.60:40000");
    let r = env.signed(&mut c4, |c| c.allocate_req());
    r.assert_error(300);
    assert_eq!(alternates(&r), vec![sa(ALT4)]);
}

#[test]
fn a_full_node_without_an_alternate_answers_508() {
    let mut env = full(2);
    let mut c = Client::bob("203.0.113.60:40000");
    let r = env.signed(&mut c, |c| c.allocate_req());
    r.assert_error(508);
    assert!(alternates(&r).is_empty());
    assert!(r.integrity_ok(&c.key()));
    assert_eq!(refused(&env, "capacity"), 1);
    // Set, then cleared: 508 again.
    let group = env.server.config().group.clone();
    group.set_alternates(node_b());
    env.signed(&mut c, |c| c.allocate_req()).assert_error(300);
    group.clear_alternates();
    assert!(group.alternates().is_none());
    env.signed(&mut c, |c| c.allocate_req()).assert_error(508);
    // An empty set clears too.
    group.set_alternates(node_b());
    group.set_alternates(Alternates::default());
    env.signed(&mut c, |c| c.allocate_req()).assert_error(508);
}

#[test]
fn the_per_user_quota_stays_486_whatever_the_alternates() {
    let mut cfg = config();
    cfg.max_allocations_per_user = 1;
    cfg.max_allocations = 1;
    let mut env = Env::with(cfg);
    env.server.config().group.set_alternates(node_b());
    env.allocate(&mut Client::alice("198.51.100.7:5000"));
    // Alice is at her quota (and the node full): another node would not lift a per-user
    // quota, so she is not sent there.
    let mut again = Client::alice("198.51.100.7:5001");
    let r = env.signed(&mut again, |c| c.allocate_req());
    r.assert_error(486);
    assert!(alternates(&r).is_empty());
    assert_eq!(refused(&env, "user_quota"), 1);
    // Bob only meets the full node.
    let mut bob = Client::bob("203.0.113.60:40000");
    env.signed(&mut bob, |c| c.allocate_req()).assert_error(300);
}

#[test]
fn relay_ports_exhausted_is_full_too() {
    let mut env = Env::new();
    env.server.config().group.set_alternates(node_b());
    env.relays.exhausted = true;
    let mut c = Client::alice("203.0.113.60:40000");
    let r = env.signed(&mut c, |c| c.allocate_req());
    r.assert_error(300);
    assert_eq!(alternates(&r), vec![sa(ALT4), sa(ALT6)]);
    assert_eq!(
        env.server.config().group.allocations(),
        0,
        "the quota is given back"
    );
    // A RESERVATION-TOKEN only this node knows is not sent elsewhere.
    env.relays.exhausted = false;
    env.signed(&mut c, |c| c.allocate_req().token([7; 8]))
        .assert_error(508);
}

#[test]
fn a_draining_node_sends_signed_300s_to_the_dynamic_alternate_over_the_static_one() {
    let mut cfg = config();
    cfg.alternate_server = Some(sa(STATIC));
    let mut env = Env::with(cfg.clone());
    let mut old = Client::alice("198.51.100.7:5000");
    env.allocate(&mut old);
    cfg.group.set_alternates(node_b());
    cfg.group.set_draining(true);
    // The first, unauthenticated Allocate gets the usual challenge, no redirection.
    let mut c = Client::bob("203.0.113.60:40000");
    let r = env.challenge(&mut c);
    assert!(alternates(&r).is_empty());
    assert_eq!(refused(&env, "draining"), 0);
    // The authenticated one: 300 to the cluster's alternate, signed.
    let r = env.call(c.tuple, &c.allocate_req());
    r.assert_error(300);
    assert_eq!(alternates(&r), vec![sa(ALT4), sa(ALT6)]);
    assert!(r.integrity_ok(&c.key()));
    assert_eq!(refused(&env, "draining"), 1);
    assert_eq!(env.server.allocation_count(), 1);
    // Wrong credentials are not redirected.
    let mut wrong = Client::udp("203.0.113.61:40000", "bob", "not-bobs");
    env.challenge(&mut wrong);
    let r = env.call(wrong.tuple, &wrong.allocate_req());
    r.assert_error(401);
    assert!(alternates(&r).is_empty());
    // Cleared: back to the static alternate.
    cfg.group.clear_alternates();
    let r = env.call(c.tuple, &c.allocate_req());
    r.assert_error(300);
    assert_eq!(alternates(&r), vec![sa(STATIC)]);
    // The static one is IPv4: an IPv6 client has none, and is refused before authentication.
    let c6 = Client::bob("[2001:db8::60]:40000");
    let r = env.call(c6.tuple, &Req::request(method::ALLOCATE).udp());
    r.assert_error(508);
    assert!(!r.has(attr::NONCE));
    // The existing allocation goes on.
    env.refresh(&mut old, Some(600)).assert_success();
}

#[test]
fn alternates_set_once_hold_for_every_shard() {
    let mut cfg = config();
    cfg.max_allocations = 1;
    let mut a = Env::with(cfg.clone());
    let mut b = Env::with(cfg.clone());
    b.relays = FakeRelays::second_shard();
    b.now = a.now;
    cfg.group.set_alternates(node_b());
    a.allocate(&mut Client::alice("198.51.100.7:5000"));
    let mut c = Client::bob("203.0.113.60:40000");
    let r = b.signed(&mut c, |c| c.allocate_req());
    r.assert_error(300);
    assert_eq!(alternates(&r), vec![sa(ALT4), sa(ALT6)]);
}

#[test]
fn alternates_from_listeners_skip_what_a_client_cannot_reach() {
    let alt = Alternates::from_listeners(
        &[
            sa("0.0.0.0:3478"),
            sa("192.0.2.50:0"),
            sa("[::ffff:192.0.2.51]:3478"),
            sa("192.0.2.52:3478"),
            sa("[::]:3478"),
            sa("[2001:db8::51]:3478"),
        ],
        &[],
    );
    assert_eq!(alt.v4, Some(sa("192.0.2.51:3478")));
    assert_eq!(alt.v6, Some(sa("[2001:db8::51]:3478")));
    assert_eq!((alt.tls_v4, alt.tls_v6), (None, None));
    assert!(!alt.is_empty());
    assert!(Alternates::from_listeners(&[sa("0.0.0.0:3478")], &[]).is_empty());
    let unusable = Alternates {
        v4: Some(sa("0.0.0.0:3478")),
        tls_v6: Some(sa("[2001:db8::1]:0")),
        ..Alternates::default()
    };
    assert!(unusable.is_empty(), "set, but nowhere to send anyone");
    // Addresses set by hand in the wrong slot are not used for the wrong family.
    let odd = Alternates {
        v4: Some(sa(ALT6)),
        ..Alternates::default()
    };
    assert_eq!(odd.pick(Transport::Udp, true), None);
    assert_eq!(odd.pick(Transport::Udp, false), None);
}
