//! `/api/v1/chat` and `/api/v1/chat/stream`: run one agent turn, answered
//! whole or as Server-Sent Events; and interrupting a running turn.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
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

use super::auth::{AuditSubject, Caller};
use super::frames::{REFERENCE_KEYS, StreamFrame};
use super::sessions::parse_session_id;
use super::{ApiJson, AppState, SessionPath, rfc3339};
use crate::agent::context::Compaction;
use crate::agent::turn::{InterruptOutcome, ToolCall, TurnEvent, TurnRequest, TurnSummary};
use crate::error::{ApiError, ErrorBody};
use crate::store::{UsageTotals, micro_usd, serialize_micro_usd};

const MAX_MESSAGE_CHARS: usize = 100_000;
const DEFAULT_TIMEOUT_SECS: f64 = 120.0;
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/chat", post(chat))
        .route("/api/v1/chat/stream", post(chat_stream))
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
    /// Seconds the whole turn may take, 1 to 600 (default 120).
    #[schema(minimum = 1, maximum = 600)]
    pub timeout: Option<f64>,
}

impl ChatRequest {
    fn parse(self) -> Result<TurnRequest, ApiError> {
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
        (status = 400, description = "Body is not a JSON object", body = ErrorBody),
        (status = 402, description = "Session budget spent (budget_exceeded)", body = ErrorBody),
        (status = 404, description = "Unknown, deleted or expired session", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not a JSON content type", body = ErrorBody),
        (status = 422, description = "Blank or too long message, timeout outside 1..600", body = ErrorBody),
        (status = 401, description = "No valid API key (unauthorized)", body = ErrorBody),
        (status = 429, description = "A turn is already running in this session (session_busy), a daily quota is spent (quota_exceeded) or too many turns this minute (rate_limited); see retry-after", body = ErrorBody),
        (status = 502, description = "The model API failed after retries", body = ErrorBody),
        (status = 503, description = "No API key configured, or store unavailable", body = ErrorBody),
        (status = 504, description = "The turn ran past its timeout", body = ErrorBody),
    )
)]
pub async fn chat(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<ChatRequest>,
) -> Result<(Extension<AuditSubject>, Json<ChatResponse>), ApiError> {
    let session_id = request.session_id.clone();
    let turn = request.parse()?;
    let subject = admit(&state, &caller, turn.session_id).await?;
    let mut events = state.agent.start(turn).await?;
    while let Some(event) = events.recv().await {
        match event {
            TurnEvent::Done(summary) => {
                return Ok((
                    Extension(subject),
                    Json(ChatResponse::new(session_id, summary)),
                ));
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
        (status = 400, description = "Body is not a JSON object", body = ErrorBody),
        (status = 402, description = "Session budget spent (budget_exceeded)", body = ErrorBody),
        (status = 404, description = "Unknown, deleted or expired session", body = ErrorBody),
        (status = 415, description = "Not a JSON content type", body = ErrorBody),
        (status = 422, description = "Blank or too long message, timeout outside 1..600", body = ErrorBody),
        (status = 401, description = "No valid API key (unauthorized)", body = ErrorBody),
        (status = 429, description = "A turn is already running in this session (session_busy), a daily quota is spent (quota_exceeded) or too many turns this minute (rate_limited); see retry-after", body = ErrorBody),
        (status = 503, description = "No API key configured, or store unavailable", body = ErrorBody),
    )
)]
pub async fn chat_stream(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let turn = request.parse()?;
    let subject = admit(&state, &caller, turn.session_id).await?;
    let events = state.agent.start(turn).await?;
    Ok((
        Extension(subject),
        Sse::new(frames(events))
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")),
    )
        .into_response())
}

/// The session a chat request names, when the caller may reach it, its turn
/// counted against the caller's rate; what the audit line records.
async fn admit(
    state: &AppState,
    caller: &Caller,
    id: crate::domain::SessionId,
) -> Result<AuditSubject, ApiError> {
    let session = caller.admit_turn(state, id).await?;
    Ok(AuditSubject {
        user: Some(session.user_id),
        session: Some(session.id),
    })
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
