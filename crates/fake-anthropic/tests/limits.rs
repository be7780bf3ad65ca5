//! The context window, overloaded models and the runtime config endpoint.

mod common;

use common::{invalid, prompt_tokens, send, simple};
use fake_anthropic::{Config, DEFAULT_CONTEXT_WINDOW, FakeAnthropic, Reply, Settings};
use serde_json::{Value, json};

fn asking(model: &str, text: &str, max_tokens: u64) -> Value {
    json!({
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}],
    })
}

/// The prompt's size in tokens, as the fake counts it.
async fn size_of(body: Value) -> u64 {
    let fake = FakeAnthropic::start_with(Config {
        context_window: None,
        ..Config::default()
    })
    .await;
    let (status, answer) = send(&fake, body).await;
    assert_eq!(status, 200);
    prompt_tokens(&answer["usage"])
}

#[tokio::test]
async fn a_prompt_longer_than_the_window_is_rejected() {
    let body = asking("claude-sonnet-4-6", &"long text ".repeat(50), 100);
    let size = size_of(body.clone()).await;
    let fake = FakeAnthropic::start().await;
    fake.push(Reply::text("kept"));

    fake.set_context_window(Some(size - 1));
    let (status, answer) = send(&fake, body.clone()).await;
    assert_eq!(
        (status, answer),
        (
            400,
            invalid(&format!(
                "prompt is too long: {size} tokens > {} maximum",
                size - 1
            ))
        )
    );
    assert_eq!(fake.pending(), 1, "a rejected request uses up no reply");

    fake.set_context_window(Some(size + 100));
    let (status, answer) = send(&fake, body).await;
    assert_eq!(status, 200);
    assert_eq!(answer["content"][0]["text"], "kept");
}

#[tokio::test]
async fn the_default_window_is_two_hundred_thousand_tokens() {
    let fake = FakeAnthropic::start().await;
    assert_eq!(fake.settings().context_window, Some(DEFAULT_CONTEXT_WINDOW));
    let (status, answer) = send(&fake, simple(&"x".repeat(800_100))).await;
    assert_eq!(status, 400);
    let message = answer["error"]["message"].as_str().expect("message");
    assert!(
        message.starts_with("prompt is too long: 2000")
            && message.ends_with(" tokens > 200000 maximum"),
        "{message}"
    );
}

#[tokio::test]
async fn older_models_reject_input_plus_max_tokens_beyond_the_window() {
    let body = asking("claude-sonnet-4-20250514", "hello there", 1024);
    let size = size_of(body.clone()).await;
    let fake = FakeAnthropic::start().await;
    fake.set_context_window(Some(size + 10));
    let (status, answer) = send(&fake, body).await;
    assert_eq!(
        (status, answer),
        (
            400,
            invalid(&format!(
                "input length and `max_tokens` exceed context limit: {size} + 1024 > {}, \
                 decrease input length or `max_tokens` and try again",
                size + 10
            ))
        )
    );
}

#[tokio::test]
async fn newer_models_stop_where_the_window_ends() {
    let body = asking("claude-sonnet-4-6", "hello there", 1024);
    let size = size_of(body.clone()).await;
    let fake = FakeAnthropic::start().await;
    fake.set_context_window(Some(size + 2));
    fake.push(Reply::text("an answer longer than two tokens"));
    let (status, answer) = send(&fake, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["stop_reason"], "model_context_window_exceeded");
    assert_eq!(answer["content"][0]["text"], "an answe");
    assert_eq!(answer["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn an_overloaded_model_answers_529_while_another_answers() {
    let fake = FakeAnthropic::start().await;
    fake.set_overloaded_models(["claude-opus-4-6"]);
    fake.push(Reply::text("from the fallback"));

    for _ in 0..2 {
        let (status, answer) = send(&fake, asking("claude-opus-4-6", "hi", 100)).await;
        assert_eq!(
            (status, answer),
            (
                529,
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            )
        );
    }
    assert_eq!(
        fake.pending(),
        1,
        "the script waits for a model that answers"
    );
    let (status, answer) = send(&fake, asking("claude-sonnet-4-6", "hi", 100)).await;
    assert_eq!(status, 200);
    assert_eq!(answer["content"][0]["text"], "from the fallback");

    let recorded: Vec<(String, u16)> = fake
        .requests()
        .iter()
        .map(|r| (r.body["model"].as_str().unwrap_or("").to_owned(), r.status))
        .collect();
    assert_eq!(
        recorded,
        vec![
            ("claude-opus-4-6".to_owned(), 529),
            ("claude-opus-4-6".to_owned(), 529),
            ("claude-sonnet-4-6".to_owned(), 200),
        ]
    );

    fake.set_overloaded_models(Vec::<String>::new());
    let (status, _) = send(&fake, asking("claude-opus-4-6", "hi", 100)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_overload_is_reported_for_streams_as_an_http_error() {
    let fake = FakeAnthropic::start_with(Config {
        overloaded_models: vec!["claude-opus-4-6".into()],
        ..Config::default()
    })
    .await;
    let mut body = asking("claude-opus-4-6", "hi", 100);
    body["stream"] = json!(true);
    let response = common::messages_request(&fake, &body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 529);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["error"]["type"], "overloaded_error");
}

async fn post_config(fake: &FakeAnthropic, change: Value) -> (u16, Value) {
    let response = common::client()
        .post(format!("{}/_fake/config", fake.url()))
        .json(&change)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

#[tokio::test]
async fn settings_change_over_http_and_reset_restores_them() {
    let fake = FakeAnthropic::start().await;
    let (status, settings) = post_config(
        &fake,
        json!({"context_window": 10, "overloaded_models": ["m-busy"], "min_cacheable_tokens": 1}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        settings,
        json!({"context_window": 10, "min_cacheable_tokens": 1, "overloaded_models": ["m-busy"]})
    );
    let (status, _) = send(&fake, simple(&"many words ".repeat(20))).await;
    assert_eq!(status, 400);
    let (status, _) = send(&fake, asking("m-busy", "hi", 10)).await;
    assert_eq!(status, 529);

    // Fields not sent stay; null lifts the limit.
    let (_, settings) = post_config(&fake, json!({"context_window": null})).await;
    assert_eq!(settings["context_window"], json!(null));
    assert_eq!(settings["overloaded_models"], json!(["m-busy"]));
    let (status, _) = send(&fake, simple(&"many words ".repeat(20))).await;
    assert_eq!(status, 200);

    let shown: Value = common::client()
        .get(format!("{}/_fake/config", fake.url()))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(shown, settings);

    let (status, answer) = post_config(&fake, json!({"context_windw": 5})).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("context_windw")),
        "{answer}"
    );

    fake.reset();
    assert_eq!(
        fake.settings(),
        Settings {
            context_window: Some(DEFAULT_CONTEXT_WINDOW),
            min_cacheable_tokens: None,
            overloaded_models: Vec::new(),
        }
    );
}
