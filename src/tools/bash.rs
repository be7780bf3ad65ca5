//! `Bash`: runs a shell command in the session's directory, in its own
//! process group that is killed whole on timeout, interrupt or drop.

use std::collections::VecDeque;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::args::Args;
use super::background::{DEFAULT_LIFETIME_MS, MAX_LIFETIME_MS, TaskStatus};
use super::text::{MAX_OUTPUT_CHARS, join_cut, truncate_middle};
use super::{Tool, ToolContext, ToolOutput};
use crate::sandbox::Sandbox;

/// Timeout when the model gives none, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 120_000;
/// Longest timeout a model may ask for, in milliseconds.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// After the shell exits (or is killed), how long to keep reading output
/// still buffered in the pipe before giving up on it.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs commands through `sandbox`: confined to the session's directory when it
/// has a launcher, unconfined otherwise.
#[derive(Default)]
pub struct BashTool {
    sandbox: Sandbox,
}

impl BashTool {
    pub fn new(sandbox: Sandbox) -> Self {
        Self { sandbox }
    }
}

#[async_trait]
impl Tool for BashTool {
    fn name(&self) -> &str {
        "Bash"
    }

    fn description(&self) -> String {
        let confined = if self.sandbox.is_confined() {
            " Files can be written only under HOME and TMPDIR (a private temporary directory; \
             /tmp is not writable); system directories are read-only \
             and the rest of the filesystem is out of reach."
        } else {
            ""
        };
        format!(
            "Runs a bash command and returns its combined stdout and stderr. Each call starts a \
             fresh shell with a minimal environment; HOME is the session's directory. The \
             working directory carries over from one call to the next (a `cd` holds) while it \
             stays inside the session's directory; when it leaves it, or the directory is gone, \
             the next command starts in the session's directory again and the result says so. \
             Environment variables, aliases and functions do not carry over.{confined} The command is killed, \
             with every process it started, after the timeout (default {DEFAULT_TIMEOUT_MS} ms, \
             at most {MAX_TIMEOUT_MS} ms); processes it sends to the background (`&`) do not \
             outlive the call. For a server or watcher that must keep running, set \
             run_in_background: the call returns a task id at once, TaskOutput reads what it \
             writes and TaskStop stops it; timeout then caps its lifetime (default \
             {DEFAULT_LIFETIME_MS} ms, at most {MAX_LIFETIME_MS} ms), and it is killed when \
             the session is deleted or expires. Output beyond {MAX_OUTPUT_CHARS} characters \
             is cut in the middle. Prefer Read, Glob and Grep for reading and searching files."
        )
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The command to execute"},
                "timeout": {"type": "integer", "minimum": 1, "maximum": MAX_LIFETIME_MS, "description": format!("Optional timeout in milliseconds (max {MAX_TIMEOUT_MS}; in the background, the lifetime, max {MAX_LIFETIME_MS})")},
                "description": {"type": "string", "description": "A short description of what the command does, in 5-10 words"},
                "run_in_background": {"type": "boolean", "description": "Run the command in the background and return its task id at once"}
            },
            "required": ["command"],
            "additionalProperties": false
        })
    }

    fn read_only(&self) -> bool {
        false
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let args = match Args::new(&input) {
            Ok(a) => a,
            Err(e) => return e.into(),
        };
        let (command, timeout, description, background) = match (
            args.string("command"),
            args.opt_u64("timeout"),
            args.opt_string("description"),
            args.opt_bool("run_in_background"),
        ) {
            (Ok(c), Ok(t), Ok(d), Ok(b)) => (c.to_owned(), t, d, b.unwrap_or(false)),
            (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => return e.into(),
        };
        let tmpdir = match self.sandbox.temp_dir(&ctx.workspace) {
            Ok(dir) => dir,
            Err(e) => {
                return ToolOutput::error(format!(
                    "Could not prepare the temporary directory: {e}"
                ));
            }
        };
        if background {
            let lifetime = timeout
                .unwrap_or(DEFAULT_LIFETIME_MS)
                .clamp(1, MAX_LIFETIME_MS);
            return self
                .start_in_background(&command, description, lifetime, tmpdir, ctx)
                .await;
        }
        let timeout_ms = timeout
            .unwrap_or(DEFAULT_TIMEOUT_MS)
            .clamp(1, MAX_TIMEOUT_MS);
        // A confined command can write only to its TMPDIR (and the user's
        // files); without one its directory is not carried over.
        let report_dir = match &tmpdir {
            Some(dir) => Some(dir.clone()),
            None if self.sandbox.is_confined() => None,
            None => Some(std::env::temp_dir()),
        };
        let report = report_dir.map(|dir| {
            dir.join(format!(
                ".claude-agent-cwd-{}",
                uuid::Uuid::new_v4().simple()
            ))
        });
        let (start, vanished) = start_dir(ctx).await;
        let shell = Shell {
            command: self.sandbox.command(&ctx.workspace, "bash"),
            supervised: self.sandbox.is_supervised(),
            tmpdir,
            start,
            report,
        };
        let report = shell.report.clone();
        let output = run(shell, &command, Duration::from_millis(timeout_ms), ctx).await;
        let moved = match report {
            Some(report) => settle_dir(ctx, report).await,
            None => None,
        };
        match vanished
            .into_iter()
            .chain(moved)
            .reduce(|a, b| format!("{a}\n{b}"))
        {
            Some(note) => ToolOutput {
                content: with_note(output.content, &note),
                ..output
            },
            None => output,
        }
    }
}

impl BashTool {
    /// Starts `command` as a background shell of the session and returns
    /// its id at once; its output goes to the shell's buffer.
    async fn start_in_background(
        &self,
        command: &str,
        description: Option<&str>,
        lifetime_ms: u64,
        tmpdir: Option<std::path::PathBuf>,
        ctx: &ToolContext,
    ) -> ToolOutput {
        if ctx.cancel.is_cancelled() {
            return ToolOutput::error("Interrupted before the command started.");
        }
        let task = match ctx
            .session
            .background()
            .add(command, description.map(str::to_owned))
        {
            Ok(task) => task,
            Err(e) => return ToolOutput::error(e),
        };
        let (start_in, vanished) = start_dir(ctx).await;
        let shell = Shell {
            command: self.sandbox.command(&ctx.workspace, "bash"),
            supervised: self.sandbox.is_supervised(),
            tmpdir,
            start: start_in,
            // A background shell's `cd` does not move the next call.
            report: None,
        };
        let started = match start(shell, command, ctx.workspace.root()) {
            Ok(started) => started,
            Err(e) => {
                task.finish(TaskStatus::Failed, None);
                return ToolOutput::error(e);
            }
        };
        let id = task.id().to_owned();
        tokio::spawn(async move {
            let stop = task.stop.clone();
            let lifetime = Duration::from_millis(lifetime_ms);
            let ending = watch(started, lifetime, &stop, |bytes| task.push(bytes)).await;
            let (status, code) = match ending {
                Ok(Ending::Exited(status)) if status.success() => (TaskStatus::Completed, Some(0)),
                Ok(Ending::Exited(status)) => (TaskStatus::Failed, status.code()),
                Ok(Ending::TimedOut) => (TaskStatus::TimedOut, None),
                Ok(Ending::Interrupted) => (TaskStatus::Stopped, None),
                Err(e) => {
                    task.push(e.as_bytes());
                    (TaskStatus::Failed, None)
                }
            };
            task.finish(status, code);
        });
        let started = format!(
            "Started in the background as task {id}. Read its output with TaskOutput \
             (task_id \"{id}\", block: false while it runs) and stop it with TaskStop. It is \
             killed after {lifetime_ms} ms, or when the session ends."
        );
        match vanished {
            Some(note) => ToolOutput::ok(format!("{started}\n{note}")),
            None => ToolOutput::ok(started),
        }
    }
}

/// Runs the model's command (`$2`) through `eval` in a shell that, when it
/// exits, writes its working directory to the file `$1`: the side channel
/// that carries `cd` over to the next call. The command itself sees no
/// positional parameters. A command that replaces the shell (`exec`) or the
/// EXIT trap leaves no report, and the next call starts where this one did.
const WRAPPER: &str = "__cah_report=$1; __cah_command=$2; set --\n\
     trap 'pwd -P 2>/dev/null >| \"$__cah_report\"' EXIT\n\
     eval \"$__cah_command\"";

/// Where the session's next command starts: where the last one ended while
/// that is still a directory inside the session's roots (checked beneath
/// their handles), else the session's directory, with a note saying why.
async fn start_dir(ctx: &ToolContext) -> (std::path::PathBuf, Option<String>) {
    let home = ctx.workspace.cwd().to_path_buf();
    let Some(last) = ctx.session.bash_cwd() else {
        return (home, None);
    };
    let workspace = ctx.workspace.clone();
    let checked = last.clone();
    let still_there = tokio::task::spawn_blocking(move || {
        directory_inside(&workspace, &checked.display().to_string())
    })
    .await
    .ok()
    .flatten();
    match still_there {
        Some(dir) => (dir, None),
        None => {
            ctx.session.set_bash_cwd(None);
            let note = format!(
                "The working directory {} no longer exists, so this command ran in {}.",
                last.display(),
                home.display()
            );
            (home, Some(note))
        }
    }
}

/// Reads where the command's shell ended, keeps it for the next call when
/// it is inside the session's roots, and otherwise goes back to the
/// session's directory, returning a note for the model.
async fn settle_dir(ctx: &ToolContext, report: std::path::PathBuf) -> Option<String> {
    let workspace = ctx.workspace.clone();
    let settled = tokio::task::spawn_blocking(move || {
        let reported = read_report(&report);
        let _ = std::fs::remove_file(&report);
        reported.map(|raw| {
            let dir = directory_inside(&workspace, &raw);
            (raw, dir)
        })
    })
    .await
    .ok()
    .flatten();
    let home = ctx.workspace.cwd();
    match settled {
        // No report: the shell was killed or replaced; it stays where it started.
        None => None,
        Some((_, Some(dir))) => {
            ctx.session
                .set_bash_cwd((dir.as_path() != home).then_some(dir));
            None
        }
        Some((raw, None)) => {
            ctx.session.set_bash_cwd(None);
            Some(if raw.is_empty() {
                format!(
                    "The shell's working directory no longer exists; the next command starts in {}.",
                    home.display()
                )
            } else {
                format!(
                    "The shell's working directory {raw} is outside the session's directory; the \
                     next command starts in {} again.",
                    home.display()
                )
            })
        }
    }
}

/// The directory the shell reported, as written (the command may have
/// written anything there); `None` when it wrote nothing.
fn read_report(report: &Path) -> Option<String> {
    use std::io::Read as _;
    let opened = crate::workspace::open_trusted_file(report).ok()?;
    let mut bytes = Vec::new();
    opened.file.take(16 * 1024).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    Some(text.strip_suffix('\n').unwrap_or(&text).to_owned())
}

/// `raw` as a canonical directory inside the session's roots, opened beneath
/// their handles to be sure; `None` for anything else.
fn directory_inside(
    workspace: &crate::workspace::Workspace,
    raw: &str,
) -> Option<std::path::PathBuf> {
    if !Path::new(raw).is_absolute() || raw.contains('\n') {
        return None;
    }
    let dir = workspace.resolve(raw).ok()?;
    workspace.is_dir(&dir).then_some(dir)
}

/// How the shell's run ended.
enum Ending {
    Exited(ExitStatus),
    TimedOut,
    Interrupted,
}

/// How bash is started: directly, or behind the sandbox's supervisor, which
/// is the process watched and, asked to stop, kills everything below it.
struct Shell {
    command: Command,
    supervised: bool,
    /// The session's private `TMPDIR`, when it has one.
    tmpdir: Option<std::path::PathBuf>,
    /// The directory the command starts in.
    start: std::path::PathBuf,
    /// Where the shell writes its working directory when it exits, when
    /// it can write one.
    report: Option<std::path::PathBuf>,
}

/// How long a supervisor asked to stop may take to kill what the command
/// started before its process group is killed outright.
pub(crate) const SUPERVISOR_GRACE: Duration = Duration::from_secs(10);

/// Runs `command` with `shell` in the foreground: the call waits for it,
/// up to `timeout`, and returns its output.
async fn run(shell: Shell, command: &str, timeout: Duration, ctx: &ToolContext) -> ToolOutput {
    if ctx.cancel.is_cancelled() {
        return ToolOutput::error("Interrupted before the command started.");
    }
    let started = match start(shell, command, ctx.workspace.root()) {
        Ok(started) => started,
        Err(e) => return ToolOutput::error(e),
    };
    let mut output = Capture::default();
    match watch(started, timeout, &ctx.cancel, |bytes| output.push(bytes)).await {
        Ok(ending) => report(ending, output.finish(), timeout),
        Err(e) => ToolOutput::error(e),
    }
}

/// A shell that has started: its process, the guard that stops all it
/// starts, and the read end of its output.
pub(crate) struct Started {
    child: tokio::process::Child,
    group: GroupGuard,
    reader: pipe::Receiver,
    supervised: bool,
}

/// Starts `command` with `shell`, in its own process group, with the
/// session's environment (`home` as HOME).
fn start(shell: Shell, command: &str, home: &Path) -> Result<Started, String> {
    // One pipe for stdout and stderr keeps their lines in the order they
    // were written, as a terminal would show them.
    let (writer, reader) = output_pipe().map_err(|e| format!("Could not start bash: {e}"))?;
    let supervised = shell.supervised;
    let child = {
        let mut cmd = shell.command;
        let mut env = child_env(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
            home,
            &shell.start,
        );
        if let Some(dir) = &shell.tmpdir {
            env.retain(|(k, _)| k != "TMPDIR");
            env.push(("TMPDIR".to_owned(), dir.display().to_string()));
        }
        match &shell.report {
            Some(report) => cmd.arg("-c").arg(WRAPPER).arg("bash").arg(report),
            None => cmd.arg("-c"),
        };
        cmd.arg(command)
            .current_dir(&shell.start)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(writer.0)
            .stderr(writer.1)
            .process_group(0)
            // A supervisor killed outright could not clean up after the
            // command; dropping the call stops it through the guard instead.
            .kill_on_drop(!supervised);
        cmd.spawn()
            .map_err(|e| format!("Could not start bash: {e}"))?
        // `cmd` drops here, closing our copies of the pipe's write end so
        // the reader sees end-of-file once the command's processes are gone.
    };
    let pid = child
        .id()
        .ok_or_else(|| "bash exited before it could be watched.".to_owned())?;
    Ok(Started {
        child,
        group: GroupGuard::new(pid, supervised),
        reader,
        supervised,
    })
}

/// Feeds the shell's output to `sink` until it exits, `timeout` passes or
/// `cancel` fires; then kills whatever it left running.
async fn watch(
    started: Started,
    timeout: Duration,
    cancel: &CancellationToken,
    mut sink: impl FnMut(&[u8]),
) -> Result<Ending, String> {
    let Started {
        mut child,
        group,
        mut reader,
        supervised,
    } = started;
    let mut buf = vec![0u8; 16 * 1024];
    let mut eof = false;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let ending = loop {
        tokio::select! {
            read = reader.read(&mut buf), if !eof => match read {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => sink(&buf[..n]),
            },
            status = child.wait() => match status {
                Ok(status) => break Ending::Exited(status),
                Err(e) => return Err(format!("Could not wait for bash: {e}")),
            },
            () = &mut deadline => break Ending::TimedOut,
            () = cancel.cancelled() => break Ending::Interrupted,
        }
    };

    // The shell is done or given up on; whatever it left running in the
    // background goes with it, so nothing outlives the call. A supervisor
    // does this itself when bash exits, and when told to stop.
    if !matches!(ending, Ending::Exited(_)) {
        group.stop();
        if supervised {
            let _ = tokio::time::timeout(SUPERVISOR_GRACE, child.wait()).await;
        }
    }
    group.kill();
    if !matches!(ending, Ending::Exited(_)) {
        let _ = child.wait().await;
    }
    if !eof {
        // Output already in the pipe is still worth showing; a process that
        // escaped the group (setsid) and holds the pipe is not waited for.
        let _ = tokio::time::timeout(DRAIN_GRACE, async {
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink(&buf[..n]),
                }
            }
        })
        .await;
    }
    group.disarm();
    Ok(ending)
}

fn report(ending: Ending, output: String, timeout: Duration) -> ToolOutput {
    match ending {
        Ending::Exited(status) => {
            if status.success() {
                if output.is_empty() {
                    ToolOutput::ok("(no output)")
                } else {
                    ToolOutput::ok(output)
                }
            } else {
                let how = match status.code() {
                    Some(code) => format!("Exit code {code}"),
                    None => {
                        use std::os::unix::process::ExitStatusExt;
                        format!("Killed by signal {}", status.signal().unwrap_or_default())
                    }
                };
                ToolOutput::error(with_note(output, &how))
            }
        }
        Ending::TimedOut => ToolOutput::error(with_note(
            output,
            &format!(
                "Command timed out after {} ms and was killed, with every process it started.",
                timeout.as_millis()
            ),
        )),
        Ending::Interrupted => ToolOutput::error(with_note(
            output,
            "Command was interrupted and killed, with every process it started.",
        )),
    }
}

fn with_note(output: String, note: &str) -> String {
    if output.is_empty() {
        note.to_owned()
    } else {
        format!("{}\n{note}", output.trim_end_matches('\n'))
    }
}

/// The pipe the command writes to: two blocking write ends for the child
/// (stdout, stderr) and a non-blocking read end for us.
fn output_pipe() -> std::io::Result<((Stdio, Stdio), pipe::Receiver)> {
    let (sender, receiver) = pipe::pipe()?;
    let out = sender.into_blocking_fd()?;
    let err = out.try_clone()?;
    Ok(((Stdio::from(out), Stdio::from(err)), receiver))
}

/// The command's whole environment: the basics from `parent` (the service's
/// own environment, which holds API keys and database passwords a user's
/// command must never see), then HOME and PWD pointing into the workspace.
pub(crate) fn child_env(
    parent: impl IntoIterator<Item = (String, String)>,
    home: &Path,
    cwd: &Path,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = parent
        .into_iter()
        .filter(|(name, _)| {
            name != "HOME"
                && crate::child_env::is_basic_name(name)
                && !crate::child_env::is_secret_name(name)
        })
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".to_owned(), FALLBACK_PATH.to_owned()));
    }
    env.push(("HOME".to_owned(), home.display().to_string()));
    env.push(("PWD".to_owned(), cwd.display().to_string()));
    env
}

/// Stops the command when dropped, so a turn that is abandoned mid-call
/// (its future dropped) leaves no processes behind.
pub(crate) struct GroupGuard {
    /// The shell's (or its supervisor's) pid, which is also its group's id.
    pgid: Option<Pid>,
    supervised: bool,
}

impl GroupGuard {
    pub(crate) fn new(pid: u32, supervised: bool) -> Self {
        Self {
            pgid: i32::try_from(pid).ok().map(Pid::from_raw),
            supervised,
        }
    }

    /// Asks a supervisor to kill everything the command started (it finds
    /// processes that left the group too), or kills the group outright.
    pub(crate) fn stop(&self) {
        match self.pgid {
            Some(pid) if self.supervised => {
                let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
            }
            _ => self.kill(),
        }
    }

    pub(crate) fn kill(&self) {
        if let Some(pgid) = self.pgid {
            // ESRCH (the group is already empty) is the common, fine case.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    /// After the group is killed and the shell reaped, a later kill could
    /// only hit an unrelated group that reused the id.
    pub(crate) fn disarm(mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Keeps the start and the end of the output, and counts what is between,
/// so a command printing gigabytes costs bounded memory.
#[derive(Default)]
struct Capture {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    /// Characters (UTF-8 leading bytes) seen in total.
    chars: usize,
    dropped: bool,
}

/// Bytes kept at each end: enough for half the output limit in 4-byte chars.
const CAPTURE_END_BYTES: usize = MAX_OUTPUT_CHARS / 2 * 4;

impl Capture {
    fn push(&mut self, bytes: &[u8]) {
        self.chars += bytes.iter().filter(|b| (**b & 0xC0) != 0x80).count();
        let room = CAPTURE_END_BYTES.saturating_sub(self.head.len());
        let (to_head, rest) = bytes.split_at(room.min(bytes.len()));
        self.head.extend_from_slice(to_head);
        self.tail.extend(rest);
        while self.tail.len() > CAPTURE_END_BYTES {
            self.tail.pop_front();
            self.dropped = true;
        }
    }

    fn finish(self) -> String {
        if !self.dropped {
            let mut all = self.head;
            all.extend(self.tail);
            return truncate_middle(&String::from_utf8_lossy(&all), MAX_OUTPUT_CHARS);
        }
        let head = String::from_utf8_lossy(&self.head);
        let tail_bytes: Vec<u8> = self.tail.into_iter().collect();
        // The kept tail may start inside a character; skip to the next one.
        let start = tail_bytes
            .iter()
            .position(|b| (b & 0xC0) != 0x80)
            .unwrap_or(tail_bytes.len());
        let tail = String::from_utf8_lossy(&tail_bytes[start..]);
        let keep_head = MAX_OUTPUT_CHARS / 2;
        let keep_tail = MAX_OUTPUT_CHARS - keep_head;
        let head: String = head.chars().take(keep_head).collect();
        let tail_count = tail.chars().count();
        let tail: String = tail
            .chars()
            .skip(tail_count.saturating_sub(keep_tail))
            .collect();
        let cut = self
            .chars
            .saturating_sub(head.chars().count() + tail.chars().count());
        join_cut(&head, cut, &tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::Workspace;
    use std::time::Instant;
    use tokio_util::sync::CancellationToken;

    fn ctx(dir: &Path) -> ToolContext {
        ToolContext::new(Workspace::at(dir).unwrap(), CancellationToken::new())
    }

    /// A session in `{base}/alice/proj/app`, so HOME and PWD differ.
    fn subdir_ctx(base: &Path) -> ToolContext {
        let user = crate::domain::UserId::parse("alice").unwrap();
        let sub = crate::domain::Subdir::parse("proj/app").unwrap();
        ToolContext::new(
            Workspace::open(base, &user, Some(&sub), true).unwrap(),
            CancellationToken::new(),
        )
    }

    async fn bash(ctx: &ToolContext, input: Value) -> ToolOutput {
        BashTool::default().call(input, ctx).await
    }

    /// Whether a process is gone: no /proc entry, or a zombie awaiting its reaper.
    fn process_gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    async fn wait_gone(pid: u32) -> bool {
        for _ in 0..100 {
            if process_gone(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn read_pid(path: &Path) -> u32 {
        for _ in 0..100 {
            if let Ok(s) = std::fs::read_to_string(path)
                && let Ok(pid) = s.trim().parse()
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no pid written to {}", path.display());
    }

    #[tokio::test]
    async fn runs_in_the_cwd_and_captures_both_streams() {
        let tmp = tempfile::tempdir().unwrap();
        let c = subdir_ctx(tmp.path());
        let out = bash(&c, json!({"command": "pwd; echo out; echo err >&2"})).await;
        assert!(!out.is_error, "{out:?}");
        let cwd = c.workspace.cwd().display().to_string();
        assert_eq!(out.content, format!("{cwd}\nout\nerr\n"));
    }

    #[tokio::test]
    async fn cd_carries_over_inside_the_session_and_resets_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let c = subdir_ctx(tmp.path());
        let home = c.workspace.cwd().to_path_buf();
        let out = bash(
            &c,
            json!({"command": "mkdir -p a/b && cd a/b && export KEPT=1; exit 3"}),
        )
        .await;
        assert_eq!(
            out,
            ToolOutput::error("Exit code 3"),
            "the exit code survives the wrapper"
        );
        let out = bash(
            &c,
            json!({"command": "pwd; echo \"$PWD\" \"KEPT=$KEPT\" \"$#\""}),
        )
        .await;
        let sub = home.join("a/b").display().to_string();
        assert_eq!(out.content, format!("{sub}\n{sub} KEPT= 0\n"), "{out:?}");

        let out = bash(&c, json!({"command": "cd / && pwd"})).await;
        assert!(!out.is_error, "{out:?}");
        assert!(out.content.starts_with("/\n"), "{out:?}");
        assert!(
            out.content.contains("outside the session's directory"),
            "{out:?}"
        );
        let out = bash(&c, json!({"command": "pwd"})).await;
        assert_eq!(out.content, format!("{}\n", home.display()));

        // The directory it was left in is removed before the next call.
        bash(&c, json!({"command": "cd a/b"})).await;
        std::fs::remove_dir_all(home.join("a")).unwrap();
        let out = bash(&c, json!({"command": "pwd"})).await;
        assert!(
            out.content.starts_with(&format!("{}\n", home.display())),
            "{out:?}"
        );
        assert!(out.content.contains("no longer exists"), "{out:?}");
        // Another session starts at home.
        std::fs::create_dir(home.join("x")).unwrap();
        bash(&c, json!({"command": "cd x"})).await;
        let other = ToolContext::new(c.workspace.clone(), CancellationToken::new());
        let out = bash(&other, json!({"command": "pwd"})).await;
        assert_eq!(out.content, format!("{}\n", home.display()));
    }

    #[tokio::test]
    async fn non_zero_exit_is_an_error_with_its_code() {
        let tmp = tempfile::tempdir().unwrap();
        let out = bash(&ctx(tmp.path()), json!({"command": "echo oops; exit 3"})).await;
        assert!(out.is_error);
        assert_eq!(out.content, "oops\nExit code 3");
    }

    #[tokio::test]
    async fn silent_success_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let out = bash(&ctx(tmp.path()), json!({"command": "true"})).await;
        assert_eq!(out, ToolOutput::ok("(no output)"));
    }

    #[test]
    fn only_allowed_variables_are_passed() {
        let parent = [
            ("PATH", "/bin"),
            ("LANG", "C.UTF-8"),
            ("ANTHROPIC_API_KEY", "sk-ant-test"),
            ("CLAUDE_AGENT_SESSION_PG_PASSWORD", "pw"),
            ("DATABASE_URL", "postgres://u:pw@h/db"),
            ("HOME", "/root"),
            ("RANDOM_THING", "x"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let env = child_env(parent, Path::new("/w/alice"), Path::new("/w/alice/proj"));
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "LANG", "HOME", "PWD"]);
        assert!(env.contains(&("HOME".to_owned(), "/w/alice".to_owned())));
        assert!(env.contains(&("PWD".to_owned(), "/w/alice/proj".to_owned())));
    }

    /// Runs in a child copy of the test binary whose environment holds the
    /// secrets (setting variables in this process would need `unsafe`).
    #[tokio::test]
    #[ignore = "run by environment_is_scrubbed with secrets in its environment"]
    async fn env_probe() {
        let tmp = tempfile::tempdir().unwrap();
        let c = subdir_ctx(tmp.path());
        assert!(c.workspace.cwd().ends_with("alice/proj/app"));
        let out = bash(&c, json!({"command": "env"})).await;
        assert!(!out.is_error, "{out:?}");
        for secret in [
            "ANTHROPIC_API_KEY",
            "CLAUDE_AGENT_SESSION_PG_PASSWORD",
            "sk-ant-probe",
        ] {
            assert!(
                !out.content.contains(secret),
                "{secret} leaked:\n{}",
                out.content
            );
        }
        let home = format!("HOME={}", c.workspace.root().display());
        let pwd = format!("PWD={}", c.workspace.cwd().display());
        assert!(out.content.lines().any(|l| l == home), "{}", out.content);
        assert!(out.content.lines().any(|l| l == pwd), "{}", out.content);
        assert!(out.content.lines().any(|l| l.starts_with("PATH=")));
        println!("ENV_PROBE_PASSED");
    }

    #[test]
    fn environment_is_scrubbed() {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "tools::bash::tests::env_probe",
                "--ignored",
                "--nocapture",
            ])
            .env("ANTHROPIC_API_KEY", "sk-ant-probe")
            .env("CLAUDE_AGENT_SESSION_PG_PASSWORD", "sk-ant-probe")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("ENV_PROBE_PASSED"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[tokio::test]
    async fn huge_output_is_cut_in_the_middle() {
        let tmp = tempfile::tempdir().unwrap();
        let out = bash(
            &ctx(tmp.path()),
            json!({"command": "echo START; head -c 200000 /dev/zero | tr '\\0' x; echo; echo END"}),
        )
        .await;
        assert!(!out.is_error);
        assert!(out.content.starts_with("START\n"), "{}", &out.content[..50]);
        assert!(out.content.trim_end().ends_with("END"));
        assert!(out.content.contains("characters truncated] ..."));
        assert!(out.content.chars().count() < MAX_OUTPUT_CHARS + 200);
        // 6 + 200001 + 4 characters were printed; 30000 are kept.
        assert!(
            out.content.contains("[170011 characters truncated]"),
            "{}",
            {
                let i = out.content.find("[").unwrap();
                &out.content[i..i + 40]
            }
        );
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group_including_background_children() {
        let tmp = tempfile::tempdir().unwrap();
        let c = ctx(tmp.path());
        let started = Instant::now();
        let out = bash(
            &c,
            json!({"command": "sleep 300 & echo $! > bg.pid; sleep 200", "timeout": 700}),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            out.is_error && out.content.contains("timed out after 700 ms"),
            "{out:?}"
        );
        let pid = read_pid(&tmp.path().join("bg.pid")).await;
        assert!(
            wait_gone(pid).await,
            "background sleep {pid} survived the timeout"
        );
    }

    #[tokio::test]
    async fn background_child_does_not_hold_the_call_open() {
        let tmp = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let out = bash(
            &ctx(tmp.path()),
            json!({"command": "sleep 300 & echo $! > bg.pid; echo done"}),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(out, ToolOutput::ok("done\n"));
        let pid = read_pid(&tmp.path().join("bg.pid")).await;
        assert!(
            wait_gone(pid).await,
            "background sleep {pid} outlived the call"
        );
    }

    #[tokio::test]
    async fn cancel_kills_the_process() {
        let tmp = tempfile::tempdir().unwrap();
        let c = ctx(tmp.path());
        let cancel = c.cancel.clone();
        let call = tokio::spawn({
            let c = c.clone();
            async move { bash(&c, json!({"command": "echo $$ > sh.pid; sleep 300"})).await }
        });
        let pid = read_pid(&tmp.path().join("sh.pid")).await;
        cancel.cancel();
        let out = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .unwrap()
            .unwrap();
        assert!(
            out.is_error && out.content.contains("interrupted"),
            "{out:?}"
        );
        assert!(wait_gone(pid).await);
    }

    #[tokio::test]
    async fn dropping_the_call_kills_the_group() {
        let tmp = tempfile::tempdir().unwrap();
        let c = ctx(tmp.path());
        let pid_file = tmp.path().join("bg.pid");
        let call = bash(&c, json!({"command": "sleep 300 & echo $! > bg.pid; wait"}));
        // Dropping the future mid-run is what happens when a turn is abandoned.
        let _ = tokio::time::timeout(Duration::from_millis(500), call).await;
        let pid = read_pid(&pid_file).await;
        assert!(
            wait_gone(pid).await,
            "background sleep {pid} outlived the dropped call"
        );
    }

    #[tokio::test]
    async fn invalid_input_names_the_field() {
        let tmp = tempfile::tempdir().unwrap();
        let out = bash(&ctx(tmp.path()), json!({"timeout": 5})).await;
        assert!(out.is_error && out.content.contains("`command`"), "{out:?}");
        let out = bash(
            &ctx(tmp.path()),
            json!({"command": "true", "timeout": "soon"}),
        )
        .await;
        assert!(out.is_error && out.content.contains("`timeout`"), "{out:?}");
    }
}
