# lib.sh - shared by the benchmark scripts (sourced, not run): the real broker, bridge and a
# throwaway PostgreSQL on free loopback ports under one work directory, and the result table.
# Every process started here is stopped by bench_cleanup (run on EXIT by the caller).
# shellcheck shell=bash

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_BUILD=${OUTPOST_BUILD_DIR:-$BENCH_ROOT/build}
BENCH_WORK=${BENCH_WORK:-$BENCH_BUILD/bench-work}
BENCH_PIDS=()

bench_say() { printf 'bench: %s\n' "$*" >&2; }
bench_fail() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# One result row on stdout: AREA|MEASURE|RESULT|NOTE (bench_wire prints the same; run.sh aligns
# them). NOTE carries the ceiling or target and the verdict, e.g. "72% of raw insert (target
# >= 70%: met)"; a missed target says "MISSED".
bench_row() { printf '%s|%s|%s|%s\n' "$1" "$2" "$3" "$4"; }

# --quick measures too little (sub-second phases, small fleets) to judge a target: the verdict in
# variable VAR becomes "quick: no verdict" when the calling script's $quick is 1.
bench_verdict_quick() { # VAR
	[ "${quick:-0}" = 1 ] && printf -v "$1" '%s' 'quick: no verdict'
	return 0
}

# key=value lines: value of KEY in the last line of FILE that has it.
bench_kv() { grep -o "\b$2=[^ ]*" "$1" | tail -1 | cut -d= -f2; }

# Arithmetic with awk (floating point): bench_calc 'a / b' a=1 b=2
bench_calc() {
	local expr=$1
	shift
	local args=()
	for kv in "$@"; do args+=(-v "$kv"); done
	awk "${args[@]}" "BEGIN { x = $expr; printf \"%.6g\", x }"
}

# Something listens on PORT: read from /proc/net/tcp, nothing connects (the broker would log
# every probe as a failed client connection). The same check as run-local and the healthcheck.
bench_port_busy() { "$BENCH_ROOT/docker/mosquitto/listening.sh" "$1"; }

# A free loopback port (not in use, not handed out before in this run) into variable VAR.
# It runs in the caller's shell, not in $(...): a subshell would forget the ports handed out
# and repeat the caller's RANDOM sequence (two listeners once got the same port).
BENCH_USED_PORTS=" "
bench_free_port() { # VAR
	local p
	for _ in $(seq 1 200); do
		p=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768-)
		case $BENCH_USED_PORTS in *" $p "*) continue ;; esac
		bench_port_busy "$p" && continue
		BENCH_USED_PORTS="$BENCH_USED_PORTS$p "
		printf -v "$1" '%s' "$p"
		return 0
	done
	bench_fail "no free port"
}

bench_wait_port() { # PORT SECONDS
	for _ in $(seq 1 $(($2 * 10))); do
		bench_port_busy "$1" && return 0
		sleep 0.1
	done
	return 1
}

bench_stop_pid() { # PID [SECONDS]
	local pid=$1 t=${2:-15}
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 1 $((t * 10))); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
	local i
	for ((i = ${#BENCH_PIDS[@]} - 1; i >= 0; i--)); do bench_stop_pid "${BENCH_PIDS[$i]}" 10; done
	BENCH_PIDS=()
	[ -n "${BENCH_PG_DATA:-}" ] && bench_pg_stop
	return 0
}

# PKI with N devices device-0001..: reused across runs (provisioning is the slow part).
bench_pki() { # DIR COUNT
	"$BENCH_ROOT/scripts/provision-certs.sh" --out "$1" --count "$2" >"$1.log" 2>&1 ||
		bench_fail "provision-certs.sh failed, see $1.log"
}

# Starts mosquitto through the stack's own entrypoint. Sets BENCH_WSS, BENCH_MQTTS,
# BENCH_INTERNAL, BENCH_BROKER_PID, BENCH_BROKER_DIR (for the callers).
bench_broker_start() { # PKI DIR
	[ -n "${BENCH_WSS:-}" ] || bench_free_port BENCH_WSS
	[ -n "${BENCH_MQTTS:-}" ] || bench_free_port BENCH_MQTTS
	[ -n "${BENCH_INTERNAL:-}" ] || bench_free_port BENCH_INTERNAL
	# shellcheck disable=SC2034 # used by the scripts that source this file
	BENCH_BROKER_DIR=$2
	mkdir -p "$2"
	OUTPOST_PKI_DIR=$1 OUTPOST_BROKER_DIR=$2 OUTPOST_WSS_PORT=$BENCH_WSS \
		OUTPOST_MQTTS_PORT=$BENCH_MQTTS OUTPOST_INTERNAL_PORT=$BENCH_INTERNAL \
		OUTPOST_BROKER_BIND=127.0.0.1 OUTPOST_INTERNAL_BIND=127.0.0.1 \
		OUTPOST_AUTH_PLUGIN=$BENCH_BUILD/broker/outpost_auth.so \
		"$BENCH_ROOT/docker/mosquitto/run-broker.sh" >>"$2/broker.log" 2>&1 &
	BENCH_BROKER_PID=$!
	BENCH_PIDS+=("$BENCH_BROKER_PID")
	echo "$BENCH_BROKER_PID" >"$2/broker.pid"
	if ! bench_wait_port "$BENCH_INTERNAL" 20 || ! bench_wait_port "$BENCH_MQTTS" 5; then
		bench_fail "the broker did not start, see $2/broker.log"
	fi
}

# Starts outpost-bridge on the internal listener, as the shipped single-bridge stack runs it
# (plain subscriptions: no share group). Sets BENCH_BRIDGE_PID.
bench_bridge_start() { # PKI STORE LOG [extra options...]
	local pki=$1 store=$2 log=$3
	shift 3
	"$BENCH_BUILD/bridge/outpost-bridge" --pki-dir "$pki" --broker-host 127.0.0.1 \
		--broker-port "$BENCH_INTERNAL" --store "$store" --client-id "bench-bridge-$$" \
		--session-expiry 1m --share-group= "$@" >>"$log" 2>&1 &
	BENCH_BRIDGE_PID=$!
	BENCH_PIDS+=("$BENCH_BRIDGE_PID")
}

# A throwaway PostgreSQL cluster under DIR. Sets BENCH_PG_URL.
bench_pg_as() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
bench_pg_start() { # DIR
	local bin
	bin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -1)
	[ -x "$bin/initdb" ] || bench_fail "PostgreSQL server binaries not found"
	BENCH_PG_BIN=$bin BENCH_PG_DATA=$1/data
	rm -rf "$1"
	mkdir -p "$1"
	if [ "$(id -u)" = 0 ]; then
		chown postgres "$1"
		runuser -u postgres -- test -w "$1" ||
			bench_fail "the postgres user cannot reach $1 (a parent directory such as /root is not traversable): set BENCH_WORK to a directory under /tmp"
	fi
	local port
	bench_free_port port
	bench_pg_as "$bin/initdb" -D "$BENCH_PG_DATA" -A trust -U postgres -E UTF8 --no-sync \
		>"$1/initdb.log" 2>&1 || bench_fail "initdb failed, see $1/initdb.log"
	# durability as shipped (fsync on, synchronous_commit on): the bridge and the raw
	# insert both pay for it
	bench_pg_as "$bin/pg_ctl" -D "$BENCH_PG_DATA" -l "$1/postgres.log" -w -t 60 \
		-o "-p $port -k $1 -c listen_addresses=127.0.0.1 -c max_connections=50" start \
		>/dev/null 2>&1 || bench_fail "PostgreSQL did not start, see $1/postgres.log"
	BENCH_PG_URL="postgresql://postgres@127.0.0.1:$port/postgres"
}
bench_pg_stop() {
	bench_pg_as "$BENCH_PG_BIN/pg_ctl" -D "$BENCH_PG_DATA" -w -t 60 -m fast stop >/dev/null 2>&1 || true
	BENCH_PG_DATA=
}
bench_pg_reset() { # drops the Outpost tables so that the next bridge starts from an empty store
	PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 "$BENCH_PG_URL" \
		-c 'DROP SCHEMA public CASCADE; CREATE SCHEMA public;' >/dev/null
}

# RSS (KiB) and CPU ticks (utime+stime) of a process.
bench_rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
bench_cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
