//! With a certificate configured, the HTTP listener speaks HTTPS/WSS and plain HTTP on one port.

mod common;

use std::sync::Arc;

use common::*;
use icebreaker::client::turn::{tls_client_config, TlsOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn https_request(addr: std::net::SocketAddr, req: &str) -> String {
    let cfg = tls_client_config(&TlsOptions {
        server_name: Some("localhost".into()),
        ca_file: None,
        insecure: true,
    })
    .expect("tls config");
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    tls.write_all(req.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), tls.read(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn https_wss_and_plain_http_on_one_port() {
    let cert = TestCert::new();
    let mut cfg = config(false);
    cfg.tls_cert = Some(cert.cert.clone());
    cfg.tls_key = Some(cert.key.clone());
    let srv = server(cfg).await;

    let r = https_request(
        srv.http,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");

    let r = https_request(
        srv.http,
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 101"), "{r}");

    let (status, body) = http_get(srv.http, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    srv.shutdown().await;
}
