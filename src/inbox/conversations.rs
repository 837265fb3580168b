//! `/api/v1/conversations`: the shared inbox. Handlers parse, call the engine, and answer.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use switchboard_channel::ChannelId;
use utoipa::{IntoParams, ToSchema};

use super::ApiState;
use super::auth::AuthAgent;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::model::{
    Action, Actor, AgentId, Contact, Conversation, ConversationId, Event, Message, Note, Priority,
    Status,
};
use crate::store::{ConversationQuery, Cursor, Order};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only conversations in this status; all when absent.
    status: Option<Status>,
    /// An agent id, or `me`.
    #[param(pattern = "^(me|[0-9]{1,19})$")]
    assignee: Option<String>,
    channel: Option<String>,
    label: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,18}-[0-9]{1,19}$")]
    cursor: Option<String>,
    /// Default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// By last update; default newest first.
    #[param(inline)]
    order: Option<SortOrder>,
    /// Words that must all appear in the contact (name, identities), labels or messages.
    /// A search scans up to 2,000 conversations per call; follow `next_cursor` for more.
    q: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    Newest,
    Oldest,
}

#[derive(Serialize, ToSchema)]
pub struct StatusCounts {
    bot: u64,
    queued: u64,
    assigned: u64,
    snoozed: u64,
    resolved: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ConversationPage {
    items: Vec<Conversation>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
    /// Conversations per status, over the whole inbox.
    counts: StatusCounts,
    /// Display names of the listed conversations' contacts, by contact id (those with one).
    contacts: std::collections::BTreeMap<u64, String>,
}

/// Lists conversations, newest activity first.
#[utoipa::path(get, path = "/conversations", tag = "conversations", params(ListParams),
    responses((status = 200, body = ConversationPage), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list_conversations(
    State(state): State<ApiState>,
    AuthAgent(me): AuthAgent,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Json<ConversationPage>, ApiError> {
    let assignee = match p.assignee.as_deref() {
        None => None,
        Some("me") => Some(me.id),
        Some(a) if (1..=19).contains(&a.len()) && a.bytes().all(|b| b.is_ascii_digit()) => {
            Some(AgentId(a.parse().expect("19 digits fit in u64")))
        }
        Some(_) => return Err(ApiError::invalid("assignee must be an agent id or `me`")),
    };
    let after = match p.cursor.as_deref() {
        None => None,
        Some(c) => Some(Cursor::decode(c).ok_or_else(|| ApiError::invalid("malformed cursor"))?),
    };
    let order = match p.order {
        None | Some(SortOrder::Newest) => Order::NewestFirst,
        Some(SortOrder::Oldest) => Order::OldestFirst,
    };
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let store = state.engine.store();
    let query = ConversationQuery {
        status: p.status,
        assignee,
        channel: p.channel.filter(|c| !c.is_empty()).map(ChannelId),
        label: p.label.filter(|l| !l.is_empty()).map(|l| l.to_lowercase()),
        order,
        after,
        limit,
    };
    let page = match p.q.as_deref().map(str::trim) {
        Some(q) if !q.is_empty() => state.engine.search(&query, q).await?,
        _ => store.list_conversations(&query).await?,
    };
    let mut contacts = std::collections::BTreeMap::new();
    for conv in &page.items {
        if let std::collections::btree_map::Entry::Vacant(slot) = contacts.entry(conv.contact.0)
            && let Some(name) = state
                .engine
                .contact(conv.contact)
                .await?
                .and_then(|c| c.name)
        {
            slot.insert(name);
        }
    }
    let [bot, queued, assigned, snoozed, resolved] = store.status_counts().await?;
    Ok(Json(ConversationPage {
        contacts,
        items: page.items,
        next_cursor: page.next.map(|c| c.encode()),
        counts: StatusCounts {
            bot,
            queued,
            assigned,
            snoozed,
            resolved,
        },
    }))
}

#[derive(Serialize, ToSchema)]
pub struct ConversationDetail {
    conversation: Conversation,
    contact: Option<Contact>,
    /// The newest 1,000 messages, oldest first; `GET .../messages` pages through all.
    messages: Vec<Message>,
    /// Older messages exist than the first one here.
    older_messages: bool,
    notes: Vec<Note>,
    events: Vec<Event>,
}

/// Maximum messages returned with a conversation: its newest.
const DETAIL_MESSAGES: usize = 1000;

/// One conversation with its transcript, private notes and event log.
#[utoipa::path(get, path = "/conversations/{id}", tag = "conversations",
    params(("id" = u64, Path, description = "Conversation id")),
    responses((status = 200, body = ConversationDetail), (status = 404, body = ErrorBody)))]
pub async fn get_conversation(
    State(state): State<ApiState>,
    _agent: AuthAgent,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<ConversationDetail>, ApiError> {
    let id = ConversationId(id);
    let store = state.engine.store();
    let conversation = store
        .conversation(id)
        .await?
        .ok_or_else(|| ApiError::not_found("conversation"))?;
    let contact = state.engine.contact(conversation.contact).await?;
    let from = conversation.last_seq.saturating_sub(DETAIL_MESSAGES as u64);
    Ok(Json(ConversationDetail {
        messages: store.messages(id, from, DETAIL_MESSAGES).await?,
        older_messages: from > 0,
        notes: store.notes(id).await?,
        events: store.conversation_events(id).await?,
        contact,
        conversation,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesParams {
    /// Messages after this seq; 0 (default) from the first.
    after: Option<u64>,
    /// Default 200.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct MessagePage {
    messages: Vec<Message>,
    /// Pass as `after` for the next page; absent after the last.
    next_after: Option<u64>,
}

/// A conversation's messages, oldest first, a page at a time (the conversation view holds
/// the newest 1,000).
#[utoipa::path(get, path = "/conversations/{id}/messages", tag = "conversations",
    params(("id" = u64, Path, description = "Conversation id"), MessagesParams),
    responses((status = 200, body = MessagePage), (status = 404, body = ErrorBody)))]
pub async fn list_messages(
    State(state): State<ApiState>,
    _agent: AuthAgent,
    ApiPath(id): ApiPath<u64>,
    ApiQuery(p): ApiQuery<MessagesParams>,
) -> Result<Json<MessagePage>, ApiError> {
    let id = ConversationId(id);
    let store = state.engine.store();
    let conversation = store
        .conversation(id)
        .await?
        .ok_or_else(|| ApiError::not_found("conversation"))?;
    let limit = p.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be 1 to 1000"));
    }
    let messages = store.messages(id, p.after.unwrap_or(0), limit).await?;
    let next_after = messages
        .last()
        .map(|m| m.seq)
        .filter(|last| *last < conversation.last_seq);
    Ok(Json(MessagePage {
        messages,
        next_after,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextBody {
    /// Not blank.
    #[schema(pattern = r"\S")]
    text: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyBody {
    /// May be empty when files are attached.
    #[serde(default)]
    text: String,
    /// Files uploaded with `POST /attachments`, sent after the text.
    #[serde(default)]
    attachments: Vec<super::files::FileRef>,
}

#[derive(Serialize, ToSchema)]
pub struct ReplyQueued {
    conversation: Conversation,
    /// The reply as stored; its delivery starts `queued`.
    message: Message,
}

/// Replies to the customer on their channel; the agent takes the conversation.
///
/// Send an `Idempotency-Key` (any client-chosen string, e.g. a UUID per composed reply) to
/// make retries safe: the same key from the same agent on the same conversation answers with
/// the reply already stored, and the customer gets it once.
#[utoipa::path(post, path = "/conversations/{id}/messages", tag = "conversations",
    params(("id" = u64, Path, description = "Conversation id"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "Makes a retried request safe: 1 to 255 visible ASCII characters")),
    request_body = ReplyBody,
    responses((status = 201, body = ReplyQueued), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn reply(
    State(state): State<ApiState>,
    AuthAgent(me): AuthAgent,
    ApiPath(id): ApiPath<u64>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ReplyBody>,
) -> Result<(StatusCode, Json<ReplyQueued>), ApiError> {
    let id = ConversationId(id);
    let key = idempotency_key(&headers)?;
    let attachments = super::files::attachments(&state, &body.attachments)?;
    let (conversation, seq) = state
        .engine
        .reply(id, &me, &body.text, &attachments, key)
        .await?;
    let message = state
        .engine
        .store()
        .message(id, seq)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    Ok((
        StatusCode::CREATED,
        Json(ReplyQueued {
            conversation,
            message,
        }),
    ))
}

/// The optional `Idempotency-Key` header: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k))
        }
        _ => Err(ApiError::invalid(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// Tries a failed delivery again.
#[utoipa::path(post, path = "/conversations/{id}/messages/{seq}/retry", tag = "conversations",
    params(("id" = u64, Path, description = "Conversation id"), ("seq" = u64, Path, description = "Message number")),
    responses((status = 200, body = Message), (status = 404, body = ErrorBody), (status = 409, description = "Not a failed delivery", body = ErrorBody)))]
pub async fn retry_delivery(
    State(state): State<ApiState>,
    AuthAgent(me): AuthAgent,
    ApiPath((id, seq)): ApiPath<(u64, u64)>,
) -> Result<Json<Message>, ApiError> {
    Ok(Json(
        state
            .engine
            .retry_delivery(ConversationId(id), seq, me.id)
            .await?,
    ))
}

/// Adds a private note (never sent to the customer).
#[utoipa::path(post, path = "/conversations/{id}/notes", tag = "conversations",
    params(("id" = u64, Path, description = "Conversation id")), request_body = TextBody,
    responses((status = 201, body = Note), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn add_note(
    State(state): State<ApiState>,
    AuthAgent(me): AuthAgent,
    ApiPath(id): ApiPath<u64>,
    ApiJson(body): ApiJson<TextBody>,
) -> Result<(StatusCode, Json<Note>), ApiError> {
    let note = state
        .engine
        .add_note(ConversationId(id), me.id, &body.text)
        .await?;
    Ok((StatusCode::CREATED, Json(note)))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    agent_id: u64,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct SnoozeBody {
    /// Wake-up time, unix milliseconds.
    until_ms: i64,
}

async fn act(
    state: &ApiState,
    me: &crate::model::Agent,
    id: u64,
    action: Action,
    reason: String,
) -> Result<Json<Conversation>, ApiError> {
    Ok(Json(
        state
            .engine
            .act(ConversationId(id), Actor::Agent(me.id), action, &reason)
            .await?,
    ))
}

/// Assigns the conversation to an agent.
#[utoipa::path(post, path = "/conversations/{id}/assign", tag = "conversations",
    params(("id" = u64, Path, description = "Conversation id")), request_body = AssignBody,
    responses((status = 200, body = Conversation), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn assign(
    State(state): State<ApiState>,
    AuthAgent(me): AuthAgent,
    ApiPath(id): ApiPath<u64>,
    ApiJson(body): ApiJson<AssignBody>,
) -> Result<Json<Conversation>, ApiError> {
    let to = AgentId(body.agent_id);
    act(
        &state,
        &me,
        id,
        Action::Assign(to),
        format!("assigned by {}", me.name),
    )
    .await
}

/// A state-machine action that needs nothing but the conversation id: the handler, and its
/// entry in the OpenAPI document.
macro_rules! plain_action {
    ($(#[doc = $doc:literal])* $name:ident, $path:literal, $action:expr, $reason:literal) => {
        $(#[doc = $doc])*
        #[utoipa::path(post, path = $path, tag = "conversations",
            params(("id" = u64, Path, description = "Conversation id")),
            responses((status = 200, body = Conversation), (status = 404, body = ErrorBody),
                (status = 409, body = ErrorBody)))]
        pub async fn $name(
            State(state): State<ApiState>,
            AuthAgent(me): AuthAgent,
            ApiPath(id): ApiPath<u64>,
        ) -> Result<Json<Conversation>, ApiError> {
            let action: fn(&crate::model::Agent) -> Action = $action;
            let reason = format!(concat!($reason, " by {}"), me.name);
            act(&state, &me, id, action(&me), reason).await
        }
    };
}

plain_action!(
    /// Takes the conversation for the calling agent.
    claim, "/conversations/{id}/claim", |me| Action::Assign(me.id), "claimed"
);
plain_action!(
    /// Returns the conversation to the queue.
    unassign, "/conversations/{id}/unassign", |_| Action::Unassign, "unassigned"
);
plain_action!(
    /// Marks the conversation resolved.
    resolve, "/conversations/{id}/resolve", |_| Action::Resolve, "resolved"
);
plain_action!(
    /// Reopens a resolved conversation into the queue.
    reopen, "/conversations/{id}/reopen", |_| Action::Reopen, "reopened"
);
plain_action!(
    /// Lets the bot handle the conversation again.
    hand_back, "/conversations/{id}/handback", |_| Action::HandBack, "handed back to the bot"
);

/// Snoozes until a time, or until the customer writes.
#[utoipa::path(post, path = "/conversations/{id}/snooze", tag = "conversations",
    params(("id" = u64, Path, description = "Conversation id")), request_body = SnoozeBody,
    responses((status = 200, body = Conversation), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn snooze(
    State(state): State<ApiState>,
    AuthAgent(me): AuthAgent,
    ApiPath(id): ApiPath<u64>,
    ApiJson(body): ApiJson<SnoozeBody>,
) -> Result<Json<Conversation>, ApiError> {
    act(
        &state,
        &me,
        id,
        Action::Snooze {
            until_ms: body.until_ms,
        },
        format!("snoozed by {}", me.name),
    )
    .await
}

/// One label, for the document: 1 to 64 characters, not blank.
pub struct Label;

impl utoipa::PartialSchema for Label {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(r"\S"))
            .max_length(Some(64))
            .into()
    }
}

impl ToSchema for Label {}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelsBody {
    /// Up to 32, each 1 to 64 characters (not blank); kept in lower case.
    #[schema(max_items = 32, inline, value_type = Vec<Label>)]
    labels: Vec<String>,
}

/// Replaces the conversation's labels.
#[utoipa::path(put, path = "/conversations/{id}/labels", tag = "conversations",
    params(("id" = u64, Path, description = "Conversation id")), request_body = LabelsBody,
    responses((status = 200, body = Conversation), (status = 422, body = ErrorBody)))]
pub async fn set_labels(
    State(state): State<ApiState>,
    AuthAgent(me): AuthAgent,
    ApiPath(id): ApiPath<u64>,
    ApiJson(body): ApiJson<LabelsBody>,
) -> Result<Json<Conversation>, ApiError> {
    Ok(Json(
        state
            .engine
            .set_labels(ConversationId(id), me.id, body.labels)
            .await?,
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriorityBody {
    priority: Priority,
}

/// Sets the conversation's priority.
#[utoipa::path(put, path = "/conversations/{id}/priority", tag = "conversations",
    params(("id" = u64, Path, description = "Conversation id")), request_body = PriorityBody,
    responses((status = 200, body = Conversation), (status = 422, body = ErrorBody)))]
pub async fn set_priority(
    State(state): State<ApiState>,
    AuthAgent(me): AuthAgent,
    ApiPath(id): ApiPath<u64>,
    ApiJson(body): ApiJson<PriorityBody>,
) -> Result<Json<Conversation>, ApiError> {
    Ok(Json(
        state
            .engine
            .set_priority(ConversationId(id), me.id, body.priority)
            .await?,
    ))
}

#[derive(Serialize, ToSchema)]
pub struct FailedDelivery {
    conversation: ConversationId,
    message: Message,
}

/// Replies whose delivery failed for good, across all conversations (retry each with
/// `POST /conversations/{id}/messages/{seq}/retry`).
#[utoipa::path(get, path = "/deliveries/failed", tag = "conversations",
    responses((status = 200, body = Vec<FailedDelivery>), (status = 401, body = ErrorBody)))]
pub async fn failed_deliveries(
    State(state): State<ApiState>,
    _agent: AuthAgent,
) -> Result<Json<Vec<FailedDelivery>>, ApiError> {
    let store = state.engine.store();
    let mut out = Vec::new();
    for (conversation, seq) in store.failed_deliveries(MAX_LIMIT).await? {
        if let Some(message) = store.message(conversation, seq).await? {
            out.push(FailedDelivery {
                conversation,
                message,
            });
        }
    }
    Ok(Json(out))
}
