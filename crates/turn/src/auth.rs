//! Long-term credentials: static users, TURN REST shared secrets, and stateless nonces.
//!
//! No state is kept for a client before it authenticates: a nonce carries its own issue time and a
//! MAC over that time and the client's address, so checking it needs only the server's nonce key.

use hmac::{Hmac, Mac};
use icebreaker_stun::{long_term_key, rest_password};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::IpAddr;

/// Length of the nonces this server issues (ASCII hex).
pub const NONCE_LEN: usize = 24;

/// Most shared secrets accepted at once (rotation needs two; a few more are allowed).
pub const MAX_SECRETS: usize = 8;

/// Why authentication failed (bounded set: used as a metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// No MESSAGE-INTEGRITY: the normal first step of the challenge, not an attack.
    Missing,
    /// USERNAME, REALM or NONCE absent or malformed next to MESSAGE-INTEGRITY.
    BadRequest,
    /// The integrity check did not match any key.
    BadIntegrity,
    /// No such user, and not a REST username.
    UnknownUser,
    /// The nonce is too old or not ours.
    StaleNonce,
    /// A REST username whose expiry has passed.
    Expired,
    /// The REALM is not ours.
    WrongRealm,
    /// The username differs from the allocation's (441).
    WrongCredentials,
}

impl AuthFailure {
    /// All values, for pre-creating metric children.
    pub const ALL: [AuthFailure; 8] = [
        AuthFailure::Missing,
        AuthFailure::BadRequest,
        AuthFailure::BadIntegrity,
        AuthFailure::UnknownUser,
        AuthFailure::StaleNonce,
        AuthFailure::Expired,
        AuthFailure::WrongRealm,
        AuthFailure::WrongCredentials,
    ];

    /// The label used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::BadRequest => "bad_request",
            AuthFailure::BadIntegrity => "bad_integrity",
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::StaleNonce => "stale_nonce",
            AuthFailure::Expired => "expired",
            AuthFailure::WrongRealm => "wrong_realm",
            AuthFailure::WrongCredentials => "wrong_credentials",
        }
    }
}

/// Candidate keys for a username.
#[derive(Debug)]
pub struct Keys {
    keys: [[u8; 16]; MAX_SECRETS],
    len: usize,
    /// Expiry (unix seconds) of a REST username; `None` for static users.
    pub expiry: Option<u64>,
}

impl Keys {
    /// The keys to try, in order.
    pub fn as_slice(&self) -> &[[u8; 16]] {
        &self.keys[..self.len]
    }
}

/// The credential store: static users and REST secrets at the same time.
#[derive(Clone)]
pub struct Credentials {
    realm: String,
    users: HashMap<String, [u8; 16]>,
    secrets: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("users", &self.users.len())
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl Credentials {
    /// A store for `realm` with the given static users (name, password) and REST secrets.
    /// Secrets beyond [`MAX_SECRETS`] are ignored.
    pub fn new<'a>(
        realm: &str,
        users: impl IntoIterator<Item = (&'a str, &'a str)>,
        secrets: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let users = users
            .into_iter()
            .map(|(u, p)| (u.to_owned(), long_term_key(u, realm, p)))
            .collect();
        let secrets = secrets
            .into_iter()
            .take(MAX_SECRETS)
            .map(|s| s.as_bytes().to_vec())
            .collect();
        Credentials {
            realm: realm.to_owned(),
            users,
            secrets,
        }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Whether any way of authenticating is configured.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.secrets.is_empty()
    }

    /// The keys a message signed by `username` may verify with. Static users win over REST
    /// usernames. Does not check REST expiry (the caller decides: new allocations need unexpired
    /// credentials, existing ones keep running).
    pub fn keys(&self, username: &str) -> Result<Keys, AuthFailure> {
        let mut keys = Keys {
            keys: [[0; 16]; MAX_SECRETS],
            len: 0,
            expiry: None,
        };
        if let Some(k) = self.users.get(username) {
            keys.keys[0] = *k;
            keys.len = 1;
            return Ok(keys);
        }
        let expiry = rest_expiry(username).ok_or(AuthFailure::UnknownUser)?;
        if self.secrets.is_empty() {
            return Err(AuthFailure::UnknownUser);
        }
        let mut pw = [0u8; 28];
        for (slot, secret) in keys.keys.iter_mut().zip(&self.secrets) {
            let password = rest_password(secret, username, &mut pw);
            *slot = long_term_key(username, &self.realm, password);
        }
        keys.len = self.secrets.len().min(MAX_SECRETS);
        keys.expiry = Some(expiry);
        Ok(keys)
    }
}

impl Credentials {
    /// [`Credentials::keys`] for a new allocation at `now_unix`: a REST username that has
    /// expired is refused before any key is derived (a forged one costs no HMAC).
    pub fn keys_at(&self, username: &str, now_unix: u64) -> Result<Keys, AuthFailure> {
        if !self.users.contains_key(username) {
            if let Some(expiry) = rest_expiry(username) {
                if expiry <= now_unix && !self.secrets.is_empty() {
                    return Err(AuthFailure::Expired);
                }
            }
        }
        self.keys(username)
    }
}

/// The key a username's allocations are counted under for the per-user quota: the user id of a
/// REST username (`<expiry>:<user>` or `<user>:<expiry>`), the whole name otherwise.
pub fn quota_key(username: &str) -> &str {
    if rest_expiry(username).is_none() {
        return username;
    }
    match username.split_once(':') {
        Some((head, tail)) if head.bytes().all(|b| b.is_ascii_digit()) => tail,
        _ => username.rsplit_once(':').map_or(username, |(head, _)| head),
    }
}

/// The expiry of a TURN REST username: `<unix expiry>:<user>` (the usual form) or
/// `<user>:<unix expiry>`. `None` when neither side is a timestamp.
pub fn rest_expiry(username: &str) -> Option<u64> {
    let (head, _) = username.split_once(':')?;
    let (_, tail) = username.rsplit_once(':')?;
    let parse = |s: &str| -> Option<u64> {
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    parse(head).or_else(|| parse(tail))
}

/// Issues and checks stateless nonces: `hex(issued unix secs, 8)` + `hex(MAC, 16)`, where the MAC is
/// HMAC-SHA256(key, issued || client IP) truncated to 8 bytes.
#[derive(Clone)]
pub struct NonceIssuer {
    key: [u8; 32],
    lifetime: u64,
}

impl std::fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceIssuer")
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl NonceIssuer {
    /// A nonce issuer with a secret key and a nonce lifetime in seconds.
    pub fn new(key: [u8; 32], lifetime_secs: u64) -> Self {
        NonceIssuer {
            key,
            lifetime: lifetime_secs.max(1),
        }
    }

    fn mac(&self, issued: u32, client: IpAddr) -> [u8; 8] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
        mac.update(&issued.to_be_bytes());
        match client {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 8];
        out.copy_from_slice(&full[..8]);
        out
    }

    /// A fresh nonce for `client` at `now_unix`.
    pub fn issue(&self, now_unix: u64, client: IpAddr) -> [u8; NONCE_LEN] {
        let issued = now_unix as u32;
        let mut out = [0u8; NONCE_LEN];
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&issued.to_be_bytes());
        bytes[4..].copy_from_slice(&self.mac(issued, client));
        for (i, b) in bytes.iter().enumerate() {
            out[2 * i] = HEX[(b >> 4) as usize];
            out[2 * i + 1] = HEX[(b & 15) as usize];
        }
        out
    }

    /// Whether `nonce` was issued by us to `client` less than the lifetime ago.
    pub fn check(&self, nonce: &[u8], now_unix: u64, client: IpAddr) -> bool {
        if nonce.len() != NONCE_LEN {
            return false;
        }
        let mut bytes = [0u8; 12];
        for (i, b) in bytes.iter_mut().enumerate() {
            let (Some(hi), Some(lo)) = (unhex(nonce[2 * i]), unhex(nonce[2 * i + 1])) else {
                return false;
            };
            *b = (hi << 4) | lo;
        }
        let issued = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let expected = self.mac(issued, client);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &bytes[4..])) {
            return false;
        }
        let now = now_unix as u32;
        let age = now.wrapping_sub(issued);
        u64::from(age) < self.lifetime
    }
}

fn unhex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_username_forms() {
        assert_eq!(rest_expiry("1735689600:alice"), Some(1735689600));
        assert_eq!(rest_expiry("alice:1735689600"), Some(1735689600));
        assert_eq!(rest_expiry("alice"), None);
        assert_eq!(rest_expiry("alice:bob"), None);
        assert_eq!(rest_expiry(":"), None);
        assert_eq!(rest_expiry("99999999999999999999999:x"), None);
    }

    #[test]
    fn quota_key_is_the_rest_user_id() {
        assert_eq!(quota_key("1735689600:alice"), "alice");
        assert_eq!(quota_key("1735689601:alice"), "alice");
        assert_eq!(quota_key("alice:1735689600"), "alice");
        assert_eq!(quota_key("alice"), "alice");
        assert_eq!(quota_key("a:b"), "a:b");
    }

    #[test]
    fn static_users_and_secrets_coexist() {
        let c = Credentials::new("r", [("alice", "pw")], ["s3cret", "next"]);
        let k = c.keys("alice").expect("static user");
        assert_eq!(k.as_slice(), &[long_term_key("alice", "r", "pw")]);
        assert_eq!(k.expiry, None);
        let k = c.keys("1735689600:alice").expect("rest user");
        assert_eq!(k.as_slice().len(), 2);
        assert_eq!(k.expiry, Some(1735689600));
        let mut pw = [0u8; 28];
        let p = rest_password(b"s3cret", "1735689600:alice", &mut pw);
        assert_eq!(p, "Eg5zUypiLLIlSFSXueMGTeKO1nI=");
        assert_eq!(k.as_slice()[0], long_term_key("1735689600:alice", "r", p));
        assert_eq!(c.keys("bob").err(), Some(AuthFailure::UnknownUser));
    }

    #[test]
    fn nonces_are_bound_to_client_and_time() {
        let n = NonceIssuer::new([7; 32], 600);
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        let nonce = n.issue(1_000_000, ip);
        assert!(n.check(&nonce, 1_000_000, ip));
        assert!(n.check(&nonce, 1_000_599, ip));
        assert!(!n.check(&nonce, 1_000_600, ip));
        assert!(!n.check(&nonce, 1_000_000, other));
        let mut forged = nonce;
        forged[23] = if forged[23] == b'0' { b'1' } else { b'0' };
        assert!(!n.check(&forged, 1_000_000, ip));
        assert!(!n.check(b"short", 1_000_000, ip));
        assert!(!NonceIssuer::new([8; 32], 600).check(&nonce, 1_000_000, ip));
    }
}
