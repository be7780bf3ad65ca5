//! Turns as the API sees them: one user message in, events out. `Agent`
//! checks what can be refused up front, takes the session's turn lease and
//! starts the loop (`driver`) detached from the request, reporting through
//! one channel.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use uuid::Uuid;

use super::approvals::PermissionRecord;
use super::context::Compaction;
use super::driver::Turn;
use super::events::{LoggedEvent, TurnLog};
use super::model::ModelClient;
use super::prompt::SystemPrompts;
use super::running::RunningTurns;
use super::wire::Usage;
use crate::api::rfc3339;
use crate::callback::Callback;
use crate::config::Settings;
use crate::domain::{SessionId, Subdir, UserId};
use crate::error::ApiError;
use crate::store::{
    DynStore, QueuedMessage, RequestKind, Session, Todo, UsageTotals, serialize_micro_usd,
};
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
    /// The turn waits for a person: may this call run, or (a question)
    /// what are the answers.
    PersonRequest {
        kind: RequestKind,
        request_id: Uuid,
        tool_use_id: String,
        tool_name: String,
        tool_input: Value,
        /// Why the call needs a person (empty for questions).
        reason: String,
    },
    /// Something a subagent did, inside the parent's `Agent` call
    /// `parent_tool_use_id`.
    Nested {
        parent_tool_use_id: String,
        event: Box<TurnEvent>,
    },
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
    /// What the turn asked a person and how it was decided, in order.
    pub permission_requests: Vec<PermissionRecord>,
}

#[derive(Debug, Clone)]
pub struct TurnRequest {
    pub session_id: SessionId,
    pub message: String,
    /// Image and document blocks sent with the message, checked already.
    pub attachments: Vec<super::wire::ContentBlock>,
    pub timeout: Duration,
    /// Where the turn's report is POSTed when it ends.
    pub callback: Option<Callback>,
}

/// A turn that started: its id, the session's last event before it, and its
/// frames as they are made (the last one after the session's lease is free).
pub struct StartedTurn {
    pub turn_id: Uuid,
    pub after_event_id: u64,
    pub events: mpsc::UnboundedReceiver<LoggedEvent>,
}

impl StartedTurn {
    /// Waits for the turn's end, as `/chat` answers it.
    pub async fn outcome(mut self) -> Result<TurnSummary, ApiError> {
        while let Some(logged) = self.events.recv().await {
            match logged.event {
                TurnEvent::Done(summary) => return Ok(summary),
                TurnEvent::Failed(err) => return Err(err),
                _ => {}
            }
        }
        Err(ApiError::Internal("turn ended without a result".into()))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChatResponse {
    pub session_id: String,
    /// Text of the final assistant message.
    pub text: String,
    /// Every tool call of the turn, in order.
    pub tool_calls: Vec<ToolCall>,
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// Tokens and cost of this turn.
    pub usage: UsageTotals,
    /// `end_turn`, `max_tokens`, `max_turns`, `max_budget`, `interrupted`,
    /// or for `/compact` and `/clear`: `compacted`, `cleared`.
    pub stop_reason: String,
    /// Model calls made in this turn.
    pub num_turns: u32,
    /// US dollars, rounded to micro-dollars (the same as `usage.cost_usd`).
    #[serde(serialize_with = "serialize_micro_usd")]
    pub cost_usd: f64,
    pub duration_ms: u64,
    /// The model that made the turn's last call.
    pub model: String,
    /// Whether the turn continued on `defaults.fallback_model` because the
    /// configured model stayed overloaded.
    pub fallback_model_used: bool,
    /// Compactions of the conversation during the turn, oldest first.
    pub compactions: Vec<Compaction>,
    /// What the turn asked a person (approvals and questions) and how each
    /// was decided, in order.
    pub permission_requests: Vec<PermissionRecord>,
}

impl ChatResponse {
    pub fn new(session_id: String, summary: TurnSummary) -> Self {
        Self {
            session_id,
            text: summary.text,
            tool_calls: summary.tool_calls,
            timestamp: Utc::now(),
            cost_usd: summary.usage.cost_usd,
            usage: summary.usage,
            stop_reason: summary.stop_reason,
            num_turns: summary.num_turns,
            duration_ms: summary.duration_ms,
            model: summary.model,
            fallback_model_used: summary.fallback_model_used,
            compactions: summary.compactions,
            permission_requests: summary.permission_requests,
        }
    }
}

/// How a message sent with `queue: true` was taken.
pub enum Started {
    /// It started a turn at once.
    Running(StartedTurn),
    /// It waits behind the running turn, at this place (1 = next).
    Queued(u64),
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
    /// The ids users' commands run as, when each user has one of its own.
    user_ids: Option<Arc<crate::sandbox::UserIds>>,
}

impl From<ToolEvent> for TurnEvent {
    fn from(event: ToolEvent) -> Self {
        match event {
            ToolEvent::Todos(todos) => Self::Todos(todos),
        }
    }
}

/// Tool events as turn events in `log`, in the order tools report them.
pub(super) fn tool_events(log: &Arc<TurnLog>) -> ToolEvents {
    let log = log.clone();
    ToolEvents::new(move |event| log.emit(TurnEvent::from(event)))
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
            user_ids: None,
        }
    }

    /// Users' directories belong to the ids their commands run as.
    pub fn with_user_ids(mut self, ids: Option<Arc<crate::sandbox::UserIds>>) -> Self {
        self.user_ids = ids;
        self
    }

    /// Turns running in this process.
    pub fn turns_in_flight(&self) -> usize {
        self.running.len()
    }

    /// Checks everything that can be refused up front (plain HTTP errors),
    /// takes the session's turn lease and starts the turn in the background.
    pub async fn start(self: &Arc<Self>, request: TurnRequest) -> Result<StartedTurn, ApiError> {
        let id = request.session_id;
        let (_, model, workspace) = self.prepare(id).await?;
        let registration = self.running.register(id).await?;
        // A PATCH may have landed between the read above and the lease: the
        // turn runs with the options the lease now keeps fixed.
        let session = match self.store.get(id).await {
            Ok(Some(fresh)) => fresh,
            outcome => {
                self.running.release(id, &registration).await;
                registration.finished();
                return Err(match outcome {
                    Err(err) => err.into(),
                    Ok(_) => ApiError::SessionNotFound,
                });
            }
        };
        let settings = Arc::new(session.options.apply(&self.settings));
        let turn_id = Uuid::new_v4();
        let after = match self.store.begin_turn(id, turn_id).await {
            Ok(after) => after,
            Err(err) => {
                self.running.release(id, &registration).await;
                registration.finished();
                return Err(err.into());
            }
        };
        let (client, events) = mpsc::unbounded_channel();
        let log = TurnLog::new(self.store.clone(), id, turn_id, after, client);
        let turn = Turn::new(
            self.clone(),
            model,
            session,
            workspace,
            settings,
            registration,
            log,
        );
        self.running.spawn(turn.run(
            request.message,
            request.attachments,
            request.timeout,
            request.callback,
        ));
        Ok(StartedTurn {
            turn_id,
            after_event_id: after,
            events,
        })
    }

    /// [`Agent::start`], except that while a turn runs the message is queued
    /// behind it (in the store, so any instance holding the session runs it).
    pub async fn start_or_queue(
        self: &Arc<Self>,
        request: TurnRequest,
    ) -> Result<Started, ApiError> {
        // A turn that ends between the two steps leaves no one to run the
        // queue: start the message then; a few rounds settle any race.
        for _ in 0..3 {
            match self.start(request.clone()).await {
                Ok(events) => return Ok(Started::Running(events)),
                Err(ApiError::SessionBusy) => {}
                Err(err) => return Err(err),
            }
            if !request.attachments.is_empty() {
                return Err(ApiError::validation(
                    "attachments",
                    "a message that has to wait in the queue cannot carry attachments; send it \
                     again when the running turn has ended",
                ));
            }
            let queued = QueuedMessage {
                message: request.message.clone(),
                timeout: request.timeout,
            };
            if let Some(position) = self
                .store
                .enqueue_message(request.session_id, &queued)
                .await?
            {
                tracing::info!(session_id = %request.session_id, position, "message queued");
                return Ok(Started::Queued(position));
            }
        }
        Err(ApiError::SessionBusy)
    }

    /// Runs the messages queued behind a turn that just ended, under the
    /// lease `holder` kept for them. Nobody listens to their events: their
    /// messages are stored like any turn's.
    pub(super) fn run_queued(self: &Arc<Self>, id: SessionId, holder: Uuid, next: QueuedMessage) {
        let agent = self.clone();
        let task: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            Box::pin(async move { agent.start_queued(id, holder, next).await });
        self.running.spawn(task);
    }

    async fn start_queued(self: Arc<Self>, id: SessionId, holder: Uuid, mut next: QueuedMessage) {
        loop {
            let registration = self.running.adopt(id, holder);
            let prepared = match self.prepare(id).await {
                Ok(prepared) => {
                    let turn_id = Uuid::new_v4();
                    self.store
                        .begin_turn(id, turn_id)
                        .await
                        .map(|after| (prepared, turn_id, after))
                        .map_err(ApiError::from)
                }
                Err(err) => Err(err),
            };
            match prepared {
                Ok(((session, model, workspace), turn_id, after)) => {
                    // Its events go to the session's event log only: no
                    // client waits on this turn's own stream.
                    let (client, _) = mpsc::unbounded_channel();
                    let log = TurnLog::new(self.store.clone(), id, turn_id, after, client);
                    let settings = Arc::new(session.options.apply(&self.settings));
                    let turn = Turn::new(
                        self.clone(),
                        model,
                        session,
                        workspace,
                        settings,
                        registration,
                        log,
                    );
                    turn.run(next.message, Vec::new(), next.timeout, None).await;
                    return;
                }
                Err(err) => {
                    tracing::warn!(session_id = %id, error = %err, "a queued message could not start and was dropped");
                    let after = self.running.release_or_next(id, &registration).await;
                    registration.finished();
                    match after {
                        Some(after) => next = after,
                        None => return,
                    }
                }
            }
        }
    }

    /// What starting a turn needs, or why it cannot start: the session,
    /// the model client (configured) within budget, and the workspace.
    async fn prepare(
        &self,
        id: SessionId,
    ) -> Result<(Session, Arc<dyn ModelClient>, Workspace), ApiError> {
        let session = self.store.get(id).await?.ok_or(ApiError::SessionNotFound)?;
        let model = self.model.clone().ok_or(ApiError::UpstreamNotConfigured)?;
        crate::quotas::check_daily(self.store.as_ref(), &self.settings.quotas, &session.user_id)
            .await?;
        // Checked without building the whole effective settings, which
        // the turn does once it holds the lease.
        let budget = session.options.max_budget_usd(&self.settings);
        if let Some(budget) = budget
            && session.usage.cost_usd >= budget
        {
            let source = if session.options.max_budget_usd.is_some() {
                "the session's max_budget_usd"
            } else {
                "defaults.max_budget_usd"
            };
            return Err(ApiError::BudgetExceeded(format!(
                "This session has spent ${:.4} of its ${budget:.2} budget ({source}); start a new session or raise the budget.",
                session.usage.cost_usd
            )));
        }
        let workspace = self.workspace(&session).await?;
        Ok((session, model, workspace))
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
        self.tool_sessions
            .stop_all_background(crate::tools::bash::SUPERVISOR_GRACE)
            .await;
    }

    /// The background shells of session `id` started in this process.
    pub fn background_tasks(&self, id: SessionId) -> Vec<crate::tools::background::TaskView> {
        self.tool_sessions.background_of(id)
    }

    /// Stops the background shells of sessions that are gone from the
    /// store (expired, or deleted through another instance).
    pub async fn reap_background(&self) {
        for id in self.tool_sessions.with_running_shells() {
            if let Ok(None) = self.store.get(id).await {
                tracing::info!(session_id = %id, "session gone: stopping its background shells");
                self.tool_sessions.forget(id);
            }
        }
    }

    /// The session's workspace, opened (and created when `user.auto_create_dir`)
    /// as its turns see it.
    pub async fn workspace(&self, session: &Session) -> Result<Workspace, ApiError> {
        let subdir = session
            .subdir
            .as_deref()
            .map(Subdir::parse)
            .transpose()
            .map_err(|e| ApiError::Internal(format!("stored subdir invalid: {e}")))?;
        self.open_workspace(
            &session.user_id,
            subdir.as_ref(),
            self.settings.user.auto_create_dir,
        )
        .await
    }

    /// `{base_dir}/{user}/{subdir}`, created when `create` is set, and given
    /// to the id the user's commands run as when they have one.
    pub async fn open_workspace(
        &self,
        user: &UserId,
        subdir: Option<&Subdir>,
        create: bool,
    ) -> Result<Workspace, ApiError> {
        let base = self.settings.user.base_dir.clone();
        let user = user.clone();
        let subdir = subdir.cloned();
        let ids = self.user_ids.clone();
        tokio::task::spawn_blocking(move || {
            let workspace = Workspace::open(&base, &user, subdir.as_ref(), create)?;
            match ids {
                None => Ok(workspace),
                Some(ids) => workspace.owned_by(ids.owner(&user)?),
            }
        })
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
