//! Tools through the HTTP API, with fake-anthropic scripting the calls: what
//! the model sends back is what a user's files and the next request show.

use claude_agent_http::config::StorageKind;
use fake_anthropic::{FakeAnthropic, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::point_at_fake;
use crate::helpers::*;

async fn app_with(
    fake: &FakeAnthropic,
    adjust: impl FnOnce(&mut claude_agent_http::config::Settings),
) -> TestApp {
    let url = fake.url();
    spawn_app_with(StorageKind::Sqlite, move |s| {
        point_at_fake(s, &url);
        adjust(s);
    })
    .await
    .unwrap()
}

fn offered(fake: &FakeAnthropic, n: usize) -> Vec<String> {
    crate::helpers::tool_names(&fake.requests()[n].body)
}

#[tokio::test]
async fn write_then_read_round_trip_and_bash_runs_in_the_session_dir() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |_| {}).await;
    let session = app
        .create_session(json!({"user_id": "alice", "subdir": "proj"}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let id = session["session_id"].as_str().unwrap();
    let cwd = session["cwd"].as_str().unwrap();

    fake.push(Reply::tool_use(
        "Write",
        json!({"file_path": "notes/todo.txt", "content": "line one\nline two\n"}),
    ));
    fake.push(Reply::tool_use(
        "Read",
        json!({"file_path": "notes/todo.txt"}),
    ));
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "pwd; echo HOME=$HOME; env | grep -c ANTHROPIC || true"}),
    ));
    fake.push(Reply::text("All done."));
    let response = app.chat(id, "go").await;
    assert_eq!(response.status(), StatusCode::OK);

    let results = tool_results_in(&fake, 3);
    assert_eq!(results.len(), 3);
    assert!(
        results
            .iter()
            .all(|r| r.get("is_error").is_none_or(|e| e == false)),
        "{results:?}"
    );
    let read = results[1]["content"].as_str().unwrap();
    assert!(
        read.contains("1\tline one") && read.contains("2\tline two"),
        "{read}"
    );
    let bash = results[2]["content"].as_str().unwrap();
    let mut lines = bash.lines();
    assert_eq!(lines.next(), Some(cwd), "{bash}");
    assert!(bash.contains("HOME=") && bash.contains("/alice"), "{bash}");
    assert!(
        bash.lines().any(|l| l.trim() == "0"),
        "no ANTHROPIC_* variable reaches tools: {bash}"
    );
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(cwd).join("notes/todo.txt")).unwrap(),
        "line one\nline two\n"
    );
    app.stop().await;
}

#[tokio::test]
async fn tool_errors_reach_the_model_as_is_error() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |_| {}).await;
    let session = app.new_session("alice").await;
    let id = session["session_id"].as_str().unwrap();
    let cwd = std::path::PathBuf::from(session["cwd"].as_str().unwrap());
    std::fs::write(cwd.join("dup.txt"), "x = 1\nx = 1\n").unwrap();

    fake.push(Reply::tool_use("Read", json!({"file_path": "dup.txt"})));
    fake.push(Reply::tool_use(
        "Edit",
        json!({"file_path": "dup.txt", "old_string": "x = 1", "new_string": "x = 2"}),
    ));
    fake.push(Reply::tool_use(
        "Read",
        json!({"file_path": "../../etc/passwd"}),
    ));
    fake.push(Reply::tool_use(
        "Write",
        json!({"file_path": "/tmp/escape.txt", "content": "no"}),
    ));
    fake.push(Reply::tool_use("NoSuchTool", json!({})));
    fake.push(Reply::text("I could not do that."));
    let body: Value = app.chat(id, "edit").await.json().await.unwrap();
    assert_eq!(body["text"], "I could not do that.");

    let results = tool_results_in(&fake, 5);
    assert_eq!(results.len(), 5);
    let results = &results[1..];
    for result in results {
        assert_eq!(result["is_error"], true, "{result}");
    }
    let edit = results[0]["content"].as_str().unwrap();
    assert!(edit.contains("2"), "says how many matches: {edit}");
    assert!(edit.contains("replace_all"), "{edit}");
    assert_eq!(
        std::fs::read_to_string(cwd.join("dup.txt")).unwrap(),
        "x = 1\nx = 1\n"
    );
    assert!(!std::path::Path::new("/tmp/escape.txt").exists());
    assert!(
        results[3]["content"]
            .as_str()
            .unwrap()
            .contains("NoSuchTool")
    );
    app.stop().await;
}

#[tokio::test]
async fn plan_mode_offers_only_read_only_tools() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |s| s.defaults.permission_mode = "plan".into()).await;
    let id = app.new_session_id("alice").await;
    fake.push(Reply::tool_use(
        "Write",
        json!({"file_path": "x.txt", "content": "no"}),
    ));
    fake.push(Reply::text("ok"));
    assert_eq!(app.chat(&id, "plan").await.status(), StatusCode::OK);
    let tools = offered(&fake, 0);
    assert!(
        tools.contains(&"Read".to_owned()) && tools.contains(&"Grep".to_owned()),
        "{tools:?}"
    );
    assert!(
        !tools.contains(&"Write".to_owned()) && !tools.contains(&"Bash".to_owned()),
        "{tools:?}"
    );
    let results = tool_results_in(&fake, 1);
    assert_eq!(results[0]["is_error"], true);
    app.stop().await;
}

#[tokio::test]
async fn default_mode_refuses_mutating_tools_and_disallowed_tools_are_never_offered() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |s| {
        s.defaults.permission_mode = "default".into();
        // Nobody answers: the call left to a person is denied after a second.
        s.defaults.permission_timeout_secs = 1;
        s.defaults.disallowed_tools = vec!["Grep".into()];
    })
    .await;
    let session = app.new_session("alice").await;
    let id = session["session_id"].as_str().unwrap();
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "touch made.txt"}),
    ));
    fake.push(Reply::tool_use("Grep", json!({"pattern": "x"})));
    fake.push(Reply::text("ok"));
    assert_eq!(app.chat(id, "try").await.status(), StatusCode::OK);
    let tools = offered(&fake, 0);
    assert!(
        tools.contains(&"Bash".to_owned()) && !tools.contains(&"Grep".to_owned()),
        "{tools:?}"
    );
    let results = tool_results_in(&fake, 2);
    assert_eq!(results[0]["is_error"], true);
    assert!(
        results[0]["content"].as_str().unwrap().contains("default"),
        "{}",
        results[0]
    );
    assert_eq!(results[1]["is_error"], true);
    let cwd = std::path::Path::new(session["cwd"].as_str().unwrap());
    assert!(
        !cwd.join("made.txt").exists(),
        "the refused command never ran"
    );
    app.stop().await;
}

#[tokio::test]
async fn bash_cannot_read_another_users_directory_or_the_database() {
    if sandbox_level().await.is_none() {
        return;
    }
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |_| {}).await;
    let bob = app.new_session("bob").await;
    let bob_dir = std::path::PathBuf::from(bob["cwd"].as_str().unwrap());
    std::fs::write(bob_dir.join("secret.txt"), "bob's secret\n").unwrap();
    let alice = app.new_session("alice").await;
    let id = alice["session_id"].as_str().unwrap();

    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": format!("cat '{}'", bob_dir.join("secret.txt").display())}),
    ));
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": format!("ls '{}'", app.settings.session.sqlite_path.parent().unwrap().display())}),
    ));
    fake.push(Reply::text("Denied."));
    assert_eq!(app.chat(id, "peek").await.status(), StatusCode::OK);

    let results = tool_results_in(&fake, 2);
    assert_eq!(results.len(), 2);
    for result in &results {
        let content = result["content"].as_str().unwrap();
        assert_eq!(result["is_error"], true, "{result}");
        assert!(content.contains("Permission denied"), "{content}");
        assert!(!content.contains("bob's secret") && !content.contains("sessions.db"));
    }
    app.stop().await;
}

#[tokio::test]
async fn bash_runs_as_the_users_own_id_and_cannot_take_access_away_from_others() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if sandbox_level().await.is_none() {
        return;
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("NOTICE: skipping: commands run as users' own ids only when the service is root");
        return;
    }
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |_| {}).await;
    let bob = app.new_session("bob").await;
    let bob_id = bob["session_id"].as_str().unwrap().to_owned();
    let bob_dir = std::path::PathBuf::from(bob["cwd"].as_str().unwrap());
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "echo mine > mine.txt"}),
    ));
    fake.push(Reply::text("Saved."));
    assert_eq!(app.chat(&bob_id, "save").await.status(), StatusCode::OK);

    let alice = app.new_session("alice").await;
    let id = alice["session_id"].as_str().unwrap();
    let db_dir = app
        .settings
        .session
        .sqlite_path
        .parent()
        .unwrap()
        .to_path_buf();
    let users_root = app.settings.user.base_dir.clone();
    let targets = [
        bob_dir.clone(),
        bob_dir.join("mine.txt"),
        users_root,
        db_dir,
    ];
    let modes = |paths: &[std::path::PathBuf]| -> Vec<u32> {
        paths
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().permissions().mode())
            .collect()
    };
    let before = modes(&targets);
    fake.push(Reply::tool_use("Bash", json!({"command": "id -u"})));
    // The service is this test process: its environment holds the secrets.
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": format!("cat /proc/{}/environ", std::process::id())}),
    ));
    for target in &targets {
        fake.push(Reply::tool_use(
            "Bash",
            json!({"command": format!("chmod 000 '{}'", target.display())}),
        ));
    }
    fake.push(Reply::text("Tried."));
    assert_eq!(
        app.chat(id, "lock everyone out").await.status(),
        StatusCode::OK
    );

    let last = fake.requests().len() - 1;
    let results = tool_results_in(&fake, last);
    assert_eq!(results.len(), 2 + targets.len());
    assert_eq!(results[1]["is_error"], true, "{}", results[1]);
    assert!(
        !results[1]["content"].as_str().unwrap().contains("PATH="),
        "{}",
        results[1]
    );
    let uid: u32 = results[0]["content"]
        .as_str()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(uid, 0, "commands never run as root");
    assert_eq!(
        std::fs::metadata(std::path::Path::new(alice["cwd"].as_str().unwrap()))
            .unwrap()
            .uid(),
        uid,
        "alice's directory is her id's"
    );
    for result in &results[2..] {
        assert_eq!(result["is_error"], true, "{result}");
        assert!(
            result["content"]
                .as_str()
                .unwrap()
                .contains("not permitted"),
            "{result}"
        );
    }
    assert_eq!(modes(&targets), before);

    // Bob and the store carry on.
    fake.push(Reply::tool_use("Bash", json!({"command": "cat mine.txt"})));
    fake.push(Reply::text("Read."));
    assert_eq!(app.chat(&bob_id, "read").await.status(), StatusCode::OK);
    let results = tool_results_in(&fake, fake.requests().len() - 1);
    let cat = results.last().unwrap();
    assert_eq!(cat["content"], "mine\n", "{cat}");
    app.stop().await;
}

#[tokio::test]
async fn a_session_cannot_reach_another_subdir_of_the_same_user() {
    let fake = FakeAnthropic::start().await;
    let app = app_with(&fake, |_| {}).await;
    let a = app
        .create_session(json!({"user_id": "alice", "subdir": "proj-a"}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let b = app
        .create_session(json!({"user_id": "alice", "subdir": "proj-b"}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let b_dir = std::path::PathBuf::from(b["cwd"].as_str().unwrap());
    std::fs::write(b_dir.join("private.txt"), "project b only").unwrap();

    fake.push(Reply::tool_use(
        "Read",
        json!({"file_path": "../proj-b/private.txt"}),
    ));
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "cat ../proj-b/private.txt; echo x > ../proj-b/planted.txt"}),
    ));
    fake.push(Reply::text("Could not."));
    let id = a["session_id"].as_str().unwrap();
    assert_eq!(app.chat(id, "peek").await.status(), StatusCode::OK);
    let results = tool_results_in(&fake, 2);
    assert_eq!(results[0]["is_error"], true, "{}", results[0]);
    assert!(
        !results[1]["content"]
            .as_str()
            .unwrap()
            .contains("project b only"),
        "{}",
        results[1]
    );
    assert!(!b_dir.join("planted.txt").exists());
    app.stop().await;
}
