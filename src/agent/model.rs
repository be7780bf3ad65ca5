//! What the turn loop needs from a model: the `ModelClient` trait and the
//! ways a call can fail, whatever the provider behind it.

use async_trait::async_trait;
use tokio::sync::mpsc::UnboundedSender;

use super::wire::{ContentBlock, ModelEvent, ModelRequest, ModelResponse};

/// Why a model call failed. Messages never contain credentials.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    #[error("no Anthropic API key or auth token is configured")]
    NotConfigured,
    /// 401 or 403 from upstream.
    #[error("the Anthropic API rejected the credentials ({message}); check the API key")]
    Unauthorized { message: String },
    /// A non-retryable error status, or the last one after retries.
    #[error("the Anthropic API answered {status} {error_type}: {message}")]
    Status {
        status: u16,
        error_type: String,
        message: String,
    },
    #[error("could not reach the Anthropic API: {0}")]
    Connection(String),
    #[error("the Anthropic API did not answer in time")]
    Timeout,
    /// The reply broke off after it started: cut, timed out, an `error`
    /// event, or an unreadable event. `partial` is what can be kept of it
    /// (completed blocks and the text so far; unfinished tool calls dropped).
    #[error("the model's reply broke off: {message}")]
    Stream {
        message: String,
        partial: Vec<ContentBlock>,
    },
    #[error("unreadable reply from the Anthropic API: {0}")]
    Invalid(String),
}

impl ModelError {
    /// What the model had produced before the failure (empty unless `Stream`).
    pub fn partial(&self) -> &[ContentBlock] {
        match self {
            Self::Stream { partial, .. } => partial,
            _ => &[],
        }
    }
}

/// One streamed model call at a time per call site; implementations are
/// shared across sessions.
#[async_trait]
pub trait ModelClient: Send + Sync {
    /// Streams one model call. Text/thinking deltas and completed tool_use
    /// blocks go to `events` as they arrive; a dropped receiver is not an
    /// error.
    async fn send(
        &self,
        request: &ModelRequest,
        events: &UnboundedSender<ModelEvent>,
    ) -> Result<ModelResponse, ModelError>;
}
