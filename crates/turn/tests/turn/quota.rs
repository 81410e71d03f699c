//! Allocation quotas (RFC 8656 §7.2: 486 per user, 508 capacity).

use crate::common::*;

#[test]
fn per_user_quota_is_486() {
    let mut cfg = config();
    cfg.max_allocations_per_user = 2;
    let mut env = Env::with(cfg);
    let mut a1 = Client::alice("203.0.113.50:40000");
    let mut a2 = Client::alice("203.0.113.50:40001");
    let mut a3 = Client::alice("203.0.113.50:40002");
    env.allocate(&mut a1);
    env.allocate(&mut a2);
    let r = env.signed(&mut a3, |c| c.allocate_req());
    r.assert_error(486);
    assert!(r.integrity_ok(&a3.key()));
    assert_eq!(env.server.allocation_count(), 2);
    assert_eq!(
        env.relays.requests.len(),
        2,
        "no relay bound for the refused one"
    );
    // Another user is not affected.
    let mut b = Client::bob("203.0.113.60:40000");
    env.allocate(&mut b);
    // Freeing one of alice's makes room again.
    env.refresh(&mut a1, Some(0)).assert_success();
    env.signed(&mut a3, |c| c.allocate_req()).assert_success();
    assert_eq!(env.server.allocation_count(), 3);
}

#[test]
fn per_user_quota_counts_expired_allocations_out() {
    let mut cfg = config();
    cfg.max_allocations_per_user = 1;
    let mut env = Env::with(cfg);
    let mut a1 = Client::alice("203.0.113.50:40000");
    let mut a2 = Client::alice("203.0.113.50:40001");
    env.allocate(&mut a1);
    env.signed(&mut a2, |c| c.allocate_req()).assert_error(486);
    env.tick(600);
    assert_eq!(env.server.allocation_count(), 0);
    env.signed(&mut a2, |c| c.allocate_req()).assert_success();
}

#[test]
fn total_quota_is_508() {
    let mut cfg = config();
    cfg.max_allocations = 2;
    let mut env = Env::with(cfg);
    env.allocate(&mut Client::alice("203.0.113.50:40000"));
    env.allocate(&mut Client::bob("203.0.113.51:40000"));
    let mut c = Client::rest("203.0.113.52:40000", UNIX_START + 999, "carol", SECRET);
    let r = env.signed(&mut c, |c| c.allocate_req());
    r.assert_error(508);
    assert!(r.integrity_ok(&c.key()));
    assert_eq!(env.server.allocation_count(), 2);
    assert_eq!(env.relays.requests.len(), 2);
    assert_eq!(env.server.stats().errors[12], 1, "508 counted");
}

#[test]
fn relay_provider_exhausted_is_508() {
    let mut env = Env::new();
    env.relays.exhausted = true;
    let mut c = Client::alice("203.0.113.50:40000");
    let r = env.signed(&mut c, |c| c.allocate_req());
    r.assert_error(508);
    assert_eq!(env.server.allocation_count(), 0);
    assert_eq!(env.server.stats().allocations, 0);
    // The per-user count was not charged for the failure.
    env.relays.exhausted = false;
    let mut cfg_check = Client::alice("203.0.113.50:40001");
    env.allocate(&mut cfg_check);
    env.signed(&mut c, |c| c.allocate_req()).assert_success();
}
