//! The two buffers window operators exchange with the host, beside the
//! event batch:
//!
//! ```text
//! slots  := count:u32 slot{count}
//! slot   := len:u32 bytes:[u8; len]          (empty slot when len == 0xFFFF_FFFF)
//!
//! fired  := count:u32 window{count}
//! window := start:i64 end:i64 key_len:u32 payload_len:u32
//!           key:[u8; key_len]                (absent when key_len == 0xFFFF_FFFF)
//!           payload:[u8; payload_len]
//! ```
//!
//! *Slots* carry accumulators in and out of an aggregate's `add` and
//! `merge` (an empty slot is an accumulator not created yet). *Fired*
//! windows carry, per window that fires, its key, bounds (`start`
//! inclusive, `end` exclusive, epoch ms) and a payload: the accumulator for
//! an aggregate's `result`, an event batch for a whole-window function.
//!
//! ```
//! use weir_batch::window::{FiredWindows, FiredWriter, Slots, SlotsWriter};
//!
//! let mut slots = SlotsWriter::new();
//! slots.push(Some(b"acc"));
//! slots.push(None);
//! let bytes = slots.finish();
//! let read: Vec<_> = Slots::new(&bytes)?.iter().collect();
//! assert_eq!(read, [Some(&b"acc"[..]), None]);
//!
//! let mut fired = FiredWriter::new();
//! fired.push(0, 60_000, Some(b"/home"), b"42");
//! let bytes = fired.finish();
//! let w = FiredWindows::new(&bytes)?.iter().next().unwrap();
//! assert_eq!((w.start, w.end, w.key, w.payload), (0, 60_000, Some(&b"/home"[..]), &b"42"[..]));
//! # Ok::<(), weir_batch::FormatError>(())
//! ```

use crate::{FormatError, NO_KEY, len_u32, read_u32};

/// Marks an empty slot in the `len` field.
pub const EMPTY_SLOT: u32 = u32::MAX;

fn error(event: u32, offset: usize, reason: &'static str) -> FormatError {
    FormatError {
        event,
        offset,
        reason,
    }
}

fn take(bytes: &[u8], pos: &mut usize, len: usize) -> Option<usize> {
    let start = *pos;
    let end = start.checked_add(len).filter(|end| *end <= bytes.len())?;
    *pos = end;
    Some(start)
}

fn read_i64(bytes: &[u8], pos: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[pos..pos + 8]);
    i64::from_le_bytes(b)
}

/// Reads a slots buffer in one pass: calls `each` with every slot in
/// order (`None` for an empty one), checking the format as it goes, and
/// returns the number of slots. Cheaper than [`Slots::new`] then
/// [`Slots::iter`] when each slot is read once.
///
/// # Errors
/// A [`FormatError`] naming the slot and offset where the buffer stops
/// following the format; `each` has seen the slots before it.
#[inline]
pub fn read_slots<'a>(
    bytes: &'a [u8],
    mut each: impl FnMut(Option<&'a [u8]>),
) -> Result<u32, FormatError> {
    let count = read_u32(bytes, 0).ok_or(error(0, 0, "buffer shorter than the slot count"))?;
    let mut pos = 4;
    for slot in 0..count {
        let len = read_u32(bytes, pos).ok_or(error(slot, pos, "truncated slot"))?;
        pos += 4;
        if len == EMPTY_SLOT {
            each(None);
        } else {
            let start = take(bytes, &mut pos, len as usize).ok_or(error(
                slot,
                pos,
                "slot runs past the end of the buffer",
            ))?;
            each(Some(&bytes[start..pos]));
        }
    }
    if pos != bytes.len() {
        return Err(error(count, pos, "trailing bytes after the last slot"));
    }
    Ok(count)
}

/// A validated slots buffer.
#[derive(Debug, Clone, Copy)]
pub struct Slots<'a> {
    bytes: &'a [u8],
    count: u32,
    empty: u32,
}

impl<'a> Slots<'a> {
    /// Checks every length once.
    ///
    /// # Errors
    /// A [`FormatError`] naming the slot and offset where the buffer stops
    /// following the format.
    pub fn new(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let mut empty = 0;
        let count = read_slots(bytes, |slot| empty += u32::from(slot.is_none()))?;
        Ok(Slots {
            bytes,
            count,
            empty,
        })
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when there is no slot.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Number of empty slots.
    pub fn empty_slots(&self) -> usize {
        self.empty as usize
    }

    /// The slots in order; `None` for an empty one.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Option<&'a [u8]>> + 'a {
        let bytes = self.bytes;
        let mut pos = 4;
        (0..self.count).map(move |_| {
            let len = read_u32(bytes, pos).unwrap_or(EMPTY_SLOT);
            pos += 4;
            if len == EMPTY_SLOT {
                return None;
            }
            let start = pos;
            pos += len as usize;
            Some(&bytes[start..pos])
        })
    }
}

/// Builds a slots buffer.
#[derive(Debug, Clone)]
pub struct SlotsWriter {
    buf: Vec<u8>,
    count: u32,
}

impl Default for SlotsWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl SlotsWriter {
    /// No slot yet.
    pub fn new() -> Self {
        Self::with_capacity(64)
    }

    /// No slot yet, room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes.max(4));
        buf.extend_from_slice(&0u32.to_le_bytes());
        SlotsWriter { buf, count: 0 }
    }

    /// Appends a slot (`None`: empty).
    #[inline]
    pub fn push(&mut self, slot: Option<&[u8]>) {
        match slot {
            Some(bytes) => self.push_with(|buf| crate::extend_short(buf, bytes)),
            None => {
                self.buf.extend_from_slice(&EMPTY_SLOT.to_le_bytes());
                self.count += 1;
            }
        }
    }

    /// Appends a slot whose bytes `write` appends to the buffer in place.
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_le_bytes());
        write(&mut self.buf);
        let len = len_u32(self.buf.len() - at - 4);
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.count += 1;
    }

    /// Number of slots written.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when no slot has been written.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished buffer.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[..4].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }

    /// The buffer as [`Self::finish`] would give it, keeping the writer
    /// (to [`Self::clear`] and fill again without a new allocation).
    pub fn bytes(&mut self) -> &[u8] {
        self.buf[..4].copy_from_slice(&self.count.to_le_bytes());
        &self.buf
    }

    /// Removes every slot, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.truncate(4);
        self.count = 0;
    }
}

/// One window that fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FiredWindow<'a> {
    /// First millisecond of the window (inclusive).
    pub start: i64,
    /// End of the window (exclusive).
    pub end: i64,
    /// The key the window belongs to (`None` for a window over all events).
    pub key: Option<&'a [u8]>,
    /// The accumulator (aggregate) or an event batch (whole-window function).
    pub payload: &'a [u8],
}

const WINDOW_HEADER_LEN: usize = 8 + 8 + 4 + 4;

/// A validated buffer of fired windows.
#[derive(Debug, Clone, Copy)]
pub struct FiredWindows<'a> {
    bytes: &'a [u8],
    count: u32,
}

impl<'a> FiredWindows<'a> {
    /// Checks every length once.
    ///
    /// # Errors
    /// A [`FormatError`] naming the window and offset where the buffer stops
    /// following the format.
    pub fn new(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let count =
            read_u32(bytes, 0).ok_or(error(0, 0, "buffer shorter than the window count"))?;
        let mut pos = 4;
        for window in 0..count {
            let at = take(bytes, &mut pos, WINDOW_HEADER_LEN).ok_or(error(
                window,
                pos,
                "truncated window header",
            ))?;
            let key_len = read_u32(bytes, at + 16).unwrap_or(0);
            let payload_len = read_u32(bytes, at + 20).unwrap_or(0);
            if key_len != NO_KEY {
                take(bytes, &mut pos, key_len as usize).ok_or(error(
                    window,
                    pos,
                    "key runs past the end of the buffer",
                ))?;
            }
            take(bytes, &mut pos, payload_len as usize).ok_or(error(
                window,
                pos,
                "payload runs past the end of the buffer",
            ))?;
        }
        if pos != bytes.len() {
            return Err(error(count, pos, "trailing bytes after the last window"));
        }
        Ok(FiredWindows { bytes, count })
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when no window fired.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The windows in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = FiredWindow<'a>> + 'a {
        let bytes = self.bytes;
        let mut pos = 4;
        (0..self.count).map(move |_| {
            let start = read_i64(bytes, pos);
            let end = read_i64(bytes, pos + 8);
            let key_len = read_u32(bytes, pos + 16).unwrap_or(0);
            let payload_len = read_u32(bytes, pos + 20).unwrap_or(0) as usize;
            pos += WINDOW_HEADER_LEN;
            let key = (key_len != NO_KEY).then(|| {
                let k = &bytes[pos..pos + key_len as usize];
                pos += key_len as usize;
                k
            });
            let payload = &bytes[pos..pos + payload_len];
            pos += payload_len;
            FiredWindow {
                start,
                end,
                key,
                payload,
            }
        })
    }
}

/// Builds a buffer of fired windows.
#[derive(Debug, Clone)]
pub struct FiredWriter {
    buf: Vec<u8>,
    count: u32,
}

impl Default for FiredWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl FiredWriter {
    /// No window yet.
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_le_bytes());
        FiredWriter { buf, count: 0 }
    }

    /// Appends a window.
    pub fn push(&mut self, start: i64, end: i64, key: Option<&[u8]>, payload: &[u8]) {
        self.buf.extend_from_slice(&start.to_le_bytes());
        self.buf.extend_from_slice(&end.to_le_bytes());
        let key_len = key.map_or(NO_KEY, |k| len_u32(k.len()));
        self.buf.extend_from_slice(&key_len.to_le_bytes());
        self.buf
            .extend_from_slice(&len_u32(payload.len()).to_le_bytes());
        if let Some(key) = key {
            self.buf.extend_from_slice(key);
        }
        self.buf.extend_from_slice(payload);
        self.count += 1;
    }

    /// Number of windows written.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when no window has been written.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes written so far.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    /// The finished buffer.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[..4].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_truncation_of_fired_windows_is_rejected() {
        let mut w = FiredWriter::new();
        w.push(0, 10, Some(b"k"), b"payload");
        w.push(10, 20, None, b"");
        let bytes = w.finish();
        assert_eq!(FiredWindows::new(&bytes).unwrap().len(), 2);
        for cut in 0..bytes.len() {
            assert!(FiredWindows::new(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn every_truncation_of_slots_is_rejected() {
        let mut w = SlotsWriter::new();
        w.push(Some(b"abc"));
        w.push(None);
        w.push_with(|b| b.extend_from_slice(b"xy"));
        let bytes = w.finish();
        let slots = Slots::new(&bytes).unwrap();
        assert_eq!((slots.len(), slots.empty_slots()), (3, 1));
        let read: Vec<_> = slots.iter().collect();
        assert_eq!(read, [Some(&b"abc"[..]), None, Some(&b"xy"[..])]);
        let mut seen = Vec::new();
        assert_eq!(read_slots(&bytes, |slot| seen.push(slot)), Ok(3));
        assert_eq!(seen, read);
        for cut in 0..bytes.len() {
            assert!(Slots::new(&bytes[..cut]).is_err(), "cut at {cut}");
            // One pass sees the slots before the cut, and then the error.
            let mut seen = Vec::new();
            assert!(read_slots(&bytes[..cut], |s| seen.push(s)).is_err());
            assert!(read.starts_with(&seen), "cut at {cut}: {seen:?}");
        }
    }

    #[test]
    fn a_cleared_slots_writer_writes_what_a_new_one_does() {
        let mut w = SlotsWriter::new();
        w.push(Some(b"old"));
        let mut one = SlotsWriter::new();
        one.push(Some(b"old"));
        assert_eq!(w.bytes(), one.finish());
        w.clear();
        w.push(Some(b"ab"));
        w.push(None);
        let mut fresh = SlotsWriter::new();
        fresh.push(Some(b"ab"));
        fresh.push(None);
        assert_eq!(w.bytes(), fresh.finish());
    }

    #[test]
    fn a_huge_length_is_an_error_not_a_panic() {
        let mut bytes = 1u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&(u32::MAX - 1).to_le_bytes());
        assert!(Slots::new(&bytes).is_err());
    }
}
