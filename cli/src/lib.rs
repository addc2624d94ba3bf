//! The collections pipeline on one machine: the same stage code as the
//! Lambdas, wired to local adapters (a folder for S3, channels for
//! Kinesis and EventBridge) by [`components::Components`].

pub mod backfill;
pub mod components;
pub mod erase;
pub mod ingest;
pub mod pipeline;
pub mod reanalyze;
pub mod reembed;
pub mod report;
pub mod stats;
pub mod streams;
pub mod thumbnail;
