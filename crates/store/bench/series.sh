#!/usr/bin/env bash
# History series: NODES nodes x DAYS days of 60 s samples, loaded and then
# rolled up by the real incremental reconcile, on SQLite and PostgreSQL.
# Prints per database the dataset (rows per table, size on disk), the load
# and rollup catch-up times, and the 30-day series latency of one node as the
# API answers it (hourly rollups) beside the same range read from the raw
# samples, median and p95 over QUERIES random nodes. Raw samples are kept for
# all DAYS (the default raw retention of 14 days would keep fewer).
#
#   crates/store/bench/series.sh                       # 1000 nodes x 30 days, both
#   NODES=300 crates/store/bench/series.sh
#   BACKENDS=sqlite crates/store/bench/series.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."

NODES=${NODES:-1000}
DAYS=${DAYS:-30}
QUERIES=${QUERIES:-50}
BACKENDS=${BACKENDS:-sqlite,postgres}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}

# SKIP_BUILD=1 uses the release example as it is.
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -q -p meshtable-store --example series_bench
fi
BIN=target/release/examples/series_bench

# The SQLite file goes here; the example creates (and drops) its own
# PostgreSQL database on the server PG_ADMIN_URL names.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [[ "$BACKENDS" == *postgres* ]] && ! psql -Atq "$PG_ADMIN_URL" -c 'SELECT 1' >/dev/null 2>&1; then
    echo "PostgreSQL at $PG_ADMIN_URL does not answer" >&2
    exit 1
fi

MESHTABLE_BENCH_NODES=$NODES MESHTABLE_BENCH_DAYS=$DAYS MESHTABLE_BENCH_QUERIES=$QUERIES \
MESHTABLE_BENCH_BACKENDS=$BACKENDS MESHTABLE_BENCH_DIR=$tmp \
MESHTABLE_TEST_DATABASE_URL=$PG_ADMIN_URL \
    "$BIN"
