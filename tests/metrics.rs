//! `GET /metrics` after real turns against fake-anthropic. A test binary of
//! its own: the recorder is the process's, so the counts seen here are this
//! test's alone.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use claude_agent_http::config::{Secret, StorageKind};
use fake_anthropic::{FakeAnthropic, Reply};
use serde_json::{Value, json};

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

/// One sample's value: the line named `name` whose labels are exactly
/// `labels`; 0 when there is none (a counter never incremented).
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    for line in page
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (metric, found) = match series.split_once('{') {
            Some((metric, rest)) => {
                let body = rest.strip_suffix('}').unwrap();
                let found: BTreeMap<String, String> = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').unwrap();
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (metric, found)
            }
            None => (series, BTreeMap::new()),
        };
        if metric == name && found == wanted {
            return value.parse().unwrap();
        }
    }
    0.0
}

#[tokio::test]
async fn metrics_count_turns_model_calls_tokens_tools_and_requests() {
    let fake = FakeAnthropic::start().await;
    let url = fake.url();
    let app = helpers::spawn_app_with(StorageKind::Sqlite, move |s| {
        s.anthropic.base_url = url;
        s.anthropic.api_key = Secret::new("test-key");
        s.defaults.model = "claude-sonnet-4-6".into();
        s.metrics.token = Secret::new("scrape-secret");
    })
    .await
    .unwrap();
    let scrape = |token: Option<&'static str>| {
        let mut request = app.client.get(app.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    // The token is required and compared, with the contract's error body.
    for token in [None, Some("wrong")] {
        let res = scrape(token).await.unwrap();
        assert_eq!(res.status(), 401);
        assert!(
            res.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
    }

    let id = app.new_session_id("metrics-user").await;
    let chat = |message: &'static str| {
        app.client
            .post(app.url("/api/v1/chat"))
            .json(&json!({"session_id": id, "message": message}))
            .send()
    };
    fake.push(Reply::tool_use("Bash", json!({"command": "echo hi"})));
    fake.push(Reply::text("It printed hi."));
    let res = chat("Run echo").await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    fake.push(Reply::overloaded(1));
    fake.push(Reply::text("Second answer."));
    let res = chat("Again").await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    let res = scrape(Some("scrape-secret")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let page = res.text().await.unwrap();

    let turns = |outcome| sample(&page, "claude_agent_turns_total", &[("outcome", outcome)]);
    assert_eq!(turns("completed"), 2.0, "{page}");
    assert_eq!(turns("failed"), 0.0);
    assert_eq!(
        sample(&page, "claude_agent_turn_duration_seconds_count", &[]),
        2.0
    );
    assert_eq!(
        sample(&page, "claude_agent_time_to_first_token_seconds_count", &[]),
        2.0
    );
    // Three answered calls, one 529 that was retried.
    let calls = |status| {
        sample(
            &page,
            "claude_agent_model_calls_total",
            &[("status", status)],
        )
    };
    assert_eq!(calls("200"), 3.0, "{page}");
    assert_eq!(calls("529"), 1.0, "{page}");
    assert_eq!(
        sample(
            &page,
            "claude_agent_model_retries_total",
            &[("status", "529")]
        ),
        1.0
    );
    // Tokens as the fake reported them, by kind.
    let answered: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.status == 200)
        .collect();
    assert_eq!(answered.len(), 3);
    for (kind, field) in [
        ("input", "input_tokens"),
        ("output", "output_tokens"),
        ("cache_read", "cache_read_input_tokens"),
        ("cache_write", "cache_creation_input_tokens"),
    ] {
        let reported: u64 = answered.iter().map(|r| r.usage_tokens(field)).sum();
        assert_eq!(
            sample(
                &page,
                "claude_agent_tokens_total",
                &[("kind", kind), ("model", "claude-sonnet-4-6")]
            ),
            reported as f64,
            "{kind}: {page}"
        );
    }
    let session: Value = app.get_session(&id).await.json().await.unwrap();
    let cost = session["usage"]["cost_usd"].as_f64().unwrap();
    let counted = sample(
        &page,
        "claude_agent_cost_micro_usd_total",
        &[("model", "claude-sonnet-4-6")],
    );
    assert!((counted - cost * 1e6).abs() <= 2.0, "{counted} vs {cost}");
    // The Bash call, by tool and outcome, with its duration.
    assert_eq!(
        sample(
            &page,
            "claude_agent_tool_calls_total",
            &[("outcome", "ok"), ("tool", "Bash")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &page,
            "claude_agent_tool_duration_seconds_count",
            &[("tool", "Bash")]
        ),
        1.0
    );
    // Requests by route template: no session id becomes a label.
    assert_eq!(
        sample(
            &page,
            "claude_agent_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/api/v1/chat"),
                ("status", "200")
            ]
        ),
        2.0
    );
    assert_eq!(
        sample(
            &page,
            "claude_agent_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/api/v1/sessions"),
                ("status", "201")
            ]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &page,
            "claude_agent_http_requests_total",
            &[("method", "GET"), ("route", "/metrics"), ("status", "401")]
        ),
        2.0
    );
    assert!(!page.contains(&id), "a session id in the metrics");
    // Store operations are timed by name.
    assert!(
        sample(
            &page,
            "claude_agent_store_query_duration_seconds_count",
            &[("operation", "get")]
        ) >= 2.0,
        "{page}"
    );
    assert_eq!(sample(&page, "claude_agent_live_sessions", &[]), 1.0);
    assert_eq!(sample(&page, "claude_agent_turns_in_flight", &[]), 0.0);
    assert!(page.contains("# HELP claude_agent_turns_total"));
    assert!(page.contains("# TYPE claude_agent_turn_duration_seconds histogram"));

    // A turn waiting for a person's approval counts as pending until it is answered.
    let asking = helpers::spawn_app_with(StorageKind::Sqlite, {
        let url = fake.url();
        move |s| {
            s.anthropic.base_url = url;
            s.anthropic.api_key = Secret::new("test-key");
            s.defaults.model = "claude-sonnet-4-6".into();
            s.defaults.ask_tools = vec!["Bash".into()];
        }
    })
    .await
    .unwrap();
    let session = asking.new_session_id("metrics-asker").await;
    fake.push(Reply::tool_use("Bash", json!({"command": "echo asked"})));
    fake.push(Reply::text("Ran it."));
    let turn = tokio::spawn({
        let request = asking
            .client
            .post(asking.url("/api/v1/chat"))
            .json(&json!({"session_id": session, "message": "ask first"}));
        async move { request.send().await.unwrap().status() }
    });
    let pending_url = asking.url(&format!("/api/v1/sessions/{session}/permissions"));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let request_id = loop {
        let pending: Vec<Value> = asking
            .client
            .get(&pending_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(first) = pending.first() {
            break first["request_id"].as_str().unwrap().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "no pending request");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let scrape_asking = || async {
        asking
            .client
            .get(asking.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let waiting = scrape_asking().await;
    assert_eq!(
        sample(
            &waiting,
            "claude_agent_pending_requests",
            &[("kind", "permission")]
        ),
        1.0,
        "{waiting}"
    );
    let answered = asking
        .client
        .post(format!("{pending_url}/{request_id}"))
        .json(&json!({"decision": "allow"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    assert_eq!(turn.await.unwrap(), 200);
    let after = scrape_asking().await;
    assert_eq!(
        sample(
            &after,
            "claude_agent_pending_requests",
            &[("kind", "permission")]
        ),
        0.0
    );

    // Switched off, the endpoint is not there.
    let off = helpers::spawn_app_with(StorageKind::Memory, |s| s.metrics.enabled = false)
        .await
        .unwrap();
    let res = off.client.get(off.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 404);
}
