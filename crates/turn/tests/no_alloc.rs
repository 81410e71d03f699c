//! The packet path allocates nothing: after warm-up, client ChannelData / Send indications →
//! `Forward`, and peer datagrams → ChannelData / Data indications perform zero heap allocations.
//!
//! A counting global allocator counts allocations made by the current thread only (thread-local
//! counter), so the test harness's own threads cannot disturb the measurement.

#![allow(unsafe_code, clippy::unwrap_used)]

#[path = "common/mod.rs"]
mod common;

use common::*;
use icebreaker_turn::{ClientOutput, RelayId, Transport, PEER_HEADROOM};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn bump() {
    // `try_with`: the thread-local may already be gone while a thread shuts down.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(Cell::get)
}

const N: usize = 10_000;

struct Setup {
    env: Env,
    client: Client,
    relay: RelayId,
}

/// An allocation with a permission for PEER's IP and a channel 0x4001 to PEER.
fn setup(transport: Transport) -> Setup {
    let mut env = Env::new();
    let mut client = Client::new("203.0.113.50:40000", transport, "alice", "alice-pw");
    let (relay, _) = env.allocate_relay(&mut client);
    env.create_permission(&mut client, sa(PEER))
        .assert_success();
    env.channel_bind(&mut client, 0x4001, sa(PEER))
        .assert_success();
    // A few more allocations so the maps are not trivially small.
    for i in 0..20 {
        let mut c = Client::bob(&format!("203.0.113.60:{}", 41000 + i));
        env.allocate(&mut c);
    }
    Setup { env, client, relay }
}

/// Run `f` N times after a warm-up and return the allocations made during the N runs.
fn count(mut f: impl FnMut(usize)) -> u64 {
    for i in 0..100 {
        f(i);
    }
    let before = allocations();
    for i in 0..N {
        f(i);
    }
    allocations() - before
}

#[test]
fn counter_works() {
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 64]);
    assert!(allocations() > before);
    drop(v);
}

#[test]
fn packet_path_performs_no_heap_allocation() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let Setup {
            mut env,
            client,
            relay,
        } = setup(transport);
        let tuple = client.tuple;
        let now = env.now;
        let mut out = vec![0u8; 1500];

        // Client ChannelData -> Forward.
        let packet = channel_data(0x4001, &[0x5A; 160]);
        let mut forwarded = 0usize;
        let n = count(|_| {
            match env
                .server
                .handle_client(now, tuple, &packet, &mut out, &mut env.relays)
            {
                ClientOutput::Forward { relay: r, data, .. } => {
                    assert_eq!(r, relay);
                    forwarded += data.len();
                }
                _ => panic!("not forwarded"),
            }
        });
        assert_eq!(
            n, 0,
            "{transport:?}: client ChannelData allocated {n} times"
        );
        assert_eq!(forwarded, (N + 100) * 160);

        // Client Send indication -> Forward.
        let packet = send_indication(sa(PEER), &[0x5B; 160]);
        let n = count(|_| {
            let r = env
                .server
                .handle_client(now, tuple, &packet, &mut out, &mut env.relays);
            assert!(matches!(r, ClientOutput::Forward { .. }));
        });
        assert_eq!(n, 0, "{transport:?}: Send indication allocated {n} times");

        // Peer datagram with a channel -> ChannelData.
        let len = 161;
        let mut buf = vec![0u8; PEER_HEADROOM + len + 3];
        let n = count(|i| {
            buf[PEER_HEADROOM] = i as u8;
            let o = env
                .server
                .handle_peer(now, relay, sa(PEER), &mut buf, len)
                .expect("delivered");
            assert_eq!(buf[o.range.start], 0x40);
        });
        assert_eq!(
            n, 0,
            "{transport:?}: peer -> ChannelData allocated {n} times"
        );

        // Peer datagram without a channel (other port) -> Data indication.
        let n = count(|_| {
            let o = env
                .server
                .handle_peer(now, relay, sa("198.51.100.7:9"), &mut buf, len)
                .expect("delivered");
            assert_eq!(buf[o.range.start], 0x00);
        });
        assert_eq!(
            n, 0,
            "{transport:?}: peer -> Data indication allocated {n} times"
        );

        // Dropped packets allocate nothing either.
        let garbage = [0x40u8, 0x01, 0xFF, 0xFF, 1, 2, 3];
        let n = count(|_| {
            let r = env
                .server
                .handle_client(now, tuple, &garbage, &mut out, &mut env.relays);
            assert!(matches!(r, ClientOutput::None));
            assert!(env
                .server
                .handle_peer(now, relay, sa(PEER2), &mut buf, len)
                .is_none());
        });
        assert_eq!(n, 0, "{transport:?}: drops allocated {n} times");
    }
}
