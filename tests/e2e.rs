//! End-to-end tests of the whole daemon: the real binary on 127.0.0.1, a signed web hook in,
//! signed callbacks out, the agent API in between, restarts along the way.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Client, Daemon, Receiver, eventually, started};

/// A running daemon with one conversation the customer `user` escalated by asking for a person.
const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn with_escalated(
    user: &str,
    text: &str,
) -> (Receiver, tempfile::TempDir, Daemon, Client, u64) {
    let (receiver, dir, daemon, c) = started().await;
    c.hook(user, &format!("{user}-1"), text).await;
    receiver.wait_for(user, 1).await;
    let conv = c.conversation_of(user).await;
    assert_eq!(conv["escalation"]["reason"], "asked_for_human", "{conv}");
    let id = conv["id"].as_u64().unwrap();
    (receiver, dir, daemon, c, id)
}

/// Waits until message `seq` of conversation `id` has the delivery state `state`; returns it.
async fn delivery_reaches(c: &Client, id: u64, seq: u64, state: &str) -> Value {
    eventually(20, &format!("delivery {state}"), async || {
        let (_, d) = c.get(&format!("/api/v1/conversations/{id}")).await;
        let m = d["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["seq"].as_u64() == Some(seq))
            .cloned()?;
        (m["delivery"]["state"] == state).then_some(m)
    })
    .await
}

async fn count(client: &Client, status: &str) -> u64 {
    let (_, page) = client.get("/api/v1/conversations?limit=1").await;
    page["counts"][status].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_to_bot_to_agent_and_back_across_restarts() {
    let (receiver, dir, daemon, c) = started().await;

    // The bot answers a known question.
    let (status, body) = c.hook("alice", "a1", "Where is my order?").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::ACCEPTED, Some("accepted"))
    );
    let replies = receiver.wait_for("alice", 1).await;
    assert!(
        replies[0].text.contains("Account → Orders"),
        "{:?}",
        replies[0]
    );
    assert_eq!(replies[0].author["kind"], "bot");

    // Two questions it cannot answer: it asks to rephrase, then hands over.
    c.hook("alice", "a2", "blue llamas dance").await;
    let replies = receiver.wait_for("alice", 2).await;
    assert!(
        replies[1].text.contains("say it another way"),
        "{:?}",
        replies[1]
    );
    assert_eq!(
        replies[1].buttons[0]["payload"], "human",
        "clarification offers a person"
    );
    c.hook("alice", "a3", "purple llamas, really").await;
    let replies = receiver.wait_for("alice", 3).await;
    assert!(
        replies[2].text.contains("a person will reply"),
        "{:?}",
        replies[2]
    );

    let conv = c.conversation_of("alice").await;
    assert_eq!(conv["status"], "queued");
    assert_eq!(conv["escalation"]["reason"], "low_confidence");
    let id = conv["id"].as_u64().unwrap();
    let (_, detail) = c.get(&format!("/api/v1/conversations/{id}")).await;
    let escalated = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "status_changed" && e["to"] == "queued")
        .expect("escalation event");
    assert!(
        escalated["reason"]
            .as_str()
            .unwrap()
            .starts_with("escalated: low_confidence"),
        "{escalated}"
    );
    let verdicts: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "bot_decided")
        .map(|e| e["verdict"]["decision"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["answer", "clarify", "escalate"]);

    // Restart: nothing is lost.
    daemon.stop();
    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);
    assert_eq!(count(&c, "queued").await, 1);
    let (_, detail) = c.get(&format!("/api/v1/conversations/{id}")).await;
    assert_eq!(
        detail["messages"].as_array().unwrap().len(),
        6,
        "3 customer messages + 3 bot replies"
    );

    // An agent finds it in the queue, claims it and replies.
    let (_, queued) = c.get("/api/v1/conversations?status=queued").await;
    assert_eq!(queued["items"][0]["id"].as_u64(), Some(id));
    let (status, claimed) = c
        .post(&format!("/api/v1/conversations/{id}/claim"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    assert_eq!(claimed["status"], "assigned");
    let (status, reply) = c
        .post(
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "Hello Alice, I am on it."}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    // Queued, or already sent when the outbox was quicker than this answer.
    let state = reply["message"]["delivery"]["state"].as_str();
    assert!(matches!(state, Some("queued" | "sent")), "{reply}");
    let replies = receiver.wait_for("alice", 4).await;
    assert_eq!(replies[3].text, "Hello Alice, I am on it.");
    assert_eq!(replies[3].author["kind"], "agent");
    assert_eq!(replies[3].author["name"], "admin");

    // The bot stays silent while a person owns the conversation.
    c.hook("alice", "a4", "Where is my order?").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(receiver.texts_for("alice").len(), 4);

    let seq = reply["message"]["seq"].as_u64().unwrap();
    delivery_reaches(&c, id, seq, "sent").await;

    let (status, resolved) = c
        .post(&format!("/api/v1/conversations/{id}/resolve"), json!({}))
        .await;
    assert_eq!(
        (status, resolved["status"].as_str()),
        (StatusCode::OK, Some("resolved"))
    );
    daemon.stop();
    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);
    assert_eq!(count(&c, "resolved").await, 1);
    assert!(
        receiver.repeated().is_empty(),
        "nothing delivered twice: {:?}",
        receiver.repeated()
    );

    // A resolved conversation reopens to the bot when the customer writes again.
    c.hook("alice", "a5", "How do I return an item?").await;
    let replies = receiver.wait_for("alice", 5).await;
    assert!(replies[4].text.contains("within 30 days"));
    assert_eq!(c.conversation_of("alice").await["status"], "bot");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_inbound_is_stored_once() {
    let (receiver, dir, daemon, c) = started().await;
    let (s1, b1) = c.hook("bob", "b1", "How much is shipping?").await;
    let (s2, b2) = c.hook("bob", "b1", "How much is shipping?").await;
    assert_eq!(
        (s1, b1["status"].as_str()),
        (StatusCode::ACCEPTED, Some("accepted"))
    );
    assert_eq!(
        (s2, b2["status"].as_str()),
        (StatusCode::ACCEPTED, Some("duplicate"))
    );
    receiver.wait_for("bob", 1).await;
    // Also across a restart.
    daemon.stop();
    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);
    let (s3, b3) = c.hook("bob", "b1", "How much is shipping?").await;
    assert_eq!(
        (s3, b3["status"].as_str()),
        (StatusCode::ACCEPTED, Some("duplicate"))
    );
    let id = c.conversation_of("bob").await["id"].as_u64().unwrap();
    let (_, d) = c.get(&format!("/api/v1/conversations/{id}")).await;
    let customer: Vec<&Value> = d["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["author"]["kind"] == "customer")
        .collect();
    assert_eq!(customer.len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(receiver.texts_for("bob").len(), 1, "the bot answered once");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_retried_with_its_idempotency_key_is_sent_once() {
    let (receiver, _dir, daemon, c, id) = with_escalated("erin", "I want a human").await;
    let (status, first) = c
        .reply_with_key(id, "compose-1", "On its way", WAIT)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{first}");
    // The client never saw that answer and tries again: the same reply comes back.
    let (status, again) = c
        .reply_with_key(id, "compose-1", "On its way", WAIT)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again["message"]["seq"], first["message"]["seq"]);
    // A new key is a new reply.
    let (status, second) = c
        .reply_with_key(id, "compose-2", "And a second", WAIT)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        second["message"]["seq"].as_u64(),
        first["message"]["seq"].as_u64().map(|s| s + 1)
    );
    for bad in ["", "has space", &"k".repeat(256)] {
        let (status, body) = c.reply_with_key(id, bad, "x", WAIT).await.unwrap();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}: {body}");
    }
    let got = receiver.wait_for("erin", 3).await;
    let texts: Vec<&str> = got.iter().skip(1).map(|d| d.text.as_str()).collect();
    assert_eq!(texts, ["On its way", "And a second"]);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(receiver.texts_for("erin").len(), 3, "nothing more arrives");
    assert_eq!(c.customer_texts(id).await.len(), 1);
    let (_, d) = c.get(&format!("/api/v1/conversations/{id}")).await;
    let stored = d["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["text"] == "On its way")
        .count();
    assert_eq!(stored, 1, "stored once");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_callback_is_retried_and_delivered_once_in_order() {
    let (receiver, _dir, daemon, c, id) = with_escalated("carol", "I want a human").await;

    receiver.fail_next(3);
    let before = receiver.attempts();
    for text in ["one", "two", "three"] {
        let (status, _) = c
            .post(
                &format!("/api/v1/conversations/{id}/messages"),
                json!({ "text": text }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let got = receiver.wait_for("carol", 4).await;
    let texts: Vec<&str> = got.iter().skip(1).map(|d| d.text.as_str()).collect();
    assert_eq!(texts, ["one", "two", "three"], "in order");
    assert_eq!(
        receiver.attempts() - before,
        6,
        "3 refusals, then 3 deliveries"
    );
    assert!(
        receiver.repeated().is_empty(),
        "each reply delivered exactly once"
    );

    // The failed attempts are visible on the message.
    let (_, d) = c.get(&format!("/api/v1/conversations/{id}")).await;
    let one = d["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["text"] == "one")
        .unwrap()
        .clone();
    assert_eq!(one["delivery"]["state"], "sent");
    assert_eq!(one["delivery"]["attempts"], 4);
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_survives_a_restart_and_gives_up_visibly() {
    let (receiver, dir, daemon, c, id) = with_escalated("dave", "转人工").await;

    receiver.set_down(true);
    c.post(
        &format!("/api/v1/conversations/{id}/messages"),
        json!({"text": "queued while down"}),
    )
    .await;
    eventually(10, "a refused attempt", async || {
        (receiver.attempts() >= 2).then_some(())
    })
    .await;
    // Killed without warning while the reply waits in the outbox.
    daemon.kill();
    receiver.set_down(false);
    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);
    let got = receiver.wait_for("dave", 2).await;
    assert_eq!(got[1].text, "queued while down");

    // A reply that can never be delivered ends as failed, visible, and can be retried.
    receiver.set_down(true);
    let (_, r) = c
        .post(
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "doomed"}),
        )
        .await;
    let seq = r["message"]["seq"].as_u64().unwrap();
    let failed = delivery_reaches(&c, id, seq, "failed").await;
    assert_eq!(failed["delivery"]["attempts"], 8);
    assert!(
        failed["delivery"]["last_error"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{failed}"
    );
    receiver.set_down(false);
    let (status, m) = c
        .post(
            &format!("/api/v1/conversations/{id}/messages/{seq}/retry"),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, m["delivery"]["state"].as_str()),
        (StatusCode::OK, Some("queued"))
    );
    let got = receiver.wait_for("dave", 3).await;
    assert_eq!(got[2].text, "doomed");
    let (_, failed_list) = c.get("/api/v1/deliveries/failed").await;
    assert_eq!(failed_list, json!([]), "retried: no longer listed");
    assert!(receiver.repeated().is_empty());
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_survives_sigkill_right_after_messages() {
    let (_receiver, dir, daemon, c, _) = with_escalated("kim", "human please").await;
    // Messages that only move the conversation's activity, then SIGKILL at once (well inside
    // the record checkpoint interval).
    for i in 2..=6 {
        let (s, _) = c
            .hook("kim", &format!("k{i}"), &format!("follow-up {i}"))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    daemon.kill();
    let daemon = Daemon::start(dir.path());
    assert!(
        daemon.log().contains("recent activity recovered"),
        "{}",
        daemon.log()
    );
    let c = Client::new(&daemon);
    let conv = c.conversation_of("kim").await;
    assert_eq!(conv["preview"], "follow-up 6", "{conv}");
    let id = conv["id"].as_u64().unwrap();
    let (_, d) = c.get(&format!("/api/v1/conversations/{id}")).await;
    let last = d["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(conv["last_seq"], last["seq"], "{conv}");
    // And a new message continues the sequence.
    c.hook("kim", "k7", "one more").await;
    let (_, d) = c.get(&format!("/api/v1/conversations/{id}")).await;
    let seqs: Vec<u64> = d["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "no gap, no overwrite"
    );
    daemon.stop();
}

/// Outside business hours the hand-over tells the customer when people are back, and the API
/// says the team is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_hours_hand_over_names_the_next_opening() {
    let receiver = support::Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Open every day, all day, except today (UTC): the next opening is tomorrow 00:00.
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let tomorrow = today.tomorrow().unwrap();
    let all_day = r#"["00:00-24:00"]"#;
    support::write_config(
        dir.path(),
        &receiver.url,
        &format!(
            "[hours]\ntime_zone = \"UTC\"\nmon = {all_day}\ntue = {all_day}\nwed = {all_day}\n\
             thu = {all_day}\nfri = {all_day}\nsat = {all_day}\nsun = {all_day}\nclosed = [\"{today}\"]\n"
        ),
    );
    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);
    let (_, hours) = c.get("/api/v1/hours").await;
    let when = format!("{tomorrow} 00:00 (UTC)");
    assert_eq!(
        hours,
        json!({"open": false, "next_opening": when, "teams": []})
    );

    c.hook("olga", "o1", "I want to talk to a person").await;
    let replies = receiver.wait_for("olga", 1).await;
    assert!(
        replies[0].text.contains(&format!("after {when}")),
        "{}",
        replies[0].text
    );
    daemon.stop();
}

/// `/metrics` speaks the Prometheus text format, needs a token, and its counters move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move() {
    let (receiver, _dir, daemon, c) = started().await;
    let scrape = async |c: &Client| {
        let r = c
            .http
            .get(format!("{}/metrics", c.base))
            .bearer_auth(&c.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
        let value = |name: &str, label: (&str, &str)| {
            scrape
                .samples
                .iter()
                .filter(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => 0.0,
                })
                .sum::<f64>()
        };
        (
            value("switchboard_inbound_messages_total", ("channel", "hook")),
            value("switchboard_bot_decisions_total", ("decision", "answer")),
            value("switchboard_outbound_deliveries_total", ("result", "sent")),
            value("switchboard_escalations_total", ("reason", "asked_for_human")),
            scrape
                .samples
                .iter()
                .filter(|s| {
                    s.metric == "switchboard_http_request_duration_seconds"
                        && matches!(&s.value, prometheus_parse::Value::Histogram(h) if !h.is_empty())
                })
                .count(),
            scrape
                .samples
                .iter()
                .find(|s| s.metric == "switchboard_bot_backlog")
                .map(|s| match s.value {
                    prometheus_parse::Value::Gauge(v) => v,
                    _ => f64::NAN,
                }),
        )
    };
    let unauthorized = c
        .http
        .get(format!("{}/metrics", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let before = scrape(&c).await;
    c.hook("mia", "m1", "Where is my order?").await;
    c.hook("mia", "m2", "I want to talk to a person").await;
    receiver.wait_for("mia", 2).await;
    let after = eventually(10, "counters moved", async || {
        let a = scrape(&c).await;
        (a.2 >= before.2 + 2.0).then_some(a)
    })
    .await;
    assert_eq!(after.0 - before.0, 2.0, "{after:?}");
    assert_eq!(after.1 - before.1, 1.0, "{after:?}");
    assert_eq!(after.3 - before.3, 1.0, "{after:?}");
    assert!(
        after.4 >= 1,
        "the request latency histogram is there: {after:?}"
    );
    assert_eq!(after.5, Some(0.0), "the bot decided both: {after:?}");
    daemon.stop();
}

/// A daemon whose web hook calls back to `callback`; `allow_private` as given.
fn daemon_calling_back(callback: &str, allow_private: bool) -> (tempfile::TempDir, Daemon, Client) {
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), callback, "");
    let allow = format!("allow_private_callback = {allow_private}");
    support::edit_config(&config, &[("allow_private_callback = true", &allow)]);
    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);
    (dir, daemon, c)
}

/// The first reply of `user`'s conversation once its delivery has failed.
async fn failed_reply(c: &Client, user: &str) -> Value {
    eventually(20, "the delivery fails", async || {
        let id = c.conversation_of(user).await["id"].as_u64()?;
        let (_, d) = c.get(&format!("/api/v1/conversations/{id}")).await;
        d["messages"]
            .as_array()?
            .iter()
            .find(|m| m["delivery"]["state"] == "failed")
            .cloned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_reach_no_internal_address_and_follow_no_redirect() {
    // A name that resolves to loopback: refused at connection time, for good, unless allowed.
    let receiver = Receiver::start().await;
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    let (_dir, daemon, c) = daemon_calling_back(&by_name, false);
    assert_eq!(
        c.hook("ivan", "i1", "human please").await.0,
        StatusCode::ACCEPTED
    );
    let m = failed_reply(&c, "ivan").await;
    let error = m["delivery"]["last_error"].as_str().unwrap();
    assert!(error.contains("non-public"), "{m}");
    assert_eq!(m["delivery"]["attempts"], 1, "not retried: {m}");
    assert_eq!(
        receiver.attempts(),
        0,
        "nothing reached the internal address"
    );
    daemon.stop();

    // A receiver that redirects elsewhere (here: to the real one) is not followed.
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::post({
            let target = receiver.url.clone();
            move || async move { axum::response::Redirect::temporary(&target) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirector = format!("http://{}/callback", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (_dir, daemon, c) = daemon_calling_back(&redirector, true);
    assert_eq!(
        c.hook("jane", "j1", "human please").await.0,
        StatusCode::ACCEPTED
    );
    let m = failed_reply(&c, "jane").await;
    assert!(
        m["delivery"]["last_error"]
            .as_str()
            .unwrap()
            .contains("redirect"),
        "{m}"
    );
    assert_eq!(receiver.attempts(), 0, "the redirect was not followed");
    daemon.stop();
}
