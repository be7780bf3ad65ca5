//! `/api/v1/sessions`: create, list, get, delete and resume sessions.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::{AuditSubject, Caller, ListScope};
use super::chat::ChatResponse;
use super::{ApiJson, ApiQuery, AppState, SessionPath, rfc3339};
use crate::agent::context::View;
use crate::agent::turn::{TurnEvent, TurnRequest};
use crate::domain::{SessionId, Subdir, UserId};
use crate::error::{ApiError, ErrorBody};
use crate::store::{Limits, NewSession, Session, StoredMessage, Todo, UsageTotals};
use crate::workspace::Workspace;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sessions", post(create_session).get(list_sessions))
        .route(
            "/api/v1/sessions/{session_id}",
            get(get_session).delete(delete_session),
        )
        .route("/api/v1/sessions/{session_id}/resume", post(resume_session))
        .route(
            "/api/v1/sessions/{session_id}/messages",
            get(session_messages),
        )
        .route(
            "/api/v1/sessions/{session_id}/compact",
            post(compact_session),
        )
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"user_id": "alice", "subdir": "my-project", "metadata": {"team": "web"}}))]
pub struct CreateSessionRequest {
    /// 1 to 64 characters of A-Z, a-z, 0-9, `_` or `-`.
    #[schema(value_type = String, example = "alice", pattern = "^[A-Za-z0-9_-]{1,64}$",
        min_length = 1, max_length = 64)]
    pub user_id: UserId,
    /// A relative directory below the user's directory; created when missing.
    /// At most 200 characters; not absolute, no `..` component, no NUL.
    #[schema(value_type = Option<String>, example = "my-project", max_length = 200,
        pattern = r"^(?![/\\])(?!(.*/)?\.\.(/|$))[^\u0000]*$")]
    pub subdir: Option<Subdir>,
    /// Any JSON object, returned as given.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TurnState {
    Idle,
    Running,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse {
    #[schema(value_type = String, format = Uuid)]
    pub session_id: SessionId,
    #[schema(value_type = String)]
    pub user_id: UserId,
    pub subdir: Option<String>,
    /// The session's working directory on the server.
    pub cwd: String,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub last_active_at: DateTime<Utc>,
    /// User messages sent in this session.
    pub message_count: u64,
    /// Always `active` for a session that can be found.
    pub status: &'static str,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Whether a turn is running in this session right now.
    pub turn: TurnState,
    /// Tokens and cost spent in this session so far.
    pub usage: UsageTotals,
    /// The todo list the agent keeps with TodoWrite, in its order.
    pub todos: Vec<Todo>,
}

impl From<Session> for SessionResponse {
    fn from(s: Session) -> Self {
        Self {
            session_id: s.id,
            user_id: s.user_id,
            subdir: s.subdir,
            cwd: s.cwd,
            created_at: s.created_at,
            last_active_at: s.last_active_at,
            message_count: s.message_count,
            status: "active",
            metadata: if s.metadata.is_null() {
                Value::Object(Default::default())
            } else {
                s.metadata
            },
            turn: if s.turn_running {
                TurnState::Running
            } else {
                TurnState::Idle
            },
            usage: s.usage,
            todos: s.todos,
        }
    }
}

/// A session id from the path: anything that is not a UUID cannot name a session.
pub fn parse_session_id(raw: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(raw).ok_or(ApiError::SessionNotFound)
}

/// Create a session
///
/// Makes the user's working directory (`{base_dir}/{user_id}/{subdir}`) and
/// records the session. No model call is made.
#[utoipa::path(
    post, path = "/api/v1/sessions", tag = "sessions",
    request_body = CreateSessionRequest,
    responses(
        (status = 201, description = "Session created", body = SessionResponse),
        (status = 400, description = "Body is not a JSON object", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not a JSON content type", body = ErrorBody),
        (status = 401, description = "No valid API key (unauthorized)", body = ErrorBody),
        (status = 403, description = "A user key creating a session for another user (forbidden)", body = ErrorBody),
        (status = 422, description = "Bad user_id, subdir or metadata", body = ErrorBody),
        (status = 429, description = "max_sessions or max_sessions_per_user reached (session_limit)", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %request.user_id))]
pub async fn create_session(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateSessionRequest>,
) -> Result<(StatusCode, Extension<AuditSubject>, Json<SessionResponse>), ApiError> {
    caller.act_as(&request.user_id)?;
    let metadata = match request.metadata {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(ApiError::validation("metadata", "must be a JSON object")),
    };
    let base_dir = state.settings.user.base_dir.clone();
    let create = state.settings.user.auto_create_dir;
    let user = request.user_id.clone();
    let subdir = request.subdir.clone();
    let workspace = tokio::task::spawn_blocking(move || {
        Workspace::open(&base_dir, &user, subdir.as_ref(), create)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let limits = Limits {
        max_sessions: state.settings.api.max_sessions,
        max_sessions_per_user: state.settings.api.max_sessions_per_user,
    };
    let session = state
        .store
        .create(
            NewSession {
                user_id: request.user_id,
                subdir: request.subdir.map(String::from),
                cwd: workspace.cwd().display().to_string(),
                metadata,
            },
            limits,
        )
        .await?;
    tracing::info!(session_id = %session.id, "session created");
    let subject = AuditSubject {
        user: Some(session.user_id.clone()),
        session: Some(session.id),
    };
    Ok((
        StatusCode::CREATED,
        Extension(subject),
        Json(session.into()),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this user's sessions: 1 to 64 characters of A-Z, a-z, 0-9, `_` or `-`.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64)]
    pub user_id: Option<String>,
}

/// List session ids
///
/// All live sessions, or one user's, oldest first. A user key sees only its
/// own user's sessions.
#[utoipa::path(
    get, path = "/api/v1/sessions", tag = "sessions",
    params(ListQuery),
    responses(
        (status = 200, description = "Session ids", body = Vec<String>),
        (status = 401, description = "No valid API key (unauthorized)", body = ErrorBody),
        (status = 422, description = "Bad user_id", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Vec<String>>, ApiError> {
    let user = query
        .user_id
        .as_deref()
        .map(UserId::parse)
        .transpose()
        .map_err(|e| ApiError::validation("user_id", e.0))?;
    let ids = match caller.list_scope(user) {
        ListScope::All => state.store.list(None).await?,
        ListScope::One(user) => state.store.list(Some(&user)).await?,
        ListScope::Nothing => Vec::new(),
    };
    Ok(Json(ids.into_iter().map(|id| id.to_string()).collect()))
}

/// Get a session
#[utoipa::path(
    get, path = "/api/v1/sessions/{session_id}", tag = "sessions",
    params(("session_id" = String, Path, description = "Session UUID")),
    responses(
        (status = 200, description = "The session", body = SessionResponse),
        (status = 404, description = "Unknown, deleted or expired session", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub async fn get_session(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
) -> Result<Json<SessionResponse>, ApiError> {
    let session = state
        .store
        .get(id)
        .await?
        .ok_or(ApiError::SessionNotFound)?;
    Ok(Json(session.into()))
}

/// Delete a session
///
/// Deletes the session and its conversation, stopping a turn that is running
/// in it. The user's files stay on disk.
#[utoipa::path(
    delete, path = "/api/v1/sessions/{session_id}", tag = "sessions",
    params(("session_id" = String, Path, description = "Session UUID")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Unknown, deleted or expired session", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(session_id = %id))]
pub async fn delete_session(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
) -> Result<StatusCode, ApiError> {
    if state.store.delete(id).await? {
        // A turn still running would only fail to save; stop its tools now.
        state.agent.cancel_local(id);
        tracing::info!("session deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::SessionNotFound)
    }
}

/// Resume a session
///
/// Marks the session active again. Works after a restart and on any instance
/// sharing the same PostgreSQL database.
#[utoipa::path(
    post, path = "/api/v1/sessions/{session_id}/resume", tag = "sessions",
    params(("session_id" = String, Path, description = "Session UUID")),
    responses(
        (status = 200, description = "The resumed session", body = SessionResponse),
        (status = 404, description = "Unknown, deleted or expired session", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub async fn resume_session(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
) -> Result<Json<SessionResponse>, ApiError> {
    let session = state
        .store
        .touch(id)
        .await?
        .ok_or(ApiError::SessionNotFound)?;
    Ok(Json(session.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageResponse {
    /// Position in the conversation, increasing.
    pub seq: i64,
    /// `user` or `assistant` (tool results are user messages); `system` for
    /// a compaction point, whose one block (`type: compaction`) holds the
    /// summary and where the model's view starts.
    pub role: String,
    /// Messages API content blocks: text, thinking, tool_use, tool_result
    /// (or the compaction block).
    #[schema(value_type = Vec<Object>)]
    pub content: Value,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl From<StoredMessage> for MessageResponse {
    fn from(m: StoredMessage) -> Self {
        Self {
            seq: m.seq,
            role: m.role,
            content: m.content,
            created_at: m.created_at,
        }
    }
}

/// Which messages `GET .../messages` returns.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MessagesView {
    /// Every stored message, compaction points included.
    #[default]
    Full,
    /// What the model sees now: the latest summary (as a user message at
    /// its compaction point's `seq`) and the messages after it.
    Model,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MessagesQuery {
    /// `full` (default) or `model`.
    #[param(value_type = Option<String>, example = "model")]
    pub view: Option<MessagesView>,
}

/// Get a session's conversation
///
/// Every stored message, oldest first. Compactions never delete anything:
/// each one is a `system` message marking where the model's view starts;
/// `?view=model` shows what the model sees instead.
#[utoipa::path(
    get, path = "/api/v1/sessions/{session_id}/messages", tag = "sessions",
    params(("session_id" = String, Path, description = "Session UUID"), MessagesQuery),
    responses(
        (status = 200, description = "The conversation", body = Vec<MessageResponse>),
        (status = 404, description = "Unknown, deleted or expired session", body = ErrorBody),
        (status = 422, description = "Unknown view", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub async fn session_messages(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    ApiQuery(query): ApiQuery<MessagesQuery>,
) -> Result<Json<Vec<MessageResponse>>, ApiError> {
    state
        .store
        .get(id)
        .await?
        .ok_or(ApiError::SessionNotFound)?;
    let messages = state.store.messages(id).await?;
    let messages = match query.view.unwrap_or_default() {
        MessagesView::Full => messages,
        MessagesView::Model => View::of(&messages).rows(&messages),
    };
    Ok(Json(messages.into_iter().map(Into::into).collect()))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"instructions": "Keep the decisions about the database schema", "timeout": 120}))]
pub struct CompactRequest {
    /// What the summary should focus on, as in `/compact <instructions>`.
    #[schema(max_length = 10000)]
    pub instructions: Option<String>,
    /// Seconds the compaction may take, 1 to 600 (default 120).
    #[schema(minimum = 1, maximum = 600)]
    pub timeout: Option<f64>,
}

/// Compact a session's conversation
///
/// Summarises the conversation so far, as the message `/compact` does: the
/// model sees the summary from now on, and every message stays stored. The
/// body is optional.
#[utoipa::path(
    post, path = "/api/v1/sessions/{session_id}/compact", tag = "sessions",
    params(("session_id" = String, Path, description = "Session UUID")),
    request_body(content = Option<CompactRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "Compacted (or nothing to compact: `compactions` is empty)", body = ChatResponse),
        (status = 404, description = "Unknown, deleted or expired session", body = ErrorBody),
        (status = 422, description = "Instructions too long, timeout outside 1..600", body = ErrorBody),
        (status = 429, description = "A turn is running in this session (session_busy)", body = ErrorBody),
        (status = 502, description = "The model API failed", body = ErrorBody),
        (status = 503, description = "No API key configured, or store unavailable", body = ErrorBody),
    )
)]
pub async fn compact_session(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    caller: Caller,
    request: axum::extract::Request,
) -> Result<Json<ChatResponse>, ApiError> {
    let empty = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0")
        || (!request
            .headers()
            .contains_key(axum::http::header::CONTENT_TYPE)
            && !request
                .headers()
                .contains_key(axum::http::header::TRANSFER_ENCODING));
    let body = if empty {
        CompactRequest::default()
    } else {
        use axum::extract::FromRequest;
        ApiJson::<CompactRequest>::from_request(request, &state)
            .await?
            .0
    };
    let instructions = body.instructions.unwrap_or_default();
    if instructions.chars().count() > 10_000 {
        return Err(ApiError::validation(
            "instructions",
            "must be at most 10000 characters",
        ));
    }
    let timeout = body.timeout.unwrap_or(120.0);
    if !(1.0..=600.0).contains(&timeout) {
        return Err(ApiError::validation(
            "timeout",
            "must be between 1 and 600 seconds",
        ));
    }
    caller.admit_turn(&state, id).await?;
    let message = format!("/compact {}", instructions.trim());
    let turn = TurnRequest {
        session_id: id,
        message,
        timeout: std::time::Duration::from_secs_f64(timeout),
    };
    let mut events = state.agent.start(turn).await?;
    while let Some(event) = events.recv().await {
        match event {
            TurnEvent::Done(summary) => {
                return Ok(Json(ChatResponse::new(id.to_string(), summary)));
            }
            TurnEvent::Failed(err) => return Err(err),
            _ => {}
        }
    }
    Err(ApiError::Internal(
        "the compaction ended unexpectedly".into(),
    ))
}
