//! Writer / getter / error-path tests.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use icebreaker_stun::{
    attr, is_channel_data, is_stun, long_term_key, method, Class, Error, Family, IntegrityError,
    IntegrityKind, Message, MessageType, MessageWriter, HEADER_LEN, MAGIC_COOKIE,
};

const TID: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

fn alloc_req() -> MessageType {
    MessageType::new(method::ALLOCATE, Class::Request)
}

/// Build a raw message from (type, value) pairs, computing the header length (no padding fixups).
fn raw_message(attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut v = vec![0, 1, 0, 0];
    v.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    v.extend_from_slice(&TID);
    for (t, val) in attrs {
        v.extend_from_slice(&t.to_be_bytes());
        v.extend_from_slice(&(val.len() as u16).to_be_bytes());
        v.extend_from_slice(val);
        while v.len() % 4 != 0 {
            v.push(0);
        }
    }
    let len = (v.len() - HEADER_LEN) as u16;
    v[2..4].copy_from_slice(&len.to_be_bytes());
    v
}

#[test]
fn all_turn_attributes_roundtrip() {
    let peer4: SocketAddr = "203.0.113.9:5000".parse().unwrap();
    let peer6: SocketAddr = "[2001:db8::9]:6000".parse().unwrap();
    let relayed4: SocketAddr = "198.51.100.1:49152".parse().unwrap();
    let relayed6: SocketAddr = "[2001:db8::1]:49153".parse().unwrap();
    let mapped: SocketAddr = "192.0.2.7:1234".parse().unwrap();
    let key = long_term_key("alice", "ice.example", "secret");

    let mut buf = [0u8; 1024];
    let mut w = MessageWriter::new(&mut buf, alloc_req(), &TID).unwrap();
    w.attr(attr::USERNAME, b"alice").unwrap();
    w.attr(attr::REALM, b"ice.example").unwrap();
    w.attr(attr::NONCE, b"nonce-123").unwrap();
    w.attr(attr::SOFTWARE, b"icebreaker").unwrap();
    w.requested_transport(17).unwrap();
    w.lifetime(600).unwrap();
    w.channel_number(0x4001).unwrap();
    w.attr(attr::EVEN_PORT, &[0x80]).unwrap();
    w.attr(attr::RESERVATION_TOKEN, &[1, 2, 3, 4, 5, 6, 7, 8])
        .unwrap();
    w.attr(attr::REQUESTED_ADDRESS_FAMILY, &[0x02, 0, 0, 0])
        .unwrap();
    w.attr(attr::ADDITIONAL_ADDRESS_FAMILY, &[0x02, 0, 0, 0])
        .unwrap();
    w.attr(attr::DONT_FRAGMENT, &[]).unwrap();
    w.xor_address(attr::XOR_PEER_ADDRESS, peer4).unwrap();
    w.xor_address(attr::XOR_PEER_ADDRESS, peer6).unwrap();
    w.xor_address(attr::XOR_RELAYED_ADDRESS, relayed4).unwrap();
    w.xor_address(attr::XOR_RELAYED_ADDRESS, relayed6).unwrap();
    w.xor_address(attr::XOR_MAPPED_ADDRESS, mapped).unwrap();
    w.address(attr::MAPPED_ADDRESS, mapped).unwrap();
    w.u32_attr(attr::CONNECTION_ID, 0xdead_beef).unwrap();
    w.attr_slot(attr::DATA, 5)
        .unwrap()
        .copy_from_slice(b"hello");
    w.unknown_attributes(&[0x7777, 0x0031, 0x0032]).unwrap();
    w.error_code(438, "Stale Nonce").unwrap();
    w.message_integrity(&key).unwrap();
    w.message_integrity_sha256(&key).unwrap();
    w.fingerprint().unwrap();
    let n = w.len();
    assert_eq!(w.as_bytes().len(), n);
    assert_eq!(w.finish(), n);
    assert!(is_stun(&buf[..n]));
    assert!(!is_channel_data(&buf[..n]));

    let m = Message::parse(&buf[..n]).unwrap();
    assert_eq!(m.typ(), alloc_req());
    assert_eq!(m.as_bytes(), &buf[..n]);
    assert_eq!(m.username().unwrap(), Some("alice"));
    assert_eq!(m.realm().unwrap(), Some("ice.example"));
    assert_eq!(m.nonce().unwrap(), Some(&b"nonce-123"[..]));
    assert_eq!(m.software().unwrap(), Some("icebreaker"));
    assert_eq!(m.requested_transport().unwrap(), Some(17));
    assert_eq!(m.lifetime().unwrap(), Some(600));
    assert_eq!(m.channel_number().unwrap(), Some(0x4001));
    assert_eq!(m.even_port().unwrap(), Some(true));
    assert_eq!(
        m.reservation_token().unwrap(),
        Some([1, 2, 3, 4, 5, 6, 7, 8])
    );
    assert_eq!(m.requested_address_family().unwrap(), Some(Family::V6));
    assert_eq!(m.additional_address_family().unwrap(), Some(Family::V6));
    assert!(m.dont_fragment());
    let peers: Vec<_> = m.xor_peer_addresses().map(Result::unwrap).collect();
    assert_eq!(peers, [peer4, peer6]);
    let relayed: Vec<_> = m.xor_relayed_addresses().map(Result::unwrap).collect();
    assert_eq!(relayed, [relayed4, relayed6]);
    assert_eq!(m.xor_relayed_address().unwrap(), Some(relayed4));
    assert_eq!(m.xor_mapped_address().unwrap(), Some(mapped));
    assert_eq!(m.mapped_address().unwrap(), Some(mapped));
    assert_eq!(m.data(), Some(&b"hello"[..]));
    assert_eq!(
        m.unknown_attributes().collect::<Vec<_>>(),
        [0x7777, 0x0031, 0x0032]
    );
    assert_eq!(m.error_code().unwrap(), Some((438, "Stale Nonce")));
    assert!(m.has_integrity());
    assert!(m.check_fingerprint());
    // Both present: MESSAGE-INTEGRITY-SHA256 is the one checked.
    assert_eq!(m.verify_integrity(&key), Ok(IntegrityKind::Sha256));
    assert_eq!(m.verify_integrity(b"wrong"), Err(IntegrityError::Mismatch));
    let mut out = [0u16; 8];
    let known = |t: u16| t != attr::CONNECTION_ID && t != attr::EVEN_PORT;
    let k = m.unknown_comprehension_required(known, &mut out);
    assert_eq!(&out[..k], &[attr::EVEN_PORT, attr::CONNECTION_ID]);
    let k = m.unknown_comprehension_required(known, &mut out[..1]);
    assert_eq!(k, 1);
    assert_eq!(out[0], attr::EVEN_PORT);
}

#[test]
fn absent_attributes_are_none() {
    let mut buf = [0u8; 64];
    let w = MessageWriter::new(&mut buf, alloc_req(), &TID).unwrap();
    let n = w.finish();
    assert_eq!(n, HEADER_LEN);
    let m = Message::parse(&buf[..n]).unwrap();
    assert_eq!(m.attributes().count(), 0);
    assert_eq!(m.username(), Ok(None));
    assert_eq!(m.realm(), Ok(None));
    assert_eq!(m.nonce(), Ok(None));
    assert_eq!(m.software(), Ok(None));
    assert_eq!(m.error_code(), Ok(None));
    assert_eq!(m.lifetime(), Ok(None));
    assert_eq!(m.requested_transport(), Ok(None));
    assert_eq!(m.channel_number(), Ok(None));
    assert_eq!(m.data(), None);
    assert_eq!(m.even_port(), Ok(None));
    assert_eq!(m.reservation_token(), Ok(None));
    assert_eq!(m.requested_address_family(), Ok(None));
    assert_eq!(m.additional_address_family(), Ok(None));
    assert!(!m.dont_fragment());
    assert_eq!(m.xor_mapped_address(), Ok(None));
    assert_eq!(m.xor_relayed_address(), Ok(None));
    assert_eq!(m.xor_relayed_addresses().count(), 0);
    assert_eq!(m.xor_peer_addresses().count(), 0);
    assert_eq!(m.mapped_address(), Ok(None));
    assert_eq!(m.unknown_attributes().count(), 0);
    assert!(!m.has_fingerprint());
    assert!(!m.check_fingerprint());
    assert!(!m.has_integrity());
    assert_eq!(m.verify_integrity(b"k"), Err(IntegrityError::Missing));
}

#[test]
fn malformed_attribute_values() {
    use Error::{BadAttributeValue as Bad, BadUtf8};
    let cases: &[(u16, &[u8])] = &[
        (attr::LIFETIME, &[0, 0, 1]),
        (attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0, 0]),
        (attr::CHANNEL_NUMBER, &[0x40]),
        (attr::EVEN_PORT, &[0x80, 0]),
        (attr::RESERVATION_TOKEN, &[1, 2, 3]),
        (attr::REQUESTED_ADDRESS_FAMILY, &[0x03, 0, 0, 0]),
        (attr::ADDITIONAL_ADDRESS_FAMILY, &[0x01, 0, 0]),
        (attr::XOR_MAPPED_ADDRESS, &[0, 1, 0, 0, 1, 2, 3]),
        (attr::XOR_RELAYED_ADDRESS, &[0, 2, 0, 0, 1, 2, 3, 4]),
        (attr::MAPPED_ADDRESS, &[0, 3, 0, 0, 1, 2, 3, 4]),
        (attr::ERROR_CODE, &[0, 0, 4]),
    ];
    for (t, v) in cases {
        let raw = raw_message(&[(*t, v)]);
        let m = Message::parse(&raw).unwrap();
        let err = match *t {
            attr::LIFETIME => m.lifetime().map(|_| ()),
            attr::REQUESTED_TRANSPORT => m.requested_transport().map(|_| ()),
            attr::CHANNEL_NUMBER => m.channel_number().map(|_| ()),
            attr::EVEN_PORT => m.even_port().map(|_| ()),
            attr::RESERVATION_TOKEN => m.reservation_token().map(|_| ()),
            attr::REQUESTED_ADDRESS_FAMILY => m.requested_address_family().map(|_| ()),
            attr::ADDITIONAL_ADDRESS_FAMILY => m.additional_address_family().map(|_| ()),
            attr::XOR_MAPPED_ADDRESS => m.xor_mapped_address().map(|_| ()),
            attr::XOR_RELAYED_ADDRESS => m.xor_relayed_address().map(|_| ()),
            attr::MAPPED_ADDRESS => m.mapped_address().map(|_| ()),
            attr::ERROR_CODE => m.error_code().map(|_| ()),
            _ => unreachable!(),
        };
        assert_eq!(err, Err(Bad(*t)), "attribute {}", attr::name(*t));
    }
    // ERROR-CODE class / number out of range.
    for v in [[0u8, 0, 2, 0], [0, 0, 7, 0], [0, 0, 4, 100]] {
        let raw = raw_message(&[(attr::ERROR_CODE, &v)]);
        assert_eq!(
            Message::parse(&raw).unwrap().error_code(),
            Err(Bad(attr::ERROR_CODE))
        );
    }
    // Reserved bits in ERROR-CODE are ignored.
    let raw = raw_message(&[(attr::ERROR_CODE, &[0xff, 0xff, 0xf4, 1, b'x'])]);
    assert_eq!(
        Message::parse(&raw).unwrap().error_code(),
        Ok(Some((401, "x")))
    );
    // Bad UTF-8.
    for t in [attr::USERNAME, attr::REALM, attr::SOFTWARE] {
        let raw = raw_message(&[(t, &[0xff, 0xfe])]);
        let m = Message::parse(&raw).unwrap();
        let r = match t {
            attr::USERNAME => m.username(),
            attr::REALM => m.realm(),
            _ => m.software(),
        };
        assert_eq!(r, Err(BadUtf8(t)));
    }
    let raw = raw_message(&[(attr::ERROR_CODE, &[0, 0, 4, 1, 0xff])]);
    assert_eq!(
        Message::parse(&raw).unwrap().error_code(),
        Err(BadUtf8(attr::ERROR_CODE))
    );
    // Over-long text attributes.
    let long = vec![b'a'; 514];
    let raw = raw_message(&[(attr::USERNAME, &long)]);
    assert_eq!(
        Message::parse(&raw).unwrap().username(),
        Err(Bad(attr::USERNAME))
    );
    let long = vec![b'a'; 764];
    let raw = raw_message(&[(attr::NONCE, &long), (attr::REALM, &long)]);
    let m = Message::parse(&raw).unwrap();
    assert_eq!(m.nonce(), Err(Bad(attr::NONCE)));
    assert_eq!(m.realm(), Err(Bad(attr::REALM)));
    // A bad second XOR-PEER-ADDRESS is reported by the iterator, not hidden.
    let good = {
        let mut buf = [0u8; 64];
        let mut w = MessageWriter::new(&mut buf, alloc_req(), &TID).unwrap();
        w.xor_address(attr::XOR_PEER_ADDRESS, "1.2.3.4:5".parse().unwrap())
            .unwrap();
        let n = w.finish();
        buf[24..n].to_vec()
    };
    let raw = raw_message(&[
        (attr::XOR_PEER_ADDRESS, &good),
        (attr::XOR_PEER_ADDRESS, &[0, 9]),
    ]);
    let m = Message::parse(&raw).unwrap();
    let peers: Vec<_> = m.xor_peer_addresses().collect();
    assert_eq!(peers[0], Ok("1.2.3.4:5".parse().unwrap()));
    assert_eq!(peers[1], Err(Bad(attr::XOR_PEER_ADDRESS)));
    // An odd trailing byte in UNKNOWN-ATTRIBUTES is ignored.
    let raw = raw_message(&[(attr::UNKNOWN_ATTRIBUTES, &[0, 1, 0])]);
    let m = Message::parse(&raw).unwrap();
    assert_eq!(m.unknown_attributes().collect::<Vec<_>>(), [1]);
}

#[test]
fn header_validation() {
    let ok = raw_message(&[(attr::SOFTWARE, b"abc")]);
    assert!(Message::parse(&ok).is_ok());
    assert_eq!(Message::parse(&ok[..19]).unwrap_err(), Error::TooShort);
    assert_eq!(Message::parse(&[]).unwrap_err(), Error::TooShort);
    let mut b = ok.clone();
    b[0] |= 0x80;
    assert_eq!(Message::parse(&b).unwrap_err(), Error::NotStun);
    let mut b = ok.clone();
    b[4] ^= 1;
    assert_eq!(Message::parse(&b).unwrap_err(), Error::NotStun);
    // Length not matching the buffer / not a multiple of 4.
    let mut b = ok.clone();
    b.extend_from_slice(&[0; 4]);
    assert_eq!(Message::parse(&b).unwrap_err(), Error::BadLength);
    let mut b = ok.clone();
    b[3] = 7;
    assert_eq!(Message::parse(&b[..27]).unwrap_err(), Error::BadLength);
    assert_eq!(
        Message::parse(&ok[..ok.len() - 4]).unwrap_err(),
        Error::BadLength
    );
    // Attribute overrunning the message.
    let mut b = ok.clone();
    b[23] = 9;
    assert_eq!(Message::parse(&b).unwrap_err(), Error::BadAttribute);
    // Attribute length that fits but whose padding does not.
    let mut b = ok.clone();
    b[23] = 5;
    assert_eq!(Message::parse(&b).unwrap_err(), Error::BadAttribute);
    // Display is human readable.
    assert!(Error::BadAttributeValue(attr::LIFETIME)
        .to_string()
        .contains("LIFETIME"));
}

#[test]
fn attributes_after_integrity_are_ignored() {
    // MI, then USERNAME (ignored), then MI-SHA256 (counts), then SOFTWARE (ignored), FP (counts),
    // then REALM (ignored).
    let raw = raw_message(&[
        (attr::MESSAGE_INTEGRITY, &[0; 20]),
        (attr::USERNAME, b"late"),
        (attr::MESSAGE_INTEGRITY_SHA256, &[0; 32]),
        (attr::SOFTWARE, b"late"),
        (attr::FINGERPRINT, &[0; 4]),
        (attr::REALM, b"late"),
    ]);
    let m = Message::parse(&raw).unwrap();
    assert_eq!(m.attributes().count(), 6);
    assert_eq!(m.username(), Ok(None));
    assert_eq!(m.software(), Ok(None));
    assert_eq!(m.realm(), Ok(None));
    assert!(m.get(attr::MESSAGE_INTEGRITY_SHA256).is_some());
    assert!(m.has_fingerprint());
    // FINGERPRINT is not last, so it cannot be valid.
    assert!(!m.check_fingerprint());

    // After MI-SHA256, a later MI is ignored; the SHA-256 one is checked.
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, alloc_req(), &TID).unwrap();
    w.attr(attr::USERNAME, b"u").unwrap();
    w.message_integrity_sha256(b"k").unwrap();
    assert_eq!(w.message_integrity(b"k"), Err(Error::AfterIntegrity));
    assert_eq!(w.attr(attr::USERNAME, b"x"), Err(Error::AfterIntegrity));
    w.fingerprint().unwrap();
    assert_eq!(w.fingerprint(), Err(Error::AfterIntegrity));
    assert_eq!(w.message_integrity_sha256(b"k"), Err(Error::AfterIntegrity));
    let n = w.finish();
    let m = Message::parse(&buf[..n]).unwrap();
    assert_eq!(m.verify_integrity(b"k"), Ok(IntegrityKind::Sha256));
    assert!(m.check_fingerprint());
}

#[test]
fn integrity_malformed_lengths() {
    for (t, len) in [
        (attr::MESSAGE_INTEGRITY, 16usize),
        (attr::MESSAGE_INTEGRITY, 24),
        (attr::MESSAGE_INTEGRITY_SHA256, 12),
        (attr::MESSAGE_INTEGRITY_SHA256, 18),
        (attr::MESSAGE_INTEGRITY_SHA256, 36),
    ] {
        let v = vec![0u8; len];
        let raw = raw_message(&[(attr::USERNAME, b"u"), (t, &v)]);
        let m = Message::parse(&raw).unwrap();
        assert!(m.has_integrity());
        assert_eq!(m.verify_integrity(b"k"), Err(IntegrityError::Malformed));
    }
}

#[test]
fn writer_buffer_too_small_never_panics() {
    let full = {
        let mut buf = [0u8; 512];
        let mut w = MessageWriter::new(&mut buf, alloc_req(), &TID).unwrap();
        write_all(&mut w).unwrap();
        let n = w.finish();
        buf[..n].to_vec()
    };
    for size in 0..full.len() {
        let mut buf = vec![0u8; size];
        let r = MessageWriter::new(&mut buf, alloc_req(), &TID).and_then(|mut w| {
            write_all(&mut w)?;
            Ok(w.finish())
        });
        assert_eq!(r, Err(Error::BufferTooSmall), "size {size}");
        // Whatever was written so far is a valid message.
        if size >= HEADER_LEN {
            let mut w = MessageWriter::new(&mut buf, alloc_req(), &TID).unwrap();
            let _ = write_all(&mut w);
            let n = w.len();
            let m = Message::parse(&buf[..n]).unwrap();
            assert!(m.attributes().count() < 9);
        }
    }
    let mut buf = vec![0u8; full.len()];
    let mut w = MessageWriter::new(&mut buf, alloc_req(), &TID).unwrap();
    write_all(&mut w).unwrap();
    assert_eq!(w.finish(), full.len());
    assert_eq!(buf, full);
}

fn write_all(w: &mut MessageWriter<'_>) -> Result<(), Error> {
    w.attr(attr::USERNAME, b"someone")?;
    w.xor_address(attr::XOR_PEER_ADDRESS, "[2001:db8::1]:1".parse().unwrap())?;
    w.address(attr::ALTERNATE_SERVER, "192.0.2.1:3478".parse().unwrap())?;
    w.error_code(420, "Unknown Attribute")?;
    w.unknown_attributes(&[0x1234, 0x5678, 0x9abc])?;
    w.attr_slot(attr::DATA, 7)?.copy_from_slice(b"payload");
    w.message_integrity(b"key")?;
    w.message_integrity_sha256(b"key")?;
    w.fingerprint()
}

#[test]
fn writer_limits() {
    let mut buf = vec![0u8; 70_000];
    let mut w = MessageWriter::new(&mut buf, alloc_req(), &TID).unwrap();
    assert_eq!(w.attr(attr::DATA, &[0; 65_536]), Err(Error::BadLength));
    w.attr(attr::DATA, &[0; 65_000]).unwrap();
    assert_eq!(w.attr(attr::DATA, &[0; 600]), Err(Error::BadLength));
    w.attr(attr::DATA, &[0; 500]).unwrap();
    let n = w.finish();
    assert!(Message::parse(&buf[..n]).is_ok());
    // Largest possible message: body 0xFFFC.
    let mut w = MessageWriter::new(&mut buf, alloc_req(), &TID).unwrap();
    w.attr(attr::DATA, &[0; 0xFFFC - 4]).unwrap();
    assert_eq!(w.attr(attr::DONT_FRAGMENT, &[]), Err(Error::BadLength));
    let n = w.finish();
    assert_eq!(n, HEADER_LEN + 0xFFFC);
    assert!(Message::parse(&buf[..n]).is_ok());

    let mut w = MessageWriter::new(&mut buf, alloc_req(), &TID).unwrap();
    assert_eq!(
        w.error_code(299, "x"),
        Err(Error::BadAttributeValue(attr::ERROR_CODE))
    );
    assert_eq!(
        w.error_code(700, "x"),
        Err(Error::BadAttributeValue(attr::ERROR_CODE))
    );
    w.error_code(699, "").unwrap();
    w.error_code(300, "").unwrap();
    assert_eq!(w.len(), HEADER_LEN + 16);
}

#[test]
fn writer_padding_and_slot() {
    let mut buf = [0xAAu8; 64];
    let mut w = MessageWriter::new(&mut buf, alloc_req(), &TID).unwrap();
    w.attr(attr::USERNAME, b"abcde").unwrap();
    let n = w.finish();
    assert_eq!(n, 32);
    assert_eq!(&buf[24..32], b"abcde\0\0\0");
    assert_eq!(&buf[2..4], &[0, 12]);

    // attr_slot keeps the bytes already in the buffer (receive-in-place).
    let mut buf = [0u8; 64];
    buf[24..28].copy_from_slice(b"data");
    let mut w = MessageWriter::new(&mut buf, alloc_req(), &TID).unwrap();
    let slot = w.attr_slot(attr::DATA, 4).unwrap();
    assert_eq!(slot, b"data");
    let n = w.finish();
    let m = Message::parse(&buf[..n]).unwrap();
    assert_eq!(m.data(), Some(&b"data"[..]));
}

#[test]
fn message_type_and_names() {
    assert_eq!(attr::name(attr::XOR_PEER_ADDRESS), "XOR-PEER-ADDRESS");
    assert_eq!(attr::name(0x7fff), "unknown");
    assert_eq!(method::name(method::CHANNEL_BIND), "CHANNEL-BIND");
    assert!(attr::is_comprehension_required(attr::USERNAME));
    assert!(!attr::is_comprehension_required(attr::SOFTWARE));
    let t = MessageType::new(method::CREATE_PERMISSION, Class::Success);
    assert_eq!(
        (t.method(), t.class()),
        (method::CREATE_PERMISSION, Class::Success)
    );
    assert_eq!(MessageType::from_raw(0xC001).raw(), 0x0001);
    assert_eq!(Family::from_u8(Family::V4.to_u8()), Some(Family::V4));
    assert_eq!(Family::from_u8(3), None);
}
