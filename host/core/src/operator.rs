//! The host's view of an operator: a batch in, a batch out.
//!
//! `weir-wasm` implements this for components; tests and benchmarks
//! implement it natively. The trait mirrors the WIT `stateless` interface.

/// How an operator failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The operator returned an error on purpose.
    Reported,
    /// The guest trapped (panic, unreachable, stack overflow…).
    Trap,
    /// A call ran past its CPU deadline.
    Deadline,
    /// The guest tried to grow its memory past the cap.
    MemoryCap,
    /// One call returned more bytes than the output cap.
    OutputCap,
    /// The guest returned a batch that does not follow the wire format.
    BadOutput,
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailureKind::Reported => "reported an error",
            FailureKind::Trap => "trapped",
            FailureKind::Deadline => "ran past its CPU deadline",
            FailureKind::MemoryCap => "exceeded its memory cap",
            FailureKind::OutputCap => "exceeded its output cap",
            FailureKind::BadOutput => "returned a malformed batch",
        })
    }
}

/// An operator failure on a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorFailure {
    /// How it failed.
    pub kind: FailureKind,
    /// The details (the guest's message, the trap, the limit).
    pub message: String,
    /// Index in the input batch of the event that failed, when known.
    pub event_index: Option<usize>,
    /// The output for the events before `event_index`, in the wire format,
    /// so that nothing the operator accepted is lost.
    pub output_before: Vec<u8>,
}

/// An operator as the runtime drives it.
pub trait Operator: Send {
    /// The operator's name from the pipeline file.
    fn name(&self) -> &str;

    /// Processes one batch (wire format) and returns the output batch.
    ///
    /// # Errors
    /// An [`OperatorFailure`] naming the failing event when it can be found.
    /// After a failure the operator stays usable: a trapped instance is
    /// replaced by a fresh one on the next call.
    fn process(&mut self, batch: &[u8]) -> Result<Vec<u8>, OperatorFailure>;
}
