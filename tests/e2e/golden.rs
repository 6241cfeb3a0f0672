//! Golden pipelines: each directory of `tests/golden/` holds `pipeline.toml`
//! (its sink is stdout), any input it reads and `expected.jsonl`. The test
//! runs the pipeline with `weir run` and compares stdout. Set `WEIR_BLESS=1`
//! to rewrite the expected files on purpose.

use std::path::Path;

use crate::support::{ran, weir};

#[test]
fn golden_pipelines_produce_their_expected_output() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden");
    let bless = std::env::var_os("WEIR_BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .expect("tests/golden")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("pipeline.toml").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 6, "golden cases missing: {cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let out = ran(weir()
            .args(["run", "--quiet"])
            .arg(case.join("pipeline.toml"))
            .output()
            .expect("run weir"));
        let expected_path = case.join("expected.jsonl");
        if !out.ok {
            failures.push(format!("{}: weir failed:\n{}", case.display(), out.stderr));
            continue;
        }
        if bless {
            std::fs::write(&expected_path, &out.stdout).expect("bless");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if out.stdout != expected {
            failures.push(format!(
                "{}: output differs from expected.jsonl (WEIR_BLESS=1 rewrites it)\n--- got\n{}\n--- expected\n{}",
                case.display(),
                out.stdout,
                expected
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
