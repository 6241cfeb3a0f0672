//! The measurement behind the data plane's encoding: one batch of events
//! into a guest and back, as a typed `list<event>` (every key, value and
//! header lifted and lowered on its own) or as one `list<u8>` in the wire
//! format that the guest reads in place. The guest is the `crossing` test
//! fixture (`tests/fixtures/crossing`, world `weir:crossing/echo`);
//! `weir bench crossing` times both against the same echo done natively.
//! ARCHITECTURE.md ("The data plane") holds the figures.

use std::path::Path;
use std::sync::Arc;

use wasmtime::Store;
use weir_batch::{Batch, BatchWriter};
use weir_core::operator::{FailureKind, Operator, OperatorFailure};

use crate::engine::{HostState, WasmEngine};
use crate::operator::{deadline_ticks, sandboxed_store};
use crate::{Limits, WasmError};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../tests/fixtures/crossing/wit",
        world: "crossing",
    });
}

use bindings::exports::weir::crossing::echo::Event;

/// How a [`Crossing`] passes batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A `list<event>` of typed records. The host turns each wire-format
    /// batch into records before the call and the records it gets back
    /// into a batch after, as a host holding its events in the wire format
    /// must.
    Records,
    /// One `list<u8>` in the wire format, read in place by the guest.
    Flat,
}

impl Encoding {
    /// The name `weir bench crossing` reports.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Records => "records",
            Encoding::Flat => "flat",
        }
    }
}

/// An instance of the crossing fixture, driven like an operator whose
/// output is its input.
pub struct Crossing {
    encoding: Encoding,
    store: Store<HostState>,
    bindings: bindings::Crossing,
    deadline: u64,
}

impl Crossing {
    /// Loads and instantiates the fixture at `path` with Weir's engine,
    /// sandbox and default limits.
    ///
    /// # Errors
    /// The file is missing, not a component, or not the crossing world.
    pub fn new(engine: &WasmEngine, path: &Path, encoding: Encoding) -> Result<Self, WasmError> {
        let (component, _) = engine.compile(path)?;
        let link = |e: wasmtime::Error| WasmError::Link {
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        };
        let pre = engine.linker.instantiate_pre(&component).map_err(link)?;
        let pre = bindings::CrossingPre::new(pre).map_err(link)?;
        let limits = Limits::default();
        let (mut store, _stderr) = sandboxed_store(&engine.engine, Arc::from("crossing"), &limits);
        let bindings = pre.instantiate(&mut store).map_err(|e| WasmError::Init {
            operator: "crossing".into(),
            reason: format!("{e:#}"),
        })?;
        Ok(Crossing {
            encoding,
            store,
            bindings,
            deadline: deadline_ticks(&limits),
        })
    }

    fn echo(&mut self, batch: &[u8]) -> Result<Vec<u8>, String> {
        self.store.set_epoch_deadline(self.deadline);
        let echo = self.bindings.weir_crossing_echo();
        match self.encoding {
            Encoding::Flat => echo
                .call_echo_flat(&mut self.store, batch)
                .map_err(|e| format!("{e:#}"))?,
            Encoding::Records => {
                let events = records(batch)?;
                let back = echo
                    .call_echo_records(&mut self.store, &events)
                    .map_err(|e| format!("{e:#}"))?;
                let mut out = BatchWriter::with_capacity(batch.len());
                for event in &back {
                    let headers: Vec<(&[u8], &[u8])> = event
                        .headers
                        .iter()
                        .map(|(name, value)| (name.as_bytes(), value.as_slice()))
                        .collect();
                    out.push(
                        event.timestamp,
                        event.key.as_deref(),
                        &event.value,
                        &headers,
                    );
                }
                Ok(out.finish())
            }
        }
    }
}

/// A wire-format batch as typed records.
fn records(batch: &[u8]) -> Result<Vec<Event>, String> {
    let batch = Batch::new(batch).map_err(|e| e.to_string())?;
    batch
        .iter()
        .map(|event| {
            let headers = event
                .headers()
                .map(|(name, value)| {
                    let name = std::str::from_utf8(name)
                        .map_err(|_| "a header name that is not UTF-8".to_string())?;
                    Ok((name.to_string(), value.to_vec()))
                })
                .collect::<Result<_, String>>()?;
            Ok(Event {
                key: event.key.map(<[u8]>::to_vec),
                value: event.value.to_vec(),
                timestamp: event.timestamp,
                headers,
            })
        })
        .collect()
}

impl Operator for Crossing {
    fn name(&self) -> &str {
        self.encoding.name()
    }

    fn process(&mut self, batch: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        self.echo(batch).map_err(|message| OperatorFailure {
            kind: FailureKind::Trap,
            message,
            event_index: None,
            output_before: BatchWriter::new().finish(),
        })
    }
}
