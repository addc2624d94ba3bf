//! Calling remote provider APIs: the JSON client and its errors, API keys
//! and where they come from, retries with backoff within a time budget,
//! and the adaptive limit of calls in flight per provider. The vision and
//! embedding providers are built on it.

pub mod client;
pub mod limit;
pub mod retry;
pub mod secrets;

use domain::settings::Setting;

pub use client::{ApiError, JsonClient, JsonLines, JsonReply};
pub use secrets::{ApiKey, EnvSecrets, SecretError, SecretSource};

/// OpenAI's API, where an OpenAI-compatible provider calls unless told otherwise.
pub const OPENAI_API_URL: &str = "https://api.openai.com/v1";

/// Where OpenAI-compatible calls go, vision and embeddings alike.
pub const OPENAI_BASE_URL: Setting = Setting::optional(
    "OPENAI_BASE_URL",
    "OpenAI's",
    "where an OpenAI-compatible API is (e.g. Ollama: `http://localhost:11434/v1`); a server other than OpenAI's \
     needs no key",
);

/// The settings of this crate, for `docs/configuration.md`.
pub const SETTINGS: &[Setting] =
    &[OPENAI_BASE_URL, secrets::ANTHROPIC_API_KEY, secrets::OPENAI_API_KEY, secrets::VOYAGE_API_KEY];
