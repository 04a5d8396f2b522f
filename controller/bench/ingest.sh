#!/usr/bin/env bash
# Ingest at broker speed: the release controller (external broker mode)
# ingests N distinct reports published through Mosquitto, on SQLite and on
# PostgreSQL; each figure is printed beside the ceiling, the rate at which a
# plain MQTT subscriber counts the same flow in the same run, and beside the
# rate such a subscriber reaches with the broker alone (see
# controller/examples/ingest_bench.rs for what is measured and how).
#
#   controller/bench/ingest.sh            # N = 100000
#   REPORTS=200000 controller/bench/ingest.sh
#
# Starts a Mosquitto of its own (the `mosquitto` binary) on a free port, with
# the limits deploy/mosquitto/mosquitto.conf sets for a controller's broker:
# $INFLIGHT messages in flight to a subscriber (max_inflight_messages,
# default 16000, and 32 MiB at most) and no cap on its queue
# (max_queued_messages 0), so the flood runs ungated (WINDOW=0). MQTT_URL=mqtt://host:port uses that broker instead
# (then set WINDOW=400 on one with Mosquitto's default queue of 1000, which
# drops beyond it). PostgreSQL at $PG_ADMIN_URL (default
# postgres://postgres@127.0.0.1:5432/test; set PG_ADMIN_URL= to skip it).
# BACKENDS=sqlite or BACKENDS=postgres runs one of the two.
set -euo pipefail
cd "$(dirname "$0")/../.."

REPORTS=${REPORTS:-100000}
NODES=${NODES:-1000}
WINDOW=${WINDOW:-0}
INFLIGHT=${INFLIGHT:-16000}
MQTT_URL=${MQTT_URL:-}
PG_ADMIN_URL=${PG_ADMIN_URL-postgres://postgres@127.0.0.1:5432/test}
BACKENDS=${BACKENDS:-sqlite,postgres}

# SKIP_BUILD=1 uses the release binaries as they are; MESHTABLE_BIN and
# INGEST_BENCH_BIN name other builds (to compare two commits in one sitting).
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -q -p meshtable --bin meshtable --example ingest_bench
fi
BIN=${MESHTABLE_BIN:-target/release/meshtable}
BENCH=${INGEST_BENCH_BIN:-target/release/examples/ingest_bench}

tmp=$(mktemp -d)
pgdb="meshtable_ingest_bench_$$"
mosq=
cleanup() {
    if [ -n "$mosq" ]; then kill "$mosq" 2>/dev/null || true; wait "$mosq" 2>/dev/null || true; fi
    rm -rf "$tmp"
    if [ -n "$PG_ADMIN_URL" ]; then
        psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $pgdb WITH (FORCE)" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

if [ -z "$MQTT_URL" ]; then
    mport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat > "$tmp/mosquitto.conf" <<CONF
listener $mport 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages $INFLIGHT
max_inflight_bytes 33554432
max_queued_messages 0
message_size_limit 131072
log_dest none
CONF
    mosquitto -c "$tmp/mosquitto.conf" &
    mosq=$!
    MQTT_URL="mqtt://127.0.0.1:$mport"
    for _ in $(seq 50); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $mport), 0.2)" 2>/dev/null && break
        sleep 0.1
    done
fi

# Networks are created by an admin once ingest stops creating them itself.
register() {
    local url=$1 net=$2
    if "$BIN" network --help >/dev/null 2>&1; then
        "$BIN" network add "$net" --accept-unsigned --database-url "$url" >/dev/null
    fi
}

echo "meshtable ingest benchmark: $REPORTS reports over $NODES nodes through $MQTT_URL (${mosq:+own Mosquitto, max_inflight_messages $INFLIGHT, }gate window $WINDOW), $(nproc) cores"
if [[ "$BACKENDS" == *sqlite* ]]; then
    net="bench-sqlite-$$"
    url="sqlite://$tmp/bench.db"
    register "$url" "$net"
    "$BENCH" --meshtable "$BIN" --database-url "$url" --network "$net" --mqtt-url "$MQTT_URL" \
        --reports "$REPORTS" --nodes "$NODES" --window "$WINDOW" --label sqlite ${mosq:+--broker-pid $mosq}
fi

if [[ "$BACKENDS" != *postgres* ]]; then
    :
elif [ -n "$PG_ADMIN_URL" ]; then
    psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE $pgdb" >/dev/null
    url="${PG_ADMIN_URL%/*}/$pgdb"
    net="bench-pg-$$"
    register "$url" "$net"
    "$BENCH" --meshtable "$BIN" --database-url "$url" --network "$net" --mqtt-url "$MQTT_URL" \
        --reports "$REPORTS" --nodes "$NODES" --window "$WINDOW" --label postgresql ${mosq:+--broker-pid $mosq}
else
    echo "postgresql skipped: PG_ADMIN_URL is empty"
fi
