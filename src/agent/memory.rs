//! Project memory: the CLAUDE.md files a session's model reads before the
//! conversation, chosen by setting source, with their `@path` imports.
//!
//! - `user`: `{claude_home}/CLAUDE.md` of the service (`user.claude_home`,
//!   `$HOME/.claude` by default).
//! - `project`: `CLAUDE.md` and `.claude/CLAUDE.md` in the session's directory
//!   and each parent up to `{base_dir}/{user_id}`, never above it.
//! - `local`: `CLAUDE.local.md` in the same directories (personal notes a
//!   repository keeps out of git); `project` does not imply it.
//!
//! Files are listed from the most general to the most specific (user, then
//! the user's directory down to the session's, each directory's CLAUDE.local.md
//! after its CLAUDE.md), each import right after the file that names it.
//! Project and local files, imports included, are opened beneath the user's
//! directory handle, so nothing outside it is ever read for a session.

use std::collections::HashSet;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use crate::skills::SettingSource;
use crate::workspace::{FileError, OpenFile, Workspace, lexical_normalize};

/// Longest file read into memory; the rest is left out with a note. Far
/// above the couple of hundred lines a memory file is meant to be.
pub const MAX_MEMORY_FILE_BYTES: usize = 64 * 1024;
/// All memory files together; files past it are left out with a note.
pub const MAX_MEMORY_TOTAL_BYTES: usize = 256 * 1024;
/// An import of an import of ... : at most this many hops from a root file.
pub const MAX_IMPORT_HOPS: usize = 4;

/// Where a memory file comes from, as shown to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    User,
    Project,
    Local,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Project => "project",
            Self::Local => "local",
        }
    }
}

/// One file of memory, as read this turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryFile {
    /// Absolute, with `.` and `..` folded.
    pub path: PathBuf,
    /// The path as the model sees it: relative to the session's directory,
    /// or `~/...` for the service's own files.
    pub label: String,
    pub scope: Scope,
    /// The label of the file whose `@path` brought this one in.
    pub imported_by: Option<String>,
    /// The text, HTML block comments removed.
    pub content: String,
    /// What the model should know about how the file was read (cut short,
    /// imports refused).
    pub notes: Vec<String>,
}

/// Every memory file of a session, in the order the model reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    pub files: Vec<MemoryFile>,
    /// Labels of files left out because the total was reached.
    pub omitted: Vec<String>,
}

impl Memory {
    /// The system block that delivers memory, or `None` when there is none.
    pub fn render(&self) -> Option<String> {
        if self.files.is_empty() && self.omitted.is_empty() {
            return None;
        }
        let mut text = String::from(
            "# Memory\n\n\
             The files below are instructions the user and the project keep for you \
             (CLAUDE.md memory), from the most general to the most specific. Follow them: \
             they take precedence over the general guidance above, and where two of them \
             disagree, the later, more specific one wins. Paths are relative to the working \
             directory.\n",
        );
        for file in &self.files {
            text.push_str(&format!(
                "\n<memory path=\"{}\" scope=\"{}\"",
                attribute(&file.label),
                file.scope.as_str()
            ));
            if let Some(by) = &file.imported_by {
                text.push_str(&format!(" imported_by=\"{}\"", attribute(by)));
            }
            text.push_str(">\n");
            let content = file.content.trim_matches('\n');
            if !content.is_empty() {
                text.push_str(content);
                text.push('\n');
            }
            for note in &file.notes {
                text.push_str(&format!("({note})\n"));
            }
            text.push_str("</memory>\n");
        }
        if !self.omitted.is_empty() {
            text.push_str(&format!(
                "\n(Left out, past the {MAX_MEMORY_TOTAL_BYTES}-byte limit for all memory: {}.)\n",
                self.omitted.join(", ")
            ));
        }
        Some(text.trim_end().to_owned())
    }
}

fn attribute(value: &str) -> String {
    value.replace('&', "&amp;").replace('"', "&quot;")
}

/// Reads a session's memory afresh: a handful of opens, most of which find
/// nothing, so it is done for every turn and an edit shows up on the next
/// one. Unreadable files are skipped with a warning; loading never fails.
pub fn load(
    claude_home: Option<&Path>,
    home: Option<&Path>,
    sources: &[SettingSource],
    workspace: &Workspace,
) -> Memory {
    let mut loader = Loader {
        workspace,
        home,
        memory: Memory::default(),
        seen: HashSet::new(),
        total: 0,
    };
    if sources.contains(&SettingSource::User)
        && let Some(claude_home) = claude_home
    {
        let claude_home = lexical_normalize(claude_home);
        loader.load(
            &claude_home.join("CLAUDE.md"),
            Origin {
                scope: Scope::User,
                boundary: &claude_home,
            },
            0,
            None,
        );
    }
    let project = sources.contains(&SettingSource::Project);
    let local = sources.contains(&SettingSource::Local);
    if project || local {
        let user_dir = workspace.user_dir().to_path_buf();
        let mut dirs: Vec<&Path> = workspace
            .cwd()
            .ancestors()
            .take_while(|dir| dir.starts_with(&user_dir))
            .collect();
        dirs.reverse();
        for dir in dirs {
            let mut names: Vec<(&str, Scope)> = Vec::new();
            if project {
                names.push(("CLAUDE.md", Scope::Project));
                names.push((".claude/CLAUDE.md", Scope::Project));
            }
            if local {
                names.push(("CLAUDE.local.md", Scope::Local));
            }
            for (name, scope) in names {
                loader.load(
                    &dir.join(name),
                    Origin {
                        scope,
                        boundary: &user_dir,
                    },
                    0,
                    None,
                );
            }
        }
    }
    loader.memory
}

/// Where a file's imports may lead: the directory of its scope.
#[derive(Clone, Copy)]
struct Origin<'a> {
    scope: Scope,
    /// The user's directory for project and local files, the Claude home
    /// for the service's own.
    boundary: &'a Path,
}

struct Loader<'a> {
    workspace: &'a Workspace,
    home: Option<&'a Path>,
    memory: Memory,
    /// Files already read (or tried) this turn: an import cycle, or two files
    /// importing the same one, reads it once.
    seen: HashSet<PathBuf>,
    total: usize,
}

impl Loader<'_> {
    fn load(&mut self, path: &Path, origin: Origin<'_>, hops: usize, imported_by: Option<&str>) {
        let path = lexical_normalize(path);
        if !self.seen.insert(path.clone()) {
            return;
        }
        let label = self.label(&path, origin.scope);
        let opened = match origin.scope {
            Scope::User => crate::workspace::open_trusted_file(&path),
            Scope::Project | Scope::Local => self.workspace.open_in_user_dir(&path),
        };
        let opened = match opened {
            Ok(opened) => opened,
            Err(FileError::NotFound(_)) => return,
            Err(err) => {
                tracing::warn!(file = %label, error = %err, "cannot read a memory file");
                return;
            }
        };
        let (text, cut) = match read_capped(opened) {
            Ok(read) => read,
            Err(err) => {
                tracing::warn!(file = %label, error = %err, "cannot read a memory file");
                return;
            }
        };
        if self.total + text.len() > MAX_MEMORY_TOTAL_BYTES {
            self.memory.omitted.push(label);
            return;
        }
        self.total += text.len();
        let content = strip_block_comments(&text);
        let mut notes = Vec::new();
        if cut {
            notes.push(format!(
                "Only the first {MAX_MEMORY_FILE_BYTES} bytes of this file were read."
            ));
        }
        let imports = if hops < MAX_IMPORT_HOPS {
            find_imports(&content)
        } else {
            Vec::new()
        };
        let index = self.memory.files.len();
        self.memory.files.push(MemoryFile {
            path: path.clone(),
            label: label.clone(),
            scope: origin.scope,
            imported_by: imported_by.map(str::to_owned),
            content,
            notes,
        });
        for import in imports {
            let Some(target) = resolve_import(&import, &path, self.home) else {
                continue;
            };
            if !target.starts_with(origin.boundary) {
                let place = match origin.scope {
                    Scope::User => "the service's Claude directory",
                    Scope::Project | Scope::Local => "the user's directory",
                };
                tracing::warn!(file = %label, import = %import, "memory import outside its directory refused");
                self.memory.files[index].notes.push(format!(
                    "@{import} was not imported: it lies outside {place}."
                ));
                continue;
            }
            self.load(&target, origin, hops + 1, Some(&label));
        }
    }

    fn label(&self, path: &Path, scope: Scope) -> String {
        if scope == Scope::User
            && let Some(home) = self.home
            && let Ok(rest) = path.strip_prefix(lexical_normalize(home))
        {
            return format!("~/{}", rest.display());
        }
        relative(self.workspace.cwd(), path)
    }
}

/// Reads at most [`MAX_MEMORY_FILE_BYTES`]; says whether the file was longer.
fn read_capped(opened: OpenFile) -> std::io::Result<(String, bool)> {
    let mut bytes = Vec::new();
    opened
        .file
        .take(MAX_MEMORY_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    let cut = bytes.len() > MAX_MEMORY_FILE_BYTES;
    bytes.truncate(MAX_MEMORY_FILE_BYTES);
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if cut {
        // A character split by the cut shows as a replacement character; drop it.
        while text.ends_with('\u{fffd}') {
            text.pop();
        }
    }
    Ok((text, cut))
}

/// `path` as seen from `base` (both absolute and normalised): `CLAUDE.md`,
/// `../CLAUDE.md`, `docs/style.md`.
fn relative(base: &Path, path: &Path) -> String {
    let base: Vec<Component> = base.components().collect();
    let target: Vec<Component> = path.components().collect();
    let common = base.iter().zip(&target).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..base.len() {
        out.push("..");
    }
    for part in &target[common..] {
        out.push(part.as_os_str());
    }
    if out.as_os_str().is_empty() {
        ".".to_owned()
    } else {
        out.display().to_string()
    }
}

/// Where `@import` written in `importer` points: relative to the importing
/// file, absolute, or under the service's home for `~/`. `None` for `~/`
/// without a home.
fn resolve_import(import: &str, importer: &Path, home: Option<&Path>) -> Option<PathBuf> {
    let target = if let Some(rest) = import.strip_prefix("~/") {
        home?.join(rest)
    } else if Path::new(import).is_absolute() {
        PathBuf::from(import)
    } else {
        importer.parent()?.join(import)
    };
    Some(lexical_normalize(&target))
}

/// A fence line (three or more backticks or tildes): its character and length.
fn fence(line: &str) -> Option<(char, usize)> {
    let trimmed = line.trim_start();
    let c = trimmed.chars().next().filter(|c| matches!(c, '`' | '~'))?;
    let run = trimmed.chars().take_while(|x| *x == c).count();
    (run >= 3).then_some((c, run))
}

/// Tracks fenced code blocks line by line: whether each line is code.
#[derive(Default)]
struct Fences {
    open: Option<(char, usize)>,
}

impl Fences {
    /// Whether `line` belongs to a fenced block (its fence lines included).
    fn is_code(&mut self, line: &str) -> bool {
        match (self.open, fence(line)) {
            (Some((c, n)), Some((c2, n2))) if c == c2 && n2 >= n => {
                self.open = None;
                true
            }
            (Some(_), _) => true,
            (None, Some(opened)) => {
                self.open = Some(opened);
                true
            }
            (None, None) => false,
        }
    }
}

/// Removes HTML comments that start a line (`<!-- ... -->`, over one line
/// or several), leaving those inside fenced code blocks alone: notes for the
/// people editing the file, not for the model.
pub fn strip_block_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut fences = Fences::default();
    let mut in_comment = false;
    for line in text.split_inclusive('\n') {
        if in_comment {
            if let Some(end) = line.find("-->") {
                in_comment = false;
                keep_rest(&mut out, &line[end + 3..]);
            }
            continue;
        }
        if fences.is_code(line) {
            out.push_str(line);
            continue;
        }
        if let Some(rest) = line.trim_start().strip_prefix("<!--") {
            match rest.find("-->") {
                Some(end) => keep_rest(&mut out, &rest[end + 3..]),
                None => in_comment = true,
            }
            continue;
        }
        out.push_str(line);
    }
    out
}

/// What follows a comment on its closing line, unless it is blank.
fn keep_rest(out: &mut String, rest: &str) {
    if !rest.trim().is_empty() {
        out.push_str(rest.trim_start());
    }
}

/// The `@path` imports of a memory file, in order: an `@` at the start of a
/// line or after whitespace, outside code spans and fenced blocks, up to the
/// next whitespace (trailing punctuation dropped, so "see @notes.md." works).
pub fn find_imports(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut fences = Fences::default();
    for line in text.lines() {
        if fences.is_code(line) {
            continue;
        }
        let mut in_span: Option<usize> = None;
        let mut previous: Option<char> = None;
        let mut chars = line.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '`' {
                let mut run = 1;
                while chars.next_if(|(_, x)| *x == '`').is_some() {
                    run += 1;
                }
                in_span = match in_span {
                    None => Some(run),
                    Some(open) if open == run => None,
                    other => other,
                };
                previous = Some('`');
                continue;
            }
            if c == '@' && in_span.is_none() && previous.is_none_or(char::is_whitespace) {
                let rest = &line[i + 1..];
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                let token = rest[..end].trim_end_matches(|c: char| {
                    matches!(
                        c,
                        '.' | ',' | ';' | ':' | '!' | '?' | ')' | ']' | '}' | '"' | '\''
                    )
                });
                if !token.is_empty() && !token.starts_with('@') {
                    found.push(token.to_owned());
                }
            }
            previous = Some(c);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Subdir, UserId};

    const ALL: [SettingSource; 3] = [
        SettingSource::User,
        SettingSource::Project,
        SettingSource::Local,
    ];

    struct Fixture {
        _tmp: tempfile::TempDir,
        base: PathBuf,
        home: PathBuf,
        ws: Workspace,
    }

    /// A session of `alice` in `proj/app`, and a service home.
    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("users");
        let home = tmp.path().join("home");
        std::fs::create_dir_all(home.join(".claude")).unwrap();
        let ws = Workspace::open(
            &base,
            &UserId::parse("alice").unwrap(),
            Some(&Subdir::parse("proj/app").unwrap()),
            true,
        )
        .unwrap();
        Fixture {
            base: base.canonicalize().unwrap(),
            home: home.canonicalize().unwrap(),
            _tmp: tmp,
            ws,
        }
    }

    impl Fixture {
        fn write(&self, path: &Path, text: &str) {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }

        fn load(&self, sources: &[SettingSource]) -> Memory {
            let claude_home = self.home.join(".claude");
            load(Some(&claude_home), Some(&self.home), sources, &self.ws)
        }
    }

    fn labels(memory: &Memory) -> Vec<(String, &'static str, Option<String>)> {
        memory
            .files
            .iter()
            .map(|f| (f.label.clone(), f.scope.as_str(), f.imported_by.clone()))
            .collect()
    }

    #[test]
    fn files_load_from_the_users_directory_down_never_above_it() {
        let f = fixture();
        let cwd = f.ws.cwd().to_path_buf();
        let alice = f.base.join("alice");
        f.write(&f.base.join("CLAUDE.md"), "above the user");
        f.write(&f.home.join(".claude/CLAUDE.md"), "user prefs");
        f.write(&alice.join("CLAUDE.md"), "alice root");
        f.write(&alice.join("proj/.claude/CLAUDE.md"), "proj dot-claude");
        f.write(&alice.join("proj/CLAUDE.local.md"), "proj local");
        f.write(&cwd.join("CLAUDE.md"), "app");
        f.write(&cwd.join("CLAUDE.local.md"), "app local");

        let memory = f.load(&ALL);
        assert_eq!(
            labels(&memory),
            [
                ("~/.claude/CLAUDE.md".to_owned(), "user", None),
                ("../../CLAUDE.md".to_owned(), "project", None),
                ("../.claude/CLAUDE.md".to_owned(), "project", None),
                ("../CLAUDE.local.md".to_owned(), "local", None),
                ("CLAUDE.md".to_owned(), "project", None),
                ("CLAUDE.local.md".to_owned(), "local", None),
            ]
        );
        let all: String = memory.files.iter().map(|m| m.content.as_str()).collect();
        assert!(!all.contains("above the user"), "{all}");

        // Only the sources asked for.
        let project: Vec<String> = f
            .load(&[SettingSource::Project])
            .files
            .into_iter()
            .map(|m| m.label)
            .collect();
        assert_eq!(
            project,
            ["../../CLAUDE.md", "../.claude/CLAUDE.md", "CLAUDE.md"]
        );
        assert!(f.load(&[]).render().is_none());
    }

    #[test]
    fn imports_resolve_from_the_importing_file_and_stay_in_the_users_directory() {
        let f = fixture();
        let cwd = f.ws.cwd().to_path_buf();
        f.write(&f.base.join("bob/secret"), "bob's secret");
        f.write(&f.base.join("outside.md"), "above alice");
        f.write(&cwd.join("docs/style.md"), "style: tabs\nsee @../rules.md");
        f.write(&cwd.join("rules.md"), "rule one");
        f.write(
            &f.base.join("alice/shared.md"),
            "shared by alice's projects",
        );
        f.write(
            &cwd.join("CLAUDE.md"),
            "Use @docs/style.md and @../../shared.md.\n\
             Steal @../../../bob/secret and @../../../outside.md, @/etc/hostname too.\n\
             Not an import: mail me@example.com, `@docs/code-span.md`.\n\
             ```\n@docs/fenced.md\n```\n\
             Missing @nope.md is skipped quietly.\n",
        );
        std::os::unix::fs::symlink(f.base.join("bob/secret"), cwd.join("link.md")).unwrap();
        f.write(&cwd.join("CLAUDE.local.md"), "@link.md");
        f.write(&cwd.join("docs/code-span.md"), "in a code span");
        f.write(&cwd.join("docs/fenced.md"), "in a fence");

        let memory = f.load(&[SettingSource::Project, SettingSource::Local]);
        assert_eq!(
            labels(&memory),
            [
                ("CLAUDE.md".to_owned(), "project", None),
                (
                    "docs/style.md".to_owned(),
                    "project",
                    Some("CLAUDE.md".to_owned())
                ),
                (
                    "rules.md".to_owned(),
                    "project",
                    Some("docs/style.md".to_owned())
                ),
                (
                    "../../shared.md".to_owned(),
                    "project",
                    Some("CLAUDE.md".to_owned())
                ),
                ("CLAUDE.local.md".to_owned(), "local", None),
            ]
        );
        let rendered = memory.render().unwrap();
        for leaked in [
            "bob's secret",
            "above alice",
            "in a code span",
            "in a fence",
        ] {
            assert!(!rendered.contains(leaked), "{leaked} in {rendered}");
        }
        let notes = &memory.files[0].notes;
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].contains("@../../../bob/secret was not imported"));
        assert!(notes[2].contains("@/etc/hostname"));
        assert!(
            rendered.contains("imported_by=\"docs/style.md\""),
            "{rendered}"
        );
    }

    #[test]
    fn import_cycles_and_depth_are_bounded() {
        let f = fixture();
        let cwd = f.ws.cwd().to_path_buf();
        f.write(&cwd.join("CLAUDE.md"), "root @a.md");
        f.write(&cwd.join("a.md"), "a @b.md @CLAUDE.md");
        f.write(&cwd.join("b.md"), "b @c.md");
        f.write(&cwd.join("c.md"), "c @d.md @a.md");
        f.write(&cwd.join("d.md"), "d @e.md");
        f.write(&cwd.join("e.md"), "five hops away");
        let memory = f.load(&[SettingSource::Project]);
        let names: Vec<&str> = memory.files.iter().map(|m| m.label.as_str()).collect();
        assert_eq!(names, ["CLAUDE.md", "a.md", "b.md", "c.md", "d.md"]);
    }

    #[test]
    fn user_memory_imports_stay_in_the_claude_home() {
        let f = fixture();
        f.write(
            &f.home.join(".claude/CLAUDE.md"),
            "@~/.claude/extra.md @../notes.md",
        );
        f.write(&f.home.join(".claude/extra.md"), "extra");
        f.write(&f.home.join("notes.md"), "private notes");
        let memory = f.load(&[SettingSource::User]);
        let names: Vec<&str> = memory.files.iter().map(|m| m.label.as_str()).collect();
        assert_eq!(names, ["~/.claude/CLAUDE.md", "~/.claude/extra.md"]);
        assert!(memory.files[0].notes[0].contains("@../notes.md was not imported"));
    }

    #[test]
    fn block_comments_go_and_big_files_are_cut() {
        let f = fixture();
        let cwd = f.ws.cwd().to_path_buf();
        f.write(
            &cwd.join("CLAUDE.md"),
            "keep 1\n<!-- one line -->\n<!-- several\nlines @hidden.md\n--> after\n\
             ```\n<!-- in a fence stays -->\n```\ninline <!-- stays --> too\n",
        );
        f.write(&cwd.join("hidden.md"), "hidden");
        let memory = f.load(&[SettingSource::Project]);
        assert_eq!(memory.files.len(), 1);
        assert_eq!(
            memory.files[0].content,
            "keep 1\nafter\n```\n<!-- in a fence stays -->\n```\ninline <!-- stays --> too\n"
        );

        // An odd cut splits the last character in two.
        let big = format!("a{}", "é".repeat(MAX_MEMORY_FILE_BYTES));
        f.write(&cwd.join("CLAUDE.md"), &big);
        let memory = f.load(&[SettingSource::Project]);
        let file = &memory.files[0];
        assert!(file.content.len() <= MAX_MEMORY_FILE_BYTES);
        assert!(file.content.len() >= MAX_MEMORY_FILE_BYTES - 1);
        assert!(file.content.chars().skip(1).all(|c| c == 'é'));
        assert_eq!(file.notes.len(), 1);
    }

    #[test]
    fn the_total_is_capped() {
        let f = fixture();
        let cwd = f.ws.cwd().to_path_buf();
        let chunk = "x".repeat(MAX_MEMORY_FILE_BYTES - 100);
        let mut root = String::new();
        for i in 0..5 {
            f.write(&cwd.join(format!("{i}.md")), &chunk);
            root.push_str(&format!("@{i}.md\n"));
        }
        f.write(&cwd.join("CLAUDE.md"), &root);
        let memory = f.load(&[SettingSource::Project]);
        // The root and four chunks fit; the fifth does not.
        assert_eq!(memory.files.len(), 5);
        assert_eq!(memory.omitted, ["4.md"]);
        assert!(memory.render().unwrap().contains("Left out"));
    }

    #[test]
    fn imports_are_found_outside_code_only() {
        assert_eq!(
            find_imports("@a.md and (@b.md) x@c.md `@d.md` ``@e `f` @g.md``\n@h.md, @@i"),
            ["a.md", "h.md"]
        );
        assert_eq!(find_imports("~~~\n@x\n~~~\n@y."), ["y"]);
    }

    #[test]
    fn relative_paths_read_from_the_session() {
        let base = Path::new("/u/alice/proj/app");
        assert_eq!(
            relative(base, Path::new("/u/alice/proj/app/CLAUDE.md")),
            "CLAUDE.md"
        );
        assert_eq!(
            relative(base, Path::new("/u/alice/CLAUDE.md")),
            "../../CLAUDE.md"
        );
        assert_eq!(relative(base, Path::new("/u/alice/proj/app")), ".");
    }
}
