//! The analysis schema: what an analysis says about an image, the fixed
//! categories, and the validation every provider's reply goes through
//! before it is stored.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use thiserror::Error;

/// The fixed list of categories an analysis may choose from.
pub const CATEGORIES: [&str; 16] = [
    "people",
    "pets",
    "animals",
    "food",
    "nature",
    "landscape",
    "architecture",
    "interior",
    "vehicles",
    "art",
    "document",
    "screenshot",
    "product",
    "event",
    "sports",
    "other",
];

/// What an analysis says about an image. Every provider's reply is turned
/// into this and validated before it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// One of [`CATEGORIES`].
    pub category: String,
    /// One sentence, at most 300 characters.
    pub summary: String,
    /// A paragraph with the details a user might search by.
    #[serde(default)]
    pub description: String,
    /// Short lower-case keywords, at most 30.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Things visible in the image.
    #[serde(default)]
    pub objects: Vec<String>,
    /// Dominant colours, by name.
    #[serde(default)]
    pub colors: Vec<String>,
    /// Text visible in the image, verbatim.
    #[serde(default)]
    pub text: Vec<String>,
    /// Where it is: "beach at sunset", "office desk", "indoor".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene: Option<String>,
    /// What kind of image: photo, screenshot, illustration, scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
    /// How many people are visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub people_count: Option<u32>,
}

const MAX_SUMMARY_CHARS: usize = 300;
const MAX_DESCRIPTION_CHARS: usize = 4000;
const MAX_LIST_ITEMS: usize = 30;
const MAX_ITEM_CHARS: usize = 200;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum InvalidAnalysis {
    #[error("category {0:?} is not one of the fixed list")]
    UnknownCategory(String),
    #[error("summary is empty")]
    EmptySummary,
    #[error("it does not fit the analysis schema: {0}")]
    Schema(String),
}

/// The list fields of an analysis: a lone string there is taken as a list
/// of one, and null as an empty list.
const LIST_FIELDS: [&str; 4] = ["tags", "objects", "colors", "text"];

impl Analysis {
    /// An analysis from a provider's JSON, forgiving what is trivially the
    /// right value (a string where a list of strings is expected, null for
    /// an empty list or description; each counted in the logs), then
    /// validated.
    pub fn from_reply(mut value: Value, provider: &'static str) -> Result<Self, InvalidAnalysis> {
        let mut coerced = Vec::new();
        if let Some(fields) = value.as_object_mut() {
            for name in LIST_FIELDS {
                match fields.get(name) {
                    Some(Value::String(one)) => {
                        let list = json!([one]);
                        fields.insert(name.to_owned(), list);
                        coerced.push(name);
                    }
                    Some(Value::Null) => {
                        fields.insert(name.to_owned(), json!([]));
                        coerced.push(name);
                    }
                    _ => {}
                }
            }
            if fields.get("description") == Some(&Value::Null) {
                fields.insert("description".to_owned(), json!(""));
                coerced.push("description");
            }
        }
        if !coerced.is_empty() {
            tracing::info!(provider, fields = ?coerced, "accepted a string for a list, or null for an empty value");
        }
        let analysis: Self = serde_json::from_value(value).map_err(|e| InvalidAnalysis::Schema(e.to_string()))?;
        analysis.validated()
    }

    /// Normalises (trims, lower-cases tags, drops empty and duplicate list
    /// entries, truncates over-long text) and checks the analysis.
    pub fn validated(mut self) -> Result<Self, InvalidAnalysis> {
        let category = self.category.trim().to_lowercase();
        if !CATEGORIES.contains(&category.as_str()) {
            return Err(InvalidAnalysis::UnknownCategory(self.category));
        }
        self.category = category;
        self.summary = truncate(self.summary.trim(), MAX_SUMMARY_CHARS).trim().to_owned();
        if self.summary.is_empty() {
            return Err(InvalidAnalysis::EmptySummary);
        }
        self.description = truncate(self.description.trim(), MAX_DESCRIPTION_CHARS);
        self.tags = clean_list(self.tags.iter().map(|t| t.to_lowercase()));
        self.objects = clean_list(self.objects);
        self.colors = clean_list(self.colors.iter().map(|c| c.to_lowercase()));
        self.text = clean_list(self.text);
        self.scene = self.scene.map(|s| truncate(s.trim(), MAX_ITEM_CHARS)).filter(|s| !s.is_empty());
        self.style = self.style.map(|s| truncate(s.trim(), MAX_ITEM_CHARS)).filter(|s| !s.is_empty());
        Ok(self)
    }

    /// The JSON Schema of an analysis, as given to providers for structured output.
    pub fn json_schema() -> Value {
        let list = |what: &str| json!({"type": "array", "items": {"type": "string"}, "description": what});
        json!({
            "type": "object",
            "properties": {
                "category": {"type": "string", "enum": CATEGORIES, "description": "The one category that fits best."},
                "summary": {"type": "string", "description": "One sentence describing the image."},
                "description": {"type": "string", "description": "A paragraph with the details a person might search for."},
                "tags": list("Short lower-case keywords."),
                "objects": list("Things visible in the image."),
                "colors": list("Dominant colours, by name."),
                "text": list("Text visible in the image, verbatim; empty if none."),
                "scene": {"type": "string", "description": "Where it is, e.g. 'beach at sunset', 'kitchen'."},
                "style": {"type": "string", "description": "photo, screenshot, illustration, document scan, ..."},
                "people_count": {"type": "integer", "description": "How many people are visible (0 if none)."}
            },
            "required": ["category", "summary", "description", "tags", "objects", "colors", "text", "scene", "style", "people_count"],
            "additionalProperties": false
        })
    }
}

/// At most `max_chars` characters of `s`, without the control characters
/// PostgreSQL refuses (NUL) or a reader cannot see.
fn truncate(s: &str, max_chars: usize) -> String {
    crate::text::clean(s).chars().take(max_chars).collect()
}

fn clean_list(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let item = truncate(item.trim(), MAX_ITEM_CHARS).trim().to_owned();
        if !item.is_empty() && !out.contains(&item) && out.len() < MAX_LIST_ITEMS {
            out.push(item);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis() -> Analysis {
        serde_json::from_value(json!({"category": " Food ", "summary": "  A bowl of ramen. ",
            "tags": ["Noodles", "noodles", " ", "soup"], "colors": ["Red"]}))
        .unwrap()
    }

    #[test]
    fn validation_normalises() {
        let a = analysis().validated().unwrap();
        assert_eq!(a.category, "food");
        assert_eq!(a.summary, "A bowl of ramen.");
        assert_eq!(a.tags, vec!["noodles", "soup"]);
        assert_eq!(a.colors, vec!["red"]);
        assert_eq!(a.description, "");
    }

    #[test]
    fn validation_rejects_unknown_categories_and_empty_summaries() {
        let mut a = analysis();
        a.category = "memes".into();
        assert_eq!(a.validated(), Err(InvalidAnalysis::UnknownCategory("memes".into())));
        let mut a = analysis();
        a.summary = "   ".into();
        assert_eq!(a.validated(), Err(InvalidAnalysis::EmptySummary));
    }

    #[test]
    fn trivially_right_values_are_accepted_and_odd_characters_cleaned() {
        let reply = json!({"category": "food", "summary": "Ramen\u{0} in a bowl", "description": null,
            "tags": "noodles", "objects": null, "colors": ["red\u{7}"], "text": []});
        let a = Analysis::from_reply(reply, "test").unwrap();
        assert_eq!(a.summary, "Ramen in a bowl");
        assert_eq!((a.tags, a.objects, a.colors), (vec!["noodles".to_owned()], vec![], vec!["red".to_owned()]));
        assert_eq!(a.description, "");
        let long = "é".repeat(5000);
        let a = Analysis::from_reply(json!({"category": "food", "summary": long, "description": long}), "t").unwrap();
        assert_eq!((a.summary.chars().count(), a.description.chars().count()), (300, 4000));
        let wrong = Analysis::from_reply(json!({"category": "food", "summary": "s", "tags": 3}), "test");
        assert!(matches!(wrong, Err(InvalidAnalysis::Schema(_))), "{wrong:?}");
    }

    #[test]
    fn schema_lists_every_field_and_category() {
        let schema = Analysis::json_schema();
        assert_eq!(schema["properties"]["category"]["enum"].as_array().unwrap().len(), CATEGORIES.len());
        let fields = serde_json::to_value(Analysis {
            scene: Some("x".into()),
            style: Some("photo".into()),
            people_count: Some(0),
            ..analysis()
        })
        .unwrap();
        for field in fields.as_object().unwrap().keys() {
            assert!(schema["properties"].get(field).is_some(), "{field} missing from the schema");
        }
    }
}
