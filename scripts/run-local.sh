#!/usr/bin/env bash
# run-local.sh - the whole Outpost stack on this machine: PKI, broker, bridge on SQLite and N
# devices, with a live view. Ctrl-C (or the end of --duration) stops everything it started.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: scripts/run-local.sh [--devices N] [--duration SECONDS] [--no-build] [--no-bootstrap]

Installs what is missing, builds, provisions a PKI, and runs mosquitto (WSS 8443, MQTTS 8883,
internal 8884 on 127.0.0.1), outpost-bridge on SQLite and N outpost-device agents (sim + proc
collectors, 2 s samples, 10 s task polls). Prints a live view; Ctrl-C stops it all.
Running it again reuses the PKI and the store.

  --devices N      devices to run (default 3, at most 200)
  --duration S     stop after S seconds (default: until Ctrl-C)
  --no-build       use the binaries already in the build directory
  --no-bootstrap   do not install Debian packages

Environment: OUTPOST_LOCAL_DIR (state, default var/local), OUTPOST_BUILD_DIR (default build;
a new tree is made without the test suite, an existing one keeps its settings),
OUTPOST_WSS_PORT / OUTPOST_MQTTS_PORT / OUTPOST_INTERNAL_PORT (8443 / 8883 / 8884).
USAGE
}

devices=3 duration=0 build=1 bootstrap=1
while [ $# -gt 0 ]; do
	case "$1" in
	--devices) [ $# -ge 2 ] || { usage >&2; exit 2; }; devices=$2; shift ;;
	--devices=*) devices=${1#*=} ;;
	--duration) [ $# -ge 2 ] || { usage >&2; exit 2; }; duration=$2; shift ;;
	--duration=*) duration=${1#*=} ;;
	--no-build) build=0 ;;
	--no-bootstrap) bootstrap=0 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "run-local: unknown argument: $1 (try --help)" >&2; exit 2 ;;
	esac
	shift
done
[[ "$devices" =~ ^[0-9]+$ ]] && [ "$((10#$devices))" -ge 1 ] && [ "$((10#$devices))" -le 200 ] ||
	{ echo "run-local: --devices: a number from 1 to 200, not '$devices'" >&2; exit 2; }
devices=$((10#$devices)) # "08" is eight
[[ "$duration" =~ ^[0-9]+$ ]] || { echo "run-local: --duration: seconds, not '$duration'" >&2; exit 2; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=${OUTPOST_LOCAL_DIR:-$root/var/local}
builddir=${OUTPOST_BUILD_DIR:-$root/build}
wss=${OUTPOST_WSS_PORT:-8443} mqtts=${OUTPOST_MQTTS_PORT:-8883} internal=${OUTPOST_INTERNAL_PORT:-8884}
say() { printf 'run-local: %s\n' "$*"; }

[ "$bootstrap" = 1 ] && "$root/scripts/bootstrap.sh"
if [ "$build" = 1 ]; then
	say "building in $builddir"
	# A tree of its own is made without the test suite (Criterion, PostgreSQL, tinyproxy... are
	# not needed to run the stack); an existing one keeps its settings: build/ is also the
	# tests' tree (scripts/test.sh turns them on).
	fresh=()
	[ -f "$builddir/CMakeCache.txt" ] || fresh=(-DOUTPOST_TESTS=OFF)
	cmake -S "$root" -B "$builddir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${fresh[@]}" >/dev/null
	cmake --build "$builddir" -j "$(nproc)" --target outpost-device outpost-bridge outpostctl outpost_auth >/dev/null
fi
device_bin=$builddir/device/outpost-device
bridge_bin=$builddir/bridge/outpost-bridge
ctl_bin=$builddir/bridge/outpostctl
for b in "$device_bin" "$bridge_bin" "$ctl_bin" "$builddir/broker/outpost_auth.so"; do
	[ -x "$b" ] || [ -r "$b" ] || { echo "run-local: missing $b (build first, or drop --no-build)" >&2; exit 1; }
done

# What an earlier run left alive (this script killed with SIGKILL, say): its processes run in
# sessions of their own, so they outlive it; their pids are kept in $pidfile.
pidfile=$state/run.pids
if [ -r "$pidfile" ]; then
	left=()
	while read -r p; do
		# (a pid since reused by something else does not name this state directory)
		[[ "$p" =~ ^[0-9]+$ ]] && grep -qaF -- "$state/" "/proc/$p/cmdline" 2>/dev/null &&
			left+=("$p")
	done <"$pidfile"
	if [ ${#left[@]} -gt 0 ]; then
		echo "run-local: an earlier run's processes are still alive: ${left[*]}; stop them with" \
			"'kill ${left[*]}' (or see $pidfile)" >&2
		exit 1
	fi
fi
# listening PORT...: every PORT open on this host (a socket in LISTEN state; nothing connects,
# which the broker would log as a failed client connection)
listening() { "$root/docker/mosquitto/listening.sh" "$@"; }
for p in "$wss" "$mqtts" "$internal"; do
	if listening "$p"; then
		echo "run-local: port $p is in use (another run-local?); set OUTPOST_WSS_PORT/OUTPOST_MQTTS_PORT/OUTPOST_INTERNAL_PORT" >&2
		exit 1
	fi
done

mkdir -p "$state/logs" "$state/broker" "$state/devices"
chmod 700 "$state/logs" # the logs name devices and tasks: the owner's only, like the store
pki=$state/pki
"$root/scripts/provision-certs.sh" --out "$pki" --count "$devices" >"$state/logs/provision.log"
store="sqlite:$state/outpost.db"
export OUTPOST_STORE=$store

hurry=0
cleanup() {
	# a second Ctrl-C (or TERM) while stopping: kill what is left at once, still in order;
	# never leave before every process is gone (they are in sessions of their own, below)
	trap 'hurry=1' INT TERM HUP
	trap - EXIT
	local p i
	say "stopping: devices, then the bridge, then the broker (Ctrl-C again: kill them now)"
	# devices first (they seal their last samples), then the bridge (it commits and acks what
	# is in flight), then the broker
	for group in devices bridge broker; do
		local list=()
		case $group in
		devices) # not those already reaped: their pids may be someone else's by now
			for i in "${!device_pids[@]}"; do
				[ -n "${device_gone[i]:-}" ] || list+=("${device_pids[i]}")
			done ;;
		bridge) list=(${bridge_pid:+$bridge_pid}) ;;
		broker) list=(${broker_pid:+$broker_pid}) ;;
		esac
		for p in "${list[@]+"${list[@]}"}"; do kill -TERM "$p" 2>/dev/null || true; done
		# (a Ctrl-C also kills a `sleep` or `seq` running here: neither may end the script)
		# the bridge may take its shutdown_timeout (15 s) to commit and ack what is in flight
		local tenths=100
		[ "$group" = bridge ] && tenths=200
		for ((i = 0; i < tenths; i++)); do
			local alive=0
			for p in "${list[@]+"${list[@]}"}"; do kill -0 "$p" 2>/dev/null && alive=1; done
			[ "$alive" = 0 ] || [ "$hurry" = 1 ] && break
			sleep 0.1 || true
		done
		for p in "${list[@]+"${list[@]}"}"; do kill -KILL "$p" 2>/dev/null || true; done
	done
	wait 2>/dev/null || true
	rm -f "$pidfile"
}
device_pids=() device_ids=() device_gone=() bridge_pid="" broker_pid="" bridge_started=0 bridge_quick=0
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap 'cleanup; exit 129' HUP
trap cleanup EXIT
# Every process runs in a session of its own (setsid): Ctrl-C (or a closed terminal) signals the
# terminal's whole foreground process group, and would stop the bridge together with the devices
# instead of after them. Only this script hears it; cleanup then stops them in order.

say "broker: wss://localhost:$wss/mqtt, ssl://localhost:$mqtts, internal ssl://127.0.0.1:$internal"
OUTPOST_PKI_DIR=$pki OUTPOST_BROKER_DIR=$state/broker OUTPOST_WSS_PORT=$wss OUTPOST_MQTTS_PORT=$mqtts \
	OUTPOST_INTERNAL_PORT=$internal OUTPOST_BROKER_BIND=127.0.0.1 OUTPOST_INTERNAL_BIND=127.0.0.1 \
	OUTPOST_AUTH_PLUGIN=$builddir/broker/outpost_auth.so \
	setsid "$root/docker/mosquitto/run-broker.sh" >>"$state/logs/broker.log" 2>&1 &
broker_pid=$!
echo "$broker_pid" >"$pidfile"
for _ in $(seq 1 100); do
	listening "$mqtts" "$wss" "$internal" && break
	kill -0 "$broker_pid" 2>/dev/null || break
	sleep 0.1
done
listening "$mqtts" "$wss" "$internal" ||
	{ echo "run-local: the broker did not start; see $state/logs/broker.log" >&2; exit 1; }

start_bridge() {
	# umask 077: the store (every reading) is readable by its owner only
	(umask 077 && exec setsid "$bridge_bin" --pki-dir "$pki" --broker-host 127.0.0.1 --broker-port "$internal" \
		--store "$store" --client-id outpost-bridge-local --share-group '') >>"$state/logs/bridge.log" 2>&1 &
	bridge_pid=$!
	bridge_started=$(date +%s)
	echo "$bridge_pid" >>"$pidfile"
}
say "bridge: store $store"
bridge_connects() { local n; n=$(grep -c 'connected to' "$state/logs/bridge.log" 2>/dev/null) || true; echo "${n:-0}"; }
connected_before=$(bridge_connects)
start_bridge
# Devices after the bridge's subscriptions: a Birth published before them reaches no bridge
# (the device sends it again after its ack timeout, but the first run should not wait).
for _ in $(seq 1 100); do
	[ "$(bridge_connects)" -gt "$connected_before" ] && break
	kill -0 "$bridge_pid" 2>/dev/null || break
	sleep 0.1
done

# revoked (provision-certs.sh --revoke): the broker would refuse it on every attempt
revoked() {
	local serial
	serial=$(openssl x509 -in "$pki/devices/$1.crt" -noout -serial 2>/dev/null) || return 1
	awk -F'\t' -v s="${serial#serial=}" '$1 == "R" && toupper($4) == toupper(s) { f = 1 } END { exit !f }' \
		"$pki/.ca/index.txt"
}
say "devices: $devices (logs in $state/logs)"
for i in $(seq 1 "$devices"); do
	id=$(printf 'device-%04d' "$i")
	if revoked "$id"; then
		# its spool holds envelopes signed with the revoked key, which a re-enrolled device
		# would send again and the bridge refuse (bad_signature, then quarantine)
		say "$id: certificate revoked; not started (to re-provision it, delete $pki/devices/$id.*" \
			"and its state, $state/devices/$id)"
		continue
	fi
	setsid "$device_bin" --id "$id" --broker-host localhost --wss-port "$wss" --mqtts-port "$mqtts" \
		--ca "$pki/ca.crt" --cert "$pki/devices/$id.crt" --key "$pki/devices/$id.key" \
		--bridge-cert "$pki/bridge.crt" --state-dir "$state/devices/$id" --proxy none \
		--collectors proc,sim --sim-metrics 10 --sample-interval 2s --batch-interval 6s \
		--poll-interval 10s --backoff-max 10s >>"$state/logs/$id.log" 2>&1 &
	device_pids+=($!)
	device_ids+=("$id")
	echo "$!" >>"$pidfile"
done
notices=()
# what happened to a process: said at once, and kept under the live view, which clears the screen
notice() { say "$*"; notices+=("$*"); }

view() {
	"$ctl_bin" --store "$store" devices 2>/dev/null || echo "(store not ready yet)"
}
start=$(date +%s)
tty=0
[ -t 1 ] && tty=1
while :; do
	sleep 2
	kill -0 "$broker_pid" 2>/dev/null || { echo "run-local: the broker exited; see $state/logs/broker.log" >&2; exit 1; }
	if ! kill -0 "$bridge_pid" 2>/dev/null; then
		# e.g. the tour's `pkill -9 -f 'client-id outpost-bridge-local'`: the devices keep spooling, a new bridge
		# picks up the persistent session, and the devices resend whatever was not acked
		wait "$bridge_pid" 2>/dev/null && st=0 || st=$?
		# status 2 is a configuration it refuses (bad option, expired CRL): starting it again
		# cannot help; nor can a bridge that keeps dying at start
		[ $(($(date +%s) - bridge_started)) -lt 10 ] && bridge_quick=$((bridge_quick + 1)) ||
			bridge_quick=0
		bridge_pid="" # reaped
		if [ "$st" = 2 ] || [ "$bridge_quick" -ge 5 ]; then
			echo "run-local: the bridge exited (status $st)$([ "$st" = 2 ] ||
				echo " 5 times in a row at start"); its last lines ($state/logs/bridge.log):" >&2
			tail -n 5 "$state/logs/bridge.log" >&2 || true
			exit 1
		fi
		notice "the bridge exited (status $st); starting a new one (see $state/logs/bridge.log)"
		sleep 1
		start_bridge
	fi
	for i in "${!device_pids[@]}"; do
		[ -z "${device_gone[i]:-}" ] && ! kill -0 "${device_pids[i]}" 2>/dev/null || continue
		wait "${device_pids[i]}" 2>/dev/null && st=0 || st=$?
		device_gone[i]=1
		notice "${device_ids[i]} exited (status $st); see $state/logs/${device_ids[i]}.log"
	done
	now=$(date +%s)
	if [ "$tty" = 1 ]; then
		printf '\033[H\033[2J'
		printf 'Outpost local stack, %ss  (Ctrl-C stops)\n\n' "$((now - start))"
		view
		[ ${#notices[@]} -eq 0 ] || printf '\n'
		from=$((${#notices[@]} > 5 ? ${#notices[@]} - 5 : 0))
		for n in "${notices[@]:from}"; do say "$n"; done
	elif [ $(((now - start) % 10)) -lt 2 ]; then
		printf '\n[%ss]\n' "$((now - start))"
		view
	fi
	[ "$duration" -gt 0 ] && [ $((now - start)) -ge "$duration" ] && break
done

cleanup
trap - EXIT
printf '\n'
say "stopped. Summary:"
view
# quoted for the shell (%q), so that the lines can be pasted whatever the paths hold
q_store=$(printf %q "$store") q_pki=$(printf %q "$pki") q_ctl=$(printf %q "$ctl_bin")
cat <<NEXT

Next commands to try (the store is $store):
  export OUTPOST_STORE=$q_store OUTPOST_PKI_DIR=$q_pki OUTPOST_INTERNAL_PORT=$internal
  $q_ctl devices
  $q_ctl readings --device device-0001 --metric sim.sensor_0000 --format csv
  $q_ctl task add --device device-0001 --type ping
  $q_ctl task list
  $q_ctl events
  scripts/mqtt-sub.sh                # decoded live traffic (run while the stack runs)
  scripts/run-local.sh               # again: same PKI, same store
NEXT
