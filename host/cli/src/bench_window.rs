//! `weir bench tumble|q5`: whole pipelines — the bid-shaped generator,
//! keyed windows of WASM operators, a blackhole sink — against a
//! hand-written native Rust loop doing the same work, in one run.
//!
//! Both sides use the same generator code, writing rows straight into
//! batch buffers (the generator is part of the measured system, as
//! Flink's datagen is part of Flink's). CPU time is the whole process's,
//! so sources, routing, state, the guest calls and the sink all count.

use std::collections::BTreeMap;

use foldhash::HashMap;
use std::path::Path;
use std::sync::Arc;

use weir_batch::{Batch, BatchWriter, json};
use weir_core::checkpoint::CheckpointStore;
use weir_core::checkpoint::coordinator::Checkpointing;
use weir_core::keys::KeySelector;
use weir_core::pipeline::PipelineSettings;
use weir_core::runtime::{Pipeline, Stage, Task};
use weir_core::sink::Blackhole;
use weir_core::source::BidGenerator;
use weir_core::state::{MemoryBackend, StateBackend};
use weir_core::time::{BoundedOutOfOrderness, WatermarkSpec};
use weir_core::window::{WindowOperator, WindowSpec};
use weir_wasm::{Limits, WasmEngine};

use crate::cpu::process_cpu_time;

/// The watermark both sides use (as the Flink peer's `dt - INTERVAL '1' SECOND`).
const OUT_OF_ORDERNESS_MS: u64 = 1000;

/// A windowed workload.
#[derive(Clone, Copy)]
pub enum WindowWorkload {
    /// `SELECT auction, count(*), window_start … TUMBLE(10 s) GROUP BY auction`.
    Tumble,
    /// Nexmark q5: per auction bids in HOP(10 s, 2 s) windows, then the
    /// auctions with the most bids per window.
    Q5,
}

/// One measured run.
#[derive(Default)]
pub struct Measured {
    /// CPU seconds of the whole process during the run.
    pub cpu_seconds: f64,
    /// Wall-clock seconds of the run.
    pub wall_seconds: f64,
    /// Result events.
    pub output_events: u64,
    /// Checkpoints completed (with `--checkpoint-ms`).
    pub checkpoints: u64,
    /// The longest checkpoint, request to manifest, in ms.
    pub checkpoint_max_ms: u64,
    /// The largest checkpoint's size.
    pub checkpoint_max_bytes: u64,
}

fn measure(run: impl FnOnce() -> anyhow::Result<u64>) -> anyhow::Result<Measured> {
    let start = process_cpu_time();
    let wall = std::time::Instant::now();
    let output_events = run()?;
    Ok(Measured {
        cpu_seconds: (process_cpu_time() - start).as_secs_f64(),
        wall_seconds: wall.elapsed().as_secs_f64(),
        output_events,
        ..Measured::default()
    })
}

/// The pipeline with WASM operators at `parallelism`.
pub fn weir(
    workload: WindowWorkload,
    engine: &WasmEngine,
    plugins: &Path,
    events: u64,
    batch: usize,
    parallelism: usize,
    checkpoint_every: Option<std::time::Duration>,
) -> anyhow::Result<Measured> {
    let checkpoint_dir = tempfile_dir()?;
    let checkpointing = checkpoint_every.map(|interval| Checkpointing {
        store: CheckpointStore::new(checkpoint_dir.clone()),
        interval,
        retain: usize::MAX,
        state_backend: "memory".into(),
        stop: Arc::default(),
        restored: None,
    });
    let settings = PipelineSettings {
        batch_size: batch,
        ..PipelineSettings::default()
    };
    let max_parallelism = settings.max_parallelism;
    let stage = |plugin: &str,
                 name: &str,
                 config: &[(&str, &str)],
                 key: &str,
                 window: WindowSpec|
     -> anyhow::Result<Stage> {
        let component = engine.load(&plugins.join(plugin))?;
        let config: Vec<(String, String)> = config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let subtasks = (0..parallelism)
            .map(|subtask| {
                let function = engine.instantiate(name, &component, &config, Limits::default())?;
                Ok(Task::Window(WindowOperator::new(
                    window,
                    0,
                    max_parallelism,
                    Box::new(function),
                    MemoryBackend.open(name, subtask)?,
                )))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Stage {
            key_by: Some(KeySelector::parse(key)),
            subtasks,
        })
    };
    let count = [("key_name", "auction"), ("count_name", "num")];
    let stages = match workload {
        WindowWorkload::Tumble => vec![stage(
            "window_count.wasm",
            "tumble",
            &count,
            "auction",
            WindowSpec::Tumbling { size_ms: 10_000 },
        )?],
        WindowWorkload::Q5 => vec![
            stage(
                "window_count.wasm",
                "bids-per-auction",
                &count,
                "auction",
                WindowSpec::Sliding {
                    size_ms: 10_000,
                    slide_ms: 2_000,
                },
            )?,
            stage(
                "hot_items.wasm",
                "hot-items",
                &[],
                "window_end",
                WindowSpec::Tumbling { size_ms: 2_000 },
            )?,
        ],
    };
    let pipeline = Pipeline {
        settings,
        watermark: WatermarkSpec {
            max_out_of_orderness_ms: OUT_OF_ORDERNESS_MS,
            idle_timeout_ms: None,
        },
        // One generator partition per subtask, as Flink's datagen runs
        // at the query's parallelism: together they write the native
        // loop's rows.
        sources: (0..parallelism as u64)
            .map(|p| {
                Box::new(BidGenerator::partition(
                    42,
                    Some(events),
                    p,
                    parallelism as u64,
                )) as Box<dyn weir_core::source::Source>
            })
            .collect(),
        stages,
        sinks: vec![Box::new(Blackhole::default())],
        late: Some(Box::new(Blackhole::default())),
        dead_letters: None,
        checkpointing,
    };
    let mut checkpoints = 0;
    let mut measured = measure(|| {
        let summary = pipeline.run(&Arc::default())?;
        anyhow::ensure!(
            summary.late_events == 0,
            "{} late events",
            summary.late_events
        );
        checkpoints = summary.checkpoints;
        Ok(summary.events_out)
    })?;
    measured.checkpoints = checkpoints;
    for (_, manifest) in CheckpointStore::new(checkpoint_dir.clone()).list()? {
        let manifest = manifest?;
        measured.checkpoint_max_ms = measured.checkpoint_max_ms.max(manifest.duration_ms);
        measured.checkpoint_max_bytes = measured.checkpoint_max_bytes.max(manifest.bytes());
    }
    let _ = std::fs::remove_dir_all(&checkpoint_dir);
    Ok(measured)
}

/// The Flink peer's two runs: their difference in rows is what its
/// reported rate is over (it removes the JVM's and the planner's start-up).
const FLINK_ROWS: (u64, u64) = (5_000_000, 20_000_000);

/// The events the Flink peer's rate is measured over.
pub const FLINK_MARGINAL_EVENTS: u64 = FLINK_ROWS.1 - FLINK_ROWS.0;

/// Runs the Flink peer benchmark (`shared/peers/flink/run`, Flink 2.3 on
/// the same bid-shaped rows) for `workload` at `parallelism`, and returns
/// its marginal events per CPU-second.
///
/// # Errors
/// The script cannot be started, fails, or prints no `MARGINAL` line.
pub fn flink(run: &Path, workload: WindowWorkload, parallelism: usize) -> anyhow::Result<f64> {
    let query = match workload {
        WindowWorkload::Tumble => "tumble",
        WindowWorkload::Q5 => "q5",
    };
    let command = format!(
        "{} {query} {parallelism} hashmap {} {}",
        run.display(),
        FLINK_ROWS.0,
        FLINK_ROWS.1
    );
    let out = std::process::Command::new(run)
        .args([query, &parallelism.to_string(), "hashmap"])
        .args([FLINK_ROWS.0.to_string(), FLINK_ROWS.1.to_string()])
        .output()
        .map_err(|e| anyhow::anyhow!("cannot start the Flink peer `{command}`: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "the Flink peer `{command}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    marginal_rate(&stdout).ok_or_else(|| {
        anyhow::anyhow!(
            "the Flink peer `{command}` printed no `MARGINAL … ev_per_cpu_s=N` line: {}",
            stdout.trim()
        )
    })
}

/// `ev_per_cpu_s` of the peer's `MARGINAL flink …` line.
fn marginal_rate(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .filter(|line| line.starts_with("MARGINAL"))
        .flat_map(str::split_whitespace)
        .find_map(|field| field.strip_prefix("ev_per_cpu_s="))
        .and_then(|rate| rate.parse::<f64>().ok())
        .filter(|rate| *rate > 0.0)
}

/// A fresh directory for a run's checkpoints.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("weir-bench-checkpoints-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(dir)
}

/// The same work as a plain loop: generate a batch, read each bid's
/// auction (with the reader Weir's `key_by` uses), count per (slice, auction) in hash maps — a slice is the
/// window for tumble, the 2 s slide for q5, as Weir keeps it — and as the
/// watermark passes a window's end, add up its slices and write each result
/// as JSON.
pub fn native(workload: WindowWorkload, events: u64, batch: usize) -> anyhow::Result<Measured> {
    measure(|| {
        let (size, slide) = match workload {
            WindowWorkload::Tumble => (10_000i64, 10_000i64),
            WindowWorkload::Q5 => (10_000, 2_000),
        };
        let mut generator = BidGenerator::new(42, Some(events));
        let mut writer = BatchWriter::with_capacity(batch * 220);
        let mut watermark = BoundedOutOfOrderness::new(OUT_OF_ORDERNESS_MS);
        let mut windows = NativeWindows {
            workload,
            size,
            slide,
            slices: BTreeMap::new(),
            next_end: None,
            out: Vec::with_capacity(1 << 16),
            results: 0,
        };
        loop {
            if generator.fill(&mut writer, batch) == 0 {
                break;
            }
            let bytes = writer.finish_into();
            for event in Batch::new(&bytes)?.iter() {
                // The same field reader as Weir's `key_by`.
                let auction = json::Object::new(event.value)
                    .get("auction")?
                    .and_then(|a| a.as_u64())
                    .ok_or_else(|| anyhow::anyhow!("a bid without an integer `auction`"))?;
                windows.add(event.timestamp, auction);
                watermark.observe(event.timestamp);
            }
            windows.fire(watermark.watermark());
        }
        windows.fire(i64::MAX);
        Ok(windows.results)
    })
}

/// The native loop's windows: bids per auction per slice.
struct NativeWindows {
    workload: WindowWorkload,
    size: i64,
    slide: i64,
    /// Slice start → auction → bids.
    slices: BTreeMap<i64, HashMap<u64, u64>>,
    /// The end of the next window to fire.
    next_end: Option<i64>,
    out: Vec<u8>,
    results: u64,
}

impl NativeWindows {
    fn add(&mut self, timestamp: i64, auction: u64) {
        let start = timestamp - timestamp.rem_euclid(self.slide);
        *self
            .slices
            .entry(start)
            .or_default()
            .entry(auction)
            .or_default() += 1;
        let first_end = start + self.slide;
        self.next_end = Some(self.next_end.map_or(first_end, |end| end.min(first_end)));
    }

    /// Fires every window whose end has passed, then drops the slices no
    /// window needs any more.
    fn fire(&mut self, watermark: i64) {
        use std::io::Write;
        while let Some(end) = self.next_end.filter(|end| end - 1 <= watermark) {
            let start = end - self.size;
            // A window of one slice (tumble) is read as it is; others are
            // added up.
            let merged: HashMap<u64, u64>;
            let empty = HashMap::default();
            let counts = if self.slide == self.size {
                self.slices.get(&start).unwrap_or(&empty)
            } else {
                let mut sum = HashMap::default();
                for (_, slice) in self.slices.range(start..end) {
                    for (auction, n) in slice {
                        *sum.entry(*auction).or_default() += n;
                    }
                }
                merged = sum;
                &merged
            };
            let out = &mut self.out;
            match self.workload {
                WindowWorkload::Tumble => {
                    for (auction, num) in counts {
                        let _ = write!(
                            out,
                            "{{\"auction\":{auction},\"num\":{num},\"window_start\":{start},\"window_end\":{end}}}"
                        );
                        self.results += 1;
                        out.clear();
                    }
                }
                WindowWorkload::Q5 => {
                    let max = counts.values().copied().max().unwrap_or(0);
                    let mut hot: Vec<u64> = counts
                        .iter()
                        .filter(|(_, n)| **n == max)
                        .map(|(a, _)| *a)
                        .collect();
                    hot.sort_unstable();
                    for auction in hot {
                        let _ = write!(
                            out,
                            "{{\"auction\":{auction},\"num\":{max},\"window_start\":{start},\"window_end\":{end}}}"
                        );
                        self.results += 1;
                        out.clear();
                    }
                }
            }
            // A slice's last window starts where the slice does.
            while self
                .slices
                .first_key_value()
                .is_some_and(|(s, _)| *s <= start)
            {
                self.slices.pop_first();
            }
            self.next_end = (!self.slices.is_empty()).then_some(end + self.slide);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::marginal_rate;

    #[test]
    fn the_flink_peers_rate_is_read_from_its_marginal_line() {
        let out = "RESULT q5 rows=5000000 wall=9.1s cpu=15.2s\n\
                   MARGINAL flink q5 par=2 backend=hashmap ev_per_cpu_s=255754 ev_per_wall_s=301234\n";
        assert_eq!(marginal_rate(out), Some(255_754.0));
        assert_eq!(marginal_rate("RESULT q5 rows=5 wall=1s cpu=1s"), None);
        assert_eq!(marginal_rate("MARGINAL flink q5 ev_per_cpu_s=0"), None);
    }
}
