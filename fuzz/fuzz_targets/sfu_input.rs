//! SFU input from the network: `sfu` messages (JSON, SDP offers and answers, views) from members
//! of two rooms, datagrams on the SFU's port from a few sources (STUN with or without a known
//! ufrag, DTLS, RTP-looking bytes, garbage), departures, and time passing, in any order.
//!
//! Properties: never panic; every refused message is answered with an `error` event to its
//! sender; after everyone left, the SFU is empty (no participant, room, track or address left).
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use icebreaker_sfu::{Protocol, Sfu, SfuConfig, SfuEvent};
use libfuzzer_sys::fuzz_target;

const ROOMS: [&str; 2] = ["a", "b"];
const PEERS: [&str; 3] = ["00000001", "00000002", "00000003"];

/// A browser-like offer (audio, simulcast video, data channel): the fuzzer mutates around it.
const OFFER: &str = include_str!("../corpus/sfu_offer.sdp");

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut now = t0;
    let mut sfu = Sfu::new(SfuConfig::default());
    let local: SocketAddr = "127.0.0.1:3479".parse().expect("addr");
    let cands = [(Protocol::Udp, local), (Protocol::Tcp, local)];
    let mut ufrags: Vec<String> = Vec::new();
    for op in data.split(|b| *b == 0xff).take(64) {
        let Some((&kind, rest)) = op.split_first() else { continue };
        let room = ROOMS[usize::from(kind >> 6) % 2];
        let peer = PEERS[usize::from(kind >> 4) % 3];
        match kind % 8 {
            0 => {
                // The seed offer, possibly with fuzz bytes spliced in.
                let mut sdp = OFFER.to_string();
                if !rest.is_empty() {
                    let at = usize::from(rest[0]) * sdp.len() / 256;
                    let at = (0..=at).rev().find(|i| sdp.is_char_boundary(*i)).unwrap_or(0);
                    sdp.insert_str(at, &String::from_utf8_lossy(&rest[1..]));
                }
                let msg = serde_json::json!({"kind": "offer", "sdp": sdp}).to_string();
                let _ = sfu.handle_message(now, room, peer, &msg, &cands);
            }
            1 => {
                let msg = String::from_utf8_lossy(rest);
                if sfu.handle_message(now, room, peer, &msg, &cands).is_err() {
                    let mut answered = false;
                    while let Some(ev) = sfu.poll_event() {
                        if let SfuEvent::ToPeer { peer: p, data, .. } = &ev {
                            answered |= p == peer && data.contains("\"error\"");
                        }
                    }
                    assert!(answered, "a refused message is answered");
                }
            }
            2 => {
                let w = rest.first().copied().unwrap_or(0);
                let msg = serde_json::json!({"kind": "view", "mid": String::from_utf8_lossy(rest.get(1..).unwrap_or(&[])), "width": u32::from(w) * 10, "height": u32::from(w) * 6}).to_string();
                let _ = sfu.handle_message(now, room, peer, &msg, &cands);
            }
            3 => {
                // A datagram from one of four sources.
                let src: SocketAddr = format!("127.0.0.{}:{}", 2 + (kind >> 6), 40000 + u16::from(kind >> 4 & 3)).parse().expect("addr");
                let proto = if kind & 8 == 0 { Protocol::Udp } else { Protocol::Tcp };
                sfu.handle_receive(now, proto, src, local, rest);
            }
            4 => {
                // A STUN Binding request naming a participant's ufrag (integrity will not match).
                let Some(u) = ufrags.get(usize::from(kind >> 4) % ufrags.len().max(1)) else { continue };
                let user = format!("{u}:fuzz");
                let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
                m.extend_from_slice(&[7u8; 12]);
                let pad = (4 - user.len() % 4) % 4;
                m.extend_from_slice(&[0x00, 0x06]);
                m.extend_from_slice(&(user.len() as u16).to_be_bytes());
                m.extend_from_slice(user.as_bytes());
                m.extend(std::iter::repeat(0).take(pad));
                m.extend_from_slice(rest);
                let len = (m.len() - 20) as u16;
                m[2..4].copy_from_slice(&len.to_be_bytes());
                let src: SocketAddr = format!("127.0.0.9:{}", 40000 + u16::from(kind)).parse().expect("addr");
                sfu.handle_receive(now, Protocol::Udp, src, local, &m);
            }
            5 => sfu.remove(now, room, peer),
            _ => {
                let ms = rest.first().map_or(10, |b| u64::from(*b) * 20);
                now += Duration::from_millis(ms);
                sfu.handle_timeout(now);
            }
        }
        while let Some(ev) = sfu.poll_event() {
            if let SfuEvent::ToPeer { data, .. } = ev {
                if let Some(u) = data.split("a=ice-ufrag:").nth(1).and_then(|r| r.split('\\').next()) {
                    if !ufrags.iter().any(|x| x == u) {
                        ufrags.push(u.to_string());
                    }
                }
            }
        }
        while sfu.poll_transmit().is_some() {}
    }
    for room in ROOMS {
        for peer in PEERS {
            sfu.remove(now, room, peer);
        }
    }
    let t = sfu.totals();
    assert_eq!((t.participants, t.rooms, t.tracks_in, t.tracks_out), (0, 0, 0, 0), "{t:?}");
});
