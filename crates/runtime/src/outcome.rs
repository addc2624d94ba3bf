//! What became of each input of a batch ([`Outcome`]), and why an item
//! failed ([`Failure`]: its reason, and whether another delivery could help).

use domain::retry::Retriable;

/// What became of one input of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored, and the next stage's event published (or, last stage, finished).
    Done,
    /// Deliberately not processed (a thumbnail key, another file type, work
    /// already done for the same version), with why.
    Skipped(String),
    /// Handed to a provider's batch API (`--batch-api`): neither done nor
    /// failed yet; it goes on when the batch's result is stored, with why.
    Queued(String),
    Failed(Failure),
}

/// Whether delivering an item again could help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A later attempt may succeed (timeouts, throttling, an unreachable service).
    Later,
    /// The same input will fail the same way (a corrupt image, a refused value).
    Never,
    /// Not the input's fault but the deployment's (a rejected key, an
    /// unknown model): nothing is recorded on the item, the input is
    /// delivered again, and a local run stops.
    Configuration,
    /// Not the input's fault but the provider's, out (overloaded, not
    /// answering) for longer than the retries' budget: nothing is recorded
    /// on the item, which stays pending; the input is delivered again (a
    /// local run leaves it for the next run).
    Outage,
}

/// Why an item failed, and whether another delivery could help. The batch
/// runner records every failure (on the item's row, or in the table of
/// record failures) and has the retriable ones delivered again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Says what failed and for which item.
    pub reason: String,
    pub retry: Retry,
    /// The input's claims about whose it is did not check out (an analysis
    /// that is not the user's, a key that is not the item's): the failure is
    /// the record's alone, never written on the item or user it names.
    pub refutes_subject: bool,
    /// What the item's user is told, when there is more to say than which
    /// stage failed ([`domain::stage::StageName::public_failure`]): never
    /// a provider's or the database's words, which stay in `reason`.
    pub public: Option<&'static str>,
}

impl Failure {
    /// A failure another attempt may cure.
    pub fn transient(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), retry: Retry::Later, refutes_subject: false, public: None }
    }

    /// A failure the same input will meet again.
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), retry: Retry::Never, refutes_subject: false, public: None }
    }

    /// The input names a user or item that its own content, or the
    /// database, contradicts: permanent, and recorded as the record's
    /// failure only (see [`Failure::refutes_subject`]).
    pub fn refused(reason: impl Into<String>) -> Self {
        Self { refutes_subject: true, ..Self::permanent(reason) }
    }

    /// `doing` (e.g. "reading the thumbnail") failed with `error`; retriable
    /// when the error is.
    pub fn of(doing: impl std::fmt::Display, error: &dyn Retriable) -> Self {
        Self::caused_by(format!("{doing} failed: {error}"), error)
    }

    /// A failure told by an error that already says what failed (a
    /// database error names its operation), retriable when it is.
    pub fn from_error(error: &dyn Retriable) -> Self {
        Self::caused_by(error.to_string(), error)
    }

    /// A failure told in `reason`, retriable when `error`, its cause, is;
    /// a configuration fault or an outage when the cause is one.
    pub fn caused_by(reason: String, error: &dyn Retriable) -> Self {
        if error.is_configuration_fault() {
            Self::configuration(reason)
        } else if error.is_outage() && error.is_retriable() {
            Self::outage(reason)
        } else if error.is_retriable() {
            Self::transient(reason)
        } else {
            Self::permanent(reason)
        }
    }

    /// The deployment is at fault, not the input ([`Retry::Configuration`]).
    pub fn configuration(reason: impl Into<String>) -> Self {
        Self { retry: Retry::Configuration, ..Self::permanent(reason) }
    }

    /// The provider was out past the retries' budget ([`Retry::Outage`]).
    pub fn outage(reason: impl Into<String>) -> Self {
        Self { retry: Retry::Outage, ..Self::permanent(reason) }
    }

    /// `work` (e.g. "analysing u/a.jpg with model") was still running when
    /// the invocation's deadline came: worth another delivery.
    pub fn cut_off(work: impl std::fmt::Display) -> Self {
        Self::transient(format!("{work} was cut off: the invocation ran out of time"))
    }

    /// The same failure, told to the item's user as `public`.
    pub fn told(self, public: &'static str) -> Self {
        Self { public: Some(public), ..self }
    }

    pub fn is_retriable(&self) -> bool {
        self.retry == Retry::Later
    }

    pub fn is_configuration_fault(&self) -> bool {
        self.retry == Retry::Configuration
    }

    /// Neither the input's fault nor final: nothing is recorded on the
    /// item (a configuration fault or an outage).
    pub fn is_not_the_inputs(&self) -> bool {
        matches!(self.retry, Retry::Configuration | Retry::Outage)
    }
}

impl From<Failure> for Outcome {
    fn from(failure: Failure) -> Self {
        Self::Failed(failure)
    }
}
