//! Claude Code's two tools for MCP resources: `ListMcpResourcesTool` lists
//! what the connected servers offer, `ReadMcpResourceTool` reads one by URI.
//! Offered only when a connected server says it has resources.

use std::sync::Arc;

use async_trait::async_trait;
use rmcp::model::ReadResourceRequestParams;
use serde_json::{Value, json};

use super::server::ServerSlot;
use super::unless_cancelled;
use crate::tools::{Tool, ToolContext, ToolOutput};

/// Resources listed in one answer; more are counted, not shown.
const MAX_LISTED: usize = 500;

/// The two tools over `servers` (those that offer resources).
pub(super) fn tools(servers: Vec<Arc<ServerSlot>>) -> Vec<Arc<dyn Tool>> {
    let servers: Arc<[Arc<ServerSlot>]> = servers.into();
    vec![
        Arc::new(ListResources {
            servers: servers.clone(),
        }),
        Arc::new(ReadResource { servers }),
    ]
}

struct ListResources {
    servers: Arc<[Arc<ServerSlot>]>,
}

struct ReadResource {
    servers: Arc<[Arc<ServerSlot>]>,
}

fn server_names(servers: &[Arc<ServerSlot>]) -> String {
    servers
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[async_trait]
impl Tool for ListResources {
    fn name(&self) -> &str {
        "ListMcpResourcesTool"
    }

    fn description(&self) -> String {
        format!(
            "Lists the resources (files, records, documents) that connected MCP servers make \
             available, with their URIs, names and types. Give `server` to list one server's \
             only. Read one with ReadMcpResourceTool. Servers with resources: {}.",
            server_names(&self.servers)
        )
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "server": {"type": "string", "description": "Only this server's resources."}
            },
            "additionalProperties": false
        })
    }

    fn read_only(&self) -> bool {
        true
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let only = input.get("server").and_then(Value::as_str);
        let chosen: Vec<&Arc<ServerSlot>> = self
            .servers
            .iter()
            .filter(|s| only.is_none_or(|name| s.name == name))
            .collect();
        if chosen.is_empty() {
            return ToolOutput::error(format!(
                "No MCP server named '{}' offers resources. Servers with resources: {}.",
                only.unwrap_or_default(),
                server_names(&self.servers)
            ));
        }
        let mut listed = Vec::new();
        let mut failures = Vec::new();
        for slot in chosen {
            let result = match unless_cancelled(ctx, slot.connection(true)).await {
                Err(cancelled) => return cancelled,
                Ok(Err(e)) => Err(e),
                Ok(Ok(conn)) => match unless_cancelled(ctx, conn.peer.list_all_resources()).await {
                    Err(cancelled) => return cancelled,
                    Ok(listed) => listed.map_err(|e| e.to_string()),
                },
            };
            match result {
                Ok(resources) => {
                    for resource in resources {
                        let mut entry = serde_json::to_value(&resource).unwrap_or(Value::Null);
                        if let Value::Object(map) = &mut entry {
                            map.insert("server".into(), Value::String(slot.name.clone()));
                        }
                        listed.push(entry);
                    }
                }
                Err(e) => failures.push(format!("{}: {e}", slot.name)),
            }
        }
        let total = listed.len();
        listed.truncate(MAX_LISTED);
        let mut text = serde_json::to_string_pretty(&listed).unwrap_or_default();
        if total > MAX_LISTED {
            text.push_str(&format!("\n[{} more not shown]", total - MAX_LISTED));
        }
        if !failures.is_empty() {
            text.push_str(&format!(
                "\nCould not list the resources of: {}",
                failures.join("; ")
            ));
        }
        ToolOutput::ok(text)
    }
}

#[async_trait]
impl Tool for ReadResource {
    fn name(&self) -> &str {
        "ReadMcpResourceTool"
    }

    fn description(&self) -> String {
        format!(
            "Reads one resource of an MCP server by its URI (as ListMcpResourcesTool lists \
             them). Text comes back as text, images as images. Servers with resources: {}.",
            server_names(&self.servers)
        )
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "server": {"type": "string", "description": "The MCP server's name."},
                "uri": {"type": "string", "description": "The resource's URI."}
            },
            "required": ["server", "uri"],
            "additionalProperties": false
        })
    }

    fn read_only(&self) -> bool {
        true
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> ToolOutput {
        let (Some(server), Some(uri)) = (
            input.get("server").and_then(Value::as_str),
            input.get("uri").and_then(Value::as_str),
        ) else {
            return ToolOutput::error("Invalid input: `server` and `uri` are required strings.");
        };
        let Some(slot) = self.servers.iter().find(|s| s.name == server) else {
            return ToolOutput::error(format!(
                "No MCP server named '{server}' offers resources. Servers with resources: {}.",
                server_names(&self.servers)
            ));
        };
        let conn = match unless_cancelled(ctx, slot.connection(true)).await {
            Err(cancelled) => return cancelled,
            Ok(conn) => conn,
        };
        let conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                return ToolOutput::error(format!("MCP server '{server}' is unavailable: {e}"));
            }
        };
        let params = ReadResourceRequestParams::new(uri);
        let read = match unless_cancelled(ctx, conn.peer.read_resource(params)).await {
            Err(cancelled) => return cancelled,
            Ok(read) => read,
        };
        match read {
            Ok(result) => render_contents(&serde_json::to_value(&result).unwrap_or(Value::Null)),
            Err(e) => ToolOutput::error(format!("MCP server '{server}' could not read {uri}: {e}")),
        }
    }
}

/// A read's contents: text as it is, images shown as images (judged by
/// their bytes), other binary content described.
fn render_contents(result: &Value) -> ToolOutput {
    let mut parts = Vec::new();
    let mut media = Vec::new();
    for item in result
        .get("contents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let field = |name: &str| item.get(name).and_then(Value::as_str).unwrap_or("");
        if let Some(text) = item.get("text").and_then(Value::as_str) {
            parts.push(format!("[resource {}]\n{text}", field("uri")));
            continue;
        }
        let bytes = super::decode_base64(field("blob"));
        match super::image_in(&bytes, field("uri")) {
            Some(shown) => {
                parts.push(shown.content);
                media.extend(shown.media);
            }
            None => parts.push(format!(
                "[binary resource {} ({}), {} bytes]",
                field("uri"),
                item.get("mimeType")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown type"),
                bytes.len()
            )),
        }
    }
    let mut out = ToolOutput::ok(parts.join("\n"));
    out.media = media;
    out
}
