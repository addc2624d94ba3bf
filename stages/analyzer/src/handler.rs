//! The analyzer's Lambda handler: a Kinesis batch from the `processed`
//! stream in, the stage's batch, the batch response out.

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use lambda_runtime::{Error, LambdaEvent};
use shared::lambda::run_kinesis;

use crate::Analyzer;

pub async fn handle(stage: &Analyzer, event: LambdaEvent<KinesisEvent>) -> Result<KinesisEventResponse, Error> {
    Ok(run_kinesis(stage, &event.payload, &event.context).await?)
}
