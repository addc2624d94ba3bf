//! The thumbnail hot path: bytes of an original in, bytes of a thumbnail of
//! at most `max_size`×`max_size` out. Content decides the decoder (not the
//! extension); declared size is checked before any pixel is decoded;
//! thumbnails are sRGB.

use thiserror::Error;

use crate::exif::{self, ExifInfo};
use crate::pixels::fit_within;
use crate::{color, jpeg, png};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ThumbnailError {
    #[error("the file is empty (0 bytes)")]
    Empty,
    #[error("not a JPEG or PNG image (content starts with {0})")]
    UnknownFormat(String),
    #[error("the image declares {width}×{height} pixels ({} MP), over the limit of {} MP", megapixels(u64::from(*width) * u64::from(*height)), megapixels(*limit))]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("decoding would need about {} MiB, over the limit of {} MiB", needed / (1 << 20), limit / (1 << 20))]
    TooMuchMemory { needed: u64, limit: u64 },
    #[error("the {format} data is truncated")]
    Truncated { format: &'static str },
    #[error("corrupt {format}: {detail}")]
    Corrupt { format: &'static str, detail: String },
    #[error("encoding the thumbnail failed: {0}")]
    Encode(String),
}

impl ThumbnailError {
    /// What the image's owner is told (no limits, no decoder messages).
    pub fn public(&self) -> &'static str {
        match self {
            Self::Empty | Self::UnknownFormat(_) => "the file is not a JPEG or PNG image",
            Self::TooManyPixels { .. } | Self::TooMuchMemory { .. } => "the image is too large to process",
            Self::Truncated { .. } | Self::Corrupt { .. } => "the image file is damaged",
            Self::Encode(_) => "the image could not be thumbnailed",
        }
    }
}

fn megapixels(pixels: u64) -> String {
    format!("{:.1}", pixels as f64 / 1e6)
}

/// What one image may cost to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest declared width × height accepted.
    pub max_pixels: u64,
    /// Largest estimated decoder memory for one image, in bytes.
    pub max_decode_memory: u64,
}

impl Limits {
    pub fn check_pixels(&self, width: u32, height: u32) -> Result<(), ThumbnailError> {
        if u64::from(width) * u64::from(height) > self.max_pixels {
            return Err(ThumbnailError::TooManyPixels { width, height, limit: self.max_pixels });
        }
        Ok(())
    }

    pub fn check_memory(&self, needed: u64) -> Result<(), ThumbnailError> {
        if needed > self.max_decode_memory {
            return Err(ThumbnailError::TooMuchMemory { needed, limit: self.max_decode_memory });
        }
        Ok(())
    }
}

/// How thumbnails are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThumbnailSpec {
    /// Longest side of a thumbnail, in pixels.
    pub max_size: u32,
    /// JPEG quality, 1–100.
    pub jpeg_quality: u8,
    pub limits: Limits,
}

/// The format a thumbnail is written in: the one its key's extension names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Jpeg,
    Png,
}

impl OutputFormat {
    /// `png` for `.png` keys, JPEG for the rest of the accepted extensions.
    pub fn for_extension(extension: &str) -> Self {
        if extension.eq_ignore_ascii_case("png") { Self::Png } else { Self::Jpeg }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub format: OutputFormat,
    pub width: u32,
    pub height: u32,
    /// The original's format, from its content.
    pub source_format: &'static str,
    /// The original's size as displayed (after EXIF orientation).
    pub original_width: u32,
    pub original_height: u32,
    pub exif: ExifInfo,
}

const JPEG_MAGIC: &[u8] = &[0xFF, 0xD8, 0xFF];
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Makes one thumbnail. Pure and deterministic: the same bytes and spec
/// give the same thumbnail.
pub fn make_thumbnail(bytes: &[u8], output: OutputFormat, spec: &ThumbnailSpec) -> Result<Thumbnail, ThumbnailError> {
    if bytes.is_empty() {
        return Err(ThumbnailError::Empty);
    }
    let (pixels, source_format, width, height, exif, icc) = if bytes.starts_with(JPEG_MAGIC) {
        let header = jpeg::read_header(bytes)?;
        spec.limits.check_pixels(header.width, header.height)?;
        let exif = header.exif.map(exif::parse).unwrap_or(ExifInfo { orientation: 1, ..ExifInfo::default() });
        let scale = header.scale_for(fit_within(header.width, header.height, spec.max_size));
        spec.limits.check_memory(header.decode_memory(scale))?;
        let pixels = jpeg::decode(bytes, &header, scale)?;
        (pixels, "jpeg", header.width, header.height, exif, header.icc)
    } else if bytes.starts_with(PNG_MAGIC) {
        let max = spec.max_size;
        let decoded = png::decode(bytes, &spec.limits, |w, h| {
            let (tw, th) = fit_within(w, h, max);
            (w / tw).min(h / th)
        })?;
        let exif =
            decoded.exif.as_deref().map(exif::parse).unwrap_or(ExifInfo { orientation: 1, ..ExifInfo::default() });
        (decoded.pixels, "png", decoded.width, decoded.height, exif, decoded.icc)
    } else {
        return Err(ThumbnailError::UnknownFormat(describe_start(bytes)));
    };

    let (tw, th) = fit_within(width, height, spec.max_size);
    let mut pixels = pixels.resize(tw, th).map_err(ThumbnailError::Encode)?;
    // On the thumbnail rather than the original: all but the same result, for
    // a fraction of the pixels.
    if let Some(icc) = &icc {
        color::to_srgb(&mut pixels, icc);
    }
    let pixels = pixels.orient(exif.orientation);
    let (original_width, original_height) = if exif.orientation >= 5 { (height, width) } else { (width, height) };
    let (width, height) = (pixels.width, pixels.height);
    let bytes = match output {
        OutputFormat::Jpeg => jpeg::encode(&pixels.flatten(), spec.jpeg_quality)?,
        OutputFormat::Png => png::encode(&pixels)?,
    };
    Ok(Thumbnail { bytes, format: output, width, height, source_format, original_width, original_height, exif })
}

/// A readable hint of what a non-image file is.
fn describe_start(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(16)];
    if head.iter().all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace()) {
        format!("text {:?}", String::from_utf8_lossy(head))
    } else {
        let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("bytes {}", hex.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_content_is_described() {
        let spec = ThumbnailSpec {
            max_size: 800,
            jpeg_quality: 85,
            limits: Limits { max_pixels: 1 << 30, max_decode_memory: 1 << 30 },
        };
        assert_eq!(make_thumbnail(b"", OutputFormat::Jpeg, &spec), Err(ThumbnailError::Empty));
        let text = make_thumbnail(b"hello, world\n", OutputFormat::Jpeg, &spec).unwrap_err();
        assert_eq!(text.to_string(), "not a JPEG or PNG image (content starts with text \"hello, world\\n\")");
        let gif = make_thumbnail(b"GIF89a\x01\x00\x01\x00\x80\x00", OutputFormat::Jpeg, &spec).unwrap_err();
        assert!(gif.to_string().contains("bytes 47 49 46 38 39 61 01 00"), "{gif}");
    }

    #[test]
    fn limit_errors_read_well() {
        let e = ThumbnailError::TooManyPixels { width: 20000, height: 20000, limit: 100_000_000 };
        assert_eq!(e.to_string(), "the image declares 20000×20000 pixels (400.0 MP), over the limit of 100.0 MP");
    }
}
