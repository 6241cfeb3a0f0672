//! The exactly-once file sink: a directory of JSON Lines part files.
//!
//! Output goes to a hidden part (`.part-000003.jsonl.inprogress`). At a
//! checkpoint barrier the part is flushed, synced and *sealed*: its number
//! goes into the checkpoint, and writing continues in a new part. When the
//! checkpoint completes, the coordinator renames the sealed parts to
//! `part-000003.jsonl` ([`PartCommitter`]). After a crash, restoring
//! checkpoint `n` commits `n`'s sealed parts (if the crash came between
//! manifest and rename) and deletes every part started after `n`: their
//! events are produced again. So every event is in exactly one visible
//! part, and a visible part never changes.
//!
//! Without checkpoints the sink writes one part per run and makes it
//! visible when the run ends (also after an error, as other sinks do).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weir_batch::Batch;

use super::{Committer, JsonLinesSink, Sink, SinkError, SinkSummary};
use crate::pipeline::LineFormat;

/// What a checkpoint records of the sink.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PartState {
    /// The number the next part takes.
    next_part: u64,
    /// Sealed parts to make visible.
    pending: Vec<u64>,
}

fn visible(dir: &Path, part: u64) -> PathBuf {
    dir.join(format!("part-{part:06}.jsonl"))
}

fn hidden(dir: &Path, part: u64) -> PathBuf {
    dir.join(format!(".part-{part:06}.jsonl.inprogress"))
}

/// Part numbers in `dir`: (visible, hidden).
fn parts(dir: &Path) -> std::io::Result<(Vec<u64>, Vec<u64>)> {
    let (mut shown, mut hidden) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix("part-")
            .and_then(|r| r.strip_suffix(".jsonl"))
            .and_then(|n| n.parse().ok())
        {
            shown.push(n);
        } else if let Some(n) = name
            .strip_prefix(".part-")
            .and_then(|r| r.strip_suffix(".jsonl.inprogress"))
            .and_then(|n| n.parse().ok())
        {
            hidden.push(n);
        }
    }
    Ok((shown, hidden))
}

/// Renames sealed parts into view.
#[derive(Debug, Clone)]
pub struct PartCommitter {
    name: String,
    dir: PathBuf,
}

impl PartCommitter {
    fn io(&self, source: std::io::Error) -> SinkError {
        SinkError::Io {
            sink: self.name.clone(),
            source,
        }
    }

    fn commit_parts(&self, parts: &[u64]) -> Result<(), SinkError> {
        for &part in parts {
            let (from, to) = (hidden(&self.dir, part), visible(&self.dir, part));
            match std::fs::rename(&from, &to) {
                Ok(()) => {}
                // Committed before (by the coordinator, or an earlier restore).
                Err(_) if to.exists() => {}
                Err(e) => return Err(self.io(e)),
            }
        }
        if !parts.is_empty() {
            std::fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.io(e))?;
        }
        Ok(())
    }
}

impl Committer for PartCommitter {
    fn commit(&self, state: &serde_json::Value) -> Result<(), SinkError> {
        let state: PartState =
            serde_json::from_value(state.clone()).map_err(|e| SinkError::Unwritable {
                sink: self.name.clone(),
                event: 0,
                reason: format!("the checkpoint's state of this sink does not parse: {e}"),
            })?;
        self.commit_parts(&state.pending)
    }
}

/// See the module documentation.
pub struct FilesSink {
    committer: Arc<PartCommitter>,
    format: LineFormat,
    checkpointed: bool,
    next_part: u64,
    current: Option<(u64, JsonLinesSink<std::fs::File>)>,
    sealed: Vec<u64>,
    summary: SinkSummary,
}

impl FilesSink {
    /// Opens `dir` (created if missing). `checkpointed`: commit only what
    /// checkpoints cover. `restored`: the sink's state in the checkpoint
    /// being restored; its sealed parts are committed and every part
    /// started after it is deleted.
    ///
    /// # Errors
    /// The directory cannot be created or cleaned, or `restored` is not
    /// this sink's state.
    pub fn open(
        dir: PathBuf,
        format: LineFormat,
        checkpointed: bool,
        restored: Option<&serde_json::Value>,
    ) -> Result<Self, SinkError> {
        let committer = Arc::new(PartCommitter {
            name: dir.display().to_string(),
            dir: dir.clone(),
        });
        let io = |e| committer.io(e);
        std::fs::create_dir_all(&dir).map_err(io)?;
        let next_part = match restored {
            Some(state) => {
                committer.commit(state)?;
                let state: PartState = serde_json::from_value(state.clone()).unwrap_or_default();
                let (shown, _) = parts(&dir).map_err(io)?;
                for part in shown.into_iter().filter(|p| *p >= state.next_part) {
                    // Only possible when a newer checkpoint was damaged and
                    // restore fell back past it.
                    tracing::warn!(
                        sink = %committer.name,
                        part,
                        "deleting a part committed by a checkpoint newer than the one restored"
                    );
                    std::fs::remove_file(visible(&dir, part)).map_err(io)?;
                }
                state.next_part
            }
            None => parts(&dir).map_err(io)?.0.iter().max().map_or(0, |m| m + 1),
        };
        // Hidden parts belong to no checkpoint being restored: their events
        // come again.
        for part in parts(&dir).map_err(io)?.1 {
            std::fs::remove_file(hidden(&dir, part)).map_err(io)?;
        }
        Ok(FilesSink {
            committer,
            format,
            checkpointed,
            next_part,
            current: None,
            sealed: Vec::new(),
            summary: SinkSummary::default(),
        })
    }

    /// Flushes, syncs and closes the current part; returns its number.
    fn seal(&mut self) -> Result<Option<u64>, SinkError> {
        let Some((part, sink)) = self.current.take() else {
            return Ok(None);
        };
        let file = sink.into_inner()?;
        file.sync_all().map_err(|e| self.committer.io(e))?;
        Ok(Some(part))
    }

    fn commit_everything(&mut self) -> Result<SinkSummary, SinkError> {
        if let Some(part) = self.seal()? {
            self.sealed.push(part);
        }
        self.committer.commit_parts(&self.sealed)?;
        self.sealed.clear();
        Ok(self.summary)
    }
}

impl Sink for FilesSink {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
        if self.current.is_none() {
            let part = self.next_part;
            let path = hidden(&self.committer.dir, part);
            let file = std::fs::File::create(&path).map_err(|e| self.committer.io(e))?;
            self.next_part += 1;
            let name = format!("{}/part-{part:06}", self.committer.name);
            self.current = Some((part, JsonLinesSink::new(name, file, self.format)));
        }
        if let Some((_, sink)) = &mut self.current {
            let before = sink.summary();
            sink.write(batch)?;
            let after = sink.summary();
            self.summary.events += after.events - before.events;
            self.summary.bytes += after.bytes - before.bytes;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkSummary, SinkError> {
        self.commit_everything()
    }

    fn stop(&mut self) -> Result<SinkSummary, SinkError> {
        if !self.checkpointed {
            return self.commit_everything();
        }
        if let Some((_, sink)) = &mut self.current {
            sink.finish()?;
        }
        Ok(self.summary)
    }

    fn pre_commit(&mut self) -> Result<serde_json::Value, SinkError> {
        if let Some(part) = self.seal()? {
            self.sealed.push(part);
        }
        // Parts the coordinator has committed since need not be named again.
        let dir = self.committer.dir.clone();
        self.sealed.retain(|p| hidden(&dir, *p).exists());
        let state = PartState {
            next_part: self.next_part,
            pending: self.sealed.clone(),
        };
        serde_json::to_value(&state).map_err(|e| SinkError::Unwritable {
            sink: self.committer.name.clone(),
            event: self.summary.events,
            reason: e.to_string(),
        })
    }

    fn committer(&self) -> Option<Arc<dyn Committer>> {
        Some(self.committer.clone())
    }
}

/// Lines of the visible parts of `dir`, in part order (what a reader sees).
///
/// # Errors
/// The directory or a part cannot be read.
pub fn read_visible(dir: &Path) -> std::io::Result<String> {
    let (mut shown, _) = parts(dir)?;
    shown.sort_unstable();
    let mut text = String::new();
    for part in shown {
        text.push_str(&std::fs::read_to_string(visible(dir, part))?);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_batch::BatchWriter;

    fn batch(values: &[&str]) -> Vec<u8> {
        let mut w = BatchWriter::new();
        for v in values {
            w.push(0, None, v.as_bytes(), &[]);
        }
        w.finish()
    }

    fn write(sink: &mut FilesSink, values: &[&str]) {
        let bytes = batch(values);
        sink.write(&Batch::new(&bytes).unwrap()).unwrap();
    }

    #[test]
    fn sealed_parts_appear_only_on_commit_and_a_restore_drops_uncovered_ones() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut sink = FilesSink::open(out.clone(), LineFormat::Value, true, None).unwrap();
        write(&mut sink, &["1", "2"]);
        let first = sink.pre_commit().unwrap();
        assert_eq!(read_visible(&out).unwrap(), "", "not visible before commit");
        sink.committer().unwrap().commit(&first).unwrap();
        assert_eq!(read_visible(&out).unwrap(), "1\n2\n");
        write(&mut sink, &["3"]);
        let second = sink.pre_commit().unwrap();
        write(&mut sink, &["4"]); // after the last barrier: uncovered
        sink.stop().unwrap();
        drop(sink);
        assert_eq!(read_visible(&out).unwrap(), "1\n2\n");
        // Crash after the second checkpoint's manifest, before its commit:
        // restoring it commits part 1 and drops the uncovered part 2.
        let mut sink =
            FilesSink::open(out.clone(), LineFormat::Value, true, Some(&second)).unwrap();
        assert_eq!(read_visible(&out).unwrap(), "1\n2\n3\n");
        write(&mut sink, &["4"]);
        sink.finish().unwrap();
        assert_eq!(read_visible(&out).unwrap(), "1\n2\n3\n4\n");
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            3,
            "no hidden parts left"
        );
        // Falling back to the first checkpoint deletes what came after it.
        FilesSink::open(out.clone(), LineFormat::Value, true, Some(&first)).unwrap();
        assert_eq!(read_visible(&out).unwrap(), "1\n2\n");
    }

    #[test]
    fn without_checkpoints_the_part_is_visible_when_the_run_stops() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FilesSink::open(dir.path().into(), LineFormat::Value, false, None).unwrap();
        write(&mut sink, &["a"]);
        sink.stop().unwrap();
        assert_eq!(read_visible(dir.path()).unwrap(), "a\n");
    }
}
