//! `GET /metrics`: the service's counters, histograms and gauges in
//! Prometheus' text format, optionally behind a bearer token.

use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use subtle::ConstantTimeEq;

use super::AppState;
use super::auth::Caller;
use crate::error::{ApiError, ErrorBody};

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

/// Prometheus metrics
///
/// Turns by outcome, turn duration and time to first token, model calls and
/// retries by status, tokens by kind, cost, tool calls by tool and outcome,
/// live sessions, turns in flight, store operation latency, compactions and
/// HTTP requests by route template, in Prometheus' text format. Needs
/// `Authorization: Bearer <metrics.token>` when a token is configured; 404
/// when `metrics.enabled` is false.
#[utoipa::path(
    get, path = "/metrics", tag = "service",
    responses(
        (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String),
        (status = 401, description = "metrics.token is set and the request did not send it (unauthorized)", body = ErrorBody),
        (status = 404, description = "metrics.enabled is false (not_found)", body = ErrorBody),
    )
)]
pub async fn scrape(State(state): State<AppState>, caller: Caller, headers: HeaderMap) -> Response {
    let settings = &state.settings.metrics;
    if !settings.enabled {
        return ApiError::NotFound.into_response();
    }
    match settings.token.expose() {
        Some(token) if !bearer_matches(&headers, token) => return unauthorized(),
        Some(_) => {}
        // Without a token of its own, the page is for admin keys (or anyone
        // when the service runs without API keys).
        None => {
            if let Err(err) = caller.require_admin() {
                return err.into_response();
            }
        }
    }
    // A store that does not answer leaves the gauge at its last value; the
    // rest of the page is still worth scraping.
    let live = state.store.count_live().await.ok();
    let page = crate::metrics::render(live, state.agent.turns_in_flight());
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        page,
    )
        .into_response()
}

fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| bool::from(given.trim().as_bytes().ct_eq(token.as_bytes())))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="metrics""#),
        )],
        Json(ErrorBody {
            error: "unauthorized",
            detail:
                "GET /metrics needs the metrics token: send Authorization: Bearer <metrics.token>."
                    .into(),
            fields: None,
        }),
    )
        .into_response()
}
