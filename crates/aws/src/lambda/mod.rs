//! The Lambda side of the batch runner: what a function is invoked with
//! ([`invocation`]), each stage's inputs read from it ([`records`]), the
//! batch's deadline ([`deadline`]), and the handler that runs a batch and
//! answers ([`handler`]).

pub mod deadline;
pub mod handler;
pub mod invocation;
pub mod records;

pub use deadline::{FUNCTION_TIMEOUT_SECS, batch_context, function_timeout};
pub use handler::{BatchError, DirectSummary, Handler, Reply};
pub use invocation::{Delivered, Event, Invocation};
pub use records::EventInput;
