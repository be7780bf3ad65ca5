//! Start-up says loudly when the service listens beyond loopback: there is
//! no authentication, so whoever reaches the port can run commands.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::helpers::test_dir;

/// The log lines the binary writes up to and including `listening`, when it
/// listens on `host`.
async fn start_up_log(host: &str) -> Vec<Value> {
    let root = test_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_claude-agent-http"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", root.path())
        .current_dir(root.path())
        .env("CLAUDE_AGENT_API_HOST", host)
        .env("CLAUDE_AGENT_API_PORT", "0")
        .env("CLAUDE_AGENT_SESSION_STORAGE", "memory")
        .env("CLAUDE_AGENT_USER_BASE_DIR", root.path().join("users"))
        .env("CLAUDE_AGENT_TOOLS_SANDBOX", "off")
        .env("CLAUDE_AGENT_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the service starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let done = event["message"] == "listening";
            seen.push(event);
            if done {
                return;
            }
        }
        panic!("the service exited before listening: {seen:?}");
    })
    .await
    .expect("the service listens within 30 s");
    let _ = child.kill().await;
    seen
}

fn beyond_loopback_warnings(log: &[Value]) -> Vec<&Value> {
    log.iter()
        .filter(|e| {
            e["level"] == "WARN"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("LISTENING BEYOND LOOPBACK"))
        })
        .collect()
}

#[tokio::test]
async fn listening_on_every_interface_is_warned_about_and_loopback_is_not() {
    let open = start_up_log("0.0.0.0").await;
    let warnings = beyond_loopback_warnings(&open);
    assert_eq!(warnings.len(), 1, "{open:?}");
    assert!(
        warnings[0]["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("0.0.0.0:")),
        "{:?}",
        warnings[0]
    );
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1")
    );

    let local = start_up_log("127.0.0.1").await;
    assert!(beyond_loopback_warnings(&local).is_empty(), "{local:?}");
    let listening = local.last().unwrap();
    assert!(
        listening["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{listening:?}"
    );
}
