//! Errors of remote API calls (vision and embedding providers), and which of
//! them are worth retrying.

use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ApiError {
    #[error("{provider} answered HTTP {status}: {message}")]
    Status { provider: &'static str, status: u16, message: String, retry_after: Option<Duration> },
    #[error("{provider} did not answer within {timeout:?}")]
    Timeout { provider: &'static str, timeout: Duration },
    #[error("{provider} could not be reached: {message}")]
    Transport { provider: &'static str, message: String },
    #[error("{provider} returned a malformed reply: {reason}")]
    Malformed { provider: &'static str, reason: String },
}

impl ApiError {
    /// Throttling, server errors (including Anthropic's 529 "overloaded"),
    /// timeouts and lost connections are worth another try.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Status { status, .. } => matches!(status, 408 | 409 | 425 | 429 | 500..=599),
            Self::Timeout { .. } | Self::Transport { .. } => true,
            Self::Malformed { .. } => false,
        }
    }

    /// How long the provider asked us to wait, when it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_statuses() {
        let status = |status| ApiError::Status { provider: "p", status, message: String::new(), retry_after: None };
        assert!(status(429).is_retriable() && status(503).is_retriable() && status(529).is_retriable());
        assert!(!status(400).is_retriable() && !status(401).is_retriable() && !status(404).is_retriable());
        assert!(!ApiError::Malformed { provider: "p", reason: "x".into() }.is_retriable());
        assert!(ApiError::Timeout { provider: "p", timeout: Duration::from_secs(1) }.is_retriable());
    }
}
