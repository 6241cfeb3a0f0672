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

use std::cell::Cell;
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

    /// Sets the accumulator; returns how many bytes the entry grew by
    /// (its [`Entry::size`] after minus before).
    fn set_acc(&mut self, acc: &[u8], dirty: bool) -> isize {
        // `key_len` is read before `dirty`, beside it, is written. The
        // other way round, the compiler read both as one word, and that
        // read waited for the one-byte write to reach the cache: q5 ran
        // 7 % slower.
        let at = self.key_bytes();
        self.dirty = dirty;
        if self.data.len() - at == acc.len() {
            // The usual update: same size, in place.
            copy_short(&mut self.data[at..], acc);
            return 0;
        }
        let before = self.size();
        self.data.truncate(at);
        self.data.extend_from_slice(acc);
        self.size() as isize - before as isize
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

/// Copies `from` into `to`, of the same length (or panics, as
/// `copy_from_slice` does). Accumulators are mostly a few bytes (a
/// counter's varint is one): up to 16 are moved as two overlapping words,
/// halves or bytes, without a call to `memcpy`.
fn copy_short(to: &mut [u8], from: &[u8]) {
    let len = from.len();
    if len > 16 || to.len() != len {
        to.copy_from_slice(from);
    } else if len >= 8 {
        to[..8].copy_from_slice(&from[..8]);
        to[len - 8..].copy_from_slice(&from[len - 8..]);
    } else if len >= 4 {
        to[..4].copy_from_slice(&from[..4]);
        to[len - 4..].copy_from_slice(&from[len - 4..]);
    } else if len > 0 {
        to[0] = from[0];
        to[len / 2] = from[len / 2];
        to[len - 1] = from[len - 1];
    }
}

/// Up to 16 bytes as two words that together hold every byte (as
/// foldhash reads short input: the first and last 8, 4 or 1 bytes).
fn short_key_words(key: &[u8]) -> (u64, u64) {
    let len = key.len();
    let word = |at: usize| u64::from_le_bytes(key[at..at + 8].try_into().unwrap_or_default());
    let half = |at: usize| {
        u64::from(u32::from_le_bytes(
            key[at..at + 4].try_into().unwrap_or_default(),
        ))
    };
    if len >= 8 {
        (word(0), word(len - 8))
    } else if len >= 4 {
        (half(0), half(len - 4))
    } else if len > 0 {
        let bytes =
            u64::from(key[0]) << 16 | u64::from(key[len / 2]) << 8 | u64::from(key[len - 1]);
        (bytes, 0)
    } else {
        (0, 0)
    }
}

/// The 128-bit product of `a` and `b`, its halves xor-ed.
fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

/// The table hash of an entry whose key hashed to `half`: both the bucket
/// (low bits) and the control byte (top bits) come from those 32 bits.
fn table_hash(half: u32) -> u64 {
    (u64::from(half) << 32) | u64::from(half)
}

/// Where [`SliceCache::get`] found an entry: [`SliceCache::put`] writes
/// there without looking the key up again, unless the cache has taken in
/// or let go of an entry since.
#[derive(Debug, Clone, Copy)]
pub(super) struct Found {
    bucket: usize,
    generation: u64,
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

/// The open slices' tables, in window order. They are few (a sliding
/// window's size over its slide) and a batch's lookups mostly go to one
/// of them, so the last one found is tried first.
#[derive(Debug, Default)]
struct Slices {
    tables: Vec<(Window, Table)>,
    last: Cell<usize>,
}

impl Slices {
    fn position(&self, slice: &Window) -> Option<usize> {
        let last = self.last.get();
        if self.tables.get(last).is_some_and(|(w, _)| w == slice) {
            return Some(last);
        }
        let at = self.tables.iter().position(|(w, _)| w == slice)?;
        self.last.set(at);
        Some(at)
    }

    fn get(&self, slice: &Window) -> Option<&Table> {
        self.position(slice).map(|at| &self.tables[at].1)
    }

    fn get_mut(&mut self, slice: &Window) -> Option<&mut Table> {
        self.position(slice).map(|at| &mut self.tables[at].1)
    }

    /// `slice`'s table, made by `new` if there is none.
    fn get_or_insert(&mut self, slice: &Window, new: impl FnOnce() -> Table) -> &mut Table {
        let at = match self.position(slice) {
            Some(at) => at,
            None => {
                let at = self.tables.partition_point(|(w, _)| w < slice);
                self.tables.insert(at, (*slice, new()));
                self.last.set(at);
                at
            }
        };
        &mut self.tables[at].1
    }

    fn remove(&mut self, slice: &Window) -> Option<Table> {
        let at = self.position(slice)?;
        Some(self.tables.remove(at).1)
    }
}

/// The accumulators of open slices (see the module docs).
#[derive(Debug)]
pub(super) struct SliceCache {
    slices: Slices,
    hasher: foldhash::fast::RandomState,
    /// Bytes of all entries.
    bytes: usize,
    budget: usize,
    /// Mixed into [`Self::hash`]'s short keys.
    seeds: [u64; 2],
    /// Longer keys are not cached.
    max_key: usize,
    /// Slices ending at or before this may have entries in the store that
    /// are not cached (restored or evicted ones); later ones cannot.
    stored_until: i64,
    /// Counts inserts and removals: a [`Found`] bucket of an older
    /// generation may hold another entry now.
    generation: u64,
}

impl SliceCache {
    /// An empty cache written out past `budget` bytes, holding keys of up
    /// to `max_key` bytes (at most [`MAX_KEY`]).
    pub(super) fn new(budget: usize, max_key: usize) -> Self {
        let hasher = foldhash::fast::RandomState::default();
        SliceCache {
            slices: Slices::default(),
            seeds: [hasher.hash_one(1u64), hasher.hash_one(2u64)],
            hasher,
            bytes: 0,
            budget,
            max_key: max_key.min(MAX_KEY),
            stored_until: i64::MIN,
            generation: 0,
        }
    }

    /// The bytes it holds before it is written out.
    #[cfg(test)]
    pub(super) fn budget(&self) -> usize {
        self.budget
    }

    /// The hash to look `key` up with; `None` for a key too long to cache,
    /// whose state the store keeps.
    pub(super) fn hash(&self, key: Option<&[u8]>) -> Option<KeyHash> {
        let hash = match key {
            Some(k) if k.len() > self.max_key => return None,
            // Most keys (ids, short names) are two words at most, hashed
            // inline: the generic path was 2 % of a q5 run.
            Some(k) if k.len() <= 16 => {
                let (a, b) = short_key_words(k);
                folded_multiply(a ^ self.seeds[0], b ^ self.seeds[1] ^ k.len() as u64)
            }
            _ => self.hasher.hash_one(key),
        };
        // The high half: the multiply mixes it best.
        Some(KeyHash((hash >> 32) as u32))
    }

    /// Whether only the store can tell `key`'s accumulator in `slice`:
    /// the cache does not have it and the store may.
    pub(super) fn needs_store(&self, slice: &Window, key: Option<&[u8]>, hash: KeyHash) -> bool {
        match self.slices.get(slice) {
            Some(table) => !table.complete && table.find(hash.0, key).is_none(),
            None => slice.end <= self.stored_until,
        }
    }

    /// The cached accumulator of `key` in `slice`, and where it is.
    pub(super) fn get(
        &self,
        slice: &Window,
        key: Option<&[u8]>,
        hash: KeyHash,
    ) -> Option<(&[u8], Found)> {
        let entries = &self.slices.get(slice)?.entries;
        let h = hash.0;
        let bucket =
            entries.find_bucket_index(table_hash(h), |e| e.hash == h && same_key(e.key(), key))?;
        let found = Found {
            bucket,
            generation: self.generation,
        };
        entries.get_bucket(bucket).map(|e| (e.acc(), found))
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
            // Buckets past the home one lie below it in memory: an entry
            // a few probes on is in the next line down.
            prefetch_address(std::ptr::from_ref(entry).cast::<u8>().wrapping_sub(64));
        }
    }

    /// Sets `key`'s accumulator in `slice`, where [`Self::get`] `found`
    /// it if nothing was inserted or removed since; `dirty` when the store
    /// does not have it (false: it was just read from there).
    pub(super) fn put(
        &mut self,
        slice: &Window,
        key: Option<&[u8]>,
        hash: KeyHash,
        acc: &[u8],
        dirty: bool,
        found: Option<Found>,
    ) {
        if let Some(found) = found.filter(|f| f.generation == self.generation)
            && let Some(entry) = self
                .slices
                .get_mut(slice)
                .and_then(|t| t.entries.get_bucket_mut(found.bucket))
        {
            debug_assert!(entry.hash == hash.0 && same_key(entry.key(), key));
            self.bytes = self.bytes.saturating_add_signed(entry.set_acc(acc, dirty));
            return;
        }
        let stored_until = self.stored_until;
        // A new slice will likely hold as many keys as the newest one.
        let keys = self
            .slices
            .tables
            .last()
            .map_or(0, |(_, t)| t.entries.len());
        let table = self.slices.get_or_insert(slice, || Table {
            entries: HashTable::with_capacity(keys),
            complete: slice.end > stored_until,
            ..Table::default()
        });
        let h = hash.0;
        match table
            .entries
            .find_mut(table_hash(h), |e| e.hash == h && same_key(e.key(), key))
        {
            Some(entry) => {
                self.bytes = self.bytes.saturating_add_signed(entry.set_acc(acc, dirty));
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
                self.generation += 1;
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
                self.generation += 1;
                self.bytes -= table.entries.iter().map(Entry::size).sum::<usize>();
                table.flushed || !table.complete
            }
            None => slice.end <= self.stored_until,
        }
    }

    /// Removes the slices that end at or before `watermark`, handing
    /// `each` every entry's slice, key and accumulator (for two-phase
    /// aggregation's first phase, which sends them on and keeps no store).
    pub(super) fn drain_until(
        &mut self,
        watermark: i64,
        mut each: impl FnMut(&Window, Option<&[u8]>, &[u8]),
    ) {
        let tables = &mut self.slices.tables;
        let closed = tables
            .iter()
            .take_while(|(slice, _)| slice.max_timestamp() <= watermark)
            .count();
        if closed == 0 {
            return;
        }
        for (slice, table) in tables.drain(..closed) {
            for entry in &table.entries {
                self.bytes -= entry.size();
                each(&slice, entry.key(), entry.acc());
            }
        }
        self.slices.last.set(0);
        self.generation += 1;
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
            .get_or_insert(slice, || Table {
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
        for (slice, table) in &mut self.slices.tables {
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
                .tables
                .iter()
                .all(|(_, t)| t.entries.iter().all(|e| !e.dirty))
        );
        if let Some((last, _)) = self.slices.tables.last() {
            self.stored_until = self.stored_until.max(last.end);
        }
        // Earlier slices can end later than the last one only if slices
        // differ in size, which they do not within one operator.
        self.slices.tables.clear();
        self.bytes = 0;
        self.generation += 1;
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

    #[test]
    fn copy_short_copies_every_byte_at_every_length() {
        let from: Vec<u8> = (1..=24).collect();
        for len in 0..=from.len() {
            let mut to = vec![0; len];
            copy_short(&mut to, &from[..len]);
            assert_eq!(to, &from[..len]);
        }
        let mismatched = std::panic::catch_unwind(|| copy_short(&mut [0; 3], &[1; 2]));
        assert!(mismatched.is_err(), "lengths that differ are refused");
    }

    #[test]
    fn every_byte_of_a_short_key_is_hashed() {
        for len in 0..=16usize {
            let key: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
            for at in 0..len {
                let mut other = key.clone();
                other[at] ^= 0x5a;
                assert_ne!(short_key_words(&key), short_key_words(&other), "{len} {at}");
            }
        }
    }

    #[test]
    fn numeric_keys_spread_over_a_tables_buckets_and_control_bytes() {
        let cache = SliceCache::new(BUDGET, MAX_KEY);
        let hashes: Vec<u64> = (1000..11_000u32)
            .map(|n| table_hash(cache.hash(Some(n.to_string().as_bytes())).unwrap().0))
            .collect();
        let distinct = |bits: fn(u64) -> u64| {
            hashes
                .iter()
                .map(|h| bits(*h))
                .collect::<std::collections::HashSet<_>>()
                .len()
        };
        // 10 000 random keys over 16 384 buckets fill about 7 500.
        assert!(
            distinct(|h| h & 0x3fff) > 7_000,
            "{}",
            distinct(|h| h & 0x3fff)
        );
        // hashbrown's control byte is the top 7 bits.
        assert_eq!(distinct(|h| h >> 57), 128);
        assert_ne!(
            cache.hash(None).unwrap().0,
            cache.hash(Some(b"")).unwrap().0
        );
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
        cache.put(&slice(0), k, h, b"1", false, None);
        assert!(!cache.needs_store(&slice(0), k, h));
        assert_eq!(cache.get(&slice(0), k, h).map(|g| g.0), Some(&b"1"[..]));
        // Another key of the restored slice still needs the store.
        let other = Some(&b"other"[..]);
        assert!(cache.needs_store(&slice(0), other, cache.hash(other).unwrap()));
    }

    #[test]
    fn a_found_entry_is_written_in_place_until_an_insert_moves_entries() {
        let mut cache = SliceCache::new(BUDGET, MAX_KEY);
        let keys: Vec<Vec<u8>> = (0..100u32).map(|n| n.to_string().into_bytes()).collect();
        let hash = |cache: &SliceCache, k: &[u8]| cache.hash(Some(k)).unwrap();
        for k in &keys {
            cache.put(&slice(0), Some(k), hash(&cache, k), b"0", true, None);
        }
        let found: Vec<Found> = keys
            .iter()
            .map(|k| cache.get(&slice(0), Some(k), hash(&cache, k)).unwrap().1)
            .collect();
        // Where it was found, with an accumulator of another size too.
        cache.put(
            &slice(0),
            Some(&keys[0]),
            hash(&cache, &keys[0]),
            b"11",
            true,
            Some(found[0]),
        );
        // A thousand inserts grow the table and move every entry: the
        // old places are stale, and the keys are found again.
        for n in 1000..2000u32 {
            let k = n.to_string().into_bytes();
            cache.put(&slice(0), Some(&k), hash(&cache, &k), b"x", true, None);
        }
        for (k, at) in keys.iter().zip(&found).skip(1) {
            cache.put(&slice(0), Some(k), hash(&cache, k), k, true, Some(*at));
        }
        for k in &keys[1..] {
            let got = cache.get(&slice(0), Some(k), hash(&cache, k)).unwrap().0;
            assert_eq!(got, &k[..]);
        }
        let first = cache.get(&slice(0), Some(&keys[0]), hash(&cache, &keys[0]));
        assert_eq!(first.unwrap().0, b"11");
    }

    #[test]
    fn keys_with_none_and_empty_and_long_names_are_apart() {
        let mut cache = SliceCache::new(BUDGET, MAX_KEY);
        let keys: [Option<&[u8]>; 4] = [None, Some(b""), Some(b"a"), Some(&[7; 100])];
        for (n, key) in keys.iter().enumerate() {
            let h = cache.hash(*key).unwrap();
            cache.put(&slice(0), *key, h, &[n as u8; 20], true, None);
        }
        for (n, key) in keys.iter().enumerate() {
            let got = cache
                .get(&slice(0), *key, cache.hash(*key).unwrap())
                .map(|g| g.0);
            assert_eq!(got, Some(&[n as u8; 20][..]), "{key:?}");
        }
    }

    #[test]
    fn flush_writes_only_what_changed_and_drop_says_whether_to_delete() {
        let mut cache = SliceCache::new(BUDGET, MAX_KEY);
        let (a, b) = (Some(&b"a"[..]), Some(&b"b"[..]));
        let (ha, hb) = (cache.hash(a).unwrap(), cache.hash(b).unwrap());
        cache.put(&slice(0), a, ha, b"1", true, None);
        cache.put(&slice(10), b, hb, b"2", true, None);
        let mut written = Vec::new();
        let mut write = |k: Option<&[u8]>, w: &Window, v: &[u8]| {
            written.push((k.map(<[u8]>::to_vec), w.start, v.to_vec()));
            Ok(())
        };
        cache.flush(&mut write).unwrap();
        cache.put(&slice(10), b, hb, b"3", true, None);
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
        cache.put(&slice(20), a, ha, b"1", true, None);
        assert!(!cache.drop_slice(&slice(20)));
        assert!(!cache.over_budget());
    }

    #[test]
    fn eviction_empties_the_cache_and_sends_reads_to_the_store() {
        let mut cache = SliceCache::new(100, MAX_KEY);
        let a = Some(&b"a"[..]);
        let ha = cache.hash(a).unwrap();
        for start in [0, 10, 20, 30] {
            cache.put(&slice(start), a, ha, &[1; 8], true, None);
        }
        assert!(cache.over_budget());
        cache.flush(|_, _, _| Ok(())).unwrap();
        cache.evict();
        assert!(!cache.over_budget());
        assert!(cache.get(&slice(30), a, ha).is_none());
        assert!(cache.needs_store(&slice(30), a, ha));
        assert!(!cache.needs_store(&slice(40), a, ha));
        assert!(cache.drop_slice(&slice(0)));
    }
}
