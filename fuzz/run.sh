#!/usr/bin/env bash
# Short fuzzing run of every cargo-fuzz target, on stable Rust.
#
#   fuzz/run.sh [target...]          (default: all targets)
#   FUZZ_SECONDS=60 (per target), FUZZ_JOBS=1, FUZZ_MAX_LEN=4096
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). Stable Rust has no
# sanitizers and refuses -Z flags, so it builds with RUSTC_BOOTSTRAP=1 and
# `--sanitizer none`: libFuzzer's coverage guidance works, AddressSanitizer
# does not (safe Rust: panics, overflows in debug assertions, OOM and
# timeouts are what it catches).
#
# Each run starts from the committed regression corpus (plus the golden
# vectors for the decoders), minimises what it found with `cargo fuzz cmin`,
# and writes it back, capped, to the regression directory that `cargo test`
# replays; then it re-records the expected Ok/Err classification of every
# input (MESHTABLE_BLESS=1). Crashes are copied into the regression
# directory as well, and the script exits non-zero: fix them, then commit.
# Not part of .ci/run (too slow); the regression tests are.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
seconds="${FUZZ_SECONDS:-60}"
jobs="${FUZZ_JOBS:-1}"
max_len="${FUZZ_MAX_LEN:-4096}"
max_files="${FUZZ_MAX_FILES:-200}"
max_bytes="${FUZZ_MAX_BYTES:-204800}"
export RUSTC_BOOTSTRAP=1
fuzz=(cargo fuzz)

# target -> regression directory (relative to the repository root)
declare -A regress=(
  [report_decode]=crates/proto/tests/fuzz/report_decode
  [sign_verify]=crates/proto/tests/fuzz/sign_verify
  [http_query]=controller/tests/fuzz/http_query
)
# target -> extra seed directories
declare -A seeds=(
  [report_decode]="crates/proto/tests/golden/v1 crates/proto/tests/golden/v2"
  [sign_verify]="crates/proto/tests/golden-sign/v1"
  [http_query]=""
)

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(report_decode sign_verify http_query)

cd "$here"
mkdir -p logs
# Build once; then run the binaries directly, so that edits elsewhere in the
# tree during the run do not rebuild between targets.
"${fuzz[@]}" build --sanitizer none >logs/build.log 2>&1 || { tail -n 40 logs/build.log >&2; exit 2; }
bin="$(find target -path '*/release/report_decode' -type f | head -n 1)"
bin="$(dirname "${bin:?no fuzz binaries under fuzz/target}")"
crashed=0
summary=()
for t in "${targets[@]}"; do
  dir="$root/${regress[$t]:?unknown target $t}"
  corpus="$here/corpus/$t"
  mkdir -p "$corpus" "$dir"
  find "$dir" -maxdepth 1 -type f ! -name expected.txt -exec cp -n {} "$corpus/" \;
  for s in ${seeds[$t]}; do cp -n "$root/$s"/* "$corpus/" 2>/dev/null || true; done

  log="logs/$t.log"
  echo "== $t: ${seconds}s, corpus $(ls "$corpus" | wc -l) files" >&2
  status=0
  par=()
  [ "$jobs" -le 1 ] || par=(-jobs="$jobs" -workers="$jobs")
  mkdir -p "artifacts/$t"
  "$bin/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$seconds" \
    -max_len="$max_len" "${par[@]}" -print_final_stats=1 "$corpus" >"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    crashed=1
    echo "!! $t failed (exit $status), see fuzz/$log and fuzz/artifacts/$t/" >&2
    tail -n 30 "$log" >&2
    for a in "artifacts/$t"/*; do [ -f "$a" ] && cp "$a" "$dir/$(basename "$a")"; done
  fi
  stats="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
  execs="$(grep -E 'stat::number_of_executed_units' "$log" | awk '{s+=$2} END {print s+0}')"

  # Minimise, then keep the smallest inputs within the caps.
  # (what `cargo fuzz cmin` does: a libFuzzer merge into an empty corpus)
  rm -rf "corpus/$t.min" && mkdir -p "corpus/$t.min"
  "$bin/$t" -merge=1 -max_len="$max_len" "corpus/$t.min" "$corpus" >"logs/$t.cmin.log" 2>&1
  rm -rf "$corpus" && mv "corpus/$t.min" "$corpus"
  find "$dir" -maxdepth 1 -type f ! -name expected.txt ! -name 'crash-*' ! -name 'oom-*' \
    ! -name 'timeout-*' -delete
  # Every k-th input by size, so that large valid reports are kept as well
  # as small broken ones, within the caps.
  all="$(find "$corpus" -maxdepth 1 -type f | wc -l)"
  step=$(( (all + max_files - 1) / max_files )); [ "$step" -ge 1 ] || step=1
  total=0 n=0 i=0
  while read -r size file; do
    i=$((i + 1))
    [ $(( (i - 1) % step )) -eq 0 ] || continue
    [ "$n" -lt "$max_files" ] || break
    [ $((total + size)) -le "$max_bytes" ] || continue
    cp "$file" "$dir/$(basename "$file")"
    total=$((total + size)) n=$((n + 1))
  done < <(find "$corpus" -maxdepth 1 -type f -printf '%s %p\n' | sort -n)
  summary+=("$t: $execs execs, last: $stats; kept $n files, $total bytes in ${regress[$t]}")
done

echo "== recording expected classifications" >&2
cd "$root"
MESHTABLE_BLESS=1 cargo test -q -p meshtable-proto --test fuzz_corpus >&2
MESHTABLE_BLESS=1 cargo test -q -p meshtable --test fuzz_corpus >&2

printf '%s\n' "${summary[@]}"
exit "$crashed"
