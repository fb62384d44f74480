#!/usr/bin/env bash
# Instantiates every host/templates/plugin template (the files behind
# `weft plugin new <kind> <name>`) into a throw-away workspace and builds the results for
# wasm32-wasip2, so the templates cannot rot. Prints each component's size and weft imports
# when wasm-tools is on PATH.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
templates="$root/host/templates/plugin"
target="wasm32-wasip2"
kinds=(journey-rule personalization channel-adapter chatbot-flow)

unset CARGO_ENCODED_RUSTFLAGS RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_BUILD_TARGET CARGO_BUILD_TARGET_DIR
# Share the plugin workspace's target dir: the SDK and its dependencies are already built.
export CARGO_TARGET_DIR="$root/plugins/target"
cd "$root"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

render() { # template, name, output
    local crate="${2//-/_}"
    # The README's commands ({{run}}, {{run_all}}, {{upload}}) are filled in by
    # `weft plugin new` (host/src/scaffold.rs, unit-tested there): placeholders here.
    sed -e "s|{{name}}|$2|g" -e "s|{{crate_name}}|$crate|g" -e "s|{{sdk_path}}|$root/guest-sdk|g" \
        -e "s|{{run}}|weft plugin run ...|g" -e "s|{{run_all}}|weft plugin run ...|g" \
        -e "s|{{upload}}|weft plugin upload ...|g" "$1" >"$3"
}

members=()
for kind in "${kinds[@]}"; do
    name="scaffold-$kind"
    mkdir -p "$work/$name/src"
    render "$templates/Cargo.toml.tmpl" "$name" "$work/$name/Cargo.toml"
    render "$templates/README.md.tmpl" "$name" "$work/$name/README.md"
    render "$templates/lib.rs.$kind.tmpl" "$name" "$work/$name/src/lib.rs"
    if grep -q '{{' "$work/$name/Cargo.toml" "$work/$name/README.md" "$work/$name/src/lib.rs"; then
        echo "error: unreplaced placeholder in the $kind templates" >&2
        exit 1
    fi
    members+=("\"$name\"")
done
(IFS=,; printf '[workspace]\nresolver = "2"\nmembers = [%s]\n' "${members[*]}") >"$work/Cargo.toml"
# Same dependency versions as the plugins.
cp "$root/plugins/Cargo.lock" "$work/Cargo.lock"

cargo build --release --target "$target" --manifest-path "$work/Cargo.toml"

for kind in "${kinds[@]}"; do
    wasm="$CARGO_TARGET_DIR/$target/release/scaffold_${kind//-/_}.wasm"
    printf '%-16s %8d bytes' "$kind" "$(wc -c <"$wasm")"
    if command -v wasm-tools >/dev/null 2>&1; then
        printf '  %s' "$(wasm-tools component wit "$wasm" | grep -oE '(import|export) weft:plugin/[a-z-]+' | sed 's/weft:plugin\///' | tr '\n' ' ')"
    fi
    echo
    rm -f "$wasm"
done
echo "All ${#kinds[@]} plugin templates build."
