//! Huge files against the file tools, in a test binary of its own so the
//! process's peak memory is this test's alone.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use claude_agent_http::domain::{Subdir, UserId};
use claude_agent_http::tools::edit::EditTool;
use claude_agent_http::tools::read::ReadTool;
use claude_agent_http::tools::write::WriteTool;
use claude_agent_http::tools::{Tool, ToolContext, ToolOutput};
use claude_agent_http::workspace::Workspace;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

async fn call(tool: &dyn Tool, ctx: &ToolContext, input: Value) -> ToolOutput {
    tokio::time::timeout(Duration::from_secs(120), tool.call(input, ctx))
        .await
        .expect("the tool call ended")
}

/// The peak resident memory of this test process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[tokio::test]
async fn huge_files_do_not_fill_the_services_memory() {
    const HUGE: u64 = 512 * 1024 * 1024;
    let base = helpers::test_dir();
    let user = UserId::parse("erin").unwrap();
    let sub = Subdir::parse("proj").unwrap();
    let ws = Workspace::open(base.path(), &user, Some(&sub), true).unwrap();
    // One line of half a gigabyte, written in chunks; and a sparse file.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(ws.root().join("one-line.txt")).unwrap();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..(HUGE >> 20) {
            f.write_all(&chunk).unwrap();
        }
    }
    let sparse = std::fs::File::create(ws.root().join("sparse.bin")).unwrap();
    sparse.set_len(4 * HUGE).unwrap();
    let before = peak_rss();
    let c = ToolContext::new(ws.clone(), CancellationToken::new());

    let out = call(
        &ReadTool,
        &c,
        json!({"file_path": "one-line.txt", "limit": 1}),
    )
    .await;
    assert!(!out.is_error, "{out:?}");
    assert!(
        out.content.contains("[line truncated]"),
        "{}",
        &out.content[..200]
    );
    let out = call(
        &ReadTool,
        &c,
        json!({"file_path": "sparse.bin", "limit": 1}),
    )
    .await;
    assert!(out.is_error && out.content.contains("binary"), "{out:?}");

    let limit = 16 * 1024 * 1024;
    let out = call(
        &EditTool::new(limit),
        &c,
        json!({"file_path": "one-line.txt", "old_string": "a", "new_string": "b", "replace_all": true}),
    )
    .await;
    assert!(out.is_error && out.content.contains("limit"), "{out:?}");
    let small_limit = 1024 * 1024;
    let out = call(
        &WriteTool::new(small_limit),
        &c,
        json!({"file_path": "big.txt", "content": "x".repeat(small_limit as usize + 1)}),
    )
    .await;
    assert!(out.is_error && out.content.contains("limit"), "{out:?}");
    assert!(!ws.root().join("big.txt").exists());

    let grown = peak_rss().saturating_sub(before);
    assert!(
        grown < 128 * 1024 * 1024,
        "reading and refusing huge files grew memory by {grown} bytes"
    );
    // The refused edit changed nothing.
    assert_eq!(
        std::fs::metadata(ws.root().join("one-line.txt"))
            .unwrap()
            .len(),
        HUGE
    );
}
