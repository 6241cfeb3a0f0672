//! The memory backend: each subtask's state is a hash map, and its
//! checkpoints are **incremental**.
//!
//! A checkpoint's copy of a store is a chain of entry files under the
//! subtask's `state/` directory, applied in name order on restore: a full
//! file, then one file per later checkpoint holding only the entries put or
//! deleted since the one before (a deletion is a tombstone). The files are
//! never changed once written, so a checkpoint hard-links the chain of the
//! one before into its own directory and adds one file: its cost grows with
//! what changed, not with the state. When the chain holds much more than
//! the live state (overwritten entries) or grows long, the next checkpoint
//! writes a full file and starts a new chain.
//!
//! Taking the copy (one pass over the table, encoding the changed entries
//! into one buffer) happens at the barrier; writing it to disk is
//! [`Deferred`].

use std::io::{BufReader, Read};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use smallvec::SmallVec;

use super::{Deferred, StateBackend, StateError, StateStore, group_of, write_synced};

/// Everything in memory.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryBackend;

impl StateBackend for MemoryBackend {
    fn open(&self, _operator: &str, _subtask: usize) -> Result<Box<dyn StateStore>, StateError> {
        Ok(Box::new(MemoryStore::default()))
    }

    fn restore(
        &self,
        _operator: &str,
        _subtask: usize,
        from: &[PathBuf],
        groups: RangeInclusive<u16>,
    ) -> Result<Box<dyn StateStore>, StateError> {
        let mut store = MemoryStore::default();
        let files: Vec<Vec<PathBuf>> = from
            .iter()
            .map(|d| chain_files(d))
            .collect::<Result<_, _>>()?;
        // Room for the entries up front (about one per 64 bytes of file),
        // rather than doubling the table, moving every entry, log n times.
        let bytes: u64 = files
            .iter()
            .flatten()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        let room = usize::try_from(bytes / 64).unwrap_or(0);
        store.map.reserve(room, |e| e.hash);
        for chain in files {
            for file in chain {
                read_entries(&file, &groups, |key, value| match value {
                    Some(value) => store.insert(key, value),
                    None => store.remove(key),
                })?;
            }
        }
        Ok(Box::new(store))
    }
}

/// Entry files end with this: `000001.kv`, `000002.kv`, …
pub const ENTRIES_EXTENSION: &str = "kv";
const ENTRIES_MAGIC: &[u8; 8] = b"WEIRKV02";
/// A value length that marks a deleted key.
const TOMBSTONE: u32 = u32::MAX;
/// A chain this long is replaced by a full file…
const MAX_CHAIN: usize = 64;
/// …as is one holding more than this many times the live state (at least
/// of [`SMALL_STATE`], whose full rewrite costs little anyway).
const MAX_CHAIN_GROWTH: u64 = 2;
/// The live state counted as at least this big (1 MiB) for that ratio.
const SMALL_STATE: u64 = 1 << 20;

/// The entry files of a store's copy in `dir`, in the order to apply them.
///
/// # Errors
/// The directory cannot be read.
pub fn chain_files(dir: &Path) -> Result<Vec<PathBuf>, StateError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| StateError(format!("cannot read {}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ENTRIES_EXTENSION))
        .collect();
    files.sort();
    Ok(files)
}

/// Appends an entry (`None`: a tombstone) in the entries format: key
/// length, value length (`TOMBSTONE` for none), key, value; lengths are
/// little-endian u32.
fn encode(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) -> Result<(), StateError> {
    let len = |n: usize| {
        u32::try_from(n)
            .ok()
            .filter(|n| *n != TOMBSTONE)
            .ok_or_else(|| StateError(format!("a state entry of {n} bytes")))
    };
    out.extend_from_slice(&len(key.len())?.to_le_bytes());
    out.extend_from_slice(&value.map_or(Ok(TOMBSTONE), |v| len(v.len()))?.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value.unwrap_or_default());
    Ok(())
}

/// Calls `each` with every entry of the entries file `path` whose key
/// group is in `groups` (`None`: deleted), in the order written.
///
/// # Errors
/// The file is missing, not an entries file, or truncated.
pub fn read_entries(
    path: &Path,
    groups: &RangeInclusive<u16>,
    mut each: impl FnMut(&[u8], Option<&[u8]>),
) -> Result<(), StateError> {
    let fail = |what: String| StateError(format!("state copy {}: {what}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    input
        .read_exact(&mut magic)
        .map_err(|e| fail(format!("no header: {e}")))?;
    if &magic != ENTRIES_MAGIC {
        return Err(fail("not a Weir state file".into()));
    }
    let (mut key, mut value) = (Vec::new(), Vec::new());
    loop {
        let mut lengths = [0u8; 8];
        match input.read_exact(&mut lengths[..4]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(fail(e.to_string())),
        }
        let truncated = |_| fail("truncated".into());
        input.read_exact(&mut lengths[4..]).map_err(truncated)?;
        let [k0, k1, k2, k3, v0, v1, v2, v3] = lengths;
        let value_len = u32::from_le_bytes([v0, v1, v2, v3]);
        key.resize(u32::from_le_bytes([k0, k1, k2, k3]) as usize, 0);
        input.read_exact(&mut key).map_err(truncated)?;
        let deleted = value_len == TOMBSTONE;
        value.resize(if deleted { 0 } else { value_len as usize }, 0);
        input.read_exact(&mut value).map_err(truncated)?;
        if groups.contains(&group_of(&key)) {
            each(&key, (!deleted).then_some(value.as_slice()));
        }
    }
}

/// Key and value bytes kept inside the table's slot, with no allocation
/// of their own, up to this many (a window's key and accumulator fit).
const INLINE_BYTES: usize = 40;

/// An entry: its key's hash (kept, so growing the table moves entries
/// without reading their keys again, and a lookup compares hashes before
/// keys), whether it changed since the last checkpoint, and the key then
/// the value in one buffer — inside the slot when small, so a lookup reads
/// one place in memory, not three. Aligned to a cache line (its size):
/// unaligned, most entries straddled two lines, and a lookup read both.
#[derive(Debug, Clone)]
#[repr(align(64))]
struct Entry {
    hash: u64,
    key_len: u32,
    changed: bool,
    data: SmallVec<[u8; INLINE_BYTES]>,
}

impl Entry {
    fn new(hash: u64, key: &[u8], value: &[u8]) -> Entry {
        let mut data = SmallVec::with_capacity(key.len() + value.len());
        data.extend_from_slice(key);
        data.extend_from_slice(value);
        Entry {
            hash,
            // Keys over 4 GiB cannot be written to a checkpoint anyway.
            key_len: u32::try_from(key.len()).unwrap_or(u32::MAX),
            changed: true,
            data,
        }
    }

    fn key(&self) -> &[u8] {
        &self.data[..self.key_len as usize]
    }

    fn value(&self) -> &[u8] {
        &self.data[self.key_len as usize..]
    }

    fn is(&self, hash: u64, key: &[u8]) -> bool {
        self.hash == hash && self.key() == key
    }

    fn set_value(&mut self, value: &[u8]) {
        self.data.truncate(self.key_len as usize);
        self.data.extend_from_slice(value);
        self.changed = true;
    }
}

/// The entry files the last checkpoint's copy is made of.
#[derive(Debug, Clone)]
struct Chain {
    /// In the last checkpoint's directory, in order.
    files: Vec<PathBuf>,
    /// Their total size.
    bytes: u64,
    /// Set when the last one is on disk (its deferred write succeeded).
    written: Arc<AtomicBool>,
}

/// A hash table with incremental checkpoints (see the module docs).
///
/// Entries keep their hash: when the table doubles, moving millions of
/// entries would otherwise read every key again (a cache miss each),
/// stopping the subtask for seconds.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    map: hashbrown::HashTable<Entry>,
    hasher: foldhash::fast::RandomState,
    /// Keys and values held, in bytes.
    bytes: u64,
    /// Keys deleted since the last checkpoint (changed entries carry a
    /// flag instead). Kept only once a checkpoint has been taken.
    deleted: Vec<Vec<u8>>,
    tracking: bool,
    chain: Option<Chain>,
    /// The number of the next entry file.
    next_file: u64,
}

impl MemoryStore {
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn insert(&mut self, key: &[u8], value: &[u8]) {
        let _ = self.put(key, value);
    }

    fn hash(&self, key: &[u8]) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, key)
    }

    fn remove(&mut self, key: &[u8]) {
        let _ = self.delete(key);
    }

    /// Whether the next checkpoint can add to the last one's chain.
    fn can_extend(&self) -> bool {
        self.tracking
            && self.chain.as_ref().is_some_and(|c| {
                c.written.load(Ordering::Acquire)
                    && c.files.len() < MAX_CHAIN
                    && c.bytes <= MAX_CHAIN_GROWTH * self.bytes.max(SMALL_STATE)
            })
    }

    /// Encodes every entry (a new chain) or the changes (the next link of
    /// the chain: tombstones for deleted keys, then the changed entries,
    /// found by one pass over the table), and forgets what changed.
    fn encode_copy(&mut self, full: bool) -> Result<Vec<u8>, StateError> {
        let mut out = Vec::new();
        out.extend_from_slice(ENTRIES_MAGIC);
        if full {
            out.reserve(usize::try_from(self.bytes).unwrap_or(0) + self.map.len() * 8);
        } else {
            for key in &self.deleted {
                encode(&mut out, key, None)?;
            }
        }
        for entry in &mut self.map {
            if full || entry.changed {
                encode(&mut out, entry.key(), Some(entry.value()))?;
                entry.changed = false;
            }
        }
        self.deleted.clear();
        Ok(out)
    }
}

impl StateStore for MemoryStore {
    fn get(&mut self, key: &[u8]) -> Result<Option<&[u8]>, StateError> {
        let hash = self.hash(key);
        Ok(self.map.find(hash, |e| e.is(hash, key)).map(Entry::value))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        let hash = self.hash(key);
        match self.map.find_mut(hash, |e| e.is(hash, key)) {
            Some(e) => {
                self.bytes = self.bytes + value.len() as u64 - e.value().len() as u64;
                e.set_value(value);
            }
            None => {
                self.bytes += (key.len() + value.len()) as u64;
                self.map
                    .insert_unique(hash, Entry::new(hash, key, value), |e| e.hash);
            }
        }
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StateError> {
        let hash = self.hash(key);
        if let Ok(found) = self.map.find_entry(hash, |e| e.is(hash, key)) {
            let (entry, _) = found.remove();
            self.bytes -= entry.data.len() as u64;
            if self.tracking {
                self.deleted.push(entry.key().to_vec());
            }
        }
        Ok(())
    }

    /// Links the last checkpoint's chain into `dir` and encodes what
    /// changed since (or everything, for a new chain); the new file is
    /// written later.
    fn checkpoint(&mut self, dir: &Path) -> Result<Deferred, StateError> {
        let mut files = Vec::new();
        let mut bytes = 0;
        let mut full = !self.can_extend();
        if let (false, Some(chain)) = (full, &self.chain) {
            for file in &chain.files {
                let target = dir.join(file.file_name().unwrap_or_default());
                if std::fs::hard_link(file, &target).is_err() {
                    // Another file system, or gone: start a new chain.
                    full = true;
                    break;
                }
                files.push(target);
            }
            bytes = chain.bytes;
        }
        if full {
            for linked in files.drain(..) {
                let _ = std::fs::remove_file(linked);
            }
            bytes = 0;
        }
        let encoded = self.encode_copy(full)?;
        self.tracking = true;
        self.next_file += 1;
        let path = dir.join(format!("{:06}.{ENTRIES_EXTENSION}", self.next_file));
        files.push(path.clone());
        let written = Arc::new(AtomicBool::new(false));
        self.chain = Some(Chain {
            files,
            bytes: bytes + encoded.len() as u64,
            written: written.clone(),
        });
        Ok(Box::new(move || {
            write_synced(&path, &encoded)?;
            written.store(true, Ordering::Release);
            Ok(())
        }))
    }

    fn scan_keys(&mut self, each: &mut dyn FnMut(&[u8])) -> Result<(), StateError> {
        self.map.iter().for_each(|e| each(e.key()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_entry_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<super::Entry>(), 64);
    }

    use super::*;

    fn key(group: u16, n: u32) -> Vec<u8> {
        let mut k = group.to_be_bytes().to_vec();
        k.extend_from_slice(&n.to_be_bytes());
        k
    }

    /// Takes a checkpoint of `store` into a fresh directory under `root`
    /// and writes it.
    fn checkpoint(store: &mut MemoryStore, root: &Path, n: usize) -> PathBuf {
        let dir = root.join(format!("chk-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        store.checkpoint(&dir).unwrap()().unwrap();
        dir
    }

    fn contents(store: &mut MemoryStore) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut all: Vec<_> = store
            .map
            .iter()
            .map(|e| (e.key().to_vec(), e.value().to_vec()))
            .collect();
        all.sort();
        all
    }

    #[test]
    fn incremental_copies_restore_to_the_state_at_each_checkpoint() {
        let root = tempfile::tempdir().unwrap();
        let mut store = MemoryStore::default();
        let mut expected = Vec::new();
        let mut dirs = Vec::new();
        for round in 0..6u32 {
            for n in 0..50u32 {
                store
                    .put(&key((n % 4) as u16, n), &round.to_le_bytes())
                    .unwrap();
            }
            // Deleted, and deleted then put again.
            store.delete(&key(1, round * 3)).unwrap();
            store.delete(&key(2, round * 5)).unwrap();
            store.put(&key(2, round * 5), b"again").unwrap();
            store.delete(&key(3, 1000)).unwrap(); // never there
            dirs.push(checkpoint(&mut store, root.path(), round as usize));
            expected.push(contents(&mut store));
        }
        // Only the first copy is a full file; each later one adds a file.
        for (i, dir) in dirs.iter().enumerate() {
            assert_eq!(chain_files(dir).unwrap().len(), i + 1, "{}", dir.display());
        }
        // Every checkpoint restores to its own state, even with the older
        // directories gone (the chain is hard-linked, not referenced).
        for (dir, expected) in dirs.iter().zip(&expected).rev() {
            let mut restored = MemoryStore::default();
            for file in chain_files(dir).unwrap() {
                read_entries(&file, &(0..=u16::MAX), |k, v| match v {
                    Some(v) => restored.insert(k, v),
                    None => restored.remove(k),
                })
                .unwrap();
            }
            assert_eq!(&contents(&mut restored), expected, "{}", dir.display());
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn restore_takes_only_the_owned_key_groups_of_every_copy() {
        let root = tempfile::tempdir().unwrap();
        let mut copies = Vec::new();
        for (subtask, groups) in [(0usize, 0u16..=63), (1, 64..=127)] {
            let mut store = MemoryStore::default();
            for g in groups.clone() {
                store.put(&key(g, 1), &g.to_le_bytes()).unwrap();
            }
            checkpoint(&mut store, root.path(), subtask * 10);
            for g in groups {
                store.put(&key(g, 2), b"second").unwrap();
            }
            copies.push(checkpoint(&mut store, root.path(), subtask * 10 + 1));
        }
        let mut part = MemoryBackend.restore("w", 0, &copies, 40..=90).unwrap();
        assert_eq!(part.get(&key(39, 1)).unwrap(), None);
        assert_eq!(
            part.get(&key(40, 1)).unwrap(),
            Some(&40u16.to_le_bytes()[..])
        );
        assert_eq!(part.get(&key(90, 2)).unwrap(), Some(&b"second"[..]));
        assert_eq!(part.get(&key(91, 2)).unwrap(), None);
    }

    #[test]
    fn a_chain_that_outgrew_the_state_starts_again_full() {
        let root = tempfile::tempdir().unwrap();
        let mut store = MemoryStore::default();
        let big = vec![7u8; 1 << 20];
        store.put(&key(0, 0), &big).unwrap();
        checkpoint(&mut store, root.path(), 0);
        // Rewriting the same 1 MiB value: the chain grows, the state not.
        let mut lengths = Vec::new();
        for n in 1..6 {
            store.put(&key(0, 0), &big).unwrap();
            lengths.push(
                chain_files(&checkpoint(&mut store, root.path(), n))
                    .unwrap()
                    .len(),
            );
        }
        assert_eq!(lengths, [2, 1, 2, 1, 2]);
    }

    #[test]
    fn an_unwritten_copy_is_not_extended() {
        let root = tempfile::tempdir().unwrap();
        let mut store = MemoryStore::default();
        store.put(&key(0, 1), b"v").unwrap();
        let first = root.path().join("a");
        std::fs::create_dir_all(&first).unwrap();
        let _never_run = store.checkpoint(&first).unwrap();
        store.put(&key(0, 2), b"w").unwrap();
        let second = checkpoint(&mut store, root.path(), 1);
        // A new full chain: both keys, one file.
        assert_eq!(chain_files(&second).unwrap().len(), 1);
        let mut restored = MemoryBackend.restore("w", 0, &[second], 0..=127).unwrap();
        assert_eq!(restored.get(&key(0, 1)).unwrap(), Some(&b"v"[..]));
        assert_eq!(restored.get(&key(0, 2)).unwrap(), Some(&b"w"[..]));
    }
}
