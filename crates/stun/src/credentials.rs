//! Credential derivation.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;

/// Long-term credential key (RFC 8489 §9.2.2): MD5("username:realm:password").
///
/// The inputs are hashed as given; OpaqueString/SASLprep processing of the password (RFC 8265)
/// is the caller's business. No allocation.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// Long-term credential key for PASSWORD-ALGORITHM SHA-256 (RFC 8489 §18.5.1.2):
/// SHA-256("username:realm:password").
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// TURN REST API password (draft-uberti-behave-turn-rest): base64(HMAC-SHA1(secret, username))
/// written into `out` (always exactly 28 bytes); returns it as a `&str`.
pub fn rest_password<'o>(secret: &[u8], username: &str, out: &'o mut [u8; 28]) -> &'o str {
    // HMAC accepts keys of any length, so this never fails.
    let Ok(mut mac) = <Hmac<Sha1> as Mac>::new_from_slice(secret) else {
        out.fill(b'=');
        return "";
    };
    mac.update(username.as_bytes());
    let tag = mac.finalize().into_bytes();
    if base64::engine::general_purpose::STANDARD
        .encode_slice(tag, &mut out[..])
        .is_err()
    {
        return "";
    }
    core::str::from_utf8(&out[..]).unwrap_or("")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rest_vector() {
        let mut out = [0u8; 28];
        assert_eq!(
            rest_password(b"s3cret", "1735689600:alice", &mut out),
            "Eg5zUypiLLIlSFSXueMGTeKO1nI="
        );
    }
}
