//! The embedder stage's settings, read once at start.

use std::time::Duration;

use shared::config::{ConfigError, Env};
use shared::embedding::{DEFAULT_DIMENSIONS, EmbeddingProviderName};
use shared::retry::RetryPolicy;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedderConfig {
    /// `EMBEDDING_PROVIDER`: `voyage`, `openai` or `local` (default `local`).
    pub provider: EmbeddingProviderName,
    /// The model: `VOYAGE_EMBEDDING_MODEL` (the seed's) for Voyage,
    /// `OPENAI_EMBEDDING_MODEL` for OpenAI-compatible servers; default: the provider's.
    pub model: Option<String>,
    /// `EMBEDDING_DIMENSIONS`: the vectors' length (default 1024). Another
    /// size is stored as another model (`model@D`); see the README.
    pub dimensions: usize,
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
    /// `REEMBED_PROVIDER`, `REEMBED_MODEL`, `REEMBED_DIMENSIONS`: the model
    /// of a change of model, used only for the records that ask for it
    /// (`collections reembed --stream`); none unless `REEMBED_PROVIDER` is set.
    pub reembed: Option<EmbeddingTarget>,
}

/// One embedding model to build a provider for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingTarget {
    pub provider: EmbeddingProviderName,
    /// The provider's model name; `None`: the provider's default.
    pub model: Option<String>,
    pub dimensions: usize,
    /// `VOYAGE_BASE_URL` or `OPENAI_BASE_URL`, by provider.
    pub base_url: Option<String>,
}

fn provider_name(env: &Env, variable: &'static str, default: &str) -> Result<EmbeddingProviderName, ConfigError> {
    let name = env.string_or(variable, default);
    name.parse().map_err(|reason| ConfigError::Invalid { name: variable, value: name, reason })
}

fn dimensions(env: &Env, variable: &'static str) -> Result<usize, ConfigError> {
    match env.parse_at_least(variable, DEFAULT_DIMENSIONS, 1)? {
        // pgvector's limit for a stored vector.
        d if d > 16_000 => {
            let reason = "pgvector stores at most 16000 dimensions".to_owned();
            Err(ConfigError::Invalid { name: variable, value: d.to_string(), reason })
        }
        d => Ok(d),
    }
}

fn base_url(env: &Env, provider: EmbeddingProviderName) -> Option<String> {
    match provider {
        EmbeddingProviderName::Voyage => env.get("VOYAGE_BASE_URL"),
        EmbeddingProviderName::OpenAi => env.get("OPENAI_BASE_URL"),
        EmbeddingProviderName::Local => None,
    }
}

impl EmbedderConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let provider = provider_name(env, "EMBEDDING_PROVIDER", "local")?;
        let model = match provider {
            EmbeddingProviderName::Voyage => env.get("VOYAGE_EMBEDDING_MODEL"),
            EmbeddingProviderName::OpenAi => env.get("OPENAI_EMBEDDING_MODEL"),
            EmbeddingProviderName::Local => None,
        };
        let reembed = match env.get("REEMBED_PROVIDER") {
            Some(_) => {
                let provider = provider_name(env, "REEMBED_PROVIDER", "local")?;
                Some(EmbeddingTarget {
                    provider,
                    model: env.get("REEMBED_MODEL"),
                    dimensions: dimensions(env, "REEMBED_DIMENSIONS")?,
                    base_url: base_url(env, provider),
                })
            }
            None => None,
        };
        Ok(Self {
            provider,
            model,
            dimensions: dimensions(env, "EMBEDDING_DIMENSIONS")?,
            reembed,
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
            base_url: base_url(env, provider),
        })
    }

    /// The active model: the one every record is embedded with unless it
    /// asks for the re-embed model.
    pub fn active(&self) -> EmbeddingTarget {
        EmbeddingTarget {
            provider: self.provider,
            model: self.model.clone(),
            dimensions: self.dimensions,
            base_url: self.base_url.clone(),
        }
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
        assert_eq!(local.dimensions, 1024);
        let small = EmbedderConfig::from_env(&Env::from_pairs([("EMBEDDING_DIMENSIONS", "384")])).unwrap();
        assert_eq!(small.dimensions, 384);
        assert!(EmbedderConfig::from_env(&Env::from_pairs([("EMBEDDING_DIMENSIONS", "16001")])).is_err());
        assert_eq!(local.reembed, None);
        let changing = EmbedderConfig::from_env(&Env::from_pairs([
            ("REEMBED_PROVIDER", "openai"),
            ("REEMBED_MODEL", "text-embedding-3-large"),
            ("REEMBED_DIMENSIONS", "3072"),
            ("OPENAI_BASE_URL", "http://models.internal/v1"),
        ]))
        .unwrap();
        let target = changing.reembed.unwrap();
        assert_eq!(
            (target.provider, target.model.as_deref(), target.dimensions),
            (EmbeddingProviderName::OpenAi, Some("text-embedding-3-large"), 3072)
        );
        assert_eq!(target.base_url.as_deref(), Some("http://models.internal/v1"));
        assert!(EmbedderConfig::from_env(&Env::from_pairs([("REEMBED_PROVIDER", "x")])).is_err());
    }
}
