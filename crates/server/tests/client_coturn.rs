//! Integration tests of the TURN/STUN client (`icebreaker::client`) against coturn's
//! `turnserver` on loopback. Skipped, with a notice, when `turnserver` is not installed.
//!
//! Each test starts its own server (on free ports) through [`TestServer::start`], which is the
//! single place to change to point these tests at another TURN server implementation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use icebreaker::client::stun::{self as stun_cli, StunArgs};
use icebreaker::client::turn::{
    AllocateOptions, ClientOptions, Credentials, Incoming, Transport, TurnClient,
};
use icebreaker::client::turn_check::{self, TurnCheckArgs};

const USER: &str = "alice";
const PASS: &str = "secretpw";
const REALM: &str = "test.local";
const SECRET: &str = "north-wind-secret";

fn turnserver_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("turnserver"))
        .find(|p| p.is_file())
}

/// Kills (by PID) and reaps the server on drop, and removes its scratch directory.
struct ChildGuard {
    child: Child,
    dir: PathBuf,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    Static,
    Secret,
}

#[derive(Clone, Copy)]
struct Config {
    auth: Auth,
    tls: bool,
    stale_nonce: Option<u32>,
}

impl Config {
    fn new(auth: Auth) -> Self {
        Config {
            auth,
            tls: false,
            stale_nonce: None,
        }
    }
}

struct TestServer {
    /// UDP and TCP listening address.
    addr: SocketAddr,
    /// TLS listening address.
    tls_addr: Option<SocketAddr>,
    /// PEM of the server's self-signed certificate.
    cert: Option<PathBuf>,
    log: PathBuf,
    _guard: ChildGuard,
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// A port free for both UDP and TCP on 127.0.0.1 (racy, but good enough for tests; a failed
/// start is retried).
fn free_port() -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

impl TestServer {
    /// Start coturn; None (after printing a notice) when it is not installed.
    async fn start(cfg: Config) -> Option<TestServer> {
        let Some(bin) = turnserver_path() else {
            eprintln!("NOTICE: coturn's `turnserver` is not installed; skipping this test");
            return None;
        };
        let mut last_log = String::new();
        for _attempt in 0..3 {
            match Self::try_start(&bin, cfg).await {
                Ok(s) => return Some(s),
                Err(log) => last_log = log,
            }
        }
        panic!("turnserver did not come up; last log:\n{last_log}");
    }

    async fn try_start(bin: &Path, cfg: Config) -> Result<TestServer, String> {
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "icebreaker-client-coturn-{}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let port = free_port();
        let tls_port = cfg.tls.then(free_port);
        // Relay ports below the ephemeral range, spread by pid and instance.
        let min_port = (20_000 + ((std::process::id() % 40) * 250 + n * 10) % 12_000) as u16;
        let log = dir.join("turnserver.log");
        let mut cmd = Command::new(bin);
        cmd.arg("-n")
            .arg(format!("--log-file={}", log.display()))
            .arg("--simple-log")
            .arg("--no-stdout-log")
            .arg(format!(
                "--pidfile={}",
                dir.join("turnserver.pid").display()
            ))
            .arg(format!("--db={}", dir.join("turndb").display()))
            .arg("--listening-ip=127.0.0.1")
            .arg("--relay-ip=127.0.0.1")
            .arg(format!("--listening-port={port}"))
            .arg(format!("--min-port={min_port}"))
            .arg(format!("--max-port={}", min_port + 9))
            .arg(format!("--realm={REALM}"))
            .arg("--allow-loopback-peers")
            .arg("--no-cli")
            .arg("--no-dtls")
            .arg("--relay-threads=1")
            .arg("--fingerprint");
        match cfg.auth {
            Auth::Static => {
                cmd.arg("--lt-cred-mech")
                    .arg(format!("--user={USER}:{PASS}"));
            }
            Auth::Secret => {
                cmd.arg("--use-auth-secret")
                    .arg(format!("--static-auth-secret={SECRET}"));
            }
        }
        if let Some(s) = cfg.stale_nonce {
            cmd.arg(format!("--stale-nonce={s}"));
        }
        let mut cert_path = None;
        if let Some(tls_port) = tls_port {
            let ck = rcgen::generate_simple_self_signed(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
            ])
            .map_err(|e| e.to_string())?;
            let cert = dir.join("cert.pem");
            let key = dir.join("key.pem");
            std::fs::write(&cert, ck.cert.pem()).map_err(|e| e.to_string())?;
            std::fs::write(&key, ck.signing_key.serialize_pem()).map_err(|e| e.to_string())?;
            cmd.arg(format!("--tls-listening-port={tls_port}"))
                .arg(format!("--cert={}", cert.display()))
                .arg(format!("--pkey={}", key.display()));
            cert_path = Some(cert);
        } else {
            cmd.arg("--no-tls");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| format!("spawn turnserver: {e}"))?;
        let guard = ChildGuard { child, dir };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let tls_addr = tls_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        let server = TestServer {
            addr,
            tls_addr,
            cert: cert_path,
            log,
            _guard: guard,
        };
        if server.wait_ready().await {
            Ok(server)
        } else {
            Err(server.log_text())
        }
    }

    /// Wait until UDP Binding works and the TCP (and TLS) listeners accept connections.
    async fn wait_ready(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        let opts = ClientOptions {
            timeout: Duration::from_millis(300),
            ..ClientOptions::default()
        };
        while Instant::now() < deadline {
            let udp_ok = match TurnClient::connect(self.addr, opts.clone()).await {
                Ok(mut c) => c.binding().await.is_ok(),
                Err(_) => false,
            };
            let tcp_ok = tokio::net::TcpStream::connect(self.addr).await.is_ok();
            let tls_ok = match self.tls_addr {
                Some(a) => tokio::net::TcpStream::connect(a).await.is_ok(),
                None => true,
            };
            if udp_ok && tcp_ok && tls_ok {
                return true;
            }
            if self.log_text().contains("Address already in use") {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn options(&self, transport: Transport, credentials: Option<Credentials>) -> ClientOptions {
        ClientOptions {
            transport,
            credentials,
            timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        }
    }
}

fn static_creds() -> Credentials {
    Credentials::LongTerm {
        username: USER.into(),
        password: PASS.into(),
    }
}

#[tokio::test]
async fn binding_udp_and_tcp() {
    let Some(server) = TestServer::start(Config::new(Auth::Static)).await else {
        return;
    };
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut c = TurnClient::connect(server.addr, server.options(transport, None))
            .await
            .expect("connect");
        let resp = c.binding_padded(100).await.expect("binding");
        assert_eq!(resp.reflexive(), Some(c.local_addr()), "{transport}");
        assert_eq!(resp.xor_mapped, Some(c.local_addr()), "{transport}");
        let sw = resp.software.unwrap_or_default();
        assert!(sw.contains("Coturn"), "SOFTWARE {sw:?}");
        // A second request on the same connection works too.
        c.binding().await.expect("second binding");
    }
    // The CLI front end.
    stun_cli::run(StunArgs::new(server.addr.to_string()))
        .await
        .expect("stun over udp");
    let mut args = StunArgs::new(server.addr.to_string());
    args.tcp = true;
    stun_cli::run(args).await.expect("stun over tcp");
}

#[tokio::test]
async fn binding_timeout_is_reported() {
    // Nothing answers on this UDP socket: the client must give up within its time limit.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let opts = ClientOptions {
        timeout: Duration::from_millis(1200),
        ..ClientOptions::default()
    };
    let mut c = TurnClient::connect(addr, opts).await.expect("connect");
    let t = Instant::now();
    let err = c.binding().await.expect_err("must time out");
    assert!(t.elapsed() < Duration::from_secs(3));
    let msg = err.to_string();
    assert!(msg.contains("no response to Binding"), "{msg}");
    // 500 ms, then 1 s: two transmissions fit before 1.2 s.
    assert!(msg.contains("2 transmissions"), "{msg}");
    drop(silent);
}

#[tokio::test]
async fn turn_check_static_udp() {
    let Some(server) = TestServer::start(Config::new(Auth::Static)).await else {
        return;
    };
    let args = TurnCheckArgs::with_user(server.addr.to_string(), USER, PASS);
    turn_check::run(args).await.expect("turn-check udp");
}

#[tokio::test]
async fn turn_check_static_tcp() {
    let Some(server) = TestServer::start(Config::new(Auth::Static)).await else {
        return;
    };
    let mut args = TurnCheckArgs::with_user(server.addr.to_string(), USER, PASS);
    args.tcp = true;
    args.count = 20;
    turn_check::run(args).await.expect("turn-check tcp");
}

#[tokio::test]
async fn turn_check_secret_udp_and_tcp() {
    let Some(server) = TestServer::start(Config::new(Auth::Secret)).await else {
        return;
    };
    let args = TurnCheckArgs::with_secret(server.addr.to_string(), SECRET);
    turn_check::run(args.clone())
        .await
        .expect("turn-check secret udp");
    let mut args = args;
    args.tcp = true;
    args.rest_user = "bob".into();
    turn_check::run(args).await.expect("turn-check secret tcp");
}

#[tokio::test]
async fn turn_check_tls() {
    let Some(server) = TestServer::start(Config {
        tls: true,
        ..Config::new(Auth::Static)
    })
    .await
    else {
        return;
    };
    let tls_addr = server.tls_addr.expect("tls addr");
    let mut args = TurnCheckArgs::with_user(tls_addr.to_string(), USER, PASS);
    args.tls = true;
    args.insecure = true;
    turn_check::run(args.clone())
        .await
        .expect("turn-check tls --insecure");

    // Verified against the self-signed certificate given as CA.
    args.insecure = false;
    args.ca = server.cert.clone();
    turn_check::run(args.clone())
        .await
        .expect("turn-check tls --ca");

    // Verification against the wrong CA must fail the handshake.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    let other_path = std::env::temp_dir().join(format!(
        "icebreaker-client-other-ca-{}.pem",
        std::process::id()
    ));
    std::fs::write(&other_path, other.cert.pem()).expect("write");
    args.ca = Some(other_path.clone());
    let err = turn_check::run(args).await.expect_err("wrong CA must fail");
    let _ = std::fs::remove_file(&other_path);
    assert!(err.to_string().contains("Connect failed"), "{err:#}");
}

#[tokio::test]
async fn wrong_password_gets_401() {
    let Some(server) = TestServer::start(Config::new(Auth::Static)).await else {
        return;
    };
    for transport in [Transport::Udp, Transport::Tcp] {
        let creds = Credentials::LongTerm {
            username: USER.into(),
            password: "wrong".into(),
        };
        let mut c = TurnClient::connect(server.addr, server.options(transport, Some(creds)))
            .await
            .expect("connect");
        let err = c
            .allocate(&AllocateOptions::default())
            .await
            .expect_err("wrong password must fail");
        assert_eq!(err.code(), Some(401), "{transport}: {err}");
        assert_eq!(c.realm(), Some(REALM));
    }
    // Without credentials at all.
    let mut c = TurnClient::connect(server.addr, server.options(Transport::Udp, None))
        .await
        .expect("connect");
    let err = c
        .allocate(&AllocateOptions::default())
        .await
        .expect_err("unauthenticated must fail");
    assert_eq!(err.code(), Some(401), "{err}");
    // The CLI reports it as a failure.
    let args = TurnCheckArgs::with_user(server.addr.to_string(), USER, "wrong");
    let err = turn_check::run(args).await.expect_err("must fail");
    assert!(err.to_string().contains("401"), "{err:#}");
    // A wrong secret too.
    let args = TurnCheckArgs::with_secret(server.addr.to_string(), "not-the-secret");
    assert!(turn_check::run(args).await.is_err());
}

#[tokio::test]
async fn library_flow_details() {
    let Some(server) = TestServer::start(Config::new(Auth::Static)).await else {
        return;
    };
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("peer");
    let peer_addr = peer.local_addr().expect("addr");
    let mut c = TurnClient::connect(
        server.addr,
        server.options(Transport::Udp, Some(static_creds())),
    )
    .await
    .expect("connect");
    let alloc = c
        .allocate(&AllocateOptions {
            lifetime: Some(1200),
            ..AllocateOptions::default()
        })
        .await
        .expect("allocate");
    assert_eq!(alloc.lifetime, 1200);
    assert_eq!(alloc.mapped, Some(c.local_addr()));
    assert_eq!(alloc.relayed.ip(), peer_addr.ip());
    assert_eq!(c.username(), Some(USER));

    // A second Allocate on the same 5-tuple is refused with 437.
    let err = c
        .allocate(&AllocateOptions::default())
        .await
        .expect_err("second allocation");
    assert_eq!(err.code(), Some(437), "{err}");

    // Without a permission, data from the peer is dropped by the relay.
    peer.send_to(b"too early", alloc.relayed)
        .await
        .expect("send");
    assert!(c
        .recv_timeout(Duration::from_millis(300))
        .await
        .expect("recv")
        .is_none());

    c.create_permission(&[peer_addr]).await.expect("permission");
    // Peer -> client via Data indication, with the peer's address.
    peer.send_to(b"hello client", alloc.relayed)
        .await
        .expect("send");
    match c.recv_timeout(Duration::from_secs(2)).await.expect("recv") {
        Some(Incoming::Data { peer: from, data }) => {
            assert_eq!(from, peer_addr);
            assert_eq!(data, b"hello client");
        }
        other => panic!("expected a Data indication, got {other:?}"),
    }
    // Client -> peer via Send indication, from the relayed address.
    c.send_indication(peer_addr, b"hello peer")
        .await
        .expect("send");
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), peer.recv_from(&mut buf))
        .await
        .expect("timely")
        .expect("recv");
    assert_eq!(&buf[..n], b"hello peer");
    assert_eq!(from, alloc.relayed);

    // Channels: invalid numbers are rejected locally, valid ones carry data both ways.
    assert!(c.channel_bind(0x3FFF, peer_addr).await.is_err());
    c.channel_bind(0x4001, peer_addr)
        .await
        .expect("channel bind");
    c.send_channel_data(0x4001, b"via channel")
        .await
        .expect("send");
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), peer.recv_from(&mut buf))
        .await
        .expect("timely")
        .expect("recv");
    assert_eq!(&buf[..n], b"via channel");
    assert_eq!(from, alloc.relayed);
    peer.send_to(b"back on channel", alloc.relayed)
        .await
        .expect("send");
    match c.recv_timeout(Duration::from_secs(2)).await.expect("recv") {
        Some(Incoming::ChannelData { channel, data }) => {
            assert_eq!(channel, 0x4001);
            assert_eq!(data, b"back on channel");
        }
        other => panic!("expected ChannelData, got {other:?}"),
    }

    // Servers may raise short lifetimes to their minimum (coturn: 600 s).
    let granted = c.refresh(700).await.expect("refresh");
    assert!(granted >= 600, "{granted}");
    assert_eq!(c.refresh(0).await.expect("delete"), 0);
}

#[tokio::test]
async fn stale_nonce_is_retried() {
    let Some(server) = TestServer::start(Config {
        stale_nonce: Some(1),
        ..Config::new(Auth::Static)
    })
    .await
    else {
        return;
    };
    let mut c = TurnClient::connect(
        server.addr,
        server.options(Transport::Udp, Some(static_creds())),
    )
    .await
    .expect("connect");
    c.allocate(&AllocateOptions::default())
        .await
        .expect("allocate");
    let first_nonce = c.nonce().to_vec();
    assert!(!first_nonce.is_empty());
    // Let the nonce expire; the next request gets 438 and must be retried transparently.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    c.create_permission(&["127.0.0.1:9".parse().expect("addr")])
        .await
        .expect("permission after stale nonce");
    assert_ne!(c.nonce(), first_nonce.as_slice(), "a new nonce was used");
    c.refresh(0).await.expect("delete");
}
