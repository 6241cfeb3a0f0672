//! The dead-letter sink: where malformed input goes when the pipeline asks
//! for one (`[dead_letter]`), instead of failing the run.

use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use weir_batch::{Batch, BatchWriter};

use crate::sink::Sink;

/// A shared handle on the dead-letter sink. Each record is a JSON object:
/// `{"source":"clicks.jsonl","line":3,"error":"malformed JSON: …","raw":"…"}`.
#[derive(Clone)]
pub struct DeadLetters {
    sink: Arc<Mutex<Box<dyn Sink>>>,
}

#[derive(Serialize)]
struct Record<'a> {
    source: &'a str,
    line: u64,
    error: &'a str,
    raw: &'a str,
}

impl DeadLetters {
    /// Sends dead letters to `sink`.
    pub fn new(sink: Box<dyn Sink>) -> Self {
        DeadLetters {
            sink: Arc::new(Mutex::new(sink)),
        }
    }

    /// Records that `raw`, line `line` of `source`, was refused for `error`.
    ///
    /// # Errors
    /// The sink failed to write.
    pub fn send(&self, source: &str, line: u64, error: &str, raw: &[u8]) -> Result<(), String> {
        let raw = String::from_utf8_lossy(raw);
        let record = Record {
            source,
            line,
            error,
            raw: &raw,
        };
        let mut writer = BatchWriter::new();
        let mut encoded = Ok(());
        writer.push_with(0, None, &[], |buf| {
            encoded = serde_json::to_writer(buf, &record);
        });
        encoded.map_err(|e| e.to_string())?;
        let bytes = writer.finish();
        let batch = Batch::new(&bytes).map_err(|e| e.to_string())?;
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        sink.write(&batch).map_err(|e| e.to_string())
    }

    /// Flushes the sink.
    ///
    /// # Errors
    /// The sink failed to flush.
    pub fn finish(&self) -> Result<(), String> {
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        sink.finish().map(|_| ()).map_err(|e| e.to_string())
    }
}
