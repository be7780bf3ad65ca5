//! What the tools remember about a session from one call to the next: the
//! files it has read (the read-before-edit guard) and Bash's working directory.
//!
//! Kept in this process's memory only. After a restart, or for a turn that
//! runs on another instance, a session starts with nothing read (its first
//! edit of an existing file asks for a Read) and Bash in the session's
//! directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::background::BackgroundTasks;
use super::reads::{FileReads, Stamp};
use crate::domain::SessionId;

/// Sessions remembered at once; past this the one used least recently is
/// forgotten (its next edit asks for a Read again).
pub const MAX_SESSIONS: usize = 4_096;

/// The state of every session whose tools ran in this process, bounded.
#[derive(Default)]
pub struct ToolSessions {
    inner: Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    sessions: HashMap<SessionId, (SessionTools, u64)>,
    clock: u64,
}

impl ToolSessions {
    /// The state of session `id`, made empty the first time it is asked for.
    pub fn get(&self, id: SessionId) -> SessionTools {
        let mut inner = lock(&self.inner);
        inner.clock += 1;
        let now = inner.clock;
        if let Some((tools, used)) = inner.sessions.get_mut(&id) {
            *used = now;
            return tools.clone();
        }
        if inner.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = inner
                .sessions
                .iter()
                .filter(|(_, (tools, _))| !tools.background().any_running())
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| *id)
        {
            inner.sessions.remove(&oldest);
        }
        let tools = SessionTools::for_id(id);
        inner.sessions.insert(id, (tools.clone(), now));
        tools
    }

    /// Forgets a session (it was deleted or expired), stopping its
    /// background shells.
    pub fn forget(&self, id: SessionId) {
        if let Some((tools, _)) = lock(&self.inner).sessions.remove(&id) {
            tools.background().stop_all();
        }
    }

    /// The background shells of session `id`, when its tools ran here.
    pub fn background_of(&self, id: SessionId) -> Vec<super::background::TaskView> {
        lock(&self.inner)
            .sessions
            .get(&id)
            .map(|(tools, _)| tools.background().views())
            .unwrap_or_default()
    }

    /// Sessions with background shells still running.
    pub fn with_running_shells(&self) -> Vec<SessionId> {
        lock(&self.inner)
            .sessions
            .iter()
            .filter(|(_, (tools, _))| tools.background().any_running())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Stops every background shell (the service stops) and waits up to
    /// `up_to` for them to end.
    pub async fn stop_all_background(&self, up_to: std::time::Duration) {
        let all: Vec<SessionTools> = lock(&self.inner)
            .sessions
            .values()
            .map(|(tools, _)| tools.clone())
            .collect();
        for tools in &all {
            tools.background().stop_all();
        }
        futures::future::join_all(all.iter().map(|t| t.background().wait_all(up_to))).await;
    }
}

/// One session's tool state; clones share it.
#[derive(Clone)]
pub struct SessionTools {
    id: SessionId,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    reads: Mutex<FileReads>,
    /// Where the last Bash command ended, when that was not the session's
    /// directory; checked again before each use.
    bash_cwd: Mutex<Option<PathBuf>>,
    /// Shells started with `run_in_background`.
    background: BackgroundTasks,
}

impl SessionTools {
    /// State for calls outside any stored session, under a fresh id.
    pub fn detached() -> Self {
        Self::for_id(SessionId::new())
    }

    fn for_id(id: SessionId) -> Self {
        Self {
            id,
            state: Arc::default(),
        }
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    /// What the file at `path` (canonical) was when the session last read
    /// or wrote it.
    pub(crate) fn stamp_of(&self, path: &Path) -> Option<Stamp> {
        lock(&self.state.reads).get(path)
    }

    /// Records that the session has seen `path` as `stamp` (it read or wrote it).
    pub(crate) fn saw(&self, path: &Path, stamp: Stamp) {
        lock(&self.state.reads).record(path, stamp);
    }

    pub(crate) fn bash_cwd(&self) -> Option<PathBuf> {
        lock(&self.state.bash_cwd).clone()
    }

    pub(crate) fn set_bash_cwd(&self, dir: Option<PathBuf>) {
        *lock(&self.state.bash_cwd) = dir;
    }

    pub fn background(&self) -> &BackgroundTasks {
        &self.state.background
    }
}

/// The lock, also after a panic elsewhere: the state stays consistent
/// (every update is a single insert or assignment).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_session_shares_its_state_and_the_oldest_is_forgotten() {
        let sessions = ToolSessions::default();
        let first = SessionId::new();
        sessions
            .get(first)
            .set_bash_cwd(Some(PathBuf::from("/w/a")));
        assert_eq!(sessions.get(first).bash_cwd(), Some(PathBuf::from("/w/a")));
        for _ in 0..MAX_SESSIONS {
            sessions.get(SessionId::new());
        }
        assert_eq!(sessions.get(first).bash_cwd(), None, "evicted, then fresh");
        let other = SessionId::new();
        sessions
            .get(other)
            .set_bash_cwd(Some(PathBuf::from("/w/b")));
        sessions.forget(other);
        assert_eq!(sessions.get(other).bash_cwd(), None);
    }
}
