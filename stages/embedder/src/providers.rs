//! Builds the embedding provider the configuration names, with its key.

use std::sync::Arc;

use shared::api::{JsonClient, SecretSource};
use shared::embedding::local::LocalEmbedder;
use shared::embedding::openai::{self, OpenAiEmbeddings};
use shared::embedding::voyage::{self, VoyageProvider};
use shared::embedding::{EmbeddingProvider, EmbeddingProviderName};

use crate::config::{EmbedderConfig, EmbeddingTarget};

/// The provider of the active model. Keys are read from `secrets` once, here.
pub async fn build(config: &EmbedderConfig, secrets: &dyn SecretSource) -> Result<Arc<dyn EmbeddingProvider>, String> {
    build_target(&config.active(), config.timeout, secrets).await
}

/// The provider of the re-embed model, when one is configured.
pub async fn build_reembed(
    config: &EmbedderConfig,
    secrets: &dyn SecretSource,
) -> Result<Option<Arc<dyn EmbeddingProvider>>, String> {
    match &config.reembed {
        Some(target) => Ok(Some(build_target(target, config.timeout, secrets).await?)),
        None => Ok(None),
    }
}

/// The name `target`'s vectors are stored under, without building it (no key needed).
pub fn stored_name(target: &EmbeddingTarget) -> String {
    let model = match target.provider {
        EmbeddingProviderName::Voyage => target.model.as_deref().unwrap_or(voyage::DEFAULT_MODEL),
        EmbeddingProviderName::OpenAi => target.model.as_deref().unwrap_or(openai::DEFAULT_MODEL),
        EmbeddingProviderName::Local => shared::embedding::local::LOCAL_MODEL,
    };
    shared::embedding::stored_model_name(model, target.dimensions)
}

async fn build_target(
    config: &EmbeddingTarget,
    timeout: std::time::Duration,
    secrets: &dyn SecretSource,
) -> Result<Arc<dyn EmbeddingProvider>, String> {
    let key = |name: &'static str| async move { secrets.get(name).await.map_err(|e| e.to_string()) };
    match config.provider {
        EmbeddingProviderName::Local => Ok(Arc::new(LocalEmbedder::new(config.dimensions))),
        EmbeddingProviderName::Voyage => {
            let key = key("VOYAGE_API_KEY").await?.ok_or(
                "VOYAGE_API_KEY is not set (an environment variable locally, /collections/VOYAGE_API_KEY on AWS)",
            )?;
            Ok(Arc::new(VoyageProvider::new(
                JsonClient::new("voyage", timeout),
                config.base_url.as_deref().unwrap_or(voyage::DEFAULT_BASE_URL),
                key,
                config.model.clone().unwrap_or_else(|| voyage::DEFAULT_MODEL.to_owned()),
                config.dimensions,
            )))
        }
        EmbeddingProviderName::OpenAi => {
            let key = key("OPENAI_API_KEY").await?;
            if key.is_none() && config.base_url.is_none() {
                return Err("OPENAI_API_KEY is not set, and OPENAI_BASE_URL names no other server".to_owned());
            }
            Ok(Arc::new(OpenAiEmbeddings::new(
                JsonClient::new("openai", timeout),
                config.base_url.as_deref().unwrap_or(openai::DEFAULT_BASE_URL),
                key,
                config.model.clone().unwrap_or_else(|| openai::DEFAULT_MODEL.to_owned()),
                config.dimensions,
            )))
        }
    }
}
