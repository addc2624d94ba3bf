//! How many calls to one provider may be in flight in this process: an
//! adaptive limit, halved when the provider says it is out (overloaded,
//! throttling, not answering) and grown back by one for each limit's worth
//! of successes, never above the configured concurrency (additive
//! increase, multiplicative decrease). While the provider is out, the
//! limit says so, and when the next try is due.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// One provider's limit, shared by every batch of the process.
#[derive(Debug)]
pub struct AdaptiveLimit {
    provider: &'static str,
    ceiling: usize,
    state: Mutex<State>,
    freed: Notify,
    /// Told when a call succeeds after an outage: the calls backing off from
    /// it need not sleep out their backoff.
    answering: Notify,
}

#[derive(Debug)]
struct State {
    /// The limit, at least 1; fractional while it grows back.
    limit: f64,
    in_flight: usize,
    /// Counts the cuts: a call sent before the last cut does not cut again
    /// (the calls in flight when an outage starts all meet it).
    cuts: u64,
    outage: Option<Outage>,
}

/// The provider is out, as the last call that met it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    /// What it answered, e.g. "anthropic answered HTTP 529: overloaded_error: Overloaded".
    pub reason: String,
    /// When the first call met it (since the last success).
    pub since: Instant,
    /// When that call tries again.
    pub retry_at: Instant,
}

/// Leave to send one call; dropped when the call is over.
#[derive(Debug)]
pub struct Permit<'a> {
    of: &'a AdaptiveLimit,
    cuts: u64,
}

impl AdaptiveLimit {
    /// A limit for `provider` that starts at, and never exceeds, `ceiling` (at least 1).
    pub fn new(provider: &'static str, ceiling: usize) -> Self {
        let ceiling = ceiling.max(1);
        Self {
            provider,
            ceiling,
            state: Mutex::new(State { limit: ceiling as f64, in_flight: 0, cuts: 0, outage: None }),
            freed: Notify::new(),
            answering: Notify::new(),
        }
    }

    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// The configured concurrency.
    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// How many calls may be in flight now.
    pub fn current(&self) -> usize {
        self.lock().limit as usize
    }

    /// The outage the last calls met, until a call succeeds.
    pub fn outage(&self) -> Option<Outage> {
        self.lock().outage.clone()
    }

    /// Waits until a call may be sent.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            // Registered before looking, so a release in between is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut state = self.lock();
                if state.in_flight < state.limit as usize {
                    state.in_flight += 1;
                    return Permit { of: self, cuts: state.cuts };
                }
            }
            freed.await;
        }
    }

    /// Waits until a call succeeds after an outage (for a call backing off
    /// from it: once the provider answers again, it need not wait longer).
    pub async fn answering_again(&self) {
        self.answering.notified().await;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Permit<'_> {
    /// The call succeeded: the limit grows by one per limit's worth of
    /// successes, and the outage, if there was one, is over.
    pub fn succeeded(self) {
        let mut state = self.of.lock();
        state.limit = (state.limit + 1.0 / state.limit).min(self.of.ceiling as f64);
        if state.outage.take().is_some() {
            self.of.answering.notify_waiters();
        }
    }

    /// The call met an outage (`reason`) and is tried again in `retry_in`:
    /// the limit halves, once for all the calls sent before this cut.
    pub fn met_outage(self, reason: String, retry_in: Duration) {
        let mut state = self.of.lock();
        if self.cuts == state.cuts {
            state.limit = (state.limit / 2.0).max(1.0);
            state.cuts += 1;
        }
        let now = Instant::now();
        let since = state.outage.as_ref().map_or(now, |o| o.since);
        state.outage = Some(Outage { reason, since, retry_at: now + retry_in });
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.of.lock().in_flight -= 1;
        self.of.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn halves_once_per_outage_wave_and_grows_back_to_the_ceiling() {
        let limit = AdaptiveLimit::new("p", 8);
        // Four calls in flight meet the same overload: one cut, not four.
        let wave: Vec<Permit> = vec![limit.acquire().await, limit.acquire().await, limit.acquire().await];
        let last = limit.acquire().await;
        for permit in wave {
            permit.met_outage("529".into(), Duration::from_secs(2));
        }
        last.met_outage("529".into(), Duration::from_secs(1));
        assert_eq!(limit.current(), 4);
        let outage = limit.outage().expect("an outage is told");
        assert_eq!(outage.reason, "529");
        assert!(outage.retry_at > outage.since);
        // Calls sent after the cut cut again.
        limit.acquire().await.met_outage("529".into(), Duration::ZERO);
        limit.acquire().await.met_outage("529".into(), Duration::ZERO);
        limit.acquire().await.met_outage("529".into(), Duration::ZERO);
        assert_eq!(limit.current(), 1, "never below one");
        // One success ends the outage; the limit climbs back, not past the ceiling.
        limit.acquire().await.succeeded();
        assert_eq!((limit.current(), limit.outage()), (2, None));
        for _ in 0..100 {
            limit.acquire().await.succeeded();
        }
        assert_eq!(limit.current(), 8);
    }

    #[tokio::test]
    async fn no_more_calls_in_flight_than_the_limit_and_a_release_wakes_a_waiter() {
        let limit = Arc::new(AdaptiveLimit::new("p", 3));
        // Cut to 1 by a call that met an outage.
        limit.acquire().await.met_outage("503".into(), Duration::ZERO);
        let (in_flight, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let (limit, in_flight, peak) = (limit.clone(), in_flight.clone(), peak.clone());
                tokio::spawn(async move {
                    let permit = limit.acquire().await;
                    peak.fetch_max(in_flight.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    drop(permit);
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 1, "one call at a time while cut to one");
    }

    #[tokio::test]
    async fn a_success_after_an_outage_wakes_the_calls_backing_off() {
        let limit = Arc::new(AdaptiveLimit::new("p", 2));
        limit.acquire().await.met_outage("529".into(), Duration::from_secs(60));
        let waiting = tokio::spawn({
            let limit = limit.clone();
            async move { limit.answering_again().await }
        });
        tokio::task::yield_now().await;
        limit.acquire().await.succeeded();
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken").unwrap();
    }
}
