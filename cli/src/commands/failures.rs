//! `collections failures`: what failed, with the stage and reason.

use domain::settings::Env;
use domain::text::printable;
use store::{items, status};

use crate::components::Components;

/// List items whose last attempt failed, with the stage and reason, and
/// failed records that belong to no item of their user.
#[derive(Debug, clap::Args)]
pub struct Failures {
    #[arg(long)]
    user: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: i64,
}

impl Failures {
    pub async fn run(self, env: &Env) -> anyhow::Result<()> {
        let c = Components::from_env(env).await?;
        let failed = items::failures(&c.pool, self.user.as_deref(), self.limit).await?;
        let records = status::record_failure_list(&c.pool, self.user.as_deref(), self.limit).await?;
        if failed.is_empty() && records.is_empty() {
            println!("no failed items");
        }
        for f in failed {
            println!(
                "{}  {}  stage={} attempts={}  {}",
                f.updated_at.format("%F %T"),
                printable(&f.file_path),
                f.failed_stage,
                f.attempts,
                printable(&f.last_error)
            );
        }
        for r in records {
            println!(
                "{}  {}  stage={} attempts={}  {}{}",
                r.updated_at.format("%F %T"),
                printable(r.object_key.as_deref().unwrap_or("(no item)")),
                r.stage,
                r.attempts,
                printable(&r.reason),
                if r.input.is_some() { "" } else { "  [unreadable: cannot be retried]" }
            );
        }
        Ok(())
    }
}
