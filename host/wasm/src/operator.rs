//! A component-backed operator.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};
use weir_batch::{Batch, BatchWriter};
use weir_core::keyed::KeyedFunction;
use weir_core::operator::{FailureKind, Operator, OperatorFailure};
use weir_core::window::{FunctionKind, WindowFunction};

use crate::WasmError;
use crate::engine::{EPOCH_TICK, HostState, LoadedComponent, Pre, WasmEngine, World};
use crate::guest_log::GuestLog;
use crate::limits::{Limits, MemoryCap};

pub(crate) mod bindings {
    pub(crate) mod stateless {
        wasmtime::component::bindgen!({
            path: "../../wit",
            world: "stateless-operator",
        });
    }
    pub(crate) mod aggregate {
        wasmtime::component::bindgen!({
            path: "../../wit",
            world: "aggregate-operator",
            with: { "weir:operator/types": crate::operator::bindings::stateless::weir::operator::types },
        });
    }
    /// `aggregate` with `aggregate-slices`: used only for the second.
    pub(crate) mod sliced {
        wasmtime::component::bindgen!({
            path: "../../wit",
            world: "sliced-aggregate-operator",
            with: { "weir:operator/types": crate::operator::bindings::stateless::weir::operator::types },
        });
    }
    pub(crate) mod window {
        wasmtime::component::bindgen!({
            path: "../../wit",
            world: "window-operator",
            with: { "weir:operator/types": crate::operator::bindings::stateless::weir::operator::types },
        });
    }
    pub(crate) mod keyed {
        wasmtime::component::bindgen!({
            path: "../../wit",
            world: "keyed-process-operator",
            with: { "weir:operator/types": crate::operator::bindings::stateless::weir::operator::types },
        });
    }
}

use bindings::stateless::weir::operator::types::{ConfigEntry, OperatorError};

/// The instantiated exports of one of the worlds.
enum Bindings {
    Stateless(bindings::stateless::StatelessOperator),
    /// With `aggregate-slices` when the component exports it.
    Aggregate(
        bindings::aggregate::AggregateOperator,
        Option<bindings::sliced::SlicedAggregateOperator>,
    ),
    Window(bindings::window::WindowOperator),
    Keyed(bindings::keyed::KeyedProcessOperator),
}

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
    bindings: Bindings,
    stderr: GuestLog,
}

type CallResult = wasmtime::Result<Result<Vec<u8>, OperatorError>>;

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

/// A store for one instance with no ambient authority: stdout and stderr
/// become log lines tagged with `name` (stderr's handle is returned), the
/// clocks read zero, no network; memory capped, the CPU deadline armed.
pub(crate) fn sandboxed_store(
    engine: &wasmtime::Engine,
    name: Arc<str>,
    limits: &Limits,
) -> (Store<HostState>, GuestLog) {
    let (stdout, stderr) = GuestLog::pair(name, limits.max_log_bytes);
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
            cap: limits.memory_bytes,
            refused: None,
        },
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.memory);
    store.epoch_deadline_trap();
    store.set_epoch_deadline(deadline_ticks(limits));
    (store, stderr)
}

/// The per-call CPU deadline in epoch ticks.
pub(crate) fn deadline_ticks(limits: &Limits) -> u64 {
    let ticks = limits.timeout.as_nanos() / EPOCH_TICK.as_nanos();
    u64::try_from(ticks.max(1)).unwrap_or(u64::MAX)
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

    /// The world the component implements.
    pub fn world(&self) -> World {
        self.component.world
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
        let (mut store, stderr) = sandboxed_store(&self.engine, self.name.clone(), &self.limits);
        let cannot = |e: wasmtime::Error| format!("cannot instantiate: {e:#}");
        let bindings = match &self.component.pre {
            Pre::Stateless(pre) => {
                Bindings::Stateless(pre.instantiate(&mut store).map_err(cannot)?)
            }
            Pre::Aggregate {
                pre,
                aggregate,
                sliced,
            } => {
                let instance = pre.instantiate(&mut store).map_err(cannot)?;
                let aggregate = aggregate.load(&mut store, &instance).map_err(cannot)?;
                // Its functions' types are checked here, not at load.
                let sliced = sliced
                    .as_ref()
                    .map(|indices| indices.load(&mut store, &instance))
                    .transpose()
                    .map_err(|e| {
                        format!(
                            "cannot instantiate: its `aggregate-slices` export does not match \
                             the contract: {e:#}"
                        )
                    })?;
                Bindings::Aggregate(aggregate, sliced)
            }
            Pre::Window(pre) => Bindings::Window(pre.instantiate(&mut store).map_err(cannot)?),
            Pre::Keyed(pre) => Bindings::Keyed(pre.instantiate(&mut store).map_err(cannot)?),
        };
        let mut instance = Instance {
            store,
            bindings,
            stderr,
        };
        instance.store.set_epoch_deadline(self.deadline_ticks());
        let store = &mut instance.store;
        let result = match &instance.bindings {
            Bindings::Stateless(b) => b.weir_operator_stateless().call_init(store, &self.config),
            Bindings::Aggregate(b, _) => b.weir_operator_aggregate().call_init(store, &self.config),
            Bindings::Window(b) => b.weir_operator_window().call_init(store, &self.config),
            Bindings::Keyed(b) => b
                .weir_operator_keyed_process()
                .call_init(store, &self.config),
        };
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
        deadline_ticks(&self.limits)
    }

    /// One `process` call on the live instance; a trap drops the instance.
    fn call(&mut self, batch: &[u8]) -> Result<Vec<u8>, CallError> {
        let out = self.call_with(|bindings, store| match bindings {
            Bindings::Stateless(b) => b.weir_operator_stateless().call_process(store, batch),
            _ => Ok(Err(wrong_world("process"))),
        })?;
        Batch::new(&out).map_err(|e| CallError::Failed(FailureKind::BadOutput, e.to_string()))?;
        Ok(out)
    }

    /// One call on the live instance, with the CPU deadline and the output
    /// cap; a trap drops the instance.
    fn call_with(
        &mut self,
        f: impl FnOnce(&Bindings, &mut Store<HostState>) -> CallResult,
    ) -> Result<Vec<u8>, CallError> {
        let deadline = self.deadline_ticks();
        let instance = self
            .instance()
            .map_err(|e| CallError::Failed(FailureKind::Trap, format!("restart failed: {e}")))?;
        instance.store.set_epoch_deadline(deadline);
        let result = f(&instance.bindings, &mut instance.store);
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

fn wrong_world(function: &str) -> OperatorError {
    OperatorError {
        message: format!("this component's world has no `{function}`"),
        event_index: None,
    }
}

impl WasmOperator {
    /// A window-function call: no replay (the window operator keeps its
    /// state as it was), the failing event or window as the guest named it.
    fn window_call(
        &mut self,
        f: impl FnOnce(&Bindings, &mut Store<HostState>) -> CallResult,
    ) -> Result<Vec<u8>, OperatorFailure> {
        self.call_with(f).map_err(|e| {
            let (kind, message, event_index) = match e {
                CallError::Reported(e) => (
                    FailureKind::Reported,
                    e.message,
                    e.event_index.map(|i| i as usize),
                ),
                CallError::Failed(kind, message) => (kind, message, None),
            };
            OperatorFailure {
                kind,
                message,
                event_index,
                output_before: BatchWriter::new().finish(),
            }
        })
    }
}

impl WindowFunction for WasmOperator {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> FunctionKind {
        match self.component.world {
            World::Window => FunctionKind::WholeWindow,
            World::Aggregate | World::Stateless | World::KeyedProcess => FunctionKind::Aggregate,
        }
    }

    fn add(
        &mut self,
        accumulators: &[u8],
        events: &[u8],
        assignments: &[u32],
    ) -> Result<Vec<u8>, OperatorFailure> {
        self.window_call(|bindings, store| match bindings {
            Bindings::Aggregate(b, _) => {
                b.weir_operator_aggregate()
                    .call_add(store, accumulators, events, assignments)
            }
            _ => Ok(Err(wrong_world("add"))),
        })
    }

    fn merge(&mut self, left: &[u8], right: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        self.window_call(|bindings, store| match bindings {
            Bindings::Aggregate(b, _) => b.weir_operator_aggregate().call_merge(store, left, right),
            _ => Ok(Err(wrong_world("merge"))),
        })
    }

    fn fire(&mut self, windows: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        self.window_call(|bindings, store| match bindings {
            Bindings::Aggregate(b, _) => {
                b.weir_operator_aggregate().call_get_result(store, windows)
            }
            Bindings::Window(b) => b.weir_operator_window().call_process(store, windows),
            Bindings::Stateless(_) | Bindings::Keyed(_) => Ok(Err(wrong_world("get-result"))),
        })
    }

    fn fires_slices(&self) -> bool {
        matches!(
            self.component.pre,
            Pre::Aggregate {
                sliced: Some(_),
                ..
            }
        )
    }

    fn fire_slices(&mut self, windows: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        self.window_call(|bindings, store| match bindings {
            Bindings::Aggregate(_, Some(b)) => b
                .weir_operator_aggregate_slices()
                .call_get_result_of_slices(store, windows),
            _ => Ok(Err(wrong_world("get-result-of-slices"))),
        })
    }

    fn fork(&self) -> Option<Result<Box<dyn WindowFunction>, OperatorFailure>> {
        let mut copy = WasmOperator {
            name: self.name.clone(),
            component: self.component.clone(),
            engine: self.engine.clone(),
            config: self.config.clone(),
            limits: self.limits,
            live: None,
        };
        Some(match copy.instance() {
            Ok(_) => Ok(Box::new(copy)),
            Err(message) => Err(OperatorFailure {
                kind: FailureKind::Trap,
                message: format!("starting a second instance: {message}"),
                event_index: None,
                output_before: Vec::new(),
            }),
        })
    }
}

impl KeyedFunction for WasmOperator {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&mut self, call: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        self.window_call(|bindings, store| match bindings {
            Bindings::Keyed(b) => b.weir_operator_keyed_process().call_process(store, call),
            _ => Ok(Err(wrong_world("keyed-process process"))),
        })
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
