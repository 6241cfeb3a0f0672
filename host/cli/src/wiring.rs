//! From a pipeline file to a runnable pipeline: open sources and sinks,
//! load and instantiate operator components, and group operators into
//! stages of parallel subtasks.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use weir_core::checkpoint::coordinator::Checkpointing;
use weir_core::checkpoint::{CheckpointKind, CheckpointStore, Manifest, RestoreMode};
use weir_core::dead_letter::DeadLetters;
use weir_core::keyed::KeyedProcessOperator;
use weir_core::keys::KeySelector;
use weir_core::keys::key_groups_of;
use weir_core::pipeline::{OperatorSpec, PipelineFile, StateBackendKind, StateSpec};
use weir_core::runtime::{Pipeline, Stage, Task};
use weir_core::source::Linger;
use weir_core::state::{MemoryBackend, StateBackend, StateStore};
use weir_core::window::WindowOperator;
use weir_core::{sink, source};
use weir_wasm::{Limits, LoadedComponent, WasmEngine, WasmOperator, World};

/// What `weir run --restore` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restore {
    /// What the pipeline file's `[checkpoint] restore` says.
    AsConfigured,
    /// The newest complete checkpoint, if any.
    Latest,
    /// This one.
    Id(u64),
}

/// The checkpoint store a pipeline file configures, if any.
pub fn checkpoint_store(file: &PipelineFile, base: &Path) -> Option<CheckpointStore> {
    file.checkpoint
        .as_ref()
        .map(|c| CheckpointStore::new(base.join(&c.dir)))
}

/// The checkpoint to restore, or none.
fn to_restore(
    file: &PipelineFile,
    store: Option<&CheckpointStore>,
    restore: Restore,
) -> anyhow::Result<Option<Manifest>> {
    let latest = match (restore, file.checkpoint.as_ref().map(|c| c.restore)) {
        (Restore::Id(id), _) => {
            let store =
                store.context("--restore needs a [checkpoint] section in the pipeline file")?;
            return Ok(Some(store.load(id)?));
        }
        (Restore::Latest, _) | (Restore::AsConfigured, Some(RestoreMode::Latest)) => true,
        (Restore::AsConfigured, _) => false,
    };
    if !latest {
        return Ok(None);
    }
    let store = store.context("--restore needs a [checkpoint] section in the pipeline file")?;
    let (manifest, skipped) = store.latest()?;
    for e in &skipped {
        tracing::warn!("skipping a checkpoint: {e}");
    }
    // Checkpoints that were never completed leave nothing to resume; but
    // starting over past damaged ones would repeat committed output.
    let damaged = skipped
        .iter()
        .find(|e| !matches!(e, weir_core::checkpoint::CheckpointError::Incomplete { .. }));
    if let (None, Some(e)) = (&manifest, damaged) {
        bail!(
            "no usable checkpoint in {}: {e}; starting from the beginning would repeat output already committed (move the directory away to do that)",
            store.dir().display()
        );
    }
    match &manifest {
        Some(m) => tracing::info!(checkpoint = m.id, kind = %m.kind, "restoring"),
        None => tracing::info!(
            "no complete checkpoint in {}: starting from the beginning",
            store.dir().display()
        ),
    }
    Ok(manifest)
}

/// Loads `path` and everything it names; restores a checkpoint as
/// `restore` says. Setting `stop` takes a savepoint and stops the run.
pub fn load(
    path: &Path,
    engine: &WasmEngine,
    restore: Restore,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<Pipeline> {
    let file = PipelineFile::load(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let store = checkpoint_store(&file, base);
    let restored = to_restore(&file, store.as_ref(), restore)?;
    let restored = restored.as_ref();
    if let Some(m) = restored {
        check_restorable(path, &file, m)?;
    }
    let state = open_state(&file.state, base)?;
    let state = state.as_ref();
    let resume = Resume {
        manifest: restored,
        store: store.as_ref(),
        max_parallelism: file.pipeline.max_parallelism,
    };

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
            let subtasks = stateful_tasks(
                engine,
                state,
                spec,
                &component,
                &resume,
                &|function, store, from, groups| {
                    let mut op = KeyedProcessOperator::new(
                        Box::new(function),
                        store,
                        file.pipeline.max_parallelism,
                        spec.state_ttl_ms,
                    );
                    op.restore(from, groups)?;
                    Ok(Task::Keyed(op))
                },
            )?;
            stages.push(Stage { key_by, subtasks });
            continue;
        }
        if let Some(window) = spec.window {
            let subtasks = stateful_tasks(
                engine,
                state,
                spec,
                &component,
                &resume,
                &|function, store, from, groups| {
                    let mut op = WindowOperator::new(
                        window,
                        spec.allowed_lateness_ms,
                        file.pipeline.max_parallelism,
                        Box::new(function),
                        store,
                    );
                    op.restore(from, groups)?;
                    Ok(Task::Window(op))
                },
            )?;
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
        Some(spec) => Some(DeadLetters::new(sink::open(
            spec,
            base,
            sink::SinkStart::default(),
        )?)),
        None => None,
    };
    let checkpointed = file.checkpoint.is_some();
    let sink_start = |index: usize| sink::SinkStart {
        checkpointed,
        restored: restored.and_then(|m| m.sinks.get(index)).map(|s| &s.state),
    };
    let late = match &file.late_data {
        Some(spec) => Some(sink::open(spec, base, sink_start(file.sink.len()))?),
        None => None,
    };
    let linger = Linger::new(Duration::from_millis(file.pipeline.linger_ms));
    let mut sources = Vec::new();
    for (index, spec) in file.source.iter().enumerate() {
        let mut source = source::open(spec, base, linger, dead_letters.clone())?;
        if let Some(record) = restored.and_then(|m| m.sources.get(index)) {
            source.seek(&record.position)?;
        }
        sources.push(source);
    }
    let sinks = file
        .sink
        .iter()
        .enumerate()
        .map(|(index, spec)| sink::open(spec, base, sink_start(index)))
        .collect::<Result<Vec<_>, _>>()?;
    let checkpointing = match (&file.checkpoint, store) {
        (Some(spec), Some(store)) => Some(Checkpointing {
            store,
            interval: Duration::from_millis(spec.interval_ms),
            retain: spec.retain,
            state_backend: backend_name(&file.state).to_string(),
            stop,
            restored: restored.cloned(),
        }),
        _ => None,
    };
    Ok(Pipeline {
        settings: file.pipeline,
        watermark: file.watermark,
        sources,
        stages,
        sinks,
        late,
        dead_letters,
        checkpointing,
    })
}

fn backend_name(spec: &StateSpec) -> &'static str {
    match spec.backend {
        StateBackendKind::Memory => "memory",
        StateBackendKind::Rocksdb => "rocksdb",
    }
}

/// A checkpoint fits this pipeline file: same key groups, sources, sinks
/// and state backend.
fn check_restorable(path: &Path, file: &PipelineFile, m: &Manifest) -> anyhow::Result<()> {
    let at = || format!("{}: cannot restore checkpoint {}", path.display(), m.id);
    if m.max_parallelism != file.pipeline.max_parallelism {
        bail!(
            "{}: it has {} key groups, the pipeline {} (max_parallelism is fixed for the life of the state)",
            at(),
            m.max_parallelism,
            file.pipeline.max_parallelism
        );
    }
    if m.sources.len() != file.source.len() {
        bail!(
            "{}: it has {} sources, the pipeline {}",
            at(),
            m.sources.len(),
            file.source.len()
        );
    }
    let sinks = file.sink.len() + usize::from(file.late_data.is_some());
    if m.sinks.len() != sinks {
        bail!(
            "{}: it has {} sinks, the pipeline {sinks}",
            at(),
            m.sinks.len()
        );
    }
    if !m.operators.is_empty() && m.state_backend != backend_name(&file.state) {
        bail!(
            "{}: its state is in {}, the pipeline's [state] backend is {}",
            at(),
            m.state_backend,
            backend_name(&file.state)
        );
    }
    Ok(())
}

/// The checkpoint a run resumes from.
struct Resume<'a> {
    manifest: Option<&'a Manifest>,
    store: Option<&'a CheckpointStore>,
    max_parallelism: u16,
}

impl Resume<'_> {
    /// The snapshot directories of `operator` holding key groups of
    /// `subtask` (of `parallelism`), and those groups.
    fn sources_for(
        &self,
        operator: &str,
        subtask: usize,
        parallelism: usize,
    ) -> anyhow::Result<(Vec<PathBuf>, RangeInclusive<u16>)> {
        let groups = key_groups_of(subtask, self.max_parallelism, parallelism);
        let (Some(m), Some(store)) = (self.manifest, self.store) else {
            return Ok((Vec::new(), groups));
        };
        let Some(record) = m.operator(operator) else {
            if m.kind == CheckpointKind::Final {
                return Ok((Vec::new(), groups));
            }
            bail!(
                "checkpoint {} has no state for operator `{operator}` (was the operator renamed or added?)",
                m.id
            );
        };
        let root = store.path_of(m.id);
        let dirs = record
            .subtasks
            .iter()
            .filter(|s| s.key_groups.0 <= *groups.end() && *groups.start() <= s.key_groups.1)
            .map(|s| root.join(&s.dir))
            .collect();
        Ok((dirs, groups))
    }
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

/// RocksDB's working directory starts empty each run: durable state lives
/// in checkpoints, and a restore copies it back in. Only a directory Weir
/// made (it holds the marker file) is ever cleared.
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

/// Builds a stateful task from its instance, its store and the snapshot
/// directories and key groups it restores from.
type MakeTask<'a> = dyn Fn(
        WasmOperator,
        Box<dyn StateStore>,
        &[PathBuf],
        &RangeInclusive<u16>,
    ) -> Result<Task, weir_core::state::StateError>
    + 'a;

/// One task per subtask of a keyed process or window operator, each with
/// its instance and its own state store, restored from `resume`.
fn stateful_tasks(
    engine: &WasmEngine,
    state: &dyn StateBackend,
    spec: &OperatorSpec,
    component: &Arc<LoadedComponent>,
    resume: &Resume<'_>,
    make: &MakeTask<'_>,
) -> anyhow::Result<Vec<Task>> {
    instances_of(engine, spec, component)?
        .into_iter()
        .enumerate()
        .map(|(subtask, function)| {
            let context = || format!("operator `{}` subtask {subtask}", spec.name);
            let (from, groups) = resume
                .sources_for(&spec.name, subtask, spec.parallelism)
                .with_context(context)?;
            let store = if resume.manifest.is_some() {
                let copies: Vec<PathBuf> = from
                    .iter()
                    .map(|d| d.join(weir_core::checkpoint::STATE_DIR))
                    .collect();
                state.restore(&spec.name, subtask, &copies, groups.clone())
            } else {
                state.open(&spec.name, subtask)
            }
            .with_context(context)?;
            make(function, store, &from, &groups).with_context(context)
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
