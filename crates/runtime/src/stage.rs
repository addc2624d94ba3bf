//! The one shape every stage has: a batch of inputs in, one [`Outcome`] per
//! input out, in order. The local pipeline and the Lambda handlers both drive
//! stages through [`Stage`].

use std::future::Future;
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// The stages of the pipeline, in order. Each keeps a status on every item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StageName {
    Thumbnail,
    Analysis,
    Embedding,
}

impl StageName {
    /// Every stage, in the order an item goes through them.
    pub const ALL: [Self; 3] = [Self::Thumbnail, Self::Analysis, Self::Embedding];

    /// The stage's name in `items.failed_stage`, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Thumbnail => "thumbnail",
            Self::Analysis => "analysis",
            Self::Embedding => "embedding",
        }
    }

    /// The timeout the seed gives the stage's function: the invocation's
    /// length when the runtime does not say (see `FUNCTION_TIMEOUT_SECS`).
    pub fn seed_timeout(self) -> std::time::Duration {
        std::time::Duration::from_secs(match self {
            Self::Thumbnail | Self::Embedding => 60,
            Self::Analysis => 300,
        })
    }
}

impl std::fmt::Display for StageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StageName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "thumbnail" => Ok(Self::Thumbnail),
            "analysis" => Ok(Self::Analysis),
            "embedding" => Ok(Self::Embedding),
            other => Err(format!("unknown stage {other:?}")),
        }
    }
}

/// What became of one input of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored, and the next stage's event published (or, last stage, finished).
    Done,
    /// Deliberately not processed (a thumbnail key, another file type, work
    /// already done for the same version), with why.
    Skipped(String),
    Failed(Failure),
}

/// Whether delivering an item again could help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A later attempt may succeed (timeouts, throttling, an unreachable service).
    Later,
    /// The same input will fail the same way (a corrupt image, a refused value).
    Never,
}

/// Errors that know whether another attempt could succeed.
pub trait Retriable: std::fmt::Display {
    fn is_retriable(&self) -> bool;
}

/// The errors of the ports, each of which knows it already.
macro_rules! retriable {
    ($($error:ty),*) => {$(
        impl Retriable for $error {
            fn is_retriable(&self) -> bool {
                <$error>::is_retriable(self)
            }
        }
    )*};
}
retriable!(
    crate::api::ApiError,
    crate::llm::LlmError,
    crate::embedding::EmbeddingError,
    crate::db::DbError,
    crate::storage::StorageError
);

/// Why an item failed, and whether another delivery could help. The batch
/// runner records every failure (on the item's row, or in the table of
/// record failures) and has the retriable ones delivered again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Says what failed and for which item.
    pub reason: String,
    pub retry: Retry,
}

impl Failure {
    /// A failure another attempt may cure.
    pub fn transient(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), retry: Retry::Later }
    }

    /// A failure the same input will meet again.
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), retry: Retry::Never }
    }

    /// `doing` (e.g. "reading the thumbnail") failed with `error`; retriable
    /// when the error is.
    pub fn of(doing: impl std::fmt::Display, error: &dyn Retriable) -> Self {
        Self::caused_by(format!("{doing} failed: {error}"), error)
    }

    /// A failure told by an error that already says what failed (a
    /// database error names its operation), retriable when it is.
    pub fn from_error(error: &dyn Retriable) -> Self {
        Self::caused_by(error.to_string(), error)
    }

    /// A failure told in `reason`, retriable when `error`, its cause, is.
    pub fn caused_by(reason: String, error: &dyn Retriable) -> Self {
        if error.is_retriable() { Self::transient(reason) } else { Self::permanent(reason) }
    }

    /// `work` (e.g. "analysing u/a.jpg with model") was still running when
    /// the invocation's deadline came: worth another delivery.
    pub fn cut_off(work: impl std::fmt::Display) -> Self {
        Self::transient(format!("{work} was cut off: the invocation ran out of time"))
    }

    pub fn is_retriable(&self) -> bool {
        self.retry == Retry::Later
    }
}

impl From<Failure> for Outcome {
    fn from(failure: Failure) -> Self {
        Self::Failed(failure)
    }
}

/// Who and what a stage input is about, as far as it can be told; read
/// once per record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// The original's key.
    pub key: Option<String>,
    pub user_id: Option<String>,
    pub item_id: Option<Uuid>,
}

/// An input a stage can take from a stream record.
pub trait StageInput: DeserializeOwned + Serialize + Send + Sync + std::fmt::Debug + 'static {
    /// Who and what this input is about.
    fn subject(&self) -> Subject;
}

/// One failure to keep where `collections failures` finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedInput {
    pub subject: Subject,
    pub reason: String,
    /// The input as the stage takes it (to run it again), when it could be read.
    pub input: Option<serde_json::Value>,
    /// The record as received, when it could not be read.
    pub raw: Option<String>,
    /// Where the record came from (a Kinesis sequence number, a key).
    pub source: String,
}

/// Where the batch runner records failures: on the item's row when the
/// subject names an item of its user, else in a table of their own.
#[async_trait]
pub trait FailureLog: Send + Sync {
    async fn record(&self, stage: StageName, failures: &[FailedInput]) -> Result<(), crate::db::DbError>;
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

    fn name(&self) -> StageName;

    /// Processes a batch; returns exactly one outcome per input, in order.
    async fn run_batch(&self, inputs: &[Self::Input], context: &BatchContext) -> Vec<Outcome>;
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
