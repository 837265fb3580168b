//! The whole daemon with a Discord channel, against the fake Discord (REST + gateway) through
//! serenity: the bot answers a DM; a support-channel message opens a thread, escalates, and
//! the agent's reply goes to that thread; a button press reaches the engine; a burst of
//! replies through 429s arrives whole and in order; messages sent while the daemon was
//! stopped are read back after the restart.

mod support;

use serde_json::{Value, json};
use support::{Client, Daemon, eventually, write_config};
use switchboard_discord::fake::{FakeDiscord, Fault, Sent, visible_text};

const SUPPORT: u64 = 555;

async fn started() -> (FakeDiscord, tempfile::TempDir, Daemon, Client) {
    let fake = FakeDiscord::start(1_000).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dc.token"), "fake-discord-token").unwrap();
    let section = format!(
        r#"
[channels.dc]
type = "discord"
token_file = "{token}"
api_url = "{url}"
support_channels = ["{SUPPORT}"]
"#,
        token = dir.path().join("dc.token").display(),
        url = fake.url(),
    );
    write_config(dir.path(), "http://127.0.0.1:9/unused", &section);
    let daemon = Daemon::start(dir.path());
    fake.wait_for_sessions(1).await;
    let client = Client::new(&daemon);
    (fake, dir, daemon, client)
}

async fn sent_to(fake: &FakeDiscord, channel: u64, n: usize) -> Vec<Sent> {
    eventually(20, &format!("{n} messages in {channel}"), async || {
        let s: Vec<Sent> = fake
            .sent()
            .into_iter()
            .filter(|s| s.channel_id == channel)
            .collect();
        (s.len() >= n).then_some(s)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_thread_escalation_agent_reply_buttons_and_rate_limits() {
    let (fake, _dir, daemon, c) = started().await;

    // A direct message: the bot answers from the knowledge base.
    fake.dm(7001, 11, "Ann", "Where is my order?");
    let answer = sent_to(&fake, 7001, 1).await;
    assert!(
        visible_text(&answer[0].content).contains("Account → Orders"),
        "{answer:?}"
    );
    assert_eq!(answer[0].allowed_mentions, json!({"parse": []}));

    // A support-channel message: a thread opens, and the conversation lives there.
    fake.guild_message(SUPPORT, 12, "Grace", "I want a refund, this is a complaint");
    let thread = eventually(20, "the thread", async || {
        fake.threads().first().map(|t| t.0)
    })
    .await;
    let conv = c.conversation_on("dc", &thread.to_string()).await;
    let id = conv["id"].as_u64().unwrap();
    fake.guild_message(thread, 12, "Grace", "human please");
    let conv = eventually(20, "the escalation", async || {
        let (_, d) = c.get(&format!("/api/v1/conversations/{id}")).await;
        (d["conversation"]["status"] == "queued").then_some(d)
    })
    .await;
    assert!(conv["conversation"]["escalation"]["reason"].is_string());

    // The agent claims and replies: the reply goes to the thread, literally, without pings.
    c.post(&format!("/api/v1/conversations/{id}/claim"), json!({}))
        .await;
    let before = fake
        .sent()
        .iter()
        .filter(|s| s.channel_id == thread)
        .count();
    c.post(
        &format!("/api/v1/conversations/{id}/messages"),
        json!({"text": "Hi @everyone, *Grace*: refund on its way"}),
    )
    .await;
    let out = sent_to(&fake, thread, before + 1).await;
    let last = out.last().unwrap();
    assert_eq!(
        visible_text(&last.content),
        "Hi @everyone, *Grace*: refund on its way"
    );
    assert_eq!(last.allowed_mentions, json!({"parse": []}));

    // Buttons: the bot's clarification offers a person; pressing it reaches the engine.
    fake.dm(7002, 13, "Bo", "blue llamas dance");
    let clarify = sent_to(&fake, 7002, 1).await;
    let button = clarify[0].components[0]["components"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["custom_id"] == "human"))
        .cloned()
        .unwrap_or_else(|| panic!("a person button: {:?}", clarify[0].components));
    fake.click(7002, clarify[0].id, 13, "human");
    let bo = c.conversation_on("dc", "7002").await;
    let bo_id = bo["id"].as_u64().unwrap();
    eventually(20, "the press handed over", async || {
        let (_, d) = c.get(&format!("/api/v1/conversations/{bo_id}")).await;
        (d["conversation"]["status"] == "queued").then_some(())
    })
    .await;
    // Stored as the label Bo saw, with the payload the bot read.
    let press = c.customer_messages(bo_id).await.pop().unwrap();
    assert_eq!(press["text"], button["label"], "{press}");
    assert_eq!(press["payload"], "human", "{press}");
    assert_eq!(fake.callbacks().len(), 1, "acknowledged");

    // A burst of agent replies through rate limits: all arrive, once, in order.
    c.post(&format!("/api/v1/conversations/{bo_id}/claim"), json!({}))
        .await;
    let base = fake.sent().iter().filter(|s| s.channel_id == 7002).count();
    fake.fail_after(1, Fault::RateLimited(0.3));
    fake.fail_after(2, Fault::RateLimited(0.2));
    for i in 1..=6 {
        c.post(
            &format!("/api/v1/conversations/{bo_id}/messages"),
            json!({"text": format!("reply {i}")}),
        )
        .await;
    }
    let got = sent_to(&fake, 7002, base + 6).await;
    let replies: Vec<String> = got[base..]
        .iter()
        .map(|s| visible_text(&s.content))
        .collect();
    assert_eq!(
        replies,
        (1..=6).map(|i| format!("reply {i}")).collect::<Vec<_>>()
    );
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_the_daemon_was_stopped_are_read_back() {
    let (fake, dir, daemon, c) = started().await;
    fake.dm(8001, 21, "Kim", "human please");
    let conv = c.conversation_on("dc", "8001").await;
    let id = conv["id"].as_u64().unwrap();
    eventually(20, "stored", async || {
        (c.customer_texts(id).await.len() == 1).then_some(())
    })
    .await;
    daemon.stop();

    let edited = fake.dm(8001, 21, "Kim", "are you there?");
    let deleted = fake.dm(8001, 21, "Kim", "hello??");
    let sessions = fake.sessions();
    let daemon = Daemon::start(dir.path());
    fake.wait_for_sessions(sessions + 1).await;
    let c = Client::new(&daemon);
    let got = eventually(20, "read back", async || {
        let t = c.customer_texts(id).await;
        (t.len() >= 3).then_some(t)
    })
    .await;
    assert_eq!(got, ["human please", "are you there?", "hello??"]);
    let health: Value = c.get("/api/v1/channels").await.1;
    let dc = health
        .as_array()
        .and_then(|a| a.iter().find(|ch| ch["id"] == "dc"))
        .cloned()
        .unwrap_or_else(|| panic!("{health}"));
    assert_eq!(dc["health"]["ok"], true, "{dc}");
    assert_eq!(dc["health"]["state"], "connected", "{dc}");
    assert!(dc["health"]["last_event_ms"].is_i64(), "{dc}");

    // The customer edits one message and deletes another: both show in the conversation.
    fake.edit(8001, edited, "are you there? (edited)");
    fake.delete(8001, deleted);
    let detail = eventually(20, "the edit and the delete", async || {
        let (_, d) = c.get(&format!("/api/v1/conversations/{id}")).await;
        let types: Vec<&str> = d["events"]
            .as_array()?
            .iter()
            .filter_map(|e| e["type"].as_str())
            .collect();
        (types.contains(&"message_edited") && types.contains(&"message_deleted"))
            .then_some(d.clone())
    })
    .await;
    let messages = detail["messages"].as_array().unwrap();
    let by_text = |t: &str| {
        messages
            .iter()
            .find(|m| m["text"] == t)
            .cloned()
            .unwrap_or_else(|| panic!("no {t}: {messages:?}"))
    };
    assert!(by_text("are you there? (edited)")["edited_at_ms"].is_i64());
    assert!(
        by_text("hello??")["deleted_at_ms"].is_i64(),
        "kept, marked deleted"
    );
    daemon.stop();
}
