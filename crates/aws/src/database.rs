//! Where a Lambda finds its database: `DATABASE_URL` if set; else the
//! RDS-managed secret named by `DATABASE_SECRET_ARN` with the seed's
//! `DATABASE_HOST`, `DATABASE_PORT` and `DATABASE_NAME`; else the SecureString
//! parameter named by `DATABASE_URL_PARAMETER` (the seed's
//! `/collections/DATABASE_URL`).
//!
//! Settings read from AWS can change under a running Lambda (the RDS
//! secret rotates every 7 days), so [`keep_current`] reads them again now
//! and then and gives new connections the current credentials.

use std::time::Duration;

use aws_config::SdkConfig;
use serde::Deserialize;
use sqlx::PgPool;
use thiserror::Error;

use domain::settings::{ConfigError, Env, Setting};
use store::config::{
    DATABASE_HOST, DATABASE_MAX_CONNECTIONS, DATABASE_NAME, DATABASE_PORT, DATABASE_URL, DatabaseConfig, postgres_url,
};

use crate::describe;
use crate::ssm::SsmParameters;

pub const DATABASE_SECRET_ARN: Setting = Setting::optional(
    "DATABASE_SECRET_ARN",
    "none",
    "on Lambda, when `DATABASE_URL` is unset: the RDS secret giving the user and password (and host, port and \
     name when it has them; `DATABASE_HOST`, `DATABASE_PORT` and `DATABASE_NAME` win)",
);
pub const DATABASE_URL_PARAMETER: Setting = Setting::optional(
    "DATABASE_URL_PARAMETER",
    "none",
    "on Lambda, when neither `DATABASE_URL` nor `DATABASE_SECRET_ARN` is set: the SSM parameter holding the URL",
);
pub const DATABASE_CA_FILE: Setting = Setting::optional(
    "DATABASE_CA_FILE",
    "none",
    "on Lambda, with `DATABASE_SECRET_ARN`: the CA bundle (PEM) the server's certificate must chain to; the \
     connection then verifies the chain and the host name (`sslmode=verify-full`); without it, \
     `sslmode=require` (encrypted, not verified). The CDK app ships the RDS bundle at \
     `/opt/rds-ca/rds-ca-bundle.pem`",
);
pub const DATABASE_SETTINGS_REFRESH_SECONDS: Setting = Setting::new(
    "DATABASE_SETTINGS_REFRESH_SECONDS",
    "60",
    "on Lambda, with a secret or parameter: how often it is read again, seconds, so a rotated password reaches \
     new connections",
);

#[derive(Debug, Error)]
pub enum DatabaseSettingsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reading the database secret {arn}: {message}")]
    Secret { arn: String, message: String },
    #[error("reading {name}: {message}")]
    Parameter { name: String, message: String },
    #[error("no database configured: set DATABASE_URL, DATABASE_SECRET_ARN or DATABASE_URL_PARAMETER")]
    Missing,
}

/// The fields of an RDS secret we use (RDS-managed secrets have only the
/// credentials; others add the address).
#[derive(Deserialize)]
pub struct RdsSecret {
    pub username: String,
    pub password: String,
    host: Option<String>,
    port: Option<u16>,
    dbname: Option<String>,
}

impl std::fmt::Debug for RdsSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdsSecret").field("username", &self.username).field("password", &"***").finish_non_exhaustive()
    }
}

/// A database user's secret in Secrets Manager (RDS's JSON shape:
/// `username` and `password`, and where RDS put them, `host`, `port`,
/// `dbname`).
pub async fn read_secret(config: &SdkConfig, arn: &str) -> Result<RdsSecret, DatabaseSettingsError> {
    let client = aws_sdk_secretsmanager::Client::new(config);
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| DatabaseSettingsError::Secret { arn: arn.to_owned(), message: describe(&e) })?;
    serde_json::from_str(out.secret_string().unwrap_or_default())
        .map_err(|e| DatabaseSettingsError::Secret { arn: arn.to_owned(), message: format!("not an RDS secret: {e}") })
}

/// How a URL made from a secret asks for TLS. RDS forces TLS, and its CA is
/// not among the public roots: with `DATABASE_CA_FILE` (the CDK app ships
/// the RDS bundle there) the certificate chain and the host name are
/// verified; without it the connection is encrypted, unverified.
fn tls_parameters(env: &Env) -> String {
    match env.value(&DATABASE_CA_FILE) {
        Some(ca) => {
            let ca = percent_encoding::utf8_percent_encode(&ca, percent_encoding::NON_ALPHANUMERIC);
            format!("?sslmode=verify-full&sslrootcert={ca}")
        }
        None => "?sslmode=require".to_owned(),
    }
}

/// Resolves the database settings, reading AWS only when the environment
/// does not say it all.
pub async fn resolve(env: &Env, config: &SdkConfig) -> Result<DatabaseConfig, DatabaseSettingsError> {
    if env.value(&DATABASE_URL).is_some() {
        return Ok(DatabaseConfig::from_env(env)?);
    }
    let max_connections = env.parse_at_least(&DATABASE_MAX_CONNECTIONS, 1)?;
    if let Some(arn) = env.value(&DATABASE_SECRET_ARN) {
        let secret = read_secret(config, &arn).await?;
        let host =
            env.value(&DATABASE_HOST).or(secret.host).ok_or(ConfigError::Missing { name: DATABASE_HOST.name })?;
        // What the environment says, else what the secret says, else the defaults.
        let port: u16 = match (env.get(DATABASE_PORT.name), secret.port) {
            (None, Some(port)) => port,
            _ => env.parse(&DATABASE_PORT)?,
        };
        let name = match (env.get(DATABASE_NAME.name), secret.dbname) {
            (None, Some(name)) => name,
            _ => env.text(&DATABASE_NAME)?,
        };
        let url = postgres_url(&secret.username, Some(&secret.password), &host, port, &name) + &tls_parameters(env);
        return Ok(DatabaseConfig { url, max_connections });
    }
    if let Some(name) = env.value(&DATABASE_URL_PARAMETER) {
        let url = SsmParameters::new(config, "")
            .get_parameter(&name)
            .await
            .map_err(|e| DatabaseSettingsError::Parameter { name: name.clone(), message: e.message })?
            .ok_or_else(|| DatabaseSettingsError::Parameter { name, message: "the parameter does not exist".into() })?;
        return Ok(DatabaseConfig { url, max_connections });
    }
    Err(DatabaseSettingsError::Missing)
}

/// Reads the settings again every `DATABASE_SETTINGS_REFRESH_SECONDS`
/// (default 60) while the process runs, and when they differ from `first`
/// (a rotated password) new connections of `pool` use them; open connections
/// stay valid and are replaced as they age. `None` when the settings come
/// from `DATABASE_URL`, which cannot change.
pub fn keep_current(
    pool: PgPool,
    first: &DatabaseConfig,
    env: &Env,
    config: &SdkConfig,
) -> Result<Option<tokio::task::JoinHandle<()>>, ConfigError> {
    if env.value(&DATABASE_URL).is_some() {
        return Ok(None);
    }
    let every = Duration::from_secs(env.parse_at_least(&DATABASE_SETTINGS_REFRESH_SECONDS, 1)?);
    let (mut current, env, config) = (first.url.clone(), env.clone(), config.clone());
    Ok(Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let url = match resolve(&env, &config).await {
                Ok(settings) if settings.url == current => continue,
                Ok(settings) => settings.url,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the database settings again failed; keeping the current ones");
                    continue;
                }
            };
            match store::connect_options(&url) {
                Ok(options) => {
                    tracing::info!("the database settings changed; new connections use them");
                    pool.set_connect_options(options);
                    current = url;
                }
                Err(e) => tracing::warn!(error = %e, "the database settings read again are not usable"),
            }
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::postgres::{PgConnectOptions, PgSslMode};

    #[test]
    fn with_a_ca_file_the_certificate_and_host_are_verified() {
        let bundle = "/opt/rds-ca/rds-ca-bundle.pem";
        let verified = tls_parameters(&Env::from_pairs([("DATABASE_CA_FILE", bundle)]));
        let url = format!("postgres://u:p@db.abc.us-east-1.rds.amazonaws.com:5432/collections{verified}");
        let options: PgConnectOptions = url.parse().unwrap();
        assert!(matches!(options.get_ssl_mode(), PgSslMode::VerifyFull));
        assert!(format!("{options:?}").contains(bundle), "{options:?}");

        let unverified = format!("postgres://u:p@h/collections{}", tls_parameters(&Env::from_pairs([])));
        assert!(matches!(unverified.parse::<PgConnectOptions>().unwrap().get_ssl_mode(), PgSslMode::Require));
    }
}
