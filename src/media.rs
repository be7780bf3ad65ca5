//! Images and PDFs the model can be shown: what a file's bytes are (by
//! their magic numbers, never by a name or a claim), and images scaled down
//! to what the Messages API takes.

use std::io::Cursor;

/// The media types the Messages API takes in image and document blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    Png,
    Jpeg,
    Gif,
    Webp,
    Pdf,
}

/// The longest side, in pixels, of an image the API takes.
pub const MAX_IMAGE_SIDE: u32 = 8_000;

/// The largest image the API takes, decoded: 5 MiB of base64.
pub const MAX_API_IMAGE_BYTES: usize = 5 * 1024 * 1024 / 4 * 3;

impl MediaType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Gif => "image/gif",
            Self::Webp => "image/webp",
            Self::Pdf => "application/pdf",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [Self::Png, Self::Jpeg, Self::Gif, Self::Webp, Self::Pdf]
            .into_iter()
            .find(|m| m.as_str() == name)
    }

    pub fn is_image(self) -> bool {
        self != Self::Pdf
    }

    /// What `bytes` are, from their first bytes.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            Some(Self::Jpeg)
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            Some(Self::Gif)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Self::Webp)
        } else if bytes.starts_with(b"%PDF-") {
            Some(Self::Pdf)
        } else {
            None
        }
    }

    fn format(self) -> Option<image::ImageFormat> {
        match self {
            Self::Png => Some(image::ImageFormat::Png),
            Self::Jpeg => Some(image::ImageFormat::Jpeg),
            Self::Gif => Some(image::ImageFormat::Gif),
            Self::Webp => Some(image::ImageFormat::WebP),
            Self::Pdf => None,
        }
    }
}

/// An image's width and height from its header, without decoding it.
pub fn image_dimensions(bytes: &[u8], media: MediaType) -> Option<(u32, u32)> {
    let mut reader = image::ImageReader::new(Cursor::new(bytes));
    reader.set_format(media.format()?);
    reader.into_dimensions().ok()
}

/// An image ready for the model.
#[derive(Debug)]
pub struct FittedImage {
    pub bytes: Vec<u8>,
    pub media: MediaType,
    /// The original size, and the size sent when it was scaled down.
    pub original: (u32, u32),
    pub sent: (u32, u32),
}

/// `bytes` as they are when they fit in `max_bytes` and `max_side`, else
/// decoded, scaled down (aspect kept) and encoded again: PNG when the image
/// has transparency, JPEG otherwise. An animated GIF keeps its first frame.
pub fn fit_image(
    bytes: &[u8],
    media: MediaType,
    max_bytes: usize,
    max_side: u32,
) -> Result<FittedImage, String> {
    let format = media.format().ok_or_else(|| "not an image".to_owned())?;
    let original = image_dimensions(bytes, media)
        .ok_or_else(|| format!("the file is not a readable {}", media.as_str()))?;
    if bytes.len() <= max_bytes && original.0.max(original.1) <= max_side {
        return Ok(FittedImage {
            bytes: bytes.to_vec(),
            media,
            original,
            sent: original,
        });
    }
    let decoded = image::load_from_memory_with_format(bytes, format)
        .map_err(|e| format!("the image cannot be decoded: {e}"))?;
    let alpha = decoded.color().has_alpha();
    let mut side = max_side.min(original.0.max(original.1));
    for _ in 0..6 {
        let scaled = decoded.resize(side, side, image::imageops::FilterType::Triangle);
        let mut out = Cursor::new(Vec::new());
        let (encoded, media) = if alpha {
            (
                scaled.write_to(&mut out, image::ImageFormat::Png),
                MediaType::Png,
            )
        } else {
            let rgb = image::DynamicImage::ImageRgb8(scaled.to_rgb8());
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
            (rgb.write_with_encoder(encoder), MediaType::Jpeg)
        };
        encoded.map_err(|e| format!("the image cannot be encoded again: {e}"))?;
        let bytes = out.into_inner();
        if bytes.len() <= max_bytes {
            return Ok(FittedImage {
                bytes,
                media,
                original,
                sent: (scaled.width(), scaled.height()),
            });
        }
        side = side * 3 / 4;
    }
    Err(format!(
        "the image stays over {max_bytes} bytes even scaled down"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8])
        });
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn magic_numbers_decide_the_type() {
        assert_eq!(MediaType::sniff(&png(2, 2)), Some(MediaType::Png));
        assert_eq!(MediaType::sniff(b"%PDF-1.4\n"), Some(MediaType::Pdf));
        assert_eq!(MediaType::sniff(b"GIF89a...."), Some(MediaType::Gif));
        assert_eq!(
            MediaType::sniff(b"RIFF\0\0\0\0WEBPVP8 "),
            Some(MediaType::Webp)
        );
        assert_eq!(
            MediaType::sniff(&[0xff, 0xd8, 0xff, 0xe0]),
            Some(MediaType::Jpeg)
        );
        assert_eq!(MediaType::sniff(b"hello"), None);
        assert_eq!(MediaType::parse("image/webp"), Some(MediaType::Webp));
        assert_eq!(MediaType::parse("image/bmp"), None);
    }

    #[test]
    fn small_images_pass_unchanged_and_large_ones_are_scaled_down() {
        let small = png(40, 20);
        let fitted = fit_image(&small, MediaType::Png, 1 << 20, 2000).unwrap();
        assert_eq!(fitted.bytes, small);
        assert_eq!(fitted.sent, (40, 20));

        let wide = png(3000, 600);
        let fitted = fit_image(&wide, MediaType::Png, 1 << 22, 1000).unwrap();
        assert_eq!(fitted.original, (3000, 600));
        assert_eq!(fitted.sent, (1000, 200));
        assert_eq!(fitted.media, MediaType::Jpeg);
        assert_eq!(MediaType::sniff(&fitted.bytes), Some(MediaType::Jpeg));
    }
}
