#!/usr/bin/env bash
# Sets up, builds Weir and the example operators, and runs two demo
# pipelines: tests/golden/chain (bots dropped, comments split into words,
# each word tagged) and tests/golden/dashboard (page views and unique users
# per page per minute from an out-of-order clickstream). Prints the output.
# It uses the same (debug) build as tests/gate.sh, so the two share one
# compile of wasmtime and RocksDB.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash tests/setup.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
cargo build --locked -p weir-cli
WEIR_PLUGINS=$(bash tests/build-plugins.sh)
export WEIR_PLUGINS
echo "== input (tests/golden/chain/input.jsonl)" >&2
cat tests/golden/chain/input.jsonl >&2
echo "== weir run tests/golden/chain/pipeline.toml" >&2
"$CARGO_TARGET_DIR/debug/weir" run tests/golden/chain/pipeline.toml
echo "== weir run tests/golden/dashboard/pipeline.toml" >&2
"$CARGO_TARGET_DIR/debug/weir" run tests/golden/dashboard/pipeline.toml
