//! How long an invocation's batch may work: the runtime's deadline less a
//! reserve to store and publish, or (when the deadline is not believable)
//! the function's configured timeout.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use domain::settings::{ConfigError, Env, Setting};
use domain::stage::StageName;
use runtime::batch::BatchContext;
use tracing::warn;

/// Most time kept back from an invocation's deadline to store the batch's
/// results and publish its events after the provider calls stop.
const RESERVE: Duration = Duration::from_secs(10);

/// Lambda's longest invocation; a deadline further away is not believed.
const LONGEST_INVOCATION: Duration = Duration::from_secs(15 * 60 + 60);

/// The batch context of an invocation: its request id as the trace id, and
/// a deadline `RESERVE` (at most a quarter of the time left) before
/// Lambda's. A deadline already past, or beyond Lambda's longest
/// invocation (as emulators send), is not believed: the function's
/// `timeout` from now stands in for it.
pub fn batch_context(invocation: &lambda_runtime::Context, timeout: Duration) -> BatchContext {
    let ends = UNIX_EPOCH + Duration::from_millis(invocation.deadline);
    let left = match ends.duration_since(SystemTime::now()) {
        Ok(left) if !left.is_zero() && left <= LONGEST_INVOCATION => left,
        _ => {
            warn!(
                deadline_ms = invocation.deadline,
                timeout_secs = timeout.as_secs(),
                "the runtime's deadline is past or too far away; counting the function's timeout from now"
            );
            timeout
        }
    };
    let deadline = Instant::now() + left.saturating_sub(RESERVE.min(left / 4));
    BatchContext::new(Some(invocation.request_id.clone()), Some(deadline))
}

pub const FUNCTION_TIMEOUT_SECS: Setting = Setting::optional(
    "FUNCTION_TIMEOUT_SECS",
    "the seed's: 60 s, 300 s for the analyzer",
    "on Lambda: the function's timeout, counted from the start of an invocation whose runtime deadline is past \
     or absurd (set by the CDK app)",
);

/// The timeout the seed gives a stage's function.
fn seed_timeout(stage: StageName) -> Duration {
    Duration::from_secs(match stage {
        StageName::Thumbnail | StageName::Embedding => 60,
        StageName::Analysis => 300,
    })
}

/// The function's configured timeout ([`FUNCTION_TIMEOUT_SECS`]), or the
/// seed's timeout of the stage.
pub fn function_timeout(env: &Env, stage: StageName) -> Result<Duration, ConfigError> {
    let configured = env.parse_optional_at_least::<u64>(&FUNCTION_TIMEOUT_SECS, 1)?;
    Ok(configured.map_or_else(|| seed_timeout(stage), Duration::from_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds_until(context: &BatchContext) -> f64 {
        context.deadline.expect("a deadline").saturating_duration_since(Instant::now()).as_secs_f64()
    }

    #[test]
    fn the_deadline_keeps_time_back_for_storing() {
        let mut invocation = lambda_runtime::Context::default();
        invocation.request_id = "req-1".into();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        for (seconds_left, kept_back) in [(60, 10), (8, 2)] {
            invocation.deadline = now_ms + seconds_left * 1000;
            let context = batch_context(&invocation, Duration::from_secs(300));
            assert_eq!(context.trace_id.as_deref(), Some("req-1"));
            let until = seconds_until(&context);
            let expected = (seconds_left - kept_back) as f64;
            assert!((until - expected).abs() < 0.5, "{seconds_left} s left: deadline in {until} s");
        }
    }

    /// `cargo lambda watch` sends `lambda-runtime-deadline-ms: 600000`, a
    /// moment in 1970: the batch must not believe it has no time left.
    #[test]
    fn a_deadline_past_or_too_far_falls_back_to_the_function_timeout() {
        let mut headers = http::HeaderMap::new();
        headers.insert("lambda-runtime-aws-request-id", "req-watch".parse().unwrap());
        headers.insert("lambda-runtime-deadline-ms", "600000".parse().unwrap());
        let config = std::sync::Arc::new(lambda_runtime::Config::default());
        let invocation = lambda_runtime::Context::new("req-watch", config, &headers).expect("a context from headers");
        assert_eq!(invocation.deadline, 600_000);
        let until = seconds_until(&batch_context(&invocation, Duration::from_secs(60)));
        assert!((until - 50.0).abs() < 0.5, "60 s timeout less 10 s kept back: {until}");

        let mut far = invocation.clone();
        far.deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 + 3_600_000;
        let until = seconds_until(&batch_context(&far, Duration::from_secs(300)));
        assert!((until - 290.0).abs() < 0.5, "an hour away is not believed: {until}");

        let none = lambda_runtime::Context::default();
        assert!((seconds_until(&batch_context(&none, Duration::from_secs(60))) - 50.0).abs() < 0.5);
    }
}
