//! The search service's own settings: the search function's on Lambda (the
//! embedding model it embeds queries with is `embedding::EmbeddingSettings`'s,
//! the active one), and the database pool `collections serve` keeps.

use domain::settings::{ConfigError, Env, Setting};
use store::config::{DATABASE_MAX_CONNECTIONS, DatabaseConfig};

pub const USER_CLAIM: Setting = Setting::new(
    "SEARCH_USER_CLAIM",
    "sub",
    "the search Lambda: the JWT claim (verified by API Gateway's authorizer) that names the caller",
);
pub const URL_TTL_SECS: Setting = Setting::new(
    "SEARCH_URL_TTL_SECS",
    "900",
    "the search Lambda: how long a presigned thumbnail URL is valid, seconds",
);

/// Connections a search service on this machine keeps by default: one more
/// than its cores. A search is CPU work in the database; more searches at
/// once than there are cores only queue in the kernel's scheduler, where the
/// slowest waits grow (benches/README.md: at 10 concurrent clients on 2
/// cores, p95 19 ms with 3 connections, 26 ms with 8).
pub fn default_pool_size() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32) + 1
}

/// How a search service reaches PostgreSQL: as every command does, with
/// [`default_pool_size`] connections unless `DATABASE_MAX_CONNECTIONS` says.
pub fn database(env: &Env) -> Result<DatabaseConfig, ConfigError> {
    let mut config = DatabaseConfig::from_env(env)?;
    if env.get(DATABASE_MAX_CONNECTIONS.name).is_none() {
        config.max_connections = default_pool_size();
    }
    Ok(config)
}

/// The settings of this crate, for `docs/configuration.md`.
pub const SETTINGS: &[Setting] = &[
    USER_CLAIM,
    URL_TTL_SECS,
    crate::limit::RATE_PER_USER,
    crate::limit::BURST_PER_USER,
    crate::query::QUERY_CACHE_ENTRIES,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_service_keeps_one_connection_more_than_cores_unless_told() {
        let url = ("DATABASE_URL", "postgres://a@h/db");
        let cores = std::thread::available_parallelism().unwrap().get() as u32;
        assert_eq!(database(&Env::from_pairs([url])).unwrap().max_connections, cores + 1);
        let told = Env::from_pairs([url, ("DATABASE_MAX_CONNECTIONS", "12")]);
        assert_eq!(database(&told).unwrap().max_connections, 12);
    }
}
