//! Hostile guests fail their own pipeline with a clear error naming the
//! operator and the event; output for earlier events is kept.

use crate::support::{Case, one_operator};

const INPUT: &str = "{\"n\":1}\n{\"n\":2}\n{\"n\":\"boom\"}\n{\"n\":4}\n";

fn hostile(settings: &str) -> Case {
    Case::new(&one_operator("hostile.wasm", settings), INPUT)
}

#[test]
fn a_trap_names_operator_and_line_and_keeps_earlier_events() {
    let out = hostile("config = { mode = \"trap\", on = \"boom\" }").run();
    assert!(!out.ok);
    assert!(
        out.stderr.contains("operator `op` trapped on ")
            && out.stderr.contains("input.jsonl:3: wasm trap"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hostile operator trapped on purpose"),
        "the guest's panic message explains the trap: {}",
        out.stderr
    );
    assert_eq!(out.stdout, "{\"n\":1}\n{\"n\":2}\n");
}

#[test]
fn a_reported_error_names_the_event() {
    let out = hostile("config = { mode = \"error\", on = \"boom\" }").run();
    assert!(!out.ok);
    assert!(
        out.stderr.contains("reported an error on ")
            && out
                .stderr
                .contains("input.jsonl:3: refused this event on purpose"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "{\"n\":1}\n{\"n\":2}\n");
}

#[test]
fn an_infinite_loop_hits_the_deadline() {
    let out = hostile("timeout_ms = 100\nconfig = { mode = \"loop\", on = \"boom\" }").run();
    assert!(!out.ok);
    assert!(
        out.stderr.contains("ran past its CPU deadline on ")
            && out
                .stderr
                .contains("input.jsonl:3: no result within 100 ms"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "{\"n\":1}\n{\"n\":2}\n");
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    let out = hostile("memory_mb = 16\nconfig = { mode = \"alloc\", on = \"boom\" }").run();
    assert!(!out.ok);
    assert!(
        out.stderr.contains("exceeded its memory cap on ")
            && out.stderr.contains("the cap is 16 MiB"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "{\"n\":1}\n{\"n\":2}\n");
}

#[test]
fn deep_recursion_is_a_trap_not_a_crash() {
    let out = hostile("config = { mode = \"recurse\", on = \"boom\" }").run();
    assert!(!out.ok);
    assert!(
        out.stderr.contains("trapped on ")
            && out.stderr.contains("input.jsonl:3")
            // Rust keeps its stack in linear memory: overflowing it runs
            // off the bottom of memory before the wasm call stack is full.
            && (out.stderr.contains("stack overflow") || out.stderr.contains("out of bounds memory access")),
        "{}",
        out.stderr
    );
}

#[test]
fn huge_output_hits_the_output_cap() {
    let out = hostile("max_output_mb = 4\nconfig = { mode = \"flood\", on = \"boom\" }").run();
    assert!(!out.ok);
    assert!(
        out.stderr.contains("exceeded its output cap"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "{\"n\":1}\n{\"n\":2}\n");
}

#[test]
fn guests_see_no_files_no_environment_and_no_clock() {
    let case = Case::new(
        &one_operator("hostile.wasm", "config = { mode = \"ambient\" }"),
        "{}\n",
    );
    let out = case.run();
    assert!(out.ok, "{}", out.stderr);
    let seen: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert!(seen["file"].as_str().unwrap().starts_with("Err("), "{seen}");
    assert_eq!(seen["env_vars"], 0);
    assert_eq!(seen["clock_secs"], 0);
}

#[test]
fn guest_stdout_becomes_capped_log_lines() {
    let case = Case::new(
        &one_operator(
            "hostile.wasm",
            "max_log_kb = 1\nconfig = { mode = \"print\", print_lines = 10000 }",
        ),
        "{}\n",
    );
    let out = case.run();
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout, "{}\n", "guest prints never reach the sink");
    let logged = out
        .stderr
        .lines()
        .filter(|l| l.contains("guest line"))
        .count();
    assert!(
        logged > 10 && logged < 200,
        "{logged} lines logged:\n{}",
        out.stderr
    );
    assert!(out.stderr.contains("operator=op"), "{}", out.stderr);
    assert!(
        out.stderr.contains("guest output exceeds its cap"),
        "{}",
        out.stderr
    );
}
