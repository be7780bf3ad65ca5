//! Extended thinking: what the API accepts with it, and the signed thinking
//! blocks that answers start with.

mod common;

use common::{invalid, send, stream};
use fake_anthropic::{FakeAnthropic, GENERATED_THINKING, Reply, thinking_signature};
use serde_json::{Value, json};

fn thinking_request(budget: u64, max_tokens: u64) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": max_tokens,
        "thinking": {"type": "enabled", "budget_tokens": budget},
        "messages": [{"role": "user", "content": "think about it"}],
    })
}

fn with_tools(mut body: Value) -> Value {
    body["tools"] = json!([{"name": "Bash", "input_schema": {"type": "object", "properties": {}}}]);
    body
}

async fn rejected(fake: &FakeAnthropic, body: Value, message: &str) {
    let (status, answer) = send(fake, body).await;
    assert_eq!((status, answer), (400, invalid(message)));
}

async fn accepted(fake: &FakeAnthropic, body: Value) -> Value {
    let (status, answer) = send(fake, body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

#[tokio::test]
async fn the_budget_is_at_least_1024_and_below_max_tokens() {
    let fake = FakeAnthropic::start().await;
    rejected(
        &fake,
        thinking_request(1023, 4096),
        "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
    )
    .await;
    rejected(
        &fake,
        json!({"model": "m", "max_tokens": 4096, "thinking": {"type": "enabled"},
               "messages": [{"role": "user", "content": "q"}]}),
        "thinking.enabled.budget_tokens: Field required",
    )
    .await;
    let over = "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our \
                documentation at https://docs.claude.com/en/docs/build-with-claude/\
                extended-thinking#max-tokens-and-context-window-size";
    rejected(&fake, thinking_request(4096, 4096), over).await;
    accepted(&fake, thinking_request(1024, 1025)).await;
}

#[tokio::test]
async fn interleaved_thinking_lets_the_budget_exceed_max_tokens() {
    let fake = FakeAnthropic::start().await;
    let body = thinking_request(8000, 2048);
    let response = common::messages_request(&fake, &body)
        .header(
            "anthropic-beta",
            "fine-grained-tool-streaming-2025-05-14, interleaved-thinking-2025-05-14",
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    // Another beta alone does not lift the rule.
    let response = common::messages_request(&fake, &body)
        .header("anthropic-beta", "fine-grained-tool-streaming-2025-05-14")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn forced_tool_use_and_sampling_do_not_go_with_thinking() {
    let fake = FakeAnthropic::start().await;
    for choice in [
        json!({"type": "any"}),
        json!({"type": "tool", "name": "Bash"}),
    ] {
        let mut body = with_tools(thinking_request(1024, 2048));
        body["tool_choice"] = choice;
        rejected(
            &fake,
            body,
            "Thinking may not be enabled when tool_choice forces tool use.",
        )
        .await;
    }
    let mut body = with_tools(thinking_request(1024, 2048));
    body["tool_choice"] = json!({"type": "auto"});
    accepted(&fake, body).await;

    let mut body = thinking_request(1024, 2048);
    body["temperature"] = json!(0.5);
    rejected(
        &fake,
        body,
        "`temperature` may only be set to 1 when thinking is enabled. Please consult our \
         documentation at https://docs.claude.com/en/docs/build-with-claude/\
         extended-thinking#feature-compatibility",
    )
    .await;
    let mut body = thinking_request(1024, 2048);
    body["top_k"] = json!(5);
    rejected(
        &fake,
        body,
        "`top_k` must be unset when thinking is enabled. Please consult our documentation at \
         https://docs.claude.com/en/docs/build-with-claude/extended-thinking\
         #important-considerations-when-using-extended-thinking",
    )
    .await;
    let mut body = thinking_request(1024, 2048);
    body["top_p"] = json!(0.5);
    let (status, _) = send(&fake, body.clone()).await;
    assert_eq!(status, 400);
    body["top_p"] = json!(0.95);
    body["temperature"] = json!(1);
    accepted(&fake, body).await;

    // Without thinking, all of these are fine.
    let mut body = with_tools(thinking_request(1024, 2048));
    body["thinking"] = json!({"type": "disabled"});
    body["tool_choice"] = json!({"type": "any"});
    body["temperature"] = json!(0.2);
    body["top_k"] = json!(5);
    accepted(&fake, body).await;
}

#[tokio::test]
async fn answers_start_with_a_signed_thinking_block_when_thinking_is_on() {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::text("forty-two"));
    let answer = accepted(&fake, thinking_request(1024, 2048)).await;
    assert_eq!(
        answer["content"],
        json!([
            {"type": "thinking", "thinking": GENERATED_THINKING, "signature": thinking_signature(GENERATED_THINKING)},
            {"type": "text", "text": "forty-two"},
        ])
    );

    let mut adaptive = thinking_request(1024, 2048);
    adaptive["thinking"] = json!({"type": "adaptive"});
    let answer = accepted(&fake, adaptive).await;
    assert_eq!(answer["content"][0]["type"], "thinking");

    let mut off = thinking_request(1024, 2048);
    off["thinking"] = json!({"type": "disabled"});
    let answer = accepted(&fake, off).await;
    assert_eq!(answer["content"].as_array().map(Vec::len), Some(1));
    assert_eq!(answer["content"][0]["type"], "text");
}

#[tokio::test]
async fn a_streamed_thinking_block_ends_with_its_signature() {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::text("done"));
    let streamed = stream(&fake, thinking_request(1024, 2048)).await;
    assert_eq!(
        streamed.events[2].data["content_block"],
        json!({"type": "thinking", "thinking": "", "signature": ""})
    );
    assert_eq!(
        streamed.deltas("thinking_delta", "thinking").concat(),
        GENERATED_THINKING
    );
    assert_eq!(
        streamed.deltas("signature_delta", "signature"),
        vec![thinking_signature(GENERATED_THINKING)]
    );
    assert_eq!(streamed.deltas("text_delta", "text").concat(), "done");
}

#[tokio::test]
async fn a_scripted_tool_call_carries_its_thinking_through_the_loop() {
    let fake = FakeAnthropic::start().await;
    let script = json!({"kind": "tool_use", "thinking": "I should list the files.",
                        "calls": [{"name": "Bash", "input": {"command": "ls"}}]});
    let response = common::client()
        .post(format!("{}/_fake/replies", fake.url()))
        .json(&script)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);

    let body = with_tools(thinking_request(1024, 2048));
    let answer = accepted(&fake, body.clone()).await;
    assert_eq!(answer["stop_reason"], "tool_use");
    let content = answer["content"].as_array().expect("content").clone();
    assert_eq!(
        content[0],
        json!({"type": "thinking", "thinking": "I should list the files.",
               "signature": thinking_signature("I should list the files.")})
    );
    assert_eq!(content[1]["type"], "tool_use");
    let id = content[1]["id"].as_str().expect("id").to_owned();

    // The tool loop continues with the blocks sent back unchanged ...
    let mut next = body.clone();
    next["messages"] = json!([
        {"role": "user", "content": "think about it"},
        {"role": "assistant", "content": content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "a.txt"}]},
    ]);
    accepted(&fake, next.clone()).await;

    // ... and fails without the thinking block.
    let mut dropped = next;
    let kept = dropped["messages"][1]["content"][1].clone();
    dropped["messages"][1]["content"] = json!([kept]);
    let (status, answer) = send(&fake, dropped).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("messages.1.content.0.type: Expected `thinking`")),
        "{answer}"
    );
}
