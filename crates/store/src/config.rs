//! How to reach PostgreSQL: the URL (from `DATABASE_URL`, or built from
//! the seed's `DATABASE_*` variables) and the pool's size; URLs shown
//! without their password.

use std::fmt;

use domain::settings::{ConfigError, Env, Setting};
use domain::text::percent_encode;

pub const DATABASE_URL: Setting = Setting::optional(
    "DATABASE_URL",
    "built from the `DATABASE_*` below",
    "PostgreSQL with pgvector. Every session starts with `statement_timeout` 60 s and `lock_timeout` 10 s; a URL \
     that names one in its `options` (`?options=-c%20lock_timeout%3D5s`) sets its own",
);
pub const DATABASE_HOST: Setting = Setting::optional(
    "DATABASE_HOST",
    "none",
    "when `DATABASE_URL` is unset, the URL is built from this and the next ones (the host is required then)",
);
pub const DATABASE_PORT: Setting = Setting::new("DATABASE_PORT", "5432", "the server's port");
pub const DATABASE_NAME: Setting = Setting::new("DATABASE_NAME", "collections", "the database's name");
pub const DATABASE_USER: Setting = Setting::new("DATABASE_USER", "postgres", "the user connecting");
pub const DATABASE_PASSWORD: Setting = Setting::optional("DATABASE_PASSWORD", "none", "the user's password");
pub const DATABASE_MAX_CONNECTIONS: Setting = Setting::new(
    "DATABASE_MAX_CONNECTIONS",
    "5",
    "pool size per process (at least 1); `collections serve` without it: the machine's cores + 1",
);

/// The settings of this crate, for `docs/configuration.md`.
pub const SETTINGS: &[Setting] = &[
    DATABASE_URL,
    DATABASE_HOST,
    DATABASE_PORT,
    DATABASE_NAME,
    DATABASE_USER,
    DATABASE_PASSWORD,
    DATABASE_MAX_CONNECTIONS,
];

/// How to reach PostgreSQL.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// [`DATABASE_URL`], or one built from [`DATABASE_HOST`] and the rest.
    pub url: String,
    /// [`DATABASE_MAX_CONNECTIONS`].
    pub max_connections: u32,
}

impl DatabaseConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let max_connections = env.parse_at_least(&DATABASE_MAX_CONNECTIONS, 1)?;
        if let Some(url) = env.value(&DATABASE_URL) {
            return Ok(Self { url, max_connections });
        }
        let host = env.value(&DATABASE_HOST).ok_or(ConfigError::Missing { name: DATABASE_URL.name })?;
        let port: u16 = env.parse(&DATABASE_PORT)?;
        let name = env.text(&DATABASE_NAME)?;
        let user = env.text(&DATABASE_USER)?;
        let url = postgres_url(&user, env.value(&DATABASE_PASSWORD).as_deref(), &host, port, &name);
        Ok(Self { url, max_connections })
    }
}

/// A `postgres://` URL, user and password percent-encoded.
pub fn postgres_url(user: &str, password: Option<&str>, host: &str, port: u16, name: &str) -> String {
    let password = password.map(|p| format!(":{}", percent_encode(p))).unwrap_or_default();
    format!("postgres://{}{password}@{host}:{port}/{name}", percent_encode(user))
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
