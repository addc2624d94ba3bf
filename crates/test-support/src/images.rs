//! Real image files, generated: the tests never depend on binary fixtures.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

/// A `width`×`height` image of `color`, with a gentle diagonal texture so it
/// is not perfectly flat.
pub fn textured(width: u32, height: u32, color: [u8; 3]) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let wobble = ((x + y) % 16) as i16 - 8;
        Rgb(color.map(|c| (i16::from(c) + wobble).clamp(0, 255) as u8))
    })
}

pub fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("encoding a test image");
    out.into_inner()
}

pub fn jpeg(width: u32, height: u32, color: [u8; 3]) -> Vec<u8> {
    encode(&DynamicImage::ImageRgb8(textured(width, height, color)), ImageFormat::Jpeg)
}

pub fn png(width: u32, height: u32, color: [u8; 3]) -> Vec<u8> {
    encode(&DynamicImage::ImageRgb8(textured(width, height, color)), ImageFormat::Png)
}

/// `jpeg` with an EXIF block (APP1, right after the start marker) naming
/// the camera's `make` and `model` and the `DateTime` it was taken, in
/// EXIF's `YYYY:MM:DD HH:MM:SS`.
pub fn with_exif(jpeg: &[u8], make: &str, model: &str, date_time: &str) -> Vec<u8> {
    // Little-endian TIFF: header, one IFD of three ASCII entries (sorted by
    // tag), no next IFD, then the strings the entries point at.
    let entries = [(0x010f_u16, make), (0x0110, model), (0x0132, date_time)];
    let mut tiff = b"II\x2a\0\x08\0\0\0".to_vec();
    tiff.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    let mut data = Vec::new();
    let data_start = 8 + 2 + 12 * entries.len() + 4;
    for (tag, text) in entries {
        let offset = (data_start + data.len()) as u32;
        data.extend_from_slice(text.as_bytes());
        data.push(0);
        tiff.extend_from_slice(&tag.to_le_bytes());
        tiff.extend_from_slice(&2u16.to_le_bytes());
        tiff.extend_from_slice(&((text.len() + 1) as u32).to_le_bytes());
        tiff.extend_from_slice(&offset.to_le_bytes());
    }
    tiff.extend_from_slice(&0u32.to_le_bytes());
    tiff.extend_from_slice(&data);
    let segment_length = u16::try_from(2 + 6 + tiff.len()).expect("a small EXIF block");
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xff, 0xe1]);
    out.extend_from_slice(&segment_length.to_be_bytes());
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(&tiff);
    out.extend_from_slice(&jpeg[2..]);
    out
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("files have a parent")).expect("creating a test folder");
    std::fs::write(path, bytes).expect("writing a test file");
}

pub const BLUE: [u8; 3] = [40, 85, 200];
pub const GREEN: [u8; 3] = [50, 160, 60];
pub const ORANGE: [u8; 3] = [240, 140, 25];
pub const PINK: [u8; 3] = [240, 135, 180];

/// A folder `photos` under `dir` with three images: a.jpg (blue), b.jpg
/// (green, portrait) and c.png (orange); its path.
pub fn three_photos(dir: &Path) -> std::path::PathBuf {
    let photos = dir.join("photos");
    write(&photos, "a.jpg", &jpeg(640, 480, BLUE));
    write(&photos, "b.jpg", &jpeg(480, 640, GREEN));
    write(&photos, "c.png", &png(300, 300, ORANGE));
    photos
}
