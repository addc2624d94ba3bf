//! The search function's own settings on Lambda (the embedding model it
//! embeds queries with is `embedding::EmbeddingSettings`'s, the active one).

use domain::settings::Setting;

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

/// The settings of this crate, for `docs/configuration.md`.
pub const SETTINGS: &[Setting] = &[
    USER_CLAIM,
    URL_TTL_SECS,
    crate::limit::RATE_PER_USER,
    crate::limit::BURST_PER_USER,
    crate::query::QUERY_CACHE_ENTRIES,
];
