//! claude-agent-http: a Claude coding agent behind a REST API, one confined
//! working directory per user, sessions kept in a pluggable store.

pub mod agent;
pub mod api;
pub mod auth;
pub mod callback;
pub mod child_env;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod healthcheck;
pub mod hooks;
pub mod mcp;
pub mod media;
pub mod metrics;
pub mod options;
pub mod permissions;
pub mod plugins;
pub mod quotas;
pub mod sandbox;
pub mod serve;
pub mod skills;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tools;
pub mod workspace;
