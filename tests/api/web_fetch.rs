//! `WebFetch` over HTTP against fake-anthropic and a local web server: pages
//! become Markdown, the service's own network is refused (redirects
//! included), and a small model answers the prompt when one is set.

use axum::Router;
use axum::http::{StatusCode as AxumStatus, header};
use axum::response::IntoResponse;
use axum::routing::get;
use claude_agent_http::config::StorageKind;
use fake_anthropic::{FakeAnthropic, Reply};
use serde_json::{Value, json};

use crate::chat::agent_app;

/// A web server on 127.0.0.1 with a page, a redirect and a binary file.
async fn web_server() -> String {
    let app = Router::new()
        .route(
            "/page",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    "<html><head><script>steal()</script></head><body><h1>Install</h1>\
                     <p>Run <code>make install</code> as root.</p></body></html>",
                )
            }),
        )
        .route(
            "/away",
            get(|| async {
                (
                    AxumStatus::FOUND,
                    [(header::LOCATION, "http://blocked.test/secret")],
                )
                    .into_response()
            }),
        )
        .route(
            "/file.bin",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    vec![0u8; 64],
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// The content of each tool result in the last request the fake got.
fn results(fake: &FakeAnthropic) -> Vec<(bool, String)> {
    crate::helpers::last_tool_results(fake)
        .into_iter()
        .map(|b| {
            (
                b["is_error"] == true,
                b["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn fetch(url: &str) -> Reply {
    Reply::tool_use(
        "WebFetch",
        json!({"url": url, "prompt": "How do I install it?"}),
    )
}

#[tokio::test]
async fn the_services_own_network_is_refused_by_default() {
    let web = web_server().await;
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |_| {}).await.unwrap();
    let id = app.new_session_id("alice").await;
    let port = web.rsplit(':').next().unwrap();
    for url in [
        format!("{web}/page"),
        format!("http://localhost:{port}/page"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://[::ffff:127.0.0.1]:{port}/page"),
    ] {
        fake.push(fetch(&url));
        fake.push(Reply::text("ok"));
        let response = app.chat(&id, "fetch it").await;
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let (is_error, text) = results(&fake).pop().unwrap();
        assert!(is_error && text.contains("not fetched"), "{url}: {text}");
    }
    // WebFetch is offered to the model.
    let tools: Vec<String> = fake.requests()[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(tools.contains(&"WebFetch".to_owned()), "{tools:?}");
}

#[tokio::test]
async fn a_page_becomes_markdown_and_redirects_are_checked_again() {
    let web = web_server().await;
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |s| {
        s.tools.web_fetch.allow_private_networks = true;
        s.tools.web_fetch.blocked_domains = vec!["blocked.test".into()];
    })
    .await
    .unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(fetch(&format!("{web}/page")));
    fake.push(fetch(&format!("{web}/away")));
    fake.push(fetch(&format!("{web}/file.bin")));
    fake.push(fetch("ftp://example.com/x"));
    fake.push(Reply::text("done"));
    let response = app.chat(&id, "read the docs").await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let results = results(&fake);
    assert_eq!(results.len(), 4);
    let (error, page) = &results[0];
    assert!(
        !error && page.contains("# Install") && page.contains("`make install`"),
        "{page}"
    );
    assert!(!page.contains("steal"), "{page}");
    assert!(page.contains("How do I install it?"));
    let (error, away) = &results[1];
    assert!(*error && away.contains("blocked.test is blocked"), "{away}");
    assert!(results[2].0 && results[2].1.contains("application/octet-stream"));
    assert!(results[3].0 && results[3].1.contains("http and https"));
}

#[tokio::test]
async fn a_small_model_answers_the_prompt_over_the_page() {
    let web = web_server().await;
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |s| {
        s.tools.web_fetch.allow_private_networks = true;
        s.defaults.small_model = Some("claude-haiku-4-5".into());
    })
    .await
    .unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(fetch(&format!("{web}/page")));
    fake.push(Reply::text("Run make install as root."));
    fake.push(Reply::text("You install it with make."));
    let body: Value = app.chat(&id, "how to install?").await.json().await.unwrap();
    assert_eq!(body["text"], "You install it with make.");
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    let small = &requests[1].body;
    assert_eq!(small["model"], "claude-haiku-4-5");
    assert!(small["messages"].to_string().contains("make install"));
    assert!(small.get("tools").is_none());
    let (error, answer) = results(&fake).pop().unwrap();
    assert!(
        !error && answer.contains("Run make install as root."),
        "{answer}"
    );
    // The small model's call is part of what the turn spent.
    let spent: u64 = requests
        .iter()
        .map(|r| r.usage_tokens("output_tokens"))
        .sum();
    assert_eq!(body["usage"]["output_tokens"], spent, "{}", body["usage"]);
    let session: Value = app.get_session(&id).await.json().await.unwrap();
    assert_eq!(session["usage"]["output_tokens"], spent);
}

#[tokio::test]
async fn a_domain_rule_refuses_the_call() {
    let web = web_server().await;
    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |s| {
        s.tools.web_fetch.allow_private_networks = true;
        s.defaults.disallowed_tools = vec!["WebFetch(domain:127.0.0.1)".into()];
    })
    .await
    .unwrap();
    let id = app.new_session_id("alice").await;
    fake.push(fetch(&format!("{web}/page")));
    fake.push(Reply::text("ok"));
    app.chat(&id, "fetch").await;
    let (error, text) = results(&fake).pop().unwrap();
    assert!(
        error && text.contains("WebFetch(domain:127.0.0.1)"),
        "{text}"
    );
}

#[tokio::test]
async fn read_only_calls_of_one_reply_run_side_by_side() {
    // Each page answers only once both requests have arrived: run one after
    // the other, the first would wait out its timeout.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let app_router = Router::new().route(
        "/together",
        get(move || {
            let barrier = barrier.clone();
            async move {
                barrier.wait().await;
                ([(header::CONTENT_TYPE, "text/plain")], "arrived together")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app_router).await.unwrap() });

    let fake = FakeAnthropic::start().await;
    let app = agent_app(StorageKind::Sqlite, &fake, |s| {
        s.tools.web_fetch.allow_private_networks = true;
        s.tools.web_fetch.timeout_secs = 5;
    })
    .await
    .unwrap();
    let id = app.new_session_id("alice").await;
    let call = |n: u32| {
        (
            "WebFetch".to_owned(),
            json!({"url": format!("{web}/together?n={n}"), "prompt": "what?"}),
        )
    };
    fake.push(Reply::ToolUse {
        text: None,
        calls: vec![call(1), call(2)],
    });
    fake.push(Reply::text("both read"));
    let response = app.chat(&id, "read both").await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let results = results(&fake);
    assert_eq!(results.len(), 2);
    for (error, text) in results {
        assert!(!error && text.contains("arrived together"), "{text}");
    }
}
