//! `/api/v1/canned`: the team's saved replies.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::ApiState;
use super::auth::AuthAgent;
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use crate::engine::CannedResponse;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CannedBody {
    /// One word (letters, digits, `-`, `_`; up to 32), typed after `/` in the reply box.
    #[schema(pattern = r"\S", max_length = 33)]
    shortcut: String,
    /// Up to 100 characters, not blank.
    #[schema(pattern = r"\S", max_length = 100)]
    title: String,
    /// Up to 4,000 characters, not blank.
    #[schema(pattern = r"\S", max_length = 4000)]
    text: String,
}

/// Every saved reply, by shortcut.
#[utoipa::path(get, path = "/canned", tag = "canned responses",
    responses((status = 200, body = Vec<CannedResponse>), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<ApiState>,
    _agent: AuthAgent,
) -> Result<Json<Vec<CannedResponse>>, ApiError> {
    Ok(Json(state.engine.canned_responses().await?))
}

/// Saves a new reply.
#[utoipa::path(post, path = "/canned", tag = "canned responses", request_body = CannedBody,
    responses((status = 201, body = CannedResponse), (status = 409, description = "The shortcut is taken", body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<ApiState>,
    _agent: AuthAgent,
    ApiJson(body): ApiJson<CannedBody>,
) -> Result<(StatusCode, Json<CannedResponse>), ApiError> {
    let saved = state
        .engine
        .save_canned(None, &body.shortcut, &body.title, &body.text)
        .await?;
    Ok((StatusCode::CREATED, Json(saved)))
}

/// Replaces a saved reply.
#[utoipa::path(put, path = "/canned/{id}", tag = "canned responses", request_body = CannedBody,
    params(("id" = u64, Path, description = "Canned response id")),
    responses((status = 200, body = CannedResponse), (status = 404, body = ErrorBody), (status = 409, description = "The shortcut is taken", body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<ApiState>,
    _agent: AuthAgent,
    ApiPath(id): ApiPath<u64>,
    ApiJson(body): ApiJson<CannedBody>,
) -> Result<Json<CannedResponse>, ApiError> {
    Ok(Json(
        state
            .engine
            .save_canned(Some(id), &body.shortcut, &body.title, &body.text)
            .await?,
    ))
}

/// Deletes a saved reply.
#[utoipa::path(delete, path = "/canned/{id}", tag = "canned responses",
    params(("id" = u64, Path, description = "Canned response id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<ApiState>,
    _agent: AuthAgent,
    ApiPath(id): ApiPath<u64>,
) -> Result<StatusCode, ApiError> {
    state.engine.delete_canned(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
