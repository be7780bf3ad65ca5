//! What the agent can do: the `Tool` trait, the sources that supply tools
//! (built-ins, skills, MCP servers) and the per-turn set filtered by policy.

pub mod agent;
mod args;
pub mod ask_user;
pub mod background;
pub mod bash;
pub mod builtin;
pub mod edit;
pub mod glob;
pub mod grep;
pub mod notebook;
pub mod person;
pub mod policy;
pub mod read;
pub mod read_media;
mod reads;
pub mod registry;
pub mod session;
mod text;
pub mod todo;
mod walk;
pub mod web_fetch;
pub mod write;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::workspace::Workspace;

pub use builtin::BuiltinTools;
pub use policy::{PermissionMode, ToolPolicy, UnknownPermissionMode};
pub use registry::{ToolRegistry, ToolSet};
pub use session::{SessionTools, ToolSessions};

/// Everything a tool call may use. Paths go through `workspace`; long work
/// watches `cancel`, which fires on interrupt and turn timeout.
#[derive(Clone)]
pub struct ToolContext {
    pub workspace: Workspace,
    pub cancel: CancellationToken,
    /// The session the call belongs to, and what its tools remember between
    /// calls (files read, Bash's working directory).
    pub session: SessionTools,
    /// Where a tool reports a change the client should see as it happens.
    pub events: ToolEvents,
    /// Who decides calls the rules leave to a person and answers the
    /// model's questions; `None` when nobody can be asked.
    pub person: Option<Arc<dyn person::Person>>,
    /// The model's id of the call being run (empty outside a turn).
    pub call_id: String,
    /// Who runs `Agent` calls; `None` inside a subagent, which may not
    /// start more.
    pub subagents: Option<Arc<dyn agent::SubagentRunner>>,
}

impl ToolContext {
    /// A context with state of its own, shared by its clones only, and no
    /// one listening to events: for calls outside a stored session.
    pub fn new(workspace: Workspace, cancel: CancellationToken) -> Self {
        Self {
            workspace,
            cancel,
            session: SessionTools::detached(),
            events: ToolEvents::default(),
            person: None,
            call_id: String::new(),
            subagents: None,
        }
    }

    /// The same context with `runner` starting `Agent` calls' subagents.
    pub fn with_subagents(mut self, runner: Arc<dyn agent::SubagentRunner>) -> Self {
        self.subagents = Some(runner);
        self
    }

    /// The same context with `person` to ask.
    pub fn with_person(mut self, person: Arc<dyn person::Person>) -> Self {
        self.person = Some(person);
        self
    }

    /// The context for running the model's call `id`.
    pub fn for_call(&self, id: &str) -> Self {
        let mut ctx = self.clone();
        ctx.call_id = id.to_owned();
        ctx
    }

    /// The same context for calls of a stored session, reporting to `events`.
    pub fn in_session(mut self, session: SessionTools, events: ToolEvents) -> Self {
        self.session = session;
        self.events = events;
        self
    }
}

/// A change a tool made that the client should see, beside the result the
/// model gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolEvent {
    /// The session's todo list, whole, as TodoWrite just set it.
    Todos(Vec<crate::store::Todo>),
}

/// Delivers tool events to whoever runs the turn; silent when nobody does.
#[derive(Clone, Default)]
pub struct ToolEvents(Option<Arc<dyn Fn(ToolEvent) + Send + Sync>>);

impl ToolEvents {
    pub fn new(deliver: impl Fn(ToolEvent) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(deliver)))
    }

    pub fn emit(&self, event: ToolEvent) {
        if let Some(deliver) = &self.0 {
            deliver(event);
        }
    }
}

/// What goes back to the model as a `tool_result`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    pub content: String,
    pub is_error: bool,
    /// Model calls the tool made itself (model id and usage), counted in
    /// the turn's and the session's usage.
    pub model_usage: Vec<(String, crate::agent::wire::Usage)>,
    /// Images or documents that go to the model with `content` (Read of an
    /// image or a PDF).
    pub media: Vec<crate::agent::wire::ContentBlock>,
    /// Usage already counted in the session by whoever made the calls (a
    /// subagent's loop), to add to the turn's totals only.
    pub counted_usage: crate::store::UsageTotals,
}

impl ToolOutput {
    pub fn ok(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: false,
            model_usage: Vec::new(),
            media: Vec::new(),
            counted_usage: crate::store::UsageTotals::default(),
        }
    }

    /// A result that shows the model `media` (image or document blocks)
    /// beside `content`.
    pub fn with_media(
        content: impl Into<String>,
        media: Vec<crate::agent::wire::ContentBlock>,
    ) -> Self {
        Self {
            media,
            ..Self::ok(content)
        }
    }

    pub fn error(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: true,
            model_usage: Vec::new(),
            media: Vec::new(),
            counted_usage: crate::store::UsageTotals::default(),
        }
    }
}

#[async_trait]
pub trait Tool: Send + Sync {
    /// The name the model calls it by (`^[a-zA-Z0-9_-]{1,128}$`).
    fn name(&self) -> &str;
    fn description(&self) -> String;
    /// JSON Schema of the input object.
    fn input_schema(&self) -> Value;
    /// Read-only tools may run in `plan` and `default` permission modes.
    fn read_only(&self) -> bool;
    /// Whether calls may run at the same time as other such calls of one
    /// model reply: tools that change nothing, unless they say otherwise.
    fn runs_alongside(&self) -> bool {
        self.read_only()
    }
    /// Runs the call. Failures are `ToolOutput::error`, never a panic.
    async fn call(&self, input: Value, ctx: &ToolContext) -> ToolOutput;
}

/// Something that supplies tools for a session working in a given workspace.
#[async_trait]
pub trait ToolSource: Send + Sync {
    async fn tools(&self, workspace: &Workspace) -> Vec<Arc<dyn Tool>>;
}

/// The model-facing definition of a tool, as the Messages API wants it.
pub fn definition(tool: &dyn Tool) -> Value {
    serde_json::json!({
        "name": tool.name(),
        "description": tool.description(),
        "input_schema": tool.input_schema(),
    })
}

/// Resolves a path the model gave through the session's jail; a refusal is
/// the tool's result, so callers can `?`-style return it.
pub(crate) fn resolve_path(ctx: &ToolContext, raw: &str) -> Result<std::path::PathBuf, ToolOutput> {
    if raw.trim().is_empty() {
        return Err(ToolOutput::error("The path is empty."));
    }
    ctx.workspace
        .resolve(raw)
        .map_err(|e| ToolOutput::error(format!("Cannot use '{raw}': {e}")))
}

/// Runs file-system work off the async runtime, so one user's large read or
/// search does not stall other sessions' turns. The call ends when the turn
/// is cancelled even if the work is stuck in the kernel (a hung network
/// file system): the thread is left to finish on its own, the turn is not.
pub(crate) async fn run_blocking<F>(cancel: &CancellationToken, work: F) -> ToolOutput
where
    F: FnOnce() -> ToolOutput + Send + 'static,
{
    let task = tokio::task::spawn_blocking(work);
    tokio::select! {
        joined = task => match joined {
            Ok(output) => output,
            Err(e) => ToolOutput::error(format!("The tool failed unexpectedly: {e}")),
        },
        () = cancel.cancelled() => ToolOutput::error("Interrupted."),
    }
}

/// Opens a file the model named, beneath the session's roots; a refusal is
/// the tool's result.
pub(crate) fn open_in_workspace(
    workspace: &Workspace,
    path: &std::path::Path,
    access: crate::workspace::Access,
) -> Result<crate::workspace::OpenFile, ToolOutput> {
    workspace
        .open_file(path, access)
        .map_err(|e| file_error(&e))
}

/// The model-facing text for a file that could not be used.
pub(crate) fn file_error(e: &crate::workspace::FileError) -> ToolOutput {
    use crate::workspace::FileError;
    ToolOutput::error(match e {
        FileError::IsDirectory(_) => {
            format!("{e}. Use the Glob tool or `ls` through Bash to list its contents.")
        }
        FileError::Escape(shown) => format!("Cannot use '{shown}': {e}"),
        _ => {
            let mut text = e.to_string();
            if let Some(first) = text.get(..1) {
                let upper = first.to_uppercase();
                text.replace_range(..1, &upper);
            }
            format!("{text}.")
        }
    })
}
