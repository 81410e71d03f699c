//! The HTTP side: Prometheus metrics and health probes (signaling routes are added later via
//! [`router`]).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

/// Shared state of the HTTP handlers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// Set when the server is shutting down gracefully: `/readyz` then answers 503 so load
    /// balancers stop sending new clients while existing allocations finish.
    pub draining: Arc<AtomicBool>,
    /// Signaling (`/ws`, `/signal/*`, `/api/ice-servers`); `None`: those routes answer 404.
    pub signal: Option<Arc<crate::signal::SignalService>>,
}

impl HttpState {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        HttpState {
            metrics,
            draining: Arc::new(AtomicBool::new(false)),
            signal: None,
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
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::web::routes())
        .merge(crate::signal::routes())
        .with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    if let Some(signal) = &state.signal {
        let st = signal.stats();
        let m = &state.metrics;
        m.signal_sessions
            .set(i64::try_from(st.sessions).unwrap_or(i64::MAX));
        m.signal_sessions_attached
            .set(i64::try_from(st.attached).unwrap_or(i64::MAX));
        m.signal_rooms
            .set(i64::try_from(st.rooms).unwrap_or(i64::MAX));
    }
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if state.draining.load(Ordering::Relaxed) {
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
    let addr = listener.local_addr().ok();
    let app = router(state);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
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
        let app = app.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            if let Some(acceptor) = acceptor {
                let mut first = [0u8; 1];
                let sniff = tokio::time::timeout(TLS_SNIFF_TIMEOUT, stream.peek(&mut first)).await;
                if matches!(sniff, Ok(Ok(1))) && first[0] == 0x16 {
                    match tokio::time::timeout(TLS_SNIFF_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_connection(tls, app).await,
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

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a connection may take to send its first byte and finish a TLS handshake.
const TLS_SNIFF_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn serve_connection<S>(stream: S, app: Router)
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

        state.draining.store(true, Ordering::Relaxed);
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
