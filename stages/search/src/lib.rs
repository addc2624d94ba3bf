//! The search service: one HTTP API over the stored items, hosted by the
//! `search` Lambda behind API Gateway (the caller is the JWT's user) and by
//! `collections serve` on this machine (the caller is `--user`, with the
//! gallery page and the thumbnails served too).
//!
//! - `GET /v1/search?q=&limit=&category=`: hybrid search of the caller's items.
//! - `GET /v1/items/{id}`: one of the caller's items, its latest analysis,
//!   its stage statuses and last failure.
//! - `GET /v1/items/{id}/similar?limit=`: "more like this", the caller's
//!   items nearest that item's stored vector (no provider call).
//! - `GET /v1/failures?limit=`: the caller's failed items and records.
//! - `GET /v1/categories`: the categories an analysis can have.
//!
//! Errors are JSON `{"error": "..."}`: 400 for bad input, 401 without a
//! user, 404 for an item that is not the caller's, 409 for similar items of
//! one not embedded yet, 429 (with `retry-after`)
//! past the caller's rate on Lambda, 503 (with `retry-after`) when the
//! embedding provider or the database is unavailable. No reply carries an
//! internal error's text: failures are told in their public words
//! (`public_error`, `public_reason`), the operator's detail stays in the
//! database and the logs.

pub mod api;
pub mod config;
pub mod gallery;
pub mod lambda;
pub mod limit;
pub mod links;
pub mod query;

pub use api::{Caller, SearchService, router};
