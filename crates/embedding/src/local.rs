//! The offline embedder: feature hashing of words and their character
//! trigrams into signed buckets (1024 unless configured), L2-normalised.
//! Deterministic, free, and meaningful for cosine similarity: texts that share
//! words (or most of a word) point the same way.

use async_trait::async_trait;

use super::{
    BatchLimits, DEFAULT_DIMENSIONS, Embedded, EmbeddingError, EmbeddingProvider, InputType, stored_model_name,
};

pub const LOCAL_MODEL: &str = "local-hashing-v1";

/// Words too common to say anything about an image.
const STOP_WORDS: [&str; 36] = [
    "a",
    "an",
    "and",
    "are",
    "as",
    "at",
    "be",
    "by",
    "for",
    "from",
    "has",
    "in",
    "is",
    "it",
    "its",
    "of",
    "on",
    "or",
    "that",
    "the",
    "this",
    "to",
    "was",
    "with",
    "not",
    "no",
    "does",
    "image",
    "photo",
    "picture",
    "mostly",
    "taken",
    "summary",
    "category",
    "description",
    "tags",
];

#[derive(Debug, Clone)]
pub struct LocalEmbedder {
    dimensions: usize,
    /// [`LOCAL_MODEL`], with the size when it is not the default.
    model: String,
}

impl Default for LocalEmbedder {
    fn default() -> Self {
        Self::new(DEFAULT_DIMENSIONS)
    }
}

/// Whether vectors stored under `model` came from the local embedder.
pub fn is_local_model(model: &str) -> bool {
    model == LOCAL_MODEL || model.strip_prefix(LOCAL_MODEL).is_some_and(|rest| rest.starts_with('@'))
}

impl LocalEmbedder {
    pub fn new(dimensions: usize) -> Self {
        Self { dimensions, model: stored_model_name(LOCAL_MODEL, dimensions) }
    }

    /// `text` at the default size.
    pub fn embed_text(text: &str) -> Vec<f32> {
        Self::embed_text_in(text, DEFAULT_DIMENSIONS)
    }

    pub fn embed_text_in(text: &str, dimensions: usize) -> Vec<f32> {
        let mut v = vec![0f32; dimensions.max(1)];
        for word in words(text) {
            add(&mut v, word.as_bytes(), 1.0);
            let padded: Vec<char> = format!("<{word}>").chars().collect();
            for gram in padded.windows(3) {
                add(&mut v, gram.iter().collect::<String>().as_bytes(), 0.25);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

/// Lower-cased words without stop words, with a plural `s` taken off.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .map(|w| match w.strip_suffix('s') {
            Some(stem) if stem.chars().count() >= 3 && !stem.ends_with('s') => stem.to_owned(),
            _ => w,
        })
}

/// Adds `weight` to the bucket of `feature`, with a sign from the hash so
/// that collisions cancel out on average instead of piling up.
fn add(v: &mut [f32], feature: &[u8], weight: f32) {
    let h = fnv1a(feature);
    let bucket = (h % v.len() as u64) as usize;
    v[bucket] += if h >> 63 == 0 { weight } else { -weight };
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[async_trait]
impl EmbeddingProvider for LocalEmbedder {
    fn provider(&self) -> &'static str {
        "local"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits { max_texts: 1000, max_tokens: usize::MAX }
    }

    /// Counts no tokens: it costs nothing.
    async fn embed(&self, texts: &[String], _input_type: InputType) -> Result<Embedded, EmbeddingError> {
        Ok(Embedded { vectors: texts.iter().map(|t| Self::embed_text_in(t, self.dimensions)).collect(), usage: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn unit_length_deterministic_and_of_the_stored_dimensions() {
        let v = LocalEmbedder::embed_text("A bright blue sky over the sea");
        assert_eq!(v.len(), DEFAULT_DIMENSIONS);
        assert_eq!(LocalEmbedder::embed_text_in("blue sky", 384).len(), 384);
        assert_eq!(LocalEmbedder::new(384).model(), "local-hashing-v1@384");
        assert!(is_local_model("local-hashing-v1@384") && is_local_model(LOCAL_MODEL));
        assert!(!is_local_model("local-hashing-v10"));
        assert!((cosine(&v, &v) - 1.0).abs() < 1e-5);
        assert_eq!(v, LocalEmbedder::embed_text("A bright blue sky over the sea"));
        assert!(LocalEmbedder::embed_text("the of and").iter().all(|x| *x == 0.0));
    }

    #[test]
    fn shared_words_are_closer_than_unrelated_ones() {
        let query = LocalEmbedder::embed_text("blue sky");
        let sky = LocalEmbedder::embed_text("Landscape image, mostly blue and white; bright skies");
        let forest = LocalEmbedder::embed_text("Portrait image, mostly green and brown; dark, blurry");
        assert!(cosine(&query, &sky) > cosine(&query, &forest) + 0.2);
        let plural = LocalEmbedder::embed_text("cats");
        assert!(cosine(&plural, &LocalEmbedder::embed_text("cat")) > 0.99);
    }
}
