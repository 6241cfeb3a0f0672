//! From a pipeline file to a runnable pipeline: open sources and sinks,
//! load and instantiate operator components, and group operators into
//! stages of parallel subtasks.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use weir_core::dead_letter::DeadLetters;
use weir_core::keyed::KeyedProcessOperator;
use weir_core::keys::KeySelector;
use weir_core::pipeline::{OperatorSpec, PipelineFile, StateBackendKind, StateSpec};
use weir_core::runtime::{Pipeline, Stage, Task};
use weir_core::source::Linger;
use weir_core::state::{MemoryBackend, StateBackend, StateStore};
use weir_core::window::WindowOperator;
use weir_core::{sink, source};
use weir_wasm::{Limits, LoadedComponent, WasmEngine, WasmOperator, World};

/// Loads `path` and everything it names.
pub fn load(path: &Path, engine: &WasmEngine) -> anyhow::Result<Pipeline> {
    let file = PipelineFile::load(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let state = open_state(&file.state, base)?;
    let state = state.as_ref();

    let mut components: HashMap<std::path::PathBuf, Arc<LoadedComponent>> = HashMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for spec in &file.operator {
        let component_path = spec
            .component_path(base)
            .map_err(|e| anyhow::anyhow!("{}: operator `{}`: {e}", path.display(), spec.name))?;
        let component = match components.get(&component_path) {
            Some(c) => Arc::clone(c),
            None => {
                let c = engine
                    .load(&component_path)
                    .with_context(|| format!("operator `{}`", spec.name))?;
                components.insert(component_path.clone(), c.clone());
                c
            }
        };
        check_world(path, spec, component.world)?;
        let key_by = spec.key_by.as_deref().map(KeySelector::parse);
        if component.world == World::KeyedProcess {
            let subtasks = stateful_tasks(engine, state, spec, &component, &|function, store| {
                Task::Keyed(KeyedProcessOperator::new(
                    Box::new(function),
                    store,
                    file.pipeline.max_parallelism,
                    spec.state_ttl_ms,
                ))
            })?;
            stages.push(Stage { key_by, subtasks });
            continue;
        }
        if let Some(window) = spec.window {
            let subtasks = stateful_tasks(engine, state, spec, &component, &|function, store| {
                Task::Window(WindowOperator::new(
                    window,
                    spec.allowed_lateness_ms,
                    file.pipeline.max_parallelism,
                    Box::new(function),
                    store,
                ))
            })?;
            stages.push(Stage { key_by, subtasks });
            continue;
        }
        let instances = instances_of(engine, spec, &component)?;
        // A stateless operator joins the chain before it when nothing
        // repartitions in between (operator chaining, as in Flink).
        if let Some(previous) = stages.last_mut()
            && key_by.is_none()
            && previous.subtasks.len() == spec.parallelism
            && previous
                .subtasks
                .iter()
                .all(|t| matches!(t, Task::Chain(_)))
        {
            for (task, instance) in previous.subtasks.iter_mut().zip(instances) {
                if let Task::Chain(chain) = task {
                    chain.push(Box::new(instance));
                }
            }
            continue;
        }
        stages.push(Stage {
            key_by,
            subtasks: instances
                .into_iter()
                .map(|i| Task::Chain(vec![Box::new(i) as Box<dyn weir_core::operator::Operator>]))
                .collect(),
        });
    }

    let dead_letters = match &file.dead_letter {
        Some(spec) => Some(DeadLetters::new(sink::open(spec, base)?)),
        None => None,
    };
    let late = match &file.late_data {
        Some(spec) => Some(sink::open(spec, base)?),
        None => None,
    };
    let linger = Linger::new(Duration::from_millis(file.pipeline.linger_ms));
    let sources = file
        .source
        .iter()
        .map(|spec| source::open(spec, base, linger, dead_letters.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let sinks = file
        .sink
        .iter()
        .map(|spec| sink::open(spec, base))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Pipeline {
        settings: file.pipeline,
        watermark: file.watermark,
        sources,
        stages,
        sinks,
        late,
        dead_letters,
    })
}

/// Opens the `[state]` backend.
fn open_state(spec: &StateSpec, base: &Path) -> anyhow::Result<Box<dyn StateBackend>> {
    match spec.backend {
        StateBackendKind::Memory => Ok(Box::new(MemoryBackend)),
        #[cfg(feature = "rocksdb")]
        StateBackendKind::Rocksdb => {
            let dir = base.join(spec.path.as_deref().unwrap_or(Path::new("state")));
            prepare_state_dir(&dir)?;
            let hot =
                usize::try_from(spec.hot_tier_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
            Ok(Box::new(weir_state::RocksBackend::open(&dir, hot)?))
        }
        #[cfg(not(feature = "rocksdb"))]
        StateBackendKind::Rocksdb => bail!(
            "{}: [state] backend = \"rocksdb\": this `weir` was built without RocksDB (cargo feature `rocksdb`)",
            base.display()
        ),
    }
}

/// RocksDB's working directory starts empty each run (until restoring from
/// checkpoints exists, old state would be counted twice). Only a directory
/// Weir made (it holds the marker file) is ever cleared.
#[cfg(feature = "rocksdb")]
fn prepare_state_dir(dir: &Path) -> anyhow::Result<()> {
    const MARKER: &str = "WEIR_STATE";
    if dir.exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !empty && !dir.join(MARKER).exists() {
            bail!(
                "state directory {} is not empty and was not made by Weir (no {MARKER} file); refusing to clear it",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "Weir's RocksDB working directory; cleared at each start.\n",
    )?;
    Ok(())
}

/// A window needs an aggregate or window component, and those need a
/// window; a keyed process component needs `key_by` and no window.
fn check_world(path: &Path, spec: &OperatorSpec, world: World) -> anyhow::Result<()> {
    let at = || format!("{}: operator `{}`", path.display(), spec.name);
    if world == World::KeyedProcess {
        if spec.key_by.is_none() {
            bail!(
                "{}: its component is a {world}; it needs `key_by` (the key its state belongs to)",
                at()
            );
        }
        if spec.window.is_some() {
            bail!(
                "{}: its component is a {world}, which does not run in a window",
                at()
            );
        }
        return Ok(());
    }
    if spec.state_ttl_ms.is_some() {
        bail!(
            "{}: state_ttl_ms is for keyed-process-operator components",
            at()
        );
    }
    match (world.is_windowed(), spec.window.is_some()) {
        (true, false) => bail!(
            "{}: operator `{}`: its component is an {world}; give the operator a window, e.g. `window = {{ type = \"tumbling\", size_ms = 60000 }}`",
            path.display(),
            spec.name
        ),
        (false, true) => bail!(
            "{}: operator `{}`: its component is a {world}, which cannot run a window; build it as an aggregate-operator (export_aggregate!) or window-operator (export_window!)",
            path.display(),
            spec.name
        ),
        _ => Ok(()),
    }
}

/// One instance per subtask.
fn instances_of(
    engine: &WasmEngine,
    spec: &OperatorSpec,
    component: &Arc<LoadedComponent>,
) -> anyhow::Result<Vec<WasmOperator>> {
    (0..spec.parallelism)
        .map(|_| instantiate(engine, spec, component))
        .collect()
}

/// One task per subtask of a keyed process or window operator, each with
/// its instance and its own state store.
fn stateful_tasks(
    engine: &WasmEngine,
    state: &dyn StateBackend,
    spec: &OperatorSpec,
    component: &Arc<LoadedComponent>,
    make: &dyn Fn(WasmOperator, Box<dyn StateStore>) -> Task,
) -> anyhow::Result<Vec<Task>> {
    instances_of(engine, spec, component)?
        .into_iter()
        .enumerate()
        .map(|(subtask, function)| {
            let store = state
                .open(&spec.name, subtask)
                .with_context(|| format!("operator `{}`", spec.name))?;
            Ok(make(function, store))
        })
        .collect()
}

fn instantiate(
    engine: &WasmEngine,
    spec: &OperatorSpec,
    component: &Arc<LoadedComponent>,
) -> anyhow::Result<WasmOperator> {
    let limits = Limits::with_overrides(
        spec.timeout_ms,
        spec.memory_mb,
        spec.max_output_mb,
        spec.max_log_kb,
    );
    Ok(engine.instantiate(&spec.name, component, &spec.config_pairs(), limits)?)
}
