//! Knowledge base for agents: suggested answers, teach-back proposals, admin review,
//! import and reload.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiState;
use super::auth::{AdminAgent, AuthAgent};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::bot::Suggestion;
use crate::bot::kb::Entry;
use crate::bot::live::{LiveError, NewProposal, Proposal, ProposalStatus};
use crate::model::ConversationId;

impl From<LiveError> for ApiError {
    fn from(e: LiveError) -> Self {
        match e {
            LiveError::NotFound(what) => ApiError::not_found(what),
            LiveError::Invalid(m) => ApiError::invalid(m),
            LiveError::Conflict(m) => ApiError::conflict(m),
            other => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                other.to_string(),
            ),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Suggestions {
    /// The customer message the suggestions are for.
    pub for_seq: Option<u64>,
    pub suggestions: Vec<Suggestion>,
}

/// The top knowledge-base answers for what the customer asked lately (the last few
/// customer messages, each matched on its own: "talk to a person" after a question still
/// suggests answers to the question).
#[utoipa::path(get, path = "/conversations/{id}/suggestions", tag = "knowledge base",
    params(("id" = u64, Path, description = "Conversation id")),
    responses((status = 200, body = Suggestions), (status = 404, body = ErrorBody)))]
pub async fn suggestions(
    State(state): State<ApiState>,
    AuthAgent(_me): AuthAgent,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<Suggestions>, ApiError> {
    let (for_seq, suggestions) = state.engine.suggestions(ConversationId(id), 3).await?;
    Ok(Json(Suggestions {
        for_seq,
        suggestions,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct KbSummary {
    pub version: u64,
    pub model: Option<String>,
    pub entries: Vec<Entry>,
}

/// The live knowledge base: files plus imported and taught entries.
#[utoipa::path(get, path = "/kb", tag = "knowledge base",
    responses((status = 200, body = KbSummary)))]
pub async fn get_kb(
    State(state): State<ApiState>,
    AuthAgent(_me): AuthAgent,
) -> Result<Json<KbSummary>, ApiError> {
    let (version, entries) = (state.kb.version().await?, state.kb.entries().await?);
    Ok(Json(KbSummary {
        version,
        model: state.engine.responder().model(),
        entries,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    pub entries: Vec<Entry>,
}

#[derive(Serialize, ToSchema)]
pub struct KbVersion {
    pub version: u64,
}

async fn rebuild(state: &ApiState) -> Result<(), ApiError> {
    let responder = state.kb.rebuild().await?;
    state.engine.set_responder(responder);
    Ok(())
}

/// Stores entries (replacing stored ones with the same id) and reloads the bot (admin).
#[utoipa::path(post, path = "/kb/import", tag = "knowledge base", request_body = ImportBody,
    responses((status = 200, body = KbVersion), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn import(
    State(state): State<ApiState>,
    AdminAgent(me): AdminAgent,
    ApiJson(body): ApiJson<ImportBody>,
) -> Result<Json<KbVersion>, ApiError> {
    let version = state
        .kb
        .import(&body.entries, &format!("imported by {}", me.name))
        .await?;
    state.kb.sync().await?;
    rebuild(&state).await?;
    Ok(Json(KbVersion { version }))
}

/// Reloads the knowledge base from the files and the store (admin); same as SIGHUP.
#[utoipa::path(post, path = "/kb/reload", tag = "knowledge base",
    responses((status = 200, body = KbVersion), (status = 403, body = ErrorBody)))]
pub async fn reload(
    State(state): State<ApiState>,
    AdminAgent(_me): AdminAgent,
) -> Result<Json<KbVersion>, ApiError> {
    rebuild(&state).await?;
    Ok(Json(KbVersion {
        version: state.kb.version().await?,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposeBody {
    /// The customer's question, as asked.
    #[schema(pattern = r"\S")]
    pub question: String,
    /// Add the question to this existing entry...
    pub entry: Option<String>,
    /// ...or make a new entry with this answer.
    pub answer: Option<String>,
    /// Id of the new entry (default: `taught-N`).
    pub id: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The conversation it came from.
    pub conversation: Option<u64>,
}

/// Proposes knowledge-base material from a resolved exchange; an admin reviews it.
#[utoipa::path(post, path = "/kb/proposals", tag = "knowledge base", request_body = ProposeBody,
    responses((status = 201, body = Proposal), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn propose(
    State(state): State<ApiState>,
    AuthAgent(me): AuthAgent,
    ApiJson(body): ApiJson<ProposeBody>,
) -> Result<(StatusCode, Json<Proposal>), ApiError> {
    if let Some(c) = body.conversation
        && state
            .engine
            .store()
            .conversation(ConversationId(c))
            .await?
            .is_none()
    {
        return Err(ApiError::not_found("conversation"));
    }
    let new_entry = body.answer.map(|answer| Entry {
        id: body
            .id
            .unwrap_or_else(|| format!("taught-{}", switchboard_channel::now_ms())),
        lang: None,
        tags: body.tags,
        questions: Vec::new(),
        answer,
        escalate: false,
        follow_ups: Vec::new(),
    });
    let responder = state.engine.responder();
    let new = NewProposal {
        question: body.question,
        entry: body.entry,
        new_entry,
        conversation: body.conversation,
        proposed_by: me.name.clone(),
    };
    let proposal = state.kb.propose(new, responder).await?;
    state.kb.sync().await?;
    Ok((StatusCode::CREATED, Json(proposal)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProposalFilter {
    /// `pending`, `approved` or `rejected`; all when absent.
    pub status: Option<ProposalStatus>,
}

/// Teach-back proposals.
#[utoipa::path(get, path = "/kb/proposals", tag = "knowledge base", params(ProposalFilter),
    responses((status = 200, body = [Proposal])))]
pub async fn list_proposals(
    State(state): State<ApiState>,
    AuthAgent(_me): AuthAgent,
    ApiQuery(filter): ApiQuery<ProposalFilter>,
) -> Result<Json<Vec<Proposal>>, ApiError> {
    Ok(Json(state.kb.proposals(filter.status).await?))
}

async fn decide(state: &ApiState, id: u64, approve: bool, by: &str) -> Result<Proposal, ApiError> {
    let proposal = state.kb.decide(id, approve, by).await?;
    state.kb.sync().await?;
    if approve {
        rebuild(state).await?;
    }
    Ok(proposal)
}

/// Approves a proposal (admin): the bot answers with it from now on, without a restart.
#[utoipa::path(post, path = "/kb/proposals/{id}/approve", tag = "knowledge base",
    params(("id" = u64, Path, description = "Proposal id")),
    responses((status = 200, body = Proposal), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "Already decided", body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn approve(
    State(state): State<ApiState>,
    AdminAgent(me): AdminAgent,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<Proposal>, ApiError> {
    Ok(Json(decide(&state, id, true, &me.name).await?))
}

/// Rejects a proposal (admin).
#[utoipa::path(post, path = "/kb/proposals/{id}/reject", tag = "knowledge base",
    params(("id" = u64, Path, description = "Proposal id")),
    responses((status = 200, body = Proposal), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "Already decided", body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn reject(
    State(state): State<ApiState>,
    AdminAgent(me): AdminAgent,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<Proposal>, ApiError> {
    Ok(Json(decide(&state, id, false, &me.name).await?))
}
