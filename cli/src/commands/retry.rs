//! `collections retry`: failed items again, from the stage that failed.

use domain::settings::Env;

use crate::components::Components;
use crate::ingest;

/// Run failed items again from the stage where they failed.
#[derive(Debug, clap::Args)]
pub struct Retry {
    #[arg(long)]
    user: Option<String>,
    #[arg(long, default_value_t = 1000)]
    limit: i64,
}

impl Retry {
    pub async fn run(self, env: &Env) -> anyhow::Result<()> {
        let c = Components::from_env(env).await?;
        let report = ingest::retry_failures(&c, self.user.as_deref(), self.limit).await?;
        report.print()
    }
}
