//! A change of embedding model without downtime: `collections reembed`
//! embeds every latest analysis with another model beside the vectors of the
//! active one, which searches keep using until the operator switches the
//! configuration (`EMBEDDING_PROVIDER`, its model, `EMBEDDING_DIMENSIONS`);
//! then `collections prune --model OLD` removes the old model's vectors and
//! its index. The new model may have another size: each model has its own.

use std::time::Duration;

use shared::aws::kinesis::StreamWriter;
use shared::events::{AnalysisComplete, PipelineEvent};
use shared::keys::ImageKey;
use sqlx::PgPool;
use uuid::Uuid;

use crate::components::Components;
use crate::pipeline::run_events;
use crate::report::Report;

/// The latest analysis of every item (of `user`, or everyone's) that
/// `model` has not embedded: (item, analysis, key).
async fn pending(pool: &PgPool, model: &str, user: Option<&str>) -> anyhow::Result<Vec<(Uuid, Uuid, String)>> {
    let latest: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        r#"
        SELECT DISTINCT ON (a.item_id) a.item_id, a.id, i.file_path
        FROM analyses a JOIN items i ON i.id = a.item_id
        WHERE ($1::text IS NULL OR a.user_id = $1)
        ORDER BY a.item_id, a.version DESC
        "#,
    )
    .bind(user)
    .fetch_all(pool)
    .await?;
    let analyses: Vec<Uuid> = latest.iter().map(|t| t.1).collect();
    let embedded = shared::db::embeddings::existing(pool, &analyses, model).await?;
    Ok(latest.into_iter().filter(|(_, analysis, _)| !embedded.contains(analysis)).collect())
}

/// Puts the latest analysis of every item that `model` (the embedder
/// function's `REEMBED_*` model, by its stored name) has not embedded on
/// the analyzed stream, asking for that model, at most `rate` a second.
/// The model must be registered (the migrator does it on deploy). Run
/// again, it puts only what is still missing. Answers how many were put.
pub async fn reembed_on_stream(
    pool: &PgPool,
    analyzed: &StreamWriter,
    model: &str,
    user: Option<&str>,
    rate: f64,
) -> anyhow::Result<u64> {
    anyhow::ensure!(
        shared::db::models::find(pool, model).await?.is_some(),
        "{model} is not registered: deploy with it as the re-embed model (reembedProvider, reembedModel, \
         reembedDimensions) first; the migrator registers and indexes it"
    );
    let events = pending(pool, model, user)
        .await?
        .into_iter()
        .filter_map(|(item, analysis, key)| {
            let parsed = ImageKey::parse(&key).ok()?;
            let event = AnalysisComplete {
                reembed_model: Some(model.to_owned()),
                ..AnalysisComplete::of_key(&parsed, analysis)
            };
            Some((item, PipelineEvent::AnalysisComplete(event)))
        })
        .collect();
    crate::streams::put_events(analyzed, events, rate).await
}

/// Embeds the latest analysis of every item (of `user`, or everyone's)
/// that `c`'s embedding model has not embedded yet, as the embedder does
/// (batched, retried), at most `rate` analyses a second. Run again after an
/// interruption, it goes on where it stopped: what is embedded is skipped.
pub async fn reembed(c: &Components, user: Option<&str>, rate: f64) -> anyhow::Result<Report> {
    let todo = pending(&c.pool, c.embedding.model(), user).await?;
    let keyed = todo.into_iter().map(|(item, analysis, key)| (item, key, analysis)).collect();
    let pause = Duration::from_secs_f64(1.0 / rate);
    let (report, _) = run_events(c, keyed, Some(pause), |analysis, key| {
        PipelineEvent::AnalysisComplete(AnalysisComplete::of_key(key, analysis))
    })
    .await?;
    Ok(report)
}

/// Removes `model`'s vectors: of `user` only, or (no user) all of them
/// with the model's index and registration. Refuses the model this
/// configuration names as active, and a model whose last vector is newer
/// than `idle` (something, a deployment with another configuration, may
/// still write and search it). Answers how many vectors went.
pub async fn prune(c: &Components, model: &str, user: Option<&str>, idle: Duration) -> anyhow::Result<u64> {
    anyhow::ensure!(
        model != c.embedding.model(),
        "{model} is the active embedding model: switch the configuration to another before pruning it"
    );
    let last: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT max(created_at) FROM embeddings WHERE embedding_model = $1 AND ($2::text IS NULL OR user_id = $2)",
    )
    .bind(model)
    .bind(user)
    .fetch_one(&c.pool)
    .await?;
    if let Some(last) = last {
        let age = (chrono::Utc::now() - last).to_std().unwrap_or_default();
        anyhow::ensure!(
            age >= idle,
            "a vector of {model} was written {} s ago: something may still use it (a deployment not switched \
             yet?); stop it, or lower --idle-minutes",
            age.as_secs()
        );
    }
    let Some(user) = user else {
        return Ok(shared::db::models::remove(&c.pool, model).await?);
    };
    let done = sqlx::query("DELETE FROM embeddings WHERE embedding_model = $1 AND user_id = $2")
        .bind(model)
        .bind(user)
        .execute(&c.pool)
        .await?;
    Ok(done.rows_affected())
}
