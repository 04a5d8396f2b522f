#!/usr/bin/env bash
# Bandwidth per node-hour (issue 3): bytes on the wire, MQTT framing
# included, at a 60 s interval, for a router with 5 interfaces, 2 radios,
# 10 stations and 6 babel neighbours; v1 JSON, v1 CBOR and v2 compact CBOR
# measured in the same run, each through a real rumqttc client, a
# byte-counting TCP relay and a real broker, with simulated time (one
# simulated hour takes well under a second). See agent/bench/bandwidth.rs.
#
# Needs a broker: BROKER=host:port (default 127.0.0.1:1883, e.g. Mosquitto).
# RUNS: runs per encoding, each a different simulation seed; figures are
# medians (default 5). Prints "met"/"MISSED" against the 12 KiB/h target;
# the exit status is 0 either way (a benchmark prints figures).
# Usage: agent/bench/bandwidth.sh   (from anywhere in the repository)
set -euo pipefail
cd "$(dirname "$0")/../.."
BROKER=${BROKER:-127.0.0.1:1883}
RUNS=${RUNS:-5}
cargo run --quiet -p meshtable-agent --example bandwidth -- "$BROKER" "$RUNS"
