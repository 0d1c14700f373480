#!/usr/bin/env bash
# run-broker.sh - render docker/mosquitto/mosquitto.conf from the environment and run mosquitto.
# The entrypoint of the broker everywhere: scripts/run-local.sh, the tests and the container.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: docker/mosquitto/run-broker.sh [--render-only]

Renders the Outpost broker configuration and execs mosquitto in the foreground.
Environment (defaults in brackets):
  OUTPOST_PKI_DIR         PKI from scripts/provision-certs.sh [/etc/outpost/pki]
  OUTPOST_BROKER_DIR      persistence and rendered config [/var/lib/outpost/broker]
  OUTPOST_WSS_PORT        WebSockets+TLS listener for devices [443]
  OUTPOST_MQTTS_PORT      MQTT+TLS listener for devices [8883]
  OUTPOST_INTERNAL_PORT   MQTT+TLS listener for bridges and operators [8884]
  OUTPOST_BROKER_BIND     address of the device listeners [all]
  OUTPOST_INTERNAL_BIND   address of the internal listener [127.0.0.1]
  OUTPOST_BROKER_USER     user mosquitto runs as [the current user]; started as root, the
                          data directory is given to it and it must be able to read the PKI files
                          (mosquitto switches to it before loading them)
  OUTPOST_BROKER_MAX_QUEUED_MESSAGES, OUTPOST_BROKER_MAX_QUEUED_BYTES
                          what the broker keeps for a client that is away (a stopped bridge),
                          beyond which it drops; devices resend what the bridge never
                          acknowledged [200000, 268435456 = 256 MiB]
  OUTPOST_ACL_FILE        ACL [acl next to this script]
  OUTPOST_AUTH_PLUGIN     broker/outpost_auth.so [next to this script, /usr/lib/outpost,
                          or the build tree's build/broker]
  MOSQUITTO               mosquitto binary [mosquitto, else /usr/sbin/mosquitto]
--render-only writes OUTPOST_BROKER_DIR/mosquitto.conf and prints its path.
A changed crl.pem is picked up by the outpost_auth plugin within a second. Restart the broker
(do not SIGHUP mosquitto 2.0.11: see mosquitto.conf) after changing the ACL or its certificate.
USAGE
}

render_only=0
case "${1:-}" in
-h | --help) usage; exit 0 ;;
--render-only) render_only=1 ;;
"") ;;
*) echo "run-broker: unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pki=${OUTPOST_PKI_DIR:-/etc/outpost/pki}
dir=${OUTPOST_BROKER_DIR:-/var/lib/outpost/broker}
acl=${OUTPOST_ACL_FILE:-$here/acl}
for f in ca.crt broker.crt broker.key crl.pem; do
	[ -r "$pki/$f" ] || { echo "run-broker: cannot read $pki/$f (run scripts/provision-certs.sh --out $pki)" >&2; exit 2; }
done
[ -r "$acl" ] || { echo "run-broker: cannot read ACL $acl" >&2; exit 2; }
plugin=${OUTPOST_AUTH_PLUGIN:-}
if [ -z "$plugin" ]; then
	for p in "$here/outpost_auth.so" /usr/lib/outpost/outpost_auth.so "$here/../../build/broker/outpost_auth.so"; do
		[ -r "$p" ] && { plugin=$p; break; }
	done
fi
[ -n "$plugin" ] && [ -r "$plugin" ] || { echo "run-broker: cannot find the outpost_auth plugin (build it: cmake --build build, or set OUTPOST_AUTH_PLUGIN)" >&2; exit 2; }
plugin=$(cd "$(dirname "$plugin")" && pwd)/$(basename "$plugin")
port_ok() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }
for v in OUTPOST_WSS_PORT OUTPOST_MQTTS_PORT OUTPOST_INTERNAL_PORT; do
	[ -z "${!v:-}" ] || port_ok "${!v}" || { echo "run-broker: $v: not a port: ${!v}" >&2; exit 2; }
done
# 0 would mean "no limit" to mosquitto: a stopped bridge could then pin all the broker's memory.
# It reads the message count as an int (a larger number wraps to "no limit" too), the bytes
# as a long.
limit_ok() { # VALUE MAX: decimal, 1..MAX (no longer than MAX, so the arithmetic cannot overflow)
	[[ "$1" =~ ^[1-9][0-9]*$ ]] && [ "${#1}" -le "${#2}" ] && [ "$1" -le "$2" ]
}
for v in OUTPOST_BROKER_MAX_QUEUED_MESSAGES:2147483647 OUTPOST_BROKER_MAX_QUEUED_BYTES:999999999999; do
	name=${v%%:*}
	[ -z "${!name:-}" ] || limit_ok "${!name}" "${v#*:}" ||
		{ echo "run-broker: $name: not a number from 1 to ${v#*:}: ${!name}" >&2; exit 2; }
done
mkdir -p "$dir"
# mosquitto 2.0 started as root switches to OUTPOST_BROKER_USER right after reading its
# configuration, before it loads its plugin, its TLS files and its persistence and opens its
# listeners: that user must read the PKI files (the plugin also re-reads crl.pem later), write
# the data directory, and may bind a port below 1024 only with CAP_NET_BIND_SERVICE.
# A uid without a passwd entry (docker run --user, Kubernetes runAsUser) has no name: not root,
# so mosquitto ignores its user setting anyway.
user=${OUTPOST_BROKER_USER:-$(id -un 2>/dev/null || id -u)}
if [ "$(id -u)" = 0 ] && [ "$user" != "$(id -un)" ] && [ "$render_only" = 0 ]; then
	id "$user" >/dev/null 2>&1 || { echo "run-broker: OUTPOST_BROKER_USER: no such user: $user" >&2; exit 2; }
	chown "$user" "$dir"
	for f in ca.crt broker.crt broker.key crl.pem; do
		runuser -u "$user" -- test -r "$pki/$f" ||
			{ echo "run-broker: $user (OUTPOST_BROKER_USER) cannot read $pki/$f, which mosquitto reads after switching to it (chown it, or leave OUTPOST_BROKER_USER unset)" >&2; exit 2; }
	done
fi
pki=$(cd "$pki" && pwd)
dir=$(cd "$dir" && pwd)
acl=$(cd "$(dirname "$acl")" && pwd)/$(basename "$acl")

# libwebsockets binds the WSS listener to every address on a dual-stack socket unless the
# family is given; with an IPv4 bind address, say so.
wss_domain=""
[[ "${OUTPOST_BROKER_BIND:-}" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] && wss_domain="socket_domain ipv4"

declare -A subst=(
	[PKI_DIR]=$pki
	[DATA_DIR]=$dir
	[ACL_FILE]=$acl
	[WSS_PORT]=${OUTPOST_WSS_PORT:-443}
	[MQTTS_PORT]=${OUTPOST_MQTTS_PORT:-8883}
	[INTERNAL_PORT]=${OUTPOST_INTERNAL_PORT:-8884}
	[BIND]=${OUTPOST_BROKER_BIND:-}
	[INTERNAL_BIND]=${OUTPOST_INTERNAL_BIND:-127.0.0.1}
	[USER]=$user
	[WSS_SOCKET_DOMAIN]=$wss_domain
	[AUTH_PLUGIN]=$plugin
	[MAX_QUEUED_MESSAGES]=${OUTPOST_BROKER_MAX_QUEUED_MESSAGES:-200000}
	[MAX_QUEUED_BYTES]=${OUTPOST_BROKER_MAX_QUEUED_BYTES:-268435456}
)
conf="$dir/mosquitto.conf"
{
	while IFS= read -r line || [ -n "$line" ]; do
		for k in "${!subst[@]}"; do line=${line//"@$k@"/"${subst[$k]}"}; done
		printf '%s\n' "${line% }"
	done <"$here/mosquitto.conf"
} >"$conf.tmp"
mv "$conf.tmp" "$conf"
if [ "$render_only" = 1 ]; then
	echo "$conf"
	exit 0
fi
mosq=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
# line-buffered, so that `docker logs` and tests see each line as it happens
if command -v stdbuf >/dev/null; then
	exec stdbuf -oL -eL "$mosq" -c "$conf"
fi
exec "$mosq" -c "$conf"
