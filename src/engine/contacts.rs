//! Contacts: following merges, and merging two.

use super::{Engine, EngineError, MAX_RETRIES};
use crate::model::{Actor, AgentId, Contact, ContactId, Event, EventKind};
use crate::store::{Change, ConversationWrite, StoreError};

impl Engine {
    /// Follows `merged_into` links to the contact that stands for `id` now.
    pub async fn contact(&self, id: ContactId) -> Result<Option<Contact>, EngineError> {
        let mut current = self.store.contact(id).await?;
        for _ in 0..16 {
            match current {
                Some(Contact {
                    merged_into: Some(next),
                    ..
                }) => current = self.store.contact(next).await?,
                other => return Ok(other),
            }
        }
        Err(EngineError::Invalid("contact merge chain too long".into()))
    }

    /// Merges contact `from` into `into`: identities and conversations move; `from` remains as a
    /// pointer for old references.
    pub async fn merge_contacts(
        &self,
        into: ContactId,
        from: ContactId,
        agent: AgentId,
    ) -> Result<Contact, EngineError> {
        if into == from {
            return Err(EngineError::Invalid(
                "cannot merge a contact into itself".into(),
            ));
        }
        for _ in 0..MAX_RETRIES {
            let mut target = self
                .contact(into)
                .await?
                .ok_or(EngineError::NotFound("contact"))?;
            let mut source = self
                .store
                .contact(from)
                .await?
                .ok_or(EngineError::NotFound("contact"))?;
            if source.merged_into.is_some() {
                return Err(EngineError::Invalid(format!(
                    "contact {from} was already merged"
                )));
            }
            if target.id == source.id {
                return Err(EngineError::Invalid(
                    "cannot merge a contact into itself".into(),
                ));
            }
            let now = self.now_ms();
            let mut change = Change::default();
            for ident in &source.identities {
                change.moved_identities.push((
                    ident.channel.clone(),
                    ident.user.clone(),
                    target.id,
                ));
                if !target.identities.contains(ident) {
                    target.identities.push(ident.clone());
                }
            }
            if target.name.is_none() {
                target.name = source.name.clone();
            }
            source.merged_into = Some(target.id);
            for conv_id in self.store.contact_conversations(source.id).await? {
                if let Some(previous) = self.store.conversation(conv_id).await? {
                    let mut conv = previous.clone();
                    conv.contact = target.id;
                    change
                        .conversations
                        .push(ConversationWrite::update(previous, conv));
                }
            }
            change.events.push(Event::new(
                None,
                Actor::Agent(agent),
                now,
                EventKind::ContactsMerged {
                    from: source.id,
                    into: target.id,
                },
            ));
            change.contacts = vec![target.clone(), source];
            match self.commit(change).await {
                Ok(()) => return Ok(target),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Busy)
    }
}
