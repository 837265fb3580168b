//! The single writer: every change and every durability request goes through one thread.
//!
//! Each round it takes everything waiting (up to [`MAX_BATCH`] changes) and applies the
//! changes as one atomic sled batch (all records live in one tree: see [`super::space`]).
//! sled serialises writers on a global lock anyway; one writer removes the contention around
//! that lock. A second thread, the flusher, takes every applied round waiting, calls `flush()`
//! once and answers their waiters: N fsyncs become one, and the next round is applied while
//! the previous one's fsync runs (pipelined group commit). Nobody is answered before the flush
//! that covers their change.
//!
//! Under load (the previous round had more than one change) the writer lingers up to
//! `commit_linger` for more changes before it applies and flushes: fewer, fuller flushes. A
//! lone change at low load is never delayed.
//!
//! Each change is first checked (versions, insert-if-absent keys) and only then staged, so a
//! refused change leaves no partial writes while the others in its round go through. Checks
//! see what earlier changes of the same round staged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sled::Tree;
use tokio::sync::oneshot;

use super::Caches;
use super::ids::Ids;
use super::index::ConvIndex;
use super::segments::{Closed, Segments};
use super::space::Space;
use super::{
    ACTIVE, AGENTS, BOT_QUEUE, CONTACT_CONVS, CONTACTS, CONV_EVENTS, CONVERSATIONS, EVENTS,
    EXTERNAL_IDS, FAILED, IDENTITIES, MESSAGES, NOTES, OUTBOX, PREFIXES, THREADS, TOKENS, TREES,
    decode, encode, io,
};
use crate::model::{Agent, AgentId, Author, Conversation, ConversationId, Event, EventId};
use crate::store::keys;
use crate::store::{Change, Commit, Committed, Durable, Result, StoreError};

/// Most changes applied in one round.
const MAX_BATCH: usize = 512;
/// Committed events a slow subscriber may fall behind by before it is told it lagged.
const FEED_CAPACITY: usize = 4096;

enum Request {
    Commit {
        change: Box<Prepared>,
        reply: oneshot::Sender<Result<Committed>>,
    },
    Sync {
        reply: oneshot::Sender<Result<()>>,
    },
    /// The bot decided a message silently: its queue entry goes, nobody waits (see
    /// [`BotQueue`]).
    BotDone(ConversationId, u64),
    /// A job that needs every write held off while it runs (snapshots, erasure).
    Exclusive(Box<dyn FnOnce(Exclusive<'_>) + Send>),
}

/// What an exclusive job may touch: everything the writer owns. Records lagging on disk
/// (see [`Live`]) are written back before the job starts.
pub(super) struct Exclusive<'a> {
    pub db: &'a sled::Db,
    pub data: &'a Tree,
    pub index: &'a ConvIndex,
    pub caches: &'a Caches,
    pub live: &'a mut LiveMap,
}

/// A change with its values encoded (by the caller's thread, not the writer's).
struct Prepared {
    change: Change,
    /// New conversation records with their versions bumped, and their encodings; `None` when
    /// only the activity changed (see [`Live`]).
    conversations: Vec<(Conversation, Option<Vec<u8>>)>,
    contacts: Vec<Vec<u8>>,
    messages: Vec<Vec<u8>>,
    notes: Vec<Vec<u8>>,
    /// Events as encoded before their ids are known (see [`with_id`]).
    events: Vec<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
    agents: Vec<Vec<u8>>,
}

impl Prepared {
    fn new(change: Change) -> Prepared {
        let conversations = change
            .conversations
            .iter()
            .map(|w| {
                let mut record = w.record.clone();
                record.version = match &w.previous {
                    Some(p) => p.version + 1,
                    None if w.restored => record.version,
                    None => 1,
                };
                // Written in full, as the bot queue's recovery relies on (see [`BotQueue`]):
                // a bot decision that says something, and a customer message the change does
                // not queue for the bot.
                let activity_only = w
                    .previous
                    .as_ref()
                    .is_some_and(|p| p.same_but_activity(&record))
                    && !change.bot_queue_remove.iter().any(|(c, _)| *c == record.id)
                    && !adds_unqueued_customer_message(&change, &record);
                let bytes = (!activity_only).then(|| encode(&record));
                (record, bytes)
            })
            .collect();
        Prepared {
            conversations,
            contacts: change.contacts.iter().map(encode).collect(),
            messages: change.messages.iter().map(encode).collect(),
            notes: change.notes.iter().map(encode).collect(),
            events: change.events.iter().map(encode).collect(),
            outbox: change.outbox_put.iter().map(encode).collect(),
            agents: change.agents.iter().map(encode).collect(),
            change,
        }
    }

    /// The insert-if-absent keys of the change: `(kind, key, value, what it is)`. A change
    /// whose key exists already is refused as a whole.
    fn claims(&self) -> impl Iterator<Item = (usize, Vec<u8>, Vec<u8>, &'static str)> + '_ {
        let c = &self.change;
        let ext = c.new_external_ids.iter().map(|(channel, ext, conv, seq)| {
            let key = keys::two_strings(channel.as_str(), ext.as_str());
            (
                EXTERNAL_IDS,
                key,
                keys::pair(conv.0, *seq).to_vec(),
                "message id",
            )
        });
        let threads = c.new_threads.iter().map(|(channel, thread, conv)| {
            let key = keys::two_strings(channel.as_str(), thread.as_str());
            (THREADS, key, conv.to_be_bytes().to_vec(), "thread")
        });
        let identities = c.new_identities.iter().map(|(channel, user, contact)| {
            let key = keys::two_strings(channel.as_str(), user.as_str());
            (IDENTITIES, key, contact.to_be_bytes().to_vec(), "identity")
        });
        ext.chain(threads).chain(identities)
    }

    /// Checks the change against the current state and what earlier changes of the round
    /// staged, without writing anything. `Err` is a storage failure (the whole round fails);
    /// `Ok(Err)` refuses this change only.
    fn check(&self, st: &Staging<'_>) -> Result<std::result::Result<Checked, StoreError>> {
        let c = &self.change;
        let taken = |i: usize, key: Vec<u8>| -> Result<bool> {
            let space = st.space(i);
            Ok(st.claimed.contains(&space.key(&key)) || space.contains_key(&key).map_err(io)?)
        };
        for (i, key, _, what) in self.claims() {
            if taken(i, key)? {
                return Ok(Err(StoreError::Exists(what)));
            }
        }
        for write in &c.conversations {
            let expected = write.previous.as_ref().map(|p| p.version);
            if st.seen.current(write.record.id).map(|l| l.version) != expected {
                return Ok(Err(StoreError::Conflict("conversation")));
            }
        }
        let mut old_tokens = Vec::with_capacity(c.agents.len());
        for agent in &c.agents {
            let old = match st.tokens.get(&agent.id) {
                Some(hash) => Some(hash.clone()),
                None => match st.space(AGENTS).get(agent.id.to_be_bytes()).map_err(io)? {
                    Some(v) => Some(decode::<Agent>(TREES[AGENTS], &v)?.token_hash),
                    None => None,
                },
            };
            old_tokens.push(old.filter(|h| *h != agent.token_hash));
        }
        Ok(Ok(Checked { old_tokens }))
    }

    /// Stages the writes of a checked change. Its events get their ids here, in the order
    /// changes are applied, so that an event's id is its position in the log: a reader
    /// resuming after id `x` misses nothing committed later.
    fn stage(&mut self, st: &mut Staging<'_>, checked: Checked) -> Result<()> {
        for (e, bytes) in self.change.events.iter_mut().zip(&mut self.events) {
            if e.id == EventId::UNASSIGNED {
                e.id = EventId(st.ids.next()?);
                *bytes = with_id(bytes, e);
            }
        }
        let c = &self.change;
        for (i, key, value, _) in self.claims() {
            st.claim(i, &key, &value);
        }
        for (channel, user, contact) in &c.moved_identities {
            let key = keys::two_strings(channel.as_str(), user.as_str());
            st.put(IDENTITIES, &key, &contact.to_be_bytes());
        }
        for ((record, bytes), write) in self.conversations.iter().zip(&c.conversations) {
            let old_contact = write.previous.as_ref().map(|p| p.contact);
            if old_contact != Some(record.contact) {
                if let Some(old) = old_contact {
                    st.del(CONTACT_CONVS, &keys::pair(old.0, record.id.0));
                }
                st.put(
                    CONTACT_CONVS,
                    &keys::pair(record.contact.0, record.id.0),
                    &[],
                );
            }
            let was_dirty = st.seen.current(record.id).is_some_and(|l| l.dirty);
            let key = record.id.to_be_bytes();
            let dirty = match bytes {
                Some(bytes) => {
                    st.put(CONVERSATIONS, &key, bytes);
                    if was_dirty {
                        st.del(ACTIVE, &key);
                        st.persist_bot_queue(record.id);
                    }
                    false
                }
                None => {
                    if !was_dirty {
                        st.put(ACTIVE, &key, &[]);
                    }
                    true
                }
            };
            st.seen.batch.insert(
                record.id,
                Live {
                    version: record.version,
                    dirty,
                },
            );
        }
        for (contact, bytes) in c.contacts.iter().zip(&self.contacts) {
            st.put(CONTACTS, &contact.id.to_be_bytes(), bytes);
        }
        for (m, bytes) in c.messages.iter().zip(&self.messages) {
            st.put(MESSAGES, &keys::pair(m.conversation.0, m.seq), bytes);
        }
        for (n, bytes) in c.notes.iter().zip(&self.notes) {
            st.put(NOTES, &keys::pair(n.conversation.0, n.id.0), bytes);
        }
        for (e, bytes) in c.events.iter().zip(&self.events) {
            let logged = e.conversation.filter(|_| e.kind.in_conversation_log());
            if let Some(closed) = st
                .segments
                .push(e.id.0, logged, bytes, &mut st.last_segment)
            {
                st.write_segment(closed);
            }
        }
        for (item, bytes) in c.outbox_put.iter().zip(&self.outbox) {
            st.put(OUTBOX, &keys::pair(item.conversation.0, item.seq), bytes);
        }
        for (conv, seq) in &c.outbox_remove {
            st.del(OUTBOX, &keys::pair(conv.0, *seq));
        }
        for &(conv, seq) in &c.bot_queue_put {
            // A conversation marked active has its newer messages re-queued at open: its
            // entries can live in memory. Any other entry is written.
            let on_disk = !st.seen.current(conv).is_some_and(|l| l.dirty);
            if on_disk {
                st.put(BOT_QUEUE, &keys::pair(conv.0, seq), &[]);
            }
            st.bot.insert((conv, seq), Some(on_disk));
        }
        for &item in &c.bot_queue_remove {
            st.bot_remove(item);
        }
        for (conv, seq) in &c.failed_put {
            st.put(FAILED, &keys::pair(conv.0, *seq), &[]);
        }
        for (conv, seq) in &c.failed_remove {
            st.del(FAILED, &keys::pair(conv.0, *seq));
        }
        for ((agent, bytes), old_token) in c.agents.iter().zip(&self.agents).zip(checked.old_tokens)
        {
            let key = agent.id.to_be_bytes();
            if let Some(old) = old_token {
                st.del(TOKENS, old.as_bytes());
            }
            if !agent.token_hash.is_empty() {
                st.put(TOKENS, agent.token_hash.as_bytes(), &key);
            }
            st.put(AGENTS, &key, bytes);
            st.tokens.insert(agent.id, agent.token_hash.clone());
        }
        Ok(())
    }
}

/// One round's writes, built change by change and applied as one atomic sled batch.
struct Staging<'a> {
    data: &'a Tree,
    batch: sled::Batch,
    /// Insert-if-absent keys (full keys) taken by earlier changes of this round.
    claimed: HashSet<Vec<u8>>,
    /// Token hashes written by earlier changes of this round.
    tokens: HashMap<AgentId, String>,
    seen: Versions<'a>,
    /// The bot queue as committed (read only: the writer is its only writer).
    bot_queue: &'a Mutex<BotQueue>,
    /// This round's changes to it: `Some(on_disk)` added or updated, `None` removed.
    bot: BTreeMap<(ConversationId, u64), Option<bool>>,
    /// This round's events, packed into segments (see [`super::segments`]).
    segments: Segments,
    /// The key of the last segment written.
    last_segment: u64,
    /// Where events get their ids.
    ids: &'a Ids,
}

impl Staging<'_> {
    fn space(&self, i: usize) -> Space<'_> {
        Space {
            tree: self.data,
            prefix: PREFIXES[i],
        }
    }

    fn put(&mut self, i: usize, key: &[u8], value: &[u8]) {
        let key = self.space(i).key(key);
        self.batch.insert(key, value);
    }

    fn del(&mut self, i: usize, key: &[u8]) {
        let key = self.space(i).key(key);
        self.batch.remove(key);
    }

    /// Whether a bot queue entry exists, as this round sees it: `Some(on_disk)`.
    fn bot_entry(&self, item: (ConversationId, u64)) -> Option<bool> {
        match self.bot.get(&item) {
            Some(staged) => *staged,
            None => self
                .bot_queue
                .lock()
                .expect("bot queue lock")
                .get(&item)
                .copied(),
        }
    }

    fn bot_remove(&mut self, item: (ConversationId, u64)) {
        if let Some(on_disk) = self.bot_entry(item) {
            if on_disk {
                self.del(BOT_QUEUE, &keys::pair(item.0.0, item.1));
            }
            self.bot.insert(item, None);
        }
    }

    /// A conversation's active mark goes: its bot queue entries that lived in memory are
    /// written with it.
    fn persist_bot_queue(&mut self, conv: ConversationId) {
        let mut items: BTreeMap<(ConversationId, u64), bool> =
            pending_of(&self.bot_queue.lock().expect("bot queue lock"), conv);
        for (item, staged) in self.bot.range((conv, 0)..=(conv, u64::MAX)) {
            match staged {
                Some(on_disk) => items.insert(*item, *on_disk),
                None => items.remove(item),
            };
        }
        for (item, on_disk) in items {
            if !on_disk {
                self.put(BOT_QUEUE, &keys::pair(item.0.0, item.1), &[]);
                self.bot.insert(item, Some(true));
            }
        }
    }

    fn write_segment(&mut self, closed: Closed) {
        let key = keys::u64_key(closed.key);
        self.put(EVENTS, &key, &closed.value);
        for (conv, id) in closed.logged {
            self.put(CONV_EVENTS, &keys::pair(conv.0, id), &key);
        }
    }

    /// An insert-if-absent key: later changes of the round see it as taken.
    fn claim(&mut self, i: usize, key: &[u8], value: &[u8]) {
        let key = self.space(i).key(key);
        self.claimed.insert(key.clone());
        self.batch.insert(key, value);
    }
}

impl Prepared {
    /// After commit: the index and the read caches learn what changed.
    fn publish(&self, index: &ConvIndex, caches: &Caches) {
        let c = &self.change;
        for ((record, bytes), write) in self.conversations.iter().zip(&c.conversations) {
            index.update(write.previous.as_ref(), record);
            caches.conversations.put(record.id, record.clone());
            let mut fresh = caches.activity.write().expect("activity lock");
            if bytes.is_some() {
                fresh.remove(&record.id);
            } else {
                fresh.insert(record.id, record.clone());
            }
        }
        for (channel, thread, conv) in &c.new_threads {
            caches
                .threads
                .put_new(keys::two_strings(channel.as_str(), thread.as_str()), conv.0);
        }
        for (channel, user, contact) in &c.new_identities {
            caches.identities.put_new(
                keys::two_strings(channel.as_str(), user.as_str()),
                contact.0,
            );
        }
        for (channel, user, contact) in &c.moved_identities {
            caches.identities.put(
                keys::two_strings(channel.as_str(), user.as_str()),
                contact.0,
            );
        }
    }
}

/// How an event without its id starts when encoded: the id is its first field.
const UNASSIGNED_PREFIX: &[u8] = br#"{"id":0,"#;

/// `event` (now with its id) encoded, from its encoding made without the id on the caller's
/// thread: the id goes in front of the rest, so the writer does not encode the event again.
/// Anything else (not the expected start) is encoded afresh.
fn with_id(unassigned: &[u8], event: &Event) -> Vec<u8> {
    let Some(rest) = unassigned.strip_prefix(UNASSIGNED_PREFIX) else {
        return encode(event);
    };
    let id = event.id.0.to_string();
    let mut out = Vec::with_capacity(unassigned.len() + id.len());
    out.extend_from_slice(br#"{"id":"#);
    out.extend_from_slice(id.as_bytes());
    out.push(b',');
    out.extend_from_slice(rest);
    out
}

/// What `check` read, for `stage`.
struct Checked {
    /// Per agent: its previous token hash, when it changes.
    old_tokens: Vec<Option<String>>,
}

/// What the writer knows of each conversation without reading it.
///
/// `version`: the writer is the only writer, so a version check is a map lookup instead of a
/// read and a decode.
///
/// `dirty`: most changes to a conversation are a new message, which changes only its activity
/// (`last_seq`, `updated_at_ms`, `preview`). Rewriting the whole record for that was a quarter of
/// the writer's work per message and most of sled's garbage. Instead such a change marks the
/// conversation in the `active` tree once, keeps the fresh record in memory (read cache and
/// [`super::Caches::activity`]), and a checkpoint writes it back every few seconds. After a
/// crash, opening the store repairs marked conversations from their newest messages.
#[derive(Debug, Clone, Copy)]
pub(super) struct Live {
    pub version: u64,
    pub dirty: bool,
}

pub(super) type LiveMap = HashMap<ConversationId, Live>;

/// The conversations as one batch sees them: committed state, and its earlier changes'.
struct Versions<'a> {
    committed: &'a LiveMap,
    batch: HashMap<ConversationId, Live>,
}

impl Versions<'_> {
    fn current(&self, id: ConversationId) -> Option<Live> {
        self.batch
            .get(&id)
            .or_else(|| self.committed.get(&id))
            .copied()
    }
}

/// The bot queue: every customer message the bot has yet to decide, with whether its key is
/// on disk (`BOT_QUEUE`).
///
/// Writing a key with every message and deleting it a moment later, when the bot has decided,
/// was two of the five writes a message cost. Most entries now live in memory only: an entry
/// whose conversation carries the `active` mark (see [`Live`]) needs no key, because opening
/// the store puts every customer message newer than such a conversation's record on disk back
/// in the queue. The writer keeps that true:
///
/// - an entry is kept in memory only while its conversation is marked; when the mark goes (a
///   full record write, a checkpoint), the conversation's entries are written in the same
///   batch;
/// - a decision that says something is recorded with a full record write, so a message the
///   bot answered is never newer than the record on disk, and is never decided again; a
///   silent decision ([`Request::BotDone`]) may be redone after a crash, which changes nothing;
/// - a customer message the change does not queue (the engine decides which messages the bot
///   reads; the store does not know why) is stored with a full record write too, so it is
///   never queued at open.
pub(super) type BotQueue = BTreeMap<(ConversationId, u64), bool>;

/// Whether the change adds a customer message to the conversation without queueing it for
/// the bot. Opening the store after a crash would queue it with the other messages newer than
/// the record on disk; a full record write keeps it out of their range. Which messages the
/// bot reads is the engine's business: this looks only at what the change says.
fn adds_unqueued_customer_message(change: &Change, record: &Conversation) -> bool {
    change.messages.iter().any(|m| {
        m.conversation == record.id
            && m.author == Author::Customer
            && !change.bot_queue_put.contains(&(record.id, m.seq))
    })
}

/// One conversation's entries in the bot queue.
fn pending_of(bot: &BotQueue, conv: ConversationId) -> BTreeMap<(ConversationId, u64), bool> {
    bot.range((conv, 0)..=(conv, u64::MAX))
        .map(|(item, on_disk)| (*item, *on_disk))
        .collect()
}

/// Writes back every conversation record that only changed in memory (see [`Live`]). Runs on
/// the writer thread between rounds, so nothing changes under it. Durable with the next flush;
/// until then the `active` markers cover a crash.
pub(super) fn checkpoint(data: &Tree, caches: &Caches, live: &mut LiveMap) {
    let dirty: Vec<Conversation> = caches
        .activity
        .read()
        .expect("activity lock")
        .values()
        .cloned()
        .collect();
    if dirty.is_empty() {
        return;
    }
    let (records, marks) = (
        Space {
            tree: data,
            prefix: PREFIXES[CONVERSATIONS],
        },
        Space {
            tree: data,
            prefix: PREFIXES[ACTIVE],
        },
    );
    let queue = Space {
        tree: data,
        prefix: PREFIXES[BOT_QUEUE],
    };
    let mut batch = sled::Batch::default();
    let mut written = Vec::new();
    {
        let bot = caches.bot.lock().expect("bot queue lock");
        for c in &dirty {
            let key = c.id.to_be_bytes();
            batch.insert(records.key(&key), encode(c));
            batch.remove(marks.key(&key));
            for (item, on_disk) in pending_of(&bot, c.id) {
                if !on_disk {
                    batch.insert(queue.key(&keys::pair(item.0.0, item.1)), &[]);
                    written.push(item);
                }
            }
        }
    }
    match data.apply_batch(batch) {
        Ok(()) => {
            let mut bot = caches.bot.lock().expect("bot queue lock");
            for item in written {
                bot.insert(item, true);
            }
            drop(bot);
            let mut fresh = caches.activity.write().expect("activity lock");
            for c in &dirty {
                fresh.remove(&c.id);
                if let Some(l) = live.get_mut(&c.id) {
                    l.dirty = false;
                }
            }
        }
        // The marks stay; the next checkpoint (or a repair at open) tries again.
        Err(e) => tracing::warn!(error = %e, "checkpoint of conversation records failed"),
    }
}

/// The outcome of one change in a batch.
type Outcome = std::result::Result<(), StoreError>;

/// Applies a round's changes as one atomic batch. Returns each change's outcome and the new
/// live state.
fn apply_batch(
    data: &Tree,
    ids: &Ids,
    versions: &LiveMap,
    bot_queue: &Mutex<BotQueue>,
    batch: &mut [&mut Prepared],
    bot_done: &[(ConversationId, u64)],
    last_segment: &mut u64,
) -> Result<Staged> {
    let mut st = Staging {
        data,
        batch: sled::Batch::default(),
        claimed: HashSet::new(),
        tokens: HashMap::new(),
        seen: Versions {
            committed: versions,
            batch: HashMap::new(),
        },
        bot_queue,
        bot: BTreeMap::new(),
        segments: Segments::default(),
        last_segment: *last_segment,
        ids,
    };
    let mut outcomes = Vec::with_capacity(batch.len());
    for p in batch.iter_mut() {
        outcomes.push(match p.check(&st)? {
            Ok(checked) => {
                p.stage(&mut st, checked)?;
                Ok(())
            }
            Err(e) => Err(e),
        });
    }
    for &item in bot_done {
        st.bot_remove(item);
    }
    if let Some(closed) = st.segments.close(&mut st.last_segment) {
        st.write_segment(closed);
    }
    // Keys only have to rise: a failed batch leaves a gap, which is harmless.
    *last_segment = st.last_segment;
    data.apply_batch(st.batch).map_err(io)?;
    Ok(Staged {
        outcomes,
        versions: st.seen.batch,
        bot: st.bot,
    })
}

/// What a round's batch changed besides the tree.
struct Staged {
    outcomes: Vec<Outcome>,
    versions: HashMap<ConversationId, Live>,
    bot: BTreeMap<(ConversationId, u64), Option<bool>>,
}

/// What the writer owns or shares, handed over by the store it writes for.
pub(super) struct Parts {
    pub db: sled::Db,
    pub data: Tree,
    pub index: Arc<ConvIndex>,
    pub caches: Arc<Caches>,
    pub ids: Arc<Ids>,
    /// Every conversation's version and activity mark, as read at open.
    pub versions: LiveMap,
    /// The key of the last event segment on disk.
    pub last_segment: u64,
}

#[derive(Clone)]
pub(super) struct Writer {
    inner: Arc<WriterInner>,
}

struct WriterInner {
    /// `None` once the store is closed.
    requests: Mutex<Option<std::sync::mpsc::Sender<Request>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    feed: Feed,
}

impl Writer {
    pub fn start(parts: Parts, options: &super::SledOptions) -> Writer {
        let Parts {
            db,
            data,
            index,
            caches,
            ids,
            mut versions,
            mut last_segment,
        } = parts;
        let (linger, checkpoint_every) = (options.commit_linger, options.checkpoint_every);
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        let (applied_tx, applied_rx) = std::sync::mpsc::channel::<Applied>();
        let flush_db = db.clone();
        let (feed, _) = tokio::sync::broadcast::channel(FEED_CAPACITY);
        let flush_feed = feed.clone();
        let writer_feed = feed.clone();
        let flush_thread = std::thread::Builder::new()
            .name("sled-flusher".into())
            .spawn(move || flusher(flush_db, applied_rx, &flush_feed))
            .expect("spawn sled flusher");
        let thread = std::thread::Builder::new()
            .name("sled-writer".into())
            .spawn(move || {
                // Changes in the previous round: under load, wait a moment for more.
                let mut last_changes = 0;
                let mut last_checkpoint = Instant::now();
                loop {
                    let first = match rx.recv_timeout(checkpoint_every) {
                        Ok(r) => Some(r),
                        Err(RecvTimeoutError::Timeout) => None,
                        // The store closed: write everything back, then stop.
                        Err(RecvTimeoutError::Disconnected) => break,
                    };
                    if let Some(first) = first {
                        let mut requests = vec![first];
                        requests.extend(rx.try_iter().take(MAX_BATCH - 1));
                        if last_changes > 1 {
                            let until = Instant::now() + linger;
                            while requests.len() < MAX_BATCH {
                                match rx
                                    .recv_timeout(until.saturating_duration_since(Instant::now()))
                                {
                                    Ok(r) => requests.push(r),
                                    Err(_) => break,
                                }
                            }
                        }
                        last_changes = requests
                            .iter()
                            .filter(|r| matches!(r, Request::Commit { .. }))
                            .count();
                        let (jobs, requests): (Vec<Request>, Vec<Request>) = requests
                            .into_iter()
                            .partition(|r| matches!(r, Request::Exclusive(_)));
                        let applied = round(
                            &data,
                            &ids,
                            &index,
                            &caches,
                            &mut versions,
                            &mut last_segment,
                            requests,
                        );
                        if let Err(std::sync::mpsc::SendError(applied)) = applied_tx.send(applied) {
                            // The flusher is gone (it panicked): flush here.
                            let flushed = db.flush().map(|_| ()).map_err(io);
                            answer(applied.requests, applied.outcomes, &flushed, &writer_feed);
                        }
                        for job in jobs {
                            let Request::Exclusive(job) = job else {
                                continue;
                            };
                            checkpoint(&data, &caches, &mut versions);
                            job(Exclusive {
                                db: &db,
                                data: &data,
                                index: &index,
                                caches: &caches,
                                live: &mut versions,
                            });
                        }
                    }
                    if last_checkpoint.elapsed() >= checkpoint_every {
                        checkpoint(&data, &caches, &mut versions);
                        last_checkpoint = Instant::now();
                    }
                }
                drop(applied_tx);
                let _ = flush_thread.join();
                checkpoint(&data, &caches, &mut versions);
                if let Err(e) = db.flush() {
                    tracing::error!(error = %e, "final flush failed");
                }
            })
            .expect("spawn sled writer");
        Writer {
            inner: Arc::new(WriterInner {
                requests: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                feed,
            }),
        }
    }

    /// Committed events from now on, in id order.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.feed.subscribe()
    }

    fn send(&self, request: Request) -> bool {
        match &*self.inner.requests.lock().expect("writer lock") {
            Some(tx) => tx.send(request).is_ok(),
            None => false,
        }
    }

    pub fn commit(&self, change: Change) -> Commit {
        // Encoding happens here, on the caller's thread, in parallel with other callers.
        let change = Box::new(Prepared::new(change));
        let (reply, rx) = oneshot::channel();
        let sent = self.send(Request::Commit { change, reply });
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Io("store is closed".into()));
            }
            rx.await
                .map_err(|_| StoreError::Io("store writer stopped".into()))?
        })
    }

    pub fn sync(&self) -> Durable {
        let (reply, rx) = oneshot::channel();
        let sent = self.send(Request::Sync { reply });
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Io("store is closed".into()));
            }
            rx.await
                .map_err(|_| StoreError::Io("store writer stopped".into()))?
        })
    }

    /// A silent bot decision: the entry leaves the queue in the next round; nobody waits.
    pub fn bot_done(&self, conversation: ConversationId, seq: u64) {
        self.send(Request::BotDone(conversation, seq));
    }

    /// Runs `job` on the writer thread with every write held off, after everything sent
    /// before it has been applied.
    pub fn exclusive<T: Send + 'static>(
        &self,
        job: impl FnOnce(Exclusive<'_>) -> Result<T> + Send + 'static,
    ) -> super::super::Pending<T> {
        let (reply, rx) = oneshot::channel();
        let sent = self.send(Request::Exclusive(Box::new(move |x| {
            let _ = reply.send(job(x));
        })));
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Io("store is closed".into()));
            }
            rx.await
                .map_err(|_| StoreError::Io("store writer stopped".into()))?
        })
    }

    /// Finishes what is queued, stops the thread and releases its database handle.
    pub fn close(&self) {
        self.inner.requests.lock().expect("writer lock").take();
        if let Some(thread) = self.inner.thread.lock().expect("writer lock").take() {
            let _ = thread.join();
        }
    }
}

/// One round's requests with their outcomes, waiting for a flush to answer them.
struct Applied {
    requests: Vec<Request>,
    /// Per commit request, in order; `Err` for all when the batch failed.
    outcomes: Vec<Outcome>,
}

/// One round: apply all waiting changes as one batch; the flusher makes them durable and
/// answers everyone.
fn round(
    data: &Tree,
    ids: &Ids,
    index: &ConvIndex,
    caches: &Caches,
    versions: &mut LiveMap,
    last_segment: &mut u64,
    mut requests: Vec<Request>,
) -> Applied {
    let bot_done: Vec<(ConversationId, u64)> = requests
        .iter()
        .filter_map(|r| match r {
            Request::BotDone(conv, seq) => Some((*conv, *seq)),
            _ => None,
        })
        .collect();
    let mut prepared: Vec<&mut Prepared> = requests
        .iter_mut()
        .filter_map(|r| match r {
            Request::Commit { change, .. } => Some(&mut **change),
            _ => None,
        })
        .collect();
    let outcomes = if prepared.is_empty() && bot_done.is_empty() {
        Ok(Vec::new())
    } else {
        apply_batch(
            data,
            ids,
            versions,
            &caches.bot,
            &mut prepared,
            &bot_done,
            last_segment,
        )
        .map(|staged| {
            versions.extend(staged.versions);
            for (p, outcome) in prepared.iter().zip(&staged.outcomes) {
                match outcome {
                    Ok(()) => p.publish(index, caches),
                    Err(StoreError::Conflict(_)) => {
                        // The change may have been built on a stale cached copy: next read
                        // goes to the tree.
                        for write in &p.change.conversations {
                            caches.conversations.forget(&write.record.id);
                        }
                    }
                    Err(_) => {}
                }
            }
            let mut bot = caches.bot.lock().expect("bot queue lock");
            for (item, entry) in staged.bot {
                match entry {
                    Some(on_disk) => bot.insert(item, on_disk),
                    None => bot.remove(&item),
                };
            }
            staged.outcomes
        })
    };
    let changes = prepared.len();
    let outcomes = match outcomes {
        Ok(o) => o,
        Err(e) => vec![Err(e); changes],
    };
    Applied { requests, outcomes }
}

/// The flusher: takes every applied round waiting, flushes once, answers them all. It runs
/// beside the writer, so the next round is applied while this one's fsync is under way.
fn flusher(db: sled::Db, rounds: std::sync::mpsc::Receiver<Applied>, feed: &Feed) {
    while let Ok(first) = rounds.recv() {
        let mut ready = vec![first];
        ready.extend(rounds.try_iter());
        let flushed = db.flush().map(|_| ()).map_err(io);
        for Applied { requests, outcomes } in ready {
            answer(requests, outcomes, &flushed, feed);
        }
    }
}

/// Where committed events are announced, in the order of their ids (see [`Store::subscribe`]).
///
/// [`Store::subscribe`]: crate::store::Store::subscribe
pub(super) type Feed = tokio::sync::broadcast::Sender<Event>;

/// Answers a round's waiters once its flush is done, then announces the events of each change
/// that made it, in id order (rounds are answered in order, and so are their changes).
fn answer(requests: Vec<Request>, outcomes: Vec<Outcome>, flushed: &Result<()>, feed: &Feed) {
    let mut outcomes = outcomes.into_iter();
    let mut announce = Vec::new();
    for request in requests {
        match request {
            Request::Commit { change, reply } => {
                let outcome = outcomes
                    .next()
                    .unwrap_or(Err(StoreError::Io("lost outcome".into())));
                let answer = match (outcome, flushed) {
                    (Ok(()), Ok(())) => {
                        let events = change.change.events;
                        let committed = Committed {
                            events: events.iter().map(|e| e.id).collect(),
                        };
                        announce.extend(events);
                        Ok(committed)
                    }
                    (Ok(()), Err(e)) => Err(e.clone()),
                    (Err(e), _) => Err(e),
                };
                let _ = reply.send(answer);
            }
            Request::Sync { reply } => {
                let _ = reply.send(flushed.clone());
            }
            Request::BotDone(..) | Request::Exclusive(_) => {}
        }
    }
    for e in announce {
        // Nobody listening is fine.
        let _ = feed.send(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Actor, EventKind};

    #[test]
    fn an_event_encoded_without_its_id_gets_it_as_if_encoded_with_it() {
        let mut e = Event::new(
            Some(ConversationId(3)),
            Actor::Customer,
            1_700_000_000_000,
            EventKind::MessageReceived { seq: 9 },
        );
        let before = encode(&e);
        assert!(before.starts_with(UNASSIGNED_PREFIX));
        for id in [1, 42, u64::MAX] {
            e.id = EventId(id);
            assert_eq!(with_id(&before, &e), encode(&e));
        }
        // Not the expected start: encoded afresh.
        assert_eq!(with_id(b"{}", &e), encode(&e));
    }
}
