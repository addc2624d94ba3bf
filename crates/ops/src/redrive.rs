//! Replaying what a stream's consumer gave up on. Lambda sends a message to
//! the on-failure destination (an SQS queue) for each batch of records whose
//! retries ran out; the message names the records, not their data (stream,
//! shard, first and last sequence number). The records are read back from
//! the stream (its retention outlasts the consumer's record age by a day),
//! put on it again, and the message is deleted only once they are.

use aws_config::SdkConfig;
use aws_sdk_kinesis::types::ShardIteratorType;
use serde::Deserialize;

use aws::describe;
use remote::retry::RetryPolicy;

use crate::kinesis::{Record, StreamWriter};

/// The records a failure message names (its `KinesisBatchInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedBatch {
    pub stream_arn: String,
    pub shard_id: String,
    pub start_sequence_number: String,
    pub end_sequence_number: String,
    #[serde(default)]
    pub batch_size: usize,
}

impl FailedBatch {
    /// The batch a failure message's body names.
    pub fn parse(body: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Message {
            #[serde(rename = "KinesisBatchInfo")]
            batch: FailedBatch,
        }
        serde_json::from_str::<Message>(body)
            .map(|m| m.batch)
            .map_err(|e| format!("not a Kinesis failure message: {e}"))
    }

    /// The stream's name, the last part of its ARN.
    pub fn stream_name(&self) -> &str {
        self.stream_arn.rsplit('/').next().unwrap_or(&self.stream_arn)
    }

    /// Whether `sequence` lies within the batch (sequence numbers are
    /// decimal strings that outgrow every integer type).
    fn contains(&self, sequence: &str) -> bool {
        let key = |s: &str| (s.len(), s.to_owned());
        key(sequence) >= key(&self.start_sequence_number) && key(sequence) <= key(&self.end_sequence_number)
    }
}

/// What a redrive did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RedriveReport {
    /// Messages whose records were put back, and deleted.
    pub redriven: usize,
    /// Records put back on their streams.
    pub records: usize,
    /// Messages left in the queue, with why.
    pub kept: Vec<(String, String)>,
}

/// Reads a queue of failure messages and puts their records back.
#[derive(Debug, Clone)]
pub struct Redrive {
    config: SdkConfig,
    sqs: aws_sdk_sqs::Client,
    kinesis: aws_sdk_kinesis::Client,
}

impl Redrive {
    pub fn new(config: &SdkConfig) -> Self {
        Self {
            config: config.clone(),
            sqs: aws_sdk_sqs::Client::new(config),
            kinesis: aws_sdk_kinesis::Client::new(config),
        }
    }

    /// Redrives up to `max_messages` messages of the queue at `queue_url`.
    /// A message whose records cannot be read back (gone from the stream,
    /// or not a failure message) stays in the queue, and is reported.
    pub async fn run(&self, queue_url: &str, max_messages: usize) -> Result<RedriveReport, String> {
        let mut report = RedriveReport::default();
        let mut kept_handles = Vec::new();
        let mut seen = 0;
        while seen < max_messages {
            let received = self
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages((max_messages - seen).min(10) as i32)
                .visibility_timeout(300)
                .send()
                .await
                .map_err(|e| format!("reading {queue_url}: {}", describe(&e)))?;
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for message in messages {
                seen += 1;
                let id = message.message_id.clone().unwrap_or_default();
                match self.redrive_one(message.body().unwrap_or_default()).await {
                    Ok(count) => {
                        let handle = message.receipt_handle().unwrap_or_default();
                        self.sqs
                            .delete_message()
                            .queue_url(queue_url)
                            .receipt_handle(handle)
                            .send()
                            .await
                            .map_err(|e| format!("deleting message {id}: {}", describe(&e)))?;
                        report.redriven += 1;
                        report.records += count;
                    }
                    Err(reason) => {
                        report.kept.push((id, reason));
                        kept_handles.extend(message.receipt_handle);
                    }
                }
            }
        }
        // Kept messages were hidden while this run went on (so it does not
        // take them twice); they are visible again for the next one.
        for handle in kept_handles {
            self.sqs
                .change_message_visibility()
                .queue_url(queue_url)
                .receipt_handle(handle)
                .visibility_timeout(0)
                .send()
                .await
                .map_err(|e| format!("showing a kept message again: {}", describe(&e)))?;
        }
        Ok(report)
    }

    /// Puts the records one message names back on their stream; answers how many.
    async fn redrive_one(&self, body: &str) -> Result<usize, String> {
        let batch = FailedBatch::parse(body)?;
        let records = self.read(&batch).await?;
        if records.is_empty() {
            return Err(format!(
                "records {}..={} of {} are no longer on the stream",
                batch.start_sequence_number, batch.end_sequence_number, batch.shard_id
            ));
        }
        let writer = StreamWriter::new(&self.config, batch.stream_name(), RetryPolicy::default());
        writer.put_all(&records).await.map_err(|e| format!("putting records back on {}: {e}", batch.stream_name()))?;
        Ok(records.len())
    }

    /// The batch's records, read from its shard.
    async fn read(&self, batch: &FailedBatch) -> Result<Vec<Record>, String> {
        let failed = |e: String| format!("reading {} of {}: {e}", batch.shard_id, batch.stream_name());
        let mut iterator = self
            .kinesis
            .get_shard_iterator()
            .stream_name(batch.stream_name())
            .shard_id(&batch.shard_id)
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .starting_sequence_number(&batch.start_sequence_number)
            .send()
            .await
            .map_err(|e| failed(describe(&e)))?
            .shard_iterator;
        let mut records = Vec::new();
        while let Some(current) = iterator {
            let page = self
                .kinesis
                .get_records()
                .shard_iterator(current)
                .limit(1000)
                .send()
                .await
                .map_err(|e| failed(describe(&e)))?;
            if page.records().is_empty() {
                break;
            }
            for record in page.records() {
                if !batch.contains(record.sequence_number()) {
                    return Ok(records);
                }
                records.push(Record::new(record.partition_key(), record.data().as_ref().to_vec()));
            }
            iterator = page.next_shard_iterator;
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body Lambda sends for a Kinesis batch whose retries ran out.
    const MESSAGE: &str = r#"{
        "requestContext": {"requestId": "c9b8fa9f", "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:thumbnailer",
                           "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 3},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0", "timestamp": "2026-11-30T06:00:00.000Z",
        "KinesisBatchInfo": {"shardId": "shardId-000000000000",
                             "startSequenceNumber": "49590338271490256608559692538361571095921575989136588898",
                             "endSequenceNumber": "49590338271490256608559692540925702759324208523137515618",
                             "approximateArrivalOfFirstRecord": "2026-11-30T05:00:00.000Z",
                             "approximateArrivalOfLastRecord": "2026-11-30T05:00:01.000Z",
                             "batchSize": 2, "streamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/uploads"}
    }"#;

    #[test]
    fn a_failure_message_names_its_records() {
        let batch = FailedBatch::parse(MESSAGE).unwrap();
        assert_eq!(
            (batch.stream_name(), batch.shard_id.as_str(), batch.batch_size),
            ("uploads", "shardId-000000000000", 2)
        );
        assert!(batch.contains(&batch.start_sequence_number) && batch.contains(&batch.end_sequence_number));
        assert!(batch.contains("49590338271490256608559692539999999999999999999999999999"));
        assert!(!batch.contains("49590338271490256608559692540925702759324208523137515619"));
        assert!(!batch.contains("9"), "a shorter number is a smaller one");
        assert!(FailedBatch::parse("{}").unwrap_err().starts_with("not a Kinesis failure message"));
    }
}
