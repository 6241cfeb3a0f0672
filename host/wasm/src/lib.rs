//! The only Weir crate that touches wasmtime: it loads operator components,
//! checks they implement the contract in `wit/operator.wit`, and runs them
//! sandboxed behind [`weir_core::operator::Operator`].
//!
//! - One [`WasmEngine`] per process: Cranelift, the pooling allocator,
//!   epoch interruption for CPU deadlines, `concurrency_support(false)`
//!   (the component model's async machinery costs ~3x per call and we make
//!   synchronous calls only).
//! - Components are compiled once and cached on disk under the sha256 of
//!   their bytes; instances are pre-linked ([`wasmtime::component::InstancePre`]).
//! - Guests get no ambient authority: no preopened directories, no
//!   environment, no sockets, and clocks that always read zero. Their
//!   stdout/stderr become `tracing` log lines tagged with the operator,
//!   capped per instance.
//! - Each instance has a memory cap and each call a CPU deadline and an
//!   output cap ([`Limits`]). A trapped instance is dropped; the next call
//!   gets a fresh one.
//!
//! ```no_run
//! use weir_core::operator::Operator;
//! use weir_wasm::{Limits, WasmEngine};
//!
//! let engine = WasmEngine::new(None)?;
//! let component = engine.load("plugins/nexmark_q2.wasm".as_ref())?;
//! let mut q2 = engine.instantiate("q2", &component, &[], Limits::default())?;
//! let mut input = weir_batch::BatchWriter::new();
//! input.push(0, None, br#"{"auction":246,"price":5}"#, &[]);
//! let output = q2.process(&input.finish()).map_err(|f| f.message)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod crossing;
mod engine;
mod guest_log;
mod limits;
mod operator;

pub use engine::{
    CONTRACT_VERSION, ComponentInfo, LoadedComponent, STATELESS_EXPORT, WasmEngine, World,
};
pub use limits::Limits;
pub use operator::WasmOperator;

use std::path::PathBuf;

/// Why a component cannot be loaded or started.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The file cannot be read.
    #[error("cannot read operator {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a WebAssembly component.
    #[error("{path} is not a WebAssembly component: {reason}")]
    NotAComponent {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// The component does not implement the operator contract.
    #[error(
        "{path} does not implement a Weir operator world: expected an export `{expected}`, found exports [{found}]"
    )]
    WrongWorld {
        /// The file.
        path: PathBuf,
        /// The export the host needs.
        expected: String,
        /// What the component exports.
        found: String,
    },
    /// The component implements another version of the contract.
    #[error(
        "{path} was built against contract weir:operator@{found}; this host accepts weir:operator@{expected}"
    )]
    ContractVersion {
        /// The file.
        path: PathBuf,
        /// The version the host accepts.
        expected: String,
        /// The version the component exports.
        found: String,
    },
    /// The component needs imports this host does not provide.
    #[error("{path} cannot be linked: {reason}")]
    Link {
        /// The file.
        path: PathBuf,
        /// The linker's message (names the missing import).
        reason: String,
    },
    /// The operator's `init` refused its configuration, or trapped.
    #[error("operator `{operator}` failed to start: {reason}")]
    Init {
        /// The operator's name.
        operator: String,
        /// Why.
        reason: String,
    },
    /// wasmtime itself failed (engine set-up, compilation).
    #[error("{0}")]
    Engine(String),
}
