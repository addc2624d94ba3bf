//! `collections vector-index drop|build|status`.

use domain::settings::Env;
use store::models::{self, VectorIndex};

use crate::components::{Components, INDEX_BUILD_MEMORY_MIB};

/// Drop, build or show the HNSW vector index of every registered embedding
/// model (for bulk loads: drop, load, build).
#[derive(Debug, clap::Args)]
pub struct VectorIndexCommand {
    #[arg(value_enum)]
    action: Action,
    /// maintenance_work_mem for the build, MiB.
    #[arg(long, default_value_t = INDEX_BUILD_MEMORY_MIB)]
    memory_mib: u32,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Action {
    Drop,
    Build,
    Status,
}

impl VectorIndexCommand {
    pub async fn run(self, env: &Env) -> anyhow::Result<()> {
        let c = Components::from_env(env).await?;
        match self.action {
            Action::Drop => models::drop_indexes(&c.pool).await?,
            Action::Build => models::build_indexes(&c.pool, self.memory_mib).await?,
            Action::Status => {}
        }
        let registered = models::registered(&c.pool).await?;
        if registered.is_empty() {
            println!("no embedding model is registered yet");
        }
        for model in registered {
            let state = match models::index_state(&c.pool, &model).await? {
                VectorIndex::Valid => "present",
                VectorIndex::Absent => "absent",
                VectorIndex::Partial => "partial (an interrupted build; `vector-index build` ends it)",
                VectorIndex::Unindexable => "none (over 4000 dimensions: searched exactly)",
            };
            let active = if model.model == c.embedding.model() { ", active" } else { "" };
            println!("{} ({} dimensions{active}): {state}", model.model, model.dimensions);
        }
        Ok(())
    }
}
