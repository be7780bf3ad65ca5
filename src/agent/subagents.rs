//! Subagent types the `Agent` tool can start: the built-in `general-purpose`,
//! `agents:` in the configuration and `.claude/agents/*.md` files (user and
//! project), each a system prompt with an optional tool list and model.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::AgentConfig;
use crate::skills::{self, SettingSource};
use crate::workspace::{Access, FileError, OpenFile, Workspace};

/// The type a call without `subagent_type` starts.
pub const GENERAL_PURPOSE: &str = "general-purpose";

/// Definition files larger than this are skipped: a system prompt, not a book.
const MAX_DEFINITION_BYTES: u64 = 256 * 1024;

const GENERAL_PURPOSE_PROMPT: &str = "You are a subagent working for another agent on one task \
it handed you, in the same working directory and with the same rules. Use the tools you have to \
research, read and change code as the task asks. You see nothing of the other agent's \
conversation, so rely on the task's own words. When you are done, answer with a concise report \
of what you found or did (files and lines where they matter): that report is all the other \
agent receives.";

/// One subagent type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub name: String,
    /// When to use it; shown to the model in the `Agent` tool.
    pub description: String,
    /// The subagent's system prompt.
    pub prompt: String,
    /// Tools it may use; `None` inherits the parent's (never `Agent`).
    pub tools: Option<Vec<String>>,
    /// An alias, a model id, or `None` for the parent's model.
    pub model: Option<String>,
}

impl Definition {
    pub fn general_purpose() -> Self {
        Self {
            name: GENERAL_PURPOSE.to_owned(),
            description: "General agent for researching questions, searching code and carrying \
                          out multi-step tasks on its own."
                .to_owned(),
            prompt: GENERAL_PURPOSE_PROMPT.to_owned(),
            tools: None,
            model: None,
        }
    }

    fn from_config(name: &str, config: &AgentConfig) -> Self {
        Self {
            name: name.to_owned(),
            description: config.description.trim().to_owned(),
            prompt: config.prompt.trim().to_owned(),
            tools: config.tools.as_ref().map(|tools| tool_names(tools)),
            model: normalise_model(config.model.as_deref()),
        }
    }

    /// Whether a subagent of this type is offered `tool`.
    pub fn allows(&self, tool: &str) -> bool {
        self.tools
            .as_ref()
            .is_none_or(|tools| tools.iter().any(|t| t == tool))
    }
}

/// The model id a subagent runs on: the call's choice, else the
/// definition's, else the parent's. Aliases name the current models;
/// anything else is taken as a model id.
pub fn resolve_model(call: Option<&str>, definition: Option<&str>, parent: &str) -> String {
    let chosen = call
        .and_then(|m| alias(m).map(str::to_owned))
        .or_else(|| normalise_model(definition));
    match chosen {
        Some(model) => alias(&model).map_or(model.clone(), str::to_owned),
        None => parent.to_owned(),
    }
}

fn alias(name: &str) -> Option<&'static str> {
    match name.trim().to_ascii_lowercase().as_str() {
        "sonnet" => Some("claude-sonnet-4-6"),
        "opus" => Some("claude-opus-4-7"),
        "haiku" => Some("claude-haiku-4-5"),
        _ => None,
    }
}

/// `None` for an empty model or `inherit`.
fn normalise_model(model: Option<&str>) -> Option<String> {
    model
        .map(str::trim)
        .filter(|m| !m.is_empty() && !m.eq_ignore_ascii_case("inherit"))
        .map(str::to_owned)
}

/// Tool names from a list whose entries may carry a rule's specifier
/// (`Bash(git:*)`), which a subagent's tool list does not use.
fn tool_names(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|t| t.split('(').next().unwrap_or_default().trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Where definitions are looked for, and which kinds are read.
#[derive(Debug, Clone)]
pub struct AgentSources {
    pub claude_home: Option<std::path::PathBuf>,
    pub sources: Vec<SettingSource>,
    pub configured: BTreeMap<String, AgentConfig>,
}

impl AgentSources {
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            claude_home: settings.user.claude_home(),
            sources: settings.defaults.setting_sources.clone(),
            configured: settings.agents.clone(),
        }
    }

    /// Every type a session in `workspace` may start, by name. A later
    /// source wins a name: built-in, then user files, project files, and
    /// the configuration (the service's operator has the last word).
    /// Reads the disk: call off the async workers.
    pub fn discover(&self, workspace: &Workspace) -> BTreeMap<String, Definition> {
        let mut found = BTreeMap::new();
        let general = Definition::general_purpose();
        found.insert(general.name.clone(), general);
        if self.sources.contains(&SettingSource::User)
            && let Some(home) = &self.claude_home
        {
            for definition in scan_user(&home.join("agents")) {
                found.insert(definition.name.clone(), definition);
            }
        }
        if self.sources.contains(&SettingSource::Project) {
            for definition in scan_project(workspace) {
                found.insert(definition.name.clone(), definition);
            }
        }
        for (name, config) in &self.configured {
            found.insert(name.clone(), Definition::from_config(name, config));
        }
        found
    }
}

/// `{claude_home}/agents/*.md`: the service's own files.
fn scan_user(dir: &Path) -> Vec<Definition> {
    let mut paths: Vec<std::path::PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| !p.is_dir())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list subagent definitions");
            return Vec::new();
        }
    };
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            let opened = crate::workspace::open_trusted_file(&path);
            load(&path, opened)
        })
        .collect()
}

/// `{cwd}/.claude/agents/*.md`, listed and read beneath the session's
/// handle, so a link there cannot lead out of the session's directory.
fn scan_project(workspace: &Workspace) -> Vec<Definition> {
    let dir = workspace.cwd().join(".claude/agents");
    let mut entries = match workspace.list_dir(&dir) {
        Ok(entries) => entries,
        Err(FileError::NotFound(_)) => return Vec::new(),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list subagent definitions");
            return Vec::new();
        }
    };
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
        .into_iter()
        .filter(|e| !e.is_dir)
        .filter_map(|entry| {
            let path = dir.join(&entry.name);
            let opened = workspace.open_file(&path, Access::Read);
            load(&path, opened)
        })
        .collect()
}

/// `None` for a file that is not a definition, with a warning when it
/// looked like one.
fn load(path: &Path, opened: Result<OpenFile, FileError>) -> Option<Definition> {
    path.file_name()?.to_str()?.strip_suffix(".md")?;
    let read = opened
        .map_err(|e| e.to_string())
        .and_then(|opened| opened.read_text(MAX_DEFINITION_BYTES));
    match read.and_then(|text| parse(&text)) {
        Ok(definition) => Some(definition),
        Err(reason) => {
            tracing::warn!(file = %path.display(), %reason, "skipping a subagent definition");
            None
        }
    }
}

/// A definition file: front matter with `name` and `description` (and
/// optionally `tools`, `model`), then the system prompt.
pub fn parse(text: &str) -> Result<Definition, String> {
    let (yaml, body) = skills::split_front_matter(text)?;
    let yaml = yaml.ok_or("no front matter")?;
    let front: serde_yaml::Value =
        serde_yaml::from_str(&yaml).map_err(|e| format!("front matter: {e}"))?;
    let text_of = |key: &str| {
        front
            .get(key)
            .and_then(serde_yaml::Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let name = text_of("name").ok_or("no `name`")?;
    if name.contains(':') {
        return Err(format!("the name `{name}` contains ':'"));
    }
    let description = text_of("description").ok_or("no `description`")?;
    let tools = match front.get("tools") {
        None | Some(serde_yaml::Value::Null) => None,
        Some(serde_yaml::Value::String(list)) => {
            Some(tool_names(&crate::agent::commands::split_tool_list(list)))
        }
        Some(serde_yaml::Value::Sequence(items)) => Some(tool_names(
            &items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect::<Vec<_>>(),
        )),
        Some(_) => return Err("`tools` must be a comma list or a list".into()),
    };
    Ok(Definition {
        name,
        description,
        prompt: body.trim().to_owned(),
        tools,
        model: normalise_model(text_of("model").as_deref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_front_matter_reads_tools_as_a_list_or_a_comma_list() {
        let listed = parse(
            "---\nname: reviewer\ndescription: Reviews code\ntools: Read, Grep, Bash(git diff:*)\nmodel: haiku\n---\nReview.\n",
        )
        .unwrap();
        assert_eq!(
            listed.tools,
            Some(vec!["Read".into(), "Grep".into(), "Bash".into()])
        );
        assert_eq!(listed.model.as_deref(), Some("haiku"));
        assert_eq!(listed.prompt, "Review.");
        let array =
            parse("---\nname: a\ndescription: d\ntools:\n  - Glob\n  - Read\n---\nBody").unwrap();
        assert_eq!(array.tools, Some(vec!["Glob".into(), "Read".into()]));
        let inherit = parse("---\nname: a\ndescription: d\nmodel: inherit\n---\nBody").unwrap();
        assert_eq!(inherit.tools, None);
        assert_eq!(inherit.model, None);
    }

    #[test]
    fn agents_files_without_a_name_or_description_or_with_a_colon_are_skipped() {
        assert!(parse("---\ndescription: d\n---\nBody").is_err());
        assert!(parse("---\nname: a\n---\nBody").is_err());
        assert!(parse("---\nname: plug:a\ndescription: d\n---\nBody").is_err());
        assert!(parse("Just text").is_err());
    }

    #[test]
    fn agents_models_resolve_aliases_and_inherit() {
        assert_eq!(resolve_model(None, None, "parent-model"), "parent-model");
        assert_eq!(
            resolve_model(Some("haiku"), Some("opus"), "p"),
            "claude-haiku-4-5"
        );
        assert_eq!(
            resolve_model(Some("unknown"), Some("opus"), "p"),
            "claude-opus-4-7"
        );
        assert_eq!(resolve_model(None, Some("claude-x-1"), "p"), "claude-x-1");
        assert_eq!(resolve_model(None, Some("inherit"), "p"), "p");
    }

    fn definition_file(name: &str, prompt: &str) -> String {
        format!("---\nname: {name}\ndescription: The {name} agent\n---\n{prompt}\n")
    }

    #[test]
    fn agents_from_project_files_beat_user_files_and_the_configuration_beats_both() {
        let tmp = tempfile::tempdir().unwrap();
        let claude_home = tmp.path().join("claude");
        let cwd = tmp.path().join("work");
        std::fs::create_dir_all(claude_home.join("agents")).unwrap();
        std::fs::create_dir_all(cwd.join(".claude/agents")).unwrap();
        let write = |path: std::path::PathBuf, text: String| std::fs::write(path, text).unwrap();
        write(
            claude_home.join("agents/mine.md"),
            definition_file("mine", "user mine"),
        );
        write(
            claude_home.join("agents/both.md"),
            definition_file("both", "user both"),
        );
        write(
            cwd.join(".claude/agents/both.md"),
            definition_file("both", "project both"),
        );
        write(
            cwd.join(".claude/agents/ops.md"),
            definition_file("ops", "project ops"),
        );
        write(
            cwd.join(".claude/agents/notes.txt"),
            definition_file("txt", "not .md"),
        );
        let ws = Workspace::at(&cwd).unwrap();
        let configured = BTreeMap::from([(
            "ops".to_owned(),
            AgentConfig {
                description: "Configured ops".into(),
                prompt: "configured ops".into(),
                tools: Some(vec!["Bash(git:*)".into(), "Read".into()]),
                model: Some("inherit".into()),
            },
        )]);
        let sources = AgentSources {
            claude_home: Some(claude_home),
            sources: vec![SettingSource::User, SettingSource::Project],
            configured,
        };
        let found = sources.discover(&ws);
        let prompts: Vec<(&str, &str)> = found
            .values()
            .map(|d| (d.name.as_str(), d.prompt.as_str()))
            .collect();
        assert_eq!(
            prompts,
            [
                ("both", "project both"),
                ("general-purpose", GENERAL_PURPOSE_PROMPT),
                ("mine", "user mine"),
                ("ops", "configured ops"),
            ]
        );
        assert_eq!(found["ops"].tools, Some(vec!["Bash".into(), "Read".into()]));
        assert_eq!(found["ops"].model, None);

        let user_only = AgentSources {
            sources: vec![SettingSource::User],
            configured: BTreeMap::new(),
            ..sources
        };
        assert_eq!(user_only.discover(&ws)["both"].prompt, "user both");
    }

    #[test]
    fn agents_folder_linked_outside_the_project_is_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(
            outside.path().join("leak.md"),
            definition_file("leak", "secret"),
        )
        .unwrap();
        let cwd = tmp.path().join("work");
        std::fs::create_dir_all(cwd.join(".claude")).unwrap();
        std::os::unix::fs::symlink(outside.path(), cwd.join(".claude/agents")).unwrap();
        let ws = Workspace::at(&cwd).unwrap();
        let sources = AgentSources {
            claude_home: None,
            sources: vec![SettingSource::Project],
            configured: BTreeMap::new(),
        };
        assert_eq!(sources.discover(&ws).len(), 1, "only the built-in type");
    }
}
