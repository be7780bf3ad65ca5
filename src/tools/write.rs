//! `Write`: creates or replaces a whole file inside the workspace, making
//! the directories on the way.

use std::path::Path;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::args::Args;
use super::reads::{self, Stamp};
use super::session::SessionTools;
use super::{Tool, ToolContext, ToolOutput, file_error, resolve_path, run_blocking};
use crate::workspace::{Access, FileError, Workspace};

/// Writes whole files, refusing content over `max_file_bytes`.
pub struct WriteTool {
    max_file_bytes: u64,
}

impl WriteTool {
    pub fn new(max_file_bytes: u64) -> Self {
        Self { max_file_bytes }
    }
}

#[async_trait]
impl Tool for WriteTool {
    fn name(&self) -> &str {
        "Write"
    }

    fn description(&self) -> String {
        "Writes a file in the working directory, replacing it if it exists and creating \
         missing parent directories. file_path may be absolute or relative to the working \
         directory. An existing file must have been read in this session (with Read) and be \
         unchanged since, or the write is refused; a new file needs no Read. Prefer Edit for \
         changing part of an existing file."
            .to_owned()
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "file_path": {"type": "string", "description": "The file to write, absolute or relative to the working directory"},
                "content": {"type": "string", "description": "The content to write to the file"}
            },
            "required": ["file_path", "content"],
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
        let (raw, content) = match (args.string("file_path"), args.string("content")) {
            (Ok(p), Ok(c)) => (p.to_owned(), c.to_owned()),
            (Err(e), _) | (_, Err(e)) => return e.into(),
        };
        let path = match resolve_path(ctx, &raw) {
            Ok(p) => p,
            Err(out) => return out,
        };
        let limit = self.max_file_bytes;
        if content.len() as u64 > limit {
            return ToolOutput::error(format!(
                "The content is {} bytes, over the {limit}-byte limit for one file. Write \
                 smaller files, or generate large ones with a command through Bash.",
                content.len()
            ));
        }
        let workspace = ctx.workspace.clone();
        let session = ctx.session.clone();
        run_blocking(&ctx.cancel, move || {
            write_file(&workspace, &session, &path, &content)
        })
        .await
    }
}

fn write_file(
    workspace: &Workspace,
    session: &SessionTools,
    path: &Path,
    content: &str,
) -> ToolOutput {
    let shown = path.display().to_string();
    if let Err(output) = create_parent_dirs(workspace, path) {
        return output;
    }
    // An existing file is opened as it is and checked before a byte of it
    // is lost; a new one is created exclusively, so a file that appears
    // meanwhile is not overwritten unseen either.
    let (file, existed) = match workspace.open_file(path, Access::Update) {
        Ok(opened) => {
            let now = match Stamp::measure(&opened.file) {
                Ok(stamp) => stamp,
                Err(e) => return ToolOutput::error(format!("Cannot read {shown}: {e}")),
            };
            if let Err(unseen) = reads::check(session, path, &now) {
                return unseen.output(&shown);
            }
            (opened.file, true)
        }
        Err(FileError::NotFound(_)) => match workspace.open_file(path, Access::CreateNew) {
            Ok(opened) => (opened.file, false),
            Err(FileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                return reads::Unseen::NeverRead.output(&shown);
            }
            Err(e) => return file_error(&e),
        },
        Err(e) => return file_error(&e),
    };
    if let Err(e) = write_all(&file, content.as_bytes()) {
        return ToolOutput::error(format!("Cannot write {shown}: {e}"));
    }
    // What the agent wrote itself it has seen.
    if let Ok(stamp) = Stamp::of_content(&file, content.as_bytes()) {
        session.saw(path, stamp);
    }
    let lines = content.lines().count();
    let verb = if existed { "Updated" } else { "Created" };
    ToolOutput::ok(format!(
        "{verb} {shown}: wrote {} bytes ({lines} lines).",
        content.len()
    ))
}

/// Replaces an open file's content with `bytes`.
pub(super) fn write_all(mut file: &std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(bytes)?;
    file.flush()
}

/// Creates the directories a new file needs; the error is the tool result.
pub(super) fn create_parent_dirs(workspace: &Workspace, path: &Path) -> Result<(), ToolOutput> {
    match path.parent() {
        Some(parent) => workspace.create_dirs(parent).map_err(|e| match e {
            FileError::Escape(_) => file_error(&e),
            _ => ToolOutput::error(format!(
                "Cannot create the directory {}: {e}",
                parent.display()
            )),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    fn ctx(dir: &Path) -> ToolContext {
        ToolContext::new(Workspace::at(dir).unwrap(), CancellationToken::new())
    }

    #[tokio::test]
    async fn creates_parents_and_reports_size() {
        let tmp = tempfile::tempdir().unwrap();
        let c = ctx(tmp.path());
        let out = WriteTool::new(1 << 20)
            .call(json!({"file_path": "a/b/c.txt", "content": "x\ny\n"}), &c)
            .await;
        assert!(!out.is_error, "{out:?}");
        assert!(out.content.contains("4 bytes (2 lines)"), "{out:?}");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("a/b/c.txt")).unwrap(),
            "x\ny\n"
        );
        let out = WriteTool::new(1 << 20)
            .call(json!({"file_path": "a/b/c.txt", "content": ""}), &c)
            .await;
        assert!(out.content.starts_with("Updated"), "{out:?}");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("a/b/c.txt")).unwrap(),
            ""
        );
    }

    #[tokio::test]
    async fn overwriting_needs_a_read_of_the_current_content() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a.txt"), "theirs\n").unwrap();
        let c = ctx(tmp.path());
        let write = WriteTool::new(1 << 20);
        let input = json!({"file_path": "a.txt", "content": "mine\n"});
        let out = write.call(input.clone(), &c).await;
        assert!(
            out.is_error && out.content.contains("has not been read"),
            "{out:?}"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("a.txt")).unwrap(),
            "theirs\n"
        );
        crate::tools::read::ReadTool
            .call(json!({"file_path": "a.txt"}), &c)
            .await;
        let out = write.call(input, &c).await;
        assert!(out.content.starts_with("Updated"), "{out:?}");
        std::fs::write(tmp.path().join("a.txt"), "theirs again\n").unwrap();
        let out = write
            .call(json!({"file_path": "a.txt", "content": "x"}), &c)
            .await;
        assert!(
            out.is_error && out.content.contains("changed on disk"),
            "{out:?}"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("a.txt")).unwrap(),
            "theirs again\n"
        );
    }

    #[tokio::test]
    async fn refuses_escapes_and_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("out")).unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        let c = ctx(tmp.path());
        let abs = outside.path().join("x");
        for p in ["out/x", "../x", "d/../../x", abs.to_str().unwrap()] {
            let out = WriteTool::new(1 << 20)
                .call(json!({"file_path": p, "content": "pwned"}), &c)
                .await;
            assert!(
                out.is_error && out.content.contains("outside"),
                "{p}: {out:?}"
            );
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        let out = WriteTool::new(1 << 20)
            .call(json!({"file_path": "d", "content": ""}), &c)
            .await;
        assert!(out.is_error && out.content.contains("directory"), "{out:?}");
    }

    #[tokio::test]
    async fn refuses_a_dangling_symlink_pointing_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("created-by-link");
        std::os::unix::fs::symlink(&target, tmp.path().join("dangling")).unwrap();
        let out = WriteTool::new(1 << 20)
            .call(
                json!({"file_path": "dangling", "content": "pwned"}),
                &ctx(tmp.path()),
            )
            .await;
        assert!(out.is_error, "{out:?}");
        assert!(!target.exists());
    }

    #[tokio::test]
    async fn missing_content_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let out = WriteTool::new(1 << 20)
            .call(
                json!({"file_path": "a.txt", "content": 3}),
                &ctx(tmp.path()),
            )
            .await;
        assert!(out.is_error && out.content.contains("`content`"), "{out:?}");
    }
}
