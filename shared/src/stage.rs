//! The one shape every stage has: a batch of inputs in, one [`Outcome`] per
//! input out, in order. The local pipeline and the Lambda handlers both drive
//! stages through [`Stage`].

use std::future::Future;
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// What became of one input of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored, and the next stage's event published (or, last stage, finished).
    Done,
    /// Deliberately not processed (a thumbnail key, another file type), with why.
    Skipped(String),
    Failed(Failure),
}

impl Outcome {
    pub fn failed(reason: impl Into<String>, retriable: bool, recorded: bool) -> Self {
        Self::Failed(Failure { reason: reason.into(), retriable, recorded })
    }
}

/// Why an item failed, and what delivering it again could do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Says what failed and for which item.
    pub reason: String,
    /// A later attempt may succeed (timeouts, throttling, an unreachable service).
    pub retriable: bool,
    /// The failure is on the item's row, where `collections failures` lists it
    /// and `collections retry` re-runs it.
    pub recorded: bool,
}

impl Failure {
    /// Whether the stream must deliver the record again (Kinesis retries it,
    /// then sends it to the on-failure destination): retriable failures, and
    /// permanent ones that could not be recorded anywhere else.
    pub fn needs_redelivery(&self) -> bool {
        self.retriable || !self.recorded
    }

    /// `work` (e.g. "analysing u/a.jpg with model") was still running when
    /// the invocation's deadline came: worth another delivery.
    pub fn cut_off(work: impl std::fmt::Display) -> Self {
        Self { reason: format!("{work} was cut off: the invocation ran out of time"), retriable: true, recorded: true }
    }
}

/// An input a stage can take from a stream record.
pub trait StageInput: DeserializeOwned + Send + Sync + std::fmt::Debug + 'static {
    /// The item this input is about, when it can be told.
    fn item_uuid(&self) -> Option<Uuid>;
    /// A short description for logs and failure lists (a key or an id).
    fn describe(&self) -> String;
    /// Whose item this is, when it can be told.
    fn user_id(&self) -> Option<String>;
}

/// What a batch runs within.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchContext {
    /// The Lambda request id (or X-Ray trace id) of this invocation; stored
    /// with what the batch writes, to find its logs.
    pub trace_id: Option<String>,
    /// When the batch's provider calls must be over, so that what finished
    /// is stored and reported before Lambda ends the invocation. `None`:
    /// no limit (local runs).
    pub deadline: Option<Instant>,
}

/// Runs `work(i)` for each of `indices` (all below `len`), at most `limit`
/// at once, in whatever order they finish, until all are done or the
/// `deadline` passes. The answer has `len` places: `Some` for the work that
/// finished, `None` for the rest (work still running at the deadline is
/// dropped).
pub async fn until_deadline<T, F, Fut>(
    indices: impl IntoIterator<Item = usize>,
    len: usize,
    limit: usize,
    deadline: Option<Instant>,
    work: F,
) -> Vec<Option<T>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T>,
{
    let mut results: Vec<Option<T>> = std::iter::repeat_with(|| None).take(len).collect();
    let mut running = futures::stream::iter(indices)
        .map(|i| {
            let done = work(i);
            async move { (i, done.await) }
        })
        .buffer_unordered(limit.max(1));
    let collect = async {
        while let Some((i, result)) = running.next().await {
            results[i] = Some(result);
        }
    };
    match deadline {
        None => collect.await,
        Some(at) => {
            let _ = tokio::time::timeout_at(tokio::time::Instant::from_std(at), collect).await;
        }
    }
    results
}

#[async_trait]
pub trait Stage: Send + Sync + 'static {
    type Input: StageInput;

    /// The stage's name in logs and metrics.
    fn name(&self) -> &'static str;

    /// Processes a batch; returns exactly one outcome per input, in order.
    async fn run_batch(&self, inputs: &[Self::Input], context: &BatchContext) -> Vec<Outcome>;
}

impl StageInput for crate::events::ObjectRef {
    fn item_uuid(&self) -> Option<Uuid> {
        crate::keys::ImageKey::parse(&self.key).ok().map(|k| k.item_uuid())
    }

    fn describe(&self) -> String {
        self.key.clone()
    }

    fn user_id(&self) -> Option<String> {
        crate::keys::ImageKey::parse(&self.key).ok().map(|k| k.user_id().to_owned())
    }
}

impl StageInput for crate::events::ImageProcessed {
    fn item_uuid(&self) -> Option<Uuid> {
        Some(crate::events::ImageProcessed::item_uuid(self))
    }

    fn describe(&self) -> String {
        self.original_key.clone()
    }

    fn user_id(&self) -> Option<String> {
        Some(self.user_id.clone())
    }
}

impl StageInput for crate::events::AnalysisComplete {
    fn item_uuid(&self) -> Option<Uuid> {
        Some(crate::events::AnalysisComplete::item_uuid(self))
    }

    fn describe(&self) -> String {
        format!("item {} of {}", self.item_id, self.user_id)
    }

    fn user_id(&self) -> Option<String> {
        Some(self.user_id.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_unfinished_at_the_deadline_is_none_and_the_limit_holds() {
        let in_flight = std::sync::atomic::AtomicUsize::new(0);
        let peak = std::sync::atomic::AtomicUsize::new(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Index i takes i seconds; index 3 is not asked for.
        let results = until_deadline([0, 1, 2, 4, 12], 13, 2, Some(deadline), |i| {
            let (in_flight, peak) = (&in_flight, &peak);
            async move {
                let now = in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                peak.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(i as u64)).await;
                in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                i * 10
            }
        })
        .await;
        let finished: Vec<(usize, usize)> = results.iter().enumerate().filter_map(|(i, r)| r.map(|r| (i, r))).collect();
        assert_eq!(finished, vec![(0, 0), (1, 10), (2, 20), (4, 40)]);
        assert_eq!(results.len(), 13);
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 2);

        let all = until_deadline(0..3, 3, 8, None, |i| async move { i }).await;
        assert_eq!(all, vec![Some(0), Some(1), Some(2)]);
    }
}
