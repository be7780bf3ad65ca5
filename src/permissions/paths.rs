//! Path specifiers of `Read(...)` and `Edit(...)` rules: gitignore-style
//! patterns, anchored as Claude Code anchors them, matched against the
//! absolute paths a call names.

use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// What a path pattern is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// `//path`: the file system's root.
    FileSystem,
    /// `~/path`: the home directory.
    Home,
    /// `/path`: the directory the rule's source stands for (the project
    /// for project settings, `~/.claude` for user settings).
    Source,
    /// `path` or `./path`: the session's working directory.
    Cwd,
}

/// A path specifier as written, split into its anchor and the gitignore
/// line that is matched beneath it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    anchor: Anchor,
    /// `..` at the front of a relative pattern, one per level up.
    up: usize,
    line: String,
    /// Written without `./` or another anchor: gitignore decides whether
    /// it matches at any depth.
    bare: bool,
}

/// The directories anchors resolve to for one rule.
#[derive(Debug, Clone)]
pub struct Anchors<'a> {
    pub cwd: &'a Path,
    pub home: &'a Path,
    pub source: &'a Path,
}

/// A pattern resolved for a session: its root and matcher.
#[derive(Debug, Clone)]
pub struct CompiledPath {
    root: PathBuf,
    matcher: Gitignore,
}

impl PathPattern {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err("the path is empty".into());
        }
        let (anchor, rest, bare) = if let Some(rest) = spec.strip_prefix("//") {
            (Anchor::FileSystem, rest, false)
        } else if spec == "~" {
            (Anchor::Home, "", false)
        } else if let Some(rest) = spec.strip_prefix("~/") {
            (Anchor::Home, rest, false)
        } else if let Some(rest) = spec.strip_prefix('/') {
            (Anchor::Source, rest, false)
        } else if spec == "." {
            (Anchor::Cwd, "", false)
        } else if let Some(rest) = spec.strip_prefix("./") {
            (Anchor::Cwd, rest, false)
        } else {
            (Anchor::Cwd, spec, true)
        };
        let mut rest = rest;
        let mut up = 0;
        if anchor == Anchor::Cwd {
            while let Some(after) = rest.strip_prefix("../") {
                up += 1;
                rest = after;
            }
        }
        if rest.split('/').any(|part| part == "..") {
            return Err(format!("'{spec}' uses '..' inside the pattern"));
        }
        // What gitignore would read as a comment or a negation is meant
        // literally here.
        let escaped = if rest.starts_with(['#', '!']) {
            format!("\\{rest}")
        } else {
            rest.to_owned()
        };
        let line = if escaped.is_empty() {
            "**".to_owned()
        } else if bare {
            escaped
        } else {
            format!("/{escaped}")
        };
        Ok(Self {
            anchor,
            up,
            line,
            bare,
        })
    }

    /// Resolves the pattern. `any_depth` widens a bare single-directory
    /// pattern (`src/**`) to that directory at any depth, as deny and ask
    /// rules read it.
    pub fn compile(&self, anchors: &Anchors<'_>, any_depth: bool) -> Option<CompiledPath> {
        let mut root = match self.anchor {
            Anchor::FileSystem => PathBuf::from("/"),
            Anchor::Home => anchors.home.to_path_buf(),
            Anchor::Source => anchors.source.to_path_buf(),
            Anchor::Cwd => anchors.cwd.to_path_buf(),
        };
        for _ in 0..self.up {
            root.pop();
        }
        let line = match self.line.strip_suffix("/**") {
            Some(dir) if any_depth && self.bare && !dir.contains('/') && !dir.is_empty() => {
                format!("**/{}", self.line)
            }
            _ => self.line.clone(),
        };
        let mut builder = GitignoreBuilder::new(&root);
        if let Err(e) = builder.add_line(None, &line) {
            tracing::warn!(pattern = %line, error = %e, "path pattern does not compile");
            return None;
        }
        let matcher = builder.build().ok()?;
        Some(CompiledPath { root, matcher })
    }
}

impl CompiledPath {
    /// Whether `path` (absolute, normalised) or one of its parent
    /// directories matches.
    pub fn matches(&self, path: &Path, is_dir: bool) -> bool {
        let Ok(rel) = path.strip_prefix(&self.root) else {
            return false;
        };
        if rel.as_os_str().is_empty() {
            return false;
        }
        self.matcher
            .matched_path_or_any_parents(rel, is_dir)
            .is_ignore()
    }
}

/// `path` made absolute against `cwd` and with `.` and `..` folded,
/// without touching the disk.
pub fn absolute(cwd: &Path, path: &str) -> PathBuf {
    let raw = Path::new(path);
    if raw.is_absolute() {
        crate::workspace::lexical_normalize(raw)
    } else {
        crate::workspace::lexical_normalize(&cwd.join(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str, any_depth: bool) -> bool {
        let anchors = Anchors {
            cwd: Path::new("/users/alice/proj"),
            home: Path::new("/users/alice"),
            source: Path::new("/srv/claude"),
        };
        let compiled = PathPattern::parse(pattern)
            .unwrap()
            .compile(&anchors, any_depth)
            .unwrap();
        compiled.matches(&absolute(anchors.cwd, path), false)
    }

    #[test]
    fn relative_patterns_are_gitignore_lines_under_the_cwd() {
        assert!(matches("./secrets/**", "secrets/key", false));
        assert!(matches(
            "./secrets/**",
            "/users/alice/proj/secrets/a/b",
            false
        ));
        assert!(!matches("./secrets/**", "src/a", false));
        assert!(!matches("./secrets/**", "src/secrets/key", true));
        assert!(matches("./secrets", "secrets/key", false));
        // A bare file name matches at any depth.
        assert!(matches(".env", ".env", false));
        assert!(matches(".env", "config/.env", false));
        assert!(matches("*.pem", "deep/down/server.pem", false));
        // A single star stays within one directory, two cross them.
        assert!(matches("src/*.rs", "src/main.rs", false));
        assert!(!matches("src/*.rs", "src/bin/x.rs", false));
        assert!(matches("src/**/*.rs", "src/bin/x.rs", false));
        assert!(matches("../shared/**", "/users/alice/shared/x", false));
    }

    #[test]
    fn a_single_directory_pattern_reaches_any_depth_only_for_deny_and_ask() {
        assert!(matches("src/**", "src/a", false));
        assert!(!matches("src/**", "lib/src/a", false));
        assert!(matches("src/**", "lib/src/a", true));
        assert!(!matches("./src/**", "lib/src/a", true));
    }

    #[test]
    fn anchors_resolve_to_root_home_and_source() {
        assert!(matches("//etc/passwd", "/etc/passwd", false));
        assert!(!matches("//etc/passwd", "etc/passwd", false));
        assert!(matches("~/.ssh/**", "/users/alice/.ssh/id", false));
        assert!(matches(
            "/settings.json",
            "/srv/claude/settings.json",
            false
        ));
        assert!(!matches("/settings.json", "settings.json", false));
        assert!(matches("~", "/users/alice/proj/x", false));
    }

    #[test]
    fn patterns_are_literal_not_negations_and_dotdot_inside_is_refused() {
        assert!(matches("!important", "!important", false));
        assert!(matches("#notes", "#notes", false));
        assert!(PathPattern::parse("a/../b").is_err());
        assert!(PathPattern::parse("  ").is_err());
    }

    #[test]
    fn absolute_folds_dots_lexically() {
        assert_eq!(
            absolute(Path::new("/w"), "a/./b/../c"),
            PathBuf::from("/w/a/c")
        );
        assert_eq!(absolute(Path::new("/w"), "/x/../y"), PathBuf::from("/y"));
    }
}
