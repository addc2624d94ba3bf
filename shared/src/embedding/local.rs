//! The offline embedder: feature hashing of words and their character
//! trigrams into [`EMBEDDING_DIMENSIONS`] signed buckets, L2-normalised.
//! Deterministic, free, and meaningful for cosine similarity: texts that share
//! words (or most of a word) point the same way.

use async_trait::async_trait;

use super::{BatchLimits, EMBEDDING_DIMENSIONS, Embedded, EmbeddingError, EmbeddingProvider, InputType};

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

#[derive(Debug, Clone, Default)]
pub struct LocalEmbedder;

impl LocalEmbedder {
    pub fn embed_text(text: &str) -> Vec<f32> {
        let mut v = vec![0f32; EMBEDDING_DIMENSIONS];
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
        LOCAL_MODEL
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits { max_texts: 1000, max_tokens: usize::MAX }
    }

    /// Counts no tokens: it costs nothing.
    async fn embed(&self, texts: &[String], _input_type: InputType) -> Result<Embedded, EmbeddingError> {
        Ok(Embedded { vectors: texts.iter().map(|t| Self::embed_text(t)).collect(), tokens: None })
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
        assert_eq!(v.len(), EMBEDDING_DIMENSIONS);
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
