//! What a batch runs within ([`BatchContext`]): its trace id, its deadline,
//! and its meter, which counts the provider requests and tokens of this
//! batch alone (batches of several stages run at once in one process); and
//! running work until the deadline ([`until_deadline`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use domain::usage::Usage;
use futures::StreamExt;

/// What a batch runs within.
#[derive(Debug, Default)]
pub struct BatchContext {
    /// The Lambda request id (or X-Ray trace id) of this invocation; stored
    /// with what the batch writes, to find its logs.
    pub trace_id: Option<String>,
    /// When the batch's provider calls must be over, so that what finished
    /// is stored and reported before Lambda ends the invocation. `None`:
    /// no limit (local runs).
    pub deadline: Option<Instant>,
    /// What this batch's provider requests cost.
    pub meter: Meter,
}

impl BatchContext {
    pub fn new(trace_id: Option<String>, deadline: Option<Instant>) -> Self {
        Self { trace_id, deadline, meter: Meter::default() }
    }
}

/// The provider requests a batch made and the tokens they used, by model.
#[derive(Debug, Default)]
pub struct Meter {
    calls: AtomicU64,
    tokens: Mutex<BTreeMap<String, Usage>>,
}

impl Meter {
    /// One provider request was sent (whatever came of it).
    pub fn call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// A reply of `model` counted `usage`.
    pub fn used(&self, model: &str, usage: Usage) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        tokens.entry(model.to_owned()).or_default().add(usage);
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The tokens used, by model, leaving out models that used none.
    pub fn tokens(&self) -> Vec<(String, Usage)> {
        let tokens = self.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        tokens.iter().filter(|(_, used)| used.total() > 0).map(|(model, used)| (model.clone(), *used)).collect()
    }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_meter_counts_its_own_batch() {
        let (one, other) = (Meter::default(), Meter::default());
        one.call();
        one.call();
        one.used("m", Usage { input: 5, output: 2, ..Usage::default() });
        one.used("m", Usage { input: 1, ..Usage::default() });
        one.used("idle", Usage::default());
        other.call();
        assert_eq!(one.calls(), 2);
        assert_eq!(one.tokens(), [("m".to_owned(), Usage { input: 6, output: 2, ..Usage::default() })]);
        assert_eq!((other.calls(), other.tokens()), (1, vec![]), "another batch's meter is its own");
    }

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
