//! A store that keeps everything in memory: the contract and nothing else.
//!
//! It exists to prove the [`Store`] contract can be implemented from the traits alone (no
//! sled shapes leak through them), to run the contract suite against a second backend, and
//! for fast engine tests. It writes nothing to disk: a restart forgets everything, so the
//! daemon does not offer it.
//!
//! One lock holds the whole state; a commit checks every version and insert-if-absent key
//! before it writes anything, and gives its events their ids (positions in the log) under
//! the same lock, so ids follow commit order.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use switchboard_channel::{
    BlobId, ChannelId, ChannelState, ExternalMessageId, ExternalThread, ExternalUser, MemoryState,
};
use tokio::sync::broadcast;

use super::lease::{Holder, Work};
use super::records::{self, Bytes, Record, SpaceOwner};
use super::{
    Change, Commit, Committed, ConversationQuery, Cursor, Durable, Erased, Order, Page, Pending,
    Result, Store, StoreError, StoreStats,
};
use crate::model::{
    Agent, AgentId, Contact, ContactId, Conversation, ConversationId, Event, EventId, Message,
    Note, NoteId, OutboxItem, Status,
};

/// Committed events a slow subscriber may fall behind by before it is told it lagged.
const FEED_CAPACITY: usize = 4096;

/// Everything, in memory.
pub struct MemoryStore {
    state: Mutex<State>,
    feed: broadcast::Sender<Event>,
    leases: super::lease::Leases,
}

#[derive(Default)]
struct State {
    next_id: u64,
    conversations: BTreeMap<ConversationId, Conversation>,
    contacts: BTreeMap<ContactId, Contact>,
    identities: BTreeMap<(ChannelId, ExternalUser), ContactId>,
    threads: BTreeMap<(ChannelId, ExternalThread), ConversationId>,
    external_ids: BTreeMap<(ChannelId, ExternalMessageId), (ConversationId, u64)>,
    messages: BTreeMap<(ConversationId, u64), Message>,
    notes: BTreeMap<(ConversationId, NoteId), Note>,
    /// The log, in id order.
    events: BTreeMap<EventId, Event>,
    outbox: BTreeMap<(ConversationId, u64), OutboxItem>,
    bot_queue: BTreeSet<(ConversationId, u64)>,
    failed: BTreeSet<(ConversationId, u64)>,
    agents: BTreeMap<AgentId, Agent>,
    meta: BTreeMap<String, Vec<u8>>,
    /// Private spaces by owner and name.
    spaces: BTreeMap<(SpaceOwner, String), Arc<MemoryState>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            state: Mutex::default(),
            feed: broadcast::channel(FEED_CAPACITY).0,
            leases: Default::default(),
        }
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic under the lock leaves no half-applied change (see `apply`): go on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn space(&self, owner: SpaceOwner, name: &str) -> Arc<MemoryState> {
        self.state()
            .spaces
            .entry((owner, name.to_owned()))
            .or_default()
            .clone()
    }
}

impl State {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Refuses the change as the contract says, writing nothing.
    fn check(&self, c: &Change) -> Result<()> {
        let mut claimed = HashSet::new();
        for (channel, id, ..) in &c.new_external_ids {
            let key = (channel.clone(), id.clone());
            if self.external_ids.contains_key(&key) || !claimed.insert(format!("x{key:?}")) {
                return Err(StoreError::Exists("message id"));
            }
        }
        for (channel, thread, _) in &c.new_threads {
            let key = (channel.clone(), thread.clone());
            if self.threads.contains_key(&key) || !claimed.insert(format!("t{key:?}")) {
                return Err(StoreError::Exists("thread"));
            }
        }
        for (channel, user, _) in &c.new_identities {
            let key = (channel.clone(), user.clone());
            if self.identities.contains_key(&key) || !claimed.insert(format!("i{key:?}")) {
                return Err(StoreError::Exists("identity"));
            }
        }
        for w in &c.conversations {
            let stored = self.conversations.get(&w.record.id).map(|r| r.version);
            if stored != w.previous.as_ref().map(|p| p.version) {
                return Err(StoreError::Conflict("conversation"));
            }
        }
        Ok(())
    }

    /// Applies a checked change; returns its events with their ids.
    fn apply(&mut self, c: Change) -> Vec<Event> {
        for (channel, id, conv, seq) in c.new_external_ids {
            self.external_ids.insert((channel, id), (conv, seq));
        }
        for (channel, thread, conv) in c.new_threads {
            self.threads.insert((channel, thread), conv);
        }
        for (channel, user, contact) in c.new_identities.into_iter().chain(c.moved_identities) {
            self.identities.insert((channel, user), contact);
        }
        for w in c.conversations {
            let mut record = w.record;
            record.version = match (&w.previous, w.restored) {
                (Some(p), _) => p.version + 1,
                (None, true) => record.version,
                (None, false) => 1,
            };
            self.conversations.insert(record.id, record);
        }
        for contact in c.contacts {
            self.contacts.insert(contact.id, contact);
        }
        for m in c.messages {
            self.messages.insert((m.conversation, m.seq), m);
        }
        for n in c.notes {
            self.notes.insert((n.conversation, n.id), n);
        }
        let mut events = Vec::with_capacity(c.events.len());
        for mut e in c.events {
            if e.id == EventId::UNASSIGNED {
                e.id = EventId(self.id());
            }
            self.next_id = self.next_id.max(e.id.0);
            self.events.insert(e.id, e.clone());
            events.push(e);
        }
        for item in c.outbox_put {
            self.outbox.insert((item.conversation, item.seq), item);
        }
        for key in c.outbox_remove {
            self.outbox.remove(&key);
        }
        self.bot_queue.extend(c.bot_queue_put);
        for key in c.bot_queue_remove {
            self.bot_queue.remove(&key);
        }
        self.failed.extend(c.failed_put);
        for key in c.failed_remove {
            self.failed.remove(&key);
        }
        for agent in c.agents {
            self.agents.insert(agent.id, agent);
        }
        events
    }

    /// Removes one conversation and everything under it; returns the files its messages
    /// held.
    fn erase_conversation(&mut self, c: &Conversation, out: &mut Erased) -> HashSet<BlobId> {
        let mut blobs = HashSet::new();
        let id = c.id;
        self.conversations.remove(&id);
        self.threads.remove(&(c.channel.clone(), c.thread.clone()));
        let seqs: Vec<u64> = self
            .messages
            .range((id, 0)..=(id, u64::MAX))
            .map(|(k, _)| k.1)
            .collect();
        for seq in seqs {
            let Some(m) = self.messages.remove(&(id, seq)) else {
                continue;
            };
            let network_ids = m
                .external_id
                .iter()
                .chain(m.delivery.as_ref().and_then(|d| d.external_id.as_ref()));
            for ext in network_ids {
                self.external_ids.remove(&(c.channel.clone(), ext.clone()));
            }
            blobs.extend(m.attachments.iter().filter_map(|a| a.blob.clone()));
            out.messages += 1;
        }
        let before = self.notes.len();
        self.notes.retain(|k, _| k.0 != id);
        out.notes += (before - self.notes.len()) as u64;
        self.outbox.retain(|k, _| k.0 != id);
        self.bot_queue.retain(|k| k.0 != id);
        self.failed.retain(|k| k.0 != id);
        self.events
            .retain(|_, e| e.conversation != Some(id) || !e.kind.in_conversation_log());
        out.conversations.push(id);
        blobs
    }
}

/// Whether `c` comes after `cursor` in `order`.
fn after(c: &Conversation, cursor: &Cursor, order: Order) -> bool {
    let key = (c.updated_at_ms, c.id);
    let at = (cursor.updated_ms, cursor.id);
    match order {
        Order::NewestFirst => key < at,
        Order::OldestFirst => key > at,
    }
}

fn ready<T: Send + 'static>(value: Result<T>) -> Pending<T> {
    Box::pin(async move { value })
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    fn commit(&self, change: Change) -> Commit {
        let mut st = self.state();
        let result = st.check(&change).map(|()| {
            let events = st.apply(change);
            let committed = Committed {
                events: events.iter().map(|e| e.id).collect(),
            };
            // Announced under the lock, so in id order. Nobody listening is fine.
            for e in events {
                let _ = self.feed.send(e);
            }
            committed
        });
        Box::pin(std::future::ready(result))
    }

    fn durable(&self) -> Durable {
        Box::pin(std::future::ready(Ok(())))
    }

    async fn next_id(&self) -> Result<u64> {
        Ok(self.state().id())
    }

    async fn conversation(&self, id: ConversationId) -> Result<Option<Conversation>> {
        Ok(self.state().conversations.get(&id).cloned())
    }

    async fn thread(
        &self,
        channel: &ChannelId,
        thread: &ExternalThread,
    ) -> Result<Option<ConversationId>> {
        let key = (channel.clone(), thread.clone());
        Ok(self.state().threads.get(&key).copied())
    }

    async fn identity(
        &self,
        channel: &ChannelId,
        user: &ExternalUser,
    ) -> Result<Option<ContactId>> {
        let key = (channel.clone(), user.clone());
        Ok(self.state().identities.get(&key).copied())
    }

    async fn external_message(
        &self,
        channel: &ChannelId,
        id: &ExternalMessageId,
    ) -> Result<Option<(ConversationId, u64)>> {
        let key = (channel.clone(), id.clone());
        Ok(self.state().external_ids.get(&key).copied())
    }

    async fn contact(&self, id: ContactId) -> Result<Option<Contact>> {
        Ok(self.state().contacts.get(&id).cloned())
    }

    async fn message(&self, conversation: ConversationId, seq: u64) -> Result<Option<Message>> {
        Ok(self.state().messages.get(&(conversation, seq)).cloned())
    }

    async fn agent(&self, id: AgentId) -> Result<Option<Agent>> {
        Ok(self.state().agents.get(&id).cloned())
    }

    async fn agent_by_token_hash(&self, hash: &str) -> Result<Option<Agent>> {
        Ok(self
            .state()
            .agents
            .values()
            .find(|a| !hash.is_empty() && a.token_hash == hash)
            .cloned())
    }

    async fn list_conversations(&self, query: &ConversationQuery) -> Result<Page> {
        let st = self.state();
        let mut rows: Vec<&Conversation> = st
            .conversations
            .values()
            .filter(|c| query.status.is_none_or(|s| c.status == s))
            .filter(|c| query.assignee.is_none_or(|a| c.assignee == Some(a)))
            .filter(|c| query.channel.as_ref().is_none_or(|ch| *ch == c.channel))
            .filter(|c| query.label.as_ref().is_none_or(|l| c.labels.contains(l)))
            .filter(|c| query.after.is_none_or(|cur| after(c, &cur, query.order)))
            .collect();
        rows.sort_by_key(|c| (c.updated_at_ms, c.id));
        if query.order == Order::NewestFirst {
            rows.reverse();
        }
        let limit = query.limit.max(1);
        let more = rows.len() > limit;
        let items: Vec<Conversation> = rows.into_iter().take(limit).cloned().collect();
        let next = more.then(|| items.last()).flatten().map(|c| Cursor {
            updated_ms: c.updated_at_ms,
            id: c.id,
        });
        Ok(Page { items, next })
    }

    async fn status_counts(&self) -> Result<[u64; 5]> {
        let mut counts = [0; 5];
        for c in self.state().conversations.values() {
            counts[c.status as usize] += 1;
        }
        Ok(counts)
    }

    async fn contact_conversations(&self, contact: ContactId) -> Result<Vec<ConversationId>> {
        Ok(self
            .state()
            .conversations
            .values()
            .filter(|c| c.contact == contact)
            .map(|c| c.id)
            .collect())
    }

    async fn messages(
        &self,
        conversation: ConversationId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Message>> {
        let from = (conversation, after_seq.saturating_add(1));
        Ok(self
            .state()
            .messages
            .range(from..=(conversation, u64::MAX))
            .take(limit)
            .map(|(_, m)| m.clone())
            .collect())
    }

    async fn notes(&self, conversation: ConversationId) -> Result<Vec<Note>> {
        Ok(self
            .state()
            .notes
            .range((conversation, NoteId(0))..=(conversation, NoteId(u64::MAX)))
            .map(|(_, n)| n.clone())
            .collect())
    }

    async fn agents(&self) -> Result<Vec<Agent>> {
        Ok(self.state().agents.values().cloned().collect())
    }

    async fn failed_deliveries(&self, limit: usize) -> Result<Vec<(ConversationId, u64)>> {
        Ok(self.state().failed.iter().take(limit).copied().collect())
    }

    async fn events(&self, after: Option<EventId>, limit: usize) -> Result<Vec<Event>> {
        let from = EventId(after.map_or(0, |a| a.0).saturating_add(1));
        Ok(self
            .state()
            .events
            .range(from..)
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect())
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.feed.subscribe()
    }

    async fn conversation_events(&self, conversation: ConversationId) -> Result<Vec<Event>> {
        Ok(self
            .state()
            .events
            .values()
            .filter(|e| e.conversation == Some(conversation) && e.kind.in_conversation_log())
            .cloned()
            .collect())
    }

    async fn outbox_conversations(&self) -> Result<Vec<ConversationId>> {
        let mut out: Vec<ConversationId> = self.state().outbox.keys().map(|k| k.0).collect();
        out.dedup();
        Ok(out)
    }

    async fn claim_outbox_head(
        &self,
        conversation: ConversationId,
        holder: Holder,
        lease: Duration,
    ) -> Result<Option<OutboxItem>> {
        let st = self.state();
        let head = st
            .outbox
            .range((conversation, 0)..=(conversation, u64::MAX))
            .next()
            .map(|(_, item)| item.clone());
        Ok(head.filter(|_| self.leases.take(Work::Outbox(conversation), holder, lease)))
    }

    async fn bot_queue(
        &self,
        after: Option<(ConversationId, u64)>,
        limit: usize,
    ) -> Result<Vec<(ConversationId, u64)>> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(self
            .state()
            .bot_queue
            .range((start, Bound::Unbounded))
            .take(limit)
            .copied()
            .collect())
    }

    async fn claim_bot(
        &self,
        conversation: ConversationId,
        seq: u64,
        holder: Holder,
        lease: Duration,
    ) -> Result<bool> {
        let st = self.state();
        Ok(st.bot_queue.contains(&(conversation, seq))
            && self
                .leases
                .take(Work::Bot(conversation, seq), holder, lease))
    }

    fn bot_done(&self, conversation: ConversationId, seq: u64) {
        self.state().bot_queue.remove(&(conversation, seq));
    }

    async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.state().meta.get(key).cloned())
    }

    async fn set_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.state().meta.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    async fn channel_state(&self, channel: &ChannelId) -> Result<Arc<dyn ChannelState>> {
        Ok(self.space(SpaceOwner::Channel, channel.as_str()))
    }

    async fn kv(&self, space: &str) -> Result<Arc<dyn ChannelState>> {
        Ok(self.space(SpaceOwner::Daemon, space))
    }

    fn erase_contact(&self, contact: ContactId, at_ms: i64) -> Pending<Erased> {
        let mut st = self.state();
        let Some(main) = st.contacts.get(&contact).cloned() else {
            return ready(Ok(Erased::default()));
        };
        let family: Vec<Contact> = std::iter::once(main)
            .chain(
                st.contacts
                    .values()
                    .filter(|c| c.merged_into == Some(contact))
                    .cloned(),
            )
            .collect();
        let ids: HashSet<ContactId> = family.iter().map(|c| c.id).collect();
        st.identities.retain(|_, c| !ids.contains(c));
        let mut out = Erased::default();
        let mut blobs = HashSet::new();
        let gone: Vec<Conversation> = st
            .conversations
            .values()
            .filter(|c| ids.contains(&c.contact))
            .cloned()
            .collect();
        for c in &gone {
            blobs.extend(st.erase_conversation(c, &mut out));
        }
        for c in &family {
            st.contacts.insert(c.id, c.tombstone(at_ms));
            out.contacts.push(c.id);
        }
        // Files other messages still use stay.
        let used: HashSet<&BlobId> = st
            .messages
            .values()
            .flat_map(|m| m.attachments.iter().filter_map(|a| a.blob.as_ref()))
            .collect();
        out.orphan_blobs = blobs.into_iter().filter(|b| !used.contains(b)).collect();
        ready(Ok(out))
    }

    async fn records(&self, visit: &mut (dyn FnMut(Record) -> Result<()> + Send)) -> Result<()> {
        let all =
            {
                let mut st = self.state();
                let next_id = st.id();
                let mut all = vec![Record::Header {
                    format: records::FORMAT.into(),
                    version: records::FORMAT_VERSION,
                    schema: 0,
                    exported_at_ms: switchboard_channel::now_ms(),
                    next_id,
                }];
                all.extend(st.agents.values().map(|a| {
                    let mut record = a.clone();
                    record.token_hash.clear();
                    Record::Agent { record }
                }));
                all.extend(
                    st.contacts
                        .values()
                        .map(|c| Record::Contact { record: c.clone() }),
                );
                all.extend(st.identities.iter().map(|((channel, user), contact)| {
                    Record::Identity {
                        channel: channel.clone(),
                        user: user.clone(),
                        contact: *contact,
                    }
                }));
                all.extend(
                    st.conversations
                        .values()
                        .map(|c| Record::Conversation { record: c.clone() }),
                );
                all.extend(
                    st.threads
                        .iter()
                        .map(|((channel, thread), conv)| Record::Thread {
                            channel: channel.clone(),
                            thread: thread.clone(),
                            conversation: *conv,
                        }),
                );
                all.extend(
                    st.messages
                        .values()
                        .map(|m| Record::Message { record: m.clone() }),
                );
                all.extend(st.external_ids.iter().map(|((channel, id), (conv, seq))| {
                    Record::ExternalId {
                        channel: channel.clone(),
                        id: id.clone(),
                        conversation: *conv,
                        seq: *seq,
                    }
                }));
                all.extend(
                    st.notes
                        .values()
                        .map(|n| Record::Note { record: n.clone() }),
                );
                all.extend(
                    st.events
                        .values()
                        .map(|e| Record::Event { record: e.clone() }),
                );
                all.extend(
                    st.outbox
                        .values()
                        .map(|o| Record::Outbox { record: o.clone() }),
                );
                all.extend(
                    st.bot_queue
                        .iter()
                        .map(|&(conversation, seq)| Record::BotQueue { conversation, seq }),
                );
                all.extend(
                    st.failed
                        .iter()
                        .map(|&(conversation, seq)| Record::Failed { conversation, seq }),
                );
                let spaces: Vec<_> = st
                    .spaces
                    .iter()
                    .filter(|((owner, name), _)| {
                        !(*owner == SpaceOwner::Daemon
                            && records::SECRET_SPACES.contains(&name.as_str()))
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for ((owner, space), state) in spaces {
                    for (key, value) in state.pairs() {
                        all.push(Record::State {
                            owner: owner.clone(),
                            space: space.clone(),
                            key: Bytes::new(&key),
                            value: Bytes::new(&value),
                        });
                    }
                }
                all.extend(
                    st.meta
                        .iter()
                        .filter(|(k, _)| !records::PRIVATE_META.contains(&k.as_str()))
                        .map(|(k, v)| Record::Meta {
                            key: k.clone(),
                            value: Bytes::new(v),
                        }),
                );
                all
            };
        for r in all {
            visit(r)?;
        }
        Ok(())
    }

    fn restore(&self, records: Vec<Record>) -> Pending<()> {
        let restored = match records::restored(records) {
            Ok(r) => r,
            Err(e) => return ready(Err(e)),
        };
        for (owner, space, key, value) in &restored.spaces {
            self.space(owner.clone(), space).insert(key, value);
        }
        let commit = {
            let mut st = self.state();
            st.next_id = st.next_id.max(restored.floor);
            st.meta.extend(restored.meta);
            drop(st);
            self.commit(restored.change)
        };
        Box::pin(async move { commit.await.map(|_| ()) })
    }

    async fn stats(&self) -> Result<StoreStats> {
        let st = self.state();
        let mut stats = StoreStats::default();
        let counts = [
            ("conversations", st.conversations.len()),
            ("messages", st.messages.len()),
            ("external_ids", st.external_ids.len()),
            ("threads", st.threads.len()),
            ("contacts", st.contacts.len()),
            ("identities", st.identities.len()),
            ("notes", st.notes.len()),
            ("events", st.events.len()),
            ("outbox", st.outbox.len()),
            ("bot_queue", st.bot_queue.len()),
            ("agents", st.agents.len()),
            ("failed", st.failed.len()),
        ];
        for (name, n) in counts {
            stats.records.insert(name.to_owned(), n as u64);
        }
        let mut statuses = [0u64; 5];
        for c in st.conversations.values() {
            statuses[c.status as usize] += 1;
        }
        for (status, n) in Status::ALL.iter().zip(statuses) {
            stats.statuses.insert(status.as_str().to_owned(), n);
        }
        for ((owner, name), space) in &st.spaces {
            let prefix = match owner {
                SpaceOwner::Channel => "channel/",
                SpaceOwner::Daemon => "kv/",
            };
            stats
                .spaces
                .insert(format!("{prefix}{name}"), space.pairs().len() as u64);
        }
        Ok(stats)
    }
}
