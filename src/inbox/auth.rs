//! Who is calling. Two credentials, one extractor, so handlers cannot forget:
//!
//! - `Authorization: Bearer <agent token>`, for scripts and integrations;
//! - the inbox page's session cookie (`sb_session`, HttpOnly, SameSite=Strict), got by
//!   signing in with a token at `POST /api/v1/session`. A request that changes anything
//!   (not GET/HEAD) with the cookie must also carry the session's CSRF token in
//!   `X-CSRF-Token`, which only the page itself can read.
//!
//! Sessions are kept in the store under a hash of their id (a copied database holds no
//! usable session), bound to the agent's token at sign-in: rotating the token or disabling
//! the agent ends every session at once.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use switchboard_channel::{ChannelState, now_ms};

use super::{ApiError, ApiState};
use crate::model::{Agent, AgentId, Role};

/// An enabled agent, from a bearer token or a session cookie.
pub struct AuthAgent(pub Agent);

/// An enabled admin.
pub struct AdminAgent(pub Agent);

/// The session cookie's name.
pub const COOKIE: &str = "sb_session";
/// The header carrying the CSRF token with cookie-authenticated changes.
pub const CSRF_HEADER: &str = "x-csrf-token";

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Whether a browser request comes from our own pages, by what browsers say on their own
/// (a second layer under the CSRF token): `Sec-Fetch-Site` must be `same-origin` (or `none`,
/// typed by the user), and an `Origin` must name the host the request went to (`Host`, or
/// `X-Forwarded-Host` behind a proxy). A header a browser did not send is not held against it.
pub fn from_our_pages(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let Some(origin) = text("origin") else {
        return true;
    };
    let Some(origin_host) = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
    else {
        return false;
    };
    [text("x-forwarded-host"), text("host")]
        .into_iter()
        .flatten()
        .any(|host| host.eq_ignore_ascii_case(origin_host))
}

/// The session id in the request's cookies, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .filter(|v| !v.is_empty())
}

impl FromRequestParts<ApiState> for AuthAgent {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(token) = bearer(&parts.headers) {
            return match state.engine.authenticate(token).await? {
                Some(agent) => Ok(AuthAgent(agent)),
                None => Err(ApiError::unauthorized()),
            };
        }
        let id = session_cookie(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        let session = state
            .sessions
            .lookup(id)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            if !from_our_pages(&parts.headers) {
                return Err(ApiError::forbidden(
                    "a change made with the session cookie must come from the inbox's own pages",
                ));
            }
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !bool::from(sent.ct_eq(session.csrf.as_bytes())) {
                return Err(ApiError::forbidden(
                    "a change made with the session cookie needs its X-CSRF-Token",
                ));
            }
        }
        let agent = state
            .engine
            .store()
            .agent(session.agent)
            .await?
            .filter(|a| !a.disabled && a.token_hash == session.token_hash)
            .ok_or_else(ApiError::unauthorized)?;
        Ok(AuthAgent(agent))
    }
}

impl FromRequestParts<ApiState> for AdminAgent {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let AuthAgent(agent) = AuthAgent::from_request_parts(parts, state).await?;
        if agent.role != Role::Admin {
            return Err(ApiError::forbidden("this needs an admin"));
        }
        Ok(AdminAgent(agent))
    }
}

/// A signed-in browser, as stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct Session {
    pub agent: AgentId,
    /// Sent back in `X-CSRF-Token` with every change.
    pub csrf: String,
    /// The agent's token hash at sign-in; a rotated token ends the session.
    token_hash: String,
    expires_ms: i64,
}

/// The inbox page's sign-ins, kept in the store.
pub struct Sessions {
    kv: std::sync::Arc<dyn ChannelState>,
    ttl_ms: i64,
    /// Mark the cookie `Secure` (HTTPS in front).
    secure: bool,
}

fn random_hex() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

fn key(id: &str) -> Vec<u8> {
    hex::encode(Sha256::digest(id.as_bytes())).into_bytes()
}

impl Sessions {
    pub fn new(kv: std::sync::Arc<dyn ChannelState>, hours: u64, secure: bool) -> Sessions {
        Sessions {
            kv,
            ttl_ms: (hours as i64).saturating_mul(3_600_000),
            secure,
        }
    }

    /// The `Set-Cookie` value carrying a session id (or clearing it, for `None`).
    pub fn cookie(&self, id: Option<&str>) -> String {
        let (value, age) = match id {
            Some(id) => (id, self.ttl_ms / 1000),
            None => ("", 0),
        };
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={age}{secure}")
    }

    /// Starts a session for an agent; returns its id (the cookie) and the stored record.
    pub async fn create(&self, agent: &Agent) -> Result<(String, Session), ApiError> {
        let id = random_hex();
        let session = Session {
            agent: agent.id,
            csrf: random_hex(),
            token_hash: agent.token_hash.clone(),
            expires_ms: now_ms().saturating_add(self.ttl_ms),
        };
        let value = serde_json::to_vec(&session).expect("sessions serialise");
        self.kv
            .put_all(&[(&key(&id), &value)])
            .await
            .map_err(unavailable)?;
        Ok((id, session))
    }

    /// The live session with this id.
    pub async fn lookup(&self, id: &str) -> Result<Option<Session>, ApiError> {
        let Some(value) = self.kv.get(&key(id)).await.map_err(unavailable)? else {
            return Ok(None);
        };
        // A signed-out session is an empty record.
        Ok(serde_json::from_slice::<Session>(&value)
            .ok()
            .filter(|s| s.expires_ms > now_ms()))
    }

    /// Ends a session.
    pub async fn revoke(&self, id: &str) -> Result<(), ApiError> {
        self.kv
            .put_all(&[(&key(id), b"")])
            .await
            .map_err(unavailable)
    }
}

fn unavailable(e: switchboard_channel::StateError) -> ApiError {
    tracing::error!(error = %e, "session store failed");
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "sign-in is unavailable; try again",
    )
}

#[cfg(test)]
mod tests {
    use super::from_our_pages;
    use axum::http::HeaderMap;

    #[test]
    fn cookie_changes_come_only_from_our_own_pages() {
        // (headers, allowed)
        let table: [(&[(&str, &str)], bool); 9] = [
            (&[], true),
            (&[("sec-fetch-site", "same-origin")], true),
            (&[("sec-fetch-site", "none")], true),
            (&[("sec-fetch-site", "cross-site")], false),
            (&[("sec-fetch-site", "same-site")], false),
            (
                &[
                    ("host", "inbox.shop.test"),
                    ("origin", "https://inbox.shop.test"),
                ],
                true,
            ),
            (
                &[("host", "inbox.shop.test"), ("origin", "https://evil.test")],
                false,
            ),
            (
                &[
                    ("host", "127.0.0.1:8080"),
                    ("x-forwarded-host", "support.shop.test"),
                    ("origin", "https://support.shop.test"),
                ],
                true,
            ),
            (&[("host", "inbox.shop.test"), ("origin", "null")], false),
        ];
        for (i, (pairs, allowed)) in table.into_iter().enumerate() {
            let mut headers = HeaderMap::new();
            for (k, v) in pairs {
                headers.insert(*k, v.parse().unwrap());
            }
            assert_eq!(from_our_pages(&headers), allowed, "row {i}");
        }
    }
}
