//! Synchronous TURN control transactions for the load generator: Allocate, ChannelBind and
//! Refresh over a plain connected `std::net::UdpSocket`, so that the same socket (the same
//! 5-tuple, hence the same allocation) carries the data phase afterwards.
//!
//! Long-term credentials with the 401/438 dance, retransmission (RTO 250 ms doubling, at most 6
//! transmissions, never longer than the overall timeout), responses matched on the transaction
//! ID; anything else arriving meanwhile (late echoes of the data phase) is skipped.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use icebreaker_stun::{
    self as codec, attr, method, Class, Message, MessageType, MessageWriter, TransactionId,
};
use socket2::{Domain, Protocol, Socket, Type};

use crate::client::turn::Credentials;
use crate::client::{method_name, reason_phrase};

/// REQUESTED-TRANSPORT: UDP.
const PROTO_UDP: u8 = 17;
/// Socket buffer size asked for every benchmark socket (the kernel caps it at rmem_max/wmem_max).
pub const SOCKET_BUFFER: usize = 4 << 20;
const MAX_AUTH_ROUNDS: usize = 4;
const SOFTWARE: &str = concat!("icebreaker-bench/", env!("CARGO_PKG_VERSION"));

/// Why a control transaction failed.
#[derive(Debug)]
pub enum SetupError {
    /// Socket error.
    Io(io::Error),
    /// No response in time.
    Timeout {
        /// The request's method.
        method: u16,
    },
    /// An error response.
    Response {
        /// The request's method.
        method: u16,
        /// ERROR-CODE.
        code: u16,
        /// Reason phrase (sanitised).
        reason: String,
    },
    /// The server broke the protocol.
    Protocol(String),
}

impl SetupError {
    /// The error code of an error response.
    pub fn code(&self) -> Option<u16> {
        match self {
            SetupError::Response { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                f.write_str("connection refused: no server is listening at that address")
            }
            SetupError::Io(e) => write!(f, "I/O error: {e}"),
            SetupError::Timeout { method } => {
                write!(f, "no response to {} request", method_name(*method))
            }
            SetupError::Response {
                method,
                code,
                reason,
            } => {
                let reason = if reason.is_empty() {
                    reason_phrase(*code)
                } else {
                    reason
                };
                write!(f, "{} failed: {code} {reason}", method_name(*method))
            }
            SetupError::Protocol(m) => write!(f, "protocol error: {m}"),
        }
    }
}

impl std::error::Error for SetupError {}

impl From<io::Error> for SetupError {
    fn from(e: io::Error) -> Self {
        SetupError::Io(e)
    }
}

impl From<codec::Error> for SetupError {
    fn from(e: codec::Error) -> Self {
        SetupError::Protocol(format!("cannot encode request: {e}"))
    }
}

/// A UDP socket bound to `local_ip` (port chosen by the system), connected to `to`, with large
/// buffers.
pub fn udp_socket(local_ip: IpAddr, to: Option<SocketAddr>) -> io::Result<UdpSocket> {
    let domain = if local_ip.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.bind(&SocketAddr::new(local_ip, 0).into())?;
    if let Some(to) = to {
        s.connect(&to.into())?;
    }
    Ok(s.into())
}

/// The local address the system uses to reach `server`.
pub fn local_ip_towards(server: SocketAddr) -> io::Result<IpAddr> {
    let unspec: IpAddr = if server.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let s = UdpSocket::bind(SocketAddr::new(unspec, 0))?;
    s.connect(server)?;
    Ok(s.local_addr()?.ip())
}

/// One TURN allocation held over one connected UDP socket.
pub struct Session {
    /// The socket (connected to the server).
    pub sock: UdpSocket,
    /// Its local address.
    pub local: SocketAddr,
    /// XOR-RELAYED-ADDRESS.
    pub relayed: SocketAddr,
    /// Granted lifetime (s).
    pub lifetime: u32,
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Vec<u8>,
    key: Option<[u8; 16]>,
    timeout: Duration,
    /// Data-phase datagrams (ChannelData) a control transaction read and skipped.
    data_skipped: u64,
    sbuf: Box<[u8]>,
    rbuf: Box<[u8]>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("local", &self.local)
            .field("relayed", &self.relayed)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Allocate a UDP relay over `sock` (connected to the server).
    pub fn allocate(
        sock: UdpSocket,
        creds: &Credentials,
        lifetime: u32,
        timeout: Duration,
    ) -> Result<Session, SetupError> {
        let (username, password) = creds.resolve();
        let local = sock.local_addr()?;
        sock.set_nonblocking(false)?;
        let mut s = Session {
            sock,
            local,
            relayed: local,
            lifetime: 0,
            username,
            password,
            realm: None,
            nonce: Vec::new(),
            key: None,
            timeout,
            data_skipped: 0,
            sbuf: vec![0u8; 1024].into_boxed_slice(),
            rbuf: vec![0u8; 65_536].into_boxed_slice(),
        };
        let len = s.transaction(method::ALLOCATE, |w| {
            w.requested_transport(PROTO_UDP)?;
            w.lifetime(lifetime)
        })?;
        let msg = Message::parse(&s.rbuf[..len])
            .map_err(|e| SetupError::Protocol(format!("Allocate response: {e}")))?;
        s.relayed = msg.xor_relayed_address().ok().flatten().ok_or_else(|| {
            SetupError::Protocol("Allocate response without XOR-RELAYED-ADDRESS".into())
        })?;
        s.lifetime = msg.lifetime().ok().flatten().unwrap_or(lifetime);
        Ok(s)
    }

    /// Bind `channel` to `peer` (also installs the permission).
    pub fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Result<(), SetupError> {
        self.transaction(method::CHANNEL_BIND, |w| {
            w.channel_number(channel)?;
            w.xor_address(attr::XOR_PEER_ADDRESS, peer)
        })?;
        Ok(())
    }

    /// Refresh the allocation; `0` releases it. A 437 (no such allocation) on a release counts
    /// as released.
    pub fn refresh(&mut self, lifetime: u32) -> Result<(), SetupError> {
        match self.transaction(method::REFRESH, |w| w.lifetime(lifetime)) {
            Ok(_) => Ok(()),
            Err(e) if lifetime == 0 && e.code() == Some(437) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Data-phase datagrams (not STUN: echoes still in flight) that control transactions read
    /// and skipped since the last call; the counter starts over.
    pub fn take_data_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.data_skipped)
    }

    /// Put the socket back into blocking mode for control transactions after the data phase.
    pub fn reset_socket(&self) -> io::Result<()> {
        self.sock.set_nonblocking(false)
    }

    /// One request with the 401/438 dance; returns the length of the success response in rbuf.
    fn transaction<F>(&mut self, method: u16, build: F) -> Result<usize, SetupError>
    where
        F: Fn(&mut MessageWriter<'_>) -> Result<(), codec::Error>,
    {
        for _ in 0..MAX_AUTH_ROUNDS {
            let tid: TransactionId = rand::random();
            let (len, authed) = self.encode(method, &tid, &build)?;
            let rlen = self.exchange(method, &tid, len)?;
            let msg = Message::parse(&self.rbuf[..rlen])
                .map_err(|e| SetupError::Protocol(e.to_string()))?;
            if msg.class() == Class::Success {
                if let Some(key) = &self.key {
                    if msg.has_integrity() && msg.verify_integrity(key).is_err() {
                        return Err(SetupError::Protocol(
                            "response failed the MESSAGE-INTEGRITY check".into(),
                        ));
                    }
                }
                return Ok(rlen);
            }
            let (code, reason) = match msg.error_code() {
                Ok(Some((c, r))) => (c, sanitize(r)),
                _ => {
                    return Err(SetupError::Protocol(format!(
                        "{} error response without a valid ERROR-CODE",
                        method_name(method)
                    )))
                }
            };
            let nonce = msg.nonce().ok().flatten().unwrap_or_default();
            let retry = ((code == 401 && !authed) || code == 438) && !nonce.is_empty();
            if !retry {
                return Err(SetupError::Response {
                    method,
                    code,
                    reason,
                });
            }
            self.nonce = nonce.to_vec();
            if let Ok(Some(realm)) = msg.realm() {
                if self.realm.as_deref() != Some(realm) || self.key.is_none() {
                    self.key = Some(codec::long_term_key(&self.username, realm, &self.password));
                    self.realm = Some(realm.to_owned());
                }
            }
            if self.realm.is_none() {
                return Err(SetupError::Protocol(format!(
                    "{code} response without REALM"
                )));
            }
        }
        Err(SetupError::Protocol(format!(
            "{} still not authenticated after {MAX_AUTH_ROUNDS} attempts",
            method_name(method)
        )))
    }

    fn encode<F>(
        &mut self,
        method: u16,
        tid: &TransactionId,
        build: &F,
    ) -> Result<(usize, bool), SetupError>
    where
        F: Fn(&mut MessageWriter<'_>) -> Result<(), codec::Error>,
    {
        let mut w = MessageWriter::new(
            &mut self.sbuf,
            MessageType::new(method, Class::Request),
            tid,
        )?;
        build(&mut w)?;
        let authed = match (&self.realm, &self.key) {
            (Some(realm), Some(key)) if !self.nonce.is_empty() => {
                w.attr(attr::USERNAME, self.username.as_bytes())?;
                w.attr(attr::REALM, realm.as_bytes())?;
                w.attr(attr::NONCE, &self.nonce)?;
                w.attr(attr::SOFTWARE, SOFTWARE.as_bytes())?;
                w.message_integrity(key)?;
                true
            }
            _ => {
                w.attr(attr::SOFTWARE, SOFTWARE.as_bytes())?;
                false
            }
        };
        w.fingerprint()?;
        Ok((w.finish(), authed))
    }

    /// Send `sbuf[..len]` with retransmissions until a response with `tid` arrives.
    fn exchange(
        &mut self,
        method: u16,
        tid: &TransactionId,
        len: usize,
    ) -> Result<usize, SetupError> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut rto = Duration::from_millis(250);
        for _ in 0..6 {
            self.sock.send(&self.sbuf[..len])?;
            let wait_until = (Instant::now() + rto).min(deadline);
            rto *= 2;
            loop {
                let now = Instant::now();
                if now >= wait_until {
                    break;
                }
                self.sock.set_read_timeout(Some(wait_until - now))?;
                let n = match self.sock.recv(&mut self.rbuf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue
                    }
                    Err(e) => return Err(e.into()),
                };
                let buf = &self.rbuf[..n];
                if !codec::is_stun(buf) {
                    // ChannelData still in flight from the data phase.
                    self.data_skipped += 1;
                    continue;
                }
                let Ok(msg) = Message::parse(buf) else {
                    continue;
                };
                if msg.transaction_id() != tid
                    || !matches!(msg.class(), Class::Success | Class::Error)
                {
                    continue;
                }
                if msg.method() != method {
                    return Err(SetupError::Protocol(
                        "response method does not match the request".into(),
                    ));
                }
                return Ok(n);
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Err(SetupError::Timeout { method })
    }
}

fn sanitize(reason: &str) -> String {
    reason
        .trim_end_matches(['\0', ' '])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(128)
        .collect()
}
