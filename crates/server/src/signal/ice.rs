//! `iceServers` for `joined`/`resumed` and `GET /api/ice-servers` (TURN REST API draft).
//!
//! In a cluster the TURN URIs are those of the least loaded nodes ([`Fleet`], set by the
//! cluster from its registry), so that new calls spread over the fleet; this node's own are
//! handed out while no fleet is known. STUN URIs are always this node's. Every node checks REST
//! credentials against the same secret, so one username and credential cover every URI.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
    /// The TURN nodes to hand out instead of this one's (cluster). Shared: a reload keeps it.
    pub fleet: Arc<Fleet>,
}

/// At most this many nodes of a [`Fleet`] are handed out: a browser allocates on every TURN URI
/// it is given, so a long list costs every node allocations that go unused.
pub const FLEET_MAX_NODES: usize = 4;

/// A TURN node of the fleet, as clients reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetNode {
    /// The node's id (for logs).
    pub id: String,
    /// UDP+TCP TURN listeners (a `turn:` URI for each transport). Unspecified addresses and
    /// port 0 are skipped.
    pub turn: Vec<SocketAddr>,
    /// TLS TURN listeners, each with the name in its certificate when known: the `turns:` URI's
    /// host, since clients verify the certificate against it (else the IP address is used).
    pub turns: Vec<(SocketAddr, Option<String>)>,
}

/// The TURN nodes `iceServers` names, least loaded first (this node among them when it is one
/// of the least loaded). Empty: this node's own listeners. Updated by the cluster every few
/// seconds; read once per `iceServers` built.
#[derive(Debug, Default)]
pub struct Fleet {
    nodes: parking_lot::RwLock<Arc<[FleetNode]>>,
}

impl Fleet {
    /// Hand out `nodes` (least loaded first; at most [`FLEET_MAX_NODES`] are used).
    pub fn set(&self, nodes: Vec<FleetNode>) {
        *self.nodes.write() = nodes.into();
    }

    /// Back to this node's own listeners.
    pub fn clear(&self) {
        self.set(Vec::new());
    }

    /// The nodes set last.
    pub fn nodes(&self) -> Arc<[FleetNode]> {
        self.nodes.read().clone()
    }

    /// The `turn:`/`turns:` URIs of the fleet, in its order (empty without a usable address).
    fn turn_uris(&self) -> Vec<String> {
        let nodes = self.nodes();
        let mut out = Vec::new();
        for node in nodes.iter().take(FLEET_MAX_NODES) {
            for a in node.turn.iter().filter(|a| usable(a)) {
                let host = ip_host(a.ip());
                push_unique(&mut out, format!("turn:{host}:{}?transport=udp", a.port()));
                push_unique(&mut out, format!("turn:{host}:{}?transport=tcp", a.port()));
            }
            for (a, name) in node.turns.iter().filter(|(a, _)| usable(a)) {
                // A name that is not a plain host name is not put into a URI.
                let host = name
                    .as_deref()
                    .and_then(host_of)
                    .filter(|h| !h.starts_with('['))
                    .unwrap_or_else(|| ip_host(a.ip()));
                push_unique(&mut out, format!("turns:{host}:{}?transport=tcp", a.port()));
            }
        }
        out
    }
}

/// Whether a client can reach a listener at `a` (an address the node advertised as bound to
/// every interface is not one).
fn usable(a: &SocketAddr) -> bool {
    !a.ip().is_unspecified() && a.port() != 0
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
    match ip.to_canonical() {
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

    /// `turn:` (UDP and TCP) and `turns:` URIs: the fleet's when one is set, else this node's
    /// (with `host`).
    pub fn turn_uris(&self, host: &str) -> Vec<String> {
        let fleet = self.fleet.turn_uris();
        if !fleet.is_empty() {
            return fleet;
        }
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
            fleet: Default::default(),
        }
    }

    fn node(id: &str, turn: &[&str], turns: &[(&str, Option<&str>)]) -> FleetNode {
        FleetNode {
            id: id.into(),
            turn: turn.iter().map(|a| a.parse().unwrap()).collect(),
            turns: turns
                .iter()
                .map(|(a, n)| (a.parse().unwrap(), n.map(str::to_owned)))
                .collect(),
        }
    }

    #[test]
    fn a_fleet_replaces_this_nodes_turn_uris_in_its_order() {
        let c = cfg();
        c.fleet.set(vec![
            node(
                "b",
                &["198.51.100.2:3478", "[2001:db8::2]:3478"],
                &[("198.51.100.2:5349", Some("turn-b.example.org"))],
            ),
            node("a", &["198.51.100.1:3478"], &[("198.51.100.1:5349", None)]),
        ]);
        let s = c.ice_servers(Some("h.example:80"), "3fa2b0c1");
        assert_eq!(s.len(), 2);
        // STUN stays this node's.
        assert_eq!(s[0].urls, vec!["stun:h.example:3478"]);
        assert_eq!(
            s[1].urls,
            vec![
                "turn:198.51.100.2:3478?transport=udp",
                "turn:198.51.100.2:3478?transport=tcp",
                "turn:[2001:db8::2]:3478?transport=udp",
                "turn:[2001:db8::2]:3478?transport=tcp",
                "turns:turn-b.example.org:5349?transport=tcp",
                "turn:198.51.100.1:3478?transport=udp",
                "turn:198.51.100.1:3478?transport=tcp",
                "turns:198.51.100.1:5349?transport=tcp",
            ]
        );
        // One REST credential for all of them (every node knows the secret).
        let mut out = [0u8; 28];
        let user = s[1].username.as_deref().unwrap();
        assert!(user.ends_with(":3fa2b0c1"));
        let expect = icebreaker_stun::rest_password(b"s3cret", user, &mut out);
        assert_eq!(s[1].credential.as_deref(), Some(expect));
        let r = c.rest_response(None, "alice").unwrap();
        assert_eq!(r.uris, s[1].urls);
        assert_eq!(r.ice_servers[1].urls, s[1].urls);
        // Cleared: this node's own again.
        c.fleet.clear();
        let s = c.ice_servers(Some("h.example:80"), "3fa2b0c1");
        assert_eq!(s[1].urls[0], "turn:h.example:3478?transport=udp");
        assert_eq!(s[1].urls.len(), 3);
    }

    #[test]
    fn fleet_addresses_no_client_can_use_are_skipped() {
        let c = cfg();
        // Nothing usable: as if there were no fleet.
        c.fleet.set(vec![node(
            "x",
            &["0.0.0.0:3478", "198.51.100.3:0"],
            &[("[::]:5349", Some("turn-x.example.org"))],
        )]);
        assert_eq!(
            c.turn_uris("h.example"),
            vec![
                "turn:h.example:3478?transport=udp",
                "turn:h.example:3478?transport=tcp",
                "turns:h.example:5349?transport=tcp"
            ]
        );
        // A name that does not belong in a URI is replaced by the address; IPv4 written as
        // IPv6 is written as IPv4.
        c.fleet.set(vec![node(
            "y",
            &["[::ffff:198.51.100.4]:3478"],
            &[("198.51.100.4:5349", Some("evil/x?transport=udp"))],
        )]);
        assert_eq!(
            c.turn_uris("h.example"),
            vec![
                "turn:198.51.100.4:3478?transport=udp",
                "turn:198.51.100.4:3478?transport=tcp",
                "turns:198.51.100.4:5349?transport=tcp"
            ]
        );
    }

    #[test]
    fn at_most_fleet_max_nodes_are_handed_out() {
        let c = cfg();
        let nodes: Vec<FleetNode> = (1..=FLEET_MAX_NODES + 2)
            .map(|i| node(&format!("n{i}"), &[&format!("198.51.100.{i}:3478")], &[]))
            .collect();
        c.fleet.set(nodes);
        let uris = c.turn_uris("h.example");
        assert_eq!(uris.len(), 2 * FLEET_MAX_NODES);
        assert_eq!(uris[0], "turn:198.51.100.1:3478?transport=udp");
        assert_eq!(c.fleet.nodes().len(), FLEET_MAX_NODES + 2);
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
