//! Real-looking traffic of the gateway: JsSIP over WebSocket (RFC 7118, RFC 5626 outbound),
//! sipp-style answers from the far end, and the edge-proxy edits on them.
#![allow(clippy::unwrap_used)]

mod common;

use common::{crlf, CHROME_OFFER};
use icebreaker_sip::digest::{answer, Challenge};
use icebreaker_sip::sdp::{read_plain_answer, CodecName, Direction, Sdp};
use icebreaker_sip::{
    frame, keep_alive, Contacts, Framed, KeepAlive, Limits, MaxForwards, Message, Method, NameAddr,
    Uri, Via,
};

const REGISTER: &str = r#"REGISTER sip:icebreaker.example SIP/2.0
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK1783958;rport
Max-Forwards: 69
To: <sip:alice@icebreaker.example>
From: "Alice" <sip:alice@icebreaker.example>;tag=8g9bnuc3pn
Call-ID: 6vqttqjdcqeoiqq7ltfi
CSeq: 1 REGISTER
Contact: <sip:k8ab4c2d@df7jal23ls0d.invalid;transport=ws;ob>;+sip.ice;reg-id=1;+sip.instance="<urn:uuid:2a4b6c8d-1e3f-4a5b-9c7d-0e1f2a3b4c5d>";expires=600
Expires: 600
Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY
Supported: path,gruu,outbound
User-Agent: JsSIP 3.10.1
Content-Length: 0

"#;

#[test]
fn jssip_register_over_websocket() {
    let m = Message::parse(&crlf(REGISTER)).unwrap();
    assert_eq!(m.method(), Some(&Method::Register));
    let via = m.top_via().unwrap();
    assert_eq!(via.transport, "WSS");
    assert_eq!(via.host, "df7jal23ls0d.invalid");
    assert_eq!(via.rport(), Some(None));
    let Contacts::List(c) = m.contacts().unwrap() else {
        panic!()
    };
    let uri = c[0].0.sip_uri().unwrap();
    assert_eq!(uri.transport().as_deref(), Some("ws"));
    assert!(uri.params.has("ob"));
    assert_eq!(
        c[0].instance().as_deref(),
        Some("<urn:uuid:2a4b6c8d-1e3f-4a5b-9c7d-0e1f2a3b4c5d>")
    );
    assert_eq!(c[0].reg_id(), Some(1));
    assert_eq!(c[0].expires(), Ok(Some(600)));
    assert!(c[0].0.params.has("+sip.ice"));
    assert_eq!(m.expires(), Ok(Some(600)));
    assert_eq!(m.supported(), ["path", "gruu", "outbound"]);
    assert_eq!(m.from().unwrap().display_name.as_deref(), Some("Alice"));
    assert_eq!(m.headers.values("Allow").len(), 10);
}

/// The edge proxy's path for a REGISTER: received/rport on the client's Via, its own Via and
/// Path on top, Max-Forwards down; then the registrar's 401 comes back, the Via is popped, and
/// the proxy (answering with configured credentials) computes an Authorization.
#[test]
fn edge_proxy_register_flow() {
    let mut m = Message::parse(&crlf(REGISTER)).unwrap();
    let mut client_via = m.top_via().unwrap();
    client_via.set_received("203.0.113.9".parse().unwrap(), 53211);
    m.set_top_via(&client_via);
    assert_eq!(m.decrement_max_forwards(), Ok(MaxForwards::Forward(68)));
    m.push_via(&Via::new("UDP", "198.51.100.1", Some(5060), "z9hG4bKib.1"));
    let mut path = NameAddr::new(Uri::parse("sip:flow1@198.51.100.1:5060").unwrap());
    if let Uri::Sip(u) = &mut path.uri {
        u.params.push("lr", None);
        u.params.push("ob", None);
    }
    m.add_path(&path);
    let wire = m.to_bytes();
    let fwd = Message::parse(&wire).unwrap();
    let vias = fwd.vias().unwrap();
    assert_eq!(vias.len(), 2);
    assert_eq!(vias[0].branch(), Some("z9hG4bKib.1"));
    assert_eq!(vias[1].received(), Some("203.0.113.9"));
    assert_eq!(vias[1].rport(), Some(Some(53211)));
    assert_eq!(
        fwd.paths().unwrap()[0].to_string(),
        "<sip:flow1@198.51.100.1:5060;lr;ob>"
    );
    assert!(String::from_utf8(wire)
        .unwrap()
        .contains("\r\nPath: <sip:flow1@198.51.100.1:5060;lr;ob>\r\n"));

    // sipp's 401 (a UAS scenario copies [last_Via:] etc.).
    let challenge = format!(
        "SIP/2.0 401 Unauthorized\n{}\nWWW-Authenticate: Digest realm=\"sipp.example\", nonce=\"4f3e2d1c\", algorithm=MD5, qop=\"auth\"\nContent-Length: 0\n\n",
        fwd.headers
            .iter()
            .filter(|h| ["Via", "From", "To", "Call-ID", "CSeq"].contains(&h.name.as_str()))
            .map(|h| format!("{}: {}", h.name, h.value))
            .collect::<Vec<_>>()
            .join("\n")
    )
    .replace("To: <sip:alice@icebreaker.example>", "To: <sip:alice@icebreaker.example>;tag=3412SIPpTag011");
    let mut r = Message::parse(&crlf(&challenge)).unwrap();
    assert_eq!(r.status(), Some(401));
    assert_eq!(r.pop_via().unwrap().unwrap().branch(), Some("z9hG4bKib.1"));
    assert_eq!(r.vias().unwrap().len(), 1);
    let ch: Vec<Challenge> = r.www_authenticate().unwrap();
    let cr = answer(
        &ch[0],
        "alice",
        "secret",
        "REGISTER",
        "sip:icebreaker.example",
        "abc",
        1,
    )
    .unwrap();
    m.headers.push("Authorization", &cr.to_string());
    let again = Message::parse(&m.to_bytes()).unwrap();
    assert_eq!(again.authorization().unwrap()[0], cr);
}

const INVITE_HEAD: &str = r#"INVITE sip:1000@pbx.example.com SIP/2.0
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK9393718
Max-Forwards: 69
To: <sip:1000@pbx.example.com>
From: "Alice" <sip:alice@icebreaker.example>;tag=q0fvd3ps1e
Call-ID: tmfsm9e0q2v2kj6pmm1b
CSeq: 6951 INVITE
Contact: <sip:k8ab4c2d@df7jal23ls0d.invalid;transport=ws;ob>
Content-Type: application/sdp
Session-Expires: 90
Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY
Supported: timer,ice,replaces,outbound
User-Agent: JsSIP 3.10.1
"#;

#[test]
fn jssip_invite_and_sipp_answer() {
    let body = String::from_utf8(crlf(CHROME_OFFER)).unwrap();
    let text = format!(
        "{}Content-Length: {}\r\n\r\n{body}",
        String::from_utf8(crlf(INVITE_HEAD)).unwrap(),
        body.len()
    );
    let mut inv = Message::parse(text.as_bytes()).unwrap();
    assert_eq!(inv.method(), Some(&Method::Invite));
    assert_eq!(inv.headers.get("x"), Some("90"), "compact Session-Expires");
    let offer = Sdp::parse(&inv.body).unwrap();
    assert_eq!(offer.media[0].ice_ufrag(), Some("Oyef"));

    // The proxy: 100 Trying right away, Record-Route itself, forward.
    let trying = inv.response(100, None, None);
    let trying = Message::parse(&trying.to_bytes()).unwrap();
    assert_eq!(trying.to().unwrap().tag(), None);
    assert_eq!(trying.cseq().unwrap().method, "INVITE");
    inv.add_record_route(
        &NameAddr::parse("<sip:198.51.100.1;transport=udp;lr>", "Record-Route").unwrap(),
    );
    inv.add_record_route(
        &NameAddr::parse(
            "<sip:gw.icebreaker.example;transport=ws;lr>",
            "Record-Route",
        )
        .unwrap(),
    );
    assert_eq!(inv.record_routes().unwrap().len(), 2);

    // A UAS answer built from the request copies the Record-Routes (2xx to INVITE).
    let ok = inv.response(200, None, Some("as5f3e"));
    assert_eq!(ok.record_routes().unwrap().len(), 2);
    assert_eq!(ok.to().unwrap().tag(), Some("as5f3e"));

    // sipp's uas 200 OK with a plain answer.
    let answer = crlf(
        "v=0
o=user1 53655765 2353687637 IN IP4 192.0.2.50
s=-
c=IN IP4 192.0.2.50
t=0 0
m=audio 6000 RTP/AVP 8 126
a=rtpmap:8 PCMA/8000
a=rtpmap:126 telephone-event/8000
a=fmtp:126 0-16
a=ptime:20
",
    );
    let head = crlf(&format!(
        "SIP/2.0 200 OK
Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKib.2;received=198.51.100.1
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK9393718;received=203.0.113.9;rport=53211
Record-Route: <sip:198.51.100.1;transport=udp;lr>
From: \"Alice\" <sip:alice@icebreaker.example>;tag=q0fvd3ps1e
To: <sip:1000@pbx.example.com>;tag=19SIPpTag01
Call-ID: tmfsm9e0q2v2kj6pmm1b
CSeq: 6951 INVITE
Contact: <sip:192.0.2.50:5060;transport=UDP>
Content-Type: application/sdp
Content-Length: {}

",
        answer.len()
    ));
    let mut wire = head;
    wire.extend_from_slice(&answer);
    let mut resp = Message::parse(&wire).unwrap();
    assert_eq!(
        resp.pop_via().unwrap().unwrap().branch(),
        Some("z9hG4bKib.2")
    );
    assert_eq!(resp.to().unwrap().tag(), Some("19SIPpTag01"));
    let plain = read_plain_answer(&Sdp::parse(&resp.body).unwrap()).unwrap();
    assert_eq!(plain.codec.name, CodecName::Pcma);
    assert_eq!(plain.addr, "192.0.2.50:6000".parse().unwrap());
    assert_eq!(plain.telephone_event.as_ref().map(|t| t.pt), Some(126));
    assert_eq!(plain.direction, Direction::SendRecv);
    assert_eq!(plain.ptime, Some(20));
}

#[test]
fn keep_alives_and_tcp_framing() {
    assert_eq!(keep_alive(b"\r\n\r\n"), Some(KeepAlive::Ping));
    assert_eq!(keep_alive(b"\r\n"), Some(KeepAlive::Pong));
    assert_eq!(keep_alive(b"\r\n\r\n\r\n"), None);
    let reg = crlf(REGISTER);
    let mut stream = b"\r\n\r\n".to_vec();
    stream.extend_from_slice(&reg);
    stream.extend_from_slice(b"\r\n");
    stream.extend_from_slice(&reg);
    let limits = Limits::default();
    let mut seen = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    // Feed the stream in 7-byte segments, as TCP might.
    for chunk in stream.chunks(7) {
        buf.extend_from_slice(chunk);
        loop {
            match frame(&buf, &limits).unwrap() {
                Framed::Incomplete => break,
                Framed::KeepAlive { kind, consumed } => {
                    seen.push(format!("{kind:?}"));
                    buf.drain(..consumed);
                }
                Framed::Message { message, consumed } => {
                    seen.push(message.method().unwrap().to_string());
                    buf.drain(..consumed);
                }
            }
        }
    }
    assert!(buf.is_empty());
    assert_eq!(seen, ["Ping", "REGISTER", "Pong", "REGISTER"]);
}
