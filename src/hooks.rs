//! Claude Code's command hooks from the settings files (`PreToolUse`,
//! `PostToolUse`, `UserPromptSubmit`, `Stop`): run in the Bash sandbox with
//! the event as JSON on stdin, their exit code and output read as Claude
//! Code reads them.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::permissions::{Behavior, Rule, RuleSource};
use crate::sandbox::Sandbox;
use crate::skills::SettingSource;
use crate::tools::bash::{GroupGuard, SUPERVISOR_GRACE, child_env};
use crate::tools::{PermissionMode, ToolOutput};
use crate::workspace::Workspace;

/// A command hook's timeout when it sets none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// `UserPromptSubmit` hooks hold up the answer, so theirs is shorter.
const PROMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// What is kept of a hook's stdout and stderr.
const MAX_OUTPUT_BYTES: usize = 10_000;
/// How many consecutive times `Stop` hooks may keep a turn going.
pub const MAX_STOP_CONTINUATIONS: u32 = 8;

/// The events this service runs hooks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookEvent {
    PreToolUse,
    PostToolUse,
    UserPromptSubmit,
    Stop,
}

impl HookEvent {
    pub const ALL: [HookEvent; 4] = [
        Self::PreToolUse,
        Self::PostToolUse,
        Self::UserPromptSubmit,
        Self::Stop,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreToolUse => "PreToolUse",
            Self::PostToolUse => "PostToolUse",
            Self::UserPromptSubmit => "UserPromptSubmit",
            Self::Stop => "Stop",
        }
    }

    fn on_tools(self) -> bool {
        matches!(self, Self::PreToolUse | Self::PostToolUse)
    }
}

/// Which tools a matcher group is for.
#[derive(Debug, Clone)]
enum Matcher {
    All,
    /// `Bash`, `Edit|Write`, `Read, Grep`.
    Names(Vec<String>),
    /// Anything else is a pattern, unanchored.
    Pattern(regex::Regex),
}

impl Matcher {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() || text == "*" {
            return Ok(Self::All);
        }
        if text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ' ' | ',' | '|'))
        {
            return Ok(Self::Names(
                text.split([',', '|'])
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ));
        }
        regex::Regex::new(text)
            .map(Self::Pattern)
            .map_err(|e| format!("matcher '{text}' is not a valid pattern: {e}"))
    }

    fn matches(&self, tool: &str) -> bool {
        match self {
            Self::All => true,
            Self::Names(names) => names.iter().any(|n| n == tool),
            Self::Pattern(re) => re.is_match(tool),
        }
    }
}

/// One `{"type": "command", ...}` handler.
#[derive(Debug, Clone)]
struct Handler {
    command: String,
    /// Exec form: `command` is the program, run without a shell.
    args: Option<Vec<String>>,
    timeout: Option<Duration>,
    /// `if`: a permission rule the call must match (tool events only).
    condition: Option<Rule>,
}

impl Handler {
    /// What makes two handlers the same one, defined in two files.
    fn identity(&self) -> (String, Option<Vec<String>>) {
        (self.command.clone(), self.args.clone())
    }
}

#[derive(Debug, Clone)]
struct Group {
    event: HookEvent,
    matcher: Matcher,
    handlers: Vec<Handler>,
}

/// The hooks of one turn, with the sandbox their commands run in.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    inner: Arc<HooksInner>,
}

#[derive(Debug, Default)]
struct HooksInner {
    groups: Vec<Group>,
    sandbox: Sandbox,
}

/// A tool call as its hooks see it.
#[derive(Clone, Copy)]
pub struct ToolEvent<'a> {
    pub tool: &'a str,
    pub input: &'a Value,
    pub mode: PermissionMode,
    pub workspace: &'a Workspace,
    pub cancel: &'a CancellationToken,
}

/// What `PreToolUse` hooks decided about a call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PreToolUse {
    pub decision: Option<HookDecision>,
    /// `updatedInput`: the input the call runs with instead.
    pub updated_input: Option<Value>,
    /// Text for the model, next to the tool's result.
    pub context: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookDecision {
    /// Runs without the permission mode's say (deny and ask rules still apply).
    Allow,
    Ask(String),
    Deny(String),
}

/// What `UserPromptSubmit` hooks decided about a prompt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptCheck {
    /// The prompt is dropped; this is for the user, not the model.
    pub blocked: Option<String>,
    /// Text for the model, next to the prompt.
    pub context: Vec<String>,
}

/// How one hook command ended.
#[derive(Debug)]
struct Run {
    /// `None` when it timed out, was interrupted or could not start.
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Stdout as Claude Code's JSON output, when it is one.
    fn json(&self) -> Option<Map<String, Value>> {
        let text = self.stdout.trim_start();
        if !text.starts_with('{') {
            return None;
        }
        match serde_json::from_str(text) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        }
    }

    fn blocked(&self) -> bool {
        self.code == Some(2)
    }
}

impl Hooks {
    /// The sandbox hooks (and other confined side commands) run in.
    pub(crate) fn sandbox(&self) -> &Sandbox {
        &self.inner.sandbox
    }

    /// Reads the `hooks` objects of settings files (lowest precedence
    /// first). What cannot be used is logged and skipped.
    pub fn from_settings<'a>(
        files: impl IntoIterator<Item = (SettingSource, &'a Value)>,
        sandbox: Sandbox,
    ) -> Self {
        let mut groups = Vec::new();
        for (scope, value) in files {
            let (found, problems) = parse(value, scope);
            for problem in problems {
                tracing::warn!(
                    settings = crate::permissions::rule::settings_file(scope),
                    %problem,
                    "hook ignored"
                );
            }
            groups.extend(found);
        }
        Self {
            inner: Arc::new(HooksInner { groups, sandbox }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.inner.groups.is_empty()
    }

    /// The handlers for `event` and `tool`, each once.
    fn handlers(
        &self,
        event: HookEvent,
        tool: Option<(&str, &Value, &Workspace)>,
    ) -> Vec<&Handler> {
        let mut seen = HashSet::new();
        self.inner
            .groups
            .iter()
            .filter(|g| g.event == event)
            .filter(|g| tool.is_none_or(|(name, _, _)| g.matcher.matches(name)))
            .flat_map(|g| &g.handlers)
            .filter(|h| match (&h.condition, tool) {
                (None, _) => true,
                (Some(rule), Some((name, input, ws))) => {
                    crate::permissions::rule_matches(rule, name, input, ws)
                }
                (Some(_), None) => false,
            })
            .filter(|h| seen.insert(h.identity()))
            .collect()
    }

    /// Runs the matching handlers of `event` at once with `input` on stdin.
    async fn run_all(
        &self,
        event: HookEvent,
        handlers: Vec<&Handler>,
        input: &Value,
        workspace: &Workspace,
        cancel: &CancellationToken,
    ) -> Vec<Run> {
        let stdin = input.to_string();
        let runs = handlers.into_iter().map(|h| {
            let timeout = h
                .timeout
                .unwrap_or(if event == HookEvent::UserPromptSubmit {
                    PROMPT_TIMEOUT
                } else {
                    DEFAULT_TIMEOUT
                });
            run_command(&self.inner.sandbox, h, &stdin, timeout, workspace, cancel)
        });
        let runs = futures::future::join_all(runs).await;
        for run in &runs {
            if run.code.is_some_and(|c| c != 0 && c != 2) {
                let first = run.stderr.lines().next().unwrap_or("");
                tracing::warn!(event = event.as_str(), code = ?run.code, stderr = first, "hook failed; going on");
            }
        }
        runs
    }

    /// `PreToolUse`: before a call the permission rules allow to be tried.
    pub async fn pre_tool_use(&self, call: &ToolEvent<'_>) -> PreToolUse {
        let ToolEvent {
            tool,
            input,
            mode,
            workspace,
            cancel,
        } = *call;
        let handlers = self.handlers(HookEvent::PreToolUse, Some((tool, input, workspace)));
        if handlers.is_empty() {
            return PreToolUse::default();
        }
        let event = event_input(HookEvent::PreToolUse, mode, workspace, {
            let mut fields = Map::new();
            fields.insert("tool_name".into(), tool.into());
            fields.insert("tool_input".into(), absolute_paths(input, workspace));
            fields
        });
        let runs = self
            .run_all(HookEvent::PreToolUse, handlers, &event, workspace, cancel)
            .await;
        let mut out = PreToolUse::default();
        let mut decisions = Vec::new();
        for run in &runs {
            let json = run.json();
            if let Some(json) = &json {
                if let Some(reason) = stop_reason(json) {
                    decisions.push(HookDecision::Deny(reason));
                }
                let specific = json.get("hookSpecificOutput").and_then(Value::as_object);
                let reason = specific
                    .and_then(|s| s.get("permissionDecisionReason"))
                    .or_else(|| json.get("reason"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let decision = specific
                    .and_then(|s| s.get("permissionDecision"))
                    .and_then(Value::as_str)
                    .or_else(|| match json.get("decision").and_then(Value::as_str) {
                        Some("approve") => Some("allow"),
                        Some("block") => Some("deny"),
                        _ => None,
                    });
                match decision {
                    Some("allow") => decisions.push(HookDecision::Allow),
                    Some("ask") => decisions.push(HookDecision::Ask(reason.clone())),
                    Some("deny") => decisions.push(HookDecision::Deny(reason.clone())),
                    _ => {}
                }
                if let Some(updated) = specific.and_then(|s| s.get("updatedInput"))
                    && updated.is_object()
                {
                    out.updated_input = Some(updated.clone());
                }
                out.context.extend(additional_context(specific));
            }
            if run.blocked() {
                let reason = if run.stderr.trim().is_empty() {
                    "a PreToolUse hook blocked the call".to_owned()
                } else {
                    run.stderr.trim().to_owned()
                };
                decisions.push(HookDecision::Deny(reason));
            }
        }
        // Across hooks: deny, then ask, then allow.
        out.decision = decisions
            .iter()
            .find(|d| matches!(d, HookDecision::Deny(_)))
            .or_else(|| decisions.iter().find(|d| matches!(d, HookDecision::Ask(_))))
            .or_else(|| decisions.first())
            .cloned();
        out
    }

    /// `PostToolUse`: after a call ran. Returns notes for the model, to go
    /// after the result, and a replacement of the result when a hook gives
    /// one (`updatedToolOutput` as a string).
    pub async fn post_tool_use(
        &self,
        call: &ToolEvent<'_>,
        output: &ToolOutput,
    ) -> (Vec<String>, Option<String>) {
        let ToolEvent {
            tool,
            input,
            mode,
            workspace,
            cancel,
        } = *call;
        let handlers = self.handlers(HookEvent::PostToolUse, Some((tool, input, workspace)));
        if handlers.is_empty() {
            return (Vec::new(), None);
        }
        let event = event_input(HookEvent::PostToolUse, mode, workspace, {
            let mut fields = Map::new();
            fields.insert("tool_name".into(), tool.into());
            fields.insert("tool_input".into(), absolute_paths(input, workspace));
            fields.insert(
                "tool_response".into(),
                json!({"content": output.content, "is_error": output.is_error}),
            );
            fields
        });
        let runs = self
            .run_all(HookEvent::PostToolUse, handlers, &event, workspace, cancel)
            .await;
        let mut notes = Vec::new();
        let mut replaced = None;
        for run in &runs {
            if run.blocked() && !run.stderr.trim().is_empty() {
                notes.push(run.stderr.trim().to_owned());
            }
            let Some(json) = run.json() else { continue };
            if json.get("decision").and_then(Value::as_str) == Some("block") {
                let reason = json.get("reason").and_then(Value::as_str).unwrap_or("");
                notes.push(format!("A PostToolUse hook objected: {reason}"));
            }
            let specific = json.get("hookSpecificOutput").and_then(Value::as_object);
            notes.extend(additional_context(specific));
            if let Some(text) = specific
                .and_then(|s| {
                    s.get("updatedToolOutput")
                        .or_else(|| s.get("updatedMCPToolOutput"))
                })
                .and_then(Value::as_str)
            {
                replaced = Some(text.to_owned());
            }
        }
        (notes, replaced)
    }

    /// `UserPromptSubmit`: before a prompt reaches the model.
    pub async fn user_prompt_submit(
        &self,
        prompt: &str,
        mode: PermissionMode,
        workspace: &Workspace,
        cancel: &CancellationToken,
    ) -> PromptCheck {
        let handlers = self.handlers(HookEvent::UserPromptSubmit, None);
        if handlers.is_empty() {
            return PromptCheck::default();
        }
        let event = event_input(HookEvent::UserPromptSubmit, mode, workspace, {
            let mut fields = Map::new();
            fields.insert("prompt".into(), prompt.into());
            fields
        });
        let runs = self
            .run_all(
                HookEvent::UserPromptSubmit,
                handlers,
                &event,
                workspace,
                cancel,
            )
            .await;
        let mut check = PromptCheck::default();
        for run in &runs {
            if run.blocked() {
                check
                    .blocked
                    .get_or_insert_with(|| run.stderr.trim().to_owned());
                continue;
            }
            match run.json() {
                Some(json) => {
                    if let Some(reason) = stop_reason(&json) {
                        check.blocked.get_or_insert(reason);
                    }
                    if json.get("decision").and_then(Value::as_str) == Some("block") {
                        let reason = json.get("reason").and_then(Value::as_str).unwrap_or("");
                        check.blocked.get_or_insert_with(|| reason.to_owned());
                    }
                    let specific = json.get("hookSpecificOutput").and_then(Value::as_object);
                    check.context.extend(additional_context(specific));
                }
                // Plain output of a successful prompt hook is context.
                None if run.code == Some(0) && !run.stdout.trim().is_empty() => {
                    check.context.push(run.stdout.trim().to_owned());
                }
                None => {}
            }
        }
        check
    }

    /// `Stop`: when the model has answered without calling a tool. A reason
    /// means the turn goes on with it as the next user message (the caller
    /// stops after [`MAX_STOP_CONTINUATIONS`] in a row).
    pub async fn stop(
        &self,
        last_message: &str,
        already_continued: bool,
        mode: PermissionMode,
        workspace: &Workspace,
        cancel: &CancellationToken,
    ) -> Option<String> {
        let handlers = self.handlers(HookEvent::Stop, None);
        if handlers.is_empty() {
            return None;
        }
        let event = event_input(HookEvent::Stop, mode, workspace, {
            let mut fields = Map::new();
            fields.insert("stop_hook_active".into(), already_continued.into());
            fields.insert("last_assistant_message".into(), last_message.into());
            fields
        });
        let runs = self
            .run_all(HookEvent::Stop, handlers, &event, workspace, cancel)
            .await;
        for run in &runs {
            if let Some(json) = run.json() {
                if stop_reason(&json).is_some() {
                    return None;
                }
                if json.get("decision").and_then(Value::as_str) == Some("block")
                    && let Some(reason) = json.get("reason").and_then(Value::as_str)
                {
                    return Some(reason.to_owned());
                }
            }
            if run.blocked() && !run.stderr.trim().is_empty() {
                return Some(run.stderr.trim().to_owned());
            }
        }
        None
    }
}

/// `continue: false`: the hook wants everything to stop.
fn stop_reason(json: &Map<String, Value>) -> Option<String> {
    (json.get("continue") == Some(&Value::Bool(false))).then(|| {
        json.get("stopReason")
            .and_then(Value::as_str)
            .unwrap_or("a hook stopped the turn")
            .to_owned()
    })
}

fn additional_context(specific: Option<&Map<String, Value>>) -> Option<String> {
    specific
        .and_then(|s| s.get("additionalContext"))
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty())
        .map(|t| t.chars().take(MAX_OUTPUT_BYTES).collect())
}

/// The fields every event carries, then the event's own.
fn event_input(
    event: HookEvent,
    mode: PermissionMode,
    workspace: &Workspace,
    fields: Map<String, Value>,
) -> Value {
    let mut input = Map::new();
    input.insert("hook_event_name".into(), event.as_str().into());
    input.insert("cwd".into(), workspace.cwd().display().to_string().into());
    input.insert("permission_mode".into(), mode.as_str().into());
    input.extend(fields);
    Value::Object(input)
}

/// File tools' paths as absolute paths, as hooks expect them.
fn absolute_paths(input: &Value, workspace: &Workspace) -> Value {
    let mut input = input.clone();
    if let Value::Object(map) = &mut input {
        for key in ["file_path", "notebook_path", "path"] {
            if let Some(Value::String(path)) = map.get_mut(key) {
                let absolute = crate::permissions::paths::absolute(workspace.cwd(), path);
                *path = absolute.display().to_string();
            }
        }
    }
    input
}

/// Reads `hooks` of one settings file.
fn parse(value: &Value, scope: SettingSource) -> (Vec<Group>, Vec<String>) {
    let mut problems = Vec::new();
    let mut groups = Vec::new();
    let Value::Object(events) = value else {
        problems.push("`hooks` is not an object".into());
        return (groups, problems);
    };
    for (name, list) in events {
        let Some(event) = HookEvent::ALL.into_iter().find(|e| e.as_str() == name) else {
            problems.push(format!("the {name} event is not supported by this service"));
            continue;
        };
        let Value::Array(list) = list else {
            problems.push(format!("hooks.{name} is not a list"));
            continue;
        };
        for entry in list {
            let Some(entry) = entry.as_object() else {
                problems.push(format!("hooks.{name} holds an entry that is not an object"));
                continue;
            };
            let matcher = match entry.get("matcher") {
                None | Some(Value::Null) => Matcher::All,
                Some(Value::String(text)) if event.on_tools() => match Matcher::parse(text) {
                    Ok(m) => m,
                    Err(e) => {
                        problems.push(e);
                        continue;
                    }
                },
                // A matcher on an event without tools means nothing.
                Some(Value::String(_)) => Matcher::All,
                Some(_) => {
                    problems.push(format!("a hooks.{name} matcher is not a string"));
                    continue;
                }
            };
            let Some(Value::Array(handlers)) = entry.get("hooks") else {
                problems.push(format!("a hooks.{name} entry has no `hooks` list"));
                continue;
            };
            let handlers: Vec<Handler> = handlers
                .iter()
                .filter_map(|h| match handler(h, event, scope) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        problems.push(format!("hooks.{name}: {e}"));
                        None
                    }
                })
                .collect();
            if !handlers.is_empty() {
                groups.push(Group {
                    event,
                    matcher,
                    handlers,
                });
            }
        }
    }
    (groups, problems)
}

fn handler(value: &Value, event: HookEvent, scope: SettingSource) -> Result<Handler, String> {
    let Some(map) = value.as_object() else {
        return Err("a handler is not an object".into());
    };
    match map.get("type").and_then(Value::as_str) {
        Some("command") => {}
        Some(other) => {
            return Err(format!(
                "`{other}` handlers are not supported; only `command`"
            ));
        }
        None => return Err("a handler has no `type`".into()),
    }
    let command = map
        .get("command")
        .and_then(Value::as_str)
        .filter(|c| !c.trim().is_empty())
        .ok_or("a command handler has no `command`")?
        .to_owned();
    if map.get("shell").and_then(Value::as_str) == Some("powershell") {
        return Err("PowerShell hooks are not supported".into());
    }
    let args = match map.get("args") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or("`args` holds something other than strings")?,
        ),
        Some(_) => return Err("`args` is not a list".into()),
    };
    let timeout = match map.get("timeout") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(secs) if secs > 0.0 && secs.is_finite() => Some(Duration::from_secs_f64(secs)),
            _ => return Err("`timeout` is not a positive number of seconds".into()),
        },
    };
    let condition = match map.get("if").and_then(Value::as_str) {
        None => None,
        Some(_) if !event.on_tools() => {
            return Err(format!(
                "`if` applies to tool events only, not {}",
                event.as_str()
            ));
        }
        Some(text) => Some(
            Rule::parse(text, RuleSource::Settings(scope, Behavior::Deny))
                .map_err(|e| format!("`if`: {}", e.problem))?,
        ),
    };
    Ok(Handler {
        command,
        args,
        timeout,
        condition,
    })
}

/// Runs one hook command in the sandbox, in the session's directory,
/// with `stdin`; killed with everything it started at `timeout`.
/// Runs `program` with `args` confined exactly like a Bash command (same
/// sandbox, environment and process-group handling), killed at `timeout`;
/// its stdout when it exits 0.
pub(crate) async fn confined_stdout(
    sandbox: &Sandbox,
    workspace: &Workspace,
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> Option<String> {
    let handler = Handler {
        command: program.to_owned(),
        args: Some(args.iter().map(|a| (*a).to_owned()).collect()),
        timeout: Some(timeout),
        condition: None,
    };
    let cancel = CancellationToken::new();
    let run = run_command(sandbox, &handler, "", timeout, workspace, &cancel).await;
    (run.code == Some(0)).then_some(run.stdout)
}

async fn run_command(
    sandbox: &Sandbox,
    handler: &Handler,
    stdin: &str,
    timeout: Duration,
    workspace: &Workspace,
    cancel: &CancellationToken,
) -> Run {
    let failed = |why: String| Run {
        code: None,
        stdout: String::new(),
        stderr: why,
    };
    let mut cmd = match &handler.args {
        None => {
            let mut cmd = sandbox.command(workspace, "bash");
            cmd.arg("-c").arg(&handler.command);
            cmd
        }
        Some(args) => {
            let mut cmd = sandbox.command(workspace, &handler.command);
            cmd.args(args);
            cmd
        }
    };
    let mut env = child_env(
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        workspace.root(),
        workspace.cwd(),
    );
    match sandbox.temp_dir(workspace) {
        Ok(Some(dir)) => {
            env.retain(|(k, _)| k != "TMPDIR");
            env.push(("TMPDIR".into(), dir.display().to_string()));
        }
        Ok(None) => {}
        Err(e) => return failed(format!("cannot prepare the temporary directory: {e}")),
    }
    env.push((
        "CLAUDE_PROJECT_DIR".into(),
        workspace.cwd().display().to_string(),
    ));
    let supervised = sandbox.is_supervised();
    cmd.current_dir(workspace.cwd())
        .env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(!supervised);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return failed(format!("cannot start the hook: {e}")),
    };
    let Some(pid) = child.id() else {
        return failed("the hook exited before it could be watched".into());
    };
    let group = GroupGuard::new(pid, supervised);
    let (Some(mut input), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return failed("the hook's pipes could not be opened".into());
    };
    let stdin = stdin.to_owned();
    // A hook that never reads its input must not hold us up writing it.
    let writer = tokio::spawn(async move {
        let _ = input.write_all(stdin.as_bytes()).await;
    });
    let finished = async {
        let (out, err, status) =
            tokio::join!(read_capped(stdout), read_capped(stderr), child.wait());
        (out, err, status.ok().and_then(|s| s.code()))
    };
    let outcome = tokio::select! {
        (stdout, stderr, code) = finished => Some((stdout, stderr, code)),
        () = tokio::time::sleep(timeout) => None,
        () = cancel.cancelled() => None,
    };
    writer.abort();
    let run = match outcome {
        Some((stdout, stderr, code)) => Run {
            code,
            stdout,
            stderr,
        },
        None => {
            tracing::warn!(
                command = %handler.command,
                timeout_secs = timeout.as_secs_f64(),
                "hook did not finish in time; killed, the turn goes on"
            );
            group.stop();
            if supervised {
                let _ = tokio::time::timeout(SUPERVISOR_GRACE, child.wait()).await;
            }
            failed(format!(
                "the hook did not finish within {} s and was killed",
                timeout.as_secs_f64()
            ))
        }
    };
    group.kill();
    let _ = child.wait().await;
    group.disarm();
    run
}

/// Reads everything, keeping the first [`MAX_OUTPUT_BYTES`].
async fn read_capped(mut reader: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT_BYTES.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(value: Value) -> Hooks {
        Hooks::from_settings([(SettingSource::Project, &value)], Sandbox::off())
    }

    fn workspace() -> (tempfile::TempDir, Workspace) {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::at(tmp.path()).unwrap();
        (tmp, ws)
    }

    fn command(event: &str, matcher: &str, command: &str) -> Value {
        json!({event: [{"matcher": matcher, "hooks": [{"type": "command", "command": command}]}]})
    }

    #[test]
    fn matchers_are_names_lists_or_patterns() {
        assert!(Matcher::parse("").unwrap().matches("Bash"));
        assert!(Matcher::parse("*").unwrap().matches("mcp__x__y"));
        let list = Matcher::parse("Edit|Write, Read").unwrap();
        assert!(list.matches("Write") && list.matches("Read") && !list.matches("Bash"));
        assert!(
            !Matcher::parse("mcp__memory")
                .unwrap()
                .matches("mcp__memory__save")
        );
        let pattern = Matcher::parse("mcp__memory__.*").unwrap();
        assert!(pattern.matches("mcp__memory__save") && !pattern.matches("Bash"));
        assert!(
            Matcher::parse("Notebook.*")
                .unwrap()
                .matches("NotebookEdit")
        );
        assert!(Matcher::parse("(").is_err());
    }

    #[test]
    fn unsupported_handlers_and_events_are_reported() {
        let (groups, problems) = parse(
            &json!({
                "PreToolUse": [{"matcher": "Bash", "hooks": [
                    {"type": "http", "url": "http://x"},
                    {"type": "command", "command": "true", "timeout": -1},
                    {"type": "command", "command": "true", "if": "Bash("},
                    {"type": "command", "command": "echo ok", "if": "Bash(git *)"}
                ]}],
                "SessionStart": [],
                "Stop": [{"hooks": [{"type": "command", "command": "x", "if": "Bash"}]}]
            }),
            SettingSource::Project,
        );
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].handlers.len(), 1);
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("SessionStart")));
    }

    #[tokio::test]
    async fn exit_code_2_blocks_with_its_stderr_and_json_decides_otherwise() {
        let (_tmp, ws) = workspace();
        let cancel = CancellationToken::new();
        let mode = PermissionMode::BypassPermissions;
        let h = hooks(command(
            "PreToolUse",
            "Bash",
            "cat > seen.json; echo 'no rm here' >&2; exit 2",
        ));
        let out = h
            .pre_tool_use(&ToolEvent {
                tool: "Bash",
                input: &json!({"command": "rm x"}),
                mode,
                workspace: &ws,
                cancel: &cancel,
            })
            .await;
        assert_eq!(out.decision, Some(HookDecision::Deny("no rm here".into())));
        let seen: Value =
            serde_json::from_str(&std::fs::read_to_string(ws.cwd().join("seen.json")).unwrap())
                .unwrap();
        assert_eq!(seen["hook_event_name"], "PreToolUse");
        assert_eq!(seen["tool_name"], "Bash");
        assert_eq!(seen["tool_input"]["command"], "rm x");
        assert_eq!(seen["permission_mode"], "bypassPermissions");
        // Not matched: no hook runs.
        let out = h
            .pre_tool_use(&ToolEvent {
                tool: "Read",
                input: &json!({}),
                mode,
                workspace: &ws,
                cancel: &cancel,
            })
            .await;
        assert_eq!(out, PreToolUse::default());

        let h = hooks(command(
            "PreToolUse",
            "",
            r#"echo '{"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "allow", "updatedInput": {"command": "echo safer"}, "additionalContext": "checked"}}'"#,
        ));
        let out = h
            .pre_tool_use(&ToolEvent {
                tool: "Bash",
                input: &json!({"command": "rm x"}),
                mode,
                workspace: &ws,
                cancel: &cancel,
            })
            .await;
        assert_eq!(out.decision, Some(HookDecision::Allow));
        assert_eq!(out.updated_input, Some(json!({"command": "echo safer"})));
        assert_eq!(out.context, ["checked"]);
        // Exit 1 is an error that blocks nothing.
        let h = hooks(command("PreToolUse", "", "echo boom >&2; exit 1"));
        let out = h
            .pre_tool_use(&ToolEvent {
                tool: "Bash",
                input: &json!({}),
                mode,
                workspace: &ws,
                cancel: &cancel,
            })
            .await;
        assert_eq!(out.decision, None);
    }

    #[tokio::test]
    async fn a_hook_that_hangs_is_killed_at_its_timeout() {
        let (_tmp, ws) = workspace();
        let h = hooks(json!({"PreToolUse": [{"hooks": [
            {"type": "command", "command": "sleep 30; exit 2", "timeout": 0.3}
        ]}]}));
        let started = std::time::Instant::now();
        let out = h
            .pre_tool_use(&ToolEvent {
                tool: "Bash",
                input: &json!({}),
                mode: PermissionMode::Default,
                workspace: &ws,
                cancel: &CancellationToken::new(),
            })
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(out.decision, None);
    }

    #[tokio::test]
    async fn if_conditions_prompt_and_stop_hooks() {
        let (_tmp, ws) = workspace();
        let cancel = CancellationToken::new();
        let mode = PermissionMode::Default;
        let h = hooks(json!({"PreToolUse": [{"matcher": "Bash", "hooks": [
            {"type": "command", "command": "exit 2", "if": "Bash(git push:*)"}
        ]}]}));
        let push = h
            .pre_tool_use(&ToolEvent {
                tool: "Bash",
                input: &json!({"command": "git push"}),
                mode,
                workspace: &ws,
                cancel: &cancel,
            })
            .await;
        assert!(matches!(push.decision, Some(HookDecision::Deny(_))));
        let status = h
            .pre_tool_use(&ToolEvent {
                tool: "Bash",
                input: &json!({"command": "git status"}),
                mode,
                workspace: &ws,
                cancel: &cancel,
            })
            .await;
        assert_eq!(status.decision, None);

        let h = hooks(json!({"UserPromptSubmit": [{"hooks": [
            {"type": "command", "command": "grep -q secret && { echo 'no secrets' >&2; exit 2; }; echo 'branch: main'"}
        ]}]}));
        let ok = h.user_prompt_submit("hello", mode, &ws, &cancel).await;
        assert_eq!(ok.blocked, None);
        assert_eq!(ok.context, ["branch: main"]);
        let blocked = h.user_prompt_submit("my secret", mode, &ws, &cancel).await;
        assert_eq!(blocked.blocked.as_deref(), Some("no secrets"));

        let h = hooks(json!({"Stop": [{"hooks": [
            {"type": "command", "command": r#"grep -q '"stop_hook_active":true' && exit 0; echo '{"decision": "block", "reason": "run the tests first"}'"#}
        ]}]}));
        let first = h.stop("done", false, mode, &ws, &cancel).await;
        assert_eq!(first.as_deref(), Some("run the tests first"));
        assert_eq!(h.stop("done", true, mode, &ws, &cancel).await, None);
    }

    #[tokio::test]
    async fn post_tool_use_notes_and_replacements() {
        let (_tmp, ws) = workspace();
        let cancel = CancellationToken::new();
        let h = hooks(command(
            "PostToolUse",
            "Write",
            r#"echo '{"decision": "block", "reason": "format the file", "hookSpecificOutput": {"hookEventName": "PostToolUse", "additionalContext": "lint ran"}}'"#,
        ));
        let (notes, replaced) = h
            .post_tool_use(
                &ToolEvent {
                    tool: "Write",
                    input: &json!({"file_path": "a.rs"}),
                    mode: PermissionMode::AcceptEdits,
                    workspace: &ws,
                    cancel: &cancel,
                },
                &ToolOutput::ok("wrote a.rs"),
            )
            .await;
        assert_eq!(
            notes,
            ["A PostToolUse hook objected: format the file", "lint ran"]
        );
        assert_eq!(replaced, None);
        let h = hooks(command(
            "PostToolUse",
            "",
            r#"echo 'tests fail after this edit' >&2; echo '{"hookSpecificOutput": {"hookEventName": "PostToolUse", "updatedToolOutput": "shortened"}}'; exit 2"#,
        ));
        let (notes, replaced) = h
            .post_tool_use(
                &ToolEvent {
                    tool: "Edit",
                    input: &json!({}),
                    mode: PermissionMode::AcceptEdits,
                    workspace: &ws,
                    cancel: &cancel,
                },
                &ToolOutput::ok("long output"),
            )
            .await;
        assert_eq!(notes, ["tests fail after this edit"]);
        assert_eq!(replaced.as_deref(), Some("shortened"));
    }

    #[test]
    fn identical_handlers_from_two_files_run_once() {
        let value = command("Stop", "", "echo x");
        let h = Hooks::from_settings(
            [
                (SettingSource::User, &value),
                (SettingSource::Project, &value),
            ],
            Sandbox::off(),
        );
        assert_eq!(h.handlers(HookEvent::Stop, None).len(), 1);
    }
}
