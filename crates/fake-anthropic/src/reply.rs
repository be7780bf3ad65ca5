//! Scripted replies: what the fake answers to the next `/v1/messages` call.
//!
//! The same type is pushed from Rust and posted as JSON to `/_fake/replies`,
//! so tests in any language script the fake with one vocabulary.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// One scripted answer, consumed by one `/v1/messages` call (FIFO).
///
/// The JSON form is tagged by `kind` in snake_case, for example
/// `{"kind":"text","text":"hi"}` or
/// `{"kind":"tool_use","calls":[{"name":"Bash","input":{"command":"pwd"}}]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "ReplyRepr", into = "ReplyRepr")]
pub enum Reply {
    /// `end_turn` with one text block.
    Text(String),
    /// `stop_reason: tool_use`: an optional text block, then one `tool_use`
    /// block per `(name, input)` call.
    ToolUse {
        text: Option<String>,
        calls: Vec<(String, Value)>,
    },
    /// A signed thinking block, then a text block. The block is sent even
    /// when the request did not enable thinking, because the script asks
    /// for it.
    Thinking { thinking: String, text: String },
    /// A signed thinking block, then what `ToolUse` answers. The JSON form
    /// is `tool_use` with a `thinking` field.
    ThinkingToolUse {
        thinking: String,
        text: Option<String>,
        calls: Vec<(String, Value)>,
    },
    /// An HTTP error with the real error body, answered to the next `times`
    /// calls (at least one); `retry_after` becomes the `retry-after` header.
    Error {
        status: u16,
        error_type: String,
        message: String,
        times: usize,
        retry_after: Option<String>,
    },
    /// Streamed: `delay_ms` between SSE events. Not streamed: `delay_ms`
    /// before the answer.
    Slow { reply: Box<Reply>, delay_ms: u64 },
    /// Streamed: `after_events` SSE events, then the connection is dropped
    /// without `message_stop`. Not streamed: the headers, then the dropped
    /// connection.
    Cut {
        reply: Box<Reply>,
        after_events: usize,
    },
    /// Streamed: status 200 and `after_events` SSE events, then an
    /// `event: error` and the end of the stream. Not streamed: the error as
    /// an HTTP error answer.
    StreamError {
        reply: Box<Reply>,
        after_events: usize,
        error_type: String,
        message: String,
    },
    /// `stop_reason: max_tokens` with one text block.
    MaxTokens(String),
    /// `reply`, except that a request whose last user message contains
    /// `contains` passes it over (and takes the next reply, or the echo).
    /// Lets a script answer an agent's own side calls (summaries) apart
    /// from its turn.
    Unless { contains: String, reply: Box<Reply> },
}

impl Reply {
    /// `Reply::Text`.
    pub fn text(text: impl Into<String>) -> Reply {
        Reply::Text(text.into())
    }

    /// A `Reply::ToolUse` with a single call and no text.
    pub fn tool_use(name: impl Into<String>, input: Value) -> Reply {
        Reply::ToolUse {
            text: None,
            calls: vec![(name.into(), input)],
        }
    }

    /// A `Reply::Error` answered once, without `retry-after`.
    pub fn error(status: u16, error_type: impl Into<String>, message: impl Into<String>) -> Reply {
        Reply::Error {
            status,
            error_type: error_type.into(),
            message: message.into(),
            times: 1,
            retry_after: None,
        }
    }

    /// The 529 `overloaded_error` the real API answers under load, `times` times.
    pub fn overloaded(times: usize) -> Reply {
        Reply::Error {
            status: 529,
            error_type: "overloaded_error".into(),
            message: "Overloaded".into(),
            times,
            retry_after: None,
        }
    }

    /// The same reply preceded by a signed thinking block with this text:
    /// `Text` becomes `Thinking`, `ToolUse` becomes `ThinkingToolUse`, an
    /// existing thinking text is replaced, and wrappers pass it to the
    /// reply inside. Other replies are returned unchanged.
    pub fn with_thinking(self, thinking: impl Into<String>) -> Reply {
        let thinking = thinking.into();
        match self {
            Reply::Text(text) | Reply::Thinking { text, .. } => Reply::Thinking { thinking, text },
            Reply::ToolUse { text, calls } | Reply::ThinkingToolUse { text, calls, .. } => {
                Reply::ThinkingToolUse {
                    thinking,
                    text,
                    calls,
                }
            }
            Reply::Slow { reply, delay_ms } => Reply::Slow {
                reply: Box::new(reply.with_thinking(thinking)),
                delay_ms,
            },
            Reply::Cut {
                reply,
                after_events,
            } => Reply::Cut {
                reply: Box::new(reply.with_thinking(thinking)),
                after_events,
            },
            Reply::StreamError {
                reply,
                after_events,
                error_type,
                message,
            } => Reply::StreamError {
                reply: Box::new(reply.with_thinking(thinking)),
                after_events,
                error_type,
                message,
            },
            Reply::Unless { contains, reply } => Reply::Unless {
                contains,
                reply: Box::new(reply.with_thinking(thinking)),
            },
            other @ (Reply::Error { .. } | Reply::MaxTokens(_)) => other,
        }
    }

    /// Wraps this reply in `Reply::Unless`.
    pub fn unless(self, contains: impl Into<String>) -> Reply {
        Reply::Unless {
            contains: contains.into(),
            reply: Box::new(self),
        }
    }

    /// Whether a request whose last user text is `text` passes this over.
    pub(crate) fn passed_over_by(&self, text: &str) -> bool {
        matches!(self, Reply::Unless { contains, .. } if text.contains(contains.as_str()))
    }

    /// Wraps this reply in `Reply::Slow`.
    pub fn slow(self, delay_ms: u64) -> Reply {
        Reply::Slow {
            reply: Box::new(self),
            delay_ms,
        }
    }

    /// Wraps this reply in `Reply::Cut`.
    pub fn cut_after(self, after_events: usize) -> Reply {
        Reply::Cut {
            reply: Box::new(self),
            after_events,
        }
    }

    /// Wraps this reply in a `Reply::StreamError` carrying `overloaded_error`.
    pub fn stream_error_after(self, after_events: usize) -> Reply {
        Reply::StreamError {
            reply: Box::new(self),
            after_events,
            error_type: "overloaded_error".into(),
            message: "Overloaded".into(),
        }
    }
}

/// The JSON shape of [`Reply`]. Kept apart because serde cannot tag a
/// newtype variant holding a bare string (`Text(String)`) internally.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum ReplyRepr {
    Text {
        text: String,
    },
    ToolUse {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thinking: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        calls: Vec<CallRepr>,
    },
    Thinking {
        thinking: String,
        text: String,
    },
    Error {
        status: u16,
        error_type: String,
        message: String,
        #[serde(default = "one")]
        times: usize,
        #[serde(
            default,
            deserialize_with = "string_or_number",
            skip_serializing_if = "Option::is_none"
        )]
        retry_after: Option<String>,
    },
    Slow {
        reply: Box<Reply>,
        delay_ms: u64,
    },
    Cut {
        reply: Box<Reply>,
        after_events: usize,
    },
    StreamError {
        reply: Box<Reply>,
        after_events: usize,
        #[serde(default = "overloaded_type")]
        error_type: String,
        #[serde(default = "overloaded_message")]
        message: String,
    },
    MaxTokens {
        text: String,
    },
    Unless {
        contains: String,
        reply: Box<Reply>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallRepr {
    name: String,
    #[serde(default = "empty_object")]
    input: Value,
}

fn one() -> usize {
    1
}

fn overloaded_type() -> String {
    "overloaded_error".into()
}

fn overloaded_message() -> String {
    "Overloaded".into()
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// `retry-after` is a header string, but `"retry_after": 2` is the natural
/// thing to write in a JSON script.
fn string_or_number<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(de)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(serde::de::Error::custom(format!(
                "retry_after: expected a string or a number, got {other}"
            )));
        }
    })
}

fn calls_repr(calls: Vec<(String, Value)>) -> Vec<CallRepr> {
    calls
        .into_iter()
        .map(|(name, input)| CallRepr { name, input })
        .collect()
}

impl From<ReplyRepr> for Reply {
    fn from(repr: ReplyRepr) -> Reply {
        match repr {
            ReplyRepr::Text { text } => Reply::Text(text),
            ReplyRepr::ToolUse {
                thinking,
                text,
                calls,
            } => {
                let calls = calls.into_iter().map(|c| (c.name, c.input)).collect();
                match thinking {
                    Some(thinking) => Reply::ThinkingToolUse {
                        thinking,
                        text,
                        calls,
                    },
                    None => Reply::ToolUse { text, calls },
                }
            }
            ReplyRepr::Thinking { thinking, text } => Reply::Thinking { thinking, text },
            ReplyRepr::Error {
                status,
                error_type,
                message,
                times,
                retry_after,
            } => Reply::Error {
                status,
                error_type,
                message,
                times,
                retry_after,
            },
            ReplyRepr::Slow { reply, delay_ms } => Reply::Slow { reply, delay_ms },
            ReplyRepr::Cut {
                reply,
                after_events,
            } => Reply::Cut {
                reply,
                after_events,
            },
            ReplyRepr::StreamError {
                reply,
                after_events,
                error_type,
                message,
            } => Reply::StreamError {
                reply,
                after_events,
                error_type,
                message,
            },
            ReplyRepr::MaxTokens { text } => Reply::MaxTokens(text),
            ReplyRepr::Unless { contains, reply } => Reply::Unless { contains, reply },
        }
    }
}

impl From<Reply> for ReplyRepr {
    fn from(reply: Reply) -> ReplyRepr {
        match reply {
            Reply::Text(text) => ReplyRepr::Text { text },
            Reply::ToolUse { text, calls } => ReplyRepr::ToolUse {
                thinking: None,
                text,
                calls: calls_repr(calls),
            },
            Reply::ThinkingToolUse {
                thinking,
                text,
                calls,
            } => ReplyRepr::ToolUse {
                thinking: Some(thinking),
                text,
                calls: calls_repr(calls),
            },
            Reply::Thinking { thinking, text } => ReplyRepr::Thinking { thinking, text },
            Reply::Error {
                status,
                error_type,
                message,
                times,
                retry_after,
            } => ReplyRepr::Error {
                status,
                error_type,
                message,
                times,
                retry_after,
            },
            Reply::Slow { reply, delay_ms } => ReplyRepr::Slow { reply, delay_ms },
            Reply::Cut {
                reply,
                after_events,
            } => ReplyRepr::Cut {
                reply,
                after_events,
            },
            Reply::StreamError {
                reply,
                after_events,
                error_type,
                message,
            } => ReplyRepr::StreamError {
                reply,
                after_events,
                error_type,
                message,
            },
            Reply::MaxTokens(text) => ReplyRepr::MaxTokens { text },
            Reply::Unless { contains, reply } => ReplyRepr::Unless { contains, reply },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Reply {
        serde_json::from_value(v).expect("valid reply JSON")
    }

    #[test]
    fn json_forms_map_to_the_rust_variants() {
        assert_eq!(
            parse(json!({"kind":"text","text":"hi"})),
            Reply::Text("hi".into())
        );
        assert_eq!(
            parse(json!({"kind":"tool_use","calls":[{"name":"Bash","input":{"command":"pwd"}}]})),
            Reply::tool_use("Bash", json!({"command":"pwd"}))
        );
        assert_eq!(
            parse(
                json!({"kind":"error","status":529,"error_type":"overloaded_error","message":"Overloaded","times":2})
            ),
            Reply::overloaded(2)
        );
        assert_eq!(
            parse(
                json!({"kind":"error","status":429,"error_type":"rate_limit_error","message":"slow down","retry_after":3})
            ),
            Reply::Error {
                status: 429,
                error_type: "rate_limit_error".into(),
                message: "slow down".into(),
                times: 1,
                retry_after: Some("3".into()),
            }
        );
        assert_eq!(
            parse(json!({"kind":"slow","delay_ms":200,"reply":{"kind":"text","text":"a b"}})),
            Reply::text("a b").slow(200)
        );
        assert_eq!(
            parse(json!({"kind":"cut","after_events":5,"reply":{"kind":"max_tokens","text":"x"}})),
            Reply::MaxTokens("x".into()).cut_after(5)
        );
        assert_eq!(
            parse(
                json!({"kind":"stream_error","after_events":3,"reply":{"kind":"thinking","thinking":"t","text":"x"}})
            ),
            Reply::Thinking {
                thinking: "t".into(),
                text: "x".into()
            }
            .stream_error_after(3)
        );
    }

    #[test]
    fn serializing_round_trips() {
        let reply = Reply::ToolUse {
            text: Some("let me look".into()),
            calls: vec![("Read".into(), json!({"path":"a"}))],
        }
        .slow(5)
        .cut_after(2);
        let value = serde_json::to_value(&reply).expect("serializable");
        assert_eq!(value["kind"], "cut");
        assert_eq!(value["reply"]["reply"]["calls"][0]["name"], "Read");
        assert_eq!(parse(value), reply);
    }

    #[test]
    fn tool_use_may_carry_thinking() {
        let reply =
            parse(json!({"kind": "tool_use", "thinking": "plan", "calls": [{"name": "Bash"}]}));
        assert_eq!(
            reply,
            Reply::ThinkingToolUse {
                thinking: "plan".into(),
                text: None,
                calls: vec![("Bash".into(), json!({}))],
            }
        );
        assert_eq!(
            Reply::tool_use("Bash", json!({})).with_thinking("plan"),
            reply
        );
        let value = serde_json::to_value(&reply).expect("serializable");
        assert_eq!(value["kind"], "tool_use");
        assert_eq!(value["thinking"], "plan");
        assert_eq!(parse(value), reply);
        assert_eq!(
            Reply::text("x").slow(5).with_thinking("t"),
            Reply::Thinking {
                thinking: "t".into(),
                text: "x".into()
            }
            .slow(5)
        );
    }

    #[test]
    fn unknown_kinds_and_fields_are_rejected() {
        assert!(serde_json::from_value::<Reply>(json!({"kind":"nope"})).is_err());
        assert!(serde_json::from_value::<Reply>(json!({"kind":"text","txt":"hi"})).is_err());
    }
}
