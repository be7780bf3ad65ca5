//! Daily spending limits per user and turn rates per key, read from and
//! counted in the store so every instance sharing it enforces one total.

use chrono::{DateTime, Duration, DurationRound, Utc};

use crate::config::QuotaSettings;
use crate::domain::UserId;
use crate::error::ApiError;
use crate::store::{SessionStore, UsageTotals};

/// Tokens a day's usage counts against `quotas.per_user_daily_tokens`.
pub fn tokens(usage: &UsageTotals) -> u64 {
    usage.input_tokens
        + usage.output_tokens
        + usage.cache_creation_input_tokens
        + usage.cache_read_input_tokens
}

/// Refuses a turn for `user` once their spending today (UTC) has reached a
/// daily quota. A turn under the quota may end above it; the next is refused.
pub async fn check_daily(
    store: &dyn SessionStore,
    quotas: &QuotaSettings,
    user: &UserId,
) -> Result<(), ApiError> {
    if quotas.per_user_daily_tokens == 0 && quotas.per_user_daily_usd <= 0.0 {
        return Ok(());
    }
    let now = Utc::now();
    let today = now.date_naive();
    let mut spent = UsageTotals::default();
    for day in store.usage_by_day(Some(user), today, today).await? {
        spent += day.usage;
    }
    let retry_after_secs = seconds_until_tomorrow(now);
    let used = tokens(&spent);
    if quotas.per_user_daily_tokens > 0 && used >= quotas.per_user_daily_tokens {
        return Err(ApiError::QuotaExceeded {
            detail: format!(
                "User '{user}' has used {used} of {} tokens today (quotas.per_user_daily_tokens); the quota renews at 00:00 UTC.",
                quotas.per_user_daily_tokens
            ),
            retry_after_secs,
        });
    }
    if quotas.per_user_daily_usd > 0.0 && spent.cost_usd >= quotas.per_user_daily_usd {
        return Err(ApiError::QuotaExceeded {
            detail: format!(
                "User '{user}' has spent ${:.4} of ${:.2} today (quotas.per_user_daily_usd); the quota renews at 00:00 UTC.",
                spent.cost_usd, quotas.per_user_daily_usd
            ),
            retry_after_secs,
        });
    }
    Ok(())
}

/// Counts a turn in `bucket`'s current minute and refuses it past
/// `quotas.turns_per_minute`.
pub async fn count_turn(
    store: &dyn SessionStore,
    quotas: &QuotaSettings,
    bucket: &str,
) -> Result<(), ApiError> {
    let limit = quotas.turns_per_minute;
    if limit == 0 {
        return Ok(());
    }
    let now = Utc::now();
    let window = now.duration_trunc(Duration::minutes(1)).unwrap_or(now);
    let started = store.count_turn(bucket, window).await?;
    if started > limit {
        let elapsed = (now - window).num_seconds().clamp(0, 59);
        return Err(ApiError::RateLimited {
            limit,
            retry_after_secs: u64::try_from(60 - elapsed).unwrap_or(60),
        });
    }
    Ok(())
}

fn seconds_until_tomorrow(now: DateTime<Utc>) -> u64 {
    let tomorrow = (now.date_naive() + Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc());
    tomorrow.map_or(86_400, |t| {
        u64::try_from((t - now).num_seconds().max(1)).unwrap_or(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_renews_at_the_next_utc_midnight() {
        let t = DateTime::parse_from_rfc3339("2026-12-01T23:59:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(seconds_until_tomorrow(t), 60);
        let t = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(seconds_until_tomorrow(t), 86_400);
    }
}
