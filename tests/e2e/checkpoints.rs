//! Checkpoints, crash recovery and exactly-once output, through the `weir`
//! binary: golden pipelines run three ways (straight; with checkpoints;
//! killed with SIGKILL and restored, also at another parallelism), a soak
//! test with a per-key sequence oracle, damaged checkpoints, and stop with
//! savepoint.
//!
//! Kill points are random; each test prints its seed, and `WEIR_SEED=n`
//! repeats a run. `WEIR_SOAK_KILLS=n` sets the soak test's kills (20 by
//! default; the larger run in ARCHITECTURE.md uses 50).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{ran, weir};

/// A small deterministic random source (SplitMix64).
struct Random(u64);

impl Random {
    fn new(test: &str) -> Random {
        let seed = std::env::var("WEIR_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{test}: WEIR_SEED={seed}");
        Random(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n.max(1)
    }
}

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden")
        .join(name)
}

/// A golden pipeline rewritten for these tests: its input paths point
/// into the golden directory, its sinks are exactly-once file sinks, its
/// keyed operators run `parallelism` subtasks, and with `checkpoints` it
/// takes one every `interval_ms` and reads at most `rate` events/s.
fn rewrite(name: &str, parallelism: usize, checkpoints: Option<(u64, u64)>) -> String {
    let dir = golden_dir(name);
    let text = std::fs::read_to_string(dir.join("pipeline.toml")).unwrap();
    let mut out = String::new();
    let mut has_pipeline = false;
    for line in text.lines() {
        let line = if line.starts_with("path = \"") {
            line.replace("path = \"", &format!("path = \"{}/", dir.display()))
        } else if line == "type = \"stdout\"" {
            "type = \"files\"\npath = \"out\"".to_string()
        } else if line == "type = \"stderr\"" {
            "type = \"files\"\npath = \"late\"".to_string()
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
        if line.starts_with("key_by = ") {
            out.push_str(&format!("parallelism = {parallelism}\n"));
        }
        if line == "[pipeline]" {
            has_pipeline = true;
            if let Some((_, rate)) = checkpoints {
                out.push_str(&format!("max_events_per_second = {rate}\n"));
            }
        }
    }
    if let Some((interval, rate)) = checkpoints {
        if !has_pipeline {
            out = format!("[pipeline]\nmax_events_per_second = {rate}\n\n{out}");
        }
        out.push_str(&format!(
            "\n[checkpoint]\ndir = \"checkpoints\"\ninterval_ms = {interval}\n"
        ));
    }
    out
}

/// Events the golden pipeline's input holds (to pace it).
fn input_events(name: &str) -> u64 {
    let dir = golden_dir(name);
    let text = std::fs::read_to_string(dir.join("pipeline.toml")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("count = ")?.trim().parse().ok())
        .unwrap_or_else(|| {
            std::fs::read_to_string(dir.join("input.jsonl"))
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count() as u64
        })
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

fn visible(dir: &Path) -> String {
    weir_core::sink::read_visible(&dir.join("out")).unwrap_or_default()
}

fn spawn(dir: &Path, restore: bool) -> Child {
    let mut cmd = weir();
    cmd.args(["run", "--quiet"]);
    if restore {
        cmd.args(["--restore", "latest"]);
    }
    cmd.arg(dir.join("pipeline.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir")
}

fn finish(dir: &Path, restore: bool) -> String {
    let out = spawn(dir, restore).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "weir failed in {}:\n{stderr}",
        dir.display()
    );
    stderr
}

/// Kills `child` with SIGKILL after `after`.
fn kill_after(mut child: Child, after: Duration) {
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return; // finished first
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
}

fn write_pipeline(dir: &Path, text: &str) {
    std::fs::write(dir.join("pipeline.toml"), text).unwrap();
}

#[test]
fn golden_pipelines_give_the_same_output_straight_checkpointed_and_killed() {
    let mut random = Random::new("golden three ways");
    let mut failures = Vec::new();
    for (name, before, after) in [
        ("dashboard", 2, 1),
        ("fraud", 2, 3),
        ("sessions", 2, 1),
        ("nexmark-q5", 2, 3),
    ] {
        let expected = sorted_lines(
            &std::fs::read_to_string(golden_dir(name).join("expected.jsonl")).unwrap(),
        );
        // A paced run takes about 1.5 s.
        let rate = (input_events(name) * 2 / 3).max(4);

        // 1. Straight through.
        let straight = tempfile::tempdir().unwrap();
        write_pipeline(straight.path(), &rewrite(name, before, None));
        finish(straight.path(), false);
        if sorted_lines(&visible(straight.path())) != expected {
            failures.push(format!("{name}: straight run differs"));
        }

        // 2. With checkpoints taken mid-run.
        let checkpointed = tempfile::tempdir().unwrap();
        write_pipeline(
            checkpointed.path(),
            &rewrite(name, before, Some((100, rate))),
        );
        let log = finish(checkpointed.path(), false);
        if !log.contains("kind=checkpoint") {
            failures.push(format!("{name}: no checkpoint was taken mid-run:\n{log}"));
        }
        if sorted_lines(&visible(checkpointed.path())) != expected {
            failures.push(format!("{name}: checkpointed run differs"));
        }

        // 3. Killed at a random point, restored at another parallelism.
        let killed = tempfile::tempdir().unwrap();
        write_pipeline(killed.path(), &rewrite(name, before, Some((100, rate))));
        let at = Duration::from_millis(300 + random.below(1000));
        kill_after(spawn(killed.path(), false), at);
        write_pipeline(killed.path(), &rewrite(name, after, Some((100, rate))));
        let log = finish(killed.path(), true);
        let got = sorted_lines(&visible(killed.path()));
        if got != expected {
            failures.push(format!(
                "{name}: killed after {at:?} and restored at parallelism {after}: output differs\n--- got\n{}\n--- expected\n{}\n--- log\n{log}",
                got.join("\n"),
                expected.join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The soak pipeline: per-key sequence numbers → 1 s tumbling windows per
/// key (counts) → a keyed function numbering each key's windows → an
/// exactly-once file sink.
fn soak_pipeline(count: u64, rate: u64, parallelism: usize) -> String {
    let plugins = crate::support::plugins().display().to_string();
    format!(
        r#"[pipeline]
batch_size = 100
max_events_per_second = {rate}

[[source]]
type = "sequence"
count = {count}
keys = 8
interval_ms = 10

[[operator]]
name = "count"
component = "{plugins}/window_count.wasm"
key_by = "key"
parallelism = {parallelism}
window = {{ type = "tumbling", size_ms = 1000 }}

[[operator]]
name = "number"
component = "{plugins}/seq_check.wasm"
key_by = "key"
parallelism = {parallelism}

[[sink]]
type = "files"
path = "out"

[late_data]
type = "files"
path = "late"

[checkpoint]
dir = "checkpoints"
interval_ms = 100
retain = 2
"#
    )
}

/// The oracle: every key's windows arrive exactly once, in order, each
/// with the count the generator implies, numbered 1, 2, 3, … by the keyed
/// stage (a repeat or a gap in its state would break the numbering).
fn check_sequences(output: &str, count: u64) -> Result<(), String> {
    let base = 1_704_067_200_000u64;
    let mut expected: BTreeMap<(String, u64), u64> = BTreeMap::new();
    for n in 0..count {
        let window = (base + n * 10) / 1000 * 1000;
        *expected.entry((format!("k{}", n % 8), window)).or_default() += 1;
    }
    let mut per_key: HashMap<String, Vec<(u64, u64, u64)>> = HashMap::new();
    for line in output.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("bad line {line}: {e}"))?;
        per_key
            .entry(v["key"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push((
                v["n"].as_u64().unwrap_or(0),
                v["event"]["window_start"].as_u64().unwrap_or(0),
                v["event"]["count"].as_u64().unwrap_or(0),
            ));
    }
    for key in (0..8).map(|k| format!("k{k}")) {
        let got = per_key.remove(&key).unwrap_or_default();
        let want: Vec<(u64, u64, u64)> = expected
            .iter()
            .filter(|((k, _), _)| *k == key)
            .enumerate()
            .map(|(i, ((_, w), c))| (i as u64 + 1, *w, *c))
            .collect();
        if got != want {
            let first = got.iter().zip(&want).position(|(a, b)| a != b);
            return Err(format!(
                "key {key}: {} results, {} expected; first difference at #{first:?}: got {:?}, expected {:?}",
                got.len(),
                want.len(),
                first.and_then(|i| got.get(i)),
                first.and_then(|i| want.get(i)),
            ));
        }
    }
    Ok(())
}

#[test]
fn soak_every_key_sequence_is_complete_after_repeated_sigkill() {
    let kills: u32 = std::env::var("WEIR_SOAK_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut random = Random::new("soak");
    let rate = 4000;
    // Enough input that the kills all land before the end.
    let count = u64::from(kills) * 1500 + 8000;
    let dir = tempfile::tempdir().unwrap();
    let mut landed = 0;
    for kill in 0..kills {
        // Parallelism changes between restarts, too.
        write_pipeline(
            dir.path(),
            &soak_pipeline(count, rate, 1 + kill as usize % 3),
        );
        let child = spawn(dir.path(), kill > 0);
        let started = Instant::now();
        let at = Duration::from_millis(200 + random.below(500));
        kill_after(child, at);
        if started.elapsed() >= at {
            landed += 1;
        }
    }
    write_pipeline(dir.path(), &soak_pipeline(count, rate * 4, 2));
    finish(dir.path(), true);
    assert!(
        landed >= kills.min(20),
        "only {landed} kills landed mid-run"
    );
    if let Err(e) = check_sequences(&visible(dir.path()), count) {
        panic!("after {kills} kills: {e}");
    }
    // The finished run left a final checkpoint: restoring it repeats nothing.
    let before = visible(dir.path());
    finish(dir.path(), true);
    assert_eq!(
        visible(dir.path()),
        before,
        "a restore after the end added output"
    );
    // Nothing half-written is visible.
    let hidden = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(hidden, 0, "in-progress parts left after the final run");
}

#[test]
fn a_damaged_checkpoint_is_named_and_restore_falls_back_to_the_one_before() {
    let count = 12_000;
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &soak_pipeline(count, 4000, 2));
    kill_after(spawn(dir.path(), false), Duration::from_millis(1500));
    let store = weir_core::checkpoint::CheckpointStore::new(dir.path().join("checkpoints"));
    let (newest, _) = store.latest().unwrap();
    let newest = newest.expect("checkpoints were taken before the kill");
    // Flip a byte in the newest checkpoint's largest file of its own (a
    // file hard-linked from the one before would damage both).
    let root = store.path_of(newest.id);
    let file = newest
        .files
        .iter()
        .filter(|f| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(root.join(&f.path)).unwrap().nlink() == 1
        })
        .max_by_key(|f| f.bytes)
        .unwrap();
    let path = root.join(&file.path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    let listing = ran(weir()
        .arg("checkpoints")
        .arg(dir.path().join("pipeline.toml"))
        .output()
        .unwrap());
    assert!(listing.ok, "{}", listing.stderr);
    assert!(
        listing
            .stdout
            .contains(&format!("{} is damaged", newest.id))
            && listing.stdout.contains(&file.path),
        "{}",
        listing.stdout
    );
    let log = finish(dir.path(), true);
    assert!(
        log.contains(&format!("checkpoint {} is damaged", newest.id)) && log.contains("CRC-32"),
        "{log}"
    );
    check_sequences(&visible(dir.path()), count).unwrap();
}

#[test]
fn with_every_checkpoint_damaged_restore_refuses_to_start_over() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &soak_pipeline(12_000, 4000, 1));
    kill_after(spawn(dir.path(), false), Duration::from_millis(1500));
    let store = weir_core::checkpoint::CheckpointStore::new(dir.path().join("checkpoints"));
    let ids = store.ids().unwrap();
    assert!(!ids.is_empty(), "checkpoints were taken before the kill");
    for id in ids {
        let manifest = store.path_of(id).join("MANIFEST");
        if let Ok(mut bytes) = std::fs::read(&manifest) {
            let last = bytes.len() - 2;
            bytes[last] ^= 0x01;
            std::fs::write(&manifest, bytes).unwrap();
        }
    }
    let out = spawn(dir.path(), true).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no usable checkpoint") && stderr.contains("is damaged"),
        "{stderr}"
    );
}

#[test]
fn sigterm_stops_with_a_savepoint_that_resumes_exactly() {
    let count = 40_000;
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &soak_pipeline(count, 4000, 2));
    let child = spawn(dir.path(), false);
    std::thread::sleep(Duration::from_millis(1200));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let id: u64 = stderr
        .split("stopped with savepoint ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no savepoint reported:\n{stderr}"));
    let listing = ran(weir()
        .arg("checkpoints")
        .arg(dir.path().join("pipeline.toml"))
        .output()
        .unwrap());
    assert!(listing.stdout.contains("savepoint"), "{}", listing.stdout);
    assert!(
        visible(dir.path()).lines().count() > 0,
        "output up to the savepoint is visible"
    );
    let restored = ran(weir()
        .args(["run", "--quiet", "--restore", &id.to_string()])
        .arg(dir.path().join("pipeline.toml"))
        .output()
        .unwrap());
    assert!(restored.ok, "{}", restored.stderr);
    check_sequences(&visible(dir.path()), count).unwrap();
}

#[test]
fn rocksdb_state_is_restored_after_sigkill_at_other_parallelisms() {
    let mut random = Random::new("rocksdb restore");
    let count = 12_000;
    let dir = tempfile::tempdir().unwrap();
    // A zero-byte hot tier: every state access goes through RocksDB, and
    // every checkpoint is a RocksDB checkpoint.
    let with_rocksdb = |parallelism| {
        soak_pipeline(count, 4000, parallelism)
            + "\n[state]\nbackend = \"rocksdb\"\npath = \"state\"\nhot_tier_mb = 0\n"
    };
    for kill in 0..4u64 {
        write_pipeline(dir.path(), &with_rocksdb(1 + kill as usize % 3));
        let at = Duration::from_millis(500 + random.below(300));
        kill_after(spawn(dir.path(), kill > 0), at);
    }
    write_pipeline(dir.path(), &with_rocksdb(2));
    finish(dir.path(), true);
    check_sequences(&visible(dir.path()), count).unwrap();
}

#[test]
fn a_checkpoint_that_does_not_fit_the_pipeline_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), &soak_pipeline(2000, 100_000, 1));
    finish(dir.path(), false);
    // Other key groups: the state cannot be split the same way.
    let changed = soak_pipeline(2000, 100_000, 1)
        .replace("batch_size = 100", "batch_size = 100\nmax_parallelism = 64");
    write_pipeline(dir.path(), &changed);
    let out = ran(weir()
        .args(["run", "--quiet", "--restore", "latest"])
        .arg(dir.path().join("pipeline.toml"))
        .output()
        .unwrap());
    assert!(!out.ok);
    assert!(
        out.stderr.contains("cannot restore checkpoint")
            && out.stderr.contains("64 (max_parallelism is fixed"),
        "{}",
        out.stderr
    );
    // A checkpoint number that does not exist.
    let out = ran(weir()
        .args(["run", "--quiet", "--restore", "999"])
        .arg(dir.path().join("pipeline.toml"))
        .output()
        .unwrap());
    assert!(
        !out.ok && out.stderr.contains("no checkpoint 999"),
        "{}",
        out.stderr
    );
}

/// Runs `weir bench ARGS --json` with the built plugins and parses its
/// rows; the command must succeed.
fn bench_json(args: &[&str]) -> Vec<serde_json::Value> {
    let out = ran(weir()
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg("--plugins")
        .arg(crate::support::plugins())
        .output()
        .unwrap());
    assert!(out.ok, "{}", out.stderr);
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `weir bench checkpoint` and `weir bench recovery` at a small size: one
/// row per checkpoint (the savepoint that stops the run last), and a
/// restart that replays what the "crash" lost.
#[test]
fn the_checkpoint_and_recovery_benchmarks_report_what_they_measured() {
    let bench = |args: &[&str]| {
        // A checkpoint every 50 ms: the release build runs the 60 000
        // events in well under 200 ms, and two rows are needed.
        bench_json(&[args, &["--events", "60000", "--checkpoint-ms", "50"]].concat())
    };
    let rows = bench(&["checkpoint", "--backend", "memory"]);
    let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.last(), Some(&"savepoint"), "{rows:?}");
    for row in &rows {
        assert_eq!(row["workload"], "checkpoint");
        assert!(row["state_bytes"].as_u64().unwrap() > 0, "{row}");
    }
    // The state grows checkpoint by checkpoint (one new window per event).
    let sizes: Vec<u64> = rows
        .iter()
        .map(|r| r["state_bytes"].as_u64().unwrap())
        .collect();
    assert!(sizes.first() < sizes.last(), "{sizes:?}");

    let rows = bench(&["recovery", "--backend", "rocksdb"]);
    let [row] = rows.as_slice() else {
        panic!("one row: {rows:?}")
    };
    assert_eq!(row["variant"], "rocksdb");
    assert!(row["state_bytes"].as_u64().unwrap() > 0, "{row}");
    let (load, caught_up) = (
        row["load_seconds"].as_f64().unwrap(),
        row["caught_up_seconds"].as_f64().unwrap(),
    );
    assert!(0.0 < load && load <= caught_up, "{row}");
    assert!(
        row["events"].as_u64() >= row["replayed_events"].as_u64(),
        "{row}"
    );
}

/// Each row's variant and its number `field` (`batch`, `parallelism`),
/// in order.
fn variants_by<'a>(rows: &'a [serde_json::Value], field: &str) -> Vec<(&'a str, u64)> {
    rows.iter()
        .map(|r| (r["variant"].as_str().unwrap(), r[field].as_u64().unwrap()))
        .collect()
}

/// `weir bench` for the operator and window workloads at a small size, two
/// rounds: a row per variant, and the WASM side gave the native side's
/// results (the command fails otherwise — for q5 that is the sliced
/// windows against a plain loop over the same bids).
#[test]
fn the_throughput_benchmarks_compare_like_with_like() {
    let bench = |args: &[&str]| bench_json(&[args, &["--rounds", "2"]].concat());
    let rows = bench(&["q1", "--events", "3000", "--batch", "16,256"]);
    let variants = variants_by(&rows, "batch");
    assert_eq!(
        variants,
        [("native", 16), ("wasm", 16), ("native", 256), ("wasm", 256)]
    );
    for row in &rows {
        assert_eq!(row["output_events"], 3000, "{row}");
        assert!(row["ratio_to_native"].as_f64().unwrap() > 0.0, "{row}");
    }
    let rows = bench(&["q5", "--events", "60000", "--parallelism", "1,2"]);
    let variants = variants_by(&rows, "parallelism");
    assert_eq!(variants, [("native", 1), ("wasm", 1), ("wasm", 2)]);
    let results = rows[0]["output_events"].as_u64().unwrap();
    assert!(results > 0);
    assert!(
        rows.iter().all(|r| r["output_events"] == results),
        "{rows:?}"
    );
}

/// `weir bench crossing`: the same batches into the crossing fixture and
/// back as typed records and as one flat buffer, next to the echo done
/// natively. Every variant gives every event back (the command checks
/// that each echo returns the first batch byte for byte, and fails otherwise).
#[test]
fn the_crossing_benchmark_echoes_every_event_in_both_encodings() {
    let rows = bench_json(&[
        "crossing", "--events", "3000", "--batch", "1,256", "--rounds", "1",
    ]);
    let variants = variants_by(&rows, "batch");
    assert_eq!(
        variants,
        [
            ("native", 1),
            ("flat", 1),
            ("records", 1),
            ("native", 256),
            ("flat", 256),
            ("records", 256)
        ]
    );
    for row in &rows {
        assert_eq!(row["workload"], "crossing");
        assert_eq!(row["output_events"], 3000, "{row}");
        assert!(
            row["events_per_cpu_second"].as_f64().unwrap() > 0.0,
            "{row}"
        );
    }
}

/// `weir bench tumble --flink RUN`: the Flink peer's script runs once per
/// round and parallelism, with the arguments the peer takes, and the WASM
/// row is reported against its `MARGINAL` rate. A stand-in script plays
/// the peer (Flink itself takes minutes); a failing one is a clear error.
#[test]
fn the_window_benchmarks_report_against_the_flink_peer() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let peer = dir.path().join("run");
    let calls = dir.path().join("calls");
    std::fs::write(
        &peer,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\n\
             echo \"MARGINAL flink $1 par=$2 backend=$3 ev_per_cpu_s=250000 ev_per_wall_s=1\"\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&peer, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rows = bench_json(&[
        "tumble",
        "--events",
        "30000",
        "--parallelism",
        "1,2",
        "--rounds",
        "2",
        "--flink",
        peer.to_str().unwrap(),
    ]);
    let variants = variants_by(&rows, "parallelism");
    assert_eq!(
        variants,
        [
            ("native", 1),
            ("flink", 1),
            ("wasm", 1),
            ("flink", 2),
            ("wasm", 2)
        ]
    );
    for row in &rows {
        match row["variant"].as_str().unwrap() {
            "flink" => assert_eq!(row["events_per_cpu_second"], 250000.0),
            "wasm" => {
                let rate = row["events_per_cpu_second"].as_f64().unwrap();
                let ratio = row["ratio_to_flink"].as_f64().unwrap();
                assert!((ratio - rate / 250000.0).abs() < 1e-9, "{row}");
            }
            _ => assert!(row.get("ratio_to_flink").is_none(), "{row}"),
        }
    }
    // Two rounds, two parallelisms; the rows the peer sums over.
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        [
            "tumble 1 hashmap 5000000 20000000",
            "tumble 2 hashmap 5000000 20000000",
            "tumble 1 hashmap 5000000 20000000",
            "tumble 2 hashmap 5000000 20000000",
        ]
    );

    std::fs::write(&peer, "#!/bin/sh\necho 'no java' >&2\nexit 3\n").unwrap();
    let with_peer = |workload: &str, events: &str| {
        ran(weir()
            .args([
                "bench", workload, "--events", events, "--rounds", "1", "--flink",
            ])
            .arg(&peer)
            .arg("--plugins")
            .arg(crate::support::plugins())
            .output()
            .unwrap())
    };
    let out = with_peer("q5", "3000");
    assert!(
        !out.ok && out.stderr.contains("q5 1 hashmap") && out.stderr.contains("no java"),
        "{}",
        out.stderr
    );
    // Only the windowed pipelines have a Flink peer.
    let out = with_peer("q1", "10");
    assert!(
        !out.ok && out.stderr.contains("tumble and q5"),
        "{}",
        out.stderr
    );
}
