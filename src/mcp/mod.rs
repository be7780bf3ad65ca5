//! MCP servers as tool sources: one hub per process connects to each
//! configured server on first use and offers its tools as `mcp__<server>__<tool>`.

mod config;
mod resources;
mod server;
pub mod sse;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rmcp::ServiceError;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde::Serialize;
use serde_json::{Map, Value};

pub use config::{McpServerConfig, collect_servers, inherits_env};

use crate::plugins::PluginConfig;
use crate::sandbox::Sandbox;
use crate::tools::{Tool, ToolContext, ToolOutput, ToolSource};
use crate::workspace::{Access, Workspace};
use server::{Confinement, Observed, ServerSlot};

/// A tool result longer than this is cut: it all goes into the model's
/// context, and a server dumping a whole database would crowd out the turn.
const MAX_RESULT_CHARS: usize = 100_000;
/// Tool names the Messages API accepts: `^[a-zA-Z0-9_-]{1,128}$`.
const MAX_TOOL_NAME_CHARS: usize = 128;

/// A session's own servers stop after this long without a turn.
const SESSION_SERVER_IDLE: Duration = Duration::from_secs(10 * 60);

/// Where a session names its own servers (Claude Code's project scope).
const PROJECT_FILE: &str = ".mcp.json";
/// A `.mcp.json` larger than this is not read.
const MAX_PROJECT_FILE_BYTES: u64 = 1024 * 1024;

/// The MCP servers of this process. Most are shared by all sessions: they
/// are the operator's configuration, and starting one per session would be
/// slow and costly. Stdio servers with `scope: session`, and the stdio
/// servers of a session's own `.mcp.json` when `mcp.project_servers`
/// allows them, run once per session, in its directory and sandbox.
pub struct McpHub {
    servers: BTreeMap<String, Arc<ServerSlot>>,
    per_session: BTreeMap<String, McpServerConfig>,
    sessions: SessionServers,
}

/// The running servers of each session, by its directory.
struct SessionServers {
    sandbox: Sandbox,
    /// Whether a session's `.mcp.json` is read.
    project: bool,
    running: Mutex<HashMap<PathBuf, SessionEntry>>,
}

impl SessionServers {
    fn running(&self) -> MutexGuard<'_, HashMap<PathBuf, SessionEntry>> {
        // Entries are replaced whole; a panic elsewhere leaves none half-made.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct SessionEntry {
    configs: BTreeMap<String, McpServerConfig>,
    slots: BTreeMap<String, Arc<ServerSlot>>,
    used: Instant,
}

/// Connection state of one server, for `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct McpServerStatus {
    pub name: String,
    /// `stdio`, `http` or `sse`.
    pub transport: String,
    pub state: McpServerState,
    /// Why the server is not connected, when it failed: a short reason
    /// ("failed to start: not found", "the server exited or closed the
    /// connection"), never the server's own output or its URL, which can hold
    /// credentials. The full story is in the service's log.
    pub error: Option<String>,
    /// Tools the server offers (0 unless connected).
    pub tools: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum McpServerState {
    Connected,
    NotStarted,
    Failed,
}

impl McpHub {
    /// A hub over exactly these servers. Nothing starts until first use.
    pub fn new(servers: BTreeMap<String, McpServerConfig>) -> Self {
        server::ensure_crypto_provider();
        let (per_session, shared): (BTreeMap<_, _>, BTreeMap<_, _>) =
            servers.into_iter().partition(|(_, config)| {
                matches!(
                    config,
                    McpServerConfig::Stdio {
                        per_session: true,
                        ..
                    }
                )
            });
        Self {
            servers: shared
                .into_iter()
                .map(|(name, config)| (name.clone(), Arc::new(ServerSlot::new(name, config))))
                .collect(),
            per_session,
            sessions: SessionServers {
                sandbox: Sandbox::off(),
                project: false,
                running: Mutex::new(HashMap::new()),
            },
        }
    }

    /// Per-session servers start through `sandbox`, as the session's Bash
    /// commands do; with `project`, a session's own `.mcp.json` adds some.
    /// Project servers run a repository's command, so they are read only
    /// when that command would be confined.
    pub fn with_session_servers(mut self, sandbox: Sandbox, project: bool) -> Self {
        if project && !sandbox.is_confined() {
            tracing::warn!(
                "project MCP servers are allowed but Bash commands are not confined; .mcp.json files are ignored"
            );
        }
        self.sessions.project = project && sandbox.is_confined();
        self.sessions.sandbox = sandbox;
        self
    }

    /// The servers a session in `workspace` runs for itself, by name:
    /// configured `scope: session` ones, then its `.mcp.json` stdio
    /// servers when allowed (configured names win).
    async fn session_configs(&self, workspace: &Workspace) -> BTreeMap<String, McpServerConfig> {
        let mut wanted = self.per_session.clone();
        if !self.sessions.project {
            return wanted;
        }
        // A file read: off the runtime's workers.
        let ws = workspace.clone();
        let project = tokio::task::spawn_blocking(move || project_servers(&ws))
            .await
            .unwrap_or_default();
        for (name, config) in project {
            if self.servers.contains_key(&name) || wanted.contains_key(&name) {
                continue;
            }
            wanted.insert(name, config);
        }
        wanted
    }

    /// The slots of `workspace`'s session servers, started anew when the
    /// wanted set changed; sessions idle too long have theirs stopped.
    async fn session_slots(&self, workspace: &Workspace) -> Vec<Arc<ServerSlot>> {
        // Nothing runs per session: no lock, no file read on the turn's path.
        if self.per_session.is_empty() && !self.sessions.project {
            return Vec::new();
        }
        let wanted = self.session_configs(workspace).await;
        let mut stale: Vec<Arc<ServerSlot>> = Vec::new();
        let slots = {
            let mut running = self.sessions.running();
            let root = workspace.root().to_path_buf();
            running.retain(|dir, entry| {
                let keep = *dir == root || entry.used.elapsed() < SESSION_SERVER_IDLE;
                if !keep {
                    stale.extend(entry.slots.values().cloned());
                }
                keep
            });
            if wanted.is_empty() {
                if let Some(entry) = running.remove(&root) {
                    stale.extend(entry.slots.into_values());
                }
                Vec::new()
            } else {
                let entry = running.entry(root).or_insert_with(|| SessionEntry {
                    configs: BTreeMap::new(),
                    slots: BTreeMap::new(),
                    used: Instant::now(),
                });
                if entry.configs != wanted {
                    stale.extend(std::mem::take(&mut entry.slots).into_values());
                    let confinement = Confinement {
                        sandbox: self.sessions.sandbox.clone(),
                        workspace: workspace.clone(),
                    };
                    entry.slots = wanted
                        .iter()
                        .map(|(name, config)| {
                            let slot = ServerSlot::confined(
                                name.clone(),
                                config.clone(),
                                Some(confinement.clone()),
                            );
                            (name.clone(), Arc::new(slot))
                        })
                        .collect();
                    entry.configs = wanted;
                }
                entry.used = Instant::now();
                entry.slots.values().cloned().collect()
            }
        };
        if !stale.is_empty() {
            tokio::spawn(async move {
                futures::future::join_all(stale.iter().map(|slot| slot.shutdown())).await;
            });
        }
        slots
    }

    /// The pid of a session's running server (for diagnostics and tests).
    pub fn session_pid(&self, session_dir: &Path, server: &str) -> Option<u32> {
        let running = self.sessions.running();
        running.get(session_dir)?.slots.get(server)?.pid()
    }

    /// A hub over the configured servers plus those in each local plugin's
    /// `.mcp.json` (see [`collect_servers`]).
    pub fn from_config(
        configured: &BTreeMap<String, McpServerConfig>,
        plugins: &[PluginConfig],
    ) -> Self {
        Self::new(collect_servers(configured, plugins))
    }

    /// One entry per configured server, in name order.
    pub fn status(&self) -> Vec<McpServerStatus> {
        self.servers
            .values()
            .map(|slot| {
                let (state, error, tools) = match slot.observe() {
                    Observed::NotStarted => (McpServerState::NotStarted, None, 0),
                    Observed::Connected { tools } => (McpServerState::Connected, None, tools),
                    Observed::Failed { error } => (McpServerState::Failed, Some(error), 0),
                };
                McpServerStatus {
                    name: slot.name.clone(),
                    transport: slot.kind().to_owned(),
                    state,
                    error,
                    tools,
                }
            })
            .collect()
    }

    /// The pid of a running stdio server (for diagnostics and tests).
    pub fn pid(&self, server: &str) -> Option<u32> {
        self.servers.get(server).and_then(|slot| slot.pid())
    }

    /// Stops every server, waiting for stdio children to exit. Servers used
    /// after this start again.
    pub async fn shutdown(&self) {
        let sessions: Vec<Arc<ServerSlot>> = self
            .sessions
            .running()
            .drain()
            .flat_map(|(_, entry)| entry.slots.into_values())
            .collect();
        futures::future::join_all(
            self.servers
                .values()
                .chain(sessions.iter())
                .map(|slot| slot.shutdown()),
        )
        .await;
    }
}

/// The stdio servers of the session's own `.mcp.json` (at its directory's
/// root), read through the workspace. Others (http, sse) would have the
/// service itself connect wherever a repository says, and are skipped.
fn project_servers(workspace: &Workspace) -> BTreeMap<String, McpServerConfig> {
    let path = workspace.root().join(PROJECT_FILE);
    let Some(text) = workspace
        .open_file(&path, Access::Read)
        .ok()
        .and_then(|opened| opened.read_text(MAX_PROJECT_FILE_BYTES).ok())
    else {
        return BTreeMap::new();
    };
    let Ok(file) = serde_json::from_str::<config::McpJson>(&text) else {
        tracing::debug!(file = %path.display(), "ignoring a .mcp.json that does not parse");
        return BTreeMap::new();
    };
    file.mcp_servers
        .into_iter()
        .filter_map(|(name, value)| match serde_json::from_value(value) {
            Ok(McpServerConfig::Stdio {
                command, args, env, ..
            }) => Some((
                name,
                McpServerConfig::Stdio {
                    command,
                    args,
                    env,
                    per_session: true,
                },
            )),
            Ok(_) => {
                tracing::debug!(server = %name, "skipping a project MCP server that is not stdio");
                None
            }
            Err(e) => {
                tracing::debug!(server = %name, error = %e, "skipping a project MCP server");
                None
            }
        })
        .collect()
}

#[async_trait]
impl ToolSource for McpHub {
    /// The tools of every server that is (or can now be) connected; a server
    /// that fails to start contributes none and the others are unaffected.
    async fn tools(&self, workspace: &Workspace) -> Vec<Arc<dyn Tool>> {
        let own = self.session_slots(workspace).await;
        let listed = futures::future::join_all(self.servers.values().chain(own.iter()).map(
            |slot| async move {
                let conn = slot.connection(false).await.ok()?;
                conn.refresh_tools().await;
                let tools = conn
                    .tools()
                    .iter()
                    .map(|tool| Arc::new(McpTool::new(slot.clone(), tool)) as Arc<dyn Tool>)
                    .collect::<Vec<_>>();
                Some((tools, conn.has_resources().then(|| slot.clone())))
            },
        ))
        .await;
        let (mut tools, with_resources): (Vec<_>, Vec<_>) = listed.into_iter().flatten().unzip();
        let with_resources: Vec<Arc<ServerSlot>> = with_resources.into_iter().flatten().collect();
        if !with_resources.is_empty() {
            tools.push(resources::tools(with_resources));
        }
        tools.into_iter().flatten().collect()
    }
}

/// One tool of one server, as the model sees it.
pub struct McpTool {
    slot: Arc<ServerSlot>,
    name: String,
    /// The server's own name for it, which may differ from `name` when
    /// characters had to be replaced.
    remote: String,
    description: String,
    schema: Value,
    read_only: bool,
}

impl McpTool {
    fn new(slot: Arc<ServerSlot>, tool: &rmcp::model::Tool) -> Self {
        let description = tool
            .description
            .as_deref()
            .filter(|d| !d.trim().is_empty())
            .map(str::to_owned)
            .or_else(|| tool.title.clone())
            .unwrap_or_else(|| format!("Tool '{}' of MCP server '{}'", tool.name, slot.name));
        Self {
            name: tool_name(&slot.name, &tool.name),
            remote: tool.name.to_string(),
            description,
            schema: Value::Object((*tool.input_schema).clone()),
            read_only: tool
                .annotations
                .as_ref()
                .and_then(|a| a.read_only_hint)
                .unwrap_or(false),
            slot,
        }
    }
}

#[async_trait]
impl Tool for McpTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> String {
        self.description.clone()
    }

    fn input_schema(&self) -> Value {
        self.schema.clone()
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    #[tracing::instrument(skip_all, fields(tool = %self.name))]
    async fn call(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let server = &self.slot.name;
        let arguments = match input {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            _ => return ToolOutput::error("The tool input must be a JSON object."),
        };
        // The model asked for this tool now, so a failed server is retried
        // at once rather than after the pause turn set-up observes.
        let conn = match unless_cancelled(ctx, self.slot.connection(true)).await {
            Ok(conn) => conn,
            Err(cancelled) => return cancelled,
        };
        let conn = match conn {
            Ok(conn) => conn,
            Err(error) => {
                return ToolOutput::error(format!("MCP server '{server}' is unavailable: {error}"));
            }
        };
        conn.refresh_tools().await;
        if !conn.tools().iter().any(|t| t.name == self.remote) {
            return ToolOutput::error(format!(
                "MCP server '{server}' no longer offers the tool '{}'.",
                self.remote
            ));
        }
        let params = CallToolRequestParams::new(self.remote.clone()).with_arguments(arguments);
        let result = match unless_cancelled(ctx, conn.peer.call_tool(params)).await {
            Ok(result) => result,
            Err(cancelled) => return cancelled,
        };
        match result {
            Ok(result) => render(result),
            Err(ServiceError::McpError(e)) => ToolOutput::error(format!(
                "MCP server '{server}' rejected the call: {}",
                e.message
            )),
            Err(e) => {
                tracing::warn!(server = %server, error = %e, "MCP connection failed during a call");
                self.slot
                    .mark_failed(&conn, "the connection failed during a call".into());
                ToolOutput::error(format!(
                    "MCP server '{server}' failed during the call ({e}). It will be restarted on next use."
                ))
            }
        }
    }
}

/// What `work` gives, or the result a cancelled call gets when the turn is
/// cancelled first (a server that hangs must not hold the turn).
async fn unless_cancelled<T>(
    ctx: &ToolContext,
    work: impl std::future::Future<Output = T>,
) -> Result<T, ToolOutput> {
    tokio::select! {
        out = work => Ok(out),
        () = ctx.cancel.cancelled() => Err(ToolOutput::error("The call was cancelled.")),
    }
}

/// `mcp__<server>__<tool>`, with characters the Messages API refuses
/// replaced by `_` and cut to its length limit.
pub fn tool_name(server: &str, tool: &str) -> String {
    format!("mcp__{server}__{tool}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_TOOL_NAME_CHARS)
        .collect()
}

/// Text items joined; other items (images, audio, binary resources) become a
/// one-line summary, since a tool result here is text.
/// Images in one result the model is shown; more are described only.
const MAX_IMAGES: usize = 8;

fn render(result: CallToolResult) -> ToolOutput {
    let mut media = Vec::new();
    let mut parts: Vec<String> = result
        .content
        .iter()
        .map(
            |item| match image_of(item).filter(|_| media.len() < MAX_IMAGES) {
                Some(shown) => {
                    media.extend(shown.media);
                    shown.content
                }
                None => render_item(item),
            },
        )
        .collect();
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        parts.push(structured.to_string());
    }
    let mut content = parts.join("\n");
    if let Some((cut, _)) = content.char_indices().nth(MAX_RESULT_CHARS) {
        content.truncate(cut);
        content.push_str(&format!(
            "\n\n[output truncated after {MAX_RESULT_CHARS} characters]"
        ));
    }
    let mut out = if result.is_error.unwrap_or(false) {
        ToolOutput::error(content)
    } else {
        ToolOutput::ok(content)
    };
    out.media = media;
    out
}

/// An image a server returned, as the model is shown images Read finds:
/// its kind judged by its bytes (never the server's claim), scaled down
/// when too large. `None` for anything else, or bytes that are no image.
fn image_of(item: &rmcp::model::ContentBlock) -> Option<ToolOutput> {
    let value = serde_json::to_value(item).ok()?;
    if value.get("type").and_then(Value::as_str) != Some("image") {
        return None;
    }
    let shown = image_in(
        &decode_base64(value.get("data")?.as_str()?),
        "from the MCP server",
    )?;
    (!shown.is_error).then_some(shown)
}

/// `bytes` shown to the model as an image when they are one (by their
/// magic numbers), scaled down like Read's; `shown` names where from.
fn image_in(bytes: &[u8], shown: &str) -> Option<ToolOutput> {
    let media = crate::media::MediaType::sniff(bytes).filter(|m| m.is_image())?;
    Some(crate::tools::read_media::image(bytes, media, shown))
}

/// Base64 as MCP carries binary content; nothing for text that is not.
fn decode_base64(data: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap_or_default()
}

fn render_item(item: &rmcp::model::ContentBlock) -> String {
    // Going through JSON keeps this independent of rmcp's Rust shapes, which
    // change between releases; the wire format is the MCP spec's.
    let value = serde_json::to_value(item).unwrap_or(Value::Null);
    let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or("");
    match field("type") {
        "text" => field("text").to_owned(),
        "image" | "audio" => format!(
            "[{} content: {}, {} bytes base64]",
            field("type"),
            field("mimeType"),
            field("data").len()
        ),
        "resource" => {
            let resource = value.get("resource").cloned().unwrap_or(Value::Null);
            let get = |name: &str| resource.get(name).and_then(Value::as_str);
            match get("text") {
                Some(text) => format!("[resource {}]\n{text}", get("uri").unwrap_or("")),
                None => format!(
                    "[binary resource {} ({})]",
                    get("uri").unwrap_or(""),
                    get("mimeType").unwrap_or("unknown type")
                ),
            }
        }
        "resource_link" => format!("[resource link: {} {}]", field("uri"), field("name")),
        other => format!("[{other} content omitted]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::ContentBlock;

    #[test]
    fn tool_names_are_prefixed_and_sanitised() {
        assert_eq!(tool_name("everything", "echo"), "mcp__everything__echo");
        assert_eq!(
            tool_name("my.server", "get data"),
            "mcp__my_server__get_data"
        );
        assert_eq!(tool_name("s", &"x".repeat(300)).len(), MAX_TOOL_NAME_CHARS);
    }

    #[test]
    fn results_join_text_and_summarise_the_rest() {
        let mut result = CallToolResult::success(vec![
            ContentBlock::text("one"),
            ContentBlock::image("aGVsbG8=", "image/png"),
            ContentBlock::text("two"),
        ]);
        let out = render(result.clone());
        assert_eq!(
            out,
            ToolOutput::ok("one\n[image content: image/png, 8 bytes base64]\ntwo")
        );
        result.is_error = Some(true);
        assert!(render(result).is_error);
    }

    #[test]
    fn long_results_are_cut() {
        let out = render(CallToolResult::success(vec![ContentBlock::text(
            "é".repeat(MAX_RESULT_CHARS + 10),
        )]));
        assert!(out.content.ends_with("characters]"));
        assert!(out.content.chars().count() < MAX_RESULT_CHARS + 100);
    }

    #[tokio::test]
    async fn a_server_that_cannot_start_is_reported_and_offers_no_tools() {
        let hub = McpHub::new(BTreeMap::from([(
            "ghost".to_owned(),
            McpServerConfig::Stdio {
                command: "/nonexistent/mcp-server".into(),
                args: vec![],
                env: BTreeMap::new(),
                per_session: false,
            },
        )]));
        assert_eq!(hub.status()[0].state, McpServerState::NotStarted);
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::at(tmp.path()).unwrap();
        assert!(hub.tools(&ws).await.is_empty());
        let status = &hub.status()[0];
        assert_eq!(status.state, McpServerState::Failed);
        assert!(
            status
                .error
                .as_deref()
                .unwrap()
                .contains("failed to start: not found"),
            "{status:?}"
        );
    }
}
