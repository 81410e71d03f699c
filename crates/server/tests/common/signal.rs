//! Signaling test clients: WebSocket (tokio-tungstenite), and raw HTTP/1.1 for join, send,
//! long-poll and SSE.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const WAIT: Duration = Duration::from_secs(10);

pub async fn ws(addr: SocketAddr) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("websocket connects");
    ws
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string()))
        .await
        .expect("ws send");
}

pub async fn send_text(ws: &mut Ws, t: &str) -> bool {
    ws.send(Message::text(t.to_string())).await.is_ok()
}

/// The next JSON message, or `None` when the socket closed (close frame, EOF or error).
pub async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time");
        match m {
            Some(Ok(Message::Text(t))) => {
                return Some(serde_json::from_str(t.as_str()).expect("server sends JSON"))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Binary(_))) => panic!("server sent a binary frame"),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
        }
    }
}

pub async fn recv(ws: &mut Ws) -> Value {
    next(ws).await.expect("socket still open")
}

/// Receive until a message of type `ty` (returns it), ignoring others.
pub async fn recv_type(ws: &mut Ws, ty: &str) -> Value {
    loop {
        let v = recv(ws).await;
        if v["type"] == ty {
            return v;
        }
    }
}

/// Whether the server closes the socket within `WAIT` (messages before the close are skipped).
pub async fn closed(ws: &mut Ws) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => return true,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Connect and join `room`; returns the socket and the `joined` message.
pub async fn ws_join(addr: SocketAddr, room: &str, extra: Value) -> (Ws, Value) {
    let mut ws = ws(addr).await;
    let mut msg = json!({"type": "join", "room": room});
    if let (Some(m), Some(e)) = (msg.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    send(&mut ws, msg).await;
    let joined = recv(&mut ws).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    (ws, joined)
}

pub fn peer_of(joined: &Value) -> String {
    joined["peer"].as_str().expect("peer").to_string()
}

pub fn session_of(joined: &Value) -> String {
    joined["session"].as_str().expect("session").to_string()
}

pub fn seq_of(v: &Value) -> u64 {
    v["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {v}"))
}

/// A raw HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One request with `Connection: close`; `headers` are extra header lines.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).await.expect("connect http");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
        addr.port(),
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(40), s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body.as_bytes()).0
    } else {
        body.to_string()
    };
    HttpResponse {
        status,
        head: head.to_string(),
        body,
    }
}

/// Decode complete chunks of a chunked body; returns the data and the bytes consumed.
fn dechunk(b: &[u8]) -> (String, usize) {
    let (s, used, _) = dechunk_end(b);
    (s, used)
}

/// [`dechunk`], also telling whether the last chunk (size 0) was seen.
fn dechunk_end(mut b: &[u8]) -> (String, usize, bool) {
    let mut out = Vec::new();
    let mut used = 0;
    let mut end = false;
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size else { break };
        if size == 0 {
            end = true;
            break;
        }
        if b.len() < eol + 2 + size + 2 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        used += eol + 2 + size + 2;
        b = &b[eol + 2 + size + 2..];
    }
    (String::from_utf8_lossy(&out).to_string(), used, end)
}

/// `POST /signal/join`: (status, body JSON).
pub async fn http_join(addr: SocketAddr, room: &str) -> (String, String) {
    let r = http(
        addr,
        "POST",
        "/signal/join",
        &[("Content-Type", "application/json")],
        &json!({"type": "join", "room": room}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    (
        v["session"].as_str().expect("session").to_string(),
        v["peer"].as_str().expect("peer").to_string(),
    )
}

pub async fn http_send(addr: SocketAddr, session: &str, body: &str) -> HttpResponse {
    http(
        addr,
        "POST",
        &format!("/signal/send?session={session}"),
        &[("Content-Type", "application/json")],
        body,
    )
    .await
}

/// One long-poll: the messages.
pub async fn poll(addr: SocketAddr, session: &str, last_seq: u64, timeout: u64) -> Vec<Value> {
    let r = http(
        addr,
        "GET",
        &format!("/signal/poll?session={session}&last_seq={last_seq}&timeout={timeout}"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    match r.json() {
        Value::Array(v) => v,
        other => panic!("not an array: {other}"),
    }
}

/// A streaming SSE client.
pub struct Sse {
    stream: TcpStream,
    raw: Vec<u8>,
    text: String,
    ended: bool,
    pub status: u16,
    pub head: String,
}

impl Sse {
    /// Open `/signal/events`; `headers` are extra lines (e.g. Last-Event-ID).
    pub async fn open(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Sse {
        let mut s = TcpStream::connect(addr).await.expect("connect sse");
        let mut req = format!(
            "GET /signal/events?{query} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\nConnection: close\r\n"
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        let head = loop {
            if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..p]).to_string();
                raw.drain(..p + 4);
                break head;
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, s.read(&mut buf))
                .await
                .expect("sse head in time")
                .expect("read");
            assert!(n > 0, "connection closed before the head");
            raw.extend_from_slice(&buf[..n]);
        };
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Sse {
            stream: s,
            raw,
            text: String::new(),
            ended: false,
            status,
            head,
        }
    }

    /// The next event: (id, data JSON); comments are skipped. `None` when the stream ended.
    pub async fn next(&mut self) -> Option<(Option<u64>, Value)> {
        loop {
            let (data, used, end) = dechunk_end(&self.raw);
            self.raw.drain(..used);
            self.text.push_str(&data);
            self.ended |= end;
            while let Some(p) = self.text.find("\n\n") {
                let event: String = self.text[..p].to_string();
                self.text.drain(..p + 2);
                let mut id = None;
                let mut payload = None;
                for line in event.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        payload = Some(serde_json::from_str(v).expect("data is JSON"));
                    }
                }
                if let Some(p) = payload {
                    return Some((id, p));
                }
            }
            if self.ended {
                return None;
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut buf))
                .await
                .expect("sse event in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.raw.extend_from_slice(&buf[..n]);
        }
    }

    pub async fn recv(&mut self) -> Value {
        self.next().await.expect("sse stream open").1
    }
}
