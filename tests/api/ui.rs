//! The `/ui` playground, used in headless Chromium (Debian's `chromium`)
//! through `tests/ui/playground.mjs` (playwright-core from
//! `tests/ui/node_modules`, installed by `scripts/test`), against
//! fake-anthropic. Without a browser the tests say so and pass, unless
//! `CLAUDE_AGENT_REQUIRE_BROWSER` is set (as `.ci/run` does).

use std::path::{Path, PathBuf};
use std::time::Duration;

use claude_agent_http::config::StorageKind;
use fake_anthropic::{FakeAnthropic, Reply};
use serde_json::json;

use crate::chat::agent_app;

fn browser() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("CHROMIUM").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin/chromium")),
        Some(PathBuf::from("/usr/bin/chromium-browser")),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.is_file());
    let driver =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/node_modules/playwright-core");
    match (found, driver.is_dir()) {
        (Some(chromium), true) => Some(chromium),
        (chromium, driver) => {
            let missing = match (chromium, driver) {
                (None, false) => "Chromium and tests/ui/node_modules",
                (None, true) => "Chromium (apt install chromium)",
                _ => "tests/ui/node_modules (npm ci --prefix tests/ui)",
            };
            assert!(
                std::env::var_os("CLAUDE_AGENT_REQUIRE_BROWSER").is_none(),
                "the browser test needs {missing}"
            );
            eprintln!("skipped: the browser test needs {missing}");
            None
        }
    }
}

/// Runs one scenario of the browser script; panics with its output unless
/// every check in it passed.
async fn run_scenario(chromium: &Path, url: &str, scenario: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/playground.mjs");
    let mut command = tokio::process::Command::new("node");
    command
        .arg(script)
        .arg(url)
        .arg(scenario)
        .env("CHROMIUM", chromium)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(240), command.output())
        .await
        .unwrap_or_else(|_| panic!("the browser scenario {scenario} took over 240 s"))
        .unwrap_or_else(|e| panic!("cannot run node for the browser test: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(&format!("ok {scenario}")),
        "browser scenario {scenario} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

#[tokio::test]
async fn a_person_chats_sees_tool_calls_and_todos_and_a_reload_keeps_the_conversation() {
    let Some(chromium) = browser() else { return };
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    fake.push(Reply::tool_use(
        "TodoWrite",
        json!({"todos": [{"content": "Say hello", "status": "in_progress", "activeForm": "Saying hello"}]}),
    ));
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "echo hello-from-bash"}),
    ));
    fake.push(Reply::tool_use(
        "Write",
        json!({"file_path": "notes.md", "content": "# Notes\n"}),
    ));
    fake.push(Reply::text("The command printed **hello-from-bash**."));

    run_scenario(&chromium, &app.address, "conversation").await;

    // The page drove a real turn: four model calls, the command's output
    // went back to the model.
    let requests = fake.requests();
    assert_eq!(requests.len(), 4, "model calls made from the page");
    assert!(
        requests[2].body.to_string().contains("hello-from-bash"),
        "the Bash output reached the model"
    );
}

#[tokio::test]
async fn a_reload_in_the_middle_of_a_turn_picks_the_stream_up_again() {
    let Some(chromium) = browser() else { return };
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    fake.push(
        Reply::text(
            "First part of the answer, then a few more words that arrive slowly, \
             one after another, until the last part.",
        )
        .slow(150),
    );

    run_scenario(&chromium, &app.address, "reload-mid-turn").await;
}

#[tokio::test]
async fn a_person_approves_a_command_from_the_page() {
    let Some(chromium) = browser() else { return };
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |s| {
        s.defaults.ask_tools = vec!["Bash".into()];
    })
    .await
    .unwrap();
    fake.push(Reply::tool_use("Bash", json!({"command": "rm -rf build"})));
    fake.push(Reply::text("Cleaned the build directory."));

    run_scenario(&chromium, &app.address, "approval").await;

    let last = fake.requests().pop().unwrap();
    assert!(
        !last.body.to_string().contains("denied"),
        "the approved call ran: {}",
        last.body
    );
}

#[tokio::test]
async fn the_page_serves_its_assets_with_a_strict_content_security_policy() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Memory, &fake, |_| {}).await.unwrap();
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let headers = res.headers();
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}: {:?}",
            headers["content-type"]
        );
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    // Nothing on the page comes from elsewhere: it works offline.
    let page = app
        .client
        .get(app.url("/ui"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    let root: serde_json::Value = app
        .client
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(root["ui"], "/ui");
}

#[tokio::test]
async fn a_person_answers_the_agents_question_from_the_page() {
    let Some(chromium) = browser() else { return };
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    fake.push(Reply::tool_use(
        "AskUserQuestion",
        json!({"questions": [{"question": "Which file next?", "header": "File", "multiSelect": false,
                "options": [{"label": "b.txt", "description": "Write b.txt"},
                            {"label": "none", "description": "Stop here"}]}]}),
    ));
    fake.push(Reply::text("You chose b.txt."));

    run_scenario(&chromium, &app.address, "question").await;

    let last = fake.requests().pop().unwrap();
    assert!(
        last.body
            .to_string()
            .contains(r#"\"Which file next?\"=\"b.txt\""#),
        "the answer reached the model: {}",
        last.body
    );
}
