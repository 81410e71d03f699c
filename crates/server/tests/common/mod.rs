//! Shared helpers: an in-process Icebreaker on loopback ports chosen by the system.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use icebreaker::client::turn::{
    ClientOptions, Credentials, Incoming, TlsOptions, Transport, TurnClient,
};
use icebreaker::config::Config;
use icebreaker::serve::{start, Running};

pub const USER: &str = "alice";
pub const PASS: &str = "secretpw";
pub const SECRET: &str = "test-shared-secret-0123456789";
pub const REALM: &str = "test.local";

/// A self-signed certificate for `localhost`/127.0.0.1, written to a temp dir.
pub struct TestCert {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCert {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "icebreaker-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("self-signed certificate");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).expect("write cert");
        std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
        TestCert { dir, cert, key }
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

/// A configuration on 127.0.0.1 with ports 0, a static user and a REST secret.
pub fn config(allow_loopback: bool) -> Config {
    Config {
        turn_listen: vec!["127.0.0.1:0".parse().expect("addr")],
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        sfu_listen: Some("127.0.0.1:0".parse().expect("addr")),
        relay_ip: vec!["127.0.0.1".parse().expect("ip")],
        // Below the kernel's ephemeral range, so that no client socket can sit on a relay port.
        relay_ports: (20000, 29999),
        realm: REALM.to_string(),
        users: vec![(USER.to_string(), PASS.to_string())],
        turn_secrets: vec![SECRET.to_string()],
        allow_peer: if allow_loopback {
            vec!["127.0.0.0/8".parse().expect("net")]
        } else {
            Vec::new()
        },
        ..Config::default()
    }
}

pub async fn server(c: Config) -> Running {
    start(c).await.expect("server starts")
}

pub fn options(transport: Transport, credentials: Option<Credentials>) -> ClientOptions {
    ClientOptions {
        transport,
        credentials,
        timeout: Duration::from_secs(5),
        tls: TlsOptions {
            server_name: Some("localhost".into()),
            ca_file: None,
            insecure: true,
        },
        ..ClientOptions::default()
    }
}

pub fn static_creds() -> Credentials {
    Credentials::LongTerm {
        username: USER.into(),
        password: PASS.into(),
    }
}

pub fn rest_creds() -> Credentials {
    Credentials::Rest {
        secret: SECRET.into(),
        user: "bob".into(),
        ttl: Duration::from_secs(600),
    }
}

/// A UDP echo peer on 127.0.0.1 in its own thread; it stops after `max` datagrams or when the
/// process ends.
pub fn echo_peer(max: usize) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("echo bind");
    let addr = sock.local_addr().expect("echo addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..max {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let _ = sock.send_to(&buf[..n], from);
                }
                Err(_) => return,
            }
        }
    });
    addr
}

/// GET a path from the HTTP listener; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect http");
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut body = String::new();
    s.read_to_string(&mut body).await.expect("read");
    let status = body
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body)
}

pub mod signal;

/// Receive the next data message (ChannelData or Data indication) within 3 s.
pub async fn recv_data(c: &mut TurnClient) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.recv_timeout(left).await.expect("recv") {
            Some(Incoming::ChannelData { data, .. }) | Some(Incoming::Data { data, .. }) => {
                return data.to_vec()
            }
            Some(Incoming::Stun(_)) => continue,
            None => panic!("no data within 3 s"),
        }
    }
}
