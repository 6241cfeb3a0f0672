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
pub mod keyed;
pub mod testing;
pub mod window;

pub use config::{Config, Error};
pub use event::{Emit, Event, JsonObject, Output};
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
/// `out` then holds what the events before it gave (the component drops it).
pub fn run_batch<O: Operator>(
    operator: &mut O,
    input: &[u8],
    out: &mut Output,
) -> Result<(), BatchError> {
    // One walk over the batch, checking its format as it goes (the events
    // a guest receives are read once, not validated first and read again).
    let mut index = 0u32;
    let mut failed = None;
    let walked = batch::read_events(input, |event| {
        if failed.is_none()
            && let Err(e) = operator.process(&Event::new(event, index), out)
        {
            failed = Some(BatchError {
                message: e.to_string(),
                event_index: Some(index),
            });
        }
        index = index.saturating_add(1);
    });
    if let Some(error) = failed {
        return Err(error);
    }
    walked.map_err(|e| BatchError {
        message: e.to_string(),
        event_index: None,
    })?;
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
            use weir::stateless::exports::weir::operator::stateless::Guest;
            use weir::stateless::weir::operator::types::{ConfigEntry, OperatorError};
            use $crate::__private as weir;

            $crate::__weir_instance!($operator);

            struct WeirExport;

            impl Guest for WeirExport {
                fn init(
                    config: ::std::vec::Vec<ConfigEntry>,
                ) -> ::std::result::Result<(), OperatorError> {
                    let config = weir::config(config.into_iter().map(|e| (e.key, e.value)));
                    let instance = <$operator as $crate::Operator>::new(&config).map_err(|e| {
                        OperatorError {
                            message: e.to_string(),
                            event_index: None,
                        }
                    })?;
                    INSTANCE
                        .with(|slot| *slot.borrow_mut() = ::std::option::Option::Some(instance));
                    ::std::result::Result::Ok(())
                }

                fn process(
                    batch: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, OperatorError> {
                    with_instance(|operator| {
                        let mut out = $crate::Output::with_capacity(batch.len());
                        $crate::run_batch(operator, &batch, &mut out)?;
                        ::std::result::Result::Ok(out.finish())
                    })
                    .map_err(|e| OperatorError {
                        message: e.message,
                        event_index: e.event_index,
                    })
                }
            }

    weir::stateless::export!(WeirExport with_types_in weir::stateless);
        };
    };
}

/// Exports a [`window::Aggregate`] type as the component's
/// `weir:operator/aggregate` implementation (see [`export_operator!`]).
#[macro_export]
macro_rules! export_aggregate {
    ($aggregate:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use weir::aggregate::exports::weir::operator::aggregate::Guest;
            use weir::aggregate::exports::weir::operator::aggregate_slices::Guest as SlicesGuest;
            use weir::aggregate::weir::operator::types::{ConfigEntry, OperatorError};
            use $crate::__private as weir;
            use $crate::window as w;

            $crate::__weir_instance!($aggregate);

            fn error(e: $crate::BatchError) -> OperatorError {
                OperatorError {
                    message: e.message,
                    event_index: e.event_index,
                }
            }

            struct WeirExport;

            impl Guest for WeirExport {
                fn init(
                    config: ::std::vec::Vec<ConfigEntry>,
                ) -> ::std::result::Result<(), OperatorError> {
                    let config = weir::config(config.into_iter().map(|e| (e.key, e.value)));
                    let instance =
                        <$aggregate as w::Aggregate>::new(&config).map_err(|e| OperatorError {
                            message: e.to_string(),
                            event_index: None,
                        })?;
                    INSTANCE
                        .with(|slot| *slot.borrow_mut() = ::std::option::Option::Some(instance));
                    ::std::result::Result::Ok(())
                }

                fn add(
                    accumulators: ::std::vec::Vec<u8>,
                    events: ::std::vec::Vec<u8>,
                    assignments: ::std::vec::Vec<u32>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, OperatorError> {
                    with_instance(|a| w::run_add(a, &accumulators, &events, &assignments))
                        .map_err(error)
                }

                fn merge(
                    left: ::std::vec::Vec<u8>,
                    right: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, OperatorError> {
                    with_instance(|a| w::run_merge(a, &left, &right)).map_err(error)
                }

                fn get_result(
                    windows: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, OperatorError> {
                    with_instance(|a| {
                        let mut out = $crate::Output::new();
                        w::run_result(a, &windows, &mut out)?;
                        ::std::result::Result::Ok(out.finish())
                    })
                    .map_err(error)
                }
            }

            impl SlicesGuest for WeirExport {
                fn get_result_of_slices(
                    windows: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, OperatorError> {
                    with_instance(|a| {
                        let mut out = $crate::Output::new();
                        w::run_result_of_slices(a, &windows, &mut out)?;
                        ::std::result::Result::Ok(out.finish())
                    })
                    .map_err(error)
                }
            }

    weir::aggregate::export!(WeirExport with_types_in weir::aggregate);
        };
    };
}

/// Exports a [`window::WindowFunction`] type as the component's
/// `weir:operator/window` implementation (see [`export_operator!`]).
#[macro_export]
macro_rules! export_window {
    ($function:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use weir::window::exports::weir::operator::window::Guest;
            use weir::window::weir::operator::types::{ConfigEntry, OperatorError};
            use $crate::__private as weir;

            $crate::__weir_instance!($function);

            struct WeirExport;

            impl Guest for WeirExport {
                fn init(
                    config: ::std::vec::Vec<ConfigEntry>,
                ) -> ::std::result::Result<(), OperatorError> {
                    let config = weir::config(config.into_iter().map(|e| (e.key, e.value)));
                    let instance = <$function as $crate::window::WindowFunction>::new(&config)
                        .map_err(|e| OperatorError {
                            message: e.to_string(),
                            event_index: None,
                        })?;
                    INSTANCE
                        .with(|slot| *slot.borrow_mut() = ::std::option::Option::Some(instance));
                    ::std::result::Result::Ok(())
                }

                fn process(
                    windows: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, OperatorError> {
                    with_instance(|f| {
                        let mut out = $crate::Output::new();
                        $crate::window::run_windows(f, &windows, &mut out)?;
                        ::std::result::Result::Ok(out.finish())
                    })
                    .map_err(|e| OperatorError {
                        message: e.message,
                        event_index: e.event_index,
                    })
                }
            }

    weir::window::export!(WeirExport with_types_in weir::window);
        };
    };
}

/// Exports a [`keyed::KeyedProcess`] type as the component's
/// `weir:operator/keyed-process` implementation (see [`export_operator!`]).
#[macro_export]
macro_rules! export_keyed_process {
    ($function:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use weir::keyed::exports::weir::operator::keyed_process::Guest;
            use weir::keyed::weir::operator::types::{ConfigEntry, OperatorError};
            use $crate::__private as weir;

            $crate::__weir_instance!($function);

            struct WeirExport;

            impl Guest for WeirExport {
                fn init(
                    config: ::std::vec::Vec<ConfigEntry>,
                ) -> ::std::result::Result<(), OperatorError> {
                    let config = weir::config(config.into_iter().map(|e| (e.key, e.value)));
                    let instance = <$function as $crate::keyed::KeyedProcess>::new(&config)
                        .map_err(|e| OperatorError {
                            message: e.to_string(),
                            event_index: None,
                        })?;
                    INSTANCE
                        .with(|slot| *slot.borrow_mut() = ::std::option::Option::Some(instance));
                    ::std::result::Result::Ok(())
                }

                fn process(
                    call: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, OperatorError> {
                    with_instance(|f| $crate::keyed::run_keyed(f, &call)).map_err(|e| {
                        OperatorError {
                            message: e.message,
                            event_index: e.event_index,
                        }
                    })
                }
            }

    weir::keyed::export!(WeirExport with_types_in weir::keyed);
        };
    };
}

/// The per-instance slot the export macros keep the user's type in.
#[doc(hidden)]
#[macro_export]
macro_rules! __weir_instance {
    ($ty:ty) => {
        ::std::thread_local! {
            static INSTANCE: ::std::cell::RefCell<::std::option::Option<$ty>> =
                const { ::std::cell::RefCell::new(::std::option::Option::None) };
        }

        fn with_instance<R>(
            f: impl FnOnce(&mut $ty) -> ::std::result::Result<R, $crate::BatchError>,
        ) -> ::std::result::Result<R, $crate::BatchError> {
            INSTANCE.with(|slot| match slot.borrow_mut().as_mut() {
                ::std::option::Option::Some(instance) => f(instance),
                ::std::option::Option::None => ::std::result::Result::Err($crate::BatchError {
                    message: "called before init".to_string(),
                    event_index: ::std::option::Option::None,
                }),
            })
        }
    };
}

/// Support for the export macros; not a public API.
#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
pub mod __private {
    use crate::Config;

    #[allow(missing_docs, unsafe_code, reason = "generated component bindings")]
    pub mod stateless {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "stateless-operator",
            pub_export_macro: true,
        });
    }

    #[allow(missing_docs, unsafe_code, reason = "generated component bindings")]
    pub mod aggregate {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "sliced-aggregate-operator",
            pub_export_macro: true,
        });
    }

    #[allow(missing_docs, unsafe_code, reason = "generated component bindings")]
    pub mod window {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "window-operator",
            pub_export_macro: true,
        });
    }

    #[allow(missing_docs, unsafe_code, reason = "generated component bindings")]
    pub mod keyed {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "keyed-process-operator",
            pub_export_macro: true,
        });
    }

    pub fn config(pairs: impl Iterator<Item = (String, String)>) -> Config {
        Config::from_pairs(pairs)
    }
}
