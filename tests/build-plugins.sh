#!/usr/bin/env bash
# Builds every guest — the example operators in plugins/ and the test
# fixtures in tests/fixtures/ — to WebAssembly components (wasm32-wasip2),
# and prints the directory that holds the .wasm files.
#
# Guests get a target directory of their own (under the host's), so the
# golden tests can call this while `cargo test` holds the host's build lock.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
packages=()
for dir in "$root"/plugins/*/ "$root"/tests/fixtures/*/; do
    packages+=(-p "$(basename "$dir")")
done
cargo build --quiet --manifest-path "$root/Cargo.toml" --target wasm32-wasip2 \
    --profile guest --target-dir "$target/guests" "${packages[@]}" >&2
echo "$target/guests/wasm32-wasip2/guest"
