//! Skills and MCP servers from config, seen through the HTTP API: the skills
//! listing, the Skill tool in a turn, an MCP server's tools in a turn and in
//! `/health`.

use std::path::{Path, PathBuf};

use claude_agent_http::config::StorageKind;
use claude_agent_http::mcp::McpServerConfig;
use claude_agent_http::plugins::PluginConfig;
use fake_anthropic::{FakeAnthropic, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::point_at_fake;
use crate::helpers::*;

fn write_skill(dir: &Path, name: &str, description: &str, body: &str) {
    std::fs::create_dir_all(dir.join(name)).unwrap();
    std::fs::write(
        dir.join(name).join("SKILL.md"),
        format!("---\nname: {name}\ndescription: {description}\n---\n{body}\n"),
    )
    .unwrap();
}

fn everything_server() -> PathBuf {
    let entry = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        entry.is_file(),
        "{} is missing: run `npm ci --prefix tests/mcp` (scripts/test does)",
        entry.display()
    );
    entry
}

#[tokio::test]
async fn skills_are_listed_and_offered_through_the_skill_tool() {
    let fake = FakeAnthropic::start().await;
    let plugin = tempfile::tempdir().unwrap();
    write_skill(
        &plugin.path().join("skills"),
        "lint",
        "Run the linters",
        "Run `make lint`.",
    );
    let url = fake.url();
    let plugin_path = plugin.path().to_path_buf();
    let app = spawn_app_with(StorageKind::Sqlite, move |s| {
        point_at_fake(s, &url);
        s.plugins = vec![PluginConfig::Local { path: plugin_path }];
    })
    .await
    .unwrap();

    let session = app
        .create_session(json!({"user_id": "alice", "subdir": "web"}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let cwd = PathBuf::from(session["cwd"].as_str().unwrap());
    let project_skills = cwd.join(".claude/skills");
    write_skill(
        &project_skills,
        "deploy",
        "Deploy the web app",
        "Step 1: build. Step 2: ship.",
    );
    std::fs::create_dir_all(project_skills.join("broken")).unwrap();
    std::fs::write(
        project_skills.join("broken/SKILL.md"),
        "no front matter here",
    )
    .unwrap();

    let listed: Vec<Value> = app
        .client
        .get(app.url("/api/v1/skills"))
        .query(&[("user_id", "alice"), ("subdir", "web")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut seen: Vec<(String, String)> = listed
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let plugin_name = plugin
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        seen,
        [
            ("deploy".to_owned(), "project".to_owned()),
            ("lint".to_owned(), format!("plugin:{plugin_name}")),
        ]
    );
    // A user with no directory yet still sees the plugin's skills.
    let fresh: Vec<Value> = app
        .client
        .get(app.url("/api/v1/skills"))
        .query(&[("user_id", "nobody")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fresh.len(), 1);
    assert!(
        !app.root.join("users/nobody").exists(),
        "listing creates nothing"
    );
    let bad = app
        .client
        .get(app.url("/api/v1/skills"))
        .query(&[("user_id", "a/b")])
        .send()
        .await
        .unwrap();
    assert_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    let id = session["session_id"].as_str().unwrap();
    fake.push(Reply::tool_use("Skill", json!({"skill": "deploy"})));
    fake.push(Reply::text("Deployed."));
    assert_eq!(app.chat(id, "deploy it").await.status(), StatusCode::OK);
    let requests = fake.requests();
    let skill_tool = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "Skill")
        .expect("Skill offered")
        .clone();
    let description = skill_tool["description"].as_str().unwrap();
    assert!(
        description.contains("deploy") && description.contains("Deploy the web app"),
        "{description}"
    );
    assert!(description.contains("lint"), "{description}");
    let result = requests[1].body["messages"][2]["content"][0].clone();
    assert_eq!(result["type"], "tool_result");
    let content = result["content"].as_str().unwrap();
    assert!(content.contains("Step 1: build."), "{content}");
    app.stop().await;
}

#[tokio::test]
async fn an_mcp_server_from_config_serves_tools_in_a_turn() {
    let fake = FakeAnthropic::start().await;
    let entry = everything_server();
    let url = fake.url();
    let app = spawn_app_with(StorageKind::Sqlite, move |s| {
        point_at_fake(s, &url);
        s.mcp_servers.insert(
            "everything".into(),
            McpServerConfig::Stdio {
                command: "node".into(),
                args: vec![entry.display().to_string(), "stdio".into()],
                env: Default::default(),
                per_session: false,
            },
        );
    })
    .await
    .unwrap();
    let health: Value = app.health().await.json().await.unwrap();
    assert_eq!(health["mcp_servers"][0]["name"], "everything");
    assert_eq!(health["mcp_servers"][0]["state"], "not_started");

    let id = app.new_session_id("alice").await;
    fake.push(Reply::tool_use(
        "mcp__everything__echo",
        json!({"message": "hello over MCP"}),
    ));
    fake.push(Reply::text("It echoed."));
    let body: Value = app.chat(&id, "echo something").await.json().await.unwrap();
    assert_eq!(body["text"], "It echoed.");
    let requests = fake.requests();
    let names: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"mcp__everything__echo"), "{names:?}");
    let result = &requests[1].body["messages"][2]["content"][0];
    assert!(
        result.get("is_error").is_none_or(|e| e == false),
        "{result}"
    );
    assert!(
        result["content"]
            .as_str()
            .unwrap()
            .contains("hello over MCP"),
        "{result}"
    );
    let health: Value = app.health().await.json().await.unwrap();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["mcp_servers"][0]["state"], "connected");
    app.stop().await;
}

#[tokio::test]
async fn a_broken_mcp_server_is_reported_and_the_service_stays_up() {
    let fake = FakeAnthropic::start().await;
    let url = fake.url();
    let app = spawn_app_with(StorageKind::Memory, move |s| {
        point_at_fake(s, &url);
        s.mcp_servers.insert(
            "broken".into(),
            McpServerConfig::Stdio {
                command: "/nonexistent/mcp-server".into(),
                args: vec![],
                env: Default::default(),
                per_session: false,
            },
        );
    })
    .await
    .unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(Reply::tool_use("mcp__broken__anything", json!({})));
    fake.push(Reply::text("That tool is unavailable."));
    assert_eq!(app.chat(&id, "use it").await.status(), StatusCode::OK);
    let result = &fake.requests()[1].body["messages"][2]["content"][0];
    assert_eq!(result["is_error"], true);
    let health = app.health().await;
    assert_eq!(health.status(), StatusCode::OK);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["mcp_servers"][0]["state"], "failed");
    assert!(
        health["mcp_servers"][0]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    app.stop().await;
}
