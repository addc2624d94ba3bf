//! The embedder stage's batch, in named phases over each event's [`Step`]:
//! load the analyses, leave those already embedded by this model alone,
//! embed the rest in request batches under the provider's limits, store
//! everything in one statement.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use domain::analysis::Analysis;
use domain::events::AnalysisComplete;
use domain::stage::StageName;
use domain::usage::apportion;
use embedding::document::{document, request_batches};
use embedding::{EmbeddingError, EmbeddingProvider, InputType, check_dimensions, check_finite};
use remote::limit::AdaptiveLimit;
use remote::retry::retry;
use runtime::batch::{BatchContext, Meter, until_deadline};
use runtime::outcome::{Failure, Outcome};
use runtime::stage::Stage;
use serde_json::Value;
use sqlx::PgPool;
use store::Vector;
use store::analyses::{self, AnalysisRecord};
use store::embeddings::{self, EmbeddingBatch, NewEmbedding};
use uuid::Uuid;

use crate::config::EmbedderConfig;

pub struct Embedder {
    pool: PgPool,
    /// The active model.
    active: Model,
    config: EmbedderConfig,
    /// The model of a change of model, for the records that ask for it.
    reembed: Option<Model>,
}

/// A model the embedder calls, and its own limit of requests in flight.
struct Model {
    provider: Arc<dyn EmbeddingProvider>,
    limit: Arc<AdaptiveLimit>,
}

impl Model {
    fn new(provider: Arc<dyn EmbeddingProvider>, concurrency: usize) -> Self {
        let limit = Arc::new(AdaptiveLimit::new(provider.provider(), concurrency));
        Self { provider, limit }
    }
}

/// One model's pass over the records of a batch that it embeds.
struct Pass<'a> {
    embedder: &'a Embedder,
    model: &'a Model,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("model", &self.active.provider.model()).field("config", &self.config).finish()
    }
}

/// An embedded document: its vector and its share of its request's tokens.
type Document = (Vec<f32>, Option<i64>);

/// Where each event of a batch stands as the phases go on.
enum Step {
    Finished(Outcome),
    /// Its analysis (of this item) already has this model's vector.
    Unchanged(Uuid),
    /// Waiting for the vector of document number `usize`, of this item.
    Embed(usize, Uuid),
    /// Embedded; to store.
    Embedded(NewEmbedding),
    Stored,
}

impl Embedder {
    pub fn new(pool: PgPool, provider: Arc<dyn EmbeddingProvider>, config: EmbedderConfig) -> Self {
        Self { pool, active: Model::new(provider, config.concurrency), config, reembed: None }
    }

    /// Also embeds, with `provider`, the records that name its model in
    /// `reembed_model` (and only those).
    pub fn with_reembed(mut self, provider: Option<Arc<dyn EmbeddingProvider>>) -> Self {
        self.reembed = provider.map(|p| Model::new(p, self.config.concurrency));
        self
    }

    /// The active provider's limit of requests in flight, and whether it is out.
    pub fn limit(&self) -> Arc<AdaptiveLimit> {
        self.active.limit.clone()
    }

    /// The model a record asks for: the active one, or the re-embed
    /// model when it names that; an error when it names another.
    fn model_for(&self, event: &AnalysisComplete) -> Result<&Model, String> {
        let asked = match &event.reembed_model {
            // After the switch, the stragglers of a change of model ask for
            // what is now the active model.
            Some(asked) if asked != self.active.provider.model() => asked,
            _ => return Ok(&self.active),
        };
        match &self.reembed {
            Some(next) if next.provider.model() == asked => Ok(next),
            Some(next) => {
                let next = next.provider.model();
                Err(format!("the record asks to re-embed with {asked}; this embedder re-embeds with {next}"))
            }
            None => Err(format!(
                "the record asks to re-embed with {asked}; no re-embed model is configured (REEMBED_PROVIDER)"
            )),
        }
    }
}

impl Pass<'_> {
    /// Embeds documents, as many requests at a time as the model's limit
    /// allows (at most `concurrency`); one result per
    /// document: its vector and its share of its request's tokens (when the
    /// provider counted them), or its failure. Requests still running at the
    /// `deadline` are dropped and their documents fail as retriable. Each
    /// request, and the tokens of each reply, count on `meter`.
    async fn embed_all(
        &self,
        documents: &[String],
        deadline: Option<Instant>,
        meter: &Meter,
    ) -> Vec<Result<Document, Failure>> {
        let mut limits = self.model.provider.limits();
        limits.max_texts = self.embedder.config.max_batch.map_or(limits.max_texts, |m| m.min(limits.max_texts));
        let batches = request_batches(documents, limits);
        let batches_ref = &batches;
        let results = until_deadline(
            0..batches.len(),
            batches.len(),
            self.embedder.config.concurrency,
            deadline,
            |b| async move {
                let texts = &documents[batches_ref[b].clone()];
                let embedded = retry(&self.embedder.config.retry, &self.model.limit, deadline, || {
                    meter.call();
                    self.model.provider.embed(texts, InputType::Document)
                })
                .await
                .map_err(|(e, attempts)| self.failure(e, attempts))?;
                if let Some(usage) = embedded.usage {
                    meter.used(self.model.provider.model(), usage);
                }
                let shares = embedded.usage.map(|usage| apportion(usage.total(), texts));
                Ok((self.check(texts.len(), embedded.vectors)?, shares))
            },
        )
        .await;
        batches
            .into_iter()
            .zip(results)
            .flat_map(|(range, result)| {
                match result
                    .unwrap_or_else(|| Err(Failure::cut_off(format!("embedding with {}", self.model.provider.model()))))
                {
                    // One bad vector fails its own document only.
                    Ok((vectors, shares)) => vectors
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| {
                            let tokens = shares.as_ref().map(|s| i64::try_from(s[i]).unwrap_or(i64::MAX));
                            check_finite(self.model.provider.model(), &v)
                                .map(|()| (v, tokens))
                                .map_err(|e| self.failure(e, 1))
                        })
                        .collect::<Vec<_>>(),
                    Err(failure) => vec![Err(failure); range.len()],
                }
            })
            .collect()
    }

    fn failure(&self, e: EmbeddingError, attempts: u32) -> Failure {
        let reason = format!("embedding with {} failed after {attempts} attempt(s): {e}", self.model.provider.model());
        Failure::caused_by(reason, &e)
    }

    /// A reply must carry one vector per text, each of the model's dimensions.
    fn check(&self, sent: usize, vectors: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>, Failure> {
        let model = self.model.provider.model();
        if vectors.len() != sent {
            let e = EmbeddingError::WrongCount { model: model.to_owned(), sent, got: vectors.len() };
            return Err(self.failure(e, 1));
        }
        check_dimensions(model, self.model.provider.dimensions(), &vectors).map_err(|e| self.failure(e, 1))?;
        Ok(vectors)
    }
}

#[async_trait]
impl Stage for Embedder {
    type Input = AnalysisComplete;

    fn name(&self) -> StageName {
        StageName::Embedding
    }

    /// Each record is embedded by the model it asks for (the active one
    /// unless it names the re-embed model), one pass per model.
    async fn run_batch(&self, inputs: &[AnalysisComplete], context: &BatchContext) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; inputs.len()];
        let mut passes: Vec<(&Model, Vec<usize>)> = Vec::new();
        for (i, event) in inputs.iter().enumerate() {
            match self.model_for(event) {
                Ok(model) => match passes.iter_mut().find(|(m, _)| m.provider.model() == model.provider.model()) {
                    Some((_, members)) => members.push(i),
                    None => passes.push((model, vec![i])),
                },
                Err(reason) => outcomes[i] = Some(Failure::permanent(reason).into()),
            }
        }
        for (model, members) in passes {
            let events: Vec<AnalysisComplete> = members.iter().map(|&i| inputs[i].clone()).collect();
            let pass = Pass { embedder: self, model };
            for (i, outcome) in members.into_iter().zip(pass.run(&events, context).await) {
                outcomes[i] = Some(outcome);
            }
        }
        outcomes.into_iter().map(|o| o.expect("every record has a pass or a failure")).collect()
    }
}

impl Pass<'_> {
    async fn run(&self, inputs: &[AnalysisComplete], context: &BatchContext) -> Vec<Outcome> {
        let (mut steps, documents) = match self.documents(inputs).await {
            Ok(loaded) => loaded,
            Err(failure) => return vec![failure.into(); inputs.len()],
        };
        self.embed(inputs, &mut steps, &documents, context).await;
        self.store(&mut steps).await;
        steps
            .into_iter()
            .map(|step| match step {
                Step::Finished(outcome) => outcome,
                Step::Unchanged(_) => Outcome::Skipped(format!("already embedded by {}", self.model.provider.model())),
                Step::Stored => Outcome::Done,
                Step::Embed(..) | Step::Embedded(_) => unreachable!("every document is embedded, every vector stored"),
            })
            .collect()
    }
}

impl Pass<'_> {
    /// Phase 1: each event's analysis loaded (it must be of the event's
    /// item and user), and the document to embed made from it.
    async fn documents(&self, inputs: &[AnalysisComplete]) -> Result<(Vec<Step>, Vec<(String, Value)>), Failure> {
        let ids: Vec<Option<Uuid>> = inputs.iter().map(|e| Uuid::parse_str(&e.analysis_id).ok()).collect();
        let wanted: Vec<Uuid> = ids.iter().flatten().copied().collect();
        let loaded: HashMap<Uuid, AnalysisRecord> = analyses::load(&self.embedder.pool, &wanted)
            .await
            .map_err(|e| Failure::from_error(&e))?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let done = embeddings::existing(&self.embedder.pool, &wanted, self.model.provider.model())
            .await
            .map_err(|e| Failure::from_error(&e))?;

        let mut steps = Vec::with_capacity(inputs.len());
        let mut documents = Vec::new();
        for (event, id) in inputs.iter().zip(&ids) {
            let Some(id) = id else {
                let reason = format!("analysis_id {:?} is not a UUID", event.analysis_id);
                steps.push(Step::Finished(Failure::refused(reason).into()));
                continue;
            };
            let Some(record) = loaded
                .get(id)
                .filter(|r| r.user_id == event.user_id && event.item_uuid.is_none_or(|item| item == r.item_id))
            else {
                // Nothing the event names is verified: its failure is the
                // record's, not written on the item it claims.
                let reason = format!("analysis {id} of item {} (user {}) not found", event.item_id, event.user_id);
                steps.push(Step::Finished(Failure::refused(reason).into()));
                continue;
            };
            if record.version < record.latest_version {
                // A replay from before a re-analysis: its vector would not
                // be searched, and the item's status is the latest's.
                let reason = format!(
                    "analysis {id} is version {} of item {}; version {} is the latest",
                    record.version, event.item_id, record.latest_version
                );
                steps.push(Step::Finished(Outcome::Skipped(reason)));
                continue;
            }
            if done.contains(id) {
                steps.push(Step::Unchanged(record.item_id));
                continue;
            }
            match serde_json::from_value::<Analysis>(record.analysis.0.clone()).map(|a| document(&a)) {
                Ok((text, mut source)) if !text.trim().is_empty() => {
                    source["analysis_id"] = serde_json::json!(id);
                    source["analysis_version"] = serde_json::json!(record.version);
                    steps.push(Step::Embed(documents.len(), record.item_id));
                    documents.push((text, source));
                }
                Ok(_) => {
                    let reason = format!("analysis {id} gives an empty embedding document");
                    steps.push(Step::Finished(Failure::permanent(reason).into()));
                }
                Err(e) => {
                    let reason = format!("analysis {id} is not in the analysis schema: {e}");
                    steps.push(Step::Finished(Failure::permanent(reason).into()));
                }
            }
        }
        Ok((steps, documents))
    }

    /// Phase 2: the documents embedded, in as few requests as the limits allow.
    async fn embed(
        &self,
        inputs: &[AnalysisComplete],
        steps: &mut [Step],
        documents: &[(String, Value)],
        context: &BatchContext,
    ) {
        let texts: Vec<String> = documents.iter().map(|(text, _)| text.clone()).collect();
        let mut vectors: Vec<Option<_>> =
            self.embed_all(&texts, context.deadline, &context.meter).await.into_iter().map(Some).collect();
        for (event, step) in inputs.iter().zip(steps.iter_mut()) {
            let Step::Embed(n, item_id) = *step else { continue };
            *step = match vectors[n].take().expect("each document belongs to one event") {
                Ok((vector, tokens)) => Step::Embedded(NewEmbedding {
                    item_id,
                    analysis_id: Uuid::parse_str(&event.analysis_id).expect("embedded events have ids"),
                    user_id: event.user_id.clone(),
                    vector: Vector::from(vector),
                    model: self.model.provider.model().to_owned(),
                    source: documents[n].1.clone(),
                    tokens,
                }),
                Err(failure) => Step::Finished(failure.into()),
            };
        }
    }

    /// Phase 3: the vectors, and every item's status, in one transaction;
    /// a vector the database refuses fails its item alone.
    async fn store(&self, steps: &mut [Step]) {
        // A re-embed pass leaves the items' statuses (the active model's) alone.
        let side_model = self.model.provider.model() != self.embedder.active.provider.model();
        let mut batch = EmbeddingBatch { side_model, ..EmbeddingBatch::default() };
        for step in steps.iter() {
            match step {
                Step::Embedded(row) => batch.new.push(row.clone()),
                Step::Unchanged(item) => batch.unchanged.push(*item),
                _ => {}
            }
        }
        if batch.new.is_empty() && batch.unchanged.is_empty() {
            return;
        }
        let refused = match embeddings::store_batch(&self.embedder.pool, &batch).await {
            Ok(refused) => refused,
            Err(e) => {
                let failure = Failure::from_error(&e);
                for step in steps.iter_mut().filter(|s| matches!(s, Step::Embedded(_) | Step::Unchanged(_))) {
                    *step = Step::Finished(failure.clone().into());
                }
                return;
            }
        };
        let refused: HashMap<Uuid, String> =
            refused.into_iter().map(|(_, analysis, reason)| (analysis, reason)).collect();
        for step in steps.iter_mut() {
            if let Step::Embedded(row) = step {
                *step = match refused.get(&row.analysis_id) {
                    Some(reason) => Step::Finished(Failure::permanent(reason.clone()).into()),
                    None => Step::Stored,
                };
            }
        }
    }
}
