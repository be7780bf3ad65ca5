//! What the service does with clients that hold connections: slow heads
//! (slowloris), slow bodies, idle keep-alives, more connections than the cap,
//! and slow answers that must not be cut.

use std::time::Duration;

use claude_agent_http::config::{Settings, StorageKind};
use fake_anthropic::{FakeAnthropic, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::chat::{Frames, point_at_fake};
use crate::helpers::*;

/// Longer than any limit a test sets: a connection not closed by then never will be.
const CLOSE_WITHIN: Duration = Duration::from_secs(15);

async fn app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(StorageKind::Memory, adjust).await.unwrap()
}

async fn connect(app: &TestApp) -> TcpStream {
    let addr = app.address.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connects")
}

/// Reads until the server closes the connection; what it sent before that.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = tokio::time::timeout(CLOSE_WITHIN, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept the connection open for {CLOSE_WITHIN:?}"
    );
    String::from_utf8_lossy(&received).into_owned()
}

/// One HTTP/1.1 response read off `stream`: status line and headers, body
/// by Content-Length.
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    while !received.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(CLOSE_WITHIN, stream.read(&mut byte))
            .await
            .expect("a response arrives")
            .expect("read");
        assert!(n > 0, "closed before a response");
        received.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&received).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.expect("body");
    (head, String::from_utf8(body).unwrap())
}

const GET_HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n";

#[tokio::test]
async fn a_slowloris_client_is_disconnected_after_the_header_timeout() {
    let app = app_with(|s| {
        s.api.header_timeout_secs = 1;
        s.api.idle_timeout_secs = 600;
    })
    .await;
    let mut stream = connect(&app).await;
    let (mut reader, mut writer) = stream.split();
    // A head that never ends, one byte at a time, each well within any
    // per-read timeout: only a deadline for the whole head stops it.
    let trickle = async {
        let mut sent = writer.write_all(b"GET /health HTTP/1.1\r\n").await;
        while sent.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            sent = writer.write_all(b"X").await;
        }
    };
    let closed = async {
        let mut chunk = [0u8; 1024];
        let mut received = Vec::new();
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return received,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let received = tokio::time::timeout(CLOSE_WITHIN, async {
        tokio::select! {
            received = closed => received,
            () = trickle => Vec::new(), // the server hung up while we wrote
        }
    })
    .await
    .expect("the slow client is disconnected");
    assert!(
        !String::from_utf8_lossy(&received).contains("200 OK"),
        "an unfinished head was answered"
    );
    // Everyone else is still served.
    assert_eq!(app.health().await.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let app = app_with(|s| {
        s.api.header_timeout_secs = 1;
        s.api.idle_timeout_secs = 600;
    })
    .await;
    let mut stream = connect(&app).await;
    let received = read_until_closed(&mut stream).await;
    assert_eq!(received, "");
    app.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let app = app_with(|s| {
        // Longer than the bound: only the idle timeout can close it in time.
        s.api.header_timeout_secs = 600;
        s.api.idle_timeout_secs = 1;
    })
    .await;
    let mut stream = connect(&app).await;
    stream.write_all(GET_HEALTH).await.unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("healthy"), "{body}");
    let after = read_until_closed(&mut stream).await;
    assert_eq!(after, "");
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_and_the_connection_closes() {
    let app = app_with(|s| s.api.body_timeout_secs = 1).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /api/v1/sessions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user_id\":",
        )
        .await
        .unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "request_timeout", "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    read_until_closed(&mut stream).await;
    app.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_a_freed_slot_serves_again() {
    let app = app_with(|s| {
        s.api.max_connections = 4;
        s.api.idle_timeout_secs = 600;
        s.api.header_timeout_secs = 600;
    })
    .await;
    // Four keep-alive connections, each answered once, so the server holds them.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = connect(&app).await;
        stream.write_all(GET_HEALTH).await.unwrap();
        let (head, _) = read_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(stream);
    }

    let mut fifth = connect(&app).await;
    fifth.write_all(GET_HEALTH).await.unwrap();
    let (head, body) = read_response(&mut fifth).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "too_many_connections", "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    read_until_closed(&mut fifth).await;

    // The held connections still work.
    held[0].write_all(GET_HEALTH).await.unwrap();
    let (head, _) = read_response(&mut held[0]).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // Closing one frees a slot, once the server has seen the close.
    drop(held.pop());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut answered = None;
    for _ in 0..100 {
        let response = client.get(app.url("/health")).send().await.unwrap();
        if response.status() == StatusCode::OK {
            answered = Some(response.json::<Value>().await.unwrap());
            break;
        }
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = answered.expect("/health answers on the freed slot");
    assert_eq!(health["status"], "healthy");
    drop(held);
    app.stop().await;
}

#[tokio::test]
async fn slow_answers_outlive_the_header_idle_and_body_timeouts() {
    let fake = FakeAnthropic::start().await;
    let url = fake.url();
    let app = app_with(move |s| {
        point_at_fake(s, &url);
        s.api.header_timeout_secs = 1;
        s.api.idle_timeout_secs = 1;
        s.api.body_timeout_secs = 1;
    })
    .await;
    let id = app.new_session_id("alice").await;
    // About 3 s of streaming, in gaps shorter than a second.
    let text = "one two three four five six seven eight nine ten";
    fake.push(Reply::text(text).slow(250));
    let response = app
        .client
        .post(app.url("/api/v1/chat/stream"))
        .json(&json!({"session_id": id, "message": "take your time"}))
        .send()
        .await
        .unwrap();
    let frames = Frames::new(response).collect().await;
    let streamed: String = frames
        .iter()
        .filter(|f| f["type"] == "text_delta")
        .filter_map(|f| f["text"].as_str())
        .collect();
    assert_eq!(streamed, text);
    assert_eq!(frames.last().unwrap()["type"], "done", "{frames:?}");

    // A long turn over plain /api/v1/chat sends nothing until it ends.
    fake.push(Reply::text(text).slow(250));
    let response = app.chat(&id, "again, slowly").await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["text"], text);
    app.stop().await;
}
