//! The channel conformance kit against a signed sender and a callback receiver on loopback.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use switchboard_channel::conformance::{self, Failure, Harness};
use switchboard_channel::{Channel, ChannelContext, ExternalThread};
use switchboard_webhook::{WebhookChannel, WebhookConfig, signature};

const SECRET: &str = "conformance-secret";

#[derive(Default)]
struct Receiver {
    /// `(thread, text)` of each accepted callback.
    accepted: Vec<(String, String)>,
    fail_next: Option<Failure>,
}

struct Webhook {
    receiver: Arc<Mutex<Receiver>>,
    callback_url: String,
    base: Mutex<String>,
    http: reqwest::Client,
}

async fn callback(State(r): State<Arc<Mutex<Receiver>>>, Json(body): Json<Value>) -> Response {
    let mut r = r.lock().unwrap();
    match r.fail_next.take() {
        Some(Failure::Temporary) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Some(Failure::RateLimited(s)) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", s.to_string())],
            )
                .into_response();
        }
        Some(Failure::Blocked) => return StatusCode::GONE.into_response(),
        None => {}
    }
    r.accepted.push((
        body["external_thread"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body["text"].as_str().unwrap_or_default().to_owned(),
    ));
    Json(json!({})).into_response()
}

impl Webhook {
    async fn start() -> Webhook {
        let receiver = Arc::new(Mutex::new(Receiver::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let callback_url = format!("http://{}/callback", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/callback", axum::routing::post(callback))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Webhook {
            receiver,
            callback_url,
            base: Mutex::new(String::new()),
            http: reqwest::Client::new(),
        }
    }
}

#[async_trait::async_trait]
impl Harness for Webhook {
    async fn connector(&self, ctx: ChannelContext) -> Arc<dyn Channel> {
        let config: WebhookConfig = toml::from_str(&format!(
            "secret = \"{SECRET}\"\ncallback_url = \"{}\"\nallow_private_callback = true",
            self.callback_url
        ))
        .unwrap();
        Arc::new(WebhookChannel::build(config, ctx).unwrap())
    }

    async fn serving(&self, base: &str) {
        *self.base.lock().unwrap() = base.to_owned();
    }

    /// Posts like a well-behaved sender: signed, and again after a 503.
    async fn customer_says(&self, user: u32, message: u32, text: &str) -> ExternalThread {
        let body = json!({"external_user": format!("u{user}"), "message_id": format!("m{message}"), "text": text})
            .to_string();
        let url = format!("{}/hooks/conformance/messages", self.base.lock().unwrap());
        for _ in 0..50 {
            let ts = switchboard_channel::now_ms() / 1000;
            let r = self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .header(signature::TIMESTAMP_HEADER, ts.to_string())
                .header(
                    signature::SIGNATURE_HEADER,
                    signature::sign(SECRET.as_bytes(), ts, body.as_bytes()),
                )
                .body(body.clone())
                .send()
                .await
                .unwrap();
            if r.status() != StatusCode::SERVICE_UNAVAILABLE {
                assert!(r.status().is_success(), "{}", r.status());
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        ExternalThread(format!("u{user}"))
    }

    async fn received(&self, thread: &ExternalThread) -> Vec<String> {
        let r = self.receiver.lock().unwrap();
        r.accepted
            .iter()
            .filter(|(t, _)| *t == thread.0)
            .map(|(_, text)| text.clone())
            .collect()
    }

    async fn fail_next_send(&self, failure: Failure) {
        self.receiver.lock().unwrap().fail_next = Some(failure);
    }
}

#[tokio::test]
async fn webhook_meets_the_channel_contract() {
    conformance::run(&Webhook::start().await).await;
}
