//! Non-streaming answers and scripted errors.

mod common;

use common::{send, simple};
use fake_anthropic::{FakeAnthropic, Reply};
use serde_json::json;

#[tokio::test]
async fn text_reply_is_a_full_message() {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::text("Hello there"));
    let (status, body) = send(&fake, simple("hi")).await;
    assert_eq!(status, 200);
    let id = body["id"].as_str().expect("id");
    assert!(id.starts_with("msg_"), "{id}");
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-test");
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "Hello there"}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["stop_sequence"], json!(null));
    let usage = &body["usage"];
    assert!(usage["input_tokens"].as_u64().expect("input") >= 1);
    assert!(usage["output_tokens"].as_u64().expect("output") >= 1);
    assert_eq!(usage["cache_creation_input_tokens"], 0);
    assert_eq!(usage["cache_read_input_tokens"], 0);
    let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), 8, "{keys:?}");
}

#[tokio::test]
async fn usage_is_deterministic() {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::text("same"));
    fake.push(Reply::text("same"));
    let (_, a) = send(&fake, simple("question")).await;
    let (_, b) = send(&fake, simple("question")).await;
    assert_eq!(a["usage"], b["usage"]);
    assert_ne!(a["id"], b["id"]);
}

#[tokio::test]
async fn tool_use_reply() {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::ToolUse {
        text: Some("Let me check.".into()),
        calls: vec![
            ("Bash".into(), json!({"command": "pwd"})),
            ("Read".into(), json!({"path": "a.txt"})),
        ],
    });
    let (status, body) = send(&fake, simple("where am i")).await;
    assert_eq!(status, 200);
    assert_eq!(body["stop_reason"], "tool_use");
    let content = body["content"].as_array().expect("content");
    assert_eq!(content.len(), 3);
    assert_eq!(content[0], json!({"type": "text", "text": "Let me check."}));
    for (block, (name, input)) in content[1..].iter().zip([
        ("Bash", json!({"command": "pwd"})),
        ("Read", json!({"path": "a.txt"})),
    ]) {
        assert_eq!(block["type"], "tool_use");
        assert!(block["id"].as_str().expect("id").starts_with("toolu_"));
        assert_eq!(block["name"], name);
        assert_eq!(block["input"], input);
        assert_eq!(block.as_object().expect("object").len(), 4);
    }
    assert_ne!(content[1]["id"], content[2]["id"]);
}

#[tokio::test]
async fn thinking_and_max_tokens_replies() {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::Thinking {
        thinking: "Let me think.".into(),
        text: "42".into(),
    });
    fake.push(Reply::MaxTokens("partial answ".into()));
    let (_, body) = send(&fake, simple("q")).await;
    assert_eq!(body["content"][0]["type"], "thinking");
    assert_eq!(body["content"][0]["thinking"], "Let me think.");
    assert_eq!(
        body["content"][0]["signature"],
        fake_anthropic::thinking_signature("Let me think.")
    );
    assert_eq!(body["content"][1], json!({"type": "text", "text": "42"}));
    assert_eq!(body["stop_reason"], "end_turn");

    let (_, body) = send(&fake, simple("q")).await;
    assert_eq!(body["stop_reason"], "max_tokens");
    assert_eq!(body["content"][0]["text"], "partial answ");
}

#[tokio::test]
async fn empty_queue_echoes_the_last_user_text() {
    let fake = FakeAnthropic::start().await;
    let (status, body) = send(&fake, simple("ping me")).await;
    assert_eq!(status, 200);
    assert_eq!(body["content"][0]["text"], "Echo: ping me");
    assert_eq!(body["stop_reason"], "end_turn");
}

#[tokio::test]
async fn stop_sequences_and_max_tokens_limit_text() {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::text("one two END three"));
    let mut body = simple("q");
    body["stop_sequences"] = json!(["END"]);
    let (_, answer) = send(&fake, body).await;
    assert_eq!(answer["content"][0]["text"], "one two ");
    assert_eq!(answer["stop_reason"], "stop_sequence");
    assert_eq!(answer["stop_sequence"], "END");

    fake.push(Reply::text("a long answer that will not fit"));
    let mut body = simple("q");
    body["max_tokens"] = json!(2);
    let (_, answer) = send(&fake, body).await;
    assert_eq!(answer["content"][0]["text"], "a long a");
    assert_eq!(answer["stop_reason"], "max_tokens");
}

#[tokio::test]
async fn error_twice_then_success() {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::Error {
        status: 529,
        error_type: "overloaded_error".into(),
        message: "Overloaded".into(),
        times: 2,
        retry_after: Some("1".into()),
    });
    fake.push(Reply::text("finally"));
    for _ in 0..2 {
        let response = common::messages_request(&fake, &simple("q"))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 529);
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(
            body,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        );
    }
    let (status, body) = send(&fake, simple("q")).await;
    assert_eq!(status, 200);
    assert_eq!(body["content"][0]["text"], "finally");
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![529, 529, 200]);
}

#[tokio::test]
async fn errors_apply_to_streaming_requests_too() {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::error(429, "rate_limit_error", "slow down"));
    let mut body = simple("q");
    body["stream"] = json!(true);
    let response = common::messages_request(&fake, &body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 429);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"))
    );
}

#[tokio::test]
async fn slow_non_streaming_waits_before_answering() {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::text("late").slow(150));
    let started = std::time::Instant::now();
    let (status, body) = send(&fake, simple("q")).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
    assert_eq!(status, 200);
    assert_eq!(body["content"][0]["text"], "late");
}

#[tokio::test]
async fn non_streaming_cut_and_stream_error() {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::text("never").cut_after(1));
    fake.push(Reply::text("never").stream_error_after(1));
    let response = common::messages_request(&fake, &simple("q"))
        .send()
        .await
        .expect("headers arrive");
    assert!(response.bytes().await.is_err(), "the body is cut");
    let (status, body) = send(&fake, simple("q")).await;
    assert_eq!(status, 529);
    assert_eq!(body["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn max_tokens_inside_a_tool_call_leaves_an_empty_input() {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "a command that is far too long to fit"}),
    ));
    let mut body = simple("q");
    body["max_tokens"] = json!(3);
    let (status, answer) = send(&fake, body).await;
    assert_eq!(status, 200);
    assert_eq!(answer["stop_reason"], "max_tokens");
    let content = answer["content"].as_array().expect("content");
    assert_eq!(content.len(), 1);
    assert_eq!(content[0]["type"], "tool_use");
    assert_eq!(content[0]["name"], "Bash");
    assert_eq!(content[0]["input"], json!({}));
    assert_eq!(answer["usage"]["output_tokens"], 3);

    // With room for the whole input the call is complete.
    fake.push(Reply::tool_use("Bash", json!({"command": "ls"})));
    let (_, answer) = send(&fake, simple("q")).await;
    assert_eq!(answer["stop_reason"], "tool_use");
    assert_eq!(answer["content"][0]["input"], json!({"command": "ls"}));
}

#[tokio::test]
async fn an_unless_reply_is_passed_over_by_requests_that_contain_its_text() {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::text("for the turn").unless("summarise"));
    let client = reqwest::Client::new();
    let ask = |text: &'static str| {
        let client = client.clone();
        let url = format!("{}/v1/messages", fake.url());
        async move {
            let body: serde_json::Value = client
                .post(url)
                .header("x-api-key", "k")
                .header("anthropic-version", "2023-06-01")
                .json(&serde_json::json!({"model": "m", "max_tokens": 100,
                    "messages": [{"role": "user", "content": text}]}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["content"][0]["text"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(
        ask("please summarise this").await,
        "Echo: please summarise this"
    );
    assert_eq!(fake.pending(), 1);
    assert_eq!(ask("go on").await, "for the turn");
    assert_eq!(fake.pending(), 0);
}
