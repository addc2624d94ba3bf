//! A change of embedding model without downtime: `collections reembed`
//! embeds every latest analysis with another model beside the vectors of the
//! active one, which searches keep using until the operator switches the
//! configuration (`EMBEDDING_PROVIDER`, its model, `EMBEDDING_DIMENSIONS`);
//! then `collections prune --model OLD` removes the old model's vectors and
//! its index. The new model may have another size: each model has its own.

use std::time::Duration;

use domain::events::{AnalysisComplete, PipelineEvent};
use domain::keys::ImageKey;
use ops::kinesis::StreamWriter;
use sqlx::PgPool;
use store::{embeddings, models};

use crate::components::Components;
use crate::pipeline::run_events;
use crate::report::Report;

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
        models::find(pool, model).await?.is_some(),
        "{model} is not registered: deploy with it as the re-embed model (reembedProvider, reembedModel, \
         reembedDimensions) first; the migrator registers and indexes it"
    );
    let events = embeddings::unembedded(pool, model, user)
        .await?
        .into_iter()
        .filter_map(|todo| {
            let parsed = ImageKey::parse(&todo.file_path).ok()?;
            let event = AnalysisComplete {
                reembed_model: Some(model.to_owned()),
                ..AnalysisComplete::of_key(&parsed, todo.analysis_id)
            };
            Some((todo.item_id, PipelineEvent::AnalysisComplete(event)))
        })
        .collect();
    Ok(ops::streams::put_events(analyzed, events, rate).await?)
}

/// Embeds the latest analysis of every item (of `user`, or everyone's)
/// that `c`'s embedding model has not embedded yet, as the embedder does
/// (batched, retried), at most `rate` analyses a second. Run again after an
/// interruption, it goes on where it stopped: what is embedded is skipped.
pub async fn reembed(c: &Components, user: Option<&str>, rate: f64) -> anyhow::Result<Report> {
    let todo = embeddings::unembedded(&c.pool, c.embedding.model(), user).await?;
    let keyed = todo.into_iter().map(|t| (t.item_id, t.file_path, t.analysis_id)).collect();
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
    if let Some(last) = embeddings::last_written(&c.pool, model, user).await? {
        let age = (chrono::Utc::now() - last).to_std().unwrap_or_default();
        anyhow::ensure!(
            age >= idle,
            "a vector of {model} was written {} s ago: something may still use it (a deployment not switched \
             yet?); stop it, or lower --idle-minutes",
            age.as_secs()
        );
    }
    Ok(match user {
        Some(user) => embeddings::remove_of_user(&c.pool, model, user).await?,
        None => models::remove(&c.pool, model).await?,
    })
}
