//! Room tokens: JWT (compact JWS) signed with HS256, verified with the workspace's
//! `hmac`/`sha2`/`base64`/`subtle` (no JWT crate: verification is a few lines and this keeps
//! `ring` and extra crypto stacks out of the tree).
//!
//! Claims: `room` (a room name or `*`), `sub` (identity, optional), `exp` (Unix seconds,
//! required), `nbf` (optional), `perms` (optional list ⊆ {`create`, `signal`, `broadcast`};
//! default all three; unknown entries are ignored). Time is passed in (`now_unix`).
//!
//! Errors: missing / malformed / wrong algorithm / bad signature / expired / not yet valid →
//! `unauthorized`; another room or a missing permission → `forbidden` ([`Claims::check_room`],
//! [`Claims::require`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::proto::{ErrorCode, ProtoError};

type HmacSha256 = Hmac<Sha256>;

/// Longest accepted token, bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// A permission a room token can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Perm {
    /// May create the room (be its first member).
    Create,
    /// May send `signal`.
    Signal,
    /// May send `broadcast`.
    Broadcast,
    /// May have the server dial a phone (`sip` `dial`, when the SIP gateway allows dialing).
    /// Never granted by default: a token must list it.
    Dial,
}

impl Perm {
    /// The claim string.
    pub fn as_str(self) -> &'static str {
        match self {
            Perm::Create => "create",
            Perm::Signal => "signal",
            Perm::Broadcast => "broadcast",
            Perm::Dial => "dial",
        }
    }
}

/// A set of [`Perm`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Perms {
    bits: u8,
}

impl Perms {
    /// All three (the default when a token has no `perms`, and when tokens are not required).
    pub const ALL: Perms = Perms { bits: 0b111 };
    /// None.
    pub const NONE: Perms = Perms { bits: 0 };

    fn bit(p: Perm) -> u8 {
        match p {
            Perm::Create => 1,
            Perm::Signal => 2,
            Perm::Broadcast => 4,
            Perm::Dial => 8,
        }
    }

    /// Whether `p` is granted.
    pub fn has(self, p: Perm) -> bool {
        self.bits & Perms::bit(p) != 0
    }

    /// `forbidden` unless `p` is granted.
    pub fn require(self, p: Perm) -> Result<(), ProtoError> {
        if self.has(p) {
            Ok(())
        } else {
            Err(ProtoError::new(
                ErrorCode::Forbidden,
                format!("the token does not grant `{}`", p.as_str()),
            ))
        }
    }

    /// As a number (for stores): bit 0 `create`, 1 `signal`, 2 `broadcast`, 3 `dial`.
    pub fn bits(self) -> u8 {
        self.bits
    }

    /// From [`Perms::bits`] (unknown bits ignored).
    pub fn from_bits(bits: u8) -> Perms {
        Perms {
            bits: bits & 0b1111,
        }
    }

    /// With `p` added.
    pub fn with(self, p: Perm) -> Perms {
        Perms {
            bits: self.bits | Perms::bit(p),
        }
    }
}

impl Default for Perms {
    fn default() -> Self {
        Perms::ALL
    }
}

/// Verified claims of a room token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Room name or `*`.
    pub room: String,
    /// Identity (shown as `name` unless the join gives one).
    pub sub: Option<String>,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Granted permissions.
    pub perms: Perms,
}

impl Claims {
    /// `forbidden` unless the token is for `room` (or `*`).
    pub fn check_room(&self, room: &str) -> Result<(), ProtoError> {
        if self.room == "*" || self.room == room {
            Ok(())
        } else {
            Err(ProtoError::new(
                ErrorCode::Forbidden,
                "the token does not allow this room",
            ))
        }
    }

    /// `forbidden` unless `p` is granted.
    pub fn require(&self, p: Perm) -> Result<(), ProtoError> {
        self.perms.require(p)
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct RawClaims {
    room: String,
    #[serde(default)]
    sub: Option<String>,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    perms: Option<Vec<String>>,
}

fn unauthorized(msg: &str) -> ProtoError {
    ProtoError::new(ErrorCode::Unauthorized, msg)
}

/// Verifies an HS256 room token with `secret` at `now_unix` and returns its claims.
pub fn verify(token: &str, secret: &[u8], now_unix: u64) -> Result<Claims, ProtoError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(unauthorized("the room token is malformed"));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(c64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(unauthorized("the room token is malformed"));
    };
    let header = URL_SAFE_NO_PAD
        .decode(h64)
        .map_err(|_| unauthorized("the room token is malformed"))?;
    let header: Header =
        serde_json::from_slice(&header).map_err(|_| unauthorized("the room token is malformed"))?;
    if header.alg != "HS256" {
        return Err(unauthorized("the room token must be signed with HS256"));
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| unauthorized("the room token is malformed"))?;
    let mut mac = HmacSha256::new_from_slice(secret)
        .map_err(|_| ProtoError::new(ErrorCode::Internal, "bad token secret"))?;
    mac.update(h64.as_bytes());
    mac.update(b".");
    mac.update(c64.as_bytes());
    // `verify_slice` compares in constant time.
    mac.verify_slice(&sig)
        .map_err(|_| unauthorized("the room token has a bad signature"))?;
    let claims = URL_SAFE_NO_PAD
        .decode(c64)
        .map_err(|_| unauthorized("the room token is malformed"))?;
    let raw: RawClaims = serde_json::from_slice(&claims)
        .map_err(|_| unauthorized("the room token has malformed claims"))?;
    if now_unix >= raw.exp {
        return Err(unauthorized("the room token has expired"));
    }
    if raw.nbf.is_some_and(|nbf| now_unix < nbf) {
        return Err(unauthorized("the room token is not valid yet"));
    }
    let perms = match raw.perms {
        None => Perms::ALL,
        Some(list) => list.iter().fold(Perms::NONE, |acc, p| match p.as_str() {
            "create" => acc.with(Perm::Create),
            "signal" => acc.with(Perm::Signal),
            "broadcast" => acc.with(Perm::Broadcast),
            "dial" => acc.with(Perm::Dial),
            _ => acc,
        }),
    };
    Ok(Claims {
        room: raw.room,
        sub: raw.sub,
        exp: raw.exp,
        perms,
    })
}

#[derive(Serialize)]
struct OutClaims<'a> {
    room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    perms: Option<Vec<&'static str>>,
}

/// Signs a room token (HS256) — for tests, tools and an operator's token endpoint.
/// `perms: None` omits the claim (meaning all).
pub fn sign(
    secret: &[u8],
    room: &str,
    sub: Option<&str>,
    exp: u64,
    perms: Option<&[Perm]>,
) -> String {
    let claims = OutClaims {
        room,
        sub,
        exp,
        perms: perms.map(|ps| ps.iter().map(|p| p.as_str()).collect()),
    };
    let claims = serde_json::to_vec(&claims).unwrap_or_default();
    sign_raw(secret, br#"{"alg":"HS256","typ":"JWT"}"#, &claims)
}

/// Signs arbitrary header and claims bytes with HMAC-SHA256 (tests use it for malformed tokens).
pub fn sign_raw(secret: &[u8], header: &[u8], claims: &[u8]) -> String {
    let mut out = URL_SAFE_NO_PAD.encode(header);
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(claims));
    // HMAC accepts keys of any length: this cannot fail.
    let sig = match HmacSha256::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(out.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    };
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(sig));
    out
}
