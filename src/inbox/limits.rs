//! Requests per IP address on the endpoints anyone can reach: the web chat (sessions and
//! messages) and the inbox sign-in; and web chat event streams held open per address. Over
//! the limit: 429 with `Retry-After`. Per-customer limits live with each channel (web hook
//! per `external_user`, web chat per session).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use switchboard_channel::limit::{RateLimiter, SLOT_RETRY_SECS, Slot, Slots, retry_after_secs};

/// The per-IP limiters and how to find the client's address.
pub struct IpLimit {
    /// Anonymous web chat requests.
    limiter: RateLimiter,
    /// Agents' sign-in, apart: a chat flood from an office's address must not lock its
    /// agents out.
    sign_in: RateLimiter,
    /// Web chat event streams open per address.
    streams: Arc<Slots<IpAddr>>,
    /// Take the address from the last `X-Forwarded-For` entry (added by our own proxy).
    trust_forwarded_for: bool,
}

impl IpLimit {
    pub fn new(per_minute: u32, streams_per_ip: usize, trust_forwarded_for: bool) -> Self {
        IpLimit {
            limiter: RateLimiter::per_minute(per_minute),
            sign_in: RateLimiter::per_minute(per_minute),
            streams: Slots::new(streams_per_ip),
            trust_forwarded_for,
        }
    }

    fn client(&self, request: &Request) -> Option<IpAddr> {
        if self.trust_forwarded_for
            && let Some(ip) = request
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok())
        {
            return Some(ip);
        }
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    }
}

/// Whether the request opens a web chat event stream (anonymous, and held open).
pub fn chat_stream(request: &Request) -> bool {
    let path = request.uri().path();
    request.method() == Method::GET && path.starts_with("/chat/") && path.ends_with("/events")
}

/// Which of the address's allowances a request without an agent's credentials draws on:
/// the web chat's or the sign-in's; `None` for every other route.
fn public(method: &Method, path: &str) -> Option<Bucket> {
    if *method != Method::POST {
        None
    } else if path.starts_with("/chat/") {
        Some(Bucket::Chat)
    } else if path == "/api/v1/session" {
        Some(Bucket::SignIn)
    } else {
        None
    }
}

#[derive(Clone, Copy)]
enum Bucket {
    Chat,
    SignIn,
}

impl IpLimit {
    /// Counts a public request against its client's address: the 429 to answer when the
    /// address is over its limit.
    pub fn refuse(&self, request: &Request) -> Option<Response> {
        let limiter = match public(request.method(), request.uri().path())? {
            Bucket::Chat => &self.limiter,
            Bucket::SignIn => &self.sign_in,
        };
        let ip = self.client(request)?;
        let wait = limiter.check(&ip.to_string()).err()?;
        let after = retry_after_secs(wait);
        tracing::debug!(%ip, path = request.uri().path(), "rate limited");
        let mut r = switchboard_channel::http_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests from this address; try again in {after} s"),
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(after));
        Some(r)
    }
}

impl IpLimit {
    /// A place for one more web chat event stream from the request's address (`None` when
    /// the address is unknown), or [`StreamRefused`] when the address holds its most.
    pub fn hold_stream(&self, request: &Request) -> Result<Option<Slot<IpAddr>>, StreamRefused> {
        let Some(ip) = self.client(request) else {
            return Ok(None);
        };
        self.streams.take(ip).map(Some).ok_or_else(|| {
            tracing::debug!(%ip, "too many web chat event streams from this address");
            StreamRefused
        })
    }
}

/// An address already holds its most web chat event streams.
pub struct StreamRefused;

impl IntoResponse for StreamRefused {
    fn into_response(self) -> Response {
        let mut r = switchboard_channel::http_error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            "too many open chat event streams from this address; close one first",
        )
        .into_response();
        too_many_streams(&mut r);
        r
    }
}

/// Marks a refused event stream: wait a few seconds, and this connection closes (a client
/// that keeps refused connections open would hold descriptors for nothing).
pub fn too_many_streams(response: &mut Response) {
    let headers = response.headers_mut();
    headers
        .entry(header::RETRY_AFTER)
        .or_insert(header::HeaderValue::from(SLOT_RETRY_SECS));
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
}

/// A web chat event stream while it is open: its address's place, and the gauge.
pub struct OpenStream {
    metrics: Arc<crate::metrics::Metrics>,
    _slot: Option<Slot<IpAddr>>,
}

impl OpenStream {
    pub fn new(metrics: Arc<crate::metrics::Metrics>, slot: Option<Slot<IpAddr>>) -> Self {
        metrics.chat_stream(true);
        OpenStream {
            metrics,
            _slot: slot,
        }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.metrics.chat_stream(false);
    }
}

/// `response` with `guard` kept until its (streamed) body is finished or dropped.
pub fn held_open<G: Send + 'static>(response: Response, guard: G) -> Response {
    use futures::StreamExt;
    let (parts, body) = response.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        let _held = &guard;
        chunk
    });
    Response::from_parts(parts, axum::body::Body::from_stream(body))
}
