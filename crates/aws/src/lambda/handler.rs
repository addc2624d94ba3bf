//! The Lambda side of the batch runner: the records of a Kinesis batch
//! (or of an S3 notification sent straight to the function) decoded into
//! the stage's inputs, handed to [`crate::runner`], and the batch response:
//! the sequence numbers of the records to deliver again. Also the
//! invocation's deadline, and per-batch metrics.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use thiserror::Error;
use tracing::warn;

use crate::config::{ConfigError, Env};
use crate::events::{ANALYSIS_COMPLETE, AnalysisComplete, IMAGE_PROCESSED, ImageProcessed, ObjectRef, Upload};
use crate::keys::{ImageKey, decode_notification_key};
use crate::runner::{self, Entry, Settled, Unreadable};
use crate::stage::{BatchContext, FailureLog, Stage, StageInput, Subject};

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
    #[serde(default)]
    sequencer: Option<String>,
}

#[derive(serde::Deserialize)]
struct S3Bucket {
    name: String,
}

#[derive(serde::Deserialize)]
struct ObjectDetail {
    bucket: S3Bucket,
    object: S3Object,
}

/// The objects of an S3 notification (`{"Records": [...]}`) that were
/// created or removed; their keys arrive URL-encoded.
fn from_notification(records: &[Value]) -> Result<Vec<ObjectRef>, String> {
    let mut objects = Vec::new();
    for record in records {
        let name = record.get("eventName").and_then(Value::as_str).unwrap_or("ObjectCreated:Put");
        let deleted = name.starts_with("ObjectRemoved");
        if !name.starts_with("ObjectCreated") && !deleted {
            continue;
        }
        let s3 = record.get("s3").ok_or("an S3 notification record without s3")?;
        let bucket = S3Bucket::deserialize(&s3["bucket"]).map_err(|e| format!("bucket: {e}"))?;
        let object = S3Object::deserialize(&s3["object"]).map_err(|e| format!("object: {e}"))?;
        let key = decode_notification_key(&object.key).map_err(|e| e.to_string())?;
        objects.push(ObjectRef {
            bucket: bucket.name,
            key,
            etag: object.etag,
            size: object.size,
            reprocess: false,
            deleted,
            sequencer: object.sequencer,
        });
    }
    Ok(objects)
}

impl RecordInput for Upload {
    /// An EventBridge "Object Created" or "Object Deleted" event (as the
    /// rule forwards it; its key is not URL-encoded), or a plain S3
    /// notification.
    fn from_record(data: &[u8]) -> Result<Vec<Self>, String> {
        let event = json_of(data)?;
        if let Some(records) = event.get("Records").and_then(Value::as_array) {
            return Ok(from_notification(records)?.into_iter().map(Upload::from).collect());
        }
        let deleted = event.get("detail-type").and_then(Value::as_str) == Some("Object Deleted");
        let d: ObjectDetail = detail(&event, if deleted { "Object Deleted" } else { "Object Created" })?;
        let object = ObjectRef {
            bucket: d.bucket.name,
            key: d.object.key,
            etag: d.object.etag,
            size: d.object.size,
            reprocess: false,
            deleted,
            sequencer: d.object.sequencer,
        };
        Ok(vec![object.into()])
    }
}

impl RecordInput for ImageProcessed {
    /// The event's detail; without a `thumbnail_key` (as in the seed's test
    /// event), the key the seed's rule gives the original's thumbnail.
    fn from_record(data: &[u8]) -> Result<Vec<Self>, String> {
        let mut event: ImageProcessed = detail(&json_of(data)?, IMAGE_PROCESSED)?;
        if event.thumbnail_key.is_empty() {
            let key = ImageKey::parse(&event.original_key).map_err(|e| format!("no thumbnail_key, and {e}"))?;
            event.thumbnail_key = key.thumbnail_key();
        }
        Ok(vec![event])
    }
}

impl RecordInput for AnalysisComplete {
    fn from_record(data: &[u8]) -> Result<Vec<Self>, String> {
        Ok(vec![detail(&json_of(data)?, ANALYSIS_COMPLETE)?])
    }
}

/// What can still be told of a record that does not read as the stage's
/// input: the user, item and key its detail names, when it names them.
fn recover_subject(data: &[u8]) -> Subject {
    let Ok(event) = serde_json::from_slice::<Value>(data) else { return Subject::default() };
    let detail = event.get("detail").unwrap_or(&Value::Null);
    let text = |pointer: &str| detail.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
    if let Some(key) = text("/object/key").or_else(|| text("/original_key"))
        && let Ok(parsed) = ImageKey::parse(&key)
    {
        return Subject {
            key: Some(key),
            user_id: Some(parsed.user_id().to_owned()),
            item_id: Some(parsed.item_uuid()),
        };
    }
    let user_id = text("/user_id");
    let item_id = text("/item_uuid").and_then(|id| id.parse().ok());
    Subject { key: text("/original_key"), user_id, item_id }
}

/// Most time kept back from an invocation's deadline to store the batch's
/// results and publish its events after the provider calls stop.
const RESERVE: Duration = Duration::from_secs(10);

/// Lambda's longest invocation; a deadline further away is not believed.
const LONGEST_INVOCATION: Duration = Duration::from_secs(15 * 60 + 60);

/// The batch context of an invocation: its request id as the trace id, and
/// a deadline `RESERVE` (at most a quarter of the time left) before
/// Lambda's. A deadline already past, or beyond Lambda's longest
/// invocation (as emulators send), is not believed: the function's
/// `timeout` from now stands in for it.
pub fn batch_context(invocation: &lambda_runtime::Context, timeout: Duration) -> BatchContext {
    let ends = UNIX_EPOCH + Duration::from_millis(invocation.deadline);
    let left = match ends.duration_since(SystemTime::now()) {
        Ok(left) if !left.is_zero() && left <= LONGEST_INVOCATION => left,
        _ => {
            warn!(
                deadline_ms = invocation.deadline,
                timeout_secs = timeout.as_secs(),
                "the runtime's deadline is past or too far away; counting the function's timeout from now"
            );
            timeout
        }
    };
    let deadline = Instant::now() + left.saturating_sub(RESERVE.min(left / 4));
    BatchContext { trace_id: Some(invocation.request_id.clone()), deadline: Some(deadline) }
}

/// `FUNCTION_TIMEOUT_SECS`: the function's configured timeout, seconds
/// (set by the CDK app; default: the seed's timeout of the stage).
pub fn function_timeout(env: &Env, stage: crate::stage::StageName) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(env.parse_at_least("FUNCTION_TIMEOUT_SECS", stage.seed_timeout().as_secs(), 1)?))
}

/// A stage's Lambda handler: batches in, the batch runner, responses out.
pub struct Handler<'a, S> {
    stage: &'a S,
    failures: &'a dyn FailureLog,
    timeout: Duration,
}

impl<'a, S: Stage> Handler<'a, S>
where
    S::Input: RecordInput,
{
    /// A handler running `stage`, recording failures in `failures`, for a
    /// function whose timeout is `timeout`.
    pub fn new(stage: &'a S, failures: &'a dyn FailureLog, timeout: Duration) -> Self {
        Self { stage, failures, timeout }
    }

    /// Runs a Kinesis batch: reports the sequence numbers of the records to
    /// deliver again. A record whose failure is permanent and recorded (on
    /// its item's row, or in `record_failures`) is not reported.
    pub async fn run_kinesis(
        &self,
        event: &KinesisEvent,
        invocation: &lambda_runtime::Context,
    ) -> Result<KinesisEventResponse, BatchError> {
        let mut entries = Vec::new();
        let mut owner = Vec::new();
        let mut sequence_numbers = Vec::with_capacity(event.records.len());
        for (position, record) in event.records.iter().enumerate() {
            let seq = record.kinesis.sequence_number.trim();
            if seq.is_empty() {
                return Err(BatchError::NoSequenceNumber { position });
            }
            sequence_numbers.push(seq.to_owned());
            let data = &record.kinesis.data.0;
            match S::Input::from_record(data) {
                Ok(inputs) => {
                    owner.extend(std::iter::repeat_n(position, inputs.len()));
                    entries.extend(inputs.into_iter().map(|input| Entry::readable(seq, input)));
                }
                Err(reason) => {
                    owner.push(position);
                    let raw = String::from_utf8_lossy(data).into_owned();
                    let subject = recover_subject(data);
                    entries.push(Entry { source: seq.to_owned(), input: Err(Unreadable { reason, raw, subject }) });
                }
            }
        }
        let ran = runner::run(self.stage, self.failures, entries, &batch_context(invocation, self.timeout)).await;
        let mut again: Vec<usize> = ran
            .settled
            .iter()
            .zip(&owner)
            .filter(|((_, settled), _)| matches!(settled, Settled::Redeliver(_)))
            .map(|(_, &record)| record)
            .collect();
        again.dedup();
        let mut response = KinesisEventResponse::default();
        for &i in &again {
            response.add_failure(sequence_numbers[i].clone());
        }
        ran.metrics.emit();
        Ok(response)
    }

    /// Runs one event invoked straight on the function, not through a
    /// stream: the seed's console test events (an S3 notification with only
    /// bucket and key; an EventBridge-shaped `{"detail": …}`), or S3
    /// notifying the function directly. Failures that need another attempt
    /// make it an error, so Lambda's asynchronous retries run it again.
    pub async fn run_direct(&self, event: &Value, invocation: &lambda_runtime::Context) -> Result<Value, BatchError> {
        let data = serde_json::to_vec(event).unwrap_or_default();
        let inputs =
            S::Input::from_record(&data).map_err(|first| BatchError::ItemsFailed { failed: 1, total: 1, first })?;
        let total = inputs.len();
        let entries: Vec<Entry<S::Input>> =
            inputs.into_iter().map(|input| Entry::readable(invocation.request_id.clone(), input)).collect();
        let ran = runner::run(self.stage, self.failures, entries, &batch_context(invocation, self.timeout)).await;
        ran.metrics.emit();
        let again = ran.redelivered();
        match again.first() {
            Some(first) => Err(BatchError::ItemsFailed { failed: again.len(), total, first: (*first).to_owned() }),
            None => Ok(json!({
                "inputs": total,
                "done": ran.metrics.done,
                "skipped": ran.metrics.skipped,
                "failed": ran.metrics.failed
            })),
        }
    }

    /// The function's handler: a Kinesis batch (the stream trigger), or an
    /// event invoked straight on the function ([`Handler::run_direct`]).
    pub async fn invoke(&self, event: lambda_runtime::LambdaEvent<Value>) -> Result<Value, lambda_runtime::Error> {
        let (payload, context) = (event.payload, event.context);
        if payload.pointer("/Records/0/kinesis").is_some() {
            let batch: KinesisEvent = serde_json::from_value(payload)?;
            return Ok(serde_json::to_value(self.run_kinesis(&batch, &context).await?)?);
        }
        Ok(self.run_direct(&payload, &context).await?)
    }

    /// A Lambda handler for a stage fed by a Kinesis stream.
    pub async fn kinesis(
        &self,
        event: lambda_runtime::LambdaEvent<KinesisEvent>,
    ) -> Result<KinesisEventResponse, lambda_runtime::Error> {
        Ok(self.run_kinesis(&event.payload, &event.context).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds_until(context: &BatchContext) -> f64 {
        context.deadline.expect("a deadline").saturating_duration_since(Instant::now()).as_secs_f64()
    }

    #[test]
    fn the_deadline_keeps_time_back_for_storing() {
        let mut invocation = lambda_runtime::Context::default();
        invocation.request_id = "req-1".into();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        for (seconds_left, kept_back) in [(60, 10), (8, 2)] {
            invocation.deadline = now_ms + seconds_left * 1000;
            let context = batch_context(&invocation, Duration::from_secs(300));
            assert_eq!(context.trace_id.as_deref(), Some("req-1"));
            let until = seconds_until(&context);
            let expected = (seconds_left - kept_back) as f64;
            assert!((until - expected).abs() < 0.5, "{seconds_left} s left: deadline in {until} s");
        }
    }

    /// `cargo lambda watch` sends `lambda-runtime-deadline-ms: 600000`, a
    /// moment in 1970: the batch must not believe it has no time left.
    #[test]
    fn a_deadline_past_or_too_far_falls_back_to_the_function_timeout() {
        let mut headers = http::HeaderMap::new();
        headers.insert("lambda-runtime-aws-request-id", "req-watch".parse().unwrap());
        headers.insert("lambda-runtime-deadline-ms", "600000".parse().unwrap());
        let config = std::sync::Arc::new(lambda_runtime::Config::default());
        let invocation = lambda_runtime::Context::new("req-watch", config, &headers).expect("a context from headers");
        assert_eq!(invocation.deadline, 600_000);
        let until = seconds_until(&batch_context(&invocation, Duration::from_secs(60)));
        assert!((until - 50.0).abs() < 0.5, "60 s timeout less 10 s kept back: {until}");

        let mut far = invocation.clone();
        far.deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 + 3_600_000;
        let until = seconds_until(&batch_context(&far, Duration::from_secs(300)));
        assert!((until - 290.0).abs() < 0.5, "an hour away is not believed: {until}");

        let none = lambda_runtime::Context::default();
        assert!((seconds_until(&batch_context(&none, Duration::from_secs(60))) - 50.0).abs() < 0.5);
    }

    #[test]
    fn a_record_that_does_not_read_still_names_its_item_when_it_can() {
        let missing =
            br#"{"detail-type":"ImageProcessed","detail":{"item_id":"cat","user_id":"u","original_key":"u/cat.jpg"}}"#;
        assert!(ImageProcessed::from_record(missing).is_err());
        let subject = recover_subject(missing);
        assert_eq!(subject.key.as_deref(), Some("u/cat.jpg"));
        assert_eq!(subject.item_id, Some(crate::events::item_uuid("u/cat.jpg")));
        let id = crate::events::item_uuid("u/cat.jpg");
        let ids = format!(r#"{{"detail":{{"item_id":"cat","item_uuid":"{id}","user_id":"u"}}}}"#);
        assert_eq!(recover_subject(ids.as_bytes()).item_id, Some(id));
        assert_eq!(recover_subject(b"{oops"), Subject::default());
    }

    #[test]
    fn object_created_events_and_notifications_decode() {
        let eventbridge = br#"{"version":"0","detail-type":"Object Created","source":"aws.s3",
            "detail":{"bucket":{"name":"b"},"object":{"key":"u 1/my photo+x.JPG","size":3,"etag":"e1"}}}"#;
        let upload = Upload::from_record(eventbridge).unwrap().remove(0);
        assert_eq!(
            upload.object,
            ObjectRef {
                bucket: "b".into(),
                key: "u 1/my photo+x.JPG".into(),
                etag: Some("e1".into()),
                size: Some(3),
                ..ObjectRef::default()
            }
        );
        assert_eq!(upload.key.unwrap().item_id(), "my photo+x");
        let notification = br#"{"Records":[
            {"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"u/my+photo%21.jpg","eTag":"e2","size":9}}},
            {"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"b"},"object":{"key":"u/gone.jpg"}}}]}"#;
        let objects = Upload::from_record(notification).unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(
            (objects[0].object.key.as_str(), objects[0].object.etag.as_deref(), objects[0].object.deleted),
            ("u/my photo!.jpg", Some("e2"), false)
        );
        assert_eq!((objects[1].object.key.as_str(), objects[1].object.deleted), ("u/gone.jpg", true));
        let deleted = br#"{"version":"0","detail-type":"Object Deleted","source":"aws.s3",
            "detail":{"bucket":{"name":"b"},"object":{"key":"u/a.jpg","sequencer":"617F08299329D189"}}}"#;
        let upload = Upload::from_record(deleted).unwrap().remove(0);
        assert!(upload.object.deleted);
        assert_eq!(upload.object.sequencer.as_deref(), Some("617F08299329D189"));
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
        let objects = Upload::from_record(&uploads.records[0].kinesis.data.0).unwrap();
        let object = &objects[0].object;
        assert_eq!((object.bucket.as_str(), object.key.as_str()), ("collections-local", "demo/coffee.jpg"));
        let coffee = crate::events::item_uuid("demo/coffee.jpg");
        let processed = kinesis(include_str!("../../events/analyzer-kinesis.json"));
        let event = ImageProcessed::from_record(&processed.records[0].kinesis.data.0).unwrap().remove(0);
        assert_eq!(event.thumbnail_key, "demo/thumbnails/coffee.jpg");
        assert_eq!(event.item_uuid, Some(coffee));
        assert_eq!(processed.records[0].kinesis.partition_key, coffee.to_string());
        let analyzed = kinesis(include_str!("../../events/embedder-kinesis.json"));
        let event = AnalysisComplete::from_record(&analyzed.records[0].kinesis.data.0).unwrap().remove(0);
        assert_eq!((event.item_id.as_str(), event.item_uuid), ("coffee", Some(coffee)));
        let s3: S3Event = serde_json::from_str(include_str!("../../events/thumbnailer-s3.json")).unwrap();
        assert_eq!(s3.records.len(), 1);
    }

    /// The seed's console test events, verbatim, read as each stage's input.
    #[test]
    fn the_seeds_test_events_are_read_as_invoked_directly() {
        let uploads = Upload::from_record(include_bytes!("../../events/thumbnailer-seed.json")).unwrap();
        let object = &uploads[0].object;
        assert_eq!(
            (object.bucket.as_str(), object.key.as_str(), object.etag.as_deref()),
            ("test-bucket", "user123/item456.jpg", None)
        );
        let processed = ImageProcessed::from_record(include_bytes!("../../events/analyzer-seed.json")).unwrap();
        assert_eq!(processed[0].thumbnail_key, "user123/thumbnails/item456.jpg", "derived by the seed's rule");
        assert_eq!(processed[0].bucket, "test-bucket");
        let analyzed = AnalysisComplete::from_record(include_bytes!("../../events/embedder-seed.json")).unwrap();
        assert_eq!((analyzed[0].analysis_id.as_str(), analyzed[0].user_id.as_str()), ("analysis789", "user123"));
    }
}
