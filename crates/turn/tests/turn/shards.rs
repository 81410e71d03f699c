//! Several `Server`s built from clones of one `Config` (the shards of a multi-core server) share
//! the quotas, the live relay addresses and the EVEN-PORT reservations.

use crate::common::*;
use icebreaker_stun::attr;

fn two_shards(cfg: icebreaker_turn::Config) -> (Env, Env) {
    let a = Env::with(cfg.clone());
    let mut b = Env::with(cfg);
    b.relays = FakeRelays::second_shard();
    b.now = a.now;
    b.start = a.start;
    (a, b)
}

#[test]
fn per_user_quota_holds_across_shards() {
    let mut cfg = config();
    cfg.max_allocations_per_user = 1;
    let (mut a, mut b) = two_shards(cfg);
    let mut c1 = Client::alice("203.0.113.50:40000");
    let mut c2 = Client::alice("203.0.113.50:40001");
    a.allocate(&mut c1);
    b.signed(&mut c2, |c| c.allocate_req()).assert_error(486);
    assert!(
        b.relays.requests.is_empty(),
        "nothing bound for the refused one"
    );
    a.refresh(&mut c1, Some(0)).assert_success();
    b.signed(&mut c2, |c| c.allocate_req()).assert_success();
    assert_eq!(a.server.config().group.allocations(), 1);
}

#[test]
fn total_quota_holds_across_shards() {
    let mut cfg = config();
    cfg.max_allocations = 2;
    let (mut a, mut b) = two_shards(cfg);
    a.allocate(&mut Client::alice("203.0.113.50:40000"));
    b.allocate(&mut Client::bob("203.0.113.51:40000"));
    let mut c = Client::rest("203.0.113.52:40000", UNIX_START + 999, "carol", SECRET);
    a.signed(&mut c, |c| c.allocate_req()).assert_error(508);
    let mut d = Client::rest("203.0.113.53:40000", UNIX_START + 999, "dave", SECRET);
    b.signed(&mut d, |c| c.allocate_req()).assert_error(508);
    // Expiry on one shard frees room on the other.
    a.tick(700);
    b.signed(&mut d, |c| c.allocate_req()).assert_success();
}

#[test]
fn relay_address_of_another_shard_is_a_reachable_peer_while_it_lives() {
    let (mut a, mut b) = two_shards(config());
    let mut c1 = Client::alice("203.0.113.50:40000");
    let (_, relay_a) = a.allocate_relay(&mut c1);
    let mut c2 = Client::bob("203.0.113.60:40000");
    b.allocate(&mut c2);
    b.create_permission(&mut c2, relay_a).assert_success();
    a.refresh(&mut c1, Some(0)).assert_success();
    // Gone: the relay range is closed again.
    b.create_permission(&mut c2, relay_a).assert_error(403);
}

#[test]
fn reservation_made_on_one_shard_is_redeemed_on_another() {
    let (mut a, mut b) = two_shards(config());
    let mut c1 = Client::alice("203.0.113.50:40000");
    let r = a.signed(&mut c1, |c| c.allocate_req().even_port(true));
    let port = r.relayed()[0].port();
    let token = r.reservation_token().expect("token");
    let reserved = a.relays.requests.len();
    // The RTCP allocation comes from another client port, which the kernel may hand to
    // another listener socket, hence another shard.
    let mut c2 = Client::alice("203.0.113.50:40001");
    let r = b.signed(&mut c2, |c| c.allocate_req().token(token));
    r.assert_success();
    assert!(!r.has(attr::RESERVATION_TOKEN));
    assert_eq!(r.relayed(), vec![sa(&format!("127.0.0.1:{}", port + 1))]);
    assert!(
        b.relays.requests.is_empty(),
        "no new bind for a reservation"
    );
    assert_eq!(
        b.relays.claimed.len(),
        1,
        "the reserved socket moved to shard b"
    );
    assert_eq!(a.relays.requests.len(), reserved);
    // Single use, on either shard.
    let mut c3 = Client::alice("203.0.113.50:40002");
    a.signed(&mut c3, |c| c.allocate_req().token(token))
        .assert_error(508);
    // Shard a's timer no longer owns it.
    a.tick(40);
    assert!(a
        .relays
        .released
        .iter()
        .all(|id| !b.relays.claimed.contains(id)));
    // Shard b releases it with its allocation.
    b.refresh(&mut c2, Some(0)).assert_success();
    assert_eq!(b.relays.released, b.relays.claimed);
}

#[test]
fn unredeemed_reservation_is_released_by_whichever_shard_sweeps_first() {
    let (mut a, mut b) = two_shards(config());
    let mut c1 = Client::alice("203.0.113.50:40000");
    a.signed(&mut c1, |c| c.allocate_req().even_port(true))
        .assert_success();
    assert_eq!(a.server.config().group.reservations(), 1);
    // Reserved sockets wait in a place every shard's provider reaches (the server keeps them
    // outside the shards); here b's fake provider is given a's.
    let (&id, &addr) = a.relays.live.iter().last().expect("the reserved relay");
    b.relays.live.insert(id, addr);
    b.tick(31);
    assert_eq!(b.server.config().group.reservations(), 0);
    assert_eq!(b.relays.released, vec![id]);
}
