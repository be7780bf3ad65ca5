//! Turning a scripted reply into the real API's Message object and SSE events.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::cache::CacheUsage;
use crate::reply::Reply;
use crate::validate::{ApiError, Checked};

/// A content block of the answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Block {
    Text(String),
    /// `streamed` is the input JSON as streamed: all of `input`, or the
    /// part that fitted before the output limit (then `input` is `{}`).
    ToolUse {
        id: String,
        name: String,
        input: Value,
        streamed: String,
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
    pub usage: CacheUsage,
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

/// The thinking text of the block the fake adds when the request enables
/// thinking and the script gave none.
pub const GENERATED_THINKING: &str = "Let me think about how best to answer this.";

/// How much output the answer may have: `max_tokens`, or less when the
/// context window leaves less room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit {
    pub tokens: u64,
    /// The window, not `max_tokens`, is the limit.
    pub by_window: bool,
}

impl Limit {
    /// `room` is what the context window leaves, when that is less than
    /// `max_tokens`.
    pub fn of(max_tokens: u64, room: Option<u64>) -> Limit {
        match room {
            Some(room) if room < max_tokens => Limit {
                tokens: room,
                by_window: true,
            },
            _ => Limit {
                tokens: max_tokens,
                by_window: false,
            },
        }
    }

    fn stop_reason(self) -> &'static str {
        if self.by_window {
            "model_context_window_exceeded"
        } else {
            "max_tokens"
        }
    }
}

/// The answer's blocks as they are generated: each consumes the output
/// budget (four characters a token), and the first to overrun it is cut
/// where the budget ends, as the model stops mid-token-stream.
struct Output<'a> {
    limit: Limit,
    stop_sequences: &'a [String],
    left: usize,
    consumed: usize,
    blocks: Vec<Block>,
    stop: Option<(&'static str, Option<String>)>,
}

impl<'a> Output<'a> {
    fn new(limit: Limit, stop_sequences: &'a [String]) -> Output<'a> {
        Output {
            limit,
            stop_sequences,
            left: usize::try_from(limit.tokens.saturating_mul(4)).unwrap_or(usize::MAX),
            consumed: 0,
            blocks: Vec::new(),
            stop: None,
        }
    }

    fn spend(&mut self, chars: usize) {
        self.consumed += chars;
        self.left = self.left.saturating_sub(chars);
    }

    /// Thinking is never cut; it only uses up budget.
    fn thinking(&mut self, thinking: &str) {
        self.spend(thinking.chars().count());
        self.blocks.push(Block::Thinking {
            thinking: thinking.to_owned(),
            signature: thinking_signature(thinking),
        });
    }

    fn text(&mut self, text: &str) {
        if self.stop.is_some() {
            return;
        }
        let mut text = text.to_owned();
        if let Some((at, seq)) = self
            .stop_sequences
            .iter()
            .filter_map(|seq| text.find(seq.as_str()).map(|at| (at, seq)))
            .min_by_key(|(at, _)| *at)
        {
            text.truncate(at);
            self.stop = Some(("stop_sequence", Some(seq.clone())));
        }
        if let Some((cut, _)) = text.char_indices().nth(self.left) {
            text.truncate(cut);
            self.stop = Some((self.limit.stop_reason(), None));
        }
        self.spend(text.chars().count());
        if !text.is_empty() {
            self.blocks.push(Block::Text(text));
        }
    }

    /// Text the script says was cut by `max_tokens`, kept whole.
    fn cut_text(&mut self, text: &str) {
        self.spend(text.chars().count());
        if !text.is_empty() {
            self.blocks.push(Block::Text(text.to_owned()));
        }
        self.stop = Some(("max_tokens", None));
    }

    /// A tool call whose input does not fit streams the part that does and
    /// stops there. The complete message then carries `{}` as the input:
    /// what the real API returns for a cut call could not be confirmed, and
    /// an empty input is what a client must not run.
    fn tool(&mut self, name: &str, input: &Value) {
        if self.stop.is_some() {
            return;
        }
        let json = input.to_string();
        self.consumed += name.len();
        let (input, streamed) = match json.char_indices().nth(self.left) {
            None => (input.clone(), json),
            Some((cut, _)) => {
                self.stop = Some((self.limit.stop_reason(), None));
                let mut partial = json;
                partial.truncate(cut);
                (Value::Object(serde_json::Map::new()), partial)
            }
        };
        self.spend(streamed.chars().count());
        self.blocks.push(Block::ToolUse {
            id: random_id("toolu"),
            name: name.to_owned(),
            input,
            streamed,
        });
    }
}

/// Builds the answer for a base (unwrapped, non-error) reply: a thinking
/// block first when the request enables thinking, then the reply's blocks,
/// with `stop_sequences` and the output limit applied the way the model
/// would apply them.
pub(crate) fn answer(base: &Reply, request: &Checked, limit: Limit, usage: CacheUsage) -> Answer {
    let none: &[(String, Value)] = &[];
    let (thinking, text, calls) = match base {
        Reply::Text(text) | Reply::MaxTokens(text) => (None, Some(text.as_str()), none),
        Reply::Thinking { thinking, text } => (Some(thinking.as_str()), Some(text.as_str()), none),
        Reply::ToolUse { text, calls } => (None, text.as_deref(), calls.as_slice()),
        Reply::ThinkingToolUse {
            thinking,
            text,
            calls,
        } => (Some(thinking.as_str()), text.as_deref(), calls.as_slice()),
        // Wrappers and errors are peeled off before an answer is built.
        Reply::Error { .. }
        | Reply::Slow { .. }
        | Reply::Cut { .. }
        | Reply::StreamError { .. }
        | Reply::Unless { .. } => (None, None, none),
    };
    let mut out = Output::new(limit, &request.stop_sequences);
    if let Some(thinking) = thinking.or(request.thinking.then_some(GENERATED_THINKING)) {
        out.thinking(thinking);
    }
    match (base, text) {
        (Reply::MaxTokens(_), Some(text)) => out.cut_text(text),
        (_, Some(text)) if !text.is_empty() => out.text(text),
        _ => {}
    }
    for (name, input) in calls {
        out.tool(name, input);
    }
    let (stop_reason, stop_sequence) = match out.stop.take() {
        Some(stop) => stop,
        None if out
            .blocks
            .iter()
            .any(|b| matches!(b, Block::ToolUse { .. })) =>
        {
            ("tool_use", None)
        }
        None => ("end_turn", None),
    };
    let output_tokens =
        if stop_reason == limit.stop_reason() && !matches!(base, Reply::MaxTokens(_)) {
            limit.tokens.max(1)
        } else {
            estimate_tokens(out.consumed)
        };
    Answer {
        id: random_id("msg"),
        model: request.model.clone(),
        blocks: out.blocks,
        stop_reason,
        stop_sequence,
        usage,
        output_tokens,
    }
}

// The wire shapes below are structs rather than `json!` values because
// serde_json sorts map keys, and the real API puts `type` first: clients that
// sniff the raw text (`data: {"type":"message_stop"}`) must see the same bytes.

#[derive(Serialize)]
struct CacheCreation {
    ephemeral_5m_input_tokens: u64,
    ephemeral_1h_input_tokens: u64,
}

/// `usage` of the Message object and of `message_start`.
#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    cache_creation: CacheCreation,
    output_tokens: u64,
}

impl Usage {
    fn new(usage: &CacheUsage, output_tokens: u64) -> Usage {
        Usage {
            input_tokens: usage.input_tokens,
            cache_creation_input_tokens: usage.cache_creation_input_tokens,
            cache_read_input_tokens: usage.cache_read_input_tokens,
            cache_creation: CacheCreation {
                ephemeral_5m_input_tokens: usage.ephemeral_5m_input_tokens,
                ephemeral_1h_input_tokens: usage.ephemeral_1h_input_tokens,
            },
            output_tokens,
        }
    }
}

/// `usage` of `message_delta`: cumulative counts, the input side repeated
/// from `message_start` as the current API does.
#[derive(Serialize)]
struct DeltaUsage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
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
            Block::ToolUse {
                id, name, input, ..
            } => WireBlock::ToolUse { id, name, input },
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
        usage: DeltaUsage,
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
        usage: Usage::new(&answer.usage, answer.output_tokens),
    })
}

/// The final `usage` of an answer, as the Message object carries it.
pub(crate) fn usage_value(answer: &Answer) -> Value {
    serde_json::to_value(Usage::new(&answer.usage, answer.output_tokens)).unwrap_or(Value::Null)
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
                    usage: Usage::new(&answer.usage, 1),
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
            Block::ToolUse { streamed, .. } => {
                events.push(delta(WireDelta::InputJson { partial_json: "" }));
                for chunk in json_chunks(streamed) {
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
            usage: DeltaUsage {
                input_tokens: answer.usage.input_tokens,
                cache_creation_input_tokens: answer.usage.cache_creation_input_tokens,
                cache_read_input_tokens: answer.usage.cache_read_input_tokens,
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
    use serde_json::json;

    fn request() -> Checked {
        Checked {
            model: "m".into(),
            max_tokens: 100,
            stream: true,
            stop_sequences: vec!["STOP".into()],
            thinking: false,
            prompt: crate::cache::Prompt::default(),
            last_user_text: "hi".into(),
        }
    }

    fn answer_to(reply: &Reply, request: &Checked) -> Answer {
        answer(
            reply,
            request,
            Limit::of(request.max_tokens, None),
            CacheUsage::default(),
        )
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
        let a = answer_to(&Reply::text("say STOP now"), &request());
        assert_eq!(a.blocks, vec![Block::Text("say ".into())]);
        assert_eq!(a.stop_reason, "stop_sequence");
        assert_eq!(a.stop_sequence.as_deref(), Some("STOP"));

        let mut small = request();
        small.max_tokens = 1;
        let a = answer_to(&Reply::text("abcdefgh"), &small);
        assert_eq!(a.blocks, vec![Block::Text("abcd".into())]);
        assert_eq!(a.stop_reason, "max_tokens");
        assert_eq!(a.output_tokens, 1);
    }

    #[test]
    fn max_tokens_cuts_a_tool_call_and_drops_the_rest() {
        let mut small = request();
        small.max_tokens = 5;
        let reply = Reply::ToolUse {
            text: Some("ok ".into()),
            calls: vec![
                (
                    "Bash".into(),
                    json!({"command": "echo a long command line"}),
                ),
                ("Read".into(), json!({})),
            ],
        };
        let a = answer_to(&reply, &small);
        assert_eq!(a.stop_reason, "max_tokens");
        assert_eq!(a.blocks.len(), 2);
        let Block::ToolUse {
            input, streamed, ..
        } = &a.blocks[1]
        else {
            panic!("a tool_use block: {:?}", a.blocks);
        };
        assert_eq!(streamed, r#"{"command":"echo "#);
        assert_eq!(input, &json!({}));
        assert!(serde_json::from_str::<Value>(streamed).is_err());
        assert_eq!(a.output_tokens, 5);
    }

    #[test]
    fn the_window_limits_output_with_its_own_stop_reason() {
        let limit = Limit::of(100, Some(1));
        let a = answer(
            &Reply::text("abcdefgh"),
            &request(),
            limit,
            CacheUsage::default(),
        );
        assert_eq!(a.blocks, vec![Block::Text("abcd".into())]);
        assert_eq!(a.stop_reason, "model_context_window_exceeded");
    }

    #[test]
    fn thinking_requests_get_a_generated_thinking_block() {
        let mut thinking = request();
        thinking.thinking = true;
        let a = answer_to(&Reply::text("hi"), &thinking);
        assert_eq!(
            a.blocks[0],
            Block::Thinking {
                thinking: GENERATED_THINKING.into(),
                signature: thinking_signature(GENERATED_THINKING),
            }
        );
        assert_eq!(a.blocks[1], Block::Text("hi".into()));
        let a = answer_to(&Reply::text("hi"), &request());
        assert_eq!(a.blocks, vec![Block::Text("hi".into())]);
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
        let a = answer_to(&Reply::text("hi"), &request());
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
