//! `Read`: a text file's lines, numbered like `cat -n`, a window at a time so
//! large files do not flood the model's context.

use std::io::{BufRead, BufReader};
use std::path::Path;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::args::Args;
use super::reads::Stamp;
use super::session::SessionTools;
use super::text::{looks_binary, truncate_line};
use super::{Tool, ToolContext, ToolOutput, open_in_workspace, resolve_path, run_blocking};
use super::{notebook, read_media};
use crate::workspace::{Access, Workspace};

/// Lines returned when the model gives no `limit`.
pub const DEFAULT_LINE_LIMIT: usize = 2_000;
/// Longest line shown before it is cut.
pub const MAX_LINE_CHARS: usize = 2_000;
/// How much of the file's start is sampled to decide it is binary.
const BINARY_SAMPLE_BYTES: usize = 8 * 1024;

pub struct ReadTool;

#[async_trait]
impl Tool for ReadTool {
    fn name(&self) -> &str {
        "Read"
    }

    fn description(&self) -> String {
        format!(
            "Reads a text file from the working directory. file_path may be absolute or \
             relative to the working directory. Returns up to {DEFAULT_LINE_LIMIT} lines by \
             default, numbered like `cat -n` (line number, tab, text); use offset (1-based line \
             to start at) and limit for long files. Lines longer than {MAX_LINE_CHARS} \
             characters are cut. A Jupyter notebook (.ipynb) is shown as its cells, with their \
             ids and text outputs. An image (PNG, JPEG, GIF, WebP) is shown to you as an image, \
             scaled down when large; a PDF as a document, with pages (\"3\" or \"1-5\", at most \
             20 pages) required past 10 pages. Reading a file is what allows Edit and Write to change it \
             afterwards. Directories cannot be read: use Glob or `ls` through Bash."
        )
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "file_path": {"type": "string", "description": "The file to read, absolute or relative to the working directory"},
                "offset": {"type": "integer", "minimum": 1, "description": "The line number to start reading from (1-based). Only for files too large to read at once"},
                "limit": {"type": "integer", "minimum": 1, "description": "The number of lines to read. Only for files too large to read at once"},
                "pages": {"type": "string", "description": "Page range for PDF files, such as \"1-5\" or \"3\"; at most 20 pages per read. Required for PDFs over 10 pages"}
            },
            "required": ["file_path"],
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
        let (raw, offset, limit, pages) = match (
            args.string("file_path"),
            args.opt_u64("offset"),
            args.opt_u64("limit"),
            args.opt_string("pages"),
        ) {
            (Ok(p), Ok(o), Ok(l), Ok(pages)) => (p.to_owned(), o, l, pages.map(str::to_owned)),
            (Err(e), _, _, _) | (_, Err(e), _, _) | (_, _, Err(e), _) | (_, _, _, Err(e)) => {
                return e.into();
            }
        };
        if limit == Some(0) {
            return ToolOutput::error("Invalid input: field `limit` must be at least 1");
        }
        let path = match resolve_path(ctx, &raw) {
            Ok(p) => p,
            Err(out) => return out,
        };
        // offset 0 is read as "from the start", which is what a model means by it.
        let start = usize::try_from(offset.unwrap_or(1).max(1)).unwrap_or(usize::MAX);
        let limit = limit.map_or(DEFAULT_LINE_LIMIT, |l| {
            usize::try_from(l).unwrap_or(usize::MAX)
        });
        let workspace = ctx.workspace.clone();
        let session = ctx.session.clone();
        run_blocking(&ctx.cancel, move || {
            read_window(&workspace, &session, &path, start, limit, pages.as_deref())
        })
        .await
    }
}

/// Most bytes of one line kept in memory; the rest of a longer line is
/// skipped as it streams past (a minified file or a file with no newlines).
/// One character more than fits in the shown width, so a cut line is always
/// marked as cut.
const MAX_LINE_BYTES: usize = (MAX_LINE_CHARS + 1) * 4;
/// Most bytes of text one Read returns; past this the window ends early
/// and says where to continue, as a partial view.
pub const MAX_READ_BYTES: usize = 256 * 1024;

/// Largest notebook shown as cells; a larger one is read as text.
const MAX_NOTEBOOK_BYTES: u64 = crate::config::DEFAULT_MAX_FILE_BYTES;

fn read_window(
    workspace: &Workspace,
    session: &SessionTools,
    path: &Path,
    start: usize,
    limit: usize,
    pages: Option<&str>,
) -> ToolOutput {
    let shown = path.display();
    let opened = match open_in_workspace(workspace, path, Access::Read) {
        Ok(f) => f,
        Err(out) => return out,
    };
    // What the model is shown now is what Edit and Write compare against.
    match Stamp::measure(&opened.file) {
        Ok(stamp) => session.saw(path, stamp),
        Err(e) => return ToolOutput::error(format!("Cannot read {shown}: {e}")),
    }
    if let Some(media) = read_media::media_of(&opened.file) {
        return read_media::read_media(opened.file, opened.len, media, &shown.to_string(), pages);
    }
    if pages.is_some() {
        return ToolOutput::error("Invalid input: `pages` is only for PDF files");
    }
    if notebook::is_notebook(path)
        && opened.len <= MAX_NOTEBOOK_BYTES
        && let Some(shown_cells) = read_notebook(&opened.file, opened.len)
    {
        return shown_cells;
    }
    if opened.len == 0 {
        return ToolOutput::ok(format!("The file {shown} exists but is empty."));
    }
    let mut reader = BufReader::new(opened.file);
    let sample = match reader.fill_buf() {
        Ok(buf) => &buf[..buf.len().min(BINARY_SAMPLE_BYTES)],
        Err(e) => return ToolOutput::error(format!("Cannot read {shown}: {e}")),
    };
    if looks_binary(sample) {
        return ToolOutput::error(format!(
            "{shown} is a binary file ({} bytes) and cannot be shown as text. Use Bash (for \
             example `file` or `xxd | head`) to inspect it.",
            opened.len
        ));
    }

    let mut out = String::new();
    let mut line = Vec::new();
    let mut number = 0usize;
    let mut shown_lines = 0usize;
    let mut partial = false;
    loop {
        if shown_lines == limit {
            break;
        }
        let keep = number + 1 >= start;
        match read_capped_line(
            &mut reader,
            &mut line,
            if keep { MAX_LINE_BYTES } else { 0 },
        ) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return ToolOutput::error(format!("Cannot read {shown}: {e}")),
        }
        number += 1;
        if !keep {
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\n').trim_end_matches('\r');
        let entry = format!("{number:>6}\t{}\n", truncate_line(text, MAX_LINE_CHARS));
        if !out.is_empty() && out.len() + entry.len() > MAX_READ_BYTES {
            partial = true;
            break;
        }
        out.push_str(&entry);
        shown_lines += 1;
    }
    if shown_lines == 0 {
        return ToolOutput::error(format!(
            "{shown} has {number} lines; offset {start} is past the end of the file."
        ));
    }
    let more_after = partial || reader.fill_buf().is_ok_and(|rest| !rest.is_empty());
    if partial {
        out.push_str(&format!(
            "\n(PARTIAL view: this window reached the {MAX_READ_BYTES}-byte limit. Read \
             again with offset={} to continue.)\n",
            start + shown_lines
        ));
    } else if more_after {
        out.push_str(&format!(
            "\n(The file has more lines. Read again with offset={} to continue.)\n",
            start + shown_lines
        ));
    }
    ToolOutput::ok(out)
}

/// A notebook's cells, or `None` when the file does not parse as one (it
/// is then read as text).
fn read_notebook(file: &std::fs::File, len: u64) -> Option<ToolOutput> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    file.take(len).read_to_end(&mut bytes).ok()?;
    let mut text = notebook::render(&bytes)?;
    if text.len() > MAX_READ_BYTES {
        let mut cut = MAX_READ_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(&format!(
            "\n\n(PARTIAL view: the notebook's cells were cut at {MAX_READ_BYTES} bytes. Read \
             single cells with Bash, for example with jq or python.)\n"
        ));
    }
    Some(ToolOutput::ok(text))
}

/// Reads one line into `line`, keeping at most `keep` bytes of it and
/// streaming past the rest, so memory stays bounded whatever the file holds.
/// Returns false at the end of the file.
fn read_capped_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    keep: usize,
) -> std::io::Result<bool> {
    line.clear();
    let mut any = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(any);
        }
        any = true;
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let room = keep.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len();
        reader.consume(used);
        if done {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    fn ctx(dir: &Path) -> ToolContext {
        ToolContext::new(Workspace::at(dir).unwrap(), CancellationToken::new())
    }

    async fn read(ctx: &ToolContext, input: Value) -> ToolOutput {
        ReadTool.call(input, ctx).await
    }

    #[tokio::test]
    async fn numbers_lines_like_cat_n() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a.txt"), "one\ntwo\r\nthree").unwrap();
        let out = read(&ctx(tmp.path()), json!({"file_path": "a.txt"})).await;
        assert!(!out.is_error, "{out:?}");
        assert_eq!(out.content, "     1\tone\n     2\ttwo\n     3\tthree\n");
    }

    #[tokio::test]
    async fn offset_and_limit_select_a_window() {
        let tmp = tempfile::tempdir().unwrap();
        let body: String = (1..=10).map(|i| format!("line {i}\n")).collect();
        std::fs::write(tmp.path().join("a.txt"), body).unwrap();
        let c = ctx(tmp.path());
        let out = read(&c, json!({"file_path": "a.txt", "offset": 4, "limit": 2})).await;
        assert!(
            out.content.starts_with("     4\tline 4\n     5\tline 5\n"),
            "{}",
            out.content
        );
        assert!(out.content.contains("offset=6"), "{}", out.content);
        let out = read(&c, json!({"file_path": "a.txt", "offset": 50})).await;
        assert!(
            out.is_error && out.content.contains("past the end"),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn default_limit_and_long_lines_are_cut() {
        let tmp = tempfile::tempdir().unwrap();
        let mut body: String = (1..=2_500).map(|i| format!("{i}\n")).collect();
        body.insert_str(0, &format!("{}\n", "x".repeat(3_000)));
        std::fs::write(tmp.path().join("big.txt"), body).unwrap();
        let out = read(&ctx(tmp.path()), json!({"file_path": "big.txt"})).await;
        assert_eq!(
            out.content.lines().filter(|l| l.contains('\t')).count(),
            2_000
        );
        assert!(out.content.contains("[line truncated]"));
        assert!(!out.content.contains(&"x".repeat(2_001)));
    }

    #[tokio::test]
    async fn a_window_past_the_byte_limit_is_a_partial_view() {
        let tmp = tempfile::tempdir().unwrap();
        let body: String = (1..=2_000)
            .map(|i| format!("{i:04} {}\n", "y".repeat(300)))
            .collect();
        std::fs::write(tmp.path().join("wide.txt"), body).unwrap();
        let out = read(&ctx(tmp.path()), json!({"file_path": "wide.txt"})).await;
        assert!(!out.is_error, "{out:?}");
        assert!(
            out.content.len() <= MAX_READ_BYTES + 200,
            "{}",
            out.content.len()
        );
        let shown = out.content.lines().filter(|l| l.contains('\t')).count();
        assert!(shown > 100 && shown < 2_000, "{shown}");
        assert!(
            out.content.contains("PARTIAL view")
                && out.content.contains(&format!("offset={}", shown + 1)),
            "{}",
            &out.content[out.content.len() - 200..]
        );
    }

    #[tokio::test]
    async fn clear_errors_for_missing_directory_binary_empty() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("dir")).unwrap();
        std::fs::write(tmp.path().join("bin"), b"\x7fELF\0\0\x01").unwrap();
        std::fs::write(tmp.path().join("latin1"), b"caf\xe9 au lait").unwrap();
        std::fs::write(tmp.path().join("empty"), b"").unwrap();
        let c = ctx(tmp.path());
        let out = read(&c, json!({"file_path": "nope.txt"})).await;
        assert!(
            out.is_error && out.content.contains("does not exist"),
            "{out:?}"
        );
        let out = read(&c, json!({"file_path": "dir"})).await;
        assert!(
            out.is_error && out.content.contains("is a directory"),
            "{out:?}"
        );
        assert!(out.content.contains("Glob"), "{out:?}");
        for name in ["bin", "latin1"] {
            let out = read(&c, json!({"file_path": name})).await;
            assert!(out.is_error && out.content.contains("binary"), "{out:?}");
        }
        let out = read(&c, json!({"file_path": "empty"})).await;
        assert!(!out.is_error && out.content.contains("empty"), "{out:?}");
    }

    #[tokio::test]
    async fn refuses_paths_outside_the_workspace() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s3cret").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), tmp.path().join("link")).unwrap();
        let c = ctx(tmp.path());
        let abs = outside.path().join("secret");
        for p in ["link", "../secret", abs.to_str().unwrap(), "/etc/passwd"] {
            let out = read(&c, json!({"file_path": p})).await;
            assert!(
                out.is_error && out.content.contains("outside"),
                "{p}: {out:?}"
            );
            assert!(!out.content.contains("s3cret"));
        }
    }

    #[tokio::test]
    async fn invalid_input_names_the_field() {
        let tmp = tempfile::tempdir().unwrap();
        let c = ctx(tmp.path());
        let out = read(&c, json!({})).await;
        assert!(out.is_error && out.content.contains("file_path"), "{out:?}");
        let out = read(&c, json!({"file_path": "a", "limit": "many"})).await;
        assert!(out.is_error && out.content.contains("limit"), "{out:?}");
    }
}
