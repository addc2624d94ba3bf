//! What a function builds once per cold start: the SDK configuration, the
//! database pool, S3, EventBridge, and where API keys come from.

use std::sync::Arc;

use aws_config::SdkConfig;
use domain::settings::{ConfigError, Env, Setting};
use remote::{ApiKey, EnvSecrets, SecretError, SecretSource};

use crate::database::{keep_current, resolve};
use crate::eventbridge::EventBridgePublisher;
use crate::load_config;
use crate::s3::S3Store;
use crate::ssm::SsmParameters;

pub const EVENT_BUS_NAME: Setting = Setting::new(
    "EVENT_BUS_NAME",
    "default",
    "the EventBridge bus the Lambdas publish to (the CDK app sets `collections-<env>`)",
);
pub const SSM_PARAMETER_PREFIX: Setting = Setting::new(
    "SSM_PARAMETER_PREFIX",
    "/collections",
    "on Lambda: where the API-key parameters are (the CDK app sets `/collections/<env>`)",
);

/// What every stage's Lambda builds once per cold start.
#[derive(Debug, Clone)]
pub struct StageClients {
    pub config: SdkConfig,
    pub pool: sqlx::PgPool,
    pub store: Arc<S3Store>,
    pub bus: Arc<EventBridgePublisher>,
}

impl StageClients {
    /// The SDK configuration, the database pool (settings from
    /// [`crate::database::resolve`], kept current by [`crate::database::keep_current`]),
    /// S3, and EventBridge on [`EVENT_BUS_NAME`].
    pub async fn build(env: &Env) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let config = load_config().await;
        let settings = resolve(env, &config).await?;
        let pool = store::connect(&settings).await?;
        keep_current(pool.clone(), &settings, env, &config)?;
        let store = Arc::new(S3Store::new(&config));
        let bus_name = env.text(&EVENT_BUS_NAME)?;
        let bus = Arc::new(EventBridgePublisher::new(&config, bus_name, Default::default()));
        Ok(Self { config, pool, store, bus })
    }

    /// API keys: an environment variable of the key's name if set (local
    /// runs), else the SecureString `{SSM_PARAMETER_PREFIX}/{name}`.
    pub fn secrets(&self, env: &Env) -> Result<EnvThenSsm, ConfigError> {
        Ok(EnvThenSsm { ssm: SsmParameters::new(&self.config, &env.text(&SSM_PARAMETER_PREFIX)?) })
    }
}

/// Secrets from the environment first, then SSM Parameter Store.
#[derive(Debug, Clone)]
pub struct EnvThenSsm {
    ssm: SsmParameters,
}

#[async_trait::async_trait]
impl SecretSource for EnvThenSsm {
    async fn get(&self, name: &str) -> Result<Option<ApiKey>, SecretError> {
        match EnvSecrets.get(name).await? {
            Some(key) => Ok(Some(key)),
            None => self.ssm.get(name).await,
        }
    }
}
