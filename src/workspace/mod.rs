//! The path jail: every directory a session works in and every path a tool
//! touches is resolved here, symlinks included, and must stay inside it.
//! Files are opened through directory handles (`beneath`), so what was
//! checked is what gets opened.

mod beneath;

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::domain::{Subdir, UserId};

pub use beneath::{Access, DirEntry, EntryInfo, EntryKind, FileError, OpenFile, Owner};

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("path '{0}' is outside the session's directory")]
    Escape(String),
    #[error("directory '{0}' does not exist")]
    Missing(String),
    #[error("could not prepare the working directory: {0}")]
    Io(#[from] io::Error),
}

impl From<FileError> for WorkspaceError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::Escape(shown) => Self::Escape(shown),
            FileError::Io { source, .. } => Self::Io(source),
            other => Self::Missing(other.to_string()),
        }
    }
}

/// A session's working directory and the roots it may touch. All paths held
/// here are canonical (absolute, symlinks resolved); each root also has an
/// open handle that every file access is resolved beneath.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: Root,
    cwd: PathBuf,
    extra_roots: Vec<Root>,
    /// `{base_dir}/{user_id}`, the session's root or an ancestor of it. Only
    /// project memory is read from it (the CLAUDE.md files of the session's
    /// parent directories and their imports); tools never reach it.
    user_dir: Root,
    /// Who the files the service makes here belong to: the user's own id
    /// when its commands run as one (`Workspace::owned_by`), else the
    /// service's.
    owner: Option<Owner>,
}

/// A directory the session may touch: its canonical path, for showing and
/// for the Bash sandbox, and a handle, for opening what lies beneath it.
#[derive(Debug, Clone)]
struct Root {
    path: PathBuf,
    handle: Arc<OwnedFd>,
}

impl Root {
    fn open(path: PathBuf) -> io::Result<Self> {
        let handle = Arc::new(beneath::open_dir(&path)?);
        Ok(Self { path, handle })
    }
}

impl Workspace {
    /// Opens `{base_dir}/{user}/{subdir}`, creating it when `create` is set,
    /// and refuses it when a symlink on the way leads outside `{base_dir}/{user}`.
    pub fn open(
        base_dir: &Path,
        user: &UserId,
        subdir: Option<&Subdir>,
        create: bool,
    ) -> Result<Self, WorkspaceError> {
        let user_dir = base_dir.join(user.as_str());
        let wanted = match subdir {
            Some(s) if !s.as_str().is_empty() => user_dir.join(s.as_str()),
            _ => user_dir.clone(),
        };
        // A command of another session, running as the service's user, may
        // have taken the service's own access away (`chmod 000`): the
        // service owns these directories and gives itself access back.
        for dir in [base_dir, user_dir.as_path(), wanted.as_path()] {
            restore_owner_access(dir);
        }
        if create {
            std::fs::create_dir_all(&user_dir)?;
            if let Some(sub) = subdir.filter(|s| !s.as_str().is_empty()) {
                // Symlinks that stay inside (absolute ones too) are resolved
                // first; what is missing is then made one component at a
                // time beneath the user's directory's handle, so a link
                // swapped in meanwhile still cannot lead the creation out.
                let user_root = Root::open(user_dir.canonicalize()?)?;
                let probe = Self {
                    root: user_root.clone(),
                    cwd: user_root.path.clone(),
                    extra_roots: Vec::new(),
                    user_dir: user_root.clone(),
                    owner: None,
                };
                let target = probe.resolve_within(&wanted, sub.as_str())?;
                let rel = target
                    .strip_prefix(&user_root.path)
                    .map_err(|_| WorkspaceError::Escape(sub.as_str().to_owned()))?;
                beneath::create_dirs(user_root.handle.as_ref(), rel, sub.as_str())?;
            }
        }
        let root = user_dir
            .canonicalize()
            .map_err(|_| WorkspaceError::Missing(user.as_str().to_owned()))?;
        let cwd = wanted.canonicalize().map_err(|_| {
            WorkspaceError::Missing(subdir.map_or_else(String::new, |s| s.as_str().to_owned()))
        })?;
        if !cwd.starts_with(&root) {
            return Err(WorkspaceError::Escape(
                subdir.map_or_else(String::new, |s| s.as_str().to_owned()),
            ));
        }
        if !cwd.is_dir() {
            return Err(WorkspaceError::Missing(
                subdir.map_or_else(String::new, |s| s.as_str().to_owned()),
            ));
        }
        // The session's handle is opened beneath the user's directory, so a
        // symlink swapped in since the check above (by a session of this
        // user whose root is the user's directory) cannot point it elsewhere.
        let user_root = beneath::open_dir(&root)?;
        let rel = cwd.strip_prefix(&root).unwrap_or(Path::new(""));
        let shown = subdir.map_or("", |s| s.as_str());
        let handle = beneath::open_dir_beneath(&user_root, rel, shown)?;
        // The session is confined to its own directory, not the whole of the
        // user's: one user's sessions in different subdirs stay apart too.
        Ok(Self {
            root: Root {
                path: cwd.clone(),
                handle: Arc::new(handle),
            },
            cwd,
            extra_roots: Vec::new(),
            user_dir: Root {
                path: root,
                handle: Arc::new(user_root),
            },
            owner: None,
        })
    }

    /// The same workspace, with the user's directory belonging to `owner`
    /// (the id the user's commands run as) and what the service makes in
    /// it from now on too. A user's directory that is not yet `owner`'s
    /// (made before its commands ran as a user of their own) is given to it
    /// whole, the directory itself last; otherwise only the directories
    /// between it and the session's, which a new session may have made.
    pub fn owned_by(mut self, owner: Owner) -> Result<Self, WorkspaceError> {
        let user_dir = self.user_dir.handle.as_ref();
        let stat = rustix::fs::fstat(user_dir).map_err(io::Error::from)?;
        if stat.st_uid != owner.uid || stat.st_gid != owner.gid {
            let left = beneath::give_tree_to(user_dir, owner)?;
            if left > 0 {
                tracing::warn!(
                    user_dir = %self.user_dir.path.display(),
                    left,
                    uid = owner.uid,
                    "some files of the user's directory could not be given to its id; \
                     its commands can read but not change them"
                );
            }
        } else if let Ok(rel) = self.root.path.strip_prefix(&self.user_dir.path) {
            let mut walked = PathBuf::new();
            for part in rel.components() {
                walked.push(part);
                let dir = beneath::open_dir_beneath(user_dir, &walked, "")?;
                beneath::give_to(&dir, owner)?;
            }
        }
        self.owner = Some(owner);
        Ok(self)
    }

    /// Who the files the service makes here belong to, when not the service.
    pub fn owner(&self) -> Option<Owner> {
        self.owner
    }

    /// A workspace over an existing directory (its own root), for tools and tests.
    pub fn at(dir: &Path) -> Result<Self, WorkspaceError> {
        let root = Root::open(dir.canonicalize()?)?;
        Ok(Self {
            cwd: root.path.clone(),
            user_dir: root.clone(),
            root,
            extra_roots: Vec::new(),
            owner: None,
        })
    }

    /// Additional directories the session may touch (`add_dirs`).
    pub fn with_extra_roots(mut self, roots: impl IntoIterator<Item = PathBuf>) -> Self {
        self.extra_roots.extend(
            roots
                .into_iter()
                .filter_map(|r| r.canonicalize().ok())
                .filter_map(|r| Root::open(r).ok()),
        );
        self
    }

    /// The directory the session is confined to (and its `HOME`): the
    /// session's working directory, `{base_dir}/{user_id}/{subdir}`.
    pub fn root(&self) -> &Path {
        &self.root.path
    }

    /// The session's working directory.
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// The additional directories the session may touch, canonical.
    pub fn extra_roots(&self) -> impl Iterator<Item = &Path> {
        self.extra_roots.iter().map(|r| r.path.as_path())
    }

    /// The user's directory, `{base_dir}/{user_id}`: the session's directory
    /// or one of its ancestors (for [`Workspace::at`], its own directory).
    pub fn user_dir(&self) -> &Path {
        &self.user_dir.path
    }

    /// Opens the regular file at `path` for reading, beneath the user's
    /// directory rather than the session's: for project memory, which may
    /// live in the session's parent directories. `path` is absolute; `..` in
    /// it is folded first, and the kernel refuses any symlink leading out.
    pub fn open_in_user_dir(&self, path: &Path) -> Result<OpenFile, FileError> {
        let shown = path.display().to_string();
        let normal = lexical_normalize(path);
        let rel = normal
            .strip_prefix(&self.user_dir.path)
            .map_err(|_| FileError::Escape(shown.clone()))?;
        beneath::open_file(self.user_dir.handle.as_ref(), rel, Access::Read, &shown)
    }

    /// Lists the directory `path` (absolute) beneath the root it lies in.
    pub fn list_dir(&self, path: &Path) -> Result<Vec<DirEntry>, FileError> {
        let shown = path.display().to_string();
        let (root, rel) = self.locate(path, &shown)?;
        beneath::list_dir(root.handle.as_ref(), rel, &shown)
    }

    /// Lists the directory `path` (absolute) with each entry's kind, size
    /// and modification time, symlinks shown as themselves.
    pub fn list_entries(&self, path: &Path) -> Result<Vec<EntryInfo>, FileError> {
        let shown = path.display().to_string();
        let (root, rel) = self.locate(path, &shown)?;
        beneath::list_dir_detailed(root.handle.as_ref(), rel, &shown)
    }

    /// What `path` (absolute) is, its last component not followed.
    pub fn entry_kind(&self, path: &Path) -> Result<EntryKind, FileError> {
        let shown = path.display().to_string();
        let (root, rel) = self.locate(path, &shown)?;
        beneath::kind_beneath(root.handle.as_ref(), rel, &shown)
    }

    /// Removes the file, symlink or empty directory at `path` (absolute),
    /// or with `recursive` a directory and all it holds. A root itself
    /// cannot be removed.
    pub fn remove(&self, path: &Path, recursive: bool) -> Result<(), FileError> {
        let shown = path.display().to_string();
        let (root, rel) = self.locate(path, &shown)?;
        beneath::remove(root.handle.as_ref(), rel, recursive, &shown)
    }

    /// Resolves a tool's path (relative to the cwd, or absolute) to a canonical
    /// path inside the workspace. The path need not exist yet: its deepest
    /// existing ancestor is resolved and the rest appended.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, WorkspaceError> {
        let raw = Path::new(path);
        let joined = if raw.is_absolute() {
            raw.to_path_buf()
        } else {
            self.cwd.join(raw)
        };
        self.resolve_within(&joined, path)
    }

    /// Whether a canonical path lies inside one of the workspace's roots.
    pub fn contains(&self, canonical: &Path) -> bool {
        self.root_of(canonical).is_some()
    }

    /// Opens the regular file at `path` (absolute, as `resolve` or a walk
    /// of the workspace gives it). The kernel resolves it beneath the root
    /// it lies in, so a symlink swapped in since `resolve` cannot lead out.
    pub fn open_file(&self, path: &Path, access: Access) -> Result<OpenFile, FileError> {
        let shown = path.display().to_string();
        let (root, rel) = self.locate(path, &shown)?;
        beneath::open_file_for(
            root.handle.as_ref(),
            rel,
            access,
            self.owner_in(root),
            &shown,
        )
    }

    /// Creates the directory `path` and its missing parents, beneath the
    /// root it lies in.
    pub fn create_dirs(&self, path: &Path) -> Result<(), FileError> {
        let shown = path.display().to_string();
        let (root, rel) = self.locate(path, &shown)?;
        beneath::create_dirs_for(root.handle.as_ref(), rel, self.owner_in(root), &shown)
    }

    /// Whether `path` (absolute) names something beneath one of the roots
    /// right now; a walk uses it to drop entries a concurrent rename moved in.
    pub fn still_inside(&self, path: &Path) -> bool {
        self.locate(path, "")
            .is_ok_and(|(root, rel)| beneath::exists_beneath(root.handle.as_ref(), rel))
    }

    /// Whether `path` (absolute) is a directory beneath one of the roots
    /// right now, symlinks on the way resolved by the kernel beneath it.
    pub fn is_dir(&self, path: &Path) -> bool {
        self.locate(path, "").is_ok_and(|(root, rel)| {
            beneath::open_dir_beneath(root.handle.as_ref(), rel, "").is_ok()
        })
    }

    /// The owner of what is made in `root`: only the session's directory
    /// is the user's; extra roots (read-only to commands) stay as they are.
    fn owner_in(&self, root: &Root) -> Option<Owner> {
        self.owner.filter(|_| std::ptr::eq(root, &self.root))
    }

    fn locate<'p>(&self, path: &'p Path, shown: &str) -> Result<(&Root, &'p Path), FileError> {
        self.root_of(path)
            .and_then(|root| Some((root, path.strip_prefix(&root.path).ok()?)))
            .ok_or_else(|| FileError::Escape(shown.to_owned()))
    }

    fn root_of(&self, canonical: &Path) -> Option<&Root> {
        std::iter::once(&self.root)
            .chain(&self.extra_roots)
            .find(|r| canonical.starts_with(&r.path))
    }

    fn resolve_within(&self, joined: &Path, shown: &str) -> Result<PathBuf, WorkspaceError> {
        let normal = lexical_normalize(joined);
        let mut existing = normal.as_path();
        let mut rest = Vec::new();
        let base = loop {
            match existing.canonicalize() {
                Ok(canonical) => break canonical,
                Err(_) => {
                    // Something is there but cannot be canonicalised: a
                    // dangling symlink (or a loop). Appending the rest to its
                    // parent would let a write follow the link anywhere.
                    if existing.symlink_metadata().is_ok() {
                        return Err(WorkspaceError::Escape(shown.to_owned()));
                    }
                    let Some(name) = existing.file_name() else {
                        return Err(WorkspaceError::Escape(shown.to_owned()));
                    };
                    rest.push(name.to_owned());
                    existing = existing
                        .parent()
                        .ok_or_else(|| WorkspaceError::Escape(shown.to_owned()))?;
                }
            }
        };
        let mut resolved = base;
        for part in rest.iter().rev() {
            resolved.push(part);
        }
        if self.contains(&resolved) {
            Ok(resolved)
        } else {
            Err(WorkspaceError::Escape(shown.to_owned()))
        }
    }
}

/// Gives the service back read, write and (for directories) search access
/// to `path` when it owns it and that access was removed. Does nothing for
/// a path it does not own or that does not exist.
pub fn restore_owner_access(path: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.file_type().is_symlink() || meta.uid() != rustix::process::geteuid().as_raw() {
        return;
    }
    let needed = if meta.is_dir() { 0o700 } else { 0o600 };
    let mode = meta.mode() & 0o7777;
    if mode & needed == needed {
        return;
    }
    let restored = mode | needed;
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(restored)) {
        Ok(()) => tracing::warn!(
            path = %path.display(),
            from = format!("{mode:o}"),
            to = format!("{restored:o}"),
            "restored the service's access to a path whose mode had been changed"
        ),
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot restore access"),
    }
}

/// Gives the directory at `path` (one the service made and chose, not a
/// user) to `owner`, when it does not belong to it yet.
pub fn give_dir_to(path: &Path, owner: Owner) -> io::Result<()> {
    beneath::give_to(beneath::open_dir(path)?, owner)
}

/// Opens a regular file at a canonical path the service chose (not one a
/// user controls), refusing FIFOs and devices without blocking on them.
pub fn open_trusted_file(canonical: &Path) -> Result<OpenFile, FileError> {
    let shown = canonical.display().to_string();
    let (Some(parent), Some(name)) = (canonical.parent(), canonical.file_name()) else {
        return Err(FileError::NotFound(shown));
    };
    let dir = beneath::open_dir(parent).map_err(|source| {
        // No directory (a home without `.claude`) means no file, not a fault.
        if source.kind() == std::io::ErrorKind::NotFound {
            FileError::NotFound(shown.clone())
        } else {
            FileError::Io {
                path: shown.clone(),
                source,
            }
        }
    })?;
    beneath::open_file(&dir, Path::new(name), Access::Read, &shown)
}

/// Removes `.` and folds `..` without touching the disk. Symlinks are
/// handled afterwards by canonicalising the existing prefix, so a `..` that
/// follows a symlink is still caught by the containment check.
pub fn lexical_normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod trusted_tests {
    use super::*;

    #[test]
    fn a_trusted_file_in_a_missing_directory_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join(".claude").join("settings.json");
        assert!(matches!(
            open_trusted_file(&missing),
            Err(FileError::NotFound(_))
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_directory_made_before_is_given_to_its_user_whole_and_nothing_outside() {
        use std::os::unix::fs::MetadataExt;
        if !rustix::process::geteuid().is_root() {
            eprintln!("NOTICE: skipping: only root can give files to another user");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        let outside = base.join("outside.txt");
        std::fs::write(&outside, "the service's").unwrap();
        let home = base.join("alice");
        std::fs::create_dir_all(home.join("proj/src")).unwrap();
        std::fs::write(home.join("proj/src/main.rs"), "fn main() {}").unwrap();
        std::os::unix::fs::symlink(&outside, home.join("link")).unwrap();
        std::fs::hard_link(&outside, home.join("hard")).unwrap();
        let owner = Owner::same_group(3_200_000);

        let ws = Workspace::open(base, &user("alice"), None, false)
            .unwrap()
            .owned_by(owner)
            .unwrap();
        let uid = |p: &Path| std::fs::symlink_metadata(p).unwrap().uid();
        for mine in ["", "proj", "proj/src", "proj/src/main.rs", "link"] {
            assert_eq!(uid(&home.join(mine)), owner.uid, "{mine}");
        }
        // Neither the link's target nor a file sharing its inode with one outside.
        assert_eq!(uid(&outside), 0);

        // A new session's subdirectory, and what the service makes in it.
        let sub = Subdir::parse("later/deeper").unwrap();
        let ws2 = Workspace::open(base, &user("alice"), Some(&sub), true)
            .unwrap()
            .owned_by(owner)
            .unwrap();
        assert_eq!(uid(&home.join("later")), owner.uid);
        assert_eq!(uid(&home.join("later/deeper")), owner.uid);
        ws2.create_dirs(&ws2.root().join("x/y")).unwrap();
        ws2.open_file(&ws2.root().join("x/y/new.txt"), Access::CreateNew)
            .unwrap();
        assert_eq!(uid(&home.join("later/deeper/x")), owner.uid);
        assert_eq!(uid(&home.join("later/deeper/x/y/new.txt")), owner.uid);
        assert_eq!(ws.owner(), Some(owner));
    }

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[test]
    fn open_creates_user_and_subdir() {
        let tmp = tempfile::tempdir().unwrap();
        let sub = Subdir::parse("proj/a").unwrap();
        let ws = Workspace::open(tmp.path(), &user("alice"), Some(&sub), true).unwrap();
        assert!(ws.cwd().ends_with("alice/proj/a"));
        assert!(ws.cwd().is_dir());
    }

    #[test]
    fn open_refuses_a_symlinked_subdir_leading_out() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("bob")).unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("bob/link")).unwrap();
        let sub = Subdir::parse("link/deeper").unwrap();
        let err = Workspace::open(tmp.path(), &user("bob"), Some(&sub), true).unwrap_err();
        assert!(matches!(err, WorkspaceError::Escape(_)), "{err:?}");
        assert!(!outside.path().join("deeper").exists());
    }

    #[test]
    fn the_users_directory_is_readable_above_the_session_and_nothing_beyond_it() {
        let tmp = tempfile::tempdir().unwrap();
        let sub = Subdir::parse("proj/deep").unwrap();
        let ws = Workspace::open(tmp.path(), &user("frank"), Some(&sub), true).unwrap();
        let user_dir = tmp.path().join("frank").canonicalize().unwrap();
        assert_eq!(ws.user_dir(), user_dir);
        std::fs::write(user_dir.join("CLAUDE.md"), "top").unwrap();
        std::fs::write(tmp.path().join("above.md"), "no").unwrap();
        std::fs::create_dir_all(tmp.path().join("grace")).unwrap();
        std::fs::write(tmp.path().join("grace/secret"), "no").unwrap();
        std::os::unix::fs::symlink("../../grace/secret", user_dir.join("proj/link")).unwrap();

        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut ws
                .open_in_user_dir(&ws.cwd().join("../../CLAUDE.md"))
                .unwrap()
                .file,
            &mut text,
        )
        .unwrap();
        assert_eq!(text, "top");
        for outside in [
            ws.cwd().join("../../../above.md"),
            ws.cwd().join("../../../grace/secret"),
            user_dir.join("proj/link"),
            tmp.path().canonicalize().unwrap().join("above.md"),
        ] {
            let err = ws.open_in_user_dir(&outside).err().unwrap();
            assert!(matches!(err, FileError::Escape(_)), "{outside:?}: {err:?}");
        }
        // Tools stay confined to the session's own directory.
        assert!(ws.resolve("../../CLAUDE.md").is_err());
    }

    #[test]
    fn list_dir_lists_beneath_the_root_only() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let ws = Workspace::open(tmp.path(), &user("heidi"), None, true).unwrap();
        std::fs::create_dir_all(ws.cwd().join("d/sub")).unwrap();
        std::fs::write(ws.cwd().join("d/b.md"), "").unwrap();
        std::fs::write(ws.cwd().join("d/a.md"), "").unwrap();
        let names: Vec<(String, bool)> = ws
            .list_dir(&ws.cwd().join("d"))
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.is_dir))
            .collect();
        assert_eq!(
            names,
            [
                ("a.md".to_owned(), false),
                ("b.md".to_owned(), false),
                ("sub".to_owned(), true)
            ]
        );
        std::os::unix::fs::symlink(outside.path(), ws.cwd().join("out")).unwrap();
        assert!(matches!(
            ws.list_dir(&ws.cwd().join("out")),
            Err(FileError::Escape(_))
        ));
        assert!(matches!(
            ws.list_dir(&ws.cwd().join("missing")),
            Err(FileError::NotFound(_))
        ));
    }

    #[test]
    fn resolve_keeps_paths_inside() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::open(tmp.path(), &user("carol"), None, true).unwrap();
        assert_eq!(ws.resolve("a/b.txt").unwrap(), ws.cwd().join("a/b.txt"));
        assert!(ws.resolve("../other/x").is_err());
        assert!(ws.resolve("/etc/passwd").is_err());
        assert!(ws.resolve("a/../../x").is_err());
        let inside = ws.cwd().join("f.txt");
        assert_eq!(ws.resolve(inside.to_str().unwrap()).unwrap(), inside);
    }

    #[test]
    fn resolve_follows_symlinks_before_judging() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let ws = Workspace::open(tmp.path(), &user("dave"), None, true).unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.cwd().join("out")).unwrap();
        assert!(ws.resolve("out/secret").is_err());
        assert!(ws.resolve("out").is_err());
    }

    #[test]
    fn resolve_refuses_dangling_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let ws = Workspace::open(tmp.path(), &user("erin"), None, true).unwrap();
        std::os::unix::fs::symlink(outside.path().join("new"), ws.cwd().join("dangling")).unwrap();
        assert!(ws.resolve("dangling").is_err());
        assert!(ws.resolve("dangling/below").is_err());
    }
}
