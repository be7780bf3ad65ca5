//! The HTTP control endpoints and the binary.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{send, simple};
use fake_anthropic::{FakeAnthropic, Reply};
use serde_json::{Value, json};

#[tokio::test]
async fn health_is_ok() {
    let fake = FakeAnthropic::start().await;
    let response = reqwest::get(format!("{}/health", fake.url()))
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn replies_can_be_scripted_over_http() {
    let fake = FakeAnthropic::start().await;
    let client = common::client();
    let script = json!([
        {"kind": "error", "status": 529, "error_type": "overloaded_error", "message": "Overloaded", "times": 2},
        {"kind": "tool_use", "calls": [{"name": "Bash", "input": {"command": "pwd"}}]},
        {"kind": "slow", "delay_ms": 1, "reply": {"kind": "text", "text": "hi"}},
    ]);
    let response = client
        .post(format!("{}/_fake/replies", fake.url()))
        .json(&script)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer, json!({"queued": 3, "pending": 3}));

    assert_eq!(send(&fake, simple("a")).await.0, 529);
    assert_eq!(send(&fake, simple("a")).await.0, 529);
    let (_, body) = send(&fake, simple("a")).await;
    assert_eq!(body["content"][0]["name"], "Bash");
    assert_eq!(body["content"][0]["input"], json!({"command": "pwd"}));
    let (_, body) = send(&fake, simple("a")).await;
    assert_eq!(body["content"][0]["text"], "hi");

    let recorded: Value = client
        .get(format!("{}/_fake/requests", fake.url()))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let recorded = recorded.as_array().expect("array");
    assert_eq!(recorded.len(), 4);
    assert_eq!(recorded[0]["status"], 529);
    assert_eq!(recorded[3]["status"], 200);
    assert_eq!(recorded[3]["body"]["messages"][0]["content"], "a");
    assert!(
        recorded[3]["headers"]
            .as_array()
            .expect("headers")
            .contains(&json!(["anthropic-version", "2023-06-01"]))
    );

    let response = client
        .post(format!("{}/_fake/reset", fake.url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_bad_script_is_rejected_whole() {
    let fake = FakeAnthropic::start().await;
    let response = common::client()
        .post(format!("{}/_fake/replies", fake.url()))
        .json(&json!([{"kind": "text", "text": "ok"}, {"kind": "txet", "text": "typo"}]))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .starts_with("replies.1:")
    );
    assert_eq!(fake.pending(), 0);
}

#[tokio::test]
async fn reset_and_recorded_headers_from_rust() {
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::text("unused"));
    send(&fake, simple("first")).await;
    let recorded = fake.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].header("X-Api-Key"), Some("test-key"));
    assert_eq!(recorded[0].body["messages"][0]["content"], "first");
    fake.push(Reply::text("queued"));
    fake.reset();
    assert_eq!(fake.pending(), 0);
    assert!(fake.requests().is_empty());
    let (_, body) = send(&fake, simple("again")).await;
    assert_eq!(body["content"][0]["text"], "Echo: again");
}

#[tokio::test]
async fn unknown_paths_get_the_real_404_shape() {
    let fake = FakeAnthropic::start().await;
    let response = reqwest::get(format!("{}/v1/nope", fake.url()))
        .await
        .expect("sent");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["type"], "not_found_error");
}

/// Starts the binary and returns it with the banner line it printed.
async fn spawn_binary(args: &[&str]) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-anthropic"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("a line");
        line
    })
    .await
    .expect("reader");
    (child, line)
}

async fn signal_and_wait(child: std::process::Child, signal: &str) -> std::process::ExitStatus {
    let mut child = child;
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("waiter")
        .expect("exit status")
}

#[tokio::test]
async fn the_binary_serves_and_stops_on_sigterm() {
    let (child, line) = spawn_binary(&["--port", "0", "--api-key", "bin-key"]).await;
    let url = line
        .trim()
        .strip_prefix("fake-anthropic listening on ")
        .unwrap_or_else(|| panic!("unexpected banner {line:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let response = common::client()
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", "bin-key")
        .header("anthropic-version", "2023-06-01")
        .json(&simple("from the binary"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["content"][0]["text"], "Echo: from the binary");

    let status = signal_and_wait(child, "-TERM").await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn the_binary_exits_cleanly_on_an_immediate_sigint() {
    let (child, line) = spawn_binary(&["--port", "0"]).await;
    assert!(
        line.starts_with("fake-anthropic listening on http://"),
        "{line}"
    );
    let status = signal_and_wait(child, "-INT").await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn the_binary_takes_the_simulation_flags() {
    let (child, line) = spawn_binary(&[
        "--port",
        "0",
        "--context-window",
        "10",
        "--overloaded-model",
        "claude-busy",
    ])
    .await;
    let url = line
        .trim()
        .strip_prefix("fake-anthropic listening on ")
        .unwrap_or_else(|| panic!("unexpected banner {line:?}"))
        .to_owned();
    let post = |body: Value| {
        common::client()
            .post(format!("{url}/v1/messages"))
            .header("x-api-key", "k")
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
    };
    let response = post(simple(&"too long for ten tokens ".repeat(4)))
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("prompt is too long: ") && m.ends_with(" > 10 maximum")),
        "{body}"
    );
    let mut busy = simple("hi");
    busy["model"] = json!("claude-busy");
    assert_eq!(post(busy).await.expect("sent").status(), 529);

    let status = signal_and_wait(child, "-TERM").await;
    assert!(status.success(), "{status:?}");
}
