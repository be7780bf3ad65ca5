//! People in the loop over HTTP: a call in `default` mode waits for a
//! person, who approves or denies it (on another instance sharing
//! PostgreSQL too), the model's questions are answered, and messages sent
//! while a turn runs are queued behind it. On SQLite one instance plays
//! both parts.

use std::time::Duration;

use claude_agent_http::config::{Settings, StorageKind};
use fake_anthropic::{FakeAnthropic, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::chat::{Frames, agent_app, point_at_fake};
use crate::helpers::*;

/// The instance the turn runs on, and the one a person answers on (the
/// same one on SQLite; a second instance on the same database on PostgreSQL).
struct Pair {
    runs: TestApp,
    other: Option<TestApp>,
}

impl Pair {
    fn answers(&self) -> &TestApp {
        self.other.as_ref().unwrap_or(&self.runs)
    }

    async fn stop(self) {
        if let Some(other) = self.other {
            other.stop().await;
        }
        self.runs.stop().await;
    }
}

fn default_mode(s: &mut Settings) {
    s.defaults.permission_mode = "default".into();
}

async fn pair(
    storage: StorageKind,
    fake: &FakeAnthropic,
    adjust: impl Fn(&mut Settings) + Clone + Send + 'static,
) -> Option<Pair> {
    if storage != StorageKind::Postgresql {
        let runs = agent_app(storage, fake, adjust).await?;
        return Some(Pair { runs, other: None });
    }
    let db = fresh_db_name();
    let first = adjust.clone();
    let runs = agent_app(storage, fake, move |s| {
        use_postgres(s, &db);
        first(s);
    })
    .await?;
    let tmp = tempfile::tempdir().unwrap();
    let mut settings = runs.settings.clone();
    settings.session.sqlite_path = tmp.path().join("unused.db");
    point_at_fake(&mut settings, &fake.url());
    adjust(&mut settings);
    let other = start(settings, tmp.path().to_path_buf(), Some(tmp)).await;
    Some(Pair {
        runs,
        other: Some(other),
    })
}

impl TestApp {
    async fn permissions(&self, session: &str) -> Vec<Value> {
        let response = self
            .client
            .get(self.url(&format!("/api/v1/sessions/{session}/permissions")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn questions(&self, session: &str) -> Vec<Value> {
        let response = self
            .client
            .get(self.url(&format!("/api/v1/sessions/{session}/questions")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn decide(&self, session: &str, request: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/api/v1/sessions/{session}/permissions/{request}")))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn answer(&self, session: &str, request: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/api/v1/sessions/{session}/questions/{request}")))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn turn_state(&self, session: &str) -> Value {
        let session: Value = self.get_session(session).await.json().await.unwrap();
        session["turn"].clone()
    }

    /// Sends a message in the background, as a client that waits for the answer.
    fn chat_in_background(&self, session: &str, message: &str) -> JoinHandle<(StatusCode, Value)> {
        let request = self
            .client
            .post(self.url("/api/v1/chat"))
            .json(&json!({"session_id": session, "message": message}));
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json().await.unwrap())
        })
    }
}

/// Waits (bounded) until `list` returns something, and returns it.
async fn eventually<F, Fut>(what: &str, list: F) -> Vec<Value>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Vec<Value>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let items = list().await;
        if !items.is_empty() {
            return items;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {what} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The tool results the model got in its last request: `(is_error, content)`.
fn results(fake: &FakeAnthropic) -> Vec<(bool, String)> {
    let requests = fake.requests();
    requests.last().unwrap().body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["type"] == "tool_result")
        .map(|b| {
            (
                b["is_error"] == true,
                b["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn session(app: &TestApp) -> (String, std::path::PathBuf) {
    let session = app.new_session("alice").await;
    (
        session["session_id"].as_str().unwrap().to_owned(),
        std::path::PathBuf::from(session["cwd"].as_str().unwrap()),
    )
}

async fn approved_on_the_other_instance(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(apps) = pair(storage, &fake, default_mode).await else {
        return;
    };
    let (id, cwd) = session(&apps.runs).await;
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "touch approved.txt"}),
    ));
    fake.push(Reply::text("done"));
    let chat = apps.runs.chat_in_background(&id, "make the file");

    let other = apps.answers();
    let pending = eventually("permission request", || other.permissions(&id)).await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["tool_name"], "Bash");
    assert_eq!(pending[0]["tool_input"]["command"], "touch approved.txt");
    assert!(
        pending[0]["reason"]
            .as_str()
            .unwrap()
            .contains("permission mode is default"),
        "{pending:?}"
    );
    assert_eq!(other.turn_state(&id).await, "waiting_for_permission");
    assert!(
        !cwd.join("approved.txt").exists(),
        "nothing runs before approval"
    );
    let request = pending[0]["request_id"].as_str().unwrap().to_owned();

    // Bad bodies and unknown ids change nothing.
    let bad = other
        .decide(&id, &request, json!({"decision": "maybe"}))
        .await;
    assert_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let bad = other
        .decide(
            &id,
            &request,
            json!({"decision": "deny", "updated_input": {"command": "ls"}}),
        )
        .await;
    assert_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let unknown = other
        .decide(
            &id,
            &uuid::Uuid::new_v4().to_string(),
            json!({"decision": "allow"}),
        )
        .await;
    assert_error(unknown, StatusCode::NOT_FOUND, "request_not_found").await;
    let not_a_uuid = other
        .decide(&id, "not-a-uuid", json!({"decision": "allow"}))
        .await;
    assert_error(not_a_uuid, StatusCode::NOT_FOUND, "request_not_found").await;
    assert_eq!(other.permissions(&id).await.len(), 1);

    let decided = other
        .decide(&id, &request, json!({"decision": "allow"}))
        .await;
    assert_eq!(decided.status(), StatusCode::OK);
    let decided: Value = decided.json().await.unwrap();
    assert_eq!(decided["decision"], "allow");
    let again = other
        .decide(&id, &request, json!({"decision": "deny"}))
        .await;
    assert_error(again, StatusCode::CONFLICT, "already_answered").await;

    let (status, body) = chat.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tool_calls"][0]["is_error"], false, "{body}");
    assert!(cwd.join("approved.txt").exists());
    let asked = &body["permission_requests"][0];
    assert_eq!(asked["request_id"], request.as_str());
    assert_eq!(asked["tool_name"], "Bash");
    assert_eq!(asked["decision"], "allow");
    assert_eq!(asked["decided_by"], "user");
    assert!(other.permissions(&id).await.is_empty());
    assert_eq!(other.turn_state(&id).await, "idle");
    apps.stop().await;
}
crate::on_every_backend!(approved_on_another_instance, approved_on_the_other_instance);

async fn denied_with_a_message(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(apps) = pair(storage, &fake, default_mode).await else {
        return;
    };
    let (id, cwd) = session(&apps.runs).await;
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "touch denied.txt"}),
    ));
    fake.push(Reply::text("understood"));
    let chat = apps.runs.chat_in_background(&id, "make the file");
    let other = apps.answers();
    let pending = eventually("permission request", || other.permissions(&id)).await;
    let request = pending[0]["request_id"].as_str().unwrap().to_owned();
    let decided = other
        .decide(
            &id,
            &request,
            json!({"decision": "deny", "message": "not in this directory, use /tmp"}),
        )
        .await;
    assert_eq!(decided.status(), StatusCode::OK);
    let (status, body) = chat.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = results(&fake);
    assert!(results[0].0, "{results:?}");
    assert!(
        results[0].1.contains("denied") && results[0].1.contains("not in this directory, use /tmp"),
        "{results:?}"
    );
    assert!(!cwd.join("denied.txt").exists());
    assert_eq!(body["permission_requests"][0]["decision"], "deny");
    apps.stop().await;
}
crate::on_every_backend!(denied_call, denied_with_a_message);

async fn unanswered_requests_time_out(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(apps) = pair(storage, &fake, |s| {
        default_mode(s);
        s.defaults.permission_timeout_secs = 1;
    })
    .await
    else {
        return;
    };
    let (id, cwd) = session(&apps.runs).await;
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "touch late.txt"}),
    ));
    fake.push(Reply::text("nobody came"));
    let response = apps.runs.chat(&id, "make the file").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let results = results(&fake);
    assert!(
        results[0].0
            && results[0]
                .1
                .contains("Nobody answered the request for approval within 1 seconds"),
        "{results:?}"
    );
    assert!(!cwd.join("late.txt").exists());
    let asked = &body["permission_requests"][0];
    assert_eq!(asked["decision"], "deny");
    assert_eq!(asked["decided_by"], "timeout");
    let late = apps
        .answers()
        .decide(
            &id,
            asked["request_id"].as_str().unwrap(),
            json!({"decision": "allow"}),
        )
        .await;
    assert_error(late, StatusCode::CONFLICT, "already_answered").await;
    apps.stop().await;
}
crate::on_every_backend!(timed_out_request, unanswered_requests_time_out);

async fn remembered_approvals_skip_the_next_ask(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(apps) = pair(storage, &fake, default_mode).await else {
        return;
    };
    let (id, cwd) = session(&apps.runs).await;
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "touch once.txt"}),
    ));
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "touch once.txt"}),
    ));
    fake.push(Reply::text("first"));
    let chat = apps.runs.chat_in_background(&id, "make the file twice");
    let other = apps.answers();
    let pending = eventually("permission request", || other.permissions(&id)).await;
    let decided = other
        .decide(
            &id,
            pending[0]["request_id"].as_str().unwrap(),
            json!({"decision": "allow", "remember": "session"}),
        )
        .await;
    assert_eq!(decided.status(), StatusCode::OK);
    let decided: Value = decided.json().await.unwrap();
    assert_eq!(decided["remembered_rule"], "Bash(touch once.txt)");
    let (status, body) = chat.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(cwd.join("once.txt").exists());
    // The same call again in that turn ran without asking.
    assert_eq!(body["tool_calls"][1]["is_error"], false, "{body}");
    assert_eq!(
        body["permission_requests"].as_array().unwrap().len(),
        1,
        "{body}"
    );

    // The next turn, on the other instance where there is one, runs the
    // same call without asking; a different one still asks.
    std::fs::remove_file(cwd.join("once.txt")).unwrap();
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "touch once.txt"}),
    ));
    fake.push(Reply::text("second"));
    let response = other.chat(&id, "again").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["tool_calls"][0]["is_error"], false, "{body}");
    assert_eq!(body["permission_requests"], json!([]));
    assert!(cwd.join("once.txt").exists());
    apps.stop().await;
}
crate::on_every_backend!(remembered_approval, remembered_approvals_skip_the_next_ask);

async fn updated_input_is_what_runs(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(apps) = pair(storage, &fake, default_mode).await else {
        return;
    };
    let (id, cwd) = session(&apps.runs).await;
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "touch asked.txt"}),
    ));
    fake.push(Reply::text("done"));
    let chat = apps.runs.chat_in_background(&id, "make the file");
    let other = apps.answers();
    let pending = eventually("permission request", || other.permissions(&id)).await;
    let decided = other
        .decide(
            &id,
            pending[0]["request_id"].as_str().unwrap(),
            json!({"decision": "allow", "updated_input": {"command": "touch edited.txt"}}),
        )
        .await;
    assert_eq!(decided.status(), StatusCode::OK);
    let (status, body) = chat.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(cwd.join("edited.txt").exists());
    assert!(!cwd.join("asked.txt").exists());
    apps.stop().await;
}
crate::on_every_backend!(updated_input, updated_input_is_what_runs);

async fn an_interrupt_denies_the_waiting_call(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(apps) = pair(storage, &fake, default_mode).await else {
        return;
    };
    let (id, cwd) = session(&apps.runs).await;
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "touch never.txt"}),
    ));
    let chat = apps.runs.chat_in_background(&id, "make the file");
    let other = apps.answers();
    let pending = eventually("permission request", || other.permissions(&id)).await;
    let interrupted = other.interrupt(&id).await;
    assert_eq!(interrupted.status(), StatusCode::OK);
    let (status, body) = chat.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stop_reason"], "interrupted");
    assert_eq!(body["permission_requests"][0]["decided_by"], "interrupt");
    assert!(!cwd.join("never.txt").exists());
    assert!(other.permissions(&id).await.is_empty());
    let late = other
        .decide(
            &id,
            pending[0]["request_id"].as_str().unwrap(),
            json!({"decision": "allow"}),
        )
        .await;
    assert_error(late, StatusCode::CONFLICT, "already_answered").await;
    // The stored history ends with the denied call's result.
    let messages: Value = other
        .client
        .get(other.url(&format!("/api/v1/sessions/{id}/messages")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = messages.to_string();
    assert!(
        text.contains("interrupted the turn while being asked"),
        "{text}"
    );
    apps.stop().await;
}
crate::on_every_backend!(
    interrupt_while_waiting,
    an_interrupt_denies_the_waiting_call
);

async fn the_models_questions_are_answered(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(apps) = pair(storage, &fake, default_mode).await else {
        return;
    };
    let (id, _cwd) = session(&apps.runs).await;
    let question = "Which language should the tool use?";
    fake.push(Reply::tool_use(
        "AskUserQuestion",
        json!({"questions": [{
            "question": question,
            "header": "Language",
            "multiSelect": false,
            "options": [
                {"label": "Rust", "description": "Fast and safe"},
                {"label": "Python", "description": "Quick to write"}
            ]
        }]}),
    ));
    fake.push(Reply::text("Rust it is."));
    let response = apps
        .runs
        .chat_stream(json!({"session_id": id, "message": "write me a tool"}))
        .await;
    let mut frames = Frames::new(response);
    let asked = loop {
        let frame = frames.next().await.expect("a question frame");
        if frame["type"] == "question" {
            break frame;
        }
    };
    assert_eq!(asked["questions"][0]["question"], question);
    let other = apps.answers();
    let pending = eventually("question", || other.questions(&id)).await;
    assert_eq!(pending[0]["request_id"], asked["request_id"]);
    assert_eq!(other.turn_state(&id).await, "waiting_for_answer");
    let request = asked["request_id"].as_str().unwrap();
    let wrong = other
        .answer(
            &id,
            request,
            json!({"answers": {"Something else?": "Rust"}}),
        )
        .await;
    assert_error(wrong, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let answered = other
        .answer(&id, request, json!({"answers": {question: "Rust"}}))
        .await;
    assert_eq!(answered.status(), StatusCode::OK);
    let rest = frames.collect().await;
    assert_eq!(rest.last().unwrap()["type"], "done", "{rest:?}");
    assert_eq!(
        results(&fake),
        vec![(
            false,
            format!(
                "User has answered your questions: \"{question}\"=\"Rust\". You can now continue with the user's answers in mind."
            )
        )]
    );
    apps.stop().await;
}
crate::on_every_backend!(question_answered, the_models_questions_are_answered);

async fn a_queued_message_runs_after_the_running_turn(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(apps) = pair(storage, &fake, default_mode).await else {
        return;
    };
    let (id, _cwd) = session(&apps.runs).await;
    // The first turn waits for a person, so it is surely running when the
    // next messages arrive.
    fake.push(Reply::tool_use("Bash", json!({"command": "true"})));
    fake.push(Reply::text("first answer"));
    fake.push(Reply::text("second answer"));
    fake.push(Reply::text("third answer"));
    let chat = apps.runs.chat_in_background(&id, "first message");
    let other = apps.answers();
    let pending = eventually("permission request", || other.permissions(&id)).await;

    let busy = other.chat(&id, "not queued").await;
    assert_error(busy, StatusCode::TOO_MANY_REQUESTS, "session_busy").await;
    let queued = other
        .chat_with(json!({"session_id": id, "message": "second message", "queue": true}))
        .await;
    assert_eq!(queued.status(), StatusCode::ACCEPTED);
    let queued: Value = queued.json().await.unwrap();
    assert_eq!(queued["queued"], 1);
    let streamed = other
        .chat_stream(json!({"session_id": id, "message": "third message", "queue": true}))
        .await;
    assert_eq!(streamed.status(), StatusCode::ACCEPTED);
    let streamed: Value = streamed.json().await.unwrap();
    assert_eq!(streamed["queued"], 2);
    let session: Value = other.get_session(&id).await.json().await.unwrap();
    assert_eq!(session["queued"], 2);

    let decided = other
        .decide(
            &id,
            pending[0]["request_id"].as_str().unwrap(),
            json!({"decision": "allow"}),
        )
        .await;
    assert_eq!(decided.status(), StatusCode::OK);
    let (status, body) = chat.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["text"], "first answer");

    // The queued messages run in order, then the session is idle.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let texts = loop {
        let messages: Value = other
            .client
            .get(other.url(&format!("/api/v1/sessions/{id}/messages")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let texts: Vec<String> = messages
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
            .filter_map(|b| b["text"].as_str().map(str::to_owned))
            .collect();
        if texts.iter().any(|t| t == "third answer") {
            break texts;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "queued messages not answered within 20 s: {texts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let order: Vec<&str> = texts
        .iter()
        .map(String::as_str)
        .filter(|t| t.ends_with("message") || t.ends_with("answer"))
        .collect();
    assert_eq!(
        order,
        [
            "first message",
            "first answer",
            "second message",
            "second answer",
            "third message",
            "third answer"
        ]
    );
    other.wait_idle(&id).await;
    let session: Value = other.get_session(&id).await.json().await.unwrap();
    assert_eq!(session["queued"], 0);
    assert_eq!(session["message_count"], 3);
    apps.stop().await;
}
crate::on_every_backend!(queued_message, a_queued_message_runs_after_the_running_turn);

async fn waiting_for_a_person_does_not_count_against_the_turn_timeout(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(apps) = pair(storage, &fake, |s| {
        default_mode(s);
        s.defaults.permission_timeout_secs = 2;
    })
    .await
    else {
        return;
    };
    let (id, _cwd) = session(&apps.runs).await;
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "touch slow.txt"}),
    ));
    fake.push(Reply::text("carried on"));
    // The turn may take 1 s, the person 2 s: the turn outlives its timeout
    // only because the wait does not count.
    let response = apps
        .runs
        .chat_with(json!({"session_id": id, "message": "go", "timeout": 1}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["text"], "carried on", "{body}");
    assert_eq!(body["permission_requests"][0]["decided_by"], "timeout");
    apps.stop().await;
}
crate::on_every_backend!(
    turn_timeout_paused,
    waiting_for_a_person_does_not_count_against_the_turn_timeout
);

#[tokio::test]
async fn bad_answers_and_queue_flags_are_refused_and_change_nothing() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, default_mode)
        .await
        .unwrap();
    let (id, _cwd) = session(&app).await;
    let request = uuid::Uuid::new_v4().to_string();
    let unknown_session = app
        .decide(
            &uuid::Uuid::new_v4().to_string(),
            &request,
            json!({"decision": "allow"}),
        )
        .await;
    assert_error(unknown_session, StatusCode::NOT_FOUND, "session_not_found").await;
    let missing = app.decide(&id, &request, json!({})).await;
    assert_error(
        missing,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let not_object = app
        .decide(
            &id,
            &request,
            json!({"decision": "allow", "updated_input": "ls"}),
        )
        .await;
    assert_error(
        not_object,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let remember = app
        .decide(
            &id,
            &request,
            json!({"decision": "allow", "remember": "forever"}),
        )
        .await;
    assert_error(
        remember,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let no_answers = app.answer(&id, &request, json!({"answers": {}})).await;
    assert_error(
        no_answers,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let unknown_question = app
        .answer(&id, &request, json!({"answers": {"Q?": "A"}}))
        .await;
    assert_error(unknown_question, StatusCode::NOT_FOUND, "request_not_found").await;
    let bad_queue = app
        .chat_with(json!({"session_id": id, "message": "hi", "queue": "yes"}))
        .await;
    assert_error(
        bad_queue,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    // With no turn running a queued message simply runs.
    fake.push(Reply::text("at once"));
    let response = app
        .chat_with(json!({"session_id": id, "message": "hi", "queue": true}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["text"], "at once");
    let session: Value = app.get_session(&id).await.json().await.unwrap();
    assert_eq!(session["message_count"], 1);
    assert_eq!(session["queued"], 0);
    assert!(app.permissions(&id).await.is_empty());
    app.stop().await;
}
