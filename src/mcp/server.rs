//! One configured MCP server and its connection: started on first use,
//! watched for death, restarted on the next use after a failure.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use process_wrap::tokio::{CommandWrap, ProcessGroup};
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::handler::client::ClientHandler;
use rmcp::model::{ClientCapabilities, ClientConfig, Implementation, Tool as ServerTool};
use rmcp::service::{ClientInitializeError, NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::TokioChildProcess;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{Peer, RoleClient, ServiceExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::ChildStderr;

use super::config::{McpServerConfig, inherits_env};
use super::sse::{SseError, SseTransport};
use crate::sandbox::Sandbox;
use crate::workspace::Workspace;

/// How long a server gets to start, initialise and list its tools.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed start, turn set-up does not try again for this long: a
/// server that hangs on connect would otherwise add its whole connect timeout
/// to every turn. A call to one of its tools always retries at once.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// Lines of a stdio server's stderr kept to explain why it died.
const STDERR_LINES: usize = 20;

/// The client side of a connection: who we are, and a note that the server
/// said its tools changed (`notifications/tools/list_changed`).
#[derive(Clone)]
struct Client {
    info: ClientConfig,
    tools_changed: Arc<AtomicBool>,
}

impl ClientHandler for Client {
    fn get_info(&self) -> ClientConfig {
        self.info.clone()
    }

    fn on_tool_list_changed(
        &self,
        _context: NotificationContext<RoleClient>,
    ) -> impl Future<Output = ()> + Send + '_ {
        self.tools_changed.store(true, Ordering::Release);
        std::future::ready(())
    }
}

/// A live connection: the rmcp client, the tools the server lists (again
/// after it says they changed) and, for stdio, the child's pid.
pub(crate) struct Connection {
    /// Kept so shutdown can close it and wait for the child to exit; taken then.
    service: tokio::sync::Mutex<Option<RunningService<RoleClient, Client>>>,
    pub(crate) peer: Peer<RoleClient>,
    tools: Mutex<Arc<Vec<ServerTool>>>,
    tools_changed: Arc<AtomicBool>,
    pub(crate) pid: Option<u32>,
    stderr: Option<StderrTail>,
}

impl Connection {
    /// The server's tools as last listed.
    pub(crate) fn tools(&self) -> Arc<Vec<ServerTool>> {
        self.tools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Lists the tools again when the server said they changed; a failed
    /// listing keeps the old list and tries again next time.
    pub(crate) async fn refresh_tools(&self) {
        if !self.tools_changed.swap(false, Ordering::AcqRel) {
            return;
        }
        match self.peer.list_all_tools().await {
            Ok(tools) => {
                *self.tools.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(tools);
            }
            Err(e) => {
                tracing::warn!(error = %e, "listing an MCP server's changed tools failed");
                self.tools_changed.store(true, Ordering::Release);
            }
        }
    }

    /// rmcp's service loop ends when the transport ends (child exit, stream
    /// closed), dropping its side of the channel the peer writes to.
    pub(crate) fn is_closed(&self) -> bool {
        self.peer.is_transport_closed()
    }

    /// Whether the server said, when it connected, that it offers resources.
    pub(crate) fn has_resources(&self) -> bool {
        self.peer
            .peer_info()
            .is_some_and(|info| info.capabilities.resources.is_some())
    }

    /// What may be shown to anyone: never the server's stderr.
    const CLOSED: &'static str = "the server exited or closed the connection";

    /// For the log: with the server's last words.
    fn closed_detail(&self) -> String {
        with_stderr(Self::CLOSED.into(), self.stderr.as_ref())
    }

    async fn close(&self) {
        let service = self.service.lock().await.take();
        if let Some(service) = service
            && let Err(e) = service.cancel().await
        {
            tracing::warn!(error = %e, "MCP client task failed while closing");
        }
    }
}

enum Link {
    NotStarted,
    Up(Arc<Connection>),
    Failed { error: String, at: Instant },
}

/// What `/health` shows for one server.
pub(crate) enum Observed {
    NotStarted,
    Connected { tools: usize },
    Failed { error: String },
}

/// Where a per-session stdio server runs: in its session's directory,
/// started through the sandbox that session's Bash commands use (as its
/// user's id, with its environment and temporary directory).
#[derive(Clone)]
pub(crate) struct Confinement {
    pub(crate) sandbox: Sandbox,
    pub(crate) workspace: Workspace,
}

pub(crate) struct ServerSlot {
    pub(crate) name: String,
    config: McpServerConfig,
    confinement: Option<Confinement>,
    link: Mutex<Link>,
    /// Held across a connect so concurrent turns wait for one start instead
    /// of each spawning their own child.
    connecting: tokio::sync::Mutex<()>,
}

impl ServerSlot {
    pub(crate) fn new(name: String, config: McpServerConfig) -> Self {
        Self::confined(name, config, None)
    }

    /// A server that runs inside `confinement`, when set.
    pub(crate) fn confined(
        name: String,
        config: McpServerConfig,
        confinement: Option<Confinement>,
    ) -> Self {
        Self {
            name,
            config,
            confinement,
            link: Mutex::new(Link::NotStarted),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    fn link(&self) -> MutexGuard<'_, Link> {
        // The guarded value is replaced whole, never left half-written, so a
        // panic elsewhere cannot leave it inconsistent.
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live(&self) -> Option<Arc<Connection>> {
        match &*self.link() {
            Link::Up(conn) if !conn.is_closed() => Some(conn.clone()),
            _ => None,
        }
    }

    pub(crate) fn observe(&self) -> Observed {
        match &*self.link() {
            Link::NotStarted => Observed::NotStarted,
            Link::Up(conn) if conn.is_closed() => Observed::Failed {
                error: Connection::CLOSED.into(),
            },
            Link::Up(conn) => Observed::Connected {
                tools: conn.tools().len(),
            },
            Link::Failed { error, .. } => Observed::Failed {
                error: error.clone(),
            },
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        self.config.kind()
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.live().and_then(|conn| conn.pid)
    }

    /// The live connection, starting (or restarting) the server if needed.
    /// `retry_now` skips the pause after a failed start.
    pub(crate) async fn connection(&self, retry_now: bool) -> Result<Arc<Connection>, String> {
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let _gate = self.connecting.lock().await;
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let dead = match &*self.link() {
            Link::Failed { error, at } if !retry_now && at.elapsed() < RETRY_AFTER => {
                return Err(error.clone());
            }
            Link::Up(conn) => Some(conn.clone()),
            _ => None,
        };
        if let Some(dead) = dead {
            tracing::warn!(server = %self.name, reason = %dead.closed_detail(), "MCP server connection lost; restarting");
            dead.close().await;
        }

        let started = tokio::time::timeout(
            CONNECT_TIMEOUT,
            connect(&self.config, self.confinement.as_ref()),
        )
        .await;
        let result = match started {
            Ok(result) => result,
            Err(_) => Err(Failure::plain(format!(
                "did not finish starting within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))),
        };
        match result {
            Ok(conn) => {
                tracing::info!(server = %self.name, transport = self.config.kind(), tools = conn.tools().len(), "MCP server connected");
                let conn = Arc::new(conn);
                *self.link() = Link::Up(conn.clone());
                Ok(conn)
            }
            Err(Failure { reason, detail }) => {
                tracing::warn!(server = %self.name, transport = self.config.kind(), error = %detail, "MCP server failed to start");
                *self.link() = Link::Failed {
                    error: reason.clone(),
                    at: Instant::now(),
                };
                Err(reason)
            }
        }
    }

    /// Records that `conn` broke during a call, so the next use restarts the
    /// server, and closes it in the background (a stdio child is killed).
    /// `error` is shown on `/health`: say what happened, not what the server said.
    pub(crate) fn mark_failed(&self, conn: &Arc<Connection>, error: String) {
        {
            let mut link = self.link();
            if !matches!(&*link, Link::Up(current) if Arc::ptr_eq(current, conn)) {
                return;
            }
            *link = Link::Failed {
                error,
                at: Instant::now(),
            };
        }
        let conn = conn.clone();
        tokio::spawn(async move { conn.close().await });
    }

    /// Closes the connection, if any, and waits for a stdio child to exit.
    pub(crate) async fn shutdown(&self) {
        let _gate = self.connecting.lock().await;
        let old = std::mem::replace(&mut *self.link(), Link::NotStarted);
        if let Link::Up(conn) = old {
            conn.close().await;
        }
    }
}

/// Why a server could not be reached. Only `reason` leaves the process
/// (`/health` needs no auth; tool errors reach users and the model), so it
/// never holds the server's stderr, its URL or a library's message, any of
/// which can carry a password. `detail` has them, for the operator's log.
struct Failure {
    reason: String,
    detail: String,
}

impl Failure {
    fn new(reason: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            detail: detail.into(),
        }
    }

    /// A failure whose description holds nothing of the server's.
    fn plain(reason: String) -> Self {
        Self::new(reason.clone(), reason)
    }
}

async fn connect(
    config: &McpServerConfig,
    confinement: Option<&Confinement>,
) -> Result<Connection, Failure> {
    let tools_changed = Arc::new(AtomicBool::new(false));
    let info = Client {
        info: ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("claude-agent-http", env!("CARGO_PKG_VERSION")),
        ),
        tools_changed: tools_changed.clone(),
    };
    let (service, pid, stderr) = match config {
        McpServerConfig::Stdio {
            command, args, env, ..
        } => {
            let mut cmd = match confinement {
                None => {
                    let mut cmd = crate::sandbox::unprivileged_command(command);
                    cmd.env_clear()
                        .envs(std::env::vars_os().filter(|(k, _)| inherits_env(k)));
                    cmd
                }
                Some(Confinement { sandbox, workspace }) => {
                    let temp = sandbox.temp_dir(workspace).map_err(|e| {
                        Failure::plain(format!("cannot prepare its temporary directory: {e}"))
                    })?;
                    let mut cmd = sandbox.command(workspace, command);
                    cmd.env_clear()
                        .envs(crate::tools::bash::child_env(
                            std::env::vars_os().filter_map(|(k, v)| {
                                Some((k.into_string().ok()?, v.into_string().ok()?))
                            }),
                            workspace.root(),
                            workspace.cwd(),
                        ))
                        .envs(temp.map(|dir| ("TMPDIR", dir)))
                        .current_dir(workspace.cwd());
                    cmd
                }
            };
            cmd.args(args)
                .envs(env)
                // A backstop for when the hub is dropped outside a runtime and
                // rmcp's own async kill cannot run.
                .kill_on_drop(true);
            let mut wrapped = CommandWrap::from(cmd);
            // Its own process group, so killing it also kills what a wrapper
            // such as `npx` or `sh -c` started.
            wrapped.wrap(ProcessGroup::leader());
            let (transport, stderr) = TokioChildProcess::builder(wrapped)
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| {
                    Failure::new(
                        format!("failed to start: {}", io_reason(&e)),
                        format!("cannot start `{command}`: {e}"),
                    )
                })?;
            let pid = transport.id();
            let tail = StderrTail::default();
            if let Some(stderr) = stderr {
                tail.follow(stderr);
            }
            match info.serve(transport).await {
                Ok(service) => (service, pid, Some(tail)),
                Err(e) => {
                    // Let the reader catch the child's last words.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return Err(Failure::new(
                        "initialisation failed: the server exited or does not speak MCP",
                        with_stderr(format!("initialisation failed: {e}"), Some(&tail)),
                    ));
                }
            }
        }
        McpServerConfig::Http { url, headers } => {
            ensure_crypto_provider();
            let config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
                .custom_headers(http_headers(headers).map_err(Failure::plain)?);
            let transport = StreamableHttpClientTransport::from_config(config);
            let service = info.serve(transport).await.map_err(|e| {
                Failure::new(
                    unreachable_reason(&e),
                    format!("cannot connect to {url}: {e}"),
                )
            })?;
            (service, None, None)
        }
        McpServerConfig::Sse { url, headers } => {
            let transport = SseTransport::connect(url, headers).await.map_err(|e| {
                Failure::new(
                    unreachable_reason(&e),
                    format!("cannot connect to {url}: {e}"),
                )
            })?;
            let service = info.serve(transport).await.map_err(|e| {
                Failure::new(
                    "initialisation failed: the server does not speak MCP",
                    format!("cannot initialise {url}: {e}"),
                )
            })?;
            (service, None, None)
        }
    };
    // Changes announced before this first list are in it.
    tools_changed.store(false, Ordering::Release);
    let tools = match service.peer().list_all_tools().await {
        Ok(tools) => tools,
        Err(e) => {
            let detail = with_stderr(format!("listing tools failed: {e}"), stderr.as_ref());
            let _ = service.cancel().await;
            return Err(Failure::new("listing tools failed", detail));
        }
    };
    Ok(Connection {
        peer: service.peer().clone(),
        service: tokio::sync::Mutex::new(Some(service)),
        tools: Mutex::new(Arc::new(tools)),
        tools_changed,
        pid,
        stderr,
    })
}

/// A safe summary of why a network connection failed: the I/O error's kind
/// ("connection refused") or the HTTP status, found in the error's sources.
fn unreachable_reason(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return format!("cannot connect: {}", io_reason(io));
        }
        if let Some(SseError::Status { status, .. }) = e.downcast_ref::<SseError>() {
            return format!("the server answered HTTP {status}");
        }
        // rmcp does not expose this variant's transport error as its source.
        if let Some(ClientInitializeError::TransportError { error, .. }) = e.downcast_ref() {
            cause = Some(error);
            continue;
        }
        cause = e.source();
    }
    // rmcp's HTTP transport keeps its reqwest error (another reqwest major
    // than ours, so it cannot be downcast) out of the source chain; the I/O
    // error's kind still shows in its Debug form. Only these fixed words leave.
    let debug = format!("{error:?}");
    let known = [
        ("ConnectionRefused", "connection refused"),
        ("ConnectionReset", "connection reset"),
        ("TimedOut", "timed out"),
        ("HostUnreachable", "host unreachable"),
        ("NetworkUnreachable", "network unreachable"),
        ("dns error", "host name not found"),
    ];
    match known.iter().find(|(needle, _)| debug.contains(needle)) {
        Some((_, reason)) => format!("cannot connect: {reason}"),
        None => "cannot connect: the server did not answer as an MCP server".into(),
    }
}

fn io_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "not found".into(),
        kind => kind.to_string(),
    }
}

/// rmcp's reqwest is built without a TLS crypto provider so that only one
/// (ring, which reqwest 0.12 already uses) is compiled in; it must be the
/// process default before rmcp builds its client.
pub(crate) fn ensure_crypto_provider() {
    // Err means one is installed already, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn http_headers(
    headers: &BTreeMap<String, String>,
) -> Result<HashMap<HeaderName, HeaderValue>, String> {
    headers
        .iter()
        .map(|(name, value)| {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name '{name}'"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value for header '{name}'"))?;
            Ok((name, value))
        })
        .collect()
}

/// The last lines a stdio server wrote to stderr, shown when it fails: a
/// missing module or a bad flag is explained there and nowhere else.
#[derive(Clone, Default)]
struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    fn follow(&self, stderr: ChildStderr) {
        let tail = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "mcp_server_stderr", "{line}");
                let mut kept = tail.0.lock().unwrap_or_else(PoisonError::into_inner);
                if kept.len() == STDERR_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
    }

    fn text(&self) -> String {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn with_stderr(message: String, tail: Option<&StderrTail>) -> String {
    match tail.map(StderrTail::text) {
        Some(text) if !text.trim().is_empty() => format!("{message}; stderr:\n{text}"),
        _ => message,
    }
}
