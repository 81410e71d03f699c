//! Operating the real binary: SIGHUP reloads users, limits and the admin token without
//! dropping a relayed stream or a WebSocket; SIGTERM drains (readyz 503, 300 Try Alternate,
//! joins refused) while existing calls go on, and the process exits when the last one ends.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::signal::*;
use common::*;
use icebreaker::client::turn::{
    AllocateOptions, ClientOptions, Credentials, Transport, TurnClient,
};
use serde_json::json;

fn free_port() -> u16 {
    // A port free for both TCP and UDP right now.
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

struct Server {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config_text(turn: u16, http: u16, users: &[&str], token: &str) -> String {
    let users: Vec<String> = users.iter().map(|u| format!("{u:?}")).collect();
    format!(
        r#"turn_listen = ["127.0.0.1:{turn}"]
http_listen = "127.0.0.1:{http}"
sfu_listen = "127.0.0.1:0"
relay_ip = ["127.0.0.1"]
relay_ports = "20000-29999"
realm = "{REALM}"
users = [{}]
allow_peer = ["127.0.0.0/8"]
alternate_server = "127.0.0.1:3479"
drain_timeout = 60
admin_token = "{token}"
"#,
        users.join(", ")
    )
}

fn kill(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn relays(c: &mut TurnClient, peer: SocketAddr, tag: &[u8]) {
    c.send_indication(peer, tag).await.unwrap();
    assert_eq!(recv_data(c).await, tag);
}

async fn admin(http: SocketAddr, method: &str, path: &str, token: &str) -> HttpResponse {
    let auth = format!("Bearer {token}");
    common::signal::http(http, method, path, &[("Authorization", &auth)], "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_and_drain_keep_calls_running() {
    let (turn_port, http_port) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("icebreaker-operate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("icebreaker.toml");
    let user = format!("{USER}:{PASS}");
    std::fs::write(
        &file,
        config_text(turn_port, http_port, &[&user], "token-one-0123456789"),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_icebreaker"))
        .args(["serve", "--config"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut srv = Server { child, dir };
    let turn: SocketAddr = format!("127.0.0.1:{turn_port}").parse().unwrap();
    let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    wait_for("the server", async || {
        tokio::net::TcpStream::connect(http).await.is_ok()
    })
    .await;

    // A relayed stream and a signaling session.
    let peer = echo_peer(1000);
    let mut alice = TurnClient::connect(turn, options(Transport::Udp, Some(static_creds())))
        .await
        .unwrap();
    alice.allocate(&AllocateOptions::default()).await.unwrap();
    alice.create_permission(&[peer]).await.unwrap();
    relays(&mut alice, peer, b"before").await;
    let (mut sock, joined) = ws_join(http, "ops", json!({})).await;
    assert_eq!(joined["type"], "joined");

    // Reload: a new user, a new admin token.
    std::fs::write(
        &file,
        config_text(
            turn_port,
            http_port,
            &[&user, "carol:carolpw"],
            "token-two-0123456789",
        ),
    )
    .unwrap();
    kill(&srv.child, "-HUP");
    let carol_creds = Credentials::LongTerm {
        username: "carol".into(),
        password: "carolpw".into(),
    };
    let mut carol = None;
    wait_for("carol to be accepted", async || {
        let Ok(mut c) =
            TurnClient::connect(turn, options(Transport::Udp, Some(carol_creds.clone()))).await
        else {
            return false;
        };
        let ok = c.allocate(&AllocateOptions::default()).await.is_ok();
        if ok {
            carol = Some(c);
        }
        ok
    })
    .await;
    let mut carol = carol.unwrap();
    carol.create_permission(&[peer]).await.unwrap();
    assert_eq!(
        admin(http, "GET", "/admin/status", "token-one-0123456789")
            .await
            .status,
        401
    );
    assert_eq!(
        admin(http, "GET", "/admin/status", "token-two-0123456789")
            .await
            .status,
        200
    );
    // Nothing dropped.
    relays(&mut alice, peer, b"after reload").await;
    send(&mut sock, json!({"type": "ping"})).await;
    assert_eq!(recv_type(&mut sock, "pong").await["type"], "pong");

    // Drain.
    kill(&srv.child, "-TERM");
    wait_for("readyz 503", async || {
        http_get(http, "/readyz").await.0 == 503
    })
    .await;
    // The 300 itself is what is checked here (nothing answers at the alternate).
    let no_redirect = ClientOptions {
        max_redirects: 0,
        ..options(Transport::Udp, Some(static_creds()))
    };
    let mut late = TurnClient::connect(turn, no_redirect).await.unwrap();
    let err = late
        .allocate(&AllocateOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(300), "{err}");
    let (mut w2, j2) = {
        let mut w = ws(http).await;
        send(&mut w, json!({"type": "join", "room": "ops"})).await;
        let v = recv(&mut w).await;
        (w, v)
    };
    assert_eq!(j2["type"], "error", "{j2}");
    assert_eq!(j2["code"], "draining", "{j2}");
    let _ = closed(&mut w2).await;
    // Existing calls go on.
    relays(&mut alice, peer, b"while draining").await;
    relays(&mut carol, peer, b"carol too").await;
    send(&mut sock, json!({"type": "ping"})).await;
    assert_eq!(recv_type(&mut sock, "pong").await["type"], "pong");
    let status = admin(http, "GET", "/admin/status", "token-two-0123456789")
        .await
        .json();
    assert_eq!(status["draining"], true, "{status}");
    assert_eq!(status["allocations"], 2, "{status}");
    assert!(srv.child.try_wait().unwrap().is_none(), "still running");

    // The last calls end: the process exits by itself.
    alice.refresh(0).await.unwrap();
    carol.refresh(0).await.unwrap();
    send(&mut sock, json!({"type": "leave"})).await;
    drop(sock);
    let until = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(code) = srv.child.try_wait().unwrap() {
            break code;
        }
        assert!(
            Instant::now() < until,
            "did not exit after the last call ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(code.success(), "{code}");
}
