//! The channel conformance kit against web chat, driven as the widget drives it: a session per
//! customer, messages posted with the widget's own ids (and posted again after a 503), replies
//! read from the session's transcript.
//!
//! Web chat is not a network: a reply is delivered once it is in the chat's own durable
//! transcript, which the widget reads. So a send can fail only as that store fails (retryable,
//! checked here by failing its next write); no network names a wait (no flood control), and a
//! customer cannot block a web page (no "unreachable").

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use serde_json::{Value, json};
use switchboard_channel::conformance::{self, Failure, Harness};
use switchboard_channel::{
    Channel, ChannelContext, ChannelState, ExternalThread, KeyValue, StateError,
};
use switchboard_webhook::webchat::{WebchatChannel, WebchatConfig};

/// The kit's state, whose next writes fail on demand (a full or failing disk).
struct FailingState {
    inner: Arc<dyn ChannelState>,
    fail_writes: AtomicUsize,
}

impl FailingState {
    fn write(&self) -> Result<(), StateError> {
        let failing = self
            .fail_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(StateError("disk failed".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ChannelState for FailingState {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.inner.get(key).await
    }
    async fn put_all(&self, pairs: &[(&[u8], &[u8])]) -> Result<(), StateError> {
        self.write()?;
        self.inner.put_all(pairs).await
    }
    async fn remove_all(&self, keys: &[&[u8]]) -> Result<(), StateError> {
        self.write()?;
        self.inner.remove_all(keys).await
    }
    async fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StateError> {
        self.inner.scan(prefix, after, limit).await
    }
    async fn next_id(&self) -> Result<u64, StateError> {
        self.inner.next_id().await
    }
    async fn sync(&self) -> Result<(), StateError> {
        self.inner.sync().await
    }
}

#[derive(Default)]
struct Webchat {
    state: Mutex<Option<Arc<FailingState>>>,
    base: Mutex<String>,
    /// Per customer: their session id (the thread) and token.
    sessions: tokio::sync::Mutex<HashMap<u32, (String, String)>>,
    http: reqwest::Client,
}

impl Webchat {
    fn url(&self, path: &str) -> String {
        format!("{}/chat/conformance/{path}", self.base.lock().unwrap())
    }

    async fn session(&self, user: u32) -> (String, String) {
        let mut sessions = self.sessions.lock().await;
        if let Some(s) = sessions.get(&user) {
            return s.clone();
        }
        let r: Value = self
            .http
            .post(self.url("sessions"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let s = (
            r["session_id"].as_str().unwrap().to_owned(),
            r["token"].as_str().unwrap().to_owned(),
        );
        sessions.insert(user, s.clone());
        s
    }
}

#[async_trait::async_trait]
impl Harness for Webchat {
    async fn connector(&self, mut ctx: ChannelContext) -> Arc<dyn Channel> {
        let state = Arc::new(FailingState {
            inner: ctx.state.clone(),
            fail_writes: AtomicUsize::new(0),
        });
        *self.state.lock().unwrap() = Some(state.clone());
        ctx.state = state;
        let config: WebchatConfig = toml::from_str("").unwrap();
        Arc::new(WebchatChannel::build(config, ctx).await.unwrap())
    }

    async fn serving(&self, base: &str) {
        *self.base.lock().unwrap() = base.to_owned();
    }

    /// Posts as the widget does: with its own message id, and again after a 503.
    async fn customer_says(&self, user: u32, message: u32, text: &str) -> ExternalThread {
        let (session, token) = self.session(user).await;
        let body = json!({"text": text, "client_message_id": format!("m{message}")});
        for _ in 0..50 {
            let r = self
                .http
                .post(self.url("messages"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            if r.status() != StatusCode::SERVICE_UNAVAILABLE {
                assert!(r.status().is_success(), "{}", r.status());
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        ExternalThread(session)
    }

    async fn received(&self, thread: &ExternalThread) -> Vec<String> {
        let token = {
            let sessions = self.sessions.lock().await;
            let Some((_, token)) = sessions.values().find(|(s, _)| *s == thread.0) else {
                return vec![];
            };
            token.clone()
        };
        let r: Value = self
            .http
            .get(self.url("transcript"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["from"] != "customer")
            .map(|e| e["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    async fn fail_next_send(&self, failure: Failure) {
        assert_eq!(failure, Failure::Temporary, "web chat has no other failure");
        let state = self.state.lock().unwrap().clone().expect("built");
        state.fail_writes.store(1, Ordering::SeqCst);
    }

    fn failures(&self) -> &'static [Failure] {
        &[Failure::Temporary]
    }
}

#[tokio::test]
async fn webchat_meets_the_channel_contract() {
    conformance::run(&Webchat::default()).await;
}
