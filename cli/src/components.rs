//! The composition root: reads the configuration once and builds the pool,
//! the store and the providers every command uses.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use analyzer::AnalyzerConfig;
use anyhow::Context;
use embedder::EmbedderConfig;
use shared::api::{EnvSecrets, SecretSource};
use shared::config::{DatabaseConfig, Env};
use shared::db::models::{self, EmbeddingModel};
use shared::embedding::EmbeddingProvider;
use shared::llm::VisionProvider;
use shared::storage::FolderStore;
use sqlx::PgPool;
use thumbnailer::ThumbnailConfig;

use crate::pipeline::Batching;

/// Settings of the local mode itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    /// `COLLECTIONS_DATA_DIR`: where the local bucket lives (default `.collections`).
    pub data_dir: PathBuf,
    /// `BUCKET_NAME` (the seed's): the local bucket's name (default `local`).
    pub bucket: String,
    /// `COLLECTIONS_BATCH_SIZE`: records per stage batch, as a Kinesis
    /// trigger's batch size (default 32).
    /// `COLLECTIONS_BATCH_WINDOW_MS`: longest wait to fill a batch, ms (default 100).
    pub batching: Batching,
}

impl LocalConfig {
    pub fn from_env(env: &Env) -> Result<Self, shared::config::ConfigError> {
        Ok(Self {
            data_dir: PathBuf::from(env.string_or("COLLECTIONS_DATA_DIR", ".collections")),
            bucket: env.string_or("BUCKET_NAME", "local"),
            batching: Batching {
                size: env.parse_at_least("COLLECTIONS_BATCH_SIZE", 32, 1)?,
                window: Duration::from_millis(env.parse_or("COLLECTIONS_BATCH_WINDOW_MS", 100)?),
            },
        })
    }
}

/// maintenance_work_mem for building a vector index, MiB, unless told otherwise.
pub const INDEX_BUILD_MEMORY_MIB: u32 = 1024;

/// Applies the migrations, registers `embedder`'s active model with its
/// size, and builds what is missing of its vector index (unless `index` is
/// false: bulk loads build it once at the end). Needs no provider key.
pub async fn prepare_database(pool: &PgPool, embedder: &EmbedderConfig, index: bool) -> anyhow::Result<()> {
    shared::db::migrate(pool).await?;
    let active = embedder.active();
    let model = EmbeddingModel::new(&embedder::providers::stored_name(&active), active.dimensions);
    models::prepare(pool, &model, index.then_some(INDEX_BUILD_MEMORY_MIB), None).await?;
    Ok(())
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
}

impl std::fmt::Debug for Components {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Components").field("local", &self.local).finish_non_exhaustive()
    }
}

impl Components {
    /// [`prepare_database`] for this configuration's embedding model.
    pub async fn prepare_database(&self, index: bool) -> anyhow::Result<()> {
        prepare_database(&self.pool, &self.embedder, index).await
    }

    /// Reads every setting from `env` (API keys too) and connects to the database.
    pub async fn from_env(env: &Env) -> anyhow::Result<Self> {
        let database = DatabaseConfig::from_env(env)?;
        let pool = shared::db::connect(&database).await?;
        Self::with_pool(env, &EnvSecrets, pool).await
    }

    /// As [`Components::from_env`], on an existing pool (tests bring theirs).
    pub async fn with_pool(env: &Env, secrets: &dyn SecretSource, pool: PgPool) -> anyhow::Result<Self> {
        let local = LocalConfig::from_env(env)?;
        let analyzer = AnalyzerConfig::from_env(env)?;
        let embedder = EmbedderConfig::from_env(env)?;
        let vision = analyzer::providers::build(&analyzer, secrets)
            .await
            .map_err(anyhow::Error::msg)
            .context("vision provider")?;
        let embedding = embedder::providers::build(&embedder, secrets)
            .await
            .map_err(anyhow::Error::msg)
            .context("embedding provider")?;
        Ok(Self {
            pool,
            store: Arc::new(FolderStore::new(local.data_dir.join("bucket"))),
            thumbnail: ThumbnailConfig::from_env(env)?,
            local,
            analyzer,
            embedder,
            vision,
            embedding,
        })
    }
}
