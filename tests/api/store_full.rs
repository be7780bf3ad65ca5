//! A store that cannot write (a full disk, a full or failing PostgreSQL):
//! clients get 503 `store_unavailable` and `/health` reports it until writes
//! succeed again.

use std::sync::Arc;

use claude_agent_http::config::StorageKind;
use claude_agent_http::store::{SqliteStore, StoreError};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Creates sessions with `pad_bytes` of metadata until one is refused;
/// returns the ids created and the refusal.
async fn fill(app: &TestApp, pad_bytes: usize) -> (Vec<String>, reqwest::Response) {
    let mut created = Vec::new();
    for _ in 0..1000 {
        let response = app
            .create_session(json!({"user_id": "alice", "metadata": {"pad": "x".repeat(pad_bytes)}}))
            .await;
        if response.status() != StatusCode::CREATED {
            return (created, response);
        }
        let session: Value = response.json().await.unwrap();
        created.push(session["session_id"].as_str().unwrap().to_owned());
    }
    panic!("the database never filled up");
}

#[tokio::test]
async fn a_full_sqlite_database_answers_503_and_health_says_so_until_space_frees() {
    let tmp = test_dir();
    let settings = test_settings(tmp.path(), StorageKind::Sqlite);
    let path = settings.session.sqlite_path.clone();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // SQLite's own SQLITE_FULL, as on a full disk: the file may not grow
    // past 64 pages (256 KiB).
    let options = SqliteStore::connect_options(&path).pragma("max_page_count", "64");
    let store = SqliteStore::open_with(options, None).await.unwrap();
    let root = tmp.path().to_path_buf();
    let app = start_with_store(settings, Arc::new(store), root, Some(tmp)).await;
    assert_eq!(app.health().await.status(), StatusCode::OK);

    // Large sessions first, then ever smaller ones, until not even a small
    // one fits: each refusal is the contract's 503, never a 500.
    let (big, refused) = fill(&app, 30_000).await;
    assert!(big.len() >= 2, "only {} sessions fitted", big.len());
    assert_error(
        refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
    )
    .await;
    for pad in [2_000, 100] {
        let (_, refused) = fill(&app, pad).await;
        assert_error(
            refused,
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
        )
        .await;
    }

    // Reads still answer, but the service cannot take new work.
    assert_eq!(app.get_session(&big[0]).await.status(), StatusCode::OK);
    let health = app.health().await;
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "unhealthy", "{body}");
    assert_eq!(body["storage_type"], "sqlite");
    assert!(body["error"].as_str().unwrap().contains("writes"), "{body}");
    // It stays unhealthy while the database is full.
    assert_eq!(app.health().await.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Freeing space (deleting sessions frees their pages) heals it.
    for id in &big[..2] {
        assert_eq!(
            app.delete_session(id).await.status(),
            StatusCode::NO_CONTENT
        );
    }
    let health = app.health().await;
    assert_eq!(health.status(), StatusCode::OK);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "healthy", "{body}");
    app.new_session("alice").await;
}

/// PostgreSQL's own errors of the "cannot serve now" classes, raised by the
/// real server, become `Unavailable` (503); a constraint violation does not.
#[tokio::test]
async fn postgres_disk_full_and_shutdown_errors_are_store_unavailable() {
    if !pg_available().await {
        return;
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(pg_url().as_str())
        .await
        .unwrap();
    let raise = |code: &str| {
        format!("DO $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '{code}'; END $$")
    };
    for code in ["53100", "53200", "57P01", "08006", "58030", "25006"] {
        let err = sqlx::query(&raise(code)).execute(&pool).await.unwrap_err();
        assert!(
            matches!(StoreError::from(err), StoreError::Unavailable(_)),
            "{code} is an outage"
        );
    }
    for code in ["23505", "42601", "22P02"] {
        let err = sqlx::query(&raise(code)).execute(&pool).await.unwrap_err();
        assert!(
            matches!(StoreError::from(err), StoreError::Internal(_)),
            "{code} is a bug, not an outage"
        );
    }
}
