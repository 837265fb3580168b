//! The OpenAPI document as served: what utoipa derives from the handlers, completed with what
//! is true of every operation by its shape, so the document lists every status a client can
//! meet (tests/openapi.rs holds the server to it with schemathesis).
//!
//! - the security schemes (agent token, or the page's session cookie) and which operations
//!   need none;
//! - the error statuses the extractors answer: 400 for a parameter or body that cannot be
//!   read, 401 without a valid token or session, 403 for a change by cookie without its CSRF
//!   token, 404 for an id that names nothing, 413/415/422 for JSON bodies, 503 when the store
//!   cannot answer; every one with the error body;
//! - unsigned 64-bit integers bounded as the server reads them (utoipa calls them int64, whose
//!   top half the server accepts).

use serde_json::{Map, Value, json};

/// Completes `doc` (utoipa's document, as JSON).
pub fn complete(mut doc: Value) -> Value {
    let components = doc["components"].as_object_mut().expect("components");
    components.insert(
        "securitySchemes".into(),
        json!({
            "agent_token": {
                "type": "http",
                "scheme": "bearer",
                "description": "An agent's API token (`switchboard agent add`, `POST /agents`, or rotated with `POST /agents/{id}/token`)."
            },
            "session": {
                "type": "apiKey",
                "in": "cookie",
                "name": super::auth::COOKIE,
                "description": "The inbox page's sign-in (`POST /session`). Every request that changes something also sends the session's `X-CSRF-Token`."
            }
        }),
    );
    doc["security"] = json!([{ "agent_token": [] }, { "session": [] }]);
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in item.iter_mut() {
                if let Some(op) = op.as_object_mut() {
                    complete_operation(method, op);
                }
            }
        }
    }
    bound_unsigned(&mut doc);
    doc
}

fn complete_operation(method: &str, op: &mut Map<String, Value>) {
    let params = op
        .get("parameters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let in_path = params.iter().any(|p| p["in"] == "path");
    let in_query = params.iter().any(|p| p["in"] == "query");
    let json_body = op
        .get("requestBody")
        .is_some_and(|b| b["content"].get("application/json").is_some());
    let any_body = op.contains_key("requestBody");
    // An empty requirement in `security` means "no credentials needed".
    let public = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|r| r.as_object().is_some_and(Map::is_empty)));
    let changes = !matches!(method, "get" | "head" | "options");

    let mut add = Vec::new();
    if in_path || in_query || any_body {
        add.push((
            "400",
            "The request cannot be read: a malformed parameter or body.",
        ));
    }
    if !public {
        add.push(("401", "No valid agent token or session."));
        if changes {
            add.push((
                "403",
                "Not allowed: an admin's operation, or a change by session cookie without its X-CSRF-Token.",
            ));
        }
    }
    if in_path {
        add.push(("404", "Nothing has that id."));
    }
    if any_body {
        add.push(("413", "The body is larger than the configured limit."));
    }
    if json_body {
        add.push(("415", "The body is not `Content-Type: application/json`."));
    }
    if in_query || any_body {
        add.push(("422", "A value is out of range or breaks a rule."));
    }
    add.push(("503", "The store cannot answer now; nothing was changed."));

    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("responses");
    for (status, description) in add {
        responses.entry(status).or_insert_with(|| {
            json!({
                "description": description,
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } }
            })
        });
    }
}

/// `u64` fields and parameters (utoipa: int64, minimum 0) take up to 2^64 - 1.
fn bound_unsigned(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let unsigned = o.get("format").and_then(Value::as_str) == Some("int64")
                && o.get("minimum").and_then(Value::as_f64) == Some(0.0);
            if unsigned {
                o.insert("format".into(), "uint64".into());
                o.entry("maximum").or_insert(json!(u64::MAX));
            }
            o.values_mut().for_each(bound_unsigned);
        }
        Value::Array(a) => a.iter_mut().for_each(bound_unsigned),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(doc: &Value, path: &str, method: &str) -> Value {
        doc["paths"][path][method].clone()
    }

    fn statuses(op: &Value) -> Vec<String> {
        op["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn statuses_follow_the_operation_shape() {
        let doc = complete(json!({
            "components": { "schemas": {} },
            "paths": {
                "/a/{id}": {
                    "post": {
                        "parameters": [{ "name": "id", "in": "path", "schema": { "type": "integer", "format": "int64", "minimum": 0 } }],
                        "requestBody": { "content": { "application/json": {} } },
                        "responses": { "200": { "description": "ok" }, "404": { "description": "no such a" } }
                    }
                },
                "/b": { "get": { "responses": { "200": { "description": "ok" } } } },
                "/session": { "post": { "security": [{}], "requestBody": { "content": { "application/json": {} } }, "responses": {} } }
            }
        }));
        let a = op(&doc, "/a/{id}", "post");
        assert_eq!(
            statuses(&a),
            [
                "200", "400", "401", "403", "404", "413", "415", "422", "503"
            ]
        );
        assert_eq!(a["responses"]["404"]["description"], "no such a", "kept");
        assert_eq!(a["parameters"][0]["schema"]["maximum"], json!(u64::MAX));
        assert_eq!(a["parameters"][0]["schema"]["format"], "uint64");
        assert_eq!(statuses(&op(&doc, "/b", "get")), ["200", "401", "503"]);
        let sign_in = statuses(&op(&doc, "/session", "post"));
        assert!(!sign_in.contains(&"401".to_owned()), "{sign_in:?}");
        assert_eq!(doc["security"][0], json!({ "agent_token": [] }));
        assert_eq!(
            doc["components"]["securitySchemes"]["session"]["name"],
            "sb_session"
        );
    }
}
