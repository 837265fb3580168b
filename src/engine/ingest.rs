//! Customer events from the channels: new messages (and conversations), edits, deletions,
//! bounces. Each is durable before it is acknowledged.

use switchboard_channel::{
    Accepted, ChannelId, InboundEdit, InboundError, InboundEvent, InboundMessage,
};

use super::draft::{self, Draft, Reply};
use super::{Engine, EngineError, MAX_RETRIES};
use crate::model::{
    Action, Actor, Author, Contact, ContactId, Conversation, ConversationId, EventKind, Identity,
    Status,
};
use crate::store::{Change, StoreError};

impl Engine {
    /// Stores one customer event durably.
    #[tracing::instrument(name = "ingest", skip_all,
        fields(channel = %channel, conversation = tracing::field::Empty))]
    pub async fn ingest(
        &self,
        channel: &ChannelId,
        event: InboundEvent,
    ) -> Result<Accepted, InboundError> {
        if self.channel(channel).is_none() {
            return Err(InboundError::Rejected(format!("unknown channel {channel}")));
        }
        let (msg, start) = match event {
            InboundEvent::Message(m) => (m, false),
            InboundEvent::Start(m) => (m, true),
            // These change an existing conversation: `update` takes its lane.
            InboundEvent::Edit(edit) => return self.ingest_edit(channel, &edit).await,
            InboundEvent::Delete { message_id, .. } => {
                return self.ingest_delete(channel, &message_id).await;
            }
            InboundEvent::DeliveryFailed {
                outbound_id,
                reason,
                ..
            } => return self.delivery_failed(&outbound_id, &reason).await,
        };
        self.room_for_more()
            .map_err(|e| InboundError::Unavailable(e.to_string()))?;
        // Messages of one conversation are stored one after the other, in arrival order.
        let _lane = self.lane(channel, &msg.thread).lock().await;
        if self
            .stored_before_ids_were_scoped(channel, &msg)
            .await
            .map_err(|e| unavailable(e.into()))?
        {
            return self.duplicate(channel).await;
        }
        for _ in 0..MAX_RETRIES {
            let outcome = match self.prepare_ingest(channel, &msg, start).await {
                Ok(change) => {
                    if let Some(w) = change.conversations.first() {
                        tracing::Span::current().record("conversation", w.record.id.0);
                    }
                    self.commit(change).await
                }
                Err(e) => return Err(unavailable(e)),
            };
            match outcome {
                Ok(()) => {
                    self.metrics.inbound(channel.as_str(), false);
                    return Ok(Accepted::Stored);
                }
                Err(StoreError::Exists("message id")) => return self.duplicate(channel).await,
                Err(StoreError::Conflict(_) | StoreError::Exists(_)) => continue,
                Err(e) => return Err(unavailable(e.into())),
            }
        }
        Err(InboundError::Unavailable(
            "too much contention; retry".into(),
        ))
    }

    /// One message of a conversation (what an edit or a bounce changes).
    async fn message_of(
        &self,
        conv: ConversationId,
        seq: u64,
    ) -> Result<Option<crate::model::Message>, EngineError> {
        Ok(self.store.message(conv, seq).await?)
    }

    /// A message stored before: once that earlier write is durable, says so.
    async fn duplicate(&self, channel: &ChannelId) -> Result<Accepted, InboundError> {
        self.store
            .durable()
            .await
            .map_err(|e| unavailable(e.into()))?;
        self.metrics.inbound(channel.as_str(), true);
        Ok(Accepted::Duplicate)
    }

    /// Whether `msg` was stored under its [`InboundMessage::earlier_id`] (before its
    /// channel scoped ids to the sender) in this very conversation: then it is that message
    /// again. The same id in another conversation is another customer's.
    async fn stored_before_ids_were_scoped(
        &self,
        channel: &ChannelId,
        msg: &InboundMessage,
    ) -> Result<bool, StoreError> {
        let Some(earlier) = &msg.earlier_id else {
            return Ok(false);
        };
        let Some((conv, _)) = self.store.external_message(channel, earlier).await? else {
            return Ok(false);
        };
        Ok(self.store.thread(channel, &msg.thread).await? == Some(conv))
    }

    /// A reply the network accepted turned out undelivered (a bounce): the message shows
    /// as failed, with the reason, where agents look for failed deliveries.
    async fn delivery_failed(
        &self,
        outbound_id: &str,
        reason: &str,
    ) -> Result<Accepted, InboundError> {
        let Some((conv, seq)) = draft::parse_outbound_id(outbound_id) else {
            return Ok(Accepted::Duplicate);
        };
        let result = self
            .update_with(
                conv,
                Actor::System,
                |c| self.message_of(c.id, seq),
                |d, message| {
                    let Some(mut message) = message else {
                        return Ok(false);
                    };
                    let Some(delivery) = message.delivery.as_mut() else {
                        return Ok(false);
                    };
                    if delivery.outbound_id != outbound_id
                        || delivery.state == crate::model::DeliveryState::Failed
                    {
                        return Ok(false);
                    }
                    delivery.state = crate::model::DeliveryState::Failed;
                    delivery.last_error = Some(reason.to_owned());
                    delivery.updated_at_ms = d.now;
                    d.change.messages.push(message);
                    d.change.failed_put.push((d.conv.id, seq));
                    d.event(EventKind::DeliveryChanged {
                        seq,
                        state: crate::model::DeliveryState::Failed,
                        error: Some(reason.to_owned()),
                    });
                    Ok(true)
                },
            )
            .await;
        match result {
            Ok((_, true)) => Ok(Accepted::Stored),
            Ok((_, false)) | Err(EngineError::NotFound(_)) => Ok(Accepted::Duplicate),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// A customer edited a stored message: the text changes, the original stays in the event.
    async fn ingest_edit(
        &self,
        channel: &ChannelId,
        edit: &InboundEdit,
    ) -> Result<Accepted, InboundError> {
        let text = edit.text.trim().to_owned();
        self.change_customer_message(channel, &edit.message_id, |message, seq, now| {
            if message.text == text {
                return None;
            }
            let previous = std::mem::replace(&mut message.text, text.clone());
            message.edited_at_ms = Some(edit.edited_at_ms.unwrap_or(now));
            Some(EventKind::MessageEdited { seq, previous })
        })
        .await
    }

    /// Marks a customer message deleted (it was deleted on the network); the text stays for
    /// the agents, the event log says when.
    async fn ingest_delete(
        &self,
        channel: &ChannelId,
        message_id: &switchboard_channel::ExternalMessageId,
    ) -> Result<Accepted, InboundError> {
        self.change_customer_message(channel, message_id, |message, seq, now| {
            if message.deleted_at_ms.is_some() {
                return None;
            }
            message.deleted_at_ms = Some(now);
            Some(EventKind::MessageDeleted { seq })
        })
        .await
    }

    /// Applies `change` to the stored customer message with network id `message_id`; it
    /// returns the event to record, or `None` when there is nothing to change. A message never
    /// stored (not addressed to us, or older than this store) is a duplicate.
    async fn change_customer_message(
        &self,
        channel: &ChannelId,
        message_id: &switchboard_channel::ExternalMessageId,
        change: impl Fn(&mut crate::model::Message, u64, i64) -> Option<EventKind>,
    ) -> Result<Accepted, InboundError> {
        let Some((conv, seq)) = self
            .store
            .external_message(channel, message_id)
            .await
            .map_err(|e| unavailable(e.into()))?
        else {
            return Ok(Accepted::Duplicate);
        };
        let result = self
            .update_with(
                conv,
                Actor::Customer,
                |c| self.message_of(c.id, seq),
                |d, message| {
                    let Some(mut message) = message else {
                        return Ok(false);
                    };
                    if message.author != Author::Customer {
                        return Ok(false);
                    }
                    let Some(event) = change(&mut message, seq, d.now) else {
                        return Ok(false);
                    };
                    if d.conv.last_seq == seq && message.deleted_at_ms.is_none() {
                        d.conv.preview = crate::model::preview_of(&message.text);
                    }
                    d.change.messages.push(message);
                    d.event(event);
                    Ok(true)
                },
            )
            .await;
        match result {
            Ok((_, true)) => Ok(Accepted::Stored),
            Ok((_, false)) => Ok(Accepted::Duplicate),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Builds the change that stores `msg`.
    async fn prepare_ingest(
        &self,
        channel: &ChannelId,
        msg: &InboundMessage,
        start: bool,
    ) -> Result<Change, EngineError> {
        let store = self.store.as_ref();
        // Duplicates are caught when the change commits (the message id is an
        // insert-if-absent key), which saves a read on every message.
        let now = self.now_ms();
        let mut change = Change::default();
        let contact_id = match store.identity(channel, &msg.sender.id).await? {
            Some(id) => id,
            None => {
                let id = ContactId(store.next_id().await?);
                change.contacts.push(Contact {
                    id,
                    name: msg.sender.name.clone(),
                    identities: vec![Identity {
                        channel: channel.clone(),
                        user: msg.sender.id.clone(),
                    }],
                    merged_into: None,
                    forgotten_at_ms: None,
                    created_at_ms: now,
                });
                change
                    .new_identities
                    .push((channel.clone(), msg.sender.id.clone(), id));
                id
            }
        };
        let existing = match store.thread(channel, &msg.thread).await? {
            Some(id) => Some(store.conversation(id).await?.ok_or(StoreError::Corrupt {
                tree: "threads",
                detail: format!("thread points at missing conversation {id}"),
            })?),
            None => None,
        };
        let is_new = existing.is_none();
        let conv = match existing {
            Some(c) => c,
            None => {
                let id = ConversationId(store.next_id().await?);
                change
                    .new_threads
                    .push((channel.clone(), msg.thread.clone(), id));
                Conversation::new(id, contact_id, channel.clone(), msg.thread.clone(), now)
            }
        };
        let mut draft = Draft::new(conv, is_new, Actor::Customer, now);
        draft.change = change;
        if is_new {
            draft.event(EventKind::ConversationCreated);
        }
        draft.transition(Action::CustomerMessage, "customer wrote")?;
        // The customer wrote: whatever failed to reach them before may work again.
        if let Some(reason) = draft.conv.unreachable.take() {
            draft.event(EventKind::ReachableAgain { was: reason });
        }
        let member = draft.conv.contact != contact_id;
        let seq = draft.push_inbound(msg, member);
        match (start, draft.conv.status) {
            (true, Status::Bot) => {
                let welcome = self.settings().welcome_message.clone();
                draft.push_outbound(Reply::bot(welcome, Some(msg.message_id.clone())));
            }
            // Machines (auto-replies, lists) are stored for people, never answered. While the
            // customer waits for a person the bot still answers what it knows.
            (false, Status::Bot | Status::Queued) if msg.automated.is_none() => {
                draft.change.bot_queue_put.push((draft.conv.id, seq))
            }
            _ => {}
        }
        self.clock_sla(&mut draft);
        let (change, _) = draft.finish();
        Ok(change)
    }
}

fn unavailable(e: EngineError) -> InboundError {
    tracing::warn!(error = %e, "inbound message not accepted");
    InboundError::Unavailable(e.to_string())
}

/// The engine as the sink connectors hand their events to.
#[async_trait::async_trait]
impl switchboard_channel::Inbound for Engine {
    async fn submit(
        &self,
        channel: &ChannelId,
        event: InboundEvent,
    ) -> Result<Accepted, InboundError> {
        self.ingest(channel, event).await
    }
}
