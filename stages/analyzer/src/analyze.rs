//! The analyzer stage's batch, in named phases over each event's [`Step`]:
//! fetch the thumbnails, find the analyses already stored for the same
//! image, model and request, call the provider for the rest (as many calls
//! in flight as its adaptive limit allows, each retried within the budget,
//! until the deadline) and store each answer as it comes, mark reused
//! analyses, publish `AnalysisComplete`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use domain::events::{AnalysisComplete, ImageInfo, ImageProcessed, PipelineEvent};
use domain::keys::ImageKey;
use domain::stage::StageName;
use futures::StreamExt;
use runtime::batch::{BatchContext, until_deadline};
use runtime::bus::{EventPublisher, publish_for};
use runtime::outcome::{Failure, Outcome};
use runtime::stage::Stage;
use runtime::storage::ObjectStore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use store::analyses::{self, ExistingAnalysis, NewAnalysis};
use store::batches::{self, NewRequest};
use store::{items, status};
use tokio::sync::mpsc;
use tracing::{Instrument, info_span};
use uuid::Uuid;
use vision::{ProviderAnalysis, VisionProvider, VisionRequest};

use crate::calls::VisionCalls;
use crate::config::AnalyzerConfig;

/// Most answers stored in one transaction.
const STORE_GROUP: usize = 32;

pub struct Analyzer {
    store: Arc<dyn ObjectStore>,
    publisher: Arc<dyn EventPublisher>,
    pub(crate) pool: PgPool,
    calls: VisionCalls,
    config: AnalyzerConfig,
    /// Requests are queued for a provider's batch API (`--batch-api`)
    /// instead of called: [`crate::batches`] submits them and stores the answers.
    queue: bool,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer").field("calls", &self.calls).field("config", &self.config).finish()
    }
}

/// A thumbnail ready to analyse.
pub(crate) struct Fetched {
    pub(crate) bytes: Vec<u8>,
    pub(crate) media_type: &'static str,
    pub(crate) request_key: String,
    /// What the thumbnailer measured of the original, from its item row.
    pub(crate) info: Option<ImageInfo>,
}

impl Fetched {
    pub(crate) fn request(&self) -> VisionRequest<'_> {
        VisionRequest { image: &self.bytes, media_type: self.media_type, info: self.info.as_ref() }
    }
}

/// An answer to store: the event it answers, its request key, and the analysis.
pub(crate) struct Answer<'a> {
    /// Its position in the batch.
    pub(crate) index: usize,
    pub(crate) event: &'a ImageProcessed,
    pub(crate) request_key: &'a str,
    pub(crate) analysis: ProviderAnalysis,
}

/// Where each event of a batch stands as the phases go on.
pub(crate) enum Step {
    Finished(Outcome),
    Fetched(Fetched),
    /// Stored before under the same request; the item may still need it
    /// made current, marked done and sent on.
    Existing(ExistingAnalysis),
    /// The same request as the event at this position of the batch.
    SameAs(usize),
    /// Stored; `AnalysisComplete` is to be published.
    Stored(Uuid),
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
        Self { store, publisher, pool, calls, config, queue: false }
    }

    /// The stage queueing each request for the provider's batch API
    /// instead of calling it (`--batch-api`); [`crate::batches::BatchDriver`]
    /// submits them and stores the answers through this stage.
    pub fn queueing_for_batches(self) -> Self {
        Self { queue: true, ..self }
    }

    pub(crate) fn config(&self) -> &AnalyzerConfig {
        &self.config
    }

    /// The provider and model the analyses are stored under.
    pub(crate) fn provider(&self) -> &dyn VisionProvider {
        self.calls.provider()
    }

    /// The vision provider's limit of calls in flight, and whether it is out.
    pub fn limit(&self) -> Arc<remote::limit::AdaptiveLimit> {
        self.calls.limit()
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

    /// The event's keys must be its own user's and item's: a stream anyone
    /// in the account can write to is not a trust boundary, and a key of
    /// another user's would store an analysis of their image as this item's.
    /// A refusal is the record's failure, never written on the item or
    /// user the event names.
    fn check_keys(event: &ImageProcessed) -> Result<(), Failure> {
        let original = ImageKey::parse(&event.original_key)
            .map_err(|e| Failure::refused(format!("the event's original_key is not an original's: {e}")))?;
        if original.user_id() != event.user_id || original.item_id() != event.item_id {
            return Err(Failure::refused(format!(
                "original_key {:?} is not user {:?}'s item {:?}",
                event.original_key, event.user_id, event.item_id
            )));
        }
        if event.item_uuid.is_some_and(|id| id != original.item_uuid()) {
            return Err(Failure::refused(format!(
                "item_uuid {} is not the id of {:?} ({})",
                event.item_uuid(),
                event.original_key,
                original.item_uuid()
            )));
        }
        if event.thumbnail_key != original.thumbnail_key() {
            return Err(Failure::refused(format!(
                "thumbnail_key {:?} is not the thumbnail of {:?} (expected {:?})",
                event.thumbnail_key,
                event.original_key,
                original.thumbnail_key()
            )));
        }
        Ok(())
    }

    async fn fetch(&self, event: &ImageProcessed) -> Result<Fetched, Failure> {
        Self::check_keys(event)?;
        let bytes = self
            .store
            .get(&event.bucket, &event.thumbnail_key, self.config.max_image_bytes)
            .await
            .map_err(|e| Failure::of("reading the thumbnail", &e))?;
        let media_type = if event.thumbnail_key.to_lowercase().ends_with(".png") { "image/png" } else { "image/jpeg" };
        let request_key = self.request_key(&bytes, event);
        Ok(Fetched { bytes, media_type, request_key, info: None })
    }

    async fn call(
        &self,
        event: &ImageProcessed,
        fetched: &Fetched,
        context: &BatchContext,
    ) -> Result<ProviderAnalysis, Failure> {
        self.calls.analyze(fetched.request(), &context.meter, context.deadline).await.map_err(|(e, attempts)| {
            let reason = format!(
                "analysing {} with {} failed after {attempts} attempt{}: {e}",
                event.original_key,
                self.calls.provider().model(),
                if attempts == 1 { "" } else { "s" }
            );
            Failure::caused_by(reason, &e)
        })
    }
}

#[async_trait]
impl Stage for Analyzer {
    type Input = ImageProcessed;

    fn name(&self) -> StageName {
        StageName::Analysis
    }

    async fn run_batch(&self, inputs: &[ImageProcessed], context: &BatchContext) -> Vec<Outcome> {
        let duplicates = self.duplicates(inputs).await;
        let mut steps = self.fetch_all(inputs, &duplicates).await;
        self.find_existing(inputs, &mut steps).await;
        if self.queue {
            self.queue_all(inputs, &mut steps).await;
        } else {
            self.call_all(inputs, &mut steps, context).await;
        }
        self.store_reused(&mut steps).await;
        self.publish(inputs, steps).await
    }
}

impl Analyzer {
    /// Phase 0: an item whose bytes an earlier item of its user has is
    /// analysed and embedded with that item: no call, no rows of its own.
    /// Its statuses follow that item's, now if it is analysed, else when it is.
    async fn duplicates(&self, inputs: &[ImageProcessed]) -> Vec<Option<Outcome>> {
        let ids: Vec<Uuid> = inputs.iter().map(ImageProcessed::item_uuid).collect();
        let found = match items::duplicates(&self.pool, &ids).await {
            Ok(found) => found,
            Err(e) => return vec![Some(Failure::from_error(&e).into()); inputs.len()],
        };
        let of_event = |event: &ImageProcessed| found.get(&event.item_uuid()).filter(|d| d.user_id == event.user_id);
        let analysed: Vec<Uuid> = inputs
            .iter()
            .filter_map(of_event)
            .filter(|d| d.canonical_analysis_status == "done")
            .map(|d| d.id)
            .collect();
        let followed = status::follow_canonical(&self.pool, &analysed).await.map_err(|e| Failure::from_error(&e));
        inputs
            .iter()
            .map(|event| {
                let d = of_event(event)?;
                Some(match (&followed, d.canonical_analysis_status.as_str()) {
                    (Err(failure), "done") => failure.clone().into(),
                    (Ok(()), "done") => {
                        Outcome::Skipped(format!("the same bytes as {}: analysed once, with it", d.canonical_key))
                    }
                    _ => {
                        Outcome::Skipped(format!("the same bytes as {}: analysed with it, when it is", d.canonical_key))
                    }
                })
            })
            .collect()
    }

    /// The thumbnails of `inputs` read and measured, as phase 1 reads them
    /// (a batch request is built from them when it is submitted).
    pub(crate) async fn prepare(&self, inputs: &[ImageProcessed]) -> Vec<Step> {
        self.fetch_all(inputs, &vec![None; inputs.len()]).await
    }

    /// Phase 1: every thumbnail read, but for inputs already settled.
    /// (Indices, not references, go through the stream: closures over
    /// borrowed items trip the `Send` check of `async_trait` futures.)
    async fn fetch_all(&self, inputs: &[ImageProcessed], settled: &[Option<Outcome>]) -> Vec<Step> {
        let mut steps: Vec<Step> = futures::stream::iter(0..inputs.len())
            .map(|i| async move {
                if let Some(outcome) = &settled[i] {
                    return Step::Finished(outcome.clone());
                }
                match self.fetch(&inputs[i]).await {
                    Ok(fetched) => Step::Fetched(fetched),
                    Err(failure) => Step::Finished(failure.into()),
                }
            })
            .buffered(self.config.concurrency * 2)
            .collect()
            .await;
        self.measure(inputs, &mut steps).await;
        steps
    }

    /// What goes into the prompt besides the image (its size, camera and
    /// date) is what the thumbnailer read from the original and kept on the
    /// item row, not the event's copy: the stream is not a trust boundary,
    /// and the keys, checked by now, name the row.
    async fn measure(&self, inputs: &[ImageProcessed], steps: &mut [Step]) {
        let ids: Vec<Uuid> = inputs
            .iter()
            .zip(steps.iter())
            .filter(|(_, step)| matches!(step, Step::Fetched(_)))
            .map(|(e, _)| e.item_uuid())
            .collect();
        if ids.is_empty() {
            return;
        }
        let rows = match items::measured(&self.pool, &ids).await {
            Ok(rows) => rows,
            Err(e) => return fail_fetched(steps, &Failure::from_error(&e)),
        };
        for (event, step) in inputs.iter().zip(steps.iter_mut()) {
            let Step::Fetched(f) = step else { continue };
            f.info = rows.get(&event.item_uuid()).filter(|row| row.user_id == event.user_id).and_then(info_of);
        }
    }

    /// Phase 2: a request already answered costs no call (a replay; with
    /// nothing left to do, it is skipped), and a request twice in the batch
    /// is called once.
    async fn find_existing(&self, inputs: &[ImageProcessed], steps: &mut [Step]) {
        let requests: Vec<(Uuid, String)> = inputs
            .iter()
            .zip(steps.iter())
            .filter_map(|(e, step)| match step {
                Step::Fetched(f) => Some((e.item_uuid(), f.request_key.clone())),
                _ => None,
            })
            .collect();
        let existing = match analyses::find_by_request(&self.pool, &requests).await {
            Ok(found) => found,
            Err(e) => return fail_fetched(steps, &Failure::from_error(&e)),
        };
        let mut first_of: HashMap<(Uuid, String), usize> = HashMap::new();
        for (i, event) in inputs.iter().enumerate() {
            let Step::Fetched(f) = &steps[i] else { continue };
            let request = (event.item_uuid(), f.request_key.clone());
            if let Some(&first) = first_of.get(&request) {
                steps[i] = Step::SameAs(first);
                continue;
            }
            first_of.insert(request.clone(), i);
            steps[i] = match existing.get(&request) {
                Some(found) if found.settled => {
                    Step::Finished(Outcome::Skipped("already analysed (the same image, model and request)".to_owned()))
                }
                Some(found) => Step::Existing(*found),
                None => continue,
            };
        }
    }

    /// Phase 3, with `--batch-api`: each request queued for the provider's
    /// batch API instead of called (once: a request already waiting is not
    /// queued again). The items go on when their batch's results are stored.
    async fn queue_all(&self, inputs: &[ImageProcessed], steps: &mut [Step]) {
        let (provider, model) = (self.calls.provider().provider(), self.calls.provider().model());
        let requests: Vec<NewRequest> = inputs
            .iter()
            .zip(steps.iter())
            .filter_map(|(event, step)| match step {
                Step::Fetched(f) => Some(NewRequest {
                    item_id: event.item_uuid(),
                    user_id: event.user_id.clone(),
                    request_key: f.request_key.clone(),
                    event: serde_json::to_value(event).expect("events serialise"),
                    provider: provider.to_owned(),
                    model: model.to_owned(),
                }),
                _ => None,
            })
            .collect();
        let waiting: HashSet<(Uuid, String)> = match batches::queue(&self.pool, &requests).await {
            Ok(waiting) => waiting.into_iter().collect(),
            Err(e) => return fail_fetched(steps, &Failure::from_error(&e)),
        };
        for (event, step) in inputs.iter().zip(steps.iter_mut()) {
            let Step::Fetched(f) = step else { continue };
            let reason = if waiting.contains(&(event.item_uuid(), f.request_key.clone())) {
                format!("already waiting for {provider}'s batch API")
            } else {
                format!("queued for {provider}'s batch API")
            };
            *step = Step::Finished(Outcome::Queued(reason));
        }
    }

    /// Phase 3: the provider calls. They finish in any order, and each
    /// answer is stored as it comes, with those that came while the last
    /// group was being stored (a crash loses the calls in flight, not the
    /// batch's paid answers). Calls still running at the deadline are
    /// dropped, so what did finish is stored before Lambda ends the
    /// invocation, and the rest are delivered again.
    async fn call_all(&self, inputs: &[ImageProcessed], steps: &mut [Step], context: &BatchContext) {
        let to_call: Vec<usize> = (0..steps.len()).filter(|&i| matches!(steps[i], Step::Fetched(_))).collect();
        let fetched: &[Step] = steps;
        // After a configuration fault (a rejected key, an unknown model) no
        // further call is made: each would cost a call and meet the same answer.
        let fault = &OnceLock::<Failure>::new();
        let (answered, mut answers) = mpsc::unbounded_channel::<(usize, ProviderAnalysis)>();
        let calls = async {
            let answered = answered;
            until_deadline(to_call.iter().copied(), inputs.len(), self.config.concurrency, context.deadline, |i| {
                let (event, Step::Fetched(f)) = (&inputs[i], &fetched[i]) else {
                    unreachable!("only fetched items are called")
                };
                let span = info_span!("item", key = %event.original_key, user_id = %event.user_id, item_id = %event.item_uuid());
                let answered = answered.clone();
                async move {
                    if let Some(failure) = fault.get() {
                        return Err(failure.clone());
                    }
                    let analysis = self.call(event, f, context).await.inspect_err(|failure| {
                        if failure.is_configuration_fault() {
                            let _ = fault.set(failure.clone());
                        }
                    })?;
                    // To the store below; the receiver outlives every call.
                    let _ = answered.send((i, analysis));
                    Ok(())
                }
                .instrument(span)
            })
            .await
        };
        let store = async {
            let mut stored = HashMap::new();
            while let Some(first) = answers.recv().await {
                // With what else has come meanwhile: answers arriving while a
                // group is being stored make the next group.
                let mut group = vec![first];
                while group.len() < STORE_GROUP {
                    match answers.try_recv() {
                        Ok(answer) => group.push(answer),
                        Err(_) => break,
                    }
                }
                let group = group
                    .into_iter()
                    .map(|(i, analysis)| {
                        let Step::Fetched(f) = &fetched[i] else { unreachable!("only fetched items are called") };
                        Answer { index: i, event: &inputs[i], request_key: &f.request_key, analysis }
                    })
                    .collect();
                stored.extend(self.store_answers(group, context, None).await);
            }
            stored
        };
        let (mut called, mut stored) = tokio::join!(calls, store);
        for i in to_call {
            steps[i] = match (stored.remove(&i), called[i].take()) {
                (Some(step), _) => step,
                (None, Some(Err(failure))) => Step::Finished(failure.into()),
                (None, Some(Ok(()))) => unreachable!("every answer is stored or failed"),
                (None, None) => {
                    let work = format!("analysing {} with {}", inputs[i].original_key, self.calls.provider().model());
                    Step::Finished(Failure::cut_off(work).into())
                }
            };
        }
    }

    /// Stores a group of answers (each the next version of its item, the
    /// item marked analysed) in one transaction; an analysis the database
    /// refuses fails its item alone. `AnalysisComplete` waits for phase 5.
    /// `batch`: the provider batch that answered them, if one did.
    pub(crate) async fn store_answers(
        &self,
        answers: Vec<Answer<'_>>,
        context: &BatchContext,
        batch: Option<Uuid>,
    ) -> Vec<(usize, Step)> {
        let provider = self.calls.provider();
        let new: Vec<NewAnalysis> = answers
            .iter()
            .map(|answer| NewAnalysis {
                item_id: answer.event.item_uuid(),
                user_id: answer.event.user_id.clone(),
                category: answer.analysis.analysis.category.clone(),
                summary: answer.analysis.analysis.summary.clone(),
                analysis: serde_json::to_value(&answer.analysis.analysis).expect("analyses serialise"),
                raw_response: answer.analysis.raw_response.clone(),
                provider_used: provider.provider().to_owned(),
                model_used: provider.model().to_owned(),
                trace_id: context.trace_id.clone().or_else(|| answer.analysis.request_id.clone()),
                request_key: answer.request_key.to_owned(),
                usage: answer.analysis.usage,
                batch_id: batch,
            })
            .collect();
        let batch = match analyses::store_batch(&self.pool, &new, &[]).await {
            Ok(batch) => batch,
            Err(e) => {
                let failure = Failure::from_error(&e);
                return answers.iter().map(|a| (a.index, Step::Finished(failure.clone().into()))).collect();
            }
        };
        let stored: HashMap<(Uuid, String), Uuid> =
            batch.stored.into_iter().map(|s| ((s.item_id, s.request_key), s.analysis_id)).collect();
        let refused: HashMap<(Uuid, String), String> =
            batch.refused.into_iter().map(|(item, key, reason)| ((item, key), reason)).collect();
        answers
            .iter()
            .zip(new)
            .map(|(answer, row)| {
                let event = answer.event;
                let request = (row.item_id, row.request_key);
                let step = match (stored.get(&request), refused.get(&request)) {
                    (_, Some(reason)) => Step::Finished(Failure::permanent(reason.clone()).into()),
                    (Some(id), None) => Step::Stored(*id),
                    (None, None) => Step::Finished(
                        Failure::permanent(format!(
                            "the analysis of {} was not stored: {} has no item {} (was the thumbnail stage skipped?)",
                            event.original_key, event.user_id, event.item_id
                        ))
                        .into(),
                    ),
                };
                (answer.index, step)
            })
            .collect()
    }

    /// Phase 4: analyses reused (a replay, or an image analysed before put
    /// back) marked their items' latest and the items done, in one transaction.
    async fn store_reused(&self, steps: &mut [Step]) {
        let reused: Vec<Uuid> = steps
            .iter()
            .filter_map(|step| match step {
                Step::Existing(found) => Some(found.id),
                _ => None,
            })
            .collect();
        if reused.is_empty() {
            return;
        }
        let outcome = analyses::store_batch(&self.pool, &[], &reused).await.map_err(|e| Failure::from_error(&e));
        for step in steps.iter_mut() {
            if let Step::Existing(found) = step {
                *step = match &outcome {
                    Ok(_) => Step::Stored(found.id),
                    Err(failure) => Step::Finished(failure.clone().into()),
                };
            }
        }
    }

    /// Phase 5: `AnalysisComplete` for every stored analysis; a duplicate
    /// within the batch ends as its first did (skipped, when that is done).
    pub(crate) async fn publish(&self, inputs: &[ImageProcessed], steps: Vec<Step>) -> Vec<Outcome> {
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(steps.len());
        let mut events = Vec::new();
        for (event, step) in inputs.iter().zip(&steps) {
            outcomes.push(match step {
                Step::Finished(outcome) => outcome.clone(),
                Step::Stored(id) => {
                    events.push((outcomes.len(), PipelineEvent::AnalysisComplete(AnalysisComplete::of(event, *id))));
                    Outcome::Done
                }
                Step::SameAs(_) => Outcome::Done, // settled below
                Step::Fetched(_) | Step::Existing(_) => {
                    unreachable!("every fetched item is called, and every answer stored or failed")
                }
            });
        }
        publish_for(self.publisher.as_ref(), &mut outcomes, events).await;
        for (i, step) in steps.iter().enumerate() {
            if let Step::SameAs(first) = step {
                outcomes[i] = match &outcomes[*first] {
                    Outcome::Done => Outcome::Skipped("the same request as another record of this batch".to_owned()),
                    other => other.clone(),
                };
            }
        }
        outcomes
    }
}

/// Every item still fetched fails with `failure` (the database did not answer).
fn fail_fetched(steps: &mut [Step], failure: &Failure) {
    for step in steps.iter_mut().filter(|s| matches!(s, Step::Fetched(_))) {
        *step = Step::Finished(failure.clone().into());
    }
}

/// The prompt's view of an item row, once the thumbnailer has measured it.
fn info_of(row: &items::Measured) -> Option<ImageInfo> {
    let dimension = |d: Option<i32>| d.and_then(|d| u32::try_from(d).ok());
    Some(ImageInfo {
        width: dimension(row.width)?,
        height: dimension(row.height)?,
        format: row.mime_type.as_deref().and_then(|m| m.strip_prefix("image/")).unwrap_or_default().to_owned(),
        camera: row.camera.clone(),
        taken_at: row.taken_at.clone(),
        ..ImageInfo::default()
    })
}
