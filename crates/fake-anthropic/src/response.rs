//! Turning a scripted reply into the real API's Message object and SSE events.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::reply::Reply;
use crate::validate::{ApiError, Checked};

/// A content block of the answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Block {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    Thinking {
        thinking: String,
        signature: String,
    },
}

/// The model's answer, independent of how it is delivered.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub id: String,
    pub model: String,
    pub blocks: Vec<Block>,
    pub stop_reason: &'static str,
    pub stop_sequence: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// How a stream of events ends.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ending {
    Complete,
    Cut(usize),
    Error { after: usize, error: ApiError },
}

/// A scripted reply with its wrappers (`Slow`, `Cut`, `StreamError`) peeled
/// off into delivery settings.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub base: Reply,
    pub delay: Duration,
    pub ending: Ending,
}

impl Plan {
    /// With nested wrappers of one kind, the outermost one wins.
    pub fn of(mut reply: Reply) -> Plan {
        let mut delay = None;
        let mut ending = None;
        loop {
            reply = match reply {
                Reply::Slow { reply, delay_ms } => {
                    delay.get_or_insert(Duration::from_millis(delay_ms));
                    *reply
                }
                Reply::Cut {
                    reply,
                    after_events,
                } => {
                    ending.get_or_insert(Ending::Cut(after_events));
                    *reply
                }
                Reply::StreamError {
                    reply,
                    after_events,
                    error_type,
                    message,
                } => {
                    ending.get_or_insert(Ending::Error {
                        after: after_events,
                        error: ApiError {
                            status: status_for(&error_type),
                            error_type,
                            message,
                        },
                    });
                    *reply
                }
                base => {
                    return Plan {
                        base,
                        delay: delay.unwrap_or_default(),
                        ending: ending.unwrap_or(Ending::Complete),
                    };
                }
            }
        }
    }
}

/// The HTTP status the real API uses for each error type.
pub(crate) fn status_for(error_type: &str) -> u16 {
    match error_type {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// Roughly four characters a token, never zero, so usage is plausible and
/// the same for the same text.
pub(crate) fn estimate_tokens(chars: usize) -> u64 {
    u64::try_from(chars.div_ceil(4)).unwrap_or(u64::MAX).max(1)
}

/// The signature the fake gives a thinking block. Clients must send thinking
/// blocks back unchanged, and the fake checks that by recomputing this; use
/// it to build a valid thinking block by hand.
pub fn thinking_signature(thinking: &str) -> String {
    let mut bytes = Vec::with_capacity(48);
    for seed in 0u64..6 {
        // FNV-1a, varied by seed: stable across runs and Rust versions,
        // unlike std's hasher.
        let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for byte in thinking.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        bytes.extend_from_slice(&hash.to_be_bytes());
    }
    base64(&bytes)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (k, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if k <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An id shaped like the real ones (`msg_01...`, `toolu_01...`).
pub(crate) fn random_id(prefix: &str) -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_01{}", hex.get(..22).unwrap_or(&hex))
}

/// The default answer when nothing is scripted, so the binary is useful by hand.
pub(crate) fn echo(request: &Checked) -> Reply {
    let text = request.last_user_text.trim();
    Reply::Text(if text.is_empty() {
        "Echo: (no text)".into()
    } else {
        format!("Echo: {text}")
    })
}

/// Builds the answer for a base (unwrapped, non-error) reply, applying the
/// request's `max_tokens` and `stop_sequences` to plain text the way the
/// model would.
pub(crate) fn answer(base: &Reply, request: &Checked) -> Answer {
    let mut stop_reason = "end_turn";
    let mut stop_sequence = None;
    let mut blocks = Vec::new();
    let mut finish_text = |text: &str, blocks: &mut Vec<Block>| {
        let mut text = text.to_owned();
        if let Some((at, seq)) = request
            .stop_sequences
            .iter()
            .filter_map(|seq| text.find(seq.as_str()).map(|at| (at, seq)))
            .min_by_key(|(at, _)| *at)
        {
            text.truncate(at);
            stop_reason = "stop_sequence";
            stop_sequence = Some(seq.clone());
        }
        let limit = usize::try_from(request.max_tokens.saturating_mul(4)).unwrap_or(usize::MAX);
        if let Some((cut, _)) = text.char_indices().nth(limit) {
            text.truncate(cut);
            stop_reason = "max_tokens";
            stop_sequence = None;
        }
        if !text.is_empty() {
            blocks.push(Block::Text(text));
        }
    };
    match base {
        Reply::Text(text) => finish_text(text, &mut blocks),
        Reply::Thinking { thinking, text } => {
            blocks.push(Block::Thinking {
                thinking: thinking.clone(),
                signature: thinking_signature(thinking),
            });
            finish_text(text, &mut blocks);
        }
        Reply::MaxTokens(text) => {
            if !text.is_empty() {
                blocks.push(Block::Text(text.clone()));
            }
            stop_reason = "max_tokens";
        }
        Reply::ToolUse { text, calls } => {
            if let Some(text) = text.as_ref().filter(|t| !t.is_empty()) {
                blocks.push(Block::Text(text.clone()));
            }
            for (name, input) in calls {
                blocks.push(Block::ToolUse {
                    id: random_id("toolu"),
                    name: name.clone(),
                    input: input.clone(),
                });
            }
            if !calls.is_empty() {
                stop_reason = "tool_use";
            }
        }
        // Wrappers and errors are peeled off before an answer is built.
        Reply::Error { .. }
        | Reply::Slow { .. }
        | Reply::Cut { .. }
        | Reply::StreamError { .. } => {}
    }
    let output_chars = blocks
        .iter()
        .map(|b| match b {
            Block::Text(t) => t.chars().count(),
            Block::ToolUse { name, input, .. } => name.len() + input.to_string().chars().count(),
            Block::Thinking { thinking, .. } => thinking.chars().count(),
        })
        .sum();
    Answer {
        id: random_id("msg"),
        model: request.model.clone(),
        blocks,
        stop_reason,
        stop_sequence,
        input_tokens: request.input_tokens,
        output_tokens: estimate_tokens(output_chars),
    }
}

// The wire shapes below are structs rather than `json!` values because
// serde_json sorts map keys, and the real API puts `type` first: clients that
// sniff the raw text (`data: {"type":"message_stop"}`) must see the same bytes.

#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
}

impl Usage {
    fn new(input_tokens: u64, output_tokens: u64) -> Usage {
        Usage {
            input_tokens,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
            output_tokens,
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a Value,
    },
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
}

impl<'a> From<&'a Block> for WireBlock<'a> {
    fn from(block: &'a Block) -> WireBlock<'a> {
        match block {
            Block::Text(text) => WireBlock::Text { text },
            Block::ToolUse { id, name, input } => WireBlock::ToolUse { id, name, input },
            Block::Thinking {
                thinking,
                signature,
            } => WireBlock::Thinking {
                thinking,
                signature,
            },
        }
    }
}

#[derive(Serialize)]
struct WireMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<WireBlock<'a>>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'a str>,
    usage: Usage,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum WireDelta<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "signature_delta")]
    Signature { signature: &'a str },
}

#[derive(Serialize)]
struct StopDelta<'a> {
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
}

#[derive(Serialize)]
struct OutputUsage {
    output_tokens: u64,
}

#[derive(Serialize)]
struct WireError<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent<'a> {
    MessageStart {
        message: WireMessage<'a>,
    },
    Ping,
    ContentBlockStart {
        index: usize,
        content_block: WireBlock<'a>,
    },
    ContentBlockDelta {
        index: usize,
        delta: WireDelta<'a>,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: StopDelta<'a>,
        usage: OutputUsage,
    },
    MessageStop,
    Error {
        error: WireError<'a>,
    },
}

fn to_json(value: &impl Serialize) -> String {
    // Plain structs of strings and numbers cannot fail to serialize.
    serde_json::to_string(value).unwrap_or_else(|_| String::from("{}"))
}

/// The real error body, `{"type":"error","error":{"type":..,"message":..}}`.
pub(crate) fn error_json(error: &ApiError) -> String {
    to_json(&WireEvent::Error {
        error: WireError {
            kind: &error.error_type,
            message: &error.message,
        },
    })
}

/// The non-streaming Message object.
pub(crate) fn message_json(answer: &Answer) -> String {
    to_json(&WireMessage {
        id: &answer.id,
        kind: "message",
        role: "assistant",
        model: &answer.model,
        content: answer.blocks.iter().map(WireBlock::from).collect(),
        stop_reason: Some(answer.stop_reason),
        stop_sequence: answer.stop_sequence.as_deref(),
        usage: Usage::new(answer.input_tokens, answer.output_tokens),
    })
}

/// One server-sent event, its data already serialized.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub name: &'static str,
    pub data: String,
}

impl Event {
    fn new(name: &'static str, data: &WireEvent<'_>) -> Event {
        Event {
            name,
            data: to_json(data),
        }
    }

    pub fn error(error: &ApiError) -> Event {
        Event {
            name: "error",
            data: error_json(error),
        }
    }

    pub fn to_wire(&self) -> String {
        format!("event: {}\ndata: {}\n\n", self.name, self.data)
    }
}

/// Splits text after each run of whitespace, so deltas are words with their
/// trailing spaces and concatenate back to the original.
fn word_chunks(text: &str) -> Vec<&str> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut in_space = false;
    for (at, c) in text.char_indices() {
        if c.is_whitespace() {
            in_space = true;
        } else if in_space {
            chunks.push(&text[start..at]);
            start = at;
            in_space = false;
        }
    }
    if start < text.len() {
        chunks.push(&text[start..]);
    }
    chunks
}

/// Splits serialized JSON into several pieces, as the real API streams tool
/// input; clients must buffer until `content_block_stop`.
fn json_chunks(json: &str) -> Vec<String> {
    let chars: Vec<char> = json.chars().collect();
    let size = (chars.len() / 4).clamp(1, 256);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// The full event sequence of a successful stream.
pub(crate) fn events(answer: &Answer) -> Vec<Event> {
    let mut events = vec![
        Event::new(
            "message_start",
            &WireEvent::MessageStart {
                message: WireMessage {
                    id: &answer.id,
                    kind: "message",
                    role: "assistant",
                    model: &answer.model,
                    content: Vec::new(),
                    stop_reason: None,
                    stop_sequence: None,
                    usage: Usage::new(answer.input_tokens, 1),
                },
            },
        ),
        Event::new("ping", &WireEvent::Ping),
    ];
    let empty_input = Value::Object(serde_json::Map::new());
    for (index, block) in answer.blocks.iter().enumerate() {
        let content_block = match block {
            Block::Text(_) => WireBlock::Text { text: "" },
            Block::ToolUse { id, name, .. } => WireBlock::ToolUse {
                id,
                name,
                input: &empty_input,
            },
            Block::Thinking { .. } => WireBlock::Thinking {
                thinking: "",
                signature: "",
            },
        };
        events.push(Event::new(
            "content_block_start",
            &WireEvent::ContentBlockStart {
                index,
                content_block,
            },
        ));
        let delta = |delta: WireDelta<'_>| {
            Event::new(
                "content_block_delta",
                &WireEvent::ContentBlockDelta { index, delta },
            )
        };
        match block {
            Block::Text(text) => {
                for chunk in word_chunks(text) {
                    events.push(delta(WireDelta::Text { text: chunk }));
                }
            }
            Block::ToolUse { input, .. } => {
                events.push(delta(WireDelta::InputJson { partial_json: "" }));
                for chunk in json_chunks(&input.to_string()) {
                    events.push(delta(WireDelta::InputJson {
                        partial_json: &chunk,
                    }));
                }
            }
            Block::Thinking {
                thinking,
                signature,
            } => {
                for chunk in word_chunks(thinking) {
                    events.push(delta(WireDelta::Thinking { thinking: chunk }));
                }
                events.push(delta(WireDelta::Signature { signature }));
            }
        }
        events.push(Event::new(
            "content_block_stop",
            &WireEvent::ContentBlockStop { index },
        ));
    }
    events.push(Event::new(
        "message_delta",
        &WireEvent::MessageDelta {
            delta: StopDelta {
                stop_reason: answer.stop_reason,
                stop_sequence: answer.stop_sequence.as_deref(),
            },
            usage: OutputUsage {
                output_tokens: answer.output_tokens,
            },
        },
    ));
    events.push(Event::new("message_stop", &WireEvent::MessageStop));
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Checked {
        Checked {
            model: "m".into(),
            max_tokens: 100,
            stream: true,
            stop_sequences: vec!["STOP".into()],
            input_tokens: 3,
            last_user_text: "hi".into(),
        }
    }

    #[test]
    fn word_chunks_concatenate_back() {
        for text in ["", "one", "one two  three\n", "  lead", "héllo wörld"] {
            assert_eq!(word_chunks(text).concat(), text);
        }
        assert_eq!(word_chunks("a b c"), vec!["a ", "b ", "c"]);
    }

    #[test]
    fn json_chunks_concatenate_back() {
        let json = r#"{"command":"ls -la ~/ü"}"#;
        let chunks = json_chunks(json);
        assert!(chunks.len() > 2);
        assert_eq!(chunks.concat(), json);
    }

    #[test]
    fn base64_matches_known_values() {
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_ne!(thinking_signature("a"), thinking_signature("b"));
    }

    #[test]
    fn stop_sequences_and_max_tokens_cut_text() {
        let a = answer(&Reply::text("say STOP now"), &request());
        assert_eq!(a.blocks, vec![Block::Text("say ".into())]);
        assert_eq!(a.stop_reason, "stop_sequence");
        assert_eq!(a.stop_sequence.as_deref(), Some("STOP"));

        let mut small = request();
        small.max_tokens = 1;
        let a = answer(&Reply::text("abcdefgh"), &small);
        assert_eq!(a.blocks, vec![Block::Text("abcd".into())]);
        assert_eq!(a.stop_reason, "max_tokens");
    }

    #[test]
    fn wrappers_peel_outermost_first() {
        let plan = Plan::of(Reply::text("x").cut_after(3).slow(10).cut_after(7));
        assert_eq!(plan.base, Reply::text("x"));
        assert_eq!(plan.delay, Duration::from_millis(10));
        assert_eq!(plan.ending, Ending::Cut(7));
    }

    #[test]
    fn wire_json_keeps_the_real_key_order() {
        let a = answer(&Reply::text("hi"), &request());
        assert!(message_json(&a).starts_with(r#"{"id":"msg_01"#));
        let events = events(&a);
        assert_eq!(
            events[1].to_wire(),
            "event: ping\ndata: {\"type\":\"ping\"}\n\n"
        );
        assert!(events[2].data.starts_with(
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text""#
        ));
        assert_eq!(
            events.last().map(|e| e.data.as_str()),
            Some(r#"{"type":"message_stop"}"#)
        );
        let error = ApiError::invalid("nope");
        assert_eq!(
            error_json(&error),
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"nope"}}"#
        );
    }
}
