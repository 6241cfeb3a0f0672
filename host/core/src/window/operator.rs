//! The window operator of one subtask.
//!
//! Per input batch it finds each event's state unit — its slice for
//! tumbling and sliding windows (see [`Slicing`]), its merged session
//! otherwise — drops what is later than the allowed lateness into the late
//! output, groups the rest by (key, unit) and hands the whole batch with
//! its groups' accumulators to the window function in **one** call; the
//! new accumulators replace the old only when that call succeeds, so a
//! failing guest never leaves a batch half applied. Per watermark it fires
//! the windows whose end has passed, in (end, key, start) order, so the
//! output does not depend on arrival order or parallelism; a sliding window
//! is assembled from its slices then, by the function itself when it
//! [`fires_slices`](super::WindowFunction::fires_slices), else with rounds
//! of its `merge`.
//!
//! Aggregates over tumbling and sliding windows keep the open slices'
//! accumulators in a cache of per-slice tables (`slices.rs`) that reaches
//! the store at checkpoints; other windows read and write the store.

use std::borrow::Cow;
use std::hash::BuildHasher;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use foldhash::HashMap;
use hashbrown::HashTable;

use weir_batch::window::{FiredWindows, FiredWriter, Slots, SlotsWriter};
use weir_batch::{Batch, BatchWriter, EventRef, event_count};

use super::local::LocalAggregate;
use super::slices::{self, Found, KeyHash, SliceCache};
use super::timers::{Key, Timers, key_of};
use super::{FunctionKind, Slicing, Window, WindowFunction, WindowSpec};
use crate::checkpoint;
use crate::keys::{EventKeys, key_group, same_key};
use crate::operator::{FailureKind, OperatorFailure};
use crate::state::{Deferred, StateError, StateStore};
use crate::time::BEFORE_TIME;

/// Why the window operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// The window function failed; the state is as before the call.
    #[error("{}", .0.message)]
    Function(OperatorFailure),
    /// The state backend failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// An event has no usable key for the stage's `key_by` (the subtask
    /// applies it when it is the only one downstream).
    #[error("event {index}: cannot key by `{key_by}`: {message}")]
    Key {
        /// The event's index in its batch.
        index: usize,
        /// The `key_by` setting.
        key_by: String,
        /// Why.
        message: String,
    },
}

impl From<OperatorFailure> for WindowError {
    fn from(f: OperatorFailure) -> Self {
        WindowError::Function(f)
    }
}

/// Windows handed to the guest's `fire` in one call, at most…
const FIRE_CHUNK_WINDOWS: usize = 4096;
/// …and bytes of window state per call, about (a whole window can exceed
/// it on its own).
const FIRE_CHUNK_BYTES: usize = 4 << 20;

/// How many groups ahead of the one being looked up the slice cache is
/// asked to prefetch: enough for a load from memory to arrive while the
/// groups between are worked on.
const PREFETCH_AHEAD: usize = 8;

/// What to prefetch before working on item `index` of a run: the item
/// [`PREFETCH_AHEAD`] on, and at the first item also those before it.
fn prefetch_ahead(index: usize) -> RangeInclusive<usize> {
    let ahead = index + PREFETCH_AHEAD;
    if index == 0 { 0..=ahead } else { ahead..=ahead }
}

/// Gives each event of a batch the key it is grouped by (see
/// [`EventKeys`]).
struct Keying<'k, I> {
    keys: EventKeys<'k>,
    /// The keys beside the batch, not yet given out.
    beside: Option<I>,
    /// Where keys that had to be unescaped are kept.
    unescaped: &'k bumpalo::Bump,
    /// The first event `key_by` found no key in.
    failed: Option<WindowError>,
    /// An event came after the keys beside the batch ran out.
    short_of_keys: bool,
}

impl<'k, I: Iterator<Item = &'k [u8]>> Keying<'k, I> {
    /// `event` (number `index` of its batch) with its key; `None` when it
    /// has none, and the batch fails.
    #[inline(always)]
    fn key(&mut self, index: usize, mut event: EventRef<'k>) -> Option<EventRef<'k>> {
        match self.keys {
            EventKeys::InEvents => {}
            EventKeys::Beside(_) => {
                event.key = self.beside.as_mut().and_then(Iterator::next);
                self.short_of_keys |= event.key.is_none();
                event.key?;
            }
            EventKeys::Select(selector) => match selector.key(event.key, event.value) {
                Ok(Cow::Borrowed(key)) => event.key = Some(key),
                Ok(Cow::Owned(key)) => event.key = Some(self.unescaped.alloc_slice_copy(&key)),
                Err(message) => {
                    self.failed.get_or_insert(WindowError::Key {
                        index,
                        key_by: selector.to_string(),
                        message,
                    });
                    return None;
                }
            },
        }
        Some(event)
    }

    /// Whether the keys beside the batch were not one per event.
    fn mismatched(self) -> bool {
        self.short_of_keys || self.beside.is_some_and(|mut rest| rest.next().is_some())
    }
}

/// A batch's (key, slice or session) groups, and each event's group.
struct Groups<'k> {
    /// Group numbers by hash.
    index_of: HashTable<u32>,
    list: Vec<(Option<&'k [u8]>, Window)>,
    hashes: Vec<u64>,
    /// With a slice cache, each key's hash for it (hashed once, for
    /// grouping and for the cache).
    key_hashes: Vec<Option<KeyHash>>,
    /// Pairs (event number, group number), in event order.
    assignments: Vec<u32>,
}

impl<'k> Groups<'k> {
    fn with_capacity(events: usize) -> Self {
        Groups {
            index_of: HashTable::with_capacity(events),
            list: Vec::with_capacity(events),
            hashes: Vec::with_capacity(events),
            key_hashes: Vec::with_capacity(events),
            assignments: Vec::with_capacity(events * 2),
        }
    }

    /// Puts event `index` of `key` in `unit`'s group.
    #[inline(always)]
    fn add(&mut self, operator: &WindowOperator, index: u32, key: Option<&'k [u8]>, unit: Window) {
        let key_hash = operator.cache.as_ref().and_then(|cache| cache.hash(key));
        let hash = match key_hash {
            Some(key_hash) => key_hash.with(&unit),
            None => operator.group_hasher.hash_one((key, unit)),
        };
        let list = &mut self.list;
        let group = match self.index_of.find(hash, |g| {
            let (k, window) = list[*g as usize];
            window == unit && same_key(k, key)
        }) {
            Some(group) => *group,
            None => {
                let group = list.len() as u32;
                list.push((key, unit));
                self.hashes.push(hash);
                self.key_hashes.push(key_hash);
                let hashes = &self.hashes;
                self.index_of
                    .insert_unique(hash, group, |g| hashes[*g as usize]);
                group
            }
        };
        self.assignments.extend_from_slice(&[index, group]);
    }
}

/// What a batch's group had before the batch: nothing, a state in the
/// store, or one in the slice cache (and where).
#[derive(Debug, Clone, Copy)]
enum Prior {
    New,
    Stored,
    Cached(Found),
}

/// Keyed windows over host state for one subtask.
pub struct WindowOperator {
    spec: WindowSpec,
    /// Tumbling and sliding windows: state per slice.
    slicing: Option<Slicing>,
    lateness: i64,
    max_parallelism: u16,
    function: Box<dyn WindowFunction>,
    store: Box<dyn StateStore>,
    watermark: i64,
    timers: Timers,
    /// Session windows per key (session specs only).
    sessions: HashMap<Key, Vec<Window>>,
    /// The key groups this subtask owns (all until [`Self::restore`]).
    key_groups: RangeInclusive<u16>,
    state_key: Vec<u8>,
    /// Tumbling and sliding aggregates: the open slices' accumulators,
    /// written to `store` at checkpoints (see `slices.rs`).
    cache: Option<SliceCache>,
    /// Hashes (key, unit) pairs when there is no cache to hash keys.
    group_hasher: foldhash::fast::RandomState,
}

/// What a checkpoint holds of a window subtask besides its store: its
/// watermark and key groups. Timers and session sets are not stored: every
/// slice or session with state has a cleanup timer, and each window it is
/// part of a fire timer while that window's end is ahead of the watermark,
/// so a restore rebuilds them from the store's keys (which hold key and
/// slice or session) and the watermark of the subtask that wrote them.
#[derive(Serialize, Deserialize)]
struct WindowSnapshot {
    watermark: i64,
    key_groups: (u16, u16),
}

/// Where one batch's outputs go.
pub struct WindowOutput<'a> {
    /// Window results, in the batch format.
    pub results: &'a mut Vec<Vec<u8>>,
    /// Events later than the allowed lateness.
    pub late: &'a mut BatchWriter,
}

impl WindowOperator {
    /// An operator firing `function` over `spec` windows, keeping window
    /// contents in `store`.
    pub fn new(
        spec: WindowSpec,
        allowed_lateness_ms: u64,
        max_parallelism: u16,
        function: Box<dyn WindowFunction>,
        mut store: Box<dyn StateStore>,
    ) -> Self {
        let slicing = Slicing::of(&spec);
        // The cache's memory comes out of a bounded store's budget.
        let cache = (slicing.is_some() && function.kind() == FunctionKind::Aggregate).then(|| {
            let budget = store.lend_memory(slices::BUDGET).unwrap_or(slices::BUDGET);
            SliceCache::new(budget, slices::MAX_KEY)
        });
        WindowOperator {
            spec,
            slicing,
            lateness: i64::try_from(allowed_lateness_ms).unwrap_or(i64::MAX),
            max_parallelism,
            function,
            store,
            watermark: BEFORE_TIME,
            timers: Timers::default(),
            sessions: HashMap::default(),
            key_groups: 0..=max_parallelism.saturating_sub(1),
            state_key: Vec::with_capacity(64),
            cache,
            group_hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The slice cache's budget (`None`: no cache).
    #[cfg(test)]
    pub(crate) fn cache_budget(&self) -> Option<usize> {
        self.cache.as_ref().map(SliceCache::budget)
    }

    /// Sets the bytes of open slices kept in memory before they are
    /// written to the store, and the longest key cached (tests use small
    /// ones).
    #[cfg(test)]
    pub(crate) fn with_cache(mut self, bytes: usize, max_key: usize) -> Self {
        if self.cache.is_some() {
            self.cache = Some(SliceCache::new(bytes, max_key));
        }
        self
    }

    /// The operator's name.
    pub fn name(&self) -> &str {
        self.function.name()
    }

    /// The watermark the operator last saw.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Takes the subtask's snapshot for `dir`: the store's copy under
    /// `state/`, the watermark in `timers.bin`. Returns the writing left to
    /// do off the stream.
    ///
    /// # Errors
    /// The store cannot take its copy.
    pub fn checkpoint(&mut self, dir: &Path) -> Result<Deferred, StateError> {
        self.flush_cache()?;
        let snapshot = WindowSnapshot {
            watermark: self.watermark,
            key_groups: (*self.key_groups.start(), *self.key_groups.end()),
        };
        checkpoint::snapshot_subtask(dir, self.store.as_mut(), &snapshot)
    }

    /// Makes this the subtask owning key groups `groups`, restored from
    /// the subtask snapshots in `from` (none: a fresh start). The store
    /// was restored by its backend; this rebuilds the timers and session
    /// sets of the windows in it, each against the watermark of the
    /// subtask that held it, and takes the lowest of those watermarks.
    ///
    /// # Errors
    /// A snapshot is missing or does not decode, or the store cannot be
    /// read.
    pub fn restore(
        &mut self,
        from: &[PathBuf],
        groups: &RangeInclusive<u16>,
    ) -> Result<(), StateError> {
        self.key_groups = groups.clone();
        let snapshots: Vec<WindowSnapshot> = checkpoint::read_subtasks(from)?;
        let Some(lowest) = snapshots.iter().map(|s| s.watermark).min() else {
            return Ok(());
        };
        self.watermark = self.watermark.max(lowest);
        let watermark_of = |group: u16| {
            snapshots
                .iter()
                .find(|s| (s.key_groups.0..=s.key_groups.1).contains(&group))
                .map_or(lowest, |s| s.watermark)
        };
        let slicing = self.slicing;
        let (timers, open_sessions) = (&mut self.timers, &mut self.sessions);
        let cache = &mut self.cache;
        let lateness = self.lateness;
        let mut foreign = None;
        self.store.scan_keys(&mut |state_key| {
            let Some((group, key, unit)) = decode_state_key(state_key) else {
                return;
            };
            if !groups.contains(&group) {
                return;
            }
            let watermark = watermark_of(group);
            let last = match slicing {
                Some(slicing) if !slicing.is_slice(&unit) => {
                    foreign.get_or_insert(unit);
                    return;
                }
                Some(slicing) => {
                    if let Some(cache) = cache.as_mut() {
                        cache.note_stored(&unit);
                    }
                    for window in slicing.windows(&unit) {
                        if window.max_timestamp() > watermark {
                            timers.fire_at(window.max_timestamp(), key.as_deref(), window);
                        }
                    }
                    slicing.last_window(&unit)
                }
                None => {
                    if unit.max_timestamp() > watermark {
                        timers.fire_at(unit.max_timestamp(), key.as_deref(), unit);
                    }
                    open_sessions.entry(key.clone()).or_default().push(unit);
                    unit
                }
            };
            let cleanup = last.max_timestamp().saturating_add(lateness);
            timers.clean_up_at(cleanup, key, unit);
        })?;
        match foreign {
            Some(unit) => Err(StateError(format!(
                "`{}`: the checkpoint holds window state for [{}, {}), which is not a slice of \
                 this operator's {:?} windows; restore it with the window spec (and Weir \
                 version) that wrote it",
                self.name(),
                unit.start,
                unit.end,
                self.spec
            ))),
            None => Ok(()),
        }
    }

    /// Number of keys in the store (tests: state is dropped when done).
    #[cfg(test)]
    pub(crate) fn stored_keys(&mut self) -> usize {
        let mut n = 0;
        self.store.scan_keys(&mut |_| n += 1).unwrap();
        n
    }

    /// Number of windows waiting to fire.
    pub fn open_windows(&self) -> usize {
        self.timers.pending_fires()
    }

    /// When `window`'s state is dropped: past its end by the allowed
    /// lateness.
    fn cleanup_time(&self, window: &Window) -> i64 {
        window.max_timestamp().saturating_add(self.lateness)
    }

    fn is_late(&self, window: &Window) -> bool {
        window.max_timestamp().saturating_add(self.lateness) <= self.watermark
    }

    /// The slice of an event at `timestamp`, or `None` when the last
    /// window holding it is late; `last` is the slice found before (a
    /// batch's events mostly share one), and becomes this one.
    #[inline(always)]
    fn on_time_slice(&self, slicing: Slicing, timestamp: i64, last: &mut Window) -> Option<Window> {
        let slice = slicing.slice_near(timestamp, *last);
        *last = slice;
        (!self.is_late(&slicing.last_window(&slice))).then_some(slice)
    }

    fn already_fired(&self, window: &Window) -> bool {
        window.max_timestamp() <= self.watermark
    }

    /// Adds a batch whose events find their keys as `keys` says. Results
    /// of windows that re-fire because of late-but-allowed events are
    /// appended to `out.results`; events later than the lateness go to
    /// `out.late` (with their key, as do the events a whole-window
    /// function gets). An aggregate's `add` gets the batch as it is: its
    /// events carry the key they came with, not necessarily the one they
    /// are grouped by.
    ///
    /// # Errors
    /// The window function or the state backend failed, or an event has no
    /// key to select. For a function failure, `event_index` is the input
    /// event, and the state is as it was before the batch.
    pub fn process(
        &mut self,
        bytes: &[u8],
        keys: EventKeys<'_>,
        out: WindowOutput<'_>,
    ) -> Result<(), WindowError> {
        let count = event_count(bytes);
        // Room for the events the buffer can hold, whatever count it
        // claims (a malformed one fails as it is read).
        let room = count.min(bytes.len() / weir_batch::EVENT_HEADER_LEN);
        let late_mark = out.late.mark();
        let mut groups = Groups::with_capacity(room);
        // Keys `key_by` had to unescape (a JSON string with escapes): the
        // groups point into them.
        let unescaped = bumpalo::Bump::new();
        let mut keying = Keying {
            keys,
            beside: match keys {
                EventKeys::Beside(beside) => Some(beside.iter()),
                _ => None,
            },
            unescaped: &unescaped,
            failed: None,
            short_of_keys: false,
        };
        // With slices and an aggregate, each event is grouped as it is
        // read: the batch is walked once, and its events are not kept.
        // Sessions merge over the whole batch first, and a whole-window
        // function keeps the events.
        let fused = self.slicing.is_some() && self.function.kind() == FunctionKind::Aggregate;
        let mut events: Vec<EventRef<'_>> = Vec::new();
        let mut index = 0;
        let mut last_slice = Window::new(0, 0);
        let read = match self.slicing {
            Some(slicing) if fused => weir_batch::read_events(bytes, |e| {
                if let Some(e) = keying.key(index, e) {
                    match self.on_time_slice(slicing, e.timestamp, &mut last_slice) {
                        Some(slice) => groups.add(self, index as u32, e.key, slice),
                        None => out.late.push_event(&e),
                    }
                }
                index += 1;
            }),
            _ => {
                events.reserve(room);
                weir_batch::read_events(bytes, |e| {
                    if let Some(e) = keying.key(index, e) {
                        events.push(e);
                    }
                    index += 1;
                })
            }
        };
        let key_failure = keying.failed.take();
        let mismatched = keying.mismatched();
        let failed = match (read, keys) {
            (Err(e), _) => Some(bad_input(self.name(), &e)),
            (Ok(_), _) if key_failure.is_some() => key_failure,
            (Ok(_), EventKeys::Beside(beside)) if mismatched => {
                let problem = format!("{count} events but {} keys beside them", beside.len());
                Some(bad_input(self.name(), &problem))
            }
            (Ok(_), _) => None,
        };
        if let Some(error) = failed {
            // A batch that cannot be read or keyed sends none of its
            // late events on.
            out.late.undo_to(late_mark);
            return Err(error);
        }
        if !fused {
            // Sessions (the spec without slices) merge first.
            let session_windows = match self.slicing {
                None => Some(self.merge_sessions(&events, out.late)?),
                Some(_) => None,
            };
            for (index, event) in events.iter().enumerate() {
                let unit = match self.slicing {
                    Some(slicing) => {
                        match self.on_time_slice(slicing, event.timestamp, &mut last_slice) {
                            Some(slice) => slice,
                            None => {
                                out.late.push_event(event);
                                continue;
                            }
                        }
                    }
                    // Sessions: each event's merged session; the late ones
                    // already went to `late`.
                    None => match session_windows.as_ref().and_then(|finals| finals[index]) {
                        Some(session) => session,
                        None => continue,
                    },
                };
                groups.add(self, index as u32, event.key, unit);
            }
        }
        let Groups {
            list: group_list,
            key_hashes,
            assignments,
            ..
        } = groups;
        if group_list.is_empty() {
            return Ok(());
        }

        let mut refire = Vec::new();
        match self.function.kind() {
            FunctionKind::Aggregate => {
                let mut slots = SlotsWriter::with_capacity(group_list.len() * 16);
                let mut priors: Vec<Prior> = Vec::with_capacity(group_list.len());
                let mut write_at: Vec<*const u8> = Vec::with_capacity(group_list.len());
                let prefetch = |cache: &SliceCache, group: usize| {
                    if let (Some((_, slice)), Some(Some(hash))) =
                        (group_list.get(group), key_hashes.get(group))
                    {
                        cache.prefetch(slice, *hash);
                    }
                };
                for (index, ((key, window), hash)) in group_list.iter().zip(&key_hashes).enumerate()
                {
                    if let Some(cache) = &self.cache {
                        prefetch_ahead(index).for_each(|group| prefetch(cache, group));
                    }
                    let (acc, at) = self.load_found(*key, window, *hash)?;
                    // A cached accumulator's bytes are in its cache entry
                    // (or on the heap beside it), where `save` will write.
                    // (One read from the store points there instead: a
                    // wasted prefetch, nothing worse.)
                    write_at.push(acc.map_or(std::ptr::null(), <[u8]>::as_ptr));
                    priors.push(match (acc, at) {
                        (_, Some(found)) => Prior::Cached(found),
                        (Some(_), None) => Prior::Stored,
                        (None, None) => Prior::New,
                    });
                    slots.push(acc);
                }
                let updated = self.function.add(&slots.finish(), bytes, &assignments)?;
                // Checked before anything is written: no half-applied batch.
                let updated = returned(&updated, group_list.len(), "add")?;
                // Updates first, where the lookups found them; then the new
                // entries, whose inserts would move the others.
                let mut fresh = Vec::new();
                let groups = group_list.iter().zip(updated.iter().flatten()).enumerate();
                for (index, ((key, window), acc)) in groups {
                    // The guest call moved the batch through the CPU's
                    // caches: the entries read before it are loaded again.
                    prefetch_ahead(index)
                        .filter_map(|group| write_at.get(group))
                        .for_each(|at| slices::prefetch_address(*at));
                    let found = match priors[index] {
                        Prior::New => {
                            fresh.push((index, acc));
                            continue;
                        }
                        Prior::Cached(found) => Some(found),
                        Prior::Stored => None,
                    };
                    self.save(*key, window, key_hashes[index], acc, found)?;
                    self.note_update(*key, *window, false, &mut refire)?;
                }
                for (index, acc) in fresh {
                    let (key, window) = group_list[index];
                    self.save(key, &window, key_hashes[index], acc, None)?;
                    self.note_update(key, window, true, &mut refire)?;
                }
                if self.cache.as_ref().is_some_and(SliceCache::over_budget) {
                    self.flush_cache()?;
                    if let Some(cache) = &mut self.cache {
                        cache.evict();
                    }
                }
            }
            FunctionKind::WholeWindow => {
                let mut appended: Vec<BatchWriter> =
                    group_list.iter().map(|_| BatchWriter::new()).collect();
                for pair in assignments.chunks_exact(2) {
                    appended[pair[1] as usize].push_event(&events[pair[0] as usize]);
                }
                for ((key, window), writer) in group_list.iter().zip(appended) {
                    self.fill_state_key(*key, window);
                    let new = self.store.get(&self.state_key)?.is_none();
                    let merged = append_events(self.store.get(&self.state_key)?, writer);
                    self.store.put(&self.state_key, &merged)?;
                    self.note_update(*key, *window, new, &mut refire)?;
                }
            }
        }
        if !refire.is_empty() {
            refire.sort();
            refire.dedup();
            let fired = self.fire(&refire)?;
            out.results.extend(fired);
        }
        Ok(())
    }

    /// The first phase of two-phase aggregation for one sender to this
    /// operator's stage, with a copy of its function (see `local.rs`).
    /// `None` when this operator cannot take it: sessions, whole-window
    /// functions, and functions that cannot be copied.
    ///
    /// # Errors
    /// The copy of the function could not be started.
    pub(crate) fn local_aggregate(&self) -> Option<Result<LocalAggregate, WindowError>> {
        let slicing = self.slicing?;
        if self.function.kind() != FunctionKind::Aggregate {
            return None;
        }
        Some(match self.function.fork()? {
            Ok(function) => Ok(LocalAggregate::new(slicing, function)),
            Err(failure) => Err(WindowError::Function(failure)),
        })
    }

    /// Merges accumulators a sender folded for this operator's slices
    /// (`bytes` in the fired-windows format: slice, key, accumulator; each
    /// (key, slice) at most once) into its state: those new here are
    /// taken as they are, the others merged in one `merge` call after the
    /// state held. Results of windows that re-fire are appended to
    /// `results`.
    ///
    /// # Errors
    /// The function or the state backend failed, or `bytes` is not what a
    /// sender's first phase writes: the state is as it was before.
    pub(crate) fn merge_partials(
        &mut self,
        bytes: &[u8],
        results: &mut Vec<Vec<u8>>,
    ) -> Result<(), WindowError> {
        let name = self.name().to_string();
        let partials = FiredWindows::new(bytes).map_err(|e| bad_input(&name, &e))?;
        let slicing = match self.slicing {
            Some(slicing) if self.function.kind() == FunctionKind::Aggregate => slicing,
            _ => {
                return Err(bad_input(
                    &name,
                    &"accumulators for a stage that takes none",
                ));
            }
        };
        // The state held before, for those that have one.
        let (mut left, mut right) = (SlotsWriter::new(), SlotsWriter::new());
        let mut held = Vec::new();
        for (index, partial) in partials.iter().enumerate() {
            let slice = Window::new(partial.start, partial.end);
            if !slicing.is_slice(&slice) || slicing.slice_of(slice.start) != slice {
                let problem = format!("[{}, {}) is not one of its slices", slice.start, slice.end);
                return Err(bad_input(&name, &problem));
            }
            if self.is_late(&slicing.last_window(&slice)) {
                let problem = format!(
                    "accumulators for [{}, {}) came after the watermark passed its windows",
                    slice.start, slice.end
                );
                return Err(bad_input(&name, &problem));
            }
            if let Some(prior) = self.load(partial.key, &slice)? {
                left.push(Some(prior));
                right.push(Some(partial.payload));
                held.push(index);
            }
        }
        let merged = if held.is_empty() {
            SlotsWriter::new().finish()
        } else {
            self.function.merge(&left.finish(), &right.finish())?
        };
        let merged = returned(&merged, held.len(), "merge")?;
        let mut merged = merged.iter().flatten();
        let mut held = held.into_iter().peekable();
        let mut refire = Vec::new();
        for (index, partial) in partials.iter().enumerate() {
            let slice = Window::new(partial.start, partial.end);
            let new = held.next_if_eq(&index).is_none();
            let acc = if new {
                partial.payload
            } else {
                merged.next().unwrap_or_default()
            };
            let hash = self
                .cache
                .as_ref()
                .and_then(|cache| cache.hash(partial.key));
            self.save(partial.key, &slice, hash, acc, None)?;
            self.note_update(partial.key, slice, new, &mut refire)?;
        }
        if self.cache.as_ref().is_some_and(SliceCache::over_budget) {
            self.flush_cache()?;
            if let Some(cache) = &mut self.cache {
                cache.evict();
            }
        }
        if !refire.is_empty() {
            refire.sort();
            refire.dedup();
            results.extend(self.fire(&refire)?);
        }
        Ok(())
    }

    /// Registers timers for a slice or session that just got its first
    /// event, and notes windows that fired already and must fire again.
    fn note_update(
        &mut self,
        key: Option<&[u8]>,
        unit: Window,
        new: bool,
        refire: &mut Vec<(Key, Window)>,
    ) -> Result<(), StateError> {
        let Some(slicing) = self.slicing else {
            let fired = self.already_fired(&unit);
            if !new && !fired {
                return Ok(());
            }
            if fired {
                refire.push((key_of(key), unit));
            } else if new {
                self.timers.fire_at(unit.max_timestamp(), key, unit);
            }
            if new {
                let cleanup = self.cleanup_time(&unit);
                self.timers.clean_up_at(cleanup, key_of(key), unit);
            }
            return Ok(());
        };
        // The windows holding a slice fire in time order: none of them has
        // fired unless the first has.
        let fired = self.already_fired(&slicing.first_window(&unit));
        if !new && !fired {
            return Ok(()); // the hot path: a slice whose windows have their timers
        }
        // A new slice whose key has the slice before it needs a timer only
        // for its last window: the one before registered the others (they
        // are its windows too) when it was new, or on restore.
        let last = slicing.last_window(&unit);
        let only_last =
            new && !slicing.whole() && self.load(key, &slicing.previous(&unit))?.is_some();
        for window in slicing.windows(&unit) {
            if !self.already_fired(&window) {
                if new && (!only_last || window == last) {
                    self.timers.fire_at(window.max_timestamp(), key, window);
                }
            } else if !self.is_late(&window) {
                refire.push((key_of(key), window));
            }
        }
        if new {
            let cleanup = self.cleanup_time(&last);
            self.timers.clean_up_at(cleanup, key_of(key), unit);
        }
        Ok(())
    }

    /// Advances event time: fires every window whose end has passed and
    /// drops the state of windows past their lateness. Returns the results.
    ///
    /// # Errors
    /// The window function or the state backend failed.
    pub fn advance(&mut self, watermark: i64) -> Result<Vec<Vec<u8>>, WindowError> {
        if watermark <= self.watermark {
            return Ok(Vec::new());
        }
        self.watermark = watermark;
        let due = self.timers.take_due(watermark);
        let results = self.fire(&due.fire)?;
        // Cached slices are dropped whole; the store is asked to delete
        // the keys of those it may hold.
        let mut dropped: Vec<(Window, bool)> = Vec::new();
        if let Some(cache) = &mut self.cache {
            dropped = due
                .cleanup
                .iter()
                .map(|(_, slice)| (*slice, false))
                .collect();
            dropped.sort_unstable();
            dropped.dedup();
            for (slice, stored) in &mut dropped {
                *stored = cache.drop_slice(slice);
            }
        }
        for (key, window) in &due.cleanup {
            let stored = self.cache.is_none()
                || dropped
                    .binary_search_by_key(window, |(slice, _)| *slice)
                    .is_ok_and(|at| dropped[at].1);
            if stored {
                self.fill_state_key(key.as_deref(), window);
                self.store.delete(&self.state_key)?;
            }
            if let Some(set) = self.sessions.get_mut(key) {
                set.retain(|w| w != window);
                if set.is_empty() {
                    self.sessions.remove(key);
                }
            }
        }
        Ok(results)
    }

    /// Fires `windows` in calls of at most [`FIRE_CHUNK_WINDOWS`] windows
    /// or about [`FIRE_CHUNK_BYTES`], so a watermark that closes millions
    /// of windows at once (the end of input) stays within the guest's
    /// memory. One output batch per call.
    fn fire(&mut self, windows: &[(Key, Window)]) -> Result<Vec<Vec<u8>>, WindowError> {
        match self.slicing {
            Some(slicing) if !slicing.whole() => self.fire_sliced(slicing, windows),
            _ => self.fire_whole(windows),
        }
    }

    /// Fires windows whose state is one entry (tumbling windows, sessions).
    fn fire_whole(&mut self, windows: &[(Key, Window)]) -> Result<Vec<Vec<u8>>, WindowError> {
        let mut outputs = Vec::new();
        let mut fired = FiredWriter::new();
        let kind = self.function.kind();
        for (key, window) in windows {
            let payload = self.load(key.as_deref(), window)?.unwrap_or_default();
            match kind {
                FunctionKind::Aggregate => {
                    fired.push(window.start, window.end, key.as_deref(), payload)
                }
                FunctionKind::WholeWindow => {
                    let sorted = sorted_by_time(payload);
                    fired.push(window.start, window.end, key.as_deref(), &sorted);
                }
            }
            if fired.len() >= FIRE_CHUNK_WINDOWS || fired.byte_len() >= FIRE_CHUNK_BYTES {
                let full = std::mem::take(&mut fired);
                outputs.push(self.fire_chunk(full)?);
            }
        }
        if !fired.is_empty() {
            outputs.push(self.fire_chunk(fired)?);
        }
        Ok(outputs)
    }

    /// Fires sliding windows: each window's slices are read, combined for
    /// a whole chunk at once (one guest `merge` call per round of pairs),
    /// then handed to the function.
    fn fire_sliced(
        &mut self,
        slicing: Slicing,
        windows: &[(Key, Window)],
    ) -> Result<Vec<Vec<u8>>, WindowError> {
        let mut outputs = Vec::new();
        // The keys' hashes first, so that the slices of windows a little
        // ahead can be prefetched (they are in no cache: the window's
        // slices were last written long ago).
        let hashes: Vec<Option<KeyHash>> = match &self.cache {
            Some(cache) => windows
                .iter()
                .map(|(k, _)| cache.hash(k.as_deref()))
                .collect(),
            None => Vec::new(),
        };
        let prefetch = |cache: &SliceCache, index: usize| {
            if let (Some((_, window)), Some(Some(hash))) = (windows.get(index), hashes.get(index)) {
                for slice in slicing.slices(window) {
                    cache.prefetch(&slice, *hash);
                }
            }
        };
        // A function that merges a window's slices itself gets them in
        // the window's payload: one call per chunk, no rounds of `merge`.
        if self.function.fires_slices() {
            let mut fired = FiredWriter::new();
            let mut slots = SlotsWriter::new();
            for (index, (key, window)) in windows.iter().enumerate() {
                if let Some(cache) = &self.cache {
                    prefetch_ahead(index).for_each(|ahead| prefetch(cache, ahead));
                }
                let hash = hashes.get(index).copied().flatten();
                self.read_slices(slicing, key.as_deref(), window, hash, |state| {
                    slots.push(Some(state));
                })?;
                if !slots.is_empty() {
                    fired.push(window.start, window.end, key.as_deref(), slots.bytes());
                    slots.clear();
                }
                let last = index + 1 == windows.len();
                if !fired.is_empty()
                    && (last
                        || fired.len() >= FIRE_CHUNK_WINDOWS
                        || fired.byte_len() >= FIRE_CHUNK_BYTES)
                {
                    let chunk = std::mem::take(&mut fired).finish();
                    let output = self.function.fire_slices(&chunk)?;
                    Batch::new(&output).map_err(|e| bad_output(e.to_string()))?;
                    outputs.push(output);
                }
            }
            return Ok(outputs);
        }
        // The chunk: its windows, and the stored slices of each.
        let mut heads: Vec<(&Key, Window)> = Vec::new();
        let mut states = Accumulators::default();
        for (index, (key, window)) in windows.iter().enumerate() {
            if let Some(cache) = &self.cache {
                prefetch_ahead(index).for_each(|ahead| prefetch(cache, ahead));
            }
            let hash = hashes.get(index).copied().flatten();
            self.read_slices(slicing, key.as_deref(), window, hash, |state| {
                states.push_state(state);
            })?;
            states.end_window();
            heads.push((key, *window));
            let last = index + 1 == windows.len();
            if last || heads.len() >= FIRE_CHUNK_WINDOWS || states.byte_len() >= FIRE_CHUNK_BYTES {
                let combined = self.combine_many(std::mem::take(&mut states))?;
                let mut fired = FiredWriter::new();
                for (window, (key, head)) in heads.drain(..).enumerate() {
                    if let Some(payload) = combined.only(window) {
                        fired.push(head.start, head.end, key.as_deref(), payload);
                    }
                }
                if !fired.is_empty() {
                    outputs.push(self.fire_chunk(fired)?);
                }
            }
        }
        Ok(outputs)
    }

    /// Hands the stored state of each slice of `key`'s `window` to
    /// `push`, earliest first (`hash`: the key's in the cache).
    fn read_slices(
        &mut self,
        slicing: Slicing,
        key: Option<&[u8]>,
        window: &Window,
        hash: Option<KeyHash>,
        mut push: impl FnMut(&[u8]),
    ) -> Result<(), WindowError> {
        for slice in slicing.slices(window) {
            if let Some(state) = self.load_hashed(key, &slice, hash)? {
                push(state);
            }
        }
        Ok(())
    }

    fn fire_chunk(&mut self, fired: FiredWriter) -> Result<Vec<u8>, WindowError> {
        let output = self.function.fire(&fired.finish())?;
        Batch::new(&output).map_err(|e| bad_output(e.to_string()))?;
        Ok(output)
    }

    /// Session windows: merges each event's `[ts, ts + gap)` into its key's
    /// sessions, combining the state of merged sessions, and returns each
    /// event's final session (`None`: late, written to `late`).
    fn merge_sessions(
        &mut self,
        events: &[EventRef<'_>],
        late: &mut BatchWriter,
    ) -> Result<Vec<Option<Window>>, WindowError> {
        // For each session that exists after the batch, the sessions with
        // stored state it absorbed.
        let mut absorbed: HashMap<(Key, Window), Vec<Window>> = HashMap::default();
        let mut touched: Vec<Key> = Vec::new();
        for event in events {
            let mut own = None;
            self.spec.assign(event.timestamp, |w| own = Some(w));
            let Some(own) = own else { continue };
            let key: Key = key_of(event.key);
            let set = self
                .sessions
                .get(&key)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let merged = set
                .iter()
                .filter(|s| s.intersects(&own))
                .fold(own, |m, s| m.cover(s));
            if self.is_late(&merged) {
                continue;
            }
            let set = self.sessions.entry(key.clone()).or_default();
            let mut sources = Vec::new();
            set.retain(|s| {
                if s.intersects(&own) {
                    sources.push(*s);
                    false
                } else {
                    true
                }
            });
            set.push(merged);
            let mut stored = Vec::new();
            for s in sources {
                match absorbed.remove(&(key.clone(), s)) {
                    Some(list) => stored.extend(list),
                    None => stored.push(s), // existed before the batch
                }
            }
            absorbed.insert((key.clone(), merged), stored);
            touched.push(key);
        }
        // Sessions created in this batch have no stored state: drop them
        // from the absorbed lists (a `get` tells).
        let mut pairs: Vec<((Key, Window), Vec<Window>)> = absorbed.into_iter().collect();
        pairs.sort();
        for ((key, target), sources) in &pairs {
            let mut with_state = Vec::new();
            for s in sources {
                self.fill_state_key(key.as_deref(), s);
                if let Some(bytes) = self.store.get(&self.state_key)? {
                    with_state.push((*s, bytes.to_vec()));
                }
            }
            if with_state.len() == 1 && with_state[0].0 == *target {
                continue;
            }
            let combined = self.combine(with_state.iter().map(|(_, b)| b.clone()).collect())?;
            for (s, _) in &with_state {
                self.fill_state_key(key.as_deref(), s);
                self.store.delete(&self.state_key)?;
                self.remove_timers(key, s);
            }
            if let Some(bytes) = combined {
                self.fill_state_key(key.as_deref(), target);
                self.store.put(&self.state_key, &bytes)?;
                // If the merged session fired already, process() re-fires
                // it with the batch's other late updates.
                self.note_update(key.as_deref(), *target, true, &mut Vec::new())?;
            }
        }
        // Each event's final session.
        let mut finals = Vec::with_capacity(events.len());
        for event in events {
            let key: Key = key_of(event.key);
            let found = self.sessions.get(&key).and_then(|set| {
                set.iter()
                    .find(|s| s.start <= event.timestamp && event.timestamp < s.end)
                    .copied()
            });
            match found {
                Some(w) if !self.is_late(&w) => finals.push(Some(w)),
                _ => {
                    late.push_event(event);
                    finals.push(None);
                }
            }
        }
        Ok(finals)
    }

    /// Combines several windows' state into one (guest `merge` for
    /// aggregates, concatenation for whole-window state).
    fn combine(&mut self, states: Vec<Vec<u8>>) -> Result<Option<Vec<u8>>, WindowError> {
        let mut list = Accumulators::default();
        states.iter().for_each(|state| list.push_state(state));
        list.end_window();
        Ok(self.combine_many(list)?.only(0).map(<[u8]>::to_vec))
    }

    /// Combines each window's states, in order, into one state: for
    /// aggregates by rounds of the guest's `merge` over neighbouring pairs
    /// (one call per round for all windows, so time order is kept), for
    /// whole-window state by concatenating the events in time order.
    fn combine_many(&mut self, mut lists: Accumulators) -> Result<Accumulators, WindowError> {
        match self.function.kind() {
            FunctionKind::WholeWindow => {
                let mut combined = Accumulators::default();
                for window in 0..lists.windows() {
                    if lists.count(window) > 0 {
                        let mut writer = BatchWriter::new();
                        for state in lists.states(window) {
                            for e in Batch::new(state)
                                .map_err(|e| bad_input(self.name(), &e))?
                                .iter()
                            {
                                writer.push_event(&e);
                            }
                        }
                        combined.push_state(&sorted_by_time(&writer.finish()));
                    }
                    combined.end_window();
                }
                Ok(combined)
            }
            FunctionKind::Aggregate => {
                while (0..lists.windows()).any(|w| lists.count(w) > 1) {
                    // Each side gets about half the bytes, and a length
                    // per state: no buffer grows while it is written.
                    let room = lists.byte_len() / 2 + 4 * lists.state_count() + 8;
                    let (mut left, mut right) = (
                        SlotsWriter::with_capacity(room),
                        SlotsWriter::with_capacity(room),
                    );
                    let mut pairs = 0;
                    for window in 0..lists.windows() {
                        let states = lists.range(window);
                        for pair in 0..states.len() / 2 {
                            let first = states.start + 2 * pair;
                            left.push(Some(lists.state(first)));
                            right.push(Some(lists.state(first + 1)));
                            pairs += 1;
                        }
                    }
                    let merged = self.function.merge(&left.finish(), &right.finish())?;
                    let slots = returned(&merged, pairs, "merge")?;
                    let mut merged = slots.iter();
                    let mut next = Accumulators::with_capacity(
                        lists.byte_len(),
                        lists.state_count() - pairs,
                        lists.windows(),
                    );
                    for window in 0..lists.windows() {
                        let states = lists.range(window);
                        for _ in 0..states.len() / 2 {
                            let slot = merged.next().flatten().ok_or_else(|| {
                                bad_output("`merge` returned an empty slot".into())
                            })?;
                            next.push_state(slot);
                        }
                        if states.len() % 2 == 1 {
                            next.push_state(lists.state(states.end - 1));
                        }
                        next.end_window();
                    }
                    lists = next;
                }
                Ok(lists)
            }
        }
    }

    fn remove_timers(&mut self, key: &Key, window: &Window) {
        let cleanup = self.cleanup_time(window);
        self.timers
            .remove(window.max_timestamp(), cleanup, key, window);
    }

    /// Sets `self.state_key` to the state key of `key` in `window`.
    fn fill_state_key(&mut self, key: Option<&[u8]>, window: &Window) {
        state_key_into(&mut self.state_key, self.max_parallelism, key, window);
    }

    /// The state of `key` in `unit` (a slice or session).
    fn load(&mut self, key: Option<&[u8]>, unit: &Window) -> Result<Option<&[u8]>, StateError> {
        let hash = self.cache.as_ref().and_then(|cache| cache.hash(key));
        self.load_hashed(key, unit, hash)
    }

    /// [`Self::load`] with the key's hash in the cache (`None`: no cache,
    /// or the key is not cached): from the cache, or from the store, and
    /// then cached.
    fn load_hashed(
        &mut self,
        key: Option<&[u8]>,
        unit: &Window,
        hash: Option<KeyHash>,
    ) -> Result<Option<&[u8]>, StateError> {
        Ok(self.load_found(key, unit, hash)?.0)
    }

    /// [`Self::load_hashed`], and where in the cache the state was found
    /// (for [`Self::save`]).
    fn load_found(
        &mut self,
        key: Option<&[u8]>,
        unit: &Window,
        hash: Option<KeyHash>,
    ) -> Result<(Option<&[u8]>, Option<Found>), StateError> {
        if let (Some(cache), Some(hash)) = (&self.cache, hash)
            && !cache.needs_store(unit, key, hash)
        {
            return Ok(
                match self.cache.as_ref().and_then(|c| c.get(unit, key, hash)) {
                    Some((acc, found)) => (Some(acc), Some(found)),
                    None => (None, None),
                },
            );
        }
        self.fill_state_key(key, unit);
        let stored = self.store.get(&self.state_key)?;
        if let (Some(cache), Some(hash), Some(acc)) = (self.cache.as_mut(), hash, stored) {
            cache.put(unit, key, hash, acc, false, None);
        }
        Ok((stored, None))
    }

    /// Sets the state of `key` in `unit`: in the cache when `hash` says it
    /// is cached there (where it was `found`, if it was), in the store
    /// otherwise.
    fn save(
        &mut self,
        key: Option<&[u8]>,
        unit: &Window,
        hash: Option<KeyHash>,
        state: &[u8],
        found: Option<Found>,
    ) -> Result<(), StateError> {
        match (&mut self.cache, hash) {
            (Some(cache), Some(hash)) => {
                cache.put(unit, key, hash, state, true, found);
                return Ok(());
            }
            (Some(cache), None) => cache.note_written_past(unit),
            (None, _) => {}
        }
        self.fill_state_key(key, unit);
        self.store.put(&self.state_key, state)
    }

    /// Writes the cached accumulators the store lacks to the store.
    fn flush_cache(&mut self) -> Result<(), StateError> {
        let Some(cache) = self.cache.as_mut() else {
            return Ok(());
        };
        let (store, state_key) = (&mut self.store, &mut self.state_key);
        let max_parallelism = self.max_parallelism;
        cache.flush(|key, slice, acc| {
            state_key_into(state_key, max_parallelism, key, slice);
            store.put(state_key, acc)
        })
    }
}

/// The states of a run of windows, to combine: every state in one buffer,
/// rather than a heap allocation per state (a sliding window's five
/// slices, the merged pairs of every round).
#[derive(Debug, Default)]
struct Accumulators {
    bytes: Vec<u8>,
    /// Each state's end in `bytes`.
    state_ends: Vec<usize>,
    /// Each window's end in `state_ends`.
    window_ends: Vec<usize>,
}

impl Accumulators {
    /// Empty, with room for `bytes` of `states` in `windows`.
    fn with_capacity(bytes: usize, states: usize, windows: usize) -> Self {
        Accumulators {
            bytes: Vec::with_capacity(bytes),
            state_ends: Vec::with_capacity(states),
            window_ends: Vec::with_capacity(windows),
        }
    }

    /// Adds a state to the window being built.
    fn push_state(&mut self, state: &[u8]) {
        self.bytes.extend_from_slice(state);
        self.state_ends.push(self.bytes.len());
    }

    /// Ends the window being built (it may have no states).
    fn end_window(&mut self) {
        self.window_ends.push(self.state_ends.len());
    }

    fn windows(&self) -> usize {
        self.window_ends.len()
    }

    fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The indexes in `state_ends` of window `window`'s states.
    fn range(&self, window: usize) -> std::ops::Range<usize> {
        let first = window
            .checked_sub(1)
            .map_or(0, |before| self.window_ends[before]);
        first..self.window_ends[window]
    }

    /// How many states window `window` has.
    fn count(&self, window: usize) -> usize {
        self.range(window).len()
    }

    /// States in all windows.
    fn state_count(&self) -> usize {
        self.state_ends.len()
    }

    /// State `index` (of all windows', in the order pushed).
    fn state(&self, index: usize) -> &[u8] {
        let start = index.checked_sub(1).map_or(0, |b| self.state_ends[b]);
        &self.bytes[start..self.state_ends[index]]
    }

    /// The states of window `window`, in the order pushed.
    fn states(&self, window: usize) -> impl ExactSizeIterator<Item = &[u8]> {
        self.range(window).map(|state| self.state(state))
    }

    /// The state of window `window` once combined: `None` if it has none.
    fn only(&self, window: usize) -> Option<&[u8]> {
        let states = self.range(window);
        debug_assert!(states.len() <= 1, "combined");
        (!states.is_empty()).then(|| self.state(states.start))
    }
}

/// Writes into `out` the state key of `key` in `window`: key group, window
/// end and start (sign-flipped big-endian, so they sort in time order),
/// then the key; see [`decode_state_key`].
fn state_key_into(out: &mut Vec<u8>, max_parallelism: u16, key: Option<&[u8]>, window: &Window) {
    out.clear();
    let group = key.map_or(0, |key| key_group(key, max_parallelism));
    out.extend_from_slice(&group.to_be_bytes());
    out.extend_from_slice(&((window.end as u64) ^ (1 << 63)).to_be_bytes());
    out.extend_from_slice(&((window.start as u64) ^ (1 << 63)).to_be_bytes());
    match key {
        Some(key) => {
            out.push(1);
            out.extend_from_slice(key);
        }
        None => out.push(0),
    }
}

/// The key group, key and window of a state key that
/// [`WindowOperator::fill_state_key`] built.
fn decode_state_key(state_key: &[u8]) -> Option<(u16, Key, Window)> {
    let time = |at: usize| -> Option<i64> {
        let bytes: [u8; 8] = state_key.get(at..at + 8)?.try_into().ok()?;
        Some((u64::from_be_bytes(bytes) ^ (1 << 63)) as i64)
    };
    let group = u16::from_be_bytes(state_key.get(..2)?.try_into().ok()?);
    let (end, start) = (time(2)?, time(10)?);
    let key = match state_key.get(18)? {
        0 => None,
        _ => key_of(Some(state_key.get(19..)?)),
    };
    Some((group, key, Window::new(start, end)))
}

fn append_events(existing: Option<&[u8]>, mut more: BatchWriter) -> Vec<u8> {
    let Some(existing) = existing.and_then(|b| Batch::new(b).ok()) else {
        return more.finish_into();
    };
    let mut writer = BatchWriter::with_capacity(existing.as_bytes().len() + more.byte_len());
    for e in existing.iter() {
        writer.push_event(&e);
    }
    let added = more.finish();
    if let Ok(added) = Batch::new(&added) {
        for e in added.iter() {
            writer.push_event(&e);
        }
    }
    writer.finish()
}

fn sorted_by_time(payload: &[u8]) -> Vec<u8> {
    let Ok(batch) = Batch::new(payload) else {
        return payload.to_vec();
    };
    let mut events: Vec<EventRef<'_>> = batch.iter().collect();
    events.sort_by_key(|e| e.timestamp);
    let mut writer = BatchWriter::with_capacity(payload.len());
    for e in &events {
        writer.push_event(e);
    }
    writer.finish()
}

/// The accumulators a guest `call` returned: `count` slots, none empty.
///
/// # Errors
/// Anything else, named as the function's bad output.
pub(super) fn returned<'a>(
    bytes: &'a [u8],
    count: usize,
    call: &str,
) -> Result<Slots<'a>, WindowError> {
    Slots::new(bytes)
        .ok()
        .filter(|s| s.len() == count && s.empty_slots() == 0)
        .ok_or_else(|| {
            bad_output(format!(
                "`{call}` must return {count} accumulators in the slots format, none empty"
            ))
        })
}

fn bad_output(message: String) -> WindowError {
    WindowError::Function(OperatorFailure {
        kind: FailureKind::BadOutput,
        message,
        event_index: None,
        output_before: Vec::new(),
    })
}

fn bad_input(name: &str, e: &dyn std::fmt::Display) -> WindowError {
    WindowError::Function(OperatorFailure {
        kind: FailureKind::BadOutput,
        message: format!("`{name}` got a malformed batch: {e}"),
        event_index: None,
        output_before: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::{Accumulators, PREFETCH_AHEAD, prefetch_ahead};

    #[test]
    fn prefetching_starts_with_the_first_items_then_keeps_its_distance() {
        assert_eq!(prefetch_ahead(0), 0..=PREFETCH_AHEAD);
        assert_eq!(prefetch_ahead(1), PREFETCH_AHEAD + 1..=PREFETCH_AHEAD + 1);
    }

    #[test]
    fn accumulators_keep_each_windows_states_in_order() {
        let mut lists = Accumulators::default();
        lists.push_state(b"a");
        lists.push_state(b"");
        lists.push_state(b"ccc");
        lists.end_window();
        lists.end_window(); // a window without state
        lists.push_state(b"dd");
        lists.end_window();
        assert_eq!(lists.windows(), 3);
        assert_eq!(lists.byte_len(), 6);
        assert_eq!(
            lists.states(0).collect::<Vec<_>>(),
            [&b"a"[..], b"", b"ccc"]
        );
        assert_eq!(lists.count(0), 3);
        assert_eq!(lists.states(1).len(), 0);
        assert_eq!(lists.count(2), 1);
        assert_eq!(lists.only(1), None);
        assert_eq!(lists.only(2), Some(&b"dd"[..]));
    }
}
