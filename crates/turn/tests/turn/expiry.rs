//! Allocation expiry and stream close (RFC 8656 §7).

use crate::common::*;
use icebreaker_turn::Transport;

#[test]
fn allocation_not_refreshed_is_removed_after_its_lifetime() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    let (rid, _) = env.allocate_relay(&mut c);
    env.create_permission(&mut c, sa(PEER)).assert_success();
    env.channel_bind(&mut c, 0x4001, sa(PEER)).assert_success();
    env.tick(599);
    assert_eq!(env.server.allocation_count(), 1);
    assert!(env.relays.released.is_empty());
    assert_eq!(env.server.stats().channels, 1);
    env.tick(1);
    assert_eq!(env.server.allocation_count(), 0);
    assert_eq!(env.relays.released, vec![rid]);
    assert!(env.relays.live.is_empty());
    let s = env.server.stats();
    assert_eq!(s.allocations, 0);
    assert_eq!(s.allocations_expired, 1);
    assert_eq!(s.allocations_created, 1);
    assert_eq!(s.channels, 0);
    assert_eq!(s.permissions, 0);
    // Nothing of it is reachable any more.
    assert!(env.peer(rid, sa(PEER), b"x").is_none());
    assert!(env.raw(c.tuple, &channel_data(0x4001, b"x")).is_none());
    env.refresh(&mut c, None).assert_error(437);
    // The 5-tuple may allocate again.
    env.allocate(&mut c);
}

#[test]
fn expiry_of_one_allocation_leaves_others() {
    let mut env = Env::new();
    let mut a = Client::alice("203.0.113.50:40000");
    let mut b = Client::bob("203.0.113.51:40000");
    env.allocate(&mut a);
    env.tick(100);
    env.allocate(&mut b);
    env.tick(500);
    assert_eq!(env.server.allocation_count(), 1);
    assert_eq!(env.server.relays_of(&a.tuple).count(), 0);
    assert_eq!(env.server.relays_of(&b.tuple).count(), 1);
    env.tick(100);
    assert_eq!(env.server.allocation_count(), 0);
    assert_eq!(env.server.stats().allocations_expired, 2);
}

#[test]
fn deleted_allocation_is_not_counted_as_expired() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    env.refresh(&mut c, Some(0)).assert_success();
    env.tick(700);
    assert_eq!(env.server.stats().allocations_expired, 0);
}

#[test]
fn client_closed_on_a_tcp_five_tuple_removes_its_allocation() {
    let mut env = Env::new();
    let mut t = Client::new("203.0.113.50:40000", Transport::Tcp, "alice", "alice-pw");
    let mut u = Client::alice("203.0.113.50:40001");
    let (rid, _) = env.allocate_relay(&mut t);
    env.allocate(&mut u);
    env.server.client_closed(&t.tuple, &mut env.relays);
    assert_eq!(env.server.allocation_count(), 1);
    assert_eq!(env.relays.released, vec![rid]);
    assert_eq!(env.server.stats().allocations, 1);
    // Closing an unknown 5-tuple, or twice, is harmless.
    env.server.client_closed(&t.tuple, &mut env.relays);
    assert_eq!(env.server.allocation_count(), 1);
    assert_eq!(env.relays.released.len(), 1);
}

#[test]
fn freed_slots_are_reused_correctly() {
    let mut env = Env::new();
    let mut clients: Vec<Client> = (0..5)
        .map(|i| Client::alice(&format!("203.0.113.50:{}", 41000 + i)))
        .collect();
    for c in clients.iter_mut() {
        env.allocate(c);
    }
    // Delete the middle ones, then allocate new 5-tuples into their slots.
    for c in clients.iter_mut().skip(1).take(3) {
        env.refresh(c, Some(0)).assert_success();
    }
    let mut fresh: Vec<Client> = (0..3)
        .map(|i| Client::bob(&format!("203.0.113.60:{}", 42000 + i)))
        .collect();
    for c in fresh.iter_mut() {
        env.allocate(c);
    }
    assert_eq!(env.server.allocation_count(), 5);
    // Each live allocation answers on its own relay only.
    for c in clients.iter_mut().take(1).chain(fresh.iter_mut()) {
        env.create_permission(c, sa(PEER)).assert_success();
        let rid = env.server.relays_of(&c.tuple).next().expect("relay").0;
        let (to, _) = env.peer(rid, sa(PEER), b"x").expect("delivered");
        assert_eq!(to, c.tuple);
    }
    assert_eq!(env.relays.live.len(), 5);
}
