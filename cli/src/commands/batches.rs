//! `collections batches`: the work sent through a provider's batch API
//! (`--batch-api`), and (`--follow`) finishing what is in flight.

use std::fmt::Write as _;

use chrono::Utc;
use domain::settings::Env;
use store::batches::{self, Batch};

use crate::components::{Choices, Components};
use crate::pipeline::run_events;

/// The provider batches: requests queued, batches in progress and recent
/// ones; with --follow, submit what is queued for the configured vision
/// model and wait for its batches in flight, storing and embedding their
/// results (as a rerun of the command that queued them would).
#[derive(Debug, clap::Args)]
pub struct Batches {
    #[arg(long)]
    follow: bool,
    /// How many finished batches to list.
    #[arg(long, default_value_t = 10)]
    recent: i64,
}

impl Batches {
    pub async fn run(self, env: &Env) -> anyhow::Result<()> {
        let c = Components::connect(env, Choices { batch_api: self.follow, ..Choices::default() }).await?;
        if self.follow {
            c.prepare_database(true).await?;
            let (report, _) = run_events(&c, Vec::<(uuid::Uuid, String, ())>::new(), None, |(), _| {
                unreachable!("no event is submitted: only the batches in flight are followed")
            })
            .await?;
            print!("{}", report.summary());
        }
        let (queued, oldest) = batches::queued(&c.pool, None).await?;
        print!("{}", listing(queued, oldest, &batches::recent(&c.pool, self.recent).await?));
        Ok(())
    }
}

/// What `collections batches` prints.
fn listing(queued: i64, oldest: Option<chrono::DateTime<Utc>>, batches: &[Batch]) -> String {
    let mut out = format!("requests queued for a batch: {queued}");
    if let Some(oldest) = oldest {
        let _ = write!(out, " (the oldest since {})", oldest.format("%Y-%m-%d %H:%M:%S UTC"));
    }
    out.push('\n');
    if batches.is_empty() {
        out.push_str("no batches\n");
    }
    for b in batches {
        let overdue = b.status != "ingested" && b.expires_at.is_some_and(|at| at < Utc::now());
        let _ = writeln!(
            out,
            "{}  {:<11} {} {}  {} requests: {} stored, {} failed, {} submitted again  submitted {}{}",
            b.provider_batch_id.as_deref().unwrap_or("(being submitted, or its answer was lost)"),
            b.status,
            b.provider,
            b.model,
            b.requests,
            b.succeeded,
            b.failed,
            b.resubmitted,
            b.submitted_at.format("%Y-%m-%d %H:%M:%S UTC"),
            if overdue { "  PAST ITS WINDOW" } else { "" },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn the_listing_shows_each_batch_and_flags_one_past_its_window() {
        let at = Utc.with_ymd_and_hms(2026, 12, 4, 5, 0, 0).unwrap();
        let batch = |id: Option<&str>, status: &str, expires: chrono::DateTime<Utc>| Batch {
            id: Uuid::nil(),
            provider: "anthropic".into(),
            model: "claude-haiku-4-5".into(),
            provider_batch_id: id.map(str::to_owned),
            status: status.into(),
            requests: 6,
            succeeded: 2,
            failed: 1,
            resubmitted: 3,
            submitted_at: at,
            expires_at: Some(expires),
            ended_at: None,
            ingested_at: None,
        };
        let shown = listing(
            2,
            Some(at),
            &[
                batch(Some("msgbatch_1"), "in_progress", at + chrono::TimeDelta::hours(24)),
                batch(Some("msgbatch_0"), "in_progress", at - chrono::TimeDelta::hours(1)),
                batch(None, "submitting", at + chrono::TimeDelta::hours(24)),
            ],
        );
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[0], "requests queued for a batch: 2 (the oldest since 2026-12-04 05:00:00 UTC)");
        assert_eq!(
            lines[1],
            "msgbatch_1  in_progress anthropic claude-haiku-4-5  6 requests: 2 stored, 1 failed, 3 submitted again  \
             submitted 2026-12-04 05:00:00 UTC"
        );
        assert!(lines[2].ends_with("PAST ITS WINDOW"), "{}", lines[2]);
        assert!(lines[3].starts_with("(being submitted, or its answer was lost)  submitting"), "{}", lines[3]);
        assert_eq!(listing(0, None, &[]), "requests queued for a batch: 0\nno batches\n");
    }
}
