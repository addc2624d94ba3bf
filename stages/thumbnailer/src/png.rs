//! PNG: header checks before decoding, streaming decode with box reduction
//! (so memory follows the thumbnail's size, not the original's), and encoding.

use std::io::Cursor;

use png::{BitDepth, ColorType, Transformations};

use crate::pixels::{BoxReducer, Pixels};
use crate::resize::{Limits, ThumbnailError};

fn corrupt(e: impl std::fmt::Display) -> ThumbnailError {
    ThumbnailError::Corrupt { format: "PNG", detail: e.to_string() }
}

fn decoding_error(e: png::DecodingError) -> ThumbnailError {
    match e {
        png::DecodingError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ThumbnailError::Truncated { format: "PNG" }
        }
        png::DecodingError::LimitsExceeded => ThumbnailError::Corrupt {
            format: "PNG",
            detail: "decoder memory limit exceeded (oversized metadata chunks?)".to_owned(),
        },
        other => corrupt(other),
    }
}

/// A decoded PNG, reduced by a whole factor on the way in.
#[derive(Debug)]
pub struct DecodedPng {
    pub pixels: Pixels,
    /// Size before reduction.
    pub width: u32,
    pub height: u32,
    pub exif: Option<Vec<u8>>,
    /// The embedded ICC profile (`iCCP`).
    pub icc: Option<Vec<u8>>,
}

/// Decodes a PNG, averaging `factor`×`factor` blocks as rows arrive, where
/// `factor_for` picks the factor from the declared size. Palette, grey,
/// 16-bit and transparency-chunk images all come out as 8-bit grey, RGB or
/// RGBA.
pub fn decode(
    bytes: &[u8],
    limits: &Limits,
    factor_for: impl Fn(u32, u32) -> u32,
) -> Result<DecodedPng, ThumbnailError> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(Transformations::normalize_to_color8());
    // Bounds what the decoder itself allocates (metadata chunks, row buffers).
    decoder.set_limits(png::Limits { bytes: usize::try_from(limits.max_decode_memory).unwrap_or(usize::MAX) });
    let mut reader = decoder.read_info().map_err(decoding_error)?;
    let (width, height, interlaced) = {
        let info = reader.info();
        (info.width, info.height, info.interlaced)
    };
    limits.check_pixels(width, height)?;
    let exif = reader.info().exif_metadata.as_ref().map(|e| e.to_vec());
    let icc = reader.info().icc_profile.as_ref().map(|p| p.to_vec());
    let (color, depth) = reader.output_color_type();
    if depth != BitDepth::Eight {
        return Err(corrupt(format!("unexpected output bit depth {depth:?}")));
    }
    let in_channels = color.samples();
    // Grey with alpha is widened to RGBA: the resizer and encoders take 1, 3 or 4 channels.
    let channels: u8 = match color {
        ColorType::Grayscale => 1,
        ColorType::Rgb => 3,
        ColorType::GrayscaleAlpha | ColorType::Rgba => 4,
        ColorType::Indexed => return Err(corrupt("palette not expanded")),
    };
    let factor = factor_for(width, height).max(1);
    let out_w = u64::from(width.div_ceil(factor));
    let out_h = u64::from(BoxReducer::out_height(height, factor));
    // Interlaced images arrive in seven passes, so they are decoded whole first.
    let whole = if interlaced { u64::from(width) * u64::from(height) * in_channels as u64 } else { 0 };
    limits.check_memory(whole + out_w * out_h * u64::from(channels) + out_w * u64::from(channels) * 4)?;

    let mut reducer = BoxReducer::new(width, channels, factor);
    let mut widen = Vec::new();
    let mut push = |row: &[u8]| {
        if color == ColorType::GrayscaleAlpha {
            widen.clear();
            widen.extend(row.chunks_exact(2).flat_map(|ga| [ga[0], ga[0], ga[0], ga[1]]));
            reducer.push_row(&widen);
        } else {
            reducer.push_row(row);
        }
    };
    if interlaced {
        let mut frame = vec![0u8; reader.output_buffer_size().ok_or_else(|| corrupt("image too large"))?];
        let info = reader.next_frame(&mut frame).map_err(decoding_error)?;
        frame.chunks_exact(info.line_size).take(height as usize).for_each(&mut push);
    } else {
        let mut rows = 0;
        while let Some(row) = reader.next_row().map_err(decoding_error)? {
            push(row.data());
            rows += 1;
        }
        if rows != height {
            return Err(ThumbnailError::Truncated { format: "PNG" });
        }
    }
    reader.finish().map_err(decoding_error)?;
    Ok(DecodedPng { pixels: reducer.finish(), width, height, exif, icc })
}

/// Encodes as an 8-bit PNG with fast compression and adaptive filtering.
pub fn encode(pixels: &Pixels) -> Result<Vec<u8>, ThumbnailError> {
    let encode_error = |e: png::EncodingError| ThumbnailError::Encode(e.to_string());
    let mut out = Vec::with_capacity(pixels.data.len() / 2);
    let mut encoder = png::Encoder::new(&mut out, pixels.width, pixels.height);
    encoder.set_color(match pixels.channels {
        1 => ColorType::Grayscale,
        3 => ColorType::Rgb,
        _ => ColorType::Rgba,
    });
    encoder.set_depth(BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().map_err(encode_error)?;
    writer.write_image_data(&pixels.data).map_err(encode_error)?;
    writer.finish().map_err(encode_error)?;
    Ok(out)
}
