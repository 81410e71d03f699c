//! Long-term credentials, stateless nonces, TURN REST credentials (RFC 8489 §9.2, RFC 8656 §5).

use crate::common::*;
use icebreaker_stun::{attr, method};
use icebreaker_turn::AuthFailure;

fn auth_failures(env: &Env, f: AuthFailure) -> u64 {
    let i = AuthFailure::ALL
        .iter()
        .position(|&a| a == f)
        .expect("known");
    env.server.stats().auth_failures[i]
}

#[test]
fn allocate_without_integrity_is_401_with_realm_and_nonce_and_no_state() {
    let mut env = Env::new();
    let c = Client::alice("203.0.113.50:40000");
    let r = env.call(c.tuple, &Req::request(method::ALLOCATE).udp());
    r.assert_error(401);
    assert_eq!(r.realm().as_deref(), Some(REALM));
    let nonce = r.nonce().expect("NONCE");
    assert_eq!(nonce.len(), 24);
    assert!(!r.has(attr::MESSAGE_INTEGRITY), "a challenge is not signed");
    assert_eq!(env.server.allocation_count(), 0);
    assert!(env.relays.requests.is_empty(), "no relay bound");
    assert_eq!(auth_failures(&env, AuthFailure::Missing), 1);
    assert_eq!(env.server.stats().errors[2], 1, "401 counted");
}

#[test]
fn many_unauthenticated_allocates_from_many_sources_create_no_state() {
    // Every challenge answered (the reply budget is tested in limits.rs): no state either way.
    let mut cfg = config();
    cfg.unauth_reply_rate = icebreaker_turn::Rate::UNLIMITED;
    let mut env = Env::with(cfg);
    for i in 0..2000u32 {
        let addr = format!("203.0.{}.{}:{}", i / 250, i % 250, 1024 + i);
        let c = Client::alice(&addr);
        let r = env.call(
            c.tuple,
            &Req::request(method::ALLOCATE).udp().lifetime(3600),
        );
        r.assert_error(401);
        // Other methods without MI and without an allocation: no state either.
        let r = env.call(
            c.tuple,
            &Req::request(method::CREATE_PERMISSION).peer(sa(PEER)),
        );
        assert_eq!(r.class(), icebreaker_stun::Class::Error);
    }
    assert_eq!(env.server.allocation_count(), 0);
    assert_eq!(env.server.stats().allocations, 0);
    assert!(env.relays.requests.is_empty());
    assert!(env.relays.live.is_empty());
}

#[test]
fn integrity_without_username_is_400() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.challenge(&mut c);
    let r = env.call(c.tuple, &c.allocate_req().without_username());
    r.assert_error(400);
    assert_eq!(env.server.allocation_count(), 0);
}

#[test]
fn integrity_without_nonce_or_realm_is_400() {
    let mut env = Env::new();
    let c = Client::alice("203.0.113.50:40000");
    // MI present, REALM/NONCE absent: sign a request with only USERNAME.
    let req = Req::request(method::ALLOCATE);
    let mut bytes = vec![0u8; 512];
    let mut w = icebreaker_stun::MessageWriter::new(&mut bytes, req.typ, &req.tid).expect("w");
    w.requested_transport(17).expect("rt");
    w.attr(attr::USERNAME, b"alice").expect("u");
    w.message_integrity(&c.key()).expect("mi");
    let n = w.finish();
    let r = env.raw(c.tuple, &bytes[..n]).reply();
    r.assert_error(400);
    assert_eq!(auth_failures(&env, AuthFailure::BadRequest), 1);
}

#[test]
fn wrong_password_is_401() {
    let mut env = Env::new();
    let mut c = Client::udp("203.0.113.50:40000", "alice", "not-the-password");
    env.challenge(&mut c);
    let r = env.call(c.tuple, &c.allocate_req());
    r.assert_error(401);
    assert_eq!(r.realm().as_deref(), Some(REALM));
    assert!(r.nonce().is_some());
    assert!(!r.has(attr::MESSAGE_INTEGRITY));
    assert_eq!(env.server.allocation_count(), 0);
    assert_eq!(auth_failures(&env, AuthFailure::BadIntegrity), 1);
}

#[test]
fn unknown_user_is_401() {
    let mut env = Env::new();
    let mut c = Client::udp("203.0.113.50:40000", "mallory", "whatever");
    env.challenge(&mut c);
    let r = env.call(c.tuple, &c.allocate_req());
    r.assert_error(401);
    assert!(r.nonce().is_some());
    assert_eq!(env.server.allocation_count(), 0);
    assert_eq!(auth_failures(&env, AuthFailure::UnknownUser), 1);
}

#[test]
fn stale_nonce_is_438_with_a_fresh_nonce() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.challenge(&mut c);
    let old = c.nonce.clone().expect("nonce");
    env.advance(599);
    // Still valid just before the lifetime ends (same IP, other port: the nonce is per IP).
    let mut early = c.clone();
    early.tuple.client = sa("203.0.113.50:40001");
    env.call(early.tuple, &early.allocate_req())
        .assert_success();
    env.advance(1); // now exactly nonce_lifetime (600 s) old
    let r = env.call(c.tuple, &c.allocate_req());
    r.assert_error(438);
    assert_eq!(r.realm().as_deref(), Some(REALM));
    let fresh = r.nonce().expect("438 carries a new NONCE");
    assert_ne!(fresh, old);
    assert_eq!(auth_failures(&env, AuthFailure::StaleNonce), 1);
    assert_eq!(env.server.allocation_count(), 1);
    c.nonce = Some(fresh);
    env.call(c.tuple, &c.allocate_req()).assert_success();
    assert_eq!(env.server.allocation_count(), 2);
}

#[test]
fn nonce_issued_to_another_ip_is_438() {
    let mut env = Env::new();
    let mut a = Client::alice("203.0.113.50:40000");
    env.challenge(&mut a);
    // Same user, other IP (same port), reusing a's nonce.
    let mut b = Client::alice("203.0.113.51:40000");
    b.nonce = a.nonce.clone();
    let r = env.call(b.tuple, &b.allocate_req());
    r.assert_error(438);
    assert!(r.nonce().is_some());
    // Another port on the same IP may reuse it: the nonce is bound to the IP.
    let c = Client {
        tuple: icebreaker_turn::FiveTuple {
            client: sa("203.0.113.50:40001"),
            ..a.tuple
        },
        ..a.clone()
    };
    env.call(c.tuple, &c.allocate_req()).assert_success();
}

#[test]
fn forged_or_garbage_nonce_is_438() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    for nonce in [
        b"0000000000000000000000000".to_vec(),
        b"xyz".to_vec(),
        vec![],
    ] {
        c.nonce = Some(nonce);
        env.call(c.tuple, &c.allocate_req()).assert_error(438);
    }
    assert_eq!(env.server.allocation_count(), 0);
}

#[test]
fn wrong_realm_is_401() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.challenge(&mut c);
    c.realm = "evil.example".to_owned();
    let r = env.call(c.tuple, &c.allocate_req());
    r.assert_error(401);
    assert_eq!(
        r.realm().as_deref(),
        Some(REALM),
        "the challenge names our realm"
    );
    assert_eq!(auth_failures(&env, AuthFailure::WrongRealm), 1);
    assert_eq!(env.server.allocation_count(), 0);
}

#[test]
fn static_user_and_rest_secret_work_at_the_same_time() {
    let mut env = Env::new();
    let mut alice = Client::alice("203.0.113.50:40000");
    let mut rest = Client::rest("203.0.113.51:40000", UNIX_START + 3600, "carol", SECRET);
    let r = env.allocate(&mut alice);
    assert!(r.integrity_ok(&alice.key()));
    let r = env.allocate(&mut rest);
    assert!(r.integrity_ok(&rest.key()));
    assert_eq!(env.server.allocation_count(), 2);
}

#[test]
fn rest_user_with_trailing_expiry_form() {
    let mut env = Env::new();
    let username = format!("dave:{}", UNIX_START + 3600);
    let mut pw = [0u8; 28];
    let password = icebreaker_stun::rest_password(SECRET.as_bytes(), &username, &mut pw).to_owned();
    let mut c = Client::udp("203.0.113.50:40000", &username, &password);
    env.allocate(&mut c);
}

#[test]
fn both_rotated_secrets_work() {
    let mut env = Env::new();
    let mut one = Client::rest("203.0.113.50:40000", UNIX_START + 3600, "carol", SECRET);
    let mut two = Client::rest("203.0.113.51:40000", UNIX_START + 3600, "carol", SECRET2);
    let r1 = env.allocate(&mut one);
    let r2 = env.allocate(&mut two);
    assert!(r1.integrity_ok(&one.key()));
    assert!(r2.integrity_ok(&two.key()));
    assert_ne!(one.key(), two.key());
    // A secret that is not configured fails.
    let mut three = Client::rest(
        "203.0.113.52:40000",
        UNIX_START + 3600,
        "carol",
        "old-secret",
    );
    env.challenge(&mut three);
    env.call(three.tuple, &three.allocate_req())
        .assert_error(401);
}

#[test]
fn rest_username_expired_is_401() {
    let mut env = Env::new();
    let mut c = Client::rest("203.0.113.50:40000", UNIX_START - 1, "carol", SECRET);
    env.challenge(&mut c);
    let r = env.call(c.tuple, &c.allocate_req());
    r.assert_error(401);
    assert!(r.nonce().is_some());
    assert_eq!(auth_failures(&env, AuthFailure::Expired), 1);
    // Expiry == now is expired too.
    let mut c = Client::rest("203.0.113.51:40000", UNIX_START, "carol", SECRET);
    env.challenge(&mut c);
    env.call(c.tuple, &c.allocate_req()).assert_error(401);
    assert_eq!(env.server.allocation_count(), 0);
}

#[test]
fn expired_rest_username_is_refused_before_any_key_is_derived() {
    // The expiry is in the username for anyone to read: checking it first costs an attacker's
    // forged usernames no HMAC per secret, and tells nobody anything they did not know.
    let mut env = Env::new();
    let mut c = Client::rest(
        "203.0.113.50:40000",
        UNIX_START - 1,
        "carol",
        "wrong-secret",
    );
    env.challenge(&mut c);
    env.call(c.tuple, &c.allocate_req()).assert_error(401);
    assert_eq!(auth_failures(&env, AuthFailure::Expired), 1);
    assert_eq!(auth_failures(&env, AuthFailure::BadIntegrity), 0);
}

#[test]
fn rest_allocation_keeps_running_after_credential_expiry() {
    let mut env = Env::new();
    let mut c = Client::rest("203.0.113.50:40000", UNIX_START + 100, "carol", SECRET);
    env.allocate(&mut c);
    env.create_permission(&mut c, sa(PEER)).assert_success();
    env.tick(400);
    assert!(env.now.unix > UNIX_START + 100);
    // Refresh after the credential expired: still accepted (signed with the allocation's key).
    let r = env.refresh(&mut c, Some(600));
    r.assert_success();
    assert_eq!(r.lifetime(), Some(600));
    assert!(r.integrity_ok(&c.key()));
    env.create_permission(&mut c, sa(PEER2)).assert_success();
    env.channel_bind(&mut c, 0x4000, sa(PEER)).assert_success();
    env.tick(500);
    assert_eq!(
        env.server.allocation_count(),
        1,
        "refreshed allocation alive"
    );
    // The same expired credential cannot create a new allocation elsewhere.
    let mut other = Client::rest("203.0.113.51:40000", UNIX_START + 100, "carol", SECRET);
    env.challenge(&mut other);
    env.call(other.tuple, &other.allocate_req())
        .assert_error(401);
    assert_eq!(env.server.allocation_count(), 1);
}

#[test]
fn credentials_reload_keeps_existing_allocations() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    env.server
        .set_credentials(icebreaker_turn::Credentials::new(
            REALM,
            [("zed", "pw")],
            [],
        ));
    env.refresh(&mut c, None).assert_success();
    let mut d = Client::alice("203.0.113.51:40000");
    env.challenge(&mut d);
    env.call(d.tuple, &d.allocate_req()).assert_error(401);
}
