//! A fake Discord on loopback (feature `fake`): the REST routes the connector uses and a
//! gateway WebSocket, built from Discord's API documentation (v10) and answered with complete
//! objects, so the real serenity client and our REST client run against it unchanged.
//!
//! Gateway: HELLO on connect; IDENTIFY → READY (with a session id and a resume URL); RESUME →
//! the dispatches the session missed, then RESUMED; heartbeats are ACKed. Tests can send
//! RECONNECT (op 7) and INVALID_SESSION (op 9), or drop the socket.
//!
//! REST: `GET /gateway`, `/gateway/bot`, `/users/@me`; `POST /channels/{id}/messages` (JSON or
//! multipart, `nonce` + `enforce_nonce` honoured); `GET /channels/{id}/messages?after=`;
//! `POST /channels/{id}/messages/{mid}/threads`; `POST /interactions/{id}/{token}/callback`.
//! Faults: the next create-message call can fail with 500, 429 (`retry_after`) or 403 (50007).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// The bot's own user id in the fake.
pub const BOT_ID: u64 = 42;
/// The guild of every guild channel in the fake.
pub const GUILD_ID: u64 = 333;
/// Discord's epoch (2015-01-01) in unix milliseconds.
const DISCORD_EPOCH: u64 = 1_420_070_400_000;

/// How the next create-message call fails.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// HTTP 500.
    ServerError,
    /// HTTP 429 with `retry_after` in seconds.
    RateLimited(f64),
    /// HTTP 403, code 50007: the user does not accept messages from the bot.
    CannotMessageUser,
    /// The message is created (and dispatched, as Discord does with the bot's own messages),
    /// but the response is lost: the client sees HTTP 500.
    LostResponse,
}

/// A message the bot sent, as the fake stored it.
#[derive(Clone, Debug)]
pub struct Sent {
    pub id: u64,
    pub channel_id: u64,
    pub content: String,
    pub nonce: Option<String>,
    pub allowed_mentions: Value,
    pub components: Value,
    pub reference: Option<u64>,
    /// Names of uploaded files.
    pub files: Vec<String>,
}

/// A gateway control message for the connected sessions.
#[derive(Clone, Debug)]
enum Control {
    Dispatch,
    Reconnect,
    InvalidSession(bool),
    Drop,
}

#[derive(Default)]
struct Inner {
    /// Every message per channel (customers' and the bot's), oldest first.
    history: BTreeMap<u64, Vec<Value>>,
    /// Channel objects of threads created, by id.
    threads: BTreeMap<u64, Value>,
    sent: Vec<Sent>,
    /// Nonces of created messages: the message id and when. Discord honours `enforce_nonce`
    /// only "in the past few minutes": older ones are forgotten.
    nonces: HashMap<(u64, String), (u64, std::time::Instant)>,
    /// How long a nonce is remembered (default five minutes).
    nonce_window: Option<std::time::Duration>,
    /// Outcomes of the next create-message calls: `None` succeeds.
    faults: VecDeque<Option<Fault>>,
    /// Dispatches in order: `(seq, event name, data)`.
    dispatches: Vec<(u64, String, Value)>,
    /// Interaction callbacks received: `(interaction id, type)`.
    callbacks: Vec<(String, u64)>,
    /// Gateway operations received, for assertions: `identify`, `resume`, `heartbeat`.
    ops: Vec<String>,
    sessions: u64,
    /// The intents of the last IDENTIFY.
    intents: u64,
    /// Per session id: the global dispatch count when it identified.
    session_bases: HashMap<String, u64>,
    /// While true, new customer messages are stored but not dispatched (the bot is offline).
    gateway_down: bool,
    /// Files served for attachment downloads, by path.
    files: HashMap<String, Vec<u8>>,
}

/// The fake Discord. Cheap to clone.
#[derive(Clone)]
pub struct FakeDiscord {
    inner: Arc<Mutex<Inner>>,
    control: broadcast::Sender<Control>,
    ids: Arc<AtomicU64>,
    addr: String,
    heartbeat_ms: u64,
}

impl FakeDiscord {
    /// Starts the fake on 127.0.0.1 with the given heartbeat interval.
    pub async fn start(heartbeat_ms: u64) -> FakeDiscord {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake discord");
        let (control, _) = broadcast::channel(256);
        let fake = FakeDiscord {
            inner: Arc::default(),
            control,
            ids: Arc::new(AtomicU64::new(1)),
            addr: listener.local_addr().expect("addr").to_string(),
            heartbeat_ms,
        };
        let app = Router::new()
            .route("/api/v10/gateway", get(gateway_url))
            .route("/api/v10/gateway/bot", get(gateway_bot))
            .route("/api/v10/users/@me", get(current_user))
            .route(
                "/api/v10/channels/{channel}/messages",
                post(create_message).get(list_messages),
            )
            .route(
                "/api/v10/channels/{channel}/messages/{message}/threads",
                post(start_thread),
            )
            .route(
                "/api/v10/interactions/{id}/{token}/callback",
                post(interaction_callback),
            )
            .route("/api/v10/channels/{channel}/typing", post(|| async { StatusCode::NO_CONTENT }))
            .route("/files/{name}", get(file))
            .route("/ws", get(ws))
            .fallback(|req: axum::extract::Request| async move {
                tracing::warn!(method = %req.method(), uri = %req.uri(), "fake discord: unknown route");
                (
                    StatusCode::NOT_FOUND,
                    Json(json!({"message": "404: Not Found", "code": 0})),
                )
            })
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    /// The base URL (`http://127.0.0.1:PORT`) to give the connector as `api_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh snowflake: time-ordered, unique.
    pub fn snowflake(&self) -> u64 {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(DISCORD_EPOCH);
        ((ms - DISCORD_EPOCH) << 22) | (self.ids.fetch_add(1, Ordering::SeqCst) & 0x3f_ffff)
    }

    /// Queues a dispatch for every connected session (and for sessions that resume later).
    fn dispatch(&self, event: &str, data: Value) {
        {
            let mut inner = self.inner();
            let seq = inner.dispatches.len() as u64 + 1;
            inner.dispatches.push((seq, event.to_owned(), data));
        }
        let _ = self.control.send(Control::Dispatch);
    }

    /// A user writes `text` in a direct message channel (`channel`); returns the message id.
    pub fn dm(&self, channel: u64, user: u64, name: &str, text: &str) -> u64 {
        self.customer_message(channel, None, user, name, text, vec![])
    }

    /// A user writes in a guild channel or thread.
    pub fn guild_message(&self, channel: u64, user: u64, name: &str, text: &str) -> u64 {
        self.customer_message(channel, Some(GUILD_ID), user, name, text, vec![])
    }

    /// Another bot writes in a guild channel (the connector must ignore it).
    pub fn bot_message(&self, channel: u64, user: u64, name: &str, text: &str) -> u64 {
        let id = self.snowflake();
        let mut m = message_json(id, channel, user, name, true, text);
        m["guild_id"] = json!(GUILD_ID.to_string());
        self.inner()
            .history
            .entry(channel)
            .or_default()
            .push(m.clone());
        self.dispatch("MESSAGE_CREATE", m);
        id
    }

    /// A user writes with a file (served by the fake at its attachment URL).
    pub fn dm_with_file(
        &self,
        channel: u64,
        user: u64,
        text: &str,
        file: (&str, &str, &[u8]),
    ) -> u64 {
        let (name, content_type, bytes) = file;
        let path = format!("{}-{name}", self.snowflake());
        self.inner().files.insert(path.clone(), bytes.to_vec());
        let attachment = json!({
            "id": self.snowflake().to_string(), "filename": name, "size": bytes.len(),
            "url": format!("{}/files/{path}", self.url()),
            "proxy_url": format!("{}/files/{path}", self.url()),
            "content_type": content_type,
        });
        self.customer_message(channel, None, user, "Files", text, vec![attachment])
    }

    /// Sends the same message again (a gateway replay).
    pub fn redeliver(&self, channel: u64, message: u64) {
        let m = self
            .inner()
            .history
            .get(&channel)
            .and_then(|h| h.iter().find(|m| has_id(m, message)).cloned());
        if let Some(m) = m {
            self.dispatch("MESSAGE_CREATE", m);
        }
    }

    fn customer_message(
        &self,
        channel: u64,
        guild: Option<u64>,
        user: u64,
        name: &str,
        text: &str,
        attachments: Vec<Value>,
    ) -> u64 {
        let id = self.snowflake();
        let mut m = message_json(id, channel, user, name, false, text);
        m["attachments"] = json!(attachments);
        if let Some(g) = guild {
            m["guild_id"] = json!(g.to_string());
            m["member"] = json!({"roles": [], "joined_at": "2024-01-01T00:00:00.000000+00:00", "deaf": false, "mute": false, "flags": 0});
        }
        let down = {
            let mut inner = self.inner();
            inner.history.entry(channel).or_default().push(m.clone());
            inner.gateway_down
        };
        if !down {
            self.dispatch("MESSAGE_CREATE", m);
        }
        id
    }

    /// The customer edits message `id`.
    pub fn edit(&self, channel: u64, id: u64, text: &str) {
        let mut updated = None;
        if let Some(h) = self.inner().history.get_mut(&channel)
            && let Some(m) = h.iter_mut().find(|m| has_id(m, id))
        {
            m["content"] = json!(text);
            m["edited_timestamp"] = json!("2024-01-01T00:05:00.000000+00:00");
            updated = Some(m.clone());
        }
        if let Some(m) = updated {
            self.dispatch("MESSAGE_UPDATE", m);
        }
    }

    /// The customer deletes message `id`.
    pub fn delete(&self, channel: u64, id: u64) {
        if let Some(h) = self.inner().history.get_mut(&channel) {
            h.retain(|m| !has_id(m, id));
        }
        self.dispatch(
            "MESSAGE_DELETE",
            json!({"id": id.to_string(), "channel_id": channel.to_string()}),
        );
    }

    /// A user presses the button `custom_id` under the bot's message `message`.
    pub fn click(&self, channel: u64, message: u64, user: u64, custom_id: &str) -> u64 {
        let id = self.snowflake();
        let bot_message = self
            .inner()
            .history
            .get(&channel)
            .and_then(|h| h.iter().find(|m| has_id(m, message)).cloned())
            .unwrap_or_else(|| message_json(message, channel, BOT_ID, "Switchboard", true, ""));
        let interaction = json!({
            "id": id.to_string(), "application_id": BOT_ID.to_string(), "type": 3,
            "data": {"custom_id": custom_id, "component_type": 2},
            "channel_id": channel.to_string(),
            "channel": {"id": channel.to_string(), "type": 1},
            "user": user_json(user, "Clicker", false),
            "token": format!("tok-{id}"), "version": 1,
            "message": bot_message,
            "app_permissions": "0", "locale": "en-US", "entitlements": [],
            "authorizing_integration_owners": {}, "context": 1,
            "attachment_size_limit": 10485760,
        });
        self.dispatch("INTERACTION_CREATE", interaction);
        id
    }

    /// Asks connected sessions to reconnect (op 7).
    pub fn reconnect(&self) {
        let _ = self.control.send(Control::Reconnect);
    }

    /// Invalidates connected sessions (op 9); `resumable` says whether RESUME may follow.
    pub fn invalidate_session(&self, resumable: bool) {
        let _ = self.control.send(Control::InvalidSession(resumable));
    }

    /// Closes connected sockets without a word.
    pub fn drop_connections(&self) {
        let _ = self.control.send(Control::Drop);
    }

    /// While down, customer messages are stored (the REST history has them) but not
    /// dispatched: the bot was offline.
    pub fn set_gateway_down(&self, down: bool) {
        self.inner().gateway_down = down;
    }

    /// How long `enforce_nonce` recognises a nonce (Discord: "the past few minutes").
    pub fn set_nonce_window(&self, window: std::time::Duration) {
        self.inner().nonce_window = Some(window);
    }

    /// The next create-message call fails as `fault`.
    pub fn fail_next(&self, fault: Fault) {
        self.inner().faults.push_back(Some(fault));
    }

    /// The create-message call after the next `ok` ones fails as `fault`.
    pub fn fail_after(&self, ok: usize, fault: Fault) {
        let mut inner = self.inner();
        inner.faults.extend(std::iter::repeat_n(None, ok));
        inner.faults.push_back(Some(fault));
    }

    /// Messages the bot sent, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.inner().sent.clone()
    }

    /// Interaction callbacks: `(interaction id, callback type)`.
    pub fn callbacks(&self) -> Vec<(String, u64)> {
        self.inner().callbacks.clone()
    }

    /// Threads the bot created: `(thread id, parent channel, name)`.
    pub fn threads(&self) -> Vec<(u64, u64, String)> {
        self.inner()
            .threads
            .iter()
            .map(|(id, t)| {
                (
                    *id,
                    t["parent_id"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    t["name"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Gateway operations received (`identify`, `resume`).
    pub fn ops(&self) -> Vec<String> {
        self.inner().ops.clone()
    }

    /// The gateway intents the client identified with.
    pub fn intents(&self) -> u64 {
        self.inner().intents
    }

    /// Sessions identified so far.
    pub fn sessions(&self) -> u64 {
        self.inner().sessions
    }

    /// Waits (up to 60 s, for a busy machine) until `n` sessions have identified: a new session
    /// gets only what is dispatched after it, as on Discord.
    pub async fn wait_for_sessions(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            if self.sessions() >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!(
            "fake discord: {} gateway sessions, not {n}, after 60 s",
            self.sessions()
        );
    }
}

/// Whether message object `m` has snowflake `id` (ids travel as strings).
fn has_id(m: &Value, id: u64) -> bool {
    m["id"].as_str().and_then(|s| s.parse::<u64>().ok()) == Some(id)
}

fn user_json(id: u64, name: &str, bot: bool) -> Value {
    json!({"id": id.to_string(), "username": name.to_lowercase(), "global_name": name,
        "discriminator": "0", "avatar": null, "bot": bot})
}

fn message_json(id: u64, channel: u64, author: u64, name: &str, bot: bool, text: &str) -> Value {
    json!({
        "id": id.to_string(), "channel_id": channel.to_string(),
        "author": user_json(author, name, bot), "content": text,
        "timestamp": "2024-01-01T00:00:00.000000+00:00", "edited_timestamp": null,
        "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
        "attachments": [], "embeds": [], "pinned": false, "type": 0, "flags": 0,
        "components": [],
    })
}

fn discord_error(status: StatusCode, code: u64, message: &str) -> Response {
    (status, Json(json!({"message": message, "code": code}))).into_response()
}

async fn gateway_url(State(f): State<FakeDiscord>) -> Json<Value> {
    Json(json!({"url": format!("ws://{}/ws", f.addr)}))
}

async fn gateway_bot(State(f): State<FakeDiscord>) -> Json<Value> {
    Json(json!({"url": format!("ws://{}/ws", f.addr), "shards": 1,
        "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}}))
}

async fn current_user() -> Json<Value> {
    Json(user_json(BOT_ID, "Switchboard", true))
}

fn authorised(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bot "))
}

async fn create_message(
    State(f): State<FakeDiscord>,
    Path(channel): Path<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorised(&headers) {
        return discord_error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized");
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (payload, files) = if content_type.starts_with("multipart/form-data") {
        match parse_multipart(&content_type, &body) {
            Some(p) => p,
            None => return discord_error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body"),
        }
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => (v, vec![]),
            Err(_) => {
                return discord_error(
                    StatusCode::BAD_REQUEST,
                    50109,
                    "The request body contains invalid JSON.",
                );
            }
        }
    };
    let content = payload["content"].as_str().unwrap_or_default().to_owned();
    if content.chars().count() > 2000 {
        return discord_error(
            StatusCode::BAD_REQUEST,
            50035,
            "Invalid Form Body: content: Must be 2000 or fewer in length.",
        );
    }
    if content.is_empty() && files.is_empty() && payload["components"].is_null() {
        return discord_error(
            StatusCode::BAD_REQUEST,
            50006,
            "Cannot send an empty message",
        );
    }
    let fault = f.inner().faults.pop_front().flatten();
    let lost = matches!(fault, Some(Fault::LostResponse));
    match fault {
        Some(Fault::ServerError) => {
            return discord_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                0,
                "500: Internal Server Error",
            );
        }
        Some(Fault::RateLimited(after)) => {
            let mut r = (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({"message": "You are being rate limited.", "retry_after": after, "global": false, "code": 0})),
            )
                .into_response();
            let h = r.headers_mut();
            h.insert(
                "retry-after",
                format!("{}", after.ceil() as u64).parse().expect("header"),
            );
            h.insert("x-ratelimit-scope", "user".parse().expect("header"));
            return r;
        }
        Some(Fault::CannotMessageUser) => {
            return discord_error(
                StatusCode::FORBIDDEN,
                50007,
                "Cannot send messages to this user",
            );
        }
        Some(Fault::LostResponse) | None => {}
    }
    let nonce = payload["nonce"].as_str().map(str::to_owned);
    let enforce = payload["enforce_nonce"].as_bool().unwrap_or(false);
    let mut inner = f.inner();
    let window = inner
        .nonce_window
        .unwrap_or(std::time::Duration::from_secs(300));
    if enforce
        && let Some(n) = &nonce
        && let Some((id, at)) = inner.nonces.get(&(channel, n.clone())).copied()
        && at.elapsed() < window
        && let Some(m) = inner
            .history
            .get(&channel)
            .and_then(|h| h.iter().find(|m| has_id(m, id)).cloned())
    {
        return Json(m).into_response();
    }
    let id = f.snowflake();
    let mut m = message_json(id, channel, BOT_ID, "Switchboard", true, &content);
    m["components"] = payload["components"].clone();
    if !payload["components"].is_array() {
        m["components"] = json!([]);
    }
    m["attachments"] = json!(files
        .iter()
        .map(|(name, bytes)| json!({"id": f.snowflake().to_string(), "filename": name, "size": bytes.len(), "url": format!("{}/files/{name}", f.url()), "proxy_url": ""}))
        .collect::<Vec<_>>());
    if let Some(n) = &nonce {
        m["nonce"] = json!(n);
        inner
            .nonces
            .insert((channel, n.clone()), (id, std::time::Instant::now()));
    }
    let reference = payload["message_reference"]["message_id"]
        .as_str()
        .and_then(|s| s.parse().ok());
    inner.sent.push(Sent {
        id,
        channel_id: channel,
        content,
        nonce,
        allowed_mentions: payload["allowed_mentions"].clone(),
        components: payload["components"].clone(),
        reference,
        files: files.iter().map(|(n, _)| n.clone()).collect(),
    });
    inner.history.entry(channel).or_default().push(m.clone());
    drop(inner);
    // The bot receives its own messages too, with the nonce it sent.
    f.dispatch("MESSAGE_CREATE", m.clone());
    if lost {
        return discord_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            "500: Internal Server Error",
        );
    }
    Json(m).into_response()
}

/// Uploaded files: `(file name, bytes)`.
type Files = Vec<(String, Vec<u8>)>;

/// `payload_json` and `files[n]` parts of a multipart body.
fn parse_multipart(content_type: &str, body: &[u8]) -> Option<(Value, Files)> {
    let boundary = content_type.split("boundary=").nth(1)?.trim_matches('"');
    let delimiter = format!("--{boundary}");
    let text = body;
    let mut payload = Value::Null;
    let mut files = Vec::new();
    let mut rest = text;
    while let Some(start) = find(rest, delimiter.as_bytes()) {
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let end = find(rest, delimiter.as_bytes()).unwrap_or(rest.len());
        let part = &rest[..end];
        let header_end = find(part, b"\r\n\r\n")?;
        let headers = String::from_utf8_lossy(&part[..header_end]).to_lowercase();
        let mut content = &part[header_end + 4..];
        if content.ends_with(b"\r\n") {
            content = &content[..content.len() - 2];
        }
        let name = headers
            .split("name=\"")
            .nth(1)?
            .split('"')
            .next()?
            .to_owned();
        if name == "payload_json" {
            payload = serde_json::from_slice(content).ok()?;
        } else if name.starts_with("files[") {
            let filename = headers
                .split("filename=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or("file")
                .to_owned();
            files.push((filename, content.to_vec()));
        }
    }
    Some((payload, files))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[derive(serde::Deserialize)]
struct ListQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn list_messages(
    State(f): State<FakeDiscord>,
    Path(channel): Path<u64>,
    Query(q): Query<ListQuery>,
) -> Response {
    let inner = f.inner();
    let Some(history) = inner.history.get(&channel) else {
        return discord_error(StatusCode::NOT_FOUND, 10003, "Unknown Channel");
    };
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(50).clamp(1, 100);
    // Discord answers newest first; with `after`, the oldest `limit` after it, newest first.
    let mut picked: Vec<Value> = history
        .iter()
        .filter(|m| {
            m["id"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
                > after
        })
        .take(limit)
        .cloned()
        .collect();
    picked.reverse();
    Json(picked).into_response()
}

async fn start_thread(
    State(f): State<FakeDiscord>,
    Path((channel, message)): Path<(u64, u64)>,
    Json(body): Json<Value>,
) -> Response {
    let id = f.snowflake();
    let name = body["name"].as_str().unwrap_or("thread").to_owned();
    let thread = json!({
        "id": id.to_string(), "type": 11, "guild_id": GUILD_ID.to_string(),
        "parent_id": channel.to_string(), "name": name, "owner_id": BOT_ID.to_string(),
        "last_message_id": null, "rate_limit_per_user": 0, "message_count": 0, "member_count": 1,
        "thread_metadata": {"archived": false, "auto_archive_duration": body["auto_archive_duration"].as_u64().unwrap_or(1440),
            "archive_timestamp": "2024-01-01T00:00:00.000000+00:00", "locked": false},
        "total_message_sent": 0, "flags": 0,
        "position": 0, "permission_overwrites": [], "nsfw": false,
    });
    {
        let mut inner = f.inner();
        inner.threads.insert(id, thread.clone());
        inner.history.entry(id).or_default();
        let _ = message;
    }
    f.dispatch("THREAD_CREATE", {
        let mut t = thread.clone();
        t["newly_created"] = json!(true);
        t
    });
    (StatusCode::CREATED, Json(thread)).into_response()
}

async fn interaction_callback(
    State(f): State<FakeDiscord>,
    Path((id, _token)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> StatusCode {
    let kind = body["type"].as_u64().unwrap_or(0);
    f.inner().callbacks.push((id, kind));
    StatusCode::NO_CONTENT
}

async fn file(State(f): State<FakeDiscord>, Path(name): Path<String>) -> Response {
    match f.inner().files.get(&name).cloned() {
        Some(b) => b.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn ws(State(f): State<FakeDiscord>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| gateway(f, socket))
}

fn frame(v: Value) -> WsMessage {
    WsMessage::Text(v.to_string().into())
}

/// One gateway connection.
async fn gateway(f: FakeDiscord, mut socket: WebSocket) {
    let mut control = f.control.subscribe();
    if socket
        .send(frame(
            json!({"op": 10, "d": {"heartbeat_interval": f.heartbeat_ms}, "s": null, "t": null}),
        ))
        .await
        .is_err()
    {
        return;
    }
    // Dispatches this connection has sent, by sequence; `None` until IDENTIFY or RESUME.
    let mut sent_upto: Option<u64> = None;
    let mut session_seq_base = 0;
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(msg)) = incoming else { return };
                let WsMessage::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    let _ = socket.send(WsMessage::Close(Some(axum::extract::ws::CloseFrame { code: 4002, reason: "Error while decoding payload.".into() }))).await;
                    return;
                };
                match v["op"].as_u64() {
                    Some(1) => {
                        f.inner().ops.push("heartbeat".into());
                        if socket.send(frame(json!({"op": 11, "d": null, "s": null, "t": null}))).await.is_err() { return; }
                    }
                    Some(2) => {
                        // A new session starts from what is dispatched from now on.
                        let session = {
                            let mut inner = f.inner();
                            inner.ops.push("identify".into());
                            inner.intents = v["d"]["intents"].as_u64().unwrap_or(0);
                            inner.sessions += 1;
                            session_seq_base = inner.dispatches.len() as u64;
                            let id = inner.sessions;
                            inner.session_bases.insert(format!("session-{id}"), session_seq_base);
                            id
                        };
                        sent_upto = Some(session_seq_base);
                        let ready = json!({"op": 0, "s": 1, "t": "READY", "d": {
                            "v": 10, "user": user_json(BOT_ID, "Switchboard", true),
                            "guilds": [], "session_id": format!("session-{session}"),
                            "resume_gateway_url": format!("ws://{}/ws", f.addr),
                            "shard": [0, 1], "application": {"id": BOT_ID.to_string(), "flags": 0},
                        }});
                        if socket.send(frame(ready)).await.is_err() { return; }
                    }
                    Some(6) => {
                        f.inner().ops.push("resume".into());
                        // The client's last sequence is relative to its session's READY (s = 1).
                        let last = v["d"]["seq"].as_u64().unwrap_or(1);
                        let from = v["d"]["session_id"].as_str().unwrap_or_default().to_owned();
                        let Some(base) = f.inner().session_bases.get(&from).copied() else {
                            if socket.send(frame(json!({"op": 9, "d": false, "s": null, "t": null}))).await.is_err() { return; }
                            continue;
                        };
                        session_seq_base = base;
                        sent_upto = Some(session_seq_base + last.saturating_sub(1));
                        if replay(&f, &mut socket, &mut sent_upto, session_seq_base).await.is_err() { return; }
                        let resumed = json!({"op": 0, "s": next_seq(sent_upto, session_seq_base), "t": "RESUMED", "d": {}});
                        if socket.send(frame(resumed)).await.is_err() { return; }
                    }
                    _ => {}
                }
            }
            c = control.recv() => {
                match c {
                    Ok(Control::Dispatch) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        if sent_upto.is_some() && replay(&f, &mut socket, &mut sent_upto, session_seq_base).await.is_err() { return; }
                    }
                    Ok(Control::Reconnect) => {
                        let _ = socket.send(frame(json!({"op": 7, "d": null, "s": null, "t": null}))).await;
                    }
                    Ok(Control::InvalidSession(resumable)) => {
                        let _ = socket.send(frame(json!({"op": 9, "d": resumable, "s": null, "t": null}))).await;
                    }
                    Ok(Control::Drop) => return,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }
}

/// The sequence number the next dispatch of this session carries.
fn next_seq(sent_upto: Option<u64>, base: u64) -> u64 {
    sent_upto.unwrap_or(base) - base + 2
}

/// Sends every dispatch after `sent_upto`.
async fn replay(
    f: &FakeDiscord,
    socket: &mut WebSocket,
    sent_upto: &mut Option<u64>,
    base: u64,
) -> Result<(), axum::Error> {
    loop {
        let upto = sent_upto.unwrap_or(base);
        let next = f
            .inner()
            .dispatches
            .iter()
            .find(|(seq, _, _)| *seq > upto)
            .cloned();
        let Some((seq, event, data)) = next else {
            return Ok(());
        };
        let s = next_seq(*sent_upto, base);
        socket
            .send(frame(json!({"op": 0, "s": s, "t": event, "d": data})))
            .await?;
        *sent_upto = Some(seq);
    }
}

/// What a customer sees of a message's content: Markdown markers gone, escapes undone.
pub fn visible_text(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    let mut chars = content.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            '*' | '_' | '~' | '`' => {}
            c => out.push(c),
        }
    }
    out
}
