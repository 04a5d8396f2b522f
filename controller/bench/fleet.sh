#!/usr/bin/env bash
# Fleet: 10,000 simulated routers, each with its own MQTT connection,
# reporting every 60 s through a Mosquitto started here (own config, free
# port), ingested by the release controller. Prints the controller's CPU (%
# of one core, from /proc/<pid>/stat over the steady-state window) and RSS,
# and what the simulator, Mosquitto and (on PostgreSQL) the database server
# used beside it.
#
#   controller/bench/fleet.sh                      # SQLite, 10000 nodes, 180 s window
#   NODES=2000 WINDOW=60 controller/bench/fleet.sh
#   DATABASE=postgres controller/bench/fleet.sh    # a fresh PostgreSQL database
set -euo pipefail
cd "$(dirname "$0")/../.."

NODES=${NODES:-10000}
INTERVAL=${INTERVAL:-60s}
WARMUP=${WARMUP:-90}
WINDOW=${WINDOW:-180}
DATABASE=${DATABASE:-sqlite}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((NODES + 1000)) ]; then
    echo "ulimit -n is $(ulimit -n): too low for $NODES connections" >&2
    exit 1
fi

# SKIP_BUILD=1 uses the release binaries as they are; MESHTABLE_BIN names
# another controller build (to compare two commits in one sitting).
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -q -p meshtable --bin meshtable -p meshtable-sim --bin meshtable-sim
fi
BIN=${MESHTABLE_BIN:-target/release/meshtable}
SIM=target/release/meshtable-sim

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tmp=$(mktemp -d)
pids=()
pgdb="meshtable_fleet_bench_$$"
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$DATABASE" = postgres ]; then
        psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $pgdb WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

mport=$(free_port)
cat > "$tmp/mosquitto.conf" <<CONF
listener $mport 127.0.0.1
allow_anonymous true
max_connections -1
persistence false
max_queued_messages 100000
log_dest none
CONF
mosquitto -c "$tmp/mosquitto.conf" & pids+=($!)
mosq=$!

if [ "$DATABASE" = postgres ]; then
    psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE $pgdb" >/dev/null
    db="${PG_ADMIN_URL%/*}/$pgdb"
    count() { psql -Atq "$db" -c "SELECT count(*) FROM sample"; }
else
    db="sqlite://$tmp/fleet.db"
    count() { sqlite3 "$tmp/fleet.db" "SELECT count(*) FROM sample"; }
fi
if "$BIN" network --help >/dev/null 2>&1; then
    "$BIN" network add fleet --accept-unsigned --database-url "$db" >/dev/null
fi

sleep 0.5
"$BIN" serve --mqtt-url "mqtt://127.0.0.1:$mport" --database-url "$db" \
    --listen "127.0.0.1:$(free_port)" --data-dir "$tmp/data" --log warn \
    >"$tmp/controller.out" 2>"$tmp/controller.log" & pids+=($!)
ctl=$!
for _ in $(seq 600); do grep -q "meshtable ready" "$tmp/controller.out" 2>/dev/null && break; sleep 0.1; done
grep -q "meshtable ready" "$tmp/controller.out" || { echo "controller not ready"; cat "$tmp/controller.log"; exit 1; }

"$SIM" --mqtt-url "mqtt://127.0.0.1:$mport" --network fleet --snapshot bremen \
    --fleet-size "$NODES" --interval "$INTERVAL" --churn 0 --log warn \
    >"$tmp/sim.out" 2>"$tmp/sim.log" & pids+=($!)
sim=$!

# utime + stime in clock ticks (fields 14 and 15, after the command name).
ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
# The same summed over PostgreSQL's processes (server and backends): on
# PostgreSQL the storing happens there, beside the controller.
pg_ticks() {
    local t=0 p
    for p in $(pgrep -x postgres); do t=$((t + $(ticks "$p" 2>/dev/null || echo 0))); done
    echo "$t"
}
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

echo "meshtable fleet benchmark: $NODES nodes at $INTERVAL, $DATABASE, $(nproc) cores; warming up ${WARMUP}s"
sleep "$WARMUP"
conns=$(ss -Htn state established "( sport = :$mport )" | wc -l)
c0=$(ticks "$ctl"); s0=$(ticks "$sim"); m0=$(ticks "$mosq"); p0=$(pg_ticks); n0=$(count); t0=$(date +%s.%N)
max_ctl=0; max_sim=0; max_mosq=0
end=$(( $(date +%s) + WINDOW ))
while [ "$(date +%s)" -lt "$end" ]; do
    r=$(rss_kib "$ctl"); [ "$r" -gt "$max_ctl" ] && max_ctl=$r
    r=$(rss_kib "$sim"); [ "$r" -gt "$max_sim" ] && max_sim=$r
    r=$(rss_kib "$mosq"); [ "$r" -gt "$max_mosq" ] && max_mosq=$r
    sleep 5
done
c1=$(ticks "$ctl"); s1=$(ticks "$sim"); m1=$(ticks "$mosq"); p1=$(pg_ticks); n1=$(count); t1=$(date +%s.%N)

pct() { awk -v a="$1" -v b="$2" -v hz="$hz" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f", 100 * (b - a) / hz / (t1 - t0) }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
secs=$(awk -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.0f", t1 - t0 }')
echo "broker connections at window start: $conns (simulated nodes $NODES + controller)"
echo "reports stored in the ${secs}s window: $((n1 - n0)) (expected about $((NODES * secs / ${INTERVAL%s})))"
printf "%-12s %14s %12s\n" process "cpu % of 1 core" "max RSS MiB"
printf "%-12s %14s %12s\n" controller "$(pct "$c0" "$c1")" "$(mib "$max_ctl")"
printf "%-12s %14s %12s\n" simulator "$(pct "$s0" "$s1")" "$(mib "$max_sim")"
printf "%-12s %14s %12s\n" mosquitto "$(pct "$m0" "$m1")" "$(mib "$max_mosq")"
if [ "$DATABASE" = postgres ]; then
    printf "%-12s %14s %12s\n" postgresql "$(pct "$p0" "$p1")" "-"
fi
echo "targets: controller < 20 % of one core and < 500 MiB"
