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
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::attachments::{self, Attachment};
use super::auth::{AuditSubject, Caller};
use super::frames::StreamFrame;
use super::sessions::parse_session_id;
use super::{ApiJson, AppState, BodyLimit, SessionPath};
use crate::agent::events::{LoggedEvent, events_path, render};
pub use crate::agent::turn::ChatResponse;
use crate::agent::turn::{InterruptOutcome, Started, TurnEvent, TurnRequest};
use crate::callback::Callback;
use crate::config::Settings;
use crate::error::{ApiError, ErrorBody};

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
    /// `/chat` only: answer 202 at once with the turn's id and where its
    /// events stream; collect the result at `/sessions/{id}/turns/{turn_id}`.
    #[serde(rename = "async", default)]
    pub run_async: bool,
    /// Where the turn's report (as `/turns/{turn_id}` shows it) is POSTed
    /// when it ends, signed in `X-Claude-Agent-Signature`. Only when the
    /// service enables callbacks (`api.allow_callbacks`); never to private,
    /// loopback or metadata addresses unless WebFetch may reach them.
    #[schema(example = "https://hooks.example.com/agent-turns")]
    pub callback_url: Option<String>,
}

impl ChatRequest {
    /// The turn this request asks for, once the caller may run it there
    /// (its attachments read and checked only then), whether it may wait in
    /// the queue, and what the audit line records.
    async fn into_turn(
        mut self,
        state: &AppState,
        caller: &Caller,
    ) -> Result<(TurnRequest, bool, AuditSubject), ApiError> {
        let attachments = std::mem::take(&mut self.attachments);
        let queue = self.queue.unwrap_or(false);
        let mut turn = self.parse(&state.settings).await?;
        let subject = admit(state, caller, turn.session_id).await?;
        turn.attachments = attachments::resolve(state, turn.session_id, attachments).await?;
        Ok((turn, queue, subject))
    }

    async fn parse(self, settings: &Settings) -> Result<TurnRequest, ApiError> {
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
        let callback = match &self.callback_url {
            Some(url) => Some(Callback::parse(url, settings).await?),
            None => None,
        };
        Ok(TurnRequest {
            session_id,
            message: self.message,
            attachments: Vec::new(),
            timeout: Duration::from_secs_f64(timeout),
            callback,
        })
    }
}

/// What `/chat` with `"async": true` answers at once.
#[derive(Debug, Serialize, ToSchema)]
pub struct AsyncTurn {
    #[schema(format = Uuid)]
    pub session_id: String,
    #[schema(format = Uuid)]
    pub turn_id: String,
    /// The turn's frames, live and replayed: `/api/v1/sessions/{id}/events?after=N`.
    pub events: String,
    /// Its status and, once finished, its result: `/api/v1/sessions/{id}/turns/{turn_id}`.
    pub turn: String,
}

/// Run one agent turn
///
/// The model may call tools any number of times (up to `max_turns`) before it
/// answers. The turn runs to completion even if the client disconnects, and
/// every message is saved in the session. With `"async": true` the answer is
/// 202 at once (`AsyncTurn`); the result is collected later, from any
/// instance, at `/api/v1/sessions/{id}/turns/{turn_id}`.
#[utoipa::path(
    post, path = "/api/v1/chat", tag = "chat",
    request_body = ChatRequest,
    responses(
        (status = 200, description = "The turn's answer", body = ChatResponse),
        (status = 202, description = "With `async`: the turn started (`AsyncTurn`); with `queue: true` while a turn runs: the message is queued behind it (`QueuedResponse`)", body = AsyncTurn),
        (status = 400, description = "Body is not a JSON object", body = ErrorBody),
        (status = 402, description = "Session budget spent (budget_exceeded)", body = ErrorBody),
        (status = 403, description = "An attachment's path leads outside the session's directory (path_outside_session)", body = ErrorBody),
        (status = 404, description = "Unknown, deleted or expired session; an attachment's path names nothing (file_not_found)", body = ErrorBody),
        (status = 413, description = "Body too large, or an attachment over its size limit", body = ErrorBody),
        (status = 415, description = "Not a JSON content type", body = ErrorBody),
        (status = 422, description = "Blank or too long message, timeout outside 1..600, callback_url refused, a bad attachment (base64, media type not matching the bytes, too many)", body = ErrorBody),
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
) -> Result<Response, ApiError> {
    let run_async = request.run_async;
    let session_id = request.session_id.clone();
    let (turn, queue, subject) = request.into_turn(&state, &caller).await?;
    let session = turn.session_id;
    let started = match start(&state, turn, queue).await? {
        Started::Running(started) => started,
        Started::Queued(position) => {
            return Ok((Extension(subject), queued(&session_id, position)).into_response());
        }
    };
    if run_async {
        let body = AsyncTurn {
            session_id: session.to_string(),
            turn_id: started.turn_id.to_string(),
            events: events_path(session, started.after_event_id),
            turn: format!("/api/v1/sessions/{session}/turns/{}", started.turn_id),
        };
        return Ok((StatusCode::ACCEPTED, Extension(subject), Json(body)).into_response());
    }
    let summary = started.outcome().await?;
    Ok((
        Extension(subject),
        Json(ChatResponse::new(session.to_string(), summary)),
    )
        .into_response())
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
        (status = 202, description = "`queue: true` and a turn was running: the message is queued behind it (its events appear in the session's event log)", body = QueuedResponse),
        (status = 400, description = "Body is not a JSON object", body = ErrorBody),
        (status = 402, description = "Session budget spent (budget_exceeded)", body = ErrorBody),
        (status = 403, description = "An attachment's path leads outside the session's directory (path_outside_session)", body = ErrorBody),
        (status = 404, description = "Unknown, deleted or expired session; an attachment's path names nothing (file_not_found)", body = ErrorBody),
        (status = 413, description = "Body too large, or an attachment over its size limit", body = ErrorBody),
        (status = 415, description = "Not a JSON content type", body = ErrorBody),
        (status = 422, description = "Blank or too long message, timeout outside 1..600, callback_url refused, async given, a bad attachment", body = ErrorBody),
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
    if request.run_async {
        return Err(ApiError::validation(
            "async",
            "is for POST /api/v1/chat; a stream is already asynchronous",
        ));
    }
    let session_id = request.session_id.clone();
    let (turn, queue, subject) = request.into_turn(&state, &caller).await?;
    let started = match start(&state, turn, queue).await? {
        Started::Running(started) => started,
        Started::Queued(position) => {
            return Ok((Extension(subject), queued(&session_id, position)).into_response());
        }
    };
    Ok((Extension(subject), sse(frames(started.events))).into_response())
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

/// Starts the turn, or with `queue` queues it behind the running one.
async fn start(state: &AppState, turn: TurnRequest, queue: bool) -> Result<Started, ApiError> {
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

/// An SSE response with keep-alive comments, so idle proxies keep it open.
pub(super) fn sse(
    events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
) -> Response {
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response()
}

/// A turn's frames as SSE events, each with its id in the session's log,
/// ending after `done` or `error`.
fn frames(
    events: mpsc::UnboundedReceiver<LoggedEvent>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold((events, false), |(mut events, ended)| async move {
        if ended {
            return None;
        }
        let (event, last) = match events.recv().await {
            Some(logged) => {
                if let TurnEvent::Failed(ApiError::Internal(why)) = &logged.event {
                    tracing::error!(error = %why, "turn failed");
                }
                (sse_event(logged.id, &logged.data), logged.is_last())
            }
            None => {
                let frame = render(&TurnEvent::Failed(ApiError::Internal(
                    "the turn ended unexpectedly".into(),
                )));
                (Event::default().data(frame.to_string()), true)
            }
        };
        Some((Ok(event), (events, last)))
    })
}

/// One stored or live frame as an SSE event: `id:` its id in the
/// session's log, `data:` its JSON.
pub(super) fn sse_event(id: u64, data: &str) -> Event {
    Event::default().id(id.to_string()).data(data)
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

    use serde_json::{Value, json};

    use super::*;
    use crate::agent::context::{Compaction, Trigger};
    use crate::agent::events::REFERENCE_KEYS;
    use crate::agent::turn::{ToolCall, TurnSummary};
    use crate::store::{RequestKind, UsageTotals};

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
            // A subagent's frames: the same frames, marked with its parent.
            TurnEvent::Nested {
                parent_tool_use_id: "toolu_9".into(),
                event: Box::new(TurnEvent::TextDelta("Found".into())),
            },
            TurnEvent::Nested {
                parent_tool_use_id: "toolu_9".into(),
                event: Box::new(TurnEvent::ToolUse {
                    id: "toolu_10".into(),
                    name: "Grep".into(),
                    input: json!({"pattern": "port"}),
                }),
            },
        ];
        let mut seen = BTreeSet::new();
        for event in events {
            let frame = render(&event);
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
        let done = render(&TurnEvent::Done(summary()));
        assert_eq!(done["cost_usd"].to_string(), "0.009789");
        assert_eq!(done["usage"]["cost_usd"].to_string(), "0.009789");
        let response = serde_json::to_value(ChatResponse::new("s".into(), summary())).unwrap();
        assert_eq!(response["cost_usd"].to_string(), "0.009789");
        assert_eq!(response["usage"]["cost_usd"].to_string(), "0.009789");
        assert_eq!(response["tool_calls"][0]["tool_name"], "Bash");
        assert_eq!(response["tool_calls"][0]["output"], "a.txt");
    }
}
