//! The tools compiled into the service, offered to every session as one
//! `ToolSource` next to skills and MCP servers.

use std::sync::Arc;

use async_trait::async_trait;

use super::bash::BashTool;
use super::edit::EditTool;
use super::glob::GlobTool;
use super::grep::GrepTool;
use super::read::ReadTool;
use super::write::WriteTool;
use super::{Tool, ToolSource};
use crate::sandbox::Sandbox;
use crate::workspace::Workspace;

/// Bash, Read, Write, Edit, Glob and Grep, in that (stable) order.
#[derive(Clone)]
pub struct BuiltinTools {
    tools: Vec<Arc<dyn Tool>>,
}

impl BuiltinTools {
    /// The built-ins with Bash commands unconfined (tests, and `tools.sandbox: off`).
    pub fn new() -> Self {
        Self::with_sandbox(Sandbox::off())
    }

    /// The built-ins with Bash commands started through `sandbox`.
    pub fn with_sandbox(sandbox: Sandbox) -> Self {
        Self {
            tools: vec![
                Arc::new(BashTool::new(sandbox)),
                Arc::new(ReadTool),
                Arc::new(WriteTool),
                Arc::new(EditTool),
                Arc::new(GlobTool),
                Arc::new(GrepTool),
            ],
        }
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
