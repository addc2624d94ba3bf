//! The analyzer stage's settings, read once at start.

use std::time::Duration;

use shared::config::{ConfigError, Env};
use shared::llm::VisionProviderName;
use shared::retry::RetryPolicy;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyzerConfig {
    /// `ANALYZER_PROVIDER`: `anthropic`, `openai` or `local` (default `local`).
    pub provider: VisionProviderName,
    /// `ANALYZER_MODEL`: the provider's model (default: the provider's own default).
    pub model: Option<String>,
    /// `ANALYZER_CONCURRENCY`: provider calls in flight at once, per process (default 8).
    pub concurrency: usize,
    /// `ANALYZER_TIMEOUT_SECS`: one call's limit, seconds (default 60).
    pub timeout: Duration,
    /// `ANALYZER_MAX_ATTEMPTS`: attempts per item, the first included (default 4);
    /// `ANALYZER_RETRY_BASE_MS`: first backoff ceiling, ms (default 500);
    /// `ANALYZER_RETRY_MAX_SECS`: longest wait, seconds (default 20).
    pub retry: RetryPolicy,
    /// `ANALYZER_MAX_IMAGE_MIB`: largest image sent, MiB (default 5: Anthropic's limit).
    pub max_image_bytes: u64,
    /// `ANALYZER_MAX_TOKENS`: longest reply, tokens (default 1024).
    pub max_tokens: u32,
    /// `ANTHROPIC_BASE_URL` or `OPENAI_BASE_URL`, by provider: where the API
    /// is (default: the provider's; for Ollama e.g. `http://localhost:11434/v1`).
    pub base_url: Option<String>,
}

impl AnalyzerConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let name = env.string_or("ANALYZER_PROVIDER", "local");
        let provider: VisionProviderName =
            name.parse().map_err(|reason| ConfigError::Invalid { name: "ANALYZER_PROVIDER", value: name, reason })?;
        Ok(Self {
            model: env.get("ANALYZER_MODEL"),
            concurrency: env.parse_at_least("ANALYZER_CONCURRENCY", 8, 1)?,
            timeout: Duration::from_secs(env.parse_at_least("ANALYZER_TIMEOUT_SECS", 60, 1)?),
            retry: RetryPolicy {
                max_attempts: env.parse_at_least("ANALYZER_MAX_ATTEMPTS", 4, 1)?,
                base_delay: Duration::from_millis(env.parse_at_least("ANALYZER_RETRY_BASE_MS", 500, 1)?),
                max_delay: Duration::from_secs(env.parse_at_least("ANALYZER_RETRY_MAX_SECS", 20, 1)?),
            },
            max_image_bytes: env.parse_at_least("ANALYZER_MAX_IMAGE_MIB", 5u64, 1)? << 20,
            max_tokens: env.parse_at_least("ANALYZER_MAX_TOKENS", 1024, 64)?,
            base_url: match provider {
                VisionProviderName::Anthropic => env.get("ANTHROPIC_BASE_URL"),
                VisionProviderName::OpenAi => env.get("OPENAI_BASE_URL"),
                VisionProviderName::Local => None,
            },
            provider,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = AnalyzerConfig::from_env(&Env::from_pairs([])).unwrap();
        assert_eq!((c.provider, c.concurrency, c.retry.max_attempts), (VisionProviderName::Local, 8, 4));
        assert_eq!(c.timeout, Duration::from_secs(60));
        assert_eq!(c.max_image_bytes, 5 << 20);
        let c = AnalyzerConfig::from_env(&Env::from_pairs([
            ("ANALYZER_PROVIDER", "Anthropic"),
            ("ANALYZER_MODEL", "claude-x"),
            ("ANALYZER_CONCURRENCY", "16"),
        ]))
        .unwrap();
        assert_eq!(
            (c.provider, c.model.as_deref(), c.concurrency),
            (VisionProviderName::Anthropic, Some("claude-x"), 16)
        );
        let err = AnalyzerConfig::from_env(&Env::from_pairs([("ANALYZER_PROVIDER", "gemini")])).unwrap_err();
        assert!(err.to_string().contains("expected anthropic, openai or local"));
    }
}
