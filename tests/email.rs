//! The email channel through the whole daemon, against a real mail server on 127.0.0.1:
//! Dovecot (IMAP, IDLE) and an SMTP listener that drops mail into Maildirs
//! (`scripts/mail-server`, a copy of `../shared/testing/mail-server.sh`, started by
//! `scripts/test`). Users `bridge` (the support mailbox), `alice` and `bob`, password `secret`.
//! These tests share the server and run one at a time (`.config/nextest.toml`, group `mail`).

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::mail::{self, *};
use support::{Client, Daemon, eventually, write_config};

/// A daemon on the support mailbox; `imap` adds keys to its `[channels.mail.imap]`.
async fn started(imap: &str) -> (tempfile::TempDir, Daemon, Client) {
    let dir = tempfile::tempdir().unwrap();
    let section = mail::prepare(dir.path(), imap).await;
    write_config(dir.path(), "http://127.0.0.1:9/unused", &section);
    let daemon = Daemon::start(dir.path());
    let client = Client::new(&daemon);
    (dir, daemon, client)
}

async fn conversation(c: &Client, thread: &str) -> Value {
    c.conversation_on("mail", thread).await
}

async fn customer_messages(c: &Client, id: u64) -> Vec<Value> {
    c.customer_messages(id).await
}

/// bob asks question `i` in a mail of its own.
async fn bob_asks(i: u32) {
    let raw = mail(
        "bob@example.test",
        &format!("r{i}@example.test"),
        &format!("question {i}"),
        "How much is shipping?",
        None,
    );
    send_raw("bob@example.test", &raw).await;
}

async fn mail_conversations(c: &Client) -> Vec<Value> {
    let (_, page) = c.get("/api/v1/conversations?channel=mail&limit=200").await;
    page["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_in_bot_answers_threaded_customer_replies_agent_answers() {
    let (_dir, daemon, c) = started("").await;

    send_raw(
        "alice@example.test",
        &mail(
            "alice@example.test",
            "a1@example.test",
            "Order 4411",
            "Where is my order?",
            None,
        ),
    )
    .await;
    let got = wait_inbox("alice", 1).await;
    let answer = &got[0];
    assert!(text(answer).contains("Orders"), "{}", text(answer));
    assert_eq!(
        header(answer, "In-Reply-To").as_deref(),
        Some("<a1@example.test>")
    );
    assert!(
        header(answer, "References")
            .unwrap()
            .contains("<a1@example.test>")
    );
    assert_eq!(header(answer, "Subject").as_deref(), Some("Re: Order 4411"));
    assert_eq!(
        header(answer, "Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    let bot_id = header(answer, "Message-ID").unwrap();
    assert!(bot_id.ends_with("@shop.test>"), "{bot_id}");

    // The customer answers from a mail client: same conversation, and a person is asked for.
    let bot_id = bot_id.trim_matches(['<', '>']).to_owned();
    send_raw(
        "alice@example.test",
        &mail(
            "alice@example.test",
            "a2@example.test",
            "Re: Order 4411",
            "I need a human please\r\n\r\nOn Thu, Support wrote:\r\n> Where is my order",
            Some(&bot_id),
        ),
    )
    .await;
    let got = wait_inbox("alice", 2).await;
    assert!(text(&got[1]).contains("person"), "{}", text(&got[1]));
    let conv = conversation(&c, "a1@example.test").await;
    assert_eq!(conv["status"], "queued", "{conv}");
    let id = conv["id"].as_u64().unwrap();
    let msgs = customer_messages(&c, id).await;
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        msgs[1]["text"], "I need a human please",
        "quoted history cut"
    );
    assert_eq!(
        msgs[1]["attachments"][0]["name"], "original.eml",
        "the whole mail kept"
    );

    // The agent answers: threaded, with the agent's name.
    let (status, body) = c
        .post(
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "Hi Alice, I am on it."}),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{body}");
    let got = wait_inbox("alice", 3).await;
    let reply = &got[2];
    assert_eq!(
        header(reply, "In-Reply-To").as_deref(),
        Some("<a2@example.test>")
    );
    let refs = header(reply, "References").unwrap();
    assert!(
        refs.contains("<a1@example.test>") && refs.contains("<a2@example.test>"),
        "{refs}"
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(reply.as_slice())
        .unwrap();
    let from = parsed.from().and_then(|a| a.first()).unwrap();
    assert_eq!(from.name(), Some("admin (Shop Support)"));
    assert_eq!(from.address(), Some("bridge@shop.test"));
    assert_eq!(header(reply, "Auto-Submitted"), None);
    assert!(text(reply).contains("I am on it."));

    // A reply with no usable headers but "回复:" joins by subject; a new subject is new.
    send_raw(
        "alice@example.test",
        &mail(
            "alice@example.test",
            "a3@example.test",
            "回复: Order 4411",
            "thanks",
            None,
        ),
    )
    .await;
    send_raw(
        "alice@example.test",
        &mail(
            "alice@example.test",
            "a4@example.test",
            "Invoice please",
            "Can I get an invoice?",
            None,
        ),
    )
    .await;
    eventually(30, "both stored", async || {
        (customer_messages(&c, id).await.len() == 3).then_some(())
    })
    .await;
    conversation(&c, "a4@example.test").await;

    // Chinese charsets and encoded-word subjects, from bob.
    let gbk = b"From: =?GB2312?B?1cXI/Q==?= <bob@example.test>\r\nTo: bridge@example.test\r\n\
Subject: =?GB2312?B?tqm1pc7KzOI=?=\r\nMessage-ID: <gbk-1@example.test>\r\n\
Content-Type: text/plain; charset=GBK\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
=B6=A9=B5=A5=D4=DA=C4=C4=C0=EF\r\n";
    send_raw("bob@example.test", gbk).await;
    let big5 = b"From: bob@example.test\r\nTo: bridge@example.test\r\nSubject: =?Big5?Q?=B0h=B3f?=\r\n\
Message-ID: <big5-1@example.test>\r\nContent-Type: text/plain; charset=Big5\r\n\r\n\xb0\x68\xb3\x66\r\n";
    send_raw("bob@example.test", big5).await;
    let gbk_conv = conversation(&c, "gbk-1@example.test").await;
    let m = customer_messages(&c, gbk_conv["id"].as_u64().unwrap()).await;
    assert_eq!(m[0]["text"], "订单在哪里");
    let (_, contact) = c
        .get(&format!("/api/v1/contacts/{}", gbk_conv["contact"]))
        .await;
    assert_eq!(contact["name"], "张三", "{contact}");
    let big5_conv = conversation(&c, "big5-1@example.test").await;
    let m = customer_messages(&c, big5_conv["id"].as_u64().unwrap()).await;
    assert_eq!(m[0]["text"], "退貨");

    // HTML only, and a 5 MB attachment.
    let html = b"From: bob@example.test\r\nTo: bridge@example.test\r\nSubject: html\r\nMessage-ID: <html-1@example.test>\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n<p>How much is <b>shipping</b>?</p>\r\n";
    send_raw("bob@example.test", html).await;
    let html_conv = conversation(&c, "html-1@example.test").await;
    let m = customer_messages(&c, html_conv["id"].as_u64().unwrap()).await;
    assert!(
        m[0]["text"]
            .as_str()
            .unwrap()
            .contains("How much is shipping?"),
        "{m:?}"
    );

    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut att = String::from(
        "From: bob@example.test\r\nTo: bridge@example.test\r\nSubject: photo\r\nMessage-ID: <att-1@example.test>\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\n\
see attached\r\n--XX\r\nContent-Type: application/octet-stream; name=\"scan.bin\"\r\n\
Content-Disposition: attachment; filename=\"scan.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    let b64 = base64_lines(&big);
    att.extend_from_slice(b64.as_bytes());
    att.extend_from_slice(b"\r\n--XX--\r\n");
    send_raw("bob@example.test", &att).await;
    let att_conv = conversation(&c, "att-1@example.test").await;
    let m = customer_messages(&c, att_conv["id"].as_u64().unwrap()).await;
    let file = m[0]["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "scan.bin")
        .cloned()
        .unwrap();
    assert_eq!(file["size"], 5_000_000);
    let r = c
        .http
        .get(format!(
            "{}/api/v1/attachments/{}",
            c.base,
            file["blob"].as_str().unwrap()
        ))
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), big);

    // An auto-reply is stored, never answered; a bounce of our mail marks it failed.
    let ooo = b"From: bob@example.test\r\nTo: bridge@example.test\r\nSubject: Out of office\r\n\
Message-ID: <ooo-1@example.test>\r\nAuto-Submitted: auto-replied\r\n\r\nI am away.\r\n";
    send_raw("bob@example.test", ooo).await;
    let ooo_conv = conversation(&c, "ooo-1@example.test").await;
    assert_eq!(ooo_conv["status"], "bot");
    let bounced_id = bot_id.clone();
    let dsn = format!(
        "From: MAILER-DAEMON@example.test\r\nTo: bridge@example.test\r\nSubject: Undelivered Mail Returned to Sender\r\n\
Message-ID: <dsn-1@example.test>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"R\"\r\n\r\n\
--R\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n\
--R\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; example.test\r\n\r\n\
Final-Recipient: rfc822; alice@example.test\r\nAction: failed\r\nStatus: 5.2.2\r\n\
Diagnostic-Code: smtp; 552 5.2.2 mailbox full\r\n\
--R\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{bounced_id}>\r\nSubject: Re: Order 4411\r\n--R--\r\n"
    );
    send_raw("mailer-daemon@example.test", dsn.as_bytes()).await;
    let failed = eventually(30, "bounce recorded", async || {
        let (_, d) = c.get(&format!("/api/v1/conversations/{id}")).await;
        d["messages"]
            .as_array()?
            .iter()
            .find(|m| m["delivery"]["state"] == "failed")
            .cloned()
    })
    .await;
    assert!(
        failed["delivery"]["last_error"]
            .as_str()
            .unwrap()
            .contains("mailbox full"),
        "{failed}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !inbox("bob")
            .await
            .iter()
            .any(|m| header(m, "In-Reply-To").as_deref() == Some("<ooo-1@example.test>")),
        "no answer to the auto-reply"
    );
    assert!(
        !mail_conversations(&c)
            .await
            .iter()
            .any(|c| c["thread"] == "dsn-1@example.test"),
        "a bounce is not a conversation"
    );
    daemon.stop();
}

fn base64_lines(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + bytes.len() / 38);
    for (i, chunk) in bytes.chunks(3).enumerate() {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
        if i % 19 == 18 {
            out.push_str("\r\n");
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_and_daemon_restarts_lose_and_duplicate_nothing() {
    // Polling instead of IDLE here, and stored mail marked \Seen.
    let (dir, daemon, c) = started("idle = false\npoll_secs = 1\nmark_seen = true").await;
    for i in 1..=3 {
        bob_asks(i).await;
    }
    eventually(30, "three stored", async || {
        (mail_conversations(&c).await.len() == 3).then_some(())
    })
    .await;

    // The mail server goes away and comes back while the daemon runs.
    mail_server("stop");
    tokio::time::sleep(Duration::from_secs(2)).await;
    mail_server("start");
    bob_asks(4).await;
    eventually(60, "stored after the server came back", async || {
        (mail_conversations(&c).await.len() == 4).then_some(())
    })
    .await;

    // The daemon stops; mail arrives meanwhile; it starts again.
    daemon.stop();
    for i in 5..=6 {
        bob_asks(i).await;
    }
    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);
    let convs = eventually(30, "six conversations", async || {
        let all = mail_conversations(&c).await;
        (all.len() >= 6).then_some(all)
    })
    .await;
    assert_eq!(convs.len(), 6);
    for conv in &convs {
        assert_eq!(
            customer_messages(&c, conv["id"].as_u64().unwrap())
                .await
                .len(),
            1,
            "{conv}"
        );
    }
    // Every customer got exactly one answer each.
    let answers = wait_inbox("bob", 6).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = inbox("bob").await;
    let replied: Vec<String> = all
        .iter()
        .map(|m| header(m, "In-Reply-To").unwrap_or_default())
        .collect();
    assert_eq!(all.len(), 6, "{} answers, to {replied:?}", answers.len());
    // Stored mail is marked \Seen.
    let mut s = imap("bridge").await;
    s.select("INBOX").await.unwrap();
    let unseen = s.uid_search("UNSEEN").await.unwrap();
    assert!(unseen.is_empty(), "unseen: {unseen:?}");
    let _ = s.logout().await;

    // The server renumbers the folder (a new UIDVALIDITY): everything is read again and
    // recognised; nothing is stored or answered twice.
    daemon.stop();
    let maildir = std::path::Path::new(
        &std::env::var("MAILTEST_DIR").unwrap_or_else(|_| "/tmp/switchboard-mail".into()),
    )
    .join("mail/bridge/Maildir");
    for entry in std::fs::read_dir(&maildir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("dovecot") {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);
    eventually(30, "re-read after UIDVALIDITY changed", async || {
        daemon.log().contains("UIDVALIDITY changed").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mail_conversations(&c).await.len(), 6);
    assert_eq!(inbox("bob").await.len(), 6, "no answer twice");
    daemon.stop();
}

/// A mail of about `bytes` from carol, in lines a mail server accepts.
fn bulky(i: u32, bytes: usize) -> Vec<u8> {
    let line = "The attached log, pasted as text, line after line after line.\r\n";
    let body = line.repeat(bytes / line.len() + 1);
    mail(
        "carol@example.test",
        &format!("bulk{i}@example.test"),
        &format!("log {i}"),
        &body,
        None,
    )
}

/// The mail channel's entry in `/readyz` (as an agent: with details).
async fn mail_health(c: &Client) -> Value {
    let (_, ready) = c.get("/readyz").await;
    ready["channels"]["mail"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_stores_mail_as_it_comes_and_a_stalled_fetch_reads_as_degraded() {
    const KIB: u64 = 1024;
    let link = SlowLink::start(256 * KIB).await;
    let dir = tempfile::tempdir().unwrap();
    let section = mail::prepare(dir.path(), "timeout_secs = 2").await;
    let section = section.replace(
        &format!("port = {IMAP_PORT}\nsecurity"),
        &format!("port = {}\nsecurity", link.port),
    );
    for i in 1..=6 {
        append("bridge", &bulky(i, 200_000)).await;
    }
    write_config(dir.path(), "http://127.0.0.1:9/unused", &section);
    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);
    // 1.2 MB at 256 KiB/s takes ~5 s, past the 2 s timeout, but each mail arrives within its
    // allowance (2 s + 1 s per 16 KiB) and is stored as it comes.
    eventually(
        90,
        "six bulky mails stored over the slow link",
        async || (mail_conversations(&c).await.len() == 6).then_some(()),
    )
    .await;
    eventually(10, "healthy", async || {
        (mail_health(&c).await["up"] == true).then_some(())
    })
    .await;

    // At 1 KiB/s a small mail still comes; a 64 KB one cannot within its 5 s: the small one is
    // kept, the fetch shrinks to the big one alone, and health says it makes no progress. (The
    // big one arrives while the small one is fetched: it must not wait for the next IDLE.)
    link.set_rate(KIB);
    append("bridge", &bulky(7, 1_000)).await;
    append("bridge", &bulky(8, 64_000)).await;
    eventually(
        60,
        "the small mail stored, though its fetch was cut off",
        async || (mail_conversations(&c).await.len() == 7).then_some(()),
    )
    .await;
    let stalled = eventually(
        90,
        "the channel reported as making no progress",
        async || {
            let h = mail_health(&c).await;
            let error = h["last_error"].as_str().unwrap_or_default().to_owned();
            (h["up"] == false && error.contains("no progress")).then_some(error)
        },
    )
    .await;
    assert!(stalled.contains("1 mail(s)"), "{stalled}");
    let (_, ready) = c.get("/readyz").await;
    assert_eq!(ready["status"], "degraded", "{ready}");

    // The link recovers: the big mail comes and the channel is healthy again.
    link.set_rate(256 * KIB);
    eventually(
        90,
        "the big mail stored after the link recovered",
        async || (mail_conversations(&c).await.len() == 8).then_some(()),
    )
    .await;
    eventually(30, "healthy again", async || {
        (mail_health(&c).await["up"] == true).then_some(())
    })
    .await;
    let convs = mail_conversations(&c).await;
    for conv in &convs {
        let id = conv["id"].as_u64().unwrap();
        assert_eq!(
            customer_messages(&c, id).await.len(),
            1,
            "stored once: {conv}"
        );
    }
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subject_is_read_shown_and_searched_and_a_numbered_option_is_picked_by_reply() {
    let (_dir, daemon, c) = started("").await;
    // The question is in the subject; the body only greets.
    let raw = mail(
        "alice@example.test",
        "subj-1@example.test",
        "How much is shipping?",
        "Hello,\r\n\r\nAlice",
        None,
    );
    send_raw("alice@example.test", &raw).await;
    let answer = &wait_inbox("alice", 1).await[0];
    assert!(text(answer).contains("4.90"), "{}", text(answer));
    let conv = mail_conversations(&c).await[0].clone();
    assert_eq!(conv["subject"], "How much is shipping?", "{conv}");
    let id = conv["id"].as_u64().unwrap();
    assert_eq!(
        customer_messages(&c, id).await[0]["subject"],
        "How much is shipping?"
    );
    let (_, found) = c.get("/api/v1/conversations?q=shipping").await;
    assert_eq!(found["items"][0]["id"], id, "{found}");

    // Mail has no buttons: the options come numbered, and a reply with a number picks one.
    let raw = mail(
        "bob@example.test",
        "vague-1@example.test",
        "payment",
        "payment",
        None,
    );
    send_raw("bob@example.test", &raw).await;
    let ask = text(&wait_inbox("bob", 1).await[0]);
    assert!(ask.contains("1. ") && ask.contains("2. "), "{ask}");
    assert!(ask.contains("Reply with the number"), "{ask}");
    let second = ask
        .lines()
        .find_map(|l| l.trim().strip_prefix("2. "))
        .unwrap()
        .to_owned();
    let expected = if second.contains("payment methods") {
        "Visa"
    } else {
        "released by your bank"
    };
    let ours = header(&wait_inbox("bob", 1).await[0], "Message-ID").unwrap();
    let ours = ours.trim_matches(['<', '>', ' ']);
    let raw = mail(
        "bob@example.test",
        "vague-2@example.test",
        "Re: payment",
        "2\r\n\r\n> Did you mean",
        Some(ours),
    );
    send_raw("bob@example.test", &raw).await;
    let picked = text(&wait_inbox("bob", 2).await[1]);
    assert!(
        picked.contains(expected),
        "option 2 was {second:?}: {picked}"
    );
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_without_a_sender_and_reports_about_other_mail_are_kept_apart_and_never_answered() {
    let (_dir, daemon, c) = started("").await;
    // Two mails whose From has no address: two customers, not one shared "foo".
    for id in ["nobody-1", "nobody-2"] {
        let raw = format!(
            "From: foo\r\nSubject: where is my order {id}\r\nMessage-ID: <{id}@x.test>\r\n\r\nWhere is my order?\r\n"
        );
        append("bridge", raw.as_bytes()).await;
    }
    // A delivery report about mail an agent sent from their own client (not ours).
    let dsn = "From: Mail Delivery System <MAILER-DAEMON@mx.example.test>\r\n\
        To: bridge@shop.test\r\nSubject: Undelivered Mail Returned to Sender\r\n\
        Message-ID: <dsn-1@mx.example.test>\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
        --b\r\nContent-Type: text/plain\r\n\r\nI could not deliver your message.\r\n\
        --b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.test\r\n\r\n\
        Final-Recipient: rfc822; gone@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\
        Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n\
        --b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <agent-own-1@laptop.example.test>\r\n\
        Subject: your quote\r\n\r\n--b--\r\n";
    append("bridge", dsn.as_bytes()).await;
    let convs = eventually(30, "three conversations", async || {
        let all = mail_conversations(&c).await;
        (all.len() == 3).then_some(all)
    })
    .await;
    let contacts: std::collections::BTreeSet<u64> = convs
        .iter()
        .map(|conv| conv["contact"].as_u64().unwrap())
        .collect();
    assert_eq!(contacts.len(), 3, "{convs:?}");
    let report = convs
        .iter()
        .find(|conv| {
            conv["preview"]
                .as_str()
                .unwrap()
                .contains("could not deliver")
        })
        .unwrap_or_else(|| panic!("the report is stored: {convs:?}"));
    // Neither the report nor the address-less mails get a bot answer by mail; the report is
    // marked as automated.
    let id = report["id"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        c.messages(id).await.len(),
        1,
        "no answer to a report: {report}"
    );
    // An agent's reply to a mail with no address is refused with the reason.
    let nobody = convs
        .iter()
        .find(|conv| conv["preview"] == "Where is my order?")
        .unwrap();
    let nobody_id = nobody["id"].as_u64().unwrap();
    let (s, body) = c
        .post(
            &format!("/api/v1/conversations/{nobody_id}/messages"),
            json!({"text": "Your order is on its way."}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let why = eventually(30, "the reply refused", async || {
        let (_, d) = c.get(&format!("/api/v1/conversations/{nobody_id}")).await;
        d["conversation"]["unreachable"].as_str().map(str::to_owned)
    })
    .await;
    assert!(why.contains("no valid sender address"), "{why}");
    daemon.stop();
}
