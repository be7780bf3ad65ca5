//! The real binary as an operator runs it: killed with SIGKILL mid-answer and
//! restarted on the same database, and stopped with SIGTERM during a long tool.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use fake_anthropic::{FakeAnthropic, Reply};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::chat::Frames;
use crate::helpers::test_dir;

const EXE: &str = env!("CARGO_BIN_EXE_claude-agent-http");

/// The service binary on SQLite under `root`, its model API `fake`.
struct Service {
    child: Child,
    address: String,
    client: reqwest::Client,
}

impl Service {
    async fn start(root: &Path, fake: &FakeAnthropic, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(EXE);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", root)
            // No ./config.yaml of the repository.
            .current_dir(root)
            .env("CLAUDE_AGENT_API_HOST", "127.0.0.1")
            .env("CLAUDE_AGENT_API_PORT", "0")
            .env("CLAUDE_AGENT_SESSION_STORAGE", "sqlite")
            .env(
                "CLAUDE_AGENT_SESSION_SQLITE_PATH",
                root.join("db/sessions.db"),
            )
            .env("CLAUDE_AGENT_USER_BASE_DIR", root.join("users"))
            .env("CLAUDE_AGENT_TOOLS_SANDBOX", "off")
            .env("CLAUDE_AGENT_LOG_FORMAT", "json")
            .env("ANTHROPIC_BASE_URL", fake.url())
            .env("ANTHROPIC_API_KEY", "test-key")
            .env("ANTHROPIC_MODEL", "claude-sonnet-4-6")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("the service starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read the log") {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if event["message"] == "listening" {
                    return event["port"].as_u64().expect("listening has a port");
                }
            }
            panic!("the service exited before listening");
        })
        .await
        .expect("the service listens within 30 s");
        // Keep reading so the service never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            address: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    async fn new_session(&self) -> String {
        let response = self
            .client
            .post(self.url("/api/v1/sessions"))
            .json(&json!({"user_id": "alice"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let session: Value = response.json().await.unwrap();
        session["session_id"].as_str().unwrap().to_owned()
    }

    async fn get(&self, path: &str) -> Value {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.unwrap()
    }

    async fn chat_stream(&self, id: &str, message: &str) -> Frames {
        let response = self
            .client
            .post(self.url("/api/v1/chat/stream"))
            .json(&json!({"session_id": id, "message": message, "timeout": 300}))
            .send()
            .await
            .unwrap();
        Frames::new(response)
    }

    fn signal(&self, signal: Signal) {
        let pid = self.child.id().expect("the service runs");
        let pid = Pid::from_raw(i32::try_from(pid).unwrap());
        kill(pid, signal).expect("signal sent");
    }
}

/// The text of every assistant message, in order.
fn assistant_texts(messages: &Value) -> Vec<String> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| {
            m["content"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<String>()
        })
        .collect()
}

#[tokio::test]
async fn text_a_client_saw_and_spent_usage_survive_a_sigkill() {
    let fake = FakeAnthropic::start().await;
    let tmp = test_dir();
    let service = Service::start(tmp.path(), &fake, &[]).await;
    let id = service.new_session().await;
    // One complete model call (a tool call), then an answer streamed slowly
    // enough to be killed in the middle of.
    fake.push(Reply::tool_use("Bash", json!({"command": "true"})));
    let words: Vec<String> = (1..=200).map(|n| format!("word{n} ")).collect();
    fake.push(Reply::text(words.concat()).slow(100));

    let mut frames = service.chat_stream(&id, "write a long answer").await;
    let mut seen = String::new();
    while !seen.contains("word3 ") {
        let frame = frames.next().await.expect("the stream goes on");
        if frame["type"] == "text_delta" {
            seen.push_str(frame["text"].as_str().unwrap());
        }
    }
    // Saving is coalesced; wait (bounded) until what the client saw is saved.
    let messages_path = format!("/api/v1/sessions/{id}/messages");
    let mut saved = false;
    for _ in 0..100 {
        let messages = service.get(&messages_path).await;
        if assistant_texts(&messages)
            .last()
            .is_some_and(|t| t.starts_with(&seen))
        {
            saved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saved, "the streamed text {seen:?} was never saved");
    let mut service = service;
    service.signal(Signal::SIGKILL);
    service.child.wait().await.unwrap();

    let service = Service::start(tmp.path(), &fake, &[]).await;
    let messages = service.get(&messages_path).await;
    let texts = assistant_texts(&messages);
    assert!(
        texts.last().is_some_and(|t| t.starts_with(&seen)),
        "after the restart: {texts:?}"
    );
    let session = service.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(session["message_count"], 1, "{session}");
    let usage = &session["usage"];
    let input = [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ]
    .iter()
    .map(|field| usage[field].as_u64().unwrap())
    .sum::<u64>();
    assert!(input > 0, "{session}");
    assert!(usage["output_tokens"].as_u64().unwrap() > 0, "{session}");
    assert!(usage["cost_usd"].as_f64().unwrap() > 0.0, "{session}");
}

#[tokio::test]
async fn sigterm_cancels_a_long_tool_after_the_grace_and_saves_its_result() {
    let fake = FakeAnthropic::start().await;
    let tmp = test_dir();
    let service = Service::start(
        tmp.path(),
        &fake,
        &[("CLAUDE_AGENT_API_SHUTDOWN_GRACE_SECS", "2")],
    )
    .await;
    let id = service.new_session().await;
    fake.push(Reply::tool_use("Bash", json!({"command": "sleep 50"})));

    let mut frames = service.chat_stream(&id, "wait a while").await;
    loop {
        let frame = frames.next().await.expect("the stream goes on");
        if frame["type"] == "tool_use" {
            break;
        }
    }
    let mut service = service;
    service.signal(Signal::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(20), service.child.wait())
        .await
        .expect("the service exits long before the 50 s tool would end")
        .unwrap();
    assert!(status.success(), "{status:?}");
    // The client was told why its turn ended.
    let mut last = Value::Null;
    while let Some(frame) = frames.next().await {
        last = frame;
    }
    assert_eq!(last["type"], "error", "{last}");

    let service = Service::start(tmp.path(), &fake, &[]).await;
    let messages = service
        .get(&format!("/api/v1/sessions/{id}/messages"))
        .await;
    let result = messages
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().unwrap())
        .find(|b| b["type"] == "tool_result")
        .unwrap_or_else(|| panic!("no tool result saved: {messages}"));
    assert_eq!(result["is_error"], true, "{result}");
    assert!(
        result["content"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("interrupted"),
        "{result}"
    );
}
