//! Reading each stage's inputs from what AWS delivers ([`Delivered`]): the
//! thumbnailer's objects from S3's "Object Created"/"Object Deleted" events
//! (as the EventBridge rule forwards them) or from an S3 notification, the
//! analyzer's `ImageProcessed` and the embedder's `AnalysisComplete` from
//! their events. A record that does not read fails with the reason, and
//! what can still be told of it.

use aws_lambda_events::event::s3::S3Event;
use domain::events::{ANALYSIS_COMPLETE, AnalysisComplete, IMAGE_PROCESSED, ImageProcessed, ObjectRef, Upload};
use domain::keys::{ImageKey, decode_notification_key};
use domain::subject::Subject;
use runtime::stage::StageInput;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::invocation::{Delivered, Event};

/// S3's detail-types on EventBridge.
const OBJECT_CREATED: &str = "Object Created";
const OBJECT_DELETED: &str = "Object Deleted";

/// A stage input as AWS delivers it.
pub trait EventInput: StageInput + Sized {
    /// The inputs an event carries.
    fn from_event(event: &Event) -> Result<Vec<Self>, String>;

    /// The inputs of an S3 notification: only the thumbnailer takes one.
    fn from_s3(_notification: &S3Event) -> Result<Vec<Self>, String> {
        Err("an S3 notification is not this stage's input".to_owned())
    }

    /// The inputs of a delivery, whatever its shape.
    fn from_delivered(delivered: &Delivered) -> Result<Vec<Self>, String> {
        match delivered {
            Delivered::S3(notification) => Self::from_s3(notification),
            Delivered::Event(event) => Self::from_event(event),
        }
    }

    /// The inputs a Kinesis record's data carries.
    fn from_record(data: &[u8]) -> Result<Vec<Self>, String> {
        Self::from_delivered(&Delivered::from_slice(data)?)
    }
}

/// The detail of an event of `detail_type` (an event without one, as the
/// seed's console test events are, is taken as that type).
fn detail<T: DeserializeOwned>(event: &Event, detail_type: &str) -> Result<T, String> {
    match event.detail_type.as_deref() {
        Some(found) if found != detail_type => Err(format!("detail-type {found:?}, expected {detail_type:?}")),
        _ => T::deserialize(&event.detail).map_err(|e| format!("the {detail_type} detail is invalid: {e}")),
    }
}

/// The detail of S3's events on EventBridge (`aws_lambda_events` has no
/// type for it): the bucket, and the object, its key not URL-encoded.
#[derive(Deserialize)]
struct ObjectDetail {
    bucket: BucketName,
    object: ObjectFields,
}

#[derive(Deserialize)]
struct BucketName {
    name: String,
}

#[derive(Deserialize)]
struct ObjectFields {
    key: String,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    sequencer: Option<String>,
}

impl EventInput for Upload {
    /// An EventBridge "Object Created" or "Object Deleted" event, as the
    /// rule forwards it.
    fn from_event(event: &Event) -> Result<Vec<Self>, String> {
        let deleted = event.detail_type.as_deref() == Some(OBJECT_DELETED);
        let d: ObjectDetail = detail(event, if deleted { OBJECT_DELETED } else { OBJECT_CREATED })?;
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

    /// The objects of a notification that were created or removed; their
    /// keys arrive URL-encoded. A record without an event name (the seed's
    /// console event) is a creation.
    fn from_s3(notification: &S3Event) -> Result<Vec<Self>, String> {
        let mut uploads = Vec::new();
        for record in &notification.records {
            let name = record.event_name.as_deref().unwrap_or("ObjectCreated:Put");
            let deleted = name.starts_with("ObjectRemoved");
            if !name.starts_with("ObjectCreated") && !deleted {
                continue;
            }
            let (bucket, object) = (&record.s3.bucket, &record.s3.object);
            let bucket = bucket.name.clone().ok_or("an S3 notification record without a bucket name")?;
            let key = object.key.as_deref().ok_or("an S3 notification record without an object key")?;
            let object = ObjectRef {
                bucket,
                key: decode_notification_key(key).map_err(|e| e.to_string())?,
                etag: object.e_tag.clone(),
                size: object.size.and_then(|s| u64::try_from(s).ok()),
                reprocess: false,
                deleted,
                sequencer: object.sequencer.clone(),
            };
            uploads.push(object.into());
        }
        Ok(uploads)
    }
}

impl EventInput for ImageProcessed {
    /// The event's detail; without a `thumbnail_key` (as in the seed's test
    /// event), the key the seed's rule gives the original's thumbnail.
    fn from_event(event: &Event) -> Result<Vec<Self>, String> {
        let mut processed: ImageProcessed = detail(event, IMAGE_PROCESSED)?;
        if processed.thumbnail_key.is_empty() {
            let key = ImageKey::parse(&processed.original_key).map_err(|e| format!("no thumbnail_key, and {e}"))?;
            processed.thumbnail_key = key.thumbnail_key();
        }
        Ok(vec![processed])
    }
}

impl EventInput for AnalysisComplete {
    fn from_event(event: &Event) -> Result<Vec<Self>, String> {
        Ok(vec![detail(event, ANALYSIS_COMPLETE)?])
    }
}

/// What can still be told of a record that does not read as the stage's
/// input: the user, item and key its detail claims, when it names them.
/// They go into the logs; the failure is the record's alone, written on no
/// item (the runner refuses an unreadable record's subject).
pub fn recover_subject(data: &[u8]) -> Subject {
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

#[cfg(test)]
mod tests {
    use aws_lambda_events::event::kinesis::KinesisEvent;

    use super::*;

    fn kinesis(text: &str) -> KinesisEvent {
        serde_json::from_str(text).expect("the fixture is a Kinesis event")
    }

    #[test]
    fn a_record_that_does_not_read_still_names_its_item_when_it_can() {
        let missing =
            br#"{"detail-type":"ImageProcessed","detail":{"item_id":"cat","user_id":"u","original_key":"u/cat.jpg"}}"#;
        assert!(ImageProcessed::from_record(missing).is_err());
        let subject = recover_subject(missing);
        assert_eq!(subject.key.as_deref(), Some("u/cat.jpg"));
        assert_eq!(subject.item_id, Some(domain::keys::item_uuid("u/cat.jpg")));
        let id = domain::keys::item_uuid("u/cat.jpg");
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

    #[test]
    fn the_event_fixtures_are_what_the_stages_read() {
        let uploads = kinesis(include_str!("../../../../events/thumbnailer-kinesis.json"));
        let objects = Upload::from_record(&uploads.records[0].kinesis.data.0).unwrap();
        let object = &objects[0].object;
        assert_eq!((object.bucket.as_str(), object.key.as_str()), ("collections-local", "demo/coffee.jpg"));
        let coffee = domain::keys::item_uuid("demo/coffee.jpg");
        let processed = kinesis(include_str!("../../../../events/analyzer-kinesis.json"));
        let event = ImageProcessed::from_record(&processed.records[0].kinesis.data.0).unwrap().remove(0);
        assert_eq!(event.thumbnail_key, "demo/thumbnails/coffee.jpg");
        assert_eq!(event.item_uuid, Some(coffee));
        assert_eq!(processed.records[0].kinesis.partition_key, coffee.to_string());
        let analyzed = kinesis(include_str!("../../../../events/embedder-kinesis.json"));
        let event = AnalysisComplete::from_record(&analyzed.records[0].kinesis.data.0).unwrap().remove(0);
        assert_eq!((event.item_id.as_str(), event.item_uuid), ("coffee", Some(coffee)));
        let s3: S3Event = serde_json::from_str(include_str!("../../../../events/thumbnailer-s3.json")).unwrap();
        assert_eq!(s3.records.len(), 1);
    }

    /// The seed's console test events, verbatim, read as each stage's input.
    #[test]
    fn the_seeds_test_events_are_read_as_invoked_directly() {
        let uploads = Upload::from_record(include_bytes!("../../../../events/thumbnailer-seed.json")).unwrap();
        let object = &uploads[0].object;
        assert_eq!(
            (object.bucket.as_str(), object.key.as_str(), object.etag.as_deref()),
            ("test-bucket", "user123/item456.jpg", None)
        );
        let processed = ImageProcessed::from_record(include_bytes!("../../../../events/analyzer-seed.json")).unwrap();
        assert_eq!(processed[0].thumbnail_key, "user123/thumbnails/item456.jpg", "derived by the seed's rule");
        assert_eq!(processed[0].bucket, "test-bucket");
        let analyzed = AnalysisComplete::from_record(include_bytes!("../../../../events/embedder-seed.json")).unwrap();
        assert_eq!((analyzed[0].analysis_id.as_str(), analyzed[0].user_id.as_str()), ("analysis789", "user123"));
    }
}
