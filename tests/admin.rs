//! Operations: the admin commands against a stopped and a running daemon (export → import,
//! backup under load, forgetting a customer), SIGTERM with deliveries waiting, SIGHUP reloads.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;

/// The config of `dir` on a fixed port, so that admin commands find the running daemon.
fn on_fixed_port(dir: &Path) -> String {
    let path = dir.join("switchboard.toml");
    let addr = free_listen_addr();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("127.0.0.1:0", &addr)).unwrap();
    path.display().to_string()
}

/// Like `started`, on a fixed port; also gives the config's path.
async fn started_on_fixed_port() -> (Receiver, tempfile::TempDir, String, Daemon, Client) {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &receiver.url, "");
    let config = on_fixed_port(dir.path());
    let daemon = Daemon::start(dir.path());
    let client = Client::new(&daemon);
    (receiver, dir, config, daemon, client)
}

fn run_ok(args: &[&str]) -> String {
    let (ok, out, err) = admin_command(args);
    assert!(ok, "switchboard {args:?} failed:\n{err}");
    out
}

/// The lines of an export without its header, sorted (the header holds the time).
fn body_lines(export: &str) -> BTreeSet<String> {
    export
        .lines()
        .filter(|l| !l.contains(r#""kind":"header""#))
        .map(str::to_owned)
        .collect()
}

fn kinds(export: &str) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for l in export.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        *m.entry(v["kind"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    m
}

async fn chat_message(daemon: &Daemon, c: &Client, token: &str, text: &str) {
    let r = c
        .http
        .post(daemon.url("/chat/chat/messages"))
        .bearer_auth(token)
        .json(&json!({"text": text}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_into_a_fresh_data_dir_round_trips_every_record() {
    let (receiver, dir, daemon, c) = started().await;
    // Traffic of every kind: bot answers, an escalation with a claim, a reply, a note, labels,
    // a web chat (the channel's own transcript), an extra agent, a file.
    c.hook("ann", "r1", "Where is my order?").await;
    c.hook("ann", "r2", "human please").await;
    receiver.wait_for("ann", 2).await;
    let conv = c.conversation_on("hook", "ann").await;
    let id = conv["id"].as_u64().unwrap();
    c.post(&format!("/api/v1/conversations/{id}/claim"), json!({}))
        .await;
    c.post(
        &format!("/api/v1/conversations/{id}/messages"),
        json!({"text": "Hello Ann"}),
    )
    .await;
    c.post(
        &format!("/api/v1/conversations/{id}/notes"),
        json!({"text": "VIP customer"}),
    )
    .await;
    c.send(
        "PUT",
        &format!("/api/v1/conversations/{id}/labels"),
        Some(json!({"labels": ["vip"]})),
    )
    .await;
    let token = c.chat_session().await;
    chat_message(&daemon, &c, &token, "How much is shipping?").await;
    c.post("/api/v1/agents", json!({"name": "Ben"})).await;
    receiver.wait_for("ann", 3).await;
    daemon.stop();

    let config = dir.path().join("switchboard.toml").display().to_string();
    let exported = run_ok(&["export", "--config", &config]);
    let counts = kinds(&exported);
    for kind in [
        "header",
        "agent",
        "contact",
        "identity",
        "conversation",
        "thread",
        "message",
        "external_id",
        "note",
        "event",
        "state",
    ] {
        assert!(counts.contains_key(kind), "no {kind} in {counts:?}");
    }
    assert!(
        !exported.contains("token_hash") && !exported.contains(ADMIN_TOKEN),
        "no secrets in an export"
    );

    // Into a fresh data directory, then out again: the same records.
    let fresh = tempfile::tempdir().unwrap();
    write_config(fresh.path(), &receiver.url, "");
    let fresh_config = fresh.path().join("switchboard.toml").display().to_string();
    let file = fresh.path().join("export.jsonl");
    std::fs::write(&file, &exported).unwrap();
    run_ok(&["import", file.to_str().unwrap(), "--config", &fresh_config]);
    let again = run_ok(&["export", "--config", &fresh_config]);
    assert_eq!(body_lines(&again), body_lines(&exported));

    // A second import is refused: the directory is not empty any more.
    let (ok, _, err) =
        admin_command(&["import", file.to_str().unwrap(), "--config", &fresh_config]);
    assert!(!ok && err.contains("empty data directory"), "{err}");
    // Garbage is refused with its line number.
    let bad = fresh.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"kind\":\"agent\"}\n").unwrap();
    let empty = tempfile::tempdir().unwrap();
    write_config(empty.path(), &receiver.url, "");
    let (ok, _, err) = admin_command(&[
        "import",
        bad.to_str().unwrap(),
        "--config",
        &empty.path().join("switchboard.toml").display().to_string(),
    ]);
    assert!(!ok && err.contains("line 1"), "{err}");

    // The imported daemon serves the same conversation, and new ids do not collide.
    let daemon = Daemon::start(fresh.path());
    let c = Client::new(&daemon);
    let (status, detail) = c.get(&format!("/api/v1/conversations/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["conversation"]["labels"], json!(["vip"]));
    assert_eq!(detail["notes"][0]["text"], "VIP customer");
    c.hook("ann", "r3", "How do I return an item?").await;
    let (_, detail) = eventually(10, "the new message", async || {
        let (s, d) = c.get(&format!("/api/v1/conversations/{id}")).await;
        d["messages"]
            .as_array()?
            .iter()
            .any(|m| m["text"] == "How do I return an item?")
            .then_some((s, d))
    })
    .await;
    let seqs: Vec<u64> = detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // A duplicate of an imported message is still recognised.
    let (status, body) = c.hook("ann", "r1", "Where is my order?").await;
    assert_eq!(body["status"], "duplicate", "{status} {body}");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_holds_every_acknowledged_message() {
    let (receiver, dir, config, daemon, c) = started_on_fixed_port().await;

    // Eight writers post continuously; each remembers what was acknowledged, and when.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut writers = Vec::new();
    for w in 0..8 {
        let (c, stop) = (c.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..100_000 {
                if stop.is_cancelled() {
                    break;
                }
                let mid = format!("w{w}-{i}");
                let sent = std::time::Instant::now();
                let (status, _) = c
                    .hook(&format!("load{w}"), &mid, &format!("message {mid}"))
                    .await;
                if status == StatusCode::ACCEPTED {
                    // Stored under the id scoped to its customer.
                    let id =
                        switchboard_channel::ExternalMessageId::scoped(&format!("load{w}"), &mid);
                    acked.push((id.0, sent));
                }
            }
            acked
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    // The running daemon writes backups only under its backups directory.
    let backup = dir.path().join("data/backups/under-load");
    let started = std::time::Instant::now();
    let backup_arg = backup.display().to_string();
    let config_arg = config.clone();
    let (ok, _, err) = tokio::task::spawn_blocking(move || {
        admin_command(&["backup", &backup_arg, "--config", &config_arg])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.cancel();
    // Elsewhere is refused, and what it wrote is for the daemon's user only.
    for dest in [
        "/tmp/switchboard-backup-elsewhere",
        "../db-copy",
        "a/../../x",
    ] {
        let (s, body) = c.post("/api/v1/admin/backup", json!({"dest": dest})).await;
        assert_eq!(s, 422, "{dest}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("backups_dir"),
            "{body}"
        );
    }
    assert!(!std::path::Path::new("/tmp/switchboard-backup-elsewhere").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&backup), 0o700, "backup directory");
    assert_eq!(mode(&backup.join("store.snapshot")), 0o600, "snapshot");
    assert_eq!(mode(&dir.path().join("data/db")), 0o700, "store directory");
    let mut before = Vec::new();
    let mut total = 0;
    for w in writers {
        let acked = w.await.unwrap();
        total += acked.len();
        // Acknowledged before the backup command started: must be in it.
        before.extend(
            acked
                .into_iter()
                .filter(|(_, acked_at)| *acked_at < started)
                .map(|(m, _)| m),
        );
    }
    assert!(
        before.len() > 50,
        "some load before the backup: {}",
        before.len()
    );
    daemon.stop();

    // Restored into a fresh data directory, it reads back.
    let restored = tempfile::tempdir().unwrap();
    write_config(restored.path(), &receiver.url, "");
    let cfg = restored.path().join("switchboard.toml");
    run_ok(&[
        "restore",
        &backup.display().to_string(),
        "--config",
        &cfg.display().to_string(),
    ]);
    let (ok, _, err) = admin_command(&[
        "restore",
        &backup.display().to_string(),
        "--config",
        &cfg.display().to_string(),
    ]);
    assert!(!ok && err.contains("already holds a database"), "{err}");
    let exported = run_ok(&["export", "--config", &cfg.display().to_string()]);
    let mut stored: Vec<String> = Vec::new();
    for l in exported.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        if v["kind"] == "external_id" && v["channel"] == "hook" {
            stored.push(v["id"].as_str().unwrap().to_owned());
        }
    }
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "each message stored once");
    let missing: Vec<&String> = before.iter().filter(|m| !unique.contains(m)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages missing from the backup: {:?}",
        missing.len(),
        before.len(),
        &missing[..missing.len().min(5)]
    );
    println!(
        "backup under load: {} acknowledged before it, {} in all, {} in the backup",
        before.len(),
        total,
        stored.len()
    );
    // And a daemon runs on it.
    let daemon = Daemon::start(restored.path());
    let c = Client::new(&daemon);
    let (status, _) = c.get("/api/v1/conversations?channel=hook").await;
    assert_eq!(status, StatusCode::OK);
    daemon.stop();
}

/// Whether any file under `dir` holds `needle`.
fn files_contain(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_contact_leaves_no_trace_in_the_store_files() {
    let (receiver, dir, config, daemon, c) = started_on_fixed_port().await;

    const SECRET: &str = "PELICAN-7731";
    c.hook(
        "carol",
        "f1",
        &format!("my card ends {SECRET}, refund please"),
    )
    .await;
    c.hook("carol", "f2", "human please").await;
    c.hook("dan", "f3", "Where is my order?").await;
    let carol = c.conversation_on("hook", "carol").await;
    let id = carol["id"].as_u64().unwrap();
    let contact = carol["contact"].as_u64().unwrap();
    c.post(
        &format!("/api/v1/conversations/{id}/notes"),
        json!({"text": format!("card {SECRET} checked")}),
    )
    .await;
    c.post(
        "/api/v1/kb/proposals",
        json!({"question": format!("refund for {SECRET}"), "entry": "returns-en", "conversation": id}),
    )
    .await;
    // A web chat customer merged into Carol: their transcript goes too.
    let token = c.chat_session().await;
    chat_message(&daemon, &c, &token, &format!("chat about {SECRET}")).await;
    let chat = eventually(10, "the chat conversation", async || {
        let (_, page) = c.get("/api/v1/conversations?channel=chat").await;
        page["items"].as_array()?.first().cloned()
    })
    .await;
    let (status, merged) = c
        .post(
            &format!("/api/v1/contacts/{contact}/merge"),
            json!({"from": chat["contact"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{merged}");
    receiver.wait_for("dan", 1).await;

    // An agent may not; the admin command (through the running daemon's API) does.
    let (_, ben) = c.post("/api/v1/agents", json!({"name": "Ben"})).await;
    let ben = c.with_token(ben["token"].as_str().unwrap());
    let (status, _) = ben
        .post(&format!("/api/v1/contacts/{contact}/forget"), json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (ok, _, err) = admin_command(&[
        "contact",
        "forget",
        &contact.to_string(),
        "--config",
        &config,
    ]);
    assert!(!ok && err.contains("--yes"), "asks for confirmation: {err}");
    let out = run_ok(&[
        "contact",
        "forget",
        &contact.to_string(),
        "--yes",
        "--config",
        &config,
    ]);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["conversations"], 2, "{report}");
    assert_eq!(report["proposals"], 1, "{report}");

    let (status, _) = c.get(&format!("/api/v1/conversations/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, tomb) = c.get(&format!("/api/v1/contacts/{contact}")).await;
    assert!(
        tomb["forgotten_at_ms"].is_i64() && tomb["identities"] == json!([]),
        "{tomb}"
    );
    let (_, history) = c
        .get(&format!("/api/v1/contacts/{contact}/conversations"))
        .await;
    assert_eq!(history, json!([]));
    let transcript = c.chat_transcript(&token).await;
    assert!(!transcript.contains(SECRET), "{transcript}");
    // Dan is untouched.
    assert_eq!(
        c.customer_messages(c.conversation_of("dan").await["id"].as_u64().unwrap())
            .await
            .len(),
        1
    );

    // Carol writing again is a new customer.
    c.hook("carol", "f4", "hello again").await;
    let again = c.conversation_on("hook", "carol").await;
    assert_ne!(again["contact"].as_u64(), Some(contact));

    // The files are rewritten at the next start: nothing of hers is left in them.
    daemon.stop();
    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);
    let (_, page) = c.get("/api/v1/conversations?channel=hook").await;
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        2,
        "dan and the new carol"
    );
    daemon.stop();
    let hits = files_contain(&dir.path().join("data"), SECRET);
    assert!(hits.is_empty(), "{SECRET} still in {hits:?}");

    // The audit record says what went, not what it was.
    let exported = run_ok(&["export", "--config", &config]);
    let audit: Vec<Value> = exported
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["record"]["type"] == "contact_forgotten")
        .collect();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["record"]["contact"], contact);
    assert_eq!(
        audit[0]["record"]["messages"].as_u64().map(|n| n >= 3),
        Some(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_deliveries_waiting_delivers_them_after_the_restart() {
    let (receiver, dir, daemon, c) = started().await;
    c.hook("eve", "t1", "human please").await;
    // The hand-over message first: once a person owns the conversation the bot stays quiet.
    receiver.wait_for("eve", 1).await;
    let id = c.conversation_on("hook", "eve").await["id"]
        .as_u64()
        .unwrap();
    c.post(&format!("/api/v1/conversations/{id}/claim"), json!({}))
        .await;
    receiver.set_down(true);
    for i in 1..=5 {
        let (status, _) = c
            .post(
                &format!("/api/v1/conversations/{id}/messages"),
                json!({"text": format!("reply {i}")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    eventually(10, "refused attempts", async || {
        (receiver.attempts() >= 3).then_some(())
    })
    .await;
    // A clean stop with the backlog waiting: the daemon exits 0 within the unit's timeout.
    let stopping = std::time::Instant::now();
    daemon.stop();
    assert!(stopping.elapsed() < std::time::Duration::from_secs(15));
    receiver.set_down(false);
    let _daemon = Daemon::start(dir.path());
    let got = receiver.wait_for("eve", 6).await;
    let texts: Vec<&str> = got[1..].iter().map(|d| d.text.as_str()).collect();
    assert_eq!(
        texts,
        ["reply 1", "reply 2", "reply 3", "reply 4", "reply 5"]
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(receiver.texts_for("eve").len(), 6, "nothing twice");
    assert!(receiver.repeated().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_knowledge_base_from_its_files() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kb = dir.path().join("kb");
    std::fs::create_dir(&kb).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kb/shop-en.toml");
    std::fs::copy(&shipped, kb.join("shop-en.toml")).unwrap();
    let path = write_config(dir.path(), &receiver.url, "");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/kb")
            .display()
            .to_string(),
        &kb.display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);

    c.hook("fay", "h1", "Do you sell gift cards for llamas?")
        .await;
    let first = receiver.wait_for("fay", 1).await;
    assert!(!first[0].text.contains("LLAMA-CARDS"), "{:?}", first[0]);

    std::fs::write(
        kb.join("llamas.toml"),
        r#"
[[entry]]
id = "llama-cards-en"
lang = "en"
questions = ["Do you sell gift cards for llamas?", "llama gift card"]
answer = "Yes: LLAMA-CARDS are in the gift section."
"#,
    )
    .unwrap();
    // The config changes too: the bot's hand-over text applies at once, the outbox's retry
    // policy at the next start.
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replace(
            "[bot]\n",
            "[bot]\nhandoff_message = \"RELOADED: a person will reply\"\n",
        )
        .replace("base_delay_ms = 40", "base_delay_ms = 50");
    std::fs::write(&path, text).unwrap();
    daemon.signal("HUP");
    eventually(20, "the new entry answering", async || {
        let mid = format!("h{}", rand_id());
        c.hook("gus", &mid, "Do you sell gift cards for llamas?")
            .await;
        let got = receiver.texts_for("gus");
        got.iter().any(|t| t.contains("LLAMA-CARDS")).then_some(())
    })
    .await;
    let log = daemon.log();
    assert!(
        log.contains(r#"applied=["bot"] needs_restart=["outbox"]"#),
        "{log}"
    );
    c.hook("hal", "h-person", "human please").await;
    let got = receiver.wait_for("hal", 1).await;
    assert_eq!(got[0].text, "RELOADED: a person will reply");

    // A broken file changes nothing and says why.
    std::fs::write(&path, "data_dir = 42\n").unwrap();
    daemon.signal("HUP");
    eventually(10, "the refusal", async || {
        daemon.log().contains("config not reloaded").then_some(())
    })
    .await;
    c.hook("ida", "h-person2", "human please").await;
    assert_eq!(
        receiver.wait_for("ida", 1).await[0].text,
        "RELOADED: a person will reply"
    );
    daemon.stop();
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
