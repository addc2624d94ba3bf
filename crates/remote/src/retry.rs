//! Retrying remote calls: exponential backoff with full jitter, honouring
//! the server's `retry-after`, within a time budget. An outage (overload,
//! throttling, no answer, no connection) is retried until the budget runs
//! out; another retriable error (a 500) for a bounded number of attempts.
//! Each attempt waits for leave from the provider's [`AdaptiveLimit`] and
//! tells it how the call went; a call backing off from an outage tries
//! again as soon as another call gets an answer.

use std::future::Future;
use std::time::{Duration, Instant};

use domain::retry::Retriable;
use domain::settings::{ConfigError, Env, Setting};

use crate::limit::AdaptiveLimit;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1), for a retriable
    /// error that is not an outage.
    pub max_attempts: u32,
    /// The backoff ceiling of the first retry; it doubles each retry.
    pub base_delay: Duration,
    /// The longest backoff of our own. A longer `retry-after` is honoured
    /// while it fits in the budget.
    pub max_delay: Duration,
    /// How long one call may go on being retried, waits included: an
    /// outage shorter than this costs a wait, not a failure. (On Lambda the
    /// invocation's deadline cuts it shorter.)
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            budget: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first retry) when the
    /// server named none: uniformly random up to `base · 2^(retry-1)`,
    /// capped at `max_delay`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.base_delay.saturating_mul(1 << (retry - 1).min(16)).min(self.max_delay);
        ceiling.mul_f64(fastrand::f64())
    }

    /// The wait before retry number `retry`: the [`backoff`](Self::backoff),
    /// or what the server asked for if that is longer.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let jittered = self.backoff(retry);
        retry_after.map_or(jittered, |asked| asked.max(jittered))
    }
}

/// The four settings of a retry policy, named for what is retried.
#[derive(Debug, Clone, Copy)]
pub struct RetrySettings {
    /// Attempts in all, the first included.
    pub max_attempts: Setting,
    /// The first backoff ceiling, milliseconds.
    pub base_ms: Setting,
    /// The longest backoff, seconds.
    pub max_secs: Setting,
    /// The budget of one call's retries, seconds.
    pub budget_secs: Setting,
}

impl RetrySettings {
    pub fn read(&self, env: &Env) -> Result<RetryPolicy, ConfigError> {
        Ok(RetryPolicy {
            max_attempts: env.parse_at_least(&self.max_attempts, 1)?,
            base_delay: Duration::from_millis(env.parse_at_least(&self.base_ms, 1)?),
            max_delay: Duration::from_secs(env.parse_at_least(&self.max_secs, 1)?),
            budget: Duration::from_secs(env.parse(&self.budget_secs)?),
        })
    }

    pub fn all(&self) -> [Setting; 4] {
        [self.max_attempts, self.base_ms, self.max_secs, self.budget_secs]
    }
}

/// Calls `call`, each attempt with leave from `limit`, until it succeeds,
/// fails with an error not worth retrying, or the retries are spent: the
/// attempts (for an error that is not an outage), or the policy's budget,
/// or the time left before `until` (a Lambda invocation's deadline). A
/// retry that would start past the budget is not made. Returns the last
/// error and the number of attempts made.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    limit: &AdaptiveLimit,
    until: Option<Instant>,
    mut call: F,
) -> Result<T, (E, u32)>
where
    E: Retriable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let budget_ends = tokio::time::Instant::now() + policy.budget;
    let give_up_at = until.map_or(budget_ends, |at| tokio::time::Instant::from_std(at).min(budget_ends));
    let mut attempt = 1;
    loop {
        let permit = limit.acquire().await;
        let error = match call().await {
            Ok(value) => {
                permit.succeeded();
                return Ok(value);
            }
            Err(error) => error,
        };
        let worth_another = error.is_retriable() && (error.is_outage() || attempt < policy.max_attempts.max(1));
        let wait = Some(policy.delay(attempt, error.retry_after()))
            .filter(|&wait| worth_another && tokio::time::Instant::now() + wait < give_up_at);
        if error.is_outage() {
            permit.met_outage(error.to_string(), wait.unwrap_or_default());
        } else {
            drop(permit);
        }
        let Some(wait) = wait else { return Err((error, attempt)) };
        tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, error = %error, "retrying");
        if error.is_outage() {
            // Once another call gets an answer, the outage is over: no
            // need to sleep out a backoff grown long while it lasted.
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = limit.answering_again() => {}
            }
        } else {
            tokio::time::sleep(wait).await;
        }
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, Clone, PartialEq)]
    struct Flaky {
        retriable: bool,
        outage: bool,
        after: Option<Duration>,
    }

    const FAULTY: Flaky = Flaky { retriable: true, outage: false, after: None };
    const OUT: Flaky = Flaky { retriable: true, outage: true, after: None };

    impl std::fmt::Display for Flaky {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "flaky")
        }
    }

    impl Retriable for Flaky {
        fn is_retriable(&self) -> bool {
            self.retriable
        }

        fn is_outage(&self) -> bool {
            self.outage
        }

        fn retry_after(&self) -> Option<Duration> {
            self.after
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            budget: Duration::from_secs(60),
        }
    }

    fn limit() -> AdaptiveLimit {
        AdaptiveLimit::new("p", 4)
    }

    #[test]
    fn delays_grow_are_jittered_and_honour_retry_after() {
        let p = policy();
        for _ in 0..100 {
            assert!(p.delay(1, None) <= Duration::from_millis(100));
            assert!(p.delay(3, None) <= Duration::from_millis(400));
            assert!(p.delay(30, None) <= Duration::from_secs(2));
            assert!(p.delay(1, Some(Duration::from_secs(1))) >= Duration::from_secs(1));
        }
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(30))),
            Duration::from_secs(30),
            "past max_delay: still honoured"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_a_fault_up_to_the_attempts_and_an_outage_until_the_budget() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry(&policy(), &limit(), None, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(FAULTY)
        })
        .await;
        assert_eq!(result.unwrap_err().1, 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        // An outage goes on past the attempts, for the budget's minute.
        let start = tokio::time::Instant::now();
        let limit = limit();
        let result: Result<(), _> = retry(&policy(), &limit, None, || async { Err(OUT) }).await;
        let (_, attempts) = result.unwrap_err();
        assert!(attempts > 30, "{attempts} attempts");
        assert!(start.elapsed() <= Duration::from_secs(60), "no retry starts past the budget: {:?}", start.elapsed());
        assert!(start.elapsed() >= Duration::from_secs(50), "{:?}", start.elapsed());
        assert_eq!(limit.current(), 1, "the outage cut the limit");
        assert!(limit.outage().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_shorter_than_the_budget_is_waited_out_and_ends_with_the_first_success() {
        let limit = limit();
        let start = tokio::time::Instant::now();
        let answer = retry(&policy(), &limit, None, || async {
            if start.elapsed() < Duration::from_secs(20) { Err(OUT) } else { Ok(7) }
        })
        .await;
        assert_eq!(answer.unwrap(), 7);
        assert!(start.elapsed() >= Duration::from_secs(20));
        assert_eq!(limit.outage(), None, "a success ends the outage");
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_cuts_the_budget_short() {
        let start = tokio::time::Instant::now();
        let until = Instant::now() + Duration::from_secs(5);
        let result: Result<(), _> = retry(&policy(), &limit(), Some(until), || async { Err(OUT) }).await;
        assert!(result.is_err());
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
        // A retry-after that does not fit ends the retries at once.
        let asked = Flaky { after: Some(Duration::from_secs(90)), ..OUT };
        let result: Result<(), _> = retry(&policy(), &limit(), None, || async { Err(asked.clone()) }).await;
        assert_eq!(result.unwrap_err().1, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_a_permanent_error_and_returns_success() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry(&policy(), &limit(), None, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Flaky { retriable: false, ..OUT })
        })
        .await;
        assert_eq!(result.unwrap_err().1, 1);
        let ok = retry(&policy(), &limit(), None, || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 { Err(FAULTY) } else { Ok(7) }
        })
        .await;
        assert_eq!(ok.unwrap(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_as_long_as_the_server_asks() {
        let start = tokio::time::Instant::now();
        let calls = AtomicU32::new(0);
        let _ = retry(&policy(), &limit(), None, || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(Flaky { after: Some(Duration::from_millis(1500)), ..FAULTY })
            } else {
                Ok(())
            }
        })
        .await;
        assert!(start.elapsed() >= Duration::from_millis(1500));
    }
}
