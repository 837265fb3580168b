//! Pure data types of the conversation model and the state machine. No I/O here.
//!
//! - [`ids`]: numeric ids of our own records.
//! - [`state`]: conversation statuses and the transition function, unit-tested edge by edge.
//! - [`lang`]: the language of a customer's text and texts kept per language.
//! - [`availability`]: whether people are at work (routing's schedules answer it).
//! - this file: contacts, conversations, messages, notes, agents, events and outbox items as
//!   stored and as served by the API.

pub mod availability;
pub mod ids;
pub mod lang;
pub mod state;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use switchboard_channel::{
    Attachment, Button, ChannelId, ExternalMessageId, ExternalThread, ExternalUser, Outbound,
};
use utoipa::ToSchema;

pub use ids::{AgentId, ContactId, ConversationId, EventId, NoteId};
pub use state::{Action, ConvState, Status, TransitionError, transition};

/// A customer, with every identity known to belong to them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Contact {
    pub id: ContactId,
    /// Best known display name.
    pub name: Option<String>,
    pub identities: Vec<Identity>,
    /// Set when this contact was merged into another; reads follow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<ContactId>,
    pub created_at_ms: i64,
    /// Set when the contact's personal data was erased on request; only this record remains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgotten_at_ms: Option<i64>,
}

impl Contact {
    /// What is left of an erased contact: its id and merge link, when it was made and when
    /// it was forgotten; no name, no identities.
    pub fn tombstone(&self, forgotten_at_ms: i64) -> Contact {
        Contact {
            id: self.id,
            name: None,
            identities: Vec::new(),
            merged_into: self.merged_into,
            created_at_ms: self.created_at_ms,
            forgotten_at_ms: Some(forgotten_at_ms),
        }
    }
}

/// A customer's id on one channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Identity {
    #[schema(value_type = String)]
    pub channel: ChannelId,
    #[schema(value_type = String)]
    pub user: ExternalUser,
}

/// How urgent a conversation is, as set by agents (or routing rules).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Urgent,
}

/// Why the bot handed a conversation to people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Escalation {
    pub reason: EscalationReason,
    /// Human-readable detail (scores, cues, the KB entry).
    pub detail: String,
    pub at_ms: i64,
}

/// Why the bot hands a conversation to people (stored and served in snake case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EscalationReason {
    AskedForHuman,
    LowConfidence,
    Sensitive,
    Frustrated,
    BotError,
    /// The customer sent only files (a photo, a voice note): the bot reads words only.
    FilesOnly,
}

impl EscalationReason {
    pub const ALL: [EscalationReason; 6] = [
        Self::AskedForHuman,
        Self::LowConfidence,
        Self::Sensitive,
        Self::Frustrated,
        Self::BotError,
        Self::FilesOnly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AskedForHuman => "asked_for_human",
            Self::LowConfidence => "low_confidence",
            Self::Sensitive => "sensitive",
            Self::Frustrated => "frustrated",
            Self::BotError => "bot_error",
            Self::FilesOnly => "files_only",
        }
    }
}

/// Longest conversation preview, in characters.
pub const PREVIEW_CHARS: usize = 140;

/// The preview shown for a customer message.
pub fn preview_of(text: &str) -> String {
    text.chars().take(PREVIEW_CHARS).collect()
}

/// Which service-level target a clock measures (`routing::sla`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SlaKind {
    FirstResponse,
    NextResponse,
}

impl SlaKind {
    pub fn name(self) -> &'static str {
        match self {
            SlaKind::FirstResponse => "first_response",
            SlaKind::NextResponse => "next_response",
        }
    }
}

/// A running SLA clock on a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SlaClock {
    pub kind: SlaKind,
    pub started_ms: i64,
    /// When the target is missed (wall clock, business hours already counted in).
    pub due_ms: i64,
    /// When it is "due soon".
    pub warn_ms: i64,
    #[serde(default)]
    pub warned: bool,
    #[serde(default)]
    pub breached: bool,
}

/// One thread with one contact on one channel thread.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Conversation {
    pub id: ConversationId,
    pub contact: ContactId,
    #[schema(value_type = String)]
    pub channel: ChannelId,
    #[schema(value_type = String)]
    pub thread: ExternalThread,
    pub status: Status,
    /// The agent who owns it (assigned), or who will get it back when a snooze ends.
    pub assignee: Option<AgentId>,
    pub snoozed_until_ms: Option<i64>,
    pub priority: Priority,
    pub labels: BTreeSet<String>,
    /// Last escalation, kept after assignment so agents see why a person was needed.
    pub escalation: Option<Escalation>,
    /// Consecutive customer messages the bot could not answer.
    pub bot_misses: u32,
    /// The knowledge-base entry the bot answered with last (to notice the same question
    /// asked again: the answer did not help).
    #[serde(default)]
    pub bot_last_entry: Option<String>,
    /// Sequence number of the newest message.
    pub last_seq: u64,
    /// Start of the customer's newest message, for list views.
    pub preview: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Optimistic-concurrency counter; the store refuses a write based on a stale copy.
    pub version: u64,
    /// Why the channel cannot reach the customer any more (they blocked the bot, left the
    /// chat); cleared when they write again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
    /// The service-level clock while a customer waits for a person (`routing::sla`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla: Option<SlaClock>,
    /// The subject of the first message that had one (email).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl Conversation {
    /// A conversation that has just started: the bot has it, nothing written yet.
    pub fn new(
        id: ConversationId,
        contact: ContactId,
        channel: ChannelId,
        thread: ExternalThread,
        now_ms: i64,
    ) -> Self {
        Conversation {
            id,
            contact,
            channel,
            thread,
            status: Status::Bot,
            assignee: None,
            snoozed_until_ms: None,
            priority: Priority::Normal,
            labels: BTreeSet::new(),
            escalation: None,
            bot_misses: 0,
            bot_last_entry: None,
            last_seq: 0,
            preview: String::new(),
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            version: 0,
            unreachable: None,
            sla: None,
            subject: None,
        }
    }

    pub fn state(&self) -> ConvState {
        ConvState {
            status: self.status,
            assignee: self.assignee,
            snoozed_until_ms: self.snoozed_until_ms,
        }
    }

    /// Whether `other` differs from this record only in its activity (newest message, last
    /// update, preview) and version: what every new message changes.
    pub fn same_but_activity(&self, other: &Conversation) -> bool {
        // Every field named, so that a new one cannot be forgotten here; no copies (this runs
        // for every message).
        let Conversation {
            id,
            contact,
            channel,
            thread,
            status,
            assignee,
            snoozed_until_ms,
            priority,
            labels,
            escalation,
            bot_misses,
            bot_last_entry,
            last_seq: _,
            preview: _,
            created_at_ms,
            updated_at_ms: _,
            version: _,
            unreachable,
            sla,
            subject,
        } = self;
        *id == other.id
            && *contact == other.contact
            && *channel == other.channel
            && *thread == other.thread
            && *status == other.status
            && *assignee == other.assignee
            && *snoozed_until_ms == other.snoozed_until_ms
            && *priority == other.priority
            && *labels == other.labels
            && *escalation == other.escalation
            && *bot_misses == other.bot_misses
            && *bot_last_entry == other.bot_last_entry
            && *created_at_ms == other.created_at_ms
            && *unreachable == other.unreachable
            && *sla == other.sla
            && *subject == other.subject
    }

    pub fn set_state(&mut self, s: ConvState) {
        self.status = s.status;
        self.assignee = s.assignee;
        self.snoozed_until_ms = s.snoozed_until_ms;
    }
}

/// Who wrote a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind", content = "agent")]
pub enum Author {
    Customer,
    Bot,
    Agent(AgentId),
    System,
}

impl Author {
    /// Who the customer is told wrote a reply; `agent_name` is the agent's display name.
    pub fn outbound(&self, agent_name: Option<String>) -> switchboard_channel::OutboundAuthor {
        use switchboard_channel::OutboundAuthor;
        match self {
            Author::Agent(_) => OutboundAuthor::Agent(agent_name.unwrap_or_default()),
            Author::System => OutboundAuthor::System,
            Author::Bot | Author::Customer => OutboundAuthor::Bot,
        }
    }

    /// How this author's text is written: the bot's answers come from the knowledge base in
    /// light Markdown; what agents type is sent as they typed it.
    pub fn text_format(&self) -> switchboard_channel::TextFormat {
        match self {
            Author::Bot => switchboard_channel::TextFormat::Markdown,
            _ => switchboard_channel::TextFormat::Plain,
        }
    }
}

/// Delivery state of an outbound message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Queued,
    Sent,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// Stable id passed to the channel as idempotency key.
    pub outbound_id: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_error: Option<String>,
    #[schema(value_type = Option<String>)]
    pub external_id: Option<ExternalMessageId>,
    pub updated_at_ms: i64,
}

/// What the bot decided about a customer message, kept on the bot's reply and in the events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BotVerdict {
    pub decision: VerdictKind,
    /// KB entry answered with, if any.
    pub entry: Option<String>,
    /// Best score seen, in the responder's own scale.
    pub score: Option<f32>,
    pub reason: String,
}

/// The kind of a bot decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    /// Answered from the knowledge base.
    Answer,
    /// Small talk.
    Reply,
    /// Asked which of a few questions was meant.
    Clarify,
    /// Handed over to people.
    Escalate,
}

/// A member of a group chat, as their network names them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    /// Their id on the channel.
    pub user: String,
    pub name: Option<String>,
}

/// One message in a conversation, in either direction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub conversation: ConversationId,
    /// Position in the conversation, from 1.
    pub seq: u64,
    pub author: Author,
    pub text: String,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub attachments: Vec<Attachment>,
    /// The network's id (inbound: as received; outbound: once sent).
    #[schema(value_type = Option<String>)]
    pub external_id: Option<ExternalMessageId>,
    /// Outbound only.
    pub delivery: Option<Delivery>,
    /// Bot replies: why the bot said this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<BotVerdict>,
    pub created_at_ms: i64,
    /// When the customer last edited it (the text is the edited one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at_ms: Option<i64>,
    /// When the customer deleted it on their network (the text stays for the agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at_ms: Option<i64>,
    /// Agent replies: the `Idempotency-Key` the reply was posted with; the same key again
    /// answers with this message instead of sending a second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Customer messages: the subject they gave (email) when it starts a topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Customer messages: the button they pressed stands for this (the text is its label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// Customer messages written by someone other than the conversation's contact (another
    /// member of a group chat): who.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<Member>,
    /// Bot replies: the options offered, as buttons or, where the channel has none, as
    /// numbered lines (a reply with the number picks one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub buttons: Vec<Button>,
}

/// An agent-only note on a conversation; never sent to the customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Note {
    pub id: NoteId,
    pub conversation: ConversationId,
    pub author: AgentId,
    pub text: String,
    pub created_at_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Agent,
}

/// Whether an agent is at work, as they set it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Online,
    Away,
    #[default]
    Offline,
}

impl Presence {
    pub fn parse(s: &str) -> Option<Presence> {
        match s {
            "online" => Some(Self::Online),
            "away" => Some(Self::Away),
            "offline" => Some(Self::Offline),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Away => "away",
            Self::Offline => "offline",
        }
    }
}

/// A person who works the inbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Agent {
    pub id: AgentId,
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at_ms: i64,
    #[serde(default)]
    pub presence: Presence,
    /// When `presence` last changed (0: never).
    #[serde(default)]
    pub presence_since_ms: i64,
    /// The presence was set by routing (idle, end of shift), not by the agent.
    #[serde(default)]
    pub presence_auto: bool,
    /// Keyed hash of the current API token; the token itself is never stored.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    #[schema(ignore)]
    pub token_hash: String,
}

impl Agent {
    /// The agent as the API shows it: without the token hash.
    pub fn redacted(mut self) -> Agent {
        self.token_hash.clear();
        self
    }
}

/// Who caused an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum Actor {
    Customer,
    Bot,
    Agent(AgentId),
    System,
}

/// What happened. Stored in the append-only log and streamed to the inbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum EventKind {
    ConversationCreated,
    MessageReceived {
        seq: u64,
    },
    MessageQueued {
        seq: u64,
    },
    DeliveryChanged {
        seq: u64,
        state: DeliveryState,
        error: Option<String>,
    },
    StatusChanged {
        from: Status,
        to: Status,
        reason: String,
    },
    AssigneeChanged {
        from: Option<AgentId>,
        to: Option<AgentId>,
        reason: String,
    },
    BotDecided {
        seq: u64,
        verdict: BotVerdict,
    },
    NoteAdded {
        note: NoteId,
    },
    /// The customer changed a message; `previous` is the text before.
    MessageEdited {
        seq: u64,
        previous: String,
    },
    /// The customer deleted a message.
    MessageDeleted {
        seq: u64,
    },
    /// A delivery found the customer unreachable on this channel.
    ChannelUnreachable {
        seq: u64,
        reason: String,
    },
    /// The customer wrote again after being unreachable.
    ReachableAgain {
        was: String,
    },
    LabelsChanged {
        labels: BTreeSet<String>,
    },
    PriorityChanged {
        priority: Priority,
    },
    ContactsMerged {
        from: ContactId,
        into: ContactId,
    },
    /// A contact's personal data was erased on request: the audit record of what went.
    ContactForgotten {
        contact: ContactId,
        conversations: u64,
        messages: u64,
    },
    AgentChanged {
        agent: AgentId,
        change: String,
    },
    /// Most of the time to the SLA target is used.
    SlaDueSoon {
        target: SlaKind,
        due_ms: i64,
    },
    /// The SLA target was missed.
    SlaBreached {
        target: SlaKind,
        due_ms: i64,
    },
}

impl EventKind {
    /// Whether the event belongs in a conversation's own log. Per-message events stay out:
    /// the messages carry their own time and delivery state.
    pub fn in_conversation_log(&self) -> bool {
        !matches!(
            self,
            Self::MessageReceived { .. }
                | Self::MessageQueued { .. }
                | Self::DeliveryChanged { .. }
        )
    }

    /// The `type` tag, for filtering.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ConversationCreated => "conversation_created",
            Self::MessageReceived { .. } => "message_received",
            Self::MessageQueued { .. } => "message_queued",
            Self::DeliveryChanged { .. } => "delivery_changed",
            Self::StatusChanged { .. } => "status_changed",
            Self::AssigneeChanged { .. } => "assignee_changed",
            Self::BotDecided { .. } => "bot_decided",
            Self::NoteAdded { .. } => "note_added",
            Self::MessageEdited { .. } => "message_edited",
            Self::MessageDeleted { .. } => "message_deleted",
            Self::ChannelUnreachable { .. } => "channel_unreachable",
            Self::ReachableAgain { .. } => "reachable_again",
            Self::LabelsChanged { .. } => "labels_changed",
            Self::PriorityChanged { .. } => "priority_changed",
            Self::ContactsMerged { .. } => "contacts_merged",
            Self::ContactForgotten { .. } => "contact_forgotten",
            Self::AgentChanged { .. } => "agent_changed",
            Self::SlaDueSoon { .. } => "sla_due_soon",
            Self::SlaBreached { .. } => "sla_breached",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub id: EventId,
    pub conversation: Option<ConversationId>,
    pub actor: Actor,
    pub at_ms: i64,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// An event to commit; the store gives it its id.
    pub fn new(
        conversation: Option<ConversationId>,
        actor: Actor,
        at_ms: i64,
        kind: EventKind,
    ) -> Event {
        Event {
            id: EventId::UNASSIGNED,
            conversation,
            actor,
            at_ms,
            kind,
        }
    }
}

/// A reply waiting in the outbox for delivery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub conversation: ConversationId,
    pub seq: u64,
    pub channel: ChannelId,
    pub thread: ExternalThread,
    pub outbound: Outbound,
    /// Failed tries so far (these count towards `max_attempts`).
    pub attempts: u32,
    /// Tries the network answered with flood control; waited out, never given up on.
    #[serde(default)]
    pub flood_waits: u32,
    /// Not before this time (unix ms): backoff and the channel's retry-after.
    pub next_attempt_ms: i64,
}
