//! Per-session options, PATCH, fork, paged lists and export, over HTTP
//! against fake-anthropic, on SQLite and PostgreSQL.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use claude_agent_http::config::StorageKind;
use fake_anthropic::{FakeAnthropic, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::agent_app;
use crate::helpers::*;
use crate::on_every_backend;

impl TestApp {
    pub async fn patch_session(&self, id: &str, body: Value) -> reqwest::Response {
        self.client
            .patch(self.url(&format!("/api/v1/sessions/{id}")))
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn fork_session(&self, id: &str, body: Option<Value>) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url(&format!("/api/v1/sessions/{id}/fork")));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request sent")
    }

    pub async fn messages(&self, id: &str, query: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/api/v1/sessions/{id}/messages{query}")))
            .send()
            .await
            .expect("request sent")
    }

    /// The session's messages; panics unless 200.
    pub async fn message_list(&self, id: &str) -> Vec<Value> {
        let response = self.messages(id, "").await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Waits (bounded) until the session's turn is running.
    pub async fn wait_running(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let session: Value = self.get_session(id).await.json().await.unwrap();
            if session["turn"] == "running" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the turn did not start within 15 s");
    }
}

async fn chat_ok(app: &TestApp, id: &str, message: &str) -> Value {
    let response = app.chat(id, message).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn created(response: reqwest::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

fn system_text(request: &Value) -> String {
    match &request["system"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

on_every_backend!(
    a_sessions_options_shape_every_turn,
    sessions_options_shape_every_turn
);
async fn sessions_options_shape_every_turn(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(app) = agent_app(storage, &fake, |s| {
        s.defaults.max_turns = 10;
    })
    .await
    else {
        return;
    };
    let session = created(
        app.create_session(json!({
            "user_id": "alice",
            "model": "claude-haiku-4-5",
            "system_prompt": {"append": "Always answer like a lighthouse keeper."},
            "allowed_tools": ["Read", "Glob", "Bash"],
            "disallowed_tools": ["Bash"],
            "max_turns": 2,
        }))
        .await,
    )
    .await;
    let id = session["session_id"].as_str().unwrap();
    assert_eq!(
        session["options"],
        json!({
            "model": "claude-haiku-4-5",
            "system_prompt": {"append": "Always answer like a lighthouse keeper."},
            "allowed_tools": ["Read", "Glob", "Bash"],
            "disallowed_tools": ["Bash"],
            "max_turns": 2,
        })
    );
    let fetched: Value = app.get_session(id).await.json().await.unwrap();
    assert_eq!(fetched["options"], session["options"]);

    // The model asks for a Bash call it was not offered: refused, not run.
    fake.push(Reply::tool_use("Bash", json!({"command": "touch ran"})));
    fake.push(Reply::text("ahoy"));
    let reply = chat_ok(&app, id, "hello").await;
    assert_eq!(reply["text"], "ahoy");
    assert_eq!(reply["tool_calls"][0]["is_error"], true);
    assert!(!app.root.join("users/alice/ran").exists());

    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.body["model"], "claude-haiku-4-5");
        assert!(
            system_text(&request.body).contains("Always answer like a lighthouse keeper."),
            "{}",
            request.body["system"]
        );
        // `Read` speaks for the read-only tools, as in Claude Code's rules.
        let mut tools = tool_names(&request.body);
        tools.sort();
        assert_eq!(tools, ["Glob", "Grep", "Read"]);
    }

    // max_turns 2: a third model call is never made.
    fake.reset();
    fake.push(Reply::tool_use("Glob", json!({"pattern": "*"})));
    fake.push(Reply::tool_use("Glob", json!({"pattern": "*"})));
    fake.push(Reply::text("never asked for"));
    let reply = chat_ok(&app, id, "look around").await;
    assert_eq!(reply["stop_reason"], "max_turns");
    assert_eq!(fake.requests().len(), 2);

    // Another session on the same service keeps the defaults.
    let other = app.new_session_id("alice").await;
    fake.reset();
    chat_ok(&app, &other, "hi").await;
    let request = &fake.requests()[0].body;
    assert_eq!(request["model"], "claude-sonnet-4-6");
    assert!(!system_text(request).contains("lighthouse"));
    assert!(tool_names(request).contains(&"Bash".to_owned()));
}

#[tokio::test]
async fn options_outside_what_the_operator_allows_are_refused_and_create_nothing() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |s| {
        s.defaults.permission_mode = "acceptEdits".into();
        s.defaults.max_turns = 20;
        s.defaults.max_budget_usd = Some(1.0);
    })
    .await
    .unwrap();
    let forbidden = [json!({"system_prompt": "You are someone else."})];
    for options in forbidden {
        let mut body = json!({"user_id": "alice"});
        body.as_object_mut()
            .unwrap()
            .extend(options.as_object().unwrap().clone());
        let error = assert_error(
            app.create_session(body).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        assert!(
            error["detail"].as_str().unwrap().contains("system_prompt"),
            "{error}"
        );
    }
    for (options, field) in [
        (
            json!({"permission_mode": "bypassPermissions"}),
            "permission_mode",
        ),
        (json!({"permission_mode": "yolo"}), "permission_mode"),
        (json!({"max_turns": 21}), "max_turns"),
        (json!({"max_budget_usd": 2.5}), "max_budget_usd"),
        (
            json!({"thinking_budget_tokens": 4096}),
            "thinking_budget_tokens",
        ),
        (json!({"model": "not-a-claude-model"}), "model"),
        (json!({"disallowed_tools": ["Bash("]}), "disallowed_tools"),
        (json!({"allowed_tools": "Read"}), "allowed_tools"),
    ] {
        let mut body = json!({"user_id": "alice"});
        body.as_object_mut()
            .unwrap()
            .extend(options.as_object().unwrap().clone());
        let error = assert_error(
            app.create_session(body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert!(
            error["detail"].as_str().unwrap().contains(field),
            "{options}: {error}"
        );
    }
    let ids: Vec<String> = app.list_sessions(None).await.json().await.unwrap();
    assert!(ids.is_empty(), "{ids:?}");
    app.stop().await;

    // An operator who allows only the model.
    let app = agent_app(StorageKind::Sqlite, &fake, |s| {
        s.api.session_overrides = vec!["model".into()];
    })
    .await
    .unwrap();
    assert_error(
        app.create_session(json!({"user_id": "alice", "max_turns": 1}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let ids: Vec<String> = app.list_sessions(None).await.json().await.unwrap();
    assert!(ids.is_empty(), "{ids:?}");
    created(
        app.create_session(json!({"user_id": "alice", "model": "claude-haiku-4-5"}))
            .await,
    )
    .await;
}

on_every_backend!(
    a_patch_lands_between_turns_only,
    patch_lands_between_turns_only
);
async fn patch_lands_between_turns_only(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(app) = agent_app(storage, &fake, |_| {}).await else {
        return;
    };
    let id = app.new_session_id("alice").await;

    // While a turn runs: 409, and nothing changes.
    fake.push(Reply::text("a slow and thoughtful answer").slow(400));
    let turn = {
        let client = app.client.clone();
        let url = app.url("/api/v1/chat");
        let id = id.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"session_id": id, "message": "think"}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    app.wait_running(&id).await;
    let error = assert_error(
        app.patch_session(&id, json!({"model": "claude-haiku-4-5"}))
            .await,
        StatusCode::CONFLICT,
        "session_busy",
    )
    .await;
    assert!(
        error["detail"].as_str().unwrap().contains("turn"),
        "{error}"
    );
    assert_eq!(turn.await.unwrap(), StatusCode::OK);
    let session: Value = app.get_session(&id).await.json().await.unwrap();
    assert_eq!(session["options"], json!({}));

    // Between turns: the next turn uses the change.
    let response = app
        .patch_session(
            &id,
            json!({"model": "claude-haiku-4-5", "metadata": {"stage": "review"},
                   "system_prompt": {"append": "Reply in haiku."}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let session: Value = response.json().await.unwrap();
    assert_eq!(session["options"]["model"], "claude-haiku-4-5");
    assert_eq!(session["metadata"], json!({"stage": "review"}));
    fake.reset();
    chat_ok(&app, &id, "again").await;
    let request = &fake.requests()[0].body;
    assert_eq!(request["model"], "claude-haiku-4-5");
    assert!(system_text(request).contains("Reply in haiku."));

    // null returns an option to the default; the same checks as creation.
    let session: Value = app
        .patch_session(&id, json!({"model": null}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        session["options"],
        json!({"system_prompt": {"append": "Reply in haiku."}})
    );
    assert_eq!(session["metadata"], json!({"stage": "review"}));
    assert_error(
        app.patch_session(&id, json!({"system_prompt": "Replaced."}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_error(
        app.patch_session(&id, json!({"max_turns": 100_000})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_error(
        app.patch_session(&id, json!({"user_id": "bob"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_error(
        app.patch_session(&id, json!({"metadata": [1]})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let after: Value = app.get_session(&id).await.json().await.unwrap();
    assert_eq!(after["options"], session["options"]);
    assert_eq!(after["user_id"], "alice");
    assert_error(
        app.patch_session(&uuid::Uuid::new_v4().to_string(), json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "session_not_found",
    )
    .await;
}

on_every_backend!(a_fork_goes_its_own_way, fork_goes_its_own_way);
async fn fork_goes_its_own_way(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(app) = agent_app(storage, &fake, |_| {}).await else {
        return;
    };
    let source = created(
        app.create_session(json!({"user_id": "alice", "subdir": "proj",
            "metadata": {"team": "web"}, "model": "claude-haiku-4-5"}))
            .await,
    )
    .await;
    let id = source["session_id"].as_str().unwrap();
    fake.push(Reply::tool_use(
        "TodoWrite",
        json!({"todos": [{"content": "Plan", "status": "in_progress", "activeForm": "Planning"}]}),
    ));
    fake.push(Reply::text("first answer"));
    chat_ok(&app, id, "first question").await;
    fake.push(Reply::text("second answer"));
    chat_ok(&app, id, "second question").await;
    let original = app.message_list(id).await;
    assert_eq!(original.len(), 6);

    // The whole conversation, the same options, directory and metadata.
    let fork = created(app.fork_session(id, None).await).await;
    let fork_id = fork["session_id"].as_str().unwrap().to_owned();
    assert_ne!(fork_id, id);
    for key in [
        "user_id",
        "cwd",
        "subdir",
        "metadata",
        "options",
        "todos",
        "message_count",
    ] {
        assert_eq!(fork[key], source_now(&app, id).await[key], "{key}");
    }
    assert_eq!(fork["message_count"], 2);
    assert_eq!(app.message_list(&fork_id).await, original);

    // A turn in the fork leaves the source as it was, and the other way round.
    fake.reset();
    fake.push(Reply::text("fork answer"));
    chat_ok(&app, &fork_id, "fork question").await;
    let request = &fake.requests()[0].body;
    assert_eq!(request["model"], "claude-haiku-4-5");
    assert!(request.to_string().contains("second answer"));
    assert_eq!(app.message_list(id).await, original);
    fake.push(Reply::text("source answer"));
    chat_ok(&app, id, "source question").await;
    let forked = app.message_list(&fork_id).await;
    assert_eq!(forked.len(), 8);
    assert!(
        !serde_json::to_string(&forked)
            .unwrap()
            .contains("source answer")
    );

    // Up to a point, in another directory: the todo list as it stood there.
    let first_turn_end = original[3]["seq"].as_i64().unwrap();
    let partial = created(
        app.fork_session(
            id,
            Some(json!({"up_to_seq": first_turn_end, "subdir": "experiment"})),
        )
        .await,
    )
    .await;
    let partial_id = partial["session_id"].as_str().unwrap();
    assert!(
        partial["cwd"]
            .as_str()
            .unwrap()
            .ends_with("alice/experiment")
    );
    assert_eq!(partial["message_count"], 1);
    assert_eq!(partial["todos"][0]["content"], "Plan");
    assert_eq!(app.message_list(partial_id).await, original[..4]);
    let early = created(app.fork_session(id, Some(json!({"up_to_seq": 1}))).await).await;
    assert_eq!(early["todos"], json!([]));

    // Bad requests change nothing.
    let before: Vec<String> = app.list_sessions(None).await.json().await.unwrap();
    assert_error(
        app.fork_session(id, Some(json!({"up_to_seq": 999}))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_error(
        app.fork_session(id, Some(json!({"subdir": "../bob"})))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_error(
        app.fork_session(&uuid::Uuid::new_v4().to_string(), None)
            .await,
        StatusCode::NOT_FOUND,
        "session_not_found",
    )
    .await;
    let after: Vec<String> = app.list_sessions(None).await.json().await.unwrap();
    assert_eq!(before, after);
}

async fn source_now(app: &TestApp, id: &str) -> Value {
    app.get_session(id).await.json().await.unwrap()
}

/// The `cursor` of a `Link: <...>; rel="next"` header, if there is one.
fn next_link(response: &reqwest::Response) -> Option<String> {
    let link = response.headers().get("link")?.to_str().unwrap().to_owned();
    assert!(link.ends_with("; rel=\"next\""), "{link}");
    let url = link.trim_start_matches('<').split('>').next().unwrap();
    assert!(url.starts_with("/api/v1/sessions?"), "{url}");
    Some(url.to_owned())
}

on_every_backend!(
    pages_walk_every_session_once_while_others_are_created,
    pages_walk_every_session_once
);
async fn pages_walk_every_session_once(storage: StorageKind) {
    let Some(app) = spawn_app(storage).await else {
        return;
    };
    let mut existing = HashSet::new();
    for i in 0..23 {
        let user = if i % 3 == 0 { "bob" } else { "alice" };
        existing.insert(app.new_session_id(user).await);
    }

    // Sessions keep being created while the client pages.
    let creating = {
        let client = app.client.clone();
        let url = app.url("/api/v1/sessions");
        tokio::spawn(async move {
            let mut made = Vec::new();
            for _ in 0..15 {
                let response = client
                    .post(&url)
                    .json(&json!({"user_id": "carol"}))
                    .send()
                    .await
                    .unwrap();
                let body: Value = response.json().await.unwrap();
                made.push(body["session_id"].as_str().unwrap().to_owned());
            }
            made
        })
    };
    let mut seen: Vec<String> = Vec::new();
    let mut next = Some("/api/v1/sessions?limit=4".to_owned());
    let mut pages = 0;
    while let Some(path) = next {
        let response = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        next = next_link(&response);
        let page: Vec<String> = response.json().await.unwrap();
        assert!(page.len() <= 4);
        if next.is_some() {
            assert_eq!(page.len(), 4);
        }
        seen.extend(page);
        pages += 1;
        assert!(pages < 100, "the pages never end");
    }
    let made = creating.await.unwrap();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a session was listed twice");
    for id in &existing {
        assert!(unique.contains(id), "{id} was never listed");
    }
    for id in &seen {
        assert!(
            existing.contains(id) || made.contains(id),
            "{id} is no session"
        );
    }

    // One user's pages; the same order as the whole list.
    let all: Vec<String> = app.list_sessions(Some("bob")).await.json().await.unwrap();
    assert_eq!(all.len(), 8);
    let mut paged = Vec::new();
    let mut next = Some("/api/v1/sessions?user_id=bob&limit=3".to_owned());
    while let Some(path) = next {
        let response = app.client.get(app.url(&path)).send().await.unwrap();
        next = next_link(&response);
        paged.extend(response.json::<Vec<String>>().await.unwrap());
    }
    assert_eq!(paged, all);

    for query in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "cursor=bogus",
        "limit=2&cursor=00",
    ] {
        let response = app
            .client
            .get(app.url(&format!("/api/v1/sessions?{query}")))
            .send()
            .await
            .unwrap();
        assert_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
}

on_every_backend!(
    messages_page_and_conversations_export,
    messages_page_and_export
);
async fn messages_page_and_export(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(app) = agent_app(storage, &fake, |_| {}).await else {
        return;
    };
    let id = app.new_session_id("alice").await;
    std::fs::write(app.root.join("users/alice/notes.txt"), "```fenced```").unwrap();
    fake.push(Reply::tool_use("Read", json!({"file_path": "notes.txt"})));
    fake.push(Reply::text("The notes hold a fence."));
    chat_ok(&app, &id, "What is in notes.txt?").await;
    fake.push(Reply::text("You're welcome."));
    chat_ok(&app, &id, "Thanks!").await;
    let all = app.message_list(&id).await;
    assert_eq!(all.len(), 6);

    let page: Vec<Value> = app
        .messages(&id, "?after_seq=2&limit=3")
        .await
        .json()
        .await
        .unwrap();
    let seqs: Vec<i64> = page.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert_eq!(page[..], all[2..5]);
    let tail: Vec<Value> = app
        .messages(&id, "?after_seq=5")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tail[..], all[5..]);
    let model_view: Vec<Value> = app
        .messages(&id, "?view=model&after_seq=4&limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(model_view[..], all[4..5]);
    for query in ["?after_seq=-1", "?limit=0", "?limit=1001", "?after=3"] {
        assert_error(
            app.messages(&id, query).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }

    let export = |format: &str| {
        app.client
            .get(app.url(&format!("/api/v1/sessions/{id}/export{format}")))
            .send()
    };
    let response = export("?format=markdown").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/markdown")
    );
    assert_eq!(
        response.headers()["content-disposition"],
        format!("attachment; filename=\"session-{id}.md\"").as_str()
    );
    let markdown = response.text().await.unwrap();
    let order = [
        "## User\n\nWhat is in notes.txt?",
        "## Assistant",
        "**Tool call: Read**\n\n```json\n{\n  \"file_path\": \"notes.txt\"\n}\n```",
        "## Tool results",
        "````\n",
        "```fenced```",
        "The notes hold a fence.",
        "## User\n\nThanks!",
        "You're welcome.",
    ];
    let mut from = 0;
    for part in order {
        let at = markdown[from..]
            .find(part)
            .unwrap_or_else(|| panic!("{part:?} missing after {from} in:\n{markdown}"));
        from += at + part.len();
    }
    // The default format is Markdown.
    assert_eq!(export("").await.unwrap().text().await.unwrap(), markdown);

    let response = export("?format=json").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-disposition"],
        format!("attachment; filename=\"session-{id}.json\"").as_str()
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["session"]["session_id"], id.as_str());
    assert_eq!(body["messages"], Value::Array(all));

    assert_error(
        export("?format=pdf").await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let missing = uuid::Uuid::new_v4();
    let response = app
        .client
        .get(app.url(&format!("/api/v1/sessions/{missing}/export")))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "session_not_found").await;
}

#[tokio::test]
async fn on_postgres_another_instance_sees_options_waits_for_the_turn_and_forks() {
    if !pg_available().await {
        return;
    }
    let fake = FakeAnthropic::start().await;
    let db = fresh_db_name();
    let first = agent_app(StorageKind::Postgresql, &fake, |s| use_postgres(s, &db))
        .await
        .unwrap();
    let tmp = test_dir();
    let mut settings = test_settings(tmp.path(), StorageKind::Postgresql);
    use_postgres(&mut settings, &db);
    crate::chat::point_at_fake(&mut settings, &fake.url());
    let second = start(settings, tmp.path().to_path_buf(), Some(tmp)).await;

    let session = created(
        first
            .create_session(json!({"user_id": "alice", "max_turns": 3}))
            .await,
    )
    .await;
    let id = session["session_id"].as_str().unwrap().to_owned();

    // A turn on the first instance; a change sent to the second waits for it.
    fake.push(Reply::text("a slow answer from the first instance").slow(400));
    let turn = {
        let client = first.client.clone();
        let url = first.url("/api/v1/chat");
        let id = id.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"session_id": id, "message": "go"}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    second.wait_running(&id).await;
    assert_error(
        second
            .patch_session(&id, json!({"model": "claude-haiku-4-5"}))
            .await,
        StatusCode::CONFLICT,
        "session_busy",
    )
    .await;
    assert_eq!(turn.await.unwrap(), StatusCode::OK);
    let changed: Value = second
        .patch_session(&id, json!({"model": "claude-haiku-4-5"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        changed["options"],
        json!({"model": "claude-haiku-4-5", "max_turns": 3})
    );

    // The first instance's next turn uses what the second one stored.
    fake.reset();
    chat_ok(&first, &id, "again").await;
    assert_eq!(fake.requests()[0].body["model"], "claude-haiku-4-5");

    // A fork made on the second instance continues there on its own.
    let fork = created(second.fork_session(&id, None).await).await;
    let fork_id = fork["session_id"].as_str().unwrap();
    assert_eq!(fork["options"], changed["options"]);
    let original = first.message_list(&id).await;
    assert_eq!(second.message_list(fork_id).await, original);
    fake.push(Reply::text("only in the fork"));
    chat_ok(&second, fork_id, "fork turn").await;
    assert_eq!(first.message_list(&id).await, original);
    assert_eq!(first.message_list(fork_id).await.len(), original.len() + 2);
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn a_sessions_own_budget_stops_its_turns() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let session = created(
        app.create_session(json!({"user_id": "alice", "max_budget_usd": 0.000001}))
            .await,
    )
    .await;
    let id = session["session_id"].as_str().unwrap();
    chat_ok(&app, id, "spend a little").await;
    let error = assert_error(
        app.chat(id, "and more").await,
        StatusCode::PAYMENT_REQUIRED,
        "budget_exceeded",
    )
    .await;
    assert!(
        error["detail"].as_str().unwrap().contains("max_budget_usd"),
        "{error}"
    );
    assert_eq!(fake.requests().len(), 1);
    // Other sessions are not held to it.
    let other = app.new_session_id("alice").await;
    chat_ok(&app, &other, "hello").await;
}
