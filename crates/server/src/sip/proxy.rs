//! The edge proxy between SIP-over-WebSocket clients (RFC 7118: JsSIP, SIP.js) and one
//! configured SIP server or trunk ("upstream"). No I/O: messages in, messages out with where
//! they go; `sip/mod.rs` does the sockets.
//!
//! - **Client → upstream**: Max-Forwards, our own Route entries popped, our Via on top with a
//!   branch that names the client's flow (a keyed token, so responses find the WebSocket
//!   without state) and is a function of the client's branch (a CANCEL or a non-2xx ACK gets
//!   the INVITE's branch, RFC 3261 §16.10/§17.1.1.3); dialog-forming requests get a double
//!   Record-Route (one URI per side, both carrying the flow token); a REGISTER gets a Path
//!   (RFC 3327, `ob`: RFC 5626 outbound) so that the registrar routes incoming requests
//!   through us to the right WebSocket. Everything goes to the upstream (the next hop).
//! - **Upstream → client, responses**: our Via popped, its branch names the flow.
//! - **Upstream → client, requests** (incoming calls, in-dialog requests): the flow comes from
//!   our Route entry (Path or Record-Route); `received`/`rport` added to the sender's Via, our
//!   Via (`WSS`) on top, a double Record-Route for dialog-forming ones.
//! - **Client → upstream, responses**: our Via popped, sent where the next Via says
//!   (`received`/`rport`, else sent-by when it is an address, else the upstream).
//! - Malformed SIP: a request gets its 4xx/5xx answer (`error_response`), anything else is
//!   dropped; nothing else is disturbed.

use std::net::{IpAddr, SocketAddr};

use icebreaker_sip::{
    error_response, MaxForwards, Message, Method, NameAddr, Params, SipUri, Uri, Via,
};
use sha2::{Digest, Sha256};

/// A WebSocket client's connection.
pub type FlowId = u64;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// To the client on this WebSocket.
    Flow(FlowId),
    /// To the upstream side, this address.
    Upstream(SocketAddr),
}

/// A message to send.
#[derive(Debug, Clone)]
pub struct Out {
    pub dest: Dest,
    pub msg: Message,
}

/// What the proxy needs to know about the world.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The upstream's address (the next hop of every client request).
    pub upstream: SocketAddr,
    /// The transport toward the upstream, as in a Via (`UDP`, `TCP`, `TLS`).
    pub upstream_transport: &'static str,
    /// Our address as the upstream sees it (Via sent-by, Record-Route, Path).
    pub local: SocketAddr,
    /// Our host as the WebSocket clients see it (Via and Record-Route toward them).
    pub ws_host: String,
    /// `true`: the clients reach us over TLS (`WSS` in our Via toward them).
    pub ws_secure: bool,
    /// The key of the flow tokens.
    pub secret: [u8; 32],
}

/// The magic cookie of RFC 3261 branches.
const COOKIE: &str = "z9hG4bK";
/// Our branches: `z9hG4bK` + this + token + `.` + hash.
const OURS: &str = "-ib-";

/// The edge proxy.
#[derive(Debug)]
pub struct EdgeProxy {
    cfg: ProxyConfig,
}

impl EdgeProxy {
    pub fn new(cfg: ProxyConfig) -> Self {
        EdgeProxy { cfg }
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.cfg
    }

    /// The token naming `flow`: its number and a keyed check (the upstream cannot make up a
    /// flow it was never given).
    fn token(&self, flow: FlowId) -> String {
        format!("{flow:x}x{}", self.mac(&flow.to_be_bytes()))
    }

    fn mac(&self, data: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(self.cfg.secret);
        h.update(data);
        let d = h.finalize();
        d.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }

    /// The flow of a token, when the token is ours.
    fn flow_of(&self, token: &str) -> Option<FlowId> {
        let (id, _) = token.split_once('x')?;
        let flow = FlowId::from_str_radix(id, 16).ok()?;
        (self.token(flow) == token).then_some(flow)
    }

    /// Our branch toward the upstream for a client request with branch `client_branch`.
    fn branch_up(&self, flow: FlowId, client_branch: &str) -> String {
        format!(
            "{COOKIE}{OURS}{}.{}",
            self.token(flow),
            self.mac(client_branch.as_bytes())
        )
    }

    /// The flow named by one of our branches.
    fn flow_of_branch(&self, branch: &str) -> Option<FlowId> {
        let rest = branch.strip_prefix(COOKIE)?.strip_prefix(OURS)?;
        let (token, _) = rest.split_once('.')?;
        self.flow_of(token)
    }

    /// Our URI on the upstream side, carrying `token` in its user part (and the transport
    /// unless UDP: `transport=tcp`, `transport=tls`).
    fn uri_up(&self, token: &str) -> SipUri {
        let mut u = SipUri::new(&host_of(self.cfg.local.ip()), Some(self.cfg.local.port()));
        u.user = Some(token.to_owned());
        if let Some(t) = transport_param(self.cfg.upstream_transport) {
            u.params.push("transport", Some(t));
        }
        u.params.push("lr", None);
        u
    }

    /// Our URI on the WebSocket side.
    fn uri_ws(&self, token: &str) -> SipUri {
        let mut u = SipUri::new(&self.cfg.ws_host, None);
        u.user = Some(token.to_owned());
        u.params.push(
            "transport",
            Some(if self.cfg.ws_secure { "wss" } else { "ws" }),
        );
        u.params.push("lr", None);
        u
    }

    /// Whether `uri` is one of ours; its flow token then.
    fn our_route(&self, na: &NameAddr) -> Option<Option<FlowId>> {
        let u = na.uri.as_sip()?;
        let ours_up = u.host.eq_ignore_ascii_case(&host_of(self.cfg.local.ip()))
            && u.port.unwrap_or_else(|| default_port(u)) == self.cfg.local.port();
        let ours_ws = u.host.eq_ignore_ascii_case(&self.cfg.ws_host);
        if !(ours_up || ours_ws) {
            return None;
        }
        Some(u.user.as_deref().and_then(|t| self.flow_of(t)))
    }

    /// Pops our entries off the top of the Route set; the flow they name, if any.
    fn pop_our_routes(&self, msg: &mut Message) -> Option<FlowId> {
        let mut flow = None;
        for _ in 0..2 {
            let Ok(routes) = msg.routes() else { break };
            let Some(first) = routes.first() else { break };
            match self.our_route(first) {
                Some(f) => {
                    flow = flow.or(f);
                    let _ = msg.pop_route();
                }
                None => break,
            }
        }
        flow
    }

    /// A datagram/frame from client `flow`.
    pub fn from_client(&mut self, flow: FlowId, raw: &[u8]) -> Vec<Out> {
        let mut msg = match Message::parse(raw) {
            Ok(m) => m,
            Err(e) => return refuse(raw, &e, Dest::Flow(flow)),
        };
        if msg.is_request() {
            self.client_request(flow, msg)
        } else {
            // A response to a request we forwarded from the upstream: our Via on top.
            match msg.pop_via() {
                Ok(Some(v)) if v.branch().is_some_and(|b| b.starts_with(COOKIE)) => {}
                _ => return Vec::new(),
            }
            let Ok(next) = msg.top_via() else {
                return Vec::new();
            };
            let dest = self.via_dest(&next);
            vec![Out {
                dest: Dest::Upstream(dest),
                msg,
            }]
        }
    }

    fn client_request(&mut self, flow: FlowId, mut msg: Message) -> Vec<Out> {
        let method = msg.method().cloned();
        match msg.decrement_max_forwards() {
            Ok(MaxForwards::Forward(_)) => {}
            Ok(MaxForwards::Exhausted) => return answer(&msg, 483, Dest::Flow(flow)),
            Err(_) => return answer(&msg, 400, Dest::Flow(flow)),
        }
        let Ok(top) = msg.top_via() else {
            return answer(&msg, 400, Dest::Flow(flow));
        };
        let client_branch = top.branch().unwrap_or_default().to_owned();
        self.pop_our_routes(&mut msg);
        let token = self.token(flow);
        let via = Via::new(
            self.cfg.upstream_transport,
            &host_of(self.cfg.local.ip()),
            Some(self.cfg.local.port()),
            &self.branch_up(flow, &client_branch),
        );
        let mut via = via;
        via.params.push("rport", None);
        msg.push_via(&via);
        match method {
            Some(Method::Register) => {
                let mut p = NameAddr::new(Uri::Sip(self.uri_up(&token)));
                if let Uri::Sip(u) = &mut p.uri {
                    u.params.push("ob", None);
                }
                p.params = Params::default();
                msg.add_path(&p);
            }
            Some(m) if dialog_forming(&m) && !has_to_tag(&msg) => {
                // The UAS (upstream side) uses the Record-Routes top first: ours toward it on
                // top, ours toward the client under it.
                msg.add_record_route(&NameAddr::new(Uri::Sip(self.uri_ws(&token))));
                msg.add_record_route(&NameAddr::new(Uri::Sip(self.uri_up(&token))));
            }
            _ => {}
        }
        vec![Out {
            dest: Dest::Upstream(self.cfg.upstream),
            msg,
        }]
    }

    /// A datagram/message from the upstream side, from `src`.
    pub fn from_upstream(&mut self, src: SocketAddr, raw: &[u8]) -> Vec<Out> {
        let mut msg = match Message::parse(raw) {
            Ok(m) => m,
            Err(e) => return refuse(raw, &e, Dest::Upstream(src)),
        };
        if !msg.is_request() {
            let flow = match msg.pop_via() {
                Ok(Some(v)) => v.branch().and_then(|b| self.flow_of_branch(b)),
                _ => None,
            };
            return match flow {
                Some(flow) => vec![Out {
                    dest: Dest::Flow(flow),
                    msg,
                }],
                None => Vec::new(),
            };
        }
        let method = msg.method().cloned();
        // Where the answers go: the sender's Via gets received/rport.
        let Ok(mut top) = msg.top_via() else {
            return answer(&msg, 400, Dest::Upstream(src));
        };
        top.set_received(src.ip(), src.port());
        msg.set_top_via(&top);
        match msg.decrement_max_forwards() {
            Ok(MaxForwards::Forward(_)) => {}
            Ok(MaxForwards::Exhausted) => return answer(&msg, 483, Dest::Upstream(src)),
            Err(_) => return answer(&msg, 400, Dest::Upstream(src)),
        }
        let flow = self
            .pop_our_routes(&mut msg)
            .or_else(|| self.flow_in_request_uri(&msg));
        let Some(flow) = flow else {
            // Not for one of our clients (or the token is not ours).
            if matches!(method, Some(Method::Ack)) {
                return Vec::new();
            }
            return answer(&msg, 404, Dest::Upstream(src));
        };
        let token = self.token(flow);
        let branch = format!(
            "{COOKIE}{OURS}{}.{}",
            token,
            self.mac(top.branch().unwrap_or_default().as_bytes())
        );
        let via = Via::new(
            if self.cfg.ws_secure { "WSS" } else { "WS" },
            &self.cfg.ws_host,
            None,
            &branch,
        );
        msg.push_via(&via);
        if let Some(m) = &method {
            if dialog_forming(m) && !has_to_tag(&msg) {
                // The UAS (the client) uses them top first: toward it on top.
                msg.add_record_route(&NameAddr::new(Uri::Sip(self.uri_up(&token))));
                msg.add_record_route(&NameAddr::new(Uri::Sip(self.uri_ws(&token))));
            }
        }
        vec![Out {
            dest: Dest::Flow(flow),
            msg,
        }]
    }

    /// A request whose Request-URI is one of our URIs (a registrar that does not do Path
    /// but uses the contact we gave, or a route set that ended on us).
    fn flow_in_request_uri(&self, msg: &Message) -> Option<FlowId> {
        let Some(Uri::Sip(u)) = msg.request_uri() else {
            return None;
        };
        let na = NameAddr::new(Uri::Sip(u.clone()));
        self.our_route(&na).flatten()
    }

    /// Where a response goes: the address in `via` (received/rport, else sent-by when it is
    /// an address), else the upstream.
    fn via_dest(&self, via: &Via) -> SocketAddr {
        let host = via
            .received()
            .map(str::to_owned)
            .unwrap_or_else(|| via.host.clone());
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>();
        let port = via.rport().flatten().or(via.port).unwrap_or(5060);
        match ip {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => self.cfg.upstream,
        }
    }
}

/// A malformed message: requests get their error answer, everything else is dropped.
fn refuse(raw: &[u8], e: &icebreaker_sip::Error, dest: Dest) -> Vec<Out> {
    match error_response(raw, e) {
        Some(msg) => vec![Out { dest, msg }],
        None => Vec::new(),
    }
}

/// A response `code` to request `req`, to `dest` (never to an ACK).
fn answer(req: &Message, code: u16, dest: Dest) -> Vec<Out> {
    if matches!(req.method(), Some(Method::Ack)) {
        return Vec::new();
    }
    vec![Out {
        dest,
        msg: req.response(code, None, None),
    }]
}

fn dialog_forming(m: &Method) -> bool {
    matches!(m, Method::Invite | Method::Subscribe | Method::Refer)
}

fn has_to_tag(msg: &Message) -> bool {
    msg.to().is_ok_and(|t| t.tag().is_some())
}

/// The `transport` URI parameter for a Via transport toward the upstream: none for UDP (the
/// default), `tcp`, `tls`. TLS is written `sip:…;transport=tls`, as Kamailio, OpenSIPS and
/// Asterisk write their own Record-Route and Path over TLS, rather than `sips:` (which would
/// ask for TLS on every hop up to the target, RFC 5630, and the client's hop is a WebSocket).
pub fn transport_param(transport: &str) -> Option<&'static str> {
    match transport {
        "TCP" => Some("tcp"),
        "TLS" => Some("tls"),
        _ => None,
    }
}

/// The port a SIP URI without one means: 5061 for `sips:` and `transport=tls`, else 5060.
fn default_port(u: &SipUri) -> u16 {
    let tls = u.scheme == icebreaker_sip::Scheme::Sips
        || u.params
            .get("transport")
            .flatten()
            .is_some_and(|t| t.eq_ignore_ascii_case("tls"));
    if tls {
        5061
    } else {
        5060
    }
}

/// An address as a SIP host (IPv6 in brackets).
pub fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn proxy() -> EdgeProxy {
        EdgeProxy::new(ProxyConfig {
            upstream: "192.0.2.10:5060".parse().unwrap(),
            upstream_transport: "UDP",
            local: "192.0.2.1:5060".parse().unwrap(),
            ws_host: "icebreaker.invalid".into(),
            ws_secure: false,
            secret: [7; 32],
        })
    }

    fn request(method: &str, branch: &str, extra: &str) -> Vec<u8> {
        format!(
            "{method} sip:bob@example.org SIP/2.0\r\nVia: SIP/2.0/WSS a.invalid;branch={branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@example.org>;tag=1\r\nTo: <sip:bob@example.org>\r\n\
             Call-ID: c1\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn top_branch(out: &[Out]) -> String {
        out[0].msg.top_via().unwrap().branch().unwrap().to_owned()
    }

    #[test]
    fn a_cancel_gets_the_branch_of_its_invite_and_flows_differ() {
        let mut p = proxy();
        let invite = p.from_client(3, &request("INVITE", "z9hG4bKx", ""));
        let cancel = p.from_client(3, &request("CANCEL", "z9hG4bKx", ""));
        assert_eq!(top_branch(&invite), top_branch(&cancel));
        let other = p.from_client(4, &request("INVITE", "z9hG4bKx", ""));
        assert_ne!(top_branch(&invite), top_branch(&other));
        assert_eq!(
            invite[0].dest,
            Dest::Upstream("192.0.2.10:5060".parse().unwrap())
        );
        // Double Record-Route on the INVITE, none on the CANCEL.
        assert_eq!(invite[0].msg.record_routes().unwrap().len(), 2);
        assert!(cancel[0].msg.record_routes().unwrap().is_empty());
    }

    #[test]
    fn responses_find_their_flow_and_forged_tokens_do_not() {
        let mut p = proxy();
        let out = p.from_client(9, &request("OPTIONS", "z9hG4bKo", ""));
        let fwd = &out[0].msg;
        let resp = fwd.response(200, None, Some("t")).to_bytes();
        let back = p.from_upstream("192.0.2.10:5060".parse().unwrap(), &resp);
        assert_eq!(back[0].dest, Dest::Flow(9));
        assert_eq!(back[0].msg.vias().unwrap().len(), 1);
        // The same response with the flow number changed in the token: dropped.
        let forged = String::from_utf8(resp)
            .unwrap()
            .replace(&format!("{OURS}9x"), &format!("{OURS}8x"));
        assert!(p
            .from_upstream("192.0.2.10:5060".parse().unwrap(), forged.as_bytes())
            .is_empty());
        // An incoming request that names no flow of ours: 404 to the sender.
        let stray = p.from_upstream(
            "192.0.2.10:5060".parse().unwrap(),
            &request("INVITE", "z9hG4bKs", ""),
        );
        assert_eq!(stray[0].msg.status(), Some(404));
    }

    #[test]
    fn bad_input_is_answered_where_it_came_from() {
        let mut p = proxy();
        let out = p.from_client(1, b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/WSS a.invalid;branch=z9hG4bKq\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: q\r\nCSeq: x INVITE\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(out[0].dest, Dest::Flow(1));
        assert_eq!(out[0].msg.status(), Some(400));
        assert!(p.from_client(1, b"\x00\xffgarbage").is_empty());
        let out = p.from_client(
            1,
            &request("OPTIONS", "z9hG4bKm", "").replace_max_forwards(),
        );
        assert_eq!(out[0].msg.status(), Some(483));
    }

    trait MaxForwardsZero {
        fn replace_max_forwards(self) -> Vec<u8>;
    }

    impl MaxForwardsZero for Vec<u8> {
        fn replace_max_forwards(self) -> Vec<u8> {
            String::from_utf8(self)
                .unwrap()
                .replace("Max-Forwards: 70", "Max-Forwards: 0")
                .into_bytes()
        }
    }

    #[test]
    fn toward_a_tls_upstream_via_path_and_record_route_say_tls() {
        let mut p = EdgeProxy::new(ProxyConfig {
            upstream_transport: "TLS",
            ..proxy().cfg
        });
        let reg = p.from_client(
            5,
            &request(
                "REGISTER",
                "z9hG4bKr",
                "Contact: <sip:alice@a.invalid;transport=ws>\r\n",
            ),
        );
        let via = reg[0].msg.top_via().unwrap();
        assert_eq!(via.transport, "TLS");
        let path = reg[0].msg.paths().unwrap();
        let uri = path[0].uri.as_sip().unwrap();
        assert_eq!(uri.scheme, icebreaker_sip::Scheme::Sip);
        assert_eq!(uri.params.get("transport"), Some(Some("tls")));
        assert_eq!(uri.port, Some(5060));
        let invite = p.from_client(5, &request("INVITE", "z9hG4bKi", ""));
        let text = String::from_utf8(invite[0].msg.to_bytes()).unwrap();
        assert!(text.contains("Via: SIP/2.0/TLS 192.0.2.1:5060;"), "{text}");
        let rr = invite[0].msg.record_routes().unwrap();
        let up = rr[0].uri.as_sip().unwrap();
        assert_eq!(up.params.get("transport"), Some(Some("tls")));
        assert!(rr[1].uri.to_string().contains(";transport=ws"));
        // A request from the upstream along that Record-Route (a BYE) finds the flow.
        let bye = format!(
            "BYE sip:alice@a.invalid;transport=ws SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bKb\r\n\
             Route: <{}>\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.org>;tag=2\r\n\
             To: <sip:alice@example.org>;tag=1\r\nCall-ID: c1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
            rr[0].uri
        );
        let out = p.from_upstream("192.0.2.10:5061".parse().unwrap(), bye.as_bytes());
        assert_eq!(out[0].dest, Dest::Flow(5));
        assert_eq!(transport_param("UDP"), None);
        assert_eq!(transport_param("TCP"), Some("tcp"));
    }

    #[test]
    fn a_register_gets_our_path_with_the_flow_token() {
        let mut p = proxy();
        let out = p.from_client(
            5,
            &request(
                "REGISTER",
                "z9hG4bKr",
                "Contact: <sip:alice@a.invalid;transport=ws>\r\n",
            ),
        );
        let path = out[0].msg.paths().unwrap();
        let uri = path[0].uri.as_sip().unwrap();
        assert_eq!(uri.host, "192.0.2.1");
        assert!(uri.params.has("lr") && uri.params.has("ob"));
        assert_eq!(p.flow_of(uri.user.as_deref().unwrap()), Some(5));
    }
}
