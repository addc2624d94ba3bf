//! The pipeline's domain: object keys and item ids, the events between
//! stages, the analysis schema, stage names, retry classification, text as
//! the database takes it, token usage, and reading settings. Depends on no
//! other crate of the workspace; every other crate depends on it.

pub mod analysis;
pub mod events;
pub mod keys;
pub mod retry;
pub mod settings;
pub mod stage;
pub mod subject;
pub mod text;
pub mod usage;
