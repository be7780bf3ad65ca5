//! The Anthropic client against a scripted in-process Messages API: streaming
//! assembly, incremental delivery, retries, error mapping and request headers.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use claude_agent_http::agent::{
    AnthropicClient, AnthropicConfig, ContentBlock, Message, ModelClient, ModelError, ModelEvent,
    ModelRequest, ModelResponse, Usage,
};
use futures::StreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

/// One scripted answer of the fake upstream.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

impl Reply {
    fn sse(events: &[Value]) -> Self {
        Self::sse_body(Body::from(sse(events)))
    }

    fn sse_body(body: Body) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type", "text/event-stream".into())],
            body,
        }
    }

    fn error(status: u16, error_type: &str, message: &str) -> Self {
        let body = json!({"type": "error", "error": {"type": error_type, "message": message}});
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: Body::from(body.to_string()),
        }
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// What the fake upstream received.
struct Seen {
    headers: HeaderMap,
    body: Value,
}

#[derive(Clone, Default)]
struct Upstream {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn messages(State(upstream): State<Upstream>, headers: HeaderMap, body: Bytes) -> Response {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    upstream.seen.lock().unwrap().push(Seen { headers, body });
    let reply = upstream
        .replies
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| Reply::error(500, "api_error", "no scripted reply left"));
    let mut response = Response::builder().status(StatusCode::from_u16(reply.status).unwrap());
    for (name, value) in reply.headers {
        response = response.header(name, value);
    }
    response.body(reply.body).unwrap()
}

async fn spawn_upstream(replies: Vec<Reply>) -> (String, Upstream) {
    let upstream = Upstream::default();
    upstream.replies.lock().unwrap().extend(replies);
    let app = axum::Router::new()
        .route("/v1/messages", axum::routing::post(messages))
        .with_state(upstream.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base_url, upstream)
}

fn config(base_url: &str) -> AnthropicConfig {
    AnthropicConfig {
        base_url: base_url.to_owned(),
        api_key: Some(SecretString::from("sk-ant-test-key")),
        auth_token: None,
        max_retries: 2,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(20),
    }
}

fn client(base_url: &str) -> AnthropicClient {
    AnthropicClient::new(config(base_url)).unwrap()
}

fn request() -> ModelRequest {
    let mut request = ModelRequest::new(
        "claude-sonnet-4-6",
        1024,
        vec![Message::user_text("Say hello")],
    );
    request.system = vec!["You are terse.".into()];
    request
}

/// Runs one call and collects what went to the event channel.
async fn call(client: &AnthropicClient) -> (Result<ModelResponse, ModelError>, Vec<ModelEvent>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let result = client.send(&request(), &tx).await;
    drop(tx);
    let mut events = Vec::new();
    while let Some(event) = rx.recv().await {
        events.push(event);
    }
    (result, events)
}

fn sse(events: &[Value]) -> String {
    events
        .iter()
        .map(|event| {
            format!(
                "event: {}\ndata: {event}\n\n",
                event["type"].as_str().unwrap()
            )
        })
        .collect()
}

fn message_start() -> Value {
    json!({"type": "message_start", "message": {
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 21, "output_tokens": 1,
                  "cache_creation_input_tokens": 5, "cache_read_input_tokens": 3}
    }})
}

fn text_start(index: u64) -> Value {
    json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
}

fn text_delta(index: u64, text: &str) -> Value {
    json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}})
}

fn block_stop(index: u64) -> Value {
    json!({"type": "content_block_stop", "index": index})
}

fn message_end(stop_reason: &str, output_tokens: u64) -> [Value; 2] {
    [
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
               "usage": {"output_tokens": output_tokens}}),
        json!({"type": "message_stop"}),
    ]
}

fn hello_stream() -> Vec<Value> {
    let mut events = vec![
        message_start(),
        text_start(0),
        text_delta(0, "Hello"),
        text_delta(0, ", world"),
        block_stop(0),
    ];
    events.extend(message_end("end_turn", 9));
    events
}

#[tokio::test]
async fn text_streams_and_assembles_with_usage_from_message_delta() {
    let mut events = vec![
        message_start(),
        json!({"type": "ping"}),
        text_start(0),
        text_delta(0, "Hello"),
        json!({"type": "future_event", "payload": {"x": 1}}),
        text_delta(0, ", world"),
        block_stop(0),
    ];
    events.extend(message_end("end_turn", 9));
    let (base_url, upstream) = spawn_upstream(vec![Reply::sse(&events)]).await;

    let (result, events) = call(&client(&base_url)).await;

    let response = result.unwrap();
    assert_eq!(response.id, "msg_01");
    assert_eq!(response.model, "claude-sonnet-4-6");
    assert_eq!(
        response.content,
        vec![ContentBlock::Text {
            text: "Hello, world".into()
        }]
    );
    assert_eq!(response.stop_reason.as_deref(), Some("end_turn"));
    assert_eq!(
        response.usage,
        Usage {
            input_tokens: 21,
            output_tokens: 9,
            cache_creation_input_tokens: 5,
            cache_read_input_tokens: 3,
        }
    );
    assert_eq!(
        events,
        vec![
            ModelEvent::TextDelta("Hello".into()),
            ModelEvent::TextDelta(", world".into())
        ]
    );
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn first_text_delta_arrives_before_the_upstream_finishes() {
    let release = Arc::new(Notify::new());
    let head = sse(&[message_start(), text_start(0), text_delta(0, "first")]);
    let mut rest = vec![text_delta(0, " second"), block_stop(0)];
    rest.extend(message_end("end_turn", 2));
    let rest = sse(&rest);
    let gate = release.clone();
    let body = futures::stream::iter([Ok::<_, std::io::Error>(head)]).chain(futures::stream::once(
        async move {
            gate.notified().await;
            Ok(rest)
        },
    ));
    let (base_url, _upstream) =
        spawn_upstream(vec![Reply::sse_body(Body::from_stream(body))]).await;
    let client = client(&base_url);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let call = tokio::spawn(async move { client.send(&request(), &tx).await });

    // Bounded only so a buffering client fails the test instead of hanging it.
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the first delta must arrive while the upstream still holds the rest");
    assert_eq!(first, Some(ModelEvent::TextDelta("first".into())));
    assert!(!call.is_finished());
    release.notify_one();

    let response = call.await.unwrap().unwrap();
    assert_eq!(response.text(), "first second");
    assert_eq!(
        rx.recv().await,
        Some(ModelEvent::TextDelta(" second".into()))
    );
}

#[tokio::test]
async fn tool_use_is_assembled_from_partial_json_chunks() {
    let mut events = vec![
        message_start(),
        text_start(0),
        text_delta(0, "Let me look."),
        block_stop(0),
        json!({"type": "content_block_start", "index": 1, "content_block":
               {"type": "tool_use", "id": "toolu_01", "name": "read_file", "input": {}}}),
    ];
    for chunk in ["", "{\"pa", "th\": \"src/", "main.rs\", \"li", "mit\": 20}"] {
        events.push(json!({"type": "content_block_delta", "index": 1,
                           "delta": {"type": "input_json_delta", "partial_json": chunk}}));
    }
    events.push(block_stop(1));
    events.extend(message_end("tool_use", 40));
    let (base_url, _upstream) = spawn_upstream(vec![Reply::sse(&events)]).await;

    let (result, events) = call(&client(&base_url)).await;

    let response = result.unwrap();
    let input = json!({"path": "src/main.rs", "limit": 20});
    assert_eq!(response.stop_reason.as_deref(), Some("tool_use"));
    assert_eq!(
        response.content,
        vec![
            ContentBlock::Text {
                text: "Let me look.".into()
            },
            ContentBlock::ToolUse {
                id: "toolu_01".into(),
                name: "read_file".into(),
                input: input.clone()
            },
        ]
    );
    assert_eq!(
        events,
        vec![
            ModelEvent::TextDelta("Let me look.".into()),
            ModelEvent::ToolUse {
                id: "toolu_01".into(),
                name: "read_file".into(),
                input
            },
        ]
    );
}

#[tokio::test]
async fn thinking_and_its_signature_are_kept_verbatim() {
    let mut events = vec![
        message_start(),
        json!({"type": "content_block_start", "index": 0, "content_block":
               {"type": "thinking", "thinking": "", "signature": ""}}),
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "thinking_delta", "thinking": "The user wants "}}),
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "thinking_delta", "thinking": "a greeting."}}),
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA=="}}),
        block_stop(0),
        json!({"type": "content_block_start", "index": 1, "content_block":
               {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"}}),
        block_stop(1),
        text_start(2),
        text_delta(2, "Hi!"),
        block_stop(2),
    ];
    events.extend(message_end("end_turn", 30));
    let (base_url, _upstream) = spawn_upstream(vec![Reply::sse(&events)]).await;

    let (result, events) = call(&client(&base_url)).await;

    assert_eq!(
        result.unwrap().content,
        vec![
            ContentBlock::Thinking {
                thinking: "The user wants a greeting.".into(),
                signature: "EqQBCgIYAhIM1gbcDa9GJwZA==".into(),
            },
            ContentBlock::RedactedThinking {
                data: "EmwKAhgBEgy3va3pzix/LafPsn4a".into()
            },
            ContentBlock::Text { text: "Hi!".into() },
        ]
    );
    assert_eq!(
        events,
        vec![
            ModelEvent::ThinkingDelta("The user wants ".into()),
            ModelEvent::ThinkingDelta("a greeting.".into()),
            ModelEvent::TextDelta("Hi!".into()),
        ]
    );
}

#[tokio::test]
async fn error_event_after_200_is_a_stream_error_with_partial_text_and_no_retry() {
    let events = [
        message_start(),
        text_start(0),
        text_delta(0, "Half of"),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ];
    let (base_url, upstream) =
        spawn_upstream(vec![Reply::sse(&events), Reply::sse(&hello_stream())]).await;

    let (result, _events) = call(&client(&base_url)).await;

    match result.unwrap_err() {
        ModelError::Stream { message, partial } => {
            assert!(message.contains("overloaded_error"), "{message}");
            assert!(message.contains("Overloaded"), "{message}");
            assert_eq!(
                partial,
                vec![ContentBlock::Text {
                    text: "Half of".into()
                }]
            );
        }
        other => panic!("expected a stream error, got {other:?}"),
    }
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn stream_ending_without_message_stop_returns_partial_content() {
    let events = [
        message_start(),
        text_start(0),
        text_delta(0, "Done so far."),
        block_stop(0),
        text_start(1),
        text_delta(1, "And then"),
        json!({"type": "content_block_start", "index": 2, "content_block":
               {"type": "tool_use", "id": "toolu_01", "name": "bash", "input": {}}}),
        json!({"type": "content_block_delta", "index": 2,
               "delta": {"type": "input_json_delta", "partial_json": "{\"comm"}}),
    ];
    let (base_url, upstream) = spawn_upstream(vec![Reply::sse(&events)]).await;

    let (result, events) = call(&client(&base_url)).await;

    let error = result.unwrap_err();
    assert!(matches!(error, ModelError::Stream { .. }), "{error:?}");
    assert_eq!(
        error.partial(),
        [
            ContentBlock::Text {
                text: "Done so far.".into()
            },
            ContentBlock::Text {
                text: "And then".into()
            },
        ]
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ModelEvent::ToolUse { .. }))
    );
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn connection_dropped_mid_stream_returns_partial_text() {
    let release = Arc::new(Notify::new());
    let head = sse(&[message_start(), text_start(0), text_delta(0, "Cut here")]);
    let gate = release.clone();
    // The cut waits until the client has seen the head, so it lands mid-body
    // rather than before the response headers.
    let body = futures::stream::iter([Ok(head)]).chain(futures::stream::once(async move {
        gate.notified().await;
        Err(std::io::Error::other("upstream went away"))
    }));
    let (base_url, upstream) = spawn_upstream(vec![
        Reply::sse_body(Body::from_stream(body)),
        Reply::sse(&hello_stream()),
    ])
    .await;
    let client = client(&base_url);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let call = tokio::spawn(async move { client.send(&request(), &tx).await });
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    assert_eq!(
        first.unwrap(),
        Some(ModelEvent::TextDelta("Cut here".into()))
    );
    release.notify_one();

    match call.await.unwrap().unwrap_err() {
        ModelError::Stream { message, partial } => {
            assert!(message.contains("connection lost"), "{message}");
            assert_eq!(
                partial,
                vec![ContentBlock::Text {
                    text: "Cut here".into()
                }]
            );
        }
        other => panic!("expected a stream error, got {other:?}"),
    }
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn overloaded_twice_then_success_is_retried_with_backoff() {
    let (base_url, upstream) = spawn_upstream(vec![
        Reply::error(529, "overloaded_error", "Overloaded"),
        Reply::error(529, "overloaded_error", "Overloaded"),
        Reply::sse(&hello_stream()),
    ])
    .await;

    let started = Instant::now();
    let (result, _events) = call(&client(&base_url)).await;

    assert_eq!(result.unwrap().text(), "Hello, world");
    assert_eq!(upstream.requests(), 3);
    // 0.5 s and 1 s, each less up to 25 % jitter.
    assert!(started.elapsed() >= Duration::from_millis(1125));
}

#[tokio::test]
async fn overloaded_always_gives_status_after_max_retries_plus_one_attempts() {
    let replies = (0..5)
        .map(|_| Reply::error(529, "overloaded_error", "Overloaded").header("retry-after-ms", "1"))
        .collect();
    let (base_url, upstream) = spawn_upstream(replies).await;

    let (result, _events) = call(&client(&base_url)).await;

    match result.unwrap_err() {
        ModelError::Status {
            status,
            error_type,
            message,
        } => {
            assert_eq!(status, 529);
            assert_eq!(error_type, "overloaded_error");
            assert_eq!(message, "Overloaded");
        }
        other => panic!("expected a status error, got {other:?}"),
    }
    assert_eq!(upstream.requests(), 3);
}

#[tokio::test]
async fn retry_after_ms_is_honoured_instead_of_backoff() {
    let (base_url, upstream) = spawn_upstream(vec![
        Reply::error(429, "rate_limit_error", "Slow down").header("retry-after-ms", "1000"),
        Reply::sse(&hello_stream()),
    ])
    .await;

    let started = Instant::now();
    let (result, _events) = call(&client(&base_url)).await;

    assert!(result.is_ok());
    assert_eq!(upstream.requests(), 2);
    // The first backoff step would be at most 500 ms.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1000), "{waited:?}");
}

#[tokio::test]
async fn x_should_retry_false_stops_retries() {
    let (base_url, upstream) = spawn_upstream(vec![
        Reply::error(529, "overloaded_error", "Overloaded").header("x-should-retry", "false"),
        Reply::sse(&hello_stream()),
    ])
    .await;

    let (result, _events) = call(&client(&base_url)).await;

    assert!(matches!(
        result,
        Err(ModelError::Status { status: 529, .. })
    ));
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn bad_request_is_not_retried() {
    let (base_url, upstream) = spawn_upstream(vec![
        Reply::error(
            400,
            "invalid_request_error",
            "messages: roles must alternate",
        ),
        Reply::sse(&hello_stream()),
    ])
    .await;

    let (result, _events) = call(&client(&base_url)).await;

    let error = result.unwrap_err();
    assert!(
        matches!(&error, ModelError::Status { status: 400, error_type, message }
            if error_type == "invalid_request_error" && message == "messages: roles must alternate"),
        "{error:?}"
    );
    assert!(error.to_string().contains("roles must alternate"));
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn unauthorized_carries_the_upstream_message_and_never_the_key() {
    let (base_url, upstream) = spawn_upstream(vec![Reply::error(
        401,
        "authentication_error",
        "invalid x-api-key",
    )])
    .await;

    let (result, _events) = call(&client(&base_url)).await;

    let error = result.unwrap_err();
    assert!(
        matches!(&error, ModelError::Unauthorized { message } if message == "invalid x-api-key"),
        "{error:?}"
    );
    assert!(!error.to_string().contains("sk-ant-test-key"));
    assert!(!format!("{error:?}").contains("sk-ant-test-key"));
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn unreadable_error_body_is_summarised() {
    let reply = Reply {
        status: 502,
        headers: vec![("content-type", "text/html".into())],
        body: Body::from("<html>Bad Gateway</html>"),
    };
    let (base_url, upstream) = spawn_upstream(vec![reply]).await;
    let client = AnthropicClient::new(AnthropicConfig {
        max_retries: 0,
        ..config(&base_url)
    })
    .unwrap();

    let (result, _events) = call(&client).await;

    assert!(
        matches!(&result, Err(ModelError::Status { status: 502, message, .. }) if message.contains("Bad Gateway")),
        "{result:?}"
    );
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn api_key_request_carries_version_key_and_streaming_body() {
    let (base_url, upstream) = spawn_upstream(vec![Reply::sse(&hello_stream())]).await;
    let tools = vec![json!({"name": "read_file", "description": "Reads a file",
                            "input_schema": {"type": "object", "properties": {}}})];
    let mut request = request();
    request.tools = tools.clone();
    let (tx, _rx) = mpsc::unbounded_channel();

    client(&base_url).send(&request, &tx).await.unwrap();

    let seen = upstream.seen.lock().unwrap();
    let headers = &seen[0].headers;
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert_eq!(headers["x-api-key"], "sk-ant-test-key");
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.get("authorization").is_none());
    assert_eq!(
        seen[0].body,
        json!({
            "model": "claude-sonnet-4-6",
            "max_tokens": 1024,
            "system": [{"type": "text", "text": "You are terse."}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}],
            "tools": tools,
            "stream": true
        })
    );
}

#[tokio::test]
async fn auth_token_is_sent_as_bearer_and_empty_tools_are_omitted() {
    let (base_url, upstream) = spawn_upstream(vec![Reply::sse(&hello_stream())]).await;
    let client = AnthropicClient::new(AnthropicConfig {
        api_key: None,
        auth_token: Some(SecretString::from("proxy-token")),
        ..config(&base_url)
    })
    .unwrap();

    let (result, _events) = call(&client).await;

    assert!(result.is_ok());
    let seen = upstream.seen.lock().unwrap();
    let headers = &seen[0].headers;
    assert_eq!(headers["authorization"], "Bearer proxy-token");
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert!(headers.get("x-api-key").is_none());
    assert!(seen[0].body.get("tools").is_none());
}

#[tokio::test]
async fn no_credentials_fails_without_calling_upstream() {
    let (base_url, upstream) = spawn_upstream(vec![Reply::sse(&hello_stream())]).await;
    let client = AnthropicClient::new(AnthropicConfig {
        api_key: None,
        auth_token: None,
        ..config(&base_url)
    })
    .unwrap();
    assert!(!client.is_configured());

    let (result, _events) = call(&client).await;

    assert!(matches!(result, Err(ModelError::NotConfigured)));
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn refused_connection_is_a_connection_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let client = AnthropicClient::new(AnthropicConfig {
        max_retries: 1,
        ..config(&format!("http://{address}"))
    })
    .unwrap();

    let (result, _events) = call(&client).await;

    assert!(
        matches!(result, Err(ModelError::Connection(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn whole_json_reply_is_accepted_from_endpoints_that_do_not_stream() {
    let body = json!({
        "id": "msg_02", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
        "content": [
            {"type": "text", "text": "Reading."},
            {"type": "tool_use", "id": "toolu_02", "name": "read_file", "input": {"path": "a"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 3, "output_tokens": 4}
    });
    let reply = Reply {
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        body: Body::from(body.to_string()),
    };
    let (base_url, _upstream) = spawn_upstream(vec![reply]).await;

    let (result, events) = call(&client(&base_url)).await;

    let response = result.unwrap();
    assert_eq!(response.stop_reason.as_deref(), Some("tool_use"));
    assert_eq!(response.usage.output_tokens, 4);
    assert_eq!(
        events,
        vec![
            ModelEvent::TextDelta("Reading.".into()),
            ModelEvent::ToolUse {
                id: "toolu_02".into(),
                name: "read_file".into(),
                input: json!({"path": "a"})
            },
        ]
    );
}
