#!/bin/sh
# Tests the UCI-to-TOML mapping of files/meshtable-agent.init: for every case
# in cases/ (and the shipped files/meshtable-agent.config), the TOML the init
# script generates must equal cases/<name>.toml, and the real agent's config
# parser (`meshtable-agent --config <generated> --once`) must accept it, or
# refuse it with an error naming the bad key. start_service is run too, with
# procd's functions recording what they are given.
#
# OpenWrt's /lib/functions.sh is not on this machine: uci-functions.sh stands
# in for the part the init script uses (config_load, config_get,
# config_get_bool), with the same conventions.
#
# Usage: deploy/openwrt/test/uci-toml.sh path/to/meshtable-agent
set -eu

here=$(cd "$(dirname "$0")" && pwd)
agent=${1:?usage: uci-toml.sh path/to/meshtable-agent}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0
passed=0

fail() {
	echo "FAIL $name: $*"
	failed=$((failed + 1))
}

# generate NAME UCI_FILE: writes $tmp/NAME/gen.toml (meshtable_agent_toml),
# and runs start_service with TOML=$tmp/NAME/run/agent.toml, recording the
# procd calls in $tmp/NAME/procd.
generate() {
	dir=$tmp/$1
	mkdir -p "$dir/config"
	cp "$2" "$dir/config/meshtable-agent"
	(
		UCI_CONFIG_DIR="$dir/config"
		# shellcheck source=SCRIPTDIR/uci-functions.sh
		. "$here/uci-functions.sh"
		# shellcheck source=SCRIPTDIR/../files/meshtable-agent.init
		. "$here/../files/meshtable-agent.init"
		config_load "$CONFIG"
		meshtable_agent_toml >"$dir/gen.toml"
		TOML="$dir/run/agent.toml"
		: >"$dir/procd"
		# shellcheck disable=SC2317 # called by start_service
		procd_open_instance() { echo "open" >>"$dir/procd"; }
		procd_set_param() { echo "$*" >>"$dir/procd"; }
		procd_close_instance() { echo "close" >>"$dir/procd"; }
		start_service
	)
}

# check NAME UCI_FILE OUTCOME PATTERN...: OUTCOME is "accepted" (every
# PATTERN must be in the --once output), "refused" (in the error), or "tls"
# for an mqtts:// config: accepted as such by an agent built with TLS
# (--features tls), and refused by one without, with the error saying so.
check() {
	name=$1
	uci=$2
	outcome=$3
	shift 3
	if ! generate "$name" "$uci" 2>"$tmp/$name.err"; then
		fail "the init script failed: $(cat "$tmp/$name.err")"
		return
	fi
	if ! diff -u "$here/cases/$name.toml" "$tmp/$name/gen.toml" >"$tmp/$name.diff"; then
		fail "generated TOML differs from cases/$name.toml:"
		cat "$tmp/$name.diff"
		return
	fi
	if "$agent" --config "$tmp/$name/gen.toml" --once >"$tmp/$name.out" 2>"$tmp/$name.err"; then
		got=accepted
		text=$tmp/$name.out
	else
		got=refused
		text=$tmp/$name.err
	fi
	if [ "$outcome" = tls ]; then
		outcome=$got
		[ "$got" = accepted ] ||
			set -- 'this agent was built without TLS; rebuild with --features tls'
	fi
	if [ "$got" != "$outcome" ]; then
		fail "the agent $got the generated config, expected $outcome: $(cat "$tmp/$name.err")"
		return
	fi
	for pattern in "$@"; do
		grep -qF -- "$pattern" "$text" || {
			fail "the agent's output lacks $pattern: $(head -c 600 "$text")"
			return
		}
	done
	passed=$((passed + 1))
	echo "ok   $name: $outcome$(for p in "$@"; do printf ' [%s]' "$p"; done)"
}

# check_service NAME ENABLED: with ENABLED=1, start_service wrote the TOML
# (mode 0600, equal to gen.toml) and gave procd the command, file and
# respawn; with 0 it did nothing.
check_service() {
	name=$1
	run=$tmp/$1/run/agent.toml
	if [ "$2" = 0 ]; then
		if [ -e "$run" ] || [ -s "$tmp/$name/procd" ]; then
			fail "disabled, yet start_service wrote $run or opened an instance"
			return
		fi
		passed=$((passed + 1))
		echo "ok   $name: disabled, no instance"
		return
	fi
	cmp -s "$run" "$tmp/$name/gen.toml" || {
		fail "start_service did not write the generated TOML to \$TOML"
		return
	}
	mode=$(stat -c %a "$run")
	[ "$mode" = 600 ] || {
		fail "\$TOML has mode $mode, want 600 (mqtt_url may carry a password)"
		return
	}
	for want in open "command /usr/bin/meshtable-agent --config $run" "file $run" \
		"respawn 3600 5 5" "stdout 1" "stderr 1" close; do
		grep -qxF -- "$want" "$tmp/$name/procd" || {
			fail "procd was not given '$want': $(cat "$tmp/$name/procd")"
			return
		}
	done
	passed=$((passed + 1))
	echo "ok   $name: procd instance"
}

# The shipped config equals the agent's defaults; its node id comes from this
# machine's MAC, which a container may lack, so that one is left to the agent.
name=default
check default "$here/../files/meshtable-agent.config" accepted '"interval_ms":60000'
check_service default 1
check full "$here/cases/full.config" accepted '"interval_ms":300000' \
	'"node":"roof-north"' '"latitude":51.3149' '"longitude":-12.2762' '"altitude":118.5'
check_service full 1
check bad-number "$here/cases/bad-number.config" refused 'queue_capacity' 'invalid type'
check quotes "$here/cases/quotes.config" refused 'invalid --network'
check disabled "$here/cases/disabled.config" accepted '"node":"n1"'
check tls "$here/cases/tls.config" tls '"node":"tls-node"'
check tls-plain-url "$here/cases/tls-plain-url.config" refused \
	'--ca-file is set but --mqtt-url is not mqtts://'
check_service disabled 0

echo "uci-toml: $passed passed, $failed failed"
[ "$failed" = 0 ]
