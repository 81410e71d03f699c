//! Property tests: write→parse round trips, and arbitrary input never panics.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use icebreaker_stun::{
    attr, stream_frame_len, ChannelData, IntegrityError, IntegrityKind, Message, MAGIC_COOKIE,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn written_messages_parse_back(s in spec()) {
        let bytes = write_spec(&s);
        let m = Message::parse(&bytes).unwrap();
        prop_assert_eq!(m.method(), s.method);
        prop_assert_eq!(m.class(), s.class);
        prop_assert_eq!(m.transaction_id(), &s.tid);

        // Attributes come back in order with the same values.
        let mut expected: Vec<(u16, Vec<u8>)> =
            s.attrs.iter().map(|a| encode_attr(a, &s.tid)).collect();
        let got: Vec<(u16, Vec<u8>)> = m.attributes().map(|a| (a.typ, a.value.to_vec())).collect();
        prop_assert_eq!(&got[..expected.len()], &expected[..]);
        let trailer: Vec<u16> = got[expected.len()..].iter().map(|a| a.0).collect();
        let mut want_trailer = vec![];
        if s.mi.is_some() { want_trailer.push(attr::MESSAGE_INTEGRITY); }
        if s.mi256.is_some() { want_trailer.push(attr::MESSAGE_INTEGRITY_SHA256); }
        if s.fingerprint { want_trailer.push(attr::FINGERPRINT); }
        prop_assert_eq!(trailer, want_trailer);

        // Typed getters return the first occurrence.
        expected.truncate(s.attrs.len());
        for a in &s.attrs {
            match a {
                Attr::Username(v) if first(&s, |a| matches!(a, Attr::Username(_)), a) =>
                    prop_assert_eq!(m.username().unwrap(), Some(v.as_str())),
                Attr::Realm(v) if first(&s, |a| matches!(a, Attr::Realm(_)), a) =>
                    prop_assert_eq!(m.realm().unwrap(), Some(v.as_str())),
                Attr::Nonce(v) if first(&s, |a| matches!(a, Attr::Nonce(_)), a) =>
                    prop_assert_eq!(m.nonce().unwrap(), Some(v.as_bytes())),
                Attr::Software(v) if first(&s, |a| matches!(a, Attr::Software(_)), a) =>
                    prop_assert_eq!(m.software().unwrap(), Some(v.as_str())),
                Attr::ErrorCode(c, r) if first(&s, |a| matches!(a, Attr::ErrorCode(..)), a) =>
                    prop_assert_eq!(m.error_code().unwrap(), Some((*c, r.as_str()))),
                Attr::Lifetime(v) if first(&s, |a| matches!(a, Attr::Lifetime(_)), a) =>
                    prop_assert_eq!(m.lifetime().unwrap(), Some(*v)),
                Attr::XorMapped(v) if first(&s, |a| matches!(a, Attr::XorMapped(_)), a) =>
                    prop_assert_eq!(m.xor_mapped_address().unwrap(), Some(*v)),
                Attr::XorRelayed(v) if first(&s, |a| matches!(a, Attr::XorRelayed(_)), a) =>
                    prop_assert_eq!(m.xor_relayed_address().unwrap(), Some(*v)),
                Attr::Mapped(v) if first(&s, |a| matches!(a, Attr::Mapped(_)), a) =>
                    prop_assert_eq!(m.mapped_address().unwrap(), Some(*v)),
                Attr::ChannelNumber(v) if first(&s, |a| matches!(a, Attr::ChannelNumber(_)), a) =>
                    prop_assert_eq!(m.channel_number().unwrap(), Some(*v)),
                Attr::RequestedTransport(v)
                    if first(&s, |a| matches!(a, Attr::RequestedTransport(_)), a) =>
                    prop_assert_eq!(m.requested_transport().unwrap(), Some(*v)),
                Attr::EvenPort(v) if first(&s, |a| matches!(a, Attr::EvenPort(_)), a) =>
                    prop_assert_eq!(m.even_port().unwrap(), Some(*v)),
                Attr::ReservationToken(v)
                    if first(&s, |a| matches!(a, Attr::ReservationToken(_)), a) =>
                    prop_assert_eq!(m.reservation_token().unwrap(), Some(*v)),
                Attr::Data(v) if first(&s, |a| matches!(a, Attr::Data(_)), a) =>
                    prop_assert_eq!(m.data(), Some(v.as_slice())),
                Attr::UnknownAttributes(v)
                    if first(&s, |a| matches!(a, Attr::UnknownAttributes(_)), a) =>
                    prop_assert_eq!(&m.unknown_attributes().collect::<Vec<_>>(), v),
                _ => {}
            }
        }
        // Raw attributes may shadow typed ones, so only check the iterators without raw ones.
        if !s.attrs.iter().any(|a| matches!(a, Attr::Raw(..))) {
            let peers: Vec<_> = s.attrs.iter()
                .filter_map(|a| if let Attr::XorPeer(p) = a { Some(*p) } else { None }).collect();
            let got: Vec<_> = m.xor_peer_addresses().map(Result::unwrap).collect();
            prop_assert_eq!(got, peers);
            let relayed: Vec<_> = s.attrs.iter()
                .filter_map(|a| if let Attr::XorRelayed(p) = a { Some(*p) } else { None }).collect();
            let got: Vec<_> = m.xor_relayed_addresses().map(Result::unwrap).collect();
            prop_assert_eq!(got, relayed);
            prop_assert_eq!(m.dont_fragment(), s.attrs.iter().any(|a| matches!(a, Attr::DontFragment)));
        }

        // Integrity and fingerprint.
        prop_assert_eq!(m.check_fingerprint(), s.fingerprint);
        prop_assert_eq!(m.has_fingerprint(), s.fingerprint);
        let wrong = b"definitely not the key, it is far too long for the generator";
        match (&s.mi, &s.mi256) {
            (_, Some(k)) => {
                prop_assert_eq!(m.verify_integrity(k.as_bytes()), Ok(IntegrityKind::Sha256));
                prop_assert_eq!(m.verify_integrity(wrong), Err(IntegrityError::Mismatch));
            }
            (Some(k), None) => {
                prop_assert_eq!(m.verify_integrity(k.as_bytes()), Ok(IntegrityKind::Sha1));
                prop_assert_eq!(m.verify_integrity(wrong), Err(IntegrityError::Mismatch));
            }
            (None, None) => {
                prop_assert!(!m.has_integrity());
                prop_assert_eq!(m.verify_integrity(b"k"), Err(IntegrityError::Missing));
            }
        }
        exercise(&m);

        // Any single bit flip after the header is caught by FINGERPRINT or integrity
        // (or makes the message unparseable).
        if s.fingerprint || s.mi.is_some() || s.mi256.is_some() {
            for bit in [0usize, 7, 13] {
                let pos = 20 + (bit * 31) % (bytes.len() - 20);
                let mut b = bytes.clone();
                b[pos] ^= 1 << (bit % 8);
                if let Ok(t) = Message::parse(&b) {
                    exercise(&t);
                    let key = s.mi256.as_ref().or(s.mi.as_ref());
                    let ok_integrity = key.is_some_and(|k| t.verify_integrity(k.as_bytes()).is_ok());
                    prop_assert!(!(t.check_fingerprint() && ok_integrity) || (!s.fingerprint && key.is_none()));
                    if s.fingerprint { prop_assert!(!t.check_fingerprint()); }
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(m) = Message::parse(&bytes) {
            exercise(&m);
        }
        let _ = ChannelData::parse(&bytes);
        let _ = stream_frame_len(&bytes);
        let _ = icebreaker_stun::is_stun(&bytes);
        let _ = icebreaker_stun::is_channel_data(&bytes);
    }

    /// A valid header followed by random attribute bytes: parse succeeds much more often, so the
    /// getters see lots of malformed values.
    #[test]
    fn random_bodies_never_panic(
        typ in 0u16..0x4000,
        body in proptest::collection::vec(any::<u8>(), 0..50).prop_map(|mut v| { v.truncate(v.len() / 4 * 4); v }),
        types in proptest::collection::vec(prop_oneof![
            Just(attr::MESSAGE_INTEGRITY), Just(attr::MESSAGE_INTEGRITY_SHA256), Just(attr::FINGERPRINT),
            Just(attr::XOR_PEER_ADDRESS), Just(attr::ERROR_CODE), Just(attr::USERNAME),
            Just(attr::UNKNOWN_ATTRIBUTES), Just(attr::EVEN_PORT), any::<u16>()], 0..6),
        lens in proptest::collection::vec(0u16..40, 0..6),
    ) {
        let mut v = typ.to_be_bytes().to_vec();
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        v.extend_from_slice(&[9; 12]);
        for (t, l) in types.iter().zip(&lens) {
            v.extend_from_slice(&t.to_be_bytes());
            v.extend_from_slice(&l.to_be_bytes());
            v.extend(body.iter().cycle().take(((*l as usize) + 3) & !3));
            if body.is_empty() { v.extend(std::iter::repeat_n(0u8, ((*l as usize) + 3) & !3)); }
        }
        let len = (v.len() - 20) as u16;
        v[2..4].copy_from_slice(&len.to_be_bytes());
        let m = Message::parse(&v);
        prop_assert!(m.is_ok());
        if let Ok(m) = m { exercise(&m); }
    }

    #[test]
    fn mutated_messages_never_panic(s in spec(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut bytes = write_spec(&s);
        for (pos, x) in flips {
            let i = pos % bytes.len();
            bytes[i] ^= x;
        }
        if let Ok(m) = Message::parse(&bytes) { exercise(&m); }
        let c = cut % (bytes.len() + 1);
        if let Ok(m) = Message::parse(&bytes[..c]) { exercise(&m); }
        let _ = stream_frame_len(&bytes);
    }
}

fn first(s: &Spec, pred: impl Fn(&Attr) -> bool, me: &Attr) -> bool {
    // `me` is the first attribute of its kind, and no Raw attribute before it could shadow it.
    for a in &s.attrs {
        if std::ptr::eq(a, me) {
            return true;
        }
        if pred(a) || matches!(a, Attr::Raw(..)) {
            return false;
        }
    }
    false
}
