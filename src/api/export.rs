//! `GET /api/v1/sessions/{id}/export`: a session's conversation as a file to
//! download, readable Markdown or the stored messages as JSON.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::sessions::{MessageResponse, SessionResponse};
use super::{ApiQuery, AppState, SessionPath};
use crate::agent::context::{MARKER_BLOCK, MARKER_ROLE};
use crate::error::{ApiError, ErrorBody};
use crate::store::{Session, StoredMessage};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/sessions/{session_id}/export", get(export_session))
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// The conversation as a person reads it: user and assistant turns,
    /// tool calls and results as code blocks.
    #[default]
    Markdown,
    /// The session and every stored message, as the API returns them.
    Json,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `markdown` (default) or `json`.
    #[param(value_type = Option<String>, example = "markdown")]
    pub format: Option<ExportFormat>,
}

/// The JSON export: the session and its whole conversation.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionExport {
    pub session: SessionResponse,
    pub messages: Vec<MessageResponse>,
}

/// Export a session's conversation
///
/// Downloads the whole conversation (`Content-Disposition: attachment`):
/// `format=markdown` (default) for reading, `format=json` for the session
/// and every stored message as the API shows them.
#[utoipa::path(
    get, path = "/api/v1/sessions/{session_id}/export", tag = "sessions",
    params(("session_id" = String, Path, description = "Session UUID"), ExportQuery),
    responses(
        (status = 200, description = "The conversation as Markdown", content_type = "text/markdown", body = String),
        (status = 200, description = "The session and its messages as JSON", content_type = "application/json", body = SessionExport),
        (status = 404, description = "Unknown, deleted or expired session", body = ErrorBody),
        (status = 422, description = "Unknown format", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub async fn export_session(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let session = state
        .store
        .get(id)
        .await?
        .ok_or(ApiError::SessionNotFound)?;
    let messages = state.store.messages(id).await?;
    let format = query.format.unwrap_or_default();
    let (mut response, extension) = match format {
        ExportFormat::Markdown => {
            let text = markdown(&session, &messages);
            let mut response = text.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/markdown; charset=utf-8"),
            );
            (response, "md")
        }
        ExportFormat::Json => {
            let export = SessionExport {
                session: session.into(),
                messages: messages.into_iter().map(Into::into).collect(),
            };
            (Json(export).into_response(), "json")
        }
    };
    let disposition = format!("attachment; filename=\"session-{id}.{extension}\"");
    let value =
        HeaderValue::from_str(&disposition).map_err(|e| ApiError::Internal(e.to_string()))?;
    response
        .headers_mut()
        .insert(header::CONTENT_DISPOSITION, value);
    Ok(response)
}

/// The conversation as Markdown: a heading per message, text as written,
/// tool calls and results as fenced code blocks. Thinking is left out.
pub fn markdown(session: &Session, messages: &[StoredMessage]) -> String {
    let mut out = format!("# Session {}\n\n", session.id);
    out.push_str(&format!("- User: {}\n", session.user_id));
    out.push_str(&format!(
        "- Created: {}\n",
        session
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
    if let Some(model) = &session.options.model {
        out.push_str(&format!("- Model: {model}\n"));
    }
    out.push_str(&format!("- Messages: {}\n", messages.len()));
    for message in messages {
        let blocks: Vec<Value> = match &message.content {
            Value::String(text) => vec![serde_json::json!({"type": "text", "text": text})],
            Value::Array(blocks) => blocks.clone(),
            other => vec![other.clone()],
        };
        let heading = match message.role.as_str() {
            MARKER_ROLE => "Compaction",
            "assistant" => "Assistant",
            _ if blocks.iter().all(|b| b["type"] == "tool_result") => "Tool results",
            _ => "User",
        };
        out.push_str(&format!("\n## {heading}\n"));
        for block in &blocks {
            render_block(&mut out, block);
        }
    }
    out
}

fn render_block(out: &mut String, block: &Value) {
    match block["type"].as_str().unwrap_or("") {
        "text" => {
            let text = block["text"].as_str().unwrap_or("");
            out.push_str(&format!("\n{}\n", text.trim_end()));
        }
        "tool_use" => {
            let name = block["name"].as_str().unwrap_or("tool");
            let input = serde_json::to_string_pretty(&block["input"]).unwrap_or_default();
            out.push_str(&format!(
                "\n**Tool call: {name}**\n\n{}",
                fenced("json", &input)
            ));
        }
        "tool_result" => {
            let label = if block["is_error"] == true {
                "Tool result (error)"
            } else {
                "Tool result"
            };
            out.push_str(&format!(
                "\n**{label}**\n\n{}",
                fenced("", &result_text(&block["content"]))
            ));
        }
        MARKER_BLOCK => match block["summary"].as_str() {
            Some(summary) => out.push_str(&format!(
                "\n_The conversation above was summarised for the model:_\n\n{}\n",
                summary.trim_end()
            )),
            None => out.push_str("\n_The model's context was cleared here._\n"),
        },
        "image" => out.push_str("\n_[image]_\n"),
        "document" => out.push_str("\n_[document]_\n"),
        // Thinking is the model's scratchpad, not part of the conversation.
        _ => {}
    }
}

/// A tool result's content as text: a string, or its text blocks joined.
fn result_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match b["type"].as_str() {
                Some("text") => b["text"].as_str().unwrap_or("").to_owned(),
                Some(other) => format!("[{other}]"),
                None => String::new(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `text` in a code fence longer than any run of backticks inside it.
fn fenced(language: &str, text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    let fence = "`".repeat((longest + 1).max(3));
    format!(
        "{fence}{language}\n{}\n{fence}\n",
        text.trim_end_matches('\n')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_outgrows_the_backticks_it_holds() {
        assert_eq!(fenced("", "ls"), "```\nls\n```\n");
        assert_eq!(fenced("md", "a ```b``` c"), "````md\na ```b``` c\n````\n");
    }
}
