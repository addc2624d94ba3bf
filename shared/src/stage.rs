//! The one shape every stage has: a batch of inputs in, one [`Outcome`] per
//! input out, in order. The local pipeline and the Lambda handlers both drive
//! stages through [`Stage`].

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// What became of one input of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored, and the next stage's event published (or, last stage, finished).
    Done,
    /// Deliberately not processed (a thumbnail key, another file type), with why.
    Skipped(String),
    Failed(Failure),
}

impl Outcome {
    pub fn failed(reason: impl Into<String>, retriable: bool, recorded: bool) -> Self {
        Self::Failed(Failure { reason: reason.into(), retriable, recorded })
    }
}

/// Why an item failed, and what delivering it again could do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Says what failed and for which item.
    pub reason: String,
    /// A later attempt may succeed (timeouts, throttling, an unreachable service).
    pub retriable: bool,
    /// The failure is on the item's row, where `collections failures` lists it
    /// and `collections retry` re-runs it.
    pub recorded: bool,
}

impl Failure {
    /// Whether the stream must deliver the record again (Kinesis retries it,
    /// then sends it to the on-failure destination): retriable failures, and
    /// permanent ones that could not be recorded anywhere else.
    pub fn needs_redelivery(&self) -> bool {
        self.retriable || !self.recorded
    }
}

/// An input a stage can take from a stream record.
pub trait StageInput: DeserializeOwned + Send + Sync + std::fmt::Debug + 'static {
    /// The item this input is about, when it can be told.
    fn item_uuid(&self) -> Option<Uuid>;
    /// A short description for logs and failure lists (a key or an id).
    fn describe(&self) -> String;
    /// Whose item this is, when it can be told.
    fn user_id(&self) -> Option<String>;
}

/// What a batch runs within.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchContext {
    /// The Lambda request id (or X-Ray trace id) of this invocation; stored
    /// with what the batch writes, to find its logs.
    pub trace_id: Option<String>,
}

#[async_trait]
pub trait Stage: Send + Sync + 'static {
    type Input: StageInput;

    /// The stage's name in logs and metrics.
    fn name(&self) -> &'static str;

    /// Processes a batch; returns exactly one outcome per input, in order.
    async fn run_batch(&self, inputs: &[Self::Input], context: &BatchContext) -> Vec<Outcome>;
}

impl StageInput for crate::events::ObjectRef {
    fn item_uuid(&self) -> Option<Uuid> {
        crate::keys::ImageKey::parse(&self.key).ok().map(|k| k.item_uuid())
    }

    fn describe(&self) -> String {
        self.key.clone()
    }

    fn user_id(&self) -> Option<String> {
        crate::keys::ImageKey::parse(&self.key).ok().map(|k| k.user_id().to_owned())
    }
}

impl StageInput for crate::events::ImageProcessed {
    fn item_uuid(&self) -> Option<Uuid> {
        Some(crate::events::ImageProcessed::item_uuid(self))
    }

    fn describe(&self) -> String {
        self.original_key.clone()
    }

    fn user_id(&self) -> Option<String> {
        Some(self.user_id.clone())
    }
}

impl StageInput for crate::events::AnalysisComplete {
    fn item_uuid(&self) -> Option<Uuid> {
        Some(crate::events::AnalysisComplete::item_uuid(self))
    }

    fn describe(&self) -> String {
        format!("item {} of {}", self.item_id, self.user_id)
    }

    fn user_id(&self) -> Option<String> {
        Some(self.user_id.clone())
    }
}
