//! The offline analyzer: measures real properties of the image (dominant
//! colours, brightness, sharpness, colourfulness, orientation, transparency,
//! EXIF camera and date passed on by the thumbnailer) and writes an honest
//! summary of them. It recognises no content, and says so.

use std::sync::OnceLock;

use async_trait::async_trait;
use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, GenericImageView, RgbImage};
use serde_json::json;

use super::{Analysis, ProviderAnalysis, VisionError, VisionProvider, VisionRequest};

/// Named colours that dominant colours are reported as (sRGB).
const PALETTE: [(&str, [u8; 3]); 17] = [
    ("black", [15, 15, 15]),
    ("white", [245, 245, 245]),
    ("gray", [128, 128, 128]),
    ("silver", [192, 192, 192]),
    ("red", [200, 30, 35]),
    ("orange", [240, 140, 25]),
    ("yellow", [240, 220, 50]),
    ("green", [50, 160, 60]),
    ("olive", [110, 115, 40]),
    ("teal", [0, 128, 128]),
    ("cyan", [70, 200, 225]),
    ("blue", [40, 85, 200]),
    ("navy", [20, 30, 90]),
    ("purple", [120, 50, 160]),
    ("pink", [240, 135, 180]),
    ("brown", [120, 75, 40]),
    ("beige", [220, 200, 160]),
];

/// What was measured, kept as the analysis's `raw_response`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Measurements {
    pub width: u32,
    pub height: u32,
    /// Share of pixels (0..1) nearest each named colour, largest first.
    pub colors: Vec<(String, f32)>,
    /// Mean luma, 0 (black) to 1 (white).
    pub brightness: f32,
    /// Variance of the Laplacian of the luma, on the image scaled down to 512 px.
    pub sharpness: f32,
    /// Hasler and Süsstrunk's colourfulness metric (0: grey; above 80: very colourful).
    pub colorfulness: f32,
    pub has_transparency: bool,
}

/// Longest side of the copy every measure is taken on: bounded, so the
/// cost is and sharpness values are comparable between images.
const WORK_SIZE: u32 = 512;

/// Measures an image's properties. Each pixel of the working copy is read
/// once, with integer colour lookups: the offline analyzer must not cost
/// more than the thumbnail it reads.
pub fn measure(image: &DynamicImage) -> Measurements {
    let (width, height) = image.dimensions();
    let has_transparency = image.color().has_alpha() && image.to_rgba8().pixels().any(|p| p.0[3] < 250);
    let work = working_copy(image.to_rgb8());
    let (w, h) = (work.width() as usize, work.height() as usize);

    let mut votes = [0usize; PALETTE.len()];
    let mut luma = Vec::with_capacity(w * h);
    // Sums (and sums of squares) of the opponent channels, for colourfulness.
    let (mut rg, mut yb) = (Moments::default(), Moments::default());
    for (i, p) in work.pixels().enumerate() {
        let [r, g, b] = p.0;
        if i % 4 == 0 {
            votes[nearest_named(p.0)] += 1;
        }
        let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
        luma.push(0.299 * r + 0.587 * g + 0.114 * b);
        rg.add(r - g);
        yb.add(0.5 * (r + g) - b);
    }
    let voted = votes.iter().sum::<usize>().max(1) as f32;
    let mut colors: Vec<(String, f32)> = PALETTE
        .iter()
        .zip(votes)
        .filter(|(_, n)| *n > 0)
        .map(|((name, _), n)| ((*name).to_owned(), n as f32 / voted))
        .collect();
    colors.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

    let brightness = luma.iter().sum::<f32>() / luma.len().max(1) as f32 / 255.0;
    let sharpness = laplacian_variance(&luma, w, h);
    let colorfulness = (rg.variance() + yb.variance()).sqrt() + 0.3 * (rg.mean().powi(2) + yb.mean().powi(2)).sqrt();

    Measurements { width, height, colors, brightness, sharpness, colorfulness, has_transparency }
}

/// `image` fitted within [`WORK_SIZE`] (a triangle filter, as a bilinear
/// convolution), or as it is when it fits.
fn working_copy(image: RgbImage) -> RgbImage {
    let (width, height) = image.dimensions();
    if width.max(height) <= WORK_SIZE {
        return image;
    }
    let scale = f64::from(WORK_SIZE) / f64::from(width.max(height));
    let fit = |side: u32| ((f64::from(side) * scale).round() as u32).clamp(1, WORK_SIZE);
    let (w, h) = (fit(width), fit(height));
    let resized = (|| {
        let source = Image::from_vec_u8(width, height, image.into_raw(), PixelType::U8x3).ok()?;
        let mut target = Image::new(w, h, PixelType::U8x3);
        let bilinear = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        Resizer::new().resize(&source, &mut target, &bilinear).ok()?;
        RgbImage::from_raw(w, h, target.into_vec())
    })();
    resized.unwrap_or_else(|| unreachable!("a {width}×{height} RGB buffer resizes to {w}×{h}"))
}

/// Running sums of one quantity, for its mean and variance.
#[derive(Default)]
struct Moments {
    n: f64,
    sum: f64,
    squares: f64,
}

impl Moments {
    fn add(&mut self, x: f32) {
        let x = f64::from(x);
        self.n += 1.0;
        self.sum += x;
        self.squares += x * x;
    }

    fn mean(&self) -> f32 {
        (self.sum / self.n.max(1.0)) as f32
    }

    fn variance(&self) -> f32 {
        let mean = self.sum / self.n.max(1.0);
        (self.squares / self.n.max(1.0) - mean * mean).max(0.0) as f32
    }
}

fn laplacian_variance(luma: &[f32], w: usize, h: usize) -> f32 {
    if w < 3 || h < 3 {
        return 0.0;
    }
    let mut response = Moments::default();
    for y in 1..h - 1 {
        let (above, row, below) =
            (&luma[(y - 1) * w..y * w], &luma[y * w..(y + 1) * w], &luma[(y + 1) * w..(y + 2) * w]);
        for x in 1..w - 1 {
            response.add(above[x] + below[x] + row[x - 1] + row[x + 1] - 4.0 * row[x]);
        }
    }
    response.variance()
}

/// The named colour nearest (in L*a*b*) to an sRGB pixel, by a table over
/// 32 levels a channel, made once: the conversion to L*a*b* (a power and a
/// cube root per channel) is paid 32 768 times in all, not per pixel.
fn nearest_named([r, g, b]: [u8; 3]) -> usize {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let palette: Vec<[f32; 3]> = PALETTE.iter().map(|(_, rgb)| lab(rgb.map(f32::from))).collect();
        let centre = |level: usize| (level * 8 + 4) as f32;
        (0..32 * 32 * 32)
            .map(|cell| {
                let l = lab([centre(cell >> 10), centre((cell >> 5) & 31), centre(cell & 31)]);
                let nearest =
                    (0..palette.len()).min_by(|&a, &b| distance(&palette[a], &l).total_cmp(&distance(&palette[b], &l)));
                nearest.and_then(|i| u8::try_from(i).ok()).unwrap_or(0)
            })
            .collect()
    });
    usize::from(table[(usize::from(r >> 3) << 10) | (usize::from(g >> 3) << 5) | usize::from(b >> 3)])
}

/// sRGB (0..255) to CIE L*a*b* (D65).
fn lab([r, g, b]: [f32; 3]) -> [f32; 3] {
    let linear = |c: f32| {
        let c = c / 255.0;
        if c <= 0.04045 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
    };
    let (r, g, b) = (linear(r), linear(g), linear(b));
    let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    let f = |t: f32| if t > 0.008856 { t.cbrt() } else { 7.787 * t + 16.0 / 116.0 };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

fn distance(a: &[f32; 3], b: &[f32; 3]) -> f32 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)
}

/// Writes the analysis that the measurements honestly support.
pub fn describe(m: &Measurements, info: Option<&domain::events::ImageInfo>) -> Analysis {
    let shape = match m.width.cmp(&m.height) {
        std::cmp::Ordering::Greater => "landscape",
        std::cmp::Ordering::Less => "portrait",
        std::cmp::Ordering::Equal => "square",
    };
    let light = match m.brightness {
        b if b < 0.25 => "dark",
        b if b < 0.45 => "dim",
        b if b < 0.7 => "medium-bright",
        _ => "bright",
    };
    let focus = match m.sharpness {
        s if s < 20.0 => "blurry",
        s if s < 150.0 => "soft",
        _ => "sharp",
    };
    let colourful = match m.colorfulness {
        c if c < 8.0 => "monochrome",
        c if c < 33.0 => "muted",
        c if c < 60.0 => "colourful",
        _ => "vivid",
    };
    let dominant: Vec<&str> =
        m.colors.iter().filter(|(_, share)| *share >= 0.1).take(3).map(|(n, _)| n.as_str()).collect();
    let dominant =
        if dominant.is_empty() { m.colors.iter().take(1).map(|(n, _)| n.as_str()).collect() } else { dominant };

    let mut summary = format!(
        "{} image, mostly {}; {light}, {focus} and {colourful}{}.",
        capitalise(shape),
        join_words(&dominant),
        if m.has_transparency { ", with transparent areas" } else { "" },
    );
    let camera = info.and_then(domain::events::ImageInfo::checked_camera);
    let date = info.and_then(domain::events::ImageInfo::checked_taken_at).and_then(|t| t.get(..10));
    match (camera, date) {
        (Some(c), Some(d)) => summary.push_str(&format!(" Taken with {c} on {d}.")),
        (Some(c), None) => summary.push_str(&format!(" Taken with {c}.")),
        (None, Some(d)) => summary.push_str(&format!(" Taken on {d}.")),
        (None, None) => {}
    }

    let shares: Vec<String> = m.colors.iter().take(5).map(|(n, s)| format!("{n} {:.0}%", s * 100.0)).collect();
    let source = match info {
        Some(i) => format!("{}×{} {} (thumbnail {}×{})", i.width, i.height, i.format.to_uppercase(), m.width, m.height),
        None => format!("{}×{} image", m.width, m.height),
    };
    let description = format!(
        "Measured offline from the pixels of a {source}; the local analyzer does not recognise objects, \
         people or text. Dominant colours: {}. Mean brightness {:.0}%. Sharpness (variance of the Laplacian) {:.0}. \
         Colourfulness {:.0}.{}",
        shares.join(", "),
        m.brightness * 100.0,
        m.sharpness,
        m.colorfulness,
        if m.has_transparency { " Has transparent areas." } else { "" },
    );

    let mut tags: Vec<String> = dominant.iter().map(|c| (*c).to_owned()).collect();
    tags.extend([shape, light, focus, colourful].map(str::to_owned));
    if m.has_transparency {
        tags.push("transparent".to_owned());
    }
    if let Some(c) = camera {
        tags.extend(c.split_whitespace().take(1).map(str::to_lowercase));
    }
    if let Some(year) = date.and_then(|d| d.get(..4)) {
        tags.push(year.to_owned());
    }

    Analysis {
        category: "other".to_owned(),
        summary,
        description,
        tags,
        objects: Vec::new(),
        colors: dominant.iter().map(|c| (*c).to_owned()).collect(),
        text: Vec::new(),
        scene: None,
        style: None,
        people_count: None,
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

fn join_words(words: &[&str]) -> String {
    match words {
        [] => "unknown colours".to_owned(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The `local` provider.
#[derive(Debug, Clone, Default)]
pub struct LocalAnalyzer;

pub const LOCAL_MODEL: &str = "local-image-properties-v1";

#[async_trait]
impl VisionProvider for LocalAnalyzer {
    fn provider(&self) -> &'static str {
        "local"
    }

    fn model(&self) -> &str {
        LOCAL_MODEL
    }

    async fn analyze(&self, request: VisionRequest<'_>) -> Result<ProviderAnalysis, VisionError> {
        let (bytes, info) = (request.image.to_vec(), request.info.cloned());
        // Decoding and measuring is CPU work: off the async workers.
        tokio::task::spawn_blocking(move || {
            let image = image::load_from_memory(&bytes).map_err(|e| VisionError::Image(e.to_string()))?;
            let measurements = measure(&image);
            let analysis = describe(&measurements, info.as_ref())
                .validated()
                .map_err(|source| VisionError::Invalid { provider: "local", source })?;
            Ok(ProviderAnalysis {
                analysis,
                raw_response: json!({ "measurements": measurements }),
                request_id: None,
                usage: None,
            })
        })
        .await
        .map_err(|e| VisionError::Image(format!("the analysis task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use domain::retry::Retriable;

    use super::*;
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    fn encode(image: DynamicImage) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        image.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[tokio::test]
    async fn a_blue_landscape_is_described_as_such() {
        let img = RgbImage::from_fn(300, 200, |x, _| if x < 240 { Rgb([40, 85, 200]) } else { Rgb([245, 245, 245]) });
        let bytes = encode(DynamicImage::ImageRgb8(img));
        let result =
            LocalAnalyzer.analyze(VisionRequest { image: &bytes, media_type: "image/png", info: None }).await.unwrap();
        let a = result.analysis;
        assert_eq!(a.category, "other");
        assert!(a.summary.starts_with("Landscape image, mostly blue and white"), "{}", a.summary);
        assert_eq!(a.colors, vec!["blue", "white"]);
        assert!(a.tags.contains(&"landscape".to_owned()));
        assert!(a.description.contains("does not recognise"));
        assert!(result.raw_response["measurements"]["brightness"].as_f64().unwrap() > 0.3);
    }

    #[test]
    fn the_colour_table_names_each_palette_colour_and_agrees_with_the_exact_search() {
        let exact = |rgb: [u8; 3]| {
            let l = lab(rgb.map(f32::from));
            let palette: Vec<[f32; 3]> = PALETTE.iter().map(|(_, c)| lab(c.map(f32::from))).collect();
            (0..palette.len()).min_by(|&a, &b| distance(&palette[a], &l).total_cmp(&distance(&palette[b], &l))).unwrap()
        };
        for (i, (name, rgb)) in PALETTE.iter().enumerate() {
            assert_eq!(PALETTE[nearest_named(*rgb)].0, *name, "{rgb:?}");
            assert_eq!(exact(*rgb), i);
        }
        // Off the table's cell centres, it may differ only near a border
        // between two colours: rarely.
        let samples: Vec<[u8; 3]> =
            (0..20_000u32).map(|i| [(i * 37 % 256) as u8, (i * 101 % 256) as u8, (i * 211 % 256) as u8]).collect();
        let differ = samples.iter().filter(|&&p| nearest_named(p) != exact(p)).count();
        assert!(differ < samples.len() / 20, "{differ} of {} differ", samples.len());
    }

    #[test]
    fn flat_images_are_blurry_and_noise_is_sharp_and_grey_is_monochrome() {
        let flat = measure(&DynamicImage::ImageRgb8(RgbImage::from_pixel(64, 64, Rgb([128, 128, 128]))));
        assert_eq!(flat.sharpness, 0.0);
        assert!(flat.colorfulness < 1.0);
        let checker =
            RgbImage::from_fn(64, 64, |x, y| if (x + y) % 2 == 0 { Rgb([0, 0, 0]) } else { Rgb([255, 255, 255]) });
        assert!(measure(&DynamicImage::ImageRgb8(checker)).sharpness > 1000.0);
    }

    #[test]
    fn transparency_camera_and_date_appear() {
        let img = RgbaImage::from_fn(20, 40, |x, _| Rgba([240, 135, 180, if x < 10 { 0 } else { 255 }]));
        let m = measure(&DynamicImage::ImageRgba8(img));
        assert!(m.has_transparency);
        let info = domain::events::ImageInfo {
            width: 2000,
            height: 4000,
            format: "png".into(),
            camera: Some("Canon EOS 5D".into()),
            taken_at: Some("2021-06-01 10:00:00".into()),
            ..Default::default()
        };
        let a = describe(&m, Some(&info));
        assert!(a.summary.starts_with("Portrait image"), "{}", a.summary);
        assert!(a.summary.contains("with transparent areas"));
        assert!(a.summary.ends_with("Taken with Canon EOS 5D on 2021-06-01."), "{}", a.summary);
        assert!(a.tags.contains(&"canon".to_owned()) && a.tags.contains(&"2021".to_owned()));
    }

    #[tokio::test]
    async fn undecodable_bytes_are_an_image_error() {
        let err = LocalAnalyzer
            .analyze(VisionRequest { image: b"not an image", media_type: "image/png", info: None })
            .await
            .unwrap_err();
        assert!(matches!(err, VisionError::Image(_)) && !err.is_retriable());
    }
}
