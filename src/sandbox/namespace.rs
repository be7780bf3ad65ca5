//! Where the kernel lets the supervisor make namespaces (the service runs
//! as root), each command gets a PID namespace of its own with its own
//! `/proc`: it sees only its own processes, so other users' command lines
//! and the service's process stay out of sight, and when the command's
//! supervisor (the namespace's first process) ends, the kernel kills
//! everything left in it.
//!
//! `sandbox-exec` unshares the PID and mount namespaces, then runs itself
//! again (`--in-pid-namespace`) as the namespace's first process, which
//! mounts the new `/proc` and goes on as before: Landlock, then the command
//! under its supervision. The outer process only relays: stop signals in,
//! the command's ending out.

use std::ffi::OsString;
use std::process::ExitCode;

use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;

use super::SUBCOMMAND;

/// The first argument after `sandbox-exec` of the process inside the namespace.
pub const IN_NAMESPACE: &str = "--in-pid-namespace";

/// Runs `sandbox-exec args` again inside new PID and mount namespaces and
/// returns how it ended; `None` when the namespaces cannot be made here
/// (no privilege, or a container that forbids them), so the caller goes on
/// without them.
pub fn run_outside(args: &[OsString], parent: Option<u32>) -> Option<ExitCode> {
    use nix::mount::{MsFlags, mount};
    use nix::sched::{CloneFlags, unshare};
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID).ok()?;
    // The new /proc must not show up in the service's mount namespace.
    if let Err(e) = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    ) {
        eprintln!("claude-agent-http {SUBCOMMAND}: cannot make mounts private: {e}");
        return Some(ExitCode::from(126));
    }
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGCHLD);
    for s in super::supervisor::STOP {
        signals.add(s);
    }
    if let Err(e) = signals.thread_block() {
        eprintln!("claude-agent-http {SUBCOMMAND}: cannot block signals: {e}");
        return Some(ExitCode::from(126));
    }
    // The running binary itself, even if it was replaced on disk since.
    let mut inner = match std::process::Command::new("/proc/self/exe")
        .arg(SUBCOMMAND)
        .arg(IN_NAMESPACE)
        .args(args)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("claude-agent-http {SUBCOMMAND}: cannot start the namespace: {e}");
            return Some(ExitCode::from(126));
        }
    };
    let stop_inner = |inner: &std::process::Child| {
        let pid = Pid::from_raw(i32::try_from(inner.id()).unwrap_or(i32::MAX));
        let _ = kill(pid, Signal::SIGTERM);
    };
    if rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
        .is_err()
    {
        stop_inner(&inner);
    }
    // The service may have died before the death signal was armed.
    let ppid = rustix::process::getppid().map(|p| p.as_raw_nonzero().get().unsigned_abs());
    if parent.is_some_and(|p| ppid != Some(p)) {
        stop_inner(&inner);
    }
    loop {
        match inner.try_wait() {
            Ok(Some(status)) => return Some(super::supervisor::end_like(status)),
            Ok(None) => {}
            Err(_) => return Some(ExitCode::from(126)),
        }
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {}
            // The supervisor inside kills the whole command and ends.
            Ok(_) | Err(_) => stop_inner(&inner),
        }
    }
}

/// Inside the namespace, before anything else: a `/proc` that lists this
/// namespace's processes only. When it cannot be mounted, the command still
/// runs (and still dies with the namespace); only its view of `/proc` stays
/// the service's.
pub fn mount_proc() {
    use nix::mount::{MsFlags, mount};
    let _ = mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    );
}
