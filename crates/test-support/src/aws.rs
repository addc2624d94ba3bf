//! A small AWS world on the local endpoint (moto_server, reached by the
//! real SDK through `AWS_ENDPOINT_URL`): a bucket sending its events to
//! EventBridge, the three streams, and rules whose SQS target lets tests see
//! what was published (moto cannot target Kinesis from a rule; the tests
//! forward each event into its stream, as the rule would).

use std::time::Duration;

use aws_config::SdkConfig;
use aws_lambda_events::event::kinesis::KinesisEvent;
use base64::Engine;
use serde_json::{Value, json};

/// The local endpoint's SDK configuration. Fails loudly without one: the
/// test command starts it (`scripts/moto.sh`).
pub async fn config() -> SdkConfig {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL must point at the local AWS endpoint: eval \"$(bash scripts/moto.sh env)\""
    );
    aws::load_config().await
}

/// Names unique to one test, so tests can share the endpoint.
#[derive(Debug, Clone)]
pub struct World {
    pub config: SdkConfig,
    pub bucket: String,
    pub uploads: String,
    pub processed: String,
    pub analyzed: String,
    pub queue_url: String,
}

impl World {
    pub async fn create(name: &str) -> Self {
        let config = config().await;
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let bucket = format!("{name}-{suffix}");
        let world = Self {
            bucket: bucket.clone(),
            uploads: format!("uploads-{suffix}"),
            processed: format!("processed-{suffix}"),
            analyzed: format!("analyzed-{suffix}"),
            queue_url: String::new(),
            config,
        };
        let s3 = world.s3();
        s3.create_bucket().bucket(&bucket).send().await.expect("creating the bucket");
        s3.put_bucket_notification_configuration()
            .bucket(&bucket)
            .notification_configuration(
                aws_sdk_s3::types::NotificationConfiguration::builder()
                    .event_bridge_configuration(aws_sdk_s3::types::EventBridgeConfiguration::builder().build())
                    .build(),
            )
            .send()
            .await
            .expect("turning on EventBridge notifications");
        let kinesis = aws_sdk_kinesis::Client::new(&world.config);
        for stream in [&world.uploads, &world.processed, &world.analyzed] {
            kinesis.create_stream().stream_name(stream).shard_count(1).send().await.expect("creating a stream");
        }
        let sqs = aws_sdk_sqs::Client::new(&world.config);
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("events-{suffix}"))
            .send()
            .await
            .expect("a queue")
            .queue_url
            .expect("a URL");
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("the queue's ARN");
        let arn = attributes
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .expect("an ARN")
            .clone();
        // The stack's patterns, narrowed to this test's bucket.
        let patterns = [
            json!({"source": ["aws.s3"], "detail-type": ["Object Created", "Object Deleted"],
                   "detail": {"bucket": {"name": [bucket]},
                              "object": {"key": [{"suffix": {"equals-ignore-case": ".jpg"}},
                                                 {"suffix": {"equals-ignore-case": ".jpeg"}},
                                                 {"suffix": {"equals-ignore-case": ".png"}}]}}}),
            json!({"source": ["collections.imageprocessor"], "detail-type": ["ImageProcessed"], "detail": {"bucket": [bucket]}}),
            json!({"source": ["collections.analyzer"], "detail-type": ["AnalysisComplete"], "detail": {"user_id": [{"prefix": format!("{name}-")}]}}),
        ];
        let events = aws_sdk_eventbridge::Client::new(&world.config);
        for (i, pattern) in patterns.iter().enumerate() {
            let rule = format!("{suffix}-{i}");
            events.put_rule().name(&rule).event_pattern(pattern.to_string()).send().await.expect("a rule");
            events
                .put_targets()
                .rule(&rule)
                .targets(aws_sdk_eventbridge::types::Target::builder().id("queue").arn(&arn).build().expect("a target"))
                .send()
                .await
                .expect("a rule target");
        }
        Self { queue_url, ..world }
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        aws::s3::S3Store::new(&self.config).client().clone()
    }

    pub async fn upload(&self, key: &str, bytes: Vec<u8>) {
        self.s3().put_object().bucket(&self.bucket).key(key).body(bytes.into()).send().await.expect("uploading");
    }

    /// Waits for `n` events of `detail_type` on the queue; returns them.
    pub async fn published(&self, detail_type: &str, n: usize) -> Vec<Value> {
        let sqs = aws_sdk_sqs::Client::new(&self.config);
        let mut found = Vec::new();
        for _ in 0..50 {
            let out = sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("receiving");
            for m in out.messages() {
                let event: Value = serde_json::from_str(m.body().unwrap_or_default()).expect("events are JSON");
                if event["detail-type"] == detail_type {
                    found.push(event);
                }
                sqs.delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .ok();
            }
            if found.len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        found
    }

    /// Puts events on a stream, partitioned as the stack's rules do (S3's
    /// request id for uploads, the item's UUID for the stages' events; see
    /// the stack's `partitionKeyPath`s).
    pub async fn forward(&self, stream: &str, events: &[Value]) {
        let kinesis = aws_sdk_kinesis::Client::new(&self.config);
        for event in events {
            let path = if event["source"] == "aws.s3" { "/detail/request-id" } else { "/detail/item_uuid" };
            let key = event.pointer(path).and_then(Value::as_str).unwrap_or_else(|| panic!("no {path} in {event}"));
            self.put_raw(&kinesis, stream, key, event.to_string().into_bytes()).await;
        }
    }

    pub async fn put_raw(&self, kinesis: &aws_sdk_kinesis::Client, stream: &str, key: &str, data: Vec<u8>) {
        kinesis
            .put_record()
            .stream_name(stream)
            .partition_key(key)
            .data(aws_sdk_kinesis::primitives::Blob::new(data))
            .send()
            .await
            .expect("putting a record");
    }

    /// Every record on a stream, as the Lambda service would hand them to a
    /// function: a `KinesisEvent` in its wire format.
    pub async fn batch(&self, stream: &str) -> KinesisEvent {
        let records = self.records(stream).await;
        let records: Vec<Value> = records
            .into_iter()
            .map(|(seq, key, data)| {
                json!({
                    "kinesis": {
                        "kinesisSchemaVersion": "1.0",
                        "partitionKey": key,
                        "sequenceNumber": seq,
                        "data": base64::engine::general_purpose::STANDARD.encode(data),
                        "approximateArrivalTimestamp": 1_764_300_000.0
                    },
                    "eventSource": "aws:kinesis",
                    "eventVersion": "1.0",
                    "eventID": format!("shardId-000000000000:{seq}"),
                    "eventName": "aws:kinesis:record",
                    "invokeIdentityArn": "arn:aws:iam::123456789012:role/collections",
                    "awsRegion": "us-east-1",
                    "eventSourceARN": format!("arn:aws:kinesis:us-east-1:123456789012:stream/{stream}")
                })
            })
            .collect();
        serde_json::from_value(json!({ "Records": records })).expect("a Kinesis event")
    }

    /// (sequence number, partition key, data) of every record on the stream's shard.
    pub async fn records(&self, stream: &str) -> Vec<(String, String, Vec<u8>)> {
        let kinesis = aws_sdk_kinesis::Client::new(&self.config);
        let shards = kinesis.list_shards().stream_name(stream).send().await.expect("listing shards");
        let mut out = Vec::new();
        for shard in shards.shards() {
            let mut iterator = kinesis
                .get_shard_iterator()
                .stream_name(stream)
                .shard_id(shard.shard_id())
                .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
                .send()
                .await
                .expect("a shard iterator")
                .shard_iterator;
            while let Some(it) = iterator {
                let page = kinesis.get_records().shard_iterator(it).limit(1000).send().await.expect("reading records");
                if page.records().is_empty() {
                    break;
                }
                for r in page.records() {
                    out.push((
                        r.sequence_number().to_owned(),
                        r.partition_key().to_owned(),
                        r.data().as_ref().to_vec(),
                    ));
                }
                iterator = page.next_shard_iterator;
            }
        }
        out
    }
}

/// An invocation context with a request id, as the runtime gives one.
pub fn context(request_id: &str) -> lambda_runtime::Context {
    let mut context = lambda_runtime::Context::default();
    context.request_id = request_id.to_owned();
    context
}

/// Invokes a stage's handler as the Lambda runtime does: `payload` read as
/// the typed invocation (failing as the runtime would), the reply as the
/// JSON the function answers.
pub async fn invoke<S>(
    handler: &aws::lambda::Handler<'_, S>,
    payload: Value,
    request_id: &str,
) -> Result<Value, aws::lambda::BatchError>
where
    S: runtime::stage::Stage,
    S::Input: aws::lambda::EventInput,
{
    let invocation: aws::lambda::Invocation = serde_json::from_value(payload).expect("the runtime reads the payload");
    let reply = handler.invoke(lambda_runtime::LambdaEvent::new(invocation, context(request_id))).await?;
    Ok(serde_json::to_value(reply).expect("replies serialise"))
}
