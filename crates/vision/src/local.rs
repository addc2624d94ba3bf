//! The offline analyzer: measures real properties of the image (dominant
//! colours, brightness, sharpness, colourfulness, orientation, transparency,
//! EXIF camera and date passed on by the thumbnailer) and writes an honest
//! summary of them. It recognises no content, and says so.

use async_trait::async_trait;
use image::{DynamicImage, GenericImageView, imageops::FilterType};
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

/// Measures an image's properties.
pub fn measure(image: &DynamicImage) -> Measurements {
    let (width, height) = image.dimensions();
    let has_transparency = image.color().has_alpha() && image.to_rgba8().pixels().any(|p| p.0[3] < 250);
    // A bounded working size keeps this cheap and sharpness comparable between images.
    let work =
        if width.max(height) > 512 { image.resize(512, 512, FilterType::Triangle) } else { image.clone() }.to_rgb8();
    let pixels: Vec<[f32; 3]> = work.pixels().map(|p| p.0.map(f32::from)).collect();
    let count = pixels.len().max(1) as f32;

    let mut votes = [0usize; PALETTE.len()];
    let palette_lab: Vec<[f32; 3]> = PALETTE.iter().map(|(_, rgb)| lab(rgb.map(f32::from))).collect();
    for p in pixels.iter().step_by(4) {
        let l = lab(*p);
        let nearest = palette_lab
            .iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| distance(a, &l).total_cmp(&distance(b, &l)))
            .map_or(0, |(i, _)| i);
        votes[nearest] += 1;
    }
    let voted = votes.iter().sum::<usize>().max(1) as f32;
    let mut colors: Vec<(String, f32)> = PALETTE
        .iter()
        .zip(votes)
        .filter(|(_, n)| *n > 0)
        .map(|((name, _), n)| ((*name).to_owned(), n as f32 / voted))
        .collect();
    colors.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

    let luma: Vec<f32> = pixels.iter().map(|[r, g, b]| 0.299 * r + 0.587 * g + 0.114 * b).collect();
    let brightness = luma.iter().sum::<f32>() / count / 255.0;
    let sharpness = laplacian_variance(&luma, work.width() as usize, work.height() as usize);

    let (rg, yb): (Vec<f32>, Vec<f32>) = pixels.iter().map(|[r, g, b]| (r - g, 0.5 * (r + g) - b)).unzip();
    let colorfulness = (variance(&rg) + variance(&yb)).sqrt() + 0.3 * (mean(&rg).powi(2) + mean(&yb).powi(2)).sqrt();

    Measurements { width, height, colors, brightness, sharpness, colorfulness, has_transparency }
}

fn mean(xs: &[f32]) -> f32 {
    xs.iter().sum::<f32>() / xs.len().max(1) as f32
}

fn variance(xs: &[f32]) -> f32 {
    let m = mean(xs);
    xs.iter().map(|x| (x - m).powi(2)).sum::<f32>() / xs.len().max(1) as f32
}

fn laplacian_variance(luma: &[f32], w: usize, h: usize) -> f32 {
    if w < 3 || h < 3 {
        return 0.0;
    }
    let mut response = Vec::with_capacity((w - 2) * (h - 2));
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let at = |dx: usize, dy: usize| luma[(y + dy - 1) * w + (x + dx - 1)];
            response.push(at(1, 0) + at(1, 2) + at(0, 1) + at(2, 1) - 4.0 * at(1, 1));
        }
    }
    variance(&response)
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
