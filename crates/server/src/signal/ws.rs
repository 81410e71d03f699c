//! `GET /ws`: the WebSocket transport.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};

/// Read buffer of a WebSocket connection (it grows for larger messages up to the size limit).
/// 2 KiB keeps an idle connection under 8 KiB of RSS and still takes ~8 ICE-candidate-sized
/// messages per read (docs/BENCHMARKS.md: 1 KiB cost a fifth of the max relay rate).
pub(super) const WS_READ_BUFFER: usize = 2 * 1024;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::SinkExt;
use icebreaker_signal::{parse_client, ClientMessage, ErrorCode, ProtoError, RateLimiter};

use super::{
    counted, error_response, not_enabled, notified, request_host, shutdown_signal, Attachment, End,
    Kind, Open, SignalService, MAX_BAD_IN_A_ROW, WRITE_TIMEOUT,
};
use crate::http::HttpState;

/// Frames larger than this are refused by the WebSocket layer itself (the connection drops);
/// between `max_message` and this, the client gets `too_large` before the close.
pub(super) fn transport_limit(max_message: usize) -> usize {
    max_message
        .saturating_mul(2)
        .max(max_message.saturating_add(16 * 1024))
}

pub(super) async fn ws_handler(
    State(state): State<HttpState>,
    headers: HeaderMap,
    client: crate::http::Client,
    ws: WebSocketUpgrade,
) -> Response {
    // The connection's place under the per-address limit goes with the WebSocket.
    let slot = client.as_ref().map(|c| c.0.slot.clone());
    let client = crate::http::client_ip(&client);
    let Some(svc) = state.signal.clone() else {
        return not_enabled();
    };
    if let Err(e) = svc.check_origin(&headers) {
        return error_response(&e, None);
    }
    let host = request_host(&headers);
    let limit = transport_limit(svc.settings().max_message);
    // A small read buffer: the default (128 KiB, zero-filled before each read) would cost every
    // idle connection 128 KiB of RSS and every message a 128 KiB memory clear.
    ws.read_buffer_size(WS_READ_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            let (svc_rate, svc_burst) = (svc.settings().rate, svc.settings().burst);
            let mut conn = Conn {
                svc,
                socket,
                host,
                client,
                att: None,
                sent: 0,
                limiter: RateLimiter::new(svc_rate, svc_burst),
                bad_in_a_row: 0,
                last_heard: Instant::now(),
            };
            conn.run().await;
        })
}

/// What to do after a frame.
enum Next {
    Continue,
    /// Send what is pending, then close with this code and reason.
    Close(u16, &'static str),
    /// Drop the connection at once.
    Drop,
}

struct Conn {
    svc: Arc<SignalService>,
    socket: WebSocket,
    host: Option<String>,
    client: Option<std::net::IpAddr>,
    att: Option<Attachment>,
    /// Last `seq` written to the socket.
    sent: u64,
    limiter: RateLimiter,
    bad_in_a_row: u32,
    last_heard: Instant,
}

impl Conn {
    async fn run(&mut self) {
        let svc = self.svc.clone();
        let mut ping = tokio::time::interval(svc.settings().ws_ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let shutdown = shutdown_signal(svc.shutdown.clone());
        tokio::pin!(shutdown);
        loop {
            let notify = self.att.as_ref().map(|a| a.notify.clone());
            let mut wait = notify.as_deref().map(|n| Box::pin(n.notified()));
            if let Some(w) = wait.as_mut() {
                w.as_mut().enable();
            }
            match self.flush().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(Some(end)) => {
                    let reason = match end {
                        End::Superseded => "superseded by another connection",
                        End::Gone => "session ended",
                        End::Removed => {
                            // Said as an `error` first, so that the client does not join again.
                            let _ = self.reply(&ProtoError::removed()).await;
                            "removed"
                        }
                        End::Lost => "replay no longer available",
                    };
                    self.close(close_code::NORMAL, reason).await;
                    return;
                }
                Err(None) => return,
            }
            let next = tokio::select! {
                _ = notified(wait.as_mut().map(|w| w.as_mut())) => Next::Continue,
                frame = self.socket.recv() => match frame {
                    Some(Ok(m)) => {
                        self.last_heard = Instant::now();
                        self.on_frame(m).await
                    }
                    Some(Err(e)) => {
                        tracing::debug!("websocket read: {e}");
                        Next::Drop
                    }
                    None => Next::Drop,
                },
                _ = ping.tick() => {
                    if self.last_heard.elapsed() >= svc.settings().ws_idle_timeout {
                        Next::Drop
                    } else if self.write(Message::Ping(Default::default())).await {
                        Next::Continue
                    } else {
                        Next::Drop
                    }
                }
                _ = &mut shutdown => Next::Close(close_code::AWAY, "server shutting down"),
            };
            match next {
                Next::Continue => {}
                Next::Drop => return,
                Next::Close(code, reason) => {
                    // Deliver the error that caused the close first.
                    while let Ok(true) = self.flush().await {}
                    self.close(code, reason).await;
                    return;
                }
            }
        }
    }

    /// Write what the session has pending. `Ok(more)`, or `Err(Some(end))` when the stream must
    /// end, `Err(None)` when the socket failed.
    async fn flush(&mut self) -> Result<bool, Option<End>> {
        let Some(att) = &self.att else {
            return Ok(false);
        };
        let batch = self.svc.collect(att, self.sent).map_err(Some)?;
        let last = batch.messages.last().map(|(seq, _)| *seq);
        if batch.unsequenced.is_empty() && last.is_none() {
            return Ok(batch.more);
        }
        // Every message of the batch is framed into the write buffer, then one flush: one
        // system call for the lot instead of one per message.
        let socket = &mut self.socket;
        let send_all = async move {
            for text in batch.unsequenced {
                socket.feed(Message::text(text)).await?;
            }
            for (_, text) in batch.messages {
                socket.feed(Message::text(text)).await?;
            }
            socket.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, send_all).await {
            Ok(Ok(())) => {}
            _ => return Err(None),
        }
        if let Some(seq) = last {
            self.sent = seq;
        }
        Ok(batch.more)
    }

    async fn write(&mut self, m: Message) -> bool {
        matches!(
            tokio::time::timeout(WRITE_TIMEOUT, self.socket.send(m)).await,
            Ok(Ok(()))
        )
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let _ = self
            .write(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
    }

    /// An error answered directly (no session yet).
    async fn reply(&mut self, e: &ProtoError) -> bool {
        self.write(Message::text(e.to_json(None))).await
    }

    async fn on_frame(&mut self, m: Message) -> Next {
        match m {
            // Answers to our pings; the close handshake.
            Message::Pong(_) => return Next::Continue,
            Message::Close(_) => return Next::Drop,
            // Everything a client sends on its own counts against its rate, also what is
            // refused below (binary frames) and pings (each one makes us write a pong).
            Message::Text(_) | Message::Binary(_) | Message::Ping(_) => {}
        }
        if !self.limiter.allow(Instant::now()) {
            self.svc.gate.count(crate::metrics::Refusal::SignalRate);
            let e = ProtoError::new(ErrorCode::RateLimited, "too many messages; slow down");
            match &self.att {
                Some(att) => {
                    self.svc.push_error(att.key, &e);
                }
                None => {
                    if !self.reply(&e).await {
                        return Next::Drop;
                    }
                }
            }
            return if self.limiter.abusive() {
                Next::Close(close_code::POLICY, "rate limit exceeded repeatedly")
            } else {
                Next::Continue
            };
        }
        let text = match m {
            Message::Text(t) => t,
            Message::Binary(_) => {
                return self
                    .refuse(ProtoError::new(
                        ErrorCode::BadMessage,
                        "binary frames are not supported; send JSON text frames",
                    ))
                    .await
            }
            _ => return Next::Continue,
        };
        let msg = match parse_client(text.as_str(), self.svc.settings().max_message) {
            Ok(m) => m,
            Err(e) => return self.refuse(e).await,
        };
        self.bad_in_a_row = 0;
        let len = text.len();
        let Some(att) = &self.att else {
            return self.first(msg, len).await;
        };
        if counted(&msg) {
            self.svc.count_in(Some(att.key), len);
        }
        match self.svc.handle_on(att, msg).await {
            Ok(true) => Next::Close(close_code::NORMAL, "left"),
            // Refusals are queued on the session by the hub.
            Ok(false) | Err(_) => Next::Continue,
        }
    }

    /// A message that could not be read.
    async fn refuse(&mut self, e: ProtoError) -> Next {
        self.bad_in_a_row += 1;
        match &self.att {
            None => {
                if !self.reply(&e).await {
                    return Next::Drop;
                }
                // A first message that is not a readable join/resume closes (an invalid room
                // name is a refused join: the client may try again).
                if e.code == ErrorCode::InvalidRoom && self.bad_in_a_row < MAX_BAD_IN_A_ROW {
                    Next::Continue
                } else {
                    Next::Close(close_code::POLICY, close_reason(e.code))
                }
            }
            Some(att) => {
                self.svc.push_error(att.key, &e);
                if e.code.closes() {
                    Next::Close(close_code::SIZE, close_reason(e.code))
                } else if self.bad_in_a_row >= MAX_BAD_IN_A_ROW {
                    Next::Close(close_code::POLICY, "too many bad messages")
                } else {
                    Next::Continue
                }
            }
        }
    }

    /// The first message: `join` or `resume`.
    async fn first(&mut self, msg: ClientMessage, len: usize) -> Next {
        let opened = match msg {
            ClientMessage::Join(j) => {
                match self.svc.join(j, self.host.clone(), self.client).await {
                    Ok(joined) => {
                        self.svc.count_in(Some(joined.key), len);
                        self.svc
                            .open(Open::Joined(joined.key), Kind::WebSocket, None)
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
            ClientMessage::Resume(r) => {
                self.svc
                    .open(
                        Open::Resume {
                            token: &r.session,
                            last_seq: r.last_seq,
                        },
                        Kind::WebSocket,
                        self.host.clone(),
                    )
                    .await
            }
            other => {
                let e = ProtoError::new(
                    ErrorCode::BadMessage,
                    format!(
                        "the first message must be `join` or `resume`, not `{}`",
                        other.type_str()
                    ),
                )
                .with_id(other.id().map(str::to_owned));
                if !self.reply(&e).await {
                    return Next::Drop;
                }
                return Next::Close(close_code::POLICY, "expected join or resume");
            }
        };
        match opened {
            Ok(att) => {
                self.sent = att.from_seq;
                self.att = Some(att);
                Next::Continue
            }
            Err(e) => {
                // A refused join/resume: no session; the client may try again.
                self.bad_in_a_row += 1;
                if !self.reply(&e).await {
                    return Next::Drop;
                }
                if self.bad_in_a_row >= MAX_BAD_IN_A_ROW {
                    Next::Close(close_code::POLICY, "too many refused messages")
                } else {
                    Next::Continue
                }
            }
        }
    }
}

fn close_reason(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::TooLarge => "message too large",
        ErrorCode::BadMessage => "bad message",
        _ => "refused",
    }
}
