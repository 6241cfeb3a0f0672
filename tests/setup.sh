#!/usr/bin/env bash
# Installs what building and testing Weir needs, idempotently: libclang
# (RocksDB's bindings are generated with bindgen), the wasm32-wasip2 Rust
# target, rustfmt and clippy.
set -euo pipefail
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust with rustup first" >&2; exit 1; }
if ! ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 && ! ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so'; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing libclang-dev (for RocksDB's bindings)" >&2
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libclang-dev >&2
fi
installed=$(rustup target list --installed)
grep -qx wasm32-wasip2 <<<"$installed" || rustup target add wasm32-wasip2
components=$(rustup component list --installed)
grep -q '^rustfmt' <<<"$components" || rustup component add rustfmt
grep -q '^clippy' <<<"$components" || rustup component add clippy
