//! Claude Code's settings files as a session sees them: the service user's
//! `~/.claude/settings.json` and the project's `.claude/settings.json` and
//! `.claude/settings.local.json`, read afresh for each turn.

use std::io::Read as _;
use std::path::Path;

use serde_json::Value;

use crate::skills::SettingSource;
use crate::workspace::{Access, FileError, Workspace};

/// The project's shared settings, relative to the session's directory.
pub const PROJECT_SETTINGS: &str = ".claude/settings.json";
/// The project's personal settings, relative to the session's directory.
pub const LOCAL_SETTINGS: &str = ".claude/settings.local.json";
/// The user settings file, relative to the Claude home (`~/.claude`).
pub const USER_SETTINGS: &str = "settings.json";

/// Settings files are a few kilobytes; anything larger is not read into
/// every turn.
pub const MAX_SETTINGS_BYTES: u64 = 256 * 1024;

/// What a settings file says, as far as this service uses it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SettingsFile {
    /// `permissions.allow`, `permissions.ask`, `permissions.deny`.
    pub allow: Vec<String>,
    pub ask: Vec<String>,
    pub deny: Vec<String>,
    /// `permissions.defaultMode`, as written.
    pub default_mode: Option<String>,
    /// `hooks`, as written.
    pub hooks: Option<Value>,
    /// `disableAllHooks`.
    pub disable_all_hooks: bool,
}

/// The files of `sources` that exist, lowest precedence first (user,
/// project, local). A file that cannot be read or parsed is left out with
/// a warning; what is wrong inside one (a rule list that is not a list of
/// strings) drops only that part.
pub fn load(
    sources: &[SettingSource],
    claude_home: Option<&Path>,
    workspace: &Workspace,
) -> Vec<(SettingSource, SettingsFile)> {
    let mut found = Vec::new();
    for scope in [
        SettingSource::User,
        SettingSource::Project,
        SettingSource::Local,
    ] {
        if !sources.contains(&scope) {
            continue;
        }
        let (path, opened) = match scope {
            SettingSource::User => {
                let Some(home) = claude_home else { continue };
                let path = home.join(USER_SETTINGS);
                let opened = crate::workspace::open_trusted_file(&path);
                (path, opened)
            }
            SettingSource::Project | SettingSource::Local => {
                let rel = if scope == SettingSource::Project {
                    PROJECT_SETTINGS
                } else {
                    LOCAL_SETTINGS
                };
                // Beneath the session's handle: a `.claude` that is a link
                // out of the session's directory is refused, not followed.
                let path = workspace.cwd().join(rel);
                let opened = workspace.open_file(&path, Access::Read);
                (path, opened)
            }
        };
        let text = match opened {
            Ok(opened) if opened.len > MAX_SETTINGS_BYTES => {
                warn(
                    &path,
                    &format!("the file is over the {MAX_SETTINGS_BYTES}-byte limit"),
                );
                continue;
            }
            Ok(opened) => {
                let mut text = String::new();
                if let Err(e) = opened
                    .file
                    .take(MAX_SETTINGS_BYTES)
                    .read_to_string(&mut text)
                {
                    warn(&path, &format!("cannot read it: {e}"));
                    continue;
                }
                text
            }
            Err(FileError::NotFound(_)) => continue,
            Err(e) => {
                warn(&path, &e.to_string());
                continue;
            }
        };
        let (file, problems) = match parse(&text) {
            Ok(parsed) => parsed,
            Err(problem) => {
                warn(&path, &problem);
                continue;
            }
        };
        for problem in &problems {
            warn(&path, problem);
        }
        found.push((scope, file));
    }
    found
}

fn warn(path: &Path, problem: &str) {
    tracing::warn!(
        settings = %path.display(),
        %problem,
        "settings file ignored in part or whole"
    );
}

/// Parses a settings file. `Err` when the file as a whole is unusable;
/// otherwise the settings and what was skipped inside.
pub fn parse(text: &str) -> Result<(SettingsFile, Vec<String>), String> {
    let value: Value = serde_json::from_str(text.trim_start_matches('\u{feff}'))
        .map_err(|e| format!("not valid JSON ({e}); the file is ignored"))?;
    let Value::Object(top) = value else {
        return Err("the file is not a JSON object; it is ignored".into());
    };
    let mut problems = Vec::new();
    let mut file = SettingsFile {
        hooks: top.get("hooks").cloned(),
        ..SettingsFile::default()
    };
    match top.get("disableAllHooks") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => file.disable_all_hooks = *b,
        Some(other) => problems.push(format!(
            "disableAllHooks is {}, not a boolean; it is ignored",
            kind(other)
        )),
    }
    match top.get("permissions") {
        None | Some(Value::Null) => {}
        Some(Value::Object(permissions)) => {
            for (key, list) in [
                ("allow", &mut file.allow),
                ("ask", &mut file.ask),
                ("deny", &mut file.deny),
            ] {
                *list = string_list(permissions.get(key), key, &mut problems);
            }
            match permissions.get("defaultMode") {
                None | Some(Value::Null) => {}
                Some(Value::String(mode)) => file.default_mode = Some(mode.clone()),
                Some(other) => problems.push(format!(
                    "permissions.defaultMode is {}, not a string; it is ignored",
                    kind(other)
                )),
            }
        }
        Some(other) => problems.push(format!(
            "permissions is {}, not an object; it is ignored",
            kind(other)
        )),
    }
    Ok((file, problems))
}

fn string_list(value: Option<&Value>, key: &str, problems: &mut Vec<String>) -> Vec<String> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| match item {
                Value::String(s) => Some(s.clone()),
                other => {
                    problems.push(format!(
                        "permissions.{key} holds {}, not a rule string; it is skipped",
                        kind(other)
                    ));
                    None
                }
            })
            .collect(),
        Some(other) => {
            problems.push(format!(
                "permissions.{key} is {}, not a list of rules; it is ignored",
                kind(other)
            ));
            Vec::new()
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_keys_are_read() {
        let (file, problems) = parse(
            r#"{"permissions": {"allow": ["Bash(npm test)"], "deny": ["Read(.env)"],
                "ask": ["Bash(git push:*)"], "defaultMode": "plan"},
                "hooks": {"Stop": []}, "model": "x"}"#,
        )
        .unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(file.allow, ["Bash(npm test)"]);
        assert_eq!(file.deny, ["Read(.env)"]);
        assert_eq!(file.ask, ["Bash(git push:*)"]);
        assert_eq!(file.default_mode.as_deref(), Some("plan"));
        assert!(file.hooks.is_some());
        assert_eq!(parse("{}").unwrap().0, SettingsFile::default());
    }

    #[test]
    fn wrong_types_drop_only_what_is_wrong() {
        let (file, problems) = parse(
            r#"{"permissions": {"allow": "Bash", "deny": ["Bash(rm:*)", 3], "defaultMode": 1}}"#,
        )
        .unwrap();
        assert_eq!(file.deny, ["Bash(rm:*)"]);
        assert!(file.allow.is_empty() && file.default_mode.is_none());
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].contains("permissions.allow is a string"),
            "{problems:?}"
        );
        let (_, problems) = parse(r#"{"permissions": []}"#).unwrap();
        assert!(problems[0].contains("not an object"), "{problems:?}");
    }

    #[test]
    fn unusable_files_are_errors() {
        assert!(parse("{not json").unwrap_err().contains("not valid JSON"));
        assert!(parse("[1]").unwrap_err().contains("not a JSON object"));
        assert!(parse("\u{feff}{}").is_ok());
    }

    #[test]
    fn files_are_read_beneath_the_session_and_from_the_claude_home() {
        let tmp = tempfile::tempdir().unwrap();
        let cwd = tmp.path().join("work");
        let home = tmp.path().join("claude-home");
        std::fs::create_dir_all(cwd.join(".claude")).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(
            cwd.join(PROJECT_SETTINGS),
            r#"{"permissions": {"deny": ["Bash(rm:*)"]}}"#,
        )
        .unwrap();
        std::fs::write(cwd.join(LOCAL_SETTINGS), "{broken").unwrap();
        std::fs::write(
            home.join(USER_SETTINGS),
            r#"{"permissions": {"allow": ["Bash(ls)"]}}"#,
        )
        .unwrap();
        let ws = Workspace::at(&cwd).unwrap();
        let all = [
            SettingSource::User,
            SettingSource::Project,
            SettingSource::Local,
        ];
        let found = load(&all, Some(&home), &ws);
        let scopes: Vec<SettingSource> = found.iter().map(|(s, _)| *s).collect();
        assert_eq!(scopes, [SettingSource::User, SettingSource::Project]);
        assert_eq!(found[1].1.deny, ["Bash(rm:*)"]);
        assert!(load(&[SettingSource::Project], None, &ws).len() == 1);
        assert!(load(&[], Some(&home), &ws).is_empty());

        // A `.claude` that leads out of the session's directory is refused.
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(
            outside.join("settings.json"),
            r#"{"permissions": {"allow": ["Bash"]}}"#,
        )
        .unwrap();
        std::fs::remove_dir_all(cwd.join(".claude")).unwrap();
        std::os::unix::fs::symlink(&outside, cwd.join(".claude")).unwrap();
        assert!(load(&[SettingSource::Project], None, &ws).is_empty());

        // Too large to be settings.
        std::fs::remove_file(cwd.join(".claude")).unwrap();
        std::fs::create_dir_all(cwd.join(".claude")).unwrap();
        let big = format!(r#"{{"x": "{}"}}"#, "a".repeat(MAX_SETTINGS_BYTES as usize));
        std::fs::write(cwd.join(PROJECT_SETTINGS), big).unwrap();
        assert!(load(&[SettingSource::Project], None, &ws).is_empty());
    }
}
