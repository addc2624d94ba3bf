//! Retrying remote calls: exponential backoff with full jitter, honouring
//! the server's `retry-after`, for a bounded number of attempts.

use std::future::Future;
use std::time::Duration;

use domain::retry::Retriable;
use domain::settings::{ConfigError, Env, Setting};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The backoff ceiling of the first retry; it doubles each retry.
    pub base_delay: Duration,
    /// No wait is longer. A `retry-after` beyond it ends the retries: the
    /// item fails as retriable and the stream delivers it again later.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 4, base_delay: Duration::from_millis(500), max_delay: Duration::from_secs(20) }
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
    /// or what the server asked for if that is longer. `None` when the
    /// server asked for more than `max_delay`.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let jittered = self.backoff(retry);
        match retry_after {
            Some(asked) if asked > self.max_delay => None,
            Some(asked) => Some(asked.max(jittered)),
            None => Some(jittered),
        }
    }
}

/// The three settings of a retry policy, named for what is retried.
#[derive(Debug, Clone, Copy)]
pub struct RetrySettings {
    /// Attempts in all, the first included.
    pub max_attempts: Setting,
    /// The first backoff ceiling, milliseconds.
    pub base_ms: Setting,
    /// The longest wait, seconds.
    pub max_secs: Setting,
}

impl RetrySettings {
    pub fn read(&self, env: &Env) -> Result<RetryPolicy, ConfigError> {
        Ok(RetryPolicy {
            max_attempts: env.parse_at_least(&self.max_attempts, 1)?,
            base_delay: Duration::from_millis(env.parse_at_least(&self.base_ms, 1)?),
            max_delay: Duration::from_secs(env.parse_at_least(&self.max_secs, 1)?),
        })
    }

    pub fn all(&self) -> [Setting; 3] {
        [self.max_attempts, self.base_ms, self.max_secs]
    }
}

/// Calls `call` until it succeeds, fails with a non-retriable error, or the
/// attempts run out; returns the last error and the number of attempts made.
pub async fn retry<T, E, F, Fut>(policy: &RetryPolicy, mut call: F) -> Result<T, (E, u32)>
where
    E: Retriable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(e) if !e.is_retriable() || attempt >= policy.max_attempts.max(1) => return Err((e, attempt)),
            Err(e) => match policy.delay(attempt, e.retry_after()) {
                None => return Err((e, attempt)),
                Some(wait) => {
                    tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, "retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, PartialEq)]
    struct Flaky {
        retriable: bool,
        after: Option<Duration>,
    }

    impl std::fmt::Display for Flaky {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "flaky")
        }
    }

    impl Retriable for Flaky {
        fn is_retriable(&self) -> bool {
            self.retriable
        }

        fn retry_after(&self) -> Option<Duration> {
            self.after
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 3, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(2) }
    }

    #[test]
    fn delays_grow_are_jittered_and_honour_retry_after() {
        let p = policy();
        for _ in 0..100 {
            assert!(p.delay(1, None).unwrap() <= Duration::from_millis(100));
            assert!(p.delay(3, None).unwrap() <= Duration::from_millis(400));
            assert!(p.delay(30, None).unwrap() <= Duration::from_secs(2));
            assert!(p.delay(1, Some(Duration::from_secs(1))).unwrap() >= Duration::from_secs(1));
        }
        assert_eq!(p.delay(1, Some(Duration::from_secs(3))), None, "longer than max_delay: give up");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_retriable_errors_up_to_the_limit() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry(&policy(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Flaky { retriable: true, after: None })
        })
        .await;
        assert_eq!(result.unwrap_err().1, 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_a_permanent_error_and_returns_success() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry(&policy(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Flaky { retriable: false, after: None })
        })
        .await;
        assert_eq!(result.unwrap_err().1, 1);
        let ok = retry(&policy(), || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 { Err(Flaky { retriable: true, after: None }) } else { Ok(7) }
        })
        .await;
        assert_eq!(ok.unwrap(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_as_long_as_the_server_asks() {
        let start = tokio::time::Instant::now();
        let calls = AtomicU32::new(0);
        let _ = retry(&policy(), || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(Flaky { retriable: true, after: Some(Duration::from_millis(1500)) })
            } else {
                Ok(())
            }
        })
        .await;
        assert!(start.elapsed() >= Duration::from_millis(1500));
    }
}
