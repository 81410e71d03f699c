//! Test harness shared by the integration tests: a fake relay provider, a test-side TURN client
//! that builds requests with `MessageWriter` and parses answers with `Message`, and an
//! environment that owns the server and an explicit clock.

#![allow(dead_code, clippy::unwrap_used)]

use icebreaker_stun::{
    attr, long_term_key, method, rest_password, Class, Message, MessageType, MessageWriter,
    TransactionId,
};
use icebreaker_turn::{
    ClientOutput, Config, Credentials, Family, FiveTuple, Now, PeerFilter, RelayBinding,
    RelayError, RelayId, RelayProvider, RelayRequest, Server, Transport, PEER_HEADROOM,
};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub const REALM: &str = "icebreaker.test";
pub const SECRET: &str = "rest-secret-1";
pub const SECRET2: &str = "rest-secret-2";
pub const SOFTWARE: &str = "icebreaker-test/1.0";
pub const SERVER: &str = "192.0.2.1:3478";
pub const SERVICE_PORT: u16 = 3478;
pub const RELAY_LO: u16 = 50000;
pub const RELAY_HI: u16 = 59999;
pub const UNIX_START: u64 = 1_700_000_000;
/// Public (TEST-NET) peers the default filter allows.
pub const PEER: &str = "198.51.100.7:4000";
pub const PEER2: &str = "198.51.100.8:4001";
pub const PEER6: &str = "[2001:db8::7]:4000";

pub fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip address")
}

pub fn relay_ips() -> Vec<IpAddr> {
    vec![ip("127.0.0.1"), ip("::1")]
}

/// The default filter: our relay range on the loopback relay IPs, our service port.
pub fn filter() -> PeerFilter {
    PeerFilter::new()
        .own_ip(ip("192.0.2.1"))
        .relay(&relay_ips(), RELAY_LO..=RELAY_HI)
        .service_port(SERVICE_PORT)
}

pub fn credentials() -> Credentials {
    Credentials::new(
        REALM,
        [("alice", "alice-pw"), ("bob", "bob-pw")],
        [SECRET, SECRET2],
    )
}

pub fn config() -> Config {
    let mut c = Config::new(credentials());
    c.nonce_key = [42; 32];
    c.nonce_lifetime = 600;
    c.software = SOFTWARE.to_owned();
    c.filter = filter();
    c.relay_ips = relay_ips();
    c.relay_ports = (RELAY_LO, RELAY_HI);
    c
}

// ------------------------------------------------------------------------------------------------
// Fake relay provider
// ------------------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct FakeRelays {
    next_id: u32,
    next_port: u16,
    /// Refuse IPv6 relays (FamilyNotSupported).
    pub refuse_v6: bool,
    /// Refuse every bind (Exhausted).
    pub exhausted: bool,
    /// Bound and not yet released.
    pub live: BTreeMap<RelayId, SocketAddr>,
    /// Every release, in order.
    pub released: Vec<RelayId>,
    /// Every bind request, in order.
    pub requests: Vec<RelayRequest>,
    /// Reserved sockets taken over from another shard's provider, in order.
    pub claimed: Vec<RelayId>,
}

impl Default for FakeRelays {
    fn default() -> Self {
        FakeRelays {
            next_id: 1,
            next_port: RELAY_LO + 1, // odd on purpose, so EVEN-PORT has to skip
            refuse_v6: false,
            exhausted: false,
            live: BTreeMap::new(),
            released: Vec::new(),
            requests: Vec::new(),
            claimed: Vec::new(),
        }
    }
}

impl FakeRelays {
    /// A provider for a second shard: ids and ports that never collide with the default one's.
    pub fn second_shard() -> Self {
        FakeRelays {
            next_id: 1_000_001,
            next_port: RELAY_LO + 5001,
            ..Self::default()
        }
    }

    fn take(&mut self, family: Family, port: u16) -> (RelayId, SocketAddr) {
        let id = RelayId(self.next_id);
        self.next_id += 1;
        let ip = match family {
            Family::V4 => ip("127.0.0.1"),
            Family::V6 => ip("::1"),
        };
        let addr = SocketAddr::new(ip, port);
        self.live.insert(id, addr);
        (id, addr)
    }

    pub fn addr_of(&self, id: RelayId) -> Option<SocketAddr> {
        self.live.get(&id).copied()
    }
}

impl RelayProvider for FakeRelays {
    fn bind(&mut self, req: RelayRequest) -> Result<RelayBinding, RelayError> {
        self.requests.push(req);
        if self.exhausted {
            return Err(RelayError::Exhausted);
        }
        if req.family == Family::V6 && self.refuse_v6 {
            return Err(RelayError::FamilyNotSupported);
        }
        let mut port = self.next_port;
        if req.even_port && port % 2 == 1 {
            port += 1;
        }
        self.next_port = port + if req.reserve_next { 2 } else { 1 };
        let (id, addr) = self.take(req.family, port);
        let reserved = req.reserve_next.then(|| self.take(req.family, port + 1));
        Ok(RelayBinding { id, addr, reserved })
    }

    fn release(&mut self, id: RelayId) {
        assert!(
            self.live.remove(&id).is_some(),
            "release of a relay that is not bound: {id:?}"
        );
        self.released.push(id);
    }

    fn claim(&mut self, id: RelayId, addr: SocketAddr) -> Result<(), RelayError> {
        // A reservation made by this provider is already live here; one made by another shard's
        // provider moves in.
        self.live.insert(id, addr);
        self.claimed.push(id);
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// Answers
// ------------------------------------------------------------------------------------------------

/// What the server did with a client packet, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    None,
    Reply(Vec<u8>),
    Forward {
        relay: RelayId,
        peer: SocketAddr,
        data: Vec<u8>,
    },
}

impl Out {
    pub fn reply(&self) -> Reply {
        match self {
            Out::Reply(b) => Reply(b.clone()),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Out::None)
    }
}

/// A STUN answer from the server.
#[derive(Debug, Clone)]
pub struct Reply(pub Vec<u8>);

impl Reply {
    pub fn msg(&self) -> Message<'_> {
        Message::parse(&self.0).expect("server answer parses")
    }

    pub fn class(&self) -> Class {
        self.msg().class()
    }

    pub fn method(&self) -> u16 {
        self.msg().method()
    }

    pub fn tid(&self) -> TransactionId {
        *self.msg().transaction_id()
    }

    /// The error code, `None` for a success.
    pub fn code(&self) -> Option<u16> {
        self.msg()
            .error_code()
            .expect("well-formed ERROR-CODE")
            .map(|c| c.0)
    }

    /// Assert a success response and check its FINGERPRINT.
    pub fn assert_success(&self) -> &Self {
        let m = self.msg();
        assert_eq!(
            m.class(),
            Class::Success,
            "expected success, got {:?}",
            m.error_code()
        );
        assert!(
            !m.has_fingerprint() || m.check_fingerprint(),
            "FINGERPRINT must be valid"
        );
        self
    }

    /// Assert an error response with `code` and check its FINGERPRINT.
    pub fn assert_error(&self, code: u16) -> &Self {
        let m = self.msg();
        assert_eq!(m.class(), Class::Error, "expected error {code}, got {m:?}");
        assert_eq!(self.code(), Some(code));
        assert!(
            !m.has_fingerprint() || m.check_fingerprint(),
            "FINGERPRINT must be valid"
        );
        self
    }

    pub fn has(&self, typ: u16) -> bool {
        self.msg().get(typ).is_some()
    }

    pub fn nonce(&self) -> Option<Vec<u8>> {
        self.msg().nonce().expect("NONCE").map(<[u8]>::to_vec)
    }

    pub fn realm(&self) -> Option<String> {
        self.msg().realm().expect("REALM").map(str::to_owned)
    }

    pub fn lifetime(&self) -> Option<u32> {
        self.msg().lifetime().expect("LIFETIME")
    }

    pub fn relayed(&self) -> Vec<SocketAddr> {
        self.msg()
            .xor_relayed_addresses()
            .map(|a| a.expect("XOR-RELAYED-ADDRESS"))
            .collect()
    }

    pub fn mapped(&self) -> Option<SocketAddr> {
        self.msg().xor_mapped_address().expect("XOR-MAPPED-ADDRESS")
    }

    pub fn reservation_token(&self) -> Option<[u8; 8]> {
        self.msg().reservation_token().expect("RESERVATION-TOKEN")
    }

    pub fn integrity_ok(&self, key: &[u8; 16]) -> bool {
        self.msg().verify_integrity(key).is_ok()
    }

    pub fn unknown_attributes(&self) -> Vec<u16> {
        self.msg().unknown_attributes().collect()
    }
}

// ------------------------------------------------------------------------------------------------
// Requests
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Attr {
    Raw(u16, Vec<u8>),
    Xor(u16, SocketAddr),
}

/// Long-term credential parts added to a request (USERNAME, REALM, NONCE, MESSAGE-INTEGRITY).
#[derive(Debug, Clone)]
pub struct Auth {
    pub username: Option<String>,
    pub realm: String,
    pub nonce: Vec<u8>,
    pub key: [u8; 16],
}

/// A request or indication under construction.
#[derive(Debug, Clone)]
pub struct Req {
    pub typ: MessageType,
    pub tid: TransactionId,
    attrs: Vec<Attr>,
    pub auth: Option<Auth>,
    pub fingerprint: bool,
}

static TID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub fn new_tid() -> TransactionId {
    let n = TID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut t = [0xA5u8; 12];
    t[4..].copy_from_slice(&n.to_be_bytes());
    t
}

impl Req {
    pub fn new(method: u16, class: Class) -> Self {
        Req {
            typ: MessageType::new(method, class),
            tid: new_tid(),
            attrs: Vec::new(),
            auth: None,
            fingerprint: true,
        }
    }

    pub fn request(method: u16) -> Self {
        Self::new(method, Class::Request)
    }

    pub fn attr(mut self, typ: u16, value: &[u8]) -> Self {
        self.attrs.push(Attr::Raw(typ, value.to_vec()));
        self
    }

    pub fn xor(mut self, typ: u16, addr: SocketAddr) -> Self {
        self.attrs.push(Attr::Xor(typ, addr));
        self
    }

    pub fn transport(self, proto: u8) -> Self {
        self.attr(attr::REQUESTED_TRANSPORT, &[proto, 0, 0, 0])
    }

    pub fn udp(self) -> Self {
        self.transport(17)
    }

    pub fn lifetime(self, secs: u32) -> Self {
        self.attr(attr::LIFETIME, &secs.to_be_bytes())
    }

    pub fn peer(self, addr: SocketAddr) -> Self {
        self.xor(attr::XOR_PEER_ADDRESS, addr)
    }

    pub fn channel(self, number: u16) -> Self {
        let [a, b] = number.to_be_bytes();
        self.attr(attr::CHANNEL_NUMBER, &[a, b, 0, 0])
    }

    pub fn family(self, f: Family) -> Self {
        self.attr(attr::REQUESTED_ADDRESS_FAMILY, &[f.to_u8(), 0, 0, 0])
    }

    pub fn additional_family(self, f: Family) -> Self {
        self.attr(attr::ADDITIONAL_ADDRESS_FAMILY, &[f.to_u8(), 0, 0, 0])
    }

    pub fn even_port(self, reserve: bool) -> Self {
        self.attr(attr::EVEN_PORT, &[if reserve { 0x80 } else { 0 }])
    }

    pub fn token(self, t: [u8; 8]) -> Self {
        self.attr(attr::RESERVATION_TOKEN, &t)
    }

    pub fn data(self, d: &[u8]) -> Self {
        self.attr(attr::DATA, d)
    }

    pub fn tid(mut self, tid: TransactionId) -> Self {
        self.tid = tid;
        self
    }

    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    pub fn no_auth(mut self) -> Self {
        self.auth = None;
        self
    }

    pub fn without_username(mut self) -> Self {
        if let Some(a) = self.auth.as_mut() {
            a.username = None;
        }
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        let mut w = MessageWriter::new(&mut buf, self.typ, &self.tid).expect("header");
        for a in &self.attrs {
            match a {
                Attr::Raw(t, v) => w.attr(*t, v).expect("attr"),
                Attr::Xor(t, addr) => w.xor_address(*t, *addr).expect("xor attr"),
            }
        }
        if let Some(auth) = &self.auth {
            if let Some(u) = &auth.username {
                w.attr(attr::USERNAME, u.as_bytes()).expect("USERNAME");
            }
            w.attr(attr::REALM, auth.realm.as_bytes()).expect("REALM");
            w.attr(attr::NONCE, &auth.nonce).expect("NONCE");
            w.message_integrity(&auth.key).expect("MI");
        }
        if self.fingerprint {
            w.fingerprint().expect("FINGERPRINT");
        }
        let n = w.finish();
        buf.truncate(n);
        buf
    }
}

/// A test-side TURN client: one 5-tuple and one set of credentials.
#[derive(Debug, Clone)]
pub struct Client {
    pub tuple: FiveTuple,
    pub username: String,
    pub password: String,
    pub realm: String,
    pub nonce: Option<Vec<u8>>,
}

impl Client {
    pub fn new(client: &str, transport: Transport, username: &str, password: &str) -> Self {
        Client {
            tuple: FiveTuple {
                client: sa(client),
                server: sa(SERVER),
                transport,
            },
            username: username.to_owned(),
            password: password.to_owned(),
            realm: REALM.to_owned(),
            nonce: None,
        }
    }

    pub fn udp(client: &str, username: &str, password: &str) -> Self {
        Self::new(client, Transport::Udp, username, password)
    }

    pub fn alice(client: &str) -> Self {
        Self::udp(client, "alice", "alice-pw")
    }

    pub fn bob(client: &str) -> Self {
        Self::udp(client, "bob", "bob-pw")
    }

    /// A REST client: username `<expiry>:<user>`, password from `secret`.
    pub fn rest(client: &str, expiry: u64, user: &str, secret: &str) -> Self {
        let username = format!("{expiry}:{user}");
        let mut pw = [0u8; 28];
        let password = rest_password(secret.as_bytes(), &username, &mut pw).to_owned();
        Self::udp(client, &username, &password)
    }

    pub fn key(&self) -> [u8; 16] {
        long_term_key(&self.username, &self.realm, &self.password)
    }

    /// The long-term credential parts with the cached nonce.
    pub fn auth(&self) -> Auth {
        Auth {
            username: Some(self.username.clone()),
            realm: self.realm.clone(),
            nonce: self.nonce.clone().expect("client has a nonce"),
            key: self.key(),
        }
    }

    /// A signed request.
    pub fn req(&self, method: u16) -> Req {
        Req::request(method).auth(self.auth())
    }

    /// Allocate request (REQUESTED-TRANSPORT UDP), signed.
    pub fn allocate_req(&self) -> Req {
        self.req(method::ALLOCATE).udp()
    }
}

// ------------------------------------------------------------------------------------------------
// Environment
// ------------------------------------------------------------------------------------------------

pub struct Env {
    pub server: Server,
    pub relays: FakeRelays,
    pub now: Now,
    pub start: Instant,
}

impl Env {
    pub fn new() -> Self {
        Self::with(config())
    }

    pub fn with(cfg: Config) -> Self {
        let start = Instant::now();
        Env {
            server: Server::new(cfg),
            relays: FakeRelays::default(),
            now: Now {
                mono: start,
                unix: UNIX_START,
            },
            start,
        }
    }

    /// Advance both clocks without running timers.
    pub fn advance(&mut self, secs: u64) {
        self.now.mono += Duration::from_secs(secs);
        self.now.unix += secs;
    }

    /// Advance both clocks one second at a time, running `handle_timeout` each second.
    pub fn tick(&mut self, secs: u64) {
        for _ in 0..secs {
            self.advance(1);
            self.server.handle_timeout(self.now, &mut self.relays);
        }
    }

    /// Seconds since the start.
    pub fn elapsed(&self) -> u64 {
        self.now.mono.duration_since(self.start).as_secs()
    }

    pub fn raw(&mut self, tuple: FiveTuple, packet: &[u8]) -> Out {
        let mut out = vec![0u8; 1500];
        match self
            .server
            .handle_client(self.now, tuple, packet, &mut out, &mut self.relays)
        {
            ClientOutput::None => Out::None,
            ClientOutput::Reply(n) => {
                assert!(n <= out.len());
                out.truncate(n);
                Out::Reply(out)
            }
            ClientOutput::Forward { relay, peer, data } => Out::Forward {
                relay,
                peer,
                data: data.to_vec(),
            },
        }
    }

    /// Send a request and return the server's answer (which must exist and answer it).
    pub fn call(&mut self, tuple: FiveTuple, req: &Req) -> Reply {
        let r = self.raw(tuple, &req.encode()).reply();
        assert_eq!(r.tid(), req.tid, "answer to the same transaction");
        assert_eq!(r.method(), req.typ.method(), "answer to the same method");
        r
    }

    /// Send an unauthenticated Allocate to learn the client's nonce.
    pub fn challenge(&mut self, c: &mut Client) -> Reply {
        let r = self.call(c.tuple, &Req::request(method::ALLOCATE).udp());
        r.assert_error(401);
        assert_eq!(r.realm().as_deref(), Some(REALM));
        c.nonce = Some(r.nonce().expect("401 carries a NONCE"));
        r
    }

    /// Make sure the client holds a nonce that is fresh now.
    pub fn fresh_nonce(&mut self, c: &mut Client) {
        self.challenge(c);
    }

    /// Challenge, then send `req(c)` signed. Answers 438 by retrying with the new nonce.
    pub fn signed(&mut self, c: &mut Client, req: impl Fn(&Client) -> Req) -> Reply {
        if c.nonce.is_none() {
            self.challenge(c);
        }
        let r = self.call(c.tuple, &req(c));
        if r.code() == Some(438) {
            c.nonce = r.nonce();
            return self.call(c.tuple, &req(c));
        }
        r
    }

    /// Allocate with default options; asserts success and returns the answer.
    pub fn allocate(&mut self, c: &mut Client) -> Reply {
        let r = self.signed(c, |c| c.allocate_req());
        r.assert_success();
        r
    }

    /// Allocate and return the (first) relayed address and its relay id.
    pub fn allocate_relay(&mut self, c: &mut Client) -> (RelayId, SocketAddr) {
        let r = self.allocate(c);
        let relayed = r.relayed()[0];
        let id = self
            .server
            .relays_of(&c.tuple)
            .find(|(_, a)| a.port() == relayed.port())
            .expect("relay of the allocation")
            .0;
        (id, relayed)
    }

    pub fn create_permission(&mut self, c: &mut Client, peer: SocketAddr) -> Reply {
        self.signed(c, |c| c.req(method::CREATE_PERMISSION).peer(peer))
    }

    pub fn channel_bind(&mut self, c: &mut Client, number: u16, peer: SocketAddr) -> Reply {
        self.signed(c, |c| {
            c.req(method::CHANNEL_BIND).channel(number).peer(peer)
        })
    }

    pub fn refresh(&mut self, c: &mut Client, lifetime: Option<u32>) -> Reply {
        self.signed(c, |c| {
            let r = c.req(method::REFRESH);
            match lifetime {
                Some(l) => r.lifetime(l),
                None => r,
            }
        })
    }

    /// A datagram from `from` arriving on relay `relay`; returns where it goes and the bytes.
    pub fn peer(
        &mut self,
        relay: RelayId,
        from: SocketAddr,
        payload: &[u8],
    ) -> Option<(FiveTuple, Vec<u8>)> {
        let mut buf = vec![0u8; PEER_HEADROOM + payload.len() + 3];
        buf[PEER_HEADROOM..PEER_HEADROOM + payload.len()].copy_from_slice(payload);
        let out = self
            .server
            .handle_peer(self.now, relay, from, &mut buf, payload.len())?;
        Some((out.client, buf[out.range].to_vec()))
    }
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

/// A ChannelData frame (unpadded).
pub fn channel_data(number: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + payload.len());
    v.extend_from_slice(&number.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// A Send indication (no integrity, with FINGERPRINT).
pub fn send_indication(peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
    Req::new(method::SEND, Class::Indication)
        .peer(peer)
        .data(payload)
        .encode()
}
