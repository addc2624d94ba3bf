//! Keeping a pace: at most a given number of objects a second, on average
//! since the start, so bulk work does not starve live uploads.

use std::time::{Duration, Instant};

/// Keeps `rate` objects a second on average since the start.
#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    start: Instant,
    sent: u64,
}

impl Throttle {
    pub fn new(rate: f64) -> Self {
        Self { rate, start: Instant::now(), sent: 0 }
    }

    /// Waits until `n` more are due.
    pub async fn admit(&mut self, n: u64) {
        self.sent += n;
        let due = Duration::from_secs_f64(self.sent as f64 / self.rate.max(0.001));
        if let Some(wait) = due.checked_sub(self.start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}
