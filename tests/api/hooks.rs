//! Command hooks from the settings files through the HTTP API: a
//! `PreToolUse` hook that blocks, one that hangs, what a `PostToolUse` hook
//! tells the model, and where hooks run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use claude_agent_http::config::{Settings, StorageKind};
use fake_anthropic::{FakeAnthropic, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::point_at_fake;
use crate::helpers::*;

async fn app_with(fake: &FakeAnthropic, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let url = fake.url();
    spawn_app_with(StorageKind::Sqlite, move |s| {
        point_at_fake(s, &url);
        adjust(s);
    })
    .await
    .unwrap()
}

async fn session(app: &TestApp) -> (String, PathBuf) {
    let session = app.new_session("alice").await;
    (
        session["session_id"].as_str().unwrap().to_owned(),
        PathBuf::from(session["cwd"].as_str().unwrap()),
    )
}

fn settings_with_hooks(path: &Path, hooks: Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, json!({ "hooks": hooks }).to_string()).unwrap();
}

/// `(is_error, content)` of each tool result the model got last.
fn results(fake: &FakeAnthropic) -> Vec<(bool, String)> {
    let requests = fake.requests();
    requests.last().unwrap().body["messages"]
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

#[tokio::test]
async fn a_pre_tool_use_hook_exiting_2_blocks_the_call_with_its_stderr() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |_| {}).await;
    let (id, cwd) = session(&app).await;
    settings_with_hooks(
        &cwd.join(".claude/settings.json"),
        json!({"PreToolUse": [{"matcher": "Bash", "hooks": [{
            "type": "command",
            "command": "cat > last-event.json; grep -q 'rm ' last-event.json && { echo 'rm is not allowed by the project hook' >&2; exit 2; }; exit 0"
        }]}]}),
    );
    std::fs::write(cwd.join("keep"), "x").unwrap();
    fake.push(Reply::tool_use("Bash", json!({"command": "rm keep"})));
    fake.push(Reply::tool_use("Bash", json!({"command": "echo fine"})));
    fake.push(Reply::text("done"));
    assert_eq!(app.chat(&id, "go").await.status(), StatusCode::OK);
    let results = results(&fake);
    let (error, text) = &results[0];
    assert!(
        *error && text.contains("rm is not allowed by the project hook"),
        "{text}"
    );
    assert!(cwd.join("keep").exists());
    assert_eq!(results[1], (false, "fine\n".to_owned()));
    let event: Value =
        serde_json::from_str(&std::fs::read_to_string(cwd.join("last-event.json")).unwrap())
            .unwrap();
    assert_eq!(event["hook_event_name"], "PreToolUse");
    assert_eq!(event["tool_input"]["command"], "echo fine");
    assert_eq!(event["cwd"], cwd.display().to_string());
    app.stop().await;
}

#[tokio::test]
async fn a_hook_that_hangs_is_killed_at_its_timeout_and_the_turn_goes_on() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |_| {}).await;
    let (id, cwd) = session(&app).await;
    settings_with_hooks(
        &cwd.join(".claude/settings.json"),
        json!({"PreToolUse": [{"hooks": [{
            "type": "command", "command": "sleep 60; exit 2", "timeout": 1
        }]}]}),
    );
    fake.push(Reply::tool_use("Bash", json!({"command": "echo after"})));
    fake.push(Reply::text("done"));
    let started = Instant::now();
    let response = app.chat(&id, "go").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(results(&fake)[0], (false, "after\n".to_owned()));
    app.stop().await;
}

#[tokio::test]
async fn post_tool_use_context_reaches_the_model_and_hooks_see_the_bash_environment() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |_| {}).await;
    let (id, cwd) = session(&app).await;
    settings_with_hooks(
        &cwd.join(".claude/settings.json"),
        json!({"PostToolUse": [{"matcher": "Write|Edit", "hooks": [{
            "type": "command",
            "command": "env > hook-env.txt; echo '{\"hookSpecificOutput\": {\"hookEventName\": \"PostToolUse\", \"additionalContext\": \"formatter ran on the file\"}}'"
        }]}]}),
    );
    fake.push(Reply::tool_use(
        "Write",
        json!({"file_path": "a.txt", "content": "x"}),
    ));
    fake.push(Reply::text("done"));
    assert_eq!(app.chat(&id, "go").await.status(), StatusCode::OK);
    let (error, text) = &results(&fake)[0];
    assert!(
        !*error && text.contains("formatter ran on the file"),
        "{text}"
    );
    let env = std::fs::read_to_string(cwd.join("hook-env.txt")).unwrap();
    assert!(
        env.lines().any(|l| l == format!("HOME={}", cwd.display())),
        "{env}"
    );
    assert!(
        env.lines()
            .any(|l| l == format!("CLAUDE_PROJECT_DIR={}", cwd.display())),
        "{env}"
    );
    assert!(!env.contains("ANTHROPIC_"), "no secrets reach hooks: {env}");
    app.stop().await;
}

#[tokio::test]
async fn project_hooks_do_not_run_in_default_mode_but_user_hooks_do() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |s| s.defaults.permission_mode = "default".into()).await;
    let (id, cwd) = session(&app).await;
    settings_with_hooks(
        &cwd.join(".claude/settings.json"),
        json!({"PreToolUse": [{"hooks": [{"type": "command", "command": "touch project-hook-ran"}]}]}),
    );
    settings_with_hooks(
        &app.root.join("claude-home/settings.json"),
        json!({"PreToolUse": [{"matcher": "Read", "hooks": [{"type": "command", "command": "touch user-hook-ran"}]}]}),
    );
    std::fs::write(cwd.join("f.txt"), "hello").unwrap();
    fake.push(Reply::tool_use("Read", json!({"file_path": "f.txt"})));
    fake.push(Reply::text("done"));
    assert_eq!(app.chat(&id, "go").await.status(), StatusCode::OK);
    assert!(!results(&fake)[0].0);
    assert!(cwd.join("user-hook-ran").exists());
    assert!(!cwd.join("project-hook-ran").exists());
    app.stop().await;
}

#[tokio::test]
async fn a_hook_is_confined_like_a_bash_command() {
    if sandbox_level().await.is_none() {
        return;
    }
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |s| {
        s.tools.sandbox = claude_agent_http::config::SandboxMode::On;
    })
    .await;
    let (id, cwd) = session(&app).await;
    let outside = app.root.join("users/outside-marker");
    settings_with_hooks(
        &cwd.join(".claude/settings.json"),
        json!({"PreToolUse": [{"hooks": [{
            "type": "command",
            "command": format!("touch {} 2> denied.txt; touch inside-marker", outside.display())
        }]}]}),
    );
    fake.push(Reply::tool_use("Bash", json!({"command": "true"})));
    fake.push(Reply::text("done"));
    assert_eq!(app.chat(&id, "go").await.status(), StatusCode::OK);
    assert!(cwd.join("inside-marker").exists());
    assert!(!outside.exists());
    app.stop().await;
}

#[tokio::test]
async fn user_prompt_submit_hooks_block_or_add_context_and_stop_hooks_continue_the_turn() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |_| {}).await;
    let (id, cwd) = session(&app).await;
    settings_with_hooks(
        &cwd.join(".claude/settings.json"),
        json!({
            "UserPromptSubmit": [{"hooks": [{
                "type": "command",
                "command": "grep -q password && { echo 'no passwords in prompts' >&2; exit 2; }; echo 'The build uses make.'"
            }]}],
            "Stop": [{"hooks": [{
                "type": "command",
                "command": "grep -q '\"stop_hook_active\":false' && { echo 'Run the tests before stopping.' >&2; exit 2; }; exit 0"
            }]}]
        }),
    );

    let blocked = app.chat(&id, "my password is hunter2").await;
    assert_eq!(blocked.status(), StatusCode::OK);
    let body: Value = blocked.json().await.unwrap();
    assert_eq!(body["stop_reason"], "blocked");
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("no passwords in prompts")
    );
    assert!(
        fake.requests().is_empty(),
        "a blocked prompt reaches no model"
    );

    fake.push(Reply::text("I would stop here."));
    fake.push(Reply::text("Tests pass; now I stop."));
    let body: Value = app.chat(&id, "build it").await.json().await.unwrap();
    assert_eq!(body["text"], "Tests pass; now I stop.");
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let first = requests[0].body["messages"].to_string();
    assert!(first.contains("The build uses make."), "{first}");
    assert!(!first.contains("hunter2"), "{first}");
    let second = requests[1].body["messages"].to_string();
    assert!(
        second.contains("Run the tests before stopping."),
        "{second}"
    );
}
