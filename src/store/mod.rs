//! Persistence behind one narrow trait.
//!
//! The engine decides; the store remembers. Every state change arrives as one [`Change`] and is
//! applied atomically together with the secondary indexes it touches. Records
//! carry a `version`; a write based on a stale read is refused with [`StoreError::Conflict`] and
//! the engine retries from a fresh read. "Insert if absent" writes (dedupe keys, thread and
//! identity mappings) refuse with [`StoreError::Exists`].
//!
//! [`Store::commit`] resolves once the change is applied and on disk. The sled implementation
//! batches concurrent commits into one atomic write and one flush (group commit), see
//! [`sled_store`].

pub mod blobs;
pub mod config;
#[cfg(test)]
pub(crate) mod contract;
pub mod disk;
pub mod keys;
pub mod lease;
pub mod memory;
pub mod records;
pub mod sled_store;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use switchboard_channel::{
    ChannelId, ChannelState, ExternalMessageId, ExternalThread, ExternalUser,
};

use crate::model::{
    Agent, AgentId, Contact, ContactId, Conversation, ConversationId, Event, EventId, Message,
    Note, OutboxItem, Status,
};

pub use config::{StoreConfig, open};
pub use sled_store::SledStore;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A record changed since it was read; re-read and try again.
    #[error("conflict: {0} changed concurrently")]
    Conflict(&'static str),
    /// An insert-if-absent key already exists.
    #[error("already exists: {0}")]
    Exists(&'static str),
    /// Another process (a running daemon) holds the database.
    #[error("{0} is in use by another process (is the daemon running?)")]
    InUse(String),
    /// The disk or the database failed; nothing of this change was applied.
    #[error("storage failure: {0}")]
    Io(String),
    /// Stored data could not be decoded.
    #[error("corrupt record in {tree}: {detail}")]
    Corrupt { tree: &'static str, detail: String },
    #[error(
        "the data directory holds schema version {found}; this build reads version {supported}. \
         {hint}"
    )]
    Schema {
        found: u32,
        supported: u32,
        hint: &'static str,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A conversation record written by a [`Change`].
#[derive(Debug, Clone)]
pub struct ConversationWrite {
    /// The new record. Its `version` is ignored: the store writes `previous.version + 1`.
    pub record: Conversation,
    /// The record as the writer read it, `None` for a new conversation. The store refuses the
    /// write with [`StoreError::Conflict`] unless this is still the stored version.
    pub previous: Option<Conversation>,
    /// A record brought back from an export: written new, keeping its `version`.
    pub restored: bool,
}

impl ConversationWrite {
    pub fn new(record: Conversation) -> Self {
        ConversationWrite {
            record,
            previous: None,
            restored: false,
        }
    }

    pub fn update(previous: Conversation, record: Conversation) -> Self {
        ConversationWrite {
            record,
            previous: Some(previous),
            restored: false,
        }
    }

    pub fn restored(record: Conversation) -> Self {
        ConversationWrite {
            record,
            previous: None,
            restored: true,
        }
    }
}

/// Everything one state change writes, applied atomically.
#[derive(Debug, Default, Clone)]
pub struct Change {
    pub conversations: Vec<ConversationWrite>,
    /// Contacts, upserted (no version check: contacts change only by merge and by name).
    pub contacts: Vec<Contact>,
    /// `(channel, user) -> contact`, insert if absent.
    pub new_identities: Vec<(ChannelId, ExternalUser, ContactId)>,
    /// `(channel, user) -> contact`, overwritten (merging contacts).
    pub moved_identities: Vec<(ChannelId, ExternalUser, ContactId)>,
    /// `(channel, thread) -> conversation`, insert if absent.
    pub new_threads: Vec<(ChannelId, ExternalThread, ConversationId)>,
    /// `(channel, network message id) -> (conversation, seq)`, insert if absent: the dedupe key.
    pub new_external_ids: Vec<(ChannelId, ExternalMessageId, ConversationId, u64)>,
    /// Messages, upserted by `(conversation, seq)`.
    pub messages: Vec<Message>,
    pub notes: Vec<Note>,
    /// Events to append to the log. Those with [`EventId::UNASSIGNED`] get their id in the
    /// commit, in commit order (an imported event keeps its own).
    pub events: Vec<Event>,
    pub outbox_put: Vec<OutboxItem>,
    pub outbox_remove: Vec<(ConversationId, u64)>,
    /// Customer messages the bot still has to look at: `(conversation, seq)`.
    pub bot_queue_put: Vec<(ConversationId, u64)>,
    pub bot_queue_remove: Vec<(ConversationId, u64)>,
    /// Outbound messages whose delivery failed for good: `(conversation, seq)`.
    pub failed_put: Vec<(ConversationId, u64)>,
    pub failed_remove: Vec<(ConversationId, u64)>,
    /// Agents, upserted; the token index follows `token_hash`.
    pub agents: Vec<Agent>,
}

impl Change {
    /// Whether the change writes nothing at all.
    pub fn is_empty(&self) -> bool {
        let Change {
            conversations,
            contacts,
            new_identities,
            moved_identities,
            new_threads,
            new_external_ids,
            messages,
            notes,
            events,
            outbox_put,
            outbox_remove,
            bot_queue_put,
            bot_queue_remove,
            failed_put,
            failed_remove,
            agents,
        } = self;
        conversations.is_empty()
            && contacts.is_empty()
            && new_identities.is_empty()
            && moved_identities.is_empty()
            && new_threads.is_empty()
            && new_external_ids.is_empty()
            && messages.is_empty()
            && notes.is_empty()
            && events.is_empty()
            && outbox_put.is_empty()
            && outbox_remove.is_empty()
            && bot_queue_put.is_empty()
            && bot_queue_remove.is_empty()
            && failed_put.is_empty()
            && failed_remove.is_empty()
            && agents.is_empty()
    }
}

/// Sort order of conversation lists, by last update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// Where a page of a list ends: the last row's `(updated_at_ms, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub updated_ms: i64,
    pub id: ConversationId,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}-{}", self.updated_ms, self.id)
    }

    /// Reads what [`Cursor::encode`] wrote (digits only: `updated_ms` up to 18, `id` up to
    /// 19), and nothing else.
    pub fn decode(s: &str) -> Option<Cursor> {
        let (u, i) = s.split_once('-')?;
        let digits = |d: &str, max: usize| {
            (1..=max).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit())
        };
        if !digits(u, 18) || !digits(i, 19) {
            return None;
        }
        Some(Cursor {
            updated_ms: u.parse().ok()?,
            id: i.parse().ok()?,
        })
    }
}

/// A filtered, paginated conversation list request. Filters combine with AND.
#[derive(Debug, Clone, Default)]
pub struct ConversationQuery {
    pub status: Option<Status>,
    pub assignee: Option<AgentId>,
    pub channel: Option<ChannelId>,
    pub label: Option<String>,
    pub order: Order,
    pub after: Option<Cursor>,
    pub limit: usize,
}

#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Conversation>,
    pub next: Option<Cursor>,
}

/// A future that resolves once earlier writes are durable.
pub type Durable = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// What a commit was given: the ids of its events, in the order of `Change::events`. Ids are
/// positions in the event log and rise in commit order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    pub events: Vec<EventId>,
}

/// A future that resolves once a change is applied and durable.
pub type Commit = Pin<Box<dyn Future<Output = Result<Committed>> + Send>>;

/// A store operation that finishes later.
pub type Pending<T> = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

/// What erasing a contact removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Erased {
    /// The contact and every contact merged into it.
    pub contacts: Vec<ContactId>,
    pub conversations: Vec<ConversationId>,
    pub messages: u64,
    pub notes: u64,
    /// Attachment files no remaining message refers to: the caller deletes them.
    #[serde(skip)]
    pub orphan_blobs: Vec<switchboard_channel::BlobId>,
}

/// Record counts and sizes, for `switchboard stats`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StoreStats {
    /// Records per kind (`conversations`, `messages`, ...).
    pub records: std::collections::BTreeMap<String, u64>,
    /// Conversations per status.
    pub statuses: std::collections::BTreeMap<String, u64>,
    /// Pairs per private space (`channel/ID`, `kv/NAME`).
    pub spaces: std::collections::BTreeMap<String, u64>,
    pub bytes_on_disk: u64,
}

/// The persistence contract the engine and the API use; a backend is one implementation of it
/// (see `store::open`, the only place one is chosen).
///
/// Every method is fallible, and every read is `async`: a backend may be a database across
/// the network. Reads see every commit that has resolved.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    // -- Writing.

    /// Applies `change` atomically and resolves once it is durable. Readers see it from then.
    /// On any error nothing of the change was applied.
    fn commit(&self, change: Change) -> Commit;

    /// Resolves once every write made before this call (including `set_meta` and channel
    /// state) is on disk.
    fn durable(&self) -> Durable;

    /// A fresh id for a new record (conversation, contact, note, agent), unique for the life
    /// of the database, growing. Event ids are not taken from here: a commit gives them.
    async fn next_id(&self) -> Result<u64>;

    // -- Point reads.

    async fn conversation(&self, id: ConversationId) -> Result<Option<Conversation>>;
    async fn thread(
        &self,
        channel: &ChannelId,
        thread: &ExternalThread,
    ) -> Result<Option<ConversationId>>;
    async fn identity(&self, channel: &ChannelId, user: &ExternalUser)
    -> Result<Option<ContactId>>;
    async fn external_message(
        &self,
        channel: &ChannelId,
        id: &ExternalMessageId,
    ) -> Result<Option<(ConversationId, u64)>>;
    async fn contact(&self, id: ContactId) -> Result<Option<Contact>>;
    async fn message(&self, conversation: ConversationId, seq: u64) -> Result<Option<Message>>;
    async fn agent(&self, id: AgentId) -> Result<Option<Agent>>;
    async fn agent_by_token_hash(&self, hash: &str) -> Result<Option<Agent>>;

    // -- Lists.

    async fn list_conversations(&self, query: &ConversationQuery) -> Result<Page>;
    /// Number of conversations per status, in [`Status::ALL`] order.
    async fn status_counts(&self) -> Result<[u64; 5]>;
    /// Conversation ids of a contact, oldest first.
    async fn contact_conversations(&self, contact: ContactId) -> Result<Vec<ConversationId>>;
    /// Messages after `after_seq`, oldest first, at most `limit`.
    async fn messages(
        &self,
        conversation: ConversationId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Message>>;
    async fn notes(&self, conversation: ConversationId) -> Result<Vec<Note>>;
    async fn agents(&self) -> Result<Vec<Agent>>;
    /// Outbound messages whose delivery failed for good, oldest conversation first.
    async fn failed_deliveries(&self, limit: usize) -> Result<Vec<(ConversationId, u64)>>;

    // -- The event feed.

    /// The stored events with ids above `after`, in id order, which is commit order: a reader
    /// that resumes after the last id it saw misses nothing committed since, however commits
    /// interleave. At most `limit`.
    async fn events(&self, after: Option<EventId>, limit: usize) -> Result<Vec<Event>>;
    /// Events as they are committed and durable, in id order, from now on (the live half of
    /// the event feed; [`Store::events`] is the stored half). A receiver that falls more than
    /// a few thousand behind is told it lagged and should read the rest with `events`.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event>;
    /// One conversation's events, oldest first.
    async fn conversation_events(&self, conversation: ConversationId) -> Result<Vec<Event>>;

    // -- Work queues.

    /// Conversations with undelivered outbox items.
    async fn outbox_conversations(&self) -> Result<Vec<ConversationId>>;
    /// Takes the next item to deliver in one conversation for `holder` until `lease` from
    /// now: only the head is ever sent, so replies go out in order. `None` when the outbox
    /// is empty or another worker holds its head. The commit recording the outcome
    /// acknowledges it; a holder that dies lets its lease run out (see [`lease`]).
    async fn claim_outbox_head(
        &self,
        conversation: ConversationId,
        holder: lease::Holder,
        lease: std::time::Duration,
    ) -> Result<Option<OutboxItem>>;
    /// Customer messages the bot has not yet handled, in key order after `after`, at most
    /// `limit`.
    async fn bot_queue(
        &self,
        after: Option<(ConversationId, u64)>,
        limit: usize,
    ) -> Result<Vec<(ConversationId, u64)>>;
    /// Takes the bot's turn on a customer message for `holder` until `lease` from now: true
    /// when it still waits for the bot and no other worker holds it. The commit recording the
    /// decision (`Change::bot_queue_remove`) or [`Store::bot_done`] acknowledges it.
    async fn claim_bot(
        &self,
        conversation: ConversationId,
        seq: u64,
        holder: lease::Holder,
        lease: std::time::Duration,
    ) -> Result<bool>;
    /// The bot decided a customer message without saying anything: it leaves the queue,
    /// without waiting for the disk. If the removal is lost in a crash, the bot decides the
    /// message again, which changes nothing. (A decision that says something removes its entry
    /// in the [`Change`] that records it.)
    fn bot_done(&self, conversation: ConversationId, seq: u64);

    // -- Spaces: small durable key-value state of the daemon's parts.

    /// A small value of the daemon's own (install key, settings).
    async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>>;
    async fn set_meta(&self, key: &str, value: &[u8]) -> Result<()>;
    /// The private key-value space of one channel instance.
    async fn channel_state(&self, channel: &ChannelId) -> Result<Arc<dyn ChannelState>>;
    /// A private durable key-value space of another part of the daemon (the bot's live
    /// knowledge base, cached embeddings), by name.
    async fn kv(&self, space: &str) -> Result<Arc<dyn ChannelState>>;

    // -- Whole-store operations.

    /// Erases a contact (and every contact merged into it): identities, conversations,
    /// messages, notes, events, queued deliveries. The contact stays as a tombstone. The bytes
    /// leave the files when the store is next opened (it rewrites itself then).
    fn erase_contact(&self, contact: ContactId, at_ms: i64) -> Pending<Erased>;

    /// Every record, in a stable order (agents, contacts, identities, conversations, threads,
    /// messages, network ids, notes, events, outbox, queues, private spaces, meta), the first
    /// being a [`records::Record::Header`]. Not a snapshot: use it on a store nobody else
    /// writes to (a stopped daemon's, or a [`Maintenance::snapshot`]).
    async fn records(
        &self,
        visit: &mut (dyn FnMut(records::Record) -> Result<()> + Send),
    ) -> Result<()>;

    /// Writes records read from an export, indexes included; ids handed out later do not
    /// collide with theirs. Meant for an empty store.
    fn restore(&self, records: Vec<records::Record>) -> Pending<()>;

    /// Counts records; reads every key, so it takes a moment on a large store.
    async fn stats(&self) -> Result<StoreStats>;

    /// What only a store embedded in the daemon does (its files, their disk, a snapshot of
    /// them); `None` for a store the daemon does not own (a shared database is backed up and
    /// given room by its own operators).
    fn maintenance(&self) -> Option<&dyn Maintenance> {
        None
    }
}

/// The embedded store's own upkeep, asked for through [`Store::maintenance`].
pub trait Maintenance: Send + Sync {
    /// Bytes on disk, for health and metrics.
    fn size_on_disk(&self) -> Result<u64>;

    /// Free space where the store writes, against its reserve: when low, new messages are
    /// refused before the disk fills (see [`disk`]).
    fn disk(&self) -> disk::DiskSpace;

    /// Writes a consistent copy of everything into the file `dest` (which must not exist),
    /// for [`sled_store::restore_snapshot`]. Writes wait while the store is read (about a
    /// second per million pairs here); reads go on. Resolves to the number of pairs.
    fn snapshot(&self, dest: &Path) -> Pending<u64>;
}
