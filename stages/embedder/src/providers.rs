//! Chooses the embedding provider the configuration names.

use std::sync::Arc;

use shared::embedding::EmbeddingProvider;
use shared::embedding::local::LocalEmbedder;

use crate::config::EmbedderConfig;

/// The provider for `config.provider`.
pub fn build(config: &EmbedderConfig) -> Result<Arc<dyn EmbeddingProvider>, String> {
    match config.provider.as_str() {
        "local" => Ok(Arc::new(LocalEmbedder)),
        other => Err(format!("the {other} embedding provider is not built yet; use EMBEDDING_PROVIDER=local")),
    }
}
