//! The per-turn tool set: every source's tools gathered for a workspace,
//! filtered by the turn's permissions, and the one door tool calls go through.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use serde_json::Value;

use super::builtin::BuiltinTools;
use super::person::Ask;
use super::policy::PermissionMode;
use super::policy::ToolPolicy;
use super::{Tool, ToolContext, ToolOutput, ToolSource, definition};
use crate::hooks::{HookDecision, Hooks, ToolEvent};
use crate::permissions::rule::{Rule, RuleSource};
use crate::permissions::{Permissions, Verdict};
use crate::store::RequestKind;
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

    /// The tools a turn may use in `workspace` under `policy`, with the
    /// settings files' rules as they are at the start of the turn.
    pub async fn tool_set(&self, workspace: &Workspace, policy: &ToolPolicy) -> ToolSet {
        self.tool_set_granting(workspace, policy, &[]).await
    }

    /// [`ToolRegistry::tool_set`] with `grants` as allow rules for this turn
    /// only (a slash command's `allowed-tools`); deny and ask rules still win.
    pub async fn tool_set_granting(
        &self,
        workspace: &Workspace,
        policy: &ToolPolicy,
        grants: &[String],
    ) -> ToolSet {
        let (mut permissions, hooks) = {
            let policy = policy.clone();
            let ws = workspace.clone();
            // Settings files are read from disk; keep that off the workers.
            match tokio::task::spawn_blocking(move || policy.for_turn(&ws)).await {
                Ok(turn) => turn,
                Err(e) => {
                    tracing::error!(error = %e, "reading the settings files failed");
                    // Without the files' deny rules nothing may run unchecked.
                    let plan = crate::tools::PermissionMode::Plan;
                    (Permissions::new(plan, workspace, None), Hooks::default())
                }
            }
        };
        permissions.add(grants.iter().filter_map(|text| {
            Rule::parse(text, RuleSource::Command)
                .map_err(|e| tracing::warn!(error = %e, "slash command rule ignored"))
                .ok()
        }));
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
        ToolSet::with_hooks(tools, permissions, hooks)
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
    permissions: Permissions,
    hooks: Hooks,
}

impl ToolSet {
    /// A set over `tools` (already de-duplicated) filtered by `permissions`.
    pub fn new(tools: Vec<Arc<dyn Tool>>, permissions: Permissions) -> Self {
        Self::with_hooks(tools, permissions, Hooks::default())
    }

    /// [`ToolSet::new`], with `PreToolUse` and `PostToolUse` hooks around
    /// each call.
    pub fn with_hooks(tools: Vec<Arc<dyn Tool>>, permissions: Permissions, hooks: Hooks) -> Self {
        let offered_tools: Vec<&Arc<dyn Tool>> = tools
            .iter()
            .filter(|t| permissions.offers(t.as_ref()))
            .collect();
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
                permissions,
                hooks,
            }),
        }
    }

    /// The same set with only the tools `keep` accepts, under the same
    /// rules and hooks (a subagent's narrower set).
    pub fn only(&self, keep: impl Fn(&str) -> bool) -> ToolSet {
        let mut tools: Vec<Arc<dyn Tool>> = self
            .inner
            .all
            .values()
            .filter(|t| keep(t.name()))
            .cloned()
            .collect();
        // `all` is unordered; offered definitions keep the set's order.
        let rank = |name: &str| {
            self.inner
                .offered
                .iter()
                .position(|n| n == name)
                .unwrap_or(usize::MAX)
        };
        tools.sort_by_key(|t| rank(t.name()));
        ToolSet::with_hooks(
            tools,
            self.inner.permissions.clone(),
            self.inner.hooks.clone(),
        )
    }

    /// The definitions to send to the model: offered tools only.
    pub fn definitions(&self) -> Vec<Value> {
        self.inner.definitions.clone()
    }

    /// Names of the offered tools, in definition order.
    pub fn names(&self) -> &[String] {
        &self.inner.offered
    }

    /// Whether calls to `name` may run side by side with other such calls
    /// of one reply; unknown names may not.
    pub fn runs_alongside(&self, name: &str) -> bool {
        self.inner
            .all
            .get(name)
            .is_some_and(|tool| tool.runs_alongside())
    }

    /// The rules and mode this turn's calls are checked against.
    pub fn permissions(&self) -> &Permissions {
        &self.inner.permissions
    }

    /// This turn's hooks; the turn loop runs `UserPromptSubmit` and `Stop`.
    pub fn hooks(&self) -> &Hooks {
        &self.inner.hooks
    }

    /// Runs a tool call from the model. Every refusal and failure, a panic
    /// inside a tool included, is an `is_error` result, never an `Err`.
    pub async fn run(&self, name: &str, input: Value, ctx: &ToolContext) -> ToolOutput {
        let Some(tool) = self.inner.all.get(name) else {
            return ToolOutput::error(format!("No such tool available: {name}"));
        };
        let summary = input_summary(&input);
        let refused = |why: String| {
            tracing::info!(tool = name, input = %summary, outcome = "refused", "tool call");
            ToolOutput::error(why)
        };
        let permissions = &self.inner.permissions;
        if let Some(why) = permissions.hidden(tool.as_ref()) {
            return refused(why);
        }
        let mode = permissions.mode();
        let hooks = &self.inner.hooks;
        let pre = hooks
            .pre_tool_use(&ToolEvent {
                tool: name,
                input: &input,
                mode,
                workspace: &ctx.workspace,
                cancel: &ctx.cancel,
            })
            .await;
        let mut hook_ask = None;
        let approved = match pre.decision {
            Some(HookDecision::Deny(reason)) => {
                return refused(format!(
                    "A PreToolUse hook blocked this call: {reason}. The call was not run."
                ));
            }
            Some(HookDecision::Ask(reason)) => {
                hook_ask = Some(reason);
                false
            }
            Some(HookDecision::Allow) => true,
            None => false,
        };
        let input = pre.updated_input.unwrap_or(input);
        // Rules a person gave earlier in the session approve like any allow rule.
        let remembered = ctx
            .person
            .as_ref()
            .map(|p| p.remembered())
            .unwrap_or_default();
        let with_remembered;
        let permissions = if remembered.is_empty() {
            permissions
        } else {
            let mut more = permissions.clone();
            more.add(remembered);
            with_remembered = more;
            &with_remembered
        };
        let verdict = match hook_ask {
            Some(reason) => match permissions.denied(tool.as_ref(), &input, &ctx.workspace) {
                Some(why) => Verdict::Refuse(why),
                None if mode == PermissionMode::DontAsk => Verdict::Refuse(format!(
                    "Permission denied: a PreToolUse hook asks for a person's approval, and the \
                     session's permission mode is {mode}, which never asks. The call was not run."
                )),
                None => {
                    let shown = if reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({reason})")
                    };
                    Verdict::Ask {
                        reason: format!("a PreToolUse hook asks for approval{shown}"),
                        refusal: format!(
                            "This call needs a person's approval: a PreToolUse hook asks for it{shown}. \
                             No person approved it, so the call was not run."
                        ),
                    }
                }
            },
            None => permissions.verdict(tool.as_ref(), &input, &ctx.workspace, approved),
        };
        let input = match verdict {
            Verdict::Run => input,
            Verdict::Refuse(why) => return refused(why),
            Verdict::Ask { reason, refusal } => {
                let Some(person) = &ctx.person else {
                    return refused(refusal);
                };
                let answer = person
                    .ask(Ask {
                        kind: RequestKind::Permission,
                        tool_use_id: &ctx.call_id,
                        tool_name: name,
                        tool_input: &input,
                        reason: &reason,
                        refusal: &refusal,
                    })
                    .await;
                if !answer.allow {
                    return refused(answer.refusal);
                }
                let input = answer.updated_input.unwrap_or(input);
                // A person approves past the mode and ask rules, never past a deny rule.
                if let Some(why) = permissions.denied(tool.as_ref(), &input, &ctx.workspace) {
                    return refused(why);
                }
                input
            }
        };
        let hook_input = (!hooks.is_empty()).then(|| input.clone());
        let started = std::time::Instant::now();
        let output = match AssertUnwindSafe(tool.call(input, ctx)).catch_unwind().await {
            Ok(output) => output,
            Err(_) => {
                tracing::error!(tool = name, "tool panicked");
                ToolOutput::error(format!("The tool {name} failed unexpectedly."))
            }
        };
        let mut output = output;
        if let Some(input) = hook_input {
            let event = ToolEvent {
                tool: name,
                input: &input,
                mode,
                workspace: &ctx.workspace,
                cancel: &ctx.cancel,
            };
            let (mut notes, replaced) = hooks.post_tool_use(&event, &output).await;
            if let Some(replaced) = replaced {
                output.content = replaced;
            }
            notes.splice(0..0, pre.context);
            for note in notes {
                output.content.push_str(&format!("\n\n[hook] {note}"));
            }
        }
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
    let first = redact(text.lines().next().unwrap_or(""));
    let first = first.as_str();
    let mut cut: String = first.chars().take(SUMMARY_CHARS).collect();
    if cut.len() < first.len() || text.lines().nth(1).is_some() {
        cut.push_str(" …");
    }
    cut
}

/// Hides what looks like a secret in a command line before it is logged:
/// values of variables named like keys, tokens and passwords, bearer
/// tokens and API-key headers, and passwords in URLs.
fn redact(line: &str) -> String {
    const SECRET_NAMES: [&str; 7] = [
        "KEY",
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "AUTH",
        "CREDENTIAL",
    ];
    let mut out = Vec::new();
    let mut hide_next = false;
    for word in line.split(' ') {
        if hide_next && !word.is_empty() {
            out.push("***".to_owned());
            hide_next = false;
            continue;
        }
        let lower = word.to_ascii_lowercase();
        if lower.ends_with("bearer") || lower.ends_with("api-key:") || lower.ends_with("token:") {
            hide_next = true;
            out.push(word.to_owned());
            continue;
        }
        let bare = word.trim_start_matches(['-', '\'', '"']);
        if let Some((name, _)) = bare.split_once('=')
            && !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            && SECRET_NAMES
                .iter()
                .any(|secret| name.to_ascii_uppercase().contains(secret))
        {
            let keep = word.len() - bare.len() + name.len() + 1;
            out.push(format!("{}***", &word[..keep]));
            continue;
        }
        if let Some(at) = word.find('@')
            && let Some(scheme) = word.find("://")
            && scheme < at
            && let Some(colon) = word[scheme + 3..at].find(':')
        {
            let colon = scheme + 3 + colon;
            out.push(format!("{}:***{}", &word[..colon], &word[at..]));
            continue;
        }
        out.push(word.to_owned());
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::Behavior;

    #[test]
    fn logged_command_lines_hide_what_looks_like_a_secret() {
        assert_eq!(
            redact("GITHUB_TOKEN=ghp_abc make deploy --api_key=sk-1 user=bob"),
            "GITHUB_TOKEN=*** make deploy --api_key=*** user=bob"
        );
        assert_eq!(
            redact("curl -H 'Authorization: Bearer abc.def' https://u:pw@example.com/x"),
            "curl -H 'Authorization: Bearer *** https://u:***@example.com/x"
        );
        assert_eq!(redact("ls -la src"), "ls -la src");
    }
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

    const BUILTINS: [&str; 9] = [
        "Bash",
        "Read",
        "Write",
        "Edit",
        "Glob",
        "Grep",
        "NotebookEdit",
        "TaskOutput",
        "TaskStop",
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
        assert!(
            out.content.contains("permission mode is default"),
            "{out:?}"
        );
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
        assert_eq!(
            names(&tools),
            ["Read", "Glob", "Grep", "TaskOutput", "mcp__fs__read"]
        );
        let out = tools.run("Edit", json!({}), &f.ctx).await;
        assert!(out.is_error && out.content.contains("plan mode"), "{out:?}");
        let out = tools.run("Glob", json!({"pattern": "*.txt"}), &f.ctx).await;
        assert!(!out.is_error && out.content.contains("f.txt"), "{out:?}");
    }

    #[tokio::test]
    async fn a_bare_deny_hides_a_tool_and_a_scoped_one_refuses_matching_calls() {
        let f = fixture();
        let policy = ToolPolicy::new(PermissionMode::BypassPermissions)
            .with_rules(Behavior::Deny, &["Bash(rm:*)", "mcp__fs"]);
        let tools = set(&f, policy).await;
        let offered = names(&tools);
        assert!(offered.contains(&"Bash".to_owned()), "{offered:?}");
        assert!(
            !offered.iter().any(|n| n.starts_with("mcp__fs__")),
            "{offered:?}"
        );
        assert!(offered.contains(&"mcp__web__fetch".to_owned()));
        std::fs::write(f.ctx.workspace.cwd().join("x"), "keep").unwrap();
        let out = tools
            .run("Bash", json!({"command": "touch made && rm x"}), &f.ctx)
            .await;
        assert!(
            out.is_error && out.content.contains("`Bash(rm:*)`"),
            "{out:?}"
        );
        assert!(out.content.contains("defaults.disallowed_tools"), "{out:?}");
        assert!(!f.ctx.workspace.cwd().join("made").exists());
        assert!(f.ctx.workspace.cwd().join("x").exists());
        let out = tools
            .run("Bash", json!({"command": "touch made"}), &f.ctx)
            .await;
        assert!(!out.is_error, "{out:?}");
        assert!(f.ctx.workspace.cwd().join("made").exists());
        let out = tools.run("mcp__fs__delete", json!({}), &f.ctx).await;
        assert!(
            out.is_error && out.content.contains("the deny rule `mcp__fs`"),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn allow_list_with_server_prefix_and_specifier() {
        let f = fixture();
        let policy = ToolPolicy::new(PermissionMode::AcceptEdits)
            .with_rules(Behavior::Allow, &["Read", "Bash(git:*)", "mcp__fs"]);
        let tools = set(&f, policy).await;
        assert_eq!(
            names(&tools),
            [
                "Bash",
                "Read",
                "Glob",
                "Grep",
                "mcp__fs__read",
                "mcp__fs__delete"
            ]
        );
        let out = tools.run("Write", json!({}), &f.ctx).await;
        assert!(
            out.is_error && out.content.contains("does not list it"),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn allow_rules_approve_calls_the_default_mode_would_refuse() {
        let f = fixture();
        let policy = ToolPolicy::new(PermissionMode::Default)
            .with_rules(Behavior::Allow, &["Bash(touch *)", "Edit(notes/**)"]);
        let tools = set(&f, policy).await;
        // The config allow list also limits what is offered.
        assert_eq!(names(&tools), ["Bash", "Write", "Edit", "NotebookEdit"]);
        let cwd = f.ctx.workspace.cwd().to_path_buf();
        let run = |command: &'static str| tools.run("Bash", json!({"command": command}), &f.ctx);
        assert!(!run("touch a").await.is_error);
        assert!(cwd.join("a").exists());
        let out = run("touch b && rm a").await;
        assert!(out.is_error && out.content.contains("`rm a`"), "{out:?}");
        assert!(!cwd.join("b").exists() && cwd.join("a").exists());
        let out = run("touch c > log.txt").await;
        assert!(out.is_error && out.content.contains("`log.txt`"), "{out:?}");
        std::fs::create_dir_all(cwd.join("notes")).unwrap();
        let out = run("touch d > notes/log.txt").await;
        assert!(!out.is_error, "{out:?}");
        assert!(cwd.join("notes/log.txt").exists());
        let out = tools
            .run(
                "Write",
                json!({"file_path": "notes/n.md", "content": "x"}),
                &f.ctx,
            )
            .await;
        assert!(!out.is_error, "{out:?}");
        let out = tools
            .run(
                "Write",
                json!({"file_path": "src/n.md", "content": "x"}),
                &f.ctx,
            )
            .await;
        assert!(
            out.is_error && out.content.contains("Edit(src/n.md)"),
            "{out:?}"
        );
        assert!(!cwd.join("src/n.md").exists());
    }

    #[tokio::test]
    async fn ask_rules_refuse_in_every_mode_and_deny_wins_over_ask() {
        let f = fixture();
        let policy = ToolPolicy::new(PermissionMode::BypassPermissions)
            .with_rules(Behavior::Ask, &["Bash(git push:*)", "Bash(rm *)"])
            .with_rules(Behavior::Deny, &["Bash(rm -rf *)"]);
        let tools = set(&f, policy).await;
        let out = tools
            .run("Bash", json!({"command": "git push origin main"}), &f.ctx)
            .await;
        assert!(out.is_error && out.content.contains("approval"), "{out:?}");
        assert!(out.content.contains("`Bash(git push:*)`"), "{out:?}");
        assert!(out.content.contains("defaults.ask_tools"), "{out:?}");
        let out = tools
            .run("Bash", json!({"command": "rm -rf x"}), &f.ctx)
            .await;
        assert!(
            out.is_error && out.content.contains("the deny rule `Bash(rm -rf *)`"),
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
