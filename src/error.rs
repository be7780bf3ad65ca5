//! The API's errors: one enum, one status match, the contract's body
//! `{"error", "detail"}`. Internal details are logged, never sent.

use axum::Json;
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;
use crate::workspace::WorkspaceError;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldProblem {
    pub field: String,
    pub problem: String,
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable snake_case code, e.g. `session_not_found`.
    pub error: &'static str,
    /// One sentence a person can act on.
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<FieldProblem>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    MalformedJson(String),
    #[error("no route for this path")]
    NotFound,
    #[error("session not found")]
    SessionNotFound,
    #[error("turn not found")]
    TurnNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("payload too large")]
    PayloadTooLarge(usize),
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("{detail}")]
    Validation {
        detail: String,
        fields: Vec<FieldProblem>,
    },
    #[error("a turn is already running in this session")]
    SessionBusy,
    /// A change that must wait for the running turn to end (409).
    #[error("a turn is running in this session")]
    ChangeWhileBusy,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    SessionLimit(String),
    #[error("no turn is running in this session")]
    NoTurnRunning,
    /// No pending or answered request of this kind has this id in the session.
    #[error("no such request in this session")]
    RequestNotFound(&'static str),
    #[error("the request was already answered")]
    AlreadyAnswered(String),
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    BudgetExceeded(String),
    #[error("{0}")]
    Upstream(String),
    #[error("no Anthropic credentials configured")]
    UpstreamNotConfigured,
    #[error("session store unavailable: {0}")]
    StoreUnavailable(String),
    #[error("turn timed out after {0} s")]
    TurnTimeout(u64),
    /// A file path that leads outside the session's directory (`..`, an
    /// absolute path, a symlink out); it holds the path as the client gave it.
    #[error("path '{0}' is outside the session's directory")]
    PathOutside(String),
    #[error("no file at '{0}'")]
    FileNotFound(String),
    #[error("directory '{0}' is not empty")]
    DirectoryNotEmpty(String),
    /// A `Range` that starts past the end of a file of this many bytes.
    #[error("range not satisfiable for {0} bytes")]
    RangeNotSatisfiable(u64),
    /// One part of a request over its own size limit (an attachment).
    #[error("{0}")]
    PartTooLarge(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{detail}")]
    QuotaExceeded {
        detail: String,
        retry_after_secs: u64,
    },
    #[error("too many turns per minute")]
    RateLimited { limit: u64, retry_after_secs: u64 },
    #[error("API key not found")]
    KeyNotFound,
    /// A user id a user key may not look at: answered like a missing
    /// resource, so keys cannot probe which users exist.
    #[error("not visible to this key")]
    NotVisible,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn validation(field: &str, problem: impl Into<String>) -> Self {
        let problem = problem.into();
        Self::Validation {
            detail: format!("{field}: {problem}"),
            fields: vec![FieldProblem {
                field: field.to_owned(),
                problem,
            }],
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) => StatusCode::BAD_REQUEST,
            Self::NotFound
            | Self::SessionNotFound
            | Self::TurnNotFound
            | Self::KeyNotFound
            | Self::NotVisible => StatusCode::NOT_FOUND,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::QuotaExceeded { .. } | Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NoTurnRunning
            | Self::ChangeWhileBusy
            | Self::AlreadyAnswered(_)
            | Self::DirectoryNotEmpty(_) => StatusCode::CONFLICT,
            Self::Forbidden(_) | Self::PathOutside(_) => StatusCode::FORBIDDEN,
            Self::RequestNotFound(_) | Self::FileNotFound(_) => StatusCode::NOT_FOUND,
            Self::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::PayloadTooLarge(_) | Self::PartTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::SessionBusy | Self::SessionLimit(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::BudgetExceeded(_) => StatusCode::PAYMENT_REQUIRED,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamNotConfigured | Self::StoreUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::TurnTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::NotFound => "not_found",
            Self::SessionNotFound => "session_not_found",
            Self::TurnNotFound => "turn_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge(_) | Self::PartTooLarge(_) => "payload_too_large",
            Self::PathOutside(_) => "path_outside_session",
            Self::FileNotFound(_) => "file_not_found",
            Self::DirectoryNotEmpty(_) => "directory_not_empty",
            Self::RangeNotSatisfiable(_) => "range_not_satisfiable",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Validation { .. } => "validation_failed",
            Self::SessionBusy | Self::ChangeWhileBusy => "session_busy",
            Self::Forbidden(_) => "forbidden",
            Self::SessionLimit(_) => "session_limit",
            Self::NoTurnRunning => "no_turn_running",
            Self::RequestNotFound(_) => "request_not_found",
            Self::AlreadyAnswered(_) => "already_answered",
            Self::ShuttingDown => "shutting_down",
            Self::BudgetExceeded(_) => "budget_exceeded",
            Self::Upstream(_) => "upstream_error",
            Self::UpstreamNotConfigured => "upstream_not_configured",
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::TurnTimeout(_) => "turn_timeout",
            Self::Unauthorized(_) => "unauthorized",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::RateLimited { .. } => "rate_limited",
            Self::KeyNotFound => "key_not_found",
            Self::NotVisible => "not_found",
            Self::Internal(_) => "internal",
        }
    }

    /// What the client is told: specific where it helps them act, generic
    /// where the cause is ours.
    pub fn detail(&self) -> String {
        match self {
            Self::MalformedJson(why) => format!("The request body is not a JSON object: {why}"),
            Self::NotFound => "No such endpoint; see /docs for the API.".into(),
            Self::SessionNotFound => {
                "No such session: it never existed, was deleted, or expired.".into()
            }
            Self::TurnNotFound => {
                "No such turn in this session: it never existed or is older than session.event_retention keeps.".into()
            }
            Self::MethodNotAllowed => {
                "This endpoint does not support that HTTP method; see /docs.".into()
            }
            Self::PayloadTooLarge(limit) => {
                format!("The request body is larger than the limit of {limit} bytes.")
            }
            Self::UnsupportedMediaType => {
                "Send the body as JSON with 'Content-Type: application/json'.".into()
            }
            Self::Validation { detail, .. } => detail.clone(),
            Self::SessionBusy => {
                "A turn is already running in this session; wait for it to finish or interrupt it."
                    .into()
            }
            Self::ChangeWhileBusy => {
                "A turn is running in this session; change it after the turn ends (or interrupt it)."
                    .into()
            }
            Self::SessionLimit(why)
            | Self::BudgetExceeded(why)
            | Self::Forbidden(why)
            | Self::PartTooLarge(why) => why.clone(),
            Self::PathOutside(path) => format!(
                "The path '{path}' leads outside the session's directory; use a relative path without '..' that stays inside it."
            ),
            Self::FileNotFound(path) => {
                format!("Nothing exists at '{path}' in the session's directory.")
            }
            Self::DirectoryNotEmpty(path) => format!(
                "The directory '{path}' is not empty; add ?recursive=true to delete it with everything in it."
            ),
            Self::RangeNotSatisfiable(len) => format!(
                "The requested range starts past the end of the file ({len} bytes)."
            ),
            Self::Upstream(why) => without_urls(why),
            Self::NoTurnRunning => "No turn is running in this session.".into(),
            Self::RequestNotFound(what) => format!(
                "This session has no {what} with that id; list the pending ones with GET on the collection."
            ),
            Self::AlreadyAnswered(how) => format!("This request was already answered: {how}."),
            Self::ShuttingDown => "The service is shutting down; retry on another instance or after it restarts.".into(),
            Self::UpstreamNotConfigured => {
                "The model API is not configured: set ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN."
                    .into()
            }
            Self::StoreUnavailable(_) => {
                "The session store cannot be reached or cannot write right now; try again shortly.".into()
            }
            Self::TurnTimeout(secs) => format!(
                "The turn did not finish within {secs} s and was cancelled; the conversation is kept and you can send the next message."
            ),
            Self::Unauthorized(why) => why.clone(),
            Self::QuotaExceeded { detail, .. } => detail.clone(),
            Self::RateLimited { limit, retry_after_secs } => format!(
                "This API key has started {limit} turns this minute (quotas.turns_per_minute); retry in {retry_after_secs} s."
            ),
            Self::KeyNotFound => "No API key has this id.".into(),
            Self::NotVisible => "Nothing under that user_id is visible to this API key.".into(),
            Self::Internal(_) => {
                "Something went wrong on our side; the x-request-id header identifies it in the logs."
                    .into()
            }
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code(),
            detail: self.detail(),
            fields: match self {
                Self::Validation { fields, .. } if !fields.is_empty() => Some(fields.clone()),
                _ => None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(why) => tracing::error!(error = %why, "internal error"),
            Self::StoreUnavailable(why) => {
                tracing::warn!(error = %why, "session store unavailable")
            }
            Self::Upstream(why) => tracing::warn!(error = %why, "model API failed"),
            _ => {}
        }
        let mut response = (self.status(), Json(self.body())).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::Unauthorized(_) => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="claude-agent-http""#),
                );
            }
            Self::Forbidden(_) => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        r#"Bearer realm="claude-agent-http", error="insufficient_scope""#,
                    ),
                );
            }
            Self::QuotaExceeded {
                retry_after_secs, ..
            }
            | Self::RateLimited {
                retry_after_secs, ..
            } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

impl From<WorkspaceError> for ApiError {
    /// What the client gave (`subdir`) is all a detail may name: the
    /// workspace's own messages hold absolute paths on the server.
    fn from(err: WorkspaceError) -> Self {
        match err {
            WorkspaceError::Escape(_) => Self::validation(
                "subdir",
                "resolves outside the user's directory (through a symlink)",
            ),
            WorkspaceError::Missing(_) => {
                Self::validation("subdir", "does not exist and user.auto_create_dir is off")
            }
            // ENAMETOOLONG: a component over the file system's limit (255
            // bytes on most), which 200 characters of non-ASCII can exceed.
            WorkspaceError::Io(io) if io.kind() == std::io::ErrorKind::InvalidFilename => {
                Self::validation(
                    "subdir",
                    "a path component is too long for the file system (at most 255 bytes)",
                )
            }
            WorkspaceError::Io(io) => Self::Internal(format!("preparing workspace: {io}")),
        }
    }
}

/// Replaces URLs with `<url>`. reqwest names the URL it failed on ("error
/// sending request for url (http://10.0.0.7:8080/v1/messages)"), which tells
/// clients where internal services live and can carry credentials.
fn without_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        let scheme_start = rest[..sep]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let tail = &rest[sep..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>'))
            .unwrap_or(tail.len());
        out.push_str(&rest[..scheme_start]);
        out.push_str("<url>");
        rest = &tail[end..];
    }
    out.push_str(rest);
    out.replace(" for url (<url>)", "")
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(why) => Self::StoreUnavailable(why),
            StoreError::LimitReached(why) => Self::SessionLimit(why),
            StoreError::NotFound => Self::SessionNotFound,
            StoreError::Internal(why) => Self::Internal(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_details_name_no_url() {
        let err = ApiError::Upstream(
            "Could not reach the model API: error sending request for url \
             (http://user:pw@10.0.0.7:8080/v1/messages?key=k): connection refused"
                .into(),
        );
        let detail = err.detail();
        assert_eq!(
            detail,
            "Could not reach the model API: error sending request: connection refused"
        );
        assert_eq!(without_urls("see https://a.b/c and x"), "see <url> and x");
        assert_eq!(without_urls("no url: a://"), "no url: <url>");
        assert_eq!(without_urls("plain text"), "plain text");
    }
}
