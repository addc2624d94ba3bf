//! The embedder stage's settings, read once at start.

use std::time::Duration;

use shared::config::{ConfigError, Env};
use shared::embedding::EmbeddingProviderName;
use shared::retry::RetryPolicy;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedderConfig {
    /// `EMBEDDING_PROVIDER`: `voyage`, `openai` or `local` (default `local`).
    pub provider: EmbeddingProviderName,
    /// The model: `VOYAGE_EMBEDDING_MODEL` (the seed's) for Voyage,
    /// `OPENAI_EMBEDDING_MODEL` for OpenAI-compatible servers; default: the provider's.
    pub model: Option<String>,
    /// `EMBEDDING_CONCURRENCY`: requests in flight at once (default 4).
    pub concurrency: usize,
    /// `EMBEDDING_MAX_BATCH`: most texts in one request (default: as many as
    /// the provider's limits allow).
    pub max_batch: Option<usize>,
    /// `EMBEDDING_TIMEOUT_SECS`: one request's limit, seconds (default 30).
    pub timeout: Duration,
    /// `EMBEDDING_MAX_ATTEMPTS` (default 4), `EMBEDDING_RETRY_BASE_MS` (default 500),
    /// `EMBEDDING_RETRY_MAX_SECS` (default 20): as the analyzer's.
    pub retry: RetryPolicy,
    /// `VOYAGE_BASE_URL` or `OPENAI_BASE_URL`, by provider (default: the provider's).
    pub base_url: Option<String>,
}

impl EmbedderConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let name = env.string_or("EMBEDDING_PROVIDER", "local");
        let provider: EmbeddingProviderName =
            name.parse().map_err(|reason| ConfigError::Invalid { name: "EMBEDDING_PROVIDER", value: name, reason })?;
        let (model, base_url) = match provider {
            EmbeddingProviderName::Voyage => (env.get("VOYAGE_EMBEDDING_MODEL"), env.get("VOYAGE_BASE_URL")),
            EmbeddingProviderName::OpenAi => (env.get("OPENAI_EMBEDDING_MODEL"), env.get("OPENAI_BASE_URL")),
            EmbeddingProviderName::Local => (None, None),
        };
        Ok(Self {
            provider,
            model,
            concurrency: env.parse_at_least("EMBEDDING_CONCURRENCY", 4, 1)?,
            max_batch: match env.get("EMBEDDING_MAX_BATCH") {
                Some(_) => Some(env.parse_at_least("EMBEDDING_MAX_BATCH", 1, 1)?),
                None => None,
            },
            timeout: Duration::from_secs(env.parse_at_least("EMBEDDING_TIMEOUT_SECS", 30, 1)?),
            retry: RetryPolicy {
                max_attempts: env.parse_at_least("EMBEDDING_MAX_ATTEMPTS", 4, 1)?,
                base_delay: Duration::from_millis(env.parse_at_least("EMBEDDING_RETRY_BASE_MS", 500, 1)?),
                max_delay: Duration::from_secs(env.parse_at_least("EMBEDDING_RETRY_MAX_SECS", 20, 1)?),
            },
            base_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_comes_from_the_provider_variable() {
        let c = EmbedderConfig::from_env(&Env::from_pairs([
            ("EMBEDDING_PROVIDER", "voyage"),
            ("VOYAGE_EMBEDDING_MODEL", "voyage-3-large"),
            ("OPENAI_EMBEDDING_MODEL", "ignored"),
        ]))
        .unwrap();
        assert_eq!((c.provider, c.model.as_deref()), (EmbeddingProviderName::Voyage, Some("voyage-3-large")));
        let local = EmbedderConfig::from_env(&Env::from_pairs([])).unwrap();
        assert_eq!((local.provider, local.model, local.concurrency), (EmbeddingProviderName::Local, None, 4));
        assert!(EmbedderConfig::from_env(&Env::from_pairs([("EMBEDDING_PROVIDER", "x")])).is_err());
    }
}
