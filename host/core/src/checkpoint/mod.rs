//! Checkpoints: consistent snapshots of a running pipeline, taken by
//! aligned barriers (Flink's asynchronous barrier snapshots, after
//! Chandy–Lamport).
//!
//! 1. The [`coordinator`] asks the sources for checkpoint `n` at a fixed
//!    interval. Each source records its position (file offset, generator
//!    state) and sends a barrier `n` down every channel, in line with its
//!    events.
//! 2. A subtask that has received barrier `n` on one input holds that
//!    input's later messages back until `n` has arrived on all its inputs
//!    (an input that has ended counts as arrived). Its state then reflects
//!    exactly the events before the barrier: it takes a copy of its keyed
//!    state (a RocksDB checkpoint, or the memory store's changed entries
//!    on top of its previous chain of entry files) and of what it keeps
//!    beside it (watermark; a keyed subtask's timers), passes the barrier
//!    on, releases what it held back, and writes the copy into the
//!    checkpoint directory on a thread of its own.
//! 3. Sinks align the same way and seal what they have written
//!    ([`crate::sink::Sink::pre_commit`]): a file sink's part files are
//!    flushed to disk but stay hidden.
//! 4. When every source, subtask and sink has reported, the coordinator
//!    writes the [`Manifest`] — every file with its size and CRC-32 —
//!    last and atomically ([`store`]). Only then does the checkpoint exist,
//!    and only then are the sinks' sealed files made visible (two-phase
//!    commit). Older checkpoints beyond `retain` are deleted.
//!
//! Restoring rewinds the sources to their recorded positions
//! ([`crate::source::Source::seek`]) and gives each subtask the state of the
//! key groups it owns — from one copy at the same parallelism, or several
//! at another ([`crate::state::StateBackend::restore`], and the operators'
//! `restore` for their timers; window timers are rebuilt from the
//! restored state's keys).

pub mod coordinator;
pub mod store;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::source::SourcePosition;
use crate::state::{Deferred, StateError, StateStore};

pub use store::{CheckpointError, CheckpointStore};

/// A checkpoint's number: increasing over the life of a pipeline.
pub type CheckpointId = u64;

/// `[checkpoint]` in the pipeline file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Where checkpoints are written, relative to the pipeline file.
    pub dir: PathBuf,
    /// Time between checkpoints, in ms.
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Completed checkpoints kept (savepoints are never deleted).
    #[serde(default = "default_retain")]
    pub retain: usize,
    /// `latest`: on start, restore the newest complete checkpoint if there
    /// is one (as `weir run --restore latest`); `none` (the default): start
    /// from the beginning unless `--restore` says otherwise.
    #[serde(default)]
    pub restore: RestoreMode,
}

fn default_interval() -> u64 {
    10_000
}

fn default_retain() -> usize {
    3
}

/// What to restore on start.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RestoreMode {
    /// Start from the beginning of the input.
    #[default]
    None,
    /// The newest complete checkpoint, if any.
    Latest,
}

/// Why a checkpoint was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    /// Periodic; deleted once `retain` newer ones exist.
    Checkpoint,
    /// Taken on stop (SIGTERM, Ctrl-C); kept until deleted by hand.
    Savepoint,
    /// Taken when bounded input has been fully processed: restoring it
    /// produces nothing more.
    Final,
}

impl std::fmt::Display for CheckpointKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CheckpointKind::Checkpoint => "checkpoint",
            CheckpointKind::Savepoint => "savepoint",
            CheckpointKind::Final => "final",
        })
    }
}

/// What a complete checkpoint holds; written last, as `MANIFEST`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Its number.
    pub id: CheckpointId,
    /// Why it was taken.
    pub kind: CheckpointKind,
    /// The pipeline's name.
    pub pipeline: String,
    /// When the sources were asked for it (ms since the epoch).
    pub started_at_ms: u64,
    /// From that request to the manifest, in ms.
    pub duration_ms: u64,
    /// The pipeline's number of key groups.
    pub max_parallelism: u16,
    /// `memory` or `rocksdb`: state copies are restored by the same kind.
    pub state_backend: String,
    /// Per source, in pipeline-file order.
    pub sources: Vec<SourceRecord>,
    /// Per stateful operator.
    pub operators: Vec<OperatorRecord>,
    /// Per sink, in pipeline-file order, then the late-data sink.
    pub sinks: Vec<SinkRecord>,
    /// Every file of the checkpoint but the manifest.
    pub files: Vec<FileRecord>,
}

impl Manifest {
    /// Total size of the checkpoint's files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// The operator record named `name`.
    pub fn operator(&self, name: &str) -> Option<&OperatorRecord> {
        self.operators.iter().find(|o| o.name == name)
    }
}

/// A source's place in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The source's name.
    pub name: String,
    /// Where it resumes.
    pub position: SourcePosition,
    /// The largest event time it had read (its watermark resumes there).
    pub max_timestamp: i64,
    /// It had reached the end of its input.
    pub ended: bool,
}

/// A stateful operator's subtasks in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRecord {
    /// The operator's name.
    pub name: String,
    /// Per subtask: its directory and key groups.
    pub subtasks: Vec<SubtaskRecord>,
}

/// One subtask's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskRecord {
    /// Its directory, relative to the checkpoint's.
    pub dir: String,
    /// First and last key group it owned.
    pub key_groups: (u16, u16),
}

/// A sink's state in a checkpoint (what its restore and commit need).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkRecord {
    /// The sink's name.
    pub name: String,
    /// Sink-specific (a file sink: its next part number and the sealed
    /// parts to make visible).
    pub state: serde_json::Value,
}

/// A file of a checkpoint, checked on restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Path relative to the checkpoint's directory, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of the contents.
    pub crc32: u32,
}

/// The directory of `operator`'s subtask `subtask` inside a checkpoint.
pub fn subtask_dir(operator: &str, subtask: usize) -> String {
    let safe: String = operator
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("op-{safe}/{subtask}")
}

/// Inside a subtask's checkpoint directory: the state store's copy…
pub const STATE_DIR: &str = "state";
/// …and what the operator keeps beside it (postcard): a window subtask's
/// watermark and key groups, a keyed subtask's timers and TTL bookkeeping.
pub const TIMERS_FILE: &str = "timers.bin";

/// Takes a subtask's snapshot for `dir`: `store`'s copy under
/// [`STATE_DIR`], and `timers` (what the operator keeps beside the store)
/// encoded now. Returns the writing that is left: the store's deferred
/// part, then [`TIMERS_FILE`], each synced to disk.
///
/// # Errors
/// The directory cannot be created or the store cannot take its copy.
pub fn snapshot_subtask<T: Serialize>(
    dir: &std::path::Path,
    store: &mut dyn StateStore,
    timers: &T,
) -> Result<Deferred, StateError> {
    let state = dir.join(STATE_DIR);
    std::fs::create_dir_all(&state)
        .map_err(|e| StateError(format!("cannot create {}: {e}", state.display())))?;
    let store_part = store.checkpoint(&state)?;
    let bytes = postcard::to_stdvec(timers).map_err(|e| StateError(e.to_string()))?;
    let path = dir.join(TIMERS_FILE);
    let mut dirs = vec![state, dir.to_path_buf()];
    dirs.extend(dir.parent().map(std::path::Path::to_path_buf));
    Ok(Box::new(move || {
        store_part()?;
        crate::state::write_synced(&path, &bytes)?;
        // The new directory entries too, or a crash could keep the
        // manifest and lose the files it lists.
        for dir in &dirs {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StateError(format!("cannot sync {}: {e}", dir.display())))?;
        }
        Ok(())
    }))
}

/// The [`TIMERS_FILE`]s of the subtask snapshots in `from`.
///
/// # Errors
/// A file is missing or does not decode.
pub fn read_subtasks<T: for<'de> Deserialize<'de>>(from: &[PathBuf]) -> Result<Vec<T>, StateError> {
    from.iter()
        .map(|dir| {
            let path = dir.join(TIMERS_FILE);
            let bytes = std::fs::read(&path)
                .map_err(|e| StateError(format!("cannot read {}: {e}", path.display())))?;
            postcard::from_bytes(&bytes)
                .map_err(|e| StateError(format!("{} does not decode: {e}", path.display())))
        })
        .collect()
}
