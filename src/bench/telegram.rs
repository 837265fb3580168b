//! `switchboard bench telegram`: the Telegram connector against the fake Bot API on loopback.
//!
//! - Inbound, end to end: `updates` private messages, each from a new customer (so that
//!   every one gets exactly one reply: an answer, a clarification or a hand-over), are queued
//!   at the fake; the daemon (in this process) polls them, stores each durably, lets the bot decide
//!   and queues the answer, which the outbox sends back. Reported: updates/s until Telegram's
//!   offset confirms them all (stored), and until every answer reached the fake (answered).
//! - Outbound: `sends` replies through the connector's `send` from `clients` concurrent
//!   callers, flood pacing off (Telegram itself allows about 30/s per bot; this measures what
//!   the connector could push).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use switchboard_channel::{
    Channel, ChannelContext, ChannelId, Outbound, OutboundAuthor, TextFormat,
};
use switchboard_telegram::fake::FakeTelegram;
use switchboard_telegram::{TelegramChannel, TelegramConfig};

use crate::store::blobs::FileBlobs;

const TOKEN: &str = "1000:bench";

#[derive(clap::Args, Debug)]
pub struct TelegramArgs {
    /// Inbound updates to push through the daemon.
    #[arg(long, default_value_t = 5_000)]
    updates: usize,
    /// Outbound sends through the connector.
    #[arg(long, default_value_t = 5_000)]
    sends: usize,
    /// Concurrent senders.
    #[arg(long, default_value_t = 32)]
    clients: usize,
}

fn config(url: &str, poll_timeout: u32) -> String {
    format!(
        "token = \"{TOKEN}\"\napi_url = \"{url}\"\npoll_timeout_secs = {poll_timeout}\n\
         max_messages_per_sec = 0\nprivate_interval_ms = 0\ngroup_interval_ms = 0\n"
    )
}

/// Waits until `done` holds, checking every 5 ms, for at most `limit`.
async fn until(limit: Duration, what: &str, done: impl Fn() -> bool) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            bail!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(start.elapsed())
}

pub async fn telegram(args: TelegramArgs) -> anyhow::Result<()> {
    let tmp = super::tempdir()?;
    let fake = FakeTelegram::start(TOKEN).await;
    println!(
        "bench telegram: {} updates from as many customers through the daemon; {} sends from {} \
         callers; fake Bot API on loopback, flood pacing off, durability on",
        args.updates, args.sends, args.clients
    );

    // Inbound, through the whole daemon.
    let extra = format!(
        "[channels.tg]\ntype = \"telegram\"\n{}",
        config(&fake.url(), 1)
    );
    let (callback, _) = super::sink().await?;
    let (_, stop, handle) = super::start_daemon(
        &tmp.join("daemon"),
        &callback,
        crate::config::DEFAULT_CACHE_MB,
        &extra,
    )
    .await?;
    // Warm-up: one conversation end to end.
    fake.private_message(1, "Warm", 1, "Where is my order?");
    until(Duration::from_secs(30), "warm-up answered", || {
        !fake.sent().is_empty()
    })
    .await?;
    let before = fake.sent().len();
    let questions = [
        "Where is my order?",
        "How much is shipping?",
        "How do I return an item?",
        "Can I pay with PayPal?",
    ];
    let start = Instant::now();
    for i in 0..args.updates {
        fake.private_message(1000 + i as i64, "Bench", 1, questions[i % questions.len()]);
    }
    let limit = Duration::from_secs(600);
    until(limit, "all updates confirmed", || fake.pending() == 0).await?;
    let stored = start.elapsed();
    until(limit, "all answers sent", || {
        fake.sent().len() >= before + args.updates
    })
    .await?;
    let answered = start.elapsed();
    let rate = |d: Duration| args.updates as f64 / d.as_secs_f64();
    println!(
        "inbound: stored {:.0} updates/s ({:.2} s), answered end to end {:.0} updates/s ({:.2} s)",
        rate(stored),
        stored.as_secs_f64(),
        rate(answered),
        answered.as_secs_f64()
    );
    stop.cancel();
    handle.await??;

    // Outbound, the connector alone.
    let store = crate::store::open(&tmp.join("out"), &crate::store::StoreConfig::default())?;
    let id = ChannelId::new("tg");
    let ctx = ChannelContext {
        state: store.channel_state(&id).await?,
        inbound: Arc::new(NoInbound),
        blobs: Arc::new(FileBlobs::open(&tmp.join("blobs"))?),
        id,
    };
    let tg_config: TelegramConfig = toml::from_str(&config(&fake.url(), 1))?;
    let channel = Arc::new(TelegramChannel::build(tg_config, ctx).map_err(anyhow::Error::msg)?);
    let sent_before = fake.sent().len();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (channel, next, total) = (channel.clone(), next.clone(), args.sends);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return lat;
                }
                let to = switchboard_channel::ExternalThread((5000 + i % 1000).to_string());
                let o = Outbound {
                    id: format!("bench-{i}"),
                    author: OutboundAuthor::Agent("Bench".into()),
                    text: "Your parcel left our warehouse today; you will get the tracking link by email. <Thanks> & have a nice day!".into(),
                    buttons: vec![],
                    in_reply_to: None,
                    format: TextFormat::Plain,
                    attachments: vec![],
                };
                let t = Instant::now();
                if channel.send(&to, &o).await.is_ok() {
                    lat.push(t.elapsed().as_micros() as u64);
                }
            }
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let elapsed = start.elapsed();
    let mut lat = super::Latencies(lat);
    let delivered = fake.sent().len() - sent_before;
    println!(
        "outbound: {:.0} messages/s ({} of {} delivered in {:.2} s), p50 {:.2} ms, p99 {:.2} ms",
        delivered as f64 / elapsed.as_secs_f64(),
        delivered,
        args.sends,
        elapsed.as_secs_f64(),
        lat.percentile(0.50),
        lat.percentile(0.99),
    );
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// The outbound bench receives nothing.
struct NoInbound;

#[async_trait::async_trait]
impl switchboard_channel::Inbound for NoInbound {
    async fn submit(
        &self,
        _: &ChannelId,
        _: switchboard_channel::InboundEvent,
    ) -> Result<switchboard_channel::Accepted, switchboard_channel::InboundError> {
        Err(switchboard_channel::InboundError::Rejected("bench".into()))
    }
}
