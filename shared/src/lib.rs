//! The common library of the collections pipeline: event contracts, object keys,
//! configuration, database access, and the ports (traits) that stages run on,
//! each with a local adapter.

pub mod api;
pub mod aws;
pub mod bus;
pub mod config;
pub mod db;
pub mod embedding;
pub mod events;
pub mod keys;
pub mod lambda;
pub mod llm;
pub mod retry;
pub mod runner;
pub mod stage;
pub mod storage;
pub mod telemetry;
pub mod text;
pub mod usage;
