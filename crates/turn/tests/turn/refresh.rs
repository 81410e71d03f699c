//! Refresh (RFC 8656 §7.4-7.5).

use crate::common::*;
use icebreaker_stun::method;

#[test]
fn refresh_extends_the_lifetime() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    env.tick(500);
    let r = env.refresh(&mut c, Some(1200));
    r.assert_success();
    assert_eq!(r.lifetime(), Some(1200));
    assert!(r.integrity_ok(&c.key()));
    env.tick(1199);
    assert_eq!(
        env.server.allocation_count(),
        1,
        "alive 1199 s after the refresh"
    );
    env.tick(1);
    assert_eq!(env.server.allocation_count(), 0);
}

#[test]
fn refresh_lifetime_rules_match_allocate() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    for (asked, granted) in [
        (None, 600),
        (Some(30), 600),
        (Some(9999), 3600),
        (Some(700), 700),
    ] {
        let r = env.refresh(&mut c, asked);
        r.assert_success();
        assert_eq!(r.lifetime(), Some(granted), "asked {asked:?}");
    }
    assert_eq!(env.server.stats().requests[2], 4);
}

#[test]
fn refresh_lifetime_zero_deletes_the_allocation_and_releases_relays() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let (rid, _) = env.allocate_relay(&mut c);
    env.create_permission(&mut c, sa(PEER)).assert_success();
    let r = env.refresh(&mut c, Some(0));
    r.assert_success();
    assert_eq!(r.lifetime(), Some(0));
    assert!(r.integrity_ok(&c.key()));
    assert_eq!(env.server.allocation_count(), 0);
    assert_eq!(env.server.stats().allocations, 0);
    assert_eq!(env.relays.released, vec![rid]);
    assert!(env.relays.live.is_empty());
    assert!(env.peer(rid, sa(PEER), b"late").is_none());
    // A second delete finds nothing.
    env.refresh(&mut c, Some(0)).assert_error(437);
    // And a new allocation on the same 5-tuple is possible.
    env.allocate(&mut c);
}

#[test]
fn refresh_without_allocation_is_437() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.refresh(&mut c, Some(600));
    r.assert_error(437);
    assert_eq!(env.server.allocation_count(), 0);
}

#[test]
fn refresh_from_another_five_tuple_is_437() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    let mut other = c.clone();
    other.tuple.client = sa("203.0.113.50:40001");
    env.refresh(&mut other, Some(0)).assert_error(437);
    assert_eq!(env.server.allocation_count(), 1);
}

#[test]
fn refresh_with_a_different_valid_username_is_441() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    // Bob, from the same 5-tuple, with valid credentials of his own.
    let mut bob = Client::bob("203.0.113.50:40000");
    bob.nonce = c.nonce.clone();
    let r = env.call(bob.tuple, &bob.req(method::REFRESH).lifetime(0));
    r.assert_error(441);
    assert_eq!(env.server.allocation_count(), 1);
    assert_eq!(env.server.stats().errors[8], 1, "441 counted");
}

#[test]
fn refresh_with_wrong_password_is_401() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    let mut bad = c.clone();
    bad.password = "nope".into();
    let r = env.call(bad.tuple, &bad.req(method::REFRESH).lifetime(0));
    r.assert_error(401);
    assert!(r.nonce().is_some());
    assert_eq!(env.server.allocation_count(), 1);
}

#[test]
fn refresh_without_integrity_is_401_and_changes_nothing() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    let r = env.call(c.tuple, &Req::request(method::REFRESH).lifetime(0));
    r.assert_error(401);
    assert_eq!(env.server.allocation_count(), 1);
}

#[test]
fn refresh_with_stale_nonce_is_438() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.signed(&mut c, |c| c.allocate_req().lifetime(3600))
        .assert_success();
    env.advance(600);
    let r = env.call(c.tuple, &c.req(method::REFRESH));
    r.assert_error(438);
    c.nonce = r.nonce();
    env.call(c.tuple, &c.req(method::REFRESH)).assert_success();
}
