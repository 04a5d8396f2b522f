#!/usr/bin/env bash
# Footprint of meshtable-agent next to prometheus-node-exporter, measured in
# the same run on the same machine:
#   - size of the release binary (profile agent-release)
#   - steady-state RSS (VmRSS, median of several readings) of both, and ratio
#   - the agent's CPU time per collection cycle ((utime+stime) delta / cycles)
#
# Needs a broker (MQTT_URL, default mqtt://127.0.0.1:1883, e.g. Mosquitto)
# and installs prometheus-node-exporter with apt-get when it is missing.
# Usage: agent/bench/footprint.sh   (from anywhere in the repository)
set -euo pipefail

MQTT_URL=${MQTT_URL:-mqtt://127.0.0.1:1883}
SETTLE=${SETTLE:-20}        # seconds before measuring
SAMPLES=${SAMPLES:-7}       # RSS readings
WINDOW=${WINDOW:-30}        # seconds over which CPU per cycle is measured
NE_ADDR=${NE_ADDR:-127.0.0.1:19100}
NETWORK=footprint
NODE=footprint-$$

cd "$(dirname "$0")/../.."
root=$(pwd)
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if command -v mosquitto_pub >/dev/null; then
        host=${MQTT_URL#mqtt://}; port=${host##*:}; host=${host%:*}
        for k in hello state; do
            mosquitto_pub -h "$host" -p "$port" -r -n -t "meshtable/v1/$NETWORK/$NODE/$k" 2>/dev/null || true
        done
        mosquitto_sub -h "$host" -p "$port" -i "meshtable-$NETWORK-$NODE" -t x -E 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

echo "== build"
cargo build --quiet --profile agent-release -p meshtable-agent
bin="$root/target/agent-release/meshtable-agent"
size=$(stat -c %s "$bin")
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
echo "binary: $size bytes ($(calc "$size / 1048576") MiB; limit 2.50 MiB)"

ne=$(command -v prometheus-node-exporter || true)
if [ -z "$ne" ]; then
    echo "== installing prometheus-node-exporter"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-node-exporter >/dev/null
    # The package may start its own service; this run uses its own instance.
    ne=$(command -v prometheus-node-exporter)
fi
echo "node exporter: $("$ne" --version 2>&1 | head -1)"

echo "== running both for ${SETTLE}s before measuring"
"$bin" --mqtt-url "$MQTT_URL" --network "$NETWORK" --node-id "$NODE" --interval 1s \
    --state-dir "$tmp/state" --log meshtable_agent=debug 2>"$tmp/agent.log" &
agent=$!; pids+=("$agent")
"$ne" --web.listen-address="$NE_ADDR" >"$tmp/ne.log" 2>&1 &
exporter=$!; pids+=("$exporter")

scrape() { curl -fsS "http://$NE_ADDR/metrics" -o /dev/null || echo "scrape failed"; }
for _ in $(seq "$SETTLE"); do
    sleep 1
    scrape
done
grep -q "connected to the broker" "$tmp/agent.log" || { echo "agent did not connect:"; cat "$tmp/agent.log"; exit 1; }

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime
cycles() { grep -c "report acknowledged" "$tmp/agent.log" || true; }

sched() { [ -r "/proc/$1/schedstat" ] && awk '{print $1}' "/proc/$1/schedstat" || true; }   # ns on CPU
ticks0=$(cpu_ticks "$agent"); sched0=$(sched "$agent"); cycles0=$(cycles)
agent_rss=(); ne_rss=()
step=$(( WINDOW / SAMPLES )); [ "$step" -ge 1 ] || step=1
for _ in $(seq "$SAMPLES"); do
    scrape
    agent_rss+=("$(rss "$agent")"); ne_rss+=("$(rss "$exporter")")
    sleep "$step"
done
ticks1=$(cpu_ticks "$agent"); sched1=$(sched "$agent"); cycles1=$(cycles)

hz=$(getconf CLK_TCK)
a=$(printf '%s\n' "${agent_rss[@]}" | median)
n=$(printf '%s\n' "${ne_rss[@]}" | median)
dc=$(( cycles1 - cycles0 )); dt=$(( ticks1 - ticks0 ))
echo "== results"
echo "agent RSS readings (KiB): ${agent_rss[*]}"
echo "node_exporter RSS readings (KiB): ${ne_rss[*]}"
echo "steady-state RSS (median): agent $a KiB, node_exporter $n KiB," \
    "ratio agent/node_exporter $(calc "$a / $n") (node_exporter uses $(calc "$n / $a")x the agent)"
echo "agent CPU (utime+stime): $dt ticks at $hz Hz over $dc collection cycles =" \
    "$(calc "$dt * 1000 / $hz / $dc") ms per cycle"
if [ -n "$sched0" ]; then
    echo "agent CPU (schedstat, ns resolution): $(calc "($sched1 - $sched0) / 1000000 / $dc") ms per cycle"
fi
