//! Differential tests against the independent `stun-types` crate.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use icebreaker_stun::{
    attr, long_term_key, long_term_key_sha256, Class, IntegrityKind, Message, MessageType,
    MessageWriter,
};
use proptest::prelude::*;
use stun_types::attribute::{Attribute, AttributeType, RawAttribute};
use stun_types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message as StMessage, MessageClass,
    MessageIntegrityCredentials, MessageType as StMessageType, MessageWrite, MessageWriteExt,
    MessageWriteVec, Method, ShortTermCredentials,
};

fn st_class(c: Class) -> MessageClass {
    match c {
        Class::Request => MessageClass::Request,
        Class::Indication => MessageClass::Indication,
        Class::Success => MessageClass::Success,
        Class::Error => MessageClass::Error,
    }
}

fn tid_u128(t: &[u8; 12]) -> u128 {
    let mut b = [0u8; 16];
    b[4..].copy_from_slice(t);
    u128::from_be_bytes(b)
}

fn short(k: &str) -> MessageIntegrityCredentials {
    ShortTermCredentials::new(k.to_owned()).into()
}

/// The attributes stun-types considers (it stops after MI / MI-SHA256 / FINGERPRINT like us).
fn st_attrs(m: &StMessage<'_>) -> Vec<(u16, Vec<u8>)> {
    m.iter_attributes()
        .map(|(_, a)| (a.get_type().value(), a.value.to_vec()))
        .collect()
}

fn our_attrs(m: &Message<'_>) -> Vec<(u16, Vec<u8>)> {
    m.attributes().map(|a| (a.typ, a.value.to_vec())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Messages we write parse with stun-types, with the same header and attributes, and its
    /// integrity / fingerprint checks pass.
    #[test]
    fn ours_to_stun_types(s in spec()) {
        let bytes = write_spec(&s);
        // stun-types checks FINGERPRINT inside from_bytes.
        let st = StMessage::from_bytes(&bytes).unwrap();
        let t = st.get_type();
        prop_assert_eq!(t.class(), st_class(s.class));
        prop_assert_eq!(t.method(), Method::new(s.method));
        prop_assert_eq!(u128::from(st.transaction_id()), tid_u128(&s.tid));
        let ours = Message::parse(&bytes).unwrap();
        prop_assert_eq!(st_attrs(&st), our_attrs(&ours));
        match (&s.mi, &s.mi256) {
            (_, Some(k)) => {
                prop_assert_eq!(st.validate_integrity(&short(k)).unwrap(), IntegrityAlgorithm::Sha256);
                prop_assert!(st.validate_integrity(&short("wrong key!")).is_err());
            }
            (Some(k), None) => {
                prop_assert_eq!(st.validate_integrity(&short(k)).unwrap(), IntegrityAlgorithm::Sha1);
                prop_assert!(st.validate_integrity(&short("wrong key!")).is_err());
            }
            (None, None) => prop_assert!(st.validate_integrity(&short("k")).is_err()),
        }
    }

    /// Messages stun-types writes parse with ours, with the same attributes, and verify.
    #[test]
    fn stun_types_to_ours(
        s in spec(),
        key in "[ -~]{0,24}",
        algo in prop_oneof![Just(None), Just(Some(IntegrityAlgorithm::Sha1)), Just(Some(IntegrityAlgorithm::Sha256))],
        both in any::<bool>(),
        fingerprint in any::<bool>(),
    ) {
        let mtype = StMessageType::from_class_method(st_class(s.class), Method::new(s.method));
        let mut w = StMessage::builder(mtype, tid_u128(&s.tid).into(), MessageWriteVec::new());
        let encoded: Vec<(u16, Vec<u8>)> = s.attrs.iter().map(|a| encode_attr(a, &s.tid)).collect();
        for (t, v) in &encoded {
            w.add_attribute(&RawAttribute::new(AttributeType::new(*t), v)).unwrap();
        }
        let creds = short(&key);
        if let Some(a) = algo {
            if both && a == IntegrityAlgorithm::Sha256 {
                w.add_message_integrity(&creds, IntegrityAlgorithm::Sha1).unwrap();
            }
            w.add_message_integrity(&creds, a).unwrap();
        }
        if fingerprint {
            w.add_fingerprint().unwrap();
        }
        let bytes = w.finish();

        let m = Message::parse(&bytes).unwrap();
        prop_assert_eq!(m.method(), s.method);
        prop_assert_eq!(m.class(), s.class);
        prop_assert_eq!(m.transaction_id(), &s.tid);
        let ours = our_attrs(&m);
        prop_assert_eq!(&ours[..encoded.len()], &encoded[..]);
        prop_assert_eq!(m.check_fingerprint(), fingerprint);
        match algo {
            None => prop_assert!(!m.has_integrity()),
            Some(IntegrityAlgorithm::Sha1) =>
                prop_assert_eq!(m.verify_integrity(key.as_bytes()), Ok(IntegrityKind::Sha1)),
            Some(IntegrityAlgorithm::Sha256) =>
                prop_assert_eq!(m.verify_integrity(key.as_bytes()), Ok(IntegrityKind::Sha256)),
        }
        if algo.is_some() {
            prop_assert!(m.verify_integrity(b"wrong key, longer than any generated one").is_err());
        }
        exercise(&m);
    }
}

#[test]
fn long_term_credentials_agree() {
    let tid = [3u8; 12];
    for (algo, kind) in [
        (IntegrityAlgorithm::Sha1, IntegrityKind::Sha1),
        (IntegrityAlgorithm::Sha256, IntegrityKind::Sha256),
    ] {
        let creds: MessageIntegrityCredentials = LongTermKeyCredentials::new(
            LT_USER.to_owned(),
            LT_PASSWORD.to_owned(),
            LT_REALM.to_owned(),
        )
        .into();
        // stun-types derives MD5 for SHA-1 and SHA-256(user:realm:pass) for SHA-256.
        let key: Vec<u8> = match algo {
            IntegrityAlgorithm::Sha1 => long_term_key(LT_USER, LT_REALM, LT_PASSWORD).to_vec(),
            IntegrityAlgorithm::Sha256 => {
                long_term_key_sha256(LT_USER, LT_REALM, LT_PASSWORD).to_vec()
            }
        };

        // stun-types → ours.
        let mtype = StMessageType::from_class_method(MessageClass::Request, Method::new(3));
        let mut w = StMessage::builder(mtype, tid_u128(&tid).into(), MessageWriteVec::new());
        w.add_attribute(&RawAttribute::new(
            AttributeType::new(attr::USERNAME),
            LT_USER.as_bytes(),
        ))
        .unwrap();
        w.add_message_integrity(&creds, algo).unwrap();
        w.add_fingerprint().unwrap();
        let bytes = w.finish();
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.verify_integrity(&key), Ok(kind));
        assert!(m.check_fingerprint());

        // ours → stun-types.
        let mut buf = [0u8; 256];
        let mut w =
            MessageWriter::new(&mut buf, MessageType::new(3, Class::Request), &tid).unwrap();
        w.attr(attr::USERNAME, LT_USER.as_bytes()).unwrap();
        match algo {
            IntegrityAlgorithm::Sha1 => w.message_integrity(&key).unwrap(),
            IntegrityAlgorithm::Sha256 => w.message_integrity_sha256(&key).unwrap(),
        }
        w.fingerprint().unwrap();
        let n = w.finish();
        assert_eq!(&buf[..n], &bytes[..]);
        let st = StMessage::from_bytes(&buf[..n]).unwrap();
        assert_eq!(st.validate_integrity(&creds).unwrap(), algo);
    }
}

#[test]
fn rfc5769_vectors_agree() {
    for v in [
        RFC5769_REQUEST,
        RFC5769_IPV4_RESPONSE,
        RFC5769_IPV6_RESPONSE,
    ] {
        let st = StMessage::from_bytes(v).unwrap();
        st.validate_integrity(&short(SHORT_TERM_PASSWORD)).unwrap();
        assert_eq!(st_attrs(&st), our_attrs(&Message::parse(v).unwrap()));
    }
}
