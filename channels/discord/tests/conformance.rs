//! The channel conformance kit against the fake Discord, through serenity's gateway client and
//! our REST client; then what only Discord has: threads in support channels, buttons as
//! components with interactions acknowledged, a gateway that reconnects and resumes, and
//! messages sent while the bot was away read back.

use std::sync::Arc;
use std::time::Duration;

use switchboard_channel::conformance::{
    self, Failure, Harness, MemoryBlobs, MemoryState, RecordingInbound,
};
use switchboard_channel::{
    Button, Channel, ChannelContext, ChannelId, ChannelState, ExternalThread, InboundEvent,
    InboundMessage, Outbound, OutboundAuthor, TextFormat,
};
use switchboard_discord::fake::{FakeDiscord, Fault, visible_text};
use switchboard_discord::{DiscordChannel, DiscordConfig};
use tokio_util::sync::CancellationToken;

const SUPPORT: u64 = 555;

fn config(fake: &FakeDiscord) -> DiscordConfig {
    toml::from_str(&format!(
        "token = \"fake-token\"\napi_url = \"{}\"\nsupport_channels = [\"{SUPPORT}\"]",
        fake.url()
    ))
    .unwrap()
}

/// The fake, and the message ids the kit's `(user, message)` numbers got.
struct Discord(FakeDiscord, std::sync::Mutex<Vec<((u32, u32), u64)>>);

/// The DM channel of kit user `user`.
fn dm_channel(user: u32) -> u64 {
    900_000 + u64::from(user)
}

#[async_trait::async_trait]
impl Harness for Discord {
    async fn connector(&self, ctx: ChannelContext) -> Arc<dyn Channel> {
        Arc::new(DiscordChannel::build(config(&self.0), ctx).unwrap())
    }

    async fn customer_says(&self, user: u32, message: u32, text: &str) -> ExternalThread {
        // The same numbers again: the gateway delivers the same message again.
        self.0.wait_for_sessions(1).await;
        let key = (user, message);
        let mut seen = self.1.lock().unwrap();
        match seen.iter().find(|(k, _)| *k == key) {
            Some((_, id)) => self.0.redeliver(dm_channel(user), *id),
            None => {
                let id = self.0.dm(dm_channel(user), u64::from(user), "Kit", text);
                seen.push((key, id));
            }
        }
        ExternalThread(dm_channel(user).to_string())
    }

    async fn received(&self, thread: &ExternalThread) -> Vec<String> {
        self.0
            .sent()
            .into_iter()
            .filter(|s| s.channel_id.to_string() == thread.0)
            .map(|s| visible_text(&s.content))
            .collect()
    }

    async fn fail_next_send(&self, failure: Failure) {
        self.0.fail_next(match failure {
            Failure::Temporary => Fault::ServerError,
            Failure::RateLimited(s) => Fault::RateLimited(f64::from(s)),
            Failure::Blocked => Fault::CannotMessageUser,
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_meets_the_channel_contract() {
    let harness = Discord(FakeDiscord::start(45_000).await, Default::default());
    conformance::run(&harness).await;
}

/// A connector on the fake with an in-memory engine side, running.
struct Running {
    fake: FakeDiscord,
    inbound: Arc<RecordingInbound>,
    state: Arc<MemoryState>,
    channel: Arc<DiscordChannel>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn running(
    fake: FakeDiscord,
    state: Arc<MemoryState>,
    inbound: Arc<RecordingInbound>,
) -> Running {
    let ctx = ChannelContext {
        id: ChannelId::new("discord"),
        inbound: inbound.clone(),
        state: state.clone(),
        blobs: Arc::new(MemoryBlobs::default()),
    };
    let channel = Arc::new(DiscordChannel::build(config(&fake), ctx).unwrap());
    let stop = CancellationToken::new();
    // Counted before the client starts: on a busy machine it may identify before this task
    // runs again, and a count taken after that would wait for a session that never comes.
    let sessions = fake.sessions();
    let task = {
        let (c, s) = (channel.clone(), stop.clone());
        tokio::spawn(async move {
            let _ = c.run(s).await;
        })
    };
    fake.wait_for_sessions(sessions + 1).await;
    Running {
        fake,
        inbound,
        state,
        channel,
        stop,
        task,
    }
}

impl Running {
    async fn stop(self) -> (FakeDiscord, Arc<MemoryState>, Arc<RecordingInbound>) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        (self.fake, self.state, self.inbound)
    }

    fn messages(&self) -> Vec<InboundMessage> {
        messages(&self.inbound)
    }
}

fn messages(inbound: &RecordingInbound) -> Vec<InboundMessage> {
    inbound.messages()
}

/// Polls `check` until it gives a value; a deadline generous enough for a busy machine.
async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if let Some(v) = check() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after 60 s waiting for {what}");
}

fn reply(id: &str, text: &str, buttons: Vec<Button>) -> Outbound {
    Outbound {
        id: id.into(),
        author: OutboundAuthor::Bot,
        text: text.into(),
        buttons,
        in_reply_to: None,
        format: TextFormat::Markdown,
        attachments: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_support_channel_message_opens_a_thread_that_carries_the_conversation() {
    let r = running(
        FakeDiscord::start(45_000).await,
        Default::default(),
        Default::default(),
    )
    .await;
    let first = r
        .fake
        .guild_message(SUPPORT, 7, "Grace", "my order is late");
    let m = until("the first message", || r.messages().into_iter().next()).await;
    let threads = r.fake.threads();
    assert_eq!(threads.len(), 1, "one thread opened");
    let (thread, parent, name) = threads[0].clone();
    assert_eq!((parent, name.as_str()), (SUPPORT, "Support: Grace"));
    assert_eq!(m.thread.0, thread.to_string());
    assert_eq!(m.message_id.0, first.to_string());
    assert_eq!(m.sender.name.as_deref(), Some("Grace"));
    // GUILDS, GUILD_MESSAGES, DIRECT_MESSAGES and MESSAGE_CONTENT (privileged: without it guild
    // messages arrive empty).
    let wanted = 1 | (1 << 9) | (1 << 12) | (1 << 15);
    assert_eq!(
        r.fake.intents() & wanted,
        wanted,
        "intents {:b}",
        r.fake.intents()
    );

    // The customer goes on in the thread, and in the channel again: same conversation.
    r.fake.guild_message(thread, 7, "Grace", "hello?");
    r.fake.guild_message(SUPPORT, 7, "Grace", "anyone?");
    let all = until("three messages", || {
        let m = r.messages();
        (m.len() >= 3).then_some(m)
    })
    .await;
    assert!(all.iter().all(|m| m.thread.0 == thread.to_string()));
    assert_eq!(r.fake.threads().len(), 1, "no second thread");

    // Another customer gets a thread of their own; bots and other channels are ignored.
    r.fake.guild_message(SUPPORT, 8, "Bob", "hi");
    r.fake.bot_message(SUPPORT, 99, "OtherBot", "beep");
    r.fake.guild_message(777, 7, "Grace", "elsewhere");
    until("Bob's thread", || (r.messages().len() == 4).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(r.fake.threads().len(), 2, "Bob's thread; none for the bot");
    assert_eq!(
        r.messages().len(),
        4,
        "nothing from the bot or the other channel"
    );

    // The reply goes to the thread, mentions neutralised.
    let thread_id = ExternalThread(thread.to_string());
    r.channel
        .send(&thread_id, &reply("o-1", "Thanks @everyone, on it", vec![]))
        .await
        .unwrap();
    let sent = r.fake.sent();
    let out = sent
        .iter()
        .find(|s| s.channel_id == thread)
        .expect("sent in the thread");
    assert_eq!(out.allowed_mentions, serde_json::json!({"parse": []}));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buttons_are_components_and_a_press_is_acknowledged_and_stored() {
    let r = running(
        FakeDiscord::start(45_000).await,
        Default::default(),
        Default::default(),
    )
    .await;
    r.fake.dm(4242, 5, "Ann", "help");
    until("the DM", || r.messages().into_iter().next()).await;
    let long = format!("kb:{}", "entry-".repeat(30));
    let buttons = vec![
        Button {
            label: "Talk to a person".into(),
            payload: "human".into(),
        },
        Button {
            label: "Returns".into(),
            payload: long.clone(),
        },
    ];
    let to = ExternalThread("4242".into());
    r.channel
        .send(&to, &reply("o-b", "Did you mean?", buttons))
        .await
        .unwrap();
    let sent = r.fake.sent();
    let id = sent[0].id;
    let row = &sent[0].components[0]["components"];
    assert_eq!(row[0]["custom_id"], "human");
    let hashed = row[1]["custom_id"].as_str().unwrap().to_owned();
    assert!(hashed.starts_with("h:") && hashed.len() <= 100);

    let clicked = std::time::Instant::now();
    let click = r.fake.click(4242, id, 5, &hashed);
    until("the acknowledgement", || {
        (!r.fake.callbacks().is_empty()).then_some(())
    })
    .await;
    assert!(
        clicked.elapsed() < Duration::from_secs(1),
        "acknowledged well inside 3 s"
    );
    let pressed = until("the press", || {
        r.messages()
            .into_iter()
            .find(|m| m.message_id.0 == format!("i{click}"))
    })
    .await;
    // Stored as the label on the button, the (long, hashed) payload restored for the bot.
    assert_eq!(pressed.text, "Returns");
    assert_eq!(pressed.payload.as_deref(), Some(long.as_str()));
    assert_eq!(
        r.fake.callbacks(),
        [(click.to_string(), 6)],
        "acknowledged once, type 6"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_reply_is_split_and_a_rate_limit_carries_discords_wait() {
    let r = running(
        FakeDiscord::start(45_000).await,
        Default::default(),
        Default::default(),
    )
    .await;
    let to = ExternalThread("4243".into());
    let text = "Every word must arrive. ".repeat(250);
    let mut o = reply("o-long", &text, vec![]);
    o.format = TextFormat::Plain;
    // The second part fails: the first is not sent again on the retry.
    r.fake.fail_after(1, Fault::ServerError);
    assert!(matches!(
        r.channel.send(&to, &o).await,
        Err(switchboard_channel::ChannelError::Retryable { .. })
    ));
    r.channel.send(&to, &o).await.unwrap();
    let parts: Vec<String> = r
        .fake
        .sent()
        .iter()
        .map(|s| visible_text(&s.content))
        .collect();
    assert!(parts.len() >= 3, "{} parts", parts.len());
    assert_eq!(parts.join(" ").matches("arrive").count(), 250);
    // Sending the same reply again changes nothing (recorded parts, nonces).
    r.channel.send(&to, &o).await.unwrap();
    assert_eq!(r.fake.sent().len(), parts.len());
    r.fake.fail_next(Fault::RateLimited(2.5));
    match r.channel.send(&to, &reply("o-rl", "hi", vec![])).await {
        Err(switchboard_channel::ChannelError::Retryable { after: Some(d), .. }) => {
            assert_eq!(d, Duration::from_millis(2500))
        }
        other => panic!("{other:?}"),
    }
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_resume_and_what_was_sent_while_away_is_read_back() {
    let fake = FakeDiscord::start(500).await;
    let r = running(fake, Default::default(), Default::default()).await;
    r.fake.dm(5000, 9, "Kim", "one");
    until("one", || (r.messages().len() == 1).then_some(())).await;

    // RECONNECT, a dropped socket, a resumable INVALID_SESSION: nothing lost or doubled.
    r.fake.reconnect();
    r.fake.dm(5000, 9, "Kim", "two");
    r.fake.drop_connections();
    r.fake.dm(5000, 9, "Kim", "three");
    r.fake.invalidate_session(false);
    r.fake.dm(5000, 9, "Kim", "four");
    let texts = until("four messages", || {
        let m = r.messages();
        (m.len() >= 4).then_some(m)
    })
    .await;
    let texts: Vec<String> = texts.into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["one", "two", "three", "four"]);
    assert!(
        r.fake.ops().contains(&"resume".to_owned()),
        "{:?}",
        r.fake.ops()
    );

    // Stopped; the customer writes meanwhile; started again: read back over REST.
    let (fake, state, inbound) = r.stop().await;
    fake.set_gateway_down(true);
    fake.dm(5000, 9, "Kim", "five");
    fake.dm(5000, 9, "Kim", "six");
    fake.set_gateway_down(false);
    let r = running(fake, state, inbound).await;
    let texts = until("six messages", || {
        let m = r.messages();
        (m.len() >= 6).then_some(m)
    })
    .await;
    let texts: Vec<String> = texts.into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["one", "two", "three", "four", "five", "six"]);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_travel_both_ways_and_edits_arrive() {
    use switchboard_channel::{Attachment, Blobs};
    let blobs = Arc::new(MemoryBlobs::default());
    let fake = FakeDiscord::start(45_000).await;
    let inbound = Arc::new(RecordingInbound::default());
    let ctx = ChannelContext {
        id: ChannelId::new("discord"),
        inbound: inbound.clone(),
        state: Arc::new(MemoryState::default()),
        blobs: blobs.clone(),
    };
    let mut cfg = config(&fake);
    cfg.max_file_bytes = 1_000;
    let channel = Arc::new(DiscordChannel::build(cfg, ctx).unwrap());
    let stop = CancellationToken::new();
    let task = {
        let (c, s) = (channel.clone(), stop.clone());
        tokio::spawn(async move {
            let _ = c.run(s).await;
        })
    };
    fake.wait_for_sessions(1).await;

    // In: a small file is kept, a large one listed but not downloaded.
    let small = fake.dm_with_file(
        6000,
        3,
        "receipt attached",
        ("receipt.pdf", "application/pdf", b"%PDF-1.4 small"),
    );
    fake.dm_with_file(
        6000,
        3,
        "and a video",
        ("clip.mp4", "video/mp4", &[0u8; 5_000]),
    );
    let got = until("two messages with files", || {
        let m = messages(&inbound);
        (m.len() >= 2).then_some(m)
    })
    .await;
    let receipt = &got[0].attachments[0];
    assert_eq!((receipt.name.as_str(), receipt.size), ("receipt.pdf", 14));
    let kept = blobs
        .get(receipt.blob.as_ref().expect("kept"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept, b"%PDF-1.4 small");
    let clip = &got[1].attachments[0];
    assert!(clip.blob.is_none() && clip.not_kept.as_deref().unwrap_or("").contains("larger"));

    // The customer edits the first message.
    fake.edit(6000, small, "receipt attached (the right one)");
    let edit = until("the edit", || {
        inbound.events().into_iter().find_map(|e| match e {
            InboundEvent::Edit(e) => Some(e),
            _ => None,
        })
    })
    .await;
    assert_eq!(edit.message_id.0, small.to_string());
    assert_eq!(edit.text, "receipt attached (the right one)");
    fake.delete(6000, small);
    until("the delete", || {
        inbound.events().into_iter().find(|e| {
            matches!(e, InboundEvent::Delete { message_id, .. } if message_id.0 == small.to_string())
        })
    })
    .await;

    // Out: text, then the file in the same reply.
    let blob = blobs.put(b"label bytes").await.unwrap();
    let mut file = Attachment::new("label.png", "image/png", 11);
    file.blob = Some(blob);
    let mut o = reply("o-file", "Your return label", vec![]);
    o.attachments = vec![file];
    channel
        .send(&ExternalThread("6000".into()), &o)
        .await
        .unwrap();
    let sent = fake.sent();
    assert_eq!(visible_text(&sent[0].content), "Your return label");
    assert_eq!(sent[1].files, ["label.png"]);
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_lost_response_posts_once_even_after_discord_forgot_the_nonce() {
    let r = running(
        FakeDiscord::start(45_000).await,
        Default::default(),
        Default::default(),
    )
    .await;
    r.fake.dm(4343, 5, "Ann", "help");
    until("the DM", || r.messages().into_iter().next()).await;
    // Discord remembers nonces only for a few minutes; the outbox may retry later than that.
    r.fake.set_nonce_window(Duration::ZERO);
    r.fake.fail_next(Fault::LostResponse);
    let to = ExternalThread("4343".into());
    let answer = reply("o-lost", "Your refund is on its way.", vec![]);
    assert!(
        r.channel.send(&to, &answer).await.is_err(),
        "the response was lost"
    );
    // The message came back over the gateway with our nonce: the retry finds it there.
    let mut ledger = Vec::new();
    for _ in 0..3000 {
        ledger = r.state.scan(b"nonce/", None, 10).await.unwrap();
        if !ledger.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ledger.len(), 1);
    let id = r.channel.send(&to, &answer).await.unwrap();
    let sent = r.fake.sent();
    assert_eq!(sent.len(), 1, "posted once: {sent:?}");
    assert_eq!(id.0, sent[0].id.to_string());
    r.stop().await;
}
