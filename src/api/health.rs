//! `GET /` and `GET /health`: what the service is and whether it can work.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Access, Caller};
use crate::mcp::McpServerStatus;
use crate::store::StoreError;

/// How long `/health` waits for the store before calling it unavailable.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a no-op on the runtime's blocking threads may wait to run
/// before the service counts as starved: file tools, skills and workspace
/// set-up all run there.
const BLOCKING_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/health", get(health))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RootResponse {
    pub name: &'static str,
    pub version: &'static str,
    pub docs: &'static str,
    pub health: &'static str,
    /// The playground page.
    pub ui: &'static str,
}

/// Service information
#[utoipa::path(get, path = "/", tag = "service", security(()),
    responses((status = 200, description = "Name, version and where to look next", body = RootResponse)))]
pub async fn root() -> Json<RootResponse> {
    Json(RootResponse {
        name: "Claude Agent HTTP API",
        version: env!("CARGO_PKG_VERSION"),
        docs: "/docs",
        health: "/health",
        ui: "/ui",
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// `healthy` or `unhealthy`.
    pub status: &'static str,
    pub version: &'static str,
    /// Live sessions in the store.
    pub active_sessions: u64,
    /// Turns running in this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_memory_clients: Option<usize>,
    /// Resident memory of this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<f64>,
    /// `memory`, `sqlite` or `postgresql`.
    pub storage_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    /// Whether model calls can be made (an API key or token is configured).
    pub model_api_configured: bool,
    /// Each configured MCP server: `connected`, `not_started` (started on
    /// first use) or `failed` with a short reason (never the server's own
    /// output). A failed server does not make the service unhealthy; it is
    /// restarted on next use.
    pub mcp_servers: Vec<McpServerStatus>,
    /// Why the service is unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Health check
///
/// Callers without a valid key, once keys are required, get `status` only.
/// 200 when the session store answers; 503 `unhealthy` when it does not
/// (e.g. PostgreSQL stopped) or, after a write failed, while it still refuses
/// writes (e.g. a full disk), or while every blocking thread is busy (file
/// work would stall); healthy again once it is back.
#[utoipa::path(get, path = "/health", tag = "service", security(()),
    responses(
        (status = 200, description = "Healthy", body = HealthResponse),
        (status = 503, description = "The session store does not answer or refuses writes", body = HealthResponse),
    ))]
pub async fn health(State(state): State<AppState>, caller: Caller) -> Response {
    let (code, report) = report(&state).await;
    if caller.access == Access::Anonymous {
        // Without a key, whether it works and nothing about what it holds.
        return (code, Json(serde_json::json!({ "status": report.status }))).into_response();
    }
    (code, Json(report)).into_response()
}

async fn report(state: &AppState) -> (StatusCode, HealthResponse) {
    let storage_type = state.store.kind().as_str();
    // Counting live sessions is itself a round trip: it answers only when the
    // store does. Reads still answer on a full disk, so once a write has
    // failed, a probe write must succeed too.
    let probe = async {
        let blocking = tokio::task::spawn_blocking(|| ());
        if !matches!(
            tokio::time::timeout(BLOCKING_PROBE_TIMEOUT, blocking).await,
            Ok(Ok(()))
        ) {
            return Err(StoreProblem::Starved);
        }
        let active = state
            .store
            .count_live()
            .await
            .map_err(StoreProblem::Reads)?;
        if state.store.writes_failing() {
            state
                .store
                .probe_write()
                .await
                .map_err(StoreProblem::Writes)?;
        }
        Ok::<_, StoreProblem>(active)
    };
    let version = env!("CARGO_PKG_VERSION");
    let model_api_configured = state.settings.anthropic.is_configured();
    match tokio::time::timeout(STORE_PROBE_TIMEOUT, probe).await {
        Ok(Ok(active_sessions)) => (
            StatusCode::OK,
            HealthResponse {
                status: "healthy",
                version,
                active_sessions,
                in_memory_clients: Some(state.agent.turns_in_flight()),
                memory_mb: resident_memory_mb(),
                storage_type,
                uptime_seconds: Some(state.started.elapsed().as_secs()),
                model_api_configured,
                mcp_servers: state.mcp.status(),
                error: None,
            },
        ),
        outcome => {
            let error = match outcome {
                Ok(Err(StoreProblem::Reads(err))) => {
                    tracing::warn!(error = %err, "health check: store failed");
                    "session store unavailable".to_owned()
                }
                Ok(Err(StoreProblem::Writes(err))) => {
                    tracing::warn!(error = %err, "health check: store refuses writes");
                    "session store refuses writes (disk full or read-only?)".to_owned()
                }
                Ok(Err(StoreProblem::Starved)) => {
                    tracing::warn!("health check: every blocking thread is busy");
                    "every blocking thread is busy: file tools and session set-up are stalled"
                        .to_owned()
                }
                _ => "session store did not answer in time".to_owned(),
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                HealthResponse {
                    status: "unhealthy",
                    version,
                    active_sessions: 0,
                    in_memory_clients: None,
                    memory_mb: None,
                    storage_type,
                    uptime_seconds: None,
                    model_api_configured,
                    mcp_servers: state.mcp.status(),
                    error: Some(error),
                },
            )
        }
    }
}

enum StoreProblem {
    Reads(StoreError),
    Writes(StoreError),
    /// Not the store: the runtime's blocking threads did not get to a no-op.
    Starved,
}

/// Resident set size from /proc; `None` where there is no /proc.
fn resident_memory_mb() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((pages * 4096.0 / (1024.0 * 1024.0) * 10.0).round() / 10.0)
}
