//! The embedded runtime: sources, stages of parallel subtasks and sinks on
//! threads joined by bounded channels.
//!
//! ```text
//! source ─┐            ┌─ subtask 0 ─┐            ┌─ subtask 0 ─┐
//! source ─┼─(key_by)──▶┤             ├─(key_by)──▶┤             ├──▶ sinks, late sink
//!         └            └─ subtask 1 ─┘            └─────────────┘
//!                 stage 0 (e.g. a stateless chain)   stage 1 (e.g. a window)
//! ```
//!
//! - A stage is a fused chain of stateless operators or one window
//!   operator, run by `parallelism` subtasks. Into a keyed stage, every
//!   event goes to the subtask owning its key's key group; otherwise
//!   batches go one-to-one (same parallelism) or round-robin.
//! - Watermarks flow in-band. Each source partition generates its own
//!   (bounded out-of-orderness) and says when it has gone idle; each
//!   subtask's watermark is the minimum over its active inputs, and it
//!   fires its windows when that advances. The end of bounded input is the
//!   watermark [`END_OF_TIME`], which fires everything.
//! - Each channel (`crate::channel`) holds at most `queue_batches`
//!   batches, so a slow sink slows everything before it (backpressure)
//!   instead of growing memory. Watermarks and barriers queue beside them.
//! - A stage of one subtask that can take its batches as they are (a
//!   window, or stateless operators without `key_by`) and has one input
//!   (one source, or one subtask before it) runs on that input's thread
//!   ([`Downstream::Chained`]; `PipelineSettings::chaining`).
//! - Into a window stage, keys do not travel in the events: with one
//!   subtask it applies `key_by` itself, with several the router sends
//!   them beside the batch (`keys::EventKeys`).
//!   Every sink gets every result.
//! - The run ends when every source has ended and everything in flight has
//!   reached the sinks, or at the first error; after an error everything
//!   accepted before it still reaches the sinks.
//! - With checkpoints ([`crate::checkpoint`]), sources put barriers in
//!   line with their events; subtasks and sinks align them (holding back
//!   the inputs whose barrier has come until all have) and snapshot.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use weir_batch::window::FiredWriter;
use weir_batch::{Batch, BatchWriter, event_count};

use crate::channel::{self, Receiver, RecvTimeoutError};
use crate::checkpoint::coordinator::{self, Ack, Checkpointing, Layout, OperatorLayout, Triggers};
use crate::checkpoint::{CheckpointId, CheckpointKind, CheckpointStore, SourceRecord, subtask_dir};
use crate::dead_letter::DeadLetters;
use crate::keyed::KeyedProcessOperator;
use crate::keys::{BatchKeys, EventKeys, KeySelector, key_group, subtask_for_group};
use crate::operator::{FailureKind, Operator, OperatorFailure};
use crate::pipeline::PipelineSettings;
use crate::sink::{Sink, SinkError, SinkSummary};
use crate::source::{HEARTBEAT, Origin, Positions, Source, SourceBatch, SourceError};
use crate::state::{Deferred, StateError};
use crate::time::{BoundedOutOfOrderness, END_OF_TIME, WatermarkSpec, WatermarkTracker};
use crate::window::{LocalAggregate, WindowError, WindowOperator, WindowOutput};

/// A pipeline ready to run.
pub struct Pipeline {
    /// Batch size, linger, queue depth, key groups.
    pub settings: PipelineSettings,
    /// How source partitions generate watermarks.
    pub watermark: WatermarkSpec,
    /// Source partitions; their events are merged.
    pub sources: Vec<Box<dyn Source>>,
    /// The stages, in order.
    pub stages: Vec<Stage>,
    /// Every sink gets every result.
    pub sinks: Vec<Box<dyn Sink>>,
    /// Where events later than a window's allowed lateness go.
    pub late: Option<Box<dyn Sink>>,
    /// Where malformed input goes, if anywhere.
    pub dead_letters: Option<DeadLetters>,
    /// Periodic checkpoints, if any.
    pub checkpointing: Option<Checkpointing>,
}

/// One stage: the same task run by several subtasks.
pub struct Stage {
    /// How events are partitioned into the stage (`None`: not by key).
    pub key_by: Option<KeySelector>,
    /// One task per subtask; their number is the stage's parallelism.
    pub subtasks: Vec<Task>,
}

/// What a subtask runs.
pub enum Task {
    /// Stateless operators, fused: each batch goes through all of them.
    Chain(Vec<Box<dyn Operator>>),
    /// A window operator.
    Window(WindowOperator),
    /// A keyed process operator.
    Keyed(KeyedProcessOperator),
}

impl Stage {
    /// A stage of one subtask running `operators` in order.
    pub fn chain(operators: Vec<Box<dyn Operator>>) -> Self {
        Stage {
            key_by: None,
            subtasks: vec![Task::Chain(operators)],
        }
    }

    /// Whether this stage can run on the thread of the one source or
    /// subtask before it: one subtask that needs no events rewritten on
    /// the way (a window applies `key_by` itself) and no wall-clock ticks
    /// (a keyed process operator has processing-time timers).
    fn can_chain(&self) -> bool {
        match self.subtasks.as_slice() {
            [Task::Window(_)] => true,
            [Task::Chain(_)] => self.key_by.is_none(),
            _ => false,
        }
    }
}

/// Live counters, readable while the pipeline runs (for progress lines).
#[derive(Debug, Default)]
pub struct Progress {
    /// Events read from sources.
    pub events_in: AtomicU64,
    /// Events handed to the sinks.
    pub events_out: AtomicU64,
}

/// What a finished run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// Events read from sources.
    pub events_in: u64,
    /// Events the last stage produced.
    pub events_out: u64,
    /// Events later than their windows' allowed lateness.
    pub late_events: u64,
    /// Per sink, in pipeline-file order.
    pub sinks: Vec<SinkSummary>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Checkpoints completed (savepoint and final included).
    pub checkpoints: u64,
    /// The newest completed checkpoint.
    pub last_checkpoint: Option<(CheckpointId, CheckpointKind)>,
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A source failed (malformed input, I/O).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// An operator failed.
    #[error("operator `{operator}` {kind} on {position}: {message}")]
    Operator {
        /// The operator's name.
        operator: String,
        /// How.
        kind: FailureKind,
        /// The input position of the event, as precisely as known.
        position: String,
        /// Details.
        message: String,
    },
    /// An event has no usable key for a `key_by`.
    #[error("{position}: cannot key by `{key_by}`: {message}")]
    Key {
        /// The event's position.
        position: String,
        /// The `key_by` setting.
        key_by: String,
        /// What is wrong.
        message: String,
    },
    /// The state backend failed.
    #[error("operator `{operator}`: {message}")]
    State {
        /// The operator's name.
        operator: String,
        /// Details.
        message: String,
    },
    /// A sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The dead-letter sink failed.
    #[error("dead-letter sink: {0}")]
    DeadLetter(String),
    /// A bug in Weir: something that the runtime itself guarantees did not
    /// hold.
    #[error("internal error: {0}")]
    Internal(String),
    /// A pipeline thread panicked (a bug in Weir).
    #[error("internal error: the {0} thread panicked")]
    Panicked(&'static str),
    /// Checkpoints cannot be taken.
    #[error("checkpoints: {0}")]
    Checkpoint(String),
}

type Errors = Arc<Mutex<Vec<RunError>>>;

fn record(errors: &Errors, error: RunError) {
    errors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(error);
}

/// What flows between tasks, tagged with the sender's input index.
enum Message {
    Batch(SourceBatch, Keys),
    /// Accumulators a sender folded for a window stage, in the
    /// fired-windows format (see `window/local.rs`).
    Partials(Vec<u8>),
    Watermark(i64),
    /// The sender has gone idle; its next message makes it active again.
    Idle,
    /// Everything before it belongs to checkpoint `n`.
    Barrier(CheckpointId),
}

/// How the events of a batch carry the keys of the stage they go to.
enum Keys {
    /// In the events (or the stage is not keyed).
    InEvents,
    /// Beside the batch, one per event (for window stages, whose functions
    /// get the events as they came).
    Beside(BatchKeys),
    /// To be taken by the receiving window subtask, the only one: the
    /// batch comes as its source wrote it.
    Select(Arc<KeySelector>),
}

impl Keys {
    fn as_event_keys(&self) -> EventKeys<'_> {
        match self {
            Keys::InEvents => EventKeys::InEvents,
            Keys::Beside(keys) => EventKeys::Beside(keys),
            Keys::Select(selector) => EventKeys::Select(selector),
        }
    }
}

/// What flows into a sink, tagged with the sender's input index.
enum SinkMessage {
    Batch(Arc<Vec<u8>>),
    Barrier(CheckpointId),
    /// The sender's input has ended.
    End,
}

type SinkEnvelope = (usize, SinkMessage);

/// Barrier alignment for one task or sink: once barrier `n` has come on
/// an input, that input's later messages are held back until `n` has come
/// on every input (an ended input counts as arrived).
struct Alignment<M> {
    blocked: Vec<bool>,
    ended: Vec<bool>,
    current: Option<CheckpointId>,
    held: VecDeque<(usize, M)>,
}

impl<M> Alignment<M> {
    fn new(inputs: usize) -> Self {
        Alignment {
            blocked: vec![false; inputs],
            ended: vec![false; inputs],
            current: None,
            held: VecDeque::new(),
        }
    }

    /// Holds `message` back when its input already sent the barrier.
    fn hold(&mut self, input: usize, message: M) -> Option<M> {
        if self.current.is_some() && self.blocked.get(input).copied().unwrap_or(false) {
            self.held.push_back((input, message));
            None
        } else {
            Some(message)
        }
    }

    fn complete(&self) -> bool {
        self.blocked.iter().zip(&self.ended).all(|(b, e)| *b || *e)
    }

    /// Barrier `id` on `input`; true when it is now aligned. A barrier
    /// after an input's end (a task forwards its end before the barrier
    /// the end completed) was already counted by the end.
    fn barrier(&mut self, input: usize, id: CheckpointId) -> bool {
        if self.ended.get(input).copied().unwrap_or(true) {
            return false;
        }
        self.current = Some(id);
        if let Some(b) = self.blocked.get_mut(input) {
            *b = true;
        }
        self.complete()
    }

    /// `input` ended; true when that completes an alignment.
    fn end(&mut self, input: usize) -> bool {
        if let Some(e) = self.ended.get_mut(input) {
            *e = true;
        }
        self.current.is_some() && self.complete()
    }

    fn all_ended(&self) -> bool {
        self.ended.iter().all(|e| *e)
    }

    /// The aligned checkpoint, and the messages held back.
    fn release(&mut self) -> (CheckpointId, VecDeque<(usize, M)>) {
        self.blocked.fill(false);
        (
            self.current.take().unwrap_or_default(),
            std::mem::take(&mut self.held),
        )
    }
}

/// What a subtask needs to take its part in checkpoints.
struct TaskCheckpoint {
    store: CheckpointStore,
    subtask: usize,
    acks: Sender<Ack>,
}

/// What a source needs to take its part in checkpoints.
struct SourceCheckpoint {
    index: usize,
    triggers: Arc<Triggers>,
    acks: Sender<Ack>,
    resume_max_timestamp: Option<i64>,
}

type Envelope = (usize, Message);

impl Pipeline {
    /// Runs to the end of bounded input, to the first error, or — with
    /// checkpoints — to a savepoint when `checkpointing.stop` is set.
    ///
    /// # Errors
    /// The first [`RunError`]; everything accepted before it has been written.
    pub fn run(self, progress: &Arc<Progress>) -> Result<RunSummary, RunError> {
        let started = Instant::now();
        let errors: Errors = Arc::default();
        let queue = self.settings.queue_batches;
        let max_parallelism = self.settings.max_parallelism;
        let late_events = Arc::new(AtomicU64::new(0));
        let total_tasks: usize = self.stages.iter().map(|s| s.subtasks.len()).sum();
        let stage_count = self.stages.len();
        let mut upstream_counts: Vec<usize> = Vec::with_capacity(stage_count);
        upstream_counts.push(self.sources.len());
        for stage in &self.stages[..stage_count.saturating_sub(1)] {
            upstream_counts.push(stage.subtasks.len());
        }
        // Before any thread starts: starting them can fail.
        let mut locals = if self.settings.local_aggregation {
            local_aggregates(&self.stages, &upstream_counts)?
        } else {
            Vec::new()
        };
        let last_inputs = self
            .stages
            .last()
            .map_or(self.sources.len(), |s| s.subtasks.len());

        // Checkpoints: a coordinator thread, and acks from everyone.
        let (acks, ack_rx) = channel::<Ack>();
        let triggers = Arc::new(Triggers::default());
        let checkpointing = self.checkpointing;
        if checkpointing.is_some()
            && let Some(source) = self.sources.iter().find(|s| s.position().is_none())
        {
            return Err(RunError::Checkpoint(format!(
                "source {} cannot be rewound after a crash, so it cannot be checkpointed",
                source.name()
            )));
        }
        let coordinator_thread = checkpointing.map(|config| {
            let mut sinks: Vec<_> = self
                .sinks
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("sink #{i}"), s.committer()))
                .collect();
            if let Some(late) = &self.late {
                sinks.push(("late_data".to_string(), late.committer()));
            }
            let layout = Layout {
                pipeline: self.settings.name.clone(),
                max_parallelism,
                sources: self.sources.iter().map(|s| s.name().to_string()).collect(),
                operators: self
                    .stages
                    .iter()
                    .filter_map(|stage| {
                        let name = stage.subtasks.first()?.stateful_name()?;
                        Some(OperatorLayout {
                            name: name.to_string(),
                            parallelism: stage.subtasks.len(),
                        })
                    })
                    .collect(),
                tasks: total_tasks,
                sinks,
            };
            let triggers = triggers.clone();
            let store = config.store.clone();
            let restored = config.restored.as_ref().map(|m| {
                m.sources
                    .iter()
                    .map(|s| s.max_timestamp)
                    .collect::<Vec<_>>()
            });
            let thread =
                std::thread::spawn(move || coordinator::run(&config, &layout, &triggers, &ack_rx));
            (thread, store, restored)
        });
        let checkpoint_store = coordinator_thread
            .as_ref()
            .map(|(_, store, _)| store.clone());
        let restored_max = coordinator_thread
            .as_ref()
            .and_then(|(_, _, restored)| restored.clone());
        let acks = checkpoint_store.as_ref().map(|_| acks);

        // Sinks first: the last stage sends to them.
        let mut sink_txs = Vec::new();
        let mut sink_threads: Vec<_> = Vec::new();
        for (index, sink) in self.sinks.into_iter().enumerate() {
            let (tx, rx) = channel::bounded::<SinkEnvelope>(queue, |(_, m)| {
                matches!(m, SinkMessage::Batch(_))
            });
            sink_txs.push(tx);
            let errors = errors.clone();
            let acks = acks.clone().map(|acks| (index, acks));
            sink_threads.push(std::thread::spawn(move || {
                run_sink(sink, &rx, last_inputs, &errors, acks)
            }));
        }
        let sink_count = sink_txs.len();
        let (late_tx, late_thread) = match self.late {
            Some(sink) => {
                let (tx, rx) = channel::bounded::<SinkEnvelope>(queue, |(_, m)| {
                    matches!(m, SinkMessage::Batch(_))
                });
                let errors = errors.clone();
                let acks = acks.clone().map(|acks| (sink_count, acks));
                (
                    Some(tx),
                    Some(std::thread::spawn(move || {
                        run_sink(sink, &rx, total_tasks, &errors, acks)
                    })),
                )
            }
            None => (None, None),
        };
        let results = Results {
            sinks: sink_txs,
            late: late_tx,
            input: 0,
            late_input: 0,
            progress: progress.clone(),
            late_events: late_events.clone(),
        };

        // Stages from last to first, so each knows where it sends.
        let mut task_threads = Vec::new();
        let mut downstream: Option<NextStage> = None;
        let mut task_index = total_tasks;
        // The stage after the one being wired, when it runs on that
        // stage's one subtask's thread (or, for the first, its source's).
        let mut chained: Option<Chained> = None;
        for (index, stage) in self.stages.into_iter().enumerate().rev() {
            let inputs = upstream_counts[index];
            let windows = stage.subtasks.iter().all(|t| matches!(t, Task::Window(_)));
            let chain = self.settings.chaining && inputs == 1 && stage.can_chain();
            let mut senders = Vec::new();
            task_index -= stage.subtasks.len();
            // Chained, the next stage has one input: this stage's only
            // subtask.
            let mut next = chained.take();
            for (subtask, task) in stage.subtasks.into_iter().enumerate() {
                let out = downstream_of(
                    next.take(),
                    downstream.as_mut(),
                    subtask,
                    &results,
                    max_parallelism,
                );
                let errors = errors.clone();
                let late = Results {
                    late_input: task_index + subtask,
                    ..results.clone()
                };
                let checkpoint =
                    checkpoint_store
                        .as_ref()
                        .zip(acks.as_ref())
                        .map(|(store, acks)| TaskCheckpoint {
                            store: store.clone(),
                            subtask,
                            acks: acks.clone(),
                        });
                let subtask = Subtask::new(task, inputs, out, late, checkpoint);
                if chain {
                    chained = Some(Chained {
                        subtask,
                        key_by: stage.key_by.clone().map(Arc::new),
                    });
                    continue;
                }
                let (tx, rx) = channel::bounded::<Envelope>(queue, |(_, m)| {
                    matches!(m, Message::Batch(..) | Message::Partials(_))
                });
                senders.push(tx);
                task_threads.push(std::thread::spawn(move || run_task(subtask, &rx, &errors)));
            }
            downstream = Some(NextStage {
                targets: senders,
                key_by: stage.key_by,
                windows,
                locals: locals.pop().unwrap_or_default(),
            });
        }
        let source_threads: Vec<_> = self
            .sources
            .into_iter()
            .enumerate()
            .map(|(index, source)| {
                let out = downstream_of(
                    chained.take(),
                    downstream.as_mut(),
                    index,
                    &results,
                    max_parallelism,
                );
                let errors = errors.clone();
                let progress = progress.clone();
                let pace = Pace {
                    batch_size: self.settings.batch_size,
                    watermark: self.watermark,
                    max_events_per_second: self.settings.max_events_per_second,
                };
                let checkpoint = acks.as_ref().map(|acks| SourceCheckpoint {
                    index,
                    triggers: triggers.clone(),
                    acks: acks.clone(),
                    resume_max_timestamp: restored_max.as_ref().and_then(|m| m.get(index).copied()),
                });
                std::thread::spawn(move || {
                    run_source(source, pace, out, &progress, &errors, checkpoint.as_ref());
                })
            })
            .collect();
        drop(downstream);
        drop(results);
        drop(acks);

        for thread in source_threads {
            if thread.join().is_err() {
                record(&errors, RunError::Panicked("source"));
            }
        }
        for thread in task_threads {
            if thread.join().is_err() {
                record(&errors, RunError::Panicked("operator"));
            }
        }
        let mut sinks = Vec::new();
        for thread in sink_threads {
            match thread.join() {
                Ok(Some(summary)) => sinks.push(summary),
                Ok(None) => {}
                Err(_) => record(&errors, RunError::Panicked("sink")),
            }
        }
        if let Some(thread) = late_thread
            && thread.join().is_err()
        {
            record(&errors, RunError::Panicked("late-data sink"));
        }
        let report = match coordinator_thread {
            Some((thread, _, _)) => match thread.join() {
                Ok(report) => report,
                Err(_) => {
                    record(&errors, RunError::Panicked("checkpoint coordinator"));
                    coordinator::Report::default()
                }
            },
            None => coordinator::Report::default(),
        };
        if let Some(Err(e)) = self.dead_letters.as_ref().map(DeadLetters::finish) {
            record(&errors, RunError::DeadLetter(e));
        }
        let mut errors =
            std::mem::take(&mut *errors.lock().unwrap_or_else(PoisonError::into_inner));
        if !errors.is_empty() {
            return Err(errors.swap_remove(0));
        }
        Ok(RunSummary {
            events_in: progress.events_in.load(Ordering::Relaxed),
            events_out: progress.events_out.load(Ordering::Relaxed),
            late_events: late_events.load(Ordering::Relaxed),
            sinks,
            elapsed: started.elapsed(),
            checkpoints: report.completed,
            last_checkpoint: report.last,
        })
    }
}

/// A stage as the stage or sources before it see it.
struct NextStage {
    /// Its subtasks' senders.
    targets: Vec<channel::Sender<Envelope>>,
    key_by: Option<KeySelector>,
    /// Whether it runs windows.
    windows: bool,
    /// The first phase of two-phase aggregation for each sender, when the
    /// stage takes it (empty otherwise).
    locals: Vec<Option<LocalAggregate>>,
}

/// For each stage, taken from the last: the first phase of two-phase
/// aggregation for each of its `inputs[stage]` senders, when it has
/// several subtasks and its window takes one (see `window/local.rs`).
///
/// # Errors
/// A copy of a window function could not be started.
fn local_aggregates(
    stages: &[Stage],
    inputs: &[usize],
) -> Result<Vec<Vec<Option<LocalAggregate>>>, RunError> {
    let mut all = Vec::with_capacity(stages.len());
    for (stage, inputs) in stages.iter().zip(inputs) {
        let mut locals = Vec::new();
        if let [Task::Window(window), _, ..] = stage.subtasks.as_slice() {
            for _ in 0..*inputs {
                match window.local_aggregate() {
                    None => break,
                    Some(Ok(local)) => locals.push(Some(local)),
                    Some(Err(e)) => {
                        return Err(timer_error(window.name(), e, "starting its first phase"));
                    }
                }
            }
        }
        all.push(locals);
    }
    Ok(all)
}

/// Where the subtask or source numbered `input` sends: to the next
/// stage's one subtask, `chained` to run right there; to the subtasks of
/// `next`; or, after the last stage, to the sinks.
fn downstream_of(
    chained: Option<Chained>,
    next: Option<&mut NextStage>,
    input: usize,
    results: &Results,
    max_parallelism: u16,
) -> Downstream {
    if let Some(chained) = chained {
        return Downstream::Chained(Box::new(chained));
    }
    match next {
        Some(next) => Downstream::Stage(Router::new(
            next.targets.clone(),
            input,
            next.key_by.clone(),
            next.windows,
            max_parallelism,
            next.locals
                .get_mut(input)
                .and_then(Option::take)
                .map(Box::new),
        )),
        None => Downstream::Sinks(results.with_input(input)),
    }
}

/// How a source is read.
struct Pace {
    batch_size: usize,
    watermark: WatermarkSpec,
    max_events_per_second: Option<u64>,
}

fn run_source(
    mut source: Box<dyn Source>,
    pace: Pace,
    mut out: Downstream,
    progress: &Progress,
    errors: &Errors,
    checkpoint: Option<&SourceCheckpoint>,
) {
    let watermark = pace.watermark;
    let mut generator = BoundedOutOfOrderness::new(watermark.max_out_of_orderness_ms);
    if let Some(max) = checkpoint.and_then(|c| c.resume_max_timestamp) {
        generator.resume(max);
    }
    let idle_after = watermark.idle_timeout_ms.map(Duration::from_millis);
    let mut last_event = Instant::now();
    let mut idle = false;
    let mut sent_watermark = i64::MIN;
    let mut injected = 0;
    let started = Instant::now();
    let mut read = 0u64;
    let record_of = |source: &dyn Source, generator: &BoundedOutOfOrderness, ended| {
        source.position().map(|position| SourceRecord {
            name: source.name().to_string(),
            position,
            max_timestamp: generator.max_seen(),
            ended,
        })
    };
    loop {
        if let Some(cp) = checkpoint {
            let wanted = cp.triggers.requested.load(Ordering::SeqCst);
            if wanted > injected {
                injected = wanted;
                let ack = match record_of(source.as_ref(), &generator, false) {
                    Some(record) => Ack::Source {
                        index: cp.index,
                        id: wanted,
                        record,
                    },
                    None => Ack::Failed {
                        id: wanted,
                        reason: format!("source {} has no position", source.name()),
                    },
                };
                let _ = cp.acks.send(ack);
                if let Err(stop) = out.broadcast(|| Message::Barrier(wanted)) {
                    return stopped(errors, stop);
                }
                if cp.triggers.savepoint.load(Ordering::SeqCst) == wanted {
                    return; // stop with savepoint: nothing after the barrier
                }
            }
        }
        if let Some(rate) = pace.max_events_per_second.filter(|r| *r > 0) {
            let due = started + Duration::from_secs_f64(read as f64 / rate as f64);
            let wait = due.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                // In short steps, so checkpoint requests are not delayed.
                std::thread::sleep(wait.min(Duration::from_millis(20)));
                continue;
            }
        }
        let batch_size = match pace.max_events_per_second {
            Some(rate) => pace
                .batch_size
                .min(usize::try_from(rate / 10).unwrap_or(usize::MAX).max(1)),
            None => pace.batch_size,
        };
        let batch = match source.next_batch(batch_size) {
            Ok(Some(batch)) => batch,
            Ok(None) => {
                if let Some(cp) = checkpoint
                    && let Some(record) = record_of(source.as_ref(), &generator, true)
                {
                    let _ = cp.acks.send(Ack::SourceEnded {
                        index: cp.index,
                        record,
                    });
                }
                if let Err(stop) = out.broadcast(|| Message::Watermark(END_OF_TIME)) {
                    stopped(errors, stop);
                }
                return;
            }
            Err(e) => return record(errors, e.into()),
        };
        if batch.len == 0 {
            if idle_after.is_some_and(|after| !idle && last_event.elapsed() >= after) {
                idle = true;
                if let Err(stop) = out.broadcast(|| Message::Idle) {
                    return stopped(errors, stop);
                }
            }
            continue;
        }
        last_event = Instant::now();
        idle = false;
        match batch.max_timestamp {
            Some(max) => generator.observe(max),
            // A malformed batch fails where it is routed.
            None => {
                let _ = weir_batch::read_events(&batch.bytes, |e| generator.observe(e.timestamp));
            }
        }
        let len = batch.len as u64;
        read += len;
        if let Err(stop) = out.send(batch) {
            return stopped(errors, stop);
        }
        progress.events_in.fetch_add(len, Ordering::Relaxed);
        let watermark = generator.watermark();
        if watermark > sent_watermark {
            sent_watermark = watermark;
            if let Err(stop) = out.broadcast(|| Message::Watermark(watermark)) {
                return stopped(errors, stop);
            }
        }
    }
}

/// Records why a source stopped sending: a chained subtask's failure. A
/// closed downstream stopped on an error of its own, recorded there.
fn stopped(errors: &Errors, stop: Stop) {
    if let Stop::Failed(e) = stop {
        record(errors, e);
    }
}

fn run_sink(
    mut sink: Box<dyn Sink>,
    rx: &Receiver<SinkEnvelope>,
    inputs: usize,
    errors: &Errors,
    checkpoint: Option<(usize, Sender<Ack>)>,
) -> Option<SinkSummary> {
    let mut alignment = Alignment::new(inputs);
    let mut replay: VecDeque<SinkEnvelope> = VecDeque::new();
    let mut failed = false;
    loop {
        let (input, message) = match replay.pop_front() {
            Some(envelope) => envelope,
            None => match rx.recv() {
                Some(envelope) => envelope,
                None => break,
            },
        };
        let Some(message) = alignment.hold(input, message) else {
            continue;
        };
        let aligned = match message {
            SinkMessage::Batch(bytes) => {
                let written = match Batch::new(&bytes) {
                    Ok(batch) => sink.write(&batch),
                    Err(e) => {
                        record(
                            errors,
                            RunError::Internal(format!("a malformed batch reached a sink: {e}")),
                        );
                        failed = true;
                        break;
                    }
                };
                if let Err(e) = written {
                    record(errors, e.into());
                    failed = true;
                    break;
                }
                false
            }
            SinkMessage::Barrier(id) => alignment.barrier(input, id),
            SinkMessage::End => alignment.end(input),
        };
        if aligned {
            let (id, held) = alignment.release();
            if let Some((index, acks)) = &checkpoint {
                let ack = match sink.pre_commit() {
                    Ok(state) => Ack::Sink {
                        index: *index,
                        id,
                        state,
                    },
                    Err(e) => Ack::Failed {
                        id,
                        reason: e.to_string(),
                    },
                };
                let _ = acks.send(ack);
            }
            replay.extend(held);
        }
    }
    // Everything ended: the end of the input. Otherwise an error or a
    // savepoint stopped the run: what no checkpoint covers stays uncommitted.
    let ended = !failed && alignment.all_ended();
    let outcome = if ended { sink.finish() } else { sink.stop() };
    if let Some((index, acks)) = &checkpoint {
        let state = sink.pre_commit().unwrap_or_default();
        let _ = acks.send(Ack::SinkFinished {
            index: *index,
            state,
            ended: ended && outcome.is_ok(),
        });
    }
    match outcome {
        Ok(summary) if !failed => Some(summary),
        Ok(_) => None,
        Err(e) => {
            record(errors, e.into());
            None
        }
    }
}

/// Why sending stopped.
enum Stop {
    /// The receiving side is gone (it recorded its own error).
    Closed,
    /// This side failed.
    Failed(RunError),
}

/// Where the last stage's results and every late event go.
#[derive(Clone)]
struct Results {
    sinks: Vec<channel::Sender<SinkEnvelope>>,
    late: Option<channel::Sender<SinkEnvelope>>,
    /// This sender's input index at the sinks…
    input: usize,
    /// …and at the late-data sink.
    late_input: usize,
    progress: Arc<Progress>,
    late_events: Arc<AtomicU64>,
}

impl Results {
    fn with_input(&self, input: usize) -> Self {
        Results {
            input,
            ..self.clone()
        }
    }

    fn send(&self, bytes: Vec<u8>) {
        let n = event_count(&bytes) as u64;
        if n == 0 {
            return;
        }
        let shared = Arc::new(bytes);
        for sink in &self.sinks {
            // A closed sink has recorded its own error.
            let _ = sink.send((self.input, SinkMessage::Batch(shared.clone())));
        }
        self.progress.events_out.fetch_add(n, Ordering::Relaxed);
    }

    /// A barrier or the end to every sink.
    fn signal(&self, message: impl Fn() -> SinkMessage) {
        for sink in &self.sinks {
            let _ = sink.send((self.input, message()));
        }
    }

    /// A barrier or the end to the late-data sink.
    fn signal_late(&self, message: SinkMessage) {
        if let Some(late) = &self.late {
            let _ = late.send((self.late_input, message));
        }
    }

    fn send_late(&self, bytes: Vec<u8>) -> Result<(), RunError> {
        let n = event_count(&bytes) as u64;
        if n == 0 {
            return Ok(());
        }
        let late = self.late.as_ref().ok_or_else(|| {
            RunError::Internal(
                "late events but no late-data sink (the pipeline file check requires one)".into(),
            )
        })?;
        let _ = late.send((self.late_input, SinkMessage::Batch(Arc::new(bytes))));
        self.late_events.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

/// The sending side of a task or source.
enum Downstream {
    Stage(Router),
    /// The next stage's only subtask, whose only input this is, run right
    /// here (see `PipelineSettings::chaining`).
    Chained(Box<Chained>),
    Sinks(Results),
}

/// A subtask run on the thread of the source or subtask before it.
struct Chained {
    subtask: Subtask,
    /// The stage's `key_by`, applied by its window.
    key_by: Option<Arc<KeySelector>>,
}

impl Downstream {
    fn send(&mut self, batch: SourceBatch) -> Result<(), Stop> {
        match self {
            Downstream::Stage(router) => router.send(batch),
            Downstream::Chained(chained) => {
                if batch.len == 0 {
                    return Ok(());
                }
                let keys = match &chained.key_by {
                    Some(key_by) => Keys::Select(key_by.clone()),
                    None => Keys::InEvents,
                };
                chained.subtask.handle(0, Message::Batch(batch, keys))
            }
            Downstream::Sinks(results) => {
                results.send(batch.bytes);
                Ok(())
            }
        }
    }

    fn broadcast(&mut self, message: impl Fn() -> Message) -> Result<(), Stop> {
        match self {
            Downstream::Stage(router) => router.broadcast(message),
            Downstream::Chained(chained) => chained.subtask.handle(0, message()),
            Downstream::Sinks(results) => {
                match message() {
                    Message::Barrier(id) => results.signal(|| SinkMessage::Barrier(id)),
                    Message::Watermark(END_OF_TIME) => results.signal(|| SinkMessage::End),
                    _ => {}
                }
                Ok(())
            }
        }
    }
}

/// Sends one task's (or source's) output to the next stage's subtasks.
struct Router {
    targets: Vec<channel::Sender<Envelope>>,
    /// This sender's input index at every target.
    input: usize,
    key_by: Option<Arc<KeySelector>>,
    /// The targets run windows: keys go beside the events, which stay as
    /// they came (and with one target, the target takes them itself).
    keys_beside: bool,
    max_parallelism: u16,
    /// The target owning each key group (`subtask_for_group`, looked up
    /// rather than divided out per event).
    owners: Vec<u16>,
    next: usize,
    /// Two-phase aggregation's first phase, when the stage takes it…
    local: Option<Box<LocalAggregate>>,
    /// …and the watermark it has not sent on yet (see
    /// [`LocalAggregate::must_send`]).
    held: Option<i64>,
}

impl Router {
    fn new(
        targets: Vec<channel::Sender<Envelope>>,
        input: usize,
        key_by: Option<KeySelector>,
        keys_beside: bool,
        max_parallelism: u16,
        local: Option<Box<LocalAggregate>>,
    ) -> Self {
        let owners = (0..max_parallelism.max(1))
            .map(|group| subtask_for_group(group, max_parallelism, targets.len()) as u16)
            .collect();
        Router {
            targets,
            input,
            key_by: key_by.map(Arc::new),
            keys_beside,
            max_parallelism,
            owners,
            next: input,
            local,
            held: None,
        }
    }

    fn deliver(&self, target: usize, message: Message) -> Result<(), Stop> {
        self.targets[target]
            .send((self.input, message))
            .map_err(|_| Stop::Closed)
    }

    /// Sends `message` to every target. Before a watermark, the first
    /// phase sends what it closes; before a barrier or going idle,
    /// everything it holds.
    fn broadcast(&mut self, message: impl Fn() -> Message) -> Result<(), Stop> {
        if self.local.is_some() {
            match message() {
                Message::Watermark(watermark) => {
                    self.send_partials(watermark)?;
                    let Some(local) = &mut self.local else {
                        return Ok(());
                    };
                    local.advance(watermark);
                    if !local.must_send(watermark) {
                        self.held = Some(watermark);
                        return Ok(());
                    }
                    local.sent(watermark);
                    self.held = None;
                }
                Message::Barrier(_) => {
                    self.send_partials(END_OF_TIME)?;
                    self.send_held()?;
                }
                Message::Idle => {
                    self.send_partials(END_OF_TIME)?;
                    self.send_held()?;
                    if let Some(local) = &mut self.local {
                        local.stop_folding();
                    }
                }
                Message::Batch(..) | Message::Partials(_) => {}
            }
        }
        for target in 0..self.targets.len() {
            self.deliver(target, message())?;
        }
        Ok(())
    }

    /// Sends the watermark held back, if any: before events, which the
    /// stage must judge late or not against the watermark that one phase
    /// would have given it.
    fn send_held(&mut self) -> Result<(), Stop> {
        let Some(watermark) = self.held.take() else {
            return Ok(());
        };
        if let Some(local) = &mut self.local {
            local.sent(watermark);
        }
        for target in 0..self.targets.len() {
            self.deliver(target, Message::Watermark(watermark))?;
        }
        Ok(())
    }

    /// Sends each target the accumulators of its keys that the first
    /// phase holds for slices `watermark` closes.
    fn send_partials(&mut self, watermark: i64) -> Result<(), Stop> {
        let Some(local) = &mut self.local else {
            return Ok(());
        };
        let mut writers: Vec<FiredWriter> =
            self.targets.iter().map(|_| FiredWriter::new()).collect();
        let (owners, max_parallelism) = (&self.owners, self.max_parallelism);
        local.drain(watermark, |slice, key, acc| {
            let owner = owners[usize::from(key_group(key, max_parallelism))];
            writers[usize::from(owner)].push(slice.start, slice.end, Some(key), acc);
        });
        for (target, writer) in writers.into_iter().enumerate() {
            if !writer.is_empty() {
                self.deliver(target, Message::Partials(writer.finish()))?;
            }
        }
        Ok(())
    }

    fn send(&mut self, batch: SourceBatch) -> Result<(), Stop> {
        let n = self.targets.len();
        if n == 0 || batch.len == 0 {
            return Ok(());
        }
        let Some(key_by) = &self.key_by else {
            // Not keyed: round-robin, starting at a different target for
            // each sender.
            self.next = (self.next + 1) % n;
            return self.deliver(self.next, Message::Batch(batch, Keys::InEvents));
        };
        if n == 1 && self.keys_beside {
            // The window subtask takes the keys as it reads the batch,
            // which it does anyway: no pass here, no copy.
            let keys = Keys::Select(key_by.clone());
            return self.deliver(0, Message::Batch(batch, keys));
        }
        // Room for each target's share, plus a quarter for keys written
        // into the events (and an uneven split): outgrowing the buffer
        // would copy the whole batch again. Made at a target's first
        // event: with two-phase aggregation most batches send none.
        let share = batch.bytes.len() / n;
        let room = share + share / 4 + 64;
        let mut writers: Vec<Option<BatchWriter>> = (0..n).map(|_| None).collect();
        let mut beside: Vec<BatchKeys> = if self.keys_beside {
            let share = batch.len / n;
            (0..n)
                .map(|_| BatchKeys::with_capacity(share + share / 4, 8 * share))
                .collect()
        } else {
            Vec::new()
        };
        // With one target every event goes there, in order: the batch's
        // positions stay as they are, and no key needs its group.
        let mut positions: Vec<Positions> = if n == 1 {
            Vec::new()
        } else {
            // Room for a target's share and a quarter more.
            let share = batch.len / n;
            (0..n)
                .map(|_| batch.origin.positions.empty_like(share + share / 4))
                .collect()
        };
        // One pass: the format is checked as the events are routed.
        let mut index = 0;
        let mut failed = None;
        let local = &mut self.local;
        weir_batch::read_events(&batch.bytes, |event| {
            if failed.is_some() {
                return;
            }
            match key_by.key(event.key, event.value) {
                Ok(key)
                    if local
                        .as_mut()
                        .is_some_and(|l| l.take(index, event.timestamp, &key)) => {}
                Ok(key) => {
                    let target = if n == 1 {
                        0
                    } else {
                        let group = key_group(&key, self.max_parallelism);
                        let target = usize::from(self.owners[usize::from(group)]);
                        positions[target].push_from(&batch.origin.positions, index);
                        target
                    };
                    // Window functions get the events as they came; other
                    // stages get the key in each event.
                    let in_event = if self.keys_beside {
                        beside[target].push(&key);
                        event.key
                    } else {
                        Some(&*key)
                    };
                    let writer =
                        writers[target].get_or_insert_with(|| BatchWriter::with_capacity(room));
                    writer.push_raw_headers(
                        event.timestamp,
                        in_event,
                        event.value,
                        u32::try_from(event.header_count()).unwrap_or(u32::MAX),
                        event.raw_headers(),
                    );
                }
                Err(message) => {
                    failed = Some(RunError::Key {
                        position: batch.origin.describe(index),
                        key_by: key_by.to_string(),
                        message,
                    });
                }
            }
            index += 1;
        })
        .map_err(|e| Stop::Failed(RunError::Internal(format!("malformed batch: {e}"))))?;
        if let Some(error) = failed {
            return Err(Stop::Failed(error));
        }
        if let Some(local) = &mut self.local {
            local
                .add_taken(&batch.bytes)
                .map_err(|e| Stop::Failed(describe_window_error(local.name(), e, &batch)))?;
        }
        if n == 1 {
            positions.push(batch.origin.positions);
        }
        if writers.iter().flatten().any(|w| !w.is_empty()) {
            self.send_held()?;
        }
        let mut beside = beside.into_iter();
        for (target, (writer, positions)) in writers.into_iter().zip(positions).enumerate() {
            let keys = match beside.next() {
                Some(keys) => Keys::Beside(keys),
                None => Keys::InEvents,
            };
            let Some(writer) = writer.filter(|w| !w.is_empty()) else {
                continue;
            };
            let len = writer.len();
            let part = SourceBatch {
                bytes: writer.finish(),
                len,
                max_timestamp: None,
                origin: Origin {
                    source: batch.origin.source.clone(),
                    positions,
                },
            };
            self.deliver(target, Message::Batch(part, keys))?;
        }
        if self.local.as_ref().is_some_and(|l| l.over_budget()) {
            self.send_partials(END_OF_TIME)?;
        }
        Ok(())
    }
}

/// A subtask and what it keeps between messages. It runs on a thread of
/// its own ([`run_task`]) or, chained, on the thread of the one source
/// or subtask that feeds it ([`Downstream::Chained`]).
struct Subtask {
    task: Task,
    out: Downstream,
    late: Results,
    checkpoint: Option<TaskCheckpoint>,
    tracker: WatermarkTracker,
    alignment: Alignment<Message>,
    idle: bool,
    results: u64,
}

impl Subtask {
    fn new(
        task: Task,
        inputs: usize,
        out: Downstream,
        late: Results,
        checkpoint: Option<TaskCheckpoint>,
    ) -> Self {
        Subtask {
            task,
            out,
            late,
            checkpoint,
            tracker: WatermarkTracker::new(inputs),
            alignment: Alignment::new(inputs),
            idle: false,
            results: 0,
        }
    }

    /// Handles `message` from `input`, then whatever an alignment it
    /// completes releases.
    fn handle(&mut self, input: usize, message: Message) -> Result<(), Stop> {
        let mut replay = self.step(input, message)?;
        while let Some((input, message)) = replay.pop_front() {
            let more = self.step(input, message)?;
            replay.extend(more);
        }
        Ok(())
    }

    /// Processing-time timers fire on the wall clock.
    fn tick(&mut self) -> Result<(), Stop> {
        self.task.on_tick(&mut self.out, &mut self.results)
    }

    /// One message; returns the messages held back until now, when it
    /// completed an alignment.
    fn step(&mut self, input: usize, message: Message) -> Result<VecDeque<Envelope>, Stop> {
        let Some(message) = self.alignment.hold(input, message) else {
            return Ok(VecDeque::new());
        };
        let (out, late, results) = (&mut self.out, &self.late, &mut self.results);
        let mut aligned = false;
        match message {
            Message::Batch(batch, keys) => {
                // An idle input that sends again is active, but a batch
                // never advances the watermark.
                let _ = self.tracker.set_idle(input, false);
                self.idle = false;
                self.task.on_batch(batch, &keys, out, late, results)?;
            }
            Message::Partials(bytes) => {
                let _ = self.tracker.set_idle(input, false);
                self.idle = false;
                self.task.on_partials(&bytes, input, out, results)?;
            }
            Message::Watermark(w) => {
                aligned = w == END_OF_TIME && self.alignment.end(input);
                if let Some(w) = self.tracker.update(input, w) {
                    self.task.on_watermark(w, out, late, results)?;
                }
            }
            Message::Idle => {
                if let Some(w) = self.tracker.set_idle(input, true) {
                    self.task.on_watermark(w, out, late, results)?;
                }
            }
            Message::Barrier(id) => aligned = self.alignment.barrier(input, id),
        }
        let mut held = VecDeque::new();
        if aligned {
            let id;
            (id, held) = self.alignment.release();
            self.task.snapshot(id, self.checkpoint.as_ref());
            self.late.signal_late(SinkMessage::Barrier(id));
            self.out.broadcast(|| Message::Barrier(id))?;
        }
        if self.tracker.all_idle() && !self.idle {
            self.idle = true;
            self.out.broadcast(|| Message::Idle)?;
        }
        Ok(held)
    }
}

fn run_task(mut subtask: Subtask, rx: &Receiver<Envelope>, errors: &Errors) {
    loop {
        let step = match rx.recv_timeout(HEARTBEAT) {
            Ok((input, message)) => subtask.handle(input, message),
            Err(RecvTimeoutError::Timeout) => subtask.tick(),
            Err(RecvTimeoutError::Disconnected) => return,
        };
        match step {
            Ok(()) => {}
            Err(Stop::Closed) => return,
            Err(Stop::Failed(e)) => return record(errors, e),
        }
    }
}

impl Task {
    /// The operator's name, for stateful tasks.
    fn stateful_name(&self) -> Option<&str> {
        match self {
            Task::Chain(_) => None,
            Task::Window(w) => Some(w.name()),
            Task::Keyed(k) => Some(k.name()),
        }
    }

    /// Takes this subtask's part of checkpoint `id` (a consistent copy,
    /// before the next event), then writes it on a thread of its own while
    /// the stream moves on; that thread reports it. A failure fails the
    /// checkpoint, not the pipeline.
    fn snapshot(&mut self, id: CheckpointId, checkpoint: Option<&TaskCheckpoint>) {
        let Some(cp) = checkpoint else { return };
        let name = self.stateful_name().unwrap_or("chain").to_owned();
        let subtask = cp.subtask;
        let failed = move |e: &dyn std::fmt::Display| Ack::Failed {
            id,
            reason: format!("operator `{name}` subtask {subtask}: {e}"),
        };
        let write = match self.take_snapshot(&cp.store.path_of(id), cp.subtask) {
            Ok(write) => write,
            Err(e) => {
                let _ = cp.acks.send(failed(&e));
                return;
            }
        };
        let acks = cp.acks.clone();
        let writer = std::thread::Builder::new()
            .name(format!("weir-snapshot-{id}"))
            .spawn(move || {
                let ack = match write() {
                    Ok(()) => Ack::Task { id },
                    Err(e) => failed(&e),
                };
                let _ = acks.send(ack);
            });
        if let Err(e) = writer {
            let _ = cp.acks.send(Ack::Failed {
                id,
                reason: format!("cannot start a snapshot writer: {e}"),
            });
        }
    }

    fn take_snapshot(&mut self, root: &Path, subtask: usize) -> Result<Deferred, StateError> {
        let Some(name) = self.stateful_name() else {
            return Ok(crate::state::done());
        };
        let dir = root.join(subtask_dir(name, subtask));
        std::fs::create_dir_all(&dir)
            .map_err(|e| StateError(format!("cannot create {}: {e}", dir.display())))?;
        match self {
            Task::Chain(_) => Ok(crate::state::done()),
            Task::Window(w) => w.checkpoint(&dir),
            Task::Keyed(k) => k.checkpoint(&dir),
        }
    }

    fn on_batch(
        &mut self,
        batch: SourceBatch,
        keys: &Keys,
        out: &mut Downstream,
        late: &Results,
        results: &mut u64,
    ) -> Result<(), Stop> {
        match self {
            Task::Chain(operators) => {
                run_chain(operators, batch.bytes, 0, &batch.origin, batch.len, out)
            }
            Task::Window(window) => {
                let mut fired = Vec::new();
                let mut late_events = BatchWriter::new();
                let outcome = window.process(
                    &batch.bytes,
                    keys.as_event_keys(),
                    WindowOutput {
                        results: &mut fired,
                        late: &mut late_events,
                    },
                );
                late.send_late(late_events.finish()).map_err(Stop::Failed)?;
                let name = window.name().to_string();
                outcome.map_err(|e| Stop::Failed(describe_window_error(&name, e, &batch)))?;
                send_results(&name, fired, out, results)
            }
            Task::Keyed(keyed) => {
                let name = keyed.name().to_string();
                let output = keyed
                    .process(&batch.bytes)
                    .map_err(|e| Stop::Failed(describe_window_error(&name, e, &batch)))?;
                send_results(&name, vec![output], out, results)
            }
        }
    }

    /// Accumulators a sender's first phase folded (see `window/local.rs`).
    fn on_partials(
        &mut self,
        bytes: &[u8],
        input: usize,
        out: &mut Downstream,
        results: &mut u64,
    ) -> Result<(), Stop> {
        let Task::Window(window) = self else {
            return Err(Stop::Failed(RunError::Internal(
                "accumulators sent to a stage without a window".into(),
            )));
        };
        let name = window.name().to_string();
        let mut fired = Vec::new();
        window.merge_partials(bytes, &mut fired).map_err(|e| {
            Stop::Failed(timer_error(
                &name,
                e,
                &format!("the accumulators input #{input} folded"),
            ))
        })?;
        send_results(&name, fired, out, results)
    }

    fn on_tick(&mut self, out: &mut Downstream, results: &mut u64) -> Result<(), Stop> {
        let Task::Keyed(keyed) = self else {
            return Ok(());
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let name = keyed.name().to_string();
        let output = keyed
            .tick(now)
            .map_err(|e| Stop::Failed(timer_error(&name, e, "processing-time timers")))?;
        send_results(&name, vec![output], out, results)
    }

    fn on_watermark(
        &mut self,
        watermark: i64,
        out: &mut Downstream,
        late: &Results,
        results: &mut u64,
    ) -> Result<(), Stop> {
        if watermark == END_OF_TIME {
            late.signal_late(SinkMessage::End);
        }
        let at = || format!("the timers firing at watermark {watermark}");
        match self {
            Task::Window(window) => {
                let name = window.name().to_string();
                let fired = window
                    .advance(watermark)
                    .map_err(|e| Stop::Failed(timer_error(&name, e, &at())))?;
                send_results(&name, fired, out, results)?;
            }
            Task::Keyed(keyed) => {
                let name = keyed.name().to_string();
                let output = keyed
                    .advance(watermark)
                    .map_err(|e| Stop::Failed(timer_error(&name, e, &at())))?;
                send_results(&name, vec![output], out, results)?;
            }
            Task::Chain(_) => {}
        }
        out.broadcast(|| Message::Watermark(watermark))
    }
}

/// An error while firing windows or timers (no input event to name).
fn timer_error(name: &str, error: WindowError, what: &str) -> RunError {
    window_error(name, error, |index| match index {
        Some(i) => format!("item #{i} of {what}"),
        None => what.to_string(),
    })
}

/// A window or keyed operator's failure, its position named by `position`
/// from the failing item's index.
fn window_error(
    name: &str,
    error: WindowError,
    position: impl FnOnce(Option<usize>) -> String,
) -> RunError {
    match error {
        WindowError::Function(f) => RunError::Operator {
            operator: name.to_string(),
            kind: f.kind,
            position: position(f.event_index),
            message: f.message,
        },
        WindowError::State(e) => RunError::State {
            operator: name.to_string(),
            message: e.to_string(),
        },
        WindowError::Key {
            index,
            key_by,
            message,
        } => RunError::Key {
            position: position(Some(index)),
            key_by,
            message,
        },
    }
}

fn send_results(
    name: &str,
    fired: Vec<Vec<u8>>,
    out: &mut Downstream,
    results: &mut u64,
) -> Result<(), Stop> {
    for bytes in fired {
        let len = event_count(&bytes);
        if len == 0 {
            continue;
        }
        let batch = SourceBatch {
            bytes,
            len,
            max_timestamp: None,
            origin: Origin {
                source: format!("the results of `{name}`").into(),
                positions: Positions::Sequence(*results),
            },
        };
        *results += len as u64;
        out.send(batch)?;
    }
    Ok(())
}

fn describe_window_error(name: &str, error: WindowError, batch: &SourceBatch) -> RunError {
    window_error(name, error, |index| match index {
        Some(i) => batch.origin.describe(i),
        None => format!("the batch from {}", batch.origin.describe_span(batch.len)),
    })
}

/// Runs `bytes` through `operators[from..]` and on downstream. On a
/// failure, what the failing operator produced before the failing event
/// still goes through the rest of the chain and on.
fn run_chain(
    operators: &mut [Box<dyn Operator>],
    mut bytes: Vec<u8>,
    from: usize,
    origin: &Origin,
    source_len: usize,
    out: &mut Downstream,
) -> Result<(), Stop> {
    for index in from..operators.len() {
        let input_len = event_count(&bytes);
        match operators[index].process(&bytes) {
            Ok(output) => bytes = output,
            Err(failure) => {
                let error = describe(operators, index, &failure, origin, source_len, input_len);
                let _ = run_chain(
                    operators,
                    failure.output_before,
                    index + 1,
                    origin,
                    source_len,
                    out,
                );
                return Err(Stop::Failed(error));
            }
        }
    }
    let len = event_count(&bytes);
    if len == 0 {
        return Ok(());
    }
    // Results no longer line up with input positions: name the span.
    let origin = match operators.last() {
        Some(last) if from < operators.len() || from == 0 => Origin {
            source: format!(
                "the output of `{}` for {}",
                last.name(),
                origin.describe_span(source_len)
            )
            .into(),
            positions: Positions::Events(Vec::new()),
        },
        _ => origin.clone(),
    };
    out.send(SourceBatch {
        bytes,
        len,
        max_timestamp: None,
        origin,
    })
}

fn describe(
    operators: &[Box<dyn Operator>],
    index: usize,
    failure: &OperatorFailure,
    origin: &Origin,
    source_len: usize,
    input_len: usize,
) -> RunError {
    let position = match (index, failure.event_index) {
        (0, Some(event)) => origin.describe(event),
        (_, Some(event)) => format!(
            "event #{event} of the {input_len} that `{}` produced from {}",
            operators[index - 1].name(),
            origin.describe_span(source_len)
        ),
        (_, None) => format!("the batch from {}", origin.describe_span(source_len)),
    };
    RunError::Operator {
        operator: operators[index].name().to_string(),
        kind: failure.kind,
        position,
        message: failure.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::LineFormat;

    #[test]
    fn alignment_holds_back_until_every_live_input_has_the_barrier() {
        let mut a: Alignment<&str> = Alignment::new(3);
        assert!(!a.end(2), "no checkpoint in flight");
        assert!(!a.barrier(0, 7));
        assert_eq!(a.hold(0, "after barrier"), None, "held back");
        assert_eq!(a.hold(1, "before barrier"), Some("before barrier"));
        assert!(a.barrier(1, 7), "input 2 ended, so 0 and 1 align it");
        let (id, held) = a.release();
        assert_eq!((id, held.len()), (7, 1));
        // A barrier that follows an input's end is not counted twice.
        assert!(!a.barrier(2, 8));
        assert_eq!(a.hold(0, "free"), Some("free"));
    }
    use crate::sink::JsonLinesSink;
    use crate::source::{JsonLinesSource, LineInput};

    /// Upper-cases values; fails on a value equal to `fail_on`.
    struct Upper {
        fail_on: &'static [u8],
    }

    impl Operator for Upper {
        fn name(&self) -> &str {
            "upper"
        }
        fn process(&mut self, batch: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
            let batch = Batch::new(batch).unwrap();
            let mut out = BatchWriter::new();
            for (i, e) in batch.iter().enumerate() {
                if e.value == self.fail_on {
                    return Err(OperatorFailure {
                        kind: FailureKind::Reported,
                        message: "no".into(),
                        event_index: Some(i),
                        output_before: out.finish(),
                    });
                }
                out.push(e.timestamp, e.key, &e.value.to_ascii_uppercase(), &[]);
            }
            Ok(out.finish())
        }
    }

    /// A sink writing into a shared buffer.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn pipeline(
        input: &'static str,
        fail_on: &'static [u8],
        batch_size: usize,
    ) -> (Pipeline, Shared) {
        let out = Shared::default();
        let pipeline = Pipeline {
            settings: PipelineSettings {
                batch_size,
                queue_batches: 1,
                ..Default::default()
            },
            watermark: WatermarkSpec::default(),
            sources: vec![Box::new(JsonLinesSource::new(
                "in.jsonl".into(),
                LineInput::reader(input.as_bytes()),
                Default::default(),
                None,
            ))],
            stages: vec![Stage::chain(vec![Box::new(Upper { fail_on })])],
            sinks: vec![Box::new(JsonLinesSink::new(
                "out".into(),
                out.clone(),
                LineFormat::Value,
            ))],
            late: None,
            dead_letters: None,
            checkpointing: None,
        };
        (pipeline, out)
    }

    type Threads = Arc<Mutex<Vec<std::thread::ThreadId>>>;

    /// Passes batches through, noting the thread it runs on.
    struct Where(Threads);

    impl Operator for Where {
        fn name(&self) -> &str {
            "where"
        }
        fn process(&mut self, batch: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
            self.0.lock().unwrap().push(std::thread::current().id());
            Ok(batch.to_vec())
        }
    }

    /// Input read on the thread it notes.
    struct ReadWhere(&'static [u8], Threads);

    impl std::io::Read for ReadWhere {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.1.lock().unwrap().push(std::thread::current().id());
            self.0.read(buf)
        }
    }

    #[test]
    fn stages_of_one_input_run_on_its_thread_unless_chaining_is_off() {
        for chaining in [true, false] {
            let (mut p, out) = pipeline("\"a\"\n\"b\"\n\"c\"\n", b"", 2);
            let read_on = Threads::default();
            let ran_on = [Threads::default(), Threads::default()];
            p.settings.chaining = chaining;
            p.sources = vec![Box::new(JsonLinesSource::new(
                "in.jsonl".into(),
                LineInput::reader(ReadWhere(b"\"a\"\n\"b\"\n\"c\"\n", read_on.clone())),
                Default::default(),
                None,
            ))];
            // Source → where → where → upper → sink, each a stage.
            for threads in ran_on.iter().rev() {
                p.stages
                    .insert(0, Stage::chain(vec![Box::new(Where(threads.clone()))]));
            }
            p.run(&Arc::default()).unwrap();
            assert_eq!(text(&out), "\"A\"\n\"B\"\n\"C\"\n", "chaining {chaining}");
            let read_on = read_on.lock().unwrap();
            let [first, second] = ran_on.map(|t| t.lock().unwrap().clone());
            assert_eq!((first.len(), second.len()), (2, 2), "two batches each");
            let one_thread = first.iter().chain(&second).all(|t| *t == first[0]);
            assert_eq!(
                one_thread, chaining,
                "chaining {chaining}: both on one thread"
            );
            assert_eq!(
                read_on.contains(&first[0]),
                chaining,
                "chaining {chaining}: the stages ran on the source's thread"
            );
        }
    }

    /// Passes batches through, noting the key of each event.
    struct KeysSeen(Arc<Mutex<Vec<Option<Vec<u8>>>>>);

    impl Operator for KeysSeen {
        fn name(&self) -> &str {
            "keys-seen"
        }
        fn process(&mut self, batch: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
            let keys = Batch::new(batch)
                .unwrap()
                .iter()
                .map(|e| e.key.map(<[u8]>::to_vec));
            self.0.lock().unwrap().extend(keys);
            Ok(batch.to_vec())
        }
    }

    #[test]
    fn a_keyed_stateless_stage_gets_its_keys_written_in_and_is_not_chained() {
        let (mut p, out) = pipeline("{\"k\":\"x\"}\n{\"k\":\"y\"}\n", b"", 10);
        let seen = Arc::default();
        p.stages.insert(
            0,
            Stage {
                key_by: Some(KeySelector::parse("k")),
                subtasks: vec![Task::Chain(vec![Box::new(KeysSeen(Arc::clone(&seen)))])],
            },
        );
        p.run(&Arc::default()).unwrap();
        assert_eq!(text(&out), "{\"K\":\"X\"}\n{\"K\":\"Y\"}\n");
        let seen = seen.lock().unwrap();
        assert_eq!(*seen, [Some(b"x".to_vec()), Some(b"y".to_vec())]);
    }

    /// An aggregate whose results cannot be made: it fails when a window
    /// fires, on a watermark rather than on a batch.
    struct FailsToFire;

    impl crate::window::WindowFunction for FailsToFire {
        fn name(&self) -> &str {
            "fails"
        }
        fn kind(&self) -> crate::window::FunctionKind {
            crate::window::FunctionKind::Aggregate
        }
        fn add(&mut self, accs: &[u8], _: &[u8], _: &[u32]) -> Result<Vec<u8>, OperatorFailure> {
            let groups = weir_batch::window::Slots::new(accs).unwrap().len();
            let mut out = weir_batch::window::SlotsWriter::new();
            (0..groups).for_each(|_| out.push(Some(b"1")));
            Ok(out.finish())
        }
        fn merge(&mut self, left: &[u8], _: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
            Ok(left.to_vec())
        }
        fn fire(&mut self, _: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
            Err(OperatorFailure {
                kind: FailureKind::Reported,
                message: "no result".into(),
                event_index: None,
                output_before: Vec::new(),
            })
        }
    }

    #[test]
    fn a_window_failing_on_a_watermark_fails_the_run_chained_or_not() {
        for chaining in [true, false] {
            let (mut p, out) = pipeline("1\n2\n", b"", 10);
            p.settings.chaining = chaining;
            p.stages = vec![Stage {
                key_by: None,
                subtasks: vec![Task::Window(WindowOperator::new(
                    crate::window::WindowSpec::Tumbling { size_ms: 10 },
                    0,
                    128,
                    Box::new(FailsToFire),
                    Box::new(crate::state::MemoryStore::default()),
                ))],
            }];
            let err = p.run(&Arc::default()).unwrap_err().to_string();
            assert!(
                err.starts_with("operator `fails` reported an error on the timers firing")
                    && err.ends_with("no result"),
                "chaining {chaining}: {err}"
            );
            assert_eq!(text(&out), "");
        }
    }

    fn text(out: &Shared) -> String {
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn every_event_flows_through_in_order() {
        let input = "\"a\"\n\"b\"\n\"c\"\n\"d\"\n\"e\"\n";
        let (p, out) = pipeline(input, b"", 2);
        let summary = p.run(&Arc::default()).unwrap();
        assert_eq!(text(&out), "\"A\"\n\"B\"\n\"C\"\n\"D\"\n\"E\"\n");
        assert_eq!((summary.events_in, summary.events_out), (5, 5));
        assert_eq!(summary.sinks[0].events, 5);
    }

    #[test]
    fn an_operator_failure_names_the_line_and_keeps_what_came_before() {
        let input = "\"a\"\n\"b\"\n\"c\"\n\"boom\"\n\"e\"\n";
        // On the source's thread (chained) and on a thread of its own.
        for chaining in [true, false] {
            let (mut p, out) = pipeline(input, b"\"boom\"", 3);
            p.settings.chaining = chaining;
            let err = p.run(&Arc::default()).unwrap_err();
            assert_eq!(
                err.to_string(),
                "operator `upper` reported an error on in.jsonl:4: no"
            );
            assert_eq!(text(&out), "\"A\"\n\"B\"\n\"C\"\n");
        }
    }

    #[test]
    fn a_malformed_line_fails_after_everything_before_it_is_written() {
        let input = "\"a\"\n\"b\"\n{oops\n\"d\"\n";
        let (p, out) = pipeline(input, b"", 10);
        let err = p.run(&Arc::default()).unwrap_err();
        assert!(
            err.to_string().starts_with("in.jsonl:3: malformed JSON"),
            "{err}"
        );
        assert_eq!(text(&out), "\"A\"\n\"B\"\n");
    }

    #[test]
    fn a_pipeline_without_operators_copies_sources_to_sinks() {
        let (mut p, out) = pipeline("1\n2\n", b"", 10);
        p.stages.clear();
        p.run(&Arc::default()).unwrap();
        assert_eq!(text(&out), "1\n2\n");
    }
}
