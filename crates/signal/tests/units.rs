//! Outbox, session tokens, room tokens, rate limiter.

#![allow(clippy::unwrap_used)]

use icebreaker_signal::session::{Outbox, SessionToken};
use icebreaker_signal::token::{self, Perm};
use icebreaker_signal::{ErrorCode, RateLimiter, ServerMessage};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::time::{Duration, Instant};

fn pong(i: u64) -> icebreaker_signal::Encoded {
    ServerMessage::Pong {
        id: Some(i.to_string()),
    }
    .encode()
}

#[test]
fn outbox_seq_ack_replay_and_limit() {
    let mut o = Outbox::new(3);
    assert_eq!(o.last_seq(), 0);
    assert_eq!(o.replay_after(0).unwrap().count(), 0);
    for i in 1..=3 {
        assert_eq!(o.push(&pong(i)), i);
    }
    let r: Vec<_> = o.replay_after(1).unwrap().collect();
    assert_eq!(
        r,
        vec![
            (2, r#"{"type":"pong","seq":2,"id":"2"}"#),
            (3, r#"{"type":"pong","seq":3,"id":"3"}"#)
        ]
    );
    assert!(o.replay_after(4).is_err());
    // over the limit: the oldest goes, replay after 0 fails
    assert_eq!(o.push(&pong(4)), 4);
    assert_eq!(o.len(), 3);
    let gap = o.replay_after(0).map(|_| ()).unwrap_err();
    assert_eq!(gap.oldest, 2);
    assert_eq!(o.replay_after(1).unwrap().count(), 3);
    // ack drops ≤ seq; acking past the end is clamped
    o.ack(2);
    assert_eq!(o.oldest_seq(), 3);
    assert!(o.replay_after(1).is_err());
    o.ack(99);
    assert!(o.is_empty());
    assert_eq!(o.bytes(), 0);
    assert_eq!(o.replay_after(4).unwrap().count(), 0);
    assert_eq!(o.push_with(|s| format!("x{s}")), 5);
    assert_eq!(o.replay_after(4).unwrap().next(), Some((5, "x5")));
}

#[test]
fn outbox_byte_cap() {
    let mut o = Outbox::with_max_bytes(100, 70);
    for i in 0..5 {
        o.push(&pong(i));
    }
    assert!(o.bytes() <= 70);
    assert!(!o.is_empty());
    assert_eq!(o.last_seq(), 5);
}

#[test]
fn outbox_over_limit_pushes_cannot_pile_up_past_the_byte_cap() {
    // Each resume queues a `resumed` over the limits; a client resuming in a loop must not
    // keep them all.
    let mut o = Outbox::with_max_bytes(1000, 70);
    let one = pong(0).with_seq(1).len();
    for i in 0..50 {
        o.push_over_limit(&pong(i));
        assert!(o.bytes() <= 70 + one, "{} bytes after {i}", o.bytes());
    }
    assert_eq!(o.last_seq(), 50);
    // The newest is always kept, even when it alone passes the cap.
    let mut tight = Outbox::with_max_bytes(1000, 1);
    tight.push_over_limit(&pong(7));
    assert_eq!(tight.replay_after(0).unwrap().count(), 1);
}

#[test]
fn outbox_can_resume_after_counts_the_resumed_message() {
    // By count: two held + `resumed` is the limit plus one, three held + `resumed` is not.
    let mut o = Outbox::new(2);
    o.push(&pong(1));
    o.push(&pong(2));
    assert!(o.can_resume_after(0));
    o.push_over_limit(&pong(3));
    assert!(o.can_replay_after(0));
    assert!(!o.can_resume_after(0));
    assert!(o.can_resume_after(1));
    assert!(o.can_resume_after(3));
    assert!(!o.can_resume_after(4));
    // By bytes: what `resumed` follows must be within the cap.
    let one = pong(1).with_seq(1).len();
    let mut o = Outbox::with_max_bytes(100, 2 * one);
    o.push(&pong(1));
    o.push(&pong(2));
    assert!(o.can_resume_after(0));
    o.push_over_limit(&pong(3));
    assert!(!o.can_resume_after(0));
    assert!(o.can_resume_after(1));
}

#[test]
fn session_tokens() {
    let mut rng = StdRng::seed_from_u64(1);
    let a = SessionToken::generate(&mut rng);
    let b = SessionToken::generate(&mut rng);
    assert_eq!(a.as_str().len(), 43);
    assert!(SessionToken::well_formed(a.as_str()));
    assert!(!SessionToken::well_formed("short"));
    assert!(!SessionToken::well_formed(&"+".repeat(43)));
    assert_ne!(a, b);
    assert!(a.matches(a.as_str()));
    assert!(!a.matches(b.as_str()));
    assert!(!a.matches(&a.as_str()[..42]));
    assert_eq!(format!("{a:?}"), "SessionToken(…)");
}

const NOW: u64 = 1_767_225_600;

#[test]
fn room_token_verification() {
    let s = b"secret";
    let t = token::sign(s, "demo", Some("ada"), NOW + 10, None);
    let c = token::verify(&t, s, NOW).unwrap();
    assert_eq!(c.room, "demo");
    assert_eq!(c.sub.as_deref(), Some("ada"));
    assert!(c.perms.has(Perm::Create) && c.perms.has(Perm::Signal) && c.perms.has(Perm::Broadcast));
    assert!(c.check_room("demo").is_ok());
    assert_eq!(
        c.check_room("other").unwrap_err().code,
        ErrorCode::Forbidden
    );

    // expired (exp is exclusive), wrong secret
    assert_eq!(
        token::verify(&t, s, NOW + 10).unwrap_err().code,
        ErrorCode::Unauthorized
    );
    assert_eq!(
        token::verify(&t, b"other", NOW).unwrap_err().code,
        ErrorCode::Unauthorized
    );
    // tampered claims
    let parts: Vec<&str> = t.split('.').collect();
    let forged = token::sign(b"x", "*", None, NOW + 10, None);
    let forged_claims = forged.split('.').nth(1).unwrap();
    let tampered = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
    assert_eq!(
        token::verify(&tampered, s, NOW).unwrap_err().code,
        ErrorCode::Unauthorized
    );

    // perms subset
    let t = token::sign(s, "*", None, NOW + 10, Some(&[Perm::Signal]));
    let c = token::verify(&t, s, NOW).unwrap();
    assert!(c.check_room("anything").is_ok());
    assert!(c.require(Perm::Signal).is_ok());
    assert_eq!(
        c.require(Perm::Create).unwrap_err().code,
        ErrorCode::Forbidden
    );
    assert_eq!(
        c.require(Perm::Broadcast).unwrap_err().code,
        ErrorCode::Forbidden
    );

    // malformed: alg none / HS512, bad shapes, missing claims, not-yet-valid
    let none = token::sign_raw(
        s,
        br#"{"alg":"none"}"#,
        br#"{"room":"demo","exp":9999999999}"#,
    );
    let hs512 = token::sign_raw(
        s,
        br#"{"alg":"HS512"}"#,
        br#"{"room":"demo","exp":9999999999}"#,
    );
    let no_exp = token::sign_raw(s, br#"{"alg":"HS256"}"#, br#"{"room":"demo"}"#);
    let no_room = token::sign_raw(s, br#"{"alg":"HS256"}"#, br#"{"exp":9999999999}"#);
    let bad_json = token::sign_raw(s, br#"{"alg":"HS256"}"#, b"not json");
    let nbf = token::sign_raw(
        s,
        br#"{"alg":"HS256"}"#,
        format!(
            r#"{{"room":"demo","exp":{},"nbf":{}}}"#,
            NOW + 100,
            NOW + 50
        )
        .as_bytes(),
    );
    for bad in [
        none.as_str(),
        &hs512,
        &no_exp,
        &no_room,
        &bad_json,
        &nbf,
        "",
        "a.b",
        "a.b.c.d",
        "!!.??.**",
        &"a".repeat(5000),
    ] {
        assert_eq!(
            token::verify(bad, s, NOW).unwrap_err().code,
            ErrorCode::Unauthorized,
            "{bad}"
        );
    }
    assert!(token::verify(&nbf, s, NOW + 60).is_ok());
    // interop: a token made by a standard JWT library (header with typ, claims order differs)
    let std_like = token::sign_raw(
        s,
        br#"{"typ":"JWT","alg":"HS256"}"#,
        br#"{"exp":9999999999,"perms":["broadcast","create","bogus"],"sub":"x","room":"demo","iat":1}"#,
    );
    let c = token::verify(&std_like, s, NOW).unwrap();
    assert!(!c.perms.has(Perm::Signal) && c.perms.has(Perm::Broadcast));
}

#[test]
fn rate_limiter() {
    let t0 = Instant::now();
    let mut r = RateLimiter::new(10.0, 5.0);
    for _ in 0..5 {
        assert!(r.allow(t0));
    }
    assert!(!r.allow(t0));
    assert_eq!(r.refused_in_a_row(), 1);
    // 100 ms → one token
    assert!(r.allow(t0 + Duration::from_millis(100)));
    assert!(!r.allow(t0 + Duration::from_millis(100)));
    // a long pause refills only up to the burst
    let t1 = t0 + Duration::from_secs(100);
    for _ in 0..5 {
        assert!(r.allow(t1));
    }
    assert!(!r.allow(t1));
    // time going backwards gives nothing
    assert!(!r.allow(t0));
    for _ in 0..8 {
        r.allow(t1);
    }
    assert!(r.abusive());
    assert!(r.allow(t1 + Duration::from_secs(1)));
    assert!(!r.abusive());
    // sustained rate: 50/s over 10 s lets ~ burst + 500 through
    let mut r = RateLimiter::default();
    let mut ok = 0;
    for ms in 0..10_000u64 {
        if r.allow(t0 + Duration::from_millis(ms)) {
            ok += 1;
        }
    }
    assert!((590..=601).contains(&ok), "{ok}");
    let mut z = RateLimiter::new(f64::NAN, -1.0);
    assert!(!z.allow(t0));
}
