//! SSM Parameter Store: API keys as SecureString parameters
//! (`/collections/ANTHROPIC_API_KEY`, …), read once per cold start.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ssm::Client;

use remote::{ApiKey, SecretError, SecretSource};

use crate::describe;

#[derive(Debug, Clone)]
pub struct SsmParameters {
    client: Client,
    /// `SSM_PARAMETER_PREFIX`, e.g. `/collections`.
    prefix: String,
}

impl SsmParameters {
    pub fn new(config: &SdkConfig, prefix: &str) -> Self {
        Self { client: Client::new(config), prefix: prefix.trim_end_matches('/').to_owned() }
    }

    /// A parameter's decrypted value, or `None` when it does not exist.
    pub async fn get_parameter(&self, name: &str) -> Result<Option<String>, SecretError> {
        match self.client.get_parameter().name(name).with_decryption(true).send().await {
            Ok(out) => Ok(out.parameter().and_then(|p| p.value()).map(str::to_owned)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_parameter_not_found()) => Ok(None),
            Err(e) => Err(SecretError { name: name.to_owned(), message: describe(&e) }),
        }
    }
}

#[async_trait]
impl SecretSource for SsmParameters {
    async fn get(&self, name: &str) -> Result<Option<ApiKey>, SecretError> {
        Ok(self.get_parameter(&format!("{}/{name}", self.prefix)).await?.map(ApiKey::new))
    }
}
