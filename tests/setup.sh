#!/usr/bin/env bash
# Installs what building and testing Weir needs, idempotently: the
# wasm32-wasip2 Rust target, rustfmt and clippy. (Later issues add
# libclang-dev for RocksDB and the Python/JS component tools here.)
set -euo pipefail
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust with rustup first" >&2; exit 1; }
installed=$(rustup target list --installed)
grep -qx wasm32-wasip2 <<<"$installed" || rustup target add wasm32-wasip2
components=$(rustup component list --installed)
grep -q '^rustfmt' <<<"$components" || rustup component add rustfmt
grep -q '^clippy' <<<"$components" || rustup component add clippy
