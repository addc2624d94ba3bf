//! The embedder stage's settings, read once at start: the active model and,
//! during a change of model on AWS, the re-embed model
//! (`embedding::EmbeddingSettings`), and how the stage calls them.

use domain::settings::{ConfigError, Env, Setting};
use embedding::EmbeddingSettings;
use remote::retry::{RetryPolicy, RetrySettings};

pub const CONCURRENCY: Setting = Setting::new("EMBEDDING_CONCURRENCY", "4", "requests in flight at once");
pub const MAX_BATCH: Setting =
    Setting::optional("EMBEDDING_MAX_BATCH", "the provider's limit", "most texts in one request");
pub const RETRY: RetrySettings = RetrySettings {
    max_attempts: Setting::new("EMBEDDING_MAX_ATTEMPTS", "4", "attempts per request, the first included"),
    base_ms: Setting::new("EMBEDDING_RETRY_BASE_MS", "500", "the first backoff's ceiling, ms (doubling each retry)"),
    max_secs: Setting::new(
        "EMBEDDING_RETRY_MAX_SECS",
        "20",
        "the longest backoff, seconds (a longer `retry-after` is honoured within the budget)",
    ),
    budget_secs: Setting::new(
        "EMBEDDING_RETRY_BUDGET_SECS",
        "300",
        "how long one request may be retried while the provider is out; past it the items stay pending, not failed",
    ),
};

/// The settings of this stage, for `docs/configuration.md` (the models'
/// are `embedding`'s).
pub fn settings() -> Vec<Setting> {
    [CONCURRENCY, MAX_BATCH].into_iter().chain(RETRY.all()).collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedderConfig {
    /// The active model: every record is embedded with it unless it asks
    /// for the re-embed model.
    pub active: EmbeddingSettings,
    /// The model of a change of model, used only for the records that ask
    /// for it (`collections reembed --stream`).
    pub reembed: Option<EmbeddingSettings>,
    /// [`CONCURRENCY`].
    pub concurrency: usize,
    /// [`MAX_BATCH`].
    pub max_batch: Option<usize>,
    /// [`RETRY`].
    pub retry: RetryPolicy,
}

impl EmbedderConfig {
    /// The stage as the environment configures it.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Self::with_models(env, EmbeddingSettings::from_env(env)?, EmbeddingSettings::reembed_from_env(env)?)
    }

    /// The stage embedding with `active` (a model given on the command line,
    /// say), and `reembed` for the records that ask for it.
    pub fn with_models(
        env: &Env,
        active: EmbeddingSettings,
        reembed: Option<EmbeddingSettings>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            active,
            reembed,
            concurrency: env.parse_at_least(&CONCURRENCY, 1)?,
            max_batch: env.parse_optional_at_least(&MAX_BATCH, 1)?,
            retry: RETRY.read(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use embedding::EmbeddingProviderName;

    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = EmbedderConfig::from_env(&Env::from_pairs([])).unwrap();
        assert_eq!((c.active.provider, c.concurrency, c.max_batch), (EmbeddingProviderName::Local, 4, None));
        assert_eq!((c.retry.max_attempts, c.reembed), (4, None));
        let c = EmbedderConfig::from_env(&Env::from_pairs([
            ("EMBEDDING_MAX_BATCH", "64"),
            ("REEMBED_PROVIDER", "voyage"),
            ("REEMBED_MODEL", "voyage-4"),
        ]))
        .unwrap();
        assert_eq!(c.max_batch, Some(64));
        assert_eq!(c.reembed.map(|r| r.stored_name()).as_deref(), Some("voyage-4"));
        assert!(EmbedderConfig::from_env(&Env::from_pairs([("EMBEDDING_MAX_BATCH", "0")])).is_err());
    }
}
