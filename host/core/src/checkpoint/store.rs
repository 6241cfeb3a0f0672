//! The checkpoint directory: one subdirectory per checkpoint
//! (`chk-00000042/`), whose `MANIFEST` is written last.
//!
//! The manifest's first line carries a CRC-32 of the rest, and the rest
//! lists every other file with its size and CRC-32. A checkpoint without a
//! manifest is incomplete (the process died while taking it); one whose
//! manifest or files do not match is damaged. Both are skipped, with the
//! reason, when looking for the latest checkpoint.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::{CheckpointId, CheckpointKind, FileRecord, Manifest};

/// The manifest's file name.
pub const MANIFEST: &str = "MANIFEST";
const HEADER: &str = "weir-checkpoint-manifest 1 crc32=";

/// A checkpoint that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No manifest: the checkpoint was never completed.
    #[error("checkpoint {id} in {} is incomplete (no {MANIFEST})", dir.display())]
    Incomplete {
        /// Its number.
        id: CheckpointId,
        /// Its directory.
        dir: PathBuf,
    },
    /// A file does not match the manifest, or the manifest itself is bad.
    #[error("checkpoint {id} is damaged: {}: {reason}", path.display())]
    Damaged {
        /// Its number.
        id: CheckpointId,
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No checkpoint with this number.
    #[error("no checkpoint {id} in {}", dir.display())]
    NotFound {
        /// The number asked for.
        id: CheckpointId,
        /// The checkpoint directory.
        dir: PathBuf,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A checkpoint as [`CheckpointStore::list`] finds it: usable, or why not.
pub type Listed = (CheckpointId, Result<Manifest, CheckpointError>);

/// A pipeline's checkpoint directory.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    /// Checksums of immutable files already listed (RocksDB's SST files
    /// and the memory store's entry files, hard-linked from one checkpoint
    /// into the next), by file identity: each is read once, not once per
    /// checkpoint.
    known: Arc<Mutex<HashMap<FileIdentity, u32>>>,
}

/// A file as the file system knows it: device, inode, size and
/// modification time. A hard link has the same identity as its original.
type FileIdentity = (u64, u64, u64, i64, i64);

impl CheckpointStore {
    /// Checkpoints under `dir` (created when the first one is taken).
    pub fn new(dir: PathBuf) -> Self {
        CheckpointStore {
            dir,
            known: Arc::default(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of checkpoint `id`.
    pub fn path_of(&self, id: CheckpointId) -> PathBuf {
        self.dir.join(format!("chk-{id:08}"))
    }

    /// Numbers of every checkpoint directory, complete or not, ascending.
    ///
    /// # Errors
    /// The directory exists but cannot be listed.
    pub fn ids(&self) -> Result<Vec<CheckpointId>, CheckpointError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let mut ids: Vec<CheckpointId> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// The number after every existing checkpoint's.
    ///
    /// # Errors
    /// See [`Self::ids`].
    pub fn next_id(&self) -> Result<CheckpointId, CheckpointError> {
        Ok(self.ids()?.last().map_or(1, |last| last + 1))
    }

    /// Creates the (empty) directory of checkpoint `id`.
    ///
    /// # Errors
    /// It cannot be created.
    pub fn begin(&self, id: CheckpointId) -> Result<PathBuf, CheckpointError> {
        let path = self.path_of(id);
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
        }
        std::fs::create_dir_all(&path).map_err(io(&path))?;
        Ok(path)
    }

    /// Completes checkpoint `manifest.id`: lists and checksums its files
    /// into the manifest (an immutable file already listed by an earlier
    /// checkpoint is not read again), then writes the manifest atomically
    /// (a temporary file, synced, renamed). The manifest's duration runs
    /// from `started` to the checksums done. Returns the manifest as
    /// written.
    ///
    /// # Errors
    /// A file cannot be read or the manifest cannot be written.
    pub fn complete(
        &self,
        mut manifest: Manifest,
        started: Instant,
    ) -> Result<Manifest, CheckpointError> {
        let root = self.path_of(manifest.id);
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        manifest.files.clear();
        {
            let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            let mut seen = HashMap::new();
            collect_files(&root, &root, &mut manifest.files, &known, &mut seen)?;
            // Forget files no longer in any checkpoint being written.
            *known = seen;
        }
        manifest.files.sort_by(|a, b| a.path.cmp(&b.path));
        manifest.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let body = serde_json::to_vec_pretty(&manifest).map_err(|e| CheckpointError::Damaged {
            id: manifest.id,
            path: root.join(MANIFEST),
            reason: format!("cannot encode: {e}"),
        })?;
        let temporary = root.join(format!("{MANIFEST}.tmp"));
        let mut file = std::fs::File::create(&temporary).map_err(io(&temporary))?;
        writeln!(file, "{HEADER}{:08x}", crc32fast::hash(&body)).map_err(io(&temporary))?;
        file.write_all(&body).map_err(io(&temporary))?;
        file.sync_all().map_err(io(&temporary))?;
        let path = root.join(MANIFEST);
        std::fs::rename(&temporary, &path).map_err(io(&path))?;
        sync_dir(&root)?;
        sync_dir(&self.dir)?;
        Ok(manifest)
    }

    /// Checkpoint `id`, verified: its manifest and every file it lists
    /// match their checksums.
    ///
    /// # Errors
    /// Missing, incomplete or damaged.
    pub fn load(&self, id: CheckpointId) -> Result<Manifest, CheckpointError> {
        let manifest = self.read_manifest(id)?;
        let root = self.path_of(id);
        for file in &manifest.files {
            let path = root.join(&file.path);
            let damaged = |reason: String| CheckpointError::Damaged {
                id,
                path: path.clone(),
                reason,
            };
            let (bytes, crc32) = checksum(&path).map_err(|e| damaged(e.to_string()))?;
            if bytes != file.bytes {
                return Err(damaged(format!(
                    "{bytes} bytes, the manifest says {}",
                    file.bytes
                )));
            }
            if crc32 != file.crc32 {
                return Err(damaged(format!(
                    "CRC-32 {crc32:08x}, the manifest says {:08x}",
                    file.crc32
                )));
            }
        }
        Ok(manifest)
    }

    /// The manifest of checkpoint `id`, checked against its own checksum
    /// but without reading the files it lists.
    ///
    /// # Errors
    /// Missing, incomplete or damaged manifest.
    pub fn read_manifest(&self, id: CheckpointId) -> Result<Manifest, CheckpointError> {
        let root = self.path_of(id);
        if !root.exists() {
            return Err(CheckpointError::NotFound {
                id,
                dir: self.dir.clone(),
            });
        }
        let path = root.join(MANIFEST);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CheckpointError::Incomplete { id, dir: root });
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let damaged = |reason: &str| CheckpointError::Damaged {
            id,
            path: path.clone(),
            reason: reason.to_string(),
        };
        let newline = text
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| damaged("no header line"))?;
        let header = std::str::from_utf8(&text[..newline]).map_err(|_| damaged("bad header"))?;
        let expected = header
            .strip_prefix(HEADER)
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .ok_or_else(|| damaged("bad header"))?;
        let body = &text[newline + 1..];
        if crc32fast::hash(body) != expected {
            return Err(damaged("checksum mismatch (truncated or altered)"));
        }
        let manifest: Manifest =
            serde_json::from_slice(body).map_err(|e| damaged(&format!("does not parse: {e}")))?;
        if manifest.id != id {
            return Err(damaged(&format!("says it is checkpoint {}", manifest.id)));
        }
        Ok(manifest)
    }

    /// Every checkpoint, ascending, each verified or with why it cannot be
    /// used.
    ///
    /// # Errors
    /// The directory cannot be listed.
    pub fn list(&self) -> Result<Vec<Listed>, CheckpointError> {
        Ok(self
            .ids()?
            .into_iter()
            .map(|id| (id, self.load(id)))
            .collect())
    }

    /// The newest usable checkpoint, and the newer ones skipped with why
    /// (incomplete or damaged): restore falls back past them.
    ///
    /// # Errors
    /// The directory cannot be listed.
    pub fn latest(&self) -> Result<(Option<Manifest>, Vec<CheckpointError>), CheckpointError> {
        let mut skipped = Vec::new();
        for id in self.ids()?.into_iter().rev() {
            match self.load(id) {
                Ok(manifest) => return Ok((Some(manifest), skipped)),
                Err(e) => skipped.push(e),
            }
        }
        Ok((None, skipped))
    }

    /// Deletes periodic checkpoints beyond the newest `keep` complete
    /// ones, and incomplete ones older than the newest complete one.
    /// Savepoints stay.
    ///
    /// # Errors
    /// A directory cannot be deleted.
    pub fn retain(&self, keep: usize) -> Result<(), CheckpointError> {
        let ids = self.ids()?;
        let mut complete = 0usize;
        let mut newest_complete = None;
        for id in ids.into_iter().rev() {
            let delete = match self.read_manifest(id) {
                Ok(m) => {
                    newest_complete.get_or_insert(id);
                    complete += 1;
                    m.kind != CheckpointKind::Savepoint && complete > keep.max(1)
                }
                Err(CheckpointError::Incomplete { .. }) => newest_complete.is_some(),
                Err(_) => false, // damaged: kept for inspection
            };
            if delete {
                let path = self.path_of(id);
                std::fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        }
        Ok(())
    }
}

fn collect_files(
    root: &Path,
    dir: &Path,
    files: &mut Vec<FileRecord>,
    known: &HashMap<FileIdentity, u32>,
    seen: &mut HashMap<FileIdentity, u32>,
) -> Result<(), CheckpointError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        if entry.file_type().map_err(io(&path))?.is_dir() {
            collect_files(root, &path, files, known, seen)?;
            continue;
        }
        let relative = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if relative == MANIFEST || relative.ends_with(".tmp") {
            continue;
        }
        // RocksDB's SST files and the memory store's entry files are
        // never changed once written.
        let immutable = path.extension().is_some_and(|e| e == "sst" || e == "kv");
        let identity = if immutable {
            identity(&path).map_err(io(&path))?
        } else {
            None
        };
        let (bytes, crc32) = match identity.and_then(|id| Some((id, *known.get(&id)?))) {
            Some((id, crc32)) => (id.2, crc32),
            None => checksum(&path).map_err(io(&path))?,
        };
        if let Some(id) = identity {
            seen.insert(id, crc32);
        }
        files.push(FileRecord {
            path: relative,
            bytes,
            crc32,
        });
    }
    Ok(())
}

/// Linking does not change a file's modification time (it changes its
/// change time), so a linked SST keeps its identity.
#[cfg(unix)]
fn identity(path: &Path) -> std::io::Result<Option<FileIdentity>> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(Some((
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
    )))
}

/// Without inodes every file is read again.
#[cfg(not(unix))]
fn identity(_path: &Path) -> std::io::Result<Option<FileIdentity>> {
    Ok(None)
}

fn checksum(path: &Path) -> std::io::Result<(u64, u32)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((bytes, hasher.finalize()));
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{SourceRecord, SubtaskRecord};
    use crate::source::SourcePosition;

    fn manifest(id: CheckpointId, kind: CheckpointKind) -> Manifest {
        Manifest {
            id,
            kind,
            pipeline: "p".into(),
            started_at_ms: 1,
            duration_ms: 2,
            max_parallelism: 128,
            state_backend: "memory".into(),
            sources: vec![SourceRecord {
                name: "in.jsonl".into(),
                position: SourcePosition::File {
                    offset: 10,
                    line: 2,
                },
                max_timestamp: 5,
                ended: false,
            }],
            operators: vec![crate::checkpoint::OperatorRecord {
                name: "w".into(),
                subtasks: vec![SubtaskRecord {
                    dir: "op-w/0".into(),
                    key_groups: (0, 127),
                }],
            }],
            sinks: Vec::new(),
            files: Vec::new(),
        }
    }

    fn take(store: &CheckpointStore, id: CheckpointId, kind: CheckpointKind) -> Manifest {
        let dir = store.begin(id).unwrap();
        std::fs::create_dir_all(dir.join("op-w/0")).unwrap();
        std::fs::write(dir.join("op-w/0/entries.bin"), format!("state of {id}")).unwrap();
        store.complete(manifest(id, kind), Instant::now()).unwrap()
    }

    #[test]
    fn a_linked_immutable_file_keeps_the_checksum_it_was_first_listed_with() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path().to_path_buf());
        let first = store.begin(1).unwrap();
        let original = first.join("000001.kv");
        std::fs::write(&original, b"entries").unwrap();
        let listed = store.complete(manifest(1, CheckpointKind::Checkpoint), Instant::now());
        let crc = listed.unwrap().files[0].crc32;
        // The next checkpoint links the file; its contents change behind
        // Weir's back (same size and modification time): the checksum is
        // not computed again, so the damage is found on load.
        let second = store.begin(2).unwrap();
        std::fs::hard_link(&original, second.join("000001.kv")).unwrap();
        let modified = std::fs::metadata(&original).unwrap().modified().unwrap();
        std::fs::write(&original, b"ENTRIES").unwrap();
        let file = std::fs::File::options()
            .write(true)
            .open(&original)
            .unwrap();
        file.set_modified(modified).unwrap();
        let listed = store.complete(manifest(2, CheckpointKind::Checkpoint), Instant::now());
        assert_eq!(listed.unwrap().files[0].crc32, crc);
        assert!(matches!(
            store.load(2),
            Err(CheckpointError::Damaged { id: 2, .. })
        ));
    }

    #[test]
    fn a_completed_checkpoint_loads_with_its_files_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path().join("checkpoints"));
        assert_eq!(store.next_id().unwrap(), 1);
        let written = take(&store, 1, CheckpointKind::Checkpoint);
        assert_eq!(written.files.len(), 1);
        assert_eq!(written.files[0].path, "op-w/0/entries.bin");
        assert_eq!(store.load(1).unwrap(), written);
        assert_eq!(store.next_id().unwrap(), 2);
    }

    #[test]
    fn damaged_and_incomplete_checkpoints_are_named_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path().to_path_buf());
        for id in 1..=4 {
            take(&store, id, CheckpointKind::Checkpoint);
        }
        // 4: the manifest is missing (died while taking it).
        std::fs::remove_file(store.path_of(4).join(MANIFEST)).unwrap();
        // 3: a state file has a flipped byte.
        let state = store.path_of(3).join("op-w/0/entries.bin");
        let mut bytes = std::fs::read(&state).unwrap();
        bytes[0] ^= 0x40;
        std::fs::write(&state, bytes).unwrap();
        // 2: the manifest is truncated.
        let path = store.path_of(2).join(MANIFEST);
        let text = std::fs::read(&path).unwrap();
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();

        let (latest, skipped) = store.latest().unwrap();
        assert_eq!(latest.unwrap().id, 1);
        let reasons: Vec<String> = skipped.iter().map(ToString::to_string).collect();
        assert!(
            reasons[0].contains("checkpoint 4") && reasons[0].contains("incomplete"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].contains("checkpoint 3 is damaged")
                && reasons[1].contains("entries.bin")
                && reasons[1].contains("CRC-32"),
            "{reasons:?}"
        );
        assert!(
            reasons[2].contains("checkpoint 2 is damaged") && reasons[2].contains("MANIFEST"),
            "{reasons:?}"
        );
        // A truncated state file is caught by its size.
        std::fs::write(store.path_of(1).join("op-w/0/entries.bin"), "st").unwrap();
        let err = store.load(1).unwrap_err().to_string();
        assert!(err.contains("2 bytes, the manifest says"), "{err}");
    }

    #[test]
    fn retention_keeps_the_newest_and_every_savepoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path().to_path_buf());
        take(&store, 1, CheckpointKind::Checkpoint);
        take(&store, 2, CheckpointKind::Savepoint);
        for id in 3..=6 {
            take(&store, id, CheckpointKind::Checkpoint);
        }
        store.begin(7).unwrap(); // in progress: kept
        store.retain(2).unwrap();
        assert_eq!(store.ids().unwrap(), vec![2, 5, 6, 7]);
    }
}
