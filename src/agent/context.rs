//! The model's context window: what of a stored conversation the model sees
//! (everything since the last compaction marker), token estimates, and the
//! ways a request is made to fit — compaction markers, cut tool results and,
//! as a last resort, shrinking what one request carries.
//!
//! The store keeps every message ever exchanged. A compaction appends a
//! marker row (role `system`, one `compaction` block) holding the summary
//! and the first stored message still shown verbatim; the model's view is
//! the summary, then the rows from that point on.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::history;
use super::wire::{ContentBlock, Message, Role};
use crate::store::{NewMessage, StoredMessage};

/// The role of marker rows in the store.
pub const MARKER_ROLE: &str = "system";
/// The block type of a compaction marker.
pub const MARKER_BLOCK: &str = "compaction";

/// What a tool result's content is replaced with when a request has to
/// shrink below what compaction reached.
pub const CLEARED_RESULT: &str = "[This tool result was cleared to fit the context window; run the tool again if you still need it.]";

/// Why a compaction happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A call's prompt passed `context.auto_compact_at` of the window.
    Auto,
    /// The upstream answered that the prompt was too long.
    Recovery,
    /// `/compact` or `POST /api/v1/sessions/{id}/compact`.
    Manual,
    /// `/clear`: a fresh context, nothing summarised.
    Clear,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Recovery => "recovery",
            Self::Manual => "manual",
            Self::Clear => "clear",
        }
    }
}

/// A compaction point, as stored in its marker row and reported to clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Compaction {
    pub trigger: Trigger,
    /// What the model sees in place of the messages before `keep_from_seq`;
    /// absent after `/clear`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The first stored message the model still sees verbatim; absent when
    /// nothing before the marker is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_from_seq: Option<i64>,
    /// Messages of the model's view that the summary replaced.
    pub messages_summarized: usize,
    /// Estimated tokens of the conversation before and after.
    pub tokens_before: u64,
    pub tokens_after: u64,
    /// What the user asked the summary to focus on (`/compact <focus>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub focus: Option<String>,
}

impl Compaction {
    /// The marker row to append to the store.
    pub fn to_stored(&self) -> NewMessage {
        let mut block = serde_json::to_value(self).unwrap_or_else(|_| json!({}));
        if let Value::Object(fields) = &mut block {
            fields.insert("type".into(), Value::from(MARKER_BLOCK));
        }
        NewMessage {
            role: MARKER_ROLE.to_owned(),
            content: Value::Array(vec![block]),
        }
    }

    /// Reads a marker row; `None` for any other row.
    pub fn from_stored(row: &StoredMessage) -> Option<Self> {
        if row.role != MARKER_ROLE {
            return None;
        }
        let block = row.content.as_array()?.first()?;
        if block.get("type").and_then(Value::as_str) != Some(MARKER_BLOCK) {
            return None;
        }
        serde_json::from_value(block.clone()).ok()
    }

    /// The user message that stands for the summarised part.
    pub fn summary_message(&self) -> Option<Message> {
        let summary = self.summary.as_deref()?;
        Some(Message::user_text(format!(
            "This conversation was compacted to fit the context window. A summary of the \
             earlier part follows; the messages after it continue the conversation verbatim.\n\n\
             <summary>\n{summary}\n</summary>"
        )))
    }
}

/// What the model sees of a stored conversation: the latest summary (if
/// any) and the stored messages it did not replace, each with its `seq`.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub summary: Option<Message>,
    pub entries: Vec<(i64, Message)>,
    /// The compaction the view starts from, with its marker's `seq`.
    pub since: Option<(i64, Compaction)>,
}

impl View {
    pub fn of(rows: &[StoredMessage]) -> Self {
        let latest = rows
            .iter()
            .rev()
            .find_map(|row| Compaction::from_stored(row).map(|c| (row.seq, c)));
        let visible = |row: &&StoredMessage| match &latest {
            None => true,
            Some((marker, compaction)) => {
                row.seq > *marker || compaction.keep_from_seq.is_some_and(|from| row.seq >= from)
            }
        };
        let kept: Vec<StoredMessage> = rows
            .iter()
            .filter(|row| row.role != MARKER_ROLE)
            .filter(visible)
            .cloned()
            .collect();
        // Unreadable rows are skipped (with a warning) by `from_stored`.
        let entries = kept
            .iter()
            .filter_map(|row| {
                history::from_stored(std::slice::from_ref(row))
                    .pop()
                    .map(|m| (row.seq, m))
            })
            .collect();
        Self {
            summary: latest.as_ref().and_then(|(_, c)| c.summary_message()),
            entries,
            since: latest,
        }
    }

    /// The conversation to send: summary first, repaired into a history the
    /// API accepts.
    pub fn conversation(&self) -> Vec<Message> {
        let mut messages: Vec<Message> = self.summary.iter().cloned().collect();
        messages.extend(self.entries.iter().map(|(_, m)| m.clone()));
        history::repair(messages)
    }

    /// The model's view as stored rows, for `GET .../messages?view=model`:
    /// the summary is shown as a user message at its marker's `seq`.
    pub fn rows(&self, all: &[StoredMessage]) -> Vec<StoredMessage> {
        let mut rows = Vec::with_capacity(self.entries.len() + 1);
        if let (Some((seq, _)), Some(summary)) = (&self.since, &self.summary)
            && let Some(marker) = all.iter().find(|r| r.seq == *seq)
        {
            rows.push(StoredMessage {
                seq: *seq,
                role: "user".into(),
                content: serde_json::to_value(&summary.content).unwrap_or_else(|_| json!([])),
                created_at: marker.created_at,
            });
        }
        let seqs: std::collections::HashSet<i64> = self.entries.iter().map(|(s, _)| *s).collect();
        rows.extend(all.iter().filter(|r| seqs.contains(&r.seq)).cloned());
        rows
    }
}

/// Tokens the API will count for a serialized request part, by the usual
/// four characters a token, scaled by `ratio` (what the API counted for
/// the last request over what this estimate said).
///
/// Images and documents are counted as the API counts them, not by the
/// length of their base64: an image at most [`IMAGE_TOKENS`] (the API scales
/// larger ones down to about that), a PDF [`PDF_PAGE_TOKENS`] a page.
pub fn estimate(value: &impl Serialize, ratio: f64) -> u64 {
    let Ok(text) = serde_json::to_string(value) else {
        return 0;
    };
    let mut chars = text.len();
    let mut media_tokens = 0u64;
    if text.contains(r#""type":"base64""#)
        && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
    {
        let (data_chars, tokens) = media_in(&json);
        chars = chars.saturating_sub(data_chars);
        media_tokens = tokens;
    }
    (((chars as f64 / 4.0) + media_tokens as f64) * ratio).ceil() as u64
}

/// Tokens of one image, whatever its size: the API scales an image down
/// to about 1.15 megapixels, about 1,600 tokens, before the model sees it.
pub const IMAGE_TOKENS: u64 = 1_600;
/// Tokens of one PDF page: its text and an image of the page.
pub const PDF_PAGE_TOKENS: u64 = 2_000;

/// The characters of base64 data inside `value`'s image and document
/// blocks, and the tokens those blocks count for instead.
fn media_in(value: &serde_json::Value) -> (usize, u64) {
    use serde_json::Value;
    match value {
        Value::Array(items) => items
            .iter()
            .map(media_in)
            .fold((0, 0), |(c, t), (c2, t2)| (c + c2, t + t2)),
        Value::Object(fields) => {
            let kind = fields.get("type").and_then(Value::as_str);
            let data = fields
                .get("source")
                .filter(|s| s["type"] == "base64")
                .and_then(|s| s["data"].as_str());
            match (kind, data) {
                (Some("image"), Some(data)) => (data.len(), IMAGE_TOKENS),
                (Some("document"), Some(data)) => {
                    (data.len(), pdf_pages(data).max(1) * PDF_PAGE_TOKENS)
                }
                _ => fields
                    .values()
                    .map(media_in)
                    .fold((0, 0), |(c, t), (c2, t2)| (c + c2, t + t2)),
            }
        }
        _ => (0, 0),
    }
}

/// Pages of a base64 PDF, counted by its page objects (`/Type /Page`, not
/// `/Pages`); 0 when it does not decode.
pub fn pdf_pages(base64_data: &str) -> u64 {
    use base64::Engine;
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(base64_data) else {
        return 0;
    };
    count_pdf_pages(&bytes)
}

/// Page objects in a PDF's bytes: `/Type` then `/Page` not followed by `s`.
pub fn count_pdf_pages(bytes: &[u8]) -> u64 {
    let mut pages = 0;
    let mut rest = bytes;
    while let Some(at) = find(rest, b"/Type") {
        rest = &rest[at + 5..];
        let after = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .map_or(rest, |skip| &rest[skip..]);
        if after.starts_with(b"/Page")
            && !after[5..]
                .first()
                .is_some_and(|b| b.is_ascii_alphanumeric())
        {
            pages += 1;
        }
    }
    pages
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The first index of `entries` from which the rest fits in `budget`
/// tokens and starts at an assistant message (so no tool_use is separated
/// from its result); `entries.len()` when no such tail exists.
pub fn keep_from(entries: &[(i64, Message)], budget: u64, ratio: f64) -> usize {
    let mut tail = 0u64;
    let mut cut = entries.len();
    for (i, (_, message)) in entries.iter().enumerate().rev() {
        tail += estimate(message, ratio);
        if tail > budget {
            break;
        }
        if message.role == Role::Assistant && i > 0 {
            cut = i;
        }
    }
    cut
}

/// Makes `messages` fit in `budget` tokens, in order of what is lost
/// least: old tool results' content is cleared (newest kept longest), then
/// the oldest messages are dropped, then the longest texts are cut. The
/// result is a valid history and never empty when `messages` was not.
pub fn shrink(mut messages: Vec<Message>, budget: u64, ratio: f64) -> Vec<Message> {
    let total = |m: &[Message]| m.iter().map(|m| estimate(m, ratio)).sum::<u64>();
    if total(&messages) <= budget {
        return messages;
    }
    'clear: for i in 0..messages.len() {
        for block in &mut messages[i].content {
            if let ContentBlock::ToolResult { content, .. } = block
                && (content.text.len() > CLEARED_RESULT.len() || !content.media.is_empty())
            {
                *content = CLEARED_RESULT.into();
            }
        }
        if total(&messages) <= budget {
            break 'clear;
        }
    }
    while total(&messages) > budget && messages.len() > 1 {
        let dropped = history::repair(messages[1..].to_vec());
        if dropped.is_empty() {
            break;
        }
        messages = dropped;
    }
    if total(&messages) > budget {
        let over = total(&messages).saturating_sub(budget);
        cut_longest_text(&mut messages, over, ratio);
    }
    history::repair(messages)
}

/// Removes about `over` tokens from the longest text or tool result.
fn cut_longest_text(messages: &mut [Message], over: u64, ratio: f64) {
    let longest = messages
        .iter_mut()
        .flat_map(|m| m.content.iter_mut())
        .filter_map(|block| match block {
            ContentBlock::Text { text } => Some(text),
            ContentBlock::ToolResult { content, .. } => Some(&mut content.text),
            _ => None,
        })
        .max_by_key(|text| text.len());
    if let Some(text) = longest {
        let drop_chars = ((over as f64 * 4.0 / ratio.max(0.01)) as usize).saturating_add(200);
        let keep = text
            .len()
            .saturating_sub(drop_chars)
            .max(200.min(text.len()));
        let end = floor_char_boundary(text, keep);
        let omitted = text.len() - end;
        text.truncate(end);
        text.push_str(&format!(
            "\n[{omitted} characters were cut here to fit the context window.]"
        ));
    }
}

/// Cuts a tool result longer than `max_tokens` (about four characters a
/// token), telling the model how much was left out and how to get at it.
pub fn cap_tool_result(content: String, max_tokens: u64) -> String {
    let limit = usize::try_from(max_tokens.saturating_mul(4)).unwrap_or(usize::MAX);
    if content.len() <= limit {
        return content;
    }
    let end = floor_char_boundary(&content, limit);
    let total_lines = content.lines().count();
    let shown_lines = content[..end].lines().count();
    let mut cut = content;
    cut.truncate(end);
    cut.push_str(&format!(
        "\n\n[Output cut at about {max_tokens} tokens: {shown_lines} of {total_lines} lines shown. \
         To see the rest, read the file in parts (Read with offset and limit), search it with \
         Grep, or rerun the command with its output redirected to a file and read that file in \
         parts.]"
    ));
    cut
}

fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The instruction that turns a conversation into its summary.
pub fn summary_instruction(focus: Option<&str>) -> String {
    let mut text = String::from(
        "Your context window is nearly full, so this conversation is being compacted. Do not call \
         any tools. Write a summary that lets you continue the work as if nothing was lost, \
         under these headings:\n\
         1. The user's requests: everything they asked for, in their words where it matters.\n\
         2. Decisions and findings: what was decided, learned or ruled out, and why.\n\
         3. Files: each file read, created or changed, with what matters about it (paths exact).\n\
         4. Commands: commands run that matter, and their outcome.\n\
         5. Errors: problems met and how they were solved or left.\n\
         6. Open work: what remains, and the very next step.\n\
         Be specific (names, paths, values) and leave out what no longer matters.",
    );
    if let Some(focus) = focus.map(str::trim).filter(|f| !f.is_empty()) {
        text.push_str("\n\nThe user asked the summary to focus on: ");
        text.push_str(focus);
    }
    text
}

/// The numbers in an upstream "too long" error: the prompt's tokens and
/// the window (`prompt is too long: X tokens > N maximum`), or the prompt,
/// `max_tokens` and the window (`... exceed context limit: X + Y > N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    pub prompt_tokens: Option<u64>,
    pub max_tokens: Option<u64>,
    pub window: Option<u64>,
}

/// Whether an upstream 400 says the request does not fit the context
/// window, and what numbers it gives.
pub fn overflow(status: u16, message: &str) -> Option<Overflow> {
    if status != 400 && status != 413 {
        return None;
    }
    let lower = message.to_ascii_lowercase();
    let about_context = [
        "prompt is too long",
        "context limit",
        "context window",
        "context length",
        "too many tokens",
    ]
    .iter()
    .any(|needle| lower.contains(needle));
    if !about_context {
        return None;
    }
    let numbers: Vec<u64> = lower
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    Some(if lower.contains('+') && numbers.len() >= 3 {
        Overflow {
            prompt_tokens: numbers.first().copied(),
            max_tokens: numbers.get(1).copied(),
            window: numbers.get(2).copied(),
        }
    } else {
        Overflow {
            prompt_tokens: numbers.first().copied(),
            max_tokens: None,
            window: numbers.get(1).copied(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn row(seq: i64, role: &str, content: Value) -> StoredMessage {
        StoredMessage {
            seq,
            role: role.into(),
            content,
            created_at: Utc::now(),
        }
    }

    fn text_row(seq: i64, role: &str, text: &str) -> StoredMessage {
        row(seq, role, json!([{"type": "text", "text": text}]))
    }

    fn marker(seq: i64, keep_from_seq: Option<i64>, summary: Option<&str>) -> StoredMessage {
        let compaction = Compaction {
            trigger: Trigger::Auto,
            summary: summary.map(str::to_owned),
            keep_from_seq,
            messages_summarized: 2,
            tokens_before: 100,
            tokens_after: 10,
            focus: None,
        };
        let stored = compaction.to_stored();
        row(seq, &stored.role, stored.content)
    }

    #[test]
    fn the_view_starts_at_the_latest_marker_and_keeps_what_it_kept() {
        let rows = vec![
            text_row(1, "user", "one"),
            text_row(2, "assistant", "a1"),
            text_row(3, "user", "two"),
            text_row(4, "assistant", "a2"),
            marker(5, Some(4), Some("they said one and two")),
            text_row(6, "user", "three"),
        ];
        let view = View::of(&rows);
        let seqs: Vec<i64> = view.entries.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [4, 6]);
        let conversation = view.conversation();
        assert_eq!(conversation.len(), 3);
        assert!(conversation[0].text().contains("they said one and two"));
        assert_eq!(conversation[1].role, Role::Assistant);
        let shown: Vec<i64> = view.rows(&rows).iter().map(|r| r.seq).collect();
        assert_eq!(shown, [5, 4, 6]);
    }

    #[test]
    fn clear_keeps_nothing_before_its_marker() {
        let rows = vec![
            text_row(1, "user", "one"),
            text_row(2, "assistant", "a1"),
            marker(3, None, None),
            text_row(4, "user", "fresh"),
        ];
        let view = View::of(&rows);
        assert!(view.summary.is_none());
        assert_eq!(view.conversation(), vec![Message::user_text("fresh")]);
    }

    #[test]
    fn keep_from_starts_at_an_assistant_message_within_budget() {
        let entries: Vec<(i64, Message)> = (0..10)
            .map(|i| {
                let role = if i % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                };
                let message = Message {
                    role,
                    content: vec![ContentBlock::Text {
                        text: "x".repeat(400),
                    }],
                };
                (i, message)
            })
            .collect();
        let one = estimate(&entries[0].1, 1.0);
        let cut = keep_from(&entries, one * 3 + 10, 1.0);
        assert_eq!(cut, 7);
        assert_eq!(entries[cut].1.role, Role::Assistant);
        assert_eq!(keep_from(&entries, 1, 1.0), entries.len());
    }

    #[test]
    fn images_and_pdfs_count_per_image_and_page_not_by_base64() {
        let image = ContentBlock::media("image/png", &vec![0u8; 300_000], None);
        let plain = estimate(&Message::user_text("look"), 1.0);
        let with_image = Message {
            role: Role::User,
            content: vec![
                image,
                ContentBlock::Text {
                    text: "look".into(),
                },
            ],
        };
        let counted = estimate(&with_image, 1.0);
        assert!(counted >= plain + IMAGE_TOKENS, "{counted}");
        assert!(counted < plain + IMAGE_TOKENS + 100, "{counted}");

        let three_pages =
            b"%PDF-1.4 /Type /Pages /Type /Page /Type/Page /Type /Page /Type /Catalog";
        assert_eq!(count_pdf_pages(three_pages), 3);
        let pdf = ContentBlock::media("application/pdf", three_pages, Some("spec".into()));
        let counted = estimate(&Message::assistant(vec![pdf]), 1.0);
        assert!(counted >= 3 * PDF_PAGE_TOKENS, "{counted}");
        assert!(counted < 3 * PDF_PAGE_TOKENS + 100, "{counted}");
    }

    #[test]
    fn shrink_clears_old_results_then_drops_old_messages_and_stays_valid() {
        let big = "y".repeat(4_000);
        let mut messages = vec![Message::user_text("start")];
        for i in 0..6 {
            messages.push(Message::assistant(vec![ContentBlock::ToolUse {
                id: format!("t{i}"),
                name: "Bash".into(),
                input: json!({"command": "cat big"}),
            }]));
            messages.push(Message {
                role: Role::User,
                content: vec![ContentBlock::ToolResult {
                    tool_use_id: format!("t{i}"),
                    content: big.clone().into(),
                    is_error: false,
                }],
            });
        }
        let shrunk = shrink(messages.clone(), 2_000, 1.0);
        let total: u64 = shrunk.iter().map(|m| estimate(m, 1.0)).sum();
        assert!(total <= 2_000, "{total}");
        assert_eq!(history::repair(shrunk.clone()), shrunk);
        assert_eq!(shrunk.first().map(|m| m.role), Some(Role::User));

        let tiny = shrink(messages, 50, 1.0);
        assert!(!tiny.is_empty());
        assert_eq!(tiny.first().map(|m| m.role), Some(Role::User));
    }

    #[test]
    fn a_long_tool_result_is_cut_with_directions() {
        let long = "line\n".repeat(10_000);
        let cut = cap_tool_result(long.clone(), 1_000);
        assert!(cut.len() < 4_000 + 400);
        assert!(cut.contains("Output cut at about 1000 tokens"));
        assert!(cut.contains("of 10000 lines shown"));
        assert_eq!(cap_tool_result("short".into(), 1_000), "short");
        let wide = "é".repeat(5_000);
        assert!(cap_tool_result(wide, 1_000).starts_with('é'));
    }

    #[test]
    fn overflow_errors_are_recognised_with_their_numbers() {
        assert_eq!(
            overflow(400, "prompt is too long: 30512 tokens > 24000 maximum"),
            Some(Overflow {
                prompt_tokens: Some(30_512),
                max_tokens: None,
                window: Some(24_000)
            })
        );
        assert_eq!(
            overflow(
                400,
                "input length and `max_tokens` exceed context limit: 188240 + 21333 > 200000, decrease input length or `max_tokens` and try again"
            ),
            Some(Overflow {
                prompt_tokens: Some(188_240),
                max_tokens: Some(21_333),
                window: Some(200_000)
            })
        );
        assert_eq!(overflow(400, "messages.0: Field required"), None);
        assert_eq!(overflow(529, "prompt is too long"), None);
    }
}
