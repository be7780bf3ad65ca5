//! The permission mode and the service-wide tool policy: the rules from
//! the configuration and which settings files add theirs each turn.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::AgentDefaults;
use crate::hooks::Hooks;
use crate::options::SessionOptions;
use crate::permissions::rule::settings_file;
use crate::permissions::{Behavior, Permissions, Rule, RuleSource, settings};
use crate::sandbox::Sandbox;
use crate::skills::SettingSource;
use crate::workspace::Workspace;

/// How far a session's agent may act on its own, for the calls no deny or
/// ask rule decides. There is no one to ask for approval in an HTTP
/// service, so each mode decides up front:
///
/// | Mode                | Tools offered to the model  | Calls that run                                            |
/// |---------------------|-----------------------------|-----------------------------------------------------------|
/// | `default`           | every allowed tool          | read-only tools, and calls an allow rule approves          |
/// | `dontAsk`           | every allowed tool          | the same; the refusal says denied, not "needs approval"   |
/// | `acceptEdits`       | every allowed tool          | every call                                                |
/// | `bypassPermissions` | every allowed tool          | every call                                                |
/// | `plan`              | read-only tools only        | every offered call (all read-only)                        |
///
/// Deny and ask rules apply in every mode. `manual` is accepted as another
/// name for `default`, as in Claude Code.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum PermissionMode {
    #[default]
    #[serde(alias = "manual")]
    Default,
    AcceptEdits,
    BypassPermissions,
    Plan,
    DontAsk,
}

impl PermissionMode {
    pub const ALL: [PermissionMode; 5] = [
        Self::Default,
        Self::AcceptEdits,
        Self::BypassPermissions,
        Self::Plan,
        Self::DontAsk,
    ];

    /// The name used in configuration and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::AcceptEdits => "acceptEdits",
            Self::BypassPermissions => "bypassPermissions",
            Self::Plan => "plan",
            Self::DontAsk => "dontAsk",
        }
    }

    /// How much the mode runs without a person, for comparing modes: a
    /// settings file may lower the configured mode, never raise it.
    pub fn rank(self) -> u8 {
        match self {
            Self::Plan => 0,
            Self::Default | Self::DontAsk => 1,
            Self::AcceptEdits => 2,
            Self::BypassPermissions => 3,
        }
    }

    /// Whether tools that change files or run commands may run.
    pub fn runs_mutating_tools(self) -> bool {
        matches!(self, Self::AcceptEdits | Self::BypassPermissions)
    }
}

impl fmt::Display for PermissionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A permission mode name that is none of the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown permission mode '{0}': expected one of default, acceptEdits, bypassPermissions, plan, dontAsk"
)]
pub struct UnknownPermissionMode(pub String);

impl FromStr for PermissionMode {
    type Err = UnknownPermissionMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "manual" {
            return Ok(Self::Default);
        }
        Self::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| UnknownPermissionMode(s.to_owned()))
    }
}

/// The service-wide part of every session's permissions: the configured
/// mode and rules, and which settings files add rules each turn.
///
/// A non-empty `defaults.allowed_tools` keeps its older meaning too: only
/// the tools it names are offered (`Bash(git:*)` offers Bash). Its rules
/// then approve calls as Claude Code's `allowedTools` do.
#[derive(Debug, Clone, Default)]
pub struct ToolPolicy {
    mode: PermissionMode,
    rules: Vec<Rule>,
    sources: Vec<SettingSource>,
    claude_home: Option<PathBuf>,
    /// Where the settings files' hooks run: Bash's sandbox.
    hook_sandbox: Sandbox,
    /// The session's `allowed_tools`, which narrow the tools offered.
    session_tools: Option<Vec<Rule>>,
}

impl ToolPolicy {
    /// A policy with no rules and no settings files, in `mode`.
    pub fn new(mode: PermissionMode) -> Self {
        Self {
            mode,
            ..Self::default()
        }
    }

    /// The configured policy: `defaults.permission_mode`, the three rule
    /// lists and `defaults.setting_sources`, with `claude_home` standing
    /// for `~/.claude`. Unusable rules are logged and skipped.
    pub fn from_config(
        defaults: &AgentDefaults,
        claude_home: Option<PathBuf>,
    ) -> Result<Self, UnknownPermissionMode> {
        let mode: PermissionMode = defaults.permission_mode.parse()?;
        Ok(Self::new(mode)
            .with_rules(Behavior::Allow, &defaults.allowed_tools)
            .with_rules(Behavior::Ask, &defaults.ask_tools)
            .with_rules(Behavior::Deny, &defaults.disallowed_tools)
            .with_settings(defaults.setting_sources.clone(), claude_home))
    }

    /// Adds configuration rules of one kind; unusable ones are logged.
    pub fn with_rules(mut self, behavior: Behavior, rules: &[impl AsRef<str>]) -> Self {
        for text in rules {
            match Rule::parse(text.as_ref(), RuleSource::Config(behavior)) {
                Ok(rule) => self.rules.push(rule),
                Err(e) => tracing::warn!("{e}"),
            }
        }
        self
    }

    /// Reads the settings files of `sources` at the start of each turn;
    /// `claude_home` is where the `user` source's `settings.json` lives.
    pub fn with_settings(
        mut self,
        sources: Vec<SettingSource>,
        claude_home: Option<PathBuf>,
    ) -> Self {
        self.sources = sources;
        self.claude_home = claude_home;
        self
    }

    /// Runs the settings files' hooks through `sandbox` (Bash's).
    pub fn with_hook_sandbox(mut self, sandbox: Sandbox) -> Self {
        self.hook_sandbox = sandbox;
        self
    }

    pub fn mode(&self) -> PermissionMode {
        self.mode
    }

    /// This policy narrowed by a session's options: a lower mode, more deny
    /// rules, fewer tools offered. Nothing in them can widen it: a mode
    /// above the configured one is ignored (the API refuses it up front).
    pub fn for_session(&self, options: &SessionOptions) -> Self {
        let mut policy = self.clone();
        if let Some(mode) = options.permission_mode
            && mode.rank() <= self.mode.rank()
        {
            policy.mode = mode;
        }
        let parse = |texts: &[String], behavior: Behavior| -> Vec<Rule> {
            texts
                .iter()
                .filter_map(|text| {
                    Rule::parse(text, RuleSource::Session(behavior))
                        .map_err(|e| tracing::warn!("{e}"))
                        .ok()
                })
                .collect()
        };
        if let Some(denied) = &options.disallowed_tools {
            policy.rules.extend(parse(denied, Behavior::Deny));
        }
        if let Some(allowed) = &options.allowed_tools {
            policy.session_tools = Some(parse(allowed, Behavior::Allow));
        }
        policy
    }

    /// The permissions of one turn in `workspace` (see [`ToolPolicy::for_turn`]).
    pub fn permissions(&self, workspace: &Workspace) -> Permissions {
        self.for_turn(workspace).0
    }

    /// The permissions and hooks of one turn in `workspace`: the
    /// configured rules and what the settings files say now. Reads files;
    /// call it off the async workers.
    pub fn for_turn(&self, workspace: &Workspace) -> (Permissions, Hooks) {
        let mut permissions = Permissions::new(self.mode, workspace, self.claude_home.clone());
        permissions.add(self.rules.iter().cloned());
        if let Some(rules) = &self.session_tools {
            permissions.offer_only(rules.clone());
        }
        let files = settings::load(&self.sources, self.claude_home.as_deref(), workspace);
        let mut chosen = None;
        for (scope, file) in &files {
            let scope = *scope;
            let parse = |list: &[String], behavior: Behavior| -> Vec<Rule> {
                list.iter()
                    .filter_map(|text| {
                        Rule::parse(text, RuleSource::Settings(scope, behavior))
                            .map_err(|e| tracing::warn!(cwd = %workspace.cwd().display(), "{e}"))
                            .ok()
                    })
                    .collect()
            };
            permissions.add(parse(&file.deny, Behavior::Deny));
            permissions.add(parse(&file.ask, Behavior::Ask));
            let allow = parse(&file.allow, Behavior::Allow);
            // The agent can write the project's files; an allow rule there
            // would let it approve its own next calls (as Claude Code does
            // not honour them without a trust prompt). Deny and ask rules
            // only ever take away, so they always apply.
            if scope == SettingSource::User {
                permissions.add(allow);
            } else {
                permissions.add_unhonoured(allow);
            }
            // The most specific file that names a valid mode decides.
            if let Some(mode) = &file.default_mode {
                match mode.parse::<PermissionMode>() {
                    Ok(mode) => chosen = Some((mode, scope)),
                    Err(e) => tracing::warn!(
                        settings = settings_file(scope),
                        "permissions.defaultMode ignored: {e}"
                    ),
                }
            }
        }
        if let Some((mode, scope)) = chosen
            && !permissions.lower_mode(mode, scope)
        {
            tracing::warn!(
                settings = settings_file(scope),
                requested = %mode,
                configured = %self.mode,
                "permissions.defaultMode may only lower the configured mode; ignored"
            );
        }
        let hooks = self.hooks(&files, permissions.mode());
        (permissions, hooks)
    }

    /// The files' hooks. A project's hooks run commands of its own
    /// choosing, so they run only in modes that would run any command
    /// anyway (acceptEdits, bypassPermissions): in the others a file the
    /// agent wrote would get it what its mode refuses. The user settings'
    /// hooks always run; `disableAllHooks` in any file turns all off.
    fn hooks(
        &self,
        files: &[(SettingSource, settings::SettingsFile)],
        mode: PermissionMode,
    ) -> Hooks {
        if files.iter().any(|(_, f)| f.disable_all_hooks) {
            return Hooks::default();
        }
        let runs_anything = mode.runs_mutating_tools();
        let chosen = files.iter().filter_map(|(scope, file)| {
            let hooks = file.hooks.as_ref()?;
            if *scope != SettingSource::User && !runs_anything {
                tracing::info!(
                    settings = settings_file(*scope),
                    %mode,
                    "project hooks are not run in this permission mode"
                );
                return None;
            }
            Some((*scope, hooks))
        });
        Hooks::from_settings(chosen, self.hook_sandbox.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_round_trip() {
        for mode in PermissionMode::ALL {
            assert_eq!(mode.as_str().parse::<PermissionMode>().unwrap(), mode);
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(json, format!("\"{}\"", mode.as_str()));
            assert_eq!(serde_json::from_str::<PermissionMode>(&json).unwrap(), mode);
        }
        let err = "yolo".parse::<PermissionMode>().unwrap_err();
        assert!(err.to_string().contains("'yolo'") && err.to_string().contains("acceptEdits"));
        assert!(serde_json::from_str::<PermissionMode>("\"accept_edits\"").is_err());
        assert_eq!(PermissionMode::default(), PermissionMode::Default);
        assert_eq!(
            "manual".parse::<PermissionMode>(),
            Ok(PermissionMode::Default)
        );
        assert_eq!(
            serde_json::from_str::<PermissionMode>("\"manual\"").unwrap(),
            PermissionMode::Default
        );
        assert!("auto".parse::<PermissionMode>().is_err());
    }

    #[test]
    fn modes_rank_from_plan_to_bypass() {
        use PermissionMode::*;
        assert!(Plan.rank() < Default.rank());
        assert_eq!(Default.rank(), DontAsk.rank());
        assert!(Default.rank() < AcceptEdits.rank());
        assert!(AcceptEdits.rank() < BypassPermissions.rank());
    }

    #[test]
    fn a_session_can_narrow_the_policy_but_never_widen_it() {
        let service =
            ToolPolicy::new(PermissionMode::AcceptEdits).with_rules(Behavior::Deny, &["WebFetch"]);
        let options: SessionOptions = serde_json::from_value(serde_json::json!({
            "permission_mode": "plan", "disallowed_tools": ["Bash(rm:*)", "Bash("],
            "allowed_tools": ["Read"]
        }))
        .unwrap();
        let session = service.for_session(&options);
        assert_eq!(session.mode(), PermissionMode::Plan);
        let texts: Vec<&str> = session.rules.iter().map(Rule::text).collect();
        assert_eq!(texts, ["WebFetch", "Bash(rm:*)"]);
        assert_eq!(session.session_tools.as_ref().map(Vec::len), Some(1));

        let louder: SessionOptions =
            serde_json::from_value(serde_json::json!({"permission_mode": "bypassPermissions"}))
                .unwrap();
        assert_eq!(
            service.for_session(&louder).mode(),
            PermissionMode::AcceptEdits
        );
        assert_eq!(
            service.for_session(&SessionOptions::default()).rules.len(),
            1
        );
    }

    #[test]
    fn unusable_config_rules_are_skipped() {
        let policy = ToolPolicy::new(PermissionMode::Default)
            .with_rules(Behavior::Deny, &["Bash(rm:*)", "Bash(", "WebSearch(x)"])
            .with_rules(Behavior::Allow, &["Read"]);
        let texts: Vec<&str> = policy.rules.iter().map(Rule::text).collect();
        assert_eq!(texts, ["Bash(rm:*)", "Read"]);
    }
}
