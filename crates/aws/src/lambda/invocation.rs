//! What a Lambda function is invoked with, typed: a Kinesis batch (the
//! stream trigger), an S3 notification (S3 wired to the function), or an
//! EventBridge-shaped event sent straight to it (a rule's target, or the
//! seed's console test events, which carry only a `detail`). The data of a
//! Kinesis record is itself an S3 notification or an EventBridge event, and
//! is read the same way ([`Delivered`]).

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::s3::S3Event;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

/// One invocation's payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// A batch from a stream trigger.
    Kinesis(KinesisEvent),
    /// Anything else: an S3 notification or an event, invoked directly.
    Direct(Delivered),
}

/// What one delivery carries, when it is not a Kinesis batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivered {
    /// An S3 event notification (`{"Records": [{"s3": …}]}`).
    S3(S3Event),
    /// An event in EventBridge's envelope.
    Event(Event),
}

/// An EventBridge event, as much of it as the stages read. `aws_lambda_events`'
/// `EventBridgeEvent` requires `detail-type` and `source`, which the seed's
/// console test events (`{"detail": {…}}`) do not have.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Event {
    #[serde(rename = "detail-type", default)]
    pub detail_type: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    pub detail: Value,
}

impl Delivered {
    /// Reads a delivery from JSON text (a Kinesis record's data); the error
    /// says why it cannot be read.
    pub fn from_slice(data: &[u8]) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(data).map_err(|e| format!("the record is not JSON: {e}"))?;
        Self::from_value(value)
    }

    fn from_value(mut value: Value) -> Result<Self, String> {
        if let Some(records) = value.get_mut("Records").and_then(Value::as_array_mut) {
            records.iter_mut().for_each(complete_seed_record);
            return serde_json::from_value(value)
                .map(Self::S3)
                .map_err(|e| format!("the S3 notification is invalid: {e}"));
        }
        if value.get("detail").is_some() {
            return serde_json::from_value(value).map(Self::Event).map_err(|e| format!("the event is invalid: {e}"));
        }
        Err("neither an S3 notification (Records) nor an EventBridge event (detail)".to_owned())
    }
}

/// The seed's console test event is an S3 notification of only a bucket
/// and a key; S3 itself always sends the time, identity and request
/// fields, which `S3Event` requires. Those it lacks are filled in blank.
fn complete_seed_record(record: &mut Value) {
    let Some(fields) = record.as_object_mut() else { return };
    let blanks =
        [("eventTime", json!("1970-01-01T00:00:00Z")), ("userIdentity", json!({})), ("requestParameters", json!({}))];
    for (name, blank) in blanks {
        fields.entry(name).or_insert(blank);
    }
}

impl<'de> Deserialize<'de> for Invocation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let kinesis = value.pointer("/Records/0/kinesis").is_some();
        if kinesis {
            return serde_json::from_value(value).map(Self::Kinesis).map_err(D::Error::custom);
        }
        Delivered::from_value(value).map(Self::Direct).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation(text: &str) -> Invocation {
        serde_json::from_str(text).expect("an invocation")
    }

    #[test]
    fn each_fixture_is_the_invocation_it_looks_like() {
        let Invocation::Kinesis(batch) = invocation(include_str!("../../../../events/thumbnailer-kinesis.json")) else {
            panic!("a Kinesis batch")
        };
        assert_eq!(batch.records.len(), 1);
        let Invocation::Direct(Delivered::S3(s3)) = invocation(include_str!("../../../../events/thumbnailer-s3.json"))
        else {
            panic!("an S3 notification")
        };
        assert_eq!(s3.records[0].s3.object.key.as_deref(), Some("demo/coffee.jpg"));
        let Invocation::Direct(Delivered::S3(seed)) =
            invocation(include_str!("../../../../events/thumbnailer-seed.json"))
        else {
            panic!("the seed's notification")
        };
        assert_eq!(seed.records[0].s3.bucket.name.as_deref(), Some("test-bucket"));
        for seed in [
            include_str!("../../../../events/analyzer-seed.json"),
            include_str!("../../../../events/embedder-seed.json"),
        ] {
            let Invocation::Direct(Delivered::Event(event)) = invocation(seed) else { panic!("an event") };
            assert_eq!((event.detail_type, event.detail["user_id"].as_str()), (None, Some("user123")));
        }
    }

    #[test]
    fn a_payload_of_another_shape_is_refused_with_why() {
        let err = serde_json::from_str::<Invocation>(r#"{"hello": 1}"#).unwrap_err();
        assert!(err.to_string().contains("neither an S3 notification"), "{err}");
        assert!(Delivered::from_slice(b"{oops").unwrap_err().starts_with("the record is not JSON"));
    }
}
