//! Shared pieces of the MCP integration tests: the npm-installed reference
//! server, a small rmcp server over streamable HTTP, and polling helpers.

// Each test crate uses only some of these helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use claude_agent_http::mcp::{McpHub, McpServerState};
use claude_agent_http::tools::{Tool, ToolContext, ToolSource};
use claude_agent_http::workspace::Workspace;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool as McpTool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The entry point of `@modelcontextprotocol/server-everything`, installed by
/// `npm ci --prefix tests/mcp`. Missing means the test setup was skipped,
/// which must fail loudly rather than pass by skipping.
pub fn everything_server() -> PathBuf {
    let entry = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        entry.is_file(),
        "{} is missing: run `npm ci --prefix tests/mcp` before the MCP tests",
        entry.display()
    );
    entry
}

pub fn workspace() -> (tempfile::TempDir, Workspace) {
    let tmp = tempfile::tempdir().unwrap();
    let ws = Workspace::at(tmp.path()).unwrap();
    (tmp, ws)
}

pub fn ctx(ws: &Workspace) -> ToolContext {
    ToolContext::new(ws.clone(), CancellationToken::new())
}

pub async fn tool(hub: &McpHub, ws: &Workspace, name: &str) -> Arc<dyn Tool> {
    let tools = hub.tools(ws).await;
    let names: Vec<String> = tools.iter().map(|t| t.name().to_owned()).collect();
    tools
        .into_iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| {
            panic!(
                "{name} not offered; got {names:?}; status {:?}",
                hub.status()
            )
        })
}

/// Waits until the hub reports `server` in `state`.
pub async fn wait_for_state(hub: &McpHub, server: &str, state: McpServerState) {
    for _ in 0..100 {
        if hub
            .status()
            .iter()
            .any(|s| s.name == server && s.state == state)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{server} never reached {state:?}: {:?}", hub.status());
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing listens on port {port}");
}

/// A small MCP server: `add` (read-only), `fail` (reports an error) and
/// `grow`, which adds `square` to its tools and says its list changed.
#[derive(Clone, Default)]
pub struct Calculator {
    grown: Arc<std::sync::atomic::AtomicBool>,
}

impl ServerHandler for Calculator {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = |value: serde_json::Value| match value {
            serde_json::Value::Object(map) => Arc::new(map),
            _ => unreachable!(),
        };
        let mut add = McpTool::new(
            "add",
            "Adds two numbers",
            schema(json!({
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                "required": ["a", "b"]
            })),
        );
        add.annotations = Some(ToolAnnotations::new().read_only(true));
        let fail = McpTool::new(
            "fail",
            "Always fails",
            schema(json!({"type": "object", "properties": {}})),
        );
        let grow = McpTool::new(
            "grow",
            "Adds a tool",
            schema(json!({"type": "object", "properties": {}})),
        );
        let mut tools = vec![add, fail, grow];
        if self.grown.load(std::sync::atomic::Ordering::Acquire) {
            tools.push(McpTool::new(
                "square",
                "Squares a number",
                schema(json!({"type": "object", "properties": {"x": {"type": "number"}}})),
            ));
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let result = match request.name.as_ref() {
            "add" => {
                let a = args.get("a").and_then(|v| v.as_f64()).unwrap_or(0.0);
                let b = args.get("b").and_then(|v| v.as_f64()).unwrap_or(0.0);
                CallToolResult::success(vec![ContentBlock::text(format!("{}", a + b))])
            }
            "fail" => CallToolResult::error(vec![ContentBlock::text("it broke")]),
            "grow" => {
                self.grown.store(true, std::sync::atomic::Ordering::Release);
                let _ = context.peer.notify_tool_list_changed().await;
                CallToolResult::success(vec![ContentBlock::text("grown")])
            }
            "square" => {
                let x = args.get("x").and_then(|v| v.as_f64()).unwrap_or(0.0);
                CallToolResult::success(vec![ContentBlock::text(format!("{}", x * x))])
            }
            other => return Err(ErrorData::invalid_params(format!("no tool {other}"), None)),
        };
        Ok(CallToolResponse::Complete(result))
    }
}

/// The calculator served over streamable HTTP at `http://127.0.0.1:{port}/mcp`.
pub struct HttpServer {
    pub port: u16,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    pub async fn start(port: u16) -> Self {
        let stop = CancellationToken::new();
        let service = StreamableHttpService::new(
            || Ok(Calculator::default()),
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default().with_cancellation_token(stop.child_token()),
        );
        let app = axum::Router::new().nest_service("/mcp", service);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let shutdown = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
                .unwrap();
        });
        Self { port, stop, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Stops accepting and drops every open connection.
    pub async fn stop(self) {
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}
