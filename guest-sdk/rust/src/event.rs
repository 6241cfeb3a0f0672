//! Zero-copy views of input events and the builder for output events.

use serde::{Deserialize, Serialize};
use weir_batch::{BatchWriter, EventRef};

use crate::Error;

/// One input event, borrowed from the batch buffer: reading its key, value
/// or headers copies nothing.
///
/// ```
/// # let bytes = { let mut w = weir_guest::batch::BatchWriter::new();
/// #   w.push(42, Some(b"k"), br#"{"n":1}"#, &[(b"h", b"v")]); w.finish() };
/// # let batch = weir_guest::batch::Batch::new(&bytes).unwrap();
/// # let event = weir_guest::Event::new(batch.iter().next().unwrap(), 0);
/// #[derive(serde::Deserialize)]
/// struct N { n: u32 }
/// assert_eq!(event.timestamp(), 42);
/// assert_eq!(event.key(), Some(&b"k"[..]));
/// assert_eq!(event.header("h"), Some(&b"v"[..]));
/// assert_eq!(event.json::<N>()?.n, 1);
/// # Ok::<(), weir_guest::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    inner: EventRef<'a>,
    index: u32,
}

impl<'a> Event<'a> {
    /// Wraps a decoded event; `index` is its position in the batch.
    pub fn new(inner: EventRef<'a>, index: u32) -> Self {
        Event { inner, index }
    }

    /// Event time, milliseconds since the Unix epoch.
    pub fn timestamp(&self) -> i64 {
        self.inner.timestamp
    }

    /// The key, if the event has one.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.inner.key
    }

    /// The payload bytes.
    pub fn value(&self) -> &'a [u8] {
        self.inner.value
    }

    /// The payload as text.
    ///
    /// # Errors
    /// The payload is not UTF-8.
    pub fn value_str(&self) -> Result<&'a str, Error> {
        Ok(std::str::from_utf8(self.inner.value)?)
    }

    /// The payload parsed as JSON into `T`; `T` may borrow from the event.
    ///
    /// # Errors
    /// The payload is not JSON of that shape.
    pub fn json<T: Deserialize<'a>>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(self.inner.value)?)
    }

    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.inner.header(name.as_bytes())
    }

    /// All headers as `(name, value)` pairs.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        self.inner.headers()
    }

    /// Position of this event in its input batch (0-based).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The underlying wire-format view.
    pub fn raw(&self) -> &EventRef<'a> {
        &self.inner
    }
}

/// An output event under construction, for [`Output::emit`]. Start from
/// [`Emit::value`] for a new event or [`Emit::like`] to keep an input
/// event's key, timestamp and headers.
///
/// ```
/// # let bytes = { let mut w = weir_guest::batch::BatchWriter::new();
/// #   w.push(42, Some(b"k"), b"old", &[]); w.finish() };
/// # let batch = weir_guest::batch::Batch::new(&bytes).unwrap();
/// # let event = weir_guest::Event::new(batch.iter().next().unwrap(), 0);
/// use weir_guest::{Emit, Output};
/// let mut out = Output::new();
/// out.emit(Emit::like(&event).with_value(b"new").header("origin", b"guest"));
/// out.emit(Emit::value(b"fresh").key(b"k2").timestamp(7));
/// assert_eq!(out.len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct Emit<'a> {
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: &'a [u8],
    inherited_headers: Option<EventRef<'a>>,
    headers: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> Emit<'a> {
    /// A new event with this payload, no key, timestamp 0 and no headers.
    pub fn value(value: &'a [u8]) -> Self {
        Emit {
            timestamp: 0,
            key: None,
            value,
            inherited_headers: None,
            headers: Vec::new(),
        }
    }

    /// A copy of `event` (key, value, timestamp, headers) to modify.
    pub fn like(event: &Event<'a>) -> Self {
        Emit {
            timestamp: event.timestamp(),
            key: event.key(),
            value: event.value(),
            inherited_headers: Some(event.inner),
            headers: Vec::new(),
        }
    }

    /// Replaces the payload.
    pub fn with_value(mut self, value: &'a [u8]) -> Self {
        self.value = value;
        self
    }

    /// Sets the key.
    pub fn key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// Removes the key.
    pub fn no_key(mut self) -> Self {
        self.key = None;
        self
    }

    /// Sets the event time (ms since the Unix epoch).
    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// Adds a header (after any inherited ones).
    pub fn header(mut self, name: &'a str, value: &'a [u8]) -> Self {
        self.headers.push((name.as_bytes(), value));
        self
    }
}

/// The events an operator emits for one batch, encoded in place.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub(crate) writer: BatchWriter,
}

impl Output {
    /// An empty output.
    pub fn new() -> Self {
        Output {
            writer: BatchWriter::new(),
        }
    }

    /// An empty output with room for `bytes` of encoded events.
    pub fn with_capacity(bytes: usize) -> Self {
        Output {
            writer: BatchWriter::with_capacity(bytes),
        }
    }

    /// Emits `event` unchanged (a filter's "keep").
    pub fn forward(&mut self, event: &Event<'_>) {
        self.writer.push_event(&event.inner);
    }

    /// Emits a built event.
    pub fn emit(&mut self, emit: Emit<'_>) {
        match (&emit.inherited_headers, emit.headers.is_empty()) {
            (Some(from), true) => self.writer.push_raw_headers(
                emit.timestamp,
                emit.key,
                emit.value,
                u32::try_from(from.header_count()).unwrap_or(u32::MAX),
                from.raw_headers(),
            ),
            _ => {
                let mut headers: Vec<(&[u8], &[u8])> = emit
                    .inherited_headers
                    .map(|from| from.headers().collect())
                    .unwrap_or_default();
                headers.extend_from_slice(&emit.headers);
                self.writer
                    .push(emit.timestamp, emit.key, emit.value, &headers);
            }
        }
    }

    /// Emits `value` serialized as JSON, with the key, timestamp and headers
    /// of `like`. The JSON is written straight into the output buffer.
    ///
    /// # Errors
    /// `value` cannot be serialized (e.g. a map with non-string keys).
    pub fn emit_json<T: Serialize + ?Sized>(
        &mut self,
        like: &Event<'_>,
        value: &T,
    ) -> Result<(), Error> {
        let mut result = Ok(());
        let inner = like.inner;
        let header_count = u32::try_from(inner.header_count()).unwrap_or(u32::MAX);
        self.writer.push_with_raw_headers(
            inner.timestamp,
            inner.key,
            header_count,
            inner.raw_headers(),
            |buf| result = serde_json::to_writer(&mut *buf, value),
        );
        result.map_err(Error::from)
    }

    /// Number of events emitted so far.
    pub fn len(&self) -> usize {
        self.writer.len()
    }

    /// True when nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.writer.is_empty()
    }

    /// The encoded batch.
    pub fn finish(self) -> Vec<u8> {
        self.writer.finish()
    }

    /// Hands out the encoded batch and leaves this output empty (keeping its
    /// allocation).
    pub fn finish_into(&mut self) -> Vec<u8> {
        self.writer.finish_into()
    }
}
