//! What a session's model is told before the conversation, seen in the
//! requests fake-anthropic recorded: the system prompt and its environment
//! block, CLAUDE.md memory by setting source, and slash commands (custom
//! ones expanded, `/help` answered without the model, `GET /api/v1/commands`).

use std::path::{Path, PathBuf};

use claude_agent_http::agent::prompt::DEFAULT_SYSTEM_PROMPT;
use claude_agent_http::config::{StorageKind, SystemPromptConfig};
use claude_agent_http::skills::SettingSource;
use fake_anthropic::{FakeAnthropic, Recorded, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::{Frames, point_at_fake};
use crate::helpers::*;

/// `system` as one text, whether it was sent as a string or as blocks.
fn system_of(request: &Recorded) -> String {
    match &request.body["system"] {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| b["text"].as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n\n"),
        other => panic!("no system prompt: {other}"),
    }
}

/// The text of the request's last user message.
fn last_user_text(request: &Recorded) -> String {
    let messages = request.body["messages"].as_array().unwrap();
    let last = messages.last().unwrap();
    assert_eq!(last["role"], "user");
    last["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"].as_str())
        .collect()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// An app talking to `fake`, with `adjust` applied to its settings.
async fn app_with(
    fake: &FakeAnthropic,
    adjust: impl FnOnce(&mut claude_agent_http::config::Settings) + Send + 'static,
) -> TestApp {
    let url = fake.url();
    spawn_app_with(StorageKind::Memory, move |s| {
        point_at_fake(s, &url);
        // The service's own home stays out of these tests unless one sets it.
        s.user.claude_home = Some(PathBuf::from("/nonexistent/claude-home"));
        adjust(s);
    })
    .await
    .unwrap()
}

/// A session of `user` in `subdir`: its id and working directory.
async fn session_in(app: &TestApp, user: &str, subdir: &str) -> (String, PathBuf) {
    let session: Value = app
        .create_session(json!({"user_id": user, "subdir": subdir}))
        .await
        .json()
        .await
        .unwrap();
    (
        session["session_id"].as_str().unwrap().to_owned(),
        PathBuf::from(session["cwd"].as_str().unwrap()),
    )
}

async fn chat_ok(app: &TestApp, id: &str, message: &str) -> Value {
    let response = app.chat(id, message).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn today() -> String {
    chrono::Local::now().format("%Y-%m-%d").to_string()
}

#[tokio::test]
async fn memory_default_prompt_and_environment_reach_the_model_byte_identical() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |_| {}).await;
    let (id, cwd) = session_in(&app, "alice", "proj").await;
    // The repository is the user's whole directory; the session works in a
    // folder of it.
    write(
        &app.root.join("users/alice/.git/HEAD"),
        "ref: refs/heads/feature-x\n",
    );

    let before = today();
    fake.push(Reply::tool_use("Glob", json!({"pattern": "*"})));
    fake.push(Reply::text("Looked."));
    chat_ok(&app, &id, "look around").await;
    // The repository moves on between turns; the prompt does not.
    write(
        &app.root.join("users/alice/.git/HEAD"),
        "ref: refs/heads/other\n",
    );
    fake.push(Reply::text("Again."));
    chat_ok(&app, &id, "and again").await;
    let after = today();

    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    let system = system_of(&requests[0]);
    assert!(system.starts_with(DEFAULT_SYSTEM_PROMPT), "{system}");
    for expected in [
        format!("Working directory: {}", cwd.display()),
        "Git repository: yes, rooted at .. (branch feature-x, no commits yet)".to_owned(),
        "Model: claude-sonnet-4-6".to_owned(),
        format!("Platform: {}", std::env::consts::OS),
    ] {
        assert!(system.contains(&expected), "{expected} not in {system}");
    }
    assert!(
        system.contains(&format!("Today's date: {before}"))
            || system.contains(&format!("Today's date: {after}")),
        "{system}"
    );
    assert!(
        !system.contains("# Memory"),
        "no CLAUDE.md, no memory: {system}"
    );
    // The same bytes between two calls of a turn and between two turns.
    assert_eq!(requests[0].body["system"], requests[1].body["system"]);
    assert_eq!(requests[1].body["system"], requests[2].body["system"]);
    app.stop().await;
}

#[tokio::test]
async fn memory_claude_md_is_read_each_turn_from_the_users_directory_down() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |_| {}).await;
    let (id, cwd) = session_in(&app, "alice", "proj").await;
    let users = app.root.join("users");
    write(&users.join("CLAUDE.md"), "ABOVE-THE-USER-ROOT");
    write(&users.join("other-user/secret"), "OTHER-USERS-SECRET");
    write(&users.join("alice/CLAUDE.md"), "ALICE-ROOT-MEMORY");
    write(&cwd.join("docs/style.md"), "IMPORTED-STYLE-GUIDE");
    write(
        &cwd.join("CLAUDE.md"),
        "<!-- NOTE-FOR-EDITORS -->\nPROJECT-MEMORY-V1 follows @docs/style.md\n\
         and tries @../../other-user/secret\n",
    );

    chat_ok(&app, &id, "hello").await;
    write(&cwd.join("CLAUDE.md"), "PROJECT-MEMORY-V2\n");
    chat_ok(&app, &id, "hello again").await;

    let requests = fake.requests();
    let first = system_of(&requests[0]);
    for seen in [
        "ALICE-ROOT-MEMORY",
        "PROJECT-MEMORY-V1",
        "IMPORTED-STYLE-GUIDE",
        "<memory path=\"../CLAUDE.md\" scope=\"project\">",
        "<memory path=\"docs/style.md\" scope=\"project\" imported_by=\"CLAUDE.md\">",
        "@../../other-user/secret was not imported",
    ] {
        assert!(first.contains(seen), "{seen} not in {first}");
    }
    for unseen in [
        "ABOVE-THE-USER-ROOT",
        "OTHER-USERS-SECRET",
        "NOTE-FOR-EDITORS",
    ] {
        assert!(!first.contains(unseen), "{unseen} in {first}");
    }
    // Memory follows the instructions and the environment, from the root down.
    let env_end = first.find("</environment>").unwrap();
    let root = first.find("ALICE-ROOT-MEMORY").unwrap();
    let project = first.find("PROJECT-MEMORY-V1").unwrap();
    assert!(env_end < root && root < project, "{first}");
    if let Value::Array(blocks) = &requests[0].body["system"] {
        assert!(blocks.len() >= 2, "memory has its own block: {blocks:?}");
    }

    let second = system_of(&requests[1]);
    assert!(second.contains("PROJECT-MEMORY-V2"), "{second}");
    assert!(!second.contains("PROJECT-MEMORY-V1"), "{second}");
    app.stop().await;
}

#[tokio::test]
async fn memory_user_and_local_sources_and_none_at_all() {
    let fake = FakeAnthropic::start().await;
    let claude_home = tempfile::tempdir().unwrap();
    write(&claude_home.path().join("CLAUDE.md"), "SERVICE-USER-MEMORY");
    let home = claude_home.path().to_path_buf();
    let app = app_with(&fake, move |s| {
        s.user.claude_home = Some(home);
        s.defaults.setting_sources = vec![
            SettingSource::User,
            SettingSource::Project,
            SettingSource::Local,
        ];
    })
    .await;
    let (id, cwd) = session_in(&app, "alice", "proj").await;
    write(&cwd.join("CLAUDE.md"), "PROJECT-MEMORY");
    write(&cwd.join("CLAUDE.local.md"), "LOCAL-MEMORY");
    chat_ok(&app, &id, "hello").await;
    let system = system_of(&fake.requests()[0]);
    let user = system.find("SERVICE-USER-MEMORY").expect("user memory");
    let project = system.find("PROJECT-MEMORY").expect("project memory");
    let local = system.find("LOCAL-MEMORY").expect("local memory");
    assert!(user < project && project < local, "{system}");
    assert!(system.contains("scope=\"local\""), "{system}");
    app.stop().await;

    // `setting_sources: []`: no memory, and no custom commands either.
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |s| s.defaults.setting_sources = Vec::new()).await;
    let (id, cwd) = session_in(&app, "alice", "proj").await;
    write(&cwd.join("CLAUDE.md"), "PROJECT-MEMORY");
    write(&cwd.join(".claude/commands/fix.md"), "Fix $ARGUMENTS now.");
    chat_ok(&app, &id, "/fix the bug").await;
    let request = &fake.requests()[0];
    let system = system_of(request);
    assert!(
        !system.contains("PROJECT-MEMORY") && !system.contains("# Memory"),
        "{system}"
    );
    assert_eq!(last_user_text(request), "/fix the bug");
    app.stop().await;
}

#[tokio::test]
async fn memory_system_prompt_can_be_replaced_or_appended_to() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |s| {
        s.defaults.system_prompt = Some(SystemPromptConfig::Replace(
            "You are a terse reviewer.".into(),
        ));
    })
    .await;
    let (id, cwd) = session_in(&app, "alice", "proj").await;
    write(&cwd.join("CLAUDE.md"), "PROJECT-MEMORY");
    chat_ok(&app, &id, "hello").await;
    let system = system_of(&fake.requests()[0]);
    assert!(system.starts_with("You are a terse reviewer."), "{system}");
    assert!(!system.contains(DEFAULT_SYSTEM_PROMPT));
    assert!(system.contains("PROJECT-MEMORY"), "{system}");
    app.stop().await;

    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |s| {
        s.defaults.system_prompt = Some(SystemPromptConfig::Preset {
            append: Some("Always answer in French.".into()),
        });
    })
    .await;
    let id = app.new_session_id("alice").await;
    chat_ok(&app, &id, "hello").await;
    let system = system_of(&fake.requests()[0]);
    assert!(system.starts_with(DEFAULT_SYSTEM_PROMPT), "{system}");
    assert!(
        system.contains("</environment>\n\nAlways answer in French."),
        "{system}"
    );
    app.stop().await;
}

const FIX_COMMAND: &str = "---\n\
description: Fix an issue\n\
argument-hint: <issue> [priority]\n\
model: claude-haiku-4-5\n\
allowed-tools: Read, Edit\n\
---\n\
Fix issue $0 at priority $1.\n\
Everything: $ARGUMENTS\n";

#[tokio::test]
async fn memory_custom_commands_expand_with_arguments_and_their_model() {
    let fake = FakeAnthropic::start().await;
    let claude_home = tempfile::tempdir().unwrap();
    write(
        &claude_home.path().join("commands/greet.md"),
        "Say hello to the user.",
    );
    let home = claude_home.path().to_path_buf();
    let app = app_with(&fake, move |s| s.user.claude_home = Some(home)).await;
    let (id, cwd) = session_in(&app, "alice", "proj").await;
    write(&cwd.join(".claude/commands/fix.md"), FIX_COMMAND);
    // A skill and a command of one name: the skill wins.
    write(&cwd.join(".claude/commands/deploy.md"), "COMMAND-DEPLOY");
    write(
        &cwd.join(".claude/skills/deploy/SKILL.md"),
        "---\nname: deploy\ndescription: Deploy it\n---\nSKILL-DEPLOY to $0.\n",
    );

    chat_ok(&app, &id, r#"/fix 42 "very high""#).await;
    chat_ok(&app, &id, "/greet Bob and Carol").await;
    chat_ok(&app, &id, "/deploy staging").await;
    chat_ok(&app, &id, "/frobnicate the widget").await;

    let requests = fake.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(
        last_user_text(&requests[0]),
        "Fix issue 42 at priority very high.\nEverything: 42 \"very high\"\n"
    );
    assert_eq!(requests[0].body["model"], "claude-haiku-4-5");
    // The command's model held for its turn only.
    assert_eq!(requests[1].body["model"], "claude-sonnet-4-6");
    assert_eq!(
        last_user_text(&requests[1]),
        "Say hello to the user.\n\nARGUMENTS: Bob and Carol"
    );
    let deploy = last_user_text(&requests[2]);
    assert!(
        deploy.starts_with("Base directory for this skill: "),
        "{deploy}"
    );
    assert!(deploy.ends_with("SKILL-DEPLOY to staging."), "{deploy}");
    // An unknown /word is plain text.
    assert_eq!(last_user_text(&requests[3]), "/frobnicate the widget");
    // The history keeps the expansion, as the model saw it.
    let history = requests[3].body["messages"].as_array().unwrap();
    assert_eq!(
        history[0]["content"][0]["text"],
        "Fix issue 42 at priority very high.\nEverything: 42 \"very high\"\n"
    );
    app.stop().await;
}

#[tokio::test]
async fn memory_help_is_answered_by_the_service_and_kept_in_the_history() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |_| {}).await;
    let (id, cwd) = session_in(&app, "alice", "proj").await;
    write(&cwd.join(".claude/commands/fix.md"), FIX_COMMAND);

    let body = chat_ok(&app, &id, "/help").await;
    let help = body["text"].as_str().unwrap().to_owned();
    for line in [
        "- /help: ",
        "- /compact [focus]: ",
        "- /clear: ",
        "- /fix <issue> [priority]: Fix an issue (project)",
    ] {
        assert!(help.contains(line), "{line} not in {help}");
    }
    assert_eq!(body["num_turns"], 0);
    assert!(fake.requests().is_empty(), "no model call for /help");

    // Streamed, it is an ordinary answer: its text, then done.
    let frames = Frames::new(
        app.chat_stream(json!({"session_id": id, "message": "/help"}))
            .await,
    )
    .collect()
    .await;
    let types: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["text_delta", "done"]);
    assert_eq!(frames[0]["text"], help.as_str());

    assert!(fake.requests().is_empty());

    fake.push(Reply::text("Sure."));
    chat_ok(&app, &id, "thanks").await;
    let sent = fake.requests()[0].body["messages"].clone();
    assert_eq!(sent[0]["content"][0]["text"], "/help");
    assert_eq!(sent[1]["content"][0]["text"], help.as_str());
    app.stop().await;
}

#[tokio::test]
async fn memory_commands_are_listed_for_a_session_directory() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |_| {}).await;
    let (_, cwd) = session_in(&app, "alice", "proj").await;
    write(&cwd.join(".claude/commands/fix.md"), FIX_COMMAND);
    write(&cwd.join(".claude/commands/deploy.md"), "COMMAND-DEPLOY");
    write(
        &cwd.join(".claude/skills/deploy/SKILL.md"),
        "---\nname: deploy\ndescription: Deploy it\nargument-hint: <env>\n---\nGo.\n",
    );
    let list = |user: &'static str, subdir: Option<&'static str>| {
        let mut request = app
            .client
            .get(app.url("/api/v1/commands"))
            .query(&[("user_id", user)]);
        if let Some(subdir) = subdir {
            request = request.query(&[("subdir", subdir)]);
        }
        request.send()
    };
    let listed: Vec<Value> = list("alice", Some("proj"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed,
        [
            json!({"name": "help", "description": listed[0]["description"], "argument_hint": null, "kind": "builtin", "source": "builtin"}),
            json!({"name": "compact", "description": listed[1]["description"], "argument_hint": "[focus]", "kind": "builtin", "source": "builtin"}),
            json!({"name": "clear", "description": listed[2]["description"], "argument_hint": null, "kind": "builtin", "source": "builtin"}),
            json!({"name": "deploy", "description": "Deploy it", "argument_hint": "<env>", "kind": "skill", "source": "project"}),
            json!({"name": "fix", "description": "Fix an issue", "argument_hint": "<issue> [priority]", "kind": "command", "source": "project"}),
        ]
    );
    assert!(
        listed[0]["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );

    // A user with no directory yet: the built-ins only, and nothing is created.
    let fresh: Vec<Value> = list("nobody", None).await.unwrap().json().await.unwrap();
    assert_eq!(fresh.len(), 3);
    assert!(!app.root.join("users/nobody").exists());
    let bad = list("a/b", None).await.unwrap();
    assert_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    app.stop().await;
}

#[tokio::test]
async fn memory_a_commands_allowed_tools_hold_for_its_turn_only() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |s| {
        s.defaults.permission_mode = "default".into();
        // Nobody answers: a call left to a person is denied after a second.
        s.defaults.permission_timeout_secs = 1;
    })
    .await;
    let (id, cwd) = session_in(&app, "alice", "proj").await;
    write(
        &cwd.join(".claude/commands/stamp.md"),
        "---\nallowed-tools: Bash(touch stamped)\n---\nCreate the stamp file.\n",
    );
    fake.push(Reply::tool_use("Bash", json!({"command": "touch stamped"})));
    fake.push(Reply::text("stamped"));
    let response = app.chat(&id, "/stamp").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        cwd.join("stamped").exists(),
        "the command's grant let the call run"
    );

    // The next message is no command: default mode refuses the same call.
    std::fs::remove_file(cwd.join("stamped")).unwrap();
    fake.push(Reply::tool_use("Bash", json!({"command": "touch stamped"})));
    fake.push(Reply::text("refused"));
    let response = app.chat(&id, "do it again").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!cwd.join("stamped").exists());
    let last = fake.requests().pop().unwrap();
    let result = last.body["messages"].as_array().unwrap().last().unwrap()["content"][0].clone();
    assert_eq!(result["is_error"], true, "{result}");
}

#[tokio::test]
async fn memory_the_environment_shows_the_working_trees_status_from_a_confined_git() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |_| {}).await;
    let (id, cwd) = session_in(&app, "alice", "repo").await;
    let git = std::process::Command::new("git")
        .args(["init", "-q", "-b", "trunk"])
        .current_dir(&cwd)
        .status()
        .expect("git runs");
    assert!(git.success());
    write(&cwd.join("notes.txt"), "draft\n");
    fake.push(Reply::text("Seen."));
    chat_ok(&app, &id, "what is the state?").await;
    let system = system_of(&fake.requests()[0]);
    assert!(system.contains("Git status at session start"), "{system}");
    assert!(system.contains("## No commits yet on trunk"), "{system}");
    assert!(system.contains("?? notes.txt"), "{system}");
}
