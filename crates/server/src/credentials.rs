//! Time-limited TURN credentials ("TURN REST API", draft-uberti-behave-turn-rest):
//! username `<unix expiry>:<user>`, password `base64(HMAC-SHA1(secret, username))`.
//! Used by `icebreaker credentials` and, later, by the signaling endpoint.

use serde::Serialize;

/// One set of time-limited TURN credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RestCredentials {
    /// `<unix expiry>:<user>`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub password: String,
    /// Seconds the credentials stay valid from the moment they were made.
    pub ttl: u32,
    /// Unix time (seconds) at which the server starts refusing them.
    #[serde(skip)]
    pub expires_at: u64,
}

/// Make credentials for `user` valid for `ttl` seconds from `now_unix`: the username is
/// `EXPIRY:USER`, or just `EXPIRY` for an empty user (both forms of the TURN REST draft).
pub fn rest_credentials(secret: &str, user: &str, ttl: u32, now_unix: u64) -> RestCredentials {
    let expires_at = now_unix.saturating_add(u64::from(ttl));
    let username = if user.is_empty() {
        expires_at.to_string()
    } else {
        format!("{expires_at}:{user}")
    };
    let mut out = [0u8; 28];
    let password =
        icebreaker_stun::rest_password(secret.as_bytes(), &username, &mut out).to_owned();
    RestCredentials {
        username,
        password,
        ttl,
        expires_at,
    }
}

/// The URIs handed out when none are configured: plain TURN on the loopback default port.
pub fn default_uris() -> Vec<String> {
    vec![
        "turn:127.0.0.1:3478?transport=udp".to_string(),
        "turn:127.0.0.1:3478?transport=tcp".to_string(),
    ]
}

/// One entry of WebRTC's `RTCConfiguration.iceServers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

/// The answer handed to clients: the REST API fields (`username`, `password`, `ttl`, `uris`)
/// plus a ready-to-use WebRTC `iceServers` array. Serializes with the keys in that order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CredentialsResponse {
    pub username: String,
    pub password: String,
    pub ttl: u32,
    pub uris: Vec<String>,
    #[serde(rename = "iceServers")]
    pub ice_servers: Vec<IceServer>,
}

/// Build the [`CredentialsResponse`] for `creds`, announcing `uris`.
pub fn credentials_response(creds: &RestCredentials, uris: &[String]) -> CredentialsResponse {
    CredentialsResponse {
        username: creds.username.clone(),
        password: creds.password.clone(),
        ttl: creds.ttl,
        uris: uris.to_vec(),
        ice_servers: vec![IceServer {
            urls: uris.to_vec(),
            username: creds.username.clone(),
            credential: creds.password.clone(),
        }],
    }
}

/// [`credentials_response`] as pretty-printed JSON:
/// `{"username","password","ttl","uris":[...],"iceServers":[{"urls":[...],"username","credential"}]}`.
pub fn ice_servers_json(creds: &RestCredentials, uris: &[String]) -> String {
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_string_pretty(&credentials_response(creds, uris)).unwrap_or_default()
}

/// Current unix time in seconds (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        let c = rest_credentials("s3cret", "alice", 86_400, 1_735_689_600 - 86_400);
        assert_eq!(c.username, "1735689600:alice");
        assert_eq!(c.password, "Eg5zUypiLLIlSFSXueMGTeKO1nI=");
        assert_eq!(c.ttl, 86_400);
        assert_eq!(c.expires_at, 1_735_689_600);
    }

    #[test]
    fn expiry_saturates() {
        let c = rest_credentials("s", "u", u32::MAX, u64::MAX - 1);
        assert_eq!(c.expires_at, u64::MAX);
        assert!(c.username.ends_with(":u"));
    }

    #[test]
    fn json_shape() {
        let c = rest_credentials("s3cret", "alice", 60, 1_735_689_540);
        let text = ice_servers_json(&c, &default_uris());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        // Keys keep the documented order.
        let order: Vec<usize> = [
            "\"username\"",
            "\"password\"",
            "\"ttl\"",
            "\"uris\"",
            "\"iceServers\"",
        ]
        .iter()
        .filter_map(|k| text.find(k))
        .collect();
        assert_eq!(order.len(), 5, "{text}");
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(v["username"], "1735689600:alice");
        assert_eq!(v["password"], "Eg5zUypiLLIlSFSXueMGTeKO1nI=");
        assert_eq!(v["ttl"], 60);
        assert_eq!(v["uris"][1], "turn:127.0.0.1:3478?transport=tcp");
        assert_eq!(
            v["iceServers"][0]["urls"][0],
            "turn:127.0.0.1:3478?transport=udp"
        );
        assert_eq!(
            v["iceServers"][0]["credential"],
            "Eg5zUypiLLIlSFSXueMGTeKO1nI="
        );
        assert_eq!(v["iceServers"][0]["username"], "1735689600:alice");
        // serde form of the struct alone carries the REST fields only.
        let s = serde_json::to_value(&c).unwrap_or_default();
        assert_eq!(s["username"], "1735689600:alice");
        assert!(s.get("expires_at").is_none());
    }
}
