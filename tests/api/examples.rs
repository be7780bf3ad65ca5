//! The example clients in `examples/` run against the real app and
//! fake-anthropic, so they keep working as the API changes: each creates a
//! session, streams a turn with a scripted tool call and prints what the
//! agent did.
//!
//! They need `node` (20 or later) and `python3` on `PATH`, as `scripts/test`
//! does; the Python client uses only the standard library.

use std::path::Path;
use std::time::Duration;

use claude_agent_http::config::StorageKind;
use fake_anthropic::{FakeAnthropic, Reply};
use serde_json::json;

use crate::chat::agent_app;

/// Runs an example with the service's URL in its environment and returns
/// its standard output; panics, showing both streams, unless it exits 0.
async fn run_example(program: &str, script: &str, url: &str, key: Option<&str>) -> String {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut command = tokio::process::Command::new(program);
    command
        .arg(examples.join(script))
        .arg("Say hello from a shell")
        .env("CLAUDE_AGENT_URL", url)
        .env("CLAUDE_AGENT_USER", "example-user")
        .kill_on_drop(true);
    if let Some(key) = key {
        command.env("CLAUDE_AGENT_API_KEY", key);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {script} took over 60 s"))
        .unwrap_or_else(|e| panic!("cannot run {program} (needed by the examples): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{program} {script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

/// Scripts a Bash call and an answer, runs the example and checks that it
/// printed the session, the call, its result and the answer. With `key`,
/// the service requires it and the example sends it.
async fn an_example_client_shows_what_the_agent_did(
    program: &str,
    script: &str,
    key: Option<&str>,
) {
    let fake = FakeAnthropic::start().await;
    let admin = key.map(claude_agent_http::config::Secret::new);
    let app = agent_app(StorageKind::Memory, &fake, |s| s.api.api_keys.extend(admin))
        .await
        .unwrap();
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "echo hello-from-bash"}),
    ));
    fake.push(Reply::text("The command printed hello-from-bash."));

    let out = run_example(program, script, &app.address, key).await;

    assert!(out.starts_with("session "), "{out}");
    assert!(
        out.contains("example-user"),
        "the session's directory: {out}"
    );
    assert!(
        out.contains(r#"[tool_use] Bash {"command":"echo hello-from-bash"}"#)
            || out.contains(r#"[tool_use] Bash {"command": "echo hello-from-bash"}"#),
        "{out}"
    );
    assert!(
        out.contains("[tool_result] Bash ok: hello-from-bash"),
        "{out}"
    );
    assert!(
        out.contains("The command printed hello-from-bash."),
        "{out}"
    );
    assert!(
        out.contains("[done] stop_reason=end_turn model_calls=2 tool_calls=1"),
        "{out}"
    );
    // The turn really ran: the model got the command's output back.
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests[1].body.to_string().contains("hello-from-bash\\n"),
        "the tool result reached the model"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_javascript_example_client_streams_a_turn() {
    an_example_client_shows_what_the_agent_did("node", "client.mjs", None).await;
}

#[tokio::test]
async fn the_javascript_example_client_sends_its_api_key() {
    an_example_client_shows_what_the_agent_did("node", "client.mjs", Some("example-admin-key"))
        .await;
}

#[tokio::test]
async fn the_python_example_client_streams_a_turn() {
    an_example_client_shows_what_the_agent_did("python3", "client.py", None).await;
}

#[tokio::test]
async fn the_python_example_client_sends_its_api_key() {
    an_example_client_shows_what_the_agent_did("python3", "client.py", Some("example-admin-key"))
        .await;
}
