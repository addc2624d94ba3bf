//! Builds the vision provider the configuration names, with its key.

use std::sync::Arc;

use shared::api::{JsonClient, SecretSource};
use shared::llm::anthropic::{self, AnthropicProvider};
use shared::llm::local::LocalAnalyzer;
use shared::llm::openai::{self, OpenAiProvider};
use shared::llm::{VisionProvider, VisionProviderName};

use crate::config::AnalyzerConfig;

/// The provider for `config.provider`. Keys are read from `secrets` once, here.
pub async fn build(config: &AnalyzerConfig, secrets: &dyn SecretSource) -> Result<Arc<dyn VisionProvider>, String> {
    let client = || JsonClient::new(config.provider.as_str(), config.timeout);
    let key = |name: &'static str| async move { secrets.get(name).await.map_err(|e| e.to_string()) };
    match config.provider {
        VisionProviderName::Local => Ok(Arc::new(LocalAnalyzer)),
        VisionProviderName::Anthropic => {
            let key = key("ANTHROPIC_API_KEY").await?.ok_or(
                "ANTHROPIC_API_KEY is not set (an environment variable locally, /collections/ANTHROPIC_API_KEY on AWS)",
            )?;
            Ok(Arc::new(AnthropicProvider::new(
                client(),
                config.base_url.as_deref().unwrap_or(anthropic::DEFAULT_BASE_URL),
                key,
                config.model.clone().unwrap_or_else(|| anthropic::DEFAULT_MODEL.to_owned()),
                config.max_tokens,
            )))
        }
        VisionProviderName::OpenAi => {
            let key = key("OPENAI_API_KEY").await?;
            // A compatible server on another URL (Ollama, vLLM) may need no key; OpenAI does.
            if key.is_none() && config.base_url.is_none() {
                return Err("OPENAI_API_KEY is not set, and OPENAI_BASE_URL names no other server".to_owned());
            }
            Ok(Arc::new(OpenAiProvider::new(
                client(),
                config.base_url.as_deref().unwrap_or(openai::DEFAULT_BASE_URL),
                key,
                config.model.clone().unwrap_or_else(|| openai::DEFAULT_MODEL.to_owned()),
                config.max_tokens,
            )))
        }
    }
}
