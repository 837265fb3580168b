//! `switchboard-discord`: customers reaching Switchboard through a Discord bot.
//!
//! # Layout
//! - [`DiscordChannel`] (this file): the connector. serenity keeps the gateway connection
//!   (identify, heartbeats, resume after a dropped socket, RECONNECT and INVALID_SESSION); its
//!   events are queued to one task here that turns them into [`InboundEvent`]s in order.
//! - [`rest`]: the REST calls, on our own client (rate-limit headers and `retry_after` read).
//! - [`render`]: agent text escaped, bot Markdown kept, long replies split at 2,000, buttons
//!   as message components.
//! - `fake` (feature `fake`): Discord's REST and gateway on loopback, for tests.
//!
//! # Conversations
//! - A direct message channel is one conversation.
//! - In a configured support channel, a customer's first message opens a thread on it (named
//!   after them); the thread is their conversation, and later messages in the channel go to
//!   the same thread. A thread a customer opens there themselves is a conversation too.
//!
//! # Delivery guarantees
//! - In: serenity hands events to concurrently spawned tasks, so they are queued and, within
//!   a short window, put back in snowflake order before they are stored. The last stored
//!   message id of every channel is kept in the channel state; the gateway does not replay
//!   what was sent while the bot was away, so after every fresh session (READY, not RESUMED)
//!   each recent channel is read back over REST from that id. The engine drops duplicates by
//!   message id.
//! - Out: every message carries a `nonce` derived from the outbound id with
//!   `enforce_nonce`, so Discord itself drops a repeated send within its few minutes; parts of
//!   a long reply are recorded as sent, and every message of ours that comes back over the
//!   gateway is recorded by its nonce (kept a week), so a retry long after a lost response
//!   sends only what is missing. Mentions never ping
//!   (`allowed_mentions` empty).

pub mod render;
pub mod rest;

#[cfg(feature = "fake")]
pub mod fake;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serenity::all::{
    ComponentInteraction, Context, EventHandler, GatewayIntents, GuildChannel, Interaction,
    Message, MessageType, MessageUpdateEvent, Ready, ResumedEvent,
};
use switchboard_channel::ledger::{ButtonPayloads, SentParts};
use switchboard_channel::{
    Attachment, Backoff, Capabilities, Channel, ChannelContext, ChannelError, ChannelHealth,
    ChannelId, ExternalMessageId, ExternalThread, ExternalUser, HealthTracker, InboundEdit,
    InboundError, InboundEvent, InboundMessage, Outbound, Sender, now_ms, sleep_or_stop,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use rest::{Rest, RestError, Upload};

/// Discord's own address; other values (tests) are reached through serenity's proxy setting.
pub const DISCORD_URL: &str = "https://discord.com";
/// How long queued gateway events wait for stragglers before they are put in order.
const REORDER_WINDOW: Duration = Duration::from_millis(30);
/// Longest wait between retries of storing or of a failing start.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A gateway connection that lasted this long was healthy: the backoff starts over.
const HEALTHY_FOR: Duration = Duration::from_secs(60);

/// Configuration of one Discord bot (`type = "discord"` under `[channels.NAME]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// Bot token from the developer portal, inline (development only); prefer
    /// `token_env`/`token_file`.
    pub token: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Guild text channels (ids) where customers write; each customer gets a thread.
    #[serde(default)]
    pub support_channels: Vec<String>,
    /// Direct messages to the bot are conversations.
    #[serde(default = "yes")]
    pub direct_messages: bool,
    /// Name of the thread opened for a customer; `{name}` is their display name.
    #[serde(default = "default_thread_name")]
    pub thread_name: String,
    /// Larger files are listed on the message but not downloaded.
    #[serde(default = "default_max_file")]
    pub max_file_bytes: u64,
    /// After a restart, channels active within this many days are read back for messages
    /// sent meanwhile.
    #[serde(default = "default_backfill_days")]
    pub backfill_days: u32,
}

fn default_api_url() -> String {
    DISCORD_URL.into()
}
fn yes() -> bool {
    true
}
fn default_thread_name() -> String {
    "Support: {name}".into()
}
fn default_max_file() -> u64 {
    10 * 1024 * 1024
}
fn default_backfill_days() -> u32 {
    7
}

impl switchboard_channel::ChannelFactory for DiscordConfig {
    const TYPE: &'static str = "discord";

    fn validate(&self, id: &ChannelId) -> Vec<String> {
        self.problems()
            .into_iter()
            .map(|p| format!("[channels.{id}] {p}"))
            .collect()
    }

    async fn build(
        self,
        ctx: ChannelContext,
    ) -> Result<Arc<dyn Channel>, switchboard_channel::BuildError> {
        switchboard_channel::built(DiscordChannel::build(self, ctx))
    }
}

impl DiscordConfig {
    /// Problems with the configuration, for `check-config`.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for c in &self.support_channels {
            if c.parse::<u64>().is_err() {
                p.push(format!(
                    "support_channels: `{c}` is not a channel id (a number)"
                ));
            }
        }
        if !self.api_url.starts_with("http://") && !self.api_url.starts_with("https://") {
            p.push("api_url must start with http:// or https://".into());
        }
        p
    }
}

/// What the connector remembers of a channel it has seen customers in.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Seen {
    /// The newest message stored from it.
    last: u64,
    /// When that was stored (unix ms), for how far back to read after a restart.
    at_ms: i64,
}

/// A gateway event, queued for the processing task.
enum Incoming {
    Ready(u64),
    Resumed,
    Message(Box<Message>),
    Update(Box<MessageUpdateEvent>),
    Component(Box<ComponentInteraction>),
    Thread(Box<GuildChannel>),
    /// `(channel, message)`.
    Delete(u64, u64),
}

impl Incoming {
    /// Snowflakes grow with time: sorting by them restores the order events happened in.
    fn order(&self) -> u64 {
        match self {
            Incoming::Ready(_) | Incoming::Resumed => 0,
            Incoming::Message(m) => m.id.get(),
            Incoming::Update(u) => u.id.get(),
            Incoming::Component(c) => c.id.get(),
            Incoming::Thread(t) => t.id.get(),
            Incoming::Delete(_, m) => *m,
        }
    }
}

struct Handler {
    tx: mpsc::UnboundedSender<Incoming>,
    /// Interactions are acknowledged here, at once: Discord wants an answer within 3 seconds,
    /// whatever the queue holds.
    rest: Arc<Rest>,
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _: Context, ready: Ready) {
        let _ = self.tx.send(Incoming::Ready(ready.user.id.get()));
    }
    async fn resume(&self, _: Context, _: ResumedEvent) {
        let _ = self.tx.send(Incoming::Resumed);
    }
    async fn message(&self, _: Context, message: Message) {
        let _ = self.tx.send(Incoming::Message(Box::new(message)));
    }
    async fn message_update(
        &self,
        _: Context,
        _: Option<Message>,
        _: Option<Message>,
        event: MessageUpdateEvent,
    ) {
        let _ = self.tx.send(Incoming::Update(Box::new(event)));
    }
    async fn interaction_create(&self, _: Context, interaction: Interaction) {
        if let Interaction::Component(c) = interaction {
            if let Err(e) = self.rest.acknowledge(c.id.get(), &c.token).await {
                tracing::warn!(error = %e, "interaction not acknowledged");
            }
            let _ = self.tx.send(Incoming::Component(Box::new(c)));
        }
    }
    async fn thread_create(&self, _: Context, thread: GuildChannel) {
        let _ = self.tx.send(Incoming::Thread(Box::new(thread)));
    }
    async fn message_delete(
        &self,
        _: Context,
        channel: serenity::all::ChannelId,
        message: serenity::all::MessageId,
        _: Option<serenity::all::GuildId>,
    ) {
        let _ = self.tx.send(Incoming::Delete(channel.get(), message.get()));
    }
}

pub struct DiscordChannel {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: ChannelContext,
    config: DiscordConfig,
    token: String,
    rest: Arc<Rest>,
    health: HealthTracker,
    /// The bot's own user id, once READY told it.
    me: AtomicU64,
    /// When the nonce ledger was last pruned (unix ms).
    pruned_ms: std::sync::atomic::AtomicI64,
    support: HashSet<u64>,
}

/// Channel-state keys.
fn seen_key(channel: u64) -> String {
    format!("c/{channel}")
}
fn customer_thread_key(support: u64, user: u64) -> String {
    format!("u/{support}/{user}")
}
/// Our own messages seen over the gateway, by nonce: `nonce/{nonce}` → (message id, when).
const NONCE_PREFIX: &str = "nonce/";
/// How long the nonce ledger remembers a message: a week.
const NONCE_LEDGER_MS: i64 = 7 * 86_400_000;

impl DiscordChannel {
    pub fn build(config: DiscordConfig, ctx: ChannelContext) -> Result<Self, String> {
        let token = switchboard_channel::resolve_secret(
            &format!("channel {}: token", ctx.id),
            config.token.as_deref(),
            config.token_env.as_deref(),
            config.token_file.as_deref(),
        )?;
        if let Some(p) = config.problems().into_iter().next() {
            return Err(format!("channel {}: {p}", ctx.id));
        }
        let support = config
            .support_channels
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        Ok(DiscordChannel {
            inner: Arc::new(Inner {
                rest: Arc::new(Rest::new(&config.api_url, &token)),
                ctx,
                token,
                health: HealthTracker::default(),
                me: AtomicU64::new(0),
                pruned_ms: Default::default(),
                support,
                config,
            }),
        })
    }
}

impl Inner {
    async fn get<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Option<T> {
        let bytes = self.ctx.state.get(key.as_bytes()).await.ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    async fn put<T: Serialize>(&self, key: &str, value: &T) {
        let bytes = serde_json::to_vec(value).expect("state values serialise");
        if let Err(e) = self.ctx.state.put_all(&[(key.as_bytes(), &bytes)]).await {
            tracing::warn!(channel = %self.ctx.id, error = %e, "cannot keep channel state");
        }
    }

    /// Notes that message `id` of `channel` is stored.
    async fn seen(&self, channel: u64, id: u64) {
        let key = seen_key(channel);
        let mut s: Seen = self.get(&key).await.unwrap_or_default();
        if id > s.last {
            s.last = id;
            s.at_ms = now_ms();
            self.put(&key, &s).await;
        }
    }

    /// Hands an event to the engine, retrying while storage is unavailable (until `stop`).
    async fn submit(&self, event: InboundEvent, stop: &CancellationToken) -> bool {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.ctx.inbound.submit(&self.ctx.id, event.clone()).await {
                Ok(_) => {
                    self.health.received(1);
                    return true;
                }
                Err(InboundError::Rejected(reason)) => {
                    tracing::warn!(channel = %self.ctx.id, %reason, "message refused; skipped");
                    return false;
                }
                Err(InboundError::Unavailable(reason)) => {
                    tracing::warn!(channel = %self.ctx.id, %reason, "cannot store now; retrying");
                    if !sleep_or_stop(stop, delay).await {
                        return false;
                    }
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Retries a REST call made for inbound work, waiting out rate limits (until `stop`).
    async fn with_retries<T, F, Fut>(
        &self,
        what: &str,
        stop: &CancellationToken,
        call: F,
    ) -> Option<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, RestError>>,
    {
        let mut delay = Duration::from_millis(500);
        for _ in 0..20 {
            match call().await {
                Ok(v) => return Some(v),
                Err(RestError::RateLimited { after }) => {
                    if !sleep_or_stop(stop, after).await {
                        return None;
                    }
                }
                Err(e @ (RestError::Server(_) | RestError::Network(_))) => {
                    self.health.error(&e);
                    tracing::warn!(channel = %self.ctx.id, error = %e, "{what} failed; retrying");
                    if !sleep_or_stop(stop, delay).await {
                        return None;
                    }
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    self.health.error(&e);
                    tracing::warn!(channel = %self.ctx.id, error = %e, "{what} failed");
                    return None;
                }
            }
        }
        None
    }

    /// The conversation thread a customer message belongs to, if it is one of ours.
    async fn thread_for(&self, m: &Message, stop: &CancellationToken) -> Option<u64> {
        let channel = m.channel_id.get();
        if m.guild_id.is_none() {
            return self.config.direct_messages.then_some(channel);
        }
        if self.support.contains(&channel) {
            let key = customer_thread_key(channel, m.author.id.get());
            if let Some(thread) = self.get::<u64>(&key).await {
                return Some(thread);
            }
            let name = self
                .config
                .thread_name
                .replace("{name}", &display_name(&m.author));
            let thread = self
                .with_retries("opening a thread", stop, || {
                    self.rest.start_thread(channel, m.id.get(), &name)
                })
                .await?;
            self.put(&key, &thread).await;
            self.put(&seen_key(thread), &Seen::default()).await;
            return Some(thread);
        }
        // A thread we opened or learnt about.
        self.get::<Seen>(&seen_key(channel)).await.map(|_| channel)
    }

    /// The message's files, and those of the messages it forwards.
    async fn attachments(&self, m: &Message) -> Vec<Attachment> {
        let mut out = Vec::new();
        let forwarded = m.message_snapshots.iter().flat_map(|s| &s.attachments);
        for a in m.attachments.iter().chain(forwarded) {
            let content_type = a
                .content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into());
            let mut att = Attachment::new(a.filename.clone(), content_type, u64::from(a.size));
            att.url = Some(a.url.clone());
            if u64::from(a.size) > self.config.max_file_bytes {
                att.not_kept = Some(format!("larger than {} bytes", self.config.max_file_bytes));
            } else {
                match self.rest.download(&a.url, self.config.max_file_bytes).await {
                    Ok(bytes) => match self.ctx.blobs.put(&bytes).await {
                        Ok(blob) => att.blob = Some(blob),
                        Err(e) => att.not_kept = Some(e.to_string()),
                    },
                    Err(e) => att.not_kept = Some(format!("download failed: {e}")),
                }
            }
            out.push(att);
        }
        out
    }

    async fn on_message(&self, m: &Message, stop: &CancellationToken) {
        let me = self.me.load(Ordering::Relaxed);
        if m.author.id.get() == me
            && let Some(serenity::all::Nonce::String(nonce)) = &m.nonce
        {
            self.record_own(nonce, m.id.get()).await;
            return;
        }
        if m.author.bot || m.author.id.get() == me {
            return;
        }
        if !matches!(m.kind, MessageType::Regular | MessageType::InlineReply) {
            return;
        }
        let Some(thread) = self.thread_for(m, stop).await else {
            return;
        };
        let attachments = self.attachments(m).await;
        let mut text = message_text(m);
        if text.is_empty() && attachments.is_empty() {
            // Something the customer sent that we cannot show: kept, marked, never dropped.
            tracing::info!(channel = %self.ctx.id, message = m.id.get(), "a Discord message of a kind we cannot show; stored as a placeholder");
            text = "[a Discord message of a kind Switchboard cannot show]".into();
        }
        let event = InboundEvent::Message(InboundMessage {
            thread: ExternalThread(thread.to_string()),
            sender: Sender {
                id: ExternalUser(m.author.id.to_string()),
                name: Some(display_name(&m.author)),
            },
            message_id: ExternalMessageId(m.id.to_string()),
            text,
            attachments,
            sent_at_ms: Some(m.timestamp.unix_timestamp() * 1000),
            automated: None,
            earlier_id: None,
            subject: None,
            payload: None,
        });
        if self.submit(event, stop).await {
            self.seen(m.channel_id.get(), m.id.get()).await;
        }
    }

    async fn on_update(&self, u: &MessageUpdateEvent, stop: &CancellationToken) {
        let (Some(text), Some(author)) = (&u.content, &u.author) else {
            return;
        };
        if author.bot {
            return;
        }
        let channel = u.channel_id.get();
        let thread = if self.support.contains(&channel) {
            self.get::<u64>(&customer_thread_key(channel, author.id.get()))
                .await
        } else {
            self.get::<Seen>(&seen_key(channel)).await.map(|_| channel)
        };
        let Some(thread) = thread else {
            return;
        };
        let edit = InboundEvent::Edit(InboundEdit {
            thread: ExternalThread(thread.to_string()),
            message_id: ExternalMessageId(u.id.to_string()),
            text: text.clone(),
            edited_at_ms: u.edited_timestamp.map(|t| t.unix_timestamp() * 1000),
        });
        self.submit(edit, stop).await;
    }

    /// A button press (acknowledged already by the handler): stored as the label the customer
    /// saw (found on the message the button was on), the payload for the bot.
    async fn on_component(&self, c: &ComponentInteraction, stop: &CancellationToken) {
        let channel = c.channel_id.get();
        if self.get::<Seen>(&seen_key(channel)).await.is_none() {
            return;
        }
        let Some(payload) = self
            .buttons()
            .payload(&c.data.custom_id)
            .await
            .ok()
            .flatten()
        else {
            return;
        };
        let event = InboundEvent::Message(InboundMessage {
            thread: ExternalThread(channel.to_string()),
            sender: Sender {
                id: ExternalUser(c.user.id.to_string()),
                name: Some(display_name(&c.user)),
            },
            message_id: ExternalMessageId(format!("i{}", c.id)),
            text: button_label(&c.message, &c.data.custom_id).unwrap_or_else(|| payload.clone()),
            attachments: vec![],
            sent_at_ms: Some(now_ms()),
            automated: None,
            earlier_id: None,
            subject: None,
            payload: Some(payload),
        });
        self.submit(event, stop).await;
    }

    /// A thread a customer opened in a support channel is a conversation.
    async fn on_thread(&self, t: &GuildChannel) {
        let from_customer = t
            .owner_id
            .is_some_and(|o| o.get() != self.me.load(Ordering::Relaxed));
        if from_customer
            && t.parent_id.is_some_and(|p| self.support.contains(&p.get()))
            && self.get::<Seen>(&seen_key(t.id.get())).await.is_none()
        {
            self.put(&seen_key(t.id.get()), &Seen::default()).await;
        }
    }

    /// Reads back what customers wrote while the bot was away.
    async fn backfill(&self, stop: &CancellationToken) {
        let since = now_ms() - i64::from(self.config.backfill_days) * 86_400_000;
        let rows = match self.ctx.state.scan(b"c/", None, 100_000).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(channel = %self.ctx.id, error = %e, "cannot list channels to read back");
                return;
            }
        };
        let mut read = 0;
        for (key, value) in rows {
            let Some(channel) = std::str::from_utf8(&key[2..])
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let seen: Seen = serde_json::from_slice(&value).unwrap_or_default();
            if seen.last == 0 || seen.at_ms < since {
                continue;
            }
            let mut after = seen.last;
            for _ in 0..1_000 {
                let Some(batch) = self
                    .with_retries("reading back a channel", stop, || {
                        self.rest.messages_after(channel, after)
                    })
                    .await
                else {
                    break;
                };
                let full = batch.len() == 100;
                for m in &batch {
                    after = after.max(m.id.get());
                    self.on_message(m, stop).await;
                    read += 1;
                }
                if !full {
                    break;
                }
            }
        }
        if read > 0 {
            tracing::info!(channel = %self.ctx.id, messages = read, "read back messages sent while away");
        }
    }

    async fn handle(&self, event: Incoming, stop: &CancellationToken) {
        self.health.event();
        match event {
            Incoming::Ready(me) => {
                self.me.store(me, Ordering::Relaxed);
                self.health.ok();
                self.health.state("connected");
                tracing::info!(channel = %self.ctx.id, "gateway session ready");
                self.backfill(stop).await;
            }
            Incoming::Resumed => {
                self.health.ok();
                self.health.state("connected");
                tracing::info!(channel = %self.ctx.id, "gateway session resumed");
            }
            Incoming::Message(m) => self.on_message(&m, stop).await,
            Incoming::Update(u) => self.on_update(&u, stop).await,
            Incoming::Component(c) => self.on_component(&c, stop).await,
            Incoming::Thread(t) => self.on_thread(&t).await,
            Incoming::Delete(channel, message) => {
                // Deletes name no author: the store finds the message by its id alone.
                let delete = InboundEvent::Delete {
                    thread: ExternalThread(channel.to_string()),
                    message_id: ExternalMessageId(message.to_string()),
                };
                self.submit(delete, stop).await;
            }
        }
    }

    /// Takes queued gateway events in order until `stop`.
    async fn process(&self, mut rx: mpsc::UnboundedReceiver<Incoming>, stop: CancellationToken) {
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                e = rx.recv() => match e { Some(e) => e, None => return },
            };
            let mut batch = vec![first];
            let until = tokio::time::Instant::now() + REORDER_WINDOW;
            while let Ok(Some(e)) = tokio::time::timeout_at(until, rx.recv()).await {
                batch.push(e);
            }
            batch.sort_by_key(Incoming::order);
            for e in batch {
                self.handle(e, &stop).await;
            }
        }
    }

    /// Runs serenity's client until `stop`, starting it again (with backoff) if it ends.
    async fn gateway(&self, tx: mpsc::UnboundedSender<Incoming>, stop: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_secs(1), MAX_BACKOFF, HEALTHY_FOR);
        while !stop.is_cancelled() {
            let mut http = serenity::http::HttpBuilder::new(&self.token).ratelimiter_disabled(true);
            if self.config.api_url != DISCORD_URL {
                http = http.proxy(self.config.api_url.trim_end_matches('/'));
            }
            let intents = GatewayIntents::GUILDS
                | GatewayIntents::GUILD_MESSAGES
                | GatewayIntents::DIRECT_MESSAGES
                | GatewayIntents::MESSAGE_CONTENT;
            let client = serenity::client::ClientBuilder::new_with_http(http.build(), intents)
                .event_handler(Handler {
                    tx: tx.clone(),
                    rest: self.rest.clone(),
                })
                .await;
            let mut client = match client {
                Ok(c) => c,
                Err(e) => {
                    self.health.error(&e);
                    tracing::error!(channel = %self.ctx.id, error = %e, "cannot start the Discord client");
                    if !sleep_or_stop(&stop, backoff.after(Duration::ZERO)).await {
                        return;
                    }
                    continue;
                }
            };
            let shards = client.shard_manager.clone();
            self.health.state("connecting");
            let started = tokio::time::Instant::now();
            tokio::select! {
                r = client.start() => {
                    let reason = match r {
                        Ok(()) => "gateway connection ended".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    self.health.error(&reason);
                    self.health.state("reconnecting");
                    let wait = backoff.after(started.elapsed());
                    tracing::warn!(channel = %self.ctx.id, %reason, ?wait, "Discord gateway stopped; starting again");
                    if !sleep_or_stop(&stop, wait).await {
                        return;
                    }
                }
                _ = stop.cancelled() => {
                    shards.shutdown_all().await;
                    return;
                }
            }
        }
    }

    /// Our own message, as Discord created it, by nonce: the ledger that keeps a retry whose
    /// response was lost from posting it again after Discord forgot the nonce. Entries live a
    /// week (the outbox gives up long before); pruned at most hourly.
    async fn record_own(&self, nonce: &str, id: u64) {
        let now = now_ms();
        self.put(&format!("{NONCE_PREFIX}{nonce}"), &(id, now))
            .await;
        let last = self.pruned_ms.load(Ordering::Relaxed);
        if now - last < 3_600_000 || self.pruned_ms.swap(now, Ordering::Relaxed) != last {
            return;
        }
        let Ok(entries) = self
            .ctx
            .state
            .scan(NONCE_PREFIX.as_bytes(), None, 1_000_000)
            .await
        else {
            return;
        };
        let old: Vec<Vec<u8>> = entries
            .into_iter()
            .filter(|(_, v)| {
                serde_json::from_slice::<(u64, i64)>(v)
                    .is_ok_and(|(_, at)| now - at > NONCE_LEDGER_MS)
            })
            .map(|(k, _)| k)
            .collect();
        let keys: Vec<&[u8]> = old.iter().map(Vec::as_slice).collect();
        if let Err(e) = self.ctx.state.remove_all(&keys).await {
            tracing::warn!(channel = %self.ctx.id, error = %e, "cannot prune the sent-message ledger");
        }
    }

    /// `custom_id` holds at most 100 bytes: longer payloads travel as a hash, kept here.
    fn buttons(&self) -> ButtonPayloads<'_> {
        ButtonPayloads::new(self.ctx.state.as_ref(), render::MAX_CUSTOM_ID)
    }

    /// The replies of several parts: what was sent of each.
    fn sent_parts(&self) -> SentParts<'_> {
        SentParts::new(self.ctx.state.as_ref(), "sent/")
    }
}

/// What a customer's message says: its text, what it forwards (`message_snapshots`), and the
/// names of its stickers.
fn message_text(m: &Message) -> String {
    let mut parts = vec![m.content.clone()];
    for s in &m.message_snapshots {
        parts.push(format!("[forwarded] {}", s.content));
        parts.extend(
            s.sticker_items
                .iter()
                .map(|st| format!("[sticker] {}", st.name)),
        );
    }
    parts.extend(
        m.sticker_items
            .iter()
            .map(|st| format!("[sticker] {}", st.name)),
    );
    let parts: Vec<&str> = parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect();
    parts.join("\n")
}

/// The label of the button with `custom_id` on `message`, if it is still there.
fn button_label(message: &serenity::all::Message, custom_id: &str) -> Option<String> {
    use serenity::all::{ActionRowComponent, ButtonKind};
    message
        .components
        .iter()
        .flat_map(|row| &row.components)
        .find_map(|c| match c {
            ActionRowComponent::Button(b) => match &b.data {
                ButtonKind::NonLink { custom_id: id, .. } if id == custom_id => b.label.clone(),
                _ => None,
            },
            _ => None,
        })
}

fn display_name(u: &serenity::all::User) -> String {
    u.global_name.clone().unwrap_or_else(|| u.name.clone())
}

fn parse_id(thread: &ExternalThread) -> Result<u64, ChannelError> {
    thread
        .0
        .parse()
        .map_err(|_| ChannelError::Permanent(format!("`{thread}` is not a Discord channel id")))
}

#[async_trait::async_trait]
impl Channel for DiscordChannel {
    fn id(&self) -> &ChannelId {
        &self.inner.ctx.id
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threading: true,
            edits: false,
            attachments: true,
            typing: false,
            buttons: true,
            max_text_chars: Some(render::MAX_CHARS),
        }
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<(), ChannelError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = self.inner.clone();
        let stop = shutdown.clone();
        let processing = tokio::spawn(async move { inner.process(rx, stop).await });
        self.inner.gateway(tx, shutdown).await;
        let _ = processing.await;
        Ok(())
    }

    async fn send(
        &self,
        to: &ExternalThread,
        outbound: &Outbound,
    ) -> Result<ExternalMessageId, ChannelError> {
        let inner = &self.inner;
        let channel = parse_id(to)?;
        let parts = render::parts(outbound);
        let mut files = Vec::new();
        for a in &outbound.attachments {
            let Some(blob) = &a.blob else { continue };
            let bytes = inner
                .ctx
                .blobs
                .get(blob)
                .await
                .map_err(|e| ChannelError::retryable(e.to_string()))?
                .ok_or_else(|| ChannelError::Permanent(format!("file {} is gone", a.name)))?;
            files.push(Upload {
                name: a.name.clone(),
                content_type: a.content_type.clone(),
                bytes,
            });
        }
        // Text parts, then the files (with the buttons on the last message).
        let count = parts.len() + usize::from(!files.is_empty());
        let multi = count > 1;
        let mut first = None;
        let sent_parts = inner.sent_parts();
        for i in 0..count.max(1) {
            // Sent already: recorded when its response came (parts of a long reply), or seen
            // coming back over the gateway (a response that was lost).
            let nonce = render::nonce(&outbound.id, i);
            let recorded = match multi {
                true => sent_parts
                    .get(&outbound.id, i)
                    .await
                    .and_then(|id| id.parse::<u64>().ok()),
                false => None,
            };
            let sent = match recorded {
                Some(id) => Some(id),
                None => inner
                    .get::<(u64, i64)>(&format!("{NONCE_PREFIX}{nonce}"))
                    .await
                    .map(|(id, _)| id),
            };
            if let Some(id) = sent {
                first.get_or_insert(id);
                continue;
            }
            let last = i + 1 == count.max(1);
            let mut payload = serde_json::json!({
                "content": parts.get(i).cloned().unwrap_or_default(),
                "allowed_mentions": {"parse": []},
                "nonce": nonce,
                "enforce_nonce": true,
            });
            if i == 0
                && let Some(reply_to) = outbound
                    .in_reply_to
                    .as_ref()
                    .and_then(|m| m.0.parse::<u64>().ok())
            {
                payload["message_reference"] = serde_json::json!({"message_id": reply_to.to_string(), "fail_if_not_exists": false});
            }
            if last && !outbound.buttons.is_empty() {
                let mut ids = Vec::with_capacity(outbound.buttons.len());
                for b in &outbound.buttons {
                    ids.push(inner.buttons().data(&b.payload).await);
                }
                payload["components"] = render::components(&outbound.buttons, &ids);
            }
            let upload = if i == parts.len() {
                std::mem::take(&mut files)
            } else {
                Vec::new()
            };
            let id = inner
                .rest
                .create_message(channel, payload, upload)
                .await
                .map_err(|e| {
                    inner.health.error(&e);
                    e.classify()
                })?;
            if multi {
                sent_parts.record(&outbound.id, i, &id.to_string()).await?;
            }
            inner.health.sent();
            inner.health.ok();
            first.get_or_insert(id);
        }
        let id = first.ok_or_else(|| ChannelError::Permanent("nothing to send".into()))?;
        Ok(ExternalMessageId(id.to_string()))
    }

    fn health(&self) -> ChannelHealth {
        self.inner.health.snapshot()
    }

    async fn forget(&self, thread: &ExternalThread) -> Result<(), ChannelError> {
        let state = &self.inner.ctx.state;
        let err = |e: switchboard_channel::StateError| ChannelError::retryable(e.to_string());
        let mut keys: Vec<Vec<u8>> = vec![seen_key(parse_id(thread)?).into_bytes()];
        for (k, v) in state.scan(b"u/", None, 1_000_000).await.map_err(err)? {
            if serde_json::from_slice::<u64>(&v)
                .ok()
                .map(|t| t.to_string())
                == Some(thread.0.clone())
            {
                keys.push(k);
            }
        }
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        state.remove_all(&refs).await.map_err(err)?;
        state.sync().await.map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(extra: serde_json::Value) -> Message {
        let mut m = json!({
            "id": "10", "channel_id": "20", "content": "",
            "author": {"id": "30", "username": "xiaoming", "discriminator": "0", "avatar": null},
            "timestamp": "2026-12-01T00:00:00.000000+00:00", "edited_timestamp": null,
            "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
            "attachments": [], "embeds": [], "pinned": false, "type": 0, "flags": 0,
        });
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        serde_json::from_value(m).unwrap()
    }

    #[test]
    fn forwarded_messages_and_stickers_are_read_not_stored_empty() {
        let snapshot = json!({"message": {
            "content": "订单号 12345 一直没发货", "timestamp": "2026-11-30T00:00:00.000000+00:00",
            "edited_timestamp": null, "mentions": [], "attachments": [], "embeds": [],
            "type": 0, "flags": 0, "sticker_items": []}});
        let forwarded = message(json!({
            "message_reference": {"type": 1, "channel_id": "21", "message_id": "9"},
            "message_snapshots": [snapshot],
        }));
        assert_eq!(
            message_text(&forwarded),
            "[forwarded] 订单号 12345 一直没发货"
        );
        let sticker = message(json!({
            "content": "谢谢",
            "sticker_items": [{"id": "40", "name": "点赞", "format_type": 1}],
        }));
        assert_eq!(message_text(&sticker), "谢谢\n[sticker] 点赞");
        assert_eq!(message_text(&message(json!({}))), "");
    }
}
