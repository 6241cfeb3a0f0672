//! Weir's keyed state on RocksDB: the only crate that links `rocksdb`.
//!
//! One RocksDB database per operator subtask, in a subdirectory of the
//! pipeline's working directory (as Flink does: a subtask's state is its own
//! database, so it can be checkpointed at the moment that subtask's barrier
//! aligns). Keys start with their key group. In front of each database, a
//! bounded in-memory **hot tier**: reads are cached, writes stay in memory
//! until the tier holds more than its budget, then every dirty entry is
//! written to RocksDB in one write batch and the tier is trimmed to half its
//! budget. A window update on the hot path is a hash-map update.
//!
//! The hot tier is `weir_core::state::HotTier` (pure logic, benchmarked
//! there without RocksDB); this crate is its cold tier, [`RocksCold`].
//!
//! **Checkpoints**: the hot tier's dirty entries are written to RocksDB,
//! then a RocksDB checkpoint is taken: hard links to the immutable SST files
//! plus a copy of the small metadata files, so its cost does not grow with
//! the state. **Restore** links a copy back into the working directory and
//! deletes the key groups the subtask no longer owns; at another
//! parallelism, the entries of the owned key groups of other copies are
//! copied in by range scans (keys are ordered by key group).
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

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{DB, Direction, IteratorMode, Options, WriteBatch};

use weir_core::state::{ColdStore, Deferred, HotTier, StateBackend, StateError, StateStore, done};

/// The directory inside a checkpoint copy that holds the RocksDB checkpoint.
const CHECKPOINT_DIR: &str = "rocksdb";

fn error(context: &str, e: impl std::fmt::Display) -> StateError {
    StateError(format!("{context}: {e}"))
}

/// A pipeline's RocksDB working directory: one database per operator
/// subtask.
pub struct RocksBackend {
    path: PathBuf,
    hot_tier_bytes: usize,
}

impl RocksBackend {
    /// Keeps databases under `path` (created if missing); each store keeps
    /// up to `hot_tier_bytes` of keys and values in memory.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn open(path: &Path, hot_tier_bytes: usize) -> Result<Self, StateError> {
        std::fs::create_dir_all(path)
            .map_err(|e| error(&format!("cannot create {}", path.display()), e))?;
        Ok(RocksBackend {
            path: path.to_path_buf(),
            hot_tier_bytes,
        })
    }

    fn store_dir(&self, operator: &str, subtask: usize) -> PathBuf {
        let safe: String = operator
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.path.join(format!("{safe}.{subtask}"))
    }

    fn store(&self, db: DB, dir: PathBuf) -> Box<dyn StateStore> {
        Box::new(HotTier::new(RocksCold { db, dir }, self.hot_tier_bytes))
    }
}

fn options() -> Options {
    let mut options = Options::default();
    options.create_if_missing(true);
    options
}

fn open_db(dir: &Path) -> Result<DB, StateError> {
    DB::open(&options(), dir)
        .map_err(|e| error(&format!("cannot open state in {}", dir.display()), e))
}

impl StateBackend for RocksBackend {
    fn open(&self, operator: &str, subtask: usize) -> Result<Box<dyn StateStore>, StateError> {
        let dir = self.store_dir(operator, subtask);
        Ok(self.store(open_db(&dir)?, dir))
    }

    fn restore(
        &self,
        operator: &str,
        subtask: usize,
        from: &[PathBuf],
        groups: RangeInclusive<u16>,
    ) -> Result<Box<dyn StateStore>, StateError> {
        let dir = self.store_dir(operator, subtask);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| error(&format!("cannot clear {}", dir.display()), e))?;
        }
        let Some((first, rest)) = from.split_first() else {
            return self.open(operator, subtask);
        };
        // The first copy is linked in whole; key groups this subtask does
        // not own are deleted.
        link_copy(&first.join(CHECKPOINT_DIR), &dir)?;
        let db = open_db(&dir)?;
        let mut outside = WriteBatch::default();
        let (lo, hi) = (*groups.start(), *groups.end());
        if lo > 0 {
            outside.delete_range(&[0u8, 0][..], &lo.to_be_bytes()[..]);
        }
        if let Some(next) = hi.checked_add(1) {
            outside.delete_range(&next.to_be_bytes()[..], &[0xff_u8; 3][..]);
        }
        db.write(outside)
            .map_err(|e| error(&format!("cannot trim {}", dir.display()), e))?;
        // The others contribute their entries in the owned groups.
        for copy in rest {
            let copy = copy.join(CHECKPOINT_DIR);
            let source = DB::open_for_read_only(&Options::default(), &copy, false)
                .map_err(|e| error(&format!("cannot open state copy {}", copy.display()), e))?;
            let mut batch = WriteBatch::default();
            let start = lo.to_be_bytes();
            for entry in source.iterator(IteratorMode::From(&start, Direction::Forward)) {
                let (key, value) =
                    entry.map_err(|e| error(&format!("cannot read {}", copy.display()), e))?;
                if weir_core::state::group_of(&key) > hi {
                    break;
                }
                batch.put(&key, &value);
                if batch.size_in_bytes() > 4 << 20 {
                    db.write(std::mem::take(&mut batch))
                        .map_err(|e| error(&format!("cannot write {}", dir.display()), e))?;
                }
            }
            db.write(batch)
                .map_err(|e| error(&format!("cannot write {}", dir.display()), e))?;
        }
        Ok(self.store(db, dir))
    }
}

/// Copies a RocksDB checkpoint directory: SST files (immutable) as hard
/// links where the file system allows, everything else as copies.
fn link_copy(from: &Path, to: &Path) -> Result<(), StateError> {
    let fail = |e: std::io::Error| error(&format!("cannot copy {}", from.display()), e);
    std::fs::create_dir_all(to).map_err(fail)?;
    for entry in std::fs::read_dir(from).map_err(fail)? {
        let entry = entry.map_err(fail)?;
        let target = to.join(entry.file_name());
        let linked = entry.path().extension().is_some_and(|e| e == "sst")
            && std::fs::hard_link(entry.path(), &target).is_ok();
        if !linked {
            std::fs::copy(entry.path(), &target).map_err(fail)?;
        }
    }
    Ok(())
}

/// One subtask's database: the cold tier behind a [`HotTier`].
pub struct RocksCold {
    db: DB,
    dir: PathBuf,
}

impl ColdStore for RocksCold {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.db
            .get(key)
            .map_err(|e| error(&format!("cannot read {}", self.dir.display()), e))
    }

    fn write(&mut self, changes: &[(&[u8], Option<&[u8]>)]) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        for (key, value) in changes {
            match value {
                Some(value) => batch.put(key, value),
                None => batch.delete(key),
            }
        }
        self.db
            .write(batch)
            .map_err(|e| error(&format!("cannot write {}", self.dir.display()), e))
    }

    /// RocksDB flushes its memtable and links the SST files into `dir`
    /// before this returns: nothing is left to write later.
    fn checkpoint(&mut self, dir: &Path) -> Result<Deferred, StateError> {
        let target = dir.join(CHECKPOINT_DIR);
        Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(&target))
            .map_err(|e| error(&format!("cannot checkpoint {}", self.dir.display()), e))?;
        Ok(done())
    }

    fn scan_keys(&self, each: &mut dyn FnMut(&[u8])) -> Result<(), StateError> {
        for item in self.db.iterator(IteratorMode::Start) {
            let (key, _) =
                item.map_err(|e| error(&format!("cannot read {}", self.dir.display()), e))?;
            each(&key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(group: u16, n: u32) -> Vec<u8> {
        let mut k = group.to_be_bytes().to_vec();
        k.extend_from_slice(&n.to_be_bytes());
        k
    }

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
    fn subtasks_have_separate_databases() {
        let dir = tempfile::tempdir().unwrap();
        let backend = RocksBackend::open(dir.path(), 1 << 20).unwrap();
        let mut a = backend.open("a", 0).unwrap();
        let mut b = backend.open("a", 1).unwrap();
        a.put(b"k", b"from a").unwrap();
        assert_eq!(b.get(b"k").unwrap(), None);
    }

    #[test]
    fn a_locked_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let backend = RocksBackend::open(dir.path(), 1024).unwrap();
        let _first = backend.open("w", 0).unwrap();
        let Err(second) = backend.open("w", 0) else {
            panic!("a second open of the same database must fail");
        };
        assert!(
            second.to_string().contains("cannot open state in"),
            "{second}"
        );
    }

    #[test]
    fn checkpoints_restore_by_key_group_at_another_parallelism() {
        let work = tempfile::tempdir().unwrap();
        let checkpoints = tempfile::tempdir().unwrap();
        let backend = RocksBackend::open(work.path(), 256).unwrap();
        // Two subtasks own groups 0..=63 and 64..=127.
        let mut copies = Vec::new();
        for (subtask, groups) in [(0usize, 0u16..=63), (1, 64..=127)] {
            let mut store = backend.open("w", subtask).unwrap();
            for g in groups {
                store.put(&key(g, 1), &g.to_le_bytes()).unwrap();
            }
            let copy = checkpoints.path().join(subtask.to_string());
            std::fs::create_dir_all(&copy).unwrap();
            store.checkpoint(&copy).unwrap()().unwrap();
            // Written after the checkpoint: not in the copy.
            store.put(&key(0, 2), b"later").unwrap();
            copies.push(copy);
        }
        let again = tempfile::tempdir().unwrap();
        let backend = RocksBackend::open(again.path(), 256).unwrap();
        // Scale down: one subtask owns everything.
        let mut all = backend.restore("w", 0, &copies, 0..=127).unwrap();
        for g in 0..128u16 {
            assert_eq!(all.get(&key(g, 1)).unwrap(), Some(&g.to_le_bytes()[..]));
        }
        assert_eq!(all.get(&key(0, 2)).unwrap(), None);
        // Scale up: a subtask owning 40..=90 sees only those groups.
        let mut part = backend.restore("w", 1, &copies, 40..=90).unwrap();
        assert_eq!(part.get(&key(39, 1)).unwrap(), None);
        assert_eq!(
            part.get(&key(40, 1)).unwrap(),
            Some(&40u16.to_le_bytes()[..])
        );
        assert_eq!(
            part.get(&key(90, 1)).unwrap(),
            Some(&90u16.to_le_bytes()[..])
        );
        assert_eq!(part.get(&key(91, 1)).unwrap(), None);
    }
}
