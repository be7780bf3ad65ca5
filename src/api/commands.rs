//! `GET /api/v1/commands`: the slash commands a session in a given directory
//! would understand, built-in and custom.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::auth::Caller;
use super::skills::{Directory, SkillsQuery, lookup_directory};
use super::{ApiQuery, AppState};
use crate::agent::commands::{self, CommandInfo, CommandSources};
use crate::error::{ApiError, ErrorBody};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/commands", get(list_commands))
}

/// List commands
///
/// What a message may start with in a session for `user_id` and `subdir`:
/// the built-in commands, then custom commands (`.claude/commands/*.md` of
/// the project, `commands/*.md` of the service's Claude directory) and
/// skills, by name. A skill shadows a command of the same name. A directory
/// that does not exist yet has no project commands.
#[utoipa::path(
    get, path = "/api/v1/commands", tag = "skills",
    params(SkillsQuery),
    responses(
        (status = 200, description = "Commands: built-in first, then the rest by name", body = Vec<CommandInfo>),
        (status = 404, description = "Another user's directory, asked with a user key (not_found)", body = ErrorBody),
        (status = 422, description = "Bad user_id or subdir, or a subdir that leads outside the user's directory through a symlink (validation_failed)", body = ErrorBody),
        (status = 500, description = "The directory could not be read (internal; details in the log)", body = ErrorBody),
    )
)]
pub async fn list_commands(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<SkillsQuery>,
) -> Result<Json<Vec<CommandInfo>>, ApiError> {
    let sources = CommandSources::from_settings(&state.settings);
    let listed = match lookup_directory(&state, &caller, &query).await? {
        Directory::Session(workspace) => commands::list(sources, &workspace).await,
        Directory::Missing(scratch) => commands::list(sources.without_project(), &scratch).await,
    };
    Ok(Json(listed))
}
