//! The integration tests, one binary: each module tests one capability
//! against the real PostgreSQL + pgvector (a fresh database per test) and,
//! where AWS is involved, the local AWS endpoint (`moto_server`), with the
//! paid providers played by local servers speaking their formats. One
//! binary links once and runs everything (CI kept pruning 18 of them).

mod analyzer;
mod architecture;
mod aws;
mod batch_api;
mod configuration;
mod database_role;
mod duplicates;
mod embedder;
mod erase;
mod isolation;
mod migrations;
mod pipeline;
mod reanalyze;
mod reembed;
mod search;
mod search_api;
mod seed_events;
mod stats;
mod thumbnail_formats;
mod thumbnail_stage;
