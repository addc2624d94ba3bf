//! Logging (text on a terminal, JSON on Lambda) and per-batch metrics in
//! CloudWatch's embedded metric format, which CloudWatch turns into metrics
//! straight from the log line.

use const_format::concatcp;
use domain::settings::Setting;
use serde_json::json;
use tracing_subscriber::EnvFilter;

/// What the command line logs unless `RUST_LOG` says otherwise.
const CLI_LOG: &str = "warn,sqlx=error";
/// What a Lambda logs unless `RUST_LOG` says otherwise.
const LAMBDA_LOG: &str = "info,sqlx=warn";

/// Read by `tracing`'s filter; documented here.
pub const RUST_LOG: Setting =
    Setting::optional("RUST_LOG", concatcp!("`", CLI_LOG, "` (CLI), `", LAMBDA_LOG, "` (Lambda)"), "log filter");

/// Text logs on stderr for the command line; [`RUST_LOG`] filters.
pub fn init_cli() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| CLI_LOG.into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// JSON logs for Lambda, one object a line, with the span's fields
/// (`item_id`, `user_id`, `key`); [`RUST_LOG`] filters.
pub fn init_lambda() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| LAMBDA_LOG.into());
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_ansi(false)
        .without_time() // CloudWatch stamps every line
        .with_target(false)
        .init();
}

/// What one batch did, record by record: each record counts once, as
/// done, skipped, failed for good (recorded, not delivered again) or
/// redelivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMetrics {
    pub stage: domain::stage::StageName,
    pub records_in: usize,
    pub done: usize,
    pub skipped: usize,
    /// Handed to a provider's batch (`--batch-api`, run from the command
    /// line only: no Lambda queues, so it is not a CloudWatch metric).
    pub queued: usize,
    /// Failed permanently: recorded where `collections failures` lists it.
    pub failed: usize,
    /// Reported back to the stream (or, for a direct invocation, the whole
    /// invocation failed) for another delivery.
    pub redelivered: usize,
    /// Of those, the ones a configuration fault held back (see
    /// [`crate::runner::Settled::Halted`]): the `ConfigurationFault` metric.
    pub configuration_faults: usize,
    pub duration_ms: u64,
    /// Provider API requests made during the batch.
    pub api_calls: u64,
    /// Tokens the providers counted during the batch, by model.
    pub tokens: Vec<(String, domain::usage::Usage)>,
}

/// The metrics' namespace in CloudWatch.
const NAMESPACE: &str = "Collections";

/// The token metrics, per stage and model.
const TOKENS: [&str; 4] = ["InputTokens", "OutputTokens", "CacheReadTokens", "CacheWriteTokens"];

/// The metrics of [`BatchMetrics`], in CloudWatch's names; the CDK app's
/// alarms and dashboard use the same names.
const COUNTS: [&str; 7] = ["RecordsIn", "Done", "Skipped", "Failed", "Redelivered", "ConfigurationFault", "ApiCalls"];

impl BatchMetrics {
    /// The embedded-metric-format document (namespace `Collections`, dimension `Stage`).
    pub fn emf(&self, timestamp_ms: i64) -> serde_json::Value {
        let mut metrics: Vec<serde_json::Value> =
            COUNTS.iter().map(|name| json!({"Name": name, "Unit": "Count"})).collect();
        metrics.push(json!({"Name": "DurationMs", "Unit": "Milliseconds"}));
        json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Stage"]],
                    "Metrics": metrics
                }]
            },
            "Stage": self.stage.as_str(),
            "RecordsIn": self.records_in,
            "Done": self.done,
            "Skipped": self.skipped,
            "Failed": self.failed,
            "Redelivered": self.redelivered,
            "ConfigurationFault": self.configuration_faults,
            "DurationMs": self.duration_ms,
            "ApiCalls": self.api_calls,
        })
    }

    /// One document per model that counted tokens in the batch (dimensions
    /// `Stage` and `Model`).
    pub fn emf_tokens(&self, timestamp_ms: i64) -> Vec<serde_json::Value> {
        self.tokens
            .iter()
            .map(|(model, used)| {
                let metrics: Vec<serde_json::Value> =
                    TOKENS.iter().map(|name| json!({"Name": name, "Unit": "Count"})).collect();
                json!({
                    "_aws": {
                        "Timestamp": timestamp_ms,
                        "CloudWatchMetrics": [{
                            "Namespace": NAMESPACE,
                            "Dimensions": [["Stage", "Model"]],
                            "Metrics": metrics
                        }]
                    },
                    "Stage": self.stage.as_str(),
                    "Model": model,
                    "InputTokens": used.input,
                    "OutputTokens": used.output,
                    "CacheReadTokens": used.cache_read,
                    "CacheWriteTokens": used.cache_write,
                })
            })
            .collect()
    }

    /// Writes the documents, one a line, on stdout, where the Lambda agent finds them.
    pub fn emit(&self) {
        let now = chrono::Utc::now().timestamp_millis();
        println!("{}", self.emf(now));
        for doc in self.emf_tokens(now) {
            println!("{doc}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::stage::StageName;

    #[test]
    fn emf_document_declares_its_metrics() {
        let m = BatchMetrics {
            queued: 0,
            stage: StageName::Analysis,
            records_in: 6,
            done: 3,
            skipped: 1,
            failed: 1,
            redelivered: 1,
            configuration_faults: 0,
            duration_ms: 812,
            api_calls: 6,
            tokens: vec![(
                "claude-haiku-4-5".to_owned(),
                domain::usage::Usage { input: 9600, output: 720, cache_read: 0, cache_write: 0 },
            )],
        };
        let doc = m.emf(1_700_000_000_000);
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Collections");
        let names: Vec<&str> = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["RecordsIn", "Done", "Skipped", "Failed", "Redelivered", "ConfigurationFault", "ApiCalls", "DurationMs"]
        );
        for name in &names {
            assert!(doc.get(*name).is_some(), "{name} has a value");
        }
        assert_eq!((doc["Stage"].as_str(), doc["Failed"].as_u64()), (Some("analysis"), Some(1)));
        assert_eq!((doc["Done"].as_u64(), doc["Redelivered"].as_u64()), (Some(3), Some(1)));

        let tokens = m.emf_tokens(1_700_000_000_000);
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Stage", "Model"]]));
        assert_eq!(
            (tokens[0]["Model"].as_str(), tokens[0]["InputTokens"].as_u64()),
            (Some("claude-haiku-4-5"), Some(9600))
        );
        assert_eq!(tokens[0]["OutputTokens"], 720);
    }

    /// The CDK app's alarms and dashboard read the same names from
    /// `contracts/pipeline.json`.
    #[test]
    fn the_metric_names_are_the_ones_the_cdk_app_reads() {
        let contracts: serde_json::Value =
            serde_json::from_str(include_str!("../../../contracts/pipeline.json")).expect("the contracts are JSON");
        let metrics = &contracts["metrics"];
        assert_eq!(metrics["namespace"], NAMESPACE);
        assert_eq!(metrics["stageCounts"], json!(COUNTS));
        assert_eq!(metrics["stageDuration"], "DurationMs");
        assert_eq!(metrics["tokens"], json!(TOKENS));
        assert_eq!(
            (metrics["stageDimension"].as_str(), metrics["modelDimension"].as_str()),
            (Some("Stage"), Some("Model"))
        );
        let stages = &contracts["stages"];
        let named = [
            ("thumbnailer", StageName::Thumbnail),
            ("analyzer", StageName::Analysis),
            ("embedder", StageName::Embedding),
        ];
        for (function, stage) in named {
            assert_eq!(stages[function], stage.as_str(), "{function}");
        }
    }
}
