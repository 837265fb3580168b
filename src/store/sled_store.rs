//! The sled implementation of [`Store`].
//!
//! Facts about sled 0.34.7 this file is built around (see `docs/architecture.md`):
//! - Transactions and batches run under one global write lock: writers are serialised anyway.
//!   So all writes go through one writer thread ([`writer`]): it takes every waiting change,
//!   applies them as one atomic batch on the single `data` tree ([`space`]), flushes once and
//!   answers them all (group commit). Version checks need no reads: the writer knows them.
//! - `flush_async` deadlocks with many concurrent callers (spacejam/sled#1308); never used.
//! - The page cache defaults to 1 GiB; it is always set from our config.
//! - Derived data lives in memory and is rebuilt at open: the inbox index ([`index`]) and the
//!   read caches ([`cache`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Tree;
use switchboard_channel::{
    ChannelId, ChannelState, ExternalMessageId, ExternalThread, ExternalUser, StateError,
};

use super::keys;
use super::lease::{Holder, Work};
use super::records::Record;
use super::{
    Change, Commit, ConversationQuery, Cursor, Durable, Erased, Page, Pending, Result, Store,
    StoreError, StoreStats,
};
use crate::model::{
    Agent, AgentId, Contact, ContactId, Conversation, ConversationId, Event, EventId, Message,
    Note, OutboxItem, Status,
};
use cache::Cache;
use index::{ConvIndex, IndexKind};
use space::Space;
use writer::Writer;

/// The schema this build reads and writes. 2: events stored in segments ([`segments`]).
pub const SCHEMA_VERSION: u32 = 2;
/// Older schemas this build reads as they are: their stores are upgraded by writing the
/// version (schema 1 differs only in the event log's layout, which reads as segments of one).
const READS_AS_IS: &[u32] = &[1];
const SCHEMA_KEY: &[u8] = b"schema_version";

/// Names of the record kinds (for messages), by index; [`PREFIXES`] holds their key prefixes.
pub(super) const TREES: [&str; 16] = [
    "conversations",
    "messages",
    "external_ids",
    "threads",
    "contacts",
    "identities",
    "contact_convs",
    "notes",
    "events",
    "conv_events",
    "outbox",
    "bot_queue",
    "agents",
    "tokens",
    "failed",
    "active",
];
pub(super) const CONVERSATIONS: usize = 0;
pub(super) const MESSAGES: usize = 1;
pub(super) const EXTERNAL_IDS: usize = 2;
pub(super) const THREADS: usize = 3;
pub(super) const CONTACTS: usize = 4;
pub(super) const IDENTITIES: usize = 5;
pub(super) const CONTACT_CONVS: usize = 6;
pub(super) const NOTES: usize = 7;
pub(super) const EVENTS: usize = 8;
pub(super) const CONV_EVENTS: usize = 9;
pub(super) const OUTBOX: usize = 10;
pub(super) const BOT_QUEUE: usize = 11;
pub(super) const AGENTS: usize = 12;
pub(super) const TOKENS: usize = 13;
pub(super) const FAILED: usize = 14;
/// Conversations whose record on disk lags its newest messages (see `writer::Live`).
pub(super) const ACTIVE: usize = 15;
/// One key-prefix byte per record kind, by index. Never reuse or renumber one.
pub(super) const PREFIXES: [u8; 16] = [
    b'c', b'm', b'x', b't', b'k', b'i', b'K', b'n', b'e', b'E', b'o', b'b', b'a', b'T', b'f', b'A',
];

/// Open-time settings.
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// sled's page cache, in bytes. RSS follows it.
    pub cache_bytes: u64,
    /// Decoded conversation records kept in memory.
    pub cached_conversations: usize,
    /// Under load, how long the writer waits for more changes before a flush.
    pub commit_linger: std::time::Duration,
    /// Free space kept in reserve (see [`super::disk`]); 0 never refuses.
    pub min_free_bytes: u64,
    /// How often records that lag their newest messages are written back (see
    /// [`writer::Live`]).
    pub checkpoint_every: std::time::Duration,
}

impl SledOptions {
    pub fn with_cache_mb(mb: u64) -> Self {
        SledOptions {
            cache_bytes: mb * 1024 * 1024,
            cached_conversations: 20_000,
            commit_linger: std::time::Duration::from_micros(250),
            min_free_bytes: 0,
            checkpoint_every: std::time::Duration::from_secs(2),
        }
    }
}

/// The read caches the writer keeps current (see [`cache`]).
pub(super) struct Caches {
    /// `(channel, thread)` key -> conversation id. Never changes once written.
    pub threads: Cache<Vec<u8>, u64>,
    /// `(channel, user)` key -> contact id. Changes only when contacts merge.
    pub identities: Cache<Vec<u8>, u64>,
    pub conversations: Cache<ConversationId, Conversation>,
    /// The current record of every conversation whose record on disk lags its newest
    /// messages, until the writer's next checkpoint. Never evicted.
    pub activity: std::sync::RwLock<HashMap<ConversationId, Conversation>>,
    /// The bot queue: every customer message waiting for the bot's decision, `true` when its
    /// key is on disk. Most are never written: see [`writer::BotQueue`].
    pub bot: Mutex<writer::BotQueue>,
}

impl Caches {
    /// The in-memory record of a conversation whose record on disk lags, if it is one.
    pub(super) fn fresh(&self, id: ConversationId) -> Option<Conversation> {
        self.activity
            .read()
            .expect("activity lock")
            .get(&id)
            .cloned()
    }

    fn new(conversations: usize) -> Self {
        Caches {
            threads: Cache::new(200_000),
            identities: Cache::new(200_000),
            conversations: Cache::new(conversations),
            activity: Default::default(),
            bot: Default::default(),
        }
    }
}

pub struct SledStore {
    db: sled::Db,
    meta: Tree,
    /// Every record, each kind under its own prefix (see [`space`]).
    data: Tree,
    /// Inbox lists and counts, derived from the conversations tree.
    index: Arc<ConvIndex>,
    /// Hot reads, kept current by the writer.
    caches: Arc<Caches>,
    writer: Writer,
    ids: Arc<ids::Ids>,
    disk: super::disk::DiskGuard,
    /// In memory: one process serves this database (see [`super::lease`]).
    leases: super::lease::Leases,
}

pub(super) fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

/// Whether sled refused its file lock: another handle holds it. sled 0.34 reports that as an
/// `Other` I/O error whose message names the lock (and `WouldBlock` inside).
fn lock_refused(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(ioe)
        if ioe.kind() == std::io::ErrorKind::WouldBlock
            || ioe.to_string().contains("could not acquire lock"))
}

fn in_use(path: &Path) -> StoreError {
    StoreError::InUse(path.display().to_string())
}

pub(super) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("model types always serialise")
}

pub(super) fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        detail: e.to_string(),
    })
}

impl SledStore {
    pub fn open(path: &Path, options: &SledOptions) -> Result<Self> {
        // An existing database is opened once first, to see whether a rewrite is pending
        // (that open fails when another process holds it: in use).
        let opened_before = path.exists();
        admin::compact_if_pending(path).map_err(|e| match e {
            StoreError::Io(m) if m.contains("temporarily unavailable") => in_use(path),
            other => other,
        })?;
        // The handle of that first open (or of the rewrite's copy) may hold the lock a moment
        // longer, while its background thread winds down: wait for it, bounded.
        let mut attempts = if opened_before { 100 } else { 1 };
        let db = loop {
            attempts -= 1;
            match sled::Config::new()
                .path(path)
                .cache_capacity(options.cache_bytes)
                .open()
            {
                Ok(db) => break db,
                Err(ref e) if lock_refused(e) && attempts > 0 => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(ref e) if lock_refused(e) => return Err(in_use(path)),
                Err(other) => return Err(io(other)),
            }
        };
        let meta = db.open_tree("meta").map_err(io)?;
        match meta.get(SCHEMA_KEY).map_err(io)? {
            None => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(io)?;
                db.flush().map_err(io)?;
            }
            Some(v) => {
                let found =
                    u32::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                        tree: "meta",
                        detail: "schema_version is not 4 bytes".into(),
                    })?);
                if READS_AS_IS.contains(&found) {
                    meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                        .map_err(io)?;
                    db.flush().map_err(io)?;
                    tracing::info!(from = found, to = SCHEMA_VERSION, "store schema upgraded");
                } else if found != SCHEMA_VERSION {
                    return Err(StoreError::Schema {
                        found,
                        supported: SCHEMA_VERSION,
                        hint: if found > SCHEMA_VERSION {
                            "It was written by a newer Switchboard: run that version."
                        } else {
                            "Back it up and run `switchboard migrate` from a version that reads both."
                        },
                    });
                }
            }
        }
        let data = db.open_tree("data").map_err(io)?;
        let ids = Arc::new(ids::Ids::open(&db, &meta)?);
        let space = |i: usize| Space {
            tree: &data,
            prefix: PREFIXES[i],
        };
        let index = Arc::new(ConvIndex::default());
        let caches = Arc::new(Caches::new(options.cached_conversations));
        let mut live = writer::LiveMap::new();
        let mut active = std::collections::HashSet::new();
        for kv in space(ACTIVE).iter() {
            active.insert(ConversationId(keys::read_u64(&kv.map_err(io)?.0)));
        }
        let mut bot = writer::BotQueue::default();
        for k in space(BOT_QUEUE).keys([]) {
            bot.insert(keys::conversation_seq(&k.map_err(io)?), true);
        }
        let mut repaired = 0;
        for kv in space(CONVERSATIONS).iter() {
            let (_, v) = kv.map_err(io)?;
            let mut c: Conversation = decode(TREES[CONVERSATIONS], &v)?;
            let dirty = active.contains(&c.id);
            if dirty {
                // Messages after the record on disk may wait for the bot without a queue key.
                recover_bot_queue(space(MESSAGES), &c, &mut bot)?;
                repair_activity(space(MESSAGES), &mut c)?;
                caches
                    .activity
                    .write()
                    .expect("activity lock")
                    .insert(c.id, c.clone());
                repaired += 1;
            }
            index.update(None, &c);
            live.insert(
                c.id,
                writer::Live {
                    version: c.version,
                    dirty,
                },
            );
        }
        *caches.bot.lock().expect("bot queue lock") = bot;
        let last_segment = match space(EVENTS).keys([]).next_back() {
            Some(k) => keys::read_u64(&k.map_err(io)?),
            None => 0,
        };
        if repaired > 0 {
            tracing::info!(
                conversations = repaired,
                "recent activity recovered from messages"
            );
        }
        Ok(SledStore {
            writer: Writer::start(
                writer::Parts {
                    db: db.clone(),
                    data: data.clone(),
                    index: index.clone(),
                    caches: caches.clone(),
                    ids: ids.clone(),
                    versions: live,
                    last_segment,
                },
                options,
            ),
            caches,
            db,
            meta,
            data,
            index,
            ids,
            disk: super::disk::DiskGuard::new(path, options.min_free_bytes),
            leases: Default::default(),
        })
    }

    fn tree(&self, i: usize) -> Space<'_> {
        Space {
            tree: &self.data,
            prefix: PREFIXES[i],
        }
    }

    /// A `key -> u64` mapping tree read through its cache.
    fn mapping(
        &self,
        tree: usize,
        cache: &Cache<Vec<u8>, u64>,
        key: Vec<u8>,
    ) -> Result<Option<u64>> {
        let ticket = match cache.get(&key) {
            Ok(v) => return Ok(Some(v)),
            Err(ticket) => ticket,
        };
        let found = self
            .tree(tree)
            .get(&key)
            .map_err(io)?
            .map(|v| keys::read_u64(&v));
        if let Some(v) = found {
            cache.fill(ticket, key, v);
        }
        Ok(found)
    }

    fn get<T: DeserializeOwned>(&self, i: usize, key: &[u8]) -> Result<Option<T>> {
        match self.tree(i).get(key).map_err(io)? {
            Some(v) => decode(TREES[i], &v).map(Some),
            None => Ok(None),
        }
    }

    fn scan_values<T: DeserializeOwned>(&self, i: usize, prefix: &[u8]) -> Result<Vec<T>> {
        self.tree(i)
            .scan_prefix(prefix)
            .map(|kv| {
                let (_, v) = kv.map_err(io)?;
                decode(TREES[i], &v)
            })
            .collect()
    }
}

/// Puts the customer messages newer than a lagging record on disk back in the bot queue. They
/// are all the messages of that conversation whose queue entry lived in memory only (see
/// [`writer::BotQueue`]); any the bot had already decided, it decided silently, and deciding
/// again changes nothing.
fn recover_bot_queue(
    messages: Space<'_>,
    c: &Conversation,
    bot: &mut writer::BotQueue,
) -> Result<()> {
    let range = keys::pair(c.id.0, c.last_seq + 1).to_vec()..=keys::pair(c.id.0, u64::MAX).to_vec();
    for kv in messages.range(range) {
        let (_, v) = kv.map_err(io)?;
        let m: Message = decode(TREES[MESSAGES], &v)?;
        if m.author == crate::model::Author::Customer {
            bot.entry((c.id, m.seq)).or_insert(false);
        }
    }
    Ok(())
}

/// Brings a conversation's activity up to its newest stored message (after a crash the record
/// can lag: see `writer::Live`).
fn repair_activity(messages: Space<'_>, c: &mut Conversation) -> Result<()> {
    let range = keys::pair(c.id.0, 0).to_vec()..=keys::pair(c.id.0, u64::MAX).to_vec();
    for (i, kv) in messages.range(range).rev().enumerate() {
        let (_, v) = kv.map_err(io)?;
        let m: Message = decode(TREES[MESSAGES], &v)?;
        if i == 0 {
            c.last_seq = c.last_seq.max(m.seq);
            c.updated_at_ms = c.updated_at_ms.max(m.created_at_ms);
        }
        if m.author == crate::model::Author::Customer {
            c.preview = crate::model::preview_of(&m.text);
            break;
        }
        if i >= 64 {
            break;
        }
    }
    Ok(())
}

impl SledStore {
    /// A conversation, from the cache when it is there.
    fn read_conversation(&self, id: ConversationId) -> Result<Option<Conversation>> {
        let ticket = match self.caches.conversations.get(&id) {
            Ok(c) => return Ok(Some(c)),
            Err(ticket) => ticket,
        };
        let found: Option<Conversation> = match self.caches.fresh(id) {
            Some(c) => Some(c),
            None => self.get(CONVERSATIONS, &id.to_be_bytes())?,
        };
        if let Some(c) = &found {
            self.caches.conversations.fill(ticket, id, c.clone());
        }
        Ok(found)
    }

    fn read_agent(&self, id: AgentId) -> Result<Option<Agent>> {
        self.get(AGENTS, &id.to_be_bytes())
    }
}

type KvIter = Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>>;

#[async_trait::async_trait]
impl Store for SledStore {
    fn commit(&self, change: Change) -> Commit {
        self.writer.commit(change)
    }

    fn durable(&self) -> Durable {
        self.writer.sync()
    }

    async fn next_id(&self) -> Result<u64> {
        self.ids.next()
    }

    async fn conversation(&self, id: ConversationId) -> Result<Option<Conversation>> {
        self.read_conversation(id)
    }

    async fn thread(
        &self,
        channel: &ChannelId,
        thread: &ExternalThread,
    ) -> Result<Option<ConversationId>> {
        let key = keys::two_strings(channel.as_str(), thread.as_str());
        self.mapping(THREADS, &self.caches.threads, key)
            .map(|v| v.map(ConversationId))
    }

    async fn identity(
        &self,
        channel: &ChannelId,
        user: &ExternalUser,
    ) -> Result<Option<ContactId>> {
        let key = keys::two_strings(channel.as_str(), user.as_str());
        self.mapping(IDENTITIES, &self.caches.identities, key)
            .map(|v| v.map(ContactId))
    }

    async fn external_message(
        &self,
        channel: &ChannelId,
        id: &ExternalMessageId,
    ) -> Result<Option<(ConversationId, u64)>> {
        let key = keys::two_strings(channel.as_str(), id.as_str());
        Ok(self
            .tree(EXTERNAL_IDS)
            .get(key)
            .map_err(io)?
            .map(|v| (ConversationId(keys::read_u64(&v)), keys::read_u64(&v[8..]))))
    }

    async fn contact(&self, id: ContactId) -> Result<Option<Contact>> {
        self.get(CONTACTS, &id.to_be_bytes())
    }

    async fn contact_conversations(&self, contact: ContactId) -> Result<Vec<ConversationId>> {
        self.tree(CONTACT_CONVS)
            .keys(contact.to_be_bytes())
            .map(|k| {
                k.map(|k| ConversationId(keys::read_u64(&k[8..])))
                    .map_err(io)
            })
            .collect()
    }

    async fn message(&self, conversation: ConversationId, seq: u64) -> Result<Option<Message>> {
        self.get(MESSAGES, &keys::pair(conversation.0, seq))
    }

    async fn messages(
        &self,
        conversation: ConversationId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Message>> {
        let start = keys::pair(conversation.0, after_seq.saturating_add(1));
        let end = keys::pair(conversation.0, u64::MAX);
        self.tree(MESSAGES)
            .range(start..=end)
            .take(limit)
            .map(|kv| decode(TREES[MESSAGES], &kv.map_err(io)?.1))
            .collect()
    }

    async fn notes(&self, conversation: ConversationId) -> Result<Vec<Note>> {
        self.scan_values(NOTES, &conversation.to_be_bytes())
    }

    async fn events(&self, after: Option<EventId>, limit: usize) -> Result<Vec<Event>> {
        segments::after(self.tree(EVENTS), after.map_or(0, |a| a.0), limit)
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.writer.subscribe()
    }

    async fn conversation_events(&self, conversation: ConversationId) -> Result<Vec<Event>> {
        let wanted: Vec<(u64, u64)> = self
            .tree(CONV_EVENTS)
            .scan_prefix(conversation.to_be_bytes())
            .map(|kv| {
                let (k, v) = kv.map_err(io)?;
                let id = keys::read_u64(&k[8..]);
                Ok((segments::segment_of(&v, id), id))
            })
            .collect::<Result<_>>()?;
        segments::by_id(self.tree(EVENTS), &wanted)
    }

    async fn list_conversations(&self, query: &ConversationQuery) -> Result<Page> {
        let kind = if let Some(a) = query.assignee {
            IndexKind::Assignee(a)
        } else if let Some(l) = &query.label {
            IndexKind::Label(l.clone())
        } else if let Some(c) = &query.channel {
            IndexKind::Channel(c.0.clone())
        } else {
            IndexKind::All
        };
        let statuses: Vec<Status> = match query.status {
            Some(s) => vec![s],
            None => Status::ALL.to_vec(),
        };
        let limit = query.limit.max(1);
        let mut items = Vec::with_capacity(limit);
        let mut more = false;
        self.index
            .walk(&kind, &statuses, query.order, query.after, |id| {
                let Some(conv) = self.read_conversation(id)? else {
                    return Ok(true);
                };
                let wanted = query.channel.as_ref().is_none_or(|c| *c == conv.channel)
                    && query.label.as_ref().is_none_or(|l| conv.labels.contains(l))
                    && query.assignee.is_none_or(|a| conv.assignee == Some(a));
                if wanted {
                    if items.len() == limit {
                        more = true;
                        return Ok(false);
                    }
                    items.push(conv);
                }
                Ok(true)
            })?;
        let next = if more {
            items.last().map(|c| Cursor {
                updated_ms: c.updated_at_ms,
                id: c.id,
            })
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn status_counts(&self) -> Result<[u64; 5]> {
        Ok(self.index.counts())
    }

    async fn agent(&self, id: AgentId) -> Result<Option<Agent>> {
        self.read_agent(id)
    }

    async fn agents(&self) -> Result<Vec<Agent>> {
        self.scan_values(AGENTS, &[])
    }

    async fn agent_by_token_hash(&self, hash: &str) -> Result<Option<Agent>> {
        match self.tree(TOKENS).get(hash.as_bytes()).map_err(io)? {
            Some(id) => self.read_agent(AgentId(keys::read_u64(&id))),
            None => Ok(None),
        }
    }

    async fn outbox_conversations(&self) -> Result<Vec<ConversationId>> {
        let mut out: Vec<ConversationId> = Vec::new();
        for k in self.tree(OUTBOX).keys([]) {
            let id = ConversationId(keys::read_u64(&k.map_err(io)?));
            if out.last() != Some(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    async fn claim_outbox_head(
        &self,
        conversation: ConversationId,
        holder: Holder,
        lease: Duration,
    ) -> Result<Option<OutboxItem>> {
        let head = match self
            .tree(OUTBOX)
            .scan_prefix(conversation.to_be_bytes())
            .next()
        {
            Some(kv) => decode(TREES[OUTBOX], &kv.map_err(io)?.1)?,
            None => return Ok(None),
        };
        Ok(self
            .leases
            .take(Work::Outbox(conversation), holder, lease)
            .then_some(head))
    }

    async fn bot_queue(
        &self,
        after: Option<(ConversationId, u64)>,
        limit: usize,
    ) -> Result<Vec<(ConversationId, u64)>> {
        use std::ops::Bound;
        let start = match after {
            Some(item) => Bound::Excluded(item),
            None => Bound::Unbounded,
        };
        Ok(self
            .caches
            .bot
            .lock()
            .expect("bot queue lock")
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(item, _)| *item)
            .collect())
    }

    async fn claim_bot(
        &self,
        conversation: ConversationId,
        seq: u64,
        holder: Holder,
        lease: Duration,
    ) -> Result<bool> {
        let pending = self
            .caches
            .bot
            .lock()
            .expect("bot queue lock")
            .contains_key(&(conversation, seq));
        Ok(pending
            && self
                .leases
                .take(Work::Bot(conversation, seq), holder, lease))
    }

    fn bot_done(&self, conversation: ConversationId, seq: u64) {
        self.writer.bot_done(conversation, seq);
    }

    async fn failed_deliveries(&self, limit: usize) -> Result<Vec<(ConversationId, u64)>> {
        self.tree(FAILED)
            .keys([])
            .take(limit)
            .map(|k| Ok(keys::conversation_seq(&k.map_err(io)?)))
            .collect()
    }

    async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    async fn set_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.meta.insert(key, value).map_err(io)?;
        Ok(())
    }

    async fn channel_state(&self, channel: &ChannelId) -> Result<Arc<dyn ChannelState>> {
        self.private_tree(format!("channel/{channel}"))
    }

    async fn kv(&self, space: &str) -> Result<Arc<dyn ChannelState>> {
        self.private_tree(format!("kv/{space}"))
    }

    fn maintenance(&self) -> Option<&dyn super::Maintenance> {
        Some(self)
    }

    async fn records(&self, visit: &mut (dyn FnMut(Record) -> Result<()> + Send)) -> Result<()> {
        self.visit_records(visit)
    }

    fn restore(&self, records: Vec<Record>) -> Pending<()> {
        let change = self.restore_records(records);
        let writer = self.writer.clone();
        Box::pin(async move {
            writer.commit(change?).await?;
            writer.sync().await
        })
    }

    fn erase_contact(&self, contact: ContactId, at_ms: i64) -> Pending<Erased> {
        self.writer
            .exclusive(move |x| admin::erase(x, contact, at_ms))
    }

    async fn stats(&self) -> Result<StoreStats> {
        self.count()
    }
}

impl super::Maintenance for SledStore {
    fn size_on_disk(&self) -> Result<u64> {
        self.db.size_on_disk().map_err(io)
    }

    fn disk(&self) -> super::disk::DiskSpace {
        self.disk.space()
    }

    fn snapshot(&self, dest: &Path) -> Pending<u64> {
        let dest = dest.to_owned();
        let ids = self.ids.clone();
        self.writer.exclusive(move |x| {
            let started = std::time::Instant::now();
            let next = ids.peek();
            let pairs = admin::dump(x.db, &dest, next)?;
            tracing::info!(
                pairs,
                ms = started.elapsed().as_millis() as u64,
                "snapshot written; writes go on"
            );
            Ok(pairs)
        })
    }
}

impl SledStore {
    fn private_tree(&self, name: String) -> Result<Arc<dyn ChannelState>> {
        let tree = self.db.open_tree(name).map_err(io)?;
        Ok(Arc::new(SledChannelState {
            tree,
            writer: self.writer.clone(),
            ids: self.ids.clone(),
        }))
    }
}

/// A private tree: one channel's, or one named space's.
struct SledChannelState {
    tree: Tree,
    writer: Writer,
    ids: Arc<ids::Ids>,
}

fn state_err(e: impl std::fmt::Display) -> StateError {
    StateError(e.to_string())
}

#[async_trait::async_trait]
impl ChannelState for SledChannelState {
    async fn get(&self, key: &[u8]) -> std::result::Result<Option<Vec<u8>>, StateError> {
        Ok(self.tree.get(key).map_err(state_err)?.map(|v| v.to_vec()))
    }

    async fn put_all(&self, pairs: &[(&[u8], &[u8])]) -> std::result::Result<(), StateError> {
        let mut batch = sled::Batch::default();
        for (k, v) in pairs {
            batch.insert(*k, *v);
        }
        self.tree.apply_batch(batch).map_err(state_err)
    }

    async fn remove_all(&self, keys: &[&[u8]]) -> std::result::Result<(), StateError> {
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.remove(*k);
        }
        self.tree.apply_batch(batch).map_err(state_err)
    }

    async fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> std::result::Result<Vec<switchboard_channel::KeyValue>, StateError> {
        let iter: KvIter = match after {
            Some(a) => {
                let mut start = a.to_vec();
                start.push(0);
                Box::new(self.tree.range(start..))
            }
            None => Box::new(self.tree.range(prefix..)),
        };
        iter.take_while(|kv| {
            kv.as_ref()
                .map(|(k, _)| k.starts_with(prefix))
                .unwrap_or(true)
        })
        .take(limit)
        .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(state_err))
        .collect()
    }

    async fn next_id(&self) -> std::result::Result<u64, StateError> {
        self.ids.next().map_err(state_err)
    }

    async fn sync(&self) -> std::result::Result<(), StateError> {
        self.writer.sync().await.map_err(state_err)
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.writer.close();
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
    }
}

mod admin;
pub use admin::restore_snapshot;
mod cache;
mod ids;
mod index;
mod segments;
pub(super) mod space;
#[cfg(test)]
pub(crate) mod tests;
mod writer;
