//! `Grep`: ripgrep's search (regex, `.gitignore`-aware walk, file types and
//! globs) over the workspace, built on the crates ripgrep itself is made of.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use grep_regex::RegexMatcherBuilder;
use grep_searcher::{
    BinaryDetection, Searcher, SearcherBuilder, Sink, SinkContext, SinkContextKind, SinkMatch,
};
use ignore::overrides::OverrideBuilder;
use ignore::types::TypesBuilder;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::args::{Args, InvalidInput};
use super::text::{MAX_OUTPUT_CHARS, truncate_line};
use super::walk::walker;
use super::{Tool, ToolContext, ToolOutput, resolve_path, run_blocking};
use crate::workspace::{Access, Workspace};

/// Longest matching line shown; minified files have lines of megabytes.
const MAX_LINE_CHARS: usize = 1_000;
/// Most memory the searcher may use for one file's buffer.
const MAX_SEARCH_HEAP_BYTES: usize = 64 * 1024 * 1024;

pub struct GrepTool;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Content,
    FilesWithMatches,
    Count,
}

#[derive(Debug, Clone)]
struct Query {
    pattern: String,
    path: Option<String>,
    glob: Option<String>,
    file_type: Option<String>,
    mode: Mode,
    case_insensitive: bool,
    line_numbers: bool,
    before: usize,
    after: usize,
    head_limit: Option<usize>,
    multiline: bool,
}

impl Query {
    fn parse(input: &Value) -> Result<Self, InvalidInput> {
        let args = Args::new(input)?;
        let mode = match args.opt_string("output_mode")? {
            None | Some("files_with_matches") => Mode::FilesWithMatches,
            Some("content") => Mode::Content,
            Some("count") => Mode::Count,
            Some(other) => {
                return Err(InvalidInput(format!(
                    "field `output_mode` must be \"content\", \"files_with_matches\" or \"count\", got \"{other}\""
                )));
            }
        };
        let usize_of = |key: &str| -> Result<Option<usize>, InvalidInput> {
            Ok(args
                .opt_u64(key)?
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
        };
        let context = usize_of("-C")?;
        Ok(Self {
            pattern: args.string("pattern")?.to_owned(),
            path: args.opt_string("path")?.map(str::to_owned),
            glob: args.opt_string("glob")?.map(str::to_owned),
            file_type: args.opt_string("type")?.map(str::to_owned),
            mode,
            case_insensitive: args.opt_bool("-i")?.unwrap_or(false),
            line_numbers: args.opt_bool("-n")?.unwrap_or(true),
            before: usize_of("-B")?.or(context).unwrap_or(0),
            after: usize_of("-A")?.or(context).unwrap_or(0),
            head_limit: usize_of("head_limit")?.filter(|n| *n > 0),
            multiline: args.opt_bool("multiline")?.unwrap_or(false),
        })
    }
}

#[async_trait]
impl Tool for GrepTool {
    fn name(&self) -> &str {
        "Grep"
    }

    fn description(&self) -> String {
        "Searches file contents with a regular expression (ripgrep syntax, e.g. \
         \"fn\\s+\\w+\" or \"log.*Error\"), honouring .gitignore. Filter files with glob \
         (e.g. \"*.js\", \"*.{ts,tsx}\") or type (e.g. \"rust\", \"py\", \"js\"). \
         output_mode: \"files_with_matches\" (default; paths, newest first), \"content\" \
         (matching lines as path:line:text, with -A/-B/-C context and -n line numbers, on \
         by default) or \"count\" (path:count). head_limit keeps the first N lines or \
         entries. multiline lets a pattern span lines and `.` match newlines. Literal braces \
         need escaping (\"interface\\{\\}\")."
            .to_owned()
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "description": "The regular expression to search for"},
                "path": {"type": "string", "description": "File or directory to search; defaults to the working directory"},
                "glob": {"type": "string", "description": "Glob to filter files (rg --glob), e.g. \"*.js\" or \"*.{ts,tsx}\""},
                "type": {"type": "string", "description": "File type to search (rg --type), e.g. \"js\", \"py\", \"rust\""},
                "output_mode": {"type": "string", "enum": ["content", "files_with_matches", "count"], "description": "What to return; defaults to files_with_matches"},
                "-i": {"type": "boolean", "description": "Case insensitive search"},
                "-n": {"type": "boolean", "description": "Show line numbers (content mode); defaults to true"},
                "-A": {"type": "integer", "minimum": 0, "description": "Lines of context after each match (content mode)"},
                "-B": {"type": "integer", "minimum": 0, "description": "Lines of context before each match (content mode)"},
                "-C": {"type": "integer", "minimum": 0, "description": "Lines of context before and after each match (content mode)"},
                "head_limit": {"type": "integer", "minimum": 1, "description": "Keep only the first N output lines or entries"},
                "multiline": {"type": "boolean", "description": "Let patterns span lines and `.` match newlines (rg -U --multiline-dotall)"}
            },
            "required": ["pattern"],
            "additionalProperties": false
        })
    }

    fn read_only(&self) -> bool {
        true
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let query = match Query::parse(&input) {
            Ok(q) => q,
            Err(e) => return e.into(),
        };
        let root = match &query.path {
            Some(p) => match resolve_path(ctx, p) {
                Ok(p) => p,
                Err(out) => return out,
            },
            None => ctx.workspace.cwd().to_path_buf(),
        };
        let cancel = ctx.cancel.clone();
        let workspace = ctx.workspace.clone();
        run_blocking(&ctx.cancel, move || {
            search(&workspace, &root, &query, &cancel)
        })
        .await
    }
}

/// What the search produced, capped by head_limit and the output budget.
struct Report {
    lines: Vec<String>,
    chars: usize,
    head_limit: Option<usize>,
    /// Entries not shown because of head_limit.
    over_limit: bool,
    /// Entries not shown because the output got too long.
    over_budget: bool,
}

impl Report {
    fn new(head_limit: Option<usize>) -> Self {
        Self {
            lines: Vec::new(),
            chars: 0,
            head_limit,
            over_limit: false,
            over_budget: false,
        }
    }

    fn full(&self) -> bool {
        self.over_limit || self.over_budget
    }

    fn push(&mut self, line: String) {
        if self
            .head_limit
            .is_some_and(|limit| self.lines.len() >= limit)
        {
            self.over_limit = true;
            return;
        }
        if self.chars + line.len() > MAX_OUTPUT_CHARS {
            self.over_budget = true;
            return;
        }
        self.chars += line.len() + 1;
        self.lines.push(line);
    }

    fn finish(self, empty: &str) -> ToolOutput {
        if self.lines.is_empty() && !self.full() {
            return ToolOutput::ok(empty);
        }
        let mut out = self.lines.join("\n");
        out.push('\n');
        if self.over_limit {
            out.push_str(&format!(
                "(Showing the first {} entries because of head_limit.)\n",
                self.lines.len()
            ));
        } else if self.over_budget {
            out.push_str(
                "(Output truncated: too many results. Narrow the pattern, path, glob or type, \
                 or use head_limit.)\n",
            );
        }
        ToolOutput::ok(out)
    }
}

fn search(
    workspace: &Workspace,
    root: &Path,
    query: &Query,
    cancel: &CancellationToken,
) -> ToolOutput {
    if !root.exists() {
        return ToolOutput::error(format!("Path does not exist: {}", root.display()));
    }
    let matcher = {
        let mut builder = RegexMatcherBuilder::new();
        // As ripgrep does: `^` and `$` anchor at line boundaries.
        builder
            .case_insensitive(query.case_insensitive)
            .multi_line(true);
        if query.multiline {
            builder.dot_matches_new_line(true);
        } else {
            // Lets the searcher work line by line; a pattern that needs a
            // literal newline is refused with a hint to use multiline.
            builder.line_terminator(Some(b'\n'));
        }
        match builder.build(&query.pattern) {
            Ok(m) => m,
            Err(e) => {
                let hint = if query.pattern.contains("\\n") && !query.multiline {
                    " (set multiline to true to match across lines)"
                } else {
                    ""
                };
                return ToolOutput::error(format!(
                    "Invalid regular expression '{}'{hint}: {e}",
                    query.pattern
                ));
            }
        }
    };
    let mut searcher = {
        let context = query.mode == Mode::Content;
        SearcherBuilder::new()
            .line_number(true)
            .multi_line(query.multiline)
            .before_context(if context { query.before } else { 0 })
            .after_context(if context { query.after } else { 0 })
            .binary_detection(BinaryDetection::quit(0))
            // A file that is one enormous line (or a multiline search of a
            // huge file) is skipped instead of filling memory.
            .heap_limit(Some(MAX_SEARCH_HEAP_BYTES))
            .build()
    };
    let mut walk = walker(root);
    walk.sort_by_file_name(|a, b| a.cmp(b));
    if let Some(name) = &query.file_type {
        let mut types = TypesBuilder::new();
        types.add_defaults();
        types.select(name);
        match types.build() {
            Ok(t) => {
                walk.types(t);
            }
            Err(e) => return ToolOutput::error(format!("Unknown file type '{name}': {e}")),
        }
    }
    if let Some(globs) = &query.glob {
        let mut overrides = OverrideBuilder::new(root);
        // Several globs may be given separated by whitespace, as models do.
        for glob in globs.split_whitespace() {
            if let Err(e) = overrides.add(glob) {
                return ToolOutput::error(format!("Invalid glob '{glob}': {e}"));
            }
        }
        match overrides.build() {
            Ok(o) => {
                walk.overrides(o);
            }
            Err(e) => return ToolOutput::error(format!("Invalid glob '{globs}': {e}")),
        }
    }

    let mut report = Report::new(query.head_limit);
    let mut matched_files: Vec<(SystemTime, PathBuf)> = Vec::new();
    let context = query.before > 0 || query.after > 0;
    for entry in walk.build() {
        if cancel.is_cancelled() {
            return ToolOutput::error("Interrupted.");
        }
        if report.full() {
            break;
        }
        // Unreadable entries are skipped, as ripgrep does.
        let Ok(entry) = entry else { continue };
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let shown = path.display().to_string();
        // The walk found the file by name; its content is read only through
        // a handle opened beneath the workspace, so a directory swapped for
        // a symlink mid-walk yields nothing from outside.
        let Ok(opened) = workspace.open_file(path, Access::Read) else {
            continue;
        };
        let file = opened.file;
        match query.mode {
            Mode::FilesWithMatches => {
                let mut sink = FirstMatch(false);
                if searcher.search_file(&matcher, &file, &mut sink).is_ok() && sink.0 {
                    let modified = entry
                        .metadata()
                        .ok()
                        .and_then(|m| m.modified().ok())
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    matched_files.push((modified, path.to_path_buf()));
                }
            }
            Mode::Count => {
                let mut sink = CountMatches(0);
                if searcher.search_file(&matcher, &file, &mut sink).is_ok() && sink.0 > 0 {
                    report.push(format!("{shown}:{}", sink.0));
                }
            }
            Mode::Content => {
                let mut sink = ContentLines {
                    path: &shown,
                    line_numbers: query.line_numbers,
                    lines: Vec::new(),
                    cancel,
                };
                if searcher.search_file(&matcher, &file, &mut sink).is_ok()
                    && !sink.lines.is_empty()
                {
                    // ripgrep separates files' context groups the same way.
                    if context && !report.lines.is_empty() {
                        report.push("--".to_owned());
                    }
                    for line in sink.lines {
                        report.push(line);
                    }
                }
            }
        }
    }
    if query.mode == Mode::FilesWithMatches {
        // Newest first, like Glob: recently touched files are usually the
        // ones being worked on.
        matched_files.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let total = matched_files.len();
        for (_, path) in matched_files {
            report.push(path.display().to_string());
        }
        if total == 0 {
            return ToolOutput::ok("No files found");
        }
        let mut out = report.finish("No files found");
        out.content.insert_str(
            0,
            &format!("Found {total} file{}\n", if total == 1 { "" } else { "s" }),
        );
        return out;
    }
    report.finish("No matches found")
}

/// Stops a file's search at its first match.
struct FirstMatch(bool);

impl Sink for FirstMatch {
    type Error = io::Error;

    fn matched(&mut self, _: &Searcher, _: &SinkMatch<'_>) -> Result<bool, io::Error> {
        self.0 = true;
        Ok(false)
    }
}

/// Counts matching lines, as `rg --count` does.
struct CountMatches(u64);

impl Sink for CountMatches {
    type Error = io::Error;

    fn matched(&mut self, _: &Searcher, m: &SinkMatch<'_>) -> Result<bool, io::Error> {
        self.0 += m.lines().count().max(1) as u64;
        Ok(true)
    }
}

/// Collects `path:line:text` match lines and `path-line-text` context lines.
struct ContentLines<'a> {
    path: &'a str,
    line_numbers: bool,
    lines: Vec<String>,
    cancel: &'a CancellationToken,
}

impl ContentLines<'_> {
    fn push(&mut self, sep: char, number: Option<u64>, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let text = truncate_line(
            text.trim_end_matches('\n').trim_end_matches('\r'),
            MAX_LINE_CHARS,
        );
        let line = match number.filter(|_| self.line_numbers) {
            Some(n) => format!("{}{sep}{n}{sep}{text}", self.path),
            None => format!("{}{sep}{text}", self.path),
        };
        self.lines.push(line);
    }
}

impl Sink for ContentLines<'_> {
    type Error = io::Error;

    fn matched(&mut self, _: &Searcher, m: &SinkMatch<'_>) -> Result<bool, io::Error> {
        // A multiline match covers several lines; each is shown and numbered.
        let mut number = m.line_number();
        for line in m.lines() {
            self.push(':', number, line);
            number = number.map(|n| n + 1);
        }
        Ok(!self.cancel.is_cancelled() && self.lines.len() < 100_000)
    }

    fn context(&mut self, _: &Searcher, c: &SinkContext<'_>) -> Result<bool, io::Error> {
        if matches!(c.kind(), SinkContextKind::Before | SinkContextKind::After) {
            self.push('-', c.line_number(), c.bytes());
        }
        Ok(true)
    }

    fn context_break(&mut self, _: &Searcher) -> Result<bool, io::Error> {
        self.lines.push("--".to_owned());
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{File, FileTimes};
    use std::time::Duration;

    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        ctx: ToolContext,
    }

    fn write(root: &Path, rel: &str, body: &str, mtime: u64) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, body).unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_times(
                FileTimes::new().set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime)),
            )
            .unwrap();
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        write(
            &root,
            "src/main.rs",
            "fn main() {\n    println!(\"Hello\");\n}\n",
            3,
        );
        write(
            &root,
            "src/lib.rs",
            "pub fn hello() {}\n// TODO: more\nfn helper() {}\n",
            2,
        );
        write(
            &root,
            "web/app.js",
            "function hello() { return 'HELLO'; }\n",
            1,
        );
        write(
            &root,
            "notes.txt",
            "a\nb\nhello world\nc\nd\ne\nhello again\nf\n",
            4,
        );
        write(&root, ".gitignore", "ignored/\n", 1);
        write(&root, "ignored/x.rs", "fn hello() {}\n", 5);
        std::fs::write(root.join("blob.bin"), b"hello\0\x01\x02").unwrap();
        let ctx = ToolContext::new(Workspace::at(&root).unwrap(), CancellationToken::new());
        Fixture {
            _tmp: tmp,
            root,
            ctx,
        }
    }

    async fn grep(f: &Fixture, input: Value) -> ToolOutput {
        GrepTool.call(input, &f.ctx).await
    }

    fn p(f: &Fixture, rel: &str) -> String {
        f.root.join(rel).display().to_string()
    }

    #[tokio::test]
    async fn files_with_matches_is_the_default_newest_first() {
        let f = fixture();
        let out = grep(&f, json!({"pattern": "hello"})).await;
        assert!(!out.is_error, "{out:?}");
        let expected = format!(
            "Found 3 files\n{}\n{}\n{}\n",
            p(&f, "notes.txt"),
            p(&f, "src/lib.rs"),
            p(&f, "web/app.js")
        );
        assert_eq!(out.content, expected);
    }

    #[tokio::test]
    async fn case_insensitive_and_type_and_glob_filters() {
        let f = fixture();
        let out = grep(&f, json!({"pattern": "hello", "-i": true, "type": "rust"})).await;
        assert_eq!(
            out.content,
            format!(
                "Found 2 files\n{}\n{}\n",
                p(&f, "src/main.rs"),
                p(&f, "src/lib.rs")
            )
        );
        let out = grep(&f, json!({"pattern": "hello", "glob": "*.js"})).await;
        assert_eq!(
            out.content,
            format!("Found 1 file\n{}\n", p(&f, "web/app.js"))
        );
        let out = grep(&f, json!({"pattern": "hello", "glob": "*.{js,txt}"})).await;
        assert!(out.content.starts_with("Found 2 files"), "{}", out.content);
        let out = grep(&f, json!({"pattern": "x", "type": "klingon"})).await;
        assert!(out.is_error && out.content.contains("klingon"), "{out:?}");
    }

    #[tokio::test]
    async fn content_mode_with_line_numbers_and_context() {
        let f = fixture();
        let notes = p(&f, "notes.txt");
        let out = grep(
            &f,
            json!({"pattern": "hello", "path": "notes.txt", "output_mode": "content"}),
        )
        .await;
        assert_eq!(
            out.content,
            format!("{notes}:3:hello world\n{notes}:7:hello again\n")
        );
        let out = grep(
            &f,
            json!({"pattern": "hello", "path": "notes.txt", "output_mode": "content", "-n": false}),
        )
        .await;
        assert_eq!(
            out.content,
            format!("{notes}:hello world\n{notes}:hello again\n")
        );
        let out = grep(
            &f,
            json!({"pattern": "world", "path": "notes.txt", "output_mode": "content", "-C": 1}),
        )
        .await;
        assert_eq!(
            out.content,
            format!("{notes}-2-b\n{notes}:3:hello world\n{notes}-4-c\n")
        );
        let out = grep(
            &f,
            json!({"pattern": "hello", "path": "notes.txt", "output_mode": "content", "-A": 1, "-B": 0}),
        )
        .await;
        assert_eq!(
            out.content,
            format!("{notes}:3:hello world\n{notes}-4-c\n--\n{notes}:7:hello again\n{notes}-8-f\n")
        );
    }

    #[tokio::test]
    async fn count_mode_and_head_limit() {
        let f = fixture();
        let out = grep(&f, json!({"pattern": "hello", "output_mode": "count"})).await;
        assert_eq!(
            out.content,
            format!(
                "{}:2\n{}:1\n{}:1\n",
                p(&f, "notes.txt"),
                p(&f, "src/lib.rs"),
                p(&f, "web/app.js")
            )
        );
        let out = grep(
            &f,
            json!({"pattern": "hello", "output_mode": "content", "head_limit": 1}),
        )
        .await;
        assert!(
            out.content.starts_with(&format!(
                "{}:3:hello world\n(Showing the first 1",
                p(&f, "notes.txt")
            )),
            "{}",
            out.content
        );
    }

    #[tokio::test]
    async fn multiline_patterns_span_lines() {
        let f = fixture();
        let out = grep(
            &f,
            json!({"pattern": "hello\\(\\) \\{\\}\\n// TODO", "output_mode": "content"}),
        )
        .await;
        assert!(out.is_error && out.content.contains("multiline"), "{out:?}");
        let out = grep(
            &f,
            json!({"pattern": "hello\\(\\).*TODO", "output_mode": "content", "multiline": true}),
        )
        .await;
        let lib = p(&f, "src/lib.rs");
        assert_eq!(
            out.content,
            format!("{lib}:1:pub fn hello() {{}}\n{lib}:2:// TODO: more\n")
        );
    }

    #[tokio::test]
    async fn ignored_binary_and_outside_are_not_searched() {
        let f = fixture();
        let out = grep(&f, json!({"pattern": "hello"})).await;
        assert!(!out.content.contains("ignored"), "{}", out.content);
        assert!(!out.content.contains("blob.bin"), "{}", out.content);
        let out = grep(&f, json!({"pattern": "root", "path": "/etc"})).await;
        assert!(out.is_error && out.content.contains("outside"), "{out:?}");
        let out = grep(&f, json!({"pattern": "x", "path": "../"})).await;
        assert!(out.is_error && out.content.contains("outside"), "{out:?}");
    }

    #[tokio::test]
    async fn errors_and_no_matches() {
        let f = fixture();
        let out = grep(&f, json!({"pattern": "zzz_nothing"})).await;
        assert_eq!(out, ToolOutput::ok("No files found"));
        let out = grep(&f, json!({"pattern": "zzz", "output_mode": "content"})).await;
        assert_eq!(out, ToolOutput::ok("No matches found"));
        let out = grep(&f, json!({"pattern": "(unclosed"})).await;
        assert!(
            out.is_error && out.content.contains("Invalid regular expression"),
            "{out:?}"
        );
        let out = grep(&f, json!({"pattern": "x", "output_mode": "lines"})).await;
        assert!(
            out.is_error && out.content.contains("output_mode"),
            "{out:?}"
        );
        let out = grep(&f, json!({"pattern": "x", "-A": "lots"})).await;
        assert!(out.is_error && out.content.contains("`-A`"), "{out:?}");
        let out = grep(&f, json!({"pattern": "x", "path": "missing"})).await;
        assert!(
            out.is_error && out.content.contains("does not exist"),
            "{out:?}"
        );
        let out = grep(&f, json!({})).await;
        assert!(out.is_error && out.content.contains("`pattern`"), "{out:?}");
    }
}
