#!/usr/bin/env bash
# Cross-builds meshtable-agent for OpenWrt routers with the agent-release
# profile (opt-level z, lto, codegen-units 1, panic abort, strip; see the root
# Cargo.toml), as static musl binaries, and prints their sizes.
#
#   aarch64-unknown-linux-musl        ARMv8 routers (MediaTek Filogic, IPQ807x, RPi 3/4)
#   armv7-unknown-linux-musleabihf    ARMv7 with FPU (IPQ40xx, MT7629, Marvell Armada)
#
# Both are tier 2 targets with a prebuilt std (`rustup target add`) that
# carries musl's libc.a and crt objects ("self-contained"), so the only
# linker needed is one that can link for the target:
#   LINKER=rust-lld (default)  the LLD that ships with rustup's toolchain;
#                              nothing else to install
#   LINKER=zig                 cargo-zigbuild (`cargo install cargo-zigbuild`,
#                              `pip install ziglang`): zig cc as the C compiler
#                              and linker, for dependencies that compile C
#   LINKER=<cc>                a musl cross gcc, e.g. aarch64-linux-musl-gcc
#                              from musl.cc or the OpenWrt SDK's
#                              aarch64-openwrt-linux-musl-gcc
#
# mipsel (MT7621, MT76x8, the commonest cheap routers):
# mipsel-unknown-linux-musl is a tier 3 target: rustup has no std for it.
# Two documented paths:
#   1. The OpenWrt SDK (recommended): deploy/openwrt/Makefile with the packages
#      feed's rust (which builds rustc and std for the SDK's target):
#        ln -s "$PWD/deploy/openwrt" <sdk>/package/meshtable-agent
#        cd <sdk> && ./scripts/feeds update packages && ./scripts/feeds install rust
#        make package/meshtable-agent/compile V=s
#   2. Nightly with -Zbuild-std and the SDK's musl gcc as linker:
#        rustup toolchain install nightly --component rust-src
#        CARGO_TARGET_MIPSEL_UNKNOWN_LINUX_MUSL_LINKER=<sdk>/staging_dir/toolchain-*/bin/mipsel-openwrt-linux-musl-gcc \
#        cargo +nightly build -Zbuild-std=std,panic_abort --target mipsel-unknown-linux-musl \
#          --profile agent-release -p meshtable-agent
#      (`MIPSEL=1 deploy/openwrt/cross-build.sh` runs this when LINKER is set
#      to that gcc.) 32-bit MIPS has no 64-bit atomics: deploy/openwrt/check-atomics.sh
#      checks the agent and its dependencies for them, and type-checks for mipsel.
#
# When rustup cannot fetch a target's std (seen here: armv7-unknown-linux-musleabihf
# answered 404 while aarch64 downloaded), LINKER=zig with nightly's rust-src
# builds std with -Zbuild-std instead; zig supplies musl's libc and crt.
# With qemu-user installed (Debian: qemu-user) each binary is run once
# (`--once`) under qemu-<arch> as a smoke test.
#
# Usage: deploy/openwrt/cross-build.sh [TARGET...]
#   env: LINKER (see above), MIPSEL=1 to add mipsel-unknown-linux-musl (nightly)
# Output: target/<triple>/agent-release/meshtable-agent
# Exit status: 0 when every requested target was built.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
LINKER=${LINKER:-rust-lld}
PROFILE=agent-release

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf)
    [ "${MIPSEL:-0}" = 1 ] && targets+=(mipsel-unknown-linux-musl)
fi

# CARGO_TARGET_<TRIPLE>_<WHAT>
target_var() {
    local t=${1^^}
    echo "CARGO_TARGET_${t//-/_}_$2"
}

# Whether nightly with rust-src (for -Zbuild-std) is installed.
nightly_src() {
    rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'
}

# The qemu-user binary for a target: qemu-aarch64, qemu-arm, qemu-mipsel.
qemu_arch() {
    case "$1" in
    aarch64-*) echo aarch64 ;;
    arm*) echo arm ;;
    mipsel-*) echo mipsel ;;
    *) echo "${1%%-*}" ;;
    esac
}

results=()
status=0
for target in "${targets[@]}"; do
    echo "== $target"
    toolchain=()
    build_std=()
    extra_env=()
    if [ "$target" = mipsel-unknown-linux-musl ]; then
        # Tier 3: no prebuilt std; build it with nightly.
        if ! nightly_src; then
            echo "cannot build $target: needs nightly with rust-src" \
                "(rustup toolchain install nightly --component rust-src), or use the OpenWrt SDK"
            results+=("$target: not built (no nightly rust-src)")
            status=1
            continue
        fi
        if [ "$LINKER" = rust-lld ] || [ "$LINKER" = zig ]; then
            echo "cannot link $target with $LINKER: -Zbuild-std brings no musl libc;" \
                "set LINKER to the OpenWrt SDK's mipsel-openwrt-linux-musl-gcc"
            results+=("$target: not built (needs the SDK's musl gcc as LINKER)")
            status=1
            continue
        fi
        toolchain=(+nightly)
        build_std=("-Zbuild-std=std,panic_abort")
    elif ! rustup target list --installed | grep -qx "$target"; then
        echo "adding the $target standard library (rustup target add $target)"
        if rustup target add "$target"; then
            :
        elif [ "$LINKER" = zig ] && nightly_src; then
            # No prebuilt std: build it with nightly; zig brings musl's libc.
            echo "cannot fetch the $target standard library; building it with nightly -Zbuild-std"
            toolchain=(+nightly)
            build_std=("-Zbuild-std=std,panic_abort")
            # Without rustup's std there are no self-contained crt objects:
            # let zig cc supply crt1.o, libc and libunwind.
            extra_env=("$(target_var "$target" RUSTFLAGS)=-C link-self-contained=no")
        else
            echo "cannot fetch the $target standard library: rustup's download failed (offline or" \
                "the distribution server lacks it); build on a machine that can, in the OpenWrt SDK," \
                "or with LINKER=zig and nightly's rust-src (-Zbuild-std)"
            results+=("$target: not built (rustup target add failed)")
            status=1
            continue
        fi
    fi

    if [ "$LINKER" = zig ]; then
        command -v cargo-zigbuild >/dev/null || {
            echo "LINKER=zig needs cargo-zigbuild and zig (cargo install cargo-zigbuild; pip install ziglang)"
            results+=("$target: not built (no cargo-zigbuild)")
            status=1
            continue
        }
        cmd=(cargo "${toolchain[@]}" zigbuild)
        envs=()
    else
        cmd=(cargo "${toolchain[@]}" build)
        envs=("$(target_var "$target" LINKER)=$LINKER")
    fi
    if env "${envs[@]}" "${extra_env[@]}" "${cmd[@]}" "${build_std[@]}" --locked --profile "$PROFILE" \
        --target "$target" -p meshtable-agent; then
        bin=target/$target/$PROFILE/meshtable-agent
        size=$(stat -c %s "$bin")
        kind=$(file -b "$bin" 2>/dev/null | cut -d, -f1-2 || echo "?")
        line="$target: $bin $size bytes ($(awk "BEGIN { printf \"%.2f\", $size / 1048576 }") MiB) $kind"
        # Smoke run under qemu-user when it is installed (Debian: qemu-user):
        # the binary starts and reads /proc and rtnetlink through qemu.
        qemu=qemu-$(qemu_arch "$target")
        if command -v "$qemu" >/dev/null; then
            if "$qemu" "$bin" --once --node-id cross-smoke >"$bin.once.json" 2>/dev/null &&
                grep -q '"node":"cross-smoke"' "$bin.once.json"; then
                line+="; --once under $qemu: ok"
            else
                line+="; --once under $qemu: FAILED"
                status=1
            fi
        fi
        results+=("$line")
    else
        results+=("$target: build failed")
        status=1
    fi
done

echo
echo "== results (linker: $LINKER, profile: $PROFILE)"
printf '%s\n' "${results[@]}"
exit "$status"
