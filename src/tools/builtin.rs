//! The tools compiled into the service, offered to every session as one
//! `ToolSource` next to skills and MCP servers.

use std::sync::Arc;

use async_trait::async_trait;

use super::ask_user::AskUserQuestionTool;
use super::background::{TaskOutputTool, TaskStopTool};
use super::bash::BashTool;
use super::edit::EditTool;
use super::glob::GlobTool;
use super::grep::GrepTool;
use super::notebook::NotebookEditTool;
use super::read::ReadTool;
use super::todo::TodoWriteTool;
use super::write::WriteTool;
use super::{Tool, ToolSource};
use crate::config::DEFAULT_MAX_FILE_BYTES;
use crate::sandbox::Sandbox;
use crate::store::DynStore;
use crate::workspace::Workspace;

/// Bash, Read, Write, Edit, Glob, Grep, NotebookEdit, TaskOutput and
/// TaskStop, in that (stable) order, then TodoWrite when a store keeps the
/// lists and AskUserQuestion when turns can ask a person.
#[derive(Clone)]
pub struct BuiltinTools {
    tools: Vec<Arc<dyn Tool>>,
}

impl BuiltinTools {
    /// The built-ins with Bash commands unconfined (tests, and `tools.sandbox: off`).
    pub fn new() -> Self {
        Self::with_sandbox(Sandbox::off(), DEFAULT_MAX_FILE_BYTES)
    }

    /// The built-ins with Bash commands started through `sandbox`; Write
    /// and Edit refuse files over `max_file_bytes`.
    pub fn with_sandbox(sandbox: Sandbox, max_file_bytes: u64) -> Self {
        Self {
            tools: vec![
                Arc::new(BashTool::new(sandbox)),
                Arc::new(ReadTool),
                Arc::new(WriteTool::new(max_file_bytes)),
                Arc::new(EditTool::new(max_file_bytes)),
                Arc::new(GlobTool),
                Arc::new(GrepTool),
                Arc::new(NotebookEditTool::new(max_file_bytes)),
                Arc::new(TaskOutputTool),
                Arc::new(TaskStopTool),
            ],
        }
    }

    /// Adds AskUserQuestion, for sessions whose turns have a person to ask.
    pub fn with_questions(mut self) -> Self {
        self.tools.push(Arc::new(AskUserQuestionTool));
        self
    }

    /// Adds TodoWrite, keeping each session's list in `store`.
    pub fn with_todos(mut self, store: DynStore) -> Self {
        self.tools.push(Arc::new(TodoWriteTool::new(store)));
        self
    }
}

impl Default for BuiltinTools {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl ToolSource for BuiltinTools {
    async fn tools(&self, _workspace: &Workspace) -> Vec<Arc<dyn Tool>> {
        self.tools.clone()
    }
}
