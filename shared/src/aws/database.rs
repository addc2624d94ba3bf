//! Where a Lambda finds its database: `DATABASE_URL` if set; else the
//! RDS-managed secret named by `DATABASE_SECRET_ARN` with the seed's
//! `DATABASE_HOST`, `DATABASE_PORT` and `DATABASE_NAME`; else the SecureString
//! parameter named by `DATABASE_URL_PARAMETER` (the seed's
//! `/collections/DATABASE_URL`).

use aws_config::SdkConfig;
use serde::Deserialize;
use thiserror::Error;

use super::describe;
use super::ssm::SsmParameters;
use crate::config::{ConfigError, DatabaseConfig, Env};

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
struct RdsSecret {
    username: String,
    password: String,
    host: Option<String>,
    port: Option<u16>,
    dbname: Option<String>,
}

/// Resolves the database settings, reading AWS only when the environment
/// does not say it all.
pub async fn resolve(env: &Env, config: &SdkConfig) -> Result<DatabaseConfig, DatabaseSettingsError> {
    if env.get("DATABASE_URL").is_some() {
        return Ok(DatabaseConfig::from_env(env)?);
    }
    let max_connections = env.parse_at_least("DATABASE_MAX_CONNECTIONS", 5, 1)?;
    if let Some(arn) = env.get("DATABASE_SECRET_ARN") {
        let client = aws_sdk_secretsmanager::Client::new(config);
        let out = client
            .get_secret_value()
            .secret_id(&arn)
            .send()
            .await
            .map_err(|e| DatabaseSettingsError::Secret { arn: arn.clone(), message: describe(&e) })?;
        let secret: RdsSecret = serde_json::from_str(out.secret_string().unwrap_or_default()).map_err(|e| {
            DatabaseSettingsError::Secret { arn: arn.clone(), message: format!("not an RDS secret: {e}") }
        })?;
        let host = env.get("DATABASE_HOST").or(secret.host).ok_or(ConfigError::Missing { name: "DATABASE_HOST" })?;
        let port: u16 = env.parse_or("DATABASE_PORT", secret.port.unwrap_or(5432))?;
        let name = env.get("DATABASE_NAME").or(secret.dbname).unwrap_or_else(|| "collections".to_owned());
        let encode = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
        // RDS forces TLS; the RDS CA is not among the public roots, so the
        // connection is encrypted without verifying the certificate chain.
        let url = format!(
            "postgres://{}:{}@{host}:{port}/{name}?sslmode=require",
            encode(&secret.username),
            encode(&secret.password)
        );
        return Ok(DatabaseConfig { url, max_connections });
    }
    if let Some(name) = env.get("DATABASE_URL_PARAMETER") {
        let url = SsmParameters::new(config, "")
            .get_parameter(&name)
            .await
            .map_err(|e| DatabaseSettingsError::Parameter { name: name.clone(), message: e.message })?
            .ok_or_else(|| DatabaseSettingsError::Parameter { name, message: "the parameter does not exist".into() })?;
        return Ok(DatabaseConfig { url, max_connections });
    }
    Err(DatabaseSettingsError::Missing)
}
