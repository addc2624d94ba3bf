//! Feeding a Kinesis stream: `PutRecords` in calls of at most 500 records
//! and 5 MiB; records the stream failed (throttled shards) are sent again
//! with backoff.

use aws_config::SdkConfig;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use sha2::{Digest, Sha256};
use thiserror::Error;

use aws::{describe, is_retriable};
use remote::retry::RetryPolicy;

/// Most records one `PutRecords` call takes.
pub const MAX_RECORDS: usize = 500;
/// Most bytes (data and partition keys) one `PutRecords` call takes.
pub const MAX_CALL_BYTES: usize = 5 << 20;
/// Largest record: data blob and partition key.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PutError {
    #[error("a record of {0} bytes is over Kinesis's 1 MiB limit")]
    TooLarge(usize),
    #[error("{failed} of {sent} records were still refused after {attempts} attempts: {last}")]
    Refused { failed: usize, sent: usize, attempts: u32, last: String },
}

/// A record to put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition_key: String,
    pub data: Vec<u8>,
}

impl Record {
    /// A record whose partition key is `key`, or its SHA-256 when `key` is
    /// longer than the 256 characters Kinesis allows.
    pub fn new(key: &str, data: Vec<u8>) -> Self {
        let partition_key = if key.chars().count() <= 256 && !key.is_empty() {
            key.to_owned()
        } else {
            hex::encode(Sha256::digest(key))
        };
        Self { partition_key, data }
    }

    fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// Splits records into calls that respect the record and byte limits.
pub fn calls(records: &[Record]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, r) in records.iter().enumerate() {
        if i > start && (i - start == MAX_RECORDS || bytes + r.size() > MAX_CALL_BYTES) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += r.size();
    }
    if start < records.len() {
        out.push(start..records.len());
    }
    out
}

#[derive(Debug, Clone)]
pub struct StreamWriter {
    client: Client,
    stream: String,
    retry: RetryPolicy,
}

impl StreamWriter {
    pub fn new(config: &SdkConfig, stream: impl Into<String>, retry: RetryPolicy) -> Self {
        Self { client: Client::new(config), stream: stream.into(), retry }
    }

    /// Puts every record, in as few calls as the limits allow.
    pub async fn put_all(&self, records: &[Record]) -> Result<(), PutError> {
        // Kinesis counts the partition key against the record's limit too.
        if let Some(big) = records.iter().find(|r| r.size() > MAX_RECORD_BYTES) {
            return Err(PutError::TooLarge(big.size()));
        }
        for range in calls(records) {
            self.put_call(&records[range]).await?;
        }
        Ok(())
    }

    async fn put_call(&self, records: &[Record]) -> Result<(), PutError> {
        let mut pending: Vec<usize> = (0..records.len()).collect();
        let mut attempt = 1;
        loop {
            let entries: Vec<PutRecordsRequestEntry> = pending
                .iter()
                .map(|&i| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(&records[i].partition_key)
                        .data(Blob::new(records[i].data.clone()))
                        .build()
                        .expect("data and partition key are set")
                })
                .collect();
            let (failed, last): (Vec<usize>, String) =
                match self.client.put_records().stream_name(&self.stream).set_records(Some(entries)).send().await {
                    Ok(out) => {
                        let mut last = String::new();
                        let failed = pending
                            .iter()
                            .zip(out.records())
                            .filter(|(_, r)| r.error_code().is_some())
                            .map(|(&i, r)| {
                                last = format!(
                                    "{}: {}",
                                    r.error_code().unwrap_or_default(),
                                    r.error_message().unwrap_or_default()
                                );
                                i
                            })
                            .collect();
                        (failed, last)
                    }
                    Err(e) if is_retriable(&e) => (pending.clone(), describe(&e)),
                    Err(e) => {
                        let last = describe(&e);
                        return Err(PutError::Refused {
                            failed: pending.len(),
                            sent: records.len(),
                            attempts: attempt,
                            last,
                        });
                    }
                };
            if failed.is_empty() {
                return Ok(());
            }
            if attempt >= self.retry.max_attempts {
                return Err(PutError::Refused { failed: failed.len(), sent: records.len(), attempts: attempt, last });
            }
            tracing::debug!(failed = failed.len(), attempt, "resending refused records");
            tokio::time::sleep(self.retry.backoff(attempt)).await;
            pending = failed;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_respect_the_record_count_and_byte_limits() {
        let small: Vec<Record> = (0..1200).map(|i| Record::new(&format!("k{i}"), vec![0; 100])).collect();
        assert_eq!(calls(&small), vec![0..500, 500..1000, 1000..1200]);
        let big: Vec<Record> = (0..12).map(|i| Record::new(&format!("k{i}"), vec![0; 1 << 20])).collect();
        let sizes: Vec<usize> = calls(&big).iter().map(|r| r.len()).collect();
        assert_eq!(sizes, vec![4, 4, 4], "four 1 MiB records and their keys fit under 5 MiB, five do not");
        assert!(calls(&[]).is_empty());
    }

    #[test]
    fn long_keys_are_hashed_into_a_partition_key() {
        assert_eq!(Record::new("u/a.jpg", vec![]).partition_key, "u/a.jpg");
        let long = "x".repeat(300);
        assert_eq!(Record::new(&long, vec![]).partition_key.len(), 64);
    }
}
