//! `/api/v1/attachments`, `/api/v1/channels` and `/api/v1/hours`: file bytes for replies and
//! from customers, how each channel's connection is doing, and whether people are at work.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use switchboard_channel::{Attachment, BlobId, Blobs, Capabilities, ChannelHealth};
use utoipa::{IntoParams, ToSchema};

use super::ApiState;
use super::auth::AuthAgent;
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// File name shown to the customer: up to 255 characters, not blank, no slashes.
    #[param(
        pattern = r"^[^/\\\u0000]*[^/\\\u0000\s][^/\\\u0000]*$",
        max_length = 255
    )]
    name: String,
}

/// A stored file, to attach to replies (`attachments` of a reply).
#[derive(Serialize, ToSchema)]
pub struct StoredFile {
    name: String,
    content_type: String,
    size: u64,
    /// SHA-256 of the content: the file's id.
    blob: String,
}

/// Stores a file (the raw request body, with its `Content-Type`) for a reply.
#[utoipa::path(post, path = "/attachments", tag = "attachments", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = StoredFile), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn upload(
    State(state): State<ApiState>,
    _agent: AuthAgent,
    ApiQuery(query): ApiQuery<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<StoredFile>), ApiError> {
    let name = query.name.trim();
    if name.is_empty() || name.chars().count() > 255 || name.contains(['/', '\\', '\0']) {
        return Err(ApiError::invalid(
            "name must be 1 to 255 characters without slashes",
        ));
    }
    if body.is_empty() {
        return Err(ApiError::invalid("the file is empty"));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let blob = state.blobs.put(&body).await.map_err(|e| {
        tracing::error!(error = %e, "storing an upload failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the file could not be stored; try again",
        )
    })?;
    Ok((
        StatusCode::CREATED,
        Json(StoredFile {
            name: name.to_owned(),
            content_type,
            size: body.len() as u64,
            blob: blob.0,
        }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    /// `html`: show the file as an inert HTML page (an email's sanitised body), under a
    /// sandbox policy: no scripts, no forms, no remote loads, an origin of its own.
    #[param(inline)]
    view: Option<View>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum View {
    Html,
}

/// What an inline HTML view may do: nothing but lay out text and inline images.
const SANDBOX_POLICY: &str =
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'";

/// A stored file's bytes: a download, or an inert HTML view (never run in the inbox's origin).
#[utoipa::path(get, path = "/attachments/{blob}", tag = "attachments",
    params(("blob" = String, Path, description = "SHA-256 of the content"), DownloadQuery),
    responses((status = 200, description = "The file; with `view=html`, the inert HTML page",
        content((Vec<u8> = "application/octet-stream"), (String = "text/html"))),
        (status = 404, body = ErrorBody)))]
pub async fn download(
    State(state): State<ApiState>,
    _agent: AuthAgent,
    ApiPath(blob): ApiPath<String>,
    ApiQuery(query): ApiQuery<DownloadQuery>,
) -> Result<Response, ApiError> {
    let (file, size) = state
        .blobs
        .open_file(&BlobId(blob))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "reading a blob failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the file cannot be read now",
            )
        })?
        .ok_or_else(|| ApiError::not_found("attachment"))?;
    // Streamed from the file in 64 KiB reads: forty slow downloads of a large file cost forty
    // buffers, not forty copies of the file.
    let bytes =
        axum::body::Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024));
    let length = (header::CONTENT_LENGTH, size.to_string());
    if let Some(View::Html) = query.view {
        return Ok((
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CONTENT_SECURITY_POLICY, SANDBOX_POLICY),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            [length],
            bytes,
        )
            .into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CONTENT_DISPOSITION, "attachment"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        [length],
        bytes,
    )
        .into_response())
}

/// A reference to an uploaded file, in a reply.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    pub blob: String,
    pub name: String,
    #[serde(default = "octet_stream")]
    pub content_type: String,
    /// Ignored (the stored size counts), so an upload's answer can be passed as it is.
    #[serde(default, rename = "size")]
    pub _size: Option<u64>,
}

fn octet_stream() -> String {
    "application/octet-stream".into()
}

/// Resolves uploaded files for a reply: each must exist.
pub fn attachments(state: &ApiState, files: &[FileRef]) -> Result<Vec<Attachment>, ApiError> {
    files
        .iter()
        .map(|f| {
            let blob = BlobId(f.blob.clone());
            let size = state.blobs.size(&blob).ok_or_else(|| {
                ApiError::invalid(format!(
                    "no uploaded file {} (POST /attachments first)",
                    f.blob
                ))
            })?;
            Ok(Attachment {
                blob: Some(blob),
                ..Attachment::new(f.name.clone(), f.content_type.clone(), size)
            })
        })
        .collect()
}

#[derive(Serialize, ToSchema)]
pub struct Hours {
    /// People are at work now (the general `[hours]`).
    open: bool,
    /// When they are next, as customers are told (`2026-11-30 09:00 (Europe/Berlin)`).
    next_opening: Option<String>,
    /// Teams with hours of their own.
    teams: Vec<TeamHours>,
}

#[derive(Serialize, ToSchema)]
pub struct TeamHours {
    team: String,
    open: bool,
    next_opening: Option<String>,
}

/// Whether the team is at work now, and when it opens next (`[hours]` in the config).
#[utoipa::path(get, path = "/hours", tag = "channels", responses((status = 200, body = Hours)))]
pub async fn hours(State(state): State<ApiState>, _agent: AuthAgent) -> Json<Hours> {
    let now = switchboard_channel::now_ms();
    let next = state.engine.next_shift(now);
    let teams = state
        .engine
        .team_openings(now)
        .into_iter()
        .map(|(team, next)| TeamHours {
            team,
            open: next.is_none(),
            next_opening: next,
        })
        .collect();
    Json(Hours {
        open: next.is_none(),
        next_opening: next,
        teams,
    })
}

#[derive(Serialize, ToSchema)]
pub struct ChannelStatus {
    id: String,
    #[schema(value_type = Object)]
    capabilities: Capabilities,
    #[schema(value_type = Object)]
    health: ChannelHealth,
}

/// Every configured channel with its connection health.
#[utoipa::path(get, path = "/channels", tag = "channels",
    responses((status = 200, body = Vec<ChannelStatus>)))]
pub async fn channels(
    State(state): State<ApiState>,
    _agent: AuthAgent,
) -> Json<Vec<ChannelStatus>> {
    let mut list: Vec<ChannelStatus> = state
        .engine
        .channels()
        .into_iter()
        .map(|c| ChannelStatus {
            id: c.id().to_string(),
            capabilities: c.capabilities(),
            health: c.health(),
        })
        .collect();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    Json(list)
}
