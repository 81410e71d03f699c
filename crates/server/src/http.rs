//! The HTTP side: Prometheus metrics and health probes (signaling routes are added later via
//! [`router`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use tower_layer::Layer;

use crate::control::Control;
use crate::gate::{Gate, GateSettings};
use crate::metrics::Metrics;

/// Shared state of the HTTP handlers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// Per-address limits and the drain switch (`/readyz` answers 503 while draining).
    pub gate: Arc<Gate>,
    /// Signaling (`/ws`, `/signal/*`, `/api/ice-servers`); `None`: those routes answer 404.
    pub signal: Option<Arc<crate::signal::SignalService>>,
    /// The SIP gateway (`/sip`); `None`: `/sip` answers 404.
    pub sip: Option<Arc<crate::sip::SipService>>,
    /// Drain and reload for `/admin/*`; `None`: those routes answer 404.
    pub control: Option<Arc<Control>>,
    /// Whether this listener serves `/metrics` and `/admin/*` (not when `admin_listen` moves
    /// them to a listener of their own).
    pub admin_here: bool,
    /// The admin view's recent history (`/admin/history`).
    pub history: Arc<crate::history::History>,
}

impl HttpState {
    /// State with the default limits and no signaling.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        let gate = Gate::new(
            GateSettings::from_config(&crate::config::Config::default()),
            metrics.clone(),
        );
        HttpState {
            metrics,
            gate,
            signal: None,
            sip: None,
            control: None,
            admin_here: true,
            history: crate::history::History::new(),
        }
    }

    /// With signaling.
    pub fn with_signal(mut self, signal: Arc<crate::signal::SignalService>) -> Self {
        self.signal = Some(signal);
        self
    }
}

/// Content type of the Prometheus text exposition format produced by [`Metrics::encode`].
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// All routes, with the state applied. Later features add theirs with `.merge(...)`/`.route(...)`.
pub fn router(state: HttpState) -> Router {
    let r = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::web::routes())
        .merge(crate::signal::routes())
        .route("/sip", get(crate::sip::ws_handler));
    let r = if state.admin_here {
        r.merge(admin_routes())
    } else {
        r
    };
    // `/socket.io/` in front of the routes (socketioxide answers its own path, passes the rest).
    let sio = state
        .signal
        .as_ref()
        .and_then(crate::signal::socketio_layer);
    let r = r.with_state(state);
    match sio {
        // The client script first; the layer answers the rest of `/socket.io/`.
        Some(layer) => crate::web::socketio_client_routes().fallback_service(r.layer(layer)),
        None => r,
    }
}

/// The routes of the admin listener (`admin_listen`): metrics, health and `/admin/*`.
pub fn admin_router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(admin_routes())
        .with_state(state)
}

fn admin_routes() -> Router<HttpState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/status", get(admin_status))
        .route("/admin/sfu", get(admin_sfu))
        .route("/admin/calls", get(admin_calls))
        .route("/admin/drain", post(admin_drain))
        .route("/admin/reload", post(admin_reload))
        .route("/admin/rooms", get(admin_rooms))
        .route("/admin/history", get(admin_history))
        .route("/admin/rooms/{room}/close", post(admin_close_room))
        .route(
            "/admin/rooms/{room}/peers/{peer}/remove",
            post(admin_remove_peer),
        )
        .merge(crate::web::admin_routes())
}

/// What the listener knows of a connection: the client address, and its place under the
/// per-address connection limit (an upgraded WebSocket keeps it until it closes).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub addr: SocketAddr,
    pub slot: Arc<crate::gate::ConnSlot>,
}

/// The connection of a request, when the listener recorded it.
pub type Client = Option<Extension<ConnInfo>>;

/// The client's IP address, if known.
pub fn client_ip(c: &Client) -> Option<std::net::IpAddr> {
    c.as_ref().map(|Extension(info)| info.addr.ip())
}

/// The credential of an `Authorization: Bearer X` header (scheme case-insensitive).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// A JSON answer that no cache keeps.
pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// `/metrics` and `/admin/*`: with `admin_token` set, the token is required; without, metrics
/// are open and `/admin/*` answers loopback clients only.
fn authorize(
    state: &HttpState,
    headers: &HeaderMap,
    client: &Client,
    admin: bool,
) -> Result<(), Box<Response>> {
    let verdict = state
        .control
        .as_ref()
        .and_then(|c| c.admin_token_ok(bearer(headers)));
    match verdict {
        Some(true) => Ok(()),
        Some(false) => Err(Box::new(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a valid admin token is required (Authorization: Bearer TOKEN)\n",
            )
                .into_response(),
        )),
        None if !admin => Ok(()),
        None => {
            if client_ip(client).is_some_and(|ip| ip.is_loopback()) {
                Ok(())
            } else {
                Err(Box::new(
                    (
                        StatusCode::FORBIDDEN,
                        "admin endpoints answer loopback clients only unless admin_token is set\n",
                    )
                        .into_response(),
                ))
            }
        }
    }
}

/// The control handle for an admin request that passed [`authorize`] (404 when the server has
/// none, as in tests that serve the router alone).
fn admin_control(
    state: &HttpState,
    headers: &HeaderMap,
    client: &Client,
) -> Result<Arc<Control>, Box<Response>> {
    authorize(state, headers, client, true)?;
    state
        .control
        .clone()
        .ok_or_else(|| Box::new(StatusCode::NOT_FOUND.into_response()))
}

async fn admin_status(
    State(state): State<HttpState>,
    headers: HeaderMap,
    client: Client,
) -> Response {
    let control = match admin_control(&state, &headers, &client) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let sessions = state.signal.as_ref().map(|s| s.stats());
    let messages = state.signal.as_ref().map(|s| s.message_counts());
    let body = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": control.started().elapsed().as_secs(),
        "draining": control.draining().is_some(),
        "drain_remaining_secs": control.draining().map(|d| d.saturating_duration_since(std::time::Instant::now()).as_secs()),
        "allocations": control.allocations(),
        "signal_sessions": sessions.as_ref().map_or(0, |s| s.sessions),
        "signal_sessions_attached": sessions.as_ref().map_or(0, |s| s.attached),
        "signal_rooms": sessions.as_ref().map_or(0, |s| s.rooms),
        "signal_messages_in": messages.map_or(0, |m| m.0),
        "signal_messages_out": messages.map_or(0, |m| m.1),
        "open_connections": state.gate.open_connections(),
        "sfu": state.signal.as_ref().and_then(|s| s.sfu()).map(|s| sfu_totals_json(&s)),
        "sip": state.sip.as_ref().map(|sip| serde_json::json!({
            "upstream": sip.upstream().to_string(),
            "flows": sip.flows(),
            "bridged_calls": sip.media().map_or(0, |x| x.calls()),
            "dialed_calls": sip.dial().map_or(0, |d| d.calls()),
            "dropped_foreign": sip.dropped_foreign(),
            "media": state.signal.as_ref().and_then(|s| s.sfu()).map(|s| s.snapshot().bridge),
        })),
        "cluster": state.signal.as_ref().and_then(|s| s.cluster()).map(|c| serde_json::json!({
            "node": c.node(),
            "up": c.is_up(),
            "rooms": c.rooms(),
            "nodes": c.nodes(),
        })),
    });
    json_response(StatusCode::OK, body.to_string())
}

/// The SFU block of `/admin/status`: its address and totals.
fn sfu_totals_json(sfu: &crate::sfu::SfuService) -> serde_json::Value {
    let mut v = serde_json::to_value(sfu.snapshot().totals).unwrap_or_default();
    v["address"] = serde_json::Value::String(sfu.udp.to_string());
    v
}

/// `GET /admin/sfu`: every SFU room (participants, tracks, bitrates, speaker); with
/// `?room=R`, that room's participants in detail (ICE state, address, bitrates, bandwidth
/// estimate, published layers, forwarded layers and views).
async fn admin_sfu(
    State(state): State<HttpState>,
    headers: HeaderMap,
    client: Client,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(r) = admin_control(&state, &headers, &client) {
        return *r;
    }
    let Some(sfu) = state.signal.as_ref().and_then(|s| s.sfu()) else {
        return json_response(
            StatusCode::NOT_FOUND,
            r#"{"error":"not_found","message":"this server has no SFU (sfu_listen is off)"}"#
                .to_string(),
        );
    };
    let body = match q.get("room") {
        Some(room) => serde_json::json!({
            "room": room,
            "participants": sfu.peer_stats(room).await,
        }),
        None => {
            let snap = sfu.snapshot();
            serde_json::json!({
                "address": sfu.udp.to_string(),
                "totals": snap.totals,
                "rooms": snap.rooms,
            })
        }
    };
    json_response(StatusCode::OK, body.to_string())
}

/// A JSON error answer `{"error": code, "message": message}`.
fn admin_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        serde_json::json!({ "error": code, "message": message }).to_string(),
    )
}

/// Signaling for an admin request that passed [`authorize`] (404 without).
fn admin_signal(
    state: &HttpState,
    headers: &HeaderMap,
    client: &Client,
) -> Result<Arc<crate::signal::SignalService>, Box<Response>> {
    admin_control(state, headers, client)?;
    state.signal.clone().ok_or_else(|| {
        Box::new(admin_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "signaling is not enabled on this server",
        ))
    })
}

/// `GET /admin/rooms`: every room with its members (in a cluster: of every node).
async fn admin_rooms(
    State(state): State<HttpState>,
    headers: HeaderMap,
    client: Client,
) -> Response {
    let signal = match admin_signal(&state, &headers, &client) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match signal.admin_rooms().await {
        Ok(v) => json_response(StatusCode::OK, v.to_string()),
        Err(e) => admin_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &e.to_string(),
        ),
    }
}

/// `GET /admin/history`: the samples of the last minutes (rates and levels).
async fn admin_history(
    State(state): State<HttpState>,
    headers: HeaderMap,
    client: Client,
) -> Response {
    if let Err(r) = admin_control(&state, &headers, &client) {
        return *r;
    }
    let body = serde_json::json!({
        "interval_secs": crate::history::SAMPLE_EVERY.as_secs(),
        "keep_secs": crate::history::KEEP.as_secs(),
        "samples": state.history.samples(),
    });
    json_response(StatusCode::OK, body.to_string())
}

type RoomPath = Result<axum::extract::Path<(String,)>, axum::extract::rejection::PathRejection>;
type PeerPath =
    Result<axum::extract::Path<(String, String)>, axum::extract::rejection::PathRejection>;

fn bad_path(e: &axum::extract::rejection::PathRejection) -> Response {
    admin_error(StatusCode::BAD_REQUEST, "bad_request", &e.body_text())
}

/// Runs an admin removal and answers it.
async fn admin_remove(
    signal: &crate::signal::SignalService,
    room: &str,
    peer: Option<&str>,
) -> Response {
    use crate::signal::admin::{valid_peer_id, valid_room_name, AdminError};
    if !valid_room_name(room) {
        return admin_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a room name is 1 to 128 bytes without control characters (percent-encode it)",
        );
    }
    if peer.is_some_and(|p| !valid_peer_id(p)) {
        return admin_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a peer id is 1 to 64 of A-Z a-z 0-9 - _",
        );
    }
    match signal.admin_remove(room, peer).await {
        Ok(removed) => {
            tracing::info!(room, ?removed, "removed over /admin");
            json_response(
                StatusCode::OK,
                serde_json::json!({ "room": room, "removed": removed }).to_string(),
            )
        }
        Err(AdminError::UnknownRoom) => {
            admin_error(StatusCode::NOT_FOUND, "unknown_room", "no such room")
        }
        Err(AdminError::UnknownPeer) => admin_error(
            StatusCode::NOT_FOUND,
            "unknown_peer",
            "no such peer in this room",
        ),
        Err(AdminError::Store(e)) => admin_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &e.to_string(),
        ),
    }
}

/// `POST /admin/rooms/{room}/close`: every member removed.
async fn admin_close_room(
    State(state): State<HttpState>,
    headers: HeaderMap,
    client: Client,
    path: RoomPath,
) -> Response {
    let signal = match admin_signal(&state, &headers, &client) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match path {
        Ok(axum::extract::Path((room,))) => admin_remove(&signal, &room, None).await,
        Err(e) => bad_path(&e),
    }
}

/// `POST /admin/rooms/{room}/peers/{peer}/remove`: one member removed.
async fn admin_remove_peer(
    State(state): State<HttpState>,
    headers: HeaderMap,
    client: Client,
    path: PeerPath,
) -> Response {
    let signal = match admin_signal(&state, &headers, &client) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match path {
        Ok(axum::extract::Path((room, peer))) => admin_remove(&signal, &room, Some(&peer)).await,
        Err(e) => bad_path(&e),
    }
}

/// `GET /admin/calls`: signaling messages and bytes per call — the calls live on this node and
/// the last ones that ended here (docs/CONFIG.md).
async fn admin_calls(
    State(state): State<HttpState>,
    headers: HeaderMap,
    client: Client,
) -> Response {
    if let Err(r) = admin_control(&state, &headers, &client) {
        return *r;
    }
    let (live, finished) = state.signal.as_ref().map(|s| s.calls()).unwrap_or_default();
    json_response(
        StatusCode::OK,
        serde_json::json!({ "live": live, "finished": finished }).to_string(),
    )
}

async fn admin_drain(
    State(state): State<HttpState>,
    headers: HeaderMap,
    client: Client,
) -> Response {
    let control = match admin_control(&state, &headers, &client) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let deadline = control.drain();
    tracing::info!("drain requested over /admin/drain");
    let body = serde_json::json!({
        "draining": true,
        "deadline_secs": deadline.saturating_duration_since(std::time::Instant::now()).as_secs(),
    });
    json_response(StatusCode::OK, body.to_string())
}

async fn admin_reload(
    State(state): State<HttpState>,
    headers: HeaderMap,
    client: Client,
) -> Response {
    let control = match admin_control(&state, &headers, &client) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let (status, body) = match control.reload().await {
        Ok(changes) => (
            StatusCode::OK,
            serde_json::json!({ "reloaded": true, "changes": changes }),
        ),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({ "reloaded": false, "error": e }),
        ),
    };
    json_response(status, body.to_string())
}

async fn metrics(State(state): State<HttpState>, headers: HeaderMap, client: Client) -> Response {
    if let Err(r) = authorize(&state, &headers, &client, false) {
        return *r;
    }
    if let Some(signal) = &state.signal {
        let st = signal.stats();
        let m = &state.metrics;
        m.signal_sessions
            .set(i64::try_from(st.sessions).unwrap_or(i64::MAX));
        m.signal_sessions_attached
            .set(i64::try_from(st.attached).unwrap_or(i64::MAX));
        m.signal_rooms
            .set(i64::try_from(st.rooms).unwrap_or(i64::MAX));
        m.signal_buffered_bytes
            .set(i64::try_from(st.buffered_bytes).unwrap_or(i64::MAX));
        if let Some(sfu) = signal.sfu() {
            let snap = sfu.snapshot();
            m.sfu.update(&snap);
            if let Some(sip) = &state.sip {
                m.sip.update(
                    sip.flows(),
                    sip.media().map_or(0, |x| x.calls()),
                    sip.dial().map_or(0, |d| d.calls()),
                    &snap.bridge,
                );
            }
        }
        if let Some(c) = signal.cluster() {
            m.cluster_up.set(i64::from(c.is_up()));
            m.cluster_nodes
                .set(i64::try_from(c.nodes().len()).unwrap_or(i64::MAX));
        }
    }
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if state.gate.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        (StatusCode::OK, "ready")
    }
}

/// Serve [`router`] on `listener` until `shutdown` completes.
///
/// With `tls`, the same port speaks both plain HTTP and HTTPS: the first byte of a connection
/// tells a TLS ClientHello (0x16) from an HTTP request, so `https://`/`wss://` and `http://` (health
/// checks, metrics scrapers) work on one listener.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    state: HttpState,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let gate = state.gate.clone();
    serve_router(listener, router(state), gate, tls, shutdown).await
}

/// Serve `app` on `listener` (see [`serve_http`]); every connection is admitted by `gate` first.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    gate: Arc<Gate>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().ok();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    // Answers over TLS tell browsers to stay on TLS (HSTS); plain HTTP answers cannot.
    let app_tls = app
        .clone()
        .layer(axum::middleware::map_response(strict_transport_security));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!("HTTP accept on {addr:?}: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        // Over the address's connection rate or open-connection limit: closed at once.
        let Some(slot) = gate.admit(peer.ip()) else {
            drop(stream);
            continue;
        };
        let info = ConnInfo {
            addr: peer,
            slot: Arc::new(slot),
        };
        let app_tls = Extension(info.clone()).layer(app_tls.clone());
        let app = Extension(info).layer(app.clone());
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            if let Some(acceptor) = acceptor {
                let mut first = [0u8; 1];
                let sniff = tokio::time::timeout(TLS_SNIFF_TIMEOUT, stream.peek(&mut first)).await;
                if matches!(sniff, Ok(Ok(1))) && first[0] == 0x16 {
                    match tokio::time::timeout(TLS_SNIFF_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_connection(tls, app_tls).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "HTTPS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
                    }
                    return;
                }
            }
            serve_connection(stream, app).await;
        });
    }
}

async fn strict_transport_security(mut res: Response) -> Response {
    res.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        header::HeaderValue::from_static("max-age=31536000"),
    );
    res
}

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a connection may take to send its first byte and finish a TLS handshake.
const TLS_SNIFF_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn serve_connection<S>(stream: S, app: axum::middleware::AddExtension<Router, ConnInfo>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    // A client that trickles its request headers (slowloris) is cut off.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    if let Err(e) = builder
        .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
        .await
    {
        tracing::trace!("HTTP connection: {e}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_raw(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[tokio::test]
    async fn endpoints_over_real_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = HttpState::new(Arc::new(Metrics::new()));
        state.metrics.allocations.set(3);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_http(listener, state.clone(), None, async move {
            let _ = stop_rx.await;
        }));

        let r = get_raw(addr, "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.ends_with("ok"), "{r}");

        let r = get_raw(addr, "/readyz").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.ends_with("ready"), "{r}");

        let r = get_raw(addr, "/metrics").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(
            r.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{r}"
        );
        assert!(r.contains("icebreaker_turn_allocations 3"), "{r}");

        state.gate.set_draining(true);
        let r = get_raw(addr, "/readyz").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");

        let r = get_raw(addr, "/nope").await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");

        stop_tx.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
