//! Logging (text on a terminal, JSON on Lambda) and per-batch metrics in
//! CloudWatch's embedded metric format, which CloudWatch turns into metrics
//! straight from the log line.

use serde_json::json;
use tracing_subscriber::EnvFilter;

/// Text logs on stderr for the command line; `RUST_LOG` filters (default `warn`).
pub fn init_cli() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,sqlx=error".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// JSON logs for Lambda, one object a line, with the span's fields
/// (`item_id`, `user_id`, `key`); `RUST_LOG` filters (default `info`).
pub fn init_lambda() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into());
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
    pub stage: crate::stage::StageName,
    pub records_in: usize,
    pub done: usize,
    pub skipped: usize,
    /// Failed permanently: recorded where `collections failures` lists it.
    pub failed: usize,
    /// Reported back to the stream (or, for a direct invocation, the whole
    /// invocation failed) for another delivery.
    pub redelivered: usize,
    pub duration_ms: u64,
    /// Provider API requests made during the batch.
    pub api_calls: u64,
    /// Tokens the providers counted during the batch, by model.
    pub tokens: Vec<(String, crate::usage::Usage)>,
}

/// The token metrics, per stage and model.
const TOKENS: [&str; 4] = ["InputTokens", "OutputTokens", "CacheReadTokens", "CacheWriteTokens"];

/// The metrics of [`BatchMetrics`], in CloudWatch's names; the CDK app's
/// alarms and dashboard use the same names.
const COUNTS: [&str; 6] = ["RecordsIn", "Done", "Skipped", "Failed", "Redelivered", "ApiCalls"];

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
                    "Namespace": "Collections",
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
                            "Namespace": "Collections",
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
    use crate::stage::StageName;

    #[test]
    fn emf_document_declares_its_metrics() {
        let m = BatchMetrics {
            stage: StageName::Analysis,
            records_in: 6,
            done: 3,
            skipped: 1,
            failed: 1,
            redelivered: 1,
            duration_ms: 812,
            api_calls: 6,
            tokens: vec![(
                "claude-haiku-4-5".to_owned(),
                crate::usage::Usage { input: 9600, output: 720, cache_read: 0, cache_write: 0 },
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
        assert_eq!(names, ["RecordsIn", "Done", "Skipped", "Failed", "Redelivered", "ApiCalls", "DurationMs"]);
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
}
