//! Shared helpers: the `weir` binary, built plugins, temporary pipelines.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The cargo target directory this test binary was built in.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/e2e-<hash>
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

/// The directory of built guest components (plugins and fixtures), built on
/// first use by `tests/build-plugins.sh`.
pub fn plugins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/build-plugins.sh");
        let out = Command::new("bash")
            .arg(&script)
            .env("CARGO_TARGET_DIR", target_dir())
            .output()
            .expect("run tests/build-plugins.sh");
        assert!(
            out.status.success(),
            "building guests failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).expect("utf-8 path").trim())
    })
}

/// A guest component by file name, e.g. `filter_bots.wasm`.
pub fn plugin(name: &str) -> PathBuf {
    let path = plugins().join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// `weir` with the plugin directory and a shared component cache.
pub fn weir() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.env("WEIR_PLUGINS", plugins())
        .env("WEIR_CACHE_DIR", target_dir().join("weir-test-cache"))
        .env("WEIR_LOG", "info");
    cmd
}

/// Stdout and stderr as text.
pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

pub fn ran(out: Output) -> Ran {
    Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A temporary directory holding a pipeline file and its input.
pub struct Case {
    pub dir: tempfile::TempDir,
}

impl Case {
    pub fn new(pipeline: &str, input: &str) -> Case {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("pipeline.toml"), pipeline).expect("write pipeline");
        std::fs::write(dir.path().join("input.jsonl"), input).expect("write input");
        Case { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn run(&self) -> Ran {
        ran(weir()
            .arg("run")
            .arg("--quiet")
            .arg(self.path("pipeline.toml"))
            .output()
            .expect("run weir"))
    }
}

/// A pipeline: input.jsonl → one operator → stdout.
pub fn one_operator(component: &str, settings: &str) -> String {
    format!(
        r#"[[source]]
type = "jsonl"
path = "input.jsonl"

[[operator]]
name = "op"
component = "${{WEIR_PLUGINS}}/{component}"
{settings}

[[sink]]
type = "stdout"
"#
    )
}
