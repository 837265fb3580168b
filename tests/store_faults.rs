//! A store that fails (full disk, I/O error) must turn into 503s that change nothing, and
//! everything acknowledged before must still be there. The real sled store is wrapped by one
//! that can be told to fail its writes, and the real engine, web hook channel and API run on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use switchboard::bot::matcher::Matcher;
use switchboard::bot::responder::KbResponder;
use switchboard::config::{BotConfig, OutboxConfig};
use switchboard::engine::{Engine, EngineSettings};
use switchboard::inbox::ApiState;
use switchboard::model::*;
use switchboard::store::lease::Holder;
use switchboard::store::sled_store::SledOptions;
use switchboard::store::*;
use switchboard_channel::*;
use switchboard_webhook::{WebhookChannel, WebhookConfig, signature};
use tower::ServiceExt;

/// Delegates to sled; fails every write and durability wait while `failing` is set.
struct FlakyStore {
    inner: SledStore,
    failing: AtomicBool,
}

impl FlakyStore {
    fn check(&self) -> Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::Io(
                "No space left on device (os error 28)".into(),
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl Store for FlakyStore {
    fn commit(&self, change: Change) -> Commit {
        match self.check() {
            Ok(()) => self.inner.commit(change),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
    fn durable(&self) -> Durable {
        match self.check() {
            Ok(()) => self.inner.durable(),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
    async fn next_id(&self) -> Result<u64> {
        self.inner.next_id().await
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<switchboard::model::Event> {
        self.inner.subscribe()
    }
    async fn conversation(&self, id: ConversationId) -> Result<Option<Conversation>> {
        self.inner.conversation(id).await
    }
    async fn thread(&self, c: &ChannelId, t: &ExternalThread) -> Result<Option<ConversationId>> {
        self.inner.thread(c, t).await
    }
    async fn identity(&self, c: &ChannelId, u: &ExternalUser) -> Result<Option<ContactId>> {
        self.inner.identity(c, u).await
    }
    async fn external_message(
        &self,
        c: &ChannelId,
        id: &ExternalMessageId,
    ) -> Result<Option<(ConversationId, u64)>> {
        self.inner.external_message(c, id).await
    }
    async fn contact(&self, id: ContactId) -> Result<Option<Contact>> {
        self.inner.contact(id).await
    }
    async fn contact_conversations(&self, c: ContactId) -> Result<Vec<ConversationId>> {
        self.inner.contact_conversations(c).await
    }
    async fn message(&self, c: ConversationId, seq: u64) -> Result<Option<Message>> {
        self.inner.message(c, seq).await
    }
    async fn messages(&self, c: ConversationId, after: u64, limit: usize) -> Result<Vec<Message>> {
        self.inner.messages(c, after, limit).await
    }
    async fn notes(&self, c: ConversationId) -> Result<Vec<Note>> {
        self.inner.notes(c).await
    }
    async fn events(&self, after: Option<EventId>, limit: usize) -> Result<Vec<Event>> {
        self.inner.events(after, limit).await
    }
    async fn conversation_events(&self, c: ConversationId) -> Result<Vec<Event>> {
        self.inner.conversation_events(c).await
    }
    async fn list_conversations(&self, q: &ConversationQuery) -> Result<Page> {
        self.inner.list_conversations(q).await
    }
    async fn status_counts(&self) -> Result<[u64; 5]> {
        self.inner.status_counts().await
    }
    async fn agent(&self, id: AgentId) -> Result<Option<Agent>> {
        self.inner.agent(id).await
    }
    async fn agents(&self) -> Result<Vec<Agent>> {
        self.inner.agents().await
    }
    async fn agent_by_token_hash(&self, h: &str) -> Result<Option<Agent>> {
        self.inner.agent_by_token_hash(h).await
    }
    async fn outbox_conversations(&self) -> Result<Vec<ConversationId>> {
        self.inner.outbox_conversations().await
    }
    async fn claim_outbox_head(
        &self,
        c: ConversationId,
        holder: Holder,
        lease: Duration,
    ) -> Result<Option<OutboxItem>> {
        self.inner.claim_outbox_head(c, holder, lease).await
    }
    async fn bot_queue(
        &self,
        after: Option<(ConversationId, u64)>,
        limit: usize,
    ) -> Result<Vec<(ConversationId, u64)>> {
        self.inner.bot_queue(after, limit).await
    }
    async fn claim_bot(
        &self,
        c: ConversationId,
        seq: u64,
        holder: Holder,
        lease: Duration,
    ) -> Result<bool> {
        self.inner.claim_bot(c, seq, holder, lease).await
    }
    fn bot_done(&self, c: ConversationId, seq: u64) {
        self.inner.bot_done(c, seq)
    }
    async fn failed_deliveries(&self, limit: usize) -> Result<Vec<(ConversationId, u64)>> {
        self.inner.failed_deliveries(limit).await
    }
    async fn meta(&self, k: &str) -> Result<Option<Vec<u8>>> {
        self.inner.meta(k).await
    }
    async fn set_meta(&self, k: &str, v: &[u8]) -> Result<()> {
        self.inner.set_meta(k, v).await
    }
    async fn channel_state(&self, c: &ChannelId) -> Result<Arc<dyn ChannelState>> {
        self.inner.channel_state(c).await
    }
    async fn kv(&self, space: &str) -> Result<Arc<dyn ChannelState>> {
        self.inner.kv(space).await
    }
    fn maintenance(&self) -> Option<&dyn switchboard::store::Maintenance> {
        self.inner.maintenance()
    }
    async fn records(
        &self,
        visit: &mut (dyn FnMut(records::Record) -> Result<()> + Send),
    ) -> Result<()> {
        self.inner.records(visit).await
    }
    fn restore(&self, records: Vec<records::Record>) -> Pending<()> {
        self.inner.restore(records)
    }
    fn erase_contact(&self, contact: ContactId, at_ms: i64) -> Pending<Erased> {
        self.inner.erase_contact(contact, at_ms)
    }
    async fn stats(&self) -> Result<StoreStats> {
        self.inner.stats().await
    }
}

const SECRET: &str = "s3cret-0123456789";

fn hook_request(message_id: &str, text: &str) -> Request<Body> {
    let body = json!({"external_user": "zoe", "message_id": message_id, "text": text}).to_string();
    let ts = now_ms() / 1000;
    Request::post("/hooks/hook/messages")
        .header("content-type", "application/json")
        .header(signature::TIMESTAMP_HEADER, ts.to_string())
        .header(
            signature::SIGNATURE_HEADER,
            signature::sign(SECRET.as_bytes(), ts, body.as_bytes()),
        )
        .body(Body::from(body))
        .unwrap()
}

async fn call(router: &axum::Router, req: Request<Body>) -> (StatusCode, Value, Option<String>) {
    let r = router.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        retry_after,
    )
}

#[tokio::test]
async fn a_failing_store_answers_503_and_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FlakyStore {
        inner: SledStore::open(dir.path(), &SledOptions::with_cache_mb(8)).unwrap(),
        failing: AtomicBool::new(false),
    });
    let bot = BotConfig::default();
    let kb = switchboard::bot::kb::load_dir(std::path::Path::new("config/kb")).unwrap();
    let matcher = Matcher::build(kb, None, &|_| {}).unwrap();
    let responder = Arc::new(KbResponder::new(matcher, &bot));
    let settings = EngineSettings {
        handoff_message: "handing over".into(),
        welcome_message: "welcome".into(),
        offhours_message: "offline until {when}".into(),
        handoff_wait_message: "you are number {position}, about {wait_minutes} min".into(),
        long_wait_minutes: 30,
        long_wait_message: "leave your email".into(),
        outbox: OutboxConfig::default(),
        bot_workers: 1,
    };
    let engine = Engine::new(store.clone(), responder, settings)
        .await
        .unwrap();
    let (_, token) = engine
        .create_agent("admin", Role::Admin, None, None)
        .await
        .unwrap();
    let id = ChannelId::new("hook");
    let blobs =
        Arc::new(switchboard::store::blobs::FileBlobs::open(&dir.path().join("blobs")).unwrap());
    let config: WebhookConfig = toml::from_str(&format!("secret = \"{SECRET}\"")).unwrap();
    let ctx = ChannelContext {
        id: id.clone(),
        inbound: engine.clone(),
        state: store.channel_state(&id).await.unwrap(),
        blobs: blobs.clone(),
    };
    let channel = Arc::new(WebhookChannel::build(config, ctx).unwrap());
    engine.register_channel(channel.clone());
    let state = ApiState {
        engine: engine.clone(),
        kb: Arc::new(
            switchboard::bot::live::LiveKb::open(store.as_ref(), &bot, None)
                .await
                .unwrap(),
        ),
        ready: Arc::new(AtomicBool::new(true)),
        shutdown: Default::default(),
        blobs,
        sessions: Arc::new(switchboard::inbox::auth::Sessions::new(
            store.kv("sessions").await.unwrap(),
            1,
            false,
        )),
        backups_dir: std::env::temp_dir().join("switchboard-store-faults-backups"),
    };
    let api = switchboard::inbox::api(state, &Default::default());
    let router = api.merge(channel.http_routes().unwrap());

    let (status, _, _) = call(&router, hook_request("z1", "first")).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    store.failing.store(true, Ordering::SeqCst);
    let (status, body, retry_after) = call(&router, hook_request("z2", "second")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert_eq!(retry_after.as_deref(), Some("5"));
    let conv = store
        .list_conversations(&ConversationQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .items[0]
        .clone();
    let reply = Request::post(format!("/api/v1/conversations/{}/messages", conv.id))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"text":"hello"}"#))
        .unwrap();
    let (status, body, _) = call(&router, reply).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable"))
    );
    assert_eq!(
        store.conversation(conv.id).await.unwrap().unwrap(),
        conv,
        "nothing changed"
    );

    // The disk recovers; the client retries; the first message is still there, once.
    store.failing.store(false, Ordering::SeqCst);
    let (status, body, _) = call(&router, hook_request("z2", "second")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::ACCEPTED, Some("accepted"))
    );
    let texts: Vec<String> = store
        .messages(conv.id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.author == Author::Customer)
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["first", "second"]);
}
