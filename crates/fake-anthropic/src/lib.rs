//! A strict, scriptable stand-in for the Anthropic Messages API.
//!
//! It validates requests the way the real API does (same statuses, same
//! error bodies), answers with replies a test queued in advance, and records
//! every request so tests can assert on what was sent. With nothing queued it
//! echoes the last user message, which makes the binary usable by hand.
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

mod reply;
mod response;
mod server;
mod validate;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use reply::Reply;
pub use response::thinking_signature;

/// How to start the fake.
#[derive(Debug, Clone)]
pub struct Config {
    /// When set, requests must carry exactly this key (`x-api-key` or
    /// `authorization: Bearer`); otherwise any non-empty key is accepted.
    pub api_key: Option<String>,
    /// Where to listen; port 0 picks a free port.
    pub addr: SocketAddr,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            api_key: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// One request to `/v1/messages`, valid or not, and the status it got.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recorded {
    /// Header names are lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    /// The parsed body, or the raw body as a JSON string when it was not JSON.
    pub body: Value,
    pub status: u16,
}

impl Recorded {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
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
        let shared = Arc::new(server::Shared::new(config.api_key));
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

    /// Forgets queued replies and recorded requests.
    pub fn reset(&self) {
        self.shared.reset();
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
