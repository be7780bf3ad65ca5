//! The real service binary run as an unprivileged user (nobody, when the
//! tests run as root, since root bypasses the permission checks these tests
//! are about), attacked by commands running as that same user.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fake_anthropic::{FakeAnthropic, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

const NOBODY: [&str; 3] = ["--reuid=65534", "--regid=65534", "--clear-groups"];

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The capabilities the Docker image's entrypoint hands the service so it
/// can run commands as users' own ids (docker/entrypoint.sh).
const ENTRYPOINT_CAPS: &str = "+chown,+dac_override,+kill,+setgid,+setuid";

/// `program args` as the unprivileged user.
fn as_service_user(program: &Path) -> Command {
    as_service_user_with(program, None)
}

/// `program args` as the unprivileged user, holding `caps` (ambient, as
/// the entrypoint gives them) when set.
fn as_service_user_with(program: &Path, caps: Option<&str>) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(NOBODY);
        if let Some(caps) = caps {
            c.arg(format!("--inh-caps=-all,{caps}"))
                .arg(format!("--ambient-caps={caps}"));
        }
        c.arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A directory under the system's temporary directory that the
/// unprivileged user can use, holding a copy of the service binary (the
/// build directory may sit under a home directory it cannot enter).
struct Deployment {
    dir: tempfile::TempDir,
    exe: PathBuf,
}

impl Deployment {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cah-unprivileged-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let exe = dir.path().join("claude-agent-http");
        std::fs::copy(env!("CARGO_BIN_EXE_claude-agent-http"), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
        Self { dir, exe }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start(&self, port: u16, anthropic: &str, sandbox: &str) -> Child {
        self.start_with(port, anthropic, sandbox, None)
    }

    fn start_with(&self, port: u16, anthropic: &str, sandbox: &str, caps: Option<&str>) -> Child {
        as_service_user_with(&self.exe, caps)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("ANTHROPIC_API_KEY", "sk-ant-never-shown")
            .env("ANTHROPIC_BASE_URL", anthropic)
            .env("CLAUDE_AGENT_SESSION_STORAGE", "sqlite")
            .env(
                "CLAUDE_AGENT_SESSION_SQLITE_PATH",
                self.data().join("db/sessions.db"),
            )
            .env("CLAUDE_AGENT_USER_BASE_DIR", self.data().join("users"))
            .env("CLAUDE_AGENT_API_HOST", "127.0.0.1")
            .env("CLAUDE_AGENT_API_PORT", port.to_string())
            .env("CLAUDE_AGENT_TOOLS_SANDBOX", sandbox)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the service starts")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the service answers /health, or panics after a generous bound.
async fn wait_up(port: u16, service: &mut Child) {
    let health = format!("http://127.0.0.1:{port}/health");
    for _ in 0..400 {
        if let Ok(r) = reqwest::get(&health).await
            && r.status() == StatusCode::OK
        {
            return;
        }
        if let Some(status) = service.try_wait().unwrap() {
            panic!("the service exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the service never answered /health");
}

fn stop(mut service: Child) {
    let _ = service.kill();
    let _ = service.wait();
}

#[tokio::test]
async fn processes_of_the_services_user_cannot_read_its_environment() {
    let deployment = Deployment::new();
    let port = free_port();
    let mut service = deployment.start(port, "http://127.0.0.1:9", "off");
    wait_up(port, &mut service).await;
    let environ = format!("/proc/{}/environ", service.id());
    let read = as_service_user(Path::new("/bin/cat"))
        .arg(&environ)
        .output()
        .unwrap();
    stop(service);
    assert!(!read.status.success(), "read the service's environment");
    assert!(!String::from_utf8_lossy(&read.stdout).contains("sk-ant-never-shown"));
}

#[tokio::test]
async fn a_command_that_removes_the_services_access_breaks_nothing() {
    if helpers::sandbox_level().await.is_none() {
        return;
    }
    let fake = FakeAnthropic::start().await;
    let deployment = Deployment::new();
    let port = free_port();
    let mut service = deployment.start(port, &fake.url(), "on");
    wait_up(port, &mut service).await;
    let client = reqwest::Client::new();
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let create = |user: &'static str| {
        let client = client.clone();
        let url = url("/api/v1/sessions");
        async move {
            let r = client
                .post(url)
                .json(&json!({"user_id": user, "subdir": "proj"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            r.json::<Value>().await.unwrap()
        }
    };
    let bob = create("bob").await;
    let bob_dir = PathBuf::from(bob["cwd"].as_str().unwrap());
    std::fs::write(bob_dir.join("notes.txt"), "bob's notes\n").unwrap();
    let alice = create("alice").await;

    // Alice's command takes the service's access away from bob's
    // directory, the users' root and the database directory.
    let users = deployment.data().join("users");
    let db_dir = deployment.data().join("db");
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": format!(
            "chmod 000 '{}' '{}' '{}' '{}'",
            bob_dir.display(),
            bob_dir.parent().unwrap().display(),
            users.display(),
            db_dir.display()
        )}),
    ));
    fake.push(Reply::text("done"));
    let chat = |id: String, message: &'static str| {
        let client = client.clone();
        let url = url("/api/v1/chat");
        async move {
            client
                .post(url)
                .json(&json!({"session_id": id, "message": message}))
                .send()
                .await
                .unwrap()
        }
    };
    let r = chat(alice["session_id"].as_str().unwrap().to_owned(), "break it").await;
    assert_eq!(r.status(), StatusCode::OK);

    // Bob's next turn still reads his file, and the service restarts.
    fake.push(Reply::tool_use("Read", json!({"file_path": "notes.txt"})));
    fake.push(Reply::text("read it"));
    let r = chat(bob["session_id"].as_str().unwrap().to_owned(), "read").await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    let last = fake.requests().last().unwrap().body["messages"].clone();
    assert!(last.to_string().contains("bob's notes"), "{last}");

    stop(service);
    let mut service = deployment.start(port, &fake.url(), "on");
    wait_up(port, &mut service).await;
    let r = client
        .get(url(&format!(
            "/api/v1/sessions/{}",
            bob["session_id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    stop(service);
    assert_eq!(r.status(), StatusCode::OK);
}

/// The service as the unprivileged user holding the entrypoint's
/// capabilities, `tools.sandbox` as given, answering on the returned port.
async fn started_with_entrypoint_caps(sandbox: &str) -> (FakeAnthropic, Deployment, u16, Child) {
    let fake = FakeAnthropic::start().await;
    let deployment = Deployment::new();
    let port = free_port();
    let mut service = deployment.start_with(port, &fake.url(), sandbox, Some(ENTRYPOINT_CAPS));
    wait_up(port, &mut service).await;
    (fake, deployment, port, service)
}

/// `POST /api/v1/sessions` for `user` in `subdir` `proj`.
async fn create_session(port: u16, user: &str) -> Value {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/sessions"))
        .json(&json!({"user_id": user, "subdir": "proj"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.unwrap()
}

/// One chat turn; panics unless it answers 200.
async fn chat(port: u16, session: &Value, message: &str) {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/chat"))
        .json(&json!({"session_id": session["session_id"], "message": message}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
}

#[tokio::test]
async fn the_docker_images_capabilities_let_an_unprivileged_service_run_commands_as_users() {
    use std::os::unix::fs::MetadataExt;
    if helpers::sandbox_level().await.is_none() {
        return;
    }
    if !is_root() {
        eprintln!("NOTICE: skipping: only root can hand capabilities to the service's user");
        return;
    }
    let (fake, deployment, port, service) = started_with_entrypoint_caps("on").await;
    let bob = create_session(port, "bob").await;
    let bob_dir = PathBuf::from(bob["cwd"].as_str().unwrap());
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "echo notes > notes.txt"}),
    ));
    fake.push(Reply::text("saved"));
    chat(port, &bob, "save").await;

    let alice = create_session(port, "alice").await;
    let alice_dir = PathBuf::from(alice["cwd"].as_str().unwrap());
    let db_dir = deployment.data().join("db");
    let modes = || {
        [&bob_dir, &bob_dir.join("notes.txt"), &db_dir]
            .map(|p| std::fs::metadata(p).unwrap().mode())
    };
    let before = modes();
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "id -u; grep CapEff /proc/self/status; echo draft > draft.txt"}),
    ));
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": format!(
            "chmod 000 '{}' '{}/notes.txt' '{}'",
            bob_dir.display(),
            bob_dir.display(),
            db_dir.display()
        )}),
    ));
    // The service's own tools still change a file the command made.
    fake.push(Reply::tool_use("Read", json!({"file_path": "draft.txt"})));
    fake.push(Reply::tool_use(
        "Edit",
        json!({"file_path": "draft.txt", "old_string": "draft", "new_string": "final"}),
    ));
    fake.push(Reply::text("done"));
    chat(port, &alice, "work").await;
    let results = helpers::last_tool_results(&fake);
    stop(service);

    let out = results[0]["content"].as_str().unwrap();
    let uid: u32 = out.lines().next().unwrap().parse().unwrap();
    assert!(uid != 0 && uid != 65534, "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert_eq!(std::fs::metadata(&alice_dir).unwrap().uid(), uid);
    assert_eq!(results[1]["is_error"], true, "{}", results[1]);
    assert_eq!(modes(), before);
    assert_ne!(results[3]["is_error"], true, "{}", results[3]);
    assert_eq!(
        std::fs::read_to_string(alice_dir.join("draft.txt")).unwrap(),
        "final\n"
    );
}

#[tokio::test]
async fn unconfined_commands_of_a_service_holding_capabilities_get_none() {
    if !is_root() {
        eprintln!("NOTICE: skipping: only root can hand capabilities to the service's user");
        return;
    }
    let (fake, _deployment, port, service) = started_with_entrypoint_caps("off").await;
    let alice = create_session(port, "alice").await;
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "id -u; grep -E 'Cap(Eff|Prm|Amb)' /proc/self/status"}),
    ));
    fake.push(Reply::text("done"));
    chat(port, &alice, "look").await;
    let results = helpers::last_tool_results(&fake);
    stop(service);
    let out = results[0]["content"].as_str().unwrap();
    assert!(out.starts_with("65534\n"), "{out}");
    for set in ["CapEff", "CapPrm", "CapAmb"] {
        assert!(out.contains(&format!("{set}:\t0000000000000000")), "{out}");
    }
}
