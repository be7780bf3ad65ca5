//! The hub against a real third-party MCP server over stdio:
//! `@modelcontextprotocol/server-everything` from npm.

#![allow(clippy::unwrap_used)]

mod mcp_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use claude_agent_http::mcp::{McpHub, McpServerConfig, McpServerState, inherits_env};
use claude_agent_http::tools::ToolSource;
use mcp_common::{ctx, everything_server, tool, wait_for_state, workspace};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

fn hub() -> McpHub {
    McpHub::new(BTreeMap::from([(
        "everything".to_owned(),
        McpServerConfig::Stdio {
            command: "node".into(),
            args: vec![everything_server().display().to_string(), "stdio".into()],
            env: BTreeMap::from([("MCP_TEST_MARKER".into(), "from-config".into())]),
        },
    )]))
}

fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

#[tokio::test]
async fn stdio_server_is_listed_called_and_restarted_after_being_killed() {
    let hub = hub();
    let (_tmp, ws) = workspace();
    assert_eq!(hub.status()[0].state, McpServerState::NotStarted);

    let echo = tool(&hub, &ws, "mcp__everything__echo").await;
    assert_eq!(echo.input_schema()["type"], "object");
    assert!(echo.input_schema()["properties"]["message"].is_object());
    assert!(!echo.description().is_empty());
    let status = &hub.status()[0];
    assert_eq!(status.state, McpServerState::Connected);
    assert_eq!(status.transport, "stdio");
    assert!(status.tools >= 5, "{status:?}");

    let out = echo
        .call(json!({"message": "hello there"}), &ctx(&ws))
        .await;
    assert!(!out.is_error, "{}", out.content);
    assert!(out.content.contains("hello there"), "{}", out.content);

    // Kill the server behind the hub's back.
    let first = hub.pid("everything").expect("a running child");
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    wait_for_state(&hub, "everything", McpServerState::Failed).await;
    let error = hub.status()[0].error.clone().unwrap();
    assert!(error.contains("closed the connection"), "{error}");

    // The same tool object, held by a running turn, restarts it.
    let out = echo.call(json!({"message": "again"}), &ctx(&ws)).await;
    assert!(!out.is_error, "{}", out.content);
    assert!(out.content.contains("again"));
    assert_eq!(hub.status()[0].state, McpServerState::Connected);
    let second = hub.pid("everything").expect("a restarted child");
    assert_ne!(first, second);

    hub.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(second) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(second), "the child outlived shutdown");
    assert_eq!(hub.status()[0].state, McpServerState::NotStarted);
}

#[tokio::test]
async fn stdio_child_gets_config_env_but_no_secrets() {
    let hub = hub();
    let (_tmp, ws) = workspace();
    let get_env = tool(&hub, &ws, "mcp__everything__get-env").await;
    // The server marks it readOnlyHint.
    assert!(get_env.read_only());
    let out = get_env.call(json!({}), &ctx(&ws)).await;
    assert!(!out.is_error, "{}", out.content);
    let env: BTreeMap<String, String> = serde_json::from_str(&out.content).unwrap();
    assert_eq!(
        env.get("MCP_TEST_MARKER").map(String::as_str),
        Some("from-config")
    );
    assert!(env.contains_key("PATH"));
    let leaked: Vec<&String> = env
        .keys()
        .filter(|k| *k != "MCP_TEST_MARKER" && !inherits_env(k.as_ref()))
        .collect();
    assert!(leaked.is_empty(), "secrets reached the child: {leaked:?}");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_long_call_stops_when_the_turn_is_cancelled() {
    let hub = hub();
    let (_tmp, ws) = workspace();
    let slow = tool(&hub, &ws, "mcp__everything__trigger-long-running-operation").await;
    let context = ctx(&ws);
    let cancel = context.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
    });
    let started = Instant::now();
    let out = slow
        .call(json!({"duration": 30, "steps": 3}), &context)
        .await;
    assert!(out.is_error);
    assert!(out.content.contains("cancelled"), "{}", out.content);
    assert!(started.elapsed() < Duration::from_secs(10));
    hub.shutdown().await;
}

#[tokio::test]
async fn a_crashing_server_fails_alone_and_its_stderr_stays_private() {
    let hub = McpHub::new(BTreeMap::from([
        (
            "everything".to_owned(),
            McpServerConfig::Stdio {
                command: "node".into(),
                args: vec![everything_server().display().to_string(), "stdio".into()],
                env: BTreeMap::new(),
            },
        ),
        (
            "crashes".to_owned(),
            McpServerConfig::Stdio {
                command: "node".into(),
                args: vec![
                    "-e".into(),
                    "console.error('boom: no config'); process.exit(3)".into(),
                ],
                env: BTreeMap::new(),
            },
        ),
    ]));
    let (_tmp, ws) = workspace();
    let tools = hub.tools(&ws).await;
    assert!(tools.iter().any(|t| t.name() == "mcp__everything__echo"));
    assert!(!tools.iter().any(|t| t.name().starts_with("mcp__crashes__")));
    let crashed = hub
        .status()
        .into_iter()
        .find(|s| s.name == "crashes")
        .unwrap();
    assert_eq!(crashed.state, McpServerState::Failed);
    // /health shows this without auth: the reason, never the server's stderr.
    let error = crashed.error.as_deref().unwrap();
    assert!(error.contains("exited"), "{crashed:?}");
    assert!(!error.contains("boom"), "{crashed:?}");
    hub.shutdown().await;
}
