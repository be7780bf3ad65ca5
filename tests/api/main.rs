//! HTTP-level tests: the real application on port 0, driven over HTTP.

#![allow(clippy::unwrap_used)]

mod approvals;
mod chat;
mod connections;
mod context;
mod contract_errors;
mod contract_frames;
mod events;
mod examples;
mod extensions;
mod files;
mod helpers;
mod hooks;
mod listen_warning;
mod mcp_leaks;
mod media;
mod memory;
mod nul_bytes;
mod permissions;
mod pg_outage;
mod process;
mod session_options;
mod session_tools;
mod sessions;
mod starvation;
mod store_full;
mod subagents;
mod tenants;
mod tools;
mod ui;
mod web_fetch;
