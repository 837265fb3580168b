//! Routing through the real daemon: escalated conversations go to online agents with room,
//! by team; an agent coming online takes the backlog; an agent who leaves gives theirs back
//! after the grace period (also across a restart); a reopened conversation returns to its
//! agent; an agent whose inbox is closed is set away. Timings are shortened in the config.
mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Client, Daemon, Receiver, eventually, write_config};

const ROUTING: &str = r#"
[routing]
strategy = "least_loaded"
capacity = 2
away_after_secs = 1
return_after_secs = 2

[[routing.teams]]
name = "chinese"
members = ["Li"]
languages = ["zh"]
"#;

async fn start(dir: &std::path::Path, receiver: &Receiver) -> (Daemon, Client) {
    start_with(dir, receiver, ROUTING).await
}

async fn start_with(dir: &std::path::Path, receiver: &Receiver, routing: &str) -> (Daemon, Client) {
    let config = write_config(dir, &receiver.url, "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n{routing}")).unwrap();
    let daemon = Daemon::start(dir);
    let client = Client::new(&daemon);
    (daemon, client)
}

/// An agent with their token.
async fn agent(admin: &Client, name: &str) -> (u64, Client) {
    let (s, body) = admin
        .post("/api/v1/agents", json!({"name": name, "role": "agent"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let token = body["token"].as_str().unwrap();
    (
        body["agent"]["id"].as_u64().unwrap(),
        admin.with_token(token),
    )
}

/// Sets presence; returns the agent's open event stream (their inbox page, as routing sees it).
async fn present(agent: &Client, presence: &str) -> reqwest::Response {
    let (s, body) = agent
        .send(
            "PUT",
            "/api/v1/me/presence",
            Some(json!({"presence": presence})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let stream = agent
        .http
        .get(format!("{}/api/v1/events", agent.base))
        .bearer_auth(&agent.token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    stream
}

/// A web hook customer asks for a person; returns the conversation id once it left the bot.
async fn escalate(c: &Client, user: &str, text: &str) -> u64 {
    let id = format!("{user}-{}", switchboard_channel::now_ms());
    let (s, _) = c.hook(user, &id, text).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    eventually(10, &format!("{user} escalated"), async || {
        let conv = c.conversation_of(user).await;
        (conv["status"] != "bot").then(|| conv["id"].as_u64().unwrap())
    })
    .await
}

async fn conversation(c: &Client, id: u64) -> Value {
    c.get(&format!("/api/v1/conversations/{id}")).await.1["conversation"].clone()
}

/// Waits until conversation `id` is assigned to `agent` (or queued, for `None`).
async fn held_by(c: &Client, id: u64, agent: Option<u64>) -> Value {
    eventually(
        15,
        &format!("conversation {id} held by {agent:?}"),
        async || {
            let conv = conversation(c, id).await;
            let ok = match agent {
                Some(a) => conv["status"] == "assigned" && conv["assignee"] == a,
                None => conv["status"] == "queued",
            };
            ok.then_some(conv)
        },
    )
    .await
}

async fn load(c: &Client, agent: u64) -> usize {
    let (_, page) = c
        .get(&format!(
            "/api/v1/conversations?status=assigned&assignee={agent}&limit=200"
        ))
        .await;
    page["items"].as_array().unwrap().len()
}

/// Hours (the body of an `[hours]`-like table) open all day every day except today and
/// tomorrow (UTC): closed now, whenever the test runs.
fn closed_now() -> String {
    let day = |offset: i64| {
        jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_hours(24 * offset))
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date()
            .to_string()
    };
    let all = r#"["00:00-24:00"]"#;
    format!(
        "time_zone = \"UTC\"\nmon = {all}\ntue = {all}\nwed = {all}\nthu = {all}\nfri = {all}\n\
         sat = {all}\nsun = {all}\nclosed = [\"{}\", \"{}\"]\n",
        day(0),
        day(1)
    )
}

/// Waits until agent `id` has `presence` (as `GET /api/v1/team` shows it).
async fn presence_becomes(admin: &Client, id: u64, presence: &str) {
    eventually(15, &format!("agent {id} {presence}"), async || {
        let (_, team) = admin.get("/api/v1/team").await;
        let agent = team.as_array()?.iter().find(|a| a["id"] == id)?.clone();
        (agent["presence"] == presence).then_some(())
    })
    .await;
}

async fn queued(c: &Client) -> Vec<u64> {
    let (_, page) = c.get("/api/v1/conversations?status=queued").await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalations_reach_online_agents_of_their_team_within_capacity() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (daemon, admin) = start(dir.path(), &receiver).await;
    let (ana, ana_c) = agent(&admin, "Ana").await;
    let (bo, bo_c) = agent(&admin, "Bo").await;
    let (li, li_c) = agent(&admin, "Li").await;

    // Nobody online: the escalation waits. Ana comes online and takes the backlog.
    let first = escalate(&admin, "u1", "I want to talk to a person").await;
    held_by(&admin, first, None).await;
    let _ana_page = present(&ana_c, "online").await;
    let conv = held_by(&admin, first, Some(ana)).await;
    assert_eq!(conv["assignee"], ana);
    let (_, detail) = admin.get(&format!("/api/v1/conversations/{first}")).await;
    assert!(
        detail["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "status_changed"
                && e["reason"] == "auto-assigned to Ana (least loaded)"),
        "the reason is recorded: {detail}"
    );

    // A Chinese-speaking customer is for the Chinese team: Ana has room but does not get it.
    let zh = escalate(&admin, "u2", "我要转人工").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(conversation(&admin, zh).await["status"], "queued");
    let _li_page = present(&li_c, "online").await;
    held_by(&admin, zh, Some(li)).await;
    // Told in Chinese (the hand-over texts are per language), the others in English.
    assert_eq!(
        receiver.wait_for("u2", 1).await[0].text,
        "已为您转接人工客服，请稍候。"
    );
    assert_eq!(
        receiver.wait_for("u1", 1).await[0].text,
        "I am passing you to a colleague; a person will reply here soon."
    );

    // Five more: everyone fills up to capacity 2 and the fifth waits.
    let _bo_page = present(&bo_c, "online").await;
    let mut ids = Vec::new();
    for u in ["u3", "u4", "u5", "u6", "u7"] {
        ids.push(escalate(&admin, u, "I want to talk to a person").await);
    }
    eventually(15, "everyone at capacity", async || {
        let loads = (
            load(&admin, ana).await,
            load(&admin, bo).await,
            load(&admin, li).await,
        );
        (loads == (2, 2, 2)).then_some(())
    })
    .await;
    assert_eq!(queued(&admin).await, [ids[4]], "the newest waits");

    // A slot frees up: the waiting conversation takes it at once.
    let (s, _) = ana_c
        .post(&format!("/api/v1/conversations/{first}/resolve"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    held_by(&admin, ids[4], Some(ana)).await;
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_conversation_returns_to_its_agent_and_leavers_give_theirs_back() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (daemon, admin) = start(dir.path(), &receiver).await;
    let (ana, ana_c) = agent(&admin, "Ana").await;
    let (bo, bo_c) = agent(&admin, "Bo").await;
    let _ana_page = present(&ana_c, "online").await;
    let bo_page = present(&bo_c, "online").await;
    // Least loaded, ties in turn: Ana, Bo, Ana.
    let c1 = escalate(&admin, "r1", "I want to talk to a person").await;
    held_by(&admin, c1, Some(ana)).await;
    let c2 = escalate(&admin, "r2", "I want to talk to a person").await;
    held_by(&admin, c2, Some(bo)).await;
    let c3 = escalate(&admin, "r3", "I want to talk to a person").await;
    held_by(&admin, c3, Some(ana)).await;

    // Ana resolves c1; its customer comes back: Ana again (the turn would be Bo's).
    let (s, _) = ana_c
        .post(&format!("/api/v1/conversations/{c1}/resolve"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    escalate(&admin, "r1", "Sorry, me again: I want to talk to a person").await;
    held_by(&admin, c1, Some(ana)).await;

    // Ana signs off: two seconds later her two return; Bo has room for one, one waits.
    present(&ana_c, "offline").await;
    eventually(15, "Ana's conversations returned", async || {
        (load(&admin, ana).await == 0 && load(&admin, bo).await == 2).then_some(())
    })
    .await;
    assert_eq!(queued(&admin).await.len(), 1);

    // A colleague gives Ana the waiting one while she is away: deliberate, so it stays hers.
    let waiting = queued(&admin).await[0];
    let (s, _) = admin
        .post(
            &format!("/api/v1/conversations/{waiting}/assign"),
            json!({"agent_id": ana}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let conv = conversation(&admin, waiting).await;
    assert_eq!(
        (conv["status"].as_str(), conv["assignee"].as_u64()),
        (Some("assigned"), Some(ana))
    );

    // Bo closes his inbox page: a second later he is away.
    drop(bo_page);
    presence_becomes(&admin, bo, "away").await;
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_that_came_due_while_the_daemon_was_down_happens_at_start_once() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (daemon, admin) = start(dir.path(), &receiver).await;
    let (ana, ana_c) = agent(&admin, "Ana").await;
    let _page = present(&ana_c, "online").await;
    let id = escalate(&admin, "w1", "I want to talk to a person").await;
    held_by(&admin, id, Some(ana)).await;
    // Ana signs off and the daemon stops before her grace period (2 s) is over.
    present(&ana_c, "offline").await;
    daemon.stop();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let daemon = Daemon::start(dir.path());
    let admin = Client::new(&daemon);
    eventually(3, "returned right after the start", async || {
        (conversation(&admin, id).await["status"] == "queued").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = admin.get(&format!("/api/v1/conversations/{id}")).await.1["events"].clone();
    let returns = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["type"] == "status_changed"
                && e["reason"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("returned to the queue: Ana is offline")
        })
        .count();
    assert_eq!(returns, 1, "{events}");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sla_clocks_run_while_customers_wait_and_raise_due_soon_and_breached_once() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let routing = r#"
[routing]
[[routing.teams]]
name = "chinese"
members = ["li"]
languages = ["zh"]
[routing.sla]
first_response = "2s"
next_response = "3s"
due_soon_percent = 50
[routing.sla.teams.chinese]
first_response = "5m"
next_response = "1h"
"#;
    let (daemon, admin) = start_with(dir.path(), &receiver, routing).await;
    let id = escalate(&admin, "s1", "I want to talk to a person").await;
    let clock = conversation(&admin, id).await["sla"].clone();
    assert_eq!(clock["kind"], "first_response", "{clock}");
    let (started, due) = (
        clock["started_ms"].as_i64().unwrap(),
        clock["due_ms"].as_i64().unwrap(),
    );
    assert_eq!(due - started, 2000);

    let events = |types: &'static str| {
        let admin = admin.clone();
        async move {
            let (_, d) = admin.get(&format!("/api/v1/conversations/{id}")).await;
            d["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == types)
                .cloned()
                .collect::<Vec<Value>>()
        }
    };
    eventually(10, "breached", async || {
        let sla = conversation(&admin, id).await["sla"].clone();
        (sla["breached"] == true).then_some(())
    })
    .await;
    let now = switchboard_channel::now_ms();
    assert!(now >= due, "not before it was due");
    let soon = events("sla_due_soon").await;
    let breached = events("sla_breached").await;
    assert_eq!(
        (soon.len(), breached.len()),
        (1, 1),
        "{soon:?} {breached:?}"
    );
    assert!(soon[0]["at_ms"].as_i64().unwrap() >= started + 1000);
    assert_eq!(breached[0]["target"], "first_response");
    let late = breached[0]["at_ms"].as_i64().unwrap() - due;
    assert!(
        (0..1500).contains(&late),
        "raised {late} ms after it was due"
    );
    let (_, metrics) = admin.get_text("/metrics").await;
    assert!(
        metrics.contains(
            r#"switchboard_sla_events_total{target="first_response",event="breached"} 1"#
        ),
        "{metrics}"
    );
    // A flagged conversation can be found: the list carries the clock.
    let (_, queued) = admin.get("/api/v1/conversations?status=queued").await;
    assert_eq!(queued["items"][0]["sla"]["breached"], true);

    // A person answers: the clock stops. The customer writes again: the next one starts.
    let (s, _) = admin
        .post(
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "Sorry for the wait"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(conversation(&admin, id).await.get("sla").is_none());
    admin.hook("s1", "s1-again", "Thanks, one more thing").await;
    let clock = eventually(10, "next response clock", async || {
        let sla = conversation(&admin, id).await["sla"].clone();
        (sla["kind"] == "next_response").then_some(sla)
    })
    .await;
    assert_eq!(
        clock["due_ms"].as_i64().unwrap() - clock["started_ms"].as_i64().unwrap(),
        3000
    );
    // A customer message starts this clock without waking routing; a steady stream of other
    // customers' traffic (questions the bot answers) must not postpone the periodic pass
    // that notices it (it did, before ticks were fixed instants).
    let busy = {
        let admin = admin.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                admin
                    .hook(
                        &format!("chatty{i}"),
                        &format!("c{i}"),
                        "How long does a refund take?",
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    eventually(12, "the next response missed", async || {
        (events("sla_breached").await.len() == 2).then_some(())
    })
    .await;
    busy.abort();
    let breached = events("sla_breached").await;
    assert_eq!(breached[1]["target"], "next_response");
    let late = breached[1]["at_ms"].as_i64().unwrap() - clock["due_ms"].as_i64().unwrap();
    assert!(
        (0..5500).contains(&late),
        "raised {late} ms after it was due"
    );

    // The Chinese team has its own target.
    let zh = escalate(&admin, "s2", "我要转人工").await;
    let clock = conversation(&admin, zh).await["sla"].clone();
    assert_eq!(
        clock["due_ms"].as_i64().unwrap() - clock["started_ms"].as_i64().unwrap(),
        300_000,
        "{clock}"
    );
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_outside_their_shift_are_offline_and_get_nothing() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Night's shift is every day, all day, except today and tomorrow (UTC).
    let routing = format!("[routing]\n[routing.shifts.night]\n{}", closed_now());
    let (daemon, admin) = start_with(dir.path(), &receiver, &routing).await;
    let (night, night_c) = agent(&admin, "Night").await;
    let (day_id, day_c) = agent(&admin, "Day").await;
    let _night_page = present(&night_c, "online").await;
    presence_becomes(&admin, night, "offline").await;
    let id = escalate(&admin, "n1", "I want to talk to a person").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(conversation(&admin, id).await["status"], "queued");
    let _day_page = present(&day_c, "online").await;
    held_by(&admin, id, Some(day_id)).await;
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_with_its_own_hours_tells_its_customers_when_it_opens() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let routing = format!(
        "[routing]\n[[routing.teams]]\nname = \"chinese\"\nmembers = [\"li\"]\nlanguages = [\"zh\"]\n\
         [routing.teams.hours]\n{}",
        closed_now()
    );
    let (daemon, admin) = start_with(dir.path(), &receiver, &routing).await;
    escalate(&admin, "z1", "我要转人工").await;
    escalate(&admin, "e1", "I want to talk to a person").await;
    let zh = receiver.wait_for("z1", 1).await[0].text.clone();
    assert!(
        zh.starts_with("人工客服目前不在线，") && zh.contains("(UTC)"),
        "{zh}"
    );
    assert_eq!(
        receiver.wait_for("e1", 1).await[0].text,
        "I am passing you to a colleague; a person will reply here soon.",
        "everyone else: always open"
    );
    let (_, hours) = admin.get("/api/v1/hours").await;
    assert_eq!(hours["open"], true, "{hours}");
    assert_eq!(hours["teams"][0]["team"], "chinese");
    assert_eq!(hours["teams"][0]["open"], false);
    assert!(
        hours["teams"][0]["next_opening"]
            .as_str()
            .unwrap()
            .ends_with("(UTC)")
    );
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_topics_go_to_the_team_for_their_knowledge_base_tags() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let routing = r#"
[routing]
[[routing.teams]]
name = "payments"
members = ["Pam"]
tags = ["payment"]
"#;
    let (daemon, admin) = start_with(dir.path(), &receiver, routing).await;
    // Otto comes first in turn: only the tag rule sends the payment question to Pam.
    let (otto, otto_c) = agent(&admin, "Otto").await;
    let (pam, pam_c) = agent(&admin, "Pam").await;
    let _otto_page = present(&otto_c, "online").await;
    let _pam_page = present(&pam_c, "online").await;
    // "I was charged twice": the bot answers the sensitive payment entry, then hands over.
    let pay = escalate(&admin, "p1", "I was charged twice").await;
    let conv = held_by(&admin, pay, Some(pam)).await;
    assert_eq!(conv["escalation"]["reason"], "sensitive", "{conv}");
    // Anything else goes to whoever has room; Pam already has one, so Otto.
    let other = escalate(&admin, "p2", "I want to talk to a person").await;
    held_by(&admin, other, Some(otto)).await;
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shift_that_starts_with_the_inbox_open_takes_the_backlog() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let closed = format!("[routing]\n[routing.shifts.night]\n{}", closed_now());
    let (daemon, admin) = start_with(dir.path(), &receiver, &closed).await;
    let (night, night_c) = agent(&admin, "Night").await;
    let page = present(&night_c, "online").await;
    presence_becomes(&admin, night, "offline").await;
    let waiting = escalate(&admin, "b1", "I want to talk to a person").await;
    drop(page);
    daemon.stop();

    // Her shift now covers the present (the config says so from this start on): with her
    // inbox open again she is online at once and takes the waiting conversation.
    let config = dir.path().join("switchboard.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let open_now = text.replace(&closed_now()[..], "time_zone = \"UTC\"\nmon = [\"00:00-24:00\"]\ntue = [\"00:00-24:00\"]\nwed = [\"00:00-24:00\"]\nthu = [\"00:00-24:00\"]\nfri = [\"00:00-24:00\"]\nsat = [\"00:00-24:00\"]\nsun = [\"00:00-24:00\"]\n");
    assert_ne!(open_now, text);
    std::fs::write(&config, open_now).unwrap();
    let daemon = Daemon::start(dir.path());
    let admin = Client::new(&daemon);
    let _page = night_c
        .http
        .get(format!("{}/api/v1/events", admin.base))
        .bearer_auth(&night_c.token)
        .send()
        .await
        .unwrap();
    held_by(&admin, waiting, Some(night)).await;
    daemon.stop();
}
