//! The analyzer stage: reads each thumbnail, has a vision provider analyse
//! it (calls concurrent under a limit, retried on transient faults), stores
//! the batch's analyses in one statement, and publishes `AnalysisComplete`
//! for each stored one.

pub mod analyze;
pub mod batches;
pub mod calls;
pub mod config;

pub use analyze::Analyzer;
pub use batches::BatchDriver;
pub use config::AnalyzerConfig;
