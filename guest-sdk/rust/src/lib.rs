//! Write Weir operators in Rust.
//!
//! An operator is a type implementing [`Operator`]: it is built once from its
//! configuration and then sees every event of its input, emitting zero or
//! more events per input into an [`Output`]. Filters, maps and flat-maps all
//! have this shape. [`export_operator!`] turns the type into a WebAssembly
//! component implementing the `weir:operator/stateless` interface of
//! `wit/operator.wit`; build it with
//! `cargo build --target wasm32-wasip2 --release`.
//!
//! Events arrive in batches, as one flat buffer the SDK reads in place:
//! [`Event`] borrows its key, value and headers from that buffer, and
//! [`Output`] writes results straight into the outgoing buffer, so a typical
//! operator does no allocation per event beyond its own logic.
//!
//! ```
//! use weir_guest::{Config, Error, Event, Operator, Output};
//!
//! /// Keeps events whose `"level"` field is at least `min_level`.
//! struct MinLevel {
//!     min: u64,
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct Log {
//!     level: u64,
//! }
//!
//! impl Operator for MinLevel {
//!     fn new(config: &Config) -> Result<Self, Error> {
//!         Ok(MinLevel { min: config.parse_or("min_level", 3)? })
//!     }
//!
//!     fn process(&mut self, event: &Event<'_>, out: &mut Output) -> Result<(), Error> {
//!         let log: Log = event.json()?;
//!         if log.level >= self.min {
//!             out.forward(event);
//!         }
//!         Ok(())
//!     }
//! }
//!
//! weir_guest::export_operator!(MinLevel);
//!
//! // The same type runs natively, which is how operators are unit-tested:
//! let out = weir_guest::testing::run::<MinLevel>(
//!     &[("min_level", "2")],
//!     &[r#"{"level":1}"#, r#"{"level":5}"#],
//! )?;
//! assert_eq!(out, vec![r#"{"level":5}"#.to_string()]);
//! # Ok::<(), weir_guest::Error>(())
//! ```

mod config;
mod event;
pub mod testing;

pub use config::{Config, Error};
pub use event::{Emit, Event, Output};
pub use weir_batch as batch;

/// A stateless operator: each input event yields zero or more output events.
///
/// The host creates one instance per parallel subtask, calls
/// [`Operator::new`] once, then [`Operator::process`] for every event in
/// order. An `Err` from `process` fails the pipeline with the error message,
/// the operator's name and the position of the event; events already
/// emitted for earlier inputs of the batch are kept.
pub trait Operator: Sized + 'static {
    /// Builds the operator from its configuration.
    ///
    /// # Errors
    /// A missing or unparsable setting: the pipeline does not start and the
    /// message is shown to the user.
    fn new(config: &Config) -> Result<Self, Error>;

    /// Handles one event, writing any results into `out`.
    ///
    /// # Errors
    /// An event the operator cannot handle (wrong shape, bad value).
    fn process(&mut self, event: &Event<'_>, out: &mut Output) -> Result<(), Error>;
}

/// An error for one event of a batch, as the host receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    /// What went wrong.
    pub message: String,
    /// Index in the input batch of the event that failed, if any.
    pub event_index: Option<u32>,
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.event_index {
            Some(i) => write!(f, "event #{i}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for BatchError {}

/// Runs `operator` over one encoded input batch, appending results to `out`.
///
/// This is exactly what the exported component does per call, so native
/// benchmarks and tests exercise the same code path as the sandboxed guest.
///
/// # Errors
/// A malformed batch, or the first event `operator` rejected (with its index).
pub fn run_batch<O: Operator>(
    operator: &mut O,
    input: &[u8],
    out: &mut Output,
) -> Result<(), BatchError> {
    let batch = batch::Batch::new(input).map_err(|e| BatchError {
        message: e.to_string(),
        event_index: None,
    })?;
    for (index, event) in batch.iter().enumerate() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let event = Event::new(event, index);
        operator.process(&event, out).map_err(|e| BatchError {
            message: e.to_string(),
            event_index: Some(index),
        })?;
    }
    Ok(())
}

/// Exports an [`Operator`] type as the component's `weir:operator/stateless`
/// implementation. Use it once per crate; it does nothing when the crate is
/// compiled for a native target, so the same crate can be tested natively.
#[macro_export]
macro_rules! export_operator {
    ($operator:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use weir::bindings::exports::weir::operator::stateless::Guest;
            use weir::bindings::weir::operator::types::{ConfigEntry, OperatorError};
            use $crate::__private as weir;

            ::std::thread_local! {
                static OPERATOR: ::std::cell::RefCell<::std::option::Option<$operator>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }

            struct WeirExport;

            impl Guest for WeirExport {
                fn init(
                    config: ::std::vec::Vec<ConfigEntry>,
                ) -> ::std::result::Result<(), OperatorError> {
                    let operator = weir::init::<$operator>(config)?;
                    OPERATOR
                        .with(|slot| *slot.borrow_mut() = ::std::option::Option::Some(operator));
                    ::std::result::Result::Ok(())
                }

                fn process(
                    batch: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, OperatorError> {
                    OPERATOR.with(|slot| match slot.borrow_mut().as_mut() {
                        ::std::option::Option::Some(operator) => weir::process(operator, &batch),
                        ::std::option::Option::None => {
                            ::std::result::Result::Err(weir::not_initialised())
                        }
                    })
                }
            }

    weir::bindings::export!(WeirExport with_types_in weir::bindings);
        };
    };
}

/// Support for [`export_operator!`]; not a public API.
#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
pub mod __private {
    use crate::{Config, Operator, Output};

    #[allow(missing_docs, unsafe_code, reason = "generated component bindings")]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "stateless-operator",
            pub_export_macro: true,
        });
    }

    use bindings::weir::operator::types::{ConfigEntry, OperatorError};

    pub fn init<O: Operator>(config: Vec<ConfigEntry>) -> Result<O, OperatorError> {
        let config = Config::from_pairs(config.into_iter().map(|e| (e.key, e.value)));
        O::new(&config).map_err(|e| OperatorError {
            message: e.to_string(),
            event_index: None,
        })
    }

    pub fn process<O: Operator>(operator: &mut O, batch: &[u8]) -> Result<Vec<u8>, OperatorError> {
        let mut out = Output::with_capacity(batch.len());
        crate::run_batch(operator, batch, &mut out).map_err(|e| OperatorError {
            message: e.message,
            event_index: e.event_index,
        })?;
        Ok(out.finish())
    }

    pub fn not_initialised() -> OperatorError {
        OperatorError {
            message: "process called before init".to_string(),
            event_index: None,
        }
    }
}
