//! Signaling input from the network: arbitrary bytes as a client message (alone and as the JSON
//! array `POST /signal/send` takes), as a room token (JWT), and as the header or the claims of a
//! correctly signed room token (so claim parsing is reached behind the signature check).
//!
//! Properties: never panic; a parsed message re-serialised parses back to the same message; the
//! server messages built from it (`signal`, `broadcast`, `peer-joined`, `pong`) carry its payload
//! verbatim with the `seq` spliced in; every refusal renders as a valid `error` message with the
//! message's `id` as `ref`; verified claims re-signed verify to the same claims.
#![no_main]

use icebreaker_signal::proto::{parse_client, valid_peer_id, valid_room, DEFAULT_MAX_MESSAGE};
use icebreaker_signal::token::{self, Perm, MAX_TOKEN_LEN};
use icebreaker_signal::{
    ClientMessage, ErrorCode, PeerInfo, ProtoError, ServerMessage, TopologyRequest,
};
use icebreaker_signal::{Outbox, SessionToken};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

const SECRET: &[u8] = b"fuzz-secret";
const NOW_UNIX: u64 = 1_767_225_600;
/// A small `--signal-max-message`, so that `too_large` is reached too.
const SMALL_MAX: usize = 96;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    let _ = client_message(text, DEFAULT_MAX_MESSAGE);
    let small = client_message(text, SMALL_MAX);
    if text.len() > SMALL_MAX {
        assert_eq!(small.err().map(|e| e.code), Some(ErrorCode::TooLarge));
    }
    // `POST /signal/send` takes one message or an array of them (as the server splits it).
    if text.trim_start().starts_with('[') {
        if let Ok(list) = serde_json::from_str::<Vec<&RawValue>>(text) {
            for m in list {
                let _ = client_message(m.get(), DEFAULT_MAX_MESSAGE);
            }
        }
    }

    let _ = valid_room(text);
    let _ = valid_peer_id(text);
    let _ = SessionToken::well_formed(text);

    // As a room token (a seed is signed with the secret; mutations of it are not).
    signed_token(text);
    // As the claims, then as the header, of a token signed with the right secret.
    let claims = token::sign_raw(SECRET, br#"{"alg":"HS256","typ":"JWT"}"#, data);
    signed_token(&claims);
    let header = token::sign_raw(SECRET, data, br#"{"room":"demo","exp":1767225660}"#);
    signed_token(&header);
});

/// Parses `text` as a client message and checks everything that follows from the result.
fn client_message(text: &str, max: usize) -> Result<ClientMessage, ProtoError> {
    let res = parse_client(text, max);
    match &res {
        Ok(msg) => {
            let again = serialise(msg);
            match parse_client(&again, usize::MAX) {
                Ok(back) => assert!(
                    same_message(msg, &back),
                    "round trip changed the message:\n{msg:?}\n{again}\n{back:?}"
                ),
                Err(e) => panic!("re-serialised message refused: {e}\n{msg:?}\n{again}"),
            }
            server_messages(msg);
            if let Some(id) = msg.id() {
                assert!(id.chars().count() <= 64);
            }
        }
        Err(e) => check_error(e),
    }
    res
}

fn check_error(e: &ProtoError) {
    assert!((400..=599).contains(&e.code.http_status()));
    if let Some(id) = &e.id {
        assert!(id.chars().count() <= 64, "an over-long id echoed as ref");
    }
    for seq in [None, Some(7)] {
        let json = e.to_json(seq);
        let v: Value = serde_json::from_str(&json).expect("error message is JSON");
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], e.code.as_str());
        assert_eq!(v["message"], e.message.as_str());
        match &e.id {
            Some(id) => assert_eq!(v["ref"], id.as_str()),
            None => assert!(v.get("ref").is_none()),
        }
        match seq {
            Some(s) => assert_eq!(v["seq"], s),
            None => assert!(v.get("seq").is_none()),
        }
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// The message as a client would send it (fields in another order than most clients use).
fn serialise(msg: &ClientMessage) -> String {
    let mut f: Vec<(&str, String)> = Vec::new();
    match msg {
        ClientMessage::Join(j) => {
            if let Some(m) = &j.meta {
                f.push(("meta", m.get().to_owned()));
            }
            f.push(("room", json_str(&j.room)));
            if let Some(n) = &j.name {
                f.push(("name", json_str(n)));
            }
            if let Some(c) = j.capacity {
                f.push(("capacity", c.to_string()));
            }
            if let Some(t) = &j.token {
                f.push(("token", json_str(t)));
            }
            if let Some(t) = j.topology {
                let name = match t {
                    TopologyRequest::Auto => "auto",
                    TopologyRequest::Mesh => "mesh",
                    TopologyRequest::Sfu => "sfu",
                };
                f.push(("topology", json_str(name)));
            }
        }
        ClientMessage::Resume(r) => {
            f.push(("last_seq", r.last_seq.to_string()));
            f.push(("session", json_str(&r.session)));
        }
        ClientMessage::Signal(s) => {
            f.push(("data", s.data.get().to_owned()));
            f.push(("to", json_str(&s.to)));
        }
        ClientMessage::Broadcast(b) => f.push(("data", b.data.get().to_owned())),
        ClientMessage::Sfu(m) | ClientMessage::Sip(m) => f.push(("data", m.data.get().to_owned())),
        ClientMessage::Ack { seq } => f.push(("seq", seq.to_string())),
        ClientMessage::Ping { .. } | ClientMessage::Leave { .. } => {}
    }
    if let Some(id) = msg.id() {
        f.push(("id", json_str(id)));
    }
    f.push(("type", json_str(msg.type_str())));
    let body: Vec<String> = f.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}

/// Equality, except that `meta` (normalised through `serde_json::Value`) is compared as JSON
/// with floats equal to within a rounding step: serde_json's default float parsing is not
/// guaranteed to round-trip the last bit.
fn same_message(a: &ClientMessage, b: &ClientMessage) -> bool {
    match (a, b) {
        (ClientMessage::Join(x), ClientMessage::Join(y)) => {
            let meta = match (&x.meta, &y.meta) {
                (None, None) => true,
                (Some(m), Some(n)) => same_json(
                    &serde_json::from_str(m.get()).unwrap_or(Value::Null),
                    &serde_json::from_str(n.get()).unwrap_or(Value::Null),
                ),
                _ => false,
            };
            meta && x.room == y.room
                && x.name == y.name
                && x.capacity == y.capacity
                && x.token == y.token
                && x.id == y.id
        }
        _ => a == b,
    }
}

fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            _ if x == y => true,
            (Some(p), Some(q)) => (p - q).abs() <= p.abs().max(q.abs()) * 1e-15,
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

#[derive(Deserialize)]
struct Relayed<'a> {
    #[serde(rename = "type")]
    ty: String,
    seq: u64,
    from: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct PeerJoinedMsg<'a> {
    #[serde(rename = "type")]
    ty: String,
    seq: u64,
    #[serde(borrow)]
    peer: PeerMsg<'a>,
}

#[derive(Deserialize)]
struct PeerMsg<'a> {
    id: String,
    name: Option<String>,
    #[serde(borrow)]
    meta: Option<&'a RawValue>,
}

/// What the hub makes of the message for the other peers: payloads stay verbatim.
fn server_messages(msg: &ClientMessage) {
    const FROM: &str = "0badc0de";
    let seq = u64::MAX;
    match msg {
        ClientMessage::Signal(s) => relayed(
            ServerMessage::Signal {
                from: FROM.into(),
                data: s.data.clone(),
            },
            s.data.get(),
        ),
        ClientMessage::Broadcast(b) => relayed(
            ServerMessage::Broadcast {
                from: FROM.into(),
                data: b.data.clone(),
            },
            b.data.get(),
        ),
        ClientMessage::Join(j) => {
            let enc = ServerMessage::PeerJoined {
                peer: PeerInfo {
                    id: FROM.into(),
                    name: j.name.clone(),
                    meta: j.meta.clone(),
                },
            }
            .encode();
            let text = enc.with_seq(seq);
            let m: PeerJoinedMsg<'_> = serde_json::from_str(&text).expect("peer-joined is JSON");
            assert_eq!((m.ty.as_str(), m.seq), ("peer-joined", seq));
            assert_eq!(m.peer.id, FROM);
            assert_eq!(m.peer.name, j.name);
            assert_eq!(
                m.peer.meta.map(RawValue::get),
                j.meta.as_deref().map(RawValue::get)
            );
            // The meta a peer is shown fits the limit.
            assert!(j.meta.as_ref().is_none_or(|m| m.get().len() <= 1024));
            // Through a replay buffer with a byte cap: the newest message is always kept.
            let mut out = Outbox::with_max_bytes(2, 16);
            out.push(&enc);
            let held: Vec<_> = out.replay_after(0).expect("held").collect();
            assert_eq!(held, vec![(1, enc.with_seq(1).as_str())]);
        }
        ClientMessage::Ping { id } => {
            let enc = ServerMessage::Pong { id: id.clone() }.encode();
            let v: Value = serde_json::from_str(enc.without_seq()).expect("pong is JSON");
            assert_eq!(v["type"], "pong");
            assert_eq!(v.get("id").and_then(Value::as_str), id.as_deref());
        }
        ClientMessage::Sfu(m) => {
            // The SFU's messages back carry a JSON object verbatim too.
            assert!(m.data.get().trim_start().starts_with('{'));
            let enc = ServerMessage::Sfu {
                data: m.data.clone(),
            }
            .encode();
            for seq in [0, u64::MAX] {
                let text = enc.with_seq(seq);
                let r: SfuMsg<'_> = serde_json::from_str(&text).expect("sfu message is JSON");
                assert_eq!((r.ty.as_str(), r.seq), ("sfu", seq));
                assert_eq!(r.data.get(), m.data.get(), "payload not verbatim");
            }
        }
        ClientMessage::Sip(m) => {
            // The SIP gateway's messages back (the state of a dial) are JSON objects too.
            assert!(m.data.get().trim_start().starts_with('{'));
            let enc = ServerMessage::Sip {
                data: m.data.clone(),
            }
            .encode();
            for seq in [0, u64::MAX] {
                let text = enc.with_seq(seq);
                let r: SfuMsg<'_> = serde_json::from_str(&text).expect("sip message is JSON");
                assert_eq!((r.ty.as_str(), r.seq), ("sip", seq));
                assert_eq!(r.data.get(), m.data.get(), "payload not verbatim");
            }
        }
        ClientMessage::Resume(_) | ClientMessage::Ack { .. } | ClientMessage::Leave { .. } => {}
    }
}

#[derive(Deserialize)]
struct SfuMsg<'a> {
    #[serde(rename = "type")]
    ty: String,
    seq: u64,
    #[serde(borrow)]
    data: &'a RawValue,
}

fn relayed(m: ServerMessage, data: &str) {
    let ty = m.type_str();
    let enc = m.encode();
    for seq in [0, 1, u64::MAX] {
        let text = enc.with_seq(seq);
        let r: Relayed<'_> = serde_json::from_str(&text).expect("relayed message is JSON");
        assert_eq!(
            (r.ty.as_str(), r.seq, r.from.as_str()),
            (ty, seq, "0badc0de")
        );
        assert_eq!(r.data.get(), data, "payload not verbatim");
    }
}

/// A token, maybe signed with the right secret: verification may refuse it (`unauthorized`) but
/// never panics, and accepted claims survive a re-sign.
fn signed_token(tok: &str) {
    match token::verify(tok, SECRET, NOW_UNIX) {
        Ok(c) => {
            assert!(tok.len() <= MAX_TOKEN_LEN);
            assert!(c.exp > NOW_UNIX);
            let _ = c.check_room("demo");
            let perms: Vec<Perm> = [Perm::Create, Perm::Signal, Perm::Broadcast]
                .into_iter()
                .filter(|p| c.perms.has(*p))
                .collect();
            for p in [Perm::Create, Perm::Signal, Perm::Broadcast] {
                assert_eq!(c.require(p).is_ok(), c.perms.has(p));
            }
            let again = token::sign(SECRET, &c.room, c.sub.as_deref(), c.exp, Some(&perms));
            // The re-signed token may only be refused for its length.
            match token::verify(&again, SECRET, NOW_UNIX) {
                Ok(d) => assert_eq!(c, d),
                Err(e) => assert!(again.len() > MAX_TOKEN_LEN, "re-signed claims refused: {e}"),
            }
        }
        Err(e) => assert_eq!(e.code, ErrorCode::Unauthorized, "{e}"),
    }
}
