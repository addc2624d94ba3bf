//! AWS adapters of the ports: S3 for storage, EventBridge for the bus,
//! Kinesis for feeding streams, SSM Parameter Store and Secrets Manager for
//! keys and database credentials. Every client honours `AWS_ENDPOINT_URL`,
//! which is how the tests reach a local endpoint.

pub mod database;
pub mod eventbridge;
pub mod kinesis;
pub mod redrive;
pub mod s3;
pub mod ssm;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::error::SdkError;

/// How long an AWS call may take: each attempt, and the whole call with
/// its retries. No call waits without limit; one that runs out fails
/// retriably, like any other timeout.
pub const CALL_TIMEOUTS: (std::time::Duration, std::time::Duration) =
    (std::time::Duration::from_secs(20), std::time::Duration::from_secs(60));

/// The shared SDK configuration: region, credentials and endpoint from the
/// environment (or the Lambda's role), and [`CALL_TIMEOUTS`]; loaded once
/// per process.
pub async fn load_config() -> SdkConfig {
    let (attempt, operation) = CALL_TIMEOUTS;
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .operation_attempt_timeout(attempt)
        .operation_timeout(operation)
        .build();
    aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts).load().await
}

/// Whether an endpoint other than AWS's is configured (`AWS_ENDPOINT_URL`):
/// local endpoints need path-style S3 addressing.
pub fn custom_endpoint(config: &SdkConfig) -> bool {
    config.endpoint_url().is_some()
}

/// Whether a failed SDK call is worth retrying: timeouts, connection
/// failures, throttling and server errors.
pub fn is_retriable<E, R>(error: &SdkError<E, R>) -> bool
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
    R: std::fmt::Debug,
{
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(e) => is_retriable_code(e.err().code().unwrap_or_default()),
        _ => false,
    }
}

/// Whether an AWS error code (of a call, or of one entry of a batch call)
/// is throttling or a server fault, worth another try.
pub fn is_retriable_code(code: &str) -> bool {
    is_throttling(code)
        || matches!(code, "InternalError" | "InternalFailure" | "InternalException" | "ServiceUnavailable" | "SlowDown")
}

fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "LimitExceededException"
    )
}

/// A one-line description of an SDK error: the service's code and message
/// when there is one.
pub fn describe<E, R>(error: &SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error,
    R: std::fmt::Debug,
{
    match error {
        SdkError::ServiceError(e) => {
            let meta = e.err();
            format!("{}: {}", meta.code().unwrap_or("error"), meta.message().unwrap_or("no message"))
        }
        SdkError::TimeoutError(_) => "the call timed out".to_owned(),
        SdkError::DispatchFailure(e) => format!("the request could not be sent: {e:?}"),
        other => format!("{other}"),
    }
}

/// What every stage's Lambda builds once per cold start.
#[derive(Debug, Clone)]
pub struct StageClients {
    pub config: SdkConfig,
    pub pool: sqlx::PgPool,
    pub store: std::sync::Arc<s3::S3Store>,
    pub bus: std::sync::Arc<eventbridge::EventBridgePublisher>,
}

impl StageClients {
    /// The SDK configuration, the database pool (settings from
    /// [`database::resolve`], kept current by [`database::keep_current`]),
    /// S3, and EventBridge on `EVENT_BUS_NAME` (default `default`).
    pub async fn build(env: &crate::config::Env) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let config = load_config().await;
        let settings = database::resolve(env, &config).await?;
        let pool = crate::db::connect(&settings).await?;
        database::keep_current(pool.clone(), &settings, env, &config)?;
        let store = std::sync::Arc::new(s3::S3Store::new(&config));
        let bus_name = env.string_or("EVENT_BUS_NAME", "default");
        let bus = std::sync::Arc::new(eventbridge::EventBridgePublisher::new(&config, bus_name, Default::default()));
        Ok(Self { config, pool, store, bus })
    }

    /// API keys: an environment variable of the key's name if set (local
    /// runs), else the SecureString `{SSM_PARAMETER_PREFIX}/{name}` (default
    /// prefix `/collections`).
    pub fn secrets(&self, env: &crate::config::Env) -> EnvThenSsm {
        EnvThenSsm {
            ssm: ssm::SsmParameters::new(&self.config, &env.string_or("SSM_PARAMETER_PREFIX", "/collections")),
        }
    }
}

/// Secrets from the environment first, then SSM Parameter Store.
#[derive(Debug, Clone)]
pub struct EnvThenSsm {
    ssm: ssm::SsmParameters,
}

#[async_trait::async_trait]
impl crate::api::SecretSource for EnvThenSsm {
    async fn get(&self, name: &str) -> Result<Option<crate::api::ApiKey>, crate::api::SecretError> {
        match crate::api::EnvSecrets.get(name).await? {
            Some(key) => Ok(Some(key)),
            None => self.ssm.get(name).await,
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn every_call_has_a_time_limit() {
        let config = super::load_config().await;
        let timeouts = config.timeout_config().expect("timeouts are configured");
        assert_eq!(timeouts.operation_timeout(), Some(super::CALL_TIMEOUTS.1));
        assert_eq!(timeouts.operation_attempt_timeout(), Some(super::CALL_TIMEOUTS.0));
        assert!(timeouts.connect_timeout().is_some());
    }
}
