#!/usr/bin/env bash
# healthcheck.sh - the broker started by run-broker.sh has all three listeners open (mosquitto
# opens them only after loading the CA, certificate, key, CRL and plugin). Checks for sockets in
# LISTEN state (listening.sh) rather than connecting: mosquitto would log every probe as a
# failed client connection. Same environment as run-broker.sh. Exit 0 healthy, 1 not.
set -euo pipefail

case "${1:-}" in
-h | --help)
	echo "Usage: docker/mosquitto/healthcheck.sh"
	echo "Healthy when the WSS, MQTTS and internal listeners are open: a TCP socket listening on"
	echo "each port, read from /proc/net/tcp (no connection is made, so mosquitto logs nothing)."
	echo "Environment: OUTPOST_WSS_PORT [443], OUTPOST_MQTTS_PORT [8883], OUTPOST_INTERNAL_PORT [8884]."
	exit 0
	;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
check() { # NAME PORT
	if ! "$here/listening.sh" "$2"; then
		echo "unhealthy: $1 listener (port $2) is not open"
		exit 1
	fi
}
check wss "${OUTPOST_WSS_PORT:-443}"
check mqtts "${OUTPOST_MQTTS_PORT:-8883}"
check internal "${OUTPOST_INTERNAL_PORT:-8884}"
echo healthy
