//! The file tools under attack: a directory swapped for a symlink to another
//! user's while the tools run, and FIFOs where files should be (huge files
//! are in `huge_files.rs`).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use claude_agent_http::domain::{Subdir, UserId};
use claude_agent_http::skills::{self, SettingSource};
use claude_agent_http::tools::edit::EditTool;
use claude_agent_http::tools::grep::GrepTool;
use claude_agent_http::tools::read::ReadTool;
use claude_agent_http::tools::write::WriteTool;
use claude_agent_http::tools::{Tool, ToolContext, ToolOutput};
use claude_agent_http::workspace::Workspace;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

const SECRET: &str = "bob-secret-5d1c";
/// Long enough for the slowest machine; a call that blocks never ends at all.
const HANG: Duration = Duration::from_secs(60);

fn workspace(base: &Path, user: &str) -> Workspace {
    let user = UserId::parse(user).expect("user id");
    let sub = Subdir::parse("proj").expect("subdir");
    Workspace::open(base, &user, Some(&sub), true).expect("workspace")
}

fn ctx(ws: &Workspace) -> ToolContext {
    ToolContext::new(ws.clone(), CancellationToken::new())
}

async fn call(tool: &dyn Tool, ctx: &ToolContext, input: Value) -> ToolOutput {
    let shown = input.to_string();
    tokio::time::timeout(HANG, tool.call(input, ctx))
        .await
        .unwrap_or_else(|_| panic!("{} blocked on {shown}", tool.name()))
}

/// Swaps `dir` and `link` (a symlink to bob's directory) with
/// `renameat2(RENAME_EXCHANGE)` as fast as it can, until killed.
struct Swapper(Child);

impl Swapper {
    fn start(dir: &Path, link: &Path) -> Self {
        let script = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b = os.fsencode(sys.argv[1]), os.fsencode(sys.argv[2])
AT_FDCWD, RENAME_EXCHANGE = -100, 2
while True:
    libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE)
"#;
        let child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(dir)
            .arg(link)
            .spawn()
            .expect("python3 runs the swapper");
        // Proceed once the swap is seen to happen, so the race is live.
        let deadline = std::time::Instant::now() + HANG;
        while !std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the swapper never swapped"
            );
            std::thread::yield_now();
        }
        Self(child)
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swapping_a_directory_for_a_symlink_never_reaches_another_user() {
    let base = helpers::test_dir();
    let alice = workspace(base.path(), "alice");
    let bob = workspace(base.path(), "bob");
    let bob_dir = bob.root().join("d");
    std::fs::create_dir(&bob_dir).unwrap();
    for i in 0..20 {
        std::fs::write(bob_dir.join(format!("f{i}.txt")), format!("{SECRET}\n")).unwrap();
    }
    let bob_before: Vec<PathBuf> = list(&bob_dir);

    let dir = alice.root().join("d");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..20 {
        std::fs::write(dir.join(format!("f{i}.txt")), "alice's own\n").unwrap();
    }
    let link = alice.root().join("d-link");
    std::os::unix::fs::symlink(&bob_dir, &link).unwrap();
    let _swapper = Swapper::start(&dir, &link);

    let c = ctx(&alice);
    let write = WriteTool::new(1 << 20);
    let mut refused = 0;
    for round in 0..300 {
        let i = round % 20;
        let out = call(
            &write,
            &c,
            json!({"file_path": format!("d/w{round}.txt"), "content": "from alice"}),
        )
        .await;
        refused += usize::from(out.is_error);
        let out = call(&ReadTool, &c, json!({"file_path": format!("d/f{i}.txt")})).await;
        assert!(
            !out.content.contains(SECRET),
            "Read returned bob's file: {out:?}"
        );
        if round % 3 == 0 {
            let out = call(
                &GrepTool,
                &c,
                json!({"pattern": "secret", "path": "d", "output_mode": "content"}),
            )
            .await;
            assert!(
                !out.content.contains(SECRET),
                "Grep returned bob's file: {out:?}"
            );
        }
    }
    drop(_swapper);
    assert_eq!(
        list(&bob_dir),
        bob_before,
        "a write landed in bob's directory"
    );
    for i in 0..20 {
        let text = std::fs::read_to_string(bob_dir.join(format!("f{i}.txt"))).unwrap();
        assert_eq!(text, format!("{SECRET}\n"));
    }
    // Some writes met the symlink and were refused: the race was live. (How
    // many met the directory depends on the scheduler; under load the
    // kernel may refuse them all, as it refuses resolutions a rename raced.)
    eprintln!("refused {refused} of 300 writes");
    assert!(
        refused > 0,
        "no write met the symlink: the race was not live"
    );
}

fn list(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

#[tokio::test]
async fn a_fifo_is_refused_by_every_file_tool_without_blocking() {
    let base = helpers::test_dir();
    let ws = workspace(base.path(), "carol");
    mkfifo(&ws.root().join("pipe"));
    let c = ctx(&ws);
    let calls: [(&dyn Tool, Value); 4] = [
        (&ReadTool, json!({"file_path": "pipe"})),
        (
            &WriteTool::new(1 << 20),
            json!({"file_path": "pipe", "content": "x"}),
        ),
        (
            &EditTool::new(1 << 20),
            json!({"file_path": "pipe", "old_string": "a", "new_string": "b"}),
        ),
        (&GrepTool, json!({"pattern": "x", "path": "pipe"})),
    ];
    for (tool, input) in calls {
        let out = call(tool, &c, input).await;
        if tool.name() == "Grep" {
            assert!(!out.is_error, "{out:?}");
        } else {
            assert!(out.is_error, "{}: {out:?}", tool.name());
            assert!(out.content.contains("not a regular file"), "{out:?}");
        }
    }
    // A FIFO as an ignore file must not stall a search of its directory.
    std::fs::create_dir(ws.root().join("sub")).unwrap();
    std::fs::write(ws.root().join("sub/a.txt"), "needle\n").unwrap();
    mkfifo(&ws.root().join("sub/.gitignore"));
    mkfifo(&ws.root().join(".gitignore"));
    let out = call(&GrepTool, &c, json!({"pattern": "needle"})).await;
    assert!(!out.is_error, "{out:?}");
}

#[tokio::test]
async fn a_fifo_as_skill_md_is_skipped_without_blocking() {
    let base = helpers::test_dir();
    let ws = workspace(base.path(), "dave");
    let skill = ws.root().join(".claude/skills/stuck");
    std::fs::create_dir_all(&skill).unwrap();
    mkfifo(&skill.join("SKILL.md"));
    let good = ws.root().join(".claude/skills/good");
    std::fs::create_dir_all(&good).unwrap();
    std::fs::write(
        good.join("SKILL.md"),
        "---\nname: good\ndescription: works\n---\nbody\n",
    )
    .unwrap();
    let ws2 = ws.clone();
    let found = tokio::time::timeout(
        HANG,
        tokio::task::spawn_blocking(move || {
            skills::discover(None, &[SettingSource::Project], &[], &ws2)
        }),
    )
    .await
    .expect("discovery blocked on a FIFO")
    .unwrap();
    let names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["good"]);
}
