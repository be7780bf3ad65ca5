//! Every error, whatever produced it, has the contract's JSON body and shows
//! nothing of the server's internals; the OpenAPI document states the rules
//! the server enforces.

use claude_agent_http::config::StorageKind;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::point_at_fake;
use crate::helpers::*;

async fn app() -> TestApp {
    spawn_app(StorageKind::Memory).await.unwrap()
}

async fn get(app: &TestApp, path_and_query: &str) -> reqwest::Response {
    app.client
        .get(app.url(path_and_query))
        .send()
        .await
        .unwrap()
}

/// Asserts a 422 naming `field`.
async fn assert_invalid(response: reqwest::Response, field: &str) -> Value {
    let body = assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(body["fields"][0]["field"], field, "{body}");
    body
}

#[tokio::test]
async fn bad_query_strings_are_contract_422s() {
    let app = app().await;
    // No user_id at all.
    assert_invalid(get(&app, "/api/v1/skills?subdir=").await, "user_id").await;
    let body = assert_invalid(
        get(&app, "/api/v1/skills?user_id=a&user_id=b").await,
        "user_id",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("duplicate"),
        "{body}"
    );
    assert_invalid(
        get(&app, "/api/v1/sessions?user_id=a&user_id=b").await,
        "user_id",
    )
    .await;
    for bad in ["", "%FF%FE", "a%20b", "..", "%00"] {
        let response = get(&app, &format!("/api/v1/sessions?user_id={bad}")).await;
        assert_invalid(response, "user_id").await;
    }
    // Still fine when well-formed.
    assert_eq!(
        get(&app, "/api/v1/sessions?user_id=alice").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&app, "/api/v1/skills?user_id=alice&subdir=")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_session_path_that_is_not_utf8_is_session_not_found() {
    let app = app().await;
    let raw = "/api/v1/sessions/%FF%FE";
    let requests = [
        app.client.get(app.url(raw)),
        app.client.delete(app.url(raw)),
        app.client.post(app.url(&format!("{raw}/resume"))),
        app.client.get(app.url(&format!("{raw}/messages"))),
        app.client.post(app.url(&format!("{raw}/interrupt"))),
    ];
    for request in requests {
        let response = request.send().await.unwrap();
        assert_error(response, StatusCode::NOT_FOUND, "session_not_found").await;
    }
}

#[tokio::test]
async fn unknown_files_under_docs_are_contract_404s() {
    let app = app().await;
    assert_error(
        get(&app, "/docs/x").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        get(&app, "/docs/x/y.js").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // The UI itself is still served.
    let ui = get(&app, "/docs/").await;
    assert_eq!(ui.status(), StatusCode::OK);
    assert!(ui.text().await.unwrap().contains("swagger"));
}

#[tokio::test]
async fn an_unreachable_model_api_is_a_502_that_does_not_name_its_url() {
    // Port 1: nothing listens there, so the connection is refused.
    let app = spawn_app_with(StorageKind::Memory, |s| {
        point_at_fake(s, "http://127.0.0.1:1/internal-gateway");
        s.anthropic.max_retries = 0;
    })
    .await
    .unwrap();
    let id = app.new_session_id("alice").await;
    let response = app
        .client
        .post(app.url("/api/v1/chat"))
        .json(&json!({"session_id": id, "message": "hi"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(response, StatusCode::BAD_GATEWAY, "upstream_error").await;
    let detail = body["detail"].as_str().unwrap();
    for internal in ["127.0.0.1", "internal-gateway", "http://"] {
        assert!(
            !detail.contains(internal),
            "502 detail names {internal}: {detail}"
        );
    }
    assert!(detail.contains("model API"), "{detail}");
}

#[tokio::test]
async fn a_session_dir_swapped_for_a_symlink_is_a_422_without_server_paths() {
    let fake = fake_anthropic::FakeAnthropic::start().await;
    let url = fake.url();
    let app = spawn_app_with(StorageKind::Memory, move |s| point_at_fake(s, &url))
        .await
        .unwrap();
    let session = app
        .create_session(json!({"user_id": "alice", "subdir": "proj"}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let id = session["session_id"].as_str().unwrap();
    let cwd = std::path::PathBuf::from(session["cwd"].as_str().unwrap());
    let outside = test_dir();
    std::fs::remove_dir(&cwd).unwrap();
    std::os::unix::fs::symlink(outside.path(), &cwd).unwrap();
    let response = app
        .client
        .post(app.url("/api/v1/chat"))
        .json(&json!({"session_id": id, "message": "hi"}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    let base = app.settings.user.base_dir.display().to_string();
    assert!(!text.contains(&base), "422 shows a server path: {text}");
}

/// Generated clients validate with the document, so its limits must be the
/// server's: one past each limit is refused, the limit itself is not.
#[tokio::test]
async fn the_openapi_document_states_the_limits_the_server_enforces() {
    let app = app().await;
    let doc: Value = get(&app, "/openapi.json").await.json().await.unwrap();
    let schemas = &doc["components"]["schemas"];
    let user_id = &schemas["CreateSessionRequest"]["properties"]["user_id"];
    assert_eq!(user_id["pattern"], "^[A-Za-z0-9_-]{1,64}$");
    assert_eq!(user_id["maxLength"], 64);
    let subdir = &schemas["CreateSessionRequest"]["properties"]["subdir"];
    let message = &schemas["ChatRequest"]["properties"]["message"];
    assert_eq!(message["minLength"], 1);
    for (path, param) in [
        ("/api/v1/sessions", "user_id"),
        ("/api/v1/skills", "user_id"),
    ] {
        let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        let p = params.iter().find(|p| p["name"] == param).unwrap();
        assert_eq!(p["in"], "query");
        assert_eq!(p["schema"]["pattern"], user_id["pattern"], "{path} {param}");
    }

    let max_user = user_id["maxLength"].as_u64().unwrap() as usize;
    assert_eq!(
        app.create_session(json!({"user_id": "u".repeat(max_user)}))
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_invalid(
        app.create_session(json!({"user_id": "u".repeat(max_user + 1)}))
            .await,
        "user_id",
    )
    .await;

    // Characters, not bytes, in components short enough for the file system.
    let max_subdir = subdir["maxLength"].as_u64().unwrap() as usize;
    let nested = |chars: usize| {
        let half = "é".repeat(chars / 2);
        format!("{half}/{}", "é".repeat(chars - half.chars().count() - 1))
    };
    let at_limit = json!({"user_id": "alice", "subdir": nested(max_subdir)});
    assert_eq!(
        app.create_session(at_limit).await.status(),
        StatusCode::CREATED
    );
    let past = json!({"user_id": "alice", "subdir": nested(max_subdir + 1)});
    assert_invalid(app.create_session(past).await, "subdir").await;
    // Within the limit, but one component is longer than the file system allows.
    let too_long = json!({"user_id": "alice", "subdir": "é".repeat(max_subdir)});
    assert_invalid(app.create_session(too_long).await, "subdir").await;

    // No model is configured, so a message that passes validation is a 503.
    let id = app.new_session_id("alice").await;
    let max_message = message["maxLength"].as_u64().unwrap() as usize;
    let chat = |text: String| {
        app.client
            .post(app.url("/api/v1/chat"))
            .json(&json!({"session_id": id, "message": text}))
            .send()
    };
    let response = chat("é".repeat(max_message)).await.unwrap();
    assert_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream_not_configured",
    )
    .await;
    assert_invalid(chat("é".repeat(max_message + 1)).await.unwrap(), "message").await;
    assert_invalid(chat(" \n\t".into()).await.unwrap(), "message").await;
}

/// A sweep of odd requests: whatever the status, an error is the contract's
/// JSON body.
#[tokio::test]
async fn odd_requests_all_get_json_error_bodies() {
    let app = app().await;
    let c = &app.client;
    let big = "x".repeat(app.settings.api.max_body_bytes + 10);
    let requests = [
        c.post(app.url("/docs/")),
        c.post(app.url("/openapi.json")),
        c.delete(app.url("/health")),
        c.put(app.url("/api/v1/sessions")),
        c.get(app.url("/api/v1/sessions/x/unknown")),
        c.get(app.url("/%FF")),
        c.get(app.url("/docs/%FF")),
        c.post(app.url("/api/v1/chat")).body("hi"),
        c.post(app.url("/api/v1/chat"))
            .header("content-type", "application/json")
            .body(big),
        c.post(app.url("/api/v1/sessions"))
            .header("content-type", "application/json")
            .body("[1]"),
    ];
    for request in requests {
        let request = request.build().unwrap();
        let what = format!("{} {}", request.method(), request.url());
        let response = c.execute(request).await.unwrap();
        let status = response.status();
        assert!(status.is_client_error(), "{what}: {status}");
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: {status} without a JSON body: {e}"));
        assert!(
            body["error"].is_string() && body["detail"].is_string(),
            "{what}: {body}"
        );
    }
}
