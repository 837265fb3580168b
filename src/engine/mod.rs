//! The conversation engine: turns inbound events and agent actions into state changes.
//!
//! - Every change is built as a [`draft::Draft`] (pure), applied to the store as one
//!   transaction, made durable, and only then announced: the store gives its events their ids
//!   and announces them in commit order (SSE and the router subscribe), new replies wake the
//!   [`outbox`], new customer messages go to the [`bot_worker`].
//! - Writes are optimistic: a conversation changed by someone else in between is re-read and
//!   the change rebuilt (bounded retries).
//! - The engine knows channels only through the `Channel` trait; it never touches a network.
//! - [`router`] is the loop that applies routing's policy (`crate::routing`): presence,
//!   SLA marks, assignment.
//!
//! One file per use case: `ingest` (customer messages, edits, deletions, bounces), `reply`
//! (agents' replies and notes, suggestions), `actions` (status, labels, priority, retrying a
//! delivery), `contacts` (merging), `handoff` (what the customer is told), `snooze` (the
//! wake-up timer), [`bot_worker`] and [`outbox`] (the two loops of the message path), with
//! their rules as pure plans in `plan`. This file holds the engine itself: its parts,
//! `update` (read, change, commit, retry) and `commit` (store, then announce).

mod actions;
mod agents;
pub use agents::{MIN_TOKEN_LEN, TOKEN_PREFIX};
pub(crate) mod bot_worker;
mod canned;
pub mod clock;
mod contacts;
mod erase;
pub use canned::CannedResponse;
pub(crate) mod draft;
mod handoff;
mod ingest;
pub mod outbox;
mod plan;
mod presence;
pub use presence::{AttachGuard, Attachments};
mod reply;
pub mod router;
mod search;
mod sla;
pub use sla::SlaMark;
mod snooze;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use switchboard_channel::{Channel, ChannelId};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::bot::Responder;
use crate::model::availability::{AlwaysStaffed, Availability};
use crate::model::lang::Localized;
use crate::model::{Actor, Conversation, ConversationId, Event, Message, TransitionError};
use crate::store::{Change, Store, StoreError};
use draft::Draft;
use outbox::OutboxConfig;

/// How often a write that lost a race is rebuilt before giving up.
const MAX_RETRIES: usize = 32;
/// Conversation lanes (see `Engine::lane`).
const LANES: usize = 8192;
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
    recent_waits: handoff::RecentWaits,
    /// This engine, as the holder of the work it claims from the store's queues.
    holder: crate::store::lease::Holder,
    clock: Arc<dyn clock::Clock>,
}

impl Engine {
    pub async fn new(
        store: Arc<dyn Store>,
        responder: Arc<dyn Responder>,
        settings: EngineSettings,
    ) -> Result<Arc<Engine>, EngineError> {
        Engine::with_clock(store, responder, settings, Arc::new(clock::SystemClock)).await
    }

    /// [`Engine::new`] on a clock of the caller's (tests move time with
    /// [`clock::TokioClock`]).
    pub async fn with_clock(
        store: Arc<dyn Store>,
        responder: Arc<dyn Responder>,
        settings: EngineSettings,
        clock: Arc<dyn clock::Clock>,
    ) -> Result<Arc<Engine>, EngineError> {
        let token_key = agents::load_or_create_key(store.as_ref()).await?;
        let workers = settings.bot_workers.max(1);
        let (bot_shards, inboxes) = (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        Ok(Arc::new(Engine {
            store,
            responder: RwLock::new(responder),
            availability: RwLock::new(Arc::new(AlwaysStaffed)),
            channels: RwLock::new(HashMap::new()),
            outbox: outbox::Outbox::new(settings.outbox.clone()),
            settings: RwLock::new(Arc::new(settings)),
            bot_shards,
            bot_inboxes: Mutex::new(Some(inboxes)),
            bot_outstanding: Default::default(),
            lanes: (0..LANES).map(|_| tokio::sync::Mutex::new(())).collect(),
            token_key,
            metrics: Default::default(),
            attachments: Arc::new(presence::Attachments::with_clock(clock.clone())),
            sla: RwLock::new(None),
            recent_waits: Default::default(),
            holder: crate::store::lease::Holder::random(),
            clock,
        }))
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Wall time as the engine sees it (see [`clock`]).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
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

    pub fn responder(&self) -> Arc<dyn Responder> {
        self.responder.read().expect("responder lock").clone()
    }

    pub fn set_responder(&self, responder: Arc<dyn Responder>) {
        *self.responder.write().expect("responder lock") = responder;
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.store.subscribe()
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
        tasks.push(tokio::spawn(snooze::wake_snoozed(self.clone(), shutdown)));
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
        // The bot gets the messages it is to read with its work, saving it a read.
        let for_bot: Vec<(ConversationId, u64, Option<Message>)> = change
            .bot_queue_put
            .iter()
            .map(|&(conv, seq)| {
                let message = change
                    .messages
                    .iter()
                    .find(|m| m.conversation == conv && m.seq == seq);
                (conv, seq, message.cloned())
            })
            .collect();
        let mut woken: Vec<ConversationId> =
            change.outbox_put.iter().map(|i| i.conversation).collect();
        woken.dedup();
        self.store.commit(change).await?;
        for (conv, seq, message) in for_bot {
            self.enqueue_bot(conv, seq, message);
        }
        for conv in woken {
            self.outbox.wake(conv);
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
        mut build: impl FnMut(&mut Draft) -> Result<T, EngineError>,
    ) -> Result<(Conversation, T), EngineError> {
        self.update_with(id, actor, |_| async { Ok(()) }, |d, ()| build(d))
            .await
    }

    /// As [`Engine::update`], for a change that needs more than the conversation: `read`
    /// reads it (from the conversation as read in each attempt, under its lane), and `build`
    /// gets it with the draft. Keeps `build` free of reads.
    pub(crate) async fn update_with<R, T, F>(
        &self,
        id: ConversationId,
        actor: Actor,
        mut read: impl FnMut(&Conversation) -> F,
        mut build: impl FnMut(&mut Draft, R) -> Result<T, EngineError>,
    ) -> Result<(Conversation, T), EngineError>
    where
        F: std::future::Future<Output = Result<R, EngineError>>,
    {
        let first = self
            .store
            .conversation(id)
            .await?
            .ok_or(EngineError::NotFound("conversation"))?;
        // One change at a time per conversation (see `lane`); retries remain for the rare
        // writer outside the lane (merging contacts).
        let _lane = self.lane(&first.channel, &first.thread).lock().await;
        for _ in 0..MAX_RETRIES {
            let conv = self
                .store
                .conversation(id)
                .await?
                .ok_or(EngineError::NotFound("conversation"))?;
            let extra = read(&conv).await?;
            let mut draft = Draft::new(conv, false, actor.clone(), self.now_ms());
            let out = build(&mut draft, extra)?;
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
}
