//! Calls to the vision provider: at most `concurrency` in flight in this
//! process (a semaphore shared by every batch), each retried with backoff.

use std::sync::Arc;

use futures::StreamExt;
use remote::retry::{RetryPolicy, retry};
use runtime::batch::Meter;
use tokio::sync::Semaphore;
use vision::{ProviderAnalysis, VisionError, VisionProvider, VisionRequest};

pub struct VisionCalls {
    provider: Arc<dyn VisionProvider>,
    retry: RetryPolicy,
    concurrency: usize,
    in_flight: Arc<Semaphore>,
}

impl std::fmt::Debug for VisionCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisionCalls")
            .field("provider", &self.provider.provider())
            .field("model", &self.provider.model())
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl VisionCalls {
    pub fn new(provider: Arc<dyn VisionProvider>, concurrency: usize, retry: RetryPolicy) -> Self {
        let concurrency = concurrency.max(1);
        Self { provider, retry, concurrency, in_flight: Arc::new(Semaphore::new(concurrency)) }
    }

    pub fn provider(&self) -> &dyn VisionProvider {
        self.provider.as_ref()
    }

    /// One analysis, retried; a permit is held only while a request is in
    /// flight, not while backing off. A reply that fails validation is asked
    /// for once more (models are not deterministic). Each request, and the
    /// tokens of the reply kept, count on `meter`. The error comes with the
    /// attempts made.
    pub async fn analyze(
        &self,
        request: VisionRequest<'_>,
        meter: &Meter,
    ) -> Result<ProviderAnalysis, (VisionError, u32)> {
        let attempt = || {
            retry(&self.retry, || async {
                let _permit = self.in_flight.acquire().await.expect("the semaphore is never closed");
                meter.call();
                self.provider.analyze(request).await
            })
        };
        let answer = match attempt().await {
            Err((e @ VisionError::Invalid { .. }, made)) => {
                tracing::info!(error = %e, "the reply failed validation; asking once more");
                attempt().await.map_err(|(e, more)| (e, made + more))
            }
            other => other,
        };
        if let Ok(ProviderAnalysis { usage: Some(usage), .. }) = &answer {
            meter.used(self.provider.model(), *usage);
        }
        answer
    }

    /// Many analyses, results in the order of the requests.
    pub async fn analyze_all(
        &self,
        requests: &[VisionRequest<'_>],
        meter: &Meter,
    ) -> Vec<Result<ProviderAnalysis, (VisionError, u32)>> {
        futures::stream::iter(requests.iter().copied())
            .map(|r| self.analyze(r, meter))
            .buffered(self.concurrency)
            .collect()
            .await
    }
}
