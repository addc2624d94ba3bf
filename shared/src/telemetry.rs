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

/// What one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMetrics {
    pub stage: &'static str,
    pub records_in: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub duration_ms: u64,
    /// Provider API requests made during the batch.
    pub api_calls: u64,
}

impl BatchMetrics {
    /// The embedded-metric-format document (namespace `Collections`, dimension `Stage`).
    pub fn emf(&self, timestamp_ms: i64) -> serde_json::Value {
        let count = |name: &str| json!({"Name": name, "Unit": "Count"});
        json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": "Collections",
                    "Dimensions": [["Stage"]],
                    "Metrics": [count("RecordsIn"), count("Succeeded"), count("Failed"),
                                {"Name": "DurationMs", "Unit": "Milliseconds"}, count("ApiCalls")]
                }]
            },
            "Stage": self.stage,
            "RecordsIn": self.records_in,
            "Succeeded": self.succeeded,
            "Failed": self.failed,
            "DurationMs": self.duration_ms,
            "ApiCalls": self.api_calls,
        })
    }

    /// Writes the document as one line on stdout, where the Lambda agent finds it.
    pub fn emit(&self) {
        println!("{}", self.emf(chrono::Utc::now().timestamp_millis()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_document_declares_its_metrics() {
        let m =
            BatchMetrics { stage: "analysis", records_in: 5, succeeded: 4, failed: 1, duration_ms: 812, api_calls: 6 };
        let doc = m.emf(1_700_000_000_000);
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Collections");
        let names: Vec<&str> = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        for name in &names {
            assert!(doc.get(*name).is_some(), "{name} has a value");
        }
        assert_eq!((doc["Stage"].as_str(), doc["Failed"].as_u64()), (Some("analysis"), Some(1)));
    }
}
