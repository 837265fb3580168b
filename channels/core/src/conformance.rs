//! The conformance kit every connector runs (feature `conformance`): the same checks of the
//! [`Channel`] contract, against each network's fake, through the connector's real client.
//!
//! A connector's test implements [`Harness`] for its fake (how a customer writes, what the
//! network received, how to make the next send fail) and calls [`run`]. The kit supplies an
//! in-memory engine side ([`RecordingInbound`], [`MemoryState`], [`MemoryBlobs`]) that
//! behaves like the real one where the contract cares: it stores a message id once, and it
//! can refuse for a while as a full disk would.
//!
//! What is checked:
//! 1. a customer message arrives once, with its thread and sender, even when the network
//!    delivers it twice;
//! 2. a message refused by storage (unavailable) is not lost: it arrives once storage is back;
//! 3. replies arrive in order; agent text is shown literally, bot Markdown without markers;
//! 4. a long reply arrives whole, in parts within the network's limit;
//! 5. failures are classified: temporary -> retryable, flood control -> retryable with the
//!    network's wait, blocked -> unreachable; and a retried reply arrives once.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{
    Accepted, BlobId, Blobs, Channel, ChannelContext, ChannelError, ChannelId, ExternalThread,
    Inbound, InboundError, InboundEvent, Outbound, OutboundAuthor, StateError, TextFormat,
};

/// How long the kit waits for something to arrive.
const WAIT: Duration = Duration::from_secs(20);

/// How the next send should fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A server error or a cut connection.
    Temporary,
    /// Flood control with the network's wait, in seconds.
    RateLimited(u32),
    /// The customer blocked the bot or left.
    Blocked,
}

/// One network's fake, as the kit drives it.
#[async_trait::async_trait]
pub trait Harness: Send + Sync {
    /// Builds the connector on `ctx`. The kit runs it (`run`) and serves its `http_routes`.
    async fn connector(&self, ctx: ChannelContext) -> Arc<dyn Channel>;
    /// Called once the connector's routes are served at `base` (`http://127.0.0.1:PORT`).
    async fn serving(&self, _base: &str) {}
    /// The customer `user` writes message number `message`; returns the thread it belongs to.
    /// Called again with the same numbers, the network delivers the same message again.
    async fn customer_says(&self, user: u32, message: u32, text: &str) -> ExternalThread;
    /// Texts the network received for `thread`, in order, as the customer sees them.
    async fn received(&self, thread: &ExternalThread) -> Vec<String>;
    /// The next send fails as `failure` (only those [`Harness::failures`] names are asked).
    async fn fail_next_send(&self, failure: Failure);
    /// The failures this network has. All three by default; a channel that is not a network
    /// (web chat: replies are written to its own store) names those it can meet, and the
    /// harness documents why the others cannot happen.
    fn failures(&self) -> &'static [Failure] {
        &[
            Failure::Temporary,
            Failure::RateLimited(3),
            Failure::Blocked,
        ]
    }
}

/// The engine side, in memory: stores each message id once, can refuse for a while.
#[derive(Default)]
pub struct RecordingInbound {
    events: Mutex<Vec<InboundEvent>>,
    seen: Mutex<HashSet<(String, String)>>,
    refuse: AtomicUsize,
    refused: AtomicUsize,
}

impl RecordingInbound {
    /// Stored events, duplicates dropped.
    pub fn events(&self) -> Vec<InboundEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stored customer messages (edits and other events left out).
    pub fn messages(&self) -> Vec<crate::InboundMessage> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                InboundEvent::Message(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// The next `n` submissions are refused as unavailable.
    pub fn refuse(&self, n: usize) {
        self.refuse.store(n, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Inbound for RecordingInbound {
    async fn submit(
        &self,
        _channel: &ChannelId,
        event: InboundEvent,
    ) -> Result<Accepted, InboundError> {
        if self
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(InboundError::Unavailable(
                "disk full (conformance kit)".into(),
            ));
        }
        let key = match &event {
            InboundEvent::Message(m) | InboundEvent::Start(m) => {
                (m.thread.0.clone(), m.message_id.0.clone())
            }
            InboundEvent::Edit(e) => (e.thread.0.clone(), format!("edit:{}", e.message_id)),
            InboundEvent::Delete { thread, message_id } => {
                (thread.0.clone(), format!("delete:{message_id}"))
            }
            InboundEvent::DeliveryFailed {
                thread,
                outbound_id,
                ..
            } => (thread.0.clone(), format!("failed:{outbound_id}")),
        };
        if !self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key)
        {
            return Ok(Accepted::Duplicate);
        }
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
        Ok(Accepted::Stored)
    }
}

pub use crate::memory::MemoryState;

/// [`Blobs`] in memory.
#[derive(Default)]
pub struct MemoryBlobs(Mutex<BTreeMap<String, Vec<u8>>>);

#[async_trait::async_trait]
impl Blobs for MemoryBlobs {
    async fn put(&self, bytes: &[u8]) -> Result<BlobId, StateError> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let id = format!("blob-{}-{}", map.len(), bytes.len());
        map.insert(id.clone(), bytes.to_vec());
        Ok(BlobId(id))
    }
    async fn get(&self, id: &BlobId) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id.0)
            .cloned())
    }
}

fn reply(id: &str, author: OutboundAuthor, text: &str, format: TextFormat) -> Outbound {
    Outbound {
        id: id.into(),
        author,
        text: text.into(),
        buttons: vec![],
        in_reply_to: None,
        format,
        attachments: vec![],
    }
}

async fn until<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "conformance: timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends, retrying what the connector calls retryable as the outbox would (without waiting
/// out long waits: the kit checks the classification, not the clock).
async fn deliver(ch: &dyn Channel, to: &ExternalThread, o: &Outbound) {
    for _ in 0..5 {
        match ch.send(to, o).await {
            Ok(_) => return,
            Err(ChannelError::Retryable { .. }) => continue,
            Err(e) => panic!("conformance: sending {} failed: {e}", o.id),
        }
    }
    panic!("conformance: {} not delivered after 5 tries", o.id);
}

fn messages(inbound: &RecordingInbound) -> Vec<crate::InboundMessage> {
    inbound.messages()
}

/// Runs every check against `harness`; panics with what failed.
pub async fn run(harness: &dyn Harness) {
    let inbound = Arc::new(RecordingInbound::default());
    let ctx = ChannelContext {
        id: ChannelId::new("conformance"),
        inbound: inbound.clone(),
        state: Arc::new(MemoryState::default()),
        blobs: Arc::new(MemoryBlobs::default()),
    };
    let channel = harness.connector(ctx).await;
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    if let Some(routes) = channel.http_routes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind for the connector's routes");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, routes)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        }));
        harness.serving(&base).await;
    }
    {
        let channel = channel.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let _ = channel.run(stop).await;
        }));
    }

    // 1. In, once, even when delivered twice.
    let thread = harness.customer_says(7001, 1, "where is my parcel?").await;
    let first = until("the first message", async || {
        messages(&inbound).into_iter().next()
    })
    .await;
    assert_eq!(first.text, "where is my parcel?");
    assert_eq!(first.thread, thread);
    harness.customer_says(7001, 1, "where is my parcel?").await;
    harness.customer_says(7001, 2, "hello?").await;
    until("the second message", async || {
        (messages(&inbound).len() >= 2).then_some(())
    })
    .await;
    let texts: Vec<String> = messages(&inbound).into_iter().map(|m| m.text).collect();
    assert_eq!(
        texts,
        ["where is my parcel?", "hello?"],
        "each message once"
    );

    // 2. Refused by storage, not lost.
    inbound.refuse(1);
    harness.customer_says(7001, 3, "still there?").await;
    until("the message storage refused once", async || {
        messages(&inbound)
            .iter()
            .any(|m| m.text == "still there?")
            .then_some(())
    })
    .await;

    // 3. Replies in order; agent text literal, bot Markdown without markers.
    let replies = [
        reply(
            "c-1",
            OutboundAuthor::Agent("Ana".into()),
            "<b>1 < 2</b> & *stars*",
            TextFormat::Plain,
        ),
        reply(
            "c-2",
            OutboundAuthor::Bot,
            "**Returns**: within _30 days_",
            TextFormat::Markdown,
        ),
        reply("c-3", OutboundAuthor::System, "third", TextFormat::Plain),
    ];
    for r in &replies {
        deliver(channel.as_ref(), &thread, r).await;
    }
    let got = until("three replies", async || {
        let r = harness.received(&thread).await;
        (r.len() >= 3).then_some(r)
    })
    .await;
    assert_eq!(
        got[..3],
        ["<b>1 < 2</b> & *stars*", "Returns: within 30 days", "third"],
        "in order, shown as written"
    );

    // 4. A long reply arrives whole.
    let long = "Every word of this reply must arrive. ".repeat(300);
    deliver(
        channel.as_ref(),
        &thread,
        &reply("c-4", OutboundAuthor::System, &long, TextFormat::Plain),
    )
    .await;
    let limit = channel.capabilities().max_text_chars;
    let got = until("the long reply", async || {
        let r = harness.received(&thread).await;
        let words: usize = r[3..].iter().map(|t| t.matches("arrive").count()).sum();
        (words >= 300).then_some(r)
    })
    .await;
    if let Some(limit) = limit {
        assert!(
            got[3..].iter().all(|t| t.chars().count() <= limit),
            "parts within {limit}"
        );
    }
    let before = got.len();

    // 5. Failures classified; a retried reply arrives once.
    let failures = harness.failures();
    let r = reply(
        "c-5",
        OutboundAuthor::System,
        "after a hiccup",
        TextFormat::Plain,
    );
    if failures.contains(&Failure::Temporary) {
        harness.fail_next_send(Failure::Temporary).await;
        match channel.send(&thread, &r).await {
            Err(ChannelError::Retryable { .. }) => {}
            other => panic!("a temporary failure must be retryable, got {other:?}"),
        }
    }
    deliver(channel.as_ref(), &thread, &r).await;
    if failures.contains(&Failure::RateLimited(3)) {
        harness.fail_next_send(Failure::RateLimited(3)).await;
        match channel.send(&thread, &r).await {
            Err(ChannelError::Retryable { after: Some(d), .. }) if d == Duration::from_secs(3) => {}
            other => panic!("flood control must carry the network's wait, got {other:?}"),
        }
    }
    if failures.contains(&Failure::Blocked) {
        harness.fail_next_send(Failure::Blocked).await;
        match channel.send(&thread, &r).await {
            Err(ChannelError::Unreachable(_)) => {}
            other => panic!("a blocked customer must be unreachable, got {other:?}"),
        }
    }
    let got = harness.received(&thread).await;
    assert_eq!(got[before..], ["after a hiccup"], "delivered once");

    stop.cancel();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
}
