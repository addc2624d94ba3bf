//! The three stages running together in one process: bounded channels stand
//! in for the Kinesis streams, [`LocalBus`] for the EventBridge rules, and a
//! batcher for each trigger's batch size and batching window. Each batch
//! goes through the same batch runner as on Lambda.

use std::sync::Arc;
use std::time::Duration;

use analyzer::config::BatchLimits;
use analyzer::{Analyzer, BatchDriver};
use domain::events::{ANALYSIS_COMPLETE, IMAGE_PROCESSED, ObjectRef, PipelineEvent, Upload};
use domain::keys::ImageKey;
use domain::subject::Subject;
use domain::text::printable;
use embedder::Embedder;
use runtime::batch::BatchContext;
use runtime::bus::{EventPublisher, LocalBus};
use runtime::failures::FailureLog;
use runtime::runner::{self, Entry, Settled};
use runtime::stage::Stage;
use runtime::storage::ObjectStore;
use thumbnailer::Thumbnailer;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::components::Components;
use crate::report::{Report, Tracker};

/// How records are grouped into batches, per stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Most records in one batch.
    pub size: usize,
    /// Longest wait for a batch to fill once its first record arrived.
    pub window: Duration,
}

/// A running pipeline. Feed it, then [`Pipeline::finish`].
pub struct Pipeline {
    objects: mpsc::Sender<ObjectRef>,
    bus: LocalBus,
    tasks: Vec<JoinHandle<()>>,
    /// Where the stages report; it says whether a configuration fault stopped the run.
    tracker: Arc<Tracker>,
    /// Tells the progress bar when a provider is out.
    watcher: JoinHandle<()>,
    /// With `--batch-api`: the task submitting and following the batches,
    /// and the signal that nothing more will be queued.
    batches: Option<(JoinHandle<anyhow::Result<()>>, watch::Sender<bool>)>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("tasks", &self.tasks.len()).finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Starts the stages on `store` (the local bucket, or S3 for a direct backfill).
    pub fn start(c: &Components, store: Arc<dyn ObjectStore>, tracker: Arc<Tracker>) -> anyhow::Result<Self> {
        let batching = c.local.batching;
        let capacity = batching.size * 2;
        let (objects, objects_rx) = mpsc::channel::<ObjectRef>(capacity);
        let (processed, processed_rx) = mpsc::channel::<PipelineEvent>(capacity);
        let (analyzed, analyzed_rx) = mpsc::channel::<PipelineEvent>(capacity);

        // Each stage publishes only on its own route, so when it stops, the
        // next stage's queue closes and the shutdown cascades.
        let thumbnailer = Thumbnailer::new(
            store.clone(),
            Arc::new(LocalBus::new().route(IMAGE_PROCESSED, processed.clone())),
            c.pool.clone(),
            c.thumbnail.clone(),
        )?;
        let mut analyzer = Analyzer::new(
            store,
            Arc::new(LocalBus::new().route(ANALYSIS_COMPLETE, analyzed.clone())),
            c.pool.clone(),
            c.vision.clone(),
            c.analyzer.clone(),
        );
        if c.batches.is_some() {
            analyzer = analyzer.queueing_for_batches();
        }
        let analyzer = Arc::new(analyzer);
        let embedder = Embedder::new(c.pool.clone(), c.embedding.clone(), c.embedder.clone());
        let watcher = tracker.watch(vec![analyzer.limit(), embedder.limit()]);
        let batches = c.batches.clone().map(|api| {
            let (flush, flushing) = watch::channel(false);
            let driver = BatchDriver::new(analyzer.clone(), api);
            (tokio::spawn(drive_batches(driver, flushing, tracker.clone())), flush)
        });

        let tasks = vec![
            tokio::spawn(run_stage(
                thumbnailer,
                c.pool.clone(),
                objects_rx,
                |o| Some(Upload::from(o)),
                batching,
                tracker.clone(),
                false,
            )),
            tokio::spawn(run_stage(
                analyzer,
                c.pool.clone(),
                processed_rx,
                |e| match e {
                    PipelineEvent::ImageProcessed(e) => Some(e),
                    PipelineEvent::AnalysisComplete(_) => None,
                },
                batching,
                tracker.clone(),
                false,
            )),
            tokio::spawn(run_stage(
                embedder,
                c.pool.clone(),
                analyzed_rx,
                |e| match e {
                    PipelineEvent::AnalysisComplete(e) => Some(e),
                    PipelineEvent::ImageProcessed(_) => None,
                },
                batching,
                tracker.clone(),
                true,
            )),
        ];
        let bus = LocalBus::new().route(IMAGE_PROCESSED, processed).route(ANALYSIS_COMPLETE, analyzed);
        Ok(Self { objects, bus, tasks, tracker, watcher, batches })
    }

    /// Sends an original to the thumbnail stage.
    pub async fn submit_object(&self, object: ObjectRef) -> anyhow::Result<()> {
        self.objects.send(object).await.map_err(|_| anyhow::anyhow!("the thumbnail stage stopped"))
    }

    /// Sends an event to the stage that consumes it, as a rule would.
    pub async fn submit_event(&self, event: PipelineEvent) -> anyhow::Result<()> {
        match self.bus.publish(vec![event]).await.pop() {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(e.into()),
            None => Err(anyhow::anyhow!("the bus answered nothing")),
        }
    }

    /// Stops taking input and waits until every stage has drained; an
    /// error when a configuration fault stopped the run.
    /// With `--batch-api`, the batches are followed until every request
    /// queued is answered (or the driver stops; what is left waits in the
    /// database for the next run).
    pub async fn finish(self) -> anyhow::Result<()> {
        let Self { objects, bus, tasks, tracker, watcher, batches } = self;
        drop((objects, bus));
        let mut tasks = tasks.into_iter();
        let mut driven = Ok(());
        if let Some((driver, flush)) = batches {
            // The thumbnail and analysis stages first: then nothing more is queued.
            for task in tasks.by_ref().take(2) {
                task.await?;
            }
            let _ = flush.send(true);
            driven = driver.await?;
        }
        for task in tasks {
            task.await?;
        }
        watcher.abort();
        driven?;
        match tracker.halted() {
            Some(reason) => Err(anyhow::anyhow!(
                "stopped by a configuration fault, not the images': {}\n\
                 nothing was marked failed; mend the key or the model and run again (what is done is skipped)",
                printable(reason)
            )),
            None => Ok(()),
        }
    }
}

/// Feeds a stage batches from its queue until the queue closes; each
/// batch goes through the batch runner, and each settled input to the
/// tracker (an item is processed once the last stage is done with it).
async fn run_stage<S: Stage, M: Send + 'static>(
    stage: S,
    failures: impl FailureLog + 'static,
    mut queue: mpsc::Receiver<M>,
    convert: fn(M) -> Option<S::Input>,
    batching: Batching,
    tracker: Arc<Tracker>,
    last: bool,
) {
    while let Some(first) = queue.recv().await {
        let mut batch: Vec<S::Input> = convert(first).into_iter().collect();
        let deadline = tokio::time::Instant::now() + batching.window;
        while batch.len() < batching.size {
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(message)) => batch.extend(convert(message)),
                Ok(None) | Err(_) => break,
            }
        }
        // After a configuration fault, what is still queued stays pending.
        if batch.is_empty() || tracker.halted().is_some() {
            continue;
        }
        let entries: Vec<Entry<S::Input>> = batch.into_iter().map(Entry::local).collect();
        // Each batch its own context: its meter counts this batch alone.
        let ran = runner::run(&stage, &failures, entries, BatchContext::default()).await;
        report(&tracker, ran.settled, last);
    }
}

/// Tells the tracker what became of each entry of a batch (an item is
/// processed once the last stage is done with it).
fn report(tracker: &Tracker, settled: Vec<(Subject, Settled)>, last: bool) {
    for (subject, settled) in settled {
        let name = || tracker.name(subject.item_id, subject.key.clone().unwrap_or_default());
        match settled {
            Settled::Done if last => tracker.processed_item(subject.item_id, name()),
            Settled::Done => tracker.worked(subject.item_id, name()),
            Settled::Skipped(reason) => tracker.skipped_or_processed(subject.item_id, name(), reason),
            Settled::Queued(reason) => tracker.queued(subject.item_id, name(), reason),
            Settled::Failed(reason) | Settled::Redeliver(reason) => {
                tracker.failed_item(subject.item_id, name(), reason)
            }
            Settled::Halted(reason) => tracker.halt(reason),
            Settled::Postponed(reason) => tracker.postponed(subject.item_id, name(), reason),
        }
    }
}

/// Rounds of the batch driver: full (or aged) batches submitted and the
/// batches in progress followed while the stages run; once `flushing` says
/// nothing more is queued, everything queued submitted and followed until
/// nothing is left. The wait between rounds doubles while nothing changes.
/// A configuration fault stops the run; other errors are retried, a few
/// times in a row at most.
async fn drive_batches(
    driver: BatchDriver,
    mut flushing: watch::Receiver<bool>,
    tracker: Arc<Tracker>,
) -> anyhow::Result<()> {
    const MOST_ERRORS_IN_A_ROW: u32 = 5;
    let limits = driver.limits();
    let mut wait = limits.poll;
    let mut errors = 0;
    let mut said = String::new();
    loop {
        let flush = *flushing.borrow();
        match driver.step(flush).await {
            Ok(mut progress) => {
                errors = 0;
                let changed = progress.submitted > 0 || progress.ingested > 0;
                report(&tracker, std::mem::take(&mut progress.settled), false);
                if flush && progress.is_idle() {
                    tracker.nothing_queued("no longer waiting for a batch (deleted meanwhile)");
                    return Ok(());
                }
                let now = format!(
                    "{} requests queued, {} batches at the provider{}",
                    progress.queued,
                    progress.in_progress,
                    if progress.overdue.is_empty() {
                        String::new()
                    } else {
                        format!(" ({} past their window)", progress.overdue.len())
                    }
                );
                if flush && now != said {
                    tracker.say(&format!("waiting for the batch API: {now}"));
                    said = now;
                }
                wait = if changed { limits.poll } else { (wait * 2).min(BatchLimits::MAX_POLL) };
            }
            Err(e) if e.is_configuration_fault() => {
                tracker.halt(e.to_string());
                return Ok(());
            }
            Err(e) => {
                errors += 1;
                anyhow::ensure!(
                    errors < MOST_ERRORS_IN_A_ROW,
                    "the batch API failed {errors} times in a row ({e}); the batches in flight are kept: run the same \
                     command again to pick them up"
                );
                tracing::warn!(error = %e, "a round of the batch driver failed; trying again");
                wait = (wait * 2).min(BatchLimits::MAX_POLL);
            }
        }
        // Woken early when the stages are done queueing; stopped when the
        // pipeline was dropped without finishing (what is queued and in
        // flight stays in the database for the next run).
        if let Ok(Err(_)) = tokio::time::timeout(wait, flushing.changed()).await {
            return Ok(());
        }
    }
}

/// Runs one event per stored item through the stages here: for each
/// `(item, key, data)`, `event_of(data, key)`, a key that does not parse
/// failing alone; with `pause`, one event per pause at most. Answers the
/// report and the items submitted.
pub async fn run_events<T>(
    c: &Components,
    items: Vec<(Uuid, String, T)>,
    pause: Option<Duration>,
    mut event_of: impl FnMut(T, &ImageKey) -> PipelineEvent,
) -> anyhow::Result<(Report, Vec<Uuid>)> {
    let tracker = Arc::new(Tracker::new(items.len() as u64));
    let pipeline = Pipeline::start(c, c.store.clone(), tracker.clone())?;
    let mut submitted = Vec::with_capacity(items.len());
    for (item, key, data) in items {
        if tracker.halted().is_some() {
            break;
        }
        let parsed = match ImageKey::parse(&key) {
            Ok(parsed) => parsed,
            Err(e) => {
                tracker.failed(key, e.to_string());
                continue;
            }
        };
        tracker.register(item, &key);
        submitted.push(item);
        pipeline.submit_event(event_of(data, &parsed)).await?;
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
    pipeline.finish().await?;
    Ok((tracker.finish(), submitted))
}
