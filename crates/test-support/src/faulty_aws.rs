//! A local endpoint speaking the AWS JSON 1.1 protocol of EventBridge
//! `PutEvents` and Kinesis `PutRecords`, which refuses chosen entries the way
//! the real services do under throttling: a 200 whose answer marks those
//! entries failed. moto accepts everything, so the resending of refused
//! entries is tested here. It records the entries of every call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Debug, Default)]
struct Inner {
    /// Entry marker → how many more times it is refused (`usize::MAX`:
    /// always), and the error code it is refused with (`None`: throttling).
    refusals: Mutex<HashMap<String, (usize, Option<&'static str>)>>,
    /// Calls answered with this error type before any entry is looked at.
    denied: Mutex<Option<String>>,
    calls: Mutex<Vec<Vec<String>>>,
}

/// A running endpoint. An entry's marker is its partition key (Kinesis) or
/// the `item_id` of its detail (EventBridge).
#[derive(Debug, Clone)]
pub struct FaultyAws {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl FaultyAws {
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = Router::new().route("/", post(answer)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the faulty endpoint");
        let addr = listener.local_addr().expect("a bound address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("the faulty endpoint runs") });
        Self { addr, inner }
    }

    /// The SDK configuration that reaches this endpoint, whatever
    /// `AWS_ENDPOINT_URL` says.
    pub async fn config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(format!("http://{}", self.addr))
            .region(Region::new("us-east-1"))
            .credentials_provider(aws_sdk_kinesis::config::Credentials::new("test", "test", None, None, "test"))
            .load()
            .await
    }

    /// Refuses the entry marked `marker` in its next `times` calls, as
    /// throttled.
    pub fn refuse(&self, marker: &str, times: usize) {
        self.inner.refusals.lock().unwrap().insert(marker.to_owned(), (times, None));
    }

    /// Refuses the entry marked `marker` every time with `code`.
    pub fn refuse_with(&self, marker: &str, code: &'static str) {
        self.inner.refusals.lock().unwrap().insert(marker.to_owned(), (usize::MAX, Some(code)));
    }

    /// Answers every call with this error (a 400 of the given type).
    pub fn deny(&self, error_type: &str) {
        *self.inner.denied.lock().unwrap() = Some(error_type.to_owned());
    }

    /// The markers of the entries of each call, in order.
    pub fn calls(&self) -> Vec<Vec<String>> {
        self.inner.calls.lock().unwrap().clone()
    }
}

/// Whether this entry is refused in this call, and with which code (the
/// refusal is counted).
fn refused(inner: &Inner, marker: &str) -> Option<Option<&'static str>> {
    let mut refusals = inner.refusals.lock().unwrap();
    match refusals.get_mut(marker) {
        Some((usize::MAX, code)) => Some(*code),
        Some((left, code)) if *left > 0 => {
            *left -= 1;
            Some(*code)
        }
        _ => None,
    }
}

fn json_1_1(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/x-amz-json-1.1")], body.to_string()).into_response()
}

async fn answer(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return json_1_1(StatusCode::BAD_REQUEST, json!({"__type": "SerializationException", "message": "not JSON"}));
    };
    let (list, marker_of): (&str, fn(&Value) -> String) = match target.as_str() {
        "AWSEvents.PutEvents" => ("Entries", |e| {
            let detail: Value = serde_json::from_str(e["Detail"].as_str().unwrap_or("{}")).unwrap_or_default();
            detail["item_id"].as_str().unwrap_or_default().to_owned()
        }),
        "Kinesis_20131202.PutRecords" => ("Records", |r| r["PartitionKey"].as_str().unwrap_or_default().to_owned()),
        other => {
            let message = format!("{other} is not spoken here");
            return json_1_1(
                StatusCode::BAD_REQUEST,
                json!({"__type": "UnknownOperationException", "message": message}),
            );
        }
    };
    let markers: Vec<String> = request[list].as_array().into_iter().flatten().map(marker_of).collect();
    inner.calls.lock().unwrap().push(markers.clone());
    if let Some(error_type) = inner.denied.lock().unwrap().clone() {
        return json_1_1(StatusCode::BAD_REQUEST, json!({"__type": error_type, "message": "denied by the test"}));
    }
    let answers: Vec<(bool, Value)> = markers
        .iter()
        .enumerate()
        .map(|(i, marker)| match (refused(&inner, marker), list) {
            (Some(code), "Entries") => (
                true,
                json!({"ErrorCode": code.unwrap_or("ThrottlingException"), "ErrorMessage": "Refused by the test"}),
            ),
            (Some(code), _) => (
                true,
                json!({"ErrorCode": code.unwrap_or("ProvisionedThroughputExceededException"),
                       "ErrorMessage": "Rate exceeded for shard"}),
            ),
            (None, "Entries") => (false, json!({"EventId": format!("event-{i}")})),
            (None, _) => (false, json!({"SequenceNumber": format!("4960{i:020}"), "ShardId": "shardId-000000000000"})),
        })
        .collect();
    let failed = answers.iter().filter(|(f, _)| *f).count();
    let entries: Vec<Value> = answers.into_iter().map(|(_, a)| a).collect();
    let body = if list == "Entries" {
        json!({"FailedEntryCount": failed, "Entries": entries})
    } else {
        json!({"FailedRecordCount": failed, "Records": entries, "EncryptionType": "NONE"})
    };
    json_1_1(StatusCode::OK, body)
}
