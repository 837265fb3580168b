//! `switchboard-webhook`: customers reaching Switchboard over plain HTTP.
//!
//! # Layout
//! - [`WebhookChannel`] (this file): a generic web hook. A customer system POSTs signed JSON to
//!   `/hooks/{channel}/messages`; replies are POSTed, signed the same way, to a configured
//!   callback URL, carrying the outbound id as `Idempotency-Key`.
//! - [`webchat`]: the customer side of the web chat widget: sessions, messages in, replies out
//!   over Server-Sent Events, and a durable per-session transcript.
//! - [`signature`]: HMAC-SHA256 signing and verification shared by both directions.

pub mod egress;
pub mod signature;
pub mod webchat;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use switchboard_channel::{
    Accepted, Attachment, Capabilities, Channel, ChannelContext, ChannelError, ChannelId,
    ExternalMessageId, ExternalThread, ExternalUser, InboundError, InboundEvent, InboundMessage,
    Outbound, Sender, TextFormat, http_error, now_ms,
};
use tokio_util::sync::CancellationToken;

/// Configuration of one web hook channel (`type = "webhook"` in `[[channels]]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Shared HMAC secret, inline. Prefer `secret_env` or `secret_file` outside development.
    pub secret: Option<String>,
    /// Environment variable holding the shared secret.
    pub secret_env: Option<String>,
    /// File holding the shared secret (e.g. a systemd credential).
    pub secret_file: Option<std::path::PathBuf>,
    /// Where replies are POSTed. Without it, replies on this channel fail permanently and show
    /// as failed deliveries in the inbox.
    pub callback_url: Option<String>,
    /// Largest accepted request body.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// How far a request's signed timestamp may be from now.
    #[serde(default = "default_replay_window")]
    pub replay_window_secs: u64,
    /// Timeout of one callback request.
    #[serde(default = "default_callback_timeout")]
    pub callback_timeout_secs: u64,
    /// Let `callback_url` reach loopback, private and link-local addresses. Off, the daemon
    /// connects to public addresses only and follows no redirects, so the URL cannot be used
    /// to reach internal services (SSRF).
    #[serde(default)]
    pub allow_private_callback: bool,
    /// Messages one customer (`external_user`) may send per minute; more get 429 with
    /// `Retry-After`. 0 means no limit.
    #[serde(default = "default_messages_per_minute")]
    pub max_messages_per_minute: u32,
}

fn default_max_body() -> usize {
    1024 * 1024
}
fn default_replay_window() -> u64 {
    300
}
fn default_callback_timeout() -> u64 {
    10
}
fn default_messages_per_minute() -> u32 {
    60
}

/// The inbound JSON body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookMessage {
    /// The customer's id in the calling system.
    pub external_user: String,
    /// Display name of the customer, if known.
    #[serde(default)]
    pub user_name: Option<String>,
    /// The thread in the calling system; defaults to one thread per user.
    #[serde(default)]
    pub external_thread: Option<String>,
    /// The calling system's id of this message, unique per `external_user`: that customer's
    /// repeated id is stored once (another customer may use the same id).
    pub message_id: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// When the customer sent it, unix milliseconds.
    #[serde(default)]
    pub sent_at: Option<i64>,
    /// The customer pressed a button of a reply: its payload (what the bot reads); `text` is
    /// the label they saw.
    #[serde(default)]
    pub payload: Option<String>,
}

/// The callback JSON body for one reply.
#[derive(Debug, Serialize, Deserialize)]
pub struct Callback {
    pub external_thread: String,
    /// The reply; its `id` is stable across retries: the same id arriving again after a
    /// timeout is the same reply, to be treated as done. `text` is plain text.
    #[serde(flatten)]
    pub outbound: Outbound,
    /// The same text in light Markdown, when the reply was written in it (bot answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markdown: Option<String>,
}

const MAX_ID_LEN: usize = 256;
/// The longest display name: names appear in every conversation list.
pub const MAX_NAME_CHARS: usize = 200;
/// Attachments one message may describe.
pub const MAX_ATTACHMENTS: usize = 10;
/// The longest attachment name, type and URL.
const MAX_ATTACHMENT_FIELD: usize = 2048;

/// The fields of a customer message within their limits: 413 for text too long, 422 for the
/// rest, each naming the field and its limit.
pub(crate) fn check_fields(
    text: &str,
    name: Option<&str>,
    attachments: &[Attachment],
) -> Result<(), HookError> {
    if text.len() > switchboard_channel::MAX_TEXT_BYTES {
        return Err(HookError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text_too_long",
            format!(
                "text is longer than {} bytes",
                switchboard_channel::MAX_TEXT_BYTES
            ),
        ));
    }
    let invalid = |m: String| HookError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", m);
    if name.is_some_and(|n| n.chars().count() > MAX_NAME_CHARS) {
        return Err(invalid(format!(
            "the name is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if attachments.len() > MAX_ATTACHMENTS {
        return Err(invalid(format!(
            "at most {MAX_ATTACHMENTS} attachments per message"
        )));
    }
    let too_long = |a: &Attachment| {
        a.name.len() > MAX_ATTACHMENT_FIELD
            || a.content_type.len() > MAX_ATTACHMENT_FIELD
            || a.url
                .as_ref()
                .is_some_and(|u| u.len() > MAX_ATTACHMENT_FIELD)
    };
    if attachments.iter().any(too_long) {
        return Err(invalid(format!(
            "an attachment's name, content_type or url is longer than {MAX_ATTACHMENT_FIELD} bytes"
        )));
    }
    Ok(())
}

/// A generic HTTP web hook connector.
pub struct WebhookChannel {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: ChannelContext,
    secret: Vec<u8>,
    config: WebhookConfig,
    client: reqwest::Client,
    /// Messages per customer and minute.
    limit: switchboard_channel::limit::RateLimiter,
}

/// The longest replay window a web hook may have: a day.
pub const MAX_REPLAY_WINDOW_SECS: u64 = 86_400;

impl switchboard_channel::ChannelFactory for WebhookConfig {
    const TYPE: &'static str = "webhook";

    fn validate(&self, id: &ChannelId) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = switchboard_channel::resolve_signing_secret(
            &format!("[channels.{id}]"),
            self.secret.as_deref(),
            self.secret_env.as_deref(),
            self.secret_file.as_deref(),
        ) {
            out.push(e);
        }
        if self.replay_window_secs == 0 || self.replay_window_secs > MAX_REPLAY_WINDOW_SECS {
            out.push(format!(
                "[channels.{id}] replay_window_secs = {} must be 1 to {MAX_REPLAY_WINDOW_SECS} (a day): a signed request older than that is a replay",
                self.replay_window_secs
            ));
        }
        if let Some(url) = &self.callback_url
            && let Err(e) = egress::check_url(url, self.allow_private_callback)
        {
            out.push(format!("[channels.{id}] {e}"));
        }
        out
    }

    async fn build(
        self,
        ctx: ChannelContext,
    ) -> Result<Arc<dyn Channel>, switchboard_channel::BuildError> {
        switchboard_channel::built(WebhookChannel::build(self, ctx))
    }
}

impl WebhookChannel {
    /// Builds the connector; fails when the secret cannot be resolved.
    pub fn build(config: WebhookConfig, ctx: ChannelContext) -> Result<Self, String> {
        let secret = switchboard_channel::resolve_signing_secret(
            &format!("channel {}", ctx.id),
            config.secret.as_deref(),
            config.secret_env.as_deref(),
            config.secret_file.as_deref(),
        )?;
        if let Some(url) = &config.callback_url {
            egress::check_url(url, config.allow_private_callback)?;
        }
        let mut client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.callback_timeout_secs))
            .redirect(reqwest::redirect::Policy::none());
        if !config.allow_private_callback {
            client = client.dns_resolver(Arc::new(egress::PublicOnly));
        }
        let client = client.build().map_err(|e| format!("http client: {e}"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                ctx,
                secret: secret.into_bytes(),
                limit: switchboard_channel::limit::RateLimiter::per_minute(
                    config.max_messages_per_minute,
                ),
                config,
                client,
            }),
        })
    }

    /// The path customers' systems POST to.
    pub fn inbound_path(id: &ChannelId) -> String {
        format!("/hooks/{id}/messages")
    }
}

#[async_trait::async_trait]
impl Channel for WebhookChannel {
    fn id(&self) -> &ChannelId {
        &self.inner.ctx.id
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threading: true,
            buttons: true,
            attachments: true,
            ..Capabilities::default()
        }
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<(), ChannelError> {
        shutdown.cancelled().await;
        Ok(())
    }

    async fn send(
        &self,
        to: &ExternalThread,
        outbound: &Outbound,
    ) -> Result<ExternalMessageId, ChannelError> {
        let inner = &self.inner;
        let Some(url) = inner.config.callback_url.as_deref() else {
            return Err(ChannelError::Permanent(
                "no callback_url configured for this web hook channel".into(),
            ));
        };
        let body = serde_json::to_vec(&Callback {
            external_thread: to.0.clone(),
            outbound: Outbound {
                text: outbound.plain_text(),
                format: TextFormat::Plain,
                ..outbound.clone()
            },
            markdown: (outbound.format == TextFormat::Markdown).then(|| outbound.text.clone()),
        })
        .map_err(|e| ChannelError::Permanent(e.to_string()))?;
        let ts = now_ms() / 1000;
        let response = inner
            .client
            .post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", &outbound.id)
            .header(signature::TIMESTAMP_HEADER, ts.to_string())
            .header(
                signature::SIGNATURE_HEADER,
                signature::sign(&inner.secret, ts, &body),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| {
                // The whole chain: the resolver's refusal sits under "error sending request".
                let mut reason = format!("callback: {e}");
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    reason = format!("{reason}: {s}");
                    source = s.source();
                }
                if reason.contains("non-public addresses") {
                    ChannelError::Permanent(reason)
                } else {
                    ChannelError::retryable(reason)
                }
            })?;
        let status = response.status();
        if status.is_redirection() {
            return Err(ChannelError::Permanent(format!(
                "callback answered {status}: redirects are not followed; configure the final URL"
            )));
        }
        if status.is_success() {
            // The receiver may name its own id for the message; otherwise ours stands for it.
            let id = response
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| {
                    v.get("message_id")
                        .and_then(|m| m.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| outbound.id.clone());
            return Ok(ExternalMessageId(id));
        }
        Err(classify_failure(status, response.headers()))
    }

    fn http_routes(&self) -> Option<axum::Router> {
        let path = Self::inbound_path(&self.inner.ctx.id);
        let router = axum::Router::new()
            .route(&path, post(receive))
            .layer(DefaultBodyLimit::max(self.inner.config.max_body_bytes))
            .with_state(self.inner.clone());
        Some(router)
    }
}

/// Maps an HTTP failure of a peer to retry or give up, honouring `Retry-After` (seconds).
pub fn classify_failure(status: StatusCode, headers: &HeaderMap) -> ChannelError {
    let after = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let reason = format!("peer answered {status}");
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        ChannelError::Retryable { reason, after }
    } else if status == StatusCode::GONE {
        // The receiver says this thread is gone for good (the customer left).
        ChannelError::Unreachable(reason)
    } else {
        ChannelError::Permanent(reason)
    }
}

/// An HTTP error answer in the common JSON shape.
#[derive(Debug)]
pub(crate) struct HookError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Seconds, for `Retry-After`.
    pub(crate) retry_after: Option<u64>,
}

impl HookError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl ToString) -> Self {
        HookError {
            status,
            code,
            message: message.to_string(),
            retry_after: None,
        }
    }
}

impl IntoResponse for HookError {
    fn into_response(self) -> Response {
        let mut r = http_error(self.status, self.code, self.message);
        if let Some(after) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(after));
        }
        r
    }
}

/// Takes one message from `key`'s allowance, or answers 429 with `Retry-After`.
pub(crate) fn within_limit(
    limiter: &switchboard_channel::limit::RateLimiter,
    key: &str,
) -> Result<(), HookError> {
    limiter.check(key).map_err(|wait| {
        let after = switchboard_channel::limit::retry_after_secs(wait);
        HookError {
            retry_after: Some(after),
            ..HookError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many messages; try again in {after} s"),
            )
        }
    })
}

impl From<axum::extract::rejection::BytesRejection> for HookError {
    /// A body-read failure, usually the size limit.
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "bad_request"
        };
        HookError::new(status, code, rejection.body_text())
    }
}

impl From<InboundError> for HookError {
    /// The engine's refusal: nothing was stored.
    fn from(err: InboundError) -> Self {
        match err {
            InboundError::Rejected(m) => {
                HookError::new(StatusCode::UNPROCESSABLE_ENTITY, "rejected", m)
            }
            InboundError::Unavailable(m) => HookError {
                retry_after: Some(5),
                ..HookError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            },
        }
    }
}

/// Checks that a request declares a JSON body.
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), HookError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(HookError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ))
    }
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, HookError> {
    serde_json::from_slice(body)
        .map_err(|e| HookError::new(StatusCode::BAD_REQUEST, "malformed_json", e))
}

pub(crate) fn accepted(a: Accepted) -> Response {
    let status = match a {
        Accepted::Stored => "accepted",
        Accepted::Duplicate => "duplicate",
    };
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "status": status })),
    )
        .into_response()
}

pub(crate) fn check_id(what: &str, value: &str) -> Result<(), HookError> {
    if value.trim().is_empty() || value.len() > MAX_ID_LEN {
        Err(HookError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("{what} must be 1 to {MAX_ID_LEN} bytes"),
        ))
    } else {
        Ok(())
    }
}

async fn receive(
    State(hook): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, HookError> {
    require_json(&headers)?;
    let body = body?;
    let header_str = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    signature::verify(
        &hook.secret,
        header_str(signature::TIMESTAMP_HEADER),
        header_str(signature::SIGNATURE_HEADER),
        &body,
        now_ms() / 1000,
        hook.config.replay_window_secs,
    )
    .map_err(|e| {
        tracing::debug!(channel = %hook.ctx.id, error = %e, "web hook signature refused");
        HookError::new(StatusCode::UNAUTHORIZED, "bad_signature", e)
    })?;
    let msg: HookMessage = parse_json(&body)?;
    check_id("external_user", &msg.external_user)?;
    check_id("message_id", &msg.message_id)?;
    if let Some(t) = &msg.external_thread {
        check_id("external_thread", t)?;
    }
    check_fields(&msg.text, msg.user_name.as_deref(), &msg.attachments)?;
    if msg
        .payload
        .as_ref()
        .is_some_and(|p| p.len() > MAX_ATTACHMENT_FIELD)
    {
        return Err(HookError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("payload is longer than {MAX_ATTACHMENT_FIELD} bytes"),
        ));
    }
    if msg.text.trim().is_empty() && msg.attachments.is_empty() {
        return Err(HookError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_message",
            "a message needs text or attachments",
        ));
    }
    within_limit(&hook.limit, &msg.external_user)?;
    let thread = msg
        .external_thread
        .unwrap_or_else(|| msg.external_user.clone());
    // The caller picks message ids: they are unique per customer, not across customers.
    let message_id = ExternalMessageId::scoped(&msg.external_user, &msg.message_id);
    let earlier_id = Some(ExternalMessageId(msg.message_id));
    let event = InboundEvent::Message(InboundMessage {
        thread: ExternalThread(thread),
        sender: Sender {
            id: ExternalUser(msg.external_user),
            name: msg.user_name,
        },
        message_id,
        text: msg.text,
        // The caller describes files (name, type, size, url); stored bytes are ours to name.
        attachments: msg
            .attachments
            .into_iter()
            .map(|a| Attachment {
                blob: None,
                not_kept: None,
                ..a
            })
            .collect(),
        sent_at_ms: msg.sent_at,
        automated: None,
        earlier_id,
        subject: None,
        payload: msg.payload,
    });
    Ok(accepted(
        hook.ctx.inbound.submit(&hook.ctx.id, event).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_channel::MAX_TEXT_BYTES;

    #[test]
    fn failures_are_classified_with_retry_after() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, "7".parse().unwrap());
        match classify_failure(StatusCode::TOO_MANY_REQUESTS, &h) {
            ChannelError::Retryable { after, .. } => {
                assert_eq!(after, Some(Duration::from_secs(7)))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify_failure(StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new()),
            ChannelError::Retryable { after: None, .. }
        ));
        assert!(matches!(
            classify_failure(StatusCode::NOT_FOUND, &HeaderMap::new()),
            ChannelError::Permanent(_)
        ));
    }

    #[test]
    fn customer_message_fields_have_limits() {
        let file = Attachment::new("发票.pdf", "application/pdf", 10);
        assert!(check_fields("你好", Some("王芳"), std::slice::from_ref(&file)).is_ok());
        let at_limit = "字".repeat(MAX_TEXT_BYTES / 3);
        assert!(check_fields(&at_limit, None, &[]).is_ok());
        let over = check_fields(&"a".repeat(MAX_TEXT_BYTES + 1), None, &[]).unwrap_err();
        assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE);
        let name = "名".repeat(MAX_NAME_CHARS + 1);
        assert_eq!(
            check_fields("x", Some(&name), &[]).unwrap_err().code,
            "invalid_field"
        );
        let many = vec![file.clone(); MAX_ATTACHMENTS + 1];
        assert!(check_fields("x", None, &many).is_err());
        let long = Attachment::new("a".repeat(3000), "x/y", 1);
        assert!(check_fields("x", None, &[long]).is_err());
    }
}
