//! A strict, scriptable stand-in for the Anthropic Messages API.
//!
//! It validates requests the way the real API does (same statuses, same
//! error bodies), answers with replies a test queued in advance, and records
//! every request so tests can assert on what was sent. With nothing queued it
//! echoes the last user message, which makes the binary usable by hand.
//!
//! Beyond the request's shape it simulates what the real service does with
//! it:
//!
//! - **Prompt caching.** `cache_control` breakpoints (on tools, system text
//!   blocks and message content blocks, at most four, `ttl` `"5m"` or `"1h"`
//!   with no `1h` after a `5m`) write the prompt prefix up to their block; a
//!   top-level `cache_control` puts one on the last cacheable block. A later
//!   request reads the longest prefix still held that ends at one of its
//!   breakpoints or up to 20 blocks before one. Prefixes shorter than the
//!   model's minimum ([`min_cacheable_tokens`], or
//!   [`Config::min_cacheable_tokens`]) are not written; entries live five
//!   minutes or an hour from their last use on the fake's clock, which
//!   [`FakeAnthropic::advance_clock`] moves. `usage` splits the prompt into
//!   `cache_read_input_tokens`, `cache_creation_input_tokens` (with
//!   `cache_creation.ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens`)
//!   and `input_tokens`, and [`Recorded::usage`] keeps it per request.
//! - **The context window** ([`Config::context_window`], 200,000 tokens by
//!   default): a longer prompt is a 400 `prompt is too long: X tokens > N
//!   maximum`. When the prompt plus `max_tokens` does not fit, models before
//!   Claude Sonnet 4.5 reject the request ("input length and \`max_tokens\`
//!   exceed context limit: ...") and later ones stop early with
//!   `stop_reason: "model_context_window_exceeded"`.
//! - **Extended thinking.** `thinking` is checked as the API checks it
//!   (budget at least 1024 and below `max_tokens` unless the
//!   `interleaved-thinking-2025-05-14` beta is on; no forced `tool_choice`,
//!   `temperature` other than 1, `top_k`, or `top_p` below 0.95). With
//!   thinking on, every answer starts with a signed thinking block
//!   ([`GENERATED_THINKING`] when the script gave none).
//! - **`max_tokens`** cuts text and tool input alike: a tool call that does
//!   not fit streams part of its input JSON and the message stops with
//!   `stop_reason: "max_tokens"`.
//! - **Overloaded models** ([`FakeAnthropic::set_overloaded_models`]) answer
//!   every request with a 529 `overloaded_error`.
//!
//! - **Images and PDFs.** `image` and `document` blocks (in user messages
//!   and tool results) are checked as the API checks them: base64 that
//!   decodes, a media type it takes that matches the bytes' magic numbers,
//!   images up to 5 MB of base64, PDFs up to 100 pages, 100 images a request.
//!
//! Token counts are estimates: four characters a token, over each block's
//! JSON; an image counts 1,600 tokens and a PDF 2,000 a page, whatever the
//! length of their base64.
//!
//! ```no_run
//! # async fn demo() {
//! use fake_anthropic::{FakeAnthropic, Reply};
//! let fake = FakeAnthropic::start().await;
//! fake.push(Reply::tool_use("Bash", serde_json::json!({"command": "pwd"})));
//! fake.push(Reply::text("done"));
//! // point the client at fake.url() ...
//! assert_eq!(fake.requests().len(), 0);
//! # }
//! ```

mod cache;
mod media;
mod reply;
mod response;
mod server;
mod validate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use cache::min_cacheable_tokens;
pub use reply::Reply;
pub use response::{GENERATED_THINKING, thinking_signature};

/// The real API's context window for current models, in tokens.
pub const DEFAULT_CONTEXT_WINDOW: u64 = 200_000;

/// How to start the fake.
#[derive(Debug, Clone)]
pub struct Config {
    /// When set, requests must carry exactly this key (`x-api-key` or
    /// `authorization: Bearer`); otherwise any non-empty key is accepted.
    pub api_key: Option<String>,
    /// Where to listen; port 0 picks a free port.
    pub addr: SocketAddr,
    /// The context window in tokens; `None` for no limit.
    pub context_window: Option<u64>,
    /// The shortest prefix the cache writes, for every model; `None` uses
    /// each model's own minimum ([`min_cacheable_tokens`]). Tests set a
    /// small value so small prompts are cached.
    pub min_cacheable_tokens: Option<u64>,
    /// Models that answer every request with a 529 `overloaded_error`.
    pub overloaded_models: Vec<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            api_key: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            context_window: Some(DEFAULT_CONTEXT_WINDOW),
            min_cacheable_tokens: None,
            overloaded_models: Vec::new(),
        }
    }
}

/// The settings that can change while the fake runs, through the
/// `FakeAnthropic::set_*` methods or `POST /_fake/config`. `reset` puts
/// them back to the [`Config`] values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    pub context_window: Option<u64>,
    pub min_cacheable_tokens: Option<u64>,
    pub overloaded_models: Vec<String>,
}

/// One request to `/v1/messages`, valid or not, and the status it got.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recorded {
    /// Header names are lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    /// The parsed body, or the raw body as a JSON string when it was not JSON.
    pub body: Value,
    pub status: u16,
    /// The `usage` the answer reported (the Message object's shape:
    /// `input_tokens`, `cache_creation_input_tokens`,
    /// `cache_read_input_tokens`, `cache_creation`, `output_tokens`); `None`
    /// when the request was answered with an error.
    pub usage: Option<Value>,
}

impl Recorded {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A `usage` field as a number (0 when absent), e.g.
    /// `"cache_read_input_tokens"`.
    pub fn usage_tokens(&self, field: &str) -> u64 {
        self.usage
            .as_ref()
            .and_then(|u| u.get(field))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }
}

/// A running fake. Dropping it stops accepting connections.
pub struct FakeAnthropic {
    addr: SocketAddr,
    shared: Arc<server::Shared>,
    task: JoinHandle<()>,
}

impl FakeAnthropic {
    /// Starts on 127.0.0.1 with a free port, accepting any API key.
    pub async fn start() -> FakeAnthropic {
        FakeAnthropic::start_with(Config::default()).await
    }

    /// Starts with `config`.
    ///
    /// # Panics
    /// When the address cannot be bound; use [`FakeAnthropic::try_start_with`]
    /// to handle that.
    pub async fn start_with(config: Config) -> FakeAnthropic {
        FakeAnthropic::try_start_with(config)
            .await
            .expect("fake-anthropic could not bind its listening address")
    }

    /// Starts with `config`, reporting a bind failure instead of panicking.
    pub async fn try_start_with(config: Config) -> std::io::Result<FakeAnthropic> {
        let listener = TcpListener::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        let settings = Settings {
            context_window: config.context_window,
            min_cacheable_tokens: config.min_cacheable_tokens,
            overloaded_models: config.overloaded_models,
        };
        let shared = Arc::new(server::Shared::new(config.api_key, settings));
        let app = server::router(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            // The real API's small SSE events are not held back by Nagle.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "fake-anthropic server stopped");
            }
        });
        Ok(FakeAnthropic { addr, shared, task })
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues a reply for a later `/v1/messages` call.
    pub fn push(&self, reply: Reply) {
        self.shared.push(reply);
    }

    /// How many queued replies are left (an `Error` counts once whatever its
    /// remaining `times`). Handy to assert a script was used up.
    pub fn pending(&self) -> usize {
        self.shared.pending()
    }

    /// Every `/v1/messages` request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests()
    }

    /// Forgets queued replies, recorded requests and cached prompts, and
    /// puts the runtime settings back to the [`Config`] values.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// The current runtime settings.
    pub fn settings(&self) -> Settings {
        self.shared.settings()
    }

    /// Sets the context window in tokens; `None` removes the limit.
    pub fn set_context_window(&self, tokens: Option<u64>) {
        self.shared
            .update_settings(|settings| settings.context_window = tokens);
    }

    /// Sets the shortest prefix the cache writes for every model; `None`
    /// goes back to each model's own minimum.
    pub fn set_min_cacheable_tokens(&self, tokens: Option<u64>) {
        self.shared
            .update_settings(|settings| settings.min_cacheable_tokens = tokens);
    }

    /// Makes exactly these models answer every request with a 529
    /// `overloaded_error` (an empty list ends the overload). Queued replies
    /// are left for the requests that get through.
    pub fn set_overloaded_models<I, S>(&self, models: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let models: Vec<String> = models.into_iter().map(Into::into).collect();
        self.shared
            .update_settings(|settings| settings.overloaded_models = models);
    }

    /// Moves the fake's clock forward: cache entries expire by it, so
    /// advancing past five minutes (or an hour) expires them without
    /// waiting.
    pub fn advance_clock(&self, by: Duration) {
        self.shared.advance_clock(by);
    }
}

impl std::fmt::Debug for FakeAnthropic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeAnthropic")
            .field("url", &self.url())
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl Drop for FakeAnthropic {
    fn drop(&mut self) {
        self.task.abort();
    }
}
