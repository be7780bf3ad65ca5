//! A session's stored conversation turned into a valid Messages API history,
//! whatever a crash, timeout or cancellation left behind.

use std::collections::HashSet;

use serde_json::json;

use super::wire::{ContentBlock, Message, Role};
use crate::store::{NewMessage, StoredMessage};

/// What a tool call that never finished reports back to the model.
pub const INTERRUPTED: &str = "The tool call was interrupted before it finished (turn cancelled, timed out or the service restarted); its effects, if any, are unknown.";

/// Parses stored rows; rows that no longer parse are skipped with a warning
/// rather than making the session unusable.
pub fn from_stored(rows: &[StoredMessage]) -> Vec<Message> {
    rows.iter()
        .filter_map(|row| {
            let value = json!({ "role": row.role, "content": row.content });
            match serde_json::from_value::<Message>(value) {
                Ok(message) => Some(message),
                Err(err) => {
                    tracing::warn!(seq = row.seq, error = %err, "skipping unreadable stored message");
                    None
                }
            }
        })
        .collect()
}

pub fn to_stored(message: &Message) -> NewMessage {
    NewMessage {
        role: match message.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
        .to_owned(),
        content: serde_json::to_value(&message.content).unwrap_or_else(|_| json!([])),
    }
}

/// Makes a history the Messages API accepts:
/// - empty messages are dropped and consecutive messages of one role merged;
/// - it starts with a user message;
/// - every assistant `tool_use` is answered by a `tool_result` at the start of
///   the next user message (an error result saying it was interrupted when the
///   real one was never recorded), and no `tool_result` is left without its `tool_use`.
pub fn repair(messages: Vec<Message>) -> Vec<Message> {
    let mut merged: Vec<Message> = Vec::with_capacity(messages.len());
    for message in messages.into_iter().filter(|m| !m.content.is_empty()) {
        match merged.last_mut() {
            Some(last) if last.role == message.role => last.content.extend(message.content),
            _ => merged.push(message),
        }
    }
    while merged.first().is_some_and(|m| m.role == Role::Assistant) {
        merged.remove(0);
    }

    let mut out: Vec<Message> = Vec::with_capacity(merged.len() + 1);
    let mut pending: Vec<String> = Vec::new();
    for mut message in merged {
        match message.role {
            // An assistant message left first (its user message was an
            // orphan result, now gone) goes too, and its results with it.
            Role::Assistant if out.is_empty() => pending.clear(),
            Role::Assistant => {
                if !pending.is_empty() {
                    out.push(interrupted_results(&pending));
                    pending.clear();
                }
                pending = tool_use_ids(&message.content);
                out.push(message);
            }
            Role::User => {
                message.content = answer(&pending, message.content);
                pending.clear();
                if message.content.is_empty() {
                    continue;
                }
                match out.last_mut() {
                    Some(last) if last.role == Role::User => last.content.extend(message.content),
                    _ => out.push(message),
                }
            }
        }
    }
    if !pending.is_empty() {
        out.push(interrupted_results(&pending));
    }
    out
}

fn tool_use_ids(content: &[ContentBlock]) -> Vec<String> {
    content
        .iter()
        .filter_map(|block| match block {
            ContentBlock::ToolUse { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect()
}

/// Puts the results for `pending` first, in call order, filling gaps with
/// interruption errors and dropping results nobody asked for.
fn answer(pending: &[String], content: Vec<ContentBlock>) -> Vec<ContentBlock> {
    let wanted: HashSet<&str> = pending.iter().map(String::as_str).collect();
    let mut results = Vec::new();
    let mut rest = Vec::new();
    for block in content {
        match block {
            ContentBlock::ToolResult {
                ref tool_use_id, ..
            } => {
                if wanted.contains(tool_use_id.as_str()) {
                    results.push(block);
                }
            }
            other => rest.push(other),
        }
    }
    let mut ordered = Vec::with_capacity(pending.len() + rest.len());
    for id in pending {
        let found = results.iter().position(
            |b| matches!(b, ContentBlock::ToolResult { tool_use_id, .. } if tool_use_id == id),
        );
        ordered.push(match found {
            Some(i) => results.swap_remove(i),
            None => interrupted(id),
        });
    }
    ordered.extend(rest);
    ordered
}

fn interrupted(id: &str) -> ContentBlock {
    ContentBlock::ToolResult {
        tool_use_id: id.to_owned(),
        content: INTERRUPTED.into(),
        is_error: true,
    }
}

fn interrupted_results(ids: &[String]) -> Message {
    Message {
        role: Role::User,
        content: ids.iter().map(|id| interrupted(id)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(role: Role, t: &str) -> Message {
        Message {
            role,
            content: vec![ContentBlock::Text { text: t.into() }],
        }
    }

    fn tool_use(ids: &[&str]) -> Message {
        Message {
            role: Role::Assistant,
            content: ids
                .iter()
                .map(|id| ContentBlock::ToolUse {
                    id: (*id).into(),
                    name: "Bash".into(),
                    input: json!({"command": "true"}),
                })
                .collect(),
        }
    }

    fn result(id: &str) -> ContentBlock {
        ContentBlock::ToolResult {
            tool_use_id: id.into(),
            content: "ok".into(),
            is_error: false,
        }
    }

    #[test]
    fn a_valid_history_is_unchanged() {
        let history = vec![
            text(Role::User, "hi"),
            tool_use(&["a"]),
            Message {
                role: Role::User,
                content: vec![result("a")],
            },
            text(Role::Assistant, "done"),
        ];
        assert_eq!(repair(history.clone()), history);
    }

    #[test]
    fn a_dangling_tool_use_gets_an_interrupted_result() {
        let repaired = repair(vec![text(Role::User, "hi"), tool_use(&["a", "b"])]);
        assert_eq!(repaired.len(), 3);
        let ContentBlock::ToolResult {
            tool_use_id,
            is_error,
            ..
        } = &repaired[2].content[1]
        else {
            panic!("expected a tool result")
        };
        assert_eq!(tool_use_id, "b");
        assert!(is_error);
    }

    #[test]
    fn a_new_user_message_after_a_dangling_tool_use_carries_the_results_first() {
        let repaired = repair(vec![
            text(Role::User, "hi"),
            tool_use(&["a"]),
            Message {
                role: Role::User,
                content: vec![result("a")],
            },
            tool_use(&["b"]),
            text(Role::User, "next question"),
        ]);
        assert_eq!(repaired.len(), 5);
        let last = &repaired[4];
        assert!(
            matches!(&last.content[0], ContentBlock::ToolResult { tool_use_id, is_error: true, .. } if tool_use_id == "b")
        );
        assert!(matches!(&last.content[1], ContentBlock::Text { text } if text == "next question"));
    }

    #[test]
    fn partial_results_are_completed_in_call_order() {
        let repaired = repair(vec![
            text(Role::User, "hi"),
            tool_use(&["a", "b"]),
            Message {
                role: Role::User,
                content: vec![result("b"), result("zzz")],
            },
        ]);
        let ids: Vec<&str> = repaired[2]
            .content
            .iter()
            .map(|b| match b {
                ContentBlock::ToolResult { tool_use_id, .. } => tool_use_id.as_str(),
                _ => "other",
            })
            .collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn consecutive_user_messages_merge_and_empty_ones_vanish() {
        let repaired = repair(vec![
            text(Role::Assistant, "orphan first"),
            text(Role::User, "one"),
            Message {
                role: Role::Assistant,
                content: vec![],
            },
            text(Role::User, "two"),
        ]);
        assert_eq!(repaired.len(), 1);
        assert_eq!(repaired[0].content.len(), 2);
    }

    #[test]
    fn a_history_never_starts_with_an_assistant_message() {
        let repaired = repair(vec![
            Message {
                role: Role::User,
                content: vec![result("gone")],
            },
            tool_use(&["a"]),
            Message {
                role: Role::User,
                content: vec![result("a")],
            },
            text(Role::User, "next"),
            text(Role::Assistant, "answer"),
        ]);
        assert_eq!(repaired.len(), 2);
        assert_eq!(repaired[0].role, Role::User);
        assert_eq!(repaired[0].content.len(), 1);
    }

    #[test]
    fn orphan_results_are_dropped() {
        let repaired = repair(vec![
            Message {
                role: Role::User,
                content: vec![result("ghost"), ContentBlock::Text { text: "hi".into() }],
            },
            text(Role::Assistant, "hello"),
        ]);
        assert_eq!(repaired[0].content.len(), 1);
    }
}
