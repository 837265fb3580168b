//! The agent API and the customer-facing endpoints against the real daemon: bad input, auth,
//! the OpenAPI document, the event stream, web chat, contacts.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{eventually, started};

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_web_hook_requests_get_precise_errors_and_change_nothing() {
    let (_receiver, _dir, daemon, c) = started().await;
    let ok_body = json!({"external_user": "eve", "message_id": "e1", "text": "hi"}).to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let cases: Vec<(&str, (StatusCode, Value), StatusCode, &str)> = vec![
        (
            "malformed json",
            c.hook_raw(b"{\"external_user\": ", "application/json", None)
                .await,
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "missing field",
            c.hook_raw(b"{\"text\": \"x\"}", "application/json", None)
                .await,
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "wrong content type",
            c.hook_raw(ok_body.as_bytes(), "text/plain", None).await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "bad signature",
            c.hook_raw(ok_body.as_bytes(), "application/json", Some("wrong"))
                .await,
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        ),
        (
            "replayed",
            c.hook_signed_at(ok_body.as_bytes(), "application/json", None, now - 301)
                .await,
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        ),
        (
            "too large",
            c.hook(&"x".repeat(10), "e2", &"y".repeat(8 * 1024)).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "empty",
            c.hook("eve", "e3", "  ").await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_message",
        ),
        (
            "long id",
            c.hook(&"u".repeat(300), "e4", "hi").await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),        (
            "long name",
            c.hook_raw(
                json!({"external_user": "eve", "message_id": "e5", "text": "hi", "user_name": "名".repeat(201)})
                    .to_string()
                    .as_bytes(),
                "application/json",
                None,
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            "too many attachments",
            c.hook_raw(
                json!({"external_user": "eve", "message_id": "e6", "text": "hi",
                    "attachments": vec![json!({"name": "a.png", "content_type": "image/png", "size": 1}); 11]})
                .to_string()
                .as_bytes(),
                "application/json",
                None,
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
    ];
    for (what, (status, body), want_status, want_code) in cases {
        assert_eq!(
            (status, code(&body)),
            (want_status, want_code),
            "{what}: {body}"
        );
    }
    // A missing signature altogether.
    let r = c
        .http
        .post(daemon.url("/hooks/hook/messages"))
        .header("content-type", "application/json")
        .body(ok_body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (_, page) = c.get("/api/v1/conversations").await;
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        0,
        "nothing was stored: {page}"
    );
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_api_requests_get_precise_errors_and_change_nothing() {
    let (receiver, _dir, daemon, c) = started().await;
    c.hook("frank", "f1", "human please").await;
    receiver.wait_for("frank", 1).await;
    let conv = c.conversation_of("frank").await;
    let id = conv["id"].as_u64().unwrap();
    let path = format!("/api/v1/conversations/{id}");

    let nobody = c.with_token("");
    let forged =
        c.with_token("sbt_0000000000000000000000000000000000000000000000000000000000000000");
    assert_eq!(nobody.get(&path).await.0, StatusCode::UNAUTHORIZED);
    let (s, b) = forged.get(&path).await;
    assert_eq!((s, code(&b)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, b) = c.get("/api/v1/conversations/999999").await;
    assert_eq!((s, code(&b)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, b) = c.get("/api/v1/nowhere").await;
    assert_eq!((s, code(&b)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, b) = c.get("/api/v1/conversations?status=open").await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, b) = c.get("/api/v1/conversations/-1").await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{b}"
    );
    let (s, b) = c.get("/api/v1/conversations?limit=abc").await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{b}"
    );
    let (s, b) = c.get("/api/v1/conversations?limit=0").await;
    assert_eq!((s, code(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid"));
    let (s, b) = c.send("TRACE", "/api/v1/agents", None).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let (s, b) = c.get("/api/v1/conversations?cursor=zzz").await;
    assert_eq!((s, code(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid"));

    let raw = |body: &'static str, ct: &'static str| {
        let c = c.clone();
        let url = daemon.url(&format!("{path}/messages"));
        async move {
            let r = c
                .http
                .post(url)
                .bearer_auth(&c.token)
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            let s = r.status();
            (s, r.json::<Value>().await.unwrap())
        }
    };
    let (s, b) = raw("{\"text\": ", "application/json").await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "malformed_json"));
    let (s, b) = raw("{\"text\": \"hi\"}", "text/plain").await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    let (s, b) = raw("{\"txet\": \"hi\"}", "application/json").await;
    assert_eq!((s, code(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid"));
    let big = json!({"text": "z".repeat(70_000)});
    let (s, b) = c.post(&format!("{path}/messages"), big).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let (s, b) = c
        .post(&format!("{path}/messages"), json!({"text": "   "}))
        .await;
    assert_eq!((s, code(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid"));
    let (s, b) = c.post(&format!("{path}/reopen"), json!({})).await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "invalid_transition"));
    let (s, b) = c
        .post(&format!("{path}/assign"), json!({"agent_id": 424242}))
        .await;
    assert_eq!((s, code(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid"));
    let (s, b) = c
        .post(&format!("{path}/snooze"), json!({"until_ms": 1}))
        .await;
    assert_eq!((s, code(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid"));

    // Non-admins cannot manage agents.
    let (s, created) = c.post("/api/v1/agents", json!({"name": "Grace"})).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let grace = c.with_token(created["token"].as_str().unwrap());
    assert_eq!(grace.get("/api/v1/me").await.1["name"], "Grace");
    let (s, b) = grace
        .post("/api/v1/agents", json!({"name": "Mallory"}))
        .await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "forbidden"));
    let (s, _) = grace.get("/api/v1/agents").await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (_, after) = c.get(&path).await;
    assert_eq!(after["conversation"], conv.clone(), "nothing changed");
    assert_eq!(after["messages"].as_array().unwrap().len(), 2);

    // Disabling and rotating take effect at once.
    let grace_id = created["agent"]["id"].as_u64().unwrap();
    let (s, rotated) = c
        .post(&format!("/api/v1/agents/{grace_id}/token"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        grace.get("/api/v1/me").await.0,
        StatusCode::UNAUTHORIZED,
        "old token revoked"
    );
    let grace = c.with_token(rotated["token"].as_str().unwrap());
    assert_eq!(grace.get("/api/v1/me").await.0, StatusCode::OK);
    c.post(&format!("/api/v1/agents/{grace_id}/disable"), json!({}))
        .await;
    assert_eq!(
        grace.get("/api/v1/me").await.0,
        StatusCode::UNAUTHORIZED,
        "disabled"
    );
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_exists_and_requires_a_token() {
    let (_receiver, _dir, daemon, c) = started().await;
    let r = c
        .http
        .get(daemon.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{}", paths.len());
    let nobody = c.with_token("");
    let mut checked = 0;
    for (path, ops) in paths {
        let concrete = path.replace("{id}", "1").replace("{seq}", "1");
        for method in ops.as_object().unwrap().keys() {
            // Signing in is the one route without a credential: a wrong token is refused.
            let body = match (method.as_str(), path.as_str()) {
                ("get", _) => None,
                ("post", "/api/v1/session") => Some(json!({"token": "sbt_wrong"})),
                _ => Some(json!({})),
            };
            let (status, b) = nobody.send(&method.to_uppercase(), &concrete, body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {b}");
            checked += 1;
        }
    }
    assert!(checked >= 23, "{checked}");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            c.http.get(daemon.url(path)).send().await.unwrap().status(),
            StatusCode::OK,
            "{path}"
        );
    }
    // Readiness details (disk, channels' errors) only to an agent.
    let anonymous: Value = c
        .http
        .get(daemon.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(anonymous, json!({ "status": "ready" }));
    let (_, detailed) = c.get("/readyz").await;
    assert!(
        detailed["disk"].is_object() && detailed["channels"].is_object(),
        "{detailed}"
    );
    daemon.stop();
}

/// Reads Server-Sent Events until `n` arrived: `(id, event, data)`.
async fn read_sse(mut resp: reqwest::Response, n: usize) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("events in time")
            .unwrap()
            .expect("stream open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().into();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().into();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if !data.is_empty() {
                out.push((id, event, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_is_live_filterable_and_resumable() {
    let (receiver, _dir, daemon, c) = started().await;
    let live = c
        .http
        .get(daemon.url("/api/v1/events?types=status_changed,message_received"))
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    c.hook("gina", "g1", "I want a human").await;
    let got = read_sse(live, 2).await;
    assert_eq!(got[0].1, "message_received");
    assert_eq!(got[1].1, "status_changed");
    assert_eq!(got[1].2["to"], "queued");
    receiver.wait_for("gina", 1).await;

    // Resume after the first event: the second is replayed from the store.
    let first_id = got[0].0.clone();
    let resumed = c
        .http
        .get(daemon.url("/api/v1/events?types=status_changed,message_received"))
        .bearer_auth(&c.token)
        .header("last-event-id", &first_id)
        .send()
        .await
        .unwrap();
    let replayed = read_sse(resumed, 1).await;
    assert_eq!(replayed[0].0, got[1].0);

    // Without a token: refused.
    let r = c
        .http
        .get(daemon.url("/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_chat_session_gets_bot_and_agent_replies() {
    let (_receiver, _dir, daemon, c) = started().await;
    let r = c
        .http
        .post(daemon.url("/chat/chat/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let session: Value = r.json().await.unwrap();
    let token = session["token"].as_str().unwrap().to_owned();
    let events = c
        .http
        .get(daemon.url(&format!("/chat/chat/events?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);

    let say = |text: &'static str, id: &'static str| {
        let c = c.clone();
        let url = daemon.url("/chat/chat/messages");
        let token = token.clone();
        async move {
            let r = c
                .http
                .post(url)
                .bearer_auth(token)
                .json(&json!({"text": text, "client_message_id": id}))
                .send()
                .await
                .unwrap();
            r.status()
        }
    };
    assert_eq!(
        say("How much is shipping?", "w1").await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        say("How much is shipping?", "w1").await,
        StatusCode::ACCEPTED,
        "retried send"
    );
    let got = read_sse(events, 2).await;
    assert_eq!(
        (got[0].2["from"].as_str(), got[1].2["from"].as_str()),
        (Some("customer"), Some("bot"))
    );
    // The answer's light Markdown: plain text, and safe HTML for the widget.
    assert!(
        got[1].2["text"]
            .as_str()
            .unwrap()
            .contains("Delivery is free for orders over 49")
    );
    assert!(
        got[1].2["html"]
            .as_str()
            .unwrap()
            .contains("Delivery is <b>free</b> for"),
        "{:?}",
        got[1].2
    );

    // The agent sees it and replies; the reply lands in the transcript.
    let (_, page) = c.get("/api/v1/conversations?channel=chat").await;
    let id = page["items"][0]["id"].as_u64().unwrap();
    let (s, _) = c
        .post(
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": "Anything else? **<b>as typed</b>**"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let transcript = eventually(10, "agent reply in transcript", async || {
        let r = c
            .http
            .get(daemon.url("/chat/chat/transcript"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let t: Value = r.json().await.unwrap();
        let entries = t["entries"].as_array().unwrap().clone();
        (entries.len() == 3).then_some(entries)
    })
    .await;
    assert_eq!(transcript[2]["from"], "agent");
    assert_eq!(transcript[2]["name"], "admin");
    // What an agent types is never interpreted.
    assert_eq!(transcript[2]["text"], "Anything else? **<b>as typed</b>**");
    assert!(transcript[2].get("html").is_none());

    // Resume after the bot's entry: only the agent's reply comes.
    let resumed = c
        .http
        .get(daemon.url(&format!("/chat/chat/events?token={token}")))
        .header("last-event-id", got[1].0.clone())
        .send()
        .await
        .unwrap();
    let rest = read_sse(resumed, 1).await;
    assert_eq!(rest[0].2["text"], "Anything else? **<b>as typed</b>**");

    let forged = format!(
        "{}.{}",
        session["session_id"].as_str().unwrap(),
        "00".repeat(32)
    );
    let r = c
        .http
        .get(daemon.url("/chat/chat/transcript"))
        .bearer_auth(forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_merge_and_history_spans_channels() {
    let (receiver, _dir, daemon, c) = started().await;
    c.hook("hana", "h1", "How do I return an item?").await;
    receiver.wait_for("hana", 1).await;
    let token = c.chat_session().await;
    c.http
        .post(daemon.url("/chat/chat/messages"))
        .bearer_auth(&token)
        .json(&json!({"text": "refund"}))
        .send()
        .await
        .unwrap();

    let hook_conv = c.conversation_of("hana").await;
    let (_, chat_page) = c.get("/api/v1/conversations?channel=chat").await;
    let chat_conv = chat_page["items"][0].clone();
    let (keep, other) = (
        hook_conv["contact"].as_u64().unwrap(),
        chat_conv["contact"].as_u64().unwrap(),
    );
    assert_ne!(keep, other);

    let (s, merged) = c
        .post(
            &format!("/api/v1/contacts/{keep}/merge"),
            json!({"from": other}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{merged}");
    assert_eq!(merged["identities"].as_array().unwrap().len(), 2);
    let (_, history) = c
        .get(&format!("/api/v1/contacts/{keep}/conversations"))
        .await;
    let channels: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel"].as_str().unwrap())
        .collect();
    assert_eq!(channels, ["hook", "chat"]);
    // The old id still resolves, to the merged contact.
    let (_, old) = c.get(&format!("/api/v1/contacts/{other}")).await;
    assert_eq!(old["id"].as_u64(), Some(keep));
    let (s, b) = c
        .post(
            &format!("/api/v1/contacts/{keep}/merge"),
            json!({"from": other}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid"));
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_priority_notes_and_filters() {
    let (receiver, _dir, daemon, c) = started().await;
    for user in ["ivy", "jon"] {
        c.hook(user, &format!("{user}-1"), "talk to a person").await;
        receiver.wait_for(user, 1).await;
    }
    let ivy = c.conversation_of("ivy").await["id"].as_u64().unwrap();
    let (s, conv) = c
        .send(
            "PUT",
            &format!("/api/v1/conversations/{ivy}/labels"),
            Some(json!({"labels": ["VIP", "refund"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(conv["labels"], json!(["refund", "vip"]));
    let (s, conv) = c
        .send(
            "PUT",
            &format!("/api/v1/conversations/{ivy}/priority"),
            Some(json!({"priority": "urgent"})),
        )
        .await;
    assert_eq!(
        (s, conv["priority"].as_str()),
        (StatusCode::OK, Some("urgent"))
    );
    let (s, note) = c
        .post(
            &format!("/api/v1/conversations/{ivy}/notes"),
            json!({"text": "called her back"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{note}");
    let (_, vip) = c.get("/api/v1/conversations?label=vip&status=queued").await;
    assert_eq!(vip["items"].as_array().unwrap().len(), 1);
    assert_eq!(vip["items"][0]["id"].as_u64(), Some(ivy));
    let (_, mine) = c.get("/api/v1/conversations?assignee=me").await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 0);
    c.post(&format!("/api/v1/conversations/{ivy}/claim"), json!({}))
        .await;
    let (_, mine) = c.get("/api/v1/conversations?assignee=me").await;
    assert_eq!(mine["items"][0]["id"].as_u64(), Some(ivy));
    let (_, d) = c.get(&format!("/api/v1/conversations/{ivy}")).await;
    assert_eq!(d["notes"][0]["text"], "called her back");
    assert_eq!(
        receiver.texts_for("ivy").len(),
        1,
        "notes never reach the customer"
    );
    // Snoozed until a moment from now: it comes back to its agent by itself.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 500;
    let (s, snoozed) = c
        .post(
            &format!("/api/v1/conversations/{ivy}/snooze"),
            json!({"until_ms": until}),
        )
        .await;
    assert_eq!(
        (s, snoozed["status"].as_str()),
        (StatusCode::OK, Some("snoozed"))
    );
    let woken = eventually(10, "snooze ends", async || {
        let (_, d) = c.get(&format!("/api/v1/conversations/{ivy}")).await;
        (d["conversation"]["status"] == "assigned").then_some(d)
    })
    .await;
    let last = woken["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["reason"].as_str(), last["actor"]["kind"].as_str()),
        (Some("snooze ended"), Some("system"))
    );
    // Paging through queued one at a time reaches both, then ends.
    let (_, p1) = c.get("/api/v1/conversations?limit=1&order=oldest").await;
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = c
        .get(&format!(
            "/api/v1/conversations?limit=1&order=oldest&cursor={cursor}"
        ))
        .await;
    assert_ne!(p1["items"][0]["id"], p2["items"][0]["id"]);
    assert!(p2["next_cursor"].is_null());
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_open_event_streams_stops_cleanly_and_quickly() {
    let (_receiver, _dir, daemon, c) = started().await;
    let agent_stream = c
        .http
        .get(daemon.url("/api/v1/events"))
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap();
    let token = c.chat_session().await;
    let chat_stream = c
        .http
        .get(daemon.url(&format!("/chat/chat/events?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (agent_stream.status(), chat_stream.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let started = std::time::Instant::now();
    // `stop` asserts a clean exit; both streams are still held open here.
    daemon.stop();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    drop((agent_stream, chat_stream));
}

/// Signs in as the page does; returns the session cookie (`sb_session=...`) and CSRF token.
async fn sign_in(c: &support::Client, token: &str) -> (String, String) {
    let r = c
        .http
        .post(format!("{}/api/v1/session", c.base))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    let body: Value = r.json().await.unwrap();
    assert!(body["agent"].get("token_hash").is_none(), "{body}");
    let cookie = set.split(';').next().unwrap().to_owned();
    (cookie, body["csrf"].as_str().unwrap().to_owned())
}

/// A request with the session cookie (and a CSRF header when given).
async fn with_cookie(
    c: &support::Client,
    method: &str,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = c
        .http
        .request(method, format!("{}{path}", c.base))
        .header("cookie", cookie);
    if let Some(t) = csrf {
        req = req.header("x-csrf-token", t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_sessions_need_csrf_for_changes_and_end_on_sign_out_or_rotation() {
    let (_receiver, _dir, daemon, c) = started().await;
    let (s, _) = c
        .http
        .post(daemon.url("/api/v1/session"))
        .json(&json!({"token": "sbt_wrong_token_0000000000000000000000000000"}))
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let (cookie, csrf) = sign_in(&c, support::ADMIN_TOKEN).await;
    let (s, me) = with_cookie(&c, "GET", "/api/v1/me", &cookie, None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["name"], "admin");
    assert!(me.get("token_hash").is_none(), "{me}");
    let (s, again) = with_cookie(&c, "GET", "/api/v1/session", &cookie, None, None).await;
    assert_eq!(
        (s, again["csrf"].as_str()),
        (StatusCode::OK, Some(csrf.as_str()))
    );

    // A change with the cookie alone, or with a wrong token, is refused and changes nothing.
    let online = json!({"presence": "online"});
    for token in [None, Some("0".repeat(64).as_str())] {
        let (s, _) = with_cookie(
            &c,
            "PUT",
            "/api/v1/me/presence",
            &cookie,
            token,
            Some(online.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    // With the right token but from another site's page (a leaked token, say): refused too.
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let r = c
            .http
            .put(daemon.url("/api/v1/me/presence"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .header(name, value)
            .json(&online)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{name}: {value}");
    }
    let (_, team) = c.get("/api/v1/team").await;
    assert_eq!(team[0]["presence"], "offline", "{team}");
    let (s, me) = with_cookie(
        &c,
        "PUT",
        "/api/v1/me/presence",
        &cookie,
        Some(&csrf),
        Some(online),
    )
    .await;
    assert_eq!((s, &me["presence"]), (StatusCode::OK, &json!("online")));
    let (_, team) = c.get("/api/v1/team").await;
    assert_eq!(team[0]["presence"], "online", "{team}");
    let (s, _) = c
        .send(
            "PUT",
            "/api/v1/me/presence",
            Some(json!({"presence": "asleep"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // Rotating an agent's token ends that agent's sessions.
    let (_, grace) = c.post("/api/v1/agents", json!({"name": "Grace"})).await;
    let grace_token = grace["token"].as_str().unwrap();
    let grace_id = grace["agent"]["id"].as_u64().unwrap();
    assert!(grace["agent"].get("token_hash").is_none(), "{grace}");
    let (grace_cookie, _) = sign_in(&c, grace_token).await;
    let me_as_grace = with_cookie(&c, "GET", "/api/v1/me", &grace_cookie, None, None).await;
    assert_eq!(me_as_grace.1["name"], "Grace");
    let (s, _) = c
        .post(&format!("/api/v1/agents/{grace_id}/token"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = with_cookie(&c, "GET", "/api/v1/me", &grace_cookie, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Signing out ends the session and clears the cookie.
    let r = c
        .http
        .delete(daemon.url("/api/v1/session"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (s, _) = with_cookie(&c, "GET", "/api/v1/me", &cookie, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canned_responses_are_kept_and_conversations_found_by_text_or_contact() {
    let (_receiver, _dir, daemon, c) = started().await;
    let body = |shortcut: &str| json!({"shortcut": shortcut, "title": "Refund timing", "text": "Refunds take 5 days."});
    let (s, refund) = c.post("/api/v1/canned", body("/Refund")).await;
    assert_eq!(s, StatusCode::CREATED, "{refund}");
    assert_eq!(refund["shortcut"], "refund");
    let (s, _) = c.post("/api/v1/canned", body("refund")).await;
    assert_eq!(s, StatusCode::CONFLICT, "taken");
    let (s, _) = c.post("/api/v1/canned", body("two words")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = c.post("/api/v1/canned", body("hello")).await;
    assert_eq!(s, StatusCode::CREATED);
    let id = refund["id"].as_u64().unwrap();
    let (s, edited) = c
        .send(
            "PUT",
            &format!("/api/v1/canned/{id}"),
            Some(json!({"shortcut": "refund", "title": "Refunds", "text": "Refunds take 5 working days."})),
        )
        .await;
    assert_eq!((s, &edited["title"]), (StatusCode::OK, &json!("Refunds")));
    let (_, all) = c.get("/api/v1/canned").await;
    let shortcuts: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["shortcut"].as_str().unwrap())
        .collect();
    assert_eq!(shortcuts, ["hello", "refund"]);
    assert_eq!(
        c.send("DELETE", &format!("/api/v1/canned/{id}"), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.send("DELETE", &format!("/api/v1/canned/{id}"), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(c.get("/api/v1/canned").await.1.as_array().unwrap().len(), 1);

    // Search: every word must appear in the contact, labels or messages.
    c.hook("alice", "a1", "My parcel is lost").await;
    c.hook("alice", "a2", "It was a blue teapot").await;
    c.hook("bob", "b1", "Where is my refund?").await;
    let alice = c.conversation_of("alice").await["id"].as_u64().unwrap();
    let bob = c.conversation_of("bob").await["id"].as_u64().unwrap();
    let found = async |q: &str| -> Vec<u64> {
        let (s, page) = c.get(&format!("/api/v1/conversations?q={q}")).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(found("PARCEL").await, [alice]);
    assert_eq!(
        found("teapot%20lost").await,
        [alice],
        "words from two messages"
    );
    assert_eq!(found("bob").await, [bob], "the contact's identity");
    assert_eq!(found("parcel%20refund").await, Vec::<u64>::new());
    // Paging a search: once the bot has answered (answers move conversations up the list).
    let mut seen = Value::Null;
    eventually(10, "the bot done", async || {
        let (_, now) = c.get("/api/v1/conversations").await;
        let settled = now["items"] == seen["items"];
        seen = now;
        tokio::time::sleep(Duration::from_millis(300)).await;
        settled.then_some(())
    })
    .await;
    let (_, page) = c.get("/api/v1/conversations?q=my&limit=1").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let next = page["next_cursor"].as_str().expect("more to search");
    let (_, rest) = c
        .get(&format!("/api/v1/conversations?q=my&limit=1&cursor={next}"))
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1, "{rest}");
    assert_ne!(rest["items"][0]["id"], page["items"][0]["id"]);
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_chat_serves_its_widget_and_page_and_answers_allowed_origins() {
    let dir = tempfile::tempdir().unwrap();
    support::write_config(
        dir.path(),
        "http://127.0.0.1:9/unused",
        "title = \"Shop & <Support>\"\nallowed_origins = [\"https://shop.example\"]",
    );
    let daemon = support::Daemon::start(dir.path());
    let c = support::Client::new(&daemon);

    let r = c
        .http
        .get(daemon.url("/chat/chat/widget.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let page = c.http.get(daemon.url("/chat/chat")).send().await.unwrap();
    assert!(page.headers().contains_key("content-security-policy"));
    let page = page.text().await.unwrap();
    assert!(page.contains("data-channel=\"chat\""), "{page}");
    assert!(
        page.contains("Shop &amp; &lt;Support&gt;"),
        "escaped: {page}"
    );

    // A preflight from the shop is answered; one from elsewhere gets no CORS grant.
    let preflight = |origin: &'static str| {
        c.http
            .request(reqwest::Method::OPTIONS, daemon.url("/chat/chat/messages"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let ok = preflight("https://shop.example").await.unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert!(
        ok.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));

    // A button press: stored and shown as the label pressed, the payload kept for the bot.
    let token = c.chat_session().await;
    let r = c
        .http
        .post(daemon.url("/chat/chat/messages"))
        .bearer_auth(&token)
        .header("origin", "https://shop.example")
        .json(&json!({"text": "kb:refund-time-en", "label": "When do I get my refund?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let transcript: Value = serde_json::from_str(&c.chat_transcript(&token).await).unwrap();
    assert_eq!(transcript["entries"][0]["text"], "When do I get my refund?");
    let (_, list) = c.get("/api/v1/conversations?channel=chat").await;
    let id = list["items"][0]["id"].as_u64().unwrap();
    let said = c.customer_messages(id).await;
    assert_eq!(said[0]["text"], "When do I get my refund?");
    assert_eq!(said[0]["payload"], "kb:refund-time-en");
    daemon.stop();
}

/// Every documented route × {malformed credential, revoked token, agent, admin}: nothing
/// answers a bad or revoked credential; agents meet 403 exactly on the admin routes; admins
/// never do. (No credential at all: `every_documented_route_exists_and_requires_a_token`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_over_every_documented_route() {
    let (_receiver, _dir, daemon, c) = started().await;
    let (_, doc) = c.get("/api/v1/openapi.json").await;
    let (_, ana) = c.post("/api/v1/agents", json!({"name": "Ana"})).await;
    let agent = c.with_token(ana["token"].as_str().unwrap());
    let (_, old) = c.post("/api/v1/agents", json!({"name": "Old"})).await;
    let old_id = old["agent"]["id"].as_u64().unwrap();
    let revoked = c.with_token(old["token"].as_str().unwrap());
    c.post(&format!("/api/v1/agents/{old_id}/token"), json!({}))
        .await;
    let malformed = [c.with_token("sbt_not_a_real_token"), c.with_token("x")];
    let admin_only: std::collections::BTreeSet<&str> = [
        "get /api/v1/admin/stats",
        "post /api/v1/admin/backup",
        "get /api/v1/agents",
        "post /api/v1/agents",
        "post /api/v1/agents/{id}/disable",
        "post /api/v1/agents/{id}/enable",
        // Another agent's token (here the admin's).
        "post /api/v1/agents/{id}/token",
        "post /api/v1/contacts/{id}/forget",
        "post /api/v1/kb/import",
        "post /api/v1/kb/proposals/{id}/approve",
        "post /api/v1/kb/proposals/{id}/reject",
        "post /api/v1/kb/reload",
    ]
    .into_iter()
    .collect();
    let admin_id = c.get("/api/v1/me").await.1["id"].as_u64().unwrap();
    let mut forbidden_for_agent = std::collections::BTreeSet::new();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        if path == "/api/v1/session" {
            continue; // signing in takes the token in the body
        }
        let concrete = path
            .replace("{id}", &admin_id.to_string())
            .replace("{seq}", "1")
            .replace("{blob}", &"0".repeat(64));
        for method in ops.as_object().unwrap().keys() {
            let m = method.to_uppercase();
            let body = (method != "get").then(|| json!({}));
            // Destructive admin actions are checked with credentials that must fail only.
            let destructive =
                path.ends_with("/forget") || path.ends_with("/disable") || path.ends_with("/token");
            for (who, client) in malformed.iter().chain([&revoked]).enumerate() {
                let (status, b) = client.send(&m, &concrete, body.clone()).await;
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "credential {who}: {m} {path}: {b}"
                );
            }
            if path.ends_with("/events") {
                // A stream that stays open: only the refusals above apply here.
                checked += 1;
                continue;
            }
            if !destructive || !admin_only.contains(format!("{method} {path}").as_str()) {
                let (status, _) = agent.send(&m, &concrete, body.clone()).await;
                assert_ne!(status, StatusCode::UNAUTHORIZED, "agent: {m} {path}");
                if status == StatusCode::FORBIDDEN {
                    forbidden_for_agent.insert(format!("{method} {path}"));
                }
            } else {
                let (status, _) = agent.send(&m, &concrete, body.clone()).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "agent: {m} {path}");
                forbidden_for_agent.insert(format!("{method} {path}"));
            }
            if !destructive {
                let (status, b) = c.send(&m, &concrete, body.clone()).await;
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "admin: {m} {path}: {status} {b}"
                );
            }
            checked += 1;
        }
    }
    let forbidden: Vec<&str> = forbidden_for_agent.iter().map(String::as_str).collect();
    let expected: Vec<&str> = admin_only.iter().copied().collect();
    assert_eq!(
        forbidden, expected,
        "agents are refused exactly the admin routes"
    );
    assert!(checked >= 40, "{checked} operations");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_endpoints_limit_each_customer_each_address_and_streams_per_agent() {
    let receiver = support::Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(
        dir.path(),
        &receiver.url,
        "max_messages_per_minute = 2\nmax_streams_per_session = 2",
    );
    support::edit_config(
        &config,
        &[
            ("max_messages_per_minute = 0", "max_messages_per_minute = 3"),
            (
                "max_body_bytes = 65536",
                "max_body_bytes = 65536\nrequests_per_minute_per_ip = 6\nmax_event_streams_per_agent = 2\nmax_chat_streams_per_ip = 3",
            ),
        ],
    );
    let daemon = support::Daemon::start(dir.path());
    let c = support::Client::new(&daemon);

    // Web hook: per customer (the caller is one trusted system, so not per address).
    for i in 1..=3 {
        assert_eq!(
            c.hook("rita", &format!("r{i}"), "hi").await.0,
            StatusCode::ACCEPTED
        );
    }
    let forged = json!({"external_user": "rita", "message_id": "f1", "text": "x"}).to_string();
    let (status, _) = c
        .hook_raw(forged.as_bytes(), "application/json", Some("wrong"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "refused before counting");
    let (status, body) = c.hook("rita", "r4", "hi").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(code(&body), "rate_limited");
    assert_eq!(c.hook("sam", "s1", "hi").await.0, StatusCode::ACCEPTED);
    let texts = c.customer_texts(c.conversation_of("rita").await["id"].as_u64().unwrap());
    assert_eq!(texts.await.len(), 3, "the refused message was not stored");

    // Web chat: per session, and every public request per address.
    let chat_message = async |token: &str| {
        let r = c
            .http
            .post(daemon.url("/chat/chat/messages"))
            .bearer_auth(token)
            .json(&json!({ "text": "hello" }))
            .send()
            .await
            .unwrap();
        let retry = r.headers().get("retry-after").cloned();
        (
            r.status(),
            retry,
            r.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let first = c.chat_session().await; // 1 of 6 from this address
    assert_eq!(chat_message(&first).await.0, StatusCode::ACCEPTED); // 2
    assert_eq!(chat_message(&first).await.0, StatusCode::ACCEPTED); // 3
    let (status, retry, body) = chat_message(&first).await; // 4: the session's third
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let wait: u64 = retry.unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "Retry-After {wait}");
    let second = c.chat_session().await; // 5
    assert_eq!(chat_message(&second).await.0, StatusCode::ACCEPTED); // 6
    let (status, retry, body) = chat_message(&second).await; // the address is spent
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("address"),
        "{body}"
    );
    assert!(retry.is_some());
    // Sign-in has its own allowance per address: the chat flood above does not lock agents
    // out, guessing does; a forged X-Forwarded-For is not believed without a proxy.
    let sign_in = async || {
        c.http
            .post(daemon.url("/api/v1/session"))
            .header("x-forwarded-for", "203.0.113.9")
            .json(&json!({ "token": "sbt_guess" }))
            .send()
            .await
            .unwrap()
            .status()
    };
    for _ in 0..6 {
        assert_eq!(sign_in().await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(sign_in().await, StatusCode::TOO_MANY_REQUESTS);
    // Agents' own API is not limited by address.
    assert_eq!(c.get("/api/v1/conversations").await.0, StatusCode::OK);

    // Event streams: two per agent at once.
    let stream = || {
        c.http
            .get(daemon.url("/api/v1/events"))
            .bearer_auth(&c.token)
            .send()
    };
    let one = stream().await.unwrap();
    let two = stream().await.unwrap();
    assert_eq!(
        (one.status(), two.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let three = stream().await.unwrap();
    assert_eq!(three.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(one);
    let again = eventually(10, "a stream freed", async || {
        let r = stream().await.unwrap();
        (r.status() == StatusCode::OK).then_some(r)
    })
    .await;
    drop((two, again));

    // Web chat event streams: two per session, three per address, each refusal a 429 that
    // says why, asks to wait and closes its connection.
    let chat_stream = async |token: &str| {
        c.http
            .get(daemon.url(&format!("/chat/chat/events?token={token}")))
            .send()
            .await
            .unwrap()
    };
    let refused = async |r: reqwest::Response, why: &str| {
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(r.headers().contains_key("retry-after"));
        assert_eq!(r.headers()["connection"], "close");
        let body: Value = r.json().await.unwrap();
        assert_eq!(code(&body), "too_many_streams");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(why),
            "{body}"
        );
    };
    let a1 = chat_stream(&first).await;
    let a2 = chat_stream(&first).await;
    assert_eq!((a1.status(), a2.status()), (StatusCode::OK, StatusCode::OK));
    refused(chat_stream(&first).await, "session").await;
    let b1 = chat_stream(&second).await;
    assert_eq!(b1.status(), StatusCode::OK);
    refused(chat_stream(&second).await, "address").await;
    let (_, metrics) = c.get_text("/metrics").await;
    for line in [
        "switchboard_chat_streams 3",
        "switchboard_chat_streams_refused_total{limit=\"session\"} 1",
        "switchboard_chat_streams_refused_total{limit=\"address\"} 1",
    ] {
        assert!(metrics.contains(line), "{line}:\n{metrics}");
    }
    drop(a1);
    let b2 = eventually(10, "the address's place freed", async || {
        let r = chat_stream(&second).await;
        (r.status() == StatusCode::OK).then_some(r)
    })
    .await;
    drop((a2, b1, b2));
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_chat_token_reaches_only_its_own_conversation() {
    let (_receiver, _dir, daemon, c) = started().await;
    let (ann, bob) = (c.chat_session().await, c.chat_session().await);
    let say = async |token: &str, text: &str| {
        c.http
            .post(daemon.url("/chat/chat/messages"))
            .bearer_auth(token)
            .json(&json!({ "text": text }))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(
        say(&ann, "ann's private question").await,
        StatusCode::ACCEPTED
    );
    assert_eq!(say(&bob, "bob asks too").await, StatusCode::ACCEPTED);
    eventually(10, "both transcripts", async || {
        let (a, b) = (c.chat_transcript(&ann).await, c.chat_transcript(&bob).await);
        (a.contains("ann's private") && b.contains("bob asks")).then_some(())
    })
    .await;
    assert!(!c.chat_transcript(&bob).await.contains("ann's private"));
    assert!(!c.chat_transcript(&ann).await.contains("bob asks"));

    // Bob's session id with a signature made up, or Ann's signature: refused.
    let (bob_id, bob_sig) = bob.split_once('.').unwrap();
    let ann_sig = ann.split_once('.').unwrap().1;
    let flipped = format!(
        "{}{}",
        &bob_sig[..63],
        if bob_sig.ends_with('0') { '1' } else { '0' }
    );
    for forged in [
        format!("{bob_id}.{ann_sig}"),
        format!("{bob_id}.{flipped}"),
        bob_id.to_owned(),
        // Another session id (one character changed) with Ann's signature.
        {
            let ann_id = ann.split_once('.').unwrap().0;
            let other = if ann_id.starts_with('0') { '1' } else { '0' };
            format!("{other}{}.{ann_sig}", &ann_id[1..])
        },
    ] {
        let r = c
            .http
            .get(daemon.url("/chat/chat/transcript"))
            .bearer_auth(&forged)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{forged}");
        assert_eq!(
            say(&forged, "x").await,
            StatusCode::UNAUTHORIZED,
            "{forged}"
        );
        let events = daemon.url(&format!("/chat/chat/events?token={forged}"));
        let r = c.http.get(events).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{forged}");
    }
    // A chat token is no agent credential.
    let (status, _) = c.with_token(&ann).get("/api/v1/conversations").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_transcripts_page_and_the_view_holds_the_newest() {
    let (_receiver, _dir, daemon, c) = started().await;
    for i in 1..=5 {
        c.hook("lena", &format!("l{i}"), &format!("line {i}")).await;
    }
    let id = c.conversation_of("lena").await["id"].as_u64().unwrap();
    let (status, page) = c
        .get(&format!(
            "/api/v1/conversations/{id}/messages?after=0&limit=2"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let seqs = |p: &Value| -> Vec<u64> {
        p["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(seqs(&page), [1, 2]);
    assert_eq!(page["next_after"], 2);
    let all = c.messages(id).await;
    let (_, view) = c.get(&format!("/api/v1/conversations/{id}")).await;
    assert_eq!(view["older_messages"], false);
    assert_eq!(all.len(), view["messages"].as_array().unwrap().len());
    let last = all.last().unwrap()["seq"].as_u64().unwrap();
    let (_, end) = c
        .get(&format!("/api/v1/conversations/{id}/messages?after={last}"))
        .await;
    assert_eq!((seqs(&end).len(), end["next_after"].is_null()), (0, true));
    let (status, _) = c.get("/api/v1/conversations/999999/messages").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_the_client_picks_are_unique_per_customer_not_per_channel() {
    let (_receiver, _dir, daemon, c) = started().await;
    // Web hook: two customers of one calling system both number their messages from 1.
    let (status, first) = c.hook("顾客甲", "1", "我的订单还没发货 orderlate").await;
    assert_eq!(
        (status, first["status"].as_str()),
        (StatusCode::ACCEPTED, Some("accepted"))
    );
    let (status, second) = c.hook("顾客乙", "1", "请给我回电话 callmehook").await;
    assert_eq!(
        (status, second["status"].as_str()),
        (StatusCode::ACCEPTED, Some("accepted")),
        "{second}"
    );
    let (_, again) = c.hook("顾客乙", "1", "请给我回电话 callmehook").await;
    assert_eq!(again["status"], "duplicate", "{again}");

    // Web chat: two sessions whose apps both count their messages from 1.
    let say = async |token: &str, text: &str| {
        let r = c
            .http
            .post(daemon.url("/chat/chat/messages"))
            .bearer_auth(token)
            .json(&json!({ "text": text, "client_message_id": "1" }))
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()["status"].clone()
    };
    let (a, b) = (c.chat_session().await, c.chat_session().await);
    assert_eq!(say(&a, "第一位顾客 firstchat").await, "accepted");
    assert_eq!(say(&b, "第二位顾客，很急 callmechat").await, "accepted");
    assert_eq!(say(&b, "第二位顾客，很急 callmechat").await, "duplicate");
    // Agents see every one of them.
    for word in ["callmehook", "callmechat", "orderlate", "firstchat"] {
        let (_, found) = c.get(&format!("/api/v1/conversations?q={word}")).await;
        assert_eq!(
            found["items"].as_array().map(Vec::len),
            Some(1),
            "{word}: {found}"
        );
    }
    daemon.stop();
}
