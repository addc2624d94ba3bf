//! Which vision provider analyses images, and how it is reached: read once
//! from the environment (or given by `collections reanalyze --provider
//! --model`), then [`VisionSettings::build`] makes the provider with its key.

use std::sync::Arc;
use std::time::Duration;

use const_format::concatcp;
use domain::settings::{ConfigError, Env, Setting};
use remote::secrets::{ANTHROPIC_API_KEY, OPENAI_API_KEY};
use remote::{JsonClient, OPENAI_BASE_URL, SecretSource};

use crate::anthropic::{self, AnthropicBatches, AnthropicProvider};
use crate::local::LocalAnalyzer;
use crate::openai::{self, OpenAiBatches, OpenAiProvider};
use crate::{VisionBatches, VisionProvider};

pub const PROVIDER: Setting = Setting::new("ANALYZER_PROVIDER", "local", "`anthropic`, `openai` or `local`");
pub const MODEL: Setting = Setting::optional(
    "ANALYZER_MODEL",
    concatcp!("`", anthropic::DEFAULT_MODEL, "` (anthropic), `", openai::DEFAULT_MODEL, "` (openai)"),
    "the vision model",
);
pub const TIMEOUT_SECS: Setting = Setting::new("ANALYZER_TIMEOUT_SECS", "60", "one call's limit, seconds");
pub const MAX_TOKENS: Setting = Setting::new("ANALYZER_MAX_TOKENS", "1024", "longest reply, tokens (at least 64)");
pub const ANTHROPIC_BASE_URL: Setting =
    Setting::new("ANTHROPIC_BASE_URL", anthropic::DEFAULT_BASE_URL, "where Anthropic's Messages API is");

/// The settings of this crate, for `docs/configuration.md` (`OPENAI_BASE_URL`
/// is `remote`'s, shared with the embedding providers).
pub const SETTINGS: &[Setting] = &[PROVIDER, MODEL, TIMEOUT_SECS, MAX_TOKENS, ANTHROPIC_BASE_URL];

/// The vision providers, parsed once from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionProviderName {
    Anthropic,
    OpenAi,
    Local,
}

impl VisionProviderName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::OpenAi => "openai",
            Self::Local => "local",
        }
    }
}

impl std::str::FromStr for VisionProviderName {
    type Err = String;

    /// Case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_lowercase().as_str() {
            "anthropic" => Ok(Self::Anthropic),
            "openai" => Ok(Self::OpenAi),
            "local" => Ok(Self::Local),
            _ => Err("expected anthropic, openai or local".to_owned()),
        }
    }
}

/// One vision provider and model, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisionSettings {
    pub provider: VisionProviderName,
    /// The provider's model; `None`: its default.
    pub model: Option<String>,
    /// Where the API is, by provider; `None`: the provider's own.
    pub base_url: Option<String>,
    pub timeout: Duration,
    pub max_tokens: u32,
}

impl VisionSettings {
    /// The provider and model the environment names.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Self::of(env, env.parse(&PROVIDER)?, env.value(&MODEL))
    }

    /// `provider` and `model` (given on the command line, say), reached as
    /// the environment says.
    pub fn of(env: &Env, provider: VisionProviderName, model: Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            provider,
            model,
            base_url: match provider {
                VisionProviderName::Anthropic => env.value(&ANTHROPIC_BASE_URL),
                VisionProviderName::OpenAi => env.value(&OPENAI_BASE_URL),
                VisionProviderName::Local => None,
            },
            timeout: Duration::from_secs(env.parse_at_least(&TIMEOUT_SECS, 1)?),
            max_tokens: env.parse_at_least(&MAX_TOKENS, 64)?,
        })
    }

    /// The provider, with its key read from `secrets` (once, here).
    pub async fn build(&self, secrets: &dyn SecretSource) -> Result<Arc<dyn VisionProvider>, String> {
        match self.provider {
            VisionProviderName::Local => Ok(Arc::new(LocalAnalyzer)),
            VisionProviderName::Anthropic => Ok(Arc::new(self.anthropic(secrets).await?)),
            VisionProviderName::OpenAi => Ok(Arc::new(self.openai(secrets).await?)),
        }
    }
}

impl VisionSettings {
    async fn anthropic(&self, secrets: &dyn SecretSource) -> Result<AnthropicProvider, String> {
        let key = secrets
            .get(ANTHROPIC_API_KEY.name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("ANTHROPIC_API_KEY is not set (an environment variable locally, an SSM parameter on AWS)")?;
        Ok(AnthropicProvider::new(
            JsonClient::new(self.provider.as_str(), self.timeout),
            self.base_url.as_deref().unwrap_or(anthropic::DEFAULT_BASE_URL),
            key,
            self.model.clone().unwrap_or_else(|| anthropic::DEFAULT_MODEL.to_owned()),
            self.max_tokens,
        ))
    }

    async fn openai(&self, secrets: &dyn SecretSource) -> Result<OpenAiProvider, String> {
        let key = secrets.get(OPENAI_API_KEY.name).await.map_err(|e| e.to_string())?;
        // A compatible server on another URL (Ollama, vLLM) may need no key; OpenAI does.
        if key.is_none() && self.base_url.is_none() {
            return Err("OPENAI_API_KEY is not set, and OPENAI_BASE_URL names no other server".to_owned());
        }
        Ok(OpenAiProvider::new(
            JsonClient::new(self.provider.as_str(), self.timeout),
            self.base_url.as_deref().unwrap_or(remote::OPENAI_API_URL),
            key,
            self.model.clone().unwrap_or_else(|| openai::DEFAULT_MODEL.to_owned()),
            self.max_tokens,
        ))
    }

    /// The provider's batch API (`--batch-api`), with its key read from
    /// `secrets`: Anthropic's Message Batches, or OpenAI's Batch API (a
    /// compatible server must offer `/files` and `/batches` as OpenAI does).
    pub async fn build_batches(&self, secrets: &dyn SecretSource) -> Result<Arc<dyn VisionBatches>, String> {
        match self.provider {
            VisionProviderName::Anthropic => Ok(Arc::new(AnthropicBatches::new(self.anthropic(secrets).await?))),
            VisionProviderName::OpenAi => Ok(Arc::new(OpenAiBatches::new(self.openai(secrets).await?))),
            VisionProviderName::Local => Err("the local analyzer has no batch API (it costs nothing): run without \
                 --batch-api, or set ANALYZER_PROVIDER=anthropic"
                .to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let local = VisionSettings::from_env(&Env::from_pairs([])).unwrap();
        assert_eq!((local.provider, local.model, local.base_url), (VisionProviderName::Local, None, None));
        assert_eq!((local.timeout, local.max_tokens), (Duration::from_secs(60), 1024));
        let chosen = VisionSettings::from_env(&Env::from_pairs([
            ("ANALYZER_PROVIDER", "Anthropic"),
            ("ANALYZER_MODEL", "claude-x"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/"),
        ]))
        .unwrap();
        assert_eq!(
            (chosen.provider, chosen.model.as_deref(), chosen.base_url.as_deref()),
            (VisionProviderName::Anthropic, Some("claude-x"), Some("http://127.0.0.1:9/"))
        );
        let err = VisionSettings::from_env(&Env::from_pairs([("ANALYZER_PROVIDER", "gemini")])).unwrap_err();
        assert!(err.to_string().contains("expected anthropic, openai or local"));
    }
}
