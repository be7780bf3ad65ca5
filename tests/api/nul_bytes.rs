//! U+0000 in what clients, the model and tools send: PostgreSQL's jsonb
//! cannot hold it, yet every store must keep it and give it back unchanged.

use fake_anthropic::{FakeAnthropic, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::point_at_fake;
use crate::helpers::*;
use crate::on_every_backend;

on_every_backend!(nul_bytes_survive_the_store, nul_bytes_survive_the_store);

async fn nul_bytes_survive_the_store(storage: claude_agent_http::config::StorageKind) {
    let fake = FakeAnthropic::start().await;
    let url = fake.url();
    let Some(app) = spawn_app_with(storage, move |s| point_at_fake(s, &url)).await else {
        return;
    };
    let metadata = json!({"label": "a\u{0}b", "k\u{0}": ["\u{0}"]});
    let created = app
        .create_session(json!({"user_id": "alice", "metadata": metadata}))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["metadata"], metadata);
    let id = created["session_id"].as_str().unwrap();
    let got: Value = app.get_session(id).await.json().await.unwrap();
    assert_eq!(got["metadata"], metadata);

    // Bash prints a NUL, and the model answers with one.
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "printf 'x\\0y'"}),
    ));
    fake.push(Reply::text("done\u{0}!"));
    let chat = app.chat(id, "hi\u{0}there").await;
    assert_eq!(chat.status(), StatusCode::OK);
    let chat: Value = chat.json().await.unwrap();
    assert_eq!(chat["text"], "done\u{0}!");

    let history = app
        .client
        .get(app.url(&format!("/api/v1/sessions/{id}/messages")))
        .send()
        .await
        .unwrap();
    assert_eq!(history.status(), StatusCode::OK);
    let history: Vec<Value> = history.json().await.unwrap();
    let texts: Vec<&Value> = history
        .iter()
        .flat_map(|m| m["content"].as_array().unwrap())
        .filter_map(|block| block.get("text").or_else(|| block.get("content")))
        .collect();
    assert_eq!(
        texts.first().copied(),
        Some(&json!("hi\u{0}there")),
        "{history:?}"
    );
    assert_eq!(
        texts.last().copied(),
        Some(&json!("done\u{0}!")),
        "{history:?}"
    );
    let tool_output = texts
        .iter()
        .find(|t| t.to_string().contains('x'))
        .unwrap_or_else(|| panic!("no Bash output in {history:?}"));
    assert!(
        tool_output.to_string().contains("x\\u0000y"),
        "Bash output lost its NUL: {tool_output}"
    );
}
