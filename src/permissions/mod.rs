//! Per-call permission rules in Claude Code's syntax, from the service's
//! configuration and the settings files, and the decision for each call.
//!
//! A call is checked in Claude Code's order: a deny rule refuses it, then
//! an ask rule leaves it to a person, then the permission mode decides,
//! with allow rules approving what the mode alone would not run (in
//! `default` mode a person decides the rest).

pub mod paths;
pub mod rule;
pub mod settings;
pub mod shell;

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::skills::SettingSource;
use crate::tools::{PermissionMode, Tool};
use crate::workspace::Workspace;

pub use rule::{Behavior, Rule, RuleError, RuleSource, Spec, ToolPattern};

use paths::{Anchors, CompiledPath};
use rule::{EDIT_TOOLS, READ_TOOLS, settings_file};
use shell::ParsedCommand;

/// The rules and mode in force for one turn, resolved against the
/// session's directory.
#[derive(Debug, Clone)]
pub struct Permissions {
    mode: PermissionMode,
    /// The settings file whose `permissions.defaultMode` set the mode.
    mode_source: Option<SettingSource>,
    /// Every rule that applies, in the order they were added.
    rules: Vec<Active>,
    /// Allow rules read from project files, which this service does not
    /// honour; kept to say so when one would have approved a call.
    unhonoured: Vec<Active>,
    /// A non-empty `defaults.allowed_tools` also limits the tools offered
    /// to those it names.
    offer_only_allowed: bool,
    /// The session's `allowed_tools`: when set, only the tools they name
    /// are offered. They never approve a call.
    session_tools: Option<Vec<Rule>>,
    cwd: PathBuf,
    home: PathBuf,
    claude_home: Option<PathBuf>,
}

#[derive(Debug, Clone)]
struct Active {
    rule: Rule,
    /// The path specifier resolved for this session.
    path: Option<CompiledPath>,
}

impl Permissions {
    /// No rules, `mode` for every call.
    pub fn new(mode: PermissionMode, workspace: &Workspace, claude_home: Option<PathBuf>) -> Self {
        Self {
            mode,
            mode_source: None,
            rules: Vec::new(),
            unhonoured: Vec::new(),
            offer_only_allowed: false,
            session_tools: None,
            cwd: workspace.cwd().to_path_buf(),
            // A session's commands see its directory as their home.
            home: workspace.root().to_path_buf(),
            claude_home,
        }
    }

    pub fn mode(&self) -> PermissionMode {
        self.mode
    }

    /// Lowers the mode to what a settings file asks for; a file cannot
    /// raise it above the configured one.
    pub fn lower_mode(&mut self, mode: PermissionMode, source: SettingSource) -> bool {
        if mode.rank() > self.mode.rank() {
            return false;
        }
        self.mode = mode;
        self.mode_source = Some(source);
        true
    }

    /// Adds rules; `offer_only` marks config allow rules that also limit
    /// which tools are offered.
    pub fn add(&mut self, rules: impl IntoIterator<Item = Rule>) {
        for rule in rules {
            if rule.source() == RuleSource::Config(Behavior::Allow) {
                self.offer_only_allowed = true;
            }
            let active = self.activate(rule);
            self.rules.push(active);
        }
    }

    /// Offers only the tools `rules` name (the session's `allowed_tools`),
    /// on top of every other limit.
    pub fn offer_only(&mut self, rules: Vec<Rule>) {
        self.session_tools = Some(rules);
    }

    /// Keeps allow rules that are not honoured, to name them in refusals.
    pub fn add_unhonoured(&mut self, rules: impl IntoIterator<Item = Rule>) {
        for rule in rules {
            let active = self.activate(rule);
            self.unhonoured.push(active);
        }
    }

    fn activate(&self, rule: Rule) -> Active {
        let path = match rule.spec() {
            Spec::Path(pattern) => {
                let source = match rule.source() {
                    RuleSource::Settings(SettingSource::User, _) => {
                        self.claude_home.clone().unwrap_or_else(|| self.cwd.clone())
                    }
                    _ => self.cwd.clone(),
                };
                let anchors = Anchors {
                    cwd: &self.cwd,
                    home: &self.home,
                    source: &source,
                };
                pattern.compile(&anchors, rule.behavior() != Behavior::Allow)
            }
            _ => None,
        };
        Active { rule, path }
    }

    /// Why the model is not shown `tool`, or `None` when it is.
    pub fn hidden(&self, tool: &dyn Tool) -> Option<String> {
        let name = tool.name();
        if let Some(active) = self.rules.iter().find(|a| {
            a.rule.behavior() == Behavior::Deny && a.rule.is_whole_tool() && a.rule.concerns(name)
        }) {
            return Some(format!(
                "The tool {name} is not available in this session: the deny rule `{}` ({}) removes it.",
                active.rule.text(),
                active.rule.source()
            ));
        }
        if self.offer_only_allowed
            && !self.rules.iter().any(|a| {
                a.rule.source() == RuleSource::Config(Behavior::Allow) && a.rule.concerns(name)
            })
        {
            return Some(format!(
                "The tool {name} is not available in this session: defaults.allowed_tools in \
                 the service's configuration does not list it."
            ));
        }
        if let Some(rules) = &self.session_tools
            && !rules.iter().any(|r| r.concerns(name))
        {
            return Some(format!(
                "The tool {name} is not available in this session: the session's allowed_tools \
                 does not list it."
            ));
        }
        if self.mode == PermissionMode::Plan && !tool.read_only() {
            return Some(plan_refusal(name));
        }
        None
    }

    /// Whether the model is shown `tool` at all.
    pub fn offers(&self, tool: &dyn Tool) -> bool {
        self.hidden(tool).is_none()
    }

    /// Whether this call may run now; the error is the tool result the
    /// model gets instead.
    pub fn check(
        &self,
        tool: &dyn Tool,
        input: &Value,
        workspace: &Workspace,
    ) -> Result<(), String> {
        self.check_with(tool, input, workspace, false)
    }

    /// [`Permissions::check`], where `approved` says a `PreToolUse` hook
    /// allowed the call: deny and ask rules still apply, the mode does not.
    pub fn check_with(
        &self,
        tool: &dyn Tool,
        input: &Value,
        workspace: &Workspace,
        approved: bool,
    ) -> Result<(), String> {
        match self.verdict(tool, input, workspace, approved) {
            Verdict::Run => Ok(()),
            Verdict::Refuse(why) | Verdict::Ask { refusal: why, .. } => Err(why),
        }
    }

    /// Whether `tool` is hidden or a deny rule refuses this call: what holds
    /// even after a person approved it.
    pub fn denied(&self, tool: &dyn Tool, input: &Value, workspace: &Workspace) -> Option<String> {
        if let Some(why) = self.hidden(tool) {
            return Some(why);
        }
        let call = Call::new(tool.name(), input, workspace, &self.cwd);
        self.rules
            .iter()
            .filter(|a| a.rule.behavior() == Behavior::Deny)
            .find_map(|a| a.matches_any(&call).map(|what| (a, what)))
            .map(|(active, what)| deny_refusal(&call, &active.rule, what.as_deref()))
    }

    /// The decision for one call: run it, refuse it, or ask a person.
    pub fn verdict(
        &self,
        tool: &dyn Tool,
        input: &Value,
        workspace: &Workspace,
        approved: bool,
    ) -> Verdict {
        if let Some(why) = self.hidden(tool) {
            return Verdict::Refuse(why);
        }
        if tool.name() == ASK_USER_QUESTION && self.mode == PermissionMode::DontAsk {
            return Verdict::Refuse(format!(
                "Permission denied: the session's permission mode is {}, which never asks a person, \
                 so {ASK_USER_QUESTION} cannot be used. Decide on your own or say what you need.",
                self.mode
            ));
        }
        let call = Call::new(tool.name(), input, workspace, &self.cwd);
        for behavior in [Behavior::Deny, Behavior::Ask] {
            let hit = self
                .rules
                .iter()
                .filter(|a| a.rule.behavior() == behavior)
                .find_map(|a| a.matches_any(&call).map(|what| (a, what)));
            if let Some((active, what)) = hit {
                return match behavior {
                    Behavior::Deny => {
                        Verdict::Refuse(deny_refusal(&call, &active.rule, what.as_deref()))
                    }
                    // dontAsk never asks: what would need a person is denied.
                    _ if self.mode == PermissionMode::DontAsk => {
                        Verdict::Refuse(ask_refusal(&call, &active.rule, what.as_deref()))
                    }
                    _ => Verdict::Ask {
                        reason: format!(
                            "{} matches the ask rule `{}` ({})",
                            what.as_deref().unwrap_or("the call"),
                            active.rule.text(),
                            active.rule.source()
                        ),
                        refusal: ask_refusal(&call, &active.rule, what.as_deref()),
                    },
                };
            }
        }
        if approved {
            return Verdict::Run;
        }
        match self.mode {
            PermissionMode::AcceptEdits | PermissionMode::BypassPermissions => Verdict::Run,
            PermissionMode::Plan if tool.read_only() => Verdict::Run,
            PermissionMode::Plan => Verdict::Refuse(plan_refusal(tool.name())),
            PermissionMode::Default | PermissionMode::DontAsk => {
                if tool.read_only() {
                    return Verdict::Run;
                }
                match self.approval(&self.rules, &call) {
                    Ok(()) => Verdict::Run,
                    Err(gap) if self.mode == PermissionMode::DontAsk => {
                        Verdict::Refuse(self.mode_refusal(&call, &gap))
                    }
                    Err(gap) => Verdict::Ask {
                        reason: format!(
                            "the permission mode is {} and {}",
                            self.mode,
                            gap_detail(&gap)
                        ),
                        refusal: self.mode_refusal(&call, &gap),
                    },
                }
            }
        }
    }

    /// `Ok` when allow rules among `rules` approve the whole call;
    /// otherwise what they leave uncovered.
    fn approval(&self, rules: &[Active], call: &Call<'_>) -> Result<(), Gap> {
        let allow: Vec<&Active> = rules
            .iter()
            .filter(|a| a.rule.behavior() == Behavior::Allow)
            .collect();
        if allow
            .iter()
            .any(|a| a.rule.is_whole_tool() && a.rule.tool().covers(call.tool))
        {
            return Ok(());
        }
        let Some(command) = &call.command else {
            return if allow.iter().any(|a| a.approves(call)) {
                Ok(())
            } else {
                Err(Gap::Call)
            };
        };
        if command.too_long {
            return Err(Gap::TooLong);
        }
        if !command.complete {
            return Err(Gap::Unparsed);
        }
        for part in &command.parts {
            let (forms, restricted) = part.allow_forms();
            let covered = allow.iter().any(|a| match a.rule.spec() {
                Spec::Command(pattern) if a.rule.tool().covers("Bash") => {
                    (!restricted || pattern.is_exact()) && forms.iter().any(|f| pattern.matches(f))
                }
                _ => false,
            });
            if !covered {
                return Err(Gap::Part(part.text()));
            }
        }
        for target in call.targets.iter().filter(|t| t.write) {
            let covered = allow.iter().any(|a| {
                a.rule.tool().covers("Edit")
                    && (a.rule.is_whole_tool()
                        || a.path.as_ref().is_some_and(|p| target.matches_all(p)))
            });
            if !covered {
                return Err(Gap::Write(target.shown.clone()));
            }
        }
        Ok(())
    }

    fn mode_refusal(&self, call: &Call<'_>, gap: &Gap) -> String {
        let mode = self.mode;
        let set_by = match self.mode_source {
            Some(scope) => format!(
                " (set by permissions.defaultMode in {})",
                settings_file(scope)
            ),
            None => String::new(),
        };
        let detail = gap_detail(gap);
        let unhonoured = if self.approval(&self.unhonoured, call).is_ok() {
            let first = self
                .unhonoured
                .iter()
                .find(|a| a.rule.concerns(call.tool))
                .map(|a| format!(" `{}` in {}", a.rule.text(), rule_file(a.rule.source())))
                .unwrap_or_default();
            format!(
                " The project allows it with{first}, but this service does not take allow \
                 rules from project files, which the agent itself can write."
            )
        } else {
            String::new()
        };
        let suggestion = suggest(call, gap);
        let (opening, closing) = if mode == PermissionMode::DontAsk {
            (
                format!(
                    "Permission denied: the session's permission mode is {mode}{set_by}, which runs read-only \
                     tools and only the calls an allow rule approves, and {detail}. The call was not run."
                ),
                "",
            )
        } else {
            (
                format!(
                    "This call needs a person's approval: the session's permission mode is {mode}{set_by}, \
                     which runs read-only tools (Read, Glob, Grep) on its own and anything else only when \
                     an allow rule approves it, and {detail}. No person approved it, so the call was not \
                     run."
                ),
                " Meanwhile continue with read-only tools, or tell the user what you need.",
            )
        };
        format!(
            "{opening}{unhonoured} An allow rule such as `{suggestion}` (in defaults.allowed_tools, or \
             permissions.allow of the service's ~/.claude/settings.json), or the acceptEdits or \
             bypassPermissions mode, would let it run.{closing}"
        )
    }
}

/// Whether `rule` matches a call the way a deny rule would: for a hook's
/// `if`. A command that cannot be parsed counts as matching, so a guard
/// hook still runs for it.
pub fn rule_matches(rule: &Rule, tool: &str, input: &Value, workspace: &Workspace) -> bool {
    let permissions = Permissions::new(PermissionMode::BypassPermissions, workspace, None);
    let active = permissions.activate(rule.clone());
    let call = Call::new(tool, input, workspace, workspace.cwd());
    if rule.tool().covers(tool) && call.command.as_ref().is_some_and(|c| !c.complete) {
        return true;
    }
    active.matches_any(&call).is_some()
}

/// What the rules and mode say about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Run,
    /// Refused; the text is the tool result the model gets.
    Refuse(String),
    /// A person must decide. `reason` says why for them; `refusal` is the
    /// tool result when nobody can be asked.
    Ask {
        reason: String,
        refusal: String,
    },
}

/// The name of Claude Code's tool for asking the user questions.
pub const ASK_USER_QUESTION: &str = "AskUserQuestion";

/// Why allow rules do not approve a call, in a sentence's words.
fn gap_detail(gap: &Gap) -> String {
    match gap {
        Gap::Call => "no allow rule covers this call".to_owned(),
        Gap::Part(part) => format!("no allow rule covers `{}`", shorten(part)),
        Gap::Write(path) => {
            format!("the command writes to `{path}`, and no Edit allow rule covers that file")
        }
        Gap::TooLong => format!(
            "commands over {} characters are never approved by a rule",
            shell::MAX_ALLOWED_COMMAND_CHARS
        ),
        Gap::Unparsed => {
            "the command has an unclosed quote or substitution, so no rule can approve it"
                .to_owned()
        }
    }
}

/// The allow rule `remember: session` adds for an approved call: the exact
/// Bash command, WebFetch's host, or the whole tool otherwise. `None` when
/// no rule would say exactly that (a command with `*` or parentheses).
pub fn remembered_rule(tool: &str, input: &Value) -> Option<String> {
    let text = match tool {
        "Bash" => {
            let command = input.get("command")?.as_str()?.trim();
            if command.is_empty() || command.contains(['*', '(', ')', '\n']) {
                return None;
            }
            format!("Bash({command})")
        }
        "WebFetch" => {
            let url = url::Url::parse(input.get("url")?.as_str()?).ok()?;
            format!("WebFetch(domain:{})", url.host_str()?)
        }
        other => other.to_owned(),
    };
    Rule::parse(&text, RuleSource::Remembered)
        .ok()
        .map(|_| text)
}

/// What allow rules leave uncovered in a call.
enum Gap {
    Call,
    Part(String),
    Write(String),
    TooLong,
    Unparsed,
}

impl Active {
    /// For deny and ask rules: whether any piece of the call matches, and
    /// which (`None`: the call as a whole).
    fn matches_any(&self, call: &Call<'_>) -> Option<Option<String>> {
        let rule = &self.rule;
        match rule.spec() {
            Spec::Any => rule.tool().covers(call.tool).then_some(None),
            Spec::Command(pattern) => {
                if !rule.tool().covers("Bash") {
                    return None;
                }
                let command = call.command.as_ref()?;
                command
                    .parts
                    .iter()
                    .find(|part| part.deny_forms().iter().any(|f| pattern.matches(f)))
                    .map(|part| Some(format!("the command `{}`", shorten(&part.text()))))
            }
            Spec::Path(_) => {
                let compiled = self.path.as_ref()?;
                self.path_targets(call)
                    .find(|t| t.matches_either(compiled))
                    .map(|t| Some(format!("the path `{}`", t.shown)))
            }
            Spec::Domain(_) | Spec::Skill(_) | Spec::Field { .. } => {
                (rule.tool().covers(call.tool) && self.scalar_matches(call)).then_some(None)
            }
            Spec::Unchecked => None,
        }
    }

    /// For allow rules on a tool other than Bash: whether the rule
    /// approves the whole call (for a path rule: every path, link and
    /// target alike).
    fn approves(&self, call: &Call<'_>) -> bool {
        let rule = &self.rule;
        if !rule.tool().covers(call.tool) {
            return false;
        }
        match rule.spec() {
            Spec::Any => true,
            Spec::Path(_) => {
                let Some(compiled) = &self.path else {
                    return false;
                };
                let mut targets = self.path_targets(call).peekable();
                targets.peek().is_some() && targets.all(|t| t.matches_all(compiled))
            }
            Spec::Domain(_) | Spec::Skill(_) => self.scalar_matches(call),
            Spec::Command(_) | Spec::Field { .. } | Spec::Unchecked => false,
        }
    }

    /// The paths of `call` this path rule speaks about.
    fn path_targets<'c>(&'c self, call: &'c Call<'_>) -> impl Iterator<Item = &'c Target> + 'c {
        let rule = &self.rule;
        let read_rule = rule.tool().covers("Read");
        let guards = rule.behavior() != Behavior::Allow;
        let applies = if call.tool == "Bash" {
            read_rule || rule.tool().covers("Edit")
        } else {
            rule.concerns(call.tool)
        };
        call.targets.iter().filter(move |t| {
            applies
                && if call.tool == "Bash" {
                    // A redirection reads or writes a file: Read rules speak
                    // for what is read (and, denying, for what is written),
                    // Edit rules for what is written.
                    if read_rule {
                        !t.write || guards
                    } else {
                        t.write
                    }
                } else {
                    true
                }
        })
    }

    fn scalar_matches(&self, call: &Call<'_>) -> bool {
        match self.rule.spec() {
            Spec::Domain(pattern) => call
                .host
                .as_deref()
                .is_some_and(|host| domain_matches(pattern, host)),
            Spec::Skill(pattern) => call
                .skill
                .as_deref()
                .is_some_and(|skill| shell::glob_matches(pattern, skill)),
            Spec::Field { key, value } => match call.input.get(key) {
                Some(Value::String(s)) => shell::glob_matches(value, s),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => {
                    shell::glob_matches(value, &v.to_string())
                }
                _ => false,
            },
            _ => false,
        }
    }
}

/// A call taken apart once for all rules.
struct Call<'a> {
    tool: &'a str,
    input: &'a Value,
    command: Option<ParsedCommand>,
    targets: Vec<Target>,
    host: Option<String>,
    skill: Option<String>,
}

/// Stands for "anything inside" a searched directory; no pattern names it.
const INSIDE: &str = "\u{2026}";

/// A file a call reads or writes.
struct Target {
    /// As the call named it.
    shown: String,
    /// Absolute, dots folded, links not followed.
    lexical: PathBuf,
    /// With links followed, when it resolves inside the session.
    resolved: Option<PathBuf>,
    is_dir: bool,
    write: bool,
}

impl Target {
    fn new(raw: &str, cwd: &Path, workspace: &Workspace, is_dir: bool, write: bool) -> Self {
        let lexical = paths::absolute(cwd, raw);
        let resolved = workspace.resolve(raw).ok().filter(|r| *r != lexical);
        Self {
            shown: raw.to_owned(),
            lexical,
            resolved,
            is_dir,
            write,
        }
    }

    /// A deny fires when the link or its target matches; for a directory
    /// a search walks, also when what lies inside it does (`secrets/**`
    /// matches a search of `secrets`).
    fn matches_either(&self, pattern: &CompiledPath) -> bool {
        let hit = |path: &Path| {
            pattern.matches(path, self.is_dir)
                || (self.is_dir && pattern.matches(&path.join(INSIDE), false))
        };
        hit(&self.lexical) || self.resolved.as_deref().is_some_and(hit)
    }

    /// An allow needs the link and its target to match.
    fn matches_all(&self, pattern: &CompiledPath) -> bool {
        pattern.matches(&self.lexical, self.is_dir)
            && self
                .resolved
                .as_ref()
                .is_none_or(|r| pattern.matches(r, self.is_dir))
    }
}

impl<'a> Call<'a> {
    fn new(tool: &'a str, input: &'a Value, workspace: &Workspace, cwd: &Path) -> Self {
        let text = |key: &str| input.get(key).and_then(Value::as_str);
        let mut call = Self {
            tool,
            input,
            command: None,
            targets: Vec::new(),
            host: None,
            skill: None,
        };
        let target =
            |raw: &str, is_dir: bool, write: bool| Target::new(raw, cwd, workspace, is_dir, write);
        match tool {
            "Bash" => {
                let command = shell::parse(text("command").unwrap_or(""));
                call.targets = command
                    .reads
                    .iter()
                    .map(|r| target(r, false, false))
                    .chain(command.writes.iter().map(|w| target(w, false, true)))
                    .collect();
                call.command = Some(command);
            }
            "WebFetch" => {
                call.host = text("url")
                    .and_then(|u| url::Url::parse(u).ok())
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .map(|h| h.trim_end_matches('.').to_ascii_lowercase());
            }
            "Skill" => {
                call.skill = text("skill").map(|s| s.trim().trim_start_matches('/').to_owned());
            }
            "Glob" | "Grep" => {
                let dir = text("path").filter(|p| !p.trim().is_empty()).unwrap_or(".");
                call.targets.push(target(dir, true, false));
                // `secrets/**/*.txt` from the cwd reaches into `secrets`.
                if tool == "Glob"
                    && let Some(pattern) = text("pattern")
                {
                    let literal: Vec<&str> = pattern
                        .split('/')
                        .take_while(|seg| !seg.contains(['*', '?', '[', '{']))
                        .collect();
                    if !literal.is_empty() && literal.len() < pattern.split('/').count() {
                        let prefix = Path::new(dir).join(literal.join("/"));
                        call.targets
                            .push(target(&prefix.to_string_lossy(), true, false));
                    }
                }
            }
            _ if READ_TOOLS.contains(&tool) || EDIT_TOOLS.contains(&tool) => {
                let write = EDIT_TOOLS.contains(&tool);
                if let Some(path) = text("file_path").or_else(|| text("notebook_path")) {
                    call.targets.push(target(path, false, write));
                }
            }
            _ => {}
        }
        call
    }
}

/// `*.example.com` any subdomain (not the apex); another `*` one label.
fn domain_matches(pattern: &str, host: &str) -> bool {
    if let Some(apex) = pattern.strip_prefix("*.") {
        return host
            .strip_suffix(apex)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'));
    }
    let wanted: Vec<&str> = pattern.split('.').collect();
    let got: Vec<&str> = host.split('.').collect();
    wanted.len() == got.len()
        && wanted
            .iter()
            .zip(&got)
            .all(|(w, g)| shell::glob_matches(w, g))
}

fn deny_refusal(call: &Call<'_>, rule: &Rule, what: Option<&str>) -> String {
    let what = what.map_or_else(|| format!("this {} call", call.tool), str::to_owned);
    format!(
        "Permission denied: {what} matches the deny rule `{}` ({}). The call was not run. Do not \
         try to reach the same result another way; continue without it, or tell the user it is blocked.",
        rule.text(),
        rule.source()
    )
}

fn ask_refusal(call: &Call<'_>, rule: &Rule, what: Option<&str>) -> String {
    let what = what.map_or_else(|| format!("this {} call", call.tool), str::to_owned);
    format!(
        "This call needs a person's approval: {what} matches the ask rule `{}` ({}). No person \
         approved it, so the call was not run; it would run without asking once that rule is \
         removed. Continue without it, or tell the user what you need.",
        rule.text(),
        rule.source()
    )
}

fn plan_refusal(name: &str) -> String {
    format!(
        "The tool {name} is not available in plan mode, which only allows read-only tools. \
         Present the plan instead of making changes."
    )
}

/// Names the file a rule came from, for the hint about unhonoured rules.
fn rule_file(source: RuleSource) -> &'static str {
    match source {
        RuleSource::Settings(scope, _) => settings_file(scope),
        RuleSource::Config(_) => "the service's configuration",
        RuleSource::Command => "the slash command's front matter",
        RuleSource::Session(_) => "the session's options",
        RuleSource::Remembered => "an approval remembered for this session",
    }
}

/// An allow rule that would approve the call.
fn suggest(call: &Call<'_>, gap: &Gap) -> String {
    match gap {
        Gap::Part(part) if part.chars().count() <= 60 => format!("Bash({part})"),
        Gap::Part(part) => {
            let program = part.split(' ').next().unwrap_or(part);
            format!("Bash({program} *)")
        }
        Gap::Write(path) => format!("Edit({path})"),
        _ => match call.targets.first() {
            Some(target) if EDIT_TOOLS.contains(&call.tool) => format!("Edit({})", target.shown),
            _ if call.tool == "WebFetch" => call.host.as_ref().map_or_else(
                || "WebFetch".to_owned(),
                |h| format!("WebFetch(domain:{h})"),
            ),
            _ => call.tool.to_owned(),
        },
    }
}

fn shorten(text: &str) -> String {
    const LIMIT: usize = 200;
    if text.chars().count() <= LIMIT {
        return text.to_owned();
    }
    let cut: String = text.chars().take(LIMIT).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::{ToolContext, ToolOutput, ToolPolicy};
    use async_trait::async_trait;
    use serde_json::json;

    struct Fake(&'static str, bool);

    #[async_trait]
    impl Tool for Fake {
        fn name(&self) -> &str {
            self.0
        }
        fn description(&self) -> String {
            String::new()
        }
        fn input_schema(&self) -> Value {
            json!({"type": "object"})
        }
        fn read_only(&self) -> bool {
            self.1
        }
        async fn call(&self, _input: Value, _ctx: &ToolContext) -> ToolOutput {
            ToolOutput::ok("")
        }
    }

    struct Fixture {
        tmp: tempfile::TempDir,
        ws: Workspace,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let cwd = tmp.path().join("work");
        std::fs::create_dir_all(cwd.join("secrets")).unwrap();
        std::fs::create_dir_all(cwd.join("src")).unwrap();
        let ws = Workspace::at(&cwd).unwrap();
        Fixture { tmp, ws }
    }

    fn permissions(f: &Fixture, policy: ToolPolicy) -> Permissions {
        policy.permissions(&f.ws)
    }

    fn check(p: &Permissions, f: &Fixture, tool: &'static str, input: Value) -> Result<(), String> {
        let read_only = matches!(tool, "Read" | "Glob" | "Grep" | "Skill");
        p.check(&Fake(tool, read_only), &input, &f.ws)
    }

    #[test]
    fn who_decides_a_call_depends_on_the_rules_and_the_mode() {
        let f = fixture();
        let verdict = |mode, tool: &'static str, input: Value| {
            let p = permissions(
                &f,
                ToolPolicy::new(mode)
                    .with_rules(Behavior::Ask, &["Bash(git push *)"])
                    .with_rules(Behavior::Deny, &["Bash(rm *)"]),
            );
            let read_only = matches!(tool, "Read" | ASK_USER_QUESTION);
            p.verdict(&Fake(tool, read_only), &input, &f.ws, false)
        };
        let push = json!({"command": "git push origin main"});
        let touch = json!({"command": "touch x"});
        for mode in [PermissionMode::Default, PermissionMode::BypassPermissions] {
            assert!(
                matches!(verdict(mode, "Bash", push.clone()), Verdict::Ask { .. }),
                "an ask rule asks in {mode}"
            );
        }
        assert!(matches!(
            verdict(PermissionMode::Default, "Bash", touch.clone()),
            Verdict::Ask { .. }
        ));
        assert!(matches!(
            verdict(PermissionMode::DontAsk, "Bash", push),
            Verdict::Refuse(_)
        ));
        assert!(matches!(
            verdict(PermissionMode::DontAsk, "Bash", touch),
            Verdict::Refuse(_)
        ));
        assert!(matches!(
            verdict(
                PermissionMode::Default,
                "Bash",
                json!({"command": "rm -r x"})
            ),
            Verdict::Refuse(_)
        ));
        let questions = json!({"questions": []});
        assert_eq!(
            verdict(PermissionMode::Plan, ASK_USER_QUESTION, questions.clone()),
            Verdict::Run
        );
        assert!(matches!(
            verdict(PermissionMode::DontAsk, ASK_USER_QUESTION, questions),
            Verdict::Refuse(_)
        ));
    }

    #[test]
    fn a_remembered_rule_names_exactly_the_approved_call() {
        assert_eq!(
            remembered_rule("Bash", &json!({"command": "npm test"})).as_deref(),
            Some("Bash(npm test)")
        );
        assert_eq!(
            remembered_rule("Bash", &json!({"command": "ls *.rs"})),
            None
        );
        assert_eq!(remembered_rule("Bash", &json!({"command": "a\nb"})), None);
        assert_eq!(
            remembered_rule("WebFetch", &json!({"url": "https://docs.rs/x"})).as_deref(),
            Some("WebFetch(domain:docs.rs)")
        );
        assert_eq!(
            remembered_rule("Write", &json!({"file_path": "a"})).as_deref(),
            Some("Write")
        );
    }

    #[test]
    fn read_rules_cover_the_read_tools_edits_and_redirections() {
        let f = fixture();
        let p = permissions(
            &f,
            ToolPolicy::new(PermissionMode::BypassPermissions)
                .with_rules(Behavior::Deny, &["Read(./secrets/**)"]),
        );
        let denied = [
            ("Read", json!({"file_path": "secrets/key"})),
            ("Read", json!({"file_path": "src/../secrets/key"})),
            ("Grep", json!({"pattern": "x", "path": "secrets"})),
            ("Glob", json!({"pattern": "secrets/**/*.pem"})),
            ("Edit", json!({"file_path": "secrets/key"})),
            ("Write", json!({"file_path": "secrets/new"})),
            ("Bash", json!({"command": "cat < secrets/key"})),
            ("Bash", json!({"command": "echo x > secrets/key"})),
        ];
        for (tool, input) in denied {
            let err = check(&p, &f, tool, input.clone())
                .err()
                .unwrap_or_else(|| panic!("{tool} {input} ran"));
            assert!(
                err.contains("`Read(./secrets/**)`"),
                "{tool} {input}: {err}"
            );
        }
        for (tool, input) in [
            ("Read", json!({"file_path": "src/a"})),
            ("Grep", json!({"pattern": "x"})),
            ("Glob", json!({"pattern": "src/**"})),
            ("Bash", json!({"command": "cat secrets/key"})),
        ] {
            assert!(check(&p, &f, tool, input.clone()).is_ok(), "{tool} {input}");
        }
    }

    #[test]
    fn a_link_into_a_denied_directory_is_denied_and_needs_both_ends_to_be_allowed() {
        let f = fixture();
        let cwd = f.ws.cwd().to_path_buf();
        std::os::unix::fs::symlink(cwd.join("secrets"), cwd.join("src/shortcut")).unwrap();
        let p = permissions(
            &f,
            ToolPolicy::new(PermissionMode::BypassPermissions)
                .with_rules(Behavior::Deny, &["Read(./secrets/**)"]),
        );
        assert!(check(&p, &f, "Read", json!({"file_path": "src/shortcut/key"})).is_err());
        let p = permissions(
            &f,
            ToolPolicy::new(PermissionMode::Default).with_rules(Behavior::Allow, &["Edit(src/**)"]),
        );
        assert!(check(&p, &f, "Edit", json!({"file_path": "src/a.rs"})).is_ok());
        let err = check(&p, &f, "Edit", json!({"file_path": "src/shortcut/key"})).unwrap_err();
        assert!(err.contains("needs a person's approval"), "{err}");
    }

    #[test]
    fn web_fetch_domains_skills_fields_and_mcp_servers() {
        let f = fixture();
        let p = permissions(
            &f,
            ToolPolicy::new(PermissionMode::Default)
                .with_rules(
                    Behavior::Deny,
                    &[
                        "WebFetch(domain:*.evil.test)",
                        "Skill(deploy *)",
                        "mcp__db__query(database:prod*)",
                    ],
                )
                .with_rules(Behavior::Ask, &["mcp__db__drop"])
                .with_rules(
                    Behavior::Allow,
                    &["WebFetch(domain:Docs.RS)", "mcp__db", "mcp__gh__*", "Skill"],
                ),
        );
        let fetch = |url: &str| check(&p, &f, "WebFetch", json!({"url": url, "prompt": "x"}));
        assert!(fetch("https://docs.rs/serde").is_ok());
        assert!(fetch("https://DOCS.rs./x").is_ok());
        assert!(
            fetch("https://a.docs.rs/x")
                .unwrap_err()
                .contains("approval")
        );
        assert!(
            fetch("https://x.y.evil.test/")
                .unwrap_err()
                .contains("deny rule")
        );
        let err = fetch("https://evil.test/").unwrap_err();
        assert!(err.contains("WebFetch(domain:evil.test)"), "{err}");
        assert!(check(&p, &f, "Skill", json!({"skill": "deploy-prod"})).is_err());
        assert!(check(&p, &f, "Skill", json!({"skill": "review"})).is_ok());
        assert!(check(&p, &f, "mcp__db__query", json!({"database": "prod-eu"})).is_err());
        assert!(check(&p, &f, "mcp__db__query", json!({"database": "dev"})).is_ok());
        assert!(
            check(&p, &f, "mcp__db__drop", json!({}))
                .unwrap_err()
                .contains("ask rule `mcp__db__drop`")
        );
        assert!(check(&p, &f, "mcp__gh__issue", json!({})).is_ok());
        assert!(check(&p, &f, "mcp__other__x", json!({})).is_err());
    }

    #[test]
    fn deny_beats_ask_beats_allow_whatever_the_order_or_source() {
        let f = fixture();
        std::fs::create_dir_all(f.ws.cwd().join(".claude")).unwrap();
        std::fs::write(
            f.ws.cwd().join(".claude/settings.json"),
            r#"{"permissions": {"deny": ["Bash(git push --force:*)"], "ask": ["Bash(git push:*)"]}}"#,
        )
        .unwrap();
        let home = f.tmp.path().join("claude-home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(
            home.join("settings.json"),
            r#"{"permissions": {"allow": ["Bash(git *)"]}}"#,
        )
        .unwrap();
        let p = permissions(
            &f,
            ToolPolicy::new(PermissionMode::Default).with_settings(
                vec![SettingSource::User, SettingSource::Project],
                Some(home),
            ),
        );
        let bash = |c: &str| check(&p, &f, "Bash", json!({"command": c}));
        assert!(bash("git status").is_ok());
        let err = bash("git push origin main").unwrap_err();
        assert!(
            err.contains("ask rule `Bash(git push:*)`")
                && err.contains("permissions.ask in the project's .claude/settings.json"),
            "{err}"
        );
        let err = bash("git push --force origin main").unwrap_err();
        assert!(
            err.contains("deny rule `Bash(git push --force:*)`"),
            "{err}"
        );
    }

    #[test]
    fn project_allow_rules_are_not_honoured_and_the_refusal_says_so() {
        let f = fixture();
        std::fs::create_dir_all(f.ws.cwd().join(".claude")).unwrap();
        std::fs::write(
            f.ws.cwd().join(".claude/settings.local.json"),
            r#"{"permissions": {"allow": ["Bash(make *)"]}}"#,
        )
        .unwrap();
        let p = permissions(
            &f,
            ToolPolicy::new(PermissionMode::Default)
                .with_settings(vec![SettingSource::Project, SettingSource::Local], None),
        );
        let err = check(&p, &f, "Bash", json!({"command": "make all"})).unwrap_err();
        assert!(
            err.contains("`Bash(make *)` in the project's .claude/settings.local.json"),
            "{err}"
        );
        assert!(
            err.contains("does not take allow rules from project files"),
            "{err}"
        );
        assert!(err.contains("Bash(make all)"), "{err}");
    }

    #[test]
    fn settings_may_lower_the_mode_but_never_raise_it() {
        let f = fixture();
        std::fs::create_dir_all(f.ws.cwd().join(".claude")).unwrap();
        let write = |mode: &str| {
            std::fs::write(
                f.ws.cwd().join(".claude/settings.json"),
                format!(r#"{{"permissions": {{"defaultMode": "{mode}"}}}}"#),
            )
            .unwrap();
        };
        let policy = |mode| ToolPolicy::new(mode).with_settings(vec![SettingSource::Project], None);
        write("plan");
        let p = permissions(&f, policy(PermissionMode::BypassPermissions));
        assert_eq!(p.mode(), PermissionMode::Plan);
        assert!(p.hidden(&Fake("Bash", false)).is_some());
        write("bypassPermissions");
        assert_eq!(
            permissions(&f, policy(PermissionMode::Default)).mode(),
            PermissionMode::Default
        );
        write("manual");
        let p = permissions(&f, policy(PermissionMode::AcceptEdits));
        assert_eq!(p.mode(), PermissionMode::Default);
        let err = check(&p, &f, "Write", json!({"file_path": "a", "content": ""})).unwrap_err();
        assert!(
            err.contains("set by permissions.defaultMode in the project's"),
            "{err}"
        );
        write("auto");
        assert_eq!(
            permissions(&f, policy(PermissionMode::AcceptEdits)).mode(),
            PermissionMode::AcceptEdits
        );
    }

    #[test]
    fn dont_ask_denies_and_commands_that_cannot_be_judged_are_never_approved() {
        let f = fixture();
        let p = permissions(
            &f,
            ToolPolicy::new(PermissionMode::DontAsk).with_rules(Behavior::Allow, &["Bash(echo *)"]),
        );
        let bash = |c: &str| check(&p, &f, "Bash", json!({"command": c}));
        assert!(bash("echo hi").is_ok());
        let err = bash("echo 'open").unwrap_err();
        assert!(
            err.starts_with("Permission denied") && err.contains("unclosed"),
            "{err}"
        );
        let long = format!("echo {}", "a".repeat(shell::MAX_ALLOWED_COMMAND_CHARS));
        assert!(bash(&long).unwrap_err().contains("characters"));
        assert!(bash("echo $(rm -rf x)").unwrap_err().contains("`rm -rf x`"));
        assert!(bash("LD_PRELOAD=x.so echo hi").is_err());
        assert!(bash("NO_COLOR=1 echo hi").is_ok());
    }
}
