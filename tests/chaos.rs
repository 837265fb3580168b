//! Crash safety under load: the real daemon serves customers on the web hook, Telegram (the
//! fake Bot API) and email (the real mail server) while an agent replies through the API, and
//! is killed with SIGKILL at random moments, then started again on the same data directory.
//! At the end everything is checked against what each peer recorded:
//!
//! - every customer message the daemon acknowledged (web hook 202, Telegram offset confirmed,
//!   mail in the IMAP box) is stored exactly once, in order;
//! - every agent reply the API accepted reached the customer once and in the conversation's
//!   order (a client whose request died with the daemon tries again with the same
//!   `Idempotency-Key`, as the API asks);
//! - no conversation is left in an impossible state, nothing is stuck in the outbox or the
//!   bot queue, the bot decided no customer message aloud twice, and the store opens cleanly
//!   after every kill.
//!
//! Telegram and SMTP have no idempotency key. A reply whose send completed at the peer just
//! before a kill, but was not yet recorded, goes out again after the restart. On Telegram
//! such a repeat is accepted only when a kill falls between the two copies (and is counted);
//! mail repeats carry the same Message-ID, which mail clients show once.
//!
//! `SWITCHBOARD_CHAOS_SEED` replays a run's schedule (kill moments, who writes when);
//! `SWITCHBOARD_CHAOS_KILLS` sets the number of kills (default 20).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use serde_json::Value;
use support::{Client, Daemon, Receiver, admin_command, eventually, mail, write_config};
use switchboard_telegram::fake::{self, FakeTelegram};

const TOKEN: &str = "123456:CHAOS-token";
const HOOK_USERS: usize = 4;
const TG_CHATS: [i64; 3] = [7001, 7002, 7003];
const MAILERS: [&str; 2] = ["alice", "bob"];

/// splitmix64: small, seedable, good enough to pick moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    fn pause(&mut self, lo_ms: u64, hi_ms: u64) -> tokio::time::Sleep {
        tokio::time::sleep(Duration::from_millis(self.range(lo_ms, hi_ms)))
    }

    fn fork(&mut self) -> Rng {
        Rng(self.next())
    }
}

/// What the customers and the agent did, and what the daemon acknowledged.
#[derive(Default)]
struct Ledger {
    /// Per web hook user: messages acknowledged with 202 (the next one is `acked + 1`).
    hook_acked: [u32; HOOK_USERS],
    /// Per Telegram chat: messages handed to the Bot API.
    tg_sent: BTreeMap<i64, u32>,
    /// Mails delivered to the support mailbox: `(mailer, n)`.
    mails: Vec<(&'static str, u32)>,
    /// Conversations the agent knows: thread → (channel, id).
    known: BTreeMap<String, (String, u64)>,
    /// Per conversation: replies the API accepted with 201 (the next is `accepted + 1`), and
    /// whether that next one was sent without an answer yet.
    replies: BTreeMap<u64, (u32, bool)>,
    /// Answers that no correct daemon gives (e.g. a 500 to a valid request).
    violations: Vec<String>,
    /// Reply requests that got no answer (and were sent again with the same key).
    unanswered: u32,
    /// Told when a reply request is about to go out, so some kills can land in one.
    replying: Arc<tokio::sync::Notify>,
}

type Shared = Arc<Mutex<Ledger>>;

fn hook_user(u: usize) -> String {
    format!("chaos-h{u}")
}

fn hook_text(u: usize, n: u32) -> String {
    // Some customers ask for a person, so conversations move between bot, queue and agent.
    if n % 7 == 3 {
        format!("h{u} message {n}: human please")
    } else {
        format!("h{u} message {n}")
    }
}

fn tg_text(chat: i64, n: u32) -> String {
    format!("t{chat} message {n}")
}

fn mail_text(who: &str, n: u32) -> String {
    format!("mail {who} {n}")
}

fn reply_text(conv: u64, k: u32) -> String {
    format!("reply-{k}-c{conv}")
}

/// `(conversation, k)` of a reply text found anywhere in `text`.
fn parse_reply(text: &str) -> Option<(u64, u32)> {
    let rest = &text[text.find("reply-")? + "reply-".len()..];
    let (k, rest) = rest.split_once("-c")?;
    let conv: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((conv.parse().ok()?, k.parse().ok()?))
}

/// One web hook customer: writes, and sends the same message again until it is acknowledged.
async fn hook_customer(c: Client, ledger: Shared, u: usize, stop: Arc<AtomicBool>, mut rng: Rng) {
    while !stop.load(Ordering::SeqCst) {
        let n = ledger.lock().unwrap().hook_acked[u] + 1;
        let id = format!("{}-{n}", hook_user(u));
        match c.try_hook(&hook_user(u), &id, &hook_text(u, n)).await {
            Some(StatusCode::ACCEPTED) => ledger.lock().unwrap().hook_acked[u] = n,
            // Refusing what it cannot store is allowed; the customer's system tries again.
            Some(StatusCode::SERVICE_UNAVAILABLE) | None => {}
            Some(other) => ledger
                .lock()
                .unwrap()
                .violations
                .push(format!("web hook {id}: {other}")),
        }
        rng.pause(20, 80).await;
    }
}

/// The agent: replies to known conversations, retrying an unanswered reply with its key.
async fn agent(c: Client, ledger: Shared, stop: Arc<AtomicBool>, mut rng: Rng) {
    let mut round = 0u32;
    while !stop.load(Ordering::SeqCst) {
        if round.is_multiple_of(8) {
            learn_conversations(&c, &ledger).await;
        }
        round += 1;
        let pick = {
            let mut l = ledger.lock().unwrap();
            let waiting = l.replies.iter().find(|(_, (_, p))| *p).map(|(id, _)| *id);
            let ids: Vec<u64> = l.known.values().map(|(_, id)| *id).collect();
            match waiting {
                Some(id) => Some(id),
                None if ids.is_empty() => None,
                None => Some(ids[(rng.next() % ids.len() as u64) as usize]),
            }
            .map(|id| {
                let entry = l.replies.entry(id).or_default();
                entry.1 = true;
                (id, entry.0 + 1)
            })
        };
        if let Some((id, k)) = pick {
            // One request in four gives up after a few milliseconds, as a client whose
            // connection broke: the reply may be stored with its answer lost.
            let patience = match rng.next() % 4 {
                0 => Duration::from_micros(rng.range(50, 1500)),
                _ => Duration::from_secs(10),
            };
            reply(&c, &ledger, id, k, patience).await;
        }
        rng.pause(40, 160).await;
    }
}

async fn reply(c: &Client, ledger: &Shared, id: u64, k: u32, patience: Duration) -> bool {
    let key = format!("chaos-{id}-{k}");
    let replying = ledger.lock().unwrap().replying.clone();
    replying.notify_waiters();
    let answer = c
        .reply_with_key(id, &key, &reply_text(id, k), patience)
        .await;
    let mut l = ledger.lock().unwrap();
    match answer {
        Some((StatusCode::CREATED, _)) => {
            l.replies.insert(id, (k, false));
            true
        }
        None => {
            l.unanswered += 1;
            false
        }
        Some((StatusCode::SERVICE_UNAVAILABLE, _)) => false,
        Some((status, body)) => {
            l.violations.push(format!("reply {key}: {status} {body}"));
            // Not accepted: the next reply takes its number.
            l.replies.insert(id, (k - 1, false));
            false
        }
    }
}

async fn learn_conversations(c: &Client, ledger: &Shared) {
    let Ok(r) = c
        .http
        .get(format!("{}/api/v1/conversations?limit=200", c.base))
        .bearer_auth(&c.token)
        .send()
        .await
    else {
        return;
    };
    let Ok(page) = r.json::<Value>().await else {
        return;
    };
    let mut l = ledger.lock().unwrap();
    for conv in page["items"].as_array().into_iter().flatten() {
        if let (Some(thread), Some(channel), Some(id)) = (
            conv["thread"].as_str(),
            conv["channel"].as_str(),
            conv["id"].as_u64(),
        ) {
            l.known.insert(thread.to_owned(), (channel.to_owned(), id));
        }
    }
}

/// Telegram customers write to the Bot API whether or not the daemon is up.
async fn telegram_customers(
    tg: Arc<FakeTelegram>,
    ledger: Shared,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
) {
    while !stop.load(Ordering::SeqCst) {
        let chat = TG_CHATS[(rng.next() % TG_CHATS.len() as u64) as usize];
        let n = {
            let mut l = ledger.lock().unwrap();
            let n = l.tg_sent.entry(chat).or_default();
            *n += 1;
            *n
        };
        tg.private_message(chat, "Tia", n as i64, &tg_text(chat, n));
        rng.pause(40, 140).await;
    }
}

/// Mail customers write to the support mailbox whether or not the daemon is up.
async fn mail_customers(ledger: Shared, stop: Arc<AtomicBool>, mut rng: Rng) {
    while !stop.load(Ordering::SeqCst) {
        let who = MAILERS[(rng.next() % 2) as usize];
        let n = ledger
            .lock()
            .unwrap()
            .mails
            .iter()
            .filter(|m| m.0 == who)
            .count() as u32
            + 1;
        let from = format!("{who}@example.test");
        let raw = mail::mail(
            &from,
            &format!("chaos-{who}-{n}@example.test"),
            &format!("Chaos {who} {n}"),
            &mail_text(who, n),
            None,
        );
        mail::send_raw(&from, &raw).await;
        ledger.lock().unwrap().mails.push((who, n));
        rng.pause(250, 700).await;
    }
}

/// Starts every traffic source against `daemon`; they run until `stop` is set.
fn traffic(
    daemon: &Daemon,
    ledger: &Shared,
    tg: &Arc<FakeTelegram>,
    stop: &Arc<AtomicBool>,
    rng: &mut Rng,
) -> Vec<tokio::task::JoinHandle<()>> {
    let c = Client::new(daemon);
    let mut tasks = Vec::new();
    for u in 0..HOOK_USERS {
        tasks.push(tokio::spawn(hook_customer(
            c.clone(),
            ledger.clone(),
            u,
            stop.clone(),
            rng.fork(),
        )));
    }
    tasks.push(tokio::spawn(agent(
        c,
        ledger.clone(),
        stop.clone(),
        rng.fork(),
    )));
    tasks.push(tokio::spawn(telegram_customers(
        tg.clone(),
        ledger.clone(),
        stop.clone(),
        rng.fork(),
    )));
    tasks.push(tokio::spawn(mail_customers(
        ledger.clone(),
        stop.clone(),
        rng.fork(),
    )));
    tasks
}

async fn stop_traffic(stop: &AtomicBool, tasks: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        // A request cut by the kill ends with an error at once; a bounded wait all the same.
        tokio::time::timeout(Duration::from_secs(15), t)
            .await
            .expect("traffic task ends")
            .unwrap();
    }
}

fn config(dir: &Path, receiver: &Receiver, tg: &FakeTelegram, mail_section: &str) {
    let section = support::telegram_section(dir, &tg.url(), TOKEN, mail_section);
    write_config(dir, &receiver.url, &section);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_mixed_load_loses_and_repeats_nothing() {
    let seed: u64 = std::env::var("SWITCHBOARD_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let kills: usize = std::env::var("SWITCHBOARD_CHAOS_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!("chaos: seed {seed}, {kills} kills (replay: SWITCHBOARD_CHAOS_SEED={seed})");
    let mut rng = Rng(seed);

    let receiver = Receiver::start().await;
    let tg = Arc::new(FakeTelegram::start(TOKEN).await);
    let dir = tempfile::tempdir().unwrap();
    let mail_section = mail::prepare(dir.path(), "").await;
    config(dir.path(), &receiver, &tg, &mail_section);
    let ledger: Shared = Arc::default();
    let mut kill_times = Vec::new();
    let started = Instant::now();

    for round in 0..kills {
        let daemon = Daemon::start(dir.path());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = traffic(&daemon, &ledger, &tg, &stop, &mut rng);
        // Mostly in full flow; one kill in four soon after the start (recovery, reconnects),
        // one in four while an agent's reply is being posted.
        let run_ms = match rng.next() % 4 {
            0 => rng.range(0, 150),
            _ => rng.range(150, 1200),
        };
        tokio::time::sleep(Duration::from_millis(run_ms)).await;
        if rng.next().is_multiple_of(4) {
            let replying = ledger.lock().unwrap().replying.clone();
            let _ = tokio::time::timeout(Duration::from_secs(2), replying.notified()).await;
            tokio::time::sleep(Duration::from_micros(rng.range(0, 1500))).await;
        }
        kill_times.push(SystemTime::now());
        daemon.kill();
        stop_traffic(&stop, tasks).await;
        println!("chaos: kill {} after {run_ms} ms", round + 1);
    }

    // The last start: customers and the agent finish what they were sending, then everything
    // settles and is checked.
    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);
    finish_unanswered(&c, &ledger).await;
    settle(&c, &tg, &ledger).await;

    let mut violations = ledger.lock().unwrap().violations.clone();
    let convs = all_conversations(&c).await;
    check_customer_messages(&ledger, &convs, &mut violations);
    let in_doubt = check_replies(
        &receiver,
        &tg,
        &ledger,
        &convs,
        &kill_times,
        &mut violations,
    )
    .await;
    check_conversations(&convs, &mut violations);
    let (_, stats) = c.get("/api/v1/admin/stats").await;
    for kind in ["outbox", "bot_queue", "failed"] {
        if stats["records"][kind].as_u64() != Some(0) {
            violations.push(format!(
                "{kind} not empty at the end: {}",
                stats["records"][kind]
            ));
        }
    }
    daemon.stop();
    let config = dir.path().join("switchboard.toml");
    let (ok, _, err) = admin_command(&["stats", "--config", config.to_str().unwrap()]);
    if !ok {
        violations.push(format!("the store does not open offline: {err}"));
    }

    let l = ledger.lock().unwrap();
    let hook: u32 = l.hook_acked.iter().sum();
    let tg_in: u32 = l.tg_sent.values().sum();
    let replies: u32 = l.replies.values().map(|r| r.0).sum();
    println!(
        "chaos report: seed {seed}, {kills} kills in {:.1} s; stored {hook} web hook, {tg_in} Telegram \
         and {} mail messages; {replies} agent replies in {} conversations ({} requests unanswered and sent again); Telegram repeats across \
         a kill {}, mail repeats (same Message-ID) {}; violations {}",
        started.elapsed().as_secs_f64(),
        l.mails.len(),
        l.replies.len(),
        l.unanswered,
        in_doubt.telegram,
        in_doubt.mail,
        violations.len(),
    );
    assert!(
        violations.is_empty(),
        "seed {seed}: {} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

/// A web hook message or reply whose request died with the daemon is sent again, same ids.
async fn finish_unanswered(c: &Client, ledger: &Shared) {
    for u in 0..HOOK_USERS {
        let n = ledger.lock().unwrap().hook_acked[u] + 1;
        // The last one tried may or may not have been stored; sending it again is safe.
        let id = format!("{}-{n}", hook_user(u));
        let status = c.try_hook(&hook_user(u), &id, &hook_text(u, n)).await;
        assert_eq!(status, Some(StatusCode::ACCEPTED), "{id}");
        ledger.lock().unwrap().hook_acked[u] = n;
    }
    let waiting: Vec<(u64, u32)> = {
        let l = ledger.lock().unwrap();
        l.replies
            .iter()
            .filter(|(_, (_, p))| *p)
            .map(|(id, (k, _))| (*id, k + 1))
            .collect()
    };
    for (id, k) in waiting {
        let patience = Duration::from_secs(10);
        assert!(reply(c, ledger, id, k, patience).await, "reply {k} to {id}");
    }
}

/// Waits (bounded) until every peer's traffic is in and every reply is out.
async fn settle(c: &Client, tg: &FakeTelegram, ledger: &Shared) {
    let (tg_in, mails) = {
        let l = ledger.lock().unwrap();
        (l.tg_sent.values().sum::<u32>() as u64, l.mails.len() as u64)
    };
    eventually(90, "the daemon settles", async || {
        if tg.pending() > 0 {
            return None;
        }
        // Every message in first: the bot's work is queued with each in the same commit, so
        // empty queues after that mean nothing is left to do.
        let convs = all_conversations(c).await;
        let count = |channel: &str| {
            convs
                .iter()
                .filter(|(ch, _, _)| ch == channel)
                .map(|(_, _, d)| customer_texts(d).len() as u64)
                .sum::<u64>()
        };
        if count("tg") < tg_in || count("mail") < mails {
            return None;
        }
        let (_, stats) = c.get("/api/v1/admin/stats").await;
        let r = &stats["records"];
        (r["outbox"] == 0 && r["bot_queue"] == 0).then_some(())
    })
    .await;
}

/// Every conversation with its detail: `(channel, thread, detail)`.
async fn all_conversations(c: &Client) -> Vec<(String, String, Value)> {
    let (_, page) = c.get("/api/v1/conversations?limit=200").await;
    let items = page["items"].as_array().cloned().unwrap_or_default();
    assert!(page["next_cursor"].is_null(), "more than one page");
    let mut out = Vec::new();
    for conv in items {
        let id = conv["id"].as_u64().unwrap();
        let (_, mut d) = c.get(&format!("/api/v1/conversations/{id}")).await;
        // The view holds the newest 1,000; long transcripts are read page by page.
        if d["older_messages"] == true {
            d["messages"] = c.messages(id).await.into();
        }
        out.push((
            conv["channel"].as_str().unwrap().to_owned(),
            conv["thread"].as_str().unwrap().to_owned(),
            d,
        ));
    }
    out
}

fn customer_texts(detail: &Value) -> Vec<String> {
    detail["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["author"]["kind"] == "customer")
        .map(|m| m["text"].as_str().unwrap_or_default().trim().to_owned())
        .collect()
}

/// Each customer's acknowledged messages are stored once each, in the order sent.
fn check_customer_messages(
    ledger: &Shared,
    convs: &[(String, String, Value)],
    violations: &mut Vec<String>,
) {
    let l = ledger.lock().unwrap();
    let stored = |channel: &str, thread: &str| -> Vec<String> {
        convs
            .iter()
            .filter(|(ch, th, _)| ch == channel && th == thread)
            .flat_map(|(_, _, d)| customer_texts(d))
            .collect()
    };
    let mut expect = |what: String, got: Vec<String>, want: Vec<String>| {
        if got != want {
            violations.push(format!(
                "{what}: stored {} messages, expected {}; first difference at {:?}",
                got.len(),
                want.len(),
                got.iter().zip(&want).position(|(a, b)| a != b)
            ));
        }
    };
    for u in 0..HOOK_USERS {
        let want = (1..=l.hook_acked[u]).map(|n| hook_text(u, n)).collect();
        expect(
            format!("web hook {}", hook_user(u)),
            stored("hook", &hook_user(u)),
            want,
        );
    }
    for (chat, n) in &l.tg_sent {
        let want = (1..=*n).map(|i| tg_text(*chat, i)).collect();
        expect(
            format!("Telegram chat {chat}"),
            stored("tg", &chat.to_string()),
            want,
        );
    }
    // Each mail starts a conversation of its own (a new subject).
    let mut got: Vec<String> = convs
        .iter()
        .filter(|(ch, _, _)| ch == "mail")
        .flat_map(|(_, _, d)| customer_texts(d))
        .collect();
    let mut want: Vec<String> = l.mails.iter().map(|(w, n)| mail_text(w, *n)).collect();
    got.sort();
    want.sort();
    expect("mail".into(), got, want);
}

#[derive(Default)]
struct InDoubt {
    telegram: u32,
    mail: u32,
}

/// A reply as the customer's side recorded it: conversation, number, when it arrived.
struct Arrived {
    conv: u64,
    k: u32,
    at: SystemTime,
    /// The network's id of the copy, where it has one (mail: Message-ID); a repeat must
    /// carry the same.
    id: Option<String>,
}

/// The replies each conversation received, a repeat dropped when it is the one just before
/// with a kill between the two copies (the first may be written up to 1 s after the kill: the
/// peer finishing what the dead daemon sent). Returns the repeats dropped.
fn collapse(arrived: Vec<Arrived>, kills: &[SystemTime], seen: &mut HashMap<u64, Vec<u32>>) -> u32 {
    let mut last: HashMap<u64, (u32, SystemTime, Option<String>)> = HashMap::new();
    let mut repeats = 0;
    for a in arrived {
        if let Some((k, first, id)) = last.get(&a.conv)
            && *k == a.k
            && *id == a.id
            && kills
                .iter()
                .any(|t| *t <= a.at && *first <= *t + Duration::from_secs(1))
        {
            repeats += 1;
            continue;
        }
        last.insert(a.conv, (a.k, a.at, a.id));
        seen.entry(a.conv).or_default().push(a.k);
    }
    repeats
}

/// Every accepted reply reached its customer once, in order; returns the repeats allowed.
async fn check_replies(
    receiver: &Receiver,
    tg: &FakeTelegram,
    ledger: &Shared,
    convs: &[(String, String, Value)],
    kills: &[SystemTime],
    violations: &mut Vec<String>,
) -> InDoubt {
    let mut seen: HashMap<u64, Vec<u32>> = HashMap::new();
    // Web hook: the receiver applies each Idempotency-Key once, like a real one.
    for d in receiver.accepted() {
        if let Some((conv, k)) = parse_reply(&d.text) {
            seen.entry(conv).or_default().push(k);
        }
    }
    // Telegram has no idempotency key: only a repeat across a kill is allowed.
    let (now_i, now_s) = (Instant::now(), SystemTime::now());
    let arrived = tg
        .sent()
        .into_iter()
        .filter_map(|s| {
            let text = fake::visible_text(s.text.as_deref().unwrap_or_default());
            let (conv, k) = parse_reply(&text)?;
            Some(Arrived {
                conv,
                k,
                at: now_s - (now_i - s.at),
                id: None,
            })
        })
        .collect();
    let telegram = collapse(arrived, kills, &mut seen);
    // Mail: a repeat carries the same Message-ID (clients show it once); it too must
    // straddle a kill.
    let mut arrived = Vec::new();
    for who in MAILERS {
        for (at, raw) in mail::delivered(who) {
            if let Some((conv, k)) = parse_reply(&mail::text(&raw)) {
                let id = mail::header(&raw, "Message-ID");
                arrived.push(Arrived { conv, k, at, id });
            }
        }
    }
    arrived.sort_by_key(|a| a.at);
    let mail = collapse(arrived, kills, &mut seen);
    let l = ledger.lock().unwrap();
    for (conv, (accepted, _)) in &l.replies {
        let want: Vec<u32> = (1..=*accepted).collect();
        let got = seen.remove(conv).unwrap_or_default();
        if got != want {
            let channel = convs
                .iter()
                .find(|(_, _, d)| d["conversation"]["id"].as_u64() == Some(*conv))
                .map(|(ch, _, _)| ch.as_str())
                .unwrap_or("?");
            violations.push(format!(
                "replies to conversation {conv} ({channel}): delivered {got:?}, accepted 1..={accepted}"
            ));
        }
    }
    for (conv, got) in seen {
        violations.push(format!(
            "replies never accepted reached conversation {conv}: {got:?}"
        ));
    }
    InDoubt { telegram, mail }
}

/// Every conversation is whole and in a state the state machine can be in.
fn check_conversations(convs: &[(String, String, Value)], violations: &mut Vec<String>) {
    for (channel, thread, d) in convs {
        let conv = &d["conversation"];
        let what = format!("conversation {} ({channel}/{thread})", conv["id"]);
        let seqs: Vec<u64> = d["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["seq"].as_u64())
            .collect();
        let last = conv["last_seq"].as_u64().unwrap_or(0);
        if seqs != (1..=last).collect::<Vec<_>>() {
            let gap = (1..=last).zip(&seqs).find(|(want, got)| want != *got);
            violations.push(format!(
                "{what}: {} messages for last_seq {last}; first mismatch (want, got) {gap:?}",
                seqs.len()
            ));
        }
        let status = conv["status"].as_str().unwrap_or_default();
        let assigned = !conv["assignee"].is_null();
        let fine = match status {
            "bot" => !assigned,
            "queued" => !assigned && !conv["escalation"].is_null(),
            "assigned" => assigned,
            "snoozed" | "resolved" => true,
            _ => false,
        };
        if !fine {
            violations.push(format!(
                "{what}: status {status} with assignee {} and escalation {}",
                conv["assignee"], conv["escalation"]
            ));
        }
        // The bot speaks about a customer message at most once, crashes or not (its queue is
        // rebuilt at open; a message it answered must not be answered again).
        let mut decided = std::collections::BTreeMap::<u64, usize>::new();
        for e in d["events"].as_array().into_iter().flatten() {
            if e["type"] == "bot_decided"
                && let Some(seq) = e["seq"].as_u64()
            {
                *decided.entry(seq).or_default() += 1;
            }
        }
        for (seq, n) in decided.into_iter().filter(|(_, n)| *n > 1) {
            violations.push(format!(
                "{what}: the bot decided message {seq} aloud {n} times"
            ));
        }
        for m in d["messages"].as_array().into_iter().flatten() {
            let state = m["delivery"]["state"].as_str();
            if m["author"]["kind"] != "customer" && !matches!(state, Some("sent")) {
                violations.push(format!(
                    "{what}: message {} delivery {state:?} ({})",
                    m["seq"], m["delivery"]["last_error"]
                ));
            }
        }
    }
}
