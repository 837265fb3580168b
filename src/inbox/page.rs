//! The inbox web page: three files compiled into the binary and served at `/`.
//!
//! The page itself needs no sign-in (it holds no data); everything it shows comes from the
//! API, which does. Its policy allows only this origin's scripts, styles and connections, so
//! even text that slipped past the page's own care could not load or run anything.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

const INDEX: &str = include_str!("web/index.html");
const SCRIPT: &str = include_str!("web/inbox.js");
const STYLE: &str = include_str!("web/inbox.css");

/// What the page may load and where it may connect: its own origin only.
pub const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new()
        .route(
            "/",
            get(|h: HeaderMap| async move { asset(&h, INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/inbox.js",
            get(|h: HeaderMap| async move { asset(&h, SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/inbox.css",
            get(|h: HeaderMap| async move { asset(&h, STYLE, "text/css; charset=utf-8") }),
        )
}

/// A strong validator per asset; browsers revalidate (`no-cache`) and get 304 until an
/// upgrade changes the bytes.
fn etag(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    format!("\"{}\"", hex::encode(&digest[..12]))
}

fn asset(headers: &HeaderMap, body: &'static str, content_type: &'static str) -> Response {
    let tag = etag(body);
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == tag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
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
    response
}
