//! Streamed answers: event order, deltas, and scripted stream failures.

mod common;

use std::time::Duration;

use common::{simple, stream};
use fake_anthropic::{FakeAnthropic, Reply};
use serde_json::{Value, json};

#[tokio::test]
async fn text_stream_has_the_real_event_order() {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::text("The quick brown fox"));
    let streamed = stream(&fake, simple("q")).await;
    assert!(streamed.transport_error.is_none());
    assert_eq!(
        streamed.names(),
        vec![
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let events = &streamed.events;
    let start = &events[0].data["message"];
    assert!(start["id"].as_str().expect("id").starts_with("msg_"));
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], json!(null));
    assert_eq!(start["model"], "claude-test");
    assert!(start["usage"]["input_tokens"].as_u64().expect("input") >= 1);
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(
        events[2].data,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(
        streamed.deltas("text_delta", "text").concat(),
        "The quick brown fox"
    );
    assert_eq!(
        events[7].data,
        json!({"type": "content_block_stop", "index": 0})
    );
    let delta = &events[8].data;
    assert_eq!(
        delta["delta"],
        json!({"stop_reason": "end_turn", "stop_sequence": null})
    );
    assert!(delta["usage"]["output_tokens"].as_u64().expect("output") >= 1);
    assert_eq!(events[9].data, json!({"type": "message_stop"}));
}

#[tokio::test]
async fn tool_input_arrives_in_chunks_that_reassemble() {
    let fake = FakeAnthropic::start().await;
    let input = json!({"command": "grep -rn 'needle' src/ | head -20", "timeout": 30});
    fake.push(Reply::ToolUse {
        text: Some("Searching.".into()),
        calls: vec![("Bash".into(), input.clone()), ("Read".into(), json!({}))],
    });
    let streamed = stream(&fake, simple("find it")).await;
    let events = &streamed.events;

    let starts: Vec<&Value> = events
        .iter()
        .filter(|e| e.name == "content_block_start")
        .map(|e| &e.data)
        .collect();
    assert_eq!(starts.len(), 3);
    assert_eq!(starts[0]["content_block"]["type"], "text");
    let tool = &starts[1]["content_block"];
    assert_eq!(tool["type"], "tool_use");
    assert_eq!(tool["name"], "Bash");
    assert_eq!(tool["input"], json!({}));
    assert!(tool["id"].as_str().expect("id").starts_with("toolu_"));

    let chunks: Vec<String> = events
        .iter()
        .filter(|e| e.data["index"] == 1 && e.data["delta"]["type"] == "input_json_delta")
        .map(|e| {
            e.data["delta"]["partial_json"]
                .as_str()
                .expect("chunk")
                .to_owned()
        })
        .collect();
    assert!(chunks.len() >= 3, "{chunks:?}");
    let reassembled: Value = serde_json::from_str(&chunks.concat()).expect("valid JSON");
    assert_eq!(reassembled, input);

    let empty: String = events
        .iter()
        .filter(|e| e.data["index"] == 2 && e.data["delta"]["type"] == "input_json_delta")
        .map(|e| e.data["delta"]["partial_json"].as_str().expect("chunk"))
        .collect();
    assert_eq!(empty, "{}");

    let message_delta = events
        .iter()
        .find(|e| e.name == "message_delta")
        .expect("message_delta");
    assert_eq!(message_delta.data["delta"]["stop_reason"], "tool_use");
    assert_eq!(streamed.names().last(), Some(&"message_stop"));
}

#[tokio::test]
async fn thinking_streams_deltas_and_a_signature() {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::Thinking {
        thinking: "First, consider the question.".into(),
        text: "Answer.".into(),
    });
    let streamed = stream(&fake, simple("q")).await;
    let events = &streamed.events;
    assert_eq!(
        events[2].data["content_block"],
        json!({"type": "thinking", "thinking": "", "signature": ""})
    );
    assert_eq!(
        streamed.deltas("thinking_delta", "thinking").concat(),
        "First, consider the question."
    );
    assert_eq!(
        streamed.deltas("signature_delta", "signature"),
        vec![fake_anthropic::thinking_signature(
            "First, consider the question."
        )]
    );
    let signature_at = events
        .iter()
        .position(|e| e.data["delta"]["type"] == "signature_delta")
        .expect("signature");
    assert_eq!(events[signature_at + 1].name, "content_block_stop");
    assert_eq!(streamed.deltas("text_delta", "text").concat(), "Answer.");
    assert!(events.iter().any(|e| e.data["index"] == 1));
}

#[tokio::test]
async fn slow_spaces_events_out() {
    let fake = FakeAnthropic::start().await;
    let delay = 60;
    fake.push(Reply::text("one two three four").slow(delay));
    let streamed = stream(&fake, simple("q")).await;
    assert_eq!(streamed.names().last(), Some(&"message_stop"));
    let first_delta = streamed
        .events
        .iter()
        .find(|e| e.data["delta"]["type"] == "text_delta")
        .expect("a text delta");
    // Six more events follow the first delta, each `delay` apart; a buffered
    // stream would deliver them all at once.
    let after = streamed.finished_at.duration_since(first_delta.at);
    assert!(
        after >= Duration::from_millis(delay * 4),
        "first delta only {after:?} before the end"
    );
    let gaps: Vec<Duration> = streamed
        .events
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect();
    assert!(
        gaps.iter()
            .filter(|g| **g >= Duration::from_millis(delay / 2))
            .count()
            >= 6,
        "{gaps:?}"
    );
}

#[tokio::test]
async fn cut_drops_the_connection_without_message_stop() {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::text("one two three four five").cut_after(5));
    let streamed = stream(&fake, simple("q")).await;
    assert_eq!(streamed.events.len(), 5);
    assert!(!streamed.names().contains(&"message_stop"));
    assert!(
        streamed.transport_error.is_some(),
        "the connection must end abruptly, not cleanly"
    );
}

#[tokio::test]
async fn cut_past_the_end_still_withholds_message_stop() {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::text("short").cut_after(1000));
    let streamed = stream(&fake, simple("q")).await;
    assert_eq!(streamed.names().last(), Some(&"message_delta"));
    assert!(streamed.transport_error.is_some());
}

#[tokio::test]
async fn stream_error_sends_an_error_event_then_ends() {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::StreamError {
        reply: Box::new(Reply::text("one two three")),
        after_events: 4,
        error_type: "overloaded_error".into(),
        message: "Overloaded".into(),
    });
    let streamed = stream(&fake, simple("q")).await;
    assert!(
        streamed.transport_error.is_none(),
        "the stream ends cleanly"
    );
    assert_eq!(
        streamed.names(),
        vec![
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "error"
        ]
    );
    assert_eq!(
        streamed.events[4].data,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    assert_eq!(fake.requests()[0].status, 200);
}

#[tokio::test]
async fn max_tokens_can_cut_a_tool_call_mid_input() {
    let fake = FakeAnthropic::start().await;
    let input = json!({"command": "find . -name '*.rs' -newer Cargo.toml -print"});
    fake.push(Reply::ToolUse {
        text: Some("Looking.".into()),
        calls: vec![("Bash".into(), input.clone()), ("Read".into(), json!({}))],
    });
    let mut body = simple("find it");
    // 8 characters of text, then 32 of the input's 56.
    body["max_tokens"] = json!(10);
    let streamed = stream(&fake, body).await;
    assert!(streamed.transport_error.is_none());
    assert_eq!(
        streamed.names(),
        vec![
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let events = &streamed.events;
    assert_eq!(events[5].data["content_block"]["name"], "Bash");
    let partial: String = events
        .iter()
        .filter(|e| e.data["index"] == 1 && e.data["delta"]["type"] == "input_json_delta")
        .map(|e| e.data["delta"]["partial_json"].as_str().expect("chunk"))
        .collect();
    let full = input.to_string();
    assert_eq!(partial, full[..32]);
    assert!(serde_json::from_str::<Value>(&partial).is_err());
    assert_eq!(
        events[12].data["delta"],
        json!({"stop_reason": "max_tokens", "stop_sequence": null})
    );
    assert_eq!(events[12].data["usage"]["output_tokens"], 10);
    assert!(
        !events.iter().any(|e| e.data["index"] == 2),
        "nothing is generated after the cut"
    );
}
