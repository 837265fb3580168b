//! `switchboard-telegram`: customers reaching Switchboard through a Telegram bot.
//!
//! # Layout
//! - [`TelegramChannel`] (this file): the connector. Receives by long polling (`getUpdates`) or
//!   by web hook on the daemon's listener, sends through the Bot API with teloxide's client.
//! - [`inbound`]: which updates concern us (private chats; groups when addressed; forum
//!   topics as their own conversations) and how they become events.
//! - [`outbound`]: rendering to Telegram HTML, splitting at 4,096 characters, pacing to the
//!   flood limits, and classifying failures for the outbox.
//! - `fake` (feature `fake`): a Bot API server on loopback for tests and benchmarks.
//!
//! # Delivery guarantees
//! - In: the `getUpdates` offset moves past an update only after the engine has stored it
//!   durably; the offset is also kept in the channel state, so a restart resumes where it was.
//!   Updates redelivered after a crash are dropped by the engine's dedupe (chat + message id).
//! - Out: a reply of several parts (long text, files) records each sent part, durably, under
//!   the outbound id, so a retry sends only what is missing.

pub mod inbound;
pub mod outbound;

#[cfg(feature = "fake")]
pub mod fake;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use switchboard_channel::ledger::{ButtonPayloads, SentParts};
use switchboard_channel::{
    Attachment, Capabilities, Channel, ChannelContext, ChannelError, ChannelHealth, ChannelId,
    ExternalMessageId, ExternalThread, HealthTracker, InboundError, InboundEvent, Outbound,
    http_error,
};
use teloxide::net::Download;
use teloxide::payloads::{
    SendDocumentSetters, SendMessageSetters, SendPhotoSetters, SetWebhookSetters,
};
use teloxide::prelude::{Bot, Requester};
use teloxide::types::{
    AllowedUpdate, ChatAction, ChatId, InlineKeyboardButton, InlineKeyboardMarkup, InputFile,
    MessageId, ParseMode, ReplyMarkup, ReplyParameters, ThreadId, Update,
};
use teloxide::{ApiError, RequestError};
use tokio_util::sync::CancellationToken;

pub use inbound::GroupPolicy;
use inbound::{Action, FileRef, Me};

/// Header Telegram sets on web hook calls to the secret given in `setWebhook`.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
/// Largest photo the Bot API takes by upload; larger images go as documents.
const MAX_PHOTO_BYTES: u64 = 10 * 1024 * 1024;
/// Longest wait between retries of a failing poll or start-up call.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Channel-state keys.
const OFFSET_KEY: &[u8] = b"offset";

/// How updates arrive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `getUpdates` long polling: works behind NAT, no public URL needed.
    #[default]
    Polling,
    /// Telegram POSTs updates to `webhook_url`, served on the daemon's listener.
    Webhook,
}

/// Configuration of one Telegram bot (`type = "telegram"` under `[channels.NAME]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// Bot token from @BotFather, inline (development only); prefer `token_env`/`token_file`.
    pub token: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Bot API server.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    #[serde(default)]
    pub mode: Mode,
    /// How long one `getUpdates` call waits for news.
    #[serde(default = "default_poll_timeout")]
    pub poll_timeout_secs: u32,
    /// Web hook mode: the public HTTPS URL that reaches `/hooks/{channel}/telegram` here.
    pub webhook_url: Option<String>,
    /// Web hook mode: the secret Telegram sends in `X-Telegram-Bot-Api-Secret-Token`.
    pub webhook_secret: Option<String>,
    pub webhook_secret_env: Option<String>,
    pub webhook_secret_file: Option<PathBuf>,
    /// In groups: `mentions` (mentioned, replied to, or commanded), `all`, or `off`.
    #[serde(default)]
    pub groups: GroupPolicy,
    /// Forum topics are conversations of their own.
    #[serde(default = "yes")]
    pub topics: bool,
    /// Larger files are listed on the message but not downloaded.
    #[serde(default = "default_max_file")]
    pub max_file_bytes: u64,
    /// Flood limits: messages a second for the whole bot, and the gap between messages to one
    /// private chat and to one group.
    #[serde(default = "default_per_second")]
    pub max_messages_per_sec: u32,
    #[serde(default = "default_private_interval")]
    pub private_interval_ms: u64,
    #[serde(default = "default_group_interval")]
    pub group_interval_ms: u64,
}

fn default_api_url() -> String {
    "https://api.telegram.org".into()
}
fn default_poll_timeout() -> u32 {
    25
}
fn yes() -> bool {
    true
}
fn default_max_file() -> u64 {
    20 * 1024 * 1024
}
fn default_per_second() -> u32 {
    30
}
fn default_private_interval() -> u64 {
    1000
}
fn default_group_interval() -> u64 {
    3000
}

impl switchboard_channel::ChannelFactory for TelegramConfig {
    const TYPE: &'static str = "telegram";

    fn validate(&self, id: &ChannelId) -> Vec<String> {
        self.problems(id.as_str())
    }

    async fn build(
        self,
        ctx: ChannelContext,
    ) -> Result<Arc<dyn Channel>, switchboard_channel::BuildError> {
        switchboard_channel::built(TelegramChannel::build(self, ctx))
    }
}

impl TelegramConfig {
    /// Every problem of this section, for `check-config`.
    pub fn problems(&self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        let what = format!("[channels.{id}] token");
        if let Err(e) = switchboard_channel::resolve_secret(
            &what,
            self.token.as_deref(),
            self.token_env.as_deref(),
            self.token_file.as_deref(),
        ) {
            out.push(e);
        }
        if url::Url::parse(&self.api_url).is_err() {
            out.push(format!(
                "[channels.{id}] api_url `{}` is not a URL",
                self.api_url
            ));
        }
        if self.mode == Mode::Webhook {
            match &self.webhook_url {
                None => out.push(format!(
                    "[channels.{id}] mode = \"webhook\" needs webhook_url (the public URL of /hooks/{id}/telegram)"
                )),
                Some(u) if url::Url::parse(u).is_err() => {
                    out.push(format!("[channels.{id}] webhook_url `{u}` is not a URL"))
                }
                Some(_) => {}
            }
            if let Err(e) = self.webhook_secret() {
                out.push(e);
            }
        }
        if self.poll_timeout_secs > 50 {
            out.push(format!(
                "[channels.{id}] poll_timeout_secs must be at most 50"
            ));
        }
        out
    }

    fn webhook_secret(&self) -> Result<String, String> {
        let secret = switchboard_channel::resolve_signing_secret(
            "webhook_secret",
            self.webhook_secret.as_deref(),
            self.webhook_secret_env.as_deref(),
            self.webhook_secret_file.as_deref(),
        )?;
        // Telegram allows 1-256 characters of A-Z, a-z, 0-9, _ and -.
        let valid = (1..=256).contains(&secret.len())
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(secret)
        } else {
            Err("webhook_secret: use 1-256 characters of A-Z, a-z, 0-9, _ and -".into())
        }
    }
}

/// The Telegram connector.
pub struct TelegramChannel {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: ChannelContext,
    config: TelegramConfig,
    bot: Bot,
    webhook_secret: Option<String>,
    me: RwLock<Option<Me>>,
    pacer: outbound::Pacer,
    health: HealthTracker,
}

impl TelegramChannel {
    /// Builds the connector; fails when the token or web hook settings cannot be resolved.
    pub fn build(config: TelegramConfig, ctx: ChannelContext) -> Result<Self, String> {
        if let Some(p) = config.problems(ctx.id.as_str()).into_iter().next() {
            return Err(p);
        }
        let token = switchboard_channel::resolve_secret(
            "token",
            config.token.as_deref(),
            config.token_env.as_deref(),
            config.token_file.as_deref(),
        )?;
        let api_url = url::Url::parse(&config.api_url).map_err(|e| format!("api_url: {e}"))?;
        // A poll holds the request for `poll_timeout_secs`: the client must wait longer.
        let client = teloxide::net::default_reqwest_settings()
            .timeout(Duration::from_secs(
                u64::from(config.poll_timeout_secs) + 15,
            ))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        let bot = Bot::with_client(token, client).set_api_url(api_url);
        let webhook_secret = match config.mode {
            Mode::Webhook => Some(config.webhook_secret()?),
            Mode::Polling => None,
        };
        let pacer = outbound::Pacer::new(
            config.max_messages_per_sec,
            Duration::from_millis(config.private_interval_ms),
            Duration::from_millis(config.group_interval_ms),
        );
        Ok(TelegramChannel {
            inner: Arc::new(Inner {
                ctx,
                config,
                bot,
                webhook_secret,
                me: RwLock::new(None),
                pacer,
                health: HealthTracker::default(),
            }),
        })
    }

    /// Where Telegram POSTs updates in web hook mode.
    pub fn webhook_path(id: &ChannelId) -> String {
        format!("/hooks/{id}/telegram")
    }
}

impl Inner {
    fn me(&self) -> Option<Me> {
        self.me.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Learns the bot's own id and name (`getMe`), retrying until it works or `stop` fires.
    async fn introduce(&self, stop: &CancellationToken) -> Option<Me> {
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.bot.get_me().await {
                Ok(me) => {
                    self.health.ok();
                    let me = Me {
                        id: me.id.0,
                        username: me.username.clone().unwrap_or_default(),
                    };
                    tracing::info!(channel = %self.ctx.id, bot = %me.username, "connected to Telegram");
                    *self.me.write().unwrap_or_else(|e| e.into_inner()) = Some(me.clone());
                    return Some(me);
                }
                Err(e) => {
                    self.health.error(&e);
                    tracing::warn!(channel = %self.ctx.id, error = %e, "getMe failed; retrying");
                    if matches!(e, RequestError::Api(ApiError::InvalidToken)) {
                        backoff = MAX_BACKOFF;
                    }
                }
            }
            if !switchboard_channel::sleep_or_stop(stop, backoff).await {
                return None;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Tells Telegram how updates should arrive: removes a web hook for polling, sets it for
    /// web hook mode. Retries until it works.
    async fn configure_delivery(&self, stop: &CancellationToken) -> bool {
        let mut backoff = Duration::from_secs(1);
        loop {
            let result = match (&self.config.mode, &self.config.webhook_url) {
                (Mode::Webhook, Some(url)) => {
                    let url = url::Url::parse(url).expect("checked in build");
                    let mut call = self.bot.set_webhook(url).allowed_updates(allowed_updates());
                    if let Some(secret) = &self.webhook_secret {
                        call = call.secret_token(secret.clone());
                    }
                    call.await.map(|_| ())
                }
                _ => self.bot.delete_webhook().await.map(|_| ()),
            };
            match result {
                Ok(()) => return true,
                Err(e) => {
                    self.health.error(&e);
                    tracing::warn!(channel = %self.ctx.id, error = %e, "setting up update delivery failed; retrying");
                }
            }
            if !switchboard_channel::sleep_or_stop(stop, backoff).await {
                return false;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn saved_offset(&self) -> i32 {
        match self.ctx.state.get(OFFSET_KEY).await {
            Ok(Some(v)) => std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            Ok(None) => 0,
            Err(e) => {
                tracing::warn!(channel = %self.ctx.id, error = %e, "cannot read the saved update offset; starting from Telegram's");
                0
            }
        }
    }

    /// Long polling until `stop` fires.
    async fn poll(&self, me: &Me, stop: &CancellationToken) {
        use teloxide::payloads::GetUpdatesSetters;
        let mut offset = self.saved_offset().await;
        let mut backoff = Duration::from_secs(1);
        loop {
            let call = self
                .bot
                .get_updates()
                .offset(offset)
                .timeout(self.config.poll_timeout_secs)
                .allowed_updates(allowed_updates());
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = call => r,
            };
            let wait = match result {
                Ok(updates) => {
                    self.health.ok();
                    backoff = Duration::from_secs(1);
                    let (next, failed) = self.process_batch(&updates, me, offset).await;
                    if next != offset {
                        offset = next;
                        if let Err(e) = self
                            .ctx
                            .state
                            .put_all(&[(OFFSET_KEY, offset.to_string().as_bytes())])
                            .await
                        {
                            tracing::warn!(channel = %self.ctx.id, error = %e, "cannot save the update offset");
                        }
                    }
                    failed.then_some(backoff)
                }
                Err(RequestError::RetryAfter(s)) => Some(s.duration()),
                Err(e) => {
                    self.health.error(&e);
                    tracing::warn!(channel = %self.ctx.id, error = %e, ?backoff, "getUpdates failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    Some(wait)
                }
            };
            if let Some(wait) = wait
                && !switchboard_channel::sleep_or_stop(stop, wait).await
            {
                return;
            }
        }
    }

    /// Stores a batch of updates: conversations concurrently, each in order. Returns the
    /// offset to confirm (past everything stored, up to the first update that could not be)
    /// and whether one could not be stored.
    async fn process_batch(&self, updates: &[Update], me: &Me, offset: i32) -> (i32, bool) {
        let Some(last) = updates.last() else {
            return (offset, false);
        };
        let mut lanes: Vec<(Option<ExternalThread>, Vec<usize>)> = Vec::new();
        let actions: Vec<Action> = updates
            .iter()
            .map(|u| inbound::action(u, me, self.config.groups, self.config.topics))
            .collect();
        for (i, a) in actions.iter().enumerate() {
            let thread = match a {
                Action::Submit { event, .. } => Some(event.thread().clone()),
                Action::Ignore(why) => {
                    let update = updates[i].id.0;
                    if *why == inbound::UNREADABLE {
                        tracing::warn!(channel = %self.ctx.id, update, "{why}; skipped");
                    } else {
                        tracing::debug!(channel = %self.ctx.id, update, "update ignored: {why}");
                    }
                    None
                }
            };
            match lanes.iter_mut().find(|(t, _)| *t == thread) {
                Some((_, list)) => list.push(i),
                None => lanes.push((thread, vec![i])),
            }
        }
        let mut actions: Vec<Option<Action>> = actions.into_iter().map(Some).collect();
        let work = lanes.into_iter().map(|(_, list)| {
            let items: Vec<(usize, Action)> = list
                .into_iter()
                .map(|i| (i, actions[i].take().expect("each update in one lane")))
                .collect();
            async move {
                for (i, action) in items {
                    if self.handle(action).await.is_err() {
                        return Some(i);
                    }
                }
                None
            }
        });
        let first_failed = futures::future::join_all(work)
            .await
            .into_iter()
            .flatten()
            .min();
        match first_failed {
            Some(i) => (updates[i].id.0 as i32, true),
            None => (last.id.0 as i32 + 1, false),
        }
    }

    /// Stores one update's event; `Err` when storage is unavailable (retry the update later).
    /// Events the engine rejects for good are logged and skipped.
    async fn handle(&self, action: Action) -> Result<(), InboundError> {
        let Action::Submit {
            mut event,
            files,
            callback,
        } = action
        else {
            return Ok(());
        };
        self.health.received(1);
        if let InboundEvent::Message(m) = &mut event
            && let Some(id) = callback.as_ref()
        {
            let data = m.payload.clone().unwrap_or_default();
            match self.buttons().payload(&data).await.ok().flatten() {
                Some(payload) => {
                    // No label found (the message was too old to carry its keyboard): the
                    // payload is the best text there is.
                    if m.text == data {
                        m.text.clone_from(&payload);
                    }
                    m.payload = Some(payload);
                }
                None => {
                    self.answer_callback(id, Some("This button has expired."))
                        .await;
                    return Ok(());
                }
            }
        }
        if !files.is_empty()
            && let InboundEvent::Message(m) | InboundEvent::Start(m) = &mut event
        {
            for f in &files {
                m.attachments.push(self.fetch(f).await);
            }
        }
        match self.ctx.inbound.submit(&self.ctx.id, event).await {
            Ok(_) => {
                if let Some(id) = &callback {
                    self.answer_callback(id, None).await;
                }
                Ok(())
            }
            Err(InboundError::Rejected(reason)) => {
                tracing::warn!(channel = %self.ctx.id, %reason, "update rejected; skipped");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(channel = %self.ctx.id, error = %e, "update not stored; will retry");
                Err(e)
            }
        }
    }

    async fn answer_callback(&self, id: &str, text: Option<&str>) {
        use teloxide::payloads::AnswerCallbackQuerySetters;
        let mut call = self
            .bot
            .answer_callback_query(teloxide::types::CallbackQueryId(id.to_owned()));
        if let Some(t) = text {
            call = call.text(t);
        }
        // Only stops the button's spinner; the press itself is already stored.
        if let Err(e) = call.await {
            tracing::debug!(channel = %self.ctx.id, error = %e, "answerCallbackQuery failed");
        }
    }

    /// Downloads a file into the blob store, within the size limit. A file that cannot be
    /// fetched is still listed, with the reason.
    async fn fetch(&self, f: &FileRef) -> Attachment {
        let mut attachment = Attachment::new(f.name.clone(), f.content_type.clone(), f.size);
        let limit = self.config.max_file_bytes;
        if f.size > limit {
            attachment.not_kept = Some(format!("larger than the {limit}-byte limit"));
            return attachment;
        }
        let mut last_error = String::new();
        for _ in 0..2 {
            match self.download(f, limit).await {
                Ok(bytes) => match self.ctx.blobs.put(&bytes).await {
                    Ok(blob) => {
                        attachment.size = bytes.len() as u64;
                        attachment.blob = Some(blob);
                        return attachment;
                    }
                    Err(e) => last_error = e.to_string(),
                },
                Err(e) => last_error = e,
            }
        }
        tracing::warn!(channel = %self.ctx.id, file = %f.name, error = %last_error, "file not kept");
        attachment.not_kept = Some(last_error);
        attachment
    }

    async fn download(&self, f: &FileRef, limit: u64) -> Result<Vec<u8>, String> {
        let file = self
            .bot
            .get_file(f.id.clone())
            .await
            .map_err(|e| format!("getFile: {e}"))?;
        let mut stream = self.bot.download_file_stream(&file.path);
        let mut bytes = Vec::with_capacity(f.size.min(limit) as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("download: {e}"))?;
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(format!("larger than the {limit}-byte limit"));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// `callback_data` holds at most 64 bytes: longer payloads travel as a hash, kept here.
    fn buttons(&self) -> ButtonPayloads<'_> {
        ButtonPayloads::new(self.ctx.state.as_ref(), outbound::MAX_CALLBACK_DATA)
    }

    /// The replies of several parts: what was sent of each.
    fn sent_parts(&self) -> SentParts<'_> {
        SentParts::new(self.ctx.state.as_ref(), "out/")
    }

    /// Sends one part unless an earlier try already did; records it when the reply has
    /// several parts (one part is recorded by the outbox itself).
    async fn send_part<F, Fut>(
        &self,
        outbound: &Outbound,
        part: usize,
        multi: bool,
        chat: ChatId,
        send: F,
    ) -> Result<MessageId, ChannelError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<teloxide::types::Message, RequestError>>,
    {
        if multi
            && let Some(id) = self
                .sent_parts()
                .get(&outbound.id, part)
                .await
                .and_then(|s| s.parse().ok())
        {
            return Ok(MessageId(id));
        }
        self.pacer.wait(chat.0).await;
        let sent = match send().await {
            Ok(m) => {
                self.health.ok();
                self.health.sent();
                m.id
            }
            Err(e) => {
                self.health.error(&e);
                return Err(outbound::classify(e));
            }
        };
        if multi {
            self.sent_parts()
                .record(&outbound.id, part, &sent.0.to_string())
                .await?;
        }
        Ok(sent)
    }
}

fn allowed_updates() -> Vec<AllowedUpdate> {
    vec![
        AllowedUpdate::Message,
        AllowedUpdate::EditedMessage,
        AllowedUpdate::CallbackQuery,
    ]
}

async fn keyboard(inner: &Inner, outbound: &Outbound) -> Option<ReplyMarkup> {
    if outbound.buttons.is_empty() {
        return None;
    }
    let mut rows = Vec::with_capacity(outbound.buttons.len());
    for b in &outbound.buttons {
        rows.push(vec![InlineKeyboardButton::callback(
            b.label.clone(),
            inner.buttons().data(&b.payload).await,
        )]);
    }
    Some(ReplyMarkup::InlineKeyboard(InlineKeyboardMarkup::new(rows)))
}

#[async_trait::async_trait]
impl Channel for TelegramChannel {
    fn id(&self) -> &ChannelId {
        &self.inner.ctx.id
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threading: true,
            edits: true,
            attachments: true,
            typing: true,
            buttons: true,
            max_text_chars: Some(outbound::MAX_TEXT_UNITS),
        }
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<(), ChannelError> {
        let inner = &self.inner;
        let Some(me) = inner.introduce(&shutdown).await else {
            return Ok(());
        };
        if !inner.configure_delivery(&shutdown).await {
            return Ok(());
        }
        match inner.config.mode {
            Mode::Polling => inner.poll(&me, &shutdown).await,
            Mode::Webhook => shutdown.cancelled().await,
        }
        Ok(())
    }

    async fn send(
        &self,
        to: &ExternalThread,
        outbound: &Outbound,
    ) -> Result<ExternalMessageId, ChannelError> {
        let inner = &self.inner;
        let (chat, topic) = inbound::parse_thread(to)
            .ok_or_else(|| ChannelError::Permanent(format!("not a Telegram thread: {to}")))?;
        let texts = outbound::render_parts(outbound);
        let parts = texts.len() + outbound.attachments.len();
        if parts == 0 {
            return Err(ChannelError::Permanent("nothing to send".into()));
        }
        let multi = parts > 1;
        let reply_to = outbound
            .in_reply_to
            .as_ref()
            .and_then(inbound::parse_message_id)
            .filter(|(c, _)| *c == chat)
            .map(|(_, m)| ReplyParameters {
                allow_sending_without_reply: Some(true),
                ..ReplyParameters::new(m)
            });
        let mut first = None;
        let last_text = texts.len().checked_sub(1);
        for (i, html) in texts.into_iter().enumerate() {
            let markup = if Some(i) == last_text {
                keyboard(inner, outbound).await
            } else {
                None
            };
            let reply = (i == 0).then(|| reply_to.clone()).flatten();
            let id = inner
                .send_part(outbound, i, multi, chat, move || {
                    let mut call = inner
                        .bot
                        .send_message(chat, html)
                        .parse_mode(ParseMode::Html);
                    if let Some(t) = topic {
                        call = call.message_thread_id(t);
                    }
                    if let Some(r) = reply {
                        call = call.reply_parameters(r);
                    }
                    if let Some(m) = markup {
                        call = call.reply_markup(m);
                    }
                    std::future::IntoFuture::into_future(call)
                })
                .await?;
            first.get_or_insert(id);
        }
        let offset = parts - outbound.attachments.len();
        for (j, a) in outbound.attachments.iter().enumerate() {
            let id = self
                .send_file(chat, topic, outbound, offset + j, multi, a)
                .await?;
            first.get_or_insert(id);
        }
        let first = first.expect("at least one part was sent");
        Ok(inbound::message_id(chat, first))
    }

    async fn typing(&self, to: &ExternalThread) -> Result<(), ChannelError> {
        use teloxide::payloads::SendChatActionSetters;
        let (chat, topic) = inbound::parse_thread(to)
            .ok_or_else(|| ChannelError::Permanent(format!("not a Telegram thread: {to}")))?;
        let mut call = self.inner.bot.send_chat_action(chat, ChatAction::Typing);
        if let Some(t) = topic {
            call = call.message_thread_id(t);
        }
        call.await.map(|_| ()).map_err(outbound::classify)
    }

    fn health(&self) -> ChannelHealth {
        self.inner.health.snapshot()
    }

    fn http_routes(&self) -> Option<axum::Router> {
        if self.inner.config.mode != Mode::Webhook {
            return None;
        }
        let path = Self::webhook_path(&self.inner.ctx.id);
        Some(
            axum::Router::new()
                .route(&path, axum::routing::post(receive))
                .with_state(self.inner.clone()),
        )
    }
}

impl TelegramChannel {
    async fn send_file(
        &self,
        chat: ChatId,
        topic: Option<ThreadId>,
        outbound: &Outbound,
        part: usize,
        multi: bool,
        a: &Attachment,
    ) -> Result<MessageId, ChannelError> {
        let inner = &self.inner;
        let blob = a
            .blob
            .as_ref()
            .ok_or_else(|| ChannelError::Permanent(format!("{}: no stored content", a.name)))?;
        let bytes = inner
            .ctx
            .blobs
            .get(blob)
            .await
            .map_err(|e| ChannelError::retryable(e.to_string()))?
            .ok_or_else(|| ChannelError::Permanent(format!("{}: content is gone", a.name)))?;
        let as_photo = matches!(
            a.content_type.as_str(),
            "image/jpeg" | "image/png" | "image/webp"
        ) && (bytes.len() as u64) <= MAX_PHOTO_BYTES;
        let file = InputFile::memory(bytes).file_name(a.name.clone());
        inner
            .send_part(outbound, part, multi, chat, || async {
                if as_photo {
                    let mut call = inner.bot.send_photo(chat, file);
                    if let Some(t) = topic {
                        call = call.message_thread_id(t);
                    }
                    call.await
                } else {
                    let mut call = inner.bot.send_document(chat, file);
                    if let Some(t) = topic {
                        call = call.message_thread_id(t);
                    }
                    call.await
                }
            })
            .await
    }
}

/// Web hook mode: one update per request, answered 200 only once it is stored.
async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    use subtle::ConstantTimeEq;
    let expected = inner.webhook_secret.as_deref().unwrap_or_default();
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if expected.is_empty() || !bool::from(given.ct_eq(expected.as_bytes())) {
        return http_error(
            StatusCode::UNAUTHORIZED,
            "bad_secret",
            "missing or wrong X-Telegram-Bot-Api-Secret-Token",
        );
    }
    let update: Update = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            return http_error(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("not a Telegram update: {e}"),
            );
        }
    };
    let Some(me) = inner.me() else {
        return http_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "the connector has not reached Telegram yet",
        );
    };
    let action = inbound::action(&update, &me, inner.config.groups, inner.config.topics);
    match inner.handle(action).await {
        Ok(()) => (StatusCode::OK, axum::Json(serde_json::json!({}))).into_response(),
        Err(e) => http_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e),
    }
}
