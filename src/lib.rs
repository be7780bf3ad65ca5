//! claude-agent-http: a Claude coding agent behind a REST API, one confined
//! working directory per user, sessions kept in a pluggable store.

pub mod domain;
pub mod mcp;
pub mod plugins;
pub mod skills;
pub mod tools;
pub mod workspace;
