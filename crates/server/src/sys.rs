//! The few Linux system calls that std and socket2 do not offer, for the UDP data plane and the
//! load generator:
//! `recvmmsg`/`sendmmsg` (many datagrams per system call), `epoll` (one thread waiting on many
//! client sockets), `getrusage` (our own CPU time) and a SIGINT/SIGTERM flag.
//!
//! This is the only module of the server crate with `unsafe` code. Every `unsafe` block is a single
//! FFI call (or the zero-initialisation of a plain C struct) whose pointer arguments point into
//! buffers owned by the caller for the duration of the call; lengths passed to the kernel never
//! exceed the buffers they describe. The kernel writes at most `msg_namelen` bytes of address and
//! `iov_len` bytes of data per message.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const STORAGE_LEN: libc::socklen_t = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;

/// Largest number of datagrams moved by one `recvmmsg`/`sendmmsg` call.
pub const MAX_BATCH: usize = 64;

/// A set of datagram buffers, lengths and addresses for `recvmmsg`/`sendmmsg`.
///
/// The C descriptors (`mmsghdr`, `iovec`) are rebuilt before every call from the owned buffers,
/// so no pointer outlives the call that uses it.
pub struct Batch {
    slot: usize,
    data: Box<[u8]>,
    /// Where datagram `i` starts inside its slot.
    offs: Box<[usize]>,
    lens: Box<[usize]>,
    /// Datagram `i` was longer than its buffer (`MSG_TRUNC`).
    truncated: Box<[bool]>,
    names: Box<[libc::sockaddr_storage]>,
    namelens: Box<[libc::socklen_t]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// Receive descriptors: `rhdrs[i]` always describes buffer `i` (address `names[i]`, data
    /// `riovs[i]`), so a receive only passes a pointer; the kernel's outputs are reset after each
    /// receive. Pointers go into boxed slices that are never reallocated, so they stay valid when
    /// the `Batch` moves.
    rhdrs: Box<[libc::mmsghdr]>,
    riovs: Box<[libc::iovec]>,
    /// (headroom, tailroom) that `riovs` are laid out for.
    layout: Option<(usize, usize)>,
}

// SAFETY: the raw pointers inside `iovs`, `hdrs`, `riovs` and `rhdrs` point only into the boxed
// slices owned by this Batch (whose heap memory never moves), and are only dereferenced by the
// kernel during calls made through `&mut self`; moving the Batch to another thread keeps them
// valid.
unsafe impl Send for Batch {}

impl Batch {
    /// `n` (at most [`MAX_BATCH`]) buffers of `slot` bytes each.
    pub fn new(n: usize, slot: usize) -> Batch {
        let n = n.clamp(1, MAX_BATCH);
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all-zero
        // bytes are a valid value (null pointers, zero lengths).
        let zero_name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let zero_iov: libc::iovec = unsafe { mem::zeroed() };
        let zero_hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        let mut names = vec![zero_name; n].into_boxed_slice();
        let mut riovs = vec![zero_iov; n].into_boxed_slice();
        let mut rhdrs = vec![zero_hdr; n].into_boxed_slice();
        for i in 0..n {
            let h = &mut rhdrs[i].msg_hdr;
            h.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = STORAGE_LEN;
            h.msg_iov = &mut riovs[i];
            h.msg_iovlen = 1;
        }
        Batch {
            slot,
            data: vec![0u8; n * slot].into_boxed_slice(),
            offs: vec![0usize; n].into_boxed_slice(),
            lens: vec![0usize; n].into_boxed_slice(),
            truncated: vec![false; n].into_boxed_slice(),
            names,
            namelens: vec![0; n].into_boxed_slice(),
            iovs: vec![zero_iov; n].into_boxed_slice(),
            hdrs: vec![zero_hdr; n].into_boxed_slice(),
            rhdrs,
            riovs,
            layout: None,
        }
    }

    /// Number of buffers.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// The whole buffer `i` (to fill before a send).
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        let s = self.slot;
        &mut self.data[i * s..(i + 1) * s]
    }

    /// The datagram in buffer `i` (after a receive, or as set with [`Batch::set_len`]).
    pub fn msg(&self, i: usize) -> &[u8] {
        let s = self.slot;
        let off = self.offs[i].min(s);
        let len = self.lens[i].min(s - off);
        &self.data[i * s + off..i * s + off + len]
    }

    /// Length of the datagram in buffer `i`.
    pub fn len(&self, i: usize) -> usize {
        self.lens[i]
    }

    /// Whether the datagram received into buffer `i` did not fit and was cut short.
    pub fn truncated(&self, i: usize) -> bool {
        self.truncated[i]
    }

    /// Set the length of the datagram in buffer `i`, starting at the buffer's beginning
    /// (clamped to the buffer size).
    pub fn set_len(&mut self, i: usize, len: usize) {
        self.offs[i] = 0;
        self.lens[i] = len.min(self.slot);
    }

    /// Make bytes `start..start + len` of buffer `i` its datagram (clamped to the buffer).
    pub fn set_range(&mut self, i: usize, start: usize, len: usize) {
        let start = start.min(self.slot);
        self.offs[i] = start;
        self.lens[i] = len.min(self.slot - start);
    }

    /// The source address of the datagram received into buffer `i` (or the destination set
    /// with [`Batch::set_addr`]).
    pub fn addr(&self, i: usize) -> Option<SocketAddr> {
        from_storage(&self.names[i])
    }

    /// Set the destination address of datagram `i` (used by `send(.., true)`).
    pub fn set_addr(&mut self, i: usize, addr: SocketAddr) {
        let (storage, len) = to_storage(addr);
        self.names[i] = storage;
        self.namelens[i] = len;
    }

    /// Receive up to `max` datagrams without blocking (`MSG_DONTWAIT`). Returns how many arrived;
    /// `Ok(0)` when none is waiting. The source address of each stays in the batch, so `send(..,
    /// true)` answers every datagram to where it came from.
    pub fn recv(&mut self, fd: RawFd, max: usize) -> io::Result<usize> {
        self.recv_flags(fd, max, libc::MSG_DONTWAIT)
    }

    /// Receive up to `max` datagrams, blocking until at least one arrives (`MSG_WAITFORONE`;
    /// the socket's receive timeout applies: `Ok(0)` when it expires).
    pub fn recv_wait(&mut self, fd: RawFd, max: usize) -> io::Result<usize> {
        self.recv_flags(fd, max, libc::MSG_WAITFORONE)
    }

    fn recv_flags(&mut self, fd: RawFd, max: usize, flags: libc::c_int) -> io::Result<usize> {
        self.recv_with(fd, 0, max, 0, 0, flags)
    }

    /// Receive up to `max` datagrams without blocking into buffers `first..`, each placed
    /// `headroom` bytes into its buffer with `tailroom` bytes left free after the longest
    /// datagram that fits (room to add headers in place). Returns how many arrived.
    pub fn recv_into(
        &mut self,
        fd: RawFd,
        first: usize,
        max: usize,
        headroom: usize,
        tailroom: usize,
    ) -> io::Result<usize> {
        self.recv_with(fd, first, max, headroom, tailroom, libc::MSG_DONTWAIT)
    }

    fn recv_with(
        &mut self,
        fd: RawFd,
        first: usize,
        max: usize,
        headroom: usize,
        tailroom: usize,
        flags: libc::c_int,
    ) -> io::Result<usize> {
        let n = max.min(self.capacity().saturating_sub(first));
        let slot = self.slot;
        let Some(room) = slot.checked_sub(headroom + tailroom) else {
            return Ok(0);
        };
        if n == 0 {
            return Ok(0);
        }
        if self.layout != Some((headroom, tailroom)) {
            let base = self.data.as_mut_ptr();
            for (i, iov) in self.riovs.iter_mut().enumerate() {
                *iov = libc::iovec {
                    // SAFETY: i < capacity and headroom + room <= slot, so the range stays
                    // inside `data`.
                    iov_base: unsafe { base.add(i * slot + headroom) }.cast(),
                    iov_len: room,
                };
            }
            self.layout = Some((headroom, tailroom));
        }
        loop {
            // SAFETY: rhdrs[first..first + n] describe buffers `first..first + n` of `room` bytes
            // and their sockaddr_storage address buffers, all owned by self and alive for the
            // call; first + n <= capacity.
            let r = unsafe {
                libc::recvmmsg(
                    fd,
                    self.rhdrs.as_mut_ptr().add(first),
                    n as libc::c_uint,
                    flags,
                    std::ptr::null_mut(),
                )
            };
            if r >= 0 {
                let got = (r as usize).min(n);
                for i in first..first + got {
                    let h = &mut self.rhdrs[i];
                    self.lens[i] = (h.msg_len as usize).min(room);
                    self.offs[i] = headroom;
                    self.namelens[i] = h.msg_hdr.msg_namelen;
                    self.truncated[i] = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                    // Ready for the next receive.
                    h.msg_hdr.msg_namelen = STORAGE_LEN;
                }
                return Ok(got);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted if interrupted() => return Ok(0),
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => return Ok(0),
                _ => return Err(e),
            }
        }
    }

    /// Send datagrams `0..n` (lengths from [`Batch::set_len`] or the receive) with as few
    /// `sendmmsg` calls as possible; to each one's address when `to_addr`, else on the connected
    /// socket. Returns (sent, failed): a datagram the kernel refuses (no buffer space, ICMP
    /// error reported on a connected socket) is skipped and counted as failed; on a non-blocking
    /// socket that is full, the rest of the batch is counted as failed.
    pub fn send(&mut self, fd: RawFd, n: usize, to_addr: bool) -> (usize, usize) {
        let n = n.min(self.capacity());
        for i in 0..n {
            self.describe_send(i, i, to_addr);
        }
        self.send_prepared(fd, n)
    }

    /// Send the datagrams in the buffers listed in `which`, each to its address (from the
    /// receive, or [`Batch::set_addr`]), with as few `sendmmsg` calls as possible. Indices past
    /// the capacity are skipped. Returns (sent, failed) as [`Batch::send`] does.
    pub fn send_some(&mut self, fd: RawFd, which: &[u16]) -> (usize, usize) {
        let mut k = 0;
        for &i in which {
            let i = usize::from(i);
            if i < self.capacity() && k < self.capacity() {
                self.describe_send(k, i, true);
                k += 1;
            }
        }
        self.send_prepared(fd, k)
    }

    /// Point send descriptor `k` at the datagram in buffer `i`, addressed to `names[i]` when
    /// `to_addr` (else to the connected peer). `k` and `i` must be below the capacity.
    fn describe_send(&mut self, k: usize, i: usize, to_addr: bool) {
        let slot = self.slot;
        let off = self.offs[i].min(slot);
        self.iovs[k] = libc::iovec {
            // SAFETY: i < capacity and off <= slot, so the offset stays inside `data`.
            iov_base: unsafe { self.data.as_mut_ptr().add(i * slot + off) }.cast(),
            iov_len: self.lens[i].min(slot - off),
        };
        let h = &mut self.hdrs[k].msg_hdr;
        if to_addr {
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = self.namelens[i];
        } else {
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
        }
        h.msg_iov = &mut self.iovs[k];
        h.msg_iovlen = 1;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        h.msg_flags = 0;
    }

    /// `sendmmsg` over `hdrs[..n]`, already filled in.
    fn send_prepared(&mut self, fd: RawFd, n: usize) -> (usize, usize) {
        let (mut sent, mut failed, mut i) = (0usize, 0usize, 0usize);
        while i < n {
            // SAFETY: hdrs[i..n] were filled above and point into buffers owned by self.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr().add(i),
                    (n - i) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                sent += r as usize;
                i += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted if !interrupted() => continue,
                io::ErrorKind::WouldBlock => {
                    failed += n - i;
                    break;
                }
                _ => {
                    // ENOBUFS, ECONNREFUSED (ICMP), ...: drop this datagram, go on.
                    failed += 1;
                    i += 1;
                }
            }
        }
        (sent, failed)
    }
}

fn to_storage(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe {
                std::ptr::write(
                    (&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>(),
                    sin,
                )
            };
            (
                storage,
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe {
                std::ptr::write(
                    (&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>(),
                    sin6,
                )
            };
            (
                storage,
                mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

/// Inverse of `to_storage`: `None` for a family other than IPv4 and IPv6.
fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// An epoll instance (level-triggered, readable events only).
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    /// A new epoll instance returning up to `max_events` ready sockets per wait.
    pub fn new(max_events: usize) -> io::Result<Epoll> {
        // SAFETY: plain system call without pointer arguments.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; max_events.max(1)],
        })
    }

    /// Watch `fd` for readability; `token` comes back from [`Epoll::wait`].
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event that lives across the call.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Wait up to `timeout_ms` (0: poll) for readable sockets; returns how many, see
    /// [`Epoll::token`]. An interruption by a signal returns `Ok(0)`.
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: `events` has room for `events.len()` entries.
        let r = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                timeout_ms,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(r as usize)
    }

    /// Token of ready event `i` of the last wait.
    pub fn token(&self, i: usize) -> u64 {
        let ev = self.events[i];
        ev.u64
    }
}

/// CPU time (user + system) used so far by this process, all threads.
pub fn process_cpu_time() -> Duration {
    // SAFETY: all-zero bytes are a valid rusage; getrusage writes into it.
    let mut ru: libc::rusage = unsafe { mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if r != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time (user + system) used so far by process `pid`, from `/proc/PID/stat`; None when the
/// process is gone or the file cannot be read.
pub fn pid_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    // SAFETY: sysconf has no pointer arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(Duration::from_nanos(
        (utime + stime).saturating_mul(1_000_000_000) / hz,
    ))
}

/// Resident set size of process `pid` in KiB (VmRSS).
pub fn pid_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether SIGINT/SIGTERM arrived since [`install_interrupt_handler`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Turn the first SIGINT (Ctrl-C) and SIGTERM into a flag the benchmark polls, so that it stops
/// sending and releases its allocations; a second signal kills the process as usual
/// (`SA_RESETHAND`). Blocking calls return `EINTR` (no `SA_RESTART`).
pub fn install_interrupt_handler() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: all-zero bytes are a valid sigaction; the handler only stores to an atomic.
        let mut sa: libc::sigaction = unsafe { mem::zeroed() };
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESETHAND;
        // SAFETY: `sa.sa_mask` is a valid sigset_t to initialise.
        unsafe { libc::sigemptyset(&mut sa.sa_mask) };
        // SAFETY: `sa` is a fully initialised sigaction; the old action is not needed.
        let r = unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn storage_round_trip() {
        for a in ["127.0.0.1:3478", "[::1]:9", "[2001:db8::1]:65535"] {
            let a: SocketAddr = a.parse().expect("addr");
            let (s, _) = to_storage(a);
            assert_eq!(from_storage(&s), Some(a));
        }
    }

    #[test]
    fn batch_send_and_receive() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        let mut b = Batch::new(8, 64);
        for i in 0..5 {
            b.slot_mut(i)[0] = i as u8;
            b.set_len(i, 10 + i);
            b.set_addr(i, to);
        }
        assert_eq!(b.send(tx.as_raw_fd(), 5, true), (5, 0));
        rx.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut r = Batch::new(8, 64);
        let mut got = 0;
        while got < 5 {
            let n = r.recv_wait(rx.as_raw_fd(), 8).expect("recv");
            assert!(n > 0);
            for i in 0..n {
                assert_eq!(r.msg(i).len(), 10 + got + i);
                assert_eq!(r.msg(i)[0] as usize, got + i);
            }
            // Echo back to the sources.
            assert_eq!(r.send(rx.as_raw_fd(), n, true), (n, 0));
            got += n;
        }
        tx.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        let (n, from) = tx.recv_from(&mut buf).expect("echo");
        assert_eq!((n, from), (10, to));
    }

    #[test]
    fn receive_with_headroom_into_later_slots_then_send_some() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        let from = tx.local_addr().expect("addr");
        for (i, len) in [3usize, 40, 60].into_iter().enumerate() {
            tx.send_to(&vec![i as u8 + 1; len], to).expect("send");
        }
        std::thread::sleep(Duration::from_millis(50));
        // Slots of 64 bytes, 8 of headroom, 4 of tailroom: 52 bytes of room; the 60-byte
        // datagram is cut short and says so.
        let mut b = Batch::new(8, 64);
        let got = b.recv_into(rx.as_raw_fd(), 2, 8, 8, 4).expect("recv");
        assert_eq!(got, 3);
        assert_eq!(b.msg(2), &[1, 1, 1]);
        assert_eq!(b.msg(3).len(), 40);
        assert!(!b.truncated(2) && !b.truncated(3));
        assert!(b.truncated(4));
        assert_eq!(b.addr(2), Some(from));
        // Headers go in front, in place.
        b.slot_mut(3)[4..8].copy_from_slice(b"HEAD");
        b.set_range(3, 4, 44);
        b.set_addr(3, from);
        b.set_addr(2, from);
        assert_eq!(
            b.send_some(rx.as_raw_fd(), &[3, 2, 99]),
            (2, 0),
            "99 is skipped"
        );
        tx.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        let (n, _) = tx.recv_from(&mut buf).expect("first");
        assert_eq!(&buf[..4], b"HEAD");
        assert_eq!(n, 44);
        let (n, _) = tx.recv_from(&mut buf).expect("second");
        assert_eq!(&buf[..n], &[1, 1, 1]);
        // A second receive reuses the descriptors (address lengths reset).
        tx.send_to(b"again", to).expect("send");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(b.recv_into(rx.as_raw_fd(), 0, 8, 8, 4).expect("recv"), 1);
        assert_eq!((b.msg(0), b.addr(0)), (&b"again"[..], Some(from)));
    }

    #[test]
    fn epoll_reports_readable_socket() {
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut ep = Epoll::new(4).expect("epoll");
        ep.add(a.as_raw_fd(), 7).expect("add");
        assert_eq!(ep.wait(0).expect("wait"), 0);
        b.send_to(b"x", a.local_addr().expect("addr"))
            .expect("send");
        assert_eq!(ep.wait(1000).expect("wait"), 1);
        assert_eq!(ep.token(0), 7);
        assert!(process_cpu_time() > Duration::ZERO);
        let me = std::process::id();
        assert!(pid_cpu_time(me).is_some());
        assert!(pid_rss_kib(me).is_some_and(|k| k > 0));
    }
}
