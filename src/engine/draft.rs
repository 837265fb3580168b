//! A [`Draft`] collects one state change of one conversation: the new record, the messages,
//! events and outbox items it brings. Pure bookkeeping: the engine applies it to the store.

use switchboard_channel::{Attachment, Button, ExternalMessageId, InboundMessage, Outbound};

use crate::model::{
    Action, Actor, Author, BotVerdict, Conversation, Delivery, DeliveryState, Event, EventKind,
    Message, OutboxItem, TransitionError, transition,
};
use crate::store::{Change, ConversationWrite};

pub(crate) struct Draft {
    pub conv: Conversation,
    /// The conversation as read, `None` when this change creates it.
    original: Option<Conversation>,
    pub change: Change,
    pub actor: Actor,
    pub now: i64,
}

/// A message to the customer, before it has a place in the conversation.
pub(crate) struct Reply {
    pub author: Author,
    /// The agent's name as the customer sees it.
    pub author_name: Option<String>,
    pub text: String,
    pub buttons: Vec<Button>,
    pub attachments: Vec<Attachment>,
    /// The customer message it answers, for networks with threading.
    pub in_reply_to: Option<ExternalMessageId>,
    pub verdict: Option<BotVerdict>,
}

impl Reply {
    pub fn bot(text: String, in_reply_to: Option<ExternalMessageId>) -> Self {
        Reply {
            author: Author::Bot,
            author_name: None,
            text,
            buttons: vec![],
            attachments: vec![],
            in_reply_to,
            verdict: None,
        }
    }
}

pub(crate) fn outbound_id(conv: &Conversation, seq: u64) -> String {
    format!("sb-{}-{}", conv.id, seq)
}

/// The conversation and message of an id made by [`outbound_id`].
pub(crate) fn parse_outbound_id(id: &str) -> Option<(crate::model::ConversationId, u64)> {
    let (conv, seq) = id.strip_prefix("sb-")?.split_once('-')?;
    Some((
        crate::model::ConversationId(conv.parse().ok()?),
        seq.parse().ok()?,
    ))
}

impl Draft {
    pub fn new(conv: Conversation, is_new: bool, actor: Actor, now: i64) -> Self {
        Draft {
            original: (!is_new).then(|| conv.clone()),
            conv,
            change: Change::default(),
            actor,
            now,
        }
    }

    /// Records an event of this conversation (its id comes with the commit).
    pub fn event(&mut self, kind: EventKind) {
        self.change.events.push(Event::new(
            Some(self.conv.id),
            self.actor.clone(),
            self.now,
            kind,
        ));
    }

    /// Applies a state-machine action, recording status and assignee changes with `reason`.
    /// Returns whether anything changed.
    pub fn transition(&mut self, action: Action, reason: &str) -> Result<bool, TransitionError> {
        let before = self.conv.state();
        let after = transition(before, action)?;
        if after == before {
            return Ok(false);
        }
        self.conv.set_state(after);
        if before.status != after.status {
            self.event(EventKind::StatusChanged {
                from: before.status,
                to: after.status,
                reason: reason.to_owned(),
            });
        }
        if before.assignee != after.assignee {
            self.event(EventKind::AssigneeChanged {
                from: before.assignee,
                to: after.assignee,
                reason: reason.to_owned(),
            });
        }
        Ok(true)
    }

    fn touch(&mut self) {
        self.conv.updated_at_ms = self.now.max(self.conv.updated_at_ms);
    }

    fn next_seq(&mut self) -> u64 {
        self.conv.last_seq += 1;
        self.conv.last_seq
    }

    /// Adds a customer message.
    /// Adds a customer message; `member`: written by someone other than the conversation's
    /// contact (a group chat), who is then named on the message.
    pub fn push_inbound(&mut self, msg: &InboundMessage, member: bool) -> u64 {
        let seq = self.next_seq();
        self.touch();
        self.conv.preview = crate::model::preview_of(&msg.text);
        if self.conv.subject.is_none() {
            self.conv.subject.clone_from(&msg.subject);
        }
        self.change.new_external_ids.push((
            self.conv.channel.clone(),
            msg.message_id.clone(),
            self.conv.id,
            seq,
        ));
        self.change.messages.push(Message {
            conversation: self.conv.id,
            seq,
            author: Author::Customer,
            text: msg.text.clone(),
            attachments: msg.attachments.clone(),
            external_id: Some(msg.message_id.clone()),
            delivery: None,
            verdict: None,
            created_at_ms: self.now,
            edited_at_ms: None,
            deleted_at_ms: None,
            idempotency_key: None,
            subject: msg.subject.clone(),
            payload: msg.payload.clone(),
            member: member.then(|| crate::model::Member {
                user: msg.sender.id.0.clone(),
                name: msg.sender.name.clone(),
            }),
            buttons: vec![],
        });
        self.event(EventKind::MessageReceived { seq });
        seq
    }

    /// Adds a reply and queues it in the outbox.
    pub fn push_outbound(&mut self, reply: Reply) -> u64 {
        let seq = self.next_seq();
        self.touch();
        let id = outbound_id(&self.conv, seq);
        self.change.outbox_put.push(OutboxItem {
            conversation: self.conv.id,
            seq,
            channel: self.conv.channel.clone(),
            thread: self.conv.thread.clone(),
            outbound: Outbound {
                id: id.clone(),
                author: reply.author.outbound(reply.author_name),
                text: reply.text.clone(),
                buttons: reply.buttons.clone(),
                in_reply_to: reply.in_reply_to,
                format: reply.author.text_format(),
                attachments: reply.attachments.clone(),
            },
            attempts: 0,
            flood_waits: 0,
            next_attempt_ms: self.now,
        });
        self.change.messages.push(Message {
            conversation: self.conv.id,
            seq,
            author: reply.author,
            text: reply.text,
            attachments: reply.attachments,
            external_id: None,
            delivery: Some(Delivery {
                outbound_id: id,
                state: DeliveryState::Queued,
                attempts: 0,
                last_error: None,
                external_id: None,
                updated_at_ms: self.now,
            }),
            verdict: reply.verdict,
            created_at_ms: self.now,
            edited_at_ms: None,
            deleted_at_ms: None,
            idempotency_key: None,
            subject: None,
            payload: None,
            member: None,
            buttons: reply.buttons,
        });
        self.event(EventKind::MessageQueued { seq });
        seq
    }

    /// The messages this change adds to the conversation (not those it only updates, such
    /// as a reply's delivery state).
    pub fn added_messages(&self) -> impl Iterator<Item = &Message> {
        let before = self.original.as_ref().map_or(0, |c| c.last_seq);
        self.change.messages.iter().filter(move |m| m.seq > before)
    }

    /// The status before this change (`None` for a new conversation).
    pub fn status_before(&self) -> Option<crate::model::Status> {
        self.original.as_ref().map(|c| c.status)
    }

    /// The finished change, with the conversation record included.
    pub fn finish(mut self) -> (Change, Conversation) {
        self.change.conversations.push(ConversationWrite {
            record: self.conv.clone(),
            previous: self.original,
            restored: false,
        });
        (self.change, self.conv)
    }
}
