//! The turn loop: model calls and tool runs until the model ends its turn,
//! every message persisted as it happens, the context kept inside the
//! model's window (compaction, recovery from "prompt is too long"), and a
//! fallback model when the configured one stays overloaded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::approvals::{Approvals, TurnClock};
use super::commands::{self, Builtin, Invocation};
use super::context::{self, Compaction, Trigger, View};
use super::draft::Draft;
use super::events::TurnLog;
use super::history::{self, INTERRUPTED};
use super::model::{ModelClient, ModelError};
use super::running::{Cancel, Canceller, Registration};
use super::subagents;
use super::turn::{Agent, ToolCall, TurnEvent, TurnSummary};
use super::wire::{
    ContentBlock, Message, ModelEvent, ModelRequest, ModelResponse, Role, ToolResultContent, Usage,
};
use crate::callback::Callback;
use crate::config::Settings;
use crate::error::ApiError;
use crate::hooks::MAX_STOP_CONTINUATIONS;
use crate::metrics::{self, TurnOutcome};
use crate::store::{Session, UsageTotals, micro_usd};
use crate::tools::agent::{self as agent_tool, SubagentCall, SubagentRunner};
use crate::tools::{ToolContext, ToolEvents, ToolOutput, ToolPolicy, ToolSet};
use crate::workspace::Workspace;

/// What a call that stopped at `max_tokens` inside a tool call gets back.
const CUT_TOOL_CALL: &str = "Your reply reached the max_tokens limit while writing this tool call, so its input was cut off and the call was not run. Retry with a smaller input: for example write a large file in several parts (Write a first part, then Edit to append the rest).";

/// The stop reason of a reply that ran out of context window.
const WINDOW_EXCEEDED: &str = "model_context_window_exceeded";

/// Attempts to make one call fit after the upstream said it did not.
const MAX_RECOVERIES: u32 = 3;
/// Tokens kept free between a request's estimated size and the window.
const WINDOW_MARGIN: u64 = 1_024;
/// `max_tokens` is never lowered below this to fit the window; compaction
/// makes room instead.
const MIN_OUTPUT_TOKENS: u32 = 1_024;

/// One turn in flight: its lease and the loop's state.
pub(super) struct Turn {
    core: TurnCore,
    registration: Registration,
}

/// Everything the loop needs, for the turn itself or for one of its
/// subagents (which shares the turn's cancellation, log and budget).
#[derive(Clone)]
pub(super) struct TurnCore {
    agent: Arc<Agent>,
    /// The service's settings with the session's options applied.
    settings: Arc<Settings>,
    /// The service's tool policy narrowed by the session's options.
    policy: ToolPolicy,
    model: Arc<dyn ModelClient>,
    session: Session,
    workspace: Workspace,
    canceller: Canceller,
    log: Arc<TurnLog>,
    started: Instant,
    /// Whether the model has streamed text yet (for time to first token).
    first_token: Arc<AtomicBool>,
    /// The parent's `Agent` call when this loop runs a subagent: its
    /// frames are marked with it and its messages are not stored.
    parent_call: Option<String>,
    /// What the turn has cost so far, its subagents' calls included, for
    /// the budget check each loop makes.
    spent: Arc<Mutex<f64>>,
    /// The model this loop calls now (a command's or the fallback), which
    /// its subagents inherit.
    model_in_use: Arc<Mutex<String>>,
}

/// How the loop ended when it did not end normally.
pub(super) enum Stop {
    Cancelled,
    Failed(ApiError),
}

/// What the loop has done so far; kept when the loop stops early.
#[derive(Default)]
pub(super) struct Progress {
    usage: UsageTotals,
    tool_calls: Vec<ToolCall>,
    num_turns: u32,
    last_text: String,
    model: String,
    fallback_model_used: bool,
    compactions: Vec<Compaction>,
}

/// What stays the same for every call of a turn.
struct Prompt {
    system: Vec<String>,
    tools: Vec<Value>,
    /// Estimated tokens of `system` and `tools` (at a ratio of 1).
    fixed_tokens: u64,
}

impl Prompt {
    fn new(system: Vec<String>, tools: Vec<Value>) -> Self {
        let fixed_tokens = context::estimate(&system, 1.0) + context::estimate(&tools, 1.0);
        Self {
            system,
            tools,
            fixed_tokens,
        }
    }

    /// Estimated tokens of a request carrying `messages`, at a ratio of 1.
    fn tokens_with(&self, messages: &[Message]) -> u64 {
        self.fixed_tokens + context::estimate(&messages, 1.0)
    }
}

impl Turn {
    pub(super) fn new(
        agent: Arc<Agent>,
        model: Arc<dyn ModelClient>,
        session: Session,
        workspace: Workspace,
        settings: Arc<Settings>,
        registration: Registration,
        log: Arc<TurnLog>,
    ) -> Self {
        let policy = agent.policy.for_session(&session.options);
        let core = TurnCore {
            settings,
            policy,
            agent,
            model,
            session,
            workspace,
            canceller: registration.canceller.clone(),
            log,
            started: Instant::now(),
            first_token: Arc::new(AtomicBool::new(false)),
            parent_call: None,
            spent: Arc::new(Mutex::new(0.0)),
            model_in_use: Arc::default(),
        };
        Self { core, registration }
    }

    #[tracing::instrument(name = "turn", skip_all, fields(session_id = %self.core.session.id))]
    pub(super) async fn run(
        self,
        message: String,
        attachments: Vec<ContentBlock>,
        timeout: Duration,
        callback: Option<Callback>,
    ) {
        let Turn { core, registration } = self;
        let id = core.session.id;
        let renew = core.agent.running.keep_lease(id, &registration);
        let stop_writing = CancellationToken::new();
        let writer = core.log.keep_writing(stop_writing.clone());
        let clock = TurnClock::new();
        let deadline = tokio::spawn(clock.clone().enforce(
            tokio::time::Instant::now(),
            timeout,
            core.canceller.clone(),
        ));
        let approvals = Approvals::new(
            core.agent.store.clone(),
            id,
            Duration::from_secs(core.settings.defaults.permission_timeout_secs),
            core.log.clone(),
            clock,
            core.canceller.clone(),
        )
        .await;

        let mut progress = Progress {
            model: core.settings.defaults.model.clone(),
            ..Progress::default()
        };
        let outcome = core
            .drive(message, attachments, &mut progress, approvals.clone())
            .await;
        deadline.abort();
        renew.abort();

        let usage = progress.usage;
        let holder = registration.holder;
        let permission_requests = approvals.records();

        let summary = |stop_reason: String, text: String| TurnSummary {
            text,
            tool_calls: progress.tool_calls.clone(),
            stop_reason,
            num_turns: progress.num_turns,
            usage,
            duration_ms: u64::try_from(core.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            model: progress.model.clone(),
            fallback_model_used: progress.fallback_model_used,
            compactions: progress.compactions.clone(),
            permission_requests: permission_requests.clone(),
        };
        let event = match outcome {
            Ok((stop_reason, text)) => TurnEvent::Done(summary(stop_reason, text)),
            Err(Stop::Failed(err)) => TurnEvent::Failed(err),
            Err(Stop::Cancelled) => match core.canceller.reason() {
                Some(Cancel::TimedOut) => {
                    TurnEvent::Failed(ApiError::TurnTimeout(timeout.as_secs()))
                }
                Some(Cancel::Shutdown) => TurnEvent::Failed(ApiError::ShuttingDown),
                Some(Cancel::Interrupted) | None => {
                    TurnEvent::Done(summary("interrupted".into(), progress.last_text.clone()))
                }
            },
        };
        let outcome = match (&event, core.canceller.reason()) {
            (TurnEvent::Done(_), Some(Cancel::Interrupted)) => TurnOutcome::Interrupted,
            (TurnEvent::Done(_), _) => TurnOutcome::Completed,
            (TurnEvent::Failed(ApiError::TurnTimeout(_)), _) => TurnOutcome::TimedOut,
            (TurnEvent::Failed(ApiError::ShuttingDown), _) => TurnOutcome::Shutdown,
            _ => TurnOutcome::Failed,
        };
        metrics::turn_finished(outcome, core.started.elapsed());
        match &event {
            TurnEvent::Done(s) => tracing::info!(
                stop_reason = %s.stop_reason,
                model = %s.model,
                num_turns = s.num_turns,
                tool_calls = s.tool_calls.len(),
                input_tokens = s.usage.input_tokens,
                cache_read_tokens = s.usage.cache_read_input_tokens,
                cache_write_tokens = s.usage.cache_creation_input_tokens,
                output_tokens = s.usage.output_tokens,
                cost_usd = micro_usd(s.usage.cost_usd),
                compactions = s.compactions.len(),
                duration_ms = s.duration_ms,
                "turn finished"
            ),
            TurnEvent::Failed(err) => tracing::info!(
                error = err.code(),
                num_turns = progress.num_turns,
                tool_calls = progress.tool_calls.len(),
                input_tokens = usage.input_tokens,
                cache_read_tokens = usage.cache_read_input_tokens,
                cache_write_tokens = usage.cache_creation_input_tokens,
                output_tokens = usage.output_tokens,
                cost_usd = micro_usd(usage.cost_usd),
                "turn failed"
            ),
            _ => {}
        }
        // The last frames and the result are stored before the lease is
        // released: whoever sees the session idle finds the turn complete.
        stop_writing.cancel();
        let _ = writer.await;
        let (last, report) = core
            .log
            .finish(event, &core.agent.settings.session.event_retention)
            .await;
        let next = core.agent.running.release_or_next(id, &registration).await;
        core.log.forward(last);
        registration.finished();
        if let Some(next) = next {
            core.agent.run_queued(id, holder, next);
        }
        if let Some(callback) = callback {
            match serde_json::to_vec(&report) {
                Ok(body) => {
                    tokio::spawn(callback.deliver(report.turn_id, body));
                }
                Err(err) => tracing::error!(error = %err, "could not serialise the turn's report"),
            }
        }
    }
}

impl TurnCore {
    fn emit(&self, event: TurnEvent) {
        if let Some(parent) = &self.parent_call {
            self.log.emit(TurnEvent::Nested {
                parent_tool_use_id: parent.clone(),
                event: Box::new(event),
            });
            return;
        }
        match &event {
            TurnEvent::TextDelta(_) if !self.first_token.swap(true, Ordering::Relaxed) => {
                metrics::first_token(self.started.elapsed());
            }
            TurnEvent::Compaction(compaction) => metrics::compaction(compaction.trigger),
            _ => {}
        }
        self.log.emit(event);
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

    /// Counts one call's usage in the turn and the session.
    async fn count(&self, response: &ModelResponse, progress: &mut Progress) {
        self.count_usage(&response.model, &response.usage, progress)
            .await;
    }

    /// Counts the usage of one call to `model` (the turn's or a tool's).
    async fn count_usage(&self, model: &str, usage: &Usage, progress: &mut Progress) {
        // Counted as soon as the call ends, so a crash later in the turn
        // does not lose what was spent.
        let call = UsageTotals {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cache_creation_input_tokens: usage.cache_creation_input_tokens,
            cache_read_input_tokens: usage.cache_read_input_tokens,
            cost_usd: self.agent.price(model, usage),
        };
        metrics::model_usage(model, usage, call.cost_usd);
        progress.usage += call;
        *self.spent.lock().unwrap_or_else(PoisonError::into_inner) += call.cost_usd;
        self.record_usage(call, 0).await;
    }

    fn use_model(&self, model: &str) {
        model.clone_into(
            &mut self
                .model_in_use
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
    }

    /// Whether this loop's messages go to the session's history (a
    /// subagent's conversation is its own, kept in memory).
    fn stores_history(&self) -> bool {
        self.parent_call.is_none()
    }

    fn draft(&self) -> Draft {
        if self.stores_history() {
            Draft::start(self.agent.store.clone(), self.session.id)
        } else {
            Draft::detached()
        }
    }

    async fn persist(&self, message: &Message) -> Result<(), Stop> {
        if !self.stores_history() {
            return Ok(());
        }
        self.agent
            .store
            .append_messages(self.session.id, &[history::to_stored(message)])
            .await
            .map_err(|e| Stop::Failed(e.into()))
    }

    async fn stored_view(&self) -> Result<View, Stop> {
        let rows = self
            .agent
            .store
            .messages(self.session.id)
            .await
            .map_err(|e| Stop::Failed(e.into()))?;
        Ok(View::of(&rows))
    }

    /// A request for `model` carrying `messages`, with caching, thinking and
    /// a `max_tokens` that leaves the prompt room in the window; and its
    /// estimated size in tokens (at a ratio of 1).
    fn request(
        &self,
        model: &str,
        prompt: &Prompt,
        messages: Vec<Message>,
        ratio: f64,
    ) -> (ModelRequest, u64) {
        let settings = &self.settings;
        let estimated = prompt.tokens_with(&messages);
        let mut request = ModelRequest::new(model, settings.max_tokens_for(model), messages);
        request.system = prompt.system.clone();
        request.tools = prompt.tools.clone();
        request.cache = settings.anthropic.cache();
        let window = settings.limits_of(model).context_window;
        let room = window.saturating_sub((estimated as f64 * ratio) as u64 + WINDOW_MARGIN);
        let room = u32::try_from(room).unwrap_or(u32::MAX);
        request.max_tokens = request.max_tokens.min(room).max(MIN_OUTPUT_TOKENS);
        let budget = settings.defaults.thinking_budget_tokens;
        if budget > 0 && budget < request.max_tokens {
            request.thinking_budget = Some(budget);
        }
        (request, estimated)
    }

    /// The estimated prompt tokens past which the next call compacts first.
    fn compact_threshold(&self, model: &str) -> u64 {
        let settings = &self.settings;
        let window = settings.limits_of(model).context_window as f64;
        (window * settings.context.auto_compact_at) as u64
    }

    /// The loop itself. Returns the stop reason and final text.
    async fn drive(
        &self,
        message: String,
        attachments: Vec<ContentBlock>,
        progress: &mut Progress,
        approvals: Arc<Approvals>,
    ) -> Result<(String, String), Stop> {
        let agent = &self.agent;
        let settings = &self.settings;

        let _permit = tokio::select! {
            permit = agent.permits.clone().acquire_owned() => permit.map_err(|_| Stop::Failed(ApiError::ShuttingDown))?,
            () = self.canceller.token.cancelled() => return Err(Stop::Cancelled),
        };

        let expansion = match commands::prepare(settings, &self.workspace, &message).await {
            Invocation::Prompt(expansion) => expansion,
            Invocation::Builtin(Builtin::Help(text)) => {
                self.persist(&Message::user_text(message)).await?;
                self.record_usage(UsageTotals::default(), 1).await;
                let reply = Message::assistant(vec![ContentBlock::Text { text: text.clone() }]);
                self.persist(&reply).await?;
                self.emit(TurnEvent::TextDelta(text.clone()));
                progress.last_text = text.clone();
                return Ok(("end_turn".into(), text));
            }
            Invocation::Builtin(builtin) => {
                let tool_set = agent.tools.tool_set(&self.workspace, &self.policy).await;
                let prompt = self.prompt(&settings.defaults.model, &tool_set).await;
                return self.builtin(builtin, &prompt, progress).await;
            }
        };
        // A command's `model` holds for this turn.
        let model_id = expansion
            .model
            .clone()
            .unwrap_or_else(|| settings.defaults.model.clone());
        progress.model = model_id.clone();
        // Its `allowed-tools` are allow rules until the next user message.
        let tool_set = agent
            .tools
            .tool_set_granting(&self.workspace, &self.policy, &expansion.allowed_tools)
            .await;
        let prompt = self.prompt(&model_id, &tool_set).await;

        let mode = tool_set.permissions().mode();
        let check = tool_set
            .hooks()
            .user_prompt_submit(
                &expansion.text,
                mode,
                &self.workspace,
                &self.canceller.token,
            )
            .await;
        if let Some(reason) = check.blocked {
            // The prompt never reaches the model nor the history.
            let text = format!("A UserPromptSubmit hook blocked this message: {reason}");
            self.emit(TurnEvent::TextDelta(text.clone()));
            progress.last_text = text.clone();
            return Ok(("blocked".into(), text));
        }
        let view = self.stored_view().await?;
        // Images and documents go first, as the API advises, then the text.
        let mut user = Message {
            role: Role::User,
            content: attachments,
        };
        user.content.push(ContentBlock::Text {
            text: expansion.text,
        });
        user.content.extend(
            check
                .context
                .into_iter()
                .map(|text| ContentBlock::Text { text }),
        );
        self.persist(&user).await?;
        self.record_usage(UsageTotals::default(), 1).await;
        let mut conversation = view.conversation();
        conversation.push(user);
        let conversation = history::repair(conversation);

        let tool_ctx = ToolContext::new(self.workspace.clone(), self.canceller.token.clone())
            .in_session(
                agent.tool_sessions.get(self.session.id),
                super::turn::tool_events(&self.log),
            )
            .with_person(approvals)
            .with_subagents(Arc::new(self.clone()));
        self.run_loop(
            conversation,
            &prompt,
            &tool_set,
            &tool_ctx,
            model_id,
            progress,
        )
        .await
    }

    /// Model calls and tool runs until the model ends its turn: the turn's
    /// own conversation, or a subagent's.
    async fn run_loop(
        &self,
        mut conversation: Vec<Message>,
        prompt: &Prompt,
        tool_set: &ToolSet,
        tool_ctx: &ToolContext,
        mut model_id: String,
        progress: &mut Progress,
    ) -> Result<(String, String), Stop> {
        let settings = &self.settings;
        let mode = tool_set.permissions().mode();
        self.use_model(&model_id);
        let mut continuations = 0;
        // What the API counted over what the estimate said, for the last call.
        let mut ratio = 1.0f64;
        // A subagent's conversation lives for one task and is not stored:
        // it is shrunk to fit rather than compacted.
        let mut compact_next = self.stores_history()
            && (prompt.tokens_with(&conversation) as f64 * ratio) as u64
                > self.compact_threshold(&model_id);

        loop {
            if compact_next
                && let Some(compacted) = self
                    .compact(Trigger::Auto, None, prompt, &model_id, ratio, progress)
                    .await?
            {
                conversation = compacted;
            }
            if progress.num_turns >= settings.defaults.max_turns {
                return Ok(("max_turns".into(), progress.last_text.clone()));
            }
            progress.num_turns += 1;

            let draft = self.draft();
            let mut recoveries = 0;
            let mut shrunk: Option<Vec<Message>> = None;
            let (estimated, response) = loop {
                let messages = shrunk.clone().unwrap_or_else(|| conversation.clone());
                let (request, estimated) = self.request(&model_id, prompt, messages, ratio);
                let failure = match self.call_model(&request, &draft).await {
                    Ok(response) => break (estimated, response),
                    Err(failure) => failure,
                };
                let (error, partial_text) = match failure {
                    CallFailure::Cancelled(partial_text) => {
                        self.keep_partial(draft, partial_text, progress).await?;
                        return Err(Stop::Cancelled);
                    }
                    CallFailure::Model(error, partial_text) => (error, partial_text),
                };
                if let Some(overflow) = as_overflow(&error)
                    && recoveries < MAX_RECOVERIES
                {
                    recoveries += 1;
                    if let Some(counted) = overflow.prompt_tokens {
                        ratio = ratio.max(counted as f64 / estimated.max(1) as f64);
                    }
                    tracing::warn!(recoveries, %error, "the request did not fit the context window");
                    if recoveries == 1
                        && self.stores_history()
                        && let Some(compacted) = self
                            .compact(Trigger::Recovery, None, prompt, &model_id, ratio, progress)
                            .await?
                    {
                        conversation = compacted;
                        continue;
                    }
                    // Compaction could not make room: this request alone
                    // carries less (the stored history is untouched).
                    let window = overflow
                        .window
                        .unwrap_or(settings.limits_of(&model_id).context_window);
                    let fixed = (prompt.fixed_tokens as f64 * ratio) as u64;
                    let budget = ((window / 2) >> (recoveries - 1))
                        .saturating_sub(fixed)
                        .max(1_000);
                    shrunk = Some(context::shrink(conversation.clone(), budget, ratio));
                    continue;
                }
                if is_overloaded(&error)
                    && let Some(fallback) = settings.defaults.fallback_model.as_deref()
                    && fallback != model_id
                {
                    tracing::warn!(from = %model_id, to = fallback, "the model stayed overloaded; continuing on the fallback model");
                    model_id = fallback.to_owned();
                    self.use_model(&model_id);
                    progress.model = model_id.clone();
                    progress.fallback_model_used = true;
                    continue;
                }
                self.keep_partial(draft, partial_text, progress).await?;
                return Err(Stop::Failed(upstream_error(
                    error,
                    settings.anthropic.max_retries,
                )));
            };
            self.count(&response, progress).await;
            progress.model = response.model.clone();
            let counted = response.usage.input_tokens
                + response.usage.cache_creation_input_tokens
                + response.usage.cache_read_input_tokens;
            if counted > 0 {
                ratio = counted as f64 / estimated.max(1) as f64;
            }
            compact_next = self.stores_history()
                && counted + response.usage.output_tokens > self.compact_threshold(&model_id);

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
                if self.stores_history()
                    && continuations < MAX_STOP_CONTINUATIONS
                    && let Some(reason) = tool_set
                        .hooks()
                        .stop(
                            &progress.last_text,
                            continuations > 0,
                            mode,
                            &self.workspace,
                            &self.canceller.token,
                        )
                        .await
                {
                    // A Stop hook wants more: its reason is the next prompt.
                    continuations += 1;
                    let next = Message::user_text(format!("Stop hook feedback: {reason}"));
                    self.persist(&next).await?;
                    conversation.push(next);
                    conversation = history::repair(conversation);
                    continue;
                }
                let stop_reason = response.stop_reason.unwrap_or_else(|| "end_turn".into());
                return Ok((stop_reason, progress.last_text.clone()));
            }
            let cut_call = cut_tool_call(&response);

            let mut results = Vec::with_capacity(calls.len());
            let run = |id: &str, name: &str, input: &Value| {
                let cut = cut_call.as_deref() == Some(id);
                let (id, name, input) = (id.to_owned(), name.to_owned(), input.clone());
                let (tool_set, tool_ctx) = (tool_set, tool_ctx);
                async move {
                    if self.canceller.token.is_cancelled() {
                        ToolOutput::error(INTERRUPTED)
                    } else if cut {
                        ToolOutput::error(CUT_TOOL_CALL)
                    } else {
                        let started = Instant::now();
                        let output = tool_set.run(&name, input, &tool_ctx.for_call(&id)).await;
                        metrics::tool_call(&name, output.is_error, started.elapsed());
                        output
                    }
                }
            };
            // Calls that change nothing run side by side in runs of such
            // calls; every other call runs alone, in the model's order.
            let mut start = 0;
            while start < calls.len() {
                let mut end = start + 1;
                if tool_set.runs_alongside(&calls[start].1) {
                    while end < calls.len() && tool_set.runs_alongside(&calls[end].1) {
                        end += 1;
                    }
                }
                let batch = &calls[start..end];
                let outputs = futures::future::join_all(
                    batch.iter().map(|(id, name, input)| run(id, name, input)),
                )
                .await;
                for ((id, name, input), output) in batch.iter().zip(outputs) {
                    for (model, usage) in &output.model_usage {
                        self.count_usage(model, usage, progress).await;
                    }
                    progress.usage += output.counted_usage;
                    let content =
                        context::cap_tool_result(output.content, settings.tools.max_result_tokens);
                    progress.tool_calls.push(ToolCall::new(
                        id.clone(),
                        name.clone(),
                        input.clone(),
                        &content,
                        output.is_error,
                    ));
                    self.emit(TurnEvent::ToolResult {
                        id: id.clone(),
                        name: name.clone(),
                        content: content.clone(),
                        is_error: output.is_error,
                    });
                    results.push(ContentBlock::ToolResult {
                        tool_use_id: id.clone(),
                        content: ToolResultContent {
                            text: content,
                            media: output.media,
                        },
                        is_error: output.is_error,
                    });
                }
                start = end;
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
            let spent = *self.spent.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(budget) = settings.defaults.max_budget_usd
                && self.session.usage.cost_usd + spent >= budget
            {
                return Ok(("max_budget".into(), progress.last_text.clone()));
            }
        }
    }

    /// Saves the text a failed or cancelled call had streamed.
    async fn keep_partial(
        &self,
        draft: Draft,
        partial_text: String,
        progress: &mut Progress,
    ) -> Result<(), Stop> {
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
        Ok(())
    }

    /// The system prompt (blocks, stable first) and tool definitions of the
    /// turn's calls to `model`.
    async fn prompt(&self, model: &str, tool_set: &ToolSet) -> Prompt {
        let agent = &self.agent;
        let system = agent
            .prompts
            .build(
                &self.settings,
                self.session.id,
                &self.workspace,
                model,
                Some(tool_set.hooks().sandbox()),
            )
            .await;
        Prompt::new(system.blocks, tool_set.definitions())
    }

    /// `/compact` and `/clear`: answered without a model turn of their own.
    async fn builtin(
        &self,
        builtin: Builtin,
        prompt: &Prompt,
        progress: &mut Progress,
    ) -> Result<(String, String), Stop> {
        match builtin {
            Builtin::Compact(focus) => {
                let model = self.settings.defaults.model.clone();
                let text = match self
                    .compact(Trigger::Manual, focus, prompt, &model, 1.0, progress)
                    .await?
                {
                    Some(_) => {
                        let done = progress.compactions.last();
                        format!(
                            "Compacted the conversation: {} messages summarised, about {} tokens down to {}.",
                            done.map_or(0, |c| c.messages_summarized),
                            done.map_or(0, |c| c.tokens_before),
                            done.map_or(0, |c| c.tokens_after),
                        )
                    }
                    None => "There is nothing to compact yet.".to_owned(),
                };
                progress.last_text = text.clone();
                Ok(("compacted".into(), text))
            }
            Builtin::Help(text) => Ok(("end_turn".into(), text)),
            Builtin::Clear => {
                let before = self.stored_view().await?.conversation();
                let compaction = Compaction {
                    trigger: Trigger::Clear,
                    summary: None,
                    keep_from_seq: None,
                    messages_summarized: before.len(),
                    tokens_before: context::estimate(&before, 1.0),
                    tokens_after: 0,
                    focus: None,
                };
                self.save_marker(&compaction).await?;
                progress.compactions.push(compaction.clone());
                self.emit(TurnEvent::Compaction(compaction));
                let text =
                    "Started a fresh context; the earlier messages stay in the session's history."
                        .to_owned();
                progress.last_text = text.clone();
                Ok(("cleared".into(), text))
            }
        }
    }

    async fn save_marker(&self, compaction: &Compaction) -> Result<(), Stop> {
        self.agent
            .store
            .append_messages(self.session.id, &[compaction.to_stored()])
            .await
            .map_err(|e| Stop::Failed(e.into()))
    }

    /// Summarises the stored conversation and stores the compaction marker.
    /// Automatic compactions keep the newest messages verbatim (up to
    /// `context.keep_recent` of the window); `/compact` summarises all.
    /// Returns the conversation the model sees from now on, or `None` when
    /// there was nothing to summarise.
    async fn compact(
        &self,
        trigger: Trigger,
        focus: Option<String>,
        prompt: &Prompt,
        model: &str,
        ratio: f64,
        progress: &mut Progress,
    ) -> Result<Option<Vec<Message>>, Stop> {
        let settings = &self.settings;
        let view = self.stored_view().await?;
        let limits = settings.limits_of(model);
        let window = limits.context_window;
        let cut = match trigger {
            Trigger::Manual | Trigger::Clear => view.entries.len(),
            Trigger::Auto | Trigger::Recovery => {
                let keep = (window as f64 * settings.context.keep_recent) as u64;
                context::keep_from(&view.entries, keep, ratio)
            }
        };
        if cut == 0 && view.summary.is_none() {
            return Ok(None);
        }
        let before = view.conversation();
        let tokens_before = context::estimate(&before, ratio);
        let mut summarised: Vec<Message> = view.summary.iter().cloned().collect();
        summarised.extend(view.entries[..cut].iter().map(|(_, m)| m.clone()));
        let summarised = history::repair(summarised);
        let messages_summarized = summarised.len();

        let summary = self
            .summarise(summarised, focus.as_deref(), prompt, model, ratio, progress)
            .await?;
        let keep_from_seq = view.entries.get(cut).map(|(seq, _)| *seq);
        let mut compaction = Compaction {
            trigger,
            summary: Some(summary),
            keep_from_seq,
            messages_summarized,
            tokens_before,
            tokens_after: 0,
            focus,
        };
        let mut after: Vec<Message> = compaction.summary_message().into_iter().collect();
        after.extend(view.entries[cut..].iter().map(|(_, m)| m.clone()));
        let after = history::repair(after);
        compaction.tokens_after = context::estimate(&after, ratio);
        self.save_marker(&compaction).await?;
        tracing::info!(
            trigger = trigger.as_str(),
            messages_summarized,
            tokens_before,
            tokens_after = compaction.tokens_after,
            "conversation compacted"
        );
        progress.compactions.push(compaction.clone());
        self.emit(TurnEvent::Compaction(compaction));
        Ok(Some(after))
    }

    /// One summary call, shrinking what it carries until it fits.
    async fn summarise(
        &self,
        messages: Vec<Message>,
        focus: Option<&str>,
        prompt: &Prompt,
        model: &str,
        mut ratio: f64,
        progress: &mut Progress,
    ) -> Result<String, Stop> {
        let settings = &self.settings;
        let limits = settings.limits_of(model);
        let max_tokens = settings
            .context
            .summary_max_tokens
            .min(settings.max_tokens_for(model));
        let fixed =
            context::estimate(&prompt.system, ratio) + context::estimate(&prompt.tools, ratio);
        let mut budget = limits
            .context_window
            .saturating_sub(u64::from(max_tokens) + fixed + WINDOW_MARGIN)
            .max(1_000);
        let instruction = context::summary_instruction(focus);
        for _ in 0..=MAX_RECOVERIES {
            let mut carried = context::shrink(messages.clone(), budget, ratio);
            match carried.last_mut() {
                Some(last) if last.role == Role::User => {
                    last.content.push(ContentBlock::Text {
                        text: instruction.clone(),
                    });
                }
                _ => carried.push(Message::user_text(instruction.clone())),
            }
            let mut request = ModelRequest::new(model, max_tokens, carried);
            request.system = prompt.system.clone();
            request.tools = prompt.tools.clone();
            request.cache = settings.anthropic.cache();
            let (events, _ignored) = mpsc::unbounded_channel();
            let result = tokio::select! {
                biased;
                () = self.canceller.token.cancelled() => return Err(Stop::Cancelled),
                result = self.model.send(&request, &events) => result,
            };
            match result {
                Ok(response) => {
                    self.count(&response, progress).await;
                    let text = response.text().trim().to_owned();
                    if text.is_empty() {
                        return Err(Stop::Failed(ApiError::Upstream(
                            "The model wrote an empty summary while compacting the conversation; send the message again.".into(),
                        )));
                    }
                    return Ok(text);
                }
                Err(error) => match as_overflow(&error) {
                    Some(overflow) => {
                        if let Some(counted) = overflow.prompt_tokens {
                            let estimated = context::estimate(&request.body(), 1.0).max(1);
                            ratio = ratio.max(counted as f64 / estimated as f64);
                        }
                        budget = (budget / 2).max(500);
                    }
                    None => {
                        return Err(Stop::Failed(upstream_error(
                            error,
                            settings.anthropic.max_retries,
                        )));
                    }
                },
            }
        }
        Err(Stop::Failed(ApiError::Upstream(
            "The conversation could not be made small enough to summarise for this model's context window.".into(),
        )))
    }

    /// One model call, forwarding deltas as they arrive. On failure returns
    /// the text that had arrived, so it can be kept.
    async fn call_model(
        &self,
        request: &ModelRequest,
        draft: &Draft,
    ) -> Result<ModelResponse, CallFailure> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let call = self.model.send(request, &tx);
        tokio::pin!(call);
        let result = loop {
            tokio::select! {
                biased;
                () = self.canceller.token.cancelled() => return Err(CallFailure::Cancelled(draft.text())),
                Some(event) = rx.recv() => self.forward(event, draft),
                result = &mut call => break result,
            }
        };
        while let Ok(event) = rx.try_recv() {
            self.forward(event, draft);
        }
        result.map_err(|err| {
            let partial_text = super::wire::blocks_text(err.partial());
            let partial_text = if partial_text.is_empty() {
                draft.text()
            } else {
                partial_text
            };
            CallFailure::Model(err, partial_text)
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
            ModelEvent::ThinkingDelta(thinking) => self.emit(TurnEvent::ThinkingDelta(thinking)),
        }
    }
}

/// A subagent runs the turn's own loop on a fresh conversation: its type's
/// system prompt, the task as the only user message, and the type's tools
/// (never `Agent`), under the turn's cancellation, rules and budget.
#[async_trait]
impl SubagentRunner for TurnCore {
    async fn run(&self, call: SubagentCall, ctx: &ToolContext) -> ToolOutput {
        let definition = &call.definition;
        let parent_model = self
            .model_in_use
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut nested = self.clone();
        nested.parent_call = Some(ctx.call_id.clone());
        nested.model_in_use = Arc::default();
        let model_id = subagents::resolve_model(
            call.model.as_deref(),
            definition.model.as_deref(),
            &parent_model,
        );
        let tool_set = self
            .agent
            .tools
            .tool_set(&self.workspace, &self.policy)
            .await
            .only(|name| name != agent_tool::NAME && definition.allows(name));
        let system = self.agent.prompts.subagent(
            &definition.prompt,
            self.session.id,
            &self.workspace,
            &model_id,
        );
        let prompt = Prompt::new(system, tool_set.definitions());

        let mut tool_ctx = ctx.clone();
        tool_ctx.subagents = None;
        tool_ctx.call_id = String::new();
        // The subagent's tool events are its own: marked like its frames.
        let emitter = nested.clone();
        tool_ctx.events = ToolEvents::new(move |event| emitter.emit(TurnEvent::from(event)));

        tracing::info!(subagent = %definition.name, model = %model_id, description = %call.description, "subagent started");
        let mut progress = Progress {
            model: model_id.clone(),
            ..Progress::default()
        };
        let conversation = vec![Message::user_text(call.prompt)];
        let outcome = nested
            .run_loop(
                conversation,
                &prompt,
                &tool_set,
                &tool_ctx,
                model_id,
                &mut progress,
            )
            .await;
        tracing::info!(
            subagent = %definition.name,
            num_turns = progress.num_turns,
            tool_calls = progress.tool_calls.len(),
            cost_usd = micro_usd(progress.usage.cost_usd),
            "subagent finished"
        );
        let mut output = match outcome {
            Ok((_, text)) if !text.trim().is_empty() => ToolOutput::ok(text),
            Ok((stop_reason, _)) => ToolOutput::ok(format!(
                "The subagent stopped ({stop_reason}) without writing a report."
            )),
            Err(Stop::Cancelled) => ToolOutput::error(INTERRUPTED),
            Err(Stop::Failed(err)) => {
                ToolOutput::error(format!("The subagent failed: {}", err.detail()))
            }
        };
        // Its calls are in the session's usage already (each counted as it
        // ended); the parent adds them to the turn's.
        output.counted_usage = progress.usage;
        output
    }
}

/// Why a call gave no response; both carry the text streamed so far.
enum CallFailure {
    Cancelled(String),
    Model(ModelError, String),
}

fn as_overflow(error: &ModelError) -> Option<context::Overflow> {
    match error {
        ModelError::Status {
            status, message, ..
        } => context::overflow(*status, message),
        _ => None,
    }
}

fn is_overloaded(error: &ModelError) -> bool {
    match error {
        ModelError::Status {
            status, error_type, ..
        } => *status == 529 || error_type == "overloaded_error",
        ModelError::Stream { message, partial } => {
            partial.is_empty() && message.starts_with("overloaded_error")
        }
        _ => false,
    }
}

/// The id of a tool call the reply was cut in (`max_tokens` or the window
/// reached while its input was written): the reply's last block, when it
/// is a tool call.
fn cut_tool_call(response: &ModelResponse) -> Option<String> {
    if !matches!(
        response.stop_reason.as_deref(),
        Some("max_tokens" | WINDOW_EXCEEDED)
    ) {
        return None;
    }
    match response.content.last() {
        Some(ContentBlock::ToolUse { id, .. }) => Some(id.clone()),
        _ => None,
    }
}

/// Summarises a model failure for the client, without secrets.
fn upstream_error(err: ModelError, max_retries: u32) -> ApiError {
    match err {
        ModelError::NotConfigured => ApiError::UpstreamNotConfigured,
        ModelError::Unauthorized { message } => ApiError::Upstream(format!(
            "The model API rejected the credentials ({message}); check ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN."
        )),
        ModelError::Status {
            status,
            error_type,
            message,
        } if matches!(status, 408 | 409 | 429) || status >= 500 => ApiError::Upstream(format!(
            "The model API failed after {max_retries} retries: {status} {error_type}: {message}"
        )),
        ModelError::Status {
            status,
            error_type,
            message,
        } => ApiError::Upstream(format!(
            "The model API rejected the request: {status} {error_type}: {message}"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_request_is_not_reported_as_retried() {
        let rejected = upstream_error(
            ModelError::Status {
                status: 400,
                error_type: "invalid_request_error".into(),
                message: "bad".into(),
            },
            2,
        );
        assert!(
            !rejected.detail().contains("retries"),
            "{}",
            rejected.detail()
        );
        let overloaded = upstream_error(
            ModelError::Status {
                status: 529,
                error_type: "overloaded_error".into(),
                message: "Overloaded".into(),
            },
            2,
        );
        assert!(overloaded.detail().contains("after 2 retries"));
    }
}
