//! Turns as the API sees them: one user message in, events out. `Agent`
//! checks what can be refused up front, takes the session's turn lease and
//! starts the loop (`driver`) detached from the request, reporting through
//! one channel.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};

use super::context::Compaction;
use super::driver::Turn;
use super::model::ModelClient;
use super::prompt::SystemPrompts;
use super::running::RunningTurns;
use super::wire::Usage;
use crate::config::Settings;
use crate::domain::{SessionId, Subdir};
use crate::error::ApiError;
use crate::store::{DynStore, Session, Todo, UsageTotals};
use crate::tools::{ToolEvent, ToolEvents, ToolPolicy, ToolRegistry, ToolSessions};
use crate::workspace::Workspace;

pub use super::running::InterruptOutcome;

/// What a turn reports, in order: deltas and tool activity, then exactly one
/// `Done` or `Failed`.
#[derive(Debug)]
pub enum TurnEvent {
    TextDelta(String),
    ThinkingDelta(String),
    /// The conversation was compacted (or cleared) before the next call.
    Compaction(Compaction),
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        id: String,
        name: String,
        content: String,
        is_error: bool,
    },
    /// TodoWrite set the session's todo list to this.
    Todos(Vec<Todo>),
    Done(TurnSummary),
    Failed(ApiError),
}

/// Characters of a tool's result kept in `ToolCall::output`.
pub const OUTPUT_PREVIEW_CHARS: usize = 200;

/// One tool call of a turn, as the chat response and the `done` frame list
/// it. The tool is named twice, as the reference's chat response does
/// (`tool`, `input`) and as its stream frames do (`tool_name`, `tool_input`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ToolCall {
    /// The model's id of the call (`toolu_...`), as in the stream's
    /// `tool_use` and `tool_result` frames.
    pub id: String,
    #[schema(example = "Bash")]
    pub tool: String,
    #[schema(value_type = Object, example = json!({"command": "ls"}))]
    pub input: Value,
    /// The same as `tool`.
    #[schema(example = "Bash")]
    pub tool_name: String,
    /// The same as `input`.
    #[schema(value_type = Object, example = json!({"command": "ls"}))]
    pub tool_input: Value,
    /// Whether the call failed or was refused.
    pub is_error: bool,
    /// The start of what the tool returned: its first 200 characters, with
    /// `…` appended when there was more.
    #[schema(example = "hello.py\nREADME.md")]
    pub output: String,
}

impl ToolCall {
    pub fn new(id: String, name: String, input: Value, output: &str, is_error: bool) -> Self {
        Self {
            id,
            tool_name: name.clone(),
            tool: name,
            tool_input: input.clone(),
            input,
            is_error,
            output: preview(output, OUTPUT_PREVIEW_CHARS),
        }
    }
}

/// The first `max` characters of `text` (never a split character), `…`
/// appended when some were left out.
fn preview(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

#[derive(Debug, Clone)]
pub struct TurnSummary {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub stop_reason: String,
    pub num_turns: u32,
    pub usage: UsageTotals,
    pub duration_ms: u64,
    /// The model that made the turn's last call.
    pub model: String,
    /// Whether the turn moved to `defaults.fallback_model` because the
    /// configured model stayed overloaded.
    pub fallback_model_used: bool,
    /// Compactions during the turn, oldest first.
    pub compactions: Vec<Compaction>,
}

pub struct TurnRequest {
    pub session_id: SessionId,
    pub message: String,
    pub timeout: Duration,
}

pub struct Agent {
    pub(super) store: DynStore,
    pub(super) settings: Arc<Settings>,
    model: Option<Arc<dyn ModelClient>>,
    pub(super) tools: Arc<ToolRegistry>,
    pub(super) policy: ToolPolicy,
    pub(super) permits: Arc<Semaphore>,
    pub(super) running: RunningTurns,
    pub(super) prompts: SystemPrompts,
    /// What tools remember about each session between calls and turns.
    pub(super) tool_sessions: ToolSessions,
}

impl From<ToolEvent> for TurnEvent {
    fn from(event: ToolEvent) -> Self {
        match event {
            ToolEvent::Todos(todos) => Self::Todos(todos),
        }
    }
}

/// Tool events as turn events on `events`, in the order tools report them.
pub(super) fn tool_events(events: &mpsc::UnboundedSender<TurnEvent>) -> ToolEvents {
    let events = events.clone();
    ToolEvents::new(move |event| {
        // A client that went away leaves no receiver; the turn goes on.
        let _ = events.send(TurnEvent::from(event));
    })
}

impl Agent {
    pub fn new(
        store: DynStore,
        settings: Arc<Settings>,
        model: Option<Arc<dyn ModelClient>>,
        tools: Arc<ToolRegistry>,
        policy: ToolPolicy,
    ) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(settings.api.max_concurrent_requests)),
            running: RunningTurns::new(store.clone()),
            prompts: SystemPrompts::new(),
            tool_sessions: ToolSessions::default(),
            store,
            settings,
            model,
            tools,
            policy,
        }
    }

    /// Turns running in this process.
    pub fn turns_in_flight(&self) -> usize {
        self.running.len()
    }

    /// Checks everything that can be refused up front (plain HTTP errors),
    /// takes the session's turn lease and starts the turn in the background.
    pub async fn start(
        self: &Arc<Self>,
        request: TurnRequest,
    ) -> Result<mpsc::UnboundedReceiver<TurnEvent>, ApiError> {
        let id = request.session_id;
        let session = self.store.get(id).await?.ok_or(ApiError::SessionNotFound)?;
        let model = self.model.clone().ok_or(ApiError::UpstreamNotConfigured)?;
        crate::quotas::check_daily(self.store.as_ref(), &self.settings.quotas, &session.user_id)
            .await?;
        if let Some(budget) = self.settings.defaults.max_budget_usd
            && session.usage.cost_usd >= budget
        {
            return Err(ApiError::BudgetExceeded(format!(
                "This session has spent ${:.4} of its ${budget:.2} budget (defaults.max_budget_usd); start a new session or raise the budget.",
                session.usage.cost_usd
            )));
        }
        let workspace = self.workspace(&session).await?;
        let registration = self.running.register(id).await?;
        let (events, receiver) = mpsc::unbounded_channel();
        let turn = Turn::new(
            self.clone(),
            model,
            session,
            workspace,
            registration,
            events,
        );
        self.running
            .spawn(turn.run(request.message, request.timeout));
        Ok(receiver)
    }

    /// Cancels the session's running turn and waits (briefly) for it to save
    /// its history.
    pub async fn interrupt(&self, id: SessionId) -> Result<InterruptOutcome, ApiError> {
        self.running.interrupt(id).await
    }

    /// Stops the session's turn if it runs here (the session is being deleted).
    pub fn cancel_local(&self, id: SessionId) {
        self.running.cancel_local(id);
        self.tool_sessions.forget(id);
    }

    /// Lets running turns finish for up to `grace`, then cancels the rest and
    /// waits for them to save their history.
    pub async fn shutdown(&self, grace: Duration) {
        self.running.shutdown(grace).await;
    }

    async fn workspace(&self, session: &Session) -> Result<Workspace, ApiError> {
        let base = self.settings.user.base_dir.clone();
        let create = self.settings.user.auto_create_dir;
        let user = session.user_id.clone();
        let subdir = session
            .subdir
            .as_deref()
            .map(Subdir::parse)
            .transpose()
            .map_err(|e| ApiError::Internal(format!("stored subdir invalid: {e}")))?;
        tokio::task::spawn_blocking(move || Workspace::open(&base, &user, subdir.as_ref(), create))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(ApiError::from)
    }

    /// The cost of one call's usage at the configured prices; cache writes
    /// at the price of the configured TTL.
    pub(super) fn price(&self, model: &str, usage: &Usage) -> f64 {
        let ttl = self.settings.anthropic.cache_ttl;
        self.settings.price_of(model).map_or(0.0, |p| {
            (usage.input_tokens as f64 * p.input
                + usage.output_tokens as f64 * p.output
                + usage.cache_creation_input_tokens as f64 * p.cache_write_for(ttl)
                + usage.cache_read_input_tokens as f64 * p.cache_read)
                / 1_000_000.0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_output_preview_is_cut_on_a_character_boundary() {
        assert_eq!(preview("short", 200), "short");
        let long = "é".repeat(250);
        let cut = preview(&long, 200);
        assert_eq!(cut.chars().count(), 201);
        assert!(cut.ends_with("é…"));
        let call = ToolCall::new(
            "toolu_1".into(),
            "Bash".into(),
            json!({"command": "ls"}),
            &long,
            false,
        );
        assert_eq!(call.tool_name, "Bash");
        assert_eq!(call.tool_input, call.input);
        assert_eq!(call.output, cut);
    }
}
