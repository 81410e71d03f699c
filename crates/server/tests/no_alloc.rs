//! The relay path of the running server allocates nothing per packet: a counting global allocator
//! around 10,000 ChannelData round trips (client → server → echo peer → server → client), over
//! UDP and TCP, and around 10,000 STUN Binding requests.
#![allow(unsafe_code)] // a GlobalAlloc wrapper needs it; the server itself forbids unsafe code.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use icebreaker::client::turn::{AllocateOptions, Incoming, Transport, TurnClient};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

async fn round_trips(c: &mut TurnClient, n: usize, payload: &[u8]) {
    for _ in 0..n {
        c.send_channel_data(0x4000, payload).await.expect("send");
        loop {
            match c.recv_timeout(Duration::from_secs(2)).await.expect("recv") {
                Some(Incoming::ChannelData { data, .. }) => {
                    assert_eq!(data.len(), payload.len());
                    break;
                }
                Some(_) => continue,
                None => panic!("echo lost"),
            }
        }
    }
}

async fn bindings(
    sock: &tokio::net::UdpSocket,
    req: &[u8],
    server: std::net::SocketAddr,
    n: usize,
) {
    let mut resp = [0u8; 256];
    for _ in 0..n {
        sock.send_to(req, server).await.expect("send");
        let got = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut resp))
            .await
            .expect("binding answered")
            .expect("recv");
        assert!(got >= 20);
    }
}

#[test]
fn relayed_channel_data_allocates_nothing_per_packet() {
    // One worker thread: the runtime is the server's and the client's; nothing else runs.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let srv = server(config(true)).await;
        let peer = echo_peer(usize::MAX);
        for transport in [Transport::Udp, Transport::Tcp] {
            let mut c = TurnClient::connect(srv.turn[0], options(transport, Some(static_creds())))
                .await
                .expect("connect");
            c.allocate(&AllocateOptions::default())
                .await
                .expect("allocate");
            c.channel_bind(0x4000, peer).await.expect("bind");
            let payload = [0x5a; 160];
            round_trips(&mut c, 500, &payload).await; // warm-up
            let before = ALLOCS.load(Ordering::Relaxed);
            const N: usize = 10_000;
            round_trips(&mut c, N, &payload).await;
            let allocs = ALLOCS.load(Ordering::Relaxed) - before;
            eprintln!("{transport:?}: {allocs} heap allocations in {N} relayed round trips");
            // The once-a-second timer may allocate a few times while this runs; per packet the
            // count must be zero.
            assert!(
                allocs < 20,
                "{transport:?}: {allocs} allocations for {N} round trips"
            );
            c.refresh(0).await.expect("delete");
        }

        // STUN Binding: a prebuilt request over a plain socket (the test side allocates nothing).
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut req = [0u8; 28];
        let len = {
            let typ = icebreaker_stun::MessageType::new(
                icebreaker_stun::method::BINDING,
                icebreaker_stun::Class::Request,
            );
            let mut w = icebreaker_stun::MessageWriter::new(&mut req, typ, &[7; 12]).expect("w");
            w.fingerprint().expect("fingerprint");
            w.finish()
        };
        let req = &req[..len];
        bindings(&sock, req, srv.turn[0], 500).await;
        let before = ALLOCS.load(Ordering::Relaxed);
        bindings(&sock, req, srv.turn[0], 10_000).await;
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        eprintln!("STUN Binding: {allocs} heap allocations in 10000 requests");
        assert!(
            allocs < 20,
            "{allocs} allocations for 10000 Binding requests"
        );
        srv.shutdown().await;
    });
}
