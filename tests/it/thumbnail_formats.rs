//! Thumbnails of real, generated image files: every format the seed
//! accepts, EXIF orientation, colours of known regions, and every kind of
//! bad input failing with its reason.

use image::GenericImageView;
use mozjpeg::{ColorSpace, Compress, Marker};
use test_support::icc;
use test_support::images::{self, ExifValue};
use thumbnailer::{Limits, OutputFormat, ThumbnailError, ThumbnailSpec, make_thumbnail};

const RED: [u8; 3] = [220, 30, 30];
const BLUE: [u8; 3] = [30, 60, 220];

fn spec() -> ThumbnailSpec {
    ThumbnailSpec {
        max_size: 800,
        jpeg_quality: 85,
        limits: Limits { max_pixels: 120_000_000, max_decode_memory: 256 << 20 },
    }
}

/// Left half red, right half blue.
fn halves(w: u32, h: u32) -> Vec<u8> {
    (0..h).flat_map(|_| (0..w).flat_map(move |x| if x < w / 2 { RED } else { BLUE })).collect()
}

fn jpeg(w: u32, h: u32, space: ColorSpace, pixels: &[u8], progressive: bool, app1: Option<Vec<u8>>) -> Vec<u8> {
    let mut c = Compress::new(space);
    c.set_size(w as usize, h as usize);
    c.set_quality(92.0);
    if progressive {
        c.set_progressive_mode();
    }
    let mut c = c.start_compress(Vec::new()).unwrap();
    if let Some(app1) = app1 {
        c.write_marker(Marker::APP(1), &app1);
    }
    c.write_scanlines(pixels).unwrap();
    c.finish().unwrap()
}

/// An `Exif` APP1 payload holding only an orientation tag.
fn exif_orientation(orientation: u16) -> Vec<u8> {
    images::exif(&[(0x0112, ExifValue::Short(orientation))])
}

fn png(w: u32, h: u32, color: png::ColorType, depth: png::BitDepth, data: &[u8], palette: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut e = png::Encoder::new(&mut out, w, h);
        e.set_color(color);
        e.set_depth(depth);
        if let Some(p) = palette {
            e.set_palette(p.to_vec());
        }
        let mut writer = e.write_header().unwrap();
        writer.write_image_data(data).unwrap();
        writer.finish().unwrap();
    }
    out
}

fn decode(bytes: &[u8]) -> image::DynamicImage {
    image::load_from_memory(bytes).expect("the thumbnail decodes")
}

fn close(actual: [u8; 3], expected: [u8; 3]) -> bool {
    actual.iter().zip(expected).all(|(a, e)| (i16::from(*a) - i16::from(e)).abs() <= 24)
}

fn rgb_at(image: &image::DynamicImage, x: u32, y: u32) -> [u8; 3] {
    let p = image.to_rgb8().get_pixel(x, y).0;
    [p[0], p[1], p[2]]
}

fn assert_halves(bytes: &[u8], w: u32, h: u32) {
    let t = decode(bytes);
    assert_eq!(t.dimensions(), (w, h));
    assert!(close(rgb_at(&t, w / 8, h / 2), RED), "left {:?}", rgb_at(&t, w / 8, h / 2));
    assert!(close(rgb_at(&t, w * 7 / 8, h / 2), BLUE), "right {:?}", rgb_at(&t, w * 7 / 8, h / 2));
}

#[test]
fn baseline_and_progressive_jpeg_fit_within_800_with_colours_kept() {
    for progressive in [false, true] {
        let original = jpeg(4032, 3024, ColorSpace::JCS_RGB, &halves(4032, 3024), progressive, None);
        let t = make_thumbnail(&original, OutputFormat::Jpeg, &spec()).unwrap();
        assert_eq!((t.width, t.height, t.original_width, t.original_height), (800, 600, 4032, 3024));
        assert_eq!(t.source_format, "jpeg");
        assert_halves(&t.bytes, 800, 600);
    }
}

#[test]
fn grayscale_jpeg_stays_grey() {
    let pixels: Vec<u8> = (0..600 * 900).map(|i| if i % 900 < 450 { 40 } else { 210 }).collect();
    let original = jpeg(900, 600, ColorSpace::JCS_GRAYSCALE, &pixels, false, None);
    let t = make_thumbnail(&original, OutputFormat::Jpeg, &spec()).unwrap();
    let image = decode(&t.bytes);
    assert_eq!(image.color(), image::ColorType::L8);
    assert_eq!(image.dimensions(), (800, 533));
    let luma = image.to_luma8();
    assert!((i16::from(luma.get_pixel(100, 200).0[0]) - 40).abs() < 12);
    assert!((i16::from(luma.get_pixel(700, 200).0[0]) - 210).abs() < 12);
}

#[test]
fn adobe_cmyk_and_ycck_jpegs_have_their_true_colours() {
    // Left: pure cyan ink; right: pure magenta ink. Stored inverted, as
    // Photoshop writes CMYK (libjpeg adds the Adobe marker).
    let (w, h) = (1000, 500);
    let ink: Vec<u8> = (0..h)
        .flat_map(|_| (0..w).flat_map(move |x| if x < w / 2 { [255, 0, 0, 0] } else { [0, 255, 0, 0] }))
        .map(|v: u8| 255 - v)
        .collect();
    for ycck in [false, true] {
        let mut c = Compress::new(ColorSpace::JCS_CMYK);
        if ycck {
            c.set_color_space(ColorSpace::JCS_YCCK);
        }
        c.set_size(w as usize, h as usize);
        c.set_quality(95.0);
        let mut c = c.start_compress(Vec::new()).unwrap();
        c.write_scanlines(&ink).unwrap();
        let original = c.finish().unwrap();
        let t = make_thumbnail(&original, OutputFormat::Jpeg, &spec()).unwrap();
        let image = decode(&t.bytes);
        assert_eq!(image.dimensions(), (800, 400));
        assert!(
            close(rgb_at(&image, 100, 200), [0, 255, 255]),
            "cyan (ycck={ycck}) came out {:?}",
            rgb_at(&image, 100, 200)
        );
        assert!(
            close(rgb_at(&image, 700, 200), [255, 0, 255]),
            "magenta (ycck={ycck}) came out {:?}",
            rgb_at(&image, 700, 200)
        );
    }
}

#[test]
fn exif_orientation_six_turns_a_stored_landscape_into_a_portrait() {
    let original = jpeg(1200, 800, ColorSpace::JCS_RGB, &halves(1200, 800), false, Some(exif_orientation(6)));
    let t = make_thumbnail(&original, OutputFormat::Jpeg, &spec()).unwrap();
    assert_eq!((t.width, t.height), (533, 800));
    assert_eq!((t.original_width, t.original_height), (800, 1200));
    assert_eq!(t.exif.orientation, 6);
    // Turned clockwise, the stored left half (red) is on top.
    let image = decode(&t.bytes);
    assert!(close(rgb_at(&image, 266, 100), RED), "top {:?}", rgb_at(&image, 266, 100));
    assert!(close(rgb_at(&image, 266, 700), BLUE), "bottom {:?}", rgb_at(&image, 266, 700));
}

#[test]
fn eight_and_sixteen_bit_png_and_palette_png() {
    let rgb8 = png(1600, 400, png::ColorType::Rgb, png::BitDepth::Eight, &halves(1600, 400), None);
    let rgb16: Vec<u8> = halves(1600, 400).into_iter().flat_map(|v| [v, 0x80]).collect();
    let rgb16 = png(1600, 400, png::ColorType::Rgb, png::BitDepth::Sixteen, &rgb16, None);
    let indices: Vec<u8> = (0..400).flat_map(|_| (0..1600).map(|x| u8::from(x >= 800))).collect();
    let palette = [RED, BLUE].concat();
    let indexed = png(1600, 400, png::ColorType::Indexed, png::BitDepth::Eight, &indices, Some(&palette));
    for (name, original) in [("8-bit", rgb8), ("16-bit", rgb16), ("palette", indexed)] {
        let t = make_thumbnail(&original, OutputFormat::Png, &spec()).unwrap();
        assert_eq!((t.width, t.height, t.source_format), (800, 200, "png"), "{name}");
        assert_halves(&t.bytes, 800, 200);
    }
}

#[test]
fn png_alpha_is_kept_in_png_and_composited_over_white_in_jpeg() {
    let rgba: Vec<u8> = (0..1000)
        .flat_map(|_| (0..1000).flat_map(|x| if x < 500 { [0, 0, 0, 0] } else { [30, 60, 220, 255] }))
        .collect();
    let original = png(1000, 1000, png::ColorType::Rgba, png::BitDepth::Eight, &rgba, None);
    let as_png = decode(&make_thumbnail(&original, OutputFormat::Png, &spec()).unwrap().bytes);
    assert_eq!(as_png.dimensions(), (800, 800));
    assert_eq!(as_png.to_rgba8().get_pixel(100, 400).0[3], 0, "transparent stays transparent");
    assert_eq!(as_png.to_rgba8().get_pixel(700, 400).0[3], 255);
    let as_jpeg = decode(&make_thumbnail(&original, OutputFormat::Jpeg, &spec()).unwrap().bytes);
    assert!(close(rgb_at(&as_jpeg, 100, 400), [255, 255, 255]), "over white: {:?}", rgb_at(&as_jpeg, 100, 400));
    assert!(close(rgb_at(&as_jpeg, 700, 400), BLUE));
}

/// A JPEG of one flat colour whose ICC profile is split over two APP2 segments.
fn jpeg_with_profile(w: u32, h: u32, colour: [u8; 3], icc: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(ColorSpace::JCS_RGB);
    c.set_size(w as usize, h as usize);
    c.set_quality(95.0);
    let mut c = c.start_compress(Vec::new()).unwrap();
    let halves = icc.split_at(icc.len() / 2);
    for (seq, part) in [(1u8, halves.0), (2, halves.1)] {
        c.write_marker(Marker::APP(2), &[b"ICC_PROFILE\0".as_slice(), &[seq, 2], part].concat());
    }
    let pixels: Vec<u8> = (0..w * h).flat_map(|_| colour).collect();
    c.write_scanlines(&pixels).unwrap();
    c.finish().unwrap()
}

fn png_with_profile(w: u32, h: u32, colour: [u8; 3], icc: &[u8]) -> Vec<u8> {
    let mut info = png::Info::with_size(w, h);
    info.color_type = png::ColorType::Rgb;
    info.bit_depth = png::BitDepth::Eight;
    info.icc_profile = Some(icc.to_vec().into());
    let mut out = Vec::new();
    {
        let mut writer = png::Encoder::with_info(&mut out, info).unwrap().write_header().unwrap();
        let pixels: Vec<u8> = (0..w * h).flat_map(|_| colour).collect();
        writer.write_image_data(&pixels).unwrap();
        writer.finish().unwrap();
    }
    out
}

#[test]
fn a_display_p3_original_gives_an_srgb_thumbnail() {
    // P3 (180, 120, 100): linear (0.465, 0.190, 0.128) through the P3 to
    // sRGB matrix is linear sRGB (0.527, 0.179, 0.117), which the sRGB curve
    // encodes as about (192, 117, 96): redder than the stored numbers.
    let colour = [180, 120, 100];
    let icc = icc::display_p3_like();
    let near = |actual: [u8; 3], expected: [u8; 3]| {
        actual.iter().zip(expected).all(|(a, e)| (i16::from(*a) - i16::from(e)).abs() <= 3)
    };
    for (name, original, output) in [
        ("jpeg", jpeg_with_profile(1600, 1200, colour, &icc), OutputFormat::Jpeg),
        ("png", png_with_profile(1000, 500, colour, &icc), OutputFormat::Png),
    ] {
        let t = make_thumbnail(&original, output, &spec()).unwrap();
        let centre = rgb_at(&decode(&t.bytes), t.width / 2, t.height / 2);
        assert!(near(centre, [192, 117, 96]), "{name}: {centre:?}");
    }
    // Without the profile the numbers are taken as sRGB and kept.
    let plain = jpeg(1600, 1200, ColorSpace::JCS_RGB, &vec![colour; 1600 * 1200].concat(), false, None);
    let t = make_thumbnail(&plain, OutputFormat::Jpeg, &spec()).unwrap();
    assert!(near(rgb_at(&decode(&t.bytes), 400, 300), colour));
}

#[test]
fn a_broken_or_non_rgb_profile_is_ignored_and_the_image_still_thumbnailed() {
    let colour = [180, 120, 100];
    let mut cmyk = icc::display_p3_like();
    cmyk[16..20].copy_from_slice(b"CMYK");
    let mut cut = icc::display_p3_like();
    cut.truncate(200);
    for icc in [cmyk, cut, vec![0xFF; 64]] {
        let t = make_thumbnail(&png_with_profile(300, 200, colour, &icc), OutputFormat::Png, &spec()).unwrap();
        assert_eq!(rgb_at(&decode(&t.bytes), 150, 100), colour);
    }
}

#[test]
fn content_decides_the_decoder_and_small_images_are_not_upscaled() {
    // A PNG in a .jpg key: read as PNG, written as the key says (JPEG).
    let png_bytes = png(300, 200, png::ColorType::Rgb, png::BitDepth::Eight, &halves(300, 200), None);
    let t = make_thumbnail(&png_bytes, OutputFormat::Jpeg, &spec()).unwrap();
    assert_eq!((t.source_format, t.width, t.height), ("png", 300, 200));
    assert!(t.bytes.starts_with(&[0xFF, 0xD8, 0xFF]));
    assert_halves(&t.bytes, 300, 200);
}

#[test]
fn the_same_input_gives_the_same_bytes() {
    let original = jpeg(2000, 1500, ColorSpace::JCS_RGB, &halves(2000, 1500), false, None);
    let a = make_thumbnail(&original, OutputFormat::Jpeg, &spec()).unwrap();
    let b = make_thumbnail(&original, OutputFormat::Jpeg, &spec()).unwrap();
    assert_eq!(a.bytes, b.bytes);
}

/// SOI, a frame header declaring `w`×`h`, a one-byte scan, EOI: what a
/// hostile header looks like, with no pixels behind it.
fn declared_jpeg(w: u16, h: u16, progressive: bool) -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8, 0xFF, if progressive { 0xC2 } else { 0xC0 }, 0, 17, 8];
    j.extend_from_slice(&h.to_be_bytes());
    j.extend_from_slice(&w.to_be_bytes());
    j.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xDA, 0, 2, 0, 0xFF, 0xD9]);
    j
}

#[test]
fn bad_input_fails_with_its_reason() {
    let good = jpeg(640, 480, ColorSpace::JCS_RGB, &halves(640, 480), false, None);
    let good_png = png(640, 480, png::ColorType::Rgb, png::BitDepth::Eight, &halves(640, 480), None);
    let mut noise = vec![0u8; 4096];
    let mut seed = 7u32;
    noise.iter_mut().for_each(|b| {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        *b = (seed >> 16) as u8;
    });
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("zero bytes", vec![], "the file is empty (0 bytes)"),
        ("truncated JPEG", good[..good.len() / 2].to_vec(), "the JPEG data is truncated"),
        ("truncated PNG", good_png[..good_png.len() / 2].to_vec(), "the PNG data is truncated"),
        ("random bytes", noise, "not a JPEG or PNG image (content starts with bytes"),
        ("text", b"<html>not an image</html>".to_vec(), "not a JPEG or PNG image (content starts with text"),
        (
            "JPEG header claiming 65000x65000",
            declared_jpeg(65000, 65000, false),
            "the image declares 65000×65000 pixels (4225.0 MP)",
        ),
        (
            "progressive JPEG too big to hold",
            declared_jpeg(10000, 10000, true),
            "decoding would need about 290 MiB, over the limit of 256 MiB",
        ),
    ];
    for (name, bytes, reason) in cases {
        let err = make_thumbnail(&bytes, OutputFormat::Jpeg, &spec()).expect_err(name);
        assert!(err.to_string().starts_with(reason), "{name}: {err}");
    }
}

#[test]
fn a_small_png_inflating_to_hundreds_of_megapixels_is_refused_before_decoding() {
    // 20000×20000 one-bit grey: 400 megapixels in about 60 KB.
    let out = png(20_000, 20_000, png::ColorType::Grayscale, png::BitDepth::One, &vec![0u8; 2500 * 20_000], None);
    assert!(out.len() < 1 << 20, "the bomb is small: {} bytes", out.len());
    let err = make_thumbnail(&out, OutputFormat::Png, &spec()).unwrap_err();
    assert_eq!(err, ThumbnailError::TooManyPixels { width: 20_000, height: 20_000, limit: 120_000_000 });
}

#[test]
fn the_pixel_limit_is_configurable() {
    let original = jpeg(2000, 1000, ColorSpace::JCS_RGB, &halves(2000, 1000), false, None);
    let strict = ThumbnailSpec { limits: Limits { max_pixels: 1_000_000, ..spec().limits }, ..spec() };
    assert!(matches!(
        make_thumbnail(&original, OutputFormat::Jpeg, &strict),
        Err(ThumbnailError::TooManyPixels { .. })
    ));
    assert!(make_thumbnail(&original, OutputFormat::Jpeg, &spec()).is_ok());
}
