//! The analyzer stage's settings, read once at start: the vision provider
//! (`vision::VisionSettings`), and how the stage calls it.

use std::time::Duration;

use domain::settings::{ConfigError, Env, Setting};
use remote::retry::{RetryPolicy, RetrySettings};
use vision::VisionSettings;

pub const CONCURRENCY: Setting =
    Setting::new("ANALYZER_CONCURRENCY", "8", "provider calls in flight at once, per process");
pub const RETRY: RetrySettings = RetrySettings {
    max_attempts: Setting::new("ANALYZER_MAX_ATTEMPTS", "4", "attempts per item, the first included"),
    base_ms: Setting::new("ANALYZER_RETRY_BASE_MS", "500", "the first backoff's ceiling, ms (doubling each retry)"),
    max_secs: Setting::new(
        "ANALYZER_RETRY_MAX_SECS",
        "20",
        "the longest backoff, seconds (a longer `retry-after` is honoured within the budget)",
    ),
    budget_secs: Setting::new(
        "ANALYZER_RETRY_BUDGET_SECS",
        "300",
        "how long one call may be retried while the provider is out (overloaded, throttling, not answering); \
         past it the item stays pending, not failed (on Lambda: no later than the invocation's deadline)",
    ),
};
pub const MAX_IMAGE_MIB: Setting =
    Setting::new("ANALYZER_MAX_IMAGE_MIB", "5", "largest image sent, MiB (Anthropic's limit)");
pub const BATCH_MAX_REQUESTS: Setting = Setting::new(
    "ANALYZER_BATCH_MAX_REQUESTS",
    "10000",
    "`--batch-api`: most requests in one provider batch (Anthropic takes 100 000)",
);
pub const BATCH_MAX_MIB: Setting = Setting::new(
    "ANALYZER_BATCH_MAX_MIB",
    "100",
    "`--batch-api`: largest provider batch, MiB of requests (Anthropic takes 256, OpenAI 200); about twice this is \
     held in memory while one is submitted",
);
pub const BATCH_MAX_AGE_SECS: Setting = Setting::new(
    "ANALYZER_BATCH_MAX_AGE_SECS",
    "60",
    "`--batch-api`: a batch is submitted when it is full or its oldest request has waited this long, seconds \
     (at the end of a run, at once)",
);
pub const BATCH_POLL_SECS: Setting = Setting::new(
    "ANALYZER_BATCH_POLL_SECS",
    "30",
    "`--batch-api`: the first wait before asking about batches in progress, seconds (then longer, up to 10 minutes)",
);

/// The settings of this stage, for `docs/configuration.md` (the provider's
/// are `vision`'s).
pub fn settings() -> Vec<Setting> {
    [CONCURRENCY]
        .into_iter()
        .chain(RETRY.all())
        .chain([MAX_IMAGE_MIB, BATCH_MAX_REQUESTS, BATCH_MAX_MIB, BATCH_MAX_AGE_SECS, BATCH_POLL_SECS])
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyzerConfig {
    /// Which provider and model, and how to reach it.
    pub vision: VisionSettings,
    /// [`CONCURRENCY`].
    pub concurrency: usize,
    /// [`RETRY`].
    pub retry: RetryPolicy,
    /// [`MAX_IMAGE_MIB`], in bytes.
    pub max_image_bytes: u64,
    /// How requests are grouped into provider batches (`--batch-api`).
    pub batches: BatchLimits,
}

/// How requests are grouped into provider batches, and how often they are asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// [`BATCH_MAX_REQUESTS`].
    pub max_requests: usize,
    /// [`BATCH_MAX_MIB`], in bytes.
    pub max_bytes: usize,
    /// [`BATCH_MAX_AGE_SECS`].
    pub max_age: Duration,
    /// [`BATCH_POLL_SECS`]: the first wait; each wait with nothing new doubles it.
    pub poll: Duration,
}

impl BatchLimits {
    /// The longest wait between polls.
    pub const MAX_POLL: Duration = Duration::from_secs(600);
}

impl AnalyzerConfig {
    /// The stage as the environment configures it.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Self::with_vision(env, VisionSettings::from_env(env)?)
    }

    /// The stage calling `vision` (a provider given on the command line, say).
    pub fn with_vision(env: &Env, vision: VisionSettings) -> Result<Self, ConfigError> {
        Ok(Self {
            vision,
            concurrency: env.parse_at_least(&CONCURRENCY, 1)?,
            retry: RETRY.read(env)?,
            max_image_bytes: env.parse_at_least(&MAX_IMAGE_MIB, 1u64)? << 20,
            batches: BatchLimits {
                max_requests: env.parse_at_least(&BATCH_MAX_REQUESTS, 1)?,
                max_bytes: env.parse_at_least(&BATCH_MAX_MIB, 1usize)? << 20,
                max_age: Duration::from_secs_f64(env.parse_at_least(&BATCH_MAX_AGE_SECS, 0.0f64)?.min(86_400.0)),
                poll: Duration::from_secs_f64(env.parse_at_least(&BATCH_POLL_SECS, 0.01f64)?.min(86_400.0)),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use vision::VisionProviderName;

    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = AnalyzerConfig::from_env(&Env::from_pairs([])).unwrap();
        assert_eq!((c.vision.provider, c.concurrency, c.retry.max_attempts), (VisionProviderName::Local, 8, 4));
        assert_eq!((c.retry.base_delay, c.retry.max_delay), (Duration::from_millis(500), Duration::from_secs(20)));
        assert_eq!(c.max_image_bytes, 5 << 20);
        let c = AnalyzerConfig::from_env(&Env::from_pairs([
            ("ANALYZER_PROVIDER", "Anthropic"),
            ("ANALYZER_MODEL", "claude-x"),
            ("ANALYZER_CONCURRENCY", "16"),
        ]))
        .unwrap();
        assert_eq!(
            (c.vision.provider, c.vision.model.as_deref(), c.concurrency),
            (VisionProviderName::Anthropic, Some("claude-x"), 16)
        );
        let err = AnalyzerConfig::from_env(&Env::from_pairs([("ANALYZER_PROVIDER", "gemini")])).unwrap_err();
        assert!(err.to_string().contains("expected anthropic, openai or local"));
    }
}
