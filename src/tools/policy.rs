//! Which tools a session is offered and which of those it may run: the
//! allow/deny lists and the permission mode, decided without any prompt.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Tool;

/// How far a session's agent may act on its own. There is no one to ask for
/// approval in an HTTP service, so each mode decides up front:
///
/// | Mode                | Tools offered to the model                 | Tools that run                                                                |
/// |---------------------|--------------------------------------------|-------------------------------------------------------------------------------|
/// | `default`           | every allowed tool                         | read-only tools only (Read, Glob, Grep, Skill); others return an error result |
/// | `acceptEdits`       | every allowed tool                         | every offered tool                                                            |
/// | `bypassPermissions` | every allowed tool                         | every offered tool                                                            |
/// | `plan`              | read-only allowed tools only               | every offered tool (all read-only)                                            |
///
/// "Allowed" means: not matched by `disallowed_tools`, and matched by
/// `allowed_tools` when that list is not empty. A disallowed tool is never
/// offered and never run, whatever the mode. In `default` mode the model
/// still sees Bash, Write and Edit, and a call to one of them comes back as
/// an error saying that the session's permission mode does not allow it and
/// that `acceptEdits` or `bypassPermissions` would.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum PermissionMode {
    #[default]
    Default,
    AcceptEdits,
    BypassPermissions,
    Plan,
}

impl PermissionMode {
    pub const ALL: [PermissionMode; 4] = [
        Self::Default,
        Self::AcceptEdits,
        Self::BypassPermissions,
        Self::Plan,
    ];

    /// The name used in configuration and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::AcceptEdits => "acceptEdits",
            Self::BypassPermissions => "bypassPermissions",
            Self::Plan => "plan",
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

/// A permission mode name that is none of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown permission mode '{0}': expected one of default, acceptEdits, bypassPermissions, plan"
)]
pub struct UnknownPermissionMode(pub String);

impl FromStr for PermissionMode {
    type Err = UnknownPermissionMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| UnknownPermissionMode(s.to_owned()))
    }
}

/// A session's tool rules. Rules are tool names (`Read`), an MCP server
/// prefix (`mcp__github` matches every `mcp__github__*` tool, as does
/// `mcp__github__*`), or Claude Code's specifier form (`Bash(git:*)`), which
/// here matches the whole tool: specifiers are not enforced per call, so an
/// allowed `Bash(git:*)` offers all of Bash and a disallowed `Bash(rm:*)`
/// removes all of Bash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolPolicy {
    #[serde(default)]
    pub allowed_tools: Vec<String>,
    #[serde(default)]
    pub disallowed_tools: Vec<String>,
    #[serde(default)]
    pub mode: PermissionMode,
}

impl ToolPolicy {
    /// A policy with no allow/deny lists in the given mode.
    pub fn new(mode: PermissionMode) -> Self {
        Self {
            allowed_tools: Vec::new(),
            disallowed_tools: Vec::new(),
            mode,
        }
    }

    /// Whether `name` passes the allow/deny lists, whatever the mode.
    pub fn allows_name(&self, name: &str) -> bool {
        let denied = self.disallowed_tools.iter().any(|r| rule_matches(r, name));
        let listed = self.allowed_tools.is_empty()
            || self.allowed_tools.iter().any(|r| rule_matches(r, name));
        !denied && listed
    }

    /// Whether the model is shown this tool at all.
    pub fn offers(&self, tool: &dyn Tool) -> bool {
        self.allows_name(tool.name()) && (self.mode != PermissionMode::Plan || tool.read_only())
    }

    /// Whether an offered tool may run now; the error is the tool result
    /// the model gets instead.
    pub fn check_run(&self, tool: &dyn Tool) -> Result<(), String> {
        if !self.allows_name(tool.name()) {
            return Err(format!(
                "The tool {} is not allowed in this session.",
                tool.name()
            ));
        }
        if tool.read_only() || self.mode.runs_mutating_tools() {
            return Ok(());
        }
        Err(match self.mode {
            PermissionMode::Plan => format!(
                "The tool {} is not available in plan mode, which only allows read-only tools. \
                 Present the plan instead of making changes.",
                tool.name()
            ),
            _ => format!(
                "The tool {} was not run: this session's permission mode ({}) only allows \
                 read-only tools such as Read, Glob and Grep. Running commands and editing files needs \
                 the acceptEdits or bypassPermissions mode; ask the user to change the \
                 session's permission mode, or continue with read-only tools.",
                tool.name(),
                self.mode
            ),
        })
    }
}

/// Whether one rule names the tool `name`.
fn rule_matches(rule: &str, name: &str) -> bool {
    let rule = rule.trim();
    // `Bash(git:*)` → `Bash`: the specifier narrows a call, not the tool.
    let base = match rule.find('(') {
        Some(open) if rule.ends_with(')') => rule[..open].trim_end(),
        _ => rule,
    };
    if base == name {
        return true;
    }
    let Some(server) = base.strip_prefix("mcp__") else {
        return false;
    };
    // `mcp__server__*` and bare `mcp__server` both cover the server's tools.
    let server = server.strip_suffix("__*").unwrap_or(server);
    !server.is_empty()
        && !server.contains("__")
        && name
            .strip_prefix("mcp__")
            .and_then(|rest| rest.strip_prefix(server))
            .is_some_and(|rest| rest.starts_with("__") && rest.len() > 2)
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
    }

    #[test]
    fn rules_match_names_servers_and_specifiers() {
        assert!(rule_matches("Read", "Read"));
        assert!(!rule_matches("Read", "ReadMore"));
        assert!(rule_matches("Bash(git:*)", "Bash"));
        assert!(rule_matches("Bash(npm run test)", "Bash"));
        assert!(rule_matches("mcp__github", "mcp__github__create_issue"));
        assert!(rule_matches("mcp__github__*", "mcp__github__create_issue"));
        assert!(rule_matches(
            "mcp__github__create_issue",
            "mcp__github__create_issue"
        ));
        assert!(!rule_matches("mcp__github", "mcp__githubx__create_issue"));
        assert!(!rule_matches("mcp__github", "mcp__github__"));
        assert!(!rule_matches(
            "mcp__github__create",
            "mcp__github__create_issue"
        ));
        assert!(!rule_matches("mcp__", "mcp__github__x"));
    }

    #[test]
    fn allow_and_deny_lists() {
        let policy = ToolPolicy {
            allowed_tools: vec!["Read".into(), "mcp__fs".into(), "Bash(git:*)".into()],
            disallowed_tools: vec!["mcp__fs__delete".into()],
            mode: PermissionMode::BypassPermissions,
        };
        assert!(policy.allows_name("Read"));
        assert!(policy.allows_name("Bash"));
        assert!(policy.allows_name("mcp__fs__read"));
        assert!(!policy.allows_name("mcp__fs__delete"));
        assert!(!policy.allows_name("Write"));
        let deny_only = ToolPolicy {
            disallowed_tools: vec!["Bash(rm:*)".into()],
            ..ToolPolicy::default()
        };
        assert!(!deny_only.allows_name("Bash"));
        assert!(deny_only.allows_name("Write"));
    }
}
