//! Bash confinement with the real binary: `claude-agent-http sandbox-exec`
//! on its own, and the Bash tool started through it.
//!
//! Users' directories live under the target's tmp dir, wherever the clone
//! is (under /tmp too: confined commands may not use /tmp). Without Landlock
//! these tests skip with a notice, or fail when `CLAUDE_AGENT_REQUIRE_SANDBOX`
//! is set (CI).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use claude_agent_http::domain::UserId;
use claude_agent_http::sandbox::{self, Enforcement, Sandbox};
use claude_agent_http::tools::{BuiltinTools, Tool, ToolContext, ToolOutput, ToolSource};
use claude_agent_http::workspace::Workspace;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use helpers::{sandbox_level as landlock, test_dir};

const EXE: &str = env!("CARGO_BIN_EXE_claude-agent-http");

/// `{base}/alice` and `{base}/bob`, bob holding `secret.txt`.
struct Users {
    _base: tempfile::TempDir,
    alice: Workspace,
    bob: Workspace,
}

impl Users {
    fn new() -> Self {
        let base = test_dir();
        let open = |name: &str| {
            let user = UserId::parse(name).expect("user id");
            Workspace::open(base.path(), &user, None, true).expect("user directory")
        };
        let (alice, bob) = (open("alice"), open("bob"));
        std::fs::write(bob.root().join("secret.txt"), "bob's secret\n").expect("bob's file");
        Self {
            _base: base,
            alice,
            bob,
        }
    }

    fn bob_secret(&self) -> PathBuf {
        self.bob.root().join("secret.txt")
    }
}

/// Runs `bash -c script` through `sandbox-exec` with alice's policy, in her directory.
fn run_as_alice(users: &Users, script: &str) -> Output {
    run_confined(
        users,
        Sandbox::with_launcher(EXE.into()).policy(&users.alice),
        script,
    )
}

/// Runs `bash -c script` through `sandbox-exec` with `policy`, in alice's directory.
fn run_confined(users: &Users, policy: sandbox::Policy, script: &str) -> Output {
    std::process::Command::new(EXE)
        .arg(sandbox::SUBCOMMAND)
        .args(policy.to_args())
        .args(["--", "bash", "-c", script])
        .current_dir(users.alice.root())
        .output()
        .expect("sandbox-exec runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn sandbox_exec_confines_a_command_to_its_user_dir() {
    if landlock().await.is_none() {
        return;
    }
    let users = Users::new();
    let alice = users.alice.root();

    let out = run_as_alice(&users, "echo mine > note.txt && cat note.txt");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "mine\n");
    assert_eq!(
        std::fs::read_to_string(alice.join("note.txt")).unwrap(),
        "mine\n"
    );

    let secret = users.bob_secret();
    let out = run_as_alice(&users, &format!("cat '{}'", secret.display()));
    assert!(
        !out.status.success(),
        "read bob's file: {}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("bob's secret"));

    let planted = users.bob.root().join("planted.txt");
    let out = run_as_alice(&users, &format!("echo x > '{}'", planted.display()));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("Permission denied"));
    assert!(!planted.exists(), "alice wrote into bob's directory");

    let out = run_as_alice(&users, &format!("ls '{}'", users.bob.root().display()));
    assert!(!out.status.success(), "listed bob's directory");

    let out = run_as_alice(&users, "ls /usr/bin | grep -qx bash && echo found");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "found\n");

    // /tmp is shared by every user's commands: not writable. Scratch files
    // go to the session's private TMPDIR (the Bash tool sets it).
    let out = run_as_alice(&users, "echo scratch > /tmp/cah-sandbox-$$");
    assert!(!out.status.success(), "wrote to the shared /tmp");
    let out = run_as_alice(&users, "ls /dev/shm");
    assert!(!out.status.success(), "listed the shared /dev/shm");

    let out = run_as_alice(&users, "echo quiet > /dev/null && echo ok");
    assert_eq!(text(&out.stdout), "ok\n", "{}", text(&out.stderr));
}

#[tokio::test]
async fn a_confined_command_cannot_reach_its_parent_process() {
    if landlock().await != Some(Enforcement::Full) {
        return;
    }
    let users = Users::new();
    // The parent here is the test; in the service it is the service, whose
    // environment holds the API key. Root keeps CAP_SYS_PTRACE, which lets
    // it read other processes' /proc files even when confined.
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    // The test started the command (in the service, the service does).
    // Inside a PID namespace of its own the command cannot even name it.
    let starter = std::process::id();
    if !root {
        let out = run_as_alice(&users, &format!("cat /proc/{starter}/environ"));
        assert!(!out.status.success(), "read the parent's environment");
        assert!(out.stdout.is_empty());
    }
    let out = run_as_alice(
        &users,
        &format!("kill -0 {starter} && [ \"$(cat /proc/{starter}/comm)\" != bash ]"),
    );
    assert!(!out.status.success(), "signalled the parent");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Operation not permitted") || stderr.contains("No such process"),
        "{stderr}"
    );
}

#[test]
fn sandbox_exec_reports_usage_errors_and_missing_programs() {
    let out = std::process::Command::new(EXE)
        .args([sandbox::SUBCOMMAND, "--rw", "relative", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("absolute"),
        "{}",
        text(&out.stderr)
    );

    let out = std::process::Command::new(EXE)
        .args([sandbox::SUBCOMMAND, "--", "/nonexistent/program"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
}

#[test]
fn sandbox_exec_is_not_in_the_usage() {
    let out = std::process::Command::new(EXE)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        !text(&out.stdout).contains("sandbox"),
        "{}",
        text(&out.stdout)
    );
}

async fn bash_tool(builtins: BuiltinTools, workspace: &Workspace) -> Arc<dyn Tool> {
    builtins
        .tools(workspace)
        .await
        .into_iter()
        .find(|t| t.name() == "Bash")
        .expect("Bash is a built-in")
}

/// The Bash tool with commands started through `sandbox`.
async fn confined_bash(sandbox: Sandbox, workspace: &Workspace) -> Arc<dyn Tool> {
    bash_tool(
        BuiltinTools::with_sandbox(sandbox, claude_agent_http::config::DEFAULT_MAX_FILE_BYTES),
        workspace,
    )
    .await
}

async fn bash(tool: &dyn Tool, workspace: &Workspace, command: &str) -> ToolOutput {
    let ctx = ToolContext::new(workspace.clone(), CancellationToken::new());
    tool.call(json!({ "command": command }), &ctx).await
}

#[tokio::test]
async fn the_bash_tool_cannot_read_another_users_files_when_confined() {
    if landlock().await.is_none() {
        return;
    }
    let users = Users::new();
    let command = format!("cat '{}'", users.bob_secret().display());

    let open = bash_tool(BuiltinTools::new(), &users.alice).await;
    let out = bash(open.as_ref(), &users.alice, &command).await;
    assert_eq!(
        out,
        ToolOutput::ok("bob's secret\n"),
        "unconfined Bash reads it"
    );

    let confined = confined_bash(Sandbox::with_launcher(EXE.into()), &users.alice).await;
    let out = bash(confined.as_ref(), &users.alice, &command).await;
    assert!(out.is_error, "{out:?}");
    assert!(out.content.contains("Permission denied"), "{out:?}");
    assert!(!out.content.contains("bob's secret"));
    assert!(confined.description().contains("out of reach"));

    // Its own directory, HOME and the scrubbed environment are as before.
    let out = bash(
        confined.as_ref(),
        &users.alice,
        "echo hi > made.txt; echo HOME=$HOME; env | grep -c CLAUDE_AGENT || true",
    )
    .await;
    assert_eq!(
        out.content,
        format!("HOME={}\n0\n", users.alice.root().display()),
        "{out:?}"
    );
    assert!(users.alice.root().join("made.txt").exists());
}

/// Whether no live process (zombies aside) has exactly `args` as its
/// command line, within a generous bound. Commands may run in a PID
/// namespace of their own, where the pids they see mean nothing here, so
/// tests find them by command line.
async fn none_left(args: &[&str]) -> bool {
    for _ in 0..100 {
        if !running(args) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Whether a live process (zombies aside) has exactly `args` as its command line.
fn running(args: &[&str]) -> bool {
    let wanted: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .expect("/proc lists processes")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted)
                && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    !stat
                        .rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
                })
        })
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
async fn a_confined_command_is_still_killed_whole_on_timeout_and_interrupt() {
    if landlock().await.is_none() {
        return;
    }
    let users = Users::new();
    let tool = confined_bash(Sandbox::with_launcher(EXE.into()), &users.alice).await;
    let alice = users.alice.clone();

    // `$$` is bash, below the supervisor the tool watches.
    let started = Instant::now();
    let ctx = ToolContext::new(alice.clone(), CancellationToken::new());
    let out = tool
        .call(
            json!({"command": "echo $$ > sh.pid; sleep 3001 & echo $! > bg.pid; sleep 3002", "timeout": 700}),
            &ctx,
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(out.content.contains("timed out after 700 ms"), "{out:?}");
    for file in ["sh.pid", "bg.pid"] {
        read_pid(&alice.root().join(file)).await;
    }
    for sleep in ["3001", "3002"] {
        assert!(
            none_left(&["sleep", sleep]).await,
            "sleep {sleep} survived the timeout"
        );
    }

    let ctx = ToolContext::new(alice.clone(), CancellationToken::new());
    let cancel = ctx.cancel.clone();
    let call = tokio::spawn({
        let tool = tool.clone();
        async move {
            tool.call(
                json!({"command": "echo $$ > int.pid; sleep 3003 & wait"}),
                &ctx,
            )
            .await
        }
    });
    read_pid(&alice.root().join("int.pid")).await;
    cancel.cancel();
    let out = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap()
        .unwrap();
    assert!(out.content.contains("interrupted"), "{out:?}");
    assert!(
        none_left(&["sleep", "3003"]).await,
        "the interrupted shell's sleep survived"
    );
}

#[tokio::test]
async fn processes_that_leave_the_group_do_not_outlive_the_call() {
    if landlock().await.is_none() {
        return;
    }
    let users = Users::new();
    let tool = confined_bash(Sandbox::with_launcher(EXE.into()), &users.alice).await;
    let alice = users.alice.clone();
    let ctx = ToolContext::new(alice.clone(), CancellationToken::new());
    // A new session (setsid), a forked-off daemon (setsid -f) and a plain
    // background job: the command itself returns at once.
    let out = tool
        .call(
            json!({"command": "setsid sleep 1001 & echo $! > a.pid; \
                   setsid -f sh -c 'echo $$ > b.pid; exec sleep 1002'; \
                   nohup sleep 1003 >/dev/null 2>&1 & echo $! > c.pid; \
                   while [ ! -s b.pid ]; do :; done; echo started"}),
            &ctx,
        )
        .await;
    assert_eq!(out, ToolOutput::ok("started\n"));
    for file in ["a.pid", "b.pid", "c.pid"] {
        read_pid(&alice.root().join(file)).await;
    }
    for sleep in ["1001", "1002", "1003"] {
        assert!(
            none_left(&["sleep", sleep]).await,
            "sleep {sleep} outlived the call"
        );
    }
}

#[tokio::test]
async fn a_crashed_service_leaves_no_command_running() {
    if landlock().await.is_none() {
        return;
    }
    let users = Users::new();
    let alice = users.alice.root();
    let policy = Sandbox::with_launcher(EXE.into()).policy(&users.alice);
    let args: Vec<String> = policy
        .to_args()
        .iter()
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    // `sh` stands in for the service: it starts the supervised command and
    // is then killed with SIGKILL, as a crash would.
    let script = format!(
        "'{EXE}' {} {} -- bash -c \"setsid -f sh -c 'echo \\$\\$ > orphan.pid; exec sleep 1004'; exec sleep 1005\" & wait",
        sandbox::SUBCOMMAND,
        args.join(" ")
    );
    let mut service = std::process::Command::new("sh")
        .args(["-c", &script])
        .current_dir(alice)
        .spawn()
        .unwrap();
    read_pid(&alice.join("orphan.pid")).await;
    service.kill().unwrap();
    service.wait().unwrap();
    assert!(
        none_left(&["sleep", "1004"]).await,
        "the command's daemon outlived the service"
    );
}

#[tokio::test]
async fn the_bash_tool_gets_a_private_temporary_directory() {
    if landlock().await.is_none() {
        return;
    }
    let users = Users::new();
    let temp_root = users.alice.root().parent().unwrap().join(".tmp");
    let tool = confined_bash(
        Sandbox::with_launcher(EXE.into()).with_temp_root(temp_root.clone()),
        &users.alice,
    )
    .await;
    let out = bash(
        tool.as_ref(),
        &users.alice,
        "f=$(mktemp) && echo scratch > \"$f\" && cat \"$f\" && echo \"$TMPDIR\"",
    )
    .await;
    assert!(!out.is_error, "{out:?}");
    let mut lines = out.content.lines();
    assert_eq!(lines.next(), Some("scratch"));
    let tmpdir = PathBuf::from(lines.next().unwrap());
    assert!(tmpdir.starts_with(&temp_root), "{tmpdir:?}");
    // Bob's session has another one, which alice's commands cannot reach.
    let out = bash(tool.as_ref(), &users.bob, "echo \"$TMPDIR\"").await;
    let bob_tmp = out.content.trim().to_owned();
    assert_ne!(bob_tmp, tmpdir.display().to_string());
    let out = bash(tool.as_ref(), &users.alice, &format!("ls '{bob_tmp}'")).await;
    assert!(out.is_error, "alice listed bob's TMPDIR: {out:?}");
}

#[tokio::test]
async fn commands_cannot_connect_to_the_services_own_ports() {
    if landlock().await != Some(Enforcement::Full) {
        return;
    }
    let users = Users::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_port = other.local_addr().unwrap().port();
    let policy = || Sandbox::with_launcher(EXE.into()).policy(&users.alice);
    let connect = |p: u16| format!("echo > /dev/tcp/127.0.0.1/{p} && echo connected");

    let denied = policy().with_net(sandbox::Net::DenyConnect(vec![port]));
    let out = run_confined(&users, denied.clone(), &connect(port));
    assert!(!out.status.success(), "reached the protected port");
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    let out = run_confined(&users, denied, &connect(other_port));
    assert_eq!(text(&out.stdout), "connected\n", "{}", text(&out.stderr));

    let none = policy().with_net(sandbox::Net::None);
    let out = run_confined(&users, none, &connect(other_port));
    assert!(!out.status.success(), "connected with network none");

    let full = policy().with_net(sandbox::Net::Full);
    let out = run_confined(&users, full, &connect(port));
    assert_eq!(text(&out.stdout), "connected\n", "{}", text(&out.stderr));
}

#[tokio::test]
async fn commands_run_under_resource_limits() {
    if landlock().await.is_none() {
        return;
    }
    let users = Users::new();
    let limits = sandbox::Limits {
        file_size_bytes: Some(1024 * 1024),
        cpu_secs: Some(1),
        ..sandbox::Limits::default()
    };
    let policy = Sandbox::with_launcher(EXE.into())
        .policy(&users.alice)
        .with_limits(limits);
    let out = run_confined(
        &users,
        policy.clone(),
        "head -c 2000000 /dev/zero > big.bin; echo status=$?",
    );
    assert!(
        text(&out.stdout).contains("status=153"),
        "{}",
        text(&out.stdout)
    );
    let size = std::fs::metadata(users.alice.root().join("big.bin"))
        .unwrap()
        .len();
    assert!(size <= 1024 * 1024, "{size}");
    // A busy loop is ended by its CPU-time limit (SIGXCPU), not left spinning.
    let out = run_confined(&users, policy, "while :; do :; done");
    assert!(!out.status.success());
}

#[tokio::test]
async fn a_session_directory_swapped_for_a_symlink_is_not_granted() {
    if landlock().await.is_none() {
        return;
    }
    let users = Users::new();
    // As if another session of alice's, rooted at her whole directory, had
    // replaced `proj` with a link to bob's directory after the service
    // checked it: the writable path named is not what it opens to.
    let swapped = users.alice.root().join("proj");
    std::os::unix::fs::symlink(users.bob.root(), &swapped).unwrap();
    let system = Sandbox::with_launcher(EXE.into()).policy(&users.alice);
    let policy = sandbox::Policy::new(vec![swapped], system.read_only().to_vec());
    let out = run_confined(
        &users,
        policy,
        &format!("cat '{}'", users.bob_secret().display()),
    );
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot confine"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("bob's secret"));
}

/// Whether the tests run as root, the only case where the service can run
/// each user's commands as an id of its own.
fn running_as_root() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!(
            "NOTICE: skipping: only a service running as root runs commands as users' own ids"
        );
    }
    root
}

/// The file's mode bits and modification time, to show nothing changed.
fn mode_and_mtime(path: &Path) -> (u32, i64) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).expect("the file is there");
    (meta.mode() & 0o7777, meta.mtime())
}

#[tokio::test]
async fn commands_run_as_their_users_own_id_and_change_nothing_outside_its_files() {
    use claude_agent_http::config::CommandUids;
    use claude_agent_http::sandbox::UserIds;
    use claude_agent_http::workspace::Access;
    use std::os::unix::fs::MetadataExt;
    if landlock().await.is_none() || !running_as_root() {
        return;
    }
    let base = test_dir();
    let range = CommandUids {
        first: 3_100_000,
        count: 1_000,
    };
    let ids = Arc::new(UserIds::open(UserIds::dir_for(base.path()), range).unwrap());
    let open = |name: &str| {
        let user = UserId::parse(name).unwrap();
        Workspace::open(base.path(), &user, None, true)
            .unwrap()
            .owned_by(ids.owner(&user).unwrap())
            .unwrap()
    };
    let (alice, bob) = (open("alice"), open("bob"));
    let service_file = base.path().join("service.txt");
    std::fs::write(&service_file, "the service's\n").unwrap();
    let sandbox = Sandbox::with_launcher(EXE.into())
        .with_temp_root(base.path().join(".tmp"))
        .with_user_ids(ids.clone());
    let alice_bash = confined_bash(sandbox.clone(), &alice).await;
    let bob_bash = confined_bash(sandbox, &bob).await;

    let out = bash(bob_bash.as_ref(), &bob, "echo mine > mine.txt").await;
    assert!(!out.is_error, "{out:?}");
    let bobs_file = bob.root().join("mine.txt");
    let bob_id = ids.owner(&UserId::parse("bob").unwrap()).unwrap();
    assert_eq!(std::fs::metadata(&bobs_file).unwrap().uid(), bob_id.uid);

    let alice_id = ids.owner(&UserId::parse("alice").unwrap()).unwrap();
    assert_ne!(alice_id.uid, bob_id.uid);
    let out = bash(alice_bash.as_ref(), &alice, "id -u; id -g; id -G").await;
    let expected = format!("{0}\n{1}\n{1}\n", alice_id.uid, alice_id.gid);
    assert_eq!(out.content, expected, "{out:?}");

    // The attack run's metadata changes, each refused and each target as it was.
    let targets = [
        bob.root().to_path_buf(),
        bobs_file.clone(),
        base.path().to_path_buf(),
        service_file.clone(),
    ];
    let before: Vec<_> = targets.iter().map(|t| mode_and_mtime(t)).collect();
    for target in &targets {
        let t = target.display();
        for command in [
            format!("chmod 000 '{t}'"),
            format!("chmod 4777 '{t}'"),
            format!("chown {}:{} '{t}'", alice_id.uid, alice_id.gid),
            format!("touch -d 2001-01-01 '{t}'"),
            format!("touch '{t}'"),
        ] {
            let out = bash(alice_bash.as_ref(), &alice, &command).await;
            assert!(out.is_error, "{command}: {out:?}");
        }
    }
    let after: Vec<_> = targets.iter().map(|t| mode_and_mtime(t)).collect();
    assert_eq!(before, after);
    assert_eq!(std::fs::metadata(&service_file).unwrap().uid(), 0);
    // Bob's command still reads his file.
    let out = bash(bob_bash.as_ref(), &bob, "cat mine.txt").await;
    assert_eq!(out.content, "mine\n", "{out:?}");

    // A file the service made for alice (as the Write tool does) is hers:
    // her commands can make it executable, run it and change its times.
    let script = alice.root().join("run.sh");
    {
        use std::io::Write;
        let mut opened = alice.open_file(&script, Access::CreateNew).unwrap();
        opened.file.write_all(b"#!/bin/sh\necho ran\n").unwrap();
    }
    assert_eq!(std::fs::metadata(&script).unwrap().uid(), alice_id.uid);
    let out = bash(
        alice_bash.as_ref(),
        &alice,
        "chmod +x run.sh && ./run.sh && touch -d @978307200 run.sh && mkdir -p a/b && echo x > a/b/c",
    )
    .await;
    assert_eq!(out.content, "ran\n", "{out:?}");
    assert_eq!(mode_and_mtime(&script).1, 978_307_200);
}

#[tokio::test]
async fn a_command_sees_no_other_command_line_where_namespaces_are_allowed() {
    if landlock().await.is_none() || !running_as_root() {
        return;
    }
    let users = Users::new();
    let bobs = Sandbox::with_launcher(EXE.into()).policy(&users.bob);
    let mut bob = std::process::Command::new(EXE)
        .arg(sandbox::SUBCOMMAND)
        .args(bobs.to_args())
        .args(["--", "sleep", "1006"])
        .current_dir(users.bob.root())
        .spawn()
        .unwrap();
    // Bob's command is running (seen from here, outside any sandbox).
    let mut started = false;
    for _ in 0..200 {
        if running(&["sleep", "1006"]) {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let out = run_as_alice(
        &users,
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done",
    );
    let _ = bob.kill();
    let _ = bob.wait();
    assert!(started, "bob's command never started");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen = text(&out.stdout);
    assert!(seen.contains("/proc/[0-9]*/cmdline"), "{seen}");
    assert!(
        !seen.contains("sleep 1006"),
        "alice saw bob's command: {seen}"
    );
    // Nothing of the service's side either: only the namespace's own processes.
    for line in seen.lines().filter(|l| !l.is_empty()) {
        assert!(
            line.contains("--in-pid-namespace") || line.contains("/proc/[0-9]*/cmdline"),
            "{line}"
        );
    }
}
