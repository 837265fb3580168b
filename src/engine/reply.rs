//! What agents write: replies (idempotent per key) and private notes, and the knowledge-base
//! suggestions they write them from.

use switchboard_channel::{Attachment, MAX_TEXT_BYTES};

use super::draft::Reply;
use super::{Engine, EngineError, IDEMPOTENCY_WINDOW, MAX_ATTACHMENTS};
use crate::model::{
    Action, Actor, AgentId, Author, Conversation, ConversationId, EventKind, Message, Note, NoteId,
    Status,
};

fn checked_text(text: &str) -> Result<String, EngineError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(EngineError::Invalid("text is empty".into()));
    }
    if t.len() > MAX_TEXT_BYTES {
        return Err(EngineError::Invalid(format!(
            "text is longer than {MAX_TEXT_BYTES} bytes"
        )));
    }
    Ok(t.to_owned())
}

impl Engine {
    /// An agent's reply, with files already stored as blobs: the agent takes the
    /// conversation if it is not theirs yet. With an idempotency `key` already used by this
    /// agent among the conversation's last [`IDEMPOTENCY_WINDOW`] messages, nothing new is
    /// stored or sent: the earlier reply's seq is returned (a client retrying after a lost
    /// answer must not send the customer the same reply twice).
    pub async fn reply(
        &self,
        id: ConversationId,
        agent: &crate::model::Agent,
        text: &str,
        attachments: &[Attachment],
        key: Option<&str>,
    ) -> Result<(Conversation, u64), EngineError> {
        self.room_for_more()?;
        let text = if attachments.is_empty() {
            checked_text(text)?
        } else {
            checked_text(text).unwrap_or_default()
        };
        if attachments.len() > MAX_ATTACHMENTS {
            return Err(EngineError::Invalid(format!(
                "at most {MAX_ATTACHMENTS} attachments per reply"
            )));
        }
        if let Some(a) = attachments.iter().find(|a| a.blob.is_none()) {
            return Err(EngineError::Invalid(format!(
                "attachment {} has no stored content (upload it first)",
                a.name
            )));
        }
        if !attachments.is_empty() {
            let conv = self
                .store
                .conversation(id)
                .await?
                .ok_or(EngineError::NotFound("conversation"))?;
            if self
                .channel(&conv.channel)
                .is_some_and(|c| !c.capabilities().attachments)
            {
                return Err(EngineError::Invalid(format!(
                    "the {} channel cannot carry files; send the text alone",
                    conv.channel
                )));
            }
        }
        let (conv, (seq, waited)) = self
            .update_with(
                id,
                Actor::Agent(agent.id),
                |c| self.recent_messages(c.id, c.last_seq, key.is_some()),
                |d, recent| {
                    // Under the conversation's lane: a concurrent retry sees this one's commit.
                    if let Some(key) = key
                        && let Some(earlier) = replied_with_key(&recent, agent.id, key)
                    {
                        return Ok((earlier, None));
                    }
                    if d.conv.status != Status::Assigned || d.conv.assignee != Some(agent.id) {
                        d.transition(Action::Assign(agent.id), "agent replied")?;
                    }
                    let in_reply_to = last_customer_external_id(&d.conv, &recent);
                    let waited = waited_for_first_response(&d.conv, &recent, d.now);
                    let seq = d.push_outbound(Reply {
                        author: Author::Agent(agent.id),
                        author_name: Some(agent.name.clone()),
                        text: text.clone(),
                        buttons: vec![],
                        attachments: attachments.to_vec(),
                        in_reply_to,
                        verdict: None,
                    });
                    if let Some(m) = d.change.messages.last_mut() {
                        m.idempotency_key = key.map(str::to_owned);
                    }
                    Ok((seq, waited))
                },
            )
            .await?;
        if let Some(waited) = waited {
            self.metrics
                .first_response(std::time::Duration::from_millis(waited as u64));
            self.recent_waits.record(waited);
        }
        Ok((conv, seq))
    }

    /// Refuses new messages while the disk is below its reserve (see [`crate::store::disk`]).
    pub(super) fn room_for_more(&self) -> Result<(), EngineError> {
        let Some(maintenance) = self.store.maintenance() else {
            return Ok(());
        };
        let space = maintenance.disk();
        if space.low() {
            return Err(EngineError::DiskFull(space.explain()));
        }
        Ok(())
    }

    /// The conversation's last messages a reply looks back over: for its idempotency key,
    /// the last [`IDEMPOTENCY_WINDOW`]; else the last [`REPLY_LOOK_BACK`].
    async fn recent_messages(
        &self,
        conv: ConversationId,
        last_seq: u64,
        keyed: bool,
    ) -> Result<Vec<Message>, EngineError> {
        let n = if keyed {
            IDEMPOTENCY_WINDOW.max(REPLY_LOOK_BACK)
        } else {
            REPLY_LOOK_BACK
        };
        let from = last_seq.saturating_sub(n as u64);
        Ok(self.store.messages(conv, from, n).await?)
    }

    pub async fn add_note(
        &self,
        id: ConversationId,
        agent: AgentId,
        text: &str,
    ) -> Result<Note, EngineError> {
        self.room_for_more()?;
        let text = checked_text(text)?;
        let note_id = NoteId(self.store.next_id().await?);
        let (_, note) = self
            .update(id, Actor::Agent(agent), |d| {
                let n = Note {
                    id: note_id,
                    conversation: d.conv.id,
                    author: agent,
                    text: text.clone(),
                    created_at_ms: d.now,
                };
                d.change.notes.push(n.clone());
                d.event(EventKind::NoteAdded { note: note_id });
                Ok(n)
            })
            .await?;
        Ok(note)
    }

    /// Knowledge-base answers for what the customer asked lately: each of their last few
    /// messages matched on its own (on a blocking thread), best score per entry, best first.
    /// Returns the latest customer message's seq with them.
    pub async fn suggestions(
        &self,
        id: ConversationId,
        n: usize,
    ) -> Result<(Option<u64>, Vec<crate::bot::Suggestion>), EngineError> {
        /// Messages looked through, and customer messages matched.
        const LOOK_BACK: u64 = 50;
        const ASKED: usize = 3;
        let conv = self
            .store
            .conversation(id)
            .await?
            .ok_or(EngineError::NotFound("conversation"))?;
        let from = conv.last_seq.saturating_sub(LOOK_BACK);
        let asked: Vec<Message> = self
            .store
            .messages(id, from, LOOK_BACK as usize)
            .await?
            .into_iter()
            .rev()
            .filter(|m| m.author == Author::Customer && !m.text.trim().is_empty())
            .take(ASKED)
            .collect();
        let latest = asked.first().map(|m| m.seq);
        // Matching is CPU work (each message through the model).
        let responder = self.responder();
        let best = tokio::task::spawn_blocking(move || {
            let mut best: Vec<crate::bot::Suggestion> = Vec::new();
            for m in &asked {
                for s in responder.suggest(&m.text, n) {
                    match best.iter_mut().find(|b| b.entry == s.entry) {
                        Some(b) if b.score < s.score => *b = s,
                        Some(_) => {}
                        None => best.push(s),
                    }
                }
            }
            best.sort_by(|a, b| b.score.total_cmp(&a.score));
            best.truncate(n);
            best
        })
        .await
        .map_err(|e| EngineError::Invalid(format!("matching task failed: {e}")))?;
        Ok((latest, best))
    }
}

/// Messages a reply looks back over without an idempotency key (the first-response clock).
const REPLY_LOOK_BACK: usize = 50;
/// Of those, the ones searched for the customer message a reply answers: threading is a
/// courtesy, not a requirement.
const IN_REPLY_TO_LOOK_BACK: u64 = 20;

/// The seq of `agent`'s reply posted with `key`, among `recent` messages.
fn replied_with_key(recent: &[Message], agent: AgentId, key: &str) -> Option<u64> {
    recent
        .iter()
        .find(|m| m.author == Author::Agent(agent) && m.idempotency_key.as_deref() == Some(key))
        .map(|m| m.seq)
}

/// Milliseconds since the hand-over when no person has replied since (among the last
/// [`REPLY_LOOK_BACK`] messages); `None` otherwise.
fn waited_for_first_response(conv: &Conversation, recent: &[Message], now: i64) -> Option<i64> {
    let escalation = conv.escalation.as_ref()?;
    let from = conv.last_seq.saturating_sub(REPLY_LOOK_BACK as u64);
    let answered = recent.iter().any(|m| {
        m.seq > from && matches!(m.author, Author::Agent(_)) && m.created_at_ms >= escalation.at_ms
    });
    (!answered).then(|| (now - escalation.at_ms).max(0))
}

/// The network id of the customer's latest message among the last few.
fn last_customer_external_id(
    conv: &Conversation,
    recent: &[Message],
) -> Option<switchboard_channel::ExternalMessageId> {
    let from = conv.last_seq.saturating_sub(IN_REPLY_TO_LOOK_BACK);
    recent
        .iter()
        .rev()
        .take_while(|m| m.seq > from)
        .find(|m| m.author == Author::Customer)
        .and_then(|m| m.external_id.clone())
}
