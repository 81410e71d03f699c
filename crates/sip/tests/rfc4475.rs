//! A representative set of the RFC 4475 torture-test messages: the valid-but-weird ones must
//! parse (with the values the RFC says they carry), the invalid ones must be rejected — with an
//! answer from `error_response` where the RFC expects a 400 — and nothing may panic.
#![allow(clippy::unwrap_used)]

mod common;

use common::crlf;
use icebreaker_sip::{
    error_response, sdp::Sdp, unescape, Contacts, Error, Message, Method, StartLine, Uri,
};

const WSINV_BODY: &str = "v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.3
s=-
c=IN IP4 192.0.2.4
t=0 0
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
";

fn invalid(name: &str, text: &[u8]) -> Error {
    let err = match Message::parse(text) {
        Ok(m) => panic!("{name}: accepted: {m:?}"),
        Err(e) => e,
    };
    // Never panics; an answer copies Via, From, To, Call-ID and CSeq as they came (they may
    // be the malformed part) and carries the error's status code.
    if let Some(r) = error_response(text, &err) {
        let bytes = r.to_bytes();
        let status = format!("SIP/2.0 {} ", err.status_code());
        assert!(bytes.starts_with(status.as_bytes()), "{name}");
        assert!(
            r.headers.contains("Via") && r.headers.contains("CSeq"),
            "{name}"
        );
    }
    err
}

/// §3.1.1.1 A Short Tortuous INVITE.
#[test]
fn rfc4475_wsinv_short_tortuous_invite() {
    let text = crlf(&format!(
        r#"INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : "J Rosenberg \\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : 150
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \"\"" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

{WSINV_BODY}"#
    ));
    let m = Message::parse(&text).unwrap();
    assert_eq!(m.method(), Some(&Method::Invite));
    let Some(Uri::Sip(ruri)) = m.request_uri() else {
        panic!()
    };
    assert_eq!(ruri.user.as_deref(), Some("vivekg"));
    assert_eq!(ruri.param("unknownparam"), Some(None));
    let to = m.to().unwrap();
    assert_eq!(to.tag(), Some("1918181833n"));
    assert_eq!(to.display_name, None);
    let from = m.from().unwrap();
    assert_eq!(from.display_name.as_deref(), Some(r#"J Rosenberg \""#));
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(m.max_forwards().unwrap(), Some(68));
    assert_eq!(m.call_id().unwrap(), "wsinv.ndaksdj@192.0.2.1");
    let cseq = m.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method.as_str()), (9, "INVITE"));
    let vias = m.vias().unwrap();
    assert_eq!(vias.len(), 3);
    assert_eq!(
        (vias[0].transport.as_str(), vias[0].host.as_str()),
        ("UDP", "192.0.2.2")
    );
    assert_eq!(vias[0].branch(), Some("390skdjuw"));
    assert_eq!(
        (vias[1].transport.as_str(), vias[1].host.as_str()),
        ("TCP", "spindle.example.com")
    );
    assert_eq!(vias[1].branch(), Some("z9hG4bK9ikj8"));
    assert_eq!(vias[2].host, "192.168.255.111");
    assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
    assert_eq!(m.headers.get("Subject"), Some(""));
    assert_eq!(
        m.headers.get("newfangledheader"),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(
        m.headers.get("UnknownHeaderWithUnusualValue"),
        Some(";;,,;;,;")
    );
    let routes = m.routes().unwrap();
    assert!(routes[0].sip_uri().unwrap().is_loose_route());
    let Contacts::List(c) = m.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].0.display_name.as_deref(), Some(r#"Quoted string """#));
    assert_eq!(c[0].0.params.get("newparam"), Some(Some("newvalue")));
    assert_eq!(c[0].0.params.get("secondparam"), Some(None));
    assert_eq!(c[0].q(), Some("0.33"));
    assert_eq!(m.body.len(), 150);
    let sdp = Sdp::parse(&m.body).unwrap();
    assert_eq!(sdp.media.len(), 2);
    // Serializing keeps every header (names as received) and parses back to the same message.
    let again = Message::parse(&m.to_bytes()).unwrap();
    assert_eq!(again, m);
    assert_eq!(again.to_bytes(), m.to_bytes());
}

/// §3.1.1.2 Wide Range of Valid Characters.
#[test]
fn rfc4475_intmeth_wide_range_of_valid_characters() {
    let mut text = Vec::new();
    text.extend_from_slice(b"!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0\r\n");
    text.extend_from_slice(b"Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~\r\n");
    text.extend_from_slice(b"To: \"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>\r\n");
    text.extend_from_slice("From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\u{440}\u{430}\u{431}\u{43e}\u{442}\u{430}\u{44e}\u{449}\u{438}\u{439}\";tag=_token~1'+`*%!-.\r\n".as_bytes());
    text.extend_from_slice(b"Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\r\n");
    text.extend_from_slice(b"CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~\r\n");
    text.extend_from_slice(b"Max-Forwards: 255\r\n");
    text.extend_from_slice(
        "extensionHeader-!.%*+_`'~:\u{feff}\u{5927}\u{505c}\u{96fb}\r\n".as_bytes(),
    );
    text.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let m = Message::parse(&text).unwrap();
    assert_eq!(
        m.method().unwrap().as_str(),
        "!interesting-Method0123456789_*+`.%indeed'~"
    );
    let Some(Uri::Sip(u)) = m.request_uri() else {
        panic!()
    };
    assert_eq!(u.host, "example.com");
    assert_eq!(
        u.password.as_deref(),
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK-.!%66*_+`'~"));
    assert_eq!(
        m.to().unwrap().display_name.as_deref(),
        Some("BEL:\x07 NUL:\x00 DEL:\x7f")
    );
    let from = m.from().unwrap();
    assert_eq!(
        from.display_name.as_deref(),
        Some("token1~` token2'+_ token3*%!.-")
    );
    assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
    assert_eq!(m.max_forwards().unwrap(), Some(255));
    assert!(m.headers.get("extensionHeader-!.%*+_`'~").is_some());
    assert_eq!(Message::parse(&m.to_bytes()).unwrap(), m);
}

/// §3.1.1.3 Valid Use of the % Escaping Mechanism.
#[test]
fn rfc4475_esc01_valid_escaping() {
    let text = crlf(&format!(
        "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: 150

{WSINV_BODY}"
    ));
    let m = Message::parse(&text).unwrap();
    let ruri = m.request_uri().unwrap().as_sip().unwrap();
    assert_eq!(
        unescape(ruri.user.as_deref().unwrap()),
        "sips:user@example.com"
    );
    assert_eq!(
        unescape(m.to().unwrap().sip_uri().unwrap().user.as_deref().unwrap()),
        "user"
    );
    assert_eq!(
        unescape(
            m.from()
                .unwrap()
                .sip_uri()
                .unwrap()
                .user
                .as_deref()
                .unwrap()
        ),
        "I have spaces"
    );
    assert_eq!(m.call_id().unwrap(), "esc01.239409asdfakjkn23onasd0-3234");
    assert_eq!(m.content_type(), Some("application/sdp"));
    let Contacts::List(c) = m.contacts().unwrap() else {
        panic!()
    };
    let params: Vec<_> = c[0].0.sip_uri().unwrap().params.iter().collect();
    assert_eq!(unescape(params[0].0), "lr");
    assert_eq!(unescape(params[1].1.unwrap()), "value%41");
}

/// §3.1.1.4 Escaped Nulls in URIs.
#[test]
fn rfc4475_escnull_escaped_nulls() {
    let text = crlf(
        "REGISTER sip:example.com SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0

",
    );
    let m = Message::parse(&text).unwrap();
    let Contacts::List(c) = m.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(c.len(), 2);
    assert_eq!(
        unescape(c[1].0.sip_uri().unwrap().user.as_deref().unwrap()),
        "\0\0"
    );
}

/// §3.1.1.5 Use of % When It Is Not an Escape.
#[test]
fn rfc4475_esc02_percent_not_an_escape() {
    let text = crlf(
        r#"RE%47IST%45R sip:registrar.example.com SIP/2.0
To: "%Z%45" <sip:resource@example.com>
From: "%Z%45" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP host.example.com;rport;branch=z9hG4bK209345432sdfjasd
CSeq: 29344 RE%47IST%45R
Max-Forwards: 70
Contact: <sip:alias1@host1.example.com>
C%6Fntact: <sip:alias2@host2.example.com>
Contact: <sip:alias3@host3.example.com>
l: 0

"#,
    );
    let m = Message::parse(&text).unwrap();
    assert_eq!(m.method(), Some(&Method::Other("RE%47IST%45R".into())));
    assert_ne!(m.method(), Some(&Method::Register));
    assert_eq!(m.to().unwrap().display_name.as_deref(), Some("%Z%45"));
    let Contacts::List(c) = m.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(c.len(), 2, "C%6Fntact is another header");
    assert_eq!(m.top_via().unwrap().rport(), Some(None));
}

/// §3.1.1.6 Message with No LWS between Display Name and <.
#[test]
fn rfc4475_lwsdisp_no_lws_before_angle() {
    let text = crlf(
        "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw
l: 0

",
    );
    let m = Message::parse(&text).unwrap();
    assert_eq!(m.from().unwrap().display_name.as_deref(), Some("caller"));
    assert_eq!(m.from().unwrap().tag(), Some("323"));
}

/// §3.1.1.7 Long Values in Header Fields (generated: same shape, long values).
#[test]
fn rfc4475_longreq_long_values() {
    let long = "a".repeat(1500);
    let mut text = format!(
        "INVITE sip:user@example.com SIP/2.0\n\
         To: \"I have a user name of {long} proportion\" <sip:user@example.com:6000;unknownparam1=very{long}value;longparam{long}name=shortvalue>\n\
         From: sip:{long}@example.com;tag=12{long}982\n\
         Call-ID: longreq.one{long}really{long}longcallid\n\
         CSeq: 3882340 INVITE\n\
         Unknown-{long}-Header: unknown-{long}-value; unknown-{long}-parameter-name=unknown-{long}-parameter-value\n"
    );
    for i in 0..40 {
        text.push_str(&format!(
            "Via: SIP/2.0/TCP sip{i}.example.com:5060;branch=z9hG4bK{}{i}\n",
            &long[..200]
        ));
    }
    text.push_str(
        "Max-Forwards: 70\nContact: <sip:amazinglylongcallername@host5.example.net>\nl: 0\n\n",
    );
    let m = Message::parse(&crlf(&text)).unwrap();
    assert_eq!(m.vias().unwrap().len(), 40);
    assert_eq!(
        m.from()
            .unwrap()
            .sip_uri()
            .unwrap()
            .user
            .as_ref()
            .unwrap()
            .len(),
        1500
    );
    let to = m.to().unwrap();
    assert_eq!(to.sip_uri().unwrap().port, Some(6000));
    assert_eq!(to.sip_uri().unwrap().params.len(), 2);
}

/// §3.1.1.8 Extra Trailing Octets in a UDP Datagram: the second request is ignored.
#[test]
fn rfc4475_dblreq_extra_trailing_octets() {
    let text = crlf(
        "REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492
Content-Length: 0


INVITE sip:joe@example.com SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234
Content-Type: application/sdp
Content-Length: 150

",
    );
    let m = Message::parse(&text).unwrap();
    assert_eq!(m.method(), Some(&Method::Register));
    assert!(m.body.is_empty());
    assert_eq!(
        m.call_id().unwrap(),
        "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    );
}

/// §3.1.1.9 Semicolon-Separated Parameters in URI User Part.
#[test]
fn rfc4475_semiuri_semicolons_in_user() {
    let text = crlf(
        "OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw
l: 0

",
    );
    let m = Message::parse(&text).unwrap();
    let u = m.request_uri().unwrap().as_sip().unwrap();
    assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
    assert_eq!(u.host, "example.com");
    assert!(u.params.is_empty());
    assert_eq!(m.headers.values("Accept").len(), 6);
}

/// §3.1.1.10 Varied and Unknown Transport Types.
#[test]
fn rfc4475_transports_unknown_transport_types() {
    let text = crlf(
        "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0

",
    );
    let m = Message::parse(&text).unwrap();
    let t: Vec<String> = m.vias().unwrap().into_iter().map(|v| v.transport).collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
}

/// §3.1.1.12 Unusual Reason Phrase, §3.1.1.13 Empty Reason Phrase.
#[test]
fn rfc4475_unreason_and_noreason() {
    let text = crlf(
        "SIP/2.0 200 = 2**3 * 5**2 \u{43d}\u{43e} \u{441}\u{442}\u{43e} \u{434}\u{435}\u{432}\u{44f}\u{43d}\u{43e}\u{441}\u{442}\u{43e} \u{434}\u{435}\u{432}\u{44f}\u{442}\u{44c} - \u{43f}\u{440}\u{43e}\u{441}\u{442}\u{43e}\u{435}
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Call-ID: unreason.1234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: 0
Content-Type: application/sdp
Contact: <sip:user@host198.example.com>

",
    );
    let m = Message::parse(&text).unwrap();
    assert_eq!(m.status(), Some(200));
    assert!(m.reason().unwrap().starts_with("= 2**3 * 5**2 "));
    assert_eq!(Message::parse(&m.to_bytes()).unwrap(), m);

    let text = crlf(
        "SIP/2.0 100 
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: noreason.asndj203insdf99223ndf
CSeq: 35 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>

",
    );
    let m = Message::parse(&text).unwrap();
    assert_eq!((m.status(), m.reason()), (Some(100), Some("")));
}

/// §3.4.1 (inv2543): an RFC 2543-style request (no branch, no Max-Forwards, no
/// Content-Length over UDP) is accepted.
#[test]
fn rfc4475_inv2543_old_style_request() {
    let text = crlf(
        "INVITE sip:UserB@example.com SIP/2.0
Via: SIP/2.0/UDP iftgw.example.com
From: <sip:+13035551111@ift.client.example.net;user=phone>
Record-Route: <sip:UserB@example.com;maddr=ss1.example.com>
To: sip:+16505552222@ss1.example.net;user=phone
Call-ID: inv2543.1717@ift.client.example.com
CSeq: 56 INVITE
Content-Type: application/sdp

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.5
s=-
c=IN IP4 192.0.2.5
t=0 0
m=audio 49217 RTP/AVP 0
",
    );
    let m = Message::parse(&text).unwrap();
    assert_eq!(m.top_via().unwrap().branch(), None);
    assert_eq!(m.max_forwards().unwrap(), None);
    assert_eq!(m.to().unwrap().params.get("user"), Some(Some("phone")));
    assert!(Sdp::parse(&m.body).is_ok());
}

const VALID_HEAD: &str = "To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
Call-ID: torture.0ha0isndaksdjasdf3234nas
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw
";

/// §3.1.2.1 Extraneous Header Field Separators.
#[test]
fn rfc4475_badinv01_extraneous_separators() {
    let text = crlf(&format!(
        "INVITE sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
Call-ID: badinv01.0ha0isndaksdjasdf3234nas
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;;,;,,
Contact: \"Joe\" <sip:joe@example.org>;;;;
Content-Length: 150
Content-Type: application/sdp

{WSINV_BODY}"
    ));
    assert_eq!(
        invalid("badinv01", &text),
        Error::BadHeader("Via"),
        "rejected with 400"
    );
}

/// §3.1.2.2 Content Length Larger Than Message, §3.1.2.3 Negative Content-Length.
#[test]
fn rfc4475_clerr_and_ncl_content_length() {
    let text = crlf(&format!(
        "INVITE sip:user@example.com SIP/2.0
{VALID_HEAD}CSeq: 1 INVITE
Content-Type: application/sdp
Content-Length: 9999

{WSINV_BODY}"
    ));
    assert_eq!(invalid("clerr", &text), Error::BadContentLength);
    let text = crlf(&format!(
        "INVITE sip:user@example.com SIP/2.0
{VALID_HEAD}CSeq: 1 INVITE
Content-Type: application/sdp
Content-Length: -999

{WSINV_BODY}"
    ));
    assert_eq!(invalid("ncl", &text), Error::BadContentLength);
}

/// §3.1.2.4 Request Scalar Fields with Overlarge Values.
#[test]
fn rfc4475_scalar02_overlarge_scalars() {
    let text = crlf(
        "REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3
To: <sip:user@example.com>
From: <sip:user@example.com>;tag=239232jh3
CSeq: 36893488147419103232 REGISTER
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
Max-Forwards: 300
Expires: 10000000000000
Contact: <sip:user@host129.example.com>
  ;expires=280297596632815
l: 0

",
    );
    assert_eq!(invalid("scalar02", &text), Error::BadHeader("CSeq"));
}

/// §3.1.2.6 Unterminated Quoted String in Display Name.
#[test]
fn rfc4475_quotbal_unterminated_quote() {
    let text = crlf(
        "INVITE sip:user@example.com SIP/2.0
To: \"Mr. J. User <sip:j.user@example.com>
From: sip:caller@example.net;tag=93334
Max-Forwards: 10
Call-ID: quotbal.aksdj
Contact: <sip:caller@host59.example.net>
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234
l: 0

",
    );
    assert_eq!(invalid("quotbal", &text), Error::BadHeader("To"));
}

/// §3.1.2.7–3.1.2.11: malformed Request-Lines.
#[test]
fn rfc4475_bad_request_lines() {
    for (name, line) in [
        ("ltgtruri", "INVITE <sip:user@example.com> SIP/2.0"),
        ("lwsruri", "INVITE sip:user@example.com; lr SIP/2.0"),
        ("lwsstart", "INVITE  sip:user@example.com  SIP/2.0"),
        ("trws", "INVITE sip:user@example.com SIP/2.0 "),
        (
            "escruri",
            "INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0",
        ),
    ] {
        let text = crlf(&format!("{line}\n{VALID_HEAD}CSeq: 1 INVITE\nl: 0\n\n"));
        let err = invalid(name, &text);
        assert_eq!(err.status_code(), 400, "{name}");
        assert!(error_response(&text, &err).is_some(), "{name} gets a 400");
    }
}

/// §3.1.2.12 Invalid Time Zone in Date Header Field: Date is not interpreted, so accepted.
#[test]
fn rfc4475_baddate_is_not_interpreted() {
    let text = crlf(&format!(
        "INVITE sip:user@example.com SIP/2.0\n{VALID_HEAD}CSeq: 1 INVITE\nDate: Fri, 01 Jan 2010 16:00:00 EST\nl: 0\n\n"
    ));
    assert!(Message::parse(&text).is_ok());
}

/// §3.1.2.13 Failure to Enclose name-addr URI in <>, §3.1.2.14 Spaces within addr-spec,
/// §3.1.2.15 Non-token Characters in Display Name.
#[test]
fn rfc4475_regbadct_badaspec_baddn() {
    let text = crlf(
        "REGISTER sip:example.com SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=998332
Max-Forwards: 70
Call-ID: regbadct.k345asrl3fdbv@10.0.0.1
CSeq: 1 REGISTER
Via: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw
Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E
l: 0

",
    );
    assert_eq!(invalid("regbadct", &text), Error::BadHeader("Contact"));
    let text = crlf(
        "OPTIONS sip:user@example.org SIP/2.0
Via: SIP/2.0/UDP host4.example.com:5060;branch=z9hG4bKkdju43234
Max-Forwards: 70
From: \"Bell, Alexander\" <sip:a.g.bell@example.com>;tag=433423
To: \"Watson, Thomas\" < sip:t.watson@example.org >
Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3
Accept: application/sdp
CSeq: 3923239 OPTIONS
l: 0

",
    );
    assert_eq!(invalid("badaspec", &text), Error::BadHeader("To"));
    let text = crlf(
        "OPTIONS sip:t.watson@example.org SIP/2.0
Via:     SIP/2.0/UDP c.example.com:5060;branch=z9hG4bKkdjuw
Max-Forwards:      70
From:    Bell, Alexander <sip:a.g.bell@example.com>;tag=43
To:      Watson, Thomas <sip:t.watson@example.org>
Call-ID: baddn.31415@c.example.com
Accept: application/sdp
CSeq:    3923239 OPTIONS
l: 0

",
    );
    assert_eq!(invalid("baddn", &text), Error::BadHeader("From"));
}

/// §3.1.2.16 Unknown Protocol Version: 505.
#[test]
fn rfc4475_badvers_unknown_version() {
    let text = crlf(&format!(
        "OPTIONS sip:t.watson@example.org SIP/7.0\n{VALID_HEAD}CSeq: 1 OPTIONS\nl: 0\n\n"
    ));
    assert_eq!(invalid("badvers", &text), Error::BadVersion);
    assert_eq!(
        error_response(&text, &Error::BadVersion).unwrap().status(),
        Some(505)
    );
}

/// §3.1.2.17 Start Line and CSeq Method Mismatch, §3.1.2.18 Unknown Method with CSeq Method
/// Mismatch.
#[test]
fn rfc4475_mismatch01_mismatch02() {
    let text = crlf(&format!(
        "OPTIONS sip:user@example.com SIP/2.0\n{VALID_HEAD}CSeq: 8 INVITE\nl: 0\n\n"
    ));
    assert_eq!(invalid("mismatch01", &text), Error::CSeqMismatch);
    let text = crlf(&format!(
        "NEWMETHOD sip:user@example.com SIP/2.0\n{VALID_HEAD}CSeq: 8 foobarmethod\nl: 0\n\n"
    ));
    assert_eq!(invalid("mismatch02", &text), Error::CSeqMismatch);
}

/// §3.1.2.19 Overlarge Response Code.
#[test]
fn rfc4475_bigcode_overlarge_response_code() {
    let text = crlf(
        "SIP/2.0 4294967301 better not break the receiver
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i
CSeq: 353494 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>

",
    );
    assert_eq!(invalid("bigcode", &text), Error::BadStartLine);
    assert!(
        error_response(&text, &Error::BadStartLine).is_none(),
        "no answer to a response"
    );
}

/// §3.1.2.? (insuf, mcl01): missing required headers, and several values in single-value
/// header fields.
#[test]
fn rfc4475_insuf_and_multiple_single_values() {
    let text = crlf(
        "INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf
Content-Type: application/sdp
l: 0

",
    );
    assert!(matches!(invalid("insuf", &text), Error::MissingHeader(_)));
    assert!(error_response(&text, &Error::MissingHeader("From")).is_none());
    let text = crlf(
        "OPTIONS sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bK293423
To: sip:user@example.com
From: sip:other@example.net;tag=3923942
Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf
CSeq: 15932 OPTIONS
Content-Length: 13
Max-Forwards: 60
Content-Length: 5
Content-Type: text/plain

There's no way to know how many octets are supposed to be here.
",
    );
    assert_eq!(invalid("mcl01", &text), Error::BadContentLength);
    let text = crlf(&format!(
        "OPTIONS sip:user@example.com SIP/2.0\n{VALID_HEAD}Call-ID: again\nCSeq: 1 OPTIONS\nl: 0\n\n"
    ));
    assert_eq!(invalid("two Call-IDs", &text), Error::BadHeader("Call-ID"));
}

/// Limits: oversized messages, too many headers, over-long lines.
#[test]
fn limits_are_enforced() {
    use icebreaker_sip::Limits;
    let base = format!("OPTIONS sip:user@example.com SIP/2.0\n{VALID_HEAD}CSeq: 1 OPTIONS\n");
    let many = crlf(&format!("{base}{}l: 0\n\n", "X-A: b\n".repeat(300)));
    assert_eq!(Message::parse(&many), Err(Error::TooManyHeaders));
    let long = crlf(&format!("{base}X-A: {}\nl: 0\n\n", "b".repeat(9000)));
    assert_eq!(Message::parse(&long), Err(Error::LineTooLong));
    let folded = crlf(&format!(
        "{base}X-A: b\n{}l: 0\n\n",
        format!(" {}\n", "c".repeat(1000)).repeat(9)
    ));
    assert_eq!(Message::parse(&folded), Err(Error::LineTooLong));
    let small = Limits {
        max_message: 200,
        ..Limits::default()
    };
    let ok = crlf(&format!("{base}l: 0\n\n"));
    assert_eq!(Message::parse_with(&ok, &small), Err(Error::TooLarge));
    assert!(Message::parse(&ok).is_ok());
    assert_eq!(
        Message::parse(&crlf(&format!("{base}l: 0\n"))),
        Err(Error::NoHeaderEnd)
    );
    assert_eq!(
        Message::parse(&crlf(&format!("{base}X-B: b\n\t folded\nl: 0\n\n")))
            .map(|m| m.headers.get("x-b").map(str::to_string)),
        Ok(Some("b folded".into()))
    );
    assert_eq!(
        Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\n bad\r\n\r\n"),
        Err(Error::BadHeaderName)
    );
    assert_eq!(
        Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\nVia\r\n\r\n"),
        Err(Error::BadHeaderName)
    );
    assert_eq!(
        Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\nVia: a\rb\r\n\r\n"),
        Err(Error::BadLine)
    );
    assert_eq!(
        Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\nX: \xff\r\n\r\n"),
        Err(Error::BadLine)
    );
    let r = Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n");
    assert_eq!(r, Err(Error::MissingHeader("Via")));
    assert!(matches!(
        Message::parse(&ok).map(|m| m.start),
        Ok(StartLine::Request { .. })
    ));
}
