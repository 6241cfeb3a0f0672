//! Bad input gets a clear error naming what and where; nothing accepted
//! before it is lost and no partial line is written.

use crate::support::{Case, one_operator, plugin};

const FOUR_LINES: &str = "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n{\"n\":4}\n";

#[test]
fn a_malformed_json_line_names_file_and_line_after_earlier_output() {
    let case = Case::new(
        &one_operator("enrich.wasm", "config = { field = \"x\", value = \"y\" }"),
        "{\"n\":1}\n{\"n\":2}\n{\"n\": oops\n{\"n\":4}\n",
    );
    let out = case.run();
    assert!(!out.ok);
    assert!(
        out.stderr.contains("input.jsonl:3: malformed JSON"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "{\"n\":1,\"x\":\"y\"}\n{\"n\":2,\"x\":\"y\"}\n");
}

#[test]
fn a_dead_letter_sink_takes_malformed_lines_and_the_run_goes_on() {
    let pipeline = format!(
        "{}\n[dead_letter]\ntype = \"jsonl\"\npath = \"dead.jsonl\"\n",
        one_operator("enrich.wasm", "config = { field = \"x\", value = \"y\" }")
    );
    let case = Case::new(&pipeline, "{\"n\":1}\nnot json\n{\"n\":3}\n");
    let out = case.run();
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout, "{\"n\":1,\"x\":\"y\"}\n{\"n\":3,\"x\":\"y\"}\n");
    let dead = std::fs::read_to_string(case.path("dead.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(dead.trim()).unwrap();
    assert_eq!(record["line"], 2);
    assert_eq!(record["raw"], "not json");
    assert!(record["source"].as_str().unwrap().ends_with("input.jsonl"));
    assert!(
        record["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON")
    );
}

#[test]
fn a_missing_operator_file_is_named() {
    let case = Case::new(&one_operator("no_such_operator.wasm", ""), FOUR_LINES);
    let out = case.run();
    assert!(!out.ok);
    assert!(out.stderr.contains("operator `op`"), "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot read operator") && out.stderr.contains("no_such_operator.wasm"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn files_that_are_not_components_are_refused() {
    let pipeline = "[[source]]\ntype = \"jsonl\"\npath = \"input.jsonl\"\n\n[[operator]]\nname = \"op\"\ncomponent = \"op.wasm\"\n\n[[sink]]\ntype = \"stdout\"\n";
    let case = Case::new(pipeline, FOUR_LINES);
    // A valid, empty core module: WebAssembly, but not a component.
    std::fs::write(case.path("op.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let out = case.run();
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("is not a WebAssembly component: it is a core WebAssembly module"),
        "{}",
        out.stderr
    );
    std::fs::write(case.path("op.wasm"), b"#!/bin/sh\necho hi\n").unwrap();
    let out = case.run();
    assert!(out.stderr.contains("magic bytes"), "{}", out.stderr);
}

#[test]
fn a_component_of_the_wrong_world_names_expected_and_found() {
    let case = Case::new(&one_operator("not-an-operator.wasm", ""), FOUR_LINES);
    let out = case.run();
    assert!(!out.ok);
    assert!(
        out.stderr.contains("does not implement a Weir operator world: expected an export `weir:operator/stateless@0.1.2` or `weir:operator/aggregate@0.1.2`")
            && out.stderr.contains("found exports [wasi:cli/run@"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_component_of_another_contract_version_names_both_versions() {
    let case = Case::new(&one_operator("old_contract.wasm", ""), FOUR_LINES);
    let out = case.run();
    assert!(!out.ok);
    assert!(
        out.stderr.contains(
            "built against contract weir:operator@0.0.9; this host accepts weir:operator@0.1.x"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn an_aggregate_slices_export_of_the_wrong_shape_fails_its_operator_at_start() {
    let pipeline = format!(
        "{}\n[late_data]\ntype = \"stderr\"\n",
        one_operator(
            "bad_slices.wasm",
            "key_by = \"k\"\nwindow = { type = \"sliding\", size_ms = 10, slide_ms = 5 }",
        )
        .replace(
            "path = \"input.jsonl\"",
            "path = \"input.jsonl\"\ntime_field = \"ts\""
        )
    );
    let case = Case::new(&pipeline, "{\"k\":\"a\",\"ts\":1}\n");
    let out = case.run();
    assert!(!out.ok);
    assert!(
        out.stderr.contains("operator `op` failed to start")
            && out
                .stderr
                .contains("its `aggregate-slices` export does not match the contract")
            && out.stderr.contains("expected `result` found `list`"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_unknown_key_in_the_pipeline_file_names_its_line() {
    let pipeline = one_operator("enrich.wasm", "timeout = 5");
    let case = Case::new(&pipeline, FOUR_LINES);
    let out = case.run();
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("pipeline.toml:8: unknown field `timeout`"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_unset_variable_in_a_component_path_is_named() {
    let pipeline = one_operator("enrich.wasm", "").replace("WEIR_PLUGINS", "NO_SUCH_VAR");
    let out = Case::new(&pipeline, FOUR_LINES).run();
    assert!(!out.ok);
    assert!(out.stderr.contains("`NO_SUCH_VAR`"), "{}", out.stderr);
}

#[test]
fn bad_operator_config_fails_at_start_with_the_operators_message() {
    let out = Case::new(&one_operator("enrich.wasm", ""), FOUR_LINES).run();
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("operator `op` failed to start: missing config setting `field`"),
        "{}",
        out.stderr
    );
    let _ = plugin("enrich.wasm");
}

#[test]
fn a_component_built_against_an_older_compatible_contract_still_runs() {
    let case = Case::new(&one_operator("contract_0_1_0.wasm", ""), FOUR_LINES);
    let out = case.run();
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 4, "{}", out.stdout);
}
