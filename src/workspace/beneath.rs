//! Opening files beneath a directory handle: the kernel resolves the whole
//! path in one step (`openat2` with `RESOLVE_BENEATH`), so nothing can swap a
//! directory for a symlink between a check and the open.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

/// Why a file could not be used. The messages are for the model, so they
/// name the path as the model gave it and say what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("path '{0}' is outside the session's directory")]
    Escape(String),
    #[error("file does not exist: {0}")]
    NotFound(String),
    #[error("{0} is a directory, not a file")]
    IsDirectory(String),
    #[error("{0} is not a regular file (a FIFO, socket or device); only regular files can be used")]
    NotRegular(String),
    #[error("{path} is {size} bytes, over the {limit}-byte limit for this tool")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{0} is a directory that is not empty")]
    NotEmpty(String),
    #[error("cannot use {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    /// Read and write an existing file (Edit).
    Update,
    /// Write, creating the file when missing; existing content is kept
    /// until the caller truncates it, after the type check.
    Write,
    /// Create a new file; fails when one exists.
    CreateNew,
}

/// A regular file opened beneath a root, with its size at open time.
pub struct OpenFile {
    pub file: File,
    pub len: u64,
}

impl OpenFile {
    /// The whole file as text, for small files the service reads itself
    /// (definitions, settings, memory): refused when it is over `limit`
    /// bytes, and never more than `limit` read even if it grew meanwhile.
    pub fn read_text(self, limit: u64) -> Result<String, String> {
        use std::io::Read;
        if self.len > limit {
            return Err(format!("{} bytes, over the {limit}-byte limit", self.len));
        }
        let mut text = String::new();
        self.file
            .take(limit)
            .read_to_string(&mut text)
            .map_err(|e| e.to_string())?;
        Ok(text)
    }
}

/// Resolution rules for every open: stay beneath the handle (absolute
/// symlinks and `..` out of it fail), and no `/proc/self/fd`-style links.
const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

/// How often a resolution the kernel aborted because of a concurrent rename
/// is retried before giving up.
const RACE_RETRIES: usize = 16;

/// Opens a directory as a handle to resolve beneath. The path itself is
/// trusted (the service chose it).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Opens the directory `rel` beneath `root` as a new handle.
pub fn open_dir_beneath(root: impl AsFd, rel: &Path, shown: &str) -> Result<OwnedFd, FileError> {
    openat2_retrying(
        root.as_fd(),
        rel,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        shown,
    )
}

/// Whether `rel` names something beneath `root` (the last component is not
/// followed, so a symlink counts as itself).
pub fn exists_beneath(root: impl AsFd, rel: &Path) -> bool {
    openat2_retrying(
        root.as_fd(),
        rel,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        "",
    )
    .is_ok()
}

/// Opens the regular file `rel` beneath `root`. Anything but a regular file
/// is refused before a byte is read or written: opening is non-blocking, so
/// a FIFO cannot hold the calling thread.
pub fn open_file(
    root: impl AsFd,
    rel: &Path,
    access: Access,
    shown: &str,
) -> Result<OpenFile, FileError> {
    open_file_for(root, rel, access, None, shown)
}

/// [`open_file`], and a file it writes goes to `owner` (when set) unless
/// it already belongs to it.
pub fn open_file_for(
    root: impl AsFd,
    rel: &Path,
    access: Access,
    owner: Option<Owner>,
    shown: &str,
) -> Result<OpenFile, FileError> {
    let base = OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let flags = match access {
        Access::Read => base | OFlags::RDONLY,
        Access::Update => base | OFlags::RDWR,
        Access::Write => base | OFlags::WRONLY | OFlags::CREATE,
        Access::CreateNew => base | OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
    };
    // openat2 insists on a zero mode unless it may create the file.
    let mode = if flags.contains(OFlags::CREATE) {
        Mode::from_raw_mode(0o666)
    } else {
        Mode::empty()
    };
    let fd = openat2_retrying(root.as_fd(), rel, flags, mode, shown)?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| io_error(shown, e))?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => {}
        FileType::Directory => return Err(FileError::IsDirectory(shown.to_owned())),
        _ => return Err(FileError::NotRegular(shown.to_owned())),
    }
    if let Some(owner) = owner.filter(|_| flags.contains(OFlags::CREATE)) {
        give_to(&fd, owner).map_err(|source| io_failure(shown, source))?;
    }
    // Regular files ignore O_NONBLOCK; clearing it keeps later reads plain.
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| io_error(shown, e))?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(|e| io_error(shown, e))?;
    Ok(OpenFile {
        file: File::from(fd),
        len: u64::try_from(stat.st_size).unwrap_or(0),
    })
}

/// One entry of a directory listed beneath a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    /// A directory, as the entry itself says. Anything else (a file, a
    /// symlink, a type the filesystem does not report) is for an open
    /// beneath the root to judge.
    pub is_dir: bool,
}

/// Lists the directory `rel` beneath `root`, without `.` and `..`, sorted by
/// name. Names that are not UTF-8 are left out.
pub fn list_dir(root: impl AsFd, rel: &Path, shown: &str) -> Result<Vec<DirEntry>, FileError> {
    let fd = openat2_retrying(
        root.as_fd(),
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        shown,
    )?;
    let dir = rustix::fs::Dir::new(fd).map_err(|e| io_error(shown, e))?;
    let mut entries = Vec::new();
    for entry in dir {
        let entry = entry.map_err(|e| io_error(shown, e))?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        entries.push(DirEntry {
            name: name.to_owned(),
            is_dir: entry.file_type() == FileType::Directory,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// What kind of thing a directory entry is, as `lstat` sees it (a symlink
/// is itself, not what it points at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

/// One entry of a directory with what `lstat` says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub name: String,
    pub kind: EntryKind,
    pub size: u64,
    pub modified: Option<std::time::SystemTime>,
}

fn kind_of(mode: u32) -> EntryKind {
    match FileType::from_raw_mode(mode) {
        FileType::RegularFile => EntryKind::File,
        FileType::Directory => EntryKind::Dir,
        FileType::Symlink => EntryKind::Symlink,
        _ => EntryKind::Other,
    }
}

fn modified_of(stat: &rustix::fs::Stat) -> Option<std::time::SystemTime> {
    let secs = u64::try_from(stat.st_mtime).ok()?;
    let nanos = u32::try_from(stat.st_mtime_nsec).unwrap_or(0);
    std::time::UNIX_EPOCH.checked_add(std::time::Duration::new(secs, nanos))
}

/// Lists the directory `rel` beneath `root` with each entry's kind, size
/// and modification time, sorted by name. Each entry is looked at through
/// the listed directory's handle without following it, so a symlink shows
/// as a symlink whatever it points at.
pub fn list_dir_detailed(
    root: impl AsFd,
    rel: &Path,
    shown: &str,
) -> Result<Vec<EntryInfo>, FileError> {
    let fd = openat2_retrying(
        root.as_fd(),
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        shown,
    )?;
    let dir = rustix::fs::Dir::read_from(&fd).map_err(|e| io_error(shown, e))?;
    let mut entries = Vec::new();
    for entry in dir {
        let entry = entry.map_err(|e| io_error(shown, e))?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        // Gone since it was listed: left out, as a later listing would.
        let Ok(stat) = rustix::fs::statat(&fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        entries.push(EntryInfo {
            name: name.to_owned(),
            kind: kind_of(stat.st_mode),
            size: u64::try_from(stat.st_size).unwrap_or(0),
            modified: modified_of(&stat),
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// The kind of what `rel` names beneath `root`, its last component not
/// followed; `None` when nothing is there.
pub fn kind_beneath(root: impl AsFd, rel: &Path, shown: &str) -> Result<EntryKind, FileError> {
    let fd = openat2_retrying(
        root.as_fd(),
        rel,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        shown,
    )?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| io_error(shown, e))?;
    Ok(kind_of(stat.st_mode))
}

/// Removes what `rel` names beneath `root`: a file or symlink (the link,
/// not its target), an empty directory, or with `recursive` a directory and
/// everything in it. Nothing is followed: the parent is resolved beneath
/// `root` and every removal is relative to a directory handle.
pub fn remove(root: impl AsFd, rel: &Path, recursive: bool, shown: &str) -> Result<(), FileError> {
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err(FileError::Escape(shown.to_owned()));
    };
    let parent = openat2_retrying(
        root.as_fd(),
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        shown,
    )?;
    let stat = match rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(rustix::io::Errno::NOENT) => return Err(FileError::NotFound(shown.to_owned())),
        Err(e) => return Err(io_error(shown, e)),
    };
    if kind_of(stat.st_mode) != EntryKind::Dir {
        return rustix::fs::unlinkat(&parent, name, AtFlags::empty())
            .map_err(|e| io_error(shown, e));
    }
    if recursive {
        empty_dir(&parent, name, shown)?;
    }
    match rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOTEMPTY | rustix::io::Errno::EXIST) => {
            Err(FileError::NotEmpty(shown.to_owned()))
        }
        Err(e) => Err(io_error(shown, e)),
    }
}

/// Removes everything inside the directory `name` of `parent`, never
/// following a symlink (the directory itself is opened with `O_NOFOLLOW`).
fn empty_dir(parent: impl AsFd, name: &std::ffi::OsStr, shown: &str) -> Result<(), FileError> {
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_error(shown, e))?;
    let names = entry_names(&fd).map_err(|e| io_error(shown, e))?;
    for child in names {
        let child = std::ffi::OsStr::from_bytes(child.as_bytes());
        let stat = match rustix::fs::statat(&fd, child, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(io_error(shown, e)),
        };
        let flags = if kind_of(stat.st_mode) == EntryKind::Dir {
            empty_dir(&fd, child, shown)?;
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        match rustix::fs::unlinkat(&fd, child, flags) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(io_error(shown, e)),
        }
    }
    Ok(())
}

/// Creates `rel` and its missing parents beneath `root`, one component at a
/// time, each relative to a handle of its parent resolved beneath `root`.
pub fn create_dirs(root: impl AsFd, rel: &Path, shown: &str) -> Result<(), FileError> {
    create_dirs_for(root, rel, None, shown)
}

/// [`create_dirs`], each directory it makes given to `owner` (when set).
pub fn create_dirs_for(
    root: impl AsFd,
    rel: &Path,
    owner: Option<Owner>,
    shown: &str,
) -> Result<(), FileError> {
    let root = root.as_fd();
    let mut parent = std::path::PathBuf::new();
    for component in rel.components() {
        let Component::Normal(name) = component else {
            continue;
        };
        let dir = open_dir_beneath(root, dot_if_empty(&parent), shown)?;
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o777)) {
            Ok(()) => {
                if let Some(owner) = owner {
                    let made = rustix::fs::openat(
                        &dir,
                        name,
                        OFlags::PATH | OFlags::NOFOLLOW | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| io_error(shown, e))?;
                    give_to(&made, owner).map_err(|source| io_failure(shown, source))?;
                }
            }
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(io_error(shown, e)),
        }
        parent.push(name);
    }
    // The last component may exist as something other than a directory.
    open_dir_beneath(root, dot_if_empty(&parent), shown).map(drop)
}

/// The user and group that files of a user's directory belong to when each
/// user's commands run as a user of their own (see `sandbox::ids`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// A user whose group has the same number.
    pub fn same_group(uid: u32) -> Self {
        Self { uid, gid: uid }
    }

    fn ids(self) -> (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) {
        (
            Some(rustix::fs::Uid::from_raw(self.uid)),
            Some(rustix::fs::Gid::from_raw(self.gid)),
        )
    }
}

/// Gives the file or directory open as `fd` (an `O_PATH` handle will do) to
/// `owner`. Only a directory or a regular file with a single link: a hard
/// link shares its inode with a name elsewhere, which must keep its owner.
/// Symlinks are given too (`lchown`), so nothing of the tree stays the
/// service's.
pub fn give_to(fd: impl AsFd, owner: Owner) -> io::Result<()> {
    let stat = rustix::fs::fstat(&fd)?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    let single = kind == FileType::Directory
        || kind == FileType::Symlink
        || (kind == FileType::RegularFile && stat.st_nlink == 1);
    if !single || (stat.st_uid == owner.uid && stat.st_gid == owner.gid) {
        return Ok(());
    }
    let (uid, gid) = owner.ids();
    rustix::fs::chownat(fd, c"", uid, gid, AtFlags::EMPTY_PATH).map_err(io::Error::from)
}

/// Gives `root` and everything beneath it to `owner`, walking through
/// handles and never following a symlink, so nothing outside the tree can
/// be reached through a link swapped in meanwhile. FIFOs, sockets and
/// devices keep their owner. An entry that cannot be given (immutable, on a
/// read-only mount) is left as it is and counted; only `root` itself must
/// succeed. Returns how many were left.
pub fn give_tree_to(root: impl AsFd, owner: Owner) -> io::Result<u64> {
    let left = give_children_to(&root, owner);
    give_to(&root, owner)?;
    Ok(left)
}

fn give_children_to(root: impl AsFd, owner: Owner) -> u64 {
    // A directory that cannot be listed counts as one entry left.
    try_give_children_to(root, owner).unwrap_or(1)
}

fn try_give_children_to(root: impl AsFd, owner: Owner) -> io::Result<u64> {
    let dir = rustix::fs::openat(
        &root,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let names = entry_names(&dir)?;
    let mut left = 0;
    for name in names {
        let child = match rustix::fs::openat(
            &dir,
            name.as_c_str(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(_) => {
                left += 1;
                continue;
            }
        };
        let is_dir = rustix::fs::fstat(&child)
            .is_ok_and(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::Directory);
        if is_dir {
            left += give_children_to(&child, owner);
        }
        if give_to(&child, owner).is_err() {
            left += 1;
        }
    }
    Ok(left)
}

/// The names in an open directory, without `.` and `..`.
fn entry_names(dir: impl AsFd) -> rustix::io::Result<Vec<std::ffi::CString>> {
    Ok(rustix::fs::Dir::read_from(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect())
}

fn dot_if_empty(path: &Path) -> &Path {
    if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    }
}

fn openat2_retrying(
    root: std::os::fd::BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
    shown: &str,
) -> Result<OwnedFd, FileError> {
    let rel = dot_if_empty(rel);
    let mut attempts = 0;
    loop {
        match rustix::fs::openat2(root, rel, flags, mode, RESOLVE) {
            Ok(fd) => return Ok(fd),
            // The kernel saw a rename or mount while resolving; it refuses
            // rather than risk an escape. Another try usually goes through.
            Err(rustix::io::Errno::AGAIN) if attempts < RACE_RETRIES => attempts += 1,
            Err(rustix::io::Errno::XDEV | rustix::io::Errno::LOOP) => {
                return Err(FileError::Escape(shown.to_owned()));
            }
            Err(rustix::io::Errno::NOENT) => return Err(FileError::NotFound(shown.to_owned())),
            Err(rustix::io::Errno::ISDIR) => {
                return Err(FileError::IsDirectory(shown.to_owned()));
            }
            // A FIFO opened for writing with no reader, or a socket.
            Err(rustix::io::Errno::NXIO | rustix::io::Errno::OPNOTSUPP) => {
                return Err(FileError::NotRegular(shown.to_owned()));
            }
            Err(e) => return Err(io_error(shown, e)),
        }
    }
}

fn io_error(shown: &str, e: rustix::io::Errno) -> FileError {
    io_failure(shown, io::Error::from(e))
}

fn io_failure(shown: &str, source: io::Error) -> FileError {
    FileError::Io {
        path: shown.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::symlink;

    fn root(dir: &Path) -> OwnedFd {
        open_dir(dir).unwrap()
    }

    #[test]
    fn opens_and_creates_inside() {
        let tmp = tempfile::tempdir().unwrap();
        let r = root(tmp.path());
        create_dirs(&r, Path::new("a/b"), "a/b").unwrap();
        let mut f = open_file(&r, Path::new("a/b/c.txt"), Access::Write, "c").unwrap();
        f.file.write_all(b"hi").unwrap();
        let mut got = String::new();
        open_file(&r, Path::new("a/b/c.txt"), Access::Read, "c")
            .unwrap()
            .file
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, "hi");
        // A symlink that stays inside is fine.
        symlink("b/c.txt", tmp.path().join("a/inner")).unwrap();
        assert!(open_file(&r, Path::new("a/inner"), Access::Read, "i").is_ok());
    }

    #[test]
    fn refuses_every_way_out() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        symlink(outside.path(), tmp.path().join("abs")).unwrap();
        symlink("../", tmp.path().join("up")).unwrap();
        let r = root(tmp.path());
        for rel in ["abs/secret", "up/x", "../x"] {
            let err = open_file(&r, Path::new(rel), Access::Read, rel)
                .err()
                .unwrap();
            assert!(matches!(err, FileError::Escape(_)), "{rel}: {err:?}");
        }
        let err = open_file(&r, Path::new("abs/new"), Access::Write, "w")
            .err()
            .unwrap();
        assert!(matches!(err, FileError::Escape(_)), "{err:?}");
        assert!(create_dirs(&r, Path::new("abs/made"), "d").is_err());
        assert!(!outside.path().join("new").exists());
        assert!(!outside.path().join("made").exists());
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(tmp.path().join("pipe"))
            .status()
            .unwrap();
        assert!(status.success());
        let r = root(tmp.path());
        for access in [Access::Read, Access::Write, Access::Update] {
            let err = open_file(&r, Path::new("pipe"), access, "pipe")
                .err()
                .unwrap();
            assert!(
                matches!(err, FileError::NotRegular(_)),
                "{access:?}: {err:?}"
            );
        }
    }
}
