//! The hub's own client for the older HTTP+SSE transport, against the
//! reference server-everything run in its `sse` mode.

#![allow(clippy::unwrap_used)]

mod mcp_common;

use std::collections::BTreeMap;

use claude_agent_http::mcp::{McpHub, McpServerConfig, McpServerState};
use mcp_common::{
    ctx, everything_server, free_port, tool, wait_for_port, wait_for_state, workspace,
};
use serde_json::json;
use tokio::process::{Child, Command};

async fn start_server(port: u16) -> Child {
    let child = Command::new("node")
        .arg(everything_server())
        .arg("sse")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_port(port).await;
    child
}

#[tokio::test]
async fn sse_server_is_listed_called_and_reconnected_after_a_restart() {
    let port = free_port();
    let mut server = start_server(port).await;
    let hub = McpHub::new(BTreeMap::from([(
        "legacy".to_owned(),
        McpServerConfig::Sse {
            url: format!("http://127.0.0.1:{port}/sse"),
            headers: BTreeMap::new(),
        },
    )]));
    let (_tmp, ws) = workspace();

    let echo = tool(&hub, &ws, "mcp__legacy__echo").await;
    let out = echo.call(json!({"message": "over sse"}), &ctx(&ws)).await;
    assert!(!out.is_error, "{}", out.content);
    assert!(out.content.contains("over sse"));
    let add = tool(&hub, &ws, "mcp__legacy__get-sum").await;
    let out = add.call(json!({"a": 2, "b": 5}), &ctx(&ws)).await;
    assert!(out.content.contains('7'), "{}", out.content);

    // The event stream ending is noticed without a call.
    server.kill().await.unwrap();
    wait_for_state(&hub, "legacy", McpServerState::Failed).await;
    let out = echo
        .call(json!({"message": "nobody home"}), &ctx(&ws))
        .await;
    assert!(out.is_error);
    assert!(out.content.contains("unavailable"), "{}", out.content);

    let _server = start_server(port).await;
    let out = echo.call(json!({"message": "back"}), &ctx(&ws)).await;
    assert!(!out.is_error, "{}", out.content);
    assert!(out.content.contains("back"));
    hub.shutdown().await;
}
