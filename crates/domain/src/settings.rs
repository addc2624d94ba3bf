//! Reading configuration from environment variables (the seed's names where it
//! has them), once at start, with errors that name the variable.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name} is not set")]
    Missing { name: &'static str },
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid { name: &'static str, value: String, reason: String },
}

/// Where settings come from: the process environment, or a map in tests.
#[derive(Clone)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// A snapshot of the process environment.
    pub fn process() -> Self {
        Self { vars: std::env::vars().collect() }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self { vars: pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect() }
    }

    /// The variable's value; unset and empty are the same.
    pub fn get(&self, name: &str) -> Option<String> {
        self.vars.get(name).filter(|v| !v.trim().is_empty()).cloned()
    }

    pub fn require(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing { name })
    }

    pub fn string_or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_owned())
    }

    /// Parses the variable, or gives `default` when it is unset.
    pub fn parse_or<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(value) => {
                value.trim().parse().map_err(|e: T::Err| ConfigError::Invalid { name, value, reason: e.to_string() })
            }
        }
    }

    /// Like [`Env::parse_or`], and the value must be at least `min`.
    pub fn parse_at_least<T>(&self, name: &'static str, default: T, min: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
        T::Err: fmt::Display,
    {
        let value = self.parse_or(name, default)?;
        if value < min {
            return Err(ConfigError::Invalid {
                name,
                value: value.to_string(),
                reason: format!("must be at least {min}"),
            });
        }
        Ok(value)
    }
}

/// How to reach PostgreSQL.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// `DATABASE_URL`, or one built from `DATABASE_HOST`, `DATABASE_PORT` (default
    /// 5432), `DATABASE_NAME` (default `collections`), `DATABASE_USER` (default
    /// `postgres`) and `DATABASE_PASSWORD`.
    pub url: String,
    /// `DATABASE_MAX_CONNECTIONS`: pool size per process (default 5).
    pub max_connections: u32,
}

impl DatabaseConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let max_connections = env.parse_at_least("DATABASE_MAX_CONNECTIONS", 5, 1)?;
        if let Some(url) = env.get("DATABASE_URL") {
            return Ok(Self { url, max_connections });
        }
        let host = env.get("DATABASE_HOST").ok_or(ConfigError::Missing { name: "DATABASE_URL" })?;
        let port: u16 = env.parse_or("DATABASE_PORT", 5432)?;
        let name = env.string_or("DATABASE_NAME", "collections");
        let user = env.string_or("DATABASE_USER", "postgres");
        let url = postgres_url(&user, env.get("DATABASE_PASSWORD").as_deref(), &host, port, &name);
        Ok(Self { url, max_connections })
    }
}

/// A `postgres://` URL, user and password percent-encoded.
pub(crate) fn postgres_url(user: &str, password: Option<&str>, host: &str, port: u16, name: &str) -> String {
    let password = password.map(|p| format!(":{}", percent_encode(p))).unwrap_or_default();
    format!("postgres://{}{password}@{host}:{port}/{name}", percent_encode(user))
}

/// Every byte but ASCII letters and digits percent-encoded: safe in a URL's
/// user info and in S3's tag syntax.
pub(crate) fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The URL with any password replaced, fit for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme_end + 3], &userinfo[..colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_wins_and_defaults_apply() {
        let env = Env::from_pairs([("DATABASE_URL", "postgres://a@h/db"), ("DATABASE_HOST", "ignored")]);
        let config = DatabaseConfig::from_env(&env).unwrap();
        assert_eq!(config.url, "postgres://a@h/db");
        assert_eq!(config.max_connections, 5);
    }

    #[test]
    fn database_url_is_built_from_the_seed_variables() {
        let env = Env::from_pairs([
            ("DATABASE_HOST", "db.internal"),
            ("DATABASE_PORT", "6543"),
            ("DATABASE_PASSWORD", "p@ss:word"),
            ("DATABASE_MAX_CONNECTIONS", "12"),
        ]);
        let config = DatabaseConfig::from_env(&env).unwrap();
        assert_eq!(config.url, "postgres://postgres:p%40ss%3Aword@db.internal:6543/collections");
        assert_eq!(config.max_connections, 12);
        let shown = format!("{config:?}");
        assert!(!shown.contains("p%40ss") && shown.contains("***"), "{shown}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let env = Env::from_pairs([("DATABASE_URL", "x"), ("DATABASE_MAX_CONNECTIONS", "many")]);
        let err = DatabaseConfig::from_env(&env).unwrap_err();
        assert!(err.to_string().starts_with("DATABASE_MAX_CONNECTIONS=\"many\" is invalid"), "{err}");
        let zero = Env::from_pairs([("DATABASE_URL", "x"), ("DATABASE_MAX_CONNECTIONS", "0")]);
        assert!(DatabaseConfig::from_env(&zero).unwrap_err().to_string().contains("at least 1"));
        assert_eq!(DatabaseConfig::from_env(&Env::from_pairs([])), Err(ConfigError::Missing { name: "DATABASE_URL" }));
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact_url("postgres://u:secret@h:5/db"), "postgres://u:***@h:5/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    }
}
