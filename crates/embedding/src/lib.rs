//! Embeddings: the provider port and what a reply must be, its adapters
//! (Voyage, OpenAI-compatible, and the offline `local` embedder), the
//! document embedded for an analysis, and the settings that choose and
//! build a provider.

pub mod document;
pub mod local;
pub mod openai;
pub mod settings;
pub mod voyage;

use std::time::Duration;

use async_trait::async_trait;
use domain::retry::Retriable;
use domain::usage::Usage;
use remote::ApiError;
use serde_json::Value as Json;
use thiserror::Error;

pub use settings::{EmbeddingProviderName, EmbeddingSettings};

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

impl Retriable for EmbeddingError {
    /// Only the API's faults: a wrong reply says the model is misconfigured.
    fn is_retriable(&self) -> bool {
        matches!(self, Self::Api(e) if e.is_retriable())
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api(e) => e.retry_after(),
            _ => None,
        }
    }

    fn is_configuration_fault(&self) -> bool {
        matches!(self, Self::Api(e) if e.is_configuration_fault())
    }

    fn is_outage(&self) -> bool {
        matches!(self, Self::Api(e) if e.is_outage())
    }
}

/// How many texts, and roughly how many tokens, one request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_texts: usize,
    pub max_tokens: usize,
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

/// An embeddings reply: the vectors, and what the provider counted for the
/// whole request, when it did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub usage: Option<Usage>,
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

/// The vectors and usage of an embeddings reply (see [`parse_embeddings`]).
pub fn parse_embedded(expected: Expected<'_>, body: &Json) -> Result<Embedded, EmbeddingError> {
    let vectors = parse_embeddings(expected, body)?;
    Ok(Embedded { vectors, usage: Usage::of_reply(body) })
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

#[cfg(test)]
mod tests {
    use serde_json::json;

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
}
