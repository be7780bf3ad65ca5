//! The hub against an MCP server over streamable HTTP (built with rmcp's
//! server side), including the server going away and coming back.

#![allow(clippy::unwrap_used)]

mod mcp_common;

use std::collections::BTreeMap;

use claude_agent_http::mcp::{McpHub, McpServerConfig, McpServerState};
use claude_agent_http::tools::ToolSource;
use mcp_common::{HttpServer, ctx, tool, workspace};
use serde_json::json;

fn hub(url: String) -> McpHub {
    McpHub::new(BTreeMap::from([(
        "calc".to_owned(),
        McpServerConfig::Http {
            url,
            headers: BTreeMap::from([("X-Test".into(), "yes".into())]),
        },
    )]))
}

#[tokio::test]
async fn http_server_is_listed_called_and_reconnected_after_an_outage() {
    let server = HttpServer::start(0).await;
    let port = server.port;
    let hub = hub(server.url());
    let (_tmp, ws) = workspace();

    let add = tool(&hub, &ws, "mcp__calc__add").await;
    assert!(add.read_only(), "readOnlyHint maps to read_only");
    assert_eq!(add.description(), "Adds two numbers");
    assert_eq!(add.input_schema()["required"], json!(["a", "b"]));
    let fail = tool(&hub, &ws, "mcp__calc__fail").await;
    assert!(!fail.read_only());
    let status = &hub.status()[0];
    assert_eq!(
        (status.state, status.tools, status.transport.as_str()),
        (McpServerState::Connected, 3, "http")
    );

    let out = add.call(json!({"a": 2, "b": 3}), &ctx(&ws)).await;
    assert!(!out.is_error, "{}", out.content);
    assert_eq!(out.content, "5");

    // The server's own isError comes through as an error result.
    let out = fail.call(json!({}), &ctx(&ws)).await;
    assert!(out.is_error);
    assert_eq!(out.content, "it broke");

    // Input that is not an object never reaches the server.
    let out = add.call(json!([1, 2]), &ctx(&ws)).await;
    assert!(out.is_error);

    server.stop().await;
    let out = add.call(json!({"a": 1, "b": 1}), &ctx(&ws)).await;
    assert!(out.is_error, "{}", out.content);
    assert!(out.content.contains("MCP server 'calc'"), "{}", out.content);
    let status = &hub.status()[0];
    assert_eq!(status.state, McpServerState::Failed, "{status:?}");
    assert!(status.error.is_some());

    let server = HttpServer::start(port).await;
    let out = add.call(json!({"a": 40, "b": 2}), &ctx(&ws)).await;
    assert!(!out.is_error, "{}", out.content);
    assert_eq!(out.content, "42");
    assert_eq!(hub.status()[0].state, McpServerState::Connected);

    hub.shutdown().await;
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_http_server_is_reported_and_offers_no_tools() {
    let hub = hub(format!("http://127.0.0.1:{}/mcp", mcp_common::free_port()));
    let (_tmp, ws) = workspace();
    assert!(hub.tools(&ws).await.is_empty());
    let status = &hub.status()[0];
    assert_eq!(status.state, McpServerState::Failed);
    assert!(
        status.error.as_deref().unwrap().contains("cannot connect"),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_server_that_says_its_tools_changed_is_listed_again() {
    let server = HttpServer::start(0).await;
    let hub = hub(server.url());
    let (_tmp, ws) = workspace();
    let names = |tools: Vec<std::sync::Arc<dyn claude_agent_http::tools::Tool>>| {
        tools
            .iter()
            .map(|t| t.name().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(!names(hub.tools(&ws).await).contains(&"mcp__calc__square".to_owned()));
    let grow = tool(&hub, &ws, "mcp__calc__grow").await;
    let out = grow.call(json!({}), &ctx(&ws)).await;
    assert_eq!(out.content, "grown");
    // The notification travels on its own; the next listing picks it up.
    let mut offered = false;
    for _ in 0..100 {
        if names(hub.tools(&ws).await).contains(&"mcp__calc__square".to_owned()) {
            offered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(offered, "the new tool was never offered");
    let square = tool(&hub, &ws, "mcp__calc__square").await;
    assert_eq!(square.call(json!({"x": 7}), &ctx(&ws)).await.content, "49");
    hub.shutdown().await;
    server.stop().await;
}
