//! Filesystem confinement of the commands `Bash` runs: the policy for a
//! workspace, and the hidden `sandbox-exec` subcommand that applies it with
//! Landlock and then becomes the command.
//!
//! The service re-executes its own binary (`claude-agent-http sandbox-exec
//! --rw DIR --ro DIR -- bash -c ...`) rather than restricting a forked child
//! in place, because doing the latter needs `pre_exec`, which is `unsafe`.
//! The wrapper `exec`s the command, so the process the service watches and
//! the process group it kills are the command's own.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use landlock::{
    ABI, Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, RulesetAttr,
    RulesetCreatedAttr, RulesetError, RulesetStatus, Scope,
};

use crate::config::{SandboxMode, Settings, StorageKind, ToolSettings};
use crate::workspace::Workspace;

/// The subcommand of the service binary that confines itself and runs a program.
pub const SUBCOMMAND: &str = "sandbox-exec";

/// The Landlock ABI the rules are written for. V6 is the first with scopes,
/// which keep a command from signalling processes outside its sandbox (the
/// service, other users' commands); the filesystem rights are V5's. Older
/// kernels get what they support (best effort).
const TARGET_ABI: ABI = ABI::V6;

/// System directories a command may read and execute from, when they exist.
const SYSTEM_READ_ONLY: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/etc",
    "/opt",
    "/proc",
    "/sys",
    "/run",
    "/var/lib",
    "/usr/local",
];

/// Shared places a command may write besides the session's directory: scratch
/// files, and devices such as /dev/null and /dev/tty.
const SYSTEM_READ_WRITE: &[&str] = &["/tmp", "/dev"];

/// What `--probe` prints, followed by the enforcement level, when the
/// sandbox holds; the service checks for it so that an executable which is
/// not claude-agent-http (a test harness) is never mistaken for one.
const PROBE_OK: &str = "sandbox-exec probe: enforced";

/// How long the start-up probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The directories a confined command may use. Everything else is denied:
/// other users' directories, the service's data and configuration, /root, /home.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    read_write: Vec<PathBuf>,
    read_only: Vec<PathBuf>,
}

impl Policy {
    pub fn new(read_write: Vec<PathBuf>, read_only: Vec<PathBuf>) -> Self {
        Self {
            read_write,
            read_only,
        }
    }

    /// Directories (and what is below them) the command may read, write,
    /// create in and execute from.
    pub fn read_write(&self) -> &[PathBuf] {
        &self.read_write
    }

    /// Directories the command may read and execute from.
    pub fn read_only(&self) -> &[PathBuf] {
        &self.read_only
    }

    /// The policy as `sandbox-exec` arguments, before the `--`.
    pub fn to_args(&self) -> Vec<OsString> {
        let rw = self.read_write.iter().map(|p| ("--rw", p));
        let ro = self.read_only.iter().map(|p| ("--ro", p));
        rw.chain(ro)
            .flat_map(|(flag, path)| [OsString::from(flag), path.as_os_str().to_owned()])
            .collect()
    }
}

/// What `sandbox-exec` was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    /// Confine this process with an empty policy and report whether it held.
    Probe,
    /// Confine this process, then replace it with `program`.
    Exec {
        policy: Policy,
        program: OsString,
        args: Vec<OsString>,
    },
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("{0} needs a directory")]
    MissingPath(&'static str),
    #[error("{flag} needs an absolute path, not {path:?}")]
    RelativePath { flag: &'static str, path: PathBuf },
    #[error("unexpected argument {0:?}")]
    Unexpected(OsString),
    #[error("no program to run after --")]
    MissingProgram,
}

/// Parses the arguments after `sandbox-exec`:
/// `--probe`, or `[--rw DIR | --ro DIR]... -- PROGRAM [ARGS...]`.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Invocation, UsageError> {
    let mut args = args.into_iter();
    let mut policy = Policy::default();
    let mut first = true;
    while let Some(arg) = args.next() {
        let (flag, list) = match arg.to_str() {
            Some("--probe") if first => {
                return match args.next() {
                    None => Ok(Invocation::Probe),
                    Some(extra) => Err(UsageError::Unexpected(extra)),
                };
            }
            Some("--rw") => ("--rw", &mut policy.read_write),
            Some("--ro") => ("--ro", &mut policy.read_only),
            Some("--") => {
                let program = args.next().ok_or(UsageError::MissingProgram)?;
                return Ok(Invocation::Exec {
                    policy,
                    program,
                    args: args.collect(),
                });
            }
            _ => return Err(UsageError::Unexpected(arg)),
        };
        first = false;
        let path = PathBuf::from(args.next().ok_or(UsageError::MissingPath(flag))?);
        if !path.is_absolute() {
            return Err(UsageError::RelativePath { flag, path });
        }
        list.push(path);
    }
    Err(UsageError::MissingProgram)
}

/// How much of the requested confinement the kernel applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Every rule holds.
    Full,
    /// The kernel supports an older Landlock: the policy's paths are
    /// enforced, some finer rights (truncate, ioctl, signal scoping) are not.
    Partial,
    /// No Landlock on this kernel: the process is unconfined.
    None,
}

impl fmt::Display for Enforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "full",
            Self::Partial => "partial",
            Self::None => "none",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot open {path}: {source}")]
    Path {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("landlock: {0}")]
    Landlock(#[from] RulesetError),
}

/// Confines the calling process (and everything it later executes) to
/// `policy`, with no new privileges. Best effort: a kernel without Landlock
/// leaves the process unconfined and says so in the result.
pub fn enter(policy: &Policy) -> Result<Enforcement, SandboxError> {
    let status = landlock::Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET_ABI))?
        .scope(Scope::from_all(TARGET_ABI))?
        .create()?
        .add_rules(rules(policy.read_write(), AccessFs::from_all(TARGET_ABI)))?
        .add_rules(rules(policy.read_only(), AccessFs::from_read(TARGET_ABI)))?
        .restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Enforcement::Full,
        RulesetStatus::PartiallyEnforced => Enforcement::Partial,
        RulesetStatus::NotEnforced => Enforcement::None,
    })
}

/// One rule per path; a path that cannot be opened is an error rather than
/// silently dropped, so a mistyped policy is noticed.
fn rules<'a>(
    paths: &'a [PathBuf],
    access: BitFlags<AccessFs>,
) -> impl Iterator<Item = Result<PathBeneath<PathFd>, SandboxError>> + 'a {
    paths.iter().map(move |path| {
        let fd = PathFd::new(path).map_err(|e| SandboxError::Path {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        // Directory-only rights on a file are refused; keep the file ones.
        let access = if path.is_dir() {
            access
        } else {
            access & AccessFs::from_file(TARGET_ABI)
        };
        Ok(PathBeneath::new(fd, access))
    })
}

/// Runs `sandbox-exec` with the arguments that follow it. Only returns when
/// the program could not be started (or for `--probe`).
pub fn run_subcommand(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    match parse_args(args) {
        Err(e) => {
            eprintln!("claude-agent-http {SUBCOMMAND}: {e}");
            ExitCode::from(2)
        }
        Ok(Invocation::Probe) => probe_self(),
        Ok(Invocation::Exec {
            policy,
            program,
            args,
        }) => {
            // An unconfined run is what the service asked for when it chose
            // this launcher after its probe; nothing is printed so the
            // command's output stays its own.
            if let Err(e) = enter(&policy) {
                eprintln!("claude-agent-http {SUBCOMMAND}: cannot confine the command: {e}");
                return ExitCode::from(126);
            }
            let err = std::process::Command::new(&program).args(&args).exec();
            eprintln!(
                "claude-agent-http {SUBCOMMAND}: cannot run {}: {err}",
                program.to_string_lossy()
            );
            ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            })
        }
    }
}

/// Confines this process to nothing at all and checks that listing `/` is
/// then refused, so "enforced" means the kernel really denies access.
fn probe_self() -> ExitCode {
    match enter(&Policy::default()) {
        Ok(Enforcement::None) => {
            println!("sandbox-exec probe: Landlock is not supported by this kernel");
            ExitCode::FAILURE
        }
        Ok(level) => match std::fs::read_dir("/") {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                println!("{PROBE_OK} {level}");
                ExitCode::SUCCESS
            }
            _ => {
                println!("sandbox-exec probe: Landlock reported {level} but / is still readable");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            println!("sandbox-exec probe: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How the service starts Bash commands: through `sandbox-exec` when a
/// launcher is set, directly (unconfined) otherwise.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    launcher: Option<PathBuf>,
    system_read_write: Vec<PathBuf>,
    system_read_only: Vec<PathBuf>,
}

impl Sandbox {
    /// Commands run unconfined.
    pub fn off() -> Self {
        Self::default()
    }

    /// Commands are confined by `exe sandbox-exec` (a claude-agent-http binary).
    pub fn with_launcher(exe: PathBuf) -> Self {
        let existing = |dirs: &[&str]| {
            dirs.iter()
                .map(PathBuf::from)
                .filter(|p| p.exists())
                .collect()
        };
        Self {
            launcher: Some(exe),
            system_read_write: existing(SYSTEM_READ_WRITE),
            system_read_only: existing(SYSTEM_READ_ONLY),
        }
    }

    /// Decides at start-up, from `tools.sandbox`, whether commands are confined.
    /// `on` fails when they cannot be; `auto` then warns once and runs them unconfined.
    pub async fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let sandbox = Self::from_tool_settings(&settings.tools).await?;
        if let Some(open) = sandbox.exposing(&settings.user.base_dir) {
            tracing::warn!(
                base_dir = %settings.user.base_dir.display(),
                "user.base_dir is under {}, which every Bash command may use: \
                 users' directories are not separated from each other",
                open.display()
            );
        }
        if settings.session.storage == StorageKind::Sqlite
            && let Some(open) = sandbox.exposing(&settings.session.sqlite_path)
        {
            tracing::warn!(
                sqlite_path = %settings.session.sqlite_path.display(),
                "session.sqlite_path is under {}, which every Bash command may read: \
                 commands can read every session's history",
                open.display()
            );
        }
        Ok(sandbox)
    }

    async fn from_tool_settings(settings: &ToolSettings) -> anyhow::Result<Self> {
        if settings.sandbox == SandboxMode::Off {
            tracing::info!("Bash commands run unconfined (tools.sandbox: off)");
            return Ok(Self::off());
        }
        let probed = match launcher_path(settings) {
            Ok(exe) => probe(&exe).await.map(|level| (exe, level)),
            Err(e) => Err(e),
        };
        match probed {
            Ok((exe, level)) => {
                if level == Enforcement::Partial {
                    tracing::warn!(
                        "Bash commands are confined to the session's directory, but this kernel's \
                         Landlock is old: truncation, device ioctls and signals are not restricted"
                    );
                } else {
                    tracing::info!(launcher = %exe.display(), "Bash commands are confined to the session's directory");
                }
                Ok(Self::with_launcher(exe))
            }
            Err(why) if settings.sandbox == SandboxMode::On => Err(anyhow::anyhow!(
                "tools.sandbox is on but Bash commands cannot be confined: {why}"
            )),
            Err(why) => {
                tracing::warn!(
                    "Bash commands run UNCONFINED (they can reach any file the service can): {why}; \
                     set tools.sandbox to on to refuse to start instead, or off to silence this"
                );
                Ok(Self::off())
            }
        }
    }

    pub fn is_confined(&self) -> bool {
        self.launcher.is_some()
    }

    /// The directory every confined command may use (/tmp, /usr, ...) that
    /// holds `path`, if any: what lies there is open to all users' commands.
    fn exposing(&self, path: &Path) -> Option<&Path> {
        // The path may not exist yet; where it would be created does.
        let path = path.ancestors().find_map(|a| a.canonicalize().ok())?;
        self.system_read_write
            .iter()
            .chain(&self.system_read_only)
            .find(|open| path.starts_with(open))
            .map(PathBuf::as_path)
    }

    /// The policy for a command in `workspace`: the session's directory and the
    /// shared scratch places writable, system directories and the workspace's
    /// extra roots readable.
    pub fn policy(&self, workspace: &Workspace) -> Policy {
        let mut read_write = vec![workspace.root().to_path_buf()];
        read_write.extend(self.system_read_write.iter().cloned());
        let mut read_only = self.system_read_only.clone();
        read_only.extend(workspace.extra_roots().map(Path::to_path_buf));
        Policy::new(read_write, read_only)
    }

    /// A command that runs `program` in `workspace`, confined when a launcher is set.
    pub fn command(&self, workspace: &Workspace, program: &str) -> tokio::process::Command {
        match &self.launcher {
            None => tokio::process::Command::new(program),
            Some(exe) => {
                let mut cmd = tokio::process::Command::new(exe);
                cmd.arg(SUBCOMMAND)
                    .args(self.policy(workspace).to_args())
                    .arg("--")
                    .arg(program);
                cmd
            }
        }
    }
}

/// `tools.sandbox_exe`, else the running executable; absolute either way.
fn launcher_path(settings: &ToolSettings) -> Result<PathBuf, String> {
    let exe = match &settings.sandbox_exe {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot locate the service's own executable: {e}"))?,
    };
    exe.canonicalize()
        .map_err(|e| format!("launcher {}: {e}", exe.display()))
}

/// Runs `exe sandbox-exec --probe`: proves both that `exe` is a
/// claude-agent-http binary and that the kernel enforces the sandbox.
pub async fn probe(exe: &Path) -> Result<Enforcement, String> {
    let run = tokio::process::Command::new(exe)
        .args([OsStr::new(SUBCOMMAND), OsStr::new("--probe")])
        .env_clear()
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(PROBE_TIMEOUT, run).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(format!("cannot run {}: {e}", exe.display())),
        Err(_) => return Err(format!("{} {SUBCOMMAND} --probe hung", exe.display())),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().next().unwrap_or("").trim();
    match line.strip_prefix(PROBE_OK).map(str::trim) {
        Some("full") if output.status.success() => Ok(Enforcement::Full),
        Some("partial") if output.status.success() => Ok(Enforcement::Partial),
        _ if line.starts_with("sandbox-exec probe:") => Err(line
            .trim_start_matches("sandbox-exec probe:")
            .trim()
            .to_owned()),
        _ => Err(format!(
            "{} is not a claude-agent-http binary ({SUBCOMMAND} --probe: {})",
            exe.display(),
            output.status
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_dirs_program_and_its_args() {
        let parsed = parse_args(os(&[
            "--rw",
            "/w/alice",
            "--ro",
            "/usr",
            "--rw",
            "/tmp",
            "--",
            "bash",
            "-c",
            "echo --rw",
        ]))
        .unwrap();
        assert_eq!(
            parsed,
            Invocation::Exec {
                policy: Policy::new(vec!["/w/alice".into(), "/tmp".into()], vec!["/usr".into()]),
                program: "bash".into(),
                args: os(&["-c", "echo --rw"]),
            }
        );
    }

    #[test]
    fn an_empty_policy_is_allowed() {
        let parsed = parse_args(os(&["--", "true"])).unwrap();
        assert_eq!(
            parsed,
            Invocation::Exec {
                policy: Policy::default(),
                program: "true".into(),
                args: vec![],
            }
        );
    }

    #[test]
    fn probe_stands_alone() {
        assert_eq!(parse_args(os(&["--probe"])).unwrap(), Invocation::Probe);
        assert!(matches!(
            parse_args(os(&["--probe", "x"])),
            Err(UsageError::Unexpected(_))
        ));
        assert!(matches!(
            parse_args(os(&["--rw", "/a", "--probe"])),
            Err(UsageError::Unexpected(_))
        ));
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert_eq!(
            parse_args(os(&["--rw"])),
            Err(UsageError::MissingPath("--rw"))
        );
        assert_eq!(
            parse_args(os(&["--ro", "usr", "--", "ls"])),
            Err(UsageError::RelativePath {
                flag: "--ro",
                path: "usr".into()
            })
        );
        assert_eq!(
            parse_args(os(&["--rw", "/a"])),
            Err(UsageError::MissingProgram)
        );
        assert_eq!(parse_args(os(&["--"])), Err(UsageError::MissingProgram));
        assert_eq!(parse_args(os(&[])), Err(UsageError::MissingProgram));
        assert_eq!(
            parse_args(os(&["bash"])),
            Err(UsageError::Unexpected("bash".into()))
        );
    }

    #[test]
    fn policy_round_trips_through_arguments() {
        let policy = Policy::new(vec!["/w/a b".into()], vec!["/usr".into(), "/etc".into()]);
        let mut args = policy.to_args();
        args.extend(os(&["--", "ls"]));
        assert_eq!(
            parse_args(args).unwrap(),
            Invocation::Exec {
                policy,
                program: "ls".into(),
                args: vec![],
            }
        );
    }

    #[test]
    fn workspace_policy_writes_only_the_user_dir_and_scratch() {
        let tmp = tempfile::tempdir().unwrap();
        let user = crate::domain::UserId::parse("alice").unwrap();
        let sub = crate::domain::Subdir::parse("proj").unwrap();
        let extra = tempfile::tempdir().unwrap();
        let ws = Workspace::open(tmp.path(), &user, Some(&sub), true)
            .unwrap()
            .with_extra_roots([extra.path().to_path_buf()]);
        let policy = Sandbox::with_launcher("/x/claude-agent-http".into()).policy(&ws);

        // The user's whole directory, not only the session's subdirectory.
        assert_eq!(policy.read_write()[0], ws.root());
        let rw: Vec<&Path> = policy.read_write().iter().map(PathBuf::as_path).collect();
        assert!(rw.contains(&Path::new("/tmp")) && rw.contains(&Path::new("/dev")));
        assert_eq!(rw.len(), 3, "{rw:?}");

        let ro = policy.read_only();
        assert!(ro.contains(&PathBuf::from("/usr")) && ro.contains(&PathBuf::from("/etc")));
        assert!(ro.contains(&extra.path().canonicalize().unwrap()));
        assert!(ro.iter().all(|p| p.exists()), "{ro:?}");
        for denied in ["/", "/root", "/home", "/var"] {
            let denied = Path::new(denied);
            assert!(
                !rw.contains(&denied) && !ro.iter().any(|p| p == denied),
                "{denied:?} must not be allowed"
            );
        }
        // Nothing granted contains the base directory holding other users.
        assert!(
            policy
                .read_write()
                .iter()
                .chain(ro)
                .all(|p| !tmp.path().starts_with(p) || p == Path::new("/tmp")),
        );
    }

    #[test]
    fn unconfined_sandbox_runs_the_program_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::at(tmp.path()).unwrap();
        let off = Sandbox::off();
        assert!(!off.is_confined());
        assert_eq!(off.command(&ws, "bash").as_std().get_program(), "bash");

        let on = Sandbox::with_launcher("/x/claude-agent-http".into());
        let cmd = on.command(&ws, "bash");
        let std = cmd.as_std();
        assert_eq!(std.get_program(), "/x/claude-agent-http");
        let args: Vec<&OsStr> = std.get_args().collect();
        assert_eq!(args[0], SUBCOMMAND);
        assert_eq!(args[1..3], [OsStr::new("--rw"), ws.root().as_os_str()]);
        assert_eq!(
            args[args.len() - 2..],
            [OsStr::new("--"), OsStr::new("bash")]
        );
    }

    #[test]
    fn data_under_a_shared_directory_is_noticed() {
        let sandbox = Sandbox::with_launcher("/x/claude-agent-http".into());
        let tmp = tempfile::tempdir_in("/tmp").unwrap();
        assert_eq!(sandbox.exposing(tmp.path()), Some(Path::new("/tmp")));
        let db = tmp.path().join("not/yet/sessions.db");
        assert_eq!(sandbox.exposing(&db), Some(Path::new("/tmp")));
        assert_eq!(
            sandbox.exposing(Path::new("/usr/share")),
            Some(Path::new("/usr"))
        );
        assert_eq!(sandbox.exposing(Path::new("/root")), None);
        assert_eq!(Sandbox::off().exposing(tmp.path()), None);
    }

    #[tokio::test]
    async fn a_binary_that_is_not_the_service_is_no_launcher() {
        let err = probe(Path::new("/bin/true")).await.unwrap_err();
        assert!(err.contains("not a claude-agent-http binary"), "{err}");
        let mut settings = Settings {
            tools: ToolSettings {
                sandbox: SandboxMode::Auto,
                sandbox_exe: Some("/bin/true".into()),
                ..ToolSettings::default()
            },
            ..Settings::default()
        };
        let sandbox = Sandbox::from_settings(&settings).await.unwrap();
        assert!(!sandbox.is_confined());
        settings.tools = ToolSettings {
            sandbox: SandboxMode::On,
            sandbox_exe: Some("/nonexistent/claude-agent-http".into()),
            ..ToolSettings::default()
        };
        let err = Sandbox::from_settings(&settings).await.unwrap_err();
        assert!(err.to_string().contains("tools.sandbox is on"), "{err}");
    }
}
