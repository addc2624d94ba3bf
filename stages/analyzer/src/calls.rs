//! Calls to the vision provider: at most `concurrency` in flight in this
//! process (a semaphore shared by every batch), each retried with backoff.

use std::sync::Arc;

use futures::StreamExt;
use shared::llm::{LlmError, ProviderAnalysis, VisionProvider, VisionRequest};
use shared::retry::{RetryPolicy, retry};
use tokio::sync::Semaphore;

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
    /// for once more (models are not deterministic). The error comes with
    /// the attempts made.
    pub async fn analyze(&self, request: VisionRequest<'_>) -> Result<ProviderAnalysis, (LlmError, u32)> {
        let attempt = || {
            retry(&self.retry, || async {
                let _permit = self.in_flight.acquire().await.expect("the semaphore is never closed");
                self.provider.analyze(request).await
            })
        };
        match attempt().await {
            Err((e @ LlmError::Invalid { .. }, made)) => {
                tracing::info!(error = %e, "the reply failed validation; asking once more");
                attempt().await.map_err(|(e, more)| (e, made + more))
            }
            other => other,
        }
    }

    /// Many analyses, results in the order of the requests.
    pub async fn analyze_all(&self, requests: &[VisionRequest<'_>]) -> Vec<Result<ProviderAnalysis, (LlmError, u32)>> {
        futures::stream::iter(requests.iter().copied())
            .map(|r| self.analyze(r))
            .buffered(self.concurrency)
            .collect()
            .await
    }
}
