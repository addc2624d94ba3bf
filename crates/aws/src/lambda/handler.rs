//! A stage's Lambda handler: the typed invocation in, its records decoded
//! into the stage's inputs, the batch runner, and the answer out: for a
//! Kinesis batch, the sequence numbers of the records to deliver again
//! (`ReportBatchItemFailures`); for a direct invocation, a summary, or an
//! error when something must run again.

use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use lambda_runtime::LambdaEvent;
use runtime::failures::FailureLog;
use runtime::runner::{self, Entry, Settled, Unreadable};
use runtime::stage::Stage;
use serde::Serialize;
use thiserror::Error;

use super::deadline::batch_context;
use super::invocation::{Delivered, Invocation};
use super::records::{EventInput, recover_subject};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BatchError {
    /// Without it the record cannot be reported; the whole batch is retried.
    #[error("record {position} of the batch has no sequence number")]
    NoSequenceNumber { position: usize },
    #[error("{failed} of {total} objects failed and will be retried; first: {first}")]
    ItemsFailed { failed: usize, total: usize, first: String },
}

impl From<BatchError> for lambda_runtime::Diagnostic {
    /// What Lambda records of a failed invocation: the kind, and why.
    fn from(error: BatchError) -> Self {
        let kind = match error {
            BatchError::NoSequenceNumber { .. } => "NoSequenceNumber",
            BatchError::ItemsFailed { .. } => "ItemsFailed",
        };
        Self { error_type: kind.to_owned(), error_message: error.to_string() }
    }
}

/// What the function answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// To a Kinesis batch: the records to deliver again.
    Batch(KinesisEventResponse),
    /// To a direct invocation whose every input settled.
    Direct(DirectSummary),
}

/// What became of the inputs of a direct invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectSummary {
    pub inputs: usize,
    pub done: usize,
    pub skipped: usize,
    pub failed: usize,
}

/// A stage's Lambda handler: batches in, the batch runner, responses out.
pub struct Handler<'a, S> {
    stage: &'a S,
    failures: &'a dyn FailureLog,
    timeout: Duration,
}

impl<'a, S: Stage> Handler<'a, S>
where
    S::Input: EventInput,
{
    /// A handler running `stage`, recording failures in `failures`, for a
    /// function whose timeout is `timeout`.
    pub fn new(stage: &'a S, failures: &'a dyn FailureLog, timeout: Duration) -> Self {
        Self { stage, failures, timeout }
    }

    /// The function's handler: production's `service_fn` calls this, and so
    /// do the tests.
    pub async fn invoke(&self, event: LambdaEvent<Invocation>) -> Result<Reply, BatchError> {
        match event.payload {
            Invocation::Kinesis(batch) => self.run_kinesis(&batch, &event.context).await.map(Reply::Batch),
            Invocation::Direct(delivered) => self.run_direct(&delivered, &event.context).await.map(Reply::Direct),
        }
    }

    /// Runs a Kinesis batch: reports the sequence numbers of the records to
    /// deliver again. A record whose failure is permanent and recorded (on
    /// its item's row, or in `record_failures`) is not reported.
    async fn run_kinesis(
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
        let ran = runner::run(self.stage, self.failures, entries, batch_context(invocation, self.timeout)).await;
        let mut again: Vec<usize> = ran
            .settled
            .iter()
            .zip(&owner)
            .filter(|((_, settled), _)| {
                matches!(settled, Settled::Redeliver(_) | Settled::Halted(_) | Settled::Postponed(_))
            })
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

    /// Runs what was invoked straight on the function, not through a
    /// stream: the seed's console test events (an S3 notification with only
    /// bucket and key; an EventBridge-shaped `{"detail": …}`), or S3
    /// notifying the function directly. Failures that need another attempt
    /// make it an error, so Lambda's asynchronous retries run it again.
    async fn run_direct(
        &self,
        delivered: &Delivered,
        invocation: &lambda_runtime::Context,
    ) -> Result<DirectSummary, BatchError> {
        let inputs = S::Input::from_delivered(delivered).map_err(|first| BatchError::ItemsFailed {
            failed: 1,
            total: 1,
            first,
        })?;
        let total = inputs.len();
        let entries: Vec<Entry<S::Input>> =
            inputs.into_iter().map(|input| Entry::readable(invocation.request_id.clone(), input)).collect();
        let ran = runner::run(self.stage, self.failures, entries, batch_context(invocation, self.timeout)).await;
        ran.metrics.emit();
        let again = ran.redelivered();
        match again.first() {
            Some(first) => Err(BatchError::ItemsFailed { failed: again.len(), total, first: (*first).to_owned() }),
            None => Ok(DirectSummary {
                inputs: total,
                done: ran.metrics.done,
                skipped: ran.metrics.skipped,
                failed: ran.metrics.failed,
            }),
        }
    }
}
