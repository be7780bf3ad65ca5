//! Starting the real application on port 0 against each store, and one
//! helper per endpoint, so tests read as what a client does.

use std::path::PathBuf;
use std::time::Duration;

use claude_agent_http::config::{SandboxMode, Settings, StorageKind};
use claude_agent_http::startup::Application;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The PostgreSQL server tests use, from `TEST_DATABASE_URL`.
pub fn pg_url() -> url::Url {
    let raw = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    url::Url::parse(&raw).expect("TEST_DATABASE_URL is a URL")
}

/// Whether PostgreSQL tests can run. When the server is unreachable they are
/// skipped with a notice, unless `CLAUDE_AGENT_REQUIRE_PG` is set (CI), where
/// they fail.
pub async fn pg_available() -> bool {
    let url = pg_url();
    let addr = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    );
    let reachable = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    if reachable {
        return true;
    }
    if std::env::var_os("CLAUDE_AGENT_REQUIRE_PG").is_some() {
        panic!("PostgreSQL at {addr} is unreachable and CLAUDE_AGENT_REQUIRE_PG is set");
    }
    eprintln!(
        "NOTICE: skipping PostgreSQL test: {addr} unreachable (set CLAUDE_AGENT_REQUIRE_PG=1 to fail instead)"
    );
    false
}

/// How well the kernel confines Bash commands, or `None` when it cannot:
/// sandbox tests then skip with a notice, unless `CLAUDE_AGENT_REQUIRE_SANDBOX`
/// is set (CI), where they fail.
pub async fn sandbox_level() -> Option<claude_agent_http::sandbox::Enforcement> {
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_claude-agent-http"));
    match claude_agent_http::sandbox::probe(exe, None).await {
        Ok(level) => Some(level),
        Err(why) if std::env::var_os("CLAUDE_AGENT_REQUIRE_SANDBOX").is_some() => {
            panic!("the sandbox is unavailable and CLAUDE_AGENT_REQUIRE_SANDBOX is set: {why}")
        }
        Err(why) => {
            eprintln!(
                "NOTICE: skipping sandbox test: {why} (set CLAUDE_AGENT_REQUIRE_SANDBOX=1 to fail instead)"
            );
            None
        }
    }
}

/// A database name no other test uses.
pub fn fresh_db_name() -> String {
    format!("cah_test_{}", uuid::Uuid::new_v4().simple())
}

/// Points the settings' PostgreSQL fields at the test server and `database`.
pub fn use_postgres(settings: &mut Settings, database: &str) {
    let url = pg_url();
    settings.session.storage = StorageKind::Postgresql;
    settings.session.pg_host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    settings.session.pg_port = url.port().unwrap_or(5432);
    settings.session.pg_user = if url.username().is_empty() {
        "postgres".into()
    } else {
        url.username().to_owned()
    };
    settings.session.pg_password =
        claude_agent_http::config::Secret::new(url.password().unwrap_or(""));
    settings.session.pg_database = database.to_owned();
    settings.session.pg_connect_retry_secs = 5;
    settings.session.pg_max_connections = 5;
}

/// Settings for a test: a temp base dir and SQLite file, port 0, no API key,
/// Bash confined by the real binary (required when `CLAUDE_AGENT_REQUIRE_SANDBOX`
/// is set, as in CI; best effort otherwise).
pub fn test_settings(root: &std::path::Path, storage: StorageKind) -> Settings {
    let mut settings = Settings::default();
    settings.api.host = "127.0.0.1".into();
    settings.api.port = 0;
    settings.tools.sandbox_exe = Some(PathBuf::from(env!("CARGO_BIN_EXE_claude-agent-http")));
    if std::env::var_os("CLAUDE_AGENT_REQUIRE_SANDBOX").is_some() {
        settings.tools.sandbox = SandboxMode::On;
    }
    settings.user.base_dir = root.join("users");
    // Never the developer's own ~/.claude/settings.json.
    settings.user.claude_home = Some(root.join("claude-home"));
    settings.session.storage = storage;
    settings.session.sqlite_path = root.join("db/sessions.db");
    if storage == StorageKind::Postgresql {
        use_postgres(&mut settings, &fresh_db_name());
    }
    settings
}

/// A fresh directory for one test, under the build's tmp dir (kept beside
/// the build, so a failed run leaves its files where they can be looked at).
pub fn test_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cah-test-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir")
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Starts the app on `storage` with default test settings; `None` when the
/// backend is PostgreSQL and the server is unreachable outside CI.
pub async fn spawn_app(storage: StorageKind) -> Option<TestApp> {
    spawn_app_with(storage, |_| {}).await
}

pub async fn spawn_app_with(
    storage: StorageKind,
    adjust: impl FnOnce(&mut Settings),
) -> Option<TestApp> {
    if storage == StorageKind::Postgresql && !pg_available().await {
        return None;
    }
    let tmp = test_dir();
    let mut settings = test_settings(tmp.path(), storage);
    adjust(&mut settings);
    let root = tmp.path().to_path_buf();
    Some(start(settings, root, Some(tmp)).await)
}

/// Starts the app with exactly these settings (e.g. a second instance, or a
/// restart on the same files).
pub async fn start(settings: Settings, root: PathBuf, tmp: Option<tempfile::TempDir>) -> TestApp {
    let app = Application::build(settings.clone())
        .await
        .expect("application builds");
    serve(app, settings, root, tmp)
}

/// Starts the app over a store the test opened itself (e.g. with extra pragmas).
pub async fn start_with_store(
    settings: Settings,
    store: claude_agent_http::store::DynStore,
    root: PathBuf,
    tmp: Option<tempfile::TempDir>,
) -> TestApp {
    let app = Application::build_with_store(settings.clone(), store)
        .await
        .expect("application builds");
    serve(app, settings, root, tmp)
}

fn serve(
    app: Application,
    settings: Settings,
    root: PathBuf,
    tmp: Option<tempfile::TempDir>,
) -> TestApp {
    let address = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        client: reqwest::Client::new(),
        settings,
        root,
        _tmp: tmp,
        stop: Some(stop),
        server: Some(server),
    }
}

impl TestApp {
    /// Stops the server gracefully and keeps the temp dir for a restart.
    pub async fn stop(mut self) -> (Settings, PathBuf, Option<tempfile::TempDir>) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
        }
        (self.settings.clone(), self.root.clone(), self._tmp.take())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn create_session(&self, body: Value) -> Response {
        self.client
            .post(self.url("/api/v1/sessions"))
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    /// Creates a session for `user` and returns its JSON; panics unless 201.
    pub async fn new_session(&self, user: &str) -> Value {
        let response = self.create_session(json!({ "user_id": user })).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("json")
    }

    /// Creates a session for `user` and returns its id.
    pub async fn new_session_id(&self, user: &str) -> String {
        self.new_session(user).await["session_id"]
            .as_str()
            .expect("session_id is a string")
            .to_owned()
    }

    pub async fn get_session(&self, id: &str) -> Response {
        self.client
            .get(self.url(&format!("/api/v1/sessions/{id}")))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn list_sessions(&self, user: Option<&str>) -> Response {
        let mut request = self.client.get(self.url("/api/v1/sessions"));
        if let Some(user) = user {
            request = request.query(&[("user_id", user)]);
        }
        request.send().await.expect("request sent")
    }

    pub async fn delete_session(&self, id: &str) -> Response {
        self.client
            .delete(self.url(&format!("/api/v1/sessions/{id}")))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn resume_session(&self, id: &str) -> Response {
        self.client
            .post(self.url(&format!("/api/v1/sessions/{id}/resume")))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn health(&self) -> Response {
        self.client
            .get(self.url("/health"))
            .send()
            .await
            .expect("request sent")
    }
}

/// Asserts an error response: status, contract body and code.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "status for {code}");
    let body: Value = response.json().await.expect("error body is JSON");
    assert_eq!(body["error"], code, "body: {body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "detail missing: {body}"
    );
    body
}

/// Runs `body` once per backend, skipping PostgreSQL where it is unreachable
/// outside CI.
#[macro_export]
macro_rules! on_every_backend {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn memory() {
                $body(claude_agent_http::config::StorageKind::Memory).await;
            }
            #[tokio::test]
            async fn sqlite() {
                $body(claude_agent_http::config::StorageKind::Sqlite).await;
            }
            #[tokio::test]
            async fn postgresql() {
                $body(claude_agent_http::config::StorageKind::Postgresql).await;
            }
        }
    };
}

/// Whether a command's process is alive (zombies aside): the one whose pid
/// in its own PID namespace (commands may get one, where the pids they
/// print mean nothing outside) is `pid` and whose working directory is `cwd`.
pub fn command_alive(pid: u32, cwd: &std::path::Path) -> bool {
    let cwd = cwd.canonicalize().unwrap_or_else(|_| cwd.to_path_buf());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .any(|host| {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{host}/status")) else {
                return false;
            };
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
                    .unwrap_or("")
                    .to_owned()
            };
            field("NSpid:").split_whitespace().last() == Some(pid.to_string().as_str())
                && !field("State:").starts_with('Z')
                && std::fs::read_link(format!("/proc/{host}/cwd")).is_ok_and(|d| d == cwd)
        })
}

/// The tool results (blocks of type `tool_result`) in the messages of the
/// `n`-th request the fake got.
pub fn tool_results_in(fake: &fake_anthropic::FakeAnthropic, n: usize) -> Vec<Value> {
    fake.requests()[n].body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["type"] == "tool_result")
        .collect()
}

/// The tool results in the last request the fake got.
pub fn last_tool_results(fake: &fake_anthropic::FakeAnthropic) -> Vec<Value> {
    tool_results_in(fake, fake.requests().len() - 1)
}

/// The names of the tools a Messages API request body offers.
pub fn tool_names(request: &Value) -> Vec<String> {
    request["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
