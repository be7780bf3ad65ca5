//! Assembles a streamed Messages API reply from its server-sent events: the
//! final `ModelResponse`, the live `ModelEvent`s, and what survives a cut.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use super::wire::{ContentBlock, ModelEvent, ModelResponse, Usage};

/// Why the stream could not be assembled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StreamFault {
    /// The upstream sent an `error` event.
    Upstream { error_type: String, message: String },
    /// An event we know could not be read.
    Invalid(String),
}

/// Whether more events are expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    More,
    Done,
}

/// A content block while its deltas arrive.
#[derive(Debug)]
enum OpenBlock {
    Text(String),
    Thinking {
        thinking: String,
        signature: String,
    },
    RedactedThinking(String),
    ToolUse {
        id: String,
        name: String,
        input: Value,
        json: String,
    },
    /// A block kind this client does not model (server tools, citations…).
    Other,
}

/// Folds the events of one streamed reply into a `ModelResponse`.
#[derive(Debug, Default)]
pub(crate) struct StreamAssembler {
    id: String,
    model: String,
    usage: Usage,
    stop_reason: Option<String>,
    open: BTreeMap<u64, OpenBlock>,
    closed: BTreeMap<u64, ContentBlock>,
    started: bool,
    finished: bool,
    /// Tool calls whose input was not JSON: cut by `max_tokens`, or broken.
    unreadable_inputs: Vec<String>,
}

#[derive(Deserialize)]
struct MessageStart {
    message: MessageHead,
}

#[derive(Deserialize)]
struct MessageHead {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: Usage,
}

#[derive(Deserialize)]
struct BlockStart {
    index: u64,
    content_block: Value,
}

#[derive(Deserialize)]
struct BlockDelta {
    index: u64,
    delta: Delta,
}

/// The wire names all end in `_delta` (`text_delta`, `input_json_delta`…).
#[derive(Deserialize)]
#[serde(tag = "type")]
enum Delta {
    #[serde(rename = "text_delta")]
    Text { text: String },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: String },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: String },
    #[serde(rename = "signature_delta")]
    Signature { signature: String },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct BlockStop {
    index: u64,
}

#[derive(Deserialize)]
struct MessageDelta {
    #[serde(default)]
    delta: MessageDeltaBody,
    #[serde(default)]
    usage: Option<UsageUpdate>,
}

#[derive(Deserialize, Default)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// `message_delta` usage is cumulative: each field present replaces the
/// running value.
#[derive(Deserialize)]
struct UsageUpdate {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorEvent {
    error: ErrorBody,
}

#[derive(Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(rename = "type", default)]
    pub(crate) error_type: String,
    #[serde(default)]
    pub(crate) message: String,
}

fn parse<'a, T: Deserialize<'a>>(kind: &str, data: &'a str) -> Result<T, StreamFault> {
    serde_json::from_str(data).map_err(|e| StreamFault::Invalid(format!("{kind} event: {e}")))
}

fn emit(events: &UnboundedSender<ModelEvent>, event: ModelEvent) {
    // A caller that stopped listening still gets the assembled response.
    let _ = events.send(event);
}

impl StreamAssembler {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Whether any event of the reply has been read.
    pub(crate) fn started(&self) -> bool {
        self.started
    }

    /// Feeds one server-sent event. `event` is the SSE event name; the
    /// `type` inside `data` wins when both are present.
    pub(crate) fn handle(
        &mut self,
        event: &str,
        data: &str,
        events: &UnboundedSender<ModelEvent>,
    ) -> Result<Progress, StreamFault> {
        let kind = serde_json::from_str::<Value>(data)
            .ok()
            .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| event.to_owned());
        match kind.as_str() {
            "message_start" => {
                let start: MessageStart = parse(&kind, data)?;
                self.started = true;
                self.id = start.message.id;
                self.model = start.message.model;
                self.usage = start.message.usage;
            }
            "content_block_start" => {
                let start: BlockStart = parse(&kind, data)?;
                self.started = true;
                let block = self.open_block(start.content_block, events)?;
                self.open.insert(start.index, block);
            }
            "content_block_delta" => {
                let delta: BlockDelta = parse(&kind, data)?;
                self.started = true;
                self.apply_delta(delta, events)?;
            }
            "content_block_stop" => {
                let stop: BlockStop = parse(&kind, data)?;
                self.close_block(stop.index, events)?;
            }
            "message_delta" => {
                let delta: MessageDelta = parse(&kind, data)?;
                if delta.delta.stop_reason.is_some() {
                    self.stop_reason = delta.delta.stop_reason;
                }
                if let Some(update) = delta.usage {
                    self.apply_usage(update);
                }
            }
            "message_stop" => {
                if let Some(id) = self.unreadable_inputs.first()
                    && !matches!(
                        self.stop_reason.as_deref(),
                        Some("max_tokens" | "model_context_window_exceeded")
                    )
                {
                    return Err(StreamFault::Invalid(format!(
                        "tool_use {id} input is not JSON"
                    )));
                }
                self.finished = true;
                return Ok(Progress::Done);
            }
            "error" => {
                let error: ErrorEvent = parse(&kind, data)?;
                return Err(StreamFault::Upstream {
                    error_type: error.error.error_type,
                    message: error.error.message,
                });
            }
            // `ping` and event types added after this client was written.
            _ => {}
        }
        Ok(Progress::More)
    }

    fn open_block(
        &self,
        block: Value,
        events: &UnboundedSender<ModelEvent>,
    ) -> Result<OpenBlock, StreamFault> {
        let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
        let open = match kind {
            "text" | "thinking" | "redacted_thinking" | "tool_use" => {
                let parsed: ContentBlock = serde_json::from_value(block)
                    .map_err(|e| StreamFault::Invalid(format!("content_block_start: {e}")))?;
                match parsed {
                    ContentBlock::Text { text } => {
                        if !text.is_empty() {
                            emit(events, ModelEvent::TextDelta(text.clone()));
                        }
                        OpenBlock::Text(text)
                    }
                    ContentBlock::Thinking {
                        thinking,
                        signature,
                    } => {
                        if !thinking.is_empty() {
                            emit(events, ModelEvent::ThinkingDelta(thinking.clone()));
                        }
                        OpenBlock::Thinking {
                            thinking,
                            signature,
                        }
                    }
                    ContentBlock::RedactedThinking { data } => OpenBlock::RedactedThinking(data),
                    ContentBlock::ToolUse { id, name, input } => OpenBlock::ToolUse {
                        id,
                        name,
                        input,
                        json: String::new(),
                    },
                    ContentBlock::ToolResult { .. }
                    | ContentBlock::Image { .. }
                    | ContentBlock::Document { .. } => OpenBlock::Other,
                }
            }
            _ => OpenBlock::Other,
        };
        Ok(open)
    }

    fn apply_delta(
        &mut self,
        delta: BlockDelta,
        events: &UnboundedSender<ModelEvent>,
    ) -> Result<(), StreamFault> {
        let Some(block) = self.open.get_mut(&delta.index) else {
            return Err(StreamFault::Invalid(format!(
                "content_block_delta for block {} that was not started",
                delta.index
            )));
        };
        match (block, delta.delta) {
            (OpenBlock::Text(text), Delta::Text { text: piece }) => {
                text.push_str(&piece);
                emit(events, ModelEvent::TextDelta(piece));
            }
            (OpenBlock::ToolUse { json, .. }, Delta::InputJson { partial_json }) => {
                json.push_str(&partial_json);
            }
            (OpenBlock::Thinking { thinking, .. }, Delta::Thinking { thinking: piece }) => {
                thinking.push_str(&piece);
                emit(events, ModelEvent::ThinkingDelta(piece));
            }
            (OpenBlock::Thinking { signature, .. }, Delta::Signature { signature: piece }) => {
                signature.push_str(&piece);
            }
            // Citations and other deltas this client does not model.
            _ => {}
        }
        Ok(())
    }

    fn close_block(
        &mut self,
        index: u64,
        events: &UnboundedSender<ModelEvent>,
    ) -> Result<(), StreamFault> {
        let Some(block) = self.open.remove(&index) else {
            return Err(StreamFault::Invalid(format!(
                "content_block_stop for block {index} that was not started"
            )));
        };
        let closed = match block {
            OpenBlock::Text(text) => ContentBlock::Text { text },
            OpenBlock::Thinking {
                thinking,
                signature,
            } => ContentBlock::Thinking {
                thinking,
                signature,
            },
            OpenBlock::RedactedThinking(data) => ContentBlock::RedactedThinking { data },
            OpenBlock::ToolUse {
                id,
                name,
                input,
                json,
            } => {
                let input = if json.trim().is_empty() {
                    if input.is_null() {
                        Value::Object(Default::default())
                    } else {
                        input
                    }
                } else if let Ok(input) = serde_json::from_str(&json) {
                    input
                } else {
                    // Only a reply cut by `max_tokens` may end like this
                    // (checked at `message_stop`); the call is never run.
                    self.unreadable_inputs.push(id.clone());
                    Value::Object(Default::default())
                };
                emit(
                    events,
                    ModelEvent::ToolUse {
                        id: id.clone(),
                        name: name.clone(),
                        input: input.clone(),
                    },
                );
                ContentBlock::ToolUse { id, name, input }
            }
            OpenBlock::Other => return Ok(()),
        };
        self.closed.insert(index, closed);
        Ok(())
    }

    fn apply_usage(&mut self, update: UsageUpdate) {
        let usage = &mut self.usage;
        if let Some(n) = update.input_tokens {
            usage.input_tokens = n;
        }
        if let Some(n) = update.output_tokens {
            usage.output_tokens = n;
        }
        if let Some(n) = update.cache_creation_input_tokens {
            usage.cache_creation_input_tokens = n;
        }
        if let Some(n) = update.cache_read_input_tokens {
            usage.cache_read_input_tokens = n;
        }
    }

    /// The reply, once `message_stop` arrived; otherwise `Err(partial)`.
    pub(crate) fn finish(self) -> Result<ModelResponse, Vec<ContentBlock>> {
        if !self.finished {
            return Err(self.partial());
        }
        Ok(ModelResponse {
            id: self.id,
            model: self.model,
            content: self.closed.into_values().collect(),
            stop_reason: self.stop_reason,
            usage: self.usage,
        })
    }

    /// What can be kept of a reply that was cut: every completed block plus
    /// the text of a text block still open. Unfinished tool calls and
    /// thinking without its signature would be rejected if sent back.
    pub(crate) fn partial(self) -> Vec<ContentBlock> {
        let mut blocks = self.closed;
        for (index, block) in self.open {
            if let OpenBlock::Text(text) = block {
                blocks.insert(index, ContentBlock::Text { text });
            }
        }
        blocks
            .into_values()
            .filter(|block| !matches!(block, ContentBlock::Text { text } if text.is_empty()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::sync::mpsc;

    fn feed(
        assembler: &mut StreamAssembler,
        events: &UnboundedSender<ModelEvent>,
        lines: &[Value],
    ) -> Result<Progress, StreamFault> {
        let mut progress = Progress::More;
        for data in lines {
            let kind = data["type"].as_str().unwrap_or("").to_owned();
            progress = assembler.handle(&kind, &data.to_string(), events)?;
        }
        Ok(progress)
    }

    fn start() -> Value {
        json!({"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
            "content": [], "stop_reason": null,
            "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 7}
        }})
    }

    #[test]
    fn usage_from_message_delta_replaces_running_values() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut a = StreamAssembler::new();
        let progress = feed(
            &mut a,
            &tx,
            &[
                start(),
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                       "usage": {"output_tokens": 15, "cache_creation_input_tokens": null}}),
                json!({"type": "message_delta", "delta": {},
                       "usage": {"output_tokens": 42, "input_tokens": 30}}),
                json!({"type": "message_stop"}),
            ],
        )
        .unwrap();
        assert_eq!(progress, Progress::Done);
        let response = a.finish().unwrap();
        assert_eq!(response.stop_reason.as_deref(), Some("end_turn"));
        assert_eq!(
            response.usage,
            Usage {
                input_tokens: 30,
                output_tokens: 42,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 7,
            }
        );
    }

    #[test]
    fn tool_use_without_input_deltas_gets_empty_object() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut a = StreamAssembler::new();
        feed(
            &mut a,
            &tx,
            &[
                start(),
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "tool_use", "id": "toolu_1", "name": "list", "input": {}}}),
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "message_stop"}),
            ],
        )
        .unwrap();
        let expected = ContentBlock::ToolUse {
            id: "toolu_1".into(),
            name: "list".into(),
            input: json!({}),
        };
        assert_eq!(a.finish().unwrap().content, vec![expected]);
        assert_eq!(
            rx.try_recv().unwrap(),
            ModelEvent::ToolUse {
                id: "toolu_1".into(),
                name: "list".into(),
                input: json!({})
            }
        );
    }

    fn cut_tool_call(stop_reason: &str) -> Vec<Value> {
        vec![
            start(),
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "tool_use", "id": "toolu_1", "name": "list", "input": {}}}),
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "input_json_delta", "partial_json": "{\"pa"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": stop_reason},
                   "usage": {"output_tokens": 5}}),
            json!({"type": "message_stop"}),
        ]
    }

    #[test]
    fn broken_tool_input_json_is_invalid() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut a = StreamAssembler::new();
        let fault = feed(&mut a, &tx, &cut_tool_call("tool_use")).unwrap_err();
        assert!(matches!(fault, StreamFault::Invalid(m) if m.contains("toolu_1")));
    }

    #[test]
    fn a_tool_call_cut_by_max_tokens_is_kept_with_empty_input() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut a = StreamAssembler::new();
        let progress = feed(&mut a, &tx, &cut_tool_call("max_tokens")).unwrap();
        assert_eq!(progress, Progress::Done);
        let response = a.finish().unwrap();
        assert_eq!(response.stop_reason.as_deref(), Some("max_tokens"));
        assert_eq!(
            response.content,
            vec![ContentBlock::ToolUse {
                id: "toolu_1".into(),
                name: "list".into(),
                input: json!({}),
            }]
        );
    }

    #[test]
    fn partial_keeps_open_text_and_drops_open_tool_use_and_unsigned_thinking() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut a = StreamAssembler::new();
        feed(
            &mut a,
            &tx,
            &[
                start(),
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "thinking_delta", "thinking": "plan"}}),
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "signature_delta", "signature": "sig"}}),
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "content_block_start", "index": 1,
                       "content_block": {"type": "text", "text": ""}}),
                json!({"type": "content_block_delta", "index": 1,
                       "delta": {"type": "text_delta", "text": "Half a sen"}}),
                json!({"type": "content_block_start", "index": 2,
                       "content_block": {"type": "tool_use", "id": "toolu_1", "name": "x", "input": {}}}),
                json!({"type": "content_block_start", "index": 3,
                       "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            ],
        )
        .unwrap();
        assert_eq!(
            a.finish().unwrap_err(),
            vec![
                ContentBlock::Thinking {
                    thinking: "plan".into(),
                    signature: "sig".into()
                },
                ContentBlock::Text {
                    text: "Half a sen".into()
                },
            ]
        );
    }

    #[test]
    fn unknown_block_kinds_and_deltas_are_skipped() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut a = StreamAssembler::new();
        feed(
            &mut a,
            &tx,
            &[
                start(),
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}}),
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "content_block_start", "index": 1,
                       "content_block": {"type": "text", "text": ""}}),
                json!({"type": "content_block_delta", "index": 1,
                       "delta": {"type": "citations_delta", "citation": {}}}),
                json!({"type": "content_block_delta", "index": 1,
                       "delta": {"type": "text_delta", "text": "ok"}}),
                json!({"type": "content_block_stop", "index": 1}),
                json!({"type": "brand_new_event", "whatever": 1}),
                json!({"type": "message_stop"}),
            ],
        )
        .unwrap();
        assert_eq!(
            a.finish().unwrap().content,
            vec![ContentBlock::Text { text: "ok".into() }]
        );
    }

    #[test]
    fn non_json_data_of_unknown_event_is_ignored() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut a = StreamAssembler::new();
        assert_eq!(a.handle("ping", "", &tx).unwrap(), Progress::More);
        assert_eq!(
            a.handle("mystery", "not json", &tx).unwrap(),
            Progress::More
        );
        assert!(!a.started());
    }
}
