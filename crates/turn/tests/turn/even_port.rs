//! EVEN-PORT and RESERVATION-TOKEN (RFC 8656 §7.2, §14.6, §14.9).

use crate::common::*;
use icebreaker_turn::Family;

#[test]
fn even_port_gives_an_even_port() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut c, |c| c.allocate_req().even_port(false));
    r.assert_success();
    let port = r.relayed()[0].port();
    assert_eq!(port % 2, 0, "port {port}");
    assert!(r.reservation_token().is_none());
    let req = env.relays.requests[0];
    assert!(req.even_port && !req.reserve_next);
    assert_eq!(env.relays.live.len(), 1);
}

#[test]
fn even_port_with_r_bit_gives_reservation_token() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut c, |c| c.allocate_req().even_port(true));
    r.assert_success();
    assert_eq!(r.relayed()[0].port() % 2, 0);
    let token = r.reservation_token().expect("RESERVATION-TOKEN");
    assert_ne!(token, [0; 8]);
    assert!(r.integrity_ok(&c.key()));
    let req = env.relays.requests[0];
    assert!(req.even_port && req.reserve_next);
    assert_eq!(env.relays.live.len(), 2, "the next port is held");
}

#[test]
fn reservation_token_gets_the_reserved_port() {
    let mut env = Env::new();
    let mut a = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut a, |c| c.allocate_req().even_port(true));
    let port = r.relayed()[0].port();
    let token = r.reservation_token().expect("token");
    let mut b = Client::bob("203.0.113.50:40002");
    let r = env.signed(&mut b, |c| c.allocate_req().token(token));
    r.assert_success();
    assert_eq!(r.relayed(), vec![sa(&format!("127.0.0.1:{}", port + 1))]);
    assert!(r.reservation_token().is_none());
    assert_eq!(
        env.relays.requests.len(),
        1,
        "no new bind for a reservation"
    );
    assert_eq!(env.server.allocation_count(), 2);
    // The token is single use.
    let mut c = Client::alice("203.0.113.50:40004");
    env.signed(&mut c, |c| c.allocate_req().token(token))
        .assert_error(508);
    // The claimed relay carries traffic for b.
    env.create_permission(&mut b, sa(PEER)).assert_success();
    let rid = env.server.relays_of(&b.tuple).next().expect("relay").0;
    let (to, _) = env.peer(rid, sa(PEER), b"rtcp").expect("delivered");
    assert_eq!(to, b.tuple);
    // The reservation is not released by the timer once claimed.
    env.tick(40);
    assert_eq!(env.relays.live.len(), 2);
    env.refresh(&mut b, Some(0)).assert_success();
    assert_eq!(env.relays.live.len(), 1);
}

#[test]
fn reservation_token_with_even_port_is_400() {
    let mut env = Env::new();
    let mut a = Client::alice("203.0.113.50:40000");
    let token = env
        .signed(&mut a, |c| c.allocate_req().even_port(true))
        .reservation_token()
        .expect("token");
    let mut b = Client::bob("203.0.113.50:40002");
    let r = env.signed(&mut b, |c| c.allocate_req().token(token).even_port(false));
    r.assert_error(400);
    let r = env.signed(&mut b, |c| c.allocate_req().token(token).family(Family::V4));
    r.assert_error(400);
    // The reservation is still there.
    env.signed(&mut b, |c| c.allocate_req().token(token))
        .assert_success();
}

#[test]
fn unknown_reservation_token_is_508() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut c, |c| c.allocate_req().token(*b"notatokn"));
    r.assert_error(508);
    assert_eq!(env.server.allocation_count(), 0);
    assert!(env.relays.requests.is_empty());
}

#[test]
fn malformed_reservation_token_is_400() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut c, |c| {
        c.allocate_req()
            .attr(icebreaker_stun::attr::RESERVATION_TOKEN, &[1, 2, 3])
    });
    r.assert_error(400);
}

#[test]
fn unclaimed_reservation_is_released_after_about_30_seconds() {
    let mut env = Env::new();
    let mut a = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut a, |c| c.allocate_req().even_port(true));
    let token = r.reservation_token().expect("token");
    let main = env.server.relays_of(&a.tuple).next().expect("relay").0;
    let reserved = *env
        .relays
        .live
        .keys()
        .find(|&&id| id != main)
        .expect("reserved relay");
    env.tick(29);
    assert!(env.relays.released.is_empty());
    env.tick(2);
    assert_eq!(env.relays.released, vec![reserved]);
    assert_eq!(env.relays.live.len(), 1, "the allocation's own relay stays");
    let mut b = Client::bob("203.0.113.50:40002");
    env.signed(&mut b, |c| c.allocate_req().token(token))
        .assert_error(508);
}

#[test]
fn clear_releases_allocations_and_reservations() {
    let mut env = Env::new();
    let mut a = Client::alice("203.0.113.50:40000");
    env.signed(&mut a, |c| c.allocate_req().even_port(true))
        .assert_success();
    env.allocate(&mut Client::bob("203.0.113.51:40000"));
    assert_eq!(env.relays.live.len(), 3);
    env.server.clear(&mut env.relays);
    assert!(env.relays.live.is_empty());
    assert_eq!(env.server.allocation_count(), 0);
}

#[test]
fn reservations_are_bounded_like_allocations() {
    // Allocate with the R bit, delete, repeat: each round leaves a reservation (a bound socket)
    // for 30 s. They stop at max_allocations.
    let mut cfg = config();
    cfg.max_allocations = 3;
    let mut env = Env::with(cfg);
    let mut c = Client::alice("203.0.113.50:40000");
    for _ in 0..3 {
        env.signed(&mut c, |c| c.allocate_req().even_port(true))
            .assert_success();
        env.refresh(&mut c, Some(0)).assert_success();
    }
    env.signed(&mut c, |c| c.allocate_req().even_port(true))
        .assert_error(508);
    // Without the R bit, allocating still works.
    env.signed(&mut c, |c| c.allocate_req().even_port(false))
        .assert_success();
}

#[test]
fn reservations_are_bounded_per_user_too() {
    // One user looping allocate-reserve-delete must not hold the whole port range.
    let mut cfg = config();
    cfg.max_allocations_per_user = 2;
    let mut env = Env::with(cfg);
    let mut c = Client::alice("203.0.113.50:40000");
    for _ in 0..2 {
        env.signed(&mut c, |c| c.allocate_req().even_port(true))
            .assert_success();
        env.refresh(&mut c, Some(0)).assert_success();
    }
    env.signed(&mut c, |c| c.allocate_req().even_port(true))
        .assert_error(508);
    // Another user still can.
    let mut b = Client::bob("203.0.113.60:40000");
    let r = env.signed(&mut b, |c| c.allocate_req().even_port(true));
    r.assert_success();
    assert!(r.reservation_token().is_some());
    // Expired reservations give the user room again.
    env.tick(31);
    env.signed(&mut c, |c| c.allocate_req().even_port(true))
        .assert_success();
}
