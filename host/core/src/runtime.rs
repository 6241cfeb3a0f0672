//! The embedded runtime: sources, the operator chain and sinks on threads
//! joined by bounded channels.
//!
//! ```text
//! source thread(s) ──batch──▶ chain thread (operators, in order) ──batch──▶ sink thread(s)
//! ```
//!
//! Each channel holds at most `queue_batches` batches, so a slow sink slows
//! the operators and then the sources (backpressure) instead of growing
//! memory. Every sink gets every output batch. The run ends when every
//! source has ended and everything in flight has reached the sinks, or at
//! the first error; after an error everything accepted before it still
//! reaches the sinks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use weir_batch::Batch;

use crate::dead_letter::DeadLetters;
use crate::operator::{FailureKind, Operator, OperatorFailure};
use crate::pipeline::PipelineSettings;
use crate::sink::{Sink, SinkError, SinkSummary};
use crate::source::{Origin, Source, SourceBatch, SourceError};

/// A pipeline ready to run.
pub struct Pipeline {
    /// Batch size, linger, queue depth.
    pub settings: PipelineSettings,
    /// Merged inputs.
    pub sources: Vec<Box<dyn Source>>,
    /// The chain, in order.
    pub operators: Vec<Box<dyn Operator>>,
    /// Every sink gets every result.
    pub sinks: Vec<Box<dyn Sink>>,
    /// Where malformed input goes, if anywhere.
    pub dead_letters: Option<DeadLetters>,
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
    /// Events the operator chain produced.
    pub events_out: u64,
    /// Per sink, in pipeline-file order.
    pub sinks: Vec<SinkSummary>,
    /// Wall time of the run.
    pub elapsed: Duration,
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
    /// A sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The dead-letter sink failed.
    #[error("dead-letter sink: {0}")]
    DeadLetter(String),
    /// A pipeline thread panicked (a bug in Weir).
    #[error("internal error: the {0} thread panicked")]
    Panicked(&'static str),
}

type Errors = Arc<Mutex<Vec<RunError>>>;

fn record(errors: &Errors, error: RunError) {
    errors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(error);
}

impl Pipeline {
    /// Runs to the end of bounded input, or to the first error.
    ///
    /// # Errors
    /// The first [`RunError`]; everything accepted before it has been written.
    pub fn run(self, progress: &Arc<Progress>) -> Result<RunSummary, RunError> {
        let started = Instant::now();
        let errors: Errors = Arc::default();
        let queue = self.settings.queue_batches;
        let batch_size = self.settings.batch_size;

        let (source_tx, source_rx) = sync_channel::<SourceBatch>(queue);
        let source_threads: Vec<_> = self
            .sources
            .into_iter()
            .map(|source| {
                let tx = source_tx.clone();
                let errors = errors.clone();
                let progress = progress.clone();
                std::thread::spawn(move || run_source(source, batch_size, &tx, &progress, &errors))
            })
            .collect();
        drop(source_tx);

        let mut sink_txs = Vec::new();
        let sink_threads: Vec<_> = self
            .sinks
            .into_iter()
            .map(|sink| {
                let (tx, rx) = sync_channel::<Arc<Vec<u8>>>(queue);
                sink_txs.push(tx);
                let errors = errors.clone();
                std::thread::spawn(move || run_sink(sink, &rx, &errors))
            })
            .collect();

        let mut chain = Chain {
            operators: self.operators,
            sinks: sink_txs,
            progress: progress.clone(),
        };
        let events_out = chain.run(&source_rx, &errors);
        drop(chain);
        drop(source_rx);

        for thread in source_threads {
            if thread.join().is_err() {
                record(&errors, RunError::Panicked("source"));
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
            events_out,
            sinks,
            elapsed: started.elapsed(),
        })
    }
}

fn run_source(
    mut source: Box<dyn Source>,
    batch_size: usize,
    tx: &SyncSender<SourceBatch>,
    progress: &Progress,
    errors: &Errors,
) {
    loop {
        match source.next_batch(batch_size) {
            Ok(Some(batch)) => {
                let len = batch.len as u64;
                if tx.send(batch).is_err() {
                    return; // the chain stopped: an error is already recorded
                }
                progress.events_in.fetch_add(len, Ordering::Relaxed);
            }
            Ok(None) => return,
            Err(e) => return record(errors, e.into()),
        }
    }
}

fn run_sink(
    mut sink: Box<dyn Sink>,
    rx: &Receiver<Arc<Vec<u8>>>,
    errors: &Errors,
) -> Option<SinkSummary> {
    for bytes in rx {
        let written = match Batch::new(&bytes) {
            Ok(batch) => sink.write(&batch),
            Err(e) => {
                record(errors, RunError::DeadLetter(format!("internal: {e}")));
                return None;
            }
        };
        if let Err(e) = written {
            // Flush what was written whole before the failure.
            let _ = sink.finish();
            record(errors, e.into());
            return None;
        }
    }
    match sink.finish() {
        Ok(summary) => Some(summary),
        Err(e) => {
            record(errors, e.into());
            None
        }
    }
}

struct Chain {
    operators: Vec<Box<dyn Operator>>,
    sinks: Vec<SyncSender<Arc<Vec<u8>>>>,
    progress: Arc<Progress>,
}

impl Chain {
    /// Drives every batch through the operators; returns events produced.
    fn run(&mut self, rx: &Receiver<SourceBatch>, errors: &Errors) -> u64 {
        let mut produced = 0;
        for batch in rx {
            match self.process(batch.bytes, 0, &batch.origin, batch.len) {
                Ok(n) => produced += n,
                Err((n, error)) => {
                    record(errors, error);
                    return produced + n;
                }
            }
        }
        produced
    }

    /// Runs `bytes` through operators `from..` and on to the sinks. On a
    /// failure, what the failing operator produced before the failing event
    /// still goes through the rest of the chain to the sinks.
    fn process(
        &mut self,
        mut bytes: Vec<u8>,
        from: usize,
        origin: &Origin,
        source_len: usize,
    ) -> Result<u64, (u64, RunError)> {
        for index in from..self.operators.len() {
            let input_len = batch_len(&bytes);
            let operator = &mut self.operators[index];
            match operator.process(&bytes) {
                Ok(out) => bytes = out,
                Err(failure) => {
                    let error = self.describe(index, &failure, origin, source_len, input_len);
                    let sent = self
                        .process(failure.output_before, index + 1, origin, source_len)
                        .unwrap_or_else(|(n, _)| n);
                    return Err((sent, error));
                }
            }
        }
        let n = batch_len(&bytes) as u64;
        if n > 0 {
            let shared = Arc::new(bytes);
            for sink in &self.sinks {
                // A closed sink has recorded its own error.
                let _ = sink.send(shared.clone());
            }
            self.progress.events_out.fetch_add(n, Ordering::Relaxed);
        }
        Ok(n)
    }

    fn describe(
        &self,
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
                self.operators[index - 1].name(),
                origin.describe_span(source_len)
            ),
            (_, None) => format!("the batch from {}", origin.describe_span(source_len)),
        };
        RunError::Operator {
            operator: self.operators[index].name().to_string(),
            kind: failure.kind,
            position,
            message: failure.message.clone(),
        }
    }
}

fn batch_len(bytes: &[u8]) -> usize {
    bytes
        .get(..4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::LineFormat;
    use crate::sink::JsonLinesSink;
    use crate::source::{JsonLinesSource, LineInput};
    use weir_batch::BatchWriter;

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
            sources: vec![Box::new(JsonLinesSource::new(
                "in.jsonl".into(),
                LineInput::reader(input.as_bytes()),
                Default::default(),
                None,
            ))],
            operators: vec![Box::new(Upper { fail_on })],
            sinks: vec![Box::new(JsonLinesSink::new(
                "out".into(),
                out.clone(),
                LineFormat::Value,
            ))],
            dead_letters: None,
        };
        (pipeline, out)
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
        let (p, out) = pipeline(input, b"\"boom\"", 3);
        let err = p.run(&Arc::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "operator `upper` reported an error on in.jsonl:4: no"
        );
        assert_eq!(text(&out), "\"A\"\n\"B\"\n\"C\"\n");
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
}
