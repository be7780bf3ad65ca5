//! `GET /api/v1/usage`: tokens, cost and turns per user and UTC day.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Caller, ListScope};
use super::{ApiQuery, AppState};
use crate::domain::UserId;
use crate::error::{ApiError, ErrorBody};
use crate::quotas;
use crate::store::UsageTotals;

/// The longest range one request may cover.
const MAX_DAYS: i64 = 366;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/usage", get(usage))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Only this user (a user key sees only its own user).
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub user_id: Option<String>,
    /// First day, `YYYY-MM-DD` (UTC); default 29 days before `to`.
    #[param(example = "2026-12-01")]
    pub from: Option<String>,
    /// Last day, `YYYY-MM-DD` (UTC), included; default today.
    #[param(example = "2026-12-01")]
    pub to: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DayUsage {
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// `YYYY-MM-DD`, UTC.
    #[schema(value_type = String, example = "2026-12-01")]
    pub day: NaiveDate,
    /// Input, output, cache-write and cache-read tokens: what
    /// `quotas.per_user_daily_tokens` counts.
    pub tokens: u64,
    pub usage: UsageTotals,
    /// User messages sent.
    pub turns: u64,
}

fn parse_day(field: &str, raw: Option<&str>) -> Result<Option<NaiveDate>, ApiError> {
    raw.map(|raw| {
        NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .map_err(|_| ApiError::validation(field, "must be a date as YYYY-MM-DD"))
    })
    .transpose()
}

/// Usage per user and day
///
/// What each user spent per UTC day, deleted sessions included, as daily
/// quotas count it. Days without usage are left out.
#[utoipa::path(
    get, path = "/api/v1/usage", tag = "usage",
    params(UsageQuery),
    responses(
        (status = 200, description = "Usage by day, then user", body = Vec<DayUsage>),
        (status = 401, description = "No valid API key (unauthorized)", body = ErrorBody),
        (status = 422, description = "Bad user_id, from or to, or a range over 366 days", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Json<Vec<DayUsage>>, ApiError> {
    let user = query
        .user_id
        .as_deref()
        .map(UserId::parse)
        .transpose()
        .map_err(|e| ApiError::validation("user_id", e.0))?;
    let to = parse_day("to", query.to.as_deref())?.unwrap_or_else(|| Utc::now().date_naive());
    let from = parse_day("from", query.from.as_deref())?.unwrap_or(to - Duration::days(29));
    if from > to {
        return Err(ApiError::validation("from", "must not be after to"));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(ApiError::validation(
            "from",
            format!("the range may cover at most {MAX_DAYS} days"),
        ));
    }
    let days = match caller.list_scope(user) {
        ListScope::All => state.store.usage_by_day(None, from, to).await?,
        ListScope::One(user) => state.store.usage_by_day(Some(&user), from, to).await?,
        ListScope::Nothing => Vec::new(),
    };
    Ok(Json(
        days.into_iter()
            .map(|d| DayUsage {
                tokens: quotas::tokens(&d.usage),
                user_id: d.user_id,
                day: d.day,
                usage: d.usage,
                turns: d.turns,
            })
            .collect(),
    ))
}
