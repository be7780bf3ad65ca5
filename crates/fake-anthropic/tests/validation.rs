//! Every validation rule, over real HTTP, with the real error body.

mod common;

use common::{invalid, send, simple};
use fake_anthropic::{Config, FakeAnthropic, thinking_signature};
use serde_json::{Value, json};

async fn rejected(fake: &FakeAnthropic, body: Value, message: &str) {
    let (status, answer) = send(fake, body).await;
    assert_eq!((status, answer), (400, invalid(message)));
}

fn with(field: &str, value: Value) -> Value {
    let mut body = simple("hi");
    body[field] = value;
    body
}

fn without(field: &str) -> Value {
    let mut body = simple("hi");
    body.as_object_mut().expect("object").remove(field);
    body
}

fn conversation(messages: Value) -> Value {
    with("messages", messages)
}

#[tokio::test]
async fn missing_key_is_401() {
    let fake = FakeAnthropic::start().await;
    let response = common::client()
        .post(format!("{}/v1/messages", fake.url()))
        .header("anthropic-version", "2023-06-01")
        .json(&simple("hi"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("request-id"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "authentication_error", "message": "x-api-key header is required"}})
    );
    assert_eq!(fake.requests()[0].status, 401);
}

#[tokio::test]
async fn a_required_key_must_match() {
    let fake = FakeAnthropic::start_with(Config {
        api_key: Some("sekret".into()),
        ..Config::default()
    })
    .await;
    let (status, body) = send(&fake, simple("hi")).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
    );

    for (name, value) in [("x-api-key", "sekret"), ("authorization", "Bearer sekret")] {
        let response = common::client()
            .post(format!("{}/v1/messages", fake.url()))
            .header(name, value)
            .header("anthropic-version", "2023-06-01")
            .json(&simple("hi"))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200, "{name}");
    }
}

#[tokio::test]
async fn missing_version_header_is_400() {
    let fake = FakeAnthropic::start().await;
    let response = common::client()
        .post(format!("{}/v1/messages", fake.url()))
        .header("x-api-key", "k")
        .json(&simple("hi"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, invalid("anthropic-version: header is required"));
}

#[tokio::test]
async fn non_json_body_is_400() {
    let fake = FakeAnthropic::start().await;
    let response = common::client()
        .post(format!("{}/v1/messages", fake.url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let recorded = &fake.requests()[0];
    assert_eq!(recorded.body, json!("{not json"));
    assert_eq!(recorded.status, 400);
}

#[tokio::test]
async fn required_fields() {
    let fake = FakeAnthropic::start().await;
    rejected(&fake, without("model"), "model: Field required").await;
    rejected(&fake, without("max_tokens"), "max_tokens: Field required").await;
    rejected(&fake, without("messages"), "messages: Field required").await;
    rejected(
        &fake,
        with("messages", json!([])),
        "messages: at least one message is required",
    )
    .await;
    rejected(
        &fake,
        with("model", json!(3)),
        "model: Input should be a valid string",
    )
    .await;
    for bad in [json!("5"), json!(2.5), json!(null)] {
        rejected(
            &fake,
            with("max_tokens", bad),
            "max_tokens: Input should be a valid integer",
        )
        .await;
    }
    rejected(
        &fake,
        with("max_tokens", json!(0)),
        "max_tokens: Input should be greater than or equal to 1",
    )
    .await;
    rejected(
        &fake,
        with("max_token", json!(5)),
        "max_token: Extra inputs are not permitted",
    )
    .await;
    rejected(&fake, json!([1, 2]), "Input should be a valid dictionary").await;
}

#[tokio::test]
async fn roles_and_content() {
    let fake = FakeAnthropic::start().await;
    rejected(
        &fake,
        conversation(json!([{"role": "assistant", "content": "hi"}])),
        "messages: first message must use the \"user\" role",
    )
    .await;
    rejected(
        &fake,
        conversation(json!([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}])),
        "messages.1.role: Input should be 'user' or 'assistant'",
    )
    .await;
    rejected(
        &fake,
        conversation(json!([{"role": "user", "content": 5}])),
        "messages.0.content: Input should be a valid string or a valid list",
    )
    .await;
    rejected(
        &fake,
        conversation(json!([{"role": "user"}])),
        "messages.0.content: Field required",
    )
    .await;
    rejected(
        &fake,
        conversation(json!([{"role": "user", "content": ""}])),
        "messages.0: all messages must have non-empty content except for the optional final assistant message",
    )
    .await;
    rejected(
        &fake,
        conversation(json!([{"role": "user", "content": [{"type": "text", "text": ""}]}])),
        "messages: text content blocks must be non-empty",
    )
    .await;
    rejected(
        &fake,
        conversation(json!([{"role": "user", "content": [{"type": "txt", "text": "a"}]}])),
        "messages.0.content.0.type: Input tag 'txt' found using 'type' does not match any of the expected tags: 'text', 'image', 'document', 'search_result', 'thinking', 'redacted_thinking', 'tool_use', 'tool_result', 'server_tool_use', 'web_search_tool_result'",
    )
    .await;
    rejected(
        &fake,
        conversation(
            json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b "}]),
        ),
        "final assistant content cannot end with trailing whitespace",
    )
    .await;
    // A final assistant message is a prefill and may be empty.
    let (status, _) = send(
        &fake,
        conversation(
            json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]),
        ),
    )
    .await;
    assert_eq!(status, 200);
}

fn tool_use(id: &str) -> Value {
    json!({"type": "tool_use", "id": id, "name": "Bash", "input": {"command": "ls"}})
}

fn tool_result(id: &str) -> Value {
    json!({"type": "tool_result", "tool_use_id": id, "content": "ok"})
}

#[tokio::test]
async fn tool_use_needs_its_result_next() {
    let fake = FakeAnthropic::start().await;
    rejected(
        &fake,
        conversation(json!([
            {"role": "user", "content": "run"},
            {"role": "assistant", "content": [tool_use("toolu_a"), tool_use("toolu_b")]},
            {"role": "user", "content": [tool_result("toolu_a")]},
        ])),
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_b. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
    )
    .await;
    rejected(
        &fake,
        conversation(json!([
            {"role": "user", "content": "run"},
            {"role": "assistant", "content": [tool_use("toolu_a")]},
            {"role": "user", "content": "forgot"},
        ])),
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_a. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
    )
    .await;
    rejected(
        &fake,
        conversation(json!([
            {"role": "user", "content": "run"},
            {"role": "assistant", "content": [tool_use("toolu_a")]},
            {"role": "user", "content": [tool_result("toolu_a"), tool_result("toolu_zzz")]},
        ])),
        "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: toolu_zzz. Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",
    )
    .await;
    rejected(
        &fake,
        conversation(json!([{"role": "user", "content": [tool_result("toolu_a")]}])),
        "messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_a. Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",
    )
    .await;
    let (status, _) = send(
        &fake,
        conversation(json!([
            {"role": "user", "content": "run"},
            {"role": "assistant", "content": [{"type": "text", "text": "sure"}, tool_use("toolu_a")]},
            {"role": "user", "content": [tool_result("toolu_a"), {"type": "text", "text": "and?"}]},
        ])),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn tools_and_system() {
    let fake = FakeAnthropic::start().await;
    let schema = json!({"type": "object", "properties": {}});
    rejected(
        &fake,
        with(
            "tools",
            json!([{"name": "bad name!", "input_schema": schema}]),
        ),
        "tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'",
    )
    .await;
    rejected(
        &fake,
        with(
            "tools",
            json!([{"name": "x".repeat(129), "input_schema": schema}]),
        ),
        "tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'",
    )
    .await;
    rejected(
        &fake,
        with("tools", json!([{"name": "Bash"}])),
        "tools.0.custom.input_schema: Field required",
    )
    .await;
    rejected(
        &fake,
        with("tools", json!([{"name": "Bash", "input_schema": "object"}])),
        "tools.0.custom.input_schema: Input should be a valid dictionary",
    )
    .await;
    rejected(
        &fake,
        with(
            "tools",
            json!([{"name": "A", "input_schema": schema}, {"name": "A", "input_schema": schema}]),
        ),
        "tools: Tool names must be unique.",
    )
    .await;
    rejected(
        &fake,
        with("system", json!(42)),
        "system: Input should be a valid string or a valid list",
    )
    .await;
    rejected(
        &fake,
        with("system", json!([{"type": "image", "text": "x"}])),
        "system.0.type: Input should be 'text'",
    )
    .await;
    rejected(
        &fake,
        with("tool_choice", json!({"type": "any"})),
        "tool_choice may only be specified while providing tools.",
    )
    .await;

    let mut good = with(
        "tools",
        json!([{"name": "Bash-2_x", "description": "run", "input_schema": schema}]),
    );
    good["system"] =
        json!([{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]);
    good["tool_choice"] = json!({"type": "tool", "name": "Bash-2_x"});
    let (status, _) = send(&fake, good).await;
    assert_eq!(status, 200);
    let (status, _) = send(&fake, with("system", json!("plain"))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn thinking_blocks_must_come_back_unchanged() {
    let fake = FakeAnthropic::start().await;
    let mut body = conversation(json!([
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": thinking_signature("hmm")},
            {"type": "text", "text": "a"},
        ]},
        {"role": "user", "content": "q2"},
    ]));
    body["max_tokens"] = json!(2048);
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    let (status, _) = send(&fake, body.clone()).await;
    assert_eq!(status, 200);

    body["messages"][1]["content"][0]["thinking"] = json!("edited");
    rejected(
        &fake,
        body.clone(),
        "messages.1.content.0: Invalid `signature` in `thinking` block",
    )
    .await;

    body["thinking"]["budget_tokens"] = json!(4096);
    rejected(
        &fake,
        body,
        "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size",
    )
    .await;
}

#[tokio::test]
async fn invalid_requests_do_not_use_up_the_script() {
    let fake = FakeAnthropic::start().await;
    fake.push(fake_anthropic::Reply::text("scripted"));
    let (status, _) = send(&fake, without("model")).await;
    assert_eq!(status, 400);
    assert_eq!(fake.pending(), 1);
    let (_, body) = send(&fake, simple("hi")).await;
    assert_eq!(body["content"][0]["text"], "scripted");
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![400, 200]);
}

/// A one-pixel PNG.
const PNG_1PX: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";

fn with_block(block: Value) -> Value {
    conversation(
        json!([{"role": "user", "content": [block, {"type": "text", "text": "what is this?"}]}]),
    )
}

fn image(media_type: &str, data: &str) -> Value {
    json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}})
}

#[tokio::test]
async fn images_and_documents_are_checked_as_the_api_checks_them() {
    let fake = FakeAnthropic::start().await;
    let (status, _) = send(&fake, with_block(image("image/png", PNG_1PX))).await;
    assert_eq!(status, 200, "a valid PNG is taken");
    let at = "messages.0.content.0.image.source.base64";
    rejected(
        &fake,
        with_block(image("image/jpeg", PNG_1PX)),
        &format!("{at}.data: Image does not match the provided media type image/jpeg"),
    )
    .await;
    rejected(
        &fake,
        with_block(image("image/bmp", PNG_1PX)),
        &format!(
            "{at}.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
        ),
    )
    .await;
    rejected(
        &fake,
        with_block(image("image/png", "not base64!")),
        &format!("{at}.data: invalid base64 data"),
    )
    .await;
    let huge = "A".repeat(5 * 1024 * 1024 + 4);
    rejected(
        &fake,
        with_block(image("image/png", &huge)),
        &format!(
            "{at}: image exceeds 5 MB maximum: {} bytes > 5242880 bytes",
            huge.len()
        ),
    )
    .await;
    rejected(
        &fake,
        with_block(json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PNG_1PX}})),
        "messages.0.content.0.document.source.base64: The PDF specified was not valid.",
    )
    .await;
    rejected(
        &fake,
        with_block(json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQgY3V0IHNob3J0"}})),
        "messages.0.content.0.document.source.base64: The PDF specified was not valid.",
    )
    .await;
    // Images belong to the user's side, in tool results too.
    rejected(
        &fake,
        conversation(json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [image("image/png", PNG_1PX)]},
        ])),
        "messages.1.content.0: `image` blocks can only be in `user` messages, not in `assistant` messages",
    )
    .await;
    rejected(
        &fake,
        conversation(json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [image("image/gif", PNG_1PX)]}]},
        ])),
        "messages.2.content.0.tool_result.content.0.image.source.base64.data: Image does not match the provided media type image/gif",
    )
    .await;
    // What it received is there for tests to look at.
    let first = &fake.requests()[0].body["messages"][0]["content"][0];
    assert_eq!(first["source"]["data"], PNG_1PX);
}

#[tokio::test]
async fn an_image_counts_as_an_image_not_as_its_base64() {
    let fake = FakeAnthropic::start_with(Config {
        context_window: Some(5_000),
        ..Config::default()
    })
    .await;
    // 60,000 characters of base64 would be 15,000 tokens as text.
    let mut png = base64_png_padded(60_000);
    png.truncate(png.len() / 4 * 4);
    let (status, body) = send(&fake, with_block(image("image/png", &png))).await;
    assert_eq!(status, 200, "{body}");
}

/// A valid PNG's base64 grown past `len` characters with a trailing chunk
/// of zero bytes (decoders stop at IEND; the sniffed type stays PNG).
fn base64_png_padded(len: usize) -> String {
    let mut s = PNG_1PX.trim_end_matches('=').to_owned();
    // Re-pad to a whole number of groups, then append zeros.
    while !s.len().is_multiple_of(4) {
        s.push('A');
    }
    while s.len() < len {
        s.push_str("AAAA");
    }
    s
}
