//! One module per command: its flags, parsed into typed values, and what
//! it does with them. `main.rs` only dispatches.

pub mod backfill;
pub mod batches;
pub mod delete;
pub mod erase;
pub mod failures;
pub mod migrate;
pub mod prune;
pub mod prune_analyses;
pub mod reanalyze;
pub mod redrive;
pub mod reembed;
pub mod retry;
pub mod run;
pub mod search;
pub mod serve;
pub mod stats;
pub mod thumbnail;
pub mod vector_index;

/// A rate above zero (objects a second).
pub(crate) fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!("{text:?} is not a rate above zero")),
    }
}
