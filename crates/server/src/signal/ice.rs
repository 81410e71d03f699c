//! `iceServers` for `joined`/`resumed` and `GET /api/ice-servers` (TURN REST API draft).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde_json::Value;

use crate::credentials::{now_unix, rest_credentials};

/// What is needed to describe this server's STUN/TURN listeners to a client.
#[derive(Debug)]
pub struct IceConfig {
    /// UDP+TCP TURN listener addresses (as bound).
    pub turn: Vec<SocketAddr>,
    /// TLS TURN listener addresses (as bound).
    pub turns: Vec<SocketAddr>,
    /// First `--external-ip` public address, if any: used as host in every URI.
    pub external: Option<IpAddr>,
    /// Relay IP: the host when neither an external IP nor a usable `Host` header is known.
    pub relay_ip: Option<IpAddr>,
    /// Secret to mint REST credentials from (the first `--turn-secret`).
    pub secret: Option<String>,
    /// Validity of minted credentials, seconds.
    pub ttl: u32,
    /// Whether the "no secret" warning was logged already.
    pub warned: AtomicBool,
}

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IceServerEntry {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The `/api/ice-servers` answer: the TURN REST API fields plus `iceServers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IceServersResponse {
    pub username: String,
    pub password: String,
    pub ttl: u32,
    pub uris: Vec<String>,
    #[serde(rename = "iceServers")]
    pub ice_servers: Vec<IceServerEntry>,
}

/// The host of a `Host` header without its port, if it is a plausible host name or address
/// (anything else is ignored, so a forged header cannot inject text into URIs).
pub fn host_of(header: &str) -> Option<String> {
    let h = header.trim();
    let host = if let Some(rest) = h.strip_prefix('[') {
        // [v6]:port or [v6]
        let end = rest.find(']')?;
        let inner = rest.get(..end)?;
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        let after = rest.get(end + 1..)?;
        if !(after.is_empty() || valid_port_suffix(after)) {
            return None;
        }
        format!("[{inner}]")
    } else {
        let name = match h.rsplit_once(':') {
            Some((n, p)) if valid_port_suffix(&format!(":{p}")) => n,
            Some(_) => return None,
            None => h,
        };
        if name.is_empty()
            || name.len() > 253
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        {
            return None;
        }
        name.to_ascii_lowercase()
    };
    Some(host)
}

fn valid_port_suffix(s: &str) -> bool {
    s.strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

fn ip_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

impl IceConfig {
    /// The host to put in URIs: the external IP, else the request's `Host` (without port), else
    /// the relay IP, else 127.0.0.1.
    pub fn host(&self, request_host: Option<&str>) -> String {
        if let Some(ip) = self.external {
            return ip_host(ip);
        }
        if let Some(h) = request_host.and_then(host_of) {
            return h;
        }
        match self.relay_ip {
            Some(ip) if !ip.is_unspecified() => ip_host(ip),
            _ => "127.0.0.1".to_string(),
        }
    }

    /// `stun:` URIs (one per distinct TURN port).
    pub fn stun_uris(&self, host: &str) -> Vec<String> {
        let mut out = Vec::new();
        for a in &self.turn {
            push_unique(&mut out, format!("stun:{host}:{}", a.port()));
        }
        out
    }

    /// `turn:` (UDP and TCP) and `turns:` URIs.
    pub fn turn_uris(&self, host: &str) -> Vec<String> {
        let mut out = Vec::new();
        for a in &self.turn {
            push_unique(&mut out, format!("turn:{host}:{}?transport=udp", a.port()));
            push_unique(&mut out, format!("turn:{host}:{}?transport=tcp", a.port()));
        }
        for a in &self.turns {
            push_unique(&mut out, format!("turns:{host}:{}?transport=tcp", a.port()));
        }
        out
    }

    /// The `iceServers` array for `user` (the peer id): STUN, then TURN with fresh REST
    /// credentials. Without a secret only the STUN entry is given (and a warning logged once).
    pub fn ice_servers(&self, request_host: Option<&str>, user: &str) -> Vec<IceServerEntry> {
        let host = self.host(request_host);
        let mut out = Vec::new();
        let stun = self.stun_uris(&host);
        if !stun.is_empty() {
            out.push(IceServerEntry {
                urls: stun,
                username: None,
                credential: None,
            });
        }
        let turn = self.turn_uris(&host);
        match &self.secret {
            Some(secret) if !turn.is_empty() => {
                let c = rest_credentials(secret, user, self.ttl, now_unix());
                out.push(IceServerEntry {
                    urls: turn,
                    username: Some(c.username),
                    credential: Some(c.password),
                });
            }
            Some(_) => {}
            None => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "no --turn-secret: signaling hands out STUN only (static --user \
                         credentials are never given to clients)"
                    );
                }
            }
        }
        out
    }

    /// [`IceConfig::ice_servers`] as JSON.
    pub fn ice_servers_json(&self, request_host: Option<&str>, user: &str) -> Value {
        serde_json::to_value(self.ice_servers(request_host, user)).unwrap_or(Value::Array(vec![]))
    }

    /// The `/api/ice-servers` answer for `user`, or `None` without a secret.
    pub fn rest_response(
        &self,
        request_host: Option<&str>,
        user: &str,
    ) -> Option<IceServersResponse> {
        let secret = self.secret.as_ref()?;
        let host = self.host(request_host);
        let c = rest_credentials(secret, user, self.ttl, now_unix());
        let uris = self.turn_uris(&host);
        let mut ice_servers = Vec::new();
        let stun = self.stun_uris(&host);
        if !stun.is_empty() {
            ice_servers.push(IceServerEntry {
                urls: stun,
                username: None,
                credential: None,
            });
        }
        if !uris.is_empty() {
            ice_servers.push(IceServerEntry {
                urls: uris.clone(),
                username: Some(c.username.clone()),
                credential: Some(c.password.clone()),
            });
        }
        Some(IceServersResponse {
            username: c.username,
            password: c.password,
            ttl: c.ttl,
            uris,
            ice_servers,
        })
    }
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cfg() -> IceConfig {
        IceConfig {
            turn: vec![
                "0.0.0.0:3478".parse().unwrap(),
                "[::]:3478".parse().unwrap(),
            ],
            turns: vec!["0.0.0.0:5349".parse().unwrap()],
            external: None,
            relay_ip: Some("10.0.0.5".parse().unwrap()),
            secret: Some("s3cret".into()),
            ttl: 600,
            warned: AtomicBool::new(false),
        }
    }

    #[test]
    fn host_header_parsing() {
        assert_eq!(host_of("example.org:8080").as_deref(), Some("example.org"));
        assert_eq!(host_of("Example.org").as_deref(), Some("example.org"));
        assert_eq!(host_of("192.0.2.7:80").as_deref(), Some("192.0.2.7"));
        assert_eq!(
            host_of("[2001:db8::1]:443").as_deref(),
            Some("[2001:db8::1]")
        );
        assert_eq!(host_of("[2001:db8::1]").as_deref(), Some("[2001:db8::1]"));
        assert_eq!(host_of("evil/x:1"), None);
        assert_eq!(host_of("a b"), None);
        assert_eq!(host_of(""), None);
        assert_eq!(host_of("host:port"), None);
        assert_eq!(host_of("[nothex]:1"), None);
    }

    #[test]
    fn host_choice() {
        let mut c = cfg();
        assert_eq!(c.host(Some("turn.example.org:8080")), "turn.example.org");
        assert_eq!(c.host(None), "10.0.0.5");
        assert_eq!(c.host(Some("bad host")), "10.0.0.5");
        c.external = Some("203.0.113.9".parse().unwrap());
        assert_eq!(c.host(Some("turn.example.org")), "203.0.113.9");
        c.external = Some("2001:db8::9".parse().unwrap());
        assert_eq!(c.host(None), "[2001:db8::9]");
    }

    #[test]
    fn entries() {
        let c = cfg();
        let s = c.ice_servers(Some("h.example:80"), "3fa2b0c1");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].urls, vec!["stun:h.example:3478"]);
        assert_eq!(s[0].username, None);
        assert_eq!(
            s[1].urls,
            vec![
                "turn:h.example:3478?transport=udp",
                "turn:h.example:3478?transport=tcp",
                "turns:h.example:5349?transport=tcp"
            ]
        );
        assert!(s[1].username.as_deref().unwrap().ends_with(":3fa2b0c1"));
        let mut out = [0u8; 28];
        let expect =
            icebreaker_stun::rest_password(b"s3cret", s[1].username.as_deref().unwrap(), &mut out);
        assert_eq!(s[1].credential.as_deref(), Some(expect));

        let mut c = cfg();
        c.secret = None;
        let s = c.ice_servers(None, "3fa2b0c1");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].urls, vec!["stun:10.0.0.5:3478"]);
        assert!(c.rest_response(None, "u").is_none());
        let v = c.ice_servers_json(None, "x");
        assert!(v[0].get("username").is_none());
    }

    #[test]
    fn rest_response_shape() {
        let c = cfg();
        let r = c.rest_response(None, "alice").unwrap();
        assert!(r.username.ends_with(":alice"));
        assert_eq!(r.ttl, 600);
        assert_eq!(r.uris.len(), 3);
        assert_eq!(r.ice_servers.len(), 2);
        assert_eq!(
            r.ice_servers[1].credential.as_deref(),
            Some(r.password.as_str())
        );
    }
}
