//! Event time through the binary: windows at several parallelisms, late
//! data, idle partitions, keyed state, and the world checks.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{Case, plugin, ran, weir};

fn golden(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden")
        .join(name)
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// Copies a golden case with `parallelism = n` on every keyed operator.
fn at_parallelism(case: &str, n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(golden(case)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let pipeline = std::fs::read_to_string(dir.path().join("pipeline.toml")).unwrap();
    let rewritten: String = pipeline
        .lines()
        .flat_map(|line| {
            let extra = line
                .starts_with("key_by")
                .then(|| format!("parallelism = {n}"));
            std::iter::once(line.to_string()).chain(extra)
        })
        .map(|line| line + "\n")
        .collect();
    assert!(
        rewritten.contains("parallelism"),
        "{case} has no keyed operator"
    );
    std::fs::write(dir.path().join("pipeline.toml"), rewritten).unwrap();
    dir
}

/// Sets `[pipeline] local_aggregation = false` in a copied case.
fn in_one_phase(dir: &tempfile::TempDir) {
    let path = dir.path().join("pipeline.toml");
    let pipeline = std::fs::read_to_string(&path).unwrap();
    let setting = "[pipeline]\nlocal_aggregation = false\n";
    let rewritten = if pipeline.contains("[pipeline]\n") {
        pipeline.replacen("[pipeline]\n", setting, 1)
    } else {
        format!("{setting}\n{pipeline}")
    };
    std::fs::write(path, rewritten).unwrap();
}

#[test]
fn a_sliding_aggregate_without_aggregate_slices_fires_through_merge_to_the_same_results() {
    // The fixture exports `aggregate` only, as an SDK without the
    // optional one-call firing builds it…
    let inspected = ran(weir()
        .arg("inspect")
        .arg(plugin("merge_only.wasm"))
        .output()
        .unwrap());
    assert!(
        inspected.ok && !inspected.stdout.contains("aggregate-slices"),
        "{}{}",
        inspected.stdout,
        inspected.stderr
    );
    // …and gives q5's golden results in place of `window-count`.
    let dir = at_parallelism("nexmark-q5", 1);
    let path = dir.path().join("pipeline.toml");
    let pipeline = std::fs::read_to_string(&path).unwrap();
    assert!(pipeline.contains("/window_count.wasm"));
    std::fs::write(
        &path,
        pipeline.replace("/window_count.wasm", "/merge_only.wasm"),
    )
    .unwrap();
    let out = ran(weir().args(["run", "--quiet"]).arg(&path).output().unwrap());
    assert!(out.ok, "{}", out.stderr);
    let expected = std::fs::read_to_string(golden("nexmark-q5").join("expected.jsonl")).unwrap();
    assert_eq!(out.stdout, expected);
}

#[test]
fn keyed_results_are_the_same_at_parallelism_1_2_and_4() {
    for case in ["dashboard", "nexmark-q5", "sessions", "fraud"] {
        let expected = std::fs::read_to_string(golden(case).join("expected.jsonl")).unwrap();
        assert!(!expected.is_empty(), "{case}: empty expected output");
        // Aggregates over tumbling and sliding windows run in two phases
        // above parallelism 1, unless the pipeline says one.
        for (n, two_phase) in [(1, true), (2, true), (4, true), (2, false), (4, false)] {
            let dir = at_parallelism(case, n);
            if !two_phase {
                in_one_phase(&dir);
            }
            let out = ran(weir()
                .args(["run", "--quiet"])
                .arg(dir.path().join("pipeline.toml"))
                .output()
                .unwrap());
            let what = format!("{case} at parallelism {n}, two phases {two_phase}");
            assert!(out.ok, "{what}: {}", out.stderr);
            assert_eq!(sorted_lines(&out.stdout), sorted_lines(&expected), "{what}");
        }
    }
}

fn window_case(input: &str, lateness: u64) -> Case {
    let pipeline = format!(
        r#"[pipeline]
batch_size = 1

[[source]]
type = "jsonl"
path = "input.jsonl"
time_field = "ts"

[[operator]]
name = "count"
component = "${{WEIR_PLUGINS}}/window_count.wasm"
key_by = "page"
window = {{ type = "tumbling", size_ms = 10 }}
allowed_lateness_ms = {lateness}

[[sink]]
type = "stdout"

[late_data]
type = "jsonl"
path = "late.jsonl"
"#
    );
    Case::new(&pipeline, input)
}

#[test]
fn late_events_go_to_the_late_sink_and_not_into_results() {
    // With no out-of-orderness, ts 25 moves the watermark to 24: window
    // [0,10) has fired, so the event at 5 is late.
    let case = window_case(
        "{\"page\":\"/\",\"ts\":1}\n{\"page\":\"/\",\"ts\":25}\n{\"page\":\"/\",\"ts\":5,\"late\":true}\n",
        0,
    );
    let out = case.run();
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "{\"key\":\"/\",\"count\":1,\"window_start\":0,\"window_end\":10}\n{\"key\":\"/\",\"count\":1,\"window_start\":20,\"window_end\":30}\n"
    );
    let late = std::fs::read_to_string(case.path("late.jsonl")).unwrap();
    assert_eq!(late, "{\"page\":\"/\",\"ts\":5,\"late\":true}\n");
}

#[test]
fn allowed_lateness_updates_a_fired_window() {
    let case = window_case(
        "{\"page\":\"/\",\"ts\":1}\n{\"page\":\"/\",\"ts\":25}\n{\"page\":\"/\",\"ts\":5}\n",
        100,
    );
    let out = case.run();
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        [
            "{\"key\":\"/\",\"count\":1,\"window_start\":0,\"window_end\":10}",
            "{\"key\":\"/\",\"count\":2,\"window_start\":0,\"window_end\":10}",
            "{\"key\":\"/\",\"count\":1,\"window_start\":20,\"window_end\":30}",
        ]
    );
    assert_eq!(
        std::fs::read_to_string(case.path("late.jsonl")).unwrap(),
        ""
    );
}

#[test]
fn an_idle_partition_does_not_stall_windows() {
    // At parallelism 2 the count runs in two phases: the idle partition
    // must send on what it holds and its idleness.
    for parallelism in [1, 2] {
        idle_partition_at(parallelism);
    }
}

fn idle_partition_at(parallelism: usize) {
    // Two partitions: a file that ends, and stdin, which stays open and
    // silent. Without idleness the watermark would wait for stdin forever.
    let pipeline = r#"[[source]]
type = "jsonl"
path = "input.jsonl"
time_field = "ts"

[[source]]
type = "stdin"
time_field = "ts"

[watermark]
idle_timeout_ms = 300

[[operator]]
name = "count"
component = "${WEIR_PLUGINS}/window_count.wasm"
key_by = "page"
window = { type = "tumbling", size_ms = 10 }

[[sink]]
type = "stdout"

[late_data]
type = "stderr"
"#;
    let pipeline = pipeline.replace(
        "key_by = \"page\"",
        &format!("key_by = \"page\"\nparallelism = {parallelism}"),
    );
    let case = Case::new(
        &pipeline,
        "{\"page\":\"/\",\"ts\":1}\n{\"page\":\"/\",\"ts\":2}\n",
    );
    let mut child = weir()
        .args(["run", "--quiet"])
        .arg(case.path("pipeline.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let first = rx.recv_timeout(Duration::from_secs(60));
    let waited = started.elapsed();
    drop(stdin); // now end the input
    let status = child.wait().unwrap();
    let first = first.unwrap_or_else(|_| {
        panic!("parallelism {parallelism}: the window did not fire while stdin was open")
    });
    assert_eq!(
        first,
        "{\"key\":\"/\",\"count\":2,\"window_start\":0,\"window_end\":10}"
    );
    assert!(status.success());
    assert!(waited < Duration::from_secs(60));
}

#[test]
fn an_event_without_the_time_field_is_a_clear_error() {
    let case = window_case("{\"page\":\"/\",\"ts\":1}\n{\"page\":\"/\"}\n", 0);
    let out = case.run();
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("input.jsonl:2: event time field `ts` is missing"),
        "{}",
        out.stderr
    );
    // The window of the first event never completed, so it never fired.
    assert_eq!(out.stdout, "");
}

#[test]
fn an_event_without_the_key_field_names_its_line() {
    let case = window_case("{\"page\":\"/\",\"ts\":1}\n{\"ts\":2}\n", 0);
    let out = case.run();
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("input.jsonl:2: cannot key by `page`: the field `page` is missing"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_failing_aggregate_names_the_operator_and_the_event() {
    let pipeline = r#"[[source]]
type = "jsonl"
path = "input.jsonl"
time_field = "ts"

[[operator]]
name = "stats"
component = "${WEIR_PLUGINS}/page_stats.wasm"
key_by = "page"
window = { type = "tumbling", size_ms = 10 }

[[sink]]
type = "stdout"

[late_data]
type = "stderr"
"#;
    // At parallelism 2 the router splits the batch: the failing event's
    // line must follow it to its subtask.
    for parallelism in [1, 2] {
        let pipeline = pipeline.replace(
            "key_by = \"page\"",
            &format!("key_by = \"page\"\nparallelism = {parallelism}"),
        );
        let case = Case::new(
            &pipeline,
            "{\"page\":\"/x\",\"user\":\"a\",\"ts\":1}\n{\"page\":\"/\",\"user\":\"a\",\"ts\":1}\n\
             {\"page\":\"/\",\"ts\":2}\n",
        );
        let out = case.run();
        assert!(!out.ok);
        assert!(
            out.stderr
                .contains("operator `stats` reported an error on ")
                && out.stderr.contains("input.jsonl:3: no `user` field"),
            "parallelism {parallelism}: {}",
            out.stderr
        );
    }
}

#[test]
fn worlds_and_windows_must_match() {
    let stateless_with_window = Case::new(
        r#"[[source]]
type = "jsonl"
path = "input.jsonl"
time_field = "ts"
[[operator]]
name = "q2"
component = "${WEIR_PLUGINS}/nexmark_q2.wasm"
window = { type = "tumbling", size_ms = 10 }
[[sink]]
type = "stdout"
[late_data]
type = "stderr"
"#,
        "",
    );
    let out = stateless_with_window.run();
    assert!(!out.ok);
    assert!(
        out.stderr.contains(
            "operator `q2`: its component is a stateless-operator, which cannot run a window"
        ),
        "{}",
        out.stderr
    );

    let aggregate_without_window = Case::new(
        "[[source]]\ntype = \"jsonl\"\npath = \"input.jsonl\"\n[[operator]]\nname = \"c\"\ncomponent = \"${WEIR_PLUGINS}/window_count.wasm\"\n[[sink]]\ntype = \"stdout\"\n",
        "",
    );
    let out = aggregate_without_window.run();
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("its component is an aggregate-operator; give the operator a window"),
        "{}",
        out.stderr
    );

    let no_late_sink = Case::new(
        "[[source]]\ntype = \"jsonl\"\npath = \"input.jsonl\"\ntime_field = \"ts\"\n[[operator]]\nname = \"c\"\ncomponent = \"${WEIR_PLUGINS}/window_count.wasm\"\nwindow = { type = \"tumbling\", size_ms = 10 }\n[[sink]]\ntype = \"stdout\"\n",
        "",
    );
    let out = no_late_sink.run();
    assert!(!out.ok);
    assert!(
        out.stderr.contains("needs a [late_data] sink"),
        "{}",
        out.stderr
    );
}

#[test]
fn weir_test_runs_windows_and_keyed_functions() {
    let mut input = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        input,
        "{{\"page\":\"/a\",\"user\":\"x\",\"at\":\"2024-01-01T00:00:30Z\"}}"
    )
    .unwrap();
    writeln!(
        input,
        "{{\"page\":\"/a\",\"user\":\"y\",\"at\":\"2024-01-01T00:00:10Z\"}}"
    )
    .unwrap();
    writeln!(
        input,
        "{{\"page\":\"/b\",\"user\":\"x\",\"at\":\"2024-01-01T00:01:10Z\"}}"
    )
    .unwrap();
    let out = ran(weir()
        .arg("test")
        .arg(plugin("page_stats.wasm"))
        .arg("--input")
        .arg(input.path())
        .args([
            "--time-field",
            "at",
            "--time-format",
            "rfc3339",
            "--key-by",
            "page",
            "--window",
            "tumbling:1m",
        ])
        .output()
        .unwrap());
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "{\"page\":\"/a\",\"views\":2,\"unique_users\":2,\"window_start\":1704067200000,\"window_end\":1704067260000}\n\
         {\"page\":\"/b\",\"views\":1,\"unique_users\":1,\"window_start\":1704067260000,\"window_end\":1704067320000}\n"
    );

    let mut payments = tempfile::NamedTempFile::new().unwrap();
    for ts in [0, 10, 20] {
        writeln!(payments, "{{\"card\":\"c\",\"ts\":{ts}}}").unwrap();
    }
    let out = ran(weir()
        .arg("test")
        .arg(plugin("fraud_rule.wasm"))
        .arg("--input")
        .arg(payments.path())
        .args([
            "--time-field",
            "ts",
            "--key-by",
            "card",
            "--config",
            "max_payments=2",
        ])
        .output()
        .unwrap());
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "{\"card\":\"c\",\"payments\":3,\"window_ms\":60000,\"at\":20}\n"
    );
}

#[test]
fn rocksdb_state_gives_the_same_results_and_spills_beyond_the_hot_tier() {
    for case in ["dashboard", "fraud"] {
        let expected = std::fs::read_to_string(golden(case).join("expected.jsonl")).unwrap();
        let dir = at_parallelism(case, 2);
        let mut pipeline = std::fs::read_to_string(dir.path().join("pipeline.toml")).unwrap();
        // A hot tier far smaller than the state: most of it lives in RocksDB.
        pipeline.push_str("\n[state]\nbackend = \"rocksdb\"\npath = \"state\"\nhot_tier_mb = 0\n");
        std::fs::write(dir.path().join("pipeline.toml"), pipeline).unwrap();
        for run in 0..2 {
            let out = ran(weir()
                .args(["run", "--quiet"])
                .arg(dir.path().join("pipeline.toml"))
                .output()
                .unwrap());
            assert!(out.ok, "{case}, run {run}: {}", out.stderr);
            // The second run starts from a cleared directory, not from the
            // first run's state.
            assert_eq!(
                sorted_lines(&out.stdout),
                sorted_lines(&expected),
                "{case}, run {run}"
            );
        }
        assert!(dir.path().join("state/WEIR_STATE").exists());
    }
}

#[test]
fn a_state_directory_weir_did_not_make_is_never_cleared() {
    let dir = at_parallelism("fraud", 1);
    let mut pipeline = std::fs::read_to_string(dir.path().join("pipeline.toml")).unwrap();
    pipeline.push_str("\n[state]\nbackend = \"rocksdb\"\npath = \"precious\"\n");
    std::fs::write(dir.path().join("pipeline.toml"), pipeline).unwrap();
    std::fs::create_dir(dir.path().join("precious")).unwrap();
    std::fs::write(dir.path().join("precious/thesis.txt"), "keep me").unwrap();
    let out = ran(weir()
        .args(["run", "--quiet"])
        .arg(dir.path().join("pipeline.toml"))
        .output()
        .unwrap());
    assert!(!out.ok);
    assert!(
        out.stderr.contains("was not made by Weir"),
        "{}",
        out.stderr
    );
    assert!(dir.path().join("precious/thesis.txt").exists());
}
