//! The pipeline on AWS, as every Lambda needs it: the SDK's configuration,
//! S3 as the object store, EventBridge as the bus, SSM Parameter Store for
//! API keys, the database's settings from Secrets Manager or SSM, the
//! clients a stage builds once per cold start, and the Lambda side of the
//! batch runner (typed invocations in, batch responses out). Every client
//! honours `AWS_ENDPOINT_URL`, which is how the tests reach a local
//! endpoint. CLI-only tooling (Kinesis writers, redrive) is in `ops`.

pub mod clients;
pub mod database;
pub mod eventbridge;
pub mod lambda;
pub mod s3;
pub mod ssm;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::error::SdkError;
use domain::settings::Setting;

pub use clients::{EnvThenSsm, StageClients};

/// Read by the AWS SDK itself; documented here.
pub const AWS_ENDPOINT_URL: Setting = Setting::optional(
    "AWS_ENDPOINT_URL",
    "AWS",
    "another AWS endpoint (the tests' moto_server); S3 then uses path-style addressing",
);

/// The settings of this crate, for `docs/configuration.md`.
pub const SETTINGS: &[Setting] = &[
    clients::EVENT_BUS_NAME,
    clients::SSM_PARAMETER_PREFIX,
    database::DATABASE_SECRET_ARN,
    database::DATABASE_URL_PARAMETER,
    database::DATABASE_CA_FILE,
    database::DATABASE_SETTINGS_REFRESH_SECONDS,
    lambda::FUNCTION_TIMEOUT_SECS,
    AWS_ENDPOINT_URL,
];

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
