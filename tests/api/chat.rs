//! Agent turns through the real app against fake-anthropic, which rejects
//! any request the real Messages API would reject, on SQLite and PostgreSQL.

use std::time::{Duration, Instant};

use claude_agent_http::config::StorageKind;
use fake_anthropic::{FakeAnthropic, Reply};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// An app whose model API is `fake`.
pub async fn agent_app(
    storage: StorageKind,
    fake: &FakeAnthropic,
    adjust: impl FnOnce(&mut claude_agent_http::config::Settings),
) -> Option<TestApp> {
    let url = fake.url();
    spawn_app_with(storage, move |s| {
        point_at_fake(s, &url);
        adjust(s);
    })
    .await
}

pub fn point_at_fake(settings: &mut claude_agent_http::config::Settings, url: &str) {
    settings.anthropic.base_url = url.to_owned();
    settings.anthropic.api_key = claude_agent_http::config::Secret::new("test-key");
    settings.defaults.model = "claude-sonnet-4-6".into();
}

impl TestApp {
    pub async fn chat(&self, session_id: &str, message: &str) -> reqwest::Response {
        self.chat_with(json!({"session_id": session_id, "message": message}))
            .await
    }

    pub async fn chat_with(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/chat"))
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn chat_stream(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/chat/stream"))
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn interrupt(&self, session_id: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/api/v1/sessions/{session_id}/interrupt")))
            .send()
            .await
            .expect("request sent")
    }

    /// Waits until the session's turn is idle again (bounded).
    pub async fn wait_idle(&self, session_id: &str) {
        for _ in 0..300 {
            let session: Value = self.get_session(session_id).await.json().await.unwrap();
            if session["turn"] == "idle" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("turn still running after 15 s");
    }
}

/// Reads SSE `data:` frames as they arrive.
pub struct Frames {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
    /// The SSE `id:` of the frame `next` returned last.
    pub last_id: Option<u64>,
}

impl Frames {
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        let ctype = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(ctype.starts_with("text/event-stream"), "{ctype}");
        Self {
            stream: response.bytes_stream().boxed(),
            buffer: String::new(),
            last_id: None,
        }
    }

    /// The next data frame; `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if !data.is_empty() {
                    self.last_id = block
                        .lines()
                        .find_map(|l| l.strip_prefix("id:"))
                        .map(|id| id.trim().parse().expect("SSE id is a number"));
                    return Some(serde_json::from_str(&data.join("\n")).expect("frame is JSON"));
                }
            }
            match tokio::time::timeout(Duration::from_secs(30), self.stream.next()).await {
                Ok(Some(Ok(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(_) => return None,
                Err(_) => panic!("no SSE frame within 30 s"),
            }
        }
    }

    /// The next frame with its SSE id.
    pub async fn next_with_id(&mut self) -> Option<(u64, Value)> {
        let frame = self.next().await?;
        Some((self.last_id.expect("every frame has an id"), frame))
    }

    /// Every frame to the end, with its id.
    pub async fn collect_with_ids(mut self) -> Vec<(u64, Value)> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next_with_id().await {
            frames.push(frame);
        }
        frames
    }

    pub async fn collect(mut self) -> Vec<Value> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next().await {
            frames.push(frame);
        }
        frames
    }
}

/// Two apps on one fresh PostgreSQL database, both talking to `fake` and
/// seeing the same user files, as they would on a shared volume.
pub async fn two_instances(fake: &FakeAnthropic) -> (TestApp, TestApp) {
    let db = fresh_db_name();
    let one = agent_app(StorageKind::Postgresql, fake, |s| use_postgres(s, &db))
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut settings = test_settings(tmp.path(), StorageKind::Postgresql);
    use_postgres(&mut settings, &db);
    point_at_fake(&mut settings, &fake.url());
    settings.user.base_dir = one.settings.user.base_dir.clone();
    let two = start(settings, tmp.path().to_path_buf(), Some(tmp)).await;
    (one, two)
}

fn messages_of(request: &fake_anthropic::Recorded) -> Vec<Value> {
    request.body["messages"].as_array().unwrap().clone()
}

/// Every text block of a request's messages, in order.
fn texts_sent(request: &fake_anthropic::Recorded) -> Vec<String> {
    messages_of(request)
        .iter()
        .flat_map(|m| m["content"].as_array().unwrap().clone())
        .filter_map(|b| b["text"].as_str().map(str::to_owned))
        .collect()
}

async fn plain_answer(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(app) = agent_app(storage, &fake, |_| {}).await else {
        return;
    };
    let session = app.new_session("alice").await;
    let id = session["session_id"].as_str().unwrap();

    fake.push(Reply::text("Hello Alice!"));
    let response = app.chat(id, "Hi there").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["session_id"], id);
    assert_eq!(body["text"], "Hello Alice!");
    assert_eq!(body["tool_calls"], json!([]));
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["num_turns"], 1);
    let usage = &body["usage"];
    let input = [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ]
    .iter()
    .map(|field| usage[field].as_u64().unwrap())
    .sum::<u64>();
    assert!(input > 0, "{usage}");
    assert!(usage["output_tokens"].as_u64().unwrap() > 0);
    assert!(body["cost_usd"].as_f64().unwrap() > 0.0);
    assert!(chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap()).is_ok());

    let request = &fake.requests()[0];
    assert_eq!(request.status, 200);
    assert_eq!(request.header("x-api-key"), Some("test-key"));
    assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(request.body["model"], "claude-sonnet-4-6");
    assert_eq!(request.body["stream"], true);
    assert!(
        request.body["system"][0]["text"]
            .as_str()
            .unwrap()
            .contains(session["cwd"].as_str().unwrap())
    );

    // The second turn sends the first one back.
    fake.push(Reply::text("Still here."));
    let response = app.chat(id, "Again").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        texts_sent(&fake.requests()[1]),
        ["Hi there", "Hello Alice!", "Again"]
    );
    let session: Value = app.get_session(id).await.json().await.unwrap();
    assert_eq!(session["message_count"], 2);
    assert!(session["usage"]["output_tokens"].as_u64().unwrap() > 0);

    let history: Vec<Value> = app
        .client
        .get(app.url(&format!("/api/v1/sessions/{id}/messages")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let roles: Vec<&str> = history
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(history[3]["content"][0]["text"], "Still here.");
    app.stop().await;
}

#[tokio::test]
async fn plain_answer_sqlite() {
    plain_answer(StorageKind::Sqlite).await;
}

#[tokio::test]
async fn plain_answer_postgresql() {
    plain_answer(StorageKind::Postgresql).await;
}

async fn tool_call_then_answer(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(app) = agent_app(storage, &fake, |_| {}).await else {
        return;
    };
    let session = app.new_session("alice").await;
    let id = session["session_id"].as_str().unwrap();
    let cwd = std::path::PathBuf::from(session["cwd"].as_str().unwrap());

    fake.push(Reply::tool_use(
        "Write",
        json!({"file_path": "hello.py", "content": "print('hi')\n"}),
    ));
    fake.push(Reply::text("I wrote hello.py."));
    let response = app.chat(id, "Write hello.py").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["text"], "I wrote hello.py.");
    assert_eq!(body["num_turns"], 2);
    let input = json!({"file_path": "hello.py", "content": "print('hi')\n"});
    let calls = body["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call["tool"], "Write");
    assert_eq!(call["input"], input);
    assert_eq!(call["tool_name"], "Write");
    assert_eq!(call["tool_input"], input);
    assert_eq!(call["is_error"], false);
    assert!(
        call["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{call}"
    );
    assert!(call["output"].as_str().is_some(), "{call}");
    assert_eq!(
        std::fs::read_to_string(cwd.join("hello.py")).unwrap(),
        "print('hi')\n"
    );

    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let tools: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        tools.contains(&"Write") && tools.contains(&"Bash"),
        "{tools:?}"
    );
    let sent = messages_of(&requests[1]);
    let result = &sent[2]["content"][0];
    assert_eq!(result["type"], "tool_result");
    assert_eq!(result["tool_use_id"], sent[1]["content"][0]["id"]);
    assert!(result.get("is_error").is_none_or(|e| e == false));
    app.stop().await;
}

#[tokio::test]
async fn tool_call_then_answer_sqlite() {
    tool_call_then_answer(StorageKind::Sqlite).await;
}

#[tokio::test]
async fn tool_call_then_answer_postgresql() {
    tool_call_then_answer(StorageKind::Postgresql).await;
}

#[tokio::test]
async fn several_tool_calls_in_one_message_run_in_order() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::ToolUse {
        text: Some("Let me do three things.".into()),
        calls: vec![
            (
                "Write".into(),
                json!({"file_path": "a.txt", "content": "one"}),
            ),
            (
                "Bash".into(),
                json!({"command": "cat a.txt; echo -n ' two' >> a.txt"}),
            ),
            ("Read".into(), json!({"file_path": "a.txt"})),
        ],
    });
    fake.push(Reply::text("Done."));
    let body: Value = app.chat(&id, "go").await.json().await.unwrap();
    assert_eq!(body["text"], "Done.");
    let tools: Vec<&str> = body["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["tool"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["Write", "Bash", "Read"]);
    // The chat response tells what each call gave back, in short.
    let bash = &body["tool_calls"][1];
    assert_eq!(bash["tool_name"], "Bash");
    assert_eq!(bash["is_error"], false);
    assert!(bash["output"].as_str().unwrap().contains("one"), "{bash}");
    let sent = messages_of(&fake.requests()[1]);
    let results = sent[2]["content"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert!(results[1]["content"].as_str().unwrap().contains("one"));
    assert!(
        results[2]["content"].as_str().unwrap().contains("one two"),
        "Read ran after Bash"
    );
    app.stop().await;
}

#[tokio::test]
async fn tool_calls_say_how_each_call_ended_in_short() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Memory, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::ToolUse {
        text: None,
        calls: vec![
            ("Bash".into(), json!({"command": "seq 1 1000"})),
            ("Read".into(), json!({"file_path": "missing.txt"})),
        ],
    });
    fake.push(Reply::text("Done."));
    let body: Value = app.chat(&id, "go").await.json().await.unwrap();
    let calls = body["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{body}");
    let long = calls[0]["output"].as_str().unwrap();
    assert!(long.starts_with("1\n2\n3\n"), "{long}");
    assert!(long.ends_with('…') && long.chars().count() == 201, "{long}");
    assert_eq!(calls[0]["is_error"], false);
    assert_eq!(calls[1]["is_error"], true);
    assert!(!calls[1]["output"].as_str().unwrap().is_empty());
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    // Costs are shown in micro-dollars, never with float noise.
    for cost in [&body["cost_usd"], &body["usage"]["cost_usd"]] {
        let shown = cost.to_string();
        assert!(
            shown.split('.').nth(1).is_none_or(|d| d.len() <= 6),
            "{shown}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn upstream_overload_is_retried() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::overloaded(2));
    fake.push(Reply::text("Made it."));
    let response = app.chat(&id, "hello").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["text"], "Made it.");
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [529, 529, 200]);
    app.stop().await;
}

#[tokio::test]
async fn upstream_overload_that_persists_is_a_502() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |s| s.anthropic.max_retries = 1)
        .await
        .unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::overloaded(10));
    let body = assert_error(
        app.chat(&id, "hello").await,
        StatusCode::BAD_GATEWAY,
        "upstream_error",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("529"), "{body}");
    assert_eq!(fake.requests().len(), 2);
    // The session still works once the model API recovers.
    fake.reset();
    fake.push(Reply::text("Back."));
    assert_eq!(app.chat(&id, "again").await.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn upstream_401_says_to_check_the_key() {
    let fake = FakeAnthropic::start_with(fake_anthropic::Config {
        api_key: Some("the-right-key".into()),
        ..Default::default()
    })
    .await;
    let app = agent_app(StorageKind::Memory, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    let body = assert_error(
        app.chat(&id, "hello").await,
        StatusCode::BAD_GATEWAY,
        "upstream_error",
    )
    .await;
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("ANTHROPIC_API_KEY"), "{detail}");
    assert!(
        !detail.contains("test-key"),
        "the key never reaches a response"
    );
    assert_eq!(fake.requests().len(), 1, "401 is not retried");
    app.stop().await;
}

#[tokio::test]
async fn no_key_is_503_but_sessions_work() {
    let app = spawn_app(StorageKind::Memory).await.unwrap();
    let id = app.new_session_id("alice").await;
    assert_error(
        app.chat(&id, "hello").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream_not_configured",
    )
    .await;
    let response = app
        .chat_stream(json!({"session_id": id, "message": "hi"}))
        .await;
    assert_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream_not_configured",
    )
    .await;
    let health: Value = app.health().await.json().await.unwrap();
    assert_eq!(health["status"], "healthy");
    app.stop().await;
}

#[tokio::test]
async fn chat_validation_and_unknown_sessions() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Memory, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    for (body, field) in [
        (json!({"session_id": id, "message": "   "}), "message"),
        (
            json!({"session_id": id, "message": "x".repeat(100_001)}),
            "message",
        ),
        (
            json!({"session_id": id, "message": "hi", "timeout": 0}),
            "timeout",
        ),
        (
            json!({"session_id": id, "message": "hi", "timeout": 601}),
            "timeout",
        ),
        (json!({"session_id": id}), "message"),
    ] {
        let error = assert_error(
            app.chat_with(body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(error["fields"][0]["field"], field, "{body}");
        let error = assert_error(
            app.chat_stream(body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(error["fields"][0]["field"], field, "{body}");
    }
    let ghost = uuid::Uuid::new_v4().to_string();
    assert_error(
        app.chat(&ghost, "hi").await,
        StatusCode::NOT_FOUND,
        "session_not_found",
    )
    .await;
    assert_error(
        app.chat_stream(json!({"session_id": ghost, "message": "hi"}))
            .await,
        StatusCode::NOT_FOUND,
        "session_not_found",
    )
    .await;
    assert_error(
        app.interrupt(&ghost).await,
        StatusCode::NOT_FOUND,
        "session_not_found",
    )
    .await;
    assert_error(
        app.interrupt(&id).await,
        StatusCode::CONFLICT,
        "no_turn_running",
    )
    .await;
    assert!(
        fake.requests().is_empty(),
        "bad input never reaches the model"
    );
    let session: Value = app.get_session(&id).await.json().await.unwrap();
    assert_eq!(session["message_count"], 0);
    app.stop().await;
}

async fn stream_cut_midway(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(app) = agent_app(storage, &fake, |_| {}).await else {
        return;
    };
    let id = app.new_session_id("alice").await;
    fake.push(Reply::text("one two three four five six seven eight").cut_after(6));
    let frames = Frames::new(
        app.chat_stream(json!({"session_id": id, "message": "count"}))
            .await,
    )
    .collect()
    .await;
    let last = frames.last().unwrap();
    assert_eq!(last["type"], "error", "{frames:?}");
    assert!(!last["error"].as_str().unwrap().is_empty());
    assert_eq!(
        frames
            .iter()
            .filter(|f| f["type"] == "error" || f["type"] == "done")
            .count(),
        1
    );
    let partial: String = frames
        .iter()
        .filter(|f| f["type"] == "text_delta")
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert!(!partial.is_empty());

    // The next turn works: fake-anthropic rejects an invalid history.
    fake.push(Reply::text("Recovered."));
    let response = app.chat(&id, "try again").await;
    assert_eq!(response.status(), StatusCode::OK);
    let sent = texts_sent(&fake.requests()[1]);
    assert_eq!(sent.first().map(String::as_str), Some("count"));
    assert!(sent.contains(&partial), "partial answer kept: {sent:?}");
    app.stop().await;
}

#[tokio::test]
async fn stream_cut_midway_sqlite() {
    stream_cut_midway(StorageKind::Sqlite).await;
}

#[tokio::test]
async fn stream_cut_midway_postgresql() {
    stream_cut_midway(StorageKind::Postgresql).await;
}

#[tokio::test]
async fn stream_frames_arrive_in_order_and_incrementally() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "echo tool-output"}),
    ));
    fake.push(Reply::text("alpha beta gamma delta epsilon zeta").slow(150));
    let started = Instant::now();
    let mut frames = Frames::new(
        app.chat_stream(json!({"session_id": id, "message": "go"}))
            .await,
    );
    let mut seen = Vec::new();
    let mut first_delta_at = None;
    while let Some(frame) = frames.next().await {
        if frame["type"] == "text_delta" && first_delta_at.is_none() {
            first_delta_at = Some(started.elapsed());
        }
        seen.push(frame);
    }
    let done_at = started.elapsed();
    let kinds: Vec<&str> = seen.iter().map(|f| f["type"].as_str().unwrap()).collect();
    let first_text = kinds.iter().position(|k| *k == "text_delta").unwrap();
    assert_eq!(&kinds[..first_text], ["tool_use", "tool_result"]);
    assert!(
        kinds[first_text..kinds.len() - 1]
            .iter()
            .all(|k| *k == "text_delta")
    );
    assert_eq!(kinds.last(), Some(&"done"));
    assert_eq!(seen[0]["tool_name"], "Bash");
    assert_eq!(seen[0]["tool_input"]["command"], "echo tool-output");
    // Named as the chat response names them, too.
    assert_eq!(seen[0]["tool"], "Bash");
    assert_eq!(seen[0]["input"]["command"], "echo tool-output");
    assert!(seen[1]["content"].as_str().unwrap().contains("tool-output"));
    assert_eq!(seen[1]["tool_use_id"], seen[0]["tool_use_id"]);
    // Every frame carries the reference's five keys, null where unused.
    for frame in &seen {
        for key in ["type", "text", "tool_name", "tool_input", "error"] {
            assert!(frame.get(key).is_some(), "{key} missing in {frame}");
        }
    }
    assert_eq!(seen[0]["text"], Value::Null);
    assert_eq!(seen.last().unwrap()["error"], Value::Null);
    let text: String = seen
        .iter()
        .filter(|f| f["type"] == "text_delta")
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "alpha beta gamma delta epsilon zeta");
    let done = seen.last().unwrap();
    assert_eq!(done["stop_reason"], "end_turn");
    assert_eq!(done["num_turns"], 2);
    assert!(done["usage"]["output_tokens"].as_u64().unwrap() > 0);
    let call = &done["tool_calls"][0];
    assert_eq!(call["id"], seen[0]["tool_use_id"]);
    assert_eq!(call["tool_name"], "Bash");
    assert_eq!(call["is_error"], false);
    assert!(call["output"].as_str().unwrap().contains("tool-output"));
    // The fake spaces its events 150 ms apart, so a stream that was buffered
    // to the end would deliver the first delta together with `done`.
    let first = first_delta_at.unwrap();
    assert!(
        done_at - first >= Duration::from_millis(500),
        "first delta at {first:?}, done at {done_at:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_second_message_while_a_turn_runs_is_429() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::text("a b c d e f g h").slow(200));
    let mut frames = Frames::new(
        app.chat_stream(json!({"session_id": id, "message": "long"}))
            .await,
    );
    assert_eq!(frames.next().await.unwrap()["type"], "text_delta");
    let session: Value = app.get_session(&id).await.json().await.unwrap();
    assert_eq!(session["turn"], "running");
    let health: Value = app.health().await.json().await.unwrap();
    assert_eq!(health["in_memory_clients"], 1);
    assert_error(
        app.chat(&id, "me too").await,
        StatusCode::TOO_MANY_REQUESTS,
        "session_busy",
    )
    .await;
    assert_error(
        app.chat_stream(json!({"session_id": id, "message": "me too"}))
            .await,
        StatusCode::TOO_MANY_REQUESTS,
        "session_busy",
    )
    .await;
    let rest = frames.collect().await;
    assert_eq!(rest.last().unwrap()["type"], "done");
    app.wait_idle(&id).await;
    fake.push(Reply::text("ok"));
    assert_eq!(app.chat(&id, "now").await.status(), StatusCode::OK);
    assert_eq!(
        fake.requests().len(),
        2,
        "the refused message never reached the model"
    );
    app.stop().await;
}

async fn wait_for_file(path: &std::path::Path) -> String {
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{} never appeared", path.display());
}

async fn turn_timeout(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(app) = agent_app(storage, &fake, |_| {}).await else {
        return;
    };
    let session = app.new_session("alice").await;
    let id = session["session_id"].as_str().unwrap().to_owned();
    let cwd = std::path::PathBuf::from(session["cwd"].as_str().unwrap());
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "echo $$ > pid; sleep 60"}),
    ));
    let started = Instant::now();
    let response = app
        .chat_with(json!({"session_id": id, "message": "sleep", "timeout": 2}))
        .await;
    assert_error(response, StatusCode::GATEWAY_TIMEOUT, "turn_timeout").await;
    assert!(started.elapsed() < Duration::from_secs(30));
    let pid: u32 = wait_for_file(&cwd.join("pid"))
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(!command_alive(pid, &cwd), "the tool's process was killed");
    app.wait_idle(&id).await;

    fake.push(Reply::text("Awake."));
    let response = app.chat(&id, "next").await;
    assert_eq!(response.status(), StatusCode::OK);
    let sent = messages_of(&fake.requests()[1]);
    let result = &sent[2]["content"][0];
    assert_eq!(result["type"], "tool_result");
    assert_eq!(result["is_error"], true);
    app.stop().await;
}

#[tokio::test]
async fn turn_timeout_sqlite() {
    turn_timeout(StorageKind::Sqlite).await;
}

#[tokio::test]
async fn turn_timeout_postgresql() {
    turn_timeout(StorageKind::Postgresql).await;
}

#[tokio::test]
async fn a_client_that_disconnects_does_not_lose_the_turn() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::text("this answer keeps going after the client left").slow(100));
    let mut frames = Frames::new(
        app.chat_stream(json!({"session_id": id, "message": "talk"}))
            .await,
    );
    assert_eq!(frames.next().await.unwrap()["type"], "text_delta");
    drop(frames);
    app.wait_idle(&id).await;
    fake.push(Reply::text("ok"));
    assert_eq!(
        app.chat(&id, "what did you say?").await.status(),
        StatusCode::OK
    );
    let sent = texts_sent(&fake.requests()[1]);
    assert_eq!(sent[1], "this answer keeps going after the client left");
    let session: Value = app.get_session(&id).await.json().await.unwrap();
    assert_eq!(session["message_count"], 2);
    app.stop().await;
}

#[tokio::test]
async fn interrupt_kills_the_running_tool_and_keeps_history_valid() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let session = app.new_session("alice").await;
    let id = session["session_id"].as_str().unwrap().to_owned();
    let cwd = std::path::PathBuf::from(session["cwd"].as_str().unwrap());
    fake.push(Reply::ToolUse {
        text: Some("Sleeping now.".into()),
        calls: vec![("Bash".into(), json!({"command": "echo $$ > pid; sleep 60"}))],
    });
    let mut frames = Frames::new(
        app.chat_stream(json!({"session_id": id, "message": "sleep"}))
            .await,
    );
    loop {
        let frame = frames.next().await.unwrap();
        if frame["type"] == "tool_use" {
            break;
        }
    }
    let pid: u32 = wait_for_file(&cwd.join("pid"))
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(command_alive(pid, &cwd));
    let response = app.interrupt(&id).await;
    assert_eq!(response.status(), StatusCode::OK);
    let outcome: Value = response.json().await.unwrap();
    assert_eq!(outcome["interrupted"], true);
    assert_eq!(outcome["finished"], true);
    assert!(!command_alive(pid, &cwd), "the tool's process was killed");
    let rest = frames.collect().await;
    let last = rest.last().unwrap();
    assert_eq!(last["type"], "done");
    assert_eq!(last["stop_reason"], "interrupted");
    assert_error(
        app.interrupt(&id).await,
        StatusCode::CONFLICT,
        "no_turn_running",
    )
    .await;

    fake.push(Reply::text("Ready."));
    assert_eq!(app.chat(&id, "next").await.status(), StatusCode::OK);
    let sent = messages_of(&fake.requests()[1]);
    assert_eq!(
        sent[1]["content"][0]["text"], "Sleeping now.",
        "partial assistant text kept"
    );
    assert_eq!(sent[2]["content"][0]["is_error"], true);
    app.stop().await;
}

#[tokio::test]
async fn restart_between_turns_keeps_the_conversation() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::text("First answer."));
    assert_eq!(app.chat(&id, "first").await.status(), StatusCode::OK);
    let (settings, root, tmp) = app.stop().await;
    let app = start(settings, root, tmp).await;
    fake.push(Reply::text("Second answer."));
    assert_eq!(app.chat(&id, "second").await.status(), StatusCode::OK);
    assert_eq!(
        texts_sent(&fake.requests()[1]),
        ["first", "First answer.", "second"]
    );
    app.stop().await;
}

#[tokio::test]
async fn max_turns_stops_the_loop() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |s| s.defaults.max_turns = 2)
        .await
        .unwrap();
    let id = app.new_session_id("alice").await;
    for _ in 0..3 {
        fake.push(Reply::tool_use("Bash", json!({"command": "true"})));
    }
    let body: Value = app.chat(&id, "loop").await.json().await.unwrap();
    assert_eq!(body["stop_reason"], "max_turns");
    assert_eq!(body["num_turns"], 2);
    assert_eq!(body["tool_calls"].as_array().unwrap().len(), 2);
    assert_eq!(fake.requests().len(), 2);
    fake.reset();
    fake.push(Reply::text("fine"));
    assert_eq!(app.chat(&id, "stop").await.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_session_over_budget_gets_a_clear_error() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |s| {
        s.defaults.max_budget_usd = Some(0.000_001);
    })
    .await
    .unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::text("This costs money."));
    assert_eq!(app.chat(&id, "spend").await.status(), StatusCode::OK);
    let body = assert_error(
        app.chat(&id, "more").await,
        StatusCode::PAYMENT_REQUIRED,
        "budget_exceeded",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("budget"));
    assert_eq!(fake.requests().len(), 1, "no model call over budget");
    app.stop().await;
}

#[tokio::test]
async fn two_instances_share_one_postgres_database() {
    if !pg_available().await {
        return;
    }
    let fake = FakeAnthropic::start().await;
    let (one, two) = two_instances(&fake).await;

    let id = one.new_session_id("alice").await;
    fake.push(Reply::text("Answer from two."));
    assert_eq!(two.chat(&id, "to two").await.status(), StatusCode::OK);
    fake.push(Reply::text("Answer from one."));
    assert_eq!(one.chat(&id, "to one").await.status(), StatusCode::OK);
    assert_eq!(
        texts_sent(&fake.requests()[1]),
        ["to two", "Answer from two.", "to one"]
    );

    // The same session messaged on both at once: exactly one is refused.
    fake.push(Reply::text("slow answer here").slow(300));
    fake.push(Reply::text("slow answer here").slow(300));
    let (a, b) = tokio::join!(one.chat(&id, "race"), two.chat(&id, "race"));
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
    two.stop().await;
    one.stop().await;
}

#[tokio::test]
async fn thinking_blocks_are_sent_back_verbatim() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::Thinking {
        thinking: "Let me think.".into(),
        text: "Thought about it.".into(),
    });
    let body: Value = app.chat(&id, "think").await.json().await.unwrap();
    assert_eq!(body["text"], "Thought about it.");
    fake.push(Reply::text("ok"));
    assert_eq!(app.chat(&id, "again").await.status(), StatusCode::OK);
    let sent = messages_of(&fake.requests()[1]);
    let thinking = &sent[1]["content"][0];
    assert_eq!(thinking["type"], "thinking");
    assert_eq!(thinking["thinking"], "Let me think.");
    assert_eq!(
        thinking["signature"],
        fake_anthropic::thinking_signature("Let me think.")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_crash_mid_tool_leaves_a_usable_session() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    let (settings, root, tmp) = app.stop().await;

    // What a process killed in the middle of a tool call leaves behind: the
    // turn's lease, the user message and an assistant tool_use with no result.
    {
        let store = claude_agent_http::store::open(&settings).await.unwrap();
        let session = claude_agent_http::domain::SessionId::parse(&id).unwrap();
        store
            .acquire_turn(session, uuid::Uuid::new_v4(), Duration::from_secs(300))
            .await
            .unwrap();
        store
            .append_messages(
                session,
                &[
                    claude_agent_http::store::NewMessage {
                        role: "user".into(),
                        content: json!([{"type": "text", "text": "run it"}]),
                    },
                    claude_agent_http::store::NewMessage {
                        role: "assistant".into(),
                        content: json!([{"type": "tool_use", "id": "toolu_crashed", "name": "Bash",
                                          "input": {"command": "make"}}]),
                    },
                ],
            )
            .await
            .unwrap();
    }

    let app = start(settings, root, tmp).await;
    fake.push(Reply::text("Starting over."));
    let response = app.chat(&id, "are you there?").await;
    assert_eq!(response.status(), StatusCode::OK);
    let sent = messages_of(&fake.requests()[0]);
    assert_eq!(sent.len(), 3);
    let answer = &sent[2]["content"];
    assert_eq!(answer[0]["type"], "tool_result");
    assert_eq!(answer[0]["tool_use_id"], "toolu_crashed");
    assert_eq!(answer[0]["is_error"], true);
    assert_eq!(answer[1]["text"], "are you there?");
    app.stop().await;
}

#[tokio::test]
async fn shutdown_lets_a_running_turn_finish() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::text("one two three four five").slow(150));
    let client = app.client.clone();
    let url = app.url("/api/v1/chat");
    let body = json!({"session_id": id, "message": "finish this"});
    let chat = tokio::spawn(async move { client.post(url).json(&body).send().await });
    for _ in 0..200 {
        let session: Value = app.get_session(&id).await.json().await.unwrap();
        if session["turn"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (settings, root, tmp) = app.stop().await;
    let response = chat
        .await
        .unwrap()
        .expect("the in-flight request was answered");
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["text"], "one two three four five");
    // And it was saved.
    let app = start(settings, root, tmp).await;
    let session: Value = app.get_session(&id).await.json().await.unwrap();
    assert_eq!(session["message_count"], 1);
    assert_eq!(session["turn"], "idle");
    app.stop().await;
}

#[tokio::test]
async fn an_interrupt_sent_to_another_instance_stops_the_turn() {
    if !pg_available().await {
        return;
    }
    let fake = FakeAnthropic::start().await;
    let (one, two) = two_instances(&fake).await;

    let session = one.new_session("alice").await;
    let id = session["session_id"].as_str().unwrap().to_owned();
    let cwd = std::path::PathBuf::from(session["cwd"].as_str().unwrap());
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "echo $$ > pid; sleep 60"}),
    ));
    let mut frames = Frames::new(
        one.chat_stream(json!({"session_id": id, "message": "sleep"}))
            .await,
    );
    assert_eq!(frames.next().await.unwrap()["type"], "tool_use");
    let pid: u32 = wait_for_file(&cwd.join("pid"))
        .await
        .trim()
        .parse()
        .unwrap();

    let response = two.interrupt(&id).await;
    assert_eq!(response.status(), StatusCode::OK);
    let outcome: Value = response.json().await.unwrap();
    assert_eq!(outcome["interrupted"], true);
    assert_eq!(outcome["finished"], true);
    assert!(
        !command_alive(pid, &cwd),
        "the tool on the other instance was killed"
    );
    let rest = frames.collect().await;
    assert_eq!(rest.last().unwrap()["stop_reason"], "interrupted");
    assert_error(
        two.interrupt(&id).await,
        StatusCode::CONFLICT,
        "no_turn_running",
    )
    .await;

    fake.push(Reply::text("Ready."));
    assert_eq!(two.chat(&id, "next").await.status(), StatusCode::OK);
    two.stop().await;
    one.stop().await;
}

#[tokio::test]
async fn deleting_a_session_stops_its_running_turn() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let session = app.new_session("alice").await;
    let id = session["session_id"].as_str().unwrap().to_owned();
    let cwd = std::path::PathBuf::from(session["cwd"].as_str().unwrap());
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "echo $$ > pid; sleep 60"}),
    ));
    let mut frames = Frames::new(
        app.chat_stream(json!({"session_id": id, "message": "sleep"}))
            .await,
    );
    assert_eq!(frames.next().await.unwrap()["type"], "tool_use");
    let pid: u32 = wait_for_file(&cwd.join("pid"))
        .await
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        app.delete_session(&id).await.status(),
        StatusCode::NO_CONTENT
    );
    let rest = frames.collect().await;
    let last = rest.last().unwrap();
    assert!(last["type"] == "done" || last["type"] == "error", "{last}");
    assert!(
        !command_alive(pid, &cwd),
        "the deleted session's tool was killed"
    );
    assert_error(
        app.get_session(&id).await,
        StatusCode::NOT_FOUND,
        "session_not_found",
    )
    .await;
    let health: Value = app.health().await.json().await.unwrap();
    assert_eq!(health["in_memory_clients"], 0);
    app.stop().await;
}

#[tokio::test]
async fn a_slowly_streamed_answer_is_saved_once_in_full() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    // Slow enough for the text to be saved several times while it streams.
    let text = "one two three four five six seven eight";
    fake.push(Reply::text(text).slow(100));
    let response = app.chat(&id, "count").await;
    assert_eq!(response.status(), StatusCode::OK);
    let history: Vec<Value> = app
        .client
        .get(app.url(&format!("/api/v1/sessions/{id}/messages")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let roles: Vec<&str> = history
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant"], "{history:?}");
    assert_eq!(
        history[1]["content"],
        json!([{"type": "text", "text": text}])
    );
    app.stop().await;
}
