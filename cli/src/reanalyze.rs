//! Re-analysis: new analysis versions of stored images (the `reanalysis`
//! field of `ImageProcessed`), embedded in turn; search then uses the new
//! versions. Older versions are kept, or pruned with `--prune` (here) or
//! `collections prune-analyses` (after a `--stream` run: the work goes onto
//! the AWS processed stream, for the analyzer function).

use domain::events::{ImageProcessed, PipelineEvent};
use domain::keys::ImageKey;
use ops::kinesis::StreamWriter;
use ops::streams;
use sqlx::PgPool;
use store::analyses::{self, ToReanalyse};
use uuid::Uuid;

use crate::components::Components;
use crate::pipeline::run_events;
use crate::report::Report;

/// Which items to analyse again.
#[derive(Debug, Clone, Copy, Default)]
pub struct Selection<'a> {
    pub user: Option<&'a str>,
    /// Items whose latest analysis has this category.
    pub category: Option<&'a str>,
    /// Leave out items with a request waiting for a provider batch (with
    /// `--batch-api`: a rerun does not submit them twice).
    pub not_waiting: bool,
}

/// The thumbnailed items of the selection (duplicates follow their
/// earlier item, and are not analysed).
async fn select(pool: &PgPool, selection: Selection<'_>) -> anyhow::Result<Vec<ToReanalyse>> {
    Ok(analyses::to_reanalyse(pool, selection.user, selection.category, selection.not_waiting).await?)
}

/// One request id for a run: its replays are one version, not more.
fn request_id() -> String {
    format!("reanalyze-{}", Uuid::now_v7())
}

/// The event asking for a new analysis of `key`'s item.
fn reanalysis(request: &str, bucket: &str, key: &ImageKey, thumbnail_key: Option<String>) -> ImageProcessed {
    ImageProcessed {
        thumbnail_key: thumbnail_key.unwrap_or_else(|| key.thumbnail_key()),
        reanalysis: Some(request.to_owned()),
        ..ImageProcessed::of(bucket, key)
    }
}

/// Analyses the selected thumbnailed items again with the components'
/// provider and model; with `prune`, their older versions (and those
/// versions' vectors) are removed once the new ones are stored.
pub async fn reanalyze(c: &Components, selection: Selection<'_>, prune: bool) -> anyhow::Result<Report> {
    let items = select(&c.pool, selection).await?;
    let request = request_id();
    let keyed = items.into_iter().map(|item| (item.id, item.file_path, (item.bucket, item.thumbnail_key))).collect();
    let (report, ids) = run_events(c, keyed, None, |(bucket, thumbnail_key), key| {
        PipelineEvent::ImageProcessed(reanalysis(&request, &bucket, key, thumbnail_key))
    })
    .await?;
    if prune {
        analyses::prune_older_versions(&c.pool, &ids).await?;
    }
    Ok(report)
}

/// Puts a re-analysis of every selected item on the processed stream, for
/// the analyzer function (with its configured model), at most `rate` a
/// second; the new versions are embedded as any. Answers how many were put.
pub async fn reanalyze_on_stream(
    pool: &PgPool,
    processed: &StreamWriter,
    selection: Selection<'_>,
    rate: f64,
) -> anyhow::Result<u64> {
    let request = request_id();
    let events = select(pool, selection)
        .await?
        .into_iter()
        .filter_map(|item| {
            let parsed = ImageKey::parse(&item.file_path).ok()?;
            let event = reanalysis(&request, &item.bucket, &parsed, item.thumbnail_key);
            Some((item.id, PipelineEvent::ImageProcessed(event)))
        })
        .collect();
    Ok(streams::put_events(processed, events, rate).await?)
}
