//! SIP messages (RFC 3261 §7, §18.3, §20): parsing, stream framing, serialization, and the
//! header edits of an edge proxy and a UA.

use core::fmt;

use crate::digest::{Challenge, Credentials};
use crate::header::{CSeq, Contacts, Header, Headers, NameAddr, Via};
use crate::text::{is_token, is_wsp, parse_decimal};
use crate::uri::Uri;
use crate::Error;

/// Bounds on what the parser accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message (head and body), in bytes.
    pub max_message: usize,
    /// Most header lines (before unfolding).
    pub max_headers: usize,
    /// Longest start line or header (after unfolding), in bytes.
    pub max_line: usize,
}

impl Default for Limits {
    /// 64 KiB messages, 256 header lines, 8 KiB lines.
    fn default() -> Self {
        Limits {
            max_message: 65_535,
            max_headers: 256,
            max_line: 8_192,
        }
    }
}

/// A request method. Methods are case-sensitive (RFC 3261 §7.1); unknown ones are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// REGISTER
    Register,
    /// OPTIONS
    Options,
    /// INFO (RFC 6086)
    Info,
    /// UPDATE (RFC 3311)
    Update,
    /// PRACK (RFC 3262)
    Prack,
    /// SUBSCRIBE (RFC 6665)
    Subscribe,
    /// NOTIFY (RFC 6665)
    Notify,
    /// REFER (RFC 3515)
    Refer,
    /// MESSAGE (RFC 3428)
    Message,
    /// PUBLISH (RFC 3903)
    Publish,
    /// Any other token.
    Other(String),
}

impl Method {
    /// Parses a method token.
    pub fn parse(s: &str) -> Result<Method, Error> {
        Ok(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            s if is_token(s) => Method::Other(s.to_string()),
            _ => return Err(Error::BadStartLine),
        })
    }

    /// The method as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD Request-URI SIP/2.0`
    Request {
        /// The method.
        method: Method,
        /// The Request-URI (a SIP URI has no headers part here).
        uri: Uri,
    },
    /// `SIP/2.0 code reason`
    Response {
        /// The status code, 100 to 699.
        code: u16,
        /// The reason phrase (may be empty).
        reason: String,
    },
}

/// A SIP request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The request or status line.
    pub start: StartLine,
    /// The headers, in order.
    pub headers: Headers,
    /// The body (its length is what [`Message::to_bytes`] writes as Content-Length).
    pub body: Vec<u8>,
}

/// What [`Message::decrement_max_forwards`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxForwards {
    /// The request may be forwarded; Max-Forwards now holds this value.
    Forward(u8),
    /// Max-Forwards was 0: answer 483 Too Many Hops (the message is unchanged).
    Exhausted,
}

/// A keep-alive of RFC 5626 §4.4.1 (or §3.5.1 over datagrams).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// CRLFCRLF: answer with a pong (CRLF) on the same flow.
    Ping,
    /// CRLF alone.
    Pong,
}

/// What [`frame`] found at the start of a stream buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    /// More bytes are needed.
    Incomplete,
    /// A keep-alive of `consumed` bytes.
    KeepAlive {
        /// Which one.
        kind: KeepAlive,
        /// Bytes to drop from the front of the buffer.
        consumed: usize,
    },
    /// A whole message of `consumed` bytes.
    Message {
        /// The message.
        message: Box<Message>,
        /// Bytes to drop from the front of the buffer.
        consumed: usize,
    },
}

/// Whether a datagram or WebSocket frame is a keep-alive (only CR and LF): CRLFCRLF is a
/// ping, CRLF a pong.
pub fn keep_alive(data: &[u8]) -> Option<KeepAlive> {
    match data {
        b"\r\n\r\n" => Some(KeepAlive::Ping),
        b"\r\n" => Some(KeepAlive::Pong),
        _ => None,
    }
}

/// Frames a TCP/TLS stream (RFC 3261 §18.3): looks at the front of `buf` and returns a
/// keep-alive, a whole message (Content-Length is required), or [`Framed::Incomplete`].
/// After an error the stream cannot be resynchronised: close it (after answering 400 if
/// [`error_response`] gives an answer).
pub fn frame(buf: &[u8], limits: &Limits) -> Result<Framed, Error> {
    if buf.starts_with(b"\r\n\r\n") {
        return Ok(Framed::KeepAlive {
            kind: KeepAlive::Ping,
            consumed: 4,
        });
    }
    if buf.starts_with(b"\r\n") {
        if b"\r\n\r\n".starts_with(buf) {
            return Ok(Framed::Incomplete);
        }
        return Ok(Framed::KeepAlive {
            kind: KeepAlive::Pong,
            consumed: 2,
        });
    }
    if buf == b"\r" {
        return Ok(Framed::Incomplete);
    }
    let window = buf.get(..buf.len().min(limits.max_message)).unwrap_or(buf);
    let Some(head_end) = find_head_end(window) else {
        return if buf.len() >= limits.max_message {
            Err(Error::TooLarge)
        } else {
            Ok(Framed::Incomplete)
        };
    };
    let head = parse_head(buf.get(..head_end).unwrap_or(buf), limits)?;
    let cl = content_length(&head.headers, limits)?.ok_or(Error::MissingContentLength)?;
    let total = head_end.checked_add(cl).ok_or(Error::TooLarge)?;
    if total > limits.max_message {
        return Err(Error::TooLarge);
    }
    let Some(body) = buf.get(head_end..total) else {
        return Ok(Framed::Incomplete);
    };
    let message = head.into_message(body.to_vec())?;
    Ok(Framed::Message {
        message: Box::new(message),
        consumed: total,
    })
}

/// The index just after the empty line that ends the head (CRLFCRLF, or LFLF / LF CRLF).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(off) = buf.get(i..)?.iter().position(|&b| b == b'\n') {
        let nl = i + off;
        match buf.get(nl + 1..) {
            Some([b'\n', ..]) => return Some(nl + 2),
            Some([b'\r', b'\n', ..]) => return Some(nl + 3),
            _ => {}
        }
        i = nl + 1;
    }
    None
}

/// A parsed head: start line and headers, not yet validated.
struct Head {
    start: StartLine,
    headers: Headers,
    body_start: usize,
}

impl Head {
    fn into_message(self, body: Vec<u8>) -> Result<Message, Error> {
        let m = Message {
            start: self.start,
            headers: self.headers,
            body,
        };
        m.validate()?;
        Ok(m)
    }
}

/// Splits the head into lines (CRLF or LF), unfolds headers, checks the limits.
fn split_head(buf: &[u8], limits: &Limits) -> Result<(String, Vec<Header>, usize), Error> {
    let mut pos = 0;
    while let Some(b'\r' | b'\n') = buf.get(pos) {
        pos += 1;
    }
    let next_line = |pos: &mut usize| -> Result<Option<&str>, Error> {
        let rest = buf.get(*pos..).unwrap_or(&[]);
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let raw = rest.get(..nl).unwrap_or(&[]);
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        *pos += nl + 1;
        if line.len() > limits.max_line {
            return Err(Error::LineTooLong);
        }
        if line.contains(&b'\r') {
            return Err(Error::BadLine);
        }
        std::str::from_utf8(line)
            .map(Some)
            .map_err(|_| Error::BadLine)
    };
    let start = next_line(&mut pos)?.ok_or(Error::NoHeaderEnd)?.to_string();
    let mut headers: Vec<Header> = Vec::new();
    let mut lines = 0usize;
    loop {
        let line = next_line(&mut pos)?.ok_or(Error::NoHeaderEnd)?;
        if line.is_empty() {
            break;
        }
        lines += 1;
        if lines > limits.max_headers {
            return Err(Error::TooManyHeaders);
        }
        if line.starts_with(is_wsp) {
            let last = headers.last_mut().ok_or(Error::BadHeaderName)?;
            let more = line.trim_matches(is_wsp);
            if !more.is_empty() {
                if !last.value.is_empty() {
                    last.value.push(' ');
                }
                last.value.push_str(more);
            }
            if last.name.len() + last.value.len() + 2 > limits.max_line {
                return Err(Error::LineTooLong);
            }
            continue;
        }
        let (name, value) = line.split_once(':').ok_or(Error::BadHeaderName)?;
        let name = name.trim_end_matches(is_wsp);
        if !is_token(name) {
            return Err(Error::BadHeaderName);
        }
        headers.push(Header {
            name: name.to_string(),
            value: value.trim_matches(is_wsp).to_string(),
        });
    }
    Ok((start, headers, pos))
}

fn parse_start_line(line: &str) -> Result<StartLine, Error> {
    let first = line.split(' ').next().unwrap_or("");
    if first.contains('/') {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        if !first.eq_ignore_ascii_case("SIP/2.0") {
            return Err(
                if first
                    .get(..4)
                    .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
                {
                    Error::BadVersion
                } else {
                    Error::BadStartLine
                },
            );
        }
        let rest = line.get(first.len() + 1..).ok_or(Error::BadStartLine)?;
        let (code, reason) = match rest.split_once(' ') {
            Some((c, r)) => (c, r),
            None => (rest, ""),
        };
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::BadStartLine);
        }
        let code: u16 = code.parse().map_err(|_| Error::BadStartLine)?;
        if !(100..=699).contains(&code) || reason.chars().any(|c| c.is_control() && c != '\t') {
            return Err(Error::BadStartLine);
        }
        return Ok(StartLine::Response {
            code,
            reason: reason.to_string(),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version (single spaces, nothing after).
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, uri, version] = parts.as_slice() else {
        return Err(Error::BadStartLine);
    };
    let method = Method::parse(method)?;
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(
            if version
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
            {
                Error::BadVersion
            } else {
                Error::BadStartLine
            },
        );
    }
    let uri = Uri::parse(uri)?;
    if uri.as_sip().is_some_and(|u| !u.headers.is_empty()) {
        // Headers are not allowed in a Request-URI (RFC 3261 §19.1.5).
        return Err(Error::BadUri);
    }
    Ok(StartLine::Request { method, uri })
}

fn parse_head(buf: &[u8], limits: &Limits) -> Result<Head, Error> {
    if buf.len() > limits.max_message {
        return Err(Error::TooLarge);
    }
    let (start, headers, body_start) = split_head(buf, limits)?;
    Ok(Head {
        start: parse_start_line(&start)?,
        headers: Headers(headers),
        body_start,
    })
}

/// The Content-Length (all copies must agree).
fn content_length(h: &Headers, limits: &Limits) -> Result<Option<usize>, Error> {
    let mut found = None;
    for v in h.get_all("Content-Length") {
        let n = parse_decimal(v, 10)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n <= limits.max_message)
            .ok_or(Error::BadContentLength)?;
        if found.is_some_and(|f| f != n) {
            return Err(Error::BadContentLength);
        }
        found = Some(n);
    }
    Ok(found)
}

fn single<'a>(h: &'a Headers, name: &'static str) -> Result<&'a str, Error> {
    let mut it = h.get_all(name);
    let v = it.next().ok_or(Error::MissingHeader(name))?;
    if it.next().is_some() {
        return Err(Error::BadHeader(name));
    }
    Ok(v)
}

impl Message {
    /// Parses one message from a datagram or a WebSocket frame (RFC 7118: one message per
    /// frame), with the default [`Limits`]. Check [`keep_alive`] first for CRLF keep-alives.
    pub fn parse(buf: &[u8]) -> Result<Message, Error> {
        Self::parse_with(buf, &Limits::default())
    }

    /// Like [`Message::parse`] with explicit limits. A Content-Length larger than the bytes
    /// that follow the head is an error; bytes beyond it are discarded (RFC 3261 §18.3); with
    /// no Content-Length the body is the rest of the datagram.
    pub fn parse_with(buf: &[u8], limits: &Limits) -> Result<Message, Error> {
        let head = parse_head(buf, limits)?;
        let rest = buf.get(head.body_start..).unwrap_or(&[]);
        let body = match content_length(&head.headers, limits)? {
            Some(cl) => rest.get(..cl).ok_or(Error::BadContentLength)?,
            None => rest,
        };
        head.into_message(body.to_vec())
    }

    /// The checks every parsed message passes: the headers a proxy relies on are present and
    /// well-formed (Via, From, To, Call-ID, CSeq matching the method, Max-Forwards, Contact,
    /// Route, Record-Route, Path).
    pub fn validate(&self) -> Result<(), Error> {
        let vias = self.headers.values("Via");
        if vias.is_empty() {
            return Err(Error::MissingHeader("Via"));
        }
        for v in vias {
            Via::parse(v)?;
        }
        NameAddr::parse(single(&self.headers, "From")?, "From")?;
        NameAddr::parse(single(&self.headers, "To")?, "To")?;
        let call_id = single(&self.headers, "Call-ID")?;
        if call_id.is_empty() || call_id.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(Error::BadHeader("Call-ID"));
        }
        let cseq = CSeq::parse(single(&self.headers, "CSeq")?)?;
        if let StartLine::Request { method, .. } = &self.start {
            if cseq.method != method.as_str() {
                return Err(Error::CSeqMismatch);
            }
        }
        self.max_forwards()?;
        self.contacts()?;
        self.routes()?;
        self.record_routes()?;
        self.paths()?;
        Ok(())
    }

    /// Serializes the message, with Content-Length set to the body's length (the first
    /// Content-Length line is rewritten in place, others dropped; one is appended if none).
    /// Headers are written `Name: value`, so the result may be a few bytes longer than what
    /// was parsed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        self.write_to(&mut out);
        out
    }

    /// Appends the serialized message to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let _ = match &self.start {
            StartLine::Request { method, uri } => write!(out, "{method} {uri} SIP/2.0\r\n"),
            StartLine::Response { code, reason } => write!(out, "SIP/2.0 {code} {reason}\r\n"),
        };
        let mut wrote_cl = false;
        for h in self.headers.iter() {
            if crate::header::canonical_name(&h.name).eq_ignore_ascii_case("Content-Length") {
                if !wrote_cl {
                    let _ = write!(out, "{}: {}\r\n", h.name, self.body.len());
                    wrote_cl = true;
                }
                continue;
            }
            let _ = write!(out, "{}: {}\r\n", h.name, h.value);
        }
        if !wrote_cl {
            let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI of a request.
    pub fn request_uri(&self) -> Option<&Uri> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase of a response.
    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(reason),
            StartLine::Request { .. } => None,
        }
    }

    /// Call-ID.
    pub fn call_id(&self) -> Result<&str, Error> {
        single(&self.headers, "Call-ID")
    }

    /// CSeq.
    pub fn cseq(&self) -> Result<CSeq, Error> {
        CSeq::parse(single(&self.headers, "CSeq")?)
    }

    /// From.
    pub fn from(&self) -> Result<NameAddr, Error> {
        NameAddr::parse(single(&self.headers, "From")?, "From")
    }

    /// To.
    pub fn to(&self) -> Result<NameAddr, Error> {
        NameAddr::parse(single(&self.headers, "To")?, "To")
    }

    /// Every Via, topmost first.
    pub fn vias(&self) -> Result<Vec<Via>, Error> {
        self.headers
            .values("Via")
            .into_iter()
            .map(Via::parse)
            .collect()
    }

    /// The topmost Via.
    pub fn top_via(&self) -> Result<Via, Error> {
        Via::parse(
            self.headers
                .values("Via")
                .first()
                .ok_or(Error::MissingHeader("Via"))?,
        )
    }

    /// Contact (an empty list when absent).
    pub fn contacts(&self) -> Result<Contacts, Error> {
        Contacts::parse(&self.headers.values("Contact"))
    }

    fn name_addrs(&self, name: &'static str) -> Result<Vec<NameAddr>, Error> {
        self.headers
            .values(name)
            .into_iter()
            .map(|v| NameAddr::parse(v, name))
            .collect()
    }

    /// Route, topmost first.
    pub fn routes(&self) -> Result<Vec<NameAddr>, Error> {
        self.name_addrs("Route")
    }

    /// Record-Route, topmost first.
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, Error> {
        self.name_addrs("Record-Route")
    }

    /// Path (RFC 3327), topmost first.
    pub fn paths(&self) -> Result<Vec<NameAddr>, Error> {
        self.name_addrs("Path")
    }

    /// Max-Forwards (0 to 255), if present.
    pub fn max_forwards(&self) -> Result<Option<u8>, Error> {
        match self.headers.get("Max-Forwards") {
            None => Ok(None),
            Some(v) => parse_decimal(v, 3)
                .and_then(|n| u8::try_from(n).ok())
                .map(Some)
                .ok_or(Error::BadHeader("Max-Forwards")),
        }
    }

    /// Expires (delta-seconds below 2**32), if present.
    pub fn expires(&self) -> Result<Option<u32>, Error> {
        match self.headers.get("Expires") {
            None => Ok(None),
            Some(v) => parse_decimal(v, 10)
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or(Error::BadHeader("Expires")),
        }
    }

    fn tokens(&self, name: &str) -> Vec<String> {
        self.headers
            .values(name)
            .into_iter()
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Supported option tags (`path`, `outbound`, `gruu`, …).
    pub fn supported(&self) -> Vec<String> {
        self.tokens("Supported")
    }

    /// Require option tags.
    pub fn require(&self) -> Vec<String> {
        self.tokens("Require")
    }

    /// Proxy-Require option tags.
    pub fn proxy_require(&self) -> Vec<String> {
        self.tokens("Proxy-Require")
    }

    /// Content-Type, if present.
    pub fn content_type(&self) -> Option<&str> {
        self.headers.get("Content-Type")
    }

    /// Every WWW-Authenticate challenge (of a 401).
    pub fn www_authenticate(&self) -> Result<Vec<Challenge>, Error> {
        self.headers
            .get_all("WWW-Authenticate")
            .map(Challenge::parse)
            .collect()
    }

    /// Every Proxy-Authenticate challenge (of a 407).
    pub fn proxy_authenticate(&self) -> Result<Vec<Challenge>, Error> {
        self.headers
            .get_all("Proxy-Authenticate")
            .map(Challenge::parse)
            .collect()
    }

    /// Every Authorization header's credentials.
    pub fn authorization(&self) -> Result<Vec<Credentials>, Error> {
        self.headers
            .get_all("Authorization")
            .map(Credentials::parse)
            .collect()
    }

    /// Every Proxy-Authorization header's credentials.
    pub fn proxy_authorization(&self) -> Result<Vec<Credentials>, Error> {
        self.headers
            .get_all("Proxy-Authorization")
            .map(Credentials::parse)
            .collect()
    }

    /// Adds `via` as the topmost Via (a proxy forwarding a request; RFC 3261 §16.6 step 8).
    pub fn push_via(&mut self, via: &Via) {
        self.headers.insert_top("Via", &via.to_string());
    }

    /// Removes the topmost Via (a proxy forwarding a response; RFC 3261 §16.7 step 3) and
    /// returns it; `Ok(None)` when there was none.
    pub fn pop_via(&mut self) -> Result<Option<Via>, Error> {
        self.headers
            .pop_top("Via")
            .map(|v| Via::parse(&v))
            .transpose()
    }

    /// Replaces the topmost Via (to add `received`/`rport`, see [`Via::set_received`]).
    pub fn set_top_via(&mut self, via: &Via) {
        let _ = self.headers.pop_top("Via");
        self.push_via(via);
    }

    /// Adds `route` as the topmost Route (pre-loaded route, RFC 3261 §8.1.2).
    pub fn push_route(&mut self, route: &NameAddr) {
        self.headers.insert_top("Route", &route.to_string());
    }

    /// Removes the topmost Route (a loose router removing its own entry, RFC 3261 §16.4) and
    /// returns it.
    pub fn pop_route(&mut self) -> Result<Option<NameAddr>, Error> {
        self.headers
            .pop_top("Route")
            .map(|v| NameAddr::parse(&v, "Route"))
            .transpose()
    }

    /// Adds `rr` as the topmost Record-Route (RFC 3261 §16.6 step 4).
    pub fn add_record_route(&mut self, rr: &NameAddr) {
        self.headers.insert_top("Record-Route", &rr.to_string());
    }

    /// Adds `path` as the topmost Path (a REGISTER through an edge proxy, RFC 3327 §5.1).
    pub fn add_path(&mut self, path: &NameAddr) {
        self.headers.insert_top("Path", &path.to_string());
    }

    /// Decrements Max-Forwards before forwarding (RFC 3261 §16.6 step 3), adding
    /// `Max-Forwards: 70` when absent. When it is 0, nothing changes and the caller answers
    /// 483 ([`Message::response`]).
    pub fn decrement_max_forwards(&mut self) -> Result<MaxForwards, Error> {
        match self.max_forwards()? {
            Some(0) => Ok(MaxForwards::Exhausted),
            Some(n) => {
                self.headers.set("Max-Forwards", &(n - 1).to_string());
                Ok(MaxForwards::Forward(n - 1))
            }
            None => {
                self.headers.set("Max-Forwards", "70");
                Ok(MaxForwards::Forward(70))
            }
        }
    }

    /// Builds a response to this request (RFC 3261 §8.2.6): the Vias, From, To, Call-ID and
    /// CSeq are copied as they are; `to_tag` is added to To when it has no tag yet; for 101–299
    /// answers to INVITE or SUBSCRIBE the Record-Routes are copied too (§12.1.1). `reason`
    /// defaults to [`reason_phrase`]. No body, Content-Length 0.
    pub fn response(&self, code: u16, reason: Option<&str>, to_tag: Option<&str>) -> Message {
        let mut headers = Headers::new();
        for h in self.headers.iter() {
            let n = crate::header::canonical_name(&h.name);
            let copy = ["Via", "From", "Call-ID", "CSeq"]
                .iter()
                .any(|c| c.eq_ignore_ascii_case(n));
            if copy {
                headers.push(&h.name, &h.value);
            } else if n.eq_ignore_ascii_case("To") {
                let has_tag = NameAddr::parse(&h.value, "To").is_ok_and(|t| t.tag().is_some());
                match to_tag {
                    Some(tag) if !has_tag => {
                        headers.push(&h.name, &format!("{};tag={tag}", h.value))
                    }
                    _ => headers.push(&h.name, &h.value),
                }
            } else if n.eq_ignore_ascii_case("Record-Route")
                && (101..300).contains(&code)
                && matches!(self.method(), Some(Method::Invite | Method::Subscribe))
            {
                headers.push(&h.name, &h.value);
            }
        }
        headers.push("Content-Length", "0");
        Message {
            start: StartLine::Response {
                code,
                reason: reason.unwrap_or(reason_phrase(code)).to_string(),
            },
            headers,
            body: Vec::new(),
        }
    }
}

/// The answer to a request that failed to parse with `err` ("Malformed SIP gets 400"): when
/// the head can still be split into lines and has Via, From, To, Call-ID and CSeq, a response
/// with [`Error::status_code`] that copies them. `None` for responses, ACKs and heads too
/// broken to answer (drop those; close a stream).
pub fn error_response(raw: &[u8], err: &Error) -> Option<Message> {
    let limits = Limits {
        max_message: usize::MAX,
        ..Limits::default()
    };
    let (start, headers, _) = split_head(raw, &limits).ok()?;
    let method = start.split(' ').next()?;
    if !is_token(method) || method == "ACK" {
        return None;
    }
    let headers = Headers(headers);
    let mut out = Headers::new();
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        let mut any = false;
        for v in headers.get_all(name) {
            out.push(name, v);
            any = true;
        }
        if !any {
            return None;
        }
    }
    out.push("Content-Length", "0");
    let code = err.status_code();
    Some(Message {
        start: StartLine::Response {
            code,
            reason: match err {
                Error::BadVersion | Error::TooLarge => reason_phrase(code).to_string(),
                e => format!("Bad Request ({e})")
                    .replace("SIP: ", "")
                    .chars()
                    .filter(|c| !c.is_control())
                    .collect(),
            },
        },
        headers: out,
        body: Vec::new(),
    })
}

/// The standard reason phrase of a status code (RFC 3261 §21 and extensions), or "".
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        423 => "Interval Too Brief",
        430 => "Flow Failed",
        439 => "First Hop Lacks Outbound Support",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const OPTIONS: &str = "OPTIONS sip:bob@example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKhjhs8ass877\r\n\
        Max-Forwards: 70\r\n\
        To: <sip:bob@example.com>\r\n\
        From: Alice <sip:alice@example.com>;tag=1928301774\r\n\
        Call-ID: a84b4c76e66710\r\n\
        CSeq: 63104 OPTIONS\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn parse_and_serialize() {
        let m = Message::parse(OPTIONS.as_bytes()).unwrap();
        assert_eq!(m.method(), Some(&Method::Options));
        assert_eq!(m.to_bytes(), OPTIONS.as_bytes());
        assert_eq!(m.call_id().unwrap(), "a84b4c76e66710");
        assert_eq!(m.max_forwards().unwrap(), Some(70));
    }

    #[test]
    fn start_lines() {
        assert!(matches!(
            parse_start_line("SIP/2.0 100 "),
            Ok(StartLine::Response { code: 100, .. })
        ));
        assert!(matches!(
            parse_start_line("SIP/2.0 180"),
            Ok(StartLine::Response { code: 180, .. })
        ));
        assert_eq!(
            parse_start_line("SIP/2.0 4294967301 x"),
            Err(Error::BadStartLine)
        );
        assert_eq!(parse_start_line("SIP/2.0 099 x"), Err(Error::BadStartLine));
        assert_eq!(parse_start_line("SIP/7.0 200 OK"), Err(Error::BadVersion));
        assert_eq!(
            parse_start_line("INVITE sip:a@b SIP/7.0"),
            Err(Error::BadVersion)
        );
        assert_eq!(
            parse_start_line("INVITE  sip:a@b SIP/2.0"),
            Err(Error::BadStartLine)
        );
        assert_eq!(
            parse_start_line("INVITE sip:a@b SIP/2.0 "),
            Err(Error::BadStartLine)
        );
        assert_eq!(
            parse_start_line("INVITE sip:a@b HTTP/1.1"),
            Err(Error::BadStartLine)
        );
        assert!(parse_start_line("INVITE <sip:a@b> SIP/2.0").is_err());
        assert_eq!(
            parse_start_line("INVITE sip:a@b?x=y SIP/2.0"),
            Err(Error::BadUri)
        );
        assert_eq!(parse_start_line("IN VITE"), Err(Error::BadStartLine));
    }

    #[test]
    fn framing() {
        let l = Limits::default();
        let two = format!("\r\n\r\n{OPTIONS}{OPTIONS}\r\n");
        let b = two.as_bytes();
        assert_eq!(
            frame(b, &l).unwrap(),
            Framed::KeepAlive {
                kind: KeepAlive::Ping,
                consumed: 4
            }
        );
        let Framed::Message { consumed, .. } = frame(&b[4..], &l).unwrap() else {
            panic!()
        };
        assert_eq!(consumed, OPTIONS.len());
        let rest = &b[4 + consumed..];
        assert!(matches!(frame(rest, &l).unwrap(), Framed::Message { .. }));
        let tail = &rest[OPTIONS.len()..];
        assert_eq!(frame(tail, &l).unwrap(), Framed::Incomplete);
        assert_eq!(
            frame(b"\r\nINV", &l).unwrap(),
            Framed::KeepAlive {
                kind: KeepAlive::Pong,
                consumed: 2
            }
        );
        for cut in 0..OPTIONS.len() {
            assert_eq!(
                frame(&OPTIONS.as_bytes()[..cut], &l).unwrap(),
                Framed::Incomplete,
                "{cut}"
            );
        }
        let no_cl = OPTIONS.replace("Content-Length: 0\r\n", "");
        assert_eq!(
            frame(no_cl.as_bytes(), &l),
            Err(Error::MissingContentLength)
        );
        let small = Limits {
            max_message: 100,
            ..l
        };
        assert_eq!(frame(OPTIONS.as_bytes(), &small), Err(Error::TooLarge));
        assert_eq!(frame(&[b'x'; 200], &small), Err(Error::TooLarge));
    }

    #[test]
    fn proxy_edits() {
        let mut m = Message::parse(OPTIONS.as_bytes()).unwrap();
        m.push_via(&Via::new(
            "UDP",
            "proxy.example.net",
            Some(5060),
            "z9hG4bKp1",
        ));
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bKp1"));
        assert_eq!(m.vias().unwrap().len(), 2);
        assert_eq!(m.decrement_max_forwards(), Ok(MaxForwards::Forward(69)));
        let popped = m.pop_via().unwrap().unwrap();
        assert_eq!(popped.host, "proxy.example.net");
        let r = NameAddr::parse("<sip:edge.example.net;lr>", "Route").unwrap();
        m.push_route(&r);
        m.push_route(&NameAddr::parse("<sip:first.example.net;lr>", "Route").unwrap());
        assert_eq!(m.routes().unwrap().len(), 2);
        assert_eq!(
            m.pop_route().unwrap().unwrap().sip_uri().unwrap().host,
            "first.example.net"
        );
        m.add_record_route(&r);
        m.add_path(&r);
        let again = Message::parse(&m.to_bytes()).unwrap();
        assert_eq!(again, m);
        m.headers.set("Max-Forwards", "0");
        assert_eq!(m.decrement_max_forwards(), Ok(MaxForwards::Exhausted));
        let resp = m.response(483, None, Some("srv1"));
        assert_eq!(resp.status(), Some(483));
        assert_eq!(resp.reason(), Some("Too Many Hops"));
        assert_eq!(resp.to().unwrap().tag(), Some("srv1"));
        assert!(resp.record_routes().unwrap().is_empty());
        assert_eq!(resp.call_id().unwrap(), "a84b4c76e66710");
        Message::parse(&resp.to_bytes()).unwrap();
    }

    #[test]
    fn error_responses() {
        let bad = OPTIONS.replace("CSeq: 63104 OPTIONS", "CSeq: 63104 INVITE");
        let err = Message::parse(bad.as_bytes()).unwrap_err();
        assert_eq!(err, Error::CSeqMismatch);
        let r = error_response(bad.as_bytes(), &err).unwrap();
        assert_eq!(r.status(), Some(400));
        let r = Message::parse(&r.to_bytes()).unwrap();
        assert_eq!(r.vias().unwrap().len(), 1);
        let v = OPTIONS.replace("SIP/2.0\r\n", "SIP/3.0\r\n");
        let err = Message::parse(v.as_bytes()).unwrap_err();
        assert_eq!(
            error_response(v.as_bytes(), &err).unwrap().status(),
            Some(505)
        );
        assert!(error_response(b"SIP/2.0 200 OK\r\n\r\n", &Error::BadStartLine).is_none());
        assert!(error_response(b"garbage", &Error::NoHeaderEnd).is_none());
    }
}
