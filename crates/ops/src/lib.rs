//! The command line's own AWS tooling, which no Lambda compiles: putting
//! records on Kinesis streams (a backfill, re-analyses and re-embeds for
//! the functions), putting back what a stream's on-failure queue names
//! (redrive), and keeping a pace.

pub mod backfill;
pub mod kinesis;
pub mod redrive;
pub mod streams;
pub mod throttle;
