//! What the service counts and times, for `GET /metrics` in Prometheus' text
//! format. One recorder per process (the `metrics` facade); labels are
//! route templates, tool names, models and outcomes, never ids.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::agent::context::Trigger;
use crate::agent::wire::Usage;
use crate::store::RequestKind;

/// Seconds: from a millisecond to the longest turn a request may ask for.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same
/// handle). `None` when another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    describe_counter!(
        "claude_agent_turns_total",
        "Turns by how they ended: completed, interrupted, timed_out, failed, shutdown"
    );
    describe_histogram!(
        "claude_agent_turn_duration_seconds",
        Unit::Seconds,
        "Wall time of a turn, from its start to its last event"
    );
    describe_histogram!(
        "claude_agent_time_to_first_token_seconds",
        Unit::Seconds,
        "From a turn's start to the first text the model streamed"
    );
    describe_counter!(
        "claude_agent_model_calls_total",
        "HTTP attempts at the Messages API by status (transport: no answer)"
    );
    describe_counter!(
        "claude_agent_model_retries_total",
        "Model call attempts retried, by the status that caused the retry"
    );
    describe_counter!(
        "claude_agent_tokens_total",
        "Tokens by model and kind: input, output, cache_read, cache_write"
    );
    describe_counter!(
        "claude_agent_cost_micro_usd_total",
        "Micro-dollars (1e-6 USD) spent, by model, at the configured prices"
    );
    describe_counter!(
        "claude_agent_tool_calls_total",
        "Tool calls by tool and outcome (ok, error)"
    );
    describe_histogram!(
        "claude_agent_tool_duration_seconds",
        Unit::Seconds,
        "Wall time of a tool call, by tool"
    );
    describe_counter!(
        "claude_agent_compactions_total",
        "Context compactions by trigger: auto, recovery, manual, clear"
    );
    describe_gauge!(
        "claude_agent_live_sessions",
        "Sessions in the store that have not expired"
    );
    describe_gauge!(
        "claude_agent_turns_in_flight",
        "Turns running in this process"
    );
    describe_gauge!(
        "claude_agent_pending_requests",
        "Approvals (permission) and questions turns of this process wait on"
    );
    describe_counter!(
        "claude_agent_http_requests_total",
        "HTTP requests by method, route template and status"
    );
    describe_histogram!(
        "claude_agent_http_request_duration_seconds",
        Unit::Seconds,
        "From a request's arrival to its response head, by route template"
    );
    describe_histogram!(
        "claude_agent_store_query_duration_seconds",
        Unit::Seconds,
        "Session store operations, by operation"
    );
}

/// The text page: current gauges first, then everything counted.
pub fn render(live_sessions: Option<u64>, turns_in_flight: usize) -> String {
    if let Some(live) = live_sessions {
        metrics::gauge!("claude_agent_live_sessions").set(live as f64);
    }
    metrics::gauge!("claude_agent_turns_in_flight").set(turns_in_flight as f64);
    HANDLE
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// How a turn ended, as its label.
#[derive(Debug, Clone, Copy)]
pub enum TurnOutcome {
    Completed,
    Interrupted,
    TimedOut,
    Failed,
    Shutdown,
}

impl TurnOutcome {
    fn label(self) -> &'static str {
        match self {
            TurnOutcome::Completed => "completed",
            TurnOutcome::Interrupted => "interrupted",
            TurnOutcome::TimedOut => "timed_out",
            TurnOutcome::Failed => "failed",
            TurnOutcome::Shutdown => "shutdown",
        }
    }
}

pub fn turn_finished(outcome: TurnOutcome, took: Duration) {
    counter!("claude_agent_turns_total", "outcome" => outcome.label()).increment(1);
    histogram!("claude_agent_turn_duration_seconds").record(took.as_secs_f64());
}

pub fn first_token(after: Duration) {
    histogram!("claude_agent_time_to_first_token_seconds").record(after.as_secs_f64());
}

/// One HTTP attempt at the model API: `status` is the HTTP status, or
/// `None` when no answer came (connect error, timeout).
pub fn model_attempt(status: Option<u16>, retried: bool) {
    let status = status.map_or_else(|| "transport".to_owned(), |s| s.to_string());
    if retried {
        counter!("claude_agent_model_retries_total", "status" => status.clone()).increment(1);
    }
    counter!("claude_agent_model_calls_total", "status" => status).increment(1);
}

/// The tokens and cost of one model call.
pub fn model_usage(model: &str, usage: &Usage, cost_usd: f64) {
    for (kind, tokens) in [
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
        ("cache_read", usage.cache_read_input_tokens),
        ("cache_write", usage.cache_creation_input_tokens),
    ] {
        counter!("claude_agent_tokens_total", "model" => model.to_owned(), "kind" => kind)
            .increment(tokens);
    }
    // Counters are integers: cost counts micro-dollars, the precision
    // responses show.
    let micro = (cost_usd * 1_000_000.0).round();
    if micro.is_finite() && micro > 0.0 {
        counter!("claude_agent_cost_micro_usd_total", "model" => model.to_owned())
            .increment(micro as u64);
    }
}

pub fn tool_call(tool: &str, is_error: bool, took: Duration) {
    let outcome = if is_error { "error" } else { "ok" };
    counter!("claude_agent_tool_calls_total", "tool" => tool.to_owned(), "outcome" => outcome)
        .increment(1);
    histogram!("claude_agent_tool_duration_seconds", "tool" => tool.to_owned())
        .record(took.as_secs_f64());
}

pub fn compaction(trigger: Trigger) {
    let trigger = match trigger {
        Trigger::Auto => "auto",
        Trigger::Recovery => "recovery",
        Trigger::Manual => "manual",
        Trigger::Clear => "clear",
    };
    counter!("claude_agent_compactions_total", "trigger" => trigger).increment(1);
}

/// A request for a person that a turn of this process waits on, counted
/// in `claude_agent_pending_requests` for as long as it lives.
pub struct PendingRequest(&'static str);

impl PendingRequest {
    pub fn new(kind: RequestKind) -> Self {
        let kind = match kind {
            RequestKind::Permission => "permission",
            RequestKind::Question => "question",
        };
        metrics::gauge!("claude_agent_pending_requests", "kind" => kind).increment(1.0);
        Self(kind)
    }
}

impl Drop for PendingRequest {
    fn drop(&mut self) {
        metrics::gauge!("claude_agent_pending_requests", "kind" => self.0).decrement(1.0);
    }
}

/// Times one store operation.
pub async fn store_query<T>(operation: &'static str, query: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let result = query.await;
    histogram!("claude_agent_store_query_duration_seconds", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    result
}

/// Middleware: counts and times every request by its route template
/// (`/api/v1/sessions/{session_id}`), so ids never become labels.
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    histogram!("claude_agent_http_request_duration_seconds", "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    counter!("claude_agent_http_requests_total", "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}
