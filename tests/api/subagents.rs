//! The `Agent` tool through the HTTP API, with fake-anthropic scripting the
//! parent's and the subagents' calls: a subagent's own prompt, task and
//! tools, its report as the parent's result, its usage in the turn's, its
//! frames marked with the parent's call, the types a session may start, two
//! subagents at once, and an interrupt reaching a running subagent.

use std::path::PathBuf;

use claude_agent_http::config::{AgentConfig, StorageKind};
use fake_anthropic::{FakeAnthropic, Reply};
use serde_json::{Value, json};

use crate::chat::{Frames, agent_app};
use crate::helpers::tool_names;

/// The `tool_result` blocks of the last message request `request` carried.
fn last_results(request: &Value) -> Vec<Value> {
    let messages = request["messages"].as_array().unwrap();
    messages.last().unwrap()["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "tool_result")
        .cloned()
        .collect()
}

fn result_text(result: &Value) -> String {
    match &result["content"] {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn agent_call(description: &str, prompt: &str, kind: Option<&str>) -> (String, Value) {
    let mut input = json!({"description": description, "prompt": prompt});
    if let Some(kind) = kind {
        input["subagent_type"] = json!(kind);
    }
    ("Agent".to_owned(), input)
}

async fn session_in(app: &crate::helpers::TestApp) -> (String, PathBuf) {
    let session = app.new_session("alice").await;
    (
        session["session_id"].as_str().unwrap().to_owned(),
        PathBuf::from(session["cwd"].as_str().unwrap()),
    )
}

#[tokio::test]
async fn a_subagent_works_on_its_own_context_and_reports_to_the_parent() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let (id, cwd) = session_in(&app).await;
    std::fs::write(cwd.join("notes.md"), "port: 8080\n").unwrap();

    let (name, input) = agent_call("Find the port", "Find the file that sets the port.", None);
    fake.push(Reply::tool_use(name, input));
    fake.push(Reply::tool_use("Glob", json!({"pattern": "*.md"})));
    fake.push(Reply::text("The port is set in notes.md."));
    fake.push(Reply::text("It is notes.md."));
    let frames = Frames::new(
        app.chat_stream(json!({"session_id": id, "message": "where is the port set?"}))
            .await,
    )
    .collect()
    .await;

    let requests = fake.requests();
    assert_eq!(requests.len(), 4, "{requests:#?}");
    let (parent, nested) = (&requests[0].body, &requests[1].body);
    assert!(tool_names(parent).contains(&"Agent".to_owned()));
    // The subagent's first call: its own system prompt, the task alone,
    // and the parent's tools without Agent.
    let system = nested["system"].to_string();
    assert!(system.contains("subagent"), "{system}");
    assert_ne!(nested["system"], parent["system"]);
    assert_eq!(
        nested["model"], parent["model"],
        "general-purpose inherits the model"
    );
    let messages = nested["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["role"], "user");
    assert!(
        messages[0]["content"]
            .to_string()
            .contains("Find the file that sets the port."),
        "{}",
        messages[0]
    );
    assert!(!messages[0].to_string().contains("where is the port set?"));
    let nested_tools = tool_names(nested);
    assert!(
        !nested_tools.contains(&"Agent".to_owned()),
        "{nested_tools:?}"
    );
    assert!(
        nested_tools.contains(&"Glob".to_owned()),
        "{nested_tools:?}"
    );
    // Its Glob ran in the session's directory.
    let glob = last_results(&requests[2].body);
    assert!(result_text(&glob[0]).contains("notes.md"), "{glob:?}");

    // Its last text is the parent's result for the Agent call.
    let results = last_results(&requests[3].body);
    assert_eq!(results.len(), 1);
    assert_ne!(results[0]["is_error"], true);
    assert_eq!(result_text(&results[0]), "The port is set in notes.md.");

    // The nested run's frames name the parent's Agent call; the parent's
    // own frames do not.
    let agent_use = frames
        .iter()
        .find(|f| f["type"] == "tool_use" && f["tool_name"] == "Agent")
        .unwrap();
    let agent_id = agent_use["tool_use_id"].as_str().unwrap();
    assert!(agent_use.get("parent_tool_use_id").is_none());
    let nested_glob = frames
        .iter()
        .find(|f| f["type"] == "tool_use" && f["tool_name"] == "Glob")
        .unwrap();
    assert_eq!(nested_glob["parent_tool_use_id"], agent_id);
    let nested_result = frames
        .iter()
        .find(|f| f["type"] == "tool_result" && f["tool_name"] == "Glob")
        .unwrap();
    assert_eq!(nested_result["parent_tool_use_id"], agent_id);
    let nested_text: String = frames
        .iter()
        .filter(|f| f["type"] == "text_delta" && f["parent_tool_use_id"] == agent_id)
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert_eq!(nested_text, "The port is set in notes.md.");
    let parent_text: String = frames
        .iter()
        .filter(|f| f["type"] == "text_delta" && f.get("parent_tool_use_id").is_none())
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert_eq!(parent_text, "It is notes.md.");

    // Every call, the subagent's included, is in the turn's and the
    // session's usage.
    let done = frames.last().unwrap();
    assert_eq!(done["type"], "done");
    let session: Value = app.get_session(&id).await.json().await.unwrap();
    let fields = [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "output_tokens",
    ];
    let total = |calls: &[&fake_anthropic::Recorded]| -> u64 {
        calls
            .iter()
            .map(|r| fields.iter().map(|f| r.usage_tokens(f)).sum::<u64>())
            .sum()
    };
    let all: Vec<&fake_anthropic::Recorded> = requests.iter().collect();
    assert!(total(&all) > total(&[&requests[0], &requests[3]]));
    for field in fields {
        let spent: u64 = requests.iter().map(|r| r.usage_tokens(field)).sum();
        assert_eq!(done["usage"][field], spent, "{field}: {}", done["usage"]);
        assert_eq!(
            session["usage"][field], spent,
            "{field}: {}",
            session["usage"]
        );
    }
    // The subagent's conversation is not part of the session's history.
    assert_eq!(
        requests[3].body["messages"].as_array().unwrap().len(),
        3,
        "{}",
        requests[3].body["messages"]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_project_agent_file_sets_the_subagents_prompt_tools_and_model() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let (id, cwd) = session_in(&app).await;
    std::fs::create_dir_all(cwd.join(".claude/agents")).unwrap();
    std::fs::write(
        cwd.join(".claude/agents/reviewer.md"),
        "---\nname: reviewer\ndescription: Reviews changes for bugs\ntools: Read, Grep\nmodel: haiku\n---\nYou review code and list REVIEWER-MARKER findings.\n",
    )
    .unwrap();
    // Skipped: no description.
    std::fs::write(
        cwd.join(".claude/agents/broken.md"),
        "---\nname: broken\n---\nNothing.\n",
    )
    .unwrap();

    let (name, input) = agent_call("Review the diff", "Review main.py.", Some("reviewer"));
    fake.push(Reply::tool_use(name, input));
    fake.push(Reply::text("No findings."));
    fake.push(Reply::text("The review found nothing."));
    let response = app.chat(&id, "review it").await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);

    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    let description = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "Agent")
        .unwrap()["description"]
        .to_string();
    assert!(
        description.contains("reviewer: Reviews changes for bugs"),
        "{description}"
    );
    assert!(!description.contains("broken"), "{description}");
    let nested = &requests[1].body;
    let mut tools = tool_names(nested);
    tools.sort();
    assert_eq!(tools, ["Grep", "Read"]);
    assert_eq!(nested["model"], "claude-haiku-4-5");
    assert!(nested["system"].to_string().contains("REVIEWER-MARKER"));
    assert_eq!(
        result_text(&last_results(&requests[2].body)[0]),
        "No findings."
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_subagent_type_is_an_error_naming_the_available_types() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |s| {
        s.agents.insert(
            "planner".into(),
            AgentConfig {
                description: "Plans work".into(),
                prompt: "You plan.".into(),
                tools: None,
                model: None,
            },
        );
    })
    .await
    .unwrap();
    let (id, _) = session_in(&app).await;
    let (name, input) = agent_call("Do it", "Do the thing.", Some("wizard"));
    fake.push(Reply::tool_use(name, input));
    fake.push(Reply::text("No such helper."));
    app.chat(&id, "go").await;

    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "no subagent call was made");
    let result = &last_results(&requests[1].body)[0];
    assert_eq!(result["is_error"], true);
    let text = result_text(result);
    assert!(text.contains("wizard"), "{text}");
    assert!(text.contains("general-purpose, planner"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn two_agent_calls_of_one_reply_run_side_by_side_and_report_in_order() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let (id, _) = session_in(&app).await;
    fake.push(Reply::ToolUse {
        text: None,
        calls: vec![
            agent_call("First part", "alpha task: read the docs.", None),
            agent_call("Second part", "beta task: read the code.", None),
        ],
    });
    // The subagents may ask in either order: each answer goes to its task.
    // Streamed slowly, word by word, so that two runs at once interleave.
    fake.push(
        Reply::text("alpha report, first words and more")
            .slow(60)
            .unless("beta task"),
    );
    fake.push(
        Reply::text("beta report, first words and more")
            .slow(60)
            .unless("alpha task"),
    );
    fake.push(Reply::text("Both done."));
    let frames = Frames::new(
        app.chat_stream(json!({"session_id": id, "message": "split it"}))
            .await,
    )
    .collect()
    .await;
    let done = frames.last().unwrap();
    assert_eq!(done["type"], "done", "{frames:?}");
    assert_eq!(done["text"], "Both done.");

    let requests = fake.requests();
    assert_eq!(requests.len(), 4);
    let results = last_results(&requests[3].body);
    let texts: Vec<String> = results.iter().map(result_text).collect();
    assert_eq!(
        texts,
        [
            "alpha report, first words and more",
            "beta report, first words and more"
        ]
    );
    let calls = done["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert!(
        calls
            .iter()
            .all(|c| c["tool"] == "Agent" && c["is_error"] == false)
    );

    // Each subagent streamed before the other had finished: they ran at
    // the same time, not one after the other.
    let ids: Vec<&str> = frames
        .iter()
        .filter(|f| f["type"] == "tool_use" && f["tool_name"] == "Agent")
        .map(|f| f["tool_use_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    let at = |id: &str| -> Vec<usize> {
        frames
            .iter()
            .enumerate()
            .filter(|(_, f)| f["type"] == "text_delta" && f["parent_tool_use_id"] == id)
            .map(|(i, _)| i)
            .collect()
    };
    let (first, second) = (at(ids[0]), at(ids[1]));
    assert!(first.len() > 1 && second.len() > 1, "{frames:?}");
    assert!(
        first[0] < second[second.len() - 1] && second[0] < first[first.len() - 1],
        "the two subagents' text did not interleave: {first:?} {second:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_interrupt_stops_a_running_subagent_and_its_turn() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let (id, _) = session_in(&app).await;
    let (name, input) = agent_call("Long task", "Write a long report.", None);
    fake.push(Reply::tool_use(name, input));
    fake.push(Reply::text("words ".repeat(200)).slow(50));
    let mut frames = Frames::new(
        app.chat_stream(json!({"session_id": id, "message": "go"}))
            .await,
    );
    // Once the subagent streams, interrupt the session's turn.
    let mut seen = Vec::new();
    while let Some(frame) = frames.next().await {
        let nested_text =
            frame["type"] == "text_delta" && frame.get("parent_tool_use_id").is_some();
        seen.push(frame);
        if nested_text {
            break;
        }
    }
    assert_eq!(app.interrupt(&id).await.status(), reqwest::StatusCode::OK);
    seen.extend(frames.collect().await);
    let done = seen.last().unwrap();
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(done["stop_reason"], "interrupted");
    let result = seen
        .iter()
        .find(|f| f["type"] == "tool_result" && f["tool_name"] == "Agent")
        .unwrap();
    assert_eq!(result["is_error"], true, "{result}");
    // The parent made no call after the interrupt.
    assert_eq!(fake.requests().len(), 2);
    app.stop().await;
}
