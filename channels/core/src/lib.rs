//! `switchboard-channel`: the contract between Switchboard and a chat network.
//!
//! # Layout
//! - [`Channel`]: one connection to one network. It turns wire events into [`InboundEvent`]s
//!   and [`Outbound`] replies into wire calls. It holds no conversation state.
//! - [`Inbound`]: the sink a connector hands events to. `submit` returns only after the event is
//!   stored durably, so a connector advances its cursor (update offset, IMAP UID, gateway
//!   sequence) only past what is safe.
//! - [`ChannelState`]: a small durable key-value space private to one channel instance (cursors,
//!   web chat transcripts), so connectors never touch the store directly.
//! - Opaque ids ([`ChannelId`], [`ExternalThread`], [`ExternalUser`], [`ExternalMessageId`]):
//!   the core never parses a network's ids.
//! - [`markup`]: the light Markdown of bot answers, rendered for each network.
//! - [`ChannelFactory`]: a connector's config type, validated and built; the daemon lists
//!   each factory once.
//!
//! A connector crate depends on this crate only: it knows its network and nothing of the engine,
//! the bot or the store.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod ledger;
pub mod memory;
pub use memory::MemoryState;
pub mod limit;
pub mod markup;
pub use markup::TextFormat;

macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

opaque_id!(
    /// The configured name of one channel instance, e.g. `webhook` or `telegram-main`.
    ChannelId
);
opaque_id!(
    /// Where a conversation lives on the network: a Telegram chat, an email thread root, a web
    /// chat session. Together with the [`ChannelId`] it identifies one conversation.
    ExternalThread
);
opaque_id!(
    /// The customer's identity on the network: a Telegram user id, an email address.
    ExternalUser
);
opaque_id!(
    /// The network's own id of one message, used to drop duplicate deliveries.
    ExternalMessageId
);

impl ExternalMessageId {
    /// An id the sender's software chose rather than the network (a web chat client's id, a
    /// web hook caller's, an email's Message-ID), made unique per `sender` (a chat session, an
    /// `external_user`, a From address): two customers who pick the same id are two messages.
    /// The sender's length leads, so no choice of the two parts can collide with another.
    pub fn scoped(sender: &str, id: &str) -> Self {
        Self(format!("{}:{sender}:{id}", sender.len()))
    }

    /// The id as its sender chose it: the last part of a [`scoped`](Self::scoped) id, or the
    /// whole of any other (an email reply names the customer's Message-ID this way).
    pub fn as_sent(&self) -> &str {
        let unscoped = self.0.split_once(':').and_then(|(len, rest)| {
            let len: usize = len.parse().ok()?;
            rest.get(len..)?.strip_prefix(':')
        });
        unscoped.unwrap_or(&self.0)
    }
}

/// What a connector can do beyond plain text; the engine adapts what it sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Replies can be attached to the message they answer.
    pub threading: bool,
    /// Sent messages can be edited later.
    pub edits: bool,
    /// Files can travel in and out.
    pub attachments: bool,
    /// A "typing…" indicator can be shown.
    pub typing: bool,
    /// Quick-reply buttons (clarifications, "talk to a person") can be shown.
    pub buttons: bool,
    /// Longest text one network message can carry, in characters; `None` for no limit.
    pub max_text_chars: Option<usize>,
}

/// Metadata of a file that came with a message. The bytes, where kept, are stored separately.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// File name as the customer sent it.
    pub name: String,
    /// MIME type as declared by the sender (not trusted for rendering).
    pub content_type: String,
    /// Size in bytes as declared or measured.
    pub size: u64,
    /// Where the network serves the file, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The stored bytes ([`Blobs`]), when they were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobId>,
    /// Why the bytes were not kept (over the size limit, download failed), if they were not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_kept: Option<String>,
}

impl Attachment {
    /// Metadata only: nothing stored yet.
    pub fn new(name: impl Into<String>, content_type: impl Into<String>, size: u64) -> Self {
        Attachment {
            name: name.into(),
            content_type: content_type.into(),
            size,
            url: None,
            blob: None,
            not_kept: None,
        }
    }
}

/// A customer identity as seen on the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    pub id: ExternalUser,
    /// Display name, if the network tells one.
    pub name: Option<String>,
}

/// A new customer message, normalised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundMessage {
    pub thread: ExternalThread,
    pub sender: Sender,
    /// The network's id for this message; the same id delivered twice is stored once.
    pub message_id: ExternalMessageId,
    pub text: String,
    pub attachments: Vec<Attachment>,
    /// When the customer sent it (unix milliseconds), if the network says.
    pub sent_at_ms: Option<i64>,
    /// Why a machine sent it (an auto-reply, a mailing list), if one did: stored for people,
    /// never answered by the bot, so two robots cannot talk in a loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automated: Option<String>,
    /// The id this message would have had before its channel scoped ids to the sender
    /// ([`ExternalMessageId::scoped`]): a message stored under it **in the same conversation**
    /// is this one delivered again (a retry across the upgrade); in another conversation it
    /// is another customer's, and this one is new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earlier_id: Option<ExternalMessageId>,
    /// The subject the customer gave this message (email) when it starts a topic; a reply's
    /// "Re: …" is left out. Shown to agents, searched, and read by the bot before the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// A button the customer pressed: what it stands for ([`Button::payload`]); `text` is
    /// the label they saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

/// The customer changed a message they sent earlier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundEdit {
    pub thread: ExternalThread,
    /// The network's id of the edited message (as first delivered).
    pub message_id: ExternalMessageId,
    /// The whole new text.
    pub text: String,
    /// When the customer edited it (unix milliseconds), if the network says.
    pub edited_at_ms: Option<i64>,
}

/// Everything a connector can report to the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboundEvent {
    Message(InboundMessage),
    /// The customer opened the conversation on purpose (Telegram `/start`): stored like a
    /// message, and the bot greets with the configured welcome instead of answering it.
    Start(InboundMessage),
    Edit(InboundEdit),
    /// The customer deleted a message they sent earlier: it stays stored, marked deleted, for
    /// the agents' record.
    Delete {
        thread: ExternalThread,
        message_id: ExternalMessageId,
    },
    /// The network reported, later, that a reply it had accepted was not delivered (an
    /// email bounce). `outbound_id` is the [`Outbound::id`] the reply was sent with.
    DeliveryFailed {
        thread: ExternalThread,
        outbound_id: String,
        reason: String,
    },
}

impl InboundEvent {
    pub fn thread(&self) -> &ExternalThread {
        match self {
            Self::Message(m) | Self::Start(m) => &m.thread,
            Self::Edit(e) => &e.thread,
            Self::Delete { thread, .. } => thread,
            Self::DeliveryFailed { thread, .. } => thread,
        }
    }
}

/// What the engine answered for an accepted event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Stored now, durably.
    Stored,
    /// Nothing to change: already stored earlier (duplicate delivery), or an edit of a
    /// message that was never stored or already says that.
    Duplicate,
}

/// Why an event was not accepted. Nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// The event is not acceptable (too large, empty, unknown channel); retrying will not help.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Storage cannot take it now (disk full, shutting down); the network should retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// The engine's side of a connector: where inbound events go.
#[async_trait::async_trait]
pub trait Inbound: Send + Sync + 'static {
    /// Stores `event` for the channel `channel` and returns once it is durable.
    /// Connectors must not acknowledge the event to their network before this returns `Ok`.
    async fn submit(
        &self,
        channel: &ChannelId,
        event: InboundEvent,
    ) -> Result<Accepted, InboundError>;
}

/// A reply button: the label shown and the text sent back when pressed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    pub label: String,
    pub payload: String,
}

/// Who wrote an outbound message, as far as the customer is told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum OutboundAuthor {
    Bot,
    Agent(String),
    System,
}

/// One reply to deliver. `id` is stable across retries and restarts: connectors pass it to the
/// network as an idempotency key where the network supports one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbound {
    pub id: String,
    pub author: OutboundAuthor,
    pub text: String,
    #[serde(default)]
    pub buttons: Vec<Button>,
    /// The customer message this answers, for networks with threading.
    #[serde(default)]
    pub in_reply_to: Option<ExternalMessageId>,
    /// How `text` is written; connectors render it for their network ([`markup`]).
    #[serde(default, skip_serializing_if = "TextFormat::is_plain")]
    pub format: TextFormat,
    /// Files to send after the text; each has a `blob` to read from [`Blobs`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

impl Outbound {
    /// The text without markup, for networks that show plain text.
    pub fn plain_text(&self) -> String {
        match self.format {
            TextFormat::Plain => self.text.clone(),
            TextFormat::Markdown => markup::to_plain(&self.text),
        }
    }

    /// The text as safe HTML, lines joined by `newline`.
    pub fn html(&self, newline: &str) -> String {
        match self.format {
            TextFormat::Plain => markup::escape_html(&self.text).replace('\n', newline),
            TextFormat::Markdown => markup::to_html(&self.text, newline),
        }
    }

    /// The buttons as numbered lines and how to choose, in the language of the text, for
    /// networks without buttons (a reply with the number picks that option); `None` without
    /// buttons.
    pub fn numbered_options(&self) -> Option<String> {
        if self.buttons.is_empty() {
            return None;
        }
        let mut out: Vec<String> = self
            .buttons
            .iter()
            .enumerate()
            .map(|(i, b)| format!("{}. {}", i + 1, b.label))
            .collect();
        let chinese = self
            .text
            .chars()
            .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
        out.push(String::new());
        out.push(if chinese {
            "请回复选项的数字。".to_owned()
        } else {
            "Reply with the number of your choice.".to_owned()
        });
        Some(out.join("\n"))
    }

    /// [`Outbound::plain_text`] followed by [`Outbound::numbered_options`].
    pub fn plain_text_with_options(&self) -> String {
        match self.numbered_options() {
            Some(options) => format!("{}\n\n{options}", self.plain_text()),
            None => self.plain_text(),
        }
    }
}

/// A failed network call, classified so the outbox knows what to do.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Worth retrying; `after` is the network's own hint (HTTP 429 `retry_after`).
    #[error("temporary failure: {reason}")]
    Retryable {
        reason: String,
        after: Option<Duration>,
    },
    /// Retrying cannot help (malformed request, bad credentials).
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// The customer cannot be reached on this thread any more (they blocked the bot, left
    /// the chat, deleted the account). The conversation is marked unreachable until they
    /// write again.
    #[error("customer unreachable: {0}")]
    Unreachable(String),
}

impl ChannelError {
    pub fn retryable(reason: impl Into<String>) -> Self {
        Self::Retryable {
            reason: reason.into(),
            after: None,
        }
    }
}

/// Errors of the per-channel key-value space.
#[derive(Debug, thiserror::Error)]
#[error("channel state: {0}")]
pub struct StateError(pub String);

/// One stored pair of a [`ChannelState`].
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// A durable key-value space private to one channel instance.
///
/// Writes are atomic per call; `sync` returns once every earlier write is on disk.
#[async_trait::async_trait]
pub trait ChannelState: Send + Sync + 'static {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Writes all pairs atomically.
    async fn put_all(&self, pairs: &[(&[u8], &[u8])]) -> Result<(), StateError>;
    /// Removes all keys atomically (absent keys are fine).
    async fn remove_all(&self, keys: &[&[u8]]) -> Result<(), StateError>;
    /// All pairs whose key starts with `prefix`, after `after` (exclusive) when given, in key
    /// order, at most `limit`.
    async fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StateError>;
    /// A number that grows with each call, unique for this channel for the life of the store.
    async fn next_id(&self) -> Result<u64, StateError>;
    async fn sync(&self) -> Result<(), StateError>;
}

opaque_id!(
    /// The name of stored file bytes: the SHA-256 of the content, in hex.
    BlobId
);

/// Stored file bytes (attachments in and out), content-addressed and durable once `put`
/// returns.
#[async_trait::async_trait]
pub trait Blobs: Send + Sync + 'static {
    async fn put(&self, bytes: &[u8]) -> Result<BlobId, StateError>;
    async fn get(&self, id: &BlobId) -> Result<Option<Vec<u8>>, StateError>;
}

/// What a connector is built with (its factory input, like Vector's `SourceContext`).
#[derive(Clone)]
pub struct ChannelContext {
    pub id: ChannelId,
    pub inbound: Arc<dyn Inbound>,
    pub state: Arc<dyn ChannelState>,
    pub blobs: Arc<dyn Blobs>,
}

/// A connector's configuration, and how it becomes a channel: what `type = "..."` in a
/// `[channels.ID]` section names (Vector's `SourceConfig` is the model). The daemon lists
/// every factory once; adding a connector is its crate plus that one line.
pub trait ChannelFactory:
    serde::de::DeserializeOwned + Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static
{
    /// The `type` value that picks this connector.
    const TYPE: &'static str;

    /// Every problem of this configuration, each a sentence naming the key
    /// (`[channels.ID] key ...`), for `check-config` and start-up; none when it is usable.
    fn validate(&self, id: &ChannelId) -> Vec<String>;

    /// Builds the channel from its configuration. No network yet: [`Channel::run`] connects.
    /// It may read its [`ChannelState`] (a kept key, a cursor).
    fn build(
        self,
        ctx: ChannelContext,
    ) -> impl std::future::Future<Output = Result<Arc<dyn Channel>, BuildError>> + Send;
}

/// A connector's `build` result as a factory answers it.
pub fn built<C: Channel + 'static>(
    channel: Result<C, String>,
) -> Result<Arc<dyn Channel>, BuildError> {
    channel
        .map(|c| Arc::new(c) as Arc<dyn Channel>)
        .map_err(BuildError)
}

/// A channel could not be built from its configuration (a secret that cannot be read, an
/// address that does not parse...); the message says what and where.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// How a connection is doing, for `/readyz`, the API and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelHealth {
    /// The last network call succeeded.
    pub ok: bool,
    /// When a network call last succeeded (a poll, a send), unix milliseconds.
    pub last_ok_ms: Option<i64>,
    /// Failed network calls since start.
    pub errors: u64,
    pub last_error: Option<String>,
    /// Received events and sent messages since start.
    pub received: u64,
    pub sent: u64,
    /// The connection's state, for connectors that hold one (`connecting`, `connected`,
    /// `resuming`, `reconnecting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// When the network last sent an event (unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_ms: Option<i64>,
}

/// Thread-safe counters behind [`ChannelHealth`].
#[derive(Debug, Default)]
pub struct HealthTracker(std::sync::Mutex<ChannelHealth>);

impl HealthTracker {
    fn with(&self, f: impl FnOnce(&mut ChannelHealth)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }
    /// A network call succeeded.
    pub fn ok(&self) {
        self.with(|h| {
            h.ok = true;
            h.last_ok_ms = Some(now_ms());
        });
    }
    /// A network call failed.
    pub fn error(&self, error: impl fmt::Display) {
        self.with(|h| {
            h.ok = false;
            h.errors += 1;
            h.last_error = Some(error.to_string());
        });
    }
    pub fn received(&self, n: u64) {
        self.with(|h| h.received += n);
    }
    /// The connection changed state (see [`ChannelHealth::state`]).
    pub fn state(&self, state: &str) {
        self.with(|h| h.state = Some(state.to_owned()));
    }
    /// The network sent an event.
    pub fn event(&self) {
        self.with(|h| h.last_event_ms = Some(now_ms()));
    }
    pub fn sent(&self) {
        self.with(|h| h.sent += 1);
    }
    pub fn snapshot(&self) -> ChannelHealth {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One connection to one chat network.
#[async_trait::async_trait]
pub trait Channel: Send + Sync + 'static {
    fn id(&self) -> &ChannelId;

    fn capabilities(&self) -> Capabilities;

    /// Runs until `shutdown` fires. Reconnects by itself; reports trouble through logs and
    /// health, not by returning early. Connectors that only receive over HTTP just wait.
    async fn run(&self, shutdown: CancellationToken) -> Result<(), ChannelError>;

    /// Delivers one reply. Must be idempotent by `outbound.id` where the network allows:
    /// the outbox retries after timeouts and restarts.
    async fn send(
        &self,
        to: &ExternalThread,
        outbound: &Outbound,
    ) -> Result<ExternalMessageId, ChannelError>;

    /// Shows the customer that a reply is being prepared ("typing…"), where the network can.
    async fn typing(&self, _to: &ExternalThread) -> Result<(), ChannelError> {
        Ok(())
    }

    /// How the connection is doing. Connectors without a connection of their own report
    /// the default.
    fn health(&self) -> ChannelHealth {
        ChannelHealth {
            ok: true,
            ..Default::default()
        }
    }

    /// Routes this connector serves on the daemon's HTTP listener (web hooks, web chat).
    /// Paths must be absolute and unique to the channel id.
    fn http_routes(&self) -> Option<axum::Router> {
        None
    }

    /// Erases what the connector keeps of one conversation in its own state (transcripts,
    /// copies of messages): the customer asked to be forgotten. The store's records are erased
    /// separately.
    async fn forget(&self, _thread: &ExternalThread) -> Result<(), ChannelError> {
        Ok(())
    }
}

/// Where a secret comes from: inline (discouraged outside development), an environment
/// variable, or a file (systemd `LoadCredential=`). Exactly one must be set.
pub fn resolve_secret(
    what: &str,
    inline: Option<&str>,
    env: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<String, String> {
    match (inline, env, file) {
        (Some(s), None, None) => Ok(s.to_owned()),
        (None, Some(var), None) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
            _ => Err(format!("{what}: environment variable {var} is not set")),
        },
        (None, None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => {
                warn_if_shared(what, path);
                Ok(v.trim().to_owned())
            }
            Ok(_) => Err(format!("{what}: file {} is empty", path.display())),
            Err(e) => Err(format!("{what}: cannot read {}: {e}", path.display())),
        },
        (None, None, None) => Err(format!(
            "{what}: no secret given (set one of the inline value, *_env or *_file)"
        )),
        _ => Err(format!(
            "{what}: give only one of the inline value, *_env or *_file"
        )),
    }
}

/// The longest message text stored, from a customer on any channel or from an agent.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// The shortest shared secret accepted for signing or checking requests (a web hook's HMAC
/// key, Telegram's `secret_token`): shorter ones can be guessed.
pub const MIN_SECRET_BYTES: usize = 16;

/// [`resolve_secret`] for a shared secret that authenticates requests: an empty or short one
/// (under [`MIN_SECRET_BYTES`]) is refused, so an unset `${VAR:-}` or a `secret = ""` never
/// lets anyone sign.
pub fn resolve_signing_secret(
    what: &str,
    inline: Option<&str>,
    env: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<String, String> {
    let secret = resolve_secret(what, inline, env, file)?;
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "{what}: the secret is {} bytes; use at least {MIN_SECRET_BYTES} random ones \
             (e.g. `openssl rand -hex 32`)",
            secret.len()
        ));
    }
    Ok(secret)
}

/// Warns when a secret's file can be read by other users than its owner.
fn warn_if_shared(what: &str, path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        // Once per file: the config check and the channel both read it.
        static WARNED: std::sync::Mutex<Vec<std::path::PathBuf>> =
            std::sync::Mutex::new(Vec::new());
        let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
        if mode & 0o077 != 0 && !warned.iter().any(|p| p == path) {
            warned.push(path.to_owned());
            tracing::warn!(
                "{what}: {} can be read by other users (mode {mode:o}); chmod 600 it",
                path.display()
            );
        }
    }
}

/// The one error shape every HTTP endpoint of Switchboard answers with:
/// `{"error": {"code": "...", "message": "..."}}`.
pub fn http_error(
    status: axum::http::StatusCode,
    code: &str,
    message: impl fmt::Display,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = serde_json::json!({ "error": { "code": code, "message": message.to_string() } });
    (status, axum::Json(body)).into_response()
}

/// Sleeps `d` unless `stop` fires first; `false` when it did (connectors' retry loops).
pub async fn sleep_or_stop(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Exponential backoff for a connector's reconnect loop: doubles from `first` up to `max`,
/// and starts over once a connection has held for `healthy` (a hiccup after a day online is
/// retried at once, not after the last outage's longest wait).
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    healthy: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration, healthy: Duration) -> Backoff {
        Backoff {
            first,
            max,
            healthy,
            next: first,
        }
    }

    /// How long to wait after a connection (or an attempt) that lasted `lasted` ended.
    pub fn after(&mut self, lasted: Duration) -> Duration {
        if lasted >= self.healthy {
            self.next = self.first;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_starts_over_after_a_healthy_connection() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(30), s(60));
        // (how long the connection lasted, the wait that follows)
        let table = [
            (s(0), s(1)),
            (s(2), s(2)),
            (s(0), s(4)),
            (s(0), s(8)),
            (s(0), s(16)),
            (s(0), s(30)),
            (s(59), s(30)),
            (s(3600), s(1)),
            (s(0), s(2)),
            (s(60), s(1)),
        ];
        for (i, (lasted, wait)) in table.into_iter().enumerate() {
            assert_eq!(b.after(lasted), wait, "row {i}");
        }
    }
}
