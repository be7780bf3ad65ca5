//! The agent: the turn loop, the conversation history it keeps valid, the
//! Messages API wire types and the model client (`ModelClient`, Anthropic).

pub mod anthropic;
pub mod context;
mod draft;
mod driver;
pub mod history;
pub mod model;
mod running;
mod stream;
pub mod turn;
pub mod wire;

pub use anthropic::{AnthropicClient, AnthropicConfig};
pub use model::{ModelClient, ModelError};
pub use wire::{ContentBlock, Message, ModelEvent, ModelRequest, ModelResponse, Role, Usage};
