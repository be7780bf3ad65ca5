//! What `sandbox-exec` does once confined: it stays as the parent of the
//! command and, when the command ends or the service says stop (or dies),
//! kills every process the command started, `setsid` escapees included.
//!
//! It is a child subreaper, so orphaned descendants are re-parented to it
//! rather than to init, and it finds them through `/proc`.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::process::ExitCode;

use nix::sys::signal::{SigSet, Signal, kill, raise};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::Limits;
use crate::workspace::Owner;

/// The signals that tell the supervisor to stop the command: the service's
/// SIGTERM (and the parent-death signal), or a terminal's SIGINT/SIGHUP.
pub(super) const STOP: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// How many kill-and-reap rounds before giving up on a process tree that
/// keeps forking; each round kills everything it finds.
const KILL_ROUNDS: usize = 1_000;

/// Runs `program` and returns, or dies by, what the command did. Called
/// after the Landlock policy has been entered.
pub fn run(
    program: &OsString,
    args: &[OsString],
    limits: &Limits,
    user: Option<Owner>,
    parent: Option<u32>,
) -> ExitCode {
    if let Err(e) = prepare(limits, user) {
        eprintln!("claude-agent-http sandbox-exec: cannot supervise the command: {e}");
        return ExitCode::from(126);
    }
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGCHLD);
    for s in STOP {
        signals.add(s);
    }
    // Blocked here and waited for below; the child starts with an empty
    // mask (std resets it), so the command sees signals as usual.
    if let Err(e) = signals.thread_block() {
        eprintln!("claude-agent-http sandbox-exec: cannot block signals: {e}");
        return ExitCode::from(126);
    }
    // The service may have died before the death signal was armed.
    let ppid = rustix::process::getppid().map(|p| p.as_raw_nonzero().get().unsigned_abs());
    if parent.is_some_and(|p| ppid != Some(p)) {
        return ExitCode::from(126);
    }
    let mut command = std::process::Command::new(program);
    command.args(args);
    if user.is_some() && std::env::var_os("GIT_CONFIG_COUNT").is_none() {
        // Files the service or an administrator put in the user's directory
        // belong to them, not to the user's id; git would refuse such a
        // repository as "dubious ownership". Only the session's own tree is
        // writable here, so no other user's repository can be planted.
        command.envs([
            ("GIT_CONFIG_COUNT", "1"),
            ("GIT_CONFIG_KEY_0", "safe.directory"),
            ("GIT_CONFIG_VALUE_0", "*"),
        ]);
    }
    let child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "claude-agent-http sandbox-exec: cannot run {}: {e}",
                program.to_string_lossy()
            );
            return ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
    };
    let main = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let ending = wait_for_command(main, &signals);
    kill_descendants();
    match ending {
        Some(WaitStatus::Exited(_, code)) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Some(WaitStatus::Signaled(_, signal, _)) => die_by(signal),
        // Stopped by the service: the command was killed by us.
        _ => die_by(Signal::SIGKILL),
    }
}

/// Subreaper, resource limits, the command's user and the parent-death
/// signal, before the command starts.
fn prepare(limits: &Limits, user: Option<Owner>) -> std::io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    limits.apply()?;
    match user {
        Some(user) => become_user(user)?,
        None => drop_capabilities()?,
    }
    // A crashed service must not leave the command running unnoticed. Armed
    // after the change of user, which would disarm it.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
    Ok(())
}

/// Drops every capability this process holds (ambient ones included), so
/// a program it then starts gets none. For root this changes nothing that
/// lasts: a program root starts gets root's capabilities back.
pub fn drop_capabilities() -> std::io::Result<()> {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    if rustix::process::geteuid().is_root() {
        return Ok(());
    }
    rustix::thread::clear_ambient_capability_set()?;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        },
    )?;
    Ok(())
}

/// Becomes `user` for good (real, effective and saved ids; its group as the
/// only group), so the command and everything it starts run as it. The one
/// privilege kept, where the service has it, is reading and searching past
/// file modes (`CAP_DAC_READ_SEARCH`, ambient so the command inherits it):
/// what a command may read is Landlock's to decide, and toolchains in a
/// private home directory (`~/.pyenv`, `~/.nvm`, `~/.rustup`) stay usable.
/// Writing, changing modes, owners or times, and signalling follow the
/// user's own rights: only its own files, which live in its directory.
pub fn become_user(user: Owner) -> std::io::Result<()> {
    use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
    use rustix::thread::{CapabilitySet, CapabilitySets};
    let before = rustix::thread::capabilities(None)?;
    rustix::thread::set_keep_capabilities(true)?;
    let gid = Gid::from_raw(user.gid);
    setgroups(&[gid])?;
    setresgid(gid, gid, gid)?;
    let uid = Uid::from_raw(user.uid);
    setresuid(uid, uid, uid)?;
    rustix::thread::set_keep_capabilities(false)?;
    let keep = CapabilitySet::DAC_READ_SEARCH & before.permitted;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: keep,
            permitted: keep,
            inheritable: keep,
        },
    )?;
    if !keep.is_empty() {
        rustix::thread::configure_capability_in_ambient_set(CapabilitySet::DAC_READ_SEARCH, true)?;
    }
    Ok(())
}

/// Reaps children until the command itself ends (its status) or a stop
/// signal arrives (`None`).
fn wait_for_command(main: Pid, signals: &SigSet) -> Option<WaitStatus> {
    loop {
        // Reap everything that has ended; orphans re-parented to us too.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(status @ (WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)))
                    if pid == main =>
                {
                    return Some(status);
                }
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return None,
            }
        }
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(_) | Err(_) => return None,
        }
    }
}

/// Kills every process below this one and reaps it, round after round,
/// until none is left.
fn kill_descendants() {
    let me = std::process::id();
    for _ in 0..KILL_ROUNDS {
        let found = descendants(me);
        if found.is_empty() {
            reap_all();
            return;
        }
        for pid in &found {
            // Stopped first would let a tree be frozen whole; SIGKILL is
            // enough because orphans come back to us and are found again.
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        reap_all();
    }
}

fn reap_all() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// The processes whose chain of parents leads to `root`, read from /proc.
fn descendants(root: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = parent_of(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    let mut out = Vec::new();
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            if seen.insert(child) {
                out.extend(i32::try_from(child).ok());
                stack.push(child);
            }
        }
    }
    out
}

/// The parent pid in `/proc/<pid>/stat` (the field after the command name,
/// which may itself hold spaces and parentheses).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Ends this process the way a child that ended with `status` did.
pub(super) fn end_like(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(signal)) => die_by(Signal::try_from(signal).unwrap_or(Signal::SIGKILL)),
        (None, None) => ExitCode::from(126),
    }
}

/// Ends this process the way the command ended, so the service sees the
/// command's own signal.
fn die_by(signal: Signal) -> ExitCode {
    let mut only = SigSet::empty();
    only.add(signal);
    let _ = only.thread_unblock();
    let _ = raise(signal);
    ExitCode::from(128 + u8::try_from(signal as i32).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_is_read_past_a_name_with_spaces_and_parens() {
        let me = std::process::id();
        let parent = parent_of(me).unwrap();
        let expected = rustix::process::getppid().map(|p| p.as_raw_nonzero().get().unsigned_abs());
        assert_eq!(Some(parent), expected);
    }

    #[test]
    fn descendants_of_a_process_include_grandchildren() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let found = loop {
            let found = descendants(child.id());
            if found.len() >= 2 || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::yield_now();
        };
        let _ = child.kill();
        for pid in &found {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        let _ = child.wait();
        assert!(found.len() >= 2, "{found:?}");
    }
}
