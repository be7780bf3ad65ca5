//! `/api/v1/keys`: user API keys, made, listed and revoked by an admin key.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::{ApiJson, ApiQuery, AppState, rfc3339};
use crate::auth::{self, IssuedKey};
use crate::domain::UserId;
use crate::error::{ApiError, ErrorBody};
use crate::store::{SessionStore, StoreError, StoredKey};

/// Characters a key's name may have.
const MAX_NAME_CHARS: usize = 64;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/keys", post(create_key).get(list_keys))
        .route("/api/v1/keys/{key_id}", delete(revoke_key))
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"user_id": "alice", "name": "ci", "expires": "30d"}))]
pub struct CreateKeyRequest {
    /// The user the key acts as.
    #[schema(value_type = String, example = "alice", pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub user_id: UserId,
    /// A label for people (1 to 64 printable characters).
    pub name: Option<String>,
    /// How long the key is valid: `<n>m`, `<n>h`, `<n>d` or `<n>w`; never
    /// expires when absent.
    #[schema(example = "30d")]
    pub expires: Option<String>,
}

/// A key as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyInfo {
    /// The public id: the part after `cah_`, before the secret.
    pub key_id: String,
    #[schema(value_type = String)]
    pub user_id: UserId,
    pub name: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "optional_rfc3339")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "optional_rfc3339")]
    #[schema(value_type = Option<String>)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// `active`, `expired` or `revoked`.
    pub status: &'static str,
}

impl From<StoredKey> for KeyInfo {
    fn from(key: StoredKey) -> Self {
        let status = if key.revoked_at.is_some() {
            "revoked"
        } else if key.expires_at.is_some_and(|at| at <= Utc::now()) {
            "expired"
        } else {
            "active"
        };
        Self {
            key_id: key.id,
            user_id: key.user_id,
            name: key.name,
            created_at: key.created_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            status,
        }
    }
}

/// A key just made: the only time its whole text is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    /// The whole key, `cah_<key_id>_<secret>`: send it as
    /// `Authorization: Bearer <key>` or `x-api-key`. Not shown again.
    pub key: String,
    #[serde(flatten)]
    pub info: KeyInfo,
}

fn optional_rfc3339<S: serde::Serializer>(
    t: &Option<DateTime<Utc>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

/// A key's name as given, checked: what listings and logs show.
pub fn parse_name(name: Option<String>) -> Result<Option<String>, String> {
    let Some(name) = name else { return Ok(None) };
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS {
        return Err(format!("must be 1 to {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(Some(name))
}

/// Makes and stores a user key (the one way keys are made, over HTTP and
/// on the command line).
pub async fn issue_key(
    store: &dyn SessionStore,
    user: UserId,
    name: Option<String>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<IssuedKey, StoreError> {
    let issued = auth::issue(user, name, expires_at);
    store.insert_key(&issued.record).await?;
    Ok(issued)
}

/// Create a user API key
///
/// Admin keys only. The key acts as `user_id` alone: its sessions, files and
/// usage. The answer holds the whole key, shown this once.
#[utoipa::path(
    post, path = "/api/v1/keys", tag = "keys",
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "Key created; `key` is shown only now", body = CreatedKey),
        (status = 401, description = "No valid API key (unauthorized)", body = ErrorBody),
        (status = 403, description = "Not an admin key (forbidden)", body = ErrorBody),
        (status = 422, description = "Bad user_id, name or expires", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateKeyRequest>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    caller.require_admin()?;
    let name = parse_name(request.name).map_err(|e| ApiError::validation("name", e))?;
    let expires_at = request
        .expires
        .as_deref()
        .map(auth::parse_expiry)
        .transpose()
        .map_err(|e| ApiError::validation("expires", e))?
        .map(|d| Utc::now() + d);
    let issued = issue_key(state.store.as_ref(), request.user_id, name, expires_at).await?;
    state.auth.key_stored();
    tracing::info!(key_id = %issued.record.id, user_id = %issued.record.user_id, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: issued.key,
            info: issued.record.into(),
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeysQuery {
    /// Only this user's keys.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub user_id: Option<String>,
}

/// List user API keys
///
/// Admin keys only; never shows secrets.
#[utoipa::path(
    get, path = "/api/v1/keys", tag = "keys",
    params(KeysQuery),
    responses(
        (status = 200, description = "Keys, oldest first", body = Vec<KeyInfo>),
        (status = 401, description = "No valid API key (unauthorized)", body = ErrorBody),
        (status = 403, description = "Not an admin key (forbidden)", body = ErrorBody),
        (status = 422, description = "Bad user_id", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<KeysQuery>,
) -> Result<Json<Vec<KeyInfo>>, ApiError> {
    caller.require_admin()?;
    let user = query
        .user_id
        .as_deref()
        .map(UserId::parse)
        .transpose()
        .map_err(|e| ApiError::validation("user_id", e.0))?;
    let keys = state.store.list_keys(user.as_ref()).await?;
    Ok(Json(keys.into_iter().map(KeyInfo::from).collect()))
}

/// Revoke a user API key
///
/// Admin keys only. Requests with the key are refused (401) from now on,
/// on every instance sharing the store. Revoking twice is not an error.
#[utoipa::path(
    delete, path = "/api/v1/keys/{key_id}", tag = "keys",
    params(("key_id" = String, Path, description = "The key's public id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No valid API key (unauthorized)", body = ErrorBody),
        (status = 403, description = "Not an admin key (forbidden)", body = ErrorBody),
        (status = 404, description = "No key has this id (key_not_found)", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    key_id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    // Not even UTF-8 (`%FF`): no key has that id.
    let Ok(Path(key_id)) = key_id else {
        return Err(ApiError::KeyNotFound);
    };
    if !auth::is_key_id(&key_id) || !state.store.revoke_key(&key_id, Utc::now()).await? {
        return Err(ApiError::KeyNotFound);
    }
    tracing::info!(key_id = %key_id, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}
