//! The batch runner every stage's Lambda shares: the records of a Kinesis
//! batch (or of an S3 notification) decoded into the stage's inputs, one
//! batch of stage work, one span per record, per-batch metrics, and the
//! sequence numbers of the records that must be delivered again.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::streams::KinesisEventResponse;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use thiserror::Error;
use tracing::{debug, info, info_span, warn};

use crate::events::{ANALYSIS_COMPLETE, AnalysisComplete, IMAGE_PROCESSED, ImageProcessed, ObjectRef};
use crate::keys::decode_notification_key;
use crate::stage::{BatchContext, Outcome, Stage, StageInput};
use crate::telemetry::BatchMetrics;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BatchError {
    /// Without it the record cannot be reported; the whole batch is retried.
    #[error("record {position} of the batch has no sequence number")]
    NoSequenceNumber { position: usize },
    #[error("{failed} of {total} objects failed and will be retried; first: {first}")]
    ItemsFailed { failed: usize, total: usize, first: String },
}

/// A stage input that can be read from a stream record's data.
pub trait RecordInput: StageInput + Sized {
    /// The inputs a record carries (an S3 notification may carry several);
    /// an unreadable record is an error with the reason.
    fn from_record(data: &[u8]) -> Result<Vec<Self>, String>;
}

fn json_of(data: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(data).map_err(|e| format!("the record is not JSON: {e}"))
}

/// The `detail` of an EventBridge event of `detail_type`.
fn detail<T: DeserializeOwned>(event: &Value, detail_type: &str) -> Result<T, String> {
    match event.get("detail-type").and_then(Value::as_str) {
        Some(found) if found != detail_type => return Err(format!("detail-type {found:?}, expected {detail_type:?}")),
        _ => {}
    }
    let detail = event.get("detail").ok_or_else(|| format!("no detail in the {detail_type} event"))?;
    T::deserialize(detail).map_err(|e| format!("the {detail_type} detail is invalid: {e}"))
}

/// The part of S3's object description we use, in EventBridge's spelling
/// (`etag`) or the notification's (`eTag`).
#[derive(serde::Deserialize)]
struct S3Object {
    key: String,
    #[serde(default, alias = "eTag")]
    etag: Option<String>,
    #[serde(default)]
    size: Option<u64>,
}

#[derive(serde::Deserialize)]
struct S3Bucket {
    name: String,
}

#[derive(serde::Deserialize)]
struct ObjectCreatedDetail {
    bucket: S3Bucket,
    object: S3Object,
}

/// The objects of an S3 notification (`{"Records": [...]}`) that were
/// created; their keys arrive URL-encoded.
fn from_notification(records: &[Value]) -> Result<Vec<ObjectRef>, String> {
    let mut objects = Vec::new();
    for record in records {
        let name = record.get("eventName").and_then(Value::as_str).unwrap_or("ObjectCreated:Put");
        if !name.starts_with("ObjectCreated") {
            continue;
        }
        let s3 = record.get("s3").ok_or("an S3 notification record without s3")?;
        let bucket = S3Bucket::deserialize(&s3["bucket"]).map_err(|e| format!("bucket: {e}"))?;
        let object = S3Object::deserialize(&s3["object"]).map_err(|e| format!("object: {e}"))?;
        let key = decode_notification_key(&object.key).map_err(|e| e.to_string())?;
        objects.push(ObjectRef { bucket: bucket.name, key, etag: object.etag, size: object.size });
    }
    Ok(objects)
}

impl RecordInput for ObjectRef {
    /// An EventBridge "Object Created" event (as the rule forwards it; its
    /// key is not URL-encoded), or a plain S3 notification.
    fn from_record(data: &[u8]) -> Result<Vec<Self>, String> {
        let event = json_of(data)?;
        if let Some(records) = event.get("Records").and_then(Value::as_array) {
            return from_notification(records);
        }
        let d: ObjectCreatedDetail = detail(&event, "Object Created")?;
        Ok(vec![ObjectRef { bucket: d.bucket.name, key: d.object.key, etag: d.object.etag, size: d.object.size }])
    }
}

impl RecordInput for ImageProcessed {
    fn from_record(data: &[u8]) -> Result<Vec<Self>, String> {
        Ok(vec![detail(&json_of(data)?, IMAGE_PROCESSED)?])
    }
}

impl RecordInput for AnalysisComplete {
    fn from_record(data: &[u8]) -> Result<Vec<Self>, String> {
        Ok(vec![detail(&json_of(data)?, ANALYSIS_COMPLETE)?])
    }
}

/// What became of a batch's inputs, before they are mapped to records.
struct Ran {
    succeeded: usize,
    failures: Vec<(usize, String)>,
}

/// Most time kept back from an invocation's deadline to store the batch's
/// results and publish its events after the provider calls stop.
const RESERVE: Duration = Duration::from_secs(10);

/// The batch context of an invocation: its request id as the trace id, and
/// a deadline `RESERVE` (at most a quarter of the time left) before
/// Lambda's. No deadline when the invocation has none (`deadline` 0).
pub fn batch_context(invocation: &lambda_runtime::Context) -> BatchContext {
    let deadline = (invocation.deadline > 0).then(|| {
        let ends = UNIX_EPOCH + Duration::from_millis(invocation.deadline);
        let left = ends.duration_since(SystemTime::now()).unwrap_or_default();
        Instant::now() + left.saturating_sub(RESERVE.min(left / 4))
    });
    BatchContext { trace_id: Some(invocation.request_id.clone()), deadline }
}

/// Runs the stage on inputs; logs each outcome in a span of its record;
/// returns which records (by `owner` index) need redelivery.
async fn run<S: Stage>(
    stage: &S,
    inputs: &[S::Input],
    owner: &[usize],
    labels: &[String],
    context: &BatchContext,
) -> Ran {
    let outcomes = if inputs.is_empty() { Vec::new() } else { stage.run_batch(inputs, context).await };
    let mut ran = Ran { succeeded: 0, failures: Vec::new() };
    for ((input, outcome), &record) in inputs.iter().zip(outcomes).zip(owner) {
        let span = info_span!(
            "record",
            record = %labels[record],
            key = %input.describe(),
            item_id = input.item_uuid().map(|u| u.to_string()).unwrap_or_default(),
            user_id = input.user_id().unwrap_or_default(),
        );
        let _entered = span.enter();
        match outcome {
            Outcome::Done => {
                ran.succeeded += 1;
                debug!("done");
            }
            Outcome::Skipped(reason) => {
                ran.succeeded += 1;
                info!(%reason, "skipped");
            }
            Outcome::Failed(f) => {
                warn!(reason = %f.reason, retriable = f.retriable, recorded = f.recorded, "item failed");
                if f.needs_redelivery() {
                    ran.failures.push((record, f.reason));
                }
            }
        }
    }
    ran
}

/// Runs a Kinesis batch: reports the sequence numbers of records that
/// could not be read or whose items must be delivered again. Items whose
/// failure is recorded on their row (and retrying would not help) are not
/// reported: `collections failures` lists them.
pub async fn run_kinesis<S>(
    stage: &S,
    event: &KinesisEvent,
    invocation: &lambda_runtime::Context,
) -> Result<KinesisEventResponse, BatchError>
where
    S: Stage,
    S::Input: RecordInput,
{
    let start = Instant::now();
    let calls = crate::api::api_calls();
    let sequence_numbers: Vec<String> = event
        .records
        .iter()
        .enumerate()
        .map(|(position, r)| {
            let seq = r.kinesis.sequence_number.trim();
            if seq.is_empty() { Err(BatchError::NoSequenceNumber { position }) } else { Ok(seq.to_owned()) }
        })
        .collect::<Result<_, _>>()?;
    let (mut inputs, mut owner, mut unreadable) = (Vec::new(), Vec::new(), Vec::new());
    for (i, record) in event.records.iter().enumerate() {
        match S::Input::from_record(&record.kinesis.data.0) {
            Ok(items) => {
                owner.extend(std::iter::repeat_n(i, items.len()));
                inputs.extend(items);
            }
            Err(reason) => {
                warn!(sequence_number = %sequence_numbers[i], %reason, "unreadable record");
                unreadable.push(i);
            }
        }
    }
    let ran = run(stage, &inputs, &owner, &sequence_numbers, &batch_context(invocation)).await;

    let mut failed: Vec<usize> = unreadable.into_iter().chain(ran.failures.iter().map(|(r, _)| *r)).collect();
    failed.sort_unstable();
    failed.dedup();
    let mut response = KinesisEventResponse::default();
    for &i in &failed {
        response.add_failure(sequence_numbers[i].clone());
    }
    BatchMetrics {
        stage: stage.name(),
        records_in: event.records.len(),
        succeeded: event.records.len() - failed.len(),
        failed: failed.len(),
        duration_ms: start.elapsed().as_millis() as u64,
        api_calls: crate::api::api_calls() - calls,
    }
    .emit();
    Ok(response)
}

/// A Lambda handler for a stage fed by a Kinesis stream: the batch in, the
/// batch response out.
pub async fn handle_kinesis<S>(
    stage: &S,
    event: lambda_runtime::LambdaEvent<KinesisEvent>,
) -> Result<KinesisEventResponse, lambda_runtime::Error>
where
    S: Stage,
    S::Input: RecordInput,
{
    Ok(run_kinesis(stage, &event.payload, &event.context).await?)
}

/// Runs the objects of an S3 notification delivered straight to the
/// function. Failures that need another attempt make it an error, so
/// Lambda's asynchronous retries run it again.
pub async fn run_s3_event<S>(
    stage: &S,
    event: &S3Event,
    invocation: &lambda_runtime::Context,
) -> Result<Value, BatchError>
where
    S: Stage<Input = ObjectRef>,
{
    let start = Instant::now();
    let records: Vec<Value> = event.records.iter().map(|r| serde_json::to_value(r).unwrap_or(Value::Null)).collect();
    let objects = from_notification(&records).map_err(|first| BatchError::ItemsFailed {
        failed: records.len(),
        total: records.len(),
        first,
    })?;
    let labels: Vec<String> = objects.iter().map(|o| o.key.clone()).collect();
    let owner: Vec<usize> = (0..objects.len()).collect();
    let ran = run(stage, &objects, &owner, &labels, &batch_context(invocation)).await;
    BatchMetrics {
        stage: stage.name(),
        records_in: objects.len(),
        succeeded: ran.succeeded,
        failed: objects.len() - ran.succeeded,
        duration_ms: start.elapsed().as_millis() as u64,
        api_calls: 0,
    }
    .emit();
    match ran.failures.first() {
        Some((_, first)) => {
            Err(BatchError::ItemsFailed { failed: ran.failures.len(), total: objects.len(), first: first.clone() })
        }
        None => Ok(json!({"objects": objects.len(), "succeeded": ran.succeeded})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_keeps_time_back_for_storing() {
        let mut invocation = lambda_runtime::Context::default();
        invocation.request_id = "req-1".into();
        let context = batch_context(&invocation);
        assert_eq!((context.trace_id.as_deref(), context.deadline), (Some("req-1"), None), "no deadline given");

        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        for (seconds_left, kept_back) in [(60, 10), (8, 2)] {
            invocation.deadline = now_ms + seconds_left * 1000;
            let deadline = batch_context(&invocation).deadline.expect("a deadline");
            let until = deadline.saturating_duration_since(Instant::now()).as_secs_f64();
            let expected = (seconds_left - kept_back) as f64;
            assert!((until - expected).abs() < 0.5, "{seconds_left} s left: deadline in {until} s");
        }
    }

    #[test]
    fn object_created_events_and_notifications_decode() {
        let eventbridge = br#"{"version":"0","detail-type":"Object Created","source":"aws.s3",
            "detail":{"bucket":{"name":"b"},"object":{"key":"u 1/my photo+x.JPG","size":3,"etag":"e1"}}}"#;
        assert_eq!(
            ObjectRef::from_record(eventbridge).unwrap(),
            vec![ObjectRef {
                bucket: "b".into(),
                key: "u 1/my photo+x.JPG".into(),
                etag: Some("e1".into()),
                size: Some(3)
            }]
        );
        let notification = br#"{"Records":[
            {"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"u/my+photo%21.jpg","eTag":"e2","size":9}}},
            {"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"b"},"object":{"key":"u/gone.jpg"}}}]}"#;
        let objects = ObjectRef::from_record(notification).unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!((objects[0].key.as_str(), objects[0].etag.as_deref()), ("u/my photo!.jpg", Some("e2")));
    }

    #[test]
    fn unreadable_records_say_why() {
        assert!(ImageProcessed::from_record(b"{oops").unwrap_err().starts_with("the record is not JSON"));
        let wrong = br#"{"detail-type":"AnalysisComplete","detail":{}}"#;
        assert_eq!(
            ImageProcessed::from_record(wrong).unwrap_err(),
            "detail-type \"AnalysisComplete\", expected \"ImageProcessed\""
        );
        let missing = br#"{"detail-type":"ImageProcessed","detail":{"item_id":"i"}}"#;
        assert!(ImageProcessed::from_record(missing).unwrap_err().contains("missing field"));
        let seed = br#"{"detail":{"item_id":"item456","analysis_id":"analysis789","user_id":"user123"}}"#;
        assert_eq!(AnalysisComplete::from_record(seed).unwrap()[0].analysis_id, "analysis789");
    }
}

#[cfg(test)]
mod fixture_tests {
    use aws_lambda_events::event::kinesis::KinesisEvent;
    use aws_lambda_events::event::s3::S3Event;

    use super::*;

    fn kinesis(text: &str) -> KinesisEvent {
        serde_json::from_str(text).expect("the fixture is a Kinesis event")
    }

    #[test]
    fn the_event_fixtures_are_what_the_stages_read() {
        let uploads = kinesis(include_str!("../../events/thumbnailer-kinesis.json"));
        let objects = ObjectRef::from_record(&uploads.records[0].kinesis.data.0).unwrap();
        assert_eq!((objects[0].bucket.as_str(), objects[0].key.as_str()), ("collections-local", "demo/coffee.jpg"));
        let processed = kinesis(include_str!("../../events/analyzer-kinesis.json"));
        assert_eq!(
            ImageProcessed::from_record(&processed.records[0].kinesis.data.0).unwrap()[0].thumbnail_key,
            "demo/thumbnails/coffee.jpg"
        );
        let analyzed = kinesis(include_str!("../../events/embedder-kinesis.json"));
        assert_eq!(AnalysisComplete::from_record(&analyzed.records[0].kinesis.data.0).unwrap()[0].item_id, "coffee");
        let s3: S3Event = serde_json::from_str(include_str!("../../events/thumbnailer-s3.json")).unwrap();
        assert_eq!(s3.records.len(), 1);
    }
}
