//! The HTTP transports (`POST /signal/join`, `POST /signal/send`, `GET /signal/events` (SSE),
//! `GET /signal/poll`) and `GET /api/ice-servers`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use icebreaker_signal::{parse_client, ClientMessage, ErrorCode, ProtoError};
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;

use super::{
    error_response, json_response, not_enabled, notified, request_host, shutdown_signal,
    Attachment, Kind, Open, SignalService,
};
use crate::http::{bearer, HttpState};

/// Default and bounds of the long-poll `timeout`, seconds.
const POLL_DEFAULT: u64 = 25;
const POLL_MAX: u64 = 30;
/// A `POST /signal/send` body may carry this many maximal messages.
const SEND_BODY_MESSAGES: usize = 16;

type Params = Query<HashMap<String, String>>;

fn bad(msg: impl Into<String>) -> ProtoError {
    ProtoError::new(ErrorCode::BadMessage, msg)
}

/// The session token: `?session=S` or `Authorization: Bearer S`.
fn session_token<'a>(
    params: &'a HashMap<String, String>,
    headers: &'a HeaderMap,
) -> Option<&'a str> {
    if let Some(s) = params.get("session") {
        return Some(s.as_str());
    }
    bearer(headers)
}

fn parse_u64(params: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ProtoError> {
    match params.get(name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| bad(format!("`{name}` must be a non-negative integer"))),
    }
}

/// Common checks of the session endpoints: signaling enabled and Origin allowed.
fn service(state: &HttpState, headers: &HeaderMap) -> Result<Arc<SignalService>, Box<Response>> {
    let Some(svc) = state.signal.clone() else {
        return Err(Box::new(not_enabled()));
    };
    svc.check_origin(headers)
        .map_err(|e| Box::new(error_response(&e, None)))?;
    Ok(svc)
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ProtoError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ProtoError::new(
            ErrorCode::TooLarge,
            format!("the request body is over {limit} bytes (or could not be read)"),
        )
    })
}

/// `POST /signal/join`: body = a `join` message; answer `{"session": S, "peer": ID}`.
pub(super) async fn join(
    State(state): State<HttpState>,
    headers: HeaderMap,
    client: crate::http::Client,
    body: Body,
) -> Response {
    let svc = match service(&state, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let max = svc.settings().max_message;
    let body = match read_body(body, max).await {
        Ok(b) => b,
        Err(e) => return error_response(&e, None),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error_response(&bad("the body is not UTF-8 JSON"), None);
    };
    let join = match parse_client(text, max) {
        Ok(ClientMessage::Join(j)) => j,
        Ok(other) => {
            return error_response(
                &bad(format!(
                    "POST /signal/join takes a `join` message, not `{}`",
                    other.type_str()
                ))
                .with_id(other.id().map(str::to_owned)),
                None,
            )
        }
        Err(e) => return error_response(&e, None),
    };
    match svc
        .join(
            join,
            request_host(&headers),
            crate::http::client_ip(&client),
        )
        .await
    {
        Ok(j) => {
            svc.count_in(Some(j.key), text.len());
            json_response(
                StatusCode::OK,
                serde_json::json!({ "session": j.session.as_str(), "peer": j.peer }).to_string(),
            )
        }
        Err(e) => error_response(&e, None),
    }
}

/// Who sends on `POST /signal/send`.
enum Sender {
    /// A session held here.
    Local(icebreaker_signal::SessionKey),
    /// A session held by another node of the cluster: its peer id and permissions.
    Remote(String, icebreaker_signal::Perms),
}

/// `POST /signal/send?session=S`: one message or an array of messages.
pub(super) async fn send(
    State(state): State<HttpState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let svc = match service(&state, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Some(token) = session_token(&params, &headers) else {
        return error_response(
            &bad("give the session as ?session=S or Authorization: Bearer S"),
            None,
        );
    };
    let key = {
        let inner = svc.inner.lock();
        inner.hub.lookup(token)
    };
    let not_joined = || {
        error_response(
            &ProtoError::new(
                ErrorCode::NotJoined,
                "unknown or expired session (join first)",
            ),
            None,
        )
    };
    if key.is_none() && svc.inner.lock().removed.has_token(token) {
        return error_response(&ProtoError::removed(), None);
    }
    let cluster = svc.cluster();
    let sender = match (key, &cluster) {
        (Some(key), _) => Sender::Local(key),
        // A session held by another node of the cluster (no sticky sessions needed).
        (None, Some(c)) => {
            if !icebreaker_signal::SessionToken::well_formed(token) {
                return not_joined();
            }
            let digest = icebreaker_signal::session::token_digest(token);
            match c.who(&super::cluster::hex(&digest)).await {
                Ok(Some((peer, perms))) => {
                    Sender::Remote(peer, icebreaker_signal::Perms::from_bits(perms))
                }
                Ok(None) => return not_joined(),
                Err(e) => {
                    return error_response(
                        &ProtoError::new(ErrorCode::ServerFull, e.to_string()),
                        None,
                    )
                }
            }
        }
        (None, None) => return not_joined(),
    };
    let max = svc.settings().max_message;
    let limit = max.saturating_mul(SEND_BODY_MESSAGES);
    let refuse = |e: ProtoError| {
        let seq = match &sender {
            Sender::Local(key) => svc.push_error(*key, &e),
            Sender::Remote(peer, _) => {
                svc.push_error_cluster(peer, &e);
                None
            }
        };
        error_response(&e, seq)
    };
    let body = match read_body(body, limit).await {
        Ok(b) => b,
        Err(e) => return refuse(e),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return refuse(bad("the body is not UTF-8 JSON"));
    };
    let messages: Vec<&str> = if text.trim_start().starts_with('[') {
        match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(v) => v.into_iter().map(RawValue::get).collect(),
            Err(e) => {
                return refuse(bad(format!(
                    "the body is not a JSON array of messages: {e}"
                )))
            }
        }
    } else {
        vec![text]
    };
    for m in messages {
        // A session held by another node is limited there (its streams) and by the per-address
        // limits here.
        let allowed = match &sender {
            Sender::Local(key) => {
                let mut inner = svc.inner.lock();
                inner
                    .io
                    .get_mut(key)
                    .map(|io| io.limiter.allow(Instant::now()))
            }
            Sender::Remote(..) => Some(true),
        };
        match allowed {
            None => {
                return error_response(
                    &ProtoError::new(ErrorCode::NotJoined, "the session has ended"),
                    None,
                )
            }
            Some(false) => {
                svc.gate.count(crate::metrics::Refusal::SignalRate);
                return refuse(ProtoError::new(
                    ErrorCode::RateLimited,
                    "too many messages; slow down",
                ));
            }
            Some(true) => {}
        }
        let msg = match parse_client(m, max) {
            Ok(msg) => msg,
            Err(e) => return refuse(e),
        };
        if super::counted(&msg) {
            let key = match &sender {
                Sender::Local(key) => Some(*key),
                Sender::Remote(..) => None,
            };
            svc.count_in(key, m.len());
        }
        let r = match (&sender, &cluster) {
            (Sender::Remote(peer, perms), Some(c)) => {
                svc.handle_cluster(c, None, peer, *perms, msg).await
            }
            (Sender::Local(key), _) => svc.handle(*key, msg).await,
            (Sender::Remote(..), None) => return not_joined(),
        };
        if let Err(e) = r {
            // Already queued on the session.
            let seq = match &sender {
                Sender::Local(key) => svc.inner.lock().hub.last_seq(*key),
                Sender::Remote(..) => None,
            };
            return error_response(&e, seq);
        }
    }
    json_response(StatusCode::OK, r#"{"ok":true}"#.to_string())
}

/// What every stream request (SSE, long-poll) starts with: the service (signaling enabled, Origin
/// allowed), the session token and the `last_seq` to continue after.
fn stream_request<'a>(
    state: &HttpState,
    params: &'a HashMap<String, String>,
    headers: &'a HeaderMap,
    sse: bool,
) -> Result<(Arc<SignalService>, &'a str, u64), Box<Response>> {
    let svc = service(state, headers)?;
    let Some(token) = session_token(params, headers) else {
        return Err(Box::new(error_response(
            &bad("give the session as ?session=S or Authorization: Bearer S"),
            None,
        )));
    };
    let last = last_seq(params, headers, sse).map_err(|e| Box::new(error_response(&e, None)))?;
    Ok((svc, token, last))
}

/// The `last_seq` a stream request continues after: `Last-Event-ID` (SSE reconnect) or
/// `?last_seq=N`, default 0.
fn last_seq(
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    sse: bool,
) -> Result<u64, ProtoError> {
    if sse {
        if let Some(v) = headers.get("last-event-id") {
            let v = v.to_str().unwrap_or("").trim();
            if !v.is_empty() {
                return v
                    .parse::<u64>()
                    .map_err(|_| bad("`Last-Event-ID` must be a non-negative integer"));
            }
        }
    }
    Ok(parse_u64(params, "last_seq")?.unwrap_or(0))
}

/// Render one SSE event. JSON never needs a raw line break, so any (whitespace inside a
/// client's `data`) becomes a space and each message stays on one `data:` line.
fn sse_event(out: &mut String, seq: Option<u64>, text: &str) {
    if let Some(seq) = seq {
        out.push_str("id: ");
        out.push_str(&seq.to_string());
        out.push('\n');
    }
    out.push_str("data: ");
    out.extend(
        text.chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c }),
    );
    out.push_str("\n\n");
}

struct SseState {
    att: Attachment,
    sent: u64,
    keepalive: tokio::time::Interval,
    shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    done: bool,
}

/// `GET /signal/events?session=S&last_seq=N`: Server-Sent Events.
pub(super) async fn events(
    State(state): State<HttpState>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    let (svc, token, last) = match stream_request(&state, &params, &headers, true) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let att = match svc
        .open(
            Open::Sse {
                token,
                last_seq: last,
            },
            Kind::Sse,
            request_host(&headers),
        )
        .await
    {
        Ok(a) => a,
        Err(e) => return error_response(&e, None),
    };
    let mut keepalive = tokio::time::interval(svc.settings().sse_keepalive);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.reset();
    let st = SseState {
        sent: att.from_seq,
        att,
        keepalive,
        shutdown: Box::pin(shutdown_signal(svc.shutdown.clone())),
        done: false,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            let notify = st.att.notify.clone();
            let mut wait = Box::pin(notify.notified());
            wait.as_mut().enable();
            match st.att.svc.collect(&st.att, st.sent) {
                Ok(batch) if !batch.is_empty() => {
                    let mut out = String::new();
                    for t in &batch.unsequenced {
                        sse_event(&mut out, None, t);
                    }
                    for (seq, t) in &batch.messages {
                        sse_event(&mut out, Some(*seq), t);
                        st.sent = *seq;
                    }
                    return Some((Ok::<Bytes, Infallible>(Bytes::from(out)), st));
                }
                Ok(_) => {}
                Err(super::End::Removed) => {
                    // The last event: the client must not join again by itself.
                    st.done = true;
                    let mut out = String::new();
                    sse_event(&mut out, None, &ProtoError::removed().to_json(None));
                    return Some((Ok(Bytes::from(out)), st));
                }
                Err(_) => return None,
            }
            tokio::select! {
                _ = notified(Some(wait.as_mut())) => {}
                _ = st.keepalive.tick() => {
                    return Some((Ok(Bytes::from_static(b": keepalive\n\n")), st));
                }
                _ = &mut st.shutdown => {
                    st.done = true;
                }
            }
        }
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// `GET /signal/poll?session=S&last_seq=N&timeout=25`: a JSON array of messages.
pub(super) async fn poll(
    State(state): State<HttpState>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    let (svc, token, last) = match stream_request(&state, &params, &headers, false) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let timeout = match parse_u64(&params, "timeout") {
        Ok(t) => t.unwrap_or(POLL_DEFAULT).clamp(1, POLL_MAX),
        Err(e) => return error_response(&e, None),
    };
    let att = match svc
        .open(
            Open::Poll {
                token,
                last_seq: last,
            },
            Kind::Poll,
            request_host(&headers),
        )
        .await
    {
        Ok(a) => a,
        Err(e) => return error_response(&e, None),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let shutdown = shutdown_signal(svc.shutdown.clone());
    tokio::pin!(shutdown);
    loop {
        let notify = att.notify.clone();
        let mut wait = Box::pin(notify.notified());
        wait.as_mut().enable();
        match svc.collect(&att, att.from_seq) {
            Ok(batch) if !batch.is_empty() => {
                let mut out = String::from("[");
                for t in batch
                    .unsequenced
                    .iter()
                    .map(String::as_str)
                    .chain(batch.messages.iter().map(|(_, t)| t.as_str()))
                {
                    if out.len() > 1 {
                        out.push(',');
                    }
                    out.push_str(t);
                }
                out.push(']');
                return json_response(StatusCode::OK, out);
            }
            Ok(_) => {}
            Err(super::End::Gone) => {
                return error_response(&ProtoError::resume_failed(), None);
            }
            Err(super::End::Removed) => {
                return json_response(
                    StatusCode::OK,
                    format!("[{}]", ProtoError::removed().to_json(None)),
                );
            }
            Err(_) => return json_response(StatusCode::OK, "[]".to_string()),
        }
        tokio::select! {
            _ = notified(Some(wait.as_mut())) => {}
            _ = tokio::time::sleep_until(deadline) => {
                return json_response(StatusCode::OK, "[]".to_string());
            }
            _ = &mut shutdown => {
                return json_response(StatusCode::OK, "[]".to_string());
            }
        }
    }
}

/// `GET /api/ice-servers?service=turn&username=U[&key=K]`.
pub(super) async fn ice_servers(
    State(state): State<HttpState>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    let Some(svc) = state.signal.clone() else {
        return not_enabled();
    };
    let api_error = |status: StatusCode, code: &str, message: &str| {
        json_response(
            status,
            serde_json::json!({ "error": code, "message": message }).to_string(),
        )
    };
    if let Some(expected) = &svc.settings().api_key {
        let given = params
            .get("key")
            .map(String::as_str)
            .or_else(|| bearer(&headers))
            .unwrap_or("");
        let ok: bool = given.as_bytes().ct_eq(expected.as_bytes()).into();
        if !ok {
            return api_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "give the API key as ?key=K or Authorization: Bearer K",
            );
        }
    }
    match params.get("service").map(String::as_str) {
        None | Some("turn") => {}
        Some(_) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "only service=turn is supported",
            )
        }
    }
    let user = match params.get("username") {
        Some(u) => {
            if u.is_empty() || u.len() > 128 || u.chars().any(char::is_control) {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "username must be 1 to 128 bytes without control characters",
                );
            }
            u.clone()
        }
        None => format!("{:08x}", rand::random::<u32>()),
    };
    match svc
        .ice()
        .rest_response(request_host(&headers).as_deref(), &user)
    {
        Some(r) => json_response(
            StatusCode::OK,
            serde_json::to_string(&r).unwrap_or_default(),
        ),
        None => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this server has no --turn-secret, so it cannot mint TURN credentials",
        ),
    }
}
