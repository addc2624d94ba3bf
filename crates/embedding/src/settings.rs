//! Which embedding model makes vectors, and how it is reached: the active
//! model (what every vector is made with and every search compares), the
//! model of a change of model on AWS (`REEMBED_*`), or one given on the
//! command line; then [`EmbeddingSettings::build`] makes the provider with
//! its key. Reading the settings needs no key, so the migrator and
//! `collections migrate` can name the model without one.

use std::sync::Arc;
use std::time::Duration;

use const_format::concatcp;
use domain::settings::{ConfigError, Env, Setting};
use remote::secrets::{OPENAI_API_KEY, VOYAGE_API_KEY};
use remote::{JsonClient, OPENAI_BASE_URL, SecretSource};

use crate::local::{LOCAL_MODEL, LocalEmbedder};
use crate::openai::{self, OpenAiEmbeddings};
use crate::voyage::{self, VoyageProvider};
use crate::{DEFAULT_DIMENSIONS, EmbeddingProvider, stored_model_name};

pub const PROVIDER: Setting = Setting::new("EMBEDDING_PROVIDER", "local", "`voyage`, `openai` or `local`");
pub const VOYAGE_MODEL: Setting =
    Setting::new("VOYAGE_EMBEDDING_MODEL", voyage::DEFAULT_MODEL, "the Voyage embedding model (the seed's name)");
pub const OPENAI_MODEL: Setting =
    Setting::new("OPENAI_EMBEDDING_MODEL", openai::DEFAULT_MODEL, "the OpenAI-compatible embedding model");
pub const DIMENSIONS: Setting = Setting::new(
    "EMBEDDING_DIMENSIONS",
    concatcp!(DEFAULT_DIMENSIONS),
    concatcp!(
        "the vectors' length, asked of the provider (Voyage's `voyage-3`/`-4` models: 256, 512, 1024 or 2048; ",
        "OpenAI's `text-embedding-3`: up to their own); another size than ",
        DEFAULT_DIMENSIONS,
        " is stored as another model, `model@D`"
    ),
);
pub const VOYAGE_BASE_URL: Setting =
    Setting::new("VOYAGE_BASE_URL", voyage::DEFAULT_BASE_URL, "where Voyage's embeddings API is");
pub const TIMEOUT_SECS: Setting = Setting::new("EMBEDDING_TIMEOUT_SECS", "30", "one request's limit, seconds");
pub const REEMBED_PROVIDER: Setting = Setting::optional(
    "REEMBED_PROVIDER",
    "none",
    "the embedder on AWS during a change of model: the provider it embeds the records of `collections reembed \
     --stream` with (the migrator registers and indexes its model)",
);
pub const REEMBED_MODEL: Setting =
    Setting::optional("REEMBED_MODEL", "the provider's", "the model of the change of model (`REEMBED_PROVIDER`)");
pub const REEMBED_DIMENSIONS: Setting = Setting::new(
    "REEMBED_DIMENSIONS",
    concatcp!(DEFAULT_DIMENSIONS),
    "the size of the change of model's vectors (`REEMBED_PROVIDER`)",
);

/// The settings of this crate, for `docs/configuration.md` (`OPENAI_BASE_URL`
/// is `remote`'s, shared with the vision providers).
pub const SETTINGS: &[Setting] = &[
    PROVIDER,
    VOYAGE_MODEL,
    OPENAI_MODEL,
    DIMENSIONS,
    VOYAGE_BASE_URL,
    TIMEOUT_SECS,
    REEMBED_PROVIDER,
    REEMBED_MODEL,
    REEMBED_DIMENSIONS,
];

/// The embedding providers, parsed once from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingProviderName {
    Voyage,
    OpenAi,
    Local,
}

impl EmbeddingProviderName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Voyage => "voyage",
            Self::OpenAi => "openai",
            Self::Local => "local",
        }
    }
}

impl std::str::FromStr for EmbeddingProviderName {
    type Err = String;

    /// Case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_lowercase().as_str() {
            "voyage" => Ok(Self::Voyage),
            "openai" => Ok(Self::OpenAi),
            "local" => Ok(Self::Local),
            _ => Err("expected voyage, openai or local".to_owned()),
        }
    }
}

/// One embedding model, its size, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingSettings {
    pub provider: EmbeddingProviderName,
    /// The provider's model name.
    pub model: String,
    /// The vectors' length, asked of the provider.
    pub dimensions: usize,
    /// Where the API is; `None`: the provider's own (or, local, none).
    pub base_url: Option<String>,
    pub timeout: Duration,
}

impl EmbeddingSettings {
    /// The active model: what the environment names.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let provider = env.parse(&PROVIDER)?;
        Self::of(env, provider, Self::configured_model(env, provider), Self::configured_dimensions(env)?)
    }

    /// The model the environment names for `provider` (`VOYAGE_EMBEDDING_MODEL`
    /// or `OPENAI_EMBEDDING_MODEL`), if any.
    pub fn configured_model(env: &Env, provider: EmbeddingProviderName) -> Option<String> {
        match provider {
            EmbeddingProviderName::Voyage => env.value(&VOYAGE_MODEL),
            EmbeddingProviderName::OpenAi => env.value(&OPENAI_MODEL),
            EmbeddingProviderName::Local => None,
        }
    }

    /// The size the environment names (`EMBEDDING_DIMENSIONS`).
    pub fn configured_dimensions(env: &Env) -> Result<usize, ConfigError> {
        dimensions(env, &DIMENSIONS)
    }

    /// The model of a change of model (`REEMBED_*`), when one is configured.
    pub fn reembed_from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let Some(provider) = env.parse_optional(&REEMBED_PROVIDER)? else { return Ok(None) };
        Self::of(env, provider, env.value(&REEMBED_MODEL), dimensions(env, &REEMBED_DIMENSIONS)?).map(Some)
    }

    /// `provider`'s `model` (`None`: its default) at `dimensions`, given on
    /// the command line say, reached as the environment says. The local
    /// provider has one model: naming another is an error.
    pub fn of(
        env: &Env,
        provider: EmbeddingProviderName,
        model: Option<String>,
        dimensions: usize,
    ) -> Result<Self, ConfigError> {
        let model = match (provider, model) {
            (EmbeddingProviderName::Local, Some(other)) if other != LOCAL_MODEL => {
                return Err(ConfigError::Invalid {
                    name: "the embedding model",
                    value: other,
                    reason: format!("the local provider has one model, {LOCAL_MODEL}"),
                });
            }
            (_, Some(model)) => model,
            (EmbeddingProviderName::Voyage, None) => voyage::DEFAULT_MODEL.to_owned(),
            (EmbeddingProviderName::OpenAi, None) => openai::DEFAULT_MODEL.to_owned(),
            (EmbeddingProviderName::Local, None) => LOCAL_MODEL.to_owned(),
        };
        Ok(Self {
            provider,
            model,
            dimensions: checked_dimensions(DIMENSIONS.name, dimensions)?,
            base_url: match provider {
                EmbeddingProviderName::Voyage => env.value(&VOYAGE_BASE_URL),
                EmbeddingProviderName::OpenAi => env.value(&OPENAI_BASE_URL),
                EmbeddingProviderName::Local => None,
            },
            timeout: Duration::from_secs(env.parse_at_least(&TIMEOUT_SECS, 1)?),
        })
    }

    /// The name its vectors are stored under (see [`stored_model_name`]).
    pub fn stored_name(&self) -> String {
        stored_model_name(&self.model, self.dimensions)
    }

    /// The provider, with its key read from `secrets` (once, here).
    pub async fn build(&self, secrets: &dyn SecretSource) -> Result<Arc<dyn EmbeddingProvider>, String> {
        let key = |name: &'static str| async move { secrets.get(name).await.map_err(|e| e.to_string()) };
        match self.provider {
            EmbeddingProviderName::Local => Ok(Arc::new(LocalEmbedder::new(self.dimensions))),
            EmbeddingProviderName::Voyage => {
                let key = key(VOYAGE_API_KEY.name)
                    .await?
                    .ok_or("VOYAGE_API_KEY is not set (an environment variable locally, an SSM parameter on AWS)")?;
                Ok(Arc::new(VoyageProvider::new(
                    JsonClient::new("voyage", self.timeout),
                    self.base_url.as_deref().unwrap_or(voyage::DEFAULT_BASE_URL),
                    key,
                    self.model.clone(),
                    self.dimensions,
                )))
            }
            EmbeddingProviderName::OpenAi => {
                let key = key(OPENAI_API_KEY.name).await?;
                if key.is_none() && self.base_url.is_none() {
                    return Err("OPENAI_API_KEY is not set, and OPENAI_BASE_URL names no other server".to_owned());
                }
                Ok(Arc::new(OpenAiEmbeddings::new(
                    JsonClient::new("openai", self.timeout),
                    self.base_url.as_deref().unwrap_or(remote::OPENAI_API_URL),
                    key,
                    self.model.clone(),
                    self.dimensions,
                )))
            }
        }
    }
}

fn dimensions(env: &Env, setting: &Setting) -> Result<usize, ConfigError> {
    checked_dimensions(setting.name, env.parse_at_least(setting, 1)?)
}

/// pgvector stores at most 16 000 dimensions.
fn checked_dimensions(name: &'static str, dimensions: usize) -> Result<usize, ConfigError> {
    if dimensions == 0 || dimensions > 16_000 {
        let reason = "pgvector stores 1 to 16000 dimensions".to_owned();
        return Err(ConfigError::Invalid { name, value: dimensions.to_string(), reason });
    }
    Ok(dimensions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_comes_from_the_provider_variable() {
        let c = EmbeddingSettings::from_env(&Env::from_pairs([
            ("EMBEDDING_PROVIDER", "voyage"),
            ("VOYAGE_EMBEDDING_MODEL", "voyage-3-large"),
            ("OPENAI_EMBEDDING_MODEL", "ignored"),
        ]))
        .unwrap();
        assert_eq!((c.provider, c.model.as_str()), (EmbeddingProviderName::Voyage, "voyage-3-large"));
        let local = EmbeddingSettings::from_env(&Env::from_pairs([])).unwrap();
        assert_eq!((local.provider, local.model.as_str()), (EmbeddingProviderName::Local, LOCAL_MODEL));
        assert_eq!(local.dimensions, 1024);
        assert!(EmbeddingSettings::from_env(&Env::from_pairs([("EMBEDDING_PROVIDER", "x")])).is_err());
        let small = EmbeddingSettings::from_env(&Env::from_pairs([("EMBEDDING_DIMENSIONS", "384")])).unwrap();
        assert_eq!((small.dimensions, small.stored_name().as_str()), (384, "local-hashing-v1@384"));
        assert!(EmbeddingSettings::from_env(&Env::from_pairs([("EMBEDDING_DIMENSIONS", "16001")])).is_err());
        let voyage_default = EmbeddingSettings::from_env(&Env::from_pairs([("EMBEDDING_PROVIDER", "voyage")])).unwrap();
        assert_eq!(voyage_default.stored_name(), "voyage-3.5");
    }

    #[test]
    fn the_change_of_model_has_its_own_variables() {
        assert_eq!(EmbeddingSettings::reembed_from_env(&Env::from_pairs([])), Ok(None));
        let changing = EmbeddingSettings::reembed_from_env(&Env::from_pairs([
            ("REEMBED_PROVIDER", "openai"),
            ("REEMBED_MODEL", "text-embedding-3-large"),
            ("REEMBED_DIMENSIONS", "3072"),
            ("OPENAI_BASE_URL", "http://models.internal/v1"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (changing.provider, changing.model.as_str(), changing.dimensions),
            (EmbeddingProviderName::OpenAi, "text-embedding-3-large", 3072)
        );
        assert_eq!(changing.base_url.as_deref(), Some("http://models.internal/v1"));
        assert!(EmbeddingSettings::reembed_from_env(&Env::from_pairs([("REEMBED_PROVIDER", "x")])).is_err());
    }

    #[test]
    fn a_model_given_by_flags_is_the_one_asked_for() {
        let env = Env::from_pairs([]);
        let voyage = EmbeddingSettings::of(&env, EmbeddingProviderName::Voyage, Some("voyage-3-large".into()), 512);
        assert_eq!(voyage.unwrap().stored_name(), "voyage-3-large@512");
        let local = EmbeddingSettings::of(&env, EmbeddingProviderName::Local, Some("other".into()), 1024);
        assert!(local.unwrap_err().to_string().contains("one model"));
    }
}
