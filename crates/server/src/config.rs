//! Server configuration: command-line flags, `ICEBREAKER_*` environment variables, an optional
//! TOML file and defaults, in that order of precedence (flag > env > file > default).
//!
//! Every setting has the same name everywhere: TOML key `relay_ports`, environment variable
//! `ICEBREAKER_RELAY_PORTS`, flag `--relay-ports`. Two list flags are singular because they are
//! repeated: `--user` (`users`, `ICEBREAKER_USERS`), `--turn-secret` (`turn_secrets`,
//! `ICEBREAKER_TURN_SECRETS`) and `--signal-origin` (`signal_origins`,
//! `ICEBREAKER_SIGNAL_ORIGINS`). See docs/CONFIG.md.
//!
//! [`Config::load`] rejects values that cannot be represented at all (an address that does not
//! parse, a user without `:`), listing every such mistake at once in a [`LoadError`];
//! [`Config::check`] then reports everything that parses but is wrong or risky, as
//! [`Problem`]s with a [`Severity`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use ipnet::IpNet;
use serde::Deserialize;

/// Default `turn_listen`.
pub const DEFAULT_TURN_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 3478);
/// Default `turns_listen` when both `tls_cert` and `tls_key` are set.
pub const DEFAULT_TURNS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5349);
/// Default `http_listen`.
pub const DEFAULT_HTTP_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
pub const DEFAULT_RELAY_PORTS: (u16, u16) = (49152, 65535);
pub const DEFAULT_REALM: &str = "icebreaker";
pub const DEFAULT_MAX_ALLOCATIONS: usize = 10_000;
pub const DEFAULT_MAX_ALLOCATIONS_PER_USER: usize = 100;
pub const DEFAULT_MAX_LIFETIME: u32 = 3600;
pub const DEFAULT_LIFETIME: u32 = 600;
pub const DEFAULT_NONCE_LIFETIME: u32 = 600;
pub const DEFAULT_CREDENTIAL_TTL: u32 = 86_400;
pub const DEFAULT_LOG: &str = "info";
/// Default `signal_grace`, seconds.
pub const DEFAULT_SIGNAL_GRACE: u32 = 30;
pub const DEFAULT_SIGNAL_REPLAY_LIMIT: usize = 1024;
pub const DEFAULT_SIGNAL_MAX_MESSAGE: usize = 65_536;
/// Default `signal_rate`, messages per second per connection (burst twice that).
pub const DEFAULT_SIGNAL_RATE: u32 = 50;
pub const DEFAULT_SIGNAL_MAX_ROOMS: usize = 10_000;
pub const DEFAULT_SIGNAL_MAX_SESSIONS: usize = 10_000;
pub const DEFAULT_SIGNAL_ROOM_CAPACITY: usize = 50;
/// Default `signal_max_buffered`, bytes (256 MiB).
pub const DEFAULT_SIGNAL_MAX_BUFFERED: usize = 256 << 20;
pub const DEFAULT_ALLOCATION_RATE_PER_IP: u32 = 100;
pub const DEFAULT_UNAUTH_REPLY_BUDGET: u32 = 32768;
pub const DEFAULT_UNAUTH_REPLY_PER_SOURCE: u32 = 2000;
pub const DEFAULT_CONN_RATE_PER_IP: u32 = 200;
pub const DEFAULT_MAX_CONNS_PER_IP: usize = 1000;
pub const DEFAULT_JOIN_RATE_PER_IP: u32 = 100;
pub const DEFAULT_DRAIN_TIMEOUT: u32 = 60;
/// Default `sfu_listen`: the SFU's media port (UDP, and ICE-TCP on the same port number).
pub const DEFAULT_SFU_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 3479);
/// Default `sfu_mesh_max`.
pub const DEFAULT_SFU_MESH_MAX: u32 = 4;

/// Default SOFTWARE attribute value: `Icebreaker <version>`.
pub fn default_software() -> String {
    format!("Icebreaker {}", env!("CARGO_PKG_VERSION"))
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A public address announced in XOR-RELAYED-ADDRESS instead of the local relay address (for a
/// server behind 1:1 NAT). `private` selects which relay address it replaces; without it the
/// mapping applies to the relay address of the same family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExternalIp {
    pub public: IpAddr,
    pub private: Option<IpAddr>,
}

impl std::str::FromStr for ExternalIp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (public, private) = match s.split_once('/') {
            Some((p, q)) => (p, Some(q)),
            None => (s, None),
        };
        let public = public
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| format!("{public:?} is not an IP address"))?;
        let private = match private {
            Some(q) => Some(
                q.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| format!("{q:?} is not an IP address"))?,
            ),
            None => None,
        };
        Ok(ExternalIp { public, private })
    }
}

impl fmt::Display for ExternalIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.private {
            Some(p) => write!(f, "{}/{}", self.public, p),
            None => write!(f, "{}", self.public),
        }
    }
}

/// Every setting of `icebreaker serve` (also accepted by `icebreaker config check`).
///
/// Values are kept as given (mostly strings) so that [`Config::load`] can report every mistake
/// at once, naming the setting, instead of stopping at the first one.
#[derive(Args, Clone, Default)]
pub struct ServeArgs {
    /// TOML configuration file (keys as in docs/CONFIG.md)
    #[arg(long, env = "ICEBREAKER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// TURN/STUN listen address, UDP and TCP (repeatable) [default: 0.0.0.0:3478]
    #[arg(
        long,
        env = "ICEBREAKER_TURN_LISTEN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub turn_listen: Vec<String>,

    /// TURN/STUN over TLS listen address (repeatable) [default: 0.0.0.0:5349 when a certificate is set]
    #[arg(
        long,
        env = "ICEBREAKER_TURNS_LISTEN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub turns_listen: Vec<String>,

    /// TLS certificate chain (PEM, leaf first)
    #[arg(long, env = "ICEBREAKER_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM)
    #[arg(long, env = "ICEBREAKER_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Local address relay sockets bind to: at most one IPv4 and one IPv6 (repeatable) [default: auto]
    #[arg(
        long,
        env = "ICEBREAKER_RELAY_IP",
        value_name = "IP",
        value_delimiter = ','
    )]
    pub relay_ip: Vec<String>,

    /// Relay port range [default: 49152-65535]
    #[arg(long, env = "ICEBREAKER_RELAY_PORTS", value_name = "LO-HI")]
    pub relay_ports: Option<String>,

    /// Public address announced for relays, behind 1:1 NAT (repeatable)
    #[arg(
        long,
        env = "ICEBREAKER_EXTERNAL_IP",
        value_name = "PUBLIC[/PRIVATE]",
        value_delimiter = ','
    )]
    pub external_ip: Vec<String>,

    /// Authentication realm [default: icebreaker]
    #[arg(long, env = "ICEBREAKER_REALM", value_name = "REALM")]
    pub realm: Option<String>,

    /// Static user NAME:PASSWORD (repeatable; split at the first ':'; the environment variable holds one)
    #[arg(
        long = "user",
        env = "ICEBREAKER_USERS",
        value_name = "NAME:PASS",
        hide_env_values = true
    )]
    pub users: Vec<String>,

    /// Shared secret for TURN REST credentials (repeatable: all are accepted, for rotation)
    #[arg(
        long = "turn-secret",
        env = "ICEBREAKER_TURN_SECRETS",
        value_name = "SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub turn_secrets: Vec<String>,

    /// Peer network relays may reach although refused by default (private, loopback, ...) (repeatable; a bare IP is a /32 or /128)
    #[arg(
        long,
        env = "ICEBREAKER_ALLOW_PEER",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub allow_peer: Vec<String>,

    /// Peer network relays must not reach, in addition to the defaults; wins over --allow-peer (repeatable)
    #[arg(
        long,
        env = "ICEBREAKER_DENY_PEER",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub deny_peer: Vec<String>,

    /// HTTP listen address for /metrics, /healthz, /readyz [default: 127.0.0.1:8080]
    #[arg(long, env = "ICEBREAKER_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<String>,

    /// Maximum number of allocations in total [default: 10000]
    #[arg(long, env = "ICEBREAKER_MAX_ALLOCATIONS", value_name = "N")]
    pub max_allocations: Option<usize>,

    /// Maximum number of allocations per user [default: 100]
    #[arg(long, env = "ICEBREAKER_MAX_ALLOCATIONS_PER_USER", value_name = "N")]
    pub max_allocations_per_user: Option<usize>,

    /// UDP worker threads, each with its own listener socket and share of the allocations;
    /// 0 means one per CPU core [default: 0]
    #[arg(long, env = "ICEBREAKER_UDP_WORKERS", value_name = "N")]
    pub udp_workers: Option<usize>,

    /// Longest allocation lifetime a client may request, seconds [default: 3600]
    #[arg(long, env = "ICEBREAKER_MAX_LIFETIME", value_name = "SECS")]
    pub max_lifetime: Option<u32>,

    /// Allocation lifetime when the client asks for none or less, seconds [default: 600]
    #[arg(long, env = "ICEBREAKER_DEFAULT_LIFETIME", value_name = "SECS")]
    pub default_lifetime: Option<u32>,

    /// How long a NONCE stays valid, seconds [default: 600]
    #[arg(long, env = "ICEBREAKER_NONCE_LIFETIME", value_name = "SECS")]
    pub nonce_lifetime: Option<u32>,

    /// Lifetime of TURN REST credentials this server hands out, seconds [default: 86400]
    #[arg(long, env = "ICEBREAKER_CREDENTIAL_TTL", value_name = "SECS")]
    pub credential_ttl: Option<u32>,

    /// SOFTWARE attribute value; empty = send none [default: "Icebreaker <version>"]
    #[arg(long, env = "ICEBREAKER_SOFTWARE", value_name = "TEXT")]
    pub software: Option<String>,

    /// Log filter (tracing EnvFilter syntax); RUST_LOG is used when this is unset [default: info]
    #[arg(long, env = "ICEBREAKER_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Log format [default: text]
    #[arg(long, env = "ICEBREAKER_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Signaling: seconds a disconnected session may resume before the others see it leave [default: 30]
    #[arg(long, env = "ICEBREAKER_SIGNAL_GRACE", value_name = "SECS")]
    pub signal_grace: Option<u32>,

    /// Signaling: unacknowledged messages kept per session for resume [default: 1024]
    #[arg(long, env = "ICEBREAKER_SIGNAL_REPLAY_LIMIT", value_name = "N")]
    pub signal_replay_limit: Option<usize>,

    /// Signaling: largest client message, bytes [default: 65536]
    #[arg(long, env = "ICEBREAKER_SIGNAL_MAX_MESSAGE", value_name = "BYTES")]
    pub signal_max_message: Option<usize>,

    /// Signaling: messages per second per connection, burst twice that [default: 50]
    #[arg(long, env = "ICEBREAKER_SIGNAL_RATE", value_name = "N")]
    pub signal_rate: Option<u32>,

    /// Signaling: maximum number of rooms [default: 10000]
    #[arg(long, env = "ICEBREAKER_SIGNAL_MAX_ROOMS", value_name = "N")]
    pub signal_max_rooms: Option<usize>,

    /// Signaling: maximum number of sessions [default: 10000]
    #[arg(long, env = "ICEBREAKER_SIGNAL_MAX_SESSIONS", value_name = "N")]
    pub signal_max_sessions: Option<usize>,

    /// Signaling: bytes held for unacknowledged messages in all sessions together; beyond it
    /// signal/broadcast get server_full [default: 268435456]
    #[arg(long, env = "ICEBREAKER_SIGNAL_MAX_BUFFERED", value_name = "BYTES")]
    pub signal_max_buffered: Option<usize>,

    /// Signaling: largest room capacity a client may ask for (and the default one) [default: 50]
    #[arg(long, env = "ICEBREAKER_SIGNAL_ROOM_CAPACITY", value_name = "N")]
    pub signal_room_capacity: Option<usize>,

    /// Signaling: HS256 secret of room tokens (JWT); when set every join needs a token
    #[arg(
        long,
        env = "ICEBREAKER_SIGNAL_TOKEN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub signal_token_secret: Option<String>,

    /// Signaling: browser Origin allowed to connect, e.g. https://app.example.org, or * for any
    /// (repeatable) [default: the server's own origin only]
    #[arg(
        long = "signal-origin",
        env = "ICEBREAKER_SIGNAL_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub signal_origins: Vec<String>,

    /// Signaling: serve the socket.io protocol (v4, the classic WebRTC codelab's events) at
    /// /socket.io/ on the HTTP listener (true or false) [default: true]
    #[arg(long, env = "ICEBREAKER_SOCKETIO", value_name = "BOOL")]
    pub socketio: Option<bool>,

    /// Key required by /api/ice-servers (?key=K or Authorization: Bearer K) [default: none, open]
    #[arg(
        long,
        env = "ICEBREAKER_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,

    /// New TURN allocations per second per client address (an IPv4 address, an IPv6 /64), burst ten times that; 0 = no limit [default: 100]
    #[arg(long, env = "ICEBREAKER_ALLOCATION_RATE_PER_IP", value_name = "N")]
    pub allocation_rate_per_ip: Option<u32>,

    /// Bytes per second of UDP answers to unauthenticated requests over all sources, besides half the bytes those requests bring; 0 = no limit [default: 32768]
    #[arg(long, env = "ICEBREAKER_UNAUTH_REPLY_BUDGET", value_name = "N")]
    pub unauth_reply_budget: Option<u32>,

    /// Bytes of UDP answers to unauthenticated requests per client address per 10 seconds; 0 = no limit [default: 2000]
    #[arg(long, env = "ICEBREAKER_UNAUTH_REPLY_PER_SOURCE", value_name = "N")]
    pub unauth_reply_per_source: Option<u32>,

    /// New TCP/TLS connections per second per client address on the TURN and HTTP listeners, burst ten times that; 0 = no limit [default: 200]
    #[arg(long, env = "ICEBREAKER_CONN_RATE_PER_IP", value_name = "N")]
    pub conn_rate_per_ip: Option<u32>,

    /// Open TCP/TLS connections per client address on the TURN and HTTP listeners; 0 = no limit [default: 1000]
    #[arg(long, env = "ICEBREAKER_MAX_CONNS_PER_IP", value_name = "N")]
    pub max_conns_per_ip: Option<usize>,

    /// Signaling joins per second per client address, burst ten times that; 0 = no limit [default: 100]
    #[arg(long, env = "ICEBREAKER_JOIN_RATE_PER_IP", value_name = "N")]
    pub join_rate_per_ip: Option<u32>,

    /// Seconds a drain waits for allocations and signaling sessions to end before the process exits [default: 60]
    #[arg(long, env = "ICEBREAKER_DRAIN_TIMEOUT", value_name = "N")]
    pub drain_timeout: Option<u32>,

    /// TURN ALTERNATE-SERVER (IP:PORT): while draining or full, new Allocates get 300 Try
    /// Alternate pointing there; in a cluster the least-loaded other node is used instead
    /// [default: none, 508 while draining]
    #[arg(long, env = "ICEBREAKER_ALTERNATE_SERVER", value_name = "ADDR")]
    pub alternate_server: Option<String>,

    /// Bearer token required by /metrics and /admin/* [default: none]
    #[arg(
        long,
        env = "ICEBREAKER_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// A separate listener for /metrics and /admin/* (they then leave http_listen) [default: none]
    #[arg(long, env = "ICEBREAKER_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<String>,

    /// The SFU's media address: UDP, and ICE-TCP on the same port; `off` = no SFU [default: 0.0.0.0:3479]
    #[arg(long, env = "ICEBREAKER_SFU_LISTEN", value_name = "ADDR|off")]
    pub sfu_listen: Option<String>,

    /// Rooms created as `auto` become SFU rooms when a join would make them larger than this [default: 4]
    #[arg(long, env = "ICEBREAKER_SFU_MESH_MAX", value_name = "N")]
    pub sfu_mesh_max: Option<u32>,

    /// Join a cluster through this Redis (`redis://[user:password@]host:port[/db]`): rooms,
    /// sessions and TURN nodes are shared with the other nodes [default: none, one node]
    #[arg(
        long,
        env = "ICEBREAKER_CLUSTER",
        value_name = "URL",
        hide_env_values = true
    )]
    pub cluster: Option<String>,

    /// This node's id in the cluster (letters, digits, `-_.`, up to 64) [default: random per start]
    #[arg(long, env = "ICEBREAKER_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,

    /// Prefix of every Redis key of the cluster (several clusters can share one Redis) [default: ib:]
    #[arg(long, env = "ICEBREAKER_CLUSTER_PREFIX", value_name = "PREFIX")]
    pub cluster_prefix: Option<String>,

    /// SIP gateway: the SIP server or trunk that /sip (SIP over WebSocket) clients reach through
    /// Icebreaker, e.g. sip:pbx.example.org:5060 (UDP), sip:10.0.0.8;transport=tcp or
    /// sips:pbx.example.org (TLS, port 5061) [default: none, the gateway is off]
    #[arg(long, env = "ICEBREAKER_SIP_UPSTREAM", value_name = "SIP-URI")]
    pub sip_upstream: Option<String>,

    /// SIP gateway: the local address of the socket toward sip_upstream [default: 0.0.0.0:5060]
    #[arg(long, env = "ICEBREAKER_SIP_LISTEN", value_name = "ADDR")]
    pub sip_listen: Option<String>,

    /// SIP gateway: room members may have the server dial a phone (the SDK's call.dial(uri)),
    /// through sip_upstream; with a signal_token_secret their token must grant `dial`
    /// (true or false) [default: false]
    #[arg(long, env = "ICEBREAKER_SIP_DIAL", value_name = "BOOL")]
    pub sip_dial: Option<bool>,

    /// SIP gateway: the identity calls dialed by the server come from (From), e.g.
    /// sip:webrtc@pbx.example.org [default: sip:<sip_username or icebreaker>@<upstream host>]
    #[arg(long, env = "ICEBREAKER_SIP_FROM", value_name = "SIP-URI")]
    pub sip_from: Option<String>,

    /// SIP gateway: the user name answering the upstream's digest challenges for calls the
    /// server dials [default: none]
    #[arg(long, env = "ICEBREAKER_SIP_USERNAME", value_name = "USER")]
    pub sip_username: Option<String>,

    /// SIP gateway: the password for sip_username [default: none]
    #[arg(long, env = "ICEBREAKER_SIP_PASSWORD", value_name = "PASSWORD")]
    pub sip_password: Option<String>,
    /// SIP gateway: CA certificates (PEM) that a TLS sip_upstream's certificate must chain to,
    /// instead of the system CA bundle (for a PBX with a private CA) [default: the system bundle]
    #[arg(long, env = "ICEBREAKER_SIP_TLS_CA", value_name = "FILE")]
    pub sip_tls_ca: Option<PathBuf>,
}

/// The TOML file. Same keys as the flags, with underscores.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    turn_listen: Option<Vec<String>>,
    turns_listen: Option<Vec<String>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    relay_ip: Option<Vec<String>>,
    relay_ports: Option<String>,
    external_ip: Option<Vec<String>>,
    realm: Option<String>,
    users: Option<Vec<String>>,
    turn_secrets: Option<Vec<String>>,
    allow_peer: Option<Vec<String>>,
    deny_peer: Option<Vec<String>>,
    http_listen: Option<String>,
    max_allocations: Option<usize>,
    max_allocations_per_user: Option<usize>,
    udp_workers: Option<usize>,
    max_lifetime: Option<u32>,
    default_lifetime: Option<u32>,
    nonce_lifetime: Option<u32>,
    credential_ttl: Option<u32>,
    software: Option<String>,
    log: Option<String>,
    log_format: Option<LogFormat>,
    signal_grace: Option<u32>,
    signal_replay_limit: Option<usize>,
    signal_max_message: Option<usize>,
    signal_rate: Option<u32>,
    signal_max_rooms: Option<usize>,
    signal_max_sessions: Option<usize>,
    signal_room_capacity: Option<usize>,
    signal_max_buffered: Option<usize>,
    signal_token_secret: Option<String>,
    signal_origins: Option<Vec<String>>,
    socketio: Option<bool>,
    api_key: Option<String>,
    allocation_rate_per_ip: Option<u32>,
    unauth_reply_budget: Option<u32>,
    unauth_reply_per_source: Option<u32>,
    conn_rate_per_ip: Option<u32>,
    max_conns_per_ip: Option<usize>,
    join_rate_per_ip: Option<u32>,
    drain_timeout: Option<u32>,
    alternate_server: Option<String>,
    admin_token: Option<String>,
    admin_listen: Option<String>,
    sfu_listen: Option<String>,
    sfu_mesh_max: Option<u32>,
    cluster: Option<String>,
    node_id: Option<String>,
    cluster_prefix: Option<String>,
    sip_upstream: Option<String>,
    sip_listen: Option<String>,
    sip_dial: Option<bool>,
    sip_from: Option<String>,
    sip_username: Option<String>,
    sip_password: Option<String>,
    sip_tls_ca: Option<PathBuf>,
}

/// The resolved configuration. `Config::default()` is the configuration with no flags, no
/// environment and no file.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub turn_listen: Vec<SocketAddr>,
    pub turns_listen: Vec<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub relay_ip: Vec<IpAddr>,
    pub relay_ports: (u16, u16),
    pub external_ip: Vec<ExternalIp>,
    pub realm: String,
    pub users: Vec<(String, String)>,
    pub turn_secrets: Vec<String>,
    pub allow_peer: Vec<IpNet>,
    pub deny_peer: Vec<IpNet>,
    pub http_listen: SocketAddr,
    pub max_allocations: usize,
    pub max_allocations_per_user: usize,
    /// UDP worker threads (0: one per core).
    pub udp_workers: usize,
    pub max_lifetime: u32,
    pub default_lifetime: u32,
    pub nonce_lifetime: u32,
    pub credential_ttl: u32,
    pub software: String,
    pub log: String,
    pub log_format: LogFormat,
    /// Seconds a session without a stream is kept for resume.
    pub signal_grace: u32,
    pub signal_replay_limit: usize,
    /// Largest client message in bytes.
    pub signal_max_message: usize,
    /// Messages per second per connection (burst `2 ×`).
    pub signal_rate: u32,
    pub signal_max_rooms: usize,
    pub signal_max_sessions: usize,
    /// Largest capacity a room may have (also the capacity of rooms created without one).
    pub signal_room_capacity: usize,
    /// Bytes of unacknowledged messages held in all sessions together.
    pub signal_max_buffered: usize,
    /// HS256 secret of room tokens; `None` = joins need no token.
    pub signal_token_secret: Option<String>,
    /// Allowed browser origins (`scheme://host[:port]`, lower case); empty = any.
    pub signal_origins: Vec<String>,
    /// Serve socket.io (the WebRTC codelab's protocol) at `/socket.io/`.
    pub socketio: bool,
    /// Key protecting `/api/ice-servers`; `None` = open.
    pub api_key: Option<String>,
    pub allocation_rate_per_ip: u32,
    pub unauth_reply_budget: u32,
    pub unauth_reply_per_source: u32,
    pub conn_rate_per_ip: u32,
    pub max_conns_per_ip: usize,
    pub join_rate_per_ip: u32,
    pub drain_timeout: u32,
    /// ALTERNATE-SERVER for 300 Try Alternate while draining.
    pub alternate_server: Option<SocketAddr>,
    /// Token for /metrics and /admin/*; `None` = no token.
    pub admin_token: Option<String>,
    /// Separate listener for /metrics and /admin/*.
    pub admin_listen: Option<SocketAddr>,
    /// The SFU's media address; `None` = no SFU.
    pub sfu_listen: Option<SocketAddr>,
    pub sfu_mesh_max: u32,
    /// Redis URL of the cluster (`None`: one node, in-memory state).
    pub cluster: Option<String>,
    /// This node's id (`None`: random per start).
    pub node_id: Option<String>,
    /// Redis key prefix.
    pub cluster_prefix: String,
    /// The SIP server or trunk behind `/sip` (`None`: the SIP gateway is off).
    pub sip_upstream: Option<String>,
    /// Local address of the socket toward `sip_upstream`.
    pub sip_listen: SocketAddr,
    /// Members may have the server dial phones.
    pub sip_dial: bool,
    /// From of the calls the server dials.
    pub sip_from: Option<String>,
    /// Digest user name for the calls the server dials.
    pub sip_username: Option<String>,
    /// Digest password for `sip_username`.
    pub sip_password: Option<String>,
    /// CA certificates (PEM) a TLS `sip_upstream` is verified against; `None`: the system's.
    pub sip_tls_ca: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            turn_listen: vec![DEFAULT_TURN_LISTEN],
            turns_listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
            relay_ip: Vec::new(),
            relay_ports: DEFAULT_RELAY_PORTS,
            external_ip: Vec::new(),
            realm: DEFAULT_REALM.to_string(),
            users: Vec::new(),
            turn_secrets: Vec::new(),
            allow_peer: Vec::new(),
            deny_peer: Vec::new(),
            http_listen: DEFAULT_HTTP_LISTEN,
            max_allocations: DEFAULT_MAX_ALLOCATIONS,
            max_allocations_per_user: DEFAULT_MAX_ALLOCATIONS_PER_USER,
            udp_workers: 0,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            default_lifetime: DEFAULT_LIFETIME,
            nonce_lifetime: DEFAULT_NONCE_LIFETIME,
            credential_ttl: DEFAULT_CREDENTIAL_TTL,
            software: default_software(),
            log: DEFAULT_LOG.to_string(),
            log_format: LogFormat::Text,
            signal_grace: DEFAULT_SIGNAL_GRACE,
            signal_replay_limit: DEFAULT_SIGNAL_REPLAY_LIMIT,
            signal_max_message: DEFAULT_SIGNAL_MAX_MESSAGE,
            signal_rate: DEFAULT_SIGNAL_RATE,
            signal_max_rooms: DEFAULT_SIGNAL_MAX_ROOMS,
            signal_max_sessions: DEFAULT_SIGNAL_MAX_SESSIONS,
            signal_room_capacity: DEFAULT_SIGNAL_ROOM_CAPACITY,
            signal_max_buffered: DEFAULT_SIGNAL_MAX_BUFFERED,
            signal_token_secret: None,
            signal_origins: Vec::new(),
            socketio: true,
            api_key: None,
            allocation_rate_per_ip: DEFAULT_ALLOCATION_RATE_PER_IP,
            unauth_reply_budget: DEFAULT_UNAUTH_REPLY_BUDGET,
            unauth_reply_per_source: DEFAULT_UNAUTH_REPLY_PER_SOURCE,
            conn_rate_per_ip: DEFAULT_CONN_RATE_PER_IP,
            max_conns_per_ip: DEFAULT_MAX_CONNS_PER_IP,
            join_rate_per_ip: DEFAULT_JOIN_RATE_PER_IP,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            alternate_server: None,
            admin_token: None,
            admin_listen: None,
            sfu_listen: Some(DEFAULT_SFU_LISTEN),
            sfu_mesh_max: DEFAULT_SFU_MESH_MAX,
            cluster: None,
            node_id: None,
            cluster_prefix: "ib:".to_string(),
            sip_upstream: None,
            sip_listen: SocketAddr::from(([0, 0, 0, 0], 5060)),
            sip_dial: false,
            sip_from: None,
            sip_username: None,
            sip_password: None,
            sip_tls_ca: None,
        }
    }
}

/// Passwords and secrets are never printed.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users: Vec<String> = self
            .users
            .iter()
            .map(|(name, _)| format!("{name}:<redacted>"))
            .collect();
        f.debug_struct("Config")
            .field("turn_listen", &self.turn_listen)
            .field("turns_listen", &self.turns_listen)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("relay_ip", &self.relay_ip)
            .field("relay_ports", &self.relay_ports)
            .field("external_ip", &self.external_ip)
            .field("realm", &self.realm)
            .field("users", &users)
            .field(
                "turn_secrets",
                &format_args!("<{} redacted>", self.turn_secrets.len()),
            )
            .field("allow_peer", &self.allow_peer)
            .field("deny_peer", &self.deny_peer)
            .field("http_listen", &self.http_listen)
            .field("max_allocations", &self.max_allocations)
            .field("max_allocations_per_user", &self.max_allocations_per_user)
            .field("udp_workers", &self.udp_workers)
            .field("max_lifetime", &self.max_lifetime)
            .field("default_lifetime", &self.default_lifetime)
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field("credential_ttl", &self.credential_ttl)
            .field("software", &self.software)
            .field("log", &self.log)
            .field("log_format", &self.log_format)
            .field("signal_grace", &self.signal_grace)
            .field("signal_replay_limit", &self.signal_replay_limit)
            .field("signal_max_message", &self.signal_max_message)
            .field("signal_rate", &self.signal_rate)
            .field("signal_max_rooms", &self.signal_max_rooms)
            .field("signal_max_sessions", &self.signal_max_sessions)
            .field("signal_room_capacity", &self.signal_room_capacity)
            .field("signal_max_buffered", &self.signal_max_buffered)
            .field(
                "signal_token_secret",
                &self.signal_token_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("signal_origins", &self.signal_origins)
            .field("socketio", &self.socketio)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("allocation_rate_per_ip", &self.allocation_rate_per_ip)
            .field("unauth_reply_budget", &self.unauth_reply_budget)
            .field("unauth_reply_per_source", &self.unauth_reply_per_source)
            .field("conn_rate_per_ip", &self.conn_rate_per_ip)
            .field("max_conns_per_ip", &self.max_conns_per_ip)
            .field("join_rate_per_ip", &self.join_rate_per_ip)
            .field("drain_timeout", &self.drain_timeout)
            .field("alternate_server", &self.alternate_server)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("admin_listen", &self.admin_listen)
            .field("sfu_listen", &self.sfu_listen)
            .field("sfu_mesh_max", &self.sfu_mesh_max)
            .field(
                "cluster",
                &self.cluster.as_deref().map(crate::cluster::redact),
            )
            .field("node_id", &self.node_id)
            .field("cluster_prefix", &self.cluster_prefix)
            .field("sip_upstream", &self.sip_upstream)
            .field("sip_listen", &self.sip_listen)
            .field("sip_dial", &self.sip_dial)
            .field("sip_from", &self.sip_from)
            .field("sip_username", &self.sip_username)
            .field(
                "sip_password",
                &self.sip_password.as_ref().map(|_| "<redacted>"),
            )
            .field("sip_tls_ca", &self.sip_tls_ca)
            .finish()
    }
}

/// Values that could not be read at all. `problems` holds one sentence per mistake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    pub problems: Vec<String>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => f.write_str(one),
            many => {
                write!(f, "{} configuration mistakes:", many.len())?;
                for (i, p) in many.iter().enumerate() {
                    write!(f, "\n  {}. {p}", i + 1)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LoadError {}

/// How serious a [`Problem`] found by [`Config::check`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The server would work, but probably not as intended.
    Warning,
    /// The server must not start with this.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One finding of [`Config::check`]: a sentence naming the setting and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub message: String,
}

impl Problem {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity, self.message)
    }
}

/// `--flag` for a key (the two repeated lists have singular flags).
fn flag_of(key: &str) -> String {
    match key {
        "users" => "--user".to_string(),
        "turn_secrets" => "--turn-secret".to_string(),
        "signal_origins" => "--signal-origin".to_string(),
        k => format!("--{}", k.replace('_', "-")),
    }
}

fn env_of(key: &str) -> String {
    format!("ICEBREAKER_{}", key.to_ascii_uppercase())
}

/// Where a value came from, for error messages.
#[derive(Clone, Copy)]
enum Origin<'a> {
    Cli(&'static str),
    File(&'a Path),
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Cli(key) => write!(f, "(from {} or {})", flag_of(key), env_of(key)),
            Origin::File(p) => write!(f, "(in {})", p.display()),
        }
    }
}

struct Loader<'a> {
    file_path: Option<&'a Path>,
    problems: Vec<String>,
}

impl<'a> Loader<'a> {
    /// Pick the command-line/env list if non-empty, else the file's, else `None`, and parse
    /// every entry, recording failures. `show` decides whether the bad value may be echoed.
    fn list<T>(
        &mut self,
        key: &'static str,
        cli: &[String],
        file: Option<Vec<String>>,
        show: bool,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        let (values, origin) = if !cli.is_empty() {
            (cli.to_vec(), Origin::Cli(key))
        } else {
            let path = self.file_path?;
            (file?, Origin::File(path))
        };
        let mut out = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            match parse(v) {
                Ok(t) => out.push(t),
                Err(why) if show => self.problems.push(format!("{key}: {v:?} {origin} {why}")),
                Err(why) => self
                    .problems
                    .push(format!("{key}: entry #{} {origin} {why}", i + 1)),
            }
        }
        Some(out)
    }

    fn one<T>(
        &mut self,
        key: &'static str,
        cli: Option<String>,
        file: Option<String>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let (v, origin) = match (cli, file, self.file_path) {
            (Some(v), _, _) => (v, Origin::Cli(key)),
            (None, Some(v), Some(p)) => (v, Origin::File(p)),
            _ => return None,
        };
        match parse(&v) {
            Ok(t) => Some(t),
            Err(why) => {
                self.problems.push(format!("{key}: {v:?} {origin} {why}"));
                None
            }
        }
    }
}

fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        "is not an IP address with a port; write IP:PORT such as 0.0.0.0:3478 or [::]:3478"
            .to_string()
    })
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.trim().parse().map_err(|_| {
        "is not an IP address; write one such as 203.0.113.10 or 2001:db8::10".to_string()
    })
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    const HOW: &str = "is not a port range; write LO-HI with ports 1-65535, such as 49152-65535";
    let (lo, hi) = s.trim().split_once('-').ok_or_else(|| HOW.to_string())?;
    let lo: u16 = lo.trim().parse().map_err(|_| HOW.to_string())?;
    let hi: u16 = hi.trim().parse().map_err(|_| HOW.to_string())?;
    Ok((lo, hi))
}

fn parse_external_ip(s: &str) -> Result<ExternalIp, String> {
    s.parse::<ExternalIp>().map_err(|why| {
        format!(
            "is not PUBLIC or PUBLIC/PRIVATE ({why}); write e.g. 203.0.113.10 or 203.0.113.10/10.0.0.5"
        )
    })
}

/// Most UDP worker threads `udp_workers` may ask for (each is a thread with its own sockets).
pub const MAX_UDP_WORKERS: usize = 1024;

/// `NAME:PASSWORD`, split at the first `:` (passwords may contain `:`).
fn parse_user(s: &str) -> Result<(String, String), String> {
    s.split_once(':')
        .map(|(n, p)| (n.to_string(), p.to_string()))
        .ok_or_else(|| "has no ':'; write NAME:PASSWORD (split at the first ':')".to_string())
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    let parsed = if s.contains('/') {
        s.parse::<IpNet>().ok()
    } else {
        s.parse::<IpAddr>().ok().map(IpNet::from)
    };
    parsed.map(|n| n.trunc()).ok_or_else(|| {
        "is not an IP network; write ADDRESS/PREFIX such as 10.0.0.0/8 or fd00::/8, or a bare IP address"
            .to_string()
    })
}

fn parse_string(s: &str) -> Result<String, String> {
    Ok(s.to_string())
}

/// A browser origin as sent in the `Origin` header: `scheme://host[:port]`, no path. Returned
/// in lower case (origins compare case-insensitively in scheme and host).
pub fn parse_origin(s: &str) -> Result<String, String> {
    const HOW: &str =
        "is not an origin; write SCHEME://HOST[:PORT] without a path, such as https://app.example.org (or * for any)";
    let s = s.trim();
    if s == "*" {
        return Ok("*".into());
    }
    let (scheme, rest) = s.split_once("://").ok_or_else(|| HOW.to_string())?;
    let scheme_ok = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let host_ok = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'));
    if !scheme_ok || !host_ok {
        return Err(HOW.to_string());
    }
    Ok(format!("{scheme}://{rest}").to_ascii_lowercase())
}

impl Config {
    /// Resolve the configuration from parsed arguments (clap already merged flags with
    /// `ICEBREAKER_*` variables), the optional `--config` file, `RUST_LOG`, and defaults.
    ///
    /// On failure the error is a [`LoadError`] listing every value that could not be read.
    pub fn load(args: &ServeArgs) -> anyhow::Result<Config> {
        let rust_log = std::env::var("RUST_LOG")
            .ok()
            .filter(|s| !s.trim().is_empty());
        Ok(Self::load_with(args, rust_log)?)
    }

    /// [`Config::load`] with the value of `RUST_LOG` passed in (for tests).
    pub fn load_with(args: &ServeArgs, rust_log: Option<String>) -> Result<Config, LoadError> {
        let file = match &args.config {
            Some(path) => Some(read_file(path)?),
            None => None,
        };
        let path = args.config.as_deref();
        let f = file.unwrap_or_default();
        let mut l = Loader {
            file_path: path,
            problems: Vec::new(),
        };
        let d = Config::default();
        // Relative TLS paths in the file (certificate, key, sip_tls_ca) are relative to the
        // file's directory.
        let rel = |p: PathBuf| match path.and_then(Path::parent) {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p,
        };

        let tls_cert = args.tls_cert.clone().or(f.tls_cert.map(rel));
        let tls_key = args.tls_key.clone().or(f.tls_key.map(rel));
        let default_turns = if tls_cert.is_some() && tls_key.is_some() {
            vec![DEFAULT_TURNS_LISTEN]
        } else {
            Vec::new()
        };

        let config = Config {
            turn_listen: l
                .list(
                    "turn_listen",
                    &args.turn_listen,
                    f.turn_listen,
                    true,
                    parse_socket_addr,
                )
                .unwrap_or(d.turn_listen),
            turns_listen: l
                .list(
                    "turns_listen",
                    &args.turns_listen,
                    f.turns_listen,
                    true,
                    parse_socket_addr,
                )
                .unwrap_or(default_turns),
            tls_cert,
            tls_key,
            relay_ip: l
                .list("relay_ip", &args.relay_ip, f.relay_ip, true, parse_ip)
                .unwrap_or(d.relay_ip),
            relay_ports: l
                .one(
                    "relay_ports",
                    args.relay_ports.clone(),
                    f.relay_ports,
                    parse_port_range,
                )
                .unwrap_or(d.relay_ports),
            external_ip: l
                .list(
                    "external_ip",
                    &args.external_ip,
                    f.external_ip,
                    true,
                    parse_external_ip,
                )
                .unwrap_or(d.external_ip),
            realm: args.realm.clone().or(f.realm).unwrap_or(d.realm),
            users: l
                .list("users", &args.users, f.users, false, parse_user)
                .unwrap_or(d.users),
            turn_secrets: l
                .list(
                    "turn_secrets",
                    &args.turn_secrets,
                    f.turn_secrets,
                    false,
                    parse_string,
                )
                .unwrap_or(d.turn_secrets),
            allow_peer: l
                .list(
                    "allow_peer",
                    &args.allow_peer,
                    f.allow_peer,
                    true,
                    parse_net,
                )
                .unwrap_or(d.allow_peer),
            deny_peer: l
                .list("deny_peer", &args.deny_peer, f.deny_peer, true, parse_net)
                .unwrap_or(d.deny_peer),
            http_listen: l
                .one(
                    "http_listen",
                    args.http_listen.clone(),
                    f.http_listen,
                    parse_socket_addr,
                )
                .unwrap_or(d.http_listen),
            max_allocations: args
                .max_allocations
                .or(f.max_allocations)
                .unwrap_or(d.max_allocations),
            max_allocations_per_user: args
                .max_allocations_per_user
                .or(f.max_allocations_per_user)
                .unwrap_or(d.max_allocations_per_user),
            udp_workers: args.udp_workers.or(f.udp_workers).unwrap_or(d.udp_workers),
            max_lifetime: args
                .max_lifetime
                .or(f.max_lifetime)
                .unwrap_or(d.max_lifetime),
            default_lifetime: args
                .default_lifetime
                .or(f.default_lifetime)
                .unwrap_or(d.default_lifetime),
            nonce_lifetime: args
                .nonce_lifetime
                .or(f.nonce_lifetime)
                .unwrap_or(d.nonce_lifetime),
            credential_ttl: args
                .credential_ttl
                .or(f.credential_ttl)
                .unwrap_or(d.credential_ttl),
            software: args.software.clone().or(f.software).unwrap_or(d.software),
            log: args.log.clone().or(rust_log).or(f.log).unwrap_or(d.log),
            log_format: args.log_format.or(f.log_format).unwrap_or(d.log_format),
            signal_grace: args
                .signal_grace
                .or(f.signal_grace)
                .unwrap_or(d.signal_grace),
            signal_replay_limit: args
                .signal_replay_limit
                .or(f.signal_replay_limit)
                .unwrap_or(d.signal_replay_limit),
            signal_max_message: args
                .signal_max_message
                .or(f.signal_max_message)
                .unwrap_or(d.signal_max_message),
            signal_rate: args.signal_rate.or(f.signal_rate).unwrap_or(d.signal_rate),
            signal_max_rooms: args
                .signal_max_rooms
                .or(f.signal_max_rooms)
                .unwrap_or(d.signal_max_rooms),
            signal_max_sessions: args
                .signal_max_sessions
                .or(f.signal_max_sessions)
                .unwrap_or(d.signal_max_sessions),
            signal_room_capacity: args
                .signal_room_capacity
                .or(f.signal_room_capacity)
                .unwrap_or(d.signal_room_capacity),
            signal_max_buffered: args
                .signal_max_buffered
                .or(f.signal_max_buffered)
                .unwrap_or(d.signal_max_buffered),
            signal_token_secret: args.signal_token_secret.clone().or(f.signal_token_secret),
            signal_origins: l
                .list(
                    "signal_origins",
                    &args.signal_origins,
                    f.signal_origins,
                    true,
                    parse_origin,
                )
                .unwrap_or(d.signal_origins),
            socketio: args.socketio.or(f.socketio).unwrap_or(d.socketio),
            api_key: args.api_key.clone().or(f.api_key),
            allocation_rate_per_ip: args
                .allocation_rate_per_ip
                .or(f.allocation_rate_per_ip)
                .unwrap_or(d.allocation_rate_per_ip),
            unauth_reply_budget: args
                .unauth_reply_budget
                .or(f.unauth_reply_budget)
                .unwrap_or(d.unauth_reply_budget),
            unauth_reply_per_source: args
                .unauth_reply_per_source
                .or(f.unauth_reply_per_source)
                .unwrap_or(d.unauth_reply_per_source),
            conn_rate_per_ip: args
                .conn_rate_per_ip
                .or(f.conn_rate_per_ip)
                .unwrap_or(d.conn_rate_per_ip),
            max_conns_per_ip: args
                .max_conns_per_ip
                .or(f.max_conns_per_ip)
                .unwrap_or(d.max_conns_per_ip),
            join_rate_per_ip: args
                .join_rate_per_ip
                .or(f.join_rate_per_ip)
                .unwrap_or(d.join_rate_per_ip),
            drain_timeout: args
                .drain_timeout
                .or(f.drain_timeout)
                .unwrap_or(d.drain_timeout),
            alternate_server: l.one(
                "alternate_server",
                args.alternate_server.clone(),
                f.alternate_server,
                parse_socket_addr,
            ),
            admin_token: args.admin_token.clone().or(f.admin_token),
            admin_listen: l.one(
                "admin_listen",
                args.admin_listen.clone(),
                f.admin_listen,
                parse_socket_addr,
            ),
            sfu_listen: l
                .one(
                    "sfu_listen",
                    args.sfu_listen.clone(),
                    f.sfu_listen,
                    |v: &str| {
                        if v.trim().eq_ignore_ascii_case("off") {
                            Ok(None)
                        } else {
                            parse_socket_addr(v).map(Some)
                        }
                    },
                )
                .unwrap_or(d.sfu_listen),
            sfu_mesh_max: args
                .sfu_mesh_max
                .or(f.sfu_mesh_max)
                .unwrap_or(d.sfu_mesh_max),
            cluster: args.cluster.clone().or(f.cluster),
            node_id: args.node_id.clone().or(f.node_id),
            cluster_prefix: args
                .cluster_prefix
                .clone()
                .or(f.cluster_prefix)
                .unwrap_or(d.cluster_prefix),
            sip_upstream: l
                .one(
                    "sip_upstream",
                    args.sip_upstream.clone(),
                    f.sip_upstream,
                    |v: &str| crate::sip::parse_upstream(v).map(|_| v.trim().to_owned()),
                )
                .or(d.sip_upstream),
            sip_listen: l
                .one(
                    "sip_listen",
                    args.sip_listen.clone(),
                    f.sip_listen,
                    parse_socket_addr,
                )
                .unwrap_or(d.sip_listen),
            sip_dial: args.sip_dial.or(f.sip_dial).unwrap_or(d.sip_dial),
            sip_from: l
                .one("sip_from", args.sip_from.clone(), f.sip_from, |v: &str| {
                    icebreaker_sip::SipUri::parse(v.trim())
                        .map(|_| v.trim().to_owned())
                        .map_err(|e| format!("not a SIP URI ({e:?})"))
                })
                .or(d.sip_from),
            sip_username: args.sip_username.clone().or(f.sip_username),
            sip_password: args.sip_password.clone().or(f.sip_password),
            sip_tls_ca: args.sip_tls_ca.clone().or(f.sip_tls_ca.map(rel)),
        };
        if l.problems.is_empty() {
            Ok(config)
        } else {
            Err(LoadError {
                problems: l.problems,
            })
        }
    }

    /// Every mistake in the configuration, errors first, each a sentence naming the setting and
    /// saying how to fix it. Empty means valid. The server refuses to start when any
    /// [`Severity::Error`] is present; warnings are logged.
    ///
    /// This reads the TLS certificate and key (if configured) to make sure they load.
    pub fn check(&self) -> Vec<Problem> {
        let mut c = Checker::default();
        self.check_listen(&mut c);
        self.check_tls(&mut c);
        self.check_relay(&mut c);
        self.check_auth(&mut c);
        self.check_peers(&mut c);
        self.check_limits(&mut c);
        self.check_signal(&mut c);
        self.check_misc(&mut c);
        self.check_cluster(&mut c);
        self.check_sip(&mut c);
        c.0.sort_by_key(|p| std::cmp::Reverse(p.severity));
        c.0
    }

    fn check_listen(&self, c: &mut Checker) {
        if self.turn_listen.is_empty() && self.turns_listen.is_empty() {
            c.error(
                "turn_listen and turns_listen are both empty, so the server would listen nowhere; \
                 give at least one address, e.g. --turn-listen 0.0.0.0:3478",
            );
        }
        for (i, a) in self.turn_listen.iter().enumerate() {
            if self.turn_listen[..i].contains(a) {
                c.error(format!("turn_listen lists {a} twice; remove the duplicate"));
            }
        }
        if let Some(sfu) = self.sfu_listen {
            if let Some(b) = self.turn_listen.iter().find(|b| overlaps(&sfu, b)) {
                c.error(format!(
                    "sfu_listen {sfu} uses the same port as turn_listen {b}; give the SFU its own \
                     port (3479 by default), or `off`"
                ));
            }
            if overlaps(&sfu, &self.http_listen) {
                c.error(format!(
                    "sfu_listen {sfu} uses the same TCP port as http_listen (ICE-TCP listens \
                     on the SFU's port too); choose another port"
                ));
            }
        }
        for (i, a) in self.turns_listen.iter().enumerate() {
            if self.turns_listen[..i].contains(a) {
                c.error(format!(
                    "turns_listen lists {a} twice; remove the duplicate"
                ));
            }
            if let Some(b) = self.turn_listen.iter().find(|b| overlaps(a, b)) {
                c.error(format!(
                    "turns_listen {a} uses the same TCP port as turn_listen {b}; \
                     TLS needs its own port (5349 is the standard one)"
                ));
            }
        }
        let tcp = self.turn_listen.iter().chain(&self.turns_listen);
        for b in tcp {
            if overlaps(&self.http_listen, b) {
                c.error(format!(
                    "http_listen {} uses the same TCP port as TURN listener {b}; \
                     choose another port for --http-listen",
                    self.http_listen
                ));
            }
        }
        if !self.http_listen.ip().is_loopback()
            && self.admin_token.is_none()
            && self.admin_listen.is_none()
        {
            c.warning(format!(
                "http_listen is {}, not a loopback address: /metrics, /healthz and /readyz will be \
                 reachable from the network; set admin_token (or admin_listen), or use \
                 127.0.0.1:8080 unless a firewall or proxy protects it",
                self.http_listen
            ));
        }
    }

    fn check_tls(&self, c: &mut Checker) {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => c.error(
                "tls_cert is set but tls_key is not; give the matching private key with --tls-key FILE",
            ),
            (None, Some(_)) => c.error(
                "tls_key is set but tls_cert is not; give the certificate chain with --tls-cert FILE",
            ),
            (Some(cert), Some(key)) => {
                if let Err(e) = crate::tls::load_server_config(cert, key) {
                    c.error(format!(
                        "tls_cert/tls_key cannot be loaded: {e:#}; fix the files or the paths"
                    ));
                }
            }
            (None, None) => {
                if !self.turns_listen.is_empty() {
                    c.error(
                        "turns_listen is set but there is no certificate; \
                         give --tls-cert FILE and --tls-key FILE, or remove turns_listen",
                    );
                }
            }
        }
    }

    fn check_relay(&self, c: &mut Checker) {
        let (lo, hi) = self.relay_ports;
        if lo > hi {
            c.error(format!(
                "relay_ports {lo}-{hi} is inverted; write the lower port first, e.g. {hi}-{lo}"
            ));
        } else {
            if lo < 1024 {
                c.error(format!(
                    "relay_ports {lo}-{hi} starts below 1024 (privileged, well-known ports); \
                     start the range at 1024 or above, e.g. 49152-65535"
                ));
            }
            if lo == hi {
                c.error(format!(
                    "relay_ports {lo}-{hi} holds a single port; give at least 2 ports \
                     (one per allocation), e.g. 49152-65535"
                ));
            } else {
                let ports = usize::from(hi - lo) + 1;
                if ports < self.max_allocations {
                    c.warning(format!(
                        "relay_ports {lo}-{hi} has {ports} ports but max_allocations is {}: \
                         allocations will fail with 508 once the ports of an address family run out; \
                         widen the range or lower max_allocations",
                        self.max_allocations
                    ));
                }
            }
        }

        let mut v4 = 0;
        let mut v6 = 0;
        for ip in &self.relay_ip {
            if ip.is_unspecified() {
                c.error(format!(
                    "relay_ip {ip} is a wildcard address; give the concrete local address relays \
                     should use (the one clients' peers can reach), or leave relay_ip unset for automatic"
                ));
            }
            match ip {
                IpAddr::V4(_) => v4 += 1,
                IpAddr::V6(_) => v6 += 1,
            }
        }
        if v4 > 1 || v6 > 1 {
            c.error(
                "relay_ip lists more than one address of the same family; give at most one IPv4 \
                 and one IPv6 address",
            );
        }

        let mut unmapped_v4 = 0;
        let mut unmapped_v6 = 0;
        for e in &self.external_ip {
            if e.public.is_unspecified() {
                c.error(format!(
                    "external_ip {e}: the public address is a wildcard; give the address clients \
                     and peers really reach this server on"
                ));
            }
            match e.private {
                Some(p) => {
                    if p.is_ipv4() != e.public.is_ipv4() {
                        c.error(format!(
                            "external_ip {e}: the public and private addresses are of different \
                             families; a 1:1 NAT maps IPv4 to IPv4 and IPv6 to IPv6"
                        ));
                    }
                    if !self.relay_ip.is_empty() && !self.relay_ip.contains(&p) {
                        c.error(format!(
                            "external_ip {e}: the private address {p} is not a relay_ip ({}); \
                             use one of the relay addresses after the '/', or add {p} to relay_ip",
                            join(&self.relay_ip)
                        ));
                    }
                }
                None if e.public.is_ipv4() => unmapped_v4 += 1,
                None => unmapped_v6 += 1,
            }
        }
        if unmapped_v4 > 1 || unmapped_v6 > 1 {
            c.error(
                "external_ip lists several public addresses of one family without a private \
                 address, so it is ambiguous which relay address each replaces; write PUBLIC/PRIVATE",
            );
        }
    }

    fn check_auth(&self, c: &mut Checker) {
        if self.realm.is_empty() {
            c.error(format!(
                "realm is empty; clients need a realm to compute their key, e.g. --realm {DEFAULT_REALM}"
            ));
        } else if self.realm.chars().count() > 127 {
            c.error("realm is longer than 127 characters (RFC 8489 limit); shorten it");
        }
        for (i, (name, pass)) in self.users.iter().enumerate() {
            if name.is_empty() {
                c.error(format!(
                    "users entry #{} has an empty name; write NAME:PASSWORD",
                    i + 1
                ));
            } else if name.len() > 508 {
                c.error(format!(
                    "users entry #{} has a name longer than 508 bytes (RFC 8489 limit); shorten it",
                    i + 1
                ));
            }
            if pass.is_empty() {
                c.error(format!(
                    "user {name:?} has an empty password; write NAME:PASSWORD with a real password"
                ));
            }
            if !name.is_empty() && self.users[..i].iter().any(|(n, _)| n == name) {
                c.error(format!(
                    "user {name:?} is given more than once; keep one entry per user"
                ));
            }
        }
        for (i, s) in self.turn_secrets.iter().enumerate() {
            if s.is_empty() {
                c.error(format!(
                    "turn_secrets entry #{} is empty; remove it or give a random secret of 16 bytes or more",
                    i + 1
                ));
            } else if s.len() < 16 {
                c.warning(format!(
                    "turn_secrets entry #{} is only {} bytes; anyone who guesses it can mint \
                     credentials, use 16 bytes or more (e.g. `openssl rand -base64 32`)",
                    i + 1,
                    s.len()
                ));
            }
            if !s.is_empty() && self.turn_secrets[..i].contains(s) {
                c.warning(format!(
                    "turn_secrets entry #{} repeats an earlier one; remove the duplicate",
                    i + 1
                ));
            }
        }
        if self.users.is_empty() && self.turn_secrets.is_empty() {
            c.warning(
                "no users and no turn_secrets are configured: `icebreaker serve` generates a TURN \
                 REST secret for this run only and prints it; add --user NAME:PASS or \
                 --turn-secret SECRET to choose your own",
            );
        }
    }

    fn check_cluster(&self, c: &mut Checker) {
        if let Some(url) = &self.cluster {
            let scheme_ok = url.starts_with("redis://") || url.starts_with("redis+unix://");
            if !scheme_ok {
                c.error(format!(
                    "cluster must be a Redis URL like redis://10.0.0.5:6379/0 (got {:?}); rediss:// (TLS) is not supported: keep Redis on a private network",
                    crate::cluster::redact(url)
                ));
            }
            if self.turn_secrets.is_empty() && !self.users.is_empty() {
                c.warning(
                    "cluster without turn_secrets: the iceServers signaling hands out carry no credentials for the other nodes' TURN; give every node the same turn_secrets",
                );
            }
        }
        if let Some(id) = &self.node_id {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                c.error("node_id must be 1 to 64 characters of A-Z a-z 0-9 - _ .");
            }
        }
        if self.cluster_prefix.is_empty()
            || self.cluster_prefix.len() > 32
            || self.cluster_prefix.contains(char::is_whitespace)
        {
            c.error("cluster_prefix must be 1 to 32 characters without spaces (e.g. ib:)");
        }
    }

    fn check_peers(&self, c: &mut Checker) {
        for net in &self.allow_peer {
            if self.deny_peer.contains(net) {
                c.warning(format!(
                    "{net} is in both allow_peer and deny_peer; deny_peer wins, so the allow_peer entry has no effect; remove it from one list"
                ));
            }
        }
    }

    fn check_limits(&self, c: &mut Checker) {
        if self
            .admin_token
            .as_deref()
            .is_some_and(|t| t.trim().len() < 16)
        {
            c.error(
                "admin_token is shorter than 16 characters; anyone who guesses it can drain the \
                 server; use a random token (e.g. `openssl rand -base64 32`)",
            );
        }
        if self.admin_listen.is_some_and(|a| a == self.http_listen) {
            c.error("admin_listen is the same address as http_listen; give the admin endpoints another port, or leave admin_listen unset");
        }
        if self
            .alternate_server
            .is_some_and(|a| a.ip().is_unspecified() || a.port() == 0)
        {
            c.error("alternate_server must be a reachable IP:PORT (not 0.0.0.0, [::] or port 0)");
        }
        if self.udp_workers > MAX_UDP_WORKERS {
            c.error(format!(
                "udp_workers is {}; use at most {MAX_UDP_WORKERS} (0 = one per CPU core)",
                self.udp_workers
            ));
        }
        if self.max_allocations == 0 {
            c.error("max_allocations is 0, so every Allocate would fail; use at least 1 (default 10000)");
        }
        if self.max_allocations_per_user == 0 {
            c.error(
                "max_allocations_per_user is 0, so every Allocate would fail; use at least 1 (default 100)",
            );
        } else if self.max_allocations_per_user > self.max_allocations && self.max_allocations > 0 {
            c.warning(format!(
                "max_allocations_per_user ({}) is larger than max_allocations ({}); the per-user \
                 limit can never be reached",
                self.max_allocations_per_user, self.max_allocations
            ));
        }
        if self.default_lifetime < 60 {
            c.error(format!(
                "default_lifetime is {} s; use at least 60 (RFC 8656 recommends 600)",
                self.default_lifetime
            ));
        } else if self.default_lifetime < 600 {
            c.warning(format!(
                "default_lifetime is {} s, below the 600 s RFC 8656 recommends; clients will have \
                 to refresh more often",
                self.default_lifetime
            ));
        }
        if self.max_lifetime < self.default_lifetime {
            c.error(format!(
                "max_lifetime ({} s) is shorter than default_lifetime ({} s); raise max_lifetime \
                 or lower default_lifetime",
                self.max_lifetime, self.default_lifetime
            ));
        }
        if self.max_lifetime > 86_400 {
            c.error(format!(
                "max_lifetime is {} s, more than a day: an abandoned allocation would hold its relay \
                 port that long; use at most 86400 (3600 is usual)",
                self.max_lifetime
            ));
        }
        if self.nonce_lifetime < 30 {
            c.error(format!(
                "nonce_lifetime is {} s; clients would keep getting 438 Stale Nonce, use at least 30 \
                 (default 600)",
                self.nonce_lifetime
            ));
        } else if self.nonce_lifetime > 86_400 {
            c.warning(format!(
                "nonce_lifetime is {} s, more than a day; shorter nonces limit replay, 600 is usual",
                self.nonce_lifetime
            ));
        }
        if self.credential_ttl == 0 {
            c.error("credential_ttl is 0, so handed-out credentials would be expired at once; use e.g. 86400");
        } else if self.credential_ttl > 7 * 86_400 {
            c.warning(format!(
                "credential_ttl is {} s, more than a week; leaked credentials stay usable that long",
                self.credential_ttl
            ));
        }
    }

    fn check_signal(&self, c: &mut Checker) {
        if self.signal_grace == 0 {
            c.warning(
                "signal_grace is 0: a session ends as soon as its connection drops, so clients can \
                 never resume; use e.g. 30",
            );
        } else if self.signal_grace > 3600 {
            c.warning(format!(
                "signal_grace is {} s, more than an hour: peers that vanished stay visible in \
                 their rooms that long; 30 is usual",
                self.signal_grace
            ));
        }
        if self.signal_replay_limit == 0 {
            c.error(
                "signal_replay_limit is 0, so no message could be kept for resume; use at least \
                 16 (default 1024)",
            );
        } else if self.signal_replay_limit > 1_000_000 {
            c.warning(format!(
                "signal_replay_limit is {}: each session may keep that many messages in memory; \
                 1024 is usual",
                self.signal_replay_limit
            ));
        }
        if self.signal_max_message < 1024 {
            c.error(format!(
                "signal_max_message is {} bytes; an SDP offer alone needs a few KiB, use at least \
                 1024 (default 65536)",
                self.signal_max_message
            ));
        } else if self.signal_max_message > 16 << 20 {
            c.warning(format!(
                "signal_max_message is {} bytes, more than 16 MiB: a few clients could exhaust \
                 memory; 65536 is usual",
                self.signal_max_message
            ));
        }
        if self.signal_rate == 0 {
            c.error("signal_rate is 0, so every client message would be refused; use e.g. 50");
        }
        if self.signal_max_rooms == 0 {
            c.error("signal_max_rooms is 0, so every join would fail with server_full; use at least 1 (default 10000)");
        }
        if self.signal_max_sessions == 0 {
            c.error("signal_max_sessions is 0, so every join would fail with server_full; use at least 1 (default 10000)");
        } else if self.signal_max_rooms > self.signal_max_sessions {
            c.warning(format!(
                "signal_max_rooms ({}) is larger than signal_max_sessions ({}); every room has a \
                 session, so the room limit can never be reached",
                self.signal_max_rooms, self.signal_max_sessions
            ));
        }
        if self.signal_room_capacity < 2 {
            c.error(format!(
                "signal_room_capacity is {}; a room needs at least 2 members to be useful \
                 (default 50)",
                self.signal_room_capacity
            ));
        } else if self.signal_room_capacity > self.signal_max_sessions {
            c.warning(format!(
                "signal_room_capacity ({}) is larger than signal_max_sessions ({}); no room can \
                 ever be that full",
                self.signal_room_capacity, self.signal_max_sessions
            ));
        }
        match &self.signal_token_secret {
            Some(s) if s.is_empty() => c.error(
                "signal_token_secret is set but empty; give a random secret of 32 bytes or more, \
                 or remove it to allow joins without a token",
            ),
            Some(s) if s.len() < 32 => c.warning(format!(
                "signal_token_secret is only {} bytes; HS256 wants 32 bytes or more \
                 (e.g. `openssl rand -base64 32`)",
                s.len()
            )),
            _ => {}
        }
        for (i, o) in self.signal_origins.iter().enumerate() {
            if self.signal_origins[..i].contains(o) {
                c.warning(format!(
                    "signal_origins lists {o} twice; remove the duplicate"
                ));
            }
        }
        match &self.api_key {
            Some(k) if k.is_empty() => c.error(
                "api_key is set but empty; give a random key of 16 bytes or more, or remove it to \
                 leave /api/ice-servers open",
            ),
            Some(k) if k.len() < 16 => c.warning(format!(
                "api_key is only {} bytes; anyone who guesses it can get TURN credentials, use \
                 16 bytes or more",
                k.len()
            )),
            _ => {}
        }
    }

    fn check_sip(&self, c: &mut Checker) {
        let tls = self
            .sip_upstream
            .as_deref()
            .and_then(|u| crate::sip::parse_upstream(u).ok())
            .is_some_and(|u| u.transport == "TLS");
        match &self.sip_tls_ca {
            Some(ca) => {
                if let Err(e) = crate::tls::root_store(ca) {
                    c.error(format!(
                        "sip_tls_ca cannot be used: {e:#}; give a PEM file of the CA \
                         certificate(s) that signed the SIP upstream's certificate"
                    ));
                }
                if !tls {
                    c.warning(
                        "sip_tls_ca is set but sip_upstream is not TLS (sips:… or \
                         transport=tls), so it is not used",
                    );
                }
            }
            None if tls && crate::tls::system_ca_file().is_none() => c.error(
                "sip_upstream is TLS but there is no system CA bundle to verify it with \
                 (install ca-certificates or set SSL_CERT_FILE); or give sip_tls_ca FILE",
            ),
            None => {}
        }
    }

    fn check_misc(&self, c: &mut Checker) {
        if self.software.chars().count() > 127 {
            c.error("software is longer than 127 characters (RFC 8489 limit); shorten it, or set it empty to send none");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            c.error(format!(
                "log {:?} is not a valid filter ({e}); write e.g. info or icebreaker=debug,warn",
                self.log
            ));
        }
    }
}

#[derive(Default)]
struct Checker(Vec<Problem>);

impl Checker {
    fn error(&mut self, message: impl Into<String>) {
        self.0.push(Problem {
            severity: Severity::Error,
            message: message.into(),
        });
    }
    fn warning(&mut self, message: impl Into<String>) {
        self.0.push(Problem {
            severity: Severity::Warning,
            message: message.into(),
        });
    }
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Would binding both addresses (TCP) conflict?
fn overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port()
        && (a.ip() == b.ip()
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}

fn read_file(path: &Path) -> Result<FileConfig, LoadError> {
    let fail = |msg: String| LoadError {
        problems: vec![msg],
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(format!(
            "config: cannot read the configuration file {}: {e}; check --config / ICEBREAKER_CONFIG",
            path.display()
        ))
    })?;
    toml::from_str(&text).map_err(|e| {
        fail(format!(
            "config: {} is not a valid configuration file: {}",
            path.display(),
            e.to_string().trim_end()
        ))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;
    use std::sync::Mutex;

    /// clap reads the process environment; tests that parse arguments hold this lock.
    static ENV_LOCK: Mutex<()> = Mutex::new(());

    #[derive(Parser)]
    struct TestCli {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn parse(argv: &[&str]) -> ServeArgs {
        let _g = ENV_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        parse_locked(argv)
    }

    fn parse_locked(argv: &[&str]) -> ServeArgs {
        let mut full = vec!["icebreaker"];
        full.extend_from_slice(argv);
        TestCli::try_parse_from(full).unwrap().args
    }

    fn load(argv: &[&str]) -> Result<Config, LoadError> {
        Config::load_with(&parse(argv), None)
    }

    struct TempFile(PathBuf);
    impl TempFile {
        fn new(contents: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "icebreaker-config-{}-{}.toml",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::write(&p, contents).unwrap();
            TempFile(p)
        }
        fn arg(&self) -> String {
            self.0.display().to_string()
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn valid() -> Config {
        Config {
            users: vec![("alice".into(), "pw".into())],
            ..Config::default()
        }
    }

    fn messages(c: &Config, sev: Severity) -> Vec<String> {
        c.check()
            .into_iter()
            .filter(|p| p.severity == sev)
            .map(|p| p.message)
            .collect()
    }

    fn has(c: &Config, sev: Severity, needle: &str) -> bool {
        messages(c, sev).iter().any(|m| m.contains(needle))
    }

    #[test]
    fn defaults() {
        let c = load(&[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.turn_listen, vec!["0.0.0.0:3478".parse().unwrap()]);
        assert!(c.turns_listen.is_empty());
        assert_eq!(c.relay_ports, (49152, 65535));
        assert_eq!(c.realm, "icebreaker");
        assert_eq!(c.http_listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.max_allocations, 10_000);
        assert_eq!(c.max_allocations_per_user, 100);
        assert_eq!(c.max_lifetime, 3600);
        assert_eq!(c.default_lifetime, 600);
        assert_eq!(c.nonce_lifetime, 600);
        assert_eq!(c.credential_ttl, 86_400);
        assert!(c.software.starts_with("Icebreaker "));
        assert_eq!(c.log, "info");
        assert_eq!(c.log_format, LogFormat::Text);
        // The default configuration is valid, with one warning: no credentials.
        let problems = c.check();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].severity, Severity::Warning);
        assert!(problems[0].message.contains("generates a TURN REST secret"));
        assert!(valid().check().is_empty(), "{:?}", valid().check());
    }

    #[test]
    fn every_flag_parses() {
        let c = load(&[
            "--turn-listen=0.0.0.0:3478",
            "--turn-listen=[::]:3478",
            "--turns-listen=0.0.0.0:443",
            "--tls-cert=/c.pem",
            "--tls-key=/k.pem",
            "--relay-ip=10.0.0.5",
            "--relay-ip=2001:db8::5",
            "--relay-ports=40000-40100",
            "--external-ip=203.0.113.5/10.0.0.5",
            "--external-ip=2001:db8::99",
            "--realm=example.org",
            "--user=alice:pa:ss",
            "--user=bob:pw",
            "--turn-secret=0123456789abcdef",
            "--turn-secret=fedcba9876543210",
            "--allow-peer=10.1.2.3",
            "--allow-peer=fd00::/8",
            "--deny-peer=10.0.0.0/8",
            "--http-listen=0.0.0.0:9090",
            "--max-allocations=5",
            "--max-allocations-per-user=2",
            "--max-lifetime=1800",
            "--default-lifetime=700",
            "--nonce-lifetime=300",
            "--credential-ttl=60",
            "--software=",
            "--log=debug",
            "--log-format=json",
        ])
        .unwrap();
        assert_eq!(
            c.turn_listen,
            vec![
                "0.0.0.0:3478".parse().unwrap(),
                "[::]:3478".parse().unwrap()
            ]
        );
        assert_eq!(c.turns_listen, vec!["0.0.0.0:443".parse().unwrap()]);
        assert_eq!(c.tls_cert, Some(PathBuf::from("/c.pem")));
        assert_eq!(c.tls_key, Some(PathBuf::from("/k.pem")));
        assert_eq!(
            c.relay_ip,
            vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "2001:db8::5".parse().unwrap()
            ]
        );
        assert_eq!(c.relay_ports, (40000, 40100));
        assert_eq!(
            c.external_ip,
            vec![
                ExternalIp {
                    public: "203.0.113.5".parse().unwrap(),
                    private: Some("10.0.0.5".parse().unwrap())
                },
                ExternalIp {
                    public: "2001:db8::99".parse().unwrap(),
                    private: None
                }
            ]
        );
        assert_eq!(c.realm, "example.org");
        assert_eq!(
            c.users,
            vec![
                ("alice".to_string(), "pa:ss".to_string()),
                ("bob".to_string(), "pw".to_string())
            ]
        );
        assert_eq!(c.turn_secrets, vec!["0123456789abcdef", "fedcba9876543210"]);
        assert_eq!(
            c.allow_peer,
            vec![
                "10.1.2.3/32".parse::<IpNet>().unwrap(),
                "fd00::/8".parse().unwrap()
            ]
        );
        assert_eq!(c.deny_peer, vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert_eq!(c.http_listen, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(c.max_allocations, 5);
        assert_eq!(c.max_allocations_per_user, 2);
        assert_eq!(c.max_lifetime, 1800);
        assert_eq!(c.default_lifetime, 700);
        assert_eq!(c.nonce_lifetime, 300);
        assert_eq!(c.credential_ttl, 60);
        assert_eq!(c.software, "");
        assert_eq!(c.log, "debug");
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn comma_lists_and_bare_ipv6_peer() {
        let c = load(&["--turn-listen=1.2.3.4:1,1.2.3.4:2", "--deny-peer=::1"]).unwrap();
        assert_eq!(c.turn_listen.len(), 2);
        assert_eq!(c.deny_peer, vec!["::1/128".parse::<IpNet>().unwrap()]);
        // Host bits are cleared.
        let c = load(&["--allow-peer=10.9.9.9/8"]).unwrap();
        assert_eq!(c.allow_peer, vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn turns_default_needs_cert_and_key() {
        let c = load(&["--tls-cert=/c", "--tls-key=/k"]).unwrap();
        assert_eq!(c.turns_listen, vec![DEFAULT_TURNS_LISTEN]);
        let c = load(&["--tls-cert=/c"]).unwrap();
        assert!(c.turns_listen.is_empty());
    }

    #[test]
    fn precedence_flag_env_file_default() {
        let file = TempFile::new(
            r#"
realm = "from-file"
max_allocations = 7
turn_listen = ["127.0.0.1:1000"]
nonce_lifetime = 100
log = "warn"
"#,
        );
        let _g = ENV_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        std::env::set_var("ICEBREAKER_REALM", "from-env");
        std::env::set_var("ICEBREAKER_MAX_ALLOCATIONS", "8");
        std::env::set_var("ICEBREAKER_TURN_LISTEN", "127.0.0.1:2000,127.0.0.1:2001");
        let cfg_arg = format!("--config={}", file.arg());
        let with_flags = parse_locked(&[&cfg_arg, "--realm=from-flag"]);
        let env_only = parse_locked(&[&cfg_arg]);
        std::env::remove_var("ICEBREAKER_REALM");
        std::env::remove_var("ICEBREAKER_MAX_ALLOCATIONS");
        std::env::remove_var("ICEBREAKER_TURN_LISTEN");
        let file_only = parse_locked(&[&cfg_arg]);
        drop(_g);

        let c = Config::load_with(&with_flags, None).unwrap();
        assert_eq!(c.realm, "from-flag"); // flag > env
        assert_eq!(c.max_allocations, 8); // env > file
        assert_eq!(c.turn_listen.len(), 2); // env list replaces the file list
        assert_eq!(c.nonce_lifetime, 100); // file > default
        assert_eq!(c.max_lifetime, 3600); // default

        let c = Config::load_with(&env_only, None).unwrap();
        assert_eq!(c.realm, "from-env");

        let c = Config::load_with(&file_only, None).unwrap();
        assert_eq!(c.realm, "from-file");
        assert_eq!(c.max_allocations, 7);
        assert_eq!(c.turn_listen, vec!["127.0.0.1:1000".parse().unwrap()]);
        assert_eq!(c.log, "warn");
        // RUST_LOG beats the file but not --log / ICEBREAKER_LOG.
        let c = Config::load_with(&file_only, Some("trace".into())).unwrap();
        assert_eq!(c.log, "trace");
        let mut flagged = file_only.clone();
        flagged.log = Some("error".into());
        let c = Config::load_with(&flagged, Some("trace".into())).unwrap();
        assert_eq!(c.log, "error");
    }

    #[test]
    fn full_toml_file() {
        let file = TempFile::new(
            r#"
turn_listen = ["0.0.0.0:3478", "[::]:3478"]
turns_listen = ["0.0.0.0:5349"]
tls_cert = "certs/fullchain.pem"
tls_key = "/etc/icebreaker/key.pem"
relay_ip = ["10.0.0.5"]
relay_ports = "50000-50999"
external_ip = ["203.0.113.5/10.0.0.5"]
realm = "example.org"
users = ["alice:pw", "bob:x:y"]
turn_secrets = ["0123456789abcdef0123"]
allow_peer = ["10.0.0.7"]
deny_peer = ["10.0.0.0/8", "192.168.0.0/16"]
http_listen = "127.0.0.1:9000"
max_allocations = 1000
max_allocations_per_user = 10
max_lifetime = 1200
default_lifetime = 600
nonce_lifetime = 300
credential_ttl = 3600
software = ""
log = "icebreaker=debug,info"
log_format = "json"
"#,
        );
        let c = load(&[&format!("--config={}", file.arg())]).unwrap();
        assert_eq!(c.turn_listen.len(), 2);
        assert_eq!(c.relay_ports, (50000, 50999));
        assert_eq!(c.users[1], ("bob".into(), "x:y".into()));
        // Relative paths in a file are relative to the file's directory.
        let dir = file.0.parent().unwrap();
        assert_eq!(c.tls_cert, Some(dir.join("certs/fullchain.pem")));
        assert_eq!(c.tls_key, Some(PathBuf::from("/etc/icebreaker/key.pem")));
        assert_eq!(c.software, "");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.deny_peer.len(), 2);
    }

    #[test]
    fn unknown_key_and_bad_file() {
        let file = TempFile::new("realm = \"x\"\nrelay_port = \"1-2\"\n");
        let e = load(&[&format!("--config={}", file.arg())]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("relay_port"), "{msg}");
        assert!(msg.contains("unknown field"), "{msg}");

        let e = load(&["--config=/nonexistent/icebreaker.toml"]).unwrap_err();
        assert!(e.to_string().contains("cannot read the configuration file"));

        let file = TempFile::new("max_allocations = \"many\"\n");
        let e = load(&[&format!("--config={}", file.arg())]).unwrap_err();
        assert!(e.to_string().contains("max_allocations"), "{e}");
    }

    #[test]
    fn unparsable_values_are_all_reported() {
        let e = load(&[
            "--turn-listen=nonsense",
            "--relay-ip=10.0.0",
            "--relay-ports=65535",
            "--external-ip=1.2.3.4/x",
            "--user=alice-secretpw",
            "--allow-peer=10.0.0/8",
            "--deny-peer=banana",
            "--http-listen=8080",
        ])
        .unwrap_err();
        assert_eq!(e.problems.len(), 8, "{e}");
        let all = e.to_string();
        assert!(all.contains("turn_listen: \"nonsense\""), "{all}");
        assert!(all.contains("relay_ip: \"10.0.0\""), "{all}");
        assert!(all.contains("relay_ports"), "{all}");
        assert!(all.contains("external_ip"), "{all}");
        assert!(all.contains("allow_peer: \"10.0.0/8\""), "{all}");
        assert!(all.contains("deny_peer: \"banana\""), "{all}");
        assert!(all.contains("http_listen"), "{all}");
        assert!(
            all.contains("--allow-peer or ICEBREAKER_ALLOW_PEER"),
            "{all}"
        );
        // A user entry without ':' is reported without echoing it (it may be a password).
        assert!(all.contains("users: entry #1"), "{all}");
        assert!(!all.contains("secretpw"), "{all}");
    }

    #[test]
    fn file_errors_name_the_file() {
        let file = TempFile::new("deny_peer = [\"10.0.0.0/33\"]\n");
        let e = load(&[&format!("--config={}", file.arg())]).unwrap_err();
        assert!(e.to_string().contains(&file.arg()), "{e}");
        assert!(e.to_string().contains("deny_peer"), "{e}");
    }

    #[test]
    fn check_relay_ports() {
        let mut c = valid();
        c.relay_ports = (60000, 50000);
        assert!(has(&c, Severity::Error, "inverted"));
        c.relay_ports = (80, 50000);
        assert!(has(&c, Severity::Error, "below 1024"));
        c.relay_ports = (50000, 50000);
        assert!(has(&c, Severity::Error, "single port"));
        c.relay_ports = (50000, 50099);
        assert!(has(&c, Severity::Warning, "100 ports"));
        c.max_allocations = 100;
        assert!(c.check().is_empty());
    }

    #[test]
    fn check_tls() {
        let mut c = valid();
        c.tls_cert = Some("/c".into());
        assert!(has(&c, Severity::Error, "tls_key is not"));
        c.tls_cert = None;
        c.tls_key = Some("/k".into());
        assert!(has(&c, Severity::Error, "tls_cert is not"));
        c.tls_key = None;
        c.turns_listen = vec![DEFAULT_TURNS_LISTEN];
        assert!(has(&c, Severity::Error, "no certificate"));
        c.tls_cert = Some("/nonexistent/c.pem".into());
        c.tls_key = Some("/nonexistent/k.pem".into());
        assert!(has(&c, Severity::Error, "cannot be loaded"));
        assert!(has(&c, Severity::Error, "/nonexistent/c.pem"));

        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = TempFile::new(&ck.cert.pem());
        let key = TempFile::new(&ck.signing_key.serialize_pem());
        c.tls_cert = Some(cert.0.clone());
        c.tls_key = Some(key.0.clone());
        assert!(c.check().is_empty(), "{:?}", c.check());
        // Garbage key.
        let junk = TempFile::new("not pem");
        c.tls_key = Some(junk.0.clone());
        assert!(has(&c, Severity::Error, "no PEM private key"));
    }

    #[test]
    fn sip_tls_ca_flag_file_and_check() {
        let c = load(&[
            "--sip-upstream",
            "sips:pbx.example.org",
            "--sip-tls-ca",
            "/ca.pem",
        ])
        .unwrap();
        assert_eq!(c.sip_tls_ca, Some(PathBuf::from("/ca.pem")));
        let file = TempFile::new(
            "sip_upstream = \"sip:pbx.example.org;transport=tls\"\nsip_tls_ca = \"pki/ca.pem\"\n",
        );
        let c = load(&[&format!("--config={}", file.arg())]).unwrap();
        assert_eq!(
            c.sip_tls_ca,
            Some(file.0.parent().unwrap().join("pki/ca.pem"))
        );
        assert!(load(&["--sip-upstream", "sips:pbx.example.org;transport=udp"]).is_err());

        let mut c = valid();
        c.sip_upstream = Some("sips:pbx.example.org".into());
        c.sip_tls_ca = Some("/nonexistent/ca.pem".into());
        assert!(has(&c, Severity::Error, "sip_tls_ca cannot be used"));
        let ca = rcgen::generate_simple_self_signed(vec!["ca.example".to_string()]).unwrap();
        let pem = TempFile::new(&ca.cert.pem());
        c.sip_tls_ca = Some(pem.0.clone());
        assert!(c.check().is_empty(), "{:?}", c.check());
        c.sip_upstream = Some("sip:pbx.example.org;transport=tcp".into());
        assert!(has(&c, Severity::Warning, "not TLS"));
    }

    #[test]
    fn check_listeners() {
        let mut c = valid();
        c.turn_listen.clear();
        assert!(has(&c, Severity::Error, "listen nowhere"));
        let mut c = valid();
        c.turn_listen = vec!["0.0.0.0:3478".parse().unwrap(); 2];
        assert!(has(&c, Severity::Error, "twice"));
        let mut c = valid();
        c.http_listen = "127.0.0.1:3478".parse().unwrap();
        assert!(has(&c, Severity::Error, "same TCP port"));
        let mut c = valid();
        c.http_listen = "0.0.0.0:8080".parse().unwrap();
        assert!(has(&c, Severity::Warning, "not a loopback"));
        let mut c = valid();
        c.turns_listen = vec!["10.0.0.1:3478".parse().unwrap()];
        assert!(has(&c, Severity::Error, "same TCP port as turn_listen"));
    }

    #[test]
    fn check_credentials() {
        let mut c = Config::default();
        assert!(has(
            &c,
            Severity::Warning,
            "generates a TURN REST secret for this run only"
        ));
        c.users = vec![("alice".into(), String::new())];
        assert!(has(&c, Severity::Error, "empty password"));
        c.users = vec![(String::new(), "pw".into())];
        assert!(has(&c, Severity::Error, "empty name"));
        c.users = vec![("a".into(), "1".into()), ("a".into(), "2".into())];
        assert!(has(&c, Severity::Error, "more than once"));
        c.users.clear();
        c.turn_secrets = vec!["short".into()];
        assert!(has(&c, Severity::Warning, "only 5 bytes"));
        assert!(!has(&c, Severity::Warning, "401"));
        c.turn_secrets = vec![String::new()];
        assert!(has(&c, Severity::Error, "turn_secrets entry #1 is empty"));
        c.turn_secrets = vec!["0123456789abcdef".into(); 2];
        assert!(has(&c, Severity::Warning, "repeats"));
        let mut c = valid();
        c.realm.clear();
        assert!(has(&c, Severity::Error, "realm is empty"));
        c.realm = "r".repeat(128);
        assert!(has(&c, Severity::Error, "realm is longer"));
    }

    #[test]
    fn check_relay_and_external_ips() {
        let mut c = valid();
        c.relay_ip = vec!["0.0.0.0".parse().unwrap()];
        assert!(has(&c, Severity::Error, "wildcard"));
        c.relay_ip = vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        assert!(has(&c, Severity::Error, "same family"));
        c.relay_ip = vec!["10.0.0.1".parse().unwrap()];
        c.external_ip = vec!["203.0.113.1/10.0.0.9".parse().unwrap()];
        assert!(has(&c, Severity::Error, "not a relay_ip"));
        c.external_ip = vec!["203.0.113.1/10.0.0.1".parse().unwrap()];
        assert!(c.check().is_empty(), "{:?}", c.check());
        c.external_ip = vec!["2001:db8::1/10.0.0.1".parse().unwrap()];
        assert!(has(&c, Severity::Error, "different families"));
        c.external_ip = vec!["0.0.0.0".parse().unwrap()];
        assert!(has(&c, Severity::Error, "public address is a wildcard"));
        c.external_ip = vec!["1.1.1.1".parse().unwrap(), "2.2.2.2".parse().unwrap()];
        assert!(has(&c, Severity::Error, "ambiguous"));
    }

    #[test]
    fn check_lifetimes_and_limits() {
        let mut c = valid();
        c.max_lifetime = 300;
        assert!(has(&c, Severity::Error, "shorter than default_lifetime"));
        c.max_lifetime = 100_000;
        assert!(has(&c, Severity::Error, "more than a day"));
        let mut c = valid();
        c.default_lifetime = 10;
        assert!(has(&c, Severity::Error, "default_lifetime is 10"));
        c.default_lifetime = 120;
        assert!(has(&c, Severity::Warning, "default_lifetime is 120"));
        let mut c = valid();
        c.nonce_lifetime = 5;
        assert!(has(&c, Severity::Error, "nonce_lifetime"));
        c.nonce_lifetime = 100_000;
        assert!(has(&c, Severity::Warning, "nonce_lifetime"));
        let mut c = valid();
        c.credential_ttl = 0;
        assert!(has(&c, Severity::Error, "credential_ttl"));
        c.credential_ttl = 30 * 86_400;
        assert!(has(&c, Severity::Warning, "credential_ttl"));
        let mut c = valid();
        c.max_allocations = 0;
        assert!(has(&c, Severity::Error, "max_allocations is 0"));
        let mut c = valid();
        c.max_allocations_per_user = 0;
        assert!(has(&c, Severity::Error, "max_allocations_per_user is 0"));
        c.udp_workers = MAX_UDP_WORKERS + 1;
        assert!(has(&c, Severity::Error, "udp_workers is"));
        c.admin_token = Some("short".into());
        assert!(has(&c, Severity::Error, "admin_token is shorter"));
        c.admin_token = None;
        c.admin_listen = Some(c.http_listen);
        assert!(has(&c, Severity::Error, "admin_listen is the same address"));
        c.admin_listen = None;
        c.alternate_server = Some("0.0.0.0:3478".parse().unwrap());
        assert!(has(&c, Severity::Error, "alternate_server must be"));
        c.alternate_server = None;

        c.udp_workers = 0;
        c.max_allocations_per_user = 20_000;
        assert!(has(&c, Severity::Warning, "never be reached"));
    }

    #[test]
    fn check_misc() {
        let mut c = valid();
        c.software = "x".repeat(200);
        assert!(has(&c, Severity::Error, "software"));
        let mut c = valid();
        c.log = "icebreaker=notalevel".into();
        assert!(has(&c, Severity::Error, "not a valid filter"));
        let mut c = valid();
        c.allow_peer = vec!["10.0.0.0/8".parse().unwrap()];
        c.deny_peer = c.allow_peer.clone();
        assert!(has(&c, Severity::Warning, "both allow_peer and deny_peer"));
    }

    #[test]
    fn signal_defaults_and_flags() {
        let c = load(&[]).unwrap();
        assert_eq!(c.signal_grace, 30);
        assert_eq!(c.signal_replay_limit, 1024);
        assert_eq!(c.signal_max_message, 65_536);
        assert_eq!(c.signal_rate, 50);
        assert_eq!(c.signal_max_rooms, 10_000);
        assert_eq!(c.signal_max_sessions, 10_000);
        assert_eq!(c.signal_room_capacity, 50);
        assert_eq!(c.signal_token_secret, None);
        assert!(c.signal_origins.is_empty());
        assert_eq!(c.api_key, None);

        let c = load(&[
            "--signal-grace=5",
            "--signal-replay-limit=64",
            "--signal-max-message=4096",
            "--signal-rate=10",
            "--signal-max-rooms=3",
            "--signal-max-sessions=9",
            "--signal-room-capacity=4",
            "--signal-token-secret=0123456789abcdef0123456789abcdef",
            "--signal-origin=https://App.Example.org/",
            "--signal-origin=http://localhost:3000,http://[::1]:8080",
            "--api-key=k3y-0123456789abcdef",
            "--user=alice:pw",
        ])
        .unwrap();
        assert_eq!(c.signal_grace, 5);
        assert_eq!(c.signal_replay_limit, 64);
        assert_eq!(c.signal_max_message, 4096);
        assert_eq!(c.signal_rate, 10);
        assert_eq!(c.signal_max_rooms, 3);
        assert_eq!(c.signal_max_sessions, 9);
        assert_eq!(c.signal_room_capacity, 4);
        assert_eq!(
            c.signal_token_secret.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(
            c.signal_origins,
            vec![
                "https://app.example.org",
                "http://localhost:3000",
                "http://[::1]:8080"
            ]
        );
        assert_eq!(c.api_key.as_deref(), Some("k3y-0123456789abcdef"));
        assert!(c.check().is_empty(), "{:?}", c.check());

        let e = load(&[
            "--signal-origin=app.example.org",
            "--signal-origin=https://x/y",
        ])
        .unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert!(
            e.to_string()
                .contains("--signal-origin or ICEBREAKER_SIGNAL_ORIGINS"),
            "{e}"
        );
    }

    #[test]
    fn signal_toml_keys() {
        let file = TempFile::new(
            r#"
signal_grace = 10
signal_replay_limit = 100
signal_max_message = 2048
signal_rate = 20
signal_max_rooms = 50
signal_max_sessions = 500
signal_room_capacity = 8
signal_token_secret = "0123456789abcdef0123456789abcdef"
signal_origins = ["https://a.example"]
api_key = "0123456789abcdef"
"#,
        );
        let c = load(&[&format!("--config={}", file.arg())]).unwrap();
        assert_eq!(c.signal_grace, 10);
        assert_eq!(c.signal_replay_limit, 100);
        assert_eq!(c.signal_max_message, 2048);
        assert_eq!(c.signal_rate, 20);
        assert_eq!(c.signal_max_rooms, 50);
        assert_eq!(c.signal_max_sessions, 500);
        assert_eq!(c.signal_room_capacity, 8);
        assert!(c.signal_token_secret.is_some());
        assert_eq!(c.signal_origins, vec!["https://a.example"]);
        assert_eq!(c.api_key.as_deref(), Some("0123456789abcdef"));
        // A flag beats the file.
        let c = load(&[&format!("--config={}", file.arg()), "--signal-grace=3"]).unwrap();
        assert_eq!(c.signal_grace, 3);
        let file = TempFile::new("signal_origins = [\"nope\"]\n");
        let e = load(&[&format!("--config={}", file.arg())]).unwrap_err();
        assert!(e.to_string().contains("signal_origins: \"nope\""), "{e}");
    }

    #[test]
    fn check_signal() {
        let mut c = valid();
        c.signal_grace = 0;
        assert!(has(&c, Severity::Warning, "signal_grace is 0"));
        c.signal_grace = 7200;
        assert!(has(&c, Severity::Warning, "signal_grace is 7200"));
        let mut c = valid();
        c.signal_replay_limit = 0;
        assert!(has(&c, Severity::Error, "signal_replay_limit is 0"));
        let mut c = valid();
        c.signal_max_message = 100;
        assert!(has(&c, Severity::Error, "signal_max_message is 100"));
        c.signal_max_message = 64 << 20;
        assert!(has(&c, Severity::Warning, "more than 16 MiB"));
        let mut c = valid();
        c.signal_rate = 0;
        assert!(has(&c, Severity::Error, "signal_rate is 0"));
        let mut c = valid();
        c.signal_max_rooms = 0;
        assert!(has(&c, Severity::Error, "signal_max_rooms is 0"));
        let mut c = valid();
        c.signal_max_sessions = 0;
        assert!(has(&c, Severity::Error, "signal_max_sessions is 0"));
        let mut c = valid();
        c.signal_max_sessions = 10;
        c.signal_max_rooms = 20;
        c.signal_room_capacity = 5;
        assert!(has(
            &c,
            Severity::Warning,
            "room limit can never be reached"
        ));
        let mut c = valid();
        c.signal_room_capacity = 1;
        assert!(has(&c, Severity::Error, "signal_room_capacity is 1"));
        c.signal_room_capacity = 20_000;
        assert!(has(&c, Severity::Warning, "no room can"));
        let mut c = valid();
        c.signal_token_secret = Some(String::new());
        assert!(has(
            &c,
            Severity::Error,
            "signal_token_secret is set but empty"
        ));
        c.signal_token_secret = Some("short".into());
        assert!(has(&c, Severity::Warning, "only 5 bytes"));
        let mut c = valid();
        c.signal_origins = vec!["https://a".into(), "https://a".into()];
        assert!(has(&c, Severity::Warning, "twice"));
        let mut c = valid();
        c.api_key = Some(String::new());
        assert!(has(&c, Severity::Error, "api_key is set but empty"));
        c.api_key = Some("abc".into());
        assert!(has(&c, Severity::Warning, "api_key is only 3 bytes"));
    }

    #[test]
    fn debug_redacts_signal_secrets() {
        let mut c = valid();
        c.signal_token_secret = Some("tokensecretvalue".into());
        c.api_key = Some("apikeyvalue".into());
        let s = format!("{c:?}");
        assert!(!s.contains("tokensecretvalue"), "{s}");
        assert!(!s.contains("apikeyvalue"), "{s}");
    }

    #[test]
    fn errors_sort_before_warnings() {
        let mut c = Config::default();
        c.realm.clear();
        let p = c.check();
        assert!(p.len() >= 2);
        assert!(p[0].is_error());
        assert_eq!(p.last().map(|p| p.severity), Some(Severity::Warning));
    }

    #[test]
    fn debug_redacts_secrets() {
        let mut c = valid();
        c.turn_secrets = vec!["topsecretvalue123".into()];
        let s = format!("{c:?}");
        assert!(!s.contains("topsecretvalue123"));
        assert!(!s.contains("\"pw\""));
        assert!(s.contains("alice"));
    }

    #[test]
    fn external_ip_roundtrip() {
        for s in ["1.2.3.4", "1.2.3.4/10.0.0.1", "2001:db8::1/fd00::1"] {
            assert_eq!(s.parse::<ExternalIp>().unwrap().to_string(), s);
        }
        assert!("1.2.3.4/".parse::<ExternalIp>().is_err());
    }
}
