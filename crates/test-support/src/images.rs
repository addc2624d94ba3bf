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

/// A value of an EXIF tag, as [`exif`] writes it.
#[derive(Debug, Clone, Copy)]
pub enum ExifValue<'a> {
    Short(u16),
    Ascii(&'a str),
}

/// An `Exif` APP1 payload: a little-endian TIFF with one IFD of `entries`
/// (tag and value, in ascending tag order), no next IFD, then the strings
/// the ASCII entries point at.
pub fn exif(entries: &[(u16, ExifValue)]) -> Vec<u8> {
    let mut tiff = b"II\x2a\0\x08\0\0\0".to_vec();
    tiff.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    let mut strings = Vec::new();
    let strings_start = 8 + 2 + 12 * entries.len() + 4;
    for (tag, value) in entries {
        tiff.extend_from_slice(&tag.to_le_bytes());
        match value {
            ExifValue::Short(v) => {
                tiff.extend_from_slice(&3u16.to_le_bytes());
                tiff.extend_from_slice(&1u32.to_le_bytes());
                tiff.extend_from_slice(&v.to_le_bytes());
                tiff.extend_from_slice(&[0, 0]);
            }
            ExifValue::Ascii(text) => {
                let offset = (strings_start + strings.len()) as u32;
                strings.extend_from_slice(text.as_bytes());
                strings.push(0);
                tiff.extend_from_slice(&2u16.to_le_bytes());
                tiff.extend_from_slice(&((text.len() + 1) as u32).to_le_bytes());
                tiff.extend_from_slice(&offset.to_le_bytes());
            }
        }
    }
    tiff.extend_from_slice(&0u32.to_le_bytes());
    tiff.extend_from_slice(&strings);
    [b"Exif\0\0".as_slice(), &tiff].concat()
}

/// `jpeg` with an EXIF block (APP1, right after the start marker) naming
/// the camera's `make` and `model` and the `DateTime` it was taken, in
/// EXIF's `YYYY:MM:DD HH:MM:SS`.
pub fn with_exif(jpeg: &[u8], make: &str, model: &str, date_time: &str) -> Vec<u8> {
    let app1 = exif(&[
        (0x010f, ExifValue::Ascii(make)),
        (0x0110, ExifValue::Ascii(model)),
        (0x0132, ExifValue::Ascii(date_time)),
    ]);
    let segment_length = u16::try_from(2 + app1.len()).expect("a small EXIF block");
    [&jpeg[..2], &[0xff, 0xe1], &segment_length.to_be_bytes(), &app1, &jpeg[2..]].concat()
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
