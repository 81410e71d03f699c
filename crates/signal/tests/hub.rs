//! Hub behaviour: rooms, isolation, capacity, presence, resume, grace, replay limit, tokens.

#![allow(clippy::unwrap_used)]

use icebreaker_signal::proto::parse_client;
use icebreaker_signal::token::{self, Perm};
use icebreaker_signal::{
    Attached, ClientMessage, CloseReason, ErrorCode, Handled, Hub, HubConfig, Join,
    MemoryRoomStore, SessionKey,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const NOW_UNIX: u64 = 1_767_225_600;

fn hub(config: HubConfig) -> Hub {
    Hub::with_store(config, MemoryRoomStore::new(), StdRng::seed_from_u64(7))
}

fn ice(peer: &str) -> Value {
    json!([{"urls": ["stun:192.0.2.7:3478"], "username": format!("1:{peer}")}])
}

struct Client {
    key: SessionKey,
    peer: String,
    token: String,
    att: Attached,
    seen: u64,
    got: Vec<Value>,
}

fn join_as(hub: &mut Hub, now: Instant, j: Join) -> Client {
    let joined = hub.join(now, NOW_UNIX, j, ice).unwrap();
    let att = hub.attach(now, joined.key, 0).unwrap();
    Client {
        key: joined.key,
        peer: joined.peer,
        token: joined.session.as_str().to_owned(),
        att,
        seen: 0,
        got: Vec::new(),
    }
}

fn join(hub: &mut Hub, now: Instant, room: &str) -> Client {
    join_as(hub, now, Join::room(room))
}

/// Reads everything new; checks seqs are consecutive.
fn recv(hub: &Hub, c: &mut Client) -> Vec<Value> {
    let mut out = Vec::new();
    for (seq, text) in hub.pending_after(c.key, c.seen).unwrap() {
        assert_eq!(seq, c.seen + 1);
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["seq"], json!(seq));
        c.seen = seq;
        out.push(v.clone());
        c.got.push(v);
    }
    out
}

fn send(hub: &mut Hub, now: Instant, c: &Client, text: &str) -> Result<Handled, ErrorCode> {
    let msg = parse_client(text, 65536).map_err(|e| e.code)?;
    hub.handle(now, c.key, msg).map_err(|e| e.code)
}

fn types(v: &[Value]) -> Vec<&str> {
    v.iter().map(|m| m["type"].as_str().unwrap()).collect()
}

#[test]
fn join_initiator_presence_and_joined_fields() {
    let now = Instant::now();
    let mut h = hub(HubConfig::default());
    let mut a = join_as(
        &mut h,
        now,
        Join {
            name: Some("Ada".into()),
            ..Join::room("demo")
        },
    );
    let m = recv(&h, &mut a);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["type"], "joined");
    assert_eq!(m[0]["seq"], 1);
    assert_eq!(m[0]["initiator"], true);
    assert_eq!(m[0]["capacity"], 50);
    assert_eq!(m[0]["peers"], json!([]));
    assert_eq!(m[0]["grace"], 30);
    assert_eq!(m[0]["room"], "demo");
    assert_eq!(m[0]["peer"], a.peer.as_str());
    assert_eq!(m[0]["session"], a.token.as_str());
    assert_eq!(a.token.len(), 43);
    assert!(icebreaker_signal::proto::valid_peer_id(&a.peer));
    assert_eq!(m[0]["iceServers"], ice(&a.peer));

    let mut b = join_as(
        &mut h,
        now,
        Join {
            name: Some("Grace".into()),
            meta: Some(serde_json::value::RawValue::from_string(r#"{"x":1}"#.into()).unwrap()),
            ..Join::room("demo")
        },
    );
    let m = recv(&h, &mut b);
    assert_eq!(m[0]["initiator"], false);
    assert_eq!(m[0]["peers"], json!([{"id": a.peer, "name": "Ada"}]));
    let m = recv(&h, &mut a);
    assert_eq!(
        m,
        vec![
            json!({"type":"peer-joined","seq":2,"peer":{"id": b.peer, "name":"Grace","meta":{"x":1}}})
        ]
    );
    let dirty: Vec<_> = h.drain_dirty().collect();
    assert!(dirty.contains(&a.key) && dirty.contains(&b.key));
    assert_eq!(h.drain_dirty().count(), 0);

    // leave → peer-left left, session gone
    assert_eq!(
        send(&mut h, now, &b, r#"{"type":"leave"}"#),
        Ok(Handled::Left)
    );
    let m = recv(&h, &mut a);
    assert_eq!(
        m,
        vec![json!({"type":"peer-left","seq":3,"peer": b.peer,"reason":"left"})]
    );
    assert!(!h.contains(b.key));
    assert_eq!(
        h.drain_closed().collect::<Vec<_>>(),
        vec![(b.key, CloseReason::Left)]
    );
    assert_eq!(
        send(&mut h, now, &b, r#"{"type":"ping"}"#),
        Err(ErrorCode::NotJoined)
    );

    // kick → peer-left kicked
    let mut c = join(&mut h, now, "demo");
    recv(&h, &mut c);
    recv(&h, &mut a);
    assert!(h.kick(c.key));
    assert_eq!(recv(&h, &mut a)[0]["reason"], "kicked");
    assert!(h.lookup(&c.token).is_none());

    // last member leaves → room gone; next joiner is initiator again
    send(&mut h, now, &a, r#"{"type":"leave"}"#).unwrap();
    assert_eq!(h.stats().rooms, 0);
    let mut d = join(&mut h, now, "demo");
    assert_eq!(recv(&h, &mut d)[0]["initiator"], true);
}

#[test]
fn isolation_between_rooms() {
    let now = Instant::now();
    let mut h = hub(HubConfig::default());
    let mut a1 = join(&mut h, now, "one");
    let mut a2 = join(&mut h, now, "one");
    let mut b1 = join(&mut h, now, "two");
    let mut b2 = join(&mut h, now, "two");
    for c in [&mut a1, &mut a2, &mut b1, &mut b2] {
        recv(&h, c);
    }
    // signal across rooms: unknown_peer, queued as a sequenced error with ref
    let msg = format!(
        r#"{{"type":"signal","to":"{}","data":1,"id":"x"}}"#,
        b1.peer
    );
    assert_eq!(send(&mut h, now, &a1, &msg), Err(ErrorCode::UnknownPeer));
    let m = recv(&h, &mut a1);
    assert_eq!(m[0]["type"], "error");
    assert_eq!(m[0]["code"], "unknown_peer");
    assert_eq!(m[0]["ref"], "x");
    assert!(recv(&h, &mut b1).is_empty());
    // to self: unknown_peer too; to a nonexistent id too
    let msg = format!(r#"{{"type":"signal","to":"{}","data":1}}"#, a1.peer);
    assert_eq!(send(&mut h, now, &a1, &msg), Err(ErrorCode::UnknownPeer));
    assert_eq!(
        send(
            &mut h,
            now,
            &a1,
            r#"{"type":"signal","to":"00000000","data":1}"#
        ),
        Err(ErrorCode::UnknownPeer)
    );
    recv(&h, &mut a1);
    // signal inside the room, `from` stamped (a client `from` is ignored)
    let msg = format!(
        r#"{{"type":"signal","to":"{}","from":"evil","data":{{"sdp":"v=0"}}}}"#,
        a2.peer
    );
    send(&mut h, now, &a1, &msg).unwrap();
    assert_eq!(
        recv(&h, &mut a2),
        vec![json!({"type":"signal","seq":2,"from": a1.peer,"data":{"sdp":"v=0"}})]
    );
    // broadcast stays inside, not echoed to the sender
    send(&mut h, now, &b1, r#"{"type":"broadcast","data":[1]}"#).unwrap();
    assert_eq!(
        recv(&h, &mut b2),
        vec![json!({"type":"broadcast","seq":2,"from": b1.peer,"data":[1]})]
    );
    assert!(recv(&h, &mut b1).is_empty());
    assert!(recv(&h, &mut a1).is_empty());
    assert!(recv(&h, &mut a2).is_empty());
}

#[test]
fn capacity_and_server_limits() {
    let now = Instant::now();
    let mut h = hub(HubConfig {
        max_rooms: 2,
        max_sessions: 5,
        max_capacity: 10,
        ..HubConfig::default()
    });
    let mut j = Join::room("pair");
    j.capacity = Some(2);
    let mut a = join_as(&mut h, now, j);
    assert_eq!(recv(&h, &mut a)[0]["capacity"], 2);
    // capacity is only used by the creating join
    let mut j = Join::room("pair");
    j.capacity = Some(9);
    let mut b = join_as(&mut h, now, j);
    assert_eq!(recv(&h, &mut b)[0]["capacity"], 2);
    let err = h
        .join(
            now,
            NOW_UNIX,
            Join {
                id: Some("j3".into()),
                ..Join::room("pair")
            },
            ice,
        )
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::RoomFull);
    assert_eq!(err.id.as_deref(), Some("j3"));
    // capacity range
    for bad in [0, 1, 11] {
        let mut j = Join::room("other");
        j.capacity = Some(bad);
        assert_eq!(
            h.join(now, NOW_UNIX, j, ice).unwrap_err().code,
            ErrorCode::BadMessage
        );
    }
    // max_rooms = 2
    join(&mut h, now, "r2");
    assert_eq!(
        h.join(now, NOW_UNIX, Join::room("r3"), ice)
            .unwrap_err()
            .code,
        ErrorCode::ServerFull
    );
    // max_sessions = 5
    join(&mut h, now, "r2");
    join(&mut h, now, "r2");
    assert_eq!(h.stats().sessions, 5);
    assert_eq!(
        h.join(now, NOW_UNIX, Join::room("r2"), ice)
            .unwrap_err()
            .code,
        ErrorCode::ServerFull
    );
    assert_eq!(
        h.join(now, NOW_UNIX, Join::room("bad room"), ice)
            .unwrap_err()
            .code,
        ErrorCode::InvalidRoom
    );
}

#[test]
fn second_join_resume_ack_ping() {
    let now = Instant::now();
    let mut h = hub(HubConfig::default());
    let mut a = join(&mut h, now, "r");
    recv(&h, &mut a);
    assert_eq!(
        send(&mut h, now, &a, r#"{"type":"join","room":"r"}"#),
        Err(ErrorCode::AlreadyJoined)
    );
    assert_eq!(recv(&h, &mut a)[0]["code"], "already_joined");
    assert_eq!(
        send(&mut h, now, &a, r#"{"type":"ping","id":"p"}"#),
        Ok(Handled::Ok)
    );
    assert_eq!(
        h.take_unsequenced(a.key),
        vec![r#"{"type":"pong","id":"p"}"#.to_string()]
    );
    assert!(h.take_unsequenced(a.key).is_empty());
    assert!(recv(&h, &mut a).is_empty());
    // ack drops from the replay buffer
    send(&mut h, now, &a, r#"{"type":"ack","seq":2}"#).unwrap();
    assert!(h.pending_after(a.key, 0).is_err());
    assert_eq!(h.pending_after(a.key, 2).unwrap().count(), 0);
    // push_error for transport-level refusals
    let e = icebreaker_signal::ProtoError::new(ErrorCode::RateLimited, "slow down");
    assert_eq!(h.push_error(a.key, &e), Some(3));
}

#[test]
fn resume_replays_then_resumed() {
    let now = Instant::now();
    let mut h = hub(HubConfig::default());
    let mut a = join(&mut h, now, "r");
    let mut b = join(&mut h, now, "r");
    recv(&h, &mut a);
    recv(&h, &mut b);
    assert!(h.detach(now, a.key, a.att.stream));
    assert!(!h.detach(now, a.key, a.att.stream));
    assert_eq!(h.current_stream(a.key), None);
    for i in 0..3 {
        send(
            &mut h,
            now,
            &b,
            &format!(r#"{{"type":"broadcast","data":{i}}}"#),
        )
        .unwrap();
    }
    // bad token, bad last_seq
    assert_eq!(
        h.resume(now, "x", 2, ice).unwrap_err().code,
        ErrorCode::ResumeFailed
    );
    let wrong = format!("{}A", &a.token[..42]);
    assert!(h.resume(now, &wrong, 2, ice).is_err() || wrong == a.token);
    assert_eq!(
        h.resume(now, &a.token, 99, ice).unwrap_err().code,
        ErrorCode::ResumeFailed
    );
    let att = h
        .resume(now + Duration::from_secs(10), &a.token, 2, ice)
        .unwrap();
    assert_eq!(att.key, a.key);
    assert_eq!(h.current_stream(a.key), Some(att.stream));
    let m = recv(&h, &mut a);
    assert_eq!(
        types(&m),
        ["broadcast", "broadcast", "broadcast", "resumed"]
    );
    assert_eq!(m[3]["seq"], 6);
    assert_eq!(m[3]["peers"], json!([{"id": b.peer}]));
    assert_eq!(m[3]["iceServers"], ice(&a.peer));
    // b saw nothing of it
    assert!(recv(&h, &mut b).is_empty());
    // a second resume supersedes the first stream
    let att2 = h.resume(now, &a.token, 6, ice).unwrap();
    assert_ne!(att2.stream, att.stream);
    assert!(!h.detach(now, a.key, att.stream));
    assert_eq!(h.current_stream(a.key), Some(att2.stream));
}

#[test]
fn grace_expiry_is_peer_left_timeout() {
    let t0 = Instant::now();
    let mut h = hub(HubConfig {
        grace: Duration::from_secs(30),
        ..HubConfig::default()
    });
    let mut a = join(&mut h, t0, "r");
    let mut b = join(&mut h, t0, "r");
    recv(&h, &mut a);
    recv(&h, &mut b);
    assert_eq!(h.poll_timeout(), None);
    h.detach(t0, b.key, b.att.stream);
    assert_eq!(h.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    h.handle_timeout(t0 + Duration::from_secs(29));
    assert!(h.contains(b.key));
    assert!(recv(&h, &mut a).is_empty());
    // resume in time: nothing visible
    h.resume(t0 + Duration::from_secs(29), &b.token, b.seen, ice)
        .unwrap();
    assert_eq!(h.poll_timeout(), None);
    h.handle_timeout(t0 + Duration::from_secs(100));
    assert!(recv(&h, &mut a).is_empty());
    // detach again and let it lapse
    let cur = h.current_stream(b.key).unwrap();
    h.detach(t0 + Duration::from_secs(100), b.key, cur);
    h.handle_timeout(t0 + Duration::from_secs(130));
    assert!(!h.contains(b.key));
    assert_eq!(
        recv(&h, &mut a),
        vec![json!({"type":"peer-left","seq":3,"peer": b.peer,"reason":"timeout"})]
    );
    assert_eq!(
        h.resume(t0 + Duration::from_secs(131), &b.token, 0, ice)
            .unwrap_err()
            .code,
        ErrorCode::ResumeFailed
    );
    assert_eq!(
        h.drain_closed().collect::<Vec<_>>(),
        vec![(b.key, CloseReason::Timeout)]
    );
    // a joined session that never attaches lapses too
    let j = h.join(t0, NOW_UNIX, Join::room("r"), ice).unwrap();
    h.handle_timeout(t0 + Duration::from_secs(31));
    assert!(!h.contains(j.key));
}

#[test]
fn replay_limit_makes_resume_fail() {
    let now = Instant::now();
    let mut h = hub(HubConfig {
        replay_limit: 4,
        ..HubConfig::default()
    });
    let mut a = join(&mut h, now, "r");
    let mut b = join(&mut h, now, "r");
    recv(&h, &mut a); // seq 1..2
    recv(&h, &mut b);
    h.detach(now, a.key, a.att.stream);
    for i in 0..4 {
        send(
            &mut h,
            now,
            &b,
            &format!(r#"{{"type":"broadcast","data":{i}}}"#),
        )
        .unwrap();
    }
    // a holds seq 3..6; last_seq 2 still works
    assert!(h.pending_after(a.key, 2).is_ok());
    send(&mut h, now, &b, r#"{"type":"broadcast","data":4}"#).unwrap();
    // now 4..7: seq 3 was dropped
    assert_eq!(
        h.resume(now, &a.token, 2, ice).unwrap_err().code,
        ErrorCode::ResumeFailed
    );
    let att = h.resume(now, &a.token, 3, ice).unwrap();
    assert_eq!(att.from_seq, 3);
    a.seen = 3;
    let m = recv(&h, &mut a);
    assert_eq!(
        types(&m),
        [
            "broadcast",
            "broadcast",
            "broadcast",
            "broadcast",
            "resumed"
        ]
    );
    assert_eq!(m[0]["data"], 1);
}

#[test]
fn tokens() {
    let secret = b"s3cret".to_vec();
    let now = Instant::now();
    let mut h = hub(HubConfig {
        token_secret: Some(secret.clone()),
        ..HubConfig::default()
    });
    let exp = NOW_UNIX + 60;
    let with = |t: Option<String>| Join {
        token: t,
        ..Join::room("demo")
    };
    let code =
        |h: &mut Hub, t: Option<String>| h.join(now, NOW_UNIX, with(t), ice).unwrap_err().code;

    assert_eq!(code(&mut h, None), ErrorCode::Unauthorized);
    assert_eq!(
        code(&mut h, Some("garbage".into())),
        ErrorCode::Unauthorized
    );
    assert_eq!(
        code(&mut h, Some(token::sign(b"other", "demo", None, exp, None))),
        ErrorCode::Unauthorized
    );
    assert_eq!(
        code(
            &mut h,
            Some(token::sign(&secret, "demo", None, NOW_UNIX, None))
        ),
        ErrorCode::Unauthorized
    );
    assert_eq!(
        code(
            &mut h,
            Some(token::sign(&secret, "elsewhere", None, exp, None))
        ),
        ErrorCode::Forbidden
    );
    // no `create`: cannot create the room
    let no_create = token::sign(&secret, "demo", Some("bob"), exp, Some(&[Perm::Signal]));
    assert_eq!(code(&mut h, Some(no_create.clone())), ErrorCode::Forbidden);
    // `*` with all perms creates; `sub` becomes the name
    let mut a = join_as(
        &mut h,
        now,
        with(Some(token::sign(&secret, "*", Some("alice"), exp, None))),
    );
    recv(&h, &mut a);
    // now bob can join (room exists) and signal but not broadcast
    let mut b = join_as(&mut h, now, with(Some(no_create)));
    let m = recv(&h, &mut b);
    assert_eq!(m[0]["peers"], json!([{"id": a.peer, "name": "alice"}]));
    let m = recv(&h, &mut a);
    assert_eq!(m[0]["peer"]["name"], "bob");
    assert_eq!(
        send(&mut h, now, &b, r#"{"type":"broadcast","data":1}"#),
        Err(ErrorCode::Forbidden)
    );
    let msg = format!(r#"{{"type":"signal","to":"{}","data":1}}"#, a.peer);
    assert_eq!(send(&mut h, now, &b, &msg), Ok(Handled::Ok));
    // explicit name wins over sub
    let mut j = with(Some(token::sign(
        &secret,
        "demo",
        Some("carol"),
        exp,
        Some(&[]),
    )));
    j.name = Some("C".into());
    let mut c = join_as(&mut h, now, j);
    assert_eq!(recv(&h, &mut c)[0]["type"], "joined");
    assert_eq!(recv(&h, &mut a).last().unwrap()["peer"]["name"], "C");
    let msg = format!(r#"{{"type":"signal","to":"{}","data":1}}"#, a.peer);
    assert_eq!(send(&mut h, now, &c, &msg), Err(ErrorCode::Forbidden));
}

/// Random interleavings of sends, forced detaches and resumes with a random `last_seq` ≤ what
/// the client saw: every client sees every message exactly once, in order.
#[test]
fn resume_without_loss_or_duplicates() {
    for seed in 0..40u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let t0 = Instant::now();
        let mut h = hub(HubConfig::default());
        let n = rng.random_range(2..5);
        let mut cs: Vec<Client> = (0..n).map(|_| join(&mut h, t0, "r")).collect();
        // what each client has "seen" (seq-wise), and whether it is connected
        let mut connected = vec![true; n];
        let mut sent_to: Vec<Vec<String>> = vec![Vec::new(); n];
        let mut counter = 0u64;
        for step in 0..300 {
            let now = t0 + Duration::from_millis(step);
            let i = rng.random_range(0..n);
            match rng.random_range(0..10) {
                0..=3 => {
                    // i sends a signal or broadcast (if connected or not: sending works over HTTP)
                    counter += 1;
                    let tag = format!("m{counter}");
                    if rng.random_bool(0.5) {
                        let j = (i + 1 + rng.random_range(0..n - 1)) % n;
                        let msg = format!(
                            r#"{{"type":"signal","to":"{}","data":"{tag}"}}"#,
                            cs[j].peer
                        );
                        send(&mut h, now, &cs[i], &msg).unwrap();
                        sent_to[j].push(tag);
                    } else {
                        let msg = format!(r#"{{"type":"broadcast","data":"{tag}"}}"#);
                        send(&mut h, now, &cs[i], &msg).unwrap();
                        for (j, s) in sent_to.iter_mut().enumerate() {
                            if j != i {
                                s.push(tag.clone());
                            }
                        }
                    }
                }
                4..=5 => {
                    // deliver to a connected client, maybe only partly
                    if connected[i] {
                        let c = &mut cs[i];
                        let limit = rng.random_range(0..5);
                        let items: Vec<(u64, String)> = h
                            .pending_after(c.key, c.seen)
                            .unwrap()
                            .take(limit)
                            .map(|(s, t)| (s, t.to_owned()))
                            .collect();
                        for (seq, text) in items {
                            assert_eq!(seq, c.seen + 1);
                            c.seen = seq;
                            c.got.push(serde_json::from_str(&text).unwrap());
                        }
                    }
                }
                6 => {
                    if connected[i] && rng.random_bool(0.5) {
                        let c = &cs[i];
                        let msg =
                            format!(r#"{{"type":"ack","seq":{}}}"#, rng.random_range(0..=c.seen));
                        send(&mut h, now, c, &msg).unwrap();
                    }
                }
                7 => {
                    if connected[i] {
                        assert!(h.detach(now, cs[i].key, cs[i].att.stream));
                        connected[i] = false;
                    }
                }
                _ => {
                    if !connected[i] || rng.random_bool(0.2) {
                        // resume with last_seq ≤ seen but ≥ what was acked: pick seen, or
                        // rewind within what is still held (the client "lost" some messages)
                        let c = &mut cs[i];
                        assert!(h.pending_after(c.key, c.seen).is_ok());
                        let mut last = c.seen;
                        while last > 0
                            && rng.random_bool(0.3)
                            && h.pending_after(c.key, last - 1).is_ok()
                        {
                            last -= 1;
                        }
                        // a rewind drops what the client "saw" after `last`
                        while c.seen > last {
                            c.got.pop();
                            c.seen -= 1;
                        }
                        let att = h.resume(now, &c.token, last, ice).unwrap();
                        c.att = att;
                        connected[i] = true;
                    }
                }
            }
        }
        // everyone reconnects and drains
        let end = t0 + Duration::from_secs(1);
        for (i, c) in cs.iter_mut().enumerate() {
            if !connected[i] {
                c.att = h.resume(end, &c.token, c.seen, ice).unwrap();
            }
            recv(&h, c);
            // sequence numbers strictly consecutive over the whole history
            for (k, v) in c.got.iter().enumerate() {
                assert_eq!(v["seq"], json!(k as u64 + 1), "seed {seed}");
            }
            let data: Vec<String> = c
                .got
                .iter()
                .filter_map(|v| v["data"].as_str().map(str::to_owned))
                .collect();
            assert_eq!(data, sent_to[i], "seed {seed} client {i}");
        }
    }
}

#[test]
fn lookup_is_by_token() {
    let now = Instant::now();
    let mut h = hub(HubConfig::default());
    let a = join(&mut h, now, "r");
    assert_eq!(h.lookup(&a.token), Some(a.key));
    assert_eq!(h.lookup(""), None);
    assert_eq!(h.lookup(&"A".repeat(43)), None);
    assert_eq!(h.lookup(&format!("{}x", a.token)), None);
    assert_eq!(h.peer_and_room(a.key), Some((a.peer.as_str(), "r")));
}

#[test]
fn client_message_ids() {
    let m = parse_client(r#"{"type":"broadcast","data":1,"id":"b"}"#, 100).unwrap();
    assert_eq!(m.id(), Some("b"));
    assert!(matches!(m, ClientMessage::Broadcast(_)));
}

#[test]
fn attached_count_follows_attach_detach_resume_and_leave() {
    // `stats` is served to /metrics and the drain loop: a count, not a walk over sessions.
    let mut h = hub(HubConfig::default());
    let now = Instant::now();
    let a = join(&mut h, now, "r");
    let b = join(&mut h, now, "r");
    assert_eq!(h.stats().attached, 2);
    assert!(h.detach(now, b.key, b.att.stream));
    assert!(!h.detach(now, b.key, b.att.stream), "twice is once");
    assert_eq!(h.stats().attached, 1);
    let again = h.attach(now, b.key, 0).unwrap();
    let newer = h.attach(now, b.key, 0).unwrap();
    assert_eq!(
        h.stats().attached,
        2,
        "superseding a stream keeps one attached"
    );
    assert!(!h.detach(now, b.key, again.stream));
    assert!(h.detach(now, b.key, newer.stream));
    h.handle_timeout(now + Duration::from_secs(3600));
    assert_eq!(h.stats().sessions, 1);
    assert_eq!(h.stats().attached, 1);
    let leave = parse_client(r#"{"type":"leave"}"#, 1024).unwrap();
    h.handle(now, a.key, leave).unwrap();
    assert_eq!(h.stats().attached, 0);
    assert_eq!(h.stats().sessions, 0);
}

/// Fuzz finding (signal_hub): a resume refused because `resumed` would push the replay it ends
/// past the limit used to queue `resumed` anyway and evict the oldest message — a refusal with
/// side effects (the session's last seq moved without a wake, and the replay of the stream still
/// attached lost a message). A refused resume now changes nothing.
#[test]
fn refused_resume_changes_nothing() {
    let now = Instant::now();
    let mut h = hub(HubConfig {
        replay_limit: 2,
        ..HubConfig::default()
    });
    let a = join(&mut h, now, "r");
    // a holds joined (1) and peer-joined (2): at the limit.
    let _b = join(&mut h, now, "r");
    // From 0: two messages and `resumed` (over the limit by that one message).
    let att = h.resume(now, &a.token, 0, ice).unwrap();
    assert_eq!(h.last_seq(a.key), Some(3));
    h.drain_dirty().count();
    // From 0 again: three messages and `resumed` do not fit: refused...
    assert_eq!(
        h.resume(now, &a.token, 0, ice).unwrap_err().code,
        ErrorCode::ResumeFailed
    );
    // ...and nothing changed: no `resumed` queued, the replay intact, the stream still attached.
    assert_eq!(h.last_seq(a.key), Some(3));
    assert_eq!(h.pending_after(a.key, 0).unwrap().count(), 3);
    assert_eq!(h.current_stream(a.key), Some(att.stream));
    assert_eq!(h.drain_dirty().count(), 0);
    // A resume from what the client saw still works.
    let att2 = h.resume(now, &a.token, 3, ice).unwrap();
    assert_ne!(att2.stream, att.stream);
    assert_eq!(h.last_seq(a.key), Some(4));
}

#[test]
fn a_global_buffer_cap_refuses_new_messages_and_drops_nothing() {
    // Sessions that never acknowledge cannot make the server hold unbounded memory: past
    // max_buffered_bytes in all replay buffers, signal/broadcast get server_full; what is
    // queued stays, and acknowledging frees room again.
    let now = Instant::now();
    let mut h = hub(HubConfig {
        max_buffered_bytes: 64 * 1024,
        ..HubConfig::default()
    });
    let mut a = join(&mut h, now, "r");
    let mut b = join(&mut h, now, "r");
    let big = "x".repeat(4000);
    let msg = format!(r#"{{"type":"broadcast","data":"{big}"}}"#);
    let mut sent = 0;
    let refused = loop {
        match send(&mut h, now, &a, &msg) {
            Ok(_) => sent += 1,
            Err(code) => break code,
        }
        assert!(sent < 100, "never refused");
    };
    assert_eq!(refused, ErrorCode::ServerFull);
    // Client messages stay under the cap; the server's own (the error to A) may pass it.
    assert!(
        h.stats().buffered_bytes <= 64 * 1024 + 1024,
        "{}",
        h.stats().buffered_bytes
    );
    // B holds every message that was accepted, none lost.
    let got = recv(&h, &mut b);
    let broadcasts = got.iter().filter(|m| m["type"] == "broadcast").count();
    assert_eq!(broadcasts, sent);
    // A was told (a sequenced error), and after B acknowledges there is room again.
    assert!(recv(&h, &mut a).iter().any(|m| m["code"] == "server_full"));
    let ack = parse_client(&format!(r#"{{"type":"ack","seq":{}}}"#, b.seen), 1024).unwrap();
    h.handle(now, b.key, ack).unwrap();
    let ack = parse_client(&format!(r#"{{"type":"ack","seq":{}}}"#, a.seen), 1024).unwrap();
    h.handle(now, a.key, ack).unwrap();
    assert!(send(&mut h, now, &a, &msg).is_ok());
    // Sessions that end give their bytes back.
    let leave = parse_client(r#"{"type":"leave"}"#, 1024).unwrap();
    h.handle(now, b.key, leave).unwrap();
    let leave = parse_client(r#"{"type":"leave"}"#, 1024).unwrap();
    h.handle(now, a.key, leave).unwrap();
    assert_eq!(h.stats().buffered_bytes, 0);
}

#[test]
fn auto_room_switches_to_sfu_past_mesh_max_and_stays() {
    let now = Instant::now();
    let mut h = hub(HubConfig {
        sfu: true,
        mesh_max: 4,
        ..HubConfig::default()
    });
    let mut members: Vec<Client> = (0..4).map(|_| join(&mut h, now, "grow")).collect();
    for c in &mut members {
        let got = recv(&h, c);
        assert!(!types(&got).contains(&"topology"));
    }
    assert_eq!(members[0].got[0]["topology"], json!("mesh"));
    assert_eq!(members[3].got[0]["topology"], json!("mesh"));
    // An `sfu` message in a mesh room is refused.
    assert_eq!(
        send(
            &mut h,
            now,
            &members[0],
            r#"{"type":"sfu","data":{"kind":"offer"}}"#
        ),
        Err(ErrorCode::BadMessage)
    );
    let mut fifth = join(&mut h, now, "grow");
    assert_eq!(recv(&h, &mut fifth)[0]["topology"], json!("sfu"));
    for c in &mut members {
        let got = recv(&h, c);
        let t = types(&got);
        // `topology` comes before the newcomer's `peer-joined`.
        let pos_t = t.iter().position(|x| *x == "topology").unwrap();
        let pos_j = t.iter().position(|x| *x == "peer-joined").unwrap();
        assert!(pos_t < pos_j, "{t:?}");
        assert_eq!(got[pos_t]["topology"], json!("sfu"));
    }
    // `sfu` messages now reach the SFU queue, stamped with room and peer.
    assert_eq!(
        send(
            &mut h,
            now,
            &members[1],
            r#"{"type":"sfu","data":{"kind":"offer","sdp":"x"}}"#
        ),
        Ok(Handled::Ok)
    );
    let inputs: Vec<_> = h.drain_sfu().collect();
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0].room, "grow");
    assert_eq!(inputs[0].peer, members[1].peer);
    assert_eq!(inputs[0].data.get(), r#"{"kind":"offer","sdp":"x"}"#);
    // The SFU answers one member; a speaker event reaches all.
    let data = serde_json::value::RawValue::from_string(r#"{"kind":"answer"}"#.into()).unwrap();
    assert!(h.push_sfu("grow", &members[1].peer, data));
    let data = serde_json::value::RawValue::from_string(r#"{"kind":"answer"}"#.into()).unwrap();
    assert!(!h.push_sfu("other", &members[1].peer, data));
    let got = recv(&h, &mut members[1]);
    assert_eq!(got[0]["type"], json!("sfu"));
    assert_eq!(got[0]["data"]["kind"], json!("answer"));
    // Leaving an SFU room is reported to the SFU; shrinking does not switch back.
    send(&mut h, now, &fifth, r#"{"type":"leave"}"#).unwrap();
    send(&mut h, now, &members[3], r#"{"type":"leave"}"#).unwrap();
    let gone: Vec<_> = h.drain_departed().collect();
    assert_eq!(gone.len(), 2);
    assert!(gone.contains(&("grow".to_string(), fifth.peer.clone())));
    assert_eq!(h.topology("grow"), Some(icebreaker_signal::Topology::Sfu));
    let late = join(&mut h, now, "grow");
    let mut late = late;
    assert_eq!(recv(&h, &mut late)[0]["topology"], json!("sfu"));
}

#[test]
fn topology_requests_mesh_sfu_and_without_sfu() {
    let now = Instant::now();
    let mut h = hub(HubConfig {
        sfu: true,
        mesh_max: 2,
        ..HubConfig::default()
    });
    let mut j = Join::room("m");
    j.topology = Some(icebreaker_signal::TopologyRequest::Mesh);
    let mut first = join_as(&mut h, now, j);
    for _ in 0..4 {
        join(&mut h, now, "m");
    }
    let got = recv(&h, &mut first);
    assert!(
        !types(&got).contains(&"topology"),
        "a mesh room never switches"
    );
    let mut j = Join::room("s");
    j.topology = Some(icebreaker_signal::TopologyRequest::Sfu);
    let mut s = join_as(&mut h, now, j);
    assert_eq!(recv(&h, &mut s)[0]["topology"], json!("sfu"));
    // Later joins cannot change it.
    let mut j = Join::room("s");
    j.topology = Some(icebreaker_signal::TopologyRequest::Mesh);
    let mut t = join_as(&mut h, now, j);
    assert_eq!(recv(&h, &mut t)[0]["topology"], json!("sfu"));

    // Without an SFU: `auto` stays a mesh, `sfu` is refused.
    let mut h = hub(HubConfig {
        mesh_max: 2,
        ..HubConfig::default()
    });
    let mut j = Join::room("x");
    j.topology = Some(icebreaker_signal::TopologyRequest::Sfu);
    assert_eq!(
        h.join(now, NOW_UNIX, j, ice).unwrap_err().code,
        ErrorCode::BadMessage
    );
    let mut a = join(&mut h, now, "y");
    for _ in 0..4 {
        join(&mut h, now, "y");
    }
    assert!(!types(&recv(&h, &mut a)).contains(&"topology"));
}

/// The server's socket.io transport joins `socket.io/<room>` (capacity 2, mesh): the hub takes
/// such names from inside the server, a client's `join` cannot name them, and room tokens name
/// them in full.
#[test]
fn socketio_rooms_come_from_the_server_only() {
    use icebreaker_signal::proto::{valid_socketio_room, SOCKETIO_ROOM_PREFIX};
    use icebreaker_signal::TopologyRequest;
    assert!(valid_socketio_room("socket.io/foo"));
    for bad in [
        "socket.io/",
        "socket.io/a/b",
        "socket.io/a b",
        "foo",
        "x/socket.io/foo",
    ] {
        assert!(!valid_socketio_room(bad), "{bad}");
    }
    // A client cannot name one.
    let e = parse_client(r#"{"type":"join","room":"socket.io/foo"}"#, 65536).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRoom);

    let now = Instant::now();
    let mut h = hub(HubConfig::default());
    let sio = |room: &str| Join {
        capacity: Some(2),
        topology: Some(TopologyRequest::Mesh),
        ..Join::room(format!("{SOCKETIO_ROOM_PREFIX}{room}"))
    };
    let mut a = join_as(&mut h, now, sio("foo"));
    let mut b = join_as(&mut h, now, sio("foo"));
    let ja = recv(&h, &mut a);
    assert_eq!(types(&ja), ["joined", "peer-joined"]);
    assert_eq!(ja[0]["room"], "socket.io/foo");
    assert_eq!(ja[0]["capacity"], 2);
    assert_eq!(ja[0]["initiator"], true);
    assert_eq!(recv(&h, &mut b)[0]["initiator"], false);
    let err = h.join(now, NOW_UNIX, sio("foo"), ice).unwrap_err();
    assert_eq!(err.code, ErrorCode::RoomFull);
    // The native room `foo` is another room.
    let mut n = join(&mut h, now, "foo");
    send(
        &mut h,
        now,
        &a,
        r#"{"type":"broadcast","data":"got user media"}"#,
    )
    .unwrap();
    assert_eq!(recv(&h, &mut b)[0]["data"], "got user media");
    assert_eq!(types(&recv(&h, &mut n)), ["joined"]);
    // Leaving frees the place.
    send(&mut h, now, &a, r#"{"type":"leave"}"#).unwrap();
    assert_eq!(types(&recv(&h, &mut b)), ["peer-left"]);
    join_as(&mut h, now, sio("foo"));

    // With room tokens, the claim names the hub room.
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let mut h = hub(HubConfig {
        token_secret: Some(secret.clone()),
        ..HubConfig::default()
    });
    let tok = |room: &str| token::sign(&secret, room, None, NOW_UNIX + 60, None);
    let with = |t: String| Join {
        token: Some(t),
        ..sio("foo")
    };
    assert_eq!(
        h.join(now, NOW_UNIX, with(tok("foo")), ice)
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
    assert!(h
        .join(now, NOW_UNIX, with(tok("socket.io/foo")), ice)
        .is_ok());
}

#[test]
fn sip_messages_need_sip_dial_the_dial_permission_and_a_mesh_room() {
    let now = Instant::now();
    let dial = r#"{"type":"sip","data":{"kind":"dial","uri":"tel:+15550100"}}"#;
    // Off: refused.
    let mut h = hub(HubConfig::default());
    let a = join(&mut h, now, "r");
    assert_eq!(send(&mut h, now, &a, dial), Err(ErrorCode::BadMessage));
    assert_eq!(h.drain_sip().count(), 0);
    // On: queued with room and peer.
    let mut h = hub(HubConfig {
        sip_dial: true,
        sfu: true,
        ..HubConfig::default()
    });
    let a = join(&mut h, now, "r");
    assert!(send(&mut h, now, &a, dial).is_ok());
    let queued: Vec<_> = h.drain_sip().collect();
    assert_eq!(queued.len(), 1);
    assert_eq!(
        (queued[0].room.as_str(), queued[0].peer.as_str()),
        ("r", a.peer.as_str())
    );
    assert!(queued[0].data.get().contains("tel:+15550100"));
    assert_eq!(
        send(&mut h, now, &a, r#"{"type":"sip","data":"dial"}"#),
        Err(ErrorCode::BadMessage),
        "data must be an object"
    );
    // SFU rooms: refused (the phone is a mesh peer).
    let s = join_as(
        &mut h,
        now,
        Join {
            topology: Some(icebreaker_signal::TopologyRequest::Sfu),
            ..Join::room("big")
        },
    );
    assert_eq!(send(&mut h, now, &s, dial), Err(ErrorCode::BadMessage));
    // With room tokens: only a token that grants `dial`.
    let secret = b"s3cret".to_vec();
    let mut h = hub(HubConfig {
        sip_dial: true,
        token_secret: Some(secret.clone()),
        ..HubConfig::default()
    });
    let exp = NOW_UNIX + 60;
    let with = |perms: Option<&[Perm]>| Join {
        token: Some(token::sign(&secret, "t", None, exp, perms)),
        ..Join::room("t")
    };
    let plain = join_as(&mut h, now, with(None));
    assert_eq!(send(&mut h, now, &plain, dial), Err(ErrorCode::Forbidden));
    let dialer = join_as(
        &mut h,
        now,
        with(Some(&[Perm::Create, Perm::Signal, Perm::Dial])),
    );
    assert!(send(&mut h, now, &dialer, dial).is_ok());
    assert_eq!(h.drain_sip().count(), 1);
}
