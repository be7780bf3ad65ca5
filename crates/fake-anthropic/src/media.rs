//! Image and document blocks, checked as the real API checks them (source
//! type, media type, base64, the bytes matching the media type, size and
//! page limits), and counted in tokens as it counts them rather than by
//! the length of their base64.

use base64::Engine;
use serde_json::{Map, Value};

use crate::validate::ApiError;

/// The largest image the API takes, as base64 characters.
pub const MAX_IMAGE_BASE64_BYTES: usize = 5 * 1024 * 1024;
/// Most pages of one PDF.
pub const MAX_PDF_PAGES: u64 = 100;
/// Most images in one request.
pub const MAX_IMAGES: usize = 100;
/// Tokens one image counts for (the API scales larger ones to about this).
pub const IMAGE_TOKENS: u64 = 1_600;
/// Tokens one PDF page counts for (its text and an image of it).
pub const PDF_PAGE_TOKENS: u64 = 2_000;

const IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// Checks the `source` of the image or document block at `path` (`kind`
/// is `image` or `document`).
pub(crate) fn check_source(
    path: &str,
    kind: &str,
    obj: &Map<String, Value>,
) -> Result<(), ApiError> {
    let source = match obj.get("source") {
        Some(Value::Object(source)) => source,
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "{path}.{kind}.source: Input should be a valid dictionary"
            )));
        }
        None => {
            return Err(ApiError::invalid(format!(
                "{path}.{kind}.source: Field required"
            )));
        }
    };
    let source_type = source.get("type").and_then(Value::as_str).unwrap_or("");
    let allowed: &[&str] = if kind == "image" {
        &["base64", "url", "file"]
    } else {
        &["base64", "text", "content", "url", "file"]
    };
    if !allowed.contains(&source_type) {
        let tags = allowed
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ApiError::invalid(format!(
            "{path}.{kind}.source: Input tag '{source_type}' found using 'type' does not match \
             any of the expected tags: {tags}"
        )));
    }
    if source_type != "base64" {
        return Ok(());
    }
    let at = format!("{path}.{kind}.source.base64");
    for field in source.keys() {
        if !matches!(field.as_str(), "type" | "media_type" | "data") {
            return Err(ApiError::invalid(format!(
                "{at}.{field}: Extra inputs are not permitted"
            )));
        }
    }
    let media_type = match source.get("media_type") {
        Some(Value::String(m)) => m.as_str(),
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "{at}.media_type: Input should be a valid string"
            )));
        }
        None => {
            return Err(ApiError::invalid(format!(
                "{at}.media_type: Field required"
            )));
        }
    };
    let data = match source.get("data") {
        Some(Value::String(d)) => d.as_str(),
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "{at}.data: Input should be a valid string"
            )));
        }
        None => return Err(ApiError::invalid(format!("{at}.data: Field required"))),
    };
    if kind == "image" {
        if !IMAGE_TYPES.contains(&media_type) {
            return Err(ApiError::invalid(format!(
                "{at}.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or \
                 'image/webp'"
            )));
        }
        if data.len() > MAX_IMAGE_BASE64_BYTES {
            return Err(ApiError::invalid(format!(
                "{at}: image exceeds 5 MB maximum: {} bytes > {MAX_IMAGE_BASE64_BYTES} bytes",
                data.len()
            )));
        }
    } else if media_type != "application/pdf" {
        return Err(ApiError::invalid(format!(
            "{at}.media_type: Input should be 'application/pdf'"
        )));
    }
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else {
        return Err(ApiError::invalid(format!("{at}.data: invalid base64 data")));
    };
    if kind == "image" {
        match sniff(&bytes) {
            Some(actual) if actual == media_type => {}
            _ => {
                return Err(ApiError::invalid(format!(
                    "{at}.data: Image does not match the provided media type {media_type}"
                )));
            }
        }
    } else {
        // A PDF starts with its header and ends with an end-of-file marker.
        let tail = &bytes[bytes.len().saturating_sub(1024)..];
        if !bytes.starts_with(b"%PDF-") || !tail.windows(5).any(|w| w == b"%%EOF") {
            return Err(ApiError::invalid(format!(
                "{at}: The PDF specified was not valid."
            )));
        }
        if count_pdf_pages(&bytes) > MAX_PDF_PAGES {
            return Err(ApiError::invalid(format!(
                "{at}: A maximum of {MAX_PDF_PAGES} PDF pages may be provided."
            )));
        }
    }
    Ok(())
}

/// The image media type the bytes are, from their magic numbers.
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// Page objects in a PDF: `/Type` then `/Page` that is not `/Pages`.
fn count_pdf_pages(bytes: &[u8]) -> u64 {
    let mut pages = 0;
    let mut rest = bytes;
    while let Some(at) = rest.windows(5).position(|w| w == b"/Type") {
        rest = &rest[at + 5..];
        let start = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let after = &rest[start..];
        if after.starts_with(b"/Page") && !after.get(5).is_some_and(|b| b.is_ascii_alphanumeric()) {
            pages += 1;
        }
    }
    pages
}

/// The base64 characters inside `value`'s image and document blocks, and
/// the tokens they count for instead.
pub(crate) fn media_tokens(value: &Value) -> (usize, u64) {
    let sum = |items: &mut dyn Iterator<Item = &Value>| {
        items
            .map(media_tokens)
            .fold((0, 0), |(c, t), (c2, t2)| (c + c2, t + t2))
    };
    match value {
        Value::Array(items) => sum(&mut items.iter()),
        Value::Object(fields) => {
            let data = fields
                .get("source")
                .filter(|s| s["type"] == "base64")
                .and_then(|s| s["data"].as_str());
            match (fields.get("type").and_then(Value::as_str), data) {
                (Some("image"), Some(data)) => (data.len(), IMAGE_TOKENS),
                (Some("document"), Some(data)) => {
                    let pages = base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .map_or(1, |b| count_pdf_pages(&b).max(1));
                    (data.len(), pages * PDF_PAGE_TOKENS)
                }
                _ => sum(&mut fields.values()),
            }
        }
        _ => (0, 0),
    }
}

/// Images in a request's messages: image blocks and images inside tool
/// results.
pub(crate) fn count_images(messages: &[Value]) -> usize {
    let blocks = messages
        .iter()
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten();
    let mut images = 0;
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("image") => images += 1,
            Some("tool_result") => {
                images += block
                    .get("content")
                    .and_then(Value::as_array)
                    .map_or(0, |inner| {
                        inner.iter().filter(|b| b["type"] == "image").count()
                    });
            }
            _ => {}
        }
    }
    images
}
