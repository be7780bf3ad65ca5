//! The Anthropic Messages API implementation of `ModelClient`: streaming,
//! retries, timeouts.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_stream::{EventStreamError, Eventsource};
use futures::StreamExt;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use super::model::{ModelClient, ModelError};
use super::stream::{ErrorBody, Progress, StreamAssembler, StreamFault};
use super::wire::{ContentBlock, ModelEvent, ModelRequest, ModelResponse};
use crate::metrics;

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

const INITIAL_RETRY_DELAY: Duration = Duration::from_millis(500);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(8);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// How much of an unreadable error body goes into the error message.
const ERROR_BODY_EXCERPT: usize = 300;

/// Where and how to reach the Messages API.
#[derive(Clone)]
pub struct AnthropicConfig {
    pub base_url: String,
    /// Sent as `x-api-key`; wins over `auth_token`.
    pub api_key: Option<SecretString>,
    /// Sent as `Authorization: Bearer`, for proxies and compatible endpoints.
    pub auth_token: Option<SecretString>,
    /// Retries after the first attempt, on transient failures only.
    pub max_retries: u32,
    pub connect_timeout: Duration,
    /// Bounds one attempt from sending the request to the end of the stream.
    pub request_timeout: Duration,
}

impl Default for AnthropicConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_key: None,
            auth_token: None,
            max_retries: 2,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(600),
        }
    }
}

impl fmt::Debug for AnthropicConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn redacted(secret: &Option<SecretString>) -> &'static str {
            match secret {
                Some(_) => "[redacted]",
                None => "[not set]",
            }
        }
        f.debug_struct("AnthropicConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &redacted(&self.api_key))
            .field("auth_token", &redacted(&self.auth_token))
            .field("max_retries", &self.max_retries)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// The Messages API over HTTP.
#[derive(Debug, Clone)]
pub struct AnthropicClient {
    http: reqwest::Client,
    endpoint: String,
    configured: bool,
    max_retries: u32,
}

impl AnthropicClient {
    /// Builds the client. Missing credentials are not an error here, so the
    /// service can start without them; every `send` then fails with
    /// `NotConfigured`.
    pub fn new(config: AnthropicConfig) -> Result<Self, ModelError> {
        let base = config.base_url.trim_end_matches('/');
        url::Url::parse(base)
            .map_err(|e| ModelError::Invalid(format!("base URL {base:?} is not a URL: {e}")))?;
        let endpoint = format!("{base}/v1/messages");

        let mut headers = HeaderMap::new();
        headers.insert(
            "anthropic-version",
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
        let auth = match (&config.api_key, &config.auth_token) {
            (Some(key), _) => Some(("x-api-key", key.expose_secret().to_owned())),
            (None, Some(token)) => Some((
                header::AUTHORIZATION.as_str(),
                format!("Bearer {}", token.expose_secret()),
            )),
            (None, None) => None,
        };
        let configured = auth.is_some();
        if let Some((name, value)) = auth {
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                ModelError::Invalid(format!(
                    "the configured credential for {name} has characters not allowed in a header"
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }

        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!(
                env!("CARGO_PKG_NAME"),
                "/",
                env!("CARGO_PKG_VERSION")
            ))
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| ModelError::Connection(format!("building the HTTP client: {e}")))?;

        Ok(Self {
            http,
            endpoint,
            configured,
            max_retries: config.max_retries,
        })
    }

    /// Whether a key or token is set; without one every call fails.
    pub fn is_configured(&self) -> bool {
        self.configured
    }

    /// Sends until a 200 arrives or retrying stops making sense.
    async fn connect(&self, body: &Value, betas: &[&str]) -> Result<Response, ModelError> {
        let mut attempt = 0;
        loop {
            let retries_left = attempt < self.max_retries;
            let mut post = self.http.post(&self.endpoint).json(body);
            if !betas.is_empty() {
                post = post.header("anthropic-beta", betas.join(","));
            }
            let (error, delay) = match post.send().await {
                Ok(response) if response.status().is_success() => {
                    metrics::model_attempt(Some(response.status().as_u16()), false);
                    return Ok(response);
                }
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    let error = status_error(response).await;
                    let retry = retries_left && should_retry(status, &headers);
                    metrics::model_attempt(Some(status.as_u16()), retry);
                    if !retry {
                        return Err(error);
                    }
                    let delay = retry_after(&headers).unwrap_or_else(|| backoff(attempt));
                    (error, delay)
                }
                Err(e) => {
                    let error = transport_error(&e);
                    metrics::model_attempt(None, retries_left);
                    if !retries_left {
                        return Err(error);
                    }
                    (error, backoff(attempt))
                }
            };
            attempt += 1;
            tracing::warn!(
                attempt,
                max_retries = self.max_retries,
                delay_ms = delay.as_millis() as u64,
                %error,
                "model call failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

#[async_trait]
impl ModelClient for AnthropicClient {
    #[tracing::instrument(skip_all, fields(model = %request.model))]
    async fn send(
        &self,
        request: &ModelRequest,
        events: &UnboundedSender<ModelEvent>,
    ) -> Result<ModelResponse, ModelError> {
        if !self.configured {
            return Err(ModelError::NotConfigured);
        }
        let mut body = request.body();
        body["stream"] = Value::Bool(true);
        let response = self.connect(&body, &request.betas()).await?;
        if let Some(id) = response.headers().get("request-id") {
            tracing::debug!(request_id = ?id, "model stream started");
        }
        if is_json(&response) {
            return read_json(response, events).await;
        }
        read_stream(response, events).await
    }
}

/// Folds the event stream of a 200 into the reply. Never retried: content
/// may already have reached the caller.
async fn read_stream(
    response: Response,
    events: &UnboundedSender<ModelEvent>,
) -> Result<ModelResponse, ModelError> {
    let mut assembler = StreamAssembler::new();
    let mut stream = response.bytes_stream().eventsource();
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(event) => event,
            Err(e) => {
                let message = match e {
                    EventStreamError::Transport(e) if e.is_timeout() => {
                        "timed out mid-stream".to_owned()
                    }
                    EventStreamError::Transport(e) => {
                        format!("connection lost mid-stream: {}", error_chain(&e))
                    }
                    other => format!("unreadable event stream: {other}"),
                };
                return Err(ModelError::Stream {
                    message,
                    partial: assembler.partial(),
                });
            }
        };
        match assembler.handle(&event.event, &event.data, events) {
            Ok(Progress::More) => {}
            Ok(Progress::Done) => break,
            Err(StreamFault::Upstream {
                error_type,
                message,
            }) => {
                return Err(ModelError::Stream {
                    message: format!("{error_type}: {message}"),
                    partial: assembler.partial(),
                });
            }
            Err(StreamFault::Invalid(message)) if assembler.started() => {
                return Err(ModelError::Stream {
                    message: format!("unreadable event: {message}"),
                    partial: assembler.partial(),
                });
            }
            Err(StreamFault::Invalid(message)) => return Err(ModelError::Invalid(message)),
        }
    }
    assembler.finish().map_err(|partial| ModelError::Stream {
        message: "the stream ended before message_stop".to_owned(),
        partial,
    })
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Some compatible endpoints ignore `stream: true` and answer with the whole
/// message; report its blocks as events so callers see one behaviour.
async fn read_json(
    response: Response,
    events: &UnboundedSender<ModelEvent>,
) -> Result<ModelResponse, ModelError> {
    let bytes = response.bytes().await.map_err(|e| transport_error(&e))?;
    let reply: ModelResponse =
        serde_json::from_slice(&bytes).map_err(|e| ModelError::Invalid(e.to_string()))?;
    for block in &reply.content {
        let event = match block {
            ContentBlock::Text { text } => ModelEvent::TextDelta(text.clone()),
            ContentBlock::Thinking { thinking, .. } => ModelEvent::ThinkingDelta(thinking.clone()),
            ContentBlock::ToolUse { id, name, input } => ModelEvent::ToolUse {
                id: id.clone(),
                name: name.clone(),
                input: input.clone(),
            },
            _ => continue,
        };
        let _ = events.send(event);
    }
    Ok(reply)
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

/// Reads an error response into `Unauthorized` or `Status`.
async fn status_error(response: Response) -> ModelError {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let (error_type, message) = match serde_json::from_str::<ErrorEnvelope>(&body) {
        Ok(envelope) => (envelope.error.error_type, envelope.error.message),
        Err(_) => ("unknown_error".to_owned(), excerpt(&body)),
    };
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return ModelError::Unauthorized {
            message: if message.is_empty() {
                status.to_string()
            } else {
                message
            },
        };
    }
    ModelError::Status {
        status: status.as_u16(),
        error_type,
        message,
    }
}

fn excerpt(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(ERROR_BODY_EXCERPT) {
        Some((end, _)) => format!("{}…", &body[..end]),
        None => body.to_owned(),
    }
}

fn transport_error(error: &reqwest::Error) -> ModelError {
    if error.is_timeout() {
        ModelError::Timeout
    } else {
        ModelError::Connection(error_chain(error))
    }
}

/// reqwest's own message is terse ("error sending request"); the cause
/// ("connection refused") is in its sources.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The official SDKs' rule: the server's `x-should-retry` wins, otherwise
/// timeouts, lock conflicts, rate limits and server errors are transient.
fn should_retry(status: StatusCode, headers: &HeaderMap) -> bool {
    match headers.get("x-should-retry").and_then(|v| v.to_str().ok()) {
        Some("true") => return true,
        Some("false") => return false,
        _ => {}
    }
    matches!(status.as_u16(), 408 | 409 | 429) || status.is_server_error()
}

/// The delay the server asked for: `retry-after-ms`, else `retry-after` in
/// seconds or as an HTTP date; capped so a hostile value cannot stall a turn.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let seconds = header("retry-after-ms")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|ms| ms / 1000.0)
        .or_else(|| {
            let value = header("retry-after")?.trim();
            value.parse::<f64>().ok().or_else(|| {
                let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
                let wait = date.signed_duration_since(chrono::Utc::now());
                Some(wait.num_milliseconds() as f64 / 1000.0)
            })
        })?;
    if !seconds.is_finite() || seconds <= 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(seconds).min(MAX_RETRY_AFTER))
}

/// 0.5 s × 2^attempt, capped at 8 s, less up to 25 % jitter so clients that
/// failed together do not retry together.
fn backoff(attempt: u32) -> Duration {
    let base = INITIAL_RETRY_DELAY
        .saturating_mul(2u32.saturating_pow(attempt))
        .min(MAX_RETRY_DELAY);
    base.mul_f64(1.0 - 0.25 * rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn backoff_doubles_from_half_a_second_with_jitter_and_cap() {
        for attempt in 0..8 {
            let delay = backoff(attempt);
            let base = (0.5 * 2f64.powi(attempt as i32)).min(8.0);
            assert!(delay.as_secs_f64() <= base, "{attempt}: {delay:?}");
            assert!(delay.as_secs_f64() >= base * 0.75, "{attempt}: {delay:?}");
        }
        assert!(backoff(u32::MAX) <= MAX_RETRY_DELAY);
    }

    #[test]
    fn retry_after_reads_ms_seconds_and_dates_and_caps() {
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "250"), ("retry-after", "9")])),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "3")])),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "3600")])),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-1")])), None);
        let later = (chrono::Utc::now() + chrono::Duration::seconds(20)).to_rfc2822();
        let later = later.replace("+0000", "GMT");
        let wait = retry_after(&headers(&[("retry-after", &later)])).unwrap();
        assert!(wait > Duration::from_secs(15) && wait <= Duration::from_secs(20));
        assert_eq!(
            retry_after(&headers(&[(
                "retry-after",
                "Wed, 21 Oct 2015 07:28:00 GMT"
            )])),
            None
        );
    }

    #[test]
    fn should_retry_follows_status_and_server_hint() {
        let none = HeaderMap::new();
        for code in [408, 409, 429, 500, 502, 503, 529] {
            assert!(should_retry(StatusCode::from_u16(code).unwrap(), &none));
        }
        for code in [400, 401, 403, 404, 413, 422] {
            assert!(!should_retry(StatusCode::from_u16(code).unwrap(), &none));
        }
        assert!(!should_retry(
            StatusCode::from_u16(529).unwrap(),
            &headers(&[("x-should-retry", "false")])
        ));
        assert!(should_retry(
            StatusCode::BAD_REQUEST,
            &headers(&[("x-should-retry", "true")])
        ));
    }

    #[test]
    fn config_debug_redacts_credentials() {
        let config = AnthropicConfig {
            api_key: Some(SecretString::from("sk-ant-very-secret")),
            ..AnthropicConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("[redacted]"));
        assert!(shown.contains("auth_token: \"[not set]\""), "{shown}");
    }

    #[test]
    fn key_with_newline_is_rejected_without_echoing_it() {
        let error = AnthropicClient::new(AnthropicConfig {
            api_key: Some(SecretString::from("sk-ant-secret\nInjected: 1")),
            ..AnthropicConfig::default()
        })
        .unwrap_err();
        assert!(!error.to_string().contains("sk-ant-secret"));
    }

    #[test]
    fn error_excerpt_is_bounded_on_char_boundaries() {
        let long = "é".repeat(1000);
        let short = excerpt(&long);
        assert_eq!(short.chars().count(), ERROR_BODY_EXCERPT + 1);
    }
}
