//! Property tests: random bytes and random sequences of valid-ish requests from several
//! 5-tuples with advancing time never panic, keep the quotas, and leak no relays.

use crate::common::*;
use icebreaker_stun::method;
use icebreaker_turn::{Family, RelayId, Transport, PEER_HEADROOM};
use proptest::prelude::*;

const MAX_ALLOCATIONS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Garbage {
        client: usize,
        bytes: Vec<u8>,
    },
    Mutated {
        client: usize,
        pos: usize,
        byte: u8,
    },
    Allocate {
        client: usize,
        lifetime: Option<u32>,
        even: Option<bool>,
        fam: u8,
        tid_reuse: bool,
    },
    Refresh {
        client: usize,
        lifetime: Option<u32>,
    },
    Permission {
        client: usize,
        peer: usize,
    },
    ChannelBind {
        client: usize,
        number: u16,
        peer: usize,
    },
    ChannelData {
        client: usize,
        number: u16,
        len: usize,
    },
    Send {
        client: usize,
        peer: usize,
        len: usize,
    },
    Peer {
        relay: u32,
        from: usize,
        len: usize,
    },
    Unauthenticated {
        client: usize,
        method: u16,
    },
    Advance(u16),
    Close(usize),
}

const PEERS: [&str; 8] = [
    PEER,
    PEER2,
    PEER6,
    "127.0.0.1:50002",
    "10.0.0.1:1",
    "[::ffff:127.0.0.1]:9",
    "192.0.2.1:3478",
    "127.0.0.1:50003",
];

fn clients() -> Vec<Client> {
    vec![
        Client::alice("203.0.113.50:40000"),
        Client::alice("203.0.113.50:40001"),
        Client::bob("203.0.113.51:40000"),
        Client::new("203.0.113.52:40000", Transport::Tcp, "bob", "bob-pw"),
        Client::rest("[2001:db8::5]:40000", UNIX_START + 500, "carol", SECRET),
        Client::alice("[2001:db8::6]:40000"),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..6usize;
    let lifetime = prop_oneof![Just(None), (0u32..5000).prop_map(Some)];
    prop_oneof![
        (c.clone(), proptest::collection::vec(any::<u8>(), 0..80))
            .prop_map(|(client, bytes)| Op::Garbage { client, bytes }),
        (c.clone(), 0..200usize, any::<u8>()).prop_map(|(client, pos, byte)| Op::Mutated {
            client,
            pos,
            byte
        }),
        (
            c.clone(),
            lifetime.clone(),
            prop_oneof![Just(None), any::<bool>().prop_map(Some)],
            0u8..4,
            any::<bool>()
        )
            .prop_map(|(client, lifetime, even, fam, tid_reuse)| Op::Allocate {
                client,
                lifetime,
                even,
                fam,
                tid_reuse
            }),
        (c.clone(), lifetime).prop_map(|(client, lifetime)| Op::Refresh { client, lifetime }),
        (c.clone(), 0..PEERS.len()).prop_map(|(client, peer)| Op::Permission { client, peer }),
        (c.clone(), 0x3FFEu16..0x4004, 0..PEERS.len()).prop_map(|(client, number, peer)| {
            Op::ChannelBind {
                client,
                number,
                peer,
            }
        }),
        (c.clone(), 0x3FFEu16..0x4004, 0..40usize).prop_map(|(client, number, len)| {
            Op::ChannelData {
                client,
                number,
                len,
            }
        }),
        (c.clone(), 0..PEERS.len(), 0..40usize).prop_map(|(client, peer, len)| Op::Send {
            client,
            peer,
            len
        }),
        (0u32..12, 0..PEERS.len(), 0..100usize).prop_map(|(relay, from, len)| Op::Peer {
            relay,
            from,
            len
        }),
        (
            c.clone(),
            prop_oneof![
                Just(method::ALLOCATE),
                Just(method::REFRESH),
                Just(method::CHANNEL_BIND),
                Just(0x0FFFu16)
            ]
        )
            .prop_map(|(client, method)| Op::Unauthenticated { client, method }),
        (0u16..400).prop_map(Op::Advance),
        c.prop_map(Op::Close),
    ]
}

struct World {
    env: Env,
    clients: Vec<Client>,
    last_allocate: Vec<Option<Req>>,
}

impl World {
    fn new() -> Self {
        let mut cfg = config();
        cfg.max_allocations = MAX_ALLOCATIONS;
        cfg.max_allocations_per_user = 2;
        World {
            env: Env::with(cfg),
            clients: clients(),
            last_allocate: vec![None; 6],
        }
    }

    fn signed(&mut self, i: usize, req: impl Fn(&Client) -> Req) {
        let c = &mut self.clients[i];
        let r = self.env.signed(c, req);
        // Every answer is a well-formed STUN response with a valid FINGERPRINT.
        assert!(r.msg().check_fingerprint());
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Garbage { client, bytes } => {
                let t = self.clients[client].tuple;
                let _ = self.env.raw(t, &bytes);
            }
            Op::Mutated { client, pos, byte } => {
                let c = &mut self.clients[client];
                if c.nonce.is_none() {
                    self.env.challenge(c);
                }
                let c = &self.clients[client];
                let mut bytes = c
                    .req(method::CHANNEL_BIND)
                    .channel(0x4000)
                    .peer(sa(PEER))
                    .encode();
                let p = pos % bytes.len();
                bytes[p] = byte;
                let t = c.tuple;
                let _ = self.env.raw(t, &bytes);
                let _ = self.env.raw(t, &bytes[..p]);
            }
            Op::Allocate {
                client,
                lifetime,
                even,
                fam,
                tid_reuse,
            } => {
                if tid_reuse {
                    if let Some(req) = self.last_allocate[client].clone() {
                        let t = self.clients[client].tuple;
                        let _ = self.env.raw(t, &req.encode());
                        return;
                    }
                }
                let build = move |c: &Client| {
                    let mut r = c.allocate_req();
                    if let Some(l) = lifetime {
                        r = r.lifetime(l);
                    }
                    if let Some(e) = even {
                        r = r.even_port(e);
                    }
                    match fam {
                        1 => r.family(Family::V6),
                        2 => r.additional_family(Family::V6),
                        _ => r,
                    }
                };
                let c = &mut self.clients[client];
                if c.nonce.is_none() {
                    self.env.challenge(c);
                }
                self.last_allocate[client] = Some(build(&self.clients[client]));
                self.signed(client, build);
            }
            Op::Refresh { client, lifetime } => self.signed(client, |c| {
                let r = c.req(method::REFRESH);
                match lifetime {
                    Some(l) => r.lifetime(l),
                    None => r,
                }
            }),
            Op::Permission { client, peer } => self.signed(client, |c| {
                c.req(method::CREATE_PERMISSION).peer(sa(PEERS[peer]))
            }),
            Op::ChannelBind {
                client,
                number,
                peer,
            } => self.signed(client, |c| {
                c.req(method::CHANNEL_BIND)
                    .channel(number)
                    .peer(sa(PEERS[peer]))
            }),
            Op::ChannelData {
                client,
                number,
                len,
            } => {
                let t = self.clients[client].tuple;
                let _ = self.env.raw(t, &channel_data(number, &vec![0xAB; len]));
            }
            Op::Send { client, peer, len } => {
                let t = self.clients[client].tuple;
                let _ = self
                    .env
                    .raw(t, &send_indication(sa(PEERS[peer]), &vec![1; len]));
            }
            Op::Peer { relay, from, len } => {
                let mut buf = vec![0u8; PEER_HEADROOM + len + 3];
                let env = &mut self.env;
                if let Some(out) =
                    env.server
                        .handle_peer(env.now, RelayId(relay), sa(PEERS[from]), &mut buf, len)
                {
                    let bytes = &buf[out.range];
                    assert!(
                        icebreaker_stun::is_channel_data(bytes)
                            || icebreaker_stun::Message::parse(bytes).is_ok()
                    );
                }
            }
            Op::Unauthenticated { client, method } => {
                let t = self.clients[client].tuple;
                let _ = self.env.raw(t, &Req::request(method).udp().encode());
            }
            Op::Advance(secs) => {
                self.env.advance(u64::from(secs));
                self.env
                    .server
                    .handle_timeout(self.env.now, &mut self.env.relays);
            }
            Op::Close(client) => {
                let t = self.clients[client].tuple;
                self.env.server.client_closed(&t, &mut self.env.relays);
            }
        }
    }

    fn check(&self) {
        let s = &self.env.server;
        assert!(s.allocation_count() <= MAX_ALLOCATIONS);
        assert_eq!(s.stats().allocations as usize, s.allocation_count());
        // Every relay of a live allocation is bound at the provider.
        let mut owned = 0;
        for c in &self.clients {
            for (id, addr) in s.relays_of(&c.tuple) {
                assert_eq!(self.env.relays.addr_of(id), Some(addr));
                owned += 1;
            }
        }
        // Live relays = allocations' relays + reservations (EVEN-PORT R): at most one each.
        assert!(self.env.relays.live.len() >= owned);
        assert!(self.env.relays.live.len() <= owned + 2 * MAX_ALLOCATIONS + 6);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(
        packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 1..40),
        lead in prop_oneof![Just(None), (0x40u8..0x50).prop_map(Some), Just(Some(0u8))],
    ) {
        let mut w = World::new();
        // One real allocation with a channel, so ChannelData can reach deep code.
        w.apply(Op::Allocate { client: 0, lifetime: None, even: None, fam: 0, tid_reuse: false });
        w.apply(Op::ChannelBind { client: 0, number: 0x4000, peer: 0 });
        for mut p in packets {
            if let (Some(b), Some(first)) = (lead, p.first_mut()) {
                *first = b;
            }
            for c in 0..6 {
                let t = w.clients[c].tuple;
                let _ = w.env.raw(t, &p);
            }
            let relay = w.env.server.relays_of(&w.clients[0].tuple).next().map(|r| r.0);
            if let Some(relay) = relay {
                let mut buf = vec![0u8; PEER_HEADROOM + p.len() + 3];
                buf[PEER_HEADROOM..PEER_HEADROOM + p.len()].copy_from_slice(&p);
                let now = w.env.now;
                let _ = w.env.server.handle_peer(now, relay, sa(PEER), &mut buf, p.len());
            }
            w.check();
        }
    }

    #[test]
    fn random_request_sequences_keep_invariants(ops in proptest::collection::vec(op(), 1..60)) {
        let mut w = World::new();
        for op in ops {
            w.apply(op);
            w.check();
        }
        // Shutting down releases every relay and reservation: nothing leaks.
        w.env.server.clear(&mut w.env.relays);
        prop_assert!(w.env.relays.live.is_empty(), "leaked relays: {:?}", w.env.relays.live);
        prop_assert_eq!(w.env.server.allocation_count(), 0);
    }

    #[test]
    fn everything_expires_eventually(ops in proptest::collection::vec(op(), 1..40)) {
        let mut w = World::new();
        for op in ops {
            w.apply(op);
        }
        // Past the longest lifetime and reservation, with the timer running.
        w.env.advance(3601);
        let now = w.env.now;
        w.env.server.handle_timeout(now, &mut w.env.relays);
        prop_assert_eq!(w.env.server.allocation_count(), 0);
        prop_assert!(w.env.relays.live.is_empty(), "leaked relays: {:?}", w.env.relays.live);
    }
}
