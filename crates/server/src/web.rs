//! The browser side served by the binary: the demo pages, the ICE/TURN tester and the SDK,
//! embedded at compile time (no files needed at run time).
//!
//! | path | file |
//! |---|---|
//! | `/` | `web/index.html` (create or join a room) |
//! | `/r/{room}` | `web/room.html` (the same page for every room) |
//! | `/tools/ice` | `web/tools/ice.html` (ICE/TURN tester) |
//! | `/sdk/icebreaker.js` | the browser SDK (ES module) |
//! | `/style.css`, `/app/*.js` | the pages' stylesheet and scripts |
//! | `/admin`, `/admin/admin.js`, `/admin/admin.css` | the admin view (`web/admin.html`, `web/app/admin.js`, `web/admin.css`; served with `/admin/*`) |
//!
//! Every answer carries a strong `ETag` (computed at compile time) and `Cache-Control: no-cache`,
//! so browsers revalidate cheaply and never run a stale SDK against a newer server, plus security
//! headers: a CSP that allows only this origin (scripts, styles, `fetch`/WebSocket/EventSource)
//! and local media, `nosniff`, no framing, no referrer.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: &'static str,
}

/// FNV-1a 64 over the file, at compile time: a cheap, stable validator for `ETag`.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// `"` + 16 hex digits + `"`, at compile time.
const fn etag_bytes(body: &str) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = fnv1a(body.as_bytes());
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((h >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! asset {
    ($path:literal, $ct:expr) => {{
        const BODY: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/", $path));
        const TAG: [u8; 18] = etag_bytes(BODY);
        const ETAG: &str = match std::str::from_utf8(&TAG) {
            Ok(s) => s,
            Err(_) => panic!("etag is ASCII"),
        };
        Asset {
            body: BODY,
            content_type: $ct,
            etag: ETAG,
        }
    }};
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static INDEX: Asset = asset!("index.html", HTML);
static ROOM: Asset = asset!("room.html", HTML);
static ICE: Asset = asset!("tools/ice.html", HTML);
static SDK: Asset = asset!("sdk/icebreaker.js", JS);
static STYLE: Asset = asset!("style.css", CSS);
static INDEX_JS: Asset = asset!("app/index.js", JS);
static ROOM_JS: Asset = asset!("app/room.js", JS);
static ICE_JS: Asset = asset!("app/ice.js", JS);
static SOCKETIO_JS: Asset = asset!("sdk/socket.io.js", JS);
static ADMIN: Asset = asset!("admin.html", HTML);
static ADMIN_JS: Asset = asset!("app/admin.js", JS);
static ADMIN_CSS: Asset = asset!("admin.css", CSS);

/// Content-Security-Policy of every answer. `'self'` in `connect-src` covers `ws:`/`wss:` to the
/// same host (CSP level 3); `blob:`/`mediastream:` are for `<video>` playing camera and peers.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; media-src 'self' blob: mediastream:; connect-src 'self'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Longest room name the protocol allows (`join.room`, 1–64 characters).
const MAX_ROOM_LEN: usize = 64;

/// The page routes. Generic over the router state so it can be merged into any router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { serve(&INDEX, &h) }))
        .route("/r/{room}", get(room))
        .route(
            "/tools/ice",
            get(|h: HeaderMap| async move { serve(&ICE, &h) }),
        )
        .route(
            "/sdk/icebreaker.js",
            get(|h: HeaderMap| async move { serve(&SDK, &h) }),
        )
        .route(
            "/style.css",
            get(|h: HeaderMap| async move { serve(&STYLE, &h) }),
        )
        .route(
            "/app/index.js",
            get(|h: HeaderMap| async move { serve(&INDEX_JS, &h) }),
        )
        .route(
            "/app/room.js",
            get(|h: HeaderMap| async move { serve(&ROOM_JS, &h) }),
        )
        .route(
            "/app/ice.js",
            get(|h: HeaderMap| async move { serve(&ICE_JS, &h) }),
        )
}

/// Our socket.io client (`web/sdk/socket.io.js`) where a Node socket.io server serves its own:
/// `/socket.io/socket.io.js` (and `.min.js`), so that codelab pages load it unchanged. These
/// routes sit in front of the socket.io layer, which answers everything else under
/// `/socket.io/`.
pub fn socketio_client_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/socket.io/socket.io.js",
            get(|h: HeaderMap| async move { serve(&SOCKETIO_JS, &h) }),
        )
        .route(
            "/socket.io/socket.io.min.js",
            get(|h: HeaderMap| async move { serve(&SOCKETIO_JS, &h) }),
        )
}

/// The admin view's page and its script and stylesheet: served with the other `/admin/*`
/// routes (on `admin_listen` when set). The page itself is static and public; everything it
/// shows comes from the token-protected `/admin/*` JSON endpoints.
pub fn admin_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/admin",
            get(|h: HeaderMap| async move { serve(&ADMIN, &h) }),
        )
        .route(
            "/admin/admin.js",
            get(|h: HeaderMap| async move { serve(&ADMIN_JS, &h) }),
        )
        .route(
            "/admin/admin.css",
            get(|h: HeaderMap| async move { serve(&ADMIN_CSS, &h) }),
        )
}

async fn room(Path(room): Path<String>, h: HeaderMap) -> Response {
    // The page validates the name itself and the server refuses bad ones at `join`; here only
    // keep absurd paths out.
    if room.is_empty() || room.len() > MAX_ROOM_LEN {
        return (StatusCode::NOT_FOUND, "no such room page").into_response();
    }
    serve(&ROOM, &h)
}

fn serve(asset: &'static Asset, req: &HeaderMap) -> Response {
    let not_modified = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        });
    let mut res = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let h = res.headers_mut();
    if !not_modified {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
    }
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(self), microphone=(self), geolocation=()"),
    );
    res
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn etags_are_quoted_hex_and_distinct() {
        for a in [
            &INDEX, &ROOM, &ICE, &SDK, &STYLE, &ADMIN, &ADMIN_JS, &ADMIN_CSS,
        ] {
            assert_eq!(a.etag.len(), 18);
            assert!(a.etag.starts_with('"') && a.etag.ends_with('"'));
            assert!(a.etag[1..17].bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(INDEX.etag, ROOM.etag);
    }

    #[test]
    fn headers_and_revalidation() {
        let r = serve(&SDK, &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(h[header::CONTENT_TYPE], JS);
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("connect-src 'self'"));
        let mut req = HeaderMap::new();
        req.insert(header::IF_NONE_MATCH, HeaderValue::from_static(SDK.etag));
        assert_eq!(serve(&SDK, &req).status(), StatusCode::NOT_MODIFIED);
    }
}
