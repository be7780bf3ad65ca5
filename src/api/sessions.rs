//! `/api/v1/sessions`: create, list, get, delete and resume sessions.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
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
use crate::agent::turn::TurnRequest;
use crate::domain::{SessionId, Subdir, UserId};
use crate::error::{ApiError, ErrorBody};
use crate::options::{SessionOptions, SessionPrompt};
use crate::store::{
    Changed, ForkPoint, Limits, NewSession, RequestKind, Session, SessionChange, SessionKey,
    StoredMessage, Todo, UsageTotals,
};
use crate::tools::PermissionMode;
use crate::tools::background::TaskView;
use crate::workspace::Workspace;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sessions", post(create_session).get(list_sessions))
        .route(
            "/api/v1/sessions/{session_id}",
            get(get_session)
                .delete(delete_session)
                .patch(update_session),
        )
        .route("/api/v1/sessions/{session_id}/fork", post(fork_session))
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
#[schema(example = json!({"user_id": "alice", "subdir": "my-project", "metadata": {"team": "web"},
    "model": "claude-haiku-4-5", "system_prompt": {"append": "Answer in French."},
    "disallowed_tools": ["WebFetch"], "max_turns": 10}))]
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
    /// The model every turn calls (a model the service knows). This and
    /// the options below replace the service's defaults for this session;
    /// each must be allowed by `api.session_overrides` and may only tighten
    /// the defaults.
    #[schema(example = "claude-haiku-4-5")]
    pub model: Option<String>,
    /// `{"append": "..."}` adds to the system prompt; a string replaces it.
    pub system_prompt: Option<SessionPrompt>,
    /// At most as permissive as the service's mode.
    #[schema(value_type = Option<String>, example = "plan")]
    pub permission_mode: Option<PermissionMode>,
    /// Only the tools these rules name are offered; they approve nothing.
    pub allowed_tools: Option<Vec<String>>,
    /// Deny rules added to the service's.
    pub disallowed_tools: Option<Vec<String>>,
    /// Model calls per turn, from 1 to `defaults.max_turns`.
    pub max_turns: Option<u32>,
    /// The session's spend limit, at most `defaults.max_budget_usd`.
    pub max_budget_usd: Option<f64>,
    /// 0, or 1024 up to `defaults.thinking_budget_tokens`.
    pub thinking_budget_tokens: Option<u32>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TurnState {
    Idle,
    Running,
    /// The running turn waits for a person to approve a call.
    WaitingForPermission,
    /// The running turn waits for a person to answer AskUserQuestion.
    WaitingForAnswer,
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
    /// Whether a turn is running in this session right now, and whether it
    /// waits for a person (`waiting_for_permission`, `waiting_for_answer`).
    pub turn: TurnState,
    /// Messages queued (`queue: true`) behind the running turn.
    pub queued: u64,
    /// Tokens and cost spent in this session so far.
    pub usage: UsageTotals,
    /// The todo list the agent keeps with TodoWrite, in its order.
    pub todos: Vec<Todo>,
    /// Background shells (Bash with `run_in_background`) this instance
    /// runs or ran for the session, oldest first; filled in by `GET`.
    pub background_tasks: Vec<TaskView>,
    /// The options this session set in place of the service's defaults
    /// (only the ones it set).
    pub options: SessionOptions,
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
            turn: match (s.turn_running, s.waiting_on) {
                (false, _) => TurnState::Idle,
                (true, None) => TurnState::Running,
                (true, Some(RequestKind::Permission)) => TurnState::WaitingForPermission,
                (true, Some(RequestKind::Question)) => TurnState::WaitingForAnswer,
            },
            queued: s.queued,
            usage: s.usage,
            todos: s.todos,
            background_tasks: Vec::new(),
            options: s.options,
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
/// records the session. No model call is made. Optional options (`model`,
/// `system_prompt`, `permission_mode`, `allowed_tools`, `disallowed_tools`,
/// `max_turns`, `max_budget_usd`, `thinking_budget_tokens`) hold for every
/// turn of the session; each must be allowed by `api.session_overrides` and
/// may only tighten the service's defaults.
#[utoipa::path(
    post, path = "/api/v1/sessions", tag = "sessions",
    request_body = CreateSessionRequest,
    responses(
        (status = 201, description = "Session created", body = SessionResponse),
        (status = 400, description = "Body is not a JSON object", body = ErrorBody),
        (status = 403, description = "An option api.session_overrides does not allow, or a user key creating a session for another user (forbidden)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not a JSON content type", body = ErrorBody),
        (status = 401, description = "No valid API key (unauthorized)", body = ErrorBody),
        (status = 422, description = "Bad user_id, subdir, metadata, or an option looser than the service's defaults", body = ErrorBody),
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
    let metadata = metadata_object(request.metadata)?;
    let options = SessionOptions {
        model: request.model,
        system_prompt: request.system_prompt,
        permission_mode: request.permission_mode,
        allowed_tools: request.allowed_tools,
        disallowed_tools: request.disallowed_tools,
        max_turns: request.max_turns,
        max_budget_usd: request.max_budget_usd,
        thinking_budget_tokens: request.thinking_budget_tokens,
    };
    options.check(&state.settings, None)?;
    let workspace = open_workspace(&state, &request.user_id, request.subdir.as_ref()).await?;
    let session = state
        .store
        .create(
            NewSession {
                user_id: request.user_id,
                subdir: request.subdir.map(String::from),
                cwd: workspace.cwd().display().to_string(),
                metadata,
                options,
            },
            session_limits(&state),
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

/// `metadata` of a request: a JSON object, `{}` when absent or null.
fn metadata_object(metadata: Option<Value>) -> Result<Value, ApiError> {
    match metadata {
        None | Some(Value::Null) => Ok(Value::Object(Default::default())),
        Some(v @ Value::Object(_)) => Ok(v),
        Some(_) => Err(ApiError::validation("metadata", "must be a JSON object")),
    }
}

/// The user's working directory for a new session, created when the
/// settings say so.
async fn open_workspace(
    state: &AppState,
    user: &UserId,
    subdir: Option<&Subdir>,
) -> Result<Workspace, ApiError> {
    state
        .agent
        .open_workspace(user, subdir, state.settings.user.auto_create_dir)
        .await
}

fn session_limits(state: &AppState) -> Limits {
    Limits {
        max_sessions: state.settings.api.max_sessions,
        max_sessions_per_user: state.settings.api.max_sessions_per_user,
    }
}

/// Most entries one page of a list may ask for.
const MAX_PAGE: u64 = 1_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this user's sessions: 1 to 64 characters of A-Z, a-z, 0-9, `_` or `-`.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64)]
    pub user_id: Option<String>,
    /// At most this many ids (1 to 1000); when more follow, the `Link`
    /// header names the next page. All of them when absent.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// Where a page starts: the `cursor` of the previous page's `Link`
    /// header, as given (opaque).
    pub cursor: Option<String>,
}

/// A list position as the opaque `cursor` of a `Link` header: the
/// creation time in milliseconds and the id, in hex.
fn encode_cursor(key: SessionKey) -> String {
    format!(
        "{:016x}{}",
        key.created_at.timestamp_millis(),
        key.id.0.simple()
    )
}

fn decode_cursor(raw: &str) -> Result<SessionKey, ApiError> {
    let bad = || {
        ApiError::validation(
            "cursor",
            "is not a cursor this service gave out; use the one from the Link header",
        )
    };
    if raw.len() != 48 || !raw.is_ascii() {
        return Err(bad());
    }
    let (time, id) = raw.split_at(16);
    let millis = i64::from_str_radix(time, 16).map_err(|_| bad())?;
    let created_at = DateTime::from_timestamp_millis(millis).ok_or_else(bad)?;
    let id = uuid::Uuid::try_parse(id).map_err(|_| bad())?;
    Ok(SessionKey {
        created_at,
        id: SessionId(id),
    })
}

/// `limit` of a query, checked.
fn page_limit(limit: Option<u64>) -> Result<Option<u64>, ApiError> {
    match limit {
        Some(n) if n == 0 || n > MAX_PAGE => Err(ApiError::validation(
            "limit",
            format!("must be from 1 to {MAX_PAGE}"),
        )),
        other => Ok(other),
    }
}

/// List session ids
///
/// All live sessions, or one user's, oldest first (ties by id). With
/// `limit`, one page: a `Link: <...>; rel="next"` header names the next one
/// while more follow. Sessions created while a client pages appear at the
/// end, and none is listed twice.
#[utoipa::path(
    get, path = "/api/v1/sessions", tag = "sessions",
    params(ListQuery),
    responses(
        (status = 200, description = "Session ids", body = Vec<String>,
            headers(("Link" = String, description = "`<url>; rel=\"next\"` while more sessions follow"))),
        (status = 401, description = "No valid API key (unauthorized)", body = ErrorBody),
        (status = 422, description = "Bad user_id, limit or cursor", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<(HeaderMap, Json<Vec<String>>), ApiError> {
    let user = query
        .user_id
        .as_deref()
        .map(UserId::parse)
        .transpose()
        .map_err(|e| ApiError::validation("user_id", e.0))?;
    let limit = page_limit(query.limit)?;
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let user = match caller.list_scope(user) {
        ListScope::All => None,
        ListScope::One(user) => Some(user),
        ListScope::Nothing => return Ok((HeaderMap::new(), Json(Vec::new()))),
    };
    // One more than asked, to learn whether a next page exists.
    let mut keys = state
        .store
        .list_page(user.as_ref(), after, limit.map(|n| n + 1))
        .await?;
    let mut headers = HeaderMap::new();
    if let Some(limit) = limit
        && keys.len() as u64 > limit
    {
        keys.truncate(limit as usize);
        if let Some(last) = keys.last() {
            let mut next = url::form_urlencoded::Serializer::new(String::new());
            if let Some(user) = &user {
                next.append_pair("user_id", user.as_str());
            }
            next.append_pair("limit", &limit.to_string());
            next.append_pair("cursor", &encode_cursor(*last));
            let link = format!("</api/v1/sessions?{}>; rel=\"next\"", next.finish());
            let value =
                HeaderValue::from_str(&link).map_err(|e| ApiError::Internal(e.to_string()))?;
            headers.insert(header::LINK, value);
        }
    }
    Ok((
        headers,
        Json(keys.into_iter().map(|k| k.id.to_string()).collect()),
    ))
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
    let mut response = SessionResponse::from(session);
    response.background_tasks = state.agent.background_tasks(id);
    Ok(Json(response))
}

/// `PATCH /api/v1/sessions/{id}`: options and metadata to change.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"model": "claude-sonnet-4-6", "max_turns": null, "metadata": {"stage": "review"}}))]
pub struct UpdateSessionRequest {
    /// Replaces the session's metadata (a JSON object).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// The options to change, as in `POST /api/v1/sessions`; `null`
    /// returns one to the service's default.
    #[serde(flatten)]
    pub options: SessionOptions,
}

/// Change a session
///
/// Changes the session's options (as `POST /api/v1/sessions` takes them;
/// `null` returns one to the service's default) or its `metadata`, between
/// turns: the next turn uses them. Fields left out stay as they are.
#[utoipa::path(
    patch, path = "/api/v1/sessions/{session_id}", tag = "sessions",
    params(("session_id" = String, Path, description = "Session UUID")),
    request_body = UpdateSessionRequest,
    responses(
        (status = 200, description = "The changed session", body = SessionResponse),
        (status = 400, description = "Body is not a JSON object", body = ErrorBody),
        (status = 403, description = "An option api.session_overrides does not allow (forbidden)", body = ErrorBody),
        (status = 404, description = "Unknown, deleted or expired session", body = ErrorBody),
        (status = 409, description = "A turn is running in this session (session_busy); nothing changed", body = ErrorBody),
        (status = 415, description = "Not a JSON content type", body = ErrorBody),
        (status = 422, description = "Unknown field, bad metadata, or an option looser than the service's defaults", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(session_id = %id))]
pub async fn update_session(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    ApiJson(changes): ApiJson<serde_json::Map<String, Value>>,
) -> Result<Json<SessionResponse>, ApiError> {
    if let Some(unknown) = changes
        .keys()
        .find(|k| k.as_str() != "metadata" && !crate::options::FIELDS.contains(&k.as_str()))
    {
        return Err(ApiError::validation(
            unknown,
            format!(
                "is not a field a session can change; expected metadata or {}",
                crate::options::FIELDS.join(", ")
            ),
        ));
    }
    let session = state
        .store
        .get(id)
        .await?
        .ok_or(ApiError::SessionNotFound)?;
    let (options, changed) = session.options.patched(&changes)?;
    options.check(&state.settings, Some(&changed))?;
    let metadata = match changes.get("metadata") {
        None => None,
        Some(value) => Some(metadata_object(Some(value.clone()))?),
    };
    let change = SessionChange {
        options: (!changed.is_empty()).then_some(options),
        metadata,
    };
    match state.store.change(id, change).await? {
        Changed::Done(session) => {
            tracing::info!(changed = ?changed, "session changed");
            Ok(Json((*session).into()))
        }
        Changed::Busy => Err(ApiError::ChangeWhileBusy),
        Changed::NotFound => Err(ApiError::SessionNotFound),
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"up_to_seq": 4, "subdir": "experiment"}))]
pub struct ForkRequest {
    /// Copy the messages up to this `seq` (see `GET .../messages`); all
    /// of them when absent.
    #[schema(minimum = 0)]
    pub up_to_seq: Option<i64>,
    /// The fork's directory below the user's, as in `POST
    /// /api/v1/sessions`; the source's directory when absent.
    #[schema(value_type = Option<String>, example = "experiment", max_length = 200)]
    pub subdir: Option<Subdir>,
}

/// Fork a session
///
/// A new session of the same user, with the same options and metadata,
/// whose conversation is a copy of this one's (up to `up_to_seq`), in the
/// same directory unless `subdir` says otherwise. From then on each goes its
/// own way: a turn in one does not change the other. The body is optional.
#[utoipa::path(
    post, path = "/api/v1/sessions/{session_id}/fork", tag = "sessions",
    params(("session_id" = String, Path, description = "Session UUID")),
    request_body(content = Option<ForkRequest>, content_type = "application/json"),
    responses(
        (status = 201, description = "The new session", body = SessionResponse),
        (status = 404, description = "Unknown, deleted or expired session", body = ErrorBody),
        (status = 422, description = "Bad subdir, or up_to_seq negative or past the conversation's end", body = ErrorBody),
        (status = 429, description = "max_sessions or max_sessions_per_user reached (session_limit)", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(session_id = %id))]
pub async fn fork_session(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    request: axum::extract::Request,
) -> Result<(StatusCode, Json<SessionResponse>), ApiError> {
    let body: ForkRequest = optional_json(request, &state).await?;
    if body.up_to_seq.is_some_and(|n| n < 0) {
        return Err(ApiError::validation("up_to_seq", "must not be negative"));
    }
    let source = state
        .store
        .get(id)
        .await?
        .ok_or(ApiError::SessionNotFound)?;
    let (todos, message_count) = match body.up_to_seq {
        None => (source.todos.clone(), source.message_count),
        Some(seq) => {
            let messages = state.store.messages(id).await?;
            let last = messages.last().map_or(0, |m| m.seq);
            if seq > last {
                return Err(ApiError::validation(
                    "up_to_seq",
                    format!("the conversation ends at seq {last}"),
                ));
            }
            let copied: Vec<StoredMessage> =
                messages.into_iter().filter(|m| m.seq <= seq).collect();
            (todos_as_of(&copied), user_messages(&copied))
        }
    };
    let subdir = match body.subdir {
        Some(subdir) => Some(subdir),
        None => source
            .subdir
            .as_deref()
            .map(Subdir::parse)
            .transpose()
            .map_err(|e| ApiError::Internal(format!("stored subdir invalid: {e}")))?,
    };
    let workspace = open_workspace(&state, &source.user_id, subdir.as_ref()).await?;
    let session = state
        .store
        .fork(
            ForkPoint {
                source: id,
                up_to_seq: body.up_to_seq,
                message_count,
            },
            NewSession {
                user_id: source.user_id.clone(),
                subdir: subdir.map(String::from),
                cwd: workspace.cwd().display().to_string(),
                metadata: source.metadata.clone(),
                options: source.options.clone(),
            },
            &todos,
            session_limits(&state),
        )
        .await?;
    tracing::info!(fork = %session.id, up_to_seq = ?body.up_to_seq, "session forked");
    Ok((StatusCode::CREATED, Json(session.into())))
}

/// The todo list as the last TodoWrite call in `messages` set it.
fn todos_as_of(messages: &[StoredMessage]) -> Vec<Todo> {
    messages
        .iter()
        .rev()
        .filter(|m| m.role == "assistant")
        .filter_map(|m| m.content.as_array())
        .flat_map(|blocks| blocks.iter().rev())
        .filter(|b| b["type"] == "tool_use" && b["name"] == "TodoWrite")
        .find_map(|b| serde_json::from_value(b["input"]["todos"].clone()).ok())
        .unwrap_or_default()
}

/// User messages a person sent (not tool results) among `messages`.
fn user_messages(messages: &[StoredMessage]) -> u64 {
    messages
        .iter()
        .filter(|m| m.role == "user")
        .filter(|m| {
            m.content.as_str().is_some()
                || m.content
                    .as_array()
                    .is_some_and(|blocks| blocks.iter().any(|b| b["type"] != "tool_result"))
        })
        .count() as u64
}

/// An optional JSON body: none at all (no content type, or an empty one)
/// is `T::default()`; anything else is read as [`ApiJson`] reads it.
async fn optional_json<T: serde::de::DeserializeOwned + Default>(
    request: axum::extract::Request,
    state: &AppState,
) -> Result<T, ApiError> {
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
    if empty {
        return Ok(T::default());
    }
    use axum::extract::FromRequest;
    Ok(ApiJson::<T>::from_request(request, state).await?.0)
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
    /// Only messages whose `seq` is above this one (0, the default, for all).
    #[param(minimum = 0)]
    pub after_seq: Option<i64>,
    /// At most this many messages (1 to 1000); all when absent.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
}

/// Get a session's conversation
///
/// Every stored message, oldest first. Compactions never delete anything:
/// each one is a `system` message marking where the model's view starts;
/// `?view=model` shows what the model sees instead. Page with `after_seq`
/// (the last `seq` seen) and `limit`.
#[utoipa::path(
    get, path = "/api/v1/sessions/{session_id}/messages", tag = "sessions",
    params(("session_id" = String, Path, description = "Session UUID"), MessagesQuery),
    responses(
        (status = 200, description = "The conversation", body = Vec<MessageResponse>),
        (status = 404, description = "Unknown, deleted or expired session", body = ErrorBody),
        (status = 422, description = "Unknown view, negative after_seq, limit outside 1..1000", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub async fn session_messages(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    ApiQuery(query): ApiQuery<MessagesQuery>,
) -> Result<Json<Vec<MessageResponse>>, ApiError> {
    let after_seq = query.after_seq.unwrap_or(0);
    if after_seq < 0 {
        return Err(ApiError::validation("after_seq", "must not be negative"));
    }
    let limit = page_limit(query.limit)?;
    state
        .store
        .get(id)
        .await?
        .ok_or(ApiError::SessionNotFound)?;
    let messages = match query.view.unwrap_or_default() {
        MessagesView::Full => state.store.messages_after(id, after_seq, limit).await?,
        MessagesView::Model => {
            // The view depends on the whole conversation (its latest
            // compaction point), so it is paged after it is made.
            let all = state.store.messages(id).await?;
            let rows = View::of(&all).rows(&all).into_iter();
            let rows = rows.filter(|m| m.seq > after_seq);
            match limit {
                Some(n) => rows.take(n as usize).collect(),
                None => rows.collect(),
            }
        }
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
    let body: CompactRequest = optional_json(request, &state).await?;
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
        attachments: Vec::new(),
        timeout: std::time::Duration::from_secs_f64(timeout),
        callback: None,
    };
    let summary = state.agent.start(turn).await?.outcome().await?;
    Ok(Json(ChatResponse::new(id.to_string(), summary)))
}
