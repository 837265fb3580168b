//! `/api/v1/contacts` and `/api/v1/agents`: customers across channels, and the team.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::auth::{AdminAgent, AuthAgent};
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use crate::model::{Agent, AgentId, Contact, ContactId, Conversation, Presence, Role};

/// A contact (merged contacts resolve to the one they were merged into).
#[utoipa::path(get, path = "/contacts/{id}", tag = "contacts",
    params(("id" = u64, Path, description = "Contact id")),
    responses((status = 200, body = Contact), (status = 404, body = ErrorBody)))]
pub async fn get_contact(
    State(state): State<ApiState>,
    _agent: AuthAgent,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<Contact>, ApiError> {
    let contact = state
        .engine
        .contact(ContactId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("contact"))?;
    Ok(Json(contact))
}

/// Every conversation of a contact, on every channel, oldest first.
#[utoipa::path(get, path = "/contacts/{id}/conversations", tag = "contacts",
    params(("id" = u64, Path, description = "Contact id")),
    responses((status = 200, body = Vec<Conversation>), (status = 404, body = ErrorBody)))]
pub async fn contact_history(
    State(state): State<ApiState>,
    _agent: AuthAgent,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<Vec<Conversation>>, ApiError> {
    let contact = state
        .engine
        .contact(ContactId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("contact"))?;
    let store = state.engine.store();
    let mut out = Vec::new();
    for conv in store.contact_conversations(contact.id).await? {
        if let Some(c) = store.conversation(conv).await? {
            out.push(c);
        }
    }
    Ok(Json(out))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeBody {
    /// The contact to merge into this one; it remains as a pointer.
    from: u64,
}

/// Merges another contact into this one: identities and conversations move here.
#[utoipa::path(post, path = "/contacts/{id}/merge", tag = "contacts",
    params(("id" = u64, Path, description = "Contact to keep")), request_body = MergeBody,
    responses((status = 200, body = Contact), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn merge_contacts(
    State(state): State<ApiState>,
    AuthAgent(me): AuthAgent,
    ApiPath(id): ApiPath<u64>,
    ApiJson(body): ApiJson<MergeBody>,
) -> Result<Json<Contact>, ApiError> {
    let merged = state
        .engine
        .merge_contacts(ContactId(id), ContactId(body.from), me.id)
        .await?;
    Ok(Json(merged))
}

/// The calling agent.
#[utoipa::path(get, path = "/me", tag = "agents", responses((status = 200, body = Agent), (status = 401, body = ErrorBody)))]
pub async fn me(AuthAgent(me): AuthAgent) -> Json<Agent> {
    Json(me.redacted())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresenceBody {
    presence: Presence,
}

/// Sets the calling agent's presence.
#[utoipa::path(put, path = "/me/presence", tag = "agents", request_body = PresenceBody,
    responses((status = 200, body = Agent), (status = 422, body = ErrorBody)))]
pub async fn set_presence(
    State(state): State<ApiState>,
    AuthAgent(me): AuthAgent,
    ApiJson(body): ApiJson<PresenceBody>,
) -> Result<Json<Agent>, ApiError> {
    let presence = body.presence;
    Ok(Json(
        state
            .engine
            .set_presence(me.id, presence, Some(me.id))
            .await?
            .redacted(),
    ))
}

/// A colleague, as every agent sees them.
#[derive(Serialize, ToSchema)]
pub struct Teammate {
    id: AgentId,
    name: String,
    presence: Presence,
}

/// The enabled agents with their presence, for assigning and showing names.
#[utoipa::path(get, path = "/team", tag = "agents",
    responses((status = 200, body = Vec<Teammate>), (status = 401, body = ErrorBody)))]
pub async fn team(
    State(state): State<ApiState>,
    _agent: AuthAgent,
) -> Result<Json<Vec<Teammate>>, ApiError> {
    let team = state
        .engine
        .store()
        .agents()
        .await?
        .into_iter()
        .filter(|a| !a.disabled)
        .map(|a| Teammate {
            id: a.id,
            name: a.name,
            presence: a.presence,
        })
        .collect();
    Ok(Json(team))
}

/// All agents (admin).
#[utoipa::path(get, path = "/agents", tag = "agents",
    responses((status = 200, body = Vec<Agent>), (status = 403, body = ErrorBody)))]
pub async fn list_agents(
    State(state): State<ApiState>,
    _admin: AdminAgent,
) -> Result<Json<Vec<Agent>>, ApiError> {
    Ok(Json(
        state
            .engine
            .store()
            .agents()
            .await?
            .into_iter()
            .map(Agent::redacted)
            .collect(),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    /// Up to 100 characters, not blank.
    #[schema(pattern = r"\S", max_length = 100)]
    name: String,
    #[serde(default = "agent_role")]
    role: Role,
}

fn agent_role() -> Role {
    Role::Agent
}

#[derive(Serialize, ToSchema)]
pub struct AgentWithToken {
    agent: Agent,
    /// Shown once; only a keyed hash is stored.
    token: String,
}

/// Creates an agent and returns its token, once (admin).
#[utoipa::path(post, path = "/agents", tag = "agents", request_body = NewAgent,
    responses((status = 201, body = AgentWithToken), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_agent(
    State(state): State<ApiState>,
    AdminAgent(admin): AdminAgent,
    ApiJson(body): ApiJson<NewAgent>,
) -> Result<(StatusCode, Json<AgentWithToken>), ApiError> {
    let (agent, token) = state
        .engine
        .create_agent(&body.name, body.role, Some(admin.id), None)
        .await?;
    let agent = agent.redacted();
    Ok((StatusCode::CREATED, Json(AgentWithToken { agent, token })))
}

/// Disables an agent: its token stops working at once (admin).
#[utoipa::path(post, path = "/agents/{id}/disable", tag = "agents",
    params(("id" = u64, Path, description = "Agent id")),
    responses((status = 200, body = Agent), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, description = "An admin cannot disable themselves", body = ErrorBody)))]
pub async fn disable_agent(
    State(state): State<ApiState>,
    AdminAgent(admin): AdminAgent,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<Agent>, ApiError> {
    if id == admin.id.0 {
        return Err(ApiError::invalid("an admin cannot disable themselves"));
    }
    Ok(Json(
        state
            .engine
            .set_agent_disabled(AgentId(id), true, Some(admin.id))
            .await?
            .redacted(),
    ))
}

/// Enables a disabled agent (admin).
#[utoipa::path(post, path = "/agents/{id}/enable", tag = "agents",
    params(("id" = u64, Path, description = "Agent id")),
    responses((status = 200, body = Agent), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn enable_agent(
    State(state): State<ApiState>,
    AdminAgent(admin): AdminAgent,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<Agent>, ApiError> {
    Ok(Json(
        state
            .engine
            .set_agent_disabled(AgentId(id), false, Some(admin.id))
            .await?
            .redacted(),
    ))
}

/// Issues a new token for an agent; the old one stops working (admin, or the agent itself).
#[utoipa::path(post, path = "/agents/{id}/token", tag = "agents",
    params(("id" = u64, Path, description = "Agent id")),
    responses((status = 200, body = AgentWithToken), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn rotate_token(
    State(state): State<ApiState>,
    AuthAgent(me): AuthAgent,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<AgentWithToken>, ApiError> {
    if me.role != Role::Admin && me.id.0 != id {
        return Err(ApiError::forbidden(
            "only admins can rotate other agents' tokens",
        ));
    }
    let (agent, token) = state
        .engine
        .rotate_token(AgentId(id), Some(me.id), None)
        .await?;
    let agent = agent.redacted();
    Ok(Json(AgentWithToken { agent, token }))
}
