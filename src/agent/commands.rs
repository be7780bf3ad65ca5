//! Slash commands: a message starting with `/name args`. Built-ins the
//! service answers itself (`/help`) or hands to the turn loop (`/compact`,
//! `/clear`); a skill of that name, or a custom command from
//! `.claude/commands/*.md` (project) or `{claude_home}/commands/*.md` (user),
//! is expanded into the message the model gets. Any other `/word` is text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Settings;
use crate::plugins::PluginConfig;
use crate::skills::{self, SettingSource, Skill};
use crate::workspace::{FileError, OpenFile, Workspace};

/// A command file larger than this is a mistake, not a prompt.
const MAX_COMMAND_FILE_BYTES: u64 = 256 * 1024;
/// A description taken from a command's first line is cut here.
const MAX_DERIVED_DESCRIPTION_CHARS: usize = 100;

/// The built-in commands, in the order `/help` lists them.
pub const BUILTINS: &[BuiltinCommand] = &[
    BuiltinCommand {
        name: "help",
        argument_hint: None,
        description: "List the commands this session understands",
    },
    BuiltinCommand {
        name: "compact",
        argument_hint: Some("[focus]"),
        description: "Summarise the conversation so far to free context; optional text says what the summary must keep",
    },
    BuiltinCommand {
        name: "clear",
        argument_hint: None,
        description: "Start again from an empty conversation in the same session",
    },
];

pub struct BuiltinCommand {
    pub name: &'static str,
    pub argument_hint: Option<&'static str>,
    pub description: &'static str,
}

/// A built-in command, recognised before anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Builtin {
    /// `/help`: the text to answer with, listing every command.
    Help(String),
    /// `/compact [focus]`: summarise the history, keeping what `focus` says.
    Compact(Option<String>),
    /// `/clear`: start from an empty history.
    Clear,
}

/// What a user message turns into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// A message for the model: the text as typed, or a command's expansion.
    Prompt(Expansion),
    /// A built-in the service handles without sending the message on.
    Builtin(Builtin),
}

/// The message the model gets (and the history keeps) for this turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expansion {
    pub text: String,
    /// The command or skill that produced `text`, when one did.
    pub command: Option<String>,
    /// `model` front matter: the model for this turn (absent or `inherit`:
    /// the configured one).
    pub model: Option<String>,
    /// `allowed-tools` front matter, in Claude Code's rule syntax (`Read`,
    /// `Bash(git diff:*)`): tools the command may use without asking during
    /// this turn: allow rules of the turn's tool set.
    pub allowed_tools: Vec<String>,
}

impl Expansion {
    fn plain(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            command: None,
            model: None,
            allowed_tools: Vec::new(),
        }
    }
}

/// Where a custom command comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandScope {
    User,
    Project,
}

impl CommandScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Project => "project",
        }
    }
}

/// A custom command file, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandFile {
    /// The file name without `.md`.
    pub name: String,
    /// `description` front matter, else the body's first line.
    pub description: String,
    pub argument_hint: Option<String>,
    pub model: Option<String>,
    pub allowed_tools: Vec<String>,
    /// `arguments` front matter: names for the positional arguments, so the
    /// body can say `$issue` for the first.
    pub arguments: Vec<String>,
    pub body: String,
    pub scope: CommandScope,
    pub path: PathBuf,
}

/// One entry of `/help` and `GET /api/v1/commands`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CommandInfo {
    /// Typed as `/name`.
    pub name: String,
    pub description: String,
    /// What to type after the name, e.g. `<issue> [priority]`.
    pub argument_hint: Option<String>,
    /// `builtin`, `command` or `skill`.
    pub kind: String,
    /// `builtin`; `user` or `project` for commands; for skills, the skill's
    /// own source (`user`, `project`, `plugin:<name>`).
    pub source: String,
}

/// What reading commands needs from the settings.
#[derive(Debug, Clone)]
pub struct CommandSources {
    pub claude_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub sources: Vec<SettingSource>,
    pub plugins: Vec<PluginConfig>,
}

impl CommandSources {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            claude_home: settings.user.claude_home(),
            home: skills::home_dir(),
            sources: settings.defaults.setting_sources.clone(),
            plugins: settings.plugins.clone(),
        }
    }

    /// Without the project source, for a user whose directory does not exist.
    pub fn without_project(mut self) -> Self {
        self.sources.retain(|s| *s != SettingSource::Project);
        self
    }
}

/// Turns a user message into what the turn does with it. Files are read
/// afresh, so a command added or edited works on the next message.
pub async fn prepare(settings: &Settings, workspace: &Workspace, message: &str) -> Invocation {
    if parse_invocation(message).is_none() {
        return Invocation::Prompt(Expansion::plain(message));
    }
    let sources = CommandSources::from_settings(settings);
    let ws = workspace.clone();
    let owned = message.to_owned();
    // Discovery walks the disk; keep it off the async workers.
    match tokio::task::spawn_blocking(move || prepare_blocking(&sources, &ws, &owned)).await {
        Ok(invocation) => invocation,
        Err(err) => {
            tracing::warn!(error = %err, "command lookup failed");
            Invocation::Prompt(Expansion::plain(message))
        }
    }
}

fn prepare_blocking(sources: &CommandSources, workspace: &Workspace, message: &str) -> Invocation {
    let Some((name, args)) = parse_invocation(message) else {
        return Invocation::Prompt(Expansion::plain(message));
    };
    match name {
        "help" => {
            return Invocation::Builtin(Builtin::Help(help_text(&catalog(sources, workspace))));
        }
        "compact" => {
            return Invocation::Builtin(Builtin::Compact(
                Some(args.to_owned()).filter(|a| !a.is_empty()),
            ));
        }
        "clear" => return Invocation::Builtin(Builtin::Clear),
        _ => {}
    }
    // Claude Code's rule: a skill and a command of the same name, the skill wins.
    if let Some(skill) = user_skills(sources, workspace)
        .into_iter()
        .find(|s| s.name == name)
    {
        return Invocation::Prompt(Expansion {
            text: skill.instructions(args),
            command: Some(name.to_owned()),
            model: None,
            allowed_tools: Vec::new(),
        });
    }
    match discover(sources, workspace).remove(name) {
        Some(command) => Invocation::Prompt(Expansion {
            text: substitute(&command.body, args, &command.arguments),
            command: Some(command.name),
            model: command.model,
            allowed_tools: command.allowed_tools,
        }),
        None => Invocation::Prompt(Expansion::plain(message)),
    }
}

/// Every command a session sees: built-ins, then the custom ones by name
/// (a skill shadowing a command of its name), for `/help` and the listing.
pub async fn list(sources: CommandSources, workspace: &Workspace) -> Vec<CommandInfo> {
    let ws = workspace.clone();
    match tokio::task::spawn_blocking(move || catalog(&sources, &ws)).await {
        Ok(list) => list,
        Err(err) => {
            tracing::warn!(error = %err, "command listing failed");
            Vec::new()
        }
    }
}

fn catalog(sources: &CommandSources, workspace: &Workspace) -> Vec<CommandInfo> {
    let mut custom: BTreeMap<String, CommandInfo> = discover(sources, workspace)
        .into_values()
        .map(|c| {
            (
                c.name.clone(),
                CommandInfo {
                    name: c.name,
                    description: c.description,
                    argument_hint: c.argument_hint,
                    kind: "command".into(),
                    source: c.scope.as_str().into(),
                },
            )
        })
        .collect();
    for skill in user_skills(sources, workspace) {
        if BUILTINS.iter().any(|b| b.name == skill.name) {
            continue;
        }
        custom.insert(
            skill.name.clone(),
            CommandInfo {
                name: skill.name,
                description: skill.description,
                argument_hint: skill.argument_hint,
                kind: "skill".into(),
                source: skill.source,
            },
        );
    }
    BUILTINS
        .iter()
        .map(|b| CommandInfo {
            name: b.name.into(),
            description: b.description.into(),
            argument_hint: b.argument_hint.map(str::to_owned),
            kind: "builtin".into(),
            source: "builtin".into(),
        })
        .chain(custom.into_values())
        .collect()
}

fn user_skills(sources: &CommandSources, workspace: &Workspace) -> Vec<Skill> {
    skills::discover(
        sources.home.as_deref(),
        &sources.sources,
        &sources.plugins,
        workspace,
    )
}

/// The `/help` answer.
pub fn help_text(commands: &[CommandInfo]) -> String {
    let line = |c: &CommandInfo| {
        let hint = c
            .argument_hint
            .as_deref()
            .map_or_else(String::new, |h| format!(" {h}"));
        format!("- /{}{hint}: {}", c.name, c.description)
    };
    let mut text = String::from("Commands go at the start of a message.\n\nBuilt in:\n");
    for c in commands.iter().filter(|c| c.kind == "builtin") {
        text.push_str(&line(c));
        text.push('\n');
    }
    let custom: Vec<&CommandInfo> = commands.iter().filter(|c| c.kind != "builtin").collect();
    if custom.is_empty() {
        text.push_str(
            "\nNo custom commands yet: a Markdown file in the project's .claude/commands/ \
             (review.md for /review) becomes one, its text sent to the agent with $ARGUMENTS \
             replaced by what follows the command.",
        );
    } else {
        text.push_str("\nCustom:\n");
        for c in custom {
            let origin = match c.kind.as_str() {
                "skill" => format!("skill, {}", c.source),
                _ => c.source.clone(),
            };
            text.push_str(&format!("{} ({origin})\n", line(c)));
        }
    }
    text.trim_end().to_owned()
}

/// The custom commands a session sees, by name. A project command wins over
/// a user command of the same name (the project's is the more specific, as
/// with skills); names of built-ins are taken and such files are skipped.
pub fn discover(sources: &CommandSources, workspace: &Workspace) -> BTreeMap<String, CommandFile> {
    let mut found = BTreeMap::new();
    if sources.sources.contains(&SettingSource::User)
        && let Some(home) = &sources.claude_home
    {
        for command in scan_user(&home.join("commands")) {
            found.insert(command.name.clone(), command);
        }
    }
    if sources.sources.contains(&SettingSource::Project) {
        for command in scan_project(workspace) {
            found.insert(command.name.clone(), command);
        }
    }
    found.retain(|name, command| {
        let builtin = BUILTINS.iter().any(|b| b.name == name.as_str());
        if builtin {
            tracing::warn!(file = %command.path.display(), "a command file named after a built-in command is ignored");
        }
        !builtin
    });
    found
}

/// `{claude_home}/commands/*.md`: the service's own files.
fn scan_user(dir: &Path) -> Vec<CommandFile> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list commands");
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| !p.is_dir())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            let opened = crate::workspace::open_trusted_file(&path);
            load(&path, opened, CommandScope::User)
        })
        .collect()
}

/// `{cwd}/.claude/commands/*.md`, listed and read beneath the session's
/// handle: a link there cannot lead out of the session's directory.
fn scan_project(workspace: &Workspace) -> Vec<CommandFile> {
    let dir = workspace.cwd().join(".claude/commands");
    let entries = match workspace.list_dir(&dir) {
        Ok(entries) => entries,
        Err(FileError::NotFound(_)) => return Vec::new(),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list commands");
            return Vec::new();
        }
    };
    entries
        .into_iter()
        .filter(|e| !e.is_dir)
        .filter_map(|entry| {
            let path = dir.join(&entry.name);
            let opened = workspace.open_file(&path, crate::workspace::Access::Read);
            load(&path, opened, CommandScope::Project)
        })
        .collect()
}

/// `None` for a file that is not a command (not `.md`, a bad name) or
/// cannot be read, with a warning for the latter.
fn load(
    path: &Path,
    opened: Result<OpenFile, FileError>,
    scope: CommandScope,
) -> Option<CommandFile> {
    let name = path.file_name()?.to_str()?.strip_suffix(".md")?;
    if !valid_name(name) {
        tracing::warn!(file = %path.display(), "a command file's name must be letters, digits, '-', '_', '.' or ':'");
        return None;
    }
    let read = opened
        .map_err(|e| e.to_string())
        .and_then(|opened| opened.read_text(MAX_COMMAND_FILE_BYTES));
    let parsed = read.and_then(|text| parse(name, &text));
    match parsed {
        Ok(mut command) => {
            command.scope = scope;
            command.path = path.to_path_buf();
            Some(command)
        }
        Err(reason) => {
            tracing::warn!(file = %path.display(), %reason, "skipping a command file");
            None
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// Parses a command file: optional front matter, then the prompt.
pub fn parse(name: &str, text: &str) -> Result<CommandFile, String> {
    let (yaml, body) = skills::split_front_matter(text)?;
    let front = yaml.as_deref().map(FrontMatter::parse).unwrap_or_default();
    let body = body.trim_start_matches(['\r', '\n']).to_owned();
    let description = front
        .description
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| first_line(&body));
    Ok(CommandFile {
        name: name.to_owned(),
        description,
        argument_hint: front.argument_hint.filter(|h| !h.is_empty()),
        model: front
            .model
            .filter(|m| !m.is_empty() && !m.eq_ignore_ascii_case("inherit")),
        allowed_tools: front.allowed_tools,
        arguments: front.arguments,
        body,
        scope: CommandScope::Project,
        path: PathBuf::new(),
    })
}

/// A command without a description is described by its first line.
fn first_line(body: &str) -> String {
    let line = body
        .lines()
        .map(|l| l.trim().trim_start_matches('#').trim())
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut cut: String = line.chars().take(MAX_DERIVED_DESCRIPTION_CHARS).collect();
    if cut.len() < line.len() {
        cut.push('…');
    }
    cut
}

#[derive(Debug, Default)]
struct FrontMatter {
    description: Option<String>,
    argument_hint: Option<String>,
    model: Option<String>,
    allowed_tools: Vec<String>,
    arguments: Vec<String>,
}

impl FrontMatter {
    /// Read as YAML; front matter that is not valid YAML (Claude Code's own
    /// examples write `argument-hint: [pr] [priority]`) is read a line at a
    /// time, `key: value`, instead of dropping the command.
    fn parse(yaml: &str) -> Self {
        use serde_yaml::Value;
        match serde_yaml::from_str::<Value>(yaml) {
            Ok(Value::Mapping(map)) => {
                let get = |key: &str| map.get(key);
                Self {
                    description: get("description").and_then(scalar),
                    argument_hint: get("argument-hint").and_then(hint_text),
                    model: get("model").and_then(scalar),
                    allowed_tools: get("allowed-tools").map_or_else(Vec::new, |v| match v {
                        Value::Sequence(items) => items.iter().filter_map(scalar).collect(),
                        other => scalar(other).map_or_else(Vec::new, |s| split_tool_list(&s)),
                    }),
                    arguments: get("arguments").map_or_else(Vec::new, |v| match v {
                        Value::Sequence(items) => items.iter().filter_map(scalar).collect(),
                        other => scalar(other).map_or_else(Vec::new, |s| {
                            s.split_whitespace().map(str::to_owned).collect()
                        }),
                    }),
                }
            }
            Ok(_) => Self::default(),
            Err(_) => Self::parse_lines(yaml),
        }
    }

    fn parse_lines(yaml: &str) -> Self {
        let mut front = Self::default();
        for line in yaml.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            if key.starts_with(char::is_whitespace) {
                continue;
            }
            let value = unquote(value.trim()).to_owned();
            match key.trim() {
                "description" => front.description = Some(value),
                "argument-hint" => front.argument_hint = Some(value),
                "model" => front.model = Some(value),
                "allowed-tools" => front.allowed_tools = split_tool_list(&value),
                "arguments" => {
                    front.arguments = value
                        .trim_matches(['[', ']'])
                        .split([',', ' '])
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
                _ => {}
            }
        }
        front
    }
}

fn unquote(value: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    value
}

fn scalar(value: &serde_yaml::Value) -> Option<String> {
    use serde_yaml::Value;
    match value {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// An `argument-hint` as written: YAML reads `[message]` as a list, which
/// is shown as it was typed.
pub fn hint_text(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::Sequence(items) => Some(
            items
                .iter()
                .filter_map(scalar)
                .map(|item| format!("[{item}]"))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        other => scalar(other),
    }
    .filter(|h| !h.is_empty())
}

/// `Read, Grep` or `Bash(git add:*) Bash(git status:*)`: split on commas
/// and spaces outside parentheses, so a rule's own spaces stay in it.
pub fn split_tool_list(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for c in list.chars() {
        match c {
            '(' => {
                depth += 1;
                current.push(c);
            }
            ')' => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            c if depth == 0 && (c == ',' || c.is_whitespace()) => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// `/name args` at the start of a message: the name and the rest, trimmed.
/// `None` for anything else, a path like `/usr/bin` included.
pub fn parse_invocation(message: &str) -> Option<(&str, &str)> {
    let rest = message.trim_start().strip_prefix('/')?;
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let (name, args) = rest.split_at(end);
    valid_name(name).then(|| (name, args.trim()))
}

/// Splits arguments the way a shell would: whitespace separates them,
/// single quotes keep everything literally, double quotes keep spaces (a
/// backslash escapes `"`, `\`, `$` and `` ` `` inside them), a backslash
/// outside quotes escapes the next character. An unclosed quote falls back
/// to splitting on whitespace.
pub fn split_arguments(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => current.push(c),
                        None => return raw.split_whitespace().map(str::to_owned).collect(),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.peek() {
                            Some(&next) if matches!(next, '"' | '\\' | '$' | '`') => {
                                current.push(next);
                                chars.next();
                            }
                            _ => current.push('\\'),
                        },
                        Some(c) => current.push(c),
                        None => return raw.split_whitespace().map(str::to_owned).collect(),
                    }
                }
            }
            '\\' => {
                in_word = true;
                current.push(chars.next().unwrap_or('\\'));
            }
            c => {
                in_word = true;
                current.push(c);
            }
        }
    }
    if in_word {
        out.push(current);
    }
    out
}

/// Fills a command's (or skill's) body with its arguments, as Claude Code
/// does:
/// - `$ARGUMENTS`: everything after the name, as typed;
/// - `$ARGUMENTS[N]` and `$N`: the argument at 0-based index N (`$0` is the
///   first), split as [`split_arguments`] does; one past the end stays as
///   written;
/// - `$name`: the argument at the position of `name` in `names` (the
///   `arguments` front matter), empty when not given;
/// - `\$...`: the placeholder kept literally, without the backslash.
///
/// When the body holds none of these and there are arguments, they are
/// appended as `ARGUMENTS: <arguments>`, so they are never lost.
pub fn substitute(body: &str, raw_args: &str, names: &[String]) -> String {
    let raw_args = raw_args.trim();
    let args = split_arguments(raw_args);
    let mut out = String::with_capacity(body.len() + raw_args.len());
    let mut placed = false;
    let mut rest = body;
    while let Some(at) = rest.find('$') {
        let (before, from) = rest.split_at(at);
        let Some((len, value)) = placeholder(&from[1..], &args, raw_args, names) else {
            out.push_str(before);
            out.push('$');
            rest = &from[1..];
            continue;
        };
        let token = &from[..1 + len];
        if let Some(kept) = before.strip_suffix('\\') {
            out.push_str(kept);
            out.push_str(token);
        } else {
            out.push_str(before);
            out.push_str(value.as_deref().unwrap_or(token));
            placed = true;
        }
        rest = &from[1 + len..];
    }
    out.push_str(rest);
    if !placed && !raw_args.is_empty() {
        return format!("{}\n\nARGUMENTS: {raw_args}", out.trim_end());
    }
    out
}

/// The placeholder at the start of `s` (just after a `$`): its length and
/// its value (`None`: an index past the end, left as written).
fn placeholder(
    s: &str,
    args: &[String],
    raw_args: &str,
    names: &[String],
) -> Option<(usize, Option<String>)> {
    if let Some(rest) = s.strip_prefix("ARGUMENTS") {
        if let Some(index) = rest.strip_prefix('[') {
            let digits = index.chars().take_while(char::is_ascii_digit).count();
            if digits > 0 && index[digits..].starts_with(']') {
                let n: usize = index[..digits].parse().ok()?;
                return Some(("ARGUMENTS[".len() + digits + 1, args.get(n).cloned()));
            }
        }
        return Some(("ARGUMENTS".len(), Some(raw_args.to_owned())));
    }
    let digits = s.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 {
        let n: usize = s[..digits].parse().ok()?;
        return Some((digits, args.get(n).cloned()));
    }
    let continues = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    names
        .iter()
        .enumerate()
        .filter(|(_, name)| {
            !name.is_empty()
                && s.starts_with(name.as_str())
                && !s[name.len()..].starts_with(continues)
        })
        .max_by_key(|(_, name)| name.len())
        .map(|(i, name)| (name.len(), Some(args.get(i).cloned().unwrap_or_default())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn arguments_split_like_a_shell() {
        assert_eq!(
            split_arguments(r#"42 "very high" 'it''s' a\ b "q\"uote" "" \$x"#),
            ["42", "very high", "its", "a b", "q\"uote", "", "$x"]
        );
        assert_eq!(split_arguments("   "), Vec::<String>::new());
        // An unclosed quote: plain whitespace splitting.
        assert_eq!(split_arguments(r#"a "b c"#), ["a", "\"b", "c"]);
    }

    #[test]
    fn positional_arguments_count_from_zero() {
        let body = "Fix $0 (priority $ARGUMENTS[1]); all: $ARGUMENTS; missing: $2 $ARGUMENTS[5].";
        assert_eq!(
            substitute(body, r#"  42 "very high"  "#, &[]),
            r#"Fix 42 (priority very high); all: 42 "very high"; missing: $2 $ARGUMENTS[5]."#
        );
    }

    #[test]
    fn arguments_are_appended_when_the_body_does_not_place_them() {
        assert_eq!(
            substitute("Review the code.\n\n", "src/main.rs", &[]),
            "Review the code.\n\nARGUMENTS: src/main.rs"
        );
        assert_eq!(
            substitute("Review the code.\n", "", &[]),
            "Review the code.\n"
        );
        // A body using only a positional has placed them.
        assert_eq!(substitute("Open $0.", "a b", &[]), "Open a.");
    }

    #[test]
    fn named_arguments_escapes_and_plain_dollars() {
        let declared = names(&["issue", "issue-owner"]);
        assert_eq!(
            substitute(
                "Issue $issue of $issue-owner, not $issues; cost $5 or $; keep \\$issue and \\$0; $HOME",
                "7",
                &declared
            ),
            "Issue 7 of , not $issues; cost $5 or $; keep $issue and $0; $HOME"
        );
    }

    #[test]
    fn invocations_are_recognised_at_the_start_only() {
        assert_eq!(parse_invocation("/fix 42 now"), Some(("fix", "42 now")));
        assert_eq!(parse_invocation("  /help"), Some(("help", "")));
        assert_eq!(parse_invocation("/ns:cmd\targ"), Some(("ns:cmd", "arg")));
        assert_eq!(parse_invocation("please /fix"), None);
        assert_eq!(parse_invocation("/usr/bin/env python"), None);
        assert_eq!(parse_invocation("/"), None);
    }

    #[test]
    fn front_matter_is_read_leniently() {
        let command = parse(
            "fix",
            "---\ndescription: Fix an issue\nargument-hint: [issue] [priority]\n\
             model: claude-haiku-4-5\nallowed-tools: Bash(git add:*), Bash(git status:*) Read\n\
             ---\nFix issue $0.\n",
        )
        .unwrap();
        assert_eq!(command.description, "Fix an issue");
        assert_eq!(command.argument_hint.as_deref(), Some("[issue] [priority]"));
        assert_eq!(command.model.as_deref(), Some("claude-haiku-4-5"));
        assert_eq!(
            command.allowed_tools,
            ["Bash(git add:*)", "Bash(git status:*)", "Read"]
        );
        assert_eq!(command.body, "Fix issue $0.\n");

        let command = parse(
            "review",
            "---\nargument-hint: [file]\nmodel: inherit\nallowed-tools:\n  - Read\n  - Grep\n\
             arguments: [file, depth]\n---\n\n# Review a file carefully\nLook at $file.\n",
        )
        .unwrap();
        assert_eq!(command.description, "Review a file carefully");
        assert_eq!(command.argument_hint.as_deref(), Some("[file]"));
        assert_eq!(command.model, None);
        assert_eq!(command.allowed_tools, ["Read", "Grep"]);
        assert_eq!(command.arguments, ["file", "depth"]);

        let plain = parse("plain", "Just do it.\n").unwrap();
        assert_eq!(plain.description, "Just do it.");
        assert_eq!(plain.body, "Just do it.\n");
        assert!(parse("broken", "---\ndescription: x\n").is_err());
    }

    #[test]
    fn help_lists_builtins_and_custom_commands() {
        let mut commands: Vec<CommandInfo> = BUILTINS
            .iter()
            .map(|b| CommandInfo {
                name: b.name.into(),
                description: b.description.into(),
                argument_hint: b.argument_hint.map(str::to_owned),
                kind: "builtin".into(),
                source: "builtin".into(),
            })
            .collect();
        let text = help_text(&commands);
        assert!(text.contains("- /compact [focus]: "), "{text}");
        assert!(text.contains("No custom commands yet"), "{text}");
        commands.push(CommandInfo {
            name: "fix".into(),
            description: "Fix an issue".into(),
            argument_hint: Some("<issue>".into()),
            kind: "command".into(),
            source: "project".into(),
        });
        let text = help_text(&commands);
        assert!(
            text.contains("- /fix <issue>: Fix an issue (project)"),
            "{text}"
        );
    }

    #[test]
    fn project_commands_beat_user_commands_and_builtin_names_are_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let claude_home = tmp.path().join("claude");
        let cwd = tmp.path().join("work");
        std::fs::create_dir_all(claude_home.join("commands")).unwrap();
        std::fs::create_dir_all(cwd.join(".claude/commands/nested")).unwrap();
        std::fs::write(claude_home.join("commands/deploy.md"), "user deploy").unwrap();
        std::fs::write(claude_home.join("commands/mine.md"), "user only").unwrap();
        std::fs::write(cwd.join(".claude/commands/deploy.md"), "project deploy").unwrap();
        std::fs::write(cwd.join(".claude/commands/help.md"), "not the help").unwrap();
        std::fs::write(cwd.join(".claude/commands/notes.txt"), "not a command").unwrap();
        std::fs::write(cwd.join(".claude/commands/two words.md"), "bad name").unwrap();
        let ws = Workspace::at(&cwd).unwrap();
        let sources = CommandSources {
            claude_home: Some(claude_home),
            home: None,
            sources: vec![SettingSource::User, SettingSource::Project],
            plugins: Vec::new(),
        };
        let found = discover(&sources, &ws);
        let summary: Vec<(&str, &str, &str)> = found
            .values()
            .map(|c| (c.name.as_str(), c.scope.as_str(), c.body.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("deploy", "project", "project deploy"),
                ("mine", "user", "user only")
            ]
        );
        assert!(discover(&sources.clone().without_project(), &ws).contains_key("mine"));
        let none = CommandSources {
            sources: Vec::new(),
            ..sources
        };
        assert!(discover(&none, &ws).is_empty());
    }

    #[test]
    fn a_project_commands_folder_linked_outside_is_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("leak.md"), "secret").unwrap();
        let cwd = tmp.path().join("work");
        std::fs::create_dir_all(cwd.join(".claude")).unwrap();
        std::os::unix::fs::symlink(outside.path(), cwd.join(".claude/commands")).unwrap();
        let ws = Workspace::at(&cwd).unwrap();
        let sources = CommandSources {
            claude_home: None,
            home: None,
            sources: vec![SettingSource::Project],
            plugins: Vec::new(),
        };
        assert!(discover(&sources, &ws).is_empty());
    }
}
