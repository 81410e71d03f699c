//! RFC 5769 test vectors and the TURN REST credential vector.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::*;
use icebreaker_stun::{
    attr, long_term_key, method, rest_password, Class, IntegrityError, IntegrityKind, Message,
    MessageType, MessageWriter,
};

fn tampered(v: &[u8], at: usize) -> Vec<u8> {
    let mut b = v.to_vec();
    b[at] ^= 0x01;
    b
}

#[test]
fn rfc5769_sample_request() {
    let m = Message::parse(RFC5769_REQUEST).unwrap();
    assert_eq!(m.method(), method::BINDING);
    assert_eq!(m.class(), Class::Request);
    assert_eq!(m.typ(), MessageType::new(method::BINDING, Class::Request));
    assert_eq!(
        m.transaction_id(),
        &[0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae]
    );
    assert_eq!(m.software().unwrap(), Some("STUN test client"));
    assert_eq!(m.username().unwrap(), Some("evtj:h6vY"));
    assert_eq!(
        m.get(attr::PRIORITY).unwrap().value,
        &[0x6e, 0x00, 0x01, 0xff]
    );
    assert_eq!(
        m.get(attr::ICE_CONTROLLED).unwrap().value,
        &[0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36]
    );
    let types: Vec<u16> = m.attributes().map(|a| a.typ).collect();
    assert_eq!(
        types,
        [
            attr::SOFTWARE,
            attr::PRIORITY,
            attr::ICE_CONTROLLED,
            attr::USERNAME,
            attr::MESSAGE_INTEGRITY,
            attr::FINGERPRINT
        ]
    );
    assert!(m.has_integrity());
    assert!(m.has_fingerprint());
    assert!(m.check_fingerprint());
    assert_eq!(
        m.verify_integrity(SHORT_TERM_PASSWORD.as_bytes()),
        Ok(IntegrityKind::Sha1)
    );
    assert_eq!(
        m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBu"),
        Err(IntegrityError::Mismatch)
    );
    // ICE-CONTROLLED (0x8029) and FINGERPRINT are comprehension-optional; PRIORITY is unknown here.
    let mut out = [0u16; 4];
    let known = |t| t == attr::USERNAME || t == attr::MESSAGE_INTEGRITY;
    let n = m.unknown_comprehension_required(known, &mut out);
    assert_eq!(&out[..n], &[attr::PRIORITY]);

    // Tampering with the body breaks both checks; tampering with the CRC breaks only FINGERPRINT.
    let t = tampered(RFC5769_REQUEST, 30);
    let tm = Message::parse(&t).unwrap();
    assert!(!tm.check_fingerprint());
    assert_eq!(
        tm.verify_integrity(SHORT_TERM_PASSWORD.as_bytes()),
        Err(IntegrityError::Mismatch)
    );
    let t = tampered(RFC5769_REQUEST, RFC5769_REQUEST.len() - 1);
    let tm = Message::parse(&t).unwrap();
    assert!(!tm.check_fingerprint());
    assert!(tm.verify_integrity(SHORT_TERM_PASSWORD.as_bytes()).is_ok());

    // Re-write byte for byte (the RFC pads with 0x20).
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, m.typ(), m.transaction_id()).unwrap();
    w.set_padding(0x20);
    w.attr(attr::SOFTWARE, b"STUN test client").unwrap();
    w.u32_attr(attr::PRIORITY, 0x6e00_01ff).unwrap();
    w.attr(
        attr::ICE_CONTROLLED,
        &[0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36],
    )
    .unwrap();
    w.attr(attr::USERNAME, b"evtj:h6vY").unwrap();
    w.message_integrity(SHORT_TERM_PASSWORD.as_bytes()).unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    assert_eq!(&buf[..n], RFC5769_REQUEST);
}

fn check_response(v: &[u8], expected: SocketAddr) {
    let m = Message::parse(v).unwrap();
    assert_eq!(m.typ(), MessageType::new(method::BINDING, Class::Success));
    assert_eq!(m.typ().raw(), 0x0101);
    assert_eq!(m.software().unwrap(), Some("test vector"));
    assert_eq!(m.xor_mapped_address().unwrap(), Some(expected));
    assert_eq!(m.mapped_address().unwrap(), None);
    assert!(m.check_fingerprint());
    assert_eq!(
        m.verify_integrity(SHORT_TERM_PASSWORD.as_bytes()),
        Ok(IntegrityKind::Sha1)
    );
    assert_eq!(m.verify_integrity(b""), Err(IntegrityError::Mismatch));

    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, m.typ(), m.transaction_id()).unwrap();
    w.set_padding(0x20);
    w.attr(attr::SOFTWARE, b"test vector").unwrap();
    w.xor_address(attr::XOR_MAPPED_ADDRESS, expected).unwrap();
    w.message_integrity(SHORT_TERM_PASSWORD.as_bytes()).unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    assert_eq!(&buf[..n], v);

    // With zero padding the bytes differ only in padding, MI and FP; both still verify.
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, m.typ(), m.transaction_id()).unwrap();
    w.attr(attr::SOFTWARE, b"test vector").unwrap();
    w.xor_address(attr::XOR_MAPPED_ADDRESS, expected).unwrap();
    w.message_integrity(SHORT_TERM_PASSWORD.as_bytes()).unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    let m2 = Message::parse(&buf[..n]).unwrap();
    assert_eq!(n, v.len());
    assert_eq!(buf[35], 0);
    assert!(m2.check_fingerprint());
    assert!(m2.verify_integrity(SHORT_TERM_PASSWORD.as_bytes()).is_ok());
}

#[test]
fn rfc5769_ipv4_response() {
    check_response(RFC5769_IPV4_RESPONSE, "192.0.2.1:32853".parse().unwrap());
}

#[test]
fn rfc5769_ipv6_response() {
    check_response(
        RFC5769_IPV6_RESPONSE,
        "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap(),
    );
}

#[test]
fn rfc5769_long_term_request() {
    let m = Message::parse(RFC5769_LONG_TERM_REQUEST).unwrap();
    assert_eq!(m.typ(), MessageType::new(method::BINDING, Class::Request));
    assert_eq!(m.username().unwrap(), Some(LT_USER));
    assert_eq!(m.realm().unwrap(), Some(LT_REALM));
    assert_eq!(m.nonce().unwrap(), Some(LT_NONCE.as_bytes()));
    assert!(!m.has_fingerprint());
    assert!(!m.check_fingerprint());
    let key = long_term_key(LT_USER, LT_REALM, LT_PASSWORD);
    assert_eq!(m.verify_integrity(&key), Ok(IntegrityKind::Sha1));
    // The unprepared password (with SOFT HYPHEN and FEMININE ORDINAL) gives another key.
    let raw = long_term_key(LT_USER, LT_REALM, "The\u{00AD}M\u{00AA}trIX");
    assert_eq!(m.verify_integrity(&raw), Err(IntegrityError::Mismatch));

    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, m.typ(), m.transaction_id()).unwrap();
    w.attr(attr::USERNAME, LT_USER.as_bytes()).unwrap();
    w.attr(attr::NONCE, LT_NONCE.as_bytes()).unwrap();
    w.attr(attr::REALM, LT_REALM.as_bytes()).unwrap();
    w.message_integrity(&key).unwrap();
    let n = w.finish();
    assert_eq!(&buf[..n], RFC5769_LONG_TERM_REQUEST);
}

#[test]
fn turn_rest_password_vector() {
    let mut out = [0u8; 28];
    let p = rest_password(b"s3cret", "1735689600:alice", &mut out);
    assert_eq!(p, "Eg5zUypiLLIlSFSXueMGTeKO1nI=");
    assert_eq!(&out, b"Eg5zUypiLLIlSFSXueMGTeKO1nI=");
}

#[test]
fn long_term_key_is_md5_of_user_realm_pass() {
    // MD5("user:realm:pass") computed independently.
    assert_eq!(
        long_term_key("user", "realm", "pass"),
        [
            0x84, 0x93, 0xfb, 0xc5, 0x3b, 0xa5, 0x82, 0xfb, 0x4c, 0x04, 0x4c, 0x45, 0x6b, 0xdc,
            0x40, 0xeb
        ]
    );
}
