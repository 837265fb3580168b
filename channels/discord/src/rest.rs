//! The REST calls the connector makes, on our own HTTP client: sending messages (JSON or with
//! files), opening threads, acknowledging interactions, reading history for backfill.
//!
//! Why not serenity's HTTP client for these: pointed at another host it must run without its
//! rate limiter, and its errors drop the `retry_after` of a 429, which the outbox needs. Here
//! every call reads Discord's rate-limit headers: a bucket with no requests left waits for its
//! reset before the next call, and a 429 comes back as [`RestError::RateLimited`] with the
//! wait Discord asked for.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use switchboard_channel::ChannelError;
use tokio::time::Instant;

/// Discord's JSON error codes the connector tells apart.
pub mod codes {
    pub const UNKNOWN_CHANNEL: i64 = 10003;
    pub const UNKNOWN_MESSAGE: i64 = 10008;
    pub const MISSING_ACCESS: i64 = 50001;
    pub const CANNOT_MESSAGE_USER: i64 = 50007;
    pub const MISSING_PERMISSIONS: i64 = 50013;
    pub const THREAD_LOCKED: i64 = 50083;
}

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("rate limited for {after:?}")]
    RateLimited { after: Duration },
    #[error("Discord answered {status}: {message} (code {code})")]
    Refused {
        status: u16,
        code: i64,
        message: String,
    },
    #[error("Discord server error {0}")]
    Server(u16),
    #[error("network: {0}")]
    Network(String),
    #[error("unexpected answer: {0}")]
    Decode(String),
}

impl RestError {
    /// What the outbox should do about it.
    pub fn classify(self) -> ChannelError {
        match self {
            RestError::RateLimited { after } => ChannelError::Retryable {
                reason: format!("rate limited for {:.1} s", after.as_secs_f64()),
                after: Some(after),
            },
            RestError::Server(_) | RestError::Network(_) => {
                ChannelError::retryable(self.to_string())
            }
            RestError::Refused {
                code:
                    codes::CANNOT_MESSAGE_USER
                    | codes::UNKNOWN_CHANNEL
                    | codes::MISSING_ACCESS
                    | codes::THREAD_LOCKED,
                ..
            } => ChannelError::Unreachable(self.to_string()),
            RestError::Refused { status: 401, .. } => {
                ChannelError::retryable(format!("{self} (is the bot token right?)"))
            }
            e @ (RestError::Refused { .. } | RestError::Decode(_)) => {
                ChannelError::Permanent(e.to_string())
            }
        }
    }
}

/// A file to upload with a message.
pub struct Upload {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

pub struct Rest {
    http: reqwest::Client,
    /// `https://discord.com/api/v10`.
    base: String,
    auth: String,
    /// Per rate-limit bucket (method + route with its major parameter): when it may be
    /// called again.
    buckets: Mutex<HashMap<String, Instant>>,
}

impl Rest {
    pub fn new(api_url: &str, token: &str) -> Rest {
        Rest {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .user_agent(concat!(
                    "DiscordBot (https://github.com/switchboard, ",
                    env!("CARGO_PKG_VERSION"),
                    ")"
                ))
                .build()
                .expect("http client"),
            base: format!("{}/api/v10", api_url.trim_end_matches('/')),
            auth: format!("Bot {token}"),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The rate-limit bucket of a path: its first two segments (`channels/{id}`,
    /// `interactions/{id}`), which carry Discord's major parameters.
    fn bucket(method: &reqwest::Method, path: &str) -> String {
        let major: Vec<&str> = path
            .trim_start_matches('/')
            .splitn(3, '/')
            .take(2)
            .collect();
        format!("{method} /{}", major.join("/"))
    }

    async fn wait_for_bucket(&self, bucket: &str) {
        let until = self
            .buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(bucket)
            .copied();
        if let Some(until) = until
            && until > Instant::now()
        {
            tokio::time::sleep_until(until).await;
        }
    }

    fn learn(&self, bucket: &str, headers: &reqwest::header::HeaderMap) {
        let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let remaining = get("x-ratelimit-remaining").and_then(|v| v.parse::<u64>().ok());
        let reset_after = get("x-ratelimit-reset-after").and_then(|v| v.parse::<f64>().ok());
        if let (Some(0), Some(after)) = (remaining, reset_after) {
            self.buckets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    bucket.to_owned(),
                    Instant::now() + Duration::from_secs_f64(after.max(0.0)),
                );
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Body,
    ) -> Result<Option<Value>, RestError> {
        let bucket = Self::bucket(&method, path);
        self.wait_for_bucket(&bucket).await;
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", &self.auth);
        request = match body {
            Body::None => request,
            Body::Json(v) => request.json(&v),
            Body::Multipart(payload, files) => {
                let mut form =
                    reqwest::multipart::Form::new().text("payload_json", payload.to_string());
                for (i, f) in files.into_iter().enumerate() {
                    let part = reqwest::multipart::Part::bytes(f.bytes)
                        .file_name(f.name)
                        .mime_str(&f.content_type)
                        .unwrap_or_else(|_| reqwest::multipart::Part::bytes(Vec::new()));
                    form = form.part(format!("files[{i}]"), part);
                }
                request.multipart(form)
            }
        };
        let response = request
            .send()
            .await
            .map_err(|e| RestError::Network(e.to_string()))?;
        let status = response.status().as_u16();
        self.learn(&bucket, response.headers());
        let retry_header = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<f64>().ok());
        if status == 204 {
            return Ok(None);
        }
        let text = response
            .text()
            .await
            .map_err(|e| RestError::Network(e.to_string()))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match status {
            200..=299 => Ok(Some(value)),
            429 => {
                let secs = value["retry_after"]
                    .as_f64()
                    .or(retry_header)
                    .unwrap_or(1.0);
                Err(RestError::RateLimited {
                    after: Duration::from_secs_f64(secs.clamp(0.0, 3600.0)),
                })
            }
            500..=599 => Err(RestError::Server(status)),
            _ => Err(RestError::Refused {
                status,
                code: value["code"].as_i64().unwrap_or(0),
                message: value["message"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| text.chars().take(200).collect()),
            }),
        }
    }

    /// `POST /channels/{id}/messages`; returns the created message's id.
    pub async fn create_message(
        &self,
        channel: u64,
        payload: Value,
        files: Vec<Upload>,
    ) -> Result<u64, RestError> {
        let body = if files.is_empty() {
            Body::Json(payload)
        } else {
            Body::Multipart(payload, files)
        };
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/channels/{channel}/messages"),
                body,
            )
            .await?
            .unwrap_or(Value::Null);
        id_of(&v)
    }

    /// `POST /channels/{id}/messages/{mid}/threads`: a public thread on a message; returns the
    /// thread's channel id.
    pub async fn start_thread(
        &self,
        channel: u64,
        message: u64,
        name: &str,
    ) -> Result<u64, RestError> {
        let name: String = name.chars().take(100).collect();
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/channels/{channel}/messages/{message}/threads"),
                Body::Json(serde_json::json!({"name": name, "auto_archive_duration": 10080})),
            )
            .await?
            .unwrap_or(Value::Null);
        id_of(&v)
    }

    /// Acknowledges a component interaction without changing its message (type 6,
    /// `DEFERRED_UPDATE_MESSAGE`): Discord wants an answer within 3 seconds.
    pub async fn acknowledge(&self, interaction: u64, token: &str) -> Result<(), RestError> {
        self.call(
            reqwest::Method::POST,
            &format!("/interactions/{interaction}/{token}/callback"),
            Body::Json(serde_json::json!({"type": 6})),
        )
        .await
        .map(|_| ())
    }

    /// `GET /channels/{id}/messages?after=`: up to 100 messages after `after`, oldest first.
    pub async fn messages_after(
        &self,
        channel: u64,
        after: u64,
    ) -> Result<Vec<serenity::model::channel::Message>, RestError> {
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/channels/{channel}/messages?after={after}&limit=100"),
                Body::None,
            )
            .await?
            .unwrap_or(Value::Null);
        let mut messages: Vec<serenity::model::channel::Message> =
            serde_json::from_value(v).map_err(|e| RestError::Decode(e.to_string()))?;
        messages.sort_by_key(|m| m.id.get());
        Ok(messages)
    }

    /// Downloads an attachment (CDN URLs are absolute), at most `limit` bytes.
    pub async fn download(&self, url: &str, limit: u64) -> Result<Vec<u8>, String> {
        let response = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("download answered {}", response.status()));
        }
        if response.content_length().is_some_and(|n| n > limit) {
            return Err("larger than the limit".into());
        }
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        if bytes.len() as u64 > limit {
            return Err("larger than the limit".into());
        }
        Ok(bytes.to_vec())
    }
}

enum Body {
    None,
    Json(Value),
    Multipart(Value, Vec<Upload>),
}

fn id_of(v: &Value) -> Result<u64, RestError> {
    v["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RestError::Decode(format!("no id in {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_major_parameters() {
        let post = reqwest::Method::POST;
        assert_eq!(
            Rest::bucket(&post, "/channels/1/messages"),
            "POST /channels/1"
        );
        assert_eq!(
            Rest::bucket(&post, "/channels/2/messages/3/threads"),
            "POST /channels/2"
        );
        assert_eq!(
            Rest::bucket(&post, "/interactions/9/tok/callback"),
            "POST /interactions/9"
        );
    }

    #[test]
    fn failures_map_to_what_the_outbox_should_do() {
        let after = Duration::from_millis(1500);
        assert!(matches!(
            RestError::RateLimited { after }.classify(),
            ChannelError::Retryable { after: Some(a), .. } if a == after
        ));
        assert!(matches!(
            RestError::Server(502).classify(),
            ChannelError::Retryable { .. }
        ));
        let refused = |code| RestError::Refused {
            status: 403,
            code,
            message: "x".into(),
        };
        assert!(matches!(
            refused(codes::CANNOT_MESSAGE_USER).classify(),
            ChannelError::Unreachable(_)
        ));
        assert!(matches!(
            refused(50035).classify(),
            ChannelError::Permanent(_)
        ));
    }
}
