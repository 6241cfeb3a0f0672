//! `weir test` and `weir inspect`.

use crate::support::{plugin, ran, weir};

#[test]
fn weir_test_runs_one_operator_on_sample_events() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, "{\"a\":1}\n{\"a\":2}\n").unwrap();
    let out = ran(weir()
        .arg("test")
        .arg(plugin("enrich.wasm"))
        .arg("--input")
        .arg(&input)
        .args(["--config", "field=env", "--config", "value=test"])
        .output()
        .unwrap());
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "{\"a\":1,\"env\":\"test\"}\n{\"a\":2,\"env\":\"test\"}\n"
    );
}

#[test]
fn weir_inspect_shows_world_version_size_and_digest() {
    let path = plugin("nexmark_q1.wasm");
    let out = ran(weir().arg("inspect").arg(&path).output().unwrap());
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("world     stateless-operator"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("contract  weir:operator@0.1.2"),
        "{}",
        out.stdout
    );
    // An SDK aggregate also exports the optional one-call firing of
    // sliding windows.
    let aggregate = ran(weir()
        .arg("inspect")
        .arg(plugin("window_count.wasm"))
        .output()
        .unwrap());
    assert!(
        aggregate.stdout.contains("world     aggregate-operator")
            && aggregate
                .stdout
                .contains("weir:operator/aggregate-slices@0.1.2"),
        "{}",
        aggregate.stdout
    );
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(
        out.stdout.contains(&format!("size      {size} bytes")),
        "{}",
        out.stdout
    );
    let digest_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("sha256"))
        .unwrap();
    assert_eq!(digest_line.split_whitespace().nth(1).unwrap().len(), 64);

    let out = ran(weir()
        .arg("inspect")
        .arg(plugin("not-an-operator.wasm"))
        .output()
        .unwrap());
    assert!(!out.ok);
    assert!(
        out.stdout.contains("none: not a Weir operator"),
        "{}",
        out.stdout
    );
}

#[test]
fn every_command_has_help() {
    for command in ["run", "test", "inspect", "bench"] {
        let out = ran(weir().args([command, "--help"]).output().unwrap());
        assert!(
            out.ok && out.stdout.contains("Usage: weir"),
            "{command}: {}",
            out.stderr
        );
    }
}
