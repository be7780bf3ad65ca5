//! HTTP-level tests: the real application on port 0, driven over HTTP.

#![allow(clippy::unwrap_used)]

mod helpers;
mod sessions;
mod chat;
