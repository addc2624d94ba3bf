//! `collections reanalyze`: new analysis versions of stored images (the
//! `reanalysis` field of `ImageProcessed`), embedded in turn; search then
//! uses the new versions. Older versions are kept, or pruned with `--prune`
//! (here) or `collections prune-analyses` (after a `--stream` run: the work
//! goes onto the AWS processed stream, for the analyzer function).

use shared::aws::kinesis::StreamWriter;
use shared::events::{ImageProcessed, PipelineEvent};
use shared::keys::ImageKey;
use sqlx::PgPool;
use uuid::Uuid;

use crate::components::Components;
use crate::pipeline::run_events;
use crate::report::Report;
use crate::streams;

/// Which items to analyse again.
#[derive(Debug, Clone, Copy, Default)]
pub struct Selection<'a> {
    pub user: Option<&'a str>,
    /// Items whose latest analysis has this category.
    pub category: Option<&'a str>,
}

/// A selected item: id, bucket, key, thumbnail key.
type Selected = (Uuid, String, String, Option<String>);

/// The thumbnailed items of the selection (duplicates follow their
/// earlier item, and are not analysed).
async fn select(pool: &PgPool, selection: Selection<'_>) -> anyhow::Result<Vec<Selected>> {
    Ok(sqlx::query_as(
        r#"
        SELECT i.id, i.bucket, i.file_path, i.thumbnail_key
        FROM items i
        WHERE i.thumbnail_status = 'done' AND i.duplicate_of IS NULL
          AND ($1::text IS NULL OR i.user_id = $1)
          AND ($2::text IS NULL OR (SELECT a.category FROM analyses a WHERE a.item_id = i.id
                                    ORDER BY a.version DESC LIMIT 1) = $2)
        ORDER BY i.file_path
        "#,
    )
    .bind(selection.user)
    .bind(selection.category)
    .fetch_all(pool)
    .await?)
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

/// Analyses the selected thumbnailed items again with the configured
/// provider and model; with `prune`, their older versions (and those
/// versions' vectors) are removed once the new ones are stored.
pub async fn reanalyze(c: &Components, selection: Selection<'_>, prune: bool) -> anyhow::Result<Report> {
    let items = select(&c.pool, selection).await?;
    let request = request_id();
    let keyed = items.into_iter().map(|(id, bucket, key, thumbnail_key)| (id, key, (bucket, thumbnail_key))).collect();
    let (report, ids) = run_events(c, keyed, None, |(bucket, thumbnail_key), key| {
        PipelineEvent::ImageProcessed(reanalysis(&request, &bucket, key, thumbnail_key))
    })
    .await?;
    if prune {
        prune_older_versions(&c.pool, &ids).await?;
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
        .filter_map(|(id, bucket, key, thumbnail_key)| {
            let parsed = ImageKey::parse(&key).ok()?;
            Some((id, PipelineEvent::ImageProcessed(reanalysis(&request, &bucket, &parsed, thumbnail_key))))
        })
        .collect();
    streams::put_events(processed, events, rate).await
}

/// Removes the analyses that a newer version of their item supersedes,
/// of `user` or everyone's, once that newer version has a vector of
/// `model` (the active one: no item drops out of semantic search); their
/// vectors go with them.
pub async fn prune_superseded(pool: &PgPool, model: &str, user: Option<&str>) -> anyhow::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM analyses a WHERE ($1::text IS NULL OR a.user_id = $1)
           AND EXISTS (SELECT 1 FROM analyses b JOIN embeddings e ON e.analysis_id = b.id
                       WHERE b.item_id = a.item_id AND b.version > a.version AND e.embedding_model = $2)",
    )
    .bind(user)
    .bind(model)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Removes every analysis of these items but the latest (their vectors go
/// with them).
pub async fn prune_older_versions(pool: &PgPool, items: &[Uuid]) -> anyhow::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM analyses a WHERE a.item_id = ANY($1)
           AND EXISTS (SELECT 1 FROM analyses b WHERE b.item_id = a.item_id AND b.version > a.version)",
    )
    .bind(items)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
