//! Whether another attempt could succeed: the one question every error of
//! the pipeline answers, beside its own definition (the database's in
//! `store`, a provider's in `remote`, an object store's in `runtime`).

use std::time::Duration;

/// An error that knows whether trying again could help, and when.
pub trait Retriable: std::fmt::Display {
    /// A later attempt may succeed (timeouts, throttling, an unreachable
    /// service); the same input would fail the same way otherwise.
    fn is_retriable(&self) -> bool;

    /// The wait the other side asked for, if it did (`retry-after`).
    fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// The other side, not the request, is unwell: overloaded, not
    /// answering in time, or out of reach. Worth waiting out (within a
    /// budget), with fewer requests in flight meanwhile; never the input's
    /// fault, so when the wait runs out the input stays pending, not failed.
    fn is_outage(&self) -> bool {
        false
    }

    /// The deployment, not the input, is at fault (a rejected key, an
    /// unknown model or route): no item is to blame, and every other item
    /// would meet the same answer, so the line stops instead.
    fn is_configuration_fault(&self) -> bool {
        false
    }
}
