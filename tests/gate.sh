#!/usr/bin/env bash
# The one command that gates a change: formatting, clippy with warnings as
# errors (host and guests), every example plugin built, all tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash tests/setup.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

echo "== fmt" >&2
cargo fmt --all --check
echo "== clippy (host)" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== plugins and fixtures (wasm32-wasip2 components)" >&2
plugins=$(bash tests/build-plugins.sh)
ls "$plugins"/*.wasm >&2
guests=()
for dir in plugins/*/ tests/fixtures/*/; do guests+=(-p "$(basename "$dir")"); done
echo "== clippy (guests)" >&2
cargo clippy --locked --target wasm32-wasip2 --target-dir "$CARGO_TARGET_DIR/guests" "${guests[@]}" -- -D warnings
echo "== tests" >&2
WEIR_PLUGINS=$plugins cargo test --workspace --locked
