//! The buffers of a keyed process call (`weir:operator/keyed-process`).
//!
//! The host groups a batch by key, loads each key's state once, and calls
//! the guest once with all of it; the guest answers with its output events,
//! the new state of every key it changed, and its timer changes.
//!
//! ```text
//! call   := watermark:i64 key_count:u32 key{key_count}
//!           events_len:u32 events:[u8; events_len]      (a batch; every event has a key)
//!           timer_count:u32 fired{timer_count}
//! key    := key_len:u32 key:[u8; key_len] state:slot    (slot as in `window`: 0xFFFF_FFFF = no state)
//! fired  := key_index:u32 domain:u8 time:i64           (domain 0 = event time, 1 = processing time)
//!
//! reply  := events_len:u32 events:[u8; events_len]
//!           update_count:u32 update{update_count}
//!           op_count:u32 op{op_count}
//! update := key_index:u32 state:slot                    (empty slot = clear the key's state)
//! op     := key_index:u32 kind:u8 time:i64             (0 set event timer, 1 delete event timer,
//!                                                       2 set processing timer, 3 delete processing timer)
//! ```
//!
//! Key indexes refer to the call's keys, in order. A key's state is one
//! opaque blob to the host (the SDK keeps value and map state in it).
//!
//! ```
//! use weir_batch::keyed::{Call, CallWriter, Reply, ReplyWriter, TimerOp};
//!
//! let mut call = CallWriter::new(99);
//! call.key(b"card-1", Some(b"state"));
//! let events = weir_batch::BatchWriter::new().finish();
//! let bytes = call.finish(&events, &[(0, 0, 120)]);
//! let call = Call::new(&bytes)?;
//! assert_eq!(call.watermark, 99);
//! assert_eq!(call.keys().next(), Some((&b"card-1"[..], Some(&b"state"[..]))));
//! assert_eq!(call.timers().next(), Some((0, 0, 120)));
//!
//! let mut reply = ReplyWriter::new();
//! reply.update(0, None);
//! reply.op(0, TimerOp::SetEvent, 200);
//! let bytes = reply.finish(&events);
//! let reply = Reply::new(&bytes)?;
//! assert_eq!(reply.updates().next(), Some((0, None)));
//! assert_eq!(reply.ops().next(), Some((0, TimerOp::SetEvent, 200)));
//! # Ok::<(), weir_batch::FormatError>(())
//! ```

use crate::window::EMPTY_SLOT;
use crate::{Batch, FormatError, len_u32, read_u32};

/// A timer change a keyed process function asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerOp {
    /// Fire `on-timer` when the watermark reaches the time.
    SetEvent,
    /// Forget an event-time timer.
    DeleteEvent,
    /// Fire `on-timer` when the wall clock reaches the time (ms since the
    /// epoch).
    SetProcessing,
    /// Forget a processing-time timer.
    DeleteProcessing,
}

impl TimerOp {
    fn code(self) -> u8 {
        match self {
            TimerOp::SetEvent => 0,
            TimerOp::DeleteEvent => 1,
            TimerOp::SetProcessing => 2,
            TimerOp::DeleteProcessing => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => TimerOp::SetEvent,
            1 => TimerOp::DeleteEvent,
            2 => TimerOp::SetProcessing,
            3 => TimerOp::DeleteProcessing,
            _ => return None,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: &'static str) -> FormatError {
        FormatError {
            event: 0,
            offset: self.pos,
            reason,
        }
    }
    fn u32(&mut self) -> Result<u32, FormatError> {
        let v = read_u32(self.bytes, self.pos).ok_or_else(|| self.err("truncated"))?;
        self.pos += 4;
        Ok(v)
    }
    fn u8(&mut self) -> Result<u8, FormatError> {
        let v = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| self.err("truncated"))?;
        self.pos += 1;
        Ok(v)
    }
    fn i64(&mut self) -> Result<i64, FormatError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }
    fn take(&mut self, len: usize) -> Result<&'a [u8], FormatError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| self.err("length runs past the end of the buffer"))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn slot(&mut self) -> Result<Option<&'a [u8]>, FormatError> {
        match self.u32()? {
            EMPTY_SLOT => Ok(None),
            len => self.take(len as usize).map(Some),
        }
    }
    fn batch(&mut self) -> Result<&'a [u8], FormatError> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        Batch::new(bytes)?;
        Ok(bytes)
    }
}

fn put_slot(buf: &mut Vec<u8>, slot: Option<&[u8]>) {
    match slot {
        Some(bytes) => {
            buf.extend_from_slice(&len_u32(bytes.len()).to_le_bytes());
            buf.extend_from_slice(bytes);
        }
        None => buf.extend_from_slice(&EMPTY_SLOT.to_le_bytes()),
    }
}

/// A validated call buffer.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// The operator's current watermark.
    pub watermark: i64,
    keys: Vec<(&'a [u8], Option<&'a [u8]>)>,
    /// The events, in the batch format.
    pub events: &'a [u8],
    timers: Vec<(u32, u8, i64)>,
}

impl<'a> Call<'a> {
    /// Reads a call buffer.
    ///
    /// # Errors
    /// A buffer that does not follow the format.
    pub fn new(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let mut r = Reader { bytes, pos: 0 };
        let watermark = r.i64()?;
        let count = r.u32()?;
        let mut keys = Vec::with_capacity(count.min(1 << 16) as usize);
        for _ in 0..count {
            let len = r.u32()? as usize;
            let key = r.take(len)?;
            keys.push((key, r.slot()?));
        }
        let events = r.batch()?;
        let count = r.u32()?;
        let mut timers = Vec::with_capacity(count.min(1 << 16) as usize);
        for _ in 0..count {
            let index = r.u32()?;
            if index as usize >= keys.len() {
                return Err(r.err("timer names a key that is not in the call"));
            }
            timers.push((index, r.u8()?, r.i64()?));
        }
        if r.pos != bytes.len() {
            return Err(r.err("trailing bytes after the call"));
        }
        Ok(Call {
            watermark,
            keys,
            events,
            timers,
        })
    }

    /// The keys with their state, in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = (&'a [u8], Option<&'a [u8]>)> + '_ {
        self.keys.iter().copied()
    }

    /// Fired timers: `(key index, domain, time)`; domain 0 is event time,
    /// 1 processing time.
    pub fn timers(&self) -> impl ExactSizeIterator<Item = (u32, u8, i64)> + '_ {
        self.timers.iter().copied()
    }
}

/// Builds a call buffer (the host's side).
#[derive(Debug, Clone)]
pub struct CallWriter {
    buf: Vec<u8>,
    count: u32,
}

impl CallWriter {
    /// A call at `watermark`, no key yet.
    pub fn new(watermark: i64) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&watermark.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        CallWriter { buf, count: 0 }
    }

    /// Adds a key and its state; returns its index.
    pub fn key(&mut self, key: &[u8], state: Option<&[u8]>) -> u32 {
        self.buf
            .extend_from_slice(&len_u32(key.len()).to_le_bytes());
        self.buf.extend_from_slice(key);
        put_slot(&mut self.buf, state);
        self.count += 1;
        self.count - 1
    }

    /// Finishes with the events (a batch) and fired timers `(key index,
    /// domain, time)`.
    pub fn finish(mut self, events: &[u8], timers: &[(u32, u8, i64)]) -> Vec<u8> {
        self.buf[8..12].copy_from_slice(&self.count.to_le_bytes());
        self.buf
            .extend_from_slice(&len_u32(events.len()).to_le_bytes());
        self.buf.extend_from_slice(events);
        self.buf
            .extend_from_slice(&len_u32(timers.len()).to_le_bytes());
        for (index, domain, time) in timers {
            self.buf.extend_from_slice(&index.to_le_bytes());
            self.buf.push(*domain);
            self.buf.extend_from_slice(&time.to_le_bytes());
        }
        self.buf
    }
}

/// A validated reply buffer.
#[derive(Debug, Clone)]
pub struct Reply<'a> {
    /// Output events, in the batch format.
    pub events: &'a [u8],
    updates: Vec<(u32, Option<&'a [u8]>)>,
    ops: Vec<(u32, TimerOp, i64)>,
}

impl<'a> Reply<'a> {
    /// Reads a reply buffer.
    ///
    /// # Errors
    /// A buffer that does not follow the format.
    pub fn new(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let mut r = Reader { bytes, pos: 0 };
        let events = r.batch()?;
        let count = r.u32()?;
        let mut updates = Vec::with_capacity(count.min(1 << 16) as usize);
        for _ in 0..count {
            let index = r.u32()?;
            updates.push((index, r.slot()?));
        }
        let count = r.u32()?;
        let mut ops = Vec::with_capacity(count.min(1 << 16) as usize);
        for _ in 0..count {
            let index = r.u32()?;
            let op = TimerOp::from_code(r.u8()?).ok_or_else(|| r.err("unknown timer op"))?;
            ops.push((index, op, r.i64()?));
        }
        if r.pos != bytes.len() {
            return Err(r.err("trailing bytes after the reply"));
        }
        Ok(Reply {
            events,
            updates,
            ops,
        })
    }

    /// State updates: `(key index, new state)`; `None` clears the key.
    pub fn updates(&self) -> impl ExactSizeIterator<Item = (u32, Option<&'a [u8]>)> + '_ {
        self.updates.iter().copied()
    }

    /// Timer changes: `(key index, op, time)`.
    pub fn ops(&self) -> impl ExactSizeIterator<Item = (u32, TimerOp, i64)> + '_ {
        self.ops.iter().copied()
    }
}

/// Builds a reply buffer (the guest's side).
#[derive(Debug, Clone, Default)]
pub struct ReplyWriter {
    updates: Vec<u8>,
    update_count: u32,
    ops: Vec<u8>,
    op_count: u32,
}

impl ReplyWriter {
    /// An empty reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or with `None` clears) the state of key `index`.
    pub fn update(&mut self, index: u32, state: Option<&[u8]>) {
        self.updates.extend_from_slice(&index.to_le_bytes());
        put_slot(&mut self.updates, state);
        self.update_count += 1;
    }

    /// Asks for a timer change for key `index`.
    pub fn op(&mut self, index: u32, op: TimerOp, time: i64) {
        self.ops.extend_from_slice(&index.to_le_bytes());
        self.ops.push(op.code());
        self.ops.extend_from_slice(&time.to_le_bytes());
        self.op_count += 1;
    }

    /// Finishes with the output events (a batch).
    pub fn finish(self, events: &[u8]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(events.len() + self.updates.len() + self.ops.len() + 12);
        buf.extend_from_slice(&len_u32(events.len()).to_le_bytes());
        buf.extend_from_slice(events);
        buf.extend_from_slice(&self.update_count.to_le_bytes());
        buf.extend_from_slice(&self.updates);
        buf.extend_from_slice(&self.op_count.to_le_bytes());
        buf.extend_from_slice(&self.ops);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BatchWriter;

    #[test]
    fn every_truncation_of_a_call_or_reply_is_rejected() {
        let mut events = BatchWriter::new();
        events.push(5, Some(b"k"), b"v", &[]);
        let events = events.finish();
        let mut call = CallWriter::new(1);
        call.key(b"k", None);
        let call = call.finish(&events, &[(0, 1, 9)]);
        assert!(Call::new(&call).is_ok());
        for cut in 0..call.len() {
            assert!(Call::new(&call[..cut]).is_err(), "call cut at {cut}");
        }
        let mut reply = ReplyWriter::new();
        reply.update(0, Some(b"s"));
        reply.op(0, TimerOp::DeleteProcessing, 3);
        let reply = reply.finish(&events);
        assert_eq!(
            Reply::new(&reply).unwrap().updates().next(),
            Some((0, Some(&b"s"[..])))
        );
        for cut in 0..reply.len() {
            assert!(Reply::new(&reply[..cut]).is_err(), "reply cut at {cut}");
        }
    }

    #[test]
    fn a_timer_for_an_unknown_key_is_rejected() {
        let events = BatchWriter::new().finish();
        let call = CallWriter::new(0).finish(&events, &[(3, 0, 1)]);
        assert!(Call::new(&call).is_err());
    }
}
