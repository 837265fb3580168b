//! The customer side of web chat: what the widget on a shop's page talks to.
//!
//! - `POST /chat/{channel}/sessions` starts a session and returns a session token.
//! - `POST /chat/{channel}/messages` (bearer session token) sends a customer message.
//! - `GET /chat/{channel}/transcript` (bearer or `?token=`) returns the session's transcript.
//! - `GET /chat/{channel}/events?token=` streams new transcript entries as Server-Sent Events,
//!   resuming after `Last-Event-ID`.
//! - `GET /chat/{channel}/widget.js` is the embeddable widget; `GET /chat/{channel}` a page
//!   that is nothing but the widget, for links and mobile apps.
//!
//! Sessions are bearer tokens, never cookies, so the API answers any origin listed in
//! `allowed_origins` (default: any) with CORS headers: the widget runs on the shop's pages.
//!
//! The transcript lives in this channel's own durable state, so a reload shows the whole
//! conversation and a reply counts as delivered once it is in the transcript.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use switchboard_channel::limit::Slots;
use switchboard_channel::{
    Button, Capabilities, Channel, ChannelContext, ChannelError, ChannelId, ExternalMessageId,
    ExternalThread, ExternalUser, InboundEvent, InboundMessage, Outbound, OutboundAuthor, Sender,
    StateError, now_ms,
};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::CancellationToken;

use crate::{HookError, accepted, check_id, parse_json, require_json, within_limit};

/// Configuration of a web chat channel (`type = "webchat"` in `[[channels]]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebchatConfig {
    /// Largest accepted request body.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Longest accepted customer message, in characters.
    #[serde(default = "default_max_text")]
    pub max_text_chars: usize,
    /// Origins (`https://shop.example`) whose pages may embed the widget; `*` allows any.
    #[serde(default = "any_origin")]
    pub allowed_origins: Vec<String>,
    /// Header of the widget and title of the chat page.
    #[serde(default = "default_title")]
    pub title: String,
    /// Messages one chat session may send per minute; more get 429 with `Retry-After`.
    /// (Requests per IP address are limited by `[http] requests_per_minute_per_ip`.) 0 means
    /// no limit.
    #[serde(default = "default_messages_per_minute")]
    pub max_messages_per_minute: u32,
    /// Event streams one chat session may hold open at once (a customer with a few tabs);
    /// more get 429 with `Retry-After`. (Streams per IP address are limited by `[http]
    /// max_chat_streams_per_ip`.) 0 means no limit.
    #[serde(default = "default_streams_per_session")]
    pub max_streams_per_session: usize,
    /// A session unused for this long ends: its token is refused (401 `session_expired`) and
    /// the widget starts a new one. 0 keeps sessions forever.
    #[serde(default = "default_session_idle")]
    pub session_idle_secs: u64,
}

fn default_streams_per_session() -> usize {
    4
}
fn default_session_idle() -> u64 {
    30 * 86_400
}
/// Last use of a session is written at most this often (ms): a token used all day costs one
/// write an hour, not one per request.
const ACTIVITY_GRANULARITY_MS: i64 = 60_000;

fn default_messages_per_minute() -> u32 {
    20
}

fn any_origin() -> Vec<String> {
    vec!["*".into()]
}
fn default_title() -> String {
    "Chat with us".into()
}

fn default_max_body() -> usize {
    64 * 1024
}
fn default_max_text() -> usize {
    4000
}

/// One line of a session's transcript, as the widget shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    /// `customer`, `bot`, `agent` or `system`.
    pub from: String,
    /// The agent's display name, for agent replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Plain text.
    pub text: String,
    /// The same as safe HTML (only `b i code a br` tags), for replies written in light
    /// Markdown (bot answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<Button>,
    pub at_ms: i64,
}

/// The web chat connector.
pub struct WebchatChannel {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: ChannelContext,
    config: WebchatConfig,
    /// Signs session tokens; generated once and kept in the channel's state.
    session_key: Vec<u8>,
    /// New transcript entries, for open event streams.
    live: broadcast::Sender<Arc<(String, Entry)>>,
    /// Fires on shutdown, ending open event streams.
    closing: CancellationToken,
    /// Messages per session and minute.
    limit: switchboard_channel::limit::RateLimiter,
    /// Open event streams per session.
    streams: Arc<Slots<String>>,
}

const SESSION_KEY: &[u8] = b"session_key";

fn transcript_prefix(session: &str) -> Vec<u8> {
    format!("t/{session}/").into_bytes()
}

fn transcript_key(session: &str, seq: u64) -> Vec<u8> {
    let mut k = transcript_prefix(session);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn state_err(e: StateError) -> ChannelError {
    ChannelError::retryable(e.to_string())
}

impl switchboard_channel::ChannelFactory for WebchatConfig {
    const TYPE: &'static str = "webchat";

    fn validate(&self, id: &ChannelId) -> Vec<String> {
        self.allowed_origins
            .iter()
            .filter_map(|origin| {
                let why = check_origin(origin).err()?;
                Some(format!("[channels.{id}] allowed_origins: `{origin}` {why}"))
            })
            .collect()
    }

    async fn build(
        self,
        ctx: ChannelContext,
    ) -> Result<Arc<dyn Channel>, switchboard_channel::BuildError> {
        switchboard_channel::built(WebchatChannel::build(self, ctx).await)
    }
}

/// An origin as browsers send it: `*`, or `scheme://host[:port]` and nothing more.
pub fn check_origin(origin: &str) -> Result<(), &'static str> {
    if origin == "*" {
        return Ok(());
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err("is not an origin like https://shop.example");
    };
    if !matches!(scheme, "https" | "http") {
        return Err("must start with https:// (or http://)");
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err("must be scheme://host[:port], with no path, query or user");
    }
    if let Some((_, port)) = rest.rsplit_once(':')
        && !rest.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err("has a port that is not a number");
    }
    Ok(())
}

impl WebchatChannel {
    pub async fn build(config: WebchatConfig, ctx: ChannelContext) -> Result<Self, String> {
        let session_key = match ctx
            .state
            .get(SESSION_KEY)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(k) => k,
            None => {
                let mut k = vec![0u8; 32];
                rand::rng().fill_bytes(&mut k);
                ctx.state
                    .put_all(&[(SESSION_KEY, &k)])
                    .await
                    .map_err(|e| e.to_string())?;
                k
            }
        };
        let (live, _) = broadcast::channel(1024);
        Ok(Self {
            inner: Arc::new(Inner {
                ctx,
                limit: switchboard_channel::limit::RateLimiter::per_minute(
                    config.max_messages_per_minute,
                ),
                streams: Slots::new(config.max_streams_per_session),
                config,
                session_key,
                live,
                closing: CancellationToken::new(),
            }),
        })
    }
}

impl Inner {
    fn token_for(&self, session: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.session_key).expect("any key length");
        mac.update(session.as_bytes());
        format!("{session}.{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Returns the session a token belongs to, if the token is genuine.
    fn session_of(&self, token: &str) -> Option<String> {
        let (session, _) = token.split_once('.')?;
        let expected = self.token_for(session);
        bool::from(expected.as_bytes().ct_eq(token.as_bytes())).then(|| session.to_owned())
    }

    /// Refuses a session unused for longer than `session_idle_secs`, else notes its use (at
    /// most once a minute). A session's clock starts at its first use (sessions are made
    /// without a write, and those from before this was recorded count as used now).
    async fn still_active(&self, session: &str, now: i64) -> Result<(), HookError> {
        let key = format!("la/{session}").into_bytes();
        let last = self
            .ctx
            .state
            .get(&key)
            .await
            .map_err(unavailable)?
            .and_then(|v| v.try_into().ok())
            .map(i64::from_be_bytes);
        let idle_ms = self.config.session_idle_secs.saturating_mul(1000) as i64;
        if let Some(last) = last {
            if idle_ms > 0 && now - last > idle_ms {
                return Err(HookError::new(
                    StatusCode::UNAUTHORIZED,
                    "session_expired",
                    "this chat session ended after a time without use; start a new one",
                ));
            }
            let granularity = if idle_ms > 0 {
                ACTIVITY_GRANULARITY_MS.min(idle_ms / 4)
            } else {
                ACTIVITY_GRANULARITY_MS
            };
            if now - last < granularity {
                return Ok(());
            }
        }
        self.ctx
            .state
            .put_all(&[(&key, &now.to_be_bytes())])
            .await
            .map_err(unavailable)
    }

    /// Appends an entry under `extra_key` (an idempotency marker) unless that marker exists.
    /// Returns the entry's sequence number.
    async fn append(
        &self,
        session: &str,
        marker: &[u8],
        mut entry: Entry,
    ) -> Result<u64, StateError> {
        if let Some(seq) = self.ctx.state.get(marker).await? {
            return Ok(u64::from_be_bytes(seq.try_into().unwrap_or_default()));
        }
        entry.seq = self.ctx.state.next_id().await?;
        let value = serde_json::to_vec(&entry).map_err(|e| StateError(e.to_string()))?;
        let seq_bytes = entry.seq.to_be_bytes();
        self.ctx
            .state
            .put_all(&[
                (&transcript_key(session, entry.seq), &value),
                (marker, &seq_bytes),
            ])
            .await?;
        self.ctx.state.sync().await?;
        let seq = entry.seq;
        let _ = self.live.send(Arc::new((session.to_owned(), entry)));
        Ok(seq)
    }

    async fn transcript(
        &self,
        session: &str,
        after: Option<u64>,
    ) -> Result<Vec<Entry>, StateError> {
        let prefix = transcript_prefix(session);
        let after_key = after.map(|s| transcript_key(session, s));
        let rows = self
            .ctx
            .state
            .scan(&prefix, after_key.as_deref(), 10_000)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect())
    }
}

#[async_trait::async_trait]
impl Channel for WebchatChannel {
    fn id(&self) -> &ChannelId {
        &self.inner.ctx.id
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            buttons: true,
            ..Capabilities::default()
        }
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<(), ChannelError> {
        shutdown.cancelled().await;
        self.inner.closing.cancel();
        Ok(())
    }

    async fn send(
        &self,
        to: &ExternalThread,
        outbound: &Outbound,
    ) -> Result<ExternalMessageId, ChannelError> {
        let (from, name) = match &outbound.author {
            OutboundAuthor::Bot => ("bot", None),
            OutboundAuthor::Agent(n) => ("agent", Some(n.clone())),
            OutboundAuthor::System => ("system", None),
        };
        let entry = Entry {
            seq: 0,
            from: from.into(),
            name,
            text: outbound.plain_text(),
            html: (!outbound.format.is_plain()).then(|| outbound.html("<br>")),
            buttons: outbound.buttons.clone(),
            at_ms: now_ms(),
        };
        let marker = format!("o/{}", outbound.id).into_bytes();
        let seq = self
            .inner
            .append(&to.0, &marker, entry)
            .await
            .map_err(state_err)?;
        Ok(ExternalMessageId(format!("{}:{seq}", to.0)))
    }

    async fn forget(&self, thread: &ExternalThread) -> Result<(), ChannelError> {
        let state = &self.inner.ctx.state;
        let prefix = transcript_prefix(&thread.0);
        loop {
            let rows = state.scan(&prefix, None, 1_000).await.map_err(state_err)?;
            if rows.is_empty() {
                break;
            }
            let keys: Vec<&[u8]> = rows.iter().map(|(k, _)| k.as_slice()).collect();
            state.remove_all(&keys).await.map_err(state_err)?;
        }
        state.sync().await.map_err(state_err)
    }

    fn http_routes(&self) -> Option<axum::Router> {
        let base = format!("/chat/{}", self.inner.ctx.id);
        let router = axum::Router::new()
            .route(&format!("{base}/sessions"), post(start_session))
            .route(&format!("{base}/messages"), post(customer_message))
            .route(&format!("{base}/transcript"), get(transcript))
            .route(&format!("{base}/events"), get(events))
            .layer(DefaultBodyLimit::max(self.inner.config.max_body_bytes))
            .layer(axum::middleware::from_fn_with_state(
                self.inner.clone(),
                cors,
            ))
            .route(&format!("{base}/widget.js"), get(widget))
            .route(&base, get(page))
            .with_state(self.inner.clone());
        Some(router)
    }
}

#[derive(Serialize)]
struct SessionCreated {
    session_id: String,
    token: String,
}

async fn start_session(State(chat): State<Arc<Inner>>) -> Response {
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    let session_id = hex::encode(raw);
    let token = chat.token_for(&session_id);
    (
        StatusCode::CREATED,
        axum::Json(SessionCreated { session_id, token }),
    )
        .into_response()
}

#[derive(Deserialize, Default)]
struct TokenQuery {
    token: Option<String>,
}

/// The session named by a bearer header or a `token` query parameter (EventSource cannot set
/// headers).
async fn authorize(
    chat: &Inner,
    headers: &HeaderMap,
    query: &TokenQuery,
) -> Result<String, HookError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token = bearer.or(query.token.as_deref());
    let session = token
        .and_then(|t| chat.session_of(t.trim()))
        .ok_or_else(|| {
            HookError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid web chat session token is required",
            )
        })?;
    chat.still_active(&session, now_ms()).await?;
    Ok(session)
}

fn unavailable(e: StateError) -> HookError {
    HookError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerMessage {
    text: String,
    /// The widget's own id for the message, unique within its session, so a retried send is
    /// stored once (another session may use the same id).
    #[serde(default)]
    client_message_id: Option<String>,
    /// Display name the customer gave, if any.
    #[serde(default)]
    name: Option<String>,
    /// For a button press: the button's label, stored and shown as the message's text;
    /// `text` carries the button's payload (what the bot reads).
    #[serde(default)]
    label: Option<String>,
}

async fn customer_message(
    State(chat): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, HookError> {
    let session = authorize(&chat, &headers, &TokenQuery::default()).await?;
    require_json(&headers)?;
    let msg: CustomerMessage = parse_json(&body?)?;
    within_limit(&chat.limit, &session)?;
    if msg.text.trim().is_empty() {
        return Err(HookError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_message",
            "text is empty",
        ));
    }
    if msg.text.chars().count() > chat.config.max_text_chars {
        return Err(HookError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text_too_long",
            format!(
                "text is longer than {} characters",
                chat.config.max_text_chars
            ),
        ));
    }
    crate::check_fields("", msg.name.as_deref(), &[])?;
    let message_id = match msg.client_message_id {
        Some(id) => {
            check_id("client_message_id", &id)?;
            id
        }
        None => {
            let mut raw = [0u8; 12];
            rand::rng().fill_bytes(&mut raw);
            hex::encode(raw)
        }
    };
    let (text, payload) = match msg.label {
        Some(label) if !label.trim().is_empty() => {
            (label.chars().take(200).collect(), Some(msg.text))
        }
        _ => (msg.text, None),
    };
    let event = InboundEvent::Message(InboundMessage {
        thread: ExternalThread(session.clone()),
        sender: Sender {
            id: ExternalUser(format!("webchat:{session}")),
            name: msg.name,
        },
        // The client picks its ids: unique within its session, not across sessions.
        message_id: ExternalMessageId::scoped(&session, &message_id),
        text: text.clone(),
        attachments: vec![],
        sent_at_ms: None,
        automated: None,
        earlier_id: Some(ExternalMessageId(message_id.clone())),
        subject: None,
        payload,
    });
    let outcome = chat.ctx.inbound.submit(&chat.ctx.id, event).await?;
    let entry = Entry {
        seq: 0,
        from: "customer".into(),
        name: None,
        text,
        html: None,
        buttons: vec![],
        at_ms: now_ms(),
    };
    let marker = format!("m/{session}/{message_id}").into_bytes();
    if let Err(e) = chat.append(&session, &marker, entry).await {
        // The message itself is stored by the engine; only the widget's copy is missing.
        tracing::warn!(channel = %chat.ctx.id, error = %e, "web chat transcript append failed");
    }
    Ok(accepted(outcome))
}

async fn transcript(
    State(chat): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Result<Response, HookError> {
    let session = authorize(&chat, &headers, &query).await?;
    let entries = chat.transcript(&session, None).await.map_err(unavailable)?;
    Ok(axum::Json(serde_json::json!({ "entries": entries })).into_response())
}

async fn events(
    State(chat): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Result<Response, HookError> {
    let session = authorize(&chat, &headers, &query).await?;
    let slot = chat
        .streams
        .take(session.clone())
        .ok_or_else(|| HookError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "too_many_streams",
            message: format!(
                "this chat session already has {} event streams open; close one first",
                chat.config.max_streams_per_session
            ),
            retry_after: Some(switchboard_channel::limit::SLOT_RETRY_SECS),
        })?;
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Subscribe before reading the backlog so nothing falls between the two.
    let live = BroadcastStream::new(chat.live.subscribe());
    let backlog = chat
        .transcript(&session, last_seen)
        .await
        .map_err(unavailable)?;
    let mut high = backlog.last().map(|e| e.seq).or(last_seen).unwrap_or(0);
    let live = live
        // A lagging subscriber ends its stream; the browser reconnects with Last-Event-ID.
        .take_while(|item| std::future::ready(item.is_ok()))
        .filter_map(move |item| {
            let keep = match item {
                Ok(pair) if pair.0 == session && pair.1.seq > high => {
                    high = pair.1.seq;
                    Some(pair.1.clone())
                }
                _ => None,
            };
            std::future::ready(keep)
        });
    let stream = futures::stream::iter(backlog)
        .chain(live)
        .map(move |entry| {
            // The session's place is held for as long as the stream is.
            let _held = &slot;
            to_sse(entry)
        })
        .take_until(chat.closing.clone().cancelled_owned());
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

const WIDGET: &str = include_str!("../assets/widget.js");

async fn widget() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        WIDGET,
    )
        .into_response()
}

/// Escapes text for an HTML attribute or element.
fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The chat on a page of its own.
async fn page(State(chat): State<Arc<Inner>>) -> Response {
    let id = escape_html(chat.ctx.id.as_str());
    let title = escape_html(&chat.config.title);
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"icon\" href=\"data:,\"></head><body>\
         <script src=\"/chat/{id}/widget.js\" data-channel=\"{id}\" data-title=\"{title}\" \
         data-mode=\"page\"></script></body></html>\n"
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}

/// CORS for the widget's API calls from the shop's origin; preflights answered here.
async fn cors(
    State(chat): State<Arc<Inner>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let allowed = origin.as_deref().and_then(|o| {
        let list = &chat.config.allowed_origins;
        if list.iter().any(|a| a == "*") {
            Some("*".to_owned())
        } else {
            list.iter().any(|a| a == o).then(|| o.to_owned())
        }
    });
    let preflight = request.method() == axum::http::Method::OPTIONS;
    let mut response = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    if let Some(allowed) = allowed.and_then(|a| header::HeaderValue::from_str(&a).ok()) {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        h.insert(header::VARY, header::HeaderValue::from_static("Origin"));
        if preflight {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                header::HeaderValue::from_static("GET, POST"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                header::HeaderValue::from_static("authorization, content-type, last-event-id"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                header::HeaderValue::from_static("600"),
            );
        }
    }
    response
}

fn to_sse(entry: Entry) -> Result<Event, Infallible> {
    Ok(Event::default()
        .id(entry.seq.to_string())
        .event("entry")
        .json_data(&entry)
        .unwrap_or_default())
}
