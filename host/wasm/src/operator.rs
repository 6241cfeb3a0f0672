//! A component-backed operator.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};
use weir_batch::{Batch, BatchWriter};
use weir_core::operator::{FailureKind, Operator, OperatorFailure};

use crate::WasmError;
use crate::engine::{EPOCH_TICK, HostState, LoadedComponent, WasmEngine};
use crate::guest_log::GuestLog;
use crate::limits::{Limits, MemoryCap};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "stateless-operator",
    });
}

use bindings::StatelessOperator;
use bindings::weir::operator::types::{ConfigEntry, OperatorError};

/// One sandboxed instance of an operator component, restarted fresh after
/// any trap.
pub struct WasmOperator {
    name: Arc<str>,
    component: Arc<LoadedComponent>,
    engine: wasmtime::Engine,
    config: Vec<ConfigEntry>,
    limits: Limits,
    live: Option<Instance>,
}

struct Instance {
    store: Store<HostState>,
    bindings: StatelessOperator,
    stderr: GuestLog,
}

/// A call that did not return normally.
enum CallError {
    Reported(OperatorError),
    Failed(FailureKind, String),
}

impl WasmEngine {
    /// Starts an instance of `component` named `name`, running its `init`
    /// with `config`.
    ///
    /// # Errors
    /// [`WasmError::Init`] when `init` returns an error or traps.
    pub fn instantiate(
        &self,
        name: &str,
        component: &Arc<LoadedComponent>,
        config: &[(String, String)],
        limits: Limits,
    ) -> Result<WasmOperator, WasmError> {
        let mut operator = WasmOperator {
            name: name.into(),
            component: component.clone(),
            engine: self.engine.clone(),
            config: config
                .iter()
                .map(|(key, value)| ConfigEntry {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            limits,
            live: None,
        };
        operator.instance().map_err(|reason| WasmError::Init {
            operator: name.to_string(),
            reason,
        })?;
        Ok(operator)
    }
}

/// Wall and monotonic clocks that always read zero: guests get no real time.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        0
    }
}

impl WasmOperator {
    /// The component file this operator runs.
    pub fn component_path(&self) -> &std::path::Path {
        &self.component.path
    }

    /// The live instance, creating (and initialising) one if needed.
    fn instance(&mut self) -> Result<&mut Instance, String> {
        if self.live.is_none() {
            self.live = Some(self.start()?);
        }
        self.live
            .as_mut()
            .ok_or_else(|| "instance vanished".to_string())
    }

    fn start(&self) -> Result<Instance, String> {
        let (stdout, stderr) = GuestLog::pair(self.name.clone(), self.limits.max_log_bytes);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout)
            .stderr(stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap {
                cap: self.limits.memory_bytes,
                refused: None,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.memory);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks());
        let bindings = self
            .component
            .pre
            .instantiate(&mut store)
            .map_err(|e| format!("cannot instantiate: {e:#}"))?;
        let mut instance = Instance {
            store,
            bindings,
            stderr,
        };
        instance.store.set_epoch_deadline(self.deadline_ticks());
        let result = instance
            .bindings
            .weir_operator_stateless()
            .call_init(&mut instance.store, &self.config);
        match result {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(e)) => Err(e.message),
            Err(e) => {
                let (kind, message) = self.classify(&mut instance, &e);
                Err(format!("{kind}: {message}"))
            }
        }
    }

    /// The per-call CPU deadline in epoch ticks.
    fn deadline_ticks(&self) -> u64 {
        let ticks = self.limits.timeout.as_nanos() / EPOCH_TICK.as_nanos();
        u64::try_from(ticks.max(1)).unwrap_or(u64::MAX)
    }

    /// One `process` call on the live instance; a trap drops the instance.
    fn call(&mut self, batch: &[u8]) -> Result<Vec<u8>, CallError> {
        let deadline = self.deadline_ticks();
        let instance = self
            .instance()
            .map_err(|e| CallError::Failed(FailureKind::Trap, format!("restart failed: {e}")))?;
        instance.store.set_epoch_deadline(deadline);
        let result = instance
            .bindings
            .weir_operator_stateless()
            .call_process(&mut instance.store, batch);
        match result {
            Ok(Ok(out)) => {
                if out.len() > self.limits.max_output_bytes {
                    return Err(CallError::Failed(
                        FailureKind::OutputCap,
                        format!(
                            "returned {} bytes; the cap is {} bytes (max_output_mb)",
                            out.len(),
                            self.limits.max_output_bytes
                        ),
                    ));
                }
                Batch::new(&out)
                    .map_err(|e| CallError::Failed(FailureKind::BadOutput, e.to_string()))?;
                Ok(out)
            }
            Ok(Err(reported)) => Err(CallError::Reported(reported)),
            Err(e) => {
                let mut instance = self.live.take().ok_or(CallError::Failed(
                    FailureKind::Trap,
                    "instance vanished".into(),
                ))?;
                let (kind, message) = self.classify(&mut instance, &e);
                Err(CallError::Failed(kind, message))
            }
        }
    }

    /// Names a trap: deadline, memory cap, stack overflow or another trap,
    /// with the guest's last stderr line (a Rust panic message) when any.
    fn classify(&self, instance: &mut Instance, error: &wasmtime::Error) -> (FailureKind, String) {
        if let Some(desired) = instance.store.data_mut().memory.refused.take() {
            return (
                FailureKind::MemoryCap,
                format!(
                    "tried to grow its memory to {} MiB; the cap is {} MiB (memory_mb)",
                    desired >> 20,
                    self.limits.memory_bytes >> 20
                ),
            );
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => (
                FailureKind::Deadline,
                format!(
                    "no result within {} ms (timeout_ms)",
                    self.limits.timeout.as_millis()
                ),
            ),
            Some(trap) => {
                let mut message = trap.to_string();
                if let Some(line) = instance.stderr.last_stderr() {
                    message.push_str(&format!("; guest stderr: {line}"));
                }
                (FailureKind::Trap, message)
            }
            None => (FailureKind::Trap, format!("{error:#}")),
        }
    }

    /// After a failed batch: runs the events before `index` (or, when the
    /// failing event is unknown, each event alone until one fails) so the
    /// output for everything accepted before the failure is kept.
    fn salvage(
        &mut self,
        batch: &Batch<'_>,
        known_index: Option<usize>,
    ) -> (Option<usize>, Vec<u8>, Option<(FailureKind, String)>) {
        let mut kept = BatchWriter::new();
        if let Some(index) = known_index {
            let mut prefix = BatchWriter::new();
            for event in batch.iter().take(index) {
                prefix.push_event(&event);
            }
            return match self.call(&prefix.finish()) {
                Ok(out) => (Some(index), out, None),
                Err(_) => (Some(index), kept.finish(), None),
            };
        }
        for (index, event) in batch.iter().enumerate() {
            let mut single = BatchWriter::new();
            single.push_event(&event);
            match self.call(&single.finish()) {
                Ok(out) => {
                    if let Ok(out) = Batch::new(&out) {
                        out.iter().for_each(|e| kept.push_event(&e));
                    }
                }
                Err(CallError::Failed(kind, message)) => {
                    return (Some(index), kept.finish(), Some((kind, message)));
                }
                Err(CallError::Reported(e)) => {
                    return (
                        Some(index),
                        kept.finish(),
                        Some((FailureKind::Reported, e.message)),
                    );
                }
            }
        }
        (None, kept.finish(), None)
    }
}

impl Operator for WasmOperator {
    fn name(&self) -> &str {
        &self.name
    }

    fn process(&mut self, input: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        let (kind, message, index) = match self.call(input) {
            Ok(out) => return Ok(out),
            Err(CallError::Reported(e)) => (
                FailureKind::Reported,
                e.message,
                e.event_index.map(|i| i as usize),
            ),
            Err(CallError::Failed(kind, message)) => (kind, message, None),
        };
        let batch = Batch::new(input).map_err(|e| OperatorFailure {
            kind: FailureKind::BadOutput,
            message: format!("input batch: {e}"),
            event_index: None,
            output_before: BatchWriter::new().finish(),
        })?;
        let whole_batch_limit = matches!(kind, FailureKind::OutputCap | FailureKind::BadOutput);
        let (event_index, output_before, replayed) = if whole_batch_limit && batch.len() <= 1 {
            (None, BatchWriter::new().finish(), None)
        } else {
            self.salvage(&batch, index)
        };
        // Prefer the replay's account of the single failing event.
        let (kind, message) = replayed.unwrap_or((kind, message));
        Err(OperatorFailure {
            kind,
            message,
            event_index,
            output_before,
        })
    }
}
