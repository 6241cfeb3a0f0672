//! `weir bench checkpoint|recovery`: what a checkpoint costs as the state
//! grows, and how long a restarted pipeline takes to catch up.
//!
//! Both run a pipeline file through the same wiring as `weir run`: the
//! `sequence` generator (one event per ms of event time, spread over
//! `--keys` keys) into a one-day tumbling window of `user_sessions`, a
//! whole-window function, so the state holds every event and grows with
//! the input; a blackhole sink; a checkpoint every `--checkpoint-ms`; state
//! in memory or in RocksDB.
//!
//! - `checkpoint`: runs until `--events` are in and stops with a savepoint;
//!   one row per checkpoint (the savepoint last): its size (the bytes its
//!   manifest lists), its duration (barrier requested to every file
//!   written and checksummed) and seconds per GB. With one key per event
//!   (the default) the state only grows; with fewer keys, each event also
//!   rewrites its window's value (the window's events so far).
//! - `recovery`: runs until `--events` are in and two checkpoints exist,
//!   and half an interval more, stops, and throws away the savepoint that
//!   stop took — as if the process had died there. Then it starts again from the newest periodic
//!   checkpoint and measures the time from the restart (loading the
//!   pipeline, verifying the checkpoint, restoring state) until the sources
//!   have read again every event the first run had read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use weir_core::checkpoint::{CheckpointKind, CheckpointStore, Manifest};
use weir_core::runtime::{Pipeline, Progress, RunSummary};
use weir_core::source::SourcePosition;
use weir_wasm::WasmEngine;

use crate::cpu::process_cpu_time;
use crate::wiring::{self, Restore};

/// What both workloads are given.
pub struct StateBench<'a> {
    /// The engine (its component cache is warm after the first run).
    pub engine: &'a WasmEngine,
    /// The whole-window component (`user_sessions.wasm`).
    pub plugin: PathBuf,
    /// Events the generator produces.
    pub events: u64,
    /// Distinct keys (windows).
    pub keys: u64,
    /// Subtasks of the window stage.
    pub parallelism: usize,
    /// Events per batch.
    pub batch: usize,
    /// Time between checkpoints.
    pub checkpoint_ms: u64,
}

/// `memory` or `rocksdb`.
pub fn backends() -> Vec<&'static str> {
    let mut all = vec!["memory"];
    if cfg!(feature = "rocksdb") {
        all.push("rocksdb");
    }
    all
}

impl StateBench<'_> {
    /// Writes the pipeline file into a fresh directory named after `what`.
    fn prepare(&self, what: &str, backend: &str) -> anyhow::Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!(
            "weir-bench-{what}-{backend}-{}",
            std::process::id()
        ));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let plugin = &self.plugin;
        anyhow::ensure!(
            plugin.exists(),
            "{} is missing: build the plugins (tests/build-plugins.sh)",
            plugin.display()
        );
        let text = format!(
            r#"[pipeline]
batch_size = {batch}

[[source]]
type = "sequence"
count = {count}
keys = {keys}
interval_ms = 1

[[operator]]
name = "sessions"
component = "{plugin}"
key_by = "key"
parallelism = {parallelism}
window = {{ type = "tumbling", size_ms = 86400000 }}

[[sink]]
type = "blackhole"

[late_data]
type = "blackhole"

[state]
backend = "{backend}"
path = "state"

[checkpoint]
dir = "checkpoints"
interval_ms = {interval}
retain = 1000000
"#,
            batch = self.batch,
            count = self.events.saturating_mul(10),
            keys = self.keys,
            plugin = plugin.display(),
            parallelism = self.parallelism,
            interval = self.checkpoint_ms,
        );
        let path = dir.join("pipeline.toml");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// The `checkpoint` workload on `backend`: one JSON object per periodic
    /// checkpoint.
    ///
    /// # Errors
    /// The pipeline fails.
    pub fn checkpoint(&self, backend: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let path = self.prepare("checkpoint", backend)?;
        let cpu = process_cpu_time();
        let wall = Instant::now();
        // Stopped (with a savepoint) once `events` are in: firing every
        // window at the end of input is not what is measured.
        let stop = Arc::new(AtomicBool::new(false));
        let pipeline = wiring::load(&path, self.engine, Restore::AsConfigured, stop.clone())?;
        let progress = Arc::new(Progress::default());
        let running = spawn(pipeline, progress.clone());
        while progress.events_in.load(Ordering::Relaxed) < self.events && !running.is_finished() {
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::SeqCst);
        let summary = join(running)?;
        let (cpu, wall) = (
            (process_cpu_time() - cpu).as_secs_f64(),
            wall.elapsed().as_secs_f64(),
        );
        let store = store_of(&path);
        let mut rows = Vec::new();
        for (id, manifest) in store.list()? {
            let manifest = manifest.with_context(|| format!("checkpoint {id}"))?;
            if manifest.kind == CheckpointKind::Final {
                continue;
            }
            let bytes = manifest.bytes();
            let seconds = manifest.duration_ms as f64 / 1000.0;
            rows.push(self.row(
                "checkpoint",
                backend,
                &summary,
                cpu,
                wall,
                serde_json::json!({
                    "checkpoint": id,
                    "kind": manifest.kind.to_string(),
                    "state_bytes": bytes,
                    "checkpoint_ms": manifest.duration_ms,
                    "seconds_per_gb": seconds / (bytes as f64 / 1e9).max(1e-12),
                    "source_events": source_events(&manifest),
                }),
            ));
        }
        cleanup(&path);
        Ok(rows)
    }

    /// The `recovery` workload on `backend`: one JSON object.
    ///
    /// # Errors
    /// A run fails, or the first run ends before two checkpoints.
    pub fn recovery(&self, backend: &str) -> anyhow::Result<serde_json::Value> {
        let path = self.prepare("recovery", backend)?;
        let store = store_of(&path);
        // The first run, stopped half an interval after `events` are in.
        let stop = Arc::new(AtomicBool::new(false));
        let pipeline = wiring::load(&path, self.engine, Restore::AsConfigured, stop.clone())?;
        let progress = Arc::new(Progress::default());
        let first = spawn(pipeline, progress.clone());
        let deadline = Instant::now() + Duration::from_secs(3600);
        while progress.events_in.load(Ordering::Relaxed) < self.events
            || periodic(&store)?.len() < 2
        {
            anyhow::ensure!(
                !first.is_finished() && Instant::now() < deadline,
                "the first run ended before two checkpoints: raise --events"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(self.checkpoint_ms / 2));
        stop.store(true, Ordering::SeqCst);
        let first = join(first)?;
        let Some((savepoint, CheckpointKind::Savepoint)) = first.last_checkpoint else {
            anyhow::bail!("the first run ended before it was stopped: raise --events");
        };
        // The crash: what happened after the last periodic checkpoint is
        // lost.
        let crashed_at = source_events(&store.load(savepoint)?);
        std::fs::remove_dir_all(store.path_of(savepoint))?;
        let restored = periodic(&store)?.pop().context("no periodic checkpoint")?;
        let replay = crashed_at.saturating_sub(source_events(&restored));

        // The restart.
        let cpu = process_cpu_time();
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let pipeline = wiring::load(&path, self.engine, Restore::Latest, stop.clone())?;
        let loaded = started.elapsed();
        let progress = Arc::new(Progress::default());
        let second = spawn(pipeline, progress.clone());
        while progress.events_in.load(Ordering::Relaxed) < replay && !second.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let caught_up = started.elapsed();
        let cpu = (process_cpu_time() - cpu).as_secs_f64();
        stop.store(true, Ordering::SeqCst);
        let second = join(second)?;
        anyhow::ensure!(
            second.events_in >= replay,
            "the restarted run read {} events, fewer than the {replay} to replay",
            second.events_in
        );
        cleanup(&path);
        Ok(self.row(
            "recovery",
            backend,
            &second,
            cpu,
            caught_up.as_secs_f64(),
            serde_json::json!({
                "state_bytes": restored.bytes(),
                "replayed_events": replay,
                "load_seconds": loaded.as_secs_f64(),
                "caught_up_seconds": caught_up.as_secs_f64(),
            }),
        ))
    }

    fn row(
        &self,
        workload: &str,
        backend: &str,
        summary: &RunSummary,
        cpu_seconds: f64,
        wall_seconds: f64,
        extra: serde_json::Value,
    ) -> serde_json::Value {
        let mut row = serde_json::json!({
            "workload": workload,
            "variant": backend,
            "batch": self.batch,
            "parallelism": self.parallelism,
            "events": summary.events_in,
            "keys": self.keys,
            "cpu_seconds": cpu_seconds,
            "events_per_cpu_second": summary.events_in as f64 / cpu_seconds.max(1e-9),
            "wall_seconds": wall_seconds,
        });
        if let (Some(row), serde_json::Value::Object(extra)) = (row.as_object_mut(), extra) {
            row.extend(extra);
        }
        row
    }
}

fn store_of(pipeline: &Path) -> CheckpointStore {
    CheckpointStore::new(pipeline.with_file_name("checkpoints"))
}

/// Complete periodic checkpoints, oldest first (manifests only).
fn periodic(store: &CheckpointStore) -> anyhow::Result<Vec<Manifest>> {
    Ok(store
        .ids()?
        .into_iter()
        .filter_map(|id| store.read_manifest(id).ok())
        .filter(|m| m.kind == CheckpointKind::Checkpoint)
        .collect())
}

/// Events the generator had produced at a checkpoint.
fn source_events(manifest: &Manifest) -> u64 {
    manifest
        .sources
        .iter()
        .map(|s| match s.position {
            SourcePosition::Generated { events, .. } => events,
            SourcePosition::File { line, .. } => line,
        })
        .sum()
}

type Running = std::thread::JoinHandle<Result<RunSummary, weir_core::runtime::RunError>>;

fn spawn(pipeline: Pipeline, progress: Arc<Progress>) -> Running {
    std::thread::spawn(move || pipeline.run(&progress))
}

fn join(running: Running) -> anyhow::Result<RunSummary> {
    running
        .join()
        .map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))?
        .map_err(Into::into)
}

fn cleanup(pipeline: &Path) {
    if let Some(dir) = pipeline.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
