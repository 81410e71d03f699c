//! Proves that parse / getters / verify / write do not touch the heap.
#![allow(unsafe_code, clippy::unwrap_used)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use icebreaker_stun::{
    attr, long_term_key, rest_password, stream_frame_len, write_channel_data_header, ChannelData,
    Class, Message, MessageType, MessageWriter,
};

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: forwards to the system allocator; only counts (per thread) while enabled.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = COUNTING.try_with(|c| {
            if c.get() {
                let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
            }
        });
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count<R>(f: impl FnOnce() -> R) -> (R, usize) {
    ALLOCS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, ALLOCS.with(|a| a.get()))
}

#[test]
fn hot_paths_do_not_allocate() {
    // The counter works.
    let (_, allocs) = count(|| std::hint::black_box(vec![1u8; 3]));
    assert_eq!(allocs, 1);
    let mut buf = [0u8; 512];
    let tid = [5u8; 12];
    let key = [7u8; 16];
    let (n, allocs) = count(|| {
        let key = long_term_key("user", "realm", "pass");
        let mut w =
            MessageWriter::new(&mut buf, MessageType::new(3, Class::Request), &tid).unwrap();
        w.attr(attr::USERNAME, b"user").unwrap();
        w.xor_address(attr::XOR_PEER_ADDRESS, "[2001:db8::1]:9".parse().unwrap())
            .unwrap();
        w.address(attr::MAPPED_ADDRESS, "1.2.3.4:5".parse().unwrap())
            .unwrap();
        w.error_code(401, "Unauthorized").unwrap();
        w.unknown_attributes(&[1, 2]).unwrap();
        w.lifetime(600).unwrap();
        w.attr_slot(attr::DATA, 10).unwrap().fill(1);
        w.message_integrity(&key).unwrap();
        w.message_integrity_sha256(&key).unwrap();
        w.fingerprint().unwrap();
        w.finish()
    });
    assert_eq!(allocs, 0, "writer allocated");

    let (_, allocs) = count(|| {
        let m = Message::parse(&buf[..n]).unwrap();
        common::exercise(&m);
        assert!(m.verify_integrity(&key).is_err());
        assert!(m.check_fingerprint());
        for v in [
            common::RFC5769_REQUEST,
            common::RFC5769_IPV6_RESPONSE,
            common::RFC5769_LONG_TERM_REQUEST,
        ] {
            let m = Message::parse(v).unwrap();
            common::exercise(&m);
            let _ = m.verify_integrity(common::SHORT_TERM_PASSWORD.as_bytes());
        }
        let mut out = [0u8; 28];
        let _ = rest_password(b"s3cret", "1735689600:alice", &mut out);
        let mut cd = [0u8; 8];
        write_channel_data_header(&mut cd, 0x4000, 4).unwrap();
        let _ = ChannelData::parse(&cd).unwrap();
        let _ = stream_frame_len(&cd);
    });
    assert_eq!(allocs, 0, "parse/verify allocated");
}
