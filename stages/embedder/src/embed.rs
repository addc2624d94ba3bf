//! The embedder stage's batch: load analyses, leave those already embedded
//! by this model alone, embed the rest in request batches under the
//! provider's limits, store everything in one statement.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use shared::db::Vector;
use shared::db::analyses::{self, AnalysisRecord};
use shared::db::embeddings::{self, EmbeddingBatch, NewEmbedding};
use shared::embedding::{EmbeddingError, EmbeddingProvider, InputType, check_dimensions, document, request_batches};
use shared::events::AnalysisComplete;
use shared::llm::Analysis;
use shared::retry::retry;
use shared::stage::{BatchContext, Failure, Outcome, Stage, until_deadline};
use sqlx::PgPool;
use tracing::warn;
use uuid::Uuid;

use crate::config::EmbedderConfig;

pub struct Embedder {
    pool: PgPool,
    provider: Arc<dyn EmbeddingProvider>,
    config: EmbedderConfig,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("model", &self.provider.model()).field("config", &self.config).finish()
    }
}

/// Where each input stands as the batch goes on.
enum Step {
    Finished(Outcome),
    Unchanged,
    /// Waiting for the vector of document number `usize`.
    Embed(usize),
}

impl Embedder {
    pub fn new(pool: PgPool, provider: Arc<dyn EmbeddingProvider>, config: EmbedderConfig) -> Self {
        Self { pool, provider, config }
    }

    /// Embeds documents, `concurrency` requests at a time; one result per document.
    /// One vector (or failure) per document. Requests still running at the
    /// `deadline` are dropped and their documents fail as retriable.
    async fn embed_all(&self, documents: &[String], deadline: Option<Instant>) -> Vec<Result<Vec<f32>, Failure>> {
        let mut limits = self.provider.limits();
        limits.max_texts = self.config.max_batch.map_or(limits.max_texts, |m| m.min(limits.max_texts));
        let batches = request_batches(documents, limits);
        let batches_ref = &batches;
        let results =
            until_deadline(0..batches.len(), batches.len(), self.config.concurrency, deadline, |b| async move {
                let texts = &documents[batches_ref[b].clone()];
                let vectors = retry(&self.config.retry, || self.provider.embed(texts, InputType::Document))
                    .await
                    .map_err(|(e, attempts)| self.failure(e, attempts))?;
                self.check(texts.len(), vectors)
            })
            .await;
        batches
            .into_iter()
            .zip(results)
            .flat_map(|(range, result)| {
                match result
                    .unwrap_or_else(|| Err(Failure::cut_off(format!("embedding with {}", self.provider.model()))))
                {
                    Ok(vectors) => vectors.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(failure) => vec![Err(failure); range.len()],
                }
            })
            .collect()
    }

    fn failure(&self, e: EmbeddingError, attempts: u32) -> Failure {
        Failure {
            reason: format!("embedding with {} failed after {attempts} attempt(s): {e}", self.provider.model()),
            retriable: e.is_retriable(),
            recorded: true,
        }
    }

    /// A reply must carry one vector per text, each of the stored dimensions.
    fn check(&self, sent: usize, vectors: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>, Failure> {
        let model = self.provider.model();
        if vectors.len() != sent {
            let e = EmbeddingError::WrongCount { model: model.to_owned(), sent, got: vectors.len() };
            return Err(self.failure(e, 1));
        }
        check_dimensions(model, &vectors).map_err(|e| self.failure(e, 1))?;
        Ok(vectors)
    }
}

fn unrecorded(reason: String) -> Outcome {
    Outcome::failed(reason, false, false)
}

#[async_trait]
impl Stage for Embedder {
    type Input = AnalysisComplete;

    fn name(&self) -> &'static str {
        "embedding"
    }

    async fn run_batch(&self, inputs: &[AnalysisComplete], context: &BatchContext) -> Vec<Outcome> {
        let ids: Vec<Option<Uuid>> = inputs.iter().map(|e| Uuid::parse_str(&e.analysis_id).ok()).collect();
        let wanted: Vec<Uuid> = ids.iter().flatten().copied().collect();
        let loaded: HashMap<Uuid, AnalysisRecord> = match analyses::load(&self.pool, &wanted).await {
            Ok(rows) => rows.into_iter().map(|r| (r.id, r)).collect(),
            Err(e) => {
                return vec![
                    Outcome::failed(format!("loading analyses failed: {e}"), e.is_retriable(), false);
                    inputs.len()
                ];
            }
        };
        let model = self.provider.model().to_owned();
        let done = match embeddings::existing(&self.pool, &wanted, &model).await {
            Ok(done) => done,
            Err(e) => {
                return vec![
                    Outcome::failed(format!("looking up embeddings failed: {e}"), e.is_retriable(), false);
                    inputs.len()
                ];
            }
        };

        let mut steps = Vec::with_capacity(inputs.len());
        let mut documents: Vec<String> = Vec::new();
        let mut sources = Vec::new();
        let mut failed: Vec<(Uuid, String)> = Vec::new();
        for (event, id) in inputs.iter().zip(&ids) {
            let Some(id) = id else {
                steps.push(Step::Finished(unrecorded(format!("analysis_id {:?} is not a UUID", event.analysis_id))));
                continue;
            };
            let Some(record) = loaded.get(id).filter(|r| r.item_id == event.item_uuid() && r.user_id == event.user_id)
            else {
                steps.push(Step::Finished(unrecorded(format!(
                    "analysis {id} of item {} (user {}) not found",
                    event.item_id, event.user_id
                ))));
                continue;
            };
            if done.contains(id) {
                steps.push(Step::Unchanged);
                continue;
            }
            let doc = serde_json::from_value::<Analysis>(record.analysis.0.clone()).map(|a| document(&a));
            match doc {
                Ok((text, mut source)) if !text.trim().is_empty() => {
                    source["analysis_id"] = serde_json::json!(id);
                    source["analysis_version"] = serde_json::json!(record.version);
                    steps.push(Step::Embed(documents.len()));
                    documents.push(text);
                    sources.push(source);
                }
                Ok(_) => {
                    let reason = format!("analysis {id} gives an empty embedding document");
                    failed.push((record.item_id, reason.clone()));
                    steps.push(Step::Finished(Outcome::failed(reason, false, true)));
                }
                Err(e) => {
                    let reason = format!("analysis {id} is not in the analysis schema: {e}");
                    failed.push((record.item_id, reason.clone()));
                    steps.push(Step::Finished(Outcome::failed(reason, false, true)));
                }
            }
        }

        let vectors = self.embed_all(&documents, context.deadline).await;
        let mut batch = EmbeddingBatch { failed, ..EmbeddingBatch::default() };
        for ((event, id), step) in inputs.iter().zip(&ids).zip(&steps) {
            match step {
                Step::Unchanged => batch.unchanged.push(event.item_uuid()),
                Step::Embed(n) => match &vectors[*n] {
                    Ok(vector) => batch.new.push(NewEmbedding {
                        item_id: event.item_uuid(),
                        analysis_id: id.expect("embedded inputs have ids"),
                        user_id: event.user_id.clone(),
                        vector: Vector(vector.clone()),
                        model: model.clone(),
                        source: sources[*n].clone(),
                    }),
                    Err(failure) => batch.failed.push((event.item_uuid(), failure.reason.clone())),
                },
                Step::Finished(_) => {}
            }
        }
        if let Err(e) = embeddings::store_batch(&self.pool, &batch).await {
            warn!(error = %e, "storing the batch failed");
            return vec![
                Outcome::failed(format!("storing embeddings failed: {e}"), e.is_retriable(), false);
                inputs.len()
            ];
        }
        steps
            .into_iter()
            .map(|step| match step {
                Step::Finished(outcome) => outcome,
                Step::Unchanged => Outcome::Done,
                Step::Embed(n) => match &vectors[n] {
                    Ok(_) => Outcome::Done,
                    Err(failure) => Outcome::Failed(failure.clone()),
                },
            })
            .collect()
    }
}
