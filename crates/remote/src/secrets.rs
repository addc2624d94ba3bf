//! API keys: values that never print, and where they come from (the
//! environment locally, SSM Parameter Store on AWS: see the `aws` crate).

use std::fmt;

use async_trait::async_trait;
use domain::settings::Setting;
use thiserror::Error;

const KEY_SOURCE: &str = "none";
pub const ANTHROPIC_API_KEY: Setting =
    Setting::optional("ANTHROPIC_API_KEY", KEY_SOURCE, "Anthropic's key: the environment locally, SSM on AWS");
pub const OPENAI_API_KEY: Setting =
    Setting::optional("OPENAI_API_KEY", KEY_SOURCE, "OpenAI's key: the environment locally, SSM on AWS");
pub const VOYAGE_API_KEY: Setting =
    Setting::optional("VOYAGE_API_KEY", KEY_SOURCE, "Voyage's key: the environment locally, SSM on AWS");

/// An API key. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Surrounding whitespace (a newline left by `file://key.txt`) is dropped.
    pub fn new(key: impl Into<String>) -> Self {
        let key = key.into();
        Self(key.trim().to_owned())
    }

    /// The key itself, for a request header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

#[derive(Debug, Error)]
#[error("reading secret {name}: {message}")]
pub struct SecretError {
    pub name: String,
    pub message: String,
}

/// Where API keys come from: the environment locally, SSM Parameter Store
/// on AWS. Asked once, when providers are built.
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// The secret named e.g. `ANTHROPIC_API_KEY`, if it is set.
    async fn get(&self, name: &str) -> Result<Option<ApiKey>, SecretError>;
}

/// Secrets from environment variables of the same name.
#[derive(Debug, Clone, Default)]
pub struct EnvSecrets;

#[async_trait]
impl SecretSource for EnvSecrets {
    async fn get(&self, name: &str) -> Result<Option<ApiKey>, SecretError> {
        Ok(std::env::var(name).ok().filter(|v| !v.trim().is_empty()).map(ApiKey::new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_print() {
        let key = ApiKey::new("sk-secret");
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        assert_eq!(key.expose(), "sk-secret");
        assert_eq!(ApiKey::new(" sk-secret\n").expose(), "sk-secret", "a key read from a file loses its newline");
    }
}
