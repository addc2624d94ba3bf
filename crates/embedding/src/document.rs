//! The document embedded for an analysis (its non-empty fields, labelled,
//! in a fixed order), and how documents are grouped into requests under a
//! provider's limits.

use domain::analysis::Analysis;
use serde_json::{Value, json};

use crate::BatchLimits;

/// The analysis fields an embedding document is made of, in order.
pub const DOCUMENT_FIELDS: [&str; 9] =
    ["summary", "category", "description", "tags", "objects", "colors", "text", "scene", "style"];

/// The text embedded for an analysis, and the record of what went into it
/// (stored as `embedding_source`). Empty fields are left out.
pub fn document(analysis: &Analysis) -> (String, Value) {
    let mut parts = Vec::new();
    let mut used = Vec::new();
    let mut add = |field: &'static str, text: String| {
        if !text.trim().is_empty() {
            parts.push(format!("{field}: {}", text.trim()));
            used.push(field);
        }
    };
    add("summary", analysis.summary.clone());
    add("category", analysis.category.clone());
    add("description", analysis.description.clone());
    add("tags", analysis.tags.join(", "));
    add("objects", analysis.objects.join(", "));
    add("colors", analysis.colors.join(", "));
    add("text", analysis.text.join(" | "));
    add("scene", analysis.scene.clone().unwrap_or_default());
    add("style", analysis.style.clone().unwrap_or_default());
    let text = parts.join("\n");
    let source = json!({ "fields": used, "chars": text.chars().count() });
    (text, source)
}

/// A rough token count (about four characters a token) for batching under
/// a provider's per-request token limit, rounded up so batches stay under it.
pub fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(3)
}

/// Splits texts into consecutive request batches that respect `limits`
/// (a text over the token limit on its own goes alone; the provider truncates it).
pub fn request_batches(texts: &[String], limits: BatchLimits) -> Vec<std::ops::Range<usize>> {
    let mut batches = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (i, text) in texts.iter().enumerate() {
        let t = estimate_tokens(text);
        let full = i - start >= limits.max_texts.max(1) || (i > start && tokens + t > limits.max_tokens);
        if full {
            batches.push(start..i);
            (start, tokens) = (i, 0);
        }
        tokens += t;
    }
    if start < texts.len() {
        batches.push(start..texts.len());
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_batches_respect_text_and_token_limits() {
        let texts: Vec<String> =
            ["a".repeat(30), "b".repeat(30), "c".repeat(30), "d".repeat(300), "e".into()].into_iter().collect();
        // 30 chars ≈ 10 tokens; 300 ≈ 100.
        assert_eq!(request_batches(&texts, BatchLimits { max_texts: 2, max_tokens: 1000 }), vec![0..2, 2..4, 4..5]);
        assert_eq!(
            request_batches(&texts, BatchLimits { max_texts: 10, max_tokens: 25 }),
            vec![0..2, 2..3, 3..4, 4..5]
        );
        assert_eq!(
            request_batches(&[], BatchLimits { max_texts: 10, max_tokens: 25 }),
            Vec::<std::ops::Range<usize>>::new()
        );
    }

    #[test]
    fn document_uses_the_non_empty_fields_and_records_them() {
        let analysis = Analysis {
            category: "food".into(),
            summary: "A bowl of ramen.".into(),
            description: String::new(),
            tags: vec!["noodles".into(), "soup".into()],
            objects: vec![],
            colors: vec!["red".into()],
            text: vec![],
            scene: Some("restaurant".into()),
            style: None,
            people_count: None,
        };
        let (text, source) = document(&analysis);
        assert_eq!(
            text,
            "summary: A bowl of ramen.\ncategory: food\ntags: noodles, soup\ncolors: red\nscene: restaurant"
        );
        assert_eq!(source["fields"], json!(["summary", "category", "tags", "colors", "scene"]));
        assert_eq!(source["chars"], json!(text.chars().count()));
    }
}
