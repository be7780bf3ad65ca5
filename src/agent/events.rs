//! A session's event log as a turn writes it: every frame rendered once,
//! numbered after the session's last one, handed to the turn's own client at
//! once and stored in batches; and the turn's end recorded with its result.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::turn::{ChatResponse, TurnEvent};
use crate::api::rfc3339;
use crate::config::EventRetention;
use crate::domain::SessionId;
use crate::store::{
    DynStore, RequestKind, SessionEvent, TurnEnded, TurnRecord, TurnStatus, micro_usd,
};

/// The keys every frame carries, as the reference service's frames do;
/// `null` where a frame type does not use one.
pub const REFERENCE_KEYS: [&str; 5] = ["type", "text", "tool_name", "tool_input", "error"];

/// How long frames wait to be stored together: viewers elsewhere see them
/// this much later than the turn's own client.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Frame bytes that are stored at once, without waiting for `FLUSH_EVERY`.
const FLUSH_BYTES: usize = 64 * 1024;
/// Attempts at storing the last frames and the result when the store fails.
const FINISH_ATTEMPTS: u32 = 3;

/// One frame of a turn: its id in the session's log, its JSON text as sent
/// and stored, and the event it shows.
#[derive(Debug)]
pub struct LoggedEvent {
    pub id: u64,
    pub data: Arc<str>,
    pub event: TurnEvent,
}

impl LoggedEvent {
    /// Whether this is the turn's last frame (`done` or `error`).
    pub fn is_last(&self) -> bool {
        matches!(self.event, TurnEvent::Done(_) | TurnEvent::Failed(_))
    }
}

/// The frame of an event, with every reference key present.
pub fn render(event: &TurnEvent) -> Value {
    let frame = match event {
        TurnEvent::TextDelta(text) => json!({"type": "text_delta", "text": text}),
        TurnEvent::ThinkingDelta(thinking) => {
            json!({"type": "thinking_delta", "thinking": thinking})
        }
        TurnEvent::Compaction(compaction) => {
            let mut frame = serde_json::to_value(compaction).unwrap_or_else(|_| json!({}));
            frame["type"] = json!("compaction");
            frame
        }
        TurnEvent::ToolUse { id, name, input } => json!({
            "type": "tool_use", "tool_use_id": id, "tool_name": name, "tool_input": input,
            "tool": name, "input": input,
        }),
        TurnEvent::ToolResult {
            id,
            name,
            content,
            is_error,
        } => json!({
            "type": "tool_result", "tool_use_id": id, "tool_name": name, "tool": name,
            "content": content, "is_error": is_error,
        }),
        TurnEvent::Todos(todos) => json!({"type": "todos", "todos": todos}),
        TurnEvent::PersonRequest {
            kind: RequestKind::Permission,
            request_id,
            tool_use_id,
            tool_name,
            tool_input,
            reason,
        } => json!({
            "type": "permission_request", "request_id": request_id,
            "tool_use_id": tool_use_id, "tool_name": tool_name, "tool_input": tool_input,
            "reason": reason,
        }),
        TurnEvent::PersonRequest {
            kind: RequestKind::Question,
            request_id,
            tool_use_id,
            tool_name,
            tool_input,
            ..
        } => json!({
            "type": "question", "request_id": request_id, "tool_use_id": tool_use_id,
            "tool_name": tool_name, "questions": tool_input["questions"].clone(),
            "tool_input": tool_input,
        }),
        TurnEvent::Done(summary) => json!({
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
        TurnEvent::Failed(err) => {
            json!({"type": "error", "error": err.detail(), "code": err.code()})
        }
        TurnEvent::Nested {
            parent_tool_use_id,
            event,
        } => {
            let mut frame = render(event);
            frame["parent_tool_use_id"] = json!(parent_tool_use_id);
            frame
        }
    };
    with_reference_keys(frame)
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

/// Frames numbered but not stored yet.
struct Pending {
    next: u64,
    frames: Vec<SessionEvent>,
    bytes: usize,
}

/// The log of one running turn.
pub(super) struct TurnLog {
    store: DynStore,
    session: SessionId,
    turn: Uuid,
    after: u64,
    started_at: DateTime<Utc>,
    pending: Mutex<Pending>,
    /// Held while a batch is written, so batches land in order.
    writing: tokio::sync::Mutex<()>,
    full: Notify,
    client: mpsc::UnboundedSender<LoggedEvent>,
}

impl TurnLog {
    /// The log of `turn`, whose frames follow event `after`; frames go to
    /// `client` as they are made.
    pub(super) fn new(
        store: DynStore,
        session: SessionId,
        turn: Uuid,
        after: u64,
        client: mpsc::UnboundedSender<LoggedEvent>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            session,
            turn,
            after,
            started_at: Utc::now(),
            pending: Mutex::new(Pending {
                next: after + 1,
                frames: Vec::new(),
                bytes: 0,
            }),
            writing: tokio::sync::Mutex::new(()),
            full: Notify::new(),
            client,
        })
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Numbers the event's frame, queues it for storage and hands it to
    /// the turn's client (a client that went away leaves no receiver; the
    /// turn goes on).
    pub(super) fn emit(&self, event: TurnEvent) {
        let data: Arc<str> = Arc::from(render(&event).to_string());
        // Under the lock: ids are handed to the client in the order they grow.
        let mut pending = self.pending();
        let id = self.queue(&mut pending, data.clone());
        let _ = self.client.send(LoggedEvent { id, data, event });
    }

    fn queue(&self, pending: &mut Pending, frame: Arc<str>) -> u64 {
        let id = pending.next;
        pending.next += 1;
        pending.bytes += frame.len();
        pending.frames.push(SessionEvent { id, frame });
        if pending.bytes >= FLUSH_BYTES {
            self.full.notify_one();
        }
        id
    }

    /// Stores queued frames every `FLUSH_EVERY` (or when many bytes wait)
    /// until `stop`; a batch being written when `stop` comes is finished.
    pub(super) fn keep_writing(self: &Arc<Self>, stop: CancellationToken) -> JoinHandle<()> {
        let log = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(FLUSH_EVERY) => {}
                    () = log.full.notified() => {}
                }
                if let Err(err) = log.flush().await {
                    tracing::warn!(error = %err, "could not store the turn's frames; retrying");
                }
            }
        })
    }

    /// Writes what is queued; on failure it stays queued, in order.
    async fn flush(&self) -> Result<(), crate::store::StoreError> {
        let _writing = self.writing.lock().await;
        let batch = {
            let mut pending = self.pending();
            pending.bytes = 0;
            std::mem::take(&mut pending.frames)
        };
        if batch.is_empty() {
            return Ok(());
        }
        let written = self
            .store
            .append_events(self.session, self.turn, &batch)
            .await;
        if written.is_err() {
            let mut pending = self.pending();
            let newer = std::mem::replace(&mut pending.frames, batch);
            pending.frames.extend(newer);
        }
        written
    }

    /// Stores the turn's last frame with those still queued, and how it
    /// ended; returns that frame for the client, who gets it once the
    /// session's lease is released, and the turn's report.
    pub(super) async fn finish(
        &self,
        event: TurnEvent,
        retention: &EventRetention,
    ) -> (LoggedEvent, TurnReport) {
        let data: Arc<str> = Arc::from(render(&event).to_string());
        let id = {
            let mut pending = self.pending();
            self.queue(&mut pending, data.clone())
        };
        let (status, status_code, result) = match &event {
            TurnEvent::Done(summary) => (
                if summary.stop_reason == "interrupted" {
                    TurnStatus::Interrupted
                } else {
                    TurnStatus::Completed
                },
                200,
                serde_json::to_value(ChatResponse::new(self.session.to_string(), summary.clone()))
                    .unwrap_or(Value::Null),
            ),
            TurnEvent::Failed(err) => (
                TurnStatus::Failed,
                err.status().as_u16(),
                serde_json::to_value(err.body()).unwrap_or(Value::Null),
            ),
            _ => (TurnStatus::Failed, 500, Value::Null),
        };
        let ended = TurnEnded {
            status,
            status_code,
            result,
            last_event_id: id,
        };
        {
            let _writing = self.writing.lock().await;
            let last = std::mem::take(&mut self.pending().frames);
            for attempt in 1..=FINISH_ATTEMPTS {
                match self
                    .store
                    .finish_turn(self.session, self.turn, &last, &ended, retention)
                    .await
                {
                    Ok(()) => break,
                    Err(err) if attempt == FINISH_ATTEMPTS => {
                        tracing::warn!(error = %err, "could not store how the turn ended");
                    }
                    Err(_) => tokio::time::sleep(FLUSH_EVERY * attempt).await,
                }
            }
        }
        let record = TurnRecord {
            id: self.turn,
            status,
            after_event_id: self.after,
            last_event_id: id,
            status_code: Some(status_code),
            result: Some(ended.result),
            started_at: self.started_at,
            finished_at: Some(Utc::now()),
        };
        (
            LoggedEvent { id, data, event },
            TurnReport::new(self.session, record, true),
        )
    }

    /// Hands the last frame to the turn's client.
    pub(super) fn forward(&self, last: LoggedEvent) {
        let _ = self.client.send(last);
    }
}

/// A turn as `GET /api/v1/sessions/{id}/turns/{turn_id}` shows it and as a
/// callback receives it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TurnReport {
    #[schema(format = Uuid)]
    pub session_id: String,
    #[schema(format = Uuid)]
    pub turn_id: String,
    pub status: TurnStatus,
    /// The turn's frames: `/api/v1/sessions/{id}/events?after=N`.
    #[schema(example = "/api/v1/sessions/9f0c2d4e-8a1b-4c3d-9e5f-6a7b8c9d0e1f/events?after=0")]
    pub events: String,
    /// The id of the turn's last frame so far.
    pub last_event_id: u64,
    #[serde(serialize_with = "rfc3339")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Once finished: the HTTP status the synchronous `/chat` answered.
    pub status_code: Option<u16>,
    /// Once finished: the body the synchronous `/chat` answered, a
    /// `ChatResponse` (completed, interrupted) or an `ErrorBody` (failed).
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
}

fn rfc3339_opt<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

impl TurnReport {
    /// The report of a stored turn; `leased` says whether the session's
    /// lease is held, without which a turn still marked running was
    /// abandoned by its instance.
    pub fn new(session: SessionId, record: TurnRecord, leased: bool) -> Self {
        let status = match record.status {
            TurnStatus::Running if !leased => TurnStatus::Abandoned,
            status => status,
        };
        Self {
            session_id: session.to_string(),
            turn_id: record.id.to_string(),
            status,
            events: events_path(session, record.after_event_id),
            last_event_id: record.last_event_id,
            started_at: record.started_at,
            finished_at: record.finished_at,
            status_code: record.status_code,
            result: record.result,
        }
    }
}

/// Where a session's events after `after` are streamed from.
pub fn events_path(session: SessionId, after: u64) -> String {
    format!("/api/v1/sessions/{session}/events?after={after}")
}
