//! Agents and their API tokens.
//!
//! Tokens are 256 random bits, shown once. The store keeps only HMAC-SHA256(install key, token):
//! a stolen database does not reveal tokens, and lookup is one index read (a slow password hash
//! is unnecessary for random tokens and would cost every request).

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use super::{Engine, EngineError};
use crate::model::{Actor, Agent, AgentId, Event, EventKind, Presence, Role};
use crate::store::{Change, Store};

const KEY_META: &str = "token_key";
/// Every token starts with this, so leaked tokens are recognisable (secret scanners).
pub const TOKEN_PREFIX: &str = "sbt_";

pub(super) async fn load_or_create_key(store: &dyn Store) -> Result<Vec<u8>, EngineError> {
    if let Some(k) = store.meta(KEY_META).await? {
        return Ok(k);
    }
    let mut key = vec![0u8; 32];
    rand::rng().fill_bytes(&mut key);
    store.set_meta(KEY_META, &key).await?;
    Ok(key)
}

fn new_token() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    format!("{TOKEN_PREFIX}{}", hex::encode(raw))
}

impl Engine {
    pub fn hash_token(&self, token: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.token_key).expect("any key length");
        mac.update(token.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The enabled agent a token belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Agent>, EngineError> {
        if token.len() < MIN_TOKEN_LEN {
            return Ok(None);
        }
        Ok(self
            .store
            .agent_by_token_hash(&self.hash_token(token))
            .await?
            .filter(|a| !a.disabled))
    }

    async fn save_agent(
        &self,
        agent: &Agent,
        by: Option<AgentId>,
        what: &str,
    ) -> Result<(), EngineError> {
        let change = Change {
            agents: vec![agent.clone()],
            events: vec![Event::new(
                None,
                by.map(Actor::Agent).unwrap_or(Actor::System),
                self.now_ms(),
                EventKind::AgentChanged {
                    agent: agent.id,
                    change: what.to_owned(),
                },
            )],
            ..Change::default()
        };
        Ok(self.commit(change).await?)
    }

    /// Creates an agent; returns it with its token (shown once). `token` overrides generation
    /// (the admin token from the config).
    pub async fn create_agent(
        &self,
        name: &str,
        role: Role,
        by: Option<AgentId>,
        token: Option<String>,
    ) -> Result<(Agent, String), EngineError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(EngineError::Invalid(
                "agent name must be 1 to 100 characters".into(),
            ));
        }
        let token = token.unwrap_or_else(new_token);
        let agent = Agent {
            id: AgentId(self.store.next_id().await?),
            name: name.to_owned(),
            role,
            disabled: false,
            created_at_ms: self.now_ms(),
            presence: Presence::Offline,
            presence_since_ms: 0,
            presence_auto: false,
            token_hash: self.hash_token(&token),
        };
        self.save_agent(&agent, by, "created").await?;
        Ok((agent, token))
    }

    pub async fn set_agent_disabled(
        &self,
        id: AgentId,
        disabled: bool,
        by: Option<AgentId>,
    ) -> Result<Agent, EngineError> {
        let mut agent = self
            .store
            .agent(id)
            .await?
            .ok_or(EngineError::NotFound("agent"))?;
        if agent.disabled != disabled {
            agent.disabled = disabled;
            self.save_agent(&agent, by, if disabled { "disabled" } else { "enabled" })
                .await?;
        }
        Ok(agent)
    }

    /// Sets an agent's presence: by the agent (`by` = themself) or by routing (`None`).
    pub async fn set_presence(
        &self,
        id: AgentId,
        presence: Presence,
        by: Option<AgentId>,
    ) -> Result<Agent, EngineError> {
        let mut agent = self
            .store
            .agent(id)
            .await?
            .ok_or(EngineError::NotFound("agent"))?;
        if agent.presence != presence {
            agent.presence = presence;
            agent.presence_since_ms = self.now_ms();
            agent.presence_auto = by.is_none();
            let what = format!("presence {}", presence.name());
            self.save_agent(&agent, by, &what).await?;
        }
        Ok(agent)
    }

    /// Replaces an agent's token; the old one stops working at once.
    pub async fn rotate_token(
        &self,
        id: AgentId,
        by: Option<AgentId>,
        token: Option<String>,
    ) -> Result<(Agent, String), EngineError> {
        let mut agent = self
            .store
            .agent(id)
            .await?
            .ok_or(EngineError::NotFound("agent"))?;
        let token = token.unwrap_or_else(new_token);
        agent.token_hash = self.hash_token(&token);
        self.save_agent(&agent, by, "token rotated").await?;
        Ok((agent, token))
    }
}

/// Shortest token accepted, also for tokens given in the config.
pub const MIN_TOKEN_LEN: usize = 32;
