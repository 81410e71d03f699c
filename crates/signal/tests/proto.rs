//! Exact JSON of server messages and every parse error.

#![allow(clippy::unwrap_used)]

use icebreaker_signal::proto::{parse_client, valid_room, DEFAULT_MAX_MESSAGE};
use icebreaker_signal::{
    ClientMessage, ErrorCode, LeaveReason, PeerInfo, ProtoError, ServerMessage, Topology,
    TopologyRequest,
};
use serde_json::json;
use serde_json::value::RawValue;

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap()
}

#[test]
fn joined_json() {
    let m = ServerMessage::Joined {
        session: "q1".into(),
        peer: "3fa2b0c1".into(),
        room: "demo".into(),
        initiator: true,
        capacity: 50,
        peers: vec![],
        ice_servers: json!([{"urls":["stun:192.0.2.7:3478"]}]),
        grace: 30,
        topology: Topology::Mesh,
    };
    assert_eq!(
        m.encode().with_seq(1),
        r#"{"type":"joined","seq":1,"session":"q1","peer":"3fa2b0c1","room":"demo","initiator":true,"capacity":50,"peers":[],"iceServers":[{"urls":["stun:192.0.2.7:3478"]}],"grace":30,"topology":"mesh"}"#
    );
}

#[test]
fn peer_joined_json() {
    let m = ServerMessage::PeerJoined {
        peer: PeerInfo {
            id: "77e01d9a".into(),
            name: Some("Grace".into()),
            meta: None,
        },
    };
    assert_eq!(
        m.encode().with_seq(2),
        r#"{"type":"peer-joined","seq":2,"peer":{"id":"77e01d9a","name":"Grace"}}"#
    );
    let m = ServerMessage::PeerJoined {
        peer: PeerInfo {
            id: "77e01d9a".into(),
            name: None,
            meta: Some(raw(r#"{"a":1}"#)),
        },
    };
    assert_eq!(
        m.encode().with_seq(12),
        r#"{"type":"peer-joined","seq":12,"peer":{"id":"77e01d9a","meta":{"a":1}}}"#
    );
}

#[test]
fn peer_left_json() {
    for (reason, s) in [
        (LeaveReason::Left, "left"),
        (LeaveReason::Timeout, "timeout"),
        (LeaveReason::Kicked, "kicked"),
    ] {
        let m = ServerMessage::PeerLeft {
            peer: "77e01d9a".into(),
            reason,
        };
        assert_eq!(
            m.encode().with_seq(4),
            format!(r#"{{"type":"peer-left","seq":4,"peer":"77e01d9a","reason":"{s}"}}"#)
        );
    }
}

#[test]
fn signal_and_broadcast_json_keep_data_verbatim() {
    let data = r#"{"sdp":{"type":"answer","sdp":"v=0…"}}"#;
    let m = ServerMessage::Signal {
        from: "77e01d9a".into(),
        data: raw(data),
    };
    assert_eq!(
        m.encode().with_seq(3),
        format!(r#"{{"type":"signal","seq":3,"from":"77e01d9a","data":{data}}}"#)
    );
    let m = ServerMessage::Broadcast {
        from: "77e01d9a".into(),
        data: raw("[1,2,\"x\"]"),
    };
    assert_eq!(
        m.encode().with_seq(18446744073709551615),
        r#"{"type":"broadcast","seq":18446744073709551615,"from":"77e01d9a","data":[1,2,"x"]}"#
    );
}

#[test]
fn resumed_json() {
    let m = ServerMessage::Resumed {
        peer: "3fa2b0c1".into(),
        room: "demo".into(),
        peers: vec![PeerInfo {
            id: "77e01d9a".into(),
            name: None,
            meta: None,
        }],
        ice_servers: json!([]),
        topology: Topology::Sfu,
    };
    assert_eq!(
        m.encode().with_seq(9),
        r#"{"type":"resumed","seq":9,"peer":"3fa2b0c1","room":"demo","peers":[{"id":"77e01d9a"}],"iceServers":[],"topology":"sfu"}"#
    );
}

#[test]
fn topology_and_sfu_json() {
    assert_eq!(
        ServerMessage::Topology {
            topology: Topology::Sfu
        }
        .encode()
        .with_seq(4),
        r#"{"type":"topology","seq":4,"topology":"sfu"}"#
    );
    assert_eq!(
        ServerMessage::Sfu {
            data: raw(r#"{"kind":"speaker","peer":null}"#)
        }
        .encode()
        .with_seq(5),
        r#"{"type":"sfu","seq":5,"data":{"kind":"speaker","peer":null}}"#
    );
}

#[test]
fn parse_sfu_and_topology() {
    let m = parse_client(
        r#"{"type":"sfu","data":{"kind":"offer","sdp":"v=0"},"id":"x"}"#,
        65536,
    )
    .unwrap();
    match m {
        ClientMessage::Sfu(s) => {
            assert_eq!(s.data.get(), r#"{"kind":"offer","sdp":"v=0"}"#);
            assert_eq!(s.id.as_deref(), Some("x"));
        }
        other => panic!("{other:?}"),
    }
    for bad in [
        r#"{"type":"sfu"}"#,
        r#"{"type":"sfu","data":[1]}"#,
        r#"{"type":"sfu","data":"x"}"#,
    ] {
        let e = parse_client(bad, 65536).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadMessage, "{bad}");
    }
    let j = parse_client(r#"{"type":"join","room":"a","topology":"sfu"}"#, 65536).unwrap();
    assert!(matches!(j, ClientMessage::Join(j) if j.topology == Some(TopologyRequest::Sfu)));
    let e = parse_client(r#"{"type":"join","room":"a","topology":"star"}"#, 65536).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadMessage);
    assert!(e.message.contains("topology"), "{}", e.message);
}

#[test]
fn pong_json_has_no_seq() {
    assert_eq!(
        ServerMessage::Pong { id: None }.encode().without_seq(),
        r#"{"type":"pong"}"#
    );
    assert_eq!(
        ServerMessage::Pong {
            id: Some("p1".into())
        }
        .encode()
        .without_seq(),
        r#"{"type":"pong","id":"p1"}"#
    );
}

#[test]
fn error_json() {
    let e = ProtoError::new(ErrorCode::UnknownPeer, "no such peer in this room")
        .with_id(Some("m7".into()));
    assert_eq!(
        e.to_json(Some(5)),
        r#"{"type":"error","seq":5,"code":"unknown_peer","message":"no such peer in this room","ref":"m7"}"#
    );
    let e = ProtoError::new(ErrorCode::ResumeFailed, "gone");
    assert_eq!(
        e.to_json(None),
        r#"{"type":"error","code":"resume_failed","message":"gone"}"#
    );
}

#[test]
fn error_codes_serialise_as_documented() {
    let all = [
        (ErrorCode::BadMessage, "bad_message"),
        (ErrorCode::TooLarge, "too_large"),
        (ErrorCode::RateLimited, "rate_limited"),
        (ErrorCode::InvalidRoom, "invalid_room"),
        (ErrorCode::RoomFull, "room_full"),
        (ErrorCode::ServerFull, "server_full"),
        (ErrorCode::Unauthorized, "unauthorized"),
        (ErrorCode::Forbidden, "forbidden"),
        (ErrorCode::NotJoined, "not_joined"),
        (ErrorCode::AlreadyJoined, "already_joined"),
        (ErrorCode::UnknownPeer, "unknown_peer"),
        (ErrorCode::ResumeFailed, "resume_failed"),
        (ErrorCode::Internal, "internal"),
    ];
    for (code, s) in all {
        assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{s}\""));
        assert_eq!(code.as_str(), s);
    }
}

fn parse(s: &str) -> Result<ClientMessage, ProtoError> {
    parse_client(s, DEFAULT_MAX_MESSAGE)
}

fn code(s: &str) -> ErrorCode {
    parse(s).unwrap_err().code
}

#[test]
fn parses_every_client_message() {
    match parse(r#"{"type":"join","room":"demo","name":"Ada","meta":{ "a" : [1, 2] },"capacity":2,"token":"t","id":"j1","from":"x"}"#).unwrap() {
        ClientMessage::Join(j) => {
            assert_eq!(j.room, "demo");
            assert_eq!(j.name.as_deref(), Some("Ada"));
            assert_eq!(j.meta.unwrap().get(), r#"{"a":[1,2]}"#);
            assert_eq!(j.capacity, Some(2));
            assert_eq!(j.token.as_deref(), Some("t"));
            assert_eq!(j.id.as_deref(), Some("j1"));
        }
        m => panic!("{m:?}"),
    }
    assert_eq!(
        parse(r#"{"type":"resume","session":"S","last_seq":7}"#).unwrap(),
        ClientMessage::Resume(icebreaker_signal::Resume {
            session: "S".into(),
            last_seq: 7
        })
    );
    match parse(r#"{"type":"signal","to":"77e01d9a","data":{"sdp": 1},"id":"s1","from":"evil"}"#)
        .unwrap()
    {
        ClientMessage::Signal(s) => {
            assert_eq!(s.to, "77e01d9a");
            assert_eq!(s.data.get(), r#"{"sdp": 1}"#);
            assert_eq!(s.id.as_deref(), Some("s1"));
        }
        m => panic!("{m:?}"),
    }
    match parse(r#"{"type":"broadcast","data":null}"#).unwrap() {
        ClientMessage::Broadcast(b) => assert_eq!(b.data.get(), "null"),
        m => panic!("{m:?}"),
    }
    assert_eq!(
        parse(r#"{"type":"ack","seq":3}"#).unwrap(),
        ClientMessage::Ack { seq: 3 }
    );
    assert_eq!(
        parse(r#" {"type":"ping","id":"p"} "#).unwrap(),
        ClientMessage::Ping {
            id: Some("p".into())
        }
    );
    assert_eq!(
        parse(r#"{"type":"leave","unknown":{"deep":[1]}}"#).unwrap(),
        ClientMessage::Leave { id: None }
    );
}

#[test]
fn malformed_inputs_are_bad_message() {
    for s in [
        "",
        "not json",
        "{",
        r#"{"type":"ping""#,
        "[]",
        r#"[{"type":"ping"}]"#,
        r#"["ping"]"#,
        "42",
        "\"ping\"",
        "null",
        "{}",
        r#"{"type":"nope"}"#,
        r#"{"type":42}"#,
        r#"{"type":null}"#,
        r#"{"type":"join"}"#,
        r#"{"type":"join","room":5}"#,
        r#"{"type":"join","room":"r","name":5}"#,
        r#"{"type":"join","room":"r","capacity":"2"}"#,
        r#"{"type":"join","room":"r","capacity":-1}"#,
        r#"{"type":"join","room":"r","capacity":2.5}"#,
        r#"{"type":"join","room":"r","token":1}"#,
        r#"{"type":"join","room":"r","meta":[1]}"#,
        r#"{"type":"join","room":"r","meta":"x"}"#,
        r#"{"type":"resume","session":"S"}"#,
        r#"{"type":"resume","last_seq":1}"#,
        r#"{"type":"resume","session":"S","last_seq":-1}"#,
        r#"{"type":"signal","data":1}"#,
        r#"{"type":"signal","to":"a"}"#,
        r#"{"type":"signal","to":1,"data":1}"#,
        r#"{"type":"broadcast"}"#,
        r#"{"type":"ack"}"#,
        r#"{"type":"ack","seq":"1"}"#,
        r#"{"type":"ping","id":5}"#,
        r#"{"type":"ping","type":"ping"}"#,
        r#"{"type":"ping"} x"#,
    ] {
        assert_eq!(code(s), ErrorCode::BadMessage, "{s}");
    }
}

#[test]
fn too_large() {
    let big = format!(r#"{{"type":"broadcast","data":"{}"}}"#, "x".repeat(100));
    assert_eq!(
        parse_client(&big, 50).unwrap_err().code,
        ErrorCode::TooLarge
    );
    assert!(parse_client(&big, big.len()).is_ok());
    assert_eq!(
        parse_client("garbage that is long", 5).unwrap_err().code,
        ErrorCode::TooLarge
    );
}

#[test]
fn room_names() {
    for ok in ["a", "demo", "A-Z_a.z-09", &"x".repeat(64)] {
        assert!(valid_room(ok), "{ok}");
        assert!(parse(&format!(r#"{{"type":"join","room":"{ok}"}}"#)).is_ok());
    }
    for bad in [
        "",
        "a b",
        "é",
        "a/b",
        "a:b",
        "<x>",
        &"x".repeat(65),
        "a\\u0000",
    ] {
        assert_eq!(
            code(&format!(r#"{{"type":"join","room":"{bad}"}}"#)),
            ErrorCode::InvalidRoom,
            "{bad}"
        );
    }
}

#[test]
fn name_id_and_meta_limits() {
    let n64 = "é".repeat(64);
    assert!(parse(&format!(r#"{{"type":"join","room":"r","name":"{n64}"}}"#)).is_ok());
    let n65 = "é".repeat(65);
    assert_eq!(
        code(&format!(r#"{{"type":"join","room":"r","name":"{n65}"}}"#)),
        ErrorCode::BadMessage
    );
    assert_eq!(
        code(&format!(r#"{{"type":"ping","id":"{}"}}"#, "i".repeat(65))),
        ErrorCode::BadMessage
    );
    // meta: 1024 bytes of compact JSON is fine, 1025 is not; whitespace does not count.
    let fill = |n: usize| format!(r#"{{"k":"{}"}}"#, "v".repeat(n - 8));
    assert_eq!(fill(1024).len(), 1024);
    assert!(parse(&format!(
        r#"{{"type":"join","room":"r","meta":{}}}"#,
        fill(1024)
    ))
    .is_ok());
    let spaced = fill(1024).replace(':', " :   ");
    assert!(parse(&format!(r#"{{"type":"join","room":"r","meta":{spaced}}}"#)).is_ok());
    assert_eq!(
        code(&format!(
            r#"{{"type":"join","room":"r","meta":{}}}"#,
            fill(1025)
        )),
        ErrorCode::BadMessage
    );
}

#[test]
fn errors_carry_the_id_as_ref() {
    let e = parse(r#"{"type":"signal","id":"m1"}"#).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadMessage);
    assert_eq!(e.id.as_deref(), Some("m1"));
    let e = parse(r#"{"type":"join","room":"a b","id":"j"}"#).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRoom);
    assert_eq!(e.id.as_deref(), Some("j"));
}

proptest::proptest! {
    #[test]
    fn parse_never_panics(s in ".{0,200}") {
        let _ = parse_client(&s, 100);
    }

    #[test]
    fn parse_never_panics_on_objects(
        ty in proptest::sample::select(vec!["join", "resume", "signal", "broadcast", "ack", "ping", "leave", "x"]),
        field in proptest::sample::select(vec!["room", "name", "meta", "capacity", "token", "id", "session", "last_seq", "to", "data", "seq"]),
        value in proptest::sample::select(vec!["null", "1", "-1", "1.5", "\"s\"", "[]", "{}", "true", "18446744073709551616"]),
    ) {
        let _ = parse_client(&format!(r#"{{"type":"{ty}","{field}":{value}}}"#), 1000);
    }
}
