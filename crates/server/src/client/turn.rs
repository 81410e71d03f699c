//! A reusable async STUN/TURN client (RFC 8489, RFC 8656) over UDP, TCP and TLS.
//!
//! * One [`TurnClient`] is one transport connection to one server (for UDP a connected socket).
//! * Requests ([`TurnClient::binding`], [`TurnClient::allocate`], [`TurnClient::create_permission`],
//!   [`TurnClient::channel_bind`], [`TurnClient::refresh`]) run one transaction each, with the
//!   long-term credential mechanism handled transparently: the first request goes out
//!   unauthenticated, a 401 supplies REALM and NONCE, the request is retried with USERNAME, REALM,
//!   NONCE and MESSAGE-INTEGRITY, and a 438 (Stale Nonce) is retried with the fresh nonce. Later
//!   requests reuse the nonce.
//! * Over UDP requests are retransmitted (RTO 500 ms doubling, at most 7 transmissions, RFC 8489
//!   §6.2.1) but never longer than [`ClientOptions::timeout`] (10 s by default); over TCP/TLS they
//!   are sent once and the response awaited for the same time.
//! * Responses are matched on the transaction ID; anything else arriving while a transaction is
//!   pending (stray packets, data from peers) is dropped.
//! * An Allocate answered 300 (Try Alternate) with ALTERNATE-SERVER, signed with our key, is
//!   retried on the alternate server over the same transport (RFC 8489 §10): a new connection
//!   with the same credentials, at most [`ClientOptions::max_redirects`] times and never back
//!   to a server already tried. [`TurnClient::server_addr`] is then the alternate and
//!   [`TurnClient::redirected_from`] lists the servers that sent the client on.
//! * The data path ([`TurnClient::send_indication`], [`TurnClient::send_channel_data`],
//!   [`TurnClient::recv`]) is allocation-free: it writes into and reads from buffers owned by the
//!   client, and [`Incoming`] borrows from the receive buffer.
//!
//! TLS verification: there is no bundled root store. By default the server certificate is
//! verified against the system CA bundle (`$SSL_CERT_FILE`, else the usual distribution paths such
//! as `/etc/ssl/certs/ca-certificates.crt`); [`TlsOptions::ca_file`] replaces it with a PEM file
//! (for private CAs and self-signed server certificates) and [`TlsOptions::insecure`] turns
//! verification off (testing only).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use icebreaker_stun::{
    self as codec, attr, method, Class, Family, Message, MessageType, MessageWriter, TransactionId,
    CHANNEL_MAX, CHANNEL_MIN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use super::{method_name, reason_phrase};

/// SOFTWARE attribute sent by default.
pub const DEFAULT_SOFTWARE: &str = concat!("icebreaker-client/", env!("CARGO_PKG_VERSION"));

/// Largest UDP payload we can receive (and the size of the UDP receive buffer).
const UDP_BUF: usize = 65_536;
/// Stream receive buffer: room for two maximal frames so compaction is rare.
const STREAM_BUF: usize = 2 * (4 + 65_535 + 3) + 64;
/// Send buffer: the largest frame we can produce (ChannelData of 65535 bytes, padded).
const SEND_BUF: usize = 4 + 65_535 + 3 + 64;
/// Upper bound on request attempts caused by 401/438 round trips.
const MAX_AUTH_ROUNDS: usize = 4;
/// Default for [`ClientOptions::max_redirects`].
pub const MAX_REDIRECTS: u32 = 3;
/// REQUESTED-TRANSPORT value for UDP relaying.
const PROTO_UDP: u8 = 17;

/// Transport towards the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Transport {
    /// STUN/TURN over UDP.
    #[default]
    Udp,
    /// STUN/TURN over TCP (RFC 8489 §6.2.2, stream framing of RFC 8656 §12.5).
    Tcp,
    /// STUN/TURN over TLS over TCP.
    Tls,
}

impl Transport {
    /// Whether the transport is a reliable stream (TCP, TLS).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}

/// TLS settings (only used with [`Transport::Tls`]).
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// Name to send in SNI and to verify the certificate against; defaults to the server IP.
    pub server_name: Option<String>,
    /// PEM file with the CA certificate(s) to trust instead of the system bundle.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (self-signed test servers). Never use in production.
    pub insecure: bool,
}

/// Long-term credentials (RFC 8489 §9.2).
#[derive(Clone)]
pub enum Credentials {
    /// A static username and password.
    LongTerm {
        /// USERNAME.
        username: String,
        /// Password.
        password: String,
    },
    /// TURN REST API credentials derived from a shared secret: username `<now+ttl>:<user>`,
    /// password `base64(HMAC-SHA1(secret, username))`.
    Rest {
        /// The shared secret (coturn's `static-auth-secret`).
        secret: String,
        /// The user part of the username.
        user: String,
        /// How long the credentials are valid.
        ttl: Duration,
    },
}

impl Credentials {
    /// The (username, password) pair to use now.
    pub fn resolve(&self) -> (String, String) {
        match self {
            Credentials::LongTerm { username, password } => (username.clone(), password.clone()),
            Credentials::Rest { secret, user, ttl } => {
                let ttl = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
                let c = crate::credentials::rest_credentials(
                    secret,
                    user,
                    ttl,
                    crate::credentials::now_unix(),
                );
                (c.username, c.password)
            }
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::LongTerm { username, .. } => f
                .debug_struct("LongTerm")
                .field("username", username)
                .field("password", &"<hidden>")
                .finish(),
            Credentials::Rest { user, ttl, .. } => f
                .debug_struct("Rest")
                .field("secret", &"<hidden>")
                .field("user", user)
                .field("ttl", ttl)
                .finish(),
        }
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Transport towards the server.
    pub transport: Transport,
    /// Credentials for the long-term mechanism; without them requests are never authenticated.
    pub credentials: Option<Credentials>,
    /// Use this realm instead of the one the server announces.
    pub realm: Option<String>,
    /// SOFTWARE attribute for requests (None: omit).
    pub software: Option<String>,
    /// Append FINGERPRINT to requests.
    pub fingerprint: bool,
    /// TLS settings.
    pub tls: TlsOptions,
    /// Local address to bind (default: the unspecified address of the server's family).
    pub bind: Option<SocketAddr>,
    /// Initial retransmission timeout over UDP (RFC 8489: 500 ms).
    pub rto: Duration,
    /// Maximum number of transmissions of a request over UDP (RFC 8489 Rc: 7).
    pub max_transmissions: u32,
    /// Overall limit for one transaction (and for connecting).
    pub timeout: Duration,
    /// How many 300 (Try Alternate) answers to an Allocate are followed (0: none, the 300 is
    /// returned as an error).
    pub max_redirects: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            transport: Transport::Udp,
            credentials: None,
            realm: None,
            software: Some(DEFAULT_SOFTWARE.to_owned()),
            fingerprint: true,
            tls: TlsOptions::default(),
            bind: None,
            rto: Duration::from_millis(500),
            max_transmissions: 7,
            timeout: Duration::from_secs(10),
            max_redirects: MAX_REDIRECTS,
        }
    }
}

/// Errors of the client.
#[derive(Debug)]
pub enum TurnError {
    /// Socket error (including ICMP port unreachable on UDP, reported as connection refused).
    Io(io::Error),
    /// No (valid) response within the time limit.
    Timeout {
        /// Method of the request.
        method: u16,
        /// Time waited.
        after: Duration,
        /// Number of transmissions of the request.
        transmissions: u32,
    },
    /// The server answered with an error response.
    ErrorResponse {
        /// Method of the request.
        method: u16,
        /// ERROR-CODE number (e.g. 401).
        code: u16,
        /// ERROR-CODE reason phrase.
        reason: String,
    },
    /// The server sent something that violates the protocol.
    Protocol(String),
    /// TLS setup failed (certificates, handshake).
    Tls(String),
    /// The caller passed an invalid argument.
    InvalidInput(String),
    /// An Allocate was sent to another server (300 Try Alternate) that could not be reached.
    Redirect {
        /// The server that sent the client on.
        from: SocketAddr,
        /// Its ALTERNATE-SERVER.
        to: SocketAddr,
        /// What connecting to `to` gave.
        error: Box<TurnError>,
    },
}

impl TurnError {
    /// The STUN error code if this is an error response.
    pub fn code(&self) -> Option<u16> {
        match self {
            TurnError::ErrorResponse { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for TurnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TurnError::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                write!(
                    f,
                    "connection refused: no server is listening at that address"
                )
            }
            TurnError::Io(e) => write!(f, "I/O error: {e}"),
            TurnError::Timeout {
                method,
                after,
                transmissions,
            } => write!(
                f,
                "no response to {} request after {:.1} s ({} transmission{})",
                method_name(*method),
                after.as_secs_f64(),
                transmissions,
                if *transmissions == 1 { "" } else { "s" }
            ),
            TurnError::ErrorResponse { code, reason, .. } => {
                let reason = if reason.is_empty() {
                    reason_phrase(*code)
                } else {
                    reason
                };
                write!(f, "{code} {reason}")
            }
            TurnError::Protocol(m) => write!(f, "protocol error: {m}"),
            TurnError::Tls(m) => write!(f, "TLS: {m}"),
            TurnError::InvalidInput(m) => write!(f, "invalid input: {m}"),
            TurnError::Redirect { from, to, error } => write!(
                f,
                "{from} sent the allocation to {to} (300 Try Alternate), which failed: {error}"
            ),
        }
    }
}

/// The Display text is complete (it includes the I/O error), so no `source()` is reported:
/// `{:#}` chains would repeat it.
impl std::error::Error for TurnError {}

impl From<io::Error> for TurnError {
    fn from(e: io::Error) -> Self {
        TurnError::Io(e)
    }
}

impl From<codec::Error> for TurnError {
    fn from(e: codec::Error) -> Self {
        match e {
            codec::Error::BufferTooSmall => {
                TurnError::InvalidInput("message does not fit in a STUN/TURN frame".into())
            }
            e => TurnError::Protocol(e.to_string()),
        }
    }
}

/// Options of an Allocate request.
#[derive(Clone, Debug, Default)]
pub struct AllocateOptions {
    /// Requested LIFETIME in seconds (None: server default).
    pub lifetime: Option<u32>,
    /// REQUESTED-ADDRESS-FAMILY (None: server default, normally IPv4).
    pub family: Option<Family>,
    /// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 dual allocation; only IPv6 is meaningful).
    pub additional_family: Option<Family>,
    /// EVEN-PORT, with the value of its R bit (reserve the next port).
    pub even_port: Option<bool>,
    /// RESERVATION-TOKEN from an earlier EVEN-PORT allocation.
    pub reservation_token: Option<[u8; 8]>,
    /// DONT-FRAGMENT.
    pub dont_fragment: bool,
}

/// Result of a successful Allocate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The (first) XOR-RELAYED-ADDRESS.
    pub relayed: SocketAddr,
    /// A second XOR-RELAYED-ADDRESS (dual-stack allocation).
    pub additional_relayed: Option<SocketAddr>,
    /// XOR-MAPPED-ADDRESS: our address as seen by the server.
    pub mapped: Option<SocketAddr>,
    /// Granted lifetime in seconds.
    pub lifetime: u32,
    /// RESERVATION-TOKEN, if the server reserved the next port.
    pub reservation_token: Option<[u8; 8]>,
}

/// Result of a successful Binding request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingResponse {
    /// XOR-MAPPED-ADDRESS.
    pub xor_mapped: Option<SocketAddr>,
    /// MAPPED-ADDRESS (RFC 3489 servers).
    pub mapped: Option<SocketAddr>,
    /// The server's SOFTWARE.
    pub software: Option<String>,
    /// RESPONSE-ORIGIN (RFC 5780).
    pub response_origin: Option<SocketAddr>,
    /// OTHER-ADDRESS (RFC 5780).
    pub other_address: Option<SocketAddr>,
    /// Time from the first transmission of the request to the response.
    pub rtt: Duration,
    /// Number of transmissions needed.
    pub transmissions: u32,
}

impl BindingResponse {
    /// The reflexive address: XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS.
    pub fn reflexive(&self) -> Option<SocketAddr> {
        self.xor_mapped.or(self.mapped)
    }
}

/// Something received from the server outside a transaction.
#[derive(Clone, Copy, Debug)]
pub enum Incoming<'a> {
    /// A Data indication: `data` was sent to our relayed address by `peer`.
    Data {
        /// XOR-PEER-ADDRESS.
        peer: SocketAddr,
        /// DATA.
        data: &'a [u8],
    },
    /// A ChannelData message.
    ChannelData {
        /// Channel number.
        channel: u16,
        /// Application data.
        data: &'a [u8],
    },
    /// Any other STUN message (e.g. a late response to an earlier transaction).
    Stun(Message<'a>),
}

/// What a frame is, as ranges into the receive buffer (no borrow kept).
#[derive(Clone, Debug)]
enum Frame {
    Data {
        peer: SocketAddr,
        data: Range<usize>,
    },
    ChannelData {
        channel: u16,
        data: Range<usize>,
    },
    Stun(Range<usize>),
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

struct Auth {
    username: String,
    password: String,
}

/// Where an authenticated 300 (Try Alternate) sends the client: ALTERNATE-SERVER, and
/// ALTERNATE-DOMAIN (the name to verify the alternate's certificate against, TLS only).
struct Alternate {
    to: SocketAddr,
    domain: Option<String>,
}

/// An async STUN/TURN client bound to one server over one transport.
pub struct TurnClient {
    conn: Conn,
    transport: Transport,
    server: SocketAddr,
    local: SocketAddr,
    opts: ClientOptions,
    auth: Option<Auth>,
    realm: Option<String>,
    nonce: Vec<u8>,
    key: Option<[u8; 16]>,
    sbuf: Box<[u8]>,
    rbuf: Box<[u8]>,
    /// Stream transports: unconsumed bytes are `rbuf[rstart..rend]`.
    rstart: usize,
    rend: usize,
    last_rtt: Duration,
    /// The servers that sent this client on (300 Try Alternate), in order.
    redirected_from: Vec<SocketAddr>,
    /// The ALTERNATE-SERVER of the last authenticated 300 to an Allocate.
    alternate: Option<Alternate>,
}

impl fmt::Debug for TurnClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnClient")
            .field("transport", &self.transport)
            .field("server", &self.server)
            .field("local", &self.local)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

impl TurnClient {
    /// Connect to `server` (UDP: bind and connect a socket; TCP: connect; TLS: connect and
    /// handshake). Fails after [`ClientOptions::timeout`].
    pub async fn connect(server: SocketAddr, opts: ClientOptions) -> Result<Self, TurnError> {
        let transport = opts.transport;
        let bind = opts.bind.unwrap_or_else(|| unspecified_for(server));
        let deadline = tokio::time::Instant::now() + opts.timeout;
        let conn = match transport {
            Transport::Udp => {
                let sock = UdpSocket::bind(bind).await?;
                sock.connect(server).await?;
                Conn::Udp(sock)
            }
            Transport::Tcp | Transport::Tls => {
                let tcp = tokio::time::timeout_at(deadline, tcp_connect(bind, server))
                    .await
                    .map_err(|_| {
                        TurnError::Io(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("TCP connection to {server} timed out"),
                        ))
                    })??;
                if transport == Transport::Tls {
                    let config = tls_client_config(&opts.tls)?;
                    let name = opts
                        .tls
                        .server_name
                        .clone()
                        .unwrap_or_else(|| server.ip().to_string());
                    let name = rustls::pki_types::ServerName::try_from(name.clone())
                        .map_err(|_| TurnError::Tls(format!("invalid TLS server name {name:?}")))?;
                    let connector = tokio_rustls::TlsConnector::from(config);
                    let tls = tokio::time::timeout_at(deadline, connector.connect(name, tcp))
                        .await
                        .map_err(|_| TurnError::Tls(format!("handshake with {server} timed out")))?
                        .map_err(|e| {
                            TurnError::Tls(format!("handshake with {server} failed: {e}"))
                        })?;
                    Conn::Tls(Box::new(tls))
                } else {
                    Conn::Tcp(tcp)
                }
            }
        };
        let local = match &conn {
            Conn::Udp(s) => s.local_addr()?,
            Conn::Tcp(s) => s.local_addr()?,
            Conn::Tls(s) => s.get_ref().0.local_addr()?,
        };
        let auth = opts.credentials.as_ref().map(|c| {
            let (username, password) = c.resolve();
            Auth { username, password }
        });
        let rbuf_len = if transport.is_stream() {
            STREAM_BUF
        } else {
            UDP_BUF
        };
        Ok(TurnClient {
            conn,
            transport,
            server,
            local,
            auth,
            realm: None,
            nonce: Vec::new(),
            key: None,
            sbuf: vec![0u8; SEND_BUF].into_boxed_slice(),
            rbuf: vec![0u8; rbuf_len].into_boxed_slice(),
            rstart: 0,
            rend: 0,
            last_rtt: Duration::ZERO,
            redirected_from: Vec::new(),
            alternate: None,
            opts,
        })
    }

    /// The server address (after a redirection: the alternate server's).
    pub fn server_addr(&self) -> SocketAddr {
        self.server
    }

    /// The servers that redirected this client's Allocate (300 Try Alternate), in order: empty
    /// unless it ended up on another server than the one it connected to.
    pub fn redirected_from(&self) -> &[SocketAddr] {
        &self.redirected_from
    }

    /// Our local address towards the server.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The transport in use.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The realm in use (known after the first 401).
    pub fn realm(&self) -> Option<&str> {
        self.realm.as_deref()
    }

    /// The current NONCE (empty until the server sent one).
    pub fn nonce(&self) -> &[u8] {
        &self.nonce
    }

    /// The USERNAME sent with authenticated requests.
    pub fn username(&self) -> Option<&str> {
        self.auth.as_ref().map(|a| a.username.as_str())
    }

    /// Round-trip time of the last successful transaction's final exchange (from the first
    /// transmission of the request that got the response).
    pub fn last_rtt(&self) -> Duration {
        self.last_rtt
    }

    /// Send a Binding request and return the reflexive address.
    pub async fn binding(&mut self) -> Result<BindingResponse, TurnError> {
        self.binding_padded(0).await
    }

    /// Binding request padded (with a PADDING attribute) to at least `pad_to` bytes, so that the
    /// request is not smaller than the response (servers may trim responses to small requests to
    /// avoid amplification). Padding is applied over UDP only: amplification is no concern on
    /// TCP/TLS and RFC 5780 servers reject PADDING there (coturn answers 400).
    pub async fn binding_padded(&mut self, pad_to: usize) -> Result<BindingResponse, TurnError> {
        let pad_to = if self.transport.is_stream() {
            0
        } else {
            pad_to
        };
        let (range, transmissions) = self
            .transaction(method::BINDING, pad_to, |_| Ok(()))
            .await?;
        let msg = self.response(range)?;
        Ok(BindingResponse {
            xor_mapped: msg.xor_mapped_address()?,
            mapped: msg.mapped_address()?,
            software: msg.software()?.map(str::to_owned),
            response_origin: msg
                .get(attr::RESPONSE_ORIGIN)
                .and_then(|a| codec::decode_address(a.value).ok()),
            other_address: msg
                .get(attr::OTHER_ADDRESS)
                .and_then(|a| codec::decode_address(a.value).ok()),
            rtt: self.last_rtt,
            transmissions,
        })
    }

    /// Allocate a UDP relay, following 300 (Try Alternate) answers (see the module
    /// documentation).
    pub async fn allocate(&mut self, opts: &AllocateOptions) -> Result<Allocation, TurnError> {
        let mut redirects = 0u32;
        loop {
            self.alternate = None;
            let err = match self.allocate_here(opts).await {
                Ok(a) => return Ok(a),
                Err(e) => e,
            };
            // Only a 300 signed with our key is followed (set by `transaction`).
            let Some(alt) = self.alternate.take() else {
                return Err(err);
            };
            // RFC 8489 §10: a redirection to a server this request was already sent to is
            // ignored (no ping-pong between servers).
            let tried = alt.to == self.server || self.redirected_from.contains(&alt.to);
            if tried || redirects >= self.opts.max_redirects || opts.reservation_token.is_some() {
                return Err(err);
            }
            redirects += 1;
            let from = self.server;
            tracing::debug!(%from, to = %alt.to, "Allocate: 300 Try Alternate");
            self.move_to(alt)
                .await
                .map_err(|(to, e)| TurnError::Redirect {
                    from,
                    to,
                    error: Box::new(e),
                })?;
        }
    }

    /// Replace the connection with one to `alt.to` over the same transport, keeping the
    /// credentials (RFC 8489 §10: the same ones) and the options. TLS verifies the alternate
    /// against ALTERNATE-DOMAIN when given, else against the configured server name (or its
    /// IP address when none is configured). On failure nothing changes.
    async fn move_to(&mut self, alt: Alternate) -> Result<(), (SocketAddr, TurnError)> {
        let mut opts = self.opts.clone();
        if let (Transport::Tls, Some(d)) = (self.transport, alt.domain) {
            opts.tls.server_name = Some(d);
        }
        // A fixed local port is still held by the current connection.
        if let Some(b) = opts.bind.as_mut() {
            b.set_port(0);
        }
        let mut next = TurnClient::connect(alt.to, opts)
            .await
            .map_err(|e| (alt.to, e))?;
        next.auth = self.auth.take();
        next.redirected_from = std::mem::take(&mut self.redirected_from);
        next.redirected_from.push(self.server);
        *self = next;
        Ok(())
    }

    /// One Allocate on the current server.
    async fn allocate_here(&mut self, opts: &AllocateOptions) -> Result<Allocation, TurnError> {
        let (range, _) = self
            .transaction(method::ALLOCATE, 0, |w| {
                w.requested_transport(PROTO_UDP)?;
                if let Some(lifetime) = opts.lifetime {
                    w.lifetime(lifetime)?;
                }
                if let Some(f) = opts.family {
                    w.attr(attr::REQUESTED_ADDRESS_FAMILY, &family_value(f))?;
                }
                if let Some(f) = opts.additional_family {
                    w.attr(attr::ADDITIONAL_ADDRESS_FAMILY, &family_value(f))?;
                }
                if let Some(reserve) = opts.even_port {
                    w.attr(attr::EVEN_PORT, &[if reserve { 0x80 } else { 0 }])?;
                }
                if let Some(token) = &opts.reservation_token {
                    w.attr(attr::RESERVATION_TOKEN, token)?;
                }
                if opts.dont_fragment {
                    w.attr(attr::DONT_FRAGMENT, &[])?;
                }
                Ok(())
            })
            .await?;
        let msg = self.response(range)?;
        let mut relayed = msg.xor_relayed_addresses();
        let first = relayed.next().ok_or_else(|| {
            TurnError::Protocol("Allocate success without XOR-RELAYED-ADDRESS".into())
        })??;
        let additional_relayed = relayed.next().transpose()?;
        let lifetime = msg
            .lifetime()?
            .ok_or_else(|| TurnError::Protocol("Allocate success without LIFETIME".into()))?;
        Ok(Allocation {
            relayed: first,
            additional_relayed,
            mapped: msg.xor_mapped_address()?,
            lifetime,
            reservation_token: msg.reservation_token()?,
        })
    }

    /// Install permissions for the IP addresses of `peers` (ports are ignored by the server).
    pub async fn create_permission(&mut self, peers: &[SocketAddr]) -> Result<(), TurnError> {
        if peers.is_empty() {
            return Err(TurnError::InvalidInput(
                "CreatePermission needs at least one peer".into(),
            ));
        }
        self.transaction(method::CREATE_PERMISSION, 0, |w| {
            for p in peers {
                w.xor_address(attr::XOR_PEER_ADDRESS, *p)?;
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Bind `channel` (0x4000..=0x4FFF) to `peer`.
    pub async fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Result<(), TurnError> {
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&channel) {
            return Err(TurnError::InvalidInput(format!(
                "channel number {channel:#06x} outside {CHANNEL_MIN:#06x}..={CHANNEL_MAX:#06x}"
            )));
        }
        self.transaction(method::CHANNEL_BIND, 0, |w| {
            w.channel_number(channel)?;
            w.xor_address(attr::XOR_PEER_ADDRESS, peer)
        })
        .await?;
        Ok(())
    }

    /// Refresh the allocation; returns the granted lifetime. `lifetime` 0 deletes the allocation
    /// (a 437 answer to a deletion counts as success, RFC 8656 §8.3).
    pub async fn refresh(&mut self, lifetime: u32) -> Result<u32, TurnError> {
        let res = self
            .transaction(method::REFRESH, 0, |w| w.lifetime(lifetime))
            .await;
        match res {
            Ok((range, _)) => Ok(self.response(range)?.lifetime()?.unwrap_or(lifetime)),
            Err(TurnError::ErrorResponse { code: 437, .. }) if lifetime == 0 => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Send `data` to `peer` through the relay in a Send indication.
    pub async fn send_indication(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
    ) -> Result<(), TurnError> {
        let tid: TransactionId = rand::random();
        let mut w = MessageWriter::new(
            &mut self.sbuf,
            MessageType::new(method::SEND, Class::Indication),
            &tid,
        )?;
        w.xor_address(attr::XOR_PEER_ADDRESS, peer)?;
        w.attr(attr::DATA, data)?;
        let len = w.finish();
        self.send_frame(len).await
    }

    /// Send `data` on a bound channel as ChannelData (padded to 4 bytes on TCP/TLS).
    pub async fn send_channel_data(&mut self, channel: u16, data: &[u8]) -> Result<(), TurnError> {
        let len = 4 + data.len();
        let padded = if self.transport.is_stream() {
            (len + 3) & !3
        } else {
            len
        };
        if data.len() > usize::from(u16::MAX) || padded > self.sbuf.len() {
            return Err(TurnError::InvalidInput(format!(
                "ChannelData payload of {} bytes is too large",
                data.len()
            )));
        }
        codec::write_channel_data_header(&mut self.sbuf[..4], channel, data.len())?;
        self.sbuf[4..len].copy_from_slice(data);
        self.sbuf[len..padded].fill(0);
        self.send_frame(padded).await
    }

    /// Send an arbitrary pre-encoded frame (STUN message or ChannelData) as is.
    pub async fn send_raw(&mut self, frame: &[u8]) -> Result<(), TurnError> {
        if frame.len() > self.sbuf.len() {
            return Err(TurnError::InvalidInput("frame too large".into()));
        }
        self.sbuf[..frame.len()].copy_from_slice(frame);
        self.send_frame(frame.len()).await
    }

    /// Receive the next Data indication, ChannelData message or STUN message from the server,
    /// skipping undecodable packets.
    pub async fn recv(&mut self) -> Result<Incoming<'_>, TurnError> {
        let frame = self.recv_frame().await?;
        self.incoming(frame)
    }

    /// Like [`TurnClient::recv`] with a time limit; `Ok(None)` on timeout.
    pub async fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Incoming<'_>>, TurnError> {
        match tokio::time::timeout(timeout, self.recv_frame()).await {
            Err(_) => Ok(None),
            Ok(frame) => self.incoming(frame?).map(Some),
        }
    }

    fn incoming(&self, frame: Frame) -> Result<Incoming<'_>, TurnError> {
        Ok(match frame {
            Frame::Data { peer, data } => Incoming::Data {
                peer,
                data: self.slice(data)?,
            },
            Frame::ChannelData { channel, data } => Incoming::ChannelData {
                channel,
                data: self.slice(data)?,
            },
            Frame::Stun(r) => Incoming::Stun(Message::parse(self.slice(r)?)?),
        })
    }

    fn slice(&self, r: Range<usize>) -> Result<&[u8], TurnError> {
        self.rbuf
            .get(r)
            .ok_or_else(|| TurnError::Protocol("internal: frame range out of buffer".into()))
    }

    fn response(&self, r: Range<usize>) -> Result<Message<'_>, TurnError> {
        Ok(Message::parse(self.slice(r)?)?)
    }

    /// Next decodable frame from the server.
    async fn recv_frame(&mut self) -> Result<Frame, TurnError> {
        loop {
            let r = self.read_frame().await?;
            if let Some(f) = classify(&self.rbuf, r) {
                return Ok(f);
            }
        }
    }

    /// Read one datagram (UDP) or one framed message (TCP/TLS); returns its range in `rbuf`.
    /// Cancellation-safe: no received bytes are lost if the future is dropped.
    async fn read_frame(&mut self) -> Result<Range<usize>, TurnError> {
        let stream: &mut (dyn tokio::io::AsyncRead + Unpin + Send) = match &mut self.conn {
            Conn::Udp(sock) => {
                let n = sock.recv(&mut self.rbuf).await?;
                return Ok(0..n);
            }
            Conn::Tcp(s) => s,
            Conn::Tls(s) => s.as_mut(),
        };
        loop {
            let avail = &self.rbuf[self.rstart..self.rend];
            let need = match codec::stream_frame_len(avail) {
                Ok(Some(n)) if n <= avail.len() => {
                    let start = self.rstart;
                    self.rstart += n;
                    if self.rstart == self.rend {
                        self.rstart = 0;
                        self.rend = 0;
                        // The frame is still at start..start+n: compaction happens only before
                        // the next read, after the caller is done with it.
                    }
                    return Ok(start..start + n);
                }
                Ok(Some(n)) => n,
                Ok(None) => 4,
                Err(_) => {
                    return Err(TurnError::Protocol(
                        "server sent bytes that are neither STUN nor ChannelData on the stream"
                            .into(),
                    ))
                }
            };
            if need > self.rbuf.len() {
                return Err(TurnError::Protocol(format!(
                    "frame of {need} bytes exceeds the receive buffer"
                )));
            }
            if self.rstart + need > self.rbuf.len() {
                self.rbuf.copy_within(self.rstart..self.rend, 0);
                self.rend -= self.rstart;
                self.rstart = 0;
            }
            let n = stream.read(&mut self.rbuf[self.rend..]).await?;
            if n == 0 {
                return Err(TurnError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )));
            }
            self.rend += n;
        }
    }

    async fn send_frame(&mut self, len: usize) -> Result<(), TurnError> {
        let buf = &self.sbuf[..len];
        match &mut self.conn {
            Conn::Udp(sock) => {
                let n = sock.send(buf).await?;
                if n != len {
                    return Err(TurnError::Io(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "datagram truncated",
                    )));
                }
            }
            Conn::Tcp(s) => s.write_all(buf).await?,
            Conn::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await?;
            }
        }
        Ok(())
    }

    /// Encode a request into `sbuf`, with authentication attributes when a nonce is known.
    fn encode_request<F>(
        &mut self,
        method: u16,
        tid: &TransactionId,
        pad_to: usize,
        build: &mut F,
    ) -> Result<(usize, bool), TurnError>
    where
        F: FnMut(&mut MessageWriter<'_>) -> Result<(), codec::Error>,
    {
        let mut w = MessageWriter::new(
            &mut self.sbuf,
            MessageType::new(method, Class::Request),
            tid,
        )?;
        build(&mut w)?;
        let authed = match (&self.auth, &self.realm, &self.key) {
            (Some(auth), Some(realm), Some(key)) if !self.nonce.is_empty() => {
                Some((auth, realm, key))
            }
            _ => None,
        };
        if let Some((auth, realm, _)) = authed {
            w.attr(attr::USERNAME, auth.username.as_bytes())?;
            w.attr(attr::REALM, realm.as_bytes())?;
            w.attr(attr::NONCE, &self.nonce)?;
        }
        if let Some(sw) = &self.opts.software {
            w.attr(attr::SOFTWARE, sw.as_bytes())?;
        }
        if pad_to > 0 {
            let tail =
                if authed.is_some() { 24 } else { 0 } + if self.opts.fingerprint { 8 } else { 0 };
            let after = w.len() + 4 + tail;
            if after < pad_to {
                let pad = (pad_to - after + 3) & !3;
                w.attr_slot(attr::PADDING, pad)?.fill(0);
            }
        }
        if let Some((_, _, key)) = authed {
            w.message_integrity(key)?;
        }
        if self.opts.fingerprint {
            w.fingerprint()?;
        }
        Ok((w.finish(), authed.is_some()))
    }

    /// Run one request (with the 401/438 dance); returns the success response's range in `rbuf`
    /// and the number of transmissions of the final request.
    async fn transaction<F>(
        &mut self,
        method: u16,
        pad_to: usize,
        mut build: F,
    ) -> Result<(Range<usize>, u32), TurnError>
    where
        F: FnMut(&mut MessageWriter<'_>) -> Result<(), codec::Error>,
    {
        for _ in 0..MAX_AUTH_ROUNDS {
            let tid: TransactionId = rand::random();
            let (len, authed) = self.encode_request(method, &tid, pad_to, &mut build)?;
            let (range, transmissions) = self.exchange(method, &tid, len, authed).await?;
            let msg = self.response(range.clone())?;
            if msg.class() == Class::Success {
                return Ok((range, transmissions));
            }
            let (code, reason) = match msg.error_code() {
                Ok(Some((code, reason))) => (code, reason),
                _ => {
                    return Err(TurnError::Protocol(format!(
                        "{} error response without a valid ERROR-CODE",
                        method_name(method)
                    )))
                }
            };
            let retry = self.auth.is_some()
                && ((code == 401 && !authed) || code == 438)
                && matches!(msg.nonce(), Ok(Some(n)) if !n.is_empty());
            if !retry {
                // `check_response` verified the integrity of a signed answer to a signed request.
                let alt =
                    (code == 300 && method == method::ALLOCATE && authed && msg.has_integrity())
                        .then(|| alternate_of(&msg, self.server))
                        .flatten();
                let err = TurnError::ErrorResponse {
                    method,
                    code,
                    reason: sanitize_reason(reason),
                };
                self.alternate = alt;
                return Err(err);
            }
            let nonce = msg.nonce().ok().flatten().unwrap_or_default().to_vec();
            let server_realm = msg.realm().ok().flatten().map(str::to_owned);
            self.nonce = nonce;
            let realm = match (&self.opts.realm, server_realm, &self.realm) {
                (Some(r), _, _) => r.clone(),
                (None, Some(r), _) => r,
                (None, None, Some(r)) => r.clone(),
                (None, None, None) => {
                    return Err(TurnError::Protocol(format!(
                        "{code} response without REALM"
                    )))
                }
            };
            if let Some(auth) = &self.auth {
                if self.realm.as_deref() != Some(realm.as_str()) || self.key.is_none() {
                    self.key = Some(codec::long_term_key(&auth.username, &realm, &auth.password));
                }
            }
            self.realm = Some(realm);
        }
        Err(TurnError::Protocol(format!(
            "{} still not authenticated after {MAX_AUTH_ROUNDS} attempts (nonce keeps changing)",
            method_name(method)
        )))
    }

    /// Send the encoded request in `sbuf[..len]` (retransmitting over UDP) until a matching
    /// response arrives.
    async fn exchange(
        &mut self,
        method: u16,
        tid: &TransactionId,
        len: usize,
        authed: bool,
    ) -> Result<(Range<usize>, u32), TurnError> {
        let reliable = self.transport.is_stream();
        let start = Instant::now();
        let deadline = tokio::time::Instant::from_std(start + self.opts.timeout);
        let max_tx = if reliable {
            1
        } else {
            self.opts.max_transmissions.max(1)
        };
        let mut rto = self.opts.rto;
        let mut transmissions = 0u32;
        loop {
            self.send_frame(len).await?;
            transmissions += 1;
            let wait_until = if transmissions < max_tx {
                (tokio::time::Instant::now() + rto).min(deadline)
            } else {
                // After the last transmission RFC 8489 waits Rm (16) * RTO; the overall limit
                // applies anyway.
                (tokio::time::Instant::now() + self.opts.rto * 16).min(deadline)
            };
            rto = rto.saturating_mul(2);
            loop {
                let range = match tokio::time::timeout_at(wait_until, self.read_frame()).await {
                    Err(_) => break,
                    Ok(r) => r?,
                };
                match self.check_response(&range, method, tid, authed) {
                    Check::Match => {
                        self.last_rtt = start.elapsed();
                        return Ok((range, transmissions));
                    }
                    Check::Ignore => {}
                    Check::Bad(why) if reliable => return Err(TurnError::Protocol(why.into())),
                    Check::Bad(_) => {}
                }
            }
            if transmissions >= max_tx || tokio::time::Instant::now() >= deadline {
                return Err(TurnError::Timeout {
                    method,
                    after: start.elapsed(),
                    transmissions,
                });
            }
        }
    }

    fn check_response(
        &self,
        range: &Range<usize>,
        method: u16,
        tid: &TransactionId,
        authed: bool,
    ) -> Check {
        let Some(buf) = self.rbuf.get(range.clone()) else {
            return Check::Ignore;
        };
        if !codec::is_stun(buf) {
            return Check::Ignore;
        }
        let Ok(msg) = Message::parse(buf) else {
            return Check::Ignore;
        };
        if msg.transaction_id() != tid || !matches!(msg.class(), Class::Success | Class::Error) {
            return Check::Ignore;
        }
        if msg.method() != method {
            return Check::Bad("response method does not match the request");
        }
        if msg.has_fingerprint() && !msg.check_fingerprint() {
            return Check::Bad("response with a wrong FINGERPRINT");
        }
        if authed {
            // 401/438 come without integrity (the server could not verify us); anything else
            // must be protected with our key (RFC 8489 §9.2.5).
            let must = msg.class() == Class::Success;
            if must || msg.has_integrity() {
                let Some(key) = &self.key else {
                    return Check::Bad("internal: no key");
                };
                if msg.verify_integrity(key).is_err() {
                    return Check::Bad("response failed the MESSAGE-INTEGRITY check");
                }
            }
        }
        Check::Match
    }
}

enum Check {
    Match,
    Ignore,
    Bad(&'static str),
}

fn classify(buf: &[u8], r: Range<usize>) -> Option<Frame> {
    let b = buf.get(r.clone())?;
    if codec::is_channel_data(b) {
        let cd = codec::ChannelData::parse(b).ok()?;
        let start = r.start + 4;
        return Some(Frame::ChannelData {
            channel: cd.channel,
            data: start..start + cd.data.len(),
        });
    }
    let msg = Message::parse(b).ok()?;
    if msg.method() == method::DATA && msg.class() == Class::Indication {
        let peer = msg.xor_peer_addresses().next()?.ok()?;
        let data = msg.get(attr::DATA)?;
        let start = r.start + data.offset + 4;
        return Some(Frame::Data {
            peer,
            data: start..start + data.value.len(),
        });
    }
    Some(Frame::Stun(r))
}

/// The ALTERNATE-SERVER of a 300 to use from `current`: the first of `current`'s address family
/// (the server puts the one of the client's family first, RFC 8489 §10), else the first; with
/// ALTERNATE-DOMAIN if it is a plausible name. Attributes after MESSAGE-INTEGRITY do not count.
fn alternate_of(msg: &Message<'_>, current: SocketAddr) -> Option<Alternate> {
    let mut first = None;
    for a in msg.attributes() {
        match a.typ {
            attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT => break,
            attr::ALTERNATE_SERVER => {
                let Ok(to) = codec::decode_address(a.value) else {
                    continue;
                };
                if to.ip().is_unspecified() || to.port() == 0 {
                    continue;
                }
                if to.is_ipv4() == current.is_ipv4() {
                    first = Some(to);
                    break;
                }
                first = first.or(Some(to));
            }
            _ => {}
        }
    }
    let domain = msg
        .get(attr::ALTERNATE_DOMAIN)
        .and_then(|a| std::str::from_utf8(a.value).ok())
        .filter(|d| rustls::pki_types::ServerName::try_from(*d).is_ok())
        .map(str::to_owned);
    Some(Alternate { to: first?, domain })
}

/// Reason phrase fit for printing: no control characters (some servers send a trailing NUL),
/// at most 128 characters.
fn sanitize_reason(reason: &str) -> String {
    reason
        .trim_end_matches(['\0', ' '])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(128)
        .collect()
}

fn family_value(f: Family) -> [u8; 4] {
    match f {
        Family::V4 => [0x01, 0, 0, 0],
        Family::V6 => [0x02, 0, 0, 0],
    }
}

fn unspecified_for(server: SocketAddr) -> SocketAddr {
    match server {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

async fn tcp_connect(bind: SocketAddr, server: SocketAddr) -> io::Result<TcpStream> {
    let sock = if server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if bind.port() != 0 || !bind.ip().is_unspecified() {
        sock.bind(bind)?;
    }
    let stream = sock.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Build the rustls client configuration for `tls` (aws-lc-rs provider; the trust anchors as
/// [`crate::tls::system_ca_file`] and [`crate::tls::root_store`] find them).
pub fn tls_client_config(tls: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, TurnError> {
    if tls.insecure {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TurnError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(InsecureVerifier(provider)))
            .with_no_client_auth();
        return Ok(Arc::new(config));
    }
    let path = match &tls.ca_file {
        Some(p) => p.clone(),
        None => crate::tls::system_ca_file().ok_or_else(|| {
            TurnError::Tls(
                "no system CA bundle found (set SSL_CERT_FILE); use --ca FILE to trust a \
                 specific CA, or --insecure to skip verification (testing only)"
                    .into(),
            )
        })?,
    };
    let roots = crate::tls::root_store(&path).map_err(|e| TurnError::Tls(format!("{e:#}")))?;
    crate::tls::client_config(roots).map_err(|e| TurnError::Tls(format!("{e:#}")))
}

/// Accepts any certificate but still checks handshake signatures (so the connection is at least
/// bound to the presented key). For `--insecure` only.
#[derive(Debug)]
struct InsecureVerifier(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for InsecureVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn rest_username_shape() {
        let c = Credentials::Rest {
            secret: "s3cret".into(),
            user: "bob".into(),
            ttl: Duration::from_secs(60),
        };
        let (u, p) = c.resolve();
        let (exp, user) = u.split_once(':').expect("colon");
        assert_eq!(user, "bob");
        let exp: u64 = exp.parse().expect("number");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(exp >= now + 59 && exp <= now + 61);
        assert_eq!(p.len(), 28);
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn classify_frames() {
        let mut buf = [0u8; 256];
        // ChannelData, padded as on a stream.
        buf[..4].copy_from_slice(&[0x40, 0x01, 0x00, 0x03]);
        buf[4..7].copy_from_slice(b"abc");
        match classify(&buf, 0..8) {
            Some(Frame::ChannelData { channel, data }) => {
                assert_eq!(channel, 0x4001);
                assert_eq!(&buf[data], b"abc");
            }
            other => panic!("unexpected {other:?}"),
        }
        // Data indication at an offset.
        let tid = [7u8; 12];
        let peer: SocketAddr = "192.0.2.1:4000".parse().expect("addr");
        let mut tmp = [0u8; 128];
        let mut w = MessageWriter::new(
            &mut tmp,
            MessageType::new(method::DATA, Class::Indication),
            &tid,
        )
        .expect("writer");
        w.xor_address(attr::XOR_PEER_ADDRESS, peer).expect("peer");
        w.attr(attr::DATA, b"hello").expect("data");
        let n = w.finish();
        buf[16..16 + n].copy_from_slice(&tmp[..n]);
        match classify(&buf, 16..16 + n) {
            Some(Frame::Data { peer: p, data }) => {
                assert_eq!(p, peer);
                assert_eq!(&buf[data], b"hello");
            }
            other => panic!("unexpected {other:?}"),
        }
        // Garbage is skipped.
        assert!(classify(&[0xffu8; 40], 0..40).is_none());
        assert!(classify(&buf, 200..300).is_none());
    }

    #[test]
    fn reasons_are_sanitized() {
        assert_eq!(
            sanitize_reason("Mismatched allocation\0"),
            "Mismatched allocation"
        );
        assert_eq!(sanitize_reason("a\nb\x1b[31m"), "a b [31m");
        assert_eq!(sanitize_reason(&"x".repeat(500)).len(), 128);
    }

    #[test]
    fn padding_reaches_target() {
        // Encoding only: construct a client-less request through the same arithmetic.
        let mut sbuf = [0u8; 512];
        let tid = [1u8; 12];
        let mut w = MessageWriter::new(
            &mut sbuf,
            MessageType::new(method::BINDING, Class::Request),
            &tid,
        )
        .expect("writer");
        w.attr(attr::SOFTWARE, b"icebreaker-stun-client")
            .expect("sw");
        let after = w.len() + 4 + 8;
        let pad = (100 - after + 3) & !3;
        w.attr_slot(attr::PADDING, pad).expect("pad").fill(0);
        w.fingerprint().expect("fp");
        let n = w.finish();
        assert!(n >= 100, "{n}");
        assert!(Message::parse(&sbuf[..n])
            .expect("parse")
            .check_fingerprint());
    }
}
