//! `Edit`: exact string replacement in a file. An ambiguous or missing match
//! is refused so the model cannot change a place it did not mean.

use std::io::Read as _;
use std::path::Path;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::args::Args;
use super::reads::{self, Stamp};
use super::session::SessionTools;
use super::write::{create_parent_dirs, write_all};
use super::{
    Tool, ToolContext, ToolOutput, file_error, open_in_workspace, resolve_path, run_blocking,
};
use crate::workspace::{Access, FileError, Workspace};

/// Edits files of at most `max_file_bytes`, before and after the change.
pub struct EditTool {
    max_file_bytes: u64,
}

impl EditTool {
    pub fn new(max_file_bytes: u64) -> Self {
        Self { max_file_bytes }
    }
}

struct EditRequest {
    old: String,
    new: String,
    replace_all: bool,
}

#[async_trait]
impl Tool for EditTool {
    fn name(&self) -> &str {
        "Edit"
    }

    fn description(&self) -> String {
        "Replaces exact text in a file. old_string must match the file's text exactly, \
         whitespace and indentation included, and must occur exactly once unless \
         replace_all is true; add surrounding lines to old_string to make it unique. The file \
         must have been read in this session (with Read) and be unchanged since, or the edit \
         is refused. An empty old_string creates a file that does not exist yet."
            .to_owned()
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "file_path": {"type": "string", "description": "The file to modify, absolute or relative to the working directory"},
                "old_string": {"type": "string", "description": "The text to replace"},
                "new_string": {"type": "string", "description": "The text to replace it with (must be different from old_string)"},
                "replace_all": {"type": "boolean", "default": false, "description": "Replace every occurrence of old_string"}
            },
            "required": ["file_path", "old_string", "new_string"],
            "additionalProperties": false
        })
    }

    fn read_only(&self) -> bool {
        false
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let args = match Args::new(&input) {
            Ok(a) => a,
            Err(e) => return e.into(),
        };
        let parsed = (|| {
            Ok::<_, super::args::InvalidInput>((
                args.string("file_path")?.to_owned(),
                EditRequest {
                    old: args.string("old_string")?.to_owned(),
                    new: args.string("new_string")?.to_owned(),
                    replace_all: args.opt_bool("replace_all")?.unwrap_or(false),
                },
            ))
        })();
        let (raw, request) = match parsed {
            Ok(p) => p,
            Err(e) => return e.into(),
        };
        if request.old == request.new {
            return ToolOutput::error(
                "old_string and new_string are identical, so there is nothing to change.",
            );
        }
        let path = match resolve_path(ctx, &raw) {
            Ok(p) => p,
            Err(out) => return out,
        };
        let workspace = ctx.workspace.clone();
        let session = ctx.session.clone();
        let limit = self.max_file_bytes;
        run_blocking(&ctx.cancel, move || {
            edit_file(&workspace, &session, &path, &request, limit)
        })
        .await
    }
}

fn edit_file(
    workspace: &Workspace,
    session: &SessionTools,
    path: &Path,
    request: &EditRequest,
    limit: u64,
) -> ToolOutput {
    let shown = path.display();
    let opened = match workspace.open_file(path, Access::Update) {
        Ok(f) => f,
        Err(FileError::NotFound(_)) => {
            if request.old.is_empty() {
                return create_file(workspace, session, path, &request.new, limit);
            }
            return ToolOutput::error(format!(
                "File does not exist: {shown}. Use Write to create it."
            ));
        }
        Err(e) => return file_error(&e),
    };
    if opened.len > limit {
        return file_error(&FileError::TooLarge {
            path: shown.to_string(),
            size: opened.len,
            limit,
        });
    }
    let mut file = opened.file;
    let mut content = Vec::new();
    // `take` bounds memory even if the file grows after it was measured.
    if let Err(e) = (&mut file).take(limit + 1).read_to_end(&mut content) {
        return ToolOutput::error(format!("Cannot read {shown}: {e}"));
    }
    match Stamp::of_content(&file, &content) {
        Ok(now) => {
            if let Err(unseen) = reads::check(session, path, &now) {
                return unseen.output(&shown.to_string());
            }
        }
        Err(e) => return ToolOutput::error(format!("Cannot read {shown}: {e}")),
    }
    let Ok(content) = String::from_utf8(content) else {
        return ToolOutput::error(format!(
            "{shown} is not UTF-8 text, so it cannot be edited by string replacement."
        ));
    };
    if request.old.is_empty() {
        if content.is_empty() {
            return write_back(&file, session, path, &request.new, 1, limit);
        }
        return ToolOutput::error(format!(
            "old_string is empty but {shown} already has content. Give the text to replace, \
             or use Write to replace the whole file."
        ));
    }
    let count = content.matches(request.old.as_str()).count();
    if count == 0 {
        return ToolOutput::error(format!(
            "old_string was not found in {shown}. It must match exactly, including whitespace \
             and indentation; Read the file to check the current text."
        ));
    }
    if count > 1 && !request.replace_all {
        return ToolOutput::error(format!(
            "old_string was found {count} times in {shown}. Add surrounding context to make it \
             unique, or set replace_all to true to replace every occurrence."
        ));
    }
    let updated = if request.replace_all {
        content.replace(request.old.as_str(), &request.new)
    } else {
        content.replacen(request.old.as_str(), &request.new, 1)
    };
    write_back(&file, session, path, &updated, count, limit)
}

fn write_back(
    file: &std::fs::File,
    session: &SessionTools,
    path: &Path,
    content: &str,
    replacements: usize,
    limit: u64,
) -> ToolOutput {
    if content.len() as u64 > limit {
        return ToolOutput::error(format!(
            "The edited file would be {} bytes, over the {limit}-byte limit; nothing was changed.",
            content.len()
        ));
    }
    match write_all(file, content.as_bytes()) {
        Ok(()) => {
            if let Ok(stamp) = Stamp::of_content(file, content.as_bytes()) {
                session.saw(path, stamp);
            }
            let noun = if replacements == 1 {
                "occurrence"
            } else {
                "occurrences"
            };
            ToolOutput::ok(format!(
                "Edited {}: replaced {replacements} {noun}.",
                path.display()
            ))
        }
        Err(e) => ToolOutput::error(format!("Cannot write {}: {e}", path.display())),
    }
}

fn create_file(
    workspace: &Workspace,
    session: &SessionTools,
    path: &Path,
    content: &str,
    limit: u64,
) -> ToolOutput {
    if content.len() as u64 > limit {
        return ToolOutput::error(format!(
            "The new file would be {} bytes, over the {limit}-byte limit.",
            content.len()
        ));
    }
    if let Err(output) = create_parent_dirs(workspace, path) {
        return output;
    }
    let opened = match open_in_workspace(workspace, path, Access::CreateNew) {
        Ok(f) => f,
        Err(out) => return out,
    };
    match write_all(&opened.file, content.as_bytes()) {
        Ok(()) => {
            if let Ok(stamp) = Stamp::of_content(&opened.file, content.as_bytes()) {
                session.saw(path, stamp);
            }
            ToolOutput::ok(format!(
                "Created {} ({} bytes).",
                path.display(),
                content.len()
            ))
        }
        Err(e) => ToolOutput::error(format!("Cannot write {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    fn ctx(dir: &Path) -> ToolContext {
        ToolContext::new(Workspace::at(dir).unwrap(), CancellationToken::new())
    }

    /// An edit in a fresh session that has just read the file.
    async fn edit(dir: &Path, input: Value) -> ToolOutput {
        let c = ctx(dir);
        crate::tools::read::ReadTool
            .call(json!({"file_path": input["file_path"]}), &c)
            .await;
        EditTool::new(1 << 20).call(input, &c).await
    }

    #[tokio::test]
    async fn an_unread_or_changed_file_is_refused_until_read() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("a.txt");
        std::fs::write(&f, "one\n").unwrap();
        let c = ctx(tmp.path());
        let tool = EditTool::new(1 << 20);
        let change = json!({"file_path": "a.txt", "old_string": "one", "new_string": "two"});
        let out = tool.call(change.clone(), &c).await;
        assert!(
            out.is_error && out.content.contains("has not been read"),
            "{out:?}"
        );
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "one\n");

        crate::tools::read::ReadTool
            .call(json!({"file_path": "a.txt"}), &c)
            .await;
        let out = tool.call(change, &c).await;
        assert!(!out.is_error, "{out:?}");
        // Its own edit counts as seen: a second edit needs no new Read.
        let out = tool
            .call(
                json!({"file_path": "a.txt", "old_string": "two", "new_string": "three"}),
                &c,
            )
            .await;
        assert!(!out.is_error, "{out:?}");

        // Same size, new content: changed on disk, so refused.
        std::fs::write(&f, "other\n").unwrap();
        let out = tool
            .call(
                json!({"file_path": "a.txt", "old_string": "other", "new_string": "x"}),
                &c,
            )
            .await;
        assert!(
            out.is_error && out.content.contains("changed on disk"),
            "{out:?}"
        );
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "other\n");
        // Another session has read nothing.
        let other = ctx(tmp.path());
        let out = tool
            .call(
                json!({"file_path": "a.txt", "old_string": "other", "new_string": "x"}),
                &other,
            )
            .await;
        assert!(
            out.is_error && out.content.contains("has not been read"),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn replaces_a_unique_match() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("a.rs");
        std::fs::write(&f, "fn a() {}\nfn b() {}\n").unwrap();
        let out = edit(
            tmp.path(),
            json!({"file_path": "a.rs", "old_string": "fn b", "new_string": "fn c"}),
        )
        .await;
        assert!(!out.is_error, "{out:?}");
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "fn a() {}\nfn c() {}\n"
        );
    }

    #[tokio::test]
    async fn ambiguous_match_needs_context_or_replace_all() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("a.txt");
        std::fs::write(&f, "x x x").unwrap();
        let out = edit(
            tmp.path(),
            json!({"file_path": "a.txt", "old_string": "x", "new_string": "y"}),
        )
        .await;
        assert!(
            out.is_error && out.content.contains("found 3 times"),
            "{out:?}"
        );
        assert!(out.content.contains("replace_all"), "{out:?}");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "x x x");
        let out = edit(
            tmp.path(),
            json!({"file_path": "a.txt", "old_string": "x", "new_string": "y", "replace_all": true}),
        )
        .await;
        assert!(
            !out.is_error && out.content.contains("3 occurrences"),
            "{out:?}"
        );
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "y y y");
    }

    #[tokio::test]
    async fn errors_for_not_found_identical_missing() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a.txt"), "hello").unwrap();
        let out = edit(
            tmp.path(),
            json!({"file_path": "a.txt", "old_string": "bye", "new_string": "x"}),
        )
        .await;
        assert!(out.is_error && out.content.contains("not found"), "{out:?}");
        let out = edit(
            tmp.path(),
            json!({"file_path": "a.txt", "old_string": "hello", "new_string": "hello"}),
        )
        .await;
        assert!(out.is_error && out.content.contains("identical"), "{out:?}");
        let out = edit(
            tmp.path(),
            json!({"file_path": "b.txt", "old_string": "a", "new_string": "b"}),
        )
        .await;
        assert!(
            out.is_error && out.content.contains("does not exist"),
            "{out:?}"
        );
        let out = edit(tmp.path(), json!({"file_path": "a.txt", "old_string": "a"})).await;
        assert!(
            out.is_error && out.content.contains("new_string"),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn empty_old_string_creates_a_new_file_only() {
        let tmp = tempfile::tempdir().unwrap();
        let out = edit(
            tmp.path(),
            json!({"file_path": "new/n.txt", "old_string": "", "new_string": "hi"}),
        )
        .await;
        assert!(!out.is_error, "{out:?}");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("new/n.txt")).unwrap(),
            "hi"
        );
        let out = edit(
            tmp.path(),
            json!({"file_path": "new/n.txt", "old_string": "", "new_string": "again"}),
        )
        .await;
        assert!(out.is_error, "{out:?}");
    }

    #[tokio::test]
    async fn refuses_escape() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let f = outside.path().join("t.txt");
        std::fs::write(&f, "keep").unwrap();
        let out = edit(
            tmp.path(),
            json!({"file_path": f.to_str().unwrap(), "old_string": "keep", "new_string": "lost"}),
        )
        .await;
        assert!(out.is_error && out.content.contains("outside"), "{out:?}");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "keep");
    }
}
