//! SIP and SDP parsers on arbitrary bytes: a datagram message, the stream framer, a URI, an
//! SDP body and digest headers; whatever parses is serialized and parsed again (it must parse,
//! to the same thing), and the typed getters and proxy edits run on it. Nothing may panic.
#![no_main]

use icebreaker_sip::digest::{Challenge, Credentials};
use icebreaker_sip::sdp::{plain_offer, read_plain_answer, CodecName, PlainOfferOptions, Sdp};
use icebreaker_sip::{
    error_response, frame, keep_alive, Framed, Limits, Message, NameAddr, SipUri, Uri, Via,
};
use libfuzzer_sys::fuzz_target;

fn exercise(m: &Message) {
    // Serializing may grow a message a little (a space after each colon, an appended
    // Content-Length), so it is parsed again without limits.
    let unlimited = Limits { max_message: usize::MAX, max_headers: usize::MAX, max_line: usize::MAX };
    let bytes = m.to_bytes();
    let again = Message::parse_with(&bytes, &unlimited).expect("a serialized message parses");
    assert_eq!(again.start, m.start);
    assert_eq!(again.body, m.body);
    assert_eq!(again.to_bytes(), bytes, "serialization is stable");

    let _ = (m.call_id(), m.cseq(), m.from(), m.to(), m.vias(), m.top_via());
    let _ = (m.contacts(), m.routes(), m.record_routes(), m.paths());
    let _ = (m.max_forwards(), m.expires(), m.supported(), m.require());
    let _ = (m.www_authenticate(), m.proxy_authenticate());
    let _ = (m.authorization(), m.proxy_authorization());
    if let Ok(sdp) = Sdp::parse(&m.body) {
        sdp_checks(&sdp);
    }

    let mut m = m.clone();
    let _ = m.decrement_max_forwards();
    m.push_via(&Via::new("UDP", "192.0.2.1", Some(5060), "z9hG4bKfuzz"));
    if let Ok(mut v) = m.top_via() {
        v.set_received("198.51.100.7".parse().unwrap(), 4000);
        m.set_top_via(&v);
    }
    if let Ok(r) = NameAddr::parse("<sip:192.0.2.1;lr>", "Route") {
        m.add_record_route(&r);
        m.add_path(&r);
        m.push_route(&r);
    }
    let _ = m.pop_route();
    let _ = m.pop_via();
    let resp = m.response(200, None, Some("fz"));
    let _ = resp.to_bytes();
    if let Ok(edited) = Message::parse(&m.to_bytes()) {
        let _ = edited.to_bytes();
    }
}

fn sdp_checks(sdp: &Sdp) {
    let again = Sdp::parse(&sdp.to_bytes()).expect("a serialized SDP parses");
    assert_eq!(&again, sdp);
    for media in &sdp.media {
        let _ = (media.kind(), media.port(), media.proto(), media.formats().count());
        let _ = (media.rtpmaps(), media.connection(), media.fingerprint(), media.direction());
    }
    let _ = sdp.groups();
    let _ = read_plain_answer(sdp);
    let opts = PlainOfferOptions {
        addr: "198.51.100.1".parse().unwrap(),
        port: 40000,
        codecs: &[CodecName::Opus, CodecName::Pcmu, CodecName::Pcma],
        session_id: 1,
        session_version: 1,
    };
    if let Ok(offer) = plain_offer(sdp, &opts) {
        let plain = Sdp::parse(&offer.sdp.to_bytes()).expect("our offer parses");
        read_plain_answer(&plain).expect("our offer reads back");
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = keep_alive(data);
    match Message::parse(data) {
        Ok(m) => exercise(&m),
        Err(e) => {
            if let Some(r) = error_response(data, &e) {
                let _ = r.to_bytes();
            }
        }
    }

    // The stream framer over the whole input, message after message.
    let limits = Limits { max_message: 4096, ..Limits::default() };
    let mut rest = data;
    while let Ok(f) = frame(rest, &limits) {
        let consumed = match f {
            Framed::Incomplete => break,
            Framed::KeepAlive { consumed, .. } => consumed,
            Framed::Message { message, consumed } => {
                exercise(&message);
                consumed
            }
        };
        assert!(consumed > 0 && consumed <= rest.len());
        rest = &rest[consumed..];
    }

    let Ok(text) = std::str::from_utf8(data) else {
        if let Ok(sdp) = Sdp::parse(data) {
            sdp_checks(&sdp);
        }
        return;
    };
    if let Ok(u) = SipUri::parse(text) {
        assert_eq!(SipUri::parse(&u.to_string()).as_ref(), Ok(&u));
    }
    let _ = Uri::parse(text);
    let _ = Via::parse(text);
    if let Ok(n) = NameAddr::parse(text, "To") {
        let _ = NameAddr::parse(&n.to_string(), "To");
    }
    if let Ok(c) = Challenge::parse(text) {
        assert_eq!(Challenge::parse(&c.to_string()).as_ref(), Ok(&c));
    }
    if let Ok(c) = Credentials::parse(text) {
        let _ = Credentials::parse(&c.to_string());
        let _ = icebreaker_sip::digest::verify(&c, "INVITE", "pw");
    }
    if let Ok(sdp) = Sdp::parse(data) {
        sdp_checks(&sdp);
    }
});
