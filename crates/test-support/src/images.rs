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
