//! The event bus port (EventBridge on AWS) and its local adapter: in-process
//! channels, one per detail type, as the rules route events to streams.

use std::collections::HashMap;

use async_trait::async_trait;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::events::PipelineEvent;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PublishError {
    #[error("no route for {detail_type} events")]
    NoRoute { detail_type: &'static str },
    #[error("the {detail_type} queue is closed")]
    Closed { detail_type: &'static str },
    #[error("event bus rejected the event: {code}: {message}")]
    Rejected { code: String, message: String },
    #[error("event bus call failed: {0}")]
    Call(String),
}

/// Publishes the events a stage emits. One result per event, in order: a
/// failed entry fails only its own item.
#[async_trait]
pub trait EventPublisher: Send + Sync {
    async fn publish(&self, events: Vec<PipelineEvent>) -> Vec<Result<(), PublishError>>;
}

/// Routes each event to the channel of its detail type. Channels are bounded,
/// so a slow stage holds back the one before it instead of growing a queue.
#[derive(Debug, Clone, Default)]
pub struct LocalBus {
    routes: HashMap<&'static str, mpsc::Sender<PipelineEvent>>,
}

impl LocalBus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn route(mut self, detail_type: &'static str, to: mpsc::Sender<PipelineEvent>) -> Self {
        self.routes.insert(detail_type, to);
        self
    }
}

#[async_trait]
impl EventPublisher for LocalBus {
    async fn publish(&self, events: Vec<PipelineEvent>) -> Vec<Result<(), PublishError>> {
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            let detail_type = event.detail_type();
            let result = match self.routes.get(detail_type) {
                None => Err(PublishError::NoRoute { detail_type }),
                Some(tx) => tx.send(event).await.map_err(|_| PublishError::Closed { detail_type }),
            };
            results.push(result);
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ANALYSIS_COMPLETE, AnalysisComplete};

    fn complete(n: u32) -> PipelineEvent {
        PipelineEvent::AnalysisComplete(AnalysisComplete {
            item_id: format!("i{n}"),
            analysis_id: format!("a{n}"),
            user_id: "u".into(),
        })
    }

    #[tokio::test]
    async fn routes_by_detail_type_and_reports_each_entry() {
        let (tx, mut rx) = mpsc::channel(4);
        let bus = LocalBus::new().route(ANALYSIS_COMPLETE, tx);
        let results = bus.publish(vec![complete(1), complete(2)]).await;
        assert_eq!(results, vec![Ok(()), Ok(())]);
        assert_eq!(rx.recv().await.unwrap().item_id(), "i1");
        assert_eq!(rx.recv().await.unwrap().item_id(), "i2");

        let unrouted = LocalBus::new().publish(vec![complete(3)]).await;
        assert_eq!(unrouted, vec![Err(PublishError::NoRoute { detail_type: "AnalysisComplete" })]);
        drop(rx);
        assert!(matches!(bus.publish(vec![complete(4)]).await[0], Err(PublishError::Closed { .. })));
    }
}
