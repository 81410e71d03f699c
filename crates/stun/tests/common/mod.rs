//! Shared test vectors and proptest generators.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;

use icebreaker_stun::{attr, Class, MessageType, MessageWriter, TransactionId};
use proptest::prelude::*;

/// RFC 5769 §2.1 Sample Request (short-term, "STUN test client", padding 0x20).
#[rustfmt::skip]
pub const RFC5769_REQUEST: &[u8] = &[
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42,
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
    0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74,
    0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
    0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76,
    0x59, 0x20, 0x20, 0x20,
    0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56,
    0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2,
    0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
];

/// RFC 5769 §2.2 Sample IPv4 Response.
#[rustfmt::skip]
pub const RFC5769_IPV4_RESPONSE: &[u8] = &[
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42,
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20,
    0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
    0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3,
    0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7,
    0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
];

/// RFC 5769 §2.3 Sample IPv6 Response.
#[rustfmt::skip]
pub const RFC5769_IPV6_RESPONSE: &[u8] = &[
    0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42,
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20,
    0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47,
    0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79,
    0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
    0x00, 0x08, 0x00, 0x14, 0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1,
    0x17, 0x84, 0xc9, 0x7c, 0x82, 0x92, 0xc2, 0x75, 0xbf, 0xe3, 0xed, 0x41,
    0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
];

/// RFC 5769 §2.4 Sample Request with Long-Term Authentication.
#[rustfmt::skip]
pub const RFC5769_LONG_TERM_REQUEST: &[u8] = &[
    0x00, 0x01, 0x00, 0x60, 0x21, 0x12, 0xa4, 0x42,
    0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e,
    0x00, 0x06, 0x00, 0x12,
    0xe3, 0x83, 0x9e, 0xe3, 0x83, 0x88, 0xe3, 0x83, 0xaa, 0xe3, 0x83, 0x83,
    0xe3, 0x82, 0xaf, 0xe3, 0x82, 0xb9, 0x00, 0x00,
    0x00, 0x15, 0x00, 0x1c,
    0x66, 0x2f, 0x2f, 0x34, 0x39, 0x39, 0x6b, 0x39, 0x35, 0x34, 0x64, 0x36,
    0x4f, 0x4c, 0x33, 0x34, 0x6f, 0x4c, 0x39, 0x46, 0x53, 0x54, 0x76, 0x79,
    0x36, 0x34, 0x73, 0x41,
    0x00, 0x14, 0x00, 0x0b, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e,
    0x6f, 0x72, 0x67, 0x00,
    0x00, 0x08, 0x00, 0x14, 0xf6, 0x70, 0x24, 0x65, 0x6d, 0xd6, 0x4a, 0x3e,
    0x02, 0xb8, 0xe0, 0x71, 0x2e, 0x85, 0xc9, 0xa2, 0x8c, 0xa8, 0x96, 0x66,
];

pub const SHORT_TERM_PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";
pub const LT_USER: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
pub const LT_REALM: &str = "example.org";
pub const LT_PASSWORD: &str = "TheMatrIX";
pub const LT_NONCE: &str = "f//499k954d6OL34oL9FSTvy64sA";

/// One attribute to write, in a form both writers understand.
#[derive(Clone, Debug)]
pub enum Attr {
    /// Any attribute type that is not MI / MI-SHA256 / FINGERPRINT, with raw value.
    Raw(u16, Vec<u8>),
    Username(String),
    Realm(String),
    Nonce(String),
    Software(String),
    ErrorCode(u16, String),
    Lifetime(u32),
    XorPeer(SocketAddr),
    XorRelayed(SocketAddr),
    XorMapped(SocketAddr),
    Mapped(SocketAddr),
    ChannelNumber(u16),
    RequestedTransport(u8),
    EvenPort(bool),
    ReservationToken([u8; 8]),
    RequestedFamily(u8),
    DontFragment,
    Data(Vec<u8>),
    UnknownAttributes(Vec<u16>),
}

#[derive(Clone, Debug)]
pub struct Spec {
    pub method: u16,
    pub class: Class,
    pub tid: TransactionId,
    pub attrs: Vec<Attr>,
    /// Short-term key (password) for MESSAGE-INTEGRITY.
    pub mi: Option<String>,
    /// Short-term key for MESSAGE-INTEGRITY-SHA256.
    pub mi256: Option<String>,
    pub fingerprint: bool,
}

pub fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
    ]
}

pub fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-zA-Z0-9 :/+=\u{e9}\u{30DE}]{{0,{max}}}")).unwrap()
}

pub fn raw_type() -> impl Strategy<Value = u16> {
    any::<u16>().prop_filter("not an integrity/fingerprint type", |t| {
        !matches!(
            *t,
            attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT
        )
    })
}

pub fn attr_strategy() -> impl Strategy<Value = Attr> {
    prop_oneof![
        (raw_type(), proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(t, v)| Attr::Raw(t, v)),
        text(40).prop_map(Attr::Username),
        text(40).prop_map(Attr::Realm),
        text(40).prop_map(Attr::Nonce),
        text(40).prop_map(Attr::Software),
        (300u16..700, text(30)).prop_map(|(c, r)| Attr::ErrorCode(c, r)),
        any::<u32>().prop_map(Attr::Lifetime),
        addr().prop_map(Attr::XorPeer),
        addr().prop_map(Attr::XorRelayed),
        addr().prop_map(Attr::XorMapped),
        addr().prop_map(Attr::Mapped),
        any::<u16>().prop_map(Attr::ChannelNumber),
        any::<u8>().prop_map(Attr::RequestedTransport),
        any::<bool>().prop_map(Attr::EvenPort),
        any::<[u8; 8]>().prop_map(Attr::ReservationToken),
        prop_oneof![Just(1u8), Just(2u8)].prop_map(Attr::RequestedFamily),
        Just(Attr::DontFragment),
        proptest::collection::vec(any::<u8>(), 0..100).prop_map(Attr::Data),
        proptest::collection::vec(any::<u16>(), 0..6).prop_map(Attr::UnknownAttributes),
    ]
}

pub fn class() -> impl Strategy<Value = Class> {
    prop_oneof![
        Just(Class::Request),
        Just(Class::Indication),
        Just(Class::Success),
        Just(Class::Error)
    ]
}

pub fn spec() -> impl Strategy<Value = Spec> {
    (
        0u16..0x1000,
        class(),
        any::<[u8; 12]>(),
        proptest::collection::vec(attr_strategy(), 0..12),
        proptest::option::of("[ -~]{0,24}"),
        proptest::option::of("[ -~]{0,24}"),
        any::<bool>(),
    )
        .prop_map(|(method, class, tid, attrs, mi, mi256, fingerprint)| Spec {
            method,
            class,
            tid,
            attrs,
            mi,
            mi256,
            fingerprint,
        })
}

/// (type, value) of an attribute as our writer encodes it.
pub fn encode_attr(a: &Attr, tid: &TransactionId) -> (u16, Vec<u8>) {
    // Encode through our writer to get the exact value bytes.
    let mut buf = [0u8; 2048];
    let mut w = MessageWriter::new(&mut buf, MessageType::new(1, Class::Request), tid).unwrap();
    write_attr(&mut w, a);
    let n = w.finish();
    let m = icebreaker_stun::Message::parse(&buf[..n]).unwrap();
    let a = m.attributes().next().unwrap();
    (a.typ, a.value.to_vec())
}

pub fn write_attr(w: &mut MessageWriter<'_>, a: &Attr) {
    match a {
        Attr::Raw(t, v) => w.attr(*t, v),
        Attr::Username(s) => w.attr(attr::USERNAME, s.as_bytes()),
        Attr::Realm(s) => w.attr(attr::REALM, s.as_bytes()),
        Attr::Nonce(s) => w.attr(attr::NONCE, s.as_bytes()),
        Attr::Software(s) => w.attr(attr::SOFTWARE, s.as_bytes()),
        Attr::ErrorCode(c, r) => w.error_code(*c, r),
        Attr::Lifetime(l) => w.lifetime(*l),
        Attr::XorPeer(a) => w.xor_address(attr::XOR_PEER_ADDRESS, *a),
        Attr::XorRelayed(a) => w.xor_address(attr::XOR_RELAYED_ADDRESS, *a),
        Attr::XorMapped(a) => w.xor_address(attr::XOR_MAPPED_ADDRESS, *a),
        Attr::Mapped(a) => w.address(attr::MAPPED_ADDRESS, *a),
        Attr::ChannelNumber(c) => w.channel_number(*c),
        Attr::RequestedTransport(p) => w.requested_transport(*p),
        Attr::EvenPort(r) => w.attr(attr::EVEN_PORT, &[if *r { 0x80 } else { 0 }]),
        Attr::ReservationToken(t) => w.attr(attr::RESERVATION_TOKEN, t),
        Attr::RequestedFamily(f) => w.attr(attr::REQUESTED_ADDRESS_FAMILY, &[*f, 0, 0, 0]),
        Attr::DontFragment => w.attr(attr::DONT_FRAGMENT, &[]),
        Attr::Data(d) => w
            .attr_slot(attr::DATA, d.len())
            .map(|s| s.copy_from_slice(d)),
        Attr::UnknownAttributes(t) => w.unknown_attributes(t),
    }
    .unwrap();
}

/// Write a spec with our writer.
pub fn write_spec(s: &Spec) -> Vec<u8> {
    let mut buf = vec![0u8; 8192];
    let mut w = MessageWriter::new(&mut buf, MessageType::new(s.method, s.class), &s.tid).unwrap();
    for a in &s.attrs {
        write_attr(&mut w, a);
    }
    if let Some(k) = &s.mi {
        w.message_integrity(k.as_bytes()).unwrap();
    }
    if let Some(k) = &s.mi256 {
        w.message_integrity_sha256(k.as_bytes()).unwrap();
    }
    if s.fingerprint {
        w.fingerprint().unwrap();
    }
    let n = w.finish();
    buf.truncate(n);
    buf
}

/// Call every getter and check; must never panic.
pub fn exercise(m: &icebreaker_stun::Message<'_>) {
    let _ = m.typ();
    let _ = m.method();
    let _ = m.class();
    let _ = m.transaction_id();
    for a in m.attributes() {
        let _ = icebreaker_stun::attr::name(a.typ);
        let _ = icebreaker_stun::decode_address(a.value);
        let _ = icebreaker_stun::decode_xor_address(a.value, m.transaction_id());
    }
    let _ = m.get(attr::USERNAME);
    let _ = m.username();
    let _ = m.realm();
    let _ = m.nonce();
    let _ = m.software();
    let _ = m.error_code();
    let _ = m.lifetime();
    let _ = m.requested_transport();
    let _ = m.channel_number();
    let _ = m.data();
    let _ = m.even_port();
    let _ = m.reservation_token();
    let _ = m.requested_address_family();
    let _ = m.additional_address_family();
    let _ = m.dont_fragment();
    let _ = m.xor_mapped_address();
    let _ = m.xor_relayed_address();
    let _ = m.xor_relayed_addresses().count();
    let _ = m.xor_peer_addresses().count();
    let _ = m.mapped_address();
    let _ = m.unknown_attributes().count();
    let mut out = [0u16; 4];
    let _ = m.unknown_comprehension_required(|t| t == attr::USERNAME, &mut out);
    let _ = m.unknown_comprehension_required(|_| false, &mut []);
    let _ = m.has_fingerprint();
    let _ = m.check_fingerprint();
    let _ = m.has_integrity();
    let _ = m.verify_integrity(b"key");
    let _ = m.verify_integrity(&[]);
}
