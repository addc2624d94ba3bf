//! `collections run DIR`: the whole pipeline over a folder.

use std::path::PathBuf;

use domain::settings::Env;
use store::models;

use crate::components::{Choices, Components, INDEX_BUILD_MEMORY_MIB};
use crate::ingest;

/// Run every image under a folder through thumbnail → analysis → embedding.
#[derive(Debug, clap::Args)]
pub struct Run {
    /// The folder; its files become `{user}/{path inside the folder}`.
    dir: PathBuf,
    /// Whose images these are.
    #[arg(long, default_value = "local")]
    user: String,
    /// Process images again even if they were processed before.
    #[arg(long)]
    force: bool,
    /// For big loads: drop the vector index first and build it once at the
    /// end (searches scan meanwhile).
    #[arg(long)]
    defer_index: bool,
    /// Analyse through the vision provider's batch API (Anthropic's or
    /// OpenAI's, half the price, answered within 24 hours) instead of a call
    /// per image; the command waits for the batches, and a rerun picks up
    /// those in flight.
    #[arg(long)]
    batch_api: bool,
}

impl Run {
    pub async fn run(self, env: &Env) -> anyhow::Result<()> {
        let c = Components::connect(env, Choices { batch_api: self.batch_api, ..Choices::default() }).await?;
        c.prepare_database(!self.defer_index).await?;
        if self.defer_index {
            models::drop_indexes(&c.pool).await?;
        }
        let report = ingest::run_folder(&c, &self.dir, &self.user, self.force).await;
        if self.defer_index {
            eprintln!("building the vector indexes ...");
            models::build_indexes(&c.pool, INDEX_BUILD_MEMORY_MIB).await?;
        }
        report?.print()
    }
}
