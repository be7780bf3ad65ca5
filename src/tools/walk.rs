//! The directory walk Glob and Grep share: ripgrep's rules (`.gitignore`,
//! `.ignore`), hidden files included, the `.git` directory itself skipped.

use std::path::Path;

use ignore::WalkBuilder;

/// A walker over `dir` that never follows symlinks, so a link inside the
/// workspace cannot lead the walk to files outside it.
pub(crate) fn walker(dir: &Path) -> WalkBuilder {
    let mut builder = WalkBuilder::new(dir);
    builder
        .hidden(false)
        .follow_links(false)
        // User directories are often not git repositories; their .gitignore
        // still says what the user considers noise.
        .require_git(false)
        .filter_entry(|entry| entry.file_name() != ".git");
    builder
}
