//! `/api/v1/sessions/{id}/files/...`: uploads, downloads, ranges, listings
//! and deletions over HTTP, and every way a path could lead outside the
//! session's directory.

use std::path::PathBuf;

use claude_agent_http::config::StorageKind;
use fake_anthropic::{FakeAnthropic, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::chat::point_at_fake;
use crate::helpers::*;
use crate::on_every_backend;

impl TestApp {
    pub fn files_url(&self, id: &str, path: &str) -> String {
        self.url(&format!("/api/v1/sessions/{id}/files/{path}"))
    }

    pub async fn put_file(&self, id: &str, path: &str, body: &[u8]) -> reqwest::Response {
        self.client
            .put(self.files_url(id, path))
            .body(body.to_vec())
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_file(&self, id: &str, path: &str) -> reqwest::Response {
        self.client
            .get(self.files_url(id, path))
            .send()
            .await
            .expect("request sent")
    }

    /// A request sent byte for byte as written (no URL normalisation, so
    /// `..` and percent-escapes reach the server as a client could send
    /// them): the status and the body.
    pub async fn raw(&self, method: &str, target: &str, body: &[u8]) -> (u16, String) {
        let addr = self.address.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut received = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut received),
        )
        .await
        .expect("the server answers")
        .unwrap();
        let text = String::from_utf8_lossy(&received).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_owned());
        (status, body)
    }
}

async fn upload_download_list_and_delete(storage: StorageKind) {
    let Some(app) = spawn_app(storage).await else {
        return;
    };
    let session = app.new_session("alice").await;
    let id = session["session_id"].as_str().unwrap();
    let cwd = PathBuf::from(session["cwd"].as_str().unwrap());

    let created = app.put_file(id, "docs/notes/a.txt", b"hello world").await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let entry: Value = created.json().await.unwrap();
    assert_eq!(entry["name"], "a.txt");
    assert_eq!(entry["kind"], "file");
    assert_eq!(entry["size"], 11);
    assert_eq!(
        std::fs::read(cwd.join("docs/notes/a.txt")).unwrap(),
        b"hello world"
    );
    let replaced = app.put_file(id, "docs/notes/a.txt", b"HELLO").await;
    assert_eq!(replaced.status(), StatusCode::OK);
    assert_eq!(
        std::fs::read(cwd.join("docs/notes/a.txt")).unwrap(),
        b"HELLO"
    );

    // A file the agent (or anyone in the session) writes is there at once.
    std::fs::write(cwd.join("docs/page.html"), "<p>hi</p>").unwrap();
    let page = app.get_file(id, "docs/page.html").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html");
    assert_eq!(page.headers()["content-security-policy"], "sandbox");
    assert_eq!(page.text().await.unwrap(), "<p>hi</p>");

    let whole = app.get_file(id, "docs/notes/a.txt").await;
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.headers()["content-type"], "text/plain");
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    let etag = whole.headers()["etag"].to_str().unwrap().to_owned();
    assert!(whole.headers().contains_key("last-modified"));
    assert_eq!(whole.bytes().await.unwrap().as_ref(), b"HELLO");

    let unchanged = app
        .client
        .get(app.files_url(id, "docs/notes/a.txt"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);

    let part = app
        .client
        .get(app.files_url(id, "docs/notes/a.txt"))
        .header("range", "bytes=1-3")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-range"], "bytes 1-3/5");
    assert_eq!(part.bytes().await.unwrap().as_ref(), b"ELL");
    let tail = app
        .client
        .get(app.files_url(id, "docs/notes/a.txt"))
        .header("range", "bytes=-2")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail.bytes().await.unwrap().as_ref(), b"LO");
    let past = app
        .client
        .get(app.files_url(id, "docs/notes/a.txt"))
        .header("range", "bytes=9-")
        .send()
        .await
        .unwrap();
    assert_eq!(past.headers()["content-range"], "bytes */5");
    assert_error(
        past,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
    )
    .await;

    let listing: Value = app.get_file(id, "docs").await.json().await.unwrap();
    let names: Vec<(&str, &str)> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("notes", "dir"), ("page.html", "file")]);
    assert!(listing[1]["mtime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(listing[1]["size"], 9);
    std::os::unix::fs::symlink("docs/page.html", cwd.join("link.html")).unwrap();
    let root: Value = app
        .client
        .get(app.url(&format!("/api/v1/sessions/{id}/files")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<(&str, &str)> = root
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    assert!(kinds.contains(&("docs", "dir")), "{root}");
    assert!(kinds.contains(&("link.html", "symlink")), "{root}");

    let busy = app
        .client
        .delete(app.files_url(id, "docs"))
        .send()
        .await
        .unwrap();
    assert_error(busy, StatusCode::CONFLICT, "directory_not_empty").await;
    assert!(cwd.join("docs/notes/a.txt").exists());
    let link = app
        .client
        .delete(app.files_url(id, "link.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(link.status(), StatusCode::NO_CONTENT);
    assert!(
        cwd.join("docs/page.html").exists(),
        "the link's target stays"
    );
    let gone = app
        .client
        .delete(app.files_url(id, "docs?recursive=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    assert!(!cwd.join("docs").exists());
    assert_error(
        app.get_file(id, "docs/notes/a.txt").await,
        StatusCode::NOT_FOUND,
        "file_not_found",
    )
    .await;
    let missing = app
        .client
        .delete(app.files_url(id, "docs"))
        .send()
        .await
        .unwrap();
    assert_error(missing, StatusCode::NOT_FOUND, "file_not_found").await;

    // Unknown sessions are the contract's 404.
    let unknown = "00000000-0000-4000-8000-000000000000";
    assert_error(
        app.put_file(unknown, "x.txt", b"x").await,
        StatusCode::NOT_FOUND,
        "session_not_found",
    )
    .await;
    app.stop().await;
}

on_every_backend!(files_round_trip, upload_download_list_and_delete);

#[tokio::test]
async fn no_path_leads_outside_the_session() {
    let app = spawn_app(StorageKind::Sqlite).await.unwrap();
    let alice = app.new_session("alice").await;
    let id = alice["session_id"].as_str().unwrap().to_owned();
    let alice_dir = PathBuf::from(alice["cwd"].as_str().unwrap());
    let bob = app.new_session("bob").await;
    let bob_dir = PathBuf::from(bob["cwd"].as_str().unwrap());
    std::fs::write(bob_dir.join("secret.txt"), "BOB-SECRET").unwrap();
    std::os::unix::fs::symlink(&bob_dir, alice_dir.join("bob")).unwrap();
    std::os::unix::fs::symlink("../bob/secret.txt", alice_dir.join("rel-link")).unwrap();
    std::fs::create_dir(alice_dir.join("sub")).unwrap();

    let base = format!("/api/v1/sessions/{id}/files");
    for target in [
        format!("{base}/../bob/secret.txt"),
        format!("{base}/sub/../../bob/secret.txt"),
        format!("{base}/%2e%2e/bob/secret.txt"),
        format!("{base}/%2E%2E%2Fbob%2Fsecret.txt"),
        format!("{base}/sub%2F..%2F..%2Fbob%2Fsecret.txt"),
        format!("{base}/%2Fetc%2Fpasswd"),
        format!("{base}//etc/passwd"),
        format!("{base}/bob/secret.txt"),
        // The links themselves are Alice's to delete, not to follow.
        format!("{base}/bob"),
        format!("{base}/rel-link"),
    ] {
        let is_link = target.ends_with("/bob") || target.ends_with("/rel-link");
        let (status, body) = app.raw("GET", &target, b"").await;
        assert!(!body.contains("BOB-SECRET"), "{target}: {body}");
        assert!(!body.contains("root:"), "{target}: {body}");
        assert_eq!(status, 403, "{target}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], "path_outside_session", "{target}");

        let (status, _) = app.raw("PUT", &target, b"overwritten").await;
        assert_eq!(status, 403, "PUT {target}");
        if !is_link {
            let (status, _) = app.raw("DELETE", &target, b"").await;
            assert_eq!(status, 403, "DELETE {target}");
        }
    }
    let (status, _) = app
        .raw("PUT", &format!("{base}/bob/new/planted.txt"), b"x")
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        std::fs::read_to_string(bob_dir.join("secret.txt")).unwrap(),
        "BOB-SECRET"
    );
    assert!(!bob_dir.join("new").exists());
    assert!(!bob_dir.join("planted.txt").exists());
    assert!(!app.root.join("etc").exists());

    // NUL, undecodable bytes and FIFOs are refused as bad paths.
    for target in [format!("{base}/a%00b"), format!("{base}/%FF%FE")] {
        let (status, body) = app.raw("GET", &target, b"").await;
        assert_eq!(status, 422, "{target}: {body}");
    }
    let fifo = alice_dir.join("pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    assert_error(
        app.get_file(&id, "pipe").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_error(
        app.put_file(&id, "pipe", b"x").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn an_upload_over_the_limit_is_refused_and_writes_nothing() {
    let app = spawn_app_with(StorageKind::Sqlite, |s| s.api.max_upload_bytes = 1024)
        .await
        .unwrap();
    let session = app.new_session("alice").await;
    let id = session["session_id"].as_str().unwrap();
    let cwd = PathBuf::from(session["cwd"].as_str().unwrap());
    let body = assert_error(
        app.put_file(id, "big/blob.bin", &[7u8; 2048]).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("1024"), "{body}");
    assert!(!cwd.join("big").exists());
    let fits = app.put_file(id, "small.bin", &[7u8; 1024]).await;
    assert_eq!(fits.status(), StatusCode::CREATED);
    app.stop().await;
}

#[tokio::test]
async fn the_agent_sees_uploads_and_its_files_can_be_downloaded() {
    let fake = FakeAnthropic::start().await;
    let url = fake.url();
    let app = spawn_app_with(StorageKind::Sqlite, move |s| point_at_fake(s, &url))
        .await
        .unwrap();
    let id = app.new_session_id("alice").await;

    assert_eq!(
        app.put_file(&id, "data.txt", b"first version\n")
            .await
            .status(),
        StatusCode::CREATED
    );
    fake.push(Reply::tool_use("Read", json!({"file_path": "data.txt"})));
    fake.push(Reply::tool_use(
        "Write",
        json!({"file_path": "out/report.md", "content": "# Report\n"}),
    ));
    fake.push(Reply::text("done"));
    assert_eq!(app.chat(&id, "read it").await.status(), StatusCode::OK);
    let read = fake.requests()[1].body["messages"][2]["content"][0]["content"].clone();
    assert!(read.as_str().unwrap().contains("first version"), "{read}");
    let report = app.get_file(&id, "out/report.md").await;
    assert_eq!(report.status(), StatusCode::OK);
    assert_eq!(report.text().await.unwrap(), "# Report\n");

    // The agent read data.txt; an upload since is a change it has not seen.
    assert_eq!(
        app.put_file(&id, "data.txt", b"second version\n")
            .await
            .status(),
        StatusCode::OK
    );
    fake.push(Reply::tool_use(
        "Edit",
        json!({"file_path": "data.txt", "old_string": "second", "new_string": "third"}),
    ));
    fake.push(Reply::text("ok"));
    assert_eq!(app.chat(&id, "edit it").await.status(), StatusCode::OK);
    let last = fake.requests().len() - 1;
    let messages = fake.requests()[last].body["messages"].clone();
    let result = &messages.as_array().unwrap().last().unwrap()["content"][0];
    assert_eq!(result["is_error"], true, "{result}");
    assert!(
        result["content"]
            .as_str()
            .unwrap()
            .contains("changed on disk"),
        "{result}"
    );
    let now = app.get_file(&id, "data.txt").await.text().await.unwrap();
    assert_eq!(now, "second version\n");
    app.stop().await;
}
