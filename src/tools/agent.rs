//! `Agent` (formerly `Task`): hands a task to a subagent with a fresh
//! context and its own tools; the subagent's final answer is the result.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolOutput, ToolSource};
use crate::agent::subagents::{AgentSources, Definition, GENERAL_PURPOSE};
use crate::workspace::Workspace;

/// The tool's name; subagents are never offered it.
pub const NAME: &str = "Agent";

/// One subagent to run: its type, its task and the model the call asked for.
#[derive(Debug, Clone)]
pub struct SubagentCall {
    pub definition: Definition,
    pub description: String,
    pub prompt: String,
    pub model: Option<String>,
}

/// Runs subagents for the turn that owns the tool context: the turn loop
/// implements it, so a subagent shares the turn's limits and its stream.
#[async_trait]
pub trait SubagentRunner: Send + Sync {
    async fn run(&self, call: SubagentCall, ctx: &ToolContext) -> ToolOutput;
}

/// Supplies `Agent`, with the types the session's directory defines.
pub struct AgentTools {
    sources: AgentSources,
}

impl AgentTools {
    pub fn new(settings: &crate::config::Settings) -> Self {
        Self {
            sources: AgentSources::from_settings(settings),
        }
    }
}

#[async_trait]
impl ToolSource for AgentTools {
    async fn tools(&self, workspace: &Workspace) -> Vec<Arc<dyn Tool>> {
        let sources = self.sources.clone();
        let ws = workspace.clone();
        // Definition files are read from disk; keep that off the workers.
        let types = match tokio::task::spawn_blocking(move || sources.discover(&ws)).await {
            Ok(types) => types,
            Err(e) => {
                tracing::error!(error = %e, "reading subagent definitions failed");
                let general = Definition::general_purpose();
                BTreeMap::from([(general.name.clone(), general)])
            }
        };
        vec![Arc::new(AgentTool { types })]
    }
}

struct AgentTool {
    types: BTreeMap<String, Definition>,
}

impl AgentTool {
    fn type_names(&self) -> String {
        self.types.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn text_field(input: &Value, key: &str) -> Result<String, ToolOutput> {
    match input.get(key) {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text.clone()),
        _ => Err(ToolOutput::error(format!(
            "`{key}` is required and must be a non-empty string."
        ))),
    }
}

#[async_trait]
impl Tool for AgentTool {
    fn name(&self) -> &str {
        NAME
    }

    fn description(&self) -> String {
        let mut text = String::from(
            "Hands a self-contained task to a subagent: a separate agent that starts with an \
             empty context, works in the same directory with its own tools, and returns one \
             final report as this call's result. Use it for broad searches or research that \
             would fill your own context, or for independent pieces of work; several calls in \
             one reply run at the same time. Write `prompt` so it stands alone (the subagent \
             sees none of this conversation) and say what the report should contain. A \
             subagent cannot start subagents of its own.\n\nSubagent types (`subagent_type`):",
        );
        for definition in self.types.values() {
            text.push_str(&format!(
                "\n- {}: {}",
                definition.name, definition.description
            ));
        }
        text
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "description": {
                    "type": "string",
                    "description": "What the subagent will do, in three to five words."
                },
                "prompt": {
                    "type": "string",
                    "description": "The task, complete in itself."
                },
                "subagent_type": {
                    "type": "string",
                    "description": format!("Which kind of subagent to start (default {GENERAL_PURPOSE}).")
                },
                "model": {
                    "type": "string",
                    "enum": ["sonnet", "opus", "haiku"],
                    "description": "A model for this subagent; by default its type's, else yours."
                }
            },
            "required": ["description", "prompt"]
        })
    }

    /// Starting a subagent changes nothing itself: each of its own tool
    /// calls is checked against the session's rules as the parent's are.
    fn read_only(&self) -> bool {
        true
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let description = match text_field(&input, "description") {
            Ok(text) => text,
            Err(refusal) => return refusal,
        };
        let prompt = match text_field(&input, "prompt") {
            Ok(text) => text,
            Err(refusal) => return refusal,
        };
        let kind = input
            .get("subagent_type")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .unwrap_or(GENERAL_PURPOSE);
        let Some(definition) = self.types.get(kind) else {
            return ToolOutput::error(format!(
                "There is no subagent type '{kind}'. Available types: {}.",
                self.type_names()
            ));
        };
        let Some(runner) = ctx.subagents.clone() else {
            return ToolOutput::error("Subagents cannot start subagents of their own.");
        };
        let call = SubagentCall {
            definition: definition.clone(),
            description,
            prompt,
            model: input
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        runner.run(call, ctx).await
    }
}
