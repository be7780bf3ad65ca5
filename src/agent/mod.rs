//! The agent: the turn loop, the session's event log, the conversation history it keeps valid, the
//! Messages API wire types, the model client (`ModelClient`, Anthropic), and
//! what a turn starts from: its system prompt, the project's memory and
//! slash commands.

pub mod anthropic;
pub mod approvals;
pub mod commands;
pub mod context;
mod draft;
mod driver;
pub mod events;
pub mod history;
pub mod memory;
pub mod model;
pub mod prompt;
mod running;
mod stream;
pub mod subagents;
pub mod turn;
pub mod wire;

pub use anthropic::{AnthropicClient, AnthropicConfig};
pub use model::{ModelClient, ModelError};
pub use wire::{ContentBlock, Message, ModelEvent, ModelRequest, ModelResponse, Role, Usage};
