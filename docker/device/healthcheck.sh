#!/usr/bin/env bash
# device/healthcheck.sh - health of a device replica started by device/entrypoint.sh: its
# identity is still locked (so the agent that holds the lock is alive) and its state directory
# is writable (the spool can take new batches). Exit 0 healthy, 1 not.
set -euo pipefail

case "${1:-}" in
-h | --help)
	echo "Usage: docker/device/healthcheck.sh"
	echo "Healthy when this container's device identity is locked by a running agent and its"
	echo "state directory is writable. Environment: OUTPOST_DEVICE_STATE_ROOT, HOSTNAME."
	exit 0
	;;
esac

root=${OUTPOST_DEVICE_STATE_ROOT:-/var/lib/outpost-device}
host=${HOSTNAME:-$(hostname)}
[[ "$host" =~ ^[A-Za-z0-9_-]{1,64}$ ]] || host=$(printf '%s' "$host" | tr -c 'A-Za-z0-9_-' '_' | cut -c1-64)
unhealthy() { echo "unhealthy: $*"; exit 1; }

[ -r "$root/.claims/host-$host" ] || unhealthy "no identity claimed by $host yet"
id=$(head -c 64 "$root/.claims/host-$host")
[[ "$id" =~ ^[A-Za-z0-9_-]{1,64}$ ]] || unhealthy "bad claim record for $host"
# flock -n succeeds only if nobody holds the lock, i.e. the agent is gone.
if flock -n "$root/.claims/$id.lock" true; then
	unhealthy "$id: no agent holds the identity"
fi
probe="$root/$id/.healthcheck"
( : >"$probe" ) 2>/dev/null || unhealthy "$id: state directory $root/$id is not writable"
rm -f "$probe"
echo "healthy: $id"
