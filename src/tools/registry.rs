//! The per-turn tool set: every source's tools gathered for a workspace,
//! filtered by the session's policy, and the one door tool calls go through.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use serde_json::Value;

use super::builtin::BuiltinTools;
use super::policy::ToolPolicy;
use super::{Tool, ToolContext, ToolOutput, ToolSource, definition};
use crate::workspace::Workspace;

/// Where tools come from: built-ins, skills, MCP servers. Sources are asked
/// in order; when two supply the same name the earlier one wins, so a
/// skill or MCP tool cannot shadow a built-in.
#[derive(Clone, Default)]
pub struct ToolRegistry {
    sources: Vec<Arc<dyn ToolSource>>,
}

impl ToolRegistry {
    pub fn new(sources: Vec<Arc<dyn ToolSource>>) -> Self {
        Self { sources }
    }

    /// A registry with only the built-in tools, Bash unconfined.
    pub fn with_builtins() -> Self {
        Self::new(vec![Arc::new(BuiltinTools::new())])
    }

    /// A registry with only `builtins`.
    pub fn with_builtin_tools(builtins: BuiltinTools) -> Self {
        Self::new(vec![Arc::new(builtins)])
    }

    /// Adds a source after the existing ones.
    pub fn with_source(mut self, source: Arc<dyn ToolSource>) -> Self {
        self.sources.push(source);
        self
    }

    /// The tools a turn may use in `workspace` under `policy`.
    pub async fn tool_set(&self, workspace: &Workspace, policy: &ToolPolicy) -> ToolSet {
        let mut tools: Vec<Arc<dyn Tool>> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for source in &self.sources {
            for tool in source.tools(workspace).await {
                if seen.insert(tool.name().to_owned()) {
                    tools.push(tool);
                } else {
                    tracing::warn!(tool = tool.name(), "duplicate tool name ignored");
                }
            }
        }
        ToolSet::new(tools, policy.clone())
    }
}

/// The tools of one turn. Cheap to clone; shared by the turn loop and any
/// concurrent tool calls.
#[derive(Clone)]
pub struct ToolSet {
    inner: Arc<ToolSetInner>,
}

struct ToolSetInner {
    /// Every tool the sources supplied, offered or not, by name: a call to a
    /// hidden tool gets an explanation rather than "no such tool".
    all: HashMap<String, Arc<dyn Tool>>,
    /// Offered tools' definitions, in source order (stable across turns, so
    /// the prompt prefix stays cacheable).
    definitions: Vec<Value>,
    offered: Vec<String>,
    policy: ToolPolicy,
}

impl ToolSet {
    /// A set over `tools` (already de-duplicated) filtered by `policy`.
    pub fn new(tools: Vec<Arc<dyn Tool>>, policy: ToolPolicy) -> Self {
        let offered_tools: Vec<&Arc<dyn Tool>> =
            tools.iter().filter(|t| policy.offers(t.as_ref())).collect();
        let definitions = offered_tools
            .iter()
            .map(|t| definition(t.as_ref()))
            .collect();
        let offered = offered_tools.iter().map(|t| t.name().to_owned()).collect();
        let all = tools
            .iter()
            .map(|t| (t.name().to_owned(), Arc::clone(t)))
            .collect();
        Self {
            inner: Arc::new(ToolSetInner {
                all,
                definitions,
                offered,
                policy,
            }),
        }
    }

    /// The definitions to send to the model: offered tools only.
    pub fn definitions(&self) -> Vec<Value> {
        self.inner.definitions.clone()
    }

    /// Names of the offered tools, in definition order.
    pub fn names(&self) -> &[String] {
        &self.inner.offered
    }

    pub fn policy(&self) -> &ToolPolicy {
        &self.inner.policy
    }

    /// Runs a tool call from the model. Every refusal and failure, a panic
    /// inside a tool included, is an `is_error` result, never an `Err`.
    pub async fn run(&self, name: &str, input: Value, ctx: &ToolContext) -> ToolOutput {
        let Some(tool) = self.inner.all.get(name) else {
            return ToolOutput::error(format!("No such tool available: {name}"));
        };
        let policy = &self.inner.policy;
        if !policy.offers(tool.as_ref()) {
            return ToolOutput::error(match policy.check_run(tool.as_ref()) {
                Err(why) => why,
                Ok(()) => format!("No such tool available: {name}"),
            });
        }
        if let Err(why) = policy.check_run(tool.as_ref()) {
            return ToolOutput::error(why);
        }
        let summary = input_summary(&input);
        let started = std::time::Instant::now();
        let output = match AssertUnwindSafe(tool.call(input, ctx)).catch_unwind().await {
            Ok(output) => output,
            Err(_) => {
                tracing::error!(tool = name, "tool panicked");
                ToolOutput::error(format!("The tool {name} failed unexpectedly."))
            }
        };
        // One line per call says what the agent did; never file contents or
        // output, only what it acted on.
        tracing::info!(
            tool = name,
            input = %summary,
            outcome = if output.is_error { "error" } else { "ok" },
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "tool call"
        );
        output
    }
}

/// Longest input summary in the tool-call log line.
const SUMMARY_CHARS: usize = 120;

/// What a call acted on, for the log: the command's first line, or the
/// path, pattern, URL or query it was given, cut short.
fn input_summary(input: &Value) -> String {
    const KEYS: [&str; 8] = [
        "command",
        "file_path",
        "notebook_path",
        "path",
        "pattern",
        "url",
        "query",
        "skill",
    ];
    let Some(text) = KEYS
        .iter()
        .find_map(|k| input.get(*k).and_then(Value::as_str))
    else {
        return String::new();
    };
    let first = text.lines().next().unwrap_or("");
    let mut cut: String = first.chars().take(SUMMARY_CHARS).collect();
    if cut.len() < first.len() || text.lines().nth(1).is_some() {
        cut.push_str(" …");
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::policy::PermissionMode;
    use async_trait::async_trait;
    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    /// A tool that records nothing and says its name, for policy tests.
    struct Fake {
        name: &'static str,
        read_only: bool,
    }

    #[async_trait]
    impl Tool for Fake {
        fn name(&self) -> &str {
            self.name
        }
        fn description(&self) -> String {
            format!("fake {}", self.name)
        }
        fn input_schema(&self) -> Value {
            json!({"type": "object"})
        }
        fn read_only(&self) -> bool {
            self.read_only
        }
        async fn call(&self, _input: Value, _ctx: &ToolContext) -> ToolOutput {
            if self.name == "mcp__boom__panic" {
                panic!("boom");
            }
            ToolOutput::ok(format!("ran {}", self.name))
        }
    }

    struct FakeMcp;

    #[async_trait]
    impl ToolSource for FakeMcp {
        async fn tools(&self, _workspace: &Workspace) -> Vec<Arc<dyn Tool>> {
            vec![
                Arc::new(Fake {
                    name: "mcp__fs__read",
                    read_only: true,
                }),
                Arc::new(Fake {
                    name: "mcp__fs__delete",
                    read_only: false,
                }),
                Arc::new(Fake {
                    name: "mcp__web__fetch",
                    read_only: false,
                }),
                Arc::new(Fake {
                    name: "mcp__boom__panic",
                    read_only: false,
                }),
                // Shadowing a built-in must not work.
                Arc::new(Fake {
                    name: "Read",
                    read_only: false,
                }),
            ]
        }
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        ctx: ToolContext,
        registry: ToolRegistry,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f.txt"), "hello\n").unwrap();
        let ctx = ToolContext::new(Workspace::at(tmp.path()).unwrap(), CancellationToken::new());
        let registry = ToolRegistry::with_builtins().with_source(Arc::new(FakeMcp));
        Fixture {
            _tmp: tmp,
            ctx,
            registry,
        }
    }

    async fn set(f: &Fixture, policy: ToolPolicy) -> ToolSet {
        f.registry.tool_set(&f.ctx.workspace, &policy).await
    }

    fn names(set: &ToolSet) -> Vec<String> {
        set.definitions()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect()
    }

    const BUILTINS: [&str; 7] = [
        "Bash",
        "Read",
        "Write",
        "Edit",
        "Glob",
        "Grep",
        "NotebookEdit",
    ];

    #[test]
    fn the_log_summary_is_the_first_line_of_what_a_call_acted_on() {
        assert_eq!(
            input_summary(&json!({"command": "ls -la\nrm x"})),
            "ls -la …"
        );
        assert_eq!(
            input_summary(&json!({"file_path": "src/main.rs", "content": "secret"})),
            "src/main.rs"
        );
        assert_eq!(input_summary(&json!({"content": "only content"})), "");
        let long = "x".repeat(500);
        let cut = input_summary(&json!({"pattern": long}));
        assert_eq!(cut.chars().count(), SUMMARY_CHARS + 2);
    }

    #[tokio::test]
    async fn bypass_and_accept_edits_offer_and_run_everything_allowed() {
        let f = fixture();
        for mode in [
            PermissionMode::BypassPermissions,
            PermissionMode::AcceptEdits,
        ] {
            let tools = set(&f, ToolPolicy::new(mode)).await;
            let mut expected: Vec<String> = BUILTINS.iter().map(|s| s.to_string()).collect();
            expected.extend(
                [
                    "mcp__fs__read",
                    "mcp__fs__delete",
                    "mcp__web__fetch",
                    "mcp__boom__panic",
                ]
                .map(String::from),
            );
            assert_eq!(names(&tools), expected);
            let out = tools
                .run(
                    "Write",
                    json!({"file_path": "w.txt", "content": "x"}),
                    &f.ctx,
                )
                .await;
            assert!(!out.is_error, "{out:?}");
            let out = tools.run("mcp__fs__delete", json!({}), &f.ctx).await;
            assert_eq!(out, ToolOutput::ok("ran mcp__fs__delete"));
        }
    }

    #[tokio::test]
    async fn default_mode_offers_all_but_runs_only_read_only() {
        let f = fixture();
        let tools = set(&f, ToolPolicy::new(PermissionMode::Default)).await;
        assert!(names(&tools).contains(&"Bash".to_owned()));
        let out = tools
            .run("Bash", json!({"command": "touch made"}), &f.ctx)
            .await;
        assert!(out.is_error, "{out:?}");
        assert!(out.content.contains("permission mode (default)"), "{out:?}");
        assert!(out.content.contains("acceptEdits"), "{out:?}");
        assert!(!f.ctx.workspace.cwd().join("made").exists());
        let out = tools
            .run(
                "Write",
                json!({"file_path": "w.txt", "content": "x"}),
                &f.ctx,
            )
            .await;
        assert!(out.is_error);
        assert!(!f.ctx.workspace.cwd().join("w.txt").exists());
        let out = tools
            .run("Read", json!({"file_path": "f.txt"}), &f.ctx)
            .await;
        assert_eq!(out, ToolOutput::ok("     1\thello\n"));
        let out = tools.run("mcp__fs__read", json!({}), &f.ctx).await;
        assert!(!out.is_error);
    }

    #[tokio::test]
    async fn plan_mode_offers_read_only_tools_only() {
        let f = fixture();
        let tools = set(&f, ToolPolicy::new(PermissionMode::Plan)).await;
        assert_eq!(names(&tools), ["Read", "Glob", "Grep", "mcp__fs__read"]);
        let out = tools.run("Edit", json!({}), &f.ctx).await;
        assert!(out.is_error && out.content.contains("plan mode"), "{out:?}");
        let out = tools.run("Glob", json!({"pattern": "*.txt"}), &f.ctx).await;
        assert!(!out.is_error && out.content.contains("f.txt"), "{out:?}");
    }

    #[tokio::test]
    async fn disallowed_tools_are_neither_offered_nor_run() {
        let f = fixture();
        let policy = ToolPolicy {
            allowed_tools: vec![],
            disallowed_tools: vec!["Bash(rm:*)".into(), "mcp__fs".into()],
            mode: PermissionMode::BypassPermissions,
        };
        let tools = set(&f, policy).await;
        let offered = names(&tools);
        assert!(
            !offered
                .iter()
                .any(|n| n == "Bash" || n.starts_with("mcp__fs__"))
        );
        assert!(offered.contains(&"mcp__web__fetch".to_owned()));
        let out = tools
            .run("Bash", json!({"command": "touch made"}), &f.ctx)
            .await;
        assert!(
            out.is_error && out.content.contains("not allowed"),
            "{out:?}"
        );
        assert!(!f.ctx.workspace.cwd().join("made").exists());
        let out = tools.run("mcp__fs__delete", json!({}), &f.ctx).await;
        assert!(out.is_error, "{out:?}");
    }

    #[tokio::test]
    async fn allow_list_with_server_prefix_and_specifier() {
        let f = fixture();
        let policy = ToolPolicy {
            allowed_tools: vec!["Read".into(), "Bash(git:*)".into(), "mcp__fs".into()],
            disallowed_tools: vec![],
            mode: PermissionMode::AcceptEdits,
        };
        let tools = set(&f, policy).await;
        assert_eq!(
            names(&tools),
            ["Bash", "Read", "mcp__fs__read", "mcp__fs__delete"]
        );
        let out = tools.run("Write", json!({}), &f.ctx).await;
        assert!(
            out.is_error && out.content.contains("not allowed"),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn unknown_tools_and_panics_are_error_results() {
        let f = fixture();
        let tools = set(&f, ToolPolicy::new(PermissionMode::BypassPermissions)).await;
        let out = tools.run("Teleport", json!({}), &f.ctx).await;
        assert_eq!(out, ToolOutput::error("No such tool available: Teleport"));
        let out = tools.run("mcp__boom__panic", json!({}), &f.ctx).await;
        assert!(out.is_error && out.content.contains("failed unexpectedly"));
        // The built-in Read kept its place over the source that tried to shadow it.
        let out = tools
            .run("Read", json!({"file_path": "f.txt"}), &f.ctx)
            .await;
        assert_eq!(out, ToolOutput::ok("     1\thello\n"));
        let clone = tools.clone();
        assert_eq!(clone.definitions(), tools.definitions());
    }
}
