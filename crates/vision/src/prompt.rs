//! The instructions every vision provider is given.

use domain::events::ImageInfo;

/// What the model is asked to do, with what the thumbnailer measured.
pub fn instructions(info: Option<&ImageInfo>) -> String {
    let mut text = String::from(
        "Analyse this image for the search index of a personal image collection. \
         Describe only what is visible. Choose the one category that fits best. \
         Copy any visible text verbatim into `text`. Tags are short lower-case keywords \
         a person might type to find this image.",
    );
    if let Some(info) = info {
        text.push_str(&format!("\nThe original is {}×{} pixels", info.width, info.height));
        if let Some(camera) = info.checked_camera() {
            text.push_str(&format!(", taken with {camera}"));
        }
        if let Some(date) = info.checked_taken_at() {
            text.push_str(&format!(" on {date}"));
        }
        text.push('.');
    }
    text
}
