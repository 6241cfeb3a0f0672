//! The keyed process operator of one subtask: per-key state in host
//! storage, event-time and processing-time timers, and state TTL in event
//! time.
//!
//! Per batch it loads the state of each distinct key once and makes **one**
//! call with all of it (`weir_batch::keyed` formats); the reply's state
//! updates and timer changes are applied only when the whole call
//! succeeded, so a failing guest never leaves a batch half applied.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use foldhash::HashMap;

use weir_batch::keyed::{CallWriter, Reply, TimerOp};
use weir_batch::{Batch, FormatError};

use crate::keys::key_group;
use crate::operator::{FailureKind, OperatorFailure};
use crate::state::{Deferred, StateError, StateStore};
use crate::time::BEFORE_TIME;
use crate::window::WindowError;

/// The user's keyed logic: one call buffer in, one reply buffer out.
/// Mirrors the WIT `keyed-process` interface.
pub trait KeyedFunction: Send {
    /// The operator's name from the pipeline file.
    fn name(&self) -> &str;

    /// Handles a call (keys with state, events, fired timers).
    ///
    /// # Errors
    /// The function failed; nothing of the call is applied.
    fn call(&mut self, call: &[u8]) -> Result<Vec<u8>, OperatorFailure>;
}

/// Keyed state and timers over host storage for one subtask.
pub struct KeyedProcessOperator {
    function: Box<dyn KeyedFunction>,
    store: Box<dyn StateStore>,
    max_parallelism: u16,
    ttl: Option<i64>,
    watermark: i64,
    event_timers: BTreeSet<(i64, Vec<u8>)>,
    processing_timers: BTreeSet<(i64, Vec<u8>)>,
    /// Keys with state and the event time of their last write (TTL).
    written: HashMap<Vec<u8>, i64>,
    expiry: BTreeSet<(i64, Vec<u8>)>,
    state_key: Vec<u8>,
}

/// What a checkpoint holds of a keyed subtask besides its store, as
/// restored…
#[derive(Deserialize)]
struct KeyedSnapshot {
    watermark: i64,
    event_timers: Vec<(i64, Vec<u8>)>,
    processing_timers: Vec<(i64, Vec<u8>)>,
    written: Vec<(Vec<u8>, i64)>,
}

/// …and as written, borrowed from the operator (the same encoding: sets
/// and maps are sequences in postcard).
#[derive(Serialize)]
struct KeyedSnapshotRef<'a> {
    watermark: i64,
    event_timers: &'a BTreeSet<(i64, Vec<u8>)>,
    processing_timers: &'a BTreeSet<(i64, Vec<u8>)>,
    written: &'a HashMap<Vec<u8>, i64>,
}

impl KeyedProcessOperator {
    /// Takes the subtask's snapshot for `dir`: the store's copy under
    /// `state/`, timers and last-write times in `timers.bin`. Returns the
    /// writing left to do off the stream.
    ///
    /// # Errors
    /// The store cannot take its copy.
    pub fn checkpoint(&mut self, dir: &Path) -> Result<Deferred, StateError> {
        let timers = KeyedSnapshotRef {
            watermark: self.watermark,
            event_timers: &self.event_timers,
            processing_timers: &self.processing_timers,
            written: &self.written,
        };
        crate::checkpoint::snapshot_subtask(dir, self.store.as_mut(), &timers)
    }

    /// Takes the timers, last-write times and watermark of the key groups
    /// `groups` from the subtask snapshots in `from`.
    ///
    /// # Errors
    /// A snapshot is missing or does not decode.
    pub fn restore(
        &mut self,
        from: &[PathBuf],
        groups: &RangeInclusive<u16>,
    ) -> Result<(), StateError> {
        let max = self.max_parallelism;
        let owned = |key: &[u8]| groups.contains(&key_group(key, max));
        let snapshots: Vec<KeyedSnapshot> = crate::checkpoint::read_subtasks(from)?;
        if let Some(w) = snapshots.iter().map(|s| s.watermark).min() {
            self.watermark = self.watermark.max(w);
        }
        for snapshot in snapshots {
            let timers = |t: Vec<(i64, Vec<u8>)>| t.into_iter().filter(|(_, k)| owned(k));
            self.event_timers.extend(timers(snapshot.event_timers));
            self.processing_timers
                .extend(timers(snapshot.processing_timers));
            for (key, at) in snapshot.written {
                if owned(&key) {
                    self.note_write(&key, at);
                }
            }
        }
        Ok(())
    }

    /// An operator running `function`, keeping state in `store`; with a
    /// TTL, a key's state is dropped once the watermark passes its last
    /// write plus `state_ttl_ms`.
    pub fn new(
        function: Box<dyn KeyedFunction>,
        store: Box<dyn StateStore>,
        max_parallelism: u16,
        state_ttl_ms: Option<u64>,
    ) -> Self {
        KeyedProcessOperator {
            function,
            store,
            max_parallelism,
            ttl: state_ttl_ms.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
            watermark: BEFORE_TIME,
            event_timers: BTreeSet::new(),
            processing_timers: BTreeSet::new(),
            written: HashMap::default(),
            expiry: BTreeSet::new(),
            state_key: Vec::with_capacity(64),
        }
    }

    /// The operator's name.
    pub fn name(&self) -> &str {
        self.function.name()
    }

    /// Number of keys holding state.
    pub fn keys_with_state(&self) -> usize {
        self.written.len()
    }

    /// Number of pending timers (both domains).
    pub fn pending_timers(&self) -> usize {
        self.event_timers.len() + self.processing_timers.len()
    }

    fn fill_state_key(&mut self, key: &[u8]) {
        self.state_key.clear();
        self.state_key
            .extend_from_slice(&key_group(key, self.max_parallelism).to_be_bytes());
        self.state_key.extend_from_slice(key);
    }

    /// Runs a batch of keyed events; returns the output events (a batch).
    ///
    /// # Errors
    /// The function or the state backend failed; for a function failure
    /// `event_index` names the input event and nothing was applied.
    pub fn process(&mut self, bytes: &[u8]) -> Result<Vec<u8>, WindowError> {
        let batch = Batch::new(bytes).map_err(|e| malformed(self.name(), &e))?;
        let mut keys: Vec<&[u8]> = Vec::new();
        let mut seen: HashMap<&[u8], (usize, i64)> = HashMap::default();
        for (i, event) in batch.iter().enumerate() {
            let key = event.key.ok_or_else(|| {
                WindowError::Function(OperatorFailure {
                    kind: FailureKind::BadOutput,
                    message: "a keyed process operator needs key_by".into(),
                    event_index: Some(i),
                    output_before: Vec::new(),
                })
            })?;
            let entry = seen.entry(key).or_insert_with(|| {
                keys.push(key);
                (keys.len() - 1, event.timestamp)
            });
            entry.1 = entry.1.max(event.timestamp);
        }
        let times: Vec<i64> = keys.iter().map(|k| seen[k].1).collect();
        self.call(&keys, bytes, &[], &times)
    }

    /// Advances event time: fires due event-time timers (one call), then
    /// drops state whose TTL has passed. Returns the output events.
    ///
    /// # Errors
    /// The function or the state backend failed.
    pub fn advance(&mut self, watermark: i64) -> Result<Vec<u8>, WindowError> {
        if watermark <= self.watermark {
            return Ok(empty_batch());
        }
        self.watermark = watermark;
        let mut due = Vec::new();
        while let Some(first) = self.event_timers.first() {
            if first.0 > watermark {
                break;
            }
            if let Some(timer) = self.event_timers.pop_first() {
                due.push(timer);
            }
        }
        let output = self.fire(&due, 0)?;
        while let Some(first) = self.expiry.first() {
            if first.0 > watermark {
                break;
            }
            if let Some((_, key)) = self.expiry.pop_first() {
                self.fill_state_key(&key);
                self.store.delete(&self.state_key)?;
                self.written.remove(&key);
            }
        }
        Ok(output)
    }

    /// Fires processing-time timers due at wall-clock `now_ms`.
    ///
    /// # Errors
    /// The function or the state backend failed.
    pub fn tick(&mut self, now_ms: i64) -> Result<Vec<u8>, WindowError> {
        let mut due = Vec::new();
        while let Some(first) = self.processing_timers.first() {
            if first.0 > now_ms {
                break;
            }
            if let Some(timer) = self.processing_timers.pop_first() {
                due.push(timer);
            }
        }
        self.fire(&due, 1)
    }

    fn fire(&mut self, due: &[(i64, Vec<u8>)], domain: u8) -> Result<Vec<u8>, WindowError> {
        if due.is_empty() {
            return Ok(empty_batch());
        }
        let mut keys: Vec<&[u8]> = Vec::new();
        let mut index: HashMap<&[u8], u32> = HashMap::default();
        let mut fired = Vec::with_capacity(due.len());
        let mut times: Vec<i64> = Vec::new();
        for (time, key) in due {
            let i = *index.entry(key.as_slice()).or_insert_with(|| {
                keys.push(key.as_slice());
                times.push(i64::MIN);
                (keys.len() - 1) as u32
            });
            // A timer's writes happen at the timer's event time (for TTL).
            times[i as usize] =
                times[i as usize].max(if domain == 0 { *time } else { self.watermark });
            fired.push((i, domain, *time));
        }
        self.call(&keys, &empty_batch(), &fired, &times)
    }

    /// One call: load state, call, apply. `times[i]` is the event time of
    /// writes to key `i` (for TTL).
    fn call(
        &mut self,
        keys: &[&[u8]],
        events: &[u8],
        fired: &[(u32, u8, i64)],
        times: &[i64],
    ) -> Result<Vec<u8>, WindowError> {
        let mut call = CallWriter::new(self.watermark);
        for key in keys {
            let expired = self.is_expired(key);
            self.fill_state_key(key);
            let state = if expired {
                None
            } else {
                self.store.get(&self.state_key)?
            };
            call.key(key, state);
        }
        let reply_bytes = self.function.call(&call.finish(events, fired))?;
        let reply = Reply::new(&reply_bytes).map_err(|e| bad_reply(e.to_string()))?;
        Batch::new(reply.events).map_err(|e| bad_reply(e.to_string()))?;
        // Validate every index before applying anything.
        let n = keys.len() as u32;
        if reply.updates().any(|(i, _)| i >= n) || reply.ops().any(|(i, _, _)| i >= n) {
            return Err(bad_reply("names a key that was not in the call".into()));
        }
        for (i, state) in reply.updates() {
            let key = keys[i as usize];
            self.fill_state_key(key);
            match state {
                Some(bytes) => {
                    self.store.put(&self.state_key, bytes)?;
                    self.note_write(key, times[i as usize]);
                }
                None => {
                    self.store.delete(&self.state_key)?;
                    if let Some(old) = self.written.remove(key)
                        && let Some(ttl) = self.ttl
                    {
                        self.expiry.remove(&(old.saturating_add(ttl), key.to_vec()));
                    }
                }
            }
        }
        for (i, op, time) in reply.ops() {
            let key = keys[i as usize].to_vec();
            match op {
                TimerOp::SetEvent => self.event_timers.insert((time, key)),
                TimerOp::DeleteEvent => self.event_timers.remove(&(time, key)),
                TimerOp::SetProcessing => self.processing_timers.insert((time, key)),
                TimerOp::DeleteProcessing => self.processing_timers.remove(&(time, key)),
            };
        }
        Ok(reply.events.to_vec())
    }

    fn is_expired(&self, key: &[u8]) -> bool {
        match (self.ttl, self.written.get(key)) {
            (Some(ttl), Some(at)) => at.saturating_add(ttl) <= self.watermark,
            _ => false,
        }
    }

    fn note_write(&mut self, key: &[u8], at: i64) {
        let Some(ttl) = self.ttl else {
            self.written.insert(key.to_vec(), at);
            return;
        };
        if let Some(old) = self.written.insert(key.to_vec(), at) {
            self.expiry.remove(&(old.saturating_add(ttl), key.to_vec()));
        }
        self.expiry.insert((at.saturating_add(ttl), key.to_vec()));
    }
}

fn empty_batch() -> Vec<u8> {
    0u32.to_le_bytes().to_vec()
}

fn bad_reply(message: String) -> WindowError {
    WindowError::Function(OperatorFailure {
        kind: FailureKind::BadOutput,
        message: format!("malformed reply: {message}"),
        event_index: None,
        output_before: Vec::new(),
    })
}

fn malformed(name: &str, e: &FormatError) -> WindowError {
    WindowError::Function(OperatorFailure {
        kind: FailureKind::BadOutput,
        message: format!("`{name}` got a malformed batch: {e}"),
        event_index: None,
        output_before: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;
    use weir_batch::BatchWriter;
    use weir_batch::keyed::{Call, ReplyWriter};

    #[test]
    fn a_snapshot_written_from_borrowed_sets_reads_back_as_lists() {
        let event_timers: BTreeSet<(i64, Vec<u8>)> =
            [(5, b"a".to_vec()), (9, b"b".to_vec())].into();
        let processing_timers: BTreeSet<(i64, Vec<u8>)> = [(-1, b"c".to_vec())].into();
        let mut written = HashMap::default();
        written.insert(b"a".to_vec(), 42i64);
        let bytes = postcard::to_stdvec(&KeyedSnapshotRef {
            watermark: 7,
            event_timers: &event_timers,
            processing_timers: &processing_timers,
            written: &written,
        })
        .unwrap();
        let back: KeyedSnapshot = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.watermark, 7);
        assert_eq!(
            back.event_timers,
            event_timers.into_iter().collect::<Vec<_>>()
        );
        assert_eq!(back.processing_timers, [(-1, b"c".to_vec())]);
        assert_eq!(back.written, [(b"a".to_vec(), 42)]);
    }

    /// Counts events per key (state: u64 LE); on an event, sets an
    /// event-time timer at ts + 10 that emits "k:timeout" and clears the
    /// key. Fails on a value `boom`.
    struct Counter;

    impl KeyedFunction for Counter {
        fn name(&self) -> &str {
            "counter"
        }
        fn call(&mut self, bytes: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
            let call = Call::new(bytes).unwrap();
            let keys: Vec<_> = call.keys().collect();
            let mut counts: Vec<u64> = keys
                .iter()
                .map(|(_, s)| s.map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap())))
                .collect();
            let mut touched = vec![false; keys.len()];
            let mut reply = ReplyWriter::new();
            let mut out = BatchWriter::new();
            for (i, e) in Batch::new(call.events).unwrap().iter().enumerate() {
                if e.value == b"boom" {
                    return Err(OperatorFailure {
                        kind: FailureKind::Trap,
                        message: "boom".into(),
                        event_index: Some(i),
                        output_before: Vec::new(),
                    });
                }
                let k = keys.iter().position(|(k, _)| Some(*k) == e.key).unwrap();
                counts[k] += 1;
                touched[k] = true;
                reply.op(k as u32, TimerOp::SetEvent, e.timestamp + 10);
                let text = format!("{}:{}", String::from_utf8_lossy(keys[k].0), counts[k]);
                out.push(e.timestamp, e.key, text.as_bytes(), &[]);
            }
            for (k, _, time) in call.timers() {
                let text = format!(
                    "{}:timeout@{time}",
                    String::from_utf8_lossy(keys[k as usize].0)
                );
                out.push(time, Some(keys[k as usize].0), text.as_bytes(), &[]);
                reply.update(k, None);
            }
            for (k, t) in touched.iter().enumerate().filter(|(_, t)| **t) {
                let _ = t;
                reply.update(k as u32, Some(&counts[k].to_le_bytes()));
            }
            Ok(reply.finish(&out.finish()))
        }
    }

    fn batch(events: &[(&str, i64, &str)]) -> Vec<u8> {
        let mut w = BatchWriter::new();
        for (k, ts, v) in events {
            w.push(*ts, Some(k.as_bytes()), v.as_bytes(), &[]);
        }
        w.finish()
    }

    fn values(bytes: &[u8]) -> Vec<String> {
        Batch::new(bytes)
            .unwrap()
            .iter()
            .map(|e| String::from_utf8_lossy(e.value).into_owned())
            .collect()
    }

    fn operator(ttl: Option<u64>) -> KeyedProcessOperator {
        KeyedProcessOperator::new(
            Box::new(Counter),
            Box::new(MemoryStore::default()),
            128,
            ttl,
        )
    }

    #[test]
    fn state_persists_across_batches_and_timers_fire_on_the_watermark() {
        let mut op = operator(None);
        assert_eq!(
            values(
                &op.process(&batch(&[("a", 1, ""), ("b", 2, ""), ("a", 3, "")]))
                    .unwrap()
            ),
            ["a:1", "b:1", "a:2"]
        );
        assert_eq!(
            values(&op.process(&batch(&[("a", 4, "")])).unwrap()),
            ["a:3"]
        );
        assert_eq!(op.pending_timers(), 4);
        // Timers at 11, 12, 13, 14: the watermark 12 fires a@11 and b@12.
        assert_eq!(
            values(&op.advance(12).unwrap()),
            ["a:timeout@11", "b:timeout@12"]
        );
        assert_eq!(op.keys_with_state(), 0, "the timers cleared both keys");
        assert_eq!(
            values(&op.process(&batch(&[("a", 20, "")])).unwrap()),
            ["a:1"]
        );
    }

    #[test]
    fn a_failing_call_applies_nothing() {
        let mut op = operator(None);
        op.process(&batch(&[("a", 1, "")])).unwrap();
        let err = op
            .process(&batch(&[("a", 2, ""), ("a", 3, "boom")]))
            .unwrap_err();
        match err {
            WindowError::Function(f) => assert_eq!(f.event_index, Some(1)),
            other => panic!("{other}"),
        }
        assert_eq!(op.pending_timers(), 1, "no timer of the failed batch");
        assert_eq!(
            values(&op.process(&batch(&[("a", 4, "")])).unwrap()),
            ["a:2"]
        );
    }

    #[test]
    fn processing_time_timers_fire_on_the_wall_clock_tick() {
        /// Sets a processing-time timer at 1000 for each event's key; the
        /// timer emits "KEY:tick@TIME".
        struct Ticker;
        impl KeyedFunction for Ticker {
            fn name(&self) -> &str {
                "ticker"
            }
            fn call(&mut self, bytes: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
                let call = Call::new(bytes).unwrap();
                let keys: Vec<_> = call.keys().map(|(k, _)| k).collect();
                let mut reply = ReplyWriter::new();
                for _event in Batch::new(call.events).unwrap().iter() {
                    reply.op(0, TimerOp::SetProcessing, 1000);
                }
                let mut out = BatchWriter::new();
                for (k, domain, time) in call.timers() {
                    assert_eq!(domain, 1, "a processing-time timer");
                    let text = format!("{}:tick@{time}", String::from_utf8_lossy(keys[k as usize]));
                    out.push(0, None, text.as_bytes(), &[]);
                }
                Ok(reply.finish(&out.finish()))
            }
        }
        let mut op = KeyedProcessOperator::new(
            Box::new(Ticker),
            Box::new(MemoryStore::default()),
            128,
            None,
        );
        op.process(&batch(&[("a", 1, "")])).unwrap();
        // Event time does not fire it; the wall clock does, once.
        assert!(values(&op.advance(i64::MAX).unwrap()).is_empty());
        assert!(values(&op.tick(999).unwrap()).is_empty());
        assert_eq!(values(&op.tick(1000).unwrap()), ["a:tick@1000"]);
        assert!(values(&op.tick(5000).unwrap()).is_empty());
    }

    #[test]
    fn state_expires_in_event_time() {
        struct NoTimers(Counter);
        impl KeyedFunction for NoTimers {
            fn name(&self) -> &str {
                "no-timers"
            }
            fn call(&mut self, bytes: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
                // The counter's reply without its timer ops.
                let reply = self.0.call(bytes)?;
                let r = Reply::new(&reply).unwrap();
                let mut w = ReplyWriter::new();
                for (i, s) in r.updates() {
                    w.update(i, s);
                }
                Ok(w.finish(r.events))
            }
        }
        let mut op = KeyedProcessOperator::new(
            Box::new(NoTimers(Counter)),
            Box::new(MemoryStore::default()),
            128,
            Some(100),
        );
        op.process(&batch(&[("a", 1_000, "")])).unwrap();
        op.advance(1_050).unwrap();
        assert_eq!(
            values(&op.process(&batch(&[("a", 1_060, "")])).unwrap()),
            ["a:2"]
        );
        // Last write at 1060: expired once the watermark reaches 1160.
        op.advance(1_160).unwrap();
        assert_eq!(op.keys_with_state(), 0);
        assert_eq!(
            values(&op.process(&batch(&[("a", 1_170, "")])).unwrap()),
            ["a:1"]
        );
    }
}
