//! Embeddings: the document built from an analysis, the provider port, and
//! its adapters (`local` here; remote ones beside it).

pub mod local;
pub mod openai;
pub mod voyage;

use async_trait::async_trait;
use serde_json::{Value, json};
use thiserror::Error;

use crate::api::ApiError;
use crate::llm::Analysis;
use serde_json::Value as Json;

/// Dimensions a provider is asked for unless `EMBEDDING_DIMENSIONS` says
/// otherwise. A model's vectors are stored at one size (`embedding_models`).
pub const DEFAULT_DIMENSIONS: usize = 1024;

/// The name vectors are stored under: the model's own name at
/// [`DEFAULT_DIMENSIONS`], `model@D` at any other size, so that one stored
/// name always means one size and a change of size is a change of model.
pub fn stored_model_name(model: &str, dimensions: usize) -> String {
    if dimensions == DEFAULT_DIMENSIONS { model.to_owned() } else { format!("{model}@{dimensions}") }
}

/// Whether a text is stored (an item) or searched for (a query): Voyage
/// embeds the two differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    Document,
    Query,
}

#[derive(Debug, Error, Clone, PartialEq)]
pub enum EmbeddingError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{model} returned {got}-dimensional vectors; it is configured for {expected}")]
    WrongDimensions { model: String, expected: usize, got: usize },
    #[error("{model} returned {got} vectors for {sent} texts")]
    WrongCount { model: String, sent: usize, got: usize },
    #[error(
        "{model} returned a vector with a value that is not a finite 32-bit number (NaN, infinite, or out of range)"
    )]
    NotFinite { model: String },
}

impl EmbeddingError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Api(e) if e.is_retriable())
    }
}

/// How many texts, and roughly how many tokens, one request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_texts: usize,
    pub max_tokens: usize,
}

/// The embedding providers, parsed once from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingProviderName {
    Voyage,
    OpenAi,
    Local,
}

impl EmbeddingProviderName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Voyage => "voyage",
            Self::OpenAi => "openai",
            Self::Local => "local",
        }
    }
}

impl std::str::FromStr for EmbeddingProviderName {
    type Err = String;

    /// Case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_lowercase().as_str() {
            "voyage" => Ok(Self::Voyage),
            "openai" => Ok(Self::OpenAi),
            "local" => Ok(Self::Local),
            _ => Err("expected voyage, openai or local".to_owned()),
        }
    }
}

/// An embedding model behind one interface, chosen by configuration.
#[async_trait]
pub trait EmbeddingProvider: Send + Sync {
    /// `voyage`, `openai` or `local`.
    fn provider(&self) -> &'static str;
    /// Stored as `embedding_model` (see [`stored_model_name`]); only vectors
    /// of the same model are compared.
    fn model(&self) -> &str;
    /// The length of every vector it returns.
    fn dimensions(&self) -> usize;
    fn limits(&self) -> BatchLimits;
    /// One vector per text, in order, each of [`Self::dimensions`].
    async fn embed(&self, texts: &[String], input_type: InputType) -> Result<Embedded, EmbeddingError>;
}

/// An embeddings reply: the vectors, and the tokens the provider counted
/// for the whole request, when it did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: Option<u64>,
}

/// What a reply is checked against: who answered, the stored model name,
/// the texts sent and the dimensions asked for.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub provider: &'static str,
    pub model: &'a str,
    pub sent: usize,
    pub dimensions: usize,
}

/// The vectors and usage of an embeddings reply (see [`parse_embeddings`]);
/// the usage is counted against the model for the batch metrics.
pub fn parse_embedded(expected: Expected<'_>, body: &Json) -> Result<Embedded, EmbeddingError> {
    let vectors = parse_embeddings(expected, body)?;
    let model = expected.model;
    let usage = crate::usage::Usage::of_reply(body);
    if let Some(used) = usage {
        crate::usage::count(model, used);
    }
    Ok(Embedded { vectors, tokens: usage.map(|u| u.total()) })
}

/// The vectors of an embeddings reply (`{"data": [{"index", "embedding"}]}`,
/// the shape Voyage and OpenAI share), in the order of the texts sent.
pub fn parse_embeddings(expected: Expected<'_>, body: &Json) -> Result<Vec<Vec<f32>>, EmbeddingError> {
    let Expected { provider, model, sent, dimensions } = expected;
    let malformed = |reason: String| EmbeddingError::Api(ApiError::Malformed { provider, reason });
    let data = body.get("data").and_then(Json::as_array).ok_or_else(|| malformed("no data array".into()))?;
    if data.len() != sent {
        return Err(EmbeddingError::WrongCount { model: model.to_owned(), sent, got: data.len() });
    }
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; sent];
    for (position, item) in data.iter().enumerate() {
        let index = item.get("index").and_then(Json::as_u64).map_or(position, |i| i as usize);
        let embedding = item
            .get("embedding")
            .and_then(Json::as_array)
            .and_then(|values| values.iter().map(|v| v.as_f64().map(|f| f as f32)).collect::<Option<Vec<f32>>>())
            .ok_or_else(|| malformed(format!("item {position} has no numeric embedding")))?;
        let slot = vectors.get_mut(index).ok_or_else(|| malformed(format!("index {index} out of range")))?;
        *slot = Some(embedding);
    }
    let vectors: Vec<Vec<f32>> =
        vectors.into_iter().collect::<Option<_>>().ok_or_else(|| malformed("an index is missing".into()))?;
    check_dimensions(model, dimensions, &vectors)?;
    Ok(vectors)
}

/// Every vector must have the model's number of dimensions.
pub fn check_dimensions(model: &str, expected: usize, vectors: &[Vec<f32>]) -> Result<(), EmbeddingError> {
    match vectors.iter().find(|v| v.len() != expected) {
        Some(bad) => Err(EmbeddingError::WrongDimensions { model: model.to_owned(), expected, got: bad.len() }),
        None => Ok(()),
    }
}

/// One vector as pgvector will take it: every value a finite `f32` (a
/// reply's `1e39` becomes infinity as an `f32`, and pgvector refuses it).
pub fn check_finite(model: &str, vector: &[f32]) -> Result<(), EmbeddingError> {
    if vector.iter().all(|x| x.is_finite()) {
        Ok(())
    } else {
        Err(EmbeddingError::NotFinite { model: model.to_owned() })
    }
}

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
    fn parses_replies_in_index_order_and_checks_them() {
        let expect = |model, sent, dimensions| Expected { provider: "p", model, sent, dimensions };
        let v = |x: f32| vec![x; 8];
        let body = json!({"data": [{"index": 1, "embedding": v(2.0)}, {"index": 0, "embedding": v(1.0)}]});
        assert_eq!(parse_embeddings(expect("m", 2, 8), &body).unwrap(), vec![v(1.0), v(2.0)]);
        assert_eq!(
            parse_embeddings(expect("m", 3, 8), &body),
            Err(EmbeddingError::WrongCount { model: "m".into(), sent: 3, got: 2 })
        );
        let short = json!({"data": [{"index": 0, "embedding": [0.5, 0.5]}]});
        let err = parse_embeddings(expect("voyage-x", 1, 1024), &short).unwrap_err();
        assert_eq!(err.to_string(), "voyage-x returned 2-dimensional vectors; it is configured for 1024");
        assert!(parse_embeddings(expect("m", 1, 8), &json!({"data": [{"index": 0, "embedding": "x"}]})).is_err());
    }

    #[test]
    fn a_size_other_than_the_default_is_part_of_the_stored_name() {
        assert_eq!(stored_model_name("voyage-3.5", DEFAULT_DIMENSIONS), "voyage-3.5");
        assert_eq!(stored_model_name("voyage-3.5", 512), "voyage-3.5@512");
    }

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
