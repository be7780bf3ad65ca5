//! The read-before-edit guard: what a file was when the session last read
//! or wrote it, so an edit of a file the model has not seen, or that changed
//! on disk since, is refused instead of clobbering work it does not know of.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use super::ToolOutput;
use super::session::SessionTools;
use crate::config::DEFAULT_MAX_FILE_BYTES;

/// Files remembered per session; past this the one seen longest ago is
/// forgotten (editing it asks for a Read again).
pub const MAX_FILES_PER_SESSION: usize = 1_024;

/// Files up to this size are remembered by their content; larger ones
/// (which Edit refuses anyway) by size and modification time only.
const DIGEST_MAX_BYTES: u64 = DEFAULT_MAX_FILE_BYTES;

/// What a file was when the session saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    /// A keyed hash of the whole content, for files up to `DIGEST_MAX_BYTES`:
    /// a change within the file system's timestamp granularity, or one that
    /// kept the size, is still a change; a `touch` alone is not.
    digest: Option<u64>,
}

impl Stamp {
    /// Measures an open file, reading it (without moving its position) when
    /// it is small enough to hash.
    pub(crate) fn measure(file: &File) -> std::io::Result<Self> {
        let meta = file.metadata()?;
        let digest = if meta.len() <= DIGEST_MAX_BYTES {
            Some(digest_file(file, meta.len())?)
        } else {
            None
        };
        Ok(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            digest,
        })
    }

    /// The stamp of an open file whose whole content is `content`.
    pub(crate) fn of_content(file: &File, content: &[u8]) -> std::io::Result<Self> {
        let meta = file.metadata()?;
        Ok(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            digest: (content.len() as u64 <= DIGEST_MAX_BYTES).then(|| digest(content)),
        })
    }

    /// Whether the file is as it was when `self` was taken.
    fn matches(&self, now: &Stamp) -> bool {
        match (self.digest, now.digest) {
            (Some(then), Some(now)) => then == now,
            _ => self.len == now.len && self.modified == now.modified,
        }
    }
}

/// Why an existing file may not be changed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unseen {
    NeverRead,
    ChangedSince,
}

impl Unseen {
    /// The result the model gets, naming `shown` and what to do.
    pub(crate) fn output(self, shown: &str) -> ToolOutput {
        ToolOutput::error(match self {
            Self::NeverRead => format!(
                "{shown} has not been read in this session. Read it first (with the Read tool), \
                 then make the change, so no content you have not seen is lost."
            ),
            Self::ChangedSince => format!(
                "{shown} has changed on disk since this session last read it (a command, the \
                 user or another session changed it). Read it again, then make the change."
            ),
        })
    }
}

/// Whether the session may change the existing file at `path`, which is now `now`.
pub(crate) fn check(session: &SessionTools, path: &Path, now: &Stamp) -> Result<(), Unseen> {
    match session.stamp_of(path) {
        None => Err(Unseen::NeverRead),
        Some(then) if then.matches(now) => Ok(()),
        Some(_) => Err(Unseen::ChangedSince),
    }
}

/// The files one session has seen, bounded.
#[derive(Default)]
pub(crate) struct FileReads {
    files: HashMap<PathBuf, (Stamp, u64)>,
    clock: u64,
}

impl FileReads {
    pub(crate) fn get(&self, path: &Path) -> Option<Stamp> {
        self.files.get(path).map(|(stamp, _)| *stamp)
    }

    pub(crate) fn record(&mut self, path: &Path, stamp: Stamp) {
        self.clock += 1;
        if !self.files.contains_key(path)
            && self.files.len() >= MAX_FILES_PER_SESSION
            && let Some(oldest) = self
                .files
                .iter()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(p, _)| p.clone())
        {
            self.files.remove(&oldest);
        }
        self.files.insert(path.to_path_buf(), (stamp, self.clock));
    }
}

/// The process's hash key: random, so no content can be made to collide on
/// purpose with content read earlier.
fn key() -> &'static RandomState {
    static KEY: OnceLock<RandomState> = OnceLock::new();
    KEY.get_or_init(RandomState::new)
}

fn digest(content: &[u8]) -> u64 {
    let mut hasher = key().build_hasher();
    hasher.write(content);
    hasher.write_u64(content.len() as u64);
    hasher.finish()
}

/// Hashes `len` bytes of `file` from its start, as `digest` does, in
/// pieces: memory stays bounded whatever the size.
fn digest_file(file: &File, len: u64) -> std::io::Result<u64> {
    let mut hasher = key().build_hasher();
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0u64;
    loop {
        let n = match file.read_at(&mut buf, at) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        hasher.write(&buf[..n]);
        at += n as u64;
        if at > len.max(DIGEST_MAX_BYTES) {
            break;
        }
    }
    hasher.write_u64(at);
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn content_decides_when_both_sides_have_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        std::fs::write(&path, "one\n").unwrap();
        let file = File::open(&path).unwrap();
        let then = Stamp::measure(&file).unwrap();
        assert_eq!(then, Stamp::of_content(&file, b"one\n").unwrap());
        assert!(then.matches(&Stamp::of_content(&file, b"one\n").unwrap()));
        // Same size, different content: a change even in the same clock tick.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all(b"two\n")
            .unwrap();
        assert!(!then.matches(&Stamp::measure(&File::open(&path).unwrap()).unwrap()));
    }

    #[test]
    fn the_oldest_file_is_forgotten_past_the_cap() {
        let stamp = Stamp {
            len: 1,
            modified: None,
            digest: Some(1),
        };
        let mut reads = FileReads::default();
        for i in 0..=MAX_FILES_PER_SESSION {
            reads.record(Path::new(&format!("/w/{i}")), stamp);
        }
        assert!(reads.get(Path::new("/w/0")).is_none());
        assert!(reads.get(Path::new("/w/1")).is_some());
        assert_eq!(reads.files.len(), MAX_FILES_PER_SESSION);
    }
}
