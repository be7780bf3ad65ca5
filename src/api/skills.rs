//! `GET /api/v1/skills`: the Skills a session in a given directory would see.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::{ApiQuery, AppState};
use crate::domain::{Subdir, UserId};
use crate::error::{ApiError, ErrorBody};
use crate::skills::{SettingSource, SkillSource};
use crate::workspace::{Workspace, WorkspaceError};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/skills", get(list_skills))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SkillsQuery {
    /// The user whose directory to look in: 1 to 64 characters of A-Z, a-z,
    /// 0-9, `_` or `-`.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64)]
    pub user_id: String,
    /// The session's subdirectory, if any: at most 200 characters; not
    /// absolute, no `..` component, no NUL.
    #[param(
        max_length = 200,
        pattern = r"^(?![/\\])(?!(.*/)?\.\.(/|$))[^\u0000]*$"
    )]
    pub subdir: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SkillInfo {
    pub name: String,
    pub description: String,
    /// `user`, `project` or `plugin:<name>`.
    pub source: String,
    /// The skill's folder on the server.
    pub dir: String,
}

/// List skills
///
/// The Skills the model would be offered in a session for `user_id` and
/// `subdir`, with where each comes from. A directory that does not exist yet
/// has no project skills.
#[utoipa::path(
    get, path = "/api/v1/skills", tag = "skills",
    params(SkillsQuery),
    responses(
        (status = 200, description = "Skills, by name", body = Vec<SkillInfo>),
        (status = 404, description = "Another user's directory, asked with a user key (not_found)", body = ErrorBody),
        (status = 422, description = "Bad user_id or subdir, or a subdir that leads outside the user's directory through a symlink (validation_failed)", body = ErrorBody),
        (status = 500, description = "The directory could not be read (internal; details in the log)", body = ErrorBody),
    )
)]
pub async fn list_skills(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<SkillsQuery>,
) -> Result<Json<Vec<SkillInfo>>, ApiError> {
    let skills = match lookup_directory(&state, &caller, &query).await? {
        Directory::Session(workspace) => state.skills.list(&workspace).await,
        Directory::Missing(scratch) => {
            // Nothing on disk yet: only the skills that do not live in it.
            let sources: Vec<SettingSource> = state
                .settings
                .defaults
                .setting_sources
                .iter()
                .copied()
                .filter(|s| *s != SettingSource::Project)
                .collect();
            let elsewhere = SkillSource::new(
                crate::skills::home_dir(),
                sources,
                state.settings.plugins.clone(),
            );
            elsewhere.list(&scratch).await
        }
    };
    Ok(Json(
        skills
            .into_iter()
            .map(|s| SkillInfo {
                name: s.name,
                description: s.description,
                source: s.source,
                dir: s.dir.display().to_string(),
            })
            .collect(),
    ))
}

/// The directory a listing for `user_id` and `subdir` looks in.
pub(super) enum Directory {
    /// The session's directory, as a session there would open it.
    Session(Workspace),
    /// It does not exist yet: a workspace over the base directory, for
    /// discovery that must not read the project (its project source is
    /// filtered out).
    Missing(Workspace),
}

/// Parses the query and opens the directory without creating it.
pub(super) async fn lookup_directory(
    state: &AppState,
    caller: &Caller,
    query: &SkillsQuery,
) -> Result<Directory, ApiError> {
    let user = UserId::parse(&query.user_id).map_err(|e| ApiError::validation("user_id", e.0))?;
    caller.look_at(&user)?;
    let subdir = query
        .subdir
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(Subdir::parse)
        .transpose()
        .map_err(|e| ApiError::validation("subdir", e.0))?;
    let base = state.settings.user.base_dir.clone();
    let opened =
        tokio::task::spawn_blocking(move || Workspace::open(&base, &user, subdir.as_ref(), false))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    match opened {
        Ok(workspace) => Ok(Directory::Session(workspace)),
        Err(WorkspaceError::Missing(_)) => Ok(Directory::Missing(base_workspace(state)?)),
        Err(other) => Err(other.into()),
    }
}

fn base_workspace(state: &AppState) -> Result<Workspace, ApiError> {
    let base = &state.settings.user.base_dir;
    std::fs::create_dir_all(base).map_err(|e| ApiError::Internal(e.to_string()))?;
    Workspace::at(base).map_err(|e| ApiError::Internal(e.to_string()))
}
