//! The analyzer stage's batch: fetch thumbnails, skip the ones already
//! analysed for the same image, model and request, call the provider for the
//! rest (at most `concurrency` calls in flight, each retried), store the
//! results in one statement, publish `AnalysisComplete`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use shared::bus::{EventPublisher, publish_for};
use shared::db::analyses::{self, NewAnalysis};
use shared::events::{AnalysisComplete, ImageProcessed, PipelineEvent};
use shared::llm::{ProviderAnalysis, VisionProvider, VisionRequest};
use shared::stage::{BatchContext, Failure, Outcome, Stage, until_deadline};
use shared::storage::ObjectStore;
use sqlx::PgPool;
use tracing::{Instrument, info_span, warn};
use uuid::Uuid;

use crate::calls::VisionCalls;
use crate::config::AnalyzerConfig;

pub struct Analyzer {
    store: Arc<dyn ObjectStore>,
    publisher: Arc<dyn EventPublisher>,
    pool: PgPool,
    calls: VisionCalls,
    config: AnalyzerConfig,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer").field("calls", &self.calls).field("config", &self.config).finish()
    }
}

/// A thumbnail ready to analyse.
struct Fetched {
    bytes: Vec<u8>,
    media_type: &'static str,
    request_key: String,
}

fn permanent(reason: String) -> Failure {
    Failure { reason, retriable: false, recorded: true }
}

impl Analyzer {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        publisher: Arc<dyn EventPublisher>,
        pool: PgPool,
        provider: Arc<dyn VisionProvider>,
        config: AnalyzerConfig,
    ) -> Self {
        let calls = VisionCalls::new(provider, config.concurrency, config.retry);
        Self { store, publisher, pool, calls, config }
    }

    /// The idempotency key: the same image, provider, model and re-analysis
    /// request make the same key, so the same row.
    fn request_key(&self, image: &[u8], event: &ImageProcessed) -> String {
        let digest = hex::encode(&Sha256::digest(image)[..16]);
        let provider = self.calls.provider();
        let mut key = format!("{digest}:{}:{}", provider.provider(), provider.model());
        if let Some(request) = &event.reanalysis {
            key.push(':');
            key.push_str(request);
        }
        key
    }

    async fn fetch(&self, event: &ImageProcessed) -> Result<Fetched, Failure> {
        let bytes =
            self.store.get(&event.bucket, &event.thumbnail_key, self.config.max_image_bytes).await.map_err(|e| {
                Failure {
                    reason: format!("reading the thumbnail failed: {e}"),
                    retriable: e.is_retriable(),
                    recorded: true,
                }
            })?;
        let media_type = if event.thumbnail_key.to_lowercase().ends_with(".png") { "image/png" } else { "image/jpeg" };
        let request_key = self.request_key(&bytes, event);
        Ok(Fetched { bytes, media_type, request_key })
    }

    async fn call(&self, event: &ImageProcessed, fetched: &Fetched) -> Result<ProviderAnalysis, Failure> {
        let request =
            VisionRequest { image: &fetched.bytes, media_type: fetched.media_type, info: event.image.as_ref() };
        self.calls.analyze(request).await.map_err(|(e, attempts)| Failure {
            reason: format!(
                "analysing {} with {} failed after {attempts} attempt{}: {e}",
                event.original_key,
                self.calls.provider().model(),
                if attempts == 1 { "" } else { "s" }
            ),
            retriable: e.is_retriable(),
            recorded: true,
        })
    }
}

#[async_trait]
impl Stage for Analyzer {
    type Input = ImageProcessed;

    fn name(&self) -> &'static str {
        "analysis"
    }

    async fn run_batch(&self, inputs: &[ImageProcessed], context: &BatchContext) -> Vec<Outcome> {
        let fetched: Vec<Result<Fetched, Failure>> = futures::stream::iter(0..inputs.len())
            .map(|i| self.fetch(&inputs[i]))
            .buffered(self.config.concurrency * 2)
            .collect()
            .await;

        // A replayed event finds its analysis here and costs no provider call.
        let requests: Vec<(Uuid, String)> = inputs
            .iter()
            .zip(&fetched)
            .filter_map(|(e, f)| Some((e.item_uuid(), f.as_ref().ok()?.request_key.clone())))
            .collect();
        let existing = match analyses::find_by_request(&self.pool, &requests).await {
            Ok(found) => found,
            Err(e) => {
                return vec![Outcome::failed(format!("looking up analyses failed: {e}"), true, false); inputs.len()];
            }
        };

        // The same request twice in one batch is called once.
        let mut first_of: HashMap<(Uuid, &str), usize> = HashMap::new();
        let duplicate_of: Vec<Option<usize>> = inputs
            .iter()
            .zip(&fetched)
            .enumerate()
            .map(|(i, (event, f))| {
                let key = (event.item_uuid(), f.as_ref().ok()?.request_key.as_str());
                let first = *first_of.entry(key).or_insert(i);
                (first != i).then_some(first)
            })
            .collect();

        // Calls finish in any order; those still running at the deadline
        // are dropped, so what did finish is stored before Lambda ends the
        // invocation, and the rest are delivered again.
        let to_call: Vec<usize> = (0..inputs.len())
            .filter(|&i| match &fetched[i] {
                Ok(f) => {
                    duplicate_of[i].is_none() && !existing.contains_key(&(inputs[i].item_uuid(), f.request_key.clone()))
                }
                Err(_) => false,
            })
            .collect();
        let fetched_ref = &fetched;
        let mut called: Vec<Option<Result<ProviderAnalysis, Failure>>> =
            until_deadline(to_call.iter().copied(), inputs.len(), self.config.concurrency, context.deadline, |i| {
                let (event, f) = (&inputs[i], fetched_ref[i].as_ref().expect("only fetched items are called"));
                let span = info_span!("item", key = %event.original_key, user_id = %event.user_id, item_id = %event.item_uuid());
                self.call(event, f).instrument(span)
            })
            .await;
        for &i in &to_call {
            if called[i].is_none() {
                let work = format!("analysing {} with {}", inputs[i].original_key, self.calls.provider().model());
                called[i] = Some(Err(Failure::cut_off(work)));
            }
        }
        for (i, first) in duplicate_of.iter().enumerate() {
            if let Some(first) = first {
                called[i] = called[*first].clone();
            }
        }

        let mut new = Vec::new();
        let mut failures: Vec<(Uuid, String)> = Vec::new();
        let mut reused: Vec<Uuid> = Vec::new();
        for ((event, f), result) in inputs.iter().zip(&fetched).zip(&called) {
            match (f, result) {
                (Err(failure), _) | (Ok(_), Some(Err(failure))) => {
                    failures.push((event.item_uuid(), failure.reason.clone()))
                }
                (Ok(f), Some(Ok(analysis))) => new.push(NewAnalysis {
                    item_id: event.item_uuid(),
                    user_id: event.user_id.clone(),
                    category: analysis.analysis.category.clone(),
                    summary: analysis.analysis.summary.clone(),
                    analysis: serde_json::to_value(&analysis.analysis).expect("analyses serialise"),
                    raw_response: analysis.raw_response.clone(),
                    provider_used: self.calls.provider().provider().to_owned(),
                    model_used: self.calls.provider().model().to_owned(),
                    trace_id: context.trace_id.clone().or_else(|| analysis.request_id.clone()),
                    request_key: f.request_key.clone(),
                }),
                (Ok(f), None) => reused.extend(existing.get(&(event.item_uuid(), f.request_key.clone()))),
            }
        }
        let stored = match analyses::store_batch(&self.pool, &new, &failures, &reused).await {
            Ok(stored) => stored,
            Err(e) => {
                warn!(error = %e, "storing the batch failed");
                return vec![
                    Outcome::failed(format!("storing analyses failed: {e}"), e.is_retriable(), false);
                    inputs.len()
                ];
            }
        };
        let mut analysis_ids: HashMap<(Uuid, String), Uuid> = existing;
        analysis_ids.extend(stored.into_iter().map(|s| ((s.item_id, s.request_key), s.analysis_id)));

        let mut outcomes = Vec::with_capacity(inputs.len());
        let mut events = Vec::new();
        for ((event, f), result) in inputs.iter().zip(&fetched).zip(called) {
            match (f, result) {
                (Err(failure), _) => outcomes.push(Outcome::Failed(failure.clone())),
                (Ok(_), Some(Err(failure))) => outcomes.push(Outcome::Failed(failure)),
                (Ok(f), _) => match analysis_ids.get(&(event.item_uuid(), f.request_key.clone())) {
                    Some(id) => {
                        let complete = AnalysisComplete {
                            item_id: event.item_id.clone(),
                            analysis_id: id.to_string(),
                            user_id: event.user_id.clone(),
                        };
                        events.push((outcomes.len(), PipelineEvent::AnalysisComplete(complete)));
                        outcomes.push(Outcome::Done);
                    }
                    None => outcomes.push(Outcome::Failed(permanent(format!(
                        "the analysis of {} was not stored: no item row (was the thumbnail stage skipped?)",
                        event.original_key
                    )))),
                },
            }
        }
        publish_for(self.publisher.as_ref(), &mut outcomes, events).await;
        outcomes
    }
}
