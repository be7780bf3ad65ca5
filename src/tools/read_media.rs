//! Read of images and PDFs: the file goes to the model as an image or
//! document block in the tool result, an image scaled down when it is
//! large, a PDF cut to the pages asked for.

use std::fs::File;
use std::io::Read as _;
use std::path::Path;

use super::ToolOutput;
use crate::agent::wire::ContentBlock;
use crate::media::{FittedImage, MAX_API_IMAGE_BYTES, MediaType, fit_image};

/// Largest image file Read opens (it is scaled down before it is sent).
pub const MAX_IMAGE_FILE_BYTES: u64 = 32 * 1024 * 1024;
/// The longest side of an image sent to the model; the API scales larger
/// ones down to about this anyway, so sending more only costs bandwidth.
pub const MAX_IMAGE_SIDE_SENT: u32 = 1_568;
/// Largest PDF file Read opens.
pub const MAX_PDF_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Largest PDF (or part of one) sent to the model, within the API's 32 MB
/// request limit once base64-encoded.
pub const MAX_PDF_SENT_BYTES: usize = 20 * 1024 * 1024;
/// PDFs longer than this need `pages`.
pub const MAX_PDF_PAGES_WHOLE: u64 = 10;
/// Most pages one Read of a PDF returns.
pub const MAX_PDF_PAGES_PER_READ: u64 = 20;

/// What the file is, from its first bytes: an image or a PDF, or neither.
pub fn media_of(file: &File) -> Option<MediaType> {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 16];
    let n = file.read_at(&mut head, 0).ok()?;
    MediaType::sniff(&head[..n])
}

/// The file (of `len` bytes) as the model's image or document.
pub fn read_media(
    file: File,
    len: u64,
    media: MediaType,
    shown: &str,
    pages: Option<&str>,
) -> ToolOutput {
    let cap = if media.is_image() {
        MAX_IMAGE_FILE_BYTES
    } else {
        MAX_PDF_FILE_BYTES
    };
    if len > cap {
        return ToolOutput::error(format!(
            "{shown} is {len} bytes, over the {cap}-byte limit Read opens for a {}.",
            media.as_str()
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    if let Err(e) = file.take(cap).read_to_end(&mut bytes) {
        return ToolOutput::error(format!("Cannot read {shown}: {e}"));
    }
    if media.is_image() {
        if pages.is_some() {
            return ToolOutput::error("Invalid input: `pages` is only for PDF files");
        }
        image(&bytes, media, shown)
    } else {
        pdf(&bytes, shown, pages)
    }
}

/// `bytes` (an image of type `media`) shown to the model, scaled down when
/// too large, with a line saying what it is; `shown` names where it came from.
pub(crate) fn image(bytes: &[u8], media: MediaType, shown: &str) -> ToolOutput {
    match fit_image(bytes, media, MAX_API_IMAGE_BYTES, MAX_IMAGE_SIDE_SENT) {
        Ok(FittedImage {
            bytes: sent,
            media: sent_media,
            original,
            sent: size,
        }) => {
            let scaled = if size == original {
                String::new()
            } else {
                format!(
                    ", scaled down to {}x{} ({}) for you",
                    size.0,
                    size.1,
                    sent_media.as_str()
                )
            };
            ToolOutput::with_media(
                format!(
                    "Image {shown}: {}, {}x{} pixels, {} bytes{scaled}.",
                    media.as_str(),
                    original.0,
                    original.1,
                    bytes.len()
                ),
                vec![ContentBlock::media(sent_media.as_str(), &sent, None)],
            )
        }
        Err(why) => ToolOutput::error(format!("Cannot show {shown} as an image: {why}.")),
    }
}

/// `first-last` (1-based, inclusive) or a single page.
fn parse_pages(raw: &str) -> Option<(u32, u32)> {
    let raw = raw.trim();
    let (first, last) = match raw.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let page = raw.parse().ok()?;
            (page, page)
        }
    };
    (first >= 1 && last >= first).then_some((first, last))
}

fn pdf(bytes: &[u8], shown: &str, pages: Option<&str>) -> ToolOutput {
    let title = Path::new(shown)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    // One the parser cannot read, the API would refuse too, failing the
    // whole request rather than this call.
    let Ok(mut document) = lopdf::Document::load_mem(bytes) else {
        return ToolOutput::error(format!(
            "{shown} cannot be read as a PDF (damaged, or encrypted with a password). Try \
             Bash, for example `pdftotext {shown} -`, if it is installed."
        ));
    };
    let count = document.get_pages().len() as u64;
    let Some(raw) = pages else {
        if count > MAX_PDF_PAGES_WHOLE {
            return ToolOutput::error(format!(
                "{shown} has {count} pages; read it in parts with `pages` (for example \
                 pages: \"1-{MAX_PDF_PAGES_PER_READ}\"), at most {MAX_PDF_PAGES_PER_READ} pages at a time."
            ));
        }
        if bytes.len() > MAX_PDF_SENT_BYTES {
            return ToolOutput::error(format!(
                "{shown} is {} bytes, over the {MAX_PDF_SENT_BYTES}-byte limit for a PDF sent to \
                 the model; read fewer pages at a time with `pages`.",
                bytes.len()
            ));
        }
        return ToolOutput::with_media(
            format!(
                "PDF {shown}: {count} pages, {} bytes, all shown.",
                bytes.len()
            ),
            vec![ContentBlock::media(MediaType::Pdf.as_str(), bytes, title)],
        );
    };
    let Some((first, last)) = parse_pages(raw) else {
        return ToolOutput::error(format!(
            "Invalid input: `pages` must be a page or a range of pages such as \"3\" or \"1-5\", got \"{raw}\""
        ));
    };
    if u64::from(last - first) + 1 > MAX_PDF_PAGES_PER_READ {
        return ToolOutput::error(format!(
            "Invalid input: `pages` asks for {} pages; read at most {MAX_PDF_PAGES_PER_READ} at a time.",
            last - first + 1
        ));
    }
    if u64::from(first) > count {
        return ToolOutput::error(format!(
            "{shown} has {count} pages; page {first} is past the end."
        ));
    }
    let last = last.min(u32::try_from(count).unwrap_or(u32::MAX));
    let unwanted: Vec<u32> = document
        .get_pages()
        .keys()
        .copied()
        .filter(|p| *p < first || *p > last)
        .collect();
    document.delete_pages(&unwanted);
    document.prune_objects();
    let mut part = Vec::new();
    if let Err(e) = document.save_to(&mut part) {
        return ToolOutput::error(format!("Cannot cut pages out of {shown}: {e}"));
    }
    if part.len() > MAX_PDF_SENT_BYTES {
        return ToolOutput::error(format!(
            "Pages {first}-{last} of {shown} are {} bytes, over the {MAX_PDF_SENT_BYTES}-byte \
             limit for a PDF sent to the model; read fewer pages at a time.",
            part.len()
        ));
    }
    ToolOutput::with_media(
        format!("PDF {shown}: pages {first}-{last} of {count}."),
        vec![ContentBlock::media(MediaType::Pdf.as_str(), &part, title)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_ranges() {
        assert_eq!(parse_pages("3"), Some((3, 3)));
        assert_eq!(parse_pages(" 1 - 5 "), Some((1, 5)));
        assert_eq!(parse_pages("0-2"), None);
        assert_eq!(parse_pages("5-2"), None);
        assert_eq!(parse_pages("a"), None);
    }
}
