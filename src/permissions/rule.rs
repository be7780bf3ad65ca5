//! One permission rule in Claude Code's syntax, `Tool` or
//! `Tool(specifier)`, parsed once into what it names and how it matches.

use std::fmt;

use super::paths::PathPattern;
use super::shell::CommandPattern;
use crate::skills::SettingSource;

/// Tools an `Edit(...)` rule speaks for.
pub const EDIT_TOOLS: &[&str] = &["Edit", "Write", "NotebookEdit", "MultiEdit"];
/// Tools a `Read(...)` rule speaks for.
pub const READ_TOOLS: &[&str] = &["Read", "Grep", "Glob", "LSP"];
/// Each tool's main input, which only the tool's own specifier form
/// describes (`Bash(git *)`, `Read(src/**)`), never `field:value`.
const PRIMARY_FIELDS: &[&str] = &["command", "file_path", "path", "notebook_path", "url"];

/// What a rule does to the calls it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Behavior {
    Allow,
    Ask,
    Deny,
}

impl Behavior {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Ask => "ask",
            Self::Deny => "deny",
        }
    }
}

/// Where a rule was written, for the messages that name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleSource {
    /// `defaults.allowed_tools`, `ask_tools` or `disallowed_tools`.
    Config(Behavior),
    /// `permissions.allow`, `ask` or `deny` of a settings file.
    Settings(SettingSource, Behavior),
    /// `allowed-tools` of the slash command the user invoked: allow rules
    /// for that turn only.
    Command,
    /// The session's own `allowed_tools` (which only narrow the tools
    /// offered) or `disallowed_tools`.
    Session(Behavior),
    /// A person approved a call with `remember: session`: an allow rule for
    /// the rest of the session.
    Remembered,
}

impl RuleSource {
    /// The setting that holds the rule, e.g. `defaults.disallowed_tools`.
    pub fn key(self) -> &'static str {
        match self {
            Self::Config(Behavior::Allow) => "defaults.allowed_tools",
            Self::Config(Behavior::Ask) => "defaults.ask_tools",
            Self::Config(Behavior::Deny) => "defaults.disallowed_tools",
            Self::Settings(_, Behavior::Allow) => "permissions.allow",
            Self::Settings(_, Behavior::Ask) => "permissions.ask",
            Self::Settings(_, Behavior::Deny) => "permissions.deny",
            Self::Command => "allowed-tools",
            Self::Session(Behavior::Deny) => "disallowed_tools",
            Self::Session(_) => "allowed_tools",
            Self::Remembered => "remember: session",
        }
    }
}

impl fmt::Display for RuleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(_) => write!(f, "{} in the service's configuration", self.key()),
            Self::Settings(scope, _) => write!(f, "{} in {}", self.key(), settings_file(*scope)),
            Self::Command => write!(f, "allowed-tools of the invoked slash command"),
            Self::Session(_) => write!(f, "the session's {}", self.key()),
            Self::Remembered => write!(f, "an approval remembered for this session"),
        }
    }
}

/// How messages name a settings file (never by the server's paths).
pub fn settings_file(scope: SettingSource) -> &'static str {
    match scope {
        SettingSource::User => "the service's user settings (~/.claude/settings.json)",
        SettingSource::Project => "the project's .claude/settings.json",
        SettingSource::Local => "the project's .claude/settings.local.json",
    }
}

/// Which tools a rule names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolPattern {
    /// One tool; `Read` and `Edit` speak for their families.
    Name(String),
    /// `mcp__server`: every tool of that server.
    Server(String),
    /// A name with `*` (`mcp__github__*`, `mcp__*`, `*`).
    Glob(String),
}

impl ToolPattern {
    /// Whether the rule names the tool `name` (a whole family for `Read`
    /// and `Edit`).
    pub fn covers(&self, name: &str) -> bool {
        match self {
            Self::Name(n) if n == "Edit" => EDIT_TOOLS.contains(&name),
            Self::Name(n) if n == "Read" => READ_TOOLS.contains(&name),
            Self::Name(n) => n == name,
            Self::Server(server) => name
                .strip_prefix("mcp__")
                .and_then(|rest| rest.strip_prefix(server.as_str()))
                .and_then(|rest| rest.strip_prefix("__"))
                .is_some_and(|tool| !tool.is_empty()),
            Self::Glob(glob) => super::shell::glob_matches(glob, name),
        }
    }
}

/// What a rule says about a call's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// No specifier, or `(*)`: every call.
    Any,
    /// `Bash(...)`.
    Command(CommandPattern),
    /// `Read(...)`, `Edit(...)`.
    Path(PathPattern),
    /// `WebFetch(domain:...)`, lower case, without a trailing dot.
    Domain(String),
    /// `Skill(...)`: a `*` glob over skill names.
    Skill(String),
    /// `Tool(field:value)`: a top-level scalar input field (deny and ask).
    Field { key: String, value: String },
    /// A specifier for a tool this service does not have: it matches no call.
    Unchecked,
}

/// A parsed rule with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    text: String,
    source: RuleSource,
    tool: ToolPattern,
    spec: Spec,
}

/// A rule that cannot be used, and why; the rule is skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("permission rule `{rule}` in {origin} is ignored: {problem}")]
pub struct RuleError {
    pub rule: String,
    pub origin: RuleSource,
    pub problem: String,
}

impl Rule {
    pub fn parse(text: &str, source: RuleSource) -> Result<Self, RuleError> {
        let fail = |problem: String| RuleError {
            rule: text.to_owned(),
            origin: source,
            problem,
        };
        let behavior = match source {
            RuleSource::Config(b) | RuleSource::Settings(_, b) | RuleSource::Session(b) => b,
            RuleSource::Command | RuleSource::Remembered => Behavior::Allow,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(fail("the rule is empty".into()));
        }
        let (name, content) = match trimmed.find('(') {
            Some(open) => {
                let Some(inner) = trimmed[open + 1..].strip_suffix(')') else {
                    return Err(fail(
                        "the specifier must end the rule with ')', as in `Bash(npm test)`".into(),
                    ));
                };
                (&trimmed[..open], Some(inner))
            }
            None if trimmed.contains(')') => {
                return Err(fail("')' without a '(' before it".into()));
            }
            None => (trimmed, None),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '*'))
        {
            return Err(fail(format!(
                "'{name}' is not a tool name (letters, digits, '_', '-', and '*' in patterns)"
            )));
        }
        let tool = tool_pattern(name, behavior).map_err(fail)?;
        let spec = match content.map(str::trim) {
            None | Some("*") => Spec::Any,
            Some("") => {
                return Err(fail(format!(
                    "the specifier is empty; write `{name}` to mean every call"
                )));
            }
            Some(spec) => specifier(&tool, spec, behavior).map_err(fail)?,
        };
        Ok(Self {
            text: trimmed.to_owned(),
            source,
            tool,
            spec,
        })
    }

    /// The rule as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn source(&self) -> RuleSource {
        self.source
    }

    pub fn behavior(&self) -> Behavior {
        match self.source {
            RuleSource::Config(b) | RuleSource::Settings(_, b) | RuleSource::Session(b) => b,
            RuleSource::Command | RuleSource::Remembered => Behavior::Allow,
        }
    }

    pub fn tool(&self) -> &ToolPattern {
        &self.tool
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Whether the rule is about every call of the tools it names.
    pub fn is_whole_tool(&self) -> bool {
        self.spec == Spec::Any
    }

    /// Whether the rule speaks for the tool `name`: directly, through a
    /// family, or (a scoped `Read` deny or ask rule) for the file tools
    /// that write what it protects from reading.
    pub fn concerns(&self, name: &str) -> bool {
        if self.tool.covers(name) {
            return true;
        }
        matches!(self.spec, Spec::Path(_))
            && self.behavior() != Behavior::Allow
            && self.tool == ToolPattern::Name("Read".into())
            && EDIT_TOOLS.contains(&name)
    }
}

fn tool_pattern(name: &str, behavior: Behavior) -> Result<ToolPattern, String> {
    if let Some(star) = name.find('*') {
        if behavior == Behavior::Allow {
            let literal = &name[..star];
            let anchored = literal
                .strip_prefix("mcp__")
                .and_then(|rest| rest.find("__"))
                .is_some_and(|end| end > 0);
            if !anchored {
                return Err(
                    "a tool-name pattern in an allow rule must begin with `mcp__<server>__`".into(),
                );
            }
        }
        return Ok(ToolPattern::Glob(name.to_owned()));
    }
    let Some(rest) = name.strip_prefix("mcp__") else {
        return Ok(ToolPattern::Name(name.to_owned()));
    };
    match rest.split_once("__") {
        None if rest.is_empty() => Err("`mcp__` names no server".into()),
        None => Ok(ToolPattern::Server(rest.to_owned())),
        Some((server, tool)) if server.is_empty() || tool.is_empty() => Err(format!(
            "'{name}' is not `mcp__<server>` or `mcp__<server>__<tool>`"
        )),
        Some(_) => Ok(ToolPattern::Name(name.to_owned())),
    }
}

fn specifier(tool: &ToolPattern, spec: &str, behavior: Behavior) -> Result<Spec, String> {
    let name = match tool {
        ToolPattern::Name(name) => name.as_str(),
        ToolPattern::Server(_) | ToolPattern::Glob(_) => {
            return field(spec, behavior)?.ok_or_else(|| {
                "a rule for a group of tools takes no specifier other than `field:value`".into()
            });
        }
    };
    match name {
        "Bash" => Ok(Spec::Command(CommandPattern::parse(spec))),
        "Read" | "Edit" => PathPattern::parse(spec).map(Spec::Path),
        "WebSearch" => Err("WebSearch takes no specifier".into()),
        "WebFetch" => match spec.strip_prefix("domain:") {
            Some(host) => {
                let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
                match host.as_str() {
                    "" => Err("`domain:` names no host".into()),
                    "*" => Ok(Spec::Any),
                    _ => Ok(Spec::Domain(host)),
                }
            }
            None => field(spec, behavior)?.ok_or_else(|| {
                "WebFetch rules take `domain:<host>`, as in `WebFetch(domain:example.com)`".into()
            }),
        },
        "Skill" => {
            let prefix = spec
                .strip_suffix(":*")
                .or_else(|| spec.strip_suffix(" *"))
                .map(|p| format!("{}*", p.trim_end()));
            Ok(Spec::Skill(prefix.unwrap_or_else(|| spec.to_owned())))
        }
        "Write" | "NotebookEdit" | "MultiEdit" | "Glob" | "Grep" => field(spec, behavior)?
            .ok_or_else(|| {
                let family = if matches!(name, "Glob" | "Grep") {
                    "Read"
                } else {
                    "Edit"
                };
                format!(
                    "path rules are read from {family}(...) rules only, which cover {name} too; \
                     write `{family}({spec})`"
                )
            }),
        _ if name.starts_with("mcp__") => field(spec, behavior)?
            .ok_or_else(|| "an MCP tool rule takes no specifier other than `field:value`".into()),
        // Cd(...), PowerShell(...): tools this service does not have, and
        // Agent(type), whose subagent types rules do not tell apart here
        // (`Agent` alone covers every type): nothing to match; accepted so
        // that settings written for Claude Code load without noise.
        _ => Ok(field(spec, behavior)?.unwrap_or(Spec::Unchecked)),
    }
}

/// `field:value`, or `None` when the specifier is not of that form.
fn field(spec: &str, behavior: Behavior) -> Result<Option<Spec>, String> {
    let Some((key, value)) = spec.split_once(':') else {
        return Ok(None);
    };
    let key = key.trim();
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    {
        return Ok(None);
    }
    if PRIMARY_FIELDS.contains(&key) {
        return Err(format!(
            "`{key}` is the tool's main input, which a `field:value` rule cannot name"
        ));
    }
    if behavior == Behavior::Allow {
        return Err("`field:value` rules work in deny and ask lists only".into());
    }
    Ok(Some(Spec::Field {
        key: key.to_owned(),
        value: value.trim().to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny(text: &str) -> Result<Rule, RuleError> {
        Rule::parse(text, RuleSource::Config(Behavior::Deny))
    }

    fn allow(text: &str) -> Result<Rule, RuleError> {
        Rule::parse(text, RuleSource::Config(Behavior::Allow))
    }

    #[test]
    fn whole_tool_rules() {
        for text in ["Bash", "Bash(*)", " Bash ", "Bash( * )"] {
            let rule = deny(text).unwrap();
            assert!(rule.is_whole_tool(), "{text}");
            assert!(rule.concerns("Bash") && !rule.concerns("Read"));
        }
        assert!(!deny("Bash(rm:*)").unwrap().is_whole_tool());
        assert!(deny("WebFetch(domain:*)").unwrap().is_whole_tool());
    }

    #[test]
    fn families_servers_and_globs() {
        let edit = deny("Edit").unwrap();
        for tool in ["Edit", "Write", "NotebookEdit"] {
            assert!(edit.concerns(tool), "{tool}");
        }
        assert!(!edit.concerns("Read"));
        let read = deny("Read(./secrets/**)").unwrap();
        for tool in ["Read", "Grep", "Glob", "Edit", "Write"] {
            assert!(read.concerns(tool), "{tool}");
        }
        assert!(!allow("Read(src/**)").unwrap().concerns("Write"));
        assert!(!deny("Read").unwrap().concerns("Write"));

        let server = deny("mcp__github").unwrap();
        assert_eq!(server.tool(), &ToolPattern::Server("github".into()));
        assert!(server.concerns("mcp__github__create_issue"));
        assert!(!server.concerns("mcp__githubx__create_issue"));
        assert!(!server.concerns("mcp__github__"));
        let glob = allow("mcp__github__*").unwrap();
        assert!(glob.concerns("mcp__github__create_issue"));
        assert!(!glob.concerns("mcp__gitlab__x"));
        let one = deny("mcp__github__create_issue").unwrap();
        assert!(one.concerns("mcp__github__create_issue"));
        assert!(!one.concerns("mcp__github__create"));
        assert!(deny("mcp__*").unwrap().concerns("mcp__a__b"));
        assert!(deny("*").unwrap().concerns("Bash"));
    }

    #[test]
    fn unusable_rules_say_why() {
        let cases = [
            ("", "empty"),
            ("Bash(git status", "end the rule with ')'"),
            ("Bash)", "without a '('"),
            ("Bash()", "write `Bash`"),
            ("Ba sh", "not a tool name"),
            ("mcp__", "names no server"),
            ("mcp__a__", "not `mcp__<server>`"),
            ("WebSearch(rust)", "no specifier"),
            ("WebFetch(example.com)", "domain:"),
            ("Write(src/**)", "`Edit(src/**)`"),
            ("Glob(src/**)", "`Read(src/**)`"),
            ("mcp__db__query(select)", "field:value"),
            ("Bash(x)(y", "end the rule"),
            ("mcp__db__query(file_path:x)", "main input"),
        ];
        for (text, needle) in cases {
            let err = deny(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(err.contains("defaults.disallowed_tools"), "{err}");
        }
        let err = allow("*").unwrap_err().to_string();
        assert!(err.contains("mcp__<server>__"), "{err}");
        assert!(allow("mcp__*").is_err());
        assert!(allow("mcp__db__query(database:prod)").is_err());
    }

    #[test]
    fn specifiers_by_tool() {
        assert!(matches!(
            deny("mcp__db__query(database:prod*)").unwrap().spec(),
            Spec::Field { key, value } if key == "database" && value == "prod*"
        ));
        assert_eq!(
            deny("WebFetch(domain:Example.COM.)").unwrap().spec(),
            &Spec::Domain("example.com".into())
        );
        assert_eq!(
            deny("Skill(deploy *)").unwrap().spec(),
            &Spec::Skill("deploy*".into())
        );
        assert_eq!(
            deny("Skill(review)").unwrap().spec(),
            &Spec::Skill("review".into())
        );
        assert_eq!(deny("Agent(Explore)").unwrap().spec(), &Spec::Unchecked);
        assert!(matches!(
            deny("Bash(git push:*)").unwrap().spec(),
            Spec::Command(_)
        ));
    }

    #[test]
    fn sources_name_the_setting_and_file() {
        let source = RuleSource::Settings(SettingSource::Project, Behavior::Deny);
        assert_eq!(
            source.to_string(),
            "permissions.deny in the project's .claude/settings.json"
        );
        assert_eq!(
            RuleSource::Config(Behavior::Ask).to_string(),
            "defaults.ask_tools in the service's configuration"
        );
    }
}
