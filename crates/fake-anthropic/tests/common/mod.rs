//! Helpers shared by the HTTP-level tests: a client that speaks to the fake
//! like an SDK would, and an incremental SSE reader.

#![allow(dead_code)]

use std::time::Instant;

use fake_anthropic::FakeAnthropic;
use futures::StreamExt;
use serde_json::{Value, json};

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// A POST to `/v1/messages` with the headers the SDKs send.
pub fn messages_request(fake: &FakeAnthropic, body: &Value) -> reqwest::RequestBuilder {
    client()
        .post(format!("{}/v1/messages", fake.url()))
        .header("x-api-key", "test-key")
        .header("anthropic-version", "2023-06-01")
        .json(body)
}

pub async fn send(fake: &FakeAnthropic, body: Value) -> (u16, Value) {
    let response = messages_request(fake, &body)
        .send()
        .await
        .expect("request reaches the fake");
    let status = response.status().as_u16();
    let body = response.json().await.expect("the fake answers JSON");
    (status, body)
}

pub fn simple(text: &str) -> Value {
    json!({
        "model": "claude-test",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": text}],
    })
}

pub fn invalid(message: &str) -> Value {
    json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
}

/// One received SSE event and when it arrived.
#[derive(Debug)]
pub struct Received {
    pub name: String,
    pub data: Value,
    pub at: Instant,
}

/// How a stream ended: cleanly, or with a transport error.
#[derive(Debug)]
pub struct Streamed {
    pub events: Vec<Received>,
    pub transport_error: Option<String>,
    pub finished_at: Instant,
}

impl Streamed {
    pub fn names(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.name.as_str()).collect()
    }

    pub fn deltas(&self, kind: &str, field: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e.data["type"] == "content_block_delta" && e.data["delta"]["type"] == kind)
            .map(|e| {
                e.data["delta"][field]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }
}

/// Reads the body chunk by chunk, stamping each event as it is parsed, so
/// tests can tell a slow stream from a buffered one.
pub async fn read_stream(response: reqwest::Response) -> Streamed {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let mut transport_error = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => buffer.push_str(std::str::from_utf8(&bytes).expect("utf-8 SSE")),
            Err(e) => {
                transport_error = Some(e.to_string());
                break;
            }
        }
        while let Some(end) = buffer.find("\n\n") {
            let raw: String = buffer.drain(..end + 2).collect();
            let mut name = None;
            let mut data = None;
            for line in raw.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(v).expect("data is JSON"));
                } else if !line.is_empty() {
                    panic!("unexpected SSE line: {line:?}");
                }
            }
            let name = name.expect("every event is named");
            let data: Value = data.expect("every event has data");
            assert_eq!(data["type"], name, "the data type matches the event name");
            events.push(Received {
                name,
                data,
                at: Instant::now(),
            });
        }
    }
    assert!(
        transport_error.is_some() || buffer.is_empty(),
        "stream ended mid-event: {buffer:?}"
    );
    Streamed {
        events,
        transport_error,
        finished_at: Instant::now(),
    }
}

pub async fn stream(fake: &FakeAnthropic, mut body: Value) -> Streamed {
    body["stream"] = json!(true);
    let response = messages_request(fake, &body)
        .send()
        .await
        .expect("request reaches the fake");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    read_stream(response).await
}

/// `(cache_read_input_tokens, cache_creation_input_tokens, input_tokens)`
/// of a message's or an event's `usage`.
pub fn split(usage: &Value) -> (u64, u64, u64) {
    let field = |name: &str| {
        usage[name]
            .as_u64()
            .unwrap_or_else(|| panic!("usage.{name} is a number: {usage}"))
    };
    (
        field("cache_read_input_tokens"),
        field("cache_creation_input_tokens"),
        field("input_tokens"),
    )
}

/// The whole prompt: what was read, written and sent uncached.
pub fn prompt_tokens(usage: &Value) -> u64 {
    let (read, written, input) = split(usage);
    read + written + input
}
