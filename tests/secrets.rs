//! Secrets stay secret: with the Telegram bot token, the web hook secret and the admin token
//! configured, and every kind of failure made to happen (the Bot API down and answering 500,
//! forged web hook signatures, wrong agent tokens, replies that cannot be delivered), none of
//! them appears in the daemon's log, its error answers, `/metrics`, `/readyz`, the channel
//! health, the conversation records or an export. A secret file others can read is warned
//! about.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use support::{ADMIN_TOKEN, Client, Daemon, HOOK_SECRET, admin_command, eventually, write_config};
use switchboard_telegram::fake::{FakeTelegram, Fault};

const TOKEN: &str = "987654:SECRET-bot-token_xyz";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_errors_metrics_or_exports() {
    let fake = FakeTelegram::start(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let section = support::telegram_section(dir.path(), &fake.url(), TOKEN, "");
    // Readable by everyone: to be warned about.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::Permissions::from_mode(0o644);
    std::fs::set_permissions(dir.path().join("tg.token"), mode).unwrap();
    // A fixed port, for the export command to find the running daemon.
    let listen = support::free_listen_addr();
    let config = write_config(dir.path(), "http://127.0.0.1:9/refused", &section);
    support::edit_config(
        &config,
        &[(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{listen}\""),
        )],
    );
    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);
    let mut seen = Vec::new();

    // A Telegram customer asks for a person; the agent replies while the Bot API fails.
    fake.private_message(42, "Una", 1, "/human");
    let conv = c.conversation_on("tg", "42").await;
    let id = conv["id"].as_u64().unwrap();
    fake.fault("sendMessage", Fault::ServerError);
    fake.fault("getUpdates", Fault::ServerError);
    fake.fault("getUpdates", Fault::Reset);
    let (status, body) = c.reply(id, "hi").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    fake.stop();
    c.reply(id, "still?").await;
    eventually(20, "the outage noticed", async || {
        let (_, ready) = c.get("/readyz").await;
        let polled = daemon.log().contains("getUpdates failed");
        (ready["status"] == "degraded" && polled).then_some(())
    })
    .await;
    // A web hook customer whose replies cannot be delivered (nothing listens on port 9).
    c.hook("vic", "v1", "human please").await;
    // Forged and wrong credentials.
    let (status, body) = c
        .hook_raw(
            br#"{"external_user":"x","message_id":"1","text":"t"}"#,
            "application/json",
            Some("guess"),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    seen.push(body.to_string());
    let (status, body) = c.with_token("sbt_wrong").get("/api/v1/conversations").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    seen.push(body.to_string());
    eventually(20, "the web hook reply retried", async || {
        daemon
            .log()
            .contains("delivery will be retried")
            .then_some(())
    })
    .await;

    // Everything a person or a scraper can read.
    seen.push(c.get_text("/metrics").await.1);
    seen.push(c.get("/readyz").await.1.to_string());
    seen.push(c.get("/api/v1/channels").await.1.to_string());
    seen.push(
        c.get(&format!("/api/v1/conversations/{id}"))
            .await
            .1
            .to_string(),
    );
    let vic = c.conversation_of("vic").await["id"].as_u64().unwrap();
    seen.push(
        c.get(&format!("/api/v1/conversations/{vic}"))
            .await
            .1
            .to_string(),
    );
    let config_arg = config.to_str().unwrap();
    let (ok, export, err) = admin_command(&["export", "--config", config_arg]);
    assert!(ok, "{err}");
    seen.push(export);
    seen.push(err);
    fake.start_again();
    let log = daemon.stop_and_log();
    seen.push(log.clone());

    // The failure paths ran (their messages are where a token would show).
    for expected in ["getUpdates failed", "reason=Telegram", "reason=callback"] {
        assert!(log.contains(expected), "no `{expected}` in the log:\n{log}");
    }
    assert!(
        log.contains("tg.token can be read by other users (mode 644)"),
        "no warning about the token file:\n{log}"
    );
    let bot_secret = TOKEN.split_once(':').unwrap().1;
    for (name, secret) in [
        ("the bot token", bot_secret),
        ("the web hook secret", HOOK_SECRET),
        ("the admin token", ADMIN_TOKEN),
    ] {
        for text in &seen {
            assert!(!text.contains(secret), "{name} leaked into:\n{text}");
        }
    }
}
