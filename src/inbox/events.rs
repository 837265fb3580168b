//! `GET /api/v1/events`: the event log as Server-Sent Events.
//!
//! A client resumes with `Last-Event-ID` (header, or `last_event_id` for clients that cannot
//! set headers): the stream replays stored events after that id, then continues live. A
//! subscriber that falls too far behind is disconnected and resumes the same way.

use std::collections::HashSet;
use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use tokio_stream::wrappers::BroadcastStream;
use utoipa::IntoParams;

use super::ApiState;
use super::auth::AuthAgent;
use super::error::{ApiError, ApiQuery, ErrorBody};
use crate::model::{ConversationId, Event, EventId};

/// Stored events replayed at most per connection; older gaps need the conversation view.
const MAX_REPLAY: usize = 10_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Only events of this conversation.
    conversation: Option<u64>,
    /// Comma-separated event types (e.g. `status_changed,message_received`).
    types: Option<String>,
    /// Resume after this event id (same as the Last-Event-ID header).
    last_event_id: Option<u64>,
}

struct Filter {
    conversation: Option<ConversationId>,
    types: Option<HashSet<String>>,
}

impl Filter {
    fn wants(&self, e: &Event) -> bool {
        self.conversation.is_none_or(|c| e.conversation == Some(c))
            && self
                .types
                .as_ref()
                .is_none_or(|t| t.contains(e.kind.name()))
    }
}

fn to_sse(e: &Event) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default()
        .id(e.id.0.to_string())
        .event(e.kind.name())
        .json_data(e)
        .unwrap_or_default())
}

/// Streams events as they happen (text/event-stream), resumable.
#[utoipa::path(get, path = "/events", tag = "events", params(EventParams),
    responses((status = 200, description = "text/event-stream of Event objects"), (status = 401, body = ErrorBody)))]
pub async fn events(
    State(state): State<ApiState>,
    AuthAgent(agent): AuthAgent,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<EventParams>,
) -> Result<Response, ApiError> {
    // While the stream is open the agent counts as present (routing sets them away after
    // their last stream has been gone a while).
    let Some(attached) = state.engine.attachments().attach(agent.id) else {
        return Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            "this agent already holds the most event streams allowed; close one first",
        ));
    };
    let filter = Filter {
        conversation: p.conversation.map(ConversationId),
        types: p.types.map(|t| {
            t.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        }),
    };
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(p.last_event_id)
        .map(EventId);
    // Subscribe before reading the backlog, so nothing falls between the two.
    let live = BroadcastStream::new(state.engine.subscribe());
    let stored = match last {
        Some(after) => state.engine.store().events(Some(after), MAX_REPLAY).await?,
        None => Vec::new(),
    };
    // Ids are positions in the log, announced in order: live events up to the last one read
    // from the store were replayed (or filtered out) already.
    let floor = stored.last().map(|e| e.id).or(last).unwrap_or(EventId(0));
    let backlog: Vec<Event> = stored.into_iter().filter(|e| filter.wants(e)).collect();
    let replay = futures::stream::iter(backlog).map(|e| to_sse(&e));
    let live = live
        .take_while(|item| std::future::ready(item.is_ok()))
        .filter_map(move |item| {
            let out = match item {
                Ok(e) if e.id > floor && filter.wants(&e) => Some(to_sse(&e)),
                _ => None,
            };
            std::future::ready(out)
        });
    let stream = replay
        .chain(live)
        .take_until(state.shutdown.clone().cancelled_owned())
        .map(move |e| {
            let _held = &attached;
            e
        });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
