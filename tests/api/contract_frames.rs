//! The stream frames' contract: every frame of `/chat/stream` and of
//! `/events`, whatever its type, carries the reference service's five keys
//! (`type`, `text`, `tool_name`, `tool_input`, `error`), `null` where unused,
//! so clients that read `frame.text !== null` keep working.

use std::collections::BTreeSet;

use claude_agent_http::config::StorageKind;
use fake_anthropic::{FakeAnthropic, Reply};
use serde_json::{Value, json};

use crate::chat::{Frames, agent_app};

const REFERENCE_KEYS: [&str; 5] = ["type", "text", "tool_name", "tool_input", "error"];

/// Checks one frame: all five keys, each of the type the reference gives it
/// or `null`.
fn check(frame: &Value) {
    let fields = frame
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {frame}"));
    for key in REFERENCE_KEYS {
        assert!(fields.contains_key(key), "{key} missing from {frame}");
    }
    assert!(frame["type"].is_string(), "{frame}");
    for key in ["text", "tool_name", "error"] {
        assert!(
            frame[key].is_string() || frame[key].is_null(),
            "{key} of {frame}"
        );
    }
    assert!(
        frame["tool_input"].is_object() || frame["tool_input"].is_null(),
        "{frame}"
    );
    match frame["type"].as_str().unwrap() {
        "text_delta" => {
            assert!(frame["text"].is_string());
            assert!(frame["tool_name"].is_null() && frame["tool_input"].is_null());
            assert!(frame["error"].is_null());
        }
        "tool_use" => {
            assert!(frame["tool_name"].is_string() && frame["tool_input"].is_object());
            assert!(frame["text"].is_null() && frame["error"].is_null());
        }
        "error" => {
            assert!(frame["error"].is_string());
            assert!(frame["text"].is_null() && frame["tool_name"].is_null());
        }
        _ => {}
    }
}

#[tokio::test]
async fn every_frame_of_a_real_stream_carries_the_reference_keys() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |s| {
        s.defaults.thinking_budget_tokens = 2048;
        s.defaults.ask_tools = vec!["Bash".into()];
    })
    .await
    .unwrap();
    let id = app.new_session_id("alice").await;
    let stream = |message: &str| {
        let body = json!({"session_id": id, "message": message});
        let app = &app;
        async move { Frames::new(app.chat_stream(body).await).collect().await }
    };

    // Thinking, todos, a tool that fails, a tool that works, the answer.
    let plan = json!([{"content": "Look", "status": "in_progress", "activeForm": "Looking"}]);
    fake.push(Reply::tool_use("TodoWrite", json!({"todos": plan})).with_thinking("Plan first."));
    fake.push(Reply::tool_use("Read", json!({"file_path": "missing.txt"})));
    fake.push(Reply::tool_use(
        "Write",
        json!({"file_path": "a.txt", "content": "a"}),
    ));
    fake.push(Reply::text("Wrote a.txt."));
    let mut live = stream("work").await;
    // A call a person approves and a question a person answers, from
    // another connection while the stream waits.
    fake.push(Reply::tool_use("Bash", json!({"command": "echo approved"})));
    let question = "Which file next?";
    fake.push(Reply::tool_use(
        "AskUserQuestion",
        json!({"questions": [{"question": question, "header": "File", "multiSelect": false,
                "options": [{"label": "b.txt", "description": "Write b.txt"},
                            {"label": "none", "description": "Stop here"}]}]}),
    ));
    fake.push(Reply::text("Done asking."));
    let asking = {
        let body = json!({"session_id": id, "message": "ask"});
        let client = app.client.clone();
        let url = app.url("/api/v1/chat/stream");
        tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap() })
    };
    for (collection, decision) in [
        ("permissions", json!({"decision": "allow"})),
        ("questions", json!({"answers": {question: "b.txt"}})),
    ] {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        let pending = loop {
            let pending: Vec<Value> = app
                .client
                .get(app.url(&format!("/api/v1/sessions/{id}/{collection}")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if let Some(first) = pending.into_iter().next() {
                break first;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no pending {collection}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        let request = pending["request_id"].as_str().unwrap();
        let answered = app
            .client
            .post(app.url(&format!("/api/v1/sessions/{id}/{collection}/{request}")))
            .json(&decision)
            .send()
            .await
            .unwrap();
        assert_eq!(answered.status(), 200, "{collection}");
    }
    live.extend(Frames::new(asking.await.unwrap()).collect().await);
    // A compaction, then a turn the model API fails.
    fake.push(Reply::text("SUMMARY: wrote a.txt."));
    live.extend(stream("/compact").await);
    fake.push(Reply::error(400, "invalid_request_error", "bad request"));
    live.extend(stream("fail").await);

    let replayed = Frames::new(app.events(&id, "after=0", None).await)
        .collect()
        .await;
    assert_eq!(replayed, live, "/events replays the frames as streamed");
    for frame in live.iter().chain(&replayed) {
        check(frame);
    }
    let failed_tool = live
        .iter()
        .find(|f| f["type"] == "tool_result" && f["is_error"] == true);
    assert!(failed_tool.is_some(), "a failing tool call was streamed");

    // Every frame type the API documents was seen and checked.
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let documented: BTreeSet<String> = doc["components"]["schemas"]["StreamFrame"]["discriminator"]
        ["mapping"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let seen: BTreeSet<String> = live
        .iter()
        .map(|f| f["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, documented);
    app.stop().await;
}
