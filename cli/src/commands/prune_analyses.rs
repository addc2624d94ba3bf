//! `collections prune-analyses`: superseded analysis versions removed.

use domain::settings::Env;
use embedding::EmbeddingSettings;
use store::config::DatabaseConfig;

/// Remove analyses that a newer version of their item supersedes, once
/// that version has a vector of the active model (after `reanalyze
/// --stream` drained).
#[derive(Debug, clap::Args)]
pub struct PruneAnalyses {
    #[arg(long)]
    user: Option<String>,
}

impl PruneAnalyses {
    pub async fn run(self, env: &Env) -> anyhow::Result<()> {
        let pool = store::connect(&DatabaseConfig::from_env(env)?).await?;
        let active = EmbeddingSettings::from_env(env)?.stored_name();
        let removed = store::analyses::prune_superseded(&pool, &active, self.user.as_deref()).await?;
        println!("removed {removed} superseded analyses");
        Ok(())
    }
}
