//! Requests per IP address on the endpoints anyone can reach: the web chat (sessions and
//! messages) and the inbox sign-in. Over the limit: 429 with `Retry-After`. Per-customer
//! limits live with each channel (web hook per `external_user`, web chat per session).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use switchboard_channel::limit::{RateLimiter, retry_after_secs};

/// The per-IP limiter and how to find the client's address.
pub struct IpLimit {
    limiter: RateLimiter,
    /// Take the address from the last `X-Forwarded-For` entry (added by our own proxy).
    trust_forwarded_for: bool,
}

impl IpLimit {
    pub fn new(per_minute: u32, trust_forwarded_for: bool) -> Self {
        IpLimit {
            limiter: RateLimiter::per_minute(per_minute),
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

/// Whether anyone may call this route without an agent's credentials.
fn public(method: &Method, path: &str) -> bool {
    *method == Method::POST && (path.starts_with("/chat/") || path == "/api/v1/session")
}

impl IpLimit {
    /// Counts a public request against its client's address: the 429 to answer when the
    /// address is over its limit.
    pub fn refuse(&self, request: &Request) -> Option<Response> {
        if !public(request.method(), request.uri().path()) {
            return None;
        }
        let ip = self.client(request)?;
        let wait = self.limiter.check(&ip.to_string()).err()?;
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
