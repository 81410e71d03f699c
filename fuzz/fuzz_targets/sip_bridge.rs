//! The SIP gateway's media bridge (`icebreaker_sfu::bridge::Gateway`) under network input, in
//! any order: browsers' WebRTC offers (Chromium's, audio + simulcast video + data channel, with
//! fuzz bytes spliced in) answered as legs (`answer`), group legs (`group_answer`) and new
//! offers on a leg (`renegotiate`, `group_answer` again); the bridge's own offers (`offer`) and
//! browser-like answers to them (`accept_answer`); groups opened and closed, legs closed, the
//! SIP side moving (`set_remote`); datagrams on the shared port (STUN naming a leg's ufrag with
//! right or wrong integrity, or an unknown one; DTLS-, SRTP- and RTCP-looking bytes; garbage)
//! from six sources, two of them real browsers (str0m peers, which connect through ICE-lite and
//! DTLS, send audio and telephone-events, and make new offers: ICE restart, hold, a data
//! channel, video); the SIP side's RTP on a leg's or a group's socket (valid headers with
//! mutated version, CSRC count, extension length, padding, payload type, SSRC and sequence
//! numbers; garbage); and time moving forward, by 5 ms up to hours.
//!
//! Properties: never panic; after every operation the transmits and events are drained (as the
//! I/O layer does), every `BridgeTransmit::Plain` is an RTP packet (version 2, at least 12
//! bytes) from the socket of one of the ids, and legs plus groups stay within `max_legs`; after
//! closing every leg and group the bridge is empty (no leg, no group, no timeout).
//!
//! `SIP_BRIDGE_TRACE=1` prints each operation, its outcome and the counters.
#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use icebreaker_sfu::bridge::{
    AudioCodec, BridgeConfig, BridgeEvent, BridgeTransmit, Gateway, PlainCodec, PlainMedia,
};
use icebreaker_sfu::Protocol;
use icebreaker_stun::{attr, method, Class, MessageType, MessageWriter};
use libfuzzer_sys::fuzz_target;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::Receive;
use str0m::{Candidate, Event, Input, Output, Rtc};

/// A browser-like offer (audio, simulcast video, data channel): the fuzzer mutates around it.
const OFFER: &str = include_str!("../corpus/sfu_offer.sdp");
/// The ICE credentials of [`OFFER`] (the remote half of a STUN USERNAME).
const OFFER_UFRAG: &str = "r6G4";
const OFFER_PWD: &str = "LS1nky74IPPRQXFWb8rsjd3C";

/// Leg and group ids: one id space.
const IDS: [u64; 6] = [1, 2, 3, 4, 5, 6];
const MAX_LEGS: usize = 5;
/// At most this many str0m browsers per input (each makes a DTLS certificate and handshake).
const MAX_BROWSERS: usize = 3;

const fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
}

/// The bridge's shared media port.
const GW: SocketAddr = v4(127, 0, 0, 1, 3479);
/// The SIP side's addresses.
const PHONES: [SocketAddr; 2] = [v4(127, 0, 0, 1, 6000), v4(127, 0, 0, 2, 6002)];
/// Sources on the shared port: the two browsers' addresses and four others.
const SOURCES: [SocketAddr; 6] = [
    v4(127, 0, 0, 1, 40000),
    v4(127, 0, 0, 1, 40001),
    v4(127, 0, 0, 3, 40000),
    v4(127, 0, 0, 4, 40002),
    SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 40003),
    v4(10, 0, 0, 1, 9),
];

fn id_of(b: u8) -> u64 {
    IDS[usize::from(b) % IDS.len()]
}

/// The SIP side's media: codecs and telephone-events from one byte, a payload type from another.
fn plain(v: u8, pt: Option<u8>, remote: SocketAddr) -> PlainMedia {
    let c = |codec, pt| PlainCodec { codec, pt };
    let mut codecs = match v & 7 {
        0 => vec![c(AudioCodec::Pcmu, 0)],
        1 => vec![c(AudioCodec::Pcma, 8)],
        2 => vec![c(AudioCodec::Opus, 111)],
        3 => vec![c(AudioCodec::Pcmu, 0), c(AudioCodec::Pcma, 8)],
        4 => vec![c(AudioCodec::Opus, 96), c(AudioCodec::Pcmu, 0)],
        5 => vec![
            c(AudioCodec::Pcma, 8),
            c(AudioCodec::Pcmu, 0),
            c(AudioCodec::Opus, 97),
        ],
        6 => vec![],
        _ => vec![c(AudioCodec::Pcmu, 18)],
    };
    if let (Some(pt), Some(first)) = (pt, codecs.first_mut()) {
        first.pt = pt & 0x7f;
    }
    let telephone_events = match (v >> 3) & 3 {
        0 => vec![(101, 8000)],
        1 => vec![(101, 8000), (100, 48000)],
        2 => vec![],
        _ => vec![(pt.unwrap_or(0) & 0x7f, 8000), (0, 48000)],
    };
    PlainMedia {
        remote,
        codecs,
        telephone_events,
    }
}

/// [`OFFER`] with video in two formats (VP8 and its RTX) instead of 23: the same sections and
/// attributes, cheaper to parse (an input answers many offers).
fn compact_offer() -> &'static str {
    static C: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        let mut out = String::new();
        let mut video = false;
        for line in OFFER.lines() {
            if line.starts_with("m=") {
                video = line.starts_with("m=video");
            }
            if video {
                if line.starts_with("m=video") {
                    out.push_str("m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n");
                    continue;
                }
                let pt = ["a=rtpmap:", "a=rtcp-fb:", "a=fmtp:"]
                    .iter()
                    .find_map(|p| line.strip_prefix(p))
                    .and_then(|r| r.split(' ').next());
                if pt.is_some_and(|pt| pt != "96" && pt != "97") {
                    continue;
                }
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
        out
    })
}

/// A browser's offer: [`OFFER`] when `bytes[0]` is odd, else [`compact_offer`], with
/// `bytes[1..]` spliced in.
fn browser_offer(bytes: &[u8]) -> String {
    let full = bytes.first().is_some_and(|b| b & 1 == 1);
    splice(if full { OFFER } else { compact_offer() }, bytes)
}

/// `sdp` with `bytes[1..]` inserted at the place `bytes[0]` names.
fn splice(sdp: &str, bytes: &[u8]) -> String {
    let mut sdp = sdp.to_string();
    if let Some((&at, ins)) = bytes.split_first() {
        let at = usize::from(at) * sdp.len() / 256;
        let at = (0..=at)
            .rev()
            .find(|i| sdp.is_char_boundary(*i))
            .unwrap_or(0);
        sdp.insert_str(at, &String::from_utf8_lossy(ins));
    }
    sdp
}

/// A browser-like answer to the bridge's offer `sdp`: its own ICE credentials, DTLS client, no
/// ICE-lite, the audio formats rotated by `rot` (the first is the one it picks).
fn answer_to(sdp: &str, rot: u8) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines() {
        let line = if line.starts_with("a=ice-ufrag:") {
            format!("a=ice-ufrag:{OFFER_UFRAG}")
        } else if line.starts_with("a=ice-pwd:") {
            format!("a=ice-pwd:{OFFER_PWD}")
        } else if line.starts_with("a=setup:") {
            "a=setup:active".to_string()
        } else if line.starts_with("a=ice-lite") || line.starts_with("a=candidate") {
            continue;
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            let mut parts: Vec<&str> = m.split(' ').collect();
            if parts.len() > 3 {
                let n = parts.len() - 2;
                parts[2..].rotate_left(usize::from(rot) % n);
            }
            format!("m=audio {}", parts.join(" "))
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out
}

/// The value of the first `a=NAME:` line.
fn sdp_attr<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

/// A browser: a full str0m peer in frame mode with Opus, PCMU, PCMA, telephone-events and, as
/// the room SDK offers, VP8 video.
struct Browser {
    rtc: Rtc,
    addr: SocketAddr,
    mid: Option<Mid>,
    connected: bool,
    sent: u64,
    /// Its leg, and the group it joined.
    leg: u64,
    group: Option<u64>,
}

fn new_browser(now: Instant, addr: SocketAddr) -> Rtc {
    let mut cfg = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_pcmu(true, false)
        .enable_pcma(true, false)
        .enable_vp8(true);
    for (pt, clock) in [
        (110u8, Frequency::FORTY_EIGHT_KHZ),
        (126, Frequency::EIGHT_KHZ),
    ] {
        let params = FormatParams {
            telephone_event_max: Some(16),
            ..Default::default()
        };
        cfg.codec_config()
            .add_config(pt.into(), None, Codec::Tele, clock, None, params);
    }
    let mut rtc = cfg.build(now);
    if let Ok(c) = Candidate::host(addr, "udp") {
        rtc.add_local_candidate(c);
    }
    rtc
}

/// What goes to the SIP side: RTP, from the socket of one of the ids, to where its SDP or its
/// RTP said.
fn check_plain(leg: u64, destination: SocketAddr, contents: &[u8]) {
    assert!(IDS.contains(&leg), "plain RTP from socket {leg}");
    assert!(PHONES.contains(&destination), "plain RTP to {destination}");
    assert!(
        contents.len() >= 12,
        "plain RTP of {} bytes",
        contents.len()
    );
    assert_eq!(
        contents[0] >> 6,
        2,
        "plain RTP version: {:02x?}",
        &contents[..12]
    );
}

struct Run {
    now: Instant,
    gw: Gateway,
    local: [(Protocol, SocketAddr); 2],
    /// Browser slots.
    browsers: [Option<Browser>; 2],
    made: usize,
    /// ICE credentials the bridge gave each id (ufrag, pwd).
    creds: Vec<(String, String)>,
    /// The bridge's pending offers.
    offers: HashMap<u64, String>,
    /// Per id: the SIP side's next sequence number and timestamp.
    phone: HashMap<u64, (u16, u32)>,
}

impl Run {
    fn learn(&mut self, sdp: &str) {
        if let (Some(u), Some(p)) = (sdp_attr(sdp, "a=ice-ufrag:"), sdp_attr(sdp, "a=ice-pwd:")) {
            if !self.creds.iter().any(|(x, _)| x == u) {
                self.creds.push((u.to_string(), p.to_string()));
            }
        }
    }

    /// Moves datagrams between the bridge and the browsers (no time passes) until quiet, and
    /// checks what goes to the SIP side.
    fn exchange(&mut self) {
        for _ in 0..32 {
            let mut moved = false;
            while let Some(t) = self.gw.poll_transmit() {
                moved = true;
                match t {
                    BridgeTransmit::WebRtc(t) => {
                        assert!(
                            SOURCES.contains(&t.destination),
                            "WebRTC datagram to {}, which never sent anything",
                            t.destination
                        );
                        let slot = self.browsers.iter_mut().find(|b| {
                            b.as_ref().is_some_and(|b| {
                                b.addr == t.destination && t.proto == Protocol::Udp
                            })
                        });
                        let Some(slot) = slot else { continue };
                        let Some(b) = slot.as_mut() else { continue };
                        let Ok(contents) = (&t.contents[..]).try_into() else {
                            continue;
                        };
                        let input = Input::Receive(
                            self.now,
                            Receive {
                                proto: Protocol::Udp,
                                source: t.source,
                                destination: b.addr,
                                contents,
                            },
                        );
                        if b.rtc.handle_input(input).is_err() {
                            *slot = None;
                        }
                    }
                    BridgeTransmit::Plain {
                        leg,
                        destination,
                        contents,
                    } => check_plain(leg, destination, &contents),
                }
            }
            self.drain_events();
            for slot in &mut self.browsers {
                let Some(b) = slot.as_mut() else { continue };
                loop {
                    match b.rtc.poll_output() {
                        Err(_) => {
                            *slot = None;
                            break;
                        }
                        Ok(Output::Timeout(_)) => break,
                        Ok(Output::Transmit(t)) => {
                            moved = true;
                            self.gw.handle_receive(
                                self.now,
                                Protocol::Udp,
                                b.addr,
                                t.destination,
                                &t.contents,
                            );
                        }
                        Ok(Output::Event(Event::Connected)) => b.connected = true,
                        Ok(Output::Event(Event::MediaAdded(m))) if m.kind == MediaKind::Audio => {
                            b.mid.get_or_insert(m.mid);
                        }
                        Ok(Output::Event(_)) => {}
                    }
                }
            }
            if !moved {
                return;
            }
        }
        // Still talking after 32 rounds: drain what is left, undelivered.
        while let Some(t) = self.gw.poll_transmit() {
            if let BridgeTransmit::Plain {
                leg,
                destination,
                contents,
            } = t
            {
                check_plain(leg, destination, &contents);
            }
        }
        self.drain_events();
    }

    fn drain_events(&mut self) {
        while let Some(ev) = self.gw.poll_event() {
            if trace() {
                eprintln!("    event {ev:?}");
            }
            match ev {
                BridgeEvent::Connected(id) | BridgeEvent::Ended { leg: id, .. } => {
                    assert!(IDS.contains(&id), "event for {id}");
                }
            }
        }
    }

    /// Time passes: `d`, then the bridge's and the browsers' timers.
    fn advance(&mut self, d: Duration) {
        self.now += d;
        for slot in &mut self.browsers {
            if let Some(b) = slot.as_mut() {
                if b.rtc.handle_input(Input::Timeout(self.now)).is_err() {
                    *slot = None;
                }
            }
        }
        self.gw.handle_timeout(self.now);
        self.exchange();
    }

    /// 5-ms steps for up to `ms`, or until browser `i` is connected.
    fn pump(&mut self, i: usize, ms: u64, until_connected: bool) {
        for _ in 0..ms / 5 {
            if until_connected && self.browsers[i].as_ref().is_none_or(|b| b.connected) {
                return;
            }
            self.advance(Duration::from_millis(5));
        }
    }

    /// A browser joins in slot `i`, three ways: it calls (a leg answering its offer), it joins
    /// a group, or the SIP side calls it (the bridge's offer, its answer); or the browser in
    /// slot `i` makes a new offer.
    fn join(&mut self, i: usize, how: u8, id: u64, arg: u8) -> String {
        if how % 4 == 3 {
            return self.reoffer(i, arg);
        }
        if self.made >= MAX_BROWSERS {
            return "no more browsers".into();
        }
        self.made += 1;
        let baddr = SOURCES[i];
        let mut rtc = new_browser(self.now, baddr);
        let mut mid = None;
        let remote = PHONES[0];
        let leg = if how % 4 == 1 { id_of(arg) } else { id };
        let group = (how % 4 == 1).then_some(id);
        let res: Result<(), String> = match how % 4 {
            0 | 1 => {
                let mut api = rtc.sdp_api();
                mid = Some(api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None));
                if how % 4 == 1 || arg & 0x40 != 0 {
                    api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
                    api.add_channel("room".into());
                }
                let Some((offer, pending)) = api.apply() else {
                    return "no offer".into();
                };
                let offer = offer.to_sdp_string();
                let answer = if how % 4 == 0 {
                    let p = plain(arg, None, remote);
                    self.gw
                        .answer(self.now, id, &offer, &p, &self.local)
                        .map(|(a, _)| a)
                } else {
                    self.gw.group_answer(self.now, id, leg, &offer, &self.local)
                };
                answer.map_err(|e| format!("{e:?}")).and_then(|a| {
                    self.learn(&a);
                    let a = SdpAnswer::from_sdp_string(&a).map_err(|e| e.to_string())?;
                    rtc.sdp_api()
                        .accept_answer(pending, a)
                        .map_err(|e| e.to_string())
                })
            }
            _ => self
                .gw
                .offer(self.now, id, plain(arg, None, remote), &self.local)
                .map_err(|e| format!("{e:?}"))
                .and_then(|offer| {
                    self.learn(&offer);
                    let o = SdpOffer::from_sdp_string(&offer).map_err(|e| e.to_string())?;
                    let a = rtc.sdp_api().accept_offer(o).map_err(|e| e.to_string())?;
                    self.gw
                        .accept_answer(self.now, id, &a.to_sdp_string())
                        .map(|_| ())
                        .map_err(|e| format!("{e:?}"))
                }),
        };
        self.browsers[i] = Some(Browser {
            rtc,
            addr: baddr,
            mid,
            connected: false,
            sent: 0,
            leg,
            group,
        });
        self.exchange();
        if res.is_ok() {
            self.pump(i, 1000, true);
        }
        format!("{res:?}")
    }

    /// Browser `i` makes a new offer on its connection (ICE restart, hold, a data channel,
    /// video); its leg answers it (`renegotiate`, or `group_answer` for a group's leg).
    fn reoffer(&mut self, i: usize, arg: u8) -> String {
        let Some(b) = self.browsers[i].as_mut() else {
            return "no browser".into();
        };
        let (leg, group) = (b.leg, b.group);
        let mut api = b.rtc.sdp_api();
        match arg & 3 {
            0 => {
                api.ice_restart(true);
            }
            1 => {
                if let Some(mid) = b.mid {
                    let dir = [
                        Direction::SendOnly,
                        Direction::Inactive,
                        Direction::RecvOnly,
                        Direction::SendRecv,
                    ];
                    api.set_direction(mid, dir[usize::from(arg >> 2 & 3)]);
                }
            }
            2 => {
                api.add_channel("late".into());
            }
            _ => {
                api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
            }
        }
        let Some((offer, pending)) = api.apply() else {
            return "no change".into();
        };
        let offer = offer.to_sdp_string();
        let remote = PHONES[usize::from(arg >> 7)];
        let answer = match group {
            Some(g) => self.gw.group_answer(self.now, g, leg, &offer, &self.local),
            None => self.gw.renegotiate(self.now, leg, &offer, remote),
        };
        let res = answer.map_err(|e| format!("{e:?}")).and_then(|a| {
            self.learn(&a);
            let a = SdpAnswer::from_sdp_string(&a).map_err(|e| e.to_string())?;
            let Some(b) = self.browsers[i].as_mut() else {
                return Err("gone".into());
            };
            b.rtc
                .sdp_api()
                .accept_answer(pending, a)
                .map_err(|e| e.to_string())
        });
        self.exchange();
        self.pump(i, 200, false);
        format!("re-offer: {res:?}")
    }

    /// Browser `i` sends 20 ms of audio or a telephone-event: payload type `sel` of those the
    /// bridge answered, payload `data`.
    fn talk(&mut self, i: usize, sel: u8, data: &[u8]) {
        let now = self.now;
        let Some(b) = self.browsers[i].as_mut() else {
            return;
        };
        let Some(mid) = b.mid else { return };
        let Some(pts) = b.rtc.media(mid).map(|m| m.remote_pts().to_vec()) else {
            return;
        };
        let Some(&pt) = pts.get(usize::from(sel) % pts.len().max(1)) else {
            return;
        };
        let payload = if data.is_empty() {
            vec![sel; 160]
        } else {
            data.to_vec()
        };
        let t = MediaTime::new(b.sent * 160, Frequency::EIGHT_KHZ);
        b.sent += 1 + u64::from(sel >> 7);
        if let Some(w) = b.rtc.writer(mid) {
            let _ = w.write(pt, now, t, payload);
        }
        self.exchange();
        self.pump(i, 20, false);
    }

    /// A STUN Binding request for id `sel`'s ufrag (or an unknown one): right or wrong
    /// integrity, USE-CANDIDATE or not, `extra` as a SOFTWARE attribute.
    fn stun(&mut self, src: SocketAddr, proto: Protocol, sel: u8, extra: &[u8]) {
        let (ufrag, pwd) = match self
            .creds
            .get(usize::from(sel >> 4) % self.creds.len().max(1))
        {
            Some((u, p)) if sel & 1 == 0 => (u.clone(), p.clone()),
            _ => ("fzUF".to_string(), "fuzzfuzzfuzzfuzzfuzzfuzz".to_string()),
        };
        let user = if sel & 8 == 0 {
            format!("{ufrag}:{OFFER_UFRAG}")
        } else {
            format!("{ufrag}:x")
        };
        let mut buf = vec![0u8; 1200];
        let tid: [u8; 12] = [sel, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
        let len = {
            let Ok(mut w) = MessageWriter::new(
                &mut buf,
                MessageType::new(method::BINDING, Class::Request),
                &tid,
            ) else {
                return;
            };
            let _ = w.attr(attr::USERNAME, user.as_bytes());
            let _ = w.u32_attr(attr::PRIORITY, 0x6e00_1eff);
            let _ = w.attr(attr::ICE_CONTROLLING, &[sel; 8]);
            if sel & 2 != 0 {
                let _ = w.attr(attr::USE_CANDIDATE, &[]);
            }
            if !extra.is_empty() {
                let _ = w.attr(attr::SOFTWARE, &extra[..extra.len().min(700)]);
            }
            let key = if sel & 4 == 0 {
                pwd.as_bytes()
            } else {
                b"wrong".as_slice()
            };
            let _ = w.message_integrity(key);
            let _ = w.fingerprint();
            w.finish()
        };
        self.gw
            .handle_receive(self.now, proto, src, self.local[0].1, &buf[..len]);
    }

    /// An RTP packet from the SIP side on `id`'s socket, its header fields mutated by `f`.
    fn phone_rtp(&mut self, id: u64, f: &[u8]) -> Vec<u8> {
        let b = |i: usize| f.get(i).copied().unwrap_or(0);
        // Version 2 when b(0) >> 6 is 0; padding, extension, CSRC count from b(0) too.
        let first = b(0) ^ 0x80;
        let pt = match b(1) & 0x0f {
            0 => 0,
            1 => 8,
            2 => 101,
            3 => 96,
            4 => 111,
            5 => 100,
            6 => 18,
            7 => 72,
            8 => 97,
            9 => 13,
            _ => b(1) >> 4 | (b(2) & 0x70),
        };
        let marker = b(1) & 0x80;
        let (seq, ts) = self.phone.entry(id).or_insert((1000, 16000));
        let delta = i16::from(b(2) as i8);
        *seq = seq.wrapping_add_signed(if b(2) & 0x80 != 0 {
            delta * 64
        } else {
            delta.max(1)
        });
        *ts = ts.wrapping_add(160 * u32::from(b(3) & 7));
        let ssrc: u32 = [0x5150, 0x5151, 0xdead_beef, 0][usize::from(b(3) >> 6)];
        let mut p = vec![first, marker | pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        let rest = f.get(5..).unwrap_or(&[]);
        // CSRCs: the declared count, or fewer when b(3) & 8.
        let cc = usize::from(first & 0x0f);
        let cc = if b(3) & 8 != 0 { cc / 2 } else { cc };
        p.extend(std::iter::repeat(0x11).take(4 * cc));
        if first & 0x10 != 0 {
            // Extension: b(4) & 0x1f words declared; all present when b(4) & 0x20, else at
            // most b(4) >> 6.
            let declared = usize::from(b(4) & 0x1f);
            p.extend_from_slice(&[0xbe, 0xde, 0, declared as u8]);
            let present = if b(4) & 0x20 != 0 {
                declared
            } else {
                declared.min(usize::from(b(4) >> 6))
            };
            p.extend(std::iter::repeat(0x22).take(4 * present));
        }
        if b(3) & 0x10 != 0 {
            p.extend(std::iter::repeat(rest.first().copied().unwrap_or(0x7f)).take(160));
        } else {
            p.extend_from_slice(rest);
        }
        if first & 0x20 != 0 {
            // Padding: a count that fits, or one that does not (b(3) & 0x20).
            let n = if b(3) & 0x20 != 0 { 0xfe } else { 4 };
            p.extend(std::iter::repeat(0).take(3));
            p.push(n);
        }
        p
    }
}

/// `SIP_BRIDGE_TRACE=1` prints each operation and what came of it (for reading a crash).
fn trace() -> bool {
    static T: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *T.get_or_init(|| std::env::var_os("SIP_BRIDGE_TRACE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut run = Run {
        now: t0,
        gw: Gateway::new(BridgeConfig {
            max_legs: MAX_LEGS,
            connect_timeout: Duration::from_secs(30),
        }),
        local: [(Protocol::Udp, GW), (Protocol::Tcp, GW)],
        browsers: [None, None],
        made: 0,
        creds: Vec::new(),
        offers: HashMap::new(),
        phone: HashMap::new(),
    };
    for op in data.split(|b| *b == 0xff).take(64) {
        let Some((&kind, rest)) = op.split_first() else {
            continue;
        };
        let id = id_of(kind >> 4);
        let b0 = rest.first().copied().unwrap_or(0);
        let tail = rest.get(1..).unwrap_or(&[]);
        let now = run.now;
        let mut outcome = String::new();
        match kind & 0x0f {
            0 => {
                // A browser calls: its offer, the SIP side's answer (codec b0).
                let offer = browser_offer(tail);
                let p = plain(
                    b0,
                    (b0 & 0x80 != 0).then(|| b0 >> 1),
                    PHONES[usize::from(b0 >> 6 & 1)],
                );
                match run.gw.answer(now, id, &offer, &p, &run.local) {
                    Ok((sdp, chosen)) => {
                        run.learn(&sdp);
                        outcome = format!("{chosen:?}");
                    }
                    Err(e) => outcome = format!("{e:?}"),
                }
            }
            1 => {
                // The SIP side calls: the bridge offers to a browser.
                let p = plain(
                    b0,
                    (b0 & 0x80 != 0).then(|| b0 >> 1),
                    PHONES[usize::from(b0 >> 6 & 1)],
                );
                match run.gw.offer(now, id, p, &run.local) {
                    Ok(sdp) => {
                        run.learn(&sdp);
                        run.offers.insert(id, sdp);
                    }
                    Err(e) => outcome = format!("{e:?}"),
                }
            }
            2 => {
                // A browser's answer to the bridge's offer (or to none), fuzz bytes spliced in.
                let base = run.offers.get(&id).map_or(compact_offer(), String::as_str);
                let answer = splice(&answer_to(base, b0), tail);
                outcome = format!("{:?}", run.gw.accept_answer(now, id, &answer));
            }
            3 => {
                let p = plain(
                    b0,
                    (b0 & 0x80 != 0).then(|| b0 >> 1),
                    PHONES[usize::from(b0 >> 6 & 1)],
                );
                outcome = format!("{:?}", run.gw.open_group(now, id, &p));
            }
            4 => {
                // A browser of the room joins group `id` as leg b0.
                let offer = browser_offer(tail);
                match run.gw.group_answer(now, id, id_of(b0), &offer, &run.local) {
                    Ok(sdp) => run.learn(&sdp),
                    Err(e) => outcome = format!("{e:?}"),
                }
            }
            5 => {
                let offer = browser_offer(tail);
                match run
                    .gw
                    .renegotiate(now, id, &offer, PHONES[usize::from(b0 & 1)])
                {
                    Ok(sdp) => run.learn(&sdp),
                    Err(e) => outcome = format!("{e:?}"),
                }
            }
            6 => run.gw.close(id),
            7 => run.gw.close_group(id),
            8 => run.gw.set_remote(id, PHONES[usize::from(b0 & 1)]),
            9 => {
                // A datagram on the shared port: raw, DTLS-, SRTP- or RTCP-looking.
                let src = SOURCES[usize::from(kind >> 4) % SOURCES.len()];
                let proto = if b0 & 0x80 == 0 {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                };
                let mut d = match b0 & 3 {
                    0 => vec![],
                    1 => {
                        // DTLS 1.2 handshake record: epoch 0, sequence number b0 >> 2.
                        let mut h = vec![0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, b0 >> 2];
                        h.extend_from_slice(&(tail.len() as u16).to_be_bytes());
                        h
                    }
                    2 => vec![0x80, b0 >> 2, 0, 1, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78],
                    _ => vec![0x80 | (b0 >> 2 & 0x1f), 200 + (b0 >> 4 & 7), 0, 6],
                };
                d.extend_from_slice(tail);
                outcome = format!("taken: {}", run.gw.handle_receive(now, proto, src, GW, &d));
            }
            10 => {
                let src = SOURCES[usize::from(kind >> 4) % SOURCES.len()];
                let proto = if b0 & 0x10 == 0 {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                };
                run.stun(src, proto, b0, tail);
            }
            11 => {
                let p = run.phone_rtp(id, rest);
                run.gw
                    .handle_plain(now, id, PHONES[usize::from(kind >> 7)], &p);
            }
            12 => run
                .gw
                .handle_plain(now, id, PHONES[usize::from(b0 & 1)], rest),
            13 => {
                // Time: 5-ms steps, a few seconds, or a long stall (up to hours).
                let d = match b0 >> 6 {
                    0 | 1 => Duration::from_millis(5 * u64::from(b0 & 0x7f)),
                    2 => Duration::from_millis(100 * u64::from(b0 & 0x3f)),
                    _ => Duration::from_secs(1 << (b0 & 0x0f)),
                };
                let until = run.gw.poll_timeout().filter(|_| d.is_zero());
                run.advance(until.map_or(d, |t| t.saturating_duration_since(now)));
            }
            14 => {
                outcome = run.join(
                    usize::from(b0 & 1),
                    b0 >> 1,
                    id,
                    tail.first().copied().unwrap_or(0),
                )
            }
            _ => run.talk(usize::from(kind >> 7), b0, tail),
        }
        run.exchange();
        if trace() {
            let stats: Vec<_> = IDS
                .iter()
                .filter_map(|i| run.gw.stats(*i).map(|s| (*i, s)))
                .collect();
            let groups: Vec<_> = IDS
                .iter()
                .filter_map(|i| run.gw.group_stats(*i).map(|s| (*i, s)))
                .collect();
            let conn: Vec<_> = run
                .browsers
                .iter()
                .map(|b| b.as_ref().map(|b| b.connected))
                .collect();
            eprintln!(
                "{:>6} ms  op {:2} id {id} {:02x?} {outcome}\n    browsers {conn:?} legs {stats:?}\n    groups {groups:?}",
                run.now.duration_since(t0).as_millis(),
                kind & 0x0f,
                &rest[..rest.len().min(16)],
            );
        }
        assert!(run.gw.len() + run.gw.groups() <= MAX_LEGS, "{:?}", run.gw);
    }
    for id in IDS {
        run.gw.close(id);
        run.gw.close_group(id);
    }
    assert!(run.gw.is_empty() && run.gw.groups() == 0, "{:?}", run.gw);
    assert_eq!(run.gw.poll_timeout(), None);
});
