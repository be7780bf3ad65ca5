//! The session's event log over HTTP: `/events` replaying from
//! `Last-Event-ID` mid-turn and after, several viewers, a viewer on another
//! instance, following across turns, retention, deletion; async turns
//! collected from another instance; callbacks signed and retried.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use claude_agent_http::config::StorageKind;
use fake_anthropic::{FakeAnthropic, Reply};
use hmac::Mac;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::{Frames, agent_app, two_instances};
use crate::helpers::*;
use crate::on_every_backend;

impl TestApp {
    /// `GET /events` with `query` (e.g. `after=3&follow=true`) and an
    /// optional `Last-Event-ID`.
    pub async fn events(&self, id: &str, query: &str, last: Option<u64>) -> reqwest::Response {
        let mut request = self
            .client
            .get(self.url(&format!("/api/v1/sessions/{id}/events?{query}")));
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        request.send().await.expect("request sent")
    }

    pub async fn turn(&self, id: &str, turn: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/api/v1/sessions/{id}/turns/{turn}")))
            .send()
            .await
            .expect("request sent")
    }

    /// Starts an async turn and returns the 202 body.
    pub async fn chat_async(&self, id: &str, message: &str) -> Value {
        let response = self
            .chat_with(json!({"session_id": id, "message": message, "async": true}))
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        response.json().await.unwrap()
    }

    /// Polls the turn until it is no longer running (bounded).
    pub async fn finished_turn(&self, id: &str, turn: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let response = self.turn(id, turn).await;
            assert_eq!(response.status(), StatusCode::OK);
            let body: Value = response.json().await.unwrap();
            if body["status"] != "running" {
                return body;
            }
            assert!(Instant::now() < deadline, "turn still running: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The text of a turn's deltas, joined.
fn text_of(frames: &[(u64, Value)]) -> String {
    frames
        .iter()
        .filter(|(_, f)| f["type"] == "text_delta")
        .map(|(_, f)| f["text"].as_str().unwrap())
        .collect()
}

const ANSWER: &str = "one two three four five six seven eight";

async fn replay_mid_turn_and_after(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(app) = agent_app(storage, &fake, |_| {}).await else {
        return;
    };
    let id = app.new_session_id("alice").await;
    fake.push(Reply::text(ANSWER).slow(100));
    let mut live = Frames::new(
        app.chat_stream(json!({"session_id": id, "message": "count"}))
            .await,
    );
    let mut streamed = Vec::new();
    while streamed.len() < 2 {
        streamed.push(live.next_with_id().await.unwrap());
    }
    // A client that reconnects in the middle gets exactly what it missed.
    let cut = streamed[1].0;
    let replayed = Frames::new(app.events(&id, "after=0", Some(cut)).await);
    streamed.extend(live.collect_with_ids().await);
    let replayed = replayed.collect_with_ids().await;
    let rest: Vec<(u64, Value)> = streamed.iter().filter(|(i, _)| *i > cut).cloned().collect();
    assert_eq!(replayed, rest);
    assert_eq!(replayed.last().unwrap().1["type"], "done");

    // After the turn, the whole turn replays, ids and frames as streamed.
    let ids: Vec<u64> = streamed.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    let all = Frames::new(app.events(&id, "", None).await)
        .collect_with_ids()
        .await;
    assert_eq!(all, streamed);
    assert_eq!(text_of(&all), ANSWER);
    let after = Frames::new(app.events(&id, &format!("after={cut}"), None).await)
        .collect_with_ids()
        .await;
    assert_eq!(after, rest);

    // The next turn's frames follow on.
    fake.push(Reply::text("again"));
    let next = Frames::new(
        app.chat_stream(json!({"session_id": id, "message": "more"}))
            .await,
    )
    .collect_with_ids()
    .await;
    assert_eq!(next[0].0, ids.len() as u64 + 1);
    app.stop().await;
}
on_every_backend!(replay_with_last_event_id, replay_mid_turn_and_after);

#[tokio::test]
async fn bad_positions_and_unknown_sessions_are_contract_errors() {
    let app = spawn_app(StorageKind::Memory).await.unwrap();
    let id = app.new_session_id("alice").await;
    assert_error(
        app.events(&id, "after=-1", None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let response = app
        .client
        .get(app.url(&format!("/api/v1/sessions/{id}/events")))
        .header("last-event-id", "abc")
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let unknown = uuid::Uuid::new_v4();
    assert_error(
        app.events(&unknown.to_string(), "", None).await,
        StatusCode::NOT_FOUND,
        "session_not_found",
    )
    .await;
    assert_error(
        app.turn(&id, &uuid::Uuid::new_v4().to_string()).await,
        StatusCode::NOT_FOUND,
        "turn_not_found",
    )
    .await;
    assert_error(
        app.turn(&unknown.to_string(), &unknown.to_string()).await,
        StatusCode::NOT_FOUND,
        "session_not_found",
    )
    .await;
    // A session without turns replays nothing and ends.
    assert!(
        Frames::new(app.events(&id, "", None).await)
            .collect()
            .await
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn two_viewers_see_the_same_running_turn() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::text(ANSWER).slow(100));
    let started = app.chat_async(&id, "count").await;
    let events = started["events"].as_str().unwrap();
    let open = || async { Frames::new(app.client.get(app.url(events)).send().await.unwrap()) };
    let (one, two) = (open().await, open().await);
    let (one, two) = tokio::join!(one.collect_with_ids(), two.collect_with_ids());
    assert_eq!(one, two);
    assert_eq!(text_of(&one), ANSWER);
    assert_eq!(one.last().unwrap().1["type"], "done");
    app.stop().await;
}

#[tokio::test]
async fn a_viewer_on_another_instance_follows_a_live_turn() {
    if !pg_available().await {
        return;
    }
    let fake = FakeAnthropic::start().await;
    let (one, two) = two_instances(&fake).await;
    let id = one.new_session_id("alice").await;
    fake.push(Reply::text(ANSWER).slow(300));
    let started = one.chat_async(&id, "count").await;
    let turn = started["turn_id"].as_str().unwrap();
    let mut viewer = Frames::new(
        two.client
            .get(two.url(started["events"].as_str().unwrap()))
            .send()
            .await
            .unwrap(),
    );
    let first = viewer.next_with_id().await.unwrap();
    // The turn is still running on the first instance when the second shows it.
    let status: Value = two.turn(&id, turn).await.json().await.unwrap();
    assert_eq!(status["status"], "running", "{status}");
    let mut frames = vec![first];
    frames.extend(viewer.collect_with_ids().await);
    assert_eq!(text_of(&frames), ANSWER);
    assert_eq!(frames.last().unwrap().1["type"], "done");
    let ids: Vec<u64> = frames.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn follow_keeps_the_stream_open_across_turns() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Memory, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    let mut viewer = Frames::new(app.events(&id, "follow=true", None).await);
    for answer in ["first answer", "second answer"] {
        fake.push(Reply::text(answer));
        assert_eq!(app.chat(&id, "go").await.status(), StatusCode::OK);
    }
    let mut frames = Vec::new();
    while frames
        .iter()
        .filter(|(_, f): &&(u64, Value)| f["type"] == "done")
        .count()
        < 2
    {
        frames.push(viewer.next_with_id().await.unwrap());
    }
    let done: Vec<&Value> = frames
        .iter()
        .filter(|(_, f)| f["type"] == "done")
        .map(|(_, f)| f)
        .collect();
    assert_eq!(done[0]["text"], "first answer");
    assert_eq!(done[1]["text"], "second answer");
    assert_eq!(text_of(&frames), "first answersecond answer");
    app.stop().await;
}

async fn retention_keeps_the_newest_turns(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(app) = agent_app(storage, &fake, |s| s.session.event_retention.turns = 2).await else {
        return;
    };
    let id = app.new_session_id("alice").await;
    let mut turns = Vec::new();
    for answer in ["first", "second", "third"] {
        fake.push(Reply::text(answer));
        let started = app.chat_async(&id, "go").await;
        let turn = started["turn_id"].as_str().unwrap().to_owned();
        app.finished_turn(&id, &turn).await;
        turns.push(turn);
    }
    let frames = Frames::new(app.events(&id, "", None).await)
        .collect_with_ids()
        .await;
    assert_eq!(text_of(&frames), "secondthird");
    assert_error(
        app.turn(&id, &turns[0]).await,
        StatusCode::NOT_FOUND,
        "turn_not_found",
    )
    .await;
    assert_eq!(app.turn(&id, &turns[1]).await.status(), StatusCode::OK);
    app.stop().await;
}
on_every_backend!(retention, retention_keeps_the_newest_turns);

/// Rows the database holds for a session, in `table`.
async fn rows_of(app: &TestApp, table: &str, id: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE session_id = ");
    match app.settings.session.storage {
        StorageKind::Sqlite => {
            let pool = sqlx::SqlitePool::connect_with(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&app.settings.session.sqlite_path),
            )
            .await
            .unwrap();
            sqlx::query_scalar(&format!("{sql}?"))
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
        _ => {
            let mut url = pg_url();
            url.set_path(&app.settings.session.pg_database);
            let pool = sqlx::PgPool::connect(url.as_str()).await.unwrap();
            sqlx::query_scalar(&format!("{sql}$1"))
                .bind(uuid::Uuid::parse_str(id).unwrap())
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    }
}

async fn events_go_with_the_session(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(app) = agent_app(storage, &fake, |_| {}).await else {
        return;
    };
    let id = app.new_session_id("alice").await;
    let keep = app.new_session_id("alice").await;
    for session in [&id, &keep] {
        fake.push(Reply::text("hello"));
        assert_eq!(app.chat(session, "hi").await.status(), StatusCode::OK);
    }
    // Stored before the lease is released, so there as soon as /chat answers.
    assert!(rows_of(&app, "session_events", &id).await > 0);
    assert_eq!(rows_of(&app, "turns", &id).await, 1);
    assert_eq!(
        app.delete_session(&id).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(rows_of(&app, "session_events", &id).await, 0);
    assert_eq!(rows_of(&app, "turns", &id).await, 0);
    assert_error(
        app.events(&id, "", None).await,
        StatusCode::NOT_FOUND,
        "session_not_found",
    )
    .await;
    assert!(rows_of(&app, "session_events", &keep).await > 0);
    app.stop().await;
}

#[tokio::test]
async fn events_go_with_the_session_sqlite() {
    events_go_with_the_session(StorageKind::Sqlite).await;
}

#[tokio::test]
async fn events_go_with_the_session_postgresql() {
    events_go_with_the_session(StorageKind::Postgresql).await;
}

#[tokio::test]
async fn an_async_turn_is_collected_from_another_instance() {
    if !pg_available().await {
        return;
    }
    let fake = FakeAnthropic::start().await;
    let (one, two) = two_instances(&fake).await;
    let id = one.new_session_id("alice").await;
    fake.push(Reply::tool_use("Bash", json!({"command": "echo hi"})));
    fake.push(Reply::text("Said hi.").slow(100));
    let started = one.chat_async(&id, "say hi").await;
    assert_eq!(started["session_id"], id);
    assert_eq!(
        started["events"],
        format!("/api/v1/sessions/{id}/events?after=0")
    );
    let turn = started["turn_id"].as_str().unwrap();
    assert_eq!(
        started["turn"],
        format!("/api/v1/sessions/{id}/turns/{turn}")
    );
    // The session is busy while it runs, as with a synchronous turn.
    assert_error(
        one.chat(&id, "again").await,
        StatusCode::TOO_MANY_REQUESTS,
        "session_busy",
    )
    .await;

    let report = two.finished_turn(&id, turn).await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["status_code"], 200);
    let result = &report["result"];
    assert_eq!(result["session_id"], id);
    assert_eq!(result["text"], "Said hi.");
    assert_eq!(result["stop_reason"], "end_turn");
    assert_eq!(result["tool_calls"][0]["tool"], "Bash");
    assert!(report["finished_at"].is_string());

    // The events after the turn's start are exactly the turn.
    let frames = Frames::new(
        two.client
            .get(two.url(started["events"].as_str().unwrap()))
            .send()
            .await
            .unwrap(),
    )
    .collect_with_ids()
    .await;
    assert_eq!(
        frames.last().unwrap().0,
        report["last_event_id"].as_u64().unwrap()
    );
    assert_eq!(frames.last().unwrap().1["text"], "Said hi.");

    // A failed turn reports the error the synchronous call would have answered.
    fake.push(Reply::error(400, "invalid_request_error", "bad request"));
    let started = two.chat_async(&id, "fail").await;
    assert_eq!(
        started["events"],
        format!("/api/v1/sessions/{id}/events?after={}", frames.len())
    );
    let report = one
        .finished_turn(&id, started["turn_id"].as_str().unwrap())
        .await;
    assert_eq!(report["status"], "failed", "{report}");
    assert_eq!(report["status_code"], 502);
    assert_eq!(report["result"]["error"], "upstream_error");
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn async_is_refused_on_the_stream() {
    let app = spawn_app(StorageKind::Memory).await.unwrap();
    let id = app.new_session_id("alice").await;
    let response = app
        .chat_stream(json!({"session_id": id, "message": "hi", "async": true}))
        .await;
    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    app.stop().await;
}

/// What a callback receiver got: headers and body of each request.
type Received = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// A local HTTP server answering 500 to the first callback, 200 after.
async fn callback_receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let router = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State(received): State<Received>, headers: HeaderMap, body: bytes::Bytes| async move {
                    let mut all = received.lock().unwrap();
                    all.push((headers, body.to_vec()));
                    if all.len() == 1 {
                        AxumStatus::INTERNAL_SERVER_ERROR
                    } else {
                        AxumStatus::OK
                    }
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, received)
}

const SECRET: &str = "callback-secret-for-tests";

#[tokio::test]
async fn a_callback_is_signed_and_retried_after_a_500() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |s| {
        s.api.allow_callbacks = true;
        s.api.callback_secret = claude_agent_http::config::Secret::new(SECRET);
        s.tools.web_fetch.allow_private_networks = true;
    })
    .await
    .unwrap();
    let (url, received) = callback_receiver().await;
    let id = app.new_session_id("alice").await;
    fake.push(Reply::text("Called back."));
    let response = app
        .chat_with(json!({"session_id": id, "message": "hi", "async": true, "callback_url": url}))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let started: Value = response.json().await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(15);
    while received.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the callback was not retried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = received.lock().unwrap().clone();
    assert_eq!(all.len(), 2, "delivered once the receiver said 200");
    for (headers, body) in &all {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(headers["x-claude-agent-signature"], expected.as_str());
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(
            headers["x-claude-agent-turn"],
            started["turn_id"].as_str().unwrap()
        );
        let text = String::from_utf8_lossy(body);
        assert!(!text.contains(SECRET), "the secret never travels");
    }
    let report: Value = serde_json::from_slice(&all[1].1).unwrap();
    assert_eq!(report["turn_id"], started["turn_id"]);
    assert_eq!(report["status"], "completed");
    assert_eq!(report["result"]["text"], "Called back.");
    // The same report the turn endpoint gives.
    let stored = app
        .finished_turn(&id, started["turn_id"].as_str().unwrap())
        .await;
    assert_eq!(stored["result"]["text"], report["result"]["text"]);
    app.stop().await;
}

#[tokio::test]
async fn callbacks_are_refused_unless_enabled_and_never_reach_private_addresses() {
    let fake = FakeAnthropic::start().await;
    let (url, received) = callback_receiver().await;
    let body =
        |id: &str| json!({"session_id": id, "message": "hi", "async": true, "callback_url": url});

    let off = agent_app(StorageKind::Memory, &fake, |_| {}).await.unwrap();
    let id = off.new_session_id("alice").await;
    let error = assert_error(
        off.chat_with(body(&id)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(error["fields"][0]["field"], "callback_url");
    assert!(
        error["detail"]
            .as_str()
            .unwrap()
            .contains("api.allow_callbacks")
    );

    // Enabled, but 127.0.0.1 is the service's own network, as for WebFetch.
    let on = agent_app(StorageKind::Memory, &fake, |s| {
        s.api.allow_callbacks = true;
        s.api.callback_secret = claude_agent_http::config::Secret::new(SECRET);
    })
    .await
    .unwrap();
    let id2 = on.new_session_id("alice").await;
    let error = assert_error(
        on.chat_with(body(&id2)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(
        error["detail"]
            .as_str()
            .unwrap()
            .contains("allow_private_networks"),
        "{error}"
    );
    for bad in ["ftp://example.com/x", "not a url", "http:///nohost"] {
        let response = on
            .chat_with(json!({"session_id": id2, "message": "hi", "callback_url": bad}))
            .await;
        assert_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    // Nothing started: no model call, no turn, no callback.
    assert!(fake.requests().is_empty());
    for (app, id) in [(&off, &id), (&on, &id2)] {
        let session: Value = app.get_session(id).await.json().await.unwrap();
        assert_eq!(session["message_count"], 0);
    }
    assert!(received.lock().unwrap().is_empty());
    off.stop().await;
    on.stop().await;
}
