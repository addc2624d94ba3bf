//! Inputs for the benchmarks, generated so no binary fixture is needed.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

/// A photo-like RGB image: smooth gradients, edges and fine grain, so it
/// compresses like a camera's JPEG rather than like a flat test card.
pub fn photo(width: u32, height: u32) -> RgbImage {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    RgbImage::from_fn(width, height, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let grain = (seed % 9) as f32 - 4.0;
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let stripe = if ((x / 97) + (y / 131)) % 2 == 0 { 18.0 } else { -18.0 };
        let r = 120.0 + 90.0 * (fx * 6.0).sin() + stripe + grain;
        let g = 110.0 + 80.0 * (fy * 5.0).cos() + grain;
        let b = 100.0 + 70.0 * ((fx + fy) * 4.0).sin() - stripe + grain;
        Rgb([r, g, b].map(|v| v.clamp(0.0, 255.0) as u8))
    })
}

/// An image as a quality-90 JPEG.
pub fn jpeg(image: &RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&DynamicImage::ImageRgb8(image.clone()))
        .expect("encoding the benchmark JPEG");
    out.into_inner()
}

/// A phone-sized (12 MP, 4032×3024) JPEG at quality 90.
pub fn phone_jpeg() -> Vec<u8> {
    jpeg(&photo(4032, 3024))
}

/// A 2000×1500 RGBA PNG (a screenshot-sized image with transparency).
pub fn rgba_png() -> Vec<u8> {
    let rgb = photo(2000, 1500);
    let rgba = RgbaImage::from_fn(2000, 1500, |x, y| {
        let p = rgb.get_pixel(x, y).0;
        Rgba([p[0], p[1], p[2], if x < 100 { 0 } else { 255 }])
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgba8(rgba).write_to(&mut out, ImageFormat::Png).expect("encoding the benchmark PNG");
    out.into_inner()
}
