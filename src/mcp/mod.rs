//! MCP servers (placeholder)
