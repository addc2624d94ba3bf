//! EventBridge as the event bus: `PutEvents` in calls of at most 10
//! entries; entries EventBridge throttled or failed internally are sent
//! again with backoff, and an event that could not be published fails only
//! its own item.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use domain::events::PipelineEvent;
use remote::retry::RetryPolicy;
use runtime::bus::{EventPublisher, PublishError};

use crate::{describe, is_retriable, is_retriable_code};

/// Most entries one `PutEvents` call takes.
pub const MAX_ENTRIES: usize = 10;

#[derive(Debug, Clone)]
pub struct EventBridgePublisher {
    client: Client,
    bus: String,
    retry: RetryPolicy,
}

impl EventBridgePublisher {
    pub fn new(config: &SdkConfig, bus: impl Into<String>, retry: RetryPolicy) -> Self {
        Self { client: Client::new(config), bus: bus.into(), retry }
    }

    fn entry(&self, event: &PipelineEvent) -> PutEventsRequestEntry {
        PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(event.source())
            .detail_type(event.detail_type())
            .detail(event.detail_json())
            .build()
    }

    /// Publishes up to ten events, resending failed entries; one result each.
    async fn publish_chunk(&self, events: &[PipelineEvent]) -> Vec<Result<(), PublishError>> {
        let mut results: Vec<Option<Result<(), PublishError>>> = vec![None; events.len()];
        let mut pending: Vec<usize> = (0..events.len()).collect();
        let mut attempt = 1;
        loop {
            let entries: Vec<PutEventsRequestEntry> = pending.iter().map(|&i| self.entry(&events[i])).collect();
            let mut retry_after_call: Vec<usize> = Vec::new();
            match self.client.put_events().set_entries(Some(entries)).send().await {
                Ok(out) => {
                    let answers = out.entries();
                    for (position, &index) in pending.iter().enumerate() {
                        match answers.get(position) {
                            Some(answer) if answer.error_code().is_none() && answer.event_id().is_some() => {
                                results[index] = Some(Ok(()));
                            }
                            Some(answer) => {
                                let code = answer.error_code().unwrap_or("Unknown").to_owned();
                                if is_retriable_code(&code) {
                                    retry_after_call.push(index);
                                }
                                let message = answer.error_message().unwrap_or_default().to_owned();
                                results[index] = Some(Err(PublishError::Rejected { code, message }));
                            }
                            None => {
                                results[index] = Some(Err(PublishError::Call("no answer for the entry".into())));
                                retry_after_call.push(index);
                            }
                        }
                    }
                }
                Err(e) => {
                    let error = PublishError::Call(describe(&e));
                    for &index in &pending {
                        results[index] = Some(Err(error.clone()));
                    }
                    if is_retriable(&e) {
                        retry_after_call = pending.clone();
                    }
                }
            }
            if retry_after_call.is_empty() || attempt >= self.retry.max_attempts {
                break;
            }
            let wait = self.retry.backoff(attempt);
            tracing::debug!(entries = retry_after_call.len(), attempt, "resending failed PutEvents entries");
            tokio::time::sleep(wait).await;
            pending = retry_after_call;
            attempt += 1;
        }
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(PublishError::Call("not sent".into())))).collect()
    }
}

#[async_trait]
impl EventPublisher for EventBridgePublisher {
    async fn publish(&self, events: Vec<PipelineEvent>) -> Vec<Result<(), PublishError>> {
        let mut results = Vec::with_capacity(events.len());
        for chunk in events.chunks(MAX_ENTRIES) {
            results.extend(self.publish_chunk(chunk).await);
        }
        results
    }
}
