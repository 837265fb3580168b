//! What agents write: replies (idempotent per key) and private notes, and the knowledge-base
//! suggestions they write them from.

use switchboard_channel::{Attachment, MAX_TEXT_BYTES};

use super::draft::Reply;
use super::{Engine, EngineError, IDEMPOTENCY_WINDOW, MAX_ATTACHMENTS};
use crate::model::{
    Action, Actor, AgentId, Author, Conversation, ConversationId, EventKind, Note, NoteId, Status,
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
                .conversation(id)?
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
            .update(id, Actor::Agent(agent.id), |d| {
                // Under the conversation's lane: a concurrent retry sees this one's commit.
                if let Some(key) = key
                    && let Some(earlier) = self.replied_with_key(&d.conv, agent.id, key)?
                {
                    return Ok((earlier, None));
                }
                if d.conv.status != Status::Assigned || d.conv.assignee != Some(agent.id) {
                    d.transition(Action::Assign(agent.id), "agent replied")?;
                }
                let in_reply_to = self.last_customer_external_id(d.conv.id, d.conv.last_seq)?;
                let waited = self.waited_for_first_response(&d.conv, d.now)?;
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
            })
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

    /// The seq of `agent`'s reply posted with `key`, among the conversation's recent messages.
    fn replied_with_key(
        &self,
        conv: &Conversation,
        agent: AgentId,
        key: &str,
    ) -> Result<Option<u64>, EngineError> {
        let from = conv.last_seq.saturating_sub(IDEMPOTENCY_WINDOW as u64);
        Ok(self
            .store
            .messages(conv.id, from, IDEMPOTENCY_WINDOW)?
            .into_iter()
            .find(|m| m.author == Author::Agent(agent) && m.idempotency_key.as_deref() == Some(key))
            .map(|m| m.seq))
    }

    /// Milliseconds since the hand-over when no person has replied since; `None` otherwise.
    fn waited_for_first_response(
        &self,
        conv: &Conversation,
        now: i64,
    ) -> Result<Option<i64>, EngineError> {
        let Some(escalation) = &conv.escalation else {
            return Ok(None);
        };
        let recent = self
            .store
            .messages(conv.id, conv.last_seq.saturating_sub(50), 50)?;
        let answered = recent
            .iter()
            .any(|m| matches!(m.author, Author::Agent(_)) && m.created_at_ms >= escalation.at_ms);
        Ok((!answered).then(|| (now - escalation.at_ms).max(0)))
    }

    fn last_customer_external_id(
        &self,
        conv: ConversationId,
        last_seq: u64,
    ) -> Result<Option<switchboard_channel::ExternalMessageId>, EngineError> {
        // Look back a little; threading is a courtesy, not a requirement.
        let from = last_seq.saturating_sub(20);
        let recent = self.store.messages(conv, from, 20)?;
        Ok(recent
            .into_iter()
            .rev()
            .find(|m| m.author == Author::Customer)
            .and_then(|m| m.external_id))
    }

    pub async fn add_note(
        &self,
        id: ConversationId,
        agent: AgentId,
        text: &str,
    ) -> Result<Note, EngineError> {
        self.room_for_more()?;
        let text = checked_text(text)?;
        let note_id = NoteId(self.store.next_id()?);
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
    /// messages matched on its own, best score per entry, best first. Returns the latest
    /// customer message's seq with them. CPU work: call off the async threads.
    pub fn suggestions(
        &self,
        id: ConversationId,
        n: usize,
    ) -> Result<(Option<u64>, Vec<crate::bot::Suggestion>), EngineError> {
        /// Messages looked through, and customer messages matched.
        const LOOK_BACK: u64 = 50;
        const ASKED: usize = 3;
        let conv = self
            .store
            .conversation(id)?
            .ok_or(EngineError::NotFound("conversation"))?;
        let mut asked = Vec::new();
        for seq in (conv.last_seq.saturating_sub(LOOK_BACK).max(1)..=conv.last_seq).rev() {
            if let Some(m) = self.store.message(id, seq)?
                && m.author == Author::Customer
                && !m.text.trim().is_empty()
            {
                asked.push(m);
                if asked.len() == ASKED {
                    break;
                }
            }
        }
        let responder = self.responder();
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
        Ok((asked.first().map(|m| m.seq), best))
    }
}
