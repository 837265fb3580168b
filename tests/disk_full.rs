//! A disk that really fills up: the data directory sits on a small tmpfs that the test mounts
//! (CI runs as root; so must this test) and a ballast file takes the space away.
//!
//! - With the reserve (`[store] min_free_mb`), new messages are refused with 503 before the
//!   disk is full, `/readyz` and `/metrics` say so, and service comes back by itself once
//!   space is freed, with everything acknowledged still there once.
//! - Without it, sled meets `ENOSPC` itself. Its error sticks until the database is opened
//!   again (which is why the reserve exists): the daemon says `store_failing`, and after a
//!   restart (what systemd's watchdog does) everything acknowledged is there; a refused
//!   message may be there too, and sending it again stores nothing twice.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Client, Daemon, Receiver, eventually, write_config};
use switchboard::store::disk::DiskGuard;

/// A tmpfs mounted for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mb: u64) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a {mb} MB tmpfs at {} failed: this test needs root (CI runs as root)",
            at.display()
        );
        Tmpfs(at.to_owned())
    }

    fn free(&self) -> u64 {
        DiskGuard::new(&self.0, 0).space().free_bytes
    }

    /// Writes a ballast file leaving about `leave` bytes free; `None` fills it to the end.
    fn fill(&self, leave: Option<u64>) -> PathBuf {
        let path = self.0.join("ballast");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let mut left = leave.map(|l| self.free().saturating_sub(l));
        loop {
            let n = left.map_or(chunk.len() as u64, |l| l.min(chunk.len() as u64)) as usize;
            if n == 0 {
                break;
            }
            match f.write(&chunk[..n]) {
                Ok(w) => left = left.map(|l| l - w as u64),
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("ballast: {e}"),
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A daemon whose data directory is a `mb` MB tmpfs, with `min_free_mb` in reserve.
async fn started_on_tmpfs(mb: u64, min_free_mb: u64) -> (Receiver, tempfile::TempDir, Tmpfs) {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&dir.path().join("data"), mb);
    let config = write_config(dir.path(), &receiver.url, "");
    let reserve = format!("cache_mb = 16\nmin_free_mb = {min_free_mb}");
    support::edit_config(&config, &[("cache_mb = 16", &reserve)]);
    (receiver, dir, fs)
}

async fn readyz(c: &Client) -> (StatusCode, Value) {
    let r = c
        .http
        .get(format!("{}/readyz", c.base))
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap();
    (
        StatusCode::from_u16(r.status().as_u16()).unwrap(),
        r.json().await.unwrap(),
    )
}

async fn metric(c: &Client, name: &str) -> Option<f64> {
    let (_, text) = c.get_text("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filling_disk_refuses_new_messages_says_so_and_recovers_by_itself() {
    let (receiver, dir, fs) = started_on_tmpfs(48, 16).await;
    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);
    for i in 1..=20 {
        let (status, body) = c
            .hook("dana", &format!("d-{i}"), &format!("note {i}"))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let (status, ready) = readyz(&c).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(metric(&c, "switchboard_disk_low").await, Some(0.0));
    let id = c.conversation_of("dana").await["id"].as_u64().unwrap();

    // The disk fills up to below the reserve (8 MB free of 16 MB kept).
    let ballast = fs.fill(Some(8 << 20));
    let refused = eventually(5, "new messages refused", async || {
        let (status, body) = c.hook("dana", "d-21", "note 21").await;
        (status == StatusCode::SERVICE_UNAVAILABLE).then_some(body)
    })
    .await;
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("disk is almost full"), "{refused}");
    let (status, ready) = readyz(&c).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["status"], "disk_low");
    assert!(
        ready["disk"]["free_bytes"].as_u64().unwrap() < 16 << 20,
        "{ready}"
    );
    assert_eq!(metric(&c, "switchboard_disk_low").await, Some(1.0));
    let (status, body) = c
        .post(
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "hi"}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "disk_full");
    // Reading still works, and the process is alive.
    let (status, _) = c.get(&format!("/api/v1/conversations/{id}")).await;
    assert_eq!(status, StatusCode::OK);

    // Space comes back: so does service, without a restart.
    std::fs::remove_file(ballast).unwrap();
    eventually(5, "messages accepted again", async || {
        let (status, _) = c.hook("dana", "d-21", "note 21").await;
        (status == StatusCode::ACCEPTED).then_some(())
    })
    .await;
    let (status, ready) = readyz(&c).await;
    assert_eq!(
        (status, ready["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );
    let (status, body) = c
        .post(
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "back"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let want: Vec<String> = (1..=21).map(|i| format!("note {i}")).collect();
    assert_eq!(
        c.customer_texts(id).await,
        want,
        "every acknowledged message, once"
    );
    eventually(20, "the reply delivered", async || {
        receiver
            .texts_for("dana")
            .contains(&"back".to_owned())
            .then_some(())
    })
    .await;
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_meeting_a_full_disk_keeps_what_it_acknowledged() {
    let (_receiver, dir, fs) = started_on_tmpfs(48, 0).await;
    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);
    for i in 1..=20 {
        let (status, _) = c
            .hook("erik", &format!("e-{i}"), &format!("line {i}"))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    // Full to the last byte, no reserve: sled's own writes fail.
    let ballast = fs.fill(None);
    let mut acked = 20;
    let mut refused = 0;
    for i in 21..=60 {
        match c
            .hook("erik", &format!("e-{i}"), &format!("line {i}"))
            .await
            .0
        {
            StatusCode::ACCEPTED if refused == 0 => acked = i,
            StatusCode::ACCEPTED => panic!("e-{i} accepted after a refusal"),
            StatusCode::SERVICE_UNAVAILABLE => refused += 1,
            other => panic!("e-{i}: {other}"),
        }
    }
    assert!(refused > 0, "a full disk refused nothing");
    let (status, ready) = readyz(&c).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["status"], "store_failing", "{ready}");
    // sled's error sticks even with space back: only opening the store again clears it.
    std::fs::remove_file(ballast).unwrap();
    let (status, ready) = readyz(&c).await;
    assert_eq!(ready["status"], "store_failing", "{status} {ready}");
    daemon.kill();

    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);
    let (status, ready) = readyz(&c).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    // What was acknowledged is there, once, in order. A refused message may have reached the
    // disk before the failure (sled wrote part of its log): refused is not "never stored" on
    // a full disk, one more reason for the reserve. The customer's system sends refused
    // messages again with the same id, and each ends up stored once.
    let id = c.conversation_of("erik").await["id"].as_u64().unwrap();
    let texts = c.customer_texts(id).await;
    let want: Vec<String> = (1..=acked).map(|i| format!("line {i}")).collect();
    assert_eq!(
        texts[..want.len()],
        want[..],
        "every acknowledged message, in order"
    );
    for i in acked + 1..=60 {
        let (status, _) = c
            .hook("erik", &format!("e-{i}"), &format!("line {i}"))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "e-{i} sent again");
    }
    let mut texts = c.customer_texts(id).await;
    texts.sort();
    let mut want: Vec<String> = (1..=60).map(|i| format!("line {i}")).collect();
    want.sort();
    assert_eq!(texts, want, "each message stored once");
    daemon.stop();
}
