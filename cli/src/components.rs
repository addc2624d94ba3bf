//! The composition root: reads the configuration once (or takes what a
//! command chose instead) and builds the pool, the store and the providers
//! every command uses.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use analyzer::AnalyzerConfig;
use anyhow::Context;
use domain::settings::{ConfigError, Env, Setting};
use embedder::EmbedderConfig;
use embedding::{EmbeddingProvider, EmbeddingSettings};
use remote::{EnvSecrets, SecretSource};
use runtime::storage::{BUCKET_NAME, FolderStore, LOCAL_BUCKET};
use sqlx::PgPool;
use store::config::DatabaseConfig;
use store::models::{self, EmbeddingModel};
use thumbnailer::ThumbnailConfig;
use vision::{VisionBatches, VisionProvider, VisionSettings};

use crate::pipeline::Batching;

pub const DATA_DIR: Setting = Setting::new(
    "COLLECTIONS_DATA_DIR",
    ".collections",
    "where the local bucket lives (`scripts/demo.sh` uses `.local/demo`)",
);
pub const BATCH_SIZE: Setting =
    Setting::new("COLLECTIONS_BATCH_SIZE", "32", "records per stage batch locally, as a Kinesis trigger's batch size");
pub const BATCH_WINDOW_MS: Setting =
    Setting::new("COLLECTIONS_BATCH_WINDOW_MS", "100", "longest wait to fill a batch locally, ms");

/// Settings of the local mode itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    /// [`DATA_DIR`].
    pub data_dir: PathBuf,
    /// [`BUCKET_NAME`]: the local bucket's name.
    pub bucket: String,
    /// [`BATCH_SIZE`] and [`BATCH_WINDOW_MS`].
    pub batching: Batching,
}

impl LocalConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            data_dir: PathBuf::from(env.text(&DATA_DIR)?),
            bucket: env.get(BUCKET_NAME.name).unwrap_or_else(|| LOCAL_BUCKET.to_owned()),
            batching: Batching {
                size: env.parse_at_least(&BATCH_SIZE, 1)?,
                window: Duration::from_millis(env.parse(&BATCH_WINDOW_MS)?),
            },
        })
    }
}

/// maintenance_work_mem for building a vector index, MiB, unless told otherwise.
pub const INDEX_BUILD_MEMORY_MIB: u32 = 1024;

/// Applies the migrations, registers `model` with its size, and builds
/// what is missing of its vector index (unless `index` is false: bulk loads
/// build it once at the end). Needs no provider key.
pub async fn prepare_database(pool: &PgPool, model: &EmbeddingSettings, index: bool) -> anyhow::Result<()> {
    store::migrate(pool).await?;
    let registered = EmbeddingModel::new(&model.stored_name(), model.dimensions);
    models::prepare(pool, &registered, index.then_some(INDEX_BUILD_MEMORY_MIB), None).await?;
    Ok(())
}

/// What a command chooses instead of the environment: a vision provider
/// and model (`reanalyze --provider --model`), an embedding model
/// (`reembed --provider --model --dimensions`).
#[derive(Debug, Clone, Default)]
pub struct Choices {
    pub vision: Option<VisionSettings>,
    pub embedding: Option<EmbeddingSettings>,
    /// `--batch-api`: analyses through the vision provider's batch API.
    pub batch_api: bool,
}

/// Everything the local commands run on.
#[derive(Clone)]
pub struct Components {
    pub pool: PgPool,
    pub store: Arc<FolderStore>,
    pub local: LocalConfig,
    pub thumbnail: ThumbnailConfig,
    pub analyzer: AnalyzerConfig,
    pub embedder: EmbedderConfig,
    pub vision: Arc<dyn VisionProvider>,
    pub embedding: Arc<dyn EmbeddingProvider>,
    /// The vision provider's batch API, when the command asked for it
    /// (`--batch-api`): the analyses are queued and sent through it.
    pub batches: Option<Arc<dyn VisionBatches>>,
}

impl std::fmt::Debug for Components {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Components").field("local", &self.local).finish_non_exhaustive()
    }
}

impl Components {
    /// [`prepare_database`] for this configuration's embedding model.
    pub async fn prepare_database(&self, index: bool) -> anyhow::Result<()> {
        prepare_database(&self.pool, &self.embedder.active, index).await
    }

    /// Every setting from `env` (API keys from the environment too), and a
    /// connection to the database.
    pub async fn from_env(env: &Env) -> anyhow::Result<Self> {
        Self::connect(env, Choices::default()).await
    }

    /// As [`Components::from_env`], with what the command chose instead.
    pub async fn connect(env: &Env, choices: Choices) -> anyhow::Result<Self> {
        let pool = store::connect(&DatabaseConfig::from_env(env)?).await?;
        Self::with_pool(env, &EnvSecrets, pool, choices).await
    }

    /// As [`Components::connect`], on an existing pool and secrets (tests bring theirs).
    pub async fn with_pool(
        env: &Env,
        secrets: &dyn SecretSource,
        pool: PgPool,
        choices: Choices,
    ) -> anyhow::Result<Self> {
        let local = LocalConfig::from_env(env)?;
        let vision = match choices.vision {
            Some(chosen) => chosen,
            None => VisionSettings::from_env(env)?,
        };
        let analyzer = AnalyzerConfig::with_vision(env, vision)?;
        let active = match choices.embedding {
            Some(chosen) => chosen,
            None => EmbeddingSettings::from_env(env)?,
        };
        let embedder = EmbedderConfig::with_models(env, active, None)?;
        let vision = analyzer.vision.build(secrets).await.map_err(anyhow::Error::msg).context("vision provider")?;
        let embedding =
            embedder.active.build(secrets).await.map_err(anyhow::Error::msg).context("embedding provider")?;
        let batches = match choices.batch_api {
            true => {
                Some(analyzer.vision.build_batches(secrets).await.map_err(anyhow::Error::msg).context("--batch-api")?)
            }
            false => None,
        };
        Ok(Self {
            pool,
            store: Arc::new(FolderStore::new(local.data_dir.join("bucket"))),
            thumbnail: ThumbnailConfig::from_env(env)?,
            local,
            analyzer,
            embedder,
            vision,
            embedding,
            batches,
        })
    }
}
