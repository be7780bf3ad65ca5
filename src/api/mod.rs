//! The HTTP surface: shared state, the JSON extractor whose rejections are
//! the contract's errors, the router and the OpenAPI document.

pub mod attachments;
pub mod auth;
pub mod chat;
pub mod commands;
pub mod events;
pub mod export;
pub mod files;
mod frames;
pub mod health;
pub mod keys;
pub mod metrics;
pub mod permissions;
pub mod sessions;
pub mod skills;
mod ui;
pub mod usage;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;
use serde::de::DeserializeOwned;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::agent::turn::Agent;
use crate::auth::Authenticator;
use crate::config::Settings;
use crate::domain::SessionId;
use crate::error::{ApiError, ErrorBody, FieldProblem};
use crate::mcp::McpHub;
use crate::skills::SkillSource;
use crate::store::DynStore;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: DynStore,
    pub agent: Arc<Agent>,
    pub skills: Arc<SkillSource>,
    pub mcp: Arc<McpHub>,
    pub auth: Arc<Authenticator>,
    pub started: Instant,
}

/// A JSON body parsed in two steps, so that "not JSON" (400), "wrong content
/// type" (415), "too large" (413) and "JSON of the wrong shape" (422, with
/// the offending field) each get their own answer.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let essence = v
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                essence == "application/json"
                    || (essence.starts_with("application/") && essence.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(state.settings.api.max_body_bytes, |l| l.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::MalformedJson(rejection.body_text())
            }
        })?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        if !value.is_object() {
            return Err(ApiError::MalformedJson("expected a JSON object".into()));
        }
        let parsed = serde_path_to_error::deserialize(value).map_err(shape_error)?;
        Ok(Self(parsed))
    }
}

/// The body limit of a route that sets its own (`DefaultBodyLimit`), for
/// the 413's detail.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A query string parsed into `T`; a missing, duplicated or malformed
/// parameter is the contract's 422 naming it, not axum's plain-text 400.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let params =
            serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(params)
            .map(Self)
            .map_err(shape_error)
    }
}

/// The `{session_id}` of a path. Anything that is not a UUID, not even
/// UTF-8 (`%FF%FE`), cannot name a session: 404 like any unknown session.
pub struct SessionPath(pub SessionId);

impl<S: Send + Sync> FromRequestParts<S> for SessionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(raw)) => sessions::parse_session_id(&raw).map(Self),
            Err(PathRejection::FailedToDeserializePathParams(_)) => Err(ApiError::SessionNotFound),
            // The route has no `{session_id}`: a bug in the router.
            Err(other) => Err(ApiError::Internal(other.body_text())),
        }
    }
}

/// A body or query of the wrong shape: 422 naming the field serde tripped on.
fn shape_error<E: std::fmt::Display>(err: serde_path_to_error::Error<E>) -> ApiError {
    let path = err.path().to_string();
    let problem = err.into_inner().to_string();
    let field = match (path.as_str(), named_field(&problem)) {
        (".", Some(named)) => named.to_owned(),
        (".", None) => "body".to_owned(),
        (_, Some(named)) => format!("{path}.{named}"),
        _ => path,
    };
    ApiError::Validation {
        detail: format!("{field}: {problem}"),
        fields: vec![FieldProblem { field, problem }],
    }
}

/// serde names a missing or repeated field only in its message:
/// "missing field `x`", "duplicate field `x`".
fn named_field(problem: &str) -> Option<&str> {
    problem
        .strip_prefix("missing field `")
        .or_else(|| problem.strip_prefix("duplicate field `"))
        .and_then(|rest| rest.split('`').next())
}

/// RFC 3339 with milliseconds and `Z`, as the contract shows.
pub fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Claude Agent HTTP API",
        description = "A Claude coding agent behind a REST API: sessions per user, each with its own working directory."
    ),
    paths(
        health::root,
        health::health,
        metrics::scrape,
        sessions::create_session,
        sessions::list_sessions,
        sessions::get_session,
        sessions::update_session,
        sessions::delete_session,
        sessions::fork_session,
        sessions::resume_session,
        sessions::session_messages,
        sessions::compact_session,
        export::export_session,
        chat::interrupt,
        events::session_events,
        events::session_turn,
        chat::chat,
        chat::chat_stream,
        permissions::list_permissions,
        permissions::answer_permission,
        permissions::list_questions,
        permissions::answer_question,
        skills::list_skills,
        commands::list_commands,
        files::list_root,
        files::download,
        files::upload,
        files::remove,
        keys::create_key,
        keys::list_keys,
        keys::revoke_key,
        usage::usage,
    ),
    components(schemas(ErrorBody, FieldProblem)),
    modifiers(&SecuritySchemes),
    security(("bearer" = []), ("api_key" = [])),
    tags(
        (name = "sessions", description = "Create, inspect, resume and delete sessions"),
        (name = "files", description = "Download, list, upload and delete files in a session's directory"),
        (name = "skills", description = "Skills and slash commands a session would see"),
        (name = "chat", description = "Talk to the agent: one turn per message"),
        (name = "permissions", description = "Approve the agent's calls and answer its questions while a turn waits"),
        (name = "keys", description = "User API keys (admin keys only)"),
        (name = "usage", description = "Tokens and cost per user and day"),
        (name = "service", description = "Service information and health")
    )
)]
pub struct ApiDoc;

/// The two ways to send a key, so Swagger UI's Authorize button offers them.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            utoipa::openapi::security::SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key as `Authorization: Bearer <key>` (needed once any key exists)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            utoipa::openapi::security::SecurityScheme::ApiKey(ApiKey::Header(
                ApiKeyValue::with_description("x-api-key", "The same API key in `x-api-key`"),
            )),
        );
    }
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The whole application router, without the outer middleware.
pub fn router(state: AppState) -> Router {
    let max_upload = state.settings.api.max_upload_bytes;
    Router::new()
        .merge(health::routes())
        .merge(sessions::routes())
        .merge(export::routes())
        .merge(chat::routes(state.settings.api.max_chat_body_bytes()))
        .merge(permissions::routes())
        .merge(events::routes())
        .merge(skills::routes())
        .merge(commands::routes())
        .merge(files::routes(max_upload))
        .merge(ui::routes())
        .merge(metrics::routes())
        .merge(keys::routes())
        .merge(usage::routes())
        .with_state(state.clone())
        .merge(
            Router::new()
                .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi()))
                // Swagger UI answers an unknown file under /docs with an
                // empty 404, and an undecodable name with a plain-text 400.
                .layer(axum::middleware::map_response(contract_not_found)),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Last, so every route merged above, and any added later in this
        // function's chain, runs behind it (see `auth`).
        .layer(axum::middleware::from_fn_with_state(
            state,
            auth::authenticate,
        ))
}

async fn not_found() -> Response {
    ApiError::NotFound.into_response()
}

/// Neither names a file Swagger UI has.
async fn contract_not_found(response: Response) -> Response {
    if matches!(
        response.status(),
        StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST
    ) {
        ApiError::NotFound.into_response()
    } else {
        response
    }
}

async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed.into_response()
}
