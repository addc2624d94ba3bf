//! A per-user rate limit inside each search function instance: a token
//! bucket per caller (`SEARCH_RATE_PER_USER` tokens a second, up to
//! `SEARCH_BURST_PER_USER`), so one token holder cannot spend the
//! function's concurrency, the database's connections and the query
//! embeddings of everyone else. It is per instance: with the function's
//! reserved concurrency `N`, one user gets at most `N` times the rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use domain::settings::{ConfigError, Env, Setting};

pub const RATE_PER_USER: Setting = Setting::new(
    "SEARCH_RATE_PER_USER",
    "5",
    "the search Lambda: requests a second one user may make to one function instance, sustained",
);
pub const BURST_PER_USER: Setting = Setting::new(
    "SEARCH_BURST_PER_USER",
    "20",
    "the search Lambda: requests one user may make at once to one function instance before the rate applies",
);

/// Buckets of callers not seen for this long are forgotten (they are full again by then).
const FORGET_AFTER: Duration = Duration::from_secs(300);

/// Token buckets by user.
#[derive(Debug)]
pub struct UserLimit {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl UserLimit {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst: burst.max(1.0), buckets: Mutex::new(HashMap::new()) }
    }

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let rate: u32 = env.parse_at_least(&RATE_PER_USER, 1)?;
        let burst: u32 = env.parse_at_least(&BURST_PER_USER, 1)?;
        Ok(Self::new(f64::from(rate), f64::from(burst)))
    }

    /// Takes one request of `user`'s at `now`: `Ok`, or how long until
    /// the next one would be let through.
    pub fn take(&self, user: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.at) < FORGET_AFTER);
        }
        let bucket = buckets.entry(user.to_owned()).or_insert(Bucket { tokens: self.burst, at: now });
        let refilled = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * self.rate).min(self.burst);
        *bucket = Bucket { tokens: refilled, at: now };
        if refilled >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - refilled) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_per_user_and_other_users_untouched() {
        let limit = UserLimit::new(5.0, 3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limit.take("mallory", t0), Ok(()));
        }
        let wait = limit.take("mallory", t0).unwrap_err();
        assert!(wait > Duration::from_millis(150) && wait <= Duration::from_millis(200), "{wait:?}");
        assert_eq!(limit.take("alice", t0), Ok(()), "another user has a bucket of her own");
        assert_eq!(limit.take("mallory", t0 + Duration::from_millis(200)), Ok(()), "one token back after 1/rate");
        assert!(limit.take("mallory", t0 + Duration::from_millis(250)).is_err());
        assert_eq!(limit.take("mallory", t0 + Duration::from_secs(60)), Ok(()));
    }
}
