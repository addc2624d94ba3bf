//! The one batch runner. The Lambda handlers and the local pipeline both
//! hand it a batch of entries (readable stage inputs, or records that could
//! not be read); it runs the stage on the readable ones within the batch's
//! deadline, logs each entry in a span of its own, records every failure
//! where `collections failures` lists it, and settles each entry: done,
//! skipped, failed for good, or to be delivered again.
//!
//! The failure rules, in one place:
//! - every failure is recorded (on the item's row, or in `record_failures`);
//! - a retriable failure is delivered again; a permanent one is not, once
//!   recorded;
//! - a failure that could not be recorded is delivered again, whatever it
//!   was, so it is never lost;
//! - a failure that is not the input's (a configuration fault, a provider
//!   out past the retries' budget) is not recorded on the item, which stays
//!   pending, and is delivered again.

use std::time::Instant;

use tracing::{Instrument, debug, error, info, info_span, warn};

use domain::subject::Subject;
use store::status::FailedInput;

use crate::batch::BatchContext;
use crate::failures::FailureLog;
use crate::outcome::{Failure, Outcome, Retry};
use crate::stage::{Stage, StageInput};
use crate::telemetry::BatchMetrics;

/// One record of a batch.
#[derive(Debug)]
pub struct Entry<I> {
    /// Where it came from: a Kinesis sequence number, or a key.
    pub source: String,
    pub input: Result<I, Unreadable>,
}

impl<I> Entry<I> {
    pub fn readable(source: impl Into<String>, input: I) -> Self {
        Self { source: source.into(), input: Ok(input) }
    }

    /// An input with no stream position (a local run): the runner names
    /// its source by its key, or else its item.
    pub fn local(input: I) -> Self {
        Self { source: String::new(), input: Ok(input) }
    }
}

/// A record the stage cannot take, with what could still be told of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub reason: String,
    /// The record as received (lossily as text).
    pub raw: String,
    pub subject: Subject,
}

/// What became of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Done,
    Skipped(String),
    /// Handed to a provider's batch: not delivered again, not finished.
    Queued(String),
    /// Failed for good, and recorded: `collections failures` lists it.
    Failed(String),
    /// To be delivered again (retriable, or its failure could not be recorded).
    Redeliver(String),
    /// Not attempted to the end because the deployment is at fault (a
    /// rejected key, an unknown model): nothing recorded on the item, to be
    /// delivered again once the configuration is mended; a local run stops.
    Halted(String),
    /// Not attempted to the end because the provider was out past the
    /// retries' budget: nothing recorded on the item, which stays pending;
    /// to be delivered again (a local run leaves it for the next).
    Postponed(String),
}

/// A batch, settled: one entry per input entry, in order, and its metrics.
#[derive(Debug)]
pub struct Ran {
    pub settled: Vec<(Subject, Settled)>,
    pub metrics: BatchMetrics,
}

impl Ran {
    /// The reasons of the entries to be delivered again, in order.
    pub fn redelivered(&self) -> Vec<&str> {
        self.settled
            .iter()
            .filter_map(|(_, s)| match s {
                Settled::Redeliver(reason) | Settled::Halted(reason) | Settled::Postponed(reason) => {
                    Some(reason.as_str())
                }
                _ => None,
            })
            .collect()
    }
}

/// Runs `stage` on a batch and settles every entry (see the module's rules).
/// The context is the batch's own: its meter counts this batch alone.
pub async fn run<S: Stage>(
    stage: &S,
    failures: &dyn FailureLog,
    entries: Vec<Entry<S::Input>>,
    context: BatchContext,
) -> Ran {
    let start = Instant::now();
    let name = stage.name();
    let span = info_span!("batch", stage = %name, records = entries.len());

    let mut sources = Vec::with_capacity(entries.len());
    let mut subjects = Vec::with_capacity(entries.len());
    let mut inputs = Vec::new();
    let mut slots: Vec<Result<usize, Unreadable>> = Vec::with_capacity(entries.len());
    for entry in entries {
        match entry.input {
            Ok(input) => {
                let subject = input.subject();
                sources.push(if entry.source.is_empty() {
                    subject.key.clone().or(subject.item_id.map(|id| id.to_string())).unwrap_or_default()
                } else {
                    entry.source
                });
                subjects.push(subject);
                slots.push(Ok(inputs.len()));
                inputs.push(input);
            }
            Err(unreadable) => {
                sources.push(entry.source);
                subjects.push(unreadable.subject.clone());
                slots.push(Err(unreadable));
            }
        }
    }

    let mut outcomes =
        if inputs.is_empty() { Vec::new() } else { stage.run_batch(&inputs, &context).instrument(span.clone()).await };
    if outcomes.len() != inputs.len() {
        error!(stage = %name, inputs = inputs.len(), outcomes = outcomes.len(), "the stage answered the wrong number of outcomes");
        let missing = Failure::transient(format!("the {name} stage gave no outcome for this input"));
        outcomes.resize(inputs.len(), missing.into());
    }
    let outcomes: Vec<Outcome> = slots
        .iter()
        .map(|slot| match slot {
            Ok(i) => outcomes[*i].clone(),
            Err(unreadable) => Failure::refused(unreadable.reason.clone()).into(),
        })
        .collect();

    let failed: Vec<FailedInput> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(n, outcome)| {
            let Outcome::Failed(failure) = outcome else { return None };
            if failure.is_not_the_inputs() {
                return None;
            }
            let (input, raw) = match &slots[n] {
                Ok(i) => (serde_json::to_value(&inputs[*i]).ok(), None),
                Err(unreadable) => (None, Some(unreadable.raw.clone())),
            };
            // Only a subject the stage did not refute is written on its item.
            let subject = if failure.refutes_subject {
                Subject { key: subjects[n].key.clone(), ..Subject::default() }
            } else {
                subjects[n].clone()
            };
            Some(FailedInput {
                subject,
                reason: failure.reason.clone(),
                public: failure.public.unwrap_or(name.public_failure()).to_owned(),
                input,
                raw,
                source: sources[n].clone(),
            })
        })
        .collect();
    let recorded = failed.is_empty()
        || match failures.record(name, &failed).instrument(span.clone()).await {
            Ok(()) => true,
            Err(e) => {
                warn!(stage = %name, error = %e, failures = failed.len(), "recording failures failed; they will be delivered again");
                false
            }
        };

    let mut settled = Vec::with_capacity(outcomes.len());
    for ((outcome, subject), source) in outcomes.into_iter().zip(subjects).zip(&sources) {
        let record = info_span!(
            parent: &span,
            "record",
            stage = %name,
            source = %source,
            key = subject.key.as_deref().unwrap_or_default(),
            item_id = subject.item_id.map(|u| u.to_string()).unwrap_or_default(),
            user_id = subject.user_id.as_deref().unwrap_or_default(),
        );
        let _entered = record.enter();
        let fate = match outcome {
            Outcome::Done => {
                debug!("done");
                Settled::Done
            }
            Outcome::Skipped(reason) => {
                info!(%reason, "skipped");
                Settled::Skipped(reason)
            }
            Outcome::Queued(reason) => {
                debug!(%reason, "queued for a provider batch");
                Settled::Queued(reason)
            }
            Outcome::Failed(failure) if failure.is_configuration_fault() => {
                error!(reason = %failure.reason, "configuration fault: not the item's; left to be delivered again");
                Settled::Halted(failure.reason)
            }
            Outcome::Failed(failure) if failure.retry == Retry::Outage => {
                warn!(reason = %failure.reason, "the provider is out: the item stays pending, to be delivered again");
                Settled::Postponed(failure.reason)
            }
            Outcome::Failed(failure) => {
                let retriable = failure.is_retriable();
                warn!(reason = %failure.reason, retriable, recorded, "item failed");
                if retriable || !recorded {
                    Settled::Redeliver(failure.reason)
                } else {
                    Settled::Failed(failure.reason)
                }
            }
        };
        settled.push((subject, fate));
    }

    let count = |f: fn(&Settled) -> bool| settled.iter().filter(|(_, s)| f(s)).count();
    let metrics = BatchMetrics {
        stage: name,
        records_in: settled.len(),
        done: count(|s| matches!(s, Settled::Done)),
        skipped: count(|s| matches!(s, Settled::Skipped(_))),
        queued: count(|s| matches!(s, Settled::Queued(_))),
        failed: count(|s| matches!(s, Settled::Failed(_))),
        redelivered: count(|s| matches!(s, Settled::Redeliver(_) | Settled::Halted(_) | Settled::Postponed(_))),
        configuration_faults: count(|s| matches!(s, Settled::Halted(_))),
        duration_ms: start.elapsed().as_millis() as u64,
        api_calls: context.meter.calls(),
        tokens: context.meter.tokens(),
    };
    Ran { settled, metrics }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use serde::{Deserialize, Serialize};

    use domain::stage::StageName;
    use store::DbError;

    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Job(String);

    impl StageInput for Job {
        fn subject(&self) -> Subject {
            Subject { key: Some(self.0.clone()), ..Subject::default() }
        }
    }

    /// Fails inputs named `bad*` for good and `slow*` retriably.
    struct Judge;

    #[async_trait]
    impl Stage for Judge {
        type Input = Job;

        fn name(&self) -> StageName {
            StageName::Analysis
        }

        async fn run_batch(&self, inputs: &[Job], _context: &BatchContext) -> Vec<Outcome> {
            inputs
                .iter()
                .map(|Job(name)| match name.as_str() {
                    n if n.starts_with("bad") => Failure::permanent(format!("{n} is bad")).into(),
                    n if n.starts_with("slow") => Failure::transient(format!("{n} timed out")).into(),
                    n if n.starts_with("old") => Outcome::Skipped("already done".into()),
                    n if n.starts_with("keyless") => Failure::configuration(format!("{n}: HTTP 401")).into(),
                    n if n.starts_with("overloaded") => Failure::outage(format!("{n}: HTTP 529")).into(),
                    _ => Outcome::Done,
                })
                .collect()
        }
    }

    /// Keeps what it is given, or fails like a database that is down.
    #[derive(Default)]
    struct Log {
        down: bool,
        kept: Mutex<Vec<(StageName, FailedInput)>>,
    }

    #[async_trait]
    impl FailureLog for Log {
        async fn record(&self, stage: StageName, failures: &[FailedInput]) -> Result<(), DbError> {
            if self.down {
                return Err(DbError::Unavailable {
                    operation: "recording failures",
                    source: sqlx::Error::PoolTimedOut,
                });
            }
            self.kept.lock().unwrap().extend(failures.iter().map(|f| (stage, f.clone())));
            Ok(())
        }
    }

    fn batch() -> Vec<Entry<Job>> {
        let mut entries: Vec<Entry<Job>> = ["a", "bad-1", "old", "slow-1"]
            .iter()
            .enumerate()
            .map(|(i, n)| Entry::readable(format!("seq-{i}"), Job((*n).into())))
            .collect();
        entries.push(Entry {
            source: "seq-4".into(),
            input: Err(Unreadable {
                reason: "the record is not JSON".into(),
                raw: "{oops".into(),
                subject: Subject::default(),
            }),
        });
        entries
    }

    #[tokio::test]
    async fn every_failure_is_recorded_and_only_retriable_ones_are_delivered_again() {
        let log = Log::default();
        let ran = run(&Judge, &log, batch(), BatchContext::default()).await;
        let fates: Vec<Settled> = ran.settled.into_iter().map(|(_, s)| s).collect();
        assert_eq!(
            fates,
            vec![
                Settled::Done,
                Settled::Failed("bad-1 is bad".into()),
                Settled::Skipped("already done".into()),
                Settled::Redeliver("slow-1 timed out".into()),
                Settled::Failed("the record is not JSON".into()),
            ]
        );
        let kept = log.kept.lock().unwrap();
        let reasons: Vec<(&str, &str)> = kept.iter().map(|(_, f)| (f.source.as_str(), f.reason.as_str())).collect();
        assert_eq!(
            reasons,
            [("seq-1", "bad-1 is bad"), ("seq-3", "slow-1 timed out"), ("seq-4", "the record is not JSON")]
        );
        assert_eq!(kept[0].1.input, Some(serde_json::json!("bad-1")), "the input, to run it again");
        assert_eq!(kept[2].1.raw.as_deref(), Some("{oops"), "the record as received");
        assert!(kept.iter().all(|(stage, _)| *stage == StageName::Analysis));
        let m = ran.metrics;
        assert_eq!((m.records_in, m.done, m.skipped, m.failed, m.redelivered), (5, 1, 1, 2, 1));
    }

    #[tokio::test]
    async fn a_configuration_fault_or_an_outage_is_recorded_nowhere_and_delivered_again() {
        let log = Log::default();
        let entries =
            ["a", "keyless-1", "bad-1", "overloaded-1"].iter().map(|n| Entry::local(Job((*n).into()))).collect();
        let ran = run(&Judge, &log, entries, BatchContext::default()).await;
        assert_eq!(ran.settled[1].1, Settled::Halted("keyless-1: HTTP 401".into()));
        assert_eq!(ran.settled[3].1, Settled::Postponed("overloaded-1: HTTP 529".into()));
        assert_eq!(ran.redelivered(), ["keyless-1: HTTP 401", "overloaded-1: HTTP 529"]);
        let kept = log.kept.lock().unwrap();
        assert_eq!(kept.iter().map(|(_, f)| f.reason.as_str()).collect::<Vec<_>>(), ["bad-1 is bad"]);
        let m = ran.metrics;
        assert_eq!((m.failed, m.redelivered, m.configuration_faults), (1, 2, 1));
        assert_eq!(m.emf(0)["ConfigurationFault"], 1);
    }

    #[tokio::test]
    async fn failures_that_cannot_be_recorded_are_delivered_again() {
        let log = Log { down: true, ..Log::default() };
        let ran = run(&Judge, &log, batch(), BatchContext::default()).await;
        assert_eq!(ran.redelivered(), ["bad-1 is bad", "slow-1 timed out", "the record is not JSON"]);
        assert_eq!((ran.metrics.failed, ran.metrics.redelivered), (0, 3));
    }
}
