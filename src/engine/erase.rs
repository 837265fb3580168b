//! Forgetting a customer on request (the right to erasure): their identities, conversations,
//! messages, notes and the channels' own copies go; an audit event records that it happened
//! and how much went, without any of the content.

use super::{Engine, EngineError};
use crate::model::{Actor, AgentId, ContactId, Event, EventKind};
use crate::store::{Change, Erased};

impl Engine {
    /// Erases contact `id` (or the contact it was merged into) and everything of theirs.
    /// Channels forget their copies first, so a failure leaves the whole erasure to retry.
    /// Erasing a forgotten contact again erases nothing and succeeds.
    pub async fn forget_contact(
        &self,
        id: ContactId,
        by: Option<AgentId>,
    ) -> Result<Erased, EngineError> {
        let contact = self
            .contact(id)
            .await?
            .ok_or(EngineError::NotFound("contact"))?;
        if contact.forgotten_at_ms.is_some() {
            return Ok(Erased::default());
        }
        for conv in self.store.contact_conversations(contact.id).await? {
            let Some(c) = self.store.conversation(conv).await? else {
                continue;
            };
            if let Some(channel) = self.channel(&c.channel) {
                channel.forget(&c.thread).await.map_err(|e| {
                    EngineError::Invalid(format!("channel {} could not forget: {e}", c.channel))
                })?;
            }
        }
        let at = self.now_ms();
        let erased = self.store.erase_contact(contact.id, at).await?;
        self.commit(Change {
            events: vec![Event::new(
                None,
                by.map(Actor::Agent).unwrap_or(Actor::System),
                at,
                EventKind::ContactForgotten {
                    contact: contact.id,
                    conversations: erased.conversations.len() as u64,
                    messages: erased.messages,
                },
            )],
            ..Change::default()
        })
        .await?;
        tracing::info!(
            contact = %contact.id,
            conversations = erased.conversations.len(),
            messages = erased.messages,
            "contact forgotten"
        );
        Ok(erased)
    }
}
