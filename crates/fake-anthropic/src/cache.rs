//! Prompt caching: where a request's cache breakpoints are, which prefixes
//! the fake holds, and the cache fields of the usage the real API reports.
//!
//! The prompt is a sequence of blocks in the order the API processes them:
//! each tool definition, each system text block, each message content block.
//! A breakpoint (`cache_control`) writes the prefix ending at its block; a
//! later request reads the longest prefix still held that ends at its own
//! breakpoint or at one of the 20 blocks before it.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::response::estimate_tokens;
use crate::validate::ApiError;

/// How many blocks before a breakpoint the API looks for a cached prefix.
pub(crate) const LOOKBACK_BLOCKS: usize = 20;

/// The real API's limit on `cache_control` blocks in one request.
const MAX_BREAKPOINTS: usize = 4;

/// The smallest prefix, in tokens, that `model` caches; shorter prefixes are
/// processed but not written. From the prompt caching guide's table of
/// minimum cacheable prompt lengths (models not listed there cache from
/// 1024 tokens).
pub fn min_cacheable_tokens(model: &str) -> u64 {
    const TABLE: &[(&str, u64)] = &[
        ("claude-opus-4-5", 4096),
        ("claude-opus-4-6", 4096),
        ("claude-haiku-4-5", 4096),
        ("claude-opus-4-7", 2048),
        ("claude-sonnet-4-6", 2048),
        ("claude-3-5-haiku", 2048),
        ("claude-3-haiku", 2048),
    ];
    TABLE
        .iter()
        .find(|(prefix, _)| model.starts_with(prefix))
        .map_or(1024, |(_, tokens)| *tokens)
}

/// A cache entry's lifetime, refreshed each time it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ttl {
    FiveMinutes,
    OneHour,
}

impl Ttl {
    fn duration(self) -> Duration {
        match self {
            Ttl::FiveMinutes => Duration::from_secs(5 * 60),
            Ttl::OneHour => Duration::from_secs(60 * 60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Breakpoint {
    block: usize,
    ttl: Ttl,
}

/// A request's prompt as the cache sees it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prompt {
    /// Tokens of each block, in processing order.
    tokens: Vec<u64>,
    /// Identity of the prefix ending at each block (model included).
    prefixes: Vec<u64>,
    /// In block order.
    breakpoints: Vec<Breakpoint>,
}

impl Prompt {
    /// The whole prompt, cached or not: what the context window limits.
    pub fn total_tokens(&self) -> u64 {
        self.tokens.iter().sum::<u64>().max(1)
    }
}

/// The input side of `usage`, as the real API splits it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CacheUsage {
    /// Tokens after the last prefix read or written.
    pub input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub ephemeral_5m_input_tokens: u64,
    pub ephemeral_1h_input_tokens: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    expires_at: Duration,
    ttl: Ttl,
}

/// The prefixes the fake holds, keyed by prefix identity. Times are
/// durations on the fake's own clock.
#[derive(Debug, Default)]
pub(crate) struct PromptCache {
    entries: HashMap<u64, Entry>,
}

impl PromptCache {
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Reads the longest held prefix, writes the prefixes of the
    /// breakpoints beyond it (those at least `min_tokens` long), and returns
    /// the usage split.
    pub fn process(&mut self, prompt: &Prompt, min_tokens: u64, now: Duration) -> CacheUsage {
        self.entries.retain(|_, entry| entry.expires_at > now);
        let cumulative: Vec<u64> = prompt
            .tokens
            .iter()
            .scan(0u64, |sum, t| {
                *sum += t;
                Some(*sum)
            })
            .collect();
        let total = prompt.total_tokens();

        let read_at = prompt
            .breakpoints
            .iter()
            .filter_map(|bp| {
                (bp.block.saturating_sub(LOOKBACK_BLOCKS)..=bp.block)
                    .rev()
                    .find(|&p| self.entries.contains_key(&prompt.prefixes[p]))
            })
            .max();
        let read = read_at.map_or(0, |p| cumulative[p]);
        if let Some(p) = read_at
            && let Some(entry) = self.entries.get_mut(&prompt.prefixes[p])
        {
            entry.expires_at = now + entry.ttl.duration();
        }

        let mut usage = CacheUsage {
            cache_read_input_tokens: read,
            ..CacheUsage::default()
        };
        let mut written_to = read;
        for bp in &prompt.breakpoints {
            let end = cumulative[bp.block];
            if read_at.is_some_and(|p| bp.block <= p) || end < min_tokens || end <= written_to {
                continue;
            }
            let segment = end - written_to;
            match bp.ttl {
                Ttl::FiveMinutes => usage.ephemeral_5m_input_tokens += segment,
                Ttl::OneHour => usage.ephemeral_1h_input_tokens += segment,
            }
            written_to = end;
            let entry = Entry {
                expires_at: now + bp.ttl.duration(),
                ttl: bp.ttl,
            };
            self.entries
                .entry(prompt.prefixes[bp.block])
                .and_modify(|held| {
                    if entry.expires_at > held.expires_at {
                        *held = entry;
                    }
                })
                .or_insert(entry);
        }
        usage.cache_creation_input_tokens = written_to - read;
        usage.input_tokens = total.saturating_sub(written_to);
        usage
    }
}

/// One `cache_control` found in the request. `tagged` is the path the
/// schema errors use (with the block type), `plain` the one the semantic
/// errors use.
struct Marker<'a> {
    tagged: String,
    plain: String,
    value: &'a Value,
}

/// Walks a request that passed structural validation and lays its prompt
/// out for the cache, checking every `cache_control` on the way.
pub(crate) fn layout(obj: &Map<String, Value>, model: &str) -> Result<Prompt, ApiError> {
    let mut builder = Builder::new(model);

    if let Some(Value::Array(tools)) = obj.get("tools") {
        for (i, tool) in tools.iter().enumerate() {
            let kind = tool.get("type").and_then(Value::as_str).unwrap_or("custom");
            let markers = marker(tool, format!("tools.{i}.{kind}"), format!("tools.{i}"));
            builder.push("tool", tool, true, markers)?;
        }
    }

    match obj.get("system") {
        Some(Value::String(text)) => {
            let block = serde_json::json!({"type": "text", "text": text});
            builder.push("system", &block, !text.is_empty(), Vec::new())?;
        }
        Some(Value::Array(blocks)) => {
            for (i, block) in blocks.iter().enumerate() {
                let markers = marker(block, format!("system.{i}"), format!("system.{i}"));
                builder.push("system", block, is_cacheable(block), markers)?;
            }
        }
        _ => {}
    }

    // Changing these invalidates the cached messages (not tools or system),
    // so they are part of every message prefix's identity.
    for field in ["tool_choice", "thinking"] {
        builder.salt(field, obj.get(field));
    }

    if let Some(Value::Array(messages)) = obj.get("messages") {
        for (i, message) in messages.iter().enumerate() {
            let role = message.get("role").and_then(Value::as_str).unwrap_or("");
            let section = format!("message {i} {role}");
            match message.get("content") {
                Some(Value::String(text)) => {
                    let block = serde_json::json!({"type": "text", "text": text});
                    builder.push(&section, &block, !text.is_empty(), Vec::new())?;
                }
                Some(Value::Array(blocks)) => {
                    for (j, block) in blocks.iter().enumerate() {
                        let markers = content_markers(i, j, block);
                        builder.push(&section, block, is_cacheable(block), markers)?;
                    }
                }
                _ => {}
            }
        }
    }

    if let Some(auto) = obj.get("cache_control") {
        builder.automatic(auto)?;
    }
    builder.finish()
}

fn marker(block: &Value, tagged: String, plain: String) -> Vec<Marker<'_>> {
    block
        .get("cache_control")
        .map(|value| Marker {
            tagged,
            plain,
            value,
        })
        .into_iter()
        .collect()
}

/// The markers of a message content block, including those on the blocks
/// inside a `tool_result`.
fn content_markers(i: usize, j: usize, block: &Value) -> Vec<Marker<'_>> {
    let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
    let mut markers = marker(
        block,
        format!("messages.{i}.content.{j}.{kind}"),
        format!("messages.{i}.content.{j}"),
    );
    if kind == "tool_result"
        && let Some(Value::Array(inner)) = block.get("content")
    {
        for (k, item) in inner.iter().enumerate() {
            let inner_kind = item.get("type").and_then(Value::as_str).unwrap_or("");
            markers.extend(marker(
                item,
                format!("messages.{i}.content.{j}.tool_result.content.{k}.{inner_kind}"),
                format!("messages.{i}.content.{j}.content.{k}"),
            ));
        }
    }
    markers
}

/// Whether automatic caching may put its breakpoint on this block: thinking
/// blocks and empty text take no `cache_control`.
fn is_cacheable(block: &Value) -> bool {
    match block.get("type").and_then(Value::as_str) {
        Some("thinking" | "redacted_thinking") => false,
        Some("text") => block
            .get("text")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty()),
        _ => true,
    }
}

struct Builder {
    hasher: DefaultHasher,
    prompt: Prompt,
    cacheable: Vec<bool>,
    /// `(plain path, ttl)` of each breakpoint, in processing order.
    marks: Vec<(String, Ttl)>,
}

impl Builder {
    fn new(model: &str) -> Builder {
        let mut hasher = DefaultHasher::new();
        hasher.write(model.as_bytes());
        hasher.write_u8(0xff);
        Builder {
            hasher,
            prompt: Prompt::default(),
            cacheable: Vec::new(),
            marks: Vec::new(),
        }
    }

    fn salt(&mut self, name: &str, value: Option<&Value>) {
        self.hasher.write(name.as_bytes());
        let mut text = String::new();
        if let Some(value) = value {
            canonical(value, &mut text);
        }
        self.hasher.write(text.as_bytes());
        self.hasher.write_u8(0xff);
    }

    fn push(
        &mut self,
        section: &str,
        block: &Value,
        cacheable: bool,
        markers: Vec<Marker<'_>>,
    ) -> Result<(), ApiError> {
        let mut text = String::new();
        canonical(block, &mut text);
        self.hasher.write(section.as_bytes());
        self.hasher.write_u8(0xfe);
        self.hasher.write(text.as_bytes());
        self.hasher.write_u8(0xff);
        let index = self.prompt.tokens.len();
        let (media_chars, media_tokens) = crate::media::media_tokens(block);
        self.prompt
            .tokens
            .push(estimate_tokens(text.chars().count().saturating_sub(media_chars)) + media_tokens);
        self.prompt.prefixes.push(self.hasher.clone().finish());
        self.cacheable.push(cacheable);
        for marker in markers {
            let ttl = check_cache_control(&marker.tagged, marker.value)?;
            self.prompt
                .breakpoints
                .push(Breakpoint { block: index, ttl });
            self.marks.push((marker.plain, ttl));
        }
        Ok(())
    }

    /// A top-level `cache_control` puts a breakpoint on the last block that
    /// can carry one. It takes one of the four slots unless that block has
    /// a breakpoint already (the guide does not say; this is the reading
    /// that never lets a request exceed four breakpoints).
    fn automatic(&mut self, value: &Value) -> Result<(), ApiError> {
        let ttl = check_cache_control("cache_control", value)?;
        let Some(block) = self.cacheable.iter().rposition(|c| *c) else {
            return Ok(());
        };
        if self.prompt.breakpoints.iter().any(|bp| bp.block == block) {
            return Ok(());
        }
        self.prompt.breakpoints.push(Breakpoint { block, ttl });
        self.marks.push(("cache_control".to_owned(), ttl));
        Ok(())
    }

    fn finish(self) -> Result<Prompt, ApiError> {
        let found = self.marks.len();
        if found > MAX_BREAKPOINTS {
            return Err(ApiError::invalid(format!(
                "A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. \
                 Found {found}."
            )));
        }
        let mut seen_short = false;
        for (path, ttl) in &self.marks {
            match ttl {
                Ttl::FiveMinutes => seen_short = true,
                Ttl::OneHour if seen_short => {
                    return Err(ApiError::invalid(format!(
                        "{path}.cache_control.ttl: a ttl='1h' cache_control block must not \
                         come after a ttl='5m' cache_control block. Note that blocks are \
                         processed in the following order: `tools`, `system`, `messages`."
                    )));
                }
                Ttl::OneHour => {}
            }
        }
        let mut prompt = self.prompt;
        prompt.breakpoints.sort_by_key(|bp| bp.block);
        Ok(prompt)
    }
}

/// Checks one `cache_control` value: `{"type": "ephemeral"}` with an
/// optional `"ttl": "5m" | "1h"`. The real API's schema messages for a bad
/// shape could not be confirmed; these follow its validator's wording for
/// other fields.
fn check_cache_control(path: &str, value: &Value) -> Result<Ttl, ApiError> {
    let path = if path == "cache_control" {
        String::from("cache_control")
    } else {
        format!("{path}.cache_control")
    };
    let obj = value
        .as_object()
        .ok_or_else(|| ApiError::invalid(format!("{path}: Input should be a valid dictionary")))?;
    match obj.get("type") {
        None => {
            return Err(ApiError::invalid(format!(
                "{path}: Unable to extract tag using discriminator 'type'"
            )));
        }
        Some(Value::String(t)) if t == "ephemeral" => {}
        Some(other) => {
            let tag = other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_owned);
            return Err(ApiError::invalid(format!(
                "{path}: Input tag '{tag}' found using 'type' does not match any of the \
                 expected tags: 'ephemeral'"
            )));
        }
    }
    if let Some(key) = obj.keys().find(|k| !matches!(k.as_str(), "type" | "ttl")) {
        return Err(ApiError::invalid(format!(
            "{path}.ephemeral.{key}: Extra inputs are not permitted"
        )));
    }
    match obj.get("ttl") {
        None => Ok(Ttl::FiveMinutes),
        Some(Value::String(t)) if t == "5m" => Ok(Ttl::FiveMinutes),
        Some(Value::String(t)) if t == "1h" => Ok(Ttl::OneHour),
        Some(_) => Err(ApiError::invalid(format!(
            "{path}.ephemeral.ttl: Input should be '5m' or '1h'"
        ))),
    }
}

/// JSON with sorted keys and without `cache_control`, so a prefix's
/// identity does not depend on key order or on where breakpoints sit.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().filter(|k| *k != "cache_control").collect();
            keys.sort();
            out.push('{');
            for (n, key) in keys.into_iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(inner) = map.get(key) {
                    canonical(inner, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prompt_of(body: Value) -> Prompt {
        layout(body.as_object().expect("object"), "m").expect("valid layout")
    }

    fn text(t: &str) -> Value {
        json!({"type": "text", "text": t})
    }

    fn cached(t: &str) -> Value {
        json!({"type": "text", "text": t, "cache_control": {"type": "ephemeral"}})
    }

    #[test]
    fn canonical_json_ignores_key_order_and_breakpoints() {
        let mut a = String::new();
        let mut b = String::new();
        canonical(&json!({"b": 1, "a": [cached("x")]}), &mut a);
        canonical(&json!({"a": [text("x")], "b": 1}), &mut b);
        assert_eq!(a, b);
        assert_eq!(a, r#"{"a":[{"text":"x","type":"text"}],"b":1}"#);
    }

    #[test]
    fn a_breakpoint_moves_with_its_block_but_not_the_identity() {
        let one =
            prompt_of(json!({"messages": [{"role": "user", "content": [cached("a"), text("b")]}]}));
        let two =
            prompt_of(json!({"messages": [{"role": "user", "content": [text("a"), cached("b")]}]}));
        assert_eq!(one.prefixes, two.prefixes);
        assert_eq!(one.breakpoints[0].block, 0);
        assert_eq!(two.breakpoints[0].block, 1);
    }

    #[test]
    fn read_then_write_splits_the_usage() {
        let mut cache = PromptCache::default();
        let first = prompt_of(
            json!({"messages": [{"role": "user", "content": [text("aaaa"), cached("bbbb")]}]}),
        );
        let used = cache.process(&first, 0, Duration::ZERO);
        let total = first.total_tokens();
        assert_eq!(used.cache_creation_input_tokens, total);
        assert_eq!(used.input_tokens, 0);

        let second = prompt_of(json!({"messages": [
            {"role": "user", "content": [text("aaaa"), text("bbbb")]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [cached("cccc"), text("tail")]},
        ]}));
        let used = cache.process(&second, 0, Duration::from_secs(1));
        assert_eq!(used.cache_read_input_tokens, total);
        let through_breakpoint = second.tokens[..4].iter().sum::<u64>();
        assert_eq!(used.cache_creation_input_tokens, through_breakpoint - total);
        assert_eq!(used.input_tokens, second.tokens[4]);
        assert_eq!(
            used.ephemeral_5m_input_tokens,
            used.cache_creation_input_tokens
        );
    }

    #[test]
    fn the_model_is_part_of_the_identity() {
        let body = json!({"messages": [{"role": "user", "content": [cached("a")]}]});
        let obj = body.as_object().expect("object");
        let a = layout(obj, "model-a").expect("valid");
        let b = layout(obj, "model-b").expect("valid");
        assert_ne!(a.prefixes, b.prefixes);
    }

    #[test]
    fn minimum_lengths_follow_the_model() {
        assert_eq!(min_cacheable_tokens("claude-sonnet-4-5-20250929"), 1024);
        assert_eq!(min_cacheable_tokens("claude-opus-4-5-20251101"), 4096);
        assert_eq!(min_cacheable_tokens("claude-haiku-4-5"), 4096);
        assert_eq!(min_cacheable_tokens("claude-3-5-haiku-20241022"), 2048);
        assert_eq!(min_cacheable_tokens("claude-sonnet-4-6"), 2048);
        assert_eq!(min_cacheable_tokens("claude-test"), 1024);
    }

    #[test]
    fn bad_shapes_are_named() {
        let message = |cc: Value| {
            let body = json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "a", "cache_control": cc}
            ]}]});
            layout(body.as_object().expect("object"), "m")
                .err()
                .map(|e| e.message)
        };
        assert_eq!(
            message(json!({"type": "ephemeral", "ttl": "2h"})).as_deref(),
            Some(
                "messages.0.content.0.text.cache_control.ephemeral.ttl: Input should be '5m' or '1h'"
            )
        );
        assert!(message(json!({"type": "persistent"})).is_some());
        assert!(message(json!({"type": "ephemeral", "x": 1})).is_some());
        assert!(message(json!("ephemeral")).is_some());
        assert_eq!(message(json!({"type": "ephemeral", "ttl": "1h"})), None);
    }
}
