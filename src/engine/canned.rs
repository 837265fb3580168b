//! Canned responses: the team's saved replies, inserted in the inbox with `/shortcut`.
//!
//! Kept in their own key-value space of the store; a deleted response is an empty record.

use serde::{Deserialize, Serialize};
use switchboard_channel::{ChannelState, StateError};
use utoipa::ToSchema;

use super::{Engine, EngineError};
use crate::store::StoreError;

/// A saved reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CannedResponse {
    pub id: u64,
    /// Typed after `/` in the reply box, e.g. `refund`.
    pub shortcut: String,
    pub title: String,
    pub text: String,
    pub updated_at_ms: i64,
}

/// The most saved replies a team keeps.
const MAX_CANNED: usize = 1000;

fn io(e: StateError) -> EngineError {
    EngineError::Store(StoreError::Io(e.0))
}

fn key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

impl Engine {
    async fn canned_space(&self) -> Result<std::sync::Arc<dyn ChannelState>, EngineError> {
        Ok(self.store.kv("canned").await?)
    }

    /// Every saved reply, by shortcut.
    pub async fn canned_responses(&self) -> Result<Vec<CannedResponse>, EngineError> {
        let mut all: Vec<CannedResponse> = self
            .canned_space()
            .await?
            .scan(b"", None, MAX_CANNED * 4)
            .await
            .map_err(io)?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        all.sort_by(|a, b| a.shortcut.cmp(&b.shortcut));
        Ok(all)
    }

    /// Creates (`id` none) or replaces a saved reply. Shortcuts are one word and unique.
    pub async fn save_canned(
        &self,
        id: Option<u64>,
        shortcut: &str,
        title: &str,
        text: &str,
    ) -> Result<CannedResponse, EngineError> {
        let shortcut = shortcut.trim().trim_start_matches('/').to_lowercase();
        if shortcut.is_empty()
            || shortcut.chars().count() > 32
            || !shortcut
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        {
            return Err(EngineError::Invalid(
                "shortcut must be 1 to 32 letters, digits, - or _".into(),
            ));
        }
        let (title, text) = (title.trim(), text.trim());
        if title.is_empty() || title.chars().count() > 100 {
            return Err(EngineError::Invalid(
                "title must be 1 to 100 characters".into(),
            ));
        }
        if text.is_empty() || text.chars().count() > 4000 {
            return Err(EngineError::Invalid(
                "text must be 1 to 4000 characters".into(),
            ));
        }
        let existing = self.canned_responses().await?;
        if existing
            .iter()
            .any(|c| c.shortcut == shortcut && Some(c.id) != id)
        {
            return Err(EngineError::Conflict(format!(
                "the shortcut /{shortcut} is taken"
            )));
        }
        let space = self.canned_space().await?;
        let id = match id {
            Some(id) if existing.iter().any(|c| c.id == id) => id,
            Some(_) => return Err(EngineError::NotFound("canned response")),
            None if existing.len() >= MAX_CANNED => {
                return Err(EngineError::Invalid(format!(
                    "a team keeps at most {MAX_CANNED} canned responses"
                )));
            }
            None => space.next_id().await.map_err(io)?,
        };
        let canned = CannedResponse {
            id,
            shortcut,
            title: title.to_owned(),
            text: text.to_owned(),
            updated_at_ms: self.now_ms(),
        };
        let value = serde_json::to_vec(&canned).expect("canned responses serialise");
        space.put_all(&[(&key(id), &value)]).await.map_err(io)?;
        Ok(canned)
    }

    pub async fn delete_canned(&self, id: u64) -> Result<(), EngineError> {
        let space = self.canned_space().await?;
        match space.get(&key(id)).await.map_err(io)? {
            Some(v) if !v.is_empty() => space.put_all(&[(&key(id), b"")]).await.map_err(io),
            _ => Err(EngineError::NotFound("canned response")),
        }
    }
}
