//! CPU work on the thumbnail pool, where a panic fails its own item: rayon
//! aborts the whole process on a panic in a spawned job unless the job
//! catches it, and one hostile image must not take its batch down.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What a panic said, as text.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs `job` on `pool` and waits for its result; a panic in it is caught
/// there and answered as `Err` with the panic's message.
pub async fn run_on<T: Send + 'static>(
    pool: &rayon::ThreadPool,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    pool.spawn(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(job)).map_err(|panic| panic_message(panic.as_ref())));
    });
    rx.await.unwrap_or_else(|_| Err("the worker stopped before answering".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_that_panics_fails_alone_and_the_pool_goes_on() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let failed = run_on(&pool, || -> u32 { panic!("decoder bug on image {}", 7) }).await;
        assert_eq!(failed, Err("decoder bug on image 7".to_owned()));
        assert_eq!(run_on(&pool, || 2 + 2).await, Ok(4), "the same single worker still answers");
    }
}
