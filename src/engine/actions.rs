//! Agents acting on a conversation: state-machine actions, labels, priority, retrying a
//! failed delivery.

use std::collections::BTreeSet;

use super::{Engine, EngineError, outbox};
use crate::model::{
    Action, Actor, AgentId, Author, Conversation, ConversationId, EventKind, Message, Priority,
};

/// Longest label, and most labels on one conversation.
const MAX_LABEL_CHARS: usize = 64;
const MAX_LABELS: usize = 32;

impl Engine {
    /// A state-machine action by an agent (assign, resolve, snooze, ...).
    pub async fn act(
        &self,
        id: ConversationId,
        actor: Actor,
        action: Action,
        reason: &str,
    ) -> Result<Conversation, EngineError> {
        if let Action::Assign(agent) = action {
            match self.store.agent(agent).await? {
                Some(a) if !a.disabled => {}
                _ => {
                    return Err(EngineError::Invalid(format!(
                        "agent {agent} does not exist or is disabled"
                    )));
                }
            }
        }
        if let Action::Snooze { until_ms } = action
            && until_ms <= self.now_ms()
        {
            return Err(EngineError::Invalid(
                "snooze time must be in the future".into(),
            ));
        }
        self.update(id, actor, |d| {
            d.transition(action, reason)?;
            if action == Action::HandBack {
                d.conv.bot_misses = 0;
            }
            Ok(())
        })
        .await
        .map(|(conv, ())| conv)
    }

    pub async fn set_labels(
        &self,
        id: ConversationId,
        agent: AgentId,
        labels: Vec<String>,
    ) -> Result<Conversation, EngineError> {
        let mut set = BTreeSet::new();
        for l in labels {
            let l = l.trim().to_lowercase();
            if l.is_empty() || l.chars().count() > MAX_LABEL_CHARS {
                return Err(EngineError::Invalid(format!(
                    "labels must be 1 to {MAX_LABEL_CHARS} characters"
                )));
            }
            set.insert(l);
        }
        if set.len() > MAX_LABELS {
            return Err(EngineError::Invalid(format!("at most {MAX_LABELS} labels")));
        }
        self.update(id, Actor::Agent(agent), |d| {
            if d.conv.labels != set {
                d.conv.labels = set.clone();
                d.event(EventKind::LabelsChanged {
                    labels: set.clone(),
                });
            }
            Ok(())
        })
        .await
        .map(|(conv, ())| conv)
    }

    pub async fn set_priority(
        &self,
        id: ConversationId,
        agent: AgentId,
        priority: Priority,
    ) -> Result<Conversation, EngineError> {
        self.update(id, Actor::Agent(agent), |d| {
            if d.conv.priority != priority {
                d.conv.priority = priority;
                d.event(EventKind::PriorityChanged { priority });
            }
            Ok(())
        })
        .await
        .map(|(conv, ())| conv)
    }

    /// Puts a failed delivery back into the outbox.
    pub async fn retry_delivery(
        &self,
        id: ConversationId,
        seq: u64,
        agent: AgentId,
    ) -> Result<Message, EngineError> {
        let message = self
            .store
            .message(id, seq)
            .await?
            .ok_or(EngineError::NotFound("message"))?;
        let Some(delivery) = &message.delivery else {
            return Err(EngineError::Conflict(
                "only outbound messages are delivered".into(),
            ));
        };
        if delivery.state != crate::model::DeliveryState::Failed {
            return Err(EngineError::Conflict(
                "only a failed delivery can be retried".into(),
            ));
        }
        let author_name = match &message.author {
            Author::Agent(a) => self.store.agent(*a).await?.map(|a| a.name),
            _ => None,
        };
        let (_, updated) = self
            .update(id, Actor::Agent(agent), |d| {
                let mut m = message.clone();
                let item = outbox::requeue(&d.conv, &mut m, author_name.clone(), d.now);
                d.change.outbox_put.push(item);
                d.change.failed_remove.push((id, seq));
                d.change.messages.push(m.clone());
                d.event(EventKind::DeliveryChanged {
                    seq,
                    state: crate::model::DeliveryState::Queued,
                    error: None,
                });
                Ok(m)
            })
            .await?;
        Ok(updated)
    }
}
