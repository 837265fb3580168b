//! The HTTP face of the daemon for agents: the inbox page (`/`), `/api/v1` (JSON), its
//! OpenAPI document, the event stream, and `/healthz` + `/readyz` + `/metrics`. Handlers are thin: parse, call the engine, answer.
//!
//! Routes and the OpenAPI document are built from the same list (`utoipa-axum`), so the
//! document cannot drift from the routes that exist.

mod admin;
pub mod auth;
mod canned;
mod conversations;
pub mod error;
mod events;
mod files;
mod kb;
pub mod limits;
mod openapi;
mod page;
mod people;
mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

use crate::engine::Engine;

#[derive(Clone)]
pub struct ApiState {
    pub engine: Arc<Engine>,
    /// The live knowledge base (teach-back, import, reload).
    pub kb: Arc<crate::bot::live::LiveKb>,
    /// False until start-up finished and after shutdown began.
    pub ready: Arc<AtomicBool>,
    /// Fires when the daemon stops: long-lived responses (event streams) end.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Attachment bytes (uploads for replies, files customers sent).
    pub blobs: Arc<crate::store::blobs::FileBlobs>,
    /// The inbox page's sign-ins.
    pub sessions: Arc<auth::Sessions>,
    /// The only place the backup API writes to.
    pub backups_dir: std::path::PathBuf,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Switchboard agent API", description = "The shared inbox: conversations, contacts, agents and the live event stream. Authenticate with `Authorization: Bearer <agent token>`, or (the inbox page) with the session cookie from `POST /session` plus its `X-CSRF-Token` on changes."),
    tags(
        (name = "conversations", description = "The shared inbox"),
        (name = "contacts", description = "Customers across channels"),
        (name = "agents", description = "The team"),
        (name = "events", description = "Live event stream"),
        (name = "knowledge base", description = "Suggested answers, teach-back, import and reload"),
        (name = "canned responses", description = "The team's saved replies"),
    )
)]
struct ApiDoc;

/// The `/api/v1` routes with their OpenAPI document (`/api/v1/openapi.json`), the health
/// routes and the inbox page.
pub fn api(state: ApiState, http: &crate::config::HttpConfig) -> axum::Router {
    let (max_body_bytes, max_upload_bytes) = (http.max_body_bytes, http.max_upload_bytes);
    let v1 = OpenApiRouter::new()
        .routes(routes!(conversations::list_conversations))
        .routes(routes!(conversations::get_conversation))
        .routes(routes!(conversations::reply, conversations::list_messages))
        .routes(routes!(conversations::retry_delivery))
        .routes(routes!(conversations::failed_deliveries))
        .routes(routes!(conversations::add_note))
        .routes(routes!(conversations::assign))
        .routes(routes!(conversations::claim))
        .routes(routes!(conversations::unassign))
        .routes(routes!(conversations::resolve))
        .routes(routes!(conversations::reopen))
        .routes(routes!(conversations::snooze))
        .routes(routes!(conversations::hand_back))
        .routes(routes!(conversations::set_labels))
        .routes(routes!(conversations::set_priority))
        .routes(routes!(people::get_contact))
        .routes(routes!(people::contact_history))
        .routes(routes!(people::merge_contacts))
        .routes(routes!(admin::forget_contact))
        .routes(routes!(admin::backup))
        .routes(routes!(admin::stats))
        .routes(routes!(
            session::sign_in,
            session::current,
            session::sign_out
        ))
        .routes(routes!(people::me))
        .routes(routes!(people::set_presence))
        .routes(routes!(people::team))
        .routes(routes!(people::list_agents, people::create_agent))
        .routes(routes!(people::disable_agent))
        .routes(routes!(people::enable_agent))
        .routes(routes!(people::rotate_token))
        .routes(routes!(events::events))
        .routes(routes!(kb::suggestions))
        .routes(routes!(kb::get_kb))
        .routes(routes!(kb::import))
        .routes(routes!(kb::reload))
        .routes(routes!(kb::propose, kb::list_proposals))
        .routes(routes!(kb::approve))
        .routes(routes!(kb::reject))
        .routes(routes!(canned::list, canned::create))
        .routes(routes!(canned::update, canned::delete))
        .routes(routes!(files::download))
        .routes(routes!(files::channels))
        .routes(routes!(files::hours))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(files::upload))
                .layer(DefaultBodyLimit::max(max_upload_bytes)),
        );
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", v1)
        .split_for_parts();
    let doc = serde_json::to_value(&doc).expect("the OpenAPI document serialises");
    let doc = Arc::new(openapi::complete(doc));
    let router = router
        .route(
            "/api/v1/openapi.json",
            get(move || async move { Json(doc.as_ref().clone()) }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state.clone());
    let health = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    router.merge(health).merge(page::routes())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// A route that exists, asked with a method it does not take (axum adds `Allow`).
async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method (see Allow)",
    )
}

/// Prometheus metrics, for any agent token (a scraper gets its own agent).
async fn metrics(
    State(state): State<ApiState>,
    _agent: auth::AuthAgent,
) -> Result<Response, ApiError> {
    let engine = &state.engine;
    let store = engine.store();
    let [bot, queued, assigned, snoozed, resolved] = store.status_counts().await?;
    let gauges = crate::metrics::Gauges {
        statuses: vec![
            ("bot", bot),
            ("queued", queued),
            ("assigned", assigned),
            ("snoozed", snoozed),
            ("resolved", resolved),
        ],
        outbox_conversations: store.outbox_conversations().await?.len() as u64,
        bot_backlog: engine.bot_backlog() as u64,
        failed_deliveries: store.failed_deliveries(100_000).await?.len() as u64,
        store_bytes: match store.maintenance() {
            Some(m) => m.size_on_disk()?,
            None => 0,
        },
        disk: disk_of(store.as_ref()),
        channels: engine
            .channels()
            .iter()
            .map(|c| {
                let h = c.health();
                (c.id().to_string(), h.ok || h.errors == 0, h.errors)
            })
            .collect(),
    };
    let body = engine.metrics().render(&gauges);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

/// Free space against the reserve where the store keeps its files (none to watch for a
/// shared database).
fn disk_of(store: &dyn crate::store::Store) -> crate::store::disk::DiskSpace {
    store
        .maintenance()
        .map_or(crate::store::disk::DiskSpace::UNLIMITED, |m| m.disk())
}

/// Alive: the process answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Ready: started, not shutting down, the store writes and the disk has room (else 503 with
/// `not_ready`, `store_failing` or `disk_low`). A channel whose network fails makes it
/// `degraded`, still 200: the other channels and the inbox work. The body tells which.
/// Readiness for load balancers and supervisors: the status and its code to anyone; the
/// details (disk, channels and their last errors, which may name internal hosts) only to an
/// agent's token or session.
async fn readyz(
    State(state): State<ApiState>,
    agent: Result<auth::AuthAgent, ApiError>,
) -> Response {
    if !state.ready.load(Ordering::Relaxed) {
        return switchboard_channel::http_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "starting or stopping",
        );
    }
    let store = state.engine.store();
    let wait = std::time::Duration::from_secs(2);
    let writes = match tokio::time::timeout(wait, store.durable()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("the store did not answer within 2 s".to_owned()),
    };
    let disk = disk_of(store.as_ref());
    let channels: serde_json::Map<String, serde_json::Value> = state
        .engine
        .channels()
        .iter()
        .map(|c| {
            let h = c.health();
            let up = h.ok || h.errors == 0;
            let v = serde_json::json!({ "up": up, "state": h.state, "last_error": h.last_error });
            (c.id().to_string(), v)
        })
        .collect();
    let channels_up = channels.values().all(|c| c["up"] == true);
    let (code, status) = match (&writes, disk.low(), channels_up) {
        (Some(_), _, _) => (StatusCode::SERVICE_UNAVAILABLE, "store_failing"),
        (None, true, _) => (StatusCode::SERVICE_UNAVAILABLE, "disk_low"),
        (None, false, false) => (StatusCode::OK, "degraded"),
        (None, false, true) => (StatusCode::OK, "ready"),
    };
    if agent.is_err() {
        return (code, Json(serde_json::json!({ "status": status }))).into_response();
    }
    let mut body = serde_json::json!({
        "status": status,
        "store_bytes": store.maintenance().and_then(|m| m.size_on_disk().ok()).unwrap_or(0),
        "disk": disk,
        "channels": channels,
    });
    if let Some(e) = writes {
        body["store_error"] = e.into();
    }
    (code, Json(body)).into_response()
}
