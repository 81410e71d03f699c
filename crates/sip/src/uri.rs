//! SIP and SIPS URIs (RFC 3261 §19.1), and other absolute URIs kept as text.

use core::fmt;
use std::net::{IpAddr, Ipv6Addr};

use crate::header::Params;
use crate::text::{check_escaped, is_unreserved};
use crate::Error;

/// `sip:` or `sips:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `sip:`
    Sip,
    /// `sips:` (TLS on every hop).
    Sips,
}

/// A parsed `sip:`/`sips:` URI. Parts are kept as written (escapes included); compare users
/// and parameter values through [`crate::unescape`] when escapes matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// The scheme.
    pub scheme: Scheme,
    /// The user part (may contain `;` and escapes), if any.
    pub user: Option<String>,
    /// The password of the userinfo, if any (deprecated by RFC 3261, kept for display).
    pub password: Option<String>,
    /// The host: a name, an IPv4 address, or an IPv6 reference in brackets.
    pub host: String,
    /// The port, if given.
    pub port: Option<u16>,
    /// The uri-parameters (`;transport=ws;lr;ob`), in order.
    pub params: Params,
    /// The headers part (`?a=b&c=d`), as name/value pairs.
    pub headers: Vec<(String, String)>,
}

/// Any URI of a name-addr or a Request-URI: a SIP URI, or another absolute URI (`tel:`,
/// `urn:`, …) kept as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    /// `sip:` or `sips:`.
    Sip(SipUri),
    /// Another scheme, as written.
    Other(String),
}

impl Uri {
    /// Parses an absolute URI: SIP URIs are parsed fully, other schemes are only checked to be
    /// `scheme:` followed by visible characters.
    pub fn parse(s: &str) -> Result<Uri, Error> {
        let colon = s.find(':').ok_or(Error::BadUri)?;
        let scheme = s.get(..colon).unwrap_or("");
        if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            return SipUri::parse(s).map(Uri::Sip);
        }
        let mut sc = scheme.chars();
        let first_alpha = sc.next().is_some_and(|c| c.is_ascii_alphabetic());
        if !first_alpha
            || !sc.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            || s.len() == colon + 1
            || s.chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
        {
            return Err(Error::BadUri);
        }
        Ok(Uri::Other(s.to_string()))
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            Uri::Other(_) => None,
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Other(s) => f.write_str(s),
        }
    }
}

fn user_char(c: char) -> bool {
    is_unreserved(c) || matches!(c, '&' | '=' | '+' | '$' | ',' | ';' | '?' | '/')
}

fn password_char(c: char) -> bool {
    is_unreserved(c) || matches!(c, '&' | '=' | '+' | '$' | ',')
}

fn param_char(c: char) -> bool {
    is_unreserved(c) || matches!(c, '[' | ']' | '/' | ':' | '&' | '+' | '$')
}

fn header_char(c: char) -> bool {
    is_unreserved(c) || matches!(c, '[' | ']' | '/' | '?' | ':' | '+' | '$')
}

/// A host name (RFC 3261 `hostname`, with `_` tolerated) or an IPv4 address.
fn valid_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        && !h.starts_with('.')
        && !h.starts_with('-')
}

/// Splits `host[:port]` (IPv6 references in brackets) and checks both parts.
pub(crate) fn parse_hostport(s: &str) -> Result<(String, Option<u16>), Error> {
    let (host, port) = if let Some(r) = s.strip_prefix('[') {
        let close = r.find(']').ok_or(Error::BadUri)?;
        let addr = r.get(..close).unwrap_or("");
        addr.parse::<Ipv6Addr>().map_err(|_| Error::BadUri)?;
        let after = r.get(close + 1..).unwrap_or("");
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(Error::BadUri)?),
        };
        (s.get(..close + 2).unwrap_or(""), port)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if !host.starts_with('[') && !valid_host_name(host) {
        return Err(Error::BadUri);
    }
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p).ok_or(Error::BadUri)?),
    };
    Ok((host.to_string(), port))
}

pub(crate) fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

impl SipUri {
    /// Parses a `sip:` or `sips:` URI (scheme case-insensitive). No whitespace is allowed.
    pub fn parse(s: &str) -> Result<SipUri, Error> {
        let (scheme, rest) =
            if s.len() >= 4 && s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("sip:")) {
                (Scheme::Sip, s.get(4..).unwrap_or(""))
            } else if s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("sips:")) {
                (Scheme::Sips, s.get(5..).unwrap_or(""))
            } else {
                return Err(Error::BadUri);
            };
        // '@' is not allowed unescaped anywhere but as the userinfo delimiter.
        let (userinfo, hostpart) = match rest.split_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = match u.split_once(':') {
                    Some((a, b)) => (a, Some(b)),
                    None => (u, None),
                };
                if user.is_empty() || !check_escaped(user, user_char) {
                    return Err(Error::BadUri);
                }
                if let Some(p) = pass {
                    if !check_escaped(p, password_char) {
                        return Err(Error::BadUri);
                    }
                }
                (Some(user.to_string()), pass.map(str::to_string))
            }
        };
        let (before_headers, headers_part) = match hostpart.split_once('?') {
            Some((a, b)) => (a, Some(b)),
            None => (hostpart, None),
        };
        let (hostport, params_part) = match before_headers.split_once(';') {
            Some((a, b)) => (a, Some(b)),
            None => (before_headers, None),
        };
        let (host, port) = parse_hostport(hostport)?;
        let mut params = Params::default();
        if let Some(p) = params_part {
            for item in p.split(';') {
                let (name, value) = match item.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (item, None),
                };
                if name.is_empty() || !check_escaped(name, param_char) {
                    return Err(Error::BadUri);
                }
                if let Some(v) = value {
                    if v.is_empty() || !check_escaped(v, param_char) {
                        return Err(Error::BadUri);
                    }
                }
                params.push(name, value);
            }
        }
        let mut headers = Vec::new();
        if let Some(h) = headers_part {
            for item in h.split('&') {
                let (name, value) = item.split_once('=').ok_or(Error::BadUri)?;
                if name.is_empty()
                    || !check_escaped(name, header_char)
                    || !check_escaped(value, header_char)
                {
                    return Err(Error::BadUri);
                }
                headers.push((name.to_string(), value.to_string()));
            }
        }
        Ok(SipUri {
            scheme,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// A URI `sip:host[:port]` with no user and no parameters.
    pub fn new(host: &str, port: Option<u16>) -> SipUri {
        SipUri {
            scheme: Scheme::Sip,
            user: None,
            password: None,
            host: host.to_string(),
            port,
            params: Params::default(),
            headers: Vec::new(),
        }
    }

    /// The host as an IP address, when it is one (brackets removed).
    pub fn host_ip(&self) -> Option<IpAddr> {
        let h = self
            .host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host);
        h.parse().ok()
    }

    /// The value of a uri-parameter (`Some(None)` for a flag such as `lr`).
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params.get(name)
    }

    /// The `transport` parameter, lower-cased (`ws`, `wss`, `udp`, `tcp`, `tls`), if any.
    pub fn transport(&self) -> Option<String> {
        self.params
            .get("transport")
            .flatten()
            .map(|t| t.to_ascii_lowercase())
    }

    /// Whether the URI has the `lr` parameter (a loose router, RFC 3261 §16.12).
    pub fn is_loose_route(&self) -> bool {
        self.params.has("lr")
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.scheme {
            Scheme::Sip => "sip:",
            Scheme::Sips => "sips:",
        })?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)?;
        for (i, (n, v)) in self.headers.iter().enumerate() {
            write!(f, "{}{n}={v}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

impl core::str::FromStr for SipUri {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        SipUri::parse(s)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_uris() {
        let u = SipUri::parse("sip:alice@example.com").unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, None);

        let u =
            SipUri::parse("sips:bob@[2001:db8::1]:5061;transport=tls;lr?subject=hi&x=y").unwrap();
        assert_eq!(u.scheme, Scheme::Sips);
        assert_eq!(u.host, "[2001:db8::1]");
        assert_eq!(u.host_ip(), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport().as_deref(), Some("tls"));
        assert!(u.is_loose_route());
        assert_eq!(u.headers.len(), 2);
        assert_eq!(
            u.to_string(),
            "sips:bob@[2001:db8::1]:5061;transport=tls;lr?subject=hi&x=y"
        );

        let u = SipUri::parse("sip:k8ab4c2d@df7jal23ls0d.invalid;transport=ws;ob").unwrap();
        assert_eq!(u.transport().as_deref(), Some("ws"));
        assert_eq!(u.param("ob"), Some(None));

        let u = SipUri::parse("SIP:192.0.2.1:5060").unwrap();
        assert_eq!(u.user, None);
        assert_eq!(u.host_ip(), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(u.to_string(), "sip:192.0.2.1:5060");
    }

    #[test]
    fn escapes_and_odd_users() {
        let u = SipUri::parse("sip:sips%3Auser%40example.com@example.net").unwrap();
        assert_eq!(
            crate::unescape(u.user.as_deref().unwrap()),
            "sips:user@example.com"
        );
        let u = SipUri::parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        let u =
            SipUri::parse("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31").unwrap();
        assert_eq!(u.params.len(), 2);
    }

    #[test]
    fn rejects_bad_uris() {
        for bad in [
            "sip:",
            "sip:@example.com",
            "sip:user@",
            "sip:user@exa mple.com",
            "sip:user@example.com:",
            "sip:user@example.com:99999",
            "sip:user@[::1",
            "sip:user@[nope]",
            "sip:user@example.com;",
            "sip:user@example.com;a=",
            "sip:user@example.com?noequals",
            "sip:us%2er%@example.com",
            "http//x",
            "<sip:user@example.com>",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            Uri::parse("tel:+1-201-555-0123"),
            Ok(Uri::Other(_))
        ));
        assert!(Uri::parse("urn:uuid:f81d4fae").is_ok());
    }
}
