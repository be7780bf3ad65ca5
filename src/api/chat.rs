//! `/api/v1/chat` and `/api/v1/chat/stream`: run one agent turn, answered
//! whole or as Server-Sent Events; and interrupting a running turn.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::attachments::{self, Attachment};
use super::frames::{REFERENCE_KEYS, StreamFrame};
use super::sessions::parse_session_id;
use super::{ApiJson, AppState, BodyLimit, SessionPath, rfc3339};
use crate::agent::approvals::PermissionRecord;
use crate::agent::context::Compaction;
use crate::agent::turn::{
    InterruptOutcome, Started, ToolCall, TurnEvent, TurnRequest, TurnSummary,
};
use crate::error::{ApiError, ErrorBody};
use crate::store::{RequestKind, UsageTotals, micro_usd, serialize_micro_usd};

const MAX_MESSAGE_CHARS: usize = 100_000;
const DEFAULT_TIMEOUT_SECS: f64 = 120.0;
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `max_body` is the chat body limit, attachments included.
pub fn routes(max_body: usize) -> Router<AppState> {
    let limits = tower::ServiceBuilder::new()
        .layer(DefaultBodyLimit::max(max_body))
        .layer(Extension(BodyLimit(max_body)));
    Router::new()
        .route("/api/v1/chat", post(chat).layer(limits.clone()))
        .route("/api/v1/chat/stream", post(chat_stream).layer(limits))
        .route("/api/v1/sessions/{session_id}/interrupt", post(interrupt))
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({
    "session_id": "9f0c2d4e-8a1b-4c3d-9e5f-6a7b8c9d0e1f",
    "message": "Write hello.py that prints hi, then run it",
    "timeout": 120
}))]
pub struct ChatRequest {
    #[schema(format = Uuid)]
    pub session_id: String,
    /// What the user says; 1 to 100,000 characters, not only whitespace.
    #[schema(min_length = 1, max_length = 100000, pattern = r"\S")]
    pub message: String,
    /// Seconds the whole turn may take, 1 to 600 (default 120), not
    /// counting time spent waiting for a person's approval or answer.
    #[schema(minimum = 1, maximum = 600)]
    pub timeout: Option<f64>,
    /// While a turn runs in the session: `true` queues this message to run
    /// after it (202 with its place), otherwise the answer is 429 `session_busy`.
    pub queue: Option<bool>,
    /// Images (PNG, JPEG, GIF, WebP) and PDFs shown to the model with the
    /// message, each as base64 `data` or a `path` in the session's
    /// directory; up to `api.max_attachments`, each within
    /// `api.max_image_bytes` / `api.max_document_bytes`. They are stored
    /// with the message as image and document blocks.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

impl ChatRequest {
    /// The turn this request asks for, its attachments read and checked,
    /// and whether it may wait in the queue.
    async fn into_turn(mut self, state: &AppState) -> Result<(TurnRequest, bool), ApiError> {
        let attachments = std::mem::take(&mut self.attachments);
        let queue = self.queue.unwrap_or(false);
        let mut turn = self.turn()?;
        turn.attachments = attachments::resolve(state, turn.session_id, attachments).await?;
        Ok((turn, queue))
    }

    fn turn(self) -> Result<TurnRequest, ApiError> {
        let session_id = parse_session_id(&self.session_id)?;
        if self.message.trim().is_empty() {
            return Err(ApiError::validation("message", "must not be blank"));
        }
        if self.message.chars().count() > MAX_MESSAGE_CHARS {
            return Err(ApiError::validation(
                "message",
                format!("must be at most {MAX_MESSAGE_CHARS} characters"),
            ));
        }
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if !(1.0..=600.0).contains(&timeout) {
            return Err(ApiError::validation(
                "timeout",
                "must be between 1 and 600 seconds",
            ));
        }
        Ok(TurnRequest {
            session_id,
            message: self.message,
            attachments: Vec::new(),
            timeout: Duration::from_secs_f64(timeout),
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatResponse {
    pub session_id: String,
    /// Text of the final assistant message.
    pub text: String,
    /// Every tool call of the turn, in order.
    pub tool_calls: Vec<ToolCall>,
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// Tokens and cost of this turn.
    pub usage: UsageTotals,
    /// `end_turn`, `max_tokens`, `max_turns`, `max_budget`, `interrupted`,
    /// or for `/compact` and `/clear`: `compacted`, `cleared`.
    pub stop_reason: String,
    /// Model calls made in this turn.
    pub num_turns: u32,
    /// US dollars, rounded to micro-dollars (the same as `usage.cost_usd`).
    #[serde(serialize_with = "serialize_micro_usd")]
    pub cost_usd: f64,
    pub duration_ms: u64,
    /// The model that made the turn's last call.
    pub model: String,
    /// Whether the turn continued on `defaults.fallback_model` because the
    /// configured model stayed overloaded.
    pub fallback_model_used: bool,
    /// Compactions of the conversation during the turn, oldest first.
    pub compactions: Vec<Compaction>,
    /// What the turn asked a person (approvals and questions) and how each
    /// was decided, in order.
    pub permission_requests: Vec<PermissionRecord>,
}

impl ChatResponse {
    pub(super) fn new(session_id: String, summary: TurnSummary) -> Self {
        Self {
            session_id,
            text: summary.text,
            tool_calls: summary.tool_calls,
            timestamp: Utc::now(),
            cost_usd: summary.usage.cost_usd,
            usage: summary.usage,
            stop_reason: summary.stop_reason,
            num_turns: summary.num_turns,
            duration_ms: summary.duration_ms,
            model: summary.model,
            fallback_model_used: summary.fallback_model_used,
            compactions: summary.compactions,
            permission_requests: summary.permission_requests,
        }
    }
}

/// Run one agent turn
///
/// The model may call tools any number of times (up to `max_turns`) before it
/// answers. The turn runs to completion even if the client disconnects, and
/// every message is saved in the session.
#[utoipa::path(
    post, path = "/api/v1/chat", tag = "chat",
    request_body = ChatRequest,
    responses(
        (status = 200, description = "The turn's answer", body = ChatResponse),
        (status = 202, description = "`queue: true` and a turn was running: the message is queued behind it", body = QueuedResponse),
        (status = 400, description = "Body is not a JSON object", body = ErrorBody),
        (status = 402, description = "Session budget spent (budget_exceeded)", body = ErrorBody),
        (status = 403, description = "An attachment's path leads outside the session's directory (path_outside_session)", body = ErrorBody),
        (status = 404, description = "Unknown, deleted or expired session; an attachment's path names nothing (file_not_found)", body = ErrorBody),
        (status = 413, description = "Body too large, or an attachment over its size limit", body = ErrorBody),
        (status = 415, description = "Not a JSON content type", body = ErrorBody),
        (status = 422, description = "Blank or too long message, timeout outside 1..600, a bad attachment (base64, media type not matching the bytes, too many)", body = ErrorBody),
        (status = 429, description = "A turn is already running in this session (session_busy)", body = ErrorBody),
        (status = 502, description = "The model API failed after retries", body = ErrorBody),
        (status = 503, description = "No API key configured, or store unavailable", body = ErrorBody),
        (status = 504, description = "The turn ran past its timeout", body = ErrorBody),
    )
)]
pub async fn chat(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let session_id = request.session_id.clone();
    let mut events = match start(&state, request).await? {
        Started::Running(events) => events,
        Started::Queued(position) => return Ok(queued(&session_id, position)),
    };
    while let Some(event) = events.recv().await {
        match event {
            TurnEvent::Done(summary) => {
                return Ok(Json(ChatResponse::new(session_id, summary)).into_response());
            }
            TurnEvent::Failed(err) => return Err(err),
            _ => {}
        }
    }
    Err(ApiError::Internal("turn ended without a result".into()))
}

/// Run one agent turn, streamed
///
/// Server-Sent Events, each `data: <json>` (a `StreamFrame`): `text_delta` as
/// the model writes, `tool_use` when it decides a call, `tool_result` after
/// each run, `thinking_delta` and `compaction` when they happen, `todos` (the
/// whole todo list) each time TodoWrite changes it, then one `done` (with
/// usage, stop_reason, num_turns, tool_calls) or `error`. Keep-alive comments
/// every 15 s. Errors known before streaming starts are plain HTTP errors.
#[utoipa::path(
    post, path = "/api/v1/chat/stream", tag = "chat",
    request_body = ChatRequest,
    responses(
        (status = 200, description = "text/event-stream of turn events: `id: <n>` and `data: <StreamFrame>` per event", content_type = "text/event-stream", body = StreamFrame),
        (status = 202, description = "`queue: true` and a turn was running: the message is queued behind it (its events are not streamed; its messages are stored)", body = QueuedResponse),
        (status = 400, description = "Body is not a JSON object", body = ErrorBody),
        (status = 402, description = "Session budget spent (budget_exceeded)", body = ErrorBody),
        (status = 403, description = "An attachment's path leads outside the session's directory (path_outside_session)", body = ErrorBody),
        (status = 404, description = "Unknown, deleted or expired session; an attachment's path names nothing (file_not_found)", body = ErrorBody),
        (status = 413, description = "Body too large, or an attachment over its size limit", body = ErrorBody),
        (status = 415, description = "Not a JSON content type", body = ErrorBody),
        (status = 422, description = "Blank or too long message, timeout outside 1..600, a bad attachment (base64, media type not matching the bytes, too many)", body = ErrorBody),
        (status = 429, description = "A turn is already running in this session (session_busy)", body = ErrorBody),
        (status = 503, description = "No API key configured, or store unavailable", body = ErrorBody),
    )
)]
pub async fn chat_stream(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let session_id = request.session_id.clone();
    let events = match start(&state, request).await? {
        Started::Running(events) => events,
        Started::Queued(position) => return Ok(queued(&session_id, position)),
    };
    Ok(Sse::new(frames(events))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response())
}

/// Starts the request's turn, or with `queue: true` queues it behind the
/// running one.
async fn start(state: &AppState, request: ChatRequest) -> Result<Started, ApiError> {
    let (turn, queue) = request.into_turn(state).await?;
    if queue {
        state.agent.start_or_queue(turn).await
    } else {
        state.agent.start(turn).await.map(Started::Running)
    }
}

/// The 202 answer to a queued message.
fn queued(session_id: &str, position: u64) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(QueuedResponse {
            session_id: session_id.to_owned(),
            queued: position,
        }),
    )
        .into_response()
}

/// A message queued behind the session's running turn.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedResponse {
    pub session_id: String,
    /// Its place in the queue: 1 runs as soon as the current turn ends.
    #[schema(example = 1)]
    pub queued: u64,
}

/// Turn events as SSE frames, numbered, ending after `done` or `error`.
fn frames(
    events: mpsc::UnboundedReceiver<TurnEvent>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold((events, 0u64, false), |(mut events, n, ended)| async move {
        if ended {
            return None;
        }
        let (frame, last) = match events.recv().await {
            Some(event) => frame(event),
            None => (
                json!({"type": "error", "error": "the turn ended unexpectedly", "code": "internal"}),
                true,
            ),
        };
        let event = Event::default()
            .id(n.to_string())
            .data(with_reference_keys(frame).to_string());
        Some((Ok(event), (events, n + 1, last)))
    })
}

fn frame(event: TurnEvent) -> (Value, bool) {
    match event {
        TurnEvent::TextDelta(text) => (json!({"type": "text_delta", "text": text}), false),
        TurnEvent::ThinkingDelta(thinking) => (
            json!({"type": "thinking_delta", "thinking": thinking}),
            false,
        ),
        TurnEvent::Compaction(compaction) => {
            let mut frame = serde_json::to_value(&compaction).unwrap_or_else(|_| json!({}));
            frame["type"] = json!("compaction");
            (frame, false)
        }
        TurnEvent::ToolUse { id, name, input } => (
            json!({"type": "tool_use", "tool_use_id": id, "tool_name": name, "tool_input": input,
                   "tool": name, "input": input}),
            false,
        ),
        TurnEvent::ToolResult {
            id,
            name,
            content,
            is_error,
        } => (
            json!({"type": "tool_result", "tool_use_id": id, "tool_name": name, "tool": name,
                   "content": content, "is_error": is_error}),
            false,
        ),
        TurnEvent::Todos(todos) => (json!({"type": "todos", "todos": todos}), false),
        TurnEvent::PersonRequest {
            kind: RequestKind::Permission,
            request_id,
            tool_use_id,
            tool_name,
            tool_input,
            reason,
        } => (
            json!({"type": "permission_request", "request_id": request_id,
                   "tool_use_id": tool_use_id, "tool_name": tool_name, "tool_input": tool_input,
                   "reason": reason}),
            false,
        ),
        TurnEvent::PersonRequest {
            kind: RequestKind::Question,
            request_id,
            tool_use_id,
            tool_name,
            tool_input,
            ..
        } => (
            json!({"type": "question", "request_id": request_id, "tool_use_id": tool_use_id,
                   "tool_name": tool_name, "questions": tool_input["questions"].clone(),
                   "tool_input": tool_input}),
            false,
        ),
        TurnEvent::Done(summary) => (
            json!({
                "type": "done",
                "text": summary.text,
                "stop_reason": summary.stop_reason,
                "num_turns": summary.num_turns,
                "usage": summary.usage,
                "cost_usd": micro_usd(summary.usage.cost_usd),
                "duration_ms": summary.duration_ms,
                "tool_calls": summary.tool_calls,
                "model": summary.model,
                "fallback_model_used": summary.fallback_model_used,
                "compactions": summary.compactions,
                "permission_requests": summary.permission_requests,
            }),
            true,
        ),
        TurnEvent::Failed(err) => {
            if matches!(err, ApiError::Internal(_)) {
                tracing::error!(error = %err, "turn failed");
            }
            (
                json!({"type": "error", "error": err.detail(), "code": err.code()}),
                true,
            )
        }
    }
}

/// The reference service's keys a frame does not use, added as `null`: its
/// clients read every frame for all five.
fn with_reference_keys(mut frame: Value) -> Value {
    if let Value::Object(fields) = &mut frame {
        for key in REFERENCE_KEYS {
            fields.entry(key).or_insert(Value::Null);
        }
    }
    frame
}

/// Interrupt the running turn
///
/// Cancels the session's running turn, on this instance or on another one
/// sharing the database: running tools are killed, the partial answer is kept
/// and the history stays valid for the next message.
#[utoipa::path(
    post, path = "/api/v1/sessions/{session_id}/interrupt", tag = "sessions",
    params(("session_id" = String, Path, description = "Session UUID")),
    responses(
        (status = 200, description = "The turn was cancelled", body = InterruptOutcome),
        (status = 404, description = "Unknown, deleted or expired session", body = ErrorBody),
        (status = 409, description = "No turn is running in this session (no_turn_running)", body = ErrorBody),
        (status = 503, description = "Session store unavailable (store_unavailable)", body = ErrorBody),
    )
)]
pub async fn interrupt(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
) -> Result<Json<InterruptOutcome>, ApiError> {
    Ok(Json(state.agent.interrupt(id).await?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use utoipa::{PartialSchema, ToSchema};

    use super::*;
    use crate::agent::context::Trigger;

    /// The schemas `StreamFrame` documents, by name, as JSON.
    fn documented() -> serde_json::Map<String, Value> {
        let mut schemas = Vec::new();
        StreamFrame::schemas(&mut schemas);
        schemas
            .into_iter()
            .map(|(name, schema)| (name, serde_json::to_value(schema).unwrap()))
            .collect()
    }

    /// Property names of a schema, and the required ones, following `allOf`
    /// and `$ref`s into `schemas`.
    fn keys(
        schema: &Value,
        schemas: &serde_json::Map<String, Value>,
    ) -> (BTreeSet<String>, BTreeSet<String>) {
        if let Some(reference) = schema["$ref"].as_str() {
            let name = reference.rsplit('/').next().unwrap();
            return keys(&schemas[name], schemas);
        }
        let (mut all, mut required) = (BTreeSet::new(), BTreeSet::new());
        for part in schema["allOf"].as_array().into_iter().flatten() {
            let (a, r) = keys(part, schemas);
            all.extend(a);
            required.extend(r);
        }
        if let Some(properties) = schema["properties"].as_object() {
            all.extend(properties.keys().cloned());
        }
        for name in schema["required"].as_array().into_iter().flatten() {
            required.insert(name.as_str().unwrap().to_owned());
        }
        (all, required)
    }

    fn summary() -> TurnSummary {
        TurnSummary {
            text: "Listed your files.".into(),
            tool_calls: vec![ToolCall::new(
                "toolu_1".into(),
                "Bash".into(),
                json!({"command": "ls"}),
                "a.txt",
                false,
            )],
            stop_reason: "end_turn".into(),
            num_turns: 2,
            usage: UsageTotals {
                cost_usd: 0.009788999999999999,
                ..UsageTotals::default()
            },
            duration_ms: 12,
            model: "claude-sonnet-4-6".into(),
            fallback_model_used: false,
            compactions: vec![],
            permission_requests: vec![],
        }
    }

    #[test]
    fn every_frame_matches_its_documented_schema() {
        let schemas = documented();
        let one_of = serde_json::to_value(StreamFrame::schema()).unwrap();
        let mapping = one_of["discriminator"]["mapping"].as_object().unwrap();
        let events = vec![
            TurnEvent::TextDelta("Hel".into()),
            TurnEvent::ThinkingDelta("Let me".into()),
            TurnEvent::Compaction(Compaction {
                trigger: Trigger::Auto,
                summary: Some("summary".into()),
                keep_from_seq: Some(3),
                messages_summarized: 2,
                tokens_before: 100,
                tokens_after: 10,
                focus: None,
            }),
            TurnEvent::ToolUse {
                id: "toolu_1".into(),
                name: "Bash".into(),
                input: json!({"command": "ls"}),
            },
            TurnEvent::ToolResult {
                id: "toolu_1".into(),
                name: "Bash".into(),
                content: "a.txt".into(),
                is_error: false,
            },
            TurnEvent::Todos(vec![crate::store::Todo {
                content: "Run the tests".into(),
                status: crate::store::TodoStatus::InProgress,
                active_form: "Running the tests".into(),
            }]),
            TurnEvent::PersonRequest {
                kind: RequestKind::Permission,
                request_id: uuid::Uuid::new_v4(),
                tool_use_id: "toolu_2".into(),
                tool_name: "Bash".into(),
                tool_input: json!({"command": "rm -rf build"}),
                reason: "the permission mode is default and no allow rule covers this call".into(),
            },
            TurnEvent::PersonRequest {
                kind: RequestKind::Question,
                request_id: uuid::Uuid::new_v4(),
                tool_use_id: "toolu_3".into(),
                tool_name: "AskUserQuestion".into(),
                tool_input: json!({"questions": []}),
                reason: String::new(),
            },
            TurnEvent::Done(summary()),
            TurnEvent::Failed(ApiError::TurnTimeout(120)),
        ];
        let mut seen = BTreeSet::new();
        for event in events {
            let (frame, _) = frame(event);
            let frame = with_reference_keys(frame);
            let kind = frame["type"].as_str().unwrap().to_owned();
            let name = mapping[&kind].as_str().unwrap().rsplit('/').next().unwrap();
            let (all, required) = keys(&schemas[name], &schemas);
            let present: BTreeSet<String> = frame.as_object().unwrap().keys().cloned().collect();
            assert!(
                present.is_subset(&all),
                "{kind}: undocumented {:?}",
                present.difference(&all).collect::<Vec<_>>()
            );
            assert!(
                required.is_subset(&present),
                "{kind}: missing {:?}",
                required.difference(&present).collect::<Vec<_>>()
            );
            for key in REFERENCE_KEYS {
                assert!(present.contains(key), "{kind} lacks {key}");
            }
            seen.insert(kind);
        }
        let documented: BTreeSet<String> = mapping.keys().cloned().collect();
        assert_eq!(seen, documented, "every documented frame type is checked");
    }

    #[test]
    fn costs_are_shown_in_micro_dollars() {
        let (done, last) = frame(TurnEvent::Done(summary()));
        assert!(last);
        assert_eq!(done["cost_usd"].to_string(), "0.009789");
        assert_eq!(done["usage"]["cost_usd"].to_string(), "0.009789");
        let response = serde_json::to_value(ChatResponse::new("s".into(), summary())).unwrap();
        assert_eq!(response["cost_usd"].to_string(), "0.009789");
        assert_eq!(response["usage"]["cost_usd"].to_string(), "0.009789");
        assert_eq!(response["tool_calls"][0]["tool_name"], "Bash");
        assert_eq!(response["tool_calls"][0]["output"], "a.txt");
    }
}
