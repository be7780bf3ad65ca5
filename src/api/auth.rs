//! Who a request acts as, and what it may reach: the middleware every
//! route runs behind, the `Caller` extractor, and the audit line.
//!
//! How an endpoint is covered:
//! - Any route under `/api/v1/sessions/{session_id}` (whatever the
//!   parameter's name) is scoped here, before its handler runs: a user key
//!   gets 404 `session_not_found` for a session of another user. A new
//!   endpoint there needs nothing more, as long as it is merged in
//!   `api::router` before the auth layer.
//! - An endpoint that takes a session id or a `user_id` in its body or
//!   query extracts [`Caller`] and asks it: [`Caller::session`] for a session
//!   id (404 when not the caller's), [`Caller::act_as`] for a user it would
//!   create something for (403), [`Caller::list_scope`] to filter a list,
//!   [`Caller::look_at`] for a user's files (404).
//! - Open endpoints are listed in [`is_open`]; everything else needs a key
//!   once authentication is on.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::auth::Refusal;
pub use crate::auth::{Access, Caller};
use crate::domain::{SessionId, UserId};
use crate::error::ApiError;
use crate::store::Session;

/// The session routes scoped by the middleware: every route whose template
/// starts with this and a path parameter (the session id).
const SESSION_SCOPE: &str = "/api/v1/sessions/{";

/// Endpoints anyone may call: what the service is, whether it is up (status
/// only without a key), and its API documentation.
pub fn is_open(path: &str) -> bool {
    matches!(path, "/" | "/health" | "/openapi.json" | "/docs" | "/ui")
        || path.starts_with("/docs/")
        || path.starts_with("/ui/")
}

/// What a handler may record about a mutating request for the audit line:
/// the user and session it acted on, when the path does not say.
#[derive(Debug, Clone, Default)]
pub struct AuditSubject {
    pub user: Option<UserId>,
    pub session: Option<SessionId>,
}

/// Resolves the caller, refuses what it may not reach, and writes the audit
/// line of a mutating request.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let caller = match resolve(&state, &parts).await {
        Ok(caller) => caller,
        Err(err) => {
            audit(&parts, &Caller::anonymous(), &err.status());
            return err.into_response();
        }
    };
    let scoped = match scope_session(&state, &caller, &mut parts).await {
        Ok(scoped) => scoped,
        Err(err) => {
            audit(&parts, &caller, &err.status());
            return err.into_response();
        }
    };
    let mutating = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let audit_parts = mutating.then(|| (parts.method.clone(), route(&parts)));
    parts.extensions.insert(caller.clone());
    request = Request::from_parts(parts, body);
    let response = next.run(request).await;
    if let Some((method, action)) = audit_parts {
        let subject = response.extensions().get::<AuditSubject>();
        let user = subject
            .and_then(|s| s.user.clone())
            .or_else(|| scoped.as_ref().map(|s| s.user_id.clone()))
            .or_else(|| caller.user().cloned());
        let session = subject
            .and_then(|s| s.session)
            .or_else(|| scoped.as_ref().map(|s| s.id));
        tracing::info!(
            target: "audit",
            key_id = caller.key_id.as_deref().unwrap_or("-"),
            user = user.as_ref().map_or("-", UserId::as_str),
            action = %format_args!("{method} {action}"),
            session_id = %session.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            status = response.status().as_u16(),
            "audit"
        );
    }
    response
}

/// The audit line of a request refused before its handler ran.
fn audit(parts: &Parts, caller: &Caller, status: &axum::http::StatusCode) {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return;
    }
    tracing::info!(
        target: "audit",
        key_id = caller.key_id.as_deref().unwrap_or("-"),
        user = caller.user().map_or("-", UserId::as_str),
        action = %format_args!("{} {}", parts.method, route(parts)),
        session_id = "-",
        status = status.as_u16(),
        "audit"
    );
}

/// The route template (low-cardinality), or the raw path when unmatched.
fn route(parts: &Parts) -> String {
    parts
        .extensions
        .get::<MatchedPath>()
        .map_or_else(|| parts.uri.path().to_owned(), |m| m.as_str().to_owned())
}

async fn resolve(state: &AppState, parts: &Parts) -> Result<Caller, ApiError> {
    // `/metrics` with its own token (`metrics.token`) needs no API key: the
    // handler checks the token.
    let open = is_open(parts.uri.path())
        || (parts.uri.path() == "/metrics" && state.settings.metrics.token.is_set());
    let required = match state.auth.required(state.store.as_ref()).await {
        Ok(required) => required,
        // Without the store the health check still answers; no key was ever
        // seen (that would have been remembered), so as without keys.
        Err(_) if open => return Ok(Caller::unrestricted()),
        Err(err) => return Err(err.into()),
    };
    if !required {
        return Ok(Caller::unrestricted());
    }
    let refused = |detail: &str| {
        if open {
            Ok(Caller::anonymous())
        } else {
            Err(ApiError::Unauthorized(detail.to_owned()))
        }
    };
    let Some(key) = presented_key(&parts.headers) else {
        return refused(
            "This endpoint needs an API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
        );
    };
    match state.auth.verify(state.store.as_ref(), key).await {
        Ok(Ok(caller)) => Ok(caller),
        Ok(Err(refusal)) => {
            tracing::info!(reason = ?refusal, "API key refused");
            refused(match refusal {
                Refusal::Unknown => "The API key is not valid.",
                Refusal::Revoked => "The API key has been revoked; ask an admin for a new one.",
                Refusal::Expired => "The API key has expired; ask an admin for a new one.",
            })
        }
        Err(_) if open => Ok(Caller::anonymous()),
        Err(err) => Err(err.into()),
    }
}

/// The key of `Authorization: Bearer <key>` or `x-api-key: <key>`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    bearer
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|k| !k.is_empty())
}

/// For a route under `/api/v1/sessions/{..}` called with a user key: the session,
/// when it is the key's user's; 404 otherwise. `None` for other routes and
/// unrestricted callers, whose handlers look the session up themselves.
async fn scope_session(
    state: &AppState,
    caller: &Caller,
    parts: &mut Parts,
) -> Result<Option<Session>, ApiError> {
    let Some(user) = caller.user() else {
        return Ok(None);
    };
    // The parameter's name, whatever a route calls it (`{session_id}`, `{id}`).
    let Some(param) = parts
        .extensions
        .get::<MatchedPath>()
        .and_then(|m| m.as_str().strip_prefix(SESSION_SCOPE))
        .and_then(|rest| rest.split_once('}'))
        .map(|(name, _)| name.trim_start_matches('*').to_owned())
    else {
        return Ok(None);
    };
    let params = Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::SessionNotFound)?;
    let id = params
        .get(&param)
        .and_then(|raw| SessionId::parse(raw))
        .ok_or(ApiError::SessionNotFound)?;
    match state.store.get(id).await? {
        Some(session) if &session.user_id == user => Ok(Some(session)),
        _ => Err(ApiError::SessionNotFound),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("route served without the auth middleware".into()))
    }
}

/// What a list may show a caller who asked for `requested`'s items.
pub enum ListScope {
    /// Everything (an unrestricted caller who named no user).
    All,
    One(UserId),
    /// Another user's items, asked for with a user key: shown as none.
    Nothing,
}

impl Caller {
    /// The live session `id`, when this caller may reach it; 404 otherwise,
    /// the same answer as for a session that does not exist.
    pub async fn session(&self, state: &AppState, id: SessionId) -> Result<Session, ApiError> {
        match state.store.get(id).await? {
            Some(session) if self.sees(&session.user_id) => Ok(session),
            _ => Err(ApiError::SessionNotFound),
        }
    }

    /// Refuses (403) making something for a user other than the key's own.
    pub fn act_as(&self, user: &UserId) -> Result<(), ApiError> {
        if self.sees(user) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "This API key acts only as its own user, not as '{user}'."
            )))
        }
    }

    /// Refuses (404) looking at another user's files.
    pub fn look_at(&self, user: &UserId) -> Result<(), ApiError> {
        if self.sees(user) {
            Ok(())
        } else {
            Err(ApiError::NotVisible)
        }
    }

    /// Refuses (403) what only an admin key may do.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_unrestricted() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "Only an admin key (api.api_keys) may do this.".into(),
            ))
        }
    }

    pub fn list_scope(&self, requested: Option<UserId>) -> ListScope {
        match (&self.access, requested) {
            (Access::Unrestricted, None) => ListScope::All,
            (Access::Unrestricted, Some(user)) => ListScope::One(user),
            (Access::User(own), None) => ListScope::One(own.clone()),
            (Access::User(own), Some(user)) if *own == user => ListScope::One(user),
            _ => ListScope::Nothing,
        }
    }

    /// Admits a turn in session `id`: the session must be this caller's,
    /// and the turn is counted against `quotas.turns_per_minute`.
    pub async fn admit_turn(&self, state: &AppState, id: SessionId) -> Result<Session, ApiError> {
        let session = self.session(state, id).await?;
        crate::quotas::count_turn(
            state.store.as_ref(),
            &state.settings.quotas,
            &self.rate_bucket(&session.user_id),
        )
        .await?;
        Ok(session)
    }

    /// What `quotas.turns_per_minute` counts this caller's turns under.
    pub fn rate_bucket(&self, session_user: &UserId) -> String {
        match &self.key_id {
            Some(id) => format!("key:{id}"),
            None => format!("user:{session_user}"),
        }
    }
}
