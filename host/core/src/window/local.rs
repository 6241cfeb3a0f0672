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

use hashbrown::HashTable;
use weir_batch::window::SlotsWriter;

use super::operator::returned;
use super::slices::{self, KeyHash, SliceCache};
use super::{Slicing, Window, WindowError, WindowFunction};
use crate::keys::{BatchKeys, same_key};
use crate::time::BEFORE_TIME;

/// Bytes of keys and accumulators a sender holds before it sends them all
/// early (each is on time, so early is only less folding).
const BUDGET: usize = 16 << 20;

/// How many groups ahead of the one looked up the tables are prefetched
/// (as the window operator does).
const PREFETCH_AHEAD: usize = 8;

/// One sender's first phase for one window stage.
pub struct LocalAggregate {
    slicing: Slicing,
    function: Box<dyn WindowFunction>,
    /// Open slices' accumulators, in the window operator's tables; never
    /// written to a store (everything is sent on instead).
    open: SliceCache,
    /// The last watermark the sender sent…
    watermark: i64,
    /// …and the last one that reached the stage (see [`Self::must_send`]).
    sent: i64,
    /// Set once the sender went idle: events go on as events.
    passing: bool,
    /// The events of the batch at hand taken so far: index, slice and
    /// key hash…
    taken: Vec<(u32, Window, KeyHash)>,
    /// …and key.
    keys: BatchKeys,
    /// The slice of the last event taken.
    last_slice: Window,
}

impl LocalAggregate {
    pub(super) fn new(slicing: Slicing, function: Box<dyn WindowFunction>) -> Self {
        LocalAggregate {
            slicing,
            function,
            open: SliceCache::new(BUDGET, slices::MAX_KEY),
            watermark: BEFORE_TIME,
            sent: BEFORE_TIME,
            passing: false,
            taken: Vec::new(),
            keys: BatchKeys::default(),
            last_slice: Window::new(0, 0),
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
        let slice = self.slicing.slice_near(timestamp, self.last_slice);
        self.last_slice = slice;
        if self.passing || slice.max_timestamp() <= self.watermark {
            return false;
        }
        let (Ok(index), Some(hash)) = (u32::try_from(index), self.open.hash(Some(key))) else {
            return false;
        };
        self.taken.push((index, slice, hash));
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
        taken: &[(u32, Window, KeyHash)],
        keys: &BatchKeys,
    ) -> Result<(), WindowError> {
        if taken.is_empty() {
            return Ok(());
        }
        // Group the events by (key, slice), as the window operator does.
        let mut index_of: HashTable<u32> = HashTable::with_capacity(taken.len());
        let mut groups: Vec<(&[u8], Window, KeyHash, u64)> = Vec::with_capacity(taken.len());
        let mut assignments: Vec<u32> = Vec::with_capacity(taken.len() * 2);
        for (&(event, slice, hash), key) in taken.iter().zip(keys.iter()) {
            let group_hash = hash.with(&slice);
            let group = match index_of.find(group_hash, |g| {
                let (k, s, _, _) = groups[*g as usize];
                s == slice && same_key(Some(k), Some(key))
            }) {
                Some(group) => *group,
                None => {
                    let group = groups.len() as u32;
                    groups.push((key, slice, hash, group_hash));
                    index_of.insert_unique(group_hash, group, |g| groups[*g as usize].3);
                    group
                }
            };
            assignments.extend_from_slice(&[event, group]);
        }
        let mut slots = SlotsWriter::with_capacity(groups.len() * 16);
        let mut found = Vec::with_capacity(groups.len());
        for (index, (key, slice, hash, _)) in groups.iter().enumerate() {
            if let Some((_, slice, hash, _)) = groups.get(index + PREFETCH_AHEAD) {
                self.open.prefetch(slice, *hash);
            }
            let held = self.open.get(slice, Some(key), *hash);
            slots.push(held.map(|(acc, _)| acc));
            found.push(held.map(|(_, at)| at));
        }
        let updated = self.function.add(&slots.finish(), bytes, &assignments)?;
        let updated = returned(&updated, groups.len(), "add")?;
        // Updates where the lookups found them first; then the new
        // entries, whose inserts would move the others.
        let mut fresh = Vec::new();
        for ((group, acc), at) in groups.iter().zip(updated.iter().flatten()).zip(&found) {
            let (key, slice, hash, _) = group;
            match at {
                Some(at) => self.open.put(slice, Some(key), *hash, acc, true, Some(*at)),
                None => fresh.push((group, acc)),
            }
        }
        for ((key, slice, hash, _), acc) in fresh {
            self.open.put(slice, Some(key), *hash, acc, true, None);
        }
        Ok(())
    }

    /// Hands `each` the slice, key and accumulator of everything held for
    /// slices that end at or before `watermark` (all of it at the end of
    /// time), and forgets them.
    pub fn drain(&mut self, watermark: i64, mut each: impl FnMut(&Window, &[u8], &[u8])) {
        self.open.drain_until(watermark, |slice, key, acc| {
            each(slice, key.unwrap_or_default(), acc)
        });
    }

    /// Whether the sender should send everything it holds now.
    pub fn over_budget(&self) -> bool {
        self.open.over_budget()
    }

    /// Notes the watermark the sender is about to send (after draining
    /// what it closes).
    pub fn advance(&mut self, watermark: i64) {
        self.watermark = self.watermark.max(watermark);
    }

    /// Whether watermark `watermark` must reach the stage now, rather
    /// than with the sender's next events or the next watermark that
    /// must: it passes a slice's end that the last one sent did not. The
    /// stage's windows end at slice ends, and while the sender folds, the
    /// stage gets nothing a watermark in between would decide on; only
    /// dropping state past the allowed lateness waits a little.
    pub fn must_send(&self, watermark: i64) -> bool {
        let ends_passed = |w: i64| w.saturating_add(1).div_euclid(self.slicing.slice);
        self.passing || ends_passed(watermark) != ends_passed(self.sent)
    }

    /// Notes that `watermark` reached the stage.
    pub fn sent(&mut self, watermark: i64) {
        self.sent = self.sent.max(watermark);
    }

    /// The sender went idle: from now on its events go on as events.
    pub fn stop_folding(&mut self) {
        self.passing = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::OperatorFailure;
    use crate::window::WindowSpec;
    use weir_batch::BatchWriter;
    use weir_batch::window::Slots;

    /// Counts as 8 little-endian bytes.
    struct Count;

    impl WindowFunction for Count {
        fn name(&self) -> &str {
            "count"
        }
        fn kind(&self) -> crate::window::FunctionKind {
            crate::window::FunctionKind::Aggregate
        }
        fn add(
            &mut self,
            accs: &[u8],
            _: &[u8],
            pairs: &[u32],
        ) -> Result<Vec<u8>, OperatorFailure> {
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
            out.push((
                slice.start,
                String::from_utf8_lossy(key).into_owned(),
                count,
            ));
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
        assert_eq!(
            drained(&mut local, 9),
            [(0, "a".into(), 3), (0, "b".into(), 1)]
        );
        local.advance(9);
        assert_eq!(drained(&mut local, i64::MAX), [(10, "a".into(), 1)]);
        assert!(!local.over_budget());
    }

    #[test]
    fn only_watermarks_that_pass_a_slice_end_must_reach_the_stage_at_once() {
        let mut local = local();
        assert!(local.must_send(-5), "the first moves off the start of time");
        local.sent(-5);
        assert!(
            !local.must_send(-2) && local.must_send(-1),
            "the end of [-10, 0)"
        );
        local.sent(-1);
        assert!(!local.must_send(0) && !local.must_send(8));
        assert!(local.must_send(9) && local.must_send(i64::MAX));
        local.sent(9);
        assert!(!local.must_send(18));
        local.stop_folding();
        assert!(local.must_send(18));
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
