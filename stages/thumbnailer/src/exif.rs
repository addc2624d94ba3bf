//! The EXIF fields the thumbnailer uses: orientation (applied to the
//! thumbnail), camera and capture date (passed on to the analyzer). EXIF is
//! untrusted input: anything unreadable is simply absent.

use exif::{In, Tag, Value};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExifInfo {
    /// 1 (as stored) to 8; 1 when absent or invalid.
    pub orientation: u16,
    /// Make and model, e.g. `Apple iPhone 12`.
    pub camera: Option<String>,
    /// `DateTimeOriginal` as `YYYY-MM-DD HH:MM:SS`.
    pub taken_at: Option<String>,
}

/// Longest make or model kept: real ones are a few dozen characters, and
/// the text travels on in events, which have a size limit.
const MAX_TEXT_CHARS: usize = 64;

/// Reads a TIFF-structured EXIF block (a JPEG APP1 payload after `Exif\0\0`,
/// or a PNG `eXIf` chunk).
pub fn parse(tiff: &[u8]) -> ExifInfo {
    let Ok(exif) = exif::Reader::new().read_raw(tiff.to_vec()) else {
        return ExifInfo { orientation: 1, ..ExifInfo::default() };
    };
    let text = |tag| {
        exif.get_field(tag, In::PRIMARY).and_then(|f| match &f.value {
            Value::Ascii(parts) => parts
                .first()
                .map(|p| {
                    let text = String::from_utf8_lossy(p);
                    let text = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
                    text.chars().take(MAX_TEXT_CHARS).collect::<String>()
                })
                .filter(|s| !s.is_empty()),
            _ => None,
        })
    };
    let orientation = exif
        .get_field(Tag::Orientation, In::PRIMARY)
        .and_then(|f| f.value.get_uint(0))
        .and_then(|o| u16::try_from(o).ok())
        .filter(|o| (1..=8).contains(o))
        .unwrap_or(1);
    let camera = match (text(Tag::Make), text(Tag::Model)) {
        (Some(make), Some(model)) if model.to_lowercase().starts_with(&make.to_lowercase()) => Some(model),
        (Some(make), Some(model)) => Some(format!("{make} {model}")),
        (make, model) => make.or(model),
    };
    let taken_at = text(Tag::DateTimeOriginal).or_else(|| text(Tag::DateTime)).and_then(|t| normalise_date(&t));
    ExifInfo { orientation, camera, taken_at }
}

/// `2021:06:01 10:00:00` → `2021-06-01 10:00:00`; anything else → `None`.
fn normalise_date(raw: &str) -> Option<String> {
    let b = raw.as_bytes();
    let shape = b.len() >= 19 && b[4] == b':' && b[7] == b':' && b[10] == b' ';
    let digits =
        || [0..4, 5..7, 8..10, 11..13, 14..16, 17..19].into_iter().all(|r| b[r].iter().all(u8::is_ascii_digit));
    (shape && digits() && &raw[..4] != "0000")
        .then(|| format!("{}-{}-{}{}", &raw[..4], &raw[5..7], &raw[8..10], &raw[10..19]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_normalised_and_placeholders_dropped() {
        assert_eq!(normalise_date("2021:06:01 10:00:00").as_deref(), Some("2021-06-01 10:00:00"));
        assert_eq!(normalise_date("0000:00:00 00:00:00"), None);
        assert_eq!(normalise_date("yesterday"), None);
    }

    #[test]
    fn make_and_model_are_cut_to_a_sane_length() {
        // Little-endian TIFF, one IFD with Make (ASCII, 300 bytes of 'A').
        let make = [vec![b'A'; 299], vec![0]].concat();
        let mut tiff = b"II\x2a\0\x08\0\0\0".to_vec();
        tiff.extend_from_slice(&1u16.to_le_bytes());
        tiff.extend_from_slice(&0x010Fu16.to_le_bytes());
        tiff.extend_from_slice(&2u16.to_le_bytes());
        tiff.extend_from_slice(&(make.len() as u32).to_le_bytes());
        tiff.extend_from_slice(&26u32.to_le_bytes());
        tiff.extend_from_slice(&0u32.to_le_bytes());
        tiff.extend_from_slice(&make);
        let info = parse(&tiff);
        assert_eq!(info.camera.as_deref().map(str::len), Some(MAX_TEXT_CHARS));
    }

    #[test]
    fn garbage_is_orientation_one_and_nothing_else() {
        assert_eq!(parse(b"not tiff"), ExifInfo { orientation: 1, camera: None, taken_at: None });
    }
}
