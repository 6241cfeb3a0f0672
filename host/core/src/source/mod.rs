//! Sources: where events come from, cut into batches in the wire format.
//!
//! Every batch carries its [`Origin`], so an error anywhere downstream can
//! name the input position of the event (`clicks.jsonl:42`,
//! `bids event #1234`).

mod generator;
mod jsonl;
mod linger;

pub use generator::{BidGenerator, ClickGenerator, ClickSpec, NexmarkSource, SequenceGenerator};
pub use jsonl::{JsonLinesSource, LineInput};
pub use linger::Linger;

use std::path::Path;
use std::sync::Arc;

use crate::dead_letter::DeadLetters;
use crate::pipeline::SourceSpec;

/// How often a source waiting for input reports that it is still there
/// (an empty batch), so the runtime can mark it idle.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(100);

/// A batch of events as a source produced it.
#[derive(Debug, Clone)]
pub struct SourceBatch {
    /// The events, in the wire format of `weir_batch`.
    pub bytes: Vec<u8>,
    /// Number of events.
    pub len: usize,
    /// The largest event timestamp in the batch, when the source kept
    /// track as it wrote them (the runtime otherwise reads them again).
    pub max_timestamp: Option<i64>,
    /// Where each event came from.
    pub origin: Origin,
}

impl SourceBatch {
    /// An empty batch: the source is alive but has nothing (see
    /// [`HEARTBEAT`]).
    pub fn heartbeat(source: Arc<str>) -> Self {
        SourceBatch {
            bytes: 0u32.to_le_bytes().to_vec(),
            len: 0,
            max_timestamp: None,
            origin: Origin {
                source,
                positions: Positions::Events(Vec::new()),
            },
        }
    }
}

/// Where the events of a batch came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The source, as a person names it: a path, `stdin`, `bids`.
    pub source: Arc<str>,
    /// Position of each event in its source.
    pub positions: Positions,
}

/// Positions of a batch's events in their source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Positions {
    /// 1-based line numbers, one per event.
    Lines(Vec<u64>),
    /// Consecutive sequence numbers starting here (generators).
    Sequence(u64),
    /// 0-based event numbers, one per event (a generator's events after
    /// partitioning by key, or an operator's results).
    Events(Vec<u64>),
}

impl Positions {
    /// The position of event `index` as a number (line or event number).
    pub fn get(&self, index: usize) -> u64 {
        match self {
            Positions::Lines(v) | Positions::Events(v) => v.get(index).copied().unwrap_or(0),
            Positions::Sequence(first) => first + index as u64,
        }
    }

    /// Positions of the same kind, for a subset of about `events` events
    /// (filled by [`Positions::push_from`]).
    pub fn empty_like(&self, events: usize) -> Positions {
        match self {
            Positions::Lines(_) => Positions::Lines(Vec::with_capacity(events)),
            Positions::Sequence(_) | Positions::Events(_) => {
                Positions::Events(Vec::with_capacity(events))
            }
        }
    }

    /// Appends the position of event `index` of `from`.
    pub fn push_from(&mut self, from: &Positions, index: usize) {
        if let Positions::Lines(v) | Positions::Events(v) = self {
            v.push(from.get(index));
        }
    }
}

impl Origin {
    /// Names the position of event `index` of the batch.
    pub fn describe(&self, index: usize) -> String {
        match &self.positions {
            Positions::Lines(lines) => match lines.get(index) {
                Some(line) => format!("{}:{line}", self.source),
                None => format!("{} (event #{index} of a batch)", self.source),
            },
            Positions::Sequence(first) => {
                format!("{} event #{}", self.source, first + index as u64)
            }
            Positions::Events(events) => match events.get(index) {
                Some(n) => format!("{} event #{n}", self.source),
                None => format!("{} (event #{index} of a batch)", self.source),
            },
        }
    }

    /// Names the span a batch of `len` events covers.
    pub fn describe_span(&self, len: usize) -> String {
        match &self.positions {
            Positions::Lines(lines) => match (lines.first(), lines.last()) {
                (Some(a), Some(b)) => format!("{}:{a}-{b}", self.source),
                _ => self.source.to_string(),
            },
            Positions::Sequence(first) => format!(
                "{} events #{first}-#{}",
                self.source,
                first + len.saturating_sub(1) as u64
            ),
            Positions::Events(events) => match (events.first(), events.last()) {
                (Some(a), Some(b)) => format!("{} events #{a}-#{b}", self.source),
                _ => self.source.to_string(),
            },
        }
    }
}

/// A source that cannot go on.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    /// A line is not valid input and there is no dead-letter sink.
    #[error("{source_name}:{line}: {reason}")]
    Malformed {
        /// The source (a path or `stdin`).
        source_name: String,
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading failed.
    #[error("{source_name}: {reason}")]
    Io {
        /// The source.
        source_name: String,
        /// The I/O error.
        reason: String,
    },
    /// The dead-letter sink failed.
    #[error("dead-letter sink: {0}")]
    DeadLetter(String),
    /// The source cannot resume where a checkpoint left it.
    #[error("{source_name}: cannot resume from the checkpoint: {reason}")]
    Resume {
        /// The source.
        source_name: String,
        /// Why.
        reason: String,
    },
}

/// Where a source is: enough to resume it after a restore, recorded in
/// every checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourcePosition {
    /// A file: the byte offset of the next line, and how many lines came
    /// before it (for line numbers in errors).
    File {
        /// Bytes read.
        offset: u64,
        /// Lines read.
        line: u64,
    },
    /// A generator: how many events it has produced, and its random state.
    Generated {
        /// Events produced.
        events: u64,
        /// The random generator's state.
        rng: u64,
    },
}

/// Something that produces batches of events.
pub trait Source: Send {
    /// The source as a person names it.
    fn name(&self) -> &str;

    /// The next batch of at most `max_events` events, or `None` at the end of
    /// bounded input.
    ///
    /// # Errors
    /// Input the source cannot accept. A source first returns every event it
    /// accepted before the bad input, then the error, so nothing accepted is
    /// lost.
    fn next_batch(&mut self, max_events: usize) -> Result<Option<SourceBatch>, SourceError>;

    /// Where the source is: after the last event of the last batch it
    /// returned. `None` when it cannot be resumed (stdin), which makes a
    /// pipeline reading it unable to checkpoint.
    fn position(&self) -> Option<SourcePosition> {
        None
    }

    /// Resumes at a position [`Source::position`] returned, so the next
    /// batch starts with the event after it.
    ///
    /// # Errors
    /// The source cannot be rewound, or the position does not fit it.
    fn seek(&mut self, position: &SourcePosition) -> Result<(), SourceError> {
        Err(SourceError::Resume {
            source_name: self.name().to_string(),
            reason: format!("this source cannot be rewound to {position:?}"),
        })
    }
}

/// Opens the source `spec` describes; relative paths are resolved against
/// `base` (the pipeline file's directory).
///
/// # Errors
/// A file that cannot be opened, named with its path.
pub fn open(
    spec: &SourceSpec,
    base: &Path,
    linger: Linger,
    dead_letters: Option<DeadLetters>,
) -> Result<Box<dyn Source>, SourceError> {
    Ok(match spec {
        SourceSpec::Jsonl { path, fields } => Box::new(JsonLinesSource::file(
            base.join(path),
            fields.clone(),
            dead_letters,
        )?),
        SourceSpec::Stdin { fields } => Box::new(JsonLinesSource::new(
            "stdin".to_string(),
            LineInput::stdin(linger),
            fields.clone(),
            dead_letters,
        )),
        SourceSpec::Bids {
            count,
            seed,
            partition,
            partitions,
        } => Box::new(BidGenerator::partition(
            *seed,
            *count,
            *partition,
            *partitions,
        )),
        SourceSpec::Clicks {
            count,
            seed,
            base_time_ms,
            interval_ms,
            disorder_ms,
            users,
        } => Box::new(ClickGenerator::new(ClickSpec {
            count: *count,
            seed: *seed,
            base_time_ms: i64::try_from(*base_time_ms).unwrap_or(i64::MAX),
            interval_ms: *interval_ms,
            disorder_ms: *disorder_ms,
            users: *users,
        })),
        SourceSpec::Nexmark {
            count,
            base_time_ms,
            bids_only,
        } => Box::new(NexmarkSource::new(*count, *base_time_ms, *bids_only)),
        SourceSpec::Sequence {
            count,
            keys,
            base_time_ms,
            interval_ms,
        } => Box::new(SequenceGenerator::new(
            *count,
            *keys,
            i64::try_from(*base_time_ms).unwrap_or(i64::MAX),
            *interval_ms,
        )),
    })
}
