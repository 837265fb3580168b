//! The conversation engine: turns inbound events and agent actions into state changes.
//!
//! - Every change is built as a [`draft::Draft`] (pure), applied to the store as one
//!   transaction, made durable, and only then announced: events go to subscribers (SSE), new
//!   replies wake the [`outbox`], new customer messages go to the [`bot_worker`].
//! - Writes are optimistic: a conversation changed by someone else in between is re-read and
//!   the change rebuilt (bounded retries).
//! - The engine knows channels only through the `Channel` trait; it never touches a network.
//! - [`router`] is the loop that applies routing's policy (`crate::routing`): presence,
//!   SLA marks, assignment.

mod agents;
pub use agents::{MIN_TOKEN_LEN, TOKEN_PREFIX};
pub(crate) mod bot_worker;
mod canned;
mod erase;
pub use canned::CannedResponse;
pub(crate) mod draft;
pub mod outbox;
mod plan;
mod presence;
pub use presence::{AttachGuard, Attachments};
pub mod router;
mod search;
mod sla;
pub use sla::SlaMark;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use switchboard_channel::{
    Accepted, Attachment, Channel, ChannelId, InboundEdit, InboundError, InboundEvent,
    InboundMessage, now_ms,
};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::bot::Responder;
use crate::model::availability::{AlwaysStaffed, Availability, Topic};
use crate::model::lang::Localized;
use crate::model::{
    Action, Actor, AgentId, Author, Contact, ContactId, Conversation, ConversationId, Event,
    EventId, EventKind, Identity, Message, Note, NoteId, Priority, Status, TransitionError,
};
use crate::store::{Change, ConversationWrite, Store, StoreError};
use draft::{Draft, DraftError, Reply};
use outbox::OutboxConfig;

/// How often a write that lost a race is rebuilt before giving up.
const MAX_RETRIES: usize = 32;
/// Conversation lanes (see `Engine::lane`).
const LANES: usize = 8192;
/// Longest label, and most labels on one conversation.
const MAX_LABEL_CHARS: usize = 64;
const MAX_LABELS: usize = 32;
/// Longest agent reply or note, in bytes: as for customers' messages.
pub use switchboard_channel::MAX_TEXT_BYTES;
/// Most files on one agent reply.
pub const MAX_ATTACHMENTS: usize = 10;
/// How many of a conversation's newest messages an agent reply's idempotency key is looked
/// up among: a client retries within seconds, long before this many messages follow.
pub const IDEMPOTENCY_WINDOW: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("{0}")]
    Invalid(String),
    /// Valid on its own, but clashes with what is stored (a name already taken).
    #[error("{0}")]
    Conflict(String),
    #[error("too many concurrent changes to the same conversation; try again")]
    Busy,
    #[error("{0}")]
    DiskFull(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<DraftError> for EngineError {
    fn from(e: DraftError) -> Self {
        match e {
            DraftError::Transition(t) => EngineError::Transition(t),
            DraftError::Store(s) => EngineError::Store(s),
        }
    }
}

/// A customer message for the bot; the message itself when it was at hand (else it is read).
pub(crate) struct BotWork {
    pub conv: ConversationId,
    pub seq: u64,
    pub message: Option<Message>,
}

/// Settings the engine takes from the config.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Said to the customer when the bot hands over.
    pub handoff_message: Localized,
    /// Said when a customer opens a conversation on purpose (Telegram `/start`).
    pub welcome_message: String,
    /// Said instead when nobody is on shift; `{when}` becomes the next shift's start.
    pub offhours_message: Localized,
    /// Said instead of `handoff_message` once recent waits are known (`{position}`,
    /// `{wait_minutes}`), with `long_wait_message` added from `long_wait_minutes` on.
    pub handoff_wait_message: Localized,
    pub long_wait_minutes: u64,
    pub long_wait_message: Localized,
    pub outbox: OutboxConfig,
    /// Parallel bot workers; a conversation always goes to the same one (ordering).
    pub bot_workers: usize,
}

pub struct Engine {
    store: Arc<dyn Store>,
    responder: RwLock<Arc<dyn Responder>>,
    availability: RwLock<Arc<dyn Availability>>,
    channels: RwLock<HashMap<ChannelId, Arc<dyn Channel>>>,
    settings: RwLock<Arc<EngineSettings>>,
    events: broadcast::Sender<Event>,
    bot_shards: Vec<mpsc::UnboundedSender<BotWork>>,
    /// Taken by `start`.
    bot_inboxes: Mutex<Option<Vec<mpsc::UnboundedReceiver<BotWork>>>>,
    /// Bot work sent to workers and not yet done (backpressure for the backlog feeder).
    bot_outstanding: std::sync::atomic::AtomicUsize,
    /// Per-conversation serialisation (see `lane`).
    lanes: Vec<tokio::sync::Mutex<()>>,
    outbox: outbox::Outbox,
    /// Key of the keyed hash under which API tokens are stored.
    token_key: Vec<u8>,
    metrics: Arc<crate::metrics::Metrics>,
    attachments: Arc<Attachments>,
    /// Service-level targets, when configured.
    sla: RwLock<Option<Arc<crate::routing::sla::SlaConfig>>>,
    /// How long customers waited for a person's first reply, lately.
    recent_waits: RecentWaits,
}

/// The hand-over with a place in line and an expected wait (rounded up to whole minutes),
/// plus the long-wait offer from `long_wait_minutes` on.
fn handoff_text(settings: &EngineSettings, language: &str, position: u64, wait_ms: i64) -> String {
    let minutes = (wait_ms.max(0) as u64).div_ceil(60_000).max(1);
    let mut text = settings
        .handoff_wait_message
        .pick(language)
        .replace("{position}", &position.to_string())
        .replace("{wait_minutes}", &minutes.to_string());
    if minutes >= settings.long_wait_minutes {
        text.push_str("\n\n");
        text.push_str(settings.long_wait_message.pick(language));
    }
    text
}

#[cfg(test)]
mod handoff_tests {
    use super::*;

    #[test]
    fn waits_round_up_and_long_ones_offer_another_way() {
        let settings = EngineSettings {
            handoff_message: "".into(),
            welcome_message: String::new(),
            offhours_message: "".into(),
            handoff_wait_message: Localized::PerLanguage {
                en: "#{position}, {wait_minutes} min".into(),
                zh: "第 {position} 位，约 {wait_minutes} 分钟".into(),
            },
            long_wait_minutes: 30,
            long_wait_message: "leave your email".into(),
            outbox: OutboxConfig::default(),
            bot_workers: 1,
        };
        assert_eq!(handoff_text(&settings, "en", 3, 5_000), "#3, 1 min");
        assert_eq!(
            handoff_text(&settings, "zh", 1, 120_001),
            "第 1 位，约 3 分钟"
        );
        assert_eq!(
            handoff_text(&settings, "en", 12, 29 * 60_000 + 1),
            "#12, 30 min\n\nleave your email"
        );
    }
}

/// The last few first-response waits, for what customers are told on hand-over.
#[derive(Default)]
struct RecentWaits(Mutex<std::collections::VecDeque<i64>>);

impl RecentWaits {
    const KEEP: usize = 20;
    /// Fewer samples than this say nothing reliable.
    const ENOUGH: usize = 3;

    fn record(&self, ms: i64) {
        let mut w = self.0.lock().expect("waits lock");
        if w.len() == Self::KEEP {
            w.pop_front();
        }
        w.push_back(ms);
    }

    /// The average of the recent waits, in ms.
    fn expected(&self) -> Option<i64> {
        let w = self.0.lock().expect("waits lock");
        (w.len() >= Self::ENOUGH).then(|| w.iter().sum::<i64>() / w.len() as i64)
    }
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        responder: Arc<dyn Responder>,
        settings: EngineSettings,
    ) -> Result<Arc<Engine>, EngineError> {
        let token_key = agents::load_or_create_key(store.as_ref())?;
        let (events, _) = broadcast::channel(4096);
        let workers = settings.bot_workers.max(1);
        let (bot_shards, inboxes) = (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        Ok(Arc::new(Engine {
            store,
            responder: RwLock::new(responder),
            availability: RwLock::new(Arc::new(AlwaysStaffed)),
            channels: RwLock::new(HashMap::new()),
            outbox: outbox::Outbox::new(settings.outbox.clone()),
            settings: RwLock::new(Arc::new(settings)),
            events,
            bot_shards,
            bot_inboxes: Mutex::new(Some(inboxes)),
            bot_outstanding: Default::default(),
            lanes: (0..LANES).map(|_| tokio::sync::Mutex::new(())).collect(),
            token_key,
            metrics: Default::default(),
            attachments: Default::default(),
            sla: RwLock::new(None),
            recent_waits: Default::default(),
        }))
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    pub fn register_channel(&self, channel: Arc<dyn Channel>) {
        self.channels
            .write()
            .expect("channels lock")
            .insert(channel.id().clone(), channel);
    }

    pub fn channel(&self, id: &ChannelId) -> Option<Arc<dyn Channel>> {
        self.channels
            .read()
            .expect("channels lock")
            .get(id)
            .cloned()
    }

    /// Every registered channel.
    pub fn channels(&self) -> Vec<Arc<dyn Channel>> {
        let channels = self.channels.read().expect("channels lock");
        channels.values().cloned().collect()
    }

    fn settings(&self) -> Arc<EngineSettings> {
        self.settings.read().expect("settings lock").clone()
    }

    /// Replaces the bot's texts and the like (a config reload). The outbox keeps the retry
    /// policy it started with.
    pub fn set_settings(&self, settings: EngineSettings) {
        *self.settings.write().expect("settings lock") = Arc::new(settings);
    }

    pub fn set_availability(&self, availability: Arc<dyn Availability>) {
        *self.availability.write().expect("availability lock") = availability;
    }

    /// Tags of the knowledge-base entry the bot answered last (routing by topic).
    pub fn topic_tags(&self, conv: &Conversation) -> Vec<String> {
        conv.bot_last_entry
            .as_deref()
            .map(|e| self.responder().entry_tags(e))
            .unwrap_or_default()
    }

    /// Teams with their own hours, and when each opens next if closed now.
    pub fn team_openings(&self, now_ms: i64) -> Vec<(String, Option<String>)> {
        let availability = self.availability.read().expect("availability lock").clone();
        availability.team_openings(now_ms)
    }

    /// `None` when people are at work at `now_ms`; otherwise when they are next, in words.
    pub fn next_shift(&self, now_ms: i64) -> Option<String> {
        let availability = self.availability.read().expect("availability lock").clone();
        availability.next_shift(now_ms)
    }

    /// What the customer is told when the bot hands over: off hours, when people are back;
    /// otherwise their place in the queue and the recent wait, once waits are known.
    /// `language` (`en`, `zh`) picks among per-language texts.
    pub fn handoff_message(&self, now_ms: i64, conv: &Conversation, language: &str) -> String {
        let availability = self.availability.read().expect("availability lock").clone();
        let tags = self.topic_tags(conv);
        let topic = Topic {
            language,
            tags: &tags,
        };
        if let Some(when) = availability.next_shift_for(now_ms, conv, topic) {
            return self
                .settings()
                .offhours_message
                .pick(language)
                .replace("{when}", &when);
        }
        let Some(wait_ms) = self.recent_waits.expected() else {
            return self.settings().handoff_message.pick(language).to_owned();
        };
        let position = self.store.status_counts()[Status::Queued as usize] + 1;
        handoff_text(&self.settings(), language, position, wait_ms)
    }

    pub fn responder(&self) -> Arc<dyn Responder> {
        self.responder.read().expect("responder lock").clone()
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

    pub fn set_responder(&self, responder: Arc<dyn Responder>) {
        *self.responder.write().expect("responder lock") = responder;
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Starts the bot workers and the outbox; they stop when `shutdown` fires. Pending work
    /// left from a previous run (bot queue, outbox) is picked up.
    pub fn start(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, EngineError> {
        let inboxes = self
            .bot_inboxes
            .lock()
            .expect("bot inboxes lock")
            .take()
            .expect("engine started twice");
        let mut tasks = Vec::new();
        for inbox in inboxes {
            tasks.push(tokio::spawn(bot_worker::run(
                self.clone(),
                inbox,
                shutdown.clone(),
            )));
        }
        tasks.push(tokio::spawn(bot_worker::feed_backlog(
            self.clone(),
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(outbox::run(self.clone(), shutdown.clone())));
        tasks.push(tokio::spawn(wake_snoozed(self.clone(), shutdown)));
        Ok(tasks)
    }

    /// The lane of a conversation, named by its channel and thread (known before the
    /// conversation exists). Changes to one conversation take its lane in turn: a burst of
    /// messages or an agent acting during one is serialised instead of colliding on the
    /// optimistic version check. Lanes are shared by hash; unrelated conversations on the same
    /// lane only wait for each other's commit.
    fn lane(
        &self,
        channel: &ChannelId,
        thread: &switchboard_channel::ExternalThread,
    ) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (channel, thread).hash(&mut h);
        &self.lanes[(h.finish() as usize) % self.lanes.len()]
    }

    /// Customer messages handed to the bot workers and not decided yet.
    pub fn bot_backlog(&self) -> usize {
        self.bot_outstanding
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Hands a customer message to its bot worker; `message` when the caller has it at hand.
    fn enqueue_bot(&self, conv: ConversationId, seq: u64, message: Option<Message>) {
        let shard = (conv.0 as usize) % self.bot_shards.len();
        self.bot_outstanding
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self.bot_shards[shard].send(BotWork { conv, seq, message });
    }

    /// Commits a change (applied and durable), then tells everyone who waits for it.
    async fn commit(&self, change: Change) -> Result<(), StoreError> {
        let mut change = self.store.commit(change).await?;
        let mut messages = std::mem::take(&mut change.messages);
        for &(conv, seq) in &change.bot_queue_put {
            let message = messages
                .iter()
                .position(|m| m.conversation == conv && m.seq == seq)
                .map(|i| messages.swap_remove(i));
            self.enqueue_bot(conv, seq, message);
        }
        for item in &change.outbox_put {
            self.outbox.wake(item.conversation);
        }
        for e in change.events {
            let _ = self.events.send(e);
        }
        Ok(())
    }

    /// Loads a conversation, lets `build` change it, and commits, retrying lost races.
    /// A build that adds nothing to the change (no event, message, queue entry...) writes
    /// nothing, whatever it did to the conversation record.
    pub(crate) async fn update<T>(
        &self,
        id: ConversationId,
        actor: Actor,
        mut build: impl FnMut(&mut Draft<'_>) -> Result<T, EngineError>,
    ) -> Result<(Conversation, T), EngineError> {
        let first = self
            .store
            .conversation(id)?
            .ok_or(EngineError::NotFound("conversation"))?;
        // One change at a time per conversation (see `lane`); retries remain for the rare
        // writer outside the lane (merging contacts).
        let _lane = self.lane(&first.channel, &first.thread).lock().await;
        for _ in 0..MAX_RETRIES {
            let conv = self
                .store
                .conversation(id)?
                .ok_or(EngineError::NotFound("conversation"))?;
            let mut draft = Draft::new(self.store.as_ref(), conv, false, actor.clone(), now_ms());
            let out = build(&mut draft)?;
            if draft.change.is_empty() {
                return Ok((draft.conv, out));
            }
            self.clock_sla(&mut draft);
            let (change, mut conv) = draft.finish();
            match self.commit(change).await {
                Ok(()) => {
                    conv.version += 1;
                    return Ok((conv, out));
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Busy)
    }

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
            .map_err(|e| unavailable(e.into()))?
        {
            return self.duplicate(channel).await;
        }
        for _ in 0..MAX_RETRIES {
            let outcome = match self.prepare_ingest(channel, &msg, start) {
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
    fn stored_before_ids_were_scoped(
        &self,
        channel: &ChannelId,
        msg: &InboundMessage,
    ) -> Result<bool, StoreError> {
        let Some(earlier) = &msg.earlier_id else {
            return Ok(false);
        };
        let Some((conv, _)) = self.store.external_message(channel, earlier)? else {
            return Ok(false);
        };
        Ok(self.store.thread(channel, &msg.thread)? == Some(conv))
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
            .update(conv, Actor::System, |d| {
                let Some(mut message) = self.store.message(d.conv.id, seq)? else {
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
                })?;
                Ok(true)
            })
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
            .map_err(|e| unavailable(e.into()))?
        else {
            return Ok(Accepted::Duplicate);
        };
        let result = self
            .update(conv, Actor::Customer, |d| {
                let Some(mut message) = self.store.message(d.conv.id, seq)? else {
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
                d.event(event)?;
                Ok(true)
            })
            .await;
        match result {
            Ok((_, true)) => Ok(Accepted::Stored),
            Ok((_, false)) => Ok(Accepted::Duplicate),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Builds the change that stores `msg`.
    fn prepare_ingest(
        &self,
        channel: &ChannelId,
        msg: &InboundMessage,
        start: bool,
    ) -> Result<Change, EngineError> {
        let store = self.store.as_ref();
        // Duplicates are caught when the change commits (the message id is an
        // insert-if-absent key), which saves a read on every message.
        let now = now_ms();
        let mut change = Change::default();
        let contact_id = match store.identity(channel, &msg.sender.id)? {
            Some(id) => id,
            None => {
                let id = ContactId(store.next_id()?);
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
        let existing = match store.thread(channel, &msg.thread)? {
            Some(id) => Some(store.conversation(id)?.ok_or(StoreError::Corrupt {
                tree: "threads",
                detail: format!("thread points at missing conversation {id}"),
            })?),
            None => None,
        };
        let is_new = existing.is_none();
        let conv = match existing {
            Some(c) => c,
            None => {
                let id = ConversationId(store.next_id()?);
                change
                    .new_threads
                    .push((channel.clone(), msg.thread.clone(), id));
                Conversation::new(id, contact_id, channel.clone(), msg.thread.clone(), now)
            }
        };
        let mut draft = Draft::new(store, conv, is_new, Actor::Customer, now);
        draft.change = change;
        if is_new {
            draft.event(EventKind::ConversationCreated)?;
        }
        draft.transition(Action::CustomerMessage, "customer wrote")?;
        // The customer wrote: whatever failed to reach them before may work again.
        if let Some(reason) = draft.conv.unreachable.take() {
            draft.event(EventKind::ReachableAgain { was: reason })?;
        }
        let member = draft.conv.contact != contact_id;
        let seq = draft.push_inbound(msg, member)?;
        match (start, draft.conv.status) {
            (true, Status::Bot) => {
                let welcome = self.settings().welcome_message.clone();
                draft.push_outbound(Reply::bot(welcome, Some(msg.message_id.clone())))?;
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
                })?;
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
    fn room_for_more(&self) -> Result<(), EngineError> {
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
                d.event(EventKind::NoteAdded { note: note_id })?;
                Ok(n)
            })
            .await?;
        Ok(note)
    }

    /// A state-machine action by an agent (assign, resolve, snooze, ...).
    pub async fn act(
        &self,
        id: ConversationId,
        actor: Actor,
        action: Action,
        reason: &str,
    ) -> Result<Conversation, EngineError> {
        if let Action::Assign(agent) = action {
            match self.store.agent(agent)? {
                Some(a) if !a.disabled => {}
                _ => {
                    return Err(EngineError::Invalid(format!(
                        "agent {agent} does not exist or is disabled"
                    )));
                }
            }
        }
        if let Action::Snooze { until_ms } = action
            && until_ms <= now_ms()
        {
            return Err(EngineError::Invalid(
                "snooze time must be in the future".into(),
            ));
        }
        self.update(id, actor, |d| {
            d.transition(action, reason)?;
            if action == Action::HandBack {
                d.conv.bot_misses = 0;
            }
            Ok(())
        })
        .await
        .map(|(conv, ())| conv)
    }

    pub async fn set_labels(
        &self,
        id: ConversationId,
        agent: AgentId,
        labels: Vec<String>,
    ) -> Result<Conversation, EngineError> {
        let mut set = BTreeSet::new();
        for l in labels {
            let l = l.trim().to_lowercase();
            if l.is_empty() || l.chars().count() > MAX_LABEL_CHARS {
                return Err(EngineError::Invalid(format!(
                    "labels must be 1 to {MAX_LABEL_CHARS} characters"
                )));
            }
            set.insert(l);
        }
        if set.len() > MAX_LABELS {
            return Err(EngineError::Invalid(format!("at most {MAX_LABELS} labels")));
        }
        self.update(id, Actor::Agent(agent), |d| {
            if d.conv.labels != set {
                d.conv.labels = set.clone();
                d.event(EventKind::LabelsChanged {
                    labels: set.clone(),
                })?;
            }
            Ok(())
        })
        .await
        .map(|(conv, ())| conv)
    }

    pub async fn set_priority(
        &self,
        id: ConversationId,
        agent: AgentId,
        priority: Priority,
    ) -> Result<Conversation, EngineError> {
        self.update(id, Actor::Agent(agent), |d| {
            if d.conv.priority != priority {
                d.conv.priority = priority;
                d.event(EventKind::PriorityChanged { priority })?;
            }
            Ok(())
        })
        .await
        .map(|(conv, ())| conv)
    }

    /// Puts a failed delivery back into the outbox.
    pub async fn retry_delivery(
        &self,
        id: ConversationId,
        seq: u64,
        agent: AgentId,
    ) -> Result<Message, EngineError> {
        let message = self
            .store
            .message(id, seq)?
            .ok_or(EngineError::NotFound("message"))?;
        let Some(delivery) = &message.delivery else {
            return Err(EngineError::Conflict(
                "only outbound messages are delivered".into(),
            ));
        };
        if delivery.state != crate::model::DeliveryState::Failed {
            return Err(EngineError::Conflict(
                "only a failed delivery can be retried".into(),
            ));
        }
        let author_name = match &message.author {
            Author::Agent(a) => self.store.agent(*a)?.map(|a| a.name),
            _ => None,
        };
        let (_, updated) = self
            .update(id, Actor::Agent(agent), |d| {
                let mut m = message.clone();
                let item = outbox::requeue(&d.conv, &mut m, author_name.clone(), d.now);
                d.change.outbox_put.push(item);
                d.change.failed_remove.push((id, seq));
                d.change.messages.push(m.clone());
                d.event(EventKind::DeliveryChanged {
                    seq,
                    state: crate::model::DeliveryState::Queued,
                    error: None,
                })?;
                Ok(m)
            })
            .await?;
        Ok(updated)
    }

    /// Follows `merged_into` links to the contact that stands for `id` now.
    pub fn contact(&self, id: ContactId) -> Result<Option<Contact>, EngineError> {
        let mut current = self.store.contact(id)?;
        for _ in 0..16 {
            match current {
                Some(Contact {
                    merged_into: Some(next),
                    ..
                }) => current = self.store.contact(next)?,
                other => return Ok(other),
            }
        }
        Err(EngineError::Invalid("contact merge chain too long".into()))
    }

    /// Merges contact `from` into `into`: identities and conversations move; `from` remains as a
    /// pointer for old references.
    pub async fn merge_contacts(
        &self,
        into: ContactId,
        from: ContactId,
        agent: AgentId,
    ) -> Result<Contact, EngineError> {
        if into == from {
            return Err(EngineError::Invalid(
                "cannot merge a contact into itself".into(),
            ));
        }
        for _ in 0..MAX_RETRIES {
            let mut target = self
                .contact(into)?
                .ok_or(EngineError::NotFound("contact"))?;
            let mut source = self
                .store
                .contact(from)?
                .ok_or(EngineError::NotFound("contact"))?;
            if source.merged_into.is_some() {
                return Err(EngineError::Invalid(format!(
                    "contact {from} was already merged"
                )));
            }
            if target.id == source.id {
                return Err(EngineError::Invalid(
                    "cannot merge a contact into itself".into(),
                ));
            }
            let now = now_ms();
            let mut change = Change::default();
            for ident in &source.identities {
                change.moved_identities.push((
                    ident.channel.clone(),
                    ident.user.clone(),
                    target.id,
                ));
                if !target.identities.contains(ident) {
                    target.identities.push(ident.clone());
                }
            }
            if target.name.is_none() {
                target.name = source.name.clone();
            }
            source.merged_into = Some(target.id);
            for conv_id in self.store.contact_conversations(source.id)? {
                if let Some(previous) = self.store.conversation(conv_id)? {
                    let mut conv = previous.clone();
                    conv.contact = target.id;
                    change
                        .conversations
                        .push(ConversationWrite::update(previous, conv));
                }
            }
            change.events.push(Event {
                id: EventId(self.store.next_id()?),
                conversation: None,
                actor: Actor::Agent(agent),
                at_ms: now,
                kind: EventKind::ContactsMerged {
                    from: source.id,
                    into: target.id,
                },
            });
            change.contacts = vec![target.clone(), source];
            match self.commit(change).await {
                Ok(()) => return Ok(target),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Busy)
    }
}

/// How often snoozed conversations are checked for their wake-up time.
const SNOOZE_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Wakes snoozed conversations whose time has come (also those that came due while the daemon
/// was down: the time is in the record).
async fn wake_snoozed(engine: Arc<Engine>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SNOOZE_TICK) => {}
        }
        let now = now_ms();
        let mut query = crate::store::ConversationQuery {
            status: Some(Status::Snoozed),
            limit: 200,
            ..Default::default()
        };
        loop {
            let page = match engine.store.list_conversations(&query) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list snoozed conversations");
                    break;
                }
            };
            for conv in page
                .items
                .iter()
                .filter(|c| c.snoozed_until_ms.is_some_and(|t| t <= now))
            {
                match engine
                    .act(conv.id, Actor::System, Action::Wake, "snooze ended")
                    .await
                {
                    Ok(_) | Err(EngineError::Transition(_)) => {}
                    Err(e) => tracing::warn!(conversation = %conv.id, error = %e, "could not wake"),
                }
            }
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
    }
}

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
