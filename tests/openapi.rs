//! The agent API against its own OpenAPI document, by schemathesis (PyPI): generated requests,
//! valid and invalid, with an agent's token and then an admin's, against the running daemon.
//! It fails on any 5xx, a status the document does not list for the operation, a response
//! that does not match its schema or content type, a request the schema allows that the
//! server rejects, and one the schema forbids that the server accepts.
//!
//! `scripts/test` installs schemathesis (`scripts/schemathesis`, pinned in
//! `tests/openapi/requirements.txt`); `SWITCHBOARD_SCHEMATHESIS` names another binary.
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::{Client, Receiver, eventually, write_config};

fn schemathesis() -> PathBuf {
    let path = std::env::var_os("SWITCHBOARD_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/tools/schemathesis/bin/schemathesis")
        });
    assert!(
        path.exists(),
        "{} is missing: run scripts/schemathesis (scripts/test does)",
        path.display()
    );
    path
}

/// Runs schemathesis with `token` over the operations `filter` leaves in; returns its output
/// when it failed. Every check except the stateful ones (which need links between
/// operations); `tests/openapi/schemathesis.toml` names the rules a schema cannot state.
fn run(base: &str, token: &str, filter: &[&str], reports: &Path) -> Option<String> {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi/schemathesis.toml");
    let out = Command::new(schemathesis())
        .current_dir(reports)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{base}/api/v1/openapi.json"), "--url", base])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all"])
        .args([
            "--exclude-checks",
            "object_level_authorization,use_after_free,ensure_resource_availability",
        ])
        .args([
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "30",
        ])
        .args(["--seed", "20261207", "--workers", "2", "--no-color"])
        .args(["--request-timeout", "10", "--generation-database", "none"])
        .args(["--output-truncate", "false"])
        .args(filter)
        .output()
        .expect("schemathesis runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (!out.status.success()).then_some(text)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_answers_as_its_openapi_document_says() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &receiver.url, "");
    let daemon = support::Daemon::start(dir.path());
    let admin = Client::new(&daemon);
    // Something to find: a customer's conversation, a contact and a second agent.
    let (status, _) = admin
        .hook("u-1", "m-1", "我的订单还没到，能帮我查一下吗？")
        .await;
    assert!(status.is_success());
    eventually(10, "the conversation", async || {
        let (_, page) = admin.get("/api/v1/conversations").await;
        (page["items"].as_array()?.len() == 1).then_some(())
    })
    .await;
    let (status, created) = admin
        .post("/api/v1/agents", json!({ "name": "小王", "role": "agent" }))
        .await;
    assert!(status.is_success(), "{created}");
    let agent_token = created["token"].as_str().unwrap().to_owned();

    // The event stream never ends (its errors are checked below); rotating tokens runs last,
    // on its own, as it may rotate the run's own token.
    let base = daemon.url("");
    let reports = tempfile::tempdir().unwrap();
    let main = ["--exclude-path-regex", "/(events|token)$"];
    let rotate = ["--include-path-regex", "/token$"];
    let runs = [
        ("agent", agent_token.as_str(), &main),
        ("admin", support::ADMIN_TOKEN, &main),
        ("admin, rotating tokens", support::ADMIN_TOKEN, &rotate),
    ];
    let mut failures = Vec::new();
    for (who, token, filter) in runs {
        if let Some(out) = tokio::task::block_in_place(|| run(&base, token, filter, reports.path()))
        {
            failures.push(format!("== as {who}\n{out}"));
        }
    }

    // The event stream's own errors are JSON too.
    let agent = admin.with_token(&agent_token);
    for query in ["last_event_id=18446744073709551616", "conversation=-1"] {
        let (status, body) = agent.get(&format!("/api/v1/events?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{query}: {body}");
    }

    let daemon_log = daemon.stop_and_log();
    assert!(
        failures.is_empty(),
        "{}\n== daemon log (tail)\n{}",
        failures.join("\n"),
        tail(&daemon_log, 40)
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
