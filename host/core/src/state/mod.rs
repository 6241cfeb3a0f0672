//! Keyed state as the runtime sees it: byte keys to byte values, one store
//! per operator and subtask.
//!
//! Operators build their keys with the key group first (see
//! [`crate::keys::key_group`]), so the stores of a checkpoint can be split
//! by key group when restoring at another parallelism. [`HotTier`] is a
//! bounded write-back cache in front of any [`ColdStore`]; `weir-state`
//! puts it in front of RocksDB. [`MemoryBackend`] keeps everything in a
//! hash map, with incremental checkpoints (`memory.rs`).

use std::io::Write;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use foldhash::HashMap;

mod memory;
pub use memory::{MemoryBackend, MemoryStore, chain_files, read_entries};

/// A state backend that failed (I/O, corruption).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("state backend: {0}")]
pub struct StateError(pub String);

/// The state of one operator subtask.
pub trait StateStore: Send {
    /// The value under `key`.
    ///
    /// # Errors
    /// The backend cannot read.
    fn get(&mut self, key: &[u8]) -> Result<Option<&[u8]>, StateError>;

    /// Sets `key` to `value`.
    ///
    /// # Errors
    /// The backend cannot write.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError>;

    /// Removes `key` (no error when absent).
    ///
    /// # Errors
    /// The backend cannot write.
    fn delete(&mut self, key: &[u8]) -> Result<(), StateError>;

    /// Takes a consistent copy of the whole store for `dir` (it exists and
    /// is empty): a checkpoint. What cannot be written at once is returned
    /// as [`Deferred`] work, which writes the copy as it was when this
    /// returned, while the stream moves on; later writes do not change it.
    ///
    /// # Errors
    /// The backend cannot take or write the copy.
    fn checkpoint(&mut self, dir: &Path) -> Result<Deferred, StateError>;

    /// Calls `each` with every key in the store, in no particular order.
    /// A restore rebuilds what it derives from the keys (window timers).
    ///
    /// # Errors
    /// The backend cannot read.
    fn scan_keys(&mut self, each: &mut dyn FnMut(&[u8])) -> Result<(), StateError>;

    /// Hands up to `bytes` of this store's memory budget to a cache that
    /// an operator keeps in front of it, and returns how much it handed
    /// over. The store keeps to what it has left, so that the two together
    /// stay within the one budget the pipeline set. `None`: the store is
    /// not bounded (all its state is in memory anyway), and the cache
    /// bounds itself.
    fn lend_memory(&mut self, _bytes: usize) -> Option<usize> {
        None
    }
}

/// The part of a checkpoint written after the stream has moved on (see
/// [`StateStore::checkpoint`]); it fails with the reason the copy could not
/// be written.
pub type Deferred = Box<dyn FnOnce() -> Result<(), StateError> + Send>;

/// Deferred work that has nothing left to do.
pub fn done() -> Deferred {
    Box::new(|| Ok(()))
}

/// Opens the stores of a pipeline's operators.
pub trait StateBackend: Send + Sync {
    /// The store of `operator`'s subtask `subtask`.
    ///
    /// # Errors
    /// The backend cannot open it.
    fn open(&self, operator: &str, subtask: usize) -> Result<Box<dyn StateStore>, StateError>;

    /// The store of `operator`'s subtask `subtask`, holding the entries of
    /// key groups `groups` found in checkpoint copies `from` (directories
    /// that [`StateStore::checkpoint`] of this backend wrote, possibly by
    /// subtasks of another parallelism).
    ///
    /// # Errors
    /// A copy is unreadable or of another backend.
    fn restore(
        &self,
        operator: &str,
        subtask: usize,
        from: &[PathBuf],
        groups: RangeInclusive<u16>,
    ) -> Result<Box<dyn StateStore>, StateError>;
}

/// The key group a state key starts with (keys without one, shorter than
/// two bytes, count as group 0).
pub fn group_of(key: &[u8]) -> u16 {
    match key {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    }
}

/// Writes `bytes` to a new file `path` and syncs it to disk.
///
/// # Errors
/// The file cannot be written.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let fail = |e: std::io::Error| StateError(format!("cannot write {}: {e}", path.display()));
    let mut file = std::fs::File::create(path).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)
}

/// The slow, large tier behind a [`HotTier`] (RocksDB in `weir-state`).
pub trait ColdStore: Send {
    /// The stored value under `key`.
    ///
    /// # Errors
    /// The store cannot read.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;

    /// Applies changes atomically: `Some` puts, `None` deletes.
    ///
    /// # Errors
    /// The store cannot write.
    fn write(&mut self, changes: &[(&[u8], Option<&[u8]>)]) -> Result<(), StateError>;

    /// Takes a consistent copy of the store for `dir` (see
    /// [`StateStore::checkpoint`]).
    ///
    /// # Errors
    /// The store cannot take or write the copy.
    fn checkpoint(&mut self, dir: &Path) -> Result<Deferred, StateError>;

    /// Calls `each` with every stored key.
    ///
    /// # Errors
    /// The store cannot read.
    fn scan_keys(&self, each: &mut dyn FnMut(&[u8])) -> Result<(), StateError>;
}

/// A cached entry: its value (`None`: absent or deleted) and whether the
/// cold tier has yet to see it.
#[derive(Debug)]
struct Slot {
    value: Option<Vec<u8>>,
    dirty: bool,
}

/// Per-entry bookkeeping counted against the budget, beside key and value.
const SLOT_OVERHEAD: usize = 48;

/// A bounded in-memory tier in front of a [`ColdStore`]: reads are cached,
/// writes stay in memory until the tier holds more than its budget; then
/// every dirty entry goes to the cold tier in one write and the tier is
/// trimmed to half its budget. A state update on the hot path is a
/// hash-map update.
///
/// ```
/// use weir_core::state::{ColdStore, Deferred, HotTier, StateError, StateStore};
///
/// #[derive(Default)]
/// struct Counted(std::collections::HashMap<Vec<u8>, Vec<u8>>);
/// impl ColdStore for Counted {
///     fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
///         Ok(self.0.get(key).cloned())
///     }
///     fn write(&mut self, changes: &[(&[u8], Option<&[u8]>)]) -> Result<(), StateError> {
///         for (k, v) in changes {
///             match v {
///                 Some(v) => self.0.insert(k.to_vec(), v.to_vec()),
///                 None => self.0.remove(*k),
///             };
///         }
///         Ok(())
///     }
///     fn checkpoint(&mut self, _dir: &std::path::Path) -> Result<Deferred, StateError> {
///         Ok(weir_core::state::done())
///     }
///     fn scan_keys(&self, each: &mut dyn FnMut(&[u8])) -> Result<(), StateError> {
///         self.0.keys().for_each(|k| each(k));
///         Ok(())
///     }
/// }
///
/// let mut tier = HotTier::new(Counted::default(), 1 << 20);
/// tier.put(b"k", b"v")?;
/// assert_eq!(tier.get(b"k")?, Some(&b"v"[..]));
/// tier.flush()?; // now the cold tier has it too
/// # Ok::<(), StateError>(())
/// ```
pub struct HotTier<C: ColdStore> {
    cold: C,
    hot: HashMap<Vec<u8>, Slot>,
    bytes: usize,
    budget: usize,
}

impl<C: ColdStore> HotTier<C> {
    /// A tier of `budget` bytes in front of `cold`.
    pub fn new(cold: C, budget: usize) -> Self {
        HotTier {
            cold,
            hot: HashMap::default(),
            bytes: 0,
            budget,
        }
    }

    /// Writes every dirty entry to the cold tier (one write).
    ///
    /// # Errors
    /// The cold tier cannot write.
    pub fn flush(&mut self) -> Result<(), StateError> {
        let changes: Vec<(&[u8], Option<&[u8]>)> = self
            .hot
            .iter()
            .filter(|(_, s)| s.dirty)
            .map(|(k, s)| (k.as_slice(), s.value.as_deref()))
            .collect();
        if changes.is_empty() {
            return Ok(());
        }
        self.cold.write(&changes)?;
        for slot in self.hot.values_mut() {
            slot.dirty = false;
        }
        Ok(())
    }

    /// Bytes the tier holds (keys, values and bookkeeping).
    pub fn hot_bytes(&self) -> usize {
        self.bytes
    }

    /// The cold tier.
    pub fn cold(&self) -> &C {
        &self.cold
    }

    fn cost(key: &[u8], value: Option<&Vec<u8>>) -> usize {
        key.len() + value.map_or(0, Vec::len) + SLOT_OVERHEAD
    }

    /// Over budget: flush, then drop entries down to half the budget.
    fn spill(&mut self) -> Result<(), StateError> {
        if self.bytes <= self.budget {
            return Ok(());
        }
        self.flush()?;
        let target = self.budget / 2;
        let mut bytes = self.bytes;
        self.hot.retain(|key, slot| {
            if bytes <= target {
                return true;
            }
            bytes -= Self::cost(key, slot.value.as_ref());
            false
        });
        self.bytes = bytes;
        Ok(())
    }
}

impl<C: ColdStore> StateStore for HotTier<C> {
    /// At most half the budget: the tier keeps room for the state the
    /// cache does not hold.
    fn lend_memory(&mut self, bytes: usize) -> Option<usize> {
        let lent = bytes.min(self.budget / 2);
        self.budget -= lent;
        Some(lent)
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<&[u8]>, StateError> {
        if !self.hot.contains_key(key) {
            self.spill()?;
            let value = self.cold.get(key)?;
            self.bytes += Self::cost(key, value.as_ref());
            self.hot.insert(
                key.to_vec(),
                Slot {
                    value,
                    dirty: false,
                },
            );
        }
        Ok(self.hot.get(key).and_then(|s| s.value.as_deref()))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        match self.hot.get_mut(key) {
            Some(slot) => {
                let old = slot.value.as_ref().map_or(0, Vec::len);
                match &mut slot.value {
                    Some(v) => {
                        v.clear();
                        v.extend_from_slice(value);
                    }
                    None => slot.value = Some(value.to_vec()),
                }
                slot.dirty = true;
                self.bytes = self.bytes + value.len() - old;
            }
            None => {
                self.bytes += key.len() + value.len() + SLOT_OVERHEAD;
                self.hot.insert(
                    key.to_vec(),
                    Slot {
                        value: Some(value.to_vec()),
                        dirty: true,
                    },
                );
            }
        }
        self.spill()
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StateError> {
        match self.hot.get_mut(key) {
            Some(slot) => {
                self.bytes -= slot.value.as_ref().map_or(0, Vec::len);
                slot.value = None;
                slot.dirty = true;
            }
            None => {
                self.bytes += key.len() + SLOT_OVERHEAD;
                self.hot.insert(
                    key.to_vec(),
                    Slot {
                        value: None,
                        dirty: true,
                    },
                );
            }
        }
        self.spill()
    }

    fn checkpoint(&mut self, dir: &Path) -> Result<Deferred, StateError> {
        self.flush()?;
        self.cold.checkpoint(dir)
    }

    fn scan_keys(&mut self, each: &mut dyn FnMut(&[u8])) -> Result<(), StateError> {
        self.flush()?;
        self.cold.scan_keys(each)
    }
}

impl<C: ColdStore> Drop for HotTier<C> {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!("state not flushed to the cold tier on shutdown: {e}");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A cold tier in a hash map.
    #[derive(Default)]
    pub(crate) struct MapCold(std::collections::HashMap<Vec<u8>, Vec<u8>>);

    impl ColdStore for MapCold {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
            Ok(self.0.get(key).cloned())
        }
        fn write(&mut self, changes: &[(&[u8], Option<&[u8]>)]) -> Result<(), StateError> {
            for (key, value) in changes {
                match value {
                    Some(value) => self.0.insert(key.to_vec(), value.to_vec()),
                    None => self.0.remove(*key),
                };
            }
            Ok(())
        }
        fn checkpoint(&mut self, _dir: &Path) -> Result<Deferred, StateError> {
            Ok(done())
        }
        fn scan_keys(&self, each: &mut dyn FnMut(&[u8])) -> Result<(), StateError> {
            self.0.keys().for_each(|key| each(key));
            Ok(())
        }
    }

    #[test]
    fn a_hot_tier_lends_at_most_half_its_budget_and_keeps_to_the_rest() {
        let mut tier = HotTier::new(MapCold::default(), 4000);
        assert_eq!(tier.lend_memory(64 << 20), Some(2000));
        assert_eq!(tier.lend_memory(500), Some(500));
        for i in 0..1000u32 {
            tier.put(&i.to_be_bytes(), &[7; 16]).unwrap();
            assert!(tier.hot_bytes() <= 1500, "{} bytes", tier.hot_bytes());
        }
        // What left the tier is in the cold one.
        assert_eq!(tier.get(&3u32.to_be_bytes()).unwrap(), Some(&[7; 16][..]));
    }
}
