//! Prompt caching: breakpoints, reads and writes across requests, the
//! lookback window, minimum lengths, lifetimes and the usage split.

mod common;

use std::time::Duration;

use common::{invalid, prompt_tokens, send, split, stream};
use fake_anthropic::{Config, FakeAnthropic};
use serde_json::{Value, json};

/// Caches prompts of any length, so small test prompts are written.
async fn fake() -> FakeAnthropic {
    FakeAnthropic::start_with(Config {
        min_cacheable_tokens: Some(1),
        ..Config::default()
    })
    .await
}

fn text(n: usize) -> Value {
    json!({"type": "text", "text": format!("Block number {n} of a long conversation.")})
}

fn marked(mut block: Value, ttl: Option<&str>) -> Value {
    block["cache_control"] = match ttl {
        Some(ttl) => json!({"type": "ephemeral", "ttl": ttl}),
        None => json!({"type": "ephemeral"}),
    };
    block
}

/// One user message of `n` text blocks with a breakpoint on block
/// `breakpoint` (0-based), if any.
fn blocks(n: usize, breakpoint: Option<usize>) -> Value {
    let content: Vec<Value> = (0..n)
        .map(|i| {
            if Some(i) == breakpoint {
                marked(text(i), None)
            } else {
                text(i)
            }
        })
        .collect();
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": content}],
    })
}

async fn usage(fake: &FakeAnthropic, body: Value) -> Value {
    let (status, answer) = send(fake, body).await;
    assert_eq!(status, 200, "{answer}");
    answer["usage"].clone()
}

#[tokio::test]
async fn a_repeated_request_reads_what_the_first_wrote() {
    let fake = fake().await;
    let body = blocks(5, Some(4));
    let first = usage(&fake, body.clone()).await;
    let total = prompt_tokens(&first);
    assert!(total > 20, "{first}");
    assert_eq!(split(&first), (0, total, 0));
    assert_eq!(
        first["cache_creation"],
        json!({"ephemeral_5m_input_tokens": total, "ephemeral_1h_input_tokens": 0})
    );

    let second = usage(&fake, body).await;
    assert_eq!(split(&second), (total, 0, 0));
    assert_eq!(
        second["cache_creation"],
        json!({"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0})
    );

    let recorded = fake.requests();
    assert_eq!(recorded[0].usage.as_ref(), Some(&first));
    assert_eq!(recorded[1].usage_tokens("cache_read_input_tokens"), total);
}

#[tokio::test]
async fn without_breakpoints_nothing_is_cached() {
    let fake = fake().await;
    let first = usage(&fake, blocks(5, None)).await;
    let second = usage(&fake, blocks(5, None)).await;
    let total = prompt_tokens(&first);
    assert_eq!(split(&first), (0, 0, total));
    assert_eq!(split(&second), (0, 0, total));
}

#[tokio::test]
async fn a_longer_conversation_reads_the_old_prefix_and_writes_the_new_part() {
    let fake = fake().await;
    let first = usage(&fake, blocks(5, Some(4))).await;
    let old = prompt_tokens(&first);

    // Three blocks more, the breakpoint moved to the last but one, and one
    // block after it.
    let extended = usage(&fake, blocks(9, Some(7))).await;
    let (read, written, input) = split(&extended);
    assert_eq!(read, old);
    let all_nine = prompt_tokens(&extended);
    let tail = prompt_tokens(&usage(&fake, blocks(1, None)).await);
    assert!(written > 0 && input > 0, "{extended}");
    assert_eq!(read + written + input, all_nine);
    // Block 8 differs from block 0 only in its number.
    assert_eq!(input, tail);
}

#[tokio::test]
async fn the_lookback_reaches_twenty_blocks_before_a_breakpoint() {
    let fake = fake().await;
    let first = usage(&fake, blocks(5, Some(4))).await;
    let old = prompt_tokens(&first);
    // The prefix ending at block 4 is exactly 20 blocks before block 24.
    let reached = usage(&fake, blocks(25, Some(24))).await;
    assert_eq!(split(&reached).0, old);

    let fake = self::fake().await;
    usage(&fake, blocks(5, Some(4))).await;
    // From block 25 the lookback stops at block 5.
    let beyond = usage(&fake, blocks(26, Some(25))).await;
    assert_eq!(split(&beyond), (0, prompt_tokens(&beyond), 0));
}

#[tokio::test]
async fn a_second_breakpoint_keeps_an_old_prefix_in_reach() {
    let fake = fake().await;
    let first = usage(&fake, blocks(5, Some(4))).await;
    let old = prompt_tokens(&first);
    let mut body = blocks(40, Some(39));
    body["messages"][0]["content"][4] = marked(text(4), None);
    let (read, written, input) = split(&usage(&fake, body).await);
    assert_eq!(read, old);
    assert!(written > 0);
    assert_eq!(input, 0);
}

#[tokio::test]
async fn prefixes_below_the_minimum_are_not_cached() {
    // Claude Sonnet 4.5 caches from 1024 tokens; this prompt is ~60.
    let fake = FakeAnthropic::start().await;
    let body = blocks(5, Some(4));
    let first = usage(&fake, body.clone()).await;
    let total = prompt_tokens(&first);
    assert!(total < 1024);
    assert_eq!(split(&first), (0, 0, total));
    assert_eq!(split(&usage(&fake, body.clone()).await), (0, 0, total));

    fake.set_min_cacheable_tokens(Some(total));
    assert_eq!(split(&usage(&fake, body.clone()).await), (0, total, 0));
    assert_eq!(split(&usage(&fake, body).await), (total, 0, 0));
}

#[tokio::test]
async fn the_minimum_depends_on_the_model() {
    let fake = FakeAnthropic::start().await;
    // About 2000 tokens: enough for Sonnet 4.5 (1024), not for Opus 4.5 (4096).
    let long = json!({"type": "text", "text": "word ".repeat(1600), "cache_control": {"type": "ephemeral"}});
    let body = |model: &str| {
        json!({"model": model, "max_tokens": 10,
               "messages": [{"role": "user", "content": [long.clone()]}]})
    };
    let sonnet = usage(&fake, body("claude-sonnet-4-5-20250929")).await;
    let total = prompt_tokens(&sonnet);
    assert!((1024..4096).contains(&total), "{total}");
    assert_eq!(split(&sonnet), (0, total, 0));
    let opus = usage(&fake, body("claude-opus-4-5-20251101")).await;
    assert_eq!(split(&opus), (0, 0, total));
    // The cache is per model: Sonnet's entry is no hit for Opus.
    assert_eq!(
        split(&usage(&fake, body("claude-opus-4-5-20251101")).await).0,
        0
    );
    assert_eq!(
        split(&usage(&fake, body("claude-sonnet-4-5-20250929")).await).0,
        total
    );
}

#[tokio::test]
async fn more_than_four_breakpoints_is_a_400() {
    let fake = fake().await;
    let schema = json!({"type": "object", "properties": {}});
    let mut body = blocks(3, Some(2));
    body["tools"] = json!([
        {"name": "a", "input_schema": schema, "cache_control": {"type": "ephemeral"}},
    ]);
    body["system"] = json!([
        marked(json!({"type": "text", "text": "one"}), None),
        marked(json!({"type": "text", "text": "two"}), None),
    ]);
    let (status, _) = send(&fake, body.clone()).await;
    assert_eq!(status, 200, "four breakpoints are allowed");

    body["messages"][0]["content"][0] = marked(text(0), None);
    let (status, answer) = send(&fake, body).await;
    assert_eq!(
        (status, answer),
        (
            400,
            invalid("A maximum of 4 blocks with cache_control may be provided. Found 5.")
        )
    );
    assert_eq!(fake.requests()[1].usage, None);
}

#[tokio::test]
async fn a_one_hour_breakpoint_may_not_follow_a_five_minute_one() {
    let fake = fake().await;
    let mut body = blocks(3, None);
    body["system"] = json!([marked(json!({"type": "text", "text": "rules"}), Some("5m"))]);
    body["messages"][0]["content"][2] = marked(text(2), Some("1h"));
    let (status, answer) = send(&fake, body.clone()).await;
    assert_eq!(
        (status, answer),
        (
            400,
            invalid(
                "messages.0.content.2.cache_control.ttl: a ttl='1h' cache_control block must \
                 not come after a ttl='5m' cache_control block. Note that blocks are processed \
                 in the following order: `tools`, `system`, `messages`."
            )
        )
    );

    // The other way round is fine, and each part is billed at its own TTL.
    body["system"][0]["cache_control"]["ttl"] = json!("1h");
    body["messages"][0]["content"][2]["cache_control"]["ttl"] = json!("5m");
    let first = usage(&fake, body).await;
    let one_hour = first["cache_creation"]["ephemeral_1h_input_tokens"]
        .as_u64()
        .expect("number");
    let five_minutes = first["cache_creation"]["ephemeral_5m_input_tokens"]
        .as_u64()
        .expect("number");
    assert!(one_hour > 0 && five_minutes > 0, "{first}");
    assert_eq!(
        one_hour + five_minutes,
        first["cache_creation_input_tokens"]
    );
}

#[tokio::test]
async fn cache_control_is_checked_where_it_appears() {
    let fake = fake().await;
    let mut body = blocks(1, None);
    body["messages"][0]["content"][0]["cache_control"] = json!({"type": "ephemeral", "ttl": "2h"});
    let (status, answer) = send(&fake, body).await;
    assert_eq!(
        (status, answer),
        (
            400,
            invalid(
                "messages.0.content.0.text.cache_control.ephemeral.ttl: Input should be '5m' or '1h'"
            )
        )
    );

    let mut body = blocks(1, None);
    body["messages"][0]["content"][0]["cache_control"] = json!({"type": "persistent"});
    let (status, _) = send(&fake, body).await;
    assert_eq!(status, 400);

    let mut body = blocks(1, None);
    body["messages"] = json!([
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hm", "signature": fake_anthropic::thinking_signature("hm"),
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "a"},
        ]},
        {"role": "user", "content": "q2"},
    ]);
    let (status, answer) = send(&fake, body).await;
    assert_eq!(
        (status, answer),
        (
            400,
            invalid("messages.1.content.0.thinking.cache_control: Extra inputs are not permitted")
        )
    );

    let mut body = blocks(1, None);
    body["messages"][0]["content"] =
        json!([{"type": "text", "text": "", "cache_control": {"type": "ephemeral"}}]);
    let (status, answer) = send(&fake, body).await;
    assert_eq!(
        (status, answer),
        (
            400,
            invalid("messages.0.content.0.text: cache_control cannot be set for empty text blocks")
        )
    );
}

#[tokio::test]
async fn tools_and_tool_results_carry_breakpoints() {
    let fake = fake().await;
    let schema = json!({"type": "object", "properties": {"command": {"type": "string"}}});
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "tools": [{"name": "Bash", "input_schema": schema, "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "run it"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                "content": [{"type": "text", "text": "a.txt", "cache_control": {"type": "ephemeral"}}]}]},
        ],
    });
    let first = usage(&fake, body.clone()).await;
    let total = prompt_tokens(&first);
    assert_eq!(split(&first), (0, total, 0));

    // A changed conversation still finds the tool definitions.
    let mut changed = body.clone();
    changed["messages"][0]["content"] = json!("run something else");
    let (read, written, _) = split(&usage(&fake, changed).await);
    assert!(read > 0 && read < total, "{read} of {total}");
    assert!(written > 0);
}

#[tokio::test]
async fn entries_expire_unless_read() {
    let fake = fake().await;
    let body = blocks(5, Some(4));
    let total = prompt_tokens(&usage(&fake, body.clone()).await);

    fake.advance_clock(Duration::from_secs(4 * 60));
    assert_eq!(split(&usage(&fake, body.clone()).await), (total, 0, 0));
    // Eight minutes after the write, four after the read that refreshed it.
    fake.advance_clock(Duration::from_secs(4 * 60));
    assert_eq!(split(&usage(&fake, body.clone()).await), (total, 0, 0));
    fake.advance_clock(Duration::from_secs(5 * 60 + 1));
    assert_eq!(split(&usage(&fake, body).await), (0, total, 0));
}

#[tokio::test]
async fn one_hour_entries_outlive_five_minutes() {
    let fake = fake().await;
    let mut body = blocks(5, None);
    body["messages"][0]["content"][4] = marked(text(4), Some("1h"));
    let first = usage(&fake, body.clone()).await;
    let total = prompt_tokens(&first);
    assert_eq!(first["cache_creation"]["ephemeral_1h_input_tokens"], total);

    // Over HTTP, as a test in another language would.
    let advance = |ms: u64| {
        let url = format!("{}/_fake/clock", fake.url());
        async move {
            let response = common::client()
                .post(url)
                .json(&json!({"advance_ms": ms}))
                .send()
                .await
                .expect("sent");
            assert_eq!(response.status(), 200);
        }
    };
    advance(30 * 60 * 1000).await;
    assert_eq!(split(&usage(&fake, body.clone()).await).0, total);
    advance(61 * 60 * 1000).await;
    assert_eq!(split(&usage(&fake, body).await), (0, total, 0));
}

#[tokio::test]
async fn reset_empties_the_cache() {
    let fake = fake().await;
    let body = blocks(5, Some(4));
    let total = prompt_tokens(&usage(&fake, body.clone()).await);
    fake.reset();
    assert_eq!(split(&usage(&fake, body).await), (0, total, 0));
}

#[tokio::test]
async fn automatic_caching_follows_the_conversation() {
    let fake = fake().await;
    let mut first = blocks(5, None);
    first["cache_control"] = json!({"type": "ephemeral"});
    let old = prompt_tokens(&usage(&fake, first.clone()).await);
    assert_eq!(
        split(&fake.requests()[0].usage.clone().expect("usage")),
        (0, old, 0)
    );

    let mut longer = blocks(8, None);
    longer["cache_control"] = json!({"type": "ephemeral"});
    let (read, written, input) = split(&usage(&fake, longer).await);
    assert_eq!(read, old);
    assert!(written > 0);
    assert_eq!(input, 0);

    // It takes a fifth slot when four explicit breakpoints are elsewhere.
    let mut full = blocks(5, None);
    for i in 0..4 {
        full["messages"][0]["content"][i] = marked(text(i), None);
    }
    full["cache_control"] = json!({"type": "ephemeral"});
    let (status, answer) = send(&fake, full).await;
    assert_eq!(
        (status, answer),
        (
            400,
            invalid("A maximum of 4 blocks with cache_control may be provided. Found 5.")
        )
    );
}

#[tokio::test]
async fn changing_tool_choice_invalidates_the_messages_but_not_the_system() {
    let fake = fake().await;
    let schema = json!({"type": "object", "properties": {}});
    let mut body = blocks(3, Some(2));
    body["tools"] = json!([{"name": "a", "input_schema": schema}]);
    body["system"] = json!([marked(json!({"type": "text", "text": "rules"}), None)]);
    let total = prompt_tokens(&usage(&fake, body.clone()).await);
    body["tool_choice"] = json!({"type": "any"});
    let (read, written, _) = split(&usage(&fake, body).await);
    assert!(
        read > 0 && read < total,
        "only tools and system are read: {read}"
    );
    assert_eq!(read + written, total);
}

#[tokio::test]
async fn streams_report_the_same_usage() {
    let fake = fake().await;
    let body = blocks(5, Some(4));
    let total = prompt_tokens(&usage(&fake, body.clone()).await);

    let streamed = stream(&fake, body).await;
    let start = &streamed.events[0].data["message"]["usage"];
    assert_eq!(split(start), (total, 0, 0));
    assert_eq!(
        start["cache_creation"],
        json!({"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0})
    );
    let delta = streamed
        .events
        .iter()
        .find(|e| e.name == "message_delta")
        .expect("message_delta");
    assert_eq!(split(&delta.data["usage"]), (total, 0, 0));
    let recorded = fake.requests()[1].usage.clone().expect("usage");
    assert_eq!(
        recorded["output_tokens"],
        delta.data["usage"]["output_tokens"]
    );
    assert_eq!(split(&recorded), (total, 0, 0));
}

#[tokio::test]
async fn scripted_errors_neither_read_nor_write() {
    let fake = fake().await;
    fake.push(fake_anthropic::Reply::overloaded(1));
    let body = blocks(5, Some(4));
    let (status, _) = send(&fake, body.clone()).await;
    assert_eq!(status, 529);
    assert_eq!(fake.requests()[0].usage, None);
    let first = usage(&fake, body).await;
    assert_eq!(split(&first).0, 0);
}
