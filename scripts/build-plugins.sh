#!/usr/bin/env bash
# Builds every plugin in plugins/ for wasm32-wasip2 (Rust emits components directly) and
# copies each component to target/plugins/<plugin-name>.wasm at the repository root.
#
#   bash scripts/build-plugins.sh            # release build of all plugins
#   WEFT_PLUGINS_CARGO_FLAGS="--locked" bash scripts/build-plugins.sh
#
# Safe to call from an outer cargo (build.rs, cargo run): flags meant for the host build
# are dropped, and the nested build has its own target dir, so it cannot wait forever on
# the outer build's lock.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
plugins_dir="$root/plugins"
out_dir="$root/target/plugins"
target="wasm32-wasip2"

# Host flags leaking from an outer cargo would break or change the wasm build.
unset CARGO_ENCODED_RUSTFLAGS RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_BUILD_TARGET
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR CARGO_MAKEFLAGS CARGO_PRIMARY_PACKAGE
export CARGO_TARGET_DIR="$plugins_dir/target"
# Weft's recommended link settings (the same as a scaffolded plugin's .cargo/config.toml):
# a 128 KiB shadow stack instead of 1 MiB, and 1 MiB of initial memory so a fresh
# instance's heap has room without growing memory (about 1 µs per invocation).
export CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="-C link-arg=-zstack-size=131072 -C link-arg=--initial-memory=1048576"
# rustup picks the toolchain (rust-toolchain.toml) from the working directory.
cd "$root"

if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$target"; then
    echo "error: Rust target $target is not installed; run: rustup target add $target" >&2
    exit 1
fi

# shellcheck disable=SC2086 # word splitting of the optional extra flags is intended
cargo build --release --target "$target" --manifest-path "$plugins_dir/Cargo.toml" \
    ${WEFT_PLUGINS_CARGO_FLAGS:-}

mkdir -p "$out_dir"
built_dir="$CARGO_TARGET_DIR/$target/release"
count=0
for manifest in "$plugins_dir"/*/Cargo.toml; do
    name="$(basename "$(dirname "$manifest")")"
    [ "$name" = "target" ] && continue
    artifact="$built_dir/${name//-/_}.wasm"
    if [ ! -f "$artifact" ]; then
        echo "error: $name built no $artifact (is it a cdylib?)" >&2
        exit 1
    fi
    cp "$artifact" "$out_dir/$name.wasm"
    printf '  %-28s %8d bytes\n' "$name.wasm" "$(wc -c <"$out_dir/$name.wasm")"
    count=$((count + 1))
done
echo "Copied $count plugin components to $out_dir"
