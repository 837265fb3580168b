//! `/api/v1/session`: the inbox page signs in with an agent token and gets a session cookie.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::auth::{AuthAgent, session_cookie};
use super::error::{ApiError, ApiJson, ErrorBody};
use crate::model::Agent;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// The agent's API token.
    token: String,
}

/// A signed-in browser: who, and the CSRF token to send with changes.
#[derive(Serialize, ToSchema)]
pub struct SessionInfo {
    agent: Agent,
    /// Send as `X-CSRF-Token` with every request that changes something.
    csrf: String,
}

/// Signs in with an agent token: sets the HttpOnly session cookie.
#[utoipa::path(post, path = "/session", tag = "agents", request_body = SignIn, security(()),
    responses((status = 201, body = SessionInfo), (status = 401, body = ErrorBody),
        (status = 429, description = "Too many sign-ins from this address; see Retry-After", body = ErrorBody)))]
pub async fn sign_in(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<Response, ApiError> {
    let agent = state
        .engine
        .authenticate(body.token.trim())
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let (id, session) = state.sessions.create(&agent).await?;
    tracing::info!(agent = %agent.id, "agent signed in");
    Ok((
        StatusCode::CREATED,
        [(header::SET_COOKIE, state.sessions.cookie(Some(&id)))],
        Json(SessionInfo {
            agent: agent.redacted(),
            csrf: session.csrf,
        }),
    )
        .into_response())
}

/// The current sign-in (session cookie), with its CSRF token.
#[utoipa::path(get, path = "/session", tag = "agents",
    responses((status = 200, body = SessionInfo), (status = 401, body = ErrorBody)))]
pub async fn current(
    State(state): State<ApiState>,
    headers: HeaderMap,
    AuthAgent(agent): AuthAgent,
) -> Result<Json<SessionInfo>, ApiError> {
    let session = match session_cookie(&headers) {
        Some(id) => state.sessions.lookup(id).await?,
        None => None,
    }
    .ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "not signed in: this request carries no session cookie",
        )
    })?;
    Ok(Json(SessionInfo {
        agent: agent.redacted(),
        csrf: session.csrf,
    }))
}

/// Signs out: ends the session and clears the cookie.
#[utoipa::path(delete, path = "/session", tag = "agents",
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn sign_out(
    State(state): State<ApiState>,
    headers: HeaderMap,
    _agent: AuthAgent,
) -> Result<Response, ApiError> {
    if let Some(id) = session_cookie(&headers) {
        state.sessions.revoke(id).await?;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, state.sessions.cookie(None))],
    )
        .into_response())
}
