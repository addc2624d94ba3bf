//! Calls to the vision provider: as many in flight in this process as its
//! adaptive limit allows (shared by every batch; at most `concurrency`),
//! each retried with backoff within the retries' budget.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use remote::limit::AdaptiveLimit;
use remote::retry::{RetryPolicy, retry};
use runtime::batch::Meter;
use vision::{ProviderAnalysis, VisionError, VisionProvider, VisionRequest};

pub struct VisionCalls {
    provider: Arc<dyn VisionProvider>,
    retry: RetryPolicy,
    concurrency: usize,
    limit: Arc<AdaptiveLimit>,
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
        let limit = Arc::new(AdaptiveLimit::new(provider.provider(), concurrency));
        Self { provider, retry, concurrency, limit }
    }

    /// The provider's limit of calls in flight, and whether it is out.
    pub fn limit(&self) -> Arc<AdaptiveLimit> {
        self.limit.clone()
    }

    pub fn provider(&self) -> &dyn VisionProvider {
        self.provider.as_ref()
    }

    /// One analysis, retried until `until` at the latest; leave from the
    /// limit is held only while a request is in flight, not while backing
    /// off. A reply that fails validation is asked for once more (models are
    /// not deterministic). Each request, and the tokens of the reply kept,
    /// count on `meter`. The error comes with the attempts made.
    pub async fn analyze(
        &self,
        request: VisionRequest<'_>,
        meter: &Meter,
        until: Option<Instant>,
    ) -> Result<ProviderAnalysis, (VisionError, u32)> {
        let attempt = || {
            retry(&self.retry, &self.limit, until, || async {
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
            .map(|r| self.analyze(r, meter, None))
            .buffered(self.concurrency)
            .collect()
            .await
    }
}
