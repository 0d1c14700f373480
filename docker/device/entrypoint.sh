#!/usr/bin/env bash
# device/entrypoint.sh - start outpost-device in a container replica under an identity of its
# own: claims one device certificate from the shared device PKI volume, then execs the agent.
#
# The claim is an exclusive flock(2) on STATE_ROOT/.claims/ID.lock, taken on file descriptor 9
# and inherited by outpost-device through exec: it lasts exactly as long as the agent process
# (also across its own `restart` task, which re-executes itself), and the kernel releases it
# when the process dies, so a crashed or removed replica never leaves a stale claim. A replica
# first tries the id it had before (STATE_ROOT/.claims/host-HOSTNAME; a restarted container
# keeps its hostname), then the ids in order. The state directory belongs to the identity
# (STATE_ROOT/ID), so whichever replica holds an id also holds that id's spool and sequence
# numbers. flock needs every replica on one kernel: one Docker host, local volume driver.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: docker/device/entrypoint.sh [outpost-device options ...]

Picks a free device identity from OUTPOST_DEVICE_PKI/devices/*.crt (with its .key), locks it
for the lifetime of the agent, and execs outpost-device with OUTPOST_DEVICE_ID, _CERT, _KEY,
_CA, _BRIDGE_CERT and _STATE_DIR set. Other OUTPOST_DEVICE_* variables and the options given
here pass through to outpost-device unchanged.

Environment (defaults in brackets):
  OUTPOST_DEVICE_PKI         ca.crt, bridge.crt, devices/ID.{crt,key} [/etc/outpost/pki]
  OUTPOST_DEVICE_STATE_ROOT  shared volume: ID/ (state of each identity), .claims/ [/var/lib/outpost-device]
  OUTPOST_DEVICE_ID          use this identity only (fails if another replica holds it) [any free]
  OUTPOST_DEVICE_BIN         the agent [outpost-device]
  HOSTNAME                   remembers which identity this container had
Exit status: 2 if no identity is free or the PKI is incomplete; otherwise outpost-device's.
USAGE
}

say() { echo "device-entrypoint: $*" >&2; }
config_error() { say "$*"; exit 2; }

case "${1:-}" in
-h | --help)
	usage
	echo
	exec "${OUTPOST_DEVICE_BIN:-outpost-device}" --help
	;;
esac

pki=${OUTPOST_DEVICE_PKI:-/etc/outpost/pki}
root=${OUTPOST_DEVICE_STATE_ROOT:-/var/lib/outpost-device}
bin=${OUTPOST_DEVICE_BIN:-outpost-device}
host=${HOSTNAME:-$(hostname)}
valid_id() { [[ "$1" =~ ^[A-Za-z0-9_-]{1,64}$ ]]; }
valid_id "$host" || host=$(printf '%s' "$host" | tr -c 'A-Za-z0-9_-' '_' | cut -c1-64)

for f in ca.crt bridge.crt; do
	[ -r "$pki/$f" ] || config_error "cannot read $pki/$f (has the provision service run?)"
done
command -v flock >/dev/null || config_error "flock not found (util-linux)"
claims=$root/.claims
mkdir -p "$claims"

candidates=()
if [ -n "${OUTPOST_DEVICE_ID:-}" ]; then
	valid_id "$OUTPOST_DEVICE_ID" || config_error "OUTPOST_DEVICE_ID: invalid device id '$OUTPOST_DEVICE_ID'"
	candidates=("$OUTPOST_DEVICE_ID")
else
	if [ -r "$claims/host-$host" ]; then
		prev=$(head -c 64 "$claims/host-$host")
		valid_id "$prev" && candidates+=("$prev")
	fi
	for crt in "$pki"/devices/*.crt; do
		[ -e "$crt" ] || continue
		id=$(basename "$crt" .crt)
		valid_id "$id" && candidates+=("$id")
	done
fi
[ ${#candidates[@]} -gt 0 ] || config_error "no device identities in $pki/devices (has the provision service run?)"

id=""
for c in "${candidates[@]}"; do
	if [ ! -r "$pki/devices/$c.crt" ] || [ ! -r "$pki/devices/$c.key" ]; then continue; fi
	exec 9>>"$claims/$c.lock"
	if flock -n 9; then
		id=$c
		break
	fi
	exec 9>&-
done
if [ -z "$id" ]; then
	if [ -n "${OUTPOST_DEVICE_ID:-}" ]; then
		config_error "identity $OUTPOST_DEVICE_ID is held by another replica, or $pki/devices/$OUTPOST_DEVICE_ID.{crt,key} is missing"
	fi
	n=$(find "$pki/devices" -maxdepth 1 -name '*.crt' | wc -l)
	config_error "all $n device identities are in use by other replicas; provision more (OUTPOST_DEVICES=M docker compose -f docker/docker-compose.yml up provision) or scale down"
fi

# Remember the identity for this hostname; drop what other (gone) containers remembered for
# it: they cannot hold it, we do.
printf '%s\n' "$id" >"$claims/.host-$host.tmp"
mv -f "$claims/.host-$host.tmp" "$claims/host-$host"
for f in "$claims"/host-*; do
	[ "$f" != "$claims/host-$host" ] || continue
	if [ "$(head -c 64 "$f" 2>/dev/null)" = "$id" ]; then rm -f "$f"; fi
done

state=$root/$id
mkdir -p "$state"
chmod 700 "$state"
export OUTPOST_DEVICE_ID=$id
export OUTPOST_DEVICE_CERT=$pki/devices/$id.crt
export OUTPOST_DEVICE_KEY=$pki/devices/$id.key
export OUTPOST_DEVICE_CA=$pki/ca.crt
export OUTPOST_DEVICE_BRIDGE_CERT=$pki/bridge.crt
export OUTPOST_DEVICE_STATE_DIR=$state
say "identity $id (container $host), state $state"
# The entrypoint's own settings are not the agent's.
unset OUTPOST_DEVICE_PKI OUTPOST_DEVICE_STATE_ROOT OUTPOST_DEVICE_BIN
# fd 9 stays open across exec: the lock is the agent's for as long as it runs.
exec "$bin" "$@"
