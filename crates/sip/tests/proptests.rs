//! Property tests: generated messages parse to what was generated; parse∘serialize is stable
//! (serializing a parsed message and parsing it again gives the same message and the same
//! bytes); arbitrary and mutated input never panics.
#![allow(clippy::unwrap_used)]

use icebreaker_sip::sdp::Sdp;
use icebreaker_sip::{frame, Limits, Message, SipUri};
use proptest::prelude::*;

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9.!%*_+`'~-]{1,12}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,8}(\\.[a-z]{2,5}){0,2}",
        (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
    ]
}

fn sip_uri() -> impl Strategy<Value = String> {
    (
        prop::bool::ANY,
        prop::option::of("[a-zA-Z0-9_.!~*'()&=+$,;?/-]{1,10}|%[0-9A-F]{2}"),
        host(),
        prop::option::of(any::<u16>()),
        prop::collection::vec(
            (
                "[a-z][a-z0-9-]{0,6}",
                prop::option::of("[a-zA-Z0-9:/+$-]{1,8}"),
            ),
            0..4,
        ),
    )
        .prop_map(|(sips, user, host, port, params)| {
            let mut s = if sips {
                "sips:".to_string()
            } else {
                "sip:".to_string()
            };
            if let Some(u) = user {
                s.push_str(&u);
                s.push('@');
            }
            s.push_str(&host);
            if let Some(p) = port {
                s.push_str(&format!(":{p}"));
            }
            for (n, v) in params {
                s.push(';');
                s.push_str(&n);
                if let Some(v) = v {
                    s.push('=');
                    s.push_str(&v);
                }
            }
            s
        })
}

/// A header value: visible ASCII and inner spaces, never starting or ending with whitespace.
fn value() -> impl Strategy<Value = String> {
    "[!-~]([ -~]{0,30}[!-~])?"
}

#[derive(Debug, Clone)]
struct Spec {
    method: String,
    ruri: String,
    branch: String,
    transport: String,
    from_tag: String,
    call_id: String,
    seq: u32,
    max_forwards: Option<u8>,
    extra: Vec<(String, String, bool)>,
    contact: Option<String>,
    body: Vec<u8>,
    compact: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop_oneof![
            Just("INVITE".to_string()),
            Just("REGISTER".to_string()),
            token()
        ],
        sip_uri(),
        "z9hG4bK[A-Za-z0-9.-]{1,16}",
        prop_oneof![
            Just("UDP"),
            Just("TCP"),
            Just("WSS"),
            Just("WS"),
            Just("TLS")
        ],
        token(),
        "[A-Za-z0-9.!%*_+`'~()<>:\\\\\"/\\[\\]?{}-]{1,20}(@[a-z0-9.]{1,10})?",
        0u32..(1 << 31),
        prop::option::of(any::<u8>()),
        prop::collection::vec(("X-[A-Za-z0-9-]{1,10}", value(), prop::bool::ANY), 0..6),
        prop::option::of(sip_uri()),
        prop::collection::vec(any::<u8>(), 0..200),
        prop::bool::ANY,
    )
        .prop_map(
            |(
                method,
                ruri,
                branch,
                transport,
                from_tag,
                call_id,
                seq,
                max_forwards,
                extra,
                contact,
                body,
                compact,
            )| Spec {
                method,
                ruri,
                branch,
                transport: transport.to_string(),
                from_tag,
                call_id,
                seq,
                max_forwards,
                extra,
                contact,
                body,
                compact,
            },
        )
}

fn write_spec(s: &Spec) -> Vec<u8> {
    let n = |long: &'static str, short: &'static str| if s.compact { short } else { long };
    let mut t = format!("{} {} SIP/2.0\r\n", s.method, s.ruri);
    t += &format!(
        "{}: SIP/2.0/{} host.invalid;branch={};rport\r\n",
        n("Via", "v"),
        s.transport,
        s.branch
    );
    t += &format!("{}: <sip:bob@example.com>\r\n", n("To", "t"));
    t += &format!(
        "{}: \"Alice\" <sip:alice@example.com>;tag={}\r\n",
        n("From", "f"),
        s.from_tag
    );
    t += &format!("{}: {}\r\n", n("Call-ID", "i"), s.call_id);
    t += &format!("CSeq: {} {}\r\n", s.seq, s.method);
    if let Some(mf) = s.max_forwards {
        t += &format!("Max-Forwards: {mf}\r\n");
    }
    if let Some(c) = &s.contact {
        t += &format!("{}: <{c}>;expires=60\r\n", n("Contact", "m"));
    }
    for (name, v, fold) in &s.extra {
        match (fold, v.split_once(' ')) {
            (true, Some((a, b))) => t += &format!("{name}: {a}\r\n\t {b}\r\n"),
            _ => t += &format!("{name}: {v}\r\n"),
        }
    }
    t += &format!("{}: {}\r\n\r\n", n("Content-Length", "l"), s.body.len());
    let mut b = t.into_bytes();
    b.extend_from_slice(&s.body);
    b
}

/// Serializing `m` gives bytes that parse to the same message (but for a Content-Length
/// line appended when `m` had none), and serializing that gives the same bytes again.
fn check_stable(m: &Message) -> Result<(), TestCaseError> {
    let bytes = m.to_bytes();
    let again = Message::parse(&bytes);
    prop_assert!(
        again.is_ok(),
        "{:?}: {}",
        again,
        String::from_utf8_lossy(&bytes)
    );
    let again = again.unwrap();
    prop_assert_eq!(&again.start, &m.start);
    prop_assert_eq!(&again.body, &m.body);
    let no_cl = |m: &Message| {
        m.headers
            .iter()
            .filter(|h| {
                !icebreaker_sip::canonical_name(&h.name).eq_ignore_ascii_case("Content-Length")
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    prop_assert_eq!(no_cl(&again), no_cl(m));
    prop_assert_eq!(again.to_bytes(), bytes);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn generated_messages_parse_back(s in spec()) {
        let bytes = write_spec(&s);
        let m = Message::parse(&bytes).unwrap();
        prop_assert_eq!(m.method().unwrap().as_str(), s.method.as_str());
        prop_assert_eq!(m.call_id().unwrap(), s.call_id.as_str());
        prop_assert_eq!(m.cseq().unwrap().seq, s.seq);
        let via = m.top_via().unwrap();
        prop_assert_eq!(via.branch(), Some(s.branch.as_str()));
        let from = m.from().unwrap();
        prop_assert_eq!(from.tag(), Some(s.from_tag.as_str()));
        prop_assert_eq!(m.max_forwards().unwrap(), s.max_forwards);
        prop_assert_eq!(&m.body, &s.body);
        for (name, v, folded) in &s.extra {
            // Folding stands for one space: the whitespace around the fold collapses.
            let norm = |x: &str| if *folded { x.split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ") } else { x.to_string() };
            prop_assert!(m.headers.get_all(name).any(|x| norm(x) == norm(v)));
        }
        check_stable(&m)?;
        // The same bytes framed as a stream give the same message.
        match frame(&bytes, &Limits::default()).unwrap() {
            icebreaker_sip::Framed::Message { message, consumed } => {
                prop_assert_eq!(consumed, bytes.len());
                prop_assert_eq!(*message, m);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn mutated_messages_never_panic(s in spec(), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = write_spec(&s);
        for (i, b) in edits {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        if let Ok(m) = Message::parse(&bytes) {
            check_stable(&m)?;
        }
        let _ = frame(&bytes, &Limits::default());
        if let Err(e) = Message::parse(&bytes) {
            let _ = icebreaker_sip::error_response(&bytes, &e).map(|r| r.to_bytes());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(m) = Message::parse(&bytes) {
            check_stable(&m)?;
        }
        let _ = frame(&bytes, &Limits::default());
        if let Ok(s) = Sdp::parse(&bytes) {
            prop_assert_eq!(Sdp::parse(&s.to_bytes()), Ok(s));
        }
    }

    #[test]
    fn uris_round_trip(u in sip_uri()) {
        let parsed = SipUri::parse(&u).unwrap();
        let shown = parsed.to_string();
        prop_assert_eq!(SipUri::parse(&shown).unwrap(), parsed);
    }

    #[test]
    fn sdp_lines_round_trip(lines in prop::collection::vec(("[a-z]", "[ -~]{0,30}"), 0..30)) {
        let mut text = String::from("v=0\r\n");
        for (k, v) in &lines {
            if k == "m" {
                text += &format!("m=audio 1234 RTP/AVP {}\r\n", v.len());
            } else {
                text += &format!("{k}={v}\r\n");
            }
        }
        let s = Sdp::parse(text.as_bytes()).unwrap();
        prop_assert_eq!(s.to_bytes(), text.into_bytes());
    }
}
