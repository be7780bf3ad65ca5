//! The agent's context economy over HTTP against fake-anthropic: cache
//! breakpoints, compaction (automatic, on "prompt is too long", `/compact`,
//! `/clear`, the compact endpoint), cut tool results and tool calls,
//! thinking, and the fallback model — proven by what reaches the model.

use claude_agent_http::config::{ModelLimits, StorageKind};
use fake_anthropic::{FakeAnthropic, Recorded, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::{Frames, agent_app};
use crate::helpers::*;

fn messages_of(request: &Recorded) -> &Vec<Value> {
    request.body["messages"].as_array().unwrap()
}

/// Every text the request carries in its messages, joined.
fn text_of(request: &Recorded) -> String {
    messages_of(request)
        .iter()
        .flat_map(|m| m["content"].as_array().unwrap().clone())
        .map(|b| {
            b["text"]
                .as_str()
                .or_else(|| b["content"].as_str())
                .unwrap_or("")
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn breakpoints(body: &Value) -> usize {
    body.to_string().matches("\"cache_control\"").count()
}

async fn chat_ok(app: &TestApp, id: &str, message: &str) -> Value {
    let response = app.chat(id, message).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn every_call_marks_cache_breakpoints_and_the_prefix_stays_byte_stable() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::tool_use("Bash", json!({"command": "echo one"})));
    fake.push(Reply::tool_use("Bash", json!({"command": "echo two"})));
    fake.push(Reply::text("done"));
    chat_ok(&app, &id, "run two commands").await;
    fake.push(Reply::text("again"));
    chat_ok(&app, &id, "and now?").await;

    let requests = fake.requests();
    assert_eq!(requests.len(), 4);
    for request in &requests {
        let body = &request.body;
        assert!(body["system"].is_array(), "system is sent as blocks");
        assert!(breakpoints(body) <= 4, "{body}");
        let system = body["system"].as_array().unwrap();
        assert!(system.last().unwrap().get("cache_control").is_some());
        let tools = body["tools"].as_array().unwrap();
        assert!(tools.last().unwrap().get("cache_control").is_some());
        let newest = messages_of(request).last().unwrap();
        let last_block = newest["content"].as_array().unwrap().last().unwrap();
        assert_eq!(last_block["cache_control"]["type"], "ephemeral");
    }
    // The tools and the system prompt are the same bytes in every call.
    let prefix = |r: &Recorded| (r.body["tools"].to_string(), r.body["system"].to_string());
    assert!(requests.iter().all(|r| prefix(r) == prefix(&requests[0])));
    // Each call's messages start with the previous call's messages.
    for pair in requests.windows(2) {
        let strip = |v: &Value| {
            v.to_string()
                .replace(",\"cache_control\":{\"type\":\"ephemeral\"}", "")
        };
        let before = messages_of(&pair[0]);
        let after = messages_of(&pair[1]);
        for (a, b) in before.iter().zip(after.iter()).take(before.len() - 1) {
            assert_eq!(strip(a), strip(b));
        }
    }
}

#[tokio::test]
async fn prompt_caching_can_be_turned_off() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |s| {
        s.anthropic.prompt_caching = false;
    })
    .await
    .unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::text("hi"));
    chat_ok(&app, &id, "hello").await;
    assert_eq!(breakpoints(&fake.requests()[0].body), 0);
}

#[tokio::test]
async fn compact_summarises_and_the_model_sees_the_summary_while_the_store_keeps_everything() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    for (question, answer) in [
        ("first question", "first answer"),
        ("second question", "second answer"),
    ] {
        fake.push(Reply::text(answer));
        chat_ok(&app, &id, question).await;
    }

    fake.push(Reply::text("SUMMARY: the user asked two questions."));
    let compacted = chat_ok(&app, &id, "/compact the questions asked").await;
    assert_eq!(compacted["stop_reason"], "compacted");
    assert_eq!(compacted["compactions"][0]["trigger"], "manual");
    assert_eq!(compacted["compactions"][0]["focus"], "the questions asked");
    let summary_request = fake.requests().pop().unwrap();
    let asked = text_of(&summary_request);
    assert!(asked.contains("first question") && asked.contains("second answer"));
    assert!(asked.contains("focus on: the questions asked"), "{asked}");

    fake.push(Reply::text("third answer"));
    chat_ok(&app, &id, "third question").await;
    let next = fake.requests().pop().unwrap();
    let seen = text_of(&next);
    assert!(
        seen.contains("SUMMARY: the user asked two questions."),
        "{seen}"
    );
    assert!(!seen.contains("first question"), "{seen}");
    assert!(seen.contains("third question"));

    let full: Vec<Value> = app
        .client
        .get(app.url(&format!("/api/v1/sessions/{id}/messages")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let roles: Vec<&str> = full.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        [
            "user",
            "assistant",
            "user",
            "assistant",
            "system",
            "user",
            "assistant"
        ]
    );
    assert_eq!(full[4]["content"][0]["type"], "compaction");
    assert!(full[0]["content"].to_string().contains("first question"));

    let model: Vec<Value> = app
        .client
        .get(app.url(&format!("/api/v1/sessions/{id}/messages?view=model")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(model.len(), 3, "{model:?}");
    assert!(model[0]["content"].to_string().contains("SUMMARY"));
    assert_eq!(model[1]["content"][0]["text"], "third question");

    let bad = app
        .client
        .get(app.url(&format!("/api/v1/sessions/{id}/messages?view=everything")))
        .send()
        .await
        .unwrap();
    assert_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test]
async fn clear_starts_a_fresh_context_and_the_endpoint_compacts_over_http() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::text("noted"));
    chat_ok(&app, &id, "remember the word zebra").await;

    let cleared = chat_ok(&app, &id, "/clear").await;
    assert_eq!(cleared["stop_reason"], "cleared");
    assert_eq!(fake.requests().len(), 1, "/clear makes no model call");
    fake.push(Reply::text("fresh"));
    chat_ok(&app, &id, "what word?").await;
    let seen = text_of(&fake.requests().pop().unwrap());
    assert!(!seen.contains("zebra"), "{seen}");

    // Nothing left to summarise but the last exchange: the endpoint does it.
    fake.push(Reply::text("SUMMARY over HTTP"));
    let response = app
        .client
        .post(app.url(&format!("/api/v1/sessions/{id}/compact")))
        .json(&json!({"instructions": "keep it short"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["compactions"][0]["trigger"], "manual");
    assert!(text_of(&fake.requests().pop().unwrap()).contains("keep it short"));

    let bad = app
        .client
        .post(app.url(&format!("/api/v1/sessions/{id}/compact")))
        .json(&json!({"timeout": 0}))
        .send()
        .await
        .unwrap();
    assert_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let missing = app
        .client
        .post(app.url(&format!(
            "/api/v1/sessions/{}/compact",
            uuid::Uuid::new_v4()
        )))
        .send()
        .await
        .unwrap();
    assert_error(missing, StatusCode::NOT_FOUND, "session_not_found").await;
}

#[tokio::test]
async fn prompt_too_long_compacts_and_retries_in_the_same_turn() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    for i in 0..3 {
        fake.push(Reply::text(format!("answer {i}")));
        chat_ok(&app, &id, &format!("question {i}")).await;
    }
    fake.push(Reply::error(
        400,
        "invalid_request_error",
        "prompt is too long: 250000 tokens > 200000 maximum",
    ));
    fake.push(Reply::text("SUMMARY of questions 0 to 2"));
    fake.push(Reply::text("recovered answer"));
    let body = chat_ok(&app, &id, "question 3").await;
    assert_eq!(body["text"], "recovered answer");
    assert_eq!(body["compactions"][0]["trigger"], "recovery");
    let last = fake.requests().pop().unwrap();
    let seen = text_of(&last);
    assert!(seen.contains("SUMMARY of questions 0 to 2"), "{seen}");
    assert!(seen.contains("question 3"));

    // The next turn starts from the compacted view, not the old history.
    fake.push(Reply::text("fine"));
    chat_ok(&app, &id, "question 4").await;
    assert!(!text_of(&fake.requests().pop().unwrap()).contains("question 0"));
}

#[tokio::test]
async fn a_rejected_request_is_reported_as_rejected_not_retried() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::error(
        400,
        "invalid_request_error",
        "tools.0: something odd",
    ));
    let response = app.chat(&id, "hi").await;
    let body = assert_error(response, StatusCode::BAD_GATEWAY, "upstream_error").await;
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("rejected the request"), "{detail}");
    assert!(!detail.contains("retries"), "{detail}");
    assert_eq!(fake.requests().len(), 1, "a 400 is not retried");
}

#[tokio::test]
async fn automatic_compaction_keeps_a_small_window_usable_for_many_turns() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |s| {
        s.models.insert(
            "claude-sonnet-4-6".into(),
            ModelLimits {
                context_window: 12_000,
                max_output_tokens: 2_000,
            },
        );
    })
    .await
    .unwrap();
    let id = app.new_session_id("alice").await;
    // Nothing scripted: the fake echoes each message back, summaries included,
    // so every turn adds about 3,000 tokens to a 12,000-token window.
    let mut compactions = 0;
    for turn in 0..12 {
        let message = format!("turn {turn}: {}", "lorem ipsum ".repeat(500));
        let body = chat_ok(&app, &id, &message).await;
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .contains(&format!("turn {turn}"))
        );
        compactions += body["compactions"].as_array().unwrap().len();
    }
    assert!(compactions >= 2, "{compactions} compactions");
    assert!(fake.requests().iter().all(|r| r.status == 200));
}

#[tokio::test]
async fn an_oversized_tool_result_is_cut_with_directions() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |s| {
        s.tools.max_result_tokens = 1_000;
    })
    .await
    .unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::tool_use("Bash", json!({"command": "seq 1 100000"})));
    fake.push(Reply::text("read it"));
    chat_ok(&app, &id, "count").await;
    let second = &fake.requests()[1];
    let result = messages_of(second).last().unwrap()["content"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(result.len() < 4_000 + 500, "{}", result.len());
    assert!(
        result.contains("Output cut at about 1000 tokens"),
        "{result}"
    );
    assert!(result.starts_with("1\n2\n3\n"));
}

#[tokio::test]
async fn an_overloaded_model_hands_the_turn_to_the_fallback_model() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |s| {
        s.anthropic.max_retries = 1;
        s.defaults.fallback_model = Some("claude-haiku-4-5".into());
    })
    .await
    .unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::overloaded(2));
    fake.push(Reply::text("answered by the fallback"));
    let body = chat_ok(&app, &id, "hi").await;
    assert_eq!(body["text"], "answered by the fallback");
    assert_eq!(body["fallback_model_used"], true);
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].body["model"], "claude-sonnet-4-6");
    assert_eq!(requests[2].body["model"], "claude-haiku-4-5");
}

#[tokio::test]
async fn thinking_is_requested_streamed_and_sent_back_verbatim() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |s| {
        s.defaults.thinking_budget_tokens = 2_048;
    })
    .await
    .unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::Thinking {
        thinking: "The user wants a greeting.".into(),
        text: "Hello!".into(),
    });
    let frames = Frames::new(
        app.chat_stream(json!({"session_id": id, "message": "greet me"}))
            .await,
    )
    .collect()
    .await;
    let thought: String = frames
        .iter()
        .filter(|f| f["type"] == "thinking_delta")
        .map(|f| f["thinking"].as_str().unwrap())
        .collect();
    assert_eq!(thought, "The user wants a greeting.");
    assert_eq!(frames.last().unwrap()["type"], "done");

    fake.push(Reply::text("again"));
    chat_ok(&app, &id, "once more").await;
    let requests = fake.requests();
    let first = &requests[0];
    assert_eq!(first.body["thinking"]["type"], "enabled");
    assert_eq!(first.body["thinking"]["budget_tokens"], 2048);
    assert!(
        first
            .header("anthropic-beta")
            .is_some_and(|b| b.contains("interleaved-thinking"))
    );
    // The fake checks the signature: a changed block would be a 400.
    assert_eq!(requests[1].status, 200);
    assert_eq!(
        messages_of(&requests[1])[1]["content"][0]["type"],
        "thinking"
    );
}

/// Replies the turn's own calls take; compaction summaries pass them over
/// and get the fake's echo.
fn turn_reply(reply: Reply) -> Reply {
    reply.unless("being compacted")
}

#[tokio::test]
async fn a_tool_loop_reads_most_of_its_input_from_the_cache_and_the_cost_shows_it() {
    let fake = FakeAnthropic::start().await;
    // The test's prompt is shorter than Sonnet 4.6's minimum cacheable length.
    fake.set_min_cacheable_tokens(Some(1_024));
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    for step in 0..10 {
        fake.push(Reply::tool_use(
            "Bash",
            json!({"command": format!("echo step {step}")}),
        ));
    }
    fake.push(Reply::text("ten steps done"));
    let body = chat_ok(&app, &id, "run ten steps").await;

    let usage = &body["usage"];
    let read = usage["cache_read_input_tokens"].as_u64().unwrap();
    let written = usage["cache_creation_input_tokens"].as_u64().unwrap();
    let fresh = usage["input_tokens"].as_u64().unwrap();
    let total = read + written + fresh;
    assert!(read as f64 / total as f64 > 0.8, "{usage}");
    // What the fake counted is what the response reports.
    let counted: u64 = fake
        .requests()
        .iter()
        .map(|r| r.usage_tokens("cache_read_input_tokens"))
        .sum();
    assert_eq!(counted, read);
    // Priced at Sonnet's rates: cache reads at a tenth of the input price.
    let output = usage["output_tokens"].as_u64().unwrap();
    let expected =
        (fresh as f64 * 3.0 + written as f64 * 3.75 + read as f64 * 0.3 + output as f64 * 15.0)
            / 1e6;
    // Shown rounded to micro-dollars.
    let cost = body["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - expected).abs() <= 5e-7 + 1e-12,
        "{cost} vs {expected}"
    );
    let session: Value = app.get_session(&id).await.json().await.unwrap();
    assert_eq!(session["usage"]["cache_read_input_tokens"], read);
}

#[tokio::test]
async fn hundreds_of_tool_calls_under_a_small_window_never_fail_and_never_overflow() {
    let fake = FakeAnthropic::start().await;
    fake.set_context_window(Some(16_000));
    let app = agent_app(StorageKind::Sqlite, &fake, |s| {
        s.models.insert(
            "claude-sonnet-4-6".into(),
            ModelLimits {
                context_window: 16_000,
                max_output_tokens: 4_000,
            },
        );
    })
    .await
    .unwrap();
    let id = app.new_session_id("alice").await;
    std::fs::write(
        app.root.join("users/alice/big.txt"),
        "a line of output that fills the window\n".repeat(200),
    )
    .unwrap();
    let mut compactions = 0;
    for turn in 0..15 {
        for _ in 0..4 {
            fake.push(turn_reply(Reply::tool_use(
                "Bash",
                json!({"command": "cat big.txt"}),
            )));
        }
        fake.push(turn_reply(Reply::text(format!("turn {turn} done"))));
        let body = chat_ok(&app, &id, &format!("turn {turn}: read big.txt four times")).await;
        assert_eq!(body["text"], format!("turn {turn} done"));
        compactions += body["compactions"].as_array().unwrap().len();
        assert_eq!(fake.pending(), 0);
    }
    assert!(compactions >= 3, "{compactions}");
    let failed: Vec<u16> = fake
        .requests()
        .iter()
        .map(|r| r.status)
        .filter(|s| *s != 200)
        .collect();
    assert!(failed.is_empty(), "requests over the window: {failed:?}");
}

#[tokio::test]
async fn a_tool_call_cut_at_max_tokens_is_not_run_and_the_model_is_told() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |s| {
        s.anthropic.max_tokens = Some(1_024);
    })
    .await
    .unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::tool_use(
        "Write",
        json!({"file_path": "big.txt", "content": "z".repeat(20_000)}),
    ));
    fake.push(Reply::text("I will write it in parts."));
    let body = chat_ok(&app, &id, "write a big file").await;
    assert_eq!(body["text"], "I will write it in parts.");
    assert!(!app.root.join("users/alice/big.txt").exists());
    let second = &fake.requests()[1];
    let result = &messages_of(second).last().unwrap()["content"][0];
    assert_eq!(result["type"], "tool_result");
    assert_eq!(result["is_error"], true);
    assert!(
        result["content"].as_str().unwrap().contains("max_tokens"),
        "{result}"
    );
}
