//! `Glob`: finds files by name pattern under a directory of the workspace,
//! newest first, skipping what `.gitignore` excludes.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use globset::GlobBuilder;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::args::Args;
use super::walk::walker;
use super::{Tool, ToolContext, ToolOutput, resolve_path, run_blocking};
use crate::workspace::Workspace;

/// Most paths returned; more would drown the model's context.
pub const MAX_RESULTS: usize = 100;

pub struct GlobTool;

#[async_trait]
impl Tool for GlobTool {
    fn name(&self) -> &str {
        "Glob"
    }

    fn description(&self) -> String {
        format!(
            "Finds files whose path matches a glob pattern such as \"**/*.rs\" or \
             \"src/**/*.{{ts,tsx}}\", matched against the path relative to the search \
             directory (`*` does not cross `/`). Honours .gitignore. Returns absolute paths, \
             most recently modified first, at most {MAX_RESULTS}."
        )
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "description": "The glob pattern to match files against"},
                "path": {"type": "string", "description": "The directory to search in; defaults to the working directory"}
            },
            "required": ["pattern"],
            "additionalProperties": false
        })
    }

    fn read_only(&self) -> bool {
        true
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let args = match Args::new(&input) {
            Ok(a) => a,
            Err(e) => return e.into(),
        };
        let (pattern, dir) = match (args.string("pattern"), args.opt_string("path")) {
            (Ok(p), Ok(d)) => (p.to_owned(), d.map(str::to_owned)),
            (Err(e), _) | (_, Err(e)) => return e.into(),
        };
        let dir = match dir {
            Some(d) => match resolve_path(ctx, &d) {
                Ok(p) => p,
                Err(out) => return out,
            },
            None => ctx.workspace.cwd().to_path_buf(),
        };
        let cancel = ctx.cancel.clone();
        let workspace = ctx.workspace.clone();
        run_blocking(&ctx.cancel, move || {
            glob(&workspace, &dir, &pattern, &cancel)
        })
        .await
    }
}

fn glob(
    workspace: &Workspace,
    dir: &Path,
    pattern: &str,
    cancel: &CancellationToken,
) -> ToolOutput {
    if !dir.is_dir() {
        return ToolOutput::error(format!("{} is not a directory.", dir.display()));
    }
    let matcher = match GlobBuilder::new(pattern).literal_separator(true).build() {
        Ok(g) => g.compile_matcher(),
        Err(e) => return ToolOutput::error(format!("Invalid glob pattern '{pattern}': {e}")),
    };
    // An absolute pattern names full paths; a relative one is relative to `dir`.
    let absolute = Path::new(pattern).is_absolute();
    let mut found: Vec<(SystemTime, PathBuf)> = Vec::new();
    for entry in walker(dir).build() {
        if cancel.is_cancelled() {
            return ToolOutput::error("Interrupted.");
        }
        // Unreadable entries are skipped, as ripgrep does.
        let Ok(entry) = entry else { continue };
        if !entry
            .file_type()
            .is_some_and(|t| t.is_file() || t.is_symlink())
        {
            continue;
        }
        let path = entry.path();
        let candidate = if absolute {
            path
        } else {
            match path.strip_prefix(dir) {
                Ok(rel) => rel,
                Err(_) => continue,
            }
        };
        // A name the walk read through a directory swapped for a symlink
        // mid-walk is not beneath the workspace now: it is dropped.
        if matcher.is_match(candidate) && workspace.still_inside(path) {
            let modified = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            found.push((modified, path.to_path_buf()));
        }
    }
    if found.is_empty() {
        return ToolOutput::ok("No files found");
    }
    // Newest first; the path breaks ties so the order is stable.
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let total = found.len();
    let mut out: String = found
        .iter()
        .take(MAX_RESULTS)
        .map(|(_, p)| format!("{}\n", p.display()))
        .collect();
    if total > MAX_RESULTS {
        out.push_str(&format!(
            "(Results are truncated: showing the {MAX_RESULTS} most recently modified of \
             {total} matches. Use a more specific pattern or path.)\n"
        ));
    }
    ToolOutput::ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{File, FileTimes};
    use std::time::Duration;

    fn ctx(dir: &Path) -> ToolContext {
        ToolContext::new(Workspace::at(dir).unwrap(), CancellationToken::new())
    }

    fn touch(path: &Path, secs: u64) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "x").unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_times(FileTimes::new().set_modified(t))
            .unwrap();
    }

    #[tokio::test]
    async fn newest_first_with_absolute_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        touch(&root.join("old.rs"), 1_000);
        touch(&root.join("src/new.rs"), 3_000);
        touch(&root.join("src/mid.rs"), 2_000);
        touch(&root.join("src/notes.txt"), 4_000);
        let out = GlobTool
            .call(json!({"pattern": "**/*.rs"}), &ctx(tmp.path()))
            .await;
        let expected = format!(
            "{}\n{}\n{}\n",
            root.join("src/new.rs").display(),
            root.join("src/mid.rs").display(),
            root.join("old.rs").display()
        );
        assert_eq!(out.content, expected);
        // `*` does not cross directories.
        let out = GlobTool
            .call(json!({"pattern": "*.rs"}), &ctx(tmp.path()))
            .await;
        assert_eq!(out.content, format!("{}\n", root.join("old.rs").display()));
        let out = GlobTool
            .call(json!({"pattern": "*.rs", "path": "src"}), &ctx(tmp.path()))
            .await;
        assert_eq!(out.content.lines().count(), 2, "{}", out.content);
    }

    #[tokio::test]
    async fn honours_gitignore_and_skips_git_dir() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(".gitignore"), "target/\n*.log\n").unwrap();
        touch(&tmp.path().join("target/debug/out.rs"), 1);
        touch(&tmp.path().join("keep.rs"), 1);
        touch(&tmp.path().join("x.log"), 1);
        touch(&tmp.path().join(".git/config.rs"), 1);
        touch(&tmp.path().join(".hidden.rs"), 1);
        let out = GlobTool
            .call(json!({"pattern": "**/*"}), &ctx(tmp.path()))
            .await;
        assert!(out.content.contains("keep.rs"), "{}", out.content);
        assert!(out.content.contains(".hidden.rs"), "{}", out.content);
        assert!(out.content.contains(".gitignore"), "{}", out.content);
        assert!(!out.content.contains("target"), "{}", out.content);
        assert!(!out.content.contains("x.log"), "{}", out.content);
        assert!(!out.content.contains(".git/"), "{}", out.content);
    }

    #[tokio::test]
    async fn truncates_at_one_hundred() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..150 {
            touch(&tmp.path().join(format!("f{i:03}.txt")), 1_000 + i);
        }
        let out = GlobTool
            .call(json!({"pattern": "*.txt"}), &ctx(tmp.path()))
            .await;
        let lines: Vec<&str> = out.content.lines().collect();
        assert_eq!(lines.len(), MAX_RESULTS + 1);
        assert!(lines[0].ends_with("f149.txt"), "{}", lines[0]);
        assert!(lines[MAX_RESULTS].contains("truncated") && lines[MAX_RESULTS].contains("150"));
    }

    #[tokio::test]
    async fn errors_and_empty_results() {
        let tmp = tempfile::tempdir().unwrap();
        let c = ctx(tmp.path());
        let out = GlobTool.call(json!({"pattern": "*.nothing"}), &c).await;
        assert!(!out.is_error && out.content == "No files found", "{out:?}");
        let out = GlobTool
            .call(json!({"pattern": "a[", "path": "."}), &c)
            .await;
        assert!(
            out.is_error && out.content.contains("Invalid glob"),
            "{out:?}"
        );
        let out = GlobTool
            .call(json!({"pattern": "*", "path": "/etc"}), &c)
            .await;
        assert!(out.is_error && out.content.contains("outside"), "{out:?}");
        let out = GlobTool
            .call(json!({"pattern": "*", "path": "missing"}), &c)
            .await;
        assert!(
            out.is_error && out.content.contains("not a directory"),
            "{out:?}"
        );
        let out = GlobTool.call(json!({"path": "."}), &c).await;
        assert!(out.is_error && out.content.contains("`pattern`"), "{out:?}");
    }
}
