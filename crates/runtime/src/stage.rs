//! The one shape every stage has ([`Stage`]): a batch of inputs in, one
//! [`Outcome`] per input out, in order. The local pipeline and the Lambda
//! handlers both drive stages through it, by the batch runner.

use async_trait::async_trait;
use domain::events::{AnalysisComplete, ImageProcessed, Upload};
use domain::stage::StageName;
use domain::subject::Subject;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::batch::BatchContext;
use crate::outcome::Outcome;

/// An input a stage can take from a stream record.
pub trait StageInput: DeserializeOwned + Serialize + Send + Sync + std::fmt::Debug + 'static {
    /// Who and what this input is about.
    fn subject(&self) -> Subject;
}

impl StageInput for Upload {
    fn subject(&self) -> Subject {
        Upload::subject(self)
    }
}

impl StageInput for ImageProcessed {
    fn subject(&self) -> Subject {
        ImageProcessed::subject(self)
    }
}

impl StageInput for AnalysisComplete {
    fn subject(&self) -> Subject {
        AnalysisComplete::subject(self)
    }
}

#[async_trait]
pub trait Stage: Send + Sync + 'static {
    type Input: StageInput;

    fn name(&self) -> StageName;

    /// Processes a batch; returns exactly one outcome per input, in order.
    async fn run_batch(&self, inputs: &[Self::Input], context: &BatchContext) -> Vec<Outcome>;
}

/// A stage shared (the analyzer, by its batch driver and its queue's runner).
#[async_trait]
impl<S: Stage> Stage for std::sync::Arc<S> {
    type Input = S::Input;

    fn name(&self) -> StageName {
        S::name(self)
    }

    async fn run_batch(&self, inputs: &[Self::Input], context: &BatchContext) -> Vec<Outcome> {
        S::run_batch(self, inputs, context).await
    }
}
