//! Weir's data-plane wire format: a batch of events in one flat byte buffer.
//!
//! Events cross the host/guest boundary as one `list<u8>` per batch (see
//! `wit/operator.wit` and `ARCHITECTURE.md` for the measurement that chose
//! this). The format is deliberately small so that Rust, Python and
//! JavaScript guests can all read it in place with nothing but
//! little-endian integer reads and slicing:
//!
//! ```text
//! batch  := count:u32 event{count}
//! event  := timestamp:i64 key_len:u32 value_len:u32 header_count:u32
//!           key:[u8; key_len]        (absent when key_len == 0xFFFF_FFFF)
//!           value:[u8; value_len]
//!           header{header_count}
//! header := name_len:u32 value_len:u32 name:[u8; name_len] value:[u8; value_len]
//! ```
//!
//! All integers are little-endian; there is no padding and no alignment.
//! This crate has no dependencies: the host and the Rust guest SDK both use
//! it, so the two sides cannot drift apart.
//!
//! ```
//! use weir_batch::{Batch, BatchWriter};
//!
//! let mut writer = BatchWriter::new();
//! writer.push(1_000, Some(b"user-1"), br#"{"page":"/"}"#, &[(b"source", b"web")]);
//! writer.push(1_001, None, b"{}", &[]);
//! let bytes = writer.finish();
//!
//! let batch = Batch::new(&bytes)?;
//! assert_eq!(batch.len(), 2);
//! let first = batch.iter().next().unwrap();
//! assert_eq!(first.key, Some(&b"user-1"[..]));
//! assert_eq!(first.header(b"source"), Some(&b"web"[..]));
//! # Ok::<(), weir_batch::FormatError>(())
//! ```

use std::fmt;

pub mod json;
pub mod keyed;
pub mod window;

/// The event count of an encoded batch, read without validating the rest
/// (0 for a buffer too short to hold one).
pub fn event_count(bytes: &[u8]) -> usize {
    read_u32(bytes, 0).map_or(0, |n| n as usize)
}

/// Appends `bytes` to `buf`, for copies usually a few bytes long (keys,
/// field names, accumulators).
///
/// In WebAssembly a copy of unknown length compiles to `memory.copy`,
/// which Wasmtime runs as a call out of the guest into the host: more
/// than pushing a dozen bytes one by one. Natively it is
/// `extend_from_slice`.
#[inline(always)]
pub fn extend_short(buf: &mut Vec<u8>, bytes: &[u8]) {
    if cfg!(target_family = "wasm") && bytes.len() <= 16 {
        bytes.iter().for_each(|b| buf.push(*b));
    } else {
        buf.extend_from_slice(bytes);
    }
}

/// Marks an event without a key in the `key_len` field.
pub const NO_KEY: u32 = u32::MAX;

/// Size of the fixed part of an event: timestamp, key length, value length,
/// header count.
pub const EVENT_HEADER_LEN: usize = 8 + 4 + 4 + 4;

/// A batch buffer that does not follow the format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    /// Index of the event being read when the problem was found.
    pub event: u32,
    /// Byte offset in the buffer where the problem was found.
    pub offset: usize,
    /// What is wrong.
    pub reason: &'static str,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed event batch: {} (event #{}, byte {})",
            self.reason, self.event, self.offset
        )
    }
}

impl std::error::Error for FormatError {}

/// `a == b`, comparing words rather than calling `memcmp`: for the short
/// strings of keys and field names a call costs more than the compare (and
/// a WebAssembly guest's `memcmp` goes a byte at a time).
///
/// ```
/// assert!(weir_batch::bytes_eq(b"auction", b"auction"));
/// assert!(!weir_batch::bytes_eq(b"1007", b"1008"));
/// ```
#[inline(always)]
pub fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    #[inline(always)]
    fn word(s: &[u8], at: usize) -> u64 {
        s.get(at..)
            .and_then(<[u8]>::first_chunk::<8>)
            .map_or(0, |c| u64::from_le_bytes(*c))
    }
    #[inline(always)]
    fn half(s: &[u8], at: usize) -> u32 {
        s.get(at..)
            .and_then(<[u8]>::first_chunk::<4>)
            .map_or(0, |c| u32::from_le_bytes(*c))
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0..4 => a == b,
        4..8 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => {
            let mut at = 0;
            while at + 8 < n {
                if word(a, at) != word(b, at) {
                    return false;
                }
                at += 8;
            }
            word(a, n - 8) == word(b, n - 8)
        }
    }
}

/// Reads the events of the batch buffer `bytes` in one pass, checking the
/// format as it goes, and calls `each` with every event; returns the
/// count. For a buffer read once, this is [`Batch::new`] and
/// [`Batch::iter`] in one walk instead of two.
///
/// ```
/// let mut w = weir_batch::BatchWriter::new();
/// w.push(7, None, b"a", &[]);
/// w.push(9, None, b"b", &[]);
/// let mut times = Vec::new();
/// assert_eq!(weir_batch::read_events(&w.finish(), |e| times.push(e.timestamp))?, 2);
/// assert_eq!(times, [7, 9]);
/// # Ok::<(), weir_batch::FormatError>(())
/// ```
///
/// # Errors
/// As [`Batch::new`]; `each` has then seen the events before the fault.
pub fn read_events<'a>(
    bytes: &'a [u8],
    mut each: impl FnMut(EventRef<'a>),
) -> Result<u32, FormatError> {
    let count = read_u32(bytes, 0).ok_or(FormatError {
        event: 0,
        offset: 0,
        reason: "buffer shorter than the 4-byte event count",
    })?;
    let mut cursor = Cursor { bytes, pos: 4 };
    for event in 0..count {
        let read = cursor
            .read_event()
            .map_err(|(offset, reason)| FormatError {
                event,
                offset,
                reason,
            })?;
        each(read);
    }
    if cursor.pos != bytes.len() {
        return Err(FormatError {
            event: count,
            offset: cursor.pos,
            reason: "trailing bytes after the last event",
        });
    }
    Ok(count)
}

/// A validated batch, borrowed from its buffer. Iterating it never fails.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    bytes: &'a [u8],
    count: u32,
}

impl<'a> Batch<'a> {
    /// Checks every length in `bytes` once; afterwards reads are infallible.
    ///
    /// # Errors
    /// A [`FormatError`] naming the event and byte offset where the buffer
    /// stops following the format (truncated, lengths past the end, or
    /// trailing bytes after the last event).
    pub fn new(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let count = read_events(bytes, |_| {})?;
        Ok(Batch { bytes, count })
    }

    /// Number of events in the batch.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The whole encoded buffer.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The events, in order, as zero-copy views.
    pub fn iter(&self) -> Events<'a> {
        Events {
            cursor: Cursor {
                bytes: self.bytes,
                pos: 4,
            },
            remaining: self.count,
        }
    }
}

impl<'a> IntoIterator for &Batch<'a> {
    type Item = EventRef<'a>;
    type IntoIter = Events<'a>;
    fn into_iter(self) -> Events<'a> {
        self.iter()
    }
}

/// Iterator over the events of a validated [`Batch`].
#[derive(Debug, Clone)]
pub struct Events<'a> {
    cursor: Cursor<'a>,
    remaining: u32,
}

impl<'a> Iterator for Events<'a> {
    type Item = EventRef<'a>;

    fn next(&mut self) -> Option<EventRef<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // The batch was validated in `Batch::new`, so this cannot fail.
        self.cursor.read_event().ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

impl ExactSizeIterator for Events<'_> {}

/// One event, borrowed from a batch buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// Event time in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key, if the event has one.
    pub key: Option<&'a [u8]>,
    /// The payload.
    pub value: &'a [u8],
    /// Encoded headers; iterate with [`EventRef::headers`].
    headers: &'a [u8],
    header_count: u32,
}

impl<'a> EventRef<'a> {
    /// The headers as `(name, value)` pairs, in order.
    pub fn headers(&self) -> Headers<'a> {
        Headers {
            cursor: Cursor {
                bytes: self.headers,
                pos: 0,
            },
            remaining: self.header_count,
        }
    }

    /// The value of the first header called `name`.
    pub fn header(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Number of headers.
    pub fn header_count(&self) -> usize {
        self.header_count as usize
    }

    /// The encoded header block, exactly as it sits in the buffer.
    pub fn raw_headers(&self) -> &'a [u8] {
        self.headers
    }
}

/// Iterator over an event's headers.
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    cursor: Cursor<'a>,
    remaining: u32,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        self.cursor.read_header().ok()
    }
}

#[derive(Debug, Clone)]
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

type CursorError = (usize, &'static str);

impl<'a> Cursor<'a> {
    fn u32(&mut self, what: &'static str) -> Result<u32, CursorError> {
        let v = read_u32(self.bytes, self.pos).ok_or((self.pos, what))?;
        self.pos += 4;
        Ok(v)
    }

    #[inline(always)]
    fn take(&mut self, len: u32, what: &'static str) -> Result<&'a [u8], CursorError> {
        let end = self
            .pos
            .checked_add(len as usize)
            .filter(|end| *end <= self.bytes.len())
            .ok_or((self.pos, what))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    /// One event. Inlined into the loops that read batches: out of line it
    /// returned its 56-byte result through memory, a guest's linear memory
    /// included.
    #[inline(always)]
    fn read_event(&mut self) -> Result<EventRef<'a>, CursorError> {
        // The fixed part in one bounds check.
        let fixed = self
            .bytes
            .get(self.pos..)
            .and_then(<[u8]>::first_chunk::<EVENT_HEADER_LEN>)
            .ok_or((self.pos, "truncated event header"))?;
        let timestamp = i64::from_le_bytes(bytes_at(fixed, 0));
        let key_len = u32::from_le_bytes(bytes_at(fixed, 8));
        let value_len = u32::from_le_bytes(bytes_at(fixed, 12));
        let header_count = u32::from_le_bytes(bytes_at(fixed, 16));
        self.pos += EVENT_HEADER_LEN;
        let key = if key_len == NO_KEY {
            None
        } else {
            Some(self.take(key_len, "key runs past the end of the buffer")?)
        };
        let value = self.take(value_len, "value runs past the end of the buffer")?;
        let headers_start = self.pos;
        for _ in 0..header_count {
            self.read_header()?;
        }
        Ok(EventRef {
            timestamp,
            key,
            value,
            headers: &self.bytes[headers_start..self.pos],
            header_count,
        })
    }

    fn read_header(&mut self) -> Result<(&'a [u8], &'a [u8]), CursorError> {
        let name_len = self.u32("truncated header")?;
        let value_len = self.u32("truncated header")?;
        let name = self.take(name_len, "header name runs past the end of the buffer")?;
        let value = self.take(value_len, "header value runs past the end of the buffer")?;
        Ok((name, value))
    }
}

/// `N` bytes of an event's fixed part from `at` (with a constant `at`, the
/// bounds checks fold away).
#[inline(always)]
fn bytes_at<const N: usize>(fixed: &[u8; EVENT_HEADER_LEN], at: usize) -> [u8; N] {
    std::array::from_fn(|i| fixed[at + i])
}

fn read_u32(bytes: &[u8], pos: usize) -> Option<u32> {
    let b = bytes.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A position in a [`BatchWriter`], from [`BatchWriter::mark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    bytes: usize,
    count: u32,
}

/// Builds a batch buffer event by event.
///
/// The buffer can be reused: [`BatchWriter::finish_into`] hands the bytes out
/// and leaves the writer empty with its allocation kept.
#[derive(Debug, Clone)]
pub struct BatchWriter {
    buf: Vec<u8>,
    count: u32,
}

impl Default for BatchWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchWriter {
    /// An empty batch.
    pub fn new() -> Self {
        Self::with_capacity(256)
    }

    /// An empty batch whose buffer can hold `bytes` without reallocating.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes.max(4));
        buf.extend_from_slice(&0u32.to_le_bytes());
        BatchWriter { buf, count: 0 }
    }

    /// Number of events written so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when no event has been written.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes written so far, including the count.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    /// Appends one event.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&[u8], &[u8])],
    ) {
        self.push_with(timestamp, key, headers, |buf| buf.extend_from_slice(value));
    }

    /// Appends a copy of an event read from another batch.
    pub fn push_event(&mut self, event: &EventRef<'_>) {
        self.push_raw_headers(
            event.timestamp,
            event.key,
            event.value,
            event.header_count,
            event.headers,
        );
    }

    /// Appends an event whose headers are already encoded (as returned by
    /// [`EventRef::raw_headers`]).
    pub fn push_raw_headers(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: &[u8],
        header_count: u32,
        raw_headers: &[u8],
    ) {
        self.write_fixed(timestamp, key, value.len(), header_count);
        self.buf.extend_from_slice(value);
        extend_short(&mut self.buf, raw_headers);
        self.count += 1;
    }

    /// Appends an event whose value is written in place by `write_value`,
    /// so a serializer can write straight into the batch buffer.
    pub fn push_with(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        headers: &[(&[u8], &[u8])],
        write_value: impl FnOnce(&mut Vec<u8>),
    ) {
        self.push_value_with(timestamp, key, len_u32(headers.len()), write_value);
        for (name, value) in headers {
            self.buf
                .extend_from_slice(&len_u32(name.len()).to_le_bytes());
            self.buf
                .extend_from_slice(&len_u32(value.len()).to_le_bytes());
            self.buf.extend_from_slice(name);
            self.buf.extend_from_slice(value);
        }
    }

    /// Like [`BatchWriter::push_with`], with headers already encoded (as
    /// returned by [`EventRef::raw_headers`]).
    pub fn push_with_raw_headers(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        header_count: u32,
        raw_headers: &[u8],
        write_value: impl FnOnce(&mut Vec<u8>),
    ) {
        self.push_value_with(timestamp, key, header_count, write_value);
        extend_short(&mut self.buf, raw_headers);
    }

    /// Writes the fixed part, the key and the value; the caller writes
    /// `header_count` headers right after.
    fn push_value_with(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        header_count: u32,
        write_value: impl FnOnce(&mut Vec<u8>),
    ) {
        let start = self.buf.len();
        self.write_fixed(timestamp, key, 0, header_count);
        let value_start = self.buf.len();
        write_value(&mut self.buf);
        let value_len = len_u32(self.buf.len() - value_start);
        self.buf[start + 12..start + 16].copy_from_slice(&value_len.to_le_bytes());
        self.count += 1;
    }

    fn write_fixed(&mut self, timestamp: i64, key: Option<&[u8]>, value_len: usize, headers: u32) {
        // One append for the fixed part: one capacity check.
        let key_len = key.map_or(NO_KEY, |k| len_u32(k.len()));
        let mut fixed = [0u8; EVENT_HEADER_LEN];
        fixed[..8].copy_from_slice(&timestamp.to_le_bytes());
        fixed[8..12].copy_from_slice(&key_len.to_le_bytes());
        fixed[12..16].copy_from_slice(&len_u32(value_len).to_le_bytes());
        fixed[16..].copy_from_slice(&headers.to_le_bytes());
        self.buf.extend_from_slice(&fixed);
        if let Some(key) = key {
            extend_short(&mut self.buf, key);
        }
    }

    /// Writes the count and returns the encoded batch.
    pub fn finish(mut self) -> Vec<u8> {
        self.seal();
        self.buf
    }

    /// Writes the count, hands the encoded batch out and leaves this writer
    /// empty, keeping an allocation of the same capacity for the next batch.
    pub fn finish_into(&mut self) -> Vec<u8> {
        self.seal();
        let capacity = self.buf.capacity();
        let out = std::mem::replace(&mut self.buf, Vec::with_capacity(capacity));
        self.buf.extend_from_slice(&0u32.to_le_bytes());
        self.count = 0;
        out
    }

    /// Where the writer stands now; [`BatchWriter::undo_to`] drops every
    /// event written after it (e.g. one whose value failed half-way).
    pub fn mark(&self) -> Mark {
        Mark {
            bytes: self.buf.len(),
            count: self.count,
        }
    }

    /// Drops every event written since `mark` (taken from this writer).
    pub fn undo_to(&mut self, mark: Mark) {
        if mark.bytes >= 4 && mark.bytes <= self.buf.len() && mark.count <= self.count {
            self.buf.truncate(mark.bytes);
            self.count = mark.count;
        }
    }

    /// Forgets every event written so far.
    pub fn clear(&mut self) {
        self.buf.truncate(4);
        self.count = 0;
    }

    fn seal(&mut self) {
        self.buf[0..4].copy_from_slice(&self.count.to_le_bytes());
    }
}

/// Lengths in the format are u32; a single key, value or header over 4 GiB
/// cannot be encoded. Guest memory is capped far below that, and the host
/// rejects such an event before it gets here.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extend_short_appends_every_byte_at_every_length() {
        let bytes: Vec<u8> = (0..40).collect();
        for len in 0..=bytes.len() {
            let mut buf = vec![255];
            extend_short(&mut buf, &bytes[..len]);
            assert_eq!(buf[0], 255);
            assert_eq!(&buf[1..], &bytes[..len]);
        }
    }

    fn sample() -> Vec<u8> {
        let mut w = BatchWriter::new();
        w.push(-5, Some(b""), b"a", &[]);
        w.push(7, None, b"", &[(b"h1", b"v1"), (b"h2", b"")]);
        w.push_with(9, Some(b"k"), &[(b"x", b"y")], |buf| {
            buf.extend_from_slice(b"written in place")
        });
        w.finish()
    }

    #[test]
    fn round_trips_keys_values_headers_and_timestamps() {
        let bytes = sample();
        let batch = Batch::new(&bytes).unwrap();
        let events: Vec<_> = batch.iter().collect();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].timestamp, -5);
        assert_eq!(events[0].key, Some(&b""[..]), "empty key is not no key");
        assert_eq!(events[1].key, None);
        assert_eq!(
            events[1].headers().collect::<Vec<_>>(),
            vec![(&b"h1"[..], &b"v1"[..]), (&b"h2"[..], &b""[..])]
        );
        assert_eq!(events[2].value, b"written in place");
        assert_eq!(events[2].header(b"x"), Some(&b"y"[..]));
        assert_eq!(events[2].header(b"missing"), None);
    }

    #[test]
    fn copying_events_reproduces_the_buffer() {
        let bytes = sample();
        let batch = Batch::new(&bytes).unwrap();
        let mut w = BatchWriter::new();
        for e in &batch {
            w.push_event(&e);
        }
        assert_eq!(w.finish(), bytes);
    }

    #[test]
    fn finish_into_reuses_the_writer() {
        let mut w = BatchWriter::new();
        w.push(1, None, b"x", &[]);
        let first = w.finish_into();
        assert!(w.is_empty());
        w.push(2, None, b"y", &[]);
        let second = w.finish_into();
        assert_eq!(
            Batch::new(&first).unwrap().iter().next().unwrap().value,
            b"x"
        );
        assert_eq!(
            Batch::new(&second).unwrap().iter().next().unwrap().value,
            b"y"
        );
    }

    #[test]
    fn every_truncation_is_rejected_with_a_position() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            let err = Batch::new(&bytes[..cut]).unwrap_err();
            assert!(err.offset <= cut, "{err} at cut {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(
            Batch::new(&extra).unwrap_err().reason,
            "trailing bytes after the last event"
        );
    }

    #[test]
    fn a_huge_length_is_an_error_not_a_panic() {
        let mut bytes = 1u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&0i64.to_le_bytes());
        bytes.extend_from_slice(&(u32::MAX - 1).to_le_bytes()); // key length
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        let err = Batch::new(&bytes).unwrap_err();
        assert_eq!(err.event, 0);
        assert_eq!(err.reason, "key runs past the end of the buffer");
    }
}
