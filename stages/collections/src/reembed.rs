//! A change of embedding model without downtime: `collections reembed`
//! embeds every latest analysis with another model beside the vectors of the
//! active one, which searches keep using until the operator switches the
//! configuration (`EMBEDDING_PROVIDER` and its model); then `collections
//! prune-vectors --model OLD` removes the old model's vectors.

use std::sync::Arc;
use std::time::Duration;

use shared::events::{AnalysisComplete, PipelineEvent};
use shared::keys::ImageKey;
use sqlx::PgPool;
use uuid::Uuid;

use crate::components::Components;
use crate::pipeline::Pipeline;
use crate::report::{Report, Tracker};

/// Embeds the latest analysis of every item (of `user`, or everyone's)
/// that `c`'s embedding model has not embedded yet, as the embedder does
/// (batched, retried), at most `rate` analyses a second. Run again after an
/// interruption, it goes on where it stopped: what is embedded is skipped.
pub async fn reembed(c: &Components, user: Option<&str>, rate: f64) -> anyhow::Result<Report> {
    let model = c.embedding.model().to_owned();
    let todo: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        r#"
        SELECT DISTINCT ON (a.item_id) a.item_id, a.id, i.file_path
        FROM analyses a JOIN items i ON i.id = a.item_id
        WHERE ($1::text IS NULL OR a.user_id = $1)
        ORDER BY a.item_id, a.version DESC
        "#,
    )
    .bind(user)
    .fetch_all(&c.pool)
    .await?;
    let embedded: std::collections::HashSet<Uuid> =
        shared::db::embeddings::existing(&c.pool, &todo.iter().map(|t| t.1).collect::<Vec<_>>(), &model).await?;
    let todo: Vec<_> = todo.into_iter().filter(|(_, analysis, ..)| !embedded.contains(analysis)).collect();
    let tracker = Arc::new(Tracker::new(todo.len() as u64));
    let pipeline = Pipeline::start(c, c.store.clone(), tracker.clone())?;
    let pause = Duration::from_secs_f64(1.0 / rate);
    for (item, analysis, key) in todo {
        let parsed = match ImageKey::parse(&key) {
            Ok(parsed) => parsed,
            Err(e) => {
                tracker.failed(key, e.to_string());
                continue;
            }
        };
        tracker.register(item, &key);
        let event = AnalysisComplete::of_key(&parsed, analysis);
        pipeline.submit_event(PipelineEvent::AnalysisComplete(event)).await?;
        tokio::time::sleep(pause).await;
    }
    pipeline.finish().await?;
    Ok(tracker.finish())
}

/// Removes every vector of `model` (of `user`, or everyone's); answers how many.
pub async fn prune_vectors(pool: &PgPool, model: &str, user: Option<&str>) -> anyhow::Result<u64> {
    let done = sqlx::query("DELETE FROM embeddings WHERE embedding_model = $1 AND ($2::text IS NULL OR user_id = $2)")
        .bind(model)
        .bind(user)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}
