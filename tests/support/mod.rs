//! Test support: the real daemon as a child process on 127.0.0.1, a signed web hook client, an
//! agent API client, and a callback receiver that records (and can refuse) deliveries.
#![allow(dead_code)]

pub mod mail;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use switchboard_webhook::signature;

pub const ADMIN_TOKEN: &str = "sbt_test_admin_token_0123456789abcdef0123456789";
pub const HOOK_SECRET: &str = "test-hook-secret";

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `secs` seconds, and never
/// less than 30: a busy machine is slow, and only a failing test waits the whole time.
pub async fn eventually<T>(secs: u64, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs.max(30));
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The real `switchboard` binary, running.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

pub fn write_config(dir: &Path, callback: &str, extra: &str) -> PathBuf {
    let kb = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kb");
    let text = format!(
        r#"
data_dir = "{data}"
[store]
cache_mb = 16
[http]
listen = "127.0.0.1:0"
max_body_bytes = 65536
[admin]
name = "admin"
token_env = "SB_TEST_ADMIN_TOKEN"
[bot]
kb_dir = "{kb}"
[outbox]
base_delay_ms = 40
max_delay_ms = 400
max_attempts = 8
[channels.hook]
type = "webhook"
secret_env = "SB_TEST_HOOK_SECRET"
callback_url = "{callback}"
allow_private_callback = true
max_body_bytes = 4096
callback_timeout_secs = 2
# Tests (the chaos test above all) write far faster than a person; limits have their own test.
max_messages_per_minute = 0
[channels.chat]
type = "webchat"
{extra}
"#,
        data = dir.join("data").display(),
        kb = kb.display(),
    );
    let path = dir.join("switchboard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Rewrites the config at `path`: each `(from, to)` in turn; `from` must be there.
pub fn edit_config(path: &Path, edits: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(path).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "`{from}` is not in {}", path.display());
        text = text.replacen(from, to, 1);
    }
    std::fs::write(path, text).unwrap();
}

/// A `[channels.tg]` section for a fake Bot API at `api_url`, its token written (mode 0600)
/// to `dir/tg.token`; `extra` adds keys.
pub fn telegram_section(dir: &Path, api_url: &str, token: &str, extra: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let file = dir.join("tg.token");
    std::fs::write(&file, token).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        r#"
[channels.tg]
type = "telegram"
token_file = "{token}"
api_url = "{api_url}"
poll_timeout_secs = 1
private_interval_ms = 10
group_interval_ms = 10
{extra}
"#,
        token = file.display(),
    )
}

impl Daemon {
    pub fn start(dir: &Path) -> Daemon {
        Self::start_with_env(dir, &[])
    }

    /// Starts with extra environment variables.
    pub fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> Daemon {
        Self::start_with(dir, env, None)
    }

    /// Starts with the open-files limit at `(soft, hard)`, as `ulimit -n` would set it.
    #[allow(dead_code)]
    pub fn start_with_open_files(dir: &Path, soft: u64, hard: u64) -> Daemon {
        Self::start_with(dir, &[], Some((soft, hard)))
    }

    fn start_with(dir: &Path, env: &[(&str, &str)], open_files: Option<(u64, u64)>) -> Daemon {
        let config = dir.join("switchboard.toml");
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        if let Some((soft, hard)) = open_files {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: setrlimit is async-signal-safe and `limit` is plain data.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command
            .args(["run", "--config"])
            .arg(&config)
            .envs(env.iter().copied())
            .env("SB_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("SB_TEST_HOOK_SECRET", HOOK_SECRET)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchboard");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("switchboard listening")
                    && let Some(addr) = line.split("addr=").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().parse::<SocketAddr>().unwrap());
                }
                sink.lock().unwrap().push(line);
            }
        });
        // With the multilingual model the bot embeds its knowledge base and examples first.
        let addr = match rx.recv_timeout(Duration::from_secs(90)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("daemon did not start:\n{}", log.lock().unwrap().join("\n"));
            }
        };
        Daemon {
            child,
            addr,
            dir: dir.to_owned(),
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The daemon's resident memory now, bytes (Linux `/proc`).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the daemon's /proc status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kb * 1024
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(self) {
        self.terminate();
        self.wait_exit();
    }

    /// SIGTERM, a clean exit, and everything it logged.
    pub fn stop_and_log(self) -> String {
        let log = self.log.clone();
        self.stop();
        log.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
    }

    /// Waits (up to 20 s) for the daemon to exit, cleanly.
    pub fn wait_exit(mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "daemon exited with {status}:\n{}",
                    self.log()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client of the daemon's HTTP side.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Client {
    pub fn new(d: &Daemon) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: d.url(""),
            token: ADMIN_TOKEN.into(),
        }
    }

    pub fn with_token(&self, token: &str) -> Client {
        Client {
            token: token.into(),
            ..self.clone()
        }
    }

    /// Posts a signed web hook message; returns the status and body.
    pub async fn hook(&self, user: &str, message_id: &str, text: &str) -> (StatusCode, Value) {
        let body =
            json!({"external_user": user, "message_id": message_id, "text": text}).to_string();
        self.hook_raw(body.as_bytes(), "application/json", None)
            .await
    }

    pub async fn hook_raw(
        &self,
        body: &[u8],
        content_type: &str,
        secret: Option<&str>,
    ) -> (StatusCode, Value) {
        self.hook_signed_at(body, content_type, secret, unix_now())
            .await
    }

    pub async fn hook_signed_at(
        &self,
        body: &[u8],
        content_type: &str,
        secret: Option<&str>,
        ts: i64,
    ) -> (StatusCode, Value) {
        let r = self
            .hook_request(body, content_type, secret, ts)
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Posts a web hook message; `None` when no answer came (the daemon is down or died).
    pub async fn try_hook(&self, user: &str, message_id: &str, text: &str) -> Option<StatusCode> {
        let body =
            json!({"external_user": user, "message_id": message_id, "text": text}).to_string();
        let r = self
            .hook_request(body.as_bytes(), "application/json", None, unix_now())
            .send()
            .await
            .ok()?;
        Some(StatusCode::from_u16(r.status().as_u16()).unwrap())
    }

    fn hook_request(
        &self,
        body: &[u8],
        content_type: &str,
        secret: Option<&str>,
        ts: i64,
    ) -> reqwest::RequestBuilder {
        let sig = signature::sign(secret.unwrap_or(HOOK_SECRET).as_bytes(), ts, body);
        self.http
            .post(format!("{}/hooks/hook/messages", self.base))
            .header("content-type", content_type)
            .header(signature::TIMESTAMP_HEADER, ts.to_string())
            .header(signature::SIGNATURE_HEADER, sig)
            .body(body.to_vec())
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, r) = self.get_response(path).await;
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A GET whose answer is text (`/metrics`).
    pub async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let (status, r) = self.get_response(path).await;
        (status, r.text().await.unwrap_or_default())
    }

    async fn get_response(&self, path: &str) -> (StatusCode, reqwest::Response) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (StatusCode::from_u16(r.status().as_u16()).unwrap(), r)
    }

    pub async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// An agent reply to conversation `id`.
    pub async fn reply(&self, id: u64, text: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/api/v1/conversations/{id}/messages"),
            json!({ "text": text }),
        )
        .await
    }

    /// An agent reply to conversation `id` carrying `Idempotency-Key: key`; `None` when no
    /// answer came within `timeout` (the daemon died under it, or the client gave up).
    pub async fn reply_with_key(
        &self,
        id: u64,
        key: &str,
        text: &str,
        timeout: Duration,
    ) -> Option<(StatusCode, Value)> {
        let r = self
            .http
            .post(format!("{}/api/v1/conversations/{id}/messages", self.base))
            .timeout(timeout)
            .bearer_auth(&self.token)
            .header("idempotency-key", key)
            .json(&json!({ "text": text }))
            .send()
            .await
            .ok()?;
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
        Some((status, r.json().await.ok()?))
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send("POST", path, Some(body)).await
    }

    /// Starts a web chat session on the channel `chat`; returns its token.
    pub async fn chat_session(&self) -> String {
        let r = self
            .http
            .post(format!("{}/chat/chat/sessions", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let session: Value = r.json().await.unwrap();
        session["token"].as_str().unwrap().to_owned()
    }

    /// The web chat transcript of the session behind `token`, as text.
    pub async fn chat_transcript(&self, token: &str) -> String {
        self.http
            .get(format!("{}/chat/chat/transcript", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The conversation of `thread` on `channel`, once it exists (up to 30 s).
    pub async fn conversation_on(&self, channel: &str, thread: &str) -> Value {
        let path = format!("/api/v1/conversations?channel={channel}&limit=200");
        eventually(
            30,
            &format!("conversation {channel}/{thread}"),
            async || {
                let (_, page) = self.get(&path).await;
                page["items"]
                    .as_array()?
                    .iter()
                    .find(|c| c["thread"] == thread)
                    .cloned()
            },
        )
        .await
    }

    /// Every message of conversation `id`, oldest first, page by page.
    pub async fn messages(&self, id: u64) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let path = format!("/api/v1/conversations/{id}/messages?after={after}&limit=1000");
            let (_, page) = self.get(&path).await;
            all.extend(page["messages"].as_array().cloned().unwrap_or_default());
            match page["next_after"].as_u64() {
                Some(next) if next > after => after = next,
                _ => return all,
            }
        }
    }

    /// The customer's messages of conversation `id`, oldest first.
    pub async fn customer_messages(&self, id: u64) -> Vec<Value> {
        self.messages(id)
            .await
            .into_iter()
            .filter(|m| m["author"]["kind"] == "customer")
            .collect()
    }

    /// The texts of a conversation's customer messages, in order.
    pub async fn customer_texts(&self, id: u64) -> Vec<String> {
        self.customer_messages(id)
            .await
            .iter()
            .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The one conversation of web hook user `user`.
    pub async fn conversation_of(&self, user: &str) -> Value {
        let (_, page) = self
            .get("/api/v1/conversations?channel=hook&limit=200")
            .await;
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["thread"] == user)
            .cloned()
            .unwrap_or_else(|| panic!("no conversation for {user}: {page}"))
    }
}

/// Runs `switchboard ARGS` (an admin command) to the end: `(success, stdout, stderr)`.
pub fn admin_command(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .env("SB_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SB_TEST_HOOK_SECRET", HOOK_SECRET)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run switchboard");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A free port on 127.0.0.1 for a daemon that admin commands must find from its config.
pub fn free_listen_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A callback receiver, a config pointing at it, the daemon on it, and an admin client.
pub async fn started() -> (Receiver, tempfile::TempDir, Daemon, Client) {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &receiver.url, "");
    let daemon = Daemon::start(dir.path());
    let client = Client::new(&daemon);
    (receiver, dir, daemon, client)
}

/// One delivery the callback receiver accepted.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub id: String,
    pub thread: String,
    pub text: String,
    pub author: Value,
    pub buttons: Value,
    /// The light Markdown original of a bot answer.
    pub markdown: Option<String>,
}

#[derive(Default)]
struct ReceiverState {
    accepted: Vec<Delivered>,
    /// Requests to refuse with 500 before accepting again.
    fail_next: usize,
    /// Refuse everything with 503.
    down: bool,
    attempts: usize,
    /// Ids of every request answered 200, repeats included.
    successes: Vec<String>,
}

/// An HTTP server standing in for the customer's system behind the web hook.
#[derive(Clone)]
pub struct Receiver {
    state: Arc<Mutex<ReceiverState>>,
    pub url: String,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = axum::Router::new()
            .route("/callback", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/callback", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { state, url }
    }

    pub fn fail_next(&self, n: usize) {
        self.state.lock().unwrap().fail_next = n;
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    pub fn accepted(&self) -> Vec<Delivered> {
        self.state.lock().unwrap().accepted.clone()
    }

    /// Ids that were answered 200 more than once (a retry after a lost answer, or a bug).
    pub fn repeated(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        let mut seen = std::collections::HashSet::new();
        s.successes
            .iter()
            .filter(|id| !seen.insert(*id))
            .cloned()
            .collect()
    }

    pub fn attempts(&self) -> usize {
        self.state.lock().unwrap().attempts
    }

    pub fn texts_for(&self, thread: &str) -> Vec<String> {
        self.accepted()
            .into_iter()
            .filter(|d| d.thread == thread)
            .map(|d| d.text)
            .collect()
    }

    /// Waits until `thread` has received `n` replies; returns them.
    pub async fn wait_for(&self, thread: &str, n: usize) -> Vec<Delivered> {
        eventually(20, &format!("{n} replies to {thread}"), async || {
            let got: Vec<Delivered> = self
                .accepted()
                .into_iter()
                .filter(|d| d.thread == thread)
                .collect();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let now = unix_now();
    // Every callback must carry a valid signature.
    if signature::verify(
        HOOK_SECRET.as_bytes(),
        header(signature::TIMESTAMP_HEADER).as_deref(),
        header(signature::SIGNATURE_HEADER).as_deref(),
        &body,
        now,
        300,
    )
    .is_err()
    {
        return StatusCode::UNAUTHORIZED;
    }
    let mut s = state.lock().unwrap();
    s.attempts += 1;
    if s.down {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if s.fail_next > 0 {
        s.fail_next -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(header("idempotency-key").as_deref(), Some(id.as_str()));
    s.successes.push(id.clone());
    // Like a real receiver: a repeated id is acknowledged and not applied again.
    if !s.accepted.iter().any(|d| d.id == id) {
        s.accepted.push(Delivered {
            id,
            thread: v["external_thread"].as_str().unwrap().to_owned(),
            text: v["text"].as_str().unwrap().to_owned(),
            author: v["author"].clone(),
            buttons: v["buttons"].clone(),
            markdown: v["markdown"].as_str().map(str::to_owned),
        });
    }
    StatusCode::OK
}
