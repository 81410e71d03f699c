//! The SIP gateway's edge proxy (`/sip`, SIP over WebSocket) against a real far end: `sipp`
//! (Debian sip-tester) running tests/sip/uas.xml (registrar + answering phone) on loopback.
//! The clients speak as JsSIP does (Via `WSS xxx.invalid`, `transport=ws` contacts, `ob`).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use icebreaker::bench::sip::Browser;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

/// sipp in the background, stopped (by its PID) when dropped.
struct Sipp {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1.
fn free_port() -> u16 {
    loop {
        let port = free_udp_port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sipp_far_end() -> Sipp {
    sipp_far_end_on("u1")
}

/// sipp on `transport` (`u1`: UDP, `t1`: TCP, one connection), as many calls as come.
fn sipp_far_end_on(transport: &str) -> Sipp {
    sipp("uas.xml", transport, &["-timeout", "120s"])
}

/// sipp running `tests/sip/<scenario>` on 127.0.0.1 with an RTP echo, `extra` arguments added.
fn sipp(scenario: &str, transport: &str, extra: &[&str]) -> Sipp {
    let port = free_port();
    let media = free_udp_port();
    let path = format!("{}/../../tests/sip/{scenario}", env!("CARGO_MANIFEST_DIR"));
    let child = Command::new("sipp")
        .args(["-sf", &path, "-i", "127.0.0.1", "-t", transport, "-p"])
        .arg(port.to_string())
        .args(["-mp", &media.to_string(), "-rtp_echo", "-nostdin"])
        .args(extra)
        .args(["-trace_err", "-error_file", "/dev/null"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp runs (Debian sip-tester; scripts/install-deps)");
    // sipp binds its port at once; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    Sipp {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

async fn gateway(far: SocketAddr) -> icebreaker::serve::Running {
    gateway_on(far, "udp").await
}

async fn gateway_on(far: SocketAddr, transport: &str) -> icebreaker::serve::Running {
    gateway_to(format!("sip:{far};transport={transport}"), None).await
}

/// A gateway toward `upstream` (a `sip_upstream` value), trusting the CAs of `tls_ca` for TLS.
async fn gateway_to(upstream: String, tls_ca: Option<PathBuf>) -> icebreaker::serve::Running {
    let mut c = common::config(false);
    c.sip_upstream = Some(upstream);
    c.sip_listen = "127.0.0.1:0".parse().unwrap();
    c.sip_tls_ca = tls_ca;
    common::server(c).await
}

/// A test CA and a server certificate signed by it, as PEM files in a temporary directory.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    /// A new CA and a certificate for `names` (DNS names or IP addresses) signed by it.
    fn new(names: &[&str]) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let dir = std::env::temp_dir().join(format!(
            "icebreaker-sip-tls-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.distinguished_name
            .push(DnType::CommonName, "Icebreaker test PBX CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "pbx (Icebreaker test)");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let pki = Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
        std::fs::write(&pki.cert, cert.pem()).unwrap();
        std::fs::write(&pki.key, key.serialize_pem()).unwrap();
        pki
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the TLS front of sipp saw.
#[derive(Default)]
struct FrontLog {
    /// Handshakes completed (each then relayed to sipp).
    accepted: AtomicU32,
    /// Handshakes that failed (the client refused our certificate).
    refused: AtomicU32,
    /// The SNI of each completed handshake.
    sni: Mutex<Vec<Option<String>>>,
}

/// A TLS server in front of sipp's TCP port: the Debian build of sipp has no TLS (no `-t l1`),
/// so this terminates TLS with `pki`'s certificate on a loopback port and relays each
/// connection's plaintext to sipp over a TCP connection of its own.
async fn tls_front(sipp: SocketAddr, pki: &Pki) -> (SocketAddr, Arc<FrontLog>) {
    let (config, _store) = icebreaker::tls::load_server_config(&pki.cert, &pki.key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(FrontLog::default());
    let seen = log.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(tcp).await {
                    Ok(t) => t,
                    Err(_) => {
                        seen.refused.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                };
                let sni = tls.get_ref().1.server_name().map(str::to_owned);
                seen.sni.lock().unwrap().push(sni);
                seen.accepted.fetch_add(1, Ordering::SeqCst);
                let Ok(mut plain) = TcpStream::connect(sipp).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, log)
}

async fn sip_ws(http: SocketAddr) -> Ws {
    let mut req = format!("ws://{http}/sip").into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("/sip accepts the WebSocket");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("sip")
    );
    ws
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.replace('\n', "\r\n")))
        .await
        .unwrap();
}

/// The next SIP message on the WebSocket (pings skipped).
async fn recv(ws: &mut Ws) -> String {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a SIP message in time")
            .expect("the WebSocket is open")
            .unwrap();
        if let Message::Text(t) = m {
            return t.to_string();
        }
    }
}

/// The next response with status `code` (provisional ones before it are skipped).
async fn recv_status(ws: &mut Ws, code: u16) -> String {
    for _ in 0..5 {
        let m = recv(ws).await;
        if m.starts_with(&format!("SIP/2.0 {code} ")) {
            return m;
        }
        assert!(m.starts_with("SIP/2.0 1"), "expected {code}, got:\n{m}");
    }
    panic!("no {code}");
}

fn header<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .collect()
}

/// An in-dialog request (ACK, BYE) from the client along its route set.
struct Dialog<'a> {
    target: &'a str,
    routes: String,
    from: &'a str,
    to: &'a str,
    call_id: &'a str,
    via_host: &'a str,
}

impl Dialog<'_> {
    fn request(&self, method: &str, cseq: u32, branch: &str) -> String {
        let Dialog {
            target,
            routes,
            from,
            to,
            call_id,
            via_host,
        } = self;
        format!(
            "{method} {target} SIP/2.0
Via: SIP/2.0/WSS {via_host};branch=z9hG4bK{branch}
Max-Forwards: 69
{routes}
To: {to}
From: {from}
Call-ID: {call_id}
CSeq: {cseq} {method}
Content-Length: 0

"
        )
    }
}

impl Sipp {
    /// Waits (5 s at most) for sipp to end its scenario; its exit status.
    async fn exit(mut self) -> Option<std::process::ExitStatus> {
        tokio::task::spawn_blocking(move || {
            for _ in 0..50 {
                if let Ok(Some(s)) = self.child.try_wait() {
                    return Some(s);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            None
        })
        .await
        .unwrap()
    }
}

/// What a client keeps from the 2xx to its INVITE: the remote tag, target and route set.
struct Answered {
    to: String,
    contact: String,
    /// `Route` headers: the Record-Routes reversed (ours: client-facing, then upstream-facing).
    routes: String,
}

impl Answered {
    fn of(ok: &str) -> Answered {
        let rr: Vec<&str> = header(ok, "Record-Route")
            .into_iter()
            .flat_map(|v| v.split(", "))
            .collect();
        Answered {
            to: header(ok, "To")[0].to_owned(),
            contact: header(ok, "Contact")[0]
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap()
                .to_owned(),
            routes: format!("Route: {}\nRoute: {}", rr[1], rr[0]),
        }
    }

    fn dialog<'a>(&'a self, from: &'a str, call_id: &'a str, via_host: &'a str) -> Dialog<'a> {
        Dialog {
            target: &self.contact,
            routes: self.routes.clone(),
            from,
            to: &self.to,
            call_id,
            via_host,
        }
    }
}

/// Who sends a test INVITE: `<sip:USER@example.org>;tag=TAG` from a WebSocket client whose
/// Via host is `via_host`.
struct Caller<'a> {
    user: &'a str,
    tag: &'a str,
    via_host: &'a str,
}

/// An INVITE to `sip:phone@example.org` with a WebRTC offer (sent with its own CRLFs).
async fn invite_webrtc(
    ws: &mut Ws,
    c: &Caller<'_>,
    call_id: &str,
    cseq: u32,
    branch: &str,
    offer: &str,
) {
    let Caller {
        user,
        tag,
        via_host,
    } = c;
    let head = format!(
        "INVITE sip:phone@example.org SIP/2.0
Via: SIP/2.0/WSS {via_host};branch=z9hG4bK{branch}
Max-Forwards: 69
To: <sip:phone@example.org>
From: <sip:{user}@example.org>;tag={tag}
Call-ID: {call_id}
CSeq: {cseq} INVITE
Contact: <sip:{user}@{via_host};transport=ws;ob>
Content-Type: application/sdp
Content-Length: {}

",
        offer.len()
    );
    ws.send(Message::text(head.replace('\n', "\r\n") + offer))
        .await
        .unwrap();
}

fn register(user: &str, call_id: &str) -> String {
    format!(
        "REGISTER sip:example.org SIP/2.0
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK{call_id}r
Max-Forwards: 69
To: <sip:{user}@example.org>
From: \"{user}\" <sip:{user}@example.org>;tag=a73kszlfl
Call-ID: {call_id}
CSeq: 1 REGISTER
Contact: <sip:{user}@df7jal23ls0d.invalid;transport=ws;ob>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\";reg-id=1;expires=600
Supported: path, outbound, gruu
User-Agent: JsSIP 3.10.1
Content-Length: 0

"
    )
}

#[tokio::test]
async fn register_call_and_hang_up_through_the_edge_proxy() {
    call_through("udp").await;
}

#[tokio::test]
async fn the_same_over_tcp_to_the_upstream() {
    call_through("tcp").await;
}

/// `sips:` upstream: TLS to sipp's TLS front, the certificate verified against `sip_tls_ca`
/// for the name in the URI (`localhost`, sent as SNI).
#[tokio::test]
async fn the_same_over_tls_to_the_upstream() {
    call_through("tls").await;
}

async fn call_through(transport: &str) {
    let far = sipp_far_end_on(if transport == "udp" { "u1" } else { "t1" });
    let pki = (transport == "tls").then(|| Pki::new(&["localhost"]));
    let mut front = None;
    let srv = if let Some(pki) = &pki {
        let (addr, log) = tls_front(far.addr, pki).await;
        front = Some(log);
        gateway_to(
            format!("sips:localhost:{}", addr.port()),
            Some(pki.ca.clone()),
        )
        .await
    } else {
        gateway_on(far.addr, transport).await
    };
    let local = srv.sip_addr.expect("the gateway is on");
    let mut ws = sip_ws(srv.http).await;

    // REGISTER: the registrar sees our Path (flow token, ob); the client gets its 200 with its
    // own Via on top and nothing of ours.
    send(&mut ws, &register("alice", "reg-1")).await;
    let ok = recv_status(&mut ws, 200).await;
    let vias = header(&ok, "Via");
    assert_eq!(vias.len(), 1, "{ok}");
    assert!(vias[0].contains("df7jal23ls0d.invalid"), "{ok}");
    let path = header(&ok, "Path");
    assert_eq!(path.len(), 1, "{ok}");
    assert!(path[0].contains(&format!("@{local}")), "{ok}");
    assert!(path[0].contains(";lr") && path[0].contains(";ob"), "{ok}");
    match transport {
        "tcp" => assert!(path[0].contains(";transport=tcp"), "{ok}"),
        "tls" => assert!(path[0].contains(";transport=tls"), "{ok}"),
        _ => assert!(!path[0].contains("transport="), "{ok}"),
    }

    // INVITE → 100/180/200 with the answer; Record-Route: both of ours, client side first
    // for the client (it reverses the list).
    let sdp = "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 40000 RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n";
    let body = sdp.replace('\n', "\r\n");
    send(
        &mut ws,
        &format!(
            "INVITE sip:phone@example.org SIP/2.0
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKinv1
Max-Forwards: 69
To: <sip:phone@example.org>
From: \"alice\" <sip:alice@example.org>;tag=inv1tag
Call-ID: call-1
CSeq: 6 INVITE
Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws;ob>
Content-Type: application/sdp
Content-Length: {}

{sdp}",
            body.len()
        ),
    )
    .await;
    let ok = recv_status(&mut ws, 200).await;
    assert!(ok.contains("m=audio"), "{ok}");
    // One header line or several: the same list (sipp joins them with commas).
    let rr: Vec<&str> = header(&ok, "Record-Route")
        .into_iter()
        .flat_map(|v| v.split(", "))
        .collect();
    assert_eq!(rr.len(), 2, "{ok}");
    assert!(rr[0].contains(&format!("@{local}")), "{ok}");
    if transport != "udp" {
        assert!(rr[0].contains(&format!(";transport={transport}")), "{ok}");
    }
    assert!(
        rr[1].contains("@icebreaker.invalid;transport=ws;lr"),
        "{ok}"
    );
    let to = header(&ok, "To")[0].to_owned();
    let contact = header(&ok, "Contact")[0]
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_owned();
    // The client's route set: the Record-Routes reversed.
    let dialog = Dialog {
        target: &contact,
        routes: format!("Route: {}\nRoute: {}", rr[1], rr[0]),
        from: "\"alice\" <sip:alice@example.org>;tag=inv1tag",
        to: &to,
        call_id: "call-1",
        via_host: "df7jal23ls0d.invalid",
    };
    send(&mut ws, &dialog.request("ACK", 6, "ack1")).await;

    // A malformed request on another flow gets 400 there; this call goes on.
    let mut bad = sip_ws(srv.http).await;
    send(
        &mut bad,
        "OPTIONS sip:x@example.org SIP/2.0
Via: SIP/2.0/WSS b.invalid;branch=z9hG4bKbad
To: <sip:x@example.org>
From: <sip:y@example.org>;tag=1
Call-ID: bad-1
CSeq: notanumber OPTIONS
Content-Length: 0

",
    )
    .await;
    let answer = recv(&mut bad).await;
    assert!(answer.starts_with("SIP/2.0 400 "), "{answer}");

    // BYE from the caller: 200 from the far end.
    send(&mut ws, &dialog.request("BYE", 7, "bye1")).await;
    let ok = recv_status(&mut ws, 200).await;
    assert!(header(&ok, "CSeq")[0].ends_with("BYE"), "{ok}");
    if let Some(front) = front {
        // One connection for the whole exchange, SNI the name in sip_upstream.
        assert_eq!(front.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(front.refused.load(Ordering::SeqCst), 0);
        assert_eq!(
            *front.sni.lock().unwrap(),
            vec![Some("localhost".to_owned())]
        );
    }
    srv.shutdown().await;
    drop(far);
}

/// The upstream's certificate is verified: one signed by a CA other than `sip_tls_ca`, or one
/// for another name than the one in `sip_upstream`, is refused, and nothing reaches sipp (the
/// client's REGISTER goes unanswered, as over a dead link).
#[tokio::test]
async fn a_tls_upstream_with_an_untrusted_certificate_is_refused() {
    let far = sipp_far_end_on("t1");
    let pki = Pki::new(&["localhost"]);
    let other_ca = Pki::new(&["localhost"]);
    let (front, log) = tls_front(far.addr, &pki).await;
    for (upstream, ca) in [
        // Signed by another CA.
        (format!("sips:localhost:{}", front.port()), &other_ca.ca),
        // The right CA, but the certificate does not name 127.0.0.1.
        (
            format!("sip:127.0.0.1:{};transport=tls", front.port()),
            &pki.ca,
        ),
    ] {
        let refused_before = log.refused.load(Ordering::SeqCst);
        let srv = gateway_to(upstream.clone(), Some(ca.clone())).await;
        let mut ws = sip_ws(srv.http).await;
        send(&mut ws, &register("alice", "reg-untrusted")).await;
        let answer = tokio::time::timeout(Duration::from_secs(3), ws.next()).await;
        assert!(answer.is_err(), "{upstream}: answered: {answer:?}");
        for _ in 0..50 {
            if log.refused.load(Ordering::SeqCst) > refused_before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            log.refused.load(Ordering::SeqCst) > refused_before,
            "{upstream}: no refused handshake"
        );
        assert_eq!(log.accepted.load(Ordering::SeqCst), 0, "{upstream}");
        srv.shutdown().await;
    }
    drop(far);
}

#[tokio::test]
async fn sip_needs_the_subprotocol_and_a_configured_upstream() {
    // No upstream: /sip is off.
    let srv = common::server(common::config(false)).await;
    let mut req = format!("ws://{}/sip", srv.http)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
    srv.shutdown().await;
    // An upstream, but no `sip` subprotocol: refused.
    let far = sipp_far_end();
    let srv = gateway(far.addr).await;
    let req = format!("ws://{}/sip", srv.http)
        .into_client_request()
        .unwrap();
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
    srv.shutdown().await;
}

#[tokio::test]
async fn the_far_end_hangs_up_through_the_record_route() {
    let far = sipp_once("uas-hangs-up.xml");
    let srv = gateway(far.addr).await;
    let mut ws = sip_ws(srv.http).await;
    let sdp =
        "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 40000 RTP/AVP 0\n";
    send(
        &mut ws,
        &format!(
            "INVITE sip:phone@example.org SIP/2.0
Via: SIP/2.0/WSS c.invalid;branch=z9hG4bKinv2
Max-Forwards: 69
To: <sip:phone@example.org>
From: <sip:bob@example.org>;tag=bobtag
Call-ID: call-2
CSeq: 1 INVITE
Contact: <sip:bob@c.invalid;transport=ws;ob>
Content-Type: application/sdp
Content-Length: {}

{sdp}",
            sdp.replace('\n', "\r\n").len()
        ),
    )
    .await;
    let ok = recv_status(&mut ws, 200).await;
    let answered = Answered::of(&ok);
    let dialog = answered.dialog("<sip:bob@example.org>;tag=bobtag", "call-2", "c.invalid");
    send(&mut ws, &dialog.request("ACK", 1, "ack2")).await;
    // The phone's BYE reaches this WebSocket: our Routes gone, our Via on top of the phone's.
    let bye = recv(&mut ws).await;
    assert!(bye.starts_with("BYE "), "{bye}");
    assert!(header(&bye, "Route").is_empty(), "{bye}");
    let vias = header(&bye, "Via");
    assert_eq!(vias.len(), 2, "{bye}");
    assert!(
        vias[0].starts_with("SIP/2.0/WS icebreaker.invalid;"),
        "{bye}"
    );
    assert!(
        vias[1].contains("received=127.0.0.1") || vias[1].contains("127.0.0.1"),
        "{bye}"
    );
    // Our 200 goes back to the phone; sipp ends its scenario once it has it.
    let ok_bye = bye
        .lines()
        .filter(|l| {
            let n = l
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            ["via", "from", "to", "call-id", "cseq"].contains(&n.as_str())
        })
        .collect::<Vec<_>>()
        .join("\n");
    send(
        &mut ws,
        &format!("SIP/2.0 200 OK\n{ok_bye}\nContent-Length: 0\n\n"),
    )
    .await;
    let status = far.exit().await;
    assert!(
        status.is_some_and(|s| s.success()),
        "sipp did not end its scenario successfully: {status:?}"
    );
    srv.shutdown().await;
}

/// The media bridge: a WebRTC caller (str0m in place of a browser) calls sipp through `/sip`;
/// sipp gets a plain RTP offer, its answer comes back as a WebRTC answer (ICE-lite on the
/// SFU's port, DTLS fingerprint), and the caller's audio travels to sipp as plain RTP and back
/// (sipp -rtp_echo) as SRTP. BYE ends the call and its media.
#[tokio::test]
async fn webrtc_audio_is_bridged_to_plain_rtp_and_back() {
    let far = sipp_far_end();
    let srv = gateway(far.addr).await;
    let sfu = srv.sfu_addr.expect("the SFU port is on");
    let mut ws = sip_ws(srv.http).await;
    let (mut browser, offer, pending) = Browser::new().await.unwrap();
    assert!(offer.contains("UDP/TLS/RTP/SAVPF"), "{offer}");
    invite_webrtc(
        &mut ws,
        &Caller {
            user: "carol",
            tag: "caroltag",
            via_host: "m.invalid",
        },
        "media-1",
        1,
        "media1",
        &offer,
    )
    .await;
    let ok = recv_status(&mut ws, 200).await;
    let (_, body) = ok.split_once("\r\n\r\n").unwrap();
    // What sipp answered (PCMU, plain RTP) reaches us as a WebRTC answer.
    assert!(body.contains("a=fingerprint:"), "{body}");
    assert!(body.contains("a=ice-lite"), "{body}");
    assert!(body.contains("UDP/TLS/RTP/SAVPF"), "{body}");
    assert!(body.contains("PCMU/8000"), "{body}");
    assert!(!body.to_ascii_lowercase().contains("opus"), "{body}");
    assert!(
        body.contains(&format!("127.0.0.1 {} typ host", sfu.port())),
        "candidate on the SFU's port: {body}"
    );
    assert!(!body.contains("RTP/AVP "), "{body}");
    browser
        .rtc
        .sdp_api()
        .accept_answer(
            pending,
            str0m::change::SdpAnswer::from_sdp_string(body).unwrap(),
        )
        .unwrap();
    let answered = Answered::of(&ok);
    let dialog = answered.dialog(
        "<sip:carol@example.org>;tag=caroltag",
        "media-1",
        "m.invalid",
    );
    send(&mut ws, &dialog.request("ACK", 1, "mack1")).await;

    // 2 s of audio; sipp echoes it (plain RTP both ways on its side).
    let (connected, heard) = browser.talk(100, Duration::from_secs(10)).await.unwrap();
    assert!(connected, "ICE + DTLS with the gateway");
    assert!(
        heard >= 80,
        "heard {heard} of 100 frames back through sipp's echo"
    );
    let media = srv.sip_media_calls();
    assert_eq!(media, 1, "one bridged call");

    send(&mut ws, &dialog.request("BYE", 2, "mbye1")).await;
    let ok = recv_status(&mut ws, 200).await;
    assert!(header(&ok, "CSeq")[0].ends_with("BYE"), "{ok}");
    assert_eq!(srv.sip_media_calls(), 0, "the call's media is gone");
    srv.shutdown().await;
}

/// The response to `req` (as received) with `code`, its Via/From/To/Call-ID/CSeq copied,
/// `extra` headers and `body`.
fn respond(req: &str, code: &str, to_tag: Option<&str>, extra: &str, body: &str) -> String {
    let mut out = format!("SIP/2.0 {code}\r\n");
    for l in req.split("\r\n") {
        let name = l
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if ["via", "from", "call-id", "cseq", "record-route"].contains(&name.as_str()) {
            out.push_str(l);
            out.push_str("\r\n");
        } else if name == "to" {
            out.push_str(l);
            if let Some(t) = to_tag {
                out.push_str(";tag=");
                out.push_str(t);
            }
            out.push_str("\r\n");
        }
    }
    out.push_str(extra);
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out
}

/// The SIP side calls the browser: a phone (this test's own UDP sockets, standing in for a
/// PBX that is also the registrar) sends a plain offer through the registration's Path; the
/// browser (str0m) gets a WebRTC offer from the gateway, its answer goes back to the phone as
/// a plain answer, the browser's audio reaches the phone as plain RTP and comes back (the phone
/// echoes it); the phone's BYE ends the call's media.
#[tokio::test]
async fn a_phone_calls_the_browser_through_the_bridge() {
    let phone = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let phone_addr = phone.local_addr().unwrap();
    let srv = gateway(phone_addr).await;
    let gw = srv.sip_addr.unwrap();
    let mut ws = sip_ws(srv.http).await;
    let mut buf = vec![0u8; 65536];
    let mut phone_recv = async |phone: &tokio::net::UdpSocket| -> String {
        let (n, _) = tokio::time::timeout(WAIT, phone.recv_from(&mut buf))
            .await
            .expect("the phone hears from the gateway")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };

    // REGISTER: the registrar (the phone) keeps the Path.
    send(&mut ws, &register("dave", "reg-dave")).await;
    let reg = phone_recv(&phone).await;
    assert!(reg.starts_with("REGISTER "), "{reg}");
    let path = header(&reg, "Path")[0].to_owned();
    phone
        .send_to(respond(&reg, "200 OK", None, "", "").as_bytes(), gw)
        .await
        .unwrap();
    recv_status(&mut ws, 200).await;

    // The phone's INVITE (PCMA, PCMU, telephone-event) through the Path.
    let rtp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rtp_port = rtp.local_addr().unwrap().port();
    let sdp = format!("v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n");
    let invite = format!(
        "INVITE sip:dave@df7jal23ls0d.invalid;transport=ws SIP/2.0\r\nVia: SIP/2.0/UDP {phone_addr};branch=z9hG4bKpbx1;rport\r\nMax-Forwards: 70\r\nRoute: {path}\r\nFrom: <sip:pbx@example.org>;tag=pbxtag\r\nTo: <sip:dave@example.org>\r\nCall-ID: in-1\r\nCSeq: 1 INVITE\r\nContact: <sip:pbx@{phone_addr}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    phone.send_to(invite.as_bytes(), gw).await.unwrap();
    let inv = recv(&mut ws).await;
    assert!(inv.starts_with("INVITE "), "{inv}");
    let (_, offer) = inv.split_once("\r\n\r\n").unwrap();
    assert!(
        offer.contains("a=fingerprint:") && offer.contains("a=ice-lite"),
        "{offer}"
    );
    assert!(offer.contains("UDP/TLS/RTP/SAVPF"), "{offer}");
    assert!(
        offer.contains("PCMA/8000") && offer.contains("PCMU/8000"),
        "{offer}"
    );
    assert!(offer.contains("telephone-event/8000"), "{offer}");

    // The browser answers.
    let (mut browser, _, _) = Browser::new().await.unwrap();
    let answer = browser
        .rtc
        .sdp_api()
        .accept_offer(str0m::change::SdpOffer::from_sdp_string(offer).unwrap())
        .unwrap()
        .to_sdp_string();
    let mid = offer
        .lines()
        .find_map(|l| l.trim().strip_prefix("a=mid:"))
        .unwrap();
    browser.mid = str0m::media::Mid::from(mid);
    // It sends the first codec of its answer, as browsers do.
    let first = answer
        .lines()
        .find(|l| l.starts_with("m=audio "))
        .and_then(|m| m.split(' ').nth(3))
        .unwrap();
    browser.pt = Some(first.trim().parse().unwrap());
    let ok = respond(
        &inv,
        "200 OK",
        Some("davetag"),
        "Contact: <sip:dave@df7jal23ls0d.invalid;transport=ws;ob>\r\nContent-Type: application/sdp\r\n",
        &answer,
    );
    ws.send(Message::text(ok)).await.unwrap();
    let ok = phone_recv(&phone).await;
    assert!(ok.starts_with("SIP/2.0 200 "), "{ok}");
    let (_, plain) = ok.split_once("\r\n\r\n").unwrap();
    assert!(
        !plain.contains("fingerprint") && !plain.contains("ice-"),
        "{plain}"
    );
    assert!(plain.contains("c=IN IP4 127.0.0.1"), "{plain}");
    let m = plain
        .lines()
        .find(|l| l.starts_with("m=audio "))
        .unwrap()
        .to_owned();
    assert!(m.contains(" RTP/AVP "), "{m}");
    let pt: u8 = m.split(' ').nth(3).unwrap().trim().parse().unwrap();
    assert!(pt == 0 || pt == 8, "{m}");

    // The phone echoes what it gets (plain RTP, the answered payload type, no extensions).
    let plain_ok = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let echo = {
        let plain_ok = plain_ok.clone();
        tokio::spawn(async move {
            let mut b = vec![0u8; 2048];
            while let Ok((n, src)) = rtp.recv_from(&mut b).await {
                if n > 12 && b[0] == 0x80 && b[1] & 0x7f == pt {
                    plain_ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let _ = rtp.send_to(&b[..n], src).await;
            }
        })
    };
    let (connected, heard) = browser.talk(100, Duration::from_secs(10)).await.unwrap();
    assert!(connected);
    let plain_ok = plain_ok.load(std::sync::atomic::Ordering::Relaxed);
    assert!(plain_ok >= 80, "the phone got {plain_ok} plain RTP packets");
    assert!(heard >= 80, "the browser heard {heard} frames back");
    assert_eq!(srv.sip_media_calls(), 1);

    // The phone hangs up along the Record-Route.
    let rr: Vec<String> = header(&ok, "Record-Route")
        .into_iter()
        .flat_map(|v| v.split(", "))
        .map(str::to_owned)
        .collect();
    let routes: String = rr.iter().map(|r| format!("Route: {r}\r\n")).collect();
    let bye = format!(
        "BYE sip:dave@df7jal23ls0d.invalid;transport=ws SIP/2.0\r\nVia: SIP/2.0/UDP {phone_addr};branch=z9hG4bKpbx2;rport\r\nMax-Forwards: 70\r\n{routes}From: <sip:pbx@example.org>;tag=pbxtag\r\nTo: <sip:dave@example.org>;tag=davetag\r\nCall-ID: in-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    phone.send_to(bye.as_bytes(), gw).await.unwrap();
    let bye = recv(&mut ws).await;
    assert!(bye.starts_with("BYE "), "{bye}");
    assert_eq!(srv.sip_media_calls(), 0, "the call's media is gone");
    echo.abort();
    srv.shutdown().await;
}

/// sipp running `scenario` for one call (`-m 1`), echoing RTP.
fn sipp_once(scenario: &str) -> Sipp {
    sipp(scenario, "u1", &["-timeout", "60s", "-m", "1"])
}

async fn dial_gateway(far: SocketAddr) -> icebreaker::serve::Running {
    let mut c = common::config(false);
    c.sip_upstream = Some(format!("sip:{far}"));
    c.sip_listen = "127.0.0.1:0".parse().unwrap();
    c.sip_dial = true;
    c.sip_username = Some("dialer".into());
    c.sip_password = Some("s3cret".into());
    common::server(c).await
}

/// The next `sip` message, skipping other types (collected in `others`).
async fn next_sip(
    ws: &mut common::signal::Ws,
    others: &mut Vec<serde_json::Value>,
) -> serde_json::Value {
    loop {
        let m = common::signal::recv(ws).await;
        if m["type"] == "sip" {
            return m["data"].clone();
        }
        others.push(m);
    }
}

/// The SDK's `call.dial(uri)` on the wire: a room member asks the server to dial; the server's
/// own UA calls sipp through the upstream, answers its digest challenge with the configured
/// credentials (sipp verifies them), and once the phone answers it joins the room as a member;
/// a browser (str0m) connects to it like to any peer and hears its own audio back through the
/// phone (sipp's RTP echo): browser → mix → plain RTP → sipp → plain RTP → browser. Hanging up
/// ends the call (BYE, sipp ends its scenario) and the phone leaves the room.
#[tokio::test]
async fn a_room_member_dials_a_phone_through_the_gateway() {
    use common::signal::{peer_of, send as send_json, ws_join};
    use serde_json::json;
    let far = sipp_once("uas-auth.xml");
    let srv = dial_gateway(far.addr).await;
    let sfu = srv.sfu_addr.unwrap();
    let (mut a, ja) = ws_join(srv.http, "phone-room", json!({"name": "Ada"})).await;
    let _me = peer_of(&ja);
    send_json(
        &mut a,
        json!({"type": "sip", "data": {"kind": "dial", "uri": "sip:phone@example.org", "ref": "r1"}}),
    )
    .await;
    let mut others = Vec::new();
    let calling = next_sip(&mut a, &mut others).await;
    assert_eq!(calling["state"], "calling", "{calling}");
    assert_eq!(calling["ref"], "r1");
    let id = calling["id"].as_str().unwrap().to_owned();
    let mut states = vec![];
    let answered = loop {
        let m = next_sip(&mut a, &mut others).await;
        assert_eq!(m["id"], id.as_str(), "{m}");
        states.push(m["state"].as_str().unwrap().to_owned());
        if m["state"] == "answered" {
            break m;
        }
        assert_eq!(m["state"], "ringing", "{m}");
    };
    assert_eq!(states, ["ringing", "answered"]);
    let phone = answered["phone"].as_str().unwrap().to_owned();
    // The phone is a member of the room.
    let joined = loop {
        if let Some(j) = others.iter().find(|m| m["type"] == "peer-joined") {
            break j.clone();
        }
        others.push(common::signal::recv(&mut a).await);
    };
    assert_eq!(joined["peer"]["id"], phone.as_str());
    assert_eq!(joined["peer"]["name"], "phone");
    assert_eq!(joined["peer"]["meta"]["sip"], "sip:phone@example.org");
    assert_eq!(joined["peer"]["meta"]["call"], id.as_str());

    // A browser connects to it like to any peer of the room.
    let (mut browser, offer, pending) = Browser::new().await.unwrap();
    send_json(
        &mut a,
        json!({"type": "signal", "to": phone, "data": {"sdp": {"type": "offer", "sdp": offer}}}),
    )
    .await;
    let answer = common::signal::recv_type(&mut a, "signal").await;
    assert_eq!(answer["from"], phone.as_str());
    let sdp = answer["data"]["sdp"]["sdp"].as_str().unwrap();
    assert_eq!(answer["data"]["sdp"]["type"], "answer");
    assert!(
        sdp.contains("PCMU/8000") && !sdp.to_ascii_lowercase().contains("opus"),
        "{sdp}"
    );
    assert!(sdp.contains(&format!(" {} typ host", sfu.port())), "{sdp}");
    browser
        .rtc
        .sdp_api()
        .accept_answer(
            pending,
            str0m::change::SdpAnswer::from_sdp_string(sdp).unwrap(),
        )
        .unwrap();
    let (connected, heard) = browser.talk(100, Duration::from_secs(10)).await.unwrap();
    assert!(connected);
    assert!(
        heard >= 70,
        "heard {heard} of 100 frames back from the phone"
    );

    // Hang up: BYE to the phone, the phone leaves the room.
    send_json(
        &mut a,
        json!({"type": "sip", "data": {"kind": "hangup", "id": id}}),
    )
    .await;
    others.clear();
    let ended = next_sip(&mut a, &mut others).await;
    assert_eq!(ended["state"], "ended", "{ended}");
    assert_eq!(ended["reason"], "hung up");
    // The phone left the room (before or after the state).
    let left = match others.iter().find(|m| m["type"] == "peer-left") {
        Some(l) => l.clone(),
        None => common::signal::recv_type(&mut a, "peer-left").await,
    };
    assert_eq!(left["peer"], phone.as_str());
    let status = far.exit().await;
    assert!(status.is_some_and(|s| s.success()), "sipp: {status:?}");
    srv.shutdown().await;
}

/// Dialing is refused unless `sip_dial` is on; a phone that hangs up ends the call.
#[tokio::test]
async fn dialing_needs_sip_dial_and_the_phone_may_hang_up() {
    use common::signal::{send as send_json, ws_join};
    use serde_json::json;
    let far = sipp_once("uas-hangs-up.xml");
    // sip_dial off: an error, nothing dialed.
    let srv = gateway(far.addr).await;
    let (mut a, _) = ws_join(srv.http, "r", json!({})).await;
    send_json(
        &mut a,
        json!({"type": "sip", "data": {"kind": "dial", "uri": "sip:x@y"}}),
    )
    .await;
    let e = common::signal::recv_type(&mut a, "error").await;
    assert!(e["message"].as_str().unwrap().contains("sip_dial"), "{e}");
    srv.shutdown().await;

    let srv = dial_gateway(far.addr).await;
    let (mut a, _) = ws_join(srv.http, "r", json!({})).await;
    send_json(
        &mut a,
        json!({"type": "sip", "data": {"kind": "dial", "uri": "http://nope"}}),
    )
    .await;
    let mut others = Vec::new();
    let f = next_sip(&mut a, &mut others).await;
    assert_eq!(f["state"], "failed", "{f}");
    send_json(
        &mut a,
        json!({"type": "sip", "data": {"kind": "dial", "uri": "tel:+1-555-0100"}}),
    )
    .await;
    let mut last = serde_json::Value::Null;
    for _ in 0..6 {
        last = next_sip(&mut a, &mut others).await;
        if last["state"] == "ended" {
            break;
        }
    }
    assert_eq!(last["state"], "ended", "{last}");
    assert_eq!(last["reason"], "the phone hung up");
    assert_eq!(last["uri"], format!("sip:+15550100@127.0.0.1"));
    srv.shutdown().await;
}

/// Wrong credentials: the phone's 403 comes back as `failed`, nobody joins the room.
#[tokio::test]
async fn a_dial_with_wrong_credentials_fails() {
    use common::signal::{send as send_json, ws_join};
    use serde_json::json;
    let far = sipp_once("uas-auth.xml");
    let mut c = common::config(false);
    c.sip_upstream = Some(format!("sip:{}", far.addr));
    c.sip_listen = "127.0.0.1:0".parse().unwrap();
    c.sip_dial = true;
    c.sip_username = Some("dialer".into());
    c.sip_password = Some("wrong".into());
    let srv = common::server(c).await;
    let (mut a, _) = ws_join(srv.http, "r", json!({})).await;
    send_json(
        &mut a,
        json!({"type": "sip", "data": {"kind": "dial", "uri": "sip:phone@example.org"}}),
    )
    .await;
    let mut others = Vec::new();
    let calling = next_sip(&mut a, &mut others).await;
    assert_eq!(calling["state"], "calling");
    let failed = next_sip(&mut a, &mut others).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["code"], 403, "{failed}");
    assert!(others.iter().all(|m| m["type"] != "peer-joined"));
    srv.shutdown().await;
}

/// A browser that goes away mid-call (its WebSocket closes) is hung up for: the gateway sends
/// the BYE on its behalf along the dialog's route, sipp's scenario ends, the media is released.
#[tokio::test]
async fn a_vanished_browser_is_hung_up_for() {
    let far = sipp_once("uas.xml");
    let srv = gateway(far.addr).await;
    let mut ws = sip_ws(srv.http).await;
    let (mut browser, offer, pending) = Browser::new().await.unwrap();
    invite_webrtc(
        &mut ws,
        &Caller {
            user: "erin",
            tag: "erintag",
            via_host: "v.invalid",
        },
        "gone-1",
        5,
        "gone1",
        &offer,
    )
    .await;
    let ok = recv_status(&mut ws, 200).await;
    let (_, body) = ok.split_once("\r\n\r\n").unwrap();
    browser
        .rtc
        .sdp_api()
        .accept_answer(
            pending,
            str0m::change::SdpAnswer::from_sdp_string(body).unwrap(),
        )
        .unwrap();
    let answered = Answered::of(&ok);
    let dialog = answered.dialog("<sip:erin@example.org>;tag=erintag", "gone-1", "v.invalid");
    send(&mut ws, &dialog.request("ACK", 5, "gack1")).await;
    let (connected, _) = browser.talk(10, Duration::from_secs(5)).await.unwrap();
    assert!(connected);
    assert_eq!(srv.sip_media_calls(), 1);
    // The tab is closed.
    drop(ws);
    let status = far.exit().await;
    assert!(
        status.is_some_and(|s| s.success()),
        "sipp got the BYE and ended its scenario: {status:?}"
    );
    assert_eq!(srv.sip_media_calls(), 0);
    srv.shutdown().await;
}

/// Only the upstream speaks to the gateway's SIP socket (anything else is dropped unanswered);
/// one WebSocket cannot hold more than 8 bridged calls (RTP ports are not a free-for-all).
#[tokio::test]
async fn strangers_are_ignored_and_calls_per_connection_are_bounded() {
    // An upstream that never answers: INVITEs stay pending.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let srv = gateway(silent.local_addr().unwrap()).await;
    let gw = srv.sip_addr.unwrap();
    let stranger = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let options = "OPTIONS sip:x@example.org SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKs1\r\nMax-Forwards: 70\r\nFrom: <sip:s@example.org>;tag=1\r\nTo: <sip:x@example.org>\r\nCall-ID: s-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    stranger.send_to(options.as_bytes(), gw).await.unwrap();
    let mut buf = [0u8; 2048];
    let got = tokio::time::timeout(Duration::from_millis(500), stranger.recv_from(&mut buf)).await;
    assert!(got.is_err(), "no answer to a stranger");

    let mut ws = sip_ws(srv.http).await;
    let (_, offer, _) = Browser::new().await.unwrap();
    for i in 0..9 {
        let head = format!(
            "INVITE sip:phone@example.org SIP/2.0
Via: SIP/2.0/WSS l.invalid;branch=z9hG4bKlim{i}
Max-Forwards: 69
To: <sip:phone@example.org>
From: <sip:frank@example.org>;tag=t{i}
Call-ID: lim-{i}
CSeq: 1 INVITE
Contact: <sip:frank@l.invalid;transport=ws;ob>
Content-Type: application/sdp
Content-Length: {}

",
            offer.len()
        );
        ws.send(Message::text(head.replace('\n', "\r\n") + &offer))
            .await
            .unwrap();
    }
    let busy = recv(&mut ws).await;
    assert!(busy.starts_with("SIP/2.0 486 "), "{busy}");
    assert!(header(&busy, "Call-ID")[0] == "lim-8", "{busy}");
    assert_eq!(srv.sip_media_calls(), 8);
    // Closing the connection releases them (none was answered).
    drop(ws);
    for _ in 0..50 {
        if srv.sip_media_calls() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(srv.sip_media_calls(), 0);
    srv.shutdown().await;
}

/// A TCP upstream that does not reuse our connection: it connects to the address in our Path
/// (`sip_listen`, `transport=tcp`), its request reaches the WebSocket, and the answer goes back
/// on the connection it opened.
#[tokio::test]
async fn a_tcp_upstream_may_connect_to_the_gateway() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pbx = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let srv = gateway_on(pbx.local_addr().unwrap(), "tcp").await;
    let gw = srv.sip_addr.unwrap();
    let mut ws = sip_ws(srv.http).await;
    send(&mut ws, &register("gina", "reg-gina")).await;
    // Our connection: the REGISTER, answered; then the PBX closes it.
    let (mut ours, _) = tokio::time::timeout(WAIT, pbx.accept())
        .await
        .unwrap()
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(WAIT, ours.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let reg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(reg.starts_with("REGISTER "), "{reg}");
    let path = header(&reg, "Path")[0].to_owned();
    assert!(path.contains("transport=tcp"), "{path}");
    let ok = reg
        .split("\r\n")
        .filter(|l| {
            let n = l.split(':').next().unwrap_or("").to_ascii_lowercase();
            ["via", "from", "to", "call-id", "cseq"].contains(&n.as_str())
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    ours.write_all(format!("SIP/2.0 200 OK\r\n{ok}\r\nContent-Length: 0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    recv_status(&mut ws, 200).await;
    drop(ours);

    // The PBX opens its own connection to the gateway's SIP port and sends a MESSAGE.
    let mut theirs = tokio::net::TcpStream::connect(gw).await.unwrap();
    let local = theirs.local_addr().unwrap();
    let msg = format!(
        "MESSAGE sip:gina@df7jal23ls0d.invalid;transport=ws SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKpbxm1\r\nMax-Forwards: 70\r\nRoute: {path}\r\nFrom: <sip:pbx@example.org>;tag=m1\r\nTo: <sip:gina@example.org>\r\nCall-ID: msg-1\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
    );
    theirs.write_all(msg.as_bytes()).await.unwrap();
    let got = recv(&mut ws).await;
    assert!(got.starts_with("MESSAGE "), "{got}");
    let reply = got
        .split("\r\n")
        .filter(|l| {
            let n = l.split(':').next().unwrap_or("").to_ascii_lowercase();
            ["via", "from", "to", "call-id", "cseq"].contains(&n.as_str())
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    send(
        &mut ws,
        &format!(
            "SIP/2.0 200 OK\n{}\nContent-Length: 0\n\n",
            reply.replace("\r\n", "\n")
        ),
    )
    .await;
    let n = tokio::time::timeout(WAIT, theirs.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("SIP/2.0 200 "), "{answer}");
    assert!(header(&answer, "Call-ID")[0] == "msg-1", "{answer}");
    srv.shutdown().await;
}

/// A browser offering PCMA alone, and a phone whose answer lists PCMU first (sipp's fixed
/// answer: `0 8 101`): the gateway takes the first answered codec that was offered.
#[tokio::test]
async fn the_answer_codec_must_be_one_that_was_offered() {
    use icebreaker::bench::sip::G711;
    let far = sipp_far_end();
    let srv = gateway(far.addr).await;
    let mut ws = sip_ws(srv.http).await;
    let (mut browser, offer, pending) =
        Browser::offering("127.0.0.1".parse().unwrap(), Some(G711::Pcma))
            .await
            .unwrap();
    invite_webrtc(
        &mut ws,
        &Caller {
            user: "hal",
            tag: "haltag",
            via_host: "a.invalid",
        },
        "pcma-1",
        1,
        "pcma1",
        &offer,
    )
    .await;
    let ok = recv_status(&mut ws, 200).await;
    let (_, body) = ok.split_once("\r\n\r\n").unwrap();
    assert!(
        body.contains("PCMA/8000") && !body.contains("PCMU"),
        "{body}"
    );
    browser
        .rtc
        .sdp_api()
        .accept_answer(
            pending,
            str0m::change::SdpAnswer::from_sdp_string(body).unwrap(),
        )
        .unwrap();
    let (connected, heard) = browser.talk(60, Duration::from_secs(8)).await.unwrap();
    assert!(connected);
    assert!(heard >= 45, "heard {heard} of 60 PCMA frames back");
    srv.shutdown().await;
}
