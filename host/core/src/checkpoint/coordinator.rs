//! The checkpoint coordinator: triggers checkpoints, collects what every
//! source, subtask and sink reports, and completes a checkpoint by writing
//! its manifest and committing the sinks.
//!
//! It runs on a thread of its own. Sources poll [`Triggers`] between
//! batches; everything else reports through an [`Ack`] channel. One
//! checkpoint is in flight at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::{
    CheckpointId, CheckpointKind, CheckpointStore, Manifest, OperatorRecord, SinkRecord,
    SourceRecord, SubtaskRecord, subtask_dir,
};
use crate::keys::key_groups_of;
use crate::sink::Committer;

/// How a run takes checkpoints.
pub struct Checkpointing {
    /// Where they go.
    pub store: CheckpointStore,
    /// Time between checkpoints.
    pub interval: Duration,
    /// Complete periodic checkpoints kept.
    pub retain: usize,
    /// `memory` or `rocksdb`, recorded in manifests.
    pub state_backend: String,
    /// Set it to take a savepoint and stop (SIGTERM, Ctrl-C).
    pub stop: Arc<AtomicBool>,
    /// The checkpoint this run was restored from.
    pub restored: Option<Manifest>,
}

/// What sources read between batches.
#[derive(Debug, Default)]
pub struct Triggers {
    /// The newest checkpoint requested (0: none yet).
    pub requested: AtomicU64,
    /// A savepoint's number: sources stop after its barrier.
    pub savepoint: AtomicU64,
}

/// A report to the coordinator.
#[derive(Debug)]
pub enum Ack {
    /// A source sent barrier `id` after reaching `record`.
    Source {
        /// Source index.
        index: usize,
        /// The checkpoint.
        id: CheckpointId,
        /// Its position.
        record: SourceRecord,
    },
    /// A source reached the end of its input.
    SourceEnded {
        /// Source index.
        index: usize,
        /// Its final position.
        record: SourceRecord,
    },
    /// A subtask wrote its snapshot of `id`.
    Task {
        /// The checkpoint.
        id: CheckpointId,
    },
    /// A sink sealed its output up to barrier `id`.
    Sink {
        /// Sink index (the late-data sink last).
        index: usize,
        /// The checkpoint.
        id: CheckpointId,
        /// What restoring and committing it need.
        state: serde_json::Value,
    },
    /// A sink finished; `ended` when all its inputs reached their end.
    SinkFinished {
        /// Sink index.
        index: usize,
        /// Its state after finishing.
        state: serde_json::Value,
        /// All inputs ended (not stopped by an error or a savepoint).
        ended: bool,
    },
    /// A participant could not take its part of `id`.
    Failed {
        /// The checkpoint.
        id: CheckpointId,
        /// Why.
        reason: String,
    },
}

/// A stateful operator, as the coordinator records it.
#[derive(Debug, Clone)]
pub struct OperatorLayout {
    /// The operator's name.
    pub name: String,
    /// Its subtasks.
    pub parallelism: usize,
}

/// The pipeline's shape, for manifests.
#[derive(Clone)]
pub struct Layout {
    /// The pipeline's name.
    pub pipeline: String,
    /// Key groups.
    pub max_parallelism: u16,
    /// Source names.
    pub sources: Vec<String>,
    /// Stateful operators.
    pub operators: Vec<OperatorLayout>,
    /// Every subtask of every stage (each reports once per checkpoint).
    pub tasks: usize,
    /// Sink names, the late-data sink last; and who commits them.
    pub sinks: Vec<(String, Option<Arc<dyn Committer>>)>,
}

/// What the coordinator did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Checkpoints completed (savepoint and final included).
    pub completed: u64,
    /// The newest completed one.
    pub last: Option<(CheckpointId, CheckpointKind)>,
    /// Why checkpoints failed, if any did.
    pub failures: Vec<String>,
}

struct Pending {
    id: CheckpointId,
    kind: CheckpointKind,
    started: Instant,
    started_at_ms: u64,
    sources: Vec<Option<SourceRecord>>,
    tasks: usize,
    sinks: Vec<Option<serde_json::Value>>,
}

/// Runs until every participant has dropped its `acks` sender.
pub fn run(
    config: &Checkpointing,
    layout: &Layout,
    triggers: &Triggers,
    acks: &Receiver<Ack>,
) -> Report {
    let mut report = Report::default();
    let mut next_id = match config.store.next_id() {
        Ok(id) => id,
        Err(e) => {
            report.failures.push(e.to_string());
            return report;
        }
    };
    let mut ended: Vec<Option<SourceRecord>> = vec![None; layout.sources.len()];
    let mut finished: Vec<Option<(serde_json::Value, bool)>> = vec![None; layout.sinks.len()];
    let mut pending: Option<Pending> = None;
    let mut next_trigger = Instant::now() + config.interval;
    let mut savepoint_taken = false;
    loop {
        let wait = match &pending {
            Some(_) => Duration::from_millis(50),
            None => next_trigger
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50)),
        };
        match acks.recv_timeout(wait) {
            Ok(ack) => on_ack(ack, &mut pending, &mut ended, &mut finished, &mut report),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if let Some(p) = &pending
            && p.sources.iter().all(Option::is_some)
            && p.tasks == layout.tasks
            && p.sinks.iter().all(Option::is_some)
            && let Some(p) = pending.take()
        {
            complete(config, layout, p, &mut report);
            next_trigger = Instant::now() + config.interval;
        }
        let all_ended = ended.iter().all(Option::is_some);
        if pending.is_some() || all_ended || savepoint_taken {
            continue;
        }
        let stop = config.stop.load(Ordering::Relaxed);
        if stop || Instant::now() >= next_trigger {
            let kind = if stop {
                savepoint_taken = true;
                CheckpointKind::Savepoint
            } else {
                CheckpointKind::Checkpoint
            };
            let id = next_id;
            next_id += 1;
            if let Err(e) = config.store.begin(id) {
                report.failures.push(format!("checkpoint {id}: {e}"));
                next_trigger = Instant::now() + config.interval;
                continue;
            }
            pending = Some(Pending {
                id,
                kind,
                started: Instant::now(),
                started_at_ms: now_ms(),
                sources: ended.clone(),
                tasks: 0,
                sinks: vec![None; layout.sinks.len()],
            });
            if kind == CheckpointKind::Savepoint {
                triggers.savepoint.store(id, Ordering::SeqCst);
            }
            triggers.requested.store(id, Ordering::SeqCst);
        }
    }
    if let Some(p) = pending {
        tracing::info!(
            checkpoint = p.id,
            "checkpoint abandoned: the run ended before it completed"
        );
    }
    // Bounded input fully processed: a final checkpoint, so a restore
    // after a complete run produces nothing twice.
    if ended.iter().all(Option::is_some) && finished.iter().all(|f| matches!(f, Some((_, true)))) {
        let final_one = Pending {
            id: next_id,
            kind: CheckpointKind::Final,
            started: Instant::now(),
            started_at_ms: now_ms(),
            sources: ended,
            tasks: 0,
            sinks: finished.into_iter().map(|f| f.map(|(s, _)| s)).collect(),
        };
        let final_layout = Layout {
            operators: Vec::new(),
            ..layout.clone()
        };
        complete(config, &final_layout, final_one, &mut report);
    }
    report
}

fn on_ack(
    ack: Ack,
    pending: &mut Option<Pending>,
    ended: &mut [Option<SourceRecord>],
    finished: &mut [Option<(serde_json::Value, bool)>],
    report: &mut Report,
) {
    let current = pending.as_ref().map(|p| p.id);
    match ack {
        Ack::Source { index, id, record } if Some(id) == current => {
            if let Some(p) = pending.as_mut() {
                p.sources[index] = Some(record);
            }
        }
        Ack::SourceEnded { index, record } => {
            if let Some(p) = pending.as_mut() {
                p.sources[index].get_or_insert_with(|| record.clone());
            }
            ended[index] = Some(record);
        }
        Ack::Task { id } if Some(id) == current => {
            if let Some(p) = pending.as_mut() {
                p.tasks += 1;
            }
        }
        Ack::Sink { index, id, state } if Some(id) == current => {
            if let Some(p) = pending.as_mut() {
                p.sinks[index] = Some(state);
            }
        }
        Ack::SinkFinished {
            index,
            state,
            ended,
        } => finished[index] = Some((state, ended)),
        Ack::Failed { id, reason } => {
            tracing::warn!(checkpoint = id, "checkpoint failed: {reason}");
            report.failures.push(format!("checkpoint {id}: {reason}"));
            if Some(id) == current {
                *pending = None;
            }
        }
        other => tracing::debug!("stale checkpoint report: {other:?}"),
    }
}

fn complete(config: &Checkpointing, layout: &Layout, p: Pending, report: &mut Report) {
    let sinks: Vec<SinkRecord> = layout
        .sinks
        .iter()
        .zip(&p.sinks)
        .map(|((name, _), state)| SinkRecord {
            name: name.clone(),
            state: state.clone().unwrap_or_default(),
        })
        .collect();
    let manifest = Manifest {
        id: p.id,
        kind: p.kind,
        pipeline: layout.pipeline.clone(),
        started_at_ms: p.started_at_ms,
        duration_ms: 0,
        max_parallelism: layout.max_parallelism,
        state_backend: config.state_backend.clone(),
        sources: p.sources.into_iter().flatten().collect(),
        operators: layout
            .operators
            .iter()
            .map(|op| OperatorRecord {
                name: op.name.clone(),
                subtasks: (0..op.parallelism)
                    .map(|subtask| {
                        let groups = key_groups_of(subtask, layout.max_parallelism, op.parallelism);
                        SubtaskRecord {
                            dir: subtask_dir(&op.name, subtask),
                            key_groups: (*groups.start(), *groups.end()),
                        }
                    })
                    .collect(),
            })
            .collect(),
        sinks,
        files: Vec::new(),
    };
    if p.kind == CheckpointKind::Final
        && let Err(e) = config.store.begin(p.id)
    {
        report.failures.push(format!("checkpoint {}: {e}", p.id));
        return;
    }
    let manifest = match config.store.complete(manifest, p.started) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(checkpoint = p.id, "checkpoint failed: {e}");
            report.failures.push(e.to_string());
            return;
        }
    };
    // The checkpoint exists: now, and only now, sealed output is visible.
    for ((name, committer), record) in layout.sinks.iter().zip(&manifest.sinks) {
        if let Some(committer) = committer
            && let Err(e) = committer.commit(&record.state)
        {
            // Restoring this checkpoint commits it again.
            tracing::warn!(checkpoint = p.id, sink = %name, "commit failed: {e}");
            report.failures.push(e.to_string());
        }
    }
    tracing::info!(
        checkpoint = manifest.id,
        kind = %manifest.kind,
        bytes = manifest.bytes(),
        duration_ms = manifest.duration_ms,
        "checkpoint complete"
    );
    report.completed += 1;
    report.last = Some((manifest.id, manifest.kind));
    if let Err(e) = config.store.retain(config.retain) {
        tracing::warn!("cannot delete old checkpoints: {e}");
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
