# shellcheck shell=sh
# Test stand-in for the part of OpenWrt's /lib/functions.sh that the init
# script uses, for running its UCI-to-TOML mapping on a machine without
# OpenWrt (Debian has no uci nor libubox). Same calling conventions as the
# real functions (package/base-files/files/lib/functions.sh):
#   config_load <package>           reads $UCI_CONFIG_DIR/<package>
#   config_get <var> <section> <option> [<default>]
#   config_get_bool <var> <section> <option> [<default>]
# An option set to an empty string reads as unset, as on OpenWrt. The UCI
# file is read the way uci_load reads `uci export`: as shell, with `package`,
# `config`, `option` and `list` as commands. POSIX sh, no `export -n`.

CONFIG_SECTIONS=
CONFIG_NUM_SECTIONS=0
CONFIG_SECTION=

package() { return 0; }

config() {
	CONFIG_NUM_SECTIONS=$((CONFIG_NUM_SECTIONS + 1))
	CONFIG_SECTION=${2:-cfg$CONFIG_NUM_SECTIONS}
	CONFIG_SECTIONS="${CONFIG_SECTIONS:+$CONFIG_SECTIONS }$CONFIG_SECTION"
	config_set "$CONFIG_SECTION" TYPE "$1"
}

option() {
	_name=$1
	shift
	config_set "$CONFIG_SECTION" "$_name" "$*"
}

list() {
	_name=$1
	shift
	eval "_prev=\${CONFIG_${CONFIG_SECTION}_${_name}:-}"
	# shellcheck disable=SC2154 # set by the eval above
	config_set "$CONFIG_SECTION" "$_name" "${_prev:+$_prev }$*"
}

config_set() {
	case "$1$2" in
	*[!A-Za-z0-9_]*) return 1 ;;
	esac
	eval "CONFIG_${1}_${2}=\$3"
}

config_get() {
	case "$2$3" in
	*[!A-Za-z0-9_]*) return 1 ;;
	esac
	eval "$1=\${CONFIG_${2}_${3}:-\${4:-}}"
}

config_get_bool() {
	config_get _bool "$2" "$3" "${4:-}"
	case "$_bool" in
	1 | on | true | yes | enabled) _bool=1 ;;
	0 | off | false | no | disabled) _bool=0 ;;
	*) _bool=${4:-} ;;
	esac
	eval "$1=\$_bool"
}

config_load() {
	# shellcheck disable=SC1090 # the file under test
	. "${UCI_CONFIG_DIR:-/etc/config}/$1"
}
