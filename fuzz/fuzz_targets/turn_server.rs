//! The TURN state machine driven by packet sequences from several 5-tuples, with time advancing.
//!
//! The input is read as a list of operations. Besides raw bytes, the harness builds well-formed
//! authenticated requests (with the nonce the server last handed out), so that the fuzzer reaches
//! allocations, permissions, channels, expiry and the peer path, not just the parser.
#![no_main]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use icebreaker_stun::{attr, long_term_key, method, Class, Message, MessageType, MessageWriter};
use icebreaker_turn::{
    Config, Credentials, FiveTuple, Now, PeerFilter, RelayBinding, RelayError, RelayId,
    RelayProvider, RelayRequest, Server, Transport, PEER_HEADROOM,
};
use libfuzzer_sys::fuzz_target;

struct Relays {
    next: u32,
    live: HashSet<RelayId>,
}

impl RelayProvider for Relays {
    fn bind(&mut self, req: RelayRequest) -> Result<RelayBinding, RelayError> {
        if self.live.len() > 64 {
            return Err(RelayError::Exhausted);
        }
        let ip = match req.family {
            icebreaker_turn::Family::V4 => "127.0.0.1".parse().expect("ip"),
            icebreaker_turn::Family::V6 => "::1".parse().expect("ip"),
        };
        self.next += 2;
        let id = RelayId(self.next);
        self.live.insert(id);
        let port = 20000 + (self.next as u16 % 9000) * 2;
        let reserved = req.reserve_next.then(|| {
            let rid = RelayId(self.next + 1);
            self.live.insert(rid);
            (rid, SocketAddr::new(ip, port + 1))
        });
        Ok(RelayBinding {
            id,
            addr: SocketAddr::new(ip, port),
            reserved,
        })
    }
    fn release(&mut self, id: RelayId) {
        assert!(self.live.remove(&id), "released twice or never bound: {id:?}");
    }
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

const REALM: &str = "fuzz";
const PEERS: [&str; 4] = ["127.0.0.1:20002", "203.0.113.5:9", "[::1]:20004", "10.0.0.1:53"];

fuzz_target!(|data: &[u8]| {
    let creds = Credentials::new(REALM, [("alice", "pw")], ["secret"]);
    let mut cfg = Config::new(creds);
    cfg.max_allocations = 3;
    cfg.max_allocations_per_user = 2;
    cfg.filter = PeerFilter::new()
        .relay(&["127.0.0.1".parse().expect("ip"), "::1".parse().expect("ip")], 20000..=40000)
        .service_port(3478);
    let mut server = Server::new(cfg);
    let mut relays = Relays {
        next: 0,
        live: HashSet::new(),
    };
    let key = long_term_key("alice", REALM, "pw");
    let start = Instant::now();
    let mut secs = 0u64;
    let mut nonces: [Vec<u8>; 4] = Default::default();
    let mut out = [0u8; 2048];
    let mut buf = vec![0u8; PEER_HEADROOM + 1600];
    let tuples: Vec<FiveTuple> = (0..4u16)
        .map(|i| FiveTuple {
            client: SocketAddr::from(([192, 0, 2, 1], 5000 + i)),
            server: SocketAddr::from(([192, 0, 2, 100], 3478)),
            transport: if i % 2 == 0 { Transport::Udp } else { Transport::Tcp },
        })
        .collect();
    let mut inp = Input(data);
    let mut tid_counter = 0u32;
    while let Some(op) = inp.byte() {
        let now = Now {
            mono: start + Duration::from_secs(secs),
            unix: 1_700_000_000 + secs,
        };
        let k = (inp.byte().unwrap_or(0) % 4) as usize;
        match op % 5 {
            0 => {
                let len = inp.byte().unwrap_or(0) as usize;
                let pkt = inp.bytes(len).to_vec();
                let _ = server.handle_client(now, tuples[k], &pkt, &mut out, &mut relays);
            }
            1 | 2 => {
                // A well-formed (mostly authenticated) request.
                let sel = inp.byte().unwrap_or(0);
                let arg = inp.byte().unwrap_or(0);
                let m = [
                    method::ALLOCATE,
                    method::REFRESH,
                    method::CREATE_PERMISSION,
                    method::CHANNEL_BIND,
                    method::SEND,
                    method::BINDING,
                ][(sel % 6) as usize];
                let class = if m == method::SEND {
                    Class::Indication
                } else {
                    Class::Request
                };
                tid_counter += 1;
                let mut tid = [0u8; 12];
                tid[..4].copy_from_slice(&tid_counter.to_be_bytes());
                let mut req = [0u8; 512];
                let len = (|| -> Result<usize, icebreaker_stun::Error> {
                    let mut w = MessageWriter::new(&mut req, MessageType::new(m, class), &tid)?;
                    let peer: SocketAddr = PEERS[(arg % 4) as usize].parse().expect("peer");
                    match m {
                        method::ALLOCATE => {
                            w.requested_transport(if arg & 0x80 != 0 { 6 } else { 17 })?;
                            if arg & 0x40 != 0 {
                                w.attr(attr::EVEN_PORT, &[0x80])?;
                            }
                            if arg & 0x20 != 0 {
                                w.attr(attr::ADDITIONAL_ADDRESS_FAMILY, &[2, 0, 0, 0])?;
                            }
                        }
                        method::REFRESH => w.lifetime(u32::from(arg) * 10)?,
                        method::CREATE_PERMISSION => w.xor_address(attr::XOR_PEER_ADDRESS, peer)?,
                        method::CHANNEL_BIND => {
                            w.channel_number(0x3FF0 + u16::from(arg) * 0x41)?;
                            w.xor_address(attr::XOR_PEER_ADDRESS, peer)?;
                        }
                        method::SEND => {
                            w.xor_address(attr::XOR_PEER_ADDRESS, peer)?;
                            w.attr(attr::DATA, &[arg; 7])?;
                        }
                        _ => {}
                    }
                    if op % 5 == 1 && m != method::SEND && m != method::BINDING {
                        w.attr(attr::USERNAME, b"alice")?;
                        w.attr(attr::REALM, REALM.as_bytes())?;
                        w.attr(attr::NONCE, &nonces[k])?;
                        w.message_integrity(&key)?;
                    }
                    w.fingerprint()?;
                    Ok(w.finish())
                })()
                .unwrap_or(0);
                if let icebreaker_turn::ClientOutput::Reply(n) =
                    server.handle_client(now, tuples[k], &req[..len], &mut out, &mut relays)
                {
                    if let Ok(msg) = Message::parse(&out[..n]) {
                        if let Ok(Some(nonce)) = msg.nonce() {
                            nonces[k] = nonce.to_vec();
                        }
                    }
                }
            }
            3 => {
                // Data from a peer on some relay.
                let relay = RelayId(u32::from(inp.byte().unwrap_or(0) % 16));
                let peer: SocketAddr = PEERS[k].parse().expect("peer");
                let len = inp.byte().unwrap_or(0) as usize;
                let payload = inp.bytes(len).to_vec();
                buf[PEER_HEADROOM..PEER_HEADROOM + payload.len()].copy_from_slice(&payload);
                if let Some(o) = server.handle_peer(now, relay, peer, &mut buf, payload.len()) {
                    assert!(o.range.end <= buf.len());
                }
            }
            _ => {
                secs += u64::from(inp.byte().unwrap_or(0)) * 5;
                let now = Now {
                    mono: start + Duration::from_secs(secs),
                    unix: 1_700_000_000 + secs,
                };
                server.handle_timeout(now, &mut relays);
            }
        }
        assert!(server.allocation_count() <= 3);
    }
    server.clear(&mut relays);
    assert!(relays.live.is_empty(), "relays leaked: {:?}", relays.live);
});
