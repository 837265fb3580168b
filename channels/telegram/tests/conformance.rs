//! The channel conformance kit against the fake Bot API, through teloxide.

use std::sync::Arc;

use switchboard_channel::conformance::{self, Failure, Harness};
use switchboard_channel::{Channel, ChannelContext, ExternalThread};
use switchboard_telegram::fake::{FakeTelegram, Fault, visible_text};
use switchboard_telegram::{TelegramChannel, TelegramConfig};

const TOKEN: &str = "777:conformance";

struct Telegram(FakeTelegram);

#[async_trait::async_trait]
impl Harness for Telegram {
    async fn connector(&self, ctx: ChannelContext) -> Arc<dyn Channel> {
        let config: TelegramConfig = toml::from_str(&format!(
            "token = \"{TOKEN}\"\napi_url = \"{}\"\npoll_timeout_secs = 1\nprivate_interval_ms = 0",
            self.0.url()
        ))
        .unwrap();
        Arc::new(TelegramChannel::build(config, ctx).unwrap())
    }

    async fn customer_says(&self, user: u32, message: u32, text: &str) -> ExternalThread {
        self.0
            .private_message(user.into(), "Kit", message.into(), text);
        ExternalThread(user.to_string())
    }

    async fn received(&self, thread: &ExternalThread) -> Vec<String> {
        self.0
            .sent()
            .into_iter()
            .filter(|s| s.chat_id.to_string() == thread.0)
            .filter_map(|s| s.text.map(|t| visible_text(&t)))
            .collect()
    }

    async fn fail_next_send(&self, failure: Failure) {
        let fault = match failure {
            Failure::Temporary => Fault::Reset,
            Failure::RateLimited(s) => Fault::RetryAfter(s),
            Failure::Blocked => Fault::Blocked,
        };
        self.0.fault("sendMessage", fault);
    }
}

#[tokio::test]
async fn telegram_meets_the_channel_contract() {
    let harness = Telegram(FakeTelegram::start(TOKEN).await);
    conformance::run(&harness).await;
}

/// Buttons go out as an inline keyboard; a press comes back as the button's payload, also
/// when the payload is longer than the 64 bytes `callback_data` can hold.
#[tokio::test]
async fn buttons_round_trip_through_callback_queries() {
    use serde_json::json;
    use switchboard_channel::conformance::{MemoryBlobs, MemoryState, RecordingInbound};
    use switchboard_channel::{Button, ChannelId, InboundEvent, Outbound, OutboundAuthor};

    let fake = FakeTelegram::start(TOKEN).await;
    let inbound = Arc::new(RecordingInbound::default());
    let ctx = ChannelContext {
        id: ChannelId::new("tg"),
        inbound: inbound.clone(),
        state: Arc::new(MemoryState::default()),
        blobs: Arc::new(MemoryBlobs::default()),
    };
    let harness = Telegram(fake);
    let channel = harness.connector(ctx).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let run = {
        let (channel, stop) = (channel.clone(), stop.clone());
        tokio::spawn(async move { channel.run(stop).await })
    };
    let long = format!("kb:{}", "a-very-long-entry-id-".repeat(5));
    let outbound = Outbound {
        id: "b-1".into(),
        author: OutboundAuthor::Bot,
        text: "Did you mean one of these?".into(),
        buttons: vec![
            Button {
                label: "Returns".into(),
                payload: "kb:returns-en".into(),
            },
            Button {
                label: "Long one".into(),
                payload: long.clone(),
            },
        ],
        in_reply_to: None,
        format: Default::default(),
        attachments: vec![],
    };
    channel
        .send(&ExternalThread("8008".into()), &outbound)
        .await
        .unwrap();
    let sent = harness.0.sent();
    assert_eq!(
        sent[0].buttons[0],
        ("Returns".into(), "kb:returns-en".into())
    );
    let data = sent[0].buttons[1].1.clone();
    assert!(data.len() <= 64 && data.starts_with("h:"), "{data}");

    for (i, data) in ["kb:returns-en".to_string(), data].into_iter().enumerate() {
        harness.0.push_update(
            "callback_query",
            json!({"id": format!("q{i}"), "chat_instance": "c", "data": data,
                "from": {"id": 8008, "is_bot": false, "first_name": "Kit"},
                "message": {"message_id": sent[0].message_id, "date": 1_700_000_000,
                    "chat": {"id": 8008, "type": "private", "first_name": "Kit"},
                    "from": {"id": 4242, "is_bot": true, "first_name": "Bot"},
                    "text": "Did you mean one of these?"}}),
        );
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while inbound.events().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "presses not stored");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let texts: Vec<String> = inbound
        .events()
        .into_iter()
        .map(|e| match e {
            InboundEvent::Message(m) => m.text,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(texts, ["kb:returns-en".to_string(), long]);
    assert_eq!(harness.0.callback_answers(), ["q0", "q1"]);
    stop.cancel();
    let _ = run.await;
}
