#!/usr/bin/env bash
# Footprint of meshtable-agent next to prometheus-node-exporter and collectd,
# measured in the same run on the same machine, all three collecting once a
# second:
#   - the agent: `--interval 1s`, publishing to the broker (QoS 1); built for
#     x86_64-unknown-linux-gnu (the row the targets apply to) and, when
#     rustup has (or can add) the target, also as a static
#     x86_64-unknown-linux-musl binary, the way it runs on OpenWrt (musl, no
#     glibc mapped: glibc alone adds about 1.2 MiB of resident pages);
#   - node_exporter (default collectors): scraped once a second, as
#     Prometheus would, so one scrape is one collection cycle;
#   - collectd: `Interval 1` with the plugins that read what the agent reads
#     (cpu, load, memory, interface, df, uptime), publishing to the same
#     broker with its mqtt plugin (QoS 1).
# Figures, each the median of SAMPLES readings taken during the same window:
#   - size: the agent's release binary (profile agent-release, x86_64); the
#     node_exporter binary; collectd's daemon plus the plugins it loads;
#   - steady-state RSS (VmRSS) of each process, and the ratios to the agent;
#   - CPU time per collection cycle: schedstat's on-CPU nanoseconds summed
#     over the process's threads (utime + stime ticks where schedstat is
#     missing) over each step, divided by the
#     cycles in it (the agent's acknowledged reports, the scrapes, the seconds
#     of collectd's interval).
# Targets (issue 3): agent RSS <= 4 MiB and <= 1/5 of node_exporter's;
# binary <= 2.5 MiB. Printed as "met"/"MISSED"; the exit status is 0 either
# way (a benchmark prints figures).
#
# Needs a broker (MQTT_URL, default mqtt://127.0.0.1:1883, e.g. Mosquitto);
# installs prometheus-node-exporter and collectd-core with apt-get when they
# are missing.
# Usage: agent/bench/footprint.sh   (from anywhere in the repository)
set -euo pipefail

MQTT_URL=${MQTT_URL:-mqtt://127.0.0.1:1883}
SETTLE=${SETTLE:-20}  # seconds before measuring
SAMPLES=${SAMPLES:-7} # RSS and CPU readings
WINDOW=${WINDOW:-35}  # seconds over which they are taken
NE_ADDR=${NE_ADDR:-127.0.0.1:19100}
NETWORK=footprint
NODE=footprint-$$
MUSL=x86_64-unknown-linux-musl

cd "$(dirname "$0")/../.."
root=$(pwd)
tmp=$(mktemp -d)
pids=()
mqtt_host=${MQTT_URL#mqtt://}
mqtt_port=${mqtt_host##*:}
mqtt_host=${mqtt_host%:*}
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if command -v mosquitto_pub >/dev/null; then
        for node in "$NODE" "$NODE-musl"; do
            for k in hello state; do
                mosquitto_pub -h "$mqtt_host" -p "$mqtt_port" -r -n \
                    -t "meshtable/v1/$NETWORK/$node/$k" 2>/dev/null || true
            done
            mosquitto_sub -h "$mqtt_host" -p "$mqtt_port" -i "meshtable-$NETWORK-$node" -t x -E \
                2>/dev/null || true
        done
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
mib() { calc "$1 / 1048576"; }

echo "== build"
cargo build --quiet --profile agent-release -p meshtable-agent
bin="$root/target/agent-release/meshtable-agent"
size=$(stat -c %s "$bin")
musl_bin=
if rustup target list --installed 2>/dev/null | grep -qx "$MUSL" ||
    rustup target add "$MUSL" >/dev/null 2>&1; then
    cargo build --quiet --profile agent-release -p meshtable-agent --target "$MUSL"
    musl_bin="$root/target/$MUSL/agent-release/meshtable-agent"
    musl_size=$(stat -c %s "$musl_bin")
else
    echo "no musl row: rustup cannot add $MUSL here"
fi

missing=()
command -v prometheus-node-exporter >/dev/null || missing+=(prometheus-node-exporter)
[ -x /usr/sbin/collectd ] || missing+=(collectd-core)
if ((${#missing[@]})); then
    echo "== installing ${missing[*]}"
    apt-get update -qq
    # The packages may start their own services; this run uses its own instances.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >/dev/null
fi
ne=$(command -v prometheus-node-exporter)
collectd=/usr/sbin/collectd
plugins=(logfile cpu load memory interface df uptime mqtt)
plugin_dir=$(dirname "$(find /usr/lib -name cpu.so -path '*collectd*' | head -n 1)")
collectd_size=$(stat -c %s "$collectd")
for p in "${plugins[@]}"; do
    collectd_size=$((collectd_size + $(stat -c %s "$plugin_dir/$p.so")))
done
ne_size=$(stat -c %s "$(readlink -f "$ne")")
echo "node exporter: $("$ne" --version 2>&1 | head -n 1)"
echo "collectd: $(dpkg-query -W -f='${Version}' collectd-core 2>/dev/null || echo '?')"

cat >"$tmp/collectd.conf" <<EOF
Hostname "$NODE"
FQDNLookup false
Interval 1
BaseDir "$tmp/collectd"
PIDFile "$tmp/collectd.pid"
PluginDir "$plugin_dir"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File "$tmp/collectd.log"
</Plugin>
LoadPlugin cpu
LoadPlugin load
LoadPlugin memory
LoadPlugin interface
LoadPlugin df
LoadPlugin uptime
LoadPlugin mqtt
<Plugin mqtt>
  <Publish "footprint">
    Host "$mqtt_host"
    Port "$mqtt_port"
    ClientId "footprint-collectd-$$"
    Prefix "footprint-collectd-$$"
    QoS 1
  </Publish>
</Plugin>
EOF
mkdir -p "$tmp/collectd"

echo "== running them all for ${SETTLE}s before measuring"
"$bin" --mqtt-url "$MQTT_URL" --network "$NETWORK" --node-id "$NODE" --interval 1s \
    --state-dir "$tmp/state" --log meshtable_agent=debug 2>"$tmp/agent.log" &
agent=$!
pids+=("$agent")
if [ -n "$musl_bin" ]; then
    "$musl_bin" --mqtt-url "$MQTT_URL" --network "$NETWORK" --node-id "$NODE-musl" --interval 1s \
        --state-dir "$tmp/state-musl" --log meshtable_agent=debug 2>"$tmp/musl.log" &
    musl=$!
    pids+=("$musl")
fi
"$ne" --web.listen-address="$NE_ADDR" >"$tmp/ne.log" 2>&1 &
exporter=$!
pids+=("$exporter")
"$collectd" -f -C "$tmp/collectd.conf" >"$tmp/collectd.out" 2>&1 &
cd_pid=$!
pids+=("$cd_pid")

scrapes=0
scrape() {
    curl -fsS "http://$NE_ADDR/metrics" -o /dev/null || echo "scrape failed"
    scrapes=$((scrapes + 1))
}
for _ in $(seq "$SETTLE"); do
    sleep 1
    scrape
done
grep -q "connected to the broker" "$tmp/agent.log" || {
    echo "agent did not connect:"
    cat "$tmp/agent.log"
    exit 1
}
kill -0 "$cd_pid" 2>/dev/null || {
    echo "collectd exited:"
    cat "$tmp/collectd.out" "$tmp/collectd.log" 2>/dev/null
    exit 1
}

rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
cycles() { grep -c "report acknowledged" "$1" || true; }
# On-CPU time in nanoseconds of the whole process: the sum over its threads
# of schedstat (node_exporter and collectd do their work in other threads
# than the first), else utime + stime ticks.
cpu_ns() {
    if [ -r "/proc/$1/schedstat" ]; then
        cat "/proc/$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f\n", s }'
    else
        awk -v hz="$(getconf CLK_TCK)" '{ printf "%.0f\n", ($14 + $15) * 1e9 / hz }' "/proc/$1/stat"
    fi
}

# Per step: RSS of each, and CPU per cycle of each over the step.
step=$((WINDOW / SAMPLES))
[ "$step" -ge 1 ] || step=1
a_rss=()
m_rss=()
m_cpu=()
n_rss=()
c_rss=()
a_cpu=()
n_cpu=()
c_cpu=()
for _ in $(seq "$SAMPLES"); do
    a0=$(cpu_ns "$agent")
    n0=$(cpu_ns "$exporter")
    c0=$(cpu_ns "$cd_pid")
    k0=$(cycles "$tmp/agent.log")
    if [ -n "$musl_bin" ]; then
        m0=$(cpu_ns "$musl")
        j0=$(cycles "$tmp/musl.log")
    fi
    s0=$scrapes
    t0=$(date +%s%N)
    for _ in $(seq "$step"); do
        sleep 1
        scrape
    done
    t1=$(date +%s%N)
    a_rss+=("$(rss "$agent")")
    n_rss+=("$(rss "$exporter")")
    c_rss+=("$(rss "$cd_pid")")
    dk=$(($(cycles "$tmp/agent.log") - k0))
    if [ -n "$musl_bin" ]; then
        m_rss+=("$(rss "$musl")")
        dj=$(($(cycles "$tmp/musl.log") - j0))
        [ "$dj" -gt 0 ] && m_cpu+=("$(calc "($(cpu_ns "$musl") - $m0) / 1e6 / $dj")")
    fi
    ds=$((scrapes - s0))
    dc=$(calc "($t1 - $t0) / 1e9") # collectd: one cycle per second
    [ "$dk" -gt 0 ] && a_cpu+=("$(calc "($(cpu_ns "$agent") - $a0) / 1e6 / $dk")")
    n_cpu+=("$(calc "($(cpu_ns "$exporter") - $n0) / 1e6 / $ds")")
    c_cpu+=("$(calc "($(cpu_ns "$cd_pid") - $c0) / 1e6 / $dc")")
done
kill -0 "$cd_pid" 2>/dev/null || echo "warning: collectd exited during the run"
# What the agent's RSS is made of: its heap and stacks (anonymous) against
# the pages of its binary and of libc (file-backed, shared).
split() { awk '/^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 } END { print a " KiB anonymous + " f " KiB file-backed" }' "/proc/$1/status"; }
agent_split=$(split "$agent")
[ -z "$musl_bin" ] || musl_split=$(split "$musl")

a=$(printf '%s\n' "${a_rss[@]}" | median)
n=$(printf '%s\n' "${n_rss[@]}" | median)
c=$(printf '%s\n' "${c_rss[@]}" | median)
acpu=$(printf '%s\n' "${a_cpu[@]}" | median)
ncpu=$(printf '%s\n' "${n_cpu[@]}" | median)
ccpu=$(printf '%s\n' "${c_cpu[@]}" | median)
verdict() { if awk "BEGIN { exit !($1) }"; then echo met; else echo MISSED; fi; }

echo "== readings ($SAMPLES steps of ${step}s)"
echo "RSS KiB       agent: ${a_rss[*]}"
[ -z "$musl_bin" ] || echo "RSS KiB  agent musl: ${m_rss[*]}"
echo "RSS KiB    exporter: ${n_rss[*]}"
echo "RSS KiB    collectd: ${c_rss[*]}"
echo "CPU ms/cycle  agent: ${a_cpu[*]}"
[ -z "$musl_bin" ] || echo "CPU ms/cycle  musl: ${m_cpu[*]}"
echo "CPU ms/cycle export: ${n_cpu[*]}"
echo "CPU ms/cycle collec: ${c_cpu[*]}"
echo "== results (medians, same run, same machine: $(nproc) cores, $(uname -m))"
printf '%-28s %14s %14s %16s\n' "" "binary (MiB)" "RSS (KiB)" "CPU ms/cycle"
printf '%-28s %14s %14s %16s\n' "meshtable-agent" "$(mib "$size")" "$a" "$acpu"
if [ -n "$musl_bin" ]; then
    m=$(printf '%s\n' "${m_rss[@]}" | median)
    mcpu=$(printf '%s\n' "${m_cpu[@]}" | median)
    printf '%-28s %14s %14s %16s\n' "meshtable-agent (musl)" "$(mib "$musl_size")" "$m" "$mcpu"
fi
printf '%-28s %14s %14s %16s\n' "prometheus-node-exporter" "$(mib "$ne_size")" "$n" "$ncpu"
printf '%-28s %14s %14s %16s\n' "collectd (+${#plugins[@]} plugins)" "$(mib "$collectd_size")" "$c" "$ccpu"
echo "ratios: node_exporter/agent RSS $(calc "$n / $a")x, collectd/agent RSS $(calc "$c / $a")x;" \
    "CPU per cycle node_exporter/agent $(calc "$ncpu / $acpu")x, collectd/agent $(calc "$ccpu / $acpu")x"
echo "agent RSS: $agent_split${musl_bin:+; musl build: $musl_split}"
echo "target agent binary <= 2.50 MiB: $(mib "$size") MiB ($size bytes): $(verdict "$size <= 2.5 * 1048576")"
echo "target agent RSS <= 4 MiB: $a KiB: $(verdict "$a <= 4096")"
echo "target agent RSS <= 1/5 of node_exporter's: ratio $(calc "$a / $n"): $(verdict "$a * 5 <= $n")"
if [ -n "$musl_bin" ]; then
    echo "(musl build, as on OpenWrt: binary $(mib "$musl_size") MiB: $(verdict "$musl_size <= 2.5 * 1048576");" \
        "RSS $m KiB: $(verdict "$m <= 4096"); ratio to node_exporter $(calc "$m / $n"): $(verdict "$m * 5 <= $n"))"
fi
