//! The sled implementation of [`Store`].
//!
//! Facts about sled 0.34.7 this file is built around (see `docs/architecture.md`):
//! - A transaction runs its closure under a global write lock, so transactions are serialised
//!   and our version checks inside them are exact. The closure must stay short: values are
//!   encoded before it runs, and it must not touch a plain `Tree` (that would wait on the lock
//!   the transaction holds).
//! - `flush_async` deadlocks with many concurrent callers (spacejam/sled#1308). Durability goes
//!   through one committer thread that takes every waiting request, calls `flush()` once and
//!   answers them all (group commit).
//! - The page cache defaults to 1 GiB; it is always set from our config.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};
use switchboard_channel::{
    ChannelId, ChannelState, ExternalMessageId, ExternalThread, ExternalUser, StateError,
};
use tokio::sync::oneshot;

use super::keys::{self, IndexKind};
use super::{Change, ConversationQuery, Cursor, Durable, Order, Page, Result, Store, StoreError};
use crate::model::{
    Agent, AgentId, Contact, ContactId, Conversation, ConversationId, Event, EventId, Message,
    Note, OutboxItem, Status,
};

/// The schema this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
const SCHEMA_KEY: &[u8] = b"schema_version";

/// Names of the trees, in the order the transaction sees them.
const TREES: [&str; 15] = [
    "conversations",
    "conv_idx",
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
];
const CONVERSATIONS: usize = 0;
const CONV_IDX: usize = 1;
const MESSAGES: usize = 2;
const EXTERNAL_IDS: usize = 3;
const THREADS: usize = 4;
const CONTACTS: usize = 5;
const IDENTITIES: usize = 6;
const CONTACT_CONVS: usize = 7;
const NOTES: usize = 8;
const EVENTS: usize = 9;
const CONV_EVENTS: usize = 10;
const OUTBOX: usize = 11;
const BOT_QUEUE: usize = 12;
const AGENTS: usize = 13;
const TOKENS: usize = 14;

/// Open-time settings.
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// sled's page cache, in bytes. RSS follows it.
    pub cache_bytes: u64,
}

pub struct SledStore {
    db: sled::Db,
    meta: Tree,
    trees: Vec<Tree>,
    /// Conversations per status, kept from the index at open and from each commit after.
    counts: [AtomicI64; 5],
    committer: Committer,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("model types always serialise")
}

fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        detail: e.to_string(),
    })
}

impl SledStore {
    pub fn open(path: &Path, options: &SledOptions) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_bytes)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref ioe) if ioe.kind() == std::io::ErrorKind::WouldBlock => {
                    StoreError::Io(format!(
                        "{} is in use by another process (is the daemon running?)",
                        path.display()
                    ))
                }
                other => io(other),
            })?;
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
                if found != SCHEMA_VERSION {
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
        let trees = TREES
            .iter()
            .map(|name| db.open_tree(name))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(io)?;
        let store = SledStore {
            committer: Committer::start(db.clone()),
            db,
            meta,
            trees,
            counts: Default::default(),
        };
        store.recount()?;
        Ok(store)
    }

    fn tree(&self, i: usize) -> &Tree {
        &self.trees[i]
    }

    fn recount(&self) -> Result<()> {
        for status in Status::ALL {
            let prefix = keys::status_prefix(&IndexKind::All, status);
            let n = self.tree(CONV_IDX).scan_prefix(prefix).count() as i64;
            self.counts[status.code() as usize].store(n, Ordering::Relaxed);
        }
        Ok(())
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

    /// Walks one index: each wanted status is a sorted run; runs are merged by `(updated, id)`.
    fn walk_index(
        &self,
        kind: &IndexKind<'_>,
        query: &ConversationQuery,
        mut visit: impl FnMut(ConversationId) -> Result<bool>,
    ) -> Result<()> {
        let statuses: Vec<Status> = match query.status {
            Some(s) => vec![s],
            None => Status::ALL.to_vec(),
        };
        let desc = query.order == Order::NewestFirst;
        let mut runs: Vec<std::iter::Peekable<KvIter>> = statuses
            .iter()
            .map(|&status| {
                let prefix = keys::status_prefix(kind, status);
                let mut end = prefix.clone();
                end.extend_from_slice(&[0xff; keys::SORT_SUFFIX + 1]);
                let bound = query.after.map(|c| {
                    let mut k = prefix.clone();
                    k.extend_from_slice(&keys::sort_suffix(c.updated_ms, c.id));
                    k
                });
                let tree = self.tree(CONV_IDX);
                let iter: Box<dyn Iterator<Item = _>> = match (desc, bound) {
                    (true, Some(b)) => Box::new(tree.range(prefix..b).rev()),
                    (true, None) => Box::new(tree.range(prefix..end).rev()),
                    (false, Some(mut b)) => {
                        b.push(0); // strictly after the cursor
                        Box::new(tree.range(b..end))
                    }
                    (false, None) => Box::new(tree.range(prefix..end)),
                };
                iter.peekable()
            })
            .collect();
        loop {
            let mut best: Option<(usize, (i64, ConversationId))> = None;
            for (i, run) in runs.iter_mut().enumerate() {
                let Some(item) = run.peek() else { continue };
                let key = match item {
                    Ok((k, _)) => k,
                    Err(_) => {
                        return Err(io(run
                            .next()
                            .and_then(|r| r.err())
                            .expect("peeked an error")));
                    }
                };
                let sort = keys::parse_suffix(key);
                let better = match best {
                    None => true,
                    Some((_, b)) => (desc && sort > b) || (!desc && sort < b),
                };
                if better {
                    best = Some((i, sort));
                }
            }
            let Some((i, (_, id))) = best else {
                return Ok(());
            };
            runs[i].next();
            if !visit(id)? {
                return Ok(());
            }
        }
    }
}

type KvIter = Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>>;

/// Everything the transaction closure needs, encoded in advance.
struct Prepared<'a> {
    change: &'a Change,
    conversations: Vec<(Vec<u8>, Conversation)>,
}

/// Our abort reasons inside the closure.
type TxError = ConflictableTransactionError<StoreError>;

fn tx_get<T: DeserializeOwned>(
    t: &TransactionalTree,
    tree: usize,
    key: &[u8],
) -> std::result::Result<Option<T>, TxError> {
    match t.get(key)? {
        Some(v) => decode(TREES[tree], &v)
            .map(Some)
            .map_err(ConflictableTransactionError::Abort),
        None => Ok(None),
    }
}

fn insert_absent(
    t: &TransactionalTree,
    key: &[u8],
    value: &[u8],
    what: &'static str,
) -> std::result::Result<(), TxError> {
    if t.get(key)?.is_some() {
        return Err(ConflictableTransactionError::Abort(StoreError::Exists(
            what,
        )));
    }
    t.insert(key, value)?;
    Ok(())
}

impl Prepared<'_> {
    /// Runs inside the transaction. Returns the `(old, new)` status of each conversation write,
    /// for the counters.
    fn run(
        &self,
        t: &[TransactionalTree],
    ) -> std::result::Result<Vec<(Option<Status>, Status)>, TxError> {
        let c = self.change;
        // Insert-if-absent keys first: a duplicate aborts before anything else is staged.
        for (channel, ext, conv, seq) in &c.new_external_ids {
            let key = keys::two_strings(channel.as_str(), ext.as_str());
            insert_absent(
                &t[EXTERNAL_IDS],
                &key,
                &keys::pair(conv.0, *seq),
                "message id",
            )?;
        }
        for (channel, thread, conv) in &c.new_threads {
            let key = keys::two_strings(channel.as_str(), thread.as_str());
            insert_absent(&t[THREADS], &key, &conv.to_be_bytes(), "thread")?;
        }
        for (channel, user, contact) in &c.new_identities {
            let key = keys::two_strings(channel.as_str(), user.as_str());
            insert_absent(&t[IDENTITIES], &key, &contact.to_be_bytes(), "identity")?;
        }
        for (channel, user, contact) in &c.moved_identities {
            let key = keys::two_strings(channel.as_str(), user.as_str());
            t[IDENTITIES].insert(key, &contact.to_be_bytes())?;
        }

        let mut statuses = Vec::with_capacity(self.conversations.len());
        for ((bytes, record), write) in self.conversations.iter().zip(&c.conversations) {
            let key = record.id.to_be_bytes();
            let old: Option<Conversation> = tx_get(&t[CONVERSATIONS], CONVERSATIONS, &key)?;
            let stored_version = old.as_ref().map(|o| o.version);
            let expected = if write.is_new {
                None
            } else {
                Some(write.record.version)
            };
            if stored_version != expected {
                return Err(ConflictableTransactionError::Abort(StoreError::Conflict(
                    "conversation",
                )));
            }
            let old_keys: HashSet<Vec<u8>> = old
                .as_ref()
                .map(keys::index_keys)
                .unwrap_or_default()
                .into_iter()
                .collect();
            let new_keys: HashSet<Vec<u8>> = keys::index_keys(record).into_iter().collect();
            for k in old_keys.difference(&new_keys) {
                t[CONV_IDX].remove(k.as_slice())?;
            }
            for k in new_keys.difference(&old_keys) {
                t[CONV_IDX].insert(k.as_slice(), &[])?;
            }
            if old.as_ref().map(|o| o.contact) != Some(record.contact) {
                if let Some(o) = &old {
                    t[CONTACT_CONVS].remove(&keys::pair(o.contact.0, o.id.0))?;
                }
                t[CONTACT_CONVS].insert(&keys::pair(record.contact.0, record.id.0), &[])?;
            }
            t[CONVERSATIONS].insert(&key, bytes.as_slice())?;
            statuses.push((old.map(|o| o.status), record.status));
        }

        for contact in &c.contacts {
            t[CONTACTS].insert(&contact.id.to_be_bytes(), encode(contact))?;
        }
        for m in &c.messages {
            t[MESSAGES].insert(&keys::pair(m.conversation.0, m.seq), encode(m))?;
        }
        for n in &c.notes {
            t[NOTES].insert(&keys::pair(n.conversation.0, n.id.0), encode(n))?;
        }
        for e in &c.events {
            t[EVENTS].insert(&e.id.to_be_bytes(), encode(e))?;
            if let Some(conv) = e.conversation {
                t[CONV_EVENTS].insert(&keys::pair(conv.0, e.id.0), &[])?;
            }
        }
        for item in &c.outbox_put {
            let key = keys::pair(item.conversation.0, item.seq);
            t[OUTBOX].insert(&key, encode(item))?;
        }
        for (conv, seq) in &c.outbox_remove {
            t[OUTBOX].remove(&keys::pair(conv.0, *seq))?;
        }
        for (conv, seq) in &c.bot_queue_put {
            t[BOT_QUEUE].insert(&keys::pair(conv.0, *seq), &[])?;
        }
        for (conv, seq) in &c.bot_queue_remove {
            t[BOT_QUEUE].remove(&keys::pair(conv.0, *seq))?;
        }
        for agent in &c.agents {
            let key = agent.id.to_be_bytes();
            let old: Option<Agent> = tx_get(&t[AGENTS], AGENTS, &key)?;
            if let Some(old) = old
                && old.token_hash != agent.token_hash
            {
                t[TOKENS].remove(old.token_hash.as_bytes())?;
            }
            if !agent.token_hash.is_empty() {
                t[TOKENS].insert(agent.token_hash.as_bytes(), &key)?;
            }
            t[AGENTS].insert(&key, encode(agent))?;
        }
        Ok(statuses)
    }
}

impl Store for SledStore {
    fn apply(&self, change: &Change) -> Result<()> {
        let prepared = Prepared {
            change,
            conversations: change
                .conversations
                .iter()
                .map(|w| {
                    let mut record = w.record.clone();
                    record.version = if w.is_new { 1 } else { w.record.version + 1 };
                    (encode(&record), record)
                })
                .collect(),
        };
        let trees: Vec<&Tree> = self.trees.iter().collect();
        let statuses = trees
            .as_slice()
            .transaction(|t| prepared.run(t))
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => io(e),
            })?;
        for (old, new) in statuses {
            if let Some(old) = old {
                self.counts[old.code() as usize].fetch_sub(1, Ordering::Relaxed);
            }
            self.counts[new.code() as usize].fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn durable(&self) -> Durable {
        self.committer.wait()
    }

    fn next_id(&self) -> Result<u64> {
        // Start at 1 so that 0 can mean "none" in cursors.
        self.db.generate_id().map(|i| i + 1).map_err(io)
    }

    fn conversation(&self, id: ConversationId) -> Result<Option<Conversation>> {
        self.get(CONVERSATIONS, &id.to_be_bytes())
    }

    fn thread(
        &self,
        channel: &ChannelId,
        thread: &ExternalThread,
    ) -> Result<Option<ConversationId>> {
        let key = keys::two_strings(channel.as_str(), thread.as_str());
        Ok(self
            .tree(THREADS)
            .get(key)
            .map_err(io)?
            .map(|v| ConversationId(keys::read_u64(&v))))
    }

    fn identity(&self, channel: &ChannelId, user: &ExternalUser) -> Result<Option<ContactId>> {
        let key = keys::two_strings(channel.as_str(), user.as_str());
        Ok(self
            .tree(IDENTITIES)
            .get(key)
            .map_err(io)?
            .map(|v| ContactId(keys::read_u64(&v))))
    }

    fn external_message(
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

    fn contact(&self, id: ContactId) -> Result<Option<Contact>> {
        self.get(CONTACTS, &id.to_be_bytes())
    }

    fn contact_conversations(&self, contact: ContactId) -> Result<Vec<ConversationId>> {
        self.tree(CONTACT_CONVS)
            .scan_prefix(contact.to_be_bytes())
            .keys()
            .map(|k| {
                k.map(|k| ConversationId(keys::read_u64(&k[8..])))
                    .map_err(io)
            })
            .collect()
    }

    fn message(&self, conversation: ConversationId, seq: u64) -> Result<Option<Message>> {
        self.get(MESSAGES, &keys::pair(conversation.0, seq))
    }

    fn messages(
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

    fn notes(&self, conversation: ConversationId) -> Result<Vec<Note>> {
        self.scan_values(NOTES, &conversation.to_be_bytes())
    }

    fn events(&self, after: Option<EventId>, limit: usize) -> Result<Vec<Event>> {
        let start = after.map(|a| a.0.saturating_add(1)).unwrap_or(0);
        self.tree(EVENTS)
            .range(keys::u64_key(start)..)
            .take(limit)
            .map(|kv| decode(TREES[EVENTS], &kv.map_err(io)?.1))
            .collect()
    }

    fn conversation_events(&self, conversation: ConversationId) -> Result<Vec<Event>> {
        let ids: Vec<u64> = self
            .tree(CONV_EVENTS)
            .scan_prefix(conversation.to_be_bytes())
            .keys()
            .map(|k| k.map(|k| keys::read_u64(&k[8..])).map_err(io))
            .collect::<Result<_>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(e) = self.get(EVENTS, &keys::u64_key(id))? {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn list_conversations(&self, query: &ConversationQuery) -> Result<Page> {
        let kind = if let Some(a) = query.assignee {
            IndexKind::Assignee(a)
        } else if let Some(l) = &query.label {
            IndexKind::Label(l)
        } else if let Some(c) = &query.channel {
            IndexKind::Channel(c.as_str())
        } else {
            IndexKind::All
        };
        let limit = query.limit.max(1);
        let mut items = Vec::with_capacity(limit);
        let mut more = false;
        self.walk_index(&kind, query, |id| {
            let Some(conv) = self.conversation(id)? else {
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

    fn status_counts(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed).max(0) as u64)
    }

    fn agent(&self, id: AgentId) -> Result<Option<Agent>> {
        self.get(AGENTS, &id.to_be_bytes())
    }

    fn agents(&self) -> Result<Vec<Agent>> {
        self.scan_values(AGENTS, &[])
    }

    fn agent_by_token_hash(&self, hash: &str) -> Result<Option<Agent>> {
        match self.tree(TOKENS).get(hash.as_bytes()).map_err(io)? {
            Some(id) => self.agent(AgentId(keys::read_u64(&id))),
            None => Ok(None),
        }
    }

    fn outbox(&self) -> Result<Vec<OutboxItem>> {
        self.scan_values(OUTBOX, &[])
    }

    fn outbox_head(&self, conversation: ConversationId) -> Result<Option<OutboxItem>> {
        match self
            .tree(OUTBOX)
            .scan_prefix(conversation.to_be_bytes())
            .next()
        {
            Some(kv) => decode(TREES[OUTBOX], &kv.map_err(io)?.1).map(Some),
            None => Ok(None),
        }
    }

    fn bot_queue(&self) -> Result<Vec<(ConversationId, u64)>> {
        self.tree(BOT_QUEUE)
            .iter()
            .keys()
            .map(|k| {
                let k = k.map_err(io)?;
                Ok((ConversationId(keys::read_u64(&k)), keys::read_u64(&k[8..])))
            })
            .collect()
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    fn set_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.meta.insert(key, value).map_err(io)?;
        Ok(())
    }

    fn channel_state(&self, channel: &ChannelId) -> Result<Arc<dyn ChannelState>> {
        let tree = self
            .db
            .open_tree(format!("channel/{channel}"))
            .map_err(io)?;
        Ok(Arc::new(SledChannelState {
            tree,
            db: self.db.clone(),
            committer: self.committer.clone(),
        }))
    }

    fn size_on_disk(&self) -> Result<u64> {
        self.db.size_on_disk().map_err(io)
    }
}

/// One channel's private tree.
struct SledChannelState {
    tree: Tree,
    db: sled::Db,
    committer: Committer,
}

fn state_err(e: impl std::fmt::Display) -> StateError {
    StateError(e.to_string())
}

#[async_trait::async_trait]
impl ChannelState for SledChannelState {
    fn get(&self, key: &[u8]) -> std::result::Result<Option<Vec<u8>>, StateError> {
        Ok(self.tree.get(key).map_err(state_err)?.map(|v| v.to_vec()))
    }

    fn put_all(&self, pairs: &[(&[u8], &[u8])]) -> std::result::Result<(), StateError> {
        let mut batch = sled::Batch::default();
        for (k, v) in pairs {
            batch.insert(*k, *v);
        }
        self.tree.apply_batch(batch).map_err(state_err)
    }

    fn scan(
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

    fn next_id(&self) -> std::result::Result<u64, StateError> {
        self.db.generate_id().map(|i| i + 1).map_err(state_err)
    }

    async fn sync(&self) -> std::result::Result<(), StateError> {
        self.committer.wait().await.map_err(state_err)
    }
}

type Waiter = oneshot::Sender<Result<()>>;

/// Group commit: one thread takes every waiting durability request, flushes once, answers all.
#[derive(Clone)]
struct Committer {
    inner: Arc<CommitterInner>,
}

struct CommitterInner {
    /// `None` once the store is closed.
    requests: std::sync::Mutex<Option<std::sync::mpsc::Sender<Waiter>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Committer {
    fn start(db: sled::Db) -> Committer {
        let (requests, rx) = std::sync::mpsc::channel::<Waiter>();
        let thread = std::thread::Builder::new()
            .name("sled-committer".into())
            .spawn(move || {
                let mut batch = Vec::new();
                // Ends when the store closes (the sender is dropped).
                while let Ok(first) = rx.recv() {
                    batch.push(first);
                    batch.extend(rx.try_iter());
                    let result = db.flush().map(|_| ()).map_err(io);
                    for waiter in batch.drain(..) {
                        let _ = waiter.send(result.clone());
                    }
                }
            })
            .expect("spawn committer thread");
        Committer {
            inner: Arc::new(CommitterInner {
                requests: std::sync::Mutex::new(Some(requests)),
                thread: std::sync::Mutex::new(Some(thread)),
            }),
        }
    }

    fn wait(&self) -> Durable {
        let (tx, rx) = oneshot::channel();
        let sent = match &*self.inner.requests.lock().expect("committer lock") {
            Some(requests) => requests.send(tx).is_ok(),
            None => false,
        };
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Io("store is closed".into()));
            }
            rx.await
                .map_err(|_| StoreError::Io("store committer stopped".into()))?
        })
    }

    /// Answers what is queued, stops the thread and releases its database handle.
    fn close(&self) {
        self.inner.requests.lock().expect("committer lock").take();
        if let Some(thread) = self.inner.thread.lock().expect("committer lock").take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.committer.close();
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
    }
}

#[cfg(test)]
mod tests;
