//! A fake Telegram Bot API on 127.0.0.1, for tests and benchmarks (feature `fake`).
//!
//! It speaks the real protocol for the methods Switchboard uses — `POST /bot{token}/{method}`
//! with JSON, form or multipart bodies, method names matched case-insensitively, answers
//! `{"ok": true, "result": ...}` with complete objects as documented at
//! <https://core.telegram.org/bots/api>, files at `GET /file/bot{token}/{path}` — and it can
//! misbehave on demand: HTTP 500, 429 with `retry_after`, slow answers, connections cut
//! mid-answer, updates delivered twice, chats that blocked the bot.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::Notify;

pub const BOT_ID: u64 = 4242;
pub const BOT_USERNAME: &str = "switchboard_test_bot";
/// Longest a `getUpdates` call is held, whatever its `timeout` (keeps tests quick).
const MAX_HOLD: Duration = Duration::from_secs(2);

/// Misbehaviour for the next call of a method.
#[derive(Clone, Debug)]
pub enum Fault {
    /// HTTP 500 with a Bot API error body.
    ServerError,
    /// HTTP 429 `Too Many Requests: retry after N`.
    RetryAfter(u32),
    /// Answers correctly after a delay.
    Slow(Duration),
    /// Starts an answer and cuts the connection.
    Reset,
    /// HTTP 403 `Forbidden: bot was blocked by the user`.
    Blocked,
    /// `getUpdates` only: every update in the answer comes twice.
    Duplicate,
}

/// A message the bot sent (sendMessage, sendPhoto, sendDocument).
#[derive(Clone, Debug)]
pub struct Sent {
    pub method: String,
    pub chat_id: i64,
    pub message_id: i64,
    pub text: Option<String>,
    pub parse_mode: Option<String>,
    pub thread_id: Option<i64>,
    pub reply_to: Option<i64>,
    /// Inline keyboard buttons as `(label, callback_data)`.
    pub buttons: Vec<(String, String)>,
    pub file: Option<(String, Vec<u8>)>,
    /// When the fake took it (before answering).
    pub at: std::time::Instant,
}

#[derive(Default)]
struct Inner {
    token: String,
    next_update_id: i64,
    /// Not yet confirmed by an offset.
    pending: VecDeque<Value>,
    next_message_id: HashMap<i64, i64>,
    sent: Vec<Sent>,
    faults: HashMap<String, VecDeque<Fault>>,
    files: HashMap<String, (String, Vec<u8>)>,
    blocked: HashSet<i64>,
    webhook: Option<(String, Option<String>)>,
    calls: Vec<String>,
    chat_actions: Vec<(i64, String)>,
    callback_answers: Vec<String>,
    /// Stopped: calls still in flight are answered 502, as a proxy in front of a dead server.
    down: bool,
}

/// The running fake. Dropping it stops the server.
pub struct FakeTelegram {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
    app: axum::Router,
    task: Mutex<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.task.lock().unwrap_or_else(|e| e.into_inner()).abort();
    }
}

/// Binds `addr` even while old connections to it linger in TIME_WAIT.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

impl FakeTelegram {
    /// Serves on a free port of 127.0.0.1 for the bot `token`.
    pub async fn start(token: &str) -> FakeTelegram {
        let listener = bind(([127, 0, 0, 1], 0).into()).expect("bind fake Telegram");
        let addr = listener.local_addr().expect("local addr");
        let inner = Arc::new(Mutex::new(Inner {
            token: token.to_owned(),
            next_update_id: 100_000,
            ..Default::default()
        }));
        let changed = Arc::new(Notify::new());
        let shared = Shared {
            inner: inner.clone(),
            changed: changed.clone(),
        };
        let app = axum::Router::new()
            .route("/{bot}/{method}", axum::routing::any(api))
            .route("/file/{bot}/{*path}", axum::routing::get(file))
            .with_state(shared);
        let task = Mutex::new(serve(listener, app.clone()));
        FakeTelegram {
            addr,
            inner,
            changed,
            app,
            task,
        }
    }

    /// The server goes away: new connections are refused, calls in flight get 502.
    pub fn stop(&self) {
        self.lock().down = true;
        self.changed.notify_waiters();
        self.task.lock().unwrap_or_else(|e| e.into_inner()).abort();
    }

    /// The server comes back on the same address, with everything it held.
    pub fn start_again(&self) {
        let listener = bind(self.addr).expect("bind the fake Telegram again");
        self.lock().down = false;
        *self.task.lock().unwrap_or_else(|e| e.into_inner()) = serve(listener, self.app.clone());
    }

    /// The Bot API base URL to configure (`api_url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an update of `kind` (`message`, `edited_message`, `callback_query`) and
    /// returns its `update_id`.
    pub fn push_update(&self, kind: &str, object: Value) -> i64 {
        let id = {
            let mut s = self.lock();
            s.next_update_id += 1;
            let id = s.next_update_id;
            s.pending
                .push_back(json!({ "update_id": id, (kind): object }));
            id
        };
        self.changed.notify_waiters();
        id
    }

    /// A private chat message from user `user` (whose chat id is the same number).
    pub fn private_message(&self, user: i64, name: &str, message_id: i64, text: &str) -> i64 {
        self.push_update("message", private_message(user, name, message_id, text))
    }

    /// Stores a file that messages can refer to by `file_id`; returns the id.
    pub fn add_file(&self, path: &str, bytes: &[u8]) -> String {
        let id = format!("file-{}", self.lock().files.len() + 1);
        self.lock()
            .files
            .insert(id.clone(), (path.to_owned(), bytes.to_vec()));
        id
    }

    /// The next call of `method` (any case) misbehaves as `fault`; several queue up.
    pub fn fault(&self, method: &str, fault: Fault) {
        self.lock()
            .faults
            .entry(method.to_ascii_lowercase())
            .or_default()
            .push_back(fault);
    }

    /// Sends to `chat` fail as if the user had blocked the bot.
    pub fn block(&self, chat: i64) {
        self.lock().blocked.insert(chat);
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.lock().sent.clone()
    }

    /// Every method called, lower case, in order.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn chat_actions(&self) -> Vec<(i64, String)> {
        self.lock().chat_actions.clone()
    }

    pub fn callback_answers(&self) -> Vec<String> {
        self.lock().callback_answers.clone()
    }

    /// The web hook set by `setWebhook`: `(url, secret_token)`.
    pub fn webhook(&self) -> Option<(String, Option<String>)> {
        self.lock().webhook.clone()
    }

    /// Updates not yet confirmed by the bot's offset.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Waits until `cond` holds for the sent messages, up to `timeout`; returns them.
    pub async fn wait_sent(
        &self,
        timeout: Duration,
        cond: impl Fn(&[Sent]) -> bool,
    ) -> Result<Vec<Sent>, Vec<Sent>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            let sent = self.sent();
            if cond(&sent) {
                return Ok(sent);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let sent = self.sent();
                return if cond(&sent) { Ok(sent) } else { Err(sent) };
            }
        }
    }
}

fn serve(listener: tokio::net::TcpListener, app: axum::Router) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// A complete private-chat `Message` object from `user`.
pub fn private_message(user: i64, name: &str, message_id: i64, text: &str) -> Value {
    json!({
        "message_id": message_id,
        "date": switchboard_channel::now_ms() / 1000,
        "chat": {"id": user, "type": "private", "first_name": name},
        "from": {"id": user, "is_bot": false, "first_name": name, "language_code": "en"},
        "text": text,
    })
}

/// A complete supergroup `Message` object from `user` in `chat`, with the bot mentioned
/// when `mention` is set.
pub fn group_message(
    chat: i64,
    user: i64,
    name: &str,
    message_id: i64,
    text: &str,
    mention: bool,
) -> Value {
    let text = if mention {
        format!("@{BOT_USERNAME} {text}")
    } else {
        text.to_owned()
    };
    let mut m = json!({
        "message_id": message_id,
        "date": switchboard_channel::now_ms() / 1000,
        "chat": {"id": chat, "type": "supergroup", "title": "Customers"},
        "from": {"id": user, "is_bot": false, "first_name": name},
        "text": text,
    });
    if mention {
        m["entities"] = json!([{"type": "mention", "offset": 0, "length": BOT_USERNAME.len() + 1}]);
    }
    m
}

fn ok(result: Value) -> Response {
    Json(json!({"ok": true, "result": result})).into_response()
}

fn fail(status: StatusCode, description: &str, retry_after: Option<u32>) -> Response {
    let mut body = json!({"ok": false, "error_code": status.as_u16(), "description": description});
    if let Some(s) = retry_after {
        body["parameters"] = json!({"retry_after": s});
    }
    (status, Json(body)).into_response()
}

/// A response whose body breaks off: the client sees the connection cut.
fn reset() -> Response {
    let broken = futures::stream::iter(vec![
        Ok::<_, std::io::Error>(Bytes::from_static(b"{\"ok\":tr")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )),
    ]);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(broken))
        .expect("valid response")
}

/// The parameters of a call, whatever the encoding; files of multipart calls separately.
async fn params(request: Request) -> (Value, HashMap<String, (String, Vec<u8>)>) {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut files = HashMap::new();
    if content_type.starts_with("multipart/form-data") {
        let mut map = serde_json::Map::new();
        if let Ok(mut form) = Multipart::from_request(request, &()).await {
            while let Ok(Some(field)) = form.next_field().await {
                let name = field.name().unwrap_or_default().to_owned();
                let file_name = field.file_name().map(str::to_owned);
                let Ok(bytes) = field.bytes().await else {
                    break;
                };
                match file_name {
                    Some(f) => {
                        files.insert(name.clone(), (f, bytes.to_vec()));
                    }
                    None => {
                        let text = String::from_utf8_lossy(&bytes).into_owned();
                        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
                        map.insert(name, value);
                    }
                }
            }
        }
        return (Value::Object(map), files);
    }
    let bytes = axum::body::to_bytes(request.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let map: serde_json::Map<String, Value> = url::form_urlencoded::parse(&bytes)
            .map(|(k, v)| {
                let value = serde_json::from_str(&v).unwrap_or(Value::String(v.into_owned()));
                (k.into_owned(), value)
            })
            .collect();
        return (Value::Object(map), files);
    }
    (serde_json::from_slice(&bytes).unwrap_or(json!({})), files)
}

async fn api(
    State(shared): State<Shared>,
    Path((bot, method)): Path<(String, String)>,
    request: Request,
) -> Response {
    let method = method.to_ascii_lowercase();
    let (body, files) = params(request).await;
    let fault = {
        let mut s = shared.inner.lock().unwrap_or_else(|e| e.into_inner());
        if s.down {
            return fail(StatusCode::BAD_GATEWAY, "Bad Gateway", None);
        }
        if bot.strip_prefix("bot") != Some(s.token.as_str()) {
            return fail(StatusCode::UNAUTHORIZED, "Unauthorized", None);
        }
        s.calls.push(method.clone());
        s.faults.get_mut(&method).and_then(VecDeque::pop_front)
    };
    let duplicate = match fault {
        Some(Fault::ServerError) => {
            return fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                None,
            );
        }
        Some(Fault::RetryAfter(s)) => {
            return fail(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("Too Many Requests: retry after {s}"),
                Some(s),
            );
        }
        Some(Fault::Reset) => return reset(),
        Some(Fault::Blocked) => {
            return fail(
                StatusCode::FORBIDDEN,
                "Forbidden: bot was blocked by the user",
                None,
            );
        }
        Some(Fault::Slow(d)) => {
            tokio::time::sleep(d).await;
            false
        }
        Some(Fault::Duplicate) => true,
        None => false,
    };
    let response = match method.as_str() {
        "getme" => ok(json!({
            "id": BOT_ID, "is_bot": true, "first_name": "Switchboard Test", "username": BOT_USERNAME,
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "can_connect_to_business": false,
            "has_main_web_app": false,
        })),
        "getwebhookinfo" => {
            let url = shared
                .lock()
                .webhook
                .as_ref()
                .map(|w| w.0.clone())
                .unwrap_or_default();
            ok(
                json!({"url": url, "has_custom_certificate": false, "pending_update_count": shared.lock().pending.len()}),
            )
        }
        "setwebhook" => {
            let Some(url) = body["url"].as_str() else {
                return fail(StatusCode::BAD_REQUEST, "Bad Request: url is empty", None);
            };
            let secret = body["secret_token"].as_str().map(str::to_owned);
            shared.lock().webhook = Some((url.to_owned(), secret));
            ok(json!(true))
        }
        "deletewebhook" => {
            shared.lock().webhook = None;
            ok(json!(true))
        }
        "getupdates" => get_updates(&shared, &body, duplicate).await,
        "sendmessage" | "sendphoto" | "senddocument" => send(&shared, &method, &body, files),
        "sendchataction" => {
            let chat = body["chat_id"].as_i64().unwrap_or_default();
            let action = body["action"].as_str().unwrap_or_default().to_owned();
            shared.lock().chat_actions.push((chat, action));
            shared.changed.notify_waiters();
            ok(json!(true))
        }
        "answercallbackquery" => {
            let id = body["callback_query_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            shared.lock().callback_answers.push(id);
            ok(json!(true))
        }
        "getfile" => {
            let id = body["file_id"].as_str().unwrap_or_default();
            match shared.lock().files.get(id) {
                Some((path, bytes)) => ok(json!({
                    "file_id": id, "file_unique_id": format!("u{id}"),
                    "file_size": bytes.len(), "file_path": path,
                })),
                None => fail(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: invalid file_id",
                    None,
                ),
            }
        }
        _ => fail(StatusCode::NOT_FOUND, "Not Found", None),
    };
    shared.changed.notify_waiters();
    response
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `getUpdates`: confirms everything below `offset`, then answers what is pending, holding
/// the call up to `timeout` (capped) while there is nothing.
async fn get_updates(shared: &Shared, body: &Value, duplicate: bool) -> Response {
    let offset = body["offset"].as_i64().unwrap_or(0);
    let limit = body["limit"].as_u64().unwrap_or(100).clamp(1, 100) as usize;
    let hold = Duration::from_secs(body["timeout"].as_u64().unwrap_or(0)).min(MAX_HOLD);
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        let notified = shared.changed.notified();
        {
            let mut s = shared.lock();
            if s.down {
                return fail(StatusCode::BAD_GATEWAY, "Bad Gateway", None);
            }
            while s
                .pending
                .front()
                .is_some_and(|u| u["update_id"].as_i64().unwrap_or(0) < offset)
            {
                s.pending.pop_front();
            }
            if !s.pending.is_empty() {
                let mut batch: Vec<Value> = s.pending.iter().take(limit).cloned().collect();
                if duplicate {
                    batch.extend(batch.clone());
                }
                return ok(Value::Array(batch));
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return ok(json!([]));
        }
    }
}

fn send(
    shared: &Shared,
    method: &str,
    body: &Value,
    files: HashMap<String, (String, Vec<u8>)>,
) -> Response {
    let Some(chat) = body["chat_id"]
        .as_i64()
        .or_else(|| body["chat_id"].as_str()?.parse().ok())
    else {
        return fail(StatusCode::BAD_REQUEST, "Bad Request: chat not found", None);
    };
    let text = match method {
        "sendmessage" => match body["text"].as_str() {
            Some(t) if !t.is_empty() => Some(t.to_owned()),
            _ => {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: message text is empty",
                    None,
                );
            }
        },
        _ => body["caption"].as_str().map(str::to_owned),
    };
    if text
        .as_ref()
        .is_some_and(|t| visible_units(t, body["parse_mode"].as_str()) > 4096)
    {
        return fail(
            StatusCode::BAD_REQUEST,
            "Bad Request: message is too long",
            None,
        );
    }
    // A file travels as its own part, named directly or through `attach://NAME`.
    let field = |name: &str| {
        let part = match body[name]
            .as_str()
            .and_then(|v| v.strip_prefix("attach://"))
        {
            Some(attached) => attached.to_owned(),
            None => name.to_owned(),
        };
        files.get(&part).cloned()
    };
    let file = match method {
        "sendphoto" => field("photo"),
        "senddocument" => field("document"),
        _ => None,
    };
    if method != "sendmessage" && file.is_none() {
        return fail(
            StatusCode::BAD_REQUEST,
            "Bad Request: there is no file in the request",
            None,
        );
    }
    let mut s = shared.lock();
    if s.blocked.contains(&chat) {
        return fail(
            StatusCode::FORBIDDEN,
            "Forbidden: bot was blocked by the user",
            None,
        );
    }
    let id = {
        let n = s.next_message_id.entry(chat).or_insert(1000);
        *n += 1;
        *n
    };
    let buttons = body["reply_markup"]["inline_keyboard"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .flat_map(|r| r.as_array().cloned().unwrap_or_default())
                .map(|b| {
                    (
                        b["text"].as_str().unwrap_or_default().to_owned(),
                        b["callback_data"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let sent = Sent {
        method: method.to_owned(),
        chat_id: chat,
        message_id: id,
        text: text.clone(),
        parse_mode: body["parse_mode"].as_str().map(str::to_owned),
        thread_id: body["message_thread_id"].as_i64(),
        reply_to: body["reply_parameters"]["message_id"].as_i64(),
        buttons,
        file: file.clone(),
        at: std::time::Instant::now(),
    };
    s.sent.push(sent);
    let mut message = json!({
        "message_id": id,
        "date": switchboard_channel::now_ms() / 1000,
        "chat": if chat < 0 {
            json!({"id": chat, "type": "supergroup", "title": "Customers"})
        } else {
            json!({"id": chat, "type": "private", "first_name": "Customer"})
        },
        "from": {"id": BOT_ID, "is_bot": true, "first_name": "Switchboard Test", "username": BOT_USERNAME},
    });
    if let Some(t) = body["message_thread_id"].as_i64() {
        message["message_thread_id"] = json!(t);
        message["is_topic_message"] = json!(true);
    }
    match (method, file) {
        ("sendmessage", _) => message["text"] = json!(text.unwrap_or_default()),
        ("sendphoto", Some((_, bytes))) => {
            message["photo"] = json!([{"file_id": format!("sent-{id}"), "file_unique_id": format!("s{id}"),
                "width": 100, "height": 100, "file_size": bytes.len()}]);
        }
        (_, Some((name, bytes))) => {
            message["document"] = json!({"file_id": format!("sent-{id}"), "file_unique_id": format!("s{id}"),
                "file_name": name, "file_size": bytes.len()});
        }
        _ => {}
    }
    if !body["reply_markup"].is_null() {
        message["reply_markup"] = body["reply_markup"].clone();
    }
    ok(message)
}

/// Length as Telegram counts it: UTF-16 units of the text after HTML entities are parsed.
fn visible_units(text: &str, parse_mode: Option<&str>) -> usize {
    if parse_mode != Some("HTML") {
        return text.encode_utf16().count();
    }
    visible_text(text).encode_utf16().count()
}

/// What a customer sees of a message sent in Telegram's HTML mode: tags dropped, entities
/// decoded.
pub fn visible_text(html: &str) -> String {
    let mut visible = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => visible.push(c),
            _ => {}
        }
    }
    visible
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

async fn file(State(shared): State<Shared>, Path((bot, path)): Path<(String, String)>) -> Response {
    let s = shared.lock();
    if bot.strip_prefix("bot") != Some(s.token.as_str()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match s.files.values().find(|(p, _)| *p == path) {
        Some((_, bytes)) => bytes.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
