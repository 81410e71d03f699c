//! Headers kept in order, and the typed header values an edge proxy needs.

use core::fmt;

use crate::text::{is_token, is_token_char, is_wsp, parse_decimal, quote, unquote, Cursor};
use crate::uri::{parse_hostport, SipUri, Uri};
use crate::Error;

/// Compact header forms (RFC 3261 §7.3.3 and the extensions that define one).
const COMPACT: &[(char, &str)] = &[
    ('a', "Accept-Contact"),
    ('b', "Referred-By"),
    ('c', "Content-Type"),
    ('d', "Request-Disposition"),
    ('e', "Content-Encoding"),
    ('f', "From"),
    ('i', "Call-ID"),
    ('j', "Reject-Contact"),
    ('k', "Supported"),
    ('l', "Content-Length"),
    ('m', "Contact"),
    ('o', "Event"),
    ('r', "Refer-To"),
    ('s', "Subject"),
    ('t', "To"),
    ('u', "Allow-Events"),
    ('v', "Via"),
    ('x', "Session-Expires"),
    ('y', "Identity"),
];

/// Headers whose values are comma-separated lists (RFC 3261 §7.3.1): their values may be
/// split over several lines or combined on one.
const LIST_HEADERS: &[&str] = &[
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Call-Info",
    "Contact",
    "Content-Encoding",
    "Content-Language",
    "Error-Info",
    "In-Reply-To",
    "Path",
    "Proxy-Require",
    "Reason",
    "Record-Route",
    "Reject-Contact",
    "Require",
    "Route",
    "Service-Route",
    "Supported",
    "Unsupported",
    "Via",
    "Warning",
];

/// The full name of a header: compact forms (`v`, `f`, `t`, `i`, `m`, `l`, `c`, `k`, `s`, `e`,
/// `o`, `r`, `u`, …) map to their long names, other names are returned unchanged.
pub fn canonical_name(name: &str) -> &str {
    let mut chars = name.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        let c = c.to_ascii_lowercase();
        if let Some((_, full)) = COMPACT.iter().find(|(k, _)| *k == c) {
            return full;
        }
    }
    name
}

fn names_match(a: &str, b: &str) -> bool {
    canonical_name(a).eq_ignore_ascii_case(canonical_name(b))
}

fn is_list_header(name: &str) -> bool {
    let n = canonical_name(name);
    LIST_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(n))
}

/// Splits a comma-separated header value into its elements, trimmed, not splitting inside
/// quoted strings or `<…>`. Empty elements are kept (so that callers can reject them).
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut in_angle = false;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
            continue;
        }
        match c {
            '"' if !in_angle => in_quotes = true,
            '<' => in_angle = true,
            '>' => in_angle = false,
            ',' if !in_angle => {
                out.push(value.get(start..i).unwrap_or("").trim_matches(is_wsp));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value.get(start..).unwrap_or("").trim_matches(is_wsp));
    out
}

/// One header line: its name as received, and its value unfolded and trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name as written (`Via`, `v`, `cAlL-iD`, …).
    pub name: String,
    /// The value, with line folding replaced by single spaces and outer whitespace trimmed.
    pub value: String,
}

/// The headers of a message, in order. Lookups are case-insensitive and treat compact forms as
/// their long names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub(crate) Vec<Header>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// Every header line, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    /// The number of header lines.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of the first line named `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).next()
    }

    /// The values of every line named `name`, unsplit.
    pub fn get_all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.0
            .iter()
            .filter(move |h| names_match(&h.name, name))
            .map(|h| h.value.as_str())
    }

    /// The values of `name`: for list headers (Via, Route, Contact, Supported, …) every
    /// comma-separated element of every line, in order; for others, each line's value.
    pub fn values<'a>(&'a self, name: &str) -> Vec<&'a str> {
        if is_list_header(name) {
            self.get_all(name).flat_map(split_list).collect()
        } else {
            self.get_all(name).collect()
        }
    }

    /// Whether a line named `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Appends a line.
    pub fn push(&mut self, name: &str, value: &str) {
        self.0.push(Header {
            name: name.to_string(),
            value: value.to_string(),
        });
    }

    /// Inserts a line at `index` (clamped to the end).
    pub fn insert(&mut self, index: usize, name: &str, value: &str) {
        let index = index.min(self.0.len());
        self.0.insert(
            index,
            Header {
                name: name.to_string(),
                value: value.to_string(),
            },
        );
    }

    /// Replaces the first line named `name` (keeping its position) and removes the others, or
    /// appends one.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.position(name) {
            Some(i) => {
                if let Some(h) = self.0.get_mut(i) {
                    h.value = value.to_string();
                }
                let mut seen = 0usize;
                self.0.retain(|h| {
                    if names_match(&h.name, name) {
                        seen += 1;
                        seen == 1
                    } else {
                        true
                    }
                });
            }
            None => self.push(name, value),
        }
    }

    /// Removes every line named `name`, returning how many there were.
    pub fn remove_all(&mut self, name: &str) -> usize {
        let before = self.0.len();
        self.0.retain(|h| !names_match(&h.name, name));
        before - self.0.len()
    }

    /// The index of the first line named `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|h| names_match(&h.name, name))
    }

    /// Adds `value` as the first element of the list header `name`: a new line in front of the
    /// first existing one (or appended when there is none).
    pub fn insert_top(&mut self, name: &str, value: &str) {
        let i = self.position(name).unwrap_or(self.0.len());
        self.insert(i, name, value);
    }

    /// Removes and returns the first element of the list header `name`, rewriting its line
    /// (or removing it when it held one element).
    pub fn pop_top(&mut self, name: &str) -> Option<String> {
        let i = self.position(name)?;
        let h = self.0.get_mut(i)?;
        let parts = split_list(&h.value);
        let first = parts.first()?.to_string();
        if parts.len() <= 1 {
            self.0.remove(i);
        } else {
            h.value = parts.get(1..).unwrap_or(&[]).join(", ");
        }
        Some(first)
    }
}

/// Parameters (`;name=value`) of a header value or a URI, in order. Values are kept as
/// written, quotes included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, Option<String>)>);

impl Params {
    /// The raw value of the first parameter named `name` (case-insensitive): `Some(None)` for a
    /// parameter without a value.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// The value of `name` with quotes and quoted-pairs removed.
    pub fn get_unquoted(&self, name: &str) -> Option<String> {
        self.get(name).flatten().map(unquote)
    }

    /// Whether the parameter is present (with or without a value).
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Appends a parameter (value written as given).
    pub fn push(&mut self, name: &str, value: Option<&str>) {
        self.0.push((name.to_string(), value.map(str::to_string)));
    }

    /// Sets a parameter: replaces the value of the first one named `name`, or appends.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        match self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(p) => p.1 = value.map(str::to_string),
            None => self.push(name, value),
        }
    }

    /// Removes every parameter named `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// All parameters, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_deref()))
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses `*( SEMI generic-param )` at the cursor, to the end of the input.
    pub(crate) fn parse_header_params(
        c: &mut Cursor<'_>,
        what: &'static str,
    ) -> Result<Params, Error> {
        let mut p = Params::default();
        loop {
            c.skip_ws();
            if c.is_empty() {
                return Ok(p);
            }
            if !c.eat(';') {
                return Err(Error::BadHeader(what));
            }
            c.skip_ws();
            let name = c.take_while(is_token_char);
            if name.is_empty() {
                return Err(Error::BadHeader(what));
            }
            c.skip_ws();
            let value = if c.eat('=') {
                c.skip_ws();
                if c.peek() == Some('"') {
                    let (raw, _) = c.quoted().ok_or(Error::BadHeader(what))?;
                    Some(raw)
                } else {
                    let v = c.take_while(|ch| is_token_char(ch) || matches!(ch, '[' | ']' | ':'));
                    if v.is_empty() {
                        return Err(Error::BadHeader(what));
                    }
                    Some(v)
                }
            } else {
                None
            };
            p.push(name, value);
        }
    }
}

impl fmt::Display for Params {
    /// Writes `;name[=value]` for each parameter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, v) in &self.0 {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

/// A name-addr or addr-spec with header parameters: From, To, Contact, Route, Record-Route,
/// Path (RFC 3261 §20.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, unquoted (`None` when absent).
    pub display_name: Option<String>,
    /// The URI.
    pub uri: Uri,
    /// Header parameters (`tag`, `expires`, `+sip.instance`, …).
    pub params: Params,
}

impl NameAddr {
    /// A name-addr `<uri>` with no display name and no parameters.
    pub fn new(uri: Uri) -> Self {
        NameAddr {
            display_name: None,
            uri,
            params: Params::default(),
        }
    }

    /// Parses one name-addr / addr-spec with parameters. `what` names the header in errors.
    pub fn parse(s: &str, what: &'static str) -> Result<NameAddr, Error> {
        let bad = Error::BadHeader(what);
        let mut c = Cursor::new(s.trim_matches(is_wsp));
        let mut display_name = None;
        let angle = if c.peek() == Some('"') {
            let (_, v) = c.quoted().ok_or(bad.clone())?;
            display_name = Some(v);
            c.skip_ws();
            if c.peek() != Some('<') {
                return Err(bad);
            }
            true
        } else if let Some(lt) = c.rest().find('<') {
            // `*(token LWS) <` : a display name made of tokens, or none.
            let name = c.rest().get(..lt).unwrap_or("").trim_matches(is_wsp);
            if !name.is_empty() {
                if !name.split(is_wsp).filter(|t| !t.is_empty()).all(is_token) {
                    return Err(bad);
                }
                display_name = Some(name.to_string());
            }
            c = Cursor::new(c.rest().get(lt..).unwrap_or(""));
            true
        } else {
            false
        };
        let uri = if angle {
            c.eat('<');
            let inner = c.take_while(|ch| ch != '>');
            if !c.eat('>') {
                return Err(bad);
            }
            Uri::parse(inner).map_err(|_| bad.clone())?
        } else {
            // addr-spec: the URI ends at the first ';' (parameters belong to the header) or
            // whitespace; it may not contain ',', '?' or ';' (RFC 3261 §20).
            let spec = c.take_while(|ch| ch != ';' && !is_wsp(ch));
            if spec.contains(['?', ',']) {
                return Err(bad);
            }
            Uri::parse(spec).map_err(|_| bad.clone())?
        };
        let params = Params::parse_header_params(&mut c, what)?;
        Ok(NameAddr {
            display_name,
            uri,
            params,
        })
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.params.get("tag").flatten()
    }

    /// The SIP URI, if the URI is one.
    pub fn sip_uri(&self) -> Option<&SipUri> {
        self.uri.as_sip()
    }
}

impl fmt::Display for NameAddr {
    /// Always the name-addr form (`"Name" <uri>;params`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display_name {
            write!(f, "{} ", quote(d))?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// A Contact value: `*` or a name-addr (RFC 3261 §20.10, RFC 5626, RFC 5627).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact(pub NameAddr);

impl Contact {
    /// The `expires` parameter; `Err` when present but not a 32-bit number.
    pub fn expires(&self) -> Result<Option<u32>, Error> {
        match self.0.params.get("expires") {
            None => Ok(None),
            Some(v) => v
                .and_then(|v| parse_decimal(v, 10))
                .and_then(|v| u32::try_from(v).ok())
                .map(Some)
                .ok_or(Error::BadHeader("Contact")),
        }
    }

    /// The `+sip.instance` parameter, unquoted (`<urn:uuid:…>`).
    pub fn instance(&self) -> Option<String> {
        self.0.params.get_unquoted("+sip.instance")
    }

    /// The `reg-id` parameter (RFC 5626).
    pub fn reg_id(&self) -> Option<u32> {
        self.0
            .params
            .get("reg-id")
            .flatten()
            .and_then(|v| parse_decimal(v, 10))
            .and_then(|v| u32::try_from(v).ok())
    }

    /// The `q` parameter as written.
    pub fn q(&self) -> Option<&str> {
        self.0.params.get("q").flatten()
    }
}

/// The Contact header field of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts {
    /// `Contact: *` (remove every binding; RFC 3261 §10.2.2).
    Star,
    /// The contacts, in order (empty when there is no Contact header).
    List(Vec<Contact>),
}

impl Contacts {
    pub(crate) fn parse(values: &[&str]) -> Result<Contacts, Error> {
        if values.len() == 1 && values.first().is_some_and(|v| *v == "*") {
            return Ok(Contacts::Star);
        }
        values
            .iter()
            .map(|v| NameAddr::parse(v, "Contact").map(Contact))
            .collect::<Result<Vec<_>, _>>()
            .map(Contacts::List)
    }
}

/// A Via value (RFC 3261 §20.42, RFC 3581 `rport`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The protocol name and version, normally `SIP/2.0`.
    pub protocol: String,
    /// The transport, upper-cased as received (`UDP`, `TCP`, `TLS`, `WS`, `WSS`, …).
    pub transport: String,
    /// The sent-by host (IPv6 in brackets).
    pub host: String,
    /// The sent-by port.
    pub port: Option<u16>,
    /// The parameters (`branch`, `received`, `rport`, …).
    pub params: Params,
}

impl Via {
    /// A Via `SIP/2.0/<transport> host[:port];branch=<branch>`.
    pub fn new(transport: &str, host: &str, port: Option<u16>, branch: &str) -> Via {
        let mut params = Params::default();
        params.push("branch", Some(branch));
        Via {
            protocol: "SIP/2.0".to_string(),
            transport: transport.to_string(),
            host: host.to_string(),
            port,
            params,
        }
    }

    /// Parses one Via element.
    pub fn parse(s: &str) -> Result<Via, Error> {
        let bad = Error::BadHeader("Via");
        let mut c = Cursor::new(s.trim_matches(is_wsp));
        let mut parts = [""; 3];
        for (i, part) in parts.iter_mut().enumerate() {
            if i > 0 {
                c.skip_ws();
                if !c.eat('/') {
                    return Err(bad);
                }
                c.skip_ws();
            }
            *part = c.take_while(is_token_char);
            if part.is_empty() {
                return Err(bad);
            }
        }
        let [name, version, transport] = parts;
        let ws = c.take_while(is_wsp);
        if ws.is_empty() {
            return Err(bad);
        }
        let sent_by = c.take_while(|ch| ch != ';' && !is_wsp(ch));
        // Tolerate LWS around the port's colon (`host : 5060`).
        let (host, port) = {
            let mut sb = sent_by.to_string();
            let save = c.rest();
            c.skip_ws();
            if c.eat(':') {
                c.skip_ws();
                sb.push(':');
                sb.push_str(c.take_while(|ch| ch.is_ascii_digit()));
            } else {
                c = Cursor::new(save);
            }
            parse_hostport(&sb).map_err(|_| bad.clone())?
        };
        let params = Params::parse_header_params(&mut c, "Via")?;
        Ok(Via {
            protocol: format!("{name}/{version}"),
            transport: transport.to_string(),
            host,
            port,
            params,
        })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&str> {
        self.params.get("branch").flatten()
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<&str> {
        self.params.get("received").flatten()
    }

    /// The `rport` parameter: `None` when absent, `Some(None)` when requested (no value),
    /// `Some(Some(port))` when filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(crate::uri::parse_port))
    }

    /// Records where the request really came from (RFC 3261 §18.2.1, RFC 3581 §4): adds
    /// `received` when the source IP differs from sent-by's host, and fills in `rport` when
    /// the client asked for it.
    pub fn set_received(&mut self, ip: std::net::IpAddr, port: u16) {
        let sent = self
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .ok();
        let asked_rport = self.params.has("rport");
        if sent != Some(ip) || asked_rport {
            self.params.set("received", Some(&ip.to_string()));
        }
        if asked_rport {
            self.params.set("rport", Some(&port.to_string()));
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.protocol, self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

/// CSeq (RFC 3261 §20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// The sequence number (below 2**31).
    pub seq: u32,
    /// The method.
    pub method: String,
}

impl CSeq {
    /// Parses `number LWS method`.
    pub fn parse(s: &str) -> Result<CSeq, Error> {
        let bad = Error::BadHeader("CSeq");
        let s = s.trim_matches(is_wsp);
        let digits_end = s.find(|c: char| !c.is_ascii_digit()).ok_or(bad.clone())?;
        let (num, rest) = s.split_at(digits_end);
        let seq = parse_decimal(num, 10)
            .filter(|n| *n < 1 << 31)
            .ok_or(bad.clone())?;
        let method = rest.trim_start_matches(is_wsp);
        if method.len() == rest.len() || !is_token(method) {
            return Err(bad);
        }
        Ok(CSeq {
            seq: seq as u32,
            method: method.to_string(),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn compact_names() {
        assert_eq!(canonical_name("v"), "Via");
        assert_eq!(canonical_name("I"), "Call-ID");
        assert_eq!(canonical_name("Via"), "Via");
        assert_eq!(canonical_name("X-Foo"), "X-Foo");
        assert!(names_match("m", "contact"));
        assert!(names_match("CALL-id", "i"));
        assert!(!names_match("z", "Via"));
    }

    #[test]
    fn splits_lists() {
        assert_eq!(
            split_list(r#""a, b" <sip:x@y;p=1,2>;q=1, <sip:z@w> , c"#),
            vec![r#""a, b" <sip:x@y;p=1,2>;q=1"#, "<sip:z@w>", "c"]
        );
        assert_eq!(split_list(r#""x\", y" <sip:a@b>"#).len(), 1);
        assert_eq!(split_list("a,,b"), vec!["a", "", "b"]);
    }

    #[test]
    fn headers_ops() {
        let mut h = Headers::new();
        h.push(
            "v",
            "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2",
        );
        h.push("Via", "SIP/2.0/UDP c;branch=z9hG4bK3");
        h.push("Call-ID", "x");
        assert_eq!(h.values("Via").len(), 3);
        h.insert_top("Via", "SIP/2.0/WSS p;branch=z9hG4bK0");
        assert_eq!(h.values("via")[0], "SIP/2.0/WSS p;branch=z9hG4bK0");
        assert_eq!(h.pop_top("Via").unwrap(), "SIP/2.0/WSS p;branch=z9hG4bK0");
        assert_eq!(h.pop_top("Via").unwrap(), "SIP/2.0/UDP a;branch=z9hG4bK1");
        assert_eq!(h.get("Via"), Some("SIP/2.0/UDP b;branch=z9hG4bK2"));
        assert_eq!(h.iter().next().unwrap().name, "v");
        h.set("i", "y");
        assert_eq!(h.get("call-id"), Some("y"));
        assert_eq!(h.remove_all("VIA"), 2);
        assert_eq!(h.pop_top("Via"), None);
    }

    #[test]
    fn name_addrs() {
        let n = NameAddr::parse(
            r#""J Rosenberg \\\""  <sip:jdrosen@example.com> ; tag = 98asjd8"#,
            "From",
        )
        .unwrap();
        assert_eq!(n.display_name.as_deref(), Some(r#"J Rosenberg \""#));
        assert_eq!(n.tag(), Some("98asjd8"));
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323", "From").unwrap();
        assert_eq!(n.display_name.as_deref(), Some("caller"));
        let n = NameAddr::parse("sip:j.user@example.com;tag=1", "To").unwrap();
        assert_eq!(n.tag(), Some("1"));
        assert_eq!(n.to_string(), "<sip:j.user@example.com>;tag=1");
        let n = NameAddr::parse("<tel:+15551234>", "To").unwrap();
        assert!(n.sip_uri().is_none());
        for bad in [
            r#""Mr. J. User <sip:j.user@example.com>"#,
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "<sip:user@example.com",
            "< sip:user@example.com >",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "<sip:a@b>;",
            "<sip:a@b>;tag=",
            "<sip:a@b> junk",
        ] {
            assert!(NameAddr::parse(bad, "To").is_err(), "{bad}");
        }
    }

    #[test]
    fn contacts() {
        let c = Contacts::parse(&[r#"<sip:k8@x.invalid;transport=ws;ob>;+sip.ice;reg-id=1;+sip.instance="<urn:uuid:0a1b>";expires=600"#]).unwrap();
        let Contacts::List(l) = c else { panic!() };
        assert_eq!(l[0].expires(), Ok(Some(600)));
        assert_eq!(l[0].reg_id(), Some(1));
        assert_eq!(l[0].instance().as_deref(), Some("<urn:uuid:0a1b>"));
        assert_eq!(Contacts::parse(&["*"]), Ok(Contacts::Star));
        let Contacts::List(l) = Contacts::parse(&["<sip:a@b>;expires=280297596632815"]).unwrap()
        else {
            panic!()
        };
        assert!(l[0].expires().is_err());
    }

    #[test]
    fn vias() {
        let v = Via::parse("SIP  /   2.0 /UDP    192.0.2.2;rport;branch=390skdjuw").unwrap();
        assert_eq!(v.protocol, "SIP/2.0");
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "192.0.2.2");
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert_eq!(v.rport(), Some(None));
        let mut v = Via::parse("SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK123;rport").unwrap();
        v.set_received("203.0.113.7".parse().unwrap(), 50123);
        assert_eq!(
            v.to_string(),
            "SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK123;rport=50123;received=203.0.113.7"
        );
        let v = Via::parse("SIP/2.0/UDP [2001:db8::9]:5070 ; branch = z9hG4bKx").unwrap();
        assert_eq!(v.port, Some(5070));
        let v = Via::parse("SIP/2.0/TCP host.example.com : 5061;branch=z9hG4bKx").unwrap();
        assert_eq!(v.port, Some(5061));
        for bad in [
            "",
            "SIP/2.0",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP ;branch=x",
            "SIP/2.0/UDP h;;",
            "SIP/2.0/UDP h x",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cseqs() {
        assert_eq!(
            CSeq::parse("0009\r\n  INVITE".replace("\r\n", "").as_str()).unwrap(),
            CSeq {
                seq: 9,
                method: "INVITE".into()
            }
        );
        assert!(CSeq::parse("36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse("2147483648 INVITE").is_err());
        assert!(CSeq::parse("1INVITE").is_err());
        assert!(CSeq::parse("INVITE").is_err());
        assert!(CSeq::parse("1 IN VITE").is_err());
    }
}
