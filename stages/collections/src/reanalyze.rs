//! `collections reanalyze`: new analysis versions of stored images (the
//! `reanalysis` field of `ImageProcessed`), embedded in turn; search then
//! uses the new versions. Older versions are kept, or pruned with `--prune`.

use std::sync::Arc;

use shared::events::{ImageProcessed, PipelineEvent};
use shared::keys::ImageKey;
use sqlx::PgPool;
use uuid::Uuid;

use crate::components::Components;
use crate::pipeline::Pipeline;
use crate::report::{Report, Tracker};

/// Which items to analyse again.
#[derive(Debug, Clone, Copy, Default)]
pub struct Selection<'a> {
    pub user: Option<&'a str>,
    /// Items whose latest analysis has this category.
    pub category: Option<&'a str>,
}

/// Analyses the selected thumbnailed items again with the configured
/// provider and model; with `prune`, their older versions (and those
/// versions' vectors) are removed once the new ones are stored.
pub async fn reanalyze(c: &Components, selection: Selection<'_>, prune: bool) -> anyhow::Result<Report> {
    let items: Vec<(Uuid, String, String, Option<String>)> = sqlx::query_as(
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
    .fetch_all(&c.pool)
    .await?;
    // One request id for the run: its replays are one version, not more.
    let request = format!("reanalyze-{}", Uuid::now_v7());
    let tracker = Arc::new(Tracker::new(items.len() as u64));
    let pipeline = Pipeline::start(c, c.store.clone(), tracker.clone())?;
    let mut ids = Vec::with_capacity(items.len());
    for (id, bucket, key, thumbnail_key) in items {
        let parsed = match ImageKey::parse(&key) {
            Ok(parsed) => parsed,
            Err(e) => {
                tracker.failed(key, e.to_string());
                continue;
            }
        };
        tracker.register(id, &key);
        ids.push(id);
        let event = ImageProcessed {
            thumbnail_key: thumbnail_key.unwrap_or_else(|| parsed.thumbnail_key()),
            reanalysis: Some(request.clone()),
            ..ImageProcessed::of(&bucket, &parsed)
        };
        pipeline.submit_event(PipelineEvent::ImageProcessed(event)).await?;
    }
    pipeline.finish().await?;
    if prune {
        prune_older_versions(&c.pool, &ids).await?;
    }
    Ok(tracker.finish())
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
