//! Who is calling: the bearer token is the agent. Extractors, so handlers cannot forget.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::{ApiError, ApiState};
use crate::model::{Agent, Role};

/// An enabled agent, from `Authorization: Bearer <token>`.
pub struct AuthAgent(pub Agent);

/// An enabled admin.
pub struct AdminAgent(pub Agent);

impl FromRequestParts<ApiState> for AuthAgent {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        match state.engine.authenticate(token)? {
            Some(agent) => Ok(AuthAgent(agent)),
            None => Err(ApiError::unauthorized()),
        }
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
