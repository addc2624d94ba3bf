//! Chooses the vision provider the configuration names.

use std::sync::Arc;

use shared::llm::VisionProvider;
use shared::llm::local::LocalAnalyzer;

use crate::config::AnalyzerConfig;

/// The provider for `config.provider`.
pub fn build(config: &AnalyzerConfig) -> Result<Arc<dyn VisionProvider>, String> {
    match config.provider.as_str() {
        "local" => Ok(Arc::new(LocalAnalyzer)),
        other => Err(format!("the {other} vision provider is not built yet; use ANALYZER_PROVIDER=local")),
    }
}
