//! Images and PDFs sent with a chat message: given inline as base64 or as a
//! path in the session's directory, checked (count, size, what the bytes
//! really are) before anything is stored, and turned into the image and
//! document blocks of the user message.

use base64::Engine;
use serde::Deserialize;
use utoipa::ToSchema;

use super::AppState;
use super::files::{SessionFilePath, file_error};
use crate::agent::wire::ContentBlock;
use crate::domain::SessionId;
use crate::error::ApiError;
use crate::media::{MAX_IMAGE_SIDE, MediaType, image_dimensions};
use crate::workspace::{Access, Workspace};

/// What an attachment is shown to the model as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentKind {
    /// PNG, JPEG, GIF or WebP.
    Image,
    /// PDF.
    Document,
}

/// One image or PDF sent with a message: exactly one of `data` (base64)
/// and `path` (a file in the session's directory). The bytes decide what
/// it is; `media_type`, when given, must agree with them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"type": "image", "media_type": "image/png", "data": "iVBORw0KGgo..."}))]
pub struct Attachment {
    #[serde(rename = "type")]
    pub kind: AttachmentKind,
    /// `image/png`, `image/jpeg`, `image/gif`, `image/webp` or
    /// `application/pdf`; optional, checked against the bytes.
    #[schema(example = "image/png")]
    pub media_type: Option<String>,
    /// The file's bytes, standard base64.
    pub data: Option<String>,
    /// A file in the session's directory, relative to it.
    #[schema(example = "screenshots/login.png")]
    pub path: Option<String>,
    /// A document's title, shown to the model (a path's file name by default).
    pub title: Option<String>,
}

/// The blocks of `attachments`, in order, or the first problem with them.
/// Reads files only when a path is given; nothing is written.
pub async fn resolve(
    state: &AppState,
    session: SessionId,
    attachments: Vec<Attachment>,
) -> Result<Vec<ContentBlock>, ApiError> {
    let api = &state.settings.api;
    if attachments.len() > api.max_attachments {
        return Err(ApiError::validation(
            "attachments",
            format!(
                "at most {} attachments per message (api.max_attachments)",
                api.max_attachments
            ),
        ));
    }
    let needs_files = attachments.iter().any(|a| a.path.is_some());
    let workspace = if needs_files {
        let found = state
            .store
            .get(session)
            .await?
            .ok_or(ApiError::SessionNotFound)?;
        Some(state.agent.workspace(&found).await?)
    } else {
        None
    };
    let limits = Limits {
        image: api.max_image_bytes,
        document: api.max_document_bytes,
    };
    let total_limit = api.max_attachments_bytes;
    tokio::task::spawn_blocking(move || {
        let mut total = 0usize;
        let mut blocks = Vec::with_capacity(attachments.len());
        for (i, attachment) in attachments.into_iter().enumerate() {
            let field = format!("attachments[{i}]");
            let (bytes, title) = attachment_bytes(&field, &attachment, workspace.as_ref(), limits)?;
            total += bytes.len();
            if total > total_limit {
                return Err(ApiError::PartTooLarge(format!(
                    "The attachments of this message are over {total_limit} bytes together (api.max_attachments_bytes); send fewer or smaller files."
                )));
            }
            blocks.push(check(&field, &attachment, &bytes, title)?);
        }
        Ok(blocks)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("attachment task: {e}")))?
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    image: usize,
    document: usize,
}

impl Limits {
    fn of(self, kind: AttachmentKind) -> (usize, &'static str, &'static str) {
        match kind {
            AttachmentKind::Image => (self.image, "image", "api.max_image_bytes"),
            AttachmentKind::Document => (self.document, "PDF", "api.max_document_bytes"),
        }
    }
}

fn too_large(field: &str, kind: AttachmentKind, limits: Limits) -> ApiError {
    let (limit, what, key) = limits.of(kind);
    ApiError::PartTooLarge(format!(
        "{field} is over the {limit}-byte limit for one {what} ({key})."
    ))
}

/// The attachment's bytes (size-checked before they are all read) and the
/// title a path gives a document.
fn attachment_bytes(
    field: &str,
    attachment: &Attachment,
    workspace: Option<&Workspace>,
    limits: Limits,
) -> Result<(Vec<u8>, Option<String>), ApiError> {
    let (limit, _, _) = limits.of(attachment.kind);
    match (&attachment.data, &attachment.path) {
        (Some(data), None) => {
            // Checked on the base64 size first, so an oversized one is not decoded.
            if data.len() / 4 * 3 > limit + 2 {
                return Err(too_large(field, attachment.kind, limits));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| {
                    ApiError::validation(
                        &format!("{field}.data"),
                        format!("is not valid base64: {e}"),
                    )
                })?;
            if bytes.len() > limit {
                return Err(too_large(field, attachment.kind, limits));
            }
            Ok((bytes, None))
        }
        (None, Some(raw)) => {
            let path = SessionFilePath::parse(raw).map_err(|e| match e {
                ApiError::Validation { fields, .. } => ApiError::validation(
                    &format!("{field}.path"),
                    fields
                        .first()
                        .map_or_else(String::new, |f| f.problem.clone()),
                ),
                other => other,
            })?;
            let Some(workspace) = workspace else {
                return Err(ApiError::Internal(
                    "attachment path without a workspace".into(),
                ));
            };
            let opened = workspace
                .open_file(&path.within(workspace), Access::Read)
                .map_err(|e| file_error(&path, e))?;
            if usize::try_from(opened.len).unwrap_or(usize::MAX) > limit {
                return Err(too_large(field, attachment.kind, limits));
            }
            let mut bytes = Vec::with_capacity(usize::try_from(opened.len).unwrap_or(0));
            std::io::Read::read_to_end(
                &mut std::io::Read::take(opened.file, limit as u64 + 1),
                &mut bytes,
            )
            .map_err(|e| ApiError::Internal(format!("reading an attachment: {e}")))?;
            if bytes.len() > limit {
                return Err(too_large(field, attachment.kind, limits));
            }
            let title = std::path::Path::new(raw)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            Ok((bytes, title))
        }
        _ => Err(ApiError::validation(
            field,
            "give exactly one of data (base64) and path (a file in the session's directory)",
        )),
    }
}

/// The block for checked bytes: they must be what the attachment says.
fn check(
    field: &str,
    attachment: &Attachment,
    bytes: &[u8],
    path_title: Option<String>,
) -> Result<ContentBlock, ApiError> {
    let sniffed = MediaType::sniff(bytes).ok_or_else(|| {
        ApiError::validation(
            field,
            "is not a PNG, JPEG, GIF or WebP image nor a PDF (judged by its bytes)",
        )
    })?;
    if let Some(claimed) = &attachment.media_type {
        let Some(claimed) = MediaType::parse(claimed) else {
            return Err(ApiError::validation(
                &format!("{field}.media_type"),
                "must be image/png, image/jpeg, image/gif, image/webp or application/pdf",
            ));
        };
        if claimed != sniffed {
            return Err(ApiError::validation(
                &format!("{field}.media_type"),
                format!(
                    "says {} but the bytes are {}",
                    claimed.as_str(),
                    sniffed.as_str()
                ),
            ));
        }
    }
    match (attachment.kind, sniffed.is_image()) {
        (AttachmentKind::Image, false) => {
            return Err(ApiError::validation(
                &format!("{field}.type"),
                "is image but the bytes are a PDF; send it as a document",
            ));
        }
        (AttachmentKind::Document, true) => {
            return Err(ApiError::validation(
                &format!("{field}.type"),
                format!(
                    "is document but the bytes are {}; send it as an image",
                    sniffed.as_str()
                ),
            ));
        }
        _ => {}
    }
    if sniffed.is_image() {
        match image_dimensions(bytes, sniffed) {
            Some((w, h)) if w.max(h) <= MAX_IMAGE_SIDE && w > 0 && h > 0 => {}
            Some((w, h)) => {
                return Err(ApiError::validation(
                    field,
                    format!(
                        "is {w}x{h} pixels; the model takes images up to {MAX_IMAGE_SIDE} pixels a side"
                    ),
                ));
            }
            None => {
                return Err(ApiError::validation(
                    field,
                    format!("is not a readable {} image", sniffed.as_str()),
                ));
            }
        }
    } else {
        // One the parser cannot read, the model API would refuse too.
        let Ok(document) = lopdf::Document::load_mem(bytes) else {
            return Err(ApiError::validation(
                field,
                "is not a readable PDF (damaged, or encrypted with a password)",
            ));
        };
        if document.get_pages().len() as u64 > MAX_PDF_PAGES {
            return Err(ApiError::validation(
                field,
                format!("has more than {MAX_PDF_PAGES} pages, the most the model takes"),
            ));
        }
    }
    let title = attachment
        .title
        .clone()
        .or(path_title)
        .filter(|_| !sniffed.is_image());
    Ok(ContentBlock::media(sniffed.as_str(), bytes, title))
}

/// Most pages of one PDF the Messages API takes.
pub const MAX_PDF_PAGES: u64 = 100;
