//! The Telegram channel through the whole daemon: the real binary, the real teloxide client,
//! and a fake Bot API on 127.0.0.1 that speaks the wire protocol and misbehaves on demand.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Client, Daemon, eventually, write_config};
use switchboard_telegram::fake::{self, FakeTelegram, Fault, Sent};

const TOKEN: &str = "123456:TEST-token_abc";
const WAIT: Duration = Duration::from_secs(20);

/// A daemon with a Telegram channel `tg` pointed at a fresh fake.
async fn started(extra: &str) -> (FakeTelegram, tempfile::TempDir, Daemon, Client) {
    let (fake, dir) = configured(extra).await;
    let daemon = Daemon::start(dir.path());
    let client = Client::new(&daemon);
    (fake, dir, daemon, client)
}

/// A fresh fake and a config with a Telegram channel `tg` pointed at it.
async fn configured(extra: &str) -> (FakeTelegram, tempfile::TempDir) {
    let fake = FakeTelegram::start(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let section = support::telegram_section(dir.path(), &fake.url(), TOKEN, extra);
    write_config(dir.path(), "http://127.0.0.1:9/unused", &section);
    (fake, dir)
}

/// Sent messages to `chat`, in order.
fn to_chat(sent: &[Sent], chat: i64) -> Vec<Sent> {
    sent.iter().filter(|s| s.chat_id == chat).cloned().collect()
}

async fn wait_chat(fake: &FakeTelegram, chat: i64, n: usize) -> Vec<Sent> {
    match fake.wait_sent(WAIT, |s| to_chat(s, chat).len() >= n).await {
        Ok(sent) => to_chat(&sent, chat),
        Err(sent) => panic!(
            "chat {chat}: wanted {n} messages, got {:#?}",
            to_chat(&sent, chat)
        ),
    }
}

async fn conversation(c: &Client, thread: &str) -> Value {
    c.conversation_on("tg", thread).await
}

async fn messages(c: &Client, id: u64) -> Vec<Value> {
    let (_, d) = c.get(&format!("/api/v1/conversations/{id}")).await;
    d["messages"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_bot_agent_groups_files_and_edits() {
    let (fake, _dir, daemon, c) = started("").await;

    // /start greets with the configured welcome, in Telegram's HTML mode.
    fake.private_message(1001, "Ann", 1, "/start");
    let sent = wait_chat(&fake, 1001, 1).await;
    assert!(
        sent[0].text.as_ref().unwrap().starts_with("Hello!"),
        "{sent:?}"
    );
    assert_eq!(sent[0].parse_mode.as_deref(), Some("HTML"));

    // A known question: the bot answers, threaded to the question, after "typing…".
    fake.private_message(1001, "Ann", 2, "Where is my order?");
    let sent = wait_chat(&fake, 1001, 2).await;
    let answer = sent[1].text.clone().unwrap();
    assert!(answer.contains("Orders"), "{answer}");
    assert_eq!(sent[1].reply_to, Some(2));
    assert!(
        fake.chat_actions().contains(&(1001, "typing".into())),
        "{:?}",
        fake.chat_actions()
    );

    // The customer asks for a person: handed over, with the reason recorded.
    fake.private_message(1001, "Ann", 3, "/human");
    let sent = wait_chat(&fake, 1001, 3).await;
    assert!(
        sent[2].text.as_ref().unwrap().contains("person"),
        "{sent:?}"
    );
    let conv = conversation(&c, "1001").await;
    assert_eq!(conv["status"], "queued", "{conv}");
    assert_eq!(conv["escalation"]["reason"], "asked_for_human");
    let id = conv["id"].as_u64().unwrap();

    // The agent replies; markup in agent text is shown, never interpreted.
    let (status, body) = c
        .post(
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "<b>Hi</b> Ann & welcome"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sent = wait_chat(&fake, 1001, 4).await;
    assert_eq!(
        sent[3].text.as_deref(),
        Some("&lt;b&gt;Hi&lt;/b&gt; Ann &amp; welcome")
    );
    assert_eq!(sent[3].reply_to, Some(3));

    // A long reply arrives in parts within Telegram's limit, nothing lost.
    let long = "All the details of your order follow. ".repeat(150);
    c.post(
        &format!("/api/v1/conversations/{id}/messages"),
        json!({"text": long}),
    )
    .await;
    let sent = wait_chat(&fake, 1001, 6).await;
    let parts: Vec<&str> = sent[4..]
        .iter()
        .map(|s| s.text.as_deref().unwrap())
        .collect();
    assert!(parts.iter().all(|p| p.encode_utf16().count() <= 4096));
    assert_eq!(parts.join(" ").matches("details").count(), 150);

    // A photo from the customer is fetched and kept; the agent can download it.
    let photo = b"\xFF\xD8\xFF\xE0 fake jpeg bytes".to_vec();
    let file_id = fake.add_file("photos/file_1.jpg", &photo);
    let mut m = fake::private_message(1001, "Ann", 4, "");
    m.as_object_mut().unwrap().remove("text");
    m["caption"] = json!("the box arrived broken");
    m["photo"] = json!([{"file_id": file_id, "file_unique_id": "p1", "width": 640, "height": 480, "file_size": photo.len()}]);
    fake.push_update("message", m);
    let stored = eventually(20, "photo stored", async || {
        messages(&c, id)
            .await
            .into_iter()
            .find(|m| m["text"] == "the box arrived broken")
    })
    .await;
    let blob = stored["attachments"][0]["blob"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = c
        .http
        .get(c.base.clone() + "/api/v1/attachments/" + &blob)
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), photo);

    // The agent sends a photo back.
    let r = c
        .http
        .post(c.base.clone() + "/api/v1/attachments?name=label.png")
        .bearer_auth(&c.token)
        .header("content-type", "image/png")
        .body(b"\x89PNG return label".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let file: Value = r.json().await.unwrap();
    let (status, body) = c
        .post(
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "Here is your return label.", "attachments": [file]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sent = wait_chat(&fake, 1001, 8).await;
    assert_eq!(sent[6].text.as_deref(), Some("Here is your return label."));
    assert_eq!(sent[7].method, "sendphoto");
    assert_eq!(
        sent[7].file.as_ref().unwrap(),
        &("label.png".to_string(), b"\x89PNG return label".to_vec())
    );

    // An edit changes the stored message and is logged.
    let mut edited = fake::private_message(1001, "Ann", 2, "Where is my order #4411?");
    edited["edit_date"] = json!(switchboard_channel::now_ms() / 1000);
    fake.push_update("edited_message", edited);
    eventually(20, "edit applied", async || {
        let texts = c.customer_texts(id).await;
        texts
            .contains(&"Where is my order #4411?".to_string())
            .then_some(())
    })
    .await;
    let (_, detail) = c.get(&format!("/api/v1/conversations/{id}")).await;
    assert!(
        detail["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "message_edited" && e["previous"] == "Where is my order?"),
        "{detail}"
    );

    // Groups: only messages addressed to the bot make a conversation.
    fake.push_update(
        "message",
        fake::group_message(
            -100500,
            7,
            "Li",
            10,
            "anyone know the shipping cost?",
            false,
        ),
    );
    fake.push_update(
        "message",
        fake::group_message(-100500, 7, "Li", 11, "How much is shipping?", true),
    );
    let sent = wait_chat(&fake, -100500, 1).await;
    assert!(
        sent[0]
            .text
            .as_ref()
            .unwrap()
            .to_lowercase()
            .contains("shipping"),
        "{sent:?}"
    );
    // Another member asks in the same group: the message names who wrote it.
    fake.push_update(
        "message",
        fake::group_message(-100500, 8, "Wu", 12, "And is delivery free?", true),
    );
    let group = conversation(&c, "-100500").await;
    let group_id = group["id"].as_u64().unwrap();
    let messages = eventually(20, "both group messages", async || {
        let m = c.customer_messages(group_id).await;
        (m.len() == 2).then_some(m)
    })
    .await;
    assert_eq!(messages[0]["text"], "How much is shipping?");
    assert!(messages[0].get("member").is_none(), "{messages:?}");
    assert_eq!(messages[1]["member"], json!({"user": "8", "name": "Wu"}));

    // A pressed button is stored as the label Bo saw; the bot reads its payload.
    let pressed = json!({
        "id": "cbq-1", "chat_instance": "ci-1", "data": "kb:returns-en",
        "from": {"id": 2002, "is_bot": false, "first_name": "Bo"},
        "message": {"message_id": 77, "date": 1_700_000_000,
            "chat": {"id": 2002, "type": "private", "first_name": "Bo"},
            "from": {"id": fake::BOT_ID, "is_bot": true, "first_name": "Switchboard Test"},
            "text": "Did you mean one of these?",
            "reply_markup": {"inline_keyboard": [
                [{"text": "How do I return an item?", "callback_data": "kb:returns-en"}],
                [{"text": "Talk to a person", "callback_data": "human"}]]}}
    });
    fake.push_update("callback_query", pressed);
    let sent = wait_chat(&fake, 2002, 1).await;
    assert!(
        sent[0].text.as_ref().unwrap().contains("30 days"),
        "{sent:?}"
    );
    assert_eq!(fake.callback_answers(), ["cbq-1"]);
    let bo = conversation(&c, "2002").await;
    let pressed = &c.customer_messages(bo["id"].as_u64().unwrap()).await[0];
    assert_eq!(pressed["text"], "How do I return an item?", "{pressed}");
    assert_eq!(pressed["payload"], "kb:returns-en", "{pressed}");

    // A voice note alone: the bot cannot read it and hands over at once.
    let voice = fake.add_file("voice/file_2.oga", b"OggS voice");
    let mut m = fake::private_message(6006, "Vi", 1, "");
    m.as_object_mut().unwrap().remove("text");
    m["voice"] = json!({"file_id": voice, "file_unique_id": "v1", "duration": 3, "mime_type": "audio/ogg", "file_size": 10});
    fake.push_update("message", m);
    let sent = wait_chat(&fake, 6006, 1).await;
    assert!(
        sent[0].text.as_ref().unwrap().contains("person"),
        "{sent:?}"
    );
    let conv = conversation(&c, "6006").await;
    assert_eq!(conv["escalation"]["reason"], "files_only", "{conv}");

    // Health shows the connection.
    let (_, channels) = c.get("/api/v1/channels").await;
    let tg = channels
        .as_array()
        .unwrap()
        .iter()
        .find(|ch| ch["id"] == "tg")
        .unwrap();
    assert_eq!(tg["health"]["ok"], true, "{tg}");
    assert!(tg["health"]["sent"].as_u64().unwrap() >= 9, "{tg}");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_control_and_faults_lose_nothing_and_keep_order() {
    let (fake, _dir, daemon, c) = started("").await;
    // Polling survives a cut connection, a slow answer and a duplicate batch.
    fake.fault("getUpdates", Fault::Reset);
    fake.fault("getUpdates", Fault::Slow(Duration::from_millis(1500)));
    fake.fault("getUpdates", Fault::Duplicate);
    fake.private_message(3003, "Cy", 1, "I need a human please");
    let sent = wait_chat(&fake, 3003, 1).await;
    assert!(
        sent[0].text.as_ref().unwrap().contains("person"),
        "{sent:?}"
    );
    let conv = conversation(&c, "3003").await;
    let id = conv["id"].as_u64().unwrap();
    assert_eq!(
        c.customer_texts(id).await.len(),
        1,
        "duplicate update stored once"
    );

    // Replies meet flood control, a cut connection and a server error: each is delivered
    // once, in order.
    fake.fault("sendMessage", Fault::RetryAfter(1));
    fake.fault("sendMessage", Fault::Reset);
    fake.fault("sendMessage", Fault::RetryAfter(1));
    // (teloxide itself pauses 10 s after an HTTP 5xx before it reports the error.)
    fake.fault("sendMessage", Fault::ServerError);
    let texts: Vec<String> = (1..=5).map(|i| format!("step {i}")).collect();
    for t in &texts {
        let (status, _) = c
            .post(
                &format!("/api/v1/conversations/{id}/messages"),
                json!({"text": t}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let sent = match fake
        .wait_sent(Duration::from_secs(40), |s| to_chat(s, 3003).len() >= 6)
        .await
    {
        Ok(s) => to_chat(&s, 3003),
        Err(s) => panic!("{:#?}", to_chat(&s, 3003)),
    };
    let got: Vec<String> = sent[1..].iter().map(|s| s.text.clone().unwrap()).collect();
    // A cut connection leaves the outcome unknown; Telegram has no idempotency key, so the
    // one reply in flight then may show twice, never out of order and never lost.
    let mut deduped = got.clone();
    deduped.dedup();
    assert_eq!(deduped, texts, "{got:?}");
    assert!(got.len() <= 6, "{got:?}");

    // The customer blocks the bot: the delivery fails for good and the conversation shows it.
    fake.block(3003);
    c.post(
        &format!("/api/v1/conversations/{id}/messages"),
        json!({"text": "are you still there?"}),
    )
    .await;
    let conv = eventually(20, "unreachable shown", async || {
        let (_, d) = c.get(&format!("/api/v1/conversations/{id}")).await;
        d["conversation"]["unreachable"].is_string().then_some(d)
    })
    .await;
    assert!(
        conv["conversation"]["unreachable"]
            .as_str()
            .unwrap()
            .contains("blocked"),
        "{conv}"
    );
    let (_, failed) = c.get("/api/v1/deliveries/failed").await;
    assert!(
        failed.to_string().contains("are you still there?"),
        "{failed}"
    );
    // Writing again makes them reachable.
    fake.private_message(3003, "Cy", 2, "sorry, unblocked you");
    eventually(20, "reachable again", async || {
        let (_, d) = c.get(&format!("/api/v1/conversations/{id}")).await;
        d["conversation"]["unreachable"].is_null().then_some(())
    })
    .await;
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_stream_neither_skips_nor_duplicates() {
    let (fake, dir, daemon, c) = started("").await;
    // Three customers write 20 messages each while the daemon is killed and restarted.
    let users = [4001i64, 4002, 4003];
    let total = 20;
    for i in 1..=total / 2 {
        for u in users {
            fake.private_message(u, "Dee", i, &format!("message {i} from {u}"));
        }
    }
    eventually(20, "some stored", async || {
        let (_, page) = c.get("/api/v1/conversations?channel=tg&limit=10").await;
        (page["items"].as_array()?.len() >= 2).then_some(())
    })
    .await;
    daemon.kill();
    for i in total / 2 + 1..=total {
        for u in users {
            fake.private_message(u, "Dee", i, &format!("message {i} from {u}"));
        }
    }
    fake.fault("getUpdates", Fault::Duplicate);
    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);
    for u in users {
        let conv = conversation(&c, &u.to_string()).await;
        let id = conv["id"].as_u64().unwrap();
        let texts = eventually(30, "all stored", async || {
            let t = c.customer_texts(id).await;
            (t.len() >= total as usize).then_some(t)
        })
        .await;
        let expected: Vec<String> = (1..=total)
            .map(|i| format!("message {i} from {u}"))
            .collect();
        assert_eq!(texts, expected, "in order, once each");
    }
    eventually(20, "offset confirmed", async || {
        (fake.pending() == 0).then_some(())
    })
    .await;
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_mode_checks_the_secret_and_stores_before_answering() {
    let (fake, _dir, daemon, c) = started(
        r#"mode = "webhook"
webhook_url = "https://support.example.com/hooks/tg/telegram"
webhook_secret = "s3cret-Token_1234""#,
    )
    .await;
    let hook = eventually(20, "setWebhook called", async || fake.webhook()).await;
    assert_eq!(
        hook,
        (
            "https://support.example.com/hooks/tg/telegram".into(),
            Some("s3cret-Token_1234".into())
        )
    );
    let url = c.base.clone() + "/hooks/tg/telegram";
    let update = json!({"update_id": 1, "message": fake::private_message(5005, "Eve", 1, "How much is shipping?")});
    let post = |secret: Option<&'static str>, body: String| {
        let mut r = c
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = secret {
            r = r.header(switchboard_telegram::SECRET_HEADER, s);
        }
        r.send()
    };
    let r = post(Some("wrong"), update.to_string()).await.unwrap();
    assert_eq!(r.status(), 401);
    let r = post(None, update.to_string()).await.unwrap();
    assert_eq!(r.status(), 401);
    let r = post(Some("s3cret-Token_1234"), "{not json".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");
    assert!(fake.sent().is_empty(), "bad requests change nothing");

    // Answered 200 only when stored: the conversation is there as soon as the call returns.
    let r = post(Some("s3cret-Token_1234"), update.to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, page) = c.get("/api/v1/conversations?channel=tg").await;
    assert_eq!(page["items"][0]["thread"], "5005", "{page}");
    // Telegram retrying the same update stores it once.
    let r = post(Some("s3cret-Token_1234"), update.to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent = wait_chat(&fake, 5005, 1).await;
    assert!(
        sent[0]
            .text
            .as_ref()
            .unwrap()
            .to_lowercase()
            .contains("shipping")
    );
    let id = page["items"][0]["id"].as_u64().unwrap();
    assert_eq!(c.customer_texts(id).await.len(), 1);
    assert!(!fake.calls().contains(&"getupdates".to_string()));
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_api_outage_is_reported_and_nothing_is_lost_when_it_ends() {
    // The shipped policy retries for about 18 minutes; the test's, 2 s unless raised.
    let (fake, dir) = configured("").await;
    support::edit_config(
        &dir.path().join("switchboard.toml"),
        &[("max_attempts = 8", "max_attempts = 60")],
    );
    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);
    fake.private_message(5001, "Eve", 1, "/human");
    wait_chat(&fake, 5001, 1).await;
    let id = conversation(&c, "5001").await["id"].as_u64().unwrap();
    let ready = async || {
        // The channels' details need an agent.
        let r = c
            .http
            .get(c.base.clone() + "/readyz")
            .bearer_auth(&c.token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(ready().await.1["status"], "ready");

    // The Bot API goes away. The customer writes meanwhile and the agent answers.
    fake.stop();
    fake.private_message(5001, "Eve", 2, "still there?");
    fake.private_message(5001, "Eve", 3, "hello?");
    for text in ["during the outage 1", "during the outage 2"] {
        assert_eq!(c.reply(id, text).await.0, StatusCode::CREATED);
    }
    let (status, body) = eventually(20, "the outage reported", async || {
        let (status, body) = ready().await;
        (body["status"] == "degraded").then_some((status, body))
    })
    .await;
    assert_eq!(status, 200, "the rest still works: {body}");
    assert_eq!(body["channels"]["tg"]["up"], false, "{body}");
    let (_, metrics) = c.get_text("/metrics").await;
    assert!(
        metrics.contains("switchboard_channel_up{channel=\"tg\"} 0"),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // It comes back: what waited on both sides goes through, once, in order.
    fake.start_again();
    let texts = eventually(30, "the customer's messages", async || {
        let t = c.customer_texts(id).await;
        (t.len() >= 3).then_some(t)
    })
    .await;
    assert_eq!(texts, ["/human", "still there?", "hello?"]);
    let sent = wait_chat(&fake, 5001, 3).await;
    let replies: Vec<String> = sent
        .iter()
        .filter_map(|s| s.text.clone())
        .filter(|t| t.starts_with("during"))
        .collect();
    assert_eq!(replies, ["during the outage 1", "during the outage 2"]);
    eventually(20, "ready again", async || {
        (ready().await.1["status"] == "ready").then_some(())
    })
    .await;
    daemon.stop();
}
