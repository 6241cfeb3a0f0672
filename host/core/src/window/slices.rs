//! The accumulators of open slices, in memory, in front of the store.
//!
//! A tumbling or sliding window aggregate reads and writes one accumulator
//! per (key, slice) for nearly every event. In the store those entries are
//! spread over one table of every slice and key, a cache line each with
//! the window in its key, and the table outgrows the CPU's cache long
//! before the slice being filled does. Here each slice has a table of its
//! own holding (key, accumulator) in 32 bytes, and dropping a slice after
//! its last window is one table dropped, not a delete per key. A slice of
//! many keys still outgrows the CPU's L2 cache (10 000 keys: 528 KiB), so
//! the operator prefetches entries a few lookups ahead
//! ([`SliceCache::prefetch`]).
//!
//! It is a write-back cache. Entries reach the store when a checkpoint is
//! taken (the store's copy must hold them) and when the cache outgrows its
//! budget, which empties it. A slice's table is *complete* when the store
//! cannot hold anything of that slice the table lacks (the slice began
//! after the last restore or eviction): a key missing from it is new, and
//! nobody asks the store.
//!
//! Keys longer than the cache takes (64 KiB) are not cached: their state
//! is read from and written to the store directly, and the slice is marked
//! as having entries there.

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use smallvec::SmallVec;

use super::Window;
use crate::keys::same_key;
use crate::state::StateError;

/// The bytes of cached entries (their keys, accumulators and slots) above
/// which the cache is written to the store and emptied; lower when the
/// store is bounded to less (RocksDB's hot tier), so that a window subtask
/// keeps no more state in memory than `hot_tier_mb` twice.
pub(super) const BUDGET: usize = 64 << 20;

/// Key and accumulator bytes kept inside an entry's slot (a short key and
/// an 8-byte accumulator fit); longer ones live on the heap.
const INLINE: usize = 16;

/// `key_len` of an entry without a key (events with none).
const NO_KEY: u16 = u16::MAX;

/// The longest key the cache holds, in bytes.
pub(super) const MAX_KEY: usize = NO_KEY as usize - 1;

/// One key's accumulator in one slice: 32 bytes, aligned so that it sits
/// in one cache line.
#[derive(Debug)]
#[repr(align(32))]
struct Entry {
    /// Half of the key's hash: the table's hash is built from it (see
    /// [`table_hash`]), and lookups compare it before the key.
    hash: u32,
    /// The key's length, or [`NO_KEY`].
    key_len: u16,
    /// Not yet in the store.
    dirty: bool,
    /// The key, then the accumulator.
    data: SmallVec<[u8; INLINE]>,
}

impl Entry {
    fn key_bytes(&self) -> usize {
        if self.key_len == NO_KEY {
            0
        } else {
            usize::from(self.key_len)
        }
    }

    fn key(&self) -> Option<&[u8]> {
        (self.key_len != NO_KEY).then(|| &self.data[..usize::from(self.key_len)])
    }

    fn acc(&self) -> &[u8] {
        &self.data[self.key_bytes()..]
    }

    fn set_acc(&mut self, acc: &[u8], dirty: bool) {
        self.data.truncate(self.key_bytes());
        self.data.extend_from_slice(acc);
        self.dirty = dirty;
    }

    fn size(&self) -> usize {
        let heap = if self.data.spilled() {
            self.data.len()
        } else {
            0
        };
        std::mem::size_of::<Entry>() + heap
    }
}

/// The table hash of an entry whose key hashed to `half`: both the bucket
/// (low bits) and the control byte (top bits) come from those 32 bits.
fn table_hash(half: u32) -> u64 {
    (u64::from(half) << 32) | u64::from(half)
}

/// One slice's entries.
#[derive(Debug, Default)]
struct Table {
    entries: HashTable<Entry>,
    /// Nothing of the slice can be in the store that is not here.
    complete: bool,
    /// Some entry was written to the store.
    flushed: bool,
}

impl Table {
    fn find(&self, hash: u32, key: Option<&[u8]>) -> Option<&Entry> {
        self.entries.find(table_hash(hash), |e| {
            e.hash == hash && same_key(e.key(), key)
        })
    }
}

/// A key's hash for [`SliceCache`]'s lookups.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyHash(u32);

impl KeyHash {
    /// A hash of the key together with `unit` (grouping a batch's events
    /// by key and slice).
    pub(super) fn with(self, unit: &Window) -> u64 {
        table_hash(self.0) ^ (unit.start as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// The accumulators of open slices (see the module docs).
#[derive(Debug)]
pub(super) struct SliceCache {
    slices: BTreeMap<Window, Table>,
    hasher: foldhash::fast::RandomState,
    /// Bytes of all entries.
    bytes: usize,
    budget: usize,
    /// Longer keys are not cached.
    max_key: usize,
    /// Slices ending at or before this may have entries in the store that
    /// are not cached (restored or evicted ones); later ones cannot.
    stored_until: i64,
}

impl SliceCache {
    /// An empty cache written out past `budget` bytes, holding keys of up
    /// to `max_key` bytes (at most [`MAX_KEY`]).
    pub(super) fn new(budget: usize, max_key: usize) -> Self {
        SliceCache {
            slices: BTreeMap::new(),
            hasher: foldhash::fast::RandomState::default(),
            bytes: 0,
            budget,
            max_key: max_key.min(MAX_KEY),
            stored_until: i64::MIN,
        }
    }

    /// The hash to look `key` up with; `None` for a key too long to cache,
    /// whose state the store keeps.
    pub(super) fn hash(&self, key: Option<&[u8]>) -> Option<KeyHash> {
        if key.is_some_and(|k| k.len() > self.max_key) {
            return None;
        }
        // The high half: foldhash mixes it best.
        Some(KeyHash((self.hasher.hash_one(key) >> 32) as u32))
    }

    /// Whether only the store can tell `key`'s accumulator in `slice`:
    /// the cache does not have it and the store may.
    pub(super) fn needs_store(&self, slice: &Window, key: Option<&[u8]>, hash: KeyHash) -> bool {
        match self.slices.get(slice) {
            Some(table) => !table.complete && table.find(hash.0, key).is_none(),
            None => slice.end <= self.stored_until,
        }
    }

    /// The cached accumulator of `key` in `slice`.
    pub(super) fn get(&self, slice: &Window, key: Option<&[u8]>, hash: KeyHash) -> Option<&[u8]> {
        self.slices.get(slice)?.find(hash.0, key).map(Entry::acc)
    }

    /// Asks the CPU to start loading where a lookup of `key` in `slice`
    /// will most likely find it. A slice with many keys spreads its
    /// entries over more memory than the CPU's closest caches hold, and a
    /// batch's keys come in no order, so without this each lookup waits
    /// for memory in turn.
    pub(super) fn prefetch(&self, slice: &Window, hash: KeyHash) {
        let Some(table) = self.slices.get(slice) else {
            return;
        };
        // hashbrown probes from the bucket the hash's low bits name; the
        // entry is there or a few buckets on. (Only a hint: if that ever
        // changes, lookups are as slow as without it, and as right.)
        let home = table_hash(hash.0) as usize & table.entries.num_buckets().wrapping_sub(1);
        if let Some(entry) = table.entries.get_bucket(home) {
            prefetch(entry);
        }
    }

    /// Sets `key`'s accumulator in `slice`; `dirty` when the store does
    /// not have it (false: it was just read from there).
    pub(super) fn put(
        &mut self,
        slice: &Window,
        key: Option<&[u8]>,
        hash: KeyHash,
        acc: &[u8],
        dirty: bool,
    ) {
        let stored_until = self.stored_until;
        let table = self.slices.entry(*slice).or_insert_with(|| Table {
            complete: slice.end > stored_until,
            ..Table::default()
        });
        let h = hash.0;
        match table
            .entries
            .find_mut(table_hash(h), |e| e.hash == h && same_key(e.key(), key))
        {
            Some(entry) => {
                self.bytes -= entry.size();
                entry.set_acc(acc, dirty);
                self.bytes += entry.size();
            }
            None => {
                let key_bytes = key.unwrap_or_default();
                let mut data = SmallVec::with_capacity(key_bytes.len() + acc.len());
                data.extend_from_slice(key_bytes);
                data.extend_from_slice(acc);
                debug_assert!(
                    key.is_none_or(|k| k.len() <= MAX_KEY),
                    "`hash` refuses longer keys"
                );
                let entry = Entry {
                    hash: h,
                    key_len: key.map_or(NO_KEY, |k| u16::try_from(k.len()).unwrap_or(NO_KEY)),
                    dirty,
                    data,
                };
                self.bytes += entry.size();
                table
                    .entries
                    .insert_unique(table_hash(h), entry, |e| table_hash(e.hash));
            }
        }
    }

    /// Drops `slice` (its last window is done); says whether the store may
    /// hold entries of it, which the caller then deletes.
    pub(super) fn drop_slice(&mut self, slice: &Window) -> bool {
        match self.slices.remove(slice) {
            Some(table) => {
                self.bytes -= table.entries.iter().map(Entry::size).sum::<usize>();
                table.flushed || !table.complete
            }
            None => slice.end <= self.stored_until,
        }
    }

    /// Notes that the store holds entries of `slice` (a restore).
    pub(super) fn note_stored(&mut self, slice: &Window) {
        self.stored_until = self.stored_until.max(slice.end);
    }

    /// Notes that an entry of `slice` was written to the store directly (a
    /// key too long to cache): dropping the slice must delete there.
    pub(super) fn note_written_past(&mut self, slice: &Window) {
        let stored_until = self.stored_until;
        self.slices
            .entry(*slice)
            .or_insert_with(|| Table {
                complete: slice.end > stored_until,
                ..Table::default()
            })
            .flushed = true;
    }

    /// Whether the cache holds more than its budget.
    pub(super) fn over_budget(&self) -> bool {
        self.bytes > self.budget
    }

    /// Writes every entry the store lacks with `write(key, slice,
    /// accumulator)`; they are then clean.
    ///
    /// # Errors
    /// `write` failed; entries not yet written stay dirty.
    pub(super) fn flush(
        &mut self,
        mut write: impl FnMut(Option<&[u8]>, &Window, &[u8]) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        for (slice, table) in &mut self.slices {
            for entry in table.entries.iter_mut().filter(|e| e.dirty) {
                write(entry.key(), slice, entry.acc())?;
                entry.dirty = false;
                table.flushed = true;
            }
        }
        Ok(())
    }

    /// Empties the cache; it must have been flushed. Its slices are then
    /// read from the store again.
    pub(super) fn evict(&mut self) {
        debug_assert!(
            self.slices
                .values()
                .all(|t| t.entries.iter().all(|e| !e.dirty))
        );
        if let Some((last, _)) = self.slices.last_key_value() {
            self.stored_until = self.stored_until.max(last.end);
        }
        // Earlier slices can end later than the last one only if slices
        // differ in size, which they do not within one operator.
        self.slices.clear();
        self.bytes = 0;
    }
}

/// A hint to the CPU to load `entry`'s cache line.
fn prefetch(entry: &Entry) {
    prefetch_address(std::ptr::from_ref(entry).cast());
}

/// A hint to the CPU to load the cache line at `at`. Any address will
/// do: a prefetch neither reads into the program nor faults, so one
/// that has gone stale only wastes the hint.
#[allow(unsafe_code)] // denied in the workspace; weir-core's one use
pub(super) fn prefetch_address(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` does not dereference its argument for the
    // program; it is defined for every address.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
    }

    fn slice(start: i64) -> Window {
        Window::new(start, start + 10)
    }

    #[test]
    fn a_fresh_slice_is_complete_and_a_restored_one_is_not() {
        let mut cache = SliceCache::new(BUDGET, MAX_KEY);
        let k = Some(&b"k"[..]);
        let h = cache.hash(k).unwrap();
        assert!(!cache.needs_store(&slice(0), k, h));
        cache.note_stored(&slice(0));
        assert!(cache.needs_store(&slice(0), k, h));
        assert!(cache.needs_store(&slice(-10), k, h));
        assert!(!cache.needs_store(&slice(10), k, h));
        // Read from the store: the cache has it now.
        cache.put(&slice(0), k, h, b"1", false);
        assert!(!cache.needs_store(&slice(0), k, h));
        assert_eq!(cache.get(&slice(0), k, h), Some(&b"1"[..]));
        // Another key of the restored slice still needs the store.
        let other = Some(&b"other"[..]);
        assert!(cache.needs_store(&slice(0), other, cache.hash(other).unwrap()));
    }

    #[test]
    fn keys_with_none_and_empty_and_long_names_are_apart() {
        let mut cache = SliceCache::new(BUDGET, MAX_KEY);
        let keys: [Option<&[u8]>; 4] = [None, Some(b""), Some(b"a"), Some(&[7; 100])];
        for (n, key) in keys.iter().enumerate() {
            let h = cache.hash(*key).unwrap();
            cache.put(&slice(0), *key, h, &[n as u8; 20], true);
        }
        for (n, key) in keys.iter().enumerate() {
            let got = cache.get(&slice(0), *key, cache.hash(*key).unwrap());
            assert_eq!(got, Some(&[n as u8; 20][..]), "{key:?}");
        }
    }

    #[test]
    fn flush_writes_only_what_changed_and_drop_says_whether_to_delete() {
        let mut cache = SliceCache::new(BUDGET, MAX_KEY);
        let (a, b) = (Some(&b"a"[..]), Some(&b"b"[..]));
        let (ha, hb) = (cache.hash(a).unwrap(), cache.hash(b).unwrap());
        cache.put(&slice(0), a, ha, b"1", true);
        cache.put(&slice(10), b, hb, b"2", true);
        let mut written = Vec::new();
        let mut write = |k: Option<&[u8]>, w: &Window, v: &[u8]| {
            written.push((k.map(<[u8]>::to_vec), w.start, v.to_vec()));
            Ok(())
        };
        cache.flush(&mut write).unwrap();
        cache.put(&slice(10), b, hb, b"3", true);
        cache.flush(&mut write).unwrap();
        written.sort();
        assert_eq!(
            written,
            [
                (Some(b"a".to_vec()), 0, b"1".to_vec()),
                (Some(b"b".to_vec()), 10, b"2".to_vec()),
                (Some(b"b".to_vec()), 10, b"3".to_vec()),
            ]
        );
        // Both reached the store: their deletes are needed.
        assert!(cache.drop_slice(&slice(0)));
        assert!(cache.drop_slice(&slice(10)));
        // A slice that never did is dropped with its table alone.
        cache.put(&slice(20), a, ha, b"1", true);
        assert!(!cache.drop_slice(&slice(20)));
        assert!(!cache.over_budget());
    }

    #[test]
    fn eviction_empties_the_cache_and_sends_reads_to_the_store() {
        let mut cache = SliceCache::new(100, MAX_KEY);
        let a = Some(&b"a"[..]);
        let ha = cache.hash(a).unwrap();
        for start in [0, 10, 20, 30] {
            cache.put(&slice(start), a, ha, &[1; 8], true);
        }
        assert!(cache.over_budget());
        cache.flush(|_, _, _| Ok(())).unwrap();
        cache.evict();
        assert!(!cache.over_budget());
        assert_eq!(cache.get(&slice(30), a, ha), None);
        assert!(cache.needs_store(&slice(30), a, ha));
        assert!(!cache.needs_store(&slice(40), a, ha));
        assert!(cache.drop_slice(&slice(0)));
    }
}
