//! Two-phase aggregation, the first phase: a sender (a source or a
//! subtask) feeding a window stage of several subtasks folds its own events
//! into accumulators per (key, slice) before they cross to another thread,
//! and sends the accumulators instead of the events — Flink's local/global
//! aggregation (`table.optimizer.agg-phase-strategy`).
//!
//! The second phase is the window subtask owning the key: it merges what
//! each sender hands it into its state with the function's `merge`
//! (`WindowOperator::merge_partials`) and fires windows as before. For a
//! count per auction over 10 000 auctions, a 10 s slice of 1 M events
//! crosses as 10 000 accumulators.
//!
//! Only events the stage cannot yet treat as late are folded here: a
//! slice is held while the sender's watermark has not passed its end.
//! Everything a watermark closes is sent before that watermark, so the
//! subtask has merged a slice before any window holding it fires, and no
//! accumulator can arrive late. An event whose slice the sender's
//! watermark has passed goes on as an event, so the subtask decides on
//! its lateness and a late one reaches the late-data sink as itself.
//! Barriers and the end of input send everything held, so a checkpoint
//! never has state in a sender. A sender that goes idle sends what it
//! holds and stops folding for good: while it is idle, the stage's
//! watermark moves without it, and only the subtask can tell what is late.

use foldhash::HashMap;
use weir_batch::window::{Slots, SlotsWriter};

use super::{Slicing, Window, WindowError, WindowFunction};
use crate::keys::BatchKeys;
use crate::operator::{FailureKind, OperatorFailure};
use crate::time::BEFORE_TIME;

/// Bytes of keys and accumulators a sender holds before it sends them all
/// early (each is on time, so early is only less folding).
const BUDGET: usize = 16 << 20;

/// What a map entry costs besides its key and accumulator bytes, about.
const ENTRY_OVERHEAD: usize = 48;

/// One sender's first phase for one window stage.
pub struct LocalAggregate {
    slicing: Slicing,
    function: Box<dyn WindowFunction>,
    /// Open slices in time order, each with its keys' accumulators.
    open: Vec<(Window, HashMap<Box<[u8]>, Vec<u8>>)>,
    /// Bytes held in `open`, about.
    held: usize,
    /// The last watermark the sender sent.
    watermark: i64,
    /// Set once the sender went idle: events go on as events.
    passing: bool,
    /// The events of the batch at hand taken so far: index and slice…
    taken: Vec<(u32, Window)>,
    /// …and key.
    keys: BatchKeys,
}

impl LocalAggregate {
    pub(super) fn new(slicing: Slicing, function: Box<dyn WindowFunction>) -> Self {
        LocalAggregate {
            slicing,
            function,
            open: Vec::new(),
            held: 0,
            watermark: BEFORE_TIME,
            passing: false,
            taken: Vec::new(),
            keys: BatchKeys::default(),
        }
    }

    /// The window operator's name.
    pub fn name(&self) -> &str {
        self.function.name()
    }

    /// Takes event `index` of the batch at hand, at `timestamp` with
    /// `key`, to fold into its slice when the sender's watermark has not
    /// passed that slice. `false`: send the event on as it is.
    pub fn take(&mut self, index: usize, timestamp: i64, key: &[u8]) -> bool {
        let slice = self.slicing.slice_of(timestamp);
        if self.passing || slice.max_timestamp() <= self.watermark {
            return false;
        }
        let Ok(index) = u32::try_from(index) else {
            return false;
        };
        self.taken.push((index, slice));
        self.keys.push(key);
        true
    }

    /// Folds the events taken from `bytes` (the batch at hand) into their
    /// accumulators: one `add` call for the batch.
    ///
    /// # Errors
    /// The function failed or returned malformed accumulators. The
    /// pipeline stops: what this sender held is lost with it, and the
    /// restart replays it from the last checkpoint.
    pub fn add_taken(&mut self, bytes: &[u8]) -> Result<(), WindowError> {
        let taken = std::mem::take(&mut self.taken);
        let keys = std::mem::take(&mut self.keys);
        let outcome = self.add(bytes, &taken, &keys);
        // The buffers are kept for the next batch.
        self.taken = taken;
        self.keys = keys;
        self.taken.clear();
        self.keys.clear();
        outcome
    }

    fn add(
        &mut self,
        bytes: &[u8],
        taken: &[(u32, Window)],
        keys: &BatchKeys,
    ) -> Result<(), WindowError> {
        if taken.is_empty() {
            return Ok(());
        }
        // Group the events by (slice, key).
        let mut index_of: HashMap<(i64, &[u8]), u32> = HashMap::default();
        index_of.reserve(taken.len());
        let mut groups: Vec<(Window, &[u8])> = Vec::with_capacity(taken.len());
        let mut assignments: Vec<u32> = Vec::with_capacity(taken.len() * 2);
        for ((event, slice), key) in taken.iter().zip(keys.iter()) {
            let group = *index_of.entry((slice.start, key)).or_insert_with(|| {
                groups.push((*slice, key));
                (groups.len() - 1) as u32
            });
            assignments.extend_from_slice(&[*event, group]);
        }
        let mut slots = SlotsWriter::with_capacity(groups.len() * 16);
        for (slice, key) in &groups {
            let held = self
                .open
                .iter()
                .find(|(open, _)| open == slice)
                .and_then(|(_, accs)| accs.get(*key));
            slots.push(held.map(Vec::as_slice));
        }
        let updated = self.function.add(&slots.finish(), bytes, &assignments)?;
        let updated = Slots::new(&updated)
            .ok()
            .filter(|s| s.len() == groups.len())
            .ok_or_else(|| {
                malformed(format!(
                    "`add` must return {} accumulators in the slots format",
                    groups.len()
                ))
            })?;
        for ((slice, key), acc) in groups.iter().zip(updated.iter()) {
            let acc = acc.ok_or_else(|| malformed("`add` returned an empty slot".into()))?;
            let accs = self.slice_mut(*slice);
            let (added, removed) = match accs.get_mut(*key) {
                Some(held) => {
                    let removed = held.len();
                    held.clear();
                    held.extend_from_slice(acc);
                    (acc.len(), removed)
                }
                None => {
                    accs.insert((*key).into(), acc.to_vec());
                    (key.len() + acc.len() + ENTRY_OVERHEAD, 0)
                }
            };
            self.held = (self.held + added).saturating_sub(removed);
        }
        Ok(())
    }

    /// The accumulators of `slice`, opened if new.
    fn slice_mut(&mut self, slice: Window) -> &mut HashMap<Box<[u8]>, Vec<u8>> {
        let at = match self.open.binary_search_by_key(&slice, |(open, _)| *open) {
            Ok(at) => at,
            Err(at) => {
                self.open.insert(at, (slice, HashMap::default()));
                at
            }
        };
        &mut self.open[at].1
    }

    /// Hands `each` the slice, key and accumulator of everything held for
    /// slices that end at or before `watermark` (all of it at the end of
    /// time), and forgets them.
    pub fn drain(&mut self, watermark: i64, mut each: impl FnMut(&Window, &[u8], &[u8])) {
        let closed = self
            .open
            .iter()
            .take_while(|(slice, _)| slice.max_timestamp() <= watermark)
            .count();
        for (slice, accs) in self.open.drain(..closed) {
            for (key, acc) in &accs {
                self.held = self
                    .held
                    .saturating_sub(key.len() + acc.len() + ENTRY_OVERHEAD);
                each(&slice, key, acc);
            }
        }
    }

    /// Whether the sender should send everything it holds now.
    pub fn over_budget(&self) -> bool {
        self.held > BUDGET
    }

    /// Notes the watermark the sender is about to send (after draining
    /// what it closes).
    pub fn advance(&mut self, watermark: i64) {
        self.watermark = self.watermark.max(watermark);
    }

    /// The sender went idle: from now on its events go on as events.
    pub fn stop_folding(&mut self) {
        self.passing = true;
    }
}

fn malformed(message: String) -> WindowError {
    WindowError::Function(OperatorFailure {
        kind: FailureKind::BadOutput,
        message,
        event_index: None,
        output_before: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::WindowSpec;
    use weir_batch::BatchWriter;

    /// Counts as 8 little-endian bytes.
    struct Count;

    impl WindowFunction for Count {
        fn name(&self) -> &str {
            "count"
        }
        fn kind(&self) -> crate::window::FunctionKind {
            crate::window::FunctionKind::Aggregate
        }
        fn add(&mut self, accs: &[u8], _: &[u8], pairs: &[u32]) -> Result<Vec<u8>, OperatorFailure> {
            let mut counts: Vec<u64> = Slots::new(accs)
                .unwrap()
                .iter()
                .map(|s| s.map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap())))
                .collect();
            pairs.chunks(2).for_each(|p| counts[p[1] as usize] += 1);
            let mut out = SlotsWriter::new();
            counts.iter().for_each(|c| out.push(Some(&c.to_le_bytes())));
            Ok(out.finish())
        }
        fn merge(&mut self, _: &[u8], _: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
            unreachable!("the first phase only adds")
        }
        fn fire(&mut self, _: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
            unreachable!("the first phase fires nothing")
        }
    }

    fn local() -> LocalAggregate {
        let slicing = Slicing::of(&WindowSpec::Sliding {
            size_ms: 20,
            slide_ms: 10,
        })
        .unwrap();
        LocalAggregate::new(slicing, Box::new(Count))
    }

    /// Offers `(key, ts)` events as one batch; returns those not taken.
    fn offer(local: &mut LocalAggregate, events: &[(&str, i64)]) -> Vec<(String, i64)> {
        let mut writer = BatchWriter::new();
        let mut passed = Vec::new();
        for (index, (key, ts)) in events.iter().enumerate() {
            writer.push(*ts, Some(key.as_bytes()), b"{}", &[]);
            if !local.take(index, *ts, key.as_bytes()) {
                passed.push((key.to_string(), *ts));
            }
        }
        local.add_taken(&writer.finish()).unwrap();
        passed
    }

    fn drained(local: &mut LocalAggregate, watermark: i64) -> Vec<(i64, String, u64)> {
        let mut out = Vec::new();
        local.drain(watermark, |slice, key, acc| {
            let count = u64::from_le_bytes(acc.try_into().unwrap());
            out.push((slice.start, String::from_utf8_lossy(key).into_owned(), count));
        });
        out.sort();
        out
    }

    #[test]
    fn slices_are_held_until_the_watermark_passes_their_end() {
        let mut local = local();
        assert!(offer(&mut local, &[("a", 1), ("b", 2), ("a", 12), ("a", 3)]).is_empty());
        assert!(offer(&mut local, &[("a", 4)]).is_empty());
        assert_eq!(drained(&mut local, 8), []);
        assert_eq!(drained(&mut local, 9), [(0, "a".into(), 3), (0, "b".into(), 1)]);
        local.advance(9);
        assert_eq!(drained(&mut local, i64::MAX), [(10, "a".into(), 1)]);
        assert!(!local.over_budget());
    }

    #[test]
    fn events_behind_the_senders_watermark_and_after_idleness_go_on_as_events() {
        let mut local = local();
        local.advance(9);
        let passed = offer(&mut local, &[("a", 9), ("a", 10), ("b", 0)]);
        assert_eq!(passed, [("a".into(), 9), ("b".into(), 0)]);
        assert_eq!(drained(&mut local, 19), [(10, "a".into(), 1)]);
        local.stop_folding();
        assert_eq!(offer(&mut local, &[("a", 30)]), [("a".into(), 30)]);
        assert_eq!(drained(&mut local, i64::MAX), []);
    }
}
