//! How stages run: the [`stage::Stage`] shape, outcomes and failures, the
//! batch context (trace id, deadline, per-batch meter), the one batch
//! runner with its failure rules, the ports a stage runs on (object store,
//! event bus) with their local stand-ins, and telemetry. Lambda handlers
//! (`aws`) and the local pipeline (`collections`) both run stages here.

pub mod batch;
pub mod bus;
pub mod failures;
pub mod outcome;
pub mod runner;
pub mod stage;
pub mod storage;
pub mod telemetry;
