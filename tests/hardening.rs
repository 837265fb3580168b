//! The daemon stays reachable when one client holds as many connections as it can: slow
//! request heads (slowloris), idle connections and web chat event streams, under systemd's
//! default of 1,024 open files.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::{Client, Daemon, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Raises this test's own open-files limit: it holds thousands of connections.
fn raise_own_open_files(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain data for getrlimit/setrlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        assert!(
            limit.rlim_max >= want,
            "this test needs {want} open files; the hard limit is {}",
            limit.rlim_max
        );
        limit.rlim_cur = limit.rlim_cur.max(want);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

/// A connection that sent `head` and holds on.
async fn hold(addr: std::net::SocketAddr, head: &str) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(head.as_bytes()).await.ok()?;
    Some(s)
}

/// Answered within a second, on a fresh connection (no pooled one to lean on).
async fn answered_within_a_second(daemon: &Daemon, what: &str, n: u32) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let c = Client {
        http: http.clone(),
        ..Client::new(daemon)
    };
    let started = Instant::now();
    let health = http.get(daemon.url("/healthz")).send().await;
    assert!(
        health.as_ref().is_ok_and(|r| r.status() == StatusCode::OK),
        "{what}: /healthz {health:?} after {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let hook = c
        .try_hook("flooded", &format!("m{n}"), "你好，还在吗？")
        .await;
    assert_eq!(
        hook,
        Some(StatusCode::ACCEPTED),
        "{what}: web hook after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_slow_connections_and_event_streams_leaves_the_daemon_reachable() {
    raise_own_open_files(4096);
    let receiver = support::Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), &receiver.url, "");
    support::edit_config(
        &config,
        &[(
            "max_body_bytes = 65536",
            "max_body_bytes = 65536\nheader_timeout_secs = 3",
        )],
    );
    // As `ulimit -n 1024` would start it: soft and hard.
    let daemon = Daemon::start_with_open_files(dir.path(), 1024, 1024);
    assert!(
        daemon.log().contains("open-files limit 1024"),
        "{}",
        daemon.log()
    );
    let addr = daemon.addr;
    let token = Client::new(&daemon).chat_session().await;
    answered_within_a_second(&daemon, "before the flood", 0).await;

    // 1,100 connections that trickle a request head and never finish it.
    let mut slow = Vec::new();
    for _ in 0..1100 {
        slow.extend(hold(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: b\r\n").await);
    }
    answered_within_a_second(&daemon, "1,100 slow connections", 1).await;
    // 1,100 event streams with one chat session.
    let stream = format!("GET /chat/chat/events?token={token} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut streams = Vec::new();
    for _ in 0..1100 {
        streams.extend(hold(addr, &stream).await);
    }
    let opened = (slow.len(), streams.len());
    assert!(opened.0 > 1000 && opened.1 > 1000, "{opened:?}");
    for n in 2..5 {
        answered_within_a_second(&daemon, "slow connections and event streams", n).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Only a few streams per session got through; the rest were told why and closed.
    let mut first = [0u8; 512];
    let mut statuses = std::collections::BTreeMap::new();
    for s in streams.iter_mut().take(50) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut first))
            .await
            .map_or(0, |r| r.unwrap_or(0));
        let line = String::from_utf8_lossy(&first[..n]);
        let status = line.split(' ').nth(1).unwrap_or("closed").to_owned();
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert!(
        statuses.get("429").copied().unwrap_or(0) >= 40 && !statuses.contains_key("503"),
        "{statuses:?}"
    );
    // The slow connections that are still open are closed after the header timeout.
    let survivor = slow.last_mut().unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), survivor.read(&mut first)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "still open: {closed:?}"
    );

    let admin = Client::new(&daemon);
    let metrics = eventually(10, "the flood counted", async || {
        let (_, text) = admin.get_text("/metrics").await;
        let counted = [
            "switchboard_http_connections_dropped_total{reason=\"evicted\"}",
            "switchboard_http_connections_dropped_total{reason=\"header_timeout\"}",
            "switchboard_chat_streams_refused_total{limit=\"session\"}",
            "switchboard_chat_streams 4",
        ]
        .iter()
        .all(|m| text.contains(m));
        counted.then_some(text)
    })
    .await;
    assert!(!metrics.contains("reason=\"refused\""), "{metrics}");
    drop((slow, streams));
    daemon.stop();
}

#[tokio::test]
async fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
    let dir = tempfile::tempdir().unwrap();
    support::write_config(dir.path(), "http://127.0.0.1:9/unused", "");
    let daemon = Daemon::start_with_open_files(dir.path(), 1024, 4096);
    let log = daemon.log();
    assert!(
        log.contains("open-files limit 4096") && log.contains("at most 3840 open"),
        "{log}"
    );
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_chat_session_unused_for_its_idle_time_ends() {
    let dir = tempfile::tempdir().unwrap();
    support::write_config(
        dir.path(),
        "http://127.0.0.1:9/unused",
        "session_idle_secs = 2",
    );
    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);
    let token = c.chat_session().await;
    let post = async |token: &str, text: &str| {
        c.http
            .post(daemon.url("/chat/chat/messages"))
            .bearer_auth(token)
            .json(&serde_json::json!({"text": text}))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(post(&token, "hello").await.status(), StatusCode::ACCEPTED);
    // Used again within its idle time: still good.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        post(&token, "still there?").await.status(),
        StatusCode::ACCEPTED
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        post(&token, "and now?").await.status(),
        StatusCode::ACCEPTED
    );
    // Unused for longer than that: the token is refused everywhere, with the reason.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let r = post(&token, "back after a while").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "session_expired", "{body}");
    let events = c
        .http
        .get(daemon.url(&format!("/chat/chat/events?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::UNAUTHORIZED);
    // A new session works at once.
    let fresh = c.chat_session().await;
    assert_eq!(
        post(&fresh, "back after a while").await.status(),
        StatusCode::ACCEPTED
    );
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_slow_downloads_of_a_large_file_do_not_hold_it_in_memory() {
    const SIZE: usize = 20_000_000;
    let dir = tempfile::tempdir().unwrap();
    support::write_config(dir.path(), "http://127.0.0.1:9/unused", "");
    let daemon = Daemon::start(dir.path());
    let c = Client::new(&daemon);
    // Not compressible, so nothing could shrink it on the way.
    let mut bytes = vec![0u8; SIZE];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let r = c
        .http
        .post(daemon.url("/api/v1/attachments?name=big.bin"))
        .bearer_auth(&c.token)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let blob = r.json::<serde_json::Value>().await.unwrap()["blob"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = daemon.rss_bytes();
    // Forty clients start downloading and then read nothing more.
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(daemon.addr).await.unwrap();
        let request = format!(
            "GET /api/v1/attachments/{blob} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            c.token
        );
        s.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 4096];
        let n = s.read(&mut head).await.unwrap();
        assert!(
            head[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&head[..n])
        );
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = daemon.rss_bytes();
    let grown = during.saturating_sub(before);
    println!(
        "RSS {} MB before, {} MB with 40 downloads held open",
        before >> 20,
        during >> 20
    );
    assert!(
        grown < 50 << 20,
        "40 held downloads of a 20 MB file grew RSS by {} MB",
        grown >> 20
    );
    drop(slow);
    daemon.stop();
}
