//! The TURN server state machine.

use crate::auth::{AuthFailure, Credentials, NonceIssuer};
use crate::filter::PeerFilter;
use crate::group::{Group, Reservation};
use crate::limit::Rate;
use icebreaker_stun::{
    attr, method, write_channel_data_header, ChannelData, Class, Error as StunError, Family,
    Message, MessageType, MessageWriter, TransactionId, CHANNEL_MAX, CHANNEL_MIN,
};
use std::collections::HashMap as StdHashMap;
use std::sync::Arc;

/// Maps on the packet path hash with foldhash (randomly seeded per process): several times
/// cheaper than SipHash, and keys that clients choose are only inserted after authentication.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Bytes an I/O layer must leave free in front of a datagram received on a relay socket, so that
/// [`Server::handle_peer`] can prepend the ChannelData header or the Data indication header in place.
pub const PEER_HEADROOM: usize = 48;

// The largest header `handle_peer` writes in front of a datagram: a Data indication with an IPv6
// XOR-PEER-ADDRESS (STUN header 20 + attribute 4 + 20) and the DATA attribute header (4).
const _: () = assert!(20 + (4 + 20) + 4 <= PEER_HEADROOM);

/// Permission lifetime (RFC 8656 §9).
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel binding lifetime (RFC 8656 §12).
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// After a channel expires, neither its number nor its peer may be rebound differently for this long.
const CHANNEL_QUARANTINE: Duration = Duration::from_secs(300);
/// How long a port reserved with EVEN-PORT's R bit is held (RFC 8656 §7.2: about 30 s).
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// Bounds on per-allocation state, so a client cannot grow the server without limit.
const MAX_PERMISSIONS: usize = 256;
const MAX_CHANNELS: usize = 256;

/// The transport between client and server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP (RFC 8656 framing over a stream).
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    /// Whether this is a stream transport (ChannelData is then padded to 4 bytes).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The label used in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// A client's 5-tuple: client address, server address, transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// The client's transport address as the server sees it.
    pub client: SocketAddr,
    /// The server's address the client sent to.
    pub server: SocketAddr,
    /// The transport.
    pub transport: Transport,
}

/// The current time, passed in by the I/O layer.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// Monotonic time, for lifetimes.
    pub mono: Instant,
    /// Wall-clock seconds since the Unix epoch, for nonces and REST credential expiry.
    pub unix: u64,
}

/// Identifies a relay socket. Chosen by the [`RelayProvider`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayId(pub u32);

/// What the server asks of the relay provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayRequest {
    /// Address family of the relay socket.
    pub family: Family,
    /// The port must be even (EVEN-PORT).
    pub even_port: bool,
    /// Also reserve the next higher port (EVEN-PORT with the R bit).
    pub reserve_next: bool,
    /// Set the DF bit on datagrams sent to peers (DONT-FRAGMENT).
    pub dont_fragment: bool,
}

/// A bound relay socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayBinding {
    /// The socket's id.
    pub id: RelayId,
    /// The socket's local address.
    pub addr: SocketAddr,
    /// With `reserve_next`: the reserved socket on the next port.
    pub reserved: Option<(RelayId, SocketAddr)>,
}

/// Why no relay socket could be bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayError {
    /// This address family has no relay address here (440).
    FamilyNotSupported,
    /// No free port, or the system refused (508).
    Exhausted,
}

/// Binds and releases relay sockets; implemented by the I/O layer.
pub trait RelayProvider {
    /// Bind a relay socket.
    fn bind(&mut self, req: RelayRequest) -> Result<RelayBinding, RelayError>;
    /// Close a relay socket bound earlier (allocation or reservation ended).
    fn release(&mut self, id: RelayId);
    /// A reserved socket (`RelayBinding::reserved`, possibly bound by another shard's provider)
    /// now serves an allocation of this provider's server. `Err` if it is gone.
    fn claim(&mut self, id: RelayId, addr: SocketAddr) -> Result<(), RelayError> {
        let _ = (id, addr);
        Ok(())
    }
}

/// `--external-ip PUBLIC[/PRIVATE]`: the public address advertised for a private relay address.
#[derive(Clone, Debug, Default)]
pub struct ExternalMap {
    pairs: Vec<(IpAddr, Option<IpAddr>)>,
}

impl ExternalMap {
    /// Add a mapping. With no private address, the public address stands for every relay address
    /// of the same family.
    pub fn add(&mut self, public: IpAddr, private: Option<IpAddr>) {
        self.pairs.push((public, private));
    }

    /// The public form of a local relay address.
    pub fn to_public(&self, addr: SocketAddr) -> SocketAddr {
        for &(public, private) in &self.pairs {
            let hit = match private {
                Some(p) => p == addr.ip(),
                None => public.is_ipv4() == addr.ip().is_ipv4(),
            };
            if hit {
                return SocketAddr::new(public, addr.port());
            }
        }
        addr
    }

    /// The local form of an advertised public relay address (`None` if it is not one).
    fn to_private(&self, addr: SocketAddr, relay_ips: &[IpAddr]) -> Option<SocketAddr> {
        for &(public, private) in &self.pairs {
            if public == addr.ip() {
                let local = private.or_else(|| {
                    relay_ips
                        .iter()
                        .copied()
                        .find(|ip| ip.is_ipv4() == public.is_ipv4())
                })?;
                return Some(SocketAddr::new(local, addr.port()));
            }
        }
        None
    }

    /// Whether any mapping is configured.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The public addresses.
    pub fn publics(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.pairs.iter().map(|p| p.0)
    }
}

/// Server settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Credentials (realm, static users, REST secrets).
    pub credentials: Credentials,
    /// Secret for stateless nonces (random per process).
    pub nonce_key: [u8; 32],
    /// Nonce lifetime in seconds.
    pub nonce_lifetime: u64,
    /// SOFTWARE attribute value; empty to send none.
    pub software: String,
    /// Peer filter.
    pub filter: PeerFilter,
    /// External address mapping.
    pub external: ExternalMap,
    /// Local relay IPs (to recognise relay-to-relay traffic).
    pub relay_ips: Vec<IpAddr>,
    /// Relay port range (inclusive).
    pub relay_ports: (u16, u16),
    /// Allocation lifetime when the client asks for less (seconds).
    pub default_lifetime: u32,
    /// Longest allocation lifetime granted (seconds).
    pub max_lifetime: u32,
    /// Most allocations at once.
    pub max_allocations: usize,
    /// Most allocations at once per username.
    pub max_allocations_per_user: usize,
    /// New allocations per second per client address prefix (an IPv4 address, an IPv6 /64);
    /// beyond it Allocate gets 486. [`Rate::UNLIMITED`] for none.
    pub allocate_rate: Rate,
    /// Bytes of unauthenticated UDP replies (Binding answers, challenges, errors) per client
    /// address prefix: a spoofed flood aimed at one victim gets at most this much back.
    pub unauth_reply_per_source: Rate,
    /// Bytes of unauthenticated UDP replies over all sources: refilled at `per_sec`, plus half
    /// of every unauthenticated request's bytes and all of every authenticated request's bytes,
    /// up to `burst`. A flood from many spoofed sources gets back less than it sends.
    pub unauth_reply_rate: Rate,
    /// Where new allocations are sent (300 Try Alternate) while the group drains
    /// ([`Group::set_draining`]) or is full (`max_allocations`), when the client's address is
    /// of its family; without one they get 508. Alternates set on the group
    /// ([`Group::set_alternates`]) take its place.
    pub alternate_server: Option<SocketAddr>,
    /// State shared with the other shards built from clones of this configuration (quotas,
    /// live relay addresses, reservations).
    pub group: Arc<Group>,
}

impl Config {
    /// Settings with the RFC defaults and no credentials.
    pub fn new(credentials: Credentials) -> Self {
        Config {
            credentials,
            nonce_key: [0; 32],
            nonce_lifetime: 600,
            software: String::new(),
            filter: PeerFilter::new(),
            external: ExternalMap::default(),
            relay_ips: Vec::new(),
            relay_ports: (49152, 65535),
            default_lifetime: 600,
            max_lifetime: 3600,
            max_allocations: 10_000,
            max_allocations_per_user: 100,
            allocate_rate: Rate {
                per_sec: 100,
                burst: 1000,
            },
            unauth_reply_per_source: Rate {
                per_sec: 200,
                burst: 2000,
            },
            unauth_reply_rate: Rate {
                per_sec: 32_768,
                burst: 16_384,
            },
            alternate_server: None,
            group: Arc::new(Group::new()),
        }
    }
}

/// Counters kept by the server (monotonic unless noted). Read them to export metrics.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// STUN requests by method index: binding, allocate, refresh, create_permission, channel_bind, other.
    pub requests: [u64; 6],
    /// Send indications received.
    pub send_indications: u64,
    /// Error responses by code, see [`Stats::ERROR_CODES`]; the last slot counts other codes.
    pub errors: [u64; 14],
    /// Authentication failures by [`AuthFailure::ALL`] index.
    pub auth_failures: [u64; 8],
    /// Allocations created.
    pub allocations_created: u64,
    /// Allocations that expired (not refreshed in time).
    pub allocations_expired: u64,
    /// Datagrams dropped: malformed.
    pub dropped_malformed: u64,
    /// Datagrams dropped: no allocation for the 5-tuple / relay.
    pub dropped_no_allocation: u64,
    /// Datagrams dropped: no permission for the peer, or no such channel.
    pub dropped_no_permission: u64,
    /// Peers refused by the filter.
    pub peer_denied: u64,
    /// Current number of allocations (gauge).
    pub allocations: u64,
    /// Current number of permissions (gauge, updated on the timer).
    pub permissions: u64,
    /// Current number of channels (gauge, updated on the timer).
    pub channels: u64,
    /// Requests refused or not answered by a limit, by [`Stats::REFUSALS`] index.
    pub refused: [u64; 5],
}

impl Stats {
    /// The error codes counted individually, in slot order.
    pub const ERROR_CODES: [u16; 13] = [
        300, 400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 486, 508,
    ];
    /// Refusal labels, in slot order: an unauthenticated UDP reply not sent because it would pass
    /// the reply budget; an Allocate refused by the per-address allocation rate, by the user's
    /// quota (486), by the server's capacity (`max_allocations`: 300 to an alternate, or 508),
    /// or because the server drains (300/508).
    pub const REFUSALS: [&'static str; 5] = [
        "unauth_reply_budget",
        "allocate_rate",
        "user_quota",
        "capacity",
        "draining",
    ];
    /// Method labels, in slot order.
    pub const METHODS: [&'static str; 6] = [
        "binding",
        "allocate",
        "refresh",
        "create_permission",
        "channel_bind",
        "other",
    ];

    /// Add `other`'s counters and gauges to these (the totals over several shards).
    pub fn merge(&mut self, other: &Stats) {
        fn add<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        add(&mut self.requests, &other.requests);
        add(&mut self.errors, &other.errors);
        add(&mut self.auth_failures, &other.auth_failures);
        add(&mut self.refused, &other.refused);
        self.send_indications += other.send_indications;
        self.allocations_created += other.allocations_created;
        self.allocations_expired += other.allocations_expired;
        self.dropped_malformed += other.dropped_malformed;
        self.dropped_no_allocation += other.dropped_no_allocation;
        self.dropped_no_permission += other.dropped_no_permission;
        self.peer_denied += other.peer_denied;
        self.allocations += other.allocations;
        self.permissions += other.permissions;
        self.channels += other.channels;
    }

    fn error(&mut self, code: u16) {
        let i = Self::ERROR_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(Self::ERROR_CODES.len());
        self.errors[i] += 1;
    }

    fn auth(&mut self, f: AuthFailure) {
        if let Some(i) = AuthFailure::ALL.iter().position(|&a| a == f) {
            self.auth_failures[i] += 1;
        }
    }
}

/// What to do after a client packet.
#[derive(Debug)]
pub enum ClientOutput<'a> {
    /// Nothing to send.
    None,
    /// Send `out[..len]` back to the client on the same 5-tuple.
    Reply(usize),
    /// Send `data` from the relay socket to `peer`.
    Forward {
        /// The relay socket.
        relay: RelayId,
        /// The peer.
        peer: SocketAddr,
        /// The payload (borrowed from the client's packet).
        data: &'a [u8],
    },
}

/// What to do after a datagram from a peer.
#[derive(Debug, Clone)]
pub struct PeerOutput {
    /// Where to send it.
    pub client: FiveTuple,
    /// The bytes to send, as a range of the caller's buffer.
    pub range: std::ops::Range<usize>,
}

#[derive(Debug)]
struct Permission {
    ip: IpAddr,
    expires: Instant,
}

#[derive(Debug)]
struct Channel {
    number: u16,
    peer: SocketAddr,
    expires: Instant,
}

#[derive(Debug)]
struct Allocation {
    tuple: FiveTuple,
    username: Box<str>,
    key: [u8; 16],
    /// Transaction id of the Allocate that created it (to answer a retransmission the same way).
    tid: TransactionId,
    /// Relay sockets: at most one IPv4 and one IPv6.
    relays: [Option<(RelayId, SocketAddr)>; 2],
    reservation: Option<[u8; 8]>,
    /// ADDRESS-ERROR-CODE of a partially failed dual allocation (repeated on retransmission).
    address_error: Option<u16>,
    lifetime: u32,
    expires: Instant,
    permissions: Vec<Permission>,
    channels: Vec<Channel>,
}

impl Allocation {
    fn has_family(&self, ip: IpAddr) -> bool {
        self.relay_for(ip).is_some()
    }

    fn relay_for(&self, ip: IpAddr) -> Option<RelayId> {
        let slot = if ip.is_ipv4() { 0 } else { 1 };
        self.relays[slot].map(|r| r.0)
    }

    fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions
            .iter()
            .any(|p| p.ip == ip && p.expires > now)
    }

    fn permit(&mut self, ip: IpAddr, now: Instant) {
        let expires = now + PERMISSION_LIFETIME;
        if let Some(p) = self.permissions.iter_mut().find(|p| p.ip == ip) {
            p.expires = expires;
        } else {
            self.permissions.push(Permission { ip, expires });
        }
    }
}

/// What an Allocate asks of its relay sockets.
#[derive(Clone, Copy)]
struct RelayAsk<'a> {
    token: Option<[u8; 8]>,
    even: Option<bool>,
    family: Option<Family>,
    additional: Option<Family>,
    dont_fragment: bool,
    /// Quota key of the user (reservations count per user too).
    user: &'a str,
}

/// The relay sockets of a new allocation (by family slot), its reservation token, and the
/// ADDRESS-ERROR-CODE of a failed additional family.
type BoundRelays = (
    [Option<(RelayId, SocketAddr)>; 2],
    Option<[u8; 8]>,
    Option<u16>,
);

/// The TURN server. One instance owns the allocations it is given packets for.
#[derive(Debug)]
pub struct Server {
    cfg: Config,
    nonces: NonceIssuer,
    allocs: Vec<Option<Allocation>>,
    free: Vec<u32>,
    by_tuple: HashMap<FiveTuple, u32>,
    by_relay: HashMap<RelayId, u32>,
    /// Counter for the transaction ids of Data indications.
    token_counter: u64,
    stats: Stats,
}

/// The attributes this server understands (for 420 Unknown Attribute).
fn known_attribute(t: u16) -> bool {
    matches!(
        t,
        attr::MAPPED_ADDRESS
            | attr::USERNAME
            | attr::MESSAGE_INTEGRITY
            | attr::ERROR_CODE
            | attr::UNKNOWN_ATTRIBUTES
            | attr::CHANNEL_NUMBER
            | attr::LIFETIME
            | attr::XOR_PEER_ADDRESS
            | attr::DATA
            | attr::REALM
            | attr::NONCE
            | attr::XOR_RELAYED_ADDRESS
            | attr::REQUESTED_ADDRESS_FAMILY
            | attr::EVEN_PORT
            | attr::REQUESTED_TRANSPORT
            | attr::DONT_FRAGMENT
            | attr::MESSAGE_INTEGRITY_SHA256
            | attr::PASSWORD_ALGORITHM
            | attr::USERHASH
            | attr::XOR_MAPPED_ADDRESS
            | attr::RESERVATION_TOKEN
            | attr::PRIORITY
            | attr::USE_CANDIDATE
            | attr::PADDING
    )
}

fn reason(code: u16) -> &'static str {
    match icebreaker_stun::reason_phrase(code) {
        "" => "Server Error",
        r => r,
    }
}

/// An error answer decided while handling a request.
struct Reject {
    code: u16,
    /// Include REALM and NONCE (401, 438).
    challenge: bool,
    /// Sign with this key (errors after authentication).
    key: Option<Signer>,
    /// ALTERNATE-SERVER (and ALTERNATE-DOMAIN) of a 300.
    redirect: Option<Redirect>,
}

impl Reject {
    fn plain(code: u16) -> Self {
        Reject {
            code,
            challenge: false,
            key: None,
            redirect: None,
        }
    }
    fn signed(code: u16, key: Signer) -> Self {
        Reject {
            code,
            challenge: false,
            key: Some(key),
            redirect: None,
        }
    }
    /// 300 Try Alternate, signed: only authenticated requests are redirected, so that the
    /// client can tell the redirection comes from the server it trusts (RFC 8489 §10 leaves
    /// it open; RFC 5389 required it).
    fn try_alternate(to: Redirect, key: Signer) -> Self {
        Reject {
            code: 300,
            challenge: false,
            key: Some(key),
            redirect: Some(to),
        }
    }
}

/// Where a refused Allocate is sent: an alternate of the client's address family, then one of
/// the other family (RFC 8489 §10), and for TLS clients the alternate's certificate name.
struct Redirect {
    to: SocketAddr,
    also: Option<SocketAddr>,
    domain: Option<Arc<str>>,
}

fn method_slot(m: u16) -> usize {
    match m {
        method::BINDING => 0,
        method::ALLOCATE => 1,
        method::REFRESH => 2,
        method::CREATE_PERMISSION => 3,
        method::CHANNEL_BIND => 4,
        _ => 5,
    }
}

impl Server {
    /// A server with `cfg`.
    pub fn new(cfg: Config) -> Self {
        let nonces = NonceIssuer::new(cfg.nonce_key, cfg.nonce_lifetime);
        Server {
            cfg,
            nonces,
            allocs: Vec::new(),
            free: Vec::new(),
            by_tuple: HashMap::default(),
            by_relay: HashMap::default(),
            token_counter: 0,
            stats: Stats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Replace credentials (e.g. on reload). Existing allocations keep their keys.
    pub fn set_credentials(&mut self, credentials: Credentials) {
        self.cfg.credentials = credentials;
    }

    /// Take the reloadable settings of `cfg` (a configuration re-read while running):
    /// credentials, SOFTWARE, lifetimes, quotas, rates, the peer filter, the external mapping
    /// and the alternate server. The nonce key, the relay addresses and ports and the group stay:
    /// nonces issued before stay valid, and every allocation keeps running with the key it was
    /// created with.
    pub fn reload(&mut self, cfg: &Config) {
        let c = &mut self.cfg;
        c.credentials = cfg.credentials.clone();
        c.software = cfg.software.clone();
        c.filter = cfg.filter.clone();
        c.external = cfg.external.clone();
        c.default_lifetime = cfg.default_lifetime;
        c.max_lifetime = cfg.max_lifetime;
        c.max_allocations = cfg.max_allocations;
        c.max_allocations_per_user = cfg.max_allocations_per_user;
        c.allocate_rate = cfg.allocate_rate;
        c.unauth_reply_rate = cfg.unauth_reply_rate;
        c.unauth_reply_per_source = cfg.unauth_reply_per_source;
        c.alternate_server = cfg.alternate_server;
        if c.nonce_lifetime != cfg.nonce_lifetime {
            c.nonce_lifetime = cfg.nonce_lifetime;
            self.nonces = NonceIssuer::new(c.nonce_key, c.nonce_lifetime);
        }
    }

    /// Number of live allocations.
    pub fn allocation_count(&self) -> usize {
        self.by_tuple.len()
    }

    /// The relay sockets of the allocation on `tuple`, if any.
    pub fn relays_of(&self, tuple: &FiveTuple) -> impl Iterator<Item = (RelayId, SocketAddr)> + '_ {
        self.by_tuple
            .get(tuple)
            .and_then(|&i| self.allocs.get(i as usize))
            .and_then(|a| a.as_ref())
            .into_iter()
            .flat_map(|a| a.relays.iter().flatten().copied())
    }

    /// The allocation on `t` for a request: one that has expired but not yet been swept by the
    /// timer is removed now, so it cannot be refreshed back to life.
    fn live_alloc(
        &mut self,
        now: Now,
        t: &FiveTuple,
        relays: &mut dyn RelayProvider,
    ) -> Option<u32> {
        let i = self.alloc_by_tuple(t)?;
        let expired = self
            .allocs
            .get(i as usize)
            .and_then(|a| a.as_ref())
            .is_none_or(|a| a.expires <= now.mono);
        if expired {
            self.stats.allocations_expired += 1;
            self.remove_allocation(i, relays);
            return None;
        }
        Some(i)
    }

    fn alloc_by_tuple(&self, t: &FiveTuple) -> Option<u32> {
        self.by_tuple.get(t).copied()
    }

    fn alloc_mut(&mut self, i: u32) -> Option<&mut Allocation> {
        self.allocs.get_mut(i as usize).and_then(|a| a.as_mut())
    }

    // ----------------------------------------------------------------------------------------
    // Client side
    // ----------------------------------------------------------------------------------------

    /// Handle a packet from a client (a STUN message or ChannelData), writing any reply into `out`
    /// (which should hold at least 1500 bytes).
    pub fn handle_client<'p>(
        &mut self,
        now: Now,
        tuple: FiveTuple,
        packet: &'p [u8],
        out: &mut [u8],
        relays: &mut dyn RelayProvider,
    ) -> ClientOutput<'p> {
        if icebreaker_stun::is_channel_data(packet) {
            return self.client_channel_data(now, &tuple, packet);
        }
        let msg = match Message::parse(packet) {
            Ok(m) => m,
            Err(_) => {
                self.stats.dropped_malformed += 1;
                return ClientOutput::None;
            }
        };
        if msg.has_fingerprint() && !msg.check_fingerprint() {
            self.stats.dropped_malformed += 1;
            return ClientOutput::None;
        }
        match msg.class() {
            Class::Request => {
                self.stats.requests[method_slot(msg.method())] += 1;
                let (len, signed) = self.request(now, &tuple, &msg, out, relays);
                if tuple.transport == Transport::Udp
                    && !self.udp_reply_allowed(now, &tuple, packet.len(), len, signed)
                {
                    self.stats.refused[0] += 1;
                    return ClientOutput::None;
                }
                if len == 0 {
                    ClientOutput::None
                } else {
                    ClientOutput::Reply(len)
                }
            }
            Class::Indication if msg.method() == method::SEND => {
                self.stats.send_indications += 1;
                self.send_indication(now, &tuple, &msg)
            }
            _ => ClientOutput::None,
        }
    }

    /// The amplification guard for UDP: a reply that is not signed goes to a source nobody has
    /// verified (it may be spoofed), so it must fit the unauthenticated reply budgets. Signed
    /// replies answer authenticated requests, whose bytes pay into the overall budget.
    fn udp_reply_allowed(
        &mut self,
        now: Now,
        tuple: &FiveTuple,
        inp: usize,
        out: usize,
        signed: bool,
    ) -> bool {
        let group = &self.cfg.group;
        if signed {
            group.authenticated_request(
                now.mono,
                tuple.client.ip(),
                inp,
                self.cfg.unauth_reply_per_source,
                self.cfg.unauth_reply_rate,
                self.cfg.nonce_lifetime,
            );
            return true;
        }
        if out == 0 {
            return true;
        }
        group.unauth_reply(
            now.mono,
            tuple.client.ip(),
            inp,
            out,
            self.cfg.unauth_reply_per_source,
            self.cfg.unauth_reply_rate,
        )
    }

    fn client_channel_data<'p>(
        &mut self,
        now: Now,
        tuple: &FiveTuple,
        packet: &'p [u8],
    ) -> ClientOutput<'p> {
        let Ok(cd) = ChannelData::parse(packet) else {
            self.stats.dropped_malformed += 1;
            return ClientOutput::None;
        };
        let Some(i) = self.alloc_by_tuple(tuple) else {
            self.stats.dropped_no_allocation += 1;
            return ClientOutput::None;
        };
        let Some(a) = self.allocs.get(i as usize).and_then(|a| a.as_ref()) else {
            self.stats.dropped_no_allocation += 1;
            return ClientOutput::None;
        };
        let Some(ch) = a
            .channels
            .iter()
            .find(|c| c.number == cd.channel && c.expires > now.mono)
        else {
            self.stats.dropped_no_permission += 1;
            return ClientOutput::None;
        };
        let peer = ch.peer;
        self.forward(now, i, peer, cd.data)
    }

    /// Forward `data` from allocation `i` to `peer`, if a permission covers the peer.
    fn forward<'p>(
        &mut self,
        now: Now,
        i: u32,
        peer: SocketAddr,
        data: &'p [u8],
    ) -> ClientOutput<'p> {
        let relay = self
            .allocs
            .get(i as usize)
            .and_then(|a| a.as_ref())
            .filter(|a| a.permitted(peer.ip(), now.mono))
            .and_then(|a| a.relay_for(peer.ip()));
        let wire = self.wire_peer(peer);
        // The relay-range exception was granted for a live allocation: once that allocation is
        // gone, its port is an ordinary local port again, whatever permission or channel the
        // client still holds for it.
        if relay.is_some()
            && self.cfg.filter.is_relay_addr(wire)
            && !self.cfg.group.is_live_relay(canonical_addr(wire))
            && self.check_peer(peer).is_err()
        {
            self.stats.peer_denied += 1;
            return ClientOutput::None;
        }
        match relay {
            Some(relay) => ClientOutput::Forward {
                relay,
                peer: wire,
                data,
            },
            None => {
                self.stats.dropped_no_permission += 1;
                ClientOutput::None
            }
        }
    }

    /// The address to send to for a peer as the client named it: an advertised public relay
    /// address of this server is handed over to the local relay socket directly.
    fn wire_peer(&self, peer: SocketAddr) -> SocketAddr {
        if self.cfg.external.is_empty() {
            return peer;
        }
        match self.cfg.external.to_private(peer, &self.cfg.relay_ips) {
            Some(p) if self.cfg.filter.is_relay_addr(p) => p,
            _ => peer,
        }
    }

    /// Run the peer filter on a peer named by a client (after the external-address hand-over):
    /// the relay-range exception only covers relay addresses of live allocations.
    fn check_peer(&self, peer: SocketAddr) -> Result<(), crate::filter::Denied> {
        let group = &self.cfg.group;
        self.cfg
            .filter
            .check(self.wire_peer(peer), |a| group.is_live_relay(a))
    }

    /// The address a client knows a peer by: the inverse of [`Self::wire_peer`].
    fn client_view_of_peer(&self, peer: SocketAddr) -> SocketAddr {
        if !self.cfg.external.is_empty() && self.cfg.filter.is_relay_addr(peer) {
            self.cfg.external.to_public(peer)
        } else {
            peer
        }
    }

    fn send_indication<'p>(
        &mut self,
        now: Now,
        tuple: &FiveTuple,
        msg: &Message<'p>,
    ) -> ClientOutput<'p> {
        let Some(i) = self.alloc_by_tuple(tuple) else {
            self.stats.dropped_no_allocation += 1;
            return ClientOutput::None;
        };
        let (Some(Ok(peer)), Some(data)) = (msg.xor_peer_addresses().next(), msg.data()) else {
            self.stats.dropped_malformed += 1;
            return ClientOutput::None;
        };
        let peer = normalize_peer(peer);
        if self.check_peer(peer).is_err() {
            self.stats.peer_denied += 1;
            return ClientOutput::None;
        }
        self.forward(now, i, peer, data)
    }

    /// Handle a request; returns the length of the reply written into `out` (0: no reply) and
    /// whether the request was authenticated (the reply is signed).
    fn request(
        &mut self,
        now: Now,
        tuple: &FiveTuple,
        msg: &Message<'_>,
        out: &mut [u8],
        relays: &mut dyn RelayProvider,
    ) -> (usize, bool) {
        let mut unknown = [0u16; 8];
        let n = msg.unknown_comprehension_required(known_attribute, &mut unknown);
        if n > 0 {
            self.stats.error(420);
            let unknown = &unknown[..n.min(unknown.len())];
            let len = self.write_error(now, out, msg, tuple, &Reject::plain(420), |w| {
                w.unknown_attributes(unknown)
            });
            return (len, false);
        }
        if msg.method() == method::BINDING {
            return (self.binding(out, msg, tuple), false);
        }
        let result = match msg.method() {
            method::ALLOCATE => self.allocate(now, tuple, msg, out, relays),
            method::REFRESH => self.refresh(now, tuple, msg, out, relays),
            method::CREATE_PERMISSION => self.create_permission(now, tuple, msg, out, relays),
            method::CHANNEL_BIND => self.channel_bind(now, tuple, msg, out, relays),
            _ => Err(Reject::plain(400)),
        };
        match result {
            Ok(len) => (len, true),
            Err(rej) => {
                tracing::debug!(
                    client = %tuple.client,
                    method = icebreaker_stun::method::name(msg.method()),
                    code = rej.code,
                    "request refused"
                );
                self.stats.error(rej.code);
                let signed = rej.key.is_some();
                (
                    self.write_error(now, out, msg, tuple, &rej, |_| Ok(())),
                    signed,
                )
            }
        }
    }

    fn binding(&mut self, out: &mut [u8], msg: &Message<'_>, tuple: &FiveTuple) -> usize {
        let typ = MessageType::new(method::BINDING, Class::Success);
        let req_len = msg.as_bytes().len();
        let r = (|| -> Result<usize, StunError> {
            let mut w = MessageWriter::new(out, typ, msg.transaction_id())?;
            w.xor_address(attr::XOR_MAPPED_ADDRESS, tuple.client)?;
            self.software_unauthenticated(&mut w, tuple, req_len)?;
            // FINGERPRINT when the request had one (multiplexed with other protocols, as in
            // ICE): a bare request gets the smallest answer.
            if msg.has_fingerprint() {
                w.fingerprint()?;
            }
            Ok(w.finish())
        })();
        r.unwrap_or(0)
    }

    /// Add SOFTWARE to an unauthenticated answer only when the answer stays no larger than the
    /// request on UDP (no amplification toward spoofed sources).
    fn software_unauthenticated(
        &self,
        w: &mut MessageWriter<'_>,
        tuple: &FiveTuple,
        req_len: usize,
    ) -> Result<(), StunError> {
        let sw = &self.cfg.software;
        if sw.is_empty() {
            return Ok(());
        }
        let with = w.len() + 4 + sw.len().div_ceil(4) * 4 + 8;
        if tuple.transport.is_stream() || with <= req_len {
            w.attr(attr::SOFTWARE, sw.as_bytes())?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn write_error(
        &self,
        now: Now,
        out: &mut [u8],
        msg: &Message<'_>,
        tuple: &FiveTuple,
        rej: &Reject,
        extra: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), StunError>,
    ) -> usize {
        let typ = MessageType::new(msg.method(), Class::Error);
        let req_len = msg.as_bytes().len();
        let r = (|| -> Result<usize, StunError> {
            let mut w = MessageWriter::new(out, typ, msg.transaction_id())?;
            w.error_code(rej.code, reason(rej.code))?;
            if let Some(r) = &rej.redirect {
                w.address(attr::ALTERNATE_SERVER, r.to)?;
                if let Some(also) = r.also {
                    w.address(attr::ALTERNATE_SERVER, also)?;
                }
                if let Some(d) = &r.domain {
                    w.attr(attr::ALTERNATE_DOMAIN, d.as_bytes())?;
                }
            }
            extra(&mut w)?;
            if rej.challenge {
                w.attr(attr::REALM, self.cfg.credentials.realm().as_bytes())?;
                let nonce = self.nonces.issue(now.unix, tuple.client.ip());
                w.attr(attr::NONCE, &nonce)?;
            }
            match &rej.key {
                Some(signer) => {
                    if !self.cfg.software.is_empty() {
                        w.attr(attr::SOFTWARE, self.cfg.software.as_bytes())?;
                    }
                    signer.sign(&mut w)?;
                }
                None => self.software_unauthenticated(&mut w, tuple, req_len)?,
            }
            if rej.key.is_some() || msg.has_fingerprint() {
                w.fingerprint()?;
            }
            Ok(w.finish())
        })();
        r.unwrap_or(0)
    }

    fn challenge(&mut self, f: AuthFailure) -> Reject {
        self.stats.auth(f);
        Reject {
            code: if f == AuthFailure::StaleNonce {
                438
            } else {
                401
            },
            challenge: true,
            key: None,
            redirect: None,
        }
    }

    /// Where to send a new allocation this server refuses (draining, full): the group's
    /// alternates when a cluster set them, else the static `alternate_server`. `None` when
    /// no alternate of the client's address family is known for its transport (then 508).
    fn redirect(&self, tuple: &FiveTuple) -> Option<Redirect> {
        let v4 = crate::group::canonical(tuple.client).is_ipv4();
        match self.cfg.group.alternates() {
            Some(alt) => {
                let (to, also) = alt.pick(tuple.transport, v4)?;
                let domain = if tuple.transport == Transport::Tls {
                    alt.tls_name.clone()
                } else {
                    None
                };
                Some(Redirect { to, also, domain })
            }
            None => {
                let a = self.cfg.alternate_server.map(crate::group::canonical)?;
                (a.is_ipv4() == v4).then_some(Redirect {
                    to: a,
                    also: None,
                    domain: None,
                })
            }
        }
    }

    /// Authenticate a request: against the allocation's credentials when there is one, against the
    /// credential store otherwise. Returns the username and how to sign the answer.
    fn authenticate<'m>(
        &mut self,
        now: Now,
        tuple: &FiveTuple,
        msg: &Message<'m>,
        alloc: Option<u32>,
    ) -> Result<(&'m str, Signer), Reject> {
        if !msg.has_integrity() {
            return Err(self.challenge(AuthFailure::Missing));
        }
        let (Ok(Some(username)), Ok(Some(realm)), Ok(Some(nonce))) =
            (msg.username(), msg.realm(), msg.nonce())
        else {
            self.stats.auth(AuthFailure::BadRequest);
            return Err(Reject::plain(400));
        };
        if !self.nonces.check(nonce, now.unix, tuple.client.ip()) {
            return Err(self.challenge(AuthFailure::StaleNonce));
        }
        if realm != self.cfg.credentials.realm() {
            return Err(self.challenge(AuthFailure::WrongRealm));
        }
        if let Some(i) = alloc {
            let Some(a) = self.allocs.get(i as usize).and_then(|a| a.as_ref()) else {
                return Err(Reject::plain(437));
            };
            if *a.username != *username {
                self.stats.auth(AuthFailure::WrongCredentials);
                return Err(Reject::plain(441));
            }
            let key = a.key;
            return match msg.verify_integrity(&key) {
                Ok(kind) => Ok((username, Signer { key, kind })),
                Err(_) => Err(self.challenge(AuthFailure::BadIntegrity)),
            };
        }
        // Expiry first: a forged REST username must not cost a key derivation per secret.
        let keys = match self.cfg.credentials.keys_at(username, now.unix) {
            Ok(k) => k,
            Err(f) => return Err(self.challenge(f)),
        };
        let Some((key, kind)) = keys
            .as_slice()
            .iter()
            .find_map(|k| msg.verify_integrity(k).ok().map(|kind| (*k, kind)))
        else {
            return Err(self.challenge(AuthFailure::BadIntegrity));
        };
        Ok((username, Signer { key, kind }))
    }

    /// The live allocation of a request that needs one (437 otherwise), authenticated against it.
    fn existing(
        &mut self,
        now: Now,
        tuple: &FiveTuple,
        msg: &Message<'_>,
        relays: &mut dyn RelayProvider,
    ) -> Result<(u32, Signer), Reject> {
        let Some(i) = self.live_alloc(now, tuple, relays) else {
            return Err(Reject::plain(437));
        };
        let (_, signer) = self.authenticate(now, tuple, msg, Some(i))?;
        Ok((i, signer))
    }

    fn lifetime(&self, requested: Option<u32>) -> u32 {
        let max = self.cfg.max_lifetime.max(1);
        let default = self.cfg.default_lifetime.min(max);
        match requested {
            None => default,
            Some(r) => r.min(max).max(default),
        }
    }

    fn allocate(
        &mut self,
        now: Now,
        tuple: &FiveTuple,
        msg: &Message<'_>,
        out: &mut [u8],
        relays: &mut dyn RelayProvider,
    ) -> Result<usize, Reject> {
        let existing = self.live_alloc(now, tuple, relays);
        let drain_to = if existing.is_none() && self.cfg.group.is_draining() {
            match self.redirect(tuple) {
                Some(r) => Some(r),
                None => {
                    // Nowhere to send it: refused before authentication.
                    self.stats.refused[4] += 1;
                    return Err(Reject::plain(508));
                }
            }
        } else {
            None
        };
        let (username, signer) = self.authenticate(now, tuple, msg, existing)?;
        if let Some(r) = drain_to {
            // After authentication, so that the 300 is signed (see `Reject::try_alternate`).
            self.stats.refused[4] += 1;
            return Err(Reject::try_alternate(r, signer));
        }
        if let Some(i) = existing {
            // A retransmission of the Allocate that created it gets the same answer.
            let Some(a) = self.allocs.get(i as usize).and_then(|a| a.as_ref()) else {
                return Err(Reject::signed(437, signer));
            };
            if a.tid == *msg.transaction_id() {
                return Ok(self.write_allocate_success(now, out, msg, a, signer));
            }
            return Err(Reject::signed(437, signer));
        }
        let bad = || Reject::signed(400, signer);
        let transport = msg
            .requested_transport()
            .map_err(|_| bad())?
            .ok_or_else(bad)?;
        if transport != 17 {
            return Err(Reject::signed(442, signer));
        }
        let even = msg.even_port().map_err(|_| bad())?;
        let token = msg.reservation_token().map_err(|_| bad())?;
        let requested_family = msg
            .requested_address_family()
            .map_err(|_| Reject::signed(440, signer))?;
        let additional = msg.additional_address_family().map_err(|_| bad())?;
        if token.is_some() && (even.is_some() || requested_family.is_some() || additional.is_some())
        {
            return Err(bad());
        }
        // RFC 8656 §7.2 items 6 and 8: ADDITIONAL-ADDRESS-FAMILY conflicts with
        // REQUESTED-ADDRESS-FAMILY, and with EVEN-PORT only when its R bit is set.
        if additional.is_some() && (requested_family.is_some() || even == Some(true)) {
            return Err(bad());
        }
        if additional == Some(Family::V4) {
            return Err(bad());
        }
        let lifetime = self.lifetime(msg.lifetime().map_err(|_| bad())?);
        // REST usernames carry an expiry: the quota is per user id, not per credential.
        let quota_key = crate::auth::quota_key(username);
        let group = self.cfg.group.clone();
        if !group.allocation_rate(now.mono, tuple.client.ip(), self.cfg.allocate_rate) {
            self.stats.refused[1] += 1;
            return Err(Reject::signed(486, signer));
        }
        let acquired = group.acquire(
            quota_key,
            self.cfg.max_allocations,
            self.cfg.max_allocations_per_user,
        );
        match acquired {
            Ok(()) => {}
            Err(486) => {
                self.stats.refused[2] += 1;
                return Err(Reject::signed(486, signer));
            }
            Err(code) => {
                // Full: another node may have room.
                self.stats.refused[3] += 1;
                return Err(self.full(tuple, code, signer));
            }
        }
        let ask = RelayAsk {
            token,
            even,
            family: requested_family,
            additional,
            dont_fragment: msg.dont_fragment(),
            user: quota_key,
        };
        let bound = self.bind_relays(now, &ask, relays);
        let (slots, new_token, address_error) = match bound {
            Ok(b) => b,
            // Without a RESERVATION-TOKEN or EVEN-PORT's R bit, the only 508 is a relay socket
            // that could not be bound (no free port): full as well.
            Err(508) if token.is_none() && even != Some(true) => {
                group.release(quota_key);
                return Err(self.full(tuple, 508, signer));
            }
            Err(code) => {
                group.release(quota_key);
                return Err(Reject::signed(code, signer));
            }
        };
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.allocs.push(None);
                (self.allocs.len() - 1) as u32
            }
        };
        let alloc = Allocation {
            tuple: *tuple,
            username: username.into(),
            key: signer.key,
            tid: *msg.transaction_id(),
            relays: slots,
            reservation: new_token,
            address_error,
            lifetime,
            expires: now.mono + Duration::from_secs(u64::from(lifetime)),
            permissions: Vec::new(),
            channels: Vec::new(),
        };
        for (id, addr) in alloc.relays.iter().flatten() {
            self.by_relay.insert(*id, idx);
            group.add_live_relay(canonical_addr(*addr));
        }
        self.by_tuple.insert(*tuple, idx);
        self.stats.allocations_created += 1;
        self.stats.allocations = self.by_tuple.len() as u64;
        let len = self.write_allocate_success(now, out, msg, &alloc, signer);
        if let Some(slot) = self.allocs.get_mut(idx as usize) {
            *slot = Some(alloc);
        }
        Ok(len)
    }

    /// The answer to an Allocate this server has no room for: 300 Try Alternate when an
    /// alternate is known for the client, else `code` (508).
    fn full(&self, tuple: &FiveTuple, code: u16, signer: Signer) -> Reject {
        match self.redirect(tuple) {
            Some(r) => Reject::try_alternate(r, signer),
            None => Reject::signed(code, signer),
        }
    }

    /// The relay sockets of a new allocation: the reserved one of `token`, or freshly bound
    /// ones (with a reservation of the next port for EVEN-PORT's R bit). Errors are codes.
    fn bind_relays(
        &mut self,
        now: Now,
        ask: &RelayAsk<'_>,
        relays: &mut dyn RelayProvider,
    ) -> Result<BoundRelays, u16> {
        let group = self.cfg.group.clone();
        let RelayAsk {
            token,
            even,
            family: requested_family,
            additional,
            dont_fragment,
            user,
        } = *ask;
        let mut slots: [Option<(RelayId, SocketAddr)>; 2] = [None, None];
        let mut new_token = None;
        let mut address_error = None;
        if let Some(token) = token {
            let r = group.redeem(&token).ok_or(508u16)?;
            if relays.claim(r.relay.0, r.relay.1).is_err() {
                relays.release(r.relay.0);
                return Err(508);
            }
            slots[slot_of(r.relay.1)] = Some(r.relay);
        } else {
            // Each reservation holds a bound socket for 30 s and is not an allocation: bound
            // them like allocations, so that allocate-reserve-delete loops cannot pile them up.
            let (max, max_user) = (self.cfg.max_allocations, self.cfg.max_allocations_per_user);
            if even == Some(true) && !group.can_reserve(user, max, max_user) {
                return Err(508);
            }
            let family = requested_family.unwrap_or(Family::V4);
            let req = RelayRequest {
                family,
                even_port: even.is_some(),
                reserve_next: even == Some(true),
                dont_fragment,
            };
            let b = relays.bind(req).map_err(|e| match e {
                RelayError::FamilyNotSupported => 440u16,
                RelayError::Exhausted => 508,
            })?;
            slots[slot_of(b.addr)] = Some((b.id, b.addr));
            if let Some(reserved) = b.reserved {
                let t = self.new_token();
                let r = Reservation {
                    relay: reserved,
                    expires: now.mono + RESERVATION_LIFETIME,
                    user: user.into(),
                };
                if group.reserve(t, r, max, max_user) {
                    new_token = Some(t);
                } else {
                    // Another shard took the last reservation since the check above.
                    relays.release(reserved.0);
                    relays.release(b.id);
                    return Err(508);
                }
            }
            if additional == Some(Family::V6) {
                let req = RelayRequest {
                    family: Family::V6,
                    even_port: false,
                    reserve_next: false,
                    dont_fragment,
                };
                match relays.bind(req) {
                    Ok(b) => slots[slot_of(b.addr)] = Some((b.id, b.addr)),
                    Err(RelayError::FamilyNotSupported) => address_error = Some(440),
                    Err(RelayError::Exhausted) => address_error = Some(508),
                }
            }
        }
        Ok((slots, new_token, address_error))
    }

    fn new_token(&mut self) -> [u8; 8] {
        let n = self.cfg.group.next_token();
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.cfg.nonce_key)
            .expect("HMAC takes keys of any length");
        hmac::Mac::update(&mut mac, b"reservation");
        hmac::Mac::update(&mut mac, &n.to_be_bytes());
        let full = hmac::Mac::finalize(mac).into_bytes();
        let mut t = [0u8; 8];
        t.copy_from_slice(&full[..8]);
        t
    }

    fn write_allocate_success(
        &self,
        now: Now,
        out: &mut [u8],
        msg: &Message<'_>,
        a: &Allocation,
        signer: Signer,
    ) -> usize {
        let remaining = a.expires.saturating_duration_since(now.mono).as_secs() as u32;
        self.write_success(out, msg, signer, |w| {
            for (_, addr) in a.relays.iter().flatten() {
                w.xor_address(
                    attr::XOR_RELAYED_ADDRESS,
                    self.cfg.external.to_public(*addr),
                )?;
            }
            if let Some(code) = a.address_error {
                let reason = reason(code).as_bytes();
                let mut v = [0u8; 64];
                v[0] = 0x02; // the IPv6 relay address failed
                v[2] = (code / 100) as u8;
                v[3] = (code % 100) as u8;
                let n = reason.len().min(60);
                v[4..4 + n].copy_from_slice(&reason[..n]);
                w.attr(attr::ADDRESS_ERROR_CODE, &v[..4 + n])?;
            }
            w.lifetime(remaining.min(a.lifetime))?;
            if let Some(t) = a.reservation {
                w.attr(attr::RESERVATION_TOKEN, &t)?;
            }
            w.xor_address(attr::XOR_MAPPED_ADDRESS, a.tuple.client)
        })
    }

    fn write_success(
        &self,
        out: &mut [u8],
        msg: &Message<'_>,
        signer: Signer,
        extra: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), StunError>,
    ) -> usize {
        let typ = MessageType::new(msg.method(), Class::Success);
        let r = (|| -> Result<usize, StunError> {
            let mut w = MessageWriter::new(out, typ, msg.transaction_id())?;
            extra(&mut w)?;
            if !self.cfg.software.is_empty() {
                w.attr(attr::SOFTWARE, self.cfg.software.as_bytes())?;
            }
            signer.sign(&mut w)?;
            w.fingerprint()?;
            Ok(w.finish())
        })();
        r.unwrap_or(0)
    }

    fn refresh(
        &mut self,
        now: Now,
        tuple: &FiveTuple,
        msg: &Message<'_>,
        out: &mut [u8],
        relays: &mut dyn RelayProvider,
    ) -> Result<usize, Reject> {
        let (i, signer) = self.existing(now, tuple, msg, relays)?;
        let bad = || Reject::signed(400, signer);
        let requested = msg.lifetime().map_err(|_| bad())?;
        if let Some(fam) = msg
            .requested_address_family()
            .map_err(|_| Reject::signed(440, signer))?
        {
            let has = self
                .allocs
                .get(i as usize)
                .and_then(|a| a.as_ref())
                .is_some_and(|a| a.relays[family_slot(fam)].is_some());
            if !has {
                return Err(Reject::signed(443, signer));
            }
        }
        if requested == Some(0) {
            self.remove_allocation(i, relays);
            return Ok(self.write_success(out, msg, signer, |w| w.lifetime(0)));
        }
        let lifetime = self.lifetime(requested);
        if let Some(a) = self.alloc_mut(i) {
            a.lifetime = lifetime;
            a.expires = now.mono + Duration::from_secs(u64::from(lifetime));
        }
        Ok(self.write_success(out, msg, signer, |w| w.lifetime(lifetime)))
    }

    /// Check a peer named by the client: family (443) and filter (403).
    fn vet_peer(&mut self, i: u32, peer: SocketAddr, signer: Signer) -> Result<(), Reject> {
        let has_family = self
            .allocs
            .get(i as usize)
            .and_then(|a| a.as_ref())
            .is_some_and(|a| a.has_family(peer.ip()));
        if !has_family {
            return Err(Reject::signed(443, signer));
        }
        if self.check_peer(peer).is_err() {
            self.stats.peer_denied += 1;
            return Err(Reject::signed(403, signer));
        }
        Ok(())
    }

    fn create_permission(
        &mut self,
        now: Now,
        tuple: &FiveTuple,
        msg: &Message<'_>,
        out: &mut [u8],
        relays: &mut dyn RelayProvider,
    ) -> Result<usize, Reject> {
        let (i, signer) = self.existing(now, tuple, msg, relays)?;
        let mut count = 0usize;
        for peer in msg.xor_peer_addresses() {
            let peer = normalize_peer(peer.map_err(|_| Reject::signed(400, signer))?);
            self.vet_peer(i, peer, signer)?;
            count += 1;
        }
        if count == 0 {
            return Err(Reject::signed(400, signer));
        }
        let Some(a) = self.alloc_mut(i) else {
            return Err(Reject::plain(437));
        };
        let new = msg
            .xor_peer_addresses()
            .flatten()
            .filter(|p| {
                let ip = normalize_peer(*p).ip();
                !a.permissions.iter().any(|x| x.ip == ip)
            })
            .count();
        if a.permissions.len() + new > MAX_PERMISSIONS {
            return Err(Reject::signed(508, signer));
        }
        for peer in msg.xor_peer_addresses().flatten() {
            a.permit(normalize_peer(peer).ip(), now.mono);
        }
        Ok(self.write_success(out, msg, signer, |_| Ok(())))
    }

    fn channel_bind(
        &mut self,
        now: Now,
        tuple: &FiveTuple,
        msg: &Message<'_>,
        out: &mut [u8],
        relays: &mut dyn RelayProvider,
    ) -> Result<usize, Reject> {
        let (i, signer) = self.existing(now, tuple, msg, relays)?;
        let bad = || Reject::signed(400, signer);
        let number = msg.channel_number().map_err(|_| bad())?.ok_or_else(bad)?;
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&number) {
            return Err(bad());
        }
        let peer = msg
            .xor_peer_addresses()
            .next()
            .ok_or_else(bad)?
            .map_err(|_| bad())?;
        let peer = normalize_peer(peer);
        self.vet_peer(i, peer, signer)?;
        let Some(a) = self.alloc_mut(i) else {
            return Err(Reject::plain(437));
        };
        // RFC 8656 §11.2: a number is bound to one peer and a peer to one number, also during the
        // five minutes after a binding expires.
        // The binding also installs a permission: it counts against the same cap as
        // CreatePermission's.
        if a.permissions.len() >= MAX_PERMISSIONS
            && !a.permissions.iter().any(|p| p.ip == peer.ip())
        {
            return Err(Reject::signed(508, signer));
        }
        let by_number = a.channels.iter().position(|c| c.number == number);
        let by_peer = a.channels.iter().position(|c| c.peer == peer);
        match (by_number, by_peer) {
            (Some(x), Some(y)) if x == y => {
                if let Some(c) = a.channels.get_mut(x) {
                    c.expires = now.mono + CHANNEL_LIFETIME;
                }
            }
            (None, None) => {
                if a.channels.len() >= MAX_CHANNELS {
                    return Err(Reject::signed(508, signer));
                }
                a.channels.push(Channel {
                    number,
                    peer,
                    expires: now.mono + CHANNEL_LIFETIME,
                });
            }
            _ => return Err(bad()),
        }
        a.permit(peer.ip(), now.mono);
        Ok(self.write_success(out, msg, signer, |_| Ok(())))
    }

    fn remove_allocation(&mut self, i: u32, relays: &mut dyn RelayProvider) {
        let Some(a) = self.allocs.get_mut(i as usize).and_then(|a| a.take()) else {
            return;
        };
        self.by_tuple.remove(&a.tuple);
        for (id, addr) in a.relays.iter().flatten() {
            self.by_relay.remove(id);
            self.cfg.group.remove_live_relay(canonical_addr(*addr));
            relays.release(*id);
        }
        self.cfg.group.release(crate::auth::quota_key(&a.username));
        self.free.push(i);
        self.stats.allocations = self.by_tuple.len() as u64;
    }

    /// A stream transport closed: its allocation ends with it (RFC 8656 §7).
    pub fn client_closed(&mut self, tuple: &FiveTuple, relays: &mut dyn RelayProvider) {
        if let Some(i) = self.alloc_by_tuple(tuple) {
            self.remove_allocation(i, relays);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Peer side
    // ----------------------------------------------------------------------------------------

    /// Handle a datagram that arrived on relay socket `relay` from `from`. The datagram's `len`
    /// bytes must sit at `buf[PEER_HEADROOM..]`, and `buf` must have 3 spare bytes after it. On
    /// success, the ChannelData message or Data indication for the client is `buf[out.range]`.
    pub fn handle_peer(
        &mut self,
        now: Now,
        relay: RelayId,
        from: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Option<PeerOutput> {
        let Some(&i) = self.by_relay.get(&relay) else {
            self.stats.dropped_no_allocation += 1;
            return None;
        };
        let peer = self.client_view_of_peer(normalize_peer(from));
        let Some(a) = self.allocs.get(i as usize).and_then(|a| a.as_ref()) else {
            self.stats.dropped_no_allocation += 1;
            return None;
        };
        if !a.permitted(peer.ip(), now.mono) {
            self.stats.dropped_no_permission += 1;
            return None;
        }
        let Some(end) = PEER_HEADROOM.checked_add(len) else {
            self.stats.dropped_malformed += 1;
            return None;
        };
        let stream = a.tuple.transport.is_stream();
        let client = a.tuple;
        if buf.len().saturating_sub(3) < end {
            self.stats.dropped_malformed += 1;
            return None;
        }
        let channel = a
            .channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now.mono)
            .map(|c| c.number);
        if let Some(number) = channel {
            let start = PEER_HEADROOM - 4;
            write_channel_data_header(buf.get_mut(start..)?, number, len).ok()?;
            let end = if stream { pad_zero(buf, end) } else { end };
            return Some(PeerOutput {
                client,
                range: start..end,
            });
        }
        // Data indication: header + XOR-PEER-ADDRESS + DATA header right before the payload.
        self.token_counter += 1;
        let mut tid = [0u8; 12];
        tid[4..].copy_from_slice(&self.token_counter.to_be_bytes());
        let mut head = [0u8; PEER_HEADROOM];
        let typ = MessageType::new(method::DATA, Class::Indication);
        let head_len = {
            let mut w = MessageWriter::new(&mut head, typ, &tid).ok()?;
            w.xor_address(attr::XOR_PEER_ADDRESS, peer).ok()?;
            w.finish()
        };
        let start = PEER_HEADROOM - 4 - head_len;
        let padded_end = pad_zero(buf, end);
        let body = padded_end - start - icebreaker_stun::HEADER_LEN;
        let (Ok(body), Ok(dlen)) = (u16::try_from(body), u16::try_from(len)) else {
            self.stats.dropped_malformed += 1;
            return None;
        };
        buf.get_mut(start..start + head_len)?
            .copy_from_slice(head.get(..head_len)?);
        buf.get_mut(start + 2..start + 4)?
            .copy_from_slice(&body.to_be_bytes());
        let d = buf.get_mut(PEER_HEADROOM - 4..PEER_HEADROOM)?;
        d[..2].copy_from_slice(&attr::DATA.to_be_bytes());
        d[2..].copy_from_slice(&dlen.to_be_bytes());
        Some(PeerOutput {
            client,
            range: start..padded_end,
        })
    }

    // ----------------------------------------------------------------------------------------
    // Time
    // ----------------------------------------------------------------------------------------

    /// Expire allocations, permissions, channels and reservations. Call about once a second.
    pub fn handle_timeout(&mut self, now: Now, relays: &mut dyn RelayProvider) {
        let mut permissions = 0u64;
        let mut channels = 0u64;
        for i in 0..self.allocs.len() {
            let expired = match self.allocs.get_mut(i).and_then(|a| a.as_mut()) {
                None => continue,
                Some(a) if a.expires <= now.mono => true,
                Some(a) => {
                    a.permissions.retain(|p| p.expires > now.mono);
                    a.channels
                        .retain(|c| c.expires + CHANNEL_QUARANTINE > now.mono);
                    permissions += a.permissions.len() as u64;
                    channels += a.channels.iter().filter(|c| c.expires > now.mono).count() as u64;
                    false
                }
            };
            if expired {
                self.stats.allocations_expired += 1;
                self.remove_allocation(i as u32, relays);
            }
        }
        self.cfg
            .group
            .sweep(Some(now.mono), |r| relays.release(r.relay.0));
        self.stats.permissions = permissions;
        self.stats.channels = channels;
        self.stats.allocations = self.by_tuple.len() as u64;
    }

    /// Release every allocation and reservation (shutdown).
    pub fn clear(&mut self, relays: &mut dyn RelayProvider) {
        for i in 0..self.allocs.len() {
            self.remove_allocation(i as u32, relays);
        }
        self.cfg.group.sweep(None, |r| relays.release(r.relay.0));
    }
}

/// How to sign an answer: the key and the integrity algorithm the request used.
#[derive(Clone, Copy)]
struct Signer {
    key: [u8; 16],
    kind: icebreaker_stun::IntegrityKind,
}

impl Signer {
    fn sign(&self, w: &mut MessageWriter<'_>) -> Result<(), StunError> {
        match self.kind {
            icebreaker_stun::IntegrityKind::Sha1 => w.message_integrity(&self.key),
            icebreaker_stun::IntegrityKind::Sha256 => w.message_integrity_sha256(&self.key),
        }
    }
}

fn slot_of(addr: SocketAddr) -> usize {
    if addr.is_ipv4() {
        0
    } else {
        1
    }
}

fn family_slot(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// Zero-pad `buf` from `end` to a multiple of 4; returns the padded end.
fn pad_zero(buf: &mut [u8], end: usize) -> usize {
    let padded = end.div_ceil(4) * 4;
    if let Some(p) = buf.get_mut(end..padded) {
        p.fill(0);
    }
    padded
}

/// A relay address in the form the peer filter compares.
fn canonical_addr(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(crate::filter::canonical(a.ip()), a.port())
}

/// IPv4-mapped IPv6 peers are IPv4 peers.
fn normalize_peer(peer: SocketAddr) -> SocketAddr {
    match peer.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), peer.port()),
            None => peer,
        },
        IpAddr::V4(_) => peer,
    }
}
