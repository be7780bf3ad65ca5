//! The numeric user id each user's commands run as, when the service runs
//! them as users of their own (`tools.command_user`). Ids are handed out
//! from `tools.command_uids` and recorded under `{base_dir}/.uids`, which
//! every instance sharing the users' directories also shares, so a user
//! keeps one id for good and no two users ever get the same one.
//!
//! Two symlinks record an id (their targets are the data; nothing follows
//! them): `{uid}` → the user's id claims the number, and `user-{user_id}`
//! → the number says which one the user has. Creating a symlink fails when
//! the name exists, so two instances giving out ids at once cannot collide.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::CommandUids;
use crate::domain::UserId;
use crate::workspace::Owner;

/// The directory under `user.base_dir` that records the ids (a name no
/// user id can have).
pub const IDS_DIR: &str = ".uids";

/// How many taken numbers are tried before giving up on finding a free one.
const MAX_PROBES: u32 = 10_000;

#[derive(Debug)]
pub struct UserIds {
    dir: PathBuf,
    range: CommandUids,
    known: Mutex<HashMap<String, Owner>>,
}

impl UserIds {
    /// Ids recorded in `dir`, created (owner-only) when missing.
    pub fn open(dir: PathBuf, range: CommandUids) -> io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(Self {
            dir,
            range,
            known: Mutex::new(HashMap::new()),
        })
    }

    /// Proves that files here can be given to the range's first id: a
    /// filesystem that squashes root (NFS) or has no owners (FAT) cannot.
    pub fn check_can_give(&self) -> io::Result<()> {
        let probe = self.dir.join(format!(".check-{}", std::process::id()));
        std::fs::create_dir(&probe)?;
        let given = crate::workspace::give_dir_to(&probe, Owner::same_group(self.range.first));
        std::fs::remove_dir(&probe)?;
        given
    }

    /// Where the ids of the users under `base_dir` are recorded.
    pub fn dir_for(base_dir: &Path) -> PathBuf {
        base_dir.join(IDS_DIR)
    }

    /// The id `user`'s commands run as (its group has the same number),
    /// given out on first use.
    pub fn owner(&self, user: &UserId) -> io::Result<Owner> {
        if let Some(owner) = self.lock().get(user.as_str()) {
            return Ok(*owner);
        }
        let owner = self.recorded(user)?.map_or_else(|| self.assign(user), Ok)?;
        self.lock().insert(user.as_str().to_owned(), owner);
        Ok(owner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Owner>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn user_link(&self, user: &UserId) -> PathBuf {
        self.dir.join(format!("user-{}", user.as_str()))
    }

    fn recorded(&self, user: &UserId) -> io::Result<Option<Owner>> {
        match std::fs::read_link(self.user_link(user)) {
            Ok(target) => {
                let uid = target
                    .to_str()
                    .and_then(|t| t.parse::<u32>().ok())
                    .filter(|uid| *uid != 0)
                    .ok_or_else(|| {
                        io::Error::other(format!(
                            "{} does not hold a user id",
                            self.user_link(user).display()
                        ))
                    })?;
                Ok(Some(Owner::same_group(uid)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Claims the first free number from the user's own starting point in
    /// the range (spread by a hash of its id, so claims rarely meet), then
    /// records it as the user's; when another instance recorded one first,
    /// that one wins and the claim is given back.
    fn assign(&self, user: &UserId) -> io::Result<Owner> {
        let CommandUids { first, count } = self.range;
        let start = fnv1a(user.as_str().as_bytes()) % u64::from(count);
        let mut claimed = None;
        for probe in 0..MAX_PROBES.min(count) {
            let offset = (start + u64::from(probe)) % u64::from(count);
            let uid = first + u32::try_from(offset).unwrap_or(0);
            let claim = self.dir.join(uid.to_string());
            match std::os::unix::fs::symlink(user.as_str(), &claim) {
                Ok(()) => {
                    claimed = Some(uid);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // A claim of ours from a run that stopped before
                    // recording it is ours to use.
                    if std::fs::read_link(&claim).ok().as_deref() == Some(Path::new(user.as_str()))
                    {
                        claimed = Some(uid);
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let uid = claimed.ok_or_else(|| {
            io::Error::other(format!(
                "no free user id for commands in tools.command_uids ({first}+{count})"
            ))
        })?;
        match std::os::unix::fs::symlink(uid.to_string(), self.user_link(user)) {
            Ok(()) => Ok(Owner::same_group(uid)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(self.dir.join(uid.to_string()));
                self.recorded(user)?
                    .ok_or_else(|| io::Error::other("the user's id vanished while recorded"))
            }
            Err(e) => Err(e),
        }
    }
}

/// FNV-1a: stable across builds and platforms, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[test]
    fn a_user_keeps_its_id_and_users_never_share_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(IDS_DIR);
        // A range of three: every user is placed, then it is full.
        let range = CommandUids {
            first: 5000,
            count: 3,
        };
        let ids = UserIds::open(dir.clone(), range).unwrap();
        let names = ["alice", "bob", "carol"];
        let given: Vec<u32> = names
            .iter()
            .map(|n| ids.owner(&user(n)).unwrap().uid)
            .collect();
        let mut sorted = given.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![5000, 5001, 5002]);
        assert!(ids.owner(&user("dave")).is_err(), "the range is full");

        // Another instance (no memory of the first) reads the same ids.
        let again = UserIds::open(dir, range).unwrap();
        for (name, uid) in names.iter().zip(&given) {
            let owner = again.owner(&user(name)).unwrap();
            assert_eq!((owner.uid, owner.gid), (*uid, *uid));
        }
    }

    #[test]
    fn a_claim_left_by_an_interrupted_assignment_is_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(IDS_DIR);
        let range = CommandUids {
            first: 7000,
            count: 1,
        };
        let ids = UserIds::open(dir.clone(), range).unwrap();
        std::os::unix::fs::symlink("alice", dir.join("7000")).unwrap();
        assert_eq!(ids.owner(&user("alice")).unwrap().uid, 7000);
        assert!(ids.owner(&user("bob")).is_err());
    }
}
