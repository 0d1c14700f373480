#!/usr/bin/env bash
# mqtt-sub.sh - watch Outpost traffic with mosquitto_sub and the read-only operator identity,
# decoded (and signature-checked) by `outpostctl decode`.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: scripts/mqtt-sub.sh [--raw] [--count N] [--timeout S] [TOPIC]

Subscribes to TOPIC (default outpost/v1/#) as outpost-operator, which may read everything and
publish nothing, and prints each message decoded: telemetry readings with metric names, acks,
task lists and results, with their Ed25519 signatures verified against the PKI.
  --raw        print mosquitto_sub's "topic hexpayload" lines instead
  --count N    stop after N messages; --timeout S: stop S seconds after connecting (exit 0,
               or 1 if nothing arrived and the output is decoded)
Environment: OUTPOST_PKI_DIR (default var/local/pki), OUTPOST_BROKER_HOST (127.0.0.1),
OUTPOST_INTERNAL_PORT (8884; use 8883 from another machine), OUTPOST_BUILD_DIR (build).
Examples:
  scripts/mqtt-sub.sh 'outpost/v1/device-0001/#'
  scripts/mqtt-sub.sh outpost/v1/+/status        # online/offline, as plain text
USAGE
}

raw=0 topic="outpost/v1/#" extra=() timeout=0
while [ $# -gt 0 ]; do
	case "$1" in
	--raw) raw=1 ;;
	--count) [ $# -ge 2 ] || { usage >&2; exit 2; }; extra+=(-C "$2"); shift ;;
	--timeout) [ $# -ge 2 ] || { usage >&2; exit 2; }; extra+=(-W "$2"); timeout=1; shift ;;
	-h | --help) usage; exit 0 ;;
	-*) echo "mqtt-sub: unknown option $1 (try --help)" >&2; exit 2 ;;
	*) topic=$1 ;;
	esac
	shift
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pki=${OUTPOST_PKI_DIR:-$root/var/local/pki}
ctl=${OUTPOST_BUILD_DIR:-$root/build}/bridge/outpostctl
for f in ca.crt operator.crt operator.key; do
	[ -r "$pki/$f" ] || { echo "mqtt-sub: cannot read $pki/$f (run scripts/run-local.sh, or set OUTPOST_PKI_DIR)" >&2; exit 2; }
done
command -v mosquitto_sub >/dev/null || { echo "mqtt-sub: mosquitto_sub not found (apt-get install mosquitto-clients)" >&2; exit 1; }

sub=(mosquitto_sub -h "${OUTPOST_BROKER_HOST:-127.0.0.1}" -p "${OUTPOST_INTERNAL_PORT:-8884}"
	--cafile "$pki/ca.crt" --cert "$pki/operator.crt" --key "$pki/operator.key"
	-V mqttv5 -q 1 -t "$topic" -F '%t %x' "${extra[@]+"${extra[@]}"}")
# mosquitto_sub -W ends with status 27 ("Timed out"): the end --timeout asked for.
timed_out() { [ "$1" = 27 ] && [ "$timeout" = 1 ]; }
if [ "$raw" = 1 ]; then
	st=0
	"${sub[@]}" || st=$?
	timed_out "$st" && st=0
	exit "$st"
fi
[ -x "$ctl" ] || { echo "mqtt-sub: missing $ctl (build first) or use --raw" >&2; exit 1; }
st=(0 0)
"${sub[@]}" | "$ctl" decode --pki "$pki" || st=("${PIPESTATUS[@]}")
timed_out "${st[0]}" && st[0]=0
[ "${st[0]}" = 0 ] || exit "${st[0]}"
exit "${st[1]}"
