#!/usr/bin/env bash
# 32-bit MIPS (and 32-bit PowerPC) have no 64-bit atomic instructions: Rust's
# core has no AtomicU64/AtomicI64 there (target_has_atomic = "64" is unset),
# so any use that is not cfg-gated on target_has_atomic fails to build for
# mipsel-unknown-linux-musl, the commonest router target.
#
# This checks the agent and everything it links, three ways:
#   1. the workspace crates the agent is built from (agent/, crates/proto/,
#      crates/pem/ with `tls`) use no 64-bit atomics at all (the house rule:
#      no AtomicU64 in agent code);
#   2. every dependency the agent links on mipsel with its `tls` feature (a
#      superset of the default build's: cargo tree --features tls -e normal,
#      no-proc-macro --target mipsel-unknown-linux-musl) is scanned for
#      AtomicU64/AtomicI64 outside comments; each file with a use must gate it
#      (target_has_atomic, tokio's cfg_has_atomic_u64, serde's
#      no_target_has_atomic); the findings are printed as a table;
#   3. when nightly with rust-src is installed (tier 3 target: no prebuilt
#      std), `cargo +nightly check -Zbuild-std --target mipsel-unknown-linux-musl`
#      type-checks the agent and its dependencies against mipsel's core, which
#      is what decides. Without it the step prints "skipped" and why.
#
# Usage: deploy/openwrt/check-atomics.sh [--no-compile]
# Exit status 1 when any check fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
TARGET=mipsel-unknown-linux-musl
compile=1
[ "${1:-}" = "--no-compile" ] && compile=0
failed=0

echo "== 1. workspace crates of the agent: no 64-bit atomics"
if hits=$(grep -rnE '\bAtomic[UI]64\b' agent/src crates/proto/src crates/pem/src); then
    echo "$hits"
    echo "FAIL: the agent's own code uses 64-bit atomics (use AtomicU32, a Mutex, or plain fields)"
    failed=1
else
    echo "ok: none in agent/src, crates/proto/src, crates/pem/src"
fi

echo
echo "== 2. dependencies linked on $TARGET (with the tls feature)"
registry=${CARGO_HOME:-$HOME/.cargo}/registry/src
# Make sure every source is unpacked (cargo tree resolves, fetch unpacks).
cargo fetch --locked --target "$TARGET" >/dev/null 2>&1 || cargo fetch --target "$TARGET" >/dev/null
mapfile -t crates < <(
    cargo tree --locked -p meshtable-agent --features tls -e normal,no-proc-macro --target "$TARGET" \
        --prefix none --format '{p}' |
        sed 's/ (\*)$//' | grep -v ' (/' | sort -u | awk '{ print $1 "-" substr($2, 2) }'
)
echo "${#crates[@]} crates from crates.io"
printf '%-28s %-9s %s\n' crate verdict "files using AtomicU64/AtomicI64 (gate found)"
ungated=0
for crate in "${crates[@]}"; do
    dir=$(find "$registry" -maxdepth 2 -type d -name "$crate" | head -n 1)
    if [ -z "$dir" ]; then
        printf '%-28s %-9s %s\n' "$crate" missing "source not in $registry"
        failed=1
        continue
    fi
    files=()
    while IFS= read -r f; do files+=("$f"); done < <(
        # Uses in code: drop // and //! comment lines, leave tests and examples out.
        grep -rlE --include='*.rs' '^[^/]*\bAtomic[UI]64\b' "$dir/src" 2>/dev/null || true
    )
    [ "${#files[@]}" -gt 0 ] || continue
    verdict=gated
    notes=()
    for f in "${files[@]}"; do
        gate=$(grep -oE 'target_has_atomic *= *"64"|target_has_atomic *= *\$[a-z]+|cfg_has_atomic_u64|no_target_has_atomic|atomic_u64_as_mutex' "$f" | head -n 1 || true)
        if [ -z "$gate" ]; then
            # The gate may sit in a macro of the same crate.
            if grep -rqE 'target_has_atomic *= *"64"' "$dir/src"; then
                gate='crate-level target_has_atomic = "64"'
            else
                verdict=UNGATED
                ungated=1
                gate=none
            fi
        fi
        notes+=("${f#"$dir"/src/} ($gate)")
    done
    printf '%-28s %-9s %s\n' "$crate" "$verdict" "${notes[*]}"
done
if [ "$ungated" = 1 ]; then
    echo "FAIL: a dependency uses 64-bit atomics without a target_has_atomic gate"
    failed=1
else
    echo "ok: every use is gated"
fi

echo
echo "== 3. type-check for $TARGET (nightly, -Zbuild-std)"
if [ "$compile" = 0 ]; then
    echo "skipped: --no-compile"
elif ! cargo +nightly --version >/dev/null 2>&1; then
    echo "skipped: no nightly toolchain (rustup toolchain install nightly)"
elif ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    echo "skipped: nightly lacks rust-src (rustup component add rust-src --toolchain nightly)"
else
    # Its own target directory: another toolchain, another std.
    if cargo +nightly check --locked -Zbuild-std=std,panic_abort --target "$TARGET" \
        -p meshtable-agent --target-dir target/cross-check; then
        echo "ok: meshtable-agent and its dependencies build against $TARGET's core (no 64-bit atomics)"
    else
        echo "FAIL: meshtable-agent does not build for $TARGET"
        failed=1
    fi
fi

exit "$failed"
