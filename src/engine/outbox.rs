//! The outbox: delivers queued replies, in order per conversation, exactly once as far as the
//! network allows.
//!
//! - Items live in the store until delivered or given up, so they survive restarts.
//! - One conversation is delivered by one task at a time, head first: a reply never overtakes
//!   an earlier one. A failing head holds back the rest of its conversation only.
//! - Retries back off exponentially with jitter and never come sooner than the network's own
//!   `retry_after`. Each try carries the same outbound id, which connectors pass on as an
//!   idempotency key, so a retry after a timeout or a crash does not post twice.
//! - After `max_attempts`, or on a permanent error, the message is marked failed and stays
//!   visible in the API, where an agent can retry it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde::Deserialize;
use switchboard_channel::ChannelError;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::draft::Draft;
use super::plan::{DeliveryPlan, delivery_plan};
use super::{Engine, EngineError};
use crate::model::{
    Actor, Conversation, ConversationId, Delivery, DeliveryState, EventKind, Message, OutboxItem,
};

/// `[outbox]`: how replies are retried.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Deliveries tried this many times are marked failed (visible in the inbox).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with jitter.
    #[serde(default = "default_base_delay")]
    pub base_delay_ms: u64,
    /// Upper bound of the retry delay.
    #[serde(default = "default_max_delay")]
    pub max_delay_ms: u64,
    /// Conversations delivered to at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_max_attempts() -> u32 {
    12
}
fn default_base_delay() -> u64 {
    500
}
fn default_max_delay() -> u64 {
    5 * 60 * 1000
}
fn default_concurrency() -> usize {
    32
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            base_delay_ms: default_base_delay(),
            max_delay_ms: default_max_delay(),
            concurrency: default_concurrency(),
        }
    }
}

/// Longest one send may take before it counts as a (retryable) failure.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a claimed outbox head is this engine's: a send that times out, and recording its
/// outcome, end well inside it; each claim renews it.
const OUTBOX_LEASE: Duration = Duration::from_secs(180);
/// Longest the dispatcher sleeps without looking (a safety net; wakes are explicit).
const IDLE_SLEEP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// A delivery task is working on this conversation.
    in_flight: bool,
    /// Not due before this time.
    not_before_ms: i64,
    /// New work arrived since the current task started: look again when it ends.
    woken: bool,
}

pub(crate) struct Outbox {
    config: OutboxConfig,
    /// Conversations with undelivered items.
    slots: Mutex<HashMap<ConversationId, Slot>>,
    wake: Notify,
}

impl Outbox {
    pub fn new(config: OutboxConfig) -> Self {
        Outbox {
            config,
            slots: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        }
    }

    /// Tells the dispatcher a conversation has something to deliver now.
    pub fn wake(&self, conv: ConversationId) {
        let mut slots = self.slots.lock().expect("outbox lock");
        let slot = slots.entry(conv).or_default();
        slot.not_before_ms = 0;
        slot.woken = true;
        drop(slots);
        self.wake.notify_one();
    }
}

impl OutboxConfig {
    /// Milliseconds before attempt number `attempts + 1`: exponential, capped, spread over
    /// the upper half by `jitter` in `[0, 1)` so that many failures do not retry in lockstep.
    pub(crate) fn backoff_ms(&self, attempts: u32, jitter: f64) -> u64 {
        let exp = self
            .base_delay_ms
            .saturating_mul(1u64 << attempts.min(30))
            .min(self.max_delay_ms);
        let half = exp / 2;
        half + ((exp - half) as f64 * jitter.clamp(0.0, 1.0)) as u64
    }
}

/// An item for a message whose delivery failed, to try again from the start.
pub(crate) fn requeue(
    conv: &Conversation,
    message: &mut Message,
    author_name: Option<String>,
    now: i64,
) -> OutboxItem {
    let delivery = message.delivery.get_or_insert_with(|| Delivery {
        outbound_id: super::draft::outbound_id(conv, message.seq),
        state: DeliveryState::Queued,
        attempts: 0,
        last_error: None,
        external_id: None,
        updated_at_ms: now,
    });
    delivery.state = DeliveryState::Queued;
    delivery.attempts = 0;
    delivery.updated_at_ms = now;
    OutboxItem {
        conversation: conv.id,
        seq: message.seq,
        channel: conv.channel.clone(),
        thread: conv.thread.clone(),
        outbound: switchboard_channel::Outbound {
            id: delivery.outbound_id.clone(),
            author: message.author.outbound(author_name),
            text: message.text.clone(),
            buttons: vec![],
            in_reply_to: None,
            format: message.author.text_format(),
            attachments: message.attachments.clone(),
        },
        attempts: 0,
        flood_waits: 0,
        next_attempt_ms: now,
    }
}

/// The dispatcher: starts a delivery task for each conversation that is due.
pub(crate) async fn run(engine: Arc<Engine>, shutdown: CancellationToken) {
    let outbox = &engine.outbox;
    // Everything left from a previous run is due now; each conversation's task looks at its
    // head item's own time.
    match engine.store.outbox_conversations().await {
        Ok(convs) => {
            if !convs.is_empty() {
                tracing::info!(conversations = convs.len(), "resuming outbox");
            }
            let mut slots = outbox.slots.lock().expect("outbox lock");
            for conv in convs {
                slots.entry(conv).or_default();
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the outbox; deliveries wait for new work")
        }
    }
    let permits = Arc::new(Semaphore::new(outbox.config.concurrency.max(1)));
    // Deliveries under way; on shutdown each may finish its send and record the outcome, so a
    // reply the network took is not sent again after the restart.
    let mut deliveries = tokio::task::JoinSet::new();
    loop {
        let now = engine.now_ms();
        let mut due = Vec::new();
        let mut next_ms = None::<i64>;
        {
            let mut slots = outbox.slots.lock().expect("outbox lock");
            for (conv, slot) in slots.iter_mut() {
                if slot.in_flight {
                    continue;
                }
                if slot.not_before_ms <= now {
                    slot.in_flight = true;
                    slot.woken = false;
                    due.push(*conv);
                } else {
                    next_ms =
                        Some(next_ms.map_or(slot.not_before_ms, |n| n.min(slot.not_before_ms)));
                }
            }
        }
        for conv in due {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("semaphore open"),
                _ = shutdown.cancelled() => return finish(deliveries).await,
            };
            let engine = engine.clone();
            let stop = shutdown.clone();
            deliveries.spawn(async move {
                deliver_conversation(&engine, conv, &stop).await;
                drop(permit);
                engine.outbox.wake.notify_one();
            });
        }
        while deliveries.try_join_next().is_some() {}
        let sleep = next_ms
            .map(|n| Duration::from_millis((n - now).max(1) as u64))
            .unwrap_or(IDLE_SLEEP)
            .min(IDLE_SLEEP);
        tokio::select! {
            _ = shutdown.cancelled() => return finish(deliveries).await,
            _ = outbox.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Longest shutdown waits for deliveries under way.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(8);

async fn finish(mut deliveries: tokio::task::JoinSet<()>) {
    let all = async { while deliveries.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_WAIT, all).await.is_err() {
        tracing::warn!(
            "deliveries still under way at shutdown; they are retried after the restart"
        );
    }
}

/// Delivers one conversation's items head first until none is due, or shutdown.
#[tracing::instrument(name = "deliver", skip_all, fields(conversation = conv.0))]
async fn deliver_conversation(
    engine: &Arc<Engine>,
    conv: ConversationId,
    stop: &CancellationToken,
) {
    let next = loop {
        if stop.is_cancelled() {
            break Some(engine.now_ms());
        }
        let item = match engine
            .store
            .claim_outbox_head(conv, engine.holder, OUTBOX_LEASE)
            .await
        {
            Ok(Some(item)) => item,
            // Empty, or another worker holds the head (it delivers the rest).
            Ok(None) => break None,
            Err(e) => {
                tracing::error!(conversation = %conv, error = %e, "outbox read failed");
                break Some(engine.now_ms() + 1000);
            }
        };
        if item.next_attempt_ms > engine.now_ms() {
            break Some(item.next_attempt_ms);
        }
        let result = match engine.channel(&item.channel) {
            Some(channel) => {
                match tokio::time::timeout(SEND_TIMEOUT, channel.send(&item.thread, &item.outbound))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(ChannelError::retryable("send timed out")),
                }
            }
            None => Err(ChannelError::retryable(format!(
                "channel {} is not configured",
                item.channel
            ))),
        };
        if let Err(e) = record(engine, &item, result).await {
            tracing::error!(conversation = %conv, error = %e, "outbox could not record a delivery");
            break Some(engine.now_ms() + 1000);
        }
    };
    let mut slots = engine.outbox.slots.lock().expect("outbox lock");
    let woken = slots.get(&conv).is_some_and(|s| s.woken);
    match (woken, next) {
        (true, _) => {
            let slot = slots.entry(conv).or_default();
            slot.in_flight = false;
            slot.not_before_ms = 0;
        }
        (false, None) => {
            slots.remove(&conv);
        }
        (false, Some(at)) => {
            let slot = slots.entry(conv).or_default();
            slot.in_flight = false;
            slot.not_before_ms = at;
        }
    }
}

/// Commits the outcome of one send: the message's delivery state, the outbox, and where the
/// network says the customer cannot be reached, the conversation's mark, in one commit.
async fn record(
    engine: &Arc<Engine>,
    item: &OutboxItem,
    result: Result<switchboard_channel::ExternalMessageId, ChannelError>,
) -> Result<(), EngineError> {
    let message = engine
        .store
        .message(item.conversation, item.seq)
        .await?
        .ok_or(EngineError::NotFound("message"))?;
    let plan = delivery_plan(
        item,
        result,
        &engine.outbox.config,
        engine.now_ms(),
        rand::rng().random(),
    );
    engine
        .metrics
        .outbound(item.channel.as_str(), plan.outcome());
    let (conversation, seq) = (item.conversation, item.seq);
    match &plan {
        DeliveryPlan::Sent(_) => {}
        DeliveryPlan::Retry {
            at_ms,
            attempts,
            flood_waits,
            reason,
        } => {
            let delay_ms = at_ms - engine.now_ms();
            tracing::info!(%conversation, seq, attempts, flood_waits, delay_ms, %reason, "delivery will be retried");
        }
        DeliveryPlan::Failed { error, .. } => {
            tracing::warn!(%conversation, seq, attempts = item.attempts + 1, %error, "delivery failed for good");
        }
    }
    // Recorded durably before the next item of this conversation is sent.
    engine
        .update(conversation, Actor::System, |d| {
            apply_delivery(d, item, message.clone(), &plan)
        })
        .await?;
    Ok(())
}

/// Writes a [`DeliveryPlan`] into the draft of the item's conversation.
fn apply_delivery(
    d: &mut Draft,
    item: &OutboxItem,
    mut message: Message,
    plan: &DeliveryPlan,
) -> Result<(), EngineError> {
    let now = d.now;
    let delivery = message.delivery.get_or_insert_with(|| Delivery {
        outbound_id: item.outbound.id.clone(),
        state: DeliveryState::Queued,
        attempts: 0,
        last_error: None,
        external_id: None,
        updated_at_ms: now,
    });
    delivery.attempts = item.attempts + 1 + item.flood_waits;
    delivery.updated_at_ms = now;
    let key = (item.conversation, item.seq);
    match plan {
        DeliveryPlan::Sent(external_id) => {
            delivery.state = DeliveryState::Sent;
            delivery.external_id = Some(external_id.clone());
            delivery.last_error = None;
            message.external_id = Some(external_id.clone());
            d.change.outbox_remove.push(key);
            d.event(EventKind::DeliveryChanged {
                seq: item.seq,
                state: DeliveryState::Sent,
                error: None,
            });
        }
        DeliveryPlan::Retry {
            at_ms,
            attempts,
            flood_waits,
            reason,
        } => {
            delivery.last_error = Some(reason.clone());
            d.change.outbox_put.push(OutboxItem {
                attempts: *attempts,
                flood_waits: *flood_waits,
                next_attempt_ms: *at_ms,
                ..item.clone()
            });
        }
        DeliveryPlan::Failed { error, unreachable } => {
            delivery.state = DeliveryState::Failed;
            delivery.last_error = Some(error.clone());
            d.change.outbox_remove.push(key);
            d.change.failed_put.push(key);
            d.event(EventKind::DeliveryChanged {
                seq: item.seq,
                state: DeliveryState::Failed,
                error: Some(error.clone()),
            });
            // Shown on the conversation until the customer writes again.
            if let Some(reason) = unreachable
                && d.conv.unreachable.as_ref() != Some(reason)
            {
                d.conv.unreachable = Some(reason.clone());
                d.event(EventKind::ChannelUnreachable {
                    seq: item.seq,
                    reason: reason.clone(),
                });
            }
        }
    }
    d.change.messages.push(message);
    Ok(())
}
