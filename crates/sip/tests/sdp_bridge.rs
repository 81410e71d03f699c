//! The media bridge's SDP steps: a WebRTC offer → a plain-RTP offer, and a plain answer read.
#![allow(clippy::unwrap_used)]

mod common;

use common::{crlf, CHROME_OFFER};
use icebreaker_sip::sdp::{
    plain_offer, read_plain_answer, CodecName, Direction, PlainOfferOptions, Sdp,
};
use icebreaker_sip::Error;

fn options(codecs: &[CodecName]) -> PlainOfferOptions<'_> {
    PlainOfferOptions {
        addr: "198.51.100.1".parse().unwrap(),
        port: 40000,
        codecs,
        session_id: 42,
        session_version: 1,
    }
}

#[test]
fn webrtc_offer_helpers() {
    let s = Sdp::parse(&crlf(CHROME_OFFER)).unwrap();
    assert_eq!(s.groups(), vec![("BUNDLE", vec!["0"])]);
    let a = &s.media[0];
    assert_eq!(
        (a.kind(), a.port(), a.proto()),
        ("audio", 9, "UDP/TLS/RTP/SAVPF")
    );
    assert_eq!(
        a.formats().collect::<Vec<_>>(),
        ["111", "63", "9", "0", "8", "13", "110", "126"]
    );
    assert_eq!(a.mid(), Some("0"));
    assert_eq!(a.ice_pwd(), Some("7fGYD4TLcvNFMjlr4vdXWrrJ"));
    assert_eq!(a.fingerprint().unwrap().0, "sha-256");
    assert_eq!(a.setup(), Some("actpass"));
    assert_eq!(a.candidates().count(), 2);
    assert!(a.rtcp_mux());
    assert_eq!(a.fmtp(111), Some("minptime=10;useinbandfec=1"));
    assert_eq!(a.direction(), Some(Direction::SendRecv));
    assert_eq!(s.media_connection(a).unwrap().unwrap().address, "0.0.0.0");
    // Unknown lines survive a round trip in order.
    let back = Sdp::parse(&s.to_bytes()).unwrap();
    assert_eq!(back, s);
    assert_eq!(s.to_bytes(), crlf(CHROME_OFFER));
}

#[test]
fn plain_offer_from_webrtc_offer() {
    let webrtc = Sdp::parse(&crlf(CHROME_OFFER)).unwrap();
    let all = [CodecName::Pcmu, CodecName::Pcma, CodecName::Opus];
    let out = plain_offer(&webrtc, &options(&all)).unwrap();
    let text = String::from_utf8(out.sdp.to_bytes()).unwrap();
    assert_eq!(
        text,
        "v=0\r\n\
         o=- 42 1 IN IP4 198.51.100.1\r\n\
         s=-\r\n\
         c=IN IP4 198.51.100.1\r\n\
         t=0 0\r\n\
         m=audio 40000 RTP/AVP 0 8 111 110 126\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:111 opus/48000/2\r\n\
         a=fmtp:111 minptime=10;useinbandfec=1\r\n\
         a=rtpmap:110 telephone-event/48000\r\n\
         a=rtpmap:126 telephone-event/8000\r\n\
         a=ptime:20\r\n\
         a=sendrecv\r\n"
    );
    for forbidden in [
        "ice-",
        "fingerprint",
        "setup",
        "candidate",
        "mid",
        "rtcp-mux",
        "SAVPF",
        "group",
    ] {
        assert!(!text.contains(forbidden), "{forbidden}");
    }
    assert_eq!(out.codecs.len(), 3);
    assert_eq!(out.telephone_events.len(), 2);

    // A G.711-only trunk: no Opus, and only the 8000 Hz telephone-event.
    let g711 = plain_offer(&webrtc, &options(&[CodecName::Pcma])).unwrap();
    assert_eq!(g711.sdp.media[0].m, "audio 40000 RTP/AVP 8 126");
    assert_eq!(g711.telephone_events[0].pt, 126);

    // IPv6 gateway address.
    let mut o = options(&all);
    o.addr = "2001:db8::5".parse().unwrap();
    let v6 = plain_offer(&webrtc, &o).unwrap();
    assert_eq!(v6.sdp.connection().unwrap().unwrap().ip, Some(o.addr));

    // An Opus-only WebRTC offer toward a G.711 trunk: nothing in common.
    let opus_only = CHROME_OFFER.replace("111 63 9 0 8 13 110 126", "111 110");
    let s = Sdp::parse(&crlf(&opus_only)).unwrap();
    assert_eq!(
        plain_offer(&s, &options(&[CodecName::Pcmu])),
        Err(Error::NoCommonCodec)
    );
    let video = Sdp::parse(b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n").unwrap();
    assert_eq!(plain_offer(&video, &options(&all)), Err(Error::NoAudio));
}

#[test]
fn plain_answers() {
    // Opus chosen, media-level c=, session-level sendonly (held).
    let s = Sdp::parse(&crlf(
        "v=0
o=- 1 1 IN IP6 2001:db8::50
s=-
t=0 0
a=sendonly
m=audio 7078 RTP/AVP 111 101
c=IN IP6 2001:db8::50
a=rtpmap:111 opus/48000/2
a=fmtp:111 useinbandfec=1
a=rtpmap:101 telephone-event/48000
",
    ))
    .unwrap();
    let a = read_plain_answer(&s).unwrap();
    assert_eq!(a.codec.name, CodecName::Opus);
    assert_eq!(a.codec.fmtp.as_deref(), Some("useinbandfec=1"));
    assert_eq!(a.addr, "[2001:db8::50]:7078".parse().unwrap());
    assert_eq!(a.telephone_event.unwrap().pt, 101);
    assert_eq!(a.direction, Direction::SendOnly);

    // Static payload type without rtpmap.
    let s = Sdp::parse(b"v=0\r\nc=IN IP4 192.0.2.7\r\nm=audio 5004 RTP/AVP 0\r\n").unwrap();
    let a = read_plain_answer(&s).unwrap();
    assert_eq!((a.codec.name, a.codec.pt), (CodecName::Pcmu, 0));
    assert!(a.telephone_event.is_none());

    // Rejected, unknown codec only, no c=, c= with a name.
    for (sdp, err) in [
        (
            "v=0\r\nc=IN IP4 192.0.2.7\r\nm=audio 0 RTP/AVP 0\r\n",
            Error::NoAudio,
        ),
        (
            "v=0\r\nc=IN IP4 192.0.2.7\r\nm=audio 5004 RTP/AVP 18\r\n",
            Error::NoCommonCodec,
        ),
        (
            "v=0\r\nm=audio 5004 RTP/AVP 0\r\n",
            Error::BadSdp("missing c="),
        ),
        (
            "v=0\r\nc=IN IP4 host.example\r\nm=audio 5004 RTP/AVP 0\r\n",
            Error::BadSdp("c= is not an IP address"),
        ),
    ] {
        assert_eq!(
            read_plain_answer(&Sdp::parse(sdp.as_bytes()).unwrap()),
            Err(err),
            "{sdp}"
        );
    }
}
