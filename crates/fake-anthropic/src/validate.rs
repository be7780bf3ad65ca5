//! Request validation with the real API's rules and error messages.
//!
//! Being at least as strict as the real service is the point of the fake: a
//! request that passes here but would fail against Anthropic is a bug that
//! only shows up in production.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use crate::cache::{self, Prompt};
use crate::media;
use crate::response::thinking_signature;

/// A rejected request: the HTTP status and the real error body's fields.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub error_type: String,
    pub message: String,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            error_type: "invalid_request_error".into(),
            message: message.into(),
        }
    }

    pub fn authentication(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 401,
            error_type: "authentication_error".into(),
            message: message.into(),
        }
    }
}

/// What the responder needs from a request that passed validation.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub model: String,
    pub max_tokens: u64,
    pub stream: bool,
    pub stop_sequences: Vec<String>,
    /// Extended thinking is on (`enabled` or `adaptive`).
    pub thinking: bool,
    /// The prompt laid out for the cache and the context window.
    pub prompt: Prompt,
    /// The text the default reply echoes back.
    pub last_user_text: String,
}

type Check<T = ()> = Result<T, ApiError>;

const TOP_LEVEL_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_k",
    "top_p",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
    "cache_control",
    "diagnostics",
    "inference_geo",
    "output_config",
    "speed",
    "user_profile_id",
    "workspace_id",
];

/// Block types the API produces server-side; clients echo them back
/// verbatim, so their inner shape is not ours to police.
const SERVER_BLOCK_TYPES: &[&str] = &[
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "mcp_tool_use",
    "mcp_tool_result",
    "container_upload",
];

const BLOCK_TYPES: &str = "'text', 'image', 'document', 'search_result', 'thinking', \
'redacted_thinking', 'tool_use', 'tool_result', 'server_tool_use', 'web_search_tool_result'";

static TOOL_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new("^[a-zA-Z0-9_-]{1,128}$").expect("tool name pattern is a valid regex")
});
static TOOL_USE_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("^[a-zA-Z0-9_-]+$").expect("tool_use id pattern is a valid regex"));

/// With this beta, a thinking budget covers every thinking block of the
/// turn and may exceed `max_tokens`.
const INTERLEAVED_THINKING_BETA: &str = "interleaved-thinking-2025-05-14";

/// Checks a parsed `/v1/messages` body. `betas` are the `anthropic-beta`
/// values; any beta relaxes the unknown-field check, because beta features
/// add top-level fields.
pub(crate) fn check_request(body: &Value, betas: &[String]) -> Check<Checked> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("Input should be a valid dictionary"))?;
    if betas.is_empty() {
        reject_extra("", obj, TOP_LEVEL_FIELDS)?;
    }

    let model = match obj.get("model") {
        None => return Err(ApiError::invalid("model: Field required")),
        Some(Value::String(s)) if s.is_empty() => {
            return Err(ApiError::invalid(
                "model: String should have at least 1 character",
            ));
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::invalid("model: Input should be a valid string")),
    };

    let max_tokens = match obj.get("max_tokens") {
        None => return Err(ApiError::invalid("max_tokens: Field required")),
        Some(v) => positive_integer("max_tokens", v, 1)?,
    };

    let messages = match obj.get("messages") {
        None => return Err(ApiError::invalid("messages: Field required")),
        Some(Value::Array(a)) if a.is_empty() => {
            return Err(ApiError::invalid(
                "messages: at least one message is required",
            ));
        }
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ApiError::invalid("messages: Input should be a valid list")),
    };

    if let Some(system) = obj.get("system") {
        check_system(system)?;
    }
    let tool_names = match obj.get("tools") {
        Some(tools) => check_tools(tools)?,
        None => Vec::new(),
    };
    if let Some(choice) = obj.get("tool_choice") {
        check_tool_choice(choice, &tool_names)?;
    }
    let interleaved = betas.iter().any(|b| b == INTERLEAVED_THINKING_BETA);
    let thinking_enabled = match obj.get("thinking") {
        Some(thinking) => check_thinking(thinking, max_tokens, interleaved)?,
        None => false,
    };
    if thinking_enabled
        && matches!(
            obj.get("tool_choice")
                .and_then(|c| c.get("type"))
                .and_then(Value::as_str),
            Some("any" | "tool")
        )
    {
        return Err(ApiError::invalid(
            "Thinking may not be enabled when tool_choice forces tool use.",
        ));
    }
    check_sampling(obj, thinking_enabled)?;
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("stream: Input should be a valid boolean")),
    };
    let stop_sequences = match obj.get("stop_sequences") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => check_stop_sequences(v)?,
    };
    if let Some(metadata) = obj.get("metadata") {
        check_metadata(metadata)?;
    }
    if let Some(tier) = obj.get("service_tier")
        && !matches!(tier.as_str(), Some("auto" | "standard_only"))
    {
        return Err(ApiError::invalid(
            "service_tier: Input should be 'auto' or 'standard_only'",
        ));
    }

    check_messages(messages, thinking_enabled)?;
    let prompt = cache::layout(obj, &model)?;

    Ok(Checked {
        model,
        max_tokens,
        stream,
        stop_sequences,
        thinking: thinking_enabled,
        prompt,
        last_user_text: last_user_text(messages),
    })
}

/// Whether the model predates the `model_context_window_exceeded` stop
/// reason (Claude Sonnet 4.5 and later have it by default). For these the
/// API rejects a request whose input plus `max_tokens` exceeds the window,
/// a rule that has held since Claude 3.7 Sonnet.
fn rejects_overlong_max_tokens(model: &str) -> bool {
    if model.starts_with("claude-3") {
        return true;
    }
    ["claude-sonnet-4", "claude-opus-4"].iter().any(|family| {
        model.strip_prefix(family).is_some_and(|rest| {
            // `claude-opus-4`, `-0`, `-1`, `-20250514`, `-1-20250805`.
            let minor = rest.strip_prefix('-').and_then(|r| r.split('-').next());
            match minor {
                None => rest.is_empty(),
                Some(m) => m == "0" || m == "1" || m.len() == 8,
            }
        })
    })
}

/// Checks the prompt against the context window. Returns the room left
/// for output when it is smaller than `max_tokens` (newer models then stop
/// with `model_context_window_exceeded` instead of rejecting the request).
pub(crate) fn check_context(request: &Checked, window: Option<u64>) -> Check<Option<u64>> {
    let Some(window) = window else {
        return Ok(None);
    };
    let prompt = request.prompt.total_tokens();
    if prompt > window {
        return Err(ApiError::invalid(format!(
            "prompt is too long: {prompt} tokens > {window} maximum"
        )));
    }
    let room = window - prompt;
    if room >= request.max_tokens {
        return Ok(None);
    }
    if rejects_overlong_max_tokens(&request.model) {
        return Err(ApiError::invalid(format!(
            "input length and `max_tokens` exceed context limit: {prompt} + {} > {window}, \
             decrease input length or `max_tokens` and try again",
            request.max_tokens
        )));
    }
    Ok(Some(room))
}

fn reject_extra(path: &str, obj: &Map<String, Value>, allowed: &[&str]) -> Check {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(ApiError::invalid(format!(
            "{path}{key}: Extra inputs are not permitted"
        ))),
        None => Ok(()),
    }
}

/// Integers only: `5.0` and `"5"` are rejected, as the real API does for
/// token counts.
fn positive_integer(field: &str, value: &Value, min: u64) -> Check<u64> {
    let n = match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_u64().map(|_| i64::MAX)),
        _ => None,
    }
    .ok_or_else(|| ApiError::invalid(format!("{field}: Input should be a valid integer")))?;
    match u64::try_from(n) {
        Ok(n) if n >= min => Ok(n),
        _ => Err(ApiError::invalid(format!(
            "{field}: Input should be greater than or equal to {min}"
        ))),
    }
}

fn check_system(system: &Value) -> Check {
    match system {
        Value::String(_) => Ok(()),
        Value::Array(blocks) => {
            for (i, block) in blocks.iter().enumerate() {
                let path = format!("system.{i}");
                let obj = block.as_object().ok_or_else(|| {
                    ApiError::invalid(format!("{path}: Input should be a valid dictionary"))
                })?;
                if obj.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(ApiError::invalid(format!(
                        "{path}.type: Input should be 'text'"
                    )));
                }
                check_text_block(&format!("{path}."), obj)?;
            }
            Ok(())
        }
        _ => Err(ApiError::invalid(
            "system: Input should be a valid string or a valid list",
        )),
    }
}

fn check_text_block(path: &str, obj: &Map<String, Value>) -> Check {
    reject_extra(path, obj, &["type", "text", "cache_control", "citations"])?;
    if obj.contains_key("cache_control") && obj.get("text").and_then(Value::as_str) == Some("") {
        return Err(ApiError::invalid(format!(
            "{}: cache_control cannot be set for empty text blocks",
            path.trim_end_matches('.')
        )));
    }
    match obj.get("text") {
        None => Err(ApiError::invalid(format!("{path}text: Field required"))),
        Some(Value::String(s)) if s.is_empty() => Err(ApiError::invalid(
            "messages: text content blocks must be non-empty",
        )),
        Some(Value::String(s)) if s.trim().is_empty() => Err(ApiError::invalid(
            "messages: text content blocks must contain non-whitespace text",
        )),
        Some(Value::String(_)) => Ok(()),
        Some(_) => Err(ApiError::invalid(format!(
            "{path}text: Input should be a valid string"
        ))),
    }
}

fn check_tools(tools: &Value) -> Check<Vec<String>> {
    let tools = tools
        .as_array()
        .ok_or_else(|| ApiError::invalid("tools: Input should be a valid list"))?;
    let mut names = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let obj = tool.as_object().ok_or_else(|| {
            ApiError::invalid(format!("tools.{i}: Input should be a valid dictionary"))
        })?;
        let name = match obj.get("name") {
            None => return Err(ApiError::invalid(format!("tools.{i}.name: Field required"))),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(ApiError::invalid(format!(
                    "tools.{i}.name: Input should be a valid string"
                )));
            }
        };
        // Versioned server and client tools (`bash_20250124`, ...) have a
        // fixed name and no schema.
        let custom = matches!(
            obj.get("type").and_then(Value::as_str),
            None | Some("custom")
        );
        if custom {
            if !TOOL_NAME.is_match(&name) {
                return Err(ApiError::invalid(format!(
                    "tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
                )));
            }
            if let Some(desc) = obj.get("description")
                && !desc.is_string()
            {
                return Err(ApiError::invalid(format!(
                    "tools.{i}.custom.description: Input should be a valid string"
                )));
            }
            match obj.get("input_schema") {
                None => {
                    return Err(ApiError::invalid(format!(
                        "tools.{i}.custom.input_schema: Field required"
                    )));
                }
                Some(Value::Object(schema)) => match schema.get("type") {
                    Some(Value::String(t)) if t == "object" => {}
                    None => {
                        return Err(ApiError::invalid(format!(
                            "tools.{i}.custom.input_schema.type: Field required"
                        )));
                    }
                    Some(_) => {
                        return Err(ApiError::invalid(format!(
                            "tools.{i}.custom.input_schema.type: Input should be 'object'"
                        )));
                    }
                },
                Some(_) => {
                    return Err(ApiError::invalid(format!(
                        "tools.{i}.custom.input_schema: Input should be a valid dictionary"
                    )));
                }
            }
        }
        if names.contains(&name) {
            return Err(ApiError::invalid("tools: Tool names must be unique."));
        }
        names.push(name);
    }
    Ok(names)
}

fn check_tool_choice(choice: &Value, tool_names: &[String]) -> Check {
    let obj = choice
        .as_object()
        .ok_or_else(|| ApiError::invalid("tool_choice: Input should be a valid dictionary"))?;
    let kind = obj.get("type").and_then(Value::as_str);
    match kind {
        Some("auto" | "any" | "none") => {}
        Some("tool") => match obj.get("name").and_then(Value::as_str) {
            None => return Err(ApiError::invalid("tool_choice.tool.name: Field required")),
            Some(name) if !tool_names.iter().any(|n| n == name) => {
                return Err(ApiError::invalid(format!(
                    "tool_choice: tool '{name}' was not found in `tools`"
                )));
            }
            Some(_) => {}
        },
        _ => {
            return Err(ApiError::invalid(
                "tool_choice: Input tag found using 'type' does not match any of the \
                 expected tags: 'auto', 'any', 'tool', 'none'",
            ));
        }
    }
    if kind != Some("none") && tool_names.is_empty() {
        return Err(ApiError::invalid(
            "tool_choice may only be specified while providing tools.",
        ));
    }
    Ok(())
}

/// Returns whether extended thinking is on.
fn check_thinking(thinking: &Value, max_tokens: u64, interleaved: bool) -> Check<bool> {
    let obj = thinking
        .as_object()
        .ok_or_else(|| ApiError::invalid("thinking: Input should be a valid dictionary"))?;
    match obj.get("type").and_then(Value::as_str) {
        Some("disabled") => Ok(false),
        Some("adaptive" | "between_tools") => Ok(true),
        Some("enabled") => {
            let budget = match obj.get("budget_tokens") {
                None => {
                    return Err(ApiError::invalid(
                        "thinking.enabled.budget_tokens: Field required",
                    ));
                }
                Some(v) => positive_integer("thinking.enabled.budget_tokens", v, 1024)?,
            };
            if budget >= max_tokens && !interleaved {
                return Err(ApiError::invalid(
                    "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult \
                     our documentation at https://docs.claude.com/en/docs/build-with-claude/\
                     extended-thinking#max-tokens-and-context-window-size",
                ));
            }
            Ok(true)
        }
        _ => Err(ApiError::invalid(
            "thinking: Input tag found using 'type' does not match any of the expected \
             tags: 'enabled', 'disabled', 'adaptive', 'between_tools'",
        )),
    }
}

fn check_sampling(obj: &Map<String, Value>, thinking_enabled: bool) -> Check {
    for field in ["temperature", "top_p"] {
        if let Some(v) = obj.get(field) {
            let x = v.as_f64().ok_or_else(|| {
                ApiError::invalid(format!("{field}: Input should be a valid number"))
            })?;
            if x < 0.0 {
                return Err(ApiError::invalid(format!(
                    "{field}: Input should be greater than or equal to 0"
                )));
            }
            if x > 1.0 {
                return Err(ApiError::invalid(format!(
                    "{field}: Input should be less than or equal to 1"
                )));
            }
        }
    }
    if let Some(v) = obj.get("top_k") {
        positive_integer("top_k", v, 0)?;
    }
    if thinking_enabled && obj.get("top_k").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::invalid(
            "`top_k` must be unset when thinking is enabled. Please consult our documentation \
             at https://docs.claude.com/en/docs/build-with-claude/extended-thinking\
             #important-considerations-when-using-extended-thinking",
        ));
    }
    // The guide allows `top_p` from 0.95 to 1 with thinking; the API's
    // message for a lower value could not be confirmed, so this one is ours.
    if thinking_enabled
        && let Some(p) = obj.get("top_p").and_then(Value::as_f64)
        && p < 0.95
    {
        return Err(ApiError::invalid(
            "`top_p` must be unset or between 0.95 and 1 when thinking is enabled. Please \
             consult our documentation at https://docs.claude.com/en/docs/build-with-claude/\
             extended-thinking#important-considerations-when-using-extended-thinking",
        ));
    }
    if thinking_enabled
        && let Some(t) = obj.get("temperature").and_then(Value::as_f64)
        && t != 1.0
    {
        return Err(ApiError::invalid(
            "`temperature` may only be set to 1 when thinking is enabled. Please consult our \
             documentation at https://docs.claude.com/en/docs/build-with-claude/\
             extended-thinking#feature-compatibility",
        ));
    }
    Ok(())
}

fn check_stop_sequences(value: &Value) -> Check<Vec<String>> {
    let items = value
        .as_array()
        .ok_or_else(|| ApiError::invalid("stop_sequences: Input should be a valid list"))?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let s = item.as_str().ok_or_else(|| {
            ApiError::invalid(format!(
                "stop_sequences.{i}: Input should be a valid string"
            ))
        })?;
        if s.trim().is_empty() {
            return Err(ApiError::invalid(
                "stop_sequences: each stop sequence must contain non-whitespace",
            ));
        }
        out.push(s.to_owned());
    }
    Ok(out)
}

fn check_metadata(metadata: &Value) -> Check {
    let obj = metadata
        .as_object()
        .ok_or_else(|| ApiError::invalid("metadata: Input should be a valid dictionary"))?;
    reject_extra("metadata.", obj, &["user_id"])?;
    match obj.get("user_id") {
        None | Some(Value::Null | Value::String(_)) => Ok(()),
        Some(_) => Err(ApiError::invalid(
            "metadata.user_id: Input should be a valid string",
        )),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    User,
    Assistant,
}

/// Per message: its role, the ids of its `tool_use` blocks, and the
/// `(block index, tool_use_id)` of its `tool_result` blocks.
struct Shape {
    role: Role,
    tool_uses: Vec<String>,
    tool_results: Vec<(usize, String)>,
    first_block_type: Option<String>,
}

fn check_messages(messages: &[Value], thinking_enabled: bool) -> Check {
    let last = messages.len() - 1;
    let mut shapes = Vec::with_capacity(messages.len());
    let mut seen_tool_use_ids = HashSet::new();
    for (i, message) in messages.iter().enumerate() {
        let shape = check_message(i, message, i == last, &mut seen_tool_use_ids)?;
        if i == 0 && shape.role != Role::User {
            return Err(ApiError::invalid(
                "messages: first message must use the \"user\" role",
            ));
        }
        shapes.push(shape);
    }
    let images = media::count_images(messages);
    if images > media::MAX_IMAGES {
        return Err(ApiError::invalid(format!(
            "messages: Too many images: {images} > {} maximum",
            media::MAX_IMAGES
        )));
    }

    for (i, shape) in shapes.iter().enumerate() {
        if shape.tool_uses.is_empty() {
            continue;
        }
        let answered: Vec<&str> = shapes
            .get(i + 1)
            .filter(|next| next.role == Role::User)
            .map(|next| {
                next.tool_results
                    .iter()
                    .map(|(_, id)| id.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let missing: Vec<&str> = shape
            .tool_uses
            .iter()
            .map(String::as_str)
            .filter(|id| !answered.contains(id))
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::invalid(format!(
                "messages.{i}: `tool_use` ids were found without `tool_result` blocks \
                 immediately after: {}. Each `tool_use` block must have a corresponding \
                 `tool_result` block in the next message.",
                missing.join(", ")
            )));
        }
    }

    for (i, shape) in shapes.iter().enumerate() {
        let previous = i
            .checked_sub(1)
            .and_then(|p| shapes.get(p))
            .filter(|p| p.role == Role::Assistant);
        for (j, id) in &shape.tool_results {
            if !previous.is_some_and(|p| p.tool_uses.contains(id)) {
                return Err(ApiError::invalid(format!(
                    "messages.{i}.content.{j}: unexpected `tool_use_id` found in \
                     `tool_result` blocks: {id}. Each `tool_result` block must have a \
                     corresponding `tool_use` block in the previous message."
                )));
            }
        }
    }

    // With thinking on, the assistant turn of the tool loop in progress must
    // keep its thinking block; agents that drop it get this error in
    // production.
    if thinking_enabled
        && let Some((i, shape)) = shapes
            .iter()
            .enumerate()
            .rev()
            .find(|(_, s)| s.role == Role::Assistant)
        && !shape.tool_uses.is_empty()
    {
        let first = shape.first_block_type.as_deref().unwrap_or("text");
        if first != "thinking" && first != "redacted_thinking" {
            return Err(ApiError::invalid(format!(
                "messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but \
                 found `{first}`. When `thinking` is enabled, a final `assistant` message \
                 must start with a thinking block (preceeding the lastmost set of `tool_use` \
                 and `tool_result` blocks). We recommend you include thinking blocks from \
                 previous turns. To avoid this requirement, disable `thinking`. Please \
                 consult our documentation at \
                 https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
            )));
        }
    }
    Ok(())
}

fn check_message(
    i: usize,
    message: &Value,
    is_last: bool,
    seen_tool_use_ids: &mut HashSet<String>,
) -> Check<Shape> {
    let obj = message.as_object().ok_or_else(|| {
        ApiError::invalid(format!("messages.{i}: Input should be a valid dictionary"))
    })?;
    reject_extra(&format!("messages.{i}."), obj, &["role", "content"])?;
    let role = match obj.get("role") {
        None => {
            return Err(ApiError::invalid(format!(
                "messages.{i}.role: Field required"
            )));
        }
        Some(Value::String(r)) if r == "user" => Role::User,
        Some(Value::String(r)) if r == "assistant" => Role::Assistant,
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            )));
        }
    };
    let final_assistant = is_last && role == Role::Assistant;
    let empty = || {
        ApiError::invalid(format!(
            "messages.{i}: all messages must have non-empty content except for the optional \
             final assistant message"
        ))
    };
    let trailing_whitespace =
        |text: &str| final_assistant && !text.is_empty() && text.ends_with(char::is_whitespace);
    let mut shape = Shape {
        role,
        tool_uses: Vec::new(),
        tool_results: Vec::new(),
        first_block_type: None,
    };
    match obj.get("content") {
        None => {
            return Err(ApiError::invalid(format!(
                "messages.{i}.content: Field required"
            )));
        }
        Some(Value::String(text)) => {
            if text.is_empty() && !final_assistant {
                return Err(empty());
            }
            if trailing_whitespace(text) {
                return Err(ApiError::invalid(
                    "final assistant content cannot end with trailing whitespace",
                ));
            }
            shape.first_block_type = Some("text".into());
        }
        Some(Value::Array(blocks)) => {
            if blocks.is_empty() && !final_assistant {
                return Err(empty());
            }
            for (j, block) in blocks.iter().enumerate() {
                let kind = check_block(i, j, block, role, &mut shape, seen_tool_use_ids)?;
                if j == 0 {
                    shape.first_block_type = Some(kind);
                }
            }
            if let Some(text) = blocks
                .last()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .and_then(|b| b.get("text"))
                .and_then(Value::as_str)
                && trailing_whitespace(text)
            {
                return Err(ApiError::invalid(
                    "final assistant content cannot end with trailing whitespace",
                ));
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "messages.{i}.content: Input should be a valid string or a valid list"
            )));
        }
    }
    Ok(shape)
}

/// Checks one content block and returns its type.
fn check_block(
    i: usize,
    j: usize,
    block: &Value,
    role: Role,
    shape: &mut Shape,
    seen_tool_use_ids: &mut HashSet<String>,
) -> Check<String> {
    let path = format!("messages.{i}.content.{j}");
    let obj = block
        .as_object()
        .ok_or_else(|| ApiError::invalid(format!("{path}: Input should be a valid dictionary")))?;
    let kind = match obj.get("type") {
        None => return Err(ApiError::invalid(format!("{path}.type: Field required"))),
        Some(Value::String(t)) => t.as_str(),
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "{path}.type: Input should be a valid string"
            )));
        }
    };
    let only_in = |wanted: Role| {
        if role == wanted {
            Ok(())
        } else {
            let (block_role, other) = match wanted {
                Role::User => ("user", "assistant"),
                Role::Assistant => ("assistant", "user"),
            };
            Err(ApiError::invalid(format!(
                "{path}: `{kind}` blocks can only be in `{block_role}` messages, not in \
                 `{other}` messages"
            )))
        }
    };
    let string_field = |field: &str| -> Check<&str> {
        match obj.get(field) {
            None => Err(ApiError::invalid(format!(
                "{path}.{kind}.{field}: Field required"
            ))),
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(_) => Err(ApiError::invalid(format!(
                "{path}.{kind}.{field}: Input should be a valid string"
            ))),
        }
    };
    let extra_path = format!("{path}.{kind}.");
    match kind {
        "text" => check_text_block(&extra_path, obj)?,
        "image" | "document" => {
            reject_extra(
                &extra_path,
                obj,
                &[
                    "type",
                    "source",
                    "cache_control",
                    "citations",
                    "context",
                    "title",
                    "transformations",
                ],
            )?;
            only_in(Role::User)?;
            media::check_source(&path, kind, obj)?;
        }
        "search_result" => {}
        "tool_use" => {
            only_in(Role::Assistant)?;
            reject_extra(
                &extra_path,
                obj,
                &[
                    "type",
                    "id",
                    "name",
                    "input",
                    "cache_control",
                    "caller",
                    "toolset_name",
                ],
            )?;
            let id = string_field("id")?;
            if !TOOL_USE_ID.is_match(id) {
                return Err(ApiError::invalid(format!(
                    "{path}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                )));
            }
            string_field("name")?;
            if !obj.get("input").is_some_and(Value::is_object) {
                return Err(ApiError::invalid(format!(
                    "{path}.tool_use.input: Input should be a valid dictionary"
                )));
            }
            if !seen_tool_use_ids.insert(id.to_owned()) {
                return Err(ApiError::invalid(format!(
                    "{path}: `tool_use` ids must be unique"
                )));
            }
            shape.tool_uses.push(id.to_owned());
        }
        "tool_result" => {
            only_in(Role::User)?;
            reject_extra(
                &extra_path,
                obj,
                &[
                    "type",
                    "tool_use_id",
                    "content",
                    "is_error",
                    "cache_control",
                    "toolset_name",
                ],
            )?;
            let id = string_field("tool_use_id")?;
            check_tool_result_content(&path, obj.get("content"))?;
            if let Some(flag) = obj.get("is_error")
                && !flag.is_boolean()
            {
                return Err(ApiError::invalid(format!(
                    "{path}.tool_result.is_error: Input should be a valid boolean"
                )));
            }
            shape.tool_results.push((j, id.to_owned()));
        }
        "thinking" => {
            only_in(Role::Assistant)?;
            reject_extra(&extra_path, obj, &["type", "thinking", "signature"])?;
            let thinking = string_field("thinking")?;
            let signature = string_field("signature")?;
            if signature != thinking_signature(thinking) {
                return Err(ApiError::invalid(format!(
                    "{path}: Invalid `signature` in `thinking` block"
                )));
            }
        }
        "redacted_thinking" => {
            only_in(Role::Assistant)?;
            reject_extra(&extra_path, obj, &["type", "data"])?;
            string_field("data")?;
        }
        other if SERVER_BLOCK_TYPES.contains(&other) => {}
        other => {
            return Err(ApiError::invalid(format!(
                "{path}.type: Input tag '{other}' found using 'type' does not match any of \
                 the expected tags: {BLOCK_TYPES}"
            )));
        }
    }
    Ok(kind.to_owned())
}

fn check_tool_result_content(path: &str, content: Option<&Value>) -> Check {
    match content {
        None | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(blocks)) => {
            for (k, block) in blocks.iter().enumerate() {
                let inner = format!("{path}.tool_result.content.{k}");
                let obj = block.as_object().ok_or_else(|| {
                    ApiError::invalid(format!("{inner}: Input should be a valid dictionary"))
                })?;
                match obj.get("type").and_then(Value::as_str) {
                    Some("text") => check_text_block(&format!("{inner}.text."), obj)?,
                    Some(kind @ ("image" | "document")) => {
                        media::check_source(&inner, kind, obj)?;
                    }
                    Some("search_result") => {}
                    _ => {
                        return Err(ApiError::invalid(format!(
                            "{inner}.type: Input tag found using 'type' does not match any \
                             of the expected tags: 'text', 'image', 'document', 'search_result'"
                        )));
                    }
                }
            }
            Ok(())
        }
        Some(_) => Err(ApiError::invalid(format!(
            "{path}.tool_result.content: Input should be a valid string or a valid list"
        ))),
    }
}

/// The last user message's text, or failing that its tool results' text.
fn last_user_text(messages: &[Value]) -> String {
    let Some(message) = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    else {
        return String::new();
    };
    let blocks = match message.get("content") {
        Some(Value::String(s)) => return s.clone(),
        Some(Value::Array(blocks)) => blocks,
        _ => return String::new(),
    };
    let texts = |wanted: &str| -> Vec<String> {
        blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some(wanted))
            .flat_map(|b| match (wanted, b.get("text"), b.get("content")) {
                ("text", Some(Value::String(t)), _) => vec![t.clone()],
                ("tool_result", _, Some(Value::String(t))) => vec![t.clone()],
                ("tool_result", _, Some(Value::Array(inner))) => inner
                    .iter()
                    .filter_map(|i| i.get("text").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect(),
                _ => Vec::new(),
            })
            .collect()
    };
    let text = texts("text");
    if text.is_empty() {
        texts("tool_result").join("\n")
    } else {
        text.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message_of(body: Value) -> String {
        match check_request(&body, &[]) {
            Ok(_) => String::from("<accepted>"),
            Err(e) => e.message,
        }
    }

    fn base() -> Value {
        json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
    }

    #[test]
    fn accepts_a_minimal_request() {
        let checked = check_request(&base(), &[]).expect("valid");
        assert_eq!(checked.model, "m");
        assert_eq!(checked.last_user_text, "hi");
        assert!(checked.prompt.total_tokens() >= 1);
        assert!(!checked.stream);
    }

    #[test]
    fn max_tokens_must_be_an_integer() {
        let mut body = base();
        body["max_tokens"] = json!(5.5);
        assert_eq!(
            message_of(body),
            "max_tokens: Input should be a valid integer"
        );
        let mut body = base();
        body["max_tokens"] = json!(-3);
        assert_eq!(
            message_of(body),
            "max_tokens: Input should be greater than or equal to 1"
        );
    }

    #[test]
    fn thinking_needs_its_block_in_the_tool_loop() {
        let mut body = base();
        body["max_tokens"] = json!(4096);
        body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
        body["messages"] = json!([
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "x", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]},
        ]);
        assert!(
            message_of(body.clone()).starts_with(
                "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`"
            )
        );
        body["messages"][1]["content"] = json!([
            {"type": "thinking", "thinking": "hm", "signature": thinking_signature("hm")},
            {"type": "tool_use", "id": "toolu_1", "name": "x", "input": {}},
        ]);
        assert_eq!(message_of(body), "<accepted>");
    }

    #[test]
    fn models_before_sonnet_4_5_reject_overlong_max_tokens() {
        for model in [
            "claude-3-7-sonnet-20250219",
            "claude-sonnet-4-20250514",
            "claude-sonnet-4-0",
            "claude-opus-4",
            "claude-opus-4-1-20250805",
        ] {
            assert!(rejects_overlong_max_tokens(model), "{model}");
        }
        for model in [
            "claude-sonnet-4-5-20250929",
            "claude-sonnet-4-6",
            "claude-opus-4-5",
            "claude-haiku-4-5",
            "claude-test",
        ] {
            assert!(!rejects_overlong_max_tokens(model), "{model}");
        }
    }

    #[test]
    fn echo_falls_back_to_tool_results() {
        let messages = vec![json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "a", "content": [{"type": "text", "text": "out"}]}
        ]})];
        assert_eq!(last_user_text(&messages), "out");
    }
}
