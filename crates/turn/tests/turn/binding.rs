//! STUN Binding (RFC 8489).

use crate::common::*;
use icebreaker_stun::{attr, method, Class};
use icebreaker_turn::Transport;

#[test]
fn binding_returns_xor_mapped_address_with_valid_fingerprint() {
    let mut env = Env::new();
    let c = Client::alice("203.0.113.50:40000");
    let r = env.call(c.tuple, &Req::request(method::BINDING));
    r.assert_success();
    assert_eq!(r.method(), method::BINDING);
    assert_eq!(r.mapped(), Some(c.tuple.client));
    assert!(!r.has(attr::MESSAGE_INTEGRITY), "Binding needs no auth");
    assert_eq!(env.server.stats().requests[0], 1);
    assert_eq!(env.server.allocation_count(), 0);
}

#[test]
fn binding_ipv6_client() {
    let mut env = Env::new();
    let c = Client::alice("[2001:db8::99]:40000");
    let r = env.call(c.tuple, &Req::request(method::BINDING));
    r.assert_success();
    assert_eq!(r.mapped(), Some(c.tuple.client));
}

#[test]
fn binding_is_answered_with_fingerprint_only_when_the_request_has_one() {
    // A bare request gets the smallest answer (amplification toward spoofed sources); ICE
    // checks, which carry FINGERPRINT to be told apart from media, get it back.
    let mut env = Env::new();
    let c = Client::alice("203.0.113.50:40000");
    let mut req = Req::request(method::BINDING);
    req.fingerprint = false;
    let r = env.call(c.tuple, &req);
    r.assert_success();
    assert_eq!(r.mapped(), Some(c.tuple.client));
    assert!(!r.msg().has_fingerprint());
    assert_eq!(r.0.len(), 32, "header + XOR-MAPPED-ADDRESS");
    let r = env.call(c.tuple, &Req::request(method::BINDING));
    assert!(r.msg().has_fingerprint() && r.msg().check_fingerprint());
}

#[test]
fn binding_software_omitted_on_udp_when_answer_would_be_larger() {
    let mut env = Env::new();
    let c = Client::alice("203.0.113.50:40000");
    let req = Req::request(method::BINDING);
    let len = req.encode().len();
    let r = env.call(c.tuple, &req);
    r.assert_success();
    assert!(!r.has(attr::SOFTWARE));
    assert!(
        r.0.len() > len,
        "the bare answer is already larger than the request"
    );
}

#[test]
fn binding_software_present_on_udp_when_answer_not_larger() {
    let mut env = Env::new();
    let c = Client::alice("203.0.113.50:40000");
    // A comprehension-optional attribute pads the request so the answer fits.
    let req = Req::request(method::BINDING).attr(0x8077, &[0u8; 64]);
    let len = req.encode().len();
    let r = env.call(c.tuple, &req);
    r.assert_success();
    assert_eq!(r.msg().software().expect("SOFTWARE"), Some(SOFTWARE));
    assert!(r.0.len() <= len, "answer {} <= request {len}", r.0.len());
}

#[test]
fn binding_software_boundary_is_exact() {
    // Answer with SOFTWARE = 20 + 12 (XOR-MAPPED v4) + 4 + pad4(len) + 8 (FINGERPRINT).
    let with = 20 + 12 + 4 + SOFTWARE.len().div_ceil(4) * 4 + 8;
    // Request = 20 + (4 + pad) + 8 (FINGERPRINT): choose the padding attribute size.
    let pad_for = |total: usize| total - 20 - 8 - 4;
    let mut env = Env::new();
    let c = Client::alice("203.0.113.50:40000");
    let exact = Req::request(method::BINDING).attr(0x8077, &vec![0u8; pad_for(with)]);
    assert_eq!(exact.encode().len(), with);
    assert!(env.call(c.tuple, &exact).has(attr::SOFTWARE));
    let short = Req::request(method::BINDING).attr(0x8077, &vec![0u8; pad_for(with) - 4]);
    assert!(!env.call(c.tuple, &short).has(attr::SOFTWARE));
}

#[test]
fn binding_software_always_on_tcp() {
    let mut env = Env::new();
    for t in [Transport::Tcp, Transport::Tls] {
        let c = Client::new("203.0.113.50:40000", t, "alice", "alice-pw");
        let r = env.call(c.tuple, &Req::request(method::BINDING));
        r.assert_success();
        assert_eq!(r.msg().software().expect("SOFTWARE"), Some(SOFTWARE));
        assert_eq!(r.mapped(), Some(c.tuple.client));
    }
}

#[test]
fn binding_no_software_when_not_configured() {
    let mut cfg = config();
    cfg.software.clear();
    let mut env = Env::with(cfg);
    let c = Client::new("203.0.113.50:40000", Transport::Tcp, "alice", "alice-pw");
    let r = env.call(c.tuple, &Req::request(method::BINDING));
    r.assert_success();
    assert!(!r.has(attr::SOFTWARE));
}

#[test]
fn binding_with_unknown_comprehension_required_attribute_is_420() {
    let mut env = Env::new();
    let c = Client::alice("203.0.113.50:40000");
    let r = env.call(
        c.tuple,
        &Req::request(method::BINDING).attr(0x0031, &[1, 2, 3, 4]),
    );
    r.assert_error(420);
    assert_eq!(r.unknown_attributes(), vec![0x0031]);
}

#[test]
fn binding_with_bad_fingerprint_is_dropped() {
    let mut env = Env::new();
    let c = Client::alice("203.0.113.50:40000");
    let mut bytes = Req::request(method::BINDING).encode();
    let n = bytes.len();
    bytes[n - 1] ^= 0xFF;
    assert!(env.raw(c.tuple, &bytes).is_none());
    assert_eq!(env.server.stats().dropped_malformed, 1);
}

#[test]
fn responses_and_indications_from_clients_are_ignored() {
    let mut env = Env::new();
    let c = Client::alice("203.0.113.50:40000");
    for class in [Class::Success, Class::Error, Class::Indication] {
        let m = Req::new(method::BINDING, class).encode();
        assert!(env.raw(c.tuple, &m).is_none());
    }
}
