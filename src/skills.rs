//! Skills: `SKILL.md` instruction packs found in the user's, the project's and
//! the plugins' `skills/` folders, offered to the model through one `Skill` tool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::plugins::PluginConfig;
use crate::tools::{Tool, ToolContext, ToolOutput, ToolSource};
use crate::workspace::{Access, Workspace};

/// The name the model calls the skill tool by (also what policy lists name).
pub const SKILL_TOOL_NAME: &str = "Skill";

/// A SKILL.md larger than this is not instructions but a mistake; reading it
/// into every turn's tool list would cost memory and tokens for nothing.
const MAX_SKILL_FILE_BYTES: u64 = 256 * 1024;
const MAX_NAME_CHARS: usize = 64;

/// Where settings (and with them skills) are read from, as in Claude Code's
/// `settingSources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SettingSource {
    /// The service process's own: `$HOME/.claude/skills`, and in the Claude
    /// home (`user.claude_home`) `CLAUDE.md`, `commands/` and `settings.json`.
    User,
    /// The session's: `{cwd}/.claude/skills`, `{cwd}/.claude/commands`,
    /// `{cwd}/.claude/settings.json`, and `CLAUDE.md` / `.claude/CLAUDE.md`
    /// of the session's directory and its parents up to the user's directory.
    Project,
    /// Personal files a repository keeps out of git: `CLAUDE.local.md` in
    /// the same directories as the project's CLAUDE.md, and
    /// `{cwd}/.claude/settings.local.json` (permission rules and hooks). It
    /// holds no skills.
    Local,
}

/// One skill as a session would see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skill {
    pub name: String,
    pub description: String,
    /// `user`, `project` or `plugin:<plugin name>`.
    pub source: String,
    /// `argument-hint` front matter: what to type after `/name`.
    pub argument_hint: Option<String>,
    /// The skill's folder, where its bundled files live.
    pub dir: PathBuf,
    /// The instructions after the front matter. Left out of listings: it is
    /// for the model, and can be long.
    #[serde(skip)]
    pub body: String,
}

#[derive(Deserialize)]
struct FrontMatter {
    name: String,
    description: String,
    #[serde(rename = "argument-hint", default)]
    argument_hint: Option<serde_yaml::Value>,
}

impl Skill {
    /// What the model reads when the skill is invoked with `args` (by the
    /// Skill tool, or by a user typing `/name args`): the skill's folder,
    /// then its instructions with the arguments substituted as in a command.
    pub fn instructions(&self, args: &str) -> String {
        let body = crate::agent::commands::substitute(&self.body, args, &[]);
        format!(
            "Base directory for this skill: {}\n\n{}",
            self.dir.display(),
            body.trim_end()
        )
    }
}

/// Finds every skill a session working in `workspace` would see.
///
/// Precedence on a name collision, lowest first: plugins, user, project. The
/// project's own skill wins because it is the most specific to the work at
/// hand (a repository can pin its own version of a shared skill), and the
/// user's own beats what a plugin ships. Invalid skills are skipped with a
/// warning; discovery never fails.
pub fn discover(
    home: Option<&Path>,
    sources: &[SettingSource],
    plugins: &[PluginConfig],
    workspace: &Workspace,
) -> Vec<Skill> {
    let mut found: BTreeMap<String, Skill> = BTreeMap::new();
    let mut add = |skills: Vec<Skill>| {
        for skill in skills {
            if let Some(old) = found.get(&skill.name) {
                tracing::debug!(
                    skill = %skill.name,
                    winner = %skill.source,
                    loser = %old.source,
                    "skill name defined twice"
                );
            }
            found.insert(skill.name.clone(), skill);
        }
    };

    for plugin in plugins.iter().map(PluginConfig::resolve) {
        add(scan(
            &plugin.dir.join("skills"),
            &format!("plugin:{}", plugin.name),
            None,
        ));
    }
    if sources.contains(&SettingSource::User)
        && let Some(home) = home
    {
        add(scan(&home.join(".claude/skills"), "user", None));
    }
    if sources.contains(&SettingSource::Project) {
        // Project skills are files the user controls; a symlink there must
        // not turn the Skill tool into a way to read outside the jail.
        add(scan(
            &workspace.cwd().join(".claude/skills"),
            "project",
            Some(workspace),
        ));
    }
    found.into_values().collect()
}

/// Reads `{root}/*/SKILL.md`. With `jail`, skills whose files resolve outside
/// the workspace are skipped.
fn scan(root: &Path, source: &str, jail: Option<&Workspace>) -> Vec<Skill> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(dir = %root.display(), error = %e, "cannot list skills");
            return Vec::new();
        }
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.iter()
        .filter_map(|dir| match load(dir, source, jail) {
            Ok(skill) => skill,
            Err(reason) => {
                tracing::warn!(skill = %dir.display(), %reason, "skipping invalid skill");
                None
            }
        })
        .collect()
}

/// `Ok(None)` for a folder without SKILL.md (not a skill, nothing to warn about).
fn load(dir: &Path, source: &str, jail: Option<&Workspace>) -> Result<Option<Skill>, String> {
    let file = dir.join("SKILL.md");
    let canonical = match file.canonicalize() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let dir = dir.canonicalize().map_err(|e| e.to_string())?;
    // Project skills are opened beneath the workspace's handle, so a link
    // swapped in after the check above still cannot lead out; every
    // SKILL.md must be a regular file, never a FIFO that would block.
    let opened = match jail {
        Some(ws) => {
            if !ws.contains(&dir) {
                return Err("SKILL.md resolves outside the session's directory".into());
            }
            ws.open_file(&canonical, Access::Read)
        }
        None => crate::workspace::open_trusted_file(&canonical),
    }
    .map_err(|e| e.to_string())?;
    let text = opened
        .read_text(MAX_SKILL_FILE_BYTES)
        .map_err(|e| format!("SKILL.md is {e}"))?;
    let (front, body) = parse(&text)?;
    Ok(Some(Skill {
        name: front.name,
        description: front.description,
        source: source.to_owned(),
        argument_hint: front
            .argument_hint
            .as_ref()
            .and_then(crate::agent::commands::hint_text),
        dir,
        body,
    }))
}

/// Splits `---`-delimited front matter from the body of a Markdown file
/// (a skill's `SKILL.md`, a command's `.md`): `Ok((None, text))` when the
/// file has none, an error when it opens one and never closes it.
pub(crate) fn split_front_matter(text: &str) -> Result<(Option<String>, String), String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    if lines.next().map(str::trim_end) != Some("---") {
        return Ok((None, text.to_owned()));
    }
    let mut yaml = String::new();
    let mut closed = false;
    for line in lines.by_ref() {
        if line.trim_end() == "---" {
            closed = true;
            break;
        }
        yaml.push_str(line);
    }
    if !closed {
        return Err("front matter is not closed by a '---' line".into());
    }
    Ok((Some(yaml), lines.collect()))
}

/// Splits `---`-delimited YAML front matter from the body and checks it.
fn parse(text: &str) -> Result<(FrontMatter, String), String> {
    let (Some(yaml), body) = split_front_matter(text)? else {
        return Err("no front matter (the file must start with a '---' line)".into());
    };
    let mut front: FrontMatter =
        serde_yaml::from_str(&yaml).map_err(|e| format!("front matter: {e}"))?;
    front.name = front.name.trim().to_owned();
    front.description = front.description.trim().to_owned();
    if front.name.is_empty() || front.name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("name must be 1 to {MAX_NAME_CHARS} characters"));
    }
    // The name goes into the tool description as a list item and comes back
    // as the tool's argument: keep it one plain token.
    if !front
        .name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Err(format!(
            "name '{}' may only hold letters, digits, '-', '_', '.' and ':'",
            front.name
        ));
    }
    if front.description.is_empty() {
        return Err("description is empty".into());
    }
    Ok((front, body.trim_start_matches(['\r', '\n']).to_owned()))
}

/// Supplies the `Skill` tool, discovering skills afresh for each workspace so
/// a project's new or edited skill shows up on the next turn.
#[derive(Debug, Clone)]
pub struct SkillSource {
    home: Option<PathBuf>,
    sources: Vec<SettingSource>,
    plugins: Vec<PluginConfig>,
}

impl SkillSource {
    /// `home` is the directory whose `.claude/skills` the `user` source reads
    /// (the service's `$HOME` in production, see [`home_dir`]).
    pub fn new(
        home: Option<PathBuf>,
        sources: Vec<SettingSource>,
        plugins: Vec<PluginConfig>,
    ) -> Self {
        Self {
            home,
            sources,
            plugins,
        }
    }

    /// What a session in `workspace` would see (for `GET /api/v1/skills`).
    pub async fn list(&self, workspace: &Workspace) -> Vec<Skill> {
        let this = self.clone();
        let ws = workspace.clone();
        // Discovery walks the disk; keep it off the async workers.
        match tokio::task::spawn_blocking(move || {
            discover(this.home.as_deref(), &this.sources, &this.plugins, &ws)
        })
        .await
        {
            Ok(skills) => skills,
            Err(e) => {
                tracing::warn!(error = %e, "skill discovery task failed");
                Vec::new()
            }
        }
    }
}

/// The service process's home directory, from `$HOME`.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

#[async_trait]
impl ToolSource for SkillSource {
    async fn tools(&self, workspace: &Workspace) -> Vec<Arc<dyn Tool>> {
        let skills = self.list(workspace).await;
        if skills.is_empty() {
            return Vec::new();
        }
        vec![Arc::new(SkillTool { skills })]
    }
}

/// The `Skill` tool over the skills found at the start of a turn.
pub struct SkillTool {
    skills: Vec<Skill>,
}

impl SkillTool {
    pub fn new(skills: Vec<Skill>) -> Self {
        Self { skills }
    }
}

#[async_trait]
impl Tool for SkillTool {
    fn name(&self) -> &str {
        SKILL_TOOL_NAME
    }

    fn description(&self) -> String {
        let mut text = String::from(
            "Load a skill: instructions, and often bundled files, for a kind of task. \
             When the task at hand matches one of the skills below, call this tool with \
             the skill's name before starting, then follow the instructions it returns.\n\n\
             Available skills:\n",
        );
        for skill in &self.skills {
            text.push_str(&format!("- {}: {}\n", skill.name, skill.description));
        }
        text
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "skill": {
                    "type": "string",
                    "description": "The skill's name, as listed in this tool's description"
                },
                "args": {
                    "type": "string",
                    "description": "Optional arguments for the skill"
                }
            },
            "required": ["skill"],
            "additionalProperties": false
        })
    }

    fn read_only(&self) -> bool {
        true
    }

    async fn call(&self, input: Value, _ctx: &ToolContext) -> ToolOutput {
        let Some(wanted) = input.get("skill").and_then(Value::as_str) else {
            return ToolOutput::error("The 'skill' parameter (a string) is required.");
        };
        let wanted = wanted.trim().trim_start_matches('/');
        let Some(skill) = self.skills.iter().find(|s| s.name == wanted) else {
            let names: Vec<&str> = self.skills.iter().map(|s| s.name.as_str()).collect();
            return ToolOutput::error(format!(
                "Unknown skill '{wanted}'. Available skills: {}",
                names.join(", ")
            ));
        };
        let args = input
            .get("args")
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or("");
        ToolOutput::ok(skill.instructions(args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    fn write_skill(root: &Path, folder: &str, text: &str) {
        let dir = root.join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("SKILL.md"), text).unwrap();
    }

    fn skill_md(name: &str, description: &str, body: &str) -> String {
        format!("---\nname: {name}\ndescription: {description}\n---\n{body}")
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        home: PathBuf,
        plugin: PathBuf,
        ws: Workspace,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let plugin = tmp.path().join("plug");
        let cwd = tmp.path().join("work");
        std::fs::create_dir_all(&cwd).unwrap();
        let ws = Workspace::at(&cwd).unwrap();
        Fixture {
            _tmp: tmp,
            home,
            plugin,
            ws,
        }
    }

    fn ctx(ws: &Workspace) -> ToolContext {
        ToolContext::new(ws.clone(), CancellationToken::new())
    }

    #[test]
    fn discovers_user_project_and_plugin_skills_with_their_source() {
        let f = fixture();
        write_skill(
            &f.home.join(".claude/skills"),
            "pdf",
            &skill_md("pdf", "Work with PDF files", "Use pdftotext.\n"),
        );
        write_skill(
            &f.ws.cwd().join(".claude/skills"),
            "deploy",
            &skill_md("deploy", "Deploy this repo", "Run make deploy.\n"),
        );
        write_skill(
            &f.plugin.join("skills"),
            "lint",
            &skill_md("lint", "Lint the code", "Run the linter.\n"),
        );
        let plugins = [PluginConfig::Local {
            path: f.plugin.clone(),
        }];
        let all = [SettingSource::User, SettingSource::Project];

        let skills = discover(Some(&f.home), &all, &plugins, &f.ws);
        let summary: Vec<(&str, &str)> = skills
            .iter()
            .map(|s| (s.name.as_str(), s.source.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("deploy", "project"),
                ("lint", "plugin:plug"),
                ("pdf", "user")
            ]
        );
        let pdf = &skills[2];
        assert_eq!(pdf.description, "Work with PDF files");
        assert_eq!(pdf.body, "Use pdftotext.\n");
        assert_eq!(
            pdf.dir,
            f.home.join(".claude/skills/pdf").canonicalize().unwrap()
        );

        // Only the sources asked for are read.
        let user_only = discover(Some(&f.home), &[SettingSource::User], &[], &f.ws);
        assert_eq!(user_only.len(), 1);
        assert_eq!(user_only[0].name, "pdf");
        assert!(discover(Some(&f.home), &[SettingSource::Local], &[], &f.ws).is_empty());
        assert!(discover(None, &[SettingSource::User], &[], &f.ws).is_empty());
    }

    #[test]
    fn project_skill_overrides_user_skill_of_the_same_name() {
        let f = fixture();
        write_skill(
            &f.home.join(".claude/skills"),
            "review",
            &skill_md("review", "User review", "user body"),
        );
        write_skill(
            &f.ws.cwd().join(".claude/skills"),
            "review",
            &skill_md("review", "Project review", "project body"),
        );
        // Listing order in config does not change precedence.
        let sources = [SettingSource::Project, SettingSource::User];
        let skills = discover(Some(&f.home), &sources, &[], &f.ws);
        assert_eq!(skills.len(), 1);
        assert_eq!(skills[0].source, "project");
        assert_eq!(skills[0].description, "Project review");
    }

    #[test]
    fn invalid_skills_are_skipped_and_the_rest_still_load() {
        let f = fixture();
        let root = f.ws.cwd().join(".claude/skills");
        write_skill(&root, "good", &skill_md("good", "Fine", "ok"));
        write_skill(&root, "no-front", "just text\n");
        write_skill(&root, "unclosed", "---\nname: x\ndescription: y\n");
        write_skill(&root, "bad-yaml", "---\nname: [unclosed\n---\nbody");
        write_skill(&root, "no-desc", "---\nname: nodesc\n---\nbody");
        write_skill(&root, "empty-name", "---\nname: ''\ndescription: d\n---\n");
        write_skill(&root, "spaces", &skill_md("two words", "d", ""));
        std::fs::create_dir_all(root.join("not-a-skill")).unwrap();
        let skills = discover(None, &[SettingSource::Project], &[], &f.ws);
        let names: Vec<&str> = skills.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["good"]);
    }

    #[test]
    fn project_skill_symlinked_outside_the_workspace_is_refused() {
        let f = fixture();
        let outside = tempfile::tempdir().unwrap();
        write_skill(
            outside.path(),
            "secret",
            &skill_md("secret", "Leak", "private"),
        );
        let root = f.ws.cwd().join(".claude/skills");
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("secret")).unwrap();
        assert!(discover(None, &[SettingSource::Project], &[], &f.ws).is_empty());
    }

    #[tokio::test]
    async fn skill_tool_lists_skills_and_returns_instructions_with_the_directory() {
        let f = fixture();
        write_skill(
            &f.ws.cwd().join(".claude/skills"),
            "changelog",
            &skill_md(
                "changelog",
                "Write a changelog entry",
                "Read template.md in this folder.\nVersion: $ARGUMENTS\n",
            ),
        );
        write_skill(
            &f.ws.cwd().join(".claude/skills"),
            "tests",
            &skill_md("tests", "Write tests", "Use cargo test.\n"),
        );
        let source = SkillSource::new(None, vec![SettingSource::Project], Vec::new());
        let tools = source.tools(&f.ws).await;
        assert_eq!(tools.len(), 1);
        let tool = &tools[0];
        assert_eq!(tool.name(), "Skill");
        assert!(tool.read_only());
        let description = tool.description();
        assert!(description.contains("- changelog: Write a changelog entry\n"));
        assert!(description.contains("- tests: Write tests\n"));
        assert_eq!(tool.input_schema()["required"], json!(["skill"]));

        let out = tool
            .call(json!({"skill": "changelog", "args": "1.2.0"}), &ctx(&f.ws))
            .await;
        assert!(!out.is_error, "{}", out.content);
        let dir = f.ws.cwd().join(".claude/skills/changelog");
        assert_eq!(
            out.content,
            format!(
                "Base directory for this skill: {}\n\nRead template.md in this folder.\nVersion: 1.2.0",
                dir.display()
            )
        );

        let out = tool
            .call(json!({"skill": "tests", "args": "only unit"}), &ctx(&f.ws))
            .await;
        assert!(
            out.content
                .ends_with("Use cargo test.\n\nARGUMENTS: only unit")
        );
    }

    #[tokio::test]
    async fn unknown_skill_is_an_error_naming_the_available_ones() {
        let tool = SkillTool::new(vec![
            Skill {
                name: "a".into(),
                description: "A".into(),
                source: "user".into(),
                argument_hint: None,
                dir: PathBuf::from("/x/a"),
                body: String::new(),
            },
            Skill {
                name: "b".into(),
                description: "B".into(),
                source: "user".into(),
                argument_hint: None,
                dir: PathBuf::from("/x/b"),
                body: String::new(),
            },
        ]);
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::at(tmp.path()).unwrap();
        let out = tool.call(json!({"skill": "zzz"}), &ctx(&ws)).await;
        assert!(out.is_error);
        assert_eq!(out.content, "Unknown skill 'zzz'. Available skills: a, b");
        let out = tool.call(json!({}), &ctx(&ws)).await;
        assert!(out.is_error);
    }

    #[tokio::test]
    async fn no_skills_means_no_tool() {
        let f = fixture();
        let source = SkillSource::new(
            Some(f.home.clone()),
            vec![SettingSource::User, SettingSource::Project],
            Vec::new(),
        );
        assert!(source.tools(&f.ws).await.is_empty());
    }

    #[test]
    fn setting_sources_parse_lowercase() {
        let s: Vec<SettingSource> = serde_yaml::from_str("[user, project, local]").unwrap();
        assert_eq!(
            s,
            [
                SettingSource::User,
                SettingSource::Project,
                SettingSource::Local
            ]
        );
        assert!(serde_yaml::from_str::<SettingSource>("User").is_err());
    }
}
