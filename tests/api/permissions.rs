//! Permission rules through the HTTP API: what a scripted model's calls do
//! under rules from the configuration and from the project's settings
//! files, seen in the tool results, the offered tools and the files on disk.

use std::path::{Path, PathBuf};

use claude_agent_http::config::{Settings, StorageKind};
use claude_agent_http::mcp::McpServerConfig;
use fake_anthropic::{FakeAnthropic, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::point_at_fake;
use crate::helpers::*;

#[path = "../mcp_common/mod.rs"]
mod mcp_common;

async fn app_with(fake: &FakeAnthropic, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let url = fake.url();
    spawn_app_with(StorageKind::Sqlite, move |s| {
        point_at_fake(s, &url);
        adjust(s);
    })
    .await
    .unwrap()
}

/// A session for alice and its directory.
async fn session(app: &TestApp) -> (String, PathBuf) {
    let session = app.new_session("alice").await;
    (
        session["session_id"].as_str().unwrap().to_owned(),
        PathBuf::from(session["cwd"].as_str().unwrap()),
    )
}

/// Scripts one turn: each call in order, then a closing text.
fn script(fake: &FakeAnthropic, calls: &[(&str, Value)]) {
    for (tool, input) in calls {
        fake.push(Reply::tool_use(*tool, input.clone()));
    }
    fake.push(Reply::text("done"));
}

/// The results of the calls a turn made, in order: `(is_error, content)`,
/// from the last request the model got.
fn results(fake: &FakeAnthropic) -> Vec<(bool, String)> {
    let requests = fake.requests();
    let last = requests.last().unwrap();
    last.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["type"] == "tool_result")
        .map(|b| {
            (
                b["is_error"] == true,
                b["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The tools offered in the `n`th request.
fn offered(fake: &FakeAnthropic, n: usize) -> Vec<String> {
    crate::helpers::tool_names(&fake.requests()[n].body)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

async fn turn(app: &TestApp, id: &str) {
    assert_eq!(app.chat(id, "go").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_scoped_bash_deny_refuses_matching_commands_and_keeps_bash_offered() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |s| {
        s.defaults.disallowed_tools = vec!["Bash(rm:*)".into()];
    })
    .await;
    let (id, cwd) = session(&app).await;
    write(&cwd.join("x/file"), "keep me");
    script(
        &fake,
        &[
            ("Bash", json!({"command": "rm -rf x"})),
            ("Bash", json!({"command": "ls"})),
            ("Bash", json!({"command": "ls && rm x/file"})),
            ("Bash", json!({"command": "timeout 5 rm -rf x"})),
        ],
    );
    turn(&app, &id).await;

    assert!(
        offered(&fake, 0).contains(&"Bash".to_owned()),
        "{:?}",
        offered(&fake, 0)
    );
    let results = results(&fake);
    assert_eq!(results.len(), 4, "{results:?}");
    let (error, text) = &results[0];
    assert!(*error, "{text}");
    assert!(
        text.contains("`Bash(rm:*)`") && text.contains("defaults.disallowed_tools"),
        "{text}"
    );
    assert_eq!(results[1], (false, results[1].1.clone()));
    assert!(results[1].1.contains('x'), "ls ran: {:?}", results[1]);
    // One denied part refuses the whole compound command, before any of it runs.
    let (error, text) = &results[2];
    assert!(*error && text.contains("`rm x/file`"), "{text}");
    assert!(*error && results[3].0, "{:?}", results[3]);
    assert_eq!(
        std::fs::read_to_string(cwd.join("x/file")).unwrap(),
        "keep me"
    );
    app.stop().await;
}

#[tokio::test]
async fn deny_wins_over_ask_and_ask_over_allow() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |s| {
        s.defaults.permission_mode = "default".into();
        s.defaults.allowed_tools = vec!["Bash(echo *)".into(), "Read".into()];
        s.defaults.ask_tools = vec!["Bash(echo ask*)".into(), "Bash(echo deny*)".into()];
        // Nobody answers here: each call the rules leave to a person is
        // denied after a second, with the reason it needed one.
        s.defaults.permission_timeout_secs = 1;
        s.defaults.disallowed_tools = vec!["Bash(echo deny*)".into()];
    })
    .await;
    let (id, cwd) = session(&app).await;
    script(
        &fake,
        &[
            (
                "Bash",
                json!({"command": "echo hello > /dev/null && echo allowed"}),
            ),
            ("Bash", json!({"command": "echo ask me"})),
            ("Bash", json!({"command": "echo deny me"})),
            ("Bash", json!({"command": "touch made"})),
        ],
    );
    turn(&app, &id).await;
    let results = results(&fake);
    assert_eq!(results[0], (false, "allowed\n".to_owned()), "{results:?}");
    let (error, text) = &results[1];
    assert!(*error, "{text}");
    assert!(
        text.contains("needs a person's approval")
            && text.contains("ask rule `Bash(echo ask*)`")
            && text.contains("defaults.ask_tools")
            && text.contains("Nobody answered the request for approval within 1 seconds"),
        "{text}"
    );
    let (error, text) = &results[2];
    assert!(
        *error && text.contains("deny rule `Bash(echo deny*)`"),
        "{text}"
    );
    // No rule decides `touch`: the default mode needs a person for it, and
    // the refusal says which setting would let it run.
    let (error, text) = &results[3];
    assert!(*error, "{text}");
    assert!(
        text.contains("permission mode is default")
            && text.contains("`Bash(touch made)`")
            && text.contains("acceptEdits"),
        "{text}"
    );
    assert!(!cwd.join("made").exists());
    app.stop().await;
}

#[tokio::test]
async fn a_read_deny_protects_a_directory_and_nothing_else() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |s| {
        s.defaults.disallowed_tools = vec!["Read(./secrets/**)".into()];
    })
    .await;
    let (id, cwd) = session(&app).await;
    write(&cwd.join("secrets/key"), "hunter2-secret-value");
    write(&cwd.join("src/a"), "plain source");
    script(
        &fake,
        &[
            ("Read", json!({"file_path": "secrets/key"})),
            ("Read", json!({"file_path": "src/a"})),
            ("Grep", json!({"pattern": "hunter2", "path": "secrets"})),
            (
                "Write",
                json!({"file_path": "secrets/key", "content": "gone"}),
            ),
        ],
    );
    turn(&app, &id).await;
    let results = results(&fake);
    let (error, text) = &results[0];
    assert!(*error && text.contains("`Read(./secrets/**)`"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let (error, text) = &results[1];
    assert!(!*error && text.contains("plain source"), "{text}");
    assert!(
        results[2].0 && !results[2].1.contains("hunter2-secret"),
        "{:?}",
        results[2]
    );
    assert!(results[3].0, "{:?}", results[3]);
    assert_eq!(
        std::fs::read_to_string(cwd.join("secrets/key")).unwrap(),
        "hunter2-secret-value"
    );
    // The Read tool itself stays offered.
    assert!(offered(&fake, 0).contains(&"Read".to_owned()));
    app.stop().await;
}

#[tokio::test]
async fn a_rule_written_to_the_projects_settings_applies_from_the_next_turn() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |_| {}).await;
    let (id, cwd) = session(&app).await;

    script(&fake, &[("Bash", json!({"command": "touch one"}))]);
    turn(&app, &id).await;
    assert!(!results(&fake)[0].0, "{:?}", results(&fake));
    assert!(cwd.join("one").exists());

    write(
        &cwd.join(".claude/settings.json"),
        r#"{"permissions": {"deny": ["Bash(touch:*)", "Edit(docs/**)"]}}"#,
    );
    script(
        &fake,
        &[
            ("Bash", json!({"command": "touch two"})),
            ("Write", json!({"file_path": "docs/x.md", "content": "no"})),
            (
                "Write",
                json!({"file_path": "notes/x.md", "content": "yes"}),
            ),
        ],
    );
    turn(&app, &id).await;
    let results = results(&fake);
    let fresh = &results[results.len() - 3..];
    let (error, text) = &fresh[0];
    assert!(*error, "{text}");
    assert!(
        text.contains("`Bash(touch:*)`")
            && text.contains("permissions.deny in the project's .claude/settings.json"),
        "{text}"
    );
    assert!(
        fresh[1].0 && fresh[1].1.contains("`Edit(docs/**)`"),
        "{fresh:?}"
    );
    assert!(!fresh[2].0, "{fresh:?}");
    assert!(!cwd.join("two").exists() && !cwd.join("docs/x.md").exists());
    assert!(cwd.join("notes/x.md").exists());

    // Removing the rule lifts it on the turn after.
    std::fs::remove_file(cwd.join(".claude/settings.json")).unwrap();
    script(&fake, &[("Bash", json!({"command": "touch two"}))]);
    turn(&app, &id).await;
    assert!(cwd.join("two").exists());
    app.stop().await;
}

#[tokio::test]
async fn broken_settings_files_are_ignored_and_the_turn_goes_on() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |s| {
        s.defaults.setting_sources = vec![
            claude_agent_http::skills::SettingSource::User,
            claude_agent_http::skills::SettingSource::Project,
            claude_agent_http::skills::SettingSource::Local,
        ];
    })
    .await;
    let (id, cwd) = session(&app).await;
    write(
        &cwd.join(".claude/settings.json"),
        "{\"permissions\": {\"deny\": [",
    );
    // Only the wrongly typed part of a file is dropped: its deny list holds.
    write(
        &cwd.join(".claude/settings.local.json"),
        r#"{"permissions": {"allow": "Bash", "ask": 5, "deny": ["Bash(rm:*)", 7]}}"#,
    );
    write(
        &app.root.join("claude-home/settings.json"),
        "[\"not an object\"]",
    );
    write(&cwd.join("victim"), "still here");
    script(
        &fake,
        &[
            ("Bash", json!({"command": "echo still working"})),
            ("Bash", json!({"command": "rm victim"})),
        ],
    );
    let response = app.chat(&id, "go").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["text"], "done");
    let results = results(&fake);
    assert_eq!(results[0], (false, "still working\n".to_owned()));
    assert!(
        results[1].0 && results[1].1.contains("settings.local.json"),
        "{:?}",
        results[1]
    );
    assert!(cwd.join("victim").exists());
    app.stop().await;
}

#[tokio::test]
async fn project_allow_rules_do_not_approve_and_the_user_settings_ones_do() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |s| {
        s.defaults.permission_mode = "default".into();
        s.defaults.permission_timeout_secs = 1;
    })
    .await;
    let (id, cwd) = session(&app).await;
    write(
        &cwd.join(".claude/settings.json"),
        r#"{"permissions": {"allow": ["Bash(touch *)"]}}"#,
    );
    write(
        &app.root.join("claude-home/settings.json"),
        r#"{"permissions": {"allow": ["Bash(mkdir *)"]}}"#,
    );
    script(
        &fake,
        &[
            ("Bash", json!({"command": "touch by-project"})),
            ("Bash", json!({"command": "mkdir by-user"})),
        ],
    );
    turn(&app, &id).await;
    let results = results(&fake);
    let (error, text) = &results[0];
    assert!(*error, "{text}");
    assert!(
        text.contains("does not take allow rules from project files"),
        "{text}"
    );
    assert!(!results[1].0, "{:?}", results[1]);
    assert!(!cwd.join("by-project").exists() && cwd.join("by-user").is_dir());
    app.stop().await;
}

#[tokio::test]
async fn mcp_rules_hide_one_tool_and_refuse_calls_by_their_input() {
    let server = mcp_common::HttpServer::start(0).await;
    let fake = FakeAnthropic::start().await;
    let url = server.url();
    let app = app_with(&fake, move |s| {
        s.mcp_servers.insert(
            "calc".into(),
            McpServerConfig::Http {
                url,
                headers: Default::default(),
            },
        );
        s.defaults.disallowed_tools = vec!["mcp__calc__fail".into()];
        s.defaults.ask_tools = vec!["mcp__calc__add(a:13)".into()];
        s.defaults.permission_timeout_secs = 1;
    })
    .await;
    let (id, _cwd) = session(&app).await;
    script(
        &fake,
        &[
            ("mcp__calc__add", json!({"a": 1, "b": 2})),
            ("mcp__calc__add", json!({"a": 13, "b": 1})),
            ("mcp__calc__fail", json!({})),
        ],
    );
    turn(&app, &id).await;
    let tools = offered(&fake, 0);
    assert!(
        tools.contains(&"mcp__calc__add".to_owned())
            && !tools.contains(&"mcp__calc__fail".to_owned()),
        "{tools:?}"
    );
    let results = results(&fake);
    assert_eq!(results[0], (false, "3".to_owned()), "{results:?}");
    assert!(
        results[1].0 && results[1].1.contains("ask rule `mcp__calc__add(a:13)`"),
        "{:?}",
        results[1]
    );
    assert!(
        results[2].0 && results[2].1.contains("deny rule `mcp__calc__fail`"),
        "{:?}",
        results[2]
    );
    app.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_whole_server_deny_removes_all_its_tools() {
    let server = mcp_common::HttpServer::start(0).await;
    let fake = FakeAnthropic::start().await;
    let url = server.url();
    let app = app_with(&fake, move |s| {
        s.mcp_servers.insert(
            "calc".into(),
            McpServerConfig::Http {
                url,
                headers: Default::default(),
            },
        );
        s.defaults.disallowed_tools = vec!["mcp__calc".into()];
    })
    .await;
    let (id, _cwd) = session(&app).await;
    script(&fake, &[("mcp__calc__add", json!({"a": 1, "b": 2}))]);
    turn(&app, &id).await;
    let tools = offered(&fake, 0);
    assert!(tools.contains(&"Bash".to_owned()), "{tools:?}");
    assert!(
        !tools.iter().any(|t| t.starts_with("mcp__calc")),
        "{tools:?}"
    );
    let results = results(&fake);
    assert!(
        results[0].0 && results[0].1.contains("`mcp__calc`"),
        "{results:?}"
    );
    app.stop().await;
}
