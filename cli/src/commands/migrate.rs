//! `collections migrate`: the migrations, and the configured embedding
//! model registered and indexed (needs no API key).

use domain::settings::Env;
use embedding::EmbeddingSettings;
use store::config::DatabaseConfig;

use crate::components::prepare_database;

/// Apply the database migrations, and register and index the configured
/// embedding model (harmless to repeat; needs no API key).
#[derive(Debug, clap::Args)]
pub struct Migrate {}

impl Migrate {
    pub async fn run(self, env: &Env) -> anyhow::Result<()> {
        let pool = store::connect(&DatabaseConfig::from_env(env)?).await?;
        let model = EmbeddingSettings::from_env(env)?;
        prepare_database(&pool, &model, true).await?;
        println!("migrations applied; {} is registered and indexed", model.stored_name());
        Ok(())
    }
}
