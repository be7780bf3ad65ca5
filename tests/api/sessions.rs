//! The sessions API on every backend: lifecycle, validation, the path jail,
//! limits, expiry and persistence across restarts.

use std::time::Duration;

use claude_agent_http::config::StorageKind;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::on_every_backend;

async fn lifecycle(storage: StorageKind) {
    let Some(app) = spawn_app(storage).await else {
        return;
    };
    let response = app
        .create_session(json!({"user_id": "alice", "subdir": "proj/a", "metadata": {"team": "x"}}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    let id = created["session_id"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    assert_eq!(created["user_id"], "alice");
    assert_eq!(created["status"], "active");
    assert_eq!(created["message_count"], 0);
    assert_eq!(created["metadata"], json!({"team": "x"}));
    assert_eq!(created["turn"], "idle");
    let cwd = created["cwd"].as_str().unwrap();
    assert!(cwd.ends_with("/users/alice/proj/a"), "{cwd}");
    assert!(std::path::Path::new(cwd).is_dir(), "working directory made");
    for field in ["created_at", "last_active_at"] {
        let t = created[field].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(t).is_ok(),
            "{field}={t}"
        );
    }

    let other = app.new_session("bob").await;
    let all: Vec<String> = app.list_sessions(None).await.json().await.unwrap();
    assert_eq!(all.len(), 2);
    let alices: Vec<String> = app.list_sessions(Some("alice")).await.json().await.unwrap();
    assert_eq!(alices, vec![id.clone()]);
    let nobody: Vec<String> = app.list_sessions(Some("carol")).await.json().await.unwrap();
    assert!(nobody.is_empty());

    let fetched: Value = app.get_session(&id).await.json().await.unwrap();
    assert_eq!(fetched["session_id"], id.as_str());
    assert_eq!(fetched["cwd"], created["cwd"]);

    tokio::time::sleep(Duration::from_millis(5)).await;
    let resumed = app.resume_session(&id).await;
    assert_eq!(resumed.status(), StatusCode::OK);
    let resumed: Value = resumed.json().await.unwrap();
    assert!(resumed["last_active_at"].as_str() > created["last_active_at"].as_str());

    assert_eq!(
        app.delete_session(&id).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_error(
        app.get_session(&id).await,
        StatusCode::NOT_FOUND,
        "session_not_found",
    )
    .await;
    assert_error(
        app.delete_session(&id).await,
        StatusCode::NOT_FOUND,
        "session_not_found",
    )
    .await;
    assert_error(
        app.resume_session(&id).await,
        StatusCode::NOT_FOUND,
        "session_not_found",
    )
    .await;
    assert!(std::path::Path::new(cwd).is_dir(), "files stay on disk");
    let all: Vec<String> = app.list_sessions(None).await.json().await.unwrap();
    assert_eq!(all, vec![other["session_id"].as_str().unwrap().to_owned()]);
    app.stop().await;
}
on_every_backend!(session_lifecycle, lifecycle);

async fn limits(storage: StorageKind) {
    let Some(app) = spawn_app_with(storage, |s| {
        s.api.max_sessions = 3;
        s.api.max_sessions_per_user = 2;
    })
    .await
    else {
        return;
    };
    app.new_session("alice").await;
    let second = app.new_session("alice").await;
    let body = assert_error(
        app.create_session(json!({"user_id": "alice"})).await,
        StatusCode::TOO_MANY_REQUESTS,
        "session_limit",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("max_sessions_per_user")
    );
    app.new_session("bob").await;
    assert_error(
        app.create_session(json!({"user_id": "carol"})).await,
        StatusCode::TOO_MANY_REQUESTS,
        "session_limit",
    )
    .await;
    // Deleting one frees a slot.
    app.delete_session(second["session_id"].as_str().unwrap())
        .await;
    app.new_session("carol").await;
    let all: Vec<String> = app.list_sessions(None).await.json().await.unwrap();
    assert_eq!(all.len(), 3);
    app.stop().await;
}
on_every_backend!(session_limits, limits);

async fn expiry(storage: StorageKind) {
    let Some(app) = spawn_app_with(storage, |s| s.session.ttl = 1).await else {
        return;
    };
    let session = app.new_session("alice").await;
    let id = session["session_id"].as_str().unwrap();
    assert_eq!(app.get_session(id).await.status(), StatusCode::OK);
    // Expiry is defined by the clock: wait past the TTL.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_error(
        app.get_session(id).await,
        StatusCode::NOT_FOUND,
        "session_not_found",
    )
    .await;
    assert_error(
        app.resume_session(id).await,
        StatusCode::NOT_FOUND,
        "session_not_found",
    )
    .await;
    let all: Vec<String> = app.list_sessions(None).await.json().await.unwrap();
    assert!(all.is_empty());
    app.stop().await;
}
on_every_backend!(session_expiry, expiry);

#[tokio::test]
async fn restart_keeps_sqlite_sessions() {
    let app = spawn_app(StorageKind::Sqlite).await.unwrap();
    let session = app.new_session("alice").await;
    let id = session["session_id"].as_str().unwrap().to_owned();
    let (settings, root, tmp) = app.stop().await;
    let app = start(settings, root, tmp).await;
    let fetched = app.get_session(&id).await;
    assert_eq!(fetched.status(), StatusCode::OK);
    let fetched: Value = fetched.json().await.unwrap();
    assert_eq!(fetched["cwd"], session["cwd"]);
    assert_eq!(app.resume_session(&id).await.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn validation_errors_follow_the_contract() {
    let app = spawn_app(StorageKind::Memory).await.unwrap();
    for (body, field) in [
        (json!({}), "user_id"),
        (json!({"user_id": ""}), "user_id"),
        (json!({"user_id": "a/b"}), "user_id"),
        (json!({"user_id": "x".repeat(65)}), "user_id"),
        (json!({"user_id": 5}), "user_id"),
        (json!({"user_id": "a", "subdir": "/etc"}), "subdir"),
        (json!({"user_id": "a", "subdir": "../bob"}), "subdir"),
        (json!({"user_id": "a", "subdir": "x/../../bob"}), "subdir"),
        (json!({"user_id": "a", "subdir": "a\u{0}b"}), "subdir"),
        (json!({"user_id": "a", "subdir": "s".repeat(201)}), "subdir"),
        (json!({"user_id": "a", "metadata": [1, 2]}), "metadata"),
    ] {
        let response = app.create_session(body.clone()).await;
        let error = assert_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(error["fields"][0]["field"], field, "{body}");
    }
    let all: Vec<String> = app.list_sessions(None).await.json().await.unwrap();
    assert!(all.is_empty(), "bad input changes nothing");
    assert!(!app.root.join("users/bob").exists());

    assert_error(
        app.list_sessions(Some("a b")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn transport_errors_follow_the_contract() {
    let app = spawn_app(StorageKind::Memory).await.unwrap();
    let post = |body: &'static str, ctype: Option<&'static str>| {
        let mut request = app.client.post(app.url("/api/v1/sessions")).body(body);
        if let Some(ctype) = ctype {
            request = request.header("content-type", ctype);
        }
        request.send()
    };
    assert_error(
        post("{", Some("application/json")).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed_json",
    )
    .await;
    assert_error(
        post("[1]", Some("application/json")).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed_json",
    )
    .await;
    assert_error(
        post("\"x\"", Some("application/json")).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed_json",
    )
    .await;
    assert_error(
        post("{\"user_id\":\"a\"}", None).await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert_error(
        post("{\"user_id\":\"a\"}", Some("text/plain"))
            .await
            .unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let ok = post(
        "{\"user_id\":\"a\"}",
        Some("application/json; charset=utf-8"),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);

    let big = format!(
        "{{\"user_id\":\"a\",\"metadata\":{{\"x\":\"{}\"}}}}",
        "y".repeat(2 * 1024 * 1024)
    );
    let response = app
        .client
        .post(app.url("/api/v1/sessions"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    let response = app
        .client
        .get(app.url("/api/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app
        .client
        .put(app.url("/api/v1/sessions"))
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    let response = app.client.patch(app.url("/health")).send().await.unwrap();
    assert_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    assert_error(
        app.get_session("not-a-uuid").await,
        StatusCode::NOT_FOUND,
        "session_not_found",
    )
    .await;
    assert_error(
        app.get_session(&uuid::Uuid::new_v4().to_string()).await,
        StatusCode::NOT_FOUND,
        "session_not_found",
    )
    .await;

    // Every response carries a request id.
    let response = app.health().await;
    assert!(response.headers().get("x-request-id").is_some());
    app.stop().await;
}

#[tokio::test]
async fn symlinked_subdir_cannot_leave_the_user_directory() {
    let app = spawn_app(StorageKind::Memory).await.unwrap();
    let outside = tempfile::tempdir().unwrap();
    let user_dir = app.root.join("users/mallory");
    std::fs::create_dir_all(&user_dir).unwrap();
    std::os::unix::fs::symlink(outside.path(), user_dir.join("escape")).unwrap();
    // A symlink to another user's directory is an escape too.
    std::fs::create_dir_all(app.root.join("users/victim")).unwrap();
    std::os::unix::fs::symlink(app.root.join("users/victim"), user_dir.join("peer")).unwrap();

    for subdir in ["escape", "escape/deeper", "peer", "peer/x"] {
        let response = app
            .create_session(json!({"user_id": "mallory", "subdir": subdir}))
            .await;
        let error = assert_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(error["fields"][0]["field"], "subdir");
    }
    assert!(
        !outside.path().join("deeper").exists(),
        "nothing created outside"
    );
    assert!(!app.root.join("users/victim/x").exists());
    // A symlink that stays inside is fine.
    std::fs::create_dir_all(user_dir.join("real")).unwrap();
    std::os::unix::fs::symlink(user_dir.join("real"), user_dir.join("alias")).unwrap();
    let response = app
        .create_session(json!({"user_id": "mallory", "subdir": "alias"}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    app.stop().await;
}

async fn health_reports_store(storage: StorageKind) {
    let Some(app) = spawn_app(storage).await else {
        return;
    };
    app.new_session("alice").await;
    let response = app.health().await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["storage_type"], storage.as_str());
    assert_eq!(body["active_sessions"], 1);
    assert_eq!(body["in_memory_clients"], 0);
    assert!(body["memory_mb"].as_f64().unwrap() > 0.0);
    assert!(body["uptime_seconds"].is_u64());
    let root: Value = app
        .client
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(root["name"], "Claude Agent HTTP API");
    assert_eq!(root["docs"], "/docs");
    app.stop().await;
}
on_every_backend!(health, health_reports_store);

#[tokio::test]
async fn docs_are_served_from_the_binary() {
    let app = spawn_app(StorageKind::Memory).await.unwrap();
    let spec: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/health",
        "/api/v1/sessions",
        "/api/v1/sessions/{session_id}",
        "/api/v1/sessions/{session_id}/resume",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} documented");
    }
    assert!(spec["paths"]["/api/v1/sessions"]["post"]["responses"]["422"].is_object());
    let page = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger"), "Swagger UI page");
    assert!(!html.contains("cdn."), "no CDN");
    let js = app
        .client
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn postgres_database_is_created_when_missing() {
    if !pg_available().await {
        return;
    }
    let db = fresh_db_name();
    let app = spawn_app_with(StorageKind::Postgresql, |s| use_postgres(s, &db))
        .await
        .unwrap();
    let session = app.new_session("alice").await;
    // A second instance on the same database sees the session.
    let tmp = tempfile::tempdir().unwrap();
    let mut settings = test_settings(tmp.path(), StorageKind::Postgresql);
    use_postgres(&mut settings, &db);
    let second = start(settings, tmp.path().to_path_buf(), Some(tmp)).await;
    let id = session["session_id"].as_str().unwrap();
    assert_eq!(second.get_session(id).await.status(), StatusCode::OK);
    assert_eq!(second.resume_session(id).await.status(), StatusCode::OK);
    second.stop().await;
    app.stop().await;
}
