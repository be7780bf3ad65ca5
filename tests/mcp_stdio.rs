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
            per_session: false,
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
                per_session: false,
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
                per_session: false,
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

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

/// alice's and bob's directories under one base, given to their own ids
/// when the tests run as root (as the service does then), and the sandbox
/// their commands and per-session servers run in. The test servers live in
/// the repository, which confined processes may otherwise not read.
struct Sessions {
    _base: tempfile::TempDir,
    alice: claude_agent_http::workspace::Workspace,
    bob: claude_agent_http::workspace::Workspace,
    sandbox: claude_agent_http::sandbox::Sandbox,
}

impl Sessions {
    fn new() -> Self {
        use claude_agent_http::config::CommandUids;
        use claude_agent_http::domain::UserId;
        use claude_agent_http::sandbox::{Sandbox, UserIds};
        use claude_agent_http::workspace::Workspace;
        let base = helpers::test_dir();
        let ids = rustix::process::geteuid().is_root().then(|| {
            let range = CommandUids {
                first: 3_300_000,
                count: 1_000,
            };
            std::sync::Arc::new(UserIds::open(UserIds::dir_for(base.path()), range).unwrap())
        });
        let open = |name: &str| {
            let user = UserId::parse(name).unwrap();
            let ws = Workspace::open(base.path(), &user, None, true).unwrap();
            match &ids {
                Some(ids) => ws.owned_by(ids.owner(&user).unwrap()).unwrap(),
                None => ws,
            }
        };
        let (alice, bob) = (open("alice"), open("bob"));
        let servers = everything_server()
            .ancestors()
            .find(|d| d.ends_with("tests/mcp"))
            .unwrap()
            .to_path_buf();
        let mut sandbox = Sandbox::with_launcher(env!("CARGO_BIN_EXE_claude-agent-http").into())
            .with_temp_root(base.path().join(".tmp"))
            .with_read_only([servers]);
        if let Some(ids) = ids {
            sandbox = sandbox.with_user_ids(ids);
        }
        Self {
            _base: base,
            alice,
            bob,
            sandbox,
        }
    }
}

fn everything_in_session() -> McpServerConfig {
    McpServerConfig::Stdio {
        command: "node".into(),
        args: vec![everything_server().display().to_string(), "stdio".into()],
        env: BTreeMap::from([("MCP_TEST_MARKER".into(), "per-session".into())]),
        per_session: true,
    }
}

/// The environment a server's `get-env` tool reports.
async fn env_of(
    hub: &McpHub,
    ws: &claude_agent_http::workspace::Workspace,
    name: &str,
) -> BTreeMap<String, String> {
    let get_env = tool(hub, ws, name).await;
    let out = get_env.call(json!({}), &ctx(ws)).await;
    assert!(!out.is_error, "{}", out.content);
    serde_json::from_str(&out.content).unwrap()
}

/// The uid of the live process running `args` in `cwd`, seen from here.
fn uid_of_process(args: &[&str], cwd: &std::path::Path) -> Option<u32> {
    let wanted: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted)
                && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|d| d == cwd)
        })
        .and_then(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
}

#[tokio::test]
async fn a_session_scoped_server_runs_once_per_session_in_its_directory_and_sandbox() {
    if helpers::sandbox_level().await.is_none() {
        return;
    }
    let s = Sessions::new();
    let hub = McpHub::new(BTreeMap::from([(
        "mine".to_owned(),
        everything_in_session(),
    )]))
    .with_session_servers(s.sandbox.clone(), false);
    // Not a shared server: /health lists none.
    assert!(hub.status().is_empty());

    let alice_env = env_of(&hub, &s.alice, "mcp__mine__get-env").await;
    let bob_env = env_of(&hub, &s.bob, "mcp__mine__get-env").await;
    assert_eq!(alice_env["HOME"], s.alice.root().display().to_string());
    assert_eq!(bob_env["HOME"], s.bob.root().display().to_string());
    assert_eq!(alice_env["MCP_TEST_MARKER"], "per-session");
    assert!(
        alice_env["TMPDIR"].contains("/.tmp/"),
        "{:?}",
        alice_env.get("TMPDIR")
    );
    let leaked: Vec<&String> = alice_env
        .keys()
        .filter(|k| {
            k.starts_with("ANTHROPIC")
                || k.starts_with("CLAUDE_AGENT")
                || k.contains("TOKEN")
                || k.contains("PASSWORD")
        })
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
    let (a, b) = (
        hub.session_pid(s.alice.root(), "mine").unwrap(),
        hub.session_pid(s.bob.root(), "mine").unwrap(),
    );
    assert_ne!(a, b, "one process per session");

    let server = everything_server().display().to_string();
    let args = ["node", server.as_str(), "stdio"];
    if rustix::process::geteuid().is_root() {
        let alice_uid = uid_of_process(&args, s.alice.root()).expect("alice's server");
        let bob_uid = uid_of_process(&args, s.bob.root()).expect("bob's server");
        assert!(alice_uid != 0 && bob_uid != 0 && alice_uid != bob_uid);
    }
    hub.shutdown().await;
    for _ in 0..100 {
        if uid_of_process(&args, s.alice.root()).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(uid_of_process(&args, s.alice.root()).is_none());
}

#[tokio::test]
async fn a_projects_mcp_json_is_used_only_when_allowed_and_then_confined() {
    if helpers::sandbox_level().await.is_none() {
        return;
    }
    let s = Sessions::new();
    let server = everything_server().display().to_string();
    std::fs::write(
        s.alice.root().join(".mcp.json"),
        json!({"mcpServers": {
            "proj": {"command": "node", "args": [server, "stdio"]},
            "remote": {"type": "http", "url": "http://127.0.0.1:9/mcp"}
        }})
        .to_string(),
    )
    .unwrap();

    let denied = McpHub::new(BTreeMap::new()).with_session_servers(s.sandbox.clone(), false);
    let names: Vec<String> = denied
        .tools(&s.alice)
        .await
        .iter()
        .map(|t| t.name().to_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("mcp__")), "{names:?}");

    let allowed = McpHub::new(BTreeMap::new()).with_session_servers(s.sandbox.clone(), true);
    let tools = allowed.tools(&s.alice).await;
    assert!(tools.iter().any(|t| t.name() == "mcp__proj__echo"));
    assert!(!tools.iter().any(|t| t.name().starts_with("mcp__remote__")));
    let env = env_of(&allowed, &s.alice, "mcp__proj__get-env").await;
    assert_eq!(env["HOME"], s.alice.root().display().to_string());
    // Bob's session has no such file: nothing of alice's project reaches him.
    let bobs = allowed.tools(&s.bob).await;
    assert!(!bobs.iter().any(|t| t.name().starts_with("mcp__proj__")));
    allowed.shutdown().await;
}

#[tokio::test]
async fn an_image_a_server_returns_reaches_the_model_as_an_image() {
    let hub = hub();
    let (_tmp, ws) = workspace();
    let image = tool(&hub, &ws, "mcp__everything__get-tiny-image").await;
    let out = image.call(json!({}), &ctx(&ws)).await;
    assert!(!out.is_error, "{}", out.content);
    assert_eq!(out.media.len(), 1, "{}", out.content);
    let block = serde_json::to_value(&out.media[0]).unwrap();
    assert_eq!(block["type"], "image", "{block}");
    assert_eq!(block["source"]["media_type"], "image/png");
    assert!(
        out.content.contains("Image from the MCP server"),
        "{}",
        out.content
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn resources_are_listed_and_read_through_claude_codes_two_tools() {
    let hub = hub();
    let (_tmp, ws) = workspace();
    let list = tool(&hub, &ws, "ListMcpResourcesTool").await;
    assert!(list.read_only());
    let out = list.call(json!({"server": "everything"}), &ctx(&ws)).await;
    assert!(!out.is_error, "{}", out.content);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out.content).unwrap();
    assert!(!listed.is_empty());
    assert!(listed.iter().all(|r| r["server"] == "everything"));
    let uri = listed
        .iter()
        .find(|r| {
            r["mimeType"]
                .as_str()
                .is_some_and(|m| m.starts_with("text/"))
        })
        .and_then(|r| r["uri"].as_str())
        .expect("a text resource")
        .to_owned();

    let read = tool(&hub, &ws, "ReadMcpResourceTool").await;
    let out = read
        .call(json!({"server": "everything", "uri": uri}), &ctx(&ws))
        .await;
    assert!(!out.is_error, "{}", out.content);
    assert!(
        out.content.starts_with(&format!("[resource {uri}]\n")),
        "{}",
        out.content
    );
    assert!(out.content.len() > uri.len() + 13, "{}", out.content);

    let out = read
        .call(json!({"server": "nowhere", "uri": uri}), &ctx(&ws))
        .await;
    assert!(
        out.is_error && out.content.contains("everything"),
        "{}",
        out.content
    );
    let out = list.call(json!({"server": "nowhere"}), &ctx(&ws)).await;
    assert!(out.is_error, "{}", out.content);
    hub.shutdown().await;
}
