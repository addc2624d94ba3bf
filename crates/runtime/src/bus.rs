//! The event bus port (EventBridge on AWS) and its local adapter: in-process
//! channels, one per detail type, as the rules route events to streams.

use std::collections::HashMap;

use async_trait::async_trait;
use thiserror::Error;
use tokio::sync::mpsc;

use domain::events::PipelineEvent;

use crate::outcome::{Failure, Outcome};

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

/// Publishes the events of items that are done (`(outcome index, event)`
/// pairs); an item whose event could not be published fails, retriably:
/// nothing downstream will see it otherwise.
pub async fn publish_for(
    publisher: &dyn EventPublisher,
    outcomes: &mut [Outcome],
    events: Vec<(usize, PipelineEvent)>,
) {
    let (indices, events): (Vec<usize>, Vec<PipelineEvent>) = events.into_iter().unzip();
    let names: Vec<&'static str> = events.iter().map(PipelineEvent::detail_type).collect();
    let results = publisher.publish(events).await;
    for ((index, name), result) in indices.into_iter().zip(names).zip(results) {
        if let Err(e) = result {
            outcomes[index] = Failure::transient(format!("publishing {name} failed: {e}")).into();
        }
    }
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
    use domain::events::{ANALYSIS_COMPLETE, AnalysisComplete};

    fn complete(n: u32) -> PipelineEvent {
        PipelineEvent::AnalysisComplete(AnalysisComplete {
            item_id: format!("i{n}"),
            item_uuid: None,
            analysis_id: format!("a{n}"),
            user_id: "u".into(),
            reembed_model: None,
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

    #[tokio::test]
    async fn an_item_whose_event_is_not_published_fails_for_redelivery() {
        let mut outcomes = vec![Outcome::Done, Outcome::Skipped("x".into()), Outcome::Done];
        publish_for(&LocalBus::new(), &mut outcomes, vec![(2, complete(5))]).await;
        assert_eq!(outcomes[..2], [Outcome::Done, Outcome::Skipped("x".into())]);
        match &outcomes[2] {
            Outcome::Failed(f) => {
                assert_eq!(f.reason, "publishing AnalysisComplete failed: no route for AnalysisComplete events");
                assert!(f.is_retriable());
            }
            other => panic!("{other:?}"),
        }
    }
}
