//! JSON Lines input: a file or standard input, one JSON value per line.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::Instant;

use serde::de::IgnoredAny;
use weir_batch::BatchWriter;

use super::{Linger, Origin, Positions, Source, SourceBatch, SourceError, SourcePosition};
use crate::dead_letter::DeadLetters;
use crate::pipeline::JsonFields;
use crate::time::{TimeFormat, parse_rfc3339};

/// Where lines come from.
pub enum LineInput {
    /// A reader that never makes the batch wait (a file): batches fill up.
    Reader(Box<dyn BufRead + Send>),
    /// Lines from a reader thread (stdin): a partly filled batch is sent once
    /// its linger time is up, so a trickle of input still flows.
    Channel {
        /// Lines as the reader thread read them.
        lines: Receiver<std::io::Result<Vec<u8>>>,
        /// The linger rule.
        linger: Linger,
    },
}

impl LineInput {
    /// Lines of a file (or any reader).
    pub fn reader(read: impl Read + Send + 'static) -> Self {
        LineInput::Reader(Box::new(BufReader::with_capacity(1 << 16, read)))
    }

    /// Lines of standard input, read on a thread of their own.
    pub fn stdin(linger: Linger) -> Self {
        Self::channel(std::io::stdin(), linger)
    }

    /// Lines of `read`, read on a thread of their own.
    pub fn channel(read: impl Read + Send + 'static, linger: Linger) -> Self {
        let (tx, rx) = sync_channel(4096);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(read);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) => break,
                    Ok(_) => {
                        if tx.send(Ok(line)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
        });
        LineInput::Channel { lines: rx, linger }
    }
}

enum Next {
    Line,
    Wait,
    Idle,
    End,
}

/// A JSON Lines source. Each non-blank line becomes one event whose value is
/// the line; the key and event time come from the configured fields.
pub struct JsonLinesSource {
    name: Arc<str>,
    input: LineInput,
    fields: JsonFields,
    dead_letters: Option<DeadLetters>,
    line: Vec<u8>,
    line_no: u64,
    /// Bytes of input read so far: where the next line starts.
    offset: u64,
    /// The file, when the input is one (a file can be resumed at an offset).
    file: Option<std::path::PathBuf>,
    writer: BatchWriter,
    pending_error: Option<SourceError>,
    done: bool,
}

impl JsonLinesSource {
    /// A source named `name` (used in errors) reading `input`.
    pub fn new(
        name: String,
        input: LineInput,
        fields: JsonFields,
        dead_letters: Option<DeadLetters>,
    ) -> Self {
        JsonLinesSource {
            name: name.into(),
            input,
            fields,
            dead_letters,
            line: Vec::new(),
            line_no: 0,
            offset: 0,
            file: None,
            writer: BatchWriter::with_capacity(1 << 16),
            pending_error: None,
            done: false,
        }
    }

    /// A source reading the file at `path`, which can be resumed after a
    /// restore (see [`Source::seek`]).
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn file(
        path: std::path::PathBuf,
        fields: JsonFields,
        dead_letters: Option<DeadLetters>,
    ) -> Result<Self, SourceError> {
        let name = path.display().to_string();
        let file = std::fs::File::open(&path).map_err(|e| SourceError::Io {
            source_name: name.clone(),
            reason: format!("cannot open: {e}"),
        })?;
        let mut source = Self::new(name, LineInput::reader(file), fields, dead_letters);
        source.file = Some(path);
        Ok(source)
    }

    fn read_line(&mut self, batch_started: Option<Instant>) -> Result<Next, SourceError> {
        self.line.clear();
        let io_error = |e: std::io::Error| SourceError::Io {
            source_name: self.name.to_string(),
            reason: e.to_string(),
        };
        match &mut self.input {
            LineInput::Reader(reader) => match reader.read_until(b'\n', &mut self.line) {
                Ok(0) => Ok(Next::End),
                Ok(n) => {
                    self.offset += n as u64;
                    Ok(Next::Line)
                }
                Err(e) => Err(io_error(e)),
            },
            LineInput::Channel { lines, linger } => {
                let received = match batch_started {
                    // Nothing waiting: wake up now and then so the runtime
                    // can tell an idle input from a slow one.
                    None => match lines.recv_timeout(super::HEARTBEAT) {
                        Err(RecvTimeoutError::Timeout) => return Ok(Next::Idle),
                        other => other,
                    },
                    Some(first) => match linger.remaining(first, Instant::now()) {
                        Some(wait) => lines.recv_timeout(wait),
                        None => return Ok(Next::Wait),
                    },
                };
                match received {
                    Ok(Ok(line)) => {
                        self.line = line;
                        Ok(Next::Line)
                    }
                    Ok(Err(e)) => Err(io_error(e)),
                    Err(RecvTimeoutError::Timeout) => Ok(Next::Wait),
                    Err(RecvTimeoutError::Disconnected) => Ok(Next::End),
                }
            }
        }
    }
}

impl Source for JsonLinesSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn position(&self) -> Option<SourcePosition> {
        self.file.as_ref().map(|_| SourcePosition::File {
            offset: self.offset,
            line: self.line_no,
        })
    }

    fn seek(&mut self, position: &SourcePosition) -> Result<(), SourceError> {
        use std::io::{Seek, SeekFrom};
        let resume_error = |reason: String| SourceError::Resume {
            source_name: self.name.to_string(),
            reason,
        };
        let (Some(path), SourcePosition::File { offset, line }) = (&self.file, position) else {
            return Err(resume_error(format!(
                "cannot resume at {position:?}: only a file source can be rewound (stdin cannot)"
            )));
        };
        let mut file =
            std::fs::File::open(path).map_err(|e| resume_error(format!("cannot open: {e}")))?;
        let length = file
            .metadata()
            .map_err(|e| resume_error(e.to_string()))?
            .len();
        if *offset > length {
            return Err(resume_error(format!(
                "the checkpoint resumes at byte {offset}, but the file has only {length} bytes (was it replaced?)"
            )));
        }
        file.seek(SeekFrom::Start(*offset))
            .map_err(|e| resume_error(e.to_string()))?;
        self.input = LineInput::reader(file);
        self.offset = *offset;
        self.line_no = *line;
        self.done = false;
        self.pending_error = None;
        Ok(())
    }

    fn next_batch(&mut self, max_events: usize) -> Result<Option<SourceBatch>, SourceError> {
        if let Some(error) = self.pending_error.take() {
            self.done = true;
            return Err(error);
        }
        if self.done {
            return Ok(None);
        }
        let mut lines = Vec::with_capacity(max_events.min(1 << 16));
        let mut started = None;
        let mut max_timestamp = i64::MIN;
        while lines.len() < max_events {
            let next = match self.read_line(started) {
                Ok(next) => next,
                Err(e) => {
                    self.pending_error = Some(e);
                    break;
                }
            };
            match next {
                Next::End => {
                    self.done = true;
                    break;
                }
                Next::Wait => break,
                Next::Idle => return Ok(Some(SourceBatch::heartbeat(self.name.clone()))),
                Next::Line => {}
            }
            self.line_no += 1;
            let text = trim_line(&self.line);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            started.get_or_insert_with(Instant::now);
            match parse_line(text, &self.fields) {
                Ok((key, timestamp)) => {
                    max_timestamp = max_timestamp.max(timestamp);
                    self.writer.push(timestamp, key.as_deref(), text, &[]);
                    lines.push(self.line_no);
                }
                Err(reason) => {
                    if let Some(dead) = &self.dead_letters {
                        dead.send(&self.name, self.line_no, &reason, text)
                            .map_err(SourceError::DeadLetter)?;
                    } else {
                        self.pending_error = Some(SourceError::Malformed {
                            source_name: self.name.to_string(),
                            line: self.line_no,
                            reason,
                        });
                        break;
                    }
                }
            }
        }
        if lines.is_empty() {
            return self.next_batch_after_empty(max_events);
        }
        Ok(Some(SourceBatch {
            len: lines.len(),
            max_timestamp: Some(max_timestamp),
            bytes: self.writer.finish_into(),
            origin: Origin {
                source: self.name.clone(),
                positions: Positions::Lines(lines),
            },
        }))
    }
}

impl JsonLinesSource {
    /// An empty read: report a pending error, or the end, or keep waiting.
    fn next_batch_after_empty(
        &mut self,
        max_events: usize,
    ) -> Result<Option<SourceBatch>, SourceError> {
        if let Some(error) = self.pending_error.take() {
            self.done = true;
            return Err(error);
        }
        if self.done {
            return Ok(None);
        }
        self.next_batch(max_events)
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Checks that `line` is JSON and reads the key and time fields.
fn parse_line(line: &[u8], fields: &JsonFields) -> Result<(Option<Vec<u8>>, i64), String> {
    if fields.key_field.is_none() && fields.time_field.is_none() {
        serde_json::from_slice::<IgnoredAny>(line).map_err(|e| format!("malformed JSON: {e}"))?;
        return Ok((None, 0));
    }
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("malformed JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or("expected a JSON object (key_field/time_field are set)")?;
    let key = match &fields.key_field {
        None => None,
        Some(field) => match object.get(field) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.as_bytes().to_vec()),
            Some(other) => Some(other.to_string().into_bytes()),
        },
    };
    let timestamp = match &fields.time_field {
        None => 0,
        Some(field) => {
            let value = object
                .get(field)
                .ok_or_else(|| format!("event time field `{field}` is missing"))?;
            match fields.time_format {
                TimeFormat::EpochMs => value.as_i64().ok_or_else(|| {
                    format!("event time field `{field}` is not an integer (epoch milliseconds)")
                })?,
                TimeFormat::Rfc3339 => {
                    let text = value.as_str().ok_or_else(|| {
                        format!("event time field `{field}` is not a string (RFC 3339 time)")
                    })?;
                    parse_rfc3339(text).map_err(|e| format!("event time field `{field}`: {e}"))?
                }
            }
        }
    };
    Ok((key, timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use weir_batch::Batch;

    fn source(text: &'static str, fields: JsonFields) -> JsonLinesSource {
        JsonLinesSource::new(
            "in.jsonl".into(),
            LineInput::reader(text.as_bytes()),
            fields,
            None,
        )
    }

    fn values(batch: &SourceBatch) -> Vec<String> {
        Batch::new(&batch.bytes)
            .unwrap()
            .iter()
            .map(|e| String::from_utf8(e.value.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn a_file_resumes_at_its_position_and_a_shrunken_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "1\n\n2\n3\n4\n").unwrap();
        let mut first = JsonLinesSource::file(path.clone(), JsonFields::default(), None).unwrap();
        assert_eq!(values(&first.next_batch(2).unwrap().unwrap()), ["1", "2"]);
        let position = first.position().unwrap();
        assert_eq!(position, SourcePosition::File { offset: 5, line: 3 });

        let mut resumed = JsonLinesSource::file(path.clone(), JsonFields::default(), None).unwrap();
        resumed.seek(&position).unwrap();
        let rest = resumed.next_batch(10).unwrap().unwrap();
        assert_eq!(values(&rest), ["3", "4"]);
        assert_eq!(rest.origin.positions, Positions::Lines(vec![4, 5]));

        std::fs::write(&path, "1\n").unwrap();
        let mut shrunk = JsonLinesSource::file(path, JsonFields::default(), None).unwrap();
        let err = shrunk.seek(&position).unwrap_err().to_string();
        assert!(
            err.contains("resumes at byte 5, but the file has only 2 bytes"),
            "{err}"
        );
        // stdin has no position and cannot seek.
        let mut stdin = source("1\n", JsonFields::default());
        assert_eq!(stdin.position(), None);
        assert!(
            stdin
                .seek(&position)
                .unwrap_err()
                .to_string()
                .contains("only a file source can be rewound")
        );
    }

    #[test]
    fn batches_fill_up_and_carry_line_numbers() {
        let mut s = source("{\"a\":1}\n\n{\"a\":2}\r\n{\"a\":3}", JsonFields::default());
        let first = s.next_batch(2).unwrap().unwrap();
        assert_eq!(values(&first), ["{\"a\":1}", "{\"a\":2}"]);
        assert_eq!(first.origin.positions, Positions::Lines(vec![1, 3]));
        assert_eq!(first.origin.describe(1), "in.jsonl:3");
        let second = s.next_batch(2).unwrap().unwrap();
        assert_eq!(values(&second), ["{\"a\":3}"]);
        assert!(s.next_batch(2).unwrap().is_none());
    }

    #[test]
    fn a_malformed_line_comes_after_everything_before_it() {
        let mut s = source("{\"a\":1}\n{\"a\":\n{\"a\":3}\n", JsonFields::default());
        let first = s.next_batch(10).unwrap().unwrap();
        assert_eq!(values(&first), ["{\"a\":1}"]);
        let err = s.next_batch(10).unwrap_err();
        assert!(
            err.to_string().starts_with("in.jsonl:2: malformed JSON"),
            "{err}"
        );
        assert!(s.next_batch(10).unwrap().is_none());
    }

    #[test]
    fn rfc3339_times_are_read_and_bad_ones_named() {
        let fields = JsonFields {
            time_field: Some("at".into()),
            time_format: TimeFormat::Rfc3339,
            ..Default::default()
        };
        let mut s = source(
            "{\"at\":\"1970-01-01T00:00:01.5Z\"}\n{\"at\":\"yesterday\"}\n",
            fields,
        );
        let batch = s.next_batch(10).unwrap().unwrap();
        assert_eq!(
            Batch::new(&batch.bytes)
                .unwrap()
                .iter()
                .next()
                .unwrap()
                .timestamp,
            1500
        );
        let err = s.next_batch(10).unwrap_err().to_string();
        assert!(
            err.starts_with("in.jsonl:2: event time field `at`"),
            "{err}"
        );
    }

    #[test]
    fn key_and_time_fields() {
        let fields = JsonFields {
            key_field: Some("user".into()),
            time_field: Some("ts".into()),
            ..Default::default()
        };
        let mut s = source(
            "{\"user\":\"ann\",\"ts\":17}\n{\"user\":7,\"ts\":18}\n{\"user\":7,\"ts\":3}\n",
            fields.clone(),
        );
        let batch = s.next_batch(10).unwrap().unwrap();
        assert_eq!(batch.max_timestamp, Some(18));
        let decoded = Batch::new(&batch.bytes).unwrap();
        let events: Vec<_> = decoded.iter().collect();
        assert_eq!(events[0].key, Some(&b"ann"[..]));
        assert_eq!(events[0].timestamp, 17);
        assert_eq!(events[1].key, Some(&b"7"[..]));

        let mut s = source("{\"user\":\"ann\",\"ts\":\"soon\"}\n", fields);
        let err = s.next_batch(10).unwrap_err();
        assert!(err.to_string().contains("`ts` is not an integer"), "{err}");
    }

    #[test]
    fn a_trickle_on_a_channel_is_sent_when_the_linger_time_is_up() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let input = LineInput::channel(reader, Linger::new(Duration::from_millis(20)));
        let mut s = JsonLinesSource::new("stdin".into(), input, JsonFields::default(), None);
        use std::io::Write;
        writeln!(writer, "1").unwrap();
        // The batch asks for 100 events but only one arrives: linger sends it.
        let batch = s.next_batch(100).unwrap().unwrap();
        assert_eq!(values(&batch), ["1"]);
        drop(writer);
        assert!(s.next_batch(100).unwrap().is_none());
    }
}
