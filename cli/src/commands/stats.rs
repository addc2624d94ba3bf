//! `collections stats`: items by status, failures, tokens and their cost.

use domain::settings::Env;

use crate::components::Components;
use crate::stats::{PRICES, Prices, parse_since, report};

/// Items by status, the commonest failures, tokens by model and their
/// estimated cost (prices from prices.json or COLLECTIONS_PRICES).
#[derive(Debug, clap::Args)]
pub struct Stats {
    #[arg(long)]
    user: Option<String>,
    /// Only what was made since: a date (2026-11-30) or an RFC 3339 time.
    #[arg(long, value_parser = parse_since)]
    since: Option<chrono::DateTime<chrono::Utc>>,
}

impl Stats {
    pub async fn run(self, env: &Env) -> anyhow::Result<()> {
        let c = Components::from_env(env).await?;
        let prices = Prices::load(env.value(&PRICES).as_deref().map(std::path::Path::new))?;
        let filter = store::stats::Filter { user: self.user.as_deref(), since: self.since };
        let stats = store::stats::gather(&c.pool, filter).await?;
        print!("{}", report(&stats, &prices));
        Ok(())
    }
}
