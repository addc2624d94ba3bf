//! Vision analysis: the provider port, its adapters (Anthropic's Messages
//! API, OpenAI-compatible chat, and the offline `local` analyzer), their
//! batch APIs ([`batch`]: Anthropic's Message Batches, OpenAI's Batch API),
//! and the settings that choose and build one. What an analysis holds, and its
//! validation, is `domain::analysis`.

pub mod anthropic;
pub mod batch;
pub mod local;
pub mod openai;
mod prompt;
pub mod settings;

use std::time::Duration;

use async_trait::async_trait;
use domain::analysis::{Analysis, InvalidAnalysis};
use domain::events::ImageInfo;
use domain::retry::Retriable;
use remote::ApiError;
use serde_json::Value;
use thiserror::Error;

pub use batch::VisionBatches;
pub use settings::{VisionProviderName, VisionSettings};

/// An image to analyse.
#[derive(Debug, Clone, Copy)]
pub struct VisionRequest<'a> {
    /// The encoded image (the thumbnail).
    pub image: &'a [u8],
    /// `image/jpeg` or `image/png`.
    pub media_type: &'a str,
    /// What the thumbnailer measured, when known.
    pub info: Option<&'a ImageInfo>,
}

/// A provider's answer: the validated analysis and what the provider sent.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderAnalysis {
    pub analysis: Analysis,
    pub raw_response: Value,
    /// The provider's request id, when it gives one.
    pub request_id: Option<String>,
    /// The tokens the provider counted, when it did.
    pub usage: Option<domain::usage::Usage>,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VisionError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{provider} refused to analyse the image: {reason}")]
    Refused { provider: &'static str, reason: String },
    #[error("{provider} returned an invalid analysis: {source}")]
    Invalid { provider: &'static str, source: InvalidAnalysis },
    #[error("the image cannot be analysed: {0}")]
    Image(String),
}

impl Retriable for VisionError {
    /// Only the API's faults: a refusal or an invalid analysis would come back the same.
    fn is_retriable(&self) -> bool {
        matches!(self, Self::Api(e) if e.is_retriable())
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api(e) => e.retry_after(),
            _ => None,
        }
    }

    fn is_configuration_fault(&self) -> bool {
        matches!(self, Self::Api(e) if e.is_configuration_fault())
    }

    fn is_outage(&self) -> bool {
        matches!(self, Self::Api(e) if e.is_outage())
    }
}

/// A vision model behind one interface, chosen by configuration.
#[async_trait]
pub trait VisionProvider: Send + Sync {
    /// `anthropic`, `openai` or `local`: stored as `provider_used`.
    fn provider(&self) -> &'static str;
    /// Stored as `model_used`.
    fn model(&self) -> &str;
    async fn analyze(&self, request: VisionRequest<'_>) -> Result<ProviderAnalysis, VisionError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_api_faults_are_retriable() {
        let throttled = ApiError::Status { provider: "p", status: 429, message: String::new(), retry_after: None };
        assert!(VisionError::from(throttled).is_retriable());
        assert!(!VisionError::Refused { provider: "p", reason: "no".into() }.is_retriable());
        assert!(!VisionError::Invalid { provider: "p", source: InvalidAnalysis::EmptySummary }.is_retriable());
    }
}
