//! `bench stun`: closed-loop STUN Binding load.
//!
//! Every generator thread owns `sockets` connected UDP sockets (several, so that a server with
//! `SO_REUSEPORT` listeners sees several 5-tuples) and keeps `window` requests in flight, spread
//! over its sockets. A response frees its slot and the next request goes out at once (batched
//! with `sendmmsg` per socket); a request unanswered for `timeout` counts as a timeout and is
//! replaced. The transaction ID carries the slot and a sequence number, the send time stays in
//! the slot, so matching is an array lookup and nothing is allocated per request.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use icebreaker_stun::{self as codec, method, Class, Message, MessageType, MessageWriter};
use serde::Serialize;

use super::hist::Histogram;
use super::setup;
use crate::sys::{self, Batch, Epoll};

/// Settings of a `bench stun` run.
#[derive(Clone, Debug)]
pub struct StunBench {
    /// The STUN server.
    pub server: SocketAddr,
    /// How long to send.
    pub duration: Duration,
    /// Requests in flight per thread.
    pub window: usize,
    /// Generator threads.
    pub threads: usize,
    /// Sockets per thread.
    pub sockets: usize,
    /// When an unanswered request counts as lost.
    pub timeout: Duration,
    /// Process ID of a local server whose CPU and memory the report includes.
    pub server_pid: Option<u32>,
}

/// Report of a `bench stun` run.
#[derive(Clone, Debug, Serialize)]
pub struct StunReport {
    /// The server.
    pub server: SocketAddr,
    /// Generator threads.
    pub threads: usize,
    /// Requests in flight per thread.
    pub window: usize,
    /// Seconds measured.
    pub duration_s: f64,
    /// Requests sent.
    pub sent: u64,
    /// Success responses.
    pub responses: u64,
    /// Success responses per second.
    pub responses_per_s: f64,
    /// Error responses and malformed answers.
    pub errors: u64,
    /// Requests unanswered within the timeout.
    pub timeouts: u64,
    /// RTT median, microseconds.
    pub rtt_p50_us: f64,
    /// RTT 99th percentile, microseconds.
    pub rtt_p99_us: f64,
    /// Largest RTT, microseconds.
    pub rtt_max_us: f64,
    /// CPU used by the generator, percent of one core.
    pub generator_cpu_pct: f64,
    /// CPU of the server process (`server_pid`), percent of one core.
    pub server_cpu_pct: Option<f64>,
    /// Resident memory of the server process at the end, KiB.
    pub server_rss_kib: Option<u64>,
}

#[derive(Default)]
struct Stats {
    sent: u64,
    responses: u64,
    errors: u64,
    timeouts: u64,
    hist: Histogram,
}

#[derive(Clone, Copy)]
struct Slot {
    seq: u64,
    sent_ns: u64,
}

/// Run `bench stun`.
pub fn run_stun(cfg: &StunBench) -> anyhow::Result<StunReport> {
    if cfg.duration.is_zero() || cfg.duration > Duration::from_secs(3600) {
        bail!("--duration must be 1..=3600 seconds");
    }
    if cfg.window == 0 || cfg.window > 4096 {
        bail!("--window must be 1..=4096");
    }
    let threads = cfg.threads.max(1);
    let sockets = cfg.sockets.clamp(1, cfg.window);
    let local = setup::local_ip_towards(cfg.server)
        .with_context(|| format!("no local address towards {}", cfg.server))?;
    let mut all: Vec<Vec<UdpSocket>> = Vec::new();
    for _ in 0..threads {
        let mut v = Vec::new();
        for _ in 0..sockets {
            let s = setup::udp_socket(local, Some(cfg.server))?;
            s.set_nonblocking(true)?;
            v.push(s);
        }
        all.push(v);
    }
    let cpu_before = sys::process_cpu_time();
    let server_before = cfg.server_pid.and_then(sys::pid_cpu_time);
    let epoch = Instant::now();
    let end = epoch + cfg.duration;
    let mut total = Stats::default();
    let mut error = None;
    std::thread::scope(|s| {
        let handles: Vec<_> = all
            .iter()
            .map(|socks| s.spawn(move || worker(socks, cfg.window, cfg.timeout, epoch, end)))
            .collect();
        for h in handles {
            match h.join() {
                Ok(Ok(st)) => {
                    total.sent += st.sent;
                    total.responses += st.responses;
                    total.errors += st.errors;
                    total.timeouts += st.timeouts;
                    total.hist.merge(&st.hist);
                }
                Ok(Err(e)) => error = Some(e),
                Err(_) => error = Some(anyhow!("a generator thread panicked")),
            }
        }
    });
    if let Some(e) = error {
        return Err(e);
    }
    let wall = epoch.elapsed();
    let server_cpu_pct = match (server_before, cfg.server_pid.and_then(sys::pid_cpu_time)) {
        (Some(a), Some(b)) => {
            Some(b.saturating_sub(a).as_secs_f64() * 100.0 / wall.as_secs_f64().max(1e-9))
        }
        _ => None,
    };
    let server_rss_kib = cfg.server_pid.and_then(sys::pid_rss_kib);
    let secs = cfg.duration.as_secs_f64();
    let cpu = sys::process_cpu_time().saturating_sub(cpu_before);
    if total.responses == 0 && total.timeouts > 0 {
        bail!(
            "no answer from {} ({} requests timed out): is a STUN server listening there?",
            cfg.server,
            total.timeouts
        );
    }
    Ok(StunReport {
        server: cfg.server,
        threads,
        window: cfg.window,
        duration_s: secs,
        sent: total.sent,
        responses: total.responses,
        responses_per_s: total.responses as f64 / secs,
        errors: total.errors,
        timeouts: total.timeouts,
        rtt_p50_us: total.hist.percentile(50.0) as f64 / 1000.0,
        rtt_p99_us: total.hist.percentile(99.0) as f64 / 1000.0,
        rtt_max_us: total.hist.max() as f64 / 1000.0,
        generator_cpu_pct: cpu.as_secs_f64() * 100.0 / wall.as_secs_f64().max(1e-9),
        server_cpu_pct,
        server_rss_kib,
    })
}

/// Encode a Binding request for (socket, slot, seq) into `buf`; returns its length.
fn encode(buf: &mut [u8], sock: u16, slot: u16, seq: u64) -> usize {
    let mut tid = [0u8; 12];
    tid[0..2].copy_from_slice(&sock.to_be_bytes());
    tid[2..4].copy_from_slice(&slot.to_be_bytes());
    tid[4..12].copy_from_slice(&seq.to_be_bytes());
    match MessageWriter::new(buf, MessageType::new(method::BINDING, Class::Request), &tid) {
        Ok(w) => w.finish(),
        Err(_) => 0,
    }
}

fn worker(
    socks: &[UdpSocket],
    window: usize,
    timeout: Duration,
    epoch: Instant,
    end: Instant,
) -> anyhow::Result<Stats> {
    let mut st = Stats::default();
    let ns = socks.len();
    let per = window.div_ceil(ns);
    let mut slots: Vec<Vec<Slot>> = (0..ns)
        .map(|k| {
            let n = (window / ns + usize::from(k < window % ns)).max(1).min(per);
            vec![Slot { seq: 0, sent_ns: 0 }; n]
        })
        .collect();
    let mut ep = Epoll::new(64)?;
    for (k, s) in socks.iter().enumerate() {
        ep.add(s.as_raw_fd(), k as u64)?;
    }
    let mut rb = Batch::new(sys::MAX_BATCH, 1500);
    let mut sb = Batch::new(sys::MAX_BATCH, 64);
    let mut seq = 1u64;
    let now_ns = || (Instant::now() - epoch).as_nanos() as u64;
    // Fill the window.
    for (k, sock) in socks.iter().enumerate() {
        let t = now_ns();
        let mut m = 0;
        for (j, slot) in slots[k].iter_mut().enumerate() {
            *slot = Slot { seq, sent_ns: t };
            let len = encode(sb.slot_mut(m), k as u16, j as u16, seq);
            sb.set_len(m, len);
            seq += 1;
            m += 1;
            if m == sb.capacity() {
                st.sent += sb.send(sock.as_raw_fd(), m, false).0 as u64;
                m = 0;
            }
        }
        st.sent += sb.send(sock.as_raw_fd(), m, false).0 as u64;
    }
    let timeout_ns = timeout.as_nanos() as u64;
    let mut next_sweep = Instant::now() + Duration::from_millis(100);
    while Instant::now() < end && !sys::interrupted() {
        let ready = ep.wait(10)?;
        for e in 0..ready {
            let k = ep.token(e) as usize;
            let Some(sock) = socks.get(k) else { continue };
            let got = rb.recv(sock.as_raw_fd(), sys::MAX_BATCH).unwrap_or(0);
            if got == 0 {
                continue;
            }
            let t = now_ns();
            let mut m = 0;
            for i in 0..got {
                let buf = rb.msg(i);
                if !codec::is_stun(buf) {
                    st.errors += 1;
                    continue;
                }
                let Ok(msg) = Message::parse(buf) else {
                    st.errors += 1;
                    continue;
                };
                let tid = msg.transaction_id();
                let s_idx = u16::from_be_bytes([tid[0], tid[1]]) as usize;
                let j = u16::from_be_bytes([tid[2], tid[3]]) as usize;
                let mut q = [0u8; 8];
                q.copy_from_slice(&tid[4..12]);
                let rseq = u64::from_be_bytes(q);
                if s_idx != k || msg.method() != method::BINDING {
                    st.errors += 1;
                    continue;
                }
                let Some(slot) = slots[k].get_mut(j) else {
                    st.errors += 1;
                    continue;
                };
                if slot.seq != rseq {
                    continue; // answer to a request already given up on
                }
                match msg.class() {
                    Class::Success => {
                        st.responses += 1;
                        st.hist.record(t.saturating_sub(slot.sent_ns));
                    }
                    _ => st.errors += 1,
                }
                *slot = Slot { seq, sent_ns: t };
                let len = encode(sb.slot_mut(m), k as u16, j as u16, seq);
                sb.set_len(m, len);
                seq += 1;
                m += 1;
            }
            if m > 0 && Instant::now() < end {
                st.sent += sb.send(sock.as_raw_fd(), m, false).0 as u64;
            }
        }
        if Instant::now() >= next_sweep {
            next_sweep += Duration::from_millis(100);
            let t = now_ns();
            for (k, sock) in socks.iter().enumerate() {
                let mut m = 0;
                for (j, slot) in slots[k].iter_mut().enumerate() {
                    if t.saturating_sub(slot.sent_ns) > timeout_ns && m < sb.capacity() {
                        st.timeouts += 1;
                        *slot = Slot { seq, sent_ns: t };
                        let len = encode(sb.slot_mut(m), k as u16, j as u16, seq);
                        sb.set_len(m, len);
                        seq += 1;
                        m += 1;
                    }
                }
                if m > 0 {
                    st.sent += sb.send(sock.as_raw_fd(), m, false).0 as u64;
                }
            }
        }
    }
    Ok(st)
}
