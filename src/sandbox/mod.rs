//! Filesystem confinement of the commands `Bash` runs: the policy for a
//! workspace, and the hidden `sandbox-exec` subcommand that applies it with
//! Landlock and then becomes the command.
//!
//! The service re-executes its own binary (`claude-agent-http sandbox-exec
//! --rw DIR --ro DIR -- bash -c ...`) rather than restricting a forked child
//! in place, because doing the latter needs `pre_exec`, which is `unsafe`.
//! The wrapper stays as the command's parent (`supervisor`): it applies the
//! resource limits, and kills every process the command started when the
//! command ends, when the service stops it, or when the service dies.

mod ids;
mod namespace;
mod supervisor;

pub use ids::UserIds;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath,
    PathFd, RulesetAttr, RulesetCreatedAttr, RulesetError, RulesetStatus, Scope,
};

use crate::config::{
    CommandLimits, CommandUser, NetworkMode, SandboxMode, Settings, StorageKind, ToolSettings,
};
use crate::workspace::{Owner, Workspace};

/// The subcommand of the service binary that confines itself and runs a program.
pub const SUBCOMMAND: &str = "sandbox-exec";

/// The Landlock ABI the rules are written for. V6 is the first with scopes,
/// which keep a command from signalling processes outside its sandbox (the
/// service, other users' commands); the filesystem rights are V5's. Older
/// kernels get what they support (best effort).
const TARGET_ABI: ABI = ABI::V6;

/// The Landlock ABI whose TCP rules `tools.network` uses.
const NET_ABI: ABI = ABI::V4;

/// System directories a command may read and execute from, when they exist.
/// Not /var/lib, where databases keep their files.
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
    "/usr/local",
];

/// Devices a command may use besides the session's directory. Not the
/// whole of /dev: /dev/shm is shared memory every user's commands would
/// share. Scratch files go to the session's own temporary directory.
const SYSTEM_READ_WRITE: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
];

/// Under `user.base_dir`, where each session's private temporary directory
/// lives (a name no user id can have).
const TEMP_DIRS: &str = ".tmp";

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
    net: Net,
    limits: Limits,
    /// The user and group the command runs as; the service's own when unset.
    user: Option<Owner>,
}

/// Which TCP ports a command may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Net {
    #[default]
    Full,
    /// Connecting to these ports is refused; everything else is allowed.
    DenyConnect(Vec<u16>),
    /// No TCP connect or bind at all.
    None,
}

/// Resource limits a command runs under (`setrlimit`); `None` leaves one as
/// inherited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub address_space_bytes: Option<u64>,
    pub cpu_secs: Option<u64>,
    pub processes: Option<u64>,
    pub file_size_bytes: Option<u64>,
}

impl Limits {
    pub fn from_settings(limits: &CommandLimits) -> Self {
        let set = |n: u64| (n > 0).then_some(n);
        let mib = |n: u64| set(n).map(|n| n.saturating_mul(1024 * 1024));
        Self {
            address_space_bytes: mib(limits.memory_mb),
            cpu_secs: set(limits.cpu_secs),
            processes: set(limits.processes),
            file_size_bytes: mib(limits.file_size_mb),
        }
    }

    /// Each limit with its `--limit` name and the resource it sets.
    fn entries(&self) -> [(&'static str, rustix::process::Resource, Option<u64>); 4] {
        use rustix::process::Resource;
        [
            ("as", Resource::As, self.address_space_bytes),
            ("cpu", Resource::Cpu, self.cpu_secs),
            ("nproc", Resource::Nproc, self.processes),
            ("fsize", Resource::Fsize, self.file_size_bytes),
        ]
    }

    fn set(&mut self, name: &str, value: u64) -> bool {
        let slot = match name {
            "as" => &mut self.address_space_bytes,
            "cpu" => &mut self.cpu_secs,
            "nproc" => &mut self.processes,
            "fsize" => &mut self.file_size_bytes,
            _ => return false,
        };
        *slot = Some(value);
        true
    }

    /// Sets the limits on this process; its children inherit them.
    fn apply(&self) -> std::io::Result<()> {
        for (_, resource, value) in self.entries() {
            let Some(value) = value else { continue };
            let limit = rustix::process::Rlimit {
                current: Some(value),
                maximum: Some(value),
            };
            rustix::process::setrlimit(resource, limit).map_err(std::io::Error::from)?;
        }
        Ok(())
    }
}

impl Policy {
    pub fn new(read_write: Vec<PathBuf>, read_only: Vec<PathBuf>) -> Self {
        Self {
            read_write,
            read_only,
            ..Self::default()
        }
    }

    /// The same policy with TCP restricted to `net`.
    pub fn with_net(mut self, net: Net) -> Self {
        self.net = net;
        self
    }

    /// The same policy with resource limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The same policy, the command running as `user` (see `supervisor`).
    pub fn with_user(mut self, user: Option<Owner>) -> Self {
        self.user = user;
        self
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
        let mut args: Vec<OsString> = rw
            .chain(ro)
            .flat_map(|(flag, path)| [OsString::from(flag), path.as_os_str().to_owned()])
            .collect();
        match &self.net {
            Net::Full => {}
            Net::None => args.extend(["--net".into(), "none".into()]),
            Net::DenyConnect(ports) => {
                for port in ports {
                    args.extend(["--deny-port".into(), port.to_string().into()]);
                }
            }
        }
        for (name, _, value) in self.limits.entries() {
            if let Some(value) = value {
                args.extend(["--limit".into(), format!("{name}={value}").into()]);
            }
        }
        if let Some(user) = self.user {
            args.extend([
                "--uid".into(),
                user.uid.to_string().into(),
                "--gid".into(),
                user.gid.to_string().into(),
            ]);
        }
        args
    }
}

/// What `sandbox-exec` was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    /// Confine this process with an empty policy (and become `user`, when
    /// set) and report whether it held.
    Probe { user: Option<Owner> },
    /// Drop every capability, then become `program` (unconfined): for what
    /// the service starts outside the sandbox while it holds capabilities.
    Unprivileged {
        program: OsString,
        args: Vec<OsString>,
    },
    /// Confine this process, then run `program` under its supervision.
    Exec {
        policy: Policy,
        /// The service's pid: if the supervisor's parent is no longer it,
        /// the service died before the command started.
        parent: Option<u32>,
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
    #[error("--uid and --gid go together: {0} is missing")]
    MissingId(&'static str),
    #[error("{flag}: invalid value {value:?}")]
    BadValue { flag: &'static str, value: String },
}

/// Parses the arguments after `sandbox-exec`: `--probe [--uid N --gid N]`, or
/// `[--rw DIR | --ro DIR | --net none | --deny-port N | --limit NAME=N | --parent PID
/// | --uid N | --gid N]... -- PROGRAM [ARGS...]`.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Invocation, UsageError> {
    let mut args = args.into_iter();
    let mut policy = Policy::default();
    let mut parent = None;
    let mut first = true;
    let mut probe = false;
    let (mut uid, mut gid) = (None, None);
    while let Some(arg) = args.next() {
        let mut value = |flag: &'static str| -> Result<String, UsageError> {
            let raw = args.next().ok_or(UsageError::MissingPath(flag))?;
            raw.into_string().map_err(|raw| UsageError::BadValue {
                flag,
                value: raw.to_string_lossy().into_owned(),
            })
        };
        let bad = |flag: &'static str, value: &str| UsageError::BadValue {
            flag,
            value: value.to_owned(),
        };
        let (flag, list) = match arg.to_str() {
            Some("--probe") if first => {
                probe = true;
                first = false;
                continue;
            }
            Some("--unprivileged") if first => {
                return match (args.next(), args.next()) {
                    (Some(dash), Some(program)) if dash == "--" => Ok(Invocation::Unprivileged {
                        program,
                        args: args.collect(),
                    }),
                    (Some(dash), None) if dash == "--" => Err(UsageError::MissingProgram),
                    (Some(other), _) => Err(UsageError::Unexpected(other)),
                    (None, _) => Err(UsageError::MissingProgram),
                };
            }
            Some(flag @ ("--uid" | "--gid")) => {
                let (name, slot) = if flag == "--uid" {
                    ("--uid", &mut uid)
                } else {
                    ("--gid", &mut gid)
                };
                let v = value(name)?;
                // Never root, nor the "unchanged" value -1.
                let id = v
                    .parse::<u32>()
                    .ok()
                    .filter(|id| *id != 0 && *id != u32::MAX)
                    .ok_or_else(|| bad(name, &v))?;
                *slot = Some(id);
                first = false;
                continue;
            }
            _ if probe => return Err(UsageError::Unexpected(arg)),
            Some("--net") => {
                let v = value("--net")?;
                if v != "none" {
                    return Err(bad("--net", &v));
                }
                policy.net = Net::None;
                first = false;
                continue;
            }
            Some("--deny-port") => {
                let v = value("--deny-port")?;
                let port: u16 = v.parse().map_err(|_| bad("--deny-port", &v))?;
                match &mut policy.net {
                    Net::DenyConnect(ports) => ports.push(port),
                    net => *net = Net::DenyConnect(vec![port]),
                }
                first = false;
                continue;
            }
            Some("--limit") => {
                let v = value("--limit")?;
                let parsed = v
                    .split_once('=')
                    .and_then(|(name, n)| Some((name, n.parse::<u64>().ok()?)));
                match parsed {
                    Some((name, n)) if policy.limits.set(name, n) => {}
                    _ => return Err(bad("--limit", &v)),
                }
                first = false;
                continue;
            }
            Some("--parent") => {
                let v = value("--parent")?;
                parent = Some(v.parse().map_err(|_| bad("--parent", &v))?);
                first = false;
                continue;
            }
            Some("--rw") => ("--rw", &mut policy.read_write),
            Some("--ro") => ("--ro", &mut policy.read_only),
            Some("--") => {
                let program = args.next().ok_or(UsageError::MissingProgram)?;
                policy.user = user_of(uid, gid)?;
                return Ok(Invocation::Exec {
                    policy,
                    parent,
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
    if probe {
        return Ok(Invocation::Probe {
            user: user_of(uid, gid)?,
        });
    }
    Err(UsageError::MissingProgram)
}

/// `--uid` and `--gid` come together or not at all.
fn user_of(uid: Option<u32>, gid: Option<u32>) -> Result<Option<Owner>, UsageError> {
    match (uid, gid) {
        (Some(uid), Some(gid)) => Ok(Some(Owner { uid, gid })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(UsageError::MissingId("--gid")),
        (None, Some(_)) => Err(UsageError::MissingId("--uid")),
    }
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
    let handled_net = match policy.net {
        Net::Full => BitFlags::EMPTY,
        Net::DenyConnect(_) => BitFlags::from(AccessNet::ConnectTcp),
        Net::None => AccessNet::ConnectTcp | AccessNet::BindTcp,
    };
    let mut ruleset = landlock::Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET_ABI))?
        .scope(Scope::from_all(TARGET_ABI))?;
    if !handled_net.is_empty() {
        ruleset = ruleset.handle_access(handled_net & AccessNet::from_all(NET_ABI))?;
    }
    let mut created = ruleset
        .create()?
        .add_rules(rules(
            policy.read_write(),
            AccessFs::from_all(TARGET_ABI),
            true,
        ))?
        .add_rules(rules(
            policy.read_only(),
            AccessFs::from_read(TARGET_ABI),
            false,
        ))?;
    if let Net::DenyConnect(denied) = &policy.net {
        // Landlock lists what is allowed: every port but the denied ones.
        created = created.add_rules(
            (1..=u16::MAX)
                .filter(|port| !denied.contains(port))
                .map(|port| Ok::<_, RulesetError>(NetPort::new(port, AccessNet::ConnectTcp))),
        )?;
    }
    let status = created.restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Enforcement::Full,
        RulesetStatus::PartiallyEnforced => Enforcement::Partial,
        RulesetStatus::NotEnforced => Enforcement::None,
    })
}

/// One rule per path; a path that cannot be opened is an error rather than
/// silently dropped, so a mistyped policy is noticed. With `exact`, a
/// directory must be opened at exactly the path named: a session's
/// directory swapped for a symlink (by another session of the same user)
/// after the service checked it would otherwise grant wherever it points.
fn rules<'a>(
    paths: &'a [PathBuf],
    access: BitFlags<AccessFs>,
    exact: bool,
) -> impl Iterator<Item = Result<PathBeneath<PathFd>, SandboxError>> + 'a {
    paths.iter().map(move |path| {
        let fd = PathFd::new(path).map_err(|e| SandboxError::Path {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        let is_dir = path.is_dir();
        if exact && is_dir {
            use std::os::fd::{AsFd, AsRawFd};
            let opened = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()));
            if opened.as_deref().ok() != Some(path.as_path()) {
                return Err(SandboxError::Path {
                    path: path.clone(),
                    source: std::io::Error::other(
                        "it is not the directory it was (a symlink on the way changed)",
                    ),
                });
            }
        }
        // Directory-only rights on a file are refused; keep the file ones.
        let access = if is_dir {
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
    let given: Vec<OsString> = args.into_iter().collect();
    // Inside the PID namespace the outer `sandbox-exec` made (see `namespace`).
    let inside = given.first().is_some_and(|a| a == namespace::IN_NAMESPACE);
    let given = if inside { &given[1..] } else { &given[..] };
    match parse_args(given.iter().cloned()) {
        Err(e) => {
            eprintln!("claude-agent-http {SUBCOMMAND}: {e}");
            ExitCode::from(2)
        }
        Ok(Invocation::Probe { user }) => probe_self(user),
        Ok(Invocation::Unprivileged { program, args }) => {
            use std::os::unix::process::CommandExt;
            if let Err(e) = supervisor::drop_capabilities() {
                eprintln!("claude-agent-http {SUBCOMMAND}: cannot drop capabilities: {e}");
                return ExitCode::from(126);
            }
            let e = std::process::Command::new(&program).args(&args).exec();
            eprintln!(
                "claude-agent-http {SUBCOMMAND}: cannot run {}: {e}",
                program.to_string_lossy()
            );
            ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            })
        }
        Ok(Invocation::Exec {
            policy,
            parent,
            program,
            args,
        }) => {
            if inside {
                namespace::mount_proc();
            } else if let Some(ended) = namespace::run_outside(given, parent) {
                return ended;
            }
            // An unconfined run is what the service asked for when it chose
            // this launcher after its probe; nothing is printed so the
            // command's output stays its own.
            if let Err(e) = enter(&policy) {
                eprintln!("claude-agent-http {SUBCOMMAND}: cannot confine the command: {e}");
                return ExitCode::from(126);
            }
            // Inside, the parent (the outer process) is not visible; the
            // outer one checked the service.
            let parent = if inside { None } else { parent };
            supervisor::run(&program, &args, &policy.limits, policy.user, parent)
        }
    }
}

/// Confines this process to nothing at all and checks that listing `/` is
/// then refused, so "enforced" means the kernel really denies access. With
/// `user`, it also becomes that user the way a command would.
fn probe_self(user: Option<Owner>) -> ExitCode {
    if let Some(user) = user
        && let Err(e) = supervisor::become_user(user)
    {
        println!(
            "sandbox-exec probe: cannot run commands as user {}: {e}",
            user.uid
        );
        return ExitCode::FAILURE;
    }
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
    net: Net,
    limits: Limits,
    /// Where sessions' private temporary directories are made.
    temp_root: Option<PathBuf>,
    /// The ids users' commands run as, when each user has its own.
    user_ids: Option<std::sync::Arc<UserIds>>,
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
            ..Self::default()
        }
    }

    /// Each session's commands get a private temporary directory under
    /// `root` (their `TMPDIR`), the only scratch space they may write.
    pub fn with_temp_root(mut self, root: PathBuf) -> Self {
        self.temp_root = Some(root);
        self
    }

    /// More directories commands may read and execute from.
    pub fn with_read_only(mut self, dirs: impl IntoIterator<Item = PathBuf>) -> Self {
        for dir in dirs {
            if !self.system_read_only.iter().any(|d| dir.starts_with(d)) {
                self.system_read_only.push(dir);
            }
        }
        self
    }

    /// Each user's commands run as the id `ids` gives it.
    pub fn with_user_ids(mut self, ids: std::sync::Arc<UserIds>) -> Self {
        self.user_ids = Some(ids);
        self
    }

    /// The ids users' commands run as, when each user has its own: their
    /// directories must belong to them (`Workspace::owned_by`).
    pub fn user_ids(&self) -> Option<std::sync::Arc<UserIds>> {
        self.user_ids.clone()
    }

    /// The sandbox `settings` ask for, on a launcher that has passed its probe.
    fn configured(self, settings: &Settings) -> Self {
        let net = match settings.tools.network {
            NetworkMode::Full => Net::Full,
            NetworkMode::None => Net::None,
            NetworkMode::NoLocalServices => {
                let mut ports = vec![settings.api.port];
                if settings.session.storage == StorageKind::Postgresql {
                    ports.push(settings.session.pg_port);
                }
                Net::DenyConnect(ports)
            }
        };
        let protected = [
            settings.user.base_dir.clone(),
            settings.session.sqlite_path.clone(),
        ];
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let toolchains = std::env::var_os("PATH")
            .map(|path| toolchain_dirs(std::env::split_paths(&path), home.as_deref(), &protected))
            .unwrap_or_default();
        Self {
            net,
            limits: Limits::from_settings(&settings.tools.limits),
            ..self
        }
        .with_temp_root(temp_root(&settings.user.base_dir))
        .with_read_only(toolchains)
        .with_read_only(settings.tools.sandbox_read_paths.iter().cloned())
    }

    /// Decides at start-up, from `tools.sandbox`, whether commands are confined.
    /// `on` fails when they cannot be; `auto` then warns once and runs them unconfined.
    pub async fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let mut sandbox = Self::from_tool_settings(&settings.tools).await?;
        if sandbox.is_confined() {
            sandbox = sandbox.configured(settings);
            if let Some(ids) = sandbox.per_user_ids(settings).await? {
                sandbox = sandbox.with_user_ids(ids);
            }
        } else if settings.tools.command_user == CommandUser::PerUser {
            anyhow::bail!(
                "tools.command_user is per_user, but commands are not confined (tools.sandbox), \
                 so they could not be run as their users"
            );
        }
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

    /// Decides, from `tools.command_user`, whether each user's commands run
    /// as an id of its own. `per_user` fails when they cannot; `auto` uses
    /// it when the service runs as root and the kernel lets it switch.
    async fn per_user_ids(
        &self,
        settings: &Settings,
    ) -> anyhow::Result<Option<std::sync::Arc<UserIds>>> {
        let mode = settings.tools.command_user;
        if mode == CommandUser::Service {
            return Ok(None);
        }
        let why_not = match self.launcher.as_deref() {
            None => Some("commands are not confined".to_owned()),
            Some(_) if !can_switch_users() => Some(
                "the service runs neither as root nor with the capabilities to switch users"
                    .to_owned(),
            ),
            Some(exe) => {
                let first = Owner::same_group(settings.tools.command_uids.first);
                match probe(exe, Some(first)).await {
                    Err(e) => Some(e),
                    Ok(_) => unsearchable_ancestor(&settings.user.base_dir).map(|dir| {
                        format!(
                            "{} is not searchable by other users, and the service lacks \
                             CAP_DAC_READ_SEARCH to let commands through",
                            dir.display()
                        )
                    }),
                }
            }
        };
        let ids = match why_not {
            Some(why) => Err(why),
            None => std::path::absolute(&settings.user.base_dir)
                .and_then(|base| {
                    UserIds::open(UserIds::dir_for(&base), settings.tools.command_uids)
                })
                .and_then(|ids| ids.check_can_give().map(|()| ids))
                .map_err(|e| format!("cannot give files under user.base_dir to users' ids: {e}")),
        };
        match (ids, mode) {
            (Ok(ids), _) => {
                tracing::info!(
                    first_uid = settings.tools.command_uids.first,
                    "each user's Bash commands run as a user id of its own, never root"
                );
                Ok(Some(std::sync::Arc::new(ids)))
            }
            (Err(why), CommandUser::PerUser) => Err(anyhow::anyhow!(
                "tools.command_user is per_user but commands cannot run as their users: {why}"
            )),
            (Err(why), _) => {
                if rustix::process::geteuid().is_root() {
                    tracing::warn!(
                        "Bash commands run as root, the service's user: {why}; \
                         see README, \"What a command can do\""
                    );
                } else {
                    tracing::info!("Bash commands run as the service's user: {why}");
                }
                Ok(None)
            }
        }
    }

    async fn from_tool_settings(settings: &ToolSettings) -> anyhow::Result<Self> {
        if settings.sandbox == SandboxMode::Off {
            tracing::info!("Bash commands run unconfined (tools.sandbox: off)");
            return Ok(Self::off());
        }
        let probed = match launcher_path(settings) {
            Ok(exe) => probe(&exe, None).await.map(|level| (exe, level)),
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

    /// The policy for a command in `workspace`: the session's directory, its
    /// private temporary directory and a few devices writable, system
    /// directories and the workspace's extra roots readable.
    pub fn policy(&self, workspace: &Workspace) -> Policy {
        let mut read_write = vec![workspace.root().to_path_buf()];
        read_write.extend(self.temp_dir_path(workspace));
        read_write.extend(self.system_read_write.iter().cloned());
        let mut read_only = self.system_read_only.clone();
        read_only.extend(workspace.extra_roots().map(Path::to_path_buf));
        Policy::new(read_write, read_only)
            .with_net(self.net.clone())
            .with_limits(self.limits)
            .with_user(
                workspace
                    .owner()
                    .or_else(|| self.owner_by_directory(workspace)),
            )
    }

    /// The id a workspace's commands run as when it was opened without one
    /// (every turn's is): its user's, named by the user's directory, so a
    /// command never runs as the service when users have ids of their own.
    fn owner_by_directory(&self, workspace: &Workspace) -> Option<Owner> {
        let ids = self.user_ids.as_ref()?;
        let name = workspace.user_dir().file_name()?.to_str()?;
        ids.owner(&crate::domain::UserId::parse(name).ok()?).ok()
    }

    /// The session's private temporary directory, created (owner-only) when
    /// missing; `None` when commands are unconfined or no root is set.
    pub fn temp_dir(&self, workspace: &Workspace) -> std::io::Result<Option<PathBuf>> {
        let Some(dir) = self.temp_dir_path(workspace) else {
            return Ok(None);
        };
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        if let Some(owner) = workspace.owner() {
            crate::workspace::give_dir_to(&dir, owner)?;
        }
        Ok(Some(dir))
    }

    /// One directory per session root, named by a hash of its path so a
    /// user cannot pick another session's.
    fn temp_dir_path(&self, workspace: &Workspace) -> Option<PathBuf> {
        use std::hash::{Hash, Hasher};
        self.launcher.as_ref()?;
        let root = self.temp_root.as_ref()?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        workspace.root().hash(&mut hasher);
        Some(root.join(format!("{:016x}", hasher.finish())))
    }

    /// A command that runs `program` in `workspace`, confined when a launcher
    /// is set. A confined command runs under the supervisor: stop it with
    /// SIGTERM to the process started here, which then kills everything the
    /// command started (see [`Sandbox::is_supervised`]).
    pub fn command(&self, workspace: &Workspace, program: &str) -> tokio::process::Command {
        match &self.launcher {
            None => unprivileged_command(program),
            Some(exe) => {
                let mut cmd = tokio::process::Command::new(exe);
                cmd.arg(SUBCOMMAND)
                    .args(self.policy(workspace).to_args())
                    .arg("--parent")
                    .arg(std::process::id().to_string())
                    .arg("--")
                    .arg(program);
                cmd
            }
        }
    }

    /// Whether commands run under the `sandbox-exec` supervisor.
    pub fn is_supervised(&self) -> bool {
        self.launcher.is_some()
    }
}

/// Where sessions' temporary directories go, made at start-up so its path
/// can be canonical: sandbox-exec takes absolute paths only (the default
/// base directory is relative) and checks that a writable directory is
/// exactly the one named.
fn temp_root(base_dir: &Path) -> PathBuf {
    let root = base_dir.join(TEMP_DIRS);
    if let Err(e) = std::fs::create_dir_all(&root) {
        tracing::warn!(dir = %root.display(), error = %e, "cannot create the commands' temporary directories");
    }
    root.canonicalize()
        .or_else(|_| std::path::absolute(&root))
        .unwrap_or(root)
}

/// The directories that hold the toolchains on the service's `PATH` and are
/// not system directories: `~/.pyenv` for `~/.pyenv/shims`, `~/.cargo` and
/// `~/.rustup` for `~/.cargo/bin`, `~/.nvm` for an nvm node. Never a home
/// directory itself, nor anything holding the service's data.
fn toolchain_dirs(
    path: impl Iterator<Item = PathBuf>,
    home: Option<&Path>,
    protected: &[PathBuf],
) -> Vec<PathBuf> {
    let protected: Vec<PathBuf> = protected
        .iter()
        .filter_map(|p| p.ancestors().find_map(|a| a.canonicalize().ok()))
        .collect();
    let home = home.and_then(|h| h.canonicalize().ok());
    let mut dirs = Vec::new();
    for entry in path.filter(|p| p.is_absolute()) {
        let Ok(entry) = entry.canonicalize() else {
            continue;
        };
        // The first hidden directory on the way (below the home directory,
        // when the entry is in it) is the toolchain's root.
        let hidden = entry
            .ancestors()
            .filter(|a| {
                a.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    && home
                        .as_deref()
                        .is_none_or(|h| !entry.starts_with(h) || (a.starts_with(h) && *a != h))
            })
            .last()
            .map(Path::to_path_buf);
        let mut wanted = match hidden {
            // ~/.local holds much besides programs: only bin and lib.
            Some(dir) if dir.ends_with(".local") => vec![entry.clone(), dir.join("lib")],
            Some(dir) if dir.ends_with(".cargo") => {
                vec![dir.clone(), dir.with_file_name(".rustup")]
            }
            Some(dir) => vec![dir],
            None => vec![entry.clone()],
        };
        wanted.retain(|d| {
            d.is_dir()
                && d.parent().is_some()
                && home.as_deref() != Some(d.as_path())
                && !home.as_deref().is_some_and(|h| h.starts_with(d))
                && !protected
                    .iter()
                    .any(|p| p.starts_with(d) || d.starts_with(p))
        });
        for dir in wanted {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    dirs
}

/// `tools.sandbox_exe`, else the running executable; absolute either way.
/// The capabilities a service that is not root needs to run commands as
/// users' own ids: switch to them, give them their files, reach and signal
/// what their commands make. The Docker image's entrypoint grants exactly
/// these to `claudeuser` (ambient, so `sandbox-exec` inherits them).
const SWITCH_USERS: rustix::thread::CapabilitySet = rustix::thread::CapabilitySet::SETUID
    .union(rustix::thread::CapabilitySet::SETGID)
    .union(rustix::thread::CapabilitySet::CHOWN)
    .union(rustix::thread::CapabilitySet::DAC_OVERRIDE)
    .union(rustix::thread::CapabilitySet::KILL);

/// Whether this process may run commands as other users (root, or the
/// capabilities above).
fn can_switch_users() -> bool {
    rustix::process::geteuid().is_root()
        || rustix::thread::capabilities(None).is_ok_and(|c| c.effective.contains(SWITCH_USERS))
}

/// Whether this process, not being root, holds capabilities that programs
/// it starts would inherit.
fn holds_capabilities() -> bool {
    !rustix::process::geteuid().is_root()
        && rustix::thread::capabilities(None).is_ok_and(|c| !c.permitted.is_empty())
}

/// A command for a program the service starts outside the sandbox (an MCP
/// server, or Bash when unconfined). A service that holds capabilities
/// starts it through `sandbox-exec --unprivileged`, which drops them all
/// first, so the program gets none of them.
pub fn unprivileged_command(program: impl AsRef<OsStr>) -> tokio::process::Command {
    match holds_capabilities().then(std::env::current_exe) {
        Some(Ok(exe)) => {
            let mut cmd = tokio::process::Command::new(exe);
            cmd.args([
                OsStr::new(SUBCOMMAND),
                OsStr::new("--unprivileged"),
                OsStr::new("--"),
            ])
            .arg(program);
            cmd
        }
        _ => tokio::process::Command::new(program),
    }
}

/// The first directory on the way to `path` (or where it would be made)
/// that a user other than its owner cannot search, when commands could not
/// pass it: the service lacks `CAP_DAC_READ_SEARCH` to hand on to them.
fn unsearchable_ancestor(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let can_pass = rustix::thread::capabilities(None).is_ok_and(|c| {
        c.permitted
            .contains(rustix::thread::CapabilitySet::DAC_READ_SEARCH)
    });
    if can_pass {
        return None;
    }
    let path = std::path::absolute(path).ok()?;
    path.ancestors()
        .filter_map(|dir| Some((dir, std::fs::metadata(dir).ok()?)))
        .find(|(_, meta)| meta.is_dir() && meta.permissions().mode() & 0o001 == 0)
        .map(|(dir, _)| dir.to_path_buf())
}

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
pub async fn probe(exe: &Path, user: Option<Owner>) -> Result<Enforcement, String> {
    let mut args: Vec<OsString> = vec![SUBCOMMAND.into(), "--probe".into()];
    if let Some(user) = user {
        args.extend(Policy::default().with_user(Some(user)).to_args());
    }
    let run = tokio::process::Command::new(exe)
        .args(&args)
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
    use std::ffi::OsStr;

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
                parent: None,
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
                parent: None,
                program: "true".into(),
                args: vec![],
            }
        );
    }

    #[test]
    fn probe_stands_alone() {
        assert_eq!(
            parse_args(os(&["--probe"])).unwrap(),
            Invocation::Probe { user: None }
        );
        assert_eq!(
            parse_args(os(&["--probe", "--uid", "1000", "--gid", "1001"])).unwrap(),
            Invocation::Probe {
                user: Some(Owner {
                    uid: 1000,
                    gid: 1001
                })
            }
        );
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
        // Never root, and both ids or none.
        assert!(matches!(
            parse_args(os(&["--uid", "0", "--gid", "5", "--", "ls"])),
            Err(UsageError::BadValue { flag: "--uid", .. })
        ));
        assert_eq!(
            parse_args(os(&["--uid", "5", "--", "ls"])),
            Err(UsageError::MissingId("--gid"))
        );
        assert!(matches!(
            parse_args(os(&["--probe", "--rw", "/a"])),
            Err(UsageError::Unexpected(_))
        ));
        assert_eq!(parse_args(os(&[])), Err(UsageError::MissingProgram));
        assert_eq!(
            parse_args(os(&["bash"])),
            Err(UsageError::Unexpected("bash".into()))
        );
    }

    #[test]
    fn a_relative_base_dir_still_gives_absolute_policy_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::at(tmp.path()).unwrap();
        let mut settings = Settings::default();
        // Relative to the package, in its (ignored) build directory: the
        // temporary directories' root is made at configuration.
        settings.user.base_dir = PathBuf::from("./target/sandbox-relative-base/claude-users");
        let policy = Sandbox::with_launcher("/x/claude-agent-http".into())
            .configured(&settings)
            .policy(&ws);
        let args = policy.to_args();
        let paths = args
            .iter()
            .skip(1)
            .step_by(2)
            .take(policy.read_write().len());
        for path in paths {
            assert!(Path::new(path).is_absolute(), "{path:?}");
        }
        assert!(
            policy.read_write()[1].ends_with(
                Path::new("sandbox-relative-base/claude-users/.tmp")
                    .join(policy.read_write()[1].file_name().unwrap())
            )
        );
    }

    #[test]
    fn toolchains_under_a_home_directory_are_found_by_their_root() {
        let tmp = tempfile::tempdir().unwrap();
        // (The temporary directory's own name starts with a dot.)
        let home = tmp.path().canonicalize().unwrap().join("home");
        for dir in [
            ".pyenv/shims",
            ".cargo/bin",
            ".rustup",
            ".nvm/versions/node/v20/bin",
            ".local/bin",
            ".local/lib",
            "bin",
            "data/users",
        ] {
            std::fs::create_dir_all(home.join(dir)).unwrap();
        }
        let path = [
            ".pyenv/shims",
            ".cargo/bin",
            ".nvm/versions/node/v20/bin",
            ".local/bin",
            "bin",
            "data/users",
        ]
        .map(|d| home.join(d));
        let found = toolchain_dirs(path.into_iter(), Some(&home), &[home.join("data/users")]);
        let rel: Vec<_> = found
            .iter()
            .map(|d| d.strip_prefix(&home).unwrap().to_path_buf())
            .collect();
        let expected: Vec<PathBuf> = [
            ".pyenv",
            ".cargo",
            ".rustup",
            ".nvm",
            ".local/bin",
            ".local/lib",
            "bin",
        ]
        .map(PathBuf::from)
        .to_vec();
        // Never the home directory itself, nor where users' files live.
        assert_eq!(rel, expected);
    }

    #[test]
    fn policy_round_trips_through_arguments() {
        let policy = Policy::new(vec!["/w/a b".into()], vec!["/usr".into(), "/etc".into()])
            .with_net(Net::DenyConnect(vec![5432, 8000]))
            .with_limits(Limits {
                address_space_bytes: Some(1 << 30),
                cpu_secs: Some(60),
                processes: None,
                file_size_bytes: Some(1 << 20),
            });
        let mut args = policy.to_args();
        args.extend(os(&["--parent", "42", "--", "ls"]));
        assert_eq!(
            parse_args(args).unwrap(),
            Invocation::Exec {
                policy,
                parent: Some(42),
                program: "ls".into(),
                args: vec![],
            }
        );
    }

    #[test]
    fn workspace_policy_writes_only_the_session_dir_its_temp_dir_and_devices() {
        let tmp = tempfile::tempdir().unwrap();
        let user = crate::domain::UserId::parse("alice").unwrap();
        let sub = crate::domain::Subdir::parse("proj").unwrap();
        let extra = tempfile::tempdir().unwrap();
        let ws = Workspace::open(tmp.path(), &user, Some(&sub), true)
            .unwrap()
            .with_extra_roots([extra.path().to_path_buf()]);
        let temp_root = tmp.path().join(".tmp");
        let policy = Sandbox::with_launcher("/x/claude-agent-http".into())
            .with_temp_root(temp_root.clone())
            .policy(&ws);

        assert_eq!(policy.read_write()[0], ws.root());
        assert!(policy.read_write()[1].starts_with(&temp_root));
        let rw: Vec<&Path> = policy.read_write().iter().map(PathBuf::as_path).collect();
        assert!(rw.contains(&Path::new("/dev/null")), "{rw:?}");
        for shared in ["/tmp", "/dev", "/dev/shm"] {
            assert!(!rw.contains(&Path::new(shared)), "{shared} is writable");
        }
        assert!(rw[2..].iter().all(|p| p.starts_with("/dev/")), "{rw:?}");

        let ro = policy.read_only();
        assert!(ro.contains(&PathBuf::from("/usr")) && ro.contains(&PathBuf::from("/etc")));
        assert!(ro.contains(&extra.path().canonicalize().unwrap()));
        assert!(ro.iter().all(|p| p.exists()), "{ro:?}");
        for denied in ["/", "/root", "/home", "/var", "/var/lib", "/tmp", "/dev"] {
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
                .all(|p| !tmp.path().starts_with(p)),
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
        // /tmp is no longer open to commands: data there stays private.
        let tmp = tempfile::tempdir_in("/tmp").unwrap();
        assert_eq!(sandbox.exposing(tmp.path()), None);
        let db = tmp.path().join("not/yet/sessions.db");
        assert_eq!(sandbox.exposing(&db), None);
        assert_eq!(
            sandbox.exposing(Path::new("/usr/share")),
            Some(Path::new("/usr"))
        );
        assert_eq!(sandbox.exposing(Path::new("/root")), None);
        assert_eq!(Sandbox::off().exposing(tmp.path()), None);
    }

    #[tokio::test]
    async fn a_binary_that_is_not_the_service_is_no_launcher() {
        let err = probe(Path::new("/bin/true"), None).await.unwrap_err();
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
