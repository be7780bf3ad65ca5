//! The agent: the Messages API wire types and the model client the turn loop
//! calls (`ModelClient`, with its Anthropic implementation).

pub mod anthropic;
mod stream;
pub mod wire;

pub use anthropic::{AnthropicClient, AnthropicConfig, ModelClient, ModelError};
pub use wire::{ContentBlock, Message, ModelEvent, ModelRequest, ModelResponse, Role, Usage};
