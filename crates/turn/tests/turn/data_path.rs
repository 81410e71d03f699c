//! The packet path: ChannelData, Send and Data indications (RFC 8656 §11-12).

use crate::common::*;
use icebreaker_stun::{method, Class, Message};
use icebreaker_turn::{ClientOutput, RelayId, Transport, PEER_HEADROOM};

fn setup(transport: Transport) -> (Env, Client, RelayId) {
    let mut env = Env::new();
    let mut c = Client::new("203.0.113.50:40000", transport, "alice", "alice-pw");
    let (rid, _) = env.allocate_relay(&mut c);
    env.create_permission(&mut c, sa(PEER)).assert_success();
    env.channel_bind(&mut c, 0x4001, sa(PEER)).assert_success();
    (env, c, rid)
}

#[test]
fn client_channel_data_is_forwarded_borrowing_the_payload() {
    let (mut env, c, rid) = setup(Transport::Udp);
    let packet = channel_data(0x4001, b"payload!");
    let mut out = [0u8; 1500];
    let res = env
        .server
        .handle_client(env.now, c.tuple, &packet, &mut out, &mut env.relays);
    match res {
        ClientOutput::Forward { relay, peer, data } => {
            assert_eq!(relay, rid);
            assert_eq!(peer, sa(PEER));
            assert_eq!(data, b"payload!");
            assert_eq!(data.as_ptr(), packet[4..].as_ptr(), "zero-copy borrow");
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn client_channel_data_with_udp_padding_or_empty_payload() {
    let (mut env, c, rid) = setup(Transport::Udp);
    let mut padded = channel_data(0x4001, b"abcde");
    padded.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        env.raw(c.tuple, &padded),
        Out::Forward {
            relay: rid,
            peer: sa(PEER),
            data: b"abcde".to_vec()
        }
    );
    assert_eq!(
        env.raw(c.tuple, &channel_data(0x4001, b"")),
        Out::Forward {
            relay: rid,
            peer: sa(PEER),
            data: vec![]
        }
    );
}

#[test]
fn send_indication_is_forwarded() {
    let (mut env, c, rid) = setup(Transport::Udp);
    let packet = send_indication(sa(PEER2), b"nope");
    assert!(
        env.raw(c.tuple, &packet).is_none(),
        "no permission for PEER2"
    );
    let packet = send_indication(sa("198.51.100.7:777"), b"via send");
    let mut out = [0u8; 1500];
    match env
        .server
        .handle_client(env.now, c.tuple, &packet, &mut out, &mut env.relays)
    {
        ClientOutput::Forward { relay, peer, data } => {
            assert_eq!(relay, rid);
            assert_eq!(peer, sa("198.51.100.7:777"));
            assert_eq!(data, b"via send");
            let off = data.as_ptr() as usize - packet.as_ptr() as usize;
            assert!(off < packet.len(), "borrowed from the packet");
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(env.server.stats().send_indications, 2);
}

#[test]
fn send_indication_without_permission_is_dropped() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.allocate(&mut c);
    let before = env.server.stats().dropped_no_permission;
    assert!(env.raw(c.tuple, &send_indication(sa(PEER), b"x")).is_none());
    assert_eq!(env.server.stats().dropped_no_permission, before + 1);
}

#[test]
fn send_indication_without_allocation_or_data_is_dropped() {
    let mut env = Env::new();
    let c = Client::alice("203.0.113.50:40000");
    assert!(env.raw(c.tuple, &send_indication(sa(PEER), b"x")).is_none());
    assert_eq!(env.server.stats().dropped_no_allocation, 1);
    let (mut env, c, _) = setup(Transport::Udp);
    let no_data = Req::new(method::SEND, Class::Indication)
        .peer(sa(PEER))
        .encode();
    let no_peer = Req::new(method::SEND, Class::Indication)
        .data(b"x")
        .encode();
    let before = env.server.stats().dropped_malformed;
    assert!(env.raw(c.tuple, &no_data).is_none());
    assert!(env.raw(c.tuple, &no_peer).is_none());
    assert_eq!(env.server.stats().dropped_malformed, before + 2);
}

#[test]
fn peer_datagram_with_channel_becomes_channel_data() {
    let (mut env, c, rid) = setup(Transport::Udp);
    let payload = b"hello";
    let mut buf = vec![0xEEu8; PEER_HEADROOM + payload.len() + 3];
    buf[PEER_HEADROOM..PEER_HEADROOM + payload.len()].copy_from_slice(payload);
    let out = env
        .server
        .handle_peer(env.now, rid, sa(PEER), &mut buf, payload.len())
        .expect("delivered");
    assert_eq!(out.client, c.tuple);
    assert_eq!(out.range, PEER_HEADROOM - 4..PEER_HEADROOM + payload.len());
    assert_eq!(&buf[out.range.clone()], &channel_data(0x4001, payload)[..]);
}

#[test]
fn peer_datagram_over_tcp_channel_data_is_padded_to_four() {
    for transport in [Transport::Tcp, Transport::Tls] {
        let (mut env, c, rid) = setup(transport);
        for len in 0..9usize {
            let payload: Vec<u8> = (0..len as u8).map(|b| b + 1).collect();
            let mut buf = vec![0xEEu8; PEER_HEADROOM + len + 3];
            buf[PEER_HEADROOM..PEER_HEADROOM + len].copy_from_slice(&payload);
            let out = env
                .server
                .handle_peer(env.now, rid, sa(PEER), &mut buf, len)
                .expect("delivered");
            assert_eq!(out.client, c.tuple);
            let bytes = &buf[out.range];
            assert_eq!(bytes.len() % 4, 0, "len {len}");
            assert_eq!(bytes.len(), 4 + len.div_ceil(4) * 4);
            assert_eq!(&bytes[..4 + len], &channel_data(0x4001, &payload)[..]);
            assert!(bytes[4 + len..].iter().all(|&b| b == 0), "zero padding");
            assert_eq!(
                icebreaker_stun::stream_frame_len(bytes),
                Ok(Some(bytes.len()))
            );
        }
    }
}

#[test]
fn peer_datagram_without_channel_becomes_data_indication() {
    let (mut env, c, rid) = setup(Transport::Udp);
    let from = sa("198.51.100.7:9999"); // permitted IP, no channel on this port
    for payload in [&b""[..], b"a", b"abcd", b"abcdefg"] {
        let (to, bytes) = env.peer(rid, from, payload).expect("delivered");
        assert_eq!(to, c.tuple);
        assert_eq!(bytes.len() % 4, 0);
        let m = Message::parse(&bytes).expect("valid Data indication");
        assert_eq!(m.class(), Class::Indication);
        assert_eq!(m.method(), method::DATA);
        let peers: Vec<_> = m.xor_peer_addresses().map(|r| r.expect("addr")).collect();
        assert_eq!(peers, vec![from]);
        assert_eq!(m.data(), Some(payload));
        assert!(!m.has_integrity());
    }
}

#[test]
fn data_indications_use_distinct_transaction_ids() {
    let (mut env, _c, rid) = setup(Transport::Udp);
    let from = sa("198.51.100.7:9999");
    let (_, a) = env.peer(rid, from, b"1").expect("delivered");
    let (_, b) = env.peer(rid, from, b"2").expect("delivered");
    let ta = *Message::parse(&a).expect("a").transaction_id();
    let tb = *Message::parse(&b).expect("b").transaction_id();
    assert_ne!(ta, tb);
}

#[test]
fn peer_datagram_ipv6_data_indication_fits_the_headroom() {
    let mut env = Env::new();
    let mut c = Client::alice("203.0.113.50:40000");
    env.signed(&mut c, |c| {
        c.allocate_req().family(icebreaker_turn::Family::V6)
    })
    .assert_success();
    let rid = env.server.relays_of(&c.tuple).next().expect("relay").0;
    env.create_permission(&mut c, sa(PEER6)).assert_success();
    let (_, bytes) = env.peer(rid, sa(PEER6), b"v6 data").expect("delivered");
    let m = Message::parse(&bytes).expect("valid");
    assert_eq!(
        m.xor_peer_addresses().next().map(|r| r.expect("addr")),
        Some(sa(PEER6))
    );
    assert_eq!(m.data(), Some(&b"v6 data"[..]));
    // Channel to the IPv6 peer.
    env.channel_bind(&mut c, 0x4FFF, sa(PEER6)).assert_success();
    let (_, bytes) = env.peer(rid, sa(PEER6), b"v6").expect("delivered");
    assert_eq!(bytes, channel_data(0x4FFF, b"v6"));
}

#[test]
fn peer_datagram_over_tcp_data_indication_is_valid() {
    let (mut env, c, rid) = setup(Transport::Tcp);
    let (to, bytes) = env
        .peer(rid, sa("198.51.100.7:1"), b"xyz")
        .expect("delivered");
    assert_eq!(to, c.tuple);
    assert_eq!(
        icebreaker_stun::stream_frame_len(&bytes),
        Ok(Some(bytes.len()))
    );
    let m = Message::parse(&bytes).expect("valid");
    assert_eq!(m.data(), Some(&b"xyz"[..]));
}

#[test]
fn peer_datagram_from_a_peer_without_permission_is_dropped() {
    let (mut env, _c, rid) = setup(Transport::Udp);
    let before = env.server.stats().dropped_no_permission;
    assert!(env.peer(rid, sa(PEER2), b"x").is_none());
    assert_eq!(env.server.stats().dropped_no_permission, before + 1);
}

#[test]
fn peer_datagram_on_an_unknown_relay_is_dropped() {
    let (mut env, _c, _rid) = setup(Transport::Udp);
    assert!(env.peer(RelayId(9999), sa(PEER), b"x").is_none());
    assert_eq!(env.server.stats().dropped_no_allocation, 1);
}

#[test]
fn peer_datagram_with_too_small_buffer_is_dropped_without_panic() {
    let (mut env, _c, rid) = setup(Transport::Udp);
    for (buf_len, len) in [
        (PEER_HEADROOM + 5, 5),
        (10, 5),
        (0, 0),
        (PEER_HEADROOM, 100),
    ] {
        let mut buf = vec![0u8; buf_len];
        assert!(env
            .server
            .handle_peer(env.now, rid, sa(PEER), &mut buf, len)
            .is_none());
    }
}

#[test]
fn large_peer_datagrams() {
    let (mut env, _c, rid) = setup(Transport::Udp);
    // Largest IPv4 UDP payload: fits both as ChannelData and as a Data indication.
    let big = vec![7u8; 65_507];
    let (_, bytes) = env.peer(rid, sa(PEER), &big).expect("channel data");
    assert_eq!(&bytes[..4], &[0x40, 0x01, 0xFF, 0xE3]);
    assert_eq!(bytes.len(), 4 + big.len());
    let (_, bytes) = env.peer(rid, sa("198.51.100.7:1"), &big).expect("fits");
    assert_eq!(
        Message::parse(&bytes).expect("valid").data(),
        Some(&big[..])
    );
    // 65535 bytes: ChannelData's 16-bit length still fits, a Data indication's would overflow:
    // dropped, not truncated.
    let max = vec![9u8; 65_535];
    let (_, bytes) = env.peer(rid, sa(PEER), &max).expect("channel data");
    assert_eq!(&bytes[..4], &[0x40, 0x01, 0xFF, 0xFF]);
    let before = env.server.stats().dropped_malformed;
    assert!(env.peer(rid, sa("198.51.100.7:1"), &max).is_none());
    assert_eq!(env.server.stats().dropped_malformed, before + 1);
}

#[test]
fn channel_data_on_an_unbound_channel_is_dropped() {
    let (mut env, c, _rid) = setup(Transport::Udp);
    let before = env.server.stats().dropped_no_permission;
    assert!(env.raw(c.tuple, &channel_data(0x4002, b"x")).is_none());
    assert_eq!(env.server.stats().dropped_no_permission, before + 1);
    // And from a 5-tuple without an allocation.
    let mut other = c.clone();
    other.tuple.client = sa("203.0.113.50:1");
    assert!(env.raw(other.tuple, &channel_data(0x4001, b"x")).is_none());
    assert_eq!(env.server.stats().dropped_no_allocation, 1);
}

#[test]
fn garbage_and_truncated_packets_never_panic_and_are_counted() {
    let (mut env, c, _rid) = setup(Transport::Udp);
    let valid_stun = Req::request(method::BINDING).encode();
    let mut long_cd = channel_data(0x4001, b"abc");
    long_cd[3] = 200; // length beyond the datagram
    let mut bad_len_stun = valid_stun.clone();
    bad_len_stun[3] = 0x40;
    let mut bad_attr = Req::request(method::BINDING).attr(0x8050, b"abcd").encode();
    bad_attr[22] = 0x10; // attribute length 0x1004: beyond the message
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x40],
        vec![0x40, 0x01],
        vec![0x40, 0x01, 0x00],
        vec![0x40, 0x01, 0x00, 0x05, b'a'], // truncated ChannelData
        long_cd,
        vec![0x4F, 0xFF, 0xFF, 0xFF],
        vec![0xFF; 40],
        vec![0x00; 19],
        valid_stun[..19].to_vec(),
        valid_stun[..valid_stun.len() - 4].to_vec(),
        bad_len_stun,
        bad_attr,
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0x16, 0x03, 0x01, 0x00, 0x10],
    ];
    let before = env.server.stats().dropped_malformed;
    for (i, case) in cases.iter().enumerate() {
        assert!(env.raw(c.tuple, case).is_none(), "case {i}");
    }
    assert_eq!(
        env.server.stats().dropped_malformed,
        before + cases.len() as u64
    );
    // Oversized ChannelData: a 64 KiB frame is handled like any other.
    let huge = channel_data(0x4001, &vec![1u8; 65_535]);
    assert!(matches!(env.raw(c.tuple, &huge), Out::Forward { .. }));
    // The server still works.
    env.call(c.tuple, &Req::request(method::BINDING))
        .assert_success();
    assert!(env.raw(c.tuple, &channel_data(0x4001, b"ok")) != Out::None);
}
