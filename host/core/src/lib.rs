//! Weir's runtime logic, free of wasmtime, RocksDB and Kafka: the pipeline
//! file, sources, sinks, batching, event time and watermarks, keys and key
//! groups, windows, the state interface, checkpoints (barriers, manifests,
//! the coordinator), and the threads that join them.
//!
//! Operators are anything implementing [`operator::Operator`] (batch in,
//! batch out) or [`window::WindowFunction`]; `weir-wasm` provides the
//! WebAssembly ones. State lives behind [`state::StateBackend`]
//! (`weir-state` provides RocksDB). Events travel in the wire format of
//! [`weir_batch`].
//!
//! ```
//! use std::sync::Arc;
//! use weir_core::{pipeline::PipelineSettings, runtime::Pipeline, sink::Blackhole, source::BidGenerator};
//!
//! let pipeline = Pipeline {
//!     settings: PipelineSettings::default(),
//!     watermark: Default::default(),
//!     sources: vec![Box::new(BidGenerator::new(1, Some(10_000)))],
//!     stages: vec![],
//!     sinks: vec![Box::new(Blackhole::default())],
//!     late: None,
//!     dead_letters: None,
//!     checkpointing: None,
//! };
//! let summary = pipeline.run(&Arc::default())?;
//! assert_eq!(summary.sinks[0].events, 10_000);
//! # Ok::<(), weir_core::runtime::RunError>(())
//! ```

mod channel;
pub mod checkpoint;
pub mod dead_letter;
pub mod keyed;
pub mod keys;
pub mod operator;
pub mod pipeline;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod state;
pub mod time;
pub mod window;
