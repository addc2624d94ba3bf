//! JPEG: a marker walk that reads the header and checks the file is whole
//! before anything is decoded, shrink-on-load decoding through libjpeg-turbo
//! (MozJPEG's build, SIMD) with DCT scaling, and encoding.

use std::panic::{AssertUnwindSafe, catch_unwind};

use mozjpeg::{ColorSpace, Compress, Decompress, NO_MARKERS};

use crate::pixels::Pixels;
use crate::resize::ThumbnailError;

/// What the marker walk learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JpegHeader<'a> {
    pub width: u32,
    pub height: u32,
    /// Horizontal and vertical sampling factors of each component.
    pub sampling: Vec<(u8, u8)>,
    pub progressive: bool,
    /// The TIFF block of the first `Exif` APP1 segment.
    pub exif: Option<&'a [u8]>,
    /// Whether an Adobe APP14 segment is present: Adobe writes CMYK inverted.
    pub adobe: bool,
    /// The embedded ICC profile, put together from its APP2 chunks; `None`
    /// when there is none or a chunk is missing.
    pub icc: Option<Vec<u8>>,
}

fn corrupt(detail: impl Into<String>) -> ThumbnailError {
    ThumbnailError::Corrupt { format: "JPEG", detail: detail.into() }
}

/// Walks the markers from SOI to EOI, skipping entropy-coded data, so a
/// truncated file is refused (libjpeg would pad it with grey and succeed).
pub fn read_header(bytes: &[u8]) -> Result<JpegHeader<'_>, ThumbnailError> {
    let mut header: Option<JpegHeader<'_>> = None;
    let (mut exif, mut adobe, mut scans) = (None, false, 0u32);
    let mut icc_chunks: Vec<(u8, u8, &[u8])> = Vec::new();
    let mut i = 2; // after SOI
    loop {
        // Every segment starts with 0xFF, possibly repeated as fill.
        if i >= bytes.len() {
            return Err(ThumbnailError::Truncated { format: "JPEG" });
        }
        if bytes[i] != 0xFF {
            return Err(corrupt(format!("expected a marker at byte {i}")));
        }
        while i + 1 < bytes.len() && bytes[i + 1] == 0xFF {
            i += 1;
        }
        let Some(&marker) = bytes.get(i + 1) else {
            return Err(ThumbnailError::Truncated { format: "JPEG" });
        };
        match marker {
            0xD9 => break,
            0xD0..=0xD7 | 0x01 => {
                i += 2;
                continue;
            }
            0x00 | 0xD8 => return Err(corrupt(format!("unexpected marker 0xFF{marker:02X} at byte {i}"))),
            _ => {}
        }
        let length = match bytes.get(i + 2..i + 4) {
            Some(l) => usize::from(u16::from_be_bytes([l[0], l[1]])),
            None => return Err(ThumbnailError::Truncated { format: "JPEG" }),
        };
        if length < 2 {
            return Err(corrupt(format!("segment length {length} at byte {i}")));
        }
        let Some(payload) = bytes.get(i + 4..i + 2 + length) else {
            return Err(ThumbnailError::Truncated { format: "JPEG" });
        };
        match marker {
            // Start of frame: every SOFn but DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                if header.is_some() {
                    return Err(corrupt("more than one frame header"));
                }
                header = Some(parse_frame(marker, payload)?);
            }
            0xE1 if exif.is_none() && payload.starts_with(b"Exif\0\0") => exif = Some(&payload[6..]),
            0xEE if payload.starts_with(b"Adobe") => adobe = true,
            0xE2 if payload.len() > 14 && payload.starts_with(ICC_CHUNK) => {
                icc_chunks.push((payload[12], payload[13], &payload[14..]));
            }
            _ => {}
        }
        i += 2 + length;
        if marker == 0xDA {
            if header.is_none() {
                return Err(corrupt("scan before frame header"));
            }
            scans += 1;
            i = skip_entropy_coded(bytes, i)?;
        }
    }
    let mut header = header.ok_or_else(|| corrupt("no frame header"))?;
    if scans == 0 {
        return Err(corrupt("no image data"));
    }
    header.exif = exif;
    header.adobe = adobe;
    header.icc = assemble_icc(icc_chunks);
    Ok(header)
}

/// How an APP2 segment holding part of an ICC profile starts.
const ICC_CHUNK: &[u8] = b"ICC_PROFILE\0";

/// Joins the chunks (sequence number from 1, chunk count, data) of an ICC
/// profile in order; `None` unless exactly chunks 1 to count are there.
fn assemble_icc(mut chunks: Vec<(u8, u8, &[u8])>) -> Option<Vec<u8>> {
    chunks.sort_by_key(|&(seq, _, _)| seq);
    let count = chunks.first()?.1;
    let whole = chunks.len() == usize::from(count)
        && chunks.iter().enumerate().all(|(i, &(seq, n, _))| usize::from(seq) == i + 1 && n == count);
    whole.then(|| chunks.iter().flat_map(|&(_, _, data)| data).copied().collect())
}

/// Returns the offset of the marker that ends the entropy-coded data from `i`.
fn skip_entropy_coded(bytes: &[u8], mut i: usize) -> Result<usize, ThumbnailError> {
    loop {
        let Some(ff) = memchr::memchr(0xFF, &bytes[i..]).map(|o| i + o) else {
            return Err(ThumbnailError::Truncated { format: "JPEG" });
        };
        match bytes.get(ff + 1) {
            None => return Err(ThumbnailError::Truncated { format: "JPEG" }),
            // Stuffed zero, restart marker, or fill before a marker: still data.
            Some(0x00 | 0xD0..=0xD7) => i = ff + 2,
            Some(0xFF) => i = ff + 1,
            Some(_) => return Ok(ff),
        }
    }
}

fn parse_frame(marker: u8, p: &[u8]) -> Result<JpegHeader<'static>, ThumbnailError> {
    if p.len() < 6 {
        return Err(corrupt("short frame header"));
    }
    let height = u32::from(u16::from_be_bytes([p[1], p[2]]));
    let width = u32::from(u16::from_be_bytes([p[3], p[4]]));
    let count = usize::from(p[5]);
    if width == 0 || height == 0 {
        return Err(corrupt(format!("frame of {width}×{height} pixels")));
    }
    if !matches!(count, 1 | 3 | 4) || p.len() < 6 + 3 * count {
        return Err(corrupt(format!("{count} colour components")));
    }
    let sampling = p[6..6 + 3 * count].chunks_exact(3).map(|c| (c[1] >> 4, c[1] & 0x0F)).collect::<Vec<_>>();
    if sampling.iter().any(|&(h, v)| !(1..=4).contains(&h) || !(1..=4).contains(&v)) {
        return Err(corrupt("invalid sampling factors"));
    }
    Ok(JpegHeader {
        width,
        height,
        sampling,
        progressive: matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE),
        exif: None,
        adobe: false,
        icc: None,
    })
}

impl JpegHeader<'_> {
    /// The smallest DCT scale n/8 whose output still covers `target`.
    pub fn scale_for(&self, target: (u32, u32)) -> u8 {
        (1..=8u8)
            .find(|&n| {
                let scaled = |side: u32| (side * u32::from(n)).div_ceil(8);
                scaled(self.width) >= target.0 && scaled(self.height) >= target.1
            })
            .unwrap_or(8)
    }

    /// Bytes libjpeg holds while decoding at `scale`/8: the output, plus for
    /// a progressive file every DCT coefficient of the image (2 bytes each).
    pub fn decode_memory(&self, scale: u8) -> u64 {
        let scaled = |side: u32| u64::from((side * u32::from(scale)).div_ceil(8));
        let channels = if self.sampling.len() == 1 { 1 } else { 3 };
        let output = scaled(self.width) * scaled(self.height) * channels;
        if !self.progressive {
            return output;
        }
        let (h_max, v_max) = self.sampling.iter().fold((1, 1), |(h, v), &(a, b)| (h.max(a), v.max(b)));
        let coefficients: u64 = self
            .sampling
            .iter()
            .map(|&(h, v)| {
                let blocks_x = u64::from(self.width * u32::from(h)).div_ceil(8 * u64::from(h_max));
                let blocks_y = u64::from(self.height * u32::from(v)).div_ceil(8 * u64::from(v_max));
                blocks_x * blocks_y * 64 * 2
            })
            .sum();
        output + coefficients
    }
}

/// Runs libjpeg code, turning its fatal errors (raised as unwinding panics
/// by the `mozjpeg` crate) into a [`ThumbnailError`].
fn guarded<T>(what: &'static str, f: impl FnOnce() -> std::io::Result<T>) -> Result<T, ThumbnailError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(corrupt(format!("{what}: {e}"))),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "libjpeg error".to_owned());
            let message = message.trim_start_matches("libjpeg fatal error: ").to_owned();
            if what == "encoding" { Err(ThumbnailError::Encode(message)) } else { Err(corrupt(message)) }
        }
    }
}

/// Decodes at `scale`/8 of full size into grey or RGB pixels.
pub fn decode(bytes: &[u8], header: &JpegHeader<'_>, scale: u8) -> Result<Pixels, ThumbnailError> {
    guarded("decoding", || {
        let mut decompress = Decompress::with_markers(NO_MARKERS).from_mem(bytes)?;
        decompress.scale(scale);
        match header.sampling.len() {
            1 => {
                let mut started = decompress.grayscale()?;
                let (w, h) = (started.width() as u32, started.height() as u32);
                let data = started.read_scanlines::<u8>()?;
                started.finish()?;
                Ok(Pixels::new(w, h, 1, data))
            }
            4 => {
                let mut started = decompress.to_colorspace(ColorSpace::JCS_CMYK)?;
                let (w, h) = (started.width() as u32, started.height() as u32);
                let cmyk = started.read_scanlines::<u8>()?;
                started.finish()?;
                Ok(Pixels::new(w, h, 3, cmyk_to_rgb(&cmyk, header.adobe)))
            }
            _ => {
                let mut started = decompress.rgb()?;
                let (w, h) = (started.width() as u32, started.height() as u32);
                let data = started.read_scanlines::<u8>()?;
                started.finish()?;
                Ok(Pixels::new(w, h, 3, data))
            }
        }
    })
}

/// Naive CMYK (or YCCK, which libjpeg hands over as CMYK) to RGB. Files
/// with an Adobe marker store ink inverted (255 = no ink), as Photoshop
/// writes them; without one, 255 = full ink.
fn cmyk_to_rgb(cmyk: &[u8], adobe_inverted: bool) -> Vec<u8> {
    cmyk.chunks_exact(4)
        .flat_map(|p| {
            let [c, m, y, k] =
                if adobe_inverted { [p[0], p[1], p[2], p[3]] } else { [p[0], p[1], p[2], p[3]].map(|v| 255 - v) };
            let k = u32::from(k);
            [c, m, y].map(|v| ((u32::from(v) * k + 127) / 255) as u8)
        })
        .collect()
}

/// Encodes grey or RGB pixels as a baseline JPEG with optimised Huffman
/// tables and 4:2:0 chroma, at `quality` (libjpeg's 1–100 scale).
pub fn encode(pixels: &Pixels, quality: u8) -> Result<Vec<u8>, ThumbnailError> {
    guarded("encoding", || {
        let color_space = if pixels.channels == 1 { ColorSpace::JCS_GRAYSCALE } else { ColorSpace::JCS_RGB };
        let mut compress = Compress::new(color_space);
        // libjpeg-turbo behaviour: MozJPEG's trellis and scan search cost
        // several times the encoding time for a few percent of size.
        compress.set_fastest_defaults();
        compress.set_optimize_coding(true);
        compress.set_quality(f32::from(quality));
        compress.set_size(pixels.width as usize, pixels.height as usize);
        let mut started = compress.start_compress(Vec::with_capacity(pixels.data.len() / 8))?;
        started.write_scanlines(&pixels.data)?;
        started.finish()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: u16, h: u16, progressive: bool) -> Vec<u8> {
        let mut f = vec![0xFF, if progressive { 0xC2 } else { 0xC0 }, 0, 17, 8];
        f.extend_from_slice(&h.to_be_bytes());
        f.extend_from_slice(&w.to_be_bytes());
        f.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        f
    }

    /// SOI, a frame header, one scan of `data`, EOI.
    fn skeleton(w: u16, h: u16, data: &[u8]) -> Vec<u8> {
        let mut j = vec![0xFF, 0xD8];
        j.extend(frame(w, h, false));
        j.extend_from_slice(&[0xFF, 0xDA, 0, 2]);
        j.extend_from_slice(data);
        j.extend_from_slice(&[0xFF, 0xD9]);
        j
    }

    #[test]
    fn walks_stuffing_restarts_and_finds_the_end() {
        let j = skeleton(4032, 3024, &[1, 0xFF, 0x00, 2, 0xFF, 0xD0, 3, 0xFF, 0xFF]);
        let h = read_header(&j).unwrap();
        assert_eq!((h.width, h.height, h.progressive), (4032, 3024, false));
        assert_eq!(h.sampling, vec![(2, 2), (1, 1), (1, 1)]);
    }

    #[test]
    fn a_file_cut_anywhere_is_truncated() {
        let j = skeleton(100, 100, &[1, 2, 3, 0xFF, 0x00, 4]);
        for cut in 2..j.len() {
            let err = read_header(&j[..cut]).unwrap_err();
            assert!(
                matches!(err, ThumbnailError::Truncated { .. } | ThumbnailError::Corrupt { .. }),
                "cut {cut}: {err}"
            );
        }
        assert!(matches!(read_header(&j[..j.len() - 2]), Err(ThumbnailError::Truncated { .. })));
    }

    #[test]
    fn scale_is_the_smallest_that_covers_the_target() {
        let (big, small) = (skeleton(4032, 3024, &[0]), skeleton(500, 400, &[0]));
        let h = read_header(&big).unwrap();
        assert_eq!(h.scale_for((800, 600)), 2);
        assert_eq!(h.scale_for((4032, 3024)), 8);
        let small = read_header(&small).unwrap();
        assert_eq!(small.scale_for((500, 400)), 8);
    }

    #[test]
    fn progressive_files_count_their_coefficients() {
        let mut j = vec![0xFF, 0xD8];
        j.extend(frame(4000, 3000, true));
        j.extend_from_slice(&[0xFF, 0xDA, 0, 2, 0, 0xFF, 0xD9]);
        let h = read_header(&j).unwrap();
        assert!(h.progressive);
        // 4:2:0: luma 500×375 blocks, each chroma 250×188 (rounded up), 128 bytes a block.
        let coefficients = (500 * 375 + 2 * 250 * 188) * 128;
        assert_eq!(h.decode_memory(2), 1000 * 750 * 3 + coefficients);
    }

    #[test]
    fn icc_chunks_are_joined_in_order_and_only_when_all_are_there() {
        let (a, b) = (&[1u8, 2][..], &[3u8][..]);
        assert_eq!(assemble_icc(vec![(2, 2, b), (1, 2, a)]), Some(vec![1, 2, 3]));
        assert_eq!(assemble_icc(vec![(1, 2, a)]), None, "chunk 2 is missing");
        assert_eq!(assemble_icc(vec![(1, 1, a), (1, 1, b)]), None, "chunk 1 twice");
        assert_eq!(assemble_icc(vec![(0, 1, a)]), None, "sequence numbers start at 1");
        assert_eq!(assemble_icc(vec![]), None);
    }

    #[test]
    fn adobe_cmyk_is_inverted_and_plain_cmyk_is_not() {
        // White paper: no ink. Adobe stores it as 255s, others as 0s.
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 255], true), vec![255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 0], false), vec![255, 255, 255]);
        // Full cyan: red goes, green and blue stay.
        assert_eq!(cmyk_to_rgb(&[0, 255, 255, 255], true), vec![0, 255, 255]);
    }
}
