//! The directory walk Glob and Grep share: ripgrep's rules (`.gitignore`,
//! `.ignore`), hidden files included, the `.git` directory itself skipped.

use std::path::Path;

use ignore::WalkBuilder;

/// The ignore files the walk reads in each directory it enters.
const IGNORE_FILES: [&str; 3] = [".gitignore", ".ignore", ".rgignore"];

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
        .filter_entry(|entry| {
            entry.file_name() != ".git"
                && !(entry.file_type().is_some_and(|t| t.is_dir())
                    && has_unreadable_ignore_file(entry.path()))
        });
    if has_unreadable_ignore_file(dir) {
        // Opening a FIFO named .gitignore would block the walk for good.
        builder.ignore(false).git_ignore(false).git_exclude(false);
    }
    builder
}

/// Whether `dir` holds an ignore file that is not a regular file (a FIFO,
/// socket or device, or a link to one). Such a directory is not walked:
/// reading its rules could block forever.
fn has_unreadable_ignore_file(dir: &Path) -> bool {
    IGNORE_FILES.iter().any(|name| {
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Err(_) => false,
            Ok(meta) if meta.file_type().is_symlink() => {
                std::fs::metadata(&path).is_ok_and(|m| !m.is_file())
            }
            Ok(meta) => !meta.is_file(),
        }
    })
}
