//! `/api/v1/sessions/{id}/permissions` and `/questions`: what a running turn
//! waits for a person to decide, listed and answered. Requests live in the
//! session store, so any instance sharing it can answer them.

use std::collections::BTreeMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::sessions::parse_session_id;
use super::{ApiJson, AppState, SessionPath, rfc3339};
use crate::domain::SessionId;
use crate::error::{ApiError, ErrorBody};
use crate::permissions::remembered_rule;
use crate::store::{Answering, PersonRequest, RequestKind};
use crate::tools::ask_user;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/sessions/{session_id}/permissions",
            get(list_permissions),
        )
        .route(
            "/api/v1/sessions/{session_id}/permissions/{request_id}",
            post(answer_permission),
        )
        .route(
            "/api/v1/sessions/{session_id}/questions",
            get(list_questions),
        )
        .route(
            "/api/v1/sessions/{session_id}/questions/{request_id}",
            post(answer_question),
        )
}

/// `{session_id}` and `{request_id}` of a path; anything that is not a UUID
/// names nothing (404).
pub struct RequestPath(SessionId, Option<Uuid>);

impl<S: Send + Sync> FromRequestParts<S> for RequestPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<(String, String)>::from_request_parts(parts, state).await {
            Ok(Path((session, request))) => Ok(Self(
                parse_session_id(&session)?,
                Uuid::parse_str(&request).ok(),
            )),
            Err(PathRejection::FailedToDeserializePathParams(_)) => Err(ApiError::SessionNotFound),
            Err(other) => Err(ApiError::Internal(other.body_text())),
        }
    }
}

/// A call waiting for a person's approval.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingPermission {
    #[schema(value_type = String, format = Uuid)]
    pub request_id: Uuid,
    #[schema(example = "toolu_01A")]
    pub tool_use_id: String,
    #[schema(example = "Bash")]
    pub tool_name: String,
    #[schema(value_type = Object, example = json!({"command": "rm -rf build"}))]
    pub tool_input: Value,
    /// Why the call needs a person.
    #[schema(example = "the permission mode is default and no allow rule covers `rm -rf build`")]
    pub reason: String,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// AskUserQuestion's questions waiting for answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingQuestion {
    #[schema(value_type = String, format = Uuid)]
    pub request_id: Uuid,
    #[schema(example = "toolu_01A")]
    pub tool_use_id: String,
    /// `{question, header, options: [{label, description, preview?}], multiSelect}` each.
    #[schema(value_type = Vec<Object>)]
    pub questions: Value,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Remember {
    /// Keep an allow rule for the rest of the session.
    Session,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"decision": "allow", "remember": "session"}))]
pub struct PermissionAnswer {
    pub decision: Decision,
    /// With `deny`: what the model is told, beside the denial.
    #[schema(max_length = 10000)]
    pub message: Option<String>,
    /// With `allow`: the input to run the call with instead (the whole
    /// input, as Claude Code's `updatedInput`).
    #[schema(value_type = Option<Object>)]
    pub updated_input: Option<Value>,
    /// With `allow`: `session` adds an allow rule for the rest of the
    /// session (the exact Bash command, WebFetch's domain, or the tool).
    pub remember: Option<Remember>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PermissionAnswered {
    #[schema(value_type = String, format = Uuid)]
    pub request_id: Uuid,
    pub decision: Decision,
    /// The allow rule kept for the rest of the session, when `remember` was
    /// given and the call can be named by one.
    #[schema(example = "Bash(npm test)")]
    pub remembered_rule: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"answers": {"Which language should the tool use?": "Rust"}}))]
pub struct QuestionAnswer {
    /// The answer to each question, by its text: an option's label, several
    /// labels joined by ", " for multiSelect, or any other text.
    pub answers: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuestionAnswered {
    #[schema(value_type = String, format = Uuid)]
    pub request_id: Uuid,
    pub answers: BTreeMap<String, String>,
}

/// Most characters of a denial's message or an answer.
const MAX_TEXT_CHARS: usize = 10_000;

async fn pending(
    state: &AppState,
    id: SessionId,
    kind: RequestKind,
) -> Result<Vec<PersonRequest>, ApiError> {
    state
        .store
        .get(id)
        .await?
        .ok_or(ApiError::SessionNotFound)?;
    Ok(state.store.pending_requests(id, kind).await?)
}

/// The unanswered request `request_id` of `kind`, or why there is none.
async fn open_request(
    state: &AppState,
    id: SessionId,
    request_id: Option<Uuid>,
    kind: RequestKind,
) -> Result<PersonRequest, ApiError> {
    state
        .store
        .get(id)
        .await?
        .ok_or(ApiError::SessionNotFound)?;
    let what = match kind {
        RequestKind::Permission => "permission request",
        RequestKind::Question => "question",
    };
    let request = match request_id {
        Some(request_id) => state.store.request(id, request_id).await?,
        None => None,
    }
    .filter(|r| r.kind == kind)
    .ok_or(ApiError::RequestNotFound(what))?;
    match &request.answer {
        Some(answer) => Err(already(answer)),
        None => Ok(request),
    }
}

fn already(answer: &Value) -> ApiError {
    let decision = answer["decision"].as_str().unwrap_or("deny");
    let how = match answer["decided_by"].as_str().unwrap_or("user") {
        "user" => format!("{decision} by a person"),
        "timeout" => "denied because nobody answered in time".to_owned(),
        _ => "denied because the turn ended".to_owned(),
    };
    ApiError::AlreadyAnswered(how)
}

/// Stores `answer` unless another came first.
async fn settle(
    state: &AppState,
    id: SessionId,
    request_id: Uuid,
    answer: &Value,
    what: &'static str,
) -> Result<(), ApiError> {
    match state.store.answer_request(id, request_id, answer).await? {
        Answering::Answered => Ok(()),
        Answering::AlreadyAnswered(first) => Err(already(&first)),
        Answering::NotFound => Err(ApiError::RequestNotFound(what)),
    }
}

/// List calls waiting for approval
///
/// The session's unanswered permission requests, oldest first. While one
/// is open the session's `turn` is `waiting_for_permission`.
#[utoipa::path(
    get, path = "/api/v1/sessions/{session_id}/permissions", tag = "permissions",
    params(("session_id" = String, Path, description = "Session UUID")),
    responses(
        (status = 200, description = "Pending permission requests", body = Vec<PendingPermission>),
        (status = 404, description = "Unknown, deleted or expired session", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub async fn list_permissions(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
) -> Result<Json<Vec<PendingPermission>>, ApiError> {
    let requests = pending(&state, id, RequestKind::Permission).await?;
    Ok(Json(
        requests
            .into_iter()
            .map(|r| PendingPermission {
                request_id: r.id,
                tool_use_id: r.tool_use_id,
                tool_name: r.tool_name,
                tool_input: r.tool_input,
                reason: r.reason,
                created_at: r.created_at,
            })
            .collect(),
    ))
}

/// Approve or deny a call
///
/// Answers a permission request of the session's running turn, which may
/// run on any instance sharing the store. `allow` runs the call (with
/// `updated_input` instead of the model's input when given; deny rules
/// still apply to it); `deny` gives the model a refusal carrying `message`.
#[utoipa::path(
    post, path = "/api/v1/sessions/{session_id}/permissions/{request_id}", tag = "permissions",
    params(
        ("session_id" = String, Path, description = "Session UUID"),
        ("request_id" = String, Path, description = "The request's id, from the permission_request frame or the list"),
    ),
    request_body = PermissionAnswer,
    responses(
        (status = 200, description = "The decision reached the turn", body = PermissionAnswered),
        (status = 400, description = "Body is not a JSON object", body = ErrorBody),
        (status = 404, description = "Unknown session (session_not_found) or request (request_not_found)", body = ErrorBody),
        (status = 409, description = "The request was already answered, or given up on (already_answered)", body = ErrorBody),
        (status = 415, description = "Not a JSON content type", body = ErrorBody),
        (status = 422, description = "Bad decision, message, updated_input or remember", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub async fn answer_permission(
    State(state): State<AppState>,
    RequestPath(id, request_id): RequestPath,
    ApiJson(body): ApiJson<PermissionAnswer>,
) -> Result<Json<PermissionAnswered>, ApiError> {
    if body.decision == Decision::Deny {
        if body.updated_input.is_some() {
            return Err(ApiError::validation(
                "updated_input",
                "only goes with decision allow",
            ));
        }
        if body.remember.is_some() {
            return Err(ApiError::validation(
                "remember",
                "only goes with decision allow",
            ));
        }
    }
    if body
        .updated_input
        .as_ref()
        .is_some_and(|input| !input.is_object())
    {
        return Err(ApiError::validation(
            "updated_input",
            "must be a JSON object (the tool's whole input)",
        ));
    }
    if body
        .message
        .as_ref()
        .is_some_and(|m| m.chars().count() > MAX_TEXT_CHARS)
    {
        return Err(ApiError::validation(
            "message",
            format!("must be at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    let request = open_request(&state, id, request_id, RequestKind::Permission).await?;
    let rule = match body.remember {
        Some(Remember::Session) => remembered_rule(
            &request.tool_name,
            body.updated_input.as_ref().unwrap_or(&request.tool_input),
        ),
        None => None,
    };
    let answer = json!({
        "decision": body.decision,
        "message": body.message,
        "updated_input": body.updated_input,
        "rule": rule,
        "decided_by": "user",
    });
    settle(&state, id, request.id, &answer, "permission request").await?;
    if let Some(rule) = &rule {
        state.store.add_allow_rule(id, rule).await?;
    }
    tracing::info!(session_id = %id, decision = ?body.decision, remembered = rule.is_some(), "permission answered");
    Ok(Json(PermissionAnswered {
        request_id: request.id,
        decision: body.decision,
        remembered_rule: rule,
    }))
}

/// List questions waiting for answers
///
/// The session's unanswered AskUserQuestion calls, oldest first. While one
/// is open the session's `turn` is `waiting_for_answer`.
#[utoipa::path(
    get, path = "/api/v1/sessions/{session_id}/questions", tag = "permissions",
    params(("session_id" = String, Path, description = "Session UUID")),
    responses(
        (status = 200, description = "Pending questions", body = Vec<PendingQuestion>),
        (status = 404, description = "Unknown, deleted or expired session", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub async fn list_questions(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
) -> Result<Json<Vec<PendingQuestion>>, ApiError> {
    let requests = pending(&state, id, RequestKind::Question).await?;
    Ok(Json(
        requests
            .into_iter()
            .map(|r| PendingQuestion {
                request_id: r.id,
                tool_use_id: r.tool_use_id,
                questions: r.tool_input["questions"].clone(),
                created_at: r.created_at,
            })
            .collect(),
    ))
}

/// Answer the model's questions
///
/// Answers an AskUserQuestion call of the running turn; the model gets the
/// answers as the tool's result, in Claude Code's words. Every key must be
/// the text of one of the questions asked.
#[utoipa::path(
    post, path = "/api/v1/sessions/{session_id}/questions/{request_id}", tag = "permissions",
    params(
        ("session_id" = String, Path, description = "Session UUID"),
        ("request_id" = String, Path, description = "The request's id, from the question frame or the list"),
    ),
    request_body = QuestionAnswer,
    responses(
        (status = 200, description = "The answers reached the turn", body = QuestionAnswered),
        (status = 400, description = "Body is not a JSON object", body = ErrorBody),
        (status = 404, description = "Unknown session (session_not_found) or question (request_not_found)", body = ErrorBody),
        (status = 409, description = "Already answered, or given up on (already_answered)", body = ErrorBody),
        (status = 415, description = "Not a JSON content type", body = ErrorBody),
        (status = 422, description = "No answers, an answer to a question not asked, or an empty answer", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub async fn answer_question(
    State(state): State<AppState>,
    RequestPath(id, request_id): RequestPath,
    ApiJson(body): ApiJson<QuestionAnswer>,
) -> Result<Json<QuestionAnswered>, ApiError> {
    if body.answers.is_empty() {
        return Err(ApiError::validation(
            "answers",
            "must answer at least one question",
        ));
    }
    for (question, answer) in &body.answers {
        if answer.trim().is_empty() || answer.chars().count() > MAX_TEXT_CHARS {
            return Err(ApiError::validation(
                "answers",
                format!("the answer to {question:?} must be 1 to {MAX_TEXT_CHARS} characters"),
            ));
        }
    }
    let request = open_request(&state, id, request_id, RequestKind::Question).await?;
    let asked = ask_user::questions(&request.tool_input).unwrap_or_default();
    if let Some(unknown) = body.answers.keys().find(|q| !asked.contains(&q.as_str())) {
        return Err(ApiError::validation(
            "answers",
            format!("{unknown:?} is not one of the questions asked"),
        ));
    }
    let answer = json!({"decision": "allow", "answers": body.answers, "decided_by": "user"});
    settle(&state, id, request.id, &answer, "question").await?;
    Ok(Json(QuestionAnswered {
        request_id: request.id,
        answers: body.answers,
    }))
}
