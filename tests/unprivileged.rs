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

/// `program args` as the unprivileged user.
fn as_service_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(NOBODY).arg(program);
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
        as_service_user(&self.exe)
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
