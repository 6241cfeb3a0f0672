//! Sinks: where results go.
//!
//! With checkpoints, a sink is told at each barrier to seal what it has
//! written ([`Sink::pre_commit`]); the coordinator makes that visible once
//! the checkpoint is complete ([`Committer`]). The [`files`] sink does this
//! with hidden part files renamed on commit (exactly-once); the others
//! flush and are at-least-once after a restore.

mod files;

pub use files::{FilesSink, PartCommitter, read_visible};

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde_json::value::RawValue;
use weir_batch::{Batch, EventRef};

use crate::pipeline::{LineFormat, SinkSpec};

/// A sink that cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing failed.
    #[error("sink {sink}: {source}")]
    Io {
        /// The sink.
        sink: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An event cannot be written in the sink's format.
    #[error("sink {sink}: output event #{event}: {reason}")]
    Unwritable {
        /// The sink.
        sink: String,
        /// Index of the event among all the sink has received.
        event: u64,
        /// Why.
        reason: String,
    },
}

/// What a sink did, reported when it finishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkSummary {
    /// Events written (or counted).
    pub events: u64,
    /// Value bytes written (or counted).
    pub bytes: u64,
}

/// Something that takes results.
pub trait Sink: Send {
    /// Writes one batch. Each line is written whole or not at all.
    ///
    /// # Errors
    /// See [`SinkError`].
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError>;

    /// Flushes everything written: the input has ended.
    ///
    /// # Errors
    /// The final flush failed.
    fn finish(&mut self) -> Result<SinkSummary, SinkError>;

    /// Stops before the end of the input (an error elsewhere, or a
    /// savepoint). A transactional sink leaves what no checkpoint covers
    /// uncommitted; others flush as [`Sink::finish`] does.
    ///
    /// # Errors
    /// The flush failed.
    fn stop(&mut self) -> Result<SinkSummary, SinkError> {
        self.finish()
    }

    /// At a checkpoint barrier: makes everything written so far durable
    /// but not yet visible, and returns what the checkpoint records so
    /// that [`Committer::commit`] (after the checkpoint completes, or on
    /// restore) makes exactly that visible.
    ///
    /// # Errors
    /// Flushing or syncing failed: the checkpoint fails.
    fn pre_commit(&mut self) -> Result<serde_json::Value, SinkError>;

    /// Who makes sealed output visible, for transactional sinks.
    fn committer(&self) -> Option<std::sync::Arc<dyn Committer>> {
        None
    }
}

/// Makes the output a checkpoint covers visible (the second phase of the
/// sink's two-phase commit). Idempotent: restoring a checkpoint commits it
/// again.
pub trait Committer: Send + Sync {
    /// Commits what `state` (from [`Sink::pre_commit`]) names.
    ///
    /// # Errors
    /// A sealed file is missing or cannot be renamed.
    fn commit(&self, state: &serde_json::Value) -> Result<(), SinkError>;
}

/// How a sink starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkStart<'a> {
    /// The pipeline takes checkpoints: transactional sinks commit only
    /// what a checkpoint covers.
    pub checkpointed: bool,
    /// The sink's state in the checkpoint being restored.
    pub restored: Option<&'a serde_json::Value>,
}

/// Opens the sink `spec` describes; relative paths are resolved against
/// `base`.
///
/// # Errors
/// A file that cannot be created, named with its path.
pub fn open(
    spec: &SinkSpec,
    base: &Path,
    start: SinkStart<'_>,
) -> Result<Box<dyn Sink>, SinkError> {
    Ok(match spec {
        SinkSpec::Jsonl { path, format } => {
            let path = base.join(path);
            let name = path.display().to_string();
            // Restored: what the file holds stays (at-least-once).
            let file = if start.restored.is_some() {
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&path)
            } else {
                std::fs::File::create(&path)
            };
            let file = file.map_err(|source| SinkError::Io {
                sink: name.clone(),
                source,
            })?;
            Box::new(JsonLinesSink::new(name, file, *format))
        }
        SinkSpec::Files { path, format } => Box::new(FilesSink::open(
            base.join(path),
            *format,
            start.checkpointed,
            start.restored,
        )?),
        SinkSpec::Stdout { format } => Box::new(
            JsonLinesSink::new("stdout".to_string(), std::io::stdout(), *format).flushing(),
        ),
        SinkSpec::Stderr { format } => Box::new(
            JsonLinesSink::new("stderr".to_string(), std::io::stderr(), *format).flushing(),
        ),
        SinkSpec::Blackhole => Box::new(Blackhole::default()),
    })
}

/// Writes one JSON line per event.
pub struct JsonLinesSink<W: Write> {
    name: String,
    out: std::io::BufWriter<W>,
    format: LineFormat,
    summary: SinkSummary,
    line: Vec<u8>,
    flush_each_batch: bool,
}

impl<W: Write + Send> JsonLinesSink<W> {
    /// Flushes after every batch, so a terminal or a pipe sees results as
    /// they happen (stdout, stderr) rather than at the end.
    pub fn flushing(mut self) -> Self {
        self.flush_each_batch = true;
        self
    }

    /// A sink named `name` (used in errors) writing to `out`.
    pub fn new(name: String, out: W, format: LineFormat) -> Self {
        JsonLinesSink {
            name,
            out: std::io::BufWriter::with_capacity(1 << 16, out),
            format,
            summary: SinkSummary::default(),
            line: Vec::with_capacity(1024),
            flush_each_batch: false,
        }
    }

    /// The writer, flushed.
    ///
    /// # Errors
    /// The flush failed.
    pub fn into_inner(self) -> Result<W, SinkError> {
        let name = self.name;
        self.out.into_inner().map_err(|e| SinkError::Io {
            sink: name,
            source: e.into_error(),
        })
    }

    /// Events and bytes written.
    pub fn summary(&self) -> SinkSummary {
        self.summary
    }

    fn encode(&mut self, event: &EventRef<'_>) -> Result<(), String> {
        self.line.clear();
        match self.format {
            LineFormat::Value => {
                std::str::from_utf8(event.value).map_err(|_| {
                    "value is not UTF-8 text; use format = \"envelope\"".to_string()
                })?;
                if event.value.contains(&b'\n') {
                    return Err("value spans several lines; use format = \"envelope\"".into());
                }
                self.line.extend_from_slice(event.value);
            }
            LineFormat::Envelope => {
                serde_json::to_writer(&mut self.line, &Envelope::of(event))
                    .map_err(|e| e.to_string())?;
            }
        }
        self.line.push(b'\n');
        Ok(())
    }
}

impl<W: Write + Send> Sink for JsonLinesSink<W> {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
        for event in batch.iter() {
            self.encode(&event)
                .map_err(|reason| SinkError::Unwritable {
                    sink: self.name.clone(),
                    event: self.summary.events,
                    reason,
                })?;
            self.out
                .write_all(&self.line)
                .map_err(|source| SinkError::Io {
                    sink: self.name.clone(),
                    source,
                })?;
            self.summary.events += 1;
            self.summary.bytes += event.value.len() as u64;
        }
        if self.flush_each_batch {
            self.out.flush().map_err(|source| SinkError::Io {
                sink: self.name.clone(),
                source,
            })?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkSummary, SinkError> {
        self.out.flush().map_err(|source| SinkError::Io {
            sink: self.name.clone(),
            source,
        })?;
        Ok(self.summary)
    }

    fn pre_commit(&mut self) -> Result<serde_json::Value, SinkError> {
        self.finish()?;
        Ok(serde_json::Value::Null)
    }
}

/// The `envelope` line format: every part of the event. The value is
/// embedded as JSON when it is JSON, else as a string.
#[derive(Serialize)]
struct Envelope<'a> {
    key: Option<std::borrow::Cow<'a, str>>,
    timestamp: i64,
    headers: Vec<(std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>,
    value: EnvelopeValue<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EnvelopeValue<'a> {
    Json(&'a RawValue),
    Text(std::borrow::Cow<'a, str>),
}

impl<'a> Envelope<'a> {
    fn of(event: &EventRef<'a>) -> Self {
        let value = match std::str::from_utf8(event.value) {
            Ok(text) => match serde_json::from_str::<&RawValue>(text) {
                Ok(raw) => EnvelopeValue::Json(raw),
                Err(_) => EnvelopeValue::Text(text.into()),
            },
            _ => EnvelopeValue::Text(String::from_utf8_lossy(event.value)),
        };
        Envelope {
            key: event.key.map(String::from_utf8_lossy),
            timestamp: event.timestamp,
            headers: event
                .headers()
                .map(|(n, v)| (String::from_utf8_lossy(n), String::from_utf8_lossy(v)))
                .collect(),
            value,
        }
    }
}

/// Counts events and bytes and writes nothing.
#[derive(Debug, Default)]
pub struct Blackhole {
    summary: SinkSummary,
}

impl Sink for Blackhole {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
        for event in batch.iter() {
            self.summary.events += 1;
            self.summary.bytes += event.value.len() as u64;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkSummary, SinkError> {
        Ok(self.summary)
    }

    fn pre_commit(&mut self) -> Result<serde_json::Value, SinkError> {
        Ok(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_batch::BatchWriter;

    fn written(format: LineFormat, events: &[(Option<&[u8]>, &[u8])]) -> Result<String, SinkError> {
        let mut w = BatchWriter::new();
        for (key, value) in events {
            w.push(5, *key, value, &[(b"h", b"v")]);
        }
        let bytes = w.finish();
        let mut out = Vec::new();
        {
            let mut sink = JsonLinesSink::new("t".into(), &mut out, format);
            sink.write(&Batch::new(&bytes).unwrap())?;
            sink.finish()?;
        }
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn value_lines_are_the_values() {
        let out = written(LineFormat::Value, &[(None, b"{\"a\":1}"), (None, b"2")]).unwrap();
        assert_eq!(out, "{\"a\":1}\n2\n");
    }

    #[test]
    fn a_multi_line_value_is_refused_and_nothing_partial_is_written() {
        let err = written(LineFormat::Value, &[(None, b"ok"), (None, b"a\nb")]).unwrap_err();
        assert!(err.to_string().contains("output event #1"), "{err}");
    }

    #[test]
    fn envelopes_carry_everything() {
        let out = written(
            LineFormat::Envelope,
            &[(Some(b"k"), b"{\"a\":1}"), (None, b"not json")],
        )
        .unwrap();
        assert_eq!(
            out,
            "{\"key\":\"k\",\"timestamp\":5,\"headers\":[[\"h\",\"v\"]],\"value\":{\"a\":1}}\n\
             {\"key\":null,\"timestamp\":5,\"headers\":[[\"h\",\"v\"]],\"value\":\"not json\"}\n"
        );
    }
}
