//! The Anthropic Messages API wire types: messages, content blocks, usage and
//! the request/response shapes, serialized exactly as the API expects them.

use std::ops::AddAssign;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use crate::config::CacheTtl;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
}

/// One conversation message. `content` is always sent as an array of blocks;
/// a plain string is accepted on input and becomes one text block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(deserialize_with = "content_blocks")]
    pub content: Vec<ContentBlock>,
}

impl Message {
    pub fn user_text(text: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: vec![ContentBlock::Text { text: text.into() }],
        }
    }

    pub fn assistant(content: Vec<ContentBlock>) -> Self {
        Self {
            role: Role::Assistant,
            content,
        }
    }

    /// The concatenated text blocks, as a reader would see the message.
    pub fn text(&self) -> String {
        blocks_text(&self.content)
    }
}

/// The concatenation of the text blocks among `blocks`.
pub fn blocks_text(blocks: &[ContentBlock]) -> String {
    blocks
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text {
        text: String,
    },
    /// Kept verbatim, signature included: the API checks it when the block is
    /// sent back in a later request.
    Thinking {
        thinking: String,
        signature: String,
    },
    RedactedThinking {
        data: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        content: ToolResultContent,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
    /// An image the user attached or a tool read (user messages and tool
    /// results only).
    Image {
        source: MediaSource,
    },
    /// A PDF the user attached or a tool read.
    Document {
        source: MediaSource,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    },
}

/// Where an image's or document's bytes are: inline, base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MediaSource {
    Base64 { media_type: String, data: String },
}

impl ContentBlock {
    /// An image or document block of `bytes` of `media_type`, base64-encoded.
    pub fn media(media_type: &str, bytes: &[u8], title: Option<String>) -> Self {
        use base64::Engine;
        let source = MediaSource::Base64 {
            media_type: media_type.to_owned(),
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        };
        if media_type == "application/pdf" {
            Self::Document { source, title }
        } else {
            Self::Image { source }
        }
    }
}

/// What a tool call returned: its text, and images or documents (Read of
/// an image or a PDF). Sent as a plain string when there is only text, as
/// the API's list of blocks otherwise; read back from either.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolResultContent {
    pub text: String,
    /// Only `Image` and `Document` blocks.
    pub media: Vec<ContentBlock>,
}

impl From<String> for ToolResultContent {
    fn from(text: String) -> Self {
        Self {
            text,
            media: Vec::new(),
        }
    }
}

impl From<&str> for ToolResultContent {
    fn from(text: &str) -> Self {
        Self::from(text.to_owned())
    }
}

impl Serialize for ToolResultContent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        if self.media.is_empty() {
            return serializer.serialize_str(&self.text);
        }
        let with_text = !self.text.is_empty();
        let mut seq = serializer.serialize_seq(Some(self.media.len() + usize::from(with_text)))?;
        if with_text {
            seq.serialize_element(&ContentBlock::Text {
                text: self.text.clone(),
            })?;
        }
        for block in &self.media {
            seq.serialize_element(block)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for ToolResultContent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Content {
            Text(String),
            Parts(Vec<Value>),
        }
        Ok(match Content::deserialize(deserializer)? {
            Content::Text(text) => text.into(),
            Content::Parts(parts) => {
                let mut texts = Vec::new();
                let mut media = Vec::new();
                for part in parts {
                    match part.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            if let Some(text) = part.get("text").and_then(Value::as_str) {
                                texts.push(text.to_owned());
                            }
                        }
                        Some("image" | "document") => {
                            if let Ok(block) = serde_json::from_value::<ContentBlock>(part) {
                                media.push(block);
                            }
                        }
                        _ => {}
                    }
                }
                Self {
                    text: texts.join("\n"),
                    media,
                }
            }
        })
    }
}

/// Token counts of one call, or summed over several (`+=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default, deserialize_with = "null_as_zero")]
    pub input_tokens: u64,
    #[serde(default, deserialize_with = "null_as_zero")]
    pub output_tokens: u64,
    #[serde(default, deserialize_with = "null_as_zero")]
    pub cache_creation_input_tokens: u64,
    #[serde(default, deserialize_with = "null_as_zero")]
    pub cache_read_input_tokens: u64,
}

impl AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_creation_input_tokens += other.cache_creation_input_tokens;
        self.cache_read_input_tokens += other.cache_read_input_tokens;
    }
}

/// One model call. `tools` are full tool definitions
/// (`{"name", "description", "input_schema"}`); `system` is sent as an
/// array of text blocks, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRequest {
    pub model: String,
    pub max_tokens: u32,
    pub system: Vec<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<Value>,
    /// Extended thinking with this budget; `None` leaves it off.
    pub thinking_budget: Option<u32>,
    /// Prompt-cache breakpoints with this TTL; `None` marks none.
    pub cache: Option<CacheTtl>,
}

/// Sent with tools and thinking, so the model may think between tool calls.
pub const INTERLEAVED_THINKING_BETA: &str = "interleaved-thinking-2025-05-14";

impl ModelRequest {
    /// A plain request: no thinking, no cache breakpoints.
    pub fn new(model: impl Into<String>, max_tokens: u32, messages: Vec<Message>) -> Self {
        Self {
            model: model.into(),
            max_tokens,
            system: Vec::new(),
            messages,
            tools: Vec::new(),
            thinking_budget: None,
            cache: None,
        }
    }

    /// The `anthropic-beta` features the request needs.
    pub fn betas(&self) -> Vec<&'static str> {
        if self.thinking_budget.is_some() && !self.tools.is_empty() {
            vec![INTERLEAVED_THINKING_BETA]
        } else {
            Vec::new()
        }
    }

    /// The request body. With caching on, breakpoints go where a multi-turn
    /// tool loop reads the most from the cache: after the tools, after the
    /// system prompt, on the newest message, and on the message the previous
    /// call ended with (so its cached prefix is found however many blocks
    /// were added since). At most four, as the API allows.
    pub fn body(&self) -> Value {
        let mut body = serde_json::Map::new();
        body.insert("model".into(), Value::from(self.model.clone()));
        body.insert("max_tokens".into(), Value::from(self.max_tokens));
        let marker = self.cache.map(|ttl| match ttl {
            CacheTtl::FiveMinutes => json!({"type": "ephemeral"}),
            CacheTtl::OneHour => json!({"type": "ephemeral", "ttl": "1h"}),
        });
        if !self.system.is_empty() {
            let mut blocks: Vec<Value> = self
                .system
                .iter()
                .map(|text| json!({"type": "text", "text": text}))
                .collect();
            mark_last(&mut blocks, marker.as_ref());
            body.insert("system".into(), Value::Array(blocks));
        }
        let mut messages: Vec<Value> = self
            .messages
            .iter()
            .map(|m| serde_json::to_value(m).unwrap_or(Value::Null))
            .collect();
        if let Some(marker) = &marker {
            let users: Vec<usize> = self
                .messages
                .iter()
                .enumerate()
                .filter(|(_, m)| m.role == Role::User)
                .map(|(i, _)| i)
                .rev()
                .take(2)
                .collect();
            for i in users {
                if let Some(Value::Array(content)) = messages[i].get_mut("content") {
                    mark_last(content, Some(marker));
                }
            }
        }
        body.insert("messages".into(), Value::Array(messages));
        if !self.tools.is_empty() {
            let mut tools = self.tools.clone();
            mark_last(&mut tools, marker.as_ref());
            body.insert("tools".into(), Value::Array(tools));
        }
        if let Some(budget) = self.thinking_budget {
            body.insert(
                "thinking".into(),
                json!({"type": "enabled", "budget_tokens": budget}),
            );
        }
        Value::Object(body)
    }
}

/// Puts `marker` as `cache_control` on the last element of `blocks`.
fn mark_last(blocks: &mut [Value], marker: Option<&Value>) {
    if let (Some(marker), Some(Value::Object(last))) = (marker, blocks.last_mut()) {
        last.insert("cache_control".into(), marker.clone());
    }
}

/// The assistant message a call produced, as the non-streaming API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelResponse {
    pub id: String,
    pub model: String,
    pub content: Vec<ContentBlock>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub usage: Usage,
}

impl ModelResponse {
    /// The concatenated text blocks of the reply.
    pub fn text(&self) -> String {
        blocks_text(&self.content)
    }

    /// The tool calls the model decided on, in order.
    pub fn tool_uses(&self) -> impl Iterator<Item = (&str, &str, &Value)> {
        self.content.iter().filter_map(|block| match block {
            ContentBlock::ToolUse { id, name, input } => Some((id.as_str(), name.as_str(), input)),
            _ => None,
        })
    }
}

/// What a streaming call reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    TextDelta(String),
    ThinkingDelta(String),
    /// A tool call whose input is complete.
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
}

fn null_as_zero<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(deserializer)?.unwrap_or(0))
}

fn content_blocks<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<ContentBlock>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Content {
        Text(String),
        Blocks(Vec<ContentBlock>),
    }
    Ok(match Content::deserialize(deserializer)? {
        Content::Text(text) => vec![ContentBlock::Text { text }],
        Content::Blocks(blocks) => blocks,
    })
}

/// A tool result's content is a string or an array of content blocks; the
/// text blocks are joined and other kinds (images) are dropped.
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_content_becomes_one_text_block_and_serializes_as_array() {
        let message: Message =
            serde_json::from_value(json!({"role": "user", "content": "hello"})).unwrap();
        assert_eq!(message, Message::user_text("hello"));
        assert_eq!(
            serde_json::to_value(&message).unwrap(),
            json!({"role": "user", "content": [{"type": "text", "text": "hello"}]})
        );
    }

    #[test]
    fn tool_result_array_content_keeps_its_text_and_media() {
        let message: Message = serde_json::from_value(json!({
            "role": "user",
            "content": [{
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": [
                    {"type": "text", "text": "line one"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}},
                    {"type": "text", "text": "line two"}
                ],
                "is_error": true
            }]
        }))
        .unwrap();
        assert_eq!(
            message.content,
            vec![ContentBlock::ToolResult {
                tool_use_id: "toolu_1".into(),
                content: ToolResultContent {
                    text: "line one\nline two".into(),
                    media: vec![ContentBlock::Image {
                        source: MediaSource::Base64 {
                            media_type: "image/png".into(),
                            data: String::new(),
                        }
                    }],
                },
                is_error: true,
            }]
        );
        // Sent back as blocks: the text first, then the image.
        let sent = serde_json::to_value(&message.content[0]).unwrap();
        assert_eq!(
            sent["content"][0],
            json!({"type": "text", "text": "line one\nline two"})
        );
        assert_eq!(sent["content"][1]["type"], "image");
    }

    #[test]
    fn tool_result_omits_is_error_when_false() {
        let block = ContentBlock::ToolResult {
            tool_use_id: "toolu_1".into(),
            content: "ok".into(),
            is_error: false,
        };
        let value = serde_json::to_value(&block).unwrap();
        assert_eq!(
            value,
            json!({"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"})
        );
        assert_eq!(
            serde_json::from_value::<ContentBlock>(value).unwrap(),
            block
        );
    }

    #[test]
    fn every_block_kind_round_trips() {
        let message = Message::assistant(vec![
            ContentBlock::Thinking {
                thinking: "hmm".into(),
                signature: "sig==".into(),
            },
            ContentBlock::RedactedThinking {
                data: "opaque".into(),
            },
            ContentBlock::Text { text: "hi".into() },
            ContentBlock::ToolUse {
                id: "toolu_1".into(),
                name: "read_file".into(),
                input: json!({"path": "a.txt"}),
            },
        ]);
        let value = serde_json::to_value(&message).unwrap();
        assert_eq!(
            value,
            json!({"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig=="},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "hi"},
                {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "a.txt"}}
            ]})
        );
        assert_eq!(serde_json::from_value::<Message>(value).unwrap(), message);
    }

    #[test]
    fn usage_defaults_missing_and_null_fields_to_zero_and_adds() {
        let mut usage: Usage = serde_json::from_value(
            json!({"input_tokens": 10, "output_tokens": 2, "cache_creation_input_tokens": null}),
        )
        .unwrap();
        assert_eq!(usage.cache_creation_input_tokens, 0);
        assert_eq!(usage.cache_read_input_tokens, 0);
        usage += Usage {
            input_tokens: 1,
            output_tokens: 1,
            cache_creation_input_tokens: 3,
            cache_read_input_tokens: 4,
        };
        assert_eq!(
            usage,
            Usage {
                input_tokens: 11,
                output_tokens: 3,
                cache_creation_input_tokens: 3,
                cache_read_input_tokens: 4,
            }
        );
    }

    #[test]
    fn request_omits_empty_tools_and_missing_system() {
        let request = ModelRequest::new("claude-sonnet-4-6", 1024, vec![Message::user_text("hi")]);
        assert_eq!(
            request.body(),
            json!({
                "model": "claude-sonnet-4-6",
                "max_tokens": 1024,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
            })
        );
        assert!(request.betas().is_empty());
    }

    #[test]
    fn cache_breakpoints_mark_tools_system_and_the_two_newest_user_messages() {
        let tool_use = ContentBlock::ToolUse {
            id: "toolu_1".into(),
            name: "Bash".into(),
            input: json!({"command": "ls"}),
        };
        let result = |id: &str| ContentBlock::ToolResult {
            tool_use_id: id.into(),
            content: "ok".into(),
            is_error: false,
        };
        let mut request = ModelRequest::new(
            "claude-sonnet-4-6",
            1024,
            vec![
                Message::user_text("first"),
                Message::assistant(vec![ContentBlock::Text { text: "a".into() }]),
                Message::user_text("second"),
                Message::assistant(vec![tool_use]),
                Message {
                    role: Role::User,
                    content: vec![result("toolu_1")],
                },
            ],
        );
        request.system = vec!["base".into(), "memory".into()];
        request.tools = vec![json!({"name": "A"}), json!({"name": "B"})];
        request.cache = Some(CacheTtl::OneHour);
        let body = request.body();
        let marked = |v: &Value| v.get("cache_control").is_some();
        let count = body["system"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| marked(b))
            .count()
            + body["tools"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|b| marked(b))
                .count()
            + body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|m| m["content"].as_array().unwrap())
                .filter(|b| marked(b))
                .count();
        assert_eq!(count, 4);
        assert!(marked(&body["system"][1]) && !marked(&body["system"][0]));
        assert!(marked(&body["tools"][1]));
        assert_eq!(
            body["messages"][4]["content"][0]["cache_control"]["ttl"],
            "1h"
        );
        assert!(marked(&body["messages"][2]["content"][0]));
        assert!(!marked(&body["messages"][0]["content"][0]));

        request.cache = None;
        request.thinking_budget = Some(2048);
        let body = request.body();
        assert!(!body.to_string().contains("cache_control"));
        assert_eq!(body["thinking"]["budget_tokens"], 2048);
        assert_eq!(request.betas(), [INTERLEAVED_THINKING_BETA]);
    }
}
