//! The collections pipeline on one machine: the same stage code as the
//! Lambdas, wired to local adapters (a folder for S3, channels for Kinesis
//! and EventBridge) by [`components::Components`]; one module per command
//! under [`commands`], and what several commands share beside them.

pub mod commands;
pub mod components;
pub mod erase;
pub mod ingest;
pub mod pipeline;
pub mod reanalyze;
pub mod reembed;
pub mod report;
pub mod stats;
pub mod thumbnail;
