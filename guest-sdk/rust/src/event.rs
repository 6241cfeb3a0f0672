//! Zero-copy views of input events and the builder for output events.

use serde::{Deserialize, Serialize};
use weir_batch::json::{self, JsonError};
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

    /// The payload's top-level JSON fields, read in place: the fast way to
    /// get a few fields of a row. Nothing is parsed until the walk runs,
    /// and then only as far as needed; see [`weir_batch::json`].
    ///
    /// ```
    /// # let bytes = { let mut w = weir_guest::batch::BatchWriter::new();
    /// #   w.push(0, None, br#"{"auction":7,"url":"https://x","price":120}"#, &[]); w.finish() };
    /// # let batch = weir_guest::batch::Batch::new(&bytes).unwrap();
    /// # let event = weir_guest::Event::new(batch.iter().next().unwrap(), 0);
    /// let [auction, price] = event.fields().pick(["auction", "price"])?;
    /// assert_eq!(auction.and_then(|v| v.as_u64()), Some(7));
    /// assert_eq!(price.unwrap().raw(), b"120");
    /// # Ok::<(), weir_guest::Error>(())
    /// ```
    pub fn fields(&self) -> json::Object<'a> {
        json::Object::new(self.inner.value)
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
        self.emit_with(like, |buf| {
            serde_json::to_writer(&mut *buf, value).map_err(Error::from)
        })
    }

    /// Emits a JSON object written field by field (see [`JsonObject`]), with
    /// the key, timestamp and headers of `like`. Together with
    /// [`Event::fields`] this projects and converts fields without building
    /// a typed copy of the row.
    ///
    /// ```
    /// # let bytes = { let mut w = weir_guest::batch::BatchWriter::new();
    /// #   w.push(0, None, br#"{"auction":7,"url":"https://x","price":120}"#, &[]); w.finish() };
    /// # let batch = weir_guest::batch::Batch::new(&bytes).unwrap();
    /// # let event = weir_guest::Event::new(batch.iter().next().unwrap(), 0);
    /// let mut out = weir_guest::Output::new();
    /// let [auction, price] = event.fields().pick(["auction", "price"])?;
    /// out.emit_object(&event, |row| {
    ///     row.raw("auction", auction.ok_or("no auction")?);
    ///     row.f64("price", price.and_then(|p| p.as_f64()).ok_or("no price")? * 0.5);
    ///     row.str("note", "half \"off\"");
    ///     Ok(())
    /// })?;
    /// # let bytes = out.finish();
    /// # let batch = weir_guest::batch::Batch::new(&bytes).unwrap();
    /// # assert_eq!(batch.iter().next().unwrap().value, br#"{"auction":7,"price":60.0,"note":"half \"off\""}"#);
    /// # Ok::<(), weir_guest::Error>(())
    /// ```
    ///
    /// # Errors
    /// What `write` returns; nothing is emitted then.
    pub fn emit_object(
        &mut self,
        like: &Event<'_>,
        write: impl FnOnce(&mut JsonObject<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.emit_with(like, |buf| JsonObject::write(buf, write))
    }

    /// Emits an event with the key, timestamp and headers of `like` whose
    /// value `write` puts straight into the output buffer (see
    /// [`Output::emit_value`]).
    #[inline(always)]
    fn emit_with(
        &mut self,
        like: &Event<'_>,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let inner = like.inner;
        let header_count = u32::try_from(inner.header_count()).unwrap_or(u32::MAX);
        self.emit_value(
            inner.timestamp,
            inner.key,
            (header_count, inner.raw_headers()),
            write,
        )
    }

    /// Emits an event whose value `write` puts straight into the output
    /// buffer, with `headers` already encoded (count and bytes); if `write`
    /// fails, the half-written event is taken back. Every `emit_*` goes
    /// through here.
    #[inline(always)]
    pub(crate) fn emit_value(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        headers: (u32, &[u8]),
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut result = Ok(());
        let mark = self.writer.mark();
        self.writer
            .push_with_raw_headers(timestamp, key, headers.0, headers.1, |buf| {
                result = write(buf);
            });
        if result.is_err() {
            self.writer.undo_to(mark);
        }
        result
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

/// A JSON object being written into the output buffer, one field at a time,
/// by [`Output::emit_object`]. Fields appear in the order written.
#[derive(Debug)]
pub struct JsonObject<'b> {
    buf: &'b mut Vec<u8>,
    first: bool,
}

impl JsonObject<'_> {
    /// Writes the braces around what `write` writes.
    #[inline(always)]
    pub(crate) fn write(
        buf: &mut Vec<u8>,
        write: impl FnOnce(&mut JsonObject<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut row = JsonObject { buf, first: true };
        row.buf.push(b'{');
        write(&mut row)?;
        row.buf.push(b'}');
        Ok(())
    }

    // `inline(always)` here and below: with a literal name the escape check
    // folds away, and in a guest a call costs a frame and a stack check.
    #[inline(always)]
    fn name(&mut self, name: &str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        if !json::needs_escape(name.as_bytes()) {
            self.buf.push(b'"');
            weir_batch::extend_short(self.buf, name.as_bytes());
            self.buf.extend_from_slice(b"\":");
        } else {
            self.string(name);
            self.buf.push(b':');
        }
    }

    #[inline]
    fn string(&mut self, s: &str) {
        // Serializing a `str` cannot fail.
        let _ = serde_json::to_writer(&mut *self.buf, s);
    }

    /// A field whose value is copied as it is from an input row.
    #[inline(always)]
    pub fn raw(&mut self, name: &str, value: json::Value<'_>) {
        self.name(name);
        self.buf.extend_from_slice(value.raw());
    }

    /// An unsigned integer field.
    #[inline(always)]
    pub fn u64(&mut self, name: &str, value: u64) {
        self.name(name);
        json::write_u64(self.buf, value);
    }

    /// A signed integer field.
    #[inline(always)]
    pub fn i64(&mut self, name: &str, value: i64) {
        self.name(name);
        json::write_i64(self.buf, value);
    }

    /// A float field, written as `serde_json` writes it (`null` when not
    /// finite).
    #[inline(always)]
    pub fn f64(&mut self, name: &str, value: f64) {
        self.name(name);
        // Serializing an `f64` cannot fail.
        let _ = serde_json::to_writer(&mut *self.buf, &value);
    }

    /// A string field, escaped.
    #[inline(always)]
    pub fn str(&mut self, name: &str, value: &str) {
        self.name(name);
        self.string(value);
    }

    /// A field holding any serializable value.
    ///
    /// # Errors
    /// `value` cannot be serialized (e.g. a map with non-string keys).
    #[inline]
    pub fn value<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<(), Error> {
        self.name(name);
        Ok(serde_json::to_writer(&mut *self.buf, value)?)
    }
}

impl From<JsonError> for Error {
    #[inline]
    fn from(e: JsonError) -> Self {
        Error::new(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_batch::Batch;

    fn one_event(value: &[u8], f: impl FnOnce(&Event<'_>)) {
        let mut w = BatchWriter::new();
        w.push(9, Some(b"k"), value, &[(b"h", b"v")]);
        let bytes = w.finish();
        let batch = Batch::new(&bytes).unwrap();
        f(&Event::new(batch.iter().next().unwrap(), 0));
    }

    fn values(out: Output) -> Vec<String> {
        let bytes = out.finish();
        let batch = Batch::new(&bytes).unwrap();
        batch
            .iter()
            .map(|e| String::from_utf8(e.value.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn objects_keep_the_event_and_escape_what_needs_it() {
        one_event(br#"{"a":[1,{"b":"\u00e9"}],"n":-3}"#, |event| {
            let mut out = Output::new();
            let [a, n] = event.fields().pick(["a", "n"]).unwrap();
            out.emit_object(event, |row| {
                row.raw("a", a.unwrap());
                row.i64("n", n.unwrap().as_i64().unwrap());
                row.u64("u", u64::MAX);
                row.f64("inf", f64::INFINITY);
                row.str("quote\"d", "tab\t");
                row.value("list", &[1, 2])
            })
            .unwrap();
            let bytes = out.finish();
            let batch = Batch::new(&bytes).unwrap();
            let e = batch.iter().next().unwrap();
            assert_eq!(
                (e.timestamp, e.key, e.header(b"h")),
                (9, Some(&b"k"[..]), Some(&b"v"[..]))
            );
            let text = std::str::from_utf8(e.value).unwrap();
            assert_eq!(
                text,
                r#"{"a":[1,{"b":"\u00e9"}],"n":-3,"u":18446744073709551615,"inf":null,"quote\"d":"tab\t","list":[1,2]}"#
            );
            let parsed: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(parsed["a"][1]["b"], "é");
        });
    }

    #[test]
    fn a_failed_write_emits_nothing() {
        one_event(br#"{"a":1}"#, |event| {
            let mut out = Output::new();
            out.forward(event);
            let err = out
                .emit_object(event, |row| {
                    row.u64("a", 1);
                    Err("no".into())
                })
                .unwrap_err();
            assert_eq!(err.to_string(), "no");
            // A map with non-string keys cannot be JSON: serde fails half-way.
            let map: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
            assert!(out.emit_json(event, &map).is_err());
            out.forward(event);
            assert_eq!(values(out), [r#"{"a":1}"#, r#"{"a":1}"#]);
        });
    }

    #[test]
    fn malformed_rows_are_errors_with_the_byte() {
        one_event(br#"{"a":1 "b":2}"#, |event| {
            let err = Error::from(event.fields().get("b").unwrap_err());
            assert_eq!(
                err.to_string(),
                "invalid JSON at byte 7: expected `,` or `}`"
            );
        });
    }
}
