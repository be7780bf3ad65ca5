//! The turn loop: one user message in, model calls and tool runs until the
//! model ends its turn, every message persisted as it happens. A turn runs
//! detached from the request that started it and reports through one channel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};

use super::commands::{self, Builtin, Invocation};
use super::draft::Draft;
use super::history::{self, INTERRUPTED};
use super::model::{ModelClient, ModelError};
use super::prompt::SystemPrompts;
use super::running::{Cancel, Canceller, Registration, RunningTurns};
use super::wire::{ContentBlock, Message, ModelEvent, ModelRequest, Role, Usage};
use crate::config::Settings;
use crate::domain::{SessionId, Subdir};
use crate::error::ApiError;
use crate::store::{DynStore, Session, UsageTotals};
use crate::tools::{ToolContext, ToolPolicy, ToolRegistry};
use crate::workspace::Workspace;

pub use super::running::InterruptOutcome;

/// What a turn reports, in order: deltas and tool activity, then exactly one
/// `Done` or `Failed`.
#[derive(Debug)]
pub enum TurnEvent {
    TextDelta(String),
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
    Done(TurnSummary),
    Failed(ApiError),
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ToolCall {
    pub tool: String,
    #[schema(value_type = Object)]
    pub input: Value,
}

#[derive(Debug, Clone)]
pub struct TurnSummary {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub stop_reason: String,
    pub num_turns: u32,
    pub usage: UsageTotals,
    pub duration_ms: u64,
}

pub struct TurnRequest {
    pub session_id: SessionId,
    pub message: String,
    pub timeout: Duration,
}

pub struct Agent {
    store: DynStore,
    settings: Arc<Settings>,
    model: Option<Arc<dyn ModelClient>>,
    tools: Arc<ToolRegistry>,
    policy: ToolPolicy,
    permits: Arc<Semaphore>,
    running: RunningTurns,
    prompts: SystemPrompts,
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
        let turn = Turn {
            agent: self.clone(),
            model,
            session,
            workspace,
            canceller: registration.canceller.clone(),
            registration,
            events,
            started: Instant::now(),
        };
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

    fn price(&self, model: &str, usage: &Usage) -> f64 {
        self.settings.price_of(model).map_or(0.0, |p| {
            (usage.input_tokens as f64 * p.input
                + usage.output_tokens as f64 * p.output
                + usage.cache_creation_input_tokens as f64 * p.cache_write
                + usage.cache_read_input_tokens as f64 * p.cache_read)
                / 1_000_000.0
        })
    }
}

/// One turn in flight: everything its task needs.
struct Turn {
    agent: Arc<Agent>,
    model: Arc<dyn ModelClient>,
    session: Session,
    workspace: Workspace,
    registration: Registration,
    canceller: Canceller,
    events: mpsc::UnboundedSender<TurnEvent>,
    started: Instant,
}

/// How the loop ended when it did not end normally.
enum Stop {
    Cancelled,
    Failed(ApiError),
}

/// What the loop has done so far; kept when the loop stops early.
#[derive(Default)]
struct Progress {
    usage: UsageTotals,
    tool_calls: Vec<ToolCall>,
    num_turns: u32,
    last_text: String,
}

impl Turn {
    #[tracing::instrument(skip_all, fields(session_id = %self.session.id))]
    async fn run(self, message: String, timeout: Duration) {
        let id = self.session.id;
        let renew = self.agent.running.keep_lease(id, &self.registration);
        let deadline = {
            let canceller = self.canceller.clone();
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                canceller.cancel(Cancel::TimedOut);
            })
        };

        let mut progress = Progress::default();
        let outcome = self.drive(message, &mut progress).await;
        deadline.abort();
        renew.abort();

        let usage = progress.usage;
        self.agent.running.release(id, &self.registration).await;

        let summary = |stop_reason: String, text: String| TurnSummary {
            text,
            tool_calls: progress.tool_calls.clone(),
            stop_reason,
            num_turns: progress.num_turns,
            usage,
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        let event = match outcome {
            Ok((stop_reason, text)) => TurnEvent::Done(summary(stop_reason, text)),
            Err(Stop::Failed(err)) => TurnEvent::Failed(err),
            Err(Stop::Cancelled) => match self.canceller.reason() {
                Some(Cancel::TimedOut) => {
                    TurnEvent::Failed(ApiError::TurnTimeout(timeout.as_secs()))
                }
                Some(Cancel::Shutdown) => TurnEvent::Failed(ApiError::ShuttingDown),
                Some(Cancel::Interrupted) | None => {
                    TurnEvent::Done(summary("interrupted".into(), progress.last_text.clone()))
                }
            },
        };
        match &event {
            TurnEvent::Done(s) => tracing::info!(
                stop_reason = %s.stop_reason,
                num_turns = s.num_turns,
                tool_calls = s.tool_calls.len(),
                duration_ms = s.duration_ms,
                "turn finished"
            ),
            TurnEvent::Failed(err) => tracing::info!(error = err.code(), "turn failed"),
            _ => {}
        }
        let _ = self.events.send(event);
        self.registration.finished();
    }

    fn emit(&self, event: TurnEvent) {
        // A client that went away leaves no receiver; the turn goes on.
        let _ = self.events.send(event);
    }

    /// Adds to the session's totals; a failure is logged, not fatal to the turn.
    async fn record_usage(&self, usage: UsageTotals, user_messages: u64) {
        if let Err(err) = self
            .agent
            .store
            .record_usage(self.session.id, usage, user_messages)
            .await
        {
            tracing::warn!(error = %err, "could not record usage");
        }
    }

    async fn persist(&self, message: &Message) -> Result<(), Stop> {
        self.agent
            .store
            .append_messages(self.session.id, &[history::to_stored(message)])
            .await
            .map_err(|e| Stop::Failed(e.into()))
    }

    /// The loop itself. Returns the stop reason and final text.
    async fn drive(
        &self,
        message: String,
        progress: &mut Progress,
    ) -> Result<(String, String), Stop> {
        let agent = &self.agent;
        let settings = &agent.settings;

        let _permit = tokio::select! {
            permit = agent.permits.clone().acquire_owned() => permit.map_err(|_| Stop::Failed(ApiError::ShuttingDown))?,
            () = self.canceller.token.cancelled() => return Err(Stop::Cancelled),
        };

        let prompt = match commands::prepare(settings, &self.workspace, &message).await {
            Invocation::Prompt(prompt) => prompt,
            Invocation::Builtin(builtin) => {
                // Compact and Clear are the context work's to carry out.
                let text = match &builtin {
                    Builtin::Help(text) => text.clone(),
                    Builtin::Compact(_) | Builtin::Clear => commands::not_available(&builtin),
                };
                self.persist(&Message::user_text(message)).await?;
                self.record_usage(UsageTotals::default(), 1).await;
                let reply = Message::assistant(vec![ContentBlock::Text { text: text.clone() }]);
                self.persist(&reply).await?;
                self.emit(TurnEvent::TextDelta(text.clone()));
                progress.last_text = text.clone();
                return Ok(("end_turn".into(), text));
            }
        };
        let stored = agent
            .store
            .messages(self.session.id)
            .await
            .map_err(|e| Stop::Failed(e.into()))?;
        let user = Message::user_text(prompt.text.clone());
        self.persist(&user).await?;
        self.record_usage(UsageTotals::default(), 1).await;
        let mut conversation = history::from_stored(&stored);
        conversation.push(user);
        let mut conversation = history::repair(conversation);

        let tool_set = agent.tools.tool_set(&self.workspace, &agent.policy).await;
        let tool_definitions = tool_set.definitions();
        let tool_ctx = ToolContext {
            workspace: self.workspace.clone(),
            cancel: self.canceller.token.clone(),
        };
        // A command's `model` holds for this turn; its `allowed_tools` are
        // for the permission engine.
        let model_id = prompt
            .model
            .clone()
            .unwrap_or_else(|| settings.defaults.model.clone());
        // Blocks, stable first; joined until `system` is sent as blocks.
        let system = agent
            .prompts
            .build(settings, self.session.id, &self.workspace, &model_id)
            .await
            .joined();

        loop {
            if progress.num_turns >= settings.defaults.max_turns {
                return Ok(("max_turns".into(), progress.last_text.clone()));
            }
            progress.num_turns += 1;
            let request = ModelRequest {
                model: model_id.clone(),
                max_tokens: settings.anthropic.max_tokens,
                system: Some(system.clone()),
                messages: conversation.clone(),
                tools: tool_definitions.clone(),
            };
            let draft = Draft::start(agent.store.clone(), self.session.id);
            let response = match self.call_model(&request, &draft).await {
                Ok(response) => response,
                Err((stop, partial_text)) => {
                    // Whitespace alone is not a valid text block.
                    if !partial_text.trim().is_empty() {
                        let partial = Message::assistant(vec![ContentBlock::Text {
                            text: partial_text.clone(),
                        }]);
                        draft
                            .finish(partial)
                            .await
                            .map_err(|e| Stop::Failed(e.into()))?;
                        progress.last_text = partial_text;
                    }
                    return Err(stop);
                }
            };
            // Counted as soon as the call ends, so a crash later in the turn
            // does not lose what was spent.
            let call_usage = UsageTotals {
                input_tokens: response.usage.input_tokens,
                output_tokens: response.usage.output_tokens,
                cache_creation_input_tokens: response.usage.cache_creation_input_tokens,
                cache_read_input_tokens: response.usage.cache_read_input_tokens,
                cost_usd: agent.price(&response.model, &response.usage),
            };
            progress.usage += call_usage;
            self.record_usage(call_usage, 0).await;
            let assistant = Message::assistant(response.content.clone());
            progress.last_text = assistant.text();
            if !assistant.content.is_empty() {
                draft
                    .finish(assistant.clone())
                    .await
                    .map_err(|e| Stop::Failed(e.into()))?;
                conversation.push(assistant);
            }

            let calls: Vec<(String, String, Value)> = response
                .tool_uses()
                .map(|(id, name, input)| (id.to_owned(), name.to_owned(), input.clone()))
                .collect();
            if calls.is_empty() {
                let stop_reason = response.stop_reason.unwrap_or_else(|| "end_turn".into());
                return Ok((stop_reason, progress.last_text.clone()));
            }

            let mut results = Vec::with_capacity(calls.len());
            for (id, name, input) in calls {
                progress.tool_calls.push(ToolCall {
                    tool: name.clone(),
                    input: input.clone(),
                });
                let output = if self.canceller.token.is_cancelled() {
                    crate::tools::ToolOutput::error(INTERRUPTED)
                } else {
                    tool_set.run(&name, input, &tool_ctx).await
                };
                self.emit(TurnEvent::ToolResult {
                    id: id.clone(),
                    name,
                    content: output.content.clone(),
                    is_error: output.is_error,
                });
                results.push(ContentBlock::ToolResult {
                    tool_use_id: id,
                    content: output.content,
                    is_error: output.is_error,
                });
            }
            let results = Message {
                role: Role::User,
                content: results,
            };
            self.persist(&results).await?;
            conversation.push(results);

            if self.canceller.token.is_cancelled() {
                return Err(Stop::Cancelled);
            }
            if let Some(budget) = settings.defaults.max_budget_usd
                && self.session.usage.cost_usd + progress.usage.cost_usd >= budget
            {
                return Ok(("max_budget".into(), progress.last_text.clone()));
            }
        }
    }

    /// One model call, forwarding deltas as they arrive. On failure returns
    /// the text that had arrived, so it can be kept.
    async fn call_model(
        &self,
        request: &ModelRequest,
        draft: &Draft,
    ) -> Result<super::wire::ModelResponse, (Stop, String)> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let call = self.model.send(request, &tx);
        tokio::pin!(call);
        let result = loop {
            tokio::select! {
                biased;
                () = self.canceller.token.cancelled() => return Err((Stop::Cancelled, draft.text())),
                Some(event) = rx.recv() => self.forward(event, draft),
                result = &mut call => break result,
            }
        };
        while let Ok(event) = rx.try_recv() {
            self.forward(event, draft);
        }
        result.map_err(|err| {
            let partial_text = match &err {
                ModelError::Stream {
                    partial: blocks, ..
                } => super::wire::blocks_text(blocks),
                _ => String::new(),
            };
            let partial_text = if partial_text.is_empty() {
                draft.text()
            } else {
                partial_text
            };
            (Stop::Failed(upstream_error(err)), partial_text)
        })
    }

    fn forward(&self, event: ModelEvent, draft: &Draft) {
        match event {
            ModelEvent::TextDelta(text) => {
                draft.push(&text);
                self.emit(TurnEvent::TextDelta(text));
            }
            ModelEvent::ToolUse { id, name, input } => {
                self.emit(TurnEvent::ToolUse { id, name, input });
            }
            ModelEvent::ThinkingDelta(_) => {}
        }
    }
}

/// Summarises a model failure for the client, without secrets.
fn upstream_error(err: ModelError) -> ApiError {
    match err {
        ModelError::NotConfigured => ApiError::UpstreamNotConfigured,
        ModelError::Unauthorized { message } => ApiError::Upstream(format!(
            "The model API rejected the credentials ({message}); check ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN."
        )),
        ModelError::Status {
            status,
            error_type,
            message,
        } => ApiError::Upstream(format!(
            "The model API failed after retries: {status} {error_type}: {message}"
        )),
        ModelError::Connection(why) => {
            ApiError::Upstream(format!("Could not reach the model API: {why}"))
        }
        ModelError::Timeout => ApiError::Upstream("The model API did not answer in time.".into()),
        ModelError::Stream { message, .. } => ApiError::Upstream(format!(
            "The model's answer broke off mid-stream ({message}); the partial answer is kept and you can send the next message."
        )),
        ModelError::Invalid(why) => {
            ApiError::Upstream(format!("The model API sent an unreadable answer: {why}"))
        }
    }
}
