//! The inbox page and the web chat widget in a real headless Chromium: `tests/browser/e2e.mjs`
//! drives Debian's `chromium` with the npm package `playwright-core` while this test runs the
//! daemon, a shop site on another origin that embeds the widget, and a "beacon" that must
//! never be contacted (any hit means a page loaded something it must not).
//!
//! `scripts/test` installs Chromium, Node.js and `tests/browser/node_modules`.
mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Client, Daemon, Receiver, eventually, write_config};

type Slot = Arc<Mutex<Option<Daemon>>>;

/// A site on another origin: serves the shop page, restarts the daemon on request (the
/// scenario's outage), and records every other request.
struct Site {
    origin: String,
    hits: Arc<Mutex<Vec<String>>>,
}

impl Site {
    async fn start(daemon_url: &str, daemon: Slot) -> Site {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let shop = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Shop</title>\
             <link rel=\"icon\" href=\"data:,\">\
             <style>body {{ transform: translateZ(0); min-height: 3000px }}\
             .promo {{ position: fixed; right: 0; bottom: 0; width: 460px; height: 640px;\
             z-index: 2147483647; background: #fc0 }}</style></head>\
             <body><h1>A shop</h1><div class=\"promo\">A promotion that covers the corner</div>\
             <script src=\"{daemon_url}/chat/chat/widget.js\" \
             data-channel=\"chat\" data-title=\"Shop support\" async></script></body></html>"
        );
        let recorded = hits.clone();
        let app = axum::Router::new()
            .route(
                "/shop.html",
                axum::routing::get(move || async move { axum::response::Html(shop) }),
            )
            .route(
                "/control/restart-daemon",
                axum::routing::post(move || restart(daemon.clone())),
            )
            .fallback(move |uri: axum::http::Uri| async move {
                recorded.lock().unwrap().push(uri.to_string());
                axum::http::StatusCode::NOT_FOUND
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Site { origin, hits }
    }
}

/// Stops the daemon (SIGTERM) and starts it again on the same address and data.
async fn restart(daemon: Slot) -> axum::http::StatusCode {
    tokio::task::spawn_blocking(move || {
        let mut slot = daemon.lock().unwrap();
        let old = slot.take().expect("a running daemon");
        let dir = old.dir.clone();
        old.stop();
        *slot = Some(Daemon::start(&dir));
    })
    .await
    .unwrap();
    axum::http::StatusCode::NO_CONTENT
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// What the browser test needs beyond the Rust toolchain, or why it cannot run.
fn check_tools() -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing: Vec<&str> = [
        (!Path::new(&chromium).exists()).then_some("chromium"),
        std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_err()
            .then_some("node"),
        (!browser_dir().join("node_modules/playwright-core").exists())
            .then_some("tests/browser/node_modules (npm install)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(
        missing.is_empty(),
        "the browser test needs {missing:?}; scripts/test installs them"
    );
    chromium
}

async fn agent(admin: &Client, name: &str) -> String {
    let (s, body) = admin
        .post("/api/v1/agents", json!({"name": name, "role": "agent"}))
        .await;
    assert_eq!(s, 201, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// A customer on the web hook channel with an HTML file in the conversation, as an email's
/// body would be: a script, an event handler and a remote image, none of which may run or load.
async fn hostile_html(admin: &Client, ana: &Client, beacon: &str) {
    let (s, _) = admin
        .hook("mallory", "m-1", "Please look at the order email I got")
        .await;
    assert_eq!(s, 202);
    let conv = admin.conversation_on("hook", "mallory").await;
    let id = conv["id"].as_u64().unwrap();
    let html = format!(
        "<html><body><h1>Order update</h1>\
         <script>parent.__xss = 'frame'; new Image().src = '{beacon}/script';</script>\
         <img src=\"{beacon}/remote-image\" onerror=\"parent.__xss = 'onerror'\">\
         <form action=\"{beacon}/form\"><input name=q></form></body></html>"
    );
    let r = ana
        .http
        .post(format!("{}/api/v1/attachments?name=order.html", ana.base))
        .bearer_auth(&ana.token)
        .header("content-type", "text/html")
        .body(html)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let file: Value = r.json().await.unwrap();
    let (s, body) = ana
        .post(
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "Is this the email you mean?", "attachments": [file]}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_and_agents_in_a_real_browser() {
    let chromium = check_tools();
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &receiver.url, "title = \"Shop support\"");
    // Room for the longest message a customer may send (64 KiB of text) in one web hook body.
    support::edit_config(
        &config,
        &[
            ("max_body_bytes = 65536", "max_body_bytes = 131072"),
            ("max_body_bytes = 4096", "max_body_bytes = 131072"),
        ],
    );
    let daemon = Daemon::start(dir.path());
    // Restarts keep the address the pages know.
    let text = std::fs::read_to_string(&config).unwrap();
    let pinned = text.replace("127.0.0.1:0", &daemon.addr.to_string());
    std::fs::write(&config, pinned).unwrap();
    // SLA targets from the next start on (the scenario restarts the daemon once).
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&config)
        .unwrap();
    std::io::Write::write_all(
        &mut f,
        b"\n[routing]\n[routing.sla]\nfirst_response = \"1h\"\nnext_response = \"4h\"\n",
    )
    .unwrap();
    let admin = Client::new(&daemon);
    // One unbroken line as long as a customer's message may be (64 KiB).
    let line = "A".repeat(65536);
    let (s, body) = admin.hook("longline", "l-1", &line).await;
    assert_eq!(s, 202, "{body}");
    // A name that shows as "admin" if its right-to-left override is obeyed.
    let spoof = json!({"external_user": "spoof", "message_id": "s-1",
        "user_name": "\u{202E}nimda", "text": "Refund me \u{200B}now"});
    let (s, body) = admin
        .hook_raw(spoof.to_string().as_bytes(), "application/json", None)
        .await;
    assert_eq!(s, 202, "{body}");
    let base = daemon.url("");
    let slot: Slot = Arc::new(Mutex::new(Some(daemon)));
    let site = Site::start(&base, slot.clone()).await;

    let ana_token = agent(&admin, "Ana").await;
    let grace_token = agent(&admin, "Grace").await;
    let ana = admin.with_token(&ana_token);
    hostile_html(&admin, &ana, &site.origin).await;

    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-output");
    let run = tokio::process::Command::new("node")
        .arg(browser_dir().join("e2e.mjs"))
        .env("BASE", &base)
        .env("RESTART", format!("{}/control/restart-daemon", site.origin))
        .env("SHOP", format!("{}/shop.html", site.origin))
        .env("BEACON", &site.origin)
        .env("ANA", &ana_token)
        .env("GRACE", &grace_token)
        .env("OUT", &out)
        .env("CHROMIUM", chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser run took over 4 minutes")
        .expect("start node");
    let daemon = slot.lock().unwrap().take().expect("the daemon");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser scenario failed:\n{stdout}\n{stderr}\n--- daemon log ---\n{}",
        daemon.log()
    );
    assert!(stdout.contains("[browser] all passed"), "{stdout}");
    for shot in [
        "inbox.png",
        "inbox-escalated.png",
        "inbox-phone.png",
        "widget.png",
    ] {
        assert!(out.join(shot).exists(), "no screenshot {shot}");
    }
    assert_eq!(
        *site.hits.lock().unwrap(),
        Vec::<String>::new(),
        "a page loaded something from outside"
    );

    // The customer saw exactly one copy of the agent's reply, and the conversation ended
    // resolved by Ana before the hostile message reopened it.
    let conv = eventually(10, "the web chat conversation", async || {
        let (_, page) = admin.get("/api/v1/conversations?channel=chat").await;
        page["items"].as_array()?.first().cloned()
    })
    .await;
    let id = conv["id"].as_u64().unwrap();
    let (_, detail) = admin.get(&format!("/api/v1/conversations/{id}")).await;
    let replies = detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["author"]["kind"] == "agent")
        .count();
    assert_eq!(replies, 1, "{detail}");
    let resolved_by_ana = detail["events"].as_array().unwrap().iter().any(|e| {
        e["type"] == "status_changed" && e["to"] == "resolved" && e["reason"] == "resolved by Ana"
    });
    assert!(resolved_by_ana, "{detail}");
    let (_, proposals) = admin.get("/api/v1/kb/proposals").await;
    let taught = proposals
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["conversation"] == id)
        .unwrap_or_else(|| panic!("no proposal from conversation {id}: {proposals}"));
    assert_eq!(taught["proposed_by"], "Ana");
    assert_eq!(
        taught["question"],
        "My refund has not arrived after two weeks"
    );
    daemon.stop();
}
