#!/usr/bin/env bash
# Sets up, builds Weir and the example operators, and runs the demo
# pipeline (tests/golden/chain): bots dropped, comments split into words,
# each word tagged. Prints the output.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash tests/setup.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
cargo build --release --locked -p weir-cli
WEIR_PLUGINS=$(bash tests/build-plugins.sh)
export WEIR_PLUGINS
echo "== input (tests/golden/chain/input.jsonl)" >&2
cat tests/golden/chain/input.jsonl >&2
echo "== weir run tests/golden/chain/pipeline.toml" >&2
"$CARGO_TARGET_DIR/release/weir" run tests/golden/chain/pipeline.toml
