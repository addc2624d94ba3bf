//! The thumbnailer's Lambda handler: a Kinesis batch from the `uploads`
//! stream, or an S3 notification invoked straight on the function (S3
//! wired to it, or the seed's console test event), through the batch runner.

use lambda_runtime::{Error, LambdaEvent};
use serde_json::Value;
use shared::lambda::Handler;

use crate::Thumbnailer;

pub async fn handle(handler: &Handler<'_, Thumbnailer>, event: LambdaEvent<Value>) -> Result<Value, Error> {
    handler.invoke(event).await
}
