//! The thumbnailer's Lambda handler: a Kinesis batch from the `uploads`
//! stream (or a plain S3 notification, for buckets wired straight to the
//! function) in, the batch runner, the batch response out.

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::s3::S3Event;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::Value;
use shared::lambda::Handler;

use crate::Thumbnailer;

pub async fn handle(handler: &Handler<'_, Thumbnailer>, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let source = event.payload.pointer("/Records/0/eventSource").and_then(Value::as_str).unwrap_or_default();
    if source == "aws:s3" {
        let s3: S3Event = serde_json::from_value(event.payload)?;
        return Ok(handler.run_s3_event(&s3, &event.context).await?);
    }
    let kinesis: KinesisEvent = serde_json::from_value(event.payload)?;
    Ok(serde_json::to_value(handler.run_kinesis(&kinesis, &event.context).await?)?)
}
