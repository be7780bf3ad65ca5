//! Turning a scripted reply into the real API's Message object and SSE events.

use std::time::Duration;

use serde_json::{Value, json};

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
    Error {
        after: usize,
        error: ApiError,
    },
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
        Reply::Error { .. } | Reply::Slow { .. } | Reply::Cut { .. } | Reply::StreamError { .. } => {
        }
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

fn usage(input_tokens: u64, output_tokens: u64) -> Value {
    json!({
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    })
}

fn block_json(block: &Block) -> Value {
    match block {
        Block::Text(text) => json!({"type": "text", "text": text}),
        Block::ToolUse { id, name, input } => {
            json!({"type": "tool_use", "id": id, "name": name, "input": input})
        }
        Block::Thinking {
            thinking,
            signature,
        } => json!({"type": "thinking", "thinking": thinking, "signature": signature}),
    }
}

/// The non-streaming Message object.
pub(crate) fn message_json(answer: &Answer) -> Value {
    json!({
        "id": answer.id,
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": answer.blocks.iter().map(block_json).collect::<Vec<_>>(),
        "stop_reason": answer.stop_reason,
        "stop_sequence": answer.stop_sequence,
        "usage": usage(answer.input_tokens, answer.output_tokens),
    })
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub name: &'static str,
    pub data: Value,
}

impl Event {
    fn new(name: &'static str, data: Value) -> Event {
        Event { name, data }
    }

    pub fn error(error: &ApiError) -> Event {
        Event::new("error", error.body())
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
            json!({
                "type": "message_start",
                "message": {
                    "id": answer.id,
                    "type": "message",
                    "role": "assistant",
                    "model": answer.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": usage(answer.input_tokens, 1),
                },
            }),
        ),
        Event::new("ping", json!({"type": "ping"})),
    ];
    for (index, block) in answer.blocks.iter().enumerate() {
        let start = match block {
            Block::Text(_) => json!({"type": "text", "text": ""}),
            Block::ToolUse { id, name, .. } => {
                json!({"type": "tool_use", "id": id, "name": name, "input": {}})
            }
            Block::Thinking { .. } => json!({"type": "thinking", "thinking": "", "signature": ""}),
        };
        events.push(Event::new(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        let delta = |delta: Value| {
            Event::new(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": delta}),
            )
        };
        match block {
            Block::Text(text) => {
                for chunk in word_chunks(text) {
                    events.push(delta(json!({"type": "text_delta", "text": chunk})));
                }
            }
            Block::ToolUse { input, .. } => {
                events.push(delta(json!({"type": "input_json_delta", "partial_json": ""})));
                for chunk in json_chunks(&input.to_string()) {
                    events.push(delta(
                        json!({"type": "input_json_delta", "partial_json": chunk}),
                    ));
                }
            }
            Block::Thinking {
                thinking,
                signature,
            } => {
                for chunk in word_chunks(thinking) {
                    events.push(delta(json!({"type": "thinking_delta", "thinking": chunk})));
                }
                events.push(delta(
                    json!({"type": "signature_delta", "signature": signature}),
                ));
            }
        }
        events.push(Event::new(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push(Event::new(
        "message_delta",
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": answer.stop_reason, "stop_sequence": answer.stop_sequence},
            "usage": {"output_tokens": answer.output_tokens},
        }),
    ));
    events.push(Event::new("message_stop", json!({"type": "message_stop"})));
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
}
