//! Weir's keyed state on RocksDB: the only crate that links `rocksdb`.
//!
//! One RocksDB database per pipeline, one column family per operator
//! (subtasks share it: their keys start with the key group, and each key
//! group belongs to one subtask). In front of it, per subtask, a bounded
//! in-memory **hot tier**: reads are cached, writes stay in memory until
//! the tier holds more than its budget, then every dirty entry is written
//! to RocksDB in one write batch and the tier is trimmed to half its
//! budget. A window update on the hot path is a hash-map update.
//!
//! The hot tier is `weir_core::state::HotTier` (pure logic, benchmarked
//! there without RocksDB); this crate is its cold tier, [`RocksCold`].
//! Snapshots (the checkpoint issue builds on this): flushing the hot tiers
//! ([`HotTier::flush`]) and then taking a RocksDB checkpoint (hard links of
//! the SST files) gives a consistent copy of the whole state.
//!
//! ```
//! use weir_core::state::StateBackend;
//! let dir = tempfile::tempdir()?;
//! let backend = weir_state::RocksBackend::open(dir.path(), 1 << 20)?;
//! let mut store = backend.open("counts", 0)?;
//! store.put(b"k", b"1")?;
//! assert_eq!(store.get(b"k")?, Some(&b"1"[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;
use std::sync::Arc;

use rocksdb::{DBWithThreadMode, MultiThreaded, Options, WriteBatch};

type DB = DBWithThreadMode<MultiThreaded>;
use weir_core::state::{ColdStore, HotTier, StateBackend, StateError, StateStore};

fn error(context: &str, e: impl std::fmt::Display) -> StateError {
    StateError(format!("{context}: {e}"))
}

/// A RocksDB database in a local directory, shared by a pipeline's
/// operators.
pub struct RocksBackend {
    db: Arc<DB>,
    hot_tier_bytes: usize,
}

impl RocksBackend {
    /// Opens (or creates) the database in `path`; each store keeps up to
    /// `hot_tier_bytes` of keys and values in memory.
    ///
    /// # Errors
    /// RocksDB cannot open the directory (in use by another process,
    /// corrupt, not writable).
    pub fn open(path: &Path, hot_tier_bytes: usize) -> Result<Self, StateError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = if path.join("CURRENT").exists() {
            DB::list_cf(&options, path).map_err(|e| error(&format!("{}", path.display()), e))?
        } else {
            Vec::new()
        };
        let db = DB::open_cf(&options, path, families)
            .map_err(|e| error(&format!("cannot open state in {}", path.display()), e))?;
        Ok(RocksBackend {
            db: Arc::new(db),
            hot_tier_bytes,
        })
    }
}

impl StateBackend for RocksBackend {
    fn open(&self, operator: &str, _subtask: usize) -> Result<Box<dyn StateStore>, StateError> {
        let family = format!("op:{operator}");
        if self.db.cf_handle(&family).is_none() {
            self.db
                .create_cf(&family, &Options::default())
                .map_err(|e| error(&format!("cannot create column family {family}"), e))?;
        }
        let cold = RocksCold {
            db: self.db.clone(),
            family,
        };
        Ok(Box::new(HotTier::new(cold, self.hot_tier_bytes)))
    }
}

/// One operator's column family: the cold tier behind a [`HotTier`].
pub struct RocksCold {
    db: Arc<DB>,
    family: String,
}

impl ColdStore for RocksCold {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let cf = self
            .db
            .cf_handle(&self.family)
            .ok_or_else(|| StateError(format!("column family {} vanished", self.family)))?;
        self.db
            .get_cf(&cf, key)
            .map_err(|e| error(&format!("cannot read {}", self.family), e))
    }

    fn write(&mut self, changes: &[(&[u8], Option<&[u8]>)]) -> Result<(), StateError> {
        let cf = self
            .db
            .cf_handle(&self.family)
            .ok_or_else(|| StateError(format!("column family {} vanished", self.family)))?;
        let mut batch = WriteBatch::default();
        for (key, value) in changes {
            match value {
                Some(value) => batch.put_cf(&cf, key, value),
                None => batch.delete_cf(&cf, key),
            }
        }
        self.db
            .write(batch)
            .map_err(|e| error(&format!("cannot write {}", self.family), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_spilling_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let backend = RocksBackend::open(dir.path(), 4096).unwrap();
            let mut store = backend.open("w", 0).unwrap();
            for i in 0..2000u32 {
                store.put(&i.to_be_bytes(), &(i * 2).to_le_bytes()).unwrap();
            }
            for i in (0..2000u32).step_by(2) {
                store.delete(&i.to_be_bytes()).unwrap();
            }
            // The budget held: most entries were spilled.
            for i in 0..2000u32 {
                let expected = (i % 2 == 1).then(|| (i * 2).to_le_bytes().to_vec());
                assert_eq!(
                    store.get(&i.to_be_bytes()).unwrap().map(<[u8]>::to_vec),
                    expected
                );
            }
        }
        let backend = RocksBackend::open(dir.path(), 4096).unwrap();
        let mut store = backend.open("w", 0).unwrap();
        assert_eq!(
            store.get(&7u32.to_be_bytes()).unwrap(),
            Some(&14u32.to_le_bytes()[..])
        );
        assert_eq!(store.get(&8u32.to_be_bytes()).unwrap(), None);
    }

    #[test]
    fn operators_have_separate_column_families() {
        let dir = tempfile::tempdir().unwrap();
        let backend = RocksBackend::open(dir.path(), 1 << 20).unwrap();
        let mut a = backend.open("a", 0).unwrap();
        let mut b = backend.open("b", 0).unwrap();
        a.put(b"k", b"from a").unwrap();
        assert_eq!(b.get(b"k").unwrap(), None);
    }

    #[test]
    fn a_locked_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = RocksBackend::open(dir.path(), 1024).unwrap();
        let Err(second) = RocksBackend::open(dir.path(), 1024) else {
            panic!("a second open of the same directory must fail");
        };
        assert!(
            second.to_string().contains("cannot open state in"),
            "{second}"
        );
    }
}
