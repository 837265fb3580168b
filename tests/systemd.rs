//! The systemd unit and the notification protocol: the unit verifies and scores as exposed
//! no more than 2.0 (`systemd-analyze`, installed by the test command), and the daemon tells a
//! notify socket READY=1, pings the watchdog, and says STOPPING=1.

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Daemon, write_config};

/// The repository's unit, pointed at the binary under test.
fn unit(dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/switchboard.service"
    ))
    .unwrap();
    let text = text.replace("/usr/bin/switchboard", env!("CARGO_BIN_EXE_switchboard"));
    let path = dir.join("switchboard.service");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_unit_verifies_and_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let path = unit(dir.path());
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (scripts/test installs it)");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&security.stdout);
    let score: f64 = out
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for switchboard.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{out}"));
    println!("systemd-analyze security: exposure {score}");
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{out}");
}

#[test]
fn ready_watchdog_and_stopping_are_notified() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "http://127.0.0.1:9/unused", "");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let daemon = Daemon::start_with_env(
        dir.path(),
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut got: Vec<String> = Vec::new();
    let read_until = |want: &dyn Fn(&[String]) -> bool, got: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut buf = [0u8; 1024];
        while !want(got) {
            assert!(Instant::now() < deadline, "notifications so far: {got:?}");
            if let Ok(n) = socket.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    };
    read_until(
        &|g| g.iter().filter(|m| *m == "WATCHDOG=1").count() >= 3,
        &mut got,
    );
    assert!(
        got[0].starts_with("READY=1\nSTATUS=serving on 127.0.0.1:"),
        "{got:?}"
    );
    daemon.terminate();
    read_until(&|g| g.iter().any(|m| m.starts_with("STOPPING=1")), &mut got);
    daemon.wait_exit();
}

/// The daemon's first log lines in a given environment (until it says it listens).
fn startup_log(env: &[(&str, &str)]) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9/unused", "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("JOURNAL_STREAM")
        .env_remove("SWITCHBOARD_LOG_FORMAT")
        .envs(env.iter().copied())
        .env("SB_TEST_ADMIN_TOKEN", support::ADMIN_TOKEN)
        .env("SB_TEST_HOOK_SECRET", support::HOOK_SECRET)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .take(50)
    {
        let done = line.contains("switchboard listening");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines.iter().any(|l| l.contains("switchboard listening")),
        "{lines:#?}"
    );
    lines
}

#[test]
fn logs_suit_the_journal_json_collectors_and_terminals() {
    // Under systemd: no timestamp (the journal adds its own), no colour codes.
    for line in startup_log(&[("JOURNAL_STREAM", "8:12345")]) {
        assert!(!line.contains('\x1b'), "{line}");
        assert!(!line.starts_with("20"), "no timestamp: {line}");
        assert!(
            line.trim_start().starts_with("INFO") || line.trim_start().starts_with("WARN"),
            "{line}"
        );
    }
    // JSON: one object per line, fields flattened, the listen address a field of its own.
    let json = startup_log(&[("SWITCHBOARD_LOG_FORMAT", "json")]);
    for line in &json {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
    }
    let listening: serde_json::Value = serde_json::from_str(json.last().unwrap()).unwrap();
    assert_eq!(listening["message"], "switchboard listening");
    assert!(
        listening["addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    // Elsewhere (not a terminal here): plain text with a timestamp.
    let text = startup_log(&[]);
    assert!(
        text.iter()
            .all(|l| l.starts_with("20") && !l.contains('\x1b')),
        "{text:#?}"
    );
}
