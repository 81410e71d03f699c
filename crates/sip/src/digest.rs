//! HTTP digest authentication as SIP uses it (RFC 3261 §22.4, RFC 2617, RFC 7616, RFC 8760):
//! MD5 and SHA-256 (and their `-sess` variants), with `qop=auth` or without qop.
//!
//! * A client (or the gateway answering a trunk's 401/407 with configured credentials) parses
//!   the [`Challenge`] and calls [`answer`] with a cnonce of its own.
//! * A server issues a [`Challenge`] (nonces are the caller's business: make them stateless and
//!   expiring, like the TURN nonces), then checks the [`Credentials`] with [`verify`] or
//!   [`verify_ha1`]; it also checks that `uri` names the Request-URI and that the nonce is its
//!   own and fresh.

use core::fmt;

use md5::Md5;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use crate::text::{is_token, is_token_char, is_wsp, quote, Cursor};
use crate::Error;

/// A digest algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5 (the default when `algorithm` is absent).
    Md5,
    /// MD5-sess.
    Md5Sess,
    /// SHA-256 (RFC 7616, RFC 8760).
    Sha256,
    /// SHA-256-sess.
    Sha256Sess,
    /// Anything else (for example SHA-512-256): [`answer`] and [`verify`] refuse it.
    Other(String),
}

impl Algorithm {
    fn parse(s: &str) -> Algorithm {
        match s.to_ascii_uppercase().as_str() {
            "MD5" => Algorithm::Md5,
            "MD5-SESS" => Algorithm::Md5Sess,
            "SHA-256" => Algorithm::Sha256,
            "SHA-256-SESS" => Algorithm::Sha256Sess,
            _ => Algorithm::Other(s.to_string()),
        }
    }

    /// The token written in `algorithm=`.
    pub fn as_str(&self) -> &str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Other(s) => s,
        }
    }

    fn hash(&self, parts: &[&str]) -> Result<String, Error> {
        fn run<D: md5::Digest>(parts: &[&str]) -> String {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p.as_bytes());
            }
            hex(&d.finalize())
        }
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Ok(run::<Md5>(parts)),
            Algorithm::Sha256 | Algorithm::Sha256Sess => Ok(run::<Sha256>(parts)),
            Algorithm::Other(_) => Err(Error::UnsupportedDigest),
        }
    }

    fn is_sess(&self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }
}

/// A token as it is, anything else as a quoted-string.
fn token_or_quoted(s: &str) -> std::borrow::Cow<'_, str> {
    if is_token(s) {
        s.into()
    } else {
        quote(s).into()
    }
}

fn hex(b: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// Parses `Digest name=value, name="value", …` into (lower-cased name, unquoted value) pairs.
fn parse_params(value: &str, what: &'static str) -> Result<Vec<(String, String)>, Error> {
    let bad = Error::BadDigest(what);
    let value = value.trim_matches(is_wsp);
    let (scheme, rest) = value.split_once(is_wsp).ok_or(bad.clone())?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(Error::UnsupportedDigest);
    }
    let mut out: Vec<(String, String)> = Vec::new();
    let mut c = Cursor::new(rest);
    loop {
        c.skip_ws();
        let name = c.take_while(is_token_char);
        if name.is_empty() {
            return Err(bad);
        }
        c.skip_ws();
        if !c.eat('=') {
            return Err(bad);
        }
        c.skip_ws();
        let v = if c.peek() == Some('"') {
            c.quoted().ok_or(bad.clone())?.1
        } else {
            let t = c.take_while(is_token_char);
            if t.is_empty() {
                return Err(bad);
            }
            t.to_string()
        };
        let name = name.to_ascii_lowercase();
        if out.iter().any(|(n, _)| *n == name) {
            return Err(bad);
        }
        out.push((name, v));
        c.skip_ws();
        if c.is_empty() {
            return Ok(out);
        }
        if !c.eat(',') {
            return Err(bad);
        }
    }
}

fn take(params: &mut Vec<(String, String)>, name: &str) -> Option<String> {
    let i = params.iter().position(|(n, _)| n == name)?;
    Some(params.remove(i).1)
}

/// A digest challenge (WWW-Authenticate or Proxy-Authenticate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The realm.
    pub realm: String,
    /// The server's nonce.
    pub nonce: String,
    /// The opaque value, echoed by the client.
    pub opaque: Option<String>,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The qop options offered (`auth`, `auth-int`); empty when the challenge has none.
    pub qop: Vec<String>,
    /// `stale=true`: the credentials were right, the nonce was not.
    pub stale: bool,
    /// Other parameters (lower-cased name, unquoted value), kept in order.
    pub other: Vec<(String, String)>,
}

impl Challenge {
    /// A challenge with `qop="auth"` and no opaque.
    pub fn new(realm: &str, nonce: &str, algorithm: Algorithm) -> Challenge {
        Challenge {
            realm: realm.to_string(),
            nonce: nonce.to_string(),
            opaque: None,
            algorithm,
            qop: vec!["auth".to_string()],
            stale: false,
            other: Vec::new(),
        }
    }

    /// Parses a WWW-Authenticate / Proxy-Authenticate value.
    pub fn parse(value: &str) -> Result<Challenge, Error> {
        let mut p = parse_params(value, "challenge")?;
        let realm = take(&mut p, "realm").ok_or(Error::BadDigest("challenge realm"))?;
        let nonce = take(&mut p, "nonce").ok_or(Error::BadDigest("challenge nonce"))?;
        let opaque = take(&mut p, "opaque");
        let algorithm = take(&mut p, "algorithm")
            .map(|a| Algorithm::parse(&a))
            .unwrap_or(Algorithm::Md5);
        let qop = take(&mut p, "qop")
            .map(|q| {
                q.split(',')
                    .map(|s| s.trim_matches(is_wsp).to_ascii_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let stale = take(&mut p, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true"));
        Ok(Challenge {
            realm,
            nonce,
            opaque,
            algorithm,
            qop,
            stale,
            other: p,
        })
    }
}

impl fmt::Display for Challenge {
    /// The header value: `Digest realm="…", nonce="…", …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest realm={}, nonce={}",
            quote(&self.realm),
            quote(&self.nonce)
        )?;
        if let Some(o) = &self.opaque {
            write!(f, ", opaque={}", quote(o))?;
        }
        write!(
            f,
            ", algorithm={}",
            token_or_quoted(self.algorithm.as_str())
        )?;
        if !self.qop.is_empty() {
            write!(f, ", qop={}", quote(&self.qop.join(",")))?;
        }
        if self.stale {
            f.write_str(", stale=true")?;
        }
        for (n, v) in &self.other {
            write!(f, ", {n}={}", quote(v))?;
        }
        Ok(())
    }
}

/// Digest credentials (Authorization or Proxy-Authorization).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The realm.
    pub realm: String,
    /// The server's nonce.
    pub nonce: String,
    /// The digest-uri (the Request-URI).
    pub uri: String,
    /// The response, lower-case hex.
    pub response: String,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The client nonce (with qop).
    pub cnonce: Option<String>,
    /// The nonce count (with qop).
    pub nc: Option<u32>,
    /// The qop chosen (`auth`).
    pub qop: Option<String>,
    /// The challenge's opaque, echoed.
    pub opaque: Option<String>,
}

impl Credentials {
    /// Parses an Authorization / Proxy-Authorization value.
    pub fn parse(value: &str) -> Result<Credentials, Error> {
        let mut p = parse_params(value, "credentials")?;
        let mut req = |n: &'static str| take(&mut p, n).ok_or(Error::BadDigest(n));
        let username = req("username")?;
        let realm = req("realm")?;
        let nonce = req("nonce")?;
        let uri = req("uri")?;
        let response = req("response")?.to_ascii_lowercase();
        let algorithm = take(&mut p, "algorithm")
            .map(|a| Algorithm::parse(&a))
            .unwrap_or(Algorithm::Md5);
        let cnonce = take(&mut p, "cnonce");
        let nc = match take(&mut p, "nc") {
            None => None,
            Some(n) if n.len() == 8 => {
                Some(u32::from_str_radix(&n, 16).map_err(|_| Error::BadDigest("nc"))?)
            }
            Some(_) => return Err(Error::BadDigest("nc")),
        };
        let qop = take(&mut p, "qop").map(|q| q.to_ascii_lowercase());
        if qop.is_some() && (cnonce.is_none() || nc.is_none()) {
            return Err(Error::BadDigest("qop without cnonce and nc"));
        }
        if !response.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::BadDigest("response"));
        }
        Ok(Credentials {
            username,
            realm,
            nonce,
            uri,
            response,
            algorithm,
            cnonce,
            nc,
            qop,
            opaque: take(&mut p, "opaque"),
        })
    }
}

impl fmt::Display for Credentials {
    /// The header value: `Digest username="…", realm="…", …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest username={}, realm={}, nonce={}, uri={}, response={}, algorithm={}",
            quote(&self.username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(&self.uri),
            quote(&self.response),
            token_or_quoted(self.algorithm.as_str())
        )?;
        if let Some(c) = &self.cnonce {
            write!(f, ", cnonce={}", quote(c))?;
        }
        if let Some(o) = &self.opaque {
            write!(f, ", opaque={}", quote(o))?;
        }
        if let Some(q) = &self.qop {
            if is_token(q) {
                write!(f, ", qop={q}")?;
            }
        }
        if let Some(nc) = self.nc {
            write!(f, ", nc={nc:08x}")?;
        }
        Ok(())
    }
}

/// H(username:realm:password), lower-case hex: what a server may store instead of passwords.
pub fn ha1(
    algorithm: &Algorithm,
    username: &str,
    realm: &str,
    password: &str,
) -> Result<String, Error> {
    algorithm.hash(&[username, realm, password])
}

/// The response for `ha1` (from [`ha1`], before the `-sess` step).
#[allow(clippy::too_many_arguments)]
fn response(
    alg: &Algorithm,
    ha1: &str,
    nonce: &str,
    cnonce: Option<&str>,
    nc: Option<u32>,
    qop: Option<&str>,
    method: &str,
    uri: &str,
) -> Result<String, Error> {
    let ha1 = if alg.is_sess() {
        alg.hash(&[ha1, nonce, cnonce.ok_or(Error::BadDigest("cnonce"))?])?
    } else {
        ha1.to_ascii_lowercase()
    };
    let ha2 = alg.hash(&[method, uri])?;
    match qop {
        None => alg.hash(&[&ha1, nonce, &ha2]),
        Some("auth") => {
            let nc = format!("{:08x}", nc.ok_or(Error::BadDigest("nc"))?);
            let cnonce = cnonce.ok_or(Error::BadDigest("cnonce"))?;
            alg.hash(&[&ha1, nonce, &nc, cnonce, "auth", &ha2])
        }
        Some(_) => Err(Error::UnsupportedDigest),
    }
}

/// Answers `challenge` for a request `method` to `uri` (client side): `qop=auth` when the
/// challenge offers it (then `cnonce` and `nc` are used; the caller picks a fresh random
/// cnonce and counts `nc` per nonce from 1), the RFC 2069 form when it offers no qop. A
/// challenge offering only `auth-int`, or an unknown algorithm, is [`Error::UnsupportedDigest`].
pub fn answer(
    challenge: &Challenge,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> Result<Credentials, Error> {
    let alg = &challenge.algorithm;
    let qop = if challenge.qop.is_empty() {
        None
    } else if challenge.qop.iter().any(|q| q == "auth") {
        Some("auth")
    } else {
        return Err(Error::UnsupportedDigest);
    };
    let (cn, n) = match qop {
        Some(_) => (Some(cnonce), Some(nc)),
        None if alg.is_sess() => (Some(cnonce), None),
        None => (None, None),
    };
    let h1 = ha1(alg, username, &challenge.realm, password)?;
    let resp = response(alg, &h1, &challenge.nonce, cn, n, qop, method, uri)?;
    Ok(Credentials {
        username: username.to_string(),
        realm: challenge.realm.clone(),
        nonce: challenge.nonce.clone(),
        uri: uri.to_string(),
        response: resp,
        algorithm: alg.clone(),
        cnonce: cn.map(str::to_string),
        nc: n,
        qop: qop.map(str::to_string),
        opaque: challenge.opaque.clone(),
    })
}

/// Checks `creds` for a request with `method` against the user's password (server side).
/// Returns `Ok(false)` for a wrong response; errors for unsupported algorithms or qop.
pub fn verify(creds: &Credentials, method: &str, password: &str) -> Result<bool, Error> {
    let h1 = ha1(&creds.algorithm, &creds.username, &creds.realm, password)?;
    verify_ha1(creds, method, &h1)
}

/// Like [`verify`], with the stored H(username:realm:password) instead of the password.
pub fn verify_ha1(creds: &Credentials, method: &str, ha1: &str) -> Result<bool, Error> {
    let expected = response(
        &creds.algorithm,
        ha1,
        &creds.nonce,
        creds.cnonce.as_deref(),
        creds.nc,
        creds.qop.as_deref(),
        method,
        &creds.uri,
    )?;
    Ok(expected.as_bytes().ct_eq(creds.response.as_bytes()).into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn challenge_round_trip() {
        let c = Challenge::parse(
            r#"Digest realm="atlanta.com", domain="sip:ss1.carrier.com", qop="auth,auth-int", nonce="f84f1cec41e6cbe5aea9c8e88d359", opaque="", stale=FALSE, algorithm=MD5"#,
        )
        .unwrap();
        assert_eq!(c.realm, "atlanta.com");
        assert_eq!(c.qop, vec!["auth", "auth-int"]);
        assert_eq!(c.opaque.as_deref(), Some(""));
        assert!(!c.stale);
        assert_eq!(
            c.other,
            vec![("domain".into(), "sip:ss1.carrier.com".into())]
        );
        assert_eq!(Challenge::parse(&c.to_string()).unwrap(), c);
        for bad in [
            "Basic realm=\"x\"",
            "Digest",
            "Digest realm=\"x\"",
            "Digest realm=\"x\", nonce=\"y\",",
            "Digest realm=\"x\" nonce=\"y\"",
            "Digest realm=\"x, nonce=\"y\"",
            "Digest realm=\"x\", realm=\"z\", nonce=\"y\"",
        ] {
            assert!(Challenge::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answer_and_verify_every_algorithm() {
        for alg in [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
        ] {
            for qop in [vec![], vec!["auth".to_string()]] {
                let mut ch = Challenge::new("icebreaker", "n0nce", alg.clone());
                ch.qop = qop;
                let cr = answer(
                    &ch,
                    "alice",
                    "secret",
                    "REGISTER",
                    "sip:example.com",
                    "c1",
                    1,
                )
                .unwrap();
                let parsed = Credentials::parse(&cr.to_string()).unwrap();
                assert_eq!(parsed, cr);
                assert_eq!(verify(&parsed, "REGISTER", "secret"), Ok(true));
                assert_eq!(verify(&parsed, "REGISTER", "wrong"), Ok(false));
                assert_eq!(verify(&parsed, "INVITE", "secret"), Ok(false));
            }
        }
        let mut ch = Challenge::new("r", "n", Algorithm::Md5);
        ch.qop = vec!["auth-int".into()];
        assert_eq!(
            answer(&ch, "a", "b", "INVITE", "sip:x", "c", 1),
            Err(Error::UnsupportedDigest)
        );
        let ch = Challenge::new("r", "n", Algorithm::Other("SHA-512-256".into()));
        assert_eq!(
            answer(&ch, "a", "b", "INVITE", "sip:x", "c", 1),
            Err(Error::UnsupportedDigest)
        );
    }
}
