//! Claude Code's stateful tools through the HTTP API, with fake-anthropic
//! scripting the calls: the todo list in the session and the stream, the
//! read-before-edit guard, Bash's working directory kept between calls, and
//! notebooks read and edited cell by cell.

use std::path::{Path, PathBuf};

use claude_agent_http::config::StorageKind;
use fake_anthropic::{FakeAnthropic, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::{Frames, agent_app};
use crate::helpers::*;
use crate::on_every_backend;

fn content(result: &Value) -> &str {
    result["content"].as_str().unwrap()
}

fn is_error(result: &Value) -> bool {
    result["is_error"] == true
}

async fn session_in(app: &TestApp) -> (String, PathBuf) {
    let session = app.new_session("alice").await;
    (
        session["session_id"].as_str().unwrap().to_owned(),
        PathBuf::from(session["cwd"].as_str().unwrap()),
    )
}

async fn chat_ok(app: &TestApp, id: &str) {
    let response = app.chat(id, "go").await;
    assert_eq!(response.status(), StatusCode::OK);
}

on_every_backend!(todos_are_kept_and_streamed, todos_are_kept_and_streamed);

async fn todos_are_kept_and_streamed(storage: StorageKind) {
    let fake = FakeAnthropic::start().await;
    let Some(app) = agent_app(storage, &fake, |_| {}).await else {
        return;
    };
    let (id, _) = session_in(&app).await;
    let fresh: Value = app.get_session(&id).await.json().await.unwrap();
    assert_eq!(fresh["todos"], json!([]));

    let plan = json!([
        {"content": "Write the parser", "status": "completed", "activeForm": "Writing the parser"},
        {"content": "Run the tests", "status": "in_progress", "activeForm": "Running the tests"},
        {"content": "Update the README", "status": "pending", "activeForm": "Updating the README"}
    ]);
    fake.push(Reply::tool_use("TodoWrite", json!({ "todos": plan })));
    fake.push(Reply::tool_use(
        "TodoWrite",
        json!({"todos": [{"content": "Ship", "status": "done", "activeForm": "Shipping"}]}),
    ));
    fake.push(Reply::text("Planned."));
    let frames = Frames::new(
        app.chat_stream(json!({"session_id": id, "message": "plan it"}))
            .await,
    )
    .collect()
    .await;

    let todos: Vec<&Value> = frames.iter().filter(|f| f["type"] == "todos").collect();
    assert_eq!(
        todos.len(),
        1,
        "only the valid list is a change: {frames:?}"
    );
    assert_eq!(todos[0]["todos"], plan);
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    let at = kinds.iter().position(|k| *k == "todos").unwrap();
    assert_eq!(
        &kinds[at - 1..=at + 1],
        ["tool_use", "todos", "tool_result"]
    );
    assert_eq!(kinds.last(), Some(&"done"));

    let results = tool_results_in(&fake, 2);
    assert!(!is_error(&results[0]), "{}", results[0]);
    assert!(is_error(&results[1]), "{}", results[1]);
    assert!(
        content(&results[1]).contains("todos[0]: `status` must be"),
        "{}",
        results[1]
    );
    // The list the model was offered the tool for is the one stored.
    let session: Value = app.get_session(&id).await.json().await.unwrap();
    assert_eq!(session["todos"], plan, "the refused list changed nothing");
    app.stop().await;
}

#[tokio::test]
async fn edits_need_a_read_of_the_current_file() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let (id, cwd) = session_in(&app).await;
    let file = cwd.join("app.py");
    std::fs::write(&file, "x = 1\n").unwrap();
    std::fs::write(cwd.join("other.txt"), "keep me\n").unwrap();

    let edit = |old: &str, new: &str| {
        Reply::tool_use(
            "Edit",
            json!({"file_path": "app.py", "old_string": old, "new_string": new}),
        )
    };
    fake.push(edit("x = 1", "x = 2"));
    fake.push(Reply::tool_use("Read", json!({"file_path": "app.py"})));
    fake.push(edit("x = 1", "x = 2"));
    fake.push(Reply::tool_use(
        "Write",
        json!({"file_path": "other.txt", "content": "overwritten\n"}),
    ));
    fake.push(Reply::tool_use(
        "Write",
        json!({"file_path": "new/fresh.txt", "content": "new\n"}),
    ));
    fake.push(Reply::text("Edited."));
    chat_ok(&app, &id).await;
    let results = tool_results_in(&fake, 5);
    assert!(is_error(&results[0]), "{}", results[0]);
    assert!(
        content(&results[0]).contains("has not been read in this session"),
        "{}",
        results[0]
    );
    assert!(
        !is_error(&results[1]) && !is_error(&results[2]),
        "{results:?}"
    );
    assert!(
        is_error(&results[3]),
        "overwriting an unread file: {}",
        results[3]
    );
    assert!(
        !is_error(&results[4]),
        "a new file needs no Read: {}",
        results[4]
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x = 2\n");
    assert_eq!(
        std::fs::read_to_string(cwd.join("other.txt")).unwrap(),
        "keep me\n"
    );
    assert_eq!(
        std::fs::read_to_string(cwd.join("new/fresh.txt")).unwrap(),
        "new\n"
    );

    // The user changes the file between turns, keeping its size.
    std::fs::write(&file, "y = 2\n").unwrap();
    fake.push(edit("y = 2", "y = 3"));
    fake.push(Reply::tool_use(
        "Write",
        json!({"file_path": "new/fresh.txt", "content": "rewritten\n"}),
    ));
    fake.push(Reply::text("Refused."));
    chat_ok(&app, &id).await;
    let results = tool_results_in(&fake, 8);
    let (stale, own) = (&results[results.len() - 2], &results[results.len() - 1]);
    assert!(is_error(stale), "{stale}");
    assert!(content(stale).contains("changed on disk"), "{stale}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "y = 2\n");
    assert!(!is_error(own), "what it wrote itself counts as read: {own}");
    assert_eq!(
        std::fs::read_to_string(cwd.join("new/fresh.txt")).unwrap(),
        "rewritten\n"
    );
    app.stop().await;
}

#[tokio::test]
async fn bash_keeps_its_directory_inside_the_session() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let (id, cwd) = session_in(&app).await;
    let bash = |command: &str| Reply::tool_use("Bash", json!({ "command": command }));
    fake.push(bash("mkdir -p sub/deeper && cd sub"));
    fake.push(bash("pwd"));
    fake.push(bash("cd / && pwd"));
    fake.push(bash("pwd"));
    fake.push(bash("cd sub/deeper"));
    fake.push(Reply::text("Moved."));
    chat_ok(&app, &id).await;
    let results = tool_results_in(&fake, 5);
    let shown = |p: &Path| format!("{}\n", p.display());
    assert_eq!(content(&results[1]), shown(&cwd.join("sub")), "{results:?}");
    assert!(
        content(&results[2]).starts_with("/\n")
            && content(&results[2]).contains("outside the session's directory"),
        "{}",
        results[2]
    );
    assert_eq!(
        content(&results[3]),
        shown(&cwd),
        "reset to the session's directory"
    );

    // The next turn goes on where the last command left off.
    fake.push(bash("pwd"));
    fake.push(Reply::text("Here."));
    chat_ok(&app, &id).await;
    let results = tool_results_in(&fake, 7);
    assert_eq!(
        content(results.last().unwrap()),
        shown(&cwd.join("sub/deeper"))
    );
    app.stop().await;
}

fn notebook() -> Value {
    json!({
        "cells": [
            {"cell_type": "markdown", "id": "intro", "metadata": {}, "source": ["# Sums\n", "Adding numbers."]},
            {"cell_type": "code", "execution_count": 1, "id": "calc", "metadata": {"collapsed": false},
             "outputs": [
                {"output_type": "stream", "name": "stdout", "text": ["4\n"]},
                {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo=", "text/plain": ["<Figure size 640x480>"]}, "metadata": {}}
             ],
             "source": ["print(2 + 2)"]},
            {"cell_type": "code", "execution_count": 2, "id": "old", "metadata": {}, "outputs": [], "source": ["legacy()"]}
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5
    })
}

#[tokio::test]
async fn notebooks_are_read_as_cells_and_edited_cell_by_cell() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let (id, cwd) = session_in(&app).await;
    let path = cwd.join("sums.ipynb");
    std::fs::write(&path, serde_json::to_string_pretty(&notebook()).unwrap()).unwrap();

    let edit = |input: Value| Reply::tool_use("NotebookEdit", input);
    fake.push(edit(
        json!({"notebook_path": "sums.ipynb", "cell_id": "calc", "new_source": "print(3 + 3)"}),
    ));
    fake.push(Reply::tool_use("Read", json!({"file_path": "sums.ipynb"})));
    fake.push(edit(
        json!({"notebook_path": "sums.ipynb", "cell_id": "calc", "new_source": "print(3 + 3)"}),
    ));
    fake.push(edit(
        json!({"notebook_path": "sums.ipynb", "cell_id": "intro",
        "new_source": "More text.", "cell_type": "markdown", "edit_mode": "insert"}),
    ));
    fake.push(edit(
        json!({"notebook_path": "sums.ipynb", "cell_id": "old", "new_source": "", "edit_mode": "delete"}),
    ));
    fake.push(edit(
        json!({"notebook_path": "sums.ipynb", "cell_id": "ghost", "new_source": "x"}),
    ));
    fake.push(Reply::text("Edited."));
    chat_ok(&app, &id).await;
    let results = tool_results_in(&fake, 6);

    assert!(
        is_error(&results[0]) && content(&results[0]).contains("has not been read"),
        "{}",
        results[0]
    );
    let read = content(&results[1]);
    assert!(
        read.contains(
            "<cell id=\"calc\" type=\"code\" execution_count=\"1\">\nprint(2 + 2)\n</cell>"
        ),
        "{read}"
    );
    assert!(
        read.contains("4\n<Figure size 640x480>\n[image/png output not shown]"),
        "{read}"
    );
    for (i, result) in results[2..5].iter().enumerate() {
        assert!(!is_error(result), "edit {i}: {result}");
    }
    assert!(is_error(&results[5]) && content(&results[5]).contains("ghost"));

    let edited: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let cells = edited["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 3, "{edited}");
    assert_eq!(
        cells[0],
        notebook()["cells"][0],
        "untouched cells stay as they were"
    );
    assert_eq!(cells[1]["cell_type"], "markdown");
    assert_eq!(cells[1]["source"], json!(["More text."]));
    assert!(cells[1]["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(cells[2]["id"], "calc");
    assert_eq!(cells[2]["source"], json!(["print(3 + 3)"]));
    assert_eq!(cells[2]["outputs"], json!([]), "stale outputs are cleared");
    assert_eq!(cells[2]["execution_count"], Value::Null);
    assert_eq!(cells[2]["metadata"], json!({"collapsed": false}));
    assert_eq!(edited["metadata"], notebook()["metadata"]);
    assert_eq!(
        (edited["nbformat"].clone(), edited["nbformat_minor"].clone()),
        (json!(4), json!(5))
    );
    app.stop().await;
}

/// Polls `condition` every 50 ms until it holds; panics after 20 s.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The task id a `run_in_background` Bash call answered with.
fn task_id_in(text: &str) -> String {
    let start = text.find("bash_").expect("a task id in the result");
    text[start..start + 17].to_owned()
}

#[tokio::test]
async fn a_background_dev_server_is_read_twice_and_killed_when_the_session_is_deleted() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let (id, dir) = session_in(&app).await;

    fake.push(Reply::tool_use(
        "Bash",
        json!({
            "command": "echo $$ > server.pid; echo server ready; while true; do echo tick; sleep 0.05; done",
            "description": "Start the dev server",
            "run_in_background": true
        }),
    ));
    fake.push(Reply::text("The server runs."));
    chat_ok(&app, &id).await;
    let started = tool_results_in(&fake, 1);
    assert!(!is_error(&started[0]), "{}", content(&started[0]));
    let task = task_id_in(content(&started[0]));

    // The call returned at once while the server keeps running and writing.
    let pid_file = dir.join("server.pid");
    eventually("the server wrote its pid", || async { pid_file.exists() }).await;
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(command_alive(pid, &dir));
    eventually("the server printed ticks", || async {
        let session: Value = app.get_session(&id).await.json().await.unwrap();
        session["background_tasks"][0]["output_bytes"]
            .as_u64()
            .unwrap_or(0)
            > 40
    })
    .await;
    let session: Value = app.get_session(&id).await.json().await.unwrap();
    let listed = &session["background_tasks"][0];
    assert_eq!(listed["task_id"], task.as_str());
    assert_eq!(listed["status"], "running");
    assert_eq!(listed["description"], "Start the dev server");

    // First read: everything so far, the banner included.
    fake.push(Reply::tool_use(
        "TaskOutput",
        json!({"task_id": task, "block": false}),
    ));
    fake.push(Reply::text("It is ready."));
    chat_ok(&app, &id).await;
    let first = tool_results_in(&fake, 3).pop().unwrap();
    assert!(content(&first).contains("running"), "{}", content(&first));
    assert!(
        content(&first).contains("server ready"),
        "{}",
        content(&first)
    );

    // Second read: only what came since, through a filter.
    eventually("more ticks", || async {
        let session: Value = app.get_session(&id).await.json().await.unwrap();
        session["background_tasks"][0]["output_bytes"]
            .as_u64()
            .unwrap_or(0)
            > 200
    })
    .await;
    fake.push(Reply::tool_use(
        "TaskOutput",
        json!({"task_id": task, "block": false, "filter": "^tick$"}),
    ));
    fake.push(Reply::text("Still ticking."));
    chat_ok(&app, &id).await;
    let second = tool_results_in(&fake, 5).pop().unwrap();
    assert!(content(&second).contains("tick"), "{}", content(&second));
    assert!(
        !content(&second).contains("server ready"),
        "{}",
        content(&second)
    );

    // Deleting the session kills the server and all it started.
    assert_eq!(
        app.delete_session(&id).await.status(),
        StatusCode::NO_CONTENT
    );
    eventually("the server is gone", || async { !command_alive(pid, &dir) }).await;
}

#[tokio::test]
async fn background_shells_end_with_their_code_can_be_stopped_and_are_capped() {
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Memory, &fake, |_| {}).await.unwrap();
    let (id, _) = session_in(&app).await;

    // A short job: a blocking TaskOutput waits for its end and its code.
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "sleep 0.2; echo finished; exit 3", "run_in_background": true}),
    ));
    fake.push(Reply::text("Started."));
    chat_ok(&app, &id).await;
    let job = task_id_in(content(&tool_results_in(&fake, 1)[0]));
    fake.push(Reply::tool_use("TaskOutput", json!({"task_id": job})));
    fake.push(Reply::text("Done."));
    chat_ok(&app, &id).await;
    let waited = tool_results_in(&fake, 3).pop().unwrap();
    assert!(
        content(&waited).contains("exit code 3"),
        "{}",
        content(&waited)
    );
    assert!(
        content(&waited).contains("finished"),
        "{}",
        content(&waited)
    );

    // A long one, stopped with TaskStop.
    fake.push(Reply::tool_use(
        "Bash",
        json!({"command": "sleep 300", "run_in_background": true}),
    ));
    fake.push(Reply::text("Started."));
    chat_ok(&app, &id).await;
    let long = task_id_in(content(&tool_results_in(&fake, 5).pop().unwrap()));
    fake.push(Reply::tool_use("TaskStop", json!({"task_id": long})));
    fake.push(Reply::text("Stopped."));
    chat_ok(&app, &id).await;
    let stopped = tool_results_in(&fake, 7).pop().unwrap();
    assert!(!is_error(&stopped), "{}", content(&stopped));
    let session: Value = app.get_session(&id).await.json().await.unwrap();
    let tasks = session["background_tasks"].as_array().unwrap();
    assert_eq!(tasks[0]["status"], "failed");
    assert_eq!(tasks[0]["exit_code"], 3);
    assert_eq!(tasks[1]["status"], "stopped");

    // An unknown id is a clear error result.
    fake.push(Reply::tool_use(
        "TaskOutput",
        json!({"task_id": "bash_000000000000"}),
    ));
    fake.push(Reply::text("No such task."));
    chat_ok(&app, &id).await;
    let unknown = tool_results_in(&fake, 9).pop().unwrap();
    assert!(is_error(&unknown));
    assert!(
        content(&unknown).contains("No background shell"),
        "{}",
        content(&unknown)
    );

    // At most eight run at once; the ninth is refused and says why.
    for _ in 0..9 {
        fake.push(Reply::tool_use(
            "Bash",
            json!({"command": "sleep 300", "run_in_background": true}),
        ));
    }
    fake.push(Reply::text("Nine asked for."));
    let before = fake.requests().len();
    chat_ok(&app, &id).await;
    let results: Vec<Value> = (before..before + 9)
        .map(|n| tool_results_in(&fake, n + 1).pop().unwrap())
        .collect();
    assert!(results[..8].iter().all(|r| !is_error(r)));
    assert!(is_error(&results[8]));
    assert!(
        content(&results[8]).contains("Stop one with TaskStop"),
        "{}",
        content(&results[8])
    );
}
