//! Parse arbitrary bytes as STUN and call every getter and check.
#![no_main]

use icebreaker_stun::{attr, decode_address, decode_xor_address, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = icebreaker_stun::is_stun(data);
    let _ = icebreaker_stun::stream_frame_len(data);
    let Ok(m) = Message::parse(data) else {
        return;
    };
    assert_eq!(m.as_bytes().len(), data.len());
    let _ = (m.typ(), m.method(), m.class(), m.transaction_id());
    for a in m.attributes() {
        assert!(a.offset + 4 + a.value.len() <= data.len());
        let _ = attr::name(a.typ);
        let _ = decode_address(a.value);
        let _ = decode_xor_address(a.value, m.transaction_id());
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
    let mut out = [0u16; 8];
    let n = m.unknown_comprehension_required(|t| t == attr::USERNAME, &mut out);
    assert!(n <= out.len());
    let _ = m.has_fingerprint();
    let _ = m.check_fingerprint();
    let _ = m.has_integrity();
    let _ = m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt");
    let _ = m.verify_integrity(&[]);
});
