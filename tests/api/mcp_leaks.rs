//! What MCP servers may learn and tell: `/health` needs no auth, so it says
//! why a server failed but never shows its stderr or the credentials in its
//! URL; a stdio server inherits only the basics of the service's environment.

use std::collections::BTreeMap;
use std::path::Path;

use claude_agent_http::config::StorageKind;
use claude_agent_http::mcp::McpServerConfig;
use fake_anthropic::{FakeAnthropic, Reply};
use reqwest::StatusCode;
use serde_json::Value;

use crate::chat::point_at_fake;
use crate::helpers::*;

fn shell_server(script: &str, env: &[(&str, &str)]) -> McpServerConfig {
    McpServerConfig::Stdio {
        command: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        per_session: false,
    }
}

/// An app with these MCP servers, after one turn: servers start when a turn
/// first needs their tools.
async fn app_after_a_turn(servers: BTreeMap<String, McpServerConfig>) -> TestApp {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::text("ok"));
    let url = fake.url();
    let app = spawn_app_with(StorageKind::Memory, move |s| {
        point_at_fake(s, &url);
        s.mcp_servers = servers;
    })
    .await
    .unwrap();
    let id = app.new_session_id("alice").await;
    assert_eq!(app.chat(&id, "hi").await.status(), StatusCode::OK);
    app
}

#[tokio::test]
async fn health_says_why_a_server_failed_but_shows_none_of_its_secrets() {
    let app = app_after_a_turn(BTreeMap::from([
        (
            "leaky".to_owned(),
            shell_server(
                "echo 'fatal: password=hunter2 for postgres://app:hunter2@db/app' >&2; exit 1",
                &[],
            ),
        ),
        (
            "missing".to_owned(),
            McpServerConfig::Stdio {
                command: "/nonexistent/mcp-server".into(),
                args: vec![],
                env: BTreeMap::new(),
                per_session: false,
            },
        ),
        (
            "remote".to_owned(),
            McpServerConfig::Http {
                // Port 1: nothing listens there.
                url: "http://app:hunter2@127.0.0.1:1/mcp?token=hunter2".into(),
                headers: BTreeMap::new(),
            },
        ),
    ]))
    .await;
    let health = app.health().await;
    assert_eq!(health.status(), StatusCode::OK);
    let text = health.text().await.unwrap();
    assert!(!text.contains("hunter2"), "/health leaks a secret: {text}");
    assert!(!text.contains("127.0.0.1:1"), "/health shows a URL: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    let servers: BTreeMap<&str, &Value> = body["mcp_servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s))
        .collect();
    let error = |name: &str| {
        assert_eq!(servers[name]["state"], "failed", "{text}");
        servers[name]["error"].as_str().unwrap().to_owned()
    };
    assert!(error("leaky").contains("exited"), "{text}");
    assert_eq!(error("missing"), "failed to start: not found");
    assert!(error("remote").contains("connection refused"), "{text}");
}

/// Marks the copy of the test that runs with secrets in its environment.
const SECRET_ENV_CHILD: &str = "CAH_TEST_SECRET_ENV_CHILD";

#[tokio::test]
async fn stdio_servers_inherit_only_basic_env_and_their_configured_env() {
    if std::env::var_os(SECRET_ENV_CHILD).is_none() {
        // The service's environment must hold secrets, and setting variables
        // in this process would need `unsafe`: run this test again in a
        // process started with them.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "mcp_leaks::stdio_servers_inherit_only_basic_env_and_their_configured_env",
                "--nocapture",
            ])
            .env(SECRET_ENV_CHILD, "1")
            .env("DB_PASS", "hunter2")
            .env("SENTRY_DSN", "https://hunter2@sentry.example/1")
            .env("BASIC_AUTH_CREDS", "admin:hunter2")
            .env("LANG", "C.UTF-8")
            .output()
            .unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{report}");
        assert!(
            report.contains("1 passed"),
            "the copy did not run: {report}"
        );
        return;
    }
    let dir = test_dir();
    let dump = dir.path().join("env");
    let _app = app_after_a_turn(BTreeMap::from([(
        "dumps-env".to_owned(),
        shell_server(
            "env > \"$DUMP_TO\"",
            &[
                ("DUMP_TO", &dump.display().to_string()),
                ("SERVER_SETTING", "configured"),
            ],
        ),
    )]))
    .await;
    let env = read_env(&dump);
    for secret in [
        "DB_PASS",
        "SENTRY_DSN",
        "BASIC_AUTH_CREDS",
        SECRET_ENV_CHILD,
    ] {
        assert!(!env.contains_key(secret), "{secret} reached the server");
    }
    assert_eq!(env["SERVER_SETTING"], "configured");
    assert_eq!(env["LANG"], "C.UTF-8");
    assert!(env.contains_key("PATH"));
    // Nothing beyond the basics, the configured env and what sh sets itself.
    let unexpected: Vec<&String> = env
        .keys()
        .filter(|k| {
            !claude_agent_http::child_env::is_basic_name(k)
                && !["DUMP_TO", "SERVER_SETTING", "PWD", "OLDPWD", "SHLVL", "_"]
                    .contains(&k.as_str())
        })
        .collect();
    assert!(unexpected.is_empty(), "inherited: {unexpected:?}");
}

fn read_env(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("the server did not dump its env to {}: {e}", path.display()))
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
