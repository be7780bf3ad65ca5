//! Background shells: Bash commands started with `run_in_background`, kept
//! per session in this process with a bounded output buffer, read with
//! `TaskOutput` and stopped with `TaskStop` (Claude Code's names). They are
//! stopped when their lifetime ends, when the session is deleted or expires,
//! and when the service stops.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use regex::Regex;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::args::Args;
use super::text::{MAX_OUTPUT_CHARS, truncate_middle};
use super::{Tool, ToolContext, ToolOutput};

/// Background shells a session may have running at once.
pub const MAX_RUNNING_PER_SESSION: usize = 8;
/// Finished shells a session keeps listed (the oldest go first).
const MAX_FINISHED_KEPT: usize = 16;
/// Output bytes kept per shell; older output is dropped as new arrives.
pub const OUTPUT_BUFFER_BYTES: usize = 1024 * 1024;
/// Lifetime of a background shell when the model gives no timeout, and the
/// longest it may ask for, in milliseconds (Claude Code's figures).
pub const DEFAULT_LIFETIME_MS: u64 = 30 * 60 * 1000;
pub const MAX_LIFETIME_MS: u64 = 2 * 60 * 60 * 1000;
/// How long `TaskOutput` waits by default, and at most, for a shell to end.
const DEFAULT_WAIT_MS: u64 = 30_000;
const MAX_WAIT_MS: u64 = 600_000;

/// How a background shell stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Running,
    /// Exited by itself; see `exit_code`.
    Completed,
    /// Exited with a non-zero code or was killed by a signal.
    Failed,
    /// Stopped by `TaskStop`, the session's deletion or the service stopping.
    Stopped,
    /// Its lifetime (`timeout`) ran out.
    TimedOut,
}

/// A background shell as `GET /api/v1/sessions/{id}` lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskView {
    pub task_id: String,
    pub command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub status: TaskStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(serialize_with = "crate::api::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: DateTime<Utc>,
    /// Output bytes the shell has written so far.
    pub output_bytes: u64,
}

/// One background shell.
pub struct BackgroundTask {
    id: String,
    command: String,
    description: Option<String>,
    started_at: DateTime<Utc>,
    output: Mutex<Output>,
    /// Cancelled to stop the shell and everything it started.
    pub(crate) stop: CancellationToken,
    ended: watch::Sender<Option<(TaskStatus, Option<i32>)>>,
}

/// The newest output, bounded, and how far `TaskOutput` has read.
#[derive(Default)]
struct Output {
    kept: VecDeque<u8>,
    /// Bytes written in all; `kept` holds the last of them.
    written: u64,
    /// Bytes of `written` already returned by `TaskOutput`.
    read: u64,
}

impl BackgroundTask {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn push(&self, bytes: &[u8]) {
        let mut out = lock(&self.output);
        out.written += bytes.len() as u64;
        out.kept.extend(bytes);
        let excess = out.kept.len().saturating_sub(OUTPUT_BUFFER_BYTES);
        out.kept.drain(..excess);
    }

    /// Records how the shell ended; a stop asked for wins over the exit it caused.
    pub(crate) fn finish(&self, status: TaskStatus, exit_code: Option<i32>) {
        let status = if self.stop.is_cancelled() && status != TaskStatus::TimedOut {
            TaskStatus::Stopped
        } else {
            status
        };
        self.ended.send_replace(Some((status, exit_code)));
    }

    fn state(&self) -> (TaskStatus, Option<i32>) {
        self.ended
            .borrow()
            .clone()
            .unwrap_or((TaskStatus::Running, None))
    }

    pub fn view(&self) -> TaskView {
        let (status, exit_code) = self.state();
        TaskView {
            task_id: self.id.clone(),
            command: self.command.clone(),
            description: self.description.clone(),
            status,
            exit_code,
            started_at: self.started_at,
            output_bytes: lock(&self.output).written,
        }
    }

    /// The output written since the last call, and how many bytes of it were
    /// dropped before anyone read them.
    fn take_new(&self) -> (String, u64) {
        let mut out = lock(&self.output);
        let first_kept = out.written - out.kept.len() as u64;
        let from = out.read.max(first_kept);
        let dropped = from - out.read;
        let skip = usize::try_from(from - first_kept).unwrap_or(usize::MAX);
        let bytes: Vec<u8> = out.kept.iter().skip(skip).copied().collect();
        out.read = out.written;
        (String::from_utf8_lossy(&bytes).into_owned(), dropped)
    }

    async fn wait_ended(&self, up_to: Duration) {
        let mut ended = self.ended.subscribe();
        let _ = tokio::time::timeout(up_to, ended.wait_for(Option::is_some)).await;
    }
}

/// A session's background shells.
#[derive(Default)]
pub struct BackgroundTasks {
    tasks: Mutex<Vec<Arc<BackgroundTask>>>,
}

impl BackgroundTasks {
    /// Registers a new shell, unless the session already runs the most it may.
    pub(crate) fn add(
        &self,
        command: &str,
        description: Option<String>,
    ) -> Result<Arc<BackgroundTask>, String> {
        let mut tasks = lock(&self.tasks);
        let running = tasks
            .iter()
            .filter(|t| t.state().0 == TaskStatus::Running)
            .count();
        if running >= MAX_RUNNING_PER_SESSION {
            return Err(format!(
                "This session already runs {running} background shells, the most it may. \
                 Stop one with TaskStop first."
            ));
        }
        // Forget the oldest finished ones beyond what is kept listed.
        let finished: Vec<String> = tasks
            .iter()
            .filter(|t| t.state().0 != TaskStatus::Running)
            .map(|t| t.id.clone())
            .collect();
        let forget = finished.len().saturating_sub(MAX_FINISHED_KEPT - 1);
        let gone: Vec<&String> = finished.iter().take(forget).collect();
        tasks.retain(|t| !gone.contains(&&t.id));
        let task = Arc::new(BackgroundTask {
            id: format!("bash_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            command: command.to_owned(),
            description,
            started_at: Utc::now(),
            output: Mutex::default(),
            stop: CancellationToken::new(),
            ended: watch::Sender::new(None),
        });
        tasks.push(task.clone());
        Ok(task)
    }

    pub fn get(&self, id: &str) -> Option<Arc<BackgroundTask>> {
        lock(&self.tasks).iter().find(|t| t.id == id).cloned()
    }

    pub fn views(&self) -> Vec<TaskView> {
        lock(&self.tasks).iter().map(|t| t.view()).collect()
    }

    pub fn any_running(&self) -> bool {
        lock(&self.tasks)
            .iter()
            .any(|t| t.state().0 == TaskStatus::Running)
    }

    /// Stops every shell of the session (deleted, expired, or the service stops).
    pub fn stop_all(&self) {
        for task in lock(&self.tasks).iter() {
            task.stop.cancel();
        }
    }

    /// Waits up to `up_to` for every shell to have ended.
    pub async fn wait_all(&self, up_to: Duration) {
        let tasks: Vec<_> = lock(&self.tasks).clone();
        let _ = tokio::time::timeout(
            up_to,
            futures::future::join_all(tasks.iter().map(|t| t.wait_ended(up_to))),
        )
        .await;
    }
}

/// `TaskOutput`: the new output of a background shell and how it stands.
pub struct TaskOutputTool;

#[async_trait]
impl Tool for TaskOutputTool {
    fn name(&self) -> &str {
        "TaskOutput"
    }

    fn description(&self) -> String {
        format!(
            "Returns what a background shell (started by Bash with run_in_background) has \
             written since the last TaskOutput call for it, with its status and, once it has \
             ended, its exit code. With block (the default) it first waits until the shell \
             ends or timeout milliseconds pass (default {DEFAULT_WAIT_MS}, at most \
             {MAX_WAIT_MS}); use block: false to look at a server or watcher that keeps \
             running. filter keeps only the lines matching a regular expression (the rest \
             still count as read). The last {OUTPUT_BUFFER_BYTES} bytes of a shell's output \
             are kept."
        )
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "task_id": {"type": "string", "description": "The background shell's id, as Bash returned it"},
                "block": {"type": "boolean", "description": "Wait for the shell to end first (default true)"},
                "timeout": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_MS, "description": "How long to wait when blocking, in milliseconds"},
                "filter": {"type": "string", "description": "A regular expression; only matching lines are returned"}
            },
            "required": ["task_id"],
            "additionalProperties": false
        })
    }

    fn read_only(&self) -> bool {
        true
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let args = match Args::new(&input) {
            Ok(a) => a,
            Err(e) => return e.into(),
        };
        let (id, block, wait, filter) = match (
            args.string("task_id"),
            args.opt_bool("block"),
            args.opt_u64("timeout"),
            args.opt_string("filter"),
        ) {
            (Ok(id), Ok(b), Ok(t), Ok(f)) => (id.to_owned(), b, t, f),
            (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => return e.into(),
        };
        let filter = match filter.map(Regex::new).transpose() {
            Ok(f) => f,
            Err(e) => {
                return ToolOutput::error(format!("filter is not a valid regular expression: {e}"));
            }
        };
        let Some(task) = ctx.session.background().get(&id) else {
            return ToolOutput::error(unknown_task(&id));
        };
        if block.unwrap_or(true) {
            let wait = Duration::from_millis(wait.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS));
            tokio::select! {
                () = task.wait_ended(wait) => {}
                () = ctx.cancel.cancelled() => {}
            }
        }
        let (mut output, dropped) = task.take_new();
        if let Some(filter) = &filter {
            output = output
                .lines()
                .filter(|line| filter.is_match(line))
                .collect::<Vec<_>>()
                .join("\n");
        }
        let view = task.view();
        let status = match (&view.status, view.exit_code) {
            (TaskStatus::Running, _) => "running".to_owned(),
            (status, Some(code)) => format!("{} (exit code {code})", status_word(status)),
            (status, None) => status_word(status).to_owned(),
        };
        let mut text = format!("Task {id}: {status}.");
        if dropped > 0 {
            text.push_str(&format!(
                " {dropped} bytes of older output were dropped before they were read."
            ));
        }
        if output.is_empty() {
            text.push_str(" No new output.");
        } else {
            text.push('\n');
            text.push_str(&truncate_middle(&output, MAX_OUTPUT_CHARS));
        }
        ToolOutput::ok(text)
    }
}

/// `TaskStop`: stops a background shell and everything it started.
pub struct TaskStopTool;

#[async_trait]
impl Tool for TaskStopTool {
    fn name(&self) -> &str {
        "TaskStop"
    }

    fn description(&self) -> String {
        "Stops a background shell started by Bash with run_in_background, with every process \
         it started, and returns how it ended. Output it wrote stays readable with TaskOutput."
            .into()
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "task_id": {"type": "string", "description": "The background shell's id"},
                "shell_id": {"type": "string", "description": "Deprecated: use task_id"}
            },
            "additionalProperties": false
        })
    }

    fn read_only(&self) -> bool {
        false
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let args = match Args::new(&input) {
            Ok(a) => a,
            Err(e) => return e.into(),
        };
        let id = match (args.opt_string("task_id"), args.opt_string("shell_id")) {
            (Ok(Some(id)), _) | (Ok(None), Ok(Some(id))) => id,
            (Ok(None), Ok(None)) => return ToolOutput::error("task_id is required."),
            (Err(e), _) | (_, Err(e)) => return e.into(),
        };
        let Some(task) = ctx.session.background().get(id) else {
            return ToolOutput::error(unknown_task(id));
        };
        if task.view().status != TaskStatus::Running {
            return ToolOutput::ok(format!(
                "Task {id} had already ended: {}.",
                status_word(&task.view().status)
            ));
        }
        task.stop.cancel();
        task.wait_ended(Duration::from_secs(15)).await;
        let view = task.view();
        ToolOutput::ok(format!(
            "Task {id} {}.",
            match view.status {
                TaskStatus::Running => "was asked to stop and is still ending",
                _ => "was stopped, with every process it started",
            }
        ))
    }
}

fn status_word(status: &TaskStatus) -> &'static str {
    match status {
        TaskStatus::Running => "running",
        TaskStatus::Completed => "completed",
        TaskStatus::Failed => "failed",
        TaskStatus::Stopped => "stopped",
        TaskStatus::TimedOut => "timed out (its lifetime ran out) and was killed",
    }
}

fn unknown_task(id: &str) -> String {
    format!(
        "No background shell {id} in this session (ids come from Bash with run_in_background; \
         they do not survive a restart of the service)."
    )
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
