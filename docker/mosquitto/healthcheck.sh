#!/usr/bin/env bash
# healthcheck.sh - the broker started by run-broker.sh accepts TCP connections on all three
# listeners (mosquitto opens them only after loading the CA, certificate, key, CRL and plugin).
# Same environment as run-broker.sh. Exit 0 healthy, 1 not.
set -euo pipefail

case "${1:-}" in
-h | --help)
	echo "Usage: docker/mosquitto/healthcheck.sh"
	echo "Healthy when the WSS, MQTTS and internal listeners accept connections."
	echo "Environment: OUTPOST_WSS_PORT [443], OUTPOST_MQTTS_PORT [8883], OUTPOST_INTERNAL_PORT [8884],"
	echo "OUTPOST_BROKER_BIND, OUTPOST_INTERNAL_BIND [127.0.0.1] (wildcards are probed on 127.0.0.1)."
	exit 0
	;;
esac

# addr BIND: where to probe a listener bound to BIND.
addr() {
	case "${1:-}" in
	"" | 0.0.0.0 | "::") echo 127.0.0.1 ;;
	*) echo "$1" ;;
	esac
}
probe() { # NAME HOST PORT
	# shellcheck disable=SC2016 # $0 and $1 belong to the inner shell
	if ! timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$2" "$3" 2>/dev/null; then
		echo "unhealthy: $1 listener $2:$3 does not accept connections"
		exit 1
	fi
}
probe wss "$(addr "${OUTPOST_BROKER_BIND:-}")" "${OUTPOST_WSS_PORT:-443}"
probe mqtts "$(addr "${OUTPOST_BROKER_BIND:-}")" "${OUTPOST_MQTTS_PORT:-8883}"
probe internal "$(addr "${OUTPOST_INTERNAL_BIND:-127.0.0.1}")" "${OUTPOST_INTERNAL_PORT:-8884}"
echo healthy
