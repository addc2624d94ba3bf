//! `--batch-api`: bulk analyses through the provider's batch API, at its
//! lower price. The stage queues each request in the database instead of
//! calling ([`Analyzer::queueing_for_batches`]); [`BatchDriver`] submits the
//! queued requests in batches, asks about the batches in progress, and
//! stores each ended batch's results through the stage's own storage and
//! publishing, settled by the batch runner like any batch of events: an
//! answer is validated, stored and sent on exactly as a synchronous reply,
//! a failure is recorded on its item. Every step is written to the database
//! before the provider is asked, so a kill or a rerun submits nothing twice
//! (`store::batches`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use domain::events::ImageProcessed;
use domain::retry::Retriable;
use domain::stage::StageName;
use domain::subject::Subject;
use remote::ApiError;
use runtime::batch::BatchContext;
use runtime::outcome::{Failure, Outcome};
use runtime::runner::{self, Entry, Settled};
use runtime::stage::Stage;
use store::DbError;
use store::batches::{self, Batch, Waiting};
use thiserror::Error;
use tracing::{info, warn};
use uuid::Uuid;
use vision::batch::{BatchFailure, ProviderBatch};
use vision::{ProviderAnalysis, VisionBatches, VisionError};

use crate::analyze::{Analyzer, Answer, Step};
use crate::config::BatchLimits;

/// A request the provider did not answer (errored on its side, expired,
/// canceled) is submitted this many times in all before its failure is recorded.
pub const MAX_SUBMISSIONS: i32 = 2;

/// Results stored in one transaction.
const INGEST_GROUP: usize = 64;

/// Thumbnails read at once while a batch is built.
const PREPARE_GROUP: usize = 128;

/// How far before our record of a submission the provider's clock may put it.
const CLOCK_SLACK: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// A batch still at work this long past its window is reported.
const OVERDUE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

#[derive(Debug, Error)]
pub enum BatchError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("the batch API: {0}")]
    Provider(#[from] VisionError),
}

impl BatchError {
    /// A rejected key or an unknown model: no round will do better until it is mended.
    pub fn is_configuration_fault(&self) -> bool {
        matches!(self, Self::Provider(e) if e.is_configuration_fault())
    }
}

/// What a round of [`BatchDriver::step`] did and left.
#[derive(Debug, Default)]
pub struct Progress {
    /// Batches submitted in this round.
    pub submitted: usize,
    /// Results stored or recorded in this round.
    pub ingested: usize,
    /// Requests queued, in no batch yet.
    pub queued: i64,
    /// Batches the provider is working on, or whose submission is in doubt.
    pub in_progress: usize,
    /// The provider's ids of batches still at work past their window.
    pub overdue: Vec<String>,
    /// What became of each item whose result was settled in this round.
    pub settled: Vec<(Subject, Settled)>,
}

impl Progress {
    /// Nothing queued and nothing at the provider.
    pub fn is_idle(&self) -> bool {
        self.queued == 0 && self.in_progress == 0
    }
}

/// Submits queued requests, follows the batches, stores their results.
pub struct BatchDriver {
    analyzer: Arc<Analyzer>,
    api: Arc<dyn VisionBatches>,
    limits: BatchLimits,
    /// How long a submission may still be on its way (the client's timeout).
    in_flight: Duration,
}

impl std::fmt::Debug for BatchDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchDriver").field("provider", &self.api.provider()).field("limits", &self.limits).finish()
    }
}

impl BatchDriver {
    /// `analyzer` stores the results (its provider and model must be the API's).
    pub fn new(analyzer: Arc<Analyzer>, api: Arc<dyn VisionBatches>) -> Self {
        let limits = analyzer.config().batches;
        let in_flight = analyzer.config().vision.timeout + Duration::from_secs(2);
        Self { analyzer, api, limits, in_flight }
    }

    pub fn limits(&self) -> BatchLimits {
        self.limits
    }

    /// The provider and model whose requests and batches this driver takes:
    /// those of other models wait for a run with theirs.
    fn model(&self) -> (&str, &str) {
        (self.api.provider(), self.api.model())
    }

    /// One round: submissions whose answer was lost found again, queued
    /// requests submitted (all of them with `flush`; otherwise only full
    /// batches, or requests waiting longer than the age limit), batches in
    /// progress asked about, and the results of ended ones stored.
    pub async fn step(&self, flush: bool) -> Result<Progress, BatchError> {
        let mut progress = Progress::default();
        self.recover().await?;
        progress.submitted = self.submit(flush, &mut progress).await?;
        self.poll(&mut progress).await?;
        progress.queued = batches::queued(&self.analyzer.pool, Some(self.model())).await?.0;
        Ok(progress)
    }

    /// Submissions recorded but never acknowledged (a kill or a timeout
    /// between asking and hearing back): a batch of the provider's made
    /// since, not ours yet, and labelled with our id (or, where the provider
    /// keeps no label, with as many requests) is taken as it; without one,
    /// the requests are queued again.
    async fn recover(&self) -> Result<(), BatchError> {
        let pool = &self.analyzer.pool;
        let settled_before = Utc::now() - self.in_flight;
        let (provider, model) = self.model();
        let doubtful: Vec<Batch> = batches::open(pool, provider, model)
            .await?
            .into_iter()
            .filter(|b| b.provider_batch_id.is_none() && b.submitted_at < settled_before)
            .collect();
        let Some(oldest) = doubtful.first() else { return Ok(()) };
        let theirs = self.api.created_since(oldest.submitted_at - CLOCK_SLACK).await?;
        let ids: Vec<String> = theirs.iter().map(|b| b.id.clone()).collect();
        let known = batches::known(pool, &ids).await?;
        let mut unclaimed: Vec<ProviderBatch> = theirs.into_iter().filter(|b| !known.contains(&b.id)).collect();
        // Oldest first, as ours are.
        unclaimed.sort_by_key(|b| b.created_at);
        for ours in doubtful {
            // By its label where the provider keeps one (OpenAI), else by its size and age.
            let label = ours.id.to_string();
            let found = unclaimed.iter().position(|b| match &b.label {
                Some(theirs) => *theirs == label,
                None => {
                    b.requests == ours.requests as u64
                        && b.created_at.is_none_or(|at| at >= ours.submitted_at - CLOCK_SLACK)
                }
            });
            match found {
                Some(i) => {
                    let batch = unclaimed.remove(i);
                    info!(batch = %ours.id, provider_batch = %batch.id, "a submission whose answer was lost was found at the provider");
                    batches::submitted(pool, ours.id, &batch.id, batch.expires_at).await?;
                }
                None => {
                    warn!(batch = %ours.id, requests = ours.requests, "a submission whose answer was lost is not at the provider: its requests are queued again");
                    batches::abandon(pool, ours.id).await?;
                }
            }
        }
        Ok(())
    }

    /// Submits batches while there is a full one (any, with `flush`, or
    /// once the oldest request has waited the age limit). Answers how many.
    async fn submit(&self, flush: bool, progress: &mut Progress) -> Result<usize, BatchError> {
        let pool = &self.analyzer.pool;
        let mut submitted = 0;
        loop {
            let (queued, oldest) = batches::queued(pool, Some(self.model())).await?;
            let aged = oldest.is_some_and(|t| (Utc::now() - t).to_std().unwrap_or_default() >= self.limits.max_age);
            if queued == 0 || !(flush || aged || queued as usize >= self.limits.max_requests) {
                return Ok(submitted);
            }
            let most = self.limits.max_requests as i64;
            let Some((batch, waiting)) = batches::claim(pool, self.api.provider(), self.api.model(), most).await?
            else {
                return Ok(submitted);
            };
            if !self.submit_claimed(batch, waiting, progress).await? {
                // Nothing could be sent this round (the thumbnails could not be read).
                return Ok(submitted);
            }
            submitted += 1;
        }
    }

    /// Builds the claimed requests (each thumbnail read again, as the stage
    /// reads it, a group at a time so that no more than about the size
    /// limit is held) and submits them as one batch. A thumbnail that
    /// cannot be read fails its item (recorded, and told in `progress`);
    /// what does not fit goes back to the queue. Answers whether it submitted.
    async fn submit_claimed(
        &self,
        batch: Uuid,
        waiting: Vec<Waiting>,
        progress: &mut Progress,
    ) -> Result<bool, BatchError> {
        let pool = &self.analyzer.pool;
        let (rows, events, mut drop) = readable(waiting.into_iter().map(|row| (row, ())).collect());
        let (mut submit, mut requeue, mut bytes) = (Vec::new(), Vec::new(), 0);
        let mut rows = rows.into_iter().map(|(row, ())| row).zip(events).peekable();
        while rows.peek().is_some() {
            let group: Vec<(Waiting, ImageProcessed)> = rows.by_ref().take(PREPARE_GROUP).collect();
            if bytes >= self.limits.max_bytes || submit.len() >= self.limits.max_requests {
                requeue.extend(group.iter().map(|(row, _)| row.id));
                continue;
            }
            let (group, events): (Vec<Waiting>, Vec<ImageProcessed>) = group.into_iter().unzip();
            let prepare = Prepare {
                analyzer: self.analyzer.clone(),
                api: self.api.clone(),
                rows: group.iter().map(|r| (r.id, r.request_key.clone())).collect(),
                lines: Mutex::new(Vec::new()),
            };
            let ran =
                runner::run(&prepare, pool, events.into_iter().map(Entry::local).collect(), BatchContext::default())
                    .await;
            let lines = prepare.lines.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
            for (((subject, settled), row), line) in ran.settled.into_iter().zip(&group).zip(lines) {
                match (settled, line) {
                    (Settled::Queued(_), Some(line))
                        if bytes + line.len() <= self.limits.max_bytes && submit.len() < self.limits.max_requests =>
                    {
                        bytes += line.len();
                        submit.push(line);
                    }
                    (Settled::Queued(_) | Settled::Redeliver(_) | Settled::Halted(_) | Settled::Postponed(_), _) => {
                        requeue.push(row.id)
                    }
                    (settled @ (Settled::Done | Settled::Skipped(_) | Settled::Failed(_)), _) => {
                        drop.push(row.id);
                        progress.settled.push((subject, settled));
                    }
                }
            }
        }
        batches::release(pool, batch, &requeue, &drop).await?;
        if submit.is_empty() {
            batches::abandon(pool, batch).await?;
            return Ok(false);
        }
        match self.api.create(&batch.to_string(), &submit).await {
            Ok(theirs) => {
                batches::submitted(pool, batch, &theirs.id, theirs.expires_at).await?;
                info!(batch = %batch, provider_batch = %theirs.id, requests = submit.len(), bytes, "submitted a batch");
                Ok(true)
            }
            Err(e) if in_doubt(&e) => {
                warn!(batch = %batch, error = %e, "a batch submission's answer was lost; the next round looks for it at the provider");
                Err(e.into())
            }
            Err(e) => {
                batches::abandon(pool, batch).await?;
                Err(e.into())
            }
        }
    }

    /// Asks about each batch in progress; stores the results of ended ones.
    async fn poll(&self, progress: &mut Progress) -> Result<(), BatchError> {
        let pool = &self.analyzer.pool;
        let (provider, model) = self.model();
        for ours in batches::open(pool, provider, model).await? {
            let Some(id) = &ours.provider_batch_id else {
                progress.in_progress += 1;
                continue;
            };
            let theirs = self.api.retrieve(id).await?;
            if !theirs.ended {
                batches::polled(pool, ours.id).await?;
                progress.in_progress += 1;
                if ours.expires_at.is_some_and(|at| Utc::now() > at + OVERDUE) {
                    warn!(provider_batch = %id, expires_at = ?ours.expires_at, "a batch is still at work past its window");
                    progress.overdue.push(id.clone());
                }
                continue;
            }
            if ours.status != "ended" {
                batches::ended(pool, ours.id).await?;
            }
            if self.ingest(&ours, &theirs, progress).await? {
                batches::ingested(pool, ours.id).await?;
                info!(provider_batch = %id, "stored a batch's results");
            } else {
                progress.in_progress += 1;
            }
        }
        Ok(())
    }

    /// Reads an ended batch's results a group at a time and settles each;
    /// a request with no result is taken as not run. Answers whether every
    /// result is settled (otherwise the next round reads them again: storing
    /// is idempotent).
    async fn ingest(&self, ours: &Batch, theirs: &ProviderBatch, progress: &mut Progress) -> Result<bool, BatchError> {
        let mut results = self.api.results(theirs).await?;
        let mut complete = true;
        let mut group = Vec::with_capacity(INGEST_GROUP);
        loop {
            let next = results.next().await;
            let end = next.is_none();
            match next {
                Some(Ok(result)) => group.push(result),
                Some(Err(e @ ApiError::Malformed { .. })) => {
                    warn!(batch = %ours.id, error = %e, "a result line could not be read; its request is taken as not run");
                }
                Some(Err(e)) => {
                    warn!(batch = %ours.id, error = %e, "reading a batch's results failed; they are read again next round");
                    complete = false;
                }
                None => {}
            }
            if group.len() >= INGEST_GROUP || (end && !group.is_empty()) {
                let ids: Vec<Uuid> = group.iter().filter_map(|r| Uuid::try_parse(&r.custom_id).ok()).collect();
                let mut rows = batches::waiting_in(&self.analyzer.pool, ours.id, &ids).await?;
                let mut items = Vec::with_capacity(rows.len());
                for result in group.drain(..) {
                    let id = Uuid::try_parse(&result.custom_id).ok();
                    // Not ours, or no longer waiting (its item deleted meanwhile, or already settled): dropped.
                    if let Some(i) = rows.iter().position(|r| Some(r.id) == id) {
                        items.push((rows.swap_remove(i), result.result));
                    }
                }
                complete &= self.settle(ours.id, items, progress).await?;
            }
            if end {
                break;
            }
        }
        if complete {
            let left = batches::left_in(&self.analyzer.pool, ours.id).await?;
            let why = theirs.failure.as_deref().map(|f| format!(" (the provider: {f})")).unwrap_or_default();
            let not_run = |_| Err(BatchFailure::NotRun(format!("no result came for it in batch {}{why}", theirs.id)));
            let items = left.into_iter().map(|row| (row, not_run(()))).collect();
            complete &= self.settle(ours.id, items, progress).await?;
        }
        Ok(complete)
    }

    /// Settles results through the batch runner: answers stored and sent
    /// on, failures recorded or submitted again. Answers whether all were.
    async fn settle(
        &self,
        batch: Uuid,
        items: Vec<(Waiting, Result<ProviderAnalysis, BatchFailure>)>,
        progress: &mut Progress,
    ) -> Result<bool, BatchError> {
        if items.is_empty() {
            return Ok(true);
        }
        let (items, events, unreadable) = readable(items);
        let (rows, results): (Vec<Waiting>, Vec<_>) = items.into_iter().unzip();
        let ingest = Ingest {
            analyzer: self.analyzer.clone(),
            batch,
            items: rows.iter().zip(results).map(|(r, result)| (r.submissions, r.request_key.clone(), result)).collect(),
        };
        let entries = events.into_iter().map(Entry::local).collect();
        let ran = runner::run(&ingest, &self.analyzer.pool, entries, BatchContext::default()).await;
        let (mut succeeded, mut failed, mut resubmit) = (Vec::new(), unreadable, Vec::new());
        let mut complete = true;
        for ((_, settled), row) in ran.settled.iter().zip(&rows) {
            match settled {
                Settled::Done | Settled::Skipped(_) => succeeded.push(row.id),
                Settled::Failed(_) => failed.push(row.id),
                Settled::Queued(reason) => resubmit.push((row.id, reason.clone())),
                Settled::Redeliver(_) | Settled::Halted(_) | Settled::Postponed(_) => complete = false,
            }
        }
        batches::settle(&self.analyzer.pool, batch, &succeeded, &failed, &resubmit).await?;
        progress.ingested += succeeded.len() + failed.len() + resubmit.len();
        progress.settled.extend(ran.settled);
        Ok(complete)
    }
}

/// Whether a failed submission may still have reached the provider.
fn in_doubt(e: &VisionError) -> bool {
    matches!(e, VisionError::Api(ApiError::Timeout { .. } | ApiError::Transport { .. }))
}

/// The rows (each with what goes with it) whose event reads as an
/// `ImageProcessed`, their events, and the ids of those that do not
/// (written by this program, so never expected; dropped with a warning
/// rather than kept forever).
fn readable<T>(rows: Vec<(Waiting, T)>) -> (Vec<(Waiting, T)>, Vec<ImageProcessed>, Vec<Uuid>) {
    let (mut kept, mut events, mut unreadable) = (Vec::new(), Vec::new(), Vec::new());
    for (row, with) in rows {
        match serde_json::from_value::<ImageProcessed>(row.event.0.clone()) {
            Ok(event) => {
                events.push(event);
                kept.push((row, with));
            }
            Err(e) => {
                warn!(request = %row.id, error = %e, "a batch request's event does not read; dropped");
                unreadable.push(row.id);
            }
        }
    }
    (kept, events, unreadable)
}

/// The submission's batch: each request's thumbnail read and its line
/// built, as the stage would call it; a thumbnail that cannot be read fails
/// its item as the stage would.
struct Prepare {
    analyzer: Arc<Analyzer>,
    api: Arc<dyn VisionBatches>,
    /// Each input's request id (its custom id) and request key.
    rows: Vec<(Uuid, String)>,
    /// The built line of each input, by position.
    lines: Mutex<Vec<Option<Vec<u8>>>>,
}

#[async_trait]
impl Stage for Prepare {
    type Input = ImageProcessed;

    fn name(&self) -> StageName {
        StageName::Analysis
    }

    async fn run_batch(&self, inputs: &[ImageProcessed], _: &BatchContext) -> Vec<Outcome> {
        let steps = self.analyzer.prepare(inputs).await;
        let mut lines = Vec::with_capacity(steps.len());
        let mut outcomes = Vec::with_capacity(steps.len());
        for (step, (id, key)) in steps.into_iter().zip(&self.rows) {
            let (line, outcome) = match step {
                Step::Fetched(f) if &f.request_key == key => (
                    Some(self.api.request_line(&id.simple().to_string(), &f.request())),
                    Outcome::Queued(format!("in a batch of {}'s", self.api.provider())),
                ),
                // Its new version was queued on its own when it came.
                Step::Fetched(_) => (None, Outcome::Skipped("the thumbnail changed since it was queued".into())),
                Step::Finished(outcome) => (None, outcome),
                _ => unreachable!("prepare answers fetched or finished steps"),
            };
            lines.push(line);
            outcomes.push(outcome);
        }
        *self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = lines;
        outcomes
    }
}

/// A group of a batch's results, settled as a batch of the stage.
struct Ingest {
    analyzer: Arc<Analyzer>,
    batch: Uuid,
    /// Each input's submissions so far, request key, and result.
    items: Vec<(i32, String, Result<ProviderAnalysis, BatchFailure>)>,
}

#[async_trait]
impl Stage for Ingest {
    type Input = ImageProcessed;

    fn name(&self) -> StageName {
        StageName::Analysis
    }

    async fn run_batch(&self, inputs: &[ImageProcessed], context: &BatchContext) -> Vec<Outcome> {
        let model = self.analyzer.provider().model();
        let mut steps: Vec<Option<Step>> = Vec::with_capacity(inputs.len());
        let mut answers = Vec::new();
        for (index, (event, (submissions, request_key, result))) in inputs.iter().zip(&self.items).enumerate() {
            steps.push(match result {
                Ok(analysis) => {
                    answers.push(Answer { index, event, request_key, analysis: analysis.clone() });
                    None
                }
                Err(failure) if failure.worth_resubmitting() && *submissions < MAX_SUBMISSIONS => {
                    Some(Step::Finished(Outcome::Queued(format!("submitted again: {}", failure.reason()))))
                }
                Err(failure) => {
                    let times =
                        if *submissions > 1 { format!(" (submitted {submissions} times)") } else { String::new() };
                    let reason = format!(
                        "analysing {} with {model} in a provider batch failed{times}: {}",
                        event.original_key,
                        failure.reason()
                    );
                    Some(Step::Finished(Failure::permanent(reason).into()))
                }
            });
        }
        for (index, step) in self.analyzer.store_answers(answers, context, Some(self.batch)).await {
            steps[index] = Some(step);
        }
        let steps = steps.into_iter().map(|step| step.expect("every result is settled")).collect();
        self.analyzer.publish(inputs, steps).await
    }
}
